/*
 * Futures, their combinators, and task groups.
 *
 * A future's spinlock (q.lock) guards its outcome, its waiters and its
 * callbacks. Completion happens once, under the lock; everything it
 * triggers (posting waiters, scheduling callbacks) happens after the lock
 * is dropped, from lists taken while it was held.
 *
 * Waiters are wait.h nodes in two modes: claimed (one waiter per record:
 * tern_future_wait, tern_wait_any) or counting (one record for many
 * futures: tern_gather), told apart by the node's n field.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "rt/fault.h"
#include "sync/sync.h"

#define COUNTING 1 /* a node's n: counting mode */
#define SMALL 16   /* nodes kept on the stack by the combinators */

typedef struct fcb {
    struct fcb *next;
    tern_future_cb cb;
    void *arg;
    tern_future *f;
    tern_loop *loop; /* NULL: runs on the completing thread (internal) */
    tern_handle *h;  /* made when added, so completion cannot fail */
} fcb;

struct tern_future {
    tern__waitq q; /* lock + waiters */
    _Atomic uint32_t refs;
    _Atomic uint32_t done;
    int err;
    void *value;
    fcb *cb_head, *cb_tail;
    tern_task *task; /* a task's future: cancelling cancels it */
};

size_t tern__future_waiting(tern_future *f)
{
    return tern__wq_waiting(&f->q);
}

int tern_future_new(tern_future **out)
{
    if (!out)
        return -EINVAL;
    tern_future *f = TERN__FAULT_ALLOC(calloc(1, sizeof *f));
    if (!f)
        return -ENOMEM;
    atomic_init(&f->refs, 1);
    *out = f;
    return 0;
}

tern_future *tern_future_ref(tern_future *f)
{
    if (f)
        atomic_fetch_add_explicit(&f->refs, 1, TERN__RELAXED);
    return f;
}

void tern_future_release(tern_future *f)
{
    /* Pending callbacks hold references, so none is left here. */
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, TERN__ACQ_REL) == 1)
        free(f);
}

/* ---- callbacks -------------------------------------------------------------- */

static void fcb_run(void *arg)
{
    fcb *c = arg;
    c->cb(c->f, c->arg);
    tern_future_release(c->f);
    if (c->h)
        tern_handle_release(c->h);
    free(c);
}

/* Schedules c on its loop; when the loop is gone (or c is internal) runs
 * it here. */
static void fcb_fire(fcb *c)
{
    tern_handle *h = c->h;
    /* Once posted, the handle is the loop's and c may run (and be freed)
     * at any moment on the loop's thread: let go of both first. */
    c->h = NULL;
    if (c->loop && tern__handle_post(c->loop, h) == 0)
        return;
    c->h = h;
    /* The loop is gone: run here, but in the adder's context, as the
     * loop would have. */
    tern_context *prev = h ? tern__context_enter(h->ctx) : NULL;
    fcb_run(c);
    if (h)
        tern__context_leave(prev);
}

static int add_callback(tern_future *f, tern_loop *loop, tern_future_cb cb, void *arg,
                        int internal)
{
    if (!f || !cb)
        return -EINVAL;
    if (!internal && !loop && !(loop = tern_loop_current()))
        return -EINVAL;
    fcb *c = TERN__FAULT_ALLOC(calloc(1, sizeof *c));
    if (!c)
        return -ENOMEM;
    c->cb = cb;
    c->arg = arg;
    c->f = tern_future_ref(f);
    c->loop = internal ? NULL : loop;
    if (c->loop && !(c->h = tern__handle_alloc(fcb_run, c))) {
        tern_future_release(f);
        free(c);
        return -ENOMEM;
    }
    TERN__LOCK(&f->q);
    if (!atomic_load_explicit(&f->done, TERN__RELAXED)) {
        if (f->cb_tail)
            f->cb_tail->next = c;
        else
            f->cb_head = c;
        f->cb_tail = c;
        TERN__UNLOCK(&f->q);
        return 0;
    }
    TERN__UNLOCK(&f->q);
    fcb_fire(c);
    return 0;
}

