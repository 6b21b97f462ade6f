/*
 * The descriptor table of the epoll backend (see io.h).
 *
 * One entry per descriptor number, in chunks of 1024 allocated on first
 * use and kept until the runtime goes, found through a directory of 1024
 * chunks per 2^20 numbers, itself allocated on first use: every number a
 * descriptor can have (below 2^31) has its entry, at 16 KiB of table and
 * a directory per million numbers in use. An entry is registered once, edge-triggered,
 * with the epoll set of the worker where a task first had to wait on it
 * (its home), and stays so until tern_close. Only the home loop receives
 * its events, so a listener shared by many tasks wakes one worker, not all
 * of them; the tasks themselves may run anywhere.
 *
 * Edges are not stored as "ready" bits. Instead an entry counts the events
 * it has seen (seq): a task reads seq before its non-blocking attempt and
 * queues itself only if seq has not moved since, so an edge that lands
 * between the attempt's EAGAIN and the queueing sends it back to try again
 * rather than to sleep through it.
 *
 * A descriptor closed with close(2) instead of tern_close leaves its entry
 * registered here while the kernel has dropped it from the epoll set, so a
 * new descriptor given that number would never be armed. Nothing on the
 * fast path can tell (the kernel says so only to a system call), so each
 * home loop sweeps its entries about once a second (tern__fdtab_sweep): an
 * entry with waiters none of which an event woke since the previous sweep
 * is re-armed with EPOLL_CTL_MOD, and re-registered when the kernel no
 * longer knows it. Wakes are counted, not events: MOD on an idle socket
 * reports it writable again, an event no reader wants. A quiet entry is
 * checked after 1, 2, 4, 8 quiet sweeps and then every 16th, so an idle
 * connection costs a system call every 16 s, and a stale one waits two
 * sweeps when nobody waited on its number lately, 17 at most.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "io/io.h"
#include "rt/fault.h"

#define CHUNK 1024 /* entries per chunk */
#define DIR 1024   /* chunks per directory */
#define DIRS 2048  /* directories: DIRS * DIR * CHUNK = 2^31 numbers */

typedef struct entry {
    tern__waitq q; /* lock + waiters; a waiter's n holds the events it wants */
    _Atomic uint32_t seq;
    /* registered with this driver's epoll set, or NULL; written under the
     * lock, read without it only by a sweep skipping other homes' entries */
    _Atomic(tern__driver *) home;
    _Atomic int nonblock; /* O_NONBLOCK set (or checked) since the fd was opened */
    uint32_t woke;        /* waiters woken by events (not seq: see the sweep) */
    uint32_t swept;       /* woke at the last sweep */
    uint32_t quiet;       /* sweeps in a row that found waiters and no wake */
} entry;

/* What an entry is registered for: every event, edge-triggered, once for the
 * descriptor's life, so later waits cost no system call to arm. */
#define EVENTS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP | EPOLLET)

/* Both levels are arrays of these: a directory, or a chunk of entries. */
typedef _Atomic(void *) slot;

struct tern__fdtab {
    slot dirs[DIRS];
    struct tern__fdtab *next; /* on `tabs` */
};

/* Every runtime's table, so tern_close can forget a descriptor from any
 * thread, a runtime's or not. */
static pthread_mutex_t tabs_lock = PTHREAD_MUTEX_INITIALIZER;
static tern__fdtab *tabs;
/* How many there are, read without the lock: with no epoll runtime in the
 * process (io_uring's), tern_close and every socket tern makes skip it. */
static _Atomic unsigned ntabs;

int tern__fdtab_new(tern__fdtab **out)
{
    tern__fdtab *tab = TERN__FAULT_ALLOC(calloc(1, sizeof *tab));
    if (!tab)
        return -ENOMEM;
    pthread_mutex_lock(&tabs_lock);
    tab->next = tabs;
    tabs = tab;
    atomic_fetch_add_explicit(&ntabs, 1, TERN__RELEASE);
    pthread_mutex_unlock(&tabs_lock);
    *out = tab;
    return 0;
}

void tern__fdtab_free(tern__fdtab *tab)
{
    if (!tab)
        return;
    pthread_mutex_lock(&tabs_lock);
    for (tern__fdtab **p = &tabs; *p; p = &(*p)->next)
        if (*p == tab) {
            *p = tab->next;
            atomic_fetch_sub_explicit(&ntabs, 1, TERN__RELAXED);
            break;
        }
    pthread_mutex_unlock(&tabs_lock);
    for (unsigned d = 0; d < DIRS; d++) {
        slot *dir = atomic_load_explicit(&tab->dirs[d], TERN__RELAXED);
        for (unsigned i = 0; dir && i < DIR; i++)
            free(atomic_load_explicit(&dir[i], TERN__RELAXED));
        free(dir);
    }
    free(tab);
}

