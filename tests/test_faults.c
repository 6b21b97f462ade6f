/*
 * The runtime under injected faults (built only with -DTERN_FAULTS=ON; see
 * rt/fault.h). Registered once per backend (TERN_BACKEND=io_uring|epoll).
 *
 * Every scenario proves the same four things: nothing crashes or hangs
 * (every wait has a deadline), no task is lost or run twice (counted),
 * every failure reaches the caller as a negative errno (asserted at each
 * call), and nothing leaks (descriptor counts here, memory by ASan in the
 * address build). Each also asserts that its faults really fired: a fault
 * test in which nothing failed proves nothing.
 *
 * The spec is set inside the main task, so creating the runtime and
 * spawning the main task see no faults; runtime creation under faults has
 * its own test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "helpers.h"
#include "rt/fault.h"

#define MS 1000000ull
#define SEC 1000000000ull

static int backend_is(const char *name)
{
    const char *s = getenv("TERN_BACKEND");
    return s && strcmp(s, name) == 0;
}

static int io_uring_refused(int r)
{
    return r == -ENOSYS || r == -EPERM || r == -ENOMEM;
}

/* A runtime without faults; NULL (a skip) when the kernel refuses the
 * io_uring backend that TERN_BACKEND forces. */
static tern_runtime *rt_make(unsigned workers)
{
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    if (r != 0 && backend_is("io_uring") && io_uring_refused(r)) {
        test_skip("io_uring unavailable here (%s)", tern_strerror(r));
        return NULL;
    }
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    return rt;
}

struct faulty {
    const char *spec;
    tern_task_fn fn;
    void *arg;
};

static void *faulty_main(void *arg)
{
    struct faulty *f = arg;
    ck_assert_int_eq(tern__fault_set(f->spec), 0);
    return f->fn(f->arg);
}

/* Runs fn(arg) as the main task of a fresh runtime with spec in force from
 * the main task's start through shutdown. 0 when it ran, -1 for a skip.
 * The counters stay for the caller to check. */
static int run_faulty(unsigned workers, const char *spec, tern_task_fn fn, void *arg)
{
    int fds = fd_count();
    tern_runtime *rt = rt_make(workers);
    if (!rt)
        return -1;
    struct faulty f = {spec, fn, arg};
    int r = tern_block_on(rt, faulty_main, &f, NULL);
    ck_assert_msg(r == 0, "main task: %s", tern_strerror(r));
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
    return 0;
}

/* tern_spawn, retried while it fails for memory (which it may only do). */
static tern_task *spawn_retry(tern_task_fn fn, void *arg)
{
    tern_task *t = NULL;
    for (int i = 0; i < 10000; i++) {
        int r = tern_spawn(fn, arg, &t);
        if (r == 0)
            return t;
        ck_assert_msg(r == -ENOMEM, "spawn: %s", tern_strerror(r));
    }
    ck_abort_msg("spawn failed 10000 times");
    return NULL;
}

/* ======================================================================= */
/* 1. Spawn stress: task headers and stacks that cannot be had. */

#define SPAWN_N 1000
static _Atomic uint8_t spawn_ran[SPAWN_N];
static int spawn_fail, spawn_nostack, spawn_ok;
static _Atomic int spawn_done;

static void *counted(void *arg)
{
    long i = (long)arg;
    atomic_fetch_add(&spawn_ran[i], 1);
    /* hold the stack until every spawn was made, so that more stacks are
     * wanted at once than the pool can have (a sleep without memory for
     * its timer entry yields instead) */
    for (uint64_t until = tern_now() + 10 * SEC;
         !atomic_load(&spawn_done) && tern_now() < until;) {
        int r = tern_sleep(MS);
        ck_assert_msg(r == 0 || r == -ENOMEM, "sleep: %s", tern_strerror(r));
        if (r < 0)
            tern_yield();
    }
    return (void *)(i + 1);
}

static void *spawn_main(void *arg)
{
    tern_task **h = calloc(SPAWN_N, sizeof *h);
    for (long i = 0; i < SPAWN_N; i++) {
        int r = tern_spawn(counted, (void *)i, &h[i]);
        if (r < 0) {
            ck_assert_msg(r == -ENOMEM, "spawn: %s", tern_strerror(r));
            h[i] = NULL;
            spawn_fail++;
        }
    }
    atomic_store(&spawn_done, 1);
    for (long i = 0; i < SPAWN_N; i++) {
        if (!h[i]) {
            ck_assert_int_eq(atomic_load(&spawn_ran[i]), 0);
            continue;
        }
        void *res = NULL;
        int r = tern_join(h[i], &res);
        if (r == 0) {
            ck_assert_ptr_eq(res, (void *)(i + 1));
            ck_assert_int_eq(atomic_load(&spawn_ran[i]), 1);
            spawn_ok++;
        } else {
            /* no stack: the body never ran */
            ck_assert_msg(r == -ENOMEM, "join %ld: %s", i, tern_strerror(r));
            ck_assert_int_eq(atomic_load(&spawn_ran[i]), 0);
            spawn_nostack++;
        }
    }
    free(h);
    return NULL;
}

