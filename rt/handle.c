/*
 * Loop-affine handles: call_soon, call_soon_threadsafe, call_later, call_at,
 * call_every (docs/design.md, invariant 4).
 *
 * A handle's state moves PENDING -> DONE (the loop, just before running it)
 * or PENDING -> CANCELLED (tern_handle_cancel, any thread); a CAS decides.
 * A call_every handle stays PENDING between its runs.
 * Cancelled call_soon handles are skipped when the FIFO reaches them;
 * cancelled timed handles are marked in the wheel and reaped by the owner.
 * The loop holds one reference until the handle ran or was reaped, the
 * caller one when it asked for the handle.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt/fault.h"
#include "rt/internal.h"

/* task.c: sleep entries share the wheel with handles */
void tern__sleep_fire(tern__sleep *sl);
void tern__sleep_reap(tern__sleep *sl);
tern__sleep *tern__sleep_of(tern__timer *tm);

static void handle_unref(tern_handle *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, TERN__ACQ_REL) == 1) {
        tern_context_release(h->ctx);
        free(h);
    }
}

void tern_handle_release(tern_handle *h)
{
    if (h)
        handle_unref(h);
}

int tern_handle_cancel(tern_handle *h)
{
    if (!h)
        return -EINVAL;
    /* seq_cst: pairs with every_run's fence (the timer back in the wheel,
     * then a look at the state) */
    uint32_t exp = TERN__HS_PENDING;
    while (!atomic_compare_exchange_strong_explicit(&h->state, &exp, TERN__HS_CANCELLED,
                                                    TERN__SEQ_CST, TERN__RELAXED))
        if (exp != TERN__HS_RUNNING)
            return -EALREADY; /* a repeating handle's run under way ends it */
    if (h->timer.kind == TERN__TIMER_HANDLE)
        tern__timer_cancel(&h->timer); /* the owner reaps it */
    return 0;
}

int tern_handle_cancelled(const tern_handle *h)
{
    return h && atomic_load_explicit(&((tern_handle *)h)->state, TERN__ACQUIRE) ==
                    TERN__HS_CANCELLED;
}

static void handle_call(tern_loop *w, tern_handle *h)
{
    tern_context *prev = tern__context_enter(h->ctx);
    TERN__STAT_INC(w, handles_run); /* first: the watchdog's sign of progress */
    atomic_store_explicit(&w->busy_cb, (uintptr_t)h->cb, TERN__RELAXED);
    h->cb(h->arg);
    atomic_store_explicit(&w->busy_cb, 0, TERN__RELAXED);
    tern__context_leave(prev);
}

static int handle_pending(tern_handle *h)
{
    return atomic_load_explicit(&h->state, TERN__ACQUIRE) == TERN__HS_PENDING;
}

/* A repeating handle's run: PENDING -> RUNNING for the callback (a cancel
 * after the CAS lets the run end but starts no other), RUNNING -> PENDING,
 * and its timer goes back in the wheel for the next tick, until a cancel.
 * A cancel that lands while the timer is out of the wheel cannot mark it,
 * so the state is looked at again once the timer is back in. */
static void every_run(tern_loop *w, tern_handle *h)
{
    uint64_t now = tern_now();
    uint32_t exp = TERN__HS_PENDING;
    if (atomic_compare_exchange_strong_explicit(&h->state, &exp, TERN__HS_RUNNING,
                                                TERN__ACQ_REL, TERN__RELAXED)) {
        handle_call(w, h);
        exp = TERN__HS_RUNNING;
        if (atomic_compare_exchange_strong_explicit(&h->state, &exp, TERN__HS_PENDING,
                                                    TERN__ACQ_REL, TERN__RELAXED)) {
            h->timer.deadline =
                tern__tick_next(h->timer.deadline, now, h->period, h->policy);
            tern__wheel_insert(&w->wheel, &h->timer);
            TERN__FENCE(); /* the timer back in, then the look (tern_handle_cancel) */
            if (handle_pending(h))
                return; /* the loop keeps its reference */
            tern__wheel_remove(&w->wheel, &h->timer);
        }
    }
    handle_unref(h);
}

/* Runs h if nobody cancelled it first. */
static void handle_run(tern_loop *w, tern_handle *h)
{
    if (h->period) {
        every_run(w, h);
        return;
    }
    uint32_t exp = TERN__HS_PENDING;
    if (atomic_compare_exchange_strong_explicit(&h->state, &exp, TERN__HS_DONE,
                                                TERN__ACQ_REL, TERN__RELAXED))
        handle_call(w, h);
    handle_unref(h);
}

