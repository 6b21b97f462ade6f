/*
 * tern's synchronisation: futures, task groups, locks and channels.
 * Included by tern.h; do not include it on its own.
 *
 * Conventions (on top of tern.h's):
 *  - Every waiting call suspends a task, or blocks a thread outside the
 *    runtime (a "foreign" thread); both may use every object below, and both
 *    may meet on the same object.
 *  - `deadline` is an absolute tern_now() time; 0 means none. A call that
 *    reaches it returns -ETIMEDOUT.
 *  - A task cancelled while it waits returns -ECANCELED and is taken off the
 *    wait list: nothing meant for another waiter is lost. A wait that had
 *    already been granted when the cancel came (a lock handed over, a message
 *    delivered) returns success instead, and the task sees -ECANCELED at its
 *    next suspension point. So a cancelled wait never loses a message, a
 *    permit or a lock.
 *  - Locks and signals are fair: waiters are served first come, first
 *    served, and a newcomer never takes what was handed to a waiter.
 *  - Task groups, lock and signal types are sized but opaque: embed them,
 *    put them on a stack or malloc(sizeof) them, and initialise them with
 *    their _INIT macro or init function before use. Their storage is tern's
 *    alone, touched only through these functions; its size is fixed, so a
 *    later tern can change what is inside without changing the ABI.
 *    destroy is needed only to check that nothing is left waiting.
 */
#ifndef TERN_SYNC_H
#define TERN_SYNC_H

#ifndef TERN_H
#error "include tern.h, not tern_sync.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- futures ---------------------------------------------------------------
 *
 * A tern_future is asyncio's Future made thread-safe: it goes from pending
 * to exactly one outcome (a result value, an error, or cancelled), from any
 * thread, once. It is reference counted: tern_future_new returns one
 * reference, and every holder gives its own back with tern_future_release. */

typedef struct tern_future tern_future;
/* A done callback: runs on the loop that added it, outside any task, so it
 * must not suspend. */
typedef void (*tern_future_cb)(tern_future *f, void *arg);

/* Creates a pending future. Returns 0 and sets *out, or -EINVAL (out NULL),
 * -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_future_new(tern_future **out);

/* Takes another reference (returns f) / gives one back; the last release
 * frees the future. A future released while still pending keeps its
 * callbacks and waiters: whoever completes it must hold a reference.
 * Any thread. Never suspend. */
TERN_API tern_future *tern_future_ref(tern_future *f);
TERN_API void tern_future_release(tern_future *f);

/* Completes f with a result value, or with an error (err < 0; -ECANCELED
 * counts as cancelling it). Wakes every waiter and schedules every done
 * callback on its loop, in the order they were added. Returns 0, -EINVAL
 * (f NULL, err >= 0 or INT_MIN, which is no negated errno), -EALREADY (f was already
 * done: nothing changes). Any thread. Never suspend. */
TERN_API int tern_future_set_result(tern_future *f, void *value);
TERN_API int tern_future_set_error(tern_future *f, int err);

/* Cancels f. For a plain future that completes it as cancelled now. For a
 * task's future (tern_task_future) it cancels the task, and the future
 * completes when the task has finished: cancelled, or with the result the
 * task returned anyway. Returns 0, -EINVAL (NULL) or -EALREADY (done).
 * Any thread. Never suspends. */
TERN_API int tern_future_cancel(tern_future *f);

/* 1 when f is done (any outcome) / was cancelled; 0 otherwise or for NULL. */
TERN_API int tern_future_done(const tern_future *f);
TERN_API int tern_future_cancelled(const tern_future *f);

/* The outcome of a done future: 0 with *value (when value is not NULL) set
 * to the result, or the error it completed with (-ECANCELED when cancelled).
 * -EAGAIN while pending; -EINVAL for NULL. Any thread. Never suspends. */
TERN_API int tern_future_result(const tern_future *f, void **value);

/* Adds a done callback: cb(f, arg) will run on loop (NULL = the caller's
 * loop) once f is done, after the callbacks added before it to the same
 * loop; if f is already done it is scheduled now (call_soon). f is kept
 * alive until cb has run. If the loop has shut down when f completes, cb
 * runs on the completing thread instead. Returns 0, -EINVAL (f or cb NULL,
 * or loop NULL off a worker), -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_future_add_done_callback(tern_future *f, tern_loop *loop,
                                           tern_future_cb cb, void *arg);

/* Removes every pending callback equal to (cb, arg); returns how many were
 * removed (0 when f is already done: they were scheduled), or -EINVAL.
 * Any thread. Never suspends. */
