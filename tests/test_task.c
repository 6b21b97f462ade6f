/* Tasks: spawn, join, cancel, yield, sleep, park/unpark, the blocking pool,
 * lifecycle and bad arguments. Runs once per I/O backend (TERN_BACKEND). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static void *ret_arg(void *arg)
{
    return arg;
}

START_TEST(spawn_join_result)
{
    tern_runtime *rt = rt_new(_i ? 4 : 1);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, ret_arg, (void *)0x1234, &t), 0);
    void *res = NULL;
    ck_assert_int_eq(tern_join(t, &res), 0);
    ck_assert_ptr_eq(res, (void *)0x1234);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *spawn_children(void *arg)
{
    enum { N = 1000 };
    static tern_task *kids[N];
    for (intptr_t i = 0; i < N; i++)
        ck_assert_int_eq(tern_spawn(ret_arg, (void *)i, &kids[i]), 0);
    intptr_t sum = 0;
    for (int i = 0; i < N; i++) {
        void *r;
        ck_assert_int_eq(tern_join(kids[i], &r), 0);
        sum += (intptr_t)r;
    }
    return (void *)sum;
}

START_TEST(run_main_spawns_and_joins)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = 3;
    void *res = NULL;
    ck_assert_int_eq(tern_run(&cfg, spawn_children, NULL, &res), 0);
    ck_assert_int_eq((intptr_t)res, 999 * 1000 / 2);
}
END_TEST

static void *ids_task(void *arg)
{
    tern_task *me = tern_task_current();
    ck_assert_ptr_nonnull(me);
    ck_assert_uint_eq(tern_task_id(me), tern_task_current_id());
    ck_assert_uint_ne(tern_task_current_id(), 0);
    ck_assert_ptr_nonnull(tern_loop_current());
    ck_assert_ptr_nonnull(tern_runtime_current());
    return (void *)(uintptr_t)tern_task_current_id();
}

START_TEST(task_ids_unique)
{
    tern_runtime *rt = rt_new(2);
    tern_task *a, *b;
    ck_assert_int_eq(tern_runtime_spawn(rt, ids_task, NULL, &a), 0);
    ck_assert_int_eq(tern_runtime_spawn(rt, ids_task, NULL, &b), 0);
    uint64_t ida = tern_task_id(a), idb = tern_task_id(b);
    void *ra, *rb;
    ck_assert_int_eq(tern_join(a, &ra), 0);
    ck_assert_int_eq(tern_join(b, &rb), 0);
    ck_assert_uint_ne(ida, idb);
    ck_assert_uint_eq((uintptr_t)ra, ida);
    ck_assert_uint_eq((uintptr_t)rb, idb);
    ck_assert_uint_eq(tern_task_current_id(), 0);
    ck_assert_ptr_null(tern_task_current());
    ck_assert_ptr_null(tern_runtime_current());
    tern_runtime_free(rt);
}
END_TEST

static void *sleep_long(void *arg)
{
    int r = tern_sleep(3600ull * 1000000000ull);
    *(int *)arg = r;
    return NULL;
}

/* A sleep too long to add to the clock is a sleep for ever: it waits, and
 * a cancel ends it with -ECANCELED from that very sleep. */
static void *sleep_max(void *arg)
{
    *(int *)arg = tern_sleep(UINT64_MAX);
    return NULL;
}

static void *sleep_until_never(void *arg)
{
    *(int *)arg = tern_sleep_until(UINT64_MAX);
    return NULL;
}

START_TEST(cancel_sleeping_task)
{
    tern_task_fn bodies[] = {sleep_long, sleep_max, sleep_until_never};
    tern_runtime *rt = rt_new(2);
    tern_task *t;
    int seen = 1;
    ck_assert_int_eq(tern_runtime_spawn(rt, bodies[_i], &seen, &t), 0);
    WAIT_PARKED(t, TERN__W_SLEEP); /* cancelled before it ran, seen would stay 1 */
    ck_assert_int_eq(tern_task_done(t), 0);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(seen, -ECANCELED);
    tern_runtime_free(rt);
}
END_TEST

static _Atomic int body_ran;

static void *count_body(void *arg)
{
    atomic_fetch_add(&body_ran, 1);
    return NULL;
}

static void *cancel_before_start(void *arg)
{
    tern_task *t;
    /* One worker and no suspension between spawn and cancel: the child
     * cannot have started. */
    ck_assert_int_eq(tern_spawn(count_body, NULL, &t), 0);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&body_ran), 0);
    /* a finished task cannot be cancelled */
    ck_assert_int_eq(tern_spawn(count_body, NULL, &t), 0);
    while (!tern_task_done(t))
        tern_yield();
    ck_assert_int_eq(tern_task_cancel(t), -EALREADY);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(atomic_load(&body_ran), 1);
    return NULL;
}

/* tern_spawn_owned: arg goes to the body, or, when the body never runs, to
 * drop, exactly once; never to both, never lost. */
static _Atomic int owned_ran, owned_dropped;

static void *owned_body(void *arg)
{
    atomic_fetch_add(&owned_ran, 1);
    free(arg);
    return NULL;
}

static void owned_drop(void *arg)
{
    ck_assert_ptr_null(tern_task_current()); /* outside any task */
    atomic_fetch_add(&owned_dropped, 1);
    free(arg);
}

static uint64_t never_ran_count(tern_runtime *rt)
{
    tern_metrics m;
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    return m.total.never_ran;
}

static void *owned_main(void *arg)
{
    tern_runtime *rt = tern_runtime_current();
    uint64_t before = never_ran_count(rt);
    tern_task *t;
    /* one worker, no suspension between spawn and cancel: it cannot start */
    ck_assert_int_eq(tern_spawn_owned(owned_body, malloc(16), owned_drop, &t), 0);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&owned_dropped), 1);
    ck_assert_int_eq(atomic_load(&owned_ran), 0);
    ck_assert_uint_eq(never_ran_count(rt), before + 1);
    /* a body that runs owns arg: no drop */
    ck_assert_int_eq(tern_spawn_owned(owned_body, malloc(16), owned_drop, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(atomic_load(&owned_ran), 1);
    ck_assert_int_eq(atomic_load(&owned_dropped), 1);
    ck_assert_uint_eq(never_ran_count(rt), before + 1);
    /* detached, and drop may be NULL */
    ck_assert_int_eq(tern_spawn_owned(owned_body, malloc(16), owned_drop, NULL), 0);
    ck_assert_int_eq(tern_spawn_owned(count_body, NULL, NULL, &t), 0);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(tern_runtime_spawn_owned(NULL, owned_body, NULL, owned_drop, &t),
                     -EINVAL);
    ck_assert_int_eq(tern_runtime_spawn_owned(rt, NULL, NULL, owned_drop, &t), -EINVAL);
    return arg;
}

START_TEST(spawn_owned_drops_unrun)
{
    atomic_store(&owned_ran, 0);
    atomic_store(&owned_dropped, 0);
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, owned_main, NULL, NULL), 0);
    ck_assert_int_eq(atomic_load(&owned_ran) + atomic_load(&owned_dropped), 3);
    /* off a runtime: refused, arg still the caller's, drop not called */
    tern_task *t;
    ck_assert_int_eq(tern_spawn_owned(owned_body, NULL, owned_drop, &t), -EPERM);
    ck_assert_int_eq(atomic_load(&owned_ran) + atomic_load(&owned_dropped), 3);
}
END_TEST

