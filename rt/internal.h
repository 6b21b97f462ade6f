/*
 * Internal structures shared by the files of rt/. Never installed.
 *
 * Who owns what (docs/design.md, invariant 1): a loop's wheel, handle FIFO, driver
 * and the tail of its local queue are touched only by the loop's worker
 * thread. Everything other threads may touch is atomic or behind a lock and
 * says so.
 *
 * Task lifetime rules:
 *  1. A task starts with one "scheduler" reference, held until it finishes,
 *     plus one for the spawner when it asked for a tern_task pointer.
 *  2. A task in a run queue is kept alive by the scheduler reference: it
 *     cannot finish before it has run, so queues hold no references.
 *  3. Every other holder (a timer entry, a join slot, a waker) holds its own
 *     reference and drops it when done. The last drop frees the task.
 *  4. A task's stack is taken when it first runs and given back when it
 *     finishes, so spawned-but-not-started tasks cost only their header.
 */
#ifndef TERN_INTERNAL_H
#define TERN_INTERNAL_H

#include <ck_epoch.h>
#include <ck_pr.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "io/driver.h"
#include "rt/fiber.h"
#include "rt/wheel.h"
#include "tern.h"

/* Named orderings, so grep finds every ordering decision. */
#define TERN__RELAXED memory_order_relaxed
#define TERN__ACQUIRE memory_order_acquire
#define TERN__RELEASE memory_order_release
#define TERN__ACQ_REL memory_order_acq_rel
#define TERN__SEQ_CST memory_order_seq_cst

/* Counters written by one thread and read by others: a relaxed load and store
 * is a plain move on x86-64, where an atomic add would be a locked op. */
#define TERN__STAT_INC(w, f)                                                             \
    atomic_store_explicit(&(w)->stats.f,                                                 \
                          atomic_load_explicit(&(w)->stats.f, TERN__RELAXED) + 1,        \
                          TERN__RELAXED)
#define TERN__STAT_ADD(w, f, n)                                                          \
    atomic_store_explicit(&(w)->stats.f,                                                 \
                          atomic_load_explicit(&(w)->stats.f, TERN__RELAXED) + (n),      \
                          TERN__RELAXED)

/* A full fence for the Dekker-style hand-offs (publish, fence, read the
 * other side). TSan does not model atomic_thread_fence; there the fence is a
 * seq_cst read-modify-write of one shared word, which TSan does order. */
#ifdef TERN_TSAN
extern _Atomic unsigned tern__fence_word;
#define TERN__FENCE()                                                                    \
    ((void)atomic_fetch_add_explicit(&tern__fence_word, 0, TERN__SEQ_CST))
#else
#define TERN__FENCE() atomic_thread_fence(TERN__SEQ_CST)
#endif

/* A spinlock for critical sections of a few dozen instructions that never
 * suspend (wait queues, the task registry). Spins politely, then yields the
 * CPU so that a preempted holder can finish. Unlocking is a plain release
 * store, where a mutex's unlock is a locked instruction. */
/* now + delay, saturated: a delay too long to add up means "never", and
 * UINT64_MAX as a deadline is never reached (no timer is even armed). */
static inline uint64_t tern__after(uint64_t now, uint64_t delay)
{
    return delay > UINT64_MAX - now ? UINT64_MAX : now + delay;
}

static inline void tern__spin_lock(_Atomic unsigned *l)
{
    for (unsigned n = 0;; n++) {
        if (!atomic_load_explicit(l, TERN__RELAXED) &&
            !atomic_exchange_explicit(l, 1, TERN__ACQUIRE))
            return;
        if (n < 100)
            ck_pr_stall();
        else
            sched_yield();
    }
}

static inline void tern__spin_unlock(_Atomic unsigned *l)
{
    atomic_store_explicit(l, 0, TERN__RELEASE);
}

