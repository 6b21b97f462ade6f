/*
 * Multishot accept on io_uring: tern_accept's path on that backend.
 *
 * A listener that tasks accept on gets one record here, found by (runtime,
 * descriptor), and one multishot accept SQE on the ring of the worker that
 * first accepted on it (its home). Every connection the kernel accepts
 * comes back as a completion on home; reap hands it to the first waiting
 * tern_accept caller, or queues it on the record when nobody waits. So a
 * server's accept loop costs no SQE per connection, and any worker's task
 * may take a connection from any other's listener.
 *
 * Back-pressure: with READY_PAUSE connections queued and nobody taking
 * them, the SQE is cancelled; the kernel's backlog then holds the rest, as
 * for a server that stops calling accept(2), and the next caller who finds
 * the queue short re-arms. An error (EMFILE, ENFILE, ENOMEM) ends the
 * multishot: it goes to one waiter, or to the next caller, exactly as a
 * single accept's would, and the SQE is armed again only for waiters left.
 *
 * A record leaves the table when its descriptor is closed with tern_close
 * or its number comes back for another descriptor tern makes (the same
 * hook as the epoll table's, tern__io_fd_forget): its waiters get -EBADF, its
 * queued connections are closed, and the SQE is cancelled, since the
 * kernel holds the listening socket for as long as one is armed. A record
 * lives until the table, its callers and its SQE have all let go of it;
 * the rings' teardown (uring_close) lets go of SQEs that never finished.
 *
 * Locking: the table under tab_lock, held only to find, add or drop a
 * record; everything else in a record under its wait queue's spinlock.
 * Only home submits or cancels the SQE (SINGLE_ISSUER, invariant 1): others
 * ask it with a handle.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/driver.h"
#include "io/io.h"
#include "rt/fault.h"

/* Connections accepted and not taken at which the SQE is cancelled. */
#define READY_PAUSE 64

typedef struct listener {
    tern__ioop op; /* the SQE's record (kind TERN__URING_ACCEPT): first */
    tern_runtime *rt;
    tern_loop *home;
    tern__driver *drv; /* home's */
    int fd;
    _Atomic unsigned refs; /* the table's, the SQE's while armed, callers' */
    tern__waitq q;         /* waiting callers; its lock guards what follows */
    int *ready;            /* accepted, not taken: a FIFO ring of cap */
    size_t head, nready, cap;
    int err;     /* for the next caller: an error that ended the SQE */
    bool armed;  /* an SQE is in the kernel, or home was asked for one */
    bool paused; /* cancelled for back-pressure */
    bool single; /* the kernel refused multishot here: plain accepts */
    bool gone;   /* found no more: closed, or its ring is gone */
    /* under tab_lock: */
    bool in_tab;           /* the table's reference is held */
    struct listener *next; /* every record, until it is freed */
    struct listener *work; /* a forget's or a teardown's list */
} listener;

static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
static listener *tab;
static _Atomic unsigned nrecords; /* lets tern__accept_forget skip the lock */
static _Atomic int disabled = -1; /* TERN_NO_MULTISHOT=1: always plain accepts */

static void unref(listener *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, TERN__ACQ_REL) != 1)
        return;
    pthread_mutex_lock(&tab_lock);
    listener **p = &tab;
    while (*p != l)
        p = &(*p)->next;
    *p = l->next;
    pthread_mutex_unlock(&tab_lock);
    for (size_t i = 0; i < l->nready; i++)
        close(l->ready[(l->head + i) % l->cap]);
    free(l->ready);
    free(l);
    atomic_fetch_sub_explicit(&nrecords, 1, TERN__RELAXED);
}

/* Takes fd's records out of the table, with a reference each, chained
 * through work. */
static listener *take_out(int fd)
{
    listener *list = NULL;
    pthread_mutex_lock(&tab_lock);
    for (listener *l = tab; l; l = l->next)
        if (l->in_tab && l->fd == fd) {
            l->in_tab = false;
            atomic_fetch_add_explicit(&l->refs, 1, TERN__RELAXED);
            l->work = list;
            list = l;
        }
    pthread_mutex_unlock(&tab_lock);
    return list;
}

/* The record for (w's runtime, fd), made with w as home when there is
 * none; with a reference for the caller. NULL for memory. */
static listener *find(tern_loop *w, int fd)
{
    pthread_mutex_lock(&tab_lock);
    listener *l = tab;
    while (l && (!l->in_tab || l->fd != fd || l->rt != w->rt))
        l = l->next;
    if (!l && (l = TERN__FAULT_ALLOC(calloc(1, sizeof *l)))) {
        l->op.kind = TERN__URING_ACCEPT;
        l->op.code = TERN__IO_ACCEPT_MULTI;
        l->op.fd = fd;
        l->op.flags = SOCK_CLOEXEC;
        l->rt = w->rt;
        l->home = w;
        l->drv = w->driver;
        l->fd = fd;
        atomic_init(&l->refs, 1); /* the table's */
        l->in_tab = true;
        l->next = tab;
        tab = l;
        atomic_fetch_add_explicit(&nrecords, 1, TERN__RELAXED);
    }
    if (l)
        atomic_fetch_add_explicit(&l->refs, 1, TERN__RELAXED);
    pthread_mutex_unlock(&tab_lock);
    return l;
}

