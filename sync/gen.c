/*
 * Async generators and the stream stages built on them.
 *
 * A generator is a one-slot hand-off between a consumer (tern_gen_next)
 * and a producer task, under one spinlock (q's). The rules:
 *  - the producer runs only while the consumer has asked for a value
 *    (`asked`): it is spawned by the first next, and each yield hands its
 *    value over (straight into a waiting consumer's node, or into the slot
 *    when that consumer gave up on a deadline), clears `asked` and waits
 *    until the next ask. So at most one value is ever in flight;
 *  - the end is heard from the producer task's join future, not from the
 *    producer's body: a producer cancelled before it started, or left
 *    without a stack, never runs its body, and its consumer and closer must
 *    still be woken. The done callback (finish) is the one place that
 *    marks g done and wakes everyone waiting;
 *  - close marks g closed (yield answers -ECANCELED), cancels the producer
 *    task (so whatever it waits on lets go) and waits, deaf to its own
 *    cancellation, for finish: the producer's cleanup has run by then.
 *
 * As in chan.c, waiters are claimed under the lock, collected on a list
 * through their next field and posted after the lock is dropped.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "sync/sync.h"

struct tern_gen {
    tern__waitq q;      /* its lock guards g; its list: consumers in next */
    tern__waitq yieldq; /* the producer waiting in yield */
    tern__waitq doneq;  /* closers waiting for finish */
    tern_gen_fn fn;
    void *arg;
    void (*drop)(void *arg); /* stages: frees arg (and the source) with g */
    tern_runtime *rt;
    tern_task *task;  /* the producer (our reference), once spawned */
    tern_task *self;  /* the same, set by the producer itself: it may yield
                         before its spawner has stored `task` */
    tern_future *fut; /* the producer's join handle */
    void *value;      /* the slot, while full */
    int full, asked, started, closed, done, ran;
    int orphan; /* closed by gen_free_nowait: finish frees g */
    int ret;    /* what fn returned (when ran) */
    int err;    /* once done: 0 (the end) or the error next keeps returning */
};

/* Stages and the channel pump: one record each, owned by their gen/task. */
enum { MAP, FILTER, TAKE, FROM_CHAN };
typedef struct stage {
    int kind;
    tern_gen *src;
    tern_chan *ch;
    void *(*map)(void *v, void *arg);
    int (*pred)(void *v, void *arg);
    void *arg;
    uint64_t left;
} stage;

static void claim_all(tern__waitq *q, tern__waiter **post, int result)
{
    tern__waiter *w;
    while ((w = tern__wq_claim(q)))
        tern__waiter_defer(post, w, result);
}

static int gen_make(tern_runtime *rt, tern_gen_fn fn, void *arg, void (*drop)(void *),
                    tern_gen **out)
{
    tern_gen *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->rt = rt;
    g->fn = fn;
    g->arg = arg;
    g->drop = drop;
    *out = g;
    return 0;
}

int tern_gen_new(tern_gen_fn fn, void *arg, tern_gen **out)
{
    if (!fn || !out)
        return -EINVAL;
    tern_runtime *rt = tern_runtime_current();
    if (!rt)
        return -EPERM;
    return gen_make(rt, fn, arg, NULL, out);
}

/* ---- the producer's life ------------------------------------------------------ */

static void gen_destroy(tern_gen *g);

/* Marks g done with the producer's outcome and wakes every consumer and
 * closer. Its unlock is its last touch of g (a closer may free g then),
 * unless g is an orphan, which nobody else frees. */
static void finish(tern_gen *g, int status)
{
    tern__waiter *post = NULL;
    TERN__LOCK(&g->q);
    int orphan = g->orphan;
    int r = g->ran ? g->ret : status;
    if (g->closed && r == -ECANCELED)
        r = 0; /* closed: the cancel was ours, the stream simply ended */
    g->err = r;
    g->done = 1;
    g->full = 0;
    claim_all(&g->q, &post, r);
    claim_all(&g->doneq, &post, 0);
    TERN__UNLOCK(&g->q);
    tern__wake_post_all(post);
    if (orphan)
        gen_destroy(g);
}