static int handle_new(tern_loop *w, tern_callback_fn cb, void *arg, tern_handle **out,
                      tern_handle **hp)
{
    if (!cb || !w)
        return -EINVAL;
    tern_handle *h = TERN__FAULT_ALLOC(malloc(sizeof *h));
    if (!h)
        return -ENOMEM;
    memset(h, 0, sizeof *h);
    atomic_init(&h->refs, out ? 2 : 1);
    atomic_init(&h->state, TERN__HS_PENDING);
    h->cb = cb;
    h->arg = arg;
    h->ctx = tern__context_capture();
    if (out)
        *out = h;
    *hp = h;
    return 0;
}

static void fifo_append(tern_loop *w, tern_handle *first, tern_handle *last, uint64_t n)
{
    last->next = NULL;
    if (w->fifo_tail)
        w->fifo_tail->next = first;
    else
        w->fifo_head = first;
    w->fifo_tail = last;
    atomic_store_explicit(&w->fifo_len,
                          atomic_load_explicit(&w->fifo_len, TERN__RELAXED) + n,
                          TERN__RELAXED);
}

static tern_loop *own_loop(tern_loop *loop, int *err)
{
    tern_loop *self = tern__loop_self();
    if (!loop)
        loop = self;
    *err = !loop ? -EINVAL : loop != self ? -EPERM : 0;
    if (!*err && atomic_load_explicit(&loop->rt->stopping, TERN__ACQUIRE) && loop->closed)
        *err = -ESHUTDOWN;
    return loop;
}

int tern_call_soon(tern_loop *loop, tern_callback_fn cb, void *arg, tern_handle **out)
{
    int err;
    tern_loop *w = own_loop(loop, &err);
    if (!cb)
        return -EINVAL;
    if (err)
        return err;
    tern_handle *h;
    if ((err = handle_new(w, cb, arg, out, &h)) < 0)
        return err;
    fifo_append(w, h, h, 1);
    return 0;
}

tern_handle *tern__handle_alloc(tern_callback_fn cb, void *arg)
{
    tern_handle *h = TERN__FAULT_ALLOC(malloc(sizeof *h));
    if (!h)
        return NULL;
    memset(h, 0, sizeof *h);
    atomic_init(&h->refs, 1);
    atomic_init(&h->state, TERN__HS_PENDING);
    h->cb = cb;
    h->arg = arg;
    h->ctx = tern__context_capture();
    return h;
}

int tern__handle_post(tern_loop *loop, tern_handle *h)
{
    if (loop == tern__loop_self() && !loop->closed) {
        /* From the loop's own thread it is a plain call_soon: the same FIFO
         * keeps it in order with call_soon (asyncio's single _ready). */
        fifo_append(loop, h, h, 1);
        return 0;
    }
    h->next = NULL;
    pthread_mutex_lock(&loop->inbox_lock);
    if (loop->closed) {
        pthread_mutex_unlock(&loop->inbox_lock);
        return -ESHUTDOWN;
    }
    if (loop->inbox_tail)
        loop->inbox_tail->next = h;
    else
        loop->inbox_head = h;
    loop->inbox_tail = h;
    atomic_store_explicit(&loop->inbox_nonempty, 1, TERN__RELEASE);
    pthread_mutex_unlock(&loop->inbox_lock);
    /* seq_cst pairs with park's store of parked then read of the inbox */
    if (loop != tern__loop_self() &&
        atomic_exchange_explicit(&loop->parked, 0, TERN__SEQ_CST))
        tern__loop_wake(loop);
    return 0;
}

int tern_call_soon_threadsafe(tern_loop *loop, tern_callback_fn cb, void *arg,
                              tern_handle **out)
{
    if (!loop || !cb)
        return -EINVAL;
    tern_handle *h;
    int err = handle_new(loop, cb, arg, out, &h);
    if (err < 0)
        return err;
    if ((err = tern__handle_post(loop, h)) < 0) {
        if (out)
            *out = NULL;
        tern_context_release(h->ctx);
        free(h);
    }
    return err;
}

/* A timed handle due at when; period 0 runs once (call_at), else it
 * repeats under policy (call_every). Arguments checked by the callers. */
static int timed_new(tern_loop *loop, uint64_t when, uint64_t period, int policy,
                     tern_callback_fn cb, void *arg, tern_handle **out)
{
    int err;
    tern_loop *w = own_loop(loop, &err);
    if (err)
        return err;
    tern_handle *h;
    if ((err = handle_new(w, cb, arg, out, &h)) < 0)
        return err;
    h->period = period;
    h->policy = policy;
    h->timer.deadline = when;
    h->timer.kind = TERN__TIMER_HANDLE;
    tern__wheel_insert(&w->wheel, &h->timer);
    return 0;
}

