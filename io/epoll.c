/*
 * The epoll backend: one epoll fd per worker, readiness based.
 *
 * Two kinds of registration, told apart by epoll_data.u64: WAKE_KEY is the
 * eventfd behind wake() (level-triggered; wake() writes it, wait() drains
 * it); anything else is a descriptor number, registered edge-triggered by
 * the descriptor table (io/fdtab.c) when a task first waits on it here,
 * whose events wait() hands to the table.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "io/driver.h"
#include "io/io.h"
#include "rt/fault.h"

#define MAX_EVENTS 64

#ifdef __GLIBC__
#if __GLIBC_PREREQ(2, 35)
#define HAVE_EPOLL_PWAIT2 1
#endif
#endif

#define WAKE_KEY UINT64_MAX
#define SWEEP_NS 1000000000 /* how often the table's entries homed here are swept */

typedef struct epoll_driver {
    tern__driver base;
    int epfd;
    int efd;
    bool no_pwait2;      /* the kernel lacks epoll_pwait2 (< 5.11) */
    uint64_t next_sweep; /* tern_now() of the next tern__fdtab_sweep */
} epoll_driver;

int tern__epoll_fd(tern__driver *d)
{
    return ((epoll_driver *)d)->epfd;
}

static int epoll_open(tern__driver **out)
{
    epoll_driver *e = TERN__FAULT_ALLOC(calloc(1, sizeof *e));
    if (!e)
        return -ENOMEM;
    int rc;
    e->efd = -1;
    e->epfd = TERN__FAULT_SYS(EPOLL_CREATE, -1, epoll_create1(EPOLL_CLOEXEC));
    if (e->epfd < 0)
        goto fail;
    e->efd = TERN__FAULT_SYS(EVENTFD, -1, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (e->efd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_KEY};
    if (TERN__FAULT_SYS(EPOLL_CTL, -1, epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->efd, &ev)) <
        0)
        goto fail;
    e->base.ops = &tern__epoll_ops;
    *out = &e->base;
    return 0;
fail:
    rc = -errno;
    if (e->efd >= 0)
        close(e->efd);
    if (e->epfd >= 0)
        close(e->epfd);
    free(e);
    return rc;
}

/* epoll_wait with a nanosecond timeout (< 0: none). epoll_pwait2 (5.11,
 * glibc 2.35) takes a timespec, so a 1.2 ms timer does not sleep 2 ms; where
 * it is missing, the timeout is rounded up to whole ms, so the wait may
 * overshoot by up to 1 ms but never returns before the timeout. */
static int poll_events(epoll_driver *e, struct epoll_event *evs, int64_t timeout_ns)
{
    int err = TERN__FAULT(EPOLL_WAIT);
    if (err) {
        errno = err;
        return -1;
    }
    if (timeout_ns <= 0)
        return epoll_wait(e->epfd, evs, MAX_EVENTS, timeout_ns < 0 ? -1 : 0);
#ifdef HAVE_EPOLL_PWAIT2
    if (!e->no_pwait2) {
        struct timespec ts = {
            .tv_sec = timeout_ns / 1000000000,
            .tv_nsec = timeout_ns % 1000000000,
        };
        int n = epoll_pwait2(e->epfd, evs, MAX_EVENTS, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        e->no_pwait2 = true;
    }
#endif
    int64_t ms = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
    return epoll_wait(e->epfd, evs, MAX_EVENTS, ms > INT_MAX ? INT_MAX : (int)ms);
}

static void drain_wake(epoll_driver *e)
{
    uint64_t v;
    ssize_t r = read(e->efd, &v, sizeof v); /* resets the counter */
    (void)r; /* -EAGAIN: another read got there first; nothing to do */
}

static int epoll_wait_ns(tern__driver *d, int64_t timeout_ns)
{
    epoll_driver *e = (epoll_driver *)d;
    struct epoll_event evs[MAX_EVENTS];
    /* With descriptors homed here, a sleep ends in time for the sweep that
     * finds registrations a plain close(2) lost (fdtab.c). */
    if (atomic_load_explicit(&d->busy, TERN__RELAXED)) {
        uint64_t now = tern_now();
        if (now >= e->next_sweep) {
            tern__fdtab_sweep(d->fdtab, d);
            e->next_sweep = now + SWEEP_NS;
        }
        int64_t left = (int64_t)(e->next_sweep - now);
        if (timeout_ns < 0 || timeout_ns > left)
            timeout_ns = left;
    }
    int n = poll_events(e, evs, timeout_ns);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == WAKE_KEY)
            drain_wake(e);
        else
            tern__fdtab_event(d->fdtab, (int)evs[i].data.u64, evs[i].events);
    }
    return n;
}

static int epoll_help(tern__driver *d)
{
    epoll_driver *e = (epoll_driver *)d;
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(e->epfd, evs, MAX_EVENTS, 0), handled = 0;
    for (int i = 0; i < n; i++) {
        /* the wake is level-triggered: left for d, which still sees it */
        if (evs[i].data.u64 != WAKE_KEY) {
            tern__fdtab_event(d->fdtab, (int)evs[i].data.u64, evs[i].events);
            handled++;
        }
    }
    return handled;
}

static void epoll_wake(tern__driver *d)
{
    epoll_driver *e = (epoll_driver *)d;
    uint64_t one = 1;
    int saved = errno; /* a signal handler may be the caller */
    ssize_t r = write(e->efd, &one, sizeof one);
    (void)r; /* -EAGAIN only when the counter nears 2^64: a wake is pending */
    errno = saved;
}

static void epoll_close(tern__driver *d)
{
    epoll_driver *e = (epoll_driver *)d;
    close(e->efd);
    close(e->epfd);
    free(e);
}

const tern__driver_ops tern__epoll_ops = {
    .name = "epoll",
    .kind = TERN__DRIVER_READINESS,
    .open = epoll_open,
    .wait = epoll_wait_ns,
    .wake = epoll_wake,
    .close = epoll_close,
    .help = epoll_help,
};
