/*
 * tern: a multi-threaded, work-stealing async runtime for C.
 *
 * This is the umbrella header a user includes. Conventions used by every
 * function below:
 *
 *  - The default, where an entry says nothing else: any thread may call the
 *    function (a task, a worker's callback, a thread of the caller's own),
 *    and it never suspends. Entries name the threads they are limited to,
 *    and every call that may suspend says "Suspends".
 *  - Functions that can fail return 0 (or a count) on success and a negative
 *    errno on failure. They never set errno, and no function that can suspend
 *    reads errno after the suspension (a task may resume on another thread).
 *  - "Suspends" means the calling task gives its worker thread to other tasks
 *    until the call can finish. Called from a thread that is not running a
 *    tern task, a suspending call blocks that thread instead, where the entry
 *    says so, or returns -EPERM where it does not. A loop callback
 *    (call_soon / call_later / call_at, a future's done callback) runs on a
 *    worker outside any task and must never block it: there, a call that
 *    would have to wait returns -EPERM and leaves nothing behind, while one
 *    that can finish at once (an uncontended lock, a set event) does.
 *  - Runtime conditions map onto errno values: -ECANCELED (the task was
 *    cancelled; cancellation is sticky: every later suspension point of that
 *    task returns it too), -ETIMEDOUT (a deadline passed), -ESHUTDOWN (the
 *    runtime is going down). tern_strerror() names them all.
 *  - Times are nanoseconds of CLOCK_MONOTONIC (tern_now()). A call that may
 *    wait takes an absolute `uint64_t deadline` as its last argument (0 =
 *    none; reaching it gives -ETIMEDOUT). Where a short form without one
 *    exists (locks, semaphores, channels, sleep), the form with the deadline
 *    is named _until. Only names that say so take a duration: tern_sleep,
 *    tern_call_later, tern_runtime_shutdown_timeout.
 *  - A try_ form (tern_mutex_try_lock, tern_chan_try_send, ...) does what
 *    its waiting form does only if that needs no wait, and answers -EAGAIN
 *    otherwise. -EBUSY means "in use": an object destroyed while held or
 *    waited on, a task someone else already joins.
 *  - Public structs that tern fills (configuration, info, metrics) end in
 *    reserved words, so that later versions can add fields without changing
 *    their size; keep them zero in a tern_config.
 */
#ifndef TERN_H
#define TERN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TERN_BUILDING)
#define TERN_API __attribute__((visibility("default")))
#else
#define TERN_API
#endif

typedef struct tern_runtime tern_runtime;
typedef struct tern_loop tern_loop;
typedef struct tern_task tern_task;
typedef struct tern_handle tern_handle;

/* A task body. Its return value is what tern_join() hands back. */
typedef void *(*tern_task_fn)(void *arg);
/* A loop callback (call_soon/later/at). It runs on the loop's thread, outside
 * any task, so it must not suspend; it may spawn tasks and schedule handles. */
typedef void (*tern_callback_fn)(void *arg);

typedef enum tern_backend {
    TERN_BACKEND_AUTO = 0, /* io_uring when the kernel allows it, else epoll;
                              the TERN_BACKEND environment variable
                              ("io_uring" or "epoll") overrides AUTO */
    TERN_BACKEND_IO_URING,
    TERN_BACKEND_EPOLL,
} tern_backend;

/* What the watchdog reports when a worker has not returned to its loop for
 * longer than tern_config.stall_ms (see tern_config.watchdog). */
typedef struct tern_stall {
    unsigned worker;  /* index of the stalled worker */
    uint64_t task_id; /* the task holding it, or 0 when it is a loop callback */
    const char *name; /* the task's name ("" when unnamed); valid during the call */
    const char *file; /* where it was spawned, or "" when unknown */
    int line;
    uint64_t held_ns;     /* how long it has held the worker so far (sampled:
                             accurate to a quarter of the threshold) */
    uint64_t reserved[4]; /* zero; room for fields in later versions */
} tern_stall;

/* Runtime configuration. Zero-initialise it (or call tern_config_init) and
 * set what you need: every zero field means "the default". */
