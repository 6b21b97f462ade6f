/*
 * Locks and signals: Mutex, RwLock, Semaphore, Event, Notify, Condition,
 * Barrier, WaitGroup. Every wait follows wait.h's protocol.
 *
 * Rules shared by all of them:
 *  1. A waker decides a grant under the object's spinlock: it claims the
 *     node, updates the object as if the waiter had already acted (handed
 *     the mutex over, counted the reader, took the permits), and only then
 *     drops the lock. A grant is never a "try again" hint, so a newcomer
 *     cannot take what was meant for a waiter.
 *  2. Claimed nodes are posted after the spinlock is dropped (an unpark can
 *     be a syscall), chained through their now unused `next`. Posting is the
 *     last touch of a node.
 *  3. A waiter whose record was abandoned takes the lock, unlinks its node
 *     (a no-op when a waker already dropped it as dead) and undoes what its
 *     presence blocked: a writer or a big request at the head may have been
 *     holding others back.
 *  4. A wait that returns 0 was granted, even if a deadline or cancel raced
 *     it; the task meets the cancel at its next suspension point.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "sync/sync.h"

/* ---- shared helpers --------------------------------------------------------------- */

static void waiter_init(tern__waiter *w, tern__wake *k, uint64_t n)
{
    tern__wake_init(k);
    memset(w, 0, sizeof *w);
    w->wake = k;
    w->n = n;
}

/* Queues w on q (locked by the caller), drops the lock and waits. On failure
 * the lock is held again on return, w possibly still linked: the caller
 * unlinks it and repairs its object. */
static int wait_queued(tern__waitq *q, tern__waiter *w, uint64_t deadline, int nocancel,
                       int kind, const void *obj)
{
    tern__wait_note(kind, (uintptr_t)obj);
    tern__wq_push(q, w);
    TERN__UNLOCK(q);
    int r = tern__wake_wait(w->wake, deadline, nocancel);
    if (r)
        TERN__LOCK(q);
    return r;
}

/* Appends a claimed node to a chain to be posted later (rule 2). */
static void chain_add(tern__waiter ***tail, tern__waiter *w)
{
    w->result = 0;
    w->next = NULL;
    **tail = w;
    *tail = &w->next;
}

static tern__waiter *claim_all(tern__waitq *q)
{
    tern__waiter *head = NULL, **tail = &head, *w;
    while ((w = tern__wq_claim(q)))
        chain_add(&tail, w);
    return head;
}

/* Anyone queued, live or leaving: a leaving waiter still has to take the
 * lock to unlink itself, so the object must not go away under it. */
static int has_waiters(tern__waitq *q)
{
    TERN__LOCK(q);
    int busy = q->head != NULL;
    TERN__UNLOCK(q);
    return busy;
}

/* ---- Mutex -------------------------------------------------------------------------
 *
 * state: M_LOCKED | M_WAITERS. The uncontended paths are one CAS each
 * (0 <-> LOCKED) and never touch the spinlock. M_WAITERS is set and cleared
 * only under the spinlock, and only while LOCKED is set: it sends unlock to
 * the slow path, where the lock passes to the head waiter without the word
 * ever reading unlocked. So the word is 0, LOCKED or LOCKED|WAITERS, and a
 * free mutex has no live waiter.
 */
enum { M_LOCKED = 1u, M_WAITERS = 2u };

void tern_mutex_init(tern_mutex *m_)
{
    tern__mutex *m = tern__mutex_of(m_);
    if (m)
        memset(m_, 0, sizeof *m_);
}

int tern_mutex_destroy(tern_mutex *m_)
{
    tern__mutex *m = tern__mutex_of(m_);
    if (!m)
        return -EINVAL;
    if (atomic_load_explicit(&m->state, TERN__RELAXED) || has_waiters(&m->q))
        return -EBUSY;
    return 0;
}

