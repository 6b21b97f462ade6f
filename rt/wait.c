/*
 * Wait queues and wake records: see wait.h for the protocol.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rt/wait.h"

void tern__wq_push(tern__waitq *q, tern__waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->linked = 1;
}

void tern__wq_unlink(tern__waitq *q, tern__waiter *w)
{
    if (!w->linked)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->linked = 0;
}

int tern__waiter_claim(tern__waiter *w)
{
    uint32_t exp = TERN__WAKE_WAITING;
    /* acquire: what the waiter wrote into its node before queueing it is
     * ours to read (a message to take, a count of permits); on failure
     * too, so that whoever frees memory the waiter abandoned (a lookup on
     * the blocking pool) sees the waiter's last touches first */
    return atomic_compare_exchange_strong_explicit(
        &w->wake->state, &exp, TERN__WAKE_CLAIMED, TERN__ACQUIRE, TERN__ACQUIRE);
}

tern__waiter *tern__wq_claim(tern__waitq *q)
{
    tern__waiter *w;
    while ((w = q->head)) {
        tern__wq_unlink(q, w);
        if (tern__waiter_claim(w))
            return w;
    }
    return NULL;
}

tern__waiter *tern__wq_peek(tern__waitq *q)
{
    tern__waiter *w;
    while ((w = q->head)) {
        if (atomic_load_explicit(&w->wake->state, TERN__RELAXED) == TERN__WAKE_WAITING)
            return w;
        tern__wq_unlink(q, w); /* its owner gave up, or another node won */
    }
    return NULL;
}

size_t tern__wq_count(const tern__waitq *q)
{
    size_t n = 0;
    for (tern__waiter *w = q->head; w; w = w->next)
        n += atomic_load_explicit(&w->wake->state, TERN__RELAXED) == TERN__WAKE_WAITING;
    return n;
}

size_t tern__wq_waiting(tern__waitq *q)
{
    TERN__LOCK(q);
    size_t n = tern__wq_count(q);
    TERN__UNLOCK(q);
    return n;
}

void tern__wake_init(tern__wake *k)
{
    k->task = tern__task_self();
    atomic_init(&k->state, TERN__WAKE_WAITING);
    atomic_init(&k->fired, -1);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    /* The waiter may already be gone; a futex wake on a dead address
     * touches no memory. */
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void tern__wake_post(tern__waiter *w)
{
    tern__wake *k = w->wake;
    atomic_store_explicit(&k->fired, w->index, TERN__RELAXED);
    tern_task *t = k->task;
    if (!t) {
        tern__wake_done(k);
        return;
    }
    /* A claimed record's task cannot leave its wait before DONE, and while
     * it reads CLAIMED it yields instead of parking (tern__wake_wait): so
     * it can be woken first and DONE be our last touch of both, with no
     * reference held around the wake (two locked instructions less on
     * every hand-off through a channel, lock or generator). */
    tern__task_wake(t, 0);
    /* release: the grant (a message copied, a lock handed) before DONE */
    atomic_store_explicit(&k->state, TERN__WAKE_DONE, TERN__RELEASE);
}

void tern__wake_post_all(tern__waiter *list)
{
    while (list) {
        tern__waiter *next = list->next; /* read before the waiter may go */
        tern__wake_post(list);
        list = next;
    }
}

void tern__wake_done(tern__wake *k)
{
    tern_task *t = k->task;
    if (!t) {
        atomic_store_explicit(&k->state, TERN__WAKE_DONE, TERN__RELEASE);
        futex_wake_all(&k->state);
        return;
    }
    tern_task_ref(t);
    /* release: the grant (a message copied, a lock handed) before DONE */
    atomic_store_explicit(&k->state, TERN__WAKE_DONE, TERN__RELEASE);
    tern_unpark(t);
    tern_task_release(t);
}

void tern__wake_count(tern__wake *k, int err_index)
{
    tern_task *t = k->task;
    if (err_index >= 0) {
        int exp = -1;
        atomic_compare_exchange_strong_explicit(&k->fired, &exp, err_index, TERN__RELAXED,
                                                TERN__RELAXED);
    }
    if (!t) {
        atomic_fetch_add_explicit(&k->state, 1, TERN__RELEASE);
        futex_wake_all(&k->state);
        return;
    }
    tern_task_ref(t);
    atomic_fetch_add_explicit(&k->state, 1, TERN__RELEASE);
    tern_unpark(t);
    tern_task_release(t);
}

int tern__wake_block(tern__wake *k, uint32_t seen, uint64_t deadline, int nocancel)
{
    if (k->task)
        return tern__park(deadline, nocancel);
    if (tern__loop_self())
        return -EPERM; /* a loop callback: blocking would stall its loop for ever */
    struct timespec ts, *tp = NULL;
    if (deadline) {
        if (tern_now() >= deadline)
            return -ETIMEDOUT;
        ts.tv_sec = (time_t)(deadline / 1000000000u);
        ts.tv_nsec = (long)(deadline % 1000000000u);
        tp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, tern_now's
     * clock. A wake-up with the word unchanged is simply another loop. */
    if (syscall(SYS_futex, &k->state, FUTEX_WAIT_BITSET_PRIVATE, seen, tp, NULL,
                FUTEX_BITSET_MATCH_ANY) < 0 &&
        errno == ETIMEDOUT)
        return -ETIMEDOUT;
    return 0;
}

int tern__wake_wait(tern__wake *k, uint64_t deadline, int nocancel)
{
    /* A park that returned -ECANCELED marks the task as having seen its
     * cancel; if the grant then wins the race this wait reports success,
     * and the mark must not survive it (tern_join would call a task that
     * never saw -ECANCELED cancelled). */
    uint8_t saw = k->task ? tern__cancel_seen(k->task) : 0;
    for (;;) {
        uint32_t s = atomic_load_explicit(&k->state, TERN__ACQUIRE);
        if (s == TERN__WAKE_DONE)
            return 0;
        if (s != TERN__WAKE_WAITING) {
            /* Claimed: the waker is mid-grant and will post DONE. A task
             * may have had its wake already (tern__wake_post wakes before
             * DONE), so it must not park: it yields until DONE, which is a
             * few instructions away unless the waker's thread was
             * preempted right there. */
            if (!k->task || tern__yield_nocancel() < 0)
                tern__wake_block(k, s, 0, 1);
            continue;
        }
        int r = tern__wake_block(k, s, deadline, nocancel);
        if (r == 0)
            continue;
        uint32_t exp = TERN__WAKE_WAITING;
        if (atomic_compare_exchange_strong_explicit(&k->state, &exp, TERN__WAKE_ABANDONED,
                                                    TERN__ACQ_REL, TERN__ACQUIRE))
            return r;
        /* a waker won the race: the grant is ours, take it */
        if (k->task)
            tern__cancel_seen_set(k->task, saw);
    }
}

int tern__wake_wait_count(tern__wake *k, uint32_t target, uint64_t deadline,
                          int (*stop)(tern__wake *k, void *arg), void *arg)
{
    for (;;) {
        uint32_t s = atomic_load_explicit(&k->state, TERN__ACQUIRE);
        if (s >= target || (stop && stop(k, arg)))
            return 0;
        int r = tern__wake_block(k, s, deadline, 0);
        if (r < 0)
            return r;
    }
}

void tern__wake_drain(tern__wake *k, uint32_t target)
{
    uint32_t s;
    while ((s = atomic_load_explicit(&k->state, TERN__ACQUIRE)) < target)
        tern__wake_block(k, s, 0, 1);
}
