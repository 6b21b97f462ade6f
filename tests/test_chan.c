/* Channels and select: bounded, unbounded, rendezvous and oneshot channels,
 * every error path, FIFO order, element copies, cancellation racing
 * hand-offs, foreign threads meeting tasks, select (ready cases, waits,
 * deadlines, fairness, closed channels, cancel) and stress tests that count
 * every message: nothing lost, nothing received twice. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "sync/sync.h"

#define MS 1000000ull

/* ---- helpers ------------------------------------------------------------------ */

static tern_chan *mk(size_t esize, size_t cap)
{
    tern_chan *ch = NULL;
    int r = tern_chan_new(esize, cap, &ch);
    ck_assert_msg(r == 0, "tern_chan_new(%zu, %zu): %s", esize, cap, tern_strerror(r));
    ck_assert_ptr_nonnull(ch);
    return ch;
}

static tern_task *spawn(tern_runtime *rt, tern_task_fn fn, void *arg)
{
    tern_task *t = NULL;
    int r = tern_runtime_spawn(rt, fn, arg, &t);
    ck_assert_msg(r == 0, "spawn: %s", tern_strerror(r));
    return t;
}

static pthread_t thread(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    int r = pthread_create(&th, NULL, fn, arg);
    if (r != 0)
        ck_abort_msg("pthread_create: %d", r);
    return th;
}

static void join_thread(pthread_t th)
{
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}

/* Waits until n callers (tasks or foreign threads) are queued on ch for op
 * (TERN_SELECT_SEND or TERN_SELECT_RECV): a flag set before the call could
 * not say that, a thread is not seen by WAIT_PARKED, and the count also
 * fixes the order in which waiters are served. */
#define WAIT_QUEUED(ch, op, n) WAIT_UNTIL(tern__chan_waiting((ch), (op)) == (n), WAIT_MS)

/* Live tasks drop to 0 shortly after the last join. */
static void assert_no_live_tasks(tern_runtime *rt)
{
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
}

/* One channel operation, run by a task or a thread. */
typedef struct op {
    tern_chan *ch;
    long v;            /* what to send */
    long got;          /* what was received */
    uint64_t deadline; /* 0: the call without a deadline */
    int r;
} op;

static void *send_fn(void *p)
{
    op *o = p;
    o->r = o->deadline ? tern_chan_send_until(o->ch, &o->v, o->deadline)
                       : tern_chan_send(o->ch, &o->v);
    return NULL;
}

static void *recv_fn(void *p)
{
    op *o = p;
    o->r = o->deadline ? tern_chan_recv_until(o->ch, &o->got, o->deadline)
                       : tern_chan_recv(o->ch, &o->got);
    return NULL;
}

static op mkop(tern_chan *ch, long v)
{
    op o;
    memset(&o, 0, sizeof o);
    o.ch = ch;
    o.v = v;
    o.got = -12345;
    o.r = 99; /* never ran */
    return o;
}

/* ---- bad arguments ------------------------------------------------------------- */

START_TEST(bad_arguments)
{
    tern_chan *ch = NULL;
    ck_assert_int_eq(tern_chan_new(0, 1, &ch), -EINVAL);
    ck_assert_int_eq(tern_chan_new(65537, 1, &ch), -EINVAL);
    ck_assert_int_eq(tern_chan_new((size_t)-1, 1, &ch), -EINVAL);
    ck_assert_int_eq(tern_chan_new(4, 1, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_new(4, 0, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_new(4, TERN_CHAN_UNBOUNDED, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_new_oneshot(0, &ch), -EINVAL);
    ck_assert_int_eq(tern_chan_new_oneshot(65537, &ch), -EINVAL);
    ck_assert_int_eq(tern_chan_new_oneshot(4, NULL), -EINVAL);
    ck_assert_ptr_null(ch);

    /* the extremes of elem_size are accepted */
    tern_chan *one = mk(1, 0), *big = mk(65536, 2);
    ck_assert_uint_eq(tern_chan_cap(one), 0);
    ck_assert_uint_eq(tern_chan_cap(big), 2);
    tern_chan_release(one);
    tern_chan_release(big);

    /* NULL channel */
    long x = 7, y = 0;
    ck_assert_int_eq(tern_chan_send(NULL, &x), -EINVAL);
    ck_assert_int_eq(tern_chan_send_until(NULL, &x, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_chan_try_send(NULL, &x), -EINVAL);
    ck_assert_int_eq(tern_chan_recv(NULL, &y), -EINVAL);
    ck_assert_int_eq(tern_chan_recv_until(NULL, &y, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_chan_try_recv(NULL, &y), -EINVAL);
    ck_assert_int_eq(tern_chan_close(NULL), -EINVAL);
    ck_assert_uint_eq(tern_chan_len(NULL), 0);
    ck_assert_uint_eq(tern_chan_cap(NULL), 0);
    ck_assert_ptr_null(tern_chan_ref(NULL));
    tern_chan_release(NULL);

    /* NULL element: nothing is consumed or added */
    ch = mk(sizeof(long), 2);
    ck_assert_int_eq(tern_chan_try_send(ch, &x), 0);
    ck_assert_int_eq(tern_chan_send(ch, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_send_until(ch, NULL, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_chan_try_send(ch, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_recv(ch, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_recv_until(ch, NULL, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_chan_try_recv(ch, NULL), -EINVAL);
    ck_assert_uint_eq(tern_chan_len(ch), 1);

    /* references: ref returns the channel; it lives until the last release */
    ck_assert_ptr_eq(tern_chan_ref(ch), ch);
    ck_assert_ptr_eq(tern_chan_ref(ch), ch);
    tern_chan_release(ch);
    tern_chan_release(ch);
    ck_assert_uint_eq(tern_chan_len(ch), 1);
    ck_assert_int_eq(tern_chan_try_recv(ch, &y), 1);
    ck_assert_int_eq(y, 7);

    /* select: bad shapes are refused before anything is performed */
    ck_assert_int_eq(tern_chan_try_send(ch, &x), 0);
    tern_select_case c[65];
    memset(c, 0, sizeof c);
    long slot = -1;
    c[0] = (tern_select_case){.chan = ch, .op = TERN_SELECT_RECV, .elem = &slot};
    ck_assert_int_eq(tern_select(NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_try_select(NULL, 1), -EINVAL);
    ck_assert_int_eq(tern_select(c, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_try_select(c, 0), -EINVAL);
    ck_assert_int_eq(tern_select(c, 65, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_try_select(c, 65), -EINVAL);
    int bad_ops[] = {0, 3, -1, 42};
    for (size_t i = 0; i < sizeof bad_ops / sizeof *bad_ops; i++) {
        c[1] = (tern_select_case){.chan = ch, .op = bad_ops[i], .elem = &x};
        ck_assert_int_eq(tern_select(c, 2, tern_now() + MS), -EINVAL);
        ck_assert_int_eq(tern_try_select(c, 2), -EINVAL);
    }
    c[1] = (tern_select_case){.chan = ch, .op = TERN_SELECT_SEND, .elem = NULL};
    ck_assert_int_eq(tern_select(c, 2, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_try_select(c, 2), -EINVAL);
    c[1] = (tern_select_case){.chan = ch, .op = TERN_SELECT_RECV, .elem = NULL};
    ck_assert_int_eq(tern_select(c, 2, tern_now() + MS), -EINVAL);
    ck_assert_int_eq(tern_try_select(c, 2), -EINVAL);
    ck_assert_int_eq(slot, -1);
    ck_assert_uint_eq(tern_chan_len(ch), 1);

    /* 64 cases are allowed: the only live one (the last) fires */
    memset(c, 0, sizeof c);
    for (int i = 0; i < 63; i++)
        c[i] = (tern_select_case){.chan = NULL, .op = TERN_SELECT_RECV, .elem = &y};
    c[63] = (tern_select_case){
        .chan = ch, .op = TERN_SELECT_RECV, .elem = &slot, .result = 77};
    ck_assert_int_eq(tern_select(c, 64, 0), 63);
    ck_assert_int_eq(c[63].result, 1);
    ck_assert_int_eq(slot, 7);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    tern_chan_release(ch);
}
END_TEST

/* ---- bounded channels -------------------------------------------------------------- */

static void *bounded_body(void *arg)
{
    (void)arg;
    tern_chan *ch = mk(sizeof(long), 4);
    long v, got = -1;
    ck_assert_uint_eq(tern_chan_cap(ch), 4);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);
    ck_assert_int_eq(got, -1);
    for (v = 0; v < 4; v++) {
        ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
        ck_assert_uint_eq(tern_chan_len(ch), (size_t)v + 1);
    }
    v = 4;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EAGAIN);
    uint64_t dl = tern_now() + 20 * MS;
    ck_assert_int_eq(tern_chan_send_until(ch, &v, dl), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), dl);
    ck_assert_int_eq(tern_chan_send_until(ch, &v, 1), -ETIMEDOUT); /* long past */
    ck_assert_uint_eq(tern_chan_len(ch), 4);
    /* each way of receiving, oldest first */
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
    ck_assert_int_eq(got, 1);
    ck_assert_int_eq(tern_chan_recv_until(ch, &got, tern_now() + 20 * MS), 1);
    ck_assert_int_eq(got, 2);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 3);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    got = -1;
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);
    dl = tern_now() + 20 * MS;
    ck_assert_int_eq(tern_chan_recv_until(ch, &got, dl), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), dl);
    ck_assert_int_eq(got, -1);
    /* the timed-out waiters are gone: a send is buffered, not handed to
     * a dead receiver */
    v = 100;
    ck_assert_int_eq(tern_chan_send_until(ch, &v, tern_now() + 20 * MS), 0);
    ck_assert_uint_eq(tern_chan_len(ch), 1);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 100);

    /* the ring wraps around many times and keeps order */
    long next_send = 0, next_recv = 0;
    for (int round = 0; round < 1000; round++) {
        int k = 1 + round % 4;
        for (int i = 0; i < k; i++, next_send++)
            ck_assert_int_eq(tern_chan_send(ch, &next_send), 0);
        ck_assert_uint_eq(tern_chan_len(ch), (size_t)k);
        for (int i = 0; i < k; i++, next_recv++) {
            ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
            ck_assert_int_eq(got, next_recv);
        }
    }

    /* close: receivers drain, then see the end; senders get -EPIPE */
    v = 10;
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    v = 11;
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_chan_close(ch), -EALREADY);
    v = 12;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EPIPE);
    ck_assert_int_eq(tern_chan_send(ch, &v), -EPIPE);
    ck_assert_int_eq(tern_chan_send_until(ch, &v, tern_now() + 20 * MS), -EPIPE);
    ck_assert_uint_eq(tern_chan_len(ch), 2);
    ck_assert_uint_eq(tern_chan_cap(ch), 4);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 10);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
    ck_assert_int_eq(got, 11);
    got = -1;
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 0);
    ck_assert_int_eq(tern_chan_recv_until(ch, &got, tern_now() + 20 * MS), 0);
    ck_assert_int_eq(got, -1);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    tern_chan_release(ch);
    return (void *)(uintptr_t)0x600d;
}

/* _i == 0: a plain thread with no runtime at all; 1: a task. */
START_TEST(bounded_basic)
{
    if (_i == 0) {
        ck_assert_ptr_eq(bounded_body(NULL), (void *)(uintptr_t)0x600d);
        return;
    }
    tern_runtime *rt = rt_new(2);
    void *res = NULL;
    ck_assert_int_eq(tern_block_on(rt, bounded_body, NULL, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)0x600d);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Waiting senders and receivers (tasks, or threads with _i == 1) are woken
 * by the other side and served first come, first served. */
START_TEST(bounded_waiters_fifo)
{
    int fds = fd_count();
    tern_runtime *rt = rt_new(2);
    int threads = _i;
    tern_chan *ch = mk(sizeof(long), 1);
    long v = 10, got;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);

    /* a sender waits while full, and finishes once a slot frees */
    op s = mkop(ch, 11);
    tern_task *t = NULL;
    pthread_t th;
    /* set and used only with threads; this quiets -Wmaybe-uninitialized */
    memset(&th, 0, sizeof th);
    if (threads)
        th = thread(send_fn, &s);
    else
        t = spawn(rt, send_fn, &s);
    WAIT_QUEUED(ch, TERN_SELECT_SEND, 1);
    if (!threads)
        ck_assert_int_eq(tern_task_done(t), 0);
    ck_assert_int_eq(s.r, 99);
    ck_assert_uint_eq(tern_chan_len(ch), 1);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 10);
    if (threads)
        join_thread(th);
    else
        ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(s.r, 0);
    ck_assert_uint_eq(tern_chan_len(ch), 1);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 11);

    /* a receiver waits while empty and gets the next send directly */
    op r = mkop(ch, 0);
    if (threads)
        th = thread(recv_fn, &r);
    else
        t = spawn(rt, recv_fn, &r);
    WAIT_QUEUED(ch, TERN_SELECT_RECV, 1);
    ck_assert_int_eq(r.r, 99);
    v = 12;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
    if (threads)
        join_thread(th);
    else
        ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 1);
    ck_assert_int_eq(r.got, 12);
    ck_assert_uint_eq(tern_chan_len(ch), 0);

    /* four senders queue up behind a full channel, in a known order */
    enum { K = 4 };
    op ss[K];
    tern_task *ts[K];
    pthread_t ths[K];
    v = 0;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
    for (int i = 0; i < K; i++) {
        ss[i] = mkop(ch, i + 1);
        if (threads)
            ths[i] = thread(send_fn, &ss[i]);
        else
            ts[i] = spawn(rt, send_fn, &ss[i]);
        WAIT_QUEUED(ch, TERN_SELECT_SEND, (size_t)i + 1); /* queued behind the others */
    }
    for (long i = 0; i <= K; i++) {
        ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
        ck_assert_int_eq(got, i);
    }
    for (int i = 0; i < K; i++) {
        if (threads)
            join_thread(ths[i]);
        else
            ck_assert_int_eq(tern_join(ts[i], NULL), 0);
        ck_assert_int_eq(ss[i].r, 0);
    }
    ck_assert_uint_eq(tern_chan_len(ch), 0);

    /* four receivers queue up on an empty channel, served in order */
    op rs[K];
    for (int i = 0; i < K; i++) {
        rs[i] = mkop(ch, 0);
        if (threads)
            ths[i] = thread(recv_fn, &rs[i]);
        else
            ts[i] = spawn(rt, recv_fn, &rs[i]);
        WAIT_QUEUED(ch, TERN_SELECT_RECV, (size_t)i + 1);
    }
    for (long i = 0; i < K; i++)
        ck_assert_int_eq(tern_chan_send(ch, &i), 0);
    for (int i = 0; i < K; i++) {
        if (threads)
            join_thread(ths[i]);
        else
            ck_assert_int_eq(tern_join(ts[i], NULL), 0);
        ck_assert_int_eq(rs[i].r, 1);
        ck_assert_int_eq(rs[i].got, i);
    }

    /* close wakes waiting receivers with the end of the stream, and
     * waiting senders with -EPIPE (on another, full channel) */
    tern_chan *full = mk(sizeof(long), 1);
    ck_assert_int_eq(tern_chan_try_send(full, &v), 0);
    for (int i = 0; i < K; i++) {
        rs[i] = mkop(ch, 0);
        ss[i] = mkop(full, 100 + i);
        if (threads) {
            ths[i] = thread(i % 2 ? recv_fn : send_fn,
                            i % 2 ? (void *)&rs[i] : (void *)&ss[i]);
        } else {
            ts[i] = spawn(rt, i % 2 ? recv_fn : send_fn,
                          i % 2 ? (void *)&rs[i] : (void *)&ss[i]);
        }
    }
    WAIT_QUEUED(ch, TERN_SELECT_RECV, K / 2);
    WAIT_QUEUED(full, TERN_SELECT_SEND, K / 2);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_chan_close(full), 0);
    for (int i = 0; i < K; i++) {
        if (threads)
            join_thread(ths[i]);
        else
            ck_assert_int_eq(tern_join(ts[i], NULL), 0);
        if (i % 2) {
            ck_assert_int_eq(rs[i].r, 0);
            ck_assert_int_eq(rs[i].got, -12345);
        } else {
            ck_assert_int_eq(ss[i].r, -EPIPE);
        }
    }
    /* the blocked senders' messages were not added */
    ck_assert_uint_eq(tern_chan_len(full), 1);
    ck_assert_int_eq(tern_chan_recv(full, &got), 1);
    ck_assert_int_eq(got, v);
    ck_assert_int_eq(tern_chan_recv(full, &got), 0);
    tern_chan_release(full);
    tern_chan_release(ch);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}
