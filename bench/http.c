/*
 * http: a minimal HTTP/1.1 server to load with wrk (bench/run.sh's `http`),
 * and an example of what a server must do with clients that are slow,
 * stuck or hostile. Every request gets "Hello, World!" as text/plain with a
 * Content-Length (no body for HEAD), whatever its method and target.
 *
 *  - Keep-alive. Pipelined requests are parsed from one buffer and answered
 *    in order, the answers to one read going out in one write.
 *  - "Connection: close" closes after the answer; HTTP/1.0 closes unless
 *    it asks for keep-alive.
 *  - A malformed request line or header (bare LF, obs-fold, bad token,
 *    control characters, a bad, overflowing or conflicting Content-Length,
 *    no Host in HTTP/1.1) gets 400 and a close. A head (request line +
 *    headers) over 8 KiB gets 431 and a close.
 *  - Bodies are read and thrown away: a Content-Length body, or a chunked
 *    one (Transfer-Encoding: chunked), decoded: chunk sizes, extensions and
 *    trailer fields checked, so that the next request on the connection
 *    starts where it should. Decoding rather than a 501 because curl and
 *    most HTTP/1.1 clients send an upload of unknown size chunked. Another
 *    transfer coding gets 501, chunked not last (or twice), Transfer-Encoding
 *    with Content-Length or in HTTP/1.0 gets 400 (RFC 9112 6.1, 6.3); each
 *    closes. A body over TERN_SERVER_BODY_MAX (1 MiB) gets 413 and a close.
 *  - "Expect: 100-continue" on a request with a body, none of which has
 *    come yet, gets "HTTP/1.1 100 Continue" before the body is read, then
 *    the answer; a request whose body is refused (413) is answered at once
 *    and closed, and any other expectation gets 417 and a close.
 *  - Timeouts (server.h): a head not complete within
 *    TERN_SERVER_HEADER_TIMEOUT_MS (60 s) of its first byte gets 408 and a
 *    close, and so does a body whose next bytes take that long; no byte of a
 *    next request within TERN_SERVER_IDLE_TIMEOUT_MS (75 s) closes; answers
 *    the client does not take within TERN_SERVER_WRITE_TIMEOUT_MS (60 s)
 *    close.
 *  - On SIGINT or SIGTERM: the listener closes, idle connections close, a
 *    request in flight is answered (with "Connection: close") if it
 *    completes within TERN_SERVER_DRAIN_TIMEOUT_MS (5 s).
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

/* Where a connection is in its current request. */
#define ST_HEAD 0       /* reading a head */
#define ST_BODY 1       /* c->discard bytes of a Content-Length body to skip */
#define ST_CHUNK_SIZE 2 /* a chunk-size line */
#define ST_CHUNK_DATA 3 /* c->discard bytes of chunk data to skip */
#define ST_CHUNK_CRLF 4 /* the CRLF after chunk data */
#define ST_TRAILER 5    /* trailer fields, up to an empty line */

/* Transfer-Encoding as seen in the head. */
#define TE_NONE 0
#define TE_CHUNKED 1 /* chunked, once, last */
#define TE_BAD 2     /* chunked not last, or twice: 400 */
#define TE_UNKNOWN 3 /* a coding this server does not decode: 501 */

static const char BODY[] = "Hello, World!";

typedef struct request {
    int minor;      /* HTTP/1.<minor> */
    int head_only;  /* HEAD: the answer has no body */
    int conn_close; /* Connection: close */
    int conn_keep;  /* Connection: keep-alive */
    int hosts;      /* Host fields seen */
    int has_length;
    uint64_t length; /* Content-Length */
    int te;          /* TE_* */
    int te_chunked;  /* chunked seen (for TE_BAD) */
    int expect;      /* 1: 100-continue, 2: something else */
} request;