static int mutex_lock_slow(tern__mutex *m, uint64_t deadline, int nocancel)
{
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, 0);
    TERN__LOCK(&m->q);
    /* A CAS loop, since the fast paths keep moving the word under us. */
    unsigned s = atomic_load_explicit(&m->state, TERN__RELAXED);
    for (;;) {
        if (!(s & M_LOCKED)) {
            if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | M_LOCKED,
                                                      TERN__ACQUIRE, TERN__RELAXED)) {
                TERN__UNLOCK(&m->q);
                return 0;
            }
        } else if ((s & M_WAITERS) ||
                   atomic_compare_exchange_weak_explicit(&m->state, &s, s | M_WAITERS,
                                                         TERN__RELAXED, TERN__RELAXED)) {
            break;
        }
    }
    int r = wait_queued(&m->q, &w, deadline, nocancel, TERN__W_MUTEX, m);
    if (r == 0)
        return 0; /* the unlocker left the word LOCKED for us */
    tern__wq_unlink(&m->q, &w);
    if (!m->q.head)
        atomic_fetch_and_explicit(&m->state, ~M_WAITERS, TERN__RELAXED);
    TERN__UNLOCK(&m->q);
    return r;
}

/* The uncontended lock: one CAS, 0 -> LOCKED. It fails while a hand-off
 * is under way (the word stays LOCKED), so it never barges. */
static int mutex_try(tern__mutex *m)
{
    unsigned exp = 0;
    return atomic_compare_exchange_strong_explicit(&m->state, &exp, M_LOCKED,
                                                   TERN__ACQUIRE, TERN__RELAXED);
}

static int mutex_lock(tern__mutex *m, uint64_t deadline, int nocancel)
{
    return mutex_try(m) ? 0 : mutex_lock_slow(m, deadline, nocancel);
}

int tern_mutex_lock(tern_mutex *m_)
{
    tern__mutex *m = tern__mutex_of(m_);
    return m ? mutex_lock(m, 0, 0) : -EINVAL;
}

int tern_mutex_lock_until(tern_mutex *m_, uint64_t deadline)
{
    tern__mutex *m = tern__mutex_of(m_);
    return m ? mutex_lock(m, deadline, 0) : -EINVAL;
}

int tern_mutex_try_lock(tern_mutex *m_)
{
    tern__mutex *m = tern__mutex_of(m_);
    if (!m)
        return -EINVAL;
    return mutex_try(m) ? 0 : -EAGAIN;
}

/* Unlocks m; the waiter it was handed to, if any, goes to *next for the
 * caller to post once it holds no spinlock (tern_cond_wait holds one). */
static int mutex_release(tern__mutex *m, tern__waiter **next)
{
    *next = NULL;
    unsigned s = M_LOCKED;
    /* release: the critical section before the next owner's acquire CAS */
    if (atomic_compare_exchange_strong_explicit(&m->state, &s, 0, TERN__RELEASE,
                                                TERN__RELAXED))
        return 0;
    if (!(s & M_LOCKED))
        return -EPERM;
    TERN__LOCK(&m->q);
    s = atomic_load_explicit(&m->state, TERN__RELAXED);
    if (!(s & M_LOCKED)) {
        TERN__UNLOCK(&m->q);
        return -EPERM;
    }
    /* The word is LOCKED or LOCKED|WAITERS here, and the fast lock cannot
     * move either (only a second, buggy unlock could), so a store does.
     * Handing over keeps LOCKED: nobody can slip in between. */
    tern__waiter *w = tern__wq_claim(&m->q);
    unsigned ns = !w ? 0 : m->q.head ? M_LOCKED | M_WAITERS : M_LOCKED;
    atomic_store_explicit(&m->state, ns, TERN__RELEASE);
    TERN__UNLOCK(&m->q);
    if (w) {
        w->result = 0;
        w->next = NULL;
    }
    *next = w;
    return 0;
}

int tern_mutex_unlock(tern_mutex *m_)
{
    tern__mutex *m = tern__mutex_of(m_);
    if (!m)
        return -EINVAL;
    tern__waiter *next;
    int r = mutex_release(m, &next);
    tern__wake_post_all(next);
    return r;
}

/* ---- RwLock -------------------------------------------------------------------------
 *
 * readers and writer change only under the spinlock. A newcomer gets in at
 * once only when nothing is queued, so a waiting writer holds back later
 * readers; releases grant from the head in order.
 */

void tern_rwlock_init(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    if (rw)
        memset(rw_, 0, sizeof *rw_);
}

