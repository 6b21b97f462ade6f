/*
 * Runtime lifecycle: configuration, start-up, tern_run / tern_block_on,
 * shutdown, introspection and error names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rt/fault.h"
#include "rt/internal.h"

#define TERN_DEFAULT_STACK (64u * 1024)
#define TERN_DEFAULT_BLOCKING 64
#define TERN_DEFAULT_BUDGET 128
#define TERN_DEFAULT_BLOCKING_QUEUE 1024
#define TERN_DEFAULT_KEEPALIVE_MS 10000
#define TERN_MAX_BLOCKING_QUEUE (1u << 20)
#define TERN_MAX_MS 86400000u /* a day: keep-alive and shutdown timeout */
#define TERN_MAX_WORKERS 1024
#define TERN_MAX_STALL_MS 3600000

void tern_config_init(tern_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->stack_size = TERN_DEFAULT_STACK;
    cfg->blocking_threads = TERN_DEFAULT_BLOCKING;
    cfg->budget = TERN_DEFAULT_BUDGET;
    cfg->blocking_queue = TERN_DEFAULT_BLOCKING_QUEUE;
    cfg->blocking_keepalive_ms = TERN_DEFAULT_KEEPALIVE_MS;
}

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* A signal by number or name ("USR1", "SIGUSR2"); 0 when unknown. */
static int signal_parse(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {
        {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"QUIT", SIGQUIT},
        {"HUP", SIGHUP},   {"PWR", SIGPWR},   {"WINCH", SIGWINCH},
    };
    char *end;
    long n = strtol(s, &end, 10);
    if (*s && !*end)
        return n > 0 && n < NSIG ? (int)n : 0;
    if (!strncmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name))
            return names[i].sig;
    return 0;
}

/* The environment switches production aids on without a rebuild (a
 * service started with TERN_WATCHDOG=100 at 3 a.m.); it never switches off
 * what the program asked for. A value that makes no sense is -EINVAL, like
 * the same value in the config. */

static int config_env(tern_config *c)
{
    const char *s;
    char *end;
    if ((s = getenv("TERN_WATCHDOG")) && *s) {
        long ms = strtol(s, &end, 10);
        if (*end || ms < 0 || ms > TERN_MAX_STALL_MS) {
            fprintf(stderr,
                    "tern: TERN_WATCHDOG=%s: want a stall threshold in ms, 1..%d "
                    "(0 or empty: as configured)\n",
                    s, TERN_MAX_STALL_MS);
            return -EINVAL;
        }
        if (ms > 0) {
            c->watchdog = 1;
            c->stall_ms = (unsigned)ms;
        }
    }
    if ((s = getenv("TERN_METRICS")) && *s && strcmp(s, "0") != 0)
        c->metrics = 1;
    if ((s = getenv("TERN_DUMP_SIGNAL")) && *s && strcmp(s, "0") != 0 &&
        (!(c->dump_signal = signal_parse(s)) || !tern__signal_ok(c->dump_signal))) {
        fprintf(stderr,
                "tern: TERN_DUMP_SIGNAL=%s: want a signal number or name (USR1, USR2, "
                "QUIT, HUP, PWR, WINCH), not one the kernel raises for a fault, KILL or "
                "STOP (0 or empty: as configured)\n",
                s);
        return -EINVAL;
    }
    return 0;
}

/* A signal tern may take (as the dump signal, or for tern_signal): not one
 * the kernel raises for a fault (the handler would return into the faulting
 * instruction for ever) and not one that cannot be caught. */
int tern__signal_ok(int sig)
{
    switch (sig) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
    case SIGABRT:
    case SIGTRAP:
    case SIGSYS:
        return 0;
    default:
        return sig >= 0 && sig < NSIG;
    }
}

/* Zero reserved fields: a program built against a later tern that set one
 * is refused rather than silently given the default. */
static int reserved_zero(const tern_config *c)
{
    for (size_t i = 0; i < sizeof c->reserved / sizeof c->reserved[0]; i++)
        if (c->reserved[i])
            return 0;
    return 1;
}