typedef struct tern_config {
    unsigned workers;               /* worker threads; 0 = number of CPUs */
    size_t stack_size;              /* fiber stack bytes; 0 = 64 KiB. Committed lazily:
                                       an idle task costs the pages it touched */
    tern_backend backend;           /* I/O driver; see tern_backend */
    unsigned blocking_threads;      /* blocking pool maximum (<= 4096); 0 = 64 */
    unsigned budget;                /* cooperative budget: suspension points a task may
                                       pass before it is made to yield; <= 65535;
                                       0 = 128 */
    unsigned blocking_queue;        /* blocking jobs that may wait for a thread once
                                       blocking_threads are all busy; one more is
                                       refused with -EAGAIN. <= 1048576; 0 = 1024 */
    unsigned blocking_keepalive_ms; /* a blocking thread idle this long retires;
                                       <= 86400000 (a day); 0 = 10000 */
    unsigned shutdown_timeout_ms;   /* how long tern_runtime_free waits for
                                       blocking jobs still running before it
                                       abandons them (see
                                       tern_runtime_shutdown_timeout);
                                       <= 86400000; 0 = wait for ever */
    /* Production aids, all off by default. Environment variables switch
     * them on without a rebuild: TERN_WATCHDOG=<ms> (watchdog with that
     * threshold), TERN_METRICS=1, TERN_DUMP_SIGNAL=<number or name, e.g.
     * USR1>. */
    int watchdog;      /* 1: a monitor thread reports, once per stall, a
                          worker held by one task or callback for more
                          than stall_ms, and counts it (metrics) */
    unsigned stall_ms; /* watchdog threshold; 0 = 100 ms */
    /* Called on the monitor thread with no lock held; NULL = one line on
     * stderr. It may call tern_dump, not create or free runtimes (-EDEADLK);
     * tern_runtime_free waits for a call in progress to return. */
    void (*on_stall)(const tern_stall *stall, void *arg);
    void *stall_arg;
    int metrics;          /* 1: also time one poll in 64 into the poll-time
                             histogram (the counters are always kept) */
    int dump_signal;      /* a signal number (e.g. SIGUSR1) on which the
                             monitor thread prints this runtime's dump to
                             stderr; 0 = none. Not one the kernel raises
                             for a fault (SEGV, BUS, FPE, ILL, ABRT, TRAP,
                             SYS) nor KILL or STOP: -EINVAL. tern's threads
                             take the creating thread's signal mask: one
                             blocked there is warned about on stderr */
    uint64_t reserved[8]; /* must be zero (-EINVAL otherwise): room for
                             fields in later versions, whose zero will
                             mean "the default" */
} tern_config;

/* Sets every field of cfg to its default. Any thread. Never suspends. */
TERN_API void tern_config_init(tern_config *cfg);

/* ---- runtime lifecycle ------------------------------------------------ */

/* Creates a runtime and starts its worker threads.
 * Returns 0 and sets *out, or -EINVAL (out is NULL, a field is out of range:
 * workers > 1024, stack_size < 16 KiB or > 1 GiB, unknown backend, a dump
 * signal the kernel raises for faults; or a TERN_WATCHDOG /
 * TERN_DUMP_SIGNAL value that makes no sense, which is named on stderr with
 * the values it may take), -ENOMEM, -EAGAIN (a thread
 * could not be started), -EDEADLK (from an on_stall callback), or the error
 * of the I/O backend forced by cfg/TERN_BACKEND (-ENOSYS, -EPERM, ...). cfg
 * may be NULL.
 * Any thread that is not a worker of another runtime. Never suspends. */
TERN_API int tern_runtime_new(const tern_config *cfg, tern_runtime **out);

/* Shuts rt down and frees it: every task still waiting is woken with
 * -ECANCELED and left to finish, blocking jobs that have not started are
 * cancelled (they never run; their join gives -ECANCELED), running ones
 * are waited for, pending call_soon handles run, timed handles that are not
 * due are dropped, worker threads and blocking threads are joined, and all
 * memory and descriptors are released. With cfg.shutdown_timeout_ms set it
 * is tern_runtime_shutdown_timeout with that timeout (abandoned jobs are
 * reported on stderr only). Tasks still referenced by a tern_task pointer
 * the caller holds must be joined or released before this call. Returns 0
 * or -EINVAL (rt NULL) or -EDEADLK (called from one of rt's own threads or
 * from an on_stall callback). Blocks the calling thread. */
TERN_API int tern_runtime_free(tern_runtime *rt);

/* Tokio's Runtime::shutdown_timeout: tern_runtime_free, but waits at most
 * timeout_ns for the blocking jobs still running (0: not at all,
 * UINT64_MAX: for ever). Past it, each job still running, and each of
 * tern's own jobs (file I/O on epoll, name lookups) still queued, is
 * abandoned: reported on stderr in one line ("tern: shutdown abandoned
 * blocking job <id> running for <ms> ms (fn <address>)"), its join or
 * future gives -ECANCELED, and its thread is left to return from fn on its
 * own, after which it exits touching nothing of rt. rt is freed anyway.
 * What an abandoned job may still write stays allocated for ever: its task
 * header and, when a task still waits for one of tern's own jobs (a file
 * read into its stack), that task and every fiber stack of rt. Everything
 * fn uses is the caller's to keep alive until fn returns. The wait is
 * bounded by the timeout except for a task that never gives its worker back.
 * Returns the number of jobs abandoned (>= 0), or -EINVAL (rt NULL),
 * -EDEADLK (called from one of rt's own threads, or from an on_stall
 * callback). Blocks the calling thread. */
TERN_API int tern_runtime_shutdown_timeout(tern_runtime *rt, uint64_t timeout_ns);

/* asyncio.run(): creates a runtime from cfg (NULL = defaults), runs
 * fn(arg) as its main task, waits for it, shuts the runtime down and
 * returns the main task's outcome: 0 (and *result, when result is not NULL,
 * set to fn's return value), -ECANCELED if it was cancelled, or a
 * tern_runtime_new error. Any thread outside a runtime. Blocks. */
TERN_API int tern_run(const tern_config *cfg, tern_task_fn fn, void *arg, void **result);