TERN_API int tern_future_remove_done_callback(tern_future *f, tern_future_cb cb,
                                              void *arg);

/* Waits until f is done. Returns 0 (then read the outcome with
 * tern_future_result), -ETIMEDOUT, -ECANCELED (the *caller* was cancelled;
 * f is left alone), -EINVAL (NULL), -ENOMEM. Suspends a task; blocks a
 * foreign thread. */
TERN_API int tern_future_wait(tern_future *f, uint64_t deadline);

/* `await f`: tern_future_wait then tern_future_result. Returns 0 with
 * *value set, f's error, or the wait's error (the two may share a code:
 * check tern_future_done to tell them apart). Suspends; blocks a foreign
 * thread. */
TERN_API int tern_future_await(tern_future *f, void **value, uint64_t deadline);

/* A task's join handle as a future: *out completes with the task's return
 * value when it returns, or with its failure (tern_join's codes:
 * -ECANCELED, -ENOMEM). tern_future_cancel on it cancels the task. The
 * future takes over joining: while the task runs, tern_join on it answers
 * -EBUSY (once it has finished, tern_join returns its result as usual).
 * The caller still gives back its own task reference (tern_task_release or
 * that tern_join) whenever it likes. Returns 0, -EINVAL (NULL
 * argument or stale task handle), -EBUSY (someone already joins the task), -ENOMEM.
 * Any thread. Never suspends. */
TERN_API int tern_task_future(tern_task *task, tern_future **out);

/* ---- combinators (asyncio's gather, wait, wait_for, shield) ------------- */

/* tern_gather flag: wait for all even when some fail (asyncio's
 * return_exceptions=True). */
#define TERN_GATHER_COLLECT 1u

/* Waits until every future in fs[0..n) is done (n == 0: returns 0 at
 * once). Without TERN_GATHER_COLLECT it returns early with the error of the
 * first future that fails (the others keep running, as in asyncio).
 * Returns 0 when all succeeded, the first error seen (with
 * TERN_GATHER_COLLECT: 0 once all are done; read each outcome with
 * tern_future_result), -ETIMEDOUT, or -ECANCELED when the caller is
 * cancelled, in which case every future in fs still pending is cancelled
 * too (asyncio's rule for a cancelled gather). -EINVAL: fs NULL, a NULL
 * entry, unknown flags. -ENOMEM. Suspends; blocks a foreign thread. */
TERN_API int tern_gather(tern_future *const *fs, size_t n, unsigned flags,
                         uint64_t deadline);

/* Waits until at least one of fs[0..n) is done and returns the index of one
 * that is (the lowest done index when several already are), or -ETIMEDOUT,
 * -ECANCELED (the caller was cancelled; the futures are left alone),
 * -EINVAL (n == 0, NULL entries), -ENOMEM. Suspends; blocks a foreign
 * thread. */
TERN_API int tern_wait_any(tern_future *const *fs, size_t n, uint64_t deadline);

/* asyncio.wait_for, with a deadline for its timeout: waits for f until
 * deadline (0: none). When it passes, f is cancelled (for a task's
 * future: the task is cancelled and waited for) and the call returns
 * -ETIMEDOUT, unless f completed with a result meanwhile. Otherwise returns like
 * tern_future_await. If the caller is cancelled, f is cancelled too and the call returns
 * -ECANCELED. Suspends; blocks a foreign thread. */
TERN_API int tern_wait_for(tern_future *f, void **value, uint64_t deadline);

/* asyncio.shield: *out receives a new future that completes with f's
 * outcome. Cancelling *out does not cancel f, so work shared by several
 * awaiters survives one of them giving up. Returns 0, -EINVAL, -ENOMEM.
 * Any thread. Never suspends. */
TERN_API int tern_future_shield(tern_future *f, tern_future **out);

/* ---- task groups (structured concurrency: asyncio.TaskGroup, Trio) --------
 *
 *     tern_group g;
 *     tern_group_init(&g);
 *     tern_group_spawn(&g, fetch, url1);
 *     tern_group_spawn(&g, fetch, url2);
 *     int err = tern_group_wait(&g);   // both done; first failure, or 0
 *
 * A child is an int-returning task body: 0 for success, a negative errno
 * for failure. The first child that fails cancels all its siblings, and
 * the group reports that first error. No child outlives tern_group_wait. */

typedef int (*tern_group_fn)(void *arg);

typedef struct tern_group {
    uint64_t tern__opaque[6];
} tern_group;
#define TERN_GROUP_INIT                                                                  \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

