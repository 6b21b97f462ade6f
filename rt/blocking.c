/*
 * The blocking pool: helper threads for work that would block a worker
 * (file I/O on the epoll backend, getaddrinfo, user code).
 *
 * A job is a tern_task of kind TERN__KIND_BLOCKING without a fiber: it is
 * joined, released and cancelled like any task. Threads are started on
 * demand, when a job arrives and more jobs wait than threads are idle, up
 * to cfg.blocking_threads; a thread idle for cfg.blocking_keepalive_ms
 * retires. When every thread is busy and the maximum is reached, at most
 * cfg.blocking_queue jobs wait; one more is refused with -EAGAIN.
 *
 * tern's own jobs (TERN__KIND_BLOCKING_MUST: file ops on epoll, name lookups)
 * bypass that bound. A task that submits one waits for it, so they are
 * bounded by the tasks doing I/O, each of which already owns a stack; failing
 * them would turn a user's flood of jobs into -EAGAIN from tern_read on a
 * regular file, which no caller expects from a file.
 *
 * Lifetime. The pool's state (this struct) is its own allocation, reference
 * counted: one reference for the runtime, one per thread. Shutdown may give
 * up on jobs that still run (tern__blocking_abandon); their threads keep the
 * pool alive and, when fn returns, touch nothing else: not the task header,
 * not the runtime. The pool lock decides, once per job, whether the job is
 * finished by its thread or abandoned by shutdown: a job's thread unlinks
 * its record under the lock and only then finishes the task; shutdown marks
 * records under the same lock. tern's own jobs tell their waiter from the
 * finish (the task's on_exit hook), never from fn: a wake-up from fn could
 * land after an abandoning shutdown had freed the waiter's runtime.
 *
 * Threads are joinable, so that tern_runtime_free returns only once they
 * are gone: a thread's exit runs its thread-local destructors (glibc frees a
 * resolver's per-thread state then), and a process that exits right after
 * the free must not race them. An exiting thread queues its record on
 * b->exited; stop joins them all, and the next submit that starts a thread
 * joins those that retired after keep-alive. Only a thread whose job
 * shutdown abandons is detached, since it may never end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt/fault.h"
#include "rt/internal.h"

/* A job being run: on its thread's stack, linked while fn runs. */
typedef struct running {
    struct running *prev, *next;
    tern_task *task;
    tern_task_fn fn;
    uint64_t id, since;
    pthread_t thread; /* the one running it, detached if abandoned */
    int abandoned;    /* shutdown gave up on it: the thread must not touch task */
} running;

/* One pool thread, for joining it once it has exited. */
typedef struct pool_thread {
    struct tern__blocking *pool;
    pthread_t id;             /* written under the pool lock before the thread can exit */
    struct pool_thread *next; /* on pool->exited */
} pool_thread;

struct tern__blocking {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* jobs arrived / stopping (CLOCK_MONOTONIC) */
    pthread_cond_t gone; /* a thread exited */
    unsigned refs;       /* the runtime's + one per thread */
    tern_task *head, *tail;
    running *running;
    pool_thread *exited; /* threads that have exited (or are about to): join them */
    unsigned threads, idle, queued, abandoned_threads;
    unsigned max, queue_max;
    uint64_t keepalive_ns;
    int closing;  /* shutdown began: plain jobs that have not started never run */
    int stopping; /* threads exit once the queue is empty */
};

int tern__blocking_new(const tern_config *cfg, tern__blocking **out)
{
    tern__blocking *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, &ca);
    pthread_cond_init(&b->gone, NULL);
    pthread_condattr_destroy(&ca);
    b->refs = 1;
    b->max = cfg->blocking_threads;
    b->queue_max = cfg->blocking_queue;
    b->keepalive_ns = (uint64_t)cfg->blocking_keepalive_ms * 1000000u;
    *out = b;
    return 0;
}

/* Drops a reference; called with b->lock held, returns with it released. */
static void pool_unref_unlock(tern__blocking *b)
{
    int last = --b->refs == 0;
    pthread_mutex_unlock(&b->lock);
    if (!last)
        return;
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    pthread_cond_destroy(&b->gone);
    free(b);
}

static tern_task *take_job(tern__blocking *b)
{
    tern_task *t = b->head;
    if (t) {
        b->head = t->next;
        if (!b->head)
            b->tail = NULL;
        b->queued--;
    }
    return t;
}

/* Runs job t (taken from the queue, b->lock held) and returns with the lock
 * held again. me->abandoned is set on return if shutdown gave up on it. */
