/*
 * The monitor: the list of every runtime in the process (tern_dump), and
 * one thread, alive while some runtime asks for a watchdog or a dump
 * signal, that does what a stalled worker cannot do for itself.
 *
 * The watchdog costs the workers nothing beyond what they publish anyway:
 * a worker stores the task (or callback) it switches into and counts its
 * polls. The monitor samples those every quarter threshold; a worker seen
 * in the same poll of the same task for a whole threshold is stalled. It
 * is reported once, named through the registry (under whose lock the task
 * cannot be freed), and only if the same poll still runs afterwards, so a
 * name is never taken from a header that was freed and reused meanwhile.
 *
 * A dump signal's handler only posts a semaphore (async-signal-safe); the
 * monitor thread prints the dump.
 *
 * The same handler counts every signal it takes (arrived[]); the monitor
 * hands what arrived for signals with subscribers (tern_signal, in sync/)
 * to the subscription layer's hook. The monitor thread unblocks those
 * signals in itself, so a process-directed one is delivered even when the
 * application blocks it in all of its own threads (for a signalfd, or
 * before starting the runtime, whose threads inherit its mask); and before
 * a signal's old disposition comes back, the monitor has blocked it again
 * if it had been blocked there, so the application's mask is as it was.
 *
 * on_stall callbacks run with no lock held (a slow one holds up nobody but
 * the watchdog); tern__monitor_remove waits for a callback of its runtime
 * to return, so the callback's argument stays valid until the free ends.
 * Runtimes cannot be created or freed from the monitor thread (-EDEADLK):
 * freeing the last one would join the thread itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt/fault.h"
#include "rt/internal.h"

struct tern__watch {
    uint64_t seq;    /* polls + callbacks of the worker when last sampled */
    tern_task *task; /* what it ran then */
    uintptr_t cb;
    uint64_t since; /* when that poll was first seen */
    int reported;
};

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER; /* the list, a tick */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER; /* thread start/stop */
static pthread_cond_t called = PTHREAD_COND_INITIALIZER;      /* calling went NULL */
static tern_runtime *runtimes;
static tern_runtime *calling; /* whose on_stall runs now; guarded by list_lock */
static unsigned users;        /* runtimes that want the thread; guarded by life_lock */
static pthread_t thread;
static int stop; /* guarded by list_lock */
/* Initialised once and never destroyed: a handler may post it at any time. */
static sem_t sem;
static pthread_once_t sem_once = PTHREAD_ONCE_INIT;
static _Atomic int dump_pending[NSIG];
static _Atomic uint64_t arrived[NSIG]; /* handler calls per signal */
static uint64_t handed[NSIG];          /* what the hook was given; list_lock */
static unsigned subscribed[NSIG];      /* subscriptions per signal; list_lock */
static void (*signal_hook)(int sig, uint64_t count); /* list_lock */
/* The monitor's mask follows `subscribed`: want_gen counts changes to it,
 * mask_gen the last one the monitor applied (list_lock; `masked` tells). */
static uint64_t want_gen, mask_gen;
static pthread_cond_t masked = PTHREAD_COND_INITIALIZER;
static __thread int on_monitor;

static struct {
    unsigned users;
    struct sigaction old;
} sigs[NSIG]; /* guarded by life_lock */

static int wants_thread(const tern_runtime *rt)
{
    return rt->cfg.watchdog || rt->cfg.dump_signal;
}

static void sem_make(void)
{
    sem_init(&sem, 0, 0);
}

static void on_signal(int sig)
{
    int saved = errno;
    atomic_fetch_add_explicit(&arrived[sig], 1, TERN__RELAXED);
    atomic_store_explicit(&dump_pending[sig], 1, TERN__RELAXED);
    sem_post(&sem);
    errno = saved;
}

int tern__on_monitor(void)
{
    return on_monitor;
}