static int config_resolve(const tern_config *in, tern_config *out)
{
    tern_config_init(out);
    if (!in)
        in = out;
    if (!reserved_zero(in) || in->workers > TERN_MAX_WORKERS ||
        in->backend > TERN_BACKEND_EPOLL ||
        (in->stack_size && (in->stack_size < 16384 || in->stack_size > (1u << 30))) ||
        in->budget > 65535 || in->blocking_threads > 4096 ||
        in->blocking_queue > TERN_MAX_BLOCKING_QUEUE ||
        in->blocking_keepalive_ms > TERN_MAX_MS ||
        in->shutdown_timeout_ms > TERN_MAX_MS || !tern__signal_ok(in->dump_signal) ||
        in->stall_ms > TERN_MAX_STALL_MS)
        return -EINVAL;
    out->watchdog = in->watchdog != 0;
    out->stall_ms = in->stall_ms ? in->stall_ms : 100;
    out->on_stall = in->on_stall;
    out->stall_arg = in->stall_arg;
    out->metrics = in->metrics != 0;
    out->dump_signal = in->dump_signal;
    if (config_env(out) < 0)
        return -EINVAL;
    out->workers = in->workers ? in->workers : cpu_count();
    out->backend = in->backend;
    if (in->stack_size)
        out->stack_size = in->stack_size;
    if (in->blocking_threads)
        out->blocking_threads = in->blocking_threads;
    if (in->budget)
        out->budget = in->budget;
    if (in->blocking_queue)
        out->blocking_queue = in->blocking_queue;
    if (in->blocking_keepalive_ms)
        out->blocking_keepalive_ms = in->blocking_keepalive_ms;
    out->shutdown_timeout_ms = in->shutdown_timeout_ms;
    return 0;
}

static void runtime_destroy(tern_runtime *rt)
{
    /* First: a thread that just finished a job still touches rt. */
    tern__blocking_stop(rt);
    if (rt->loops) {
        tern__registry_fini(rt);
        tern__task_cache_free(rt);
    }
    for (unsigned i = 0; i < rt->nworkers && rt->loops; i++) {
        if (rt->loops[i] && rt->loops[i]->driver)
            rt->loops[i]->driver->ops->close(rt->loops[i]->driver);
        if (rt->loops[i])
            pthread_mutex_destroy(&rt->loops[i]->inbox_lock);
        free(rt->loops ? rt->loops[i] : NULL);
    }
    free(rt->loops);
    free(rt->shards);
    free(rt->reader);
    free(rt->idle.sleepers);
    if (rt->stacks)
        tern__stack_pool_free(rt->stacks);
    tern__driver_shared_free(rt->fdtab);
    pthread_mutex_destroy(&rt->free_lock);
    pthread_mutex_destroy(&rt->epoch_lock);
    pthread_mutex_destroy(&rt->reader_lock);
    pthread_mutex_destroy(&rt->inject_lock);
    pthread_mutex_destroy(&rt->idle.lock);
    pthread_mutex_destroy(&rt->done_lock);
    pthread_cond_destroy(&rt->done_cond);
    pthread_mutex_destroy(&rt->start_lock);
    pthread_cond_destroy(&rt->start_cond);
    free(rt);
}

static int runtime_alloc(tern_runtime *rt)
{
    unsigned n = rt->nworkers;
    rt->nshards = n + 1; /* one per worker, one for other threads (task.c) */
    rt->loops = TERN__FAULT_ALLOC(calloc(n, sizeof *rt->loops));
    rt->shards = TERN__FAULT_ALLOC(aligned_alloc(64, rt->nshards * sizeof *rt->shards));
    rt->reader = TERN__FAULT_ALLOC(aligned_alloc(64, sizeof *rt->reader));
    rt->idle.sleepers = TERN__FAULT_ALLOC(calloc(n, sizeof *rt->idle.sleepers));
    if (rt->shards) /* before the check: runtime_destroy reads them */
        memset(rt->shards, 0, rt->nshards * sizeof *rt->shards);
    if (!rt->loops || !rt->shards || !rt->reader || !rt->idle.sleepers)
        return -ENOMEM;
    memset(rt->reader, 0, sizeof *rt->reader);
    tern__registry_init(rt);
    for (unsigned i = 0; i < n; i++) {
        tern_loop *w =
            TERN__FAULT_ALLOC(aligned_alloc(64, (sizeof *w + 63) & ~(size_t)63));
        if (!w)
            return -ENOMEM;
        memset(w, 0, sizeof *w);
        w->rt = rt;
        w->index = i;
        pthread_mutex_init(&w->inbox_lock, NULL);
        rt->loops[i] = w;
    }
    return tern__stack_pool_new(rt->cfg.stack_size, n, &rt->stacks);
}

