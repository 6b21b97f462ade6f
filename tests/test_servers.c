/*
 * The example servers (bench/http, bench/tcp_echo) as a real server must
 * behave with slow, stuck and odd clients: the header, idle and write
 * timeouts, Expect: 100-continue, body limits, chunked bodies, the drain at
 * SIGTERM, and descriptors given back. Each test starts the built server as
 * a child process on a port the kernel picks (PORT 0, read from its INFO
 * line), talks to it over real sockets on 127.0.0.1 and stops it by its pid.
 * Every wait is bounded: a server that misbehaves fails the test, never
 * hangs it. Registered once per backend (TERN_BACKEND, which the server
 * inherits). TERN_TEST_SERVERS_DIR=DIR runs the tests against DIR/http and
 * DIR/tcp_echo instead of the ones built beside this suite.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "helpers.h"

#ifndef TERN_TEST_HTTP_BIN
#define TERN_TEST_HTTP_BIN "bench/http"
#endif
#ifndef TERN_TEST_TCP_ECHO_BIN
#define TERN_TEST_TCP_ECHO_BIN "bench/tcp_echo"
#endif

#define BOUND_MS 15000 /* the longest any one wait may take before failing */

typedef struct srv {
    pid_t pid;
    int out; /* the server's stdout */
    unsigned port;
    int exited;
    int status;
} srv;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void bin_path(const char *which, char *buf, size_t len)
{
    const char *dir = getenv("TERN_TEST_SERVERS_DIR");
    if (dir && *dir)
        snprintf(buf, len, "%s/%s", dir, which);
    else
        snprintf(buf, len, "%s",
                 strcmp(which, "http") == 0 ? TERN_TEST_HTTP_BIN
                                            : TERN_TEST_TCP_ECHO_BIN);
}

/* Starts server `which` with the environment settings in env ("NAME=VALUE",
 * NULL-terminated) and waits for its INFO line. */
static void srv_start(srv *s, const char *which, const char *const *env)
{
    char path[4096];
    bin_path(which, path, sizeof path);
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    memset(s, 0, sizeof *s);
    s->pid = fork();
    ck_assert_int_ge(s->pid, 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test takes it along */
        dup2(p[1], 1);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        /* LIFETIME_S as a last safety net; the tests stop it long before */
        execl(path, which, "--workers", "2", "0", "300", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    s->out = p[0];
    char line[512];
    size_t len = 0;
    long end = now_ms() + BOUND_MS;
    for (;;) {
        struct pollfd pfd = {.fd = s->out, .events = POLLIN};
        long left = end - now_ms();
        ck_assert_msg(left > 0, "%s printed no INFO line", path);
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(s->out, line + len, sizeof line - 1 - len);
        ck_assert_msg(n > 0, "%s exited before listening", path);
        len += (size_t)n;
        line[len] = 0;
        const char *at = strstr(line, "listening on 127.0.0.1:");
        if (at && strchr(at, '\n')) {
            s->port = (unsigned)atoi(at + strlen("listening on 127.0.0.1:"));
            break;
        }
        ck_assert_msg(len < sizeof line - 1, "no INFO line in: %s", line);
    }
    ck_assert_uint_gt(s->port, 0);
}

/* 1 once the server has exited (waiting up to ms). */
static int srv_wait_exit(srv *s, long ms)
{
    long end = now_ms() + ms;
    while (!s->exited) {
        pid_t r = waitpid(s->pid, &s->status, WNOHANG);
        if (r == s->pid)
            s->exited = 1;
        else if (now_ms() >= end)
            return 0;
        else
            usleep(1000);
    }
    return 1;
}

/* SIGTERM, and an exit status of 0 within the bound. */
static void srv_stop(srv *s)
{
    if (!s->exited)
        kill(s->pid, SIGTERM);
    if (!srv_wait_exit(s, BOUND_MS)) {
        kill(s->pid, SIGKILL);
        srv_wait_exit(s, BOUND_MS);
        ck_abort_msg("the server did not exit within %d ms of SIGTERM", BOUND_MS);
    }
    ck_assert_msg(WIFEXITED(s->status) && WEXITSTATUS(s->status) == 0,
                  "server exit status %#x", s->status);
    close(s->out);
}

/* Descriptors the server holds. */
static int srv_fds(const srv *s)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)s->pid);
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- the client side: plain blocking sockets, every wait bounded by poll -- */

