/*
 * Buffered streams (tern_io.h): a read buffer that lines and frames are cut
 * from, and a write buffer that leaves with the caller's next large write in
 * one writev. Both are plain byte arrays with a start and a length; the
 * descriptor calls underneath (tern_read, tern_writev) do the waiting, so
 * the stream works alike on both backends.
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
    /* read side: bytes rbuf[rstart, rstart + rlen) are buffered */
    char *rbuf;
    size_t rcap, rstart, rlen;
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
    *s = (tern_stream){
        .fd = fd, .rbuf = rbuf, .rcap = rcap, .wbuf = rbuf + rcap, .wcap = wcap};
    *out = s;
    return 0;
}

ssize_t tern_stream_free(tern_stream *s)
{
    if (!s)
        return -EINVAL;
    ssize_t dropped = (ssize_t)s->wlen;
    free(s);
    return dropped;
}

int tern_stream_fd(const tern_stream *s)
{
    return s ? s->fd : -EINVAL;
}

/* ---- reading ---------------------------------------------------------------------- */

static void take(tern_stream *s, void *buf, size_t n)
{
    if (buf)
        memcpy(buf, s->rbuf + s->rstart, n);
    s->rstart = (s->rlen -= n) ? s->rstart + n : 0;
}

/* One read appended to the buffer. Returns the count, 0 at the end of the
 * stream, or an error; -EMSGSIZE when the buffer is already full. */
static ssize_t fill(tern_stream *s, uint64_t deadline)
{
    if (s->rlen == s->rcap)
        return -EMSGSIZE;
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

ssize_t tern_stream_read(tern_stream *s, void *buf, size_t len, uint64_t deadline)
{
    if (!s || (!buf && len))
        return -EINVAL;
    if (!len)
        return 0;
    if (!s->rlen) {
        if (len >= s->rcap) /* a copy through the buffer would buy nothing */
            return tern_read(s->fd, buf, len, deadline);
        ssize_t n = fill(s, deadline);
        if (n <= 0)
            return n;
    }
    size_t n = len < s->rlen ? len : s->rlen;
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
        size_t lim = s->rlen < max ? s->rlen : max;
        char *at =
            memchr(s->rbuf + s->rstart + scanned, (unsigned char)delim, lim - scanned);
        if (at) {
            size_t n = (size_t)(at - (s->rbuf + s->rstart)) + 1;
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
    while (s->rlen < want) {
        ssize_t r = fill(s, deadline);
        if (r == 0)
            break;
        if (r < 0)
            return r;
    }
    *data = s->rbuf + s->rstart;
    return (ssize_t)s->rlen;
}

int tern_stream_consume(tern_stream *s, size_t n)
{
    if (!s || n > s->rlen)
        return -EINVAL;
    take(s, NULL, n);
    return 0;
}

size_t tern_stream_buffered(const tern_stream *s)
{
    return s ? s->rlen : 0;
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