int tern_future_add_done_callback(tern_future *f, tern_loop *loop, tern_future_cb cb,
                                  void *arg)
{
    return add_callback(f, loop, cb, arg, 0);
}

int tern_future_remove_done_callback(tern_future *f, tern_future_cb cb, void *arg)
{
    if (!f || !cb)
        return -EINVAL;
    fcb *gone = NULL;
    int n = 0;
    TERN__LOCK(&f->q);
    for (fcb **p = &f->cb_head; *p;) {
        fcb *c = *p;
        if (c->cb == cb && c->arg == arg && c->loop) {
            *p = c->next;
            c->next = gone;
            gone = c;
            n++;
        } else {
            f->cb_tail = c;
            p = &c->next;
        }
    }
    if (!f->cb_head)
        f->cb_tail = NULL;
    TERN__UNLOCK(&f->q);
    while (gone) {
        fcb *c = gone;
        gone = c->next;
        tern_handle_release(c->h);
        tern_future_release(c->f);
        free(c);
    }
    return n;
}

/* ---- completion --------------------------------------------------------------- */

static int complete(tern_future *f, void *value, int err)
{
    if (!f)
        return -EINVAL;
    tern__waiter *post = NULL, *count = NULL, *w;
    TERN__LOCK(&f->q);
    if (atomic_load_explicit(&f->done, TERN__RELAXED)) {
        TERN__UNLOCK(&f->q);
        return -EALREADY;
    }
    f->value = value;
    f->err = err;
    atomic_store_explicit(&f->done, 1, TERN__RELEASE);
    while ((w = f->q.head)) {
        tern__wq_unlink(&f->q, w);
        if (w->n == COUNTING) {
            w->next = count;
            count = w;
        } else if (tern__waiter_claim(w)) {
            w->next = post;
            post = w;
        }
    }
    fcb *cbs = f->cb_head;
    f->cb_head = f->cb_tail = NULL;
    tern_task *task = f->task;
    f->task = NULL;
    TERN__UNLOCK(&f->q);

    /* Keep f alive through the callbacks: one may drop the last other
     * reference. */
    tern_future_ref(f);
    tern__wake_post_all(post);
    while (count) {
        w = count;
        count = w->next;
        tern__wake_count(w->wake, err ? w->index : -1);
    }
    while (cbs) {
        fcb *c = cbs;
        cbs = c->next;
        fcb_fire(c);
    }
    if (task)
        tern_task_release(task);
    tern_future_release(f);
    return 0;
}

int tern_future_set_result(tern_future *f, void *value)
{
    return complete(f, value, 0);
}

int tern_future_set_error(tern_future *f, int err)
{
    if (err >= 0 || err == INT_MIN) /* INT_MIN has no positive errno */
        return -EINVAL;
    return complete(f, NULL, err);
}

int tern_future_cancel(tern_future *f)
{
    if (!f)
        return -EINVAL;
    TERN__LOCK(&f->q);
    int done = atomic_load_explicit(&f->done, TERN__RELAXED);
    tern_task *task = done ? NULL : tern_task_ref(f->task);
    TERN__UNLOCK(&f->q);
    if (done)
        return -EALREADY;
    if (task) {
        /* asyncio's Task.cancel: a request; the task decides the outcome */
        tern_task_cancel(task);
        tern_task_release(task);
        return 0;
    }
    return complete(f, NULL, -ECANCELED);
}

int tern_future_done(const tern_future *f)
{
    return f && atomic_load_explicit(&((tern_future *)f)->done, TERN__ACQUIRE);
}

int tern_future_cancelled(const tern_future *f)
{
    return tern_future_done(f) && f->err == -ECANCELED;
}

int tern_future_result(const tern_future *f, void **value)
{
    if (!f)
        return -EINVAL;
    if (!tern_future_done(f))
        return -EAGAIN;
    if (f->err)
        return f->err;
    if (value)
        *value = f->value;
    return 0;
}

/* ---- tasks as futures -------------------------------------------------------------- */

