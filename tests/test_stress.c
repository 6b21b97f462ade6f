/* Stress tests that count: everything that goes in comes out exactly once.
 * Runs once per I/O backend (TERN_BACKEND). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* ---- a million spawned tasks, each counted once, with steals ---------------- */

static _Atomic unsigned char *ran;
static _Atomic long done_count;
static long spawn_n;

static void *mark(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    ck_assert_int_eq(atomic_fetch_add(&ran[i], 1), 0);
    atomic_fetch_add(&done_count, 1);
    return NULL;
}

static void *spawner(void *arg)
{
    for (long i = 0; i < spawn_n; i++) {
        int r;
        while ((r = tern_spawn(mark, (void *)(uintptr_t)i, NULL)) == -ENOMEM)
            tern_yield();
        ck_assert_int_eq(r, 0);
    }
    TASK_WAIT_UNTIL(atomic_load(&done_count) >= spawn_n, WAIT_MS);
    return NULL;
}

START_TEST(million_spawns_counted)
{
    spawn_n = SCALED(1000000);
    ran = calloc((size_t)spawn_n, 1);
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_block_on(rt, spawner, NULL, NULL), 0);
    for (long i = 0; i < spawn_n; i++)
        ck_assert_int_eq(ran[i], 1);
    uint64_t steals = 0, run = 0;
    for (unsigned i = 0; i < 4; i++) {
        tern_loop_info info;
        tern_loop_get_info(tern_runtime_loop(rt, i), &info);
        steals += info.stats.steals;
        run += info.stats.tasks_run;
    }
    ck_assert_uint_gt(steals, 0);
    ck_assert_uint_ge(run, (uint64_t)spawn_n);
    tern_runtime_free(rt);
    free((void *)ran);
}
END_TEST

/* ---- a million parked tasks alive at once, without raising any limit ------- */

static void *park_then_exit(void *arg)
{
    int r;
    while ((r = tern_park(0)) == 0)
        ;
    ck_assert_int_eq(r, -ECANCELED);
    return NULL;
}

static void *sleep_then_exit(void *arg)
{
    ck_assert_int_eq(tern_sleep(3600ull * 1000000000ull), -ECANCELED);
    return NULL;
}

START_TEST(million_idle_tasks)
{
    long n = SCALED(1000000);
#ifdef TERN_TSAN
    n = 4000; /* ThreadSanitizer counts each fiber as a thread (limit 8128) */
#endif
    tern_runtime *rt = rt_new(2);
    tern_task **t = malloc((size_t)n * sizeof *t);
    ck_assert_ptr_nonnull(t);
    for (long i = 0; i < n; i++)
        ck_assert_int_eq(
            tern_runtime_spawn(rt, i % 2 ? park_then_exit : sleep_then_exit, NULL, &t[i]),
            0);
    /* every one in its wait at once; the bound covers starting them all */
    for (long i = 0; i < n; i++)
        WAIT_UNTIL(tern__task_parked(t[i]) == (i % 2 ? TERN__W_PARK : TERN__W_SLEEP),
                   120000);
    ck_assert_uint_eq(tern_runtime_live_tasks(rt), (uint64_t)n);
    for (long i = 0; i < n; i++) /* detached, as if spawned without a handle */
        tern_task_release(t[i]);
    free(t);
    /* shutdown cancels them all; each checks it saw -ECANCELED */
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- wakes racing suspends ------------------------------------------------------ */

/* Each task consumes `rounds` tokens, parking whenever it has none; waker
 * threads and waker tasks hand out exactly tasks*rounds tokens, unparking
 * the owner after each. A task resumed twice would trip `inside`; a lost
 * wake-up would hang (the test times out). */
typedef struct racer {
    _Atomic long tokens;
    _Atomic int inside;
    _Atomic(tern_task *) task;
    long consumed;
} racer;

enum { RACERS = 64 };
static racer racers[RACERS];
static long rounds;

static void *consume(void *arg)
{
    racer *r = arg;
    atomic_store(&r->task, tern_task_ref(tern_task_current()));
    for (long i = 0; i < rounds; i++) {
        for (;;) {
            ck_assert_int_eq(atomic_exchange(&r->inside, 1), 0);
            long t = atomic_load(&r->tokens);
            if (t > 0 && atomic_compare_exchange_strong(&r->tokens, &t, t - 1)) {
                atomic_store(&r->inside, 0);
                break;
            }
            atomic_store(&r->inside, 0);
            ck_assert_int_eq(tern_park(0), 0);
        }
        r->consumed++;
    }
    return NULL;
}

static void give_tokens(long from, long count)
{
    for (long k = 0; k < count; k++) {
        racer *r = &racers[(from + k) % RACERS];
        tern_task *t;
        WAIT_UNTIL((t = atomic_load(&r->task)) != NULL, WAIT_MS);
        atomic_fetch_add(&r->tokens, 1);
        tern_unpark(t);
    }
}

static void *waker_thread(void *arg)
{
    give_tokens((long)(intptr_t)arg, RACERS * rounds / 4);
    return NULL;
}

static void *waker_task(void *arg)
{
    give_tokens((long)(intptr_t)arg, RACERS * rounds / 4);
    return NULL;
}

START_TEST(wake_races_suspend)
{
    rounds = SCALED(20000);
    memset(racers, 0, sizeof racers);
    tern_runtime *rt = rt_new(4);
    tern_task *tasks[RACERS], *wt[2];
    for (int i = 0; i < RACERS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, consume, &racers[i], &tasks[i]), 0);
    /* half the tokens from foreign threads, half from tasks on workers */
    pthread_t th[2];
    for (intptr_t i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, waker_thread, (void *)(i * 7));
        ck_assert_int_eq(tern_runtime_spawn(rt, waker_task, (void *)(i * 13 + 1), &wt[i]),
                         0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(tern_join(wt[i], NULL), 0);
    }
    for (int i = 0; i < RACERS; i++)
        ck_assert_int_eq(tern_join(tasks[i], NULL), 0);
    long total = 0;
    for (int i = 0; i < RACERS; i++) {
        total += racers[i].consumed;
        ck_assert_int_eq(atomic_load(&racers[i].tokens), 0);
        tern_task_release(racers[i].task);
    }
    ck_assert_int_eq(total, RACERS * rounds);
    tern_runtime_free(rt);
}
END_TEST

