/* The benchmark servers' common part; see server.h. */
#define _GNU_SOURCE
#include "server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LIFETIME_S (366u * 24 * 3600)
#define ACCEPT_BACKOFF_NS (10 * 1000000ull) /* out of descriptors: let some close */
#define STOP_BY_ERROR 0                     /* a stop byte that is no signal number */

typedef struct server {
    const char *name;
    tern_task_fn conn;
    unsigned workers;
    unsigned port;
    uint64_t lifetime_s; /* 0: until a signal */
    int lfd;
    int failed;
    _Atomic uint64_t accepted;
} server;

/* Signal handler -> serving task: one byte per stop request (the number of
 * the signal). The handler may only use async-signal-safe calls. */
static int stop_pipe[2] = {-1, -1};

static void on_stop_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    /* the write end is non-blocking: a full pipe already holds a stop */
    ssize_t rc = write(stop_pipe[1], &b, 1);
    (void)rc;
    errno = saved;
}

static void request_stop(unsigned char why)
{
    ssize_t rc = write(stop_pipe[1], &why, 1);
    (void)rc;
}

static void usage(const char *name, const char *msg)
{
    if (msg)
        fprintf(stderr, "error: %s\n", msg);
    fprintf(stderr,
            "usage: %s [--workers N] PORT [LIFETIME_S]\n"
            "  serves 127.0.0.1:PORT (0: any free port) until SIGINT, SIGTERM or "
            "LIFETIME_S seconds (default: no limit); --workers default %u\n",
            name, BENCH_DEFAULT_WORKERS);
    exit(2);
}

/* Strict decimal in lo..hi, else usage. */
static uint64_t parse_arg(const char *name, const char *what, const char *s, uint64_t lo,
                          uint64_t hi)
{
    char *end = NULL;
    char msg[160];
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || errno || *end || v < lo || v > hi) {
        snprintf(msg, sizeof msg, "bad %s %.32s (want %llu..%llu)", what, s,
                 (unsigned long long)lo, (unsigned long long)hi);
        usage(name, msg);
    }
    return v;
}

static void parse_args(int argc, char **argv, server *s)
{
    int npos = 0;
    s->workers = BENCH_DEFAULT_WORKERS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage(s->name, NULL);
        else if (strcmp(a, "--workers") == 0 && i + 1 < argc)
            s->workers = (unsigned)parse_arg(s->name, "--workers", argv[++i], 1, 1024);
        else if (strncmp(a, "--workers=", 10) == 0)
            s->workers = (unsigned)parse_arg(s->name, "--workers", a + 10, 1, 1024);
        else if (a[0] == '-')
            usage(s->name, "unknown option or missing value");
        else if (npos == 2)
            usage(s->name, "too many arguments");
        else if (npos++ == 0)
            s->port = (unsigned)parse_arg(s->name, "PORT", a, 0, 65535);
        else
            s->lifetime_s = parse_arg(s->name, "LIFETIME_S", a, 0, MAX_LIFETIME_S);
    }
    if (npos == 0)
        usage(s->name, "PORT is required");
}

/* SIGINT and SIGTERM write to stop_pipe. They are blocked here and stay
 * blocked in every thread the runtime starts (threads inherit the mask);
 * main() unblocks them once the runtime is up, so the handler always runs
 * on the main thread, which just waits in tern_block_on, and never
 * interrupts a worker's system calls. */
static int stop_signals_init(sigset_t *set)
{
    if (pipe2(stop_pipe, O_CLOEXEC) < 0)
        return -errno;
    /* The read end stays blocking: tern waits for it like any pipe (on
     * io_uring an O_NONBLOCK pipe would answer -EAGAIN instead of waiting). */
    if (fcntl(stop_pipe[1], F_SETFL, O_NONBLOCK) < 0)
        return -errno;
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -errno;
    return pthread_sigmask(SIG_BLOCK, set, NULL) == 0 ? 0 : -EINVAL;
}

static void drop_conn(void *arg)
{
    tern_close((int)(intptr_t)arg);
}