int tern_rwlock_destroy(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    if (!rw)
        return -EINVAL;
    TERN__LOCK(&rw->q);
    int busy = rw->readers || rw->writer || rw->q.head;
    TERN__UNLOCK(&rw->q);
    return busy ? -EBUSY : 0;
}

/* Grants from the head: one writer when no reader is left, or every reader
 * up to the next writer. Returns the chain to post. */
static tern__waiter *rw_grant(tern__rwlock *rw)
{
    tern__waiter *head = NULL, **tail = &head, *w;
    while (!rw->writer && (w = tern__wq_peek(&rw->q))) {
        if (w->n && rw->readers)
            break;
        int ok = tern__waiter_claim(w);
        tern__wq_unlink(&rw->q, w);
        if (!ok)
            continue; /* it gave up between peek and claim */
        if (w->n)
            rw->writer = 1;
        else
            rw->readers++;
        chain_add(&tail, w);
    }
    return head;
}

static int rw_lock(tern__rwlock *rw, int wr, uint64_t deadline, int try)
{
    if (!rw)
        return -EINVAL;
    TERN__LOCK(&rw->q);
    if (!rw->writer && (!wr || !rw->readers) && !tern__wq_peek(&rw->q)) {
        if (wr)
            rw->writer = 1;
        else
            rw->readers++;
        TERN__UNLOCK(&rw->q);
        return 0;
    }
    if (try) {
        TERN__UNLOCK(&rw->q);
        return -EAGAIN;
    }
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, (uint64_t)wr);
    int r = wait_queued(&rw->q, &w, deadline, 0, TERN__W_RWLOCK, rw);
    if (r == 0)
        return 0;
    tern__wq_unlink(&rw->q, &w);
    tern__waiter *granted = rw_grant(rw); /* readers we were holding back */
    TERN__UNLOCK(&rw->q);
    tern__wake_post_all(granted);
    return r;
}

int tern_rwlock_rdlock(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 0, 0, 0);
}

int tern_rwlock_rdlock_until(tern_rwlock *rw_, uint64_t deadline)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 0, deadline, 0);
}

int tern_rwlock_wrlock(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 1, 0, 0);
}

int tern_rwlock_wrlock_until(tern_rwlock *rw_, uint64_t deadline)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 1, deadline, 0);
}

int tern_rwlock_try_rdlock(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 0, 0, 1);
}

int tern_rwlock_try_wrlock(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    return rw_lock(rw, 1, 0, 1);
}

int tern_rwlock_unlock(tern_rwlock *rw_)
{
    tern__rwlock *rw = tern__rwlock_of(rw_);
    if (!rw)
        return -EINVAL;
    TERN__LOCK(&rw->q);
    if (rw->writer) {
        rw->writer = 0;
    } else if (rw->readers) {
        rw->readers--;
    } else {
        TERN__UNLOCK(&rw->q);
        return -EPERM;
    }
    tern__waiter *granted = rw_grant(rw);
    TERN__UNLOCK(&rw->q);
    tern__wake_post_all(granted);
    return 0;
}

/* ---- Semaphore ------------------------------------------------------------------------
 *
 * Strict FIFO: permits go to the head only, so a big request waits for
 * enough of them while smaller ones queue behind it.
 */

void tern_sem_init(tern_sem *s_, uint64_t permits)
{
    tern__sem *s = tern__sem_of(s_);
    if (!s)
        return;
    memset(s_, 0, sizeof *s_);
    s->permits = permits;
}

int tern_sem_destroy(tern_sem *s_)
{
    tern__sem *s = tern__sem_of(s_);
    if (!s)
        return -EINVAL;
    return has_waiters(&s->q) ? -EBUSY : 0;
}

static tern__waiter *sem_grant(tern__sem *s)
{
    tern__waiter *head = NULL, **tail = &head, *w;
    while ((w = tern__wq_peek(&s->q)) && w->n <= s->permits) {
        int ok = tern__waiter_claim(w);
        tern__wq_unlink(&s->q, w);
        if (!ok)
            continue;
        s->permits -= w->n;
        chain_add(&tail, w);
    }
    return head;
}