/* *slot, or when it is empty and create is set, a zeroed block of n items
 * of size bytes published there (the first of racing creators wins). */
static void *slot_get(slot *sl, size_t n, size_t size, int create)
{
    void *p = atomic_load_explicit(sl, TERN__ACQUIRE);
    if (p || !create)
        return p;
    void *fresh = TERN__FAULT_ALLOC(calloc(n, size));
    if (!fresh)
        return NULL;
    if (atomic_compare_exchange_strong_explicit(sl, &p, fresh, TERN__ACQ_REL,
                                                TERN__ACQUIRE))
        return fresh;
    free(fresh); /* another thread made it first */
    return p;
}

static entry *lookup(tern__fdtab *tab, int fd, int create)
{
    if (fd < 0)
        return NULL;
    unsigned u = (unsigned)fd;
    slot *dir = slot_get(&tab->dirs[u / (DIR * CHUNK)], DIR, sizeof(slot), create);
    entry *c = dir ? slot_get(&dir[u / CHUNK % DIR], CHUNK, sizeof(entry), create) : NULL;
    return c ? &c[u % CHUNK] : NULL;
}

uint32_t tern__fdtab_seq(tern__fdtab *tab, int fd)
{
    entry *e = lookup(tab, fd, 0);
    return e ? atomic_load_explicit(&e->seq, TERN__ACQUIRE) : 0;
}

int tern__fdtab_nonblock(tern__fdtab *tab, int fd)
{
    entry *e = lookup(tab, fd, 1);
    if (!e)
        return fd < 0 ? -EBADF : -ENOMEM;
    if (atomic_load_explicit(&e->nonblock, TERN__RELAXED))
        return 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
        return -errno;
    atomic_store_explicit(&e->nonblock, 1, TERN__RELAXED);
    return 0;
}

/* Collects the waiters of e that revents concerns (all of them on an error
 * or hang-up), claimed, for posting after the lock is dropped. */
static tern__waiter *claim_ready(entry *e, uint32_t revents)
{
    tern__waiter *post = NULL;
    for (tern__waiter *w = e->q.head, *next; w; w = next) {
        next = w->next;
        uint32_t hit = revents & ((uint32_t)w->n | POLLERR | POLLHUP | POLLNVAL);
        if (!hit)
            continue;
        tern__wq_unlink(&e->q, w);
        if (tern__waiter_claim(w)) {
            e->woke++;
            w->result = (int)hit;
            w->next = post;
            post = w;
        }
    }
    return post;
}

void tern__fdtab_event(tern__fdtab *tab, int fd, uint32_t revents)
{
    entry *e = lookup(tab, fd, 0);
    if (!e)
        return;
    TERN__LOCK(&e->q);
    atomic_fetch_add_explicit(&e->seq, 1, TERN__RELEASE);
    tern__waiter *post = claim_ready(e, revents);
    TERN__UNLOCK(&e->q);
    tern__wake_post_all(post);
}

int tern__fdtab_wait(tern__fdtab *tab, tern__driver *d, int fd, short events,
                     uint32_t seq, uint64_t deadline)
{
    entry *e = lookup(tab, fd, 1);
    if (!e)
        return fd < 0 ? -EBADF : -ENOMEM;
    tern__wake k;
    tern__waiter w = {.wake = &k, .n = (uint16_t)events};
    tern__wake_init(&k);
    TERN__LOCK(&e->q);
    if (!atomic_load_explicit(&e->home, TERN__RELAXED)) {
        struct epoll_event ev = {.events = EVENTS, .data.u64 = (uint64_t)fd};
        if (TERN__FAULT_SYS(EPOLL_CTL, -1,
                            epoll_ctl(tern__epoll_fd(d), EPOLL_CTL_ADD, fd, &ev)) < 0) {
            int err = errno;
            TERN__UNLOCK(&e->q);
            /* A regular file cannot be polled: it is always ready. */
            return err == EPERM ? (events | POLLIN | POLLOUT) : -err;
        }
        atomic_store_explicit(&e->home, d, TERN__RELAXED);
        atomic_fetch_add_explicit(&d->busy, 1, TERN__RELAXED);
    }
    if (atomic_load_explicit(&e->seq, TERN__ACQUIRE) != seq) {
        TERN__UNLOCK(&e->q); /* something happened since the attempt */
        return 0;
    }
    tern__wq_push(&e->q, &w);
    TERN__UNLOCK(&e->q);
    int r = tern__wake_wait(&k, deadline, 0);
    if (r < 0) {
        TERN__LOCK(&e->q);
        tern__wq_unlink(&e->q, &w);
        TERN__UNLOCK(&e->q);
        return r;
    }
    return w.result;
}

