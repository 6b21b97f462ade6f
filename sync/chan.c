/*
 * Channels and select.
 *
 * One spinlock (recvq's) guards a channel: its ring of buffered messages
 * and both wait queues. The rules, Go's hchan in miniature:
 *  - a sender that finds a waiting receiver copies straight into the
 *    receiver's buffer; otherwise into the ring; otherwise (full) it waits
 *    with a pointer to its message;
 *  - a receiver takes the oldest buffered message and, when a sender was
 *    waiting, moves that sender's message into the freed slot (so order is
 *    kept); with nothing buffered it takes a waiting sender's message
 *    directly (rendezvous channels); otherwise it waits.
 * A receiver therefore waits only while the ring is empty and a sender only
 * while it is full, so close can settle every waiter at once.
 *
 * Waiters are completed after the lock is dropped: they are claimed (and
 * unlinked) under it, collected on a list through their next field, and
 * posted afterwards.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt/fault.h"
#include "sync/sync.h"

struct tern_chan {
    tern__waitq recvq; /* its lock guards the whole channel */
    tern__waitq sendq;
    _Atomic uint32_t refs;
    size_t esize;
    size_t cap;               /* TERN_CHAN_UNBOUNDED, or the bound (0: rendezvous) */
    size_t head, count, size; /* the ring: count messages from head, size slots */
    unsigned char *buf;
    int closed;
    int oneshot;
};

#define MAX_ELEM 65536
#define UNBOUNDED_FIRST 16

static int chan_new(size_t esize, size_t cap, int oneshot, tern_chan **out)
{
    if (!out || esize == 0 || esize > MAX_ELEM)
        return -EINVAL;
    size_t size = cap == TERN_CHAN_UNBOUNDED ? UNBOUNDED_FIRST : cap;
    if (size > (SIZE_MAX - sizeof(tern_chan)) / esize)
        return -ENOMEM;
    /* A bounded ring never moves, so it lives right after the header: one
     * allocation per channel, and its first slots share the header's
     * cache lines. An unbounded one grows into its own buffer. */
    int inline_buf = cap != TERN_CHAN_UNBOUNDED;
    size_t bytes = sizeof(tern_chan) + (inline_buf ? size * esize : 0);
    tern_chan *ch = TERN__FAULT_ALLOC(calloc(1, bytes));
    if (!ch)
        return -ENOMEM;
    if (inline_buf)
        ch->buf = (unsigned char *)(ch + 1);
    else if (!(ch->buf = TERN__FAULT_ALLOC(malloc(size * esize)))) {
        free(ch);
        return -ENOMEM;
    }
    atomic_init(&ch->refs, 1);
    ch->esize = esize;
    ch->cap = cap;
    ch->size = size;
    ch->oneshot = oneshot;
    *out = ch;
    return 0;
}

int tern_chan_new(size_t esize, size_t cap, tern_chan **out)
{
    return chan_new(esize, cap, 0, out);
}

int tern_chan_new_oneshot(size_t esize, tern_chan **out)
{
    return chan_new(esize, 1, 1, out);
}

tern_chan *tern_chan_ref(tern_chan *ch)
{
    if (ch)
        atomic_fetch_add_explicit(&ch->refs, 1, TERN__RELAXED);
    return ch;
}

void tern_chan_release(tern_chan *ch)
{
    if (!ch || atomic_fetch_sub_explicit(&ch->refs, 1, TERN__ACQ_REL) != 1)
        return;
    if (ch->cap == TERN_CHAN_UNBOUNDED)
        free(ch->buf);
    free(ch);
}

size_t tern__chan_esize(const tern_chan *ch)
{
    return ch->esize;
}

size_t tern_chan_cap(tern_chan *ch)
{
    return ch ? ch->cap : 0;
}

size_t tern_chan_len(tern_chan *ch)
{
    if (!ch)
        return 0;
    TERN__LOCK(&ch->recvq);
    size_t n = ch->count;
    TERN__UNLOCK(&ch->recvq);
    return n;
}

/* ---- under the lock --------------------------------------------------------- */

static unsigned char *slot(tern_chan *ch, size_t i)
{
    return ch->buf + ((ch->head + i) % ch->size) * ch->esize;
}

static void close_locked(tern_chan *ch, tern__waiter **post)
{
    tern__waiter *w;
    ch->closed = 1;
    while ((w = tern__wq_claim(&ch->sendq)))
        tern__waiter_defer(post, w, -EPIPE);
    if (ch->count == 0)
        while ((w = tern__wq_claim(&ch->recvq)))
            tern__waiter_defer(post, w, 0);
}

