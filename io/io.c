/*
 * The I/O operations of tern_io.h: one runner per backend (see io.h), and
 * the public functions, which only describe an operation and pick a
 * runner.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"
#include "rt/fault.h"

#define MAX_LEN 0x7ffff000u /* what Linux moves in one call at most */

static size_t clamp(size_t len)
{
    return len > MAX_LEN ? MAX_LEN : len;
}

/* The fault seam of op's system call (TERN_FAULTS builds): 0, or the errno
 * op fails with instead of reaching the kernel. Checked per attempt, so an
 * epoll retry after EAGAIN can fail as a real call could. */
static int io_fault(const tern__ioop *op)
{
#ifdef TERN_FAULTS
    switch ((enum tern__io_code)op->code) {
    case TERN__IO_READ:
    case TERN__IO_READV:
        return TERN__FAULT(READ);
    case TERN__IO_WRITE:
    case TERN__IO_WRITEV:
        return TERN__FAULT(WRITE);
    case TERN__IO_RECV:
    case TERN__IO_RECVMSG:
        return TERN__FAULT(RECV);
    case TERN__IO_SEND:
    case TERN__IO_SENDMSG:
        return TERN__FAULT(SEND);
    case TERN__IO_ACCEPT:
        return TERN__FAULT(ACCEPT);
    case TERN__IO_CONNECT:
        return TERN__FAULT(CONNECT);
    default:
        break;
    }
#endif
    (void)op;
    return 0;
}

/* ---- io_uring: the operation goes to the ring ------------------------------------ */

void tern__io_complete(tern__ioop *op, int res)
{
    op->res = res;
    tern__wake_done(&op->wake); /* last touch: the task may return now */
}

/* Runs on the loop whose ring holds the operation. The task that asked
 * waits for cancel_acked, so op is alive here. */
static void cancel_on_owner(void *arg)
{
    tern__ioop *op = arg;
    tern_task *t = tern_task_ref(op->wake.task);
    tern_loop *w = tern__loop_self();
    w->driver->ops->cancel(w->driver, (uintptr_t)op);
    atomic_store_explicit(&op->cancel_acked, 1, TERN__RELEASE);
    tern_unpark(t);
    tern_task_release(t);
}

/* Only the ring's owner may submit to it (SINGLE_ISSUER, invariant 1). */
static void request_cancel(tern__ioop *op)
{
    tern_loop *w = tern__loop_self();
    if (w == op->loop) {
        w->driver->ops->cancel(w->driver, (uintptr_t)op);
        atomic_store_explicit(&op->cancel_acked, 1, TERN__RELAXED);
        return;
    }
    tern_handle *h;
    /* The loop outlives every task, so the post fails only for memory:
     * retry; giving up would leave the kernel owning the buffer. */
    while (!(h = tern__handle_alloc(cancel_on_owner, op)) ||
           tern__handle_post(op->loop, h) < 0) {
        tern_handle_release(h);
        tern__park(tern_now() + 1000000, 1);
    }
}

static int uring_once(tern_loop *w, tern__ioop *op, uint64_t deadline)
{
    op->kind = TERN__URING_IO;
    op->loop = w;
    tern__wake_init(&op->wake);
    atomic_init(&op->cancel_acked, 0);
    int r = io_fault(op);
    if (r)
        return -r; /* as if the completion had carried -r */
    while ((r = w->driver->ops->submit(w->driver, op)) == -EAGAIN) {
        /* the ring is full even after a submit: let completions drain */
        if ((r = tern_yield()) < 0)
            return r;
        w = tern__loop_self();
        op->loop = w;
    }
    if (r < 0)
        return r;
    /* A cancel that loses to the kernel must not mark the task as having
     * seen it (tern_join would then call a task with a result cancelled). */
    uint8_t saw = tern__cancel_seen(op->wake.task);
    int reason = 0;
    for (;;) {
        int done =
            atomic_load_explicit(&op->wake.state, TERN__ACQUIRE) == TERN__WAKE_DONE;
        if (done && (!reason || atomic_load_explicit(&op->cancel_acked, TERN__ACQUIRE)))
            break;
        r = tern__park(reason ? 0 : deadline, reason != 0);
        if (r < 0 && !reason &&
            atomic_load_explicit(&op->wake.state, TERN__ACQUIRE) != TERN__WAKE_DONE) {
            reason = r;
            request_cancel(op);
        }
    }
    /* -EINTR: the kernel interrupted work it had started in its own
     * worker threads (io-wq), which is how those cancels end. */
    if (reason && (op->res == -ECANCELED || op->res == -EINTR))
        return reason;
    /* The kernel finished first: its result stands, bytes included. */
    tern__cancel_seen_set(op->wake.task, saw);
    return op->res;
}

