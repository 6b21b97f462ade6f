/*
 * Multishot receive with provided buffers: how a stream reads a socket on
 * io_uring (io/stream.c asks; plain reads remain for everything else).
 *
 * A stream's first read makes a record here and arms one multishot recv
 * SQE on the ring of the worker it runs on (its home). The kernel picks a
 * buffer from home's ring of provided buffers (uring.c) for every piece of
 * data that arrives; reap queues it on the record and wakes the reader,
 * which then reads straight from that buffer and puts it back when done.
 * So a connection read in a loop costs no SQE per read, and idle
 * connections pin no buffer of their own.
 *
 * Sharing the ring fairly:
 *  - A reader that falls behind stops its own SQE: with limit() buffers
 *    queued, home cancels it, and the socket's own buffer holds the rest
 *    until the reader has emptied the queue and arms again.
 *  - When the ring runs dry anyway, the kernel ends the SQE with ENOBUFS,
 *    losing nothing (the data stays in the socket). The reader makes plain
 *    reads into its stream's buffer until the ring has room again.
 * Either way the bytes come out in order: a plain read is made only when
 * nothing is queued and no SQE is armed.
 *
 * A record that is not armed and has nothing queued may move: the next arm
 * is on whichever worker the reader is on by then, so a stolen task reads
 * from its new worker's ring.
 *
 * Locking: the record's fields under its wait queue's spinlock; the queue
 * links (bufs->next) belong to the record that holds those buffers, under
 * the same lock. Only home submits or cancels the SQE (invariant 1):
 * arming happens on home by construction, a cancel from elsewhere goes as
 * a handle made with the record, so that freeing a stream cannot fail.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "io/driver.h"
#include "io/io.h"
#include "rt/fault.h"

_Atomic unsigned long tern__rx_nobufs, tern__rx_pauses;

struct tern__rx {
    tern__ioop op;         /* the SQE's record (kind TERN__URING_RECV): first */
    _Atomic unsigned refs; /* the stream's, the SQE's, a posted cancel's */
    tern_handle *stop;     /* the cancel tern__rx_free posts to home */
    tern__waitq q;         /* the reader, while it waits; its lock guards the rest */
    tern_loop *home;       /* whose ring the SQE is or was on */
    tern__bufs *bufs;      /* home's buffers (a reference) */
    unsigned nq;           /* buffers queued: head, bufs->next[head], ... tail */
    unsigned head, tail;
    int held; /* the buffer the reader holds, or -1 */
    int err;  /* for the reader after the queue: an error that ended the SQE */
    bool end; /* the peer closed: 0 after the queue, for ever */
    bool armed, paused;
    bool nobufs; /* the ring ran dry: the reader's next read is plain */
    bool single; /* the kernel has no multishot receive */
    bool gone;   /* freed: completions put their buffers straight back */
    struct tern__rx *anext, **aprev; /* home's bufs->armed list, home only */
};

/* Buffers a record may have queued before its SQE is stopped: room for a
 * burst of 64 KiB, and at least 16 records' worth in every ring. */
static unsigned limit(const tern__bufs *b)
{
    unsigned l = b->count / 16;
    return l < 2 ? 2 : l > 16 ? 16 : l;
}

static void unref(tern__rx *x)
{
    if (atomic_fetch_sub_explicit(&x->refs, 1, TERN__ACQ_REL) != 1)
        return;
    tern__bufs_unref(x->bufs);
    tern_handle_release(x->stop);
    free(x);
}

static void cancel_here(void *arg)
{
    tern__rx *x = arg;
    x->home->driver->ops->cancel(x->home->driver, (uintptr_t)&x->op);
    unref(x); /* the cancel's */
}

