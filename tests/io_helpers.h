/*
 * What the I/O suites share: runtimes on the backend TERN_BACKEND forces,
 * a main task per test with the descriptor count checked afterwards,
 * deadlines, random payloads and loopback TCP pairs.
 */
#ifndef TERN_TEST_IO_HELPERS_H
#define TERN_TEST_IO_HELPERS_H

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "helpers.h"

#define MS 1000000ull
#define SEC 1000000000ull

/* A deadline for operations that must succeed: far enough never to be hit
 * on a loaded machine, near enough to end a broken test. */
static inline uint64_t dl_ms(uint64_t ms)
{
    return tern_now() + ms * MS;
}
#define LONG_DL() dl_ms(20000)

#define ck_assert_einval_or_efault(x)                                                    \
    do {                                                                                 \
        long r_ = (long)(x);                                                             \
        ck_assert_msg(r_ == -EINVAL || r_ == -EFAULT, "%s returned %ld", #x, r_);        \
    } while (0)

static unsigned g_workers;

static inline int backend_is(const char *name)
{
    const char *s = getenv("TERN_BACKEND");
    return s && strcmp(s, name) == 0;
}

/* Makes a runtime; NULL (a skip) when the kernel refuses the io_uring
 * backend that TERN_BACKEND forces. */
static inline tern_runtime *rt_make(unsigned workers)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    if (r != 0 && backend_is("io_uring") &&
        (r == -ENOSYS || r == -EPERM || r == -ENOMEM)) {
        test_skip("io_uring unavailable here (%s)", tern_strerror(r));
        return NULL;
    }
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    return rt;
}

/* Runs fn(arg) as the main task of a fresh runtime with 1 or 4 workers;
 * the descriptor count must be the same afterwards. */
static inline void run_io(int i, tern_task_fn fn, void *arg)
{
    /* the runtime must make SIGPIPE harmless itself */
    signal(SIGPIPE, SIG_DFL);
    g_workers = i ? 4 : 1;
    int fds = fd_count();
    tern_runtime *rt = rt_make(g_workers);
    if (!rt)
        return;
    int r = tern_block_on(rt, fn, arg, NULL);
    ck_assert_msg(r == 0, "main task: %s", tern_strerror(r));
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}

/* IO_TEST(name) { body of the main task } */
#define IO_TEST(name)                                                                    \
    static void *name##_main(void *arg);                                                 \
    START_TEST(name)                                                                     \
    {                                                                                    \
        run_io(_i, name##_main, NULL);                                                   \
    }                                                                                    \
    END_TEST                                                                             \
    static void *name##_main(void *arg)

static inline void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 32);
    }
}

static inline uint64_t rnd_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static inline uint16_t addr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    ck_abort_msg("unexpected family %d", ss->ss_family);
    return 0;
}

static inline uint16_t local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    ck_assert_int_eq(tern_sock_local_addr(fd, &ss, &len), 0);
    return addr_port(&ss);
}

static inline struct sockaddr_in lo4(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static inline int tcp_listener(uint16_t *port, int backlog)
{
    int l = tern_tcp_listen("127.0.0.1", 0, backlog, 0);
    ck_assert_msg(l >= 0, "tern_tcp_listen: %s", tern_strerror(l));
    *port = local_port(l);
    ck_assert_uint_ne(*port, 0);
    return l;
}

/* A connected TCP pair on 127.0.0.1: *c the connecting side, *s the
 * accepted one. */
static inline void tcp_pair(int *c, int *s)
{
    uint16_t port;
    int l = tcp_listener(&port, 0);
    *c = tern_tcp_connect("127.0.0.1", port, LONG_DL());
    ck_assert_msg(*c >= 0, "tern_tcp_connect: %s", tern_strerror(*c));
    *s = tern_accept(l, NULL, NULL, LONG_DL());
    ck_assert_msg(*s >= 0, "tern_accept: %s", tern_strerror(*s));
    ck_assert_int_eq(tern_close(l), 0);
}

static inline void read_exactly(int fd, void *buf, size_t len)
{
    size_t got = 12345;
    ssize_t r = tern_read_exact(fd, buf, len, &got, LONG_DL());
    ck_assert_msg(r == (ssize_t)len, "read_exact(%zu): %zd (%s), got %zu", len, r,
                  tern_strerror((int)r), got);
    ck_assert_uint_eq(got, len);
}

static inline void write_all(int fd, const void *buf, size_t len)
{
    size_t sent = 12345;
    ssize_t r = tern_write_all(fd, buf, len, &sent, LONG_DL());
    ck_assert_msg(r == (ssize_t)len, "write_all(%zu): %zd (%s)", len, r,
                  tern_strerror((int)r));
    ck_assert_uint_eq(sent, len);
}

/* Bytes received on socket fd and not read yet. */
static inline int sock_inq(int fd)
{
    int n = -1;
    ck_assert_int_eq(ioctl(fd, SIOCINQ, &n), 0);
    return n;
}

/* Closes fd with a reset (SO_LINGER 0) instead of a FIN. */
static inline void reset_close(int fd)
{
    struct linger lg = {1, 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ck_assert_int_eq(tern_close(fd), 0);
}

#endif