static int sem_take(tern__sem *s, uint64_t n, uint64_t deadline, int try)
{
    if (!s || !n)
        return -EINVAL;
    TERN__LOCK(&s->q);
    if (s->permits >= n && !tern__wq_peek(&s->q)) {
        s->permits -= n;
        TERN__UNLOCK(&s->q);
        return 0;
    }
    if (try) {
        TERN__UNLOCK(&s->q);
        return -EAGAIN;
    }
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, n);
    int r = wait_queued(&s->q, &w, deadline, 0, TERN__W_SEM, s);
    if (r == 0)
        return 0;
    tern__wq_unlink(&s->q, &w);
    tern__waiter *granted = sem_grant(s); /* smaller requests we blocked */
    TERN__UNLOCK(&s->q);
    tern__wake_post_all(granted);
    return r;
}

int tern_sem_acquire(tern_sem *s_, uint64_t n)
{
    tern__sem *s = tern__sem_of(s_);
    return sem_take(s, n, 0, 0);
}

int tern_sem_acquire_until(tern_sem *s_, uint64_t n, uint64_t deadline)
{
    tern__sem *s = tern__sem_of(s_);
    return sem_take(s, n, deadline, 0);
}

int tern_sem_try_acquire(tern_sem *s_, uint64_t n)
{
    tern__sem *s = tern__sem_of(s_);
    return sem_take(s, n, 0, 1);
}

int tern_sem_release(tern_sem *s_, uint64_t n)
{
    tern__sem *s = tern__sem_of(s_);
    if (!s || !n)
        return -EINVAL;
    TERN__LOCK(&s->q);
    if (s->permits > UINT64_MAX - n) {
        TERN__UNLOCK(&s->q);
        return -EOVERFLOW;
    }
    s->permits += n;
    tern__waiter *granted = sem_grant(s);
    TERN__UNLOCK(&s->q);
    tern__wake_post_all(granted);
    return 0;
}

uint64_t tern_sem_available(tern_sem *s_)
{
    tern__sem *s = tern__sem_of(s_);
    if (!s)
        return 0;
    TERN__LOCK(&s->q);
    uint64_t n = s->permits;
    TERN__UNLOCK(&s->q);
    return n;
}

/* ---- Event ------------------------------------------------------------------------- */

void tern_event_init(tern_event *e_)
{
    tern__event *e = tern__event_of(e_);
    if (e)
        memset(e_, 0, sizeof *e_);
}

int tern_event_destroy(tern_event *e_)
{
    tern__event *e = tern__event_of(e_);
    if (!e)
        return -EINVAL;
    return has_waiters(&e->q) ? -EBUSY : 0;
}

int tern_event_set(tern_event *e_)
{
    tern__event *e = tern__event_of(e_);
    if (!e)
        return -EINVAL;
    TERN__LOCK(&e->q);
    /* release: what the setter wrote before, for waiters that see the flag
     * without queueing */
    atomic_store_explicit(&e->set, 1, TERN__RELEASE);
    tern__waiter *all = claim_all(&e->q);
    TERN__UNLOCK(&e->q);
    tern__wake_post_all(all);
    return 0;
}

int tern_event_clear(tern_event *e_)
{
    tern__event *e = tern__event_of(e_);
    if (!e)
        return -EINVAL;
    /* Waiters already woken by a set stay woken (asyncio). */
    atomic_store_explicit(&e->set, 0, TERN__RELAXED);
    return 0;
}

int tern_event_is_set(tern_event *e_)
{
    tern__event *e = tern__event_of(e_);
    return e && atomic_load_explicit(&e->set, TERN__ACQUIRE);
}

int tern_event_wait(tern_event *e_, uint64_t deadline)
{
    tern__event *e = tern__event_of(e_);
    if (!e)
        return -EINVAL;
    if (atomic_load_explicit(&e->set, TERN__ACQUIRE))
        return 0;
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, 0);
    TERN__LOCK(&e->q);
    /* set stores the flag under this lock, so it is either seen here or
     * finds us queued */
    if (atomic_load_explicit(&e->set, TERN__ACQUIRE)) {
        TERN__UNLOCK(&e->q);
        return 0;
    }
    int r = wait_queued(&e->q, &w, deadline, 0, TERN__W_EVENT, e);
    if (r) {
        tern__wq_unlink(&e->q, &w);
        TERN__UNLOCK(&e->q);
    }
    return r;
}

/* ---- Notify ------------------------------------------------------------------------ */