static void producer_done(tern_future *f, void *arg)
{
    finish(arg, tern_future_result(f, NULL));
}

static void *producer_main(void *arg)
{
    tern_gen *g = arg;
    TERN__LOCK(&g->q);
    g->self = tern__task_self();
    TERN__UNLOCK(&g->q);
    int r = g->fn(g, g->arg);
    TERN__LOCK(&g->q);
    g->ret = r;
    g->ran = 1;
    TERN__UNLOCK(&g->q);
    return NULL;
}

/* Only for when the done callback could not be set up (no memory): the
 * producer is stopped and polled, deaf to the caller's own cancel. */
static void wait_task_poll(tern_task *t)
{
    while (!tern_task_done(t)) {
        if (tern__task_self())
            tern__park(tern_now() + 1000000, 1);
        else
            usleep(1000);
    }
}

/* Spawns the producer; called by the first next, outside the lock. */
static void start(tern_gen *g)
{
    tern_task *t;
    tern_future *f = NULL;
    int r = (tern_runtime_spawn)(g->rt, producer_main, g, &t);
    if (r < 0) {
        finish(g, r);
        return;
    }
    tern_loop *loop = tern_runtime_current() == g->rt ? tern_loop_current() : NULL;
    if (!loop)
        loop = tern_runtime_loop(g->rt, 0);
    r = tern_task_future(t, &f);
    if (r == 0)
        r = tern_future_add_done_callback(f, loop, producer_done, g);
    TERN__LOCK(&g->q);
    g->task = t;
    g->fut = f;
    int cancel = g->closed || r < 0; /* a close came while we spawned */
    TERN__UNLOCK(&g->q);
    if (cancel)
        tern_task_cancel(t);
    if (r < 0) {
        wait_task_poll(t);
        finish(g, r);
    }
}

/* ---- consumer side ---------------------------------------------------------------- */

static void cancel_producer(tern_gen *g)
{
    TERN__LOCK(&g->q);
    tern_task *t = g->done ? NULL : g->task;
    if (t)
        tern_task_ref(t);
    TERN__UNLOCK(&g->q);
    if (t) {
        tern_task_cancel(t);
        tern_task_release(t);
    }
}

int tern_gen_next(tern_gen *g, void **value, uint64_t deadline)
{
    if (!g)
        return -EINVAL;
    tern__waiter *post = NULL;
    void *v = NULL;
    int spawn = 0;
    TERN__LOCK(&g->q);
    if (g->done) {
        int r = g->err;
        TERN__UNLOCK(&g->q);
        return r;
    }
    if (g->full && !g->closed) {
        /* delivered after our last next gave up on its deadline */
        g->full = 0;
        if (value)
            *value = g->value;
        TERN__UNLOCK(&g->q);
        return 1;
    }
    if (!g->closed && !g->asked) {
        g->asked = 1;
        tern__waiter *p = tern__wq_claim(&g->yieldq);
        if (p)
            tern__waiter_defer(&post, p, 0);
        else if (!g->started)
            spawn = g->started = 1;
    }
    tern__wake k;
    tern__waiter w = {.wake = &k, .elem = &v};
    tern__wake_init(&k);
    tern__wq_push(&g->q, &w);
    TERN__UNLOCK(&g->q);
    tern__wake_post_all(post);
    if (spawn)
        start(g);
    tern__wait_note(TERN__W_GEN, (uintptr_t)g);
    int r = tern__wake_wait(&k, deadline, 0);
    if (r < 0) {
        TERN__LOCK(&g->q);
        tern__wq_unlink(&g->q, &w);
        TERN__UNLOCK(&g->q);
        if (r == -ECANCELED)
            cancel_producer(g);
        return r;
    }
    if (w.result == 1 && value)
        *value = v;
    return w.result;
}