/* A connection to the server; rcvbuf > 0 shrinks its receive buffer. Returns
 * the fd, or -errno of connect. */
static int cl_connect_rc(unsigned port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int cl_connect(unsigned port)
{
    int fd = cl_connect_rc(port, 0);
    ck_assert_msg(fd >= 0, "connect: %s", strerror(-fd));
    return fd;
}

static void cl_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    long end = now_ms() + BOUND_MS;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            ck_assert_msg(now_ms() < end, "send blocked for %d ms", BOUND_MS);
            poll(&pfd, 1, 100);
            continue;
        }
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void cl_puts(int fd, const char *s)
{
    cl_send(fd, s, strlen(s));
}

/* Reads into buf (NUL-terminated) until it holds needle, the peer closes,
 * or ms pass. Returns the length read; *closed tells whether the peer
 * closed (EOF or reset). */
static size_t cl_read_until(int fd, char *buf, size_t cap, const char *needle, long ms,
                            int *closed)
{
    size_t len = 0;
    long end = now_ms() + ms;
    *closed = 0;
    buf[0] = 0;
    while (!strstr(buf, needle) && len < cap - 1) {
        long left = end - now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
        buf[len] = 0;
    }
    return len;
}

/* Reads until `needle` arrives, failing after the bound. */
static void cl_expect(int fd, char *buf, size_t cap, const char *needle)
{
    int closed;
    cl_read_until(fd, buf, cap, needle, BOUND_MS, &closed);
    ck_assert_msg(strstr(buf, needle), "wanted \"%s\", got \"%s\"%s", needle, buf,
                  closed ? " and a close" : "");
}

/* 1 when the peer closes (EOF or reset) within ms; what it sent before is
 * read and thrown away. */
static int cl_wait_closed(int fd, long ms)
{
    char buf[4096];
    long end = now_ms() + ms;
    for (;;) {
        long left = end - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            return 1;
    }
}

static const char GET[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
static const char *const DEFAULTS[] = {NULL};

/* ---- timeouts -------------------------------------------------------------- */

/* A client trickling a head one byte at a time is closed once the header
 * timeout since its first byte has passed, though no wait between two bytes
 * comes near the idle timeout. */
START_TEST(http_slowloris_closed_after_header_timeout)
{
    const char *env[] = {"TERN_SERVER_HEADER_TIMEOUT_MS=500",
                         "TERN_SERVER_IDLE_TIMEOUT_MS=60000", NULL};
    srv s;
    srv_start(&s, "http", env);
    int fd = cl_connect(s.port);
    long start = now_ms();
    cl_puts(fd, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    char got[512] = "";
    size_t len = 0;
    int closed = 0;
    while (!closed && now_ms() - start < BOUND_MS) {
        send(fd, "a", 1, MSG_NOSIGNAL);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) > 0) {
            ssize_t n = recv(fd, got + len, sizeof got - 1 - len, MSG_DONTWAIT);
            if (n > 0)
                got[len += (size_t)n] = 0;
            else if (n == 0 || errno != EAGAIN)
                closed = 1;
        }
    }
    long took = now_ms() - start;
    ck_assert_msg(closed, "a trickling head was still open after %ld ms", took);
    ck_assert_msg(took >= 450, "closed after %ld ms, before the header timeout", took);
    ck_assert_msg(len == 0 || strncmp(got, "HTTP/1.1 408 ", 13) == 0, "answer: %s", got);
    close(fd);
    srv_stop(&s);
}
END_TEST

/* A keep-alive connection that sends no next request is closed after the
 * idle timeout; one that keeps busy is not. */
