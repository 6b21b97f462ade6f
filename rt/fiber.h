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
    void *sp;            /* saved stack pointer while switched out */
    tern__stack *stack;  /* NULL for a thread's own (scheduler) context */
    void *tsan;          /* TSan fiber handle, NULL in other builds */
    const void *asan_bottom; /* ASan: bounds of the stack being left/entered */
    size_t asan_size;
} tern__fiber;

/* The stack pool of one runtime. Stacks are carved from large MAP_NORESERVE
 * regions; the guard page uses MADV_GUARD_INSTALL where the kernel has it
 * (no extra mapping), mprotect while the mapping budget allows otherwise,
 * and a canary checked at switch-out beyond that. */
typedef struct tern__stack_pool tern__stack_pool;

/* ncaches: number of per-worker caches (worker i uses cache i, without
 * locks; only worker i's thread may pass i). Returns 0, -EINVAL, -ENOMEM. */
int tern__stack_pool_new(size_t stack_size, unsigned ncaches, tern__stack_pool **out);
/* Unmaps everything; every stack must have been put back. */
void tern__stack_pool_free(tern__stack_pool *pool);
/* A stack for a new fiber, or NULL (out of memory or mappings). cache is the
 * calling worker's index; the cache refills in batches from a locked global
 * list, which grows by carving new regions. Stacks handed out are reused
 * hot: their pages stay committed. */
tern__stack *tern__stack_get(tern__stack_pool *pool, unsigned cache);
/* Gives s back to cache (the calling worker's); a full cache moves half of
 * itself to the global list. */
void tern__stack_put(tern__stack_pool *pool, unsigned cache, tern__stack *s);
/* Stacks carved so far and mappings the pool holds (for tests). */
uint64_t tern__stack_pool_carved(const tern__stack_pool *pool);
/* 0 when the fallback canary at the bottom of s is intact. */
int tern__stack_check(const tern__stack *s);

/* Prepares f to start at entry(arg) on stack s on its first switch-in.
 * entry must never return: it ends by switching away for the last time. */
void tern__fiber_init(tern__fiber *f, tern__stack *s, void (*entry)(void *), void *arg);
/* Fills f for the calling thread's own context (the scheduler side). */
void tern__fiber_init_thread(tern__fiber *f);
/* Saves the current context in from, resumes to. Returns when someone
 * switches back to from. `last` = 1 when from will never be resumed (its
 * stack is about to be reused): the sanitizers forget it. */
void tern__fiber_switch(tern__fiber *from, tern__fiber *to, int last);
/* Frees a fiber's sanitizer state (not its stack). */
void tern__fiber_destroy(tern__fiber *f);

/* Per worker thread: alternate signal stack and the SIGSEGV handler that
 * reports a guard-page hit. name_current returns a description of the task
 * running on this thread (e.g. "task 42") for the message. */
int tern__fiber_thread_init(void);
void tern__fiber_thread_exit(void);
/* The stack of the fiber running on this thread (NULL when the thread's own
 * context runs); the overflow handler compares the fault address with it. */
void tern__fiber_set_current(tern__stack *s, uint64_t task_id);

#endif
