/*
 * Hierarchical timer wheel, one per worker loop. Only the owning thread calls
 * these functions (docs/design.md, invariant 1); another thread that wants a timer
 * gone marks its entry cancelled (tern__timer_cancel) and the owner reaps it.
 *
 * 6 levels of 64 slots. Level 0 slots are one tick (1 ms by default) wide,
 * level k slots 64^k ticks; an entry lives in the level whose slot width
 * matches how far its deadline is from the wheel's current time and moves
 * down as time advances; deadlines beyond 64^6 ticks wait at the top level
 * and are placed again each time round. Insert and unlink are O(1); finding
 * the next deadline scans one 64-bit occupancy word per level, so jumps of
 * time cost what the occupied slots passed cost, never a walk tick by tick.
 *
 * Lifetime rules:
 *  1. An entry is owned by whoever inserted it; the wheel only links it.
 *  2. tern__wheel_advance unlinks each expired (or cancelled) entry before it
 *     hands it to the callback, so the callback may free or reinsert it.
 *  3. state moves PENDING -> FIRED (owner, in advance) or PENDING -> CANCELLED
 *     (any thread, tern__timer_cancel; the owner in tern__wheel_remove);
 *     exactly one of them wins, by CAS.
 *  4. A cancelled entry stays linked until advance meets it (at its deadline,
 *     or earlier when its coarse slot comes due) and hands it to reap, unless
 *     the owner removes it first; then reap is not called.
 */
#ifndef TERN_WHEEL_H
#define TERN_WHEEL_H

#include <stdatomic.h>
#include <stdint.h>

#define TERN__WHEEL_LEVELS 6
#define TERN__WHEEL_SLOTS 64

enum { TERN__TIMER_IDLE, TERN__TIMER_PENDING, TERN__TIMER_FIRED, TERN__TIMER_CANCELLED };

typedef struct tern__timer {
    struct tern__timer *next, *prev; /* slot list */
    uint64_t deadline;               /* ns, absolute (tern_now() clock) */
    uint64_t seq;                    /* insertion order, for ties */
    _Atomic uint32_t state;
    uint8_t level, slot;
    uint8_t kind; /* owner's tag: what fired (sleep, handle, ...) */
} tern__timer;

typedef struct tern__wheel {
    uint64_t tick_ns; /* resolution, 1 ms by default */
    uint64_t elapsed; /* current tick: the one the last advance's now fell in */
    uint64_t origin;  /* ns at tick 0 */
    uint64_t seq;
    uint64_t count;     /* entries linked (cancelled ones included until reaped) */
    uint64_t fresh_seq; /* wheel.c's bookkeeping for the current tick's slot */
    uint64_t occupied[TERN__WHEEL_LEVELS];
    tern__timer *slots[TERN__WHEEL_LEVELS][TERN__WHEEL_SLOTS];
} tern__wheel;

void tern__wheel_init(tern__wheel *w, uint64_t now, uint64_t tick_ns);
/* Links t to expire at t->deadline (a deadline already past fires at the next
 * advance). Sets t->state = PENDING and gives t a fresh seq. t must be zeroed
 * before its first insert (prev == NULL means "not linked"); inserting an
 * entry that is still linked moves it, and a cancel it had is forgotten.
 * deadline must not change while t is linked. Owner thread only. */
void tern__wheel_insert(tern__wheel *w, tern__timer *t);
/* Unlinks a linked entry without firing or reaping it (owner thread only);
 * returns 1 if it was linked. A PENDING entry becomes CANCELLED, so a later
 * tern__timer_cancel returns 0. remove cannot tell whether another thread's
 * cancel won first; a caller that must know cancels first itself. */
int tern__wheel_remove(tern__wheel *w, tern__timer *t);
/* Fires every entry whose deadline <= now: each is unlinked, its state set
 * to FIRED, and fire(t, ctx) called, in deadline order (ties by insertion
 * order). An entry is never fired before its deadline, even one in the
 * current tick. Cancelled entries met on the way (any whose slot comes due,
 * whatever its deadline) are unlinked and passed to reap(t, ctx) instead.
 * Callbacks may free, reinsert or remove any entry and insert new ones, but
 * not call advance; an entry inserted during the call fires at the next call
 * at the earliest, even if already due (so a self-re-arming callback cannot
 * spin here; tern__wheel_next then returns a time <= now). A call within
 * the same tick as the last costs O(1) plus what it fires and what was armed
 * into that tick since; a call reaching a new tick costs O(occupied slots
 * passed + entries moved + k log k) for the k entries it gathers. Returns
 * the number fired. Owner thread only. */
uint64_t tern__wheel_advance(tern__wheel *w, uint64_t now,
                             void (*fire)(tern__timer *, void *),
                             void (*reap)(tern__timer *, void *), void *ctx);
/* Earliest time at which advance could fire something, as absolute ns, or
 * UINT64_MAX when the wheel is empty. Never later than the earliest deadline
 * linked (cancelled entries count), but may be earlier: for entries still
 * in a coarse slot it is that slot's start, and advancing to it moves them
 * to a finer level (so an entry causes at most one early wake per level,
 * plus one per 64^6 ticks beyond the range). It may be <= now when callbacks
 * armed due entries: poll, do not block. Owner only. */
uint64_t tern__wheel_next(const tern__wheel *w);
/* Marks t cancelled from any thread. Returns 1 if this call won (the entry
 * was PENDING), 0 if it had already fired or been cancelled. */
int tern__timer_cancel(tern__timer *t);

#endif
