/*
 * Buffered streams (tern_stream_*, io/tern_io.h) over loopback TCP, pipes
 * and Unix socket pairs. Registered once per backend; every loop test runs
 * with 1 worker (_i == 0) and with 4 (_i == 1). What is checked above all
 * is that no byte is lost or duplicated: random payloads through random
 * buffer sizes and random mixes of the reading and writing calls, and the
 * same across deadlines, cancels, resets and half-closes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io.h" /* tern__bufs_count, tern__rx_* counters */
#include "io_helpers.h"
#include "tern_sync.h"

static tern_stream *stream_make(int fd, size_t rbuf, size_t wbuf)
{
    tern_stream_config cfg = {.read_buffer = rbuf, .write_buffer = wbuf};
    tern_stream *s = NULL;
    int r = tern_stream_new(fd, &cfg, &s);
    ck_assert_msg(r == 0, "tern_stream_new: %s", tern_strerror(r));
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(tern_stream_fd(s), fd);
    return s;
}

static void stream_drop(tern_stream *s)
{
    ck_assert_int_eq(tern_stream_free(s), 0);
}

/* The end of a test on one stream over a TCP pair: nothing left unflushed. */
static void pair_done(tern_stream *s, int c, int sv)
{
    stream_drop(s);
    ck_assert_int_eq(tern_close(c), 0);
    ck_assert_int_eq(tern_close(sv), 0);
}

/* Reads one line from s and checks that it is want. */
static void expect_line(tern_stream *s, const char *want)
{
    char buf[256];
    ssize_t n = tern_stream_read_line(s, buf, sizeof buf, LONG_DL());
    ck_assert_msg(n == (ssize_t)strlen(want), "read_line: %zd (%s), want '%s'", n,
                  n < 0 ? tern_strerror((int)n) : "", want);
    ck_assert_int_eq(memcmp(buf, want, (size_t)n), 0);
}

/* ---- arguments and the thread rules ------------------------------------------------ */

