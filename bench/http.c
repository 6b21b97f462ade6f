/*
 * http: a minimal HTTP/1.1 server to load with wrk (bench/run.sh's `http`).
 * Every request gets "Hello, World!" as text/plain with a Content-Length
 * (no body for HEAD), whatever its method and target.
 *
 *  - Keep-alive. Pipelined requests are parsed from one buffer and answered
 *    in order, the answers to one read going out in one write.
 *  - "Connection: close" closes after the answer; HTTP/1.0 closes unless
 *    it asks for keep-alive.
 *  - A malformed request line or header (bare LF, obs-fold, bad token,
 *    control characters, a bad or conflicting Content-Length, no Host in
 *    HTTP/1.1) gets 400 and a close; Transfer-Encoding is not supported and
 *    gets 400 too. A head (request line + headers) over 8 KiB gets 431 and
 *    a close.
 *  - A Content-Length body is read and thrown away.
 *
 * Usage: http [--workers N] PORT [LIFETIME_S]; stops on SIGINT or SIGTERM.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "server.h"

#define HEAD_MAX 8192  /* request line + headers + blank line */
#define OUT_MAX 16384  /* answers gathered before one write */
#define ANSWER_MAX 256 /* one answer, headers and body */
#define LINGER_NS (500 * 1000000ull)
#define LINGER_BYTES 65536

#define PARSE_MORE 0 /* the head is not all in yet */
#define PARSE_BAD (-1)

static const char BODY[] = "Hello, World!";

typedef struct request {
    int minor;      /* HTTP/1.<minor> */
    int head_only;  /* HEAD: the answer has no body */
    int conn_close; /* Connection: close */
    int conn_keep;  /* Connection: keep-alive */
    int hosts;      /* Host fields seen */
    int has_length;
    uint64_t length; /* Content-Length */
    int transfer_encoding;
} request;

typedef struct conn {
    int fd;
    size_t len, off; /* in[off..len) not parsed yet */
    size_t outlen;
    uint64_t discard; /* body bytes of the last request still to skip */
    char in[HEAD_MAX];
    char out[OUT_MAX];
} conn;

/* RFC 9110 token characters. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int name_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

/* METHOD SP TARGET SP HTTP/1.x, nothing else. */
static int parse_request_line(const char *p, size_t n, request *rq)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ' ')
        return -1;
    rq->head_only = i == 4 && memcmp(p, "HEAD", 4) == 0;
    size_t target = ++i;
    while (i < n && (unsigned char)p[i] > ' ' && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == target || i == n || p[i] != ' ')
        return -1;
    i++;
    if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0 ||
        (p[i + 7] != '0' && p[i + 7] != '1'))
        return -1;
    rq->minor = p[i + 7] - '0';
    return 0;
}

static int parse_length(const char *v, size_t n, request *rq)
{
    uint64_t x = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    /* two lengths that disagree make the message boundary ambiguous */
    if (rq->has_length && rq->length != x)
        return -1;
    rq->has_length = 1;
    rq->length = x;
    return 0;
}

/* Connection is a comma-separated list of options. */
static void parse_connection(const char *v, size_t n, request *rq)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i++;
        while (start < end && is_ows(v[start]))
            start++;
        while (end > start && is_ows(v[end - 1]))
            end--;
        if (name_is(v + start, end - start, "close"))
            rq->conn_close = 1;
        else if (name_is(v + start, end - start, "keep-alive"))
            rq->conn_keep = 1;
    }
}

/* NAME ":" OWS VALUE OWS. A line that starts with white space (obs-fold)
 * or has space before the colon has no token before ':' and is refused. */
static int parse_header(const char *p, size_t n, request *rq)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ':')
        return -1;
    size_t name_len = i++;
    while (i < n && is_ows(p[i]))
        i++;
    size_t end = n;
    while (end > i && is_ows(p[end - 1]))
        end--;
    for (size_t k = i; k < end; k++) {
        unsigned char c = (unsigned char)p[k];
        if ((c < ' ' && c != '\t') || c == 0x7f)
            return -1;
    }
    const char *v = p + i;
    size_t vlen = end - i;
    if (name_is(p, name_len, "content-length"))
        return parse_length(v, vlen, rq);
    if (name_is(p, name_len, "transfer-encoding"))
        rq->transfer_encoding = 1;
    else if (name_is(p, name_len, "connection"))
        parse_connection(v, vlen, rq);
    else if (name_is(p, name_len, "host"))
        rq->hosts++;
    return 0;
}

/* The rules that need the whole head. */
static int check_head(const request *rq)
{
    if (rq->transfer_encoding)
        return -1; /* chunked bodies are not supported */
    if (rq->hosts > 1 || (rq->minor == 1 && rq->hosts == 0))
        return -1; /* RFC 9112 3.2 */
    return 0;
}

/* Parses the head of the request at p[0..n). Returns its length (the blank
 * line included) once it is all in, PARSE_MORE before, PARSE_BAD when it is
 * malformed. Each complete line is checked, so garbage is refused at once
 * rather than after 8 KiB. */