#define TERN__LOCAL_QUEUE 256   /* power of two */
#define TERN__EVENT_INTERVAL 61 /* tasks run between two looks at timers/inject */
/* LIFO runs in a row before the queue gets a turn: one turn, as timers wait */
#define TERN__LIFO_STREAK 61
#define TERN__TASK_CACHE 256 /* recycled task headers kept per worker */

/* ---- tasks ---------------------------------------------------------------- */

/* Task state bits (see task.c for the proof sketch). */
enum {
    TERN__TS_SCHEDULED = 1u << 0, /* in a run queue, or about to be pushed */
    TERN__TS_RUNNING = 1u << 1,   /* on a worker, its fiber switched in */
    TERN__TS_NOTIFIED = 1u << 2,  /* woken while running: requeue after switch-out */
    TERN__TS_COMPLETE = 1u << 3,  /* finished; result and status are final */
    TERN__TS_CANCELLED = 1u << 4, /* cancel requested (sticky) */
};

/* TERN__KIND_BLOCKING_MUST: tern's own blocking jobs (file I/O on epoll, name
 * lookups), which a task waits for deaf to cancellation: they run even when
 * cancelled or at shutdown, or the waiter would wait forever. */
enum { TERN__KIND_FIBER, TERN__KIND_BLOCKING, TERN__KIND_BLOCKING_MUST };
/* Why a task's fiber switched back to its worker. */
enum { TERN__SW_YIELD, TERN__SW_PARK, TERN__SW_DONE };

typedef struct tern__sleep tern__sleep;

#if !defined(TERN_TSAN) && !defined(TERN_ASAN)
/* three cache lines: see header_get in task.c */
#define TERN__TASK_SIZE_CHECK 1
#endif
struct tern_task {
    /* First cache line: what a switch and a run touch. */
    _Atomic uint32_t state;
    _Atomic uint32_t refs;
    tern_loop *loop; /* the worker it runs on now; set before each switch-in */
    uint64_t id;
    uint8_t reason; /* SW_*: why the fiber switched out */
    uint8_t started;
    uint8_t yielded;      /* queued by a yield, state left RUNNING (task.c) */
    uint8_t saw_cancel;   /* a suspension point returned -ECANCELED to it */
    uint8_t kind;         /* TERN__KIND_* */
    uint8_t unguarded;    /* its stack has a canary instead of a guard page */
    uint16_t budget;      /* cooperative budget left in this run */
    int status;           /* 0, -ECANCELED, -ENOMEM once complete (fills padding) */
    _Atomic uint16_t gen; /* the header's generation, in its handles (task.c) */
    uint8_t drop_only;    /* on_exit is tern_spawn_owned's drop: run it only when
                             the body never ran */
    tern__fiber fiber;    /* sp and stack still in the first line */
    /* The rest. */
    tern_runtime *rt;
    struct tern_task *next; /* inject list / blocking queue link */
    union {
        struct {
            tern_task_fn fn;
            void *arg;
        };
        /* Once unlinked from the registry the body is done with: the
         * grace period's entry (task.c) reuses its space. */
        ck_epoch_entry_t retire;
    };
    void *result;
    tern_context *ctx;          /* its context variables (context.c) */
    _Atomic uintptr_t joiner;   /* tern_task*, thread waiter | 1, or tern_future* | 2 */
    void (*on_exit)(void *arg); /* tern__spawn_on_exit's (or drop_only), or NULL */
    struct tern__scope *scope;  /* innermost cancel scope it is in, or NULL */
    /* Third line: what the registry, tern_dump and the watchdog read.
     * Links: written by the shard's writer, read under an epoch section
     * (task.c); name and ctx change only under the shard's lock. */
    struct tern_task *reg_prev;
    _Atomic(struct tern_task *) reg_next; /* registry of live tasks */
    const char *file;                     /* spawned at file:line, or NULL */
    _Atomic(char *) name;                 /* tern_task_set_name's copy, or NULL */
    _Atomic uintptr_t wait_obj;           /* what it waits on (TERN__W_* says how) */
    _Atomic uint64_t wait_since;          /* loop time when that wait began */
    uint32_t line;
    _Atomic uint8_t wait_kind; /* TERN__W_* */
    uint16_t shard;            /* its registry shard (task.c) */
};
/* A cancel scope (tern_scope's layout): on the task's stack, linked from
 * the task's innermost one outwards. Only the task itself touches it. */
