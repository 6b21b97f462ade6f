/*
 * tern's I/O: sockets, pipes and files as straight-line code in tasks.
 * Included by tern.h; do not include it on its own.
 *
 * Conventions (on top of tern.h's):
 *  - Every operation that takes a deadline is called from a task and
 *    suspends it until the operation is done; called outside a task it
 *    returns -EPERM. The others (tern_socket, tern_close, tern_shutdown,
 *    the listeners, the socket options and addresses) never suspend and
 *    work from any thread, as their entries say. All return a count, a new
 *    descriptor or 0 on success and a negative errno on failure; errno is
 *    never used.
 *  - `deadline` is an absolute tern_now() time (0: none); reaching it
 *    returns -ETIMEDOUT. A cancelled task gets -ECANCELED. Either way the
 *    call returns only after the kernel has let go of the caller's buffer:
 *    on io_uring the operation is cancelled and its completion reaped, on
 *    epoll the wait is deregistered. If the operation completed anyway (it
 *    won the race with the deadline or the cancel), its result is returned
 *    instead, so no byte read or written is ever unaccounted for.
 *  - A task may move to another worker between two operations (or while it
 *    waits); that changes nothing for the caller.
 *  - Descriptors that tern creates are close-on-exec, and non-blocking on
 *    the epoll backend. Descriptors from elsewhere work too: on epoll tern
 *    uses them without blocking (MSG_DONTWAIT, or O_NONBLOCK set on first
 *    use), on io_uring as they are.
 *  - Close descriptors used with tern through tern_close, so the epoll
 *    backend forgets them at once. After a plain close(2) tern still
 *    starts afresh with every descriptor it makes itself (tern_socket,
 *    tern_accept, tern_open and the helpers on them); a descriptor made
 *    elsewhere that gets the old number inherits the lost registration on
 *    epoll, which the backend finds and renews within two seconds of a
 *    task waiting on it, or 17 when tasks kept waiting on the old one
 *    (io_uring needs no registration). Until then
 *    such a descriptor is also taken to be non-blocking already: give it
 *    O_NONBLOCK yourself.
 *  - SIGPIPE never kills the process: sends use MSG_NOSIGNAL, and
 *    tern_runtime_new sets SIGPIPE to SIG_IGN when it is SIG_DFL (as Go
 *    and Rust do), so a write to a closed peer returns -EPIPE.
 *  - Regular files (open, pread, pwrite, fsync, statx) go through io_uring
 *    natively; on epoll they run on the blocking pool, where they cannot be
 *    interrupted: there they always complete, and a deadline or cancel is
 *    seen at the task's next suspension point.
 */
#ifndef TERN_IO_H
#define TERN_IO_H

#ifndef TERN_H
#error "include tern.h, not tern_io.h"
#endif

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct statx;
struct addrinfo;

/* ---- any descriptor -------------------------------------------------------- */

/* read(2) / write(2) / readv(2) / writev(2). Return the count (0 from a
 * read: end of file), or -EBADF, -EINVAL (buf NULL with len > 0, iovcnt
 * out of range), -EPIPE, -ECONNRESET, -ETIMEDOUT, -ECANCELED, ... */
TERN_API ssize_t tern_read(int fd, void *buf, size_t len, uint64_t deadline);
TERN_API ssize_t tern_write(int fd, const void *buf, size_t len, uint64_t deadline);
TERN_API ssize_t tern_readv(int fd, const struct iovec *iov, int iovcnt,
                            uint64_t deadline);
TERN_API ssize_t tern_writev(int fd, const struct iovec *iov, int iovcnt,
                             uint64_t deadline);

/* Reads exactly len bytes, looping over short reads. Returns len, -ENODATA
 * when the stream ended first (the bytes read so far stay in buf; see
 * *got), or an error. got (may be NULL) receives the count read in every
 * case. */
TERN_API ssize_t tern_read_exact(int fd, void *buf, size_t len, size_t *got,
                                 uint64_t deadline);
/* Writes all len bytes, looping over short writes. Returns len or an
 * error; sent (may be NULL) receives the count written in every case. */
TERN_API ssize_t tern_write_all(int fd, const void *buf, size_t len, size_t *sent,
                                uint64_t deadline);

/* Waits until fd is ready for events (POLLIN, POLLOUT, POLLPRI, POLLRDHUP;
 * POLLERR and POLLHUP are always reported): for descriptors that a foreign
 * library reads and writes itself. Returns the ready events (> 0),
 * -EINVAL (no events asked), -EBADF, -ETIMEDOUT, -ECANCELED. */