/* A write to a peer that has gone must return -EPIPE, not kill the process
 * (Go and Rust do the same); a handler the program installed stays. */
static void ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO)) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

/* Tells the workers to exit and joins the first n of them. */
static void workers_stop(tern_runtime *rt, unsigned n)
{
    atomic_store_explicit(&rt->stopping, 1, TERN__SEQ_CST);
    for (unsigned i = 0; i < n; i++)
        if (rt->loops[i]->driver)
            tern__loop_wake(rt->loops[i]);
    for (unsigned i = 0; i < n; i++)
        pthread_join(rt->loops[i]->thread, NULL);
}

/* Starts the workers, each of which opens its own driver on its own thread
 * (as io_uring's single-issuer mode wants), and releases them together; or,
 * when one failed, joins them all and returns the first error. */
static int workers_start(tern_runtime *rt)
{
    int err = 0;
    unsigned started = 0;
    for (; started < rt->nworkers; started++) {
        tern_loop *w = rt->loops[started];
        err = -TERN__FAULT_POS(THREAD,
                               pthread_create(&w->thread, NULL, tern__worker_main, w));
        if (err < 0)
            break;
    }
    pthread_mutex_lock(&rt->start_lock);
    while (rt->started < started && !err)
        pthread_cond_wait(&rt->start_cond, &rt->start_lock);
    if (err && !rt->start_error)
        rt->start_error = err;
    rt->started++;
    err = rt->start_error;
    pthread_cond_broadcast(&rt->start_cond);
    pthread_mutex_unlock(&rt->start_lock);
    if (err) {
        /* start_error is set, so no worker enters its loop and none needs
         * a wake: join them. workers_stop would read each loop's driver,
         * which a worker still inside its driver open is writing (found by
         * the fault suite under TSan: a thread that failed to start). */
        for (unsigned i = 0; i < started; i++)
            pthread_join(rt->loops[i]->thread, NULL);
        return err;
    }
    return 0;
}

/* Undoes a failed workers_start (its threads joined) for another try. */
static void workers_reset(tern_runtime *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        tern_loop *w = rt->loops[i];
        if (w->driver)
            w->driver->ops->close(w->driver);
        w->driver = NULL;
        w->closed = 0; /* the first start's exit closed the inbox */
    }
    rt->started = 0;
    rt->start_error = rt->driver_error = 0;
}

