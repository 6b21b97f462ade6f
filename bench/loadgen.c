/*
 * loadgen: the load generator of bench-contract.md's tcp_echo workload.
 *
 *   loadgen --port P [--conns 50] [--secs 5] [--runtime tern]
 *           [--warmup-ms 500] [--size 64]
 *
 * Opens C connections to 127.0.0.1:P (retrying for 10 s while the server
 * starts). On each one: send a SIZE-byte message, wait for the whole echo,
 * check it byte for byte, send the next; one request in flight per
 * connection. After the warm-up, requests that complete within the next S
 * seconds are counted and their latencies (send to last echo byte) go into a
 * 1 µs histogram. Then no new request is sent and the ones in flight must
 * still come back within a grace period, so a lost echo cannot hide at the
 * end of the run. Prints
 *
 *   RESULT workload=tcp_echo runtime=<name> conns=<C> secs=<S> req_per_s=<..>
 *          p50_us=<..> p99_us=<..> requests=<count> errors=0
 *
 * and exits 0; any short, corrupted or missing echo, or a connection the
 * server closes, prints the reason on stderr and exits 1 with no RESULT line.
 * Bad arguments: usage, exit 2.
 *
 * Plain C, one thread, epoll: it does not use tern, so it measures tern and
 * the other runtimes with the same yardstick. Loopback only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 10000
#define MAX_SECS 3600
#define MAX_SIZE 65536
#define CONNECT_TRY_NS (10 * 1000000000ull) /* the server may still be starting */
#define DRAIN_NS (2 * 1000000000ull)        /* in-flight echoes still owed at the end */
#define HIST_US 1000000                     /* 1 µs buckets up to 1 s, then one more */

typedef struct conn {
    int fd;
    uint32_t id;
    uint64_t seq;       /* requests started on this connection */
    size_t sent, got;   /* progress of the request in flight */
    uint64_t t_sent;    /* when it started */
    int busy;           /* a request is in flight */
    int want_out;       /* EPOLLOUT registered (a short send) */
    unsigned char *msg; /* what was sent, i.e. the echo we expect */
    unsigned char *rx;
} conn;

typedef struct opts {
    unsigned port, conns, secs, warmup_ms, size;
    const char *runtime;
} opts;

static uint32_t *hist; /* HIST_US + 1 buckets, the last one for >= 1 s */
static uint64_t hist_max_us;

static void usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "loadgen: %s\n", msg);
    fprintf(stderr,
            "usage: loadgen --port P [--conns C] [--secs S] [--runtime NAME] "
            "[--warmup-ms MS] [--size BYTES]\n"
            "  defaults: --conns 50 --secs 5 --runtime tern --warmup-ms 500 "
            "--size 64; bounds: conns 1..%d, secs 1..%d, size 1..%d\n",
            MAX_CONNS, MAX_SECS, MAX_SIZE);
    exit(2);
}

/* Prints "loadgen: error: <fmt ...>[: strerror(err)]" and exits 1. */
static void die(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: error: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (err)
        fprintf(stderr, ": %s", strerror(err));
    fprintf(stderr, "\n");
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned parse_uint(const char *flag, const char *s, unsigned lo, unsigned hi)
{
    char *end = NULL;
    char msg[128];
    errno = 0;
    unsigned long v = s ? strtoul(s, &end, 10) : 0;
    if (!s || *s < '0' || *s > '9' || errno || *end || v < lo || v > hi) {
        snprintf(msg, sizeof msg, "bad %s %.32s (want %u..%u)", flag, s ? s : "(none)",
                 lo, hi);
        usage(msg);
    }
    return (unsigned)v;
}

static void parse_opts(int argc, char **argv, opts *o)
{
    *o = (opts){.conns = 50, .secs = 5, .warmup_ms = 500, .size = 64, .runtime = "tern"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            usage(NULL);
        else if (strcmp(a, "--port") == 0)
            o->port = parse_uint(a, v, 1, 65535);
        else if (strcmp(a, "--conns") == 0)
            o->conns = parse_uint(a, v, 1, MAX_CONNS);
        else if (strcmp(a, "--secs") == 0)
            o->secs = parse_uint(a, v, 1, MAX_SECS);
        else if (strcmp(a, "--warmup-ms") == 0)
            o->warmup_ms = parse_uint(a, v, 0, 600000);
        else if (strcmp(a, "--size") == 0)
            o->size = parse_uint(a, v, 1, MAX_SIZE);
        else if (strcmp(a, "--runtime") == 0 && v)
            o->runtime = v;
        else
            usage("unknown argument or missing value");
        i++;
    }
    if (!o->port)
        usage("--port is required");
    /* the name becomes one key=value of the RESULT line */
    if (!*o->runtime || strpbrk(o->runtime, " \t\n="))
        usage("bad --runtime (no spaces or '=')");
}

/* Enough descriptors for the connections, when the hard limit allows. */
static void raise_fd_limit(unsigned conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < conns + 32) {
        rl.rlim_cur = rl.rlim_max < conns + 32 ? rl.rlim_max : conns + 32;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* A blocking connect, retried while the server is not listening yet. */
static int connect_loopback(unsigned port, uint64_t give_up)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die(errno, "socket");
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        int err = errno;
        close(fd);
        if (err != ECONNREFUSED || now_ns() >= give_up)
            die(err, "connect to 127.0.0.1:%u", port);
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000000}, NULL);
    }
}

/* The message for request c->seq: differs per connection and per request, so
 * an echo from the wrong connection or an old request does not match. */