/* Spawned from a foreign thread and shut down at once: every task either
 * ran or was dropped, none both, none lost, on any number of workers. */
START_TEST(spawn_owned_shutdown_accounts)
{
    enum { K = 2000 };
    for (int round = 0; round < 5; round++) {
        atomic_store(&owned_ran, 0);
        atomic_store(&owned_dropped, 0);
        tern_runtime *rt = rt_new(2);
        int spawned = 0;
        for (int i = 0; i < K; i++)
            if (tern_runtime_spawn_owned(rt, owned_body, malloc(16), owned_drop, NULL) ==
                0)
                spawned++;
        ck_assert_int_eq(spawned, K);
        ck_assert_int_eq(tern_runtime_free(rt), 0);
        ck_assert_int_eq(atomic_load(&owned_ran) + atomic_load(&owned_dropped), K);
    }
}
END_TEST

/* Under an address-space limit too tight for a stack per connection,
 * every connection task either serves its socket or has it closed by its
 * drop: none is left open, and the descriptor count comes back to where
 * it was. In a child, whose limit the rest of the suite does not share;
 * not under a sanitizer, whose shadow memory needs the address space. */
#if !defined(TERN_ASAN) && !defined(TERN_TSAN)
enum { AS_CONNS = 4000 };
static _Atomic int as_served, as_dropped;

static void *as_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char b;
    while (tern_recv(fd, &b, 1, 0, 0) > 0)
        ;
    tern_close(fd);
    atomic_fetch_add(&as_served, 1);
    return NULL;
}

static void as_drop(void *arg)
{
    tern_close((int)(intptr_t)arg);
    atomic_fetch_add(&as_dropped, 1);
}

static long vm_size_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Holds the only worker, without suspending, until the spawns are done:
 * every header is then allocated before any stack is taken, so the
 * stacks, not the headers, meet the limit. */
static _Atomic int as_gate; /* 1: holding, 2: released */

static void *as_hold(void *arg)
{
    atomic_store(&as_gate, 1);
    while (atomic_load(&as_gate) != 2)
        ;
    return NULL;
}

static int as_child(void)
{
    struct rlimit nofile = {2 * AS_CONNS + 256, 2 * AS_CONNS + 256};
    if (setrlimit(RLIMIT_NOFILE, &nofile) != 0)
        return 10;
    int before = fd_count();
    tern_config cfg = {.workers = 1};
    tern_runtime *rt;
    if (tern_runtime_new(&cfg, &rt) != 0 ||
        tern_runtime_spawn(rt, as_hold, NULL, NULL) != 0)
        return 11;
    for (uint64_t end = tern_now() + 60ull * 1000000000;
         !atomic_load(&as_gate) && tern_now() < end;)
        usleep(1000);
    /* room for headers and sockets, not for 4000 stacks of 64 KiB */
    struct rlimit as = {(rlim_t)(vm_size_kb() + 48 * 1024) * 1024, RLIM_INFINITY};
    as.rlim_max = as.rlim_cur;
    if (setrlimit(RLIMIT_AS, &as) != 0)
        return 12;
    static int peer[AS_CONNS];
    int n = 0, refused = 0;
    for (; n < AS_CONNS; n++) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
            return 13;
        peer[n] = sp[0];
        int r =
            tern_runtime_spawn_owned(rt, as_conn, (void *)(intptr_t)sp[1], as_drop, NULL);
        if (r == -ENOMEM) {
            close(sp[1]); /* refused: still ours to close */
            refused++;
        } else if (r != 0) {
            return 14;
        }
    }
    atomic_store(&as_gate, 2);
    /* let them all start (or fail to) before the peers hang up */
    uint64_t end = tern_now() + 60ull * 1000000000;
    for (tern_metrics m; tern_runtime_metrics(rt, &m) == 0 && tern_now() < end;
         usleep(1000))
        if (m.ready_tasks == 0 && m.inject_depth == 0)
            break;
    for (int i = 0; i < n; i++)
        close(peer[i]);
    tern_runtime_free(rt);
    if (atomic_load(&as_dropped) == 0)
        return 15; /* the limit did not bite: nothing was shown */
    if (refused)   /* headers are small: only stacks may run out */
        return 18;
    fprintf(stderr, "address_limit_orphans_nothing: served %d, dropped %d, refused %d\n",
            atomic_load(&as_served), atomic_load(&as_dropped), refused);
    if (atomic_load(&as_served) + atomic_load(&as_dropped) + refused != AS_CONNS)
        return 16;
    if (fd_count() != before)
        return 17;
    return 0;
}

START_TEST(address_limit_orphans_nothing)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(as_child());
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child: status %d (10-18: the step that failed, see as_child)", status);
}
END_TEST
#endif

START_TEST(cancel_unstarted_never_runs)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, cancel_before_start, NULL, NULL), 0);
}
END_TEST

static void *yield_until_cancelled(void *arg)
{
    while (tern_yield() == 0)
        atomic_fetch_add((_Atomic int *)arg, 1);
    /* sticky: the next suspension point says so too */
    ck_assert_int_eq(tern_yield(), -ECANCELED);
    ck_assert_int_eq(tern_sleep(1000), -ECANCELED);
    return NULL;
}

START_TEST(cancel_is_sticky)
{
    tern_runtime *rt = rt_new(2);
    tern_task *t;
    _Atomic int yields = 0;
    ck_assert_int_eq(tern_runtime_spawn(rt, yield_until_cancelled, &yields, &t), 0);
    /* cancelled before it ran, its checks would never run */
    WAIT_UNTIL(atomic_load(&yields) > 0, WAIT_MS);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    tern_runtime_free(rt);
}
END_TEST

