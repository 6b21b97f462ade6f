/*
 * Soak test: a mixed workload on a 4-worker runtime for a configurable
 * time, after which every unit of work must be accounted for.
 *
 *   TERN_SOAK_SECS  how long the workload runs (default 5: the ctest run)
 *   TERN_SOAK_SEED  the PRNG seed to replay (printed at the start)
 *   TERN_SOAK_WORKERS  worker threads (default 4)
 *
 * The seed fixes every random choice each task makes; the interleaving of
 * the workers is the machine's, so a replay repeats the workload, not the
 * schedule. Registered once per backend (TERN_BACKEND=io_uring|epoll).
 *
 * Workloads, each a few "driver" tasks that loop until the time is up:
 *  - spawners: short tasks joined, detached, cancelled at once or later;
 *  - timers: sleeps that must not wake early, and waits whose deadline
 *    must expire (channel, future, mutex, wait_for on a task);
 *  - channels: rounds of producers and consumers over bounded, unbounded
 *    and rendezvous channels, ended by close, cancels, or a drain;
 *  - churn: victims cancelled while sleeping, receiving, or waiting for
 *    or holding a mutex;
 *  - groups: task groups where one child may fail or the group is
 *    cancelled from outside;
 *  - echo: TCP clients that verify every echoed byte and disconnect at
 *    random, mid-message or with a reset.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define MS 1000000ull
#define SEC 1000000000ull
/* What must succeed gets this long: a failure, never a hang. */
#define LONG_DL() (tern_now() + 10 * SEC)

static _Atomic int stop; /* set once the duration is over */

static int stopping(void)
{
    return atomic_load(&stop);
}

/* Every account the end checks. Drivers add as they go. */
static struct {
    _Atomic uint64_t spawned, ran, unstarted, cancelled, detached, detached_done;
    _Atomic uint64_t sleeps, timeouts;
    _Atomic uint64_t rounds, msgs;
    _Atomic uint64_t victims, victims_cancelled, locked, fed_recv, fed_sum;
    _Atomic uint64_t groups, groups_failed, groups_cancelled, children;
    _Atomic uint64_t conns, conns_cut, conns_reset, conns_cancelled, accepted,
        accept_aborted;
    _Atomic uint64_t handlers_out, bytes_verified, bytes_cut, bytes_echoed;
} st;

#define ADD(field, n) atomic_fetch_add(&st.field, (n))

/* ---- randomness ------------------------------------------------------------ */

/* splitmix64's finaliser: seeds, and the check word of each message. */
static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static uint64_t g_seed;

/* Driver i's PRNG state; never 0 (xorshift's fixed point). */
static uint64_t seed_for(uintptr_t i)
{
    return mix(g_seed ^ mix(i)) | 1;
}

/* What a task body records for join_checked: whether it started, and
 * whether a call returned -ECANCELED to it. */
typedef struct probe {
    int entered, saw_cancel;
} probe;

/* Records r in p and returns it: the one place a body notes a cancel. */
static int seen(probe *p, int r)
{
    if (r == -ECANCELED)
        p->saw_cancel = 1;
    return r;
}

/* Joins a task that fills *p. tern_join's rule: -ECANCELED exactly when
 * the body never ran or met a cancel; otherwise its result, which must be
 * want. Returns 1 when the task counts as cancelled. */
static int join_checked(tern_task *t, const probe *p, void *want)
{
    void *res = NULL;
    int r = tern_join(t, &res);
    if (r == 0) {
        ck_assert_msg(p->entered && !p->saw_cancel, "join 0, entered %d saw_cancel %d",
                      p->entered, p->saw_cancel);
        ck_assert_ptr_eq(res, want);
        return 0;
    }
    ck_assert_msg(r == -ECANCELED, "join: %s", tern_strerror(r));
    ck_assert_msg(!p->entered || p->saw_cancel,
                  "join -ECANCELED, the body saw no cancel");
    return 1;
}

/* ---- spawners -------------------------------------------------------------- */

typedef struct unit {
    probe p;
    _Atomic int entries; /* catches a body run twice */
    int work;            /* 0: return at once, 1: yield, 2: sleep ns */
    uint64_t ns;
    int detached;
} unit;

static void *unit_body(void *arg)
{
    unit *u = arg;
    ck_assert_int_eq(atomic_fetch_add(&u->entries, 1), 0);
    u->p.entered = 1;
    ADD(ran, 1);
    seen(&u->p, u->work == 1 ? tern_yield() : u->work == 2 ? tern_sleep(u->ns) : 0);
    if (!u->detached)
        return u;
    ADD(detached_done, 1);
    free(u);
    return NULL;
}