struct tern__scope {
    struct tern__scope *outer;
    uint64_t deadline; /* 0: none */
    uint8_t shield;
    uint8_t expired;   /* its deadline passed at a suspension point inside */
    uint8_t cancelled; /* tern_scope_cancel */
};

_Static_assert(sizeof(struct tern__scope) <= sizeof(tern_scope) &&
                   _Alignof(struct tern__scope) <= _Alignof(tern_scope),
               "tern_scope is too small for its layout");

/* A handle given to the application carries the header's generation in
 * the pointer's top 16 bits (user addresses fit in 48), never 0; internal
 * pointers have 0 there. The generation changes when the header is
 * recycled, so a handle kept past the task's last reference is recognised
 * instead of reading another task. Headers are never returned to malloc
 * while the runtime lives, so reading a stale handle's generation is safe. */
#define TERN__GEN_SHIFT 48
static inline tern_task *tern__handle(tern_task *t)
{
    return (tern_task *)((uintptr_t)t |
                         (uintptr_t)atomic_load_explicit(&t->gen, TERN__RELAXED)
                             << TERN__GEN_SHIFT);
}
/* The header behind a handle (or an internal pointer), or NULL when the
 * handle is NULL or stale. */
static inline tern_task *tern__task_of(const tern_task *h)
{
    uintptr_t v = (uintptr_t)h;
    unsigned gen = (unsigned)(v >> TERN__GEN_SHIFT);
    tern_task *t = (tern_task *)(v & (((uintptr_t)1 << TERN__GEN_SHIFT) - 1));
    if (gen && t && atomic_load_explicit(&t->gen, TERN__RELAXED) != gen)
        return NULL;
    return t;
}

#ifdef TERN__TASK_SIZE_CHECK
_Static_assert(sizeof(struct tern_task) <= 192, "a task header fits three cache lines");
#endif

/* What a waiting task waits on, for tern_dump (tern__wait_note). */
enum {
    TERN__W_NONE,
    TERN__W_PARK,
    TERN__W_SLEEP,
    TERN__W_JOIN,
    TERN__W_FUTURE,
    TERN__W_CHAN_SEND,
    TERN__W_CHAN_RECV,
    TERN__W_SELECT,
    TERN__W_MUTEX,
    TERN__W_RWLOCK,
    TERN__W_SEM,
    TERN__W_EVENT,
    TERN__W_NOTIFY,
    TERN__W_COND,
    TERN__W_BARRIER,
    TERN__W_WAITGROUP,
    TERN__W_GROUP,
    TERN__W_GEN,
    TERN__W_IO,
    TERN__W_BLOCKING,
    TERN__W_SIGNAL,
    TERN__W_COUNT
};
/* Records what the calling task is about to wait on (obj: an object
 * address, a deadline, a task id, or for TERN__W_IO fd | op << 32) and
 * since when. Owner-written relaxed stores: a few moves, no fence. A no-op
 * outside tasks. */
void tern__wait_note(int kind, uintptr_t obj);

/* The calling task's header (not a handle), or NULL outside a task. */
tern_task *tern__task_self(void);

/* For tests that must wait until a task has reached its wait rather than
 * sleep and hope: the TERN__W_* kind the task is parked in (switched out,
 * neither queued nor running), or -1 while it runs, is queued or is done. */
int tern__task_parked(const tern_task *t);
/* 1 while a joiner (task, thread or future) holds t's join slot. */
int tern__task_has_joiner(const tern_task *t);

/* The join slot (task.c): one joiner at a time, tagged by kind. claim
 * takes the empty slot (1) or finds another joiner there (0); unclaim takes
 * the caller back out (1) unless finish already took it (0). A joiner
 * claims, then reads t's state with seq_cst: see task.c. */