void tern_notify_init(tern_notify *n_)
{
    tern__notify *n = tern__notify_of(n_);
    if (n)
        memset(n_, 0, sizeof *n_);
}

int tern_notify_destroy(tern_notify *n_)
{
    tern__notify *n = tern__notify_of(n_);
    if (!n)
        return -EINVAL;
    return has_waiters(&n->q) ? -EBUSY : 0;
}

int tern_notify_one(tern_notify *n_)
{
    tern__notify *n = tern__notify_of(n_);
    if (!n)
        return -EINVAL;
    TERN__LOCK(&n->q);
    tern__waiter *w = tern__wq_claim(&n->q);
    if (w) {
        w->result = 0;
        w->next = NULL;
    } else {
        n->permit = 1; /* at most one: notifies do not add up */
    }
    TERN__UNLOCK(&n->q);
    tern__wake_post_all(w);
    return 0;
}

int tern_notify_all(tern_notify *n_)
{
    tern__notify *n = tern__notify_of(n_);
    if (!n)
        return -EINVAL;
    TERN__LOCK(&n->q);
    tern__waiter *all = claim_all(&n->q);
    TERN__UNLOCK(&n->q);
    tern__wake_post_all(all);
    return 0;
}

int tern_notify_wait(tern_notify *n_, uint64_t deadline)
{
    tern__notify *n = tern__notify_of(n_);
    if (!n)
        return -EINVAL;
    TERN__LOCK(&n->q);
    if (n->permit) {
        n->permit = 0;
        TERN__UNLOCK(&n->q);
        return 0;
    }
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, 0);
    int r = wait_queued(&n->q, &w, deadline, 0, TERN__W_NOTIFY, n);
    if (r) {
        /* An abandoned node was never claimed, so no notify is lost: the
         * next notify_one finds the next waiter or stores the permit. */
        tern__wq_unlink(&n->q, &w);
        TERN__UNLOCK(&n->q);
    }
    return r;
}

/* ---- Condition --------------------------------------------------------------------- */

void tern_cond_init(tern_cond *c_)
{
    tern__cond *c = tern__cond_of(c_);
    if (c)
        memset(c_, 0, sizeof *c_);
}

int tern_cond_destroy(tern_cond *c_)
{
    tern__cond *c = tern__cond_of(c_);
    if (!c)
        return -EINVAL;
    return has_waiters(&c->q) ? -EBUSY : 0;
}

int tern_cond_wait(tern_cond *c_, tern_mutex *m_, uint64_t deadline)
{
    tern__cond *c = tern__cond_of(c_);
    tern__mutex *m = tern__mutex_of(m_);
    if (!c || !m)
        return -EINVAL;
    if (!tern__task_self() && tern_loop_current())
        return -EPERM; /* a loop callback: m stays locked, as on entry */
    tern__waiter w, *next;
    tern__wake k;
    waiter_init(&w, &k, 0);
    /* Queued before m is let go, with c's lock held across both: whoever
     * takes m next and signals finds us. Lock order: c's, then m's. */
    TERN__LOCK(&c->q);
    int r = mutex_release(m, &next);
    if (r == 0)
        tern__wq_push(&c->q, &w);
    TERN__UNLOCK(&c->q);
    tern__wake_post_all(next);
    if (r)
        return r;
    tern__wait_note(TERN__W_COND, (uintptr_t)c);
    r = tern__wake_wait(&k, deadline, 0);
    if (r) {
        TERN__LOCK(&c->q);
        tern__wq_unlink(&c->q, &w);
        TERN__UNLOCK(&c->q);
    }
    /* The caller's code after the wait assumes m held, whatever happened:
     * the relock ignores cancellation and deadlines, and so cannot fail. */
    mutex_lock(m, 0, 1);
    return r;
}

int tern_cond_signal(tern_cond *c_)
{
    tern__cond *c = tern__cond_of(c_);
    if (!c)
        return -EINVAL;
    TERN__LOCK(&c->q);
    tern__waiter *w = tern__wq_claim(&c->q);
    if (w) {
        w->result = 0;
        w->next = NULL;
    }
    TERN__UNLOCK(&c->q);
    tern__wake_post_all(w);
    return 0;
}