/* Runs fn(arg) as a task on rt and blocks the calling thread (which must not
 * be one of rt's workers) until it finishes. Returns like tern_run, or
 * -EINVAL (rt or fn NULL), -EDEADLK (called from a worker of rt),
 * -ESHUTDOWN (rt is shutting down), -ENOMEM. */
TERN_API int tern_block_on(tern_runtime *rt, tern_task_fn fn, void *arg, void **result);

/* The runtime the calling thread works for (a worker or a task on one), or
 * NULL. Any thread. */
TERN_API tern_runtime *tern_runtime_current(void);

/* Number of worker threads of rt (0 when rt is NULL). Any thread. */
TERN_API unsigned tern_runtime_workers(const tern_runtime *rt);

/* ---- tasks -------------------------------------------------------------- */

/* Task handles. A tern_task * from a spawn (or tern_task_ref, or
 * tern_task_current) is a handle: valid while its holder keeps the
 * reference it stands for. A handle used after that reference was given
 * back (a second join, a use after tern_task_release) is recognised, even
 * once the task's memory serves another task: the calls below return
 * -EINVAL (or 0, NULL, nothing, as each says) instead of acting on the
 * other task. The check uses a 16-bit generation, so a handle kept through
 * 65,535 reuses of the same memory could match again. */

/* Spawns fn(arg) as a new task of rt. The task may run on any worker.
 * When out is not NULL, *out receives a reference to the task that the caller
 * must give back with tern_join() or tern_task_release(); when out is NULL
 * the task is detached. The new task's stack is taken when it first runs.
 * Returns 0, -EINVAL (rt or fn NULL), -ENOMEM, or -ESHUTDOWN.
 * Any thread. Spawning counts against the calling task's cooperative budget:
 * a task that spawns many tasks without waiting in between is made to yield
 * (after the spawn succeeded) so that what it spawned can run; a spawn never
 * fails for that and never returns -ECANCELED. */
TERN_API int tern_runtime_spawn(tern_runtime *rt, tern_task_fn fn, void *arg,
                                tern_task **out);

/* tern_runtime_spawn on the calling thread's runtime; -EPERM when the caller
 * is not on a runtime thread. */
TERN_API int tern_spawn(tern_task_fn fn, void *arg, tern_task **out);

/* The same, recording file:line as where the task was spawned (tern_dump
 * and the watchdog show it; file must stay valid, as __FILE__ does). The
 * macros below make every tern_spawn and tern_runtime_spawn record its
 * caller's location; (tern_spawn)(...) calls the plain function. */
TERN_API int tern_runtime_spawn_at(tern_runtime *rt, tern_task_fn fn, void *arg,
                                   tern_task **out, const char *file, int line);
TERN_API int tern_spawn_at(tern_task_fn fn, void *arg, tern_task **out, const char *file,
                           int line);
/* tern_runtime_spawn for a task that owns arg: when the task finishes
 * without its body ever running (cancelled before it started, no stack to
 * be had, the runtime shutting down first), drop(arg) is called instead,
 * exactly once, so that what arg holds (a connection's descriptor, a
 * buffer) is not orphaned; when the body runs, arg is the body's and drop
 * is never called. drop runs on a worker outside any task: it must not
 * suspend. drop may be NULL. Such tasks are counted in
 * tern_worker_stats.never_ran either way. On a spawn error nothing was
 * queued, drop is not called and arg is still the caller's. Returns as
 * tern_runtime_spawn; tern_spawn_owned as tern_spawn. The macros record the
 * caller's file:line, as tern_spawn's do. */
TERN_API int tern_runtime_spawn_owned_at(tern_runtime *rt, tern_task_fn fn, void *arg,
                                         void (*drop)(void *arg), tern_task **out,
                                         const char *file, int line);
TERN_API int tern_spawn_owned_at(tern_task_fn fn, void *arg, void (*drop)(void *arg),
                                 tern_task **out, const char *file, int line);
#define tern_runtime_spawn_owned(rt, fn, arg, drop, out)                                 \
    tern_runtime_spawn_owned_at((rt), (fn), (arg), (drop), (out), __FILE__, __LINE__)
#define tern_spawn_owned(fn, arg, drop, out)                                             \
    tern_spawn_owned_at((fn), (arg), (drop), (out), __FILE__, __LINE__)
#define tern_runtime_spawn(rt, fn, arg, out)                                             \
    tern_runtime_spawn_at((rt), (fn), (arg), (out), __FILE__, __LINE__)
#define tern_spawn(fn, arg, out) tern_spawn_at((fn), (arg), (out), __FILE__, __LINE__)

/* Names a task (task NULL = the calling task) for tern_dump and the
 * watchdog; name is copied (at most 255 bytes); NULL clears it. Returns 0,
 * -EINVAL (task NULL outside a task, or stale), -ENAMETOOLONG, -ENOMEM. Any thread.
 * Never suspends. */
TERN_API int tern_task_set_name(tern_task *task, const char *name);

/* Copies task's name (task NULL = the calling task) into buf (len bytes,
 * always NUL-terminated when len > 0, truncated if need be). Returns the
 * name's full length (0 when unnamed) or -EINVAL (as for set_name). Any thread. Never
 * suspends. */
TERN_API int tern_task_get_name(const tern_task *task, char *buf, size_t len);