/* Initialises an empty, open group. Any thread. Never suspends. */
TERN_API void tern_group_init(tern_group *g);

/* Spawns fn(arg) as a child task of g on the caller's runtime. Returns 0,
 * -EINVAL (g or fn NULL), -ESHUTDOWN (g is cancelling or was waited for),
 * -EPERM (caller not on a runtime thread), -ENOMEM, or tern_spawn's errors.
 * Any runtime thread, a child of g included. Never suspends. */
TERN_API int tern_group_spawn(tern_group *g, tern_group_fn fn, void *arg);
/* The same, recording file:line as the child's spawn site (tern_dump); the
 * macro makes every tern_group_spawn record its caller's. */
TERN_API int tern_group_spawn_at(tern_group *g, tern_group_fn fn, void *arg,
                                 const char *file, int line);
#define tern_group_spawn(g, fn, arg)                                                     \
    tern_group_spawn_at((g), (fn), (arg), __FILE__, __LINE__)

/* Cancels every child still running and refuses new ones; tern_group_wait
 * will return -ECANCELED unless a child had failed first. Returns 0,
 * -EINVAL, or -EALREADY (already cancelled or waited). Any thread. */
TERN_API int tern_group_cancel(tern_group *g);

/* Waits until every child has finished, then closes the group. Returns 0
 * when all succeeded, the first child failure, or -ECANCELED (the group was
 * cancelled, or the caller was: then the children are cancelled and still
 * waited for, so none outlives the call). -EINVAL: g NULL, or the group was
 * already waited for. Suspends; blocks a foreign thread. Must not be called
 * by a child of g (it would wait for itself: -EDEADLK). */
TERN_API int tern_group_wait(tern_group *g);

/* ---- Mutex ------------------------------------------------------------------ */

typedef struct tern_mutex {
    uint64_t tern__opaque[4];
} tern_mutex;
#define TERN_MUTEX_INIT                                                                  \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

/* Initialises an unlocked mutex. Never suspends. */
TERN_API void tern_mutex_init(tern_mutex *m);
/* Returns 0, or -EBUSY when m is locked or has waiters. */
TERN_API int tern_mutex_destroy(tern_mutex *m);
/* Locks m, waiting in FIFO order. tern_mutex_lock returns 0, -ECANCELED or
 * -EINVAL; tern_mutex_lock_until also -ETIMEDOUT. Suspends; blocks a
 * foreign thread. */
TERN_API int tern_mutex_lock(tern_mutex *m);
TERN_API int tern_mutex_lock_until(tern_mutex *m, uint64_t deadline);
/* Locks m if that needs no wait: 0, -EAGAIN (locked, or a hand-off to a
 * waiter is under way) or -EINVAL. */
TERN_API int tern_mutex_try_lock(tern_mutex *m);
/* Unlocks m, handing it to the first waiter if any. Any thread may unlock
 * (like Go). Returns 0, -EINVAL, or -EPERM (m is not locked). */
TERN_API int tern_mutex_unlock(tern_mutex *m);

/* ---- RwLock (writer-preferring: once a writer waits, new readers queue
 * behind it, so writers never starve; readers queued together are let in
 * together) ------------------------------------------------------------------ */

typedef struct tern_rwlock {
    uint64_t tern__opaque[4];
} tern_rwlock;
#define TERN_RWLOCK_INIT                                                                 \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

TERN_API void tern_rwlock_init(tern_rwlock *rw);
/* Returns 0, or -EBUSY when held or waited on. */
TERN_API int tern_rwlock_destroy(tern_rwlock *rw);
/* Take a shared (rd) or exclusive (wr) hold. Return 0, -ECANCELED,
 * -EINVAL; the _until forms also -ETIMEDOUT. Suspend; block a foreign
 * thread. */
TERN_API int tern_rwlock_rdlock(tern_rwlock *rw);
TERN_API int tern_rwlock_rdlock_until(tern_rwlock *rw, uint64_t deadline);
TERN_API int tern_rwlock_wrlock(tern_rwlock *rw);
TERN_API int tern_rwlock_wrlock_until(tern_rwlock *rw, uint64_t deadline);
/* Without waiting: 0, -EAGAIN (held, or a writer waits) or -EINVAL. */
TERN_API int tern_rwlock_try_rdlock(tern_rwlock *rw);
TERN_API int tern_rwlock_try_wrlock(tern_rwlock *rw);
/* Releases the caller's hold (the writer's, or one reader's). Returns 0,
 * -EINVAL, or -EPERM (not held). Never suspends. */
TERN_API int tern_rwlock_unlock(tern_rwlock *rw);

