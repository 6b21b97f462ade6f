/*
 * yield_many: a root task spawns T tasks that each call tern_yield() Y times,
 * then joins them. Timed from before the root spawn until the root is joined.
 * Usage: yield_many [--workers N] [T] [Y]; one op = one yield.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

typedef struct state {
    uint64_t t, y;
    _Atomic uint64_t yields;
} state;

static void *yielder(void *arg)
{
    state *st = arg;
    uint64_t k = 0;
    for (uint64_t j = 0; j < st->y; j++) {
        int rc = tern_yield();
        if (rc < 0)
            bench_die("tern_yield", rc);
        k++;
    }
    atomic_fetch_add_explicit(&st->yields, k, memory_order_relaxed);
    return NULL;
}

static void *spawner(void *arg)
{
    state *st = arg;
    bench_spawn_join(st->t, yielder, st);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"T", "Y"};
    static const uint64_t defs[] = {200, 1000};
    static const uint64_t max[] = {UINT64_MAX / sizeof(void *), UINT64_MAX};
    bench_args a;
    bench_parse(argc, argv, "yield_many", 2, names, defs, max, &a);

    static state st;
    st.t = a.size[0];
    st.y = a.size[1];
    if (st.y > UINT64_MAX / st.t) {
        fprintf(stderr, "error: T*Y does not fit in 64 bits\n");
        return 2;
    }
    uint64_t elapsed_ns = bench_run_root(a.workers, spawner, &st);

    uint64_t total = st.t * st.y;
    bench_check(atomic_load(&st.yields) == total, "every task yielded Y times");
    bench_result("yield_many", total, elapsed_ns, NULL);
    return 0;
}