int tern__rx_new(int fd, tern__rx **out)
{
    tern_loop *w = tern__loop_self();
    if (!w || !w->current || w->driver->ops->kind != TERN__DRIVER_COMPLETION)
        return -EOPNOTSUPP;
    /* datagrams would be cut at a buffer's size; pipes have no recv */
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return -EOPNOTSUPP;
    tern__bufs *b = tern__uring_bufs(w->driver);
    if (!b)
        return -EOPNOTSUPP;
    tern__rx *x = TERN__FAULT_ALLOC(calloc(1, sizeof *x));
    tern_handle *h = x ? tern__handle_alloc(cancel_here, x) : NULL;
    if (!h) {
        free(x);
        tern__bufs_unref(b);
        return -ENOMEM;
    }
    x->op.kind = TERN__URING_RECV;
    x->op.code = TERN__IO_RECV_MULTI;
    x->op.fd = fd;
    atomic_init(&x->refs, 1); /* the stream's */
    x->stop = h;
    x->home = w;
    x->bufs = b;
    x->held = -1;
    *out = x;
    return 0;
}

/* ---- home: the SQE and its completions --------------------------------------------- */

/* Arms the SQE on w, the caller's worker, moving the record there first.
 * Nothing is queued or armed. 0, or -EAGAIN: read plainly this time. */
static int arm(tern__rx *x, tern_loop *w)
{
    if (w != x->home) {
        tern__bufs *b = tern__uring_bufs(w->driver);
        if (!b)
            return -EAGAIN;
        tern__bufs_unref(x->bufs);
        x->bufs = b;
        x->home = w;
    }
    tern__bufs *b = x->bufs;
    /* a ring nearly dry would end the SQE at once with ENOBUFS */
    if (b->count - atomic_load_explicit(&b->out, TERN__RELAXED) <= b->count / 8)
        return -EAGAIN;
    if (w->driver->ops->submit(w->driver, &x->op) < 0)
        return -EAGAIN;
    atomic_fetch_add_explicit(&x->refs, 1, TERN__RELAXED); /* the SQE's */
    TERN__LOCK(&x->q);
    x->armed = true;
    TERN__UNLOCK(&x->q);
    x->aprev = &b->armed;
    x->anext = b->armed;
    if (x->anext)
        x->anext->aprev = &x->anext;
    b->armed = x;
    return 0;
}

static void disarmed(tern__rx *x)
{
    *x->aprev = x->anext;
    if (x->anext)
        x->anext->aprev = x->aprev;
    x->anext = NULL;
    x->aprev = NULL;
}

void tern__rx_complete(tern__ioop *op, int res, unsigned flags)
{
    tern__rx *x = (tern__rx *)op;
    tern__bufs *b = x->bufs;
    bool more = (flags & IORING_CQE_F_MORE) != 0, pause = false;
    int put = -1;
    tern__waiter *done = NULL, *n;
    if (flags & IORING_CQE_F_BUFFER)
        atomic_fetch_add_explicit(&b->out, 1, TERN__RELAXED);
    TERN__LOCK(&x->q);
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res <= 0 || x->gone) {
            put = (int)bid;
        } else {
            b->len[bid] = (uint32_t)res;
            if (x->nq++)
                b->next[x->tail] = (uint16_t)bid;
            else
                x->head = bid;
            x->tail = bid;
            if (more && !x->paused && x->nq >= limit(b))
                pause = x->paused = true;
        }
    }
    if (res == 0) {
        x->end = true;
    } else if (res == -ENOBUFS) {
        x->nobufs = true;
        atomic_fetch_add_explicit(&tern__rx_nobufs, 1, TERN__RELAXED);
    } else if (res == -EINVAL) {
        x->single = true; /* before 6.0: no multishot recv */
    } else if (res < 0 && res != -ECANCELED) {
        x->err = res;
    }
    if (!more) {
        x->armed = false;
        x->paused = false;
        disarmed(x);
    }
    if ((n = tern__wq_claim(&x->q)))
        tern__waiter_defer(&done, n, 0);
    TERN__UNLOCK(&x->q);
    tern__wake_post_all(done);
    if (put >= 0)
        tern__bufs_put(b, (unsigned)put);
    if (pause) {
        atomic_fetch_add_explicit(&tern__rx_pauses, 1, TERN__RELAXED);
        x->home->driver->ops->cancel(x->home->driver, (uintptr_t)&x->op);
    }
    if (!more)
        unref(x); /* the SQE's */
}