START_TEST(spawn_stress)
{
    /* mmap:after=1: one more stack region, then none; guards fail half the
     * time (the stack then gets a canary); every 11th runtime allocation
     * fails, task headers and sleep entries included. */
    const char *spec = "malloc:every=11,mmap:ENOMEM:after=1,madvise:p=0.5,mprotect:p=0.5";
    memset(spawn_ran, 0, sizeof spawn_ran);
    spawn_fail = spawn_nostack = spawn_ok = 0;
    atomic_store(&spawn_done, 0);
    if (run_faulty(_i ? 4 : 1, spec, spawn_main, NULL) < 0)
        return;
    ck_assert_int_eq(spawn_ok + spawn_nostack + spawn_fail, SPAWN_N);
    ck_assert_int_gt(spawn_ok, 0);
    ck_assert_int_gt(spawn_fail, 0);
    ck_assert_int_gt(spawn_nostack, 0);
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MALLOC), 0);
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MMAP), 0);
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MADVISE) +
                          tern__fault_count(TERN__FAULT_MPROTECT),
                      0);
    tern__fault_set(NULL);
}
END_TEST

/* ======================================================================= */
/* 2. Timers: sleeps, parks and call_later without memory for their entry. */

#define SLEEPERS 100
#define ROUNDS 10
static _Atomic long sleep_ok, sleep_enomem, timers_fired;
static long timers_armed;

static void *sleeper(void *arg)
{
    long id = (long)arg;
    for (int k = 0; k < ROUNDS; k++) {
        uint64_t ns = (uint64_t)(1 + (id + k) % 3) * MS;
        uint64_t t0 = tern_now();
        int r = tern_sleep(ns);
        if (r == 0) {
            ck_assert_msg(tern_now() - t0 >= ns, "woke early");
            atomic_fetch_add(&sleep_ok, 1);
        } else {
            ck_assert_msg(r == -ENOMEM, "sleep: %s", tern_strerror(r));
            atomic_fetch_add(&sleep_enomem, 1);
        }
    }
    int r = tern_park(tern_now() + MS);
    ck_assert_msg(r == 0 || r == -ETIMEDOUT || r == -ENOMEM, "park: %s",
                  tern_strerror(r));
    return (void *)1;
}

static void on_timer(void *arg)
{
    atomic_fetch_add(&timers_fired, 1);
}

static void *timers_main(void *arg)
{
    tern_task *h[SLEEPERS];
    for (long i = 0; i < SLEEPERS; i++)
        h[i] = spawn_retry(sleeper, (void *)i);
    /* Timed handles on this loop: each is armed or refused, never lost. */
    tern_loop *loop = tern_loop_current();
    for (int i = 0; i < 50; i++) {
        int r = tern_call_later(loop, MS, on_timer, NULL, NULL);
        ck_assert_msg(r == 0 || r == -ENOMEM, "call_later: %s", tern_strerror(r));
        timers_armed += r == 0;
    }
    for (long i = 0; i < SLEEPERS; i++) {
        void *res;
        int r = tern_join(h[i], &res);
        ck_assert_msg(r == 0 || r == -ENOMEM, "join: %s", tern_strerror(r));
    }
    uint64_t until = tern_now() + 10 * SEC;
    while (atomic_load(&timers_fired) < timers_armed && tern_now() < until)
        if (tern_sleep(MS) < 0) /* no memory for the sleep: spin instead */
            tern_yield();
    ck_assert_int_eq(atomic_load(&timers_fired), timers_armed);
    return NULL;
}

START_TEST(timers)
{
    atomic_store(&sleep_ok, 0);
    atomic_store(&sleep_enomem, 0);
    atomic_store(&timers_fired, 0);
    timers_armed = 0;
    if (run_faulty(_i ? 4 : 1, "malloc:p=0.3,seed=5", timers_main, NULL) < 0)
        return;
    ck_assert_int_gt(atomic_load(&sleep_ok), 0);
    ck_assert_int_gt(atomic_load(&sleep_enomem), 0);
    ck_assert_int_gt(timers_armed, 0);
    ck_assert_int_lt(timers_armed, 50);
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MALLOC), 0);
    tern__fault_set(NULL);
}
END_TEST

/* ======================================================================= */
/* 3. Channels: every message a send accepted is received exactly once. */

