/*
 * Cancellation tokens and task trackers: the pieces a graceful shutdown is
 * made of (tokio-util's CancellationToken and TaskTracker).
 *
 * A token's lock (its wait queue's) guards its cancelled flag and its list
 * of children. Cancelling walks the tree one child at a time, holding a
 * reference to the child it is at and no lock while it descends, so a
 * deep tree costs no lock nesting and a child freed meanwhile (its last
 * release unlinks it under the parent's lock) is simply not met.
 *
 * A tracker links a record per tracked task. Its lock guards the list, the
 * count and the waiters (claimed under the lock, posted after, as in
 * chan.c). Who frees a record: the task's end when the spawner had stored
 * the task handle in it by then, the spawner otherwise.
 */
#include <errno.h>
#include <stdlib.h>

#include "rt/fault.h"
#include "sync/sync.h"

struct tern_token {
    tern__waitq q; /* lock: cancelled's transition, the children list */
    _Atomic uint32_t refs;
    _Atomic int cancelled;
    tern_event ev; /* set once, when cancelled */
    tern_token *parent;
    tern_token *child, *next, *prev; /* first child; siblings */
};

static int token_alloc(tern_token **out)
{
    if (!out)
        return -EINVAL;
    tern_token *t = TERN__FAULT_ALLOC(calloc(1, sizeof *t));
    if (!t)
        return -ENOMEM;
    atomic_init(&t->refs, 1);
    tern_event_init(&t->ev);
    *out = t;
    return 0;
}

int tern_token_new(tern_token **out)
{
    return token_alloc(out);
}

int tern_token_child(tern_token *parent, tern_token **out)
{
    if (!parent)
        return -EINVAL;
    tern_token *c;
    int r = token_alloc(&c);
    if (r < 0)
        return r;
    c->parent = tern_token_ref(parent);
    TERN__LOCK(&parent->q);
    int born_cancelled = atomic_load_explicit(&parent->cancelled, TERN__RELAXED);
    if (!born_cancelled) {
        c->next = parent->child;
        if (c->next)
            c->next->prev = c;
        parent->child = c;
    }
    TERN__UNLOCK(&parent->q);
    if (born_cancelled) {
        atomic_store_explicit(&c->cancelled, 1, TERN__RELEASE);
        tern_event_set(&c->ev);
    }
    *out = c;
    return 0;
}

tern_token *tern_token_ref(tern_token *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, TERN__RELAXED);
    return t;
}

/* A reference to t unless its last one is already gone (it is being freed
 * and unlinked). Caller holds t's parent's lock. */
static tern_token *ref_live(tern_token *t)
{
    uint32_t n = atomic_load_explicit(&t->refs, TERN__RELAXED);
    while (n && !atomic_compare_exchange_weak_explicit(&t->refs, &n, n + 1, TERN__RELAXED,
                                                       TERN__RELAXED))
        ;
    return n ? t : NULL;
}

/* The first live child at or after c, referenced. Caller holds the lock. */
static tern_token *live_from(tern_token *c)
{
    while (c && !ref_live(c))
        c = c->next;
    return c;
}

void tern_token_release(tern_token *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, TERN__ACQ_REL) != 1)
        return;
    tern_token *p = t->parent;
    if (p) {
        TERN__LOCK(&p->q);
        /* a child born cancelled was never linked */
        if (t->prev)
            t->prev->next = t->next;
        else if (p->child == t)
            p->child = t->next;
        if (t->next)
            t->next->prev = t->prev;
        TERN__UNLOCK(&p->q);
        tern_token_release(p);
    }
    tern_event_destroy(&t->ev);
    free(t);
}

int tern_token_cancel(tern_token *t)
{
    if (!t)
        return -EINVAL;
    TERN__LOCK(&t->q);
    if (atomic_load_explicit(&t->cancelled, TERN__RELAXED)) {
        TERN__UNLOCK(&t->q);
        return -EALREADY;
    }
    /* release: what the canceller did before, for whoever sees the flag;
     * from here on children are born cancelled instead of linked */
    atomic_store_explicit(&t->cancelled, 1, TERN__RELEASE);
    tern_token *c = live_from(t->child);
    TERN__UNLOCK(&t->q);
    tern_event_set(&t->ev);
    while (c) {
        tern_token_cancel(c); /* -EALREADY when cancelled on its own first */
        TERN__LOCK(&t->q);
        tern_token *n = live_from(c->next); /* c, referenced, is still linked */
        TERN__UNLOCK(&t->q);
        tern_token_release(c);
        c = n;
    }
    return 0;
}

