/*
 * Intervals (rt/interval.c): tern_interval for tasks, tern_call_every for
 * loops, and the one rule both follow for missed ticks.
 */
#include "io_helpers.h"

/* ---- the rule ------------------------------------------------------------------ */

START_TEST(tick_rule)
{
    const uint64_t p = 10;
    struct {
        uint64_t due, now;
        int policy;
        uint64_t next;
    } cases[] = {
        /* on time or late by less than a period: the schedule holds */
        {100, 100, TERN_TICK_BURST, 110},
        {100, 109, TERN_TICK_DELAY, 110},
        {100, 105, TERN_TICK_SKIP, 110},
        {100, 0, TERN_TICK_DELAY, 110},
        /* missed (the next tick is due too when this one is taken) */
        {100, 110, TERN_TICK_BURST, 110},
        {100, 135, TERN_TICK_BURST, 110},
        {100, 110, TERN_TICK_DELAY, 120},
        {100, 135, TERN_TICK_DELAY, 145},
        {100, 110, TERN_TICK_SKIP, 120},
        {100, 135, TERN_TICK_SKIP, 140},
        {100, 140, TERN_TICK_SKIP, 150},
        /* near the end of time: saturated, never wrapped */
        {UINT64_MAX - 5, UINT64_MAX - 5, TERN_TICK_BURST, UINT64_MAX},
        {100, UINT64_MAX - 3, TERN_TICK_DELAY, UINT64_MAX},
        {100, UINT64_MAX - 3, TERN_TICK_SKIP, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(tern__tick_next(cases[i].due, cases[i].now, p, cases[i].policy) ==
                          cases[i].next,
                      "case %zu", i);
}
END_TEST

/* ---- tern_interval --------------------------------------------------------------- */

static void *bad_args_main(void *arg)
{
    tern_interval *iv;
    ck_assert_int_eq(tern_interval_new(0, MS, TERN_TICK_BURST, NULL), -EINVAL);
    ck_assert_int_eq(tern_interval_new(0, 0, TERN_TICK_BURST, &iv), -EINVAL);
    ck_assert_int_eq(tern_interval_new(0, MS, (tern_missed_tick)7, &iv), -EINVAL);
    ck_assert_int_eq(tern_interval_tick(NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(tern_interval_reset(NULL), -EINVAL);
    ck_assert_uint_eq(tern_interval_next(NULL), 0);
    tern_interval_free(NULL);
    tern_handle *h;
    ck_assert_int_eq(
        tern_call_every(NULL, 0, 0, TERN_TICK_BURST, (tern_callback_fn)free, NULL, &h),
        -EINVAL);
    ck_assert_int_eq(tern_call_every(NULL, 0, MS, (tern_missed_tick)3,
                                     (tern_callback_fn)free, NULL, &h),
                     -EINVAL);
    ck_assert_int_eq(tern_call_every(NULL, 0, MS, TERN_TICK_BURST, NULL, NULL, &h),
                     -EINVAL);
    return NULL;
}

START_TEST(bad_arguments)
{
    tern_runtime *rt = rt_make(1);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, bad_args_main, NULL, NULL), 0);
    /* off the runtime: no task to tick in, no loop of our own */
    tern_interval *iv;
    ck_assert_int_eq(tern_interval_new(0, MS, TERN_TICK_BURST, &iv), 0);
    ck_assert_int_eq(tern_interval_tick(iv, 0, NULL), -EPERM);
    tern_interval_free(iv);
    ck_assert_int_eq(
        tern_call_every(NULL, 0, MS, TERN_TICK_BURST, (tern_callback_fn)free, NULL, NULL),
        -EINVAL);
    ck_assert_int_eq(tern_call_every(tern_runtime_loop(rt, 0), 0, MS, TERN_TICK_BURST,
                                     (tern_callback_fn)free, NULL, NULL),
                     -EPERM);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* 1,000 ticks of 1 ms: each tick's due time is start + k ms exactly (late
 * ticks keep the schedule, so nothing accumulates), and none comes early. */
#define DRIFT_TICKS 1000

static void *no_drift_main(void *arg)
{
    int policy = (int)(intptr_t)arg;
    uint64_t start = tern_now() + MS;
    tern_interval *iv;
    ck_assert_int_eq(tern_interval_new(start, MS, (tern_missed_tick)policy, &iv), 0);
    uint64_t expect = start;
    for (int k = 0; k < DRIFT_TICKS; k++) {
        uint64_t when;
        ck_assert_int_eq(tern_interval_tick(iv, 0, &when), 0);
        uint64_t now = tern_now();
        ck_assert_uint_ge(now, when);
        if (policy == TERN_TICK_BURST)
            ck_assert_uint_eq(when, start + (uint64_t)k * MS);
        else {
            /* DELAY and SKIP move the schedule only after a miss, and then
             * only later */
            ck_assert_uint_ge(when, expect);
        }
        expect = tern_interval_next(iv);
    }
    if (policy == TERN_TICK_SKIP)
        ck_assert_uint_eq((expect - start) % MS, 0); /* still on the grid */
    tern_interval_free(iv);
    return NULL;
}

START_TEST(no_drift)
{
    tern_runtime *rt = rt_make(2);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, no_drift_main, (void *)(intptr_t)_i, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Three ticks missed (a 70 ms sleep on a 20 ms interval), then what each
 * policy makes of them. */
#define P (20 * MS)

static void *missed_main(void *arg)
{
    int policy = (int)(intptr_t)arg;
    tern_interval *iv;
    ck_assert_int_eq(tern_interval_new(0, P, (tern_missed_tick)policy, &iv), 0);
    uint64_t start, when;
    ck_assert_int_eq(tern_interval_tick(iv, 0, &start), 0); /* the first is at once */
    ck_assert_int_eq(tern_sleep(3 * P + P / 2), 0);
    uint64_t before = tern_now();
    ck_assert_int_eq(tern_interval_tick(iv, 0, &when), 0);
    uint64_t after = tern_now();
    ck_assert_uint_eq(when, start + P); /* the oldest missed tick comes first */
    uint64_t next = tern_interval_next(iv);
    switch (policy) {
    case TERN_TICK_BURST:
        for (uint64_t k = 2; k <= 4; k++) {
            ck_assert_int_eq(tern_interval_tick(iv, 0, &when), 0);
            ck_assert_uint_eq(when, start + k * P);
        }
        ck_assert_uint_ge(tern_now(), start + 4 * P);
        break;
    case TERN_TICK_DELAY:
        /* a period after the late tick was taken */
        ck_assert_uint_ge(next, before + P);
        ck_assert_uint_le(next, after + P);
        ck_assert_int_eq(tern_interval_tick(iv, 0, &when), 0);
        ck_assert_uint_eq(when, next);
        ck_assert_uint_ge(tern_interval_next(iv), when + P);
        break;
    default:
        /* the first tick of the old schedule after the late one was taken */
        ck_assert_uint_eq((next - start) % P, 0);
        ck_assert_uint_gt(next, before);
        ck_assert_uint_le(next, after + P);
        ck_assert_int_eq(tern_interval_tick(iv, 0, &when), 0);
        ck_assert_uint_eq(when, next);
    }
    tern_interval_free(iv);
    return NULL;
}

START_TEST(missed_ticks)
{
    tern_runtime *rt = rt_make(1);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, missed_main, (void *)(intptr_t)_i, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

struct ticker {
    tern_interval *iv;
    _Atomic int entered;
    int r;
};

static void *tick_once(void *arg)
{
    struct ticker *t = arg;
    atomic_store(&t->entered, 1);
    t->r = tern_interval_tick(t->iv, 0, NULL);
    return NULL;
}

/* A deadline or a cancel takes no tick; a second waiter is refused;
 * reset moves the schedule. */
static void *deadline_main(void *arg)
{
    tern_interval *iv;
    uint64_t start = tern_now() + 60 * SEC;
    ck_assert_int_eq(tern_interval_new(start, SEC, TERN_TICK_BURST, &iv), 0);
    ck_assert_int_eq(tern_interval_tick(iv, tern_now() + 2 * MS, NULL), -ETIMEDOUT);
    ck_assert_int_eq(tern_interval_tick(iv, 1, NULL), -ETIMEDOUT); /* already past */
    ck_assert_uint_eq(tern_interval_next(iv), start);

    struct ticker t = {.iv = iv};
    tern_task *h;
    ck_assert_int_eq(tern_spawn(tick_once, &t, &h), 0);
    TASK_WAIT_PARKED(h, TERN__W_SLEEP);
    ck_assert_int_eq(tern_interval_tick(iv, 0, NULL), -EBUSY);
    ck_assert_int_eq(tern_task_cancel(h), 0);
    ck_assert_int_eq(tern_join(h, NULL), -ECANCELED);
    ck_assert_int_eq(t.r, -ECANCELED);
    ck_assert_uint_eq(tern_interval_next(iv), start);

    uint64_t before = tern_now();
    ck_assert_int_eq(tern_interval_reset(iv), 0);
    uint64_t next = tern_interval_next(iv);
    ck_assert_uint_ge(next, before + SEC);
    ck_assert_uint_le(next, tern_now() + SEC);
    tern_interval_free(iv);
    return NULL;
}

START_TEST(deadline_cancel_reset)
{
    tern_runtime *rt = rt_make(2);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, deadline_main, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- tern_call_every ----------------------------------------------------------------
 */

struct every {
    tern_handle *h;
    _Atomic int runs;
    int stop_at;
    _Atomic uint64_t last;
    uint64_t due[64]; /* each run's due time, read from the handle's timer */
};

static void every_cb(void *arg)
{
    struct every *e = arg;
    int n = atomic_fetch_add(&e->runs, 1) + 1;
    atomic_store(&e->last, tern_now());
    if (n <= 64)
        e->due[n - 1] = e->h->timer.deadline; /* out of the wheel while it runs */
    if (n == e->stop_at)
        ck_assert_int_eq(tern_handle_cancel(e->h), 0);
}

static void *every_main(void *arg)
{
    /* cancelled by its own callback at the 30th run: exactly 30 runs */
    struct every self = {.stop_at = 30};
    uint64_t first = tern_now();
    ck_assert_int_eq(
        tern_call_every(NULL, first, MS, TERN_TICK_BURST, every_cb, &self, &self.h), 0);
    TASK_WAIT_UNTIL(atomic_load(&self.runs) >= 30, WAIT_MS);
    ck_assert_int_eq(tern_sleep(10 * MS), 0);
    ck_assert_int_eq(atomic_load(&self.runs), 30);
    ck_assert_int_eq(tern_handle_cancelled(self.h), 1);
    ck_assert_int_eq(tern_handle_cancel(self.h), -EALREADY);
    ck_assert_uint_ge(atomic_load(&self.last), first + 29 * MS); /* never early */
    tern_handle_release(self.h);

    /* Held up: this worker busy for 12 periods without a turn of its
     * loop. BURST then makes every missed run, due time after due time;
     * SKIP makes the oldest one and then goes on from the first due time
     * still ahead. */
    for (int policy = TERN_TICK_BURST; policy <= TERN_TICK_SKIP; policy += 2) {
        struct every e = {.stop_at = 20};
        first = tern_now() + MS;
        ck_assert_int_eq(tern_call_every(NULL, first, 2 * MS, (tern_missed_tick)policy,
                                         every_cb, &e, &e.h),
                         0);
        uint64_t hold = first + 24 * MS;
        while (tern_now() < hold)
            spin_units(1); /* no yield */
        TASK_WAIT_UNTIL(atomic_load(&e.runs) >= 20, WAIT_MS);
        for (int k = 0; k < 20; k++) {
            if (policy == TERN_TICK_BURST) {
                ck_assert_uint_eq(e.due[k], first + (uint64_t)k * 2 * MS);
            } else {
                ck_assert_uint_eq((e.due[k] - first) % (2 * MS), 0);
                if (k >= 1) /* past the hold-up: nothing due during it */
                    ck_assert_uint_ge(e.due[k], hold);
            }
        }
        tern_handle_release(e.h);
    }
    return NULL;
}

START_TEST(call_every)
{
    tern_runtime *rt = rt_make(1);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, every_main, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Cancelled from another thread while it keeps running: no run starts
 * after the cancel returns (one may be under way), and the handle is
 * released once, whether the cancel finds it in the wheel or running. */
static void every_start(void *arg)
{
    struct every *e = arg;
    ck_assert_int_eq(
        tern_call_every(NULL, tern_now(), MS / 4, TERN_TICK_SKIP, every_cb, e, &e->h), 0);
}

START_TEST(call_every_cancel_racing)
{
    tern_runtime *rt = rt_make(2);
    if (!rt)
        return;
    for (int round = 0; round < SCALED(40) + 4; round++) {
        struct every e = {.stop_at = -1};
        tern_loop *loop = tern_runtime_loop(rt, (unsigned)round % 2);
        ck_assert_int_eq(tern_call_soon_threadsafe(loop, every_start, &e, NULL), 0);
        WAIT_UNTIL(atomic_load(&e.runs) >= 1 + round % 3, WAIT_MS);
        spin_units((unsigned)round * 7 % 50);
        ck_assert_int_eq(tern_handle_cancel(e.h), 0);
        int at_cancel = atomic_load(&e.runs);
        usleep(3000);
        ck_assert_int_le(atomic_load(&e.runs), at_cancel + 1);
        tern_handle_release(e.h);
    }
    /* freeing the runtime reaps what is left in the wheels (ASan: no leak) */
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A repeating handle still armed when the runtime is freed is dropped. */
static void every_forever(void *arg)
{
    (void)arg;
}

static void *left_armed_main(void *arg)
{
    ck_assert_int_eq(
        tern_call_every(NULL, tern_now(), MS, TERN_TICK_DELAY, every_forever, NULL, NULL),
        0);
    ck_assert_int_eq(tern_sleep(5 * MS), 0);
    return NULL;
}

START_TEST(left_armed_at_free)
{
    tern_runtime *rt = rt_make(1);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, left_armed_main, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static Suite *interval_suite(void)
{
    Suite *s = suite_create("interval");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tick_rule);
    tcase_add_test(tc, bad_arguments);
    tcase_add_loop_test(tc, no_drift, TERN_TICK_BURST, TERN_TICK_SKIP + 1);
    tcase_add_loop_test(tc, missed_ticks, TERN_TICK_BURST, TERN_TICK_SKIP + 1);
    tcase_add_test(tc, deadline_cancel_reset);
    tcase_add_test(tc, call_every);
    tcase_add_test(tc, call_every_cancel_racing);
    tcase_add_test(tc, left_armed_at_free);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(interval_suite());
}
