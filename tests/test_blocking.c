/* The blocking pool: growth, retirement, the bounded queue (-EAGAIN),
 * futures, and shutdown with a timeout (abandoned and cancelled jobs). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

/* tern's own jobs (rt/internal.h): never bounded by blocking_queue. */
int tern__blocking_must(tern_task_fn fn, void (*deliver)(void *), void *arg);

#define MS 1000000ull

static tern_runtime *rt_cfg(tern_config *cfg)
{
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(cfg, &rt);
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    return rt;
}

static tern_blocking_info info(tern_runtime *rt)
{
    tern_blocking_info i;
    ck_assert_int_eq(tern_runtime_blocking_info(rt, &i), 0);
    return i;
}

/* Threads of this process (/proc/self/status). */
static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static void *nothing(void *arg)
{
    return arg;
}

/* Threads of this process once a runtime has come and gone (sanitizers
 * start a helper thread of their own the first time a thread starts). */
static int baseline_threads(void)
{
    tern_runtime *rt = rt_new(1);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, nothing, NULL, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    /* a detached thread that has let go of the pool may take a moment to
     * be gone */
    int n = thread_count();
    for (int i = 0; i < 100; i++, usleep(1000))
        n = thread_count() < n ? thread_count() : n;
    return n;
}

/* Waits until cond holds; fails the test past the bound (helpers.h). */
#define WAIT_FOR(cond) WAIT_UNTIL(cond, WAIT_MS)

/* A gate jobs wait at; static so a job outliving its runtime still has it. */
static _Atomic int gate_open, gate_waiting;
static _Atomic int ran[16];

static void *gated(void *arg)
{
    atomic_fetch_add(&gate_waiting, 1);
    while (!atomic_load(&gate_open))
        usleep(1000);
    atomic_fetch_add(&ran[(uintptr_t)arg], 1);
    return arg;
}

static void gate_reset(void)
{
    atomic_store(&gate_open, 0);
    atomic_store(&gate_waiting, 0);
    for (int i = 0; i < 16; i++)
        atomic_store(&ran[i], 0);
}

START_TEST(grows_on_demand)
{
    tern_config cfg = {.workers = 2, .blocking_threads = 4};
    tern_runtime *rt = rt_cfg(&cfg);
    gate_reset();
    tern_task *t[6];
    ck_assert_int_eq(info(rt).threads, 0);
    for (uintptr_t i = 0; i < 3; i++)
        ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)i, &t[i]), 0);
    WAIT_FOR(atomic_load(&gate_waiting) == 3);
    tern_blocking_info in = info(rt);
    ck_assert_int_eq(in.threads, 3); /* one per concurrent job */
    ck_assert_int_eq(in.busy, 3);
    ck_assert_int_eq(in.queued, 0);
    ck_assert_int_eq(in.max_threads, 4);
    ck_assert_int_eq(in.max_queued, 1024);
    for (uintptr_t i = 3; i < 6; i++)
        ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)i, &t[i]), 0);
    WAIT_FOR(atomic_load(&gate_waiting) == 4);
    in = info(rt);
    ck_assert_int_eq(in.threads, 4); /* the maximum */
    ck_assert_int_eq(in.queued, 2);
    atomic_store(&gate_open, 1);
    for (uintptr_t i = 0; i < 6; i++) {
        void *v;
        ck_assert_int_eq(tern_join(t[i], &v), 0);
        ck_assert_ptr_eq(v, (void *)i);
        ck_assert_int_eq(atomic_load(&ran[i]), 1);
    }
    ck_assert_int_le(info(rt).threads, 4);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