END_TEST

/* ---- unbounded channels ----------------------------------------------------------- */

static void *unbounded_body(void *arg)
{
    (void)arg;
    tern_chan *ch = mk(sizeof(uint32_t), TERN_CHAN_UNBOUNDED);
    ck_assert_uint_eq(tern_chan_cap(ch), TERN_CHAN_UNBOUNDED);
    uint32_t next_send = 0, next_recv = 0, got;
    /* move the ring's head first so that the first growth wraps */
    for (int i = 0; i < 10; i++, next_send++)
        ck_assert_int_eq(tern_chan_try_send(ch, &next_send), 0);
    for (int i = 0; i < 5; i++, next_recv++) {
        ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
        ck_assert_uint_eq(got, next_recv);
    }
    for (int i = 0; i < 100; i++, next_send++)
        ck_assert_int_eq(tern_chan_try_send(ch, &next_send), 0);
    ck_assert_uint_eq(tern_chan_len(ch), 105);
    for (int i = 0; i < 50; i++, next_recv++) {
        ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
        ck_assert_uint_eq(got, next_recv);
    }
    /* many thousands, with every kind of send; none ever waits */
    enum { N = 60000 };
    for (int i = 0; i < N; i++, next_send++) {
        int r = i % 3 == 0   ? tern_chan_try_send(ch, &next_send)
                : i % 3 == 1 ? tern_chan_send(ch, &next_send)
                             : tern_chan_send_until(ch, &next_send, 1);
        ck_assert_int_eq(r, 0);
    }
    ck_assert_uint_eq(tern_chan_len(ch), (size_t)(next_send - next_recv));
    ck_assert_uint_eq(tern_chan_cap(ch), TERN_CHAN_UNBOUNDED);
    /* interleaved: wrap the grown ring around */
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
        ck_assert_uint_eq(got, next_recv);
        next_recv++;
        ck_assert_int_eq(tern_chan_try_send(ch, &next_send), 0);
        next_send++;
    }
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_chan_try_send(ch, &next_send), -EPIPE);
    while (next_recv < next_send) {
        ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
        ck_assert_uint_eq(got, next_recv);
        next_recv++;
    }
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    tern_chan_release(ch);

    /* released with messages still inside: freed (ASan's leak check) */
    ch = mk(sizeof(uint32_t), TERN_CHAN_UNBOUNDED);
    for (uint32_t i = 0; i < 1000; i++)
        ck_assert_int_eq(tern_chan_send(ch, &i), 0);
    tern_chan_release(ch);
    return (void *)(uintptr_t)0x600d;
}