static int pop(listener *l)
{
    int fd = l->ready[l->head];
    l->head = (l->head + 1) % l->cap;
    l->nready--;
    return fd;
}

/* 0, or -ENOMEM when the queue could not grow. */
static int push(listener *l, int fd)
{
    if (l->nready == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : READY_PAUSE;
        int *r = TERN__FAULT_ALLOC(malloc(cap * sizeof *r));
        if (!r)
            return -ENOMEM;
        for (size_t i = 0; i < l->nready; i++)
            r[i] = l->ready[(l->head + i) % l->cap];
        free(l->ready);
        l->ready = r;
        l->cap = cap;
        l->head = 0;
    }
    l->ready[(l->head + l->nready++) % l->cap] = fd;
    return 0;
}

/* ---- on home: arming and cancelling the SQE ---------------------------------------- */

static void cancel_sqe(listener *l)
{
    tern__driver *d = l->drv;
    d->ops->cancel(d, (uintptr_t)&l->op);
}

/* Home's side of an arm (armed was set, with the SQE's reference). When
 * no SQE can be had this turn, home tries again on its next one. */
static void arm_here(void *arg)
{
    listener *l = arg;
    tern__driver *d = l->drv;
    TERN__LOCK(&l->q);
    bool gone = l->gone; /* closed while the ask was on its way */
    if (gone)
        l->armed = false;
    TERN__UNLOCK(&l->q);
    if (gone) {
        unref(l);
        return;
    }
    if (d->ops->submit(d, &l->op) == 0)
        return;
    tern_handle *h = tern__handle_alloc(arm_here, l);
    if (h && tern__handle_post(l->home, h) == 0)
        return;
    tern_handle_release(h);
    /* no memory for a retry: undo, and wake the waiters to try again */
    tern__waiter *done = NULL, *n;
    TERN__LOCK(&l->q);
    l->armed = false;
    while ((n = tern__wq_claim(&l->q)))
        tern__waiter_defer(&done, n, -EAGAIN);
    TERN__UNLOCK(&l->q);
    tern__wake_post_all(done);
    unref(l);
}

static void cancel_here(void *arg)
{
    listener *l = arg;
    cancel_sqe(l);
    unref(l); /* the one on_home was given */
}

/* Runs fn(l) on home, handing it a reference the caller took: now when w
 * is home, else through a handle. 0, or -ENOMEM / -ESHUTDOWN, and then the
 * reference is still the caller's. */
static int on_home(tern_loop *w, listener *l, void (*fn)(void *))
{
    if (w == l->home) {
        fn(l);
        return 0;
    }
    tern_handle *h = tern__handle_alloc(fn, l);
    int r = h ? tern__handle_post(l->home, h) : -ENOMEM;
    if (r < 0)
        tern_handle_release(h);
    return r;
}

/* ---- completions (home, from the ring's reap) -------------------------------------- */

void tern__accept_complete(tern__ioop *op, int res, int more)
{
    listener *l = (listener *)op;
    tern__waiter *done = NULL, *n;
    bool rearm = false, pause = false;
    TERN__LOCK(&l->q);
    if (res >= 0) {
        if (l->gone)
            close(res);
        else if ((n = tern__wq_claim(&l->q)))
            tern__waiter_defer(&done, n, res);
        else if (push(l, res) < 0)
            close(res); /* no memory: the client sees the connection reset */
        else if (more && !l->paused && l->nready >= READY_PAUSE)
            pause = l->paused = true;
    } else if (res == -EINVAL && !l->gone) {
        /* no multishot accept here (or not a listener): every caller,
         * now and later, makes a plain accept, which tells the two apart */
        l->single = true;
        while ((n = tern__wq_claim(&l->q)))
            tern__waiter_defer(&done, n, -EOPNOTSUPP);
    } else if (res != -ECANCELED && !l->gone) {
        if ((n = tern__wq_claim(&l->q)))
            tern__waiter_defer(&done, n, res);
        else
            l->err = res;
    }
    if (!more) {
        l->paused = false;
        /* callers still waiting need a new SQE */
        rearm = !l->gone && !l->single && tern__wq_peek(&l->q);
        l->armed = rearm;
    }
    TERN__UNLOCK(&l->q);
    tern__wake_post_all(done);
    if (pause)
        cancel_sqe(l);
    if (rearm)
        arm_here(l); /* keeps the SQE's reference */
    else if (!more)
        unref(l); /* the SQE's */
}