TERN_API int tern_poll(int fd, short events, uint64_t deadline);

/* Closes fd after forgetting it in the I/O driver. Do not close a
 * descriptor another task is still using. Returns 0 or -EBADF. Any thread.
 * Never suspends. */
TERN_API int tern_close(int fd);

/* ---- sockets: the system calls ----------------------------------------------- */

/* socket(2) with SOCK_CLOEXEC (and SOCK_NONBLOCK on epoll, or off the
 * runtime). Returns the fd or -EAFNOSUPPORT, -EMFILE, ... Any thread.
 * Never suspends. */
TERN_API int tern_socket(int domain, int type, int protocol);

/* accept4(2): returns the connected fd (close-on-exec). addr and addrlen
 * may be NULL. -EMFILE / -ENFILE when out of descriptors: the pending
 * connection stays queued (back off and try again; the listener is fine).
 * On io_uring a listener has one multishot accept in the kernel, armed by
 * its first tern_accept and shared by every caller on every worker (up to
 * 64 connections wait on it for a caller; then the kernel's backlog holds
 * them); TERN_NO_MULTISHOT=1 in the environment makes one accept per call
 * instead. Close a listener with tern_close: it stops listening at once
 * and its waiting callers get -EBADF; after a plain close(2) the multishot
 * would keep the socket listening until the runtime ends. */
TERN_API int tern_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
                         uint64_t deadline);
/* connect(2): returns 0 once connected, or -ECONNREFUSED, -ETIMEDOUT,
 * -EAGAIN (epoll: a Unix-domain listener's backlog is full), ... After
 * -ETIMEDOUT or -ECANCELED the socket is in an unspecified state: close
 * it. */
TERN_API int tern_connect(int fd, const struct sockaddr *addr, socklen_t addrlen,
                          uint64_t deadline);

/* recv(2) / send(2) / recvfrom / sendto / recvmsg / sendmsg. Sends add
 * MSG_NOSIGNAL. Return the count or an error (recv 0: the peer shut down
 * its side). */
TERN_API ssize_t tern_recv(int fd, void *buf, size_t len, int flags, uint64_t deadline);
TERN_API ssize_t tern_send(int fd, const void *buf, size_t len, int flags,
                           uint64_t deadline);
TERN_API ssize_t tern_recvfrom(int fd, void *buf, size_t len, int flags,
                               struct sockaddr *from, socklen_t *fromlen,
                               uint64_t deadline);
TERN_API ssize_t tern_sendto(int fd, const void *buf, size_t len, int flags,
                             const struct sockaddr *to, socklen_t tolen,
                             uint64_t deadline);
TERN_API ssize_t tern_recvmsg(int fd, struct msghdr *msg, int flags, uint64_t deadline);
TERN_API ssize_t tern_sendmsg(int fd, const struct msghdr *msg, int flags,
                              uint64_t deadline);

/* shutdown(2). Returns 0 or -EBADF, -ENOTCONN, -EINVAL. Any thread. Never
 * suspends. */
TERN_API int tern_shutdown(int fd, int how);

/* ---- sockets: the convenient layer ---------------------------------------------- */

#define TERN_REUSEPORT 1u /* SO_REUSEPORT: several listeners share a port */
#define TERN_V6ONLY 2u    /* an IPv6 listener refuses IPv4-mapped peers */

/* getaddrinfo(3) on the blocking pool. Returns 0 with *res (free it with
 * freeaddrinfo), or -ENXIO (no such host or service), -EAGAIN (temporary
 * failure), -EINVAL (bad flags or family), -ENOMEM, -ETIMEDOUT (the
 * deadline passed; the lookup finishes in the background), -ECANCELED. */
TERN_API int tern_getaddrinfo(const char *host, const char *service,
                              const struct addrinfo *hints, struct addrinfo **res,
                              uint64_t deadline);

/* A TCP listener on host:port (host NULL or "" = every interface, IPv6
 * and IPv4 when the system allows; a name is resolved), with SO_REUSEADDR
 * always and TERN_REUSEPORT / TERN_V6ONLY on request. backlog <= 0 means
 * SOMAXCONN. port 0 picks a free port (see tern_sock_local_addr). Returns
 * the fd or a negative errno (-EADDRINUSE, -ENXIO, -EINVAL, ...). Any
 * thread for a wildcard or numeric host, and then it never suspends; a
 * name is looked up, which suspends a task (-EPERM outside one). */