START_TEST(idle_threads_retire)
{
    tern_config cfg = {.workers = 1, .blocking_threads = 8, .blocking_keepalive_ms = 50};
    tern_runtime *rt = rt_cfg(&cfg);
    gate_reset();
    tern_task *t[3];
    for (uintptr_t i = 0; i < 3; i++)
        ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)i, &t[i]), 0);
    WAIT_FOR(atomic_load(&gate_waiting) == 3);
    ck_assert_int_eq(info(rt).threads, 3);
    /* taken before any thread can go idle, so the bound below holds however
     * late this thread gets to run after the joins */
    uint64_t t0 = tern_now();
    atomic_store(&gate_open, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    WAIT_FOR(info(rt).threads == 0);
    ck_assert_uint_ge(tern_now() - t0, 20 * MS); /* not before the keep-alive */
    ck_assert_int_eq(info(rt).idle, 0);
    /* and the pool grows again */
    gate_reset();
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)0, &t[0]), 0);
    WAIT_FOR(atomic_load(&gate_waiting) == 1);
    ck_assert_int_eq(info(rt).threads, 1);
    atomic_store(&gate_open, 1);
    ck_assert_int_eq(tern_join(t[0], NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *must_job(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return NULL;
}

static _Atomic int must_ran;

static void *submit_must(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)tern__blocking_must(must_job, NULL, &must_ran);
}

START_TEST(full_queue_refuses)
{
    tern_config cfg = {.workers = 1, .blocking_threads = 1, .blocking_queue = 2};
    tern_runtime *rt = rt_cfg(&cfg);
    gate_reset();
    atomic_store(&must_ran, 0);
    tern_task *t[4];
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)0, &t[0]), 0);
    WAIT_FOR(atomic_load(&gate_waiting) == 1); /* the only thread is busy */
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)1, &t[1]), 0);
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)2, &t[2]), 0);
    tern_task *no = (tern_task *)1;
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)3, &no), -EAGAIN);
    ck_assert_ptr_eq(no, (tern_task *)1); /* untouched */
    tern_future *f = (tern_future *)1;
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, gated, (void *)3, &f),
                     -EAGAIN);
    ck_assert_ptr_null(f);
    tern_blocking_info in = info(rt);
    ck_assert_int_eq(in.threads, 1);
    ck_assert_int_eq(in.queued, 2);
    /* tern's own jobs are not bounded: they queue past the limit */
    void *v;
    ck_assert_int_eq(tern_block_on(rt, submit_must, NULL, &v), 0);
    ck_assert_ptr_eq(v, NULL);
    ck_assert_int_eq(info(rt).queued, 3);

    atomic_store(&gate_open, 1);
    for (uintptr_t i = 0; i < 3; i++) {
        ck_assert_int_eq(tern_join(t[i], &v), 0);
        ck_assert_ptr_eq(v, (void *)i);
    }
    WAIT_FOR(atomic_load(&must_ran) == 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(atomic_load(&ran[i]), 1); /* each exactly once */
    ck_assert_int_eq(atomic_load(&ran[3]), 0);     /* the refused one never */
    /* room again */
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, gated, (void *)3, &t[3]), 0);
    ck_assert_int_eq(tern_join(t[3], NULL), 0);
    ck_assert_int_eq(atomic_load(&ran[3]), 1);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *off_workers(void *arg)
{
    /* a blocking job runs on a pool thread, not on a worker */
    return tern_loop_current() ? NULL : arg;
}

static void *await_in_task(void *arg)
{
    tern_future *f;
    ck_assert_int_eq(tern_spawn_blocking_future(off_workers, arg, &f), 0);
    void *v = NULL;
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0); /* suspends the task */
    tern_future_release(f);
    return v;
}

START_TEST(future_result)
{
    tern_runtime *rt = rt_new(2);
    tern_future *f;
    void *v = NULL;
    /* from a thread: blocks */
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, off_workers, (void *)7, &f),
                     0);
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0);
    ck_assert_ptr_eq(v, (void *)7);
    tern_future_release(f);
    /* from a task: suspends */
    ck_assert_int_eq(tern_block_on(rt, await_in_task, (void *)8, &v), 0);
    ck_assert_ptr_eq(v, (void *)8);
    /* off a runtime, and bad arguments */
    ck_assert_int_eq(tern_spawn_blocking_future(off_workers, NULL, &f), -EPERM);
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(NULL, off_workers, NULL, &f),
                     -EINVAL);
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, NULL, NULL, &f), -EINVAL);
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, off_workers, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A job that outlives its runtime: waits until the test lets it go (after
 * the shutdown has given up on it), then reads a context variable (the
 * thread holds its own context reference) and signals. Held by a flag, not
 * a fixed sleep, so that it is still running when the timeout passes
 * however slow the machine. */
static _Atomic int slow_started, slow_release, slow_done;
static tern_ctxvar *slow_var;