/* Two tasks on one worker alternate on each yield. */
static char order[64];
static _Atomic int order_len;

static void *yielder(void *arg)
{
    for (int i = 0; i < 5; i++) {
        order[atomic_fetch_add(&order_len, 1)] = *(char *)arg;
        ck_assert_int_eq(tern_yield(), 0);
    }
    return NULL;
}

static void *two_yielders(void *arg)
{
    tern_task *a, *b;
    ck_assert_int_eq(tern_spawn(yielder, "a", &a), 0);
    ck_assert_int_eq(tern_spawn(yielder, "b", &b), 0);
    ck_assert_int_eq(tern_join(a, NULL), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    return NULL;
}

START_TEST(yield_interleaves)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, two_yielders, NULL, NULL), 0);
    order[order_len] = 0;
    ck_assert_str_eq(order, "ababababab");
}
END_TEST

/* Round robin on one worker: 1,000 yielders overflow the local queue into
 * the inject queue, yet when the first of them has yielded FAIR_Y times
 * every other one has yielded at least FAIR_Y - 3 times. (Before yields went
 * behind the overflow, some had not run at all when 600 had finished.) */
enum { FAIR_N = 1000, FAIR_Y = 100 };
static struct {
    _Atomic int go, done, min_at_first;
    _Atomic int prog[FAIR_N];
} fair;

static void *fair_yielder(void *arg)
{
    int i = (int)(intptr_t)arg;
    while (!atomic_load(&fair.go))
        ck_assert_int_eq(tern_yield(), 0);
    for (int k = 1; k <= FAIR_Y; k++) {
        ck_assert_int_eq(tern_yield(), 0);
        atomic_store_explicit(&fair.prog[i], k, memory_order_relaxed);
    }
    if (atomic_fetch_add(&fair.done, 1) == 0) {
        int min = FAIR_Y;
        for (int j = 0; j < FAIR_N; j++)
            if (atomic_load_explicit(&fair.prog[j], memory_order_relaxed) < min)
                min = atomic_load_explicit(&fair.prog[j], memory_order_relaxed);
        atomic_store(&fair.min_at_first, min);
    }
    return NULL;
}

