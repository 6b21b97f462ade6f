/*
 * The worker loop, work stealing, and parking.
 *
 * Idle protocol (after Tokio's): rt->idle.searching counts workers looking
 * for work to steal, at most half of them at once; rt->idle.sleepers lists
 * workers parked (or about to park) in their driver.
 *
 *  - Whoever makes work that another worker could run calls
 *    tern__notify_work after publishing it. That wakes one sleeper, and
 *    only when nobody is searching: a searcher will find the work, and the
 *    woken worker starts out as a searcher.
 *  - A searcher that finds work stops searching; if it was the last one it
 *    wakes another sleeper, so a burst of work spreads one worker at a time.
 *  - A worker about to park first registers as a sleeper, then (after a
 *    seq_cst fence) looks at every queue once more. A producer publishes
 *    (then a seq_cst fence) then reads the counters. So either the producer
 *    sees the sleeper and wakes it, or the sleeper sees the work: no wake-up
 *    is lost. The driver's wake is an eventfd write, which is remembered
 *    until the next wait, so a wake that lands before the sleeper reaches
 *    its wait is not lost either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rt/internal.h"

static __thread tern_loop *tls_loop;
#ifdef TERN_TSAN
_Atomic unsigned tern__fence_word;
#endif

/* noinline plus an opaque asm: the compiler may not reuse a value (or the
 * thread pointer) read before a fiber switch, after which the task may run
 * on another thread (docs/design.md, invariant 3). */
__attribute__((noinline)) tern_loop *tern__loop_self(void)
{
    tern_loop *w = tls_loop;
    __asm__ volatile("" : "+r"(w));
    return w;
}

uint64_t tern_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- foreign-thread waits --------------------------------------------------- */

