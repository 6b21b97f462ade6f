/*
 * Cancellation tokens and task trackers (sync/token.c): the building blocks
 * of a graceful shutdown.
 */
#include <pthread.h>

#include "helpers.h"

#define MS 1000000ull

/* ---- tokens ------------------------------------------------------------------ */

static void *token_basics_main(void *arg)
{
    tern_token *root, *a, *b, *aa;
    ck_assert_int_eq(tern_token_new(NULL), -EINVAL);
    ck_assert_int_eq(tern_token_child(NULL, &a), -EINVAL);
    ck_assert_int_eq(tern_token_cancel(NULL), -EINVAL);
    ck_assert_int_eq(tern_token_cancelled(NULL), -EINVAL);
    ck_assert_int_eq(tern_token_wait(NULL, 0), -EINVAL);
    ck_assert_ptr_null(tern_token_ref(NULL));
    tern_token_release(NULL);

    ck_assert_int_eq(tern_token_new(&root), 0);
    ck_assert_int_eq(tern_token_child(root, &a), 0);
    ck_assert_int_eq(tern_token_child(root, &b), 0);
    ck_assert_int_eq(tern_token_child(a, &aa), 0);
    ck_assert_int_eq(tern_token_cancelled(root), 0);
    ck_assert_int_eq(tern_token_wait(aa, tern_now() + MS), -ETIMEDOUT);

    /* a child's cancel stays below it */
    ck_assert_int_eq(tern_token_cancel(b), 0);
    ck_assert_int_eq(tern_token_cancel(b), -EALREADY);
    ck_assert_int_eq(tern_token_cancelled(b), 1);
    ck_assert_int_eq(tern_token_cancelled(root), 0);
    ck_assert_int_eq(tern_token_cancelled(a), 0);
    ck_assert_int_eq(tern_token_wait(b, 0), 0);

    /* the root's reaches the grandchild */
    ck_assert_int_eq(tern_token_cancel(root), 0);
    ck_assert_int_eq(tern_token_cancelled(a), 1);
    ck_assert_int_eq(tern_token_cancelled(aa), 1);
    ck_assert_int_eq(tern_token_wait(aa, tern_now() + MS), 0);
    ck_assert_int_eq(tern_token_cancel(aa), -EALREADY);

    /* born cancelled under a cancelled parent */
    tern_token *late;
    ck_assert_int_eq(tern_token_child(a, &late), 0);
    ck_assert_int_eq(tern_token_cancelled(late), 1);
    ck_assert_int_eq(tern_token_wait(late, 0), 0);

    /* a child may outlive its parent's handle: it holds a reference */
    tern_token_release(root);
    tern_token_release(a);
    ck_assert_int_eq(tern_token_cancelled(aa), 1);
    tern_token_release(aa);
    tern_token_release(late);
    tern_token_release(b);
    return NULL;
}

START_TEST(token_basics)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, token_basics_main, NULL, NULL), 0);
}
END_TEST

static void *wait_token(void *arg)
{
    return (void *)(intptr_t)tern_token_wait(arg, 0);
}

static void *token_cancel_wait_main(void *arg)
{
    tern_token *t;
    ck_assert_int_eq(tern_token_new(&t), 0);
    tern_task *w;
    ck_assert_int_eq(tern_spawn(wait_token, t, &w), 0);
    TASK_WAIT_PARKED(w, TERN__W_EVENT);
    ck_assert_int_eq(tern_task_cancel(w), 0);
    void *r;
    ck_assert_int_eq(tern_join(w, &r), -ECANCELED);
    ck_assert_int_eq(tern_token_cancelled(t), 0); /* the waiter's cancel is its own */
    tern_token_release(t);
    return NULL;
}

START_TEST(token_waiter_cancelled)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, token_cancel_wait_main, NULL, NULL), 0);
}
END_TEST

/*
 * A tree (root, 8 children, 8 grandchildren each) with tasks and threads
 * waiting on every node, and threads making and dropping children while a
 * thread cancels the root: every waiter wakes exactly once with 0, every
 * token alive afterwards is cancelled, and (ASan) nothing leaks.
 */