int tern_gen_close(tern_gen *g)
{
    if (!g)
        return -EINVAL;
    tern__waiter *post = NULL;
    TERN__LOCK(&g->q);
    if (g->self && g->self == tern__task_self() && !g->done) {
        TERN__UNLOCK(&g->q);
        return -EDEADLK; /* the producer would wait for itself */
    }
    g->closed = 1;
    if (!g->started) {
        g->started = g->done = 1; /* never ran: nothing to clean up */
        g->err = 0;
    }
    if (g->done) {
        int r = g->err == -ECANCELED ? 0 : g->err;
        TERN__UNLOCK(&g->q);
        return r;
    }
    claim_all(&g->yieldq, &post, -ECANCELED);
    tern_task *t = g->task ? tern_task_ref(g->task) : NULL; /* NULL: start cancels */
    tern__wake k;
    tern__waiter w = {.wake = &k};
    tern__wake_init(&k);
    tern__wq_push(&g->doneq, &w);
    TERN__UNLOCK(&g->q);
    tern__wake_post_all(post);
    if (t) {
        /* what the producer waits on other than yield lets go too */
        tern_task_cancel(t);
        tern_task_release(t);
    }
    tern__wait_note(TERN__W_GEN, (uintptr_t)g);
    tern__wake_wait(&k, 0, 1);
    TERN__LOCK(&g->q);
    int r = g->err == -ECANCELED ? 0 : g->err;
    TERN__UNLOCK(&g->q);
    return r;
}

static void gen_destroy(tern_gen *g)
{
    if (g->drop)
        g->drop(g->arg);
    if (g->fut)
        tern_future_release(g->fut);
    if (g->task)
        tern_task_release(g->task);
    free(g);
}

void tern_gen_free(tern_gen *g)
{
    if (!g || tern_gen_close(g) == -EDEADLK)
        return; /* the producer freeing its own g: refuse rather than crash */
    gen_destroy(g);
}

/* tern_gen_free for a caller that must not wait (a task's on_exit): closes
 * g as tern_gen_close does, but a producer still running is left to
 * finish, which then frees g. The caller owns g and nobody else uses it. */
static void gen_free_nowait(tern_gen *g)
{
    tern__waiter *post = NULL;
    tern_task *t = NULL;
    TERN__LOCK(&g->q);
    g->closed = 1;
    if (!g->started)
        g->started = g->done = 1; /* never ran: nothing to clean up */
    int done = g->done;
    if (!done) {
        g->orphan = 1;
        claim_all(&g->yieldq, &post, -ECANCELED);
        t = g->task ? tern_task_ref(g->task) : NULL;
    }
    TERN__UNLOCK(&g->q);
    /* not done: g may be gone from here on */
    tern__wake_post_all(post);
    if (t) {
        tern_task_cancel(t);
        tern_task_release(t);
    }
    if (done)
        gen_destroy(g);
}

/* ---- producer side ----------------------------------------------------------------- */

int tern_gen_yield(tern_gen *g, void *value)
{
    if (!g)
        return -EINVAL;
    tern_task *me = tern__task_self();
    tern__waiter *post = NULL, *c;
    TERN__LOCK(&g->q);
    if (!me || g->self != me) {
        TERN__UNLOCK(&g->q);
        return -EINVAL;
    }
    /* a cancelled producer hands nothing over: this is its suspension point */
    if (g->closed || tern__cancelled()) {
        TERN__UNLOCK(&g->q);
        return -ECANCELED;
    }
    if ((c = tern__wq_claim(&g->q))) {
        *(void **)c->elem = value;
        tern__waiter_defer(&post, c, 1);
    } else {
        g->value = value;
        g->full = 1;
    }
    /* another consumer already waiting has asked too */
    g->asked = tern__wq_peek(&g->q) != NULL;
    if (g->asked) {
        TERN__UNLOCK(&g->q);
        tern__wake_post_all(post);
        return 0;
    }
    tern__wake k;
    tern__waiter w = {.wake = &k};
    tern__wake_init(&k);
    tern__wq_push(&g->yieldq, &w);
    TERN__UNLOCK(&g->q);
    tern__wake_post_all(post);
    tern__wait_note(TERN__W_GEN, (uintptr_t)g);
    int r = tern__wake_wait(&k, 0, 0);
    if (r < 0) {
        TERN__LOCK(&g->q);
        tern__wq_unlink(&g->yieldq, &w);
        TERN__UNLOCK(&g->q);
        return r;
    }
    return w.result;
}