enum { TERN__JOIN_TASK, TERN__JOIN_THREAD, TERN__JOIN_FUTURE };
int tern__join_claim(tern_task *t, void *who, int tag);
int tern__join_unclaim(tern_task *t, void *who, int tag);
/* How a future in the slot hears that its task finished (sync/ registers
 * it before it first puts a future there): done(future, result, status),
 * on the finishing thread, taking over the slot's reference. */
void tern__join_future_hook(void (*done)(void *future, void *result, int status));

/* State transitions made outside the worker loop; each is covered by the
 * proof sketch in task.c, the only file that writes the state word.
 *  job_start: a blocking job (no fiber) taken by a pool thread, or never
 *    queued: SCHEDULED -> RUNNING; returns the state before (CANCELLED).
 *  freeze: shutdown claims an idle parked task (idle -> RUNNING) so that a
 *    later wake only sets NOTIFIED; 1 when claimed.
 *  give_up: a task that will never finish (an abandoned job, a frozen
 *    task) completes with -ECANCELED and its joiner is told; no count, no
 *    reference dropped.
 *  cancel_seen(_set): whether a suspension point handed the task its
 *    -ECANCELED; a wait whose grant won the race puts the mark back. */
uint32_t tern__task_job_start(tern_task *t);
int tern__task_freeze(tern_task *t);
void tern__task_give_up(tern_task *t);
uint8_t tern__cancel_seen(const tern_task *t);
void tern__cancel_seen_set(tern_task *t, uint8_t seen);

/* A thread outside the runtime blocked on something (join, block_on). */
typedef struct tern__thread_waiter {
    _Atomic uint32_t done;
} tern__thread_waiter;

void tern__thread_wait(tern__thread_waiter *tw);
void tern__thread_wake(tern__thread_waiter *tw);

/* ---- handles ---------------------------------------------------------------- */

/* RUNNING: a repeating (call_every) handle's callback is running */
enum { TERN__HS_PENDING, TERN__HS_DONE, TERN__HS_CANCELLED, TERN__HS_RUNNING };

struct tern_handle {
    _Atomic uint32_t refs;  /* the loop's (until run or reaped) + the caller's */
    _Atomic uint32_t state; /* HS_*; a repeating one stays PENDING until cancelled */
    uint64_t period;        /* tern_call_every: ns between runs; 0: runs once */
    int policy;             /* tern_call_every: a tern_missed_tick */
    tern_callback_fn cb;
    void *arg;
    tern_context *ctx;        /* current when it was scheduled: it runs in it */
    struct tern_handle *next; /* FIFO / inbox link */
    tern__timer timer;        /* call_later/call_at */
};

/* ---- loops (one per worker) ------------------------------------------------ */

typedef struct tern__stats {
    _Atomic uint64_t tasks_run, steals, stolen_tasks, parks, wakes, inject_pulls,
        lifo_hits, local_hits, budget_yields, handles_run, timers_fired, busy_ns,
        io_submitted, io_completed, stalls, never_ran, direct_switches;
} tern__stats;

/* Poll times are sampled one poll in TERN__POLL_SAMPLE (two clock reads per
 * sampled poll: timing every poll would double yield_many's cost). */
#define TERN__POLL_SAMPLE 64
#define TERN__POLL_HIST 16 /* = TERN_POLL_BUCKETS in tern.h */

struct tern_loop {
    /* Local queue: the owner writes tail, anyone CASes head (Go's runq). */
    _Atomic uint32_t head;
    char pad0[60];
    _Atomic uint32_t tail;
    _Atomic(tern_task *) lifo; /* owner sets; owner or thieves take */
    _Atomic(tern_task *) buf[TERN__LOCAL_QUEUE];