int tern_call_at(tern_loop *loop, uint64_t when, tern_callback_fn cb, void *arg,
                 tern_handle **out)
{
    if (!cb)
        return -EINVAL;
    return timed_new(loop, when, 0, 0, cb, arg, out);
}

int tern_call_every(tern_loop *loop, uint64_t first, uint64_t period,
                    tern_missed_tick policy, tern_callback_fn cb, void *arg,
                    tern_handle **out)
{
    if (!cb || !period || !tern__tick_policy_ok(policy))
        return -EINVAL;
    /* first 0: now, as tern_interval_new's start */
    return timed_new(loop, first ? first : tern_now(), period, policy, cb, arg, out);
}

int tern_call_later(tern_loop *loop, uint64_t delay, tern_callback_fn cb, void *arg,
                    tern_handle **out)
{
    /* From the clock now, not the loop's time cached at the start of the
     * turn: a task that computed for a while before this call would
     * otherwise see its callback run early (asyncio counts the same way). */
    return tern_call_at(loop, tern__after(tern_now(), delay), cb, arg, out);
}

static tern_handle *handle_of(tern__timer *tm)
{
    return (tern_handle *)((char *)tm - offsetof(tern_handle, timer));
}

void tern__timer_fire(tern__timer *tm, void *ctx)
{
    if (tm->kind == TERN__TIMER_SLEEP)
        tern__sleep_fire(tern__sleep_of(tm));
    else
        handle_run(ctx, handle_of(tm));
}

void tern__timer_reap(tern__timer *tm, void *ctx)
{
    if (tm->kind == TERN__TIMER_SLEEP)
        tern__sleep_reap(tern__sleep_of(tm));
    else
        handle_unref(handle_of(tm));
}

/* Moves the threadsafe inbox into the FIFO (both in arrival order). */
static void inbox_splice(tern_loop *w)
{
    if (!atomic_load_explicit(&w->inbox_nonempty, TERN__ACQUIRE))
        return;
    pthread_mutex_lock(&w->inbox_lock);
    tern_handle *first = w->inbox_head, *last = w->inbox_tail;
    w->inbox_head = w->inbox_tail = NULL;
    atomic_store_explicit(&w->inbox_nonempty, 0, TERN__RELAXED);
    pthread_mutex_unlock(&w->inbox_lock);
    uint64_t n = 0;
    for (tern_handle *h = first; h; h = h->next)
        n++;
    if (first)
        fifo_append(w, first, last, n);
}

/* Runs the handles that were ready when this turn began; those they
 * schedule wait for the next turn (asyncio's _run_once). */
void tern__handles_run(tern_loop *w)
{
    inbox_splice(w);
    uint64_t n = atomic_load_explicit(&w->fifo_len, TERN__RELAXED);
    while (n--) {
        tern_handle *h = w->fifo_head;
        w->fifo_head = h->next;
        if (!w->fifo_head)
            w->fifo_tail = NULL;
        atomic_store_explicit(&w->fifo_len,
                              atomic_load_explicit(&w->fifo_len, TERN__RELAXED) - 1,
                              TERN__RELAXED);
        handle_run(w, h);
    }
}

int tern__handles_pending(tern_loop *w)
{
    return atomic_load_explicit(&w->fifo_len, TERN__RELAXED) != 0 ||
           atomic_load_explicit(&w->inbox_nonempty, TERN__ACQUIRE);
}

static void reap_all(tern__timer *tm, void *ctx)
{
    tern__timer_reap(tm, ctx);
}

/* At loop exit: close the inbox, run every pending call_soon handle (those
 * they schedule too, up to a bound so a handle that reschedules itself
 * cannot keep the loop alive), and drop timed handles and sleep entries
 * that are not due. */
void tern__handles_drain(tern_loop *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    w->closed = 1;
    pthread_mutex_unlock(&w->inbox_lock);
    for (int round = 0; round < 1000 && tern__handles_pending(w); round++)
        tern__handles_run(w);
    while (w->fifo_head) { /* still rescheduling after 1000 rounds */
        tern_handle *h = w->fifo_head;
        w->fifo_head = h->next;
        handle_unref(h);
    }
    w->fifo_tail = NULL;
    atomic_store_explicit(&w->fifo_len, 0, TERN__RELAXED);
    /* Everything left in the wheel is dropped: cancel marks every entry,
     * then an advance to the end of time hands each to reap. */
    for (unsigned l = 0; l < TERN__WHEEL_LEVELS; l++)
        for (unsigned s = 0; s < TERN__WHEEL_SLOTS; s++)
            for (tern__timer *t = w->wheel.slots[l][s]; t; t = t->next)
                tern__timer_cancel(t);
    tern__wheel_advance(&w->wheel, UINT64_MAX / 2, reap_all, reap_all, w);
    tern__sleep_reap_remote(w);
}