/* Where task was spawned: *file and *line (either may be NULL). Returns 0,
 * -ENOENT (spawned without a location, e.g. through (tern_spawn), or the
 * main task of tern_run / tern_block_on), or -EINVAL (NULL or stale). Any thread. Never
 * suspends. */
TERN_API int tern_task_location(const tern_task *task, const char **file, int *line);

/* Waits for task to finish and gives back the caller's reference to it.
 * Returns 0 with *result (when result is not NULL) set to the task's return
 * value, or the task's own failure: -ECANCELED if it was cancelled before it
 * started or if one of its suspension points returned -ECANCELED to it (a
 * task that finished without meeting one keeps its result), -ENOMEM if no
 * stack could be had for it. Errors of the call itself keep the reference:
 * -EINVAL (task NULL or stale, or a task joining itself), -EBUSY (another joiner is
 * already waiting). If the *calling* task is
 * cancelled while it waits, returns -ECANCELED and the reference is kept, so
 * the caller may join again or release. Suspends from a task; blocks a
 * thread outside the runtime. */
TERN_API int tern_join(tern_task *task, void **result);

/* Gives back a reference from tern_spawn without waiting (detaches). A NULL
 * or stale handle is ignored. Any thread. Never suspends. */
TERN_API void tern_task_release(tern_task *task);

/* Requests cancellation: the task sees -ECANCELED from the suspension point it
 * is waiting at (it is woken) or from its next one; a task that has not
 * started yet never runs its body. Returns 0, -EINVAL (task NULL or stale) or
 * -EALREADY (the task already finished). Any thread. Never suspends. */
TERN_API int tern_task_cancel(tern_task *task);

/* ---- cancel scopes (Trio's cancel scopes, asyncio.timeout) -------------------
 *
 *     tern_scope sc;
 *     tern_scope_enter(&sc, tern_now() + 100 * 1000000, 0);  // 100 ms for this
 *     int r = fetch(...);                   // -ECANCELED when the 100 ms run out
 *     if (tern_scope_exit(&sc) == -ETIMEDOUT)
 *         ...;                              // the task goes on from here
 *
 * A scope lives on the task's stack between enter and exit. Inside it:
 *  - its deadline (0: none) bounds every suspension point: reaching it
 *    expires the scope, and the suspension point answers -ECANCELED; so do
 *    all later ones inside the scope, and tern_scope_exit answers
 *    -ETIMEDOUT (asyncio.timeout's TimeoutError), after which the task
 *    goes on as if nothing happened;
 *  - scopes nest: the earliest deadline of the enclosing scopes applies,
 *    and the scope it belongs to is the one that expires (the innermost on
 *    a tie): an outer deadline cancels the inner scopes' work too, but only
 *    the outer exit reports -ETIMEDOUT;
 *  - TERN_SCOPE_SHIELD: suspension points inside do not see what lies
 *    outside the scope, neither the task's cancel nor the deadlines of
 *    enclosing scopes (for cleanup: a goodbye, a flush). The task's cancel
 *    is seen at the first suspension point after the shield's exit;
 *  - tern_scope_cancel cancels the scope's work as its deadline would, and
 *    its exit answers -ECANCELED.
 * A wait that must finish (a condition's relock, leaving a task group) is
 * bounded by no scope. Scopes are for the calling task only; none of
 * these calls suspends. */
typedef struct tern_scope {
    uint64_t tern__opaque[3];
} tern_scope;
#define TERN_SCOPE_SHIELD 1

/* Enters scope as the calling task's innermost. Returns 0, -EINVAL (scope
 * NULL, unknown flags), -EPERM (not in a task). */
TERN_API int tern_scope_enter(tern_scope *scope, uint64_t deadline, int flags);
/* Leaves scope, which must be the calling task's innermost. Returns 0,
 * -ETIMEDOUT (its deadline expired it: a wait that reached the deadline
 * just as its operation completed keeps its result, and the scope still
 * reports the expiry), -ECANCELED (tern_scope_cancel), or -EINVAL (NULL,
 * not the innermost, not in a task). */
TERN_API int tern_scope_exit(tern_scope *scope);
/* Cancels the work inside scope, one the calling task is in. Returns 0,
 * -EALREADY, -EINVAL. */
TERN_API int tern_scope_cancel(tern_scope *scope);

/* asyncio's Task.uncancel, for the calling task: withdraws the cancel
 * request it has handled, so that its suspension points work again (to
 * say goodbye to a peer, flush, close) and, once it returns, its joiner
 * gets its result instead of -ECANCELED. A cancel that comes afterwards
 * is a new request. Returns 1 (a request was withdrawn), 0 (there was
 * none), or -EPERM outside a task. Never suspends. */
TERN_API int tern_task_uncancel(void);

/* 1 when the task has finished (returned, or was cancelled), 0 otherwise,
 * -EINVAL for a NULL or stale handle. */
TERN_API int tern_task_done(const tern_task *task);

/* The task's id: unique within the process, never 0 (0 for a NULL or stale
 * handle). */
TERN_API uint64_t tern_task_id(const tern_task *task);

/* The calling task (a handle that needs no release), or NULL outside a task. */
TERN_API tern_task *tern_task_current(void);