/* ---- Semaphore -------------------------------------------------------------- */

typedef struct tern_sem {
    uint64_t tern__opaque[4];
} tern_sem;
#define TERN_SEM_INIT(n)                                                                 \
    {                                                                                    \
        {                                                                                \
            0, 0, 0, (n)                                                                 \
        }                                                                                \
    }

TERN_API void tern_sem_init(tern_sem *s, uint64_t permits);
/* Returns 0, or -EBUSY when tasks wait on s. */
TERN_API int tern_sem_destroy(tern_sem *s);
/* Takes n permits (n >= 1), waiting in FIFO order: a large request at the
 * head is not overtaken by smaller ones. Returns 0, -ECANCELED, -EINVAL;
 * the _until form also -ETIMEDOUT. Suspends; blocks a foreign thread. */
TERN_API int tern_sem_acquire(tern_sem *s, uint64_t n);
TERN_API int tern_sem_acquire_until(tern_sem *s, uint64_t n, uint64_t deadline);
/* Takes n permits if nobody waits and enough are free: 0, -EAGAIN or
 * -EINVAL. */
TERN_API int tern_sem_try_acquire(tern_sem *s, uint64_t n);
/* Adds n permits (n >= 1) and serves waiters. Returns 0, -EINVAL,
 * -EOVERFLOW (the count would pass UINT64_MAX: nothing changes). */
TERN_API int tern_sem_release(tern_sem *s, uint64_t n);
/* Permits free right now. */
TERN_API uint64_t tern_sem_available(tern_sem *s);

/* ---- Event (asyncio.Event) ---------------------------------------------------- */

typedef struct tern_event {
    uint64_t tern__opaque[4];
} tern_event;
#define TERN_EVENT_INIT                                                                  \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

TERN_API void tern_event_init(tern_event *e);
TERN_API int tern_event_destroy(tern_event *e); /* 0 or -EBUSY */
/* Sets the flag and wakes every waiter. Returns 0 or -EINVAL. Any thread. */
TERN_API int tern_event_set(tern_event *e);
/* Clears the flag. Returns 0 or -EINVAL. */
TERN_API int tern_event_clear(tern_event *e);
/* 1 when set. */
TERN_API int tern_event_is_set(tern_event *e);
/* Returns 0 at once when set, else waits for the next set. 0, -ETIMEDOUT,
 * -ECANCELED, -EINVAL. Suspends; blocks a foreign thread. */
TERN_API int tern_event_wait(tern_event *e, uint64_t deadline);

/* ---- Notify (Tokio's Notify) ---------------------------------------------------- */

typedef struct tern_notify {
    uint64_t tern__opaque[4];
} tern_notify;
#define TERN_NOTIFY_INIT                                                                 \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

TERN_API void tern_notify_init(tern_notify *n);
TERN_API int tern_notify_destroy(tern_notify *n); /* 0 or -EBUSY */
/* Wakes the longest waiter, or, when none waits, stores one permit that
 * the next tern_notify_wait consumes at once (so a notify that precedes
 * the wait is never lost). Returns 0 or -EINVAL. Any thread. */
TERN_API int tern_notify_one(tern_notify *n);
/* Wakes every current waiter; stores no permit. Returns 0 or -EINVAL. */
TERN_API int tern_notify_all(tern_notify *n);
/* Consumes the permit or waits for a notify. 0, -ETIMEDOUT, -ECANCELED,
 * -EINVAL. Suspends; blocks a foreign thread. */
TERN_API int tern_notify_wait(tern_notify *n, uint64_t deadline);

/* ---- Condition (with a tern_mutex) -------------------------------------------- */

typedef struct tern_cond {
    uint64_t tern__opaque[4];
} tern_cond;
#define TERN_COND_INIT                                                                   \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

TERN_API void tern_cond_init(tern_cond *c);
TERN_API int tern_cond_destroy(tern_cond *c); /* 0 or -EBUSY */
/* Atomically unlocks m (which the caller holds) and waits for a signal;
 * relocks m before returning, on every path, cancellation and timeout
 * included (asyncio's and pthread's rule). Returns 0, -ETIMEDOUT,
 * -ECANCELED, -EINVAL, -EPERM (m is not locked at all: like Go's, a tern
 * mutex has no owner to check). Wake-ups may be spurious:
 * re-check the condition in a loop. Suspends; blocks a foreign thread. */
TERN_API int tern_cond_wait(tern_cond *c, tern_mutex *m, uint64_t deadline);
/* Wakes the longest waiter / every waiter. 0 or -EINVAL. Any thread. */
TERN_API int tern_cond_signal(tern_cond *c);
TERN_API int tern_cond_broadcast(tern_cond *c);