    tern_runtime *rt;
    unsigned index;
    pthread_t thread;
    tern__fiber sched;  /* the worker thread's own context */
    tern_task *current; /* task switched in, or NULL */
    /* A task that switched straight to current and whose switch-out the
     * latter finishes (task.c, switch_out); NULL otherwise. */
    tern_task *handed_from;
    unsigned turn_ran; /* tasks run in this turn of the loop, direct ones too */
    int timing;        /* a sampled poll is being timed: no direct switches */
    unsigned lifo_streak;
    unsigned since_poll; /* tasks run since the driver was last asked for events */
    uint32_t rng;
    unsigned rescue_peer;  /* the worker looked at next (worker.c, rescue) */
    uint64_t rescue_seen;  /* its tasks_run when we last looked */
    _Atomic int searching; /* counted in rt->idle.searching; a notifier sets it
                              while we may be reaping I/O inside park */
    int sleeping;          /* in rt->idle.sleepers; guarded by rt->idle.lock */

    _Atomic uint64_t now; /* loop time: read once per turn, any thread reads */
    tern__wheel wheel;
    _Atomic(tern__sleep *) sleep_reap; /* sleep entries other threads gave up */
    _Atomic uint64_t scheduled;        /* wheel.count as of the last turn, for others */
    tern__driver *driver;
    const char *backend_note;
    _Atomic int parked; /* 1 while in (or entering) the driver wait */

    /* call_soon FIFO (owner only) and the threadsafe inbox (locked). */
    tern_handle *fifo_head, *fifo_tail;
    _Atomic uint64_t fifo_len;
    pthread_mutex_t inbox_lock;
    tern_handle *inbox_head, *inbox_tail;
    _Atomic int inbox_nonempty;
    int closed; /* inbox refuses new handles; guarded by inbox_lock */

    tern__stats stats;
    /* What the worker runs right now, for the watchdog and tern_dump: the
     * task switched in, or the callback being run (0 in the loop itself). */
    _Atomic(tern_task *) busy_task;
    _Atomic uintptr_t busy_cb;
    uint64_t busy_since;     /* when the worker left its last park (busy_ns) */
    uint32_t poll_countdown; /* polls until the next timed one */
    _Atomic uint64_t poll_hist[TERN__POLL_HIST];
    _Atomic uint64_t counts[3]; /* spawned, finished, freed here (task.c) */
    unsigned nfree;             /* recycled task headers (owner only) */
    tern_task *free_tasks[TERN__TASK_CACHE];
    uint64_t id_next, id_end; /* task ids reserved by this worker */
};

/* A batch of recycled task headers on the runtime's global list. */
typedef struct tern__batch {
    struct tern__batch *next;
    tern_task *task[TERN__TASK_CACHE / 2];
} tern__batch;

/* ---- runtime ----------------------------------------------------------------- */

/* Half a local queue plus one: what one overflow moves (queue.c). */
#define TERN__CHUNK (TERN__LOCAL_QUEUE / 2 + 1)
typedef struct tern__chunk {
    struct tern__chunk *next;
    uint32_t head, count; /* task[head..count) not yet taken */
    tern_task *task[TERN__CHUNK];
} tern__chunk;

/* One shard of the registry of live tasks (task.c). A worker's shard is
 * written by that worker alone; the shard for tasks spawned off the workers
 * is written under its lock. */
typedef struct tern__shard {
    /* The writer's epoch record: it defers the reuse of the headers it
     * unlinks (for the foreign shard: any thread's, under rt->epoch_lock). */
    ck_epoch_record_t epoch;
    _Atomic unsigned lock;     /* tern__spin_lock: names, contexts, foreign links */
    _Atomic(tern_task *) head; /* newest first */
    unsigned deferred;         /* headers deferred since the last poll */
    /* Tasks of a worker's shard that finished on another thread, pushed
     * by them (linked by next) for the owner to unlink. */
    _Atomic(tern_task *) away CK_CC_CACHELINE;
} tern__shard;

/* The blocking pool's state: its own reference-counted allocation, which
 * threads running abandoned jobs keep after the runtime is freed
 * (blocking.c). */
typedef struct tern__blocking tern__blocking;