static void *slow_job(void *arg)
{
    atomic_store(&slow_started, 1); /* the job is running: all the test needs */
    while (!atomic_load(&slow_release))
        usleep(1000);
    ck_assert_ptr_eq(tern_ctxvar_get(slow_var), (void *)42);
    atomic_store(&slow_done, 1);
    return arg;
}

static void *spawn_slow(void *arg)
{
    ck_assert_int_eq(tern_ctxvar_set(slow_var, (void *)42, NULL), 0);
    tern_future *f;
    ck_assert_int_eq(tern_spawn_blocking_future(slow_job, arg, &f), 0);
    return f;
}

START_TEST(shutdown_abandons_running_job)
{
    int threads0 = baseline_threads();
    atomic_store(&slow_done, 0);
    atomic_store(&slow_started, 0);
    atomic_store(&slow_release, 0);
    ck_assert_int_eq(tern_ctxvar_new("slow", NULL, NULL, &slow_var), 0);
    tern_runtime *rt = rt_new(2);
    void *v;
    ck_assert_int_eq(tern_block_on(rt, spawn_slow, NULL, &v), 0);
    tern_future *f = v;
    WAIT_FOR(atomic_load(&slow_started));
    ck_assert_int_eq(info(rt).busy, 1);
    /* The job cannot end before we let it, so the shutdown returning at all
     * shows it gave up at the timeout (an upper bound on its duration would
     * not hold on a loaded machine); that it waited that long, it must. */
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_runtime_shutdown_timeout(rt, 100 * MS), 1);
    uint64_t took = tern_now() - t0;
    ck_assert_msg(took >= 100 * MS, "shutdown took %llu ms",
                  (unsigned long long)(took / MS));
    ck_assert_int_eq(atomic_load(&slow_done), 0);
    /* its future gives up too, instead of waiting for ever */
    ck_assert_int_eq(tern_future_done(f), 1);
    ck_assert_int_eq(tern_future_result(f, NULL), -ECANCELED);
    tern_future_release(f);
    /* the job finishes later, touching nothing that was freed */
    atomic_store(&slow_release, 1);
    WAIT_FOR(atomic_load(&slow_done) == 1);
    WAIT_FOR(thread_count() <= threads0);
    tern_ctxvar_free(slow_var);
}
END_TEST

/* The config's timeout does the same for tern_runtime_free. */
START_TEST(free_honours_config_timeout)
{
    int threads0 = baseline_threads();
    atomic_store(&slow_done, 0);
    atomic_store(&slow_started, 0);
    atomic_store(&slow_release, 0);
    ck_assert_int_eq(tern_ctxvar_new("slow", NULL, NULL, &slow_var), 0);
    tern_config cfg = {.workers = 1, .shutdown_timeout_ms = 50};
    tern_runtime *rt = rt_cfg(&cfg);
    void *v;
    ck_assert_int_eq(tern_block_on(rt, spawn_slow, NULL, &v), 0);
    tern_future_release(v);
    WAIT_FOR(atomic_load(&slow_started));
    /* as above: free returning while the job is held is the proof */
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_uint_ge(tern_now() - t0, 50 * MS);
    ck_assert_int_eq(atomic_load(&slow_done), 0);
    atomic_store(&slow_release, 1);
    WAIT_FOR(atomic_load(&slow_done) == 1);
    WAIT_FOR(thread_count() <= threads0);
    tern_ctxvar_free(slow_var);
}
END_TEST

/* Without a timeout, running jobs are waited for; queued ones never run. */
static void *open_when_cancelled(void *arg)
{
    (void)arg;
    ck_assert_int_eq(tern_sleep(10000 * MS), -ECANCELED);
    atomic_store(&gate_open, 1);
    return NULL;
}

