/* The benchmark servers' common part; see server.h. */
#define _GNU_SOURCE
#include "server.h"

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LIFETIME_S (366u * 24 * 3600)
#define ACCEPT_BACKOFF_NS (10 * 1000000ull) /* out of descriptors: let some close */
#define DRAIN_POLL_NS (5 * 1000000ull) /* how often the drain looks at what is left */
#define MS 1000000ull

enum { CONN_BUSY, CONN_IDLE, CONN_CUT };

struct server_conn {
    _Atomic int refs; /* the task's, and the registry's while it is linked */
    int fd;
    int linked; /* in the registry (the task handle is held) */
    int done;   /* the task finished or never ran */
    /* BUSY, IDLE (waiting in server_stream_idle) or CUT (cancelled by the
     * drain): a connection's own word, so a request takes no shared lock */
    _Atomic int state;
    tern_task *task;
    server_conn *prev, *next;
};

typedef struct server {
    const char *name;
    server_conn_fn conn;
    unsigned workers;
    unsigned port;
    uint64_t lifetime_s; /* 0: until a signal */
    int lfd;
    int failed;
    _Atomic uint64_t accepted;
    _Atomic uint64_t live; /* connections not finished yet */
    /* The registry of connections, for the drain. Held only around a few
     * stores, never across a suspension. */
    pthread_mutex_t lock;
    server_conn *conns;
    _Atomic int draining; /* set under lock; read without it on every answer */
} server;

static server *the_server;
static server_limits limits;

/* The stop: cancelled by SIGINT or SIGTERM (stop_on_signal), or by the
 * acceptor when it fails; the serving task waits on it. */
static tern_token *stop;
static const char *stop_reason = "lifetime over";

static void usage(const char *name, const char *msg)
{
    if (msg)
        fprintf(stderr, "error: %s\n", msg);
    fprintf(stderr,
            "usage: %s [--workers N] PORT [LIFETIME_S]\n"
            "  serves 127.0.0.1:PORT (0: any free port) until SIGINT, SIGTERM or "
            "LIFETIME_S seconds (default: no limit); --workers default %u; limits from "
            "TERN_SERVER_* (see bench/server.h)\n",
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

/* One limit from the environment: strict decimal, or exit 2. */
static uint64_t env_limit(const char *name, const char *var, uint64_t def, uint64_t unit)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return def * unit;
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || errno || *end || x > UINT64_MAX / unit) {
        fprintf(stderr, "error: %s: bad %s=%.32s (want a decimal number)\n", name, var,
                v);
        exit(2);
    }
    return (uint64_t)x * unit;
}

static void read_limits(const char *name)
{
    limits.header_timeout_ns =
        env_limit(name, "TERN_SERVER_HEADER_TIMEOUT_MS", 60000, MS);
    limits.idle_timeout_ns = env_limit(name, "TERN_SERVER_IDLE_TIMEOUT_MS", 75000, MS);
    limits.write_timeout_ns = env_limit(name, "TERN_SERVER_WRITE_TIMEOUT_MS", 60000, MS);
    limits.drain_timeout_ns = env_limit(name, "TERN_SERVER_DRAIN_TIMEOUT_MS", 5000, MS);
    limits.body_max = env_limit(name, "TERN_SERVER_BODY_MAX", 1048576, 1);
}

const server_limits *server_get_limits(void)
{
    return &limits;
}

uint64_t server_deadline(uint64_t ns)
{
    if (!ns)
        return 0;
    uint64_t now = tern_now();
    return ns > UINT64_MAX - now ? 0 : now + ns;
}

int server_draining(void)
{
    return atomic_load_explicit(&the_server->draining, memory_order_relaxed);
}

/* Idle, then a look at draining; the drain sets draining, then cuts what
 * it finds idle (seq_cst both ways): either this sees the drain or the
 * drain sees this idle, never neither. */
ssize_t server_stream_idle(server_conn *c, tern_stream *s, const void **data)
{
    int busy = CONN_BUSY;
    if (!atomic_compare_exchange_strong(&c->state, &busy, CONN_IDLE) ||
        atomic_load(&the_server->draining))
        return -ECANCELED; /* already cut, or the drain has begun */
    ssize_t n = tern_stream_peek(s, data, 1, server_deadline(limits.idle_timeout_ns));
    int idle = CONN_IDLE;
    /* bytes that came as the drain cut the connection start no request */
    if (!atomic_compare_exchange_strong(&c->state, &idle, CONN_BUSY))
        return -ECANCELED;
    return n;
}

int server_flush(tern_stream *s)
{
    return tern_stream_flush(s, server_deadline(limits.write_timeout_ns));
}

static void conn_put(server_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        free(c);
}

/* The end of a connection, whether its task ran or not: out of the
 * registry, fd closed. */
static void conn_finish(server_conn *c)
{
    server *s = the_server;
    tern_close(c->fd);
    pthread_mutex_lock(&s->lock);
    c->done = 1;
    int linked = c->linked;
    if (linked) {
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->linked = 0;
    }
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_sub(&s->live, 1);
    if (linked) {
        tern_task_release(c->task);
        conn_put(c); /* the registry's */
    }
    conn_put(c); /* the task's */
}

static void *conn_task(void *arg)
{
    server_conn *c = arg;
    the_server->conn(c, c->fd);
    conn_finish(c);
    return NULL;
}