static int uring_run(tern__ioop *op, uint64_t deadline)
{
    for (;;) {
        tern_loop *w = tern__loop_self();
        int r = uring_once(w, op, deadline);
        if (r != -EAGAIN || op->code == TERN__IO_POLL)
            return r;
        /* A non-blocking descriptor from elsewhere: io_uring hands EAGAIN
         * back for those; wait for readiness, then try again. */
        tern__ioop p = {.code = TERN__IO_POLL, .fd = op->fd, .events = op->events};
        if ((r = uring_once(tern__loop_self(), &p, deadline)) < 0)
            return r;
    }
}

/* ---- epoll: the task makes the call, the table waits ---------------------------- */

static ssize_t sys_now(tern__ioop *op)
{
    ssize_t r = -1;
    int fd = op->fd;
    int err = io_fault(op);
    if (err)
        return -err;
    switch ((enum tern__io_code)op->code) {
    case TERN__IO_READ:
        r = read(fd, op->buf, op->len);
        break;
    case TERN__IO_WRITE:
        r = write(fd, op->buf, op->len);
        break;
    case TERN__IO_READV:
        r = readv(fd, op->iov, op->iovcnt);
        break;
    case TERN__IO_WRITEV:
        r = writev(fd, op->iov, op->iovcnt);
        break;
    case TERN__IO_RECV:
        r = recv(fd, op->buf, op->len, op->flags | MSG_DONTWAIT);
        break;
    case TERN__IO_SEND:
        r = send(fd, op->buf, op->len, op->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
    case TERN__IO_RECVMSG:
        r = recvmsg(fd, op->msg, op->flags | MSG_DONTWAIT);
        break;
    case TERN__IO_SENDMSG:
        r = sendmsg(fd, op->msg, op->flags | MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
    case TERN__IO_ACCEPT:
        r = accept4(fd, op->addr, op->addrlen, op->flags | SOCK_NONBLOCK);
        break;
    case TERN__IO_POLL: {
        struct pollfd p = {.fd = fd, .events = op->events};
        r = poll(&p, 1, 0);
        if (r == 0)
            return -EAGAIN;
        if (r > 0)
            return p.revents & POLLNVAL ? -EBADF : p.revents;
        break;
    }
    default:
        return -EINVAL;
    }
    return r < 0 ? -errno : r;
}

/* Needs O_NONBLOCK on the descriptor itself (no MSG_DONTWAIT form). */
static int needs_nonblock(int code)
{
    return code == TERN__IO_READ || code == TERN__IO_WRITE || code == TERN__IO_READV ||
           code == TERN__IO_WRITEV || code == TERN__IO_ACCEPT || code == TERN__IO_CONNECT;
}

static ssize_t epoll_run(tern__ioop *op, uint64_t deadline)
{
    tern__fdtab *tab = tern__loop_self()->driver->fdtab;
    if (needs_nonblock(op->code)) {
        int r = tern__fdtab_nonblock(tab, op->fd);
        if (r < 0)
            return r;
    }
    for (;;) {
        uint32_t seq = tern__fdtab_seq(tab, op->fd);
        ssize_t r = sys_now(op);
        if (r != -EAGAIN && r != -EWOULDBLOCK)
            return r;
        /* the task may be on another worker than last time round */
        r = tern__fdtab_wait(tab, tern__loop_self()->driver, op->fd, op->events, seq,
                             deadline);
        if (r < 0)
            return r;
    }
}

/* connect(2) on epoll: start it, then wait for writability and read the
 * outcome from SO_ERROR. */
static int epoll_connect(tern__ioop *op, uint64_t deadline)
{
    tern__fdtab *tab = tern__loop_self()->driver->fdtab;
    int r = tern__fdtab_nonblock(tab, op->fd);
    if (r < 0)
        return r;
    uint32_t seq = tern__fdtab_seq(tab, op->fd);
    if ((r = io_fault(op)))
        return -r;
    if (connect(op->fd, op->addr, op->alen) == 0)
        return 0;
    /* EAGAIN: a Unix listener's backlog is full; nothing would signal its
     * end on this socket, so report it (as Go and Tokio do). */
    if (errno != EINPROGRESS)
        return -errno;
    for (;;) {
        r = tern__fdtab_wait(tab, tern__loop_self()->driver, op->fd, POLLOUT, seq,
                             deadline);
        if (r < 0)
            return r;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        if (err)
            return -err;
        struct pollfd p = {.fd = op->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT))
            return 0;
        seq = tern__fdtab_seq(tab, op->fd); /* an early edge: wait again */
    }
}

/* ---- files on epoll: the blocking pool -------------------------------------------- */

static void *file_job(void *arg)
{
    tern__ioop *op = arg;
    ssize_t r = -1;
    switch ((enum tern__io_code)op->code) {
    case TERN__IO_OPEN:
        r = openat(AT_FDCWD, op->path, op->flags, op->mode);
        break;
    case TERN__IO_PREAD:
        r = pread(op->fd, op->buf, op->len, op->off);
        break;
    case TERN__IO_PWRITE:
        r = pwrite(op->fd, op->buf, op->len, op->off);
        break;
    case TERN__IO_FSYNC:
        r = op->flags ? fdatasync(op->fd) : fsync(op->fd);
        break;
    case TERN__IO_STATX:
        r = statx(op->fd, op->path, op->flags, op->mask, op->stx);
        break;
    default:
        errno = EINVAL;
        break;
    }
    op->res = r < 0 ? -errno : (int)r;
    return NULL;
}

/* After file_job, unless shutdown abandoned it (blocking.c). */
static void file_deliver(void *arg)
{
    tern__ioop *op = arg;
    tern__wake_done(&op->wake); /* last touch: the task may return now */
}

/* A blocking thread cannot be interrupted, so the task waits for the job
 * whatever happens (its buffer is in use until then); a deadline or
 * cancel shows at the task's next suspension point. */
static int pool_run(tern__ioop *op)
{
    tern__wake_init(&op->wake);
    int r = tern__blocking_must(file_job, file_deliver, op);
    if (r < 0)
        return r;
    uint32_t s;
    while ((s = atomic_load_explicit(&op->wake.state, TERN__ACQUIRE)) != TERN__WAKE_DONE)
        tern__wake_block(&op->wake, s, 0, 1);
    return op->res;
}

const char *tern__io_name(int code)
{
    static const char *const names[] = {
        [TERN__IO_READ] = "read",       [TERN__IO_WRITE] = "write",
        [TERN__IO_READV] = "readv",     [TERN__IO_WRITEV] = "writev",
        [TERN__IO_RECV] = "recv",       [TERN__IO_SEND] = "send",
        [TERN__IO_RECVMSG] = "recvmsg", [TERN__IO_SENDMSG] = "sendmsg",
        [TERN__IO_ACCEPT] = "accept",   [TERN__IO_CONNECT] = "connect",
        [TERN__IO_POLL] = "poll",       [TERN__IO_OPEN] = "open",
        [TERN__IO_PREAD] = "pread",     [TERN__IO_PWRITE] = "pwrite",
        [TERN__IO_FSYNC] = "fsync",     [TERN__IO_STATX] = "statx",
        [TERN__IO_CLOSE] = "close",
    };
    return code >= 0 && code <= TERN__IO_CLOSE && names[code] ? names[code] : "io";
}

/* ---- dispatch ---------------------------------------------------------------------- */

static int is_file_op(int code)
{
    return code == TERN__IO_OPEN || code == TERN__IO_PREAD || code == TERN__IO_PWRITE ||
           code == TERN__IO_FSYNC || code == TERN__IO_STATX;
}

static ssize_t run_on(tern_loop *w, tern__ioop *op, uint64_t deadline)
{
    if (w->driver->ops->kind == TERN__DRIVER_COMPLETION) {
        /* io_uring reads and writes a stream at whatever offset it is
         * given; pread(2), and so the epoll backend, refuse it */
        if ((op->code == TERN__IO_PREAD || op->code == TERN__IO_PWRITE) &&
            lseek(op->fd, 0, SEEK_CUR) < 0)
            return -errno;
        return uring_run(op, deadline);
    }
    if (is_file_op(op->code))
        return pool_run(op);
    if (op->code == TERN__IO_CONNECT)
        return epoll_connect(op, deadline);
    return epoll_run(op, deadline);
}

static ssize_t run(tern__ioop *op, short events, uint64_t deadline)
{
    tern_loop *w = tern__loop_self();
    if (!w || !w->current)
        return -EPERM;
    if (tern__cancelled())
        return -ECANCELED;
    op->events = events;
    TERN__STAT_INC(w, io_submitted);
    tern__wait_note(TERN__W_IO, (uintptr_t)(unsigned)op->fd | (uintptr_t)op->code << 32);
    ssize_t r = run_on(w, op, deadline);
    w = tern__loop_self(); /* it may have moved */
    TERN__STAT_INC(w, io_completed);
    return r;
}

/* ---- the public operations --------------------------------------------------------- */

ssize_t tern_read(int fd, void *buf, size_t len, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_READ, .fd = fd, .buf = buf, .len = clamp(len), .off = -1};
    return run(&op, POLLIN, deadline);
}