START_TEST(shutdown_cancels_queued)
{
    tern_config cfg = {.workers = 2, .blocking_threads = 1};
    tern_runtime *rt = rt_cfg(&cfg);
    gate_reset();
    tern_future *blocker, *f[3];
    ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, gated, (void *)0, &blocker),
                     0);
    WAIT_FOR(atomic_load(&gate_waiting) == 1);
    for (uintptr_t i = 0; i < 3; i++)
        ck_assert_int_eq(
            tern_runtime_spawn_blocking_future(rt, gated, (void *)(i + 1), &f[i]), 0);
    ck_assert_int_eq(info(rt).queued, 3);
    /* open the gate only once shutdown has begun; it must be in its sleep
     * by then: cancelled before it starts, it would never open the gate and
     * the free would wait for the blocker for ever */
    tern_task *opener;
    ck_assert_int_eq(tern_runtime_spawn(rt, open_when_cancelled, NULL, &opener), 0);
    WAIT_PARKED(opener, TERN__W_SLEEP);
    tern_task_release(opener);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    void *v;
    ck_assert_int_eq(tern_future_result(blocker, &v), 0);
    ck_assert_ptr_eq(v, (void *)0);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tern_future_result(f[i], NULL), -ECANCELED);
        ck_assert_int_eq(atomic_load(&ran[i + 1]), 0);
        tern_future_release(f[i]);
    }
    tern_future_release(blocker);
}
END_TEST

/* A job finishing just as the timeout fires is finished or abandoned,
 * never both. */
static _Atomic int racer_started, racer_done;

static void *racer(void *arg)
{
    atomic_fetch_add(&racer_started, 1);
    usleep(20000); /* the job's work: it ends around when the timeout fires */
    atomic_fetch_add(&racer_done, 1);
    return arg;
}

START_TEST(timeout_races_finish)
{
    int threads0 = baseline_threads();
    atomic_store(&racer_done, 0);
    atomic_store(&racer_started, 0);
    int rounds = SCALED(30) < 8 ? 8 : SCALED(30), abandoned = 0;
    for (int i = 0; i < rounds; i++) {
        tern_runtime *rt = rt_new(1);
        tern_future *f;
        ck_assert_int_eq(tern_runtime_spawn_blocking_future(rt, racer, (void *)5, &f), 0);
        WAIT_FOR(atomic_load(&racer_started) == i + 1); /* running, not queued */
        int r = tern_runtime_shutdown_timeout(rt, (uint64_t)(15 + i % 10) * MS);
        ck_assert_msg(r == 0 || r == 1, "r %d", r);
        void *v = NULL;
        int fr = tern_future_result(f, &v);
        if (r == 1) {
            ck_assert_int_eq(fr, -ECANCELED);
            abandoned++;
        } else {
            ck_assert_int_eq(fr, 0);
            ck_assert_ptr_eq(v, (void *)5);
        }
        tern_future_release(f);
    }
    WAIT_FOR(atomic_load(&racer_done) == rounds);
    WAIT_FOR(thread_count() <= threads0);
    (void)abandoned;
}
END_TEST

/* tern's own job (an open on the epoll backend) that never returns while
 * the runtime lives: the task waiting for it, deaf to cancellation, is
 * frozen, and the late completion writes into its (kept) stack. */
static char fifo_path[64];
static _Atomic int open_returned = 0;

static void *open_fifo(void *arg)
{
    (void)arg;
    int fd = tern_open(fifo_path, O_RDONLY, 0, 0);
    atomic_store(&open_returned, 1); /* never: the task is frozen */
    return (void *)(intptr_t)fd;
}

/* One thread busy and nothing queued: the job was taken, not just a
 * thread started for it. */
static int taken(tern_runtime *rt)
{
    tern_blocking_info i = info(rt);
    return i.busy == 1 && i.queued == 0;
}

START_TEST(shutdown_abandons_own_job)
{
    int threads0 = baseline_threads();
    snprintf(fifo_path, sizeof fifo_path, "/tmp/tern-blocking-%d", (int)getpid());
    unlink(fifo_path);
    ck_assert_int_eq(mkfifo(fifo_path, 0600), 0);
    tern_config cfg = {.workers = 1, .backend = TERN_BACKEND_EPOLL};
    tern_runtime *rt = rt_cfg(&cfg);
    ck_assert_int_eq(tern_runtime_spawn(rt, open_fifo, NULL, NULL), 0);
    /* taken by a thread (a busy thread alone may not have taken it yet, and
     * shutdown would drop it unstarted): open blocks until a writer comes */
    WAIT_FOR(taken(rt));
    /* no writer comes until it has returned: returning is giving up */
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_runtime_shutdown_timeout(rt, 50 * MS), 1);
    ck_assert_uint_ge(tern_now() - t0, 50 * MS);
    /* now let the open return, into a runtime that is gone: a writer's
     * non-blocking open succeeds once the job's reader is in open(2) */
    int w;
    WAIT_FOR((w = open(fifo_path, O_WRONLY | O_NONBLOCK)) >= 0);
    close(w);
    WAIT_FOR(thread_count() <= threads0);
    ck_assert_int_eq(atomic_load(&open_returned), 0);
    unlink(fifo_path);
}
END_TEST