/* Cancels the connections waiting idle (all of them when all is set). */
static void cut_conns(server *s, int all)
{
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->draining, 1);
    for (server_conn *c = s->conns; c; c = c->next) {
        int idle = CONN_IDLE;
        if (atomic_compare_exchange_strong(&c->state, &idle, CONN_CUT) ||
            (all && atomic_exchange(&c->state, CONN_CUT) != CONN_CUT))
            tern_task_cancel(c->task);
    }
    pthread_mutex_unlock(&s->lock);
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

/* SIGINT and SIGTERM are blocked in the main thread before the runtime
 * starts threads, so every thread inherits the block and tern's signal
 * thread alone takes them (tern_signal): none of the server's threads is
 * interrupted, and a ThreadSanitizer build, which holds a handler back in
 * a thread parked in a raw futex (the main thread, in tern_block_on),
 * cannot hold the stop back. */
static int block_stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* SIGINT or SIGTERM begins the stop. */
static void *stop_on_signal(void *arg)
{
    int sig = tern_signal_wait(arg, 0);
    if (sig == -ECANCELED)
        return NULL; /* the stop came another way */
    if (sig < 0)
        fprintf(stderr, "error: waiting for SIGINT or SIGTERM: %s\n", tern_strerror(sig));
    /* an error stops the server rather than leave it deaf to the signals */
    if (tern_token_cancel(stop) == 0)
        stop_reason = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "error";
    return NULL;
}

static void drop_conn(void *arg)
{
    conn_finish(arg);
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
            if (tern_token_cancel(stop) == 0)
                stop_reason = "accept failed";
            break;
        }
        atomic_fetch_add_explicit(&s->accepted, 1, memory_order_relaxed);
        /* one small message per round trip: never wait for Nagle */
        tern_sock_nodelay(fd, 1);
        server_conn *c = calloc(1, sizeof *c);
        if (!c) {
            tern_close(fd);
            continue;
        }
        c->fd = fd;
        atomic_init(&c->refs, 2);
        atomic_init(&c->state, CONN_BUSY);
        atomic_fetch_add(&s->live, 1);
        /* the connection task owns c and fd: if it never runs (no stack
         * under memory pressure, cancelled at shutdown), drop_conn closes
         * fd; the second reference is the registry's, which the drain
         * walks to cancel idle connections */
        tern_task *t;
        if (tern_spawn_owned(conn_task, c, drop_conn, &t) < 0) {
            atomic_fetch_sub(&s->live, 1);
            tern_close(fd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        int done = c->done;
        if (!done) {
            c->task = t;
            c->linked = 1;
            c->next = s->conns;
            if (c->next)
                c->next->prev = c;
            s->conns = c;
            if (atomic_load(&s->draining)) { /* a stop began meanwhile: it is to go too */
                atomic_store(&c->state, CONN_CUT);
                tern_task_cancel(t);
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (done) {
            tern_task_release(t);
            conn_put(c);
        }
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
    int stop_sigs[] = {SIGINT, SIGTERM};
    tern_signal *sigs = NULL;
    tern_task *watcher = NULL;
    rc = tern_signal_new(stop_sigs, 2, NULL, &sigs);
    if (rc == 0)
        rc = tern_spawn(stop_on_signal, sigs, &watcher);
    if (rc < 0) {
        fprintf(stderr, "error: %s: stop signals: %s\n", s->name, tern_strerror(rc));
        s->failed = 1;
        tern_token_cancel(stop);
    }
    uint64_t deadline = s->lifetime_s ? tern_now() + s->lifetime_s * 1000000000ull : 0;
    rc = tern_token_wait(stop, deadline);
    if (rc < 0 && rc != -ETIMEDOUT) {
        fprintf(stderr, "error: %s: waiting for a stop: %s\n", s->name,
                tern_strerror(rc));
        s->failed = 1;
    }
    tern_token_cancel(stop); /* the lifetime's end: the reason stays */
    if (watcher) {
        tern_task_cancel(watcher);
        tern_join(watcher, NULL);
    }
    tern_signal_free(sigs);
    /* The drain: no new connection (the acceptor closes the listener, so
     * connects are refused), idle ones closed, the others given until the
     * drain deadline to finish the request they are in. */
    tern_task_cancel(acceptor);
    tern_join(acceptor, NULL); /* -ECANCELED: it met the cancel, as it should */
    cut_conns(s, 0);
    uint64_t drain_end = server_deadline(limits.drain_timeout_ns);
    while (atomic_load(&s->live) > 0 && (!drain_end || tern_now() < drain_end))
        tern_sleep(DRAIN_POLL_NS);
    uint64_t left = atomic_load(&s->live);
    cut_conns(s, 1);
    /* stop_reason's writers (the watcher, the acceptor) were joined above */
    printf(
        "INFO %s stopped (%s) after %llu connections, %llu cut at the drain deadline\n",
        s->name, stop_reason, (unsigned long long)atomic_load(&s->accepted),
        (unsigned long long)left);
    fflush(stdout);
    return NULL;
}

int server_main(int argc, char **argv, const char *name, server_conn_fn conn)
{
    server s = {.name = name, .conn = conn};
    parse_args(argc, argv, &s);
    read_limits(name);
    pthread_mutex_init(&s.lock, NULL);
    the_server = &s;

    int rc = block_stop_signals();
    if (rc == 0)
        rc = tern_token_new(&stop);
    if (rc < 0)
        bench_die("stop", rc);
    tern_runtime *rt = bench_runtime_new(s.workers);
    rc = tern_block_on(rt, serve, &s, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    /* connection tasks still waiting are woken with -ECANCELED and close */
    bench_runtime_free(rt);
    tern_token_release(stop);
    return s.failed;
}