#define FAN 8
#define TASK_WAITERS 4 /* per grandchild */
#define CHURN_THREADS 2

struct tree {
    tern_token *root, *kid[FAN], *grand[FAN][FAN];
    _Atomic int woken, waiting, stop;
};

static void *tree_task(void *arg)
{
    struct tree *tr = (struct tree *)((uintptr_t)arg & ~(uintptr_t)63);
    unsigned i = (unsigned)((uintptr_t)arg & 63);
    tern_token *t = tr->grand[i / FAN][i % FAN];
    atomic_fetch_add(&tr->waiting, 1);
    ck_assert_int_eq(tern_token_wait(t, 0), 0);
    atomic_fetch_add(&tr->woken, 1);
    return NULL;
}

static void *tree_thread(void *arg)
{
    struct tree *tr = arg;
    atomic_fetch_add(&tr->waiting, 1);
    ck_assert_int_eq(tern_token_wait(tr->kid[3], 0), 0);
    atomic_fetch_add(&tr->woken, 1);
    return NULL;
}

static void *churn(void *arg)
{
    struct tree *tr = arg;
    unsigned n = 0;
    while (!atomic_load(&tr->stop)) {
        tern_token *c;
        ck_assert_int_eq(tern_token_child(tr->grand[n % FAN][(n / FAN) % FAN], &c), 0);
        if (n & 1)
            tern_token_cancel(c);
        tern_token_release(c);
        n++;
    }
    /* after the cancel: born cancelled */
    tern_token *c;
    ck_assert_int_eq(tern_token_child(tr->kid[0], &c), 0);
    ck_assert_int_eq(tern_token_cancelled(c), 1);
    tern_token_release(c);
    return NULL;
}