enum { BATCH = 16, DETACHED_MAX = 256 };

/* Spawns one unit of a random kind: 0 joined, 1 detached, 2 cancelled at
 * once (most never start), 3 cancelled later. Returns the kind. */
static int spawn_unit(uint64_t *rs, unit **u, tern_task **t)
{
    *u = calloc(1, sizeof **u);
    ck_assert_ptr_nonnull(*u);
    (*u)->work = (int)below(rs, 3);
    (*u)->ns = below(rs, 2 * MS);
    int kind = (int)below(rs, 4);
    ADD(spawned, 1);
    /* Detached tasks are capped so that a slow machine cannot pile them up
     * (ThreadSanitizer counts every live fiber as a thread). */
    if (kind == 1 &&
        atomic_load(&st.detached) - atomic_load(&st.detached_done) < DETACHED_MAX) {
        (*u)->detached = 1;
        ADD(detached, 1);
        *t = NULL;
        ck_assert_int_eq(tern_spawn(unit_body, *u, NULL), 0);
        return 1;
    }
    ck_assert_int_eq(tern_spawn(unit_body, *u, t), 0);
    if (kind == 2) /* -EALREADY: another worker ran it to the end first */
        ck_assert_int_ne(tern_task_cancel(*t), -EINVAL);
    return kind == 1 ? 0 : kind;
}

static void *spawner(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    while (!stopping()) {
        tern_task *t[BATCH];
        unit *u[BATCH];
        int kind[BATCH], n = 1 + (int)below(&rs, BATCH);
        for (int i = 0; i < n; i++)
            kind[i] = spawn_unit(&rs, &u[i], &t[i]);
        ck_assert_int_eq(tern_sleep(below(&rs, MS)), 0);
        for (int i = 0; i < n; i++) {
            if (!t[i])
                continue;
            if (kind[i] == 3) /* while it runs or sleeps, or after it finished */
                ck_assert_int_ne(tern_task_cancel(t[i]), -EINVAL);
            if (join_checked(t[i], &u[i]->p, u[i])) {
                ADD(cancelled, 1);
                if (!u[i]->p.entered)
                    ADD(unstarted, 1);
            }
            free(u[i]);
        }
    }
    return NULL;
}

/* ---- timers: sleeps never early, deadlines that must expire ---------------- */

static void *slow_task(void *arg)
{
    return tern_sleep(5 * MS) == 0 ? arg : NULL;
}

/* wait_for on a task that outlives the timeout: -ETIMEDOUT and the task
 * cancelled, or (on a machine late enough) the task's own result. */
