/*
 * I/O operations inside tern (never installed).
 *
 * Two ways to wait, one per backend:
 *  - io_uring: the whole operation goes to the ring of the worker the task
 *    runs on, as a tern__ioop on the task's stack whose address rides in
 *    user_data. The ring's owner reaps the completion, stores the result
 *    and wakes the task, wherever it runs by then. A task that gives up
 *    (deadline, cancel) asks the owner to cancel the operation and still
 *    waits for its completion: the kernel may be writing into its buffer
 *    until then.
 *  - epoll: the task makes the non-blocking system call itself and, on
 *    EAGAIN, waits for readiness in the runtime's descriptor table
 *    (fdtab.c): one entry per fd, registered edge-triggered in one worker's
 *    epoll set (its "home"), with queues of waiting tasks. The home loop's
 *    wait turns events into wake-ups; a task that gives up unlinks itself
 *    under the entry's lock. No operation is ever in the kernel on a task's
 *    behalf, so giving up needs nothing more.
 */
#ifndef TERN_IO_INTERNAL_H
#define TERN_IO_INTERNAL_H

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "rt/wait.h"

enum tern__io_code {
    TERN__IO_READ,
    TERN__IO_WRITE,
    TERN__IO_READV,
    TERN__IO_WRITEV,
    TERN__IO_RECV,
    TERN__IO_SEND,
    TERN__IO_RECVMSG,
    TERN__IO_SENDMSG,
    TERN__IO_ACCEPT,
    TERN__IO_CONNECT,
    TERN__IO_POLL,
    TERN__IO_OPEN,
    TERN__IO_PREAD,
    TERN__IO_PWRITE,
    TERN__IO_FSYNC,
    TERN__IO_STATX,
    TERN__IO_CLOSE,
    TERN__IO_ACCEPT_MULTI, /* accept.c's armed SQE (io_uring only) */
    TERN__IO_RECV_MULTI,   /* recv.c's armed SQE (io_uring only) */
};

typedef struct tern__ioop {
    unsigned char kind; /* first byte: the ring's dispatch tag (uring.c) */
    unsigned char code; /* enum tern__io_code */
    short events;       /* TERN__IO_POLL */
    int fd;
    int flags; /* recv/send/accept/open/statx/fsync flags */
    void *buf;
    size_t len;
    const struct iovec *iov;
    int iovcnt;
    unsigned mask; /* statx */
    off_t off;     /* pread/pwrite; -1 for read/write: the file position */
    struct sockaddr *addr;
    socklen_t *addrlen; /* accept */
    socklen_t alen;     /* connect */
    struct msghdr *msg;
    const char *path;
    unsigned mode;
    struct statx *stx;
    /* completion */
    tern__wake wake; /* task, and state TERN__WAKE_WAITING -> TERN__WAKE_DONE */
    _Atomic uint32_t cancel_acked; /* the owner has sent the cancel */
    int res;
    tern_loop *loop; /* whose ring holds it */
} tern__ioop;

#define TERN__URING_IO 2     /* tern__ioop.kind: uring.c's tag for an operation */
#define TERN__URING_ACCEPT 3 /* the tag of accept.c's multishot accept */
#define TERN__URING_RECV 4   /* the tag of recv.c's multishot receive */

/* uring.c: called by the ring's owner with an operation's result. */
void tern__io_complete(tern__ioop *op, int res);

/* ---- multishot accept (accept.c), for the io_uring backend ------------------------- */

/* tern_accept on io_uring, from a task on worker w: the next connection
 * of listener fd, from its multishot SQE. Returns the descriptor or an
 * error as tern_accept, or -EOPNOTSUPP: make a plain accept instead (the
 * kernel has no multishot accept for fd, TERN_NO_MULTISHOT=1, or no memory
 * for the listener's record). Suspends. */
int tern__accept_multi(tern_loop *w, int fd, uint64_t deadline);
/* uring.c: a completion of that SQE; more: IORING_CQE_F_MORE. Owner. */
void tern__accept_complete(tern__ioop *op, int res, int more);
/* fd is being closed (closing: it still names the listener), or its
 * number names a new descriptor: its listener records go (their waiters
 * get -EBADF). Any thread. */
void tern__accept_forget(int fd, int closing);
/* uring.c: d's ring was torn down with its SQEs. */
void tern__accept_driver_gone(struct tern__driver *d);
/* TERN_NO_MULTISHOT=1 in the environment: no multishot accept, no
 * multishot receive, no buffer rings (what an older kernel gets). */
int tern__multishot_off(void);

/* ---- provided buffers and multishot receive (uring.c, recv.c) ---------------------- */

/* A ring of provided buffers, one per io_uring driver, made the first time
 * a stream reads on that worker. The kernel picks a buffer for each
 * receive and names it in the completion; whoever consumed it puts it back,
 * from any thread. It outlives its driver while streams still hold it. */
typedef struct tern__bufs {
    char *data;     /* count buffers of size bytes */
    uint32_t *len;  /* per buffer: bytes received into it */
    uint16_t *next; /* per buffer: the next one queued for the same reader */
    unsigned count, size, mask;
    _Atomic unsigned lock;  /* puts from any thread */
    _Atomic unsigned out;   /* buffers the kernel filled, not yet put back */
    _Atomic unsigned refs;  /* the driver's, and one per receive record homed here */
    _Atomic int dead;       /* the ring is gone: puts only count */
    void *ring;             /* struct io_uring_buf_ring */
    struct tern__rx *armed; /* records with a multishot SQE here (owner only) */
} tern__bufs;

/* Buffers per ring, and so per worker; a power of two (tests lower it
 * before making a runtime, to exhaust a ring on purpose). */