/* ---- callers ----------------------------------------------------------------------- */

int tern__multishot_off(void)
{
    return tern__env_switch(&disabled, "TERN_NO_MULTISHOT");
}

int tern__accept_multi(tern_loop *w, int fd, uint64_t deadline)
{
    if (tern__multishot_off())
        return -EOPNOTSUPP;
    listener *l = find(w, fd);
    if (!l)
        return -EOPNOTSUPP; /* no memory for a record: a plain accept may do */
    tern__wake k;
    tern__waiter node = {0};
    int r;
    for (;;) {
        bool arm = false;
        TERN__LOCK(&l->q);
        if (l->single) {
            r = -EOPNOTSUPP;
        } else if (l->nready) {
            r = pop(l);
            arm = !l->armed && !l->gone && l->nready < READY_PAUSE / 2;
        } else if (l->err) {
            r = l->err;
            l->err = 0;
        } else if (l->gone) {
            r = -EBADF;
        } else {
            tern__wake_init(&k);
            node.wake = &k;
            tern__wq_push(&l->q, &node);
            arm = !l->armed;
            r = 1; /* wait */
        }
        if (arm) {
            l->armed = true;
            atomic_fetch_add_explicit(&l->refs, 1, TERN__RELAXED); /* the SQE's */
        }
        TERN__UNLOCK(&l->q);
        if (arm && on_home(w, l, arm_here) < 0) {
            /* home cannot be asked: this call makes a plain accept */
            TERN__LOCK(&l->q);
            l->armed = false;
            if (r == 1)
                tern__wq_unlink(&l->q, &node);
            TERN__UNLOCK(&l->q);
            unref(l);
            if (r == 1)
                r = -EOPNOTSUPP;
        }
        if (r != 1)
            break;
        r = tern__wake_wait(&k, deadline, 0);
        if (r < 0) { /* gave up before a connection was handed over */
            TERN__LOCK(&l->q);
            tern__wq_unlink(&l->q, &node);
            TERN__UNLOCK(&l->q);
            break;
        }
        r = node.result;
        if (r != -EAGAIN) /* home could not arm: look again */
            break;
    }
    unref(l);
    return r;
}

void tern__accept_forget(int fd, int closing)
{
    if (!atomic_load_explicit(&nrecords, TERN__ACQUIRE))
        return;
    tern_loop *w = tern__loop_self();
    for (listener *l = take_out(fd), *next; l; l = next) {
        next = l->work;
        tern__waiter *done = NULL, *n;
        TERN__LOCK(&l->q);
        l->gone = true;
        while ((n = tern__wq_claim(&l->q)))
            tern__waiter_defer(&done, n, -EBADF);
        while (l->nready)
            close(pop(l));
        bool armed = l->armed;
        TERN__UNLOCK(&l->q);
        tern__wake_post_all(done);
        /* The SQE holds the socket until home cancels it, and a listening
         * socket accepts until its last holder lets go: stop it now, so that
         * a connect after tern_close is refused as after close(2). (A
         * number closed with close(2) and reused cannot be reached so.) A
         * cancel that cannot be posted (only at shutdown) is left to the
         * ring's teardown, tern__accept_driver_gone. */
        if (armed && closing)
            shutdown(fd, SHUT_RD);
        if (armed) {
            atomic_fetch_add_explicit(&l->refs, 1, TERN__RELAXED);
            if (on_home(w, l, cancel_here) < 0)
                unref(l);
        }
        unref(l); /* the table's */
        unref(l); /* take_out's */
    }
}

/* d's ring is gone, and every SQE in it: drops the SQEs' references, and
 * the table's for records homed there. d's owner, at its close. */
void tern__accept_driver_gone(tern__driver *d)
{
    if (!atomic_load_explicit(&nrecords, TERN__ACQUIRE))
        return;
    /* records already out of the table may still hold an SQE here */
    listener *list = NULL;
    pthread_mutex_lock(&tab_lock);
    for (listener *l = tab; l; l = l->next)
        if (l->drv == d) {
            atomic_fetch_add_explicit(&l->refs, 1, TERN__RELAXED);
            l->work = list;
            list = l;
        }
    pthread_mutex_unlock(&tab_lock);
    for (listener *l = list, *next; l; l = next) {
        next = l->work;
        pthread_mutex_lock(&tab_lock);
        bool in_tab = l->in_tab;
        l->in_tab = false;
        pthread_mutex_unlock(&tab_lock);
        TERN__LOCK(&l->q);
        bool armed = l->armed;
        l->armed = false;
        l->gone = true;
        TERN__UNLOCK(&l->q);
        if (armed)
            unref(l); /* the SQE's */
        if (in_tab)
            unref(l); /* the table's */
        unref(l);     /* ours */
    }
}