#define PRODUCERS 4
#define CONSUMERS 3
#define PER 500
static _Atomic uint8_t msg_sent[PRODUCERS * PER], msg_recvd[PRODUCERS * PER];
static _Atomic long send_refused;
static tern_chan *chan;

static void *producer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int k = 0; k < PER; k++) {
        int m = id * PER + k;
        /* a deadline needs a sleep entry: it may fail for memory too */
        int r = k & 1 ? tern_chan_send(chan, &m)
                      : tern_chan_send_until(chan, &m, tern_now() + 5 * SEC);
        if (r == 0) {
            atomic_store(&msg_sent[m], 1);
        } else {
            ck_assert_msg(r == -ENOMEM, "send: %s", tern_strerror(r));
            atomic_fetch_add(&send_refused, 1);
        }
    }
    return NULL;
}

static void *consumer(void *arg)
{
    int m;
    /* start late: an unbounded channel grows meanwhile, senders to a
     * bounded one wait */
    int r = tern_sleep(5 * MS);
    ck_assert_msg(r == 0 || r == -ENOMEM, "sleep: %s", tern_strerror(r));
    for (int spins = 0; spins < 1000000; spins++) {
        int r = tern_chan_recv_until(chan, &m, tern_now() + 10 * SEC);
        if (r == 0)
            return NULL; /* closed and drained */
        if (r == 1) {
            ck_assert_msg(atomic_fetch_add(&msg_recvd[m], 1) == 0, "message %d twice", m);
            continue;
        }
        ck_assert_msg(r == -ENOMEM, "recv: %s", tern_strerror(r));
    }
    ck_abort_msg("consumer never saw the end of the stream");
    return NULL;
}

static const size_t chan_caps[] = {TERN_CHAN_UNBOUNDED, 16, 0};

static void *chan_main(void *arg)
{
    size_t cap = *(const size_t *)arg;
    int r;
    for (int i = 0; (r = tern_chan_new(sizeof(int), cap, &chan)) != 0; i++) {
        ck_assert_msg(r == -ENOMEM, "chan_new: %s", tern_strerror(r));
        ck_assert_int_lt(i, 10000);
    }
    tern_task *c[CONSUMERS], *p[PRODUCERS];
    for (long i = 0; i < CONSUMERS; i++)
        c[i] = spawn_retry(consumer, NULL);
    for (long i = 0; i < PRODUCERS; i++)
        p[i] = spawn_retry(producer, (void *)i);
    int consumers_ran = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        r = tern_join(p[i], NULL);
        ck_assert_msg(r == 0 || r == -ENOMEM, "join producer: %s", tern_strerror(r));
    }
    ck_assert_int_eq(tern_chan_close(chan), 0);
    for (int i = 0; i < CONSUMERS; i++) {
        r = tern_join(c[i], NULL);
        ck_assert_msg(r == 0 || r == -ENOMEM, "join consumer: %s", tern_strerror(r));
        consumers_ran += r == 0;
    }
    /* had no consumer a stack, what is buffered is still there */
    int m;
    while (tern_chan_try_recv(chan, &m) == 1)
        ck_assert_msg(atomic_fetch_add(&msg_recvd[m], 1) == 0, "message %d twice", m);
    ck_assert_int_gt(consumers_ran, 0);
    tern_chan_release(chan);
    if (cap == TERN_CHAN_UNBOUNDED) {
        /* Growth is an unbounded channel's only allocation, and the run
         * above may not have failed one: fill the first buffer, then fail
         * every allocation (through shutdown too). The refused message is
         * not in the channel. */
        tern_chan *u;
        for (int i = 0; (r = tern_chan_new(sizeof(int), cap, &u)) != 0; i++)
            ck_assert_int_lt(i, 10000);
        int n = 0;
        for (; n < 4096 && tern_chan_len(u) == (size_t)n; n++) {
            ck_assert_int_eq(tern__fault_set("malloc"), 0);
            r = tern_chan_try_send(u, &n);
            if (r == -ENOMEM)
                break;
            ck_assert_msg(r == 0, "try_send: %s", tern_strerror(r));
            ck_assert_int_eq(tern__fault_set(NULL), 0);
        }
        ck_assert_int_eq(r, -ENOMEM);
        ck_assert_uint_eq(tern_chan_len(u), (size_t)n);
        for (int i = 0; i < n; i++)
            ck_assert_int_eq(tern_chan_try_recv(u, &m) == 1 && m == i, 1);
        ck_assert_int_eq(tern_chan_try_recv(u, &m), -EAGAIN);
        tern_chan_release(u);
    }
    return NULL;
}