int tern_token_cancelled(const tern_token *t)
{
    if (!t)
        return -EINVAL;
    return atomic_load_explicit(&((tern_token *)t)->cancelled, TERN__ACQUIRE) != 0;
}

int tern_token_wait(tern_token *t, uint64_t deadline)
{
    if (!t)
        return -EINVAL;
    return tern_event_wait(&t->ev, deadline);
}

/* ---- trackers -------------------------------------------------------------------- */

typedef struct tracked {
    struct tracked *next, *prev;
    tern_tracker *tr;
    tern_task_fn fn;
    void *arg;
    tern_task *task; /* once stored */
    uint64_t id;     /* the task's id, once it runs */
    uint64_t gen;    /* tr->cancel_gen when it was linked */
    int stored, finished;
} tracked;

struct tern_tracker {
    tern__waitq q; /* lock: everything below; list: waiters for an empty tracker */
    tracked *head;
    _Atomic uint64_t len;
    uint64_t cancel_gen; /* cancels so far: a spawn under way when one came
                            cancels its task itself */
    uint64_t spawning;   /* spawns under way: they touch tr after their task
                            may have ended, so tr is not idle until they are done */
    int closed;
};

int tern_tracker_new(tern_tracker **out)
{
    if (!out)
        return -EINVAL;
    tern_tracker *tr = TERN__FAULT_ALLOC(calloc(1, sizeof *tr));
    if (!tr)
        return -ENOMEM;
    *out = tr;
    return 0;
}

/* Idle (no task tracked, no spawn under way): the waiters go. Under the lock. */
static void wake_if_idle(tern_tracker *tr, tern__waiter **post)
{
    tern__waiter *w;
    if (atomic_load_explicit(&tr->len, TERN__RELAXED) == 0 && tr->spawning == 0)
        while ((w = tern__wq_claim(&tr->q)))
            tern__waiter_defer(post, w, 0);
}

static void unlink_tracked(tern_tracker *tr, tracked *x, tern__waiter **post)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        tr->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    atomic_store_explicit(&tr->len, atomic_load_explicit(&tr->len, TERN__RELAXED) - 1,
                          TERN__RELAXED);
    wake_if_idle(tr, post);
}

/* The end of a tracked task, whether its body ran or not. */
static void tracked_done(tracked *x)
{
    tern_tracker *tr = x->tr;
    tern__waiter *post = NULL;
    TERN__LOCK(&tr->q);
    unlink_tracked(tr, x, &post);
    int ours = x->stored;
    x->finished = 1;
    TERN__UNLOCK(&tr->q);
    /* the posts are the last touch of tr: a waiter may free it next */
    if (ours) {
        tern_task_release(x->task);
        free(x);
    }
    tern__wake_post_all(post);
}

static void tracked_drop(void *arg)
{
    tracked_done(arg);
}

static void *tracked_body(void *arg)
{
    tracked *x = arg;
    TERN__LOCK(&x->tr->q);
    x->id = tern_task_current_id();
    TERN__UNLOCK(&x->tr->q);
    void *r = x->fn(x->arg);
    tracked_done(x);
    return r;
}

int tern_tracker_spawn(tern_tracker *tr, tern_task_fn fn, void *arg)
{
    if (!tr || !fn)
        return -EINVAL;
    tracked *x = TERN__FAULT_ALLOC(calloc(1, sizeof *x));
    if (!x)
        return -ENOMEM;
    x->tr = tr;
    x->fn = fn;
    x->arg = arg;
    TERN__LOCK(&tr->q);
    if (tr->closed) {
        TERN__UNLOCK(&tr->q);
        free(x);
        return -ESHUTDOWN;
    }
    x->next = tr->head;
    if (x->next)
        x->next->prev = x;
    tr->head = x;
    x->gen = tr->cancel_gen;
    atomic_store_explicit(&tr->len, atomic_load_explicit(&tr->len, TERN__RELAXED) + 1,
                          TERN__RELAXED);
    tr->spawning++;
    TERN__UNLOCK(&tr->q);

    tern_task *h;
    int r = tern_spawn_owned(tracked_body, x, tracked_drop, &h);
    tern__waiter *post = NULL;
    if (r < 0) {
        TERN__LOCK(&tr->q);
        tr->spawning--;
        unlink_tracked(tr, x, &post);
        TERN__UNLOCK(&tr->q);
        free(x);
        tern__wake_post_all(post);
        return r;
    }
    tern_task *cancel = NULL;
    TERN__LOCK(&tr->q);
    int finished = x->finished;
    if (!finished) {
        x->task = h;
        x->stored = 1;
        if (x->gen != tr->cancel_gen)
            cancel = tern_task_ref(h);
    }
    tr->spawning--;
    wake_if_idle(tr, &post); /* our task may have ended already */
    TERN__UNLOCK(&tr->q);
    tern__wake_post_all(post); /* the last touch of tr */
    if (finished) {
        tern_task_release(h);
        free(x);
    }
    if (cancel) {
        tern_task_cancel(cancel);
        tern_task_release(cancel);
    }
    return 0;
}