/* ---- cancel racing completion ------------------------------------------------------ */

static _Atomic long bodies;

static void *short_body(void *arg)
{
    atomic_fetch_add(&bodies, 1);
    if ((uintptr_t)arg % 2)
        tern_yield();
    return arg;
}

START_TEST(cancel_races_completion)
{
    long n = SCALED(100000);
    tern_runtime *rt = rt_new(4);
    long ok = 0, cancelled = 0;
    enum { BATCH = 32 };
    n -= n % BATCH;
    /* Batches, so cancels land while tasks start, yield and finish on four
     * workers (a cancel racing the final transition once re-queued a
     * finished task). */
    for (long base = 0; base < n; base += BATCH) {
        tern_task *t[BATCH];
        for (long i = base; i < base + BATCH; i++)
            ck_assert_int_eq(tern_runtime_spawn(rt, short_body,
                                                (void *)(uintptr_t)(i + 1), &t[i - base]),
                             0);
        for (long i = base; i < base + BATCH; i++)
            if (i % 3)
                tern_task_cancel(t[i - base]);
        for (long i = base; i < base + BATCH; i++) {
            void *res = NULL;
            int r = tern_join(t[i - base], &res);
            if (r == 0) {
                ck_assert_uint_eq((uintptr_t)res, (uintptr_t)(i + 1));
                ok++;
            } else {
                ck_assert_int_eq(r, -ECANCELED);
                cancelled++;
            }
        }
    }
    ck_assert_int_eq(ok + cancelled, n);
    ck_assert_int_ge(atomic_load(&bodies), ok);
    ck_assert_int_le(atomic_load(&bodies), n);
    tern_runtime_free(rt);
}
END_TEST

/* ---- many foreign threads spawning at once ----------------------------------------- */

static tern_runtime *shared_rt;
static _Atomic long foreign_done;

static void *bump_done(void *arg)
{
    atomic_fetch_add(&foreign_done, 1);
    return NULL;
}

static void *foreign_spawner(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        tern_task *t;
        ck_assert_int_eq(
            tern_runtime_spawn(shared_rt, bump_done, NULL, i % 2 ? &t : NULL), 0);
        if (i % 2)
            ck_assert_int_eq(tern_join(t, NULL), 0);
    }
    return NULL;
}

START_TEST(foreign_spawners)
{
    long per = SCALED(20000);
    shared_rt = rt_new(3);
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, foreign_spawner, (void *)(intptr_t)per);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    /* detached tasks still queued at shutdown would be cancelled unrun */
    WAIT_UNTIL(atomic_load(&foreign_done) >= 8 * per, 60000);
    ck_assert_int_eq(atomic_load(&foreign_done), 8 * per);
    ck_assert_int_eq(tern_runtime_free(shared_rt), 0);
    ck_assert_int_eq(atomic_load(&foreign_done), 8 * per);
}
END_TEST

/* ---- exhaustion: spawning without memory fails cleanly ---------------------------- */

static _Atomic long nomem_spawns, nomem_tasks, parked_ok;