/* ---- Barrier -------------------------------------------------------------------- */

typedef struct tern_barrier {
    uint64_t tern__opaque[6];
} tern_barrier;
#define TERN_BARRIER_INIT(n)                                                             \
    {                                                                                    \
        {                                                                                \
            0, 0, 0, (n)                                                                 \
        }                                                                                \
    }

/* parties >= 1. Returns 0 or -EINVAL. */
TERN_API int tern_barrier_init(tern_barrier *b, unsigned parties);
TERN_API int tern_barrier_destroy(tern_barrier *b); /* 0 or -EBUSY */
/* Waits until `parties` callers have arrived, then releases them all and
 * resets for the next round. Returns 1 to exactly one caller of each round
 * (the leader, Tokio's is_leader), 0 to the others, or -ECANCELED /
 * -ETIMEDOUT (the caller left: it no longer counts as arrived), -EINVAL.
 * Suspends; blocks a foreign thread. */
TERN_API int tern_barrier_wait(tern_barrier *b, uint64_t deadline);

/* ---- WaitGroup (Go's sync.WaitGroup) --------------------------------------------- */

typedef struct tern_waitgroup {
    uint64_t tern__opaque[4];
} tern_waitgroup;
#define TERN_WAITGROUP_INIT                                                              \
    {                                                                                    \
        {                                                                                \
            0                                                                            \
        }                                                                                \
    }

TERN_API void tern_waitgroup_init(tern_waitgroup *wg);
TERN_API int tern_waitgroup_destroy(tern_waitgroup *wg); /* 0 or -EBUSY */
/* Adds delta (may be negative) to the counter; at zero every waiter is
 * released. Returns 0, -EINVAL (NULL, or the counter would go negative or
 * overflow: then nothing changes). Any thread. */
TERN_API int tern_waitgroup_add(tern_waitgroup *wg, int64_t delta);
/* tern_waitgroup_add(wg, -1). */
TERN_API int tern_waitgroup_done(tern_waitgroup *wg);
/* Waits until the counter is zero. 0, -ETIMEDOUT, -ECANCELED, -EINVAL.
 * Suspends; blocks a foreign thread. */
TERN_API int tern_waitgroup_wait(tern_waitgroup *wg, uint64_t deadline);

/* ---- channels ---------------------------------------------------------------------
 *
 * Multi-producer, multi-consumer channels of fixed-size elements (copied in
 * and out). Bounded (send waits while full), unbounded (send never waits),
 * rendezvous (capacity 0: send waits for a receiver, as Go's unbuffered
 * channels) or oneshot (one message, then closed). Closing lets receivers
 * drain what is left, then they see the end of the stream; senders get
 * -EPIPE. Messages are received in the order they were sent by each
 * sender; waiting senders and receivers are served FIFO. */

typedef struct tern_chan tern_chan;

#define TERN_CHAN_UNBOUNDED ((size_t)-1)

/* Creates a channel of elem_size-byte elements (1 .. 65536) holding up to
 * capacity of them (0 = rendezvous, TERN_CHAN_UNBOUNDED). Returns 0 and
 * one reference in *out, or -EINVAL, -ENOMEM. Any thread. */
TERN_API int tern_chan_new(size_t elem_size, size_t capacity, tern_chan **out);
/* A channel for one message: after the first successful send it closes
 * itself (a second send gets -EPIPE; the receiver gets the message, then
 * the end of the stream). Closing it without a send signals "no value". */
TERN_API int tern_chan_new_oneshot(size_t elem_size, tern_chan **out);
/* References: the last release frees the channel and any unreceived
 * messages. Any thread. */
TERN_API tern_chan *tern_chan_ref(tern_chan *ch);
TERN_API void tern_chan_release(tern_chan *ch);

/* Sends a copy of *elem. Returns 0, -EPIPE (closed; the message was not
 * sent), -ETIMEDOUT (send_until), -ECANCELED, -ENOMEM (unbounded growth
 * failed), -EINVAL. Suspends while the channel is full; blocks a foreign
 * thread. */
TERN_API int tern_chan_send(tern_chan *ch, const void *elem);
TERN_API int tern_chan_send_until(tern_chan *ch, const void *elem, uint64_t deadline);
/* Sends only if that needs no wait: 0, -EAGAIN (full), -EPIPE, -ENOMEM,
 * -EINVAL. Never suspends. */