ssize_t tern_write(int fd, const void *buf, size_t len, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_WRITE,
                     .fd = fd,
                     .buf = (void *)buf,
                     .len = clamp(len),
                     .off = -1};
    return run(&op, POLLOUT, deadline);
}

static int bad_iov(const struct iovec *iov, int iovcnt)
{
    return iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt);
}

ssize_t tern_readv(int fd, const struct iovec *iov, int iovcnt, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (bad_iov(iov, iovcnt))
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt, .off = -1};
    return run(&op, POLLIN, deadline);
}

ssize_t tern_writev(int fd, const struct iovec *iov, int iovcnt, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (bad_iov(iov, iovcnt))
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_WRITEV, .fd = fd, .iov = iov, .iovcnt = iovcnt, .off = -1};
    return run(&op, POLLOUT, deadline);
}

ssize_t tern__read_exact_by(tern__read_fn rd, void *src, void *buf, size_t len,
                            size_t *got, uint64_t deadline)
{
    size_t n = 0;
    ssize_t r = 0;
    if (!src || (!buf && len))
        r = -EINVAL;
    while (r >= 0 && n < len) {
        r = rd(src, (char *)buf + n, len - n, deadline);
        if (r == 0)
            r = -ENODATA;
        else if (r > 0)
            n += (size_t)r;
    }
    if (got)
        *got = n;
    return r < 0 ? r : (ssize_t)n;
}