static void *shut_self(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)tern_runtime_shutdown_timeout(tern_runtime_current(), 0);
}

/* From one of its blocking threads: it would wait for itself for ever. */
static void *free_from_job(void *rt)
{
    return (void *)(intptr_t)tern_runtime_free(rt);
}

/* The info structs' reserved words come back zero, whatever was there. */
#define RESERVED_ZERO(x)                                                                 \
    for (size_t i_ = 0; i_ < sizeof(x).reserved / sizeof(x).reserved[0]; i_++)           \
    ck_assert_uint_eq((x).reserved[i_], 0)

START_TEST(info_reserved_zeroed)
{
    tern_runtime *rt = rt_new(1);
    tern_blocking_info bi;
    tern_loop_info li;
    tern_worker_stats ws;
    tern_metrics m;
    memset(&bi, 0xff, sizeof bi);
    memset(&li, 0xff, sizeof li);
    memset(&ws, 0xff, sizeof ws);
    memset(&m, 0xff, sizeof m);
    ck_assert_int_eq(tern_runtime_blocking_info(rt, &bi), 0);
    ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, 0), &li), 0);
    ck_assert_int_eq(tern_worker_metrics(rt, 0, &ws), 0);
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    RESERVED_ZERO(bi);
    RESERVED_ZERO(li);
    RESERVED_ZERO(li.stats);
    RESERVED_ZERO(ws);
    RESERVED_ZERO(m);
    RESERVED_ZERO(m.total);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

START_TEST(bad_arguments)
{
    tern_runtime *rt = NULL;
    tern_config cfg = {.blocking_queue = (1u << 20) + 1};
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    cfg = (tern_config){.blocking_keepalive_ms = 86400001};
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    cfg = (tern_config){.shutdown_timeout_ms = 86400001};
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    cfg = (tern_config){.blocking_threads = 4097};
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    cfg = (tern_config){.reserved = {[7] = 1}}; /* a field of a later tern */
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    ck_assert_ptr_null(rt);
    tern_config_init(&cfg);
    ck_assert_int_eq(cfg.blocking_queue, 1024);
    ck_assert_int_eq(cfg.blocking_keepalive_ms, 10000);
    ck_assert_int_eq(cfg.shutdown_timeout_ms, 0);
    ck_assert_int_eq(tern_runtime_shutdown_timeout(NULL, 0), -EINVAL);
    tern_blocking_info in;
    ck_assert_int_eq(tern_runtime_blocking_info(NULL, &in), -EINVAL);
    rt = rt_new(1);
    ck_assert_int_eq(tern_runtime_blocking_info(rt, NULL), -EINVAL);
    void *v;
    ck_assert_int_eq(tern_block_on(rt, shut_self, NULL, &v), 0);
    ck_assert_int_eq((int)(intptr_t)v, -EDEADLK);
    tern_task *job;
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, free_from_job, rt, &job), 0);
    ck_assert_int_eq(tern_join(job, &v), 0);
    ck_assert_int_eq((int)(intptr_t)v, -EDEADLK);
    /* nothing running: nothing abandoned, even with no wait at all */
    ck_assert_int_eq(tern_runtime_shutdown_timeout(rt, 0), 0);
}
END_TEST

Suite *blocking_suite(void)
{
    Suite *s = suite_create("blocking");
    TCase *tc = tcase_create("blocking");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, grows_on_demand);
    tcase_add_test(tc, idle_threads_retire);
    tcase_add_test(tc, full_queue_refuses);
    tcase_add_test(tc, future_result);
    tcase_add_test(tc, shutdown_abandons_running_job);
    tcase_add_test(tc, free_honours_config_timeout);
    tcase_add_test(tc, shutdown_cancels_queued);
    tcase_add_test(tc, timeout_races_finish);
    tcase_add_test(tc, shutdown_abandons_own_job);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, info_reserved_zeroed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(blocking_suite());
}