START_TEST(http_idle_keepalive_closed)
{
    const char *env[] = {"TERN_SERVER_IDLE_TIMEOUT_MS=1500", NULL};
    srv s;
    srv_start(&s, "http", env);
    int fd = cl_connect(s.port);
    char buf[1024];
    for (int i = 0; i < 8; i++) { /* busy for longer than one idle timeout */
        cl_puts(fd, GET);
        cl_expect(fd, buf, sizeof buf, "Hello, World!");
        usleep(250 * 1000);
    }
    /* the server's idle wait starts after it has this request */
    long start = now_ms();
    cl_puts(fd, GET);
    cl_expect(fd, buf, sizeof buf, "Hello, World!");
    ck_assert_msg(cl_wait_closed(fd, BOUND_MS), "an idle connection stayed open");
    ck_assert_msg(now_ms() - start >= 1480, "closed %ld ms after the last request",
                  now_ms() - start);
    close(fd);
    srv_stop(&s);
}
END_TEST

START_TEST(tcp_echo_idle_closed)
{
    const char *env[] = {"TERN_SERVER_IDLE_TIMEOUT_MS=400", NULL};
    srv s;
    srv_start(&s, "tcp_echo", env);
    int fd = cl_connect(s.port);
    char buf[64];
    cl_puts(fd, "ping");
    cl_expect(fd, buf, sizeof buf, "ping");
    ck_assert_msg(cl_wait_closed(fd, BOUND_MS), "an idle echo connection stayed open");
    close(fd);
    srv_stop(&s);
}
END_TEST

/* A client that sends and never reads: the server's answers fill both
 * socket buffers, its write waits, and the write timeout closes the
 * connection; the server's descriptor count shows it. */
static void non_reader_closed(const char *which, const char *msg, size_t msglen)
{
    const char *env[] = {"TERN_SERVER_WRITE_TIMEOUT_MS=300",
                         "TERN_SERVER_IDLE_TIMEOUT_MS=60000", NULL};
    srv s;
    srv_start(&s, which, env);
    int base = srv_fds(&s);
    int fd = cl_connect_rc(s.port, 4096);
    ck_assert_int_ge(fd, 0);
    WAIT_UNTIL(srv_fds(&s) > base, BOUND_MS); /* accepted */
    long end = now_ms() + BOUND_MS;
    int gone = 0;
    while (!gone && now_ms() < end) {
        ssize_t n = send(fd, msg, msglen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN)
            break; /* a reset: the server closed it */
        if (n < 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 50);
        }
        gone = srv_fds(&s) <= base;
    }
    WAIT_UNTIL(srv_fds(&s) <= base, BOUND_MS);
    close(fd);
    srv_stop(&s);
}

START_TEST(http_non_reader_closed_after_write_timeout)
{
    char pipeline[64 * (sizeof GET - 1)];
    for (int i = 0; i < 64; i++)
        memcpy(pipeline + i * (sizeof GET - 1), GET, sizeof GET - 1);
    non_reader_closed("http", pipeline, sizeof pipeline);
}
END_TEST

START_TEST(tcp_echo_non_reader_closed_after_write_timeout)
{
    static char block[65536];
    memset(block, 'e', sizeof block);
    non_reader_closed("tcp_echo", block, sizeof block);
}
END_TEST

/* Connections left by clients that went quiet, mid-head or between
 * requests, are all closed, and the server's descriptors come back to what
 * they were. */
START_TEST(http_fds_do_not_grow)
{
    const char *env[] = {"TERN_SERVER_HEADER_TIMEOUT_MS=300",
                         "TERN_SERVER_IDLE_TIMEOUT_MS=300", NULL};
    enum { N = 60 };
    srv s;
    srv_start(&s, "http", env);
    int base = srv_fds(&s);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = cl_connect(s.port);
        if (i % 3 == 1)
            cl_puts(fds[i], "GET / HTTP/1.1\r\nHost"); /* stops mid-head */
        else if (i % 3 == 2)
            cl_puts(fds[i], GET); /* then idle */
    }
    for (int i = 0; i < N; i++) {
        ck_assert_msg(cl_wait_closed(fds[i], BOUND_MS), "connection %d stayed open", i);
        close(fds[i]);
    }
    WAIT_UNTIL(srv_fds(&s) <= base, BOUND_MS);
    srv_stop(&s);
}
END_TEST