int tern_runtime_new(const tern_config *cfg, tern_runtime **out)
{
    if (!out)
        return -EINVAL;
    if (tern__on_monitor())
        return -EDEADLK; /* from an on_stall callback */
    tern_runtime *rt = TERN__FAULT_ALLOC(calloc(1, sizeof *rt));
    if (!rt)
        return -ENOMEM;
    int err = config_resolve(cfg, &rt->cfg);
    /* a refused config allocates nothing per worker; anything that fails
     * later must free what runtime_alloc made for each */
    rt->nworkers = err ? 0 : rt->cfg.workers;
    pthread_mutex_init(&rt->inject_lock, NULL);
    pthread_mutex_init(&rt->free_lock, NULL);
    pthread_mutex_init(&rt->epoch_lock, NULL);
    pthread_mutex_init(&rt->reader_lock, NULL);
    pthread_mutex_init(&rt->idle.lock, NULL);
    pthread_mutex_init(&rt->done_lock, NULL);
    pthread_cond_init(&rt->done_cond, NULL);
    pthread_mutex_init(&rt->start_lock, NULL);
    pthread_cond_init(&rt->start_cond, NULL);
    if (err == 0)
        err = tern__blocking_new(&rt->cfg, &rt->blocking);
    if (err == 0)
        err = runtime_alloc(rt);
    if (err == 0)
        ignore_sigpipe();
    if (err == 0) {
        /* Choose the backend once, so that every worker runs the same one
         * (AUTO could otherwise differ per worker on a flaky kernel): open a
         * probe here, keep its choice and note, and have workers force it. */
        tern__driver *probe;
        err = tern__driver_open(rt->cfg.backend, &probe, &rt->backend_note);
        if (err == 0) {
            rt->backend = tern__driver_backend(probe);
            probe->ops->close(probe);
            err = tern__driver_shared_new(rt->backend, &rt->fdtab);
        }
    }
    if (err) {
        runtime_destroy(rt);
        return err;
    }

    err = workers_start(rt);
    const char *why = err && err == rt->driver_error
                          ? tern__driver_refused(rt->backend_note, err)
                          : NULL;
    if (why) {
        /* AUTO, and a worker's ring was refused after the probe's was not:
         * the workers must agree on one backend, so all start over on
         * epoll (docs/design.md, "The I/O driver"). */
        workers_reset(rt);
        rt->backend = TERN_BACKEND_EPOLL;
        rt->backend_note = why;
        err = tern__driver_shared_new(rt->backend, &rt->fdtab);
        if (err == 0)
            err = workers_start(rt);
    }
    if (err) {
        runtime_destroy(rt);
        return err;
    }
    if ((err = tern__monitor_add(rt)) < 0) {
        atomic_store_explicit(&rt->closing, 1, TERN__SEQ_CST);
        workers_stop(rt, rt->nworkers);
        runtime_destroy(rt);
        return err;
    }
    *out = rt;
    return 0;
}

/* Cancels every task that is still alive. */
static void cancel_all(tern_runtime *rt)
{
    tern__registry_enter(rt);
    for (unsigned i = 0; i < rt->nshards; i++)
        for (tern_task *t = tern__registry_first(rt, i); t; t = tern__registry_next(t))
            tern__task_wake(t, TERN__TS_CANCELLED); /* a finished one stays as it is */
    tern__registry_leave(rt);
}

/* ---- shutdown past its timeout ----------------------------------------------------
 *
 * When the timeout passes with blocking jobs still running, their threads
 * cannot be stopped: they will return from fn some time later. What they
 * may touch then must outlive the runtime:
 *  1. the job's task header: the thread does not touch it once abandoned
 *     (blocking.c), but its joiner may (a future holds a reference), and a
 *     header is only ever freed by the last reference, which here is the
 *     scheduler's, never dropped;
 *  2. for tern's own jobs, the waiting task: a file op writes its result
 *     into the task's stack and then wakes the task. Such a task, parked
 *     deaf to cancellation, is "frozen": marked COMPLETE without finishing,
 *     so the late wake returns without touching the runtime, and its header
 *     and every fiber stack of the runtime (the stack pool) are kept.
 * The job's futures and joins complete with -ECANCELED now. All of that is
 * kept for ever, reachable from `remains` below, so a leak checker sees it
 * as kept, not lost. The pool's own state is reference counted and goes
 * with the last thread. */

typedef struct tern__remains {
    struct tern__remains *next;
    tern__stack_pool *stacks; /* when a frozen task may be written to */
    size_t n, cap;
    tern_task **task;
} tern__remains;

static tern__remains *remains;
static pthread_mutex_t remains_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember(tern_task *t, void *arg)
{
    tern__remains *rm = arg;
    if (rm->n == rm->cap) {
        size_t cap = rm->cap ? 2 * rm->cap : 16;
        tern_task **a = realloc(rm->task, cap * sizeof *a);
        if (!a)
            return; /* kept all the same, only not reachable */
        rm->task = a;
        rm->cap = cap;
    }
    rm->task[rm->n++] = t;
}