static ssize_t read_fd(void *fd, void *buf, size_t len, uint64_t deadline)
{
    return tern_read(*(int *)fd, buf, len, deadline);
}

ssize_t tern_read_exact(int fd, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    return tern__read_exact_by(read_fd, &fd, buf, len, got, deadline);
}

ssize_t tern_write_all(int fd, const void *buf, size_t len, size_t *sent,
                       uint64_t deadline)
{
    size_t n = 0;
    ssize_t r = 0;
    if (!buf && len)
        r = -EINVAL;
    while (r >= 0 && n < len) {
        r = tern_write(fd, (const char *)buf + n, len - n, deadline);
        if (r > 0)
            n += (size_t)r;
    }
    if (sent)
        *sent = n;
    return r < 0 ? r : (ssize_t)n;
}

int tern_poll(int fd, short events, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!events)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_POLL, .fd = fd};
    return (int)run(&op, events, deadline);
}

int tern_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    /* From any thread (a blocking job, the main thread): a number reused
     * after close must not inherit this descriptor's registration. */
    tern__io_fd_forget(fd, 1);
    /* Linux releases the descriptor even when close reports an error. */
    return close(fd) < 0 && errno == EBADF ? -EBADF : 0;
}

void tern__io_fd_forget(int fd, int closing)
{
    tern__fdtab_forget_all(fd);
    tern__accept_forget(fd, closing);
}

/* A listener's connections come from its multishot SQE (accept.c); the
 * peer's address, which that SQE cannot give per connection, from
 * getpeername. -EOPNOTSUPP: make a plain accept. */
static int accept_multi(int fd, struct sockaddr *addr, socklen_t *addrlen,
                        uint64_t deadline)
{
    tern_loop *w = tern__loop_self();
    if (!w || !w->current || w->driver->ops->kind != TERN__DRIVER_COMPLETION)
        return -EOPNOTSUPP;
    if (tern__cancelled())
        return -ECANCELED;
    int r = io_fault(&(tern__ioop){.code = TERN__IO_ACCEPT});
    if (r)
        return -r;
    TERN__STAT_INC(w, io_submitted);
    tern__wait_note(TERN__W_IO,
                    (uintptr_t)(unsigned)fd | (uintptr_t)TERN__IO_ACCEPT << 32);
    r = tern__accept_multi(w, fd, deadline);
    if (r == -EOPNOTSUPP)
        return r;
    TERN__STAT_INC(tern__loop_self(), io_completed);
    if (r >= 0 && addr && getpeername(r, addr, addrlen) < 0)
        *addrlen = 0; /* the peer is gone already; the next read says so */
    return r;
}

int tern_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (addr && !addrlen)
        return -EINVAL;
    int r = accept_multi(fd, addr, addrlen, deadline);
    if (r != -EOPNOTSUPP) {
        if (r >= 0)
            tern__io_fd_forget(r, 0);
        return r;
    }
    tern__ioop op = {.code = TERN__IO_ACCEPT,
                     .fd = fd,
                     .addr = addr,
                     .addrlen = addrlen,
                     .flags = SOCK_CLOEXEC};
    r = (int)run(&op, POLLIN, deadline);
    if (r >= 0)
        tern__io_fd_forget(r, 0);
    return r;
}