static void fill_message(conn *c, unsigned size)
{
    uint64_t x = ((uint64_t)c->id << 40) ^ c->seq ^ 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < size; i++) {
        if (i % 8 == 0) { /* splitmix64 step */
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            x = z ^ (z >> 31);
        }
        c->msg[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

static void set_out_interest(int ep, conn *c, int want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die(errno, "epoll_ctl on connection %u", c->id);
    c->want_out = want;
}

/* Sends what is left of the request in flight; waits for EPOLLOUT if the
 * socket buffer is full. */
static void push(int ep, conn *c, unsigned size)
{
    while (c->sent < size) {
        ssize_t n = send(c->fd, c->msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0)
            die(errno, "send on connection %u", c->id);
        c->sent += (size_t)n;
    }
    set_out_interest(ep, c, c->sent < size);
}

static void start_request(int ep, conn *c, unsigned size, uint64_t now)
{
    c->seq++;
    fill_message(c, size);
    c->sent = c->got = 0;
    c->busy = 1;
    c->t_sent = now;
    push(ep, c, size);
}

/* Reads echo bytes; returns 1 when the whole echo is in and checked. */
static int pull(conn *c, unsigned size)
{
    if (!c->busy) { /* nothing is owed: any byte or an EOF here is an error */
        unsigned char extra;
        ssize_t n = recv(c->fd, &extra, 1, 0);
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0)
            die(errno, "recv on connection %u", c->id);
        if (n == 0)
            die(0, "connection %u closed by the server", c->id);
        die(0, "bytes on idle connection %u (more echo than was sent)", c->id);
    }
    while (c->got < size) {
        ssize_t n = recv(c->fd, c->rx + c->got, size - c->got, 0);
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0)
            die(errno, "recv on connection %u", c->id);
        if (n == 0)
            die(0, "connection %u closed by the server", c->id);
        c->got += (size_t)n;
    }
    if (memcmp(c->rx, c->msg, size) != 0)
        die(0, "corrupt echo on connection %u (request %llu)", c->id,
            (unsigned long long)c->seq);
    return 1;
}

static void record(uint64_t lat_ns)
{
    uint64_t us = lat_ns / 1000;
    if (us > hist_max_us)
        hist_max_us = us;
    hist[us < HIST_US ? us : HIST_US]++;
}

/* Smallest latency (µs) at or below which a fraction q of the requests lie. */
static uint64_t percentile(uint64_t count, double q)
{
    uint64_t rank = (uint64_t)(q * (double)count + 0.999999);
    uint64_t seen = 0;
    if (rank == 0)
        rank = 1;
    for (uint64_t us = 0; us <= HIST_US; us++) {
        seen += hist[us];
        if (seen >= rank)
            return us < HIST_US ? us : hist_max_us;
    }
    return hist_max_us;
}

int main(int argc, char **argv)
{
    opts o;
    parse_opts(argc, argv, &o);
    raise_fd_limit(o.conns);
    hist = calloc(HIST_US + 1, sizeof *hist);
    conn *cs = calloc(o.conns, sizeof *cs);
    unsigned char *bufs = malloc((size_t)o.conns * o.size * 2);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!hist || !cs || !bufs)
        die(0, "out of memory");
    if (ep < 0)
        die(errno, "epoll_create1");

    uint64_t give_up = now_ns() + CONNECT_TRY_NS;
    for (unsigned i = 0; i < o.conns; i++) {
        conn *c = &cs[i];
        c->id = i;
        c->msg = bufs + (size_t)i * o.size * 2;
        c->rx = c->msg + o.size;
        c->fd = connect_loopback(o.port, give_up);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die(errno, "epoll_ctl on connection %u", i);
    }

    uint64_t t0 = now_ns();
    uint64_t warm_end = t0 + (uint64_t)o.warmup_ms * 1000000ull;
    uint64_t end = warm_end + (uint64_t)o.secs * 1000000000ull;
    uint64_t drain_end = end + DRAIN_NS;
    uint64_t requests = 0, in_flight = 0;
    for (unsigned i = 0; i < o.conns; i++, in_flight++)
        start_request(ep, &cs[i], o.size, t0);

    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= end && in_flight == 0)
            break;
        if (now >= drain_end)
            die(0, "%llu echoes missing at the end of the run",
                (unsigned long long)in_flight);
        uint64_t next = now < warm_end ? warm_end : now < end ? end : drain_end;
        int timeout_ms = (int)((next - now + 999999) / 1000000);
        int n = epoll_wait(ep, evs, 256, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die(errno, "epoll_wait");
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                push(ep, c, o.size);
            if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            if (!pull(c, o.size))
                continue;
            uint64_t t = now_ns();
            if (t >= warm_end && t < end) {
                requests++;
                record(t - c->t_sent);
            }
            c->busy = 0;
            in_flight--;
            if (t < end) { /* after the end only the owed echoes are awaited */
                start_request(ep, c, o.size, t);
                in_flight++;
            }
        }
    }
    if (requests == 0)
        die(0, "no request completed in the measured %u s", o.secs);

    for (unsigned i = 0; i < o.conns; i++)
        close(cs[i].fd);
    close(ep);
    free(bufs);
    free(cs);
    printf("INFO loadgen port=%u conns=%u size=%u warmup_ms=%u max_us=%llu\n", o.port,
           o.conns, o.size, o.warmup_ms, (unsigned long long)hist_max_us);
    printf(
        "RESULT workload=tcp_echo runtime=%s conns=%u secs=%u req_per_s=%.0f p50_us=%llu "
        "p99_us=%llu requests=%llu errors=0\n",
        o.runtime, o.conns, o.secs, (double)requests / o.secs,
        (unsigned long long)percentile(requests, 0.50),
        (unsigned long long)percentile(requests, 0.99), (unsigned long long)requests);
    free(hist);
    return 0;
}