static void *fair_root(void *arg)
{
    (void)arg;
    static tern_task *t[FAIR_N];
    for (int i = 0; i < FAIR_N; i++)
        ck_assert_int_eq(tern_spawn(fair_yielder, (void *)(intptr_t)i, &t[i]), 0);
    atomic_store(&fair.go, 1);
    for (int i = 0; i < FAIR_N; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    return NULL;
}

START_TEST(yield_round_robin)
{
    tern_runtime *rt = rt_new(1);
    ck_assert_int_eq(tern_block_on(rt, fair_root, NULL, NULL), 0);
    int done = atomic_load(&fair.done), min = atomic_load(&fair.min_at_first);
    ck_assert_int_eq(done, FAIR_N);
    ck_assert_int_ge(min, FAIR_Y - 3);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A worker that stops making progress (here: a task spinning without
 * yielding) does not keep its queue while another worker is busy: the busy
 * one rescues the queued tasks. Neither worker is ever idle, so no ordinary
 * steal happens. */
enum { RESCUE_K = 32 };
typedef struct rescue {
    _Atomic(tern_loop *) yielder_loop;
    _Atomic int stop, done;
} rescue;

static void *rescue_yielder(void *arg)
{
    rescue *r = arg;
    while (!atomic_load(&r->stop)) {
        atomic_store(&r->yielder_loop, tern_loop_current());
        tern_yield();
    }
    return NULL;
}

static void *rescue_count(void *arg)
{
    atomic_fetch_add(&((rescue *)arg)->done, 1);
    return NULL;
}

static void *rescue_staller(void *arg)
{
    rescue *r = arg;
    uint64_t end = tern_now() + (uint64_t)WAIT_MS * 1000000u;
    /* until the yielder runs on the other worker (an idle one steals it) */
    while (!atomic_load(&r->yielder_loop) ||
           atomic_load(&r->yielder_loop) == tern_loop_current()) {
        ck_assert_uint_lt(tern_now(), end);
        tern_yield();
    }
    for (int i = 0; i < RESCUE_K; i++)
        ck_assert_int_eq(tern_spawn(rescue_count, r, NULL), 0);
    while (atomic_load(&r->done) < RESCUE_K && tern_now() < end)
        ; /* holds this worker without yielding */
    int done = atomic_load(&r->done);
    atomic_store(&r->stop, 1);
    ck_assert_int_eq(done, RESCUE_K);
    return NULL;
}

static void *rescue_root(void *arg)
{
    tern_task *a, *b;
    ck_assert_int_eq(tern_spawn(rescue_yielder, arg, &a), 0);
    ck_assert_int_eq(tern_spawn(rescue_staller, arg, &b), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    ck_assert_int_eq(tern_join(a, NULL), 0);
    return NULL;
}

START_TEST(stalled_worker_rescued)
{
    tern_runtime *rt = rt_new(2);
    rescue r = {0};
    ck_assert_int_eq(tern_block_on(rt, rescue_root, &r, NULL), 0);
    ck_assert_int_eq(atomic_load(&r.done), RESCUE_K);
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A handle used after its last reference went (joined twice, released
 * then used) gets -EINVAL, also once its header serves another task,
 * instead of reading that task. */
static void *stale_body(void *arg)
{
    return arg;
}

static void *stale_parked(void *arg)
{
    (void)arg;
    while (tern_park(0) == 0)
        ;
    return NULL;
}

static void stale_checks(tern_task *t)
{
    void *res = NULL;
    const char *file;
    char buf[8];
    ck_assert_int_eq(tern_join(t, &res), -EINVAL);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(tern_task_cancel(t), -EINVAL);
    ck_assert_int_eq(tern_task_done(t), -EINVAL);
    ck_assert_uint_eq(tern_task_id(t), 0);
    ck_assert_int_eq(tern_task_set_name(t, "x"), -EINVAL);
    ck_assert_int_eq(tern_task_get_name(t, buf, sizeof buf), -EINVAL);
    ck_assert_int_eq(tern_task_location(t, &file, NULL), -EINVAL);
    ck_assert_ptr_null(tern_task_ref(t));
    tern_future *f;
    ck_assert_int_eq(tern_task_future(t, &f), -EINVAL);
    tern_unpark(t);       /* nothing to wake */
    tern_task_release(t); /* nothing to give back */
}

static void *stale_root(void *arg)
{
    (void)arg;
    tern_task *t, *u;
    void *res;
    ck_assert_int_eq(tern_spawn(stale_body, (void *)0x51, &t), 0);
    uint64_t id = tern_task_id(t);
    ck_assert_int_eq(tern_join(t, &res), 0);
    ck_assert_ptr_eq(res, (void *)0x51);
    stale_checks(t);
    /* the header comes back for a later spawn on this worker, once its
     * grace period has passed (a poll every 64 headers) */
    uintptr_t mask = ((uintptr_t)1 << 48) - 1;
    for (int n = 0;; n++) {
        ck_assert_int_lt(n, 1000);
        ck_assert_int_eq(tern_spawn(stale_parked, NULL, &u), 0);
        if (((uintptr_t)u & mask) == ((uintptr_t)t & mask))
            break;
        ck_assert_int_eq(tern_task_cancel(u), 0);
        ck_assert_int_eq(tern_join(u, NULL), -ECANCELED);
    }
    ck_assert_ptr_ne(u, t);
    stale_checks(t);
    ck_assert_int_eq(tern_task_done(u), 0); /* its reference was not taken */
    ck_assert_uint_ne(tern_task_id(u), id);
    ck_assert_int_eq(tern_task_cancel(u), 0);
    ck_assert_int_eq(tern_join(u, NULL), -ECANCELED);
    stale_checks(u);
    /* and the current task's own handle is a real one */
    tern_task *me = tern_task_current();
    ck_assert_int_eq(tern_task_done(me), 0);
    ck_assert_uint_eq(tern_task_id(me), tern_task_current_id());
    return NULL;
}

START_TEST(stale_handle_refused)
{
    tern_runtime *rt = rt_new(1);
    ck_assert_int_eq(tern_block_on(rt, stale_root, NULL, NULL), 0);
    /* from a thread outside the runtime too */
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, stale_body, NULL, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
    stale_checks(t);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *sleeper_timed(void *arg)
{
    uint64_t ns = *(uint64_t *)arg;
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_sleep(ns), 0);
    return (void *)(uintptr_t)(tern_now() - t0);
}

START_TEST(sleep_not_early)
{
    tern_runtime *rt = rt_new(2);
    uint64_t asks[] = {0, 1000000, 5000000, 20000000};
    for (unsigned i = 0; i < sizeof asks / sizeof *asks; i++) {
        void *took;
        ck_assert_int_eq(tern_block_on(rt, sleeper_timed, &asks[i], &took), 0);
        ck_assert_uint_ge((uintptr_t)took, asks[i]);
        ck_assert_uint_lt((uintptr_t)took,
                          asks[i] + 500000000u); /* generous: shared CI */
    }
    tern_runtime_free(rt);
}
END_TEST

static void *park_checks(void *arg)
{
    tern_task *me = tern_task_current();
    /* an unpark before the park is remembered */
    tern_unpark(me);
    ck_assert_int_eq(tern_park(0), 0);
    /* a deadline with nobody unparking */
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_park(t0 + 2000000), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), t0 + 2000000);
    /* a deadline already past */
    ck_assert_int_eq(tern_park(1), -ETIMEDOUT);
    /* woken by a foreign thread before the deadline */
    __atomic_store_n((tern_task **)arg, tern_task_ref(me), __ATOMIC_RELEASE);
    int r;
    while ((r = tern_park(tern_now() + 10ull * 1000000000ull)) == 0 &&
           !atomic_load((_Atomic int *)((tern_task **)arg + 1)))
        ;
    ck_assert_int_eq(r, 0);
    return NULL;
}

START_TEST(park_unpark)
{
    tern_runtime *rt = rt_new(2);
    struct {
        tern_task *t;
        _Atomic int go;
    } box = {0};
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, park_checks, &box, &t), 0);
    WAIT_UNTIL(__atomic_load_n(&box.t, __ATOMIC_ACQUIRE), WAIT_MS);
    WAIT_PARKED(box.t, TERN__W_PARK); /* the unpark must find it parked */
    atomic_store(&box.go, 1);
    tern_unpark(box.t);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    tern_task_release(box.t);
    tern_runtime_free(rt);
}
END_TEST

/* The budget: a task that always has a permit never really blocks, yet a
 * sleeper on the same (only) worker still gets its turn. */
static _Atomic int spin_stop;

static void *spinner(void *arg)
{
    tern_task *me = tern_task_current();
    while (!atomic_load(&spin_stop)) {
        tern_unpark(me);
        ck_assert_int_eq(tern_park(0), 0);
    }
    return NULL;
}

static void *stopper(void *arg)
{
    ck_assert_int_eq(tern_sleep(5000000), 0);
    atomic_store(&spin_stop, 1);
    return NULL;
}