static void wait_for_task(void)
{
    tern_task *t;
    tern_future *f;
    void *v = NULL;
    ck_assert_int_eq(tern_spawn(slow_task, &st, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    int r = tern_wait_for(f, &v, tern_now() + MS);
    ck_assert_msg(r == -ETIMEDOUT || (r == 0 && v == &st), "wait_for: %s",
                  tern_strerror(r));
    tern_future_release(f);
    int j = tern_join(t, &v);
    ck_assert_int_eq(j, r == 0 ? 0 : -ECANCELED);
    if (r)
        ADD(timeouts, 1);
}

static void *timer_task(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    tern_chan *empty;
    tern_future *never;
    tern_mutex held;
    tern_mutex_init(&held);
    ck_assert_int_eq(tern_mutex_lock(&held), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 4, &empty), 0);
    ck_assert_int_eq(tern_future_new(&never), 0);
    while (!stopping()) {
        uint64_t t0 = tern_now(), d = below(&rs, 3 * MS), dl = t0 + d, x;
        int r, op = (int)below(&rs, 6);
        switch (op) {
        case 0:
            r = tern_sleep(d);
            break;
        case 1:
            r = tern_sleep_until(dl);
            break;
        case 2:
            r = tern_chan_recv_until(empty, &x, dl);
            break;
        case 3:
            r = tern_future_await(never, NULL, dl);
            break;
        case 4:
            r = tern_mutex_lock_until(&held, dl);
            break;
        default:
            wait_for_task();
            continue;
        }
        ck_assert_int_eq(r, op < 2 ? 0 : -ETIMEDOUT);
        ck_assert_msg(tern_now() >= dl, "op %d woke %llu ns early", op,
                      (unsigned long long)(dl - tern_now()));
        if (op < 2)
            ADD(sleeps, 1);
        else
            ADD(timeouts, 1);
    }
    ck_assert_int_eq(tern_future_done(never), 0);
    tern_future_release(never);
    tern_chan_release(empty);
    ck_assert_int_eq(tern_mutex_unlock(&held), 0);
    ck_assert_int_eq(tern_mutex_destroy(&held), 0);
    return NULL;
}

/* ---- channels: every message sent is received exactly once ----------------- */

enum { MAXP = 3, MAXC = 3, ROUND_MSGS = 5000 };

typedef struct msg {
    uint64_t id; /* producer << 48 | sequence number (from 1) */
    uint64_t check;
} msg;

/* One producer or consumer of a round. */
typedef struct peer {
    probe p;
    tern_chan *ch;
    tern_task *t;
    unsigned idx;
    uint64_t rs;
    _Atomic int *halt;   /* producers stop sending when set */
    uint64_t n, sum;     /* messages sent or received, and their check sum */
    uint64_t last[MAXP]; /* consumer: last sequence seen from each producer */
} peer;

static void take(peer *c, const msg *m)
{
    unsigned from = (unsigned)(m->id >> 48);
    uint64_t seq = m->id & 0xFFFFFFFFFFFFull;
    ck_assert_msg(m->check == mix(m->id), "message %llx corrupt",
                  (unsigned long long)m->id);
    /* per-sender order, so a duplicate to one consumer shows here; the
     * counts and sums catch one spread over two */
    ck_assert_uint_lt(from, MAXP);
    ck_assert_uint_gt(seq, c->last[from]);
    c->last[from] = seq;
    c->n++;
    c->sum += m->check;
}

/* A select on ch and a nil case (which never fires): what the plain call
 * would return (send 0 / -EPIPE, recv 1 / 0), or the select's error. */
static int select_one(tern_chan *ch, int op, void *elem, uint64_t deadline)
{
    tern_select_case cs[2] = {{NULL, op, elem, 0}, {ch, op, elem, 0}};
    int r = tern_select(cs, 2, deadline);
    ck_assert_int_ne(r, 0);
    return r == 1 ? cs[1].result : r;
}

static void *producer(void *arg)
{
    peer *p = arg;
    p->p.entered = 1;
    for (uint64_t seq = 1; seq <= ROUND_MSGS && !atomic_load(p->halt); seq++) {
        msg m = {(uint64_t)p->idx << 48 | seq, 0};
        m.check = mix(m.id);
        int r, how = (int)below(&p->rs, 4);
        uint64_t dl = tern_now() + below(&p->rs, 2 * MS);
        if (how == 0)
            r = tern_chan_send(p->ch, &m);
        else if (how == 1)
            r = tern_chan_send_until(p->ch, &m, dl);
        else if (how == 2)
            r = select_one(p->ch, TERN_SELECT_SEND, &m, dl);
        else if ((r = tern_chan_try_send(p->ch, &m)) == -EAGAIN &&
                 tern_yield() == -ECANCELED)
            r = -ECANCELED;
        if (r == 0) {
            p->n++;
            p->sum += m.check;
        } else if (seen(&p->p, r) == -ECANCELED || r == -EPIPE) {
            break;
        } else {
            ck_assert_msg(r == -ETIMEDOUT || r == -EAGAIN, "send: %s", tern_strerror(r));
        }
        /* an unbounded send never waits: let the consumers in */
        if (seq % 64 == 0 && seen(&p->p, tern_yield()) == -ECANCELED)
            break;
    }
    return p;
}

static void *consumer(void *arg)
{
    peer *c = arg;
    c->p.entered = 1;
    for (;;) { /* ends: the channel is always closed at the end of a round */
        msg m;
        int r, how = (int)below(&c->rs, 4);
        uint64_t dl = tern_now() + below(&c->rs, 2 * MS);
        if (how == 0)
            r = tern_chan_recv(c->ch, &m);
        else if (how == 1)
            r = tern_chan_recv_until(c->ch, &m, dl);
        else if (how == 2)
            r = select_one(c->ch, TERN_SELECT_RECV, &m, dl);
        else if ((r = tern_chan_try_recv(c->ch, &m)) == -EAGAIN &&
                 tern_yield() == -ECANCELED)
            r = -ECANCELED;
        if (r == 1)
            take(c, &m);
        else if (r == 0 || seen(&c->p, r) == -ECANCELED)
            break;
        else
            ck_assert_msg(r == -ETIMEDOUT || r == -EAGAIN, "recv: %s", tern_strerror(r));
    }
    return c;
}

static void start_peers(peer *ps, int n, tern_task_fn fn, tern_chan *ch,
                        _Atomic int *halt, uint64_t *rs)
{
    for (int i = 0; i < n; i++) {
        ps[i] = (peer){.ch = ch, .idx = (unsigned)i, .rs = rnd(rs) | 1, .halt = halt};
        ck_assert_int_eq(tern_spawn(fn, &ps[i], &ps[i].t), 0);
    }
}

/* One round: a fresh channel of a random kind, producers and consumers,
 * ended one of three ways; then the books must balance. */
static void chan_round(uint64_t *rs)
{
    static const size_t caps[] = {16, TERN_CHAN_UNBOUNDED, 0};
    tern_chan *ch;
    _Atomic int halt = 0;
    peer pr[MAXP], co[MAXC], drain = {0};
    int np = 1 + (int)below(rs, MAXP), nc = 1 + (int)below(rs, MAXC);
    ck_assert_int_eq(tern_chan_new(sizeof(msg), caps[below(rs, 3)], &ch), 0);
    start_peers(pr, np, producer, ch, &halt, rs);
    start_peers(co, nc, consumer, ch, &halt, rs);
    ck_assert_int_eq(tern_sleep(below(rs, 20 * MS)), 0);
    int mode = (int)below(rs, 3);
    if (mode == 1) { /* cancel some of either side, wherever they are */
        for (int i = 0; i < np + nc; i++)
            if (below(rs, 2))
                tern_task_cancel(i < np ? pr[i].t : co[i - np].t);
    } else if (mode == 2) { /* producers finish first, consumers drain */
        atomic_store(&halt, 1);
        for (int i = 0; i < np; i++)
            join_checked(pr[i].t, &pr[i].p, &pr[i]);
    }
    /* close while consumers drain: senders get -EPIPE, receivers the rest */
    ck_assert_int_eq(tern_chan_close(ch), 0);
    uint64_t sent = 0, sum = 0;
    for (int i = 0; i < np; i++) {
        if (mode != 2)
            join_checked(pr[i].t, &pr[i].p, &pr[i]);
        sent += pr[i].n;
        sum += pr[i].sum;
    }
    msg m;
    for (int i = 0; i < nc; i++) {
        join_checked(co[i].t, &co[i].p, &co[i]);
        drain.n += co[i].n;
        drain.sum += co[i].sum;
    }
    /* what cancelled consumers left behind is still in the channel */
    int r;
    while ((r = tern_chan_try_recv(ch, &m)) == 1)
        take(&drain, &m);
    ck_assert_int_eq(r, 0);
    ck_assert_uint_eq(drain.n, sent);
    ck_assert_uint_eq(drain.sum, sum);
    tern_chan_release(ch);
    ADD(rounds, 1);
    ADD(msgs, sent);
}

static void *chan_driver(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    while (!stopping())
        chan_round(&rs);
    return NULL;
}

/* ---- churn: victims cancelled while they sleep, receive or lock ------------ */

static tern_mutex lock;
static uint64_t guarded;   /* changed only with lock held: TSan checks the hand-off */
static _Atomic int inside; /* 1 while a victim holds lock: two holders trip it */
static tern_chan *fed[2];  /* bounded (2) and rendezvous: victims receive from them */

typedef struct victim {
    probe p;
    int kind; /* 0 sleep, 1-2 receive from fed[kind - 1], 3 lock */
    uint64_t ns;
} victim;

static void *victim_body(void *arg)
{
    victim *v = arg;
    v->p.entered = 1;
    uint64_t t0 = tern_now();
    msg m;
    int r;
    if (v->kind == 0) {
        if (seen(&v->p, tern_sleep(v->ns)) == 0)
            ck_assert_uint_ge(tern_now() - t0, v->ns);
    } else if (v->kind < 3) {
        /* a message delivered as the cancel came is returned, not lost */
        if ((r = seen(&v->p, tern_chan_recv(fed[v->kind - 1], &m))) == 1) {
            ck_assert_uint_eq(m.check, mix(m.id));
            ADD(fed_recv, 1);
            ADD(fed_sum, m.check);
        }
    } else if (seen(&v->p, tern_mutex_lock(&lock)) == 0) {
        ck_assert_int_eq(atomic_exchange(&inside, 1), 0);
        uint64_t g = guarded;
        seen(&v->p, tern_sleep(v->ns / 8)); /* cancelled while holding it */
        guarded = g + 1;
        ADD(locked, 1);
        atomic_store(&inside, 0);
        ck_assert_int_eq(tern_mutex_unlock(&lock), 0);
    }
    return v;
}

/* Feeds fed[i] until the end; returns the count and check sum it sent. */
static void *feeder(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    uint64_t *acct = calloc(2, sizeof *acct);
    ck_assert_ptr_nonnull(acct);
    for (uint64_t seq = 1; !stopping(); seq++) {
        msg m = {i << 48 | seq, 0};
        m.check = mix(m.id);
        int r = tern_chan_send_until(fed[i], &m, tern_now() + 2 * MS);
        ck_assert_msg(r == 0 || r == -ETIMEDOUT, "feed: %s", tern_strerror(r));
        if (r == 0) {
            acct[0]++;
            acct[1] += m.check;
        }
    }
    return acct;
}

enum { VICTIMS = 8 };

static void *churner(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    while (!stopping()) {
        victim v[VICTIMS];
        tern_task *t[VICTIMS];
        int n = 1 + (int)below(&rs, VICTIMS);
        for (int i = 0; i < n; i++) {
            v[i] = (victim){.kind = (int)below(&rs, 4), .ns = below(&rs, 4 * MS)};
            ck_assert_int_eq(tern_spawn(victim_body, &v[i], &t[i]), 0);
        }
        ck_assert_int_eq(tern_sleep(below(&rs, 3 * MS)), 0);
        for (int i = 0; i < n; i++)
            if (below(&rs, 2))
                tern_task_cancel(t[i]);
        /* then every one still waiting, so that a batch always ends */
        ck_assert_int_eq(tern_sleep(below(&rs, 5 * MS)), 0);
        for (int i = 0; i < n; i++) {
            tern_task_cancel(t[i]);
            ADD(victims, 1);
            ADD(victims_cancelled, (uint64_t)join_checked(t[i], &v[i].p, &v[i]));
        }
    }
    return NULL;
}

/* ---- task groups ------------------------------------------------------------ */

enum { KIDS = 8 };

typedef struct kid {
    int fail; /* return -EIO after the sleep */
    uint64_t ns;
    int entered, done, ret;
} kid;

static int kid_body(void *arg)
{
    kid *k = arg;
    k->entered = 1;
    int r = tern_sleep(k->ns);
    if (r == 0 && k->fail)
        r = -EIO;
    k->ret = r;
    k->done = 1;
    return r;
}

static void *group_driver(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    while (!stopping()) {
        tern_group g;
        kid k[KIDS] = {{0}};
        int n = 2 + (int)below(&rs, KIDS - 1),
            failer = below(&rs, 2) ? (int)below(&rs, n) : -1;
        int spawned = 0, outside = below(&rs, 8) == 0;
        tern_group_init(&g);
        for (int i = 0; i < n; i++) {
            k[i].fail = i == failer;
            k[i].ns = below(&rs, i == failer ? MS : 3 * MS);
            int r = tern_group_spawn(&g, kid_body, &k[i]);
            if (r == -ESHUTDOWN) /* the failer already failed: the group is closing */
                break;
            ck_assert_int_eq(r, 0);
            spawned++;
        }
        if (outside) { /* -EALREADY: the failer got there first */
            ck_assert_int_eq(tern_sleep(below(&rs, 2 * MS)), 0);
            int c = tern_group_cancel(&g);
            ck_assert_msg(c == 0 || (c == -EALREADY && failer >= 0), "cancel: %d", c);
        }
        int r = tern_group_wait(&g);
        /* only the failer fails, so its -EIO is the group's unless the
         * outside cancel came first */
        if (!outside)
            ck_assert_int_eq(r, failer >= 0 ? -EIO : 0);
        else
            ck_assert_msg(r == -ECANCELED ||
                              (failer >= 0 && r == -EIO && k[failer].ret == -EIO),
                          "group: %s", tern_strerror(r));
        /* no child outlives the wait; one cancelled before it started never ran */
        for (int i = 0; i < spawned; i++)
            ck_assert_int_eq(k[i].entered, k[i].done);
        ADD(groups, 1);
        ADD(groups_failed, (uint64_t)(r == -EIO));
        ADD(groups_cancelled, (uint64_t)(r == -ECANCELED));
        ADD(children, (uint64_t)spawned);
    }
    return NULL;
}

/* ---- echo: clients verify every byte and hang up at random ----------------- */

enum { PAYLOAD = 16384 };
static int g_lfd;
static uint16_t g_port;

static void *echo_handler(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n, w = 0;
    while ((n = tern_recv(fd, buf, sizeof buf, 0, LONG_DL())) > 0) {
        if ((w = tern_write_all(fd, buf, (size_t)n, NULL, LONG_DL())) < 0)
            break;
        ADD(bytes_echoed, (uint64_t)n);
    }
    /* the client hung up: a close, or a reset (SO_LINGER 0, unread data) */
    ck_assert_msg(n == 0 || n == -ECONNRESET || w == -EPIPE || w == -ECONNRESET,
                  "handler: recv %zd send %zd", n, w);
    ck_assert_int_eq(tern_close(fd), 0);
    ADD(handlers_out, 1);
    return NULL;
}

/* Accepts until cancelled; one detached handler per connection. */
static void *acceptor(void *arg)
{
    for (;;) {
        int fd = tern_accept(g_lfd, NULL, NULL, 0);
        if (fd == -ECANCELED)
            return NULL;
        if (fd == -ECONNABORTED) { /* reset while queued */
            ADD(accept_aborted, 1);
            continue;
        }
        ck_assert_msg(fd >= 0, "accept: %s", tern_strerror(fd));
        ADD(accepted, 1);
        ck_assert_int_eq(tern_spawn(echo_handler, (void *)(intptr_t)fd, NULL), 0);
    }
}

static void fill(unsigned char *p, size_t n, uint64_t *rs)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i % 8 == 0 ? rnd(rs) : p[i - 1] * 31u + 7u);
}