static void stall_print(const tern_stall *s, void *arg)
{
    (void)arg;
    if (s->task_id)
        fprintf(stderr,
                "tern: worker %u stalled: task %llu%s%s%s (spawned at %s:%d) has held it "
                "for %llu ms\n",
                s->worker, (unsigned long long)s->task_id, *s->name ? " \"" : "", s->name,
                *s->name ? "\"" : "", *s->file ? s->file : "?", s->line,
                (unsigned long long)(s->held_ns / 1000000));
    else
        fprintf(stderr,
                "tern: worker %u stalled: a loop callback has held it for %llu ms\n",
                s->worker, (unsigned long long)(s->held_ns / 1000000));
}

static uint64_t seq_of(tern_loop *w)
{
    return atomic_load_explicit(&w->stats.tasks_run, TERN__RELAXED) +
           atomic_load_explicit(&w->stats.handles_run, TERN__RELAXED);
}

static void watch_worker(tern_runtime *rt, unsigned i, uint64_t now)
{
    tern_loop *w = rt->loops[i];
    struct tern__watch *st = &rt->watch[i];
    uint64_t seq = seq_of(w);
    /* acquire: the task's spawn fields, written before it was queued */
    tern_task *t = atomic_load_explicit(&w->busy_task, TERN__ACQUIRE);
    uintptr_t cb = atomic_load_explicit(&w->busy_cb, TERN__RELAXED);
    if (seq != st->seq || t != st->task || cb != st->cb || (!t && !cb)) {
        *st = (struct tern__watch){.seq = seq, .task = t, .cb = cb, .since = now};
        return;
    }
    uint64_t limit = (uint64_t)rt->cfg.stall_ms * 1000000;
    if (st->reported || now - st->since < limit)
        return;
    st->reported = 1;
    char name[256] = "";
    tern_stall s = {.worker = i, .name = name, .file = "", .held_ns = now - st->since};
    if (t && !tern__stall_describe(rt, t, &s, name, sizeof name))
        return; /* finished meanwhile: the stall is over */
    if (seq_of(w) != seq || atomic_load_explicit(&w->busy_task, TERN__RELAXED) != t)
        return; /* it moved on while we looked: what we read may be another task */
    atomic_fetch_add_explicit(&w->stats.stalls, 1, TERN__RELAXED);
    atomic_fetch_add_explicit(&rt->stalls, 1, TERN__RELAXED);
    /* rt stays listed while calling == rt (tern__monitor_remove waits) */
    calling = rt;
    pthread_mutex_unlock(&list_lock);
    (rt->cfg.on_stall ? rt->cfg.on_stall : stall_print)(&s, rt->cfg.stall_arg);
    pthread_mutex_lock(&list_lock);
    calling = NULL;
    pthread_cond_broadcast(&called);
}

/* The sampling period: a quarter of the smallest threshold, 1 ms at least;
 * 0 when no runtime has a watchdog. Under list_lock. */
static uint64_t period_ns(void)
{
    uint64_t p = 0;
    for (tern_runtime *rt = runtimes; rt; rt = rt->next_rt) {
        if (!rt->cfg.watchdog)
            continue;
        uint64_t q = (uint64_t)rt->cfg.stall_ms * 1000000 / 4;
        if (q < 1000000)
            q = 1000000;
        if (!p || q < p)
            p = q;
    }
    return p;
}

/* Unblocks the subscribed signals in the monitor thread, and blocks again
 * those it unblocked that lost their last subscriber. Under list_lock. */
static void apply_mask(sigset_t *ours)
{
    if (mask_gen == want_gen)
        return;
    sigset_t unblock, block, cur;
    sigemptyset(&unblock);
    sigemptyset(&block);
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    for (int sig = 1; sig < NSIG; sig++) {
        if (subscribed[sig] && sigismember(&cur, sig)) {
            sigaddset(&unblock, sig);
            sigaddset(ours, sig);
        } else if (!subscribed[sig] && sigismember(ours, sig)) {
            sigaddset(&block, sig);
            sigdelset(ours, sig);
        }
    }
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    mask_gen = want_gen;
    pthread_cond_broadcast(&masked);
}

/* What arrived since the last look, for the signals with subscribers.
 * Under list_lock; the hook takes only locks of its own. */