struct tern_runtime {
    tern_config cfg;
    tern_backend backend;     /* the one every worker opens (never AUTO) */
    const char *backend_note; /* why (static string from the probe) */
    unsigned nworkers;
    tern_loop **loops;
    tern__stack_pool *stacks;

    /* Global inject queue, two lists under one lock (queue.c): overflow
     * from local queues, and work from outside the workers. */
    pthread_mutex_t inject_lock;
    struct tern__chunk *over;             /* overflow, newest chunk first */
    tern_task *remote_head, *remote_tail; /* from other threads, FIFO */
    _Atomic uint64_t inject_len;          /* both lists */
    _Atomic uint64_t remote_len;

    /* Idle workers (see worker.c). */
    struct {
        pthread_mutex_t lock;
        unsigned *sleepers;
        _Atomic unsigned nsleepers;
        _Atomic unsigned searching;
    } idle;

    /* Live tasks (the registry, task.c): one shard per worker, for the tasks
     * it spawned, and one for tasks spawned by other threads. */
    tern__shard *shards;
    unsigned nshards;
    ck_epoch_t epoch;                   /* readers: rt->reader; writers: each shard's */
    pthread_mutex_t epoch_lock;         /* the foreign shard's epoch record */
    pthread_mutex_t reader_lock;        /* rt->reader, one walker at a time */
    ck_epoch_record_t *reader;          /* for tern_dump, the watchdog, shutdown */
    _Atomic uint64_t foreign_counts[3]; /* task counts from non-worker threads */
    pthread_mutex_t free_lock;          /* recycled task headers */
    tern__batch *free_batches;
    _Atomic unsigned nbatches;
    struct tern_task *foreign_free; /* headers freed off the workers, by next */
    _Atomic int closing;            /* shutdown began: no new tasks */
    _Atomic int stopping;           /* workers should exit once idle */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond; /* a task finished while closing */

    tern__blocking *blocking;
    struct tern_runtime *next_rt; /* all runtimes (monitor.c) */
    struct tern__watch *watch;    /* the watchdog's view of each worker (monitor.c) */
    _Atomic uint64_t stalls;
    struct tern__fdtab *fdtab; /* epoll's descriptor table (tern__driver_shared_new) */

    /* start-up hand-shake with the workers */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned started;
    int start_error;
    int driver_error; /* the first worker's driver open that failed */
};

/* ---- functions shared between rt/ files ------------------------------------ */

/* The loop of the calling worker thread, or NULL. Never inlined and opaque to
 * the optimiser, so a caller that may have migrated reads it again. */
tern_loop *tern__loop_self(void);
/* Whether environment variable name is "1", read once into *cache (which
 * starts at -1): the switches that turn a mechanism off for a measurement
 * or a test (TERN_NO_HELP, TERN_NO_MULTISHOT). Any thread. */
int tern__env_switch(_Atomic int *cache, const char *name);

/* task.c */
uint64_t tern__unfinished(tern_runtime *rt);
void tern__task_cache_free(tern_runtime *rt);
/* file:line: where it was spawned (NULL, 0 when unknown); set before the
 * task becomes visible in the registry. */
int tern__task_new(tern_runtime *rt, tern_task_fn fn, void *arg, int kind,
                   tern_task **out, int handle, const char *file, int line);
/* tern_runtime_spawn whose task calls on_exit(arg) as it finishes, whether
 * its body ran or not (cancelled before it started, no stack): once, on the
 * finishing thread outside any task (so it must not suspend), before a
 * joiner hears of the end. For cleanup a task's arg needs either way; a done
 * callback on tern_task_future would do too, but would take the join slot
 * from the caller's tern_join. */
int tern__spawn_on_exit(tern_runtime *rt, tern_task_fn fn, void *arg,
                        void (*on_exit)(void *arg), tern_task **out);