START_TEST(token_tree_under_threads)
{
    static struct tree tr __attribute__((aligned(64)));
    memset(&tr, 0, sizeof tr);
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_token_new(&tr.root), 0);
    for (int i = 0; i < FAN; i++) {
        ck_assert_int_eq(tern_token_child(tr.root, &tr.kid[i]), 0);
        for (int j = 0; j < FAN; j++)
            ck_assert_int_eq(tern_token_child(tr.kid[i], &tr.grand[i][j]), 0);
    }
    int tasks = FAN * FAN * TASK_WAITERS;
    tern_task **h = calloc((size_t)tasks, sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (int k = 0; k < tasks; k++)
        ck_assert_int_eq(
            tern_runtime_spawn(rt, tree_task,
                               (void *)((uintptr_t)&tr | (uintptr_t)(k % 64)), &h[k]),
            0);
    pthread_t waiters[2], churners[CHURN_THREADS];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&waiters[i], NULL, tree_thread, &tr), 0);
    for (int i = 0; i < CHURN_THREADS; i++)
        ck_assert_int_eq(pthread_create(&churners[i], NULL, churn, &tr), 0);
    WAIT_UNTIL(atomic_load(&tr.waiting) == tasks + 2, WAIT_MS);
    ck_assert_int_eq(atomic_load(&tr.woken), 0);
    ck_assert_int_eq(tern_token_cancel(tr.root), 0);
    atomic_store(&tr.stop, 1);
    for (int k = 0; k < tasks; k++)
        ck_assert_int_eq(tern_join(h[k], NULL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(waiters[i], NULL), 0);
    for (int i = 0; i < CHURN_THREADS; i++)
        ck_assert_int_eq(pthread_join(churners[i], NULL), 0);
    ck_assert_int_eq(atomic_load(&tr.woken), tasks + 2);
    for (int i = 0; i < FAN; i++) {
        ck_assert_int_eq(tern_token_cancelled(tr.kid[i]), 1);
        for (int j = 0; j < FAN; j++) {
            ck_assert_int_eq(tern_token_cancelled(tr.grand[i][j]), 1);
            tern_token_release(tr.grand[i][j]);
        }
        tern_token_release(tr.kid[i]);
    }
    tern_token_release(tr.root);
    free(h);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- trackers ------------------------------------------------------------------ */

static _Atomic int body_ran, body_cancelled;

static void *until_token(void *arg)
{
    atomic_fetch_add(&body_ran, 1);
    int r = tern_token_wait(arg, 0);
    if (r == -ECANCELED)
        atomic_fetch_add(&body_cancelled, 1);
    return NULL;
}

static void *short_sleep(void *arg)
{
    atomic_fetch_add(&body_ran, 1);
    ck_assert_int_eq(tern_sleep(MS), 0);
    return NULL;
}

static void *sleep_forever(void *arg)
{
    atomic_fetch_add(&body_ran, 1);
    int r = tern_sleep_until(UINT64_MAX);
    ck_assert_int_eq(r, -ECANCELED);
    atomic_fetch_add(&body_cancelled, 1);
    return NULL;
}

static _Atomic int self_wait = 1;

static void *waits_for_own_tracker(void *arg)
{
    atomic_store(&self_wait, tern_tracker_wait(arg, 0));
    return NULL;
}

static void *tracker_basics_main(void *arg)
{
    tern_tracker *tr;
    ck_assert_int_eq(tern_tracker_new(NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_spawn(NULL, until_token, NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_close(NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_cancel(NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_wait(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_tracker_shutdown(NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_free(NULL), -EINVAL);
    ck_assert_uint_eq(tern_tracker_len(NULL), 0);

    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    ck_assert_int_eq(tern_tracker_spawn(tr, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_tracker_wait(tr, 0), 0); /* empty: at once */
    tern_token *tok;
    ck_assert_int_eq(tern_token_new(&tok), 0);
    atomic_store(&body_ran, 0);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(tern_tracker_spawn(tr, until_token, tok), 0);
    ck_assert_uint_eq(tern_tracker_len(tr), 100);
    ck_assert_int_eq(tern_tracker_wait(tr, tern_now() + 2 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_tracker_free(tr), -EBUSY);
    TASK_WAIT_UNTIL(atomic_load(&body_ran) == 100, WAIT_MS);

    /* a tracked task waiting for its own tracker would wait for itself */
    ck_assert_int_eq(tern_tracker_spawn(tr, waits_for_own_tracker, tr), 0);
    ck_assert_int_eq(tern_token_cancel(tok), 0);
    ck_assert_int_eq(tern_tracker_wait(tr, 0), 0);
    ck_assert_uint_eq(tern_tracker_len(tr), 0);

    ck_assert_int_eq(tern_tracker_close(tr), 0);
    ck_assert_int_eq(tern_tracker_close(tr), -EALREADY);
    ck_assert_int_eq(tern_tracker_spawn(tr, until_token, tok), -ESHUTDOWN);
    ck_assert_int_eq(tern_tracker_free(tr), 0);
    tern_token_release(tok);
    return NULL;
}

START_TEST(tracker_basics)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, tracker_basics_main, NULL, NULL), 0);
    /* off the runtime: nothing to spawn on */
    tern_tracker *tr;
    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    ck_assert_int_eq(tern_tracker_spawn(tr, until_token, NULL), -EPERM);
    ck_assert_int_eq(tern_tracker_free(tr), 0);
}
END_TEST

/* The EDEADLK answer, seen from the tracked task itself. */
static void *deadlock_main(void *arg)
{
    tern_tracker *tr;
    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    ck_assert_int_eq(tern_tracker_spawn(tr, waits_for_own_tracker, tr), 0);
    /* it was answered at once, and the tracker empties */
    ck_assert_int_eq(tern_tracker_wait(tr, 0), 0);
    ck_assert_int_eq(atomic_load(&self_wait), -EDEADLK);
    ck_assert_int_eq(tern_tracker_free(tr), 0);
    return NULL;
}

START_TEST(tracker_self_wait)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, deadlock_main, NULL, NULL), 0);
}
END_TEST

/* Shutdown: 25 tasks that finish within the drain deadline and 25 that
 * never would; the first are left alone, the second cancelled, and the
 * call returns once all 50 are out. */
static void *shutdown_main(void *arg)
{
    tern_tracker *tr;
    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    atomic_store(&body_ran, 0);
    atomic_store(&body_cancelled, 0);
    for (int i = 0; i < 25; i++) {
        ck_assert_int_eq(tern_tracker_spawn(tr, short_sleep, NULL), 0);
        ck_assert_int_eq(tern_tracker_spawn(tr, sleep_forever, NULL), 0);
    }
    TASK_WAIT_UNTIL(atomic_load(&body_ran) == 50, WAIT_MS);
    uint64_t cancelled = 99;
    ck_assert_int_eq(tern_tracker_shutdown(tr, tern_now() + 2000 * MS, &cancelled),
                     -ETIMEDOUT);
    ck_assert_uint_eq(cancelled, 25);
    ck_assert_int_eq(atomic_load(&body_cancelled), 25);
    ck_assert_uint_eq(tern_tracker_len(tr), 0);
    ck_assert_int_eq(tern_tracker_spawn(tr, short_sleep, NULL), -ESHUTDOWN); /* closed */
    ck_assert_int_eq(tern_tracker_free(tr), 0);

    /* all in time: nothing cancelled */
    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tern_tracker_spawn(tr, short_sleep, NULL), 0);
    ck_assert_int_eq(tern_tracker_shutdown(tr, tern_now() + 20000 * MS, &cancelled), 0);
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_int_eq(tern_tracker_free(tr), 0);
    return NULL;
}

START_TEST(tracker_shutdown)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, shutdown_main, NULL, NULL), 0);
}
END_TEST