static int grow(tern_chan *ch)
{
    size_t size = ch->size * 2;
    if (size > SIZE_MAX / ch->esize)
        return -ENOMEM;
    unsigned char *buf = TERN__FAULT_ALLOC(malloc(size * ch->esize));
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < ch->count; i++)
        memcpy(buf + i * ch->esize, slot(ch, i), ch->esize);
    free(ch->buf); /* only unbounded channels grow */
    ch->buf = buf;
    ch->head = 0;
    ch->size = size;
    return 0;
}

/* Sends without waiting: 0, -EPIPE, -EAGAIN (full), -ENOMEM. */
static int send_now(tern_chan *ch, const void *elem, tern__waiter **post)
{
    if (ch->closed)
        return -EPIPE;
    tern__waiter *w = tern__wq_claim(&ch->recvq);
    if (w) {
        memcpy(w->elem, elem, ch->esize);
        tern__waiter_defer(post, w, 1);
    } else {
        if (ch->count == ch->size) {
            if (ch->cap != TERN_CHAN_UNBOUNDED)
                return -EAGAIN;
            int r = grow(ch);
            if (r < 0)
                return r;
        }
        memcpy(slot(ch, ch->count), elem, ch->esize);
        ch->count++;
    }
    if (ch->oneshot)
        close_locked(ch, post);
    return 0;
}

/* Receives without waiting: 1, 0 (closed and drained), -EAGAIN (empty). */
static int recv_now(tern_chan *ch, void *elem, tern__waiter **post)
{
    tern__waiter *w;
    if (ch->count) {
        memcpy(elem, slot(ch, 0), ch->esize);
        ch->head = (ch->head + 1) % ch->size;
        ch->count--;
        if ((w = tern__wq_claim(&ch->sendq))) {
            memcpy(slot(ch, ch->count), w->elem, ch->esize);
            ch->count++;
            tern__waiter_defer(post, w, 0);
        }
        return 1;
    }
    if ((w = tern__wq_claim(&ch->sendq))) { /* rendezvous */
        memcpy(elem, w->elem, ch->esize);
        tern__waiter_defer(post, w, 0);
        return 1;
    }
    return ch->closed ? 0 : -EAGAIN;
}

size_t tern__chan_waiting(tern_chan *ch, int op)
{
    TERN__LOCK(&ch->recvq); /* it guards both queues */
    size_t n = tern__wq_count(op == TERN_SELECT_SEND ? &ch->sendq : &ch->recvq);
    TERN__UNLOCK(&ch->recvq);
    return n;
}

/* ---- send and receive ---------------------------------------------------------- */

enum { WAIT, NOWAIT };

static int chan_op(tern_chan *ch, int op, void *elem, uint64_t deadline, int mode)
{
    if (!ch || !elem)
        return -EINVAL;
    tern__waiter *post = NULL;
    TERN__LOCK(&ch->recvq);
    int r =
        op == TERN_SELECT_SEND ? send_now(ch, elem, &post) : recv_now(ch, elem, &post);
    if (r != -EAGAIN || mode == NOWAIT) {
        TERN__UNLOCK(&ch->recvq);
        tern__wake_post_all(post);
        return r;
    }
    tern__wake k;
    tern__waiter w = {.wake = &k, .elem = elem};
    tern__waitq *q = op == TERN_SELECT_SEND ? &ch->sendq : &ch->recvq;
    tern__wake_init(&k);
    tern__wq_push(q, &w);
    TERN__UNLOCK(&ch->recvq);
    tern__wait_note(op == TERN_SELECT_SEND ? TERN__W_CHAN_SEND : TERN__W_CHAN_RECV,
                    (uintptr_t)ch);
    r = tern__wake_wait(&k, deadline, 0);
    if (r < 0) {
        TERN__LOCK(&ch->recvq);
        tern__wq_unlink(q, &w);
        TERN__UNLOCK(&ch->recvq);
        return r;
    }
    return w.result;
}

size_t tern__chan_elem_size(const tern_chan *ch)
{
    return ch->esize;
}

int tern_chan_send(tern_chan *ch, const void *elem)
{
    return chan_op(ch, TERN_SELECT_SEND, (void *)elem, 0, WAIT);
}

int tern_chan_send_until(tern_chan *ch, const void *elem, uint64_t deadline)
{
    return chan_op(ch, TERN_SELECT_SEND, (void *)elem, deadline, WAIT);
}

int tern_chan_try_send(tern_chan *ch, const void *elem)
{
    return chan_op(ch, TERN_SELECT_SEND, (void *)elem, 0, NOWAIT);
}

int tern_chan_recv(tern_chan *ch, void *elem)
{
    return chan_op(ch, TERN_SELECT_RECV, elem, 0, WAIT);
}

int tern_chan_recv_until(tern_chan *ch, void *elem, uint64_t deadline)
{
    return chan_op(ch, TERN_SELECT_RECV, elem, deadline, WAIT);
}

