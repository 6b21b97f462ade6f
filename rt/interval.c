/*
 * Intervals: ticks due at start + k * period, for a task (tern_interval)
 * and for a loop (tern_call_every, in handle.c). tern__tick_next is the one
 * rule for what comes after a tick, missed or not.
 */
#include <errno.h>
#include <stdlib.h>

#include "rt/fault.h"
#include "rt/internal.h"

struct tern_interval {
    _Atomic uint64_t next; /* due time of the next tick */
    uint64_t period;
    tern_missed_tick policy;
    _Atomic int busy; /* a task is in tern_interval_tick */
};

uint64_t tern__tick_next(uint64_t due, uint64_t now, uint64_t period, int policy)
{
    uint64_t next = tern__after(due, period);
    if (now < next)
        return next; /* on time, or late by less than a period: the schedule holds */
    switch (policy) {
    case TERN_TICK_DELAY:
        return tern__after(now, period);
    case TERN_TICK_SKIP:
        /* (now - due) / period + 1 periods land strictly after now */
        return tern__after(due, ((now - due) / period + 1) * period);
    default:
        return next;
    }
}

int tern__tick_policy_ok(int policy)
{
    return policy == TERN_TICK_BURST || policy == TERN_TICK_DELAY ||
           policy == TERN_TICK_SKIP;
}

int tern_interval_new(uint64_t start, uint64_t period, tern_missed_tick policy,
                      tern_interval **out)
{
    if (!out || !period || !tern__tick_policy_ok(policy))
        return -EINVAL;
    tern_interval *iv = TERN__FAULT_ALLOC(malloc(sizeof *iv));
    if (!iv)
        return -ENOMEM;
    atomic_init(&iv->next, start ? start : tern_now());
    iv->period = period;
    iv->policy = policy;
    atomic_init(&iv->busy, 0);
    *out = iv;
    return 0;
}

int tern_interval_tick(tern_interval *iv, uint64_t deadline, uint64_t *when)
{
    if (!iv)
        return -EINVAL;
    if (!tern__task_self())
        return -EPERM;
    int idle = 0;
    if (!atomic_compare_exchange_strong_explicit(&iv->busy, &idle, 1, TERN__ACQUIRE,
                                                 TERN__RELAXED))
        return -EBUSY;
    uint64_t due = atomic_load_explicit(&iv->next, TERN__RELAXED);
    int r;
    if (deadline && deadline < due) {
        r = tern_sleep_until(deadline);
        if (r == 0)
            r = -ETIMEDOUT;
    } else {
        /* a due tick still answers a cancelled task with -ECANCELED, as
         * every suspension point does */
        r = tern_sleep_until(due);
    }
    if (r == 0) {
        uint64_t nx = tern__tick_next(due, tern_now(), iv->period, iv->policy);
        uint64_t exp = due; /* a reset meanwhile wins: its schedule stands */
        atomic_compare_exchange_strong_explicit(&iv->next, &exp, nx, TERN__RELAXED,
                                                TERN__RELAXED);
        if (when)
            *when = due;
    }
    atomic_store_explicit(&iv->busy, 0, TERN__RELEASE);
    return r;
}

int tern_interval_reset(tern_interval *iv)
{
    if (!iv)
        return -EINVAL;
    atomic_store_explicit(&iv->next, tern__after(tern_now(), iv->period), TERN__RELAXED);
    return 0;
}

uint64_t tern_interval_next(const tern_interval *iv)
{
    return iv ? atomic_load_explicit(&((tern_interval *)iv)->next, TERN__RELAXED) : 0;
}

void tern_interval_free(tern_interval *iv)
{
    free(iv);
}
