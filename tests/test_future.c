/* Futures, done callbacks, tasks as futures, gather / wait_any / wait_for /
 * shield, and task groups. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "sync/sync.h"

#define MS 1000000ull
/* A delay that never ends within a test: the teardown cancels it. */
#define NEVER 3600000ull

/* The waiters queued on f, tasks and foreign threads alike. */
static size_t future_waiting(tern_future *f)
{
    return tern__future_waiting(f);
}

START_TEST(future_outcomes)
{
    tern_future *f;
    void *v = NULL;
    ck_assert_int_eq(tern_future_new(&f), 0);
    ck_assert_int_eq(tern_future_done(f), 0);
    ck_assert_int_eq(tern_future_result(f, &v), -EAGAIN);
    ck_assert_int_eq(tern_future_set_result(f, (void *)7), 0);
    ck_assert_int_eq(tern_future_set_result(f, (void *)8), -EALREADY);
    ck_assert_int_eq(tern_future_set_error(f, -EIO), -EALREADY);
    ck_assert_int_eq(tern_future_cancel(f), -EALREADY);
    ck_assert_int_eq(tern_future_done(f), 1);
    ck_assert_int_eq(tern_future_cancelled(f), 0);
    ck_assert_int_eq(tern_future_result(f, &v), 0);
    ck_assert_ptr_eq(v, (void *)7);
    ck_assert_int_eq(tern_future_result(f, NULL), 0);
    ck_assert_int_eq(tern_future_wait(f, 0), 0);
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0);
    ck_assert_ptr_eq(tern_future_ref(f), f);
    tern_future_release(f);
    tern_future_release(f);

    ck_assert_int_eq(tern_future_new(&f), 0);
    ck_assert_int_eq(tern_future_set_error(f, 0), -EINVAL);
    ck_assert_int_eq(tern_future_set_error(f, 5), -EINVAL);
    ck_assert_int_eq(tern_future_set_error(f, INT_MIN), -EINVAL); /* no such errno */
    ck_assert_int_eq(tern_future_done(f), 0);
    ck_assert_int_eq(tern_future_set_error(f, -EIO), 0);
    ck_assert_int_eq(tern_future_result(f, &v), -EIO);
    ck_assert_int_eq(tern_future_cancelled(f), 0);
    tern_future_release(f);

    ck_assert_int_eq(tern_future_new(&f), 0);
    ck_assert_int_eq(tern_future_cancel(f), 0);
    ck_assert_int_eq(tern_future_cancelled(f), 1);
    ck_assert_int_eq(tern_future_result(f, &v), -ECANCELED);
    tern_future_release(f);
}
END_TEST

static void noop_cb(tern_future *f, void *arg) {}