/* One connection's traffic: up to 8 messages echoed and verified, perhaps
 * cut mid-message. Run in its own task, a cancel at a random moment (in a
 * send, a receive, or between) also ends it; the client closes the fd. */
typedef struct conn {
    probe p;
    int fd;
    uint64_t rs;
    unsigned char *out, *in;
} conn;

static void *echo_traffic(void *arg)
{
    conn *c = arg;
    c->p.entered = 1;
    ssize_t r;
    if (below(&c->rs, 4) == 0) { /* nothing to read yet: the deadline expires */
        if (seen(&c->p, (int)(r = tern_recv(c->fd, c->in, 1, 0, tern_now() + MS))) ==
            -ECANCELED)
            return c;
        ck_assert_int_eq(r, -ETIMEDOUT);
        ADD(timeouts, 1);
    }
    int msgs = 1 + (int)below(&c->rs, 8),
        cut = below(&c->rs, 4) ? -1 : (int)below(&c->rs, msgs);
    for (int i = 0; i < msgs; i++) {
        size_t len = 1 + below(&c->rs, PAYLOAD), sent = 0, got = 0;
        fill(c->out, len, &c->rs);
        if (i == cut) /* hang up halfway through a message */
            len = 1 + below(&c->rs, len);
        r = tern_write_all(c->fd, c->out, len, &sent, LONG_DL());
        if (i != cut && r == (ssize_t)len)
            r = tern_read_exact(c->fd, c->in, len, &got, LONG_DL());
        if (seen(&c->p, (int)r) == -ECANCELED || i == cut) {
            ADD(conns_cut, 1);
            ADD(bytes_cut, sent); /* sent, perhaps echoed, never verified */
            return c;
        }
        ck_assert_msg(r == (ssize_t)len, "echo: %zd of %zu (%s)", r, len,
                      tern_strerror((int)r));
        ck_assert_int_eq(memcmp(c->in, c->out, len), 0);
        ADD(bytes_verified, len);
    }
    return c;
}