static void *park_until_cancelled(void *arg)
{
    atomic_fetch_add(&parked_ok, 1);
    while (tern_park(0) == 0)
        ;
    return NULL;
}

static void *exhaust(void *arg)
{
    enum { MAX = 200000 };
    static tern_task *t[MAX];
    long n = 0;
    /* Spawn idle tasks until spawning or starting one fails for memory. */
    while (n < MAX) {
        int r = tern_spawn(park_until_cancelled, NULL, &t[n]);
        if (r == -ENOMEM || r == -EAGAIN) {
            atomic_fetch_add(&nomem_spawns, 1);
            break;
        }
        ck_assert_int_eq(r, 0);
        n++;
        if (n % 64 == 0) {
            tern_yield(); /* let them start (and take stacks) */
            if (tern_task_done(t[n - 1]))
                break;
        }
    }
    for (long i = 0; i < n; i++) {
        tern_task_cancel(t[i]);
        int r = tern_join(t[i], NULL);
        if (r == -ENOMEM)
            atomic_fetch_add(&nomem_tasks, 1);
        else
            ck_assert_int_eq(r, -ECANCELED);
    }
    return NULL;
}

START_TEST(exhaustion_is_an_error)
{
#if defined(TERN_TSAN) || defined(TERN_ASAN)
    /* The sanitizers reserve terabytes of shadow memory: an address-space
     * limit would stop them, not tern. The plain build runs this. */
    return;
#endif
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {256u << 20, 256u << 20}; /* 256 MiB of address space */
        setrlimit(RLIMIT_AS, &rl);
        tern_config cfg = {.workers = 1};
        int r = tern_run(&cfg, exhaust, NULL, NULL);
        long errors = atomic_load(&nomem_spawns) + atomic_load(&nomem_tasks);
        _exit(r == 0 && errors > 0 && atomic_load(&parked_ok) > 0 ? 0 : 10 + (r != 0));
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x",
                  status);
}
END_TEST

/* ---- idle workers join in ---------------------------------------------------------- */

/* Two CPU-bound tasks that keep yielding on one worker while another sleeps:
 * the sleeper must be woken to share the work (a requeue after a yield
 * notifies, and a woken searcher leaves the searching count even when it
 * finds its work locally). */
static tern_runtime *spread_rt;
static _Atomic long ran_on[2]; /* hot_yielder iterations per worker */
static _Atomic int spread_stop, y_released;

static void *hot_yielder(void *arg)
{
    while (!atomic_load(&spread_stop)) {
        atomic_fetch_add(&ran_on[tern_loop_current() == tern_runtime_loop(spread_rt, 1)],
                         1);
        tern_yield();
    }
    return NULL;
}

static void *y_task(void *arg)
{
    while (!atomic_load(&y_released)) /* not for a stray unpark */
        tern_park(0);
    return hot_yielder(arg);
}

/* arg: y_task, parked */
static void *x_task(void *arg)
{
    atomic_store(&y_released, 1);
    tern_unpark(arg); /* into our LIFO slot: no notify on its own */
    return hot_yielder(NULL);
}

START_TEST(idle_worker_joins_yielders)
{
    tern_runtime *rt = spread_rt = rt_new(2);
    tern_task *y, *x;
    ck_assert_int_eq(tern_runtime_spawn(rt, y_task, NULL, &y), 0);
    WAIT_PARKED(y, TERN__W_PARK); /* so that x's unpark is a wake-up */
    ck_assert_int_eq(tern_runtime_spawn(rt, x_task, y, &x), 0);
    /* Both workers must end up running the busy pair, wherever each task
     * started. */
    for (int i = 0; i < WAIT_MS && !(atomic_load(&ran_on[0]) && atomic_load(&ran_on[1]));
         i++)
        usleep(1000);
    atomic_store(&spread_stop, 1);
    ck_assert_int_eq(tern_join(x, NULL), 0);
    ck_assert_int_eq(tern_join(y, NULL), 0);
    ck_assert_msg(atomic_load(&ran_on[0]) && atomic_load(&ran_on[1]),
                  "two busy tasks kept one worker (%ld/%ld iterations)",
                  atomic_load(&ran_on[0]), atomic_load(&ran_on[1]));
    tern_runtime_free(rt);
}
END_TEST

Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("stress");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, million_spawns_counted);
    tcase_add_test(tc, million_idle_tasks);
    tcase_add_test(tc, wake_races_suspend);
    tcase_add_test(tc, cancel_races_completion);
    tcase_add_test(tc, foreign_spawners);
    tcase_add_test(tc, exhaustion_is_an_error);
    tcase_add_test(tc, idle_worker_joins_yielders);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(stress_suite());
}
