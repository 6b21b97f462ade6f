/*
 * mutex (tern's own workload, beside bench-contract.md's): a root task spawns
 * T tasks that each increment one shared plain (non-atomic) counter I times
 * under one tern_mutex, lock / increment / unlock per iteration, then joins
 * them. Timed from before the root spawn until it is joined. The counter must
 * end at T*I: a lock that let two tasks in at once loses increments.
 * Usage: mutex [--workers N] [T] [I]; one op = one lock + unlock.
 */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

typedef struct state {
    uint64_t t, iters;
    tern_mutex mu;
    uint64_t counter; /* guarded by mu only */
} state;

static void *incrementer(void *arg)
{
    state *st = arg;
    for (uint64_t j = 0; j < st->iters; j++) {
        int rc = tern_mutex_lock(&st->mu);
        if (rc < 0)
            bench_die("tern_mutex_lock", rc);
        st->counter++;
        rc = tern_mutex_unlock(&st->mu);
        if (rc < 0)
            bench_die("tern_mutex_unlock", rc);
    }
    return NULL;
}

static void *spawner(void *arg)
{
    state *st = arg;
    bench_spawn_join(st->t, incrementer, st);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"T", "I"};
    static const uint64_t defs[] = {100, 10000};
    static const uint64_t max[] = {UINT64_MAX / sizeof(void *), UINT64_MAX};
    bench_args a;
    bench_parse(argc, argv, "mutex", 2, names, defs, max, &a);

    static state st;
    st.t = a.size[0];
    st.iters = a.size[1];
    if (st.iters > UINT64_MAX / st.t) {
        fprintf(stderr, "error: T*I does not fit in 64 bits\n");
        return 2;
    }
    tern_mutex_init(&st.mu);
    uint64_t elapsed_ns = bench_run_root(a.workers, spawner, &st);

    uint64_t total = st.t * st.iters;
    bench_check(st.counter == total, "counter == T*I (no increment lost)");
    bench_check(tern_mutex_destroy(&st.mu) == 0,
                "the mutex is unlocked and unwaited at the end");
    bench_result("mutex", total, elapsed_ns, NULL);
    return 0;
}