/* ---- stages ------------------------------------------------------------------------ */

static int stage_body(tern_gen *g, void *arg)
{
    stage *s = arg;
    void *v;
    int r = 0;
    while (s->kind != TAKE || s->left > 0) {
        r = s->kind == FROM_CHAN ? tern_chan_recv(s->ch, &v)
                                 : tern_gen_next(s->src, &v, 0);
        if (r <= 0)
            break;
        if (s->kind == FILTER && !s->pred(v, s->arg))
            continue;
        if (s->kind == MAP)
            v = s->map(v, s->arg);
        if ((r = tern_gen_yield(g, v)) < 0)
            break;
        s->left--;
    }
    /* the source's cleanup runs as part of ours */
    tern_gen_free(s->src);
    s->src = NULL;
    return r;
}

static void stage_drop(void *arg)
{
    stage *s = arg;
    tern_gen_free(s->src);
    if (s->ch)
        tern_chan_release(s->ch);
    free(s);
}

static int stage_new(tern_gen *src, tern_chan *ch, stage tmpl, tern_gen **out)
{
    stage *s = malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    *s = tmpl;
    s->src = src;
    s->ch = ch;
    tern_runtime *rt = src ? src->rt : tern_runtime_current();
    int r = rt ? gen_make(rt, stage_body, s, stage_drop, out) : -EPERM;
    if (r < 0) {
        free(s);
        return r;
    }
    if (ch)
        tern_chan_ref(ch);
    return 0;
}

int tern_gen_map(tern_gen *src, void *(*fn)(void *v, void *arg), void *arg,
                 tern_gen **out)
{
    if (!src || !fn || !out)
        return -EINVAL;
    return stage_new(src, NULL, (stage){.kind = MAP, .map = fn, .arg = arg}, out);
}

int tern_gen_filter(tern_gen *src, int (*pred)(void *v, void *arg), void *arg,
                    tern_gen **out)
{
    if (!src || !pred || !out)
        return -EINVAL;
    return stage_new(src, NULL, (stage){.kind = FILTER, .pred = pred, .arg = arg}, out);
}

int tern_gen_take(tern_gen *src, uint64_t n, tern_gen **out)
{
    if (!src || !out)
        return -EINVAL;
    return stage_new(src, NULL, (stage){.kind = TAKE, .left = n}, out);
}

static int chan_ok(tern_chan *ch)
{
    return ch && tern__chan_esize(ch) == sizeof(void *);
}

int tern_gen_from_chan(tern_chan *ch, tern_gen **out)
{
    if (!chan_ok(ch) || !out)
        return -EINVAL;
    return stage_new(NULL, ch, (stage){.kind = FROM_CHAN}, out);
}

/* ---- a stream into a channel ------------------------------------------------------- */

typedef struct pump {
    tern_gen *g; /* NULL once the body has freed it */
    tern_chan *ch;
} pump;

/* The pump task's on_exit: the end of the stream, whether the body ran or
 * not (cancelled before it started, or no stack). Must not suspend. */
static void pump_exit(void *arg)
{
    pump *p = arg;
    if (p->g)
        gen_free_nowait(p->g);
    tern_chan_close(p->ch);
    tern_chan_release(p->ch);
    free(p);
}

static void *pump_main(void *arg)
{
    pump *p = arg;
    void *v;
    int r;
    while ((r = tern_gen_next(p->g, &v, 0)) == 1)
        if ((r = tern_chan_send(p->ch, &v)) < 0)
            break; /* -EPIPE: nobody reads any more; close g */
    /* here, where waiting for g's cleanup is allowed; pump_exit does the rest */
    tern_gen_free(p->g);
    p->g = NULL;
    return (void *)(intptr_t)r;
}

int tern_gen_to_chan(tern_gen *g, tern_chan *ch, tern_task **task)
{
    if (!g || !chan_ok(ch))
        return -EINVAL;
    pump *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    p->g = g;
    p->ch = tern_chan_ref(ch);
    int r = tern__spawn_on_exit(g->rt, pump_main, p, pump_exit, task);
    if (r < 0) {
        tern_chan_release(ch);
        free(p);
    }
    return r;
}