typedef struct conn {
    server_conn *sc;
    int fd;
    tern_stream *s;     /* reads cut from its buffer, answers gathered in it */
    const char *in;     /* the bytes s holds (a peek), valid until the next read */
    size_t len, off;    /* in[off..len) not parsed yet */
    int werr;           /* an answer could not be written: close */
    int state;          /* ST_* */
    uint64_t discard;   /* body bytes still to skip */
    uint64_t body_seen; /* chunked: data bytes so far */
    uint64_t head_end;  /* the header deadline of the head being read (0: none yet) */
    int head_only, keep, say_keep; /* the answer due after the body */
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

/* The next element of a comma-separated field value v[*i..n), its
 * optional white space trimmed (it may be empty): 1 with *item and *len
 * set, 0 at the end. */
static int list_next(const char *v, size_t n, size_t *i, const char **item, size_t *len)
{
    if (*i >= n)
        return 0;
    size_t start = *i;
    while (*i < n && v[*i] != ',')
        (*i)++;
    size_t end = (*i)++;
    while (start < end && is_ows(v[start]))
        start++;
    while (end > start && is_ows(v[end - 1]))
        end--;
    *item = v + start;
    *len = end - start;
    return 1;
}

/* Connection is a comma-separated list of options. */
static void parse_connection(const char *v, size_t n, request *rq)
{
    const char *o;
    size_t len, i = 0;
    while (list_next(v, n, &i, &o, &len)) {
        if (name_is(o, len, "close"))
            rq->conn_close = 1;
        else if (name_is(o, len, "keep-alive"))
            rq->conn_keep = 1;
    }
}

/* Transfer-Encoding is a comma-separated list of codings, the last applied
 * last; several fields make one list. */
static void parse_te(const char *v, size_t n, request *rq)
{
    const char *c;
    size_t len, i = 0;
    while (list_next(v, n, &i, &c, &len)) {
        if (len == 0 || rq->te == TE_BAD)
            continue; /* an empty list element, or already refused */
        if (name_is(c, len, "chunked")) {
            rq->te = rq->te_chunked ? TE_BAD : TE_CHUNKED;
            rq->te_chunked = 1;
        } else if (rq->te_chunked) {
            rq->te = TE_BAD; /* a coding after chunked */
        } else {
            rq->te = TE_UNKNOWN;
        }
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
        parse_te(v, vlen, rq);
    else if (name_is(p, name_len, "expect"))
        rq->expect = name_is(v, vlen, "100-continue") ? 1 : 2;
    else if (name_is(p, name_len, "connection"))
        parse_connection(v, vlen, rq);
    else if (name_is(p, name_len, "host"))
        rq->hosts++;
    return 0;
}

/* The rules that need the whole head. */
static int check_head(const request *rq)
{
    if (rq->hosts > 1 || (rq->minor == 1 && rq->hosts == 0))
        return -1; /* RFC 9112 3.2 */
    return 0;
}

/* What the head says of the body: 0 when it can be read, else the status
 * to answer before closing. */
static int body_status(const request *rq)
{
    if (rq->te != TE_NONE && (rq->has_length || rq->minor == 0))
        return 400; /* RFC 9112 6.1, 6.3: framing a smuggler could use */
    if (rq->te == TE_BAD)
        return 400; /* RFC 9112 6.3: chunked is not the final coding */
    if (rq->te == TE_UNKNOWN)
        return 501;
    if (rq->expect == 2)
        return 417;
    if (rq->has_length && rq->length > server_get_limits()->body_max)
        return 413;
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

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Not Implemented";
    }
}

/* Gathers bytes of an answer in the stream, which writes them out as its
 * buffer (OUT_MAX) fills; a failed write marks the connection. */
static void put(conn *c, const char *p, size_t n)
{
    const server_limits *lim = server_get_limits();
    if (!c->werr &&
        tern_stream_write(c->s, p, n, NULL, server_deadline(lim->write_timeout_ns)) < 0)
        c->werr = 1;
}

/* Appends one answer to the stream. */
static void answer(conn *c, int status, int head_only, int close, int say_keep_alive)
{
    const char *reason = reason_of(status);
    int body = status == 200 && !head_only;
    char out[ANSWER_MAX];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nServer: tern\r\nDate: %s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                     status, reason, http_date(), status == 200 ? sizeof BODY - 1 : 0,
                     close            ? "Connection: close\r\n"
                     : say_keep_alive ? "Connection: keep-alive\r\n"
                                      : "",
                     body ? BODY : "");
    put(c, out, (size_t)n);
}

