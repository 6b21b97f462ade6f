/*
 * Buffered streams (tern_io.h): a read buffer that lines and frames are cut
 * from, and a write buffer that leaves with the caller's next large write in
 * one writev. Both are plain byte arrays with a start and a length; the
 * descriptor calls underneath (tern_read, tern_writev) do the waiting, so
 * the stream works alike on both backends.
 *
 * On io_uring a socket's reads come from its multishot receive instead
 * (recv.c): each piece arrives in a provided buffer, the "chunk", which the
 * stream reads from in place and gives back once consumed. The bytes
 * buffered are then rbuf's, followed by the chunk's; only a line or a peek
 * that runs past the end of a chunk copies it into rbuf to join it to the
 * next. Whenever recv.c says to, a read goes to rbuf plainly, as on epoll.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "rt/fault.h"

#define DEFAULT_BUFFER (16u << 10)
/* Pieces per writev: the buffer and 63 of the caller's, 1 KiB of the
 * task's stack (IOV_MAX would take 16). More go out in the next one. */
#define WRITEV_PIECES 64

struct tern_stream {
    int fd;
    /* read side: bytes rbuf[rstart, rstart + rlen), then chunk[0, clen) */
    char *rbuf;
    size_t rcap, rstart, rlen;
    const char *chunk;
    size_t clen;
    tern__rx *rx; /* the multishot receive, from the first read on io_uring */
    int plain;    /* reads are plain for good (epoll, no socket, no rings) */
    /* write side: bytes wbuf[wstart, wstart + wlen) wait to be written */
    char *wbuf;
    size_t wcap, wstart, wlen;
};

int tern_stream_new(int fd, const tern_stream_config *cfg, tern_stream **out)
{
    if (fd < 0 || !out)
        return -EINVAL;
    tern_stream_config c = {0};
    if (cfg) {
        for (size_t i = 0; i < sizeof cfg->reserved / sizeof cfg->reserved[0]; i++)
            if (cfg->reserved[i])
                return -EINVAL;
        c = *cfg;
    }
    size_t rcap = c.read_buffer ? c.read_buffer : DEFAULT_BUFFER;
    size_t wcap = c.write_buffer ? c.write_buffer : DEFAULT_BUFFER;
    if (rcap > SSIZE_MAX || wcap > SSIZE_MAX - rcap - sizeof(tern_stream))
        return -EINVAL;
    /* one block: the header, then the read buffer, then the write buffer */
    tern_stream *s = TERN__FAULT_ALLOC(malloc(sizeof *s + rcap + wcap));
    if (!s)
        return -ENOMEM;
    char *rbuf = (char *)(s + 1);
    /* a chunk must fit in rbuf, for lines that run past its end */
    *s = (tern_stream){.fd = fd,
                       .rbuf = rbuf,
                       .rcap = rcap,
                       .plain = rcap < TERN__BUF_SIZE,
                       .wbuf = rbuf + rcap,
                       .wcap = wcap};
    *out = s;
    return 0;
}

ssize_t tern_stream_free(tern_stream *s)
{
    if (!s)
        return -EINVAL;
    ssize_t dropped = (ssize_t)s->wlen;
    if (s->rx)
        tern__rx_free(s->rx);
    free(s);
    return dropped;
}

int tern_stream_fd(const tern_stream *s)
{
    return s ? s->fd : -EINVAL;
}

/* ---- reading ---------------------------------------------------------------------- */

/* The buffered bytes that lie together at the front: rbuf's, else the
 * chunk's. */
static const char *front(const tern_stream *s, size_t *n)
{
    int in_rbuf = s->rlen || !s->clen; /* never NULL, even when empty */
    *n = in_rbuf ? s->rlen : s->clen;
    return in_rbuf ? s->rbuf + s->rstart : s->chunk;
}

static void take_chunk(tern_stream *s, void *buf, size_t n)
{
    if (buf)
        memcpy(buf, s->chunk, n);
    s->chunk += n;
    if (!(s->clen -= n))
        tern__rx_done(s->rx);
}

/* Consumes n buffered bytes (into buf unless NULL): rbuf's, then the
 * chunk's. */
static void take(tern_stream *s, void *buf, size_t n)
{
    size_t a = n < s->rlen ? n : s->rlen;
    if (a) {
        if (buf)
            memcpy(buf, s->rbuf + s->rstart, a);
        s->rstart = (s->rlen -= a) ? s->rstart + a : 0;
    }
    if (n > a)
        take_chunk(s, buf ? (char *)buf + a : NULL, n - a);
}