TERN_API int tern_chan_try_send(tern_chan *ch, const void *elem);

/* Receives the oldest message into *elem. Returns 1 (a message), 0 (closed
 * and drained: the end of the stream), -ETIMEDOUT (recv_until),
 * -ECANCELED, -EINVAL. Suspends while empty; blocks a foreign thread. */
TERN_API int tern_chan_recv(tern_chan *ch, void *elem);
TERN_API int tern_chan_recv_until(tern_chan *ch, void *elem, uint64_t deadline);
/* Receives only if that needs no wait: 1, 0 (end of stream), -EAGAIN
 * (empty), -EINVAL. Never suspends. */
TERN_API int tern_chan_try_recv(tern_chan *ch, void *elem);

/* Closes the channel: waiting senders get -EPIPE, waiting receivers the end
 * of the stream once nothing is left. Returns 0, -EINVAL, -EALREADY.
 * Any thread. Never suspends. */
TERN_API int tern_chan_close(tern_chan *ch);

/* Messages buffered now; capacity as created. 0 for NULL. */
TERN_API size_t tern_chan_len(tern_chan *ch);
TERN_API size_t tern_chan_cap(tern_chan *ch);

/* ---- select (Go's select) ---------------------------------------------------------- */

enum { TERN_SELECT_SEND = 1, TERN_SELECT_RECV = 2 };

typedef struct tern_select_case {
    tern_chan *chan; /* NULL: the case never fires (Go's nil channel) */
    int op;          /* TERN_SELECT_SEND or TERN_SELECT_RECV */
    void *elem;      /* what to send, or where to receive */
    int result;      /* out, for the case that fired: send 0 / -EPIPE,
                        recv 1 / 0 (end of stream) */
} tern_select_case;

/* Waits until one of the cases can proceed, performs exactly that one and
 * returns its index (its outcome in cases[i].result). When several are
 * ready at once one is picked at random, so no case starves. Returns the
 * index, -ETIMEDOUT, -ECANCELED (no case was performed), -EINVAL (n == 0
 * or > 64, bad op, elem NULL). Suspends; blocks a foreign thread. */
TERN_API int tern_select(tern_select_case *cases, size_t n, uint64_t deadline);
/* Performs a ready case or returns -EAGAIN (Go's select with default). */
TERN_API int tern_try_select(tern_select_case *cases, size_t n);

/* ---- async generators and streams ------------------------------------------------
 *
 * A generator is a producer task that yields values (void pointers) to a
 * consumer that pulls them: tern_gen_next suspends until the next value,
 * the end or the producer's error, and the producer suspends in
 * tern_gen_yield until the consumer asks for the next value (back-pressure:
 * nothing is buffered). The producer task starts at the first next, in the
 * consumer's context (context variables). Closing the consumer side (or
 * cancelling a consumer waiting in next) cancels the producer at its
 * yield, and its cleanup has run when tern_gen_close returns (asyncio's
 * aclose). One consumer at a time. */

typedef struct tern_gen tern_gen;
/* The producer's body: yields with tern_gen_yield and returns 0 at the end
 * or a negative errno, which the consumer's next then returns. */
typedef int (*tern_gen_fn)(tern_gen *g, void *arg);

/* Creates a generator that will run fn(g, arg). Returns 0, -EINVAL, -ENOMEM,
 * -EPERM (not on a runtime thread: the producer runs on the caller's
 * runtime). A generator holds a task reference: free it before the
 * runtime. */
TERN_API int tern_gen_new(tern_gen_fn fn, void *arg, tern_gen **out);
/* Pulls the next value: 1 with *value set, 0 at the end, the producer's
 * error, or -ETIMEDOUT / -ECANCELED (the consumer's wait; a cancelled
 * consumer also cancels the producer). After the end or an error every
 * further next returns the same. Suspends; blocks a foreign thread. */
TERN_API int tern_gen_next(tern_gen *g, void **value, uint64_t deadline);
/* Producer side: hands value to the consumer and waits until it asks for
 * the next one. Returns 0 (go on), or -ECANCELED when the consumer closed
 * or was cancelled: clean up and return. -EINVAL off the producer. The
 * producer task only. Suspends. */
TERN_API int tern_gen_yield(tern_gen *g, void *value);
/* Closes the consumer side: a producer waiting at yield is cancelled there
 * and waited for, so its cleanup has run; a value it had handed over but
 * nobody took is dropped. Returns 0 or the producer's error (not
 * -ECANCELED), -EDEADLK when called by the producer itself. Idempotent.
 * Suspends; blocks a foreign thread. */
