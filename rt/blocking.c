/*
 * The blocking pool: helper threads for work that would block a worker
 * (file I/O on the epoll backend, getaddrinfo, user code).
 *
 * A job is a tern_task of kind TERN_KIND_BLOCKING without a fiber: it is
 * joined, released and cancelled like any task. Threads are started on
 * demand, when a job arrives and no thread is idle, up to the configured
 * maximum; a thread idle for TERN_BLOCKING_KEEPALIVE retires.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "fault.h"
#include "internal.h"

#define TERN_BLOCKING_KEEPALIVE_S 10

static tern_task *take_job(tern__blocking *b)
{
    tern_task *t = b->head;
    if (t) {
        b->head = t->next;
        if (!b->head)
            b->tail = NULL;
    }
    return t;
}

static void *blocking_main(void *arg)
{
    tern_runtime *rt = arg;
    tern__blocking *b = &rt->blocking;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        tern_task *t = take_job(b);
        if (t) {
            pthread_mutex_unlock(&b->lock);
            uint32_t s = atomic_fetch_xor_explicit(&t->state, TS_SCHEDULED | TS_RUNNING,
                                                   ACQUIRE);
            if (t->kind != TERN_KIND_BLOCKING_MUST &&
                ((s & TS_CANCELLED) || atomic_load_explicit(&rt->closing, RELAXED))) {
                t->status = -ECANCELED;
            } else {
                tern_context *prev = tern__context_enter(t->ctx);
                t->result = t->fn(t->arg);
                tern__context_leave(prev);
            }
            tern__task_finish(NULL, t);
            pthread_mutex_lock(&b->lock);
            continue;
        }
        if (b->stopping)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += TERN_BLOCKING_KEEPALIVE_S;
        b->idle++;
        int r = pthread_cond_timedwait(&b->cond, &b->lock, &until);
        b->idle--;
        if (r == ETIMEDOUT && !b->head)
            break;
    }
    b->threads--;
    pthread_cond_broadcast(&b->gone);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

int tern__blocking_submit(tern_runtime *rt, tern_task *t)
{
    tern__blocking *b = &rt->blocking;
    int err = 0;
    t->next = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->tail)
        b->tail->next = t;
    else
        b->head = t;
    b->tail = t;
    if (b->idle == 0 && b->threads < b->max) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        err = -TERN_FAULT_POS(THREAD, pthread_create(&th, &attr, blocking_main, rt));
        pthread_attr_destroy(&attr);
        if (err == 0)
            b->threads++;
        else if (b->threads > 0)
            err = 0; /* the running threads will get to it */
        else
            take_job(b); /* nobody to run it: take it back */
    } else {
        pthread_cond_signal(&b->cond);
    }
    pthread_mutex_unlock(&b->lock);
    return err;
}

/* Waits for every pool thread to exit. The runtime has no unfinished tasks
 * left when this runs, so the queue is empty. */
void tern__blocking_stop(tern_runtime *rt)
{
    tern__blocking *b = &rt->blocking;
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cond);
    while (b->threads > 0)
        pthread_cond_wait(&b->gone, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

static int spawn_blocking(tern_runtime *rt, tern_task_fn fn, void *arg, int kind,
                          tern_task **out)
{
    tern_task *t;
    int r = tern__task_new(rt, fn, arg, kind, &t, 1, NULL, 0);
    if (r < 0)
        return r;
    r = tern__blocking_submit(rt, t);
    if (r < 0) {
        t->status = r;
        atomic_fetch_xor_explicit(&t->state, TS_SCHEDULED | TS_RUNNING, RELAXED);
        tern__task_finish(NULL, t);
        tern__task_unref(t);
        return r;
    }
    *out = t;
    return 0;
}

int tern_runtime_spawn_blocking(tern_runtime *rt, tern_task_fn fn, void *arg,
                                tern_task **out)
{
    if (!rt || !fn || !out)
        return -EINVAL;
    return spawn_blocking(rt, fn, arg, TERN_KIND_BLOCKING, out);
}

int tern__blocking_must(tern_task_fn fn, void *arg)
{
    tern_runtime *rt = tern_runtime_current();
    if (!rt)
        return -EPERM;
    tern_task *t;
    int r = spawn_blocking(rt, fn, arg, TERN_KIND_BLOCKING_MUST, &t);
    if (r == 0)
        tern_task_release(t);
    return r;
}

int tern_spawn_blocking(tern_task_fn fn, void *arg, tern_task **out)
{
    tern_loop *w = tern__loop_self();
    if (!w)
        return -EPERM;
    return tern_runtime_spawn_blocking(w->rt, fn, arg, out);
}

void tern__blocking_counts(tern_runtime *rt, unsigned *threads, unsigned *idle,
                           unsigned *queued)
{
    tern__blocking *b = &rt->blocking;
    unsigned n = 0;
    pthread_mutex_lock(&b->lock);
    for (tern_task *t = b->head; t; t = t->next)
        n++;
    *threads = b->threads;
    *idle = b->idle;
    *queued = n;
    pthread_mutex_unlock(&b->lock);
}
