/*
 * chained_spawn: each task spawns the next (detached) and returns without
 * waiting, depth D; the last one wakes the waiter (Tokio's rt_multi_threaded
 * chained_spawn). Timed from before the first spawn to the wake-up.
 * Usage: chained_spawn [--workers N] [D]; one op = one spawn.
 *
 * Like Tokio's iter(done, left, ran), each task carries both how many spawns
 * are left and how many tasks ran before it; both travel in the task's
 * argument word (left in the high 32 bits, ran in the low 32 bits), so no
 * memory is allocated per link besides the task itself.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "common.h"

_Static_assert(sizeof(void *) == 8, "chained_spawn packs two 32-bit counts in a pointer");

static struct {
    tern_task *waiter;    /* a reference, given back by the last task */
    _Atomic uint64_t ran; /* depth the chain carried, set by the last task */
    _Atomic int done;
    _Atomic int err;
} g;

static void fail(int rc)
{
    /* the waiter parks until done or err: it is alive */
    atomic_store(&g.err, rc);
    tern_unpark(g.waiter);
}

static void *link_fn(void *arg);

static void iter(uint64_t left, uint64_t ran)
{
    if (left == 0) {
        tern_task *w = g.waiter;
        atomic_store_explicit(&g.ran, ran, memory_order_relaxed);
        atomic_store_explicit(&g.done, 1, memory_order_release);
        tern_unpark(w);
        tern_task_release(w);
        return;
    }
    uintptr_t word = (uintptr_t)((left - 1) << 32 | (ran + 1));
    int rc = tern_spawn(link_fn, (void *)word, NULL);
    if (rc < 0)
        fail(rc);
}

static void *link_fn(void *arg)
{
    uintptr_t word = (uintptr_t)arg;
    iter(word >> 32, word & 0xffffffffu);
    return NULL;
}

static void *root(void *arg)
{
    uint64_t d = *(uint64_t *)arg;
    g.waiter = tern_task_ref(tern_task_current());
    uint64_t start = bench_now_ns();
    iter(d, 0);
    while (!atomic_load_explicit(&g.done, memory_order_acquire)) {
        int rc = atomic_load(&g.err);
        if (rc < 0)
            bench_die("tern_spawn", rc);
        rc = tern_park(0);
        if (rc < 0)
            bench_die("tern_park", rc);
    }
    uint64_t elapsed = bench_now_ns() - start;
    *(uint64_t *)arg = elapsed;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"D"};
    static const uint64_t defs[] = {1000000};
    static const uint64_t max[] = {UINT32_MAX};
    bench_args a;
    bench_parse(argc, argv, "chained_spawn", 1, names, defs, max, &a);

    uint64_t d = a.size[0];
    uint64_t io = d; /* in: depth; out: elapsed ns */
    tern_runtime *rt = bench_runtime_new(a.workers);
    int rc = tern_block_on(rt, root, &io, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    bench_check(atomic_load(&g.ran) == d, "chain of D tasks");
    bench_result("chained_spawn", d, io, NULL);
    return 0;
}