static void hand_signals(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        if (!subscribed[sig])
            continue;
        uint64_t a = atomic_load_explicit(&arrived[sig], TERN__RELAXED);
        if (a != handed[sig]) {
            uint64_t n = a - handed[sig];
            handed[sig] = a;
            signal_hook(sig, n);
        }
    }
}

static void *monitor_main(void *arg)
{
    (void)arg;
    on_monitor = 1;
    sigset_t ours; /* signals this thread unblocked for subscribers */
    sigemptyset(&ours);
    pthread_mutex_lock(&list_lock);
    apply_mask(&ours);
    while (!stop) {
        uint64_t p = period_ns();
        pthread_mutex_unlock(&list_lock);
        if (p) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t until = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + p;
            ts.tv_sec = (time_t)(until / 1000000000u);
            ts.tv_nsec = (long)(until % 1000000000u);
            while (sem_clockwait(&sem, CLOCK_MONOTONIC, &ts) < 0 && errno == EINTR)
                ;
        } else {
            while (sem_wait(&sem) < 0 && errno == EINTR)
                ;
        }
        pthread_mutex_lock(&list_lock);
        if (stop)
            break;
        apply_mask(&ours);
        hand_signals();
        /* the signals that arrived, each taken once for every runtime on it */
        unsigned char got[NSIG] = {0};
        for (tern_runtime *rt = runtimes; rt; rt = rt->next_rt) {
            int sig = rt->cfg.dump_signal;
            if (sig && !got[sig])
                got[sig] = atomic_exchange_explicit(&dump_pending[sig], 0, TERN__RELAXED)
                               ? 1
                               : 2;
        }
        uint64_t now = tern_now();
        /* rt->next_rt is read with the lock held again after a callback:
         * rt itself cannot have left meanwhile (calling) */
        for (tern_runtime *rt = runtimes; rt; rt = rt->next_rt) {
            if (rt->cfg.dump_signal && got[rt->cfg.dump_signal] == 1)
                tern_runtime_dump(rt, stderr, 0);
            for (unsigned i = 0; rt->cfg.watchdog && i < rt->nworkers; i++)
                watch_worker(rt, i, now);
        }
    }
    pthread_mutex_unlock(&list_lock);
    return NULL;
}

/* tern's handler for sig, the previous disposition kept to put back.
 * Under life_lock. Returns 0 or -errno. */
static int install_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, &sigs[sig].old) < 0 ? -errno : 0;
}

int tern__signal_take(const unsigned char *member, void (*hook)(int sig, uint64_t count))
{
    if (on_monitor)
        return -EDEADLK;
    pthread_once(&sem_once, sem_make);
    pthread_mutex_lock(&life_lock);
    int err = 0, sig;
    for (sig = 1; sig < NSIG; sig++)
        if (member[sig] && !sigs[sig].users && (err = install_handler(sig)) < 0)
            break;
    if (!err && users == 0) {
        stop = 0;
        err = -TERN__FAULT_POS(THREAD, pthread_create(&thread, NULL, monitor_main, NULL));
    }
    if (err) {
        /* put back the handlers installed above: those below sig (the one
         * that failed, or NSIG when the thread did) */
        while (--sig > 0)
            if (member[sig] && !sigs[sig].users)
                sigaction(sig, &sigs[sig].old, NULL);
        pthread_mutex_unlock(&life_lock);
        return err;
    }
    users++;
    pthread_mutex_lock(&list_lock);
    signal_hook = hook;
    for (sig = 1; sig < NSIG; sig++) {
        if (!member[sig])
            continue;
        sigs[sig].users++;
        /* what arrived before this subscription is not its business */
        if (subscribed[sig]++ == 0)
            handed[sig] = atomic_load_explicit(&arrived[sig], TERN__RELAXED);
    }
    want_gen++;
    pthread_mutex_unlock(&list_lock);
    sem_post(&sem);
    pthread_mutex_unlock(&life_lock);
    return 0;
}

