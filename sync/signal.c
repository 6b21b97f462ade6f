/*
 * Signals for tasks and threads (tern_signal). The handler and the thread
 * that takes what arrived live in rt/monitor.c; this side keeps the
 * subscriptions: a count of pending arrivals per signal and the waiters,
 * under the subscription's lock, and an optional channel.
 *
 * Why a handler and a thread rather than a signalfd: a signalfd sees a
 * signal only while every thread blocks it, which a library cannot
 * arrange for threads it did not create, and which is what silently
 * stopped the dump signal of a service that did it by hand. The handler
 * works whatever the application blocks, since the monitor thread
 * unblocks the subscribed signals in itself: a program that blocks them
 * in its own threads before starting the runtime (as bench/server.c does)
 * has them land on that thread alone, which also keeps them away from a
 * thread parked in a raw futex, where ThreadSanitizer would hold the
 * handler back for as long as the wait lasts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "rt/fault.h"
#include "sync/sync.h"

struct tern_signal {
    tern__waitq q;                   /* lock: pending; list: waiters */
    struct tern_signal *next, *prev; /* every subscription; subs_lock */
    tern_chan *ch;
    unsigned char member[NSIG];
    uint64_t pending[NSIG];
};

static pthread_mutex_t subs_lock = PTHREAD_MUTEX_INITIALIZER;
static tern_signal *subs;

/* On the monitor thread: count of arrivals of sig since the last call. */
static void on_arrival(int sig, uint64_t count)
{
    pthread_mutex_lock(&subs_lock);
    for (tern_signal *s = subs; s; s = s->next) {
        if (!s->member[sig])
            continue;
        tern__waiter *post = NULL, *w;
        TERN__LOCK(&s->q);
        s->pending[sig] += count;
        for (uint64_t k = 0; k < count && (w = tern__wq_claim(&s->q)); k++)
            tern__waiter_defer(&post, w, 0);
        TERN__UNLOCK(&s->q);
        tern__wake_post_all(post);
        for (uint64_t k = 0; s->ch && k < count; k++)
            if (tern_chan_try_send(s->ch, &sig) != 0)
                break; /* full (or closed): the count above still has it */
    }
    pthread_mutex_unlock(&subs_lock);
}

static void unlink_sub(tern_signal *s)
{
    pthread_mutex_lock(&subs_lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&subs_lock);
}

int tern_signal_new(const int *sigs, size_t n, tern_chan *ch, tern_signal **out)
{
    if (!out || !sigs || !n || (ch && tern__chan_elem_size(ch) != sizeof(int)))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (sigs[i] <= 0 || !tern__signal_ok(sigs[i]))
            return -EINVAL;
    tern_signal *s = TERN__FAULT_ALLOC(calloc(1, sizeof *s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        s->member[sigs[i]] = 1;
    s->ch = ch ? tern_chan_ref(ch) : NULL;
    /* listed before the handler goes in, so nothing after take is missed */
    pthread_mutex_lock(&subs_lock);
    s->next = subs;
    if (subs)
        subs->prev = s;
    subs = s;
    pthread_mutex_unlock(&subs_lock);
    int r = tern__signal_take(s->member, on_arrival);
    if (r < 0) {
        unlink_sub(s);
        tern_chan_release(s->ch);
        free(s);
        return r;
    }
    *out = s;
    return 0;
}

int tern_signal_wait(tern_signal *s, uint64_t deadline)
{
    if (!s)
        return -EINVAL;
    for (;;) {
        TERN__LOCK(&s->q);
        for (int sig = 1; sig < NSIG; sig++) {
            if (s->pending[sig]) {
                s->pending[sig]--;
                TERN__UNLOCK(&s->q);
                return sig;
            }
        }
        tern__wake k;
        tern__waiter w = {.wake = &k};
        tern__wake_init(&k);
        tern__wq_push(&s->q, &w);
        TERN__UNLOCK(&s->q);
        tern__wait_note(TERN__W_SIGNAL, (uintptr_t)s);
        int r = tern__wake_wait(&k, deadline, 0);
        if (r < 0) {
            TERN__LOCK(&s->q);
            tern__wq_unlink(&s->q, &w);
            TERN__UNLOCK(&s->q);
            return r;
        }
    }
}

void tern_signal_free(tern_signal *s)
{
    if (!s)
        return;
    if (tern__on_monitor()) {
        /* an on_stall callback: the monitor would wait for itself to
         * re-block the signals (rt/monitor.c, tern__signal_give) */
        fprintf(stderr, "tern: tern_signal_free called on tern's monitor thread (an "
                        "on_stall callback): not freed\n");
        return;
    }
    unlink_sub(s);
    tern__signal_give(s->member);
    tern_chan_release(s->ch);
    free(s);
}
