/*
 * gen: generator hand-off. A root task (tern_block_on) creates a generator
 * (tern_gen_new) whose producer yields 1..N one at a time (tern_gen_yield)
 * and pulls them with tern_gen_next until the end, as `async for` over an
 * async generator. Timed from tern_gen_new to the end of the stream (the
 * producer's start and finish included). One op = one item handed over
 * (a yield, the next that takes it and the resumption of both sides).
 * Check: N items, in order, summing to N(N+1)/2; the stream ended cleanly.
 * CPython's counterpart is bench/peers/py_ctx.py (workload gen_handoff).
 *
 * Usage: gen [--workers N] [N]   (default N = 1000000)
 */
#include <stdio.h>

#include "common.h"

typedef struct state {
    uint64_t n;
    uint64_t count, sum, in_order;
    uint64_t yielded;
    int producer_rc;
    uint64_t elapsed_ns;
} state;

static int produce(tern_gen *g, void *arg)
{
    state *st = arg;
    for (uint64_t i = 1; i <= st->n; i++) {
        int rc = tern_gen_yield(g, (void *)(uintptr_t)i);
        if (rc < 0)
            return st->producer_rc = rc;
        st->yielded = i;
    }
    return 0;
}

static void *root(void *arg)
{
    state *st = arg;
    uint64_t start = bench_now_ns();
    tern_gen *g = NULL;
    int rc = tern_gen_new(produce, st, &g);
    if (rc < 0)
        bench_die("tern_gen_new", rc);
    void *v;
    while ((rc = tern_gen_next(g, &v, 0)) == 1) {
        uint64_t x = (uintptr_t)v;
        st->count++;
        st->sum += x;
        st->in_order += x == st->count;
    }
    st->elapsed_ns = bench_now_ns() - start;
    if (rc < 0)
        bench_die("tern_gen_next", rc);
    rc = tern_gen_close(g);
    if (rc < 0)
        bench_die("tern_gen_close", rc);
    tern_gen_free(g);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"N"};
    static const uint64_t defs[] = {1000000};
    static const uint64_t max[] = {UINT64_C(1) << 31}; /* the sum fits 64 bits */
    bench_args a;
    bench_parse(argc, argv, "gen", 1, names, defs, max, &a);

    static state st;
    st.n = a.size[0];
    tern_runtime *rt = bench_runtime_new(a.workers);
    int rc = tern_block_on(rt, root, &st, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    bench_check(st.producer_rc == 0, "the producer was never refused a yield");
    bench_check(st.yielded == st.n, "the producer yielded N values");
    bench_check(st.count == st.n, "the consumer received N values");
    bench_check(st.in_order == st.n, "the values came in order");
    bench_check(st.sum == st.n * (st.n + 1) / 2, "the values sum to N(N+1)/2");
    bench_result("gen_handoff", st.n, st.elapsed_ns, NULL);
    return 0;
}