static void *budget_main(void *arg)
{
    tern_task *a, *b;
    ck_assert_int_eq(tern_spawn(spinner, NULL, &a), 0);
    ck_assert_int_eq(tern_spawn(stopper, NULL, &b), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    ck_assert_int_eq(tern_join(a, NULL), 0);
    tern_loop_info info;
    ck_assert_int_eq(tern_loop_get_info(NULL, &info), 0);
    ck_assert_uint_gt(info.stats.budget_yields, 0);
    return NULL;
}

/* A task that handles its cancel and withdraws it (tern_task_uncancel)
 * works on normally: its suspension points answer again, and its joiner
 * gets its result. */
static void *handles_cancel(void *arg)
{
    _Atomic int *stage = arg;
    int r = tern_sleep_until(UINT64_MAX);
    ck_assert_int_eq(r, -ECANCELED);
    ck_assert_int_eq(tern_sleep(1000), -ECANCELED); /* sticky until withdrawn */
    ck_assert_int_eq(tern_task_uncancel(), 1);
    ck_assert_int_eq(tern_task_uncancel(), 0); /* nothing left to withdraw */
    ck_assert_int_eq(tern_sleep(1000), 0);     /* the goodbye, say */
    ck_assert_int_eq(tern_yield(), 0);
    atomic_store(stage, 1);
    /* a cancel after the withdrawal is a new request */
    TASK_WAIT_UNTIL(atomic_load(stage) == 2, WAIT_MS);
    ck_assert_int_eq(tern_sleep_until(UINT64_MAX), -ECANCELED);
    ck_assert_int_eq(tern_task_uncancel(), 1);
    return (void *)(uintptr_t)42;
}

static void *uncancel_main(void *arg)
{
    _Atomic int stage = 0;
    tern_task *t;
    ck_assert_int_eq(tern_spawn(handles_cancel, &stage, &t), 0);
    TASK_WAIT_PARKED(t, TERN__W_SLEEP);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    TASK_WAIT_UNTIL(atomic_load(&stage) == 1, WAIT_MS);
    atomic_store(&stage, 2);
    TASK_WAIT_PARKED(t, TERN__W_SLEEP);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    void *res = NULL;
    ck_assert_int_eq(tern_join(t, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)42);
    return NULL;
}

START_TEST(uncancel_finishes_normally)
{
    ck_assert_int_eq(tern_task_uncancel(), -EPERM);
    for (unsigned workers = 1; workers <= 2; workers++) {
        tern_config cfg = {.workers = workers};
        ck_assert_int_eq(tern_run(&cfg, uncancel_main, NULL, NULL), 0);
    }
}
END_TEST

/* ---- cancel scopes, against asyncio.timeout's documented behaviour ------------- */

#define SC_MS 1000000ull

static void *scope_basics_main(void *arg)
{
    tern_scope a, b;
    /* the deadline cancels the work inside, the exit reports the timeout,
     * and the task goes on */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 5 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_sleep(10000 * SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_sleep(SC_MS), -ECANCELED); /* still inside an expired scope */
    ck_assert_int_eq(tern_yield(), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&a), -ETIMEDOUT);
    ck_assert_int_eq(tern_sleep(SC_MS), 0);

    /* a deadline not reached: nothing happens */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 10000 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_sleep(SC_MS), 0);
    ck_assert_int_eq(tern_scope_exit(&a), 0);

    /* a wait's own earlier deadline is its own: -ETIMEDOUT, scope intact */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 10000 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_park(tern_now() + SC_MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_scope_exit(&a), 0);

    /* nested, the inner deadline first: only the inner scope expires */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 10000 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_scope_enter(&b, tern_now() + 5 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_sleep(10000 * SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&b), -ETIMEDOUT);
    ck_assert_int_eq(tern_sleep(SC_MS), 0);
    ck_assert_int_eq(tern_scope_exit(&a), 0);

    /* nested, the outer deadline first: it cancels the inner work too, and
     * only the outer exit reports it */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 5 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_scope_enter(&b, tern_now() + 10000 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_sleep(10000 * SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&b), 0);
    ck_assert_int_eq(tern_sleep(SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&a), -ETIMEDOUT);

    /* a shield keeps an outer deadline out, not its own */
    ck_assert_int_eq(tern_scope_enter(&a, tern_now() + 2 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_scope_enter(&b, 0, TERN_SCOPE_SHIELD), 0);
    ck_assert_int_eq(tern_sleep(10 * SC_MS), 0);
    ck_assert_int_eq(tern_scope_exit(&b), 0);
    ck_assert_int_eq(tern_sleep(SC_MS),
                     -ECANCELED); /* out of the shield, a is past due */
    ck_assert_int_eq(tern_scope_exit(&a), -ETIMEDOUT);
    ck_assert_int_eq(tern_scope_enter(&b, tern_now() + 2 * SC_MS, TERN_SCOPE_SHIELD), 0);
    ck_assert_int_eq(tern_sleep(10000 * SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&b), -ETIMEDOUT);

    /* cancelled by hand */
    ck_assert_int_eq(tern_scope_enter(&a, 0, 0), 0);
    ck_assert_int_eq(tern_scope_cancel(&a), 0);
    ck_assert_int_eq(tern_scope_cancel(&a), -EALREADY);
    ck_assert_int_eq(tern_sleep(SC_MS), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&a), -ECANCELED);
    ck_assert_int_eq(tern_sleep(SC_MS), 0);

    /* errors */
    ck_assert_int_eq(tern_scope_enter(NULL, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_scope_enter(&a, 0, 2), -EINVAL);
    ck_assert_int_eq(tern_scope_cancel(&a), -EINVAL); /* not entered */
    ck_assert_int_eq(tern_scope_exit(&a), -EINVAL);
    ck_assert_int_eq(tern_scope_enter(&a, 0, 0), 0);
    ck_assert_int_eq(tern_scope_enter(&b, 0, 0), 0);
    ck_assert_int_eq(tern_scope_exit(&a), -EINVAL); /* b is the innermost */
    ck_assert_int_eq(tern_scope_exit(&b), 0);
    ck_assert_int_eq(tern_scope_exit(&a), 0);
    ck_assert_int_eq(tern_scope_exit(NULL), -EINVAL);
    return (void *)(uintptr_t)7;
}

START_TEST(cancel_scopes)
{
    tern_scope sc;
    ck_assert_int_eq(tern_scope_enter(&sc, 0, 0), -EPERM);
    ck_assert_int_eq(tern_scope_exit(&sc), -EINVAL);
    tern_config cfg = {.workers = 2};
    void *res = NULL;
    /* the timeouts were handled: the task finished normally */
    ck_assert_int_eq(tern_run(&cfg, scope_basics_main, NULL, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)7);
}
END_TEST

/* The task's cancel under a shield: hidden inside, seen at the first
 * suspension point after it. */
static void *shielded(void *arg)
{
    _Atomic int *stage = arg;
    tern_scope sh;
    ck_assert_int_eq(tern_scope_enter(&sh, 0, TERN_SCOPE_SHIELD), 0);
    atomic_store(stage, 1);
    TASK_WAIT_UNTIL(atomic_load(stage) == 2, WAIT_MS); /* its sleeps see no cancel */
    ck_assert_int_eq(tern_sleep(2 * SC_MS), 0);
    ck_assert_int_eq(tern_yield(), 0);
    ck_assert_int_eq(tern_scope_exit(&sh), 0);
    ck_assert_int_eq(tern_yield(), -ECANCELED);
    return NULL;
}

static void *shield_main(void *arg)
{
    _Atomic int stage = 0;
    tern_task *t;
    ck_assert_int_eq(tern_spawn(shielded, &stage, &t), 0);
    TASK_WAIT_UNTIL(atomic_load(&stage) == 1, WAIT_MS);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    atomic_store(&stage, 2);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    return NULL;
}

