/*
 * idle_tasks: read VmRSS; spawn K tasks that each wait on their own
 * never-completed oneshot (the spawner keeps the K task handles); wait until
 * all K are waiting; read VmRSS again: bytes_per_task = (after - before) / K,
 * which includes the spawner's handles and the oneshots. secs / per_op_ns
 * time the spawn-and-park phase. Then every oneshot is completed and all K
 * tasks are joined; all K must finish.
 * Usage: idle_tasks [--workers N] [K]; one op = one task.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

/* A minimal oneshot: the value, a flag, and the receiver's registered task.
 * Receiver: publish waiter, then check the flag, park while it is clear.
 * Sender: set the flag, then unpark the waiter if one was published. Both
 * sides are seq_cst, so either the receiver sees the flag or the sender sees
 * the waiter; tern_park's permit covers an unpark that beats the park. The
 * waiter stays alive: the sender side holds the task's join handle. */
typedef struct oneshot {
    _Atomic(tern_task *) waiter;
    _Atomic int full;
    uint32_t value;
} oneshot;

typedef struct state {
    uint64_t k;
    oneshot *shots;
    tern_task *root;           /* parked until started == k */
    _Atomic uint64_t started;  /* tasks that reached their wait */
    _Atomic uint64_t finished;
    _Atomic uint64_t bad_value;
} state;

static state st;

static void *idler(void *arg)
{
    oneshot *o = arg;
    atomic_store(&o->waiter, tern_task_current());
    /* the root waits for started == k, then reads st; it is alive until all
     * tasks are joined, long after this unpark */
    if (atomic_fetch_add(&st.started, 1) + 1 == st.k)
        tern_unpark(st.root);
    while (!atomic_load(&o->full)) {
        int rc = tern_park(0);
        if (rc < 0)
            bench_die("tern_park (idle task)", rc);
    }
    if (o->value != 7)
        atomic_fetch_add(&st.bad_value, 1);
    atomic_fetch_add(&st.finished, 1);
    return NULL;
}

static void oneshot_send(oneshot *o, uint32_t v)
{
    o->value = v;
    atomic_store(&o->full, 1);
    tern_task *w = atomic_load(&o->waiter);
    if (w)
        tern_unpark(w);
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
        int rc = tern_spawn(idler, &st.shots[i], &h[i]);
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
        oneshot_send(&st.shots[i], 7);
    for (uint64_t i = 0; i < k; i++) {
        int rc = tern_join(h[i], NULL);
        if (rc < 0)
            bench_die("tern_join", rc);
    }
    free(h);
    free(st.shots);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"K"};
    static const uint64_t defs[] = {100000};
    static const uint64_t max[] = {UINT64_MAX / sizeof(oneshot)};
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
    snprintf(extra, sizeof extra, " bytes_per_task=%.0f rss_before_kb=%llu rss_after_kb=%llu",
             ((double)o.after - (double)o.before) / (double)st.k,
             (unsigned long long)(o.before / 1024), (unsigned long long)(o.after / 1024));
    bench_result("idle_tasks", st.k, o.elapsed_ns, extra);
    return 0;
}