/* Sends what the stream gathered; -1 when a write failed or timed out. */
static int flush(conn *c)
{
    return c->werr || server_flush(c->s) < 0 ? -1 : 0;
}

/* The answer to the request whose body was just read: 1 to close after it. */
static int finish_request(conn *c)
{
    int keep = c->keep && !server_draining();
    answer(c, 200, c->head_only, !keep, keep && c->say_keep);
    c->state = ST_HEAD;
    return !keep;
}

/* Takes up to c->discard body bytes from the buffer. */
static void skip_body(conn *c)
{
    size_t take = c->len - c->off;
    if (take > c->discard)
        take = (size_t)c->discard;
    c->off += take;
    c->discard -= take;
}

/* The next CRLF-terminated line at in[off..len): its length (CRLF not
 * counted) with *next past it, -1 when it is not all in, -2 for a bare LF. */
static long take_line(conn *c, size_t *next)
{
    const char *p = c->in + c->off;
    const char *nl = memchr(p, '\n', c->len - c->off);
    if (!nl)
        return -1;
    size_t end = (size_t)(nl - p);
    if (end == 0 || p[end - 1] != '\r')
        return -2;
    *next = c->off + end + 1;
    return (long)end - 1;
}

/* chunk-size [ chunk-ext ]: hex digits, then nothing or ";" extensions
 * (visible characters and white space). Returns 0 with *size, 400 or 413. */
static int parse_chunk_size(const char *p, size_t n, uint64_t *size)
{
    uint64_t x = 0;
    size_t i = 0;
    for (; i < n; i++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d < 0)
            break;
        if (x > UINT64_MAX >> 4)
            return 413; /* no cap could allow it */
        x = x << 4 | (uint64_t)d;
    }
    if (i == 0)
        return 400;
    while (i < n && is_ows(p[i]))
        i++;
    if (i < n && p[i] != ';')
        return 400;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch < ' ' && ch != '\t') || ch == 0x7f)
            return 400;
    }
    *size = x;
    return 0;
}

/* Answers every complete request in in[off..len), in order, reading bodies
 * through. Returns 1 when the connection is to be closed after the
 * answers, 0 to read on, -1 when a write failed. */
static int answer_all(conn *c)
{
    for (;;) {
        size_t next;
        long n;
        int status;
        switch (c->state) {
        case ST_BODY:
        case ST_CHUNK_DATA:
            skip_body(c);
            if (c->discard)
                return 0;
            if (c->state == ST_CHUNK_DATA)
                c->state = ST_CHUNK_CRLF;
            else if (finish_request(c))
                return 1;
            break;
        case ST_CHUNK_CRLF:
            if (c->len - c->off < 2)
                return 0;
            if (memcmp(c->in + c->off, "\r\n", 2) != 0)
                goto bad;
            c->off += 2;
            c->state = ST_CHUNK_SIZE;
            break;
        case ST_CHUNK_SIZE:
            n = take_line(c, &next);
            if (n == -1)
                return 0;
            uint64_t size = 0;
            status = n < 0 ? 400 : parse_chunk_size(c->in + c->off, (size_t)n, &size);
            if (status == 0 && size > server_get_limits()->body_max - c->body_seen)
                status = 413;
            if (status) {
                answer(c, status, 0, 1, 0);
                return 1;
            }
            c->off = next;
            c->body_seen += size;
            c->discard = size;
            c->state = size ? ST_CHUNK_DATA : ST_TRAILER;
            break;
        case ST_TRAILER:
            n = take_line(c, &next);
            if (n == -1)
                return 0;
            if (n == -2)
                goto bad;
            if (n > 0) {
                request scratch;
                memset(&scratch, 0, sizeof scratch);
                if (parse_header(c->in + c->off, (size_t)n, &scratch) < 0)
                    goto bad;
                c->off = next;
                break;
            }
            c->off = next;
            if (finish_request(c))
                return 1;
            break;
        default: { /* ST_HEAD */
            if (c->off == c->len)
                return 0;
            if (!c->head_end) /* the first byte of a head starts its clock */
                c->head_end = server_deadline(server_get_limits()->header_timeout_ns);
            request rq;
            long head = parse_head(c->in + c->off, c->len - c->off, &rq);
            if (head == PARSE_MORE)
                return 0;
            if (head == PARSE_BAD)
                goto bad;
            c->off += (size_t)head;
            c->head_end = 0;
            c->head_only = rq.head_only;
            c->keep = !rq.conn_close && (rq.minor == 1 || rq.conn_keep);
            c->say_keep = c->keep && rq.minor == 0;
            status = body_status(&rq);
            if (status) {
                answer(c, status, 0, 1, 0);
                return 1;
            }
            int body = rq.te == TE_CHUNKED || rq.length > 0;
            if (!body) {
                if (finish_request(c))
                    return 1;
            } else {
                c->state = rq.te == TE_CHUNKED ? ST_CHUNK_SIZE : ST_BODY;
                c->discard = rq.te == TE_CHUNKED ? 0 : rq.length;
                c->body_seen = 0;
                /* RFC 9110 10.1.1: the client waits for this before it
                 * sends the body; pointless once some of it is here */
                if (rq.expect == 1 && rq.minor == 1 && c->off == c->len) {
                    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                    put(c, cont, sizeof cont - 1);
                }
            }
            break;
        }
        }
        if (c->werr)
            return -1;
    }
bad:
    answer(c, 400, 0, 1, 0);
    return 1;
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
    const void *d;
    tern_stream_consume(c->s, tern_stream_buffered(c->s));
    while (total < LINGER_BYTES && (n = tern_stream_peek(c->s, &d, 1, deadline)) > 0) {
        total += (size_t)n;
        tern_stream_consume(c->s, (size_t)n);
    }
}