/* ---- request bodies ---------------------------------------------------------- */

/* Expect: 100-continue gets "100 Continue" before the body, then the
 * answer, on two URLs in turn on one connection. */
START_TEST(http_100_continue)
{
    srv s;
    srv_start(&s, "http", DEFAULTS);
    int fd = cl_connect(s.port);
    char buf[1024];
    int closed;
    for (int i = 0; i < 2; i++) {
        char head[256];
        snprintf(head, sizeof head,
                 "POST /%c HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 "Expect: 100-continue\r\n\r\n",
                 'a' + i);
        cl_puts(fd, head);
        cl_read_until(fd, buf, sizeof buf, "\r\n\r\n", BOUND_MS, &closed);
        ck_assert_msg(strcmp(buf, "HTTP/1.1 100 Continue\r\n\r\n") == 0,
                      "wanted 100 Continue, got \"%s\"", buf);
        cl_puts(fd, "hello");
        cl_expect(fd, buf, sizeof buf, "Hello, World!");
        ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "got \"%s\"", buf);
    }
    /* no body, no 100 */
    cl_puts(fd, "GET / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n");
    cl_expect(fd, buf, sizeof buf, "Hello, World!");
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "got \"%s\"", buf);
    close(fd);
    srv_stop(&s);
}
END_TEST

/* What curl does: send the head with Expect: 100-continue, wait up to 1 s
 * for the 100; a final answer instead means the body is not sent; then
 * the next upload on the same connection. Both must be answered. */
START_TEST(http_curl_like_upload_to_two_urls)
{
    srv s;
    srv_start(&s, "http", DEFAULTS);
    int fd = cl_connect(s.port);
    static char body[3000];
    memset(body, 'b', sizeof body);
    char buf[2048];
    int closed;
    for (int i = 0; i < 2; i++) {
        char head[256];
        snprintf(head, sizeof head,
                 "PUT /up%d HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                 "Expect: 100-continue\r\n\r\n",
                 i, sizeof body);
        cl_puts(fd, head);
        cl_read_until(fd, buf, sizeof buf, "\r\n\r\n", 1000, &closed);
        ck_assert_msg(!closed, "closed after upload %d's head", i);
        if (buf[0] == 0 || strncmp(buf, "HTTP/1.1 100 ", 13) == 0)
            cl_send(fd, body, sizeof body); /* the 100, or curl's 1 s wait */
        if (strncmp(buf, "HTTP/1.1 100 ", 13) == 0)
            memmove(buf, buf + 25, strlen(buf + 25) + 1);
        if (!strstr(buf, "Hello, World!"))
            cl_read_until(fd, buf + strlen(buf), sizeof buf - strlen(buf),
                          "Hello, World!", BOUND_MS, &closed);
        ck_assert_msg(strstr(buf, "HTTP/1.1 200 ") && strstr(buf, "Hello, World!"),
                      "upload %d: got \"%s\"%s", i, buf, closed ? " and a close" : "");
    }
    close(fd);
    srv_stop(&s);
}
END_TEST

/* Status line of the answer to req, and whether the server then closed. */
static void expect_refused(unsigned port, const char *req, const char *status)
{
    int fd = cl_connect(port);
    char buf[1024];
    cl_puts(fd, req);
    cl_expect(fd, buf, sizeof buf, "\r\n\r\n");
    ck_assert_msg(strncmp(buf, status, strlen(status)) == 0, "for %s wanted %s, got %s",
                  req, status, buf);
    ck_assert_msg(strstr(buf, "Connection: close\r\n"), "no Connection: close in %s",
                  buf);
    ck_assert_msg(cl_wait_closed(fd, BOUND_MS), "still open after %s", status);
    close(fd);
}