START_TEST(bad_arguments)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tern_stream *s = (tern_stream *)1;
    ck_assert_int_eq(tern_stream_new(-1, NULL, &s), -EINVAL);
    ck_assert_ptr_eq(s, (tern_stream *)1);
    ck_assert_int_eq(tern_stream_new(p[0], NULL, NULL), -EINVAL);
    tern_stream_config cfg = {0};
    cfg.reserved[5] = 1;
    ck_assert_int_eq(tern_stream_new(p[0], &cfg, &s), -EINVAL);
    cfg = (tern_stream_config){.read_buffer = SIZE_MAX};
    ck_assert_int_eq(tern_stream_new(p[0], &cfg, &s), -EINVAL);
    cfg = (tern_stream_config){.read_buffer = 16, .write_buffer = SIZE_MAX - 8};
    ck_assert_int_eq(tern_stream_new(p[0], &cfg, &s), -EINVAL);
    ck_assert_int_eq(tern_stream_free(NULL), -EINVAL);
    ck_assert_int_eq(tern_stream_fd(NULL), -EINVAL);
    ck_assert_uint_eq(tern_stream_buffered(NULL), 0);
    ck_assert_uint_eq(tern_stream_unflushed(NULL), 0);

    /* defaults: 16 KiB each way */
    ck_assert_int_eq(tern_stream_new(p[0], NULL, &s), 0);
    const void *d;
    ck_assert_int_eq(tern_stream_peek(s, &d, (16u << 10) + 1, 0), -EINVAL);
    stream_drop(s);

    s = stream_make(p[0], 64, 64);
    char buf[8];
    size_t got = 7, taken = 7;
    ck_assert_int_eq(tern_stream_read(NULL, buf, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read(s, NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read(s, buf, 0, 0), 0);
    ck_assert_int_eq(tern_stream_read_exact(NULL, buf, 1, &got, 0), -EINVAL);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(tern_stream_read_exact(s, NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read_until(NULL, '\n', buf, 8, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read_until(s, '\n', NULL, 8, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read_until(s, '\n', buf, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_read_line(NULL, buf, 8, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_peek(NULL, &d, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_peek(s, NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_peek(s, &d, 65, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_consume(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_consume(s, 1), -EINVAL);
    ck_assert_int_eq(tern_stream_consume(s, 0), 0);
    ck_assert_int_eq(tern_stream_write(NULL, buf, 1, &taken, 0), -EINVAL);
    ck_assert_uint_eq(taken, 0);
    taken = 7;
    ck_assert_int_eq(tern_stream_write(s, NULL, 1, &taken, 0), -EINVAL);
    ck_assert_uint_eq(taken, 0);
    struct iovec iov[2] = {{buf, 1}, {NULL, 1}};
    ck_assert_int_eq(tern_stream_writev(s, iov, -1, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_writev(s, iov, IOV_MAX + 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_writev(s, NULL, 1, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_writev(s, iov, 2, NULL, 0), -EINVAL);
    struct iovec huge[2] = {{buf, SSIZE_MAX}, {buf, 2}};
    ck_assert_int_eq(tern_stream_writev(s, huge, 2, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_stream_flush(NULL, 0), -EINVAL);
    ck_assert_uint_eq(tern_stream_unflushed(s), 0); /* nothing was taken */
    stream_drop(s);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* Outside a task a call that must wait returns -EPERM and takes nothing;
 * one that need not wait works anywhere. */
START_TEST(outside_task)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tern_stream *r = stream_make(p[0], 64, 64), *w = stream_make(p[1], 64, 64);
    char buf[16];
    size_t got = 7, taken = 7;
    ck_assert_int_eq(tern_stream_read(r, buf, sizeof buf, 0), -EPERM);
    ck_assert_int_eq(tern_stream_read_exact(r, buf, 4, &got, 0), -EPERM);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(tern_stream_read_line(r, buf, sizeof buf, 0), -EPERM);
    const void *d;
    ck_assert_int_eq(tern_stream_peek(r, &d, 1, 0), -EPERM);
    ck_assert_int_eq(tern_stream_peek(r, &d, 0, 0), 0); /* nothing to wait for */
    /* fits the buffer: no wait */
    ck_assert_int_eq(tern_stream_write(w, "hello\n", 6, &taken, 0), 6);
    ck_assert_uint_eq(taken, 6);
    ck_assert_uint_eq(tern_stream_unflushed(w), 6);
    ck_assert_int_eq(tern_stream_flush(w, 0), -EPERM);
    ck_assert_uint_eq(tern_stream_unflushed(w), 6);
    /* larger than the buffer: it would have to write */
    char big[100] = {0};
    ck_assert_int_eq(tern_stream_write(w, big, sizeof big, &taken, 0), -EPERM);
    ck_assert_uint_eq(taken, 0);
    ck_assert_uint_eq(tern_stream_unflushed(w), 6);
    ck_assert_int_eq(tern_stream_free(w), 6); /* dropped unsent */
    stream_drop(r);
    close(p[0]);
    close(p[1]);
}
END_TEST

IO_TEST(free_counts_dropped)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tern_stream *w = stream_make(p[1], 0, 0);
    ck_assert_int_eq(tern_stream_write(w, "0123456789", 10, NULL, LONG_DL()), 10);
    ck_assert_int_eq(tern_stream_free(w), 10);
    w = stream_make(p[1], 0, 0);
    ck_assert_int_eq(tern_stream_write(w, "0123456789", 10, NULL, LONG_DL()), 10);
    ck_assert_int_eq(tern_stream_flush(w, LONG_DL()), 0);
    ck_assert_int_eq(tern_stream_free(w), 0);
    char buf[10];
    read_exactly(p[0], buf, 10);
    ck_assert_int_eq(memcmp(buf, "0123456789", 10), 0);
    ck_assert_int_eq(tern_close(p[0]), 0);
    ck_assert_int_eq(tern_close(p[1]), 0);
    return NULL;
}

/* ---- byte-exact transfer ----------------------------------------------------------- */

#define XFER_LEN (256u << 10)

struct xfer {
    int fd;
    uint64_t seed;
    const unsigned char *data;
    unsigned char *back;
    size_t len;
    ssize_t res;
    unsigned calls[6]; /* which reading or writing calls ran */
};

static size_t pick(uint64_t *r, size_t max)
{
    return 1 + (size_t)(rnd_next(r) % max);
}

/* Writes x->data in random pieces through a stream with a random buffer,
 * alternating write, writev (sometimes far more pieces than one writev
 * carries) and flush. */
static void *xfer_writer(void *arg)
{
    struct xfer *x = arg;
    uint64_t r = x->seed;
    tern_stream *s = stream_make(x->fd, 64, pick(&r, 8192));
    size_t off = 0;
    while (off < x->len) {
        size_t left = x->len - off, taken = 0;
        ssize_t n;
        switch (rnd_next(&r) % 4) {
        case 0:
        case 1: {
            size_t k = pick(&r, rnd_next(&r) % 4 ? 300 : 20000);
            k = k < left ? k : left;
            n = tern_stream_write(s, x->data + off, k, &taken, LONG_DL());
            ck_assert_int_eq(n, (ssize_t)k);
            x->calls[0]++;
            break;
        }
        case 2: {
            struct iovec iov[200];
            int cnt = (int)pick(&r, 200), c = 0;
            size_t sum = 0;
            for (; c < cnt && sum < left; c++) {
                size_t k = rnd_next(&r) % 97; /* empty pieces too */
                k = k < left - sum ? k : left - sum;
                iov[c] = (struct iovec){(void *)(x->data + off + sum), k};
                sum += k;
            }
            n = tern_stream_writev(s, iov, c, &taken, LONG_DL());
            ck_assert_int_eq(n, (ssize_t)sum);
            x->calls[1] += c > 64 ? 1 : 0;
            break;
        }
        default:
            ck_assert_int_eq(tern_stream_flush(s, LONG_DL()), 0);
            ck_assert_uint_eq(tern_stream_unflushed(s), 0);
            continue;
        }
        ck_assert_uint_eq(taken, (size_t)n);
        off += (size_t)n;
    }
    ck_assert_int_eq(tern_stream_flush(s, LONG_DL()), 0);
    stream_drop(s);
    ck_assert_int_eq(tern_shutdown(x->fd, SHUT_WR), 0);
    return NULL;
}

/* Reads everything into x->back through a stream with a random buffer,
 * mixing read, read_exact, read_until (lines longer than the buffer
 * included), and peek with consume. */
static void *xfer_reader(void *arg)
{
    struct xfer *x = arg;
    uint64_t r = x->seed ^ 0x5555;
    /* small buffers read plainly; from a provided buffer's size on, a
     * socket on io_uring reads through the multishot receive */
    size_t rcap = rnd_next(&r) % 2 ? pick(&r, 4096) + 1 : 4096 + pick(&r, 12288);
    tern_stream *s = stream_make(x->fd, rcap, 64);
    size_t off = 0, end_at = SIZE_MAX;
    for (;;) {
        size_t room = XFER_LEN - off;
        ssize_t n;
        if (!room) { /* all a full-size payload is in: the end must follow */
            char c;
            ck_assert_int_eq(tern_stream_read(s, &c, 1, LONG_DL()), 0);
            break;
        }
        switch (rnd_next(&r) % 4) {
        case 0:
            n = tern_stream_read(s, x->back + off, pick(&r, 2 * rcap) % room + 1,
                                 LONG_DL());
            x->calls[2]++;
            break;
        case 1: {
            size_t got = 0, want = pick(&r, 3 * rcap) % room + 1;
            n = tern_stream_read_exact(s, x->back + off, want, &got, LONG_DL());
            if (n == -ENODATA) /* the end came first: got is what there was */
                n = (ssize_t)got;
            else
                ck_assert_uint_eq(got, (size_t)n);
            x->calls[3]++;
            break;
        }
        case 2: {
            size_t max = pick(&r, 2 * rcap), before = tern_stream_buffered(s);
            n = tern_stream_read_until(s, 0x0a, x->back + off, max < room ? max : room,
                                       LONG_DL());
            if (n == -EMSGSIZE || n == -ENODATA) {
                /* nothing consumed: at least what was there is still there */
                ck_assert_uint_ge(tern_stream_buffered(s), before);
                n = tern_stream_read(s, x->back + off, room, LONG_DL());
            } else if (n > 0) {
                ck_assert_int_eq(x->back[off + (size_t)n - 1], 0x0a);
                ck_assert_ptr_null(memchr(x->back + off, 0x0a, (size_t)n - 1));
                x->calls[4]++;
            }
            break;
        }
        default: {
            const void *d = NULL;
            size_t want = pick(&r, rcap);
            n = tern_stream_peek(s, &d, want, LONG_DL());
            ck_assert_int_ge(n, 0);
            ck_assert_uint_le((size_t)n, tern_stream_buffered(s));
            if ((size_t)n < want) { /* only at the end: all the rest is here */
                ck_assert_uint_eq((size_t)n, tern_stream_buffered(s));
                end_at = off + (size_t)n;
            }
            if (n > 0) {
                size_t k = pick(&r, (size_t)n);
                memcpy(x->back + off, d, k);
                ck_assert_int_eq(tern_stream_consume(s, k), 0);
                n = (ssize_t)k;
                x->calls[5]++;
            }
            break;
        }
        }
        ck_assert_msg(n >= 0, "reader: %s", tern_strerror((int)n));
        if (n == 0 && tern_stream_buffered(s) == 0) {
            char c;
            if (tern_stream_read(s, &c, 1, LONG_DL()) == 0)
                break;
            ck_abort_msg("data after the end");
        }
        off += (size_t)n;
        ck_assert_uint_le(off, XFER_LEN);
    }
    ck_assert_msg(end_at == SIZE_MAX || end_at == off, "a short peek before the end");
    x->len = off;
    stream_drop(s);
    return NULL;
}

IO_TEST(random_transfer)
{
    unsigned char *data = malloc(XFER_LEN), *back = malloc(XFER_LEN);
    ck_assert_ptr_nonnull(data);
    ck_assert_ptr_nonnull(back);
    unsigned calls[6] = {0};
    for (uint64_t round = 0; round < (uint64_t)SCALED(12); round++) {
        size_t len = XFER_LEN - (size_t)(round * 7919 % 5000);
        fill_random(data, len, round + 1);
        /* lines of every length, some longer than any read buffer */
        for (size_t i = 0; i < len; i += 1 + (size_t)(data[i] * data[i] / 8))
            data[i] = 0x0a;
        memset(back, 0, XFER_LEN);
        int c, sv;
        if (round % 3 == 2) {
            int sp[2];
            ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
            c = sp[0];
            sv = sp[1];
        } else {
            tcp_pair(&c, &sv);
        }
        struct xfer w = {.fd = c, .seed = round * 31 + 7, .data = data, .len = len};
        struct xfer rd = {.fd = sv, .seed = round * 31 + 7, .back = back};
        tern_task *tw, *tr;
        ck_assert_int_eq(tern_spawn(xfer_reader, &rd, &tr), 0);
        ck_assert_int_eq(tern_spawn(xfer_writer, &w, &tw), 0);
        ck_assert_int_eq(tern_join(tw, NULL), 0);
        ck_assert_int_eq(tern_join(tr, NULL), 0);
        ck_assert_uint_eq(rd.len, len);
        ck_assert_int_eq(memcmp(back, data, len), 0);
        for (int k = 0; k < 6; k++)
            calls[k] += w.calls[k] + rd.calls[k];
        ck_assert_int_eq(tern_close(c), 0);
        ck_assert_int_eq(tern_close(sv), 0);
    }
    /* every path ran: writes, writevs of more than 64 pieces, reads,
     * read_exacts, whole lines, peeks */
    for (int k = 0; k < 6; k++)
        ck_assert_msg(calls[k] > 0, "path %d never ran", k);
    free(data);
    free(back);
    return NULL;
}

/* One stream, a reading task and a writing task at once (the two sides
 * are independent): lines written into a by this task, echoed by another
 * task on the far end b, read back from a by a third. */
enum { ECHO_LINES = 2000 };

static void *echo_check(void *arg)
{
    tern_stream *s = arg;
    for (int i = 0; i < ECHO_LINES; i++) {
        char want[64];
        snprintf(want, sizeof want, "line %d\n", i);
        expect_line(s, want);
    }
    return NULL;
}

static void *echo_back(void *arg)
{
    tern_stream *s = arg;
    char buf[64];
    for (int i = 0; i < ECHO_LINES; i++) {
        ssize_t n = tern_stream_read_line(s, buf, sizeof buf, LONG_DL());
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(tern_stream_write(s, buf, (size_t)n, NULL, LONG_DL()), n);
        if (!tern_stream_buffered(s))
            ck_assert_int_eq(tern_stream_flush(s, LONG_DL()), 0);
    }
    ck_assert_int_eq(tern_stream_flush(s, LONG_DL()), 0);
    return NULL;
}

IO_TEST(sides_used_by_two_tasks)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *a = stream_make(c, 128, 100), *b = stream_make(sv, 128, 100);
    tern_task *tc, *tb;
    ck_assert_int_eq(tern_spawn(echo_check, a, &tc), 0); /* a's read side */
    ck_assert_int_eq(tern_spawn(echo_back, b, &tb), 0);
    for (int i = 0; i < ECHO_LINES; i++) { /* a's write side */
        char line[64];
        int k = snprintf(line, sizeof line, "line %d\n", i);
        ck_assert_int_eq(tern_stream_write(a, line, (size_t)k, NULL, LONG_DL()), k);
        if (i % 7 == 6)
            ck_assert_int_eq(tern_stream_flush(a, LONG_DL()), 0);
    }
    ck_assert_int_eq(tern_stream_flush(a, LONG_DL()), 0);
    ck_assert_int_eq(tern_join(tb, NULL), 0);
    ck_assert_int_eq(tern_join(tc, NULL), 0);
    stream_drop(a);
    stream_drop(b);
    ck_assert_int_eq(tern_close(c), 0);
    ck_assert_int_eq(tern_close(sv), 0);
    return NULL;
}

/* ---- lines and their limits -------------------------------------------------------- */

IO_TEST(lines_too_long)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *s = stream_make(sv, 8, 64);
    char buf[64];
    write_all(c, "abcdefg\n", 8);
    /* the line is longer than max: nothing consumed */
    ck_assert_int_eq(tern_stream_read_line(s, buf, 4, LONG_DL()), -EMSGSIZE);
    ck_assert_uint_ge(tern_stream_buffered(s), 4);
    expect_line(s, "abcdefg\n");
    /* exactly max, and exactly the buffer */
    write_all(c, "1234567\n", 8);
    ck_assert_int_eq(tern_stream_read_line(s, buf, 8, LONG_DL()), 8);
    ck_assert_int_eq(memcmp(buf, "1234567\n", 8), 0);
    /* longer than the read buffer: -EMSGSIZE with the buffer full */
    write_all(c, "0123456789abcde\n", 16);
    ck_assert_int_eq(tern_stream_read_line(s, buf, sizeof buf, LONG_DL()), -EMSGSIZE);
    ck_assert_uint_eq(tern_stream_buffered(s), 8);
    ck_assert_int_eq(tern_stream_read(s, buf, 8, LONG_DL()), 8);
    ck_assert_int_eq(memcmp(buf, "01234567", 8), 0);
    expect_line(s, "89abcde\n");
    /* other delimiters; a delimiter as the first byte */
    write_all(c, "a:b::", 5);
    ck_assert_int_eq(tern_stream_read_until(s, ':', buf, 8, LONG_DL()), 2);
    ck_assert_int_eq(tern_stream_read_until(s, ':', buf, 8, LONG_DL()), 2);
    ck_assert_int_eq(tern_stream_read_until(s, ':', buf, 8, LONG_DL()), 1);
    ck_assert_int_eq(buf[0], ':');
    /* a delimiter that is a byte above 127 */
    write_all(c, "x\xff", 2);
    ck_assert_int_eq(tern_stream_read_until(s, 0xff, buf, 8, LONG_DL()), 2);
    ck_assert_uint_eq(tern_stream_buffered(s), 0);
    pair_done(s, c, sv);
    return NULL;
}

IO_TEST(peek_and_consume)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tern_stream *s = stream_make(p[0], 16, 16);
    const void *d = NULL;
    write_all(p[1], "hel", 3);
    /* want more than there is: waits, and the deadline ends it */
    ck_assert_int_eq(tern_stream_peek(s, &d, 5, dl_ms(20)), -ETIMEDOUT);
    ck_assert_uint_eq(tern_stream_buffered(s), 3);
    write_all(p[1], "lo world", 8);
    ssize_t n = tern_stream_peek(s, &d, 5, LONG_DL());
    ck_assert_int_ge(n, 5);
    ck_assert_int_eq(memcmp(d, "hello", 5), 0);
    ck_assert_int_eq(tern_stream_consume(s, 6), 0);
    n = tern_stream_peek(s, &d, 5, LONG_DL());
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(memcmp(d, "world", 5), 0);
    ck_assert_int_eq(tern_stream_consume(s, 6), -EINVAL);
    ck_assert_int_eq(tern_stream_consume(s, 5), 0);
    /* the whole buffer, across the wrap of its start */
    write_all(p[1], "0123456789abcdef", 16);
    ck_assert_int_eq(tern_stream_peek(s, &d, 16, LONG_DL()), 16);
    ck_assert_int_eq(memcmp(d, "0123456789abcdef", 16), 0);
    ck_assert_int_eq(tern_stream_consume(s, 16), 0);
    /* at the end: fewer than asked, then 0 */
    write_all(p[1], "xy", 2);
    ck_assert_int_eq(tern_close(p[1]), 0);
    ck_assert_int_eq(tern_stream_peek(s, &d, 5, LONG_DL()), 2);
    ck_assert_int_eq(tern_stream_consume(s, 2), 0);
    ck_assert_int_eq(tern_stream_peek(s, &d, 5, LONG_DL()), 0);
    stream_drop(s);
    ck_assert_int_eq(tern_close(p[0]), 0);
    return NULL;
}

/* A read as large as the buffer goes straight into the caller's memory,
 * a smaller one through the buffer: either way the bytes are the same. */
IO_TEST(large_reads_bypass)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    tern_stream *s = stream_make(p[0], 32, 32);
    unsigned char data[100], back[100];
    fill_random(data, sizeof data, 9);
    write_all(p[1], data, 40);
    ck_assert_int_eq(tern_stream_read(s, back, 64, LONG_DL()), 40);
    ck_assert_uint_eq(tern_stream_buffered(s), 0);
    write_all(p[1], data + 40, 60);
    ck_assert_int_eq(tern_stream_read(s, back + 40, 10, LONG_DL()), 10);
    ck_assert_uint_eq(tern_stream_buffered(s), 22); /* one read of 32 */
    size_t got = 0;
    ck_assert_int_eq(tern_stream_read_exact(s, back + 50, 50, &got, LONG_DL()), 50);
    ck_assert_int_eq(memcmp(back, data, sizeof data), 0);
    stream_drop(s);
    ck_assert_int_eq(tern_close(p[0]), 0);
    ck_assert_int_eq(tern_close(p[1]), 0);
    return NULL;
}

/* ---- deadlines, cancels and the peer going away ------------------------------------ */

IO_TEST(deadline_mid_line)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *s = stream_make(sv, 0, 0);
    char buf[64];
    write_all(c, "abc", 3);
    ck_assert_int_eq(tern_stream_read_line(s, buf, sizeof buf, dl_ms(30)), -ETIMEDOUT);
    ck_assert_uint_eq(tern_stream_buffered(s), 3);
    size_t got = 9;
    ck_assert_int_eq(tern_stream_read_exact(s, buf, 5, &got, dl_ms(10)), -ETIMEDOUT);
    ck_assert_uint_eq(got, 3); /* those three are the caller's now */
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
    write_all(c, "abcdef\n", 7);
    expect_line(s, "abcdef\n");
    pair_done(s, c, sv);
    return NULL;
}

struct liner {
    tern_stream *s;
    ssize_t res;
};

static void *line_reader(void *arg)
{
    struct liner *l = arg;
    char buf[64];
    l->res = tern_stream_read_line(l->s, buf, sizeof buf, 0);
    return NULL;
}

IO_TEST(cancel_mid_line)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *s = stream_make(sv, 0, 0);
    write_all(c, "abc", 3);
    struct liner l = {.s = s, .res = 1};
    tern_task *t;
    ck_assert_int_eq(tern_spawn(line_reader, &l, &t), 0);
    TASK_WAIT_PARKED(t, TERN__W_IO);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(l.res, -ECANCELED);
    /* the cancelled task read "abc" into the buffer; it is still there */
    write_all(c, "def\n", 4);
    expect_line(s, "abcdef\n");
    pair_done(s, c, sv);
    return NULL;
}

IO_TEST(peer_reset_mid_line)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *s = stream_make(sv, 0, 0);
    char buf[64];
    write_all(c, "abc", 3);
    ck_assert_int_eq(tern_stream_read_line(s, buf, sizeof buf, dl_ms(20)), -ETIMEDOUT);
    ck_assert_uint_eq(tern_stream_buffered(s), 3);
    reset_close(c);
    ck_assert_int_eq(tern_stream_read_line(s, buf, sizeof buf, LONG_DL()), -ECONNRESET);
    ck_assert_uint_eq(tern_stream_buffered(s), 3);
    ck_assert_int_eq(tern_stream_read(s, buf, sizeof buf, LONG_DL()), 3);
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
    stream_drop(s);
    ck_assert_int_eq(tern_close(sv), 0);
    return NULL;
}

IO_TEST(half_close_mid_line)
{
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *s = stream_make(sv, 0, 0);
    char buf[64];
    write_all(c, "abc\nxy", 6);
    ck_assert_int_eq(tern_shutdown(c, SHUT_WR), 0);
    expect_line(s, "abc\n");
    ck_assert_int_eq(tern_stream_read_line(s, buf, sizeof buf, LONG_DL()), -ENODATA);
    ck_assert_uint_eq(tern_stream_buffered(s), 2);
    size_t got = 9;
    ck_assert_int_eq(tern_stream_read_exact(s, buf, 5, &got, LONG_DL()), -ENODATA);
    ck_assert_uint_eq(got, 2);
    ck_assert_int_eq(memcmp(buf, "xy", 2), 0);
    ck_assert_int_eq(tern_stream_read(s, buf, sizeof buf, LONG_DL()), 0);
    ck_assert_int_eq(tern_stream_read_exact(s, buf, 1, &got, LONG_DL()), -ENODATA);
    ck_assert_uint_eq(got, 0);
    /* the other way is still open */
    tern_stream *w = stream_make(sv, 0, 0);
    ck_assert_int_eq(tern_stream_write(w, "ok", 2, NULL, LONG_DL()), 2);
    ck_assert_int_eq(tern_stream_flush(w, LONG_DL()), 0);
    read_exactly(c, buf, 2);
    stream_drop(w);
    pair_done(s, c, sv);
    return NULL;
}

/* A write stopped by a deadline or a cancel took exactly *taken bytes:
 * they arrive, the rest is written afterwards, and the reader sees the
 * whole payload once. */
#define WLEN (2u << 20)

/* Small enough that WLEN cannot fit in the two buffers, large enough that
 * loopback TCP does not crawl on delayed acknowledgements afterwards. */
static void small_buffers(int c, int sv)
{
    int snd = 16 << 10, rcv = 64 << 10;
    ck_assert_int_eq(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd), 0);
    ck_assert_int_eq(setsockopt(sv, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
}

struct bulk {
    tern_stream *s;
    const unsigned char *data;
    size_t len, taken;
    ssize_t res;
    uint64_t deadline;
};

static void *bulk_writer(void *arg)
{
    struct bulk *b = arg;
    b->res = tern_stream_write(b->s, b->data, b->len, &b->taken, b->deadline);
    return NULL;
}

static void *bulk_reader(void *arg)
{
    struct bulk *b = arg;
    size_t got = 0;
    b->res = tern_stream_read_exact(b->s, (void *)b->data, b->len, &got, LONG_DL());
    b->taken = got;
    return NULL;
}

static void interrupted_write(int by_cancel)
{
    int c, sv;
    tcp_pair(&c, &sv);
    small_buffers(c, sv);
    unsigned char *data = malloc(WLEN), *back = malloc(WLEN);
    fill_random(data, WLEN, 41 + (uint64_t)by_cancel);
    tern_stream *w = stream_make(c, 0, 4096), *r = stream_make(sv, 0, 0);
    /* some bytes buffered first, so the interrupted write carries them */
    ck_assert_int_eq(tern_stream_write(w, data, 100, NULL, LONG_DL()), 100);
    struct bulk b = {.s = w, .data = data + 100, .len = WLEN - 100, .res = 1};
    if (by_cancel) {
        tern_task *t;
        ck_assert_int_eq(tern_spawn(bulk_writer, &b, &t), 0);
        TASK_WAIT_PARKED(t, TERN__W_IO);
        ck_assert_int_eq(tern_task_cancel(t), 0);
        ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
        ck_assert_int_eq(b.res, -ECANCELED);
    } else {
        b.deadline = dl_ms(30);
        bulk_writer(&b);
        ck_assert_int_eq(b.res, -ETIMEDOUT);
    }
    ck_assert_uint_lt(b.taken, b.len);
    ck_assert_uint_le(tern_stream_unflushed(w), 4096);
    /* the reader starts now and must see every byte once */
    struct bulk rd = {.s = r, .data = back, .len = WLEN, .res = 1};
    tern_task *tr;
    ck_assert_int_eq(tern_spawn(bulk_reader, &rd, &tr), 0);
    size_t off = 100 + b.taken;
    ck_assert_int_eq(tern_stream_write(w, data + off, WLEN - off, NULL, LONG_DL()),
                     (ssize_t)(WLEN - off));
    ck_assert_int_eq(tern_stream_flush(w, LONG_DL()), 0);
    ck_assert_int_eq(tern_join(tr, NULL), 0);
    ck_assert_int_eq(rd.res, (ssize_t)WLEN);
    ck_assert_int_eq(memcmp(back, data, WLEN), 0);
    stream_drop(w);
    stream_drop(r);
    free(data);
    free(back);
    ck_assert_int_eq(tern_close(c), 0);
    ck_assert_int_eq(tern_close(sv), 0);
}

IO_TEST(deadline_mid_write)
{
    interrupted_write(0);
    return NULL;
}

IO_TEST(cancel_mid_write)
{
    interrupted_write(1);
    return NULL;
}

/* Writing to a peer that is gone: -EPIPE, and what was not written stays
 * counted as unflushed (and dropped by free). */
IO_TEST(write_to_closed_peer)
{
    int c, sv;
    tcp_pair(&c, &sv);
    reset_close(sv);
    tern_stream *w = stream_make(c, 0, 64);
    unsigned char data[1000] = {0};
    ssize_t r = 0;
    size_t taken = 0;
    for (int i = 0; i < 1000 && r >= 0; i++)
        r = tern_stream_write(w, data, sizeof data, &taken, LONG_DL());
    ck_assert_msg(r == -EPIPE || r == -ECONNRESET, "write: %s", tern_strerror((int)r));
    size_t left = tern_stream_unflushed(w);
    ck_assert_uint_le(left, 64);
    ck_assert_int_eq(tern_stream_free(w), (ssize_t)left);
    w = stream_make(c, 0, 64);
    ck_assert_int_eq(tern_stream_write(w, "xyz", 3, NULL, LONG_DL()), 3);
    int f = tern_stream_flush(w, LONG_DL());
    ck_assert_msg(f == -EPIPE || f == -ECONNRESET, "flush: %s", tern_strerror(f));
    ck_assert_uint_eq(tern_stream_unflushed(w), 3);
    ck_assert_int_eq(tern_stream_free(w), 3);
    ck_assert_int_eq(tern_close(c), 0);
    return NULL;
}

/* ---- the provided-buffer rings (io_uring; the same checks run on epoll) ----------- */

/* Whether streams on sockets read through the multishot receive here. */
static int rx_used(void)
{
    const char *off = getenv("TERN_NO_MULTISHOT");
    return backend_is("io_uring") && !(off && strcmp(off, "1") == 0);
}

struct sender {
    int fd;
    const unsigned char *data;
    size_t len;
};

static void *send_all(void *arg)
{
    struct sender *x = arg;
    write_all(x->fd, x->data, x->len);
    ck_assert_int_eq(tern_shutdown(x->fd, SHUT_WR), 0);
    return NULL;
}

/* Reads len bytes and then the end from s, and checks them against want. */
static void expect_all(tern_stream *s, const unsigned char *want, size_t len)
{
    unsigned char *back = malloc(len);
    ck_assert_ptr_nonnull(back);
    size_t got = 0;
    ssize_t r = tern_stream_read_exact(s, back, len, &got, LONG_DL());
    ck_assert_msg(r == (ssize_t)len, "read_exact: %zd (%s), got %zu of %zu", r,
                  tern_strerror((int)r), got, len);
    ck_assert_int_eq(memcmp(back, want, len), 0);
    char c;
    ck_assert_int_eq(tern_stream_read(s, &c, 1, LONG_DL()), 0);
    free(back);
}

enum { FAST_PAIRS = 8 };
#define SLOW_LEN (1u << 20)
#define FAST_LEN (96u << 10)

/* FAST_PAIRS random transfers at once, each checked byte for byte. */
static void fast_transfers(const unsigned char *data)
{
    struct xfer w[FAST_PAIRS], rd[FAST_PAIRS];
    tern_task *tw[FAST_PAIRS], *tr[FAST_PAIRS];
    int c[FAST_PAIRS], sv[FAST_PAIRS];
    for (int i = 0; i < FAST_PAIRS; i++) {
        tcp_pair(&c[i], &sv[i]);
        w[i] = (struct xfer){
            .fd = c[i], .seed = 100u + (unsigned)i, .data = data, .len = FAST_LEN};
        rd[i] = (struct xfer){
            .fd = sv[i], .seed = 200u + (unsigned)i, .back = calloc(1, XFER_LEN)};
        ck_assert_ptr_nonnull(rd[i].back);
        ck_assert_int_eq(tern_spawn(xfer_reader, &rd[i], &tr[i]), 0);
        ck_assert_int_eq(tern_spawn(xfer_writer, &w[i], &tw[i]), 0);
    }
    for (int i = 0; i < FAST_PAIRS; i++) {
        ck_assert_int_eq(tern_join(tw[i], NULL), 0);
        ck_assert_int_eq(tern_join(tr[i], NULL), 0);
        ck_assert_uint_eq(rd[i].len, FAST_LEN);
        ck_assert_int_eq(memcmp(rd[i].back, data, FAST_LEN), 0);
        free(rd[i].back);
        ck_assert_int_eq(tern_close(c[i]), 0);
        ck_assert_int_eq(tern_close(sv[i]), 0);
    }
}

/* A reader that stops reading while its peer keeps sending: its receive
 * stops at the per-socket limit (the socket keeps the rest), readers of
 * other connections meanwhile go at full speed, and the slow one still
 * gets every byte in order afterwards. */
IO_TEST(slow_reader_does_not_starve_others)
{
    unsigned long pauses = atomic_load(&tern__rx_pauses);
    unsigned char *data = malloc(SLOW_LEN);
    ck_assert_ptr_nonnull(data);
    fill_random(data, SLOW_LEN, 5);
    int c, sv;
    tcp_pair(&c, &sv);
    tern_stream *slow = stream_make(sv, 0, 0);
    struct sender snd = {c, data, SLOW_LEN};
    tern_task *ts;
    ck_assert_int_eq(tern_spawn(send_all, &snd, &ts), 0);
    unsigned char first;
    ck_assert_int_eq(tern_stream_read(slow, &first, 1, LONG_DL()), 1);
    ck_assert_int_eq(first, data[0]);
    if (rx_used())
        TASK_WAIT_UNTIL(atomic_load(&tern__rx_pauses) > pauses, WAIT_MS);
    TASK_WAIT_UNTIL(sock_inq(sv) > 0, WAIT_MS);
    fast_transfers(data);
    expect_all(slow, data + 1, SLOW_LEN - 1);
    ck_assert_int_eq(tern_join(ts, NULL), 0);
    pair_done(slow, c, sv);
    free(data);
    return NULL;
}

/* Readers that each hold what they received until told to go on: with
 * rings of 8 buffers (ring_runs_dry sets that), far more than the rings
 * hold arrives, the kernel answers ENOBUFS, and yet every reader, and a
 * transfer made meanwhile, gets its bytes exactly. */
enum { DRY_READERS = 32 };
#define DRY_LEN (16u << 10)

struct holder {
    int fd;
    const unsigned char *data;
    _Atomic int *started;
    tern_event *go;
};

static void *hold_then_read(void *arg)
{
    struct holder *h = arg;
    tern_stream *s = stream_make(h->fd, 0, 0);
    unsigned char first;
    ck_assert_int_eq(tern_stream_read(s, &first, 1, LONG_DL()), 1);
    ck_assert_int_eq(first, h->data[0]);
    atomic_fetch_add(h->started, 1);
    ck_assert_int_eq(tern_event_wait(h->go, LONG_DL()), 0);
    expect_all(s, h->data + 1, DRY_LEN - 1);
    stream_drop(s);
    return NULL;
}

static void *ring_runs_dry_main(void *arg)
{
    (void)arg;
    unsigned long dry = atomic_load(&tern__rx_nobufs);
    unsigned char *data = malloc(XFER_LEN);
    ck_assert_ptr_nonnull(data);
    fill_random(data, XFER_LEN, 11);
    _Atomic int started = 0;
    tern_event go = TERN_EVENT_INIT;
    int c[DRY_READERS], sv[DRY_READERS];
    struct holder h[DRY_READERS];
    tern_task *t[DRY_READERS];
    for (int i = 0; i < DRY_READERS; i++) {
        tcp_pair(&c[i], &sv[i]);
        h[i] = (struct holder){sv[i], data, &started, &go};
        ck_assert_int_eq(tern_spawn(hold_then_read, &h[i], &t[i]), 0);
    }
    /* each has armed its receive (while the rings were full) before any
     * byte is sent */
    for (int i = 0; i < DRY_READERS; i++)
        TASK_WAIT_PARKED(t[i], TERN__W_IO);
    for (int i = 0; i < DRY_READERS; i++) {
        write_all(c[i], data, DRY_LEN);
        ck_assert_int_eq(tern_shutdown(c[i], SHUT_WR), 0);
    }
    TASK_WAIT_UNTIL(atomic_load(&started) == DRY_READERS, WAIT_MS);
    if (rx_used())
        ck_assert_uint_gt(atomic_load(&tern__rx_nobufs), dry);
    fast_transfers(data);
    ck_assert_int_eq(tern_event_set(&go), 0);
    for (int i = 0; i < DRY_READERS; i++) {
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
        ck_assert_int_eq(tern_close(c[i]), 0);
        ck_assert_int_eq(tern_close(sv[i]), 0);
    }
    ck_assert_int_eq(tern_event_destroy(&go), 0);
    free(data);
    return NULL;
}

START_TEST(ring_runs_dry)
{
    unsigned saved = tern__bufs_count;
    tern__bufs_count = 8;
    run_io(_i, ring_runs_dry_main, NULL);
    tern__bufs_count = saved;
}
END_TEST

/* A stream freed on another worker than the one its receive is armed on,
 * and its socket closed: the peer sees the end at once (the SQE held the
 * socket, and the free cancelled it). */
static void *read_briefly(void *arg)
{
    char c;
    ck_assert_int_eq(tern_stream_read(arg, &c, 1, dl_ms(20)), -ETIMEDOUT);
    return NULL;
}

IO_TEST(free_while_armed)
{
    for (int round = 0; round < 20; round++) {
        int c, sv;
        tcp_pair(&c, &sv);
        tern_stream *s = stream_make(sv, 0, 0);
        tern_task *t;
        ck_assert_int_eq(tern_spawn(read_briefly, s, &t), 0);
        ck_assert_int_eq(tern_join(t, NULL), 0);
        stream_drop(s);
        ck_assert_int_eq(tern_close(sv), 0);
        char buf[4];
        ck_assert_int_eq(tern_read(c, buf, sizeof buf, LONG_DL()), 0);
        ck_assert_int_eq(tern_close(c), 0);
    }
    return NULL;
}

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("stream");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, outside_task);
    tcase_add_loop_test(tc, free_counts_dropped, 0, 2);
    tcase_add_loop_test(tc, random_transfer, 0, 2);
    tcase_add_loop_test(tc, sides_used_by_two_tasks, 0, 2);
    tcase_add_loop_test(tc, lines_too_long, 0, 2);
    tcase_add_loop_test(tc, peek_and_consume, 0, 2);
    tcase_add_loop_test(tc, large_reads_bypass, 0, 2);
    tcase_add_loop_test(tc, deadline_mid_line, 0, 2);
    tcase_add_loop_test(tc, cancel_mid_line, 0, 2);
    tcase_add_loop_test(tc, peer_reset_mid_line, 0, 2);
    tcase_add_loop_test(tc, half_close_mid_line, 0, 2);
    tcase_add_loop_test(tc, deadline_mid_write, 0, 2);
    tcase_add_loop_test(tc, cancel_mid_write, 0, 2);
    tcase_add_loop_test(tc, write_to_closed_peer, 0, 2);
    tcase_add_loop_test(tc, slow_reader_does_not_starve_others, 0, 2);
    tcase_add_loop_test(tc, ring_runs_dry, 0, 2);
    tcase_add_loop_test(tc, free_while_armed, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(stream_suite());
}