static void run_job(tern__blocking *b, tern_task *t, running *me)
{
    uint32_t s = tern__task_job_start(t);
    /* t->rt is alive: shutdown waits for this job, or abandons it under
     * the lock we hold */
    int skip = t->kind != TERN__KIND_BLOCKING_MUST &&
               ((s & TERN__TS_CANCELLED) ||
                atomic_load_explicit(&t->rt->closing, TERN__RELAXED));
    tern_task_fn fn = t->fn;
    void *arg = t->arg;
    *me = (running){.task = t,
                    .fn = fn,
                    .id = t->id,
                    .since = tern_now(),
                    .thread = pthread_self(),
                    .next = b->running};
    if (b->running)
        b->running->prev = me;
    b->running = me;
    pthread_mutex_unlock(&b->lock);

    void *result = NULL;
    if (!skip) {
        /* The thread's context slot holds its own reference, so the
         * context outlives the task header if the job is abandoned. */
        tern_context *prev = tern__context_enter(t->ctx);
        result = fn(arg);
        tern__context_leave(prev);
    }

    pthread_mutex_lock(&b->lock);
    if (me->prev)
        me->prev->next = me->next;
    else
        b->running = me->next;
    if (me->next)
        me->next->prev = me->prev;
    if (me->abandoned)
        return; /* t belongs to shutdown now (and may be gone with the runtime) */
    pthread_mutex_unlock(&b->lock);
    if (skip)
        t->status = -ECANCELED;
    else
        t->result = result;
    tern__task_finish(NULL, t);
    pthread_mutex_lock(&b->lock);
}

static __thread tern__blocking *tls_pool; /* the pool this thread works for */

int tern__blocking_self(tern_runtime *rt)
{
    return tls_pool && tls_pool == rt->blocking;
}

static void *blocking_main(void *arg)
{
    pool_thread *self = arg;
    tern__blocking *b = self->pool;
    running me = {0};
    tls_pool = b;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        tern_task *t = take_job(b);
        if (t) {
            run_job(b, t, &me);
            if (me.abandoned)
                break;
            continue;
        }
        if (b->stopping)
            break;
        uint64_t until = tern_now() + b->keepalive_ns;
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                              .tv_nsec = (long)(until % 1000000000u)};
        b->idle++;
        int r = pthread_cond_timedwait(&b->cond, &b->lock, &ts);
        b->idle--;
        if (r == ETIMEDOUT && !b->head)
            break;
    }
    b->threads--;
    if (me.abandoned) {
        b->abandoned_threads--; /* detached by abandon: nobody joins it */
        free(self);
    } else {
        self->next = b->exited;
        b->exited = self;
    }
    pthread_cond_broadcast(&b->gone);
    pool_unref_unlock(b);
    return NULL;
}

/* Joins the threads on list (taken from b->exited): each has queued itself
 * as its last act under the lock, so a join waits only for its exit. */
static void join_exited(pool_thread *list)
{
    while (list) {
        pool_thread *next = list->next;
        pthread_join(list->id, NULL);
        free(list);
        list = next;
    }
}

int tern__blocking_submit(tern_runtime *rt, tern_task *t)
{
    tern__blocking *b = rt->blocking;
    int must = t->kind == TERN__KIND_BLOCKING_MUST;
    t->next = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->stopping || (b->closing && !must)) {
        pthread_mutex_unlock(&b->lock);
        return -ESHUTDOWN;
    }
    /* Full: every thread busy or spoken for, no more may start, and
     * queue_max jobs already wait for one. */
    if (!must && b->threads >= b->max && b->queued >= b->idle + b->queue_max) {
        pthread_mutex_unlock(&b->lock);
        return -EAGAIN;
    }
    if (b->tail)
        b->tail->next = t;
    else
        b->head = t;
    b->tail = t;
    b->queued++;
    int err = 0;
    pool_thread *exited = NULL;
    if (b->queued > b->idle && b->threads < b->max) {
        pool_thread *pt = TERN__FAULT_ALLOC(malloc(sizeof *pt));
        if (pt) {
            pt->pool = b;
            err = -TERN__FAULT_POS(THREAD,
                                   pthread_create(&pt->id, NULL, blocking_main, pt));
            if (err)
                free(pt);
        } else {
            err = -ENOMEM;
        }
        exited = b->exited; /* retired after keep-alive: reap them now */
        b->exited = NULL;
        if (err == 0) {
            b->threads++;
            b->refs++;
        } else if (b->threads > 0) {
            err = 0; /* the running threads will get to it */
        } else {
            /* nobody to run it: take it back (with no thread, t is the
             * only job: threads retire only with an empty queue) */
            b->head = b->tail = NULL;
            b->queued = 0;
        }
    }
    if (b->idle)
        pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
    join_exited(exited);
    return err;
}

/* Shutdown, first step: no plain job that has not started will run. Takes
 * them out of the queue and finishes them with -ECANCELED. */
void tern__blocking_close(tern_runtime *rt)
{
    tern__blocking *b = rt->blocking;
    tern_task *cancelled = NULL, **keep = &b->head;
    pthread_mutex_lock(&b->lock);
    b->closing = 1;
    b->tail = NULL;
    for (tern_task *t = b->head, *next; t; t = next) {
        next = t->next;
        if (t->kind == TERN__KIND_BLOCKING_MUST) {
            *keep = t;
            keep = &t->next;
            b->tail = t;
        } else {
            t->next = cancelled;
            cancelled = t;
            b->queued--;
        }
    }
    *keep = NULL;
    pthread_mutex_unlock(&b->lock);
    while (cancelled) {
        tern_task *t = cancelled;
        cancelled = t->next;
        tern__task_job_start(t);
        t->status = -ECANCELED;
        tern__task_finish(NULL, t);
    }
}