/* A body over the limit gets 413 at once (no 100 Continue) and a close;
 * 2^63 as a Content-Length is not read for ever. */
START_TEST(http_huge_body_413)
{
    const char *env[] = {"TERN_SERVER_BODY_MAX=4096", NULL};
    srv s;
    srv_start(&s, "http", env);
    expect_refused(
        s.port,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9223372036854775808\r\n\r\n",
        "HTTP/1.1 413 Content Too Large\r\n");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4097\r\n"
                   "Expect: 100-continue\r\n\r\n",
                   "HTTP/1.1 413 ");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "2000\r\n",
                   "HTTP/1.1 413 ");
    /* at the limit: fine */
    int fd = cl_connect(s.port);
    static char body[4096];
    memset(body, 'x', sizeof body);
    cl_puts(fd, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n");
    cl_send(fd, body, sizeof body);
    char buf[1024];
    cl_expect(fd, buf, sizeof buf, "Hello, World!");
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0, "got %s", buf);
    close(fd);
    srv_stop(&s);
}
END_TEST

/* A chunked body is decoded (extensions, trailers) and the request after it
 * on the connection is answered too. */
START_TEST(http_chunked_request)
{
    srv s;
    srv_start(&s, "http", DEFAULTS);
    int fd = cl_connect(s.port);
    cl_puts(fd, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5;name=value\r\nhello\r\n");
    cl_puts(fd, "6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n");
    cl_puts(fd, "GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char buf[2048];
    int closed;
    cl_read_until(fd, buf, sizeof buf, "\x01", BOUND_MS, &closed); /* to the close */
    char *second = strstr(buf, "Hello, World!HTTP/1.1 200 ");
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0 && second &&
                      strstr(second + 13, "Hello, World!") && closed,
                  "got \"%s\"", buf);
    close(fd);
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
                   "HTTP/1.1 501 ");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "zz\r\n",
                   "HTTP/1.1 400 ");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabcX\r\n",
                   "HTTP/1.1 400 ");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                   "Content-Length: 5\r\n\r\n",
                   "HTTP/1.1 400 ");
    expect_refused(
        s.port, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 400 ");
    srv_stop(&s);
}
END_TEST

START_TEST(http_bad_length_400)
{
    srv s;
    srv_start(&s, "http", DEFAULTS);
    expect_refused(
        s.port,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 184467440737095516160\r\n\r\n",
        "HTTP/1.1 400 ");
    expect_refused(s.port, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12a\r\n\r\n",
                   "HTTP/1.1 400 ");
    expect_refused(s.port, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
                   "HTTP/1.1 400 ");
    expect_refused(s.port,
                   "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                   "Content-Length: 2\r\n\r\n",
                   "HTTP/1.1 400 ");
    srv_stop(&s);
}
END_TEST

/* ---- the drain --------------------------------------------------------------- */

/* Until connect is refused (the listener closed), bounded. */
static void wait_refused(unsigned port)
{
    long end = now_ms() + BOUND_MS;
    for (;;) {
        int fd = cl_connect_rc(port, 0);
        if (fd == -ECONNREFUSED)
            return;
        if (fd >= 0)
            close(fd);
        ck_assert_msg(now_ms() < end, "connects still accepted after SIGTERM");
        usleep(10 * 1000);
    }
}

/* SIGTERM with a request in flight: the listener closes at once, an idle
 * keep-alive connection is closed, the request in flight is answered (with
 * Connection: close), and the server exits 0 well before the drain
 * deadline. */
