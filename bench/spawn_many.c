/*
 * spawn_many: a root task spawns N tasks; each bumps a shared atomic counter;
 * the task that brings it to N wakes the waiter (Tokio's rt_multi_threaded
 * spawn_many_local). Timed from before the root spawn to the wake-up.
 * Usage: spawn_many [--workers N] [N]; one op = one task.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "common.h"

typedef struct state {
    uint64_t n;
    _Atomic uint64_t count;
    tern_task *waiter;     /* a reference, given back by the last task */
    _Atomic int spawn_err; /* first spawn failure, 0 if none */
    _Atomic uint64_t spawned;
    uint64_t elapsed_ns;
} state;

static void *bump(void *arg)
{
    state *st = arg;
    if (atomic_fetch_add_explicit(&st->count, 1, memory_order_acq_rel) + 1 == st->n) {
        tern_task *w = st->waiter;
        tern_unpark(w);
        tern_task_release(w);
    }
    return NULL;
}

static void *spawner(void *arg)
{
    state *st = arg;
    uint64_t i;
    for (i = 0; i < st->n; i++) {
        int rc = tern_spawn(bump, st, NULL);
        if (rc < 0) {
            /* the waiter parks until count == n or an error: it is alive */
            atomic_store(&st->spawn_err, rc);
            tern_unpark(st->waiter);
            break;
        }
    }
    atomic_store(&st->spawned, i);
    return NULL;
}

static void *root(void *arg)
{
    state *st = arg;
    st->waiter = tern_task_ref(tern_task_current());
    uint64_t start = bench_now_ns();
    int rc = tern_spawn(spawner, st, NULL);
    if (rc < 0)
        bench_die("spawn the root task", rc);
    while (atomic_load_explicit(&st->count, memory_order_acquire) < st->n) {
        rc = tern_park(0);
        if (rc < 0)
            bench_die("tern_park", rc);
        if (atomic_load(&st->spawn_err))
            bench_die("tern_spawn", atomic_load(&st->spawn_err));
    }
    st->elapsed_ns = bench_now_ns() - start;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"N"};
    static const uint64_t defs[] = {1000000};
    bench_args a;
    bench_parse(argc, argv, "spawn_many", 1, names, defs, NULL, &a);

    static state st;
    st.n = a.size[0];
    tern_runtime *rt = bench_runtime_new(a.workers);
    int rc = tern_block_on(rt, root, &st, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    bench_check(atomic_load(&st.spawned) == st.n, "N tasks spawned");
    bench_check(atomic_load(&st.count) == st.n, "every spawned task ran once");
    bench_result("spawn_many", st.n, st.elapsed_ns, NULL);
    return 0;
}