TERN_API int tern_tcp_listen(const char *host, uint16_t port, int backlog,
                             unsigned flags);
/* Connects to host:port, trying each resolved address in turn until one
 * answers (the deadline covers them all). Returns the fd or the last
 * address's error. */
TERN_API int tern_tcp_connect(const char *host, uint16_t port, uint64_t deadline);
/* Unix-domain stream sockets. listen removes nothing: a stale socket file
 * gives -EADDRINUSE. Paths longer than sun_path give -ENAMETOOLONG.
 * tern_unix_listen: any thread, never suspends. */
TERN_API int tern_unix_listen(const char *path, int backlog);
TERN_API int tern_unix_connect(const char *path, uint64_t deadline);
/* A UDP socket bound to host:port (host NULL = every interface). Threads
 * and suspension as tern_tcp_listen. */
TERN_API int tern_udp_bind(const char *host, uint16_t port);

/* Socket options. nodelay: TCP_NODELAY on or off. keepalive: idle_s > 0
 * turns keep-alive on with probes after idle_s seconds of silence, 0 turns
 * it off. bufsizes: SO_RCVBUF / SO_SNDBUF, 0 leaves one alone. Return 0 or
 * a negative errno. Any thread. Never suspend. */
TERN_API int tern_sock_nodelay(int fd, int on);
TERN_API int tern_sock_keepalive(int fd, int idle_s);
TERN_API int tern_sock_bufsizes(int fd, int rcvbuf, int sndbuf);
/* getsockname / getpeername into *addr (*len in: its size; out: the
 * address's). Return 0 or a negative errno. Any thread. Never suspend. */
TERN_API int tern_sock_local_addr(int fd, struct sockaddr_storage *addr, socklen_t *len);
TERN_API int tern_sock_peer_addr(int fd, struct sockaddr_storage *addr, socklen_t *len);

/* ---- regular files ----------------------------------------------------------------- */

/* openat(AT_FDCWD, path, flags | O_CLOEXEC, mode). Returns the fd or a
 * negative errno. */
TERN_API int tern_open(const char *path, int flags, mode_t mode, uint64_t deadline);
/* pread(2) / pwrite(2) at offset. Return the count or an error; -ESPIPE on
 * both backends for a descriptor that cannot seek (a pipe, a socket),
 * which is left untouched. */
TERN_API ssize_t tern_pread(int fd, void *buf, size_t len, off_t offset,
                            uint64_t deadline);
TERN_API ssize_t tern_pwrite(int fd, const void *buf, size_t len, off_t offset,
                             uint64_t deadline);
/* fsync(2), or fdatasync(2) when datasync is non-zero. */
TERN_API int tern_fsync(int fd, int datasync, uint64_t deadline);
/* statx(2). Returns 0 or a negative errno. */
TERN_API int tern_statx(int dirfd, const char *path, int flags, unsigned mask,
                        struct statx *out, uint64_t deadline);

/* ---- buffered streams ------------------------------------------------------------ */

/* A buffered reader and writer over one descriptor (a socket, a pipe), the
 * way a service should talk to a connection: reads fill a buffer in large
 * pieces and lines and frames are cut from it; writes gather in a buffer
 * and leave in one writev when it fills or on tern_stream_flush.
 *
 * The descriptor stays the caller's: the stream neither closes it nor
 * changes its flags. Free the stream before closing it: on io_uring a
 * socket's stream keeps a multishot receive armed, which holds the socket
 * open in the kernel until the stream is freed.
 *
 * The reading calls (read, read_exact, read_until, read_line, peek,
 * consume, buffered) share the read side, the writing calls (write,
 * writev, flush, unflushed) the write side: one task may read while
 * another writes, but two tasks must not use one side at once.
 *
 * No byte is lost or duplicated on a deadline or a cancel: what a read did
 * not hand over stays buffered for the next read, and what a write took
 * (*taken) is either written or still buffered (tern_stream_unflushed).
 * The calls that wait take a deadline and suspend like the descriptor
 * calls above (-EPERM outside a task); those that never wait say so. */
typedef struct tern_stream tern_stream;

typedef struct tern_stream_config {
    size_t read_buffer;   /* bytes; 0: 16 KiB. The longest line or peek */
    size_t write_buffer;  /* bytes; 0: 16 KiB. Writes this long bypass it */
    uint64_t reserved[6]; /* zero */
} tern_stream_config;