/* The next chunk from the multishot receive. Returns its size, 0 at the
 * end of the stream, an error, or -EAGAIN: make a plain read this time.
 * Nothing is buffered. */
static ssize_t next_chunk(tern_stream *s, uint64_t deadline)
{
    if (s->plain)
        return -EAGAIN;
    if (!s->rx) {
        int r = tern__rx_new(s->fd, &s->rx);
        if (r == -EOPNOTSUPP)
            s->plain = 1;
        if (r < 0)
            return -EAGAIN; /* -ENOMEM: plainly, and try again next time */
    }
    const char *data;
    ssize_t n = tern__rx_next(s->rx, &data, deadline);
    if (n > 0) {
        s->chunk = data;
        s->clen = (size_t)n;
    } else if (n == -EOPNOTSUPP) {
        tern__rx_free(s->rx);
        s->rx = NULL;
        s->plain = 1;
        n = -EAGAIN;
    }
    return n;
}

/* One plain read appended to rbuf, which has room. */
static ssize_t read_plain(tern_stream *s, uint64_t deadline)
{
    if (s->rstart + s->rlen == s->rcap) {
        memmove(s->rbuf, s->rbuf + s->rstart, s->rlen);
        s->rstart = 0;
    }
    size_t end = s->rstart + s->rlen;
    ssize_t n = tern_read(s->fd, s->rbuf + end, s->rcap - end, deadline);
    if (n > 0)
        s->rlen += (size_t)n;
    return n;
}

/* Makes the front longer. Returns the count added, 0 at the end of the
 * stream, or an error; -EMSGSIZE when rbuf is full already. */
static ssize_t fill(tern_stream *s, uint64_t deadline)
{
    if (!s->rlen && !s->clen) { /* a new chunk is the front as it lies */
        ssize_t n = next_chunk(s, deadline);
        return n == -EAGAIN ? read_plain(s, deadline) : n;
    }
    if (!s->rlen) { /* the front is a chunk: into rbuf, to join what follows */
        memcpy(s->rbuf, s->chunk, s->clen);
        s->rstart = 0;
        s->rlen = s->clen;
        take_chunk(s, NULL, s->clen);
    }
    if (s->rlen == s->rcap)
        return -EMSGSIZE;
    if (!s->clen) {
        ssize_t n = next_chunk(s, deadline);
        if (n == -EAGAIN)
            return read_plain(s, deadline);
        if (n <= 0)
            return n;
    }
    if (s->rstart + s->rlen == s->rcap) {
        memmove(s->rbuf, s->rbuf + s->rstart, s->rlen);
        s->rstart = 0;
    }
    size_t room = s->rcap - s->rstart - s->rlen, m = s->clen < room ? s->clen : room;
    memcpy(s->rbuf + s->rstart + s->rlen, s->chunk, m);
    s->rlen += m;
    take_chunk(s, NULL, m);
    return (ssize_t)m;
}

ssize_t tern_stream_read(tern_stream *s, void *buf, size_t len, uint64_t deadline)
{
    if (!s || (!buf && len))
        return -EINVAL;
    if (!len)
        return 0;
    if (!s->rlen && !s->clen) {
        ssize_t n = next_chunk(s, deadline);
        if (n == -EAGAIN) {
            if (len >= s->rcap) /* a copy through rbuf would buy nothing */
                return tern_read(s->fd, buf, len, deadline);
            n = read_plain(s, deadline);
        }
        if (n <= 0)
            return n;
    }
    size_t have = s->rlen + s->clen, n = len < have ? len : have;
    take(s, buf, n);
    return (ssize_t)n;
}

static ssize_t read_stream(void *s, void *buf, size_t len, uint64_t deadline)
{
    return tern_stream_read(s, buf, len, deadline);
}

ssize_t tern_stream_read_exact(tern_stream *s, void *buf, size_t len, size_t *got,
                               uint64_t deadline)
{
    return tern__read_exact_by(read_stream, s, buf, len, got, deadline);
}

ssize_t tern_stream_read_until(tern_stream *s, int delim, void *buf, size_t max,
                               uint64_t deadline)
{
    if (!s || !buf || !max)
        return -EINVAL;
    size_t scanned = 0; /* bytes already known to hold no delimiter */
    for (;;) {
        size_t have;
        const char *p = front(s, &have);
        size_t lim = have < max ? have : max;
        const char *at = memchr(p + scanned, (unsigned char)delim, lim - scanned);
        if (at) {
            size_t n = (size_t)(at - p) + 1;
            take(s, buf, n);
            return (ssize_t)n;
        }
        if (lim == max)
            return -EMSGSIZE;
        scanned = lim;
        ssize_t r = fill(s, deadline);
        if (r == 0)
            return -ENODATA;
        if (r < 0)
            return r;
    }
}