void tern__fdtab_forget(tern__fdtab *tab, int fd)
{
    entry *e = lookup(tab, fd, 0);
    if (!e)
        return;
    TERN__LOCK(&e->q);
    tern__driver *home = atomic_load_explicit(&e->home, TERN__RELAXED);
    if (home) {
        /* Any thread may edit another worker's epoll set: the kernel
         * serialises it, and an event already taken from it only bumps seq. */
        epoll_ctl(tern__epoll_fd(home), EPOLL_CTL_DEL, fd, NULL);
        atomic_fetch_sub_explicit(&home->busy, 1, TERN__RELAXED);
        atomic_store_explicit(&e->home, NULL, TERN__RELAXED);
    }
    atomic_store_explicit(&e->nonblock, 0, TERN__RELAXED);
    atomic_fetch_add_explicit(&e->seq, 1, TERN__RELEASE);
    tern__waiter *post = claim_ready(e, POLLNVAL);
    TERN__UNLOCK(&e->q);
    tern__wake_post_all(post);
}

/* Under e's lock, e homed at d, quiet with waiters: asks the kernel whether
 * d's epoll set still holds fd, and registers it again when it does not.
 * The waiters are woken to try again when fd is gone, or when it is now
 * something epoll cannot watch (a regular file is always ready). */
static tern__waiter *recheck(entry *e, tern__driver *d, int fd)
{
    struct epoll_event ev = {.events = EVENTS, .data.u64 = (uint64_t)fd};
    int epfd = tern__epoll_fd(d);
    /* MOD re-arms a live registration: readiness it reports again is a
     * spurious edge, which only sends the waiters round once more */
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return NULL;
    if (errno == ENOENT && epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
        atomic_store_explicit(&e->nonblock, 0, TERN__RELAXED); /* another file */
        return NULL;
    }
    atomic_store_explicit(&e->home, NULL, TERN__RELAXED);
    atomic_fetch_sub_explicit(&d->busy, 1, TERN__RELAXED);
    atomic_store_explicit(&e->nonblock, 0, TERN__RELAXED);
    atomic_fetch_add_explicit(&e->seq, 1, TERN__RELEASE);
    return claim_ready(e, POLLNVAL);
}

void tern__fdtab_sweep(tern__fdtab *tab, tern__driver *d)
{
    for (unsigned di = 0; di < DIRS; di++) {
        slot *dir = atomic_load_explicit(&tab->dirs[di], TERN__ACQUIRE);
        for (unsigned ci = 0; dir && ci < DIR; ci++) {
            entry *c = atomic_load_explicit(&dir[ci], TERN__ACQUIRE);
            for (unsigned i = 0; c && i < CHUNK; i++) {
                entry *e = &c[i];
                /* the others are their homes' to sweep: no lock taken */
                if (atomic_load_explicit(&e->home, TERN__RELAXED) != d)
                    continue;
                tern__waiter *post = NULL;
                TERN__LOCK(&e->q);
                if (atomic_load_explicit(&e->home, TERN__RELAXED) == d) {
                    if (!e->q.head || e->woke != e->swept) {
                        e->quiet = 0;
                    } else {
                        uint32_t q = ++e->quiet;
                        if (!(q & (q - 1)) || q % 16 == 0)
                            post = recheck(e, d, (int)((di * DIR + ci) * CHUNK + i));
                    }
                    e->swept = e->woke;
                }
                TERN__UNLOCK(&e->q);
                tern__wake_post_all(post);
            }
        }
    }
}

void tern__fdtab_forget_all(int fd)
{
    /* a table made after this look holds nothing for fd yet */
    if (!atomic_load_explicit(&ntabs, TERN__ACQUIRE))
        return;
    pthread_mutex_lock(&tabs_lock);
    for (tern__fdtab *tab = tabs; tab; tab = tab->next)
        tern__fdtab_forget(tab, fd);
    pthread_mutex_unlock(&tabs_lock);
}