START_TEST(channels)
{
    memset(msg_sent, 0, sizeof msg_sent);
    memset(msg_recvd, 0, sizeof msg_recvd);
    atomic_store(&send_refused, 0);
    if (run_faulty(2, "malloc:p=0.3,seed=9", chan_main, (void *)&chan_caps[_i]) < 0)
        return;
    long sent = 0;
    for (int m = 0; m < PRODUCERS * PER; m++) {
        ck_assert_msg(atomic_load(&msg_recvd[m]) == atomic_load(&msg_sent[m]),
                      "message %d: sent %d, received %d", m, atomic_load(&msg_sent[m]),
                      atomic_load(&msg_recvd[m]));
        sent += atomic_load(&msg_sent[m]);
    }
    ck_assert_int_gt(sent, PRODUCERS * PER / 2);
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MALLOC), 0);
    tern__fault_set(NULL);
}
END_TEST

/* ======================================================================= */
/* 3b. A generator pumped into a channel by a task that gets no stack: its
 * body never runs, and still the channel is closed and g freed. */

#define HOLD 100
static _Atomic int hold_go, holding;

static void *holder(void *arg)
{
    (void)arg;
    atomic_fetch_add(&holding, 1);
    for (uint64_t until = tern_now() + 10 * SEC;
         !atomic_load(&hold_go) && tern_now() < until;)
        ck_assert_int_eq(tern_sleep(MS), 0);
    return NULL;
}

static int never(tern_gen *g, void *arg)
{
    (void)g;
    atomic_store((_Atomic int *)arg, 1);
    return 0;
}

static void *pump_main(void *arg)
{
    (void)arg;
    tern_task *h[HOLD];
    atomic_store(&hold_go, 0);
    atomic_store(&holding, 0);
    for (int i = 0; i < HOLD; i++)
        h[i] = spawn_retry(holder, NULL);
    /* until each holder holds a stack or has finished without one: then
     * the pool is dry (more holders than its first region has stacks, and
     * no stack can be mapped) */
    for (int i = 0;; i++) {
        int n = atomic_load(&holding);
        for (int k = 0; k < HOLD; k++)
            n += tern_task_done(h[k]);
        if (n == HOLD)
            break;
        ck_assert_int_lt(i, 10000);
        ck_assert_int_eq(tern_sleep(MS), 0);
    }
    _Atomic int ran = 0;
    tern_gen *g;
    tern_chan *out;
    tern_task *pump;
    ck_assert_int_eq(tern_gen_new(never, &ran, &g), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 1, &out), 0);
    ck_assert_int_eq(tern_gen_to_chan(g, out, &pump), 0);
    void *v;
    ck_assert_int_eq(tern_chan_recv_until(out, &v, tern_now() + 5 * SEC), 0);
    ck_assert_int_eq(tern_join(pump, NULL), -ENOMEM);
    ck_assert_int_eq(atomic_load(&ran), 0);
    tern_chan_release(out);
    atomic_store(&hold_go, 1);
    int nostack = 0;
    for (int i = 0; i < HOLD; i++) {
        int r = tern_join(h[i], NULL);
        ck_assert_msg(r == 0 || r == -ENOMEM, "join holder: %s", tern_strerror(r));
        nostack += r == -ENOMEM;
    }
    ck_assert_int_eq(nostack, HOLD - atomic_load(&holding));
    ck_assert_int_gt(nostack, 0);
    return NULL;
}

START_TEST(pump_without_stack)
{
    /* one worker: with more, another worker's stack cache may still hold
     * a stack when the pump runs there */
    if (run_faulty(1, "mmap:ENOMEM", pump_main, NULL) < 0)
        return;
    ck_assert_uint_gt(tern__fault_count(TERN__FAULT_MMAP), 0);
    tern__fault_set(NULL);
}
END_TEST

/* ======================================================================= */
/* 4. Runtime creation: each failing seam gives its errno and leaks nothing. */

static _Atomic unsigned posted_ran;

static void posted(void *arg)
{
    (void)arg;
    atomic_fetch_add(&posted_ran, 1);
}

/* tern_runtime_new with spec in force; frees a runtime that was made.
 * Returns its result; *fired, when not NULL, gets the faults injected. */