void tern__task_unref(tern_task *t);
void tern__task_run(tern_loop *w, tern_task *t);
void tern__task_finish(tern_loop *w, tern_task *t);
void tern__task_wake(tern_task *t, uint32_t extra);
void tern__schedule(tern_runtime *rt, tern_task *t, int lifo);
/* The next local task of the calling worker: the LIFO slot (at most
 * TERN__LIFO_STREAK times in a row), then the queue; NULL when both are
 * empty. Owner only. */
tern_task *tern__next_local(tern_loop *w);
/* interval.c: the due time of the tick after the one due at `due`, taken at
 * now, under policy (a tern_missed_tick); and whether policy is one. */
uint64_t tern__tick_next(uint64_t due, uint64_t now, uint64_t period, int policy);
int tern__tick_policy_ok(int policy);
/* Unlinks the sleep entries of w's wheel that tasks resumed elsewhere gave
 * up. Owner thread. */
void tern__sleep_reap_remote(tern_loop *w);
/* 1 when the calling task was cancelled (and marks that it saw it). */
int tern__cancelled(void);
/* tern_park, optionally deaf to cancellation (waits that must finish). */
int tern__park(uint64_t deadline, int nocancel);
/* tern_yield deaf to cancellation: the calling task goes behind the ready
 * tasks and runs again. Returns -EPERM outside a task, else 0. */
int tern__yield_nocancel(void);

/* queue.c */
void tern__queue_push(tern_loop *w, tern_task *t);
tern_task *tern__queue_pop(tern_loop *w);
unsigned tern__queue_len(const tern_loop *w);
unsigned tern__queue_steal(tern_loop *victim, tern_loop *w);
void tern__inject_push(tern_runtime *rt, tern_task *first, tern_task *last, unsigned n);
tern_task *tern__inject_pull(tern_runtime *rt, tern_loop *w, int remote_first);

/* worker.c */
void *tern__worker_main(void *arg);
void tern__notify_work(tern_runtime *rt);
void tern__loop_wake(tern_loop *w);

/* handle.c */
tern_handle *tern__handle_alloc(tern_callback_fn cb, void *arg); /* one reference */
/* Queues h on loop from any thread (call_soon_threadsafe with a handle made
 * in advance, so the post itself cannot fail for memory). Returns 0 or
 * -ESHUTDOWN (loop closed; h is still the caller's). */
int tern__handle_post(tern_loop *loop, tern_handle *h);
void tern__handles_run(tern_loop *w);
void tern__handles_drain(tern_loop *w);
int tern__handles_pending(tern_loop *w);
void tern__timer_fire(tern__timer *t, void *ctx);
void tern__timer_reap(tern__timer *t, void *ctx);
enum { TERN__TIMER_SLEEP = 1, TERN__TIMER_HANDLE };

/* context.c */
tern_context *tern__context_capture(void); /* a reference to the current one */
tern_context *
tern__context_enter(tern_context *c); /* thread's current <- c; returns old */
void tern__context_leave(tern_context *prev);
void tern__ctxvar_set_hash(tern_ctxvar *v, uint32_t hash); /* tests: force collisions */
/* Calls fn(var, value, arg) for every variable set in c (tern_dump). */
void tern__context_each(const tern_context *c, void (*fn)(tern_ctxvar *, void *, void *),
                        void *arg);

/* task.c: the registry of live tasks. Between tern__registry_enter(rt) and
 * tern__registry_leave(rt) (any thread, one walker at a time; a walk must
 * not suspend) every header reached from a shard's head through reg_next stays a
 * task header: it may finish (skip COMPLETE ones) but is not reused. A
 * walk starts at tern__registry_first(rt, i) (0 <= i < rt->nshards) and
 * continues with tern__registry_next. tern__registry_lock(rt, i) keeps the
 * names and contexts of shard i's tasks in place. */
void tern__registry_enter(tern_runtime *rt);
void tern__registry_leave(tern_runtime *rt);
tern_task *tern__registry_first(tern_runtime *rt, unsigned i);
tern_task *tern__registry_next(const tern_task *t);
void tern__registry_lock(tern_runtime *rt, unsigned i);
void tern__registry_unlock(tern_runtime *rt, unsigned i);
/* Unlinks what other threads finished for w's shard and lets the headers
 * whose grace period is over be reused (w's worker: maintain, before park). */