static long parse_head(const char *p, size_t n, request *rq)
{
    size_t pos = 0;
    int lines = 0;
    memset(rq, 0, sizeof *rq);
    for (;;) {
        const char *nl = memchr(p + pos, '\n', n - pos);
        if (!nl)
            return PARSE_MORE;
        size_t end = (size_t)(nl - p);
        if (end == pos || p[end - 1] != '\r')
            return PARSE_BAD; /* a bare LF */
        const char *line = p + pos;
        size_t len = end - 1 - pos;
        pos = end + 1;
        if (len == 0 && lines == 0)
            continue; /* RFC 9112 2.2: empty lines before a request are ignored */
        if (len == 0)
            return check_head(rq) < 0 ? PARSE_BAD : (long)pos;
        int rc = lines++ == 0 ? parse_request_line(line, len, rq)
                              : parse_header(line, len, rq);
        if (rc < 0)
            return PARSE_BAD;
    }
}

/* The Date field, formatted once a second per thread. noinline: a task may
 * move to another worker between two calls, so the address of this thread's
 * cache must be computed afresh in each call, never kept across a suspension
 * in the caller. */
__attribute__((noinline)) static const char *http_date(void)
{
    static _Thread_local time_t cached_at = -1;
    static _Thread_local char cached[40];
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    return cached;
}

/* Appends one answer to c->out (which has ANSWER_MAX bytes free). */
static void answer(conn *c, int status, int head_only, int close, int say_keep_alive)
{
    const char *reason = status == 200   ? "OK"
                         : status == 400 ? "Bad Request"
                                         : "Request Header Fields Too Large";
    int body = status == 200 && !head_only;
    int n = snprintf(c->out + c->outlen, ANSWER_MAX,
                     "HTTP/1.1 %d %s\r\nServer: tern\r\nDate: %s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                     status, reason, http_date(), status == 200 ? sizeof BODY - 1 : 0,
                     close            ? "Connection: close\r\n"
                     : say_keep_alive ? "Connection: keep-alive\r\n"
                                      : "",
                     body ? BODY : "");
    c->outlen += (size_t)n;
}

static int flush(conn *c)
{
    ssize_t rc = c->outlen ? tern_write_all(c->fd, c->out, c->outlen, NULL, 0) : 0;
    c->outlen = 0;
    return rc < 0 ? -1 : 0;
}

/* Answers every complete request in c->in, in order. Returns 1 when the
 * connection is to be closed after the answers, 0 to read on, -1 when a
 * write failed. */
static int answer_all(conn *c)
{
    while (c->off < c->len) {
        if (c->discard) {
            size_t take = c->len - c->off;
            if (take > c->discard)
                take = (size_t)c->discard;
            c->off += take;
            c->discard -= take;
            continue;
        }
        request rq;
        long head = parse_head(c->in + c->off, c->len - c->off, &rq);
        if (head == PARSE_MORE)
            return 0;
        if (head == PARSE_BAD) {
            answer(c, 400, 0, 1, 0);
            return 1;
        }
        c->off += (size_t)head;
        c->discard = rq.length;
        int keep = !rq.conn_close && (rq.minor == 1 || rq.conn_keep);
        answer(c, 200, rq.head_only, !keep, keep && rq.minor == 0);
        if (!keep)
            return 1;
        if (c->outlen > OUT_MAX - ANSWER_MAX && flush(c) < 0)
            return -1;
    }
    return 0;
}

/* Closing right after the last answer while the client still sends would
 * make the kernel reset the connection, and the reset can destroy the answer
 * before the client reads it. So shut down our side and read what comes,
 * for a bounded time and size, before closing. */
static void linger(conn *c)
{
    if (tern_shutdown(c->fd, SHUT_WR) < 0)
        return;
    uint64_t deadline = tern_now() + LINGER_NS;
    size_t total = 0;
    ssize_t n;
    while (total < LINGER_BYTES &&
           (n = tern_recv(c->fd, c->in, sizeof c->in, 0, deadline)) > 0)
        total += (size_t)n;
}

static void serve_conn(conn *c)
{
    for (;;) {
        int rc = answer_all(c);
        if (rc < 0 || flush(c) < 0)
            return;
        if (rc == 1) {
            linger(c);
            return;
        }
        memmove(c->in, c->in + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
        if (c->len == sizeof c->in) { /* a head that does not fit */
            answer(c, 431, 0, 1, 0);
            if (flush(c) == 0)
                linger(c);
            return;
        }
        /* 0: the client closed; < 0: a reset, or -ECANCELED at shutdown */
        ssize_t n = tern_recv(c->fd, c->in + c->len, sizeof c->in - c->len, 0, 0);
        if (n <= 0)
            return;
        c->len += (size_t)n;
    }
}

static void *http_conn(void *arg)
{
    conn c; /* 24 KiB of the fiber's stack, which is committed lazily */
    c.fd = (int)(intptr_t)arg;
    c.len = c.off = c.outlen = 0;
    c.discard = 0;
    serve_conn(&c);
    tern_close(c.fd);
    return NULL;
}

int main(int argc, char **argv)
{
    return server_main(argc, argv, "http", http_conn);
}