static void future_task_done(void *fut, void *result, int status)
{
    tern_future *f = fut;
    complete(f, result, status);
    tern_future_release(f); /* the join slot's reference */
}

int tern_task_future(tern_task *h, tern_future **out)
{
    tern_task *t = tern__task_of(h);
    if (!t || !out)
        return -EINVAL;
    tern_future *f;
    int r = tern_future_new(&f);
    if (r < 0)
        return r;
    f->task = tern_task_ref(t);
    atomic_store_explicit(&f->refs, 2, TERN__RELAXED); /* the caller's, the join slot's */
    tern__join_future_hook(future_task_done); /* before a future can be in a slot */
    if (!tern__join_claim(t, f, TERN__JOIN_FUTURE)) {
        tern_task_release(t);
        free(f);
        return -EBUSY;
    }
    /* finish may have missed the slot: whoever clears it completes f */
    if ((atomic_load_explicit(&t->state, TERN__SEQ_CST) & TERN__TS_COMPLETE) &&
        tern__join_unclaim(t, f, TERN__JOIN_FUTURE)) {
        (void)atomic_load_explicit(&t->state, TERN__ACQUIRE); /* result, status */
        future_task_done(f, t->result, t->status);
    }
    *out = f;
    return 0;
}

/* ---- blocking jobs as futures (declared with the pool, in tern.h) ----------------- */

static int attach_future(tern_task *t, void *out)
{
    return tern_task_future(t, out);
}

int tern_runtime_spawn_blocking_future(tern_runtime *rt, tern_task_fn fn, void *arg,
                                       tern_future **out)
{
    if (!rt || !fn || !out)
        return -EINVAL;
    *out = NULL;
    int r = tern__blocking_spawn_attached(rt, fn, arg, attach_future, out);
    if (r < 0 && *out) { /* attached, then not queued: it completed with r */
        tern_future_release(*out);
        *out = NULL;
    }
    return r;
}

int tern_spawn_blocking_future(tern_task_fn fn, void *arg, tern_future **out)
{
    tern_runtime *rt = tern_runtime_current();
    if (!rt)
        return -EPERM;
    return tern_runtime_spawn_blocking_future(rt, fn, arg, out);
}

/* ---- waiting ----------------------------------------------------------------------- */

static int future_wait(tern_future *f, uint64_t deadline, int nocancel)
{
    if (!f)
        return -EINVAL;
    if (tern_future_done(f))
        return 0;
    tern__wake k;
    tern__waiter w = {.wake = &k};
    tern__wake_init(&k);
    TERN__LOCK(&f->q);
    if (atomic_load_explicit(&f->done, TERN__RELAXED)) {
        TERN__UNLOCK(&f->q);
        return 0;
    }
    tern__wq_push(&f->q, &w);
    TERN__UNLOCK(&f->q);
    tern__wait_note(TERN__W_FUTURE, (uintptr_t)f);
    int r = tern__wake_wait(&k, deadline, nocancel);
    if (r < 0) {
        TERN__LOCK(&f->q);
        tern__wq_unlink(&f->q, &w);
        TERN__UNLOCK(&f->q);
    }
    return r;
}

int tern_future_wait(tern_future *f, uint64_t deadline)
{
    return future_wait(f, deadline, 0);
}

int tern_future_await(tern_future *f, void **value, uint64_t deadline)
{
    int r = tern_future_wait(f, deadline);
    return r < 0 ? r : tern_future_result(f, value);
}

/* ---- combinators ------------------------------------------------------------------- */