/* The joiner half of tern__task_finish, for a task that never finishes:
 * -ECANCELED, COMPLETE (later wakes return at once), the joiner told; no
 * count, no reference dropped. The caller owns t's state: an abandoned job
 * (RUNNING or still SCHEDULED, its thread gone from it) or a frozen task. */
static void give_up(tern_task *t)
{
    tern__task_give_up(t);
}

/* Freezes the tasks parked deaf to cancellation: with `all` clear only
 * those whose wait note says they wait on I/O or a blocking job (tern's own
 * jobs), so that a task waiting deaf on one of those (a group leaving, a
 * generator closing) gets the chance to finish once they are given up.
 * Idle is the only state in which nobody else moves a task: the claim to
 * RUNNING makes later wakes only set NOTIFIED. Returns how many. */
static unsigned freeze_parked(tern_runtime *rt, tern__remains *rm, int all)
{
    size_t first = rm->n;
    unsigned n = 0;
    tern__registry_enter(rt);
    for (unsigned i = 0; i < rt->nshards; i++) {
        for (tern_task *t = tern__registry_first(rt, i); t; t = tern__registry_next(t)) {
            /* decided before the claim: a claim undone would lose a wake
             * that found it RUNNING and only set NOTIFIED */
            int k = atomic_load_explicit(&t->wait_kind, TERN__RELAXED);
            if (!all && k != TERN__W_IO && k != TERN__W_BLOCKING)
                continue; /* not yet: what it waits on may still end */
            if (!tern__task_freeze(t))
                continue;
            fprintf(stderr,
                    "tern: shutdown abandoned task %llu waiting for a blocking job\n",
                    (unsigned long long)t->id);
            remember(t, rm);
            n++;
        }
    }
    tern__registry_leave(rt);
    for (size_t k = first; k < rm->n; k++)
        give_up(rm->task[k]);
    return n;
}

/* Waits until at most `left` tasks are unfinished, or deadline (0: none)
 * passes. Returns 1 in the first case. */
static int wait_unfinished(tern_runtime *rt, uint64_t left, uint64_t deadline)
{
    /* Finishing tasks signal done_cond while closing; the timed wait covers
     * a finish that read `closing` just before it was set. */
    int ok;
    pthread_mutex_lock(&rt->done_lock);
    while (!(ok = tern__unfinished(rt) <= left) && (!deadline || tern_now() < deadline)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&rt->done_cond, &rt->done_lock, &until);
    }
    pthread_mutex_unlock(&rt->done_lock);
    return ok;
}

/* Gives up on the blocking jobs still running; returns how many. */
static int abandon(tern_runtime *rt, tern__remains *rm)
{
    unsigned jobs = tern__blocking_abandon(rt, remember, rm);
    for (size_t k = 0; k < rm->n; k++)
        give_up(rm->task[k]);
    /* Tasks woken by what was just given up (its joiners) finish; those
     * parked deaf on an abandoned job are frozen. Bounded: nothing new
     * starts, and a cancelled task parks deaf only for tern's own jobs. */
    uint64_t stuck = jobs, frozen = 0;
    /* A grace for tasks in a short deaf wait (an io_uring cancel being
     * acknowledged), so that only those waiting on abandoned jobs freeze. */
    if (wait_unfinished(rt, stuck, tern_now() + 10000000))
        goto done;
    /* Passes that freeze nothing and see nothing finish for 100 ms: then
     * whatever is still parked deaf waits on something frozen; take it all. */
    for (int idle = 0;;) {
        unsigned n = freeze_parked(rt, rm, idle >= 100);
        stuck += n;
        frozen += n;
        uint64_t before = tern__unfinished(rt);
        if (wait_unfinished(rt, stuck, tern_now() + 1000000))
            break;
        idle = n || tern__unfinished(rt) < before ? 0 : idle + 1;
    }
done:
    if (frozen) {
        rm->stacks = rt->stacks;
        rt->stacks = NULL;
    }
    return (int)jobs;
}

static void keep_remains(tern__remains *rm)
{
    if (!rm->n && !rm->stacks)
        return;
    tern__remains *kept = malloc(sizeof *kept);
    if (!kept)
        return;
    *kept = *rm;
    pthread_mutex_lock(&remains_lock);
    kept->next = remains;
    remains = kept;
    pthread_mutex_unlock(&remains_lock);
}