ssize_t tern_stream_read_line(tern_stream *s, void *buf, size_t max, uint64_t deadline)
{
    return tern_stream_read_until(s, '\n', buf, max, deadline);
}

ssize_t tern_stream_peek(tern_stream *s, const void **data, size_t want,
                         uint64_t deadline)
{
    if (!s || !data || want > s->rcap)
        return -EINVAL;
    size_t have;
    const char *p;
    while ((p = front(s, &have)), have < want) {
        ssize_t r = fill(s, deadline);
        if (r == 0)
            break;
        if (r < 0)
            return r;
    }
    *data = p;
    return (ssize_t)have;
}

int tern_stream_consume(tern_stream *s, size_t n)
{
    if (!s || n > s->rlen + s->clen)
        return -EINVAL;
    take(s, NULL, n);
    return 0;
}

size_t tern_stream_buffered(const tern_stream *s)
{
    return s ? s->rlen + s->clen : 0;
}

/* ---- writing ---------------------------------------------------------------------- */

/* Drops n written bytes from the write buffer. */
static void sent(tern_stream *s, size_t n)
{
    s->wstart = (s->wlen -= n) ? s->wstart + n : 0;
}

/* Appends n bytes; the caller made sure they fit in wcap - wlen. */
static void append(tern_stream *s, const void *p, size_t n)
{
    if (s->wstart + s->wlen + n > s->wcap) {
        memmove(s->wbuf, s->wbuf + s->wstart, s->wlen);
        s->wstart = 0;
    }
    memcpy(s->wbuf + s->wstart + s->wlen, p, n);
    s->wlen += n;
}

ssize_t tern_stream_writev(tern_stream *s, const struct iovec *iov, int iovcnt,
                           size_t *taken, uint64_t deadline)
{
    if (taken)
        *taken = 0;
    if (!s || iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt))
        return -EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EINVAL;
        if (iov[i].iov_len > SSIZE_MAX - total)
            return -EINVAL; /* the count would not fit the return value */
        total += iov[i].iov_len;
    }
    /* Piece i from offset off on is what is left to take. */
    int i = 0;
    size_t off = 0, done = 0;
    struct iovec out[WRITEV_PIECES];
    while (done < total) {
        if (total - done <= s->wcap - s->wlen) {
            for (; i < iovcnt; i++, off = 0)
                append(s, (char *)iov[i].iov_base + off, iov[i].iov_len - off);
            done = total;
            break;
        }
        /* It does not fit: the buffer and as many pieces as one writev
         * carries leave together. */
        int n = 0;
        if (s->wlen)
            out[n++] = (struct iovec){s->wbuf + s->wstart, s->wlen};
        for (int j = i; j < iovcnt && n < WRITEV_PIECES; j++) {
            size_t skip = j == i ? off : 0;
            if (iov[j].iov_len > skip)
                out[n++] =
                    (struct iovec){(char *)iov[j].iov_base + skip, iov[j].iov_len - skip};
        }
        ssize_t r = tern_writev(s->fd, out, n, deadline);
        if (r < 0) {
            if (taken)
                *taken = done;
            return r;
        }
        size_t w = (size_t)r, from_buf = w < s->wlen ? w : s->wlen;
        sent(s, from_buf);
        w -= from_buf;
        done += w;
        while (w) { /* step over the pieces written */
            size_t left = iov[i].iov_len - off;
            if (w < left) {
                off += w;
                break;
            }
            w -= left;
            i++;
            off = 0;
        }
        while (i < iovcnt && iov[i].iov_len == off) { /* and the empty ones */
            i++;
            off = 0;
        }
    }
    if (taken)
        *taken = done;
    return (ssize_t)done;
}

ssize_t tern_stream_write(tern_stream *s, const void *buf, size_t len, size_t *taken,
                          uint64_t deadline)
{
    /* writev refuses a NULL piece with bytes, as this must */
    struct iovec one = {(void *)buf, len};
    return tern_stream_writev(s, &one, 1, taken, deadline);
}

int tern_stream_flush(tern_stream *s, uint64_t deadline)
{
    if (!s)
        return -EINVAL;
    while (s->wlen) {
        ssize_t r = tern_write(s->fd, s->wbuf + s->wstart, s->wlen, deadline);
        if (r < 0)
            return (int)r;
        sent(s, (size_t)r);
    }
    return 0;
}

size_t tern_stream_unflushed(const tern_stream *s)
{
    return s ? s->wlen : 0;
}