TERN_API int tern_gen_close(tern_gen *g);
/* Closes (if needed) and frees g. Suspends while a producer it closes
 * cleans up, as tern_gen_close; blocks a foreign thread. */
TERN_API void tern_gen_free(tern_gen *g);

/* Pipeline stages, each a generator pulling from src (which it owns and
 * closes and frees with itself): map yields fn(v), filter the v for which
 * pred(v) is non-zero, take the first n values. When a constructor fails
 * the caller still owns src. Runtime threads only, as tern_gen_new. */
TERN_API int tern_gen_map(tern_gen *src, void *(*fn)(void *v, void *arg), void *arg,
                          tern_gen **out);
TERN_API int tern_gen_filter(tern_gen *src, int (*pred)(void *v, void *arg), void *arg,
                             tern_gen **out);
TERN_API int tern_gen_take(tern_gen *src, uint64_t n, tern_gen **out);
/* A channel of void * elements as a stream (ends when the channel is
 * closed and drained; holds a channel reference), and a stream drained
 * into a channel by a task that closes the channel at the end (returns
 * that task through *task, NULL allowed; the task owns and frees g, and
 * returns 0, the stream's error or -EPIPE as an intptr_t; a task whose body
 * never ran, cancelled before it started or without a stack, still closes
 * the channel and frees g, and its join gives -ECANCELED or -ENOMEM).
 * -EINVAL when the channel's elements are not pointer-sized. */
TERN_API int tern_gen_from_chan(tern_chan *ch, tern_gen **out);
TERN_API int tern_gen_to_chan(tern_gen *g, tern_chan *ch, tern_task **task);

/* ---- cancellation tokens (tokio-util's CancellationToken) ---------------------
 *
 * A token is cancelled once, by anyone, and every task or thread waiting
 * on it wakes. A child token is cancelled with its parent (and with the
 * parent's parent...), never the other way round: a server hands each
 * connection a child of its shutdown token, and cancelling the connection
 * leaves the server alone. Tokens are reference-counted and thread-safe. */

typedef struct tern_token tern_token;

/* A new, uncancelled token and one reference to it in *out. Returns 0,
 * -EINVAL, -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_token_new(tern_token **out);
/* A new token cancelled with parent (already cancelled when parent is).
 * The child holds a reference to parent until it is freed. Returns 0,
 * -EINVAL, -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_token_child(tern_token *parent, tern_token **out);
/* Cancels t and, after it, every child it has. Returns 0, -EALREADY
 * (already cancelled), -EINVAL. Any thread. Never suspends. */
TERN_API int tern_token_cancel(tern_token *t);
/* 1 once t is cancelled, 0 before, -EINVAL for NULL. Any thread. */
TERN_API int tern_token_cancelled(const tern_token *t);
/* Waits until t is cancelled. Returns 0 (at once when it already is),
 * -ETIMEDOUT (deadline, 0 = none), -ECANCELED (the waiting task was), or
 * -EINVAL. Suspends; blocks a foreign thread. */
TERN_API int tern_token_wait(tern_token *t, uint64_t deadline);
/* Reference counting: ref returns t; the last release frees it (a child
 * unlinks itself from its parent then). Any thread. NULL is ignored. */
TERN_API tern_token *tern_token_ref(tern_token *t);
TERN_API void tern_token_release(tern_token *t);

/* ---- task trackers (tokio-util's TaskTracker, a join set) --------------------
 *
 *     tern_tracker_spawn(tr, serve_conn, c);      // for each connection
 *     ...                                          // shutdown begins:
 *     uint64_t cancelled;
 *     tern_tracker_shutdown(tr, tern_now() + 5 * 1000000000ull, &cancelled);
 *
 * A tracker counts the tasks spawned into it until each has finished
 * (ran to its end, was cancelled, or never ran); their results are not
 * kept. Thread-safe. */

typedef struct tern_tracker tern_tracker;

/* An empty, open tracker. Returns 0, -EINVAL, -ENOMEM. Any thread. */
TERN_API int tern_tracker_new(tern_tracker **out);
/* Spawns fn(arg) on the caller's runtime as a tracked task (detached: the
 * tracker knows when it ends; nobody joins it). Returns 0, -EINVAL (tr or
 * fn NULL), -ESHUTDOWN (the tracker is closed), -EPERM (not on a runtime
 * thread), -ENOMEM, or tern_spawn's errors. Any runtime thread. Never
 * suspends. */
TERN_API int tern_tracker_spawn(tern_tracker *tr, tern_task_fn fn, void *arg);
/* Refuses new spawns from now on (what is tracked runs on). Returns 0,
 * -EALREADY, -EINVAL. Any thread. */