void tern__rx_driver_gone(tern__bufs *b)
{
    while (b->armed) {
        tern__rx *x = b->armed;
        disarmed(x);
        TERN__LOCK(&x->q);
        x->armed = false;
        x->err = -ESHUTDOWN; /* for a reader, were one left */
        TERN__UNLOCK(&x->q);
        unref(x); /* the SQE's, which died with the ring */
    }
}

/* ---- the reader ----------------------------------------------------------------------
 */

void tern__rx_done(tern__rx *x)
{
    if (x->held >= 0) {
        tern__bufs_put(x->bufs, (unsigned)x->held);
        x->held = -1;
    }
}

ssize_t tern__rx_next(tern__rx *x, const char **data, uint64_t deadline)
{
    tern__rx_done(x);
    if (tern__cancelled())
        return -ECANCELED;
    tern__wake k;
    tern__waiter node = {0};
    for (;;) {
        enum { GOT, WAIT, ARM } act = GOT;
        ssize_t r = 0;
        TERN__LOCK(&x->q);
        tern__bufs *b = x->bufs;
        if (x->nq) {
            unsigned bid = x->head;
            x->head = b->next[bid];
            x->nq--;
            x->held = (int)bid;
            *data = b->data + (size_t)bid * b->size;
            r = (ssize_t)b->len[bid];
        } else if (x->err) {
            r = x->err;
            x->err = 0;
        } else if (x->end) {
            r = 0;
        } else if (x->single) {
            r = -EOPNOTSUPP;
        } else if (x->nobufs) {
            x->nobufs = false;
            r = -EAGAIN;
        } else if (!x->armed) {
            act = ARM;
        } else {
            act = WAIT;
            tern__wake_init(&k);
            node.wake = &k;
            tern__wq_push(&x->q, &node);
        }
        TERN__UNLOCK(&x->q);
        if (act == GOT)
            return r;
        if (act == ARM) {
            if ((r = arm(x, tern__loop_self())) < 0)
                return r;
            continue;
        }
        tern__wait_note(TERN__W_IO,
                        (uintptr_t)(unsigned)x->op.fd | (uintptr_t)TERN__IO_RECV << 32);
        int e = tern__wake_wait(&k, deadline, 0);
        if (e < 0) { /* what arrives meanwhile stays queued */
            TERN__LOCK(&x->q);
            tern__wq_unlink(&x->q, &node);
            TERN__UNLOCK(&x->q);
            return e;
        }
    }
}

void tern__rx_free(tern__rx *x)
{
    tern__rx_done(x);
    TERN__LOCK(&x->q);
    x->gone = true;
    bool armed = x->armed;
    unsigned nq = x->nq, bid = x->head;
    x->nq = 0;
    TERN__UNLOCK(&x->q);
    tern__bufs *b = x->bufs;
    for (; nq; nq--) { /* read the link before the kernel may reuse bid */
        unsigned next = b->next[bid];
        tern__bufs_put(b, bid);
        bid = next;
    }
    if (armed) {
        atomic_fetch_add_explicit(&x->refs, 1, TERN__RELAXED); /* the cancel's */
        if (tern__loop_self() == x->home) {
            cancel_here(x);
        } else {
            tern_handle *h = x->stop;
            x->stop = NULL;
            /* refused only at shutdown: the ring's teardown ends the SQE */
            if (tern__handle_post(x->home, h) < 0) {
                tern_handle_release(h);
                unref(x);
            }
        }
    }
    unref(x); /* the stream's */
}