int tern_tracker_close(tern_tracker *tr)
{
    if (!tr)
        return -EINVAL;
    TERN__LOCK(&tr->q);
    int was = tr->closed;
    tr->closed = 1;
    TERN__UNLOCK(&tr->q);
    return was ? -EALREADY : 0;
}

uint64_t tern_tracker_len(tern_tracker *tr)
{
    return tr ? atomic_load_explicit(&tr->len, TERN__RELAXED) : 0;
}

int64_t tern_tracker_cancel(tern_tracker *tr)
{
    if (!tr)
        return -EINVAL;
    int64_t n = 0;
    TERN__LOCK(&tr->q);
    tr->cancel_gen++;
    for (tracked *x = tr->head; x; x = x->next) {
        /* a task cancel takes no lock of ours and never waits */
        if (x->stored && tern_task_cancel(x->task) == 0)
            n++;
        else if (!x->stored)
            n++; /* its spawner cancels it (cancel_gen) */
    }
    TERN__UNLOCK(&tr->q);
    return n;
}

/* Waits for an empty tracker; nocancel for the wait after a cancel, which
 * must see every task out. Caller checked tr. */
static int tracker_wait(tern_tracker *tr, uint64_t deadline, int nocancel)
{
    uint64_t me = tern_task_current_id();
    TERN__LOCK(&tr->q);
    if (atomic_load_explicit(&tr->len, TERN__RELAXED) == 0 && tr->spawning == 0) {
        TERN__UNLOCK(&tr->q);
        return 0;
    }
    for (tracked *x = tr->head; me && x; x = x->next) {
        if (x->id == me) {
            TERN__UNLOCK(&tr->q);
            return -EDEADLK;
        }
    }
    tern__wake k;
    tern__waiter w = {.wake = &k};
    tern__wake_init(&k);
    tern__wq_push(&tr->q, &w);
    TERN__UNLOCK(&tr->q);
    tern__wait_note(TERN__W_GROUP, (uintptr_t)tr);
    int r = tern__wake_wait(&k, deadline, nocancel);
    if (r < 0) {
        TERN__LOCK(&tr->q);
        tern__wq_unlink(&tr->q, &w);
        TERN__UNLOCK(&tr->q);
    }
    return r;
}

int tern_tracker_wait(tern_tracker *tr, uint64_t deadline)
{
    if (!tr)
        return -EINVAL;
    return tracker_wait(tr, deadline, 0);
}

int tern_tracker_shutdown(tern_tracker *tr, uint64_t drain_deadline, uint64_t *cancelled)
{
    if (!tr)
        return -EINVAL;
    tern_tracker_close(tr);
    int r = tracker_wait(tr, drain_deadline, 0);
    if (cancelled)
        *cancelled = 0;
    if (r == 0 || r == -EDEADLK)
        return r;
    int64_t n = tern_tracker_cancel(tr);
    if (cancelled)
        *cancelled = (uint64_t)n;
    tracker_wait(tr, 0, 1);
    return r; /* -ETIMEDOUT, -ECANCELED, or what the drain's wait failed with */
}

int tern_tracker_free(tern_tracker *tr)
{
    if (!tr)
        return -EINVAL;
    TERN__LOCK(&tr->q);
    int busy =
        atomic_load_explicit(&tr->len, TERN__RELAXED) != 0 || tr->spawning || tr->q.head;
    TERN__UNLOCK(&tr->q);
    if (busy)
        return -EBUSY;
    free(tr);
    return 0;
}