static void *accept_loop(void *arg)
{
    server *s = arg;
    for (;;) {
        int fd = tern_accept(s->lfd, NULL, NULL, 0);
        if (fd == -ECANCELED)
            break;
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
            /* the connection stays queued; descriptors free up as clients leave */
            if (tern_sleep(ACCEPT_BACKOFF_NS) < 0)
                break;
            continue;
        }
        if (fd == -ECONNABORTED || fd == -EINTR || fd == -EAGAIN || fd == -EPROTO)
            continue; /* that one connection is gone; the listener is fine */
        if (fd < 0) {
            fprintf(stderr, "error: %s: accept: %s\n", s->name, tern_strerror(fd));
            s->failed = 1;
            request_stop(STOP_BY_ERROR);
            break;
        }
        atomic_fetch_add_explicit(&s->accepted, 1, memory_order_relaxed);
        /* one small message per round trip: never wait for Nagle */
        tern_sock_nodelay(fd, 1);
        /* the connection task owns fd: if it never runs (no stack under
         * memory pressure, cancelled at shutdown), drop_conn closes it */
        if (tern_spawn_owned(s->conn, (void *)(intptr_t)fd, drop_conn, NULL) < 0)
            tern_close(fd);
    }
    tern_close(s->lfd);
    return NULL;
}

/* The main task: listen, accept in a task of its own, wait for the stop. */
static void *serve(void *arg)
{
    server *s = arg;
    s->lfd = tern_tcp_listen("127.0.0.1", (uint16_t)s->port, 0, 0);
    if (s->lfd < 0) {
        fprintf(stderr, "error: %s: listen on 127.0.0.1:%u: %s\n", s->name, s->port,
                tern_strerror(s->lfd));
        s->failed = 1;
        return NULL;
    }
    struct sockaddr_storage addr;
    socklen_t alen = sizeof addr;
    if (s->port == 0 && tern_sock_local_addr(s->lfd, &addr, &alen) == 0)
        s->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    tern_loop_info info;
    const char *backend = tern_loop_get_info(NULL, &info) == 0 ? info.backend : "?";
    printf("INFO %s listening on 127.0.0.1:%u backend=%s workers=%u\n", s->name, s->port,
           backend, s->workers);
    fflush(stdout);

    tern_task *acceptor;
    int rc = tern_spawn(accept_loop, s, &acceptor);
    if (rc < 0) {
        fprintf(stderr, "error: %s: spawn: %s\n", s->name, tern_strerror(rc));
        tern_close(s->lfd);
        s->failed = 1;
        return NULL;
    }
    uint64_t deadline = s->lifetime_s ? tern_now() + s->lifetime_s * 1000000000ull : 0;
    unsigned char why = STOP_BY_ERROR;
    ssize_t n = tern_read(stop_pipe[0], &why, 1, deadline);
    const char *reason = n == -ETIMEDOUT  ? "lifetime over"
                         : n != 1         ? "error"
                         : why == SIGINT  ? "SIGINT"
                         : why == SIGTERM ? "SIGTERM"
                                          : "accept failed";
    if (n < 0 && n != -ETIMEDOUT) {
        fprintf(stderr, "error: %s: waiting for a stop: %s\n", s->name,
                tern_strerror((int)n));
        s->failed = 1;
    }
    tern_task_cancel(acceptor);
    tern_join(acceptor, NULL); /* -ECANCELED: it met the cancel, as it should */
    printf("INFO %s stopped (%s) after %llu connections\n", s->name, reason,
           (unsigned long long)atomic_load(&s->accepted));
    fflush(stdout);
    return NULL;
}

int server_main(int argc, char **argv, const char *name, tern_task_fn conn)
{
    server s = {.name = name, .conn = conn};
    parse_args(argc, argv, &s);

    sigset_t stops;
    int rc = stop_signals_init(&stops);
    if (rc < 0)
        bench_die("stop signals", rc);
    tern_runtime *rt = bench_runtime_new(s.workers);
    pthread_sigmask(SIG_UNBLOCK, &stops, NULL);
    rc = tern_block_on(rt, serve, &s, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    /* connection tasks still waiting are woken with -ECANCELED and close */
    bench_runtime_free(rt);
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    return s.failed;
}