static int try_new(tern_backend be, unsigned workers, const char *spec,
                   unsigned long *fired, const char **note)
{
    int fds = fd_count();
    ck_assert_int_eq(tern__fault_set(spec), 0);
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    cfg.backend = be;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    unsigned long n = 0;
    for (int s = 0; s < TERN__FAULT_NSEAMS; s++)
        n += tern__fault_count(s);
    if (fired)
        *fired = n;
    tern__fault_set(NULL); /* creation is what is under test */
    if (r == 0) {
        /* every loop takes work from other threads (a fallback restarts
         * the workers: their inboxes must be open again) */
        atomic_store(&posted_ran, 0);
        for (unsigned i = 0; i < workers; i++)
            ck_assert_int_eq(
                tern_call_soon_threadsafe(tern_runtime_loop(rt, i), posted, NULL, NULL),
                0);
        WAIT_UNTIL(atomic_load(&posted_ran) >= workers, WAIT_MS);
        ck_assert_uint_eq(atomic_load(&posted_ran), workers);
        tern_loop_info info;
        /* every worker on one backend, the one the note names first */
        for (unsigned i = workers; i-- > 0;) {
            ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, i), &info), 0);
            ck_assert_msg(!strncmp(info.backend_note, info.backend, strlen(info.backend)),
                          "worker %u runs %s, note \"%s\"", i, info.backend,
                          info.backend_note);
        }
        if (note)
            *note = info.backend_note; /* static strings */
        ck_assert_int_eq(tern_runtime_free(rt), 0);
    } else {
        ck_assert_ptr_null(rt);
    }
    tern__fault_set(NULL);
    ck_assert_msg(fd_count() == fds, "%s: descriptors leaked", spec);
    return r;
}

/* Fails each seam at its K-th call for K = 0, 1, ... until creation
 * succeeds: every error exit of tern_runtime_new is taken once. */
static void sweep(tern_backend be, unsigned workers, const char *seam, int err)
{
    char spec[96];
    for (int k = 0;; k++) {
        ck_assert_msg(k < 200, "%s: still failing after 200 calls", seam);
        snprintf(spec, sizeof spec, "%s:after=%d", seam, k);
        unsigned long fired;
        int r = try_new(be, workers, spec, &fired, NULL);
        if (r == 0)
            return;
        ck_assert_msg(r == -err, "%s: %s", spec, tern_strerror(r));
        ck_assert_msg(fired > 0, "%s failed with no fault", spec);
    }
}

static int uring_available(void)
{
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    return try_new(TERN_BACKEND_IO_URING, 1, NULL, NULL, NULL) == 0;
}

static void *nop(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return NULL;
}

START_TEST(runtime_creation)
{
    tern_backend env =
        backend_is("io_uring") ? TERN_BACKEND_IO_URING : TERN_BACKEND_EPOLL;
    if (env == TERN_BACKEND_IO_URING && !uring_available()) {
        test_skip("io_uring unavailable here");
        return;
    }
    sweep(env, 3, "malloc", ENOMEM);
    sweep(env, 3, "pthread_create", EAGAIN);
    sweep(env, 3, "eventfd", EMFILE);
    if (env == TERN_BACKEND_IO_URING) {
        /* the probe's ring, then each worker's */
        sweep(env, 3, "io_uring_queue_init", ENOMEM);
        /* AUTO falls back to epoll when the probe's ring is refused for
         * a reason that says "no io_uring here"; not for others. */
        char *saved = strdup(getenv("TERN_BACKEND"));
        unsetenv("TERN_BACKEND");
        const char *note = NULL;
        ck_assert_int_eq(
            try_new(TERN_BACKEND_AUTO, 2, "io_uring_queue_init:EPERM", NULL, &note), 0);
        ck_assert_str_eq(note, "epoll: io_uring unavailable (-EPERM)");
        ck_assert_int_eq(
            try_new(TERN_BACKEND_AUTO, 2, "io_uring_queue_init:ENOMEM", NULL, &note), 0);
        ck_assert_str_eq(note, "epoll: io_uring unavailable (-ENOMEM)");
        ck_assert_int_eq(
            try_new(TERN_BACKEND_AUTO, 2, "io_uring_queue_init:EMFILE", NULL, NULL),
            -EMFILE);
        /* A ring refused to a worker after the probe got one (an older
         * kernel's locked-memory limit): every worker starts over on epoll,
         * and the note says why. after=2: one worker had opened a ring. */
        ck_assert_int_eq(try_new(TERN_BACKEND_AUTO, 2,
                                 "io_uring_queue_init:ENOMEM:after=1", NULL, &note),
                         0);
        ck_assert_str_eq(note, "epoll: io_uring worker ring refused (-ENOMEM)");
        ck_assert_int_eq(try_new(TERN_BACKEND_AUTO, 3,
                                 "io_uring_queue_init:EPERM:after=2", NULL, &note),
                         0);
        ck_assert_str_eq(note, "epoll: io_uring worker ring refused (-EPERM)");
        ck_assert_int_eq(try_new(TERN_BACKEND_AUTO, 2,
                                 "io_uring_queue_init:ENOSYS:after=1", NULL, &note),
                         0);
        ck_assert_str_eq(note, "epoll: io_uring worker ring refused (-ENOSYS)");
        /* not for other errors, nor for a forced backend */
        ck_assert_int_eq(try_new(TERN_BACKEND_AUTO, 2,
                                 "io_uring_queue_init:EMFILE:after=1", NULL, NULL),
                         -EMFILE);
        ck_assert_int_eq(try_new(TERN_BACKEND_IO_URING, 2,
                                 "io_uring_queue_init:ENOMEM:after=1", NULL, NULL),
                         -ENOMEM);
        setenv("TERN_BACKEND", saved, 1);
        free(saved);
        ck_assert_int_eq(try_new(TERN_BACKEND_AUTO, 2,
                                 "io_uring_queue_init:ENOMEM:after=1", NULL, NULL),
                         -ENOMEM);
    } else {
        sweep(env, 3, "epoll_create", EMFILE);
        sweep(env, 3, "epoll_ctl", ENOMEM);
    }

    /* The blocking pool: a job nobody can run is refused, not lost. */
    int fds = fd_count();
    tern_runtime *rt = rt_make(1);
    _Atomic int ran = 0;
    tern_task *t;
    ck_assert_int_eq(tern__fault_set("pthread_create"), 0);
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, nop, &ran, &t), -EAGAIN);
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, nop, &ran, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(atomic_load(&ran), 1);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}
END_TEST