START_TEST(unbounded_grows_in_order)
{
    if (_i == 0) {
        ck_assert_ptr_eq(unbounded_body(NULL), (void *)(uintptr_t)0x600d);
        return;
    }
    tern_runtime *rt = rt_new(2);
    void *res = NULL;
    ck_assert_int_eq(tern_block_on(rt, unbounded_body, NULL, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)0x600d);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- rendezvous channels ----------------------------------------------------------- */

static tern_chan *pp_a, *pp_b;
static long pp_n;

static void *ping(void *arg)
{
    (void)arg;
    long v = 0;
    for (long i = 0; i < pp_n; i++) {
        ck_assert_int_eq(tern_chan_send(pp_a, &v), 0);
        ck_assert_int_eq(tern_chan_recv(pp_b, &v), 1);
        ck_assert_int_eq(v, 2 * i + 2);
    }
    return (void *)v;
}

static void *pong(void *arg)
{
    (void)arg;
    long v;
    int r;
    long n = 0;
    while ((r = tern_chan_recv(pp_a, &v)) == 1) {
        ck_assert_int_eq(v, 2 * n);
        v++;
        n++;
        ck_assert_int_eq(tern_chan_send(pp_b, &(long){v + 1}), 0);
    }
    ck_assert_int_eq(r, 0);
    return (void *)n;
}

START_TEST(rendezvous)
{
    tern_chan *ch = mk(sizeof(long), 0);
    long v = 5, got = -1;
    ck_assert_uint_eq(tern_chan_cap(ch), 0);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    /* nobody on the other side: nothing can happen */
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EAGAIN);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);
    uint64_t dl = tern_now() + 20 * MS;
    ck_assert_int_eq(tern_chan_send_until(ch, &v, dl), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), dl);
    ck_assert_int_eq(tern_chan_recv_until(ch, &got, tern_now() + 20 * MS), -ETIMEDOUT);
    ck_assert_int_eq(got, -1);
    ck_assert_uint_eq(tern_chan_len(ch), 0);

    tern_runtime *rt = rt_new(2);
    /* a task receiver waits; a try_send succeeds only once it does */
    op r = mkop(ch, 0);
    tern_task *t = spawn(rt, recv_fn, &r);
    WAIT_PARKED(t, TERN__W_CHAN_RECV);
    v = 6;
    ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 1);
    ck_assert_int_eq(r.got, 6);
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EAGAIN); /* receiver gone */

    /* a task sender waits for a receiver: nothing is buffered */
    op s = mkop(ch, 77);
    t = spawn(rt, send_fn, &s);
    WAIT_PARKED(t, TERN__W_CHAN_SEND);
    ck_assert_int_eq(tern_task_done(t), 0);
    ck_assert_int_eq(s.r, 99);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
    ck_assert_int_eq(got, 77);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(s.r, 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);

    /* this (foreign) thread blocks in send until a task receives */
    r = mkop(ch, 0);
    t = spawn(rt, recv_fn, &r);
    v = 8;
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 1);
    ck_assert_int_eq(r.got, 8);
    /* ...and in recv until a task sends */
    s = mkop(ch, 9);
    t = spawn(rt, send_fn, &s);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 9);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(s.r, 0);

    /* close settles waiting senders (-EPIPE) and receivers (end) */
    s = mkop(ch, 10);
    t = spawn(rt, send_fn, &s);
    WAIT_PARKED(t, TERN__W_CHAN_SEND);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(s.r, -EPIPE);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    tern_chan_release(ch);
    ch = mk(sizeof(long), 0);
    r = mkop(ch, 0);
    t = spawn(rt, recv_fn, &r);
    WAIT_PARKED(t, TERN__W_CHAN_RECV);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 0);
    tern_chan_release(ch);

    /* ping-pong between two tasks over two rendezvous channels */
    pp_a = mk(sizeof(long), 0);
    pp_b = mk(sizeof(long), 0);
    pp_n = SCALED(20000);
    tern_task *a = spawn(rt, ping, NULL), *b = spawn(rt, pong, NULL);
    void *ra, *rb;
    ck_assert_int_eq(tern_join(a, &ra), 0);
    ck_assert_int_eq((long)ra, 2 * pp_n);
    ck_assert_int_eq(tern_chan_close(pp_a), 0);
    ck_assert_int_eq(tern_join(b, &rb), 0);
    ck_assert_int_eq((long)rb, pp_n);
    tern_chan_release(pp_a);
    tern_chan_release(pp_b);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- oneshot channels -------------------------------------------------------------- */

static tern_chan *os_ch;
static _Atomic int os_go;

static void *oneshot_racer(void *arg)
{
    while (!atomic_load(&os_go))
        tern_yield();
    long v = (long)(intptr_t)arg;
    return (void *)(intptr_t)tern_chan_send(os_ch, &v);
}