/* A spawn still under way when its task has already ended: the spawner
 * yields inside tern_tracker_spawn (a budget of 1 spends itself on the
 * spawn), the task runs and ends, and a shutdown meanwhile must not see
 * the tracker idle before the spawner is done with it (ASan: the free
 * that follows would pull the tracker from under the spawner). */
static void *at_once(void *arg)
{
    return arg;
}

static void *spawn_one(void *arg)
{
    ck_assert_int_eq(tern_tracker_spawn(arg, at_once, NULL), 0);
    return NULL;
}

static void *spawn_under_way_main(void *arg)
{
    for (int round = 0; round < 50; round++) {
        tern_tracker *tr;
        ck_assert_int_eq(tern_tracker_new(&tr), 0);
        tern_task *s;
        ck_assert_int_eq(tern_spawn(spawn_one, tr, &s), 0);
        for (int k = 0; k < round % 4; k++)
            tern_yield();
        tern_tracker_shutdown(tr, UINT64_MAX, NULL);
        ck_assert_int_eq(tern_tracker_free(tr), 0);
        tern_join(s, NULL);
    }
    return NULL;
}

START_TEST(tracker_spawn_under_way)
{
    tern_config cfg = {.workers = 1, .budget = 1};
    ck_assert_int_eq(tern_run(&cfg, spawn_under_way_main, NULL, NULL), 0);
}
END_TEST

/* The caller of shutdown cancelled while it drains: the tracked tasks are
 * cancelled and still waited for. */
static _Atomic int shutdown_result = 1;

static void *shutdown_caller(void *arg)
{
    atomic_store(&shutdown_result, tern_tracker_shutdown(arg, UINT64_MAX, NULL));
    return NULL;
}

