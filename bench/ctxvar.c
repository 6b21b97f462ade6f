/*
 * ctxvar: context variables (tern's contextvars), one RESULT line per
 * measurement, each timed inside one root task (tern_block_on) in a context
 * that starts empty (tern_context_run on tern_context_new):
 *
 *   ctxvar_get   vars=1, vars=100     tern_ctxvar_get, cycling over the n
 *                                     variables set; one op = one get
 *   ctxvar_set   vars=1, vars=100     tern_ctxvar_set (no token) of a variable
 *                                     already set, cycling over the n: the
 *                                     context never grows; one op = one set
 *   context_copy vars=1, 100, 10000   tern_context_copy + tern_context_release;
 *                                     one op = one copy and its release (O(1):
 *                                     the figure must not grow with vars)
 *
 * Checks: every get returns the value set (a checksum), after the sets each
 * variable holds the value of its last set and the context still has n
 * variables, a copy has tern_context_len == n and holds the values set.
 * CPython's counterpart is bench/peers/py_ctx.py (same names and keys).
 *
 * Usage: ctxvar [--workers N] [GETS] [SETS] [COPIES]
 *        (iterations per measurement; defaults 20000000 1000000 20000000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

#define MAX_VARS 10000

typedef struct state {
    uint64_t gets, sets, copies;
    tern_ctxvar **vars; /* MAX_VARS variables */
    /* the measurement in progress (arguments of one tern_context_run) */
    size_t nvars;
    int kind; /* GET, SET, COPY */
    uint64_t elapsed_ns;
} state;

enum { GET, SET, COPY };

static void *val(uint64_t x)
{
    return (void *)(uintptr_t)x;
}

/* Sets vars[0..n) to i + 1 in the current context and checks its length. */
static void set_all(state *st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = tern_ctxvar_set(st->vars[i], val(i + 1), NULL);
        if (rc < 0)
            bench_die("tern_ctxvar_set", rc);
    }
    tern_context *c = tern_context_copy();
    bench_check(tern_context_len(c) == n, "the context has the n variables set");
    tern_context_release(c);
}

static void measure_get(state *st)
{
    size_t n = st->nvars, j = 0;
    uint64_t sum = 0, expect = 0;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < st->gets; i++) {
        sum += (uintptr_t)tern_ctxvar_get(st->vars[j]);
        if (++j == n)
            j = 0;
    }
    st->elapsed_ns = bench_now_ns() - start;
    /* vars[j] holds j + 1: gets/n full rounds of n(n+1)/2, then a partial one */
    uint64_t rounds = st->gets / n, rest = st->gets % n;
    expect = rounds * (uint64_t)n * (n + 1) / 2 + rest * (rest + 1) / 2;
    bench_check(sum == expect, "every get returned the value set");
}

static void measure_set(state *st)
{
    size_t n = st->nvars, j = 0;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < st->sets; i++) {
        int rc = tern_ctxvar_set(st->vars[j], val(i + 1), NULL);
        if (rc < 0)
            bench_die("tern_ctxvar_set", rc);
        if (++j == n)
            j = 0;
    }
    st->elapsed_ns = bench_now_ns() - start;
    /* set number i (0-based) wrote i + 1 into vars[i % n]; the last write
     * to each variable wins */
    for (size_t k = 0; k < n && k < st->sets; k++) {
        uint64_t last = (st->sets - 1 - k) / n * n + k; /* last i with i % n == k */
        bench_check(tern_ctxvar_get(st->vars[k]) == val(last + 1),
                    "each variable holds its last set value");
    }
    tern_context *c = tern_context_copy();
    bench_check(tern_context_len(c) == n,
                "sets of set variables did not grow the context");
    tern_context_release(c);
}

static void measure_copy(state *st)
{
    size_t n = st->nvars;
    size_t lens = 0;
    uint64_t start = bench_now_ns();
    for (uint64_t i = 0; i < st->copies; i++) {
        tern_context *c = tern_context_copy();
        lens += (i & 1023) == 0 ? tern_context_len(c) : n; /* a sample checked */
        tern_context_release(c);
    }
    st->elapsed_ns = bench_now_ns() - start;
    bench_check(lens == (size_t)st->copies * n, "every sampled copy had n variables");
    tern_context *c = tern_context_copy();
    bench_check(tern_context_len(c) == n, "a copy has tern_context_len == n");
    void *v = NULL;
    bench_check(tern_context_get(c, st->vars[0], &v) == 1 && v == val(1) &&
                    tern_context_get(c, st->vars[n - 1], &v) == 1 && v == val(n),
                "a copy holds the values set");
    tern_context_release(c);
}

/* Runs in a fresh empty context: sets nvars variables, then measures. */
static void *one(void *arg)
{
    state *st = arg;
    set_all(st, st->nvars);
    switch (st->kind) {
    case GET:
        measure_get(st);
        break;
    case SET:
        measure_set(st);
        break;
    default:
        measure_copy(st);
        break;
    }
    return NULL;
}

static void report(const char *workload, uint64_t n, uint64_t ns, size_t nvars)
{
    char extra[64];
    snprintf(extra, sizeof extra, " vars=%zu", nvars);
    bench_result(workload, n, ns, extra);
}

static void *root(void *arg)
{
    state *st = arg;
    static const struct {
        const char *name;
        int kind;
        size_t nvars;
    } runs[] = {
        {"ctxvar_get", GET, 1},           {"ctxvar_get", GET, 100},
        {"ctxvar_set", SET, 1},           {"ctxvar_set", SET, 100},
        {"context_copy", COPY, 1},        {"context_copy", COPY, 100},
        {"context_copy", COPY, MAX_VARS},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        st->kind = runs[r].kind;
        st->nvars = runs[r].nvars;
        tern_context *empty = tern_context_new();
        tern_context_run(empty, one, st);
        tern_context_release(empty);
        uint64_t n = st->kind == GET ? st->gets : st->kind == SET ? st->sets : st->copies;
        report(runs[r].name, n, st->elapsed_ns, st->nvars);
    }
    /* back in the root's own context: nothing of the runs is left in it */
    tern_context *c = tern_context_copy();
    bench_check(tern_context_len(c) == 0, "tern_context_run restored the empty context");
    tern_context_release(c);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"GETS", "SETS", "COPIES"};
    static const uint64_t defs[] = {20000000, 1000000, 20000000};
    bench_args a;
    bench_parse(argc, argv, "ctxvar", 3, names, defs, NULL, &a);

    static state st;
    st.gets = a.size[0];
    st.sets = a.size[1];
    st.copies = a.size[2];
    st.vars = calloc(MAX_VARS, sizeof *st.vars);
    if (!st.vars)
        bench_die("calloc", -12);
    for (size_t i = 0; i < MAX_VARS; i++) {
        char name[32];
        snprintf(name, sizeof name, "v%zu", i);
        int rc = tern_ctxvar_new(name, NULL, NULL, &st.vars[i]);
        if (rc < 0)
            bench_die("tern_ctxvar_new", rc);
    }

    tern_runtime *rt = bench_runtime_new(a.workers);
    printf("INFO ctxvar: gets=%" PRIu64 " sets=%" PRIu64 " copies=%" PRIu64
           " per measurement, workers=%u\n",
           st.gets, st.sets, st.copies, a.workers);
    fflush(stdout);
    int rc = tern_block_on(rt, root, &st, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    for (size_t i = 0; i < MAX_VARS; i++)
        tern_ctxvar_free(st.vars[i]);
    free(st.vars);
    return 0;
}