START_TEST(oneshot)
{
    tern_chan *ch = NULL;
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    ck_assert_uint_eq(tern_chan_cap(ch), 1);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    long v = 1, got = -1;
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    ck_assert_uint_eq(tern_chan_len(ch), 1);
    v = 2;
    ck_assert_int_eq(tern_chan_send(ch, &v), -EPIPE);
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EPIPE);
    ck_assert_int_eq(tern_chan_send_until(ch, &v, tern_now() + 20 * MS), -EPIPE);
    ck_assert_int_eq(tern_chan_close(ch), -EALREADY); /* it closed itself */
    ck_assert_int_eq(tern_chan_recv(ch, &got), 1);
    ck_assert_int_eq(got, 1);
    got = -1;
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 0);
    ck_assert_int_eq(got, -1);
    tern_chan_release(ch);

    /* try_send works the same */
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
    ck_assert_int_eq(tern_chan_try_send(ch, &v), -EPIPE);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
    ck_assert_int_eq(got, 2);
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 0);
    tern_chan_release(ch);

    /* closed without a value: "no value" */
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    ck_assert_int_eq(tern_chan_send(ch, &v), -EPIPE);
    tern_chan_release(ch);

    tern_runtime *rt = rt_new(2);
    /* a waiting receiver gets the value, then the end */
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    op r = mkop(ch, 0);
    tern_task *t = spawn(rt, recv_fn, &r);
    WAIT_PARKED(t, TERN__W_CHAN_RECV);
    v = 42;
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 1);
    ck_assert_int_eq(r.got, 42);
    ck_assert_uint_eq(tern_chan_len(ch), 0);
    ck_assert_int_eq(tern_chan_recv(ch, &got), 0);
    ck_assert_int_eq(tern_chan_send(ch, &v), -EPIPE);
    tern_chan_release(ch);

    /* two waiting receivers: one gets the value, the other the end */
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    op r1 = mkop(ch, 0), r2 = mkop(ch, 0);
    tern_task *t1 = spawn(rt, recv_fn, &r1);
    WAIT_PARKED(t1, TERN__W_CHAN_RECV); /* first in line: it gets the value */
    tern_task *t2 = spawn(rt, recv_fn, &r2);
    WAIT_PARKED(t2, TERN__W_CHAN_RECV);
    v = 43;
    ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    ck_assert_int_eq(tern_join(t1, NULL), 0);
    ck_assert_int_eq(tern_join(t2, NULL), 0);
    ck_assert_int_eq(r1.r, 1);
    ck_assert_int_eq(r1.got, 43);
    ck_assert_int_eq(r2.r, 0);
    tern_chan_release(ch);

    /* a waiting receiver, then a close without a value */
    ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &ch), 0);
    r = mkop(ch, 0);
    t = spawn(rt, recv_fn, &r);
    WAIT_PARKED(t, TERN__W_CHAN_RECV);
    ck_assert_int_eq(tern_chan_close(ch), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(r.r, 0);
    tern_chan_release(ch);

    /* racing senders: exactly one wins, and its value is the one */
    enum { K = 4 };
    for (int it = 0; it < SCALED(300); it++) {
        ck_assert_int_eq(tern_chan_new_oneshot(sizeof(long), &os_ch), 0);
        atomic_store(&os_go, 0);
        tern_task *ts[K];
        for (int i = 0; i < K; i++)
            ts[i] = spawn(rt, oneshot_racer, (void *)(intptr_t)(1000 + i));
        atomic_store(&os_go, 1);
        int winners = 0, winner = -1;
        for (int i = 0; i < K; i++) {
            void *res;
            ck_assert_int_eq(tern_join(ts[i], &res), 0);
            int rr = (int)(intptr_t)res;
            ck_assert_msg(rr == 0 || rr == -EPIPE, "oneshot send: %d", rr);
            if (rr == 0) {
                winners++;
                winner = i;
            }
        }
        ck_assert_int_eq(winners, 1);
        ck_assert_int_eq(tern_chan_recv(os_ch, &got), 1);
        ck_assert_int_eq(got, 1000 + winner);
        ck_assert_int_eq(tern_chan_recv(os_ch, &got), 0);
        tern_chan_release(os_ch);
    }
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- order and element copies ------------------------------------------------------ */

static const size_t caps[] = {0, 1, 8, 64, TERN_CHAN_UNBOUNDED};
#define NCAPS ((int)(sizeof caps / sizeof *caps))

typedef struct fifo_msg {
    uint32_t sender, seq;
} fifo_msg;

static tern_chan *fifo_ch;
static uint32_t fifo_n;

static void *fifo_sender(void *arg)
{
    fifo_msg m = {(uint32_t)(uintptr_t)arg, 0};
    for (; m.seq < fifo_n; m.seq++)
        ck_assert_int_eq(tern_chan_send(fifo_ch, &m), 0);
    return NULL;
}

static void *fifo_receiver(void *arg)
{
    uint32_t *next = arg;
    fifo_msg m;
    int r;
    while ((r = tern_chan_recv(fifo_ch, &m)) == 1) {
        ck_assert_uint_lt(m.sender, 4);
        ck_assert_uint_eq(m.seq, next[m.sender]);
        next[m.sender]++;
    }
    ck_assert_int_eq(r, 0);
    return NULL;
}

START_TEST(fifo_per_sender)
{
    size_t cap = caps[_i];
    fifo_ch = mk(sizeof(fifo_msg), cap);
    fifo_n = SCALED(50000);
    uint32_t next[4] = {0};
    tern_runtime *rt = rt_new(3);
    tern_task *rcv = spawn(rt, fifo_receiver, next), *snd[4];
    for (uintptr_t i = 0; i < 4; i++)
        snd[i] = spawn(rt, fifo_sender, (void *)i);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tern_join(snd[i], NULL), 0);
    ck_assert_int_eq(tern_chan_close(fifo_ch), 0);
    ck_assert_int_eq(tern_join(rcv, NULL), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(next[i], fifo_n);
    tern_chan_release(fifo_ch);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

typedef struct big_msg {
    uint32_t seq;
    unsigned char pad[96];
} big_msg;
_Static_assert(sizeof(big_msg) == 100, "100-byte messages");

static void big_fill(big_msg *m, uint32_t seq)
{
    m->seq = seq;
    for (int j = 0; j < 96; j++)
        m->pad[j] = (unsigned char)(seq * 31u + (unsigned)j * 7u + 1u);
}

static tern_chan *big_ch;
static uint32_t big_n;

static void *big_sender(void *arg)
{
    (void)arg;
    big_msg m;
    for (uint32_t i = 0; i < big_n; i++) {
        big_fill(&m, i);
        ck_assert_int_eq(tern_chan_send(big_ch, &m), 0);
        memset(&m, 0xee, sizeof m); /* the channel must have copied it */
    }
    return NULL;
}

static void *big_receiver(void *arg)
{
    (void)arg;
    big_msg m, want;
    uint32_t n = 0;
    int r;
    memset(&m, 0, sizeof m);
    while ((r = tern_chan_recv(big_ch, &m)) == 1) {
        big_fill(&want, n);
        ck_assert_msg(memcmp(&m, &want, sizeof m) == 0, "message %u corrupted", n);
        memset(&m, 0, sizeof m);
        n++;
    }
    ck_assert_int_eq(r, 0);
    return (void *)(uintptr_t)n;
}

/* 64 KiB elements would not fit on a fiber stack: heap buffers, threads. */
static tern_chan *huge_ch;
enum { HUGE = 65536, HUGE_N = 40 };

static void *huge_sender(void *arg)
{
    (void)arg;
    unsigned char *b = malloc(HUGE);
    for (int i = 0; i < HUGE_N; i++) {
        for (int j = 0; j < HUGE; j++)
            b[j] = (unsigned char)(i * 13 + j * 5 + (j >> 8));
        ck_assert_int_eq(tern_chan_send(huge_ch, b), 0);
    }
    free(b);
    return NULL;
}

START_TEST(large_elements_copied)
{
    size_t cap = caps[_i];
    big_ch = mk(sizeof(big_msg), cap);
    big_n = SCALED(20000);
    tern_runtime *rt = rt_new(2);
    tern_task *rcv = spawn(rt, big_receiver, NULL), *snd = spawn(rt, big_sender, NULL);
    ck_assert_int_eq(tern_join(snd, NULL), 0);
    ck_assert_int_eq(tern_chan_close(big_ch), 0);
    void *n;
    ck_assert_int_eq(tern_join(rcv, &n), 0);
    ck_assert_uint_eq((uintptr_t)n, big_n);
    tern_chan_release(big_ch);

    /* the largest elements, between a task-free thread and this one */
    huge_ch = mk(HUGE, cap);
    pthread_t th = thread(huge_sender, NULL);
    unsigned char *b = malloc(HUGE);
    for (int i = 0; i < HUGE_N; i++) {
        memset(b, 0, HUGE);
        ck_assert_int_eq(tern_chan_recv(huge_ch, b), 1);
        for (int j = 0; j < HUGE; j++)
            if (b[j] != (unsigned char)(i * 13 + j * 5 + (j >> 8)))
                ck_abort_msg("64 KiB message %d differs at byte %d", i, j);
    }
    free(b);
    join_thread(th);
    ck_assert_uint_eq(tern_chan_len(huge_ch), 0);
    tern_chan_release(huge_ch);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- MPMC stress, counted ---------------------------------------------------------- */

typedef struct stress {
    tern_chan *ch;
    uint32_t np, nc, n;
    _Atomic uint32_t next_p;
    _Atomic unsigned char *counts;
    uint32_t *sent;            /* per producer: how many sends returned 0 */
    _Atomic uint64_t progress; /* sends that returned 0, so far */
    _Atomic uint64_t received, sum;
    int stop_on_epipe;
} stress;

static stress S;

static void stress_init(size_t cap, uint32_t np, uint32_t nc, uint32_t n)
{
    memset(&S, 0, sizeof S);
    S.ch = mk(sizeof(uint32_t), cap);
    S.np = np;
    S.nc = nc;
    S.n = n;
    S.counts = calloc((size_t)np * n, 1);
    S.sent = calloc(np, sizeof *S.sent);
    ck_assert_ptr_nonnull(S.counts);
}

static void *stress_producer(void *arg)
{
    (void)arg;
    uint32_t p = atomic_fetch_add(&S.next_p, 1);
    uint32_t i;
    for (i = 0; i < S.n; i++) {
        uint32_t id = p * S.n + i;
        int r = tern_chan_send(S.ch, &id);
        if (r == -EPIPE && S.stop_on_epipe)
            break;
        ck_assert_int_eq(r, 0);
        atomic_fetch_add_explicit(&S.progress, 1, memory_order_relaxed);
    }
    S.sent[p] = i;
    return NULL;
}

static void *stress_consumer(void *arg)
{
    (void)arg;
    uint32_t id;
    uint64_t n = 0, sum = 0;
    int r;
    while ((r = tern_chan_recv(S.ch, &id)) == 1) {
        ck_assert_uint_lt(id, S.np * S.n);
        ck_assert_int_eq(atomic_fetch_add(&S.counts[id], 1), 0);
        n++;
        sum += id;
    }
    ck_assert_int_eq(r, 0);
    atomic_fetch_add(&S.received, n);
    atomic_fetch_add(&S.sum, sum);
    return NULL;
}

static void stress_check(void)
{
    uint64_t total = 0, sum = 0;
    for (uint32_t p = 0; p < S.np; p++) {
        for (uint32_t i = 0; i < S.n; i++) {
            uint32_t id = p * S.n + i;
            ck_assert_msg(S.counts[id] == (i < S.sent[p] ? 1 : 0),
                          "message %u (producer %u, #%u of %u sent) received %u times",
                          id, p, i, S.sent[p], (unsigned)S.counts[id]);
            if (i < S.sent[p])
                sum += id;
        }
        total += S.sent[p];
    }
    ck_assert_uint_eq(atomic_load(&S.received), total);
    ck_assert_uint_eq(atomic_load(&S.sum), sum);
    ck_assert_uint_eq(tern_chan_len(S.ch), 0);
    free((void *)S.counts);
    free(S.sent);
    tern_chan_release(S.ch);
}

START_TEST(stress_mpmc)
{
    int fds = fd_count();
    stress_init(caps[_i], 8, 8, SCALED(100000));
    tern_runtime *rt = rt_new(4);
    tern_task *ts[16];
    for (int i = 0; i < 8; i++)
        ts[i] = spawn(rt, stress_consumer, NULL);
    for (int i = 8; i < 16; i++)
        ts[i] = spawn(rt, stress_producer, NULL);
    for (int i = 8; i < 16; i++)
        ck_assert_int_eq(tern_join(ts[i], NULL), 0);
    for (uint32_t p = 0; p < 8; p++)
        ck_assert_uint_eq(S.sent[p], S.n);
    ck_assert_int_eq(tern_chan_close(S.ch), 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(tern_join(ts[i], NULL), 0);
    stress_check();
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}
END_TEST

/* Closed in the middle: producers stop at -EPIPE and say how far they got;
 * consumers drain to the end; sent == received, message by message. */
START_TEST(stress_close_midway)
{
    stress_init(caps[_i], 8, 8, SCALED(100000));
    S.stop_on_epipe = 1;
    tern_runtime *rt = rt_new(4);
    tern_task *ts[16];
    for (int i = 0; i < 8; i++)
        ts[i] = spawn(rt, stress_consumer, NULL);
    for (int i = 8; i < 16; i++)
        ts[i] = spawn(rt, stress_producer, NULL);
    uint64_t total = (uint64_t)S.np * S.n;
    for (int i = 0; i < 100000 && atomic_load(&S.progress) < total / 4; i++)
        usleep(50);
    ck_assert_int_eq(tern_chan_close(S.ch), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_int_eq(tern_join(ts[i], NULL), 0);
    uint64_t sent = 0;
    for (uint32_t p = 0; p < S.np; p++)
        sent += S.sent[p];
    ck_assert_uint_eq(sent, atomic_load(&S.progress));
    stress_check();
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Foreign pthreads and tasks as senders and receivers of one channel. */
START_TEST(foreign_threads_mix)
{
    stress_init(caps[_i], 4, 4, SCALED(50000));
    tern_runtime *rt = rt_new(2);
    pthread_t th[4];
    tern_task *ts[4];
    th[0] = thread(stress_consumer, NULL);
    th[1] = thread(stress_consumer, NULL);
    ts[0] = spawn(rt, stress_consumer, NULL);
    ts[1] = spawn(rt, stress_consumer, NULL);
    th[2] = thread(stress_producer, NULL);
    ts[2] = spawn(rt, stress_producer, NULL);
    th[3] = thread(stress_producer, NULL);
    ts[3] = spawn(rt, stress_producer, NULL);
    join_thread(th[2]);
    join_thread(th[3]);
    ck_assert_int_eq(tern_join(ts[2], NULL), 0);
    ck_assert_int_eq(tern_join(ts[3], NULL), 0);
    ck_assert_int_eq(tern_chan_close(S.ch), 0);
    join_thread(th[0]);
    join_thread(th[1]);
    ck_assert_int_eq(tern_join(ts[0], NULL), 0);
    ck_assert_int_eq(tern_join(ts[1], NULL), 0);
    for (uint32_t p = 0; p < 4; p++)
        ck_assert_uint_eq(S.sent[p], S.n);
    stress_check();
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- cancellation ------------------------------------------------------------------ */

/* A waiting receiver or sender that is cancelled returns -ECANCELED and
 * leaves nothing behind. */
START_TEST(cancel_waiting)
{
    tern_runtime *rt = rt_new(2);
    size_t cap = _i ? 1 : 0;
    tern_chan *ch = mk(sizeof(long), cap);
    long v, got;

    /* receiver, without and with a deadline */
    for (int timed = 0; timed < 2; timed++) {
        op r = mkop(ch, 0);
        /* far off: the cancel ends the wait, however slow the start */
        r.deadline = timed ? tern_now() + 2ull * WAIT_MS * MS : 0;
        tern_task *t = spawn(rt, recv_fn, &r);
        WAIT_PARKED(t, TERN__W_CHAN_RECV);
        ck_assert_int_eq(tern_task_done(t), 0);
        ck_assert_int_eq(tern_task_cancel(t), 0);
        ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
        ck_assert_int_eq(r.r, -ECANCELED);
        ck_assert_int_eq(r.got, -12345);
        /* its waiter is gone: nothing is handed to it */
        v = 5;
        if (cap == 0) {
            ck_assert_int_eq(tern_chan_try_send(ch, &v), -EAGAIN);
        } else {
            ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
            ck_assert_uint_eq(tern_chan_len(ch), 1);
            ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
            ck_assert_int_eq(got, 5);
        }
    }

    /* sender (the channel is full, or has no receiver) */
    v = 1;
    if (cap)
        ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
    for (int timed = 0; timed < 2; timed++) {
        op s = mkop(ch, 2);
        s.deadline = timed ? tern_now() + 2ull * WAIT_MS * MS : 0;
        tern_task *t = spawn(rt, send_fn, &s);
        WAIT_PARKED(t, TERN__W_CHAN_SEND);
        ck_assert_int_eq(tern_task_done(t), 0);
        ck_assert_int_eq(tern_task_cancel(t), 0);
        ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
        ck_assert_int_eq(s.r, -ECANCELED);
    }
    /* the cancelled senders' messages are not in the channel */
    if (cap) {
        ck_assert_uint_eq(tern_chan_len(ch), 1);
        ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
        ck_assert_int_eq(got, 1);
    }
    ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);

    /* a task cancelled before it waits gets -ECANCELED without waiting,
     * but a message that is ready needs no wait */
    ck_assert_int_eq(tern_chan_close(ch), 0);
    tern_chan_release(ch);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Receivers cancelled while senders hand them messages: a message goes
 * either to the cancelled receiver (its recv returned 1) or stays for
 * someone else; nothing is lost or duplicated. */
enum { CR = 4 };
typedef struct cancel_round {
    tern_chan *ch;
    op ops[CR];
    _Atomic int stop;
    long base;
    _Atomic int sent; /* try_sends that returned 0 */
    int send_side;
} cancel_round;

static void *cancel_round_sender(void *arg)
{
    cancel_round *c = arg;
    for (long i = 0; i < CR; i++) {
        long v = c->base + i;
        int r;
        while ((r = tern_chan_try_send(c->ch, &v)) == -EAGAIN) {
            if (atomic_load(&c->stop))
                return NULL;
            tern_yield();
        }
        ck_assert_int_eq(r, 0);
        c->sent++;
    }
    return NULL;
}

static void *cancel_round_receiver(void *arg)
{
    cancel_round *c = arg;
    long v;
    int r;
    while ((r = tern_chan_try_recv(c->ch, &v)) == -EAGAIN) {
        if (atomic_load(&c->stop))
            return NULL;
        tern_yield();
    }
    ck_assert_int_eq(r, 1);
    c->sent++; /* here: messages received from cancelled senders */
    c->ops[v - c->base].got = v;
    return NULL;
}

/* Varies the moment of a round's cancels by what has happened, not by
 * time: waits until *count reaches k (it can: nothing is cancelled yet),
 * then a little longer. */
static void cancels_after(_Atomic int *count, int k, int it)
{
    uint64_t end = tern_now() + (uint64_t)WAIT_MS * MS;
    while (atomic_load(count) < k) {
        ck_assert_msg(tern_now() < end, "round %d: %d of %d", it, atomic_load(count), k);
        sched_yield(); /* polling: the tasks need the CPU */
    }
    spin_units((unsigned)(it % 16));
}

/* _i: bit 0 buffered (capacity 2) or rendezvous; bit 1 the receivers wait
 * in tern_select instead of tern_chan_recv. */
static void *select_recv2_fn(void *p);

START_TEST(cancel_recv_races_send)
{
    tern_runtime *rt = rt_new(3);
    size_t cap = (_i & 1) ? 2 : 0;
    tern_task_fn recv_or_select = (_i & 2) ? select_recv2_fn : recv_fn;
    tern_chan *ch = mk(sizeof(long), cap);
    int iters = SCALED(3000);
    long got_by_cancelled = 0, cancelled = 0;
    /* Past iters, rounds go on (for at most WAIT_MS) until a cancel has won
     * at least once: on a loaded machine the cancels can come late in
     * every one of the first rounds. */
    uint64_t more_until = UINT64_MAX;
    for (int it = 0; it < iters || (cancelled == 0 && tern_now() < more_until); it++) {
        if (it == iters)
            more_until = tern_now() + (uint64_t)WAIT_MS * MS;
        cancel_round c;
        memset(&c, 0, sizeof c);
        c.ch = ch;
        c.base = (long)it * CR;
        tern_task *rt_[CR];
        for (int i = 0; i < CR; i++) {
            c.ops[i] = mkop(ch, 0);
            rt_[i] = spawn(rt, recv_or_select, &c.ops[i]);
        }
        tern_task *snd = spawn(rt, cancel_round_sender, &c);
        /* after 0..CR messages were sent, so both outcomes come up */
        cancels_after(&c.sent, it % (CR + 1), it);
        for (int i = 0; i < CR; i++) {
            int cr = tern_task_cancel(rt_[(i + it) % CR]);
            ck_assert(cr == 0 || cr == -EALREADY);
        }
        for (int i = 0; i < CR; i++)
            tern_join(rt_[i], NULL);
        atomic_store(&c.stop, 1);
        ck_assert_int_eq(tern_join(snd, NULL), 0);
        /* count: each sent value exactly once, by a receiver or left */
        int seen[CR] = {0};
        for (int i = 0; i < CR; i++) {
            op *o = &c.ops[i];
            ck_assert_msg(o->r == 1 || o->r == -ECANCELED || o->r == 99,
                          "cancelled recv returned %d", o->r);
            if (o->r == 1) {
                ck_assert(o->got >= c.base && o->got < c.base + CR);
                seen[o->got - c.base]++;
                got_by_cancelled++;
            } else {
                ck_assert_int_eq(o->got, -12345);
                cancelled++;
            }
        }
        long v;
        int r;
        while ((r = tern_chan_try_recv(ch, &v)) == 1) {
            ck_assert(v >= c.base && v < c.base + CR);
            seen[v - c.base]++;
        }
        ck_assert_int_eq(r, -EAGAIN);
        for (int i = 0; i < CR; i++)
            ck_assert_int_eq(seen[i], i < c.sent ? 1 : 0);
        /* no stale receiver left: sends are buffered (or refused) */
        v = -1;
        if (cap == 0) {
            ck_assert_int_eq(tern_chan_try_send(ch, &v), -EAGAIN);
        } else {
            ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
            ck_assert_int_eq(tern_chan_try_send(ch, &v), 0);
            ck_assert_uint_eq(tern_chan_len(ch), 2);
            ck_assert_int_eq(tern_chan_try_recv(ch, &v), 1);
            ck_assert_int_eq(tern_chan_try_recv(ch, &v), 1);
        }
    }
    /* both outcomes happened (each is overwhelmingly likely over the run) */
    ck_assert_int_gt(cancelled, 0);
    (void)got_by_cancelled;
    tern_chan_release(ch);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Senders cancelled while a receiver takes messages: a send that returned
 * 0 was received exactly once; a cancelled one was not received at all. */
START_TEST(cancel_send_races_recv)
{
    tern_runtime *rt = rt_new(3);
    size_t cap = _i ? 1 : 0;
    tern_chan *ch = mk(sizeof(long), cap);
    int iters = SCALED(3000);
    long fill = -7;
    for (int it = 0; it < iters; it++) {
        cancel_round c;
        memset(&c, 0, sizeof c);
        c.ch = ch;
        c.base = (long)it * CR;
        if (cap)
            ck_assert_int_eq(tern_chan_try_send(ch, &fill), 0); /* full */
        tern_task *st[CR];
        for (int i = 0; i < CR; i++) {
            c.ops[i] = mkop(ch, c.base + i);
            st[i] = spawn(rt, send_fn, &c.ops[i]);
        }
        tern_task *rcv = NULL;
        if (cap) {
            /* free the slot: one waiting sender may move in */
            spin_units((unsigned)(it % 32));
            long v;
            ck_assert_int_eq(tern_chan_try_recv(ch, &v), 1);
            ck_assert_int_eq(v, fill);
        } else {
            rcv = NULL;
        }
        /* several receives race the cancels */
        cancel_round rc;
        memset(&rc, 0, sizeof rc);
        rc.ch = ch;
        rc.base = c.base;
        for (int i = 0; i < CR; i++)
            rc.ops[i].got = -12345;
        rcv = spawn(rt, cancel_round_receiver, &rc);
        cancels_after(&rc.sent, it % 2, it); /* it takes one message */
        for (int i = 0; i < CR; i++) {
            int cr = tern_task_cancel(st[(i + it) % CR]);
            ck_assert(cr == 0 || cr == -EALREADY);
        }
        for (int i = 0; i < CR; i++)
            tern_join(st[i], NULL);
        atomic_store(&rc.stop, 1);
        ck_assert_int_eq(tern_join(rcv, NULL), 0);
        int seen[CR] = {0}, ok = 0;
        for (int i = 0; i < CR; i++)
            if (rc.ops[i].got != -12345)
                seen[i]++;
        long v;
        int r;
        while ((r = tern_chan_try_recv(ch, &v)) == 1) {
            ck_assert(v >= c.base && v < c.base + CR);
            seen[v - c.base]++;
        }
        ck_assert_int_eq(r, -EAGAIN);
        for (int i = 0; i < CR; i++) {
            int sr = c.ops[i].r;
            ck_assert_msg(sr == 0 || sr == -ECANCELED || sr == 99, "cancelled send: %d",
                          sr);
            ck_assert_msg(seen[i] == (sr == 0),
                          "sender %d returned %d, message seen %d times", i, sr, seen[i]);
            ok += sr == 0;
        }
        (void)ok;
        ck_assert_int_eq(tern_chan_try_recv(ch, &v), -EAGAIN); /* no stale sender */
    }
    tern_chan_release(ch);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A cancel that comes after the wait was granted: the call reports the
 * grant (the message is not lost), and the task sees -ECANCELED at its next
 * suspension point. */
static _Atomic int grant_cancelled;

typedef struct grant_op {
    op o;
    int kind; /* 0 recv, 1 send, 2 select recv */
    int next; /* what the suspension point after it returned */
} grant_op;

static void *grant_fn(void *p)
{
    grant_op *g = p;
    if (g->kind == 0)
        recv_fn(&g->o);
    else if (g->kind == 1)
        send_fn(&g->o);
    else
        select_recv2_fn(&g->o);
    /* no suspension until the cancel has certainly been issued */
    while (!atomic_load(&grant_cancelled))
        sched_yield();
    g->next = tern_yield();
    return NULL;
}

START_TEST(cancel_after_grant)
{
    tern_runtime *rt = rt_new(2);
    for (int kind = 0; kind < 3; kind++) {
        for (size_t cap = 0; cap < 2; cap++) {
            tern_chan *ch = mk(sizeof(long), cap);
            long x = 1, got;
            if (kind == 1 && cap)
                ck_assert_int_eq(tern_chan_try_send(ch, &x), 0); /* full */
            grant_op g;
            memset(&g, 0, sizeof g);
            g.o = mkop(ch, 2);
            g.kind = kind;
            g.next = 99;
            atomic_store(&grant_cancelled, 0);
            tern_task *t = spawn(rt, grant_fn, &g);
            WAIT_PARKED(t, kind == 0   ? TERN__W_CHAN_RECV
                           : kind == 1 ? TERN__W_CHAN_SEND
                                       : TERN__W_SELECT);
            /* grant: hand it a message, or take its message; it waits, so
             * the other side is there at once */
            x = 5;
            if (kind == 1) {
                ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
                ck_assert_int_eq(got, cap ? 1 : 2);
            } else {
                ck_assert_int_eq(tern_chan_try_send(ch, &x), 0);
            }
            ck_assert_int_eq(tern_task_cancel(t), 0);
            atomic_store(&grant_cancelled, 1);
            ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
            ck_assert_int_eq(g.next, -ECANCELED);
            if (kind == 1) {
                ck_assert_int_eq(g.o.r, 0);
                if (cap) { /* its message moved into the freed slot */
                    ck_assert_int_eq(tern_chan_try_recv(ch, &got), 1);
                    ck_assert_int_eq(got, 2);
                }
            } else {
                ck_assert_int_eq(g.o.r, 1);
                ck_assert_int_eq(g.o.got, 5);
            }
            ck_assert_uint_eq(tern_chan_len(ch), 0);
            ck_assert_int_eq(tern_chan_try_recv(ch, &got), -EAGAIN);
            tern_chan_release(ch);
        }
    }
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Shutting the runtime down wakes waiting receivers/senders/selects with
 * -ECANCELED. */

START_TEST(shutdown_cancels_waiters)
{
    tern_runtime *rt = rt_new(2);
    tern_chan *ch = mk(sizeof(long), 0);
    op r = mkop(ch, 0), s = mkop(ch, 3);
    tern_chan *other = mk(sizeof(long), 0);
    op sel = mkop(other, 0);
    /* no handles (the runtime frees the tasks): the queues say they wait */
    ck_assert_int_eq(tern_runtime_spawn(rt, recv_fn, &r, NULL), 0);
    WAIT_QUEUED(ch, TERN_SELECT_RECV, 1);
    tern_chan *full = mk(sizeof(long), 1);
    ck_assert_int_eq(tern_chan_try_send(full, &(long){1}), 0);
    s.ch = full;
    ck_assert_int_eq(tern_runtime_spawn(rt, send_fn, &s, NULL), 0);
    WAIT_QUEUED(full, TERN_SELECT_SEND, 1);
    ck_assert_int_eq(tern_runtime_spawn(rt, select_recv2_fn, &sel, NULL), 0);
    WAIT_QUEUED(other, TERN_SELECT_RECV, 1);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(r.r, -ECANCELED);
    ck_assert_int_eq(s.r, -ECANCELED);
    ck_assert_int_eq(sel.r, -ECANCELED);
    ck_assert_uint_eq(tern_chan_len(full), 1);
    ck_assert_int_eq(tern_chan_try_send(ch, &(long){1}), -EAGAIN);
    ck_assert_int_eq(tern_chan_try_send(other, &(long){1}), -EAGAIN);
    tern_chan_release(ch);
    tern_chan_release(other);
    tern_chan_release(full);
}
END_TEST

/* ---- select ------------------------------------------------------------------------ */

static tern_select_case rcase(tern_chan *ch, long *elem)
{
    return (tern_select_case){
        .chan = ch, .op = TERN_SELECT_RECV, .elem = elem, .result = 99};
}

static tern_select_case scase(tern_chan *ch, long *elem)
{
    return (tern_select_case){
        .chan = ch, .op = TERN_SELECT_SEND, .elem = elem, .result = 99};
}

/* select over recv on o->ch and on a second, never-used channel */
static void *select_recv2_fn(void *p)
{
    op *o = p;
    tern_chan *never = mk(sizeof(long), 0);
    long dummy = -1;
    tern_select_case c[2] = {rcase(never, &dummy), rcase(o->ch, &o->got)};
    int r = tern_select(c, 2, o->deadline);
    if (r >= 0) {
        ck_assert_int_eq(r, 1); /* the other channel never has anything */
        o->r = c[1].result;
    } else {
        o->r = r;
    }
    ck_assert_int_eq(dummy, -1);
    tern_chan_release(never);
    return NULL;
}

/* A select run by a task or a thread. */
typedef struct sel_op {
    tern_select_case c[4];
    size_t n;
    uint64_t deadline;
    int r;
} sel_op;

static void *select_fn(void *p)
{
    sel_op *s = p;
    s->r = tern_select(s->c, s->n, s->deadline);
    return NULL;
}

static void sel_init(sel_op *s, size_t n)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->r = 99;
}

/* Ready cases, NULL cases, deadlines, closed channels, one channel in two
 * cases; all without any other party. */
static void *select_ready_body(void *arg)
{
    (void)arg;
    tern_chan *a = mk(sizeof(long), 1), *b = mk(sizeof(long), 1);
    long va = -1, vb = -1, x, got;
    tern_select_case c[4];

    /* recv: the ready case fires, the other is left alone */
    x = 20;
    ck_assert_int_eq(tern_chan_try_send(b, &x), 0);
    c[0] = rcase(a, &va);
    c[1] = rcase(b, &vb);
    ck_assert_int_eq(tern_select(c, 2, 0), 1);
    ck_assert_int_eq(c[1].result, 1);
    ck_assert_int_eq(vb, 20);
    ck_assert_int_eq(va, -1);
    x = 21;
    ck_assert_int_eq(tern_chan_try_send(b, &x), 0);
    c[1].result = 99;
    ck_assert_int_eq(tern_try_select(c, 2), 1);
    ck_assert_int_eq(c[1].result, 1);
    ck_assert_int_eq(vb, 21);
    /* nothing ready */
    va = vb = -1;
    ck_assert_int_eq(tern_try_select(c, 2), -EAGAIN);
    ck_assert_int_eq(va, -1);
    ck_assert_int_eq(vb, -1);

    /* send: a is full, b has room */
    x = 30;
    ck_assert_int_eq(tern_chan_try_send(a, &x), 0);
    long s1 = 31, s2 = 32;
    c[0] = scase(a, &s1);
    c[1] = scase(b, &s2);
    ck_assert_int_eq(tern_select(c, 2, 0), 1);
    ck_assert_int_eq(c[1].result, 0);
    ck_assert_uint_eq(tern_chan_len(a), 1);
    ck_assert_uint_eq(tern_chan_len(b), 1);
    ck_assert_int_eq(tern_try_select(c, 2), -EAGAIN); /* both full now */
    ck_assert_int_eq(tern_chan_try_recv(b, &got), 1);
    ck_assert_int_eq(got, 32);

    /* mixed, with a NULL case: only recv a (holding 30) is ready */
    c[0] = (tern_select_case){.chan = NULL, .op = TERN_SELECT_RECV, .elem = &vb};
    c[1] = rcase(b, &vb);
    c[2] = scase(a, &s1);
    c[3] = rcase(a, &va);
    ck_assert_int_eq(tern_select(c, 4, 0), 3);
    ck_assert_int_eq(c[3].result, 1);
    ck_assert_int_eq(va, 30);
    ck_assert_int_eq(vb, -1);
    /* now only send a is ready */
    ck_assert_int_eq(tern_select(c, 4, tern_now() + 20 * MS), 2);
    ck_assert_int_eq(c[2].result, 0);
    ck_assert_uint_eq(tern_chan_len(a), 1);

    /* only NULL cases: never fire */
    c[0] = (tern_select_case){.chan = NULL, .op = TERN_SELECT_RECV, .elem = &va};
    c[1] = (tern_select_case){.chan = NULL, .op = TERN_SELECT_SEND, .elem = &s1};
    ck_assert_int_eq(tern_try_select(c, 2), -EAGAIN);
    uint64_t dl = tern_now() + 20 * MS;
    ck_assert_int_eq(tern_select(c, 2, dl), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), dl);

    /* deadline: nothing consumed, nothing added, no waiter left behind */
    tern_chan *e = mk(sizeof(long), 0), *emp = mk(sizeof(long), 1);
    long ve = -1, vemp = -1, s3 = 33, s4 = 34;
    c[0] = rcase(emp, &vemp);
    c[1] = scase(a, &s3); /* full: holds 31 */
    c[2] = rcase(e, &ve);
    c[3] = scase(e, &s4); /* one rendezvous channel both ways: no self-match */
    ck_assert_int_eq(tern_try_select(c, 4), -EAGAIN);
    dl = tern_now() + 20 * MS;
    ck_assert_int_eq(tern_select(c, 4, dl), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), dl);
    ck_assert_int_eq(tern_select(c, 4, 1), -ETIMEDOUT);
    ck_assert_int_eq(vemp, -1);
    ck_assert_int_eq(ve, -1);
    ck_assert_uint_eq(tern_chan_len(a), 1);
    ck_assert_uint_eq(tern_chan_len(emp), 0);
    ck_assert_int_eq(tern_chan_try_send(e, &x), -EAGAIN);
    ck_assert_int_eq(tern_chan_try_recv(e, &got), -EAGAIN);
    x = 40;
    ck_assert_int_eq(tern_chan_try_send(emp, &x), 0);
    ck_assert_uint_eq(tern_chan_len(emp), 1);
    ck_assert_int_eq(vemp, -1);
    ck_assert_int_eq(tern_chan_try_recv(emp, &got), 1);
    ck_assert_int_eq(got, 40);

    /* one buffered channel in a send and a recv case */
    long vd = -1, sd = 50;
    c[0] = scase(emp, &sd);
    c[1] = rcase(emp, &vd);
    ck_assert_int_eq(tern_select(c, 2, 0), 0);
    ck_assert_int_eq(c[0].result, 0);
    ck_assert_uint_eq(tern_chan_len(emp), 1);
    ck_assert_int_eq(tern_select(c, 2, 0), 1);
    ck_assert_int_eq(c[1].result, 1);
    ck_assert_int_eq(vd, 50);

    /* closed channels: recv reports the end (0), send -EPIPE */
    ck_assert_int_eq(tern_chan_close(b), 0);
    vb = -1;
    c[0] = rcase(b, &vb);
    ck_assert_int_eq(tern_select(c, 1, 0), 0);
    ck_assert_int_eq(c[0].result, 0);
    ck_assert_int_eq(vb, -1);
    c[0].result = 99;
    ck_assert_int_eq(tern_try_select(c, 1), 0);
    ck_assert_int_eq(c[0].result, 0);
    c[0] = scase(b, &s1);
    ck_assert_int_eq(tern_select(c, 1, 0), 0);
    ck_assert_int_eq(c[0].result, -EPIPE);
    c[0].result = 99;
    ck_assert_int_eq(tern_try_select(c, 1), 0);
    ck_assert_int_eq(c[0].result, -EPIPE);
    ck_assert_uint_eq(tern_chan_len(b), 0);
    /* closed with a message left: first the message, then the end */
    ck_assert_int_eq(tern_chan_close(a), 0);
    c[0] = rcase(a, &va);
    c[1] = rcase(e, &ve);
    ck_assert_int_eq(tern_select(c, 2, 0), 0);
    ck_assert_int_eq(c[0].result, 1);
    ck_assert_int_eq(va, 31);
    c[0].result = 99;
    ck_assert_int_eq(tern_select(c, 2, 0), 0);
    ck_assert_int_eq(c[0].result, 0);

    tern_chan_release(a);
    tern_chan_release(b);
    tern_chan_release(e);
    tern_chan_release(emp);
    return (void *)(uintptr_t)0x600d;
}

START_TEST(select_ready_and_deadline)
{
    if (_i == 0) {
        ck_assert_ptr_eq(select_ready_body(NULL), (void *)(uintptr_t)0x600d);
        return;
    }
    tern_runtime *rt = rt_new(2);
    void *res = NULL;
    ck_assert_int_eq(tern_block_on(rt, select_ready_body, NULL, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)0x600d);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A waiting select (a task with _i == 0, a foreign thread with _i == 1)
 * is woken by a send, a receive or a close on any of its channels. */
START_TEST(select_wakes)
{
    tern_runtime *rt = rt_new(2);
    int threads = _i;
    tern_chan *ch[3] = {mk(sizeof(long), 0), mk(sizeof(long), 1),
                        mk(sizeof(long), TERN_CHAN_UNBOUNDED)};
    long v[3], x, got;
    sel_op s;
    tern_task *t = NULL;
    pthread_t th;
#define SEL_START()                                                                      \
    do {                                                                                 \
        if (threads)                                                                     \
            th = thread(select_fn, &s);                                                  \
        else                                                                             \
            t = spawn(rt, select_fn, &s);                                                \
        /* its nodes go on all its channels at once: case 0 stands for all */            \
        WAIT_QUEUED(s.c[0].chan, s.c[0].op, 1);                                          \
        ck_assert_int_eq(s.r, 99);                                                       \
    } while (0)
#define SEL_JOIN()                                                                       \
    do {                                                                                 \
        if (threads)                                                                     \
            join_thread(th);                                                             \
        else                                                                             \
            ck_assert_int_eq(tern_join(t, NULL), 0);                                     \
    } while (0)

    /* recv cases: a send on channel k completes it */
    for (int k = 0; k < 3; k++) {
        sel_init(&s, 3);
        for (int i = 0; i < 3; i++) {
            v[i] = -1;
            s.c[i] = rcase(ch[i], &v[i]);
        }
        SEL_START();
        x = 100 + k;
        ck_assert_int_eq(tern_chan_send(ch[k], &x), 0);
        SEL_JOIN();
        ck_assert_int_eq(s.r, k);
        ck_assert_int_eq(s.c[k].result, 1);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(v[i], i == k ? 100 + k : -1);
        for (int i = 0; i < 3; i++)
            ck_assert_uint_eq(tern_chan_len(ch[i]), 0);
    }

    /* send cases: ch[1] full, ch[0] has no receiver. A recv on ch[0]
     * takes the select's message directly... */
    x = 7;
    ck_assert_int_eq(tern_chan_try_send(ch[1], &x), 0);
    long out0 = 200, out1 = 201;
    sel_init(&s, 2);
    s.c[0] = scase(ch[0], &out0);
    s.c[1] = scase(ch[1], &out1);
    SEL_START();
    ck_assert_int_eq(tern_chan_recv(ch[0], &got), 1);
    ck_assert_int_eq(got, 200);
    SEL_JOIN();
    ck_assert_int_eq(s.r, 0);
    ck_assert_int_eq(s.c[0].result, 0);
    ck_assert_uint_eq(tern_chan_len(ch[1]), 1);
    /* ...and a recv on full ch[1] lets the select's message in behind */
    sel_init(&s, 2);
    s.c[0] = scase(ch[0], &out0);
    s.c[1] = scase(ch[1], &out1);
    SEL_START();
    ck_assert_int_eq(tern_chan_recv(ch[1], &got), 1);
    ck_assert_int_eq(got, 7);
    SEL_JOIN();
    ck_assert_int_eq(s.r, 1);
    ck_assert_int_eq(s.c[1].result, 0);
    ck_assert_uint_eq(tern_chan_len(ch[1]), 1);
    ck_assert_int_eq(tern_chan_recv(ch[1], &got), 1);
    ck_assert_int_eq(got, 201);
    ck_assert_int_eq(tern_chan_try_recv(ch[0], &got), -EAGAIN);

    /* close wakes it: recv case with the end, send case with -EPIPE */
    tern_chan *full = mk(sizeof(long), 1);
    x = 8;
    ck_assert_int_eq(tern_chan_try_send(full, &x), 0);
    sel_init(&s, 2);
    v[0] = -1;
    s.c[0] = rcase(ch[0], &v[0]);
    s.c[1] = scase(full, &out1);
    SEL_START();
    ck_assert_int_eq(tern_chan_close(ch[0]), 0);
    SEL_JOIN();
    ck_assert_int_eq(s.r, 0);
    ck_assert_int_eq(s.c[0].result, 0);
    ck_assert_int_eq(v[0], -1);
    sel_init(&s, 2);
    s.c[0] = scase(full, &out1);
    s.c[1] = rcase(ch[2], &v[2]);
    SEL_START();
    ck_assert_int_eq(tern_chan_close(full), 0);
    SEL_JOIN();
    ck_assert_int_eq(s.r, 0);
    ck_assert_int_eq(s.c[0].result, -EPIPE);
    ck_assert_int_eq(tern_chan_recv(full, &got), 1);
    ck_assert_int_eq(got, 8);
    ck_assert_int_eq(tern_chan_recv(full, &got), 0);
    /* the losing case left no waiter on ch[2] */
    x = 9;
    ck_assert_int_eq(tern_chan_try_send(ch[2], &x), 0);
    ck_assert_uint_eq(tern_chan_len(ch[2]), 1);

    /* a deadline while waiting */
    sel_init(&s, 1);
    s.c[0] = rcase(ch[1], &v[1]);
    s.deadline = tern_now() + 20 * MS;
    if (threads)
        th = thread(select_fn, &s);
    else
        t = spawn(rt, select_fn, &s);
    SEL_JOIN();
    ck_assert_int_eq(s.r, -ETIMEDOUT);
    ck_assert_uint_ge(tern_now(), s.deadline);
#undef SEL_START
#undef SEL_JOIN
    tern_chan_release(full);
    for (int i = 0; i < 3; i++)
        tern_chan_release(ch[i]);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Cancelling a waiting select: -ECANCELED, nothing consumed or added,
 * no waiter left on any of its channels. */
START_TEST(select_cancel)
{
    tern_runtime *rt = rt_new(2);
    tern_chan *a = mk(sizeof(long), 1), *b = mk(sizeof(long), 1),
              *e = mk(sizeof(long), 0);
    long x = 7, va = -1, ve = -1, sb = 8, se = 9, got;
    ck_assert_int_eq(tern_chan_try_send(b, &x), 0);
    for (int timed = 0; timed < 2; timed++) {
        sel_op s;
        sel_init(&s, 4);
        s.c[0] = rcase(a, &va);
        s.c[1] = scase(b, &sb);
        s.c[2] = rcase(e, &ve);
        s.c[3] = scase(e, &se);
        /* far off: the cancel ends the wait, however slow the start */
        s.deadline = timed ? tern_now() + 2ull * WAIT_MS * MS : 0;
        tern_task *t = spawn(rt, select_fn, &s);
        WAIT_PARKED(t, TERN__W_SELECT);
        ck_assert_int_eq(tern_task_done(t), 0);
        ck_assert_int_eq(tern_task_cancel(t), 0);
        ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
        ck_assert_int_eq(s.r, -ECANCELED);
        ck_assert_int_eq(va, -1);
        ck_assert_int_eq(ve, -1);
        ck_assert_uint_eq(tern_chan_len(a), 0);
        ck_assert_uint_eq(tern_chan_len(b), 1);
        ck_assert_int_eq(tern_chan_try_send(e, &x), -EAGAIN);
        ck_assert_int_eq(tern_chan_try_recv(e, &got), -EAGAIN);
        x = 11;
        ck_assert_int_eq(tern_chan_try_send(a, &x), 0);
        ck_assert_uint_eq(tern_chan_len(a), 1);
        ck_assert_int_eq(va, -1);
        ck_assert_int_eq(tern_chan_try_recv(a, &got), 1);
        ck_assert_int_eq(got, 11);
    }
    ck_assert_int_eq(tern_chan_try_recv(b, &got), 1);
    ck_assert_int_eq(got, 7);
    ck_assert_int_eq(tern_chan_try_recv(b, &got), -EAGAIN);
    tern_chan_release(a);
    tern_chan_release(b);
    tern_chan_release(e);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Several senders race to complete one select waiting on several channels:
 * exactly one message is taken; the other senders deliver theirs to later
 * receives. With _i & 2 the select sends instead, and several receivers race
 * for its one message. _i & 1: buffered (capacity 1) channels. */
static void *recv_fn_go(void *p);
static _Atomic int race_go;

static void *send_fn_go(void *p)
{
    while (!atomic_load(&race_go))
        tern_yield();
    return send_fn(p);
}

static void *recv_fn_go(void *p)
{
    while (!atomic_load(&race_go))
        tern_yield();
    return recv_fn(p);
}

START_TEST(select_races)
{
    enum { K = 3 };
    tern_runtime *rt = rt_new(3);
    size_t cap = (_i & 1) ? 1 : 0;
    int select_sends = (_i & 2) != 0;
    tern_chan *ch[K];
    for (int i = 0; i < K; i++)
        ch[i] = mk(sizeof(long), cap);
    int iters = SCALED(2000);
    int fired_count[K] = {0};
    for (int it = 0; it < iters; it++) {
        long base = (long)it * 10;
        long elems[K], sel_out = base + 9;
        sel_op s;
        sel_init(&s, K);
        for (int i = 0; i < K; i++) {
            elems[i] = -1;
            s.c[i] = select_sends ? scase(ch[i], &sel_out) : rcase(ch[i], &elems[i]);
        }
        op o[K];
        tern_task *ts[K];
        /* sometimes the racers are held back until all are spawned (they
         * spin meanwhile, which is slow on a small machine: not always) */
        atomic_store(&race_go, it % 4 != 3);
        tern_task *st = spawn(rt, select_fn, &s);
        /* sometimes the select waits before the racers come (with buffered
         * send cases it is ready at once and simply returns) */
        if (it % 2)
            WAIT_UNTIL(tern_task_done(st) || tern__task_parked(st) == TERN__W_SELECT,
                       WAIT_MS);
        for (int i = 0; i < K; i++) {
            o[i] = mkop(ch[i], base + i);
            ts[i] = spawn(rt, select_sends ? recv_fn_go : send_fn_go, &o[i]);
        }
        atomic_store(&race_go, 1);
        ck_assert_int_eq(tern_join(st, NULL), 0);
        int k = s.r;
        ck_assert_msg(k >= 0 && k < K, "select returned %d", k);
        fired_count[k]++;
        if (!select_sends) {
            ck_assert_int_eq(s.c[k].result, 1);
            for (int i = 0; i < K; i++)
                ck_assert_int_eq(elems[i], i == k ? base + k : -1);
            /* the others still deliver */
            for (int i = 0; i < K; i++) {
                if (i == k)
                    continue;
                long got = -1;
                ck_assert_int_eq(tern_chan_recv(ch[i], &got), 1);
                ck_assert_int_eq(got, base + i);
            }
            for (int i = 0; i < K; i++) {
                ck_assert_int_eq(tern_join(ts[i], NULL), 0);
                ck_assert_int_eq(o[i].r, 0);
            }
        } else {
            ck_assert_int_eq(s.c[k].result, 0);
            /* the other receivers get a message from us instead */
            for (int i = 0; i < K; i++) {
                if (i == k)
                    continue;
                long fill = base + 5;
                ck_assert_int_eq(tern_chan_send(ch[i], &fill), 0);
            }
            for (int i = 0; i < K; i++) {
                ck_assert_int_eq(tern_join(ts[i], NULL), 0);
                ck_assert_int_eq(o[i].r, 1);
                ck_assert_int_eq(o[i].got, i == k ? base + 9 : base + 5);
            }
        }
        long got;
        for (int i = 0; i < K; i++)
            ck_assert_int_eq(tern_chan_try_recv(ch[i], &got), -EAGAIN);
    }
    for (int i = 0; i < K; i++)
        tern_chan_release(ch[i]);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* With two always-ready cases each fires a fair share. */
static void *select_fairness_body(void *arg)
{
    int use_try = arg != NULL;
    long n = SCALED(10000);
    tern_chan *a = mk(sizeof(long), TERN_CHAN_UNBOUNDED),
              *b = mk(sizeof(long), TERN_CHAN_UNBOUNDED);
    for (long i = 0; i < n; i++) {
        ck_assert_int_eq(tern_chan_send(a, &i), 0);
        ck_assert_int_eq(tern_chan_send(b, &i), 0);
    }
    long va, vb, next[2] = {0, 0};
    tern_select_case c[2] = {rcase(a, &va), rcase(b, &vb)};
    for (long i = 0; i < n; i++) {
        int k = use_try ? tern_try_select(c, 2) : tern_select(c, 2, 0);
        ck_assert(k == 0 || k == 1);
        ck_assert_int_eq(c[k].result, 1);
        ck_assert_int_eq(k ? vb : va, next[k]); /* each channel in order */
        next[k]++;
    }
    ck_assert_int_eq(next[0] + next[1], n);
    ck_assert_msg(next[0] * 10 > n * 3 && next[1] * 10 > n * 3,
                  "recv shares %ld / %ld of %ld", next[0], next[1], n);
    ck_assert_uint_eq(tern_chan_len(a), (size_t)(n - next[0]));
    ck_assert_uint_eq(tern_chan_len(b), (size_t)(n - next[1]));
    tern_chan_release(a);
    tern_chan_release(b);

    /* send cases, both always ready */
    a = mk(sizeof(long), TERN_CHAN_UNBOUNDED);
    b = mk(sizeof(long), TERN_CHAN_UNBOUNDED);
    long sa = 1, sb = 2, cnt[2] = {0, 0};
    c[0] = scase(a, &sa);
    c[1] = scase(b, &sb);
    for (long i = 0; i < n; i++) {
        int k = use_try ? tern_try_select(c, 2) : tern_select(c, 2, 0);
        ck_assert(k == 0 || k == 1);
        ck_assert_int_eq(c[k].result, 0);
        cnt[k]++;
    }
    ck_assert_uint_eq(tern_chan_len(a), (size_t)cnt[0]);
    ck_assert_uint_eq(tern_chan_len(b), (size_t)cnt[1]);
    ck_assert_msg(cnt[0] * 10 > n * 3 && cnt[1] * 10 > n * 3,
                  "send shares %ld / %ld of %ld", cnt[0], cnt[1], n);
    tern_chan_release(a);
    tern_chan_release(b);
    return (void *)(uintptr_t)0x600d;
}

/* _i: 0 select from a thread, 1 try_select from a thread, 2 select in a
 * task, 3 try_select in a task. */
START_TEST(select_fairness)
{
    void *arg = (_i & 1) ? (void *)1 : NULL;
    if (_i < 2) {
        ck_assert_ptr_eq(select_fairness_body(arg), (void *)(uintptr_t)0x600d);
        return;
    }
    tern_runtime *rt = rt_new(2);
    void *res = NULL;
    ck_assert_int_eq(tern_block_on(rt, select_fairness_body, arg, &res), 0);
    ck_assert_ptr_eq(res, (void *)(uintptr_t)0x600d);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Stress: producers select over send cases on three channels (rendezvous,
 * capacity 1, unbounded), consumers select over recv cases (tasks and a
 * foreign thread) or recv from one channel; every message counted once. */
static struct {
    tern_chan *ch[3];
    uint32_t n;
    _Atomic uint32_t next_p;
    _Atomic unsigned char *counts;
    _Atomic uint64_t received, sum;
} SS;

static void *ss_producer(void *arg)
{
    (void)arg;
    uint32_t p = atomic_fetch_add(&SS.next_p, 1);
    uint32_t id;
    tern_select_case c[3];
    for (int i = 0; i < 3; i++)
        c[i] = (tern_select_case){.chan = SS.ch[i], .op = TERN_SELECT_SEND, .elem = &id};
    for (uint32_t i = 0; i < SS.n; i++) {
        id = p * SS.n + i;
        int k = tern_select(c, 3, 0);
        ck_assert_msg(k >= 0 && k < 3, "select send: %d", k);
        ck_assert_int_eq(c[k].result, 0);
    }
    return NULL;
}

static void ss_count(uint32_t id, uint64_t *n, uint64_t *sum)
{
    ck_assert_uint_lt(id, 4 * SS.n);
    ck_assert_int_eq(atomic_fetch_add(&SS.counts[id], 1), 0);
    (*n)++;
    *sum += id;
}

static void *ss_consumer(void *arg)
{
    (void)arg;
    uint32_t v[3];
    tern_select_case c[3];
    for (int i = 0; i < 3; i++)
        c[i] =
            (tern_select_case){.chan = SS.ch[i], .op = TERN_SELECT_RECV, .elem = &v[i]};
    uint64_t n = 0, sum = 0;
    int live = 3;
    while (live) {
        int k = tern_select(c, 3, 0);
        ck_assert_msg(k >= 0 && k < 3, "select recv: %d", k);
        if (c[k].result == 0) {
            c[k].chan = NULL; /* closed and drained: stop listening */
            live--;
            continue;
        }
        ck_assert_int_eq(c[k].result, 1);
        ss_count(v[k], &n, &sum);
    }
    atomic_fetch_add(&SS.received, n);
    atomic_fetch_add(&SS.sum, sum);
    return NULL;
}

static void *ss_plain_consumer(void *arg)
{
    tern_chan *ch = SS.ch[(uintptr_t)arg];
    uint32_t v;
    uint64_t n = 0, sum = 0;
    int r;
    while ((r = tern_chan_recv(ch, &v)) == 1)
        ss_count(v, &n, &sum);
    ck_assert_int_eq(r, 0);
    atomic_fetch_add(&SS.received, n);
    atomic_fetch_add(&SS.sum, sum);
    return NULL;
}

START_TEST(select_stress)
{
    memset(&SS, 0, sizeof SS);
    SS.ch[0] = mk(sizeof(uint32_t), 0);
    SS.ch[1] = mk(sizeof(uint32_t), 1);
    SS.ch[2] = mk(sizeof(uint32_t), TERN_CHAN_UNBOUNDED);
    SS.n = SCALED(50000);
    uint64_t total = 4ull * SS.n;
    SS.counts = calloc(total, 1);
    tern_runtime *rt = rt_new(4);
    tern_task *prod[4], *cons[4];
    for (int i = 0; i < 3; i++)
        cons[i] = spawn(rt, ss_consumer, NULL);
    cons[3] = spawn(rt, ss_plain_consumer, (void *)(uintptr_t)0);
    pthread_t th = thread(ss_consumer, NULL);
    for (int i = 0; i < 4; i++)
        prod[i] = spawn(rt, ss_producer, NULL);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tern_join(prod[i], NULL), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tern_chan_close(SS.ch[i]), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tern_join(cons[i], NULL), 0);
    join_thread(th);
    for (uint64_t i = 0; i < total; i++)
        ck_assert_msg(SS.counts[i] == 1, "message %lu received %u times",
                      (unsigned long)i, (unsigned)SS.counts[i]);
    ck_assert_uint_eq(atomic_load(&SS.received), total);
    ck_assert_uint_eq(atomic_load(&SS.sum), total * (total - 1) / 2);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(tern_chan_len(SS.ch[i]), 0);
        tern_chan_release(SS.ch[i]);
    }
    free((void *)SS.counts);
    assert_no_live_tasks(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- the suite --------------------------------------------------------------------- */

Suite *chan_suite(void)
{
    Suite *s = suite_create("chan");
    TCase *tc = tcase_create("chan");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bad_arguments);
    tcase_add_loop_test(tc, bounded_basic, 0, 2);
    tcase_add_loop_test(tc, bounded_waiters_fifo, 0, 2);
    tcase_add_loop_test(tc, unbounded_grows_in_order, 0, 2);
    tcase_add_test(tc, rendezvous);
    tcase_add_test(tc, oneshot);
    tcase_add_loop_test(tc, fifo_per_sender, 0, NCAPS);
    tcase_add_loop_test(tc, large_elements_copied, 0, NCAPS);
    tcase_add_loop_test(tc, stress_mpmc, 0, NCAPS);
    tcase_add_loop_test(tc, stress_close_midway, 0, NCAPS);
    tcase_add_loop_test(tc, foreign_threads_mix, 0, NCAPS);
    tcase_add_loop_test(tc, cancel_waiting, 0, 2);
    tcase_add_loop_test(tc, cancel_recv_races_send, 0, 4);
    tcase_add_loop_test(tc, cancel_send_races_recv, 0, 2);
    tcase_add_test(tc, cancel_after_grant);
    tcase_add_test(tc, shutdown_cancels_waiters);
    tcase_add_loop_test(tc, select_ready_and_deadline, 0, 2);
    tcase_add_loop_test(tc, select_wakes, 0, 2);
    tcase_add_test(tc, select_cancel);
    tcase_add_loop_test(tc, select_races, 0, 4);
    tcase_add_loop_test(tc, select_fairness, 0, 4);
    tcase_add_test(tc, select_stress);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(chan_suite());
}