extern unsigned tern__bufs_count;
#define TERN__BUF_SIZE 4096u

/* d's buffer ring, made and registered now if it has none: with a
 * reference for the caller. NULL when the kernel has no buffer rings,
 * TERN_NO_MULTISHOT=1, or no memory. d's owner. */
tern__bufs *tern__uring_bufs(tern__driver *d);
/* Gives buffer bid back to the kernel. Any thread. */
void tern__bufs_put(tern__bufs *b, unsigned bid);
void tern__bufs_unref(tern__bufs *b);

/* A stream's multishot receive: one armed SQE on the ring of the worker
 * that reads, whose completions queue buffers for the stream's task. */
typedef struct tern__rx tern__rx;
/* A record for socket fd. -EOPNOTSUPP: read plainly instead (epoll, no
 * buffer rings, TERN_NO_MULTISHOT=1); -ENOMEM. From a task. */
int tern__rx_new(int fd, tern__rx **out);
/* The next bytes received, in a buffer the caller holds until its next
 * call or tern__rx_free: their count (> 0) with *data, 0 at the end of
 * the stream, or an error. -EOPNOTSUPP: nothing is queued or in flight,
 * make one plain read (the ring ran out of buffers, the descriptor is no
 * socket, or the kernel has no multishot receive). Suspends. */
ssize_t tern__rx_next(tern__rx *x, const char **data, uint64_t deadline);
/* Puts the held buffer back (no-op without one). */
void tern__rx_done(tern__rx *x);
/* Drops what is queued and stops the SQE; the record goes when the SQE
 * has ended. Any thread. */
void tern__rx_free(tern__rx *x);
/* uring.c: a completion of a record's SQE (its CQE flags). Owner. */
void tern__rx_complete(tern__ioop *op, int res, unsigned flags);
/* uring.c: d's ring was torn down; b was its buffers. */
void tern__rx_driver_gone(tern__bufs *b);
/* What the receive path has had to do, for tests: ENOBUFS completions,
 * SQEs cancelled because their reader fell behind. */
extern _Atomic unsigned long tern__rx_nobufs, tern__rx_pauses;
/* The loop of tern_read_exact and tern_stream_read_exact: rd(src, ...)
 * until len bytes, the end of the stream (-ENODATA) or an error; *got (may
 * be NULL) receives the count read in every case. -EINVAL: src NULL, or
 * buf NULL with len > 0. */
typedef ssize_t (*tern__read_fn)(void *src, void *buf, size_t len, uint64_t deadline);
ssize_t tern__read_exact_by(tern__read_fn rd, void *src, void *buf, size_t len,
                            size_t *got, uint64_t deadline);

/* Everything io/ keeps about fd, forgotten: the epoll tables' entries and
 * the listener records (tern__fdtab_forget_all, tern__accept_forget).
 * closing as for tern__accept_forget. */
void tern__io_fd_forget(int fd, int closing);

/* ---- the descriptor table (fdtab.c), for the epoll backend ------------------------ */

typedef struct tern__fdtab tern__fdtab;
/* The table's life (tern__driver_shared_new / _free call them). */
int tern__fdtab_new(tern__fdtab **out);
void tern__fdtab_free(tern__fdtab *tab);

/* Readiness seen by a loop's epoll wait for fd: wakes the waiters that
 * care. Called by the home loop's thread. */
void tern__fdtab_event(tern__fdtab *tab, int fd, uint32_t revents);
/* The entry's event count, read before a non-blocking attempt: waiting
 * starts only if nothing happened since (see tern__fdtab_wait). */
uint32_t tern__fdtab_seq(tern__fdtab *tab, int fd);
/* Waits until fd reports one of events (POLLIN/POLLOUT...), registering fd
 * with d (the calling worker's driver) the first time. Returns at once (0)
 * when an event arrived since seq was read. Returns the events seen (> 0),
 * 0 to retry, or -ETIMEDOUT, -ECANCELED, -ENOMEM, -EBADF. */
int tern__fdtab_wait(tern__fdtab *tab, tern__driver *d, int fd, short events,
                     uint32_t seq, uint64_t deadline);
/* Makes fd non-blocking once (cached until forgotten). 0 or -errno. */
int tern__fdtab_nonblock(tern__fdtab *tab, int fd);
/* Re-arms, or registers again, the entries homed at d that have waiters
 * and saw no event since the last sweep (see fdtab.c): a descriptor closed
 * with close(2) and its number reused must not wait for ever. d's owner,
 * about once a second. */
void tern__fdtab_sweep(tern__fdtab *tab, tern__driver *d);
/* Forgets fd (before it is closed): deregisters it and wakes its waiters. */
void tern__fdtab_forget(tern__fdtab *tab, int fd);
/* The same in every runtime's table. Any thread. Called by tern_close, and
 * for every descriptor tern creates (socket, accept, open): the kernel
 * drops a closed descriptor from its epoll sets, but a plain close(2)
 * leaves the entry registered here, and the next descriptor given that
 * number would never be armed, so never become ready. */
void tern__fdtab_forget_all(int fd);

/* epoll.c: the epoll fd behind a driver. */
int tern__epoll_fd(tern__driver *d);

/* socket.c: the lookup tern_getaddrinfo runs on the blocking pool, and so
 * tern_tcp_connect and tern_tcp_listen for a name. getaddrinfo, or a test's
 * stand-in, so that "no such host" and "temporary failure" are tested
 * without asking a name server off the machine. Set it only while no
 * lookup runs. */
typedef int (*tern__getaddrinfo_fn)(const char *host, const char *service,
                                    const struct addrinfo *hints, struct addrinfo **res);
extern tern__getaddrinfo_fn tern__lookup;

#endif