/* The calling task's id, or 0 outside a task. */
TERN_API uint64_t tern_task_current_id(void);

/* Lets other ready tasks run; the caller goes to the back of its worker's
 * queue. Returns 0, -ECANCELED, or -EPERM outside a task. Suspends. */
TERN_API int tern_yield(void);

/* Sleeps at least ns nanoseconds (1 ms wheel resolution: the wake-up comes
 * in the first loop turn after the deadline); an ns too large to add to
 * the clock sleeps for ever (until cancelled). Returns 0, -ECANCELED, or
 * -EPERM outside a task. Suspends. */
TERN_API int tern_sleep(uint64_t ns);

/* Sleeps until tern_now() >= deadline (UINT64_MAX: for ever, until
 * cancelled). Returns like tern_sleep. Suspends. */
TERN_API int tern_sleep_until(uint64_t deadline);

/* Low-level parking, the primitive every tern wait is built on (Rust's
 * thread::park/unpark for tasks). tern_park suspends the calling task until
 * some thread calls tern_unpark on it; an unpark that comes before the park
 * is remembered (one permit), so a waiter that publishes itself, then parks,
 * can never miss its wake-up. Parks may also return early (a stale wake-up):
 * callers re-check their condition in a loop.
 * tern_park returns 0, -ECANCELED, -ETIMEDOUT (deadline passed; 0 = none),
 * or -EPERM outside a task. Suspends. */
TERN_API int tern_park(uint64_t deadline);

/* Wakes a parked task or leaves it a permit. The caller must hold a reference
 * to task or otherwise know it is alive; a stale handle is ignored. Any
 * thread. Never suspends. */
TERN_API void tern_unpark(tern_task *task);

/* Takes another reference to task (to hand it to a waker). Returns task, or
 * NULL for a NULL or stale handle. Any thread. Never suspends. */
TERN_API tern_task *tern_task_ref(tern_task *task);

/* ---- loops, time and handles --------------------------------------------- */

/* Monotonic clock in nanoseconds. Any thread. */
TERN_API uint64_t tern_now(void);

/* The loop of the worker the caller runs on, or NULL off a worker. A task may
 * move between workers between two suspension points, so for a task this is
 * "the loop I am on right now". */
TERN_API tern_loop *tern_loop_current(void);

/* Loop i of rt (0 <= i < tern_runtime_workers(rt)), or NULL. Any thread. */
TERN_API tern_loop *tern_runtime_loop(tern_runtime *rt, unsigned i);

/* The loop's cached time (tern_now() read once per loop turn); loop NULL =
 * the current loop; 0 when there is none. Any thread. */
TERN_API uint64_t tern_loop_time(tern_loop *loop);

/* Schedules cb(arg) on loop (NULL = current) for the next loop turn.
 * call_soon callbacks of one loop run in the order they were scheduled, one
 * at a time, on the loop's thread. When out is not NULL, *out receives a
 * handle the caller must release with tern_handle_release().
 * Returns 0, -EINVAL (cb NULL; loop NULL off a worker), -EPERM (called off
 * the loop's own thread: use tern_call_soon_threadsafe), -ENOMEM,
 * -ESHUTDOWN. Never suspends. */
TERN_API int tern_call_soon(tern_loop *loop, tern_callback_fn cb, void *arg,
                            tern_handle **out);

/* tern_call_soon from any thread, the loop's own included; loop must not be
 * NULL. Callbacks from one thread keep their order. Wakes the loop. */
TERN_API int tern_call_soon_threadsafe(tern_loop *loop, tern_callback_fn cb, void *arg,
                                       tern_handle **out);

/* Schedules cb(arg) on loop (NULL = current; own thread only, like call_soon)
 * to run at tern_now() time `when` (call_at) or `delay` ns after the call
 * (call_later: counted from the clock at the call, not from the loop's
 * cached time, so a task that computed before calling still waits the
 * whole delay; a delay too large to add means never). Timed callbacks run
 * in deadline order, ties in the order scheduled, never early. Errors as
 * tern_call_soon. */
TERN_API int tern_call_at(tern_loop *loop, uint64_t when, tern_callback_fn cb, void *arg,
                          tern_handle **out);
TERN_API int tern_call_later(tern_loop *loop, uint64_t delay, tern_callback_fn cb,
                             void *arg, tern_handle **out);

/* Cancels a handle's callback if it has not started. Returns 0, -EALREADY
 * (it already ran or was cancelled) or -EINVAL (NULL). Any thread. */
TERN_API int tern_handle_cancel(tern_handle *h);

/* 1 once the handle was cancelled, 0 otherwise. */
TERN_API int tern_handle_cancelled(const tern_handle *h);

/* Gives back a handle reference (does not cancel). Any thread. */
TERN_API void tern_handle_release(tern_handle *h);

/* ---- intervals -------------------------------------------------------------- */

/* What an interval does with ticks it could not deliver on time (Tokio's
 * MissedTickBehavior). A tick is missed when, by the time it is taken, the
 * one after it is due too; a tick that is merely late (the wheel's 1 ms
 * resolution, a busy worker) keeps the schedule, so ticks never drift. */