TERN_API int tern_tracker_close(tern_tracker *tr);
/* Tasks tracked and not yet finished. Any thread. */
TERN_API uint64_t tern_tracker_len(tern_tracker *tr);
/* Cancels every tracked task still running; returns how many it cancelled,
 * or -EINVAL. Any thread. Never suspends. */
TERN_API int64_t tern_tracker_cancel(tern_tracker *tr);
/* Waits until no tracked task is left. Returns 0, -ETIMEDOUT (deadline,
 * 0 = none), -ECANCELED (the waiting task was), -EINVAL. Suspends; blocks
 * a foreign thread. Must not be called by a tracked task (-EDEADLK). */
TERN_API int tern_tracker_wait(tern_tracker *tr, uint64_t deadline);
/* A graceful stop in one call: closes tr, lets the tracked tasks finish
 * until drain_deadline, then cancels the rest and waits for them (each
 * sees -ECANCELED at its next suspension point: a task that never
 * suspends keeps this call waiting). *cancelled (may be NULL) receives how
 * many had to be cancelled. Returns 0 when all finished in time,
 * -ETIMEDOUT when some were cancelled (-ENOMEM when no timer could be
 * armed for drain_deadline: all were cancelled and waited for), -ECANCELED when the
 * caller was (the tracked tasks are cancelled and still waited for, so none outlives the
 * call), -EINVAL, -EDEADLK (called by a tracked task). Suspends; blocks a foreign thread.
 */
TERN_API int tern_tracker_shutdown(tern_tracker *tr, uint64_t drain_deadline,
                                   uint64_t *cancelled);
/* Frees an empty tracker. Returns 0, -EBUSY (tasks still tracked: nothing
 * is freed), -EINVAL. Any thread. */
TERN_API int tern_tracker_free(tern_tracker *tr);

/* ---- signals (asyncio's add_signal_handler, Go's signal.Notify) -------------
 *
 *     int sigs[] = {SIGTERM, SIGINT};
 *     tern_signal *s;
 *     tern_signal_new(sigs, 2, NULL, &s);
 *     int sig = tern_signal_wait(s, 0);      // in a task: suspends until one comes
 *
 * A subscription counts the arrivals of its signals from the moment it is
 * made; several subscriptions to one signal each see every arrival (two
 * arrivals the kernel merges while the signal is pending count once, as
 * POSIX has it). While any subscription (or a runtime's dump_signal) has a
 * signal, tern's handler is its disposition; the last one to let go puts
 * back what the program had. tern's signal thread unblocks the subscribed
 * signals in itself, so they arrive even when the program blocks them in
 * all of its threads; the runtime's SIGPIPE default (ignored) and the
 * dump signal go on working beside subscriptions. */

typedef struct tern_signal tern_signal;

/* Subscribes to the n signals of sigs (repeats allowed). ch (may be NULL),
 * a channel of int, also receives each arrival's signal number (a try
 * send: a full or closed channel misses it, the count kept for
 * tern_signal_wait does not). A signal the program blocks in its threads
 * still arrives (tern's signal thread takes it; a sigwait or signalfd of
 * the program's for it then sees nothing while subscribed): blocking the
 * subscribed signals before the runtime starts, so that only tern's
 * signal thread takes them, is the surest setup. Returns 0 and *out, -EINVAL (out or sigs
 * NULL, n 0, a signal out of range, SIGKILL, SIGSTOP, or one the kernel raises for
 * faults; ch not of int), -ENOMEM, -EAGAIN (the signal thread could not start). Any
 * thread. Never suspends. */
TERN_API int tern_signal_new(const int *sigs, size_t n, tern_chan *ch, tern_signal **out);
/* Takes one arrival: returns its signal number (the lowest of those
 * pending), waiting for one when none is. Several callers on one
 * subscription share its arrivals, each taken once. Returns the number,
 * -ETIMEDOUT (deadline, 0 = none), -ECANCELED, -EINVAL. Suspends; blocks a
 * foreign thread. */
TERN_API int tern_signal_wait(tern_signal *s, uint64_t deadline);
/* Ends the subscription (nobody may be waiting on it); a signal nobody is
 * subscribed to any more gets the program's own disposition back. NULL is
 * ignored. Any thread but tern's monitor thread (an on_stall callback),
 * where it says so on stderr and frees nothing. */
TERN_API void tern_signal_free(tern_signal *s);

#ifdef __cplusplus
}
#endif
#endif /* TERN_SYNC_H */