void tern__thread_wait(tern__thread_waiter *tw)
{
    while (!atomic_load_explicit(&tw->done, TERN__ACQUIRE))
        syscall(SYS_futex, &tw->done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

void tern__thread_wake(tern__thread_waiter *tw)
{
    /* The waiter may return (and its stack frame end) as soon as it sees
     * done; a futex wake on that address afterwards touches no memory. */
    atomic_store_explicit(&tw->done, 1, TERN__RELEASE);
    syscall(SYS_futex, &tw->done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int tern__env_switch(_Atomic int *cache, const char *name)
{
    int v = atomic_load_explicit(cache, TERN__RELAXED);
    if (v < 0) { /* racing first callers read the same environment */
        const char *e = getenv(name);
        v = e && strcmp(e, "1") == 0;
        atomic_store_explicit(cache, v, TERN__RELAXED);
    }
    return v;
}

/* ---- waking workers -------------------------------------------------------------- */

void tern__loop_wake(tern_loop *w)
{
    /* called from any thread: a real atomic add */
    atomic_fetch_add_explicit(&w->stats.wakes, 1, TERN__RELAXED);
    w->driver->ops->wake(w->driver);
}

void tern__notify_work(tern_runtime *rt)
{
    TERN__FENCE(); /* publish-then-read, see the top */
    if (atomic_load_explicit(&rt->idle.searching, TERN__RELAXED) != 0)
        return;
    if (atomic_load_explicit(&rt->idle.nsleepers, TERN__RELAXED) == 0)
        return;
    tern_loop *v = NULL;
    pthread_mutex_lock(&rt->idle.lock);
    unsigned n = atomic_load_explicit(&rt->idle.nsleepers, TERN__RELAXED);
    if (n && atomic_load_explicit(&rt->idle.searching, TERN__RELAXED) == 0) {
        v = rt->loops[rt->idle.sleepers[n - 1]];
        atomic_store_explicit(&rt->idle.nsleepers, n - 1, TERN__RELAXED);
        v->sleeping = 0;
        atomic_store_explicit(&v->searching, 1, TERN__RELAXED); /* handed over: it wakes
                                                             up as a searcher */
        atomic_fetch_add_explicit(&rt->idle.searching, 1, TERN__SEQ_CST);
    }
    pthread_mutex_unlock(&rt->idle.lock);
    if (v)
        tern__loop_wake(v);
}

static void stop_searching(tern_loop *w)
{
    if (!atomic_load_explicit(&w->searching, TERN__RELAXED))
        return;
    atomic_store_explicit(&w->searching, 0, TERN__RELAXED);
    if (atomic_fetch_sub_explicit(&w->rt->idle.searching, 1, TERN__SEQ_CST) == 1)
        tern__notify_work(w->rt);
}

/* ---- finding work ------------------------------------------------------------------ */

static uint32_t rng_next(tern_loop *w)
{
    /* xorshift32: only spreads victims, quality does not matter */
    uint32_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return w->rng = x;
}

static tern_task *take_lifo(tern_loop *w)
{
    tern_task *t = atomic_load_explicit(&w->lifo, TERN__RELAXED);
    if (t && (t = atomic_exchange_explicit(&w->lifo, NULL, TERN__ACQUIRE)))
        TERN__STAT_INC(w, lifo_hits);
    return t;
}

/* The next local task: the LIFO slot first (at most TERN__LIFO_STREAK times
 * in a row, so two tasks waking each other cannot starve the queue), then
 * the queue, then the LIFO slot after all. */
tern_task *tern__next_local(tern_loop *w)
{
    tern_task *t;
    if (w->lifo_streak < TERN__LIFO_STREAK && (t = take_lifo(w))) {
        w->lifo_streak++;
        return t;
    }
    w->lifo_streak = 0;
    if ((t = tern__queue_pop(w))) {
        TERN__STAT_INC(w, local_hits);
        return t;
    }
    return take_lifo(w);
}

/* Half of v's queue into w's, counted; the first of them to run now. */
static tern_task *steal_from(tern_loop *w, tern_loop *v)
{
    unsigned got = tern__queue_steal(v, w);
    if (!got)
        return NULL;
    TERN__STAT_INC(w, steals);
    TERN__STAT_ADD(w, stolen_tasks, got);
    return tern__queue_pop(w);
}

static tern_task *steal(tern_loop *w)
{
    tern_runtime *rt = w->rt;
    unsigned n = rt->nworkers;
    if (n < 2)
        return NULL;
    unsigned start = rng_next(w) % n;
    for (unsigned i = 0; i < n; i++) {
        tern_loop *v = rt->loops[(start + i) % n];
        if (v == w)
            continue;
        tern_task *t = steal_from(w, v);
        if (t)
            return t;
    }
    return NULL;
}

/* A busy worker never looks for work elsewhere, so a worker that stops
 * making progress (preempted by the OS, or running a task that does not
 * yield) would keep its queue to itself for as long as that lasts. Once per
 * interval a busy worker looks at one other worker, in turn; one that ran
 * no task since our previous look, while we ran an interval's worth, loses
 * half its queue to us. */
static tern_task *rescue(tern_loop *w)
{
    tern_runtime *rt = w->rt;
    unsigned n = rt->nworkers;
    if (n < 2)
        return NULL;
    tern_loop *v = rt->loops[w->rescue_peer];
    tern_task *t = NULL;
    if (atomic_load_explicit(&v->stats.tasks_run, TERN__RELAXED) == w->rescue_seen &&
        tern__queue_len(w) <= TERN__LOCAL_QUEUE / 2)
        t = steal_from(w, v);
    unsigned next = (w->rescue_peer + 1) % n;
    w->rescue_peer = next == w->index ? (next + 1) % n : next;
    w->rescue_seen =
        atomic_load_explicit(&rt->loops[w->rescue_peer]->stats.tasks_run, TERN__RELAXED);
    return t;
}

/* Work from elsewhere: the inject queue, then (as one of at most half the
 * workers searching at once) the other workers' queues. */
static tern_task *find_work(tern_loop *w)
{
    tern_runtime *rt = w->rt;
    tern_task *t = tern__inject_pull(rt, w, 0);
    if (t)
        return t;
    if (!atomic_load_explicit(&w->searching, TERN__RELAXED)) {
        unsigned s = atomic_load_explicit(&rt->idle.searching, TERN__RELAXED);
        if (2 * s >= rt->nworkers)
            return NULL;
        atomic_store_explicit(&w->searching, 1, TERN__RELAXED);
        atomic_fetch_add_explicit(&rt->idle.searching, 1, TERN__SEQ_CST);
    }
    for (int spin = 0; spin < 3; spin++) {
        t = steal(w);
        if (!t)
            t = tern__inject_pull(rt, w, 0);
        if (t)
            return t;
    }
    return NULL;
}

static int work_anywhere(tern_runtime *rt)
{
    if (atomic_load_explicit(&rt->inject_len, TERN__RELAXED))
        return 1; /* either list */
    for (unsigned i = 0; i < rt->nworkers; i++) {
        tern_loop *v = rt->loops[i];
        if (tern__queue_len(v) || atomic_load_explicit(&v->lifo, TERN__RELAXED))
            return 1;
    }
    return 0;
}

/* Removes w from the sleepers if it is still there (a notifier may have
 * taken it out already, making it a searcher). */
static void unregister_sleeper(tern_loop *w)
{
    tern_runtime *rt = w->rt;
    pthread_mutex_lock(&rt->idle.lock);
    if (w->sleeping) {
        unsigned n = atomic_load_explicit(&rt->idle.nsleepers, TERN__RELAXED);
        for (unsigned i = 0; i < n; i++) {
            if (rt->idle.sleepers[i] == w->index) {
                rt->idle.sleepers[i] = rt->idle.sleepers[n - 1];
                break;
            }
        }
        atomic_store_explicit(&rt->idle.nsleepers, n - 1, TERN__RELAXED);
        w->sleeping = 0;
    }
    pthread_mutex_unlock(&rt->idle.lock);
}

/* ---- helping a stalled worker ------------------------------------------------------ */

/* A worker whose loop has not turned for this long, while not parked, is
 * taken to be stalled: descheduled by the OS, or running a task that does
 * not yield. A turn is 61 tasks at most, tens of microseconds. */
#define STALL_HELP_NS 200000

static _Atomic int help_off = -1; /* TERN_NO_HELP=1 */

/* On a readiness backend every descriptor is homed on one worker's epoll
 * set, and only that worker's wait turns its events into wake-ups: a
 * worker the OS deschedules would hold every connection homed on it until
 * it runs again, which under CPU contention is a scheduler tick (4 ms at
 * HZ=250). So a worker with nothing to run, and one that has just run an
 * interval of tasks, collects the events of any peer that has stalled with
 * descriptors homed on it; their tasks then run here. With help 0 it only
 * says whether some peer could stall so (awake: it may home descriptors
 * after we decided how long to sleep, which nothing would tell us): an
 * idle worker then sleeps at most HELP_PARK_NS at a time, to look again.
 * Returns the count of events handled, or of such peers. */
#define HELP_PARK_NS 2000000

static int help_stalled(tern_loop *w, int help)
{
    tern_runtime *rt = w->rt;
    if (rt->nworkers < 2 || !w->driver->ops->help ||
        tern__env_switch(&help_off, "TERN_NO_HELP"))
        return 0;
    uint64_t now = help ? tern_now() : 0;
    int n = 0;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        tern_loop *v = rt->loops[i];
        if (v == w || atomic_load_explicit(&v->parked, TERN__RELAXED))
            continue;
        if (!help) {
            n++;
            continue;
        }
        uint64_t seen = atomic_load_explicit(&v->now, TERN__RELAXED);
        if (atomic_load_explicit(&v->driver->busy, TERN__RELAXED) && now > seen &&
            now - seen >= STALL_HELP_NS)
            n += v->driver->ops->help(v->driver);
    }
    return n;
}

/* Sleeps in the driver until the next timer, a wake, or (later) I/O. */
static void park(tern_loop *w)
{
    tern_runtime *rt = w->rt;
    tern__registry_tidy(w, 1); /* nothing of the registry waits for our wake-up */
    /* Stop searching before registering: once registered, a notifier may
     * hand us the searching role again (it writes w->searching under the
     * lock). The look at every queue below covers work that arrives while
     * nobody searches. */
    if (atomic_load_explicit(&w->searching, TERN__RELAXED)) {
        atomic_store_explicit(&w->searching, 0, TERN__RELAXED);
        atomic_fetch_sub_explicit(&rt->idle.searching, 1, TERN__SEQ_CST);
    }
    pthread_mutex_lock(&rt->idle.lock);
    unsigned n = atomic_load_explicit(&rt->idle.nsleepers, TERN__RELAXED);
    rt->idle.sleepers[n] = w->index;
    atomic_store_explicit(&rt->idle.nsleepers, n + 1, TERN__RELAXED);
    w->sleeping = 1;
    pthread_mutex_unlock(&rt->idle.lock);
    atomic_store_explicit(&w->parked, 1, TERN__SEQ_CST);
    TERN__FENCE(); /* registered, now look once more */

    int64_t timeout = -1;
    uint64_t next = tern__wheel_next(&w->wheel);
    if (next != UINT64_MAX) {
        uint64_t now = tern_now();
        timeout = next > now ? (int64_t)(next - now) : 0;
    }
    if (work_anywhere(rt) || atomic_load_explicit(&w->inbox_nonempty, TERN__ACQUIRE) ||
        atomic_load_explicit(&w->sleep_reap, TERN__ACQUIRE) ||
        atomic_load_explicit(&rt->shards[w->index].away, TERN__ACQUIRE) ||
        atomic_load_explicit(&rt->stopping, TERN__ACQUIRE))
        timeout = 0;
    if ((timeout < 0 || timeout > HELP_PARK_NS) && help_stalled(w, 0))
        timeout = HELP_PARK_NS;
    if (timeout != 0)
        TERN__STAT_INC(w, parks);
    uint64_t t0 = tern_now();
    TERN__STAT_ADD(w, busy_ns, t0 - w->busy_since);
    w->driver->ops->wait(w->driver, timeout);
    w->busy_since = tern_now();
    w->since_poll = 0;
    atomic_store_explicit(&w->parked, 0, TERN__RELAXED);
    unregister_sleeper(w);
}

/* ---- the loop ---------------------------------------------------------------------- */

/* Loop time, handles and timers: the part of a turn that is not tasks. */
static void maintain(tern_loop *w)
{
    uint64_t now = tern_now();
    atomic_store_explicit(&w->now, now, TERN__RELAXED);
    /* busy time accrues every turn, so a worker that never parks shows it */
    TERN__STAT_ADD(w, busy_ns, now - w->busy_since);
    w->busy_since = now;
    tern__handles_run(w);
    /* I/O in flight (or descriptors homed here): a worker that stays busy
     * still submits and collects, once per interval of tasks, without
     * sleeping. One that runs dry polls when it parks anyway, so polling
     * here every turn would double its system calls (it did: 4.1 per echo
     * request on epoll against Tokio's 2.7). */
    if (w->since_poll >= TERN__EVENT_INTERVAL &&
        atomic_load_explicit(&w->driver->busy, TERN__RELAXED)) {
        w->driver->ops->wait(w->driver, 0);
        w->since_poll = 0;
    }
    if (atomic_load_explicit(&w->sleep_reap, TERN__RELAXED))
        tern__sleep_reap_remote(w);
    tern__registry_tidy(w, 0);
    if (w->wheel.count) {
        uint64_t fired =
            tern__wheel_advance(&w->wheel, now, tern__timer_fire, tern__timer_reap, w);
        TERN__STAT_ADD(w, timers_fired, fired);
    }
    atomic_store_explicit(&w->scheduled, w->wheel.count, TERN__RELAXED);
}

static int should_exit(tern_loop *w)
{
    return atomic_load_explicit(&w->rt->stopping, TERN__ACQUIRE) &&
           !work_anywhere(w->rt) && !tern__handles_pending(w);
}

/*
 * One worker. Each turn, in order:
 *   1. maintain: read the clock once, run the call_soon handles that were
 *      ready when the turn began, fire due timers (waking sleepers, running
 *      call_later/call_at handles in deadline order);
 *   2. run up to TERN__EVENT_INTERVAL local tasks (LIFO slot, then queue), so
 *      timers and handles wait at most that many tasks;
 *   3. after a full interval, take one task from the inject queue, so work
 *      from outside cannot starve behind a busy local queue (Go's 1-in-61),
 *      and rescue the queue of a worker that stopped making progress;
 *   4. with nothing local: take from the inject queue, then steal (spinning
 *      a little, at most half the workers at a time);
 *   5. nothing anywhere: park in the driver until the next timer or a wake.
 */
static void loop_run(tern_loop *w)
{
    for (;;) {
        maintain(w);

        /* turn_ran counts the tasks that tasks switched to directly as
         * well (task.c, switch_out); the turn ends at the interval either
         * way, and so does a direct switch. */
        w->turn_ran = 0;
        tern_task *t;
        while (w->turn_ran < TERN__EVENT_INTERVAL && (t = tern__next_local(w))) {
            /* A worker woken as a searcher may find its work locally (a
             * timer or handle made it): it must leave the searching count
             * before it runs anything, or notify_work would believe someone
             * is still looking and never wake a sleeper. */
            stop_searching(w);
            tern__task_run(w, t);
        }
        unsigned ran = w->turn_ran;
        if (ran >= TERN__EVENT_INTERVAL) {
            if ((t = tern__inject_pull(w->rt, w, 1)))
                tern__task_run(w, t);
            if ((t = rescue(w)))
                tern__task_run(w, t);
            help_stalled(w, 1);
        }
        w->since_poll += w->turn_ran;
        if (ran)
            continue;

        if ((t = find_work(w))) {
            stop_searching(w);
            tern__task_run(w, t);
            w->since_poll += w->turn_ran; /* a worker fed only by steals still polls */
            continue;
        }
        if (tern__handles_pending(w) || help_stalled(w, 1))
            continue;
        if (should_exit(w)) {
            stop_searching(w);
            return;
        }
        park(w);
    }
}

void *tern__worker_main(void *arg)
{
    tern_loop *w = arg;
    tern_runtime *rt = w->rt;
    tls_loop = w;
    w->rng = 0x9e3779b9u * (w->index + 1);
    w->rescue_peer = (w->index + 1) % rt->nworkers;
    w->rescue_seen = UINT64_MAX; /* the first look only takes a reading */
    tern__fiber_init_thread(&w->sched);
    int err = tern__fiber_thread_init(), ring_err = 0;
    if (err == 0)
        err = ring_err = tern__driver_open(rt->backend, &w->driver, NULL);
    if (err == 0)
        w->driver->fdtab = rt->fdtab;
    w->backend_note = rt->backend_note;
    tern__wheel_init(&w->wheel, tern_now(), 1000000);
    atomic_store_explicit(&w->now, tern_now(), TERN__RELAXED);
    w->busy_since = tern_now();
    w->poll_countdown = rt->cfg.metrics ? TERN__POLL_SAMPLE : UINT32_MAX;

    pthread_mutex_lock(&rt->start_lock);
    if (err && !rt->start_error)
        rt->start_error = err;
    if (ring_err && !rt->driver_error)
        rt->driver_error = ring_err;
    rt->started++;
    pthread_cond_broadcast(&rt->start_cond);
    while (rt->started < rt->nworkers + 1 && !rt->start_error)
        pthread_cond_wait(&rt->start_cond, &rt->start_lock);
    err = rt->start_error;
    pthread_mutex_unlock(&rt->start_lock);

    if (!err)
        loop_run(w);

    tern__handles_drain(w);
    /* The driver stays open: other workers may still be waking this one.
     * runtime_destroy closes it once every worker has been joined. */
    tern__fiber_thread_exit();
    tls_loop = NULL;
    return NULL;
}
