/* Timer wheel: fire order against a reference, a random model check, cascades
 * through every level and past the wheel's range, next() bounds, cancel
 * racing advance, callbacks that free or re-arm, count bookkeeping. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt/wheel.h"

#ifndef TERN_TEST_SCALE
#define TERN_TEST_SCALE 1
#endif
#define SCALED(n) ((n) / TERN_TEST_SCALE > 0 ? (n) / TERN_TEST_SCALE : 1)
/* Check logs every passing ck_assert (a write per call); in the hot loops
 * only a failing check reaches it. */
#define REQ(c)                                                                           \
    do {                                                                                 \
        if (!(c))                                                                        \
            ck_abort_msg("%s", #c);                                                      \
    } while (0)

#define US 1000ULL
#define MS (1000 * US)
#define SEC (1000 * MS)
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
/* The wheel's range with 1 ms ticks: 64^6 ticks. */
#define RANGE ((uint64_t)1 << 36)

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Uniform-ish in [0, n); n == 0 gives 0. */
static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

/* ---- a log of what advance handed out --------------------------------------------- */

typedef struct {
    tern__timer **fired;
    size_t nfired, cap;
    size_t nreaped;
    uint64_t now; /* the now of the advance being run, to check "never early" */
} rec;

static void rec_init(rec *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->cap = cap;
    r->fired = calloc(cap, sizeof *r->fired);
    ck_assert_ptr_nonnull(r->fired);
}

static void rec_fire(tern__timer *t, void *ctx)
{
    rec *r = ctx;
    REQ(t->deadline <= r->now);
    REQ(atomic_load(&t->state) == TERN__TIMER_FIRED);
    REQ(!(t->prev));
    REQ(r->nfired < r->cap);
    r->fired[r->nfired++] = t;
}

static void rec_reap(tern__timer *t, void *ctx)
{
    rec *r = ctx;
    REQ(atomic_load(&t->state) == TERN__TIMER_CANCELLED);
    r->nreaped++;
}

static uint64_t advance(tern__wheel *w, rec *r, uint64_t now)
{
    r->now = now;
    return tern__wheel_advance(w, now, rec_fire, rec_reap, r);
}

static void arm(tern__wheel *w, tern__timer *t, uint64_t deadline)
{
    t->deadline = deadline;
    tern__wheel_insert(w, t);
}

static int cmp_entry(const void *a, const void *b)
{
    const tern__timer *x = *(tern__timer *const *)a, *y = *(tern__timer *const *)b;
    if (x->deadline != y->deadline)
        return x->deadline < y->deadline ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* ---- basics ----------------------------------------------------------------------- */

START_TEST(empty_wheel)
{
    tern__wheel w;
    rec r;
    rec_init(&r, 1);
    tern__wheel_init(&w, 5 * SEC, 0);
    ck_assert_uint_eq(w.tick_ns, MS);
    ck_assert_uint_eq(tern__wheel_next(&w), UINT64_MAX);
    ck_assert_uint_eq(advance(&w, &r, 6 * SEC), 0);
    ck_assert_uint_eq(advance(&w, &r, UINT64_MAX / 2), 0);
    ck_assert_uint_eq(tern__wheel_next(&w), UINT64_MAX);
    ck_assert_uint_eq(w.count, 0);

    tern__timer t;
    memset(&t, 0, sizeof t);
    ck_assert_int_eq(tern__wheel_remove(&w, &t), 0);
    ck_assert_int_eq(tern__timer_cancel(&t), 0); /* IDLE: nothing to win */
    free(r.fired);
}
END_TEST

/* Entries of one tick have different deadlines: none fires early, the
 * current slot's next() is exact, order is (deadline, seq). */
START_TEST(within_one_tick)
{
    const uint64_t o = 1000 * SEC + 7; /* not tick-aligned */
    tern__wheel w;
    tern__timer t[6];
    rec r;
    rec_init(&r, 16);
    memset(t, 0, sizeof t);
    tern__wheel_init(&w, o, MS);
    arm(&w, &t[0], o + 1500 * US);
    arm(&w, &t[1], o + 1100 * US);
    arm(&w, &t[2], o + 1900 * US);
    arm(&w, &t[3], o + 1100 * US); /* tie with t[1], inserted later */
    arm(&w, &t[4], o - 5);         /* already past */
    arm(&w, &t[5], o);             /* due now */
    ck_assert_uint_eq(tern__wheel_next(&w), o - 5);

    ck_assert_uint_eq(advance(&w, &r, o), 2);
    ck_assert_ptr_eq(r.fired[0], &t[4]);
    ck_assert_ptr_eq(r.fired[1], &t[5]);
    ck_assert_uint_eq(tern__wheel_next(&w), o + MS); /* start of the next slot */
    ck_assert_uint_eq(advance(&w, &r, o + 1099 * US), 0);
    ck_assert_uint_eq(tern__wheel_next(&w), o + 1100 * US); /* now the current slot */
    ck_assert_uint_eq(advance(&w, &r, o + 1200 * US), 2);
    ck_assert_ptr_eq(r.fired[2], &t[1]);
    ck_assert_ptr_eq(r.fired[3], &t[3]);
    ck_assert_uint_eq(tern__wheel_next(&w), o + 1500 * US);
    ck_assert_uint_eq(advance(&w, &r, o + 1500 * US - 1), 0);
    ck_assert_uint_eq(advance(&w, &r, o + 1500 * US), 1);
    ck_assert_uint_eq(advance(&w, &r, o + 1800 * US), 0);
    ck_assert_uint_eq(tern__wheel_next(&w), o + 1900 * US);
    ck_assert_uint_eq(advance(&w, &r, o + 2 * MS), 1);
    ck_assert_ptr_eq(r.fired[5], &t[2]);
    ck_assert_uint_eq(w.count, 0);
    ck_assert_uint_eq(tern__wheel_next(&w), UINT64_MAX);
    free(r.fired);
}
END_TEST

START_TEST(count_bookkeeping)
{
    tern__wheel w;
    tern__timer t[4];
    rec r;
    rec_init(&r, 8);
    memset(t, 0, sizeof t);
    tern__wheel_init(&w, 0, MS);
    arm(&w, &t[0], 10 * MS);
    arm(&w, &t[1], 20 * MS);
    arm(&w, &t[2], 30 * MS);
    arm(&w, &t[3], 5 * HOUR);
    ck_assert_uint_eq(w.count, 4);
    ck_assert_int_eq(tern__wheel_remove(&w, &t[0]), 1);
    ck_assert_int_eq(tern__wheel_remove(&w, &t[0]), 0);
    ck_assert_uint_eq(w.count, 3);
    ck_assert_int_eq(tern__timer_cancel(&t[1]), 1);
    ck_assert_int_eq(tern__timer_cancel(&t[1]), 0);
    ck_assert_uint_eq(w.count, 3); /* cancelled, still linked until reaped */
    /* Re-arming a linked entry moves it: t[2] now due at 40 ms, not 30. */
    arm(&w, &t[2], 40 * MS);
    ck_assert_uint_eq(w.count, 3);
    ck_assert_uint_eq(advance(&w, &r, 35 * MS), 0);
    ck_assert_uint_eq(r.nreaped, 1);
    ck_assert_uint_eq(w.count, 2);
    ck_assert_uint_eq(advance(&w, &r, 40 * MS), 1);
    ck_assert_ptr_eq(r.fired[0], &t[2]);
    ck_assert_int_eq(tern__timer_cancel(&t[2]), 0); /* fired: too late */
    ck_assert_uint_eq(w.count, 1);
    /* A cross-thread style cancel of a far entry is reaped when its coarse
     * slot comes due, long before its deadline. */
    ck_assert_int_eq(tern__timer_cancel(&t[3]), 1);
    uint64_t n = tern__wheel_next(&w);
    ck_assert_uint_lt(n, 5 * HOUR - MS);
    /* Something due just after n must not hold the reap back. */
    arm(&w, &t[1], n + 500 * US);
    ck_assert_uint_eq(advance(&w, &r, n), 0);
    ck_assert_uint_eq(r.nreaped, 2);
    ck_assert_uint_eq(w.count, 1);
    ck_assert_uint_eq(tern__wheel_next(&w), n + 500 * US);
    ck_assert_uint_eq(advance(&w, &r, n + 500 * US), 1);
    ck_assert_uint_eq(w.count, 0);
    /* Removing a cancelled entry on the owner thread works too. */
    arm(&w, &t[0], 6 * HOUR);
    ck_assert_int_eq(tern__timer_cancel(&t[0]), 1);
    ck_assert_int_eq(tern__wheel_remove(&w, &t[0]), 1);
    ck_assert_uint_eq(w.count, 0);
    ck_assert_uint_eq(tern__wheel_next(&w), UINT64_MAX);
    free(r.fired);
}
END_TEST

/* ---- order against a sorted reference --------------------------------------------- */

static uint64_t random_delta(void)
{
    switch (below(8)) {
    case 0:
        return below(3 * MS); /* same or neighbouring ticks, odd ns */
    case 1:
        return below(100) * MS; /* tick-aligned: many equal deadlines */
    case 2:
        return below(10 * SEC);
    case 3:
        return below(10 * MIN);
    case 4:
        return below(10 * HOUR);
    case 5:
        return below(40 * DAY);
    case 6:
        return below(3 * RANGE) * MS / 2; /* up to 1.5 times the range */
    default:
        return below(64 << below(12));
    }
}

START_TEST(order_matches_reference)
{
    const size_t n = SCALED(50000);
    const uint64_t o = 12345 * SEC + 678;
    tern__wheel w;
    tern__timer *t = calloc(n, sizeof *t), **ref = calloc(n, sizeof *ref);
    rec r;
    rec_init(&r, n);
    rng = 0x9e3779b97f4a7c15ULL;
    tern__wheel_init(&w, o, MS);
    for (size_t i = 0; i < n; i++) {
        /* Every fourth deadline repeats an earlier one exactly. */
        uint64_t d = i && below(4) == 0 ? t[below(i)].deadline : o + random_delta();
        arm(&w, &t[i], d);
        ref[i] = &t[i];
    }
    qsort(ref, n, sizeof *ref, cmp_entry);

    uint64_t now = o, prev = o - 1;
    while (w.count) {
        uint64_t next = tern__wheel_next(&w);
        REQ(next <= ref[r.nfired]->deadline);
        size_t before = r.nfired;
        /* Jumps: to next(), past it by a little, or by a lot. */
        switch (below(3)) {
        case 0:
            now = next > now ? next : now;
            break;
        case 1:
            now += below(5 * MS);
            break;
        default:
            now += random_delta() / 4;
        }
        advance(&w, &r, now);
        /* First advance whose now >= deadline: nothing left behind, and
         * everything fired here was not yet due at the previous one. */
        for (size_t i = before; i < r.nfired; i++)
            REQ(r.fired[i]->deadline > prev);
        if (r.nfired < n)
            REQ(ref[r.nfired]->deadline > now);
        prev = now;
    }
    ck_assert_uint_eq(r.nfired, n);
    for (size_t i = 0; i < n; i++)
        REQ(r.fired[i] == ref[i]);
    free(t);
    free(ref);
    free(r.fired);
}
END_TEST

/* ---- random operations against a model -------------------------------------------- */

enum { M_IDLE, M_PENDING, M_CANCELLED };

typedef struct {
    tern__timer *t;
    int *model;
    size_t n;
    uint64_t now;
    uint64_t last_deadline, last_seq; /* order within one advance */
    int any;
    size_t fired, reaped;
} model_ctx;

static void model_fire(tern__timer *t, void *ctx)
{
    model_ctx *m = ctx;
    size_t i = (size_t)(t - m->t);
    REQ(m->model[i] == M_PENDING);
    REQ(t->deadline <= m->now);
    if (m->any) /* (deadline, seq) strictly increasing */
        REQ(t->deadline > m->last_deadline ||
            (t->deadline == m->last_deadline && t->seq > m->last_seq));
    m->any = 1;
    m->last_deadline = t->deadline;
    m->last_seq = t->seq;
    m->model[i] = M_IDLE;
    m->fired++;
}

static void model_reap(tern__timer *t, void *ctx)
{
    model_ctx *m = ctx;
    size_t i = (size_t)(t - m->t);
    REQ(m->model[i] == M_CANCELLED);
    m->model[i] = M_IDLE;
    m->reaped++;
}

static uint64_t random_jump(void)
{
    unsigned r = (unsigned)below(1000);
    if (r < 150)
        return 0;
    if (r < 300)
        return below(MS);
    if (r < 450)
        return MS;
    if (r < 990)
        return below((uint64_t)64 << (6 * below(4))) * MS + below(MS);
    if (r < 998)
        return below((uint64_t)1 << 30) * MS; /* level 5 */
    return below(RANGE) * MS;                 /* a whole rotation */
}

static void model_check(tern__wheel *w, model_ctx *m)
{
    uint64_t linked = 0, min = UINT64_MAX;
    for (size_t i = 0; i < m->n; i++) {
        if (m->model[i] == M_IDLE)
            continue;
        linked++;
        if (m->t[i].deadline < min)
            min = m->t[i].deadline;
    }
    REQ(w->count == linked);
    uint64_t next = tern__wheel_next(w);
    if (!linked)
        REQ(next == UINT64_MAX);
    else
        REQ(next <= min);
}

START_TEST(random_ops_model)
{
    const size_t ops = SCALED(100000), n = 300;
    tern__wheel w;
    model_ctx m = {.t = calloc(n, sizeof(tern__timer)),
                   .model = calloc(n, sizeof(int)),
                   .n = n,
                   .now = 77 * DAY + 3};
    rng = 0x2545f4914f6cdd1dULL;
    tern__wheel_init(&w, m.now, MS);
    for (size_t op = 0; op < ops; op++) {
        size_t i = below(n);
        tern__timer *t = &m.t[i];
        switch (below(8)) {
        case 0:
        case 1:
        case 2: /* insert an idle entry */
            if (m.model[i] != M_IDLE)
                break;
            if (below(20) == 0)
                t->deadline = m.now - below(m.now / 2); /* in the past */
            else if (below(10) == 0)
                t->deadline = m.t[below(n)].deadline; /* equal to another */
            else if (below(200) == 0)
                t->deadline = UINT64_MAX;
            else
                t->deadline = m.now + random_delta();
            tern__wheel_insert(&w, t);
            m.model[i] = M_PENDING;
            break;
        case 3: /* owner-side remove: a cancel afterwards loses */
            REQ(tern__wheel_remove(&w, t) == (m.model[i] != M_IDLE));
            m.model[i] = M_IDLE;
            break;
        case 4: /* cancel, as another thread would */
            REQ(tern__timer_cancel(t) == (m.model[i] == M_PENDING));
            if (m.model[i] == M_PENDING)
                m.model[i] = M_CANCELLED;
            break;
        default: { /* advance */
            m.now += random_jump();
            m.any = 0;
            size_t before = m.fired;
            uint64_t got = tern__wheel_advance(&w, m.now, model_fire, model_reap, &m);
            REQ(got == m.fired - before);
            /* Every due entry went out now: pending ones fired, cancelled
             * ones reaped. */
            for (size_t j = 0; j < n; j++)
                if (m.model[j] != M_IDLE)
                    REQ(m.t[j].deadline > m.now);
        }
        }
        model_check(&w, &m);
    }
    /* Drain: the end of time, then whatever waits for UINT64_MAX. */
    m.now = UINT64_MAX - 1;
    m.any = 0;
    tern__wheel_advance(&w, m.now, model_fire, model_reap, &m);
    for (size_t j = 0; j < n; j++) {
        if (m.model[j] == M_IDLE)
            continue;
        ck_assert_uint_eq(m.t[j].deadline, UINT64_MAX);
        ck_assert_int_eq(tern__wheel_remove(&w, &m.t[j]), 1);
        m.model[j] = M_IDLE;
    }
    model_check(&w, &m);
    ck_assert_uint_gt(m.fired, ops / 20);
    ck_assert_uint_gt(m.reaped, ops / 200);
    free(m.t);
    free(m.model);
}
END_TEST

/* ---- cascades through all levels, and beyond the range ---------------------------- */

static const uint64_t level_deadlines[] = {
    1 * MS,         70 * MS,   5 * SEC,       5 * MIN,           5 * HOUR,
    3 * DAY,        30 * DAY,  800 * DAY,     5 * 365 * DAY,     1 * MS + 123,
    5 * HOUR + 999, RANGE *MS, RANGE *MS + 1, 2 * RANGE *MS - 1,
};
#define NLEVEL (sizeof level_deadlines / sizeof level_deadlines[0])

/* Starts: 0, unaligned, and just before a rotation boundary of each level. */
static uint64_t cascade_start(int i)
{
    static const uint64_t starts[] = {0, 7 * MS + 3, (RANGE - 5) * MS + 17,
                                      (((uint64_t)1 << 30) - 1) * MS,
                                      (((uint64_t)1 << 12) - 2) * MS + 999999};
    return starts[i];
}

static void cascade_setup(tern__wheel *w, tern__timer *t, uint64_t *base, int start)
{
    const uint64_t o = 3 * SEC + 1;
    rec r;
    rec_init(&r, 1);
    memset(t, 0, NLEVEL * sizeof *t);
    tern__wheel_init(w, o, MS);
    *base = o + cascade_start(start);
    advance(w, &r, *base); /* move the wheel's own time off zero */
    for (size_t i = 0; i < NLEVEL; i++)
        arm(w, &t[i], *base + level_deadlines[i]);
    free(r.fired);
}

/* Driven by next(): each entry fires exactly at its deadline, next() is
 * never late, and the number of early wakes stays small. */
START_TEST(cascade_by_next)
{
    tern__wheel w;
    tern__timer t[NLEVEL], *ref[NLEVEL];
    uint64_t base;
    rec r;
    rec_init(&r, NLEVEL);
    cascade_setup(&w, t, &base, _i);
    for (size_t i = 0; i < NLEVEL; i++)
        ref[i] = &t[i];
    qsort(ref, NLEVEL, sizeof *ref, cmp_entry);
    unsigned wakes = 0;
    while (w.count) {
        uint64_t next = tern__wheel_next(&w);
        ck_assert_uint_le(next, ref[r.nfired]->deadline);
        size_t before = r.nfired;
        advance(&w, &r, next);
        for (size_t i = before; i < r.nfired; i++)
            ck_assert_uint_eq(r.fired[i]->deadline, next);
        ck_assert_uint_lt(++wakes, 200);
    }
    for (size_t i = 0; i < NLEVEL; i++)
        ck_assert_ptr_eq(r.fired[i], ref[i]);
    free(r.fired);
}
END_TEST

/* Driven by the clock: one ns before each deadline nothing fires, at the
 * deadline exactly that entry does. */
START_TEST(cascade_by_deadline)
{
    tern__wheel w;
    tern__timer t[NLEVEL], *ref[NLEVEL];
    uint64_t base;
    rec r;
    rec_init(&r, NLEVEL);
    cascade_setup(&w, t, &base, _i);
    for (size_t i = 0; i < NLEVEL; i++)
        ref[i] = &t[i];
    qsort(ref, NLEVEL, sizeof *ref, cmp_entry);
    for (size_t i = 0; i < NLEVEL; i++) {
        ck_assert_uint_eq(advance(&w, &r, ref[i]->deadline - 1), 0);
        ck_assert_uint_eq(advance(&w, &r, ref[i]->deadline), 1);
        ck_assert_ptr_eq(r.fired[i], ref[i]);
    }
    ck_assert_uint_eq(w.count, 0);
    free(r.fired);
}
END_TEST

/* One jump past everything: all fire, in order, in one call. */
START_TEST(cascade_one_jump)
{
    tern__wheel w;
    tern__timer t[NLEVEL], *ref[NLEVEL];
    uint64_t base;
    rec r;
    rec_init(&r, NLEVEL);
    cascade_setup(&w, t, &base, _i);
    for (size_t i = 0; i < NLEVEL; i++)
        ref[i] = &t[i];
    qsort(ref, NLEVEL, sizeof *ref, cmp_entry);
    ck_assert_uint_eq(advance(&w, &r, base + 10 * 365 * DAY), NLEVEL);
    for (size_t i = 0; i < NLEVEL; i++)
        ck_assert_ptr_eq(r.fired[i], ref[i]);
    ck_assert_uint_eq(tern__wheel_next(&w), UINT64_MAX);
    free(r.fired);
}
END_TEST

/* ---- callbacks that free, re-arm, remove ------------------------------------------ */

static void free_fire(tern__timer *t, void *ctx)
{
    (*(size_t *)ctx)++;
    memset(t, 0xa5, sizeof *t); /* the wheel must not look at it again */
    free(t);
}

START_TEST(callback_frees)
{
    const size_t n = SCALED(20000);
    tern__wheel w;
    size_t done = 0;
    rng = 42;
    tern__wheel_init(&w, 0, MS);
    for (size_t i = 0; i < n; i++) {
        tern__timer *t = calloc(1, sizeof *t);
        arm(&w, t, random_delta());
        if (i % 5 == 0)
            ck_assert_int_eq(tern__timer_cancel(t), 1);
    }
    uint64_t now = 0;
    while (w.count)
        tern__wheel_advance(&w, now += below(DAY), free_fire, free_fire, &done);
    ck_assert_uint_eq(done, n);
}
END_TEST

typedef struct {
    tern__wheel *w;
    tern__timer *victim; /* removed and freed by the first fire */
    uint64_t rearm_at;   /* where the periodic one goes next */
    int left, fired, victim_fired;
} cb_ctx;

static void periodic_fire(tern__timer *t, void *ctx)
{
    cb_ctx *c = ctx;
    c->fired++;
    if (t == c->victim)
        c->victim_fired = 1;
    if (c->victim && t != c->victim) {
        ck_assert_int_eq(tern__wheel_remove(c->w, c->victim), 1);
        free(c->victim);
        c->victim = NULL;
    }
    if (c->left-- > 0) {
        t->deadline = c->rearm_at ? c->rearm_at : t->deadline + 7 * MS;
        tern__wheel_insert(c->w, t);
    }
}

static uint64_t cb_advance(cb_ctx *c, uint64_t now)
{
    return tern__wheel_advance(c->w, now, periodic_fire, periodic_fire, c);
}

/* A callback re-arms its own entry: at a later time, then at an already due
 * one. Entries armed during an advance fire at the next call, never in the
 * same one, so neither case can spin. */
START_TEST(callback_rearms)
{
    tern__wheel w;
    tern__timer t;
    cb_ctx c = {.w = &w, .left = 10};
    memset(&t, 0, sizeof t);
    tern__wheel_init(&w, 0, MS);
    arm(&w, &t, 7 * MS);
    /* One big jump per call: each call fires the periodic entry once. */
    for (int i = 1; i <= 11; i++) {
        ck_assert_uint_eq(cb_advance(&c, SEC), 1);
        ck_assert_int_eq(c.fired, i);
        if (i <= 10) {
            ck_assert_uint_eq(t.deadline, (uint64_t)(i + 1) * 7 * MS);
            ck_assert_uint_le(tern__wheel_next(&w), SEC); /* already due: poll */
        }
    }
    ck_assert_uint_eq(cb_advance(&c, SEC), 0);
    ck_assert_uint_eq(w.count, 0);

    /* Re-armed at the current time: due, yet fires only at the next call. */
    c.left = 1000;
    c.rearm_at = SEC;
    c.fired = 0;
    arm(&w, &t, SEC);
    for (int i = 1; i <= 1000; i++)
        ck_assert_uint_eq(cb_advance(&c, SEC), 1);
    ck_assert_uint_eq(cb_advance(&c, SEC), 1);
    ck_assert_uint_eq(w.count, 0);
}
END_TEST

/* The first entry of a batch removes and frees a later one of the same
 * batch; the later one must not fire. */
START_TEST(callback_removes_other)
{
    tern__wheel w;
    tern__timer a;
    cb_ctx c = {.w = &w};
    memset(&a, 0, sizeof a);
    tern__wheel_init(&w, 0, MS);
    c.victim = calloc(1, sizeof *c.victim);
    arm(&w, &a, 5 * MS);
    arm(&w, c.victim, 5 * MS); /* same deadline, later seq */
    ck_assert_uint_eq(cb_advance(&c, 10 * MS), 1);
    ck_assert_int_eq(c.victim_fired, 0);
    ck_assert_ptr_null(c.victim);
    ck_assert_uint_eq(w.count, 0);
}
END_TEST

/* A callback arms several overdue entries in falling deadline order: they
 * wait for the next call (same tick) and then fire in deadline order, and
 * next() sees the earliest of them. */
typedef struct {
    tern__wheel *w;
    tern__timer *kids; /* 3 */
    tern__timer *order[4];
    int n;
} spawn_ctx;

static void spawn_fire(tern__timer *t, void *ctx)
{
    spawn_ctx *c = ctx;
    c->order[c->n++] = t;
    if (t->kind == 1)
        for (int i = 0; i < 3; i++) {
            c->kids[i].deadline = t->deadline - 10 * (uint64_t)(i + 1);
            tern__wheel_insert(c->w, &c->kids[i]);
        }
}

START_TEST(callback_arms_out_of_order)
{
    tern__wheel w;
    tern__timer parent, kids[3];
    spawn_ctx c = {.w = &w, .kids = kids};
    memset(&parent, 0, sizeof parent);
    memset(kids, 0, sizeof kids);
    parent.kind = 1;
    tern__wheel_init(&w, 0, MS);
    arm(&w, &parent, 5 * MS + 500);
    const uint64_t now = 5 * MS + 600;
    ck_assert_uint_eq(tern__wheel_advance(&w, now, spawn_fire, spawn_fire, &c), 1);
    ck_assert_uint_eq(w.count, 3);
    ck_assert_uint_eq(tern__wheel_next(&w), 5 * MS + 470);
    ck_assert_uint_eq(tern__wheel_advance(&w, now, spawn_fire, spawn_fire, &c), 3);
    ck_assert_ptr_eq(c.order[1], &kids[2]);
    ck_assert_ptr_eq(c.order[2], &kids[1]);
    ck_assert_ptr_eq(c.order[3], &kids[0]);
    ck_assert_uint_eq(w.count, 0);
}
END_TEST

/* ---- cancel from another thread racing advance ------------------------------------ */

typedef struct {
    tern__timer *t;
    size_t n;
    _Atomic int go;
    size_t wins;
    unsigned char *seen; /* owner side: 1 fired, 2 reaped */
} race_ctx;

static void *canceller(void *arg)
{
    race_ctx *c = arg;
    uint64_t s = 0x1234567;
    while (!atomic_load_explicit(&c->go, memory_order_acquire))
        sched_yield();
    for (size_t k = 0; k < c->n; k++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        /* Mostly in deadline order, so the cancels meet the advancing
         * front, sometimes anywhere. */
        size_t i = s % 4 ? k : (size_t)(s >> 8) % c->n;
        c->wins += (size_t)tern__timer_cancel(&c->t[i]);
        if (!(k & 63))
            sched_yield();
    }
    return NULL;
}

static void race_fire(tern__timer *t, void *ctx)
{
    race_ctx *c = ctx;
    size_t i = (size_t)(t - c->t);
    REQ(c->seen[i] == 0);
    c->seen[i] = 1;
}

static void race_reap(tern__timer *t, void *ctx)
{
    race_ctx *c = ctx;
    size_t i = (size_t)(t - c->t);
    REQ(c->seen[i] == 0);
    c->seen[i] = 2;
}

START_TEST(cancel_races_advance)
{
    race_ctx c = {.n = SCALED(50000)};
    tern__wheel w;
    pthread_t th;
    c.t = calloc(c.n, sizeof *c.t);
    c.seen = calloc(c.n, 1);
    tern__wheel_init(&w, 0, MS);
    /* Deadlines rise with the index, several per tick. */
    for (size_t i = 0; i < c.n; i++)
        arm(&w, &c.t[i], i * 50 * US + i % 7);
    ck_assert_int_eq(pthread_create(&th, NULL, canceller, &c), 0);
    atomic_store_explicit(&c.go, 1, memory_order_release);
    uint64_t fired = 0, end = c.n * 50 * US;
    for (uint64_t now = 0; now <= end; now += 20 * US)
        fired += tern__wheel_advance(&w, now, race_fire, race_reap, &c);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    fired += tern__wheel_advance(&w, end + SEC, race_fire, race_reap, &c);
    ck_assert_uint_eq(w.count, 0);
    size_t nfired = 0, nreaped = 0;
    for (size_t i = 0; i < c.n; i++) {
        uint32_t s = atomic_load(&c.t[i].state);
        ck_assert_int_ne(c.seen[i], 0);
        if (c.seen[i] == 1) {
            nfired++;
            ck_assert_uint_eq(s, TERN__TIMER_FIRED);
        } else {
            nreaped++;
            ck_assert_uint_eq(s, TERN__TIMER_CANCELLED);
        }
    }
    ck_assert_uint_eq(nfired, fired);
    ck_assert_uint_eq(nreaped, c.wins);
    ck_assert_uint_eq(nfired + nreaped, c.n);
    free(c.t);
    free(c.seen);
}
END_TEST

/* Rounds of K entries, all due: the owner fires them front to back in one
 * advance while the other thread cancels them back to front, so the two meet
 * inside the batch, where fire and cancel race for the same entry. */
enum { ROUND_K = 256 };

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

typedef struct {
    tern__timer t[ROUND_K];
    _Atomic unsigned round;         /* published by the owner */
    _Atomic unsigned started, done; /* published by the canceller */
    unsigned rounds;
    size_t wins; /* the canceller's, this round */
    unsigned char seen[ROUND_K];
} rounds_ctx;

static void *round_canceller(void *arg)
{
    rounds_ctx *c = arg;
    uint64_t s = 0x9e3779b9, delay = 1000; /* ns, adapted below */
    for (unsigned r = 1; r <= c->rounds; r++) {
        /* Acquire: the entries' PENDING state, stored by the owner's
         * insert before it published r, is what the CAS below sees. */
        while (atomic_load_explicit(&c->round, memory_order_acquire) != r)
            sched_yield();
        atomic_store_explicit(&c->started, r, memory_order_relaxed);
        /* Start after a random delay, so the meeting point moves through
         * the batch; the delay's range adapts so both sides keep winning
         * some (timing differs with the machine, its load, sanitizers). */
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint64_t until = mono_ns() + s % (delay + 1);
        while (mono_ns() < until)
            ;
        size_t wins = 0;
        for (int i = ROUND_K - 1; i >= 0; i--)
            wins += (size_t)tern__timer_cancel(&c->t[i]);
        if (wins == ROUND_K && delay < 10 * MS)
            delay = delay * 2 + 100;
        else if (wins == 0)
            delay /= 2;
        c->wins = wins;
        atomic_store_explicit(&c->done, r, memory_order_release);
    }
    return NULL;
}

static void round_fire(tern__timer *t, void *ctx)
{
    rounds_ctx *c = ctx;
    REQ(c->seen[t - c->t] == 0);
    c->seen[t - c->t] = 1;
}

static void round_reap(tern__timer *t, void *ctx)
{
    rounds_ctx *c = ctx;
    REQ(c->seen[t - c->t] == 0);
    c->seen[t - c->t] = 2;
}

START_TEST(cancel_races_fire)
{
    rounds_ctx *c = calloc(1, sizeof *c);
    tern__wheel w;
    pthread_t th;
    size_t fired_total = 0, wins_total = 0;
    c->rounds = SCALED(4000);
    tern__wheel_init(&w, 0, MS);
    ck_assert_int_eq(pthread_create(&th, NULL, round_canceller, c), 0);
    for (unsigned r = 1; r <= c->rounds; r++) {
        uint64_t now = r * MS;
        memset(c->seen, 0, sizeof c->seen);
        for (int i = 0; i < ROUND_K; i++)
            arm(&w, &c->t[i], now - (uint64_t)(ROUND_K - i)); /* all due, in order */
        atomic_store_explicit(&c->round, r, memory_order_release);
        while (atomic_load_explicit(&c->started, memory_order_relaxed) != r)
            sched_yield();
        uint64_t fired = tern__wheel_advance(&w, now, round_fire, round_reap, c);
        while (atomic_load_explicit(&c->done, memory_order_acquire) != r)
            sched_yield();
        REQ(w.count == 0); /* all were due: each fired or reaped */
        size_t nfired = 0, nreaped = 0;
        for (int i = 0; i < ROUND_K; i++) {
            uint32_t st = atomic_load(&c->t[i].state);
            REQ(c->seen[i] != 0);
            REQ(st == (c->seen[i] == 1 ? TERN__TIMER_FIRED : TERN__TIMER_CANCELLED));
            nfired += c->seen[i] == 1;
            nreaped += c->seen[i] == 2;
        }
        REQ(nfired == fired);
        REQ(nreaped == c->wins);
        fired_total += fired;
        wins_total += nreaped;
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    /* Both sides won some, or the race was not exercised. */
    ck_assert_uint_gt(fired_total, 0);
    ck_assert_uint_gt(wins_total, 0);
    free(c);
}
END_TEST

/* ---- large jumps ------------------------------------------------------------------ */

/* Ten years in one call and a million tiny calls over an idle wheel: both
 * must be cheap (a tick-by-tick walk would be 3e11 iterations). */
START_TEST(large_jumps_are_cheap)
{
    tern__wheel w;
    tern__timer t[3];
    rec r;
    rec_init(&r, 3);
    memset(t, 0, sizeof t);
    tern__wheel_init(&w, 0, MS);
    arm(&w, &t[0], 9 * 365 * DAY);
    arm(&w, &t[1], 2 * 365 * DAY);
    arm(&w, &t[2], UINT64_MAX - 1);
    ck_assert_uint_eq(advance(&w, &r, 10 * 365 * DAY), 2);
    ck_assert_ptr_eq(r.fired[0], &t[1]);
    ck_assert_ptr_eq(r.fired[1], &t[0]);
    ck_assert_uint_le(tern__wheel_next(&w), UINT64_MAX - 1);
    uint64_t now = 10 * 365 * DAY;
    for (size_t i = 0; i < SCALED(1000000); i++)
        REQ(advance(&w, &r, now += 997 * US) == 0);
    ck_assert_uint_eq(advance(&w, &r, UINT64_MAX - 1), 1);
    ck_assert_uint_eq(w.count, 0);
    free(r.fired);
}
END_TEST

static Suite *wheel_suite(void)
{
    Suite *s = suite_create("wheel");
    TCase *tc = tcase_create("wheel");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, empty_wheel);
    tcase_add_test(tc, within_one_tick);
    tcase_add_test(tc, count_bookkeeping);
    tcase_add_test(tc, order_matches_reference);
    tcase_add_test(tc, random_ops_model);
    tcase_add_loop_test(tc, cascade_by_next, 0, 5);
    tcase_add_loop_test(tc, cascade_by_deadline, 0, 5);
    tcase_add_loop_test(tc, cascade_one_jump, 0, 5);
    tcase_add_test(tc, callback_frees);
    tcase_add_test(tc, callback_rearms);
    tcase_add_test(tc, callback_removes_other);
    tcase_add_test(tc, callback_arms_out_of_order);
    tcase_add_test(tc, cancel_races_advance);
    tcase_add_test(tc, cancel_races_fire);
    tcase_add_test(tc, large_jumps_are_cheap);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wheel_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