int tern_runtime_shutdown_timeout(tern_runtime *rt, uint64_t timeout_ns)
{
    if (!rt)
        return -EINVAL;
    tern_loop *self = tern__loop_self();
    if ((self && self->rt == rt) || tern__blocking_self(rt))
        return -EDEADLK; /* it would wait for itself */
    if (tern__on_monitor())
        return -EDEADLK; /* from an on_stall callback: it would join itself */
    uint64_t now = tern_now();
    uint64_t deadline = timeout_ns > UINT64_MAX - now ? 0 : now + timeout_ns;
    tern__monitor_remove(rt);
    atomic_store_explicit(&rt->closing, 1, TERN__SEQ_CST);
    cancel_all(rt);
    tern__blocking_close(rt);
    int abandoned = 0;
    tern__remains rm = {0};
    if (!wait_unfinished(rt, 0, deadline))
        abandoned = abandon(rt, &rm);
    workers_stop(rt, rt->nworkers);
    keep_remains(&rm);
    runtime_destroy(rt); /* stops the blocking pool */
    return abandoned;
}

int tern_runtime_free(tern_runtime *rt)
{
    if (!rt)
        return -EINVAL;
    uint64_t ms = rt->cfg.shutdown_timeout_ms;
    int r = tern_runtime_shutdown_timeout(rt, ms ? ms * 1000000u : UINT64_MAX);
    return r < 0 ? r : 0;
}

int tern_block_on(tern_runtime *rt, tern_task_fn fn, void *arg, void **result)
{
    if (!rt || !fn)
        return -EINVAL;
    tern_loop *self = tern__loop_self();
    if (self && self->rt == rt)
        return -EDEADLK;
    tern_task *t;
    int r = (tern_runtime_spawn)(rt, fn, arg, &t); /* no location: it would be here */
    if (r < 0)
        return r;
    return tern_join(t, result);
}

int tern_run(const tern_config *cfg, tern_task_fn fn, void *arg, void **result)
{
    if (!fn)
        return -EINVAL;
    tern_runtime *rt;
    int r = tern_runtime_new(cfg, &rt);
    if (r < 0)
        return r;
    r = tern_block_on(rt, fn, arg, result);
    tern_runtime_free(rt);
    return r;
}

tern_runtime *tern_runtime_current(void)
{
    tern_loop *w = tern__loop_self();
    return w ? w->rt : NULL;
}

unsigned tern_runtime_workers(const tern_runtime *rt)
{
    return rt ? rt->nworkers : 0;
}

tern_loop *tern_loop_current(void)
{
    return tern__loop_self();
}

tern_loop *tern_runtime_loop(tern_runtime *rt, unsigned i)
{
    return rt && i < rt->nworkers ? rt->loops[i] : NULL;
}

uint64_t tern_loop_time(tern_loop *loop)
{
    if (!loop)
        loop = tern__loop_self();
    return loop ? atomic_load_explicit(&loop->now, TERN__RELAXED) : 0;
}

#define STAT(f) s->f = atomic_load_explicit(&w->stats.f, TERN__RELAXED)
_Static_assert(TERN_POLL_BUCKETS == TERN__POLL_HIST, "one histogram layout");

static void stats_read(tern_loop *w, tern_worker_stats *s)
{
    memset(s, 0, sizeof *s);
    STAT(tasks_run);
    STAT(steals);
    STAT(stolen_tasks);
    STAT(parks);
    STAT(wakes);
    STAT(inject_pulls);
    STAT(lifo_hits);
    STAT(local_hits);
    STAT(budget_yields);
    STAT(handles_run);
    STAT(timers_fired);
    STAT(busy_ns);
    STAT(io_submitted);
    STAT(io_completed);
    STAT(stalls);
    STAT(never_ran);
    STAT(direct_switches);
}