/*
 * Shutdown past its timeout: gives up on every job still running and drops
 * tern's own jobs still queued (plain ones were cancelled by close). Each is
 * reported on stderr and handed to give_up(t, arg), which must not finish
 * the task (the thread may still write to what fn was given; the caller
 * keeps the header). Returns how many. No job starts after this.
 */
unsigned tern__blocking_abandon(tern_runtime *rt, void (*give_up)(tern_task *, void *),
                                void *arg)
{
    tern__blocking *b = rt->blocking;
    unsigned n = 0;
    uint64_t now = tern_now();
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cond);
    for (running *r = b->running; r; r = r->next) {
        r->abandoned = 1;
        b->abandoned_threads++;
        pthread_detach(r->thread); /* it may never end: nobody will join it */
        fprintf(
            stderr,
            "tern: shutdown abandoned blocking job %llu running for %llu ms (fn %p%s)\n",
            (unsigned long long)r->id, (unsigned long long)((now - r->since) / 1000000u),
            (void *)(uintptr_t)r->fn,
            r->task->kind == TERN__KIND_BLOCKING_MUST ? ", tern's own" : "");
        give_up(r->task, arg);
        n++;
    }
    tern_task *t;
    while ((t = take_job(b))) {
        fprintf(stderr,
                "tern: shutdown dropped blocking job %llu before it started (fn %p)\n",
                (unsigned long long)t->id, (void *)(uintptr_t)t->fn);
        give_up(t, arg);
        n++;
    }
    pthread_mutex_unlock(&b->lock);
    return n;
}

/* Shutdown, last step: waits for every thread that is not running an
 * abandoned job to exit and joins it, then drops the runtime's reference to
 * the pool. Those threads are idle or about to be: no job is queued or
 * starts now. */
void tern__blocking_stop(tern_runtime *rt)
{
    tern__blocking *b = rt->blocking;
    if (!b)
        return;
    rt->blocking = NULL;
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cond);
    while (b->threads > b->abandoned_threads)
        pthread_cond_wait(&b->gone, &b->lock);
    pool_thread *exited = b->exited;
    b->exited = NULL;
    pool_unref_unlock(b);
    join_exited(exited);
}

int tern_runtime_blocking_info(tern_runtime *rt, tern_blocking_info *out)
{
    if (!rt || !out)
        return -EINVAL;
    tern__blocking *b = rt->blocking;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&b->lock);
    out->threads = b->threads;
    out->idle = b->idle;
    out->busy = b->threads - b->idle;
    out->queued = b->queued;
    out->max_threads = b->max;
    out->max_queued = b->queue_max;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

/* Makes a job task; with attach, calls attach(t, ctx) before it is queued
 * (tern_spawn_blocking_future puts its future in the join slot there), so
 * that an error leaves nothing running: a job that is never queued is
 * finished with the error, which an attached future hears. */
static int spawn_blocking(tern_runtime *rt, tern_task_fn fn, void *arg, int kind,
                          void (*deliver)(void *), tern_task **out,
                          int (*attach)(tern_task *t, void *ctx), void *ctx)
{
    tern_task *t;
    int r = tern__task_new(rt, fn, arg, kind, &t, 1, NULL, 0);
    if (r < 0)
        return r;
    t->on_exit = deliver; /* before it is queued: a thread may finish it at once */
    if (attach)
        r = attach(t, ctx);
    if (r == 0)
        r = tern__blocking_submit(rt, t);
    if (r < 0) {
        /* never queued: finish it here (a future completes with r); there
         * is nothing to deliver, the caller hears r */
        t->on_exit = NULL;
        t->status = r;
        tern__task_job_start(t);
        tern__task_finish(NULL, t);
        tern__task_unref(t);
        return r;
    }
    if (out)
        *out = tern__handle(t);
    else
        tern__task_unref(t);
    return 0;
}

int tern_runtime_spawn_blocking(tern_runtime *rt, tern_task_fn fn, void *arg,
                                tern_task **out)
{
    if (!rt || !fn || !out)
        return -EINVAL;
    return spawn_blocking(rt, fn, arg, TERN__KIND_BLOCKING, NULL, out, NULL, NULL);
}

int tern__blocking_spawn_attached(tern_runtime *rt, tern_task_fn fn, void *arg,
                                  int (*attach)(tern_task *t, void *ctx), void *ctx)
{
    return spawn_blocking(rt, fn, arg, TERN__KIND_BLOCKING, NULL, NULL, attach, ctx);
}

int tern__blocking_must(tern_task_fn fn, void (*deliver)(void *), void *arg)
{
    tern_runtime *rt = tern_runtime_current();
    if (!rt)
        return -EPERM;
    return spawn_blocking(rt, fn, arg, TERN__KIND_BLOCKING_MUST, deliver, NULL, NULL,
                          NULL);
}

int tern_spawn_blocking(tern_task_fn fn, void *arg, tern_task **out)
{
    tern_loop *w = tern__loop_self();
    if (!w)
        return -EPERM;
    return tern_runtime_spawn_blocking(w->rt, fn, arg, out);
}