static int check_list(tern_future *const *fs, size_t n)
{
    if (!fs || n > INT32_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return -EINVAL;
    return 0;
}

static tern__waiter *nodes_get(size_t n, tern__waiter *small)
{
    return n <= SMALL ? small : TERN__FAULT_ALLOC(malloc(n * sizeof(tern__waiter)));
}

static void nodes_put(tern__waiter *w, tern__waiter *small)
{
    if (w != small)
        free(w);
}

static int first_failure(tern__wake *k, void *arg)
{
    return atomic_load_explicit(&k->fired, TERN__RELAXED) >= 0;
}

int tern_gather(tern_future *const *fs, size_t n, unsigned flags, uint64_t deadline)
{
    if (check_list(fs, n) < 0 || (flags & ~TERN_GATHER_COLLECT))
        return -EINVAL;
    if (n == 0)
        return 0; /* asyncio.gather() of nothing: done at once, fs untouched */
    int collect = flags & TERN_GATHER_COLLECT;
    tern__waiter small[SMALL], *w = nodes_get(n, small);
    if (!w)
        return -ENOMEM;
    tern__wake k;
    tern__wake_init(&k);
    uint32_t queued = 0;
    int failed = -1;
    size_t seen = 0;
    for (; seen < n && failed < 0; seen++) {
        size_t i = seen;
        tern_future *f = fs[i];
        w[i] = (tern__waiter){.wake = &k, .n = COUNTING, .index = (int)i};
        TERN__LOCK(&f->q);
        if (!atomic_load_explicit(&f->done, TERN__RELAXED)) {
            tern__wq_push(&f->q, &w[i]);
            queued++;
        } else if (f->err && !collect) {
            failed = (int)i;
        }
        TERN__UNLOCK(&f->q);
    }
    int r = 0;
    if (failed < 0) {
        tern__wait_note(TERN__W_FUTURE, (uintptr_t)fs[0]);
        r = tern__wake_wait_count(&k, queued, deadline, collect ? NULL : first_failure,
                                  NULL);
    }
    /* Take back the nodes no future has fired yet; wait for the firings
     * already under way, which still touch k. */
    uint32_t mine = 0;
    for (size_t i = 0; i < seen; i++) {
        TERN__LOCK(&fs[i]->q);
        if (w[i].linked) {
            tern__wq_unlink(&fs[i]->q, &w[i]);
            mine++;
        }
        TERN__UNLOCK(&fs[i]->q);
    }
    tern__wake_drain(&k, queued - mine);
    nodes_put(w, small);
    if (r == -ECANCELED)
        for (size_t i = 0; i < n; i++)
            tern_future_cancel(fs[i]);
    if (r < 0)
        return r;
    if (failed < 0 && !collect)
        failed = atomic_load_explicit(&k.fired, TERN__RELAXED);
    return failed >= 0 ? fs[failed]->err : 0;
}

int tern_wait_any(tern_future *const *fs, size_t n, uint64_t deadline)
{
    if (n == 0 || check_list(fs, n) < 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (tern_future_done(fs[i]))
            return (int)i;
    tern__waiter small[SMALL], *w = nodes_get(n, small);
    if (!w)
        return -ENOMEM;
    tern__wake k;
    tern__wake_init(&k);
    size_t queued = 0;
    int found = -1;
    for (; queued < n; queued++) {
        tern_future *f = fs[queued];
        w[queued] = (tern__waiter){.wake = &k, .index = (int)queued};
        TERN__LOCK(&f->q);
        if (atomic_load_explicit(&f->done, TERN__RELAXED)) {
            TERN__UNLOCK(&f->q);
            found = (int)queued;
            break;
        }
        tern__wq_push(&f->q, &w[queued]);
        TERN__UNLOCK(&f->q);
    }
    int r;
    uint32_t exp = TERN__WAKE_WAITING;
    tern__wait_note(TERN__W_FUTURE, (uintptr_t)fs[0]);
    if (found >= 0 &&
        atomic_compare_exchange_strong_explicit(&k.state, &exp, TERN__WAKE_ABANDONED,
                                                TERN__ACQ_REL, TERN__ACQUIRE))
        r = 1; /* we settled it: the future we found done */
    else       /* none done yet, or one of the queued ones fired first */
        r = tern__wake_wait(&k, found >= 0 ? 0 : deadline, found >= 0);
    for (size_t i = 0; i < queued; i++) {
        TERN__LOCK(&fs[i]->q);
        tern__wq_unlink(&fs[i]->q, &w[i]);
        TERN__UNLOCK(&fs[i]->q);
    }
    nodes_put(w, small);
    if (r < 0)
        return r;
    return r == 1 ? found : atomic_load_explicit(&k.fired, TERN__RELAXED);
}

int tern_wait_for(tern_future *f, void **value, uint64_t deadline)
{
    if (!f)
        return -EINVAL;
    int r = tern_future_wait(f, deadline);
    if (r == 0)
        return tern_future_result(f, value);
    if (r != -ETIMEDOUT && r != -ECANCELED)
        return r;
    /* Expired or abandoned: cancel the work and wait until it has really
     * stopped (a task may take a while to unwind), as asyncio does. */
    tern_future_cancel(f);
    future_wait(f, 0, 1);
    if (r == -ETIMEDOUT && tern_future_result(f, value) == 0)
        return 0;
    return r;
}

static void shield_done(tern_future *inner, void *arg)
{
    tern_future *outer = arg;
    complete(outer, inner->value, inner->err);
    tern_future_release(outer);
}

int tern_future_shield(tern_future *f, tern_future **out)
{
    if (!f || !out)
        return -EINVAL;
    tern_future *outer;
    int r = tern_future_new(&outer);
    if (r < 0)
        return r;
    tern_future_ref(outer); /* the link's */
    if ((r = add_callback(f, NULL, shield_done, outer, 1)) < 0) {
        free(outer);
        return r;
    }
    *out = outer;
    return 0;
}

/* ---- task groups ----------------------------------------------------------------------
 *
 * Each child is a task plus its future; an internal callback on the future
 * does the group's accounting when the task finishes, whether or not its
 * body ever ran (a child cancelled before it started still finishes). The
 * group's lock (q.lock) guards the child list, live, err and state. */

enum { G_OPEN, G_CANCELLING, G_CLOSED };

struct tern__gchild {
    struct tern__gchild *next, *prev;
    tern__group *g;
    tern_task *task;
    tern_group_fn fn;
    void *arg;
};

void tern_group_init(tern_group *g)
{
    memset(g, 0, sizeof *g);
}

static void *child_main(void *arg)
{
    struct tern__gchild *c = arg;
    return (void *)(intptr_t)c->fn(c->arg);
}

/* Under the group's lock. */
static void cancel_children(tern__group *g)
{
    g->state = G_CANCELLING;
    for (struct tern__gchild *c = g->children; c; c = c->next)
        tern_task_cancel(c->task);
}

/* Under the group's lock. */
static void unlink_child(tern__group *g, struct tern__gchild *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        g->children = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

/* One child less (under the lock); at zero every waiter is claimed, to be
 * posted once the lock is dropped. */
static tern__waiter *child_gone(tern__group *g)
{
    tern__waiter *post = NULL, *w;
    if (--g->live == 0)
        while ((w = tern__wq_claim(&g->q))) {
            w->next = post;
            post = w;
        }
    return post;
}

static void child_done(tern_future *f, void *arg)
{
    struct tern__gchild *c = arg;
    tern__group *g = c->g;
    void *v = NULL;
    int err = tern_future_result(f, &v);
    if (!err)
        err = (int)(intptr_t)v;
    TERN__LOCK(&g->q);
    unlink_child(g, c);
    /* A child that was cancelled did not fail: the failure is whatever
     * made the group cancel it. */
    if (err < 0 && err != -ECANCELED && !g->err) {
        g->err = err;
        cancel_children(g);
    }
    tern__waiter *post = child_gone(g);
    TERN__UNLOCK(&g->q);
    tern__wake_post_all(post);
    tern_task_release(c->task);
    free(c);
}

int tern_group_spawn_at(tern_group *g_, tern_group_fn fn, void *arg, const char *file,
                        int line)
{
    tern__group *g = tern__group_of(g_);
    if (!g || !fn)
        return -EINVAL;
    tern_runtime *rt = tern_runtime_current();
    if (!rt)
        return -EPERM;
    struct tern__gchild *c = TERN__FAULT_ALLOC(calloc(1, sizeof *c));
    if (!c)
        return -ENOMEM;
    c->g = g;
    c->fn = fn;
    c->arg = arg;
    TERN__LOCK(&g->q);
    if (g->state != G_OPEN) {
        TERN__UNLOCK(&g->q);
        free(c);
        return -ESHUTDOWN;
    }
    g->live++; /* before the child exists, so the group cannot close under it */
    TERN__UNLOCK(&g->q);

    /* The task is made but not queued until its future and the callback
     * that accounts for it are in place: nothing can run (or finish) in
     * between, and on failure it is queued cancelled, so it finishes
     * without ever running its body (which would read c). */
    tern_task *t;
    tern_future *f = NULL;
    int r = tern__task_new(rt, child_main, c, TERN__KIND_FIBER, &t, 1, file, line);
    if (r == 0) {
        c->task = t;
        if ((r = tern_task_future(t, &f)) == 0) {
            TERN__LOCK(&g->q);
            c->next = g->children;
            if (c->next)
                c->next->prev = c;
            g->children = c;
            if (g->state == G_CANCELLING)
                tern_task_cancel(t);
            TERN__UNLOCK(&g->q);
            if ((r = add_callback(f, NULL, child_done, c, 1)) < 0) {
                TERN__LOCK(&g->q);
                unlink_child(g, c);
                TERN__UNLOCK(&g->q);
            }
        }
        if (r < 0)
            tern_task_cancel(t);
        tern__schedule(rt, t, 0);
        tern_future_release(f);
    }
    if (r < 0) {
        /* The child never counted: undo, and release waiters that may now
         * be waiting for nothing. */
        TERN__LOCK(&g->q);
        tern__waiter *post = child_gone(g);
        TERN__UNLOCK(&g->q);
        tern__wake_post_all(post);
        if (c->task)
            tern_task_release(c->task);
        free(c);
        return r;
    }
    return 0;
}

int(tern_group_spawn)(tern_group *g, tern_group_fn fn, void *arg)
{
    return tern_group_spawn_at(g, fn, arg, NULL, 0);
}

int tern_group_cancel(tern_group *g_)
{
    tern__group *g = tern__group_of(g_);
    if (!g)
        return -EINVAL;
    int r = 0;
    TERN__LOCK(&g->q);
    if (g->state != G_OPEN)
        r = -EALREADY;
    else
        cancel_children(g);
    TERN__UNLOCK(&g->q);
    return r;
}

int tern_group_wait(tern_group *g_)
{
    tern__group *g = tern__group_of(g_);
    if (!g)
        return -EINVAL;
    tern_task *me = tern__task_self();
    int cancelled = 0;
    for (;;) {
        TERN__LOCK(&g->q);
        if (g->state == G_CLOSED) {
            TERN__UNLOCK(&g->q);
            return -EINVAL;
        }
        for (struct tern__gchild *c = g->children; me && c; c = c->next) {
            if (c->task == me) {
                TERN__UNLOCK(&g->q);
                return -EDEADLK;
            }
        }
        if (g->live == 0) {
            int err = g->err ? g->err : g->state == G_CANCELLING ? -ECANCELED : 0;
            g->state = G_CLOSED;
            TERN__UNLOCK(&g->q);
            return err;
        }
        tern__wake k;
        tern__waiter w = {.wake = &k};
        tern__wake_init(&k);
        tern__wq_push(&g->q, &w);
        TERN__UNLOCK(&g->q);
        /* Once cancelled, keep waiting, deaf to further cancels: no child
         * may outlive the group. */
        tern__wait_note(TERN__W_GROUP, (uintptr_t)g);
        int r = tern__wake_wait(&k, 0, cancelled);
        if (r < 0) {
            TERN__LOCK(&g->q);
            tern__wq_unlink(&g->q, &w);
            if (r == -ECANCELED && g->state == G_OPEN)
                cancel_children(g);
            TERN__UNLOCK(&g->q);
            cancelled = 1;
        }
    }
}