/* I/O under a scope's deadline: the read is cancelled (the kernel lets go
 * of the buffer first), the exit reports the timeout, and the socket has
 * lost nothing. */
static void *scoped_io_main(void *arg)
{
    int sp[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    char c = 0;
    tern_scope sc;
    ck_assert_int_eq(tern_scope_enter(&sc, tern_now() + 5 * SC_MS, 0), 0);
    ck_assert_int_eq(tern_read(sp[0], &c, 1, 0), -ECANCELED);
    ck_assert_int_eq(tern_scope_exit(&sc), -ETIMEDOUT);
    ck_assert_int_eq(tern_write(sp[1], "z", 1, 0), 1);
    ck_assert_int_eq(tern_read(sp[0], &c, 1, tern_now() + 20000 * SC_MS), 1);
    ck_assert_int_eq(c, 'z');
    ck_assert_int_eq(tern_close(sp[0]), 0);
    ck_assert_int_eq(tern_close(sp[1]), 0);
    return NULL;
}

START_TEST(scoped_io)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, scoped_io_main, NULL, NULL), 0);
}
END_TEST

START_TEST(shield_hides_the_task_cancel)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, shield_main, NULL, NULL), 0);
}
END_TEST

/* A cancel from another thread racing scopes being entered and left,
 * shielded every other time: never lost, never seen inside a shield, and
 * once seen outside one, seen at every suspension point after. */
struct race_scopes {
    _Atomic int started, seen_outside, late_zero;
};

static void *scope_loop(void *arg)
{
    struct race_scopes *r = arg;
    atomic_store(&r->started, 1);
    int seen = 0;
    for (uint64_t i = 0; i < 100000000; i++) {
        tern_scope sc;
        int shield = i & 1;
        ck_assert_int_eq(tern_scope_enter(&sc, tern_now() + 60000 * SC_MS,
                                          shield ? TERN_SCOPE_SHIELD : 0),
                         0);
        int in = tern_yield();
        if (shield)
            ck_assert_int_eq(in, 0);
        ck_assert_int_eq(tern_scope_exit(&sc), 0);
        int out = tern_yield();
        if (seen && out == 0)
            atomic_fetch_add(&r->late_zero, 1); /* a cancel seen once must stay seen */
        if (!seen && (in == -ECANCELED || out == -ECANCELED))
            seen = 1;
        if (seen && ++seen > 100) {
            atomic_store(&r->seen_outside, 1);
            return NULL;
        }
    }
    return NULL;
}