int tern_chan_try_recv(tern_chan *ch, void *elem)
{
    return chan_op(ch, TERN_SELECT_RECV, elem, 0, NOWAIT);
}

int tern_chan_close(tern_chan *ch)
{
    if (!ch)
        return -EINVAL;
    tern__waiter *post = NULL;
    TERN__LOCK(&ch->recvq);
    int was = ch->closed;
    if (!was)
        close_locked(ch, &post);
    TERN__UNLOCK(&ch->recvq);
    tern__wake_post_all(post);
    return was ? -EALREADY : 0;
}

/* ---- select ------------------------------------------------------------------------ */

#define SELECT_MAX 64

static uint32_t select_rand(void)
{
    /* Per thread; used only before the first suspension (invariant 3). */
    static __thread uint32_t x;
    if (!x)
        x = (uint32_t)(uintptr_t)&x | 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static tern__waitq *case_queue(tern_select_case *c)
{
    return c->op == TERN_SELECT_SEND ? &c->chan->sendq : &c->chan->recvq;
}

/* Locks (or unlocks) the distinct channels of a select in address order,
 * the one order every select agrees on; single operations hold one lock
 * at a time, so nothing can deadlock. */
static size_t lock_order(tern_select_case *cases, size_t n, tern_chan **chans)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        tern_chan *ch = cases[i].chan;
        size_t j = m;
        if (!ch)
            continue;
        while (j > 0 && chans[j - 1] > ch)
            j--;
        if (j > 0 && chans[j - 1] == ch)
            continue;
        memmove(chans + j + 1, chans + j, (m - j) * sizeof *chans);
        chans[j] = ch;
        m++;
    }
    return m;
}

static int select_impl(tern_select_case *cases, size_t n, uint64_t deadline, int mode)
{
    if (!cases || n == 0 || n > SELECT_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (cases[i].chan &&
            ((cases[i].op != TERN_SELECT_SEND && cases[i].op != TERN_SELECT_RECV) ||
             !cases[i].elem))
            return -EINVAL;
    /* A random order, so that when several cases are ready each gets its
     * turn (Go's rule). */
    unsigned char order[SELECT_MAX];
    for (size_t i = 0; i < n; i++) {
        size_t j = select_rand() % (i + 1);
        order[i] = order[j];
        order[j] = (unsigned char)i;
    }
    tern_chan *chans[SELECT_MAX];
    size_t m = lock_order(cases, n, chans);
    for (size_t j = 0; j < m; j++)
        TERN__LOCK(&chans[j]->recvq);

    tern__waiter *post = NULL;
    for (size_t k = 0; k < n; k++) {
        tern_select_case *c = &cases[order[k]];
        int r = -EAGAIN;
        if (c->chan)
            r = c->op == TERN_SELECT_SEND ? send_now(c->chan, c->elem, &post)
                                          : recv_now(c->chan, c->elem, &post);
        if (r != -EAGAIN) {
            for (size_t j = 0; j < m; j++)
                TERN__UNLOCK(&chans[j]->recvq);
            tern__wake_post_all(post);
            c->result = r;
            return order[k];
        }
    }
    if (mode == NOWAIT) {
        for (size_t j = 0; j < m; j++)
            TERN__UNLOCK(&chans[j]->recvq);
        return -EAGAIN;
    }
    /* Nothing ready: one node per case, all on one record, so the first
     * waker to claim it wins and the other nodes are skipped. */
    tern__wake k;
    tern__waiter w[SELECT_MAX];
    tern__wake_init(&k);
    for (size_t i = 0; i < n; i++) {
        w[i] = (tern__waiter){.wake = &k, .elem = cases[i].elem, .index = (int)i};
        if (cases[i].chan)
            tern__wq_push(case_queue(&cases[i]), &w[i]);
    }
    for (size_t j = 0; j < m; j++)
        TERN__UNLOCK(&chans[j]->recvq);

    tern__wait_note(TERN__W_SELECT, (uintptr_t)n);
    int r = tern__wake_wait(&k, deadline, 0);
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        TERN__LOCK(&cases[i].chan->recvq);
        tern__wq_unlink(case_queue(&cases[i]), &w[i]);
        TERN__UNLOCK(&cases[i].chan->recvq);
    }
    if (r < 0)
        return r;
    int i = atomic_load_explicit(&k.fired, TERN__RELAXED);
    cases[i].result = w[i].result;
    return i;
}

int tern_select(tern_select_case *cases, size_t n, uint64_t deadline)
{
    return select_impl(cases, n, deadline, WAIT);
}

int tern_try_select(tern_select_case *cases, size_t n)
{
    return select_impl(cases, n, 0, NOWAIT);
}