static void echo_conn(uint64_t *rs, unsigned char *out, unsigned char *in)
{
    conn c = {.fd = tern_tcp_connect("127.0.0.1", g_port, LONG_DL()),
              .rs = rnd(rs) | 1,
              .out = out,
              .in = in};
    ck_assert_msg(c.fd >= 0, "connect: %s", tern_strerror(c.fd));
    ADD(conns, 1);
    if (below(rs, 4)) {
        echo_traffic(&c);
    } else {
        tern_task *t;
        ck_assert_int_eq(tern_spawn(echo_traffic, &c, &t), 0);
        ck_assert_int_eq(tern_sleep(below(rs, 3 * MS)), 0);
        tern_task_cancel(t);
        ADD(conns_cancelled, (uint64_t)join_checked(t, &c.p, &c));
    }
    if (below(rs, 3) == 0) { /* abortive close: the server sees a reset */
        struct linger lg = {1, 0};
        ck_assert_int_eq(setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        ADD(conns_reset, 1);
    }
    ck_assert_int_eq(tern_close(c.fd), 0);
}

static void *echo_client(void *arg)
{
    uint64_t rs = seed_for((uintptr_t)arg);
    unsigned char *out = malloc(PAYLOAD), *in = malloc(PAYLOAD);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(in);
    while (!stopping())
        echo_conn(&rs, out, in);
    free(out);
    free(in);
    return NULL;
}

/* ---- the whole soak ----------------------------------------------------------- */

static const struct {
    tern_task_fn fn;
    int n;
} drivers[] = {
    {spawner, 2}, {timer_task, 3},   {chan_driver, 2},
    {churner, 2}, {group_driver, 2}, {echo_client, 4},
};

enum { MAX_DRIVERS = 16 };

/* Waits (bounded) until *a == *b; the test fails if they never meet. */
static void await_equal(_Atomic uint64_t *a, _Atomic uint64_t *b, const char *what)
{
    for (uint64_t end = tern_now() + WAIT_MS * MS;
         atomic_load(a) != atomic_load(b) && tern_now() < end;)
        ck_assert_int_eq(tern_sleep(MS), 0);
    ck_assert_msg(atomic_load(a) == atomic_load(b), "%s: %llu != %llu", what,
                  (unsigned long long)atomic_load(a), (unsigned long long)atomic_load(b));
}

/* Stops the channel feeders and checks that every message they sent went
 * to a victim or is still in the channel. */
static void settle_fed(tern_task **feeders)
{
    uint64_t sent = 0, sum = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t *acct;
        ck_assert_int_eq(tern_join(feeders[i], (void **)&acct), 0);
        sent += acct[0];
        sum += acct[1];
        free(acct);
        ck_assert_int_eq(tern_chan_close(fed[i]), 0);
        msg m;
        while (tern_chan_try_recv(fed[i], &m) == 1) {
            ADD(fed_recv, 1);
            ADD(fed_sum, m.check);
        }
        tern_chan_release(fed[i]);
    }
    ck_assert_uint_eq(atomic_load(&st.fed_recv), sent);
    ck_assert_uint_eq(atomic_load(&st.fed_sum), sum);
}

