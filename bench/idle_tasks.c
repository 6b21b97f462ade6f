/*
 * idle_tasks: read VmRSS; spawn K tasks that each wait on their own
 * never-completed tern_future (the spawner keeps the K task handles); wait
 * until all K have started; read VmRSS again: bytes_per_task = (after -
 * before) / K, which includes the spawner's handles and the futures. secs / per_op_ns
 * time the spawn-and-park phase. Then every future is completed and all K
 * tasks are joined; all K must finish.
 * Usage: idle_tasks [--workers N] [K]; one op = one task.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

typedef struct state {
    uint64_t k;
    tern_future **shots;      /* one never-completed future per task */
    tern_task *root;          /* parked until started == k */
    _Atomic uint64_t started; /* tasks that reached their wait */
    _Atomic uint64_t finished;
    _Atomic uint64_t bad_value;
} state;

static state st;

static void *idler(void *arg)
{
    tern_future *f = arg;
    /* the root waits for started == k, then reads st; it is alive until all
     * tasks are joined, long after this unpark */
    if (atomic_fetch_add(&st.started, 1) + 1 == st.k)
        tern_unpark(st.root);
    void *v = NULL;
    int rc = tern_future_await(f, &v, 0);
    if (rc < 0)
        bench_die("tern_future_await (idle task)", rc);
    if ((uintptr_t)v != 7)
        atomic_fetch_add(&st.bad_value, 1);
    atomic_fetch_add(&st.finished, 1);
    return NULL;
}

typedef struct out {
    uint64_t before, after, elapsed_ns;
} out;

static void *root(void *arg)
{
    out *o = arg;
    uint64_t k = st.k;
    st.root = tern_task_current();

    o->before = bench_vm_rss_bytes();
    uint64_t start = bench_now_ns();
    tern_task **h = malloc(k * sizeof *h);
    st.shots = calloc(k, sizeof *st.shots);
    if (!h || !st.shots)
        bench_die("malloc", -ENOMEM);
    for (uint64_t i = 0; i < k; i++) {
        int rc = tern_future_new(&st.shots[i]);
        if (rc < 0)
            bench_die("tern_future_new", rc);
        rc = tern_spawn(idler, st.shots[i], &h[i]);
        if (rc < 0)
            bench_die("tern_spawn", rc);
    }
    while (atomic_load(&st.started) < k) {
        int rc = tern_park(0);
        if (rc < 0)
            bench_die("tern_park (root)", rc);
    }
    o->elapsed_ns = bench_now_ns() - start;
    o->after = bench_vm_rss_bytes();

    for (uint64_t i = 0; i < k; i++)
        tern_future_set_result(st.shots[i], (void *)7);
    for (uint64_t i = 0; i < k; i++) {
        int rc = tern_join(h[i], NULL);
        if (rc < 0)
            bench_die("tern_join", rc);
    }
    for (uint64_t i = 0; i < k; i++)
        tern_future_release(st.shots[i]);
    free(h);
    free(st.shots);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"K"};
    static const uint64_t defs[] = {100000};
    static const uint64_t max[] = {UINT64_MAX / 256};
    bench_args a;
    bench_parse(argc, argv, "idle_tasks", 1, names, defs, max, &a);

    st.k = a.size[0];
    out o = {0};
    tern_runtime *rt = bench_runtime_new(a.workers);
    int rc = tern_block_on(rt, root, &o, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    bench_check(atomic_load(&st.bad_value) == 0, "every idle task received its value");
    bench_check(atomic_load(&st.finished) == st.k, "every idle task woke and finished");
    char extra[160];
    snprintf(extra, sizeof extra,
             " bytes_per_task=%.0f rss_before_kb=%llu rss_after_kb=%llu",
             ((double)o.after - (double)o.before) / (double)st.k,
             (unsigned long long)(o.before / 1024), (unsigned long long)(o.after / 1024));
    bench_result("idle_tasks", st.k, o.elapsed_ns, extra);
    return 0;
}