typedef enum tern_missed_tick {
    TERN_TICK_BURST = 0, /* the missed ticks come back to back, each with its own
                            due time, until the schedule has caught up
                            (Tokio's default) */
    TERN_TICK_DELAY = 1, /* the schedule restarts a period after the late tick
                            was taken: start, start + p, ... shift later */
    TERN_TICK_SKIP = 2,  /* the missed ticks are dropped: the next one is the
                            first of the original schedule still ahead (Go's
                            Ticker drops them the same way) */
} tern_missed_tick;

/* A repeating timer for a task: ticks at start, start + period,
 * start + 2 * period, ... (asyncio has none; Tokio's interval, Go's Ticker). */
typedef struct tern_interval tern_interval;

/* Creates an interval whose first tick is due at start (0: now, so the first
 * tern_interval_tick returns at once, as Tokio's does) and then every period
 * ns. Returns 0 and *out, -EINVAL (out NULL, period 0, policy unknown),
 * -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_interval_new(uint64_t start, uint64_t period, tern_missed_tick policy,
                               tern_interval **out);

/* Waits for the interval's next tick and takes it. Returns 0 with the
 * tick's due time in *when (may be NULL), or -ETIMEDOUT when deadline
 * (0 = none) comes first, -ECANCELED, -EPERM outside a task, -EINVAL (iv
 * NULL), -EBUSY (another task is waiting on iv); on an error no tick is
 * taken. Suspends (not when the tick is already due). */
TERN_API int tern_interval_tick(tern_interval *iv, uint64_t deadline, uint64_t *when);

/* Restarts the schedule: the next tick is due one period from now. Returns
 * 0 or -EINVAL. Any thread; a task waiting in tick keeps its old due time.
 * Never suspends. */
TERN_API int tern_interval_reset(tern_interval *iv);

/* The due time of the next tick, or 0 for NULL. Any thread. */
TERN_API uint64_t tern_interval_next(const tern_interval *iv);

/* Frees iv; nobody may be waiting on it. NULL is ignored. */
TERN_API void tern_interval_free(tern_interval *iv);

/* The same schedule as a loop handle: cb(arg) runs on loop (NULL = current;
 * its own thread only, like tern_call_at) at first (0: now), first + period, ...,
 * following policy for the runs it could not make on time, until
 * tern_handle_cancel (any thread, the callback itself included: no run
 * starts after it returns). Returns like tern_call_at, and -EINVAL for a
 * period of 0 or an unknown policy. Never suspends. */
TERN_API int tern_call_every(tern_loop *loop, uint64_t first, uint64_t period,
                             tern_missed_tick policy, tern_callback_fn cb, void *arg,
                             tern_handle **out);

/* ---- blocking pool -------------------------------------------------------- */

/* Runs fn(arg) on one of the runtime's blocking threads (the pool grows on
 * demand up to tern_config.blocking_threads; a thread idle for
 * blocking_keepalive_ms retires). *out receives a task-like reference:
 * tern_join() waits for fn and yields its return value,
 * tern_task_release() detaches, tern_task_future() makes it a future (or
 * use tern_spawn_blocking_future). A blocking job cannot be cancelled once
 * it started; one cancelled before never runs (-ECANCELED). Returns 0,
 * -EINVAL (fn or out NULL), -EPERM (no current runtime), -EAGAIN (every
 * thread is busy, no more may start and blocking_queue jobs already wait:
 * nothing was queued), -ENOMEM, -ESHUTDOWN. Any runtime thread. Never
 * suspends. tern_runtime_spawn_blocking does the same for an explicit
 * runtime from any thread. */
TERN_API int tern_spawn_blocking(tern_task_fn fn, void *arg, tern_task **out);
TERN_API int tern_runtime_spawn_blocking(tern_runtime *rt, tern_task_fn fn, void *arg,
                                         tern_task **out);

/* A future (tern_sync.h, included at the end of this header). */
typedef struct tern_future tern_future;

/* tern_spawn_blocking whose result is a future: *out completes with fn's
 * return value once fn has run on a blocking thread, or with -ECANCELED
 * (cancelled before it started, or abandoned at shutdown). Await it from a
 * task (tern_future_await suspends the task) or from any thread (it
 * blocks); tern_future_cancel cancels the job if it has not started. Give
 * it back with tern_future_release. On error nothing was queued and *out
 * is NULL. Returns 0, -EINVAL (fn or out NULL), -EPERM (no current
 * runtime: tern_spawn_blocking_future only), -EAGAIN (the pool's queue is
 * full), -ENOMEM, -ESHUTDOWN. Never suspends. */
TERN_API int tern_spawn_blocking_future(tern_task_fn fn, void *arg, tern_future **out);
TERN_API int tern_runtime_spawn_blocking_future(tern_runtime *rt, tern_task_fn fn,
                                                void *arg, tern_future **out);

/* The blocking pool of one runtime, right now. */
typedef struct tern_blocking_info {
    unsigned threads;     /* threads alive: idle + busy */
    unsigned idle;        /* waiting for a job (they retire after the keep-alive) */
    unsigned busy;        /* running a job, or about to take one */
    unsigned queued;      /* jobs waiting for a thread */
    unsigned max_threads; /* cfg.blocking_threads, resolved */
    unsigned max_queued;  /* cfg.blocking_queue, resolved */
    uint64_t reserved[4]; /* zero; room for fields in later versions */
} tern_blocking_info;