static void *soak_main(void *arg)
{
    uint64_t end = *(uint64_t *)arg;
    tern_task *drv[MAX_DRIVERS], *acc, *feeders[2];
    int nd = 0;
    g_lfd = tern_tcp_listen("127.0.0.1", 0, 0, 0);
    ck_assert_msg(g_lfd >= 0, "listen: %s", tern_strerror(g_lfd));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ck_assert_int_eq(tern_sock_local_addr(g_lfd, &ss, &sl), 0);
    g_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    ck_assert_int_eq(tern_spawn(acceptor, NULL, &acc), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(msg), 2, &fed[0]), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(msg), 0, &fed[1]), 0);
    for (uintptr_t i = 0; i < 2; i++)
        ck_assert_int_eq(tern_spawn(feeder, (void *)i, &feeders[i]), 0);
    for (size_t d = 0; d < sizeof drivers / sizeof drivers[0]; d++)
        for (int i = 0; i < drivers[d].n; i++, nd++)
            ck_assert_int_eq(tern_spawn(drivers[d].fn, (void *)(uintptr_t)nd, &drv[nd]),
                             0);

    ck_assert_int_eq(tern_sleep_until(end), 0);
    atomic_store(&stop, 1);
    /* every driver ends its current round by itself, bounded in time */
    for (int i = 0; i < nd; i++)
        ck_assert_int_eq(tern_join(drv[i], NULL), 0);
    settle_fed(feeders);
    await_equal(&st.detached_done, &st.detached, "detached tasks");
    /* every connection made is accepted, and every handler has finished */
    TASK_WAIT_UNTIL(atomic_load(&st.accepted) + atomic_load(&st.accept_aborted) >=
                        atomic_load(&st.conns),
                    WAIT_MS);
    ck_assert_uint_eq(st.accepted + st.accept_aborted, st.conns);
    await_equal(&st.handlers_out, &st.accepted, "echo handlers");
    ck_assert_int_eq(tern_task_cancel(acc), 0);
    int r = tern_join(acc, NULL);
    ck_assert_msg(r == 0 || r == -ECANCELED, "acceptor: %s", tern_strerror(r));
    ck_assert_int_eq(tern_close(g_lfd), 0);
    return NULL;
}