void tern__registry_tidy(tern_loop *w, int poll);
/* runtime_new / runtime_destroy (with no walker and no worker left). */
void tern__registry_init(tern_runtime *rt);
void tern__registry_fini(tern_runtime *rt);
/* Swaps the running task t's context for c (a reference, taken over);
 * returns the old one for the caller to release. */
tern_context *tern__task_swap_ctx(tern_task *t, tern_context *c);

/* dump.c / monitor.c */
int tern__monitor_add(tern_runtime *rt);     /* runtime_new, once running: 0 or -errno */
void tern__monitor_remove(tern_runtime *rt); /* runtime_free, first thing */
/* Signal subscriptions (sync/signal.c): member[sig] != 0 for each signal of
 * one subscription. take installs tern's handler where the signal has none
 * of tern's yet, keeps the monitor thread running, has it unblock the
 * signals in itself, and from then on calls hook(sig, count) on the
 * monitor thread with what arrived (count >= 1). give undoes one take:
 * the monitor's mask first, then, for a signal's last user, the old
 * disposition. take returns 0 or -errno (-EDEADLK on the monitor thread). */
int tern__signal_take(const unsigned char *member, void (*hook)(int sig, uint64_t count));
void tern__signal_give(const unsigned char *member);
/* 1 for a signal tern may handle: not one the kernel raises for a fault,
 * nor SIGKILL or SIGSTOP (runtime.c). */
int tern__signal_ok(int sig);
int tern__on_monitor(void); /* 1 on the monitor thread (an on_stall callback) */
/* Finds the task that worker w is running if it is still t (the watchdog's
 * suspect) and fills the stall record from it under the registry lock.
 * Returns 1 when found. */
int tern__stall_describe(tern_runtime *rt, tern_task *t, tern_stall *s, char *name,
                         size_t namelen);

/* blocking.c */
int tern__blocking_new(const tern_config *cfg, tern__blocking **out);
/* Queues job t. 0, -EAGAIN (the queue is full; never for MUST jobs),
 * -ESHUTDOWN, or pthread_create's error when no thread could run it. */
int tern__blocking_submit(tern_runtime *rt, tern_task *t);
/* Runs fn(arg) on the current runtime's blocking pool, detached, as a job
 * that is never skipped (TERN__KIND_BLOCKING_MUST) and not bounded by
 * cfg.blocking_queue; then deliver(arg) (may be NULL) tells the waiter.
 * fn must touch nothing but arg's own data: when shutdown abandons the job
 * deliver never runs (the waiter and its runtime may be gone), and the job
 * decides that under the pool lock as it finishes. 0 or
 * -EPERM/-ENOMEM/-ESHUTDOWN/... */
int tern__blocking_must(tern_task_fn fn, void (*deliver)(void *), void *arg);
/* Shutdown: close cancels queued plain jobs; abandon gives up on running
 * jobs and drops queued MUST ones (past the timeout), handing each task to
 * give_up; stop waits for the threads that are not abandoned and lets go
 * of the pool. */
void tern__blocking_close(tern_runtime *rt);
unsigned tern__blocking_abandon(tern_runtime *rt, void (*give_up)(tern_task *, void *),
                                void *arg);
void tern__blocking_stop(tern_runtime *rt);
/* tern_runtime_spawn_blocking with attach(t, ctx) called on the job before
 * it is queued (sync/ attaches a future: tern_spawn_blocking_future, whose
 * declaration sits with the pool's in tern.h). A job that fails to queue
 * is finished with the error. 0 or the error of attach or the queue. */
int tern__blocking_spawn_attached(tern_runtime *rt, tern_task_fn fn, void *arg,
                                  int (*attach)(tern_task *t, void *ctx), void *ctx);
/* 1 when the caller is one of rt's blocking threads. */
int tern__blocking_self(tern_runtime *rt);

#endif