/* ======================================================================= */
/* 5. A TCP echo service under accept/read/write/recv/send faults. */

#define CLIENTS 3
#define CONNS 40
#define MAXCONN (CLIENTS * CONNS + 16)
static _Atomic int srv_stop;
static _Atomic long srv_errors, srv_accept_errors, srv_spawn_fail, srv_handlers;
static uint16_t srv_port;

static void srv_error(long r)
{
    ck_assert_msg(r < 0 && r > -4096, "not a negative errno: %ld", r);
    atomic_fetch_add(&srv_errors, 1);
}

/* Echoes until EOF or the first error; half the connections use
 * read/write, half recv/send, so every seam is on the path. */
static void *echo_handler(void *arg)
{
    int fd = (int)(intptr_t)arg;
    int rw = atomic_fetch_add(&srv_handlers, 1) & 1;
    char buf[4096];
    for (;;) {
        uint64_t dl = tern_now() + 5 * SEC;
        ssize_t n = rw ? tern_read(fd, buf, sizeof buf, dl)
                       : tern_recv(fd, buf, sizeof buf, 0, dl);
        if (n <= 0) {
            if (n < 0)
                srv_error(n);
            break;
        }
        for (ssize_t off = 0, w; off < n; off += w) {
            w = rw ? tern_write(fd, buf + off, (size_t)(n - off), dl)
                   : tern_send(fd, buf + off, (size_t)(n - off), 0, dl);
            if (w < 0) {
                srv_error(w);
                goto out;
            }
        }
    }
out:
    ck_assert_int_eq(tern_close(fd), 0);
    return NULL;
}

static void *acceptor(void *arg)
{
    int l = (int)(intptr_t)arg;
    tern_task *h[MAXCONN];
    int fds[MAXCONN], n = 0;
    while (!atomic_load(&srv_stop)) {
        int s = tern_accept(l, NULL, NULL, tern_now() + 20 * MS);
        if (s == -ETIMEDOUT)
            continue;
        if (s < 0) {
            ck_assert_msg(s > -4096, "accept: %d", s);
            atomic_fetch_add(&srv_accept_errors, 1);
            continue;
        }
        ck_assert_int_lt(n, MAXCONN);
        int r = tern_spawn(echo_handler, (void *)(intptr_t)s, &h[n]);
        if (r < 0) {
            ck_assert_msg(r == -ENOMEM, "spawn: %s", tern_strerror(r));
            atomic_fetch_add(&srv_spawn_fail, 1);
            ck_assert_int_eq(tern_close(s), 0);
            continue;
        }
        fds[n++] = s;
    }
    for (int i = 0; i < n; i++) {
        int r = tern_join(h[i], NULL);
        if (r == -ENOMEM) /* no stack: its body never ran, the fd is ours */
            ck_assert_int_eq(tern_close(fds[i]), 0);
        else
            ck_assert_msg(r == 0, "join handler: %s", tern_strerror(r));
    }
    return NULL;
}

struct client {
    int id, ok, dropped;
};