/* Answers status (408, 431, a bad chunk line) and closes. */
static void refuse(conn *c, int status)
{
    answer(c, status, 0, 1, 0);
    if (flush(c) == 0)
        linger(c);
}

static void serve_conn(conn *c)
{
    const server_limits *lim = server_get_limits();
    for (;;) {
        int rc = answer_all(c);
        if (rc < 0 || flush(c) < 0)
            return;
        if (rc == 1) {
            linger(c);
            return;
        }
        tern_stream_consume(c->s, c->off);
        c->len -= c->off;
        c->off = 0;
        if (c->len == HEAD_MAX) { /* a head, or a chunk line, that does not fit */
            refuse(c, c->state == ST_HEAD ? 431 : 400);
            return;
        }
        ssize_t n;
        const void *d = NULL;
        if (c->state == ST_HEAD && c->len == 0) {
            /* between requests: the idle timeout, and the drain closes */
            n = server_stream_idle(c->sc, c->s, &d);
        } else {
            uint64_t deadline = c->state == ST_HEAD
                                    ? c->head_end
                                    : server_deadline(lim->header_timeout_ns);
            n = tern_stream_peek(c->s, &d, c->len + 1, deadline);
            if (n == -ETIMEDOUT) { /* slowloris, or a body that stopped */
                refuse(c, 408);
                return;
            }
        }
        /* no more bytes: the client closed; < 0: a reset, the idle
         * timeout, the drain, or -ECANCELED at shutdown */
        if (n <= (ssize_t)c->len)
            return;
        c->in = d;
        c->len = (size_t)n;
    }
}

static void http_conn(server_conn *sc, int fd)
{
    conn c;
    /* the read buffer holds the longest head, the write buffer the
     * answers to one read's pipelined requests */
    tern_stream_config cfg = {.read_buffer = HEAD_MAX, .write_buffer = OUT_MAX};
    if (tern_stream_new(fd, &cfg, &c.s) < 0)
        return;
    c.sc = sc;
    c.fd = fd;
    c.in = NULL;
    c.len = c.off = 0;
    c.werr = 0;
    c.state = ST_HEAD;
    c.discard = c.body_seen = c.head_end = 0;
    c.head_only = c.keep = c.say_keep = 0;
    serve_conn(&c);
    tern_stream_free(c.s); /* what a failed write left is dropped */
}

int main(int argc, char **argv)
{
    return server_main(argc, argv, "http", http_conn);
}