/* ---- shutdown: tasks still waiting when the runtime is freed ------------- */

enum { LINGERERS = 10 };
static _Atomic int lingered;
static tern_chan *limbo;   /* never sent to */
static tern_future *never; /* never completed */

/* Waits for what never comes, as a service's idle tasks do at shutdown:
 * tern_runtime_free must wake each with -ECANCELED and let it finish. */
static void *lingerer(void *arg)
{
    int sv[2] = {-1, -1}, r = 0;
    uint64_t x;
    char c;
    switch ((uintptr_t)arg % 5) {
    case 0:
        r = tern_sleep(3600 * SEC);
        break;
    case 1:
        r = tern_chan_recv(limbo, &x);
        break;
    case 2:
        r = tern_mutex_lock(&lock);
        break; /* the test thread holds it */
    case 3:
        r = tern_future_await(never, NULL, 0);
        break;
    default:
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        r = (int)tern_recv(sv[0], &c, 1, 0, 0);
        ck_assert_int_eq(tern_close(sv[0]), 0);
        ck_assert_int_eq(tern_close(sv[1]), 0);
    }
    ck_assert_int_eq(r, -ECANCELED);
    atomic_fetch_add(&lingered, 1);
    return NULL;
}

/* Leaves LINGERERS tasks waiting and frees rt under them. */
static void free_with_lingerers(tern_runtime *rt)
{
    static const int kinds[5] = {TERN__W_SLEEP, TERN__W_CHAN_RECV, TERN__W_MUTEX,
                                 TERN__W_FUTURE, TERN__W_IO};
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 1, &limbo), 0);
    ck_assert_int_eq(tern_future_new(&never), 0);
    ck_assert_int_eq(tern_mutex_try_lock(&lock), 0);
    tern_task *t[LINGERERS];
    for (uintptr_t i = 0; i < LINGERERS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, lingerer, (void *)i, &t[i]), 0);
    /* each in its wait (one cancelled before it starts would never run its
     * body), then detached as a service's idle tasks are */
    for (int i = 0; i < LINGERERS; i++) {
        WAIT_PARKED(t[i], kinds[i % 5]);
        tern_task_release(t[i]);
    }
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(atomic_load(&lingered), LINGERERS);
    ck_assert_int_eq(tern_mutex_unlock(&lock), 0);
    tern_future_release(never);
    tern_chan_release(limbo);
}