static int send_all(int fd, const unsigned char *p, size_t len)
{
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, unsigned char *p, size_t len)
{
    while (len) {
        ssize_t r = recv(fd, p, len, 0);
        if (r <= 0)
            return -1; /* EOF, reset or the 5 s timeout: a dropped connection */
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* A plain thread with blocking sockets: the faults are the server's. */
static void *client_main(void *arg)
{
    struct client *c = arg;
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(c->id + 1);
    unsigned char out[4000], in[4000];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(srv_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int k = 0; k < CONNS; k++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        for (int round = 0; ok && round < 4; round++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t len = 1 + x % sizeof out;
            for (size_t i = 0; i < len; i++)
                out[i] = (unsigned char)(x >> (i % 56));
            ok = send_all(fd, out, len) == 0 && recv_all(fd, in, len) == 0;
            /* a connection may drop; it may never echo wrong bytes */
            ck_assert_msg(!ok || memcmp(in, out, len) == 0, "client %d: wrong echo",
                          c->id);
        }
        close(fd);
        if (ok)
            c->ok++;
        else
            c->dropped++;
    }
    return NULL;
}

/* 0: the operations fail; 1: the driver under them (submits and waits that
 * fail, registrations refused) and memory for deadlines and tasks. */
static const char *const echo_specs[] = {
    "accept:EMFILE:p=0.2,read:p=0.01,recv:p=0.01,write:p=0.01,send:p=0.01,"
    "malloc:p=0.005,seed=11",
    "io_uring_submit:p=0.3,epoll_wait:p=0.3,epoll_ctl:p=0.02,malloc:p=0.02,seed=13",
};

START_TEST(echo_service)
{
    atomic_store(&srv_stop, 0);
    atomic_store(&srv_errors, 0);
    atomic_store(&srv_accept_errors, 0);
    atomic_store(&srv_spawn_fail, 0);
    int fds = fd_count();
    tern_runtime *rt = rt_make(2);
    if (!rt)
        return;
    int l = tern_tcp_listen("127.0.0.1", 0, 0, 0);
    ck_assert_msg(l >= 0, "listen: %s", tern_strerror(l));
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ck_assert_int_eq(tern_sock_local_addr(l, &ss, &len), 0);
    srv_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    tern_task *srv;
    ck_assert_int_eq(tern_runtime_spawn(rt, acceptor, (void *)(intptr_t)l, &srv), 0);
    ck_assert_int_eq(tern__fault_set(echo_specs[_i]), 0);

    pthread_t th[CLIENTS];
    struct client cl[CLIENTS] = {{0}};
    for (int i = 0; i < CLIENTS; i++) {
        cl[i].id = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
    }
    int ok = 0, dropped = 0;
    for (int i = 0; i < CLIENTS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ok += cl[i].ok;
        dropped += cl[i].dropped;
    }
    atomic_store(&srv_stop, 1);
    ck_assert_int_eq(tern_join(srv, NULL), 0);
    unsigned long io_faults =
        tern__fault_count(TERN__FAULT_READ) + tern__fault_count(TERN__FAULT_RECV) +
        tern__fault_count(TERN__FAULT_WRITE) + tern__fault_count(TERN__FAULT_SEND);
    unsigned long accept_faults = tern__fault_count(TERN__FAULT_ACCEPT);
    unsigned long driver_faults = tern__fault_count(TERN__FAULT_URING_SUBMIT) +
                                  tern__fault_count(TERN__FAULT_EPOLL_WAIT);
    unsigned long malloc_faults = tern__fault_count(TERN__FAULT_MALLOC);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    tern__fault_set(NULL);
    ck_assert_int_eq(tern_close(l), 0);
    ck_assert_int_eq(fd_count(), fds);

    printf("echo_service %d: %d of %d connections echoed, %d dropped; faults: %lu "
           "accept, %lu I/O, %lu driver, %lu malloc; server saw %ld errors\n",
           _i, ok, CLIENTS * CONNS, dropped, accept_faults, io_faults, driver_faults,
           malloc_faults, atomic_load(&srv_errors));
    ck_assert_int_eq(ok + dropped, CLIENTS * CONNS);
    ck_assert_int_ge(ok, CLIENTS * CONNS * 3 / 4); /* it kept serving */
    if (_i == 1) {
        ck_assert_uint_gt(driver_faults, 0);
        ck_assert_uint_gt(malloc_faults, 0);
        return;
    }
    ck_assert_uint_gt(accept_faults, 0);
    ck_assert_uint_gt(io_faults, 0);
    ck_assert_int_ge(atomic_load(&srv_accept_errors), (long)accept_faults);
    /* each injected I/O fault ended its connection with a negative errno */
    ck_assert_int_ge(atomic_load(&srv_errors), (long)io_faults);
}
END_TEST

/* connect(2) failures reach tern_connect's caller; the socket stays the
 * caller's to close. */
static int conn_ok, conn_refused;

static void *connect_main(void *arg)
{
    int l = (int)(intptr_t)arg;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ck_assert_int_eq(tern_sock_local_addr(l, &ss, &len), 0);
    for (int i = 0; i < 40; i++) {
        int c = tern_socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(c, 0);
        int r = tern_connect(c, (struct sockaddr *)&ss, len, tern_now() + 5 * SEC);
        if (r == 0) {
            int s = tern_accept(l, NULL, NULL, tern_now() + 5 * SEC);
            ck_assert_msg(s >= 0, "accept: %s", tern_strerror(s));
            ck_assert_int_eq(tern_close(s), 0);
            conn_ok++;
        } else {
            ck_assert_msg(r == -ECONNREFUSED, "connect: %s", tern_strerror(r));
            conn_refused++;
        }
        ck_assert_int_eq(tern_close(c), 0);
    }
    return NULL;
}

START_TEST(connect_faults)
{
    int l = tern_tcp_listen("127.0.0.1", 0, 0, 0);
    ck_assert_int_ge(l, 0);
    conn_ok = conn_refused = 0;
    if (run_faulty(2, "connect:p=0.5,seed=3", connect_main, (void *)(intptr_t)l) == 0) {
        ck_assert_int_gt(conn_ok, 0);
        ck_assert_int_gt(conn_refused, 0);
        ck_assert_uint_eq(tern__fault_count(TERN__FAULT_CONNECT),
                          (unsigned long)conn_refused);
    }
    tern__fault_set(NULL);
    close(l);
}
END_TEST

/* ======================================================================= */
/* The spec parser. */

START_TEST(spec_syntax)
{
    ck_assert_int_eq(tern__fault_set("mmap:ENOMEM:every=3,accept:EMFILE:p=0.2,seed=42"),
                     0);
    ck_assert_int_eq(tern__fault_set("malloc:12:after=4"), 0);
    ck_assert_int_eq(tern__fault_set(""), 0);
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    ck_assert_int_eq(tern__fault_set("nosuchseam"), -EINVAL);
    ck_assert_int_eq(tern__fault_set("mmap:ENOTANERRNO"), -EINVAL);
    ck_assert_int_eq(tern__fault_set("mmap:p=1.5"), -EINVAL);
    ck_assert_int_eq(tern__fault_set("mmap:every=0"), -EINVAL);
    ck_assert_int_eq(tern__fault_set("seed=x"), -EINVAL);

    /* every=3 after 2: calls 5, 8, 11 fail, with the errno asked for */
    ck_assert_int_eq(tern__fault_set("read:EIO:every=3:after=2"), 0);
    for (int n = 1; n <= 12; n++)
        ck_assert_int_eq(tern__fault(TERN__FAULT_READ),
                         n > 2 && (n - 2) % 3 == 0 ? EIO : 0);
    ck_assert_uint_eq(tern__fault_count(TERN__FAULT_READ), 3);
    ck_assert_uint_eq(tern__fault_calls(TERN__FAULT_READ), 12);
    ck_assert_int_eq(tern__fault(TERN__FAULT_WRITE), 0); /* not named: off */

    /* p: about that share, default errno */
    ck_assert_int_eq(tern__fault_set("accept:p=0.25,seed=7"), 0);
    int hits = 0;
    for (int n = 0; n < 4000; n++)
        hits += tern__fault(TERN__FAULT_ACCEPT) == EMFILE;
    ck_assert_int_gt(hits, 800);
    ck_assert_int_lt(hits, 1200);
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    ck_assert_int_eq(tern__fault(TERN__FAULT_ACCEPT), 0);
}
END_TEST

/* A stream is one allocation: when it fails, -ENOMEM and nothing made. */
START_TEST(stream_enomem)
{
    tern_stream *s = (tern_stream *)1;
    ck_assert_int_eq(tern__fault_set("malloc"), 0);
    ck_assert_int_eq(tern_stream_new(0, NULL, &s), -ENOMEM);
    ck_assert_uint_eq(tern__fault_count(TERN__FAULT_MALLOC), 1);
    ck_assert_int_eq(tern__fault_set(NULL), 0);
    ck_assert_ptr_eq(s, (tern_stream *)1);
    ck_assert_int_eq(tern_stream_new(0, NULL, &s), 0);
    ck_assert_int_eq(tern_stream_free(s), 0);
}
END_TEST

Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, spec_syntax);
    tcase_add_loop_test(tc, spawn_stress, 0, 2);
    tcase_add_loop_test(tc, timers, 0, 2);
    tcase_add_loop_test(tc, channels, 0, 3);
    tcase_add_test(tc, pump_without_stack);
    tcase_add_test(tc, runtime_creation);
    tcase_add_loop_test(tc, echo_service, 0, 2);
    tcase_add_test(tc, connect_faults);
    tcase_add_test(tc, stream_enomem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(faults_suite());
}