START_TEST(cancel_races_scopes)
{
    tern_runtime *rt = rt_new(2);
    for (int round = 0; round < SCALED(20) + 2; round++) {
        struct race_scopes r = {0};
        tern_task *t;
        ck_assert_int_eq(tern_runtime_spawn(rt, scope_loop, &r, &t), 0);
        WAIT_UNTIL(atomic_load(&r.started), WAIT_MS);
        spin_units((unsigned)(round * 37 % 300));
        ck_assert_int_eq(tern_task_cancel(t), 0);
        ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
        ck_assert_int_eq(atomic_load(&r.seen_outside), 1);
        ck_assert_int_eq(atomic_load(&r.late_zero), 0);
    }
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

START_TEST(budget_prevents_starvation)
{
    tern_config cfg = {.workers = 1, .budget = 64};
    ck_assert_int_eq(tern_run(&cfg, budget_main, NULL, NULL), 0);
}
END_TEST

/* Spawning spends the budget: a task spawning in a loop lets its children
 * run before it is done, even on one worker where nothing else could. */
static _Atomic int kids_ran;

static void *kid(void *arg)
{
    atomic_fetch_add(&kids_ran, 1);
    return NULL;
}

static void *spawn_loop(void *arg)
{
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(tern_spawn(kid, NULL, NULL), 0);
    int during = atomic_load(&kids_ran);
    ck_assert_int_gt(during, 0);
    while (atomic_load(&kids_ran) < 100)
        tern_yield();
    return NULL;
}

START_TEST(spawning_spends_budget)
{
    tern_config cfg = {.workers = 1, .budget = 16};
    ck_assert_int_eq(tern_run(&cfg, spawn_loop, NULL, NULL), 0);
}
END_TEST

#pragma GCC diagnostic ignored "-Winfinite-recursion" /* on purpose */
static void *recurse(void *arg)
{
    volatile char buf[1024];
    buf[0] = (char)(uintptr_t)arg;
    recurse((void *)((uintptr_t)arg + 1));
    return (void *)(uintptr_t)buf[0];
}

/* One frame far bigger than the stack, written from its low end: with
 * stack-clash protection (tern's build, the README's advice) its probes
 * meet the guard page; without, it faults wherever it lands, and the
 * handler knows the task by its stack pointer. */
static void *big_frame(void *arg)
{
    volatile char *p = __builtin_alloca(8u << 20);
    p[0] = 1;
    return (void *)(uintptr_t)p[0];
}

__attribute__((optimize("no-stack-clash-protection"))) static void *
big_frame_unprobed(void *arg)
{
    volatile char *p = __builtin_alloca(8u << 20);
    p[0] = 1;
    return (void *)(uintptr_t)p[0];
}

START_TEST(stack_overflow_reported)
{
    tern_task_fn bodies[] = {recurse, big_frame, big_frame_unprobed};
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        tern_config cfg = {.workers = 1};
        tern_run(&cfg, bodies[_i], NULL, NULL);
        _exit(0); /* not reached: the overflow ends the process */
    }
    close(pipefd[1]);
    char buf[4096] = {0};
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 &&
           (n = read(pipefd[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    close(pipefd[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status), "child exited normally: %s", buf);
    ck_assert_msg(strstr(buf, "overflowed its stack") != NULL, "stderr was: %s", buf);
    ck_assert_msg(strstr(buf, "task ") != NULL, "stderr was: %s", buf);
}
END_TEST

static void *in_blocking(void *arg)
{
    /* a blocking job runs on a pool thread, not on a worker */
    ck_assert_ptr_null(tern_loop_current());
    usleep(2000);
    return (void *)((uintptr_t)arg * 2);
}

static void *blocking_main(void *arg)
{
    enum { N = 40 };
    tern_task *jobs[N];
    for (uintptr_t i = 0; i < N; i++)
        ck_assert_int_eq(tern_spawn_blocking(in_blocking, (void *)i, &jobs[i]), 0);
    uintptr_t sum = 0;
    for (int i = 0; i < N; i++) {
        void *r;
        ck_assert_int_eq(tern_join(jobs[i], &r), 0);
        sum += (uintptr_t)r;
    }
    ck_assert_uint_eq(sum, 2 * (N - 1) * N / 2);
    ck_assert_int_eq(tern_spawn_blocking(NULL, NULL, &jobs[0]), -EINVAL);
    ck_assert_int_eq(tern_spawn_blocking(in_blocking, NULL, NULL), -EINVAL);
    return NULL;
}

START_TEST(blocking_pool)
{
    tern_config cfg = {.workers = 2, .blocking_threads = 4};
    ck_assert_int_eq(tern_run(&cfg, blocking_main, NULL, NULL), 0);
    tern_task *t;
    ck_assert_int_eq(tern_spawn_blocking(in_blocking, NULL, &t), -EPERM);
    ck_assert_int_eq(tern_runtime_spawn_blocking(NULL, in_blocking, NULL, &t), -EINVAL);
}
END_TEST

/* A pool thread's exit runs its thread-local destructors (glibc frees a
 * resolver's state there): tern_runtime_free must return only after them,
 * or the process's exit and its leak check race the thread. */
static pthread_key_t slow_key;
static _Atomic int key_destructed;

static void slow_destructor(void *v)
{
    usleep(50000); /* what is tested: a teardown that takes a while */
    atomic_fetch_add(&key_destructed, 1);
}

static void *set_slow_key(void *arg)
{
    pthread_setspecific(slow_key, arg);
    return NULL;
}

START_TEST(free_joins_pool_threads)
{
    ck_assert_int_eq(pthread_key_create(&slow_key, slow_destructor), 0);
    for (int keepalive = 0; keepalive < 2; keepalive++) {
        atomic_store(&key_destructed, 0);
        tern_config cfg;
        tern_config_init(&cfg);
        cfg.workers = 1;
        /* 1 ms: the thread retires on its own before the free (joined by
         * the next submit or by the free); 60 s: the free stops it */
        cfg.blocking_keepalive_ms = keepalive ? 1 : 60000;
        tern_runtime *rt;
        ck_assert_int_eq(tern_runtime_new(&cfg, &rt), 0);
        tern_task *t;
        ck_assert_int_eq(tern_runtime_spawn_blocking(rt, set_slow_key, &cfg, &t), 0);
        ck_assert_int_eq(tern_join(t, NULL), 0);
        if (keepalive) {
            tern_blocking_info bi;
            WAIT_UNTIL(tern_runtime_blocking_info(rt, &bi) == 0 && bi.threads == 0,
                       WAIT_MS);
            /* a second job starts a new thread and reaps the first */
            ck_assert_int_eq(tern_runtime_spawn_blocking(rt, set_slow_key, &cfg, &t), 0);
            ck_assert_int_eq(tern_join(t, NULL), 0);
        }
        ck_assert_int_eq(tern_runtime_free(rt), 0);
        ck_assert_int_eq(atomic_load(&key_destructed), 1 + keepalive);
    }
    pthread_key_delete(slow_key);
}
END_TEST

/* Shutdown with tasks parked forever, sleeping, and handles pending. */
static _Atomic int saw_cancel, soon_ran, later_ran, waiting;

static void *park_forever(void *arg)
{
    int r;
    atomic_fetch_add(&waiting, 1);
    while ((r = tern_park(0)) == 0)
        ;
    if (r == -ECANCELED)
        atomic_fetch_add(&saw_cancel, 1);
    return NULL;
}

static void *sleep_forever(void *arg)
{
    atomic_fetch_add(&waiting, 1);
    if (tern_sleep(3600ull * 1000000000ull) == -ECANCELED)
        atomic_fetch_add(&saw_cancel, 1);
    return NULL;
}

static void bump(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static void *shutdown_setup(void *arg)
{
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(tern_spawn(park_forever, NULL, NULL), 0);
        ck_assert_int_eq(tern_spawn(sleep_forever, NULL, NULL), 0);
        ck_assert_int_eq(
            tern_call_later(NULL, 3600ull * 1000000000ull, bump, &later_ran, NULL), 0);
    }
    return NULL;
}

static int thread_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
}

START_TEST(shutdown_cancels_waiters)
{
    /* one runtime first, so sanitizer helper threads exist before counting */
    tern_runtime_free(rt_new(1));
    int fds = fd_count(), threads = thread_count();
    tern_runtime *rt = rt_new(3);
    ck_assert_int_eq(tern_block_on(rt, shutdown_setup, NULL, NULL), 0);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(tern_call_soon_threadsafe(tern_runtime_loop(rt, i % 3), bump,
                                                   &soon_ran, NULL),
                         0);
    /* Once a task has counted itself it can only be in (or on its way
     * into) its wait, and a cancel that comes first is sticky: either way
     * the wait returns -ECANCELED. */
    WAIT_UNTIL(atomic_load(&waiting) == 200, WAIT_MS);
    /* block_on's own task is freed just after it returned */
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 200, WAIT_MS);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(atomic_load(&saw_cancel), 200);
    ck_assert_int_eq(atomic_load(&soon_ran), 50);
    ck_assert_int_eq(atomic_load(&later_ran), 0);
    ck_assert_int_eq(fd_count(), fds);
    ck_assert_int_eq(thread_count(), threads);
}
END_TEST

static void *inside_checks(void *arg)
{
    tern_runtime *rt = tern_runtime_current();
    ck_assert_int_eq(tern_runtime_free(rt), -EDEADLK);
    ck_assert_int_eq(tern_block_on(rt, ret_arg, NULL, NULL), -EDEADLK);
    ck_assert_int_eq(tern_join(tern_task_current(), NULL), -EINVAL);
    return NULL;
}

static _Atomic int release_slow;

static void *slow(void *arg)
{
    while (!atomic_load(&release_slow))
        tern_sleep(1000000);
    return NULL;
}

static void *second_joiner(void *arg)
{
    return (void *)(intptr_t)tern_join(arg, NULL);
}

START_TEST(bad_arguments)
{
    tern_runtime *rt;
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = 5000;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    tern_config_init(&cfg);
    cfg.stack_size = 1000;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    tern_config_init(&cfg);
    cfg.backend = (tern_backend)99;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    tern_config_init(&cfg);
    cfg.budget = 65536; /* the documented bound is 65535 */
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    cfg.budget = 65535;
    cfg.workers = 1;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(tern_runtime_new(NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_runtime_free(NULL), -EINVAL);
    ck_assert_int_eq(tern_run(NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_block_on(NULL, ret_arg, NULL, NULL), -EINVAL);

    ck_assert_int_eq(tern_spawn(ret_arg, NULL, NULL), -EPERM);
    ck_assert_int_eq(tern_yield(), -EPERM);
    ck_assert_int_eq(tern_sleep(1), -EPERM);
    ck_assert_int_eq(tern_sleep_until(1), -EPERM);
    ck_assert_int_eq(tern_park(0), -EPERM);
    ck_assert_int_eq(tern_join(NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_task_cancel(NULL), -EINVAL);
    ck_assert_int_eq(tern_task_done(NULL), -EINVAL);
    ck_assert_uint_eq(tern_task_id(NULL), 0);
    tern_unpark(NULL);
    tern_task_release(NULL);
    ck_assert_ptr_null(tern_task_ref(NULL));
    ck_assert_uint_eq(tern_runtime_workers(NULL), 0);
    ck_assert_ptr_null(tern_runtime_loop(NULL, 0));
    ck_assert_ptr_nonnull(tern_strerror(-ECANCELED));
    ck_assert_ptr_nonnull(tern_strerror(-ESHUTDOWN));

    rt = rt_new(2);
    ck_assert_uint_eq(tern_runtime_workers(rt), 2);
    ck_assert_ptr_null(tern_runtime_loop(rt, 2));
    ck_assert_int_eq(tern_runtime_spawn(rt, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_runtime_spawn(NULL, ret_arg, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_block_on(rt, inside_checks, NULL, NULL), 0);
    /* a second joiner gets -EBUSY while the first waits */
    tern_task *t, *j;
    ck_assert_int_eq(tern_runtime_spawn(rt, slow, NULL, &t), 0);
    tern_task_ref(t); /* the second joiner consumes one reference */
    ck_assert_int_eq(tern_runtime_spawn(rt, second_joiner, t, &j), 0);
    /* the slot itself, not a flag set before the join: a join of ours that
     * won the slot would wait for ever, as slow ends only after it */
    WAIT_UNTIL(tern__task_has_joiner(t), WAIT_MS);
    ck_assert_int_eq(tern_join(t, NULL), -EBUSY);
    atomic_store(&release_slow, 1);
    void *r;
    ck_assert_int_eq(tern_join(j, &r), 0);
    ck_assert_int_eq((intptr_t)r, 0);
    tern_task_release(t);
    tern_runtime_free(rt);
}
END_TEST

static _Atomic int late_spawn = 1;

static void *spawn_when_cancelled(void *arg)
{
    while (tern_park(0) == 0)
        ;
    /* the runtime is closing: new tasks are refused, not lost */
    atomic_store(&late_spawn, tern_spawn(ret_arg, NULL, NULL));
    return NULL;
}

START_TEST(spawn_after_shutdown_refused)
{
    tern_runtime *rt = rt_new(2);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, spawn_when_cancelled, NULL, &t), 0);
    WAIT_PARKED(t, TERN__W_PARK); /* cancelled before it ran, it could not spawn */
    tern_task_release(t);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(atomic_load(&late_spawn), -ESHUTDOWN);
}
END_TEST

/* Every code tern gives its own meaning is worded for it, the sign does not
 * matter, and other codes fall back to the C library's static text. */
START_TEST(strerror_words)
{
    static const struct {
        int err;
        const char *word;
    } own[] = {
        {0, "success"},          {ECANCELED, "cancelled"}, {ETIMEDOUT, "deadline"},
        {ESHUTDOWN, "shutting"}, {EINVAL, "invalid"},      {ENOMEM, "memory"},
        {EAGAIN, "try again"},   {EPERM, "not permitted"}, {EALREADY, "already"},
        {EBUSY, "busy"},         {EDEADLK, "itself"},      {ENOSYS, "kernel"},
        {EPIPE, "closed"},       {ENXIO, "no such host"},  {ENODATA, "stream ended"},
        {EMSGSIZE, "too long"},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        const char *m = tern_strerror(-own[i].err);
        ck_assert_msg(strstr(m, own[i].word), "%d: '%s'", own[i].err, m);
        ck_assert_str_eq(tern_strerror(own[i].err), m);
    }
    ck_assert_str_eq(tern_strerror(-ECONNRESET), strerror(ECONNRESET));
    ck_assert_str_eq(tern_strerror(-99999), "unknown error");
    ck_assert_str_eq(tern_strerror(INT_MIN + 1), "unknown error");
    ck_assert_str_eq(tern_strerror(INT_MIN), "unknown error");
}
END_TEST

Suite *task_suite(void)
{
    Suite *s = suite_create("task");
    TCase *tc = tcase_create("task");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, spawn_join_result, 0, 2);
    tcase_add_test(tc, run_main_spawns_and_joins);
    tcase_add_test(tc, task_ids_unique);
    tcase_add_loop_test(tc, cancel_sleeping_task, 0, 3);
    tcase_add_test(tc, cancel_unstarted_never_runs);
    tcase_add_test(tc, spawn_owned_drops_unrun);
    tcase_add_test(tc, spawn_owned_shutdown_accounts);
#if !defined(TERN_ASAN) && !defined(TERN_TSAN) /* their shadow needs the address space   \
                                                */
    tcase_add_test(tc, address_limit_orphans_nothing);
#endif
    tcase_add_test(tc, cancel_is_sticky);
    tcase_add_test(tc, yield_interleaves);
    tcase_add_test(tc, yield_round_robin);
    tcase_add_test(tc, stalled_worker_rescued);
    tcase_add_test(tc, sleep_not_early);
    tcase_add_test(tc, park_unpark);
    tcase_add_test(tc, budget_prevents_starvation);
    tcase_add_test(tc, uncancel_finishes_normally);
    tcase_add_test(tc, cancel_scopes);
    tcase_add_test(tc, shield_hides_the_task_cancel);
    tcase_add_test(tc, scoped_io);
    tcase_add_test(tc, cancel_races_scopes);
    tcase_add_test(tc, spawning_spends_budget);
    tcase_add_loop_test(tc, stack_overflow_reported, 0, 3);
    tcase_add_test(tc, blocking_pool);
    tcase_add_test(tc, free_joins_pool_threads);
    tcase_add_test(tc, shutdown_cancels_waiters);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, stale_handle_refused);
    tcase_add_test(tc, strerror_words);
    tcase_add_test(tc, spawn_after_shutdown_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(task_suite());
}