static void *shutdown_cancelled_main(void *arg)
{
    tern_tracker *tr;
    ck_assert_int_eq(tern_tracker_new(&tr), 0);
    atomic_store(&body_ran, 0);
    atomic_store(&body_cancelled, 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(tern_tracker_spawn(tr, sleep_forever, NULL), 0);
    TASK_WAIT_UNTIL(atomic_load(&body_ran) == 10, WAIT_MS); /* all ten in their sleep */
    tern_task *c;
    ck_assert_int_eq(tern_spawn(shutdown_caller, tr, &c), 0);
    TASK_WAIT_PARKED(c, TERN__W_GROUP);
    ck_assert_int_eq(tern_task_cancel(c), 0);
    ck_assert_int_eq(tern_join(c, NULL), -ECANCELED); /* it saw its cancel */
    ck_assert_int_eq(atomic_load(&shutdown_result), -ECANCELED);
    ck_assert_int_eq(atomic_load(&body_cancelled), 10);
    ck_assert_uint_eq(tern_tracker_len(tr), 0);
    ck_assert_int_eq(tern_tracker_free(tr), 0);
    return NULL;
}

START_TEST(tracker_shutdown_caller_cancelled)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, shutdown_cancelled_main, NULL, NULL), 0);
}
END_TEST

/*
 * Spawns from tasks and threads... into one tracker while another thread
 * cancels it again and again: every spawn that succeeded ends exactly once
 * (its body ran to the end, or it never ran), and the tracker empties.
 */
#define SPAWNERS 4
#define PER_SPAWNER SCALED(5000)

struct race {
    tern_tracker *tr;
    _Atomic int spawned, ended, stop;
};

static void *race_body(void *arg)
{
    struct race *r = arg;
    tern_yield(); /* a cancel may land here */
    atomic_fetch_add(&r->ended, 1);
    return NULL;
}

static void *race_spawner(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < PER_SPAWNER; i++) {
        ck_assert_int_eq(tern_tracker_spawn(r->tr, race_body, r), 0);
        atomic_fetch_add(&r->spawned, 1);
        if (i % 64 == 0)
            tern_yield();
    }
    return NULL;
}

static void *race_canceller(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        ck_assert_int_ge(tern_tracker_cancel(r->tr), 0);
        spin_units(20);
    }
    return NULL;
}

START_TEST(tracker_spawn_cancel_race)
{
    struct race r = {0};
    ck_assert_int_eq(tern_tracker_new(&r.tr), 0);
    tern_runtime *rt = rt_new(4);
    tern_metrics m0, m1;
    ck_assert_int_eq(tern_runtime_metrics(rt, &m0), 0);
    pthread_t canceller;
    ck_assert_int_eq(pthread_create(&canceller, NULL, race_canceller, &r), 0);
    tern_task *s[SPAWNERS];
    for (int i = 0; i < SPAWNERS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, race_spawner, &r, &s[i]), 0);
    for (int i = 0; i < SPAWNERS; i++)
        ck_assert_int_eq(tern_join(s[i], NULL), 0);
    atomic_store(&r.stop, 1);
    ck_assert_int_eq(pthread_join(canceller, NULL), 0);
    ck_assert_int_eq(tern_tracker_wait(r.tr, 0), 0); /* from a thread: blocks */
    ck_assert_int_eq(tern_runtime_metrics(rt, &m1), 0);
    ck_assert_int_eq(atomic_load(&r.spawned), SPAWNERS * PER_SPAWNER);
    /* a body that ran reached its end (the yield's -ECANCELED is ignored);
     * the others never started */
    ck_assert_uint_eq((uint64_t)atomic_load(&r.ended) +
                          (m1.total.never_ran - m0.total.never_ran),
                      SPAWNERS * PER_SPAWNER);
    ck_assert_uint_eq(tern_tracker_len(r.tr), 0);
    ck_assert_int_eq(tern_tracker_free(r.tr), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

static Suite *token_suite(void)
{
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, token_basics);
    tcase_add_test(tc, token_waiter_cancelled);
    tcase_add_test(tc, token_tree_under_threads);
    tcase_add_test(tc, tracker_basics);
    tcase_add_test(tc, tracker_self_wait);
    tcase_add_test(tc, tracker_shutdown);
    tcase_add_test(tc, tracker_shutdown_caller_cancelled);
    tcase_add_test(tc, tracker_spawn_under_way);
    tcase_add_test(tc, tracker_spawn_cancel_race);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(token_suite());
}