int tern_connect(int fd, const struct sockaddr *addr, socklen_t addrlen,
                 uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!addr)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_CONNECT,
                     .fd = fd,
                     .addr = (struct sockaddr *)addr,
                     .alen = addrlen};
    return (int)run(&op, POLLOUT, deadline);
}

ssize_t tern_recv(int fd, void *buf, size_t len, int flags, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_RECV, .fd = fd, .buf = buf, .len = clamp(len), .flags = flags};
    return run(&op, POLLIN, deadline);
}

ssize_t tern_send(int fd, const void *buf, size_t len, int flags, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!buf && len)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_SEND,
                     .fd = fd,
                     .buf = (void *)buf,
                     .len = clamp(len),
                     .flags = flags};
    return run(&op, POLLOUT, deadline);
}

ssize_t tern_recvmsg(int fd, struct msghdr *msg, int flags, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!msg)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_RECVMSG, .fd = fd, .msg = msg, .flags = flags};
    return run(&op, POLLIN, deadline);
}

ssize_t tern_sendmsg(int fd, const struct msghdr *msg, int flags, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if (!msg)
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_SENDMSG, .fd = fd, .msg = (struct msghdr *)msg, .flags = flags};
    return run(&op, POLLOUT, deadline);
}

/* recvfrom and sendto are recvmsg and sendmsg with one buffer (io_uring has
 * no recvfrom). */
ssize_t tern_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                      socklen_t *fromlen, uint64_t deadline)
{
    if (from && !fromlen)
        return -EINVAL;
    struct iovec iov = {.iov_base = buf, .iov_len = clamp(len)};
    struct msghdr msg = {.msg_name = from,
                         .msg_namelen = from ? *fromlen : 0,
                         .msg_iov = &iov,
                         .msg_iovlen = 1};
    if (!buf && len)
        return -EINVAL;
    ssize_t r = tern_recvmsg(fd, &msg, flags, deadline);
    if (r >= 0 && from)
        *fromlen = msg.msg_namelen;
    return r;
}

ssize_t tern_sendto(int fd, const void *buf, size_t len, int flags,
                    const struct sockaddr *to, socklen_t tolen, uint64_t deadline)
{
    if (!buf && len)
        return -EINVAL;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = clamp(len)};
    struct msghdr msg = {.msg_name = (void *)to,
                         .msg_namelen = to ? tolen : 0,
                         .msg_iov = &iov,
                         .msg_iovlen = 1};
    return tern_sendmsg(fd, &msg, flags, deadline);
}

int tern_shutdown(int fd, int how)
{
    if (fd < 0)
        return -EBADF;
    return shutdown(fd, how) < 0 ? -errno : 0;
}

/* ---- files ------------------------------------------------------------------------- */

int tern_open(const char *path, int flags, mode_t mode, uint64_t deadline)
{
    if (!path)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_OPEN,
                     .fd = AT_FDCWD,
                     .path = path,
                     .flags = flags | O_CLOEXEC,
                     .mode = mode};
    int r = (int)run(&op, 0, deadline);
    if (r >= 0)
        tern__io_fd_forget(r, 0);
    return r;
}

ssize_t tern_pread(int fd, void *buf, size_t len, off_t offset, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if ((!buf && len) || offset < 0)
        return -EINVAL;
    tern__ioop op = {
        .code = TERN__IO_PREAD, .fd = fd, .buf = buf, .len = clamp(len), .off = offset};
    return run(&op, 0, deadline);
}

ssize_t tern_pwrite(int fd, const void *buf, size_t len, off_t offset, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    if ((!buf && len) || offset < 0)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_PWRITE,
                     .fd = fd,
                     .buf = (void *)buf,
                     .len = clamp(len),
                     .off = offset};
    return run(&op, 0, deadline);
}

int tern_fsync(int fd, int datasync, uint64_t deadline)
{
    if (fd < 0)
        return -EBADF;
    tern__ioop op = {.code = TERN__IO_FSYNC, .fd = fd, .flags = datasync != 0};
    return (int)run(&op, 0, deadline);
}

int tern_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *out,
               uint64_t deadline)
{
    if (!path || !out)
        return -EINVAL;
    tern__ioop op = {.code = TERN__IO_STATX,
                     .fd = dirfd,
                     .path = path,
                     .flags = flags,
                     .mask = mask,
                     .stx = out};
    return (int)run(&op, 0, deadline);
}