/* Fills *out for rt. Returns 0 or -EINVAL (NULL). Any thread. Never
 * suspends. */
TERN_API int tern_runtime_blocking_info(tern_runtime *rt, tern_blocking_info *out);

/* ---- introspection --------------------------------------------------------- */

/* Counters of one worker; every field counts since the runtime started. */
typedef struct tern_worker_stats {
    uint64_t tasks_run;       /* task resumptions (polls) */
    uint64_t steals;          /* successful steal operations */
    uint64_t stolen_tasks;    /* tasks moved by them */
    uint64_t parks;           /* times the worker slept in its driver */
    uint64_t wakes;           /* times another thread woke it (unparks) */
    uint64_t inject_pulls;    /* tasks moved from the global inject queue */
    uint64_t lifo_hits;       /* tasks run from the LIFO slot */
    uint64_t local_hits;      /* tasks popped from the local queue (those moved there
                                 by an inject pull or a steal count here too, but
                                 for the one a steal runs at once) */
    uint64_t budget_yields;   /* tasks forced to yield by the budget */
    uint64_t handles_run;     /* call_soon/later/at callbacks run */
    uint64_t timers_fired;    /* timer entries that expired */
    uint64_t busy_ns;         /* time spent outside its driver wait (to its last turn) */
    uint64_t io_submitted;    /* I/O operations started by tasks on this worker */
    uint64_t io_completed;    /* I/O operations that finished on this worker */
    uint64_t stalls;          /* watchdog reports about this worker */
    uint64_t never_ran;       /* tasks finished without running their body:
                                 cancelled before they started, or no stack */
    uint64_t direct_switches; /* tasks switched to straight from the task that
                                 switched out before them, without a turn of
                                 the worker's loop (counted in tasks_run too) */
    uint64_t reserved[6];     /* zero; room for counters in later versions */
} tern_worker_stats;

/* asyncio's view of one loop. */
typedef struct tern_loop_info {
    const char *backend;      /* "io_uring" or "epoll" (static string) */
    const char *backend_note; /* why this backend (e.g. "io_uring: -EPERM,
                                 fell back"); static or loop-owned string */
    unsigned worker;          /* index of the loop's worker */
    uint64_t ready_tasks;     /* tasks in its local queue and LIFO slot */
    uint64_t ready_handles;   /* call_soon handles waiting to run */
    uint64_t scheduled;       /* timer entries armed (sleeps and timed handles) */
    tern_worker_stats stats;
    uint64_t reserved[4]; /* zero; room for fields in later versions */
} tern_loop_info;

/* Fills *out for loop (NULL = current). Values are read without stopping the
 * loop, so each is a recent snapshot. Returns 0 or -EINVAL. Any thread. */
TERN_API int tern_loop_get_info(tern_loop *loop, tern_loop_info *out);

/* Tasks alive in rt (spawned and not yet freed), or 0 when rt is NULL. */
TERN_API uint64_t tern_runtime_live_tasks(const tern_runtime *rt);

/* ---- metrics, task dump ------------------------------------------------------ */

/* Poll-time histogram buckets: bucket 0 counts polls under 1 us, bucket i
 * (1 <= i < 15) polls of [2^(i-1), 2^i) us, bucket 15 polls of 16.384 ms
 * or more. */
#define TERN_POLL_BUCKETS 16

/* A snapshot of a whole runtime. Every value is read without stopping
 * anything, so each is recent but they are not one instant. */
typedef struct tern_metrics {
    unsigned workers;
    const char *backend;       /* "io_uring" or "epoll" */
    uint64_t live_tasks;       /* spawned and not yet freed */
    uint64_t inject_depth;     /* tasks in the global inject queue */
    uint64_t ready_tasks;      /* tasks in the workers' local queues */
    uint64_t timers_armed;     /* timer entries on every wheel */
    unsigned blocking_threads; /* blocking pool threads alive */
    unsigned blocking_idle;    /* of which idle */
    unsigned blocking_queued;  /* jobs waiting for a blocking thread */
    uint64_t stalls;           /* watchdog reports */
    tern_worker_stats total;   /* the sum over the workers */
    /* Poll times, when tern_config.metrics is on: sampled polls per bucket
     * (one poll in 64 is timed). */
    uint64_t poll_hist[TERN_POLL_BUCKETS];
    uint64_t reserved[8]; /* zero; room for fields in later versions */
} tern_metrics;

/* Fills *out for rt. Returns 0 or -EINVAL (NULL argument). Any thread.
 * Never suspends. */
TERN_API int tern_runtime_metrics(tern_runtime *rt, tern_metrics *out);

/* Fills *out with worker i's counters. Returns 0 or -EINVAL (NULL, or i out
 * of range). Any thread. Never suspends. */
TERN_API int tern_worker_metrics(tern_runtime *rt, unsigned i, tern_worker_stats *out);

enum {
    TERN_DUMP_JSON = 1,    /* one JSON object per line instead of text */
    TERN_DUMP_CONTEXT = 2, /* add each task's context variables */
};

