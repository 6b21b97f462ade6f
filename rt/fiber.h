/*
 * Fibers: a saved stack pointer, a stack from the per-worker pool, and the
 * sanitizer bookkeeping that lets ThreadSanitizer and AddressSanitizer follow
 * a switch. Internal to tern.
 *
 * Lifetime rules:
 *  1. A stack belongs to at most one fiber at a time; tern__stack_get hands it
 *     out, tern__stack_put gives it back (to the calling thread's cache).
 *  2. A fiber is switched to by one thread at a time; the scheduler hands a
 *     suspended fiber to another thread only through a release/acquire pair
 *     (the task state word), so the saved context is visible there.
 *  3. A stack's lowest page is a guard. Touching it raises SIGSEGV, and the
 *     handler installed by tern__fiber_thread_init names the overflowing task.
 */
#ifndef TERN_FIBER_H
#define TERN_FIBER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tern__stack {
    struct tern__stack *next; /* free-list link while cached */
    char *base;               /* lowest address, the guard page included */
    size_t size;              /* bytes including the guard */
    int guarded;              /* 1 when the lowest page is a real guard */
} tern__stack;

typedef struct tern__fiber {
    void *sp;           /* saved stack pointer while switched out */
    tern__stack *stack; /* NULL for a thread's own (scheduler) context */
    /* Sanitizer state exists only in those builds: a task header must stay
     * within two cache lines (every spawn writes one). */
#ifdef TERN_TSAN
    void *tsan; /* TSan fiber handle */
#endif
#ifdef TERN_ASAN
    const void *asan_bottom; /* ASan: bounds of this context's own stack */
    size_t asan_size;
#endif
} tern__fiber;

/* The stack pool of one runtime. Stacks are carved from large MAP_NORESERVE
 * regions (64 stacks in the first, doubling to 1024), so a million stacks
 * cost about a thousand mappings. The guard page uses MADV_GUARD_INSTALL
 * where the kernel has it (no extra mapping), mprotect while a process-wide
 * budget of extra mappings allows otherwise, and beyond that a canary at the
 * lowest usable bytes (guarded = 0) that the scheduler checks at switch-out
 * with tern__stack_check. Stack headers live outside the stacks, so carving
 * touches no stack memory. */
typedef struct tern__stack_pool tern__stack_pool;

/* stack_size: bytes per stack including the guard page, rounded up to pages;
 * at least TERN__STACK_MIN, at most TERN__STACK_MAX. ncaches: number of
 * per-worker caches, 1..TERN__STACK_MAX_CACHES (worker i uses cache i, without
 * locks; only worker i's thread may pass i). Returns 0, -EINVAL (out NULL or
 * a size or count out of range), -ENOMEM. */
#define TERN__STACK_MIN (16u * 1024)
#define TERN__STACK_MAX ((size_t)1 << 30)
#define TERN__STACK_MAX_CACHES 65536u
int tern__stack_pool_new(size_t stack_size, unsigned ncaches, tern__stack_pool **out);
/* Unmaps everything; every stack must have been put back, and no thread may
 * use the pool any more. */
void tern__stack_pool_free(tern__stack_pool *pool);
/* A stack for a new fiber, or NULL (out of memory or mappings). cache is the
 * calling worker's index; the cache refills in batches from a locked global
 * list, which grows by carving new regions. A cache index >= ncaches (e.g.
 * TERN__STACK_NO_CACHE, for a thread that is not a worker) goes to the global
 * list directly. Stacks handed out are reused hot: their pages stay
 * committed, most recently used first. */
#define TERN__STACK_NO_CACHE (~0u)
tern__stack *tern__stack_get(tern__stack_pool *pool, unsigned cache);
/* Gives s back to cache (the calling worker's); a full cache moves its colder
 * half to the global list. */
void tern__stack_put(tern__stack_pool *pool, unsigned cache, tern__stack *s);
/* Stacks carved so far (for tests and introspection). */
uint64_t tern__stack_pool_carved(const tern__stack_pool *pool);
/* Mappings the pool holds (regions), and stacks sitting in one cache; for
 * tests. cached() may only be called by the cache's owner. */
uint64_t tern__stack_pool_regions(const tern__stack_pool *pool);
unsigned tern__stack_pool_cached(const tern__stack_pool *pool, unsigned cache);
/* Test hook: force the guard kind of stacks carved from now on
 * (TERN__GUARD_AUTO is the default: madvise, then mprotect, then canary). */
enum { TERN__GUARD_AUTO, TERN__GUARD_MPROTECT, TERN__GUARD_CANARY };
void tern__stack_pool_set_guard(tern__stack_pool *pool, int kind);
/* 0 when the fallback canary at the bottom of s is intact (always 0 for a
 * guarded stack); -EFAULT when an overflow has overwritten it. */
int tern__stack_check(const tern__stack *s);
/* Writes the same report as the guard-page handler ("tern: task <id>
 * overflowed its stack ...") and aborts; for a failed tern__stack_check. */
_Noreturn void tern__stack_overflow_abort(const tern__stack *s, uint64_t task_id);

/* Prepares f to start at entry(arg) on stack s on its first switch-in; the
 * entry runs with a 16-byte-aligned stack (and fresh FP control state).
 * entry must never return: it ends by switching away with last = 1.
 * f must be zero-filled or tern__fiber_destroy'ed before its first init; an
 * f that has run before may be initialised again once it is switched out for
 * good (its old sanitizer state is released). */
void tern__fiber_init(tern__fiber *f, tern__stack *s, void (*entry)(void *), void *arg);
/* Fills f for the calling thread's own context (the scheduler side). That
 * context never migrates: only this thread may switch to it. */
void tern__fiber_init_thread(tern__fiber *f);
/* Saves the current context in from, resumes to. Returns when someone
 * switches back to from, possibly on another thread. `last` = 1 when from
 * will never be resumed (its stack is about to be reused): the sanitizers
 * forget it (ASan frees its fake stack, TSan its fiber state). Ignored in
 * plain builds, where this is a dozen instructions of assembly: callee-saved
 * registers, MXCSR and the x87 control word (x86-64) or x19-x30 and d8-d15
 * (aarch64), and the stack pointer. Thread-local addresses computed before
 * the call must not be reused after it (docs/design.md, invariant 3). */
void tern__fiber_switch(tern__fiber *from, tern__fiber *to, int last);
/* Frees a fiber's sanitizer state (not its stack). Idempotent. */
void tern__fiber_destroy(tern__fiber *f);

/* Per worker thread, before its first switch: an alternate signal stack
 * (unless the thread already has one, e.g. from ASan) and, once per process,
 * the SIGSEGV handler that reports a guard-page hit as
 * "tern: task <id> overflowed its stack (guard page at 0x...)" and aborts.
 * A fault elsewhere restores the previous SIGSEGV disposition (the default,
 * or e.g. ASan's handler) and lets the fault happen again under it.
 * Returns 0 or -ENOMEM / -errno. thread_exit frees the alternate stack. */
int tern__fiber_thread_init(void);
void tern__fiber_thread_exit(void);
/* The stack of the fiber about to run on this thread (NULL when the thread's
 * own context runs) and its task id; the overflow handler compares the fault
 * address with it. Call it right before switching in (from the thread's
 * own context, or from the fiber that switches to the next one directly),
 * and with NULL once the thread's own context runs again. */
void tern__fiber_set_current(tern__stack *s, uint64_t task_id);

#endif