/* Makes a stream over fd (cfg may be NULL: the defaults). Returns 0 and
 * *out, or -EINVAL (fd < 0, out NULL, reserved fields not zero), -ENOMEM.
 * Any thread. Never suspends. */
TERN_API int tern_stream_new(int fd, const tern_stream_config *cfg, tern_stream **out);
/* Frees s without flushing it (flush first), dropping what it read ahead.
 * Returns the count of written bytes it dropped unsent (0 after a
 * successful flush), or -EINVAL when s is NULL. Any thread, once nothing
 * else uses s, and before the runtime it read in is freed (on io_uring it
 * holds buffers of that runtime's workers). Never suspends. */
TERN_API ssize_t tern_stream_free(tern_stream *s);
/* The descriptor s reads and writes, or -EINVAL. Never suspends. */
TERN_API int tern_stream_fd(const tern_stream *s);

/* Reads up to len bytes: what is buffered, else one read (straight into
 * buf when len is at least the buffer's size). Returns the count, 0 at the
 * end of the stream, or an error as tern_read (-EINVAL: s NULL, buf NULL
 * with len > 0). */
TERN_API ssize_t tern_stream_read(tern_stream *s, void *buf, size_t len,
                                  uint64_t deadline);
/* Reads exactly len bytes. Returns len, -ENODATA when the stream ended
 * first, or an error; got (may be NULL) receives the count copied into buf
 * in every case (those bytes are consumed). */
TERN_API ssize_t tern_stream_read_exact(tern_stream *s, void *buf, size_t len,
                                        size_t *got, uint64_t deadline);
/* Reads up to and including the first byte equal to delim, copying it into
 * buf (at most max bytes). Returns the length, delimiter included. On
 * -EMSGSIZE (max bytes, or a full read buffer, without the delimiter),
 * -ENODATA (the stream ended first), -ETIMEDOUT, -ECANCELED or an I/O error
 * nothing is consumed: the bytes stay buffered, for tern_stream_read or
 * tern_stream_consume. -EINVAL: s or buf NULL, max 0. */
TERN_API ssize_t tern_stream_read_until(tern_stream *s, int delim, void *buf, size_t max,
                                        uint64_t deadline);
/* tern_stream_read_until(s, '\n', buf, max, deadline). */
TERN_API ssize_t tern_stream_read_line(tern_stream *s, void *buf, size_t max,
                                       uint64_t deadline);
/* Waits until at least want bytes are buffered in one piece (want <= the
 * read buffer's size) and points *data at them, without consuming them;
 * they stay valid until the next reading call. Returns the count of bytes
 * at *data (>= want, or fewer, possibly 0, when the stream ended; more may
 * be buffered behind them, see tern_stream_buffered), or -EINVAL (s or
 * data NULL, want too large), -ETIMEDOUT, -ECANCELED, an I/O error. */
TERN_API ssize_t tern_stream_peek(tern_stream *s, const void **data, size_t want,
                                  uint64_t deadline);
/* Drops n buffered bytes (after a peek). Returns 0, or -EINVAL when s is
 * NULL or fewer than n are buffered. Never suspends. */
TERN_API int tern_stream_consume(tern_stream *s, size_t n);
/* Bytes buffered for reading (0 when s is NULL). Never suspends. */
TERN_API size_t tern_stream_buffered(const tern_stream *s);

/* Buffers len bytes, writing out (buffer and buf in one writev) as the
 * buffer fills. Returns len, or an error as tern_write (-EINVAL: s NULL,
 * buf NULL with len > 0); taken (may be NULL) receives in every case the
 * count of buf's bytes accepted: written, or buffered to be. */
TERN_API ssize_t tern_stream_write(tern_stream *s, const void *buf, size_t len,
                                   size_t *taken, uint64_t deadline);
/* The same for iovcnt pieces (0 <= iovcnt <= IOV_MAX, else -EINVAL): the
 * buffer and the pieces leave together, in one writev. */
TERN_API ssize_t tern_stream_writev(tern_stream *s, const struct iovec *iov, int iovcnt,
                                    size_t *taken, uint64_t deadline);
/* Writes out everything buffered. Returns 0 or an error as tern_write;
 * what was not written stays buffered (tern_stream_unflushed). */
TERN_API int tern_stream_flush(tern_stream *s, uint64_t deadline);
/* Bytes buffered for writing (0 when s is NULL). Never suspends. */
TERN_API size_t tern_stream_unflushed(const tern_stream *s);

#ifdef __cplusplus
}
#endif
#endif /* TERN_IO_H */