START_TEST(http_sigterm_drains)
{
    const char *env[] = {"TERN_SERVER_DRAIN_TIMEOUT_MS=10000", NULL};
    srv s;
    srv_start(&s, "http", env);
    char buf[1024];
    int idle = cl_connect(s.port);
    cl_puts(idle, GET);
    cl_expect(idle, buf, sizeof buf, "Hello, World!");
    int busy = cl_connect(s.port);
    cl_puts(busy, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n");
    cl_expect(busy, buf, sizeof buf, "100 Continue\r\n\r\n"); /* in flight now */
    long start = now_ms();
    ck_assert_int_eq(kill(s.pid, SIGTERM), 0);
    wait_refused(s.port);
    ck_assert_msg(cl_wait_closed(idle, BOUND_MS), "an idle connection outlived the stop");
    ck_assert_msg(!srv_wait_exit(&s, 0), "exited with a request in flight");
    cl_puts(busy, "hello");
    cl_expect(busy, buf, sizeof buf, "Hello, World!");
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0 &&
                      strstr(buf, "Connection: close\r\n"),
                  "got %s", buf);
    ck_assert_msg(cl_wait_closed(busy, BOUND_MS), "the drained connection stayed open");
    ck_assert_msg(srv_wait_exit(&s, BOUND_MS), "no exit after the drain");
    ck_assert_msg(now_ms() - start < 10000, "exit only at the drain deadline");
    close(idle);
    close(busy);
    srv_stop(&s); /* exit status 0 */
}
END_TEST

/* A request in flight that never completes is cut at the drain deadline;
 * the exit status is still 0. */
START_TEST(http_sigterm_drain_deadline)
{
    const char *env[] = {"TERN_SERVER_DRAIN_TIMEOUT_MS=300", NULL};
    srv s;
    srv_start(&s, "http", env);
    char buf[1024];
    int busy = cl_connect(s.port);
    cl_puts(busy, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n");
    cl_expect(busy, buf, sizeof buf, "100 Continue\r\n\r\n");
    ck_assert_int_eq(kill(s.pid, SIGTERM), 0);
    ck_assert_msg(srv_wait_exit(&s, BOUND_MS), "no exit after the drain deadline");
    ck_assert_msg(cl_wait_closed(busy, BOUND_MS), "a cut connection stayed open");
    close(busy);
    srv_stop(&s);
}
END_TEST

START_TEST(tcp_echo_sigterm_drains)
{
    srv s;
    srv_start(&s, "tcp_echo", DEFAULTS);
    int fd = cl_connect(s.port);
    char buf[64];
    cl_puts(fd, "ping");
    cl_expect(fd, buf, sizeof buf, "ping");
    long start = now_ms();
    ck_assert_int_eq(kill(s.pid, SIGTERM), 0);
    wait_refused(s.port);
    ck_assert_msg(cl_wait_closed(fd, BOUND_MS),
                  "an idle echo connection outlived the stop");
    ck_assert_msg(srv_wait_exit(&s, BOUND_MS), "no exit after SIGTERM");
    ck_assert_msg(now_ms() - start < 5000, "exit only at the drain deadline");
    close(fd);
    srv_stop(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("servers");
    TCase *t = tcase_create("timeouts");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, http_slowloris_closed_after_header_timeout);
    tcase_add_test(t, http_idle_keepalive_closed);
    tcase_add_test(t, tcp_echo_idle_closed);
    tcase_add_test(t, http_non_reader_closed_after_write_timeout);
    tcase_add_test(t, tcp_echo_non_reader_closed_after_write_timeout);
    tcase_add_test(t, http_fds_do_not_grow);
    suite_add_tcase(s, t);
    t = tcase_create("bodies");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, http_100_continue);
    tcase_add_test(t, http_curl_like_upload_to_two_urls);
    tcase_add_test(t, http_huge_body_413);
    tcase_add_test(t, http_chunked_request);
    tcase_add_test(t, http_bad_length_400);
    suite_add_tcase(s, t);
    t = tcase_create("drain");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, http_sigterm_drains);
    tcase_add_test(t, http_sigterm_drain_deadline);
    tcase_add_test(t, tcp_echo_sigterm_drains);
    suite_add_tcase(s, t);
    return run_suite(s);
}