int tern_loop_get_info(tern_loop *loop, tern_loop_info *out)
{
    tern_loop *w = loop ? loop : tern__loop_self();
    if (!w || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->backend = w->driver ? w->driver->ops->name : "none";
    out->backend_note = w->backend_note ? w->backend_note : "";
    out->worker = w->index;
    out->ready_tasks =
        tern__queue_len(w) + (atomic_load_explicit(&w->lifo, TERN__RELAXED) != NULL);
    out->ready_handles =
        atomic_load_explicit(&w->fifo_len, TERN__RELAXED) +
        (uint64_t)atomic_load_explicit(&w->inbox_nonempty, TERN__RELAXED);
    out->scheduled = w == tern__loop_self()
                         ? w->wheel.count
                         : atomic_load_explicit(&w->scheduled, TERN__RELAXED);
    stats_read(w, &out->stats);
    return 0;
}

int tern_worker_metrics(tern_runtime *rt, unsigned i, tern_worker_stats *out)
{
    if (!rt || !out || i >= rt->nworkers)
        return -EINVAL;
    stats_read(rt->loops[i], out);
    return 0;
}

int tern_runtime_metrics(tern_runtime *rt, tern_metrics *out)
{
    if (!rt || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->workers = rt->nworkers;
    out->backend = rt->backend == TERN_BACKEND_EPOLL ? "epoll" : "io_uring";
    out->live_tasks = tern_runtime_live_tasks(rt);
    out->inject_depth = atomic_load_explicit(&rt->inject_len, TERN__RELAXED);
    out->stalls = atomic_load_explicit(&rt->stalls, TERN__RELAXED);
    tern_blocking_info bi;
    tern_runtime_blocking_info(rt, &bi);
    out->blocking_threads = bi.threads;
    out->blocking_idle = bi.idle;
    out->blocking_queued = bi.queued;
    for (unsigned i = 0; i < rt->nworkers; i++) {
        tern_loop *w = rt->loops[i];
        tern_worker_stats s;
        stats_read(w, &s);
        uint64_t *sum = (uint64_t *)&out->total;
        const uint64_t *add = (const uint64_t *)&s;
        for (size_t k = 0; k < sizeof s / sizeof(uint64_t); k++)
            sum[k] += add[k];
        out->ready_tasks +=
            tern__queue_len(w) + (atomic_load_explicit(&w->lifo, TERN__RELAXED) != NULL);
        out->timers_armed += atomic_load_explicit(&w->scheduled, TERN__RELAXED);
        for (unsigned b = 0; b < TERN_POLL_BUCKETS; b++)
            out->poll_hist[b] += atomic_load_explicit(&w->poll_hist[b], TERN__RELAXED);
    }
    return 0;
}

const char *tern_strerror(int err)
{
    if (err == INT_MIN)
        return "unknown error";
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
    case ECANCELED:
        return "cancelled (the calling task, or the task, job or future waited for)";
    case ETIMEDOUT:
        return "timed out (a deadline passed)";
    case ESHUTDOWN:
        return "shutting down (the runtime or task group takes no new work)";
    case EINVAL:
        return "invalid argument";
    case ENOMEM:
        return "out of memory";
    case EAGAIN:
        return "try again (it would have to wait, or a queue or resource is full)";
    case EPERM:
        return "not permitted here (no task or runtime on this thread, the wrong "
               "loop's thread, a lock not held, or the kernel refused)";
    case EALREADY:
        return "already done (finished, cancelled or closed before)";
    case EBUSY:
        return "busy (held, waited on, or joined by someone else)";
    case EDEADLK:
        return "would wait for itself (called from the thread or task it waits for)";
    case ENOSYS:
        return "not supported by this kernel";
    case EPIPE:
        return "closed (the channel, pipe or connection takes no more data)";
    case ENXIO:
        return "no such host or service (or device)";
    case ENODATA:
        return "the stream ended before all the bytes asked for (or the delimiter)";
    case EMSGSIZE:
        return "too long (a line or message exceeds the maximum asked for)";
    default: {
        /* strerror may format unknown codes into a shared buffer; this one
         * only ever returns static text. */
        const char *d = strerrordesc_np(err);
        return d ? d : "unknown error";
    }
    }
}