/* Writes every live task of rt to out, like Go's goroutine dump: id, name,
 * spawn location, state (running on worker k, ready, waiting, or a blocking
 * job queued or running) and, for a waiting task, what it waits on and for
 * how long; with TERN_DUMP_CONTEXT its context variables (name = value as
 * a pointer; 16 per task). Text by default, JSON lines with
 * TERN_DUMP_JSON; names are cut at 63 bytes. Returns the number of tasks
 * written or -EINVAL / -ENOMEM / -EIO. Safe from any thread, a task of rt
 * included, while rt is busy; it blocks the calling thread while it writes
 * (from a task, its worker) and never suspends. Spawns and exits of the
 * tasks of one registry shard wait while that shard is copied; nothing else
 * stops. Not from a signal handler (see tern_config.dump_signal). */
TERN_API int tern_runtime_dump(tern_runtime *rt, FILE *out, int flags);

/* tern_runtime_dump for every runtime of the process (runtimes being
 * created or freed meanwhile wait). Returns the total number of tasks
 * written or a negative errno. Any thread; blocks it while it writes, never
 * suspends. */
TERN_API int tern_dump(FILE *out, int flags);

/* ---- context variables (asyncio's contextvars) ------------------------------
 *
 * A context maps variables to values. It is immutable and reference counted
 * (a persistent hash array mapped trie, as CPython's), so taking a copy is
 * O(1) and contexts are shared between threads freely. Every task has a
 * current context; a new task starts with its spawner's, a handle
 * scheduled with call_soon/call_later/call_at runs in the one current when
 * it was scheduled, and a future's done callback in its adder's. Setting a
 * variable gives the calling task a new context (O(log n)) and changes no
 * other task's, even one that shares the old one. Outside tasks the current
 * context is per thread. */

typedef struct tern_ctxvar tern_ctxvar;
typedef struct tern_context tern_context;
typedef struct tern_ctxtoken tern_ctxtoken;

/* Creates a variable named name (copied) whose value is deflt where it is
 * not set. dtor, when not NULL, runs once for each value set, when the
 * last context holding that setting is freed. Returns 0, -EINVAL (name or
 * out NULL), -ENOMEM. Any thread. Never suspends. */
TERN_API int tern_ctxvar_new(const char *name, void *deflt, void (*dtor)(void *value),
                             tern_ctxvar **out);
/* Frees a variable. No context may still hold a value of it. */
TERN_API void tern_ctxvar_free(tern_ctxvar *v);
/* The name given at creation ("" for NULL). */
TERN_API const char *tern_ctxvar_name(const tern_ctxvar *v);

/* The value of v in the current context, or its default (NULL for v NULL). */
TERN_API void *tern_ctxvar_get(tern_ctxvar *v);
/* 1 and *value (when not NULL) if v is set in the current context, else 0;
 * -EINVAL for v NULL. */
TERN_API int tern_ctxvar_lookup(tern_ctxvar *v, void **value);
/* Sets v in the current context. When token is not NULL, *token receives a
 * token that tern_ctxvar_reset can use to undo this set (free it with
 * tern_ctxtoken_free). Returns 0, -EINVAL, -ENOMEM (nothing was set, and
 * the destructor does not run on value). Never suspends. */
TERN_API int tern_ctxvar_set(tern_ctxvar *v, void *value, tern_ctxtoken **token);
/* Gives v back the value (or the absence of one) it had before the set
 * that made token. Returns 0, -ENOMEM, or -EINVAL: v or token NULL, token
 * already used, or made by another variable. The token stays the
 * caller's. */
TERN_API int tern_ctxvar_reset(tern_ctxvar *v, tern_ctxtoken *token);
TERN_API void tern_ctxtoken_free(tern_ctxtoken *token);

/* A reference to the current context: O(1), whatever its size. Never NULL
 * (an empty context when nothing is set). Give it back with
 * tern_context_release. Any thread. */
TERN_API tern_context *tern_context_copy(void);
/* An empty context (a reference). */
TERN_API tern_context *tern_context_new(void);
TERN_API tern_context *tern_context_ref(tern_context *ctx);
TERN_API void tern_context_release(tern_context *ctx);
/* Variables set in ctx. */
TERN_API size_t tern_context_len(const tern_context *ctx);
/* 1 and *value if v is set in ctx, else 0; -EINVAL for NULL arguments. */
TERN_API int tern_context_get(const tern_context *ctx, tern_ctxvar *v, void **value);
/* Runs fn(arg) with ctx as the current context and restores the previous
 * one afterwards, whatever fn returns; returns fn's result. Sets made by
 * fn do not change ctx (it is immutable): take tern_context_copy inside fn
 * to keep them. May suspend if fn does. */
TERN_API void *tern_context_run(tern_context *ctx, tern_task_fn fn, void *arg);

/* ---- errors ----------------------------------------------------------------- */

/* A static description of a negative (or positive) errno value, worded for
 * tern's meaning where it has one. Any thread. */
TERN_API const char *tern_strerror(int err);

#ifdef __cplusplus
}
#endif

#include "tern_io.h"   /* sockets, pipes, files */
#include "tern_sync.h" /* futures, task groups, locks, channels */

#endif /* TERN_H */