static void check_books(void)
{
    ck_assert_uint_eq(st.spawned, st.ran + st.unstarted);
    ck_assert_uint_eq(guarded, st.locked);
    ck_assert_int_eq(tern_mutex_destroy(&lock), 0);
    /* the server echoed every verified byte, and of the cut messages at
     * most what was sent */
    ck_assert_uint_ge(st.bytes_echoed, st.bytes_verified);
    ck_assert_uint_le(st.bytes_echoed, st.bytes_verified + st.bytes_cut);
#define U(f) (unsigned long long)atomic_load(&st.f)
    printf(
        "soak: spawned %llu (ran %llu, cancelled %llu, never started %llu), sleeps %llu, "
        "timeouts %llu, messages %llu in %llu rounds, victims %llu (cancelled %llu, "
        "locked %llu, fed %llu), groups %llu (failed %llu, cancelled %llu, children "
        "%llu), connections %llu (cut %llu, reset %llu, cancelled %llu), bytes verified "
        "%llu, echoed %llu\n",
        U(spawned), U(ran), U(cancelled), U(unstarted), U(sleeps), U(timeouts), U(msgs),
        U(rounds), U(victims), U(victims_cancelled), U(locked), U(fed_recv), U(groups),
        U(groups_failed), U(groups_cancelled), U(children), U(conns), U(conns_cut),
        U(conns_reset), U(conns_cancelled), U(bytes_verified), U(bytes_echoed));
#undef U
}

static uint64_t env_u64(const char *name, uint64_t deflt)
{
    const char *s = getenv(name);
    return s && *s ? strtoull(s, NULL, 0) : deflt;
}

static unsigned g_secs;

START_TEST(soak)
{
    g_seed = env_u64("TERN_SOAK_SEED", mix(tern_now() ^ (uint64_t)getpid()));
    printf("soak: %u s on %s, TERN_SOAK_SEED=%llu\n", g_secs,
           getenv("TERN_BACKEND") ? getenv("TERN_BACKEND") : "auto",
           (unsigned long long)g_seed);
    fflush(stdout);
    int fds = fd_count();
    tern_mutex_init(&lock);
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = (unsigned)env_u64("TERN_SOAK_WORKERS", 4);
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    const char *be = getenv("TERN_BACKEND");
    if (r != 0 && be && strcmp(be, "io_uring") == 0 && (r == -ENOSYS || r == -EPERM)) {
        test_skip("io_uring unavailable here (%s)", tern_strerror(r));
        return;
    }
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    uint64_t end = tern_now() + g_secs * SEC;
    ck_assert_int_eq(tern_block_on(rt, soak_main, &end, NULL), 0);
    /* detached tasks and the main task are freed just after they finish */
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
    free_with_lingerers(rt);
    ck_assert_int_eq(fd_count(), fds);
    check_books();
}
END_TEST

int main(void)
{
    g_secs = (unsigned)env_u64("TERN_SOAK_SECS", 5);
    Suite *s = suite_create("soak");
    TCase *tc = tcase_create("soak");
    tcase_set_timeout(tc, g_secs + 120.0);
    tcase_add_test(tc, soak);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
