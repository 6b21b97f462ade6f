/*
 * Waiting, the one mechanism under every object of sync/ and every I/O
 * operation of io/: part of the ground floor, so both build on it.
 *
 * A waiter is a node on the waiting caller's stack, linked into an
 * object's FIFO (tern__waitq) under the object's spinlock. Each node points
 * to a wake record, also on the caller's stack, whose state word settles
 * who acts:
 *
 *   WAITING -> CLAIMED -> DONE   a waker took the node (under the object's
 *                                lock), did the operation for it (handed a
 *                                lock, copied a message), then posted DONE;
 *   WAITING -> ABANDONED         the waiter gave up (deadline, cancel) first.
 *
 * Exactly one of the two CASes out of WAITING wins, so a grant is never
 * lost: a waiter that lost the race waits for DONE and reports success.
 * Several nodes may share one record (select, wait_any): the first claim
 * wins and the other nodes are skipped by their wakers.
 *
 * In counting mode (gather) nodes are never claimed: each firing adds one
 * to the state word instead, and the waiter knows how many firings to
 * expect before its record may go away.
 *
 * Lifetime: the waiter's stack frame ends as soon as it sees DONE (or its
 * count), so posting is the waker's last touch of the record. A claimed
 * node's task is woken before DONE is posted (its waiter yields while it
 * reads CLAIMED, so that wake is never lost), which makes DONE the last
 * touch of the task too; a record posted without a claim (an I/O
 * operation, a count) goes to DONE first, and its waker holds a task
 * reference for the unpark that follows.
 */
#ifndef TERN_WAIT_H
#define TERN_WAIT_H

#include <ck_pr.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

#include "rt/internal.h"

enum { TERN__WAKE_WAITING, TERN__WAKE_CLAIMED, TERN__WAKE_DONE, TERN__WAKE_ABANDONED };

typedef struct tern__wake {
    tern_task *task;        /* NULL: a foreign thread, woken by futex */
    _Atomic uint32_t state; /* W_*, or the count of firings */
    _Atomic int fired;      /* the node that fired it (its index), or -1 */
} tern__wake;

struct tern__waiter {
    struct tern__waiter *next, *prev;
    tern__wake *wake;
    void *elem; /* channels: the message to send or the slot to fill */
    uint64_t n; /* semaphores: permits asked; rwlocks: 1 for a writer */
    int result; /* what the waker reports (e.g. -EPIPE, 0 = end) */
    int index;  /* which case (select, wait_any, gather) */
    int linked; /* in a queue; guarded by that queue's lock */
};
typedef struct tern__waiter tern__waiter;

/* A FIFO of waiters behind a spinlock; all zero is an empty queue. */
typedef struct tern__waitq {
    _Atomic unsigned lock;
    tern__waiter *head, *tail;
} tern__waitq;

/* ---- the spinlock of a wait queue (tern__spin_lock, internal.h) ---------- */
#define TERN__LOCK(q) tern__spin_lock(&(q)->lock)
#define TERN__UNLOCK(q) tern__spin_unlock(&(q)->lock)

/* ---- queues (callers hold the lock) ---------------------------------------- */

void tern__wq_push(tern__waitq *q, tern__waiter *w);
void tern__wq_unlink(tern__waitq *q, tern__waiter *w); /* no-op if not linked */
/* Pops nodes from the head until one is claimed (WAITING -> CLAIMED);
 * abandoned and lost-race nodes are dropped on the way. Returns the
 * claimed node, unlinked, or NULL. The caller completes it with
 * tern__wake_post after filling in its result. */
tern__waiter *tern__wq_claim(tern__waitq *q);
/* The head node if it is still WAITING (dropping dead ones), unclaimed: for
 * objects that must look at a waiter's request before granting it. */
tern__waiter *tern__wq_peek(tern__waitq *q);
/* Claims w itself (after tern__wq_peek). 1 on success. */
int tern__waiter_claim(tern__waiter *w);

/* Waiters on q still WAITING: tern__wq_count with q's lock held by the
 * caller, tern__wq_waiting taking it. For tests that must know a caller has
 * queued before they act, instead of sleeping and hoping. */
size_t tern__wq_count(const tern__waitq *q);
size_t tern__wq_waiting(tern__waitq *q);

/* ---- waiting and waking ------------------------------------------------------ */

/* Prepares a record for the calling task or thread. */
void tern__wake_init(tern__wake *k);
/* Posts DONE for a claimed node (w->wake's index <- w->index). */
void tern__wake_post(tern__waiter *w);
/* Wakers claim under an object's lock and post after dropping it: a claimed
 * node (now unlinked) is chained through its next field with its result,
 * and the whole chain posted at once. */
static inline void tern__waiter_defer(tern__waiter **list, tern__waiter *w, int result)
{
    w->result = result;
    w->next = *list;
    *list = w;
}
void tern__wake_post_all(tern__waiter *list);
/* Posts DONE on a record directly (a record without nodes: an I/O
 * operation, a blocking job). Last touch of k. */
void tern__wake_done(tern__wake *k);
/* Counting mode: one firing. err_index >= 0 records the first failure. */
void tern__wake_count(tern__wake *k, int err_index);

/* Waits for DONE. Returns 0 when a waker claimed us (even if a deadline or
 * cancel came meanwhile), or -ETIMEDOUT / -ECANCELED / -ENOMEM after the
 * record was ABANDONED: then the caller must unlink its nodes (under their
 * locks) before returning. nocancel ignores cancellation (for waits that
 * must finish: relocking a condition's mutex, leaving a task group). */
int tern__wake_wait(tern__wake *k, uint64_t deadline, int nocancel);

/* Counting mode: waits until the state word reaches target, or
 * stop(arg) says to stop, or a deadline or cancel. Returns 0 or the error. */
int tern__wake_wait_count(tern__wake *k, uint32_t target, uint64_t deadline,
                          int (*stop)(tern__wake *k, void *arg), void *arg);
/* Counting mode: waits, ignoring cancel and deadline, for target firings
 * (those that detached nodes the caller could not unlink). */
void tern__wake_drain(tern__wake *k, uint32_t target);

/* Parks the calling task (t) or blocks the thread until the state word of
 * k changes from seen. nocancel as above. Returns 0, -ETIMEDOUT,
 * -ECANCELED, -ENOMEM. */
int tern__wake_block(tern__wake *k, uint32_t seen, uint64_t deadline, int nocancel);

#endif