int tern_cond_broadcast(tern_cond *c_)
{
    tern__cond *c = tern__cond_of(c_);
    if (!c)
        return -EINVAL;
    TERN__LOCK(&c->q);
    tern__waiter *all = claim_all(&c->q);
    TERN__UNLOCK(&c->q);
    tern__wake_post_all(all);
    return 0;
}

/* ---- Barrier --------------------------------------------------------------------------
 *
 * arrived counts the callers of the current round; every one of them but
 * the last is queued. The last one (the leader) resets the count and
 * claims the queue. A waiter that gives up is un-counted when it takes the
 * lock to unlink itself; if the leader came first (its node is no longer
 * linked), the round already counted it and was released: it reports
 * success, as any wait granted before its cancel was seen.
 */

int tern_barrier_init(tern_barrier *b_, unsigned parties)
{
    tern__barrier *b = tern__barrier_of(b_);
    if (!b || !parties)
        return -EINVAL;
    memset(b_, 0, sizeof *b_);
    b->parties = parties;
    return 0;
}

int tern_barrier_destroy(tern_barrier *b_)
{
    tern__barrier *b = tern__barrier_of(b_);
    if (!b)
        return -EINVAL;
    TERN__LOCK(&b->q);
    int busy = b->arrived || b->q.head;
    TERN__UNLOCK(&b->q);
    return busy ? -EBUSY : 0;
}

int tern_barrier_wait(tern_barrier *b_, uint64_t deadline)
{
    tern__barrier *b = tern__barrier_of(b_);
    if (!b || !b->parties)
        return -EINVAL;
    TERN__LOCK(&b->q);
    if (++b->arrived == b->parties) {
        b->arrived = 0;
        b->generation++;
        tern__waiter *all = claim_all(&b->q);
        TERN__UNLOCK(&b->q);
        tern__wake_post_all(all);
        return 1;
    }
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, 0);
    int r = wait_queued(&b->q, &w, deadline, 0, TERN__W_BARRIER, b);
    if (r == 0)
        return 0;
    if (w.linked) {
        tern__wq_unlink(&b->q, &w);
        b->arrived--;
    } else {
        r = 0;
    }
    TERN__UNLOCK(&b->q);
    return r;
}

/* ---- WaitGroup --------------------------------------------------------------------- */

void tern_waitgroup_init(tern_waitgroup *wg_)
{
    tern__waitgroup *wg = tern__waitgroup_of(wg_);
    if (wg)
        memset(wg_, 0, sizeof *wg_);
}

int tern_waitgroup_destroy(tern_waitgroup *wg_)
{
    tern__waitgroup *wg = tern__waitgroup_of(wg_);
    if (!wg)
        return -EINVAL;
    return has_waiters(&wg->q) ? -EBUSY : 0;
}

int tern_waitgroup_add(tern_waitgroup *wg_, int64_t delta)
{
    tern__waitgroup *wg = tern__waitgroup_of(wg_);
    if (!wg)
        return -EINVAL;
    TERN__LOCK(&wg->q);
    int64_t c = wg->count;
    if ((delta < 0 && c + delta < 0) || (delta > 0 && c > INT64_MAX - delta)) {
        TERN__UNLOCK(&wg->q);
        return -EINVAL;
    }
    wg->count = c + delta;
    tern__waiter *all = wg->count == 0 ? claim_all(&wg->q) : NULL;
    TERN__UNLOCK(&wg->q);
    tern__wake_post_all(all);
    return 0;
}

int tern_waitgroup_done(tern_waitgroup *wg)
{
    return tern_waitgroup_add(wg, -1);
}

int tern_waitgroup_wait(tern_waitgroup *wg_, uint64_t deadline)
{
    tern__waitgroup *wg = tern__waitgroup_of(wg_);
    if (!wg)
        return -EINVAL;
    TERN__LOCK(&wg->q);
    if (wg->count == 0) {
        TERN__UNLOCK(&wg->q);
        return 0;
    }
    tern__waiter w;
    tern__wake k;
    waiter_init(&w, &k, 0);
    int r = wait_queued(&wg->q, &w, deadline, 0, TERN__W_WAITGROUP, wg);
    if (r) {
        tern__wq_unlink(&wg->q, &w);
        TERN__UNLOCK(&wg->q);
    }
    return r;
}