START_TEST(future_bad_arguments)
{
    tern_future *f;
    ck_assert_int_eq(tern_future_new(NULL), -EINVAL);
    ck_assert_int_eq(tern_future_set_result(NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_future_set_error(NULL, -EIO), -EINVAL);
    ck_assert_int_eq(tern_future_cancel(NULL), -EINVAL);
    ck_assert_int_eq(tern_future_done(NULL), 0);
    ck_assert_int_eq(tern_future_cancelled(NULL), 0);
    ck_assert_int_eq(tern_future_result(NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_future_wait(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_future_await(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_future_add_done_callback(NULL, NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(tern_future_remove_done_callback(NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(tern_task_future(NULL, &f), -EINVAL);
    ck_assert_int_eq(tern_future_shield(NULL, &f), -EINVAL);
    ck_assert_int_eq(tern_wait_for(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_gather(NULL, 1, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_gather(NULL, 0, 0, 0), -EINVAL);
    /* nothing to gather: done at once, and fs[0] is never read (here it
     * lies past the end of `none`, which ASan would report) */
    tern_future *none[1];
    ck_assert_int_eq(tern_gather(none + 1, 0, 0, 0), 0);
    ck_assert_int_eq(tern_wait_any(NULL, 0, 0), -EINVAL);
    ck_assert_ptr_null(tern_future_ref(NULL));
    tern_future_release(NULL);
    ck_assert_int_eq(tern_future_new(&f), 0);
    /* off a worker, a callback needs an explicit loop */
    ck_assert_int_eq(tern_future_add_done_callback(f, NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(tern_future_add_done_callback(f, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_future_shield(f, NULL), -EINVAL);
    tern_future *list[2] = {f, NULL};
    ck_assert_int_eq(tern_gather(list, 2, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_gather(list, 1, 0x10, 0), -EINVAL);
    ck_assert_int_eq(tern_wait_any(list, 2, 0), -EINVAL);
    tern_future_release(f);
}
END_TEST

/* ---- exactly once, from many threads ----------------------------------------- */

enum { RACERS = 4 };
static tern_future **race_fs;
static unsigned race_n;
static _Atomic unsigned race_wins;
static pthread_barrier_t race_bar;

static void *racer(void *arg)
{
    intptr_t me = (intptr_t)arg;
    pthread_barrier_wait(&race_bar);
    for (unsigned i = 0; i < race_n; i++) {
        int r = me == 0   ? tern_future_set_result(race_fs[i], (void *)1)
                : me == 1 ? tern_future_set_error(race_fs[i], -EIO)
                : me == 2 ? tern_future_cancel(race_fs[i])
                          : tern_future_set_result(race_fs[i], (void *)2);
        if (r == 0)
            atomic_fetch_add(&race_wins, 1);
        else
            ck_assert_int_eq(r, -EALREADY);
    }
    return NULL;
}

static void *race_waiter(void *arg)
{
    for (unsigned i = 0; i < race_n; i++)
        ck_assert_int_eq(tern_future_wait(race_fs[i], 0), 0);
    return NULL;
}

START_TEST(complete_exactly_once_racing)
{
    race_n = SCALED(20000);
    race_fs = calloc(race_n, sizeof *race_fs);
    for (unsigned i = 0; i < race_n; i++)
        ck_assert_int_eq(tern_future_new(&race_fs[i]), 0);
    pthread_barrier_init(&race_bar, NULL, RACERS);
    pthread_t th[RACERS], w;
    pthread_create(&w, NULL, race_waiter, NULL);
    for (intptr_t i = 0; i < RACERS; i++)
        pthread_create(&th[i], NULL, racer, (void *)i);
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_join(w, NULL);
    ck_assert_uint_eq(atomic_load(&race_wins), race_n);
    for (unsigned i = 0; i < race_n; i++) {
        ck_assert(tern_future_done(race_fs[i]));
        tern_future_release(race_fs[i]);
    }
    free(race_fs);
    pthread_barrier_destroy(&race_bar);
}
END_TEST

/* ---- waiting ----------------------------------------------------------------------- */

static tern_future *shared_f;
static _Atomic int woken;

static void *wait_shared(void *arg)
{
    void *v;
    ck_assert_int_eq(tern_future_await(shared_f, &v, 0), 0);
    ck_assert_ptr_eq(v, (void *)42);
    atomic_fetch_add(&woken, 1);
    return NULL;
}

static void *thread_wait_shared(void *arg)
{
    return wait_shared(arg);
}

START_TEST(many_waiters_all_woken)
{
    enum { TASKS = 200, THREADS = 4 };
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_future_new(&shared_f), 0);
    atomic_store(&woken, 0);
    tern_task *t[TASKS];
    pthread_t th[THREADS];
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, wait_shared, NULL, &t[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, thread_wait_shared, NULL);
    /* every one queued, so the completion has all of them to wake */
    WAIT_UNTIL(future_waiting(shared_f) == TASKS + THREADS, WAIT_MS);
    ck_assert_int_eq(atomic_load(&woken), 0);
    ck_assert_int_eq(tern_future_set_result(shared_f, (void *)42), 0);
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(atomic_load(&woken), TASKS + THREADS);
    tern_future_release(shared_f);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static _Atomic int timed_out_once;

static void *wait_deadline(void *arg)
{
    tern_future *f = arg;
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_future_wait(f, t0 + 20 * MS), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now() - t0, 20 * MS);
    /* tells the second wait from the first; that the task waits in it is
     * seen from its state */
    atomic_store(&timed_out_once, 1);
    return (void *)(intptr_t)tern_future_wait(f, 0); /* cancelled here */
}

START_TEST(wait_deadline_and_cancel)
{
    tern_runtime *rt = rt_new(2);
    tern_future *f;
    ck_assert_int_eq(tern_future_new(&f), 0);
    tern_task *t;
    atomic_store(&timed_out_once, 0);
    ck_assert_int_eq(tern_runtime_spawn(rt, wait_deadline, f, &t), 0);
    WAIT_UNTIL(atomic_load(&timed_out_once), WAIT_MS);
    WAIT_PARKED(t, TERN__W_FUTURE);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(tern_future_done(f), 0); /* the waiter's cancel leaves f alone */
    /* a foreign thread times out too */
    ck_assert_int_eq(tern_future_wait(f, tern_now() + 10 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_future_set_result(f, NULL), 0);
    tern_future_release(f);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- done callbacks ---------------------------------------------------------------- */

enum { CBS = 64 };
static struct {
    _Atomic int slot, n; /* slots taken; records complete (release) */
    int order[CBS * 2];
    tern_loop *loop[CBS * 2];
} cbrec;

static void record_cb(tern_future *f, void *arg)
{
    int i = atomic_fetch_add(&cbrec.slot, 1);
    cbrec.order[i] = (int)(intptr_t)arg;
    cbrec.loop[i] = tern_loop_current();
    atomic_fetch_add(&cbrec.n, 1);
    ck_assert(tern_future_done(f));
    ck_assert_ptr_null(tern_task_current()); /* a loop callback, not a task */
}

static void *add_callbacks(void *arg)
{
    tern_future *f = arg;
    tern_loop *me = tern_loop_current();
    for (intptr_t i = 0; i < CBS; i++)
        ck_assert_int_eq(tern_future_add_done_callback(f, me, record_cb, (void *)i), 0);
    return me;
}

static void *complete_from_thread(void *arg)
{
    ck_assert_int_eq(tern_future_set_result(arg, NULL), 0);
    return NULL;
}

START_TEST(callbacks_run_on_their_loop_in_order)
{
    tern_runtime *rt = rt_new(4);
    tern_future *f;
    ck_assert_int_eq(tern_future_new(&f), 0);
    memset(&cbrec, 0, sizeof cbrec);
    void *loop;
    ck_assert_int_eq(tern_block_on(rt, add_callbacks, f, &loop), 0);
    /* removed callbacks never run */
    tern_loop *other = tern_runtime_loop(rt, 3) == loop ? tern_runtime_loop(rt, 2)
                                                        : tern_runtime_loop(rt, 3);
    ck_assert_int_eq(tern_future_add_done_callback(f, other, record_cb, (void *)1000), 0);
    ck_assert_int_eq(tern_future_add_done_callback(f, other, record_cb, (void *)1000), 0);
    ck_assert_int_eq(tern_future_remove_done_callback(f, record_cb, (void *)1000), 2);
    ck_assert_int_eq(tern_future_remove_done_callback(f, record_cb, (void *)1000), 0);
    pthread_t th;
    pthread_create(&th, NULL, complete_from_thread, f);
    pthread_join(th, NULL);
    WAIT_UNTIL(atomic_load(&cbrec.n) >= CBS, WAIT_MS);
    ck_assert_int_eq(atomic_load(&cbrec.n), CBS);
    for (int i = 0; i < CBS; i++) {
        ck_assert_int_eq(cbrec.order[i], i);
        ck_assert_ptr_eq(cbrec.loop[i], loop);
    }
    /* added after completion: scheduled at once, on the loop asked for */
    ck_assert_int_eq(tern_future_add_done_callback(f, other, record_cb, (void *)99), 0);
    WAIT_UNTIL(atomic_load(&cbrec.n) >= CBS + 1, WAIT_MS);
    ck_assert_int_eq(atomic_load(&cbrec.n), CBS + 1);
    ck_assert_int_eq(cbrec.order[CBS], 99);
    ck_assert_ptr_eq(cbrec.loop[CBS], other);
    ck_assert_int_eq(tern_future_remove_done_callback(f, record_cb, (void *)99), 0);
    tern_future_release(f);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void release_in_cb(tern_future *f, void *arg)
{
    atomic_fetch_add(&woken, 1);
}

START_TEST(callback_keeps_future_alive)
{
    tern_runtime *rt = rt_new(1);
    tern_future *f;
    atomic_store(&woken, 0);
    ck_assert_int_eq(tern_future_new(&f), 0);
    ck_assert_int_eq(
        tern_future_add_done_callback(f, tern_runtime_loop(rt, 0), release_in_cb, NULL),
        0);
    ck_assert_int_eq(tern_future_set_result(f, NULL), 0);
    tern_future_release(f); /* the callback still holds it (ASan checks) */
    WAIT_UNTIL(atomic_load(&woken) >= 1, WAIT_MS);
    ck_assert_int_eq(atomic_load(&woken), 1);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- tasks as futures -------------------------------------------------------------- */

static void *ret_arg(void *arg)
{
    return arg;
}

static void *sleep_long(void *arg)
{
    int r = tern_sleep(10000 * MS);
    if (arg)
        atomic_fetch_add((_Atomic int *)arg, 1);
    return (void *)(intptr_t)r;
}

static void *blocking_job(void *arg)
{
    usleep(1000); /* a job that takes a while: the future is awaited unfinished */
    return arg;
}

START_TEST(task_future_join)
{
    tern_runtime *rt = rt_new(2);
    tern_task *t;
    tern_future *f, *f2;
    void *v;
    ck_assert_int_eq(tern_runtime_spawn(rt, ret_arg, (void *)5, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0);
    ck_assert_ptr_eq(v, (void *)5);
    /* the future joined it; the finished task's result is still there */
    ck_assert_int_eq(tern_join(t, &v), 0);
    ck_assert_ptr_eq(v, (void *)5);
    tern_future_release(f);

    /* while it runs, the future is its only joiner */
    ck_assert_int_eq(tern_runtime_spawn(rt, sleep_long, NULL, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    ck_assert_int_eq(tern_join(t, NULL), -EBUSY);
    ck_assert_int_eq(tern_task_future(t, &f2), -EBUSY);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_future_wait(f, 0), 0);
    tern_task_release(t);
    tern_future_release(f);

    /* a task already finished */
    ck_assert_int_eq(tern_runtime_spawn(rt, ret_arg, (void *)6, &t), 0);
    WAIT_UNTIL(tern_task_done(t), WAIT_MS);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    ck_assert_int_eq(tern_future_done(f), 1);
    ck_assert_int_eq(tern_future_result(f, &v), 0);
    ck_assert_ptr_eq(v, (void *)6);
    tern_task_release(t);
    tern_future_release(f);

    /* cancelling the future cancels the task; the future follows it */
    ck_assert_int_eq(tern_runtime_spawn(rt, sleep_long, NULL, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    tern_task_release(t);
    ck_assert_int_eq(tern_future_cancel(f), 0);
    ck_assert_int_eq(tern_future_wait(f, 0), 0);
    ck_assert_int_eq(tern_future_cancelled(f), 1);
    tern_future_release(f);

    /* a blocking job's result is a future too */
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, blocking_job, (void *)9, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    tern_task_release(t);
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0);
    ck_assert_ptr_eq(v, (void *)9);
    tern_future_release(f);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Many tasks finishing while their futures are taken: each completes once. */
START_TEST(task_future_race)
{
    tern_runtime *rt = rt_new(4);
    unsigned n = SCALED(20000);
    for (unsigned i = 0; i < n; i++) {
        tern_task *t;
        tern_future *f;
        void *v;
        ck_assert_int_eq(tern_runtime_spawn(rt, ret_arg, (void *)(uintptr_t)i, &t), 0);
        ck_assert_int_eq(tern_task_future(t, &f), 0);
        tern_task_release(t);
        ck_assert_int_eq(tern_future_await(f, &v, 0), 0);
        ck_assert_uint_eq((uintptr_t)v, i);
        tern_future_release(f);
    }
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- combinators ------------------------------------------------------------------- */

typedef struct {
    tern_future *f;
    uint64_t delay;
    int err;
    intptr_t value;
} later;

static void *complete_later(void *arg)
{
    later *l = arg;
    if (tern_sleep(l->delay) < 0)
        return NULL;
    if (l->err)
        tern_future_set_error(l->f, l->err);
    else
        tern_future_set_result(l->f, (void *)l->value);
    return NULL;
}

enum { G = 8 };
static tern_future *gf[G];
static later gl[G];
static tern_task *gt[G];

static void gather_setup(tern_runtime *rt, const uint64_t *delays_ms, const int *errs)
{
    for (int i = 0; i < G; i++) {
        ck_assert_int_eq(tern_future_new(&gf[i]), 0);
        gl[i] = (later){gf[i], delays_ms[i] * MS, errs ? errs[i] : 0, i};
        ck_assert_int_eq(tern_runtime_spawn(rt, complete_later, &gl[i], &gt[i]), 0);
    }
}

static void gather_teardown(void)
{
    for (int i = 0; i < G; i++) {
        tern_task_cancel(gt[i]);
        tern_join(gt[i], NULL);
        tern_future_release(gf[i]);
    }
}

static void *gather_all(void *arg)
{
    return (void *)(intptr_t)tern_gather(gf, G, (unsigned)(uintptr_t)arg, 0);
}

START_TEST(gather_semantics)
{
    tern_runtime *rt = rt_new(2);
    static const uint64_t d[G] = {5, 1, 8, 2, 3, 1, 4, 6};
    void *r;
    /* all succeed */
    gather_setup(rt, d, NULL);
    ck_assert_int_eq(tern_block_on(rt, gather_all, NULL, &r), 0);
    ck_assert_int_eq((intptr_t)r, 0);
    for (int i = 0; i < G; i++) {
        void *v;
        ck_assert_int_eq(tern_future_result(gf[i], &v), 0);
        ck_assert_int_eq((intptr_t)v, i);
    }
    gather_teardown();

    /* the first failure returns at once, the slow ones still pending: they
     * never complete on their own, so gather returning at all shows that it
     * did not wait for them (a time bound would not hold on a loaded machine) */
    static const uint64_t d2[G] = {NEVER, NEVER, NEVER, 1, NEVER, NEVER, NEVER, NEVER};
    static const int e2[G] = {0, 0, 0, -EIO, 0, 0, 0, 0};
    gather_setup(rt, d2, e2);
    ck_assert_int_eq(tern_block_on(rt, gather_all, NULL, &r), 0);
    ck_assert_int_eq((intptr_t)r, -EIO);
    for (int i = 0; i < G; i++)
        if (i != 3)
            ck_assert_int_eq(tern_future_done(gf[i]), 0); /* not cancelled by gather */
    gather_teardown();

    /* COLLECT waits for everything and returns 0 */
    static const uint64_t d3[G] = {1, 2, 3, 4, 5, 6, 7, 8};
    static const int e3[G] = {0, -EIO, 0, -EPIPE, 0, 0, 0, 0};
    gather_setup(rt, d3, e3);
    ck_assert_int_eq(
        tern_block_on(rt, gather_all, (void *)(uintptr_t)TERN_GATHER_COLLECT, &r), 0);
    ck_assert_int_eq((intptr_t)r, 0);
    for (int i = 0; i < G; i++)
        ck_assert_int_eq(tern_future_result(gf[i], NULL), e3[i]);
    gather_teardown();

    /* already-failed futures are seen without waiting; n == 0 is fine */
    ck_assert_int_eq(tern_gather(gf, 0, 0, 0), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *gather_deadline(void *arg)
{
    return (void *)(intptr_t)tern_gather(gf, G, 0, tern_now() + 10 * MS);
}

START_TEST(gather_deadline_and_cancel)
{
    tern_runtime *rt = rt_new(2);
    static const uint64_t d[G] = {1, NEVER, NEVER, NEVER, NEVER, NEVER, NEVER, NEVER};
    void *r;
    gather_setup(rt, d, NULL);
    ck_assert_int_eq(tern_block_on(rt, gather_deadline, NULL, &r), 0);
    ck_assert_int_eq((intptr_t)r, -ETIMEDOUT);
    ck_assert_int_eq(tern_future_done(gf[1]), 0);
    gather_teardown();

    /* a cancelled gather cancels what it waits for (asyncio's rule) */
    gather_setup(rt, d, NULL);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, gather_all, NULL, &t), 0);
    /* cancelled in its wait, once the first is done: a task cancelled before
     * it starts never runs its body, so would cancel nothing */
    WAIT_UNTIL(tern_future_done(gf[0]), WAIT_MS);
    WAIT_PARKED(t, TERN__W_FUTURE);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, &r), -ECANCELED);
    ck_assert_int_eq(tern_future_result(gf[0], NULL), 0); /* was done already */
    for (int i = 1; i < G; i++)
        ck_assert_int_eq(tern_future_cancelled(gf[i]), 1);
    gather_teardown();
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Many futures completed from several threads while one gather counts. */
static tern_future **many;
static unsigned nmany;

static void *complete_range(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    for (unsigned i = (unsigned)k; i < nmany; i += 4)
        ck_assert_int_eq(tern_future_set_result(many[i], NULL), 0);
    return NULL;
}

static void *gather_many(void *arg)
{
    return (void *)(intptr_t)tern_gather(many, nmany, 0, 0);
}

START_TEST(gather_many_racing)
{
    tern_runtime *rt = rt_new(2);
    for (int round = 0; round < 20; round++) {
        nmany = SCALED(5000);
        many = calloc(nmany, sizeof *many);
        for (unsigned i = 0; i < nmany; i++)
            ck_assert_int_eq(tern_future_new(&many[i]), 0);
        tern_task *t;
        ck_assert_int_eq(tern_runtime_spawn(rt, gather_many, NULL, &t), 0);
        pthread_t th[4];
        for (uintptr_t k = 0; k < 4; k++)
            pthread_create(&th[k], NULL, complete_range, (void *)k);
        for (int k = 0; k < 4; k++)
            pthread_join(th[k], NULL);
        void *r;
        ck_assert_int_eq(tern_join(t, &r), 0);
        ck_assert_int_eq((intptr_t)r, 0);
        for (unsigned i = 0; i < nmany; i++)
            tern_future_release(many[i]);
        free(many);
    }
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *wait_any_task(void *arg)
{
    return (void *)(intptr_t)tern_wait_any(gf, G, arg ? tern_now() + 10 * MS : 0);
}

START_TEST(wait_any_semantics)
{
    tern_runtime *rt = rt_new(2);
    static const uint64_t d[G] = {NEVER, NEVER, NEVER, NEVER, NEVER, 2, NEVER, NEVER};
    void *r;
    gather_setup(rt, d, NULL);
    ck_assert_int_eq(tern_block_on(rt, wait_any_task, NULL, &r), 0);
    ck_assert_int_eq((intptr_t)r, 5);
    /* several done: the lowest index */
    ck_assert_int_eq(tern_future_set_result(gf[6], NULL), 0);
    ck_assert_int_eq(tern_wait_any(gf, G, 0), 5);
    ck_assert_int_eq(tern_wait_any(gf + 6, 2, 0), 0);
    ck_assert_int_eq(tern_future_done(gf[0]), 0);
    gather_teardown();

    static const uint64_t d2[G] = {NEVER, NEVER, NEVER, NEVER,
                                   NEVER, NEVER, NEVER, NEVER};
    gather_setup(rt, d2, NULL);
    ck_assert_int_eq(tern_block_on(rt, wait_any_task, (void *)1, &r), 0);
    ck_assert_int_eq((intptr_t)r, -ETIMEDOUT);
    /* from a foreign thread, completed by a task */
    tern_future_set_result(gf[3], NULL);
    ck_assert_int_eq(tern_wait_any(gf, G, 0), 3);
    gather_teardown();
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static _Atomic int unwound;

static void *slow_then_unwind(void *arg)
{
    int r = tern_sleep(10000 * MS);
    ck_assert_int_eq(r, -ECANCELED);
    atomic_fetch_add(&unwound, 1);
    return NULL;
}

static void *nap_then_ret(void *arg)
{
    ck_assert_int_eq(tern_sleep(20 * MS), 0);
    return arg;
}

static void *wait_for_task(void *arg)
{
    tern_task *t;
    tern_future *f;
    void *v = NULL;
    ck_assert_int_eq(tern_spawn(ret_arg, (void *)3, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    tern_task_release(t);
    /* a far timeout: it returns when the task does, however slow the machine */
    ck_assert_int_eq(tern_wait_for(f, &v, tern_now() + (uint64_t)WAIT_MS * MS), 0);
    ck_assert_ptr_eq(v, (void *)3);
    tern_future_release(f);

    /* the farthest deadline is "never", not a time that has wrapped into
     * the past: the wait ends when the task does, and nothing is cancelled */
    ck_assert_int_eq(tern_spawn(nap_then_ret, (void *)4, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    tern_task_release(t);
    ck_assert_int_eq(tern_wait_for(f, &v, UINT64_MAX), 0);
    ck_assert_ptr_eq(v, (void *)4);
    ck_assert_int_eq(tern_future_cancelled(f), 0);
    tern_future_release(f);

    ck_assert_int_eq(tern_spawn(slow_then_unwind, NULL, &t), 0);
    ck_assert_int_eq(tern_task_future(t, &f), 0);
    /* asleep first: a task cancelled before it starts never runs its body,
     * and on a loaded machine 10 ms may pass before it does */
    TASK_WAIT_PARKED(t, TERN__W_SLEEP);
    tern_task_release(t);
    ck_assert_int_eq(tern_wait_for(f, &v, tern_now() + 10 * MS), -ETIMEDOUT);
    /* the inner task was cancelled and had unwound before wait_for returned */
    ck_assert_int_eq(atomic_load(&unwound), 1);
    ck_assert_int_eq(tern_future_cancelled(f), 1);
    tern_future_release(f);
    return NULL;
}

START_TEST(wait_for_cancels_on_expiry)
{
    tern_runtime *rt = rt_new(2);
    atomic_store(&unwound, 0);
    ck_assert_int_eq(tern_block_on(rt, wait_for_task, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

START_TEST(shield_protects_inner)
{
    tern_future *inner, *outer, *outer2;
    void *v;
    ck_assert_int_eq(tern_future_new(&inner), 0);
    ck_assert_int_eq(tern_future_shield(inner, &outer), 0);
    ck_assert_int_eq(tern_future_shield(inner, &outer2), 0);
    ck_assert_int_eq(tern_future_cancel(outer), 0);
    ck_assert_int_eq(tern_future_cancelled(outer), 1);
    ck_assert_int_eq(tern_future_done(inner), 0);
    ck_assert_int_eq(tern_future_set_result(inner, (void *)11), 0);
    ck_assert_int_eq(tern_future_await(outer2, &v, 0), 0);
    ck_assert_ptr_eq(v, (void *)11);
    ck_assert_int_eq(tern_future_cancelled(outer), 1);
    tern_future_release(outer);
    tern_future_release(outer2);
    /* shielding a done future completes at once */
    ck_assert_int_eq(tern_future_shield(inner, &outer), 0);
    ck_assert_int_eq(tern_future_result(outer, &v), 0);
    ck_assert_ptr_eq(v, (void *)11);
    tern_future_release(outer);
    tern_future_release(inner);
}
END_TEST

/* ---- task groups ------------------------------------------------------------------- */

static _Atomic int kids_done, kids_cancelled, kids_started;

static int kid_ok(void *arg)
{
    atomic_fetch_add(&kids_done, 1);
    return 0;
}

static int kid_sleeps(void *arg)
{
    atomic_fetch_add(&kids_started, 1);
    int r = tern_sleep(10000 * MS);
    if (r == -ECANCELED)
        atomic_fetch_add(&kids_cancelled, 1);
    atomic_fetch_add(&kids_done, 1);
    return r;
}

static int kid_fails(void *arg)
{
    tern_sleep(5 * MS);
    atomic_fetch_add(&kids_done, 1);
    return -EIO;
}

static void reset_kids(void)
{
    atomic_store(&kids_done, 0);
    atomic_store(&kids_cancelled, 0);
    atomic_store(&kids_started, 0);
}

static int kid_spawns(void *arg)
{
    tern_group *g = arg;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tern_group_spawn(g, kid_ok, NULL), 0);
    ck_assert_int_eq(tern_group_wait(g), -EDEADLK);
    atomic_fetch_add(&kids_done, 1);
    return 0;
}

static void *group_basic(void *arg)
{
    tern_group g;
    tern_group_init(&g);
    reset_kids();
    unsigned n = SCALED(10000);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(tern_group_spawn(&g, kid_ok, NULL), 0);
    ck_assert_int_eq(tern_group_spawn(&g, kid_spawns, &g), 0);
    ck_assert_int_eq(tern_group_wait(&g), 0);
    ck_assert_int_eq(atomic_load(&kids_done), (int)n + 11);
    ck_assert_int_eq(tern_group_spawn(&g, kid_ok, NULL), -ESHUTDOWN);
    ck_assert_int_eq(tern_group_wait(&g), -EINVAL);
    ck_assert_int_eq(tern_group_cancel(&g), -EALREADY);

    /* the first failure cancels the siblings and is reported */
    tern_group_init(&g);
    reset_kids();
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(tern_group_spawn(&g, kid_sleeps, NULL), 0);
    ck_assert_int_eq(tern_group_spawn(&g, kid_fails, NULL), 0);
    ck_assert_int_eq(tern_group_wait(&g), -EIO);
    /* every sleeper that started was cancelled (one cancelled before it
     * started never runs its body), and all had finished */
    ck_assert_int_eq(atomic_load(&kids_cancelled), atomic_load(&kids_started));
    ck_assert_int_eq(atomic_load(&kids_done), atomic_load(&kids_started) + 1);

    /* an explicit cancel; no child outlives wait */
    tern_group_init(&g);
    reset_kids();
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(tern_group_spawn(&g, kid_sleeps, NULL), 0);
    ck_assert_int_eq(tern_group_cancel(&g), 0);
    ck_assert_int_eq(tern_group_cancel(&g), -EALREADY);
    ck_assert_int_eq(tern_group_spawn(&g, kid_ok, NULL), -ESHUTDOWN);
    ck_assert_int_eq(tern_group_wait(&g), -ECANCELED);
    /* children cancelled before they started never ran their body */
    ck_assert_int_eq(atomic_load(&kids_done), atomic_load(&kids_started));
    ck_assert_int_eq(atomic_load(&kids_cancelled), atomic_load(&kids_started));

    /* an empty group */
    tern_group g2 = TERN_GROUP_INIT;
    ck_assert_int_eq(tern_group_wait(&g2), 0);
    ck_assert_int_eq(tern_group_spawn(NULL, kid_ok, NULL), -EINVAL);
    ck_assert_int_eq(tern_group_spawn(&g2, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_group_wait(NULL), -EINVAL);
    ck_assert_int_eq(tern_group_cancel(NULL), -EINVAL);
    return NULL;
}

START_TEST(group_semantics)
{
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_block_on(rt, group_basic, NULL, NULL), 0);
    tern_group g;
    tern_group_init(&g);
    ck_assert_int_eq(tern_group_spawn(&g, kid_ok, NULL), -EPERM); /* not on a runtime */
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static void *group_owner(void *arg)
{
    tern_group g;
    tern_group_init(&g);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(tern_group_spawn(&g, kid_sleeps, NULL), 0);
    int r = tern_group_wait(&g);
    /* every child had finished before wait returned */
    ck_assert_int_eq(atomic_load(&kids_done), 20);
    return (void *)(intptr_t)r;
}

START_TEST(group_owner_cancelled)
{
    tern_runtime *rt = rt_new(2);
    reset_kids();
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, group_owner, NULL, &t), 0);
    /* every child ran its body (a child cancelled before it starts never
     * does; one between its count and its sleep sees the sticky cancel) and
     * the owner waits for them */
    WAIT_UNTIL(atomic_load(&kids_started) == 20, WAIT_MS);
    WAIT_PARKED(t, TERN__W_GROUP);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&kids_cancelled), 20);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- shutdown ---------------------------------------------------------------------- */

enum { SHUT = 50 };
static _Atomic int shut_codes[3 * SHUT];
static tern_future *shut_f;
static tern_chan *shut_ch;

static void *shut_wait_future(void *arg)
{
    atomic_store(&shut_codes[(intptr_t)arg], tern_future_wait(shut_f, 0));
    return NULL;
}

static void *shut_wait_chan(void *arg)
{
    int v;
    atomic_store(&shut_codes[(intptr_t)arg], tern_chan_recv(shut_ch, &v));
    return NULL;
}

static void *shut_wait_any(void *arg)
{
    tern_future *fs[2] = {shut_f, shut_f};
    atomic_store(&shut_codes[(intptr_t)arg], tern_wait_any(fs, 2, 0));
    return NULL;
}

/* Shutting down wakes every waiting task with -ECANCELED (invariant 6). */
START_TEST(shutdown_cancels_sync_waiters)
{
    tern_runtime *rt = rt_new(2);
    ck_assert_int_eq(tern_future_new(&shut_f), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(int), 1, &shut_ch), 0);
    tern_task *t[3 * SHUT];
    for (intptr_t i = 0; i < SHUT; i++) {
        atomic_store(&shut_codes[i], 1);
        atomic_store(&shut_codes[SHUT + i], 1);
        atomic_store(&shut_codes[2 * SHUT + i], 1);
        ck_assert_int_eq(tern_runtime_spawn(rt, shut_wait_future, (void *)i, &t[i]), 0);
        ck_assert_int_eq(
            tern_runtime_spawn(rt, shut_wait_chan, (void *)(SHUT + i), &t[SHUT + i]), 0);
        ck_assert_int_eq(tern_runtime_spawn(rt, shut_wait_any, (void *)(2 * SHUT + i),
                                            &t[2 * SHUT + i]),
                         0);
    }
    /* every one waits (one cancelled before it starts never runs its body) */
    for (int i = 0; i < 3 * SHUT; i++) {
        WAIT_PARKED(t[i], i / SHUT == 1 ? TERN__W_CHAN_RECV : TERN__W_FUTURE);
        tern_task_release(t[i]);
    }
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    for (int i = 0; i < 3 * SHUT; i++)
        ck_assert_int_eq(atomic_load(&shut_codes[i]), -ECANCELED);
    ck_assert_int_eq(tern_future_done(shut_f), 0);
    ck_assert_uint_eq(tern_chan_len(shut_ch), 0);
    tern_future_release(shut_f);
    tern_chan_release(shut_ch);
}
END_TEST

/* A wait with a far deadline that ends early on another worker must not
 * leave its timer entry (and a reference to the task) in the first
 * worker's wheel until the deadline. */
static void *long_deadline_wait(void *arg)
{
    ck_assert_int_eq(tern_future_wait(arg, tern_now() + 3600 * 1000 * MS), 0);
    return NULL;
}

static uint64_t armed_total(tern_runtime *rt)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < tern_runtime_workers(rt); i++) {
        tern_loop_info info;
        ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, i), &info), 0);
        n += info.scheduled;
    }
    return n;
}

START_TEST(early_wake_frees_timer_entry)
{
    enum { N = 200 };
    tern_runtime *rt = rt_new(4);
    tern_future *f[N];
    tern_task *t[N];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(tern_future_new(&f[i]), 0);
        ck_assert_int_eq(tern_runtime_spawn(rt, long_deadline_wait, f[i], &t[i]), 0);
    }
    /* all in their timed wait: a future completed before it is waited for
     * arms no timer at all */
    for (int i = 0; i < N; i++)
        WAIT_PARKED(t[i], TERN__W_FUTURE);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tern_future_set_result(f[i], NULL), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
        tern_future_release(f[i]);
    }
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
    /* A loop publishes its count at the end of the turn that reaped the
     * entries, a moment after the reap let the last task go: wait for the
     * count itself. An entry left until its deadline (an hour) fails here. */
    WAIT_UNTIL(armed_total(rt) == 0, WAIT_MS);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static Suite *future_suite(void)
{
    Suite *s = suite_create("future");
    TCase *tc = tcase_create("future");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, future_outcomes);
    tcase_add_test(tc, future_bad_arguments);
    tcase_add_test(tc, complete_exactly_once_racing);
    tcase_add_test(tc, many_waiters_all_woken);
    tcase_add_test(tc, wait_deadline_and_cancel);
    tcase_add_test(tc, callbacks_run_on_their_loop_in_order);
    tcase_add_test(tc, callback_keeps_future_alive);
    tcase_add_test(tc, task_future_join);
    tcase_add_test(tc, task_future_race);
    tcase_add_test(tc, gather_semantics);
    tcase_add_test(tc, gather_deadline_and_cancel);
    tcase_add_test(tc, gather_many_racing);
    tcase_add_test(tc, wait_any_semantics);
    tcase_add_test(tc, wait_for_cancels_on_expiry);
    tcase_add_test(tc, shield_protects_inner);
    tcase_add_test(tc, group_semantics);
    tcase_add_test(tc, group_owner_cancelled);
    tcase_add_test(tc, shutdown_cancels_sync_waiters);
    tcase_add_test(tc, early_wake_frees_timer_entry);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(future_suite());
}