void tern__signal_give(const unsigned char *member)
{
    pthread_mutex_lock(&life_lock);
    pthread_mutex_lock(&list_lock);
    for (int sig = 1; sig < NSIG; sig++)
        subscribed[sig] -= member[sig] != 0;
    uint64_t gen = ++want_gen;
    int last = --users == 0;
    if (last)
        stop = 1;
    sem_post(&sem);
    /* the monitor's mask first, then the old dispositions (see the top) */
    while (!last && mask_gen < gen)
        pthread_cond_wait(&masked, &list_lock);
    pthread_mutex_unlock(&list_lock);
    if (last)
        pthread_join(thread, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (member[sig] && --sigs[sig].users == 0)
            sigaction(sig, &sigs[sig].old, NULL);
    pthread_mutex_unlock(&life_lock);
}

int tern__monitor_add(tern_runtime *rt)
{
    if (on_monitor)
        return -EDEADLK;
    pthread_once(&sem_once, sem_make);
    if (rt->cfg.watchdog &&
        !(rt->watch = TERN__FAULT_ALLOC(calloc(rt->nworkers, sizeof *rt->watch))))
        return -ENOMEM;
    int sig = rt->cfg.dump_signal;
    sigset_t mask;
    /* tern's threads inherit this thread's mask: blocked here, the signal
     * stays pending in every thread of the runtime and no dump comes */
    if (sig && pthread_sigmask(SIG_BLOCK, NULL, &mask) == 0 && sigismember(&mask, sig))
        fprintf(stderr,
                "tern: the dump signal %d (%s) is blocked in the thread creating the "
                "runtime, and so in the runtime's threads: no dump until a thread "
                "unblocks it\n",
                sig, strsignal(sig));
    pthread_mutex_lock(&life_lock);
    int err = 0;
    /* arrivals before this runtime (the signal held for a subscription)
     * are not a request for its dump */
    if (sig)
        atomic_store_explicit(&dump_pending[sig], 0, TERN__RELAXED);
    if (sig && sigs[sig].users == 0)
        err = install_handler(sig);
    if (!err && wants_thread(rt) && users == 0) {
        stop = 0;
        err = -TERN__FAULT_POS(THREAD, pthread_create(&thread, NULL, monitor_main, NULL));
        if (err && sig && sigs[sig].users == 0)
            sigaction(sig, &sigs[sig].old, NULL);
    }
    if (!err) {
        users += wants_thread(rt) != 0;
        sigs[sig].users += sig != 0;
    }
    if (!err) {
        pthread_mutex_lock(&list_lock);
        rt->next_rt = runtimes;
        runtimes = rt;
        pthread_mutex_unlock(&list_lock);
        /* the thread may be in a wait computed before this runtime came
         * (or in one without a timeout): have it compute its period again */
        if (rt->cfg.watchdog)
            sem_post(&sem);
    }
    pthread_mutex_unlock(&life_lock);
    if (err) {
        free(rt->watch);
        rt->watch = NULL;
    }
    return err;
}

void tern__monitor_remove(tern_runtime *rt)
{
    pthread_mutex_lock(&life_lock);
    pthread_mutex_lock(&list_lock);
    while (calling == rt)
        pthread_cond_wait(&called, &list_lock);
    tern_runtime **p = &runtimes;
    while (*p && *p != rt)
        p = &(*p)->next_rt;
    int listed = *p == rt;
    if (listed)
        *p = rt->next_rt;
    int last = listed && wants_thread(rt) && --users == 0;
    if (last)
        stop = 1;
    pthread_mutex_unlock(&list_lock);
    int sig = rt->cfg.dump_signal;
    if (listed && sig && --sigs[sig].users == 0)
        sigaction(sig, &sigs[sig].old, NULL);
    if (last) {
        sem_post(&sem);
        pthread_join(thread, NULL);
    }
    pthread_mutex_unlock(&life_lock);
    free(rt->watch);
    rt->watch = NULL;
}

int tern_dump(FILE *f, int flags)
{
    if (!f)
        return -EINVAL;
    pthread_mutex_lock(&list_lock);
    int total = 0, err = 0;
    for (tern_runtime *rt = runtimes; rt && !err; rt = rt->next_rt) {
        int n = tern_runtime_dump(rt, f, flags);
        if (n < 0)
            err = n;
        else
            total += n;
    }
    pthread_mutex_unlock(&list_lock);
    return err ? err : total;
}
