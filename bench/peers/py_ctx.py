#!/usr/bin/env python3
"""CPython's counterpart of bench/ctxvar.c and bench/gen.c.

Same measurements, workload names and keys, runtime=cpython:

  ctxvar_get   vars=1, vars=100     ContextVar.get, cycling over the n set
  ctxvar_set   vars=1, vars=100     ContextVar.set of a variable already set,
                                    cycling over the n (the Token is dropped)
  context_copy vars=1, 100, 10000   contextvars.copy_context() (and its release)
  gen_handoff                       an async generator yielding 1..N consumed
                                    with `async for` inside asyncio.run; one op
                                    = one item

Each ctxvar measurement runs in a fresh empty Context (Context().run), as
tern's run in tern_context_run(tern_context_new()). The loops are plain
`for` loops over prebuilt lists, so every figure includes CPython's loop
overhead; an INFO line gives that overhead (an empty loop over the same
list) for reference, it is not subtracted. Checks as in the C programs;
a failed check exits 1.

Usage: py_ctx.py [GETS] [SETS] [COPIES] [N]
       (defaults 2000000 1000000 2000000 1000000)
"""
import asyncio
import contextvars
import sys
import time

MAX_VARS = 10000


def result(workload, n, ns, extra=""):
    secs = max(ns / 1e9, 1e-9)
    print(f"RESULT workload={workload} runtime=cpython n={n} secs={secs:.6f} "
          f"per_op_ns={secs * 1e9 / n:.2f} ops_per_s={n / secs:.0f}{extra}", flush=True)


def check(ok, what):
    if not ok:
        sys.exit(f"error: verification failed: {what}")


def set_all(vs, n):
    for i in range(n):
        vs[i].set(i + 1)
    check(len(contextvars.copy_context()) == n, "the context has the n variables set")


def measure_get(vs, n, iters):
    set_all(vs, n)
    seq = (vs[:n] * (iters // n + 1))[:iters]
    s = 0
    t0 = time.perf_counter_ns()
    for v in seq:
        s += v.get()
    ns = time.perf_counter_ns() - t0
    rounds, rest = divmod(iters, n)
    check(s == rounds * n * (n + 1) // 2 + rest * (rest + 1) // 2,
          "every get returned the value set")
    return ns


def measure_set(vs, n, iters):
    set_all(vs, n)
    seq = (vs[:n] * (iters // n + 1))[:iters]
    vals = range(1, iters + 1)
    t0 = time.perf_counter_ns()
    for v, x in zip(seq, vals):
        v.set(x)
    ns = time.perf_counter_ns() - t0
    for k in range(min(n, iters)):
        last = (iters - 1 - k) // n * n + k
        check(vs[k].get() == last + 1, "each variable holds its last set value")
    check(len(contextvars.copy_context()) == n, "sets of set variables did not grow the context")
    return ns


def measure_copy(vs, n, iters):
    set_all(vs, n)
    copy = contextvars.copy_context
    seq = range(iters)
    t0 = time.perf_counter_ns()
    for _ in seq:
        copy()
    ns = time.perf_counter_ns() - t0
    c = copy()
    check(len(c) == n, "a copy has n variables")
    check(c[vs[0]] == 1 and c[vs[n - 1]] == n, "a copy holds the values set")
    return ns


async def agen(n):
    for i in range(1, n + 1):
        yield i


async def handoff(n):
    count = total = in_order = 0
    t0 = time.perf_counter_ns()
    async for x in agen(n):
        count += 1
        total += x
        in_order += x == count
    ns = time.perf_counter_ns() - t0
    check(count == n, "the consumer received N values")
    check(in_order == n, "the values came in order")
    check(total == n * (n + 1) // 2, "the values sum to N(N+1)/2")
    return ns


def main():
    names = ["GETS", "SETS", "COPIES", "N"]
    sizes = [2000000, 1000000, 2000000, 1000000]
    args = sys.argv[1:]
    if len(args) > len(sizes) or any(not a.isdigit() or int(a) == 0 for a in args):
        sys.stderr.write(f"usage: py_ctx.py {' '.join(f'[{n}]' for n in names)}\n"
                         f"  defaults: {' '.join(f'{n}={s}' for n, s in zip(names, sizes))}\n")
        sys.exit(2)
    for i, a in enumerate(args):
        sizes[i] = int(a)
    gets, sets, copies, n_items = sizes

    vs = [contextvars.ContextVar(f"v{i}") for i in range(MAX_VARS)]
    seq = [vs[0]] * gets
    t0 = time.perf_counter_ns()
    for v in seq:
        pass
    loop_ns = (time.perf_counter_ns() - t0) / gets
    print(f"INFO py_ctx: CPython {sys.version.split()[0]}; an empty `for` loop costs "
          f"{loop_ns:.2f} ns per turn (included in the figures)", flush=True)
    del seq

    runs = [("ctxvar_get", measure_get, 1, gets), ("ctxvar_get", measure_get, 100, gets),
            ("ctxvar_set", measure_set, 1, sets), ("ctxvar_set", measure_set, 100, sets),
            ("context_copy", measure_copy, 1, copies), ("context_copy", measure_copy, 100, copies),
            ("context_copy", measure_copy, MAX_VARS, copies)]
    for name, fn, n, iters in runs:
        ns = contextvars.Context().run(fn, vs, n, iters)
        result(name, iters, ns, f" vars={n}")
    check(len(contextvars.copy_context()) == 0, "Context.run left the outer context empty")

    result("gen_handoff", n_items, asyncio.run(handoff(n_items)))


if __name__ == "__main__":
    main()
