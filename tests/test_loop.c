/* Loops: call_soon / call_soon_threadsafe / call_later / call_at ordering
 * and cancellation, loop time, introspection, timer accuracy. Runs once per
 * I/O backend (TERN_BACKEND). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "sync/sync.h"

enum { N = 1000 };
#define MS 1000000ull

static int seen[4 * 10000 + N];
static _Atomic int nseen;  /* slots taken */
static _Atomic int ndone;  /* slots written */
static _Atomic int inside; /* callbacks never overlap */
static tern_loop *expect_loop;

static void record(void *arg)
{
    ck_assert_int_eq(atomic_exchange(&inside, 1), 0);
    ck_assert_ptr_eq(tern_loop_current(), expect_loop);
    ck_assert_ptr_null(tern_task_current()); /* handles run outside tasks */
    seen[atomic_fetch_add(&nseen, 1)] = (int)(intptr_t)arg;
    atomic_fetch_add(&ndone, 1);
    atomic_store(&inside, 0);
}

static void *soon_order_main(void *arg)
{
    expect_loop = tern_loop_current();
    for (intptr_t i = 0; i < N; i++)
        ck_assert_int_eq(tern_call_soon(NULL, record, (void *)i, NULL), 0);
    /* nothing runs until the task lets the loop turn */
    ck_assert_int_eq(atomic_load(&nseen), 0);
    while (atomic_load(&nseen) < N)
        tern_yield();
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(seen[i], i);
    return NULL;
}

START_TEST(call_soon_in_order)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, soon_order_main, NULL, NULL), 0);
}
END_TEST

static void noop(void *arg) {}

static void *wrong_loop(void *arg)
{
    tern_runtime *rt = tern_runtime_current();
    tern_loop *other = tern_runtime_loop(rt, 0) == tern_loop_current()
                           ? tern_runtime_loop(rt, 1)
                           : tern_runtime_loop(rt, 0);
    ck_assert_int_eq(tern_call_soon(other, noop, NULL, NULL), -EPERM);
    ck_assert_int_eq(tern_call_later(other, 1, noop, NULL, NULL), -EPERM);
    ck_assert_int_eq(tern_call_at(other, 1, noop, NULL, NULL), -EPERM);
    ck_assert_int_eq(tern_call_soon(NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_call_later(NULL, 1, NULL, NULL, NULL), -EINVAL);
    return NULL;
}

START_TEST(call_soon_bad_arguments)
{
    ck_assert_int_eq(tern_call_soon(NULL, noop, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_call_at(NULL, 0, noop, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_call_soon_threadsafe(NULL, noop, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_handle_cancel(NULL), -EINVAL);
    ck_assert_int_eq(tern_handle_cancelled(NULL), 0);
    tern_handle_release(NULL);
    ck_assert_uint_eq(tern_loop_time(NULL), 0);
    ck_assert_ptr_null(tern_loop_current());
    tern_loop_info info;
    ck_assert_int_eq(tern_loop_get_info(NULL, &info), -EINVAL);
    tern_runtime *rt = rt_new(2);
    ck_assert_int_eq(
        tern_call_soon_threadsafe(tern_runtime_loop(rt, 0), NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, 0), NULL), -EINVAL);
    ck_assert_int_eq(tern_block_on(rt, wrong_loop, NULL, NULL), 0);
    tern_runtime_free(rt);
}
END_TEST

/* Timed handles fire in deadline order, ties in scheduling order, never
 * before their time. */
static uint64_t deadline_of[N], latest_of[N]; /* equal but for call_later */
static uint64_t fired_at[N];

static void record_timed(void *arg)
{
    int i = (int)(intptr_t)arg;
    fired_at[i] = tern_now();
    record(arg);
}

static void *timed_order_main(void *arg)
{
    expect_loop = tern_loop_current();
    uint64_t x = 42;
    uint64_t base = tern_loop_time(NULL);
    for (intptr_t i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t delay = (x >> 33) % 30 * 1000000 + (x >> 20) % 3 * 100000;
        if (i % 2) {
            deadline_of[i] = base + delay;
            ck_assert_int_eq(
                tern_call_at(NULL, deadline_of[i], record_timed, (void *)i, NULL), 0);
            latest_of[i] = deadline_of[i];
        } else {
            /* call_later reads the clock itself: its deadline lies between
             * these two bounds */
            deadline_of[i] = tern_now() + delay;
            ck_assert_int_eq(tern_call_later(NULL, delay, record_timed, (void *)i, NULL),
                             0);
            latest_of[i] = tern_now() + delay;
        }
    }
    tern_loop_info info;
    ck_assert_int_eq(tern_loop_get_info(NULL, &info), 0);
    ck_assert_uint_eq(info.scheduled, N);
    while (atomic_load(&nseen) < N)
        tern_sleep(1000000);
    for (int k = 1; k < N; k++) {
        int a = seen[k - 1], b = seen[k];
        int exact = deadline_of[a] == latest_of[a] && deadline_of[b] == latest_of[b];
        ck_assert_msg(deadline_of[a] < latest_of[b] ||
                          (deadline_of[a] == latest_of[b] && (!exact || a < b)),
                      "handle %d (at %llu) ran before %d (at %llu)", a,
                      (unsigned long long)deadline_of[a], b,
                      (unsigned long long)deadline_of[b]);
    }
    for (int i = 0; i < N; i++)
        ck_assert_uint_ge(fired_at[i], deadline_of[i]);
    return NULL;
}

/* call_later counts from the moment of the call, not from the loop time
 * cached when the turn began: a task that computed for 30 ms first must
 * still wait the whole delay. A delay too long to add to the clock means
 * never, not "at once". */
static _Atomic uint64_t later_ran_at;

static void note_time(void *arg)
{
    (void)arg;
    atomic_store(&later_ran_at, tern_now());
}

static void never_run(void *arg)
{
    (void)arg;
    ck_abort_msg("a handle scheduled UINT64_MAX ns from now ran");
}

static void *later_clock_main(void *arg)
{
    (void)arg;
    ck_assert_int_eq(tern_yield(), 0); /* a fresh turn: loop time ~ now */
    uint64_t spin_until = tern_now() + 30 * MS;
    while (tern_now() < spin_until)
        ; /* compute without suspending: the cached loop time falls behind */
    uint64_t called = tern_now();
    ck_assert_int_eq(tern_call_later(NULL, 10 * MS, note_time, NULL, NULL), 0);
    tern_handle *never, *never2;
    ck_assert_int_eq(tern_call_later(NULL, UINT64_MAX, never_run, NULL, &never), 0);
    ck_assert_int_eq(tern_call_later(NULL, UINT64_MAX - 1, never_run, NULL, &never2), 0);
    for (int i = 0; i < 2000 && !atomic_load(&later_ran_at); i++)
        ck_assert_int_eq(tern_sleep(MS), 0);
    uint64_t ran = atomic_load(&later_ran_at);
    ck_assert_uint_ne(ran, 0);
    ck_assert_msg(ran - called >= 10 * MS, "ran %.3f ms after the call",
                  (double)(ran - called) / 1e6);
    ck_assert_int_eq(tern_handle_cancel(never), 0); /* still pending */
    ck_assert_int_eq(tern_handle_cancel(never2), 0);
    tern_handle_release(never);
    tern_handle_release(never2);
    return NULL;
}

START_TEST(call_later_from_the_call)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, later_clock_main, NULL, NULL), 0);
}
END_TEST

/* A handle that can never come due is still dropped (and freed) at
 * shutdown. */
static void *later_forever_main(void *arg)
{
    (void)arg;
    ck_assert_int_eq(tern_call_later(NULL, UINT64_MAX, never_run, NULL, NULL), 0);
    ck_assert_int_eq(tern_call_at(NULL, UINT64_MAX, never_run, NULL, NULL), 0);
    return NULL;
}

START_TEST(call_later_forever_dropped)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, later_forever_main, NULL, NULL), 0);
}
END_TEST

/* A loop callback runs on the loop's thread outside any task: a call
 * that would have to wait there returns -EPERM (blocking would stop the
 * loop for ever: with one worker nothing could ever wake it), leaves
 * nothing queued, and one that can finish at once does. */
typedef struct misuse {
    tern_mutex held, free_m;
    tern_rwlock rw;
    tern_gen *gen;
    tern_event ev;
    tern_sem sem;
    tern_cond cond;
    tern_barrier bar;
    tern_waitgroup wg;
    tern_chan *ch;
    tern_future *f;
    tern_task *busy;
    int pipe[2];
    _Atomic int done;
} misuse;

static void misuse_cb(void *arg)
{
    misuse *m = arg;
    int v;
    void *gv;
    ck_assert_int_eq(tern_mutex_lock(&m->held), -EPERM);
    ck_assert_int_eq(tern_rwlock_rdlock(&m->rw), -EPERM);
    ck_assert_int_eq(tern_rwlock_wrlock_until(&m->rw, tern_now() + 1000 * MS), -EPERM);
    ck_assert_int_eq(tern_gen_next(m->gen, &gv, 0), -EPERM);
    ck_assert_int_eq(tern_mutex_lock_until(&m->held, tern_now() + 1000 * MS), -EPERM);
    ck_assert_int_eq(tern_mutex_lock(&m->free_m), 0); /* no wait needed */
    ck_assert_int_eq(tern_cond_wait(&m->cond, &m->free_m, 0), -EPERM);
    ck_assert_int_eq(tern_mutex_try_lock(&m->free_m), -EAGAIN); /* still ours */
    ck_assert_int_eq(tern_mutex_unlock(&m->free_m), 0);
    ck_assert_int_eq(tern_event_wait(&m->ev, 0), -EPERM);
    ck_assert_int_eq(tern_sem_acquire(&m->sem, 1), -EPERM);
    ck_assert_int_eq(tern_barrier_wait(&m->bar, 0), -EPERM);
    ck_assert_int_eq(tern_waitgroup_wait(&m->wg, 0), -EPERM);
    ck_assert_int_eq(tern_chan_recv(m->ch, &v), -EPERM);
    tern_select_case c = {.chan = m->ch, .op = TERN_SELECT_RECV, .elem = &v};
    ck_assert_int_eq(tern_select(&c, 1, 0), -EPERM);
    ck_assert_int_eq(tern_future_wait(m->f, 0), -EPERM);
    ck_assert_int_eq(tern_gather(&m->f, 1, 0, 0), -EPERM);
    ck_assert_int_eq(tern_wait_any(&m->f, 1, 0), -EPERM);
    ck_assert_int_eq(tern_join(m->busy, NULL), -EPERM);
    ck_assert_int_eq(tern_sleep(MS), -EPERM);
    ck_assert_int_eq(tern_yield(), -EPERM);
    char b;
    ck_assert_int_eq(tern_read(m->pipe[0], &b, 1, 0), -EPERM);
    atomic_store(&m->done, 1);
}

static void *stay(void *arg)
{
    tern_event_wait(arg, 0);
    return NULL;
}

static int one_value(tern_gen *g, void *arg)
{
    (void)arg;
    return tern_gen_yield(g, (void *)1);
}

static void misuse_done_cb(tern_future *f, void *arg)
{
    (void)f;
    misuse_cb(arg);
}

/* arg: how the callback is run: 0 call_soon, 1 call_later, 2 a future's
 * done callback. */
static void *callback_misuse_main(void *arg)
{
    misuse m;
    tern_future *trigger = NULL;
    tern_mutex_init(&m.held);
    tern_rwlock_init(&m.rw);
    ck_assert_int_eq(tern_rwlock_wrlock(&m.rw), 0);
    ck_assert_int_eq(tern_gen_new(one_value, NULL, &m.gen), 0);
    tern_mutex_init(&m.free_m);
    tern_event_init(&m.ev);
    tern_sem_init(&m.sem, 0);
    tern_cond_init(&m.cond);
    ck_assert_int_eq(tern_barrier_init(&m.bar, 2), 0);
    tern_waitgroup_init(&m.wg);
    ck_assert_int_eq(tern_waitgroup_add(&m.wg, 1), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(int), 1, &m.ch), 0);
    ck_assert_int_eq(tern_future_new(&m.f), 0);
    ck_assert_int_eq(pipe2(m.pipe, O_CLOEXEC), 0);
    atomic_init(&m.done, 0);
    ck_assert_int_eq(tern_mutex_lock(&m.held), 0);
    ck_assert_int_eq(tern_spawn(stay, &m.ev, &m.busy), 0);
    switch ((intptr_t)arg) {
    case 0:
        ck_assert_int_eq(tern_call_soon(NULL, misuse_cb, &m, NULL), 0);
        break;
    case 1:
        ck_assert_int_eq(tern_call_later(NULL, MS, misuse_cb, &m, NULL), 0);
        break;
    default:
        ck_assert_int_eq(tern_future_new(&trigger), 0);
        ck_assert_int_eq(tern_future_add_done_callback(trigger, NULL, misuse_done_cb, &m),
                         0);
        ck_assert_int_eq(tern_future_set_result(trigger, NULL), 0);
    }
    for (int i = 0; i < 10000 && !atomic_load(&m.done); i++)
        ck_assert_int_eq(tern_sleep(MS), 0);
    ck_assert_int_eq(atomic_load(&m.done), 1);
    /* nothing was left queued anywhere: every object is free to go */
    ck_assert_int_eq(tern_mutex_unlock(&m.held), 0);
    ck_assert_int_eq(tern_mutex_destroy(&m.held), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&m.rw), 0);
    ck_assert_int_eq(tern_rwlock_destroy(&m.rw), 0);
    void *gv = NULL;
    ck_assert_int_eq(tern_gen_next(m.gen, &gv, 0), 1); /* the callback took nothing */
    ck_assert_ptr_eq(gv, (void *)1);
    tern_gen_free(m.gen);
    tern_future_release(trigger);
    ck_assert_int_eq(tern_mutex_destroy(&m.free_m), 0);
    ck_assert_int_eq(tern_sem_destroy(&m.sem), 0);
    ck_assert_int_eq(tern_cond_destroy(&m.cond), 0);
    ck_assert_int_eq(tern_barrier_destroy(&m.bar), 0);
    ck_assert_int_eq(tern_waitgroup_done(&m.wg), 0);
    ck_assert_int_eq(tern_waitgroup_destroy(&m.wg), 0);
    ck_assert_uint_eq(tern__chan_waiting(m.ch, TERN_SELECT_RECV), 0);
    ck_assert_uint_eq(tern__future_waiting(m.f), 0);
    ck_assert_int_eq(tern_event_set(&m.ev), 0);
    ck_assert_int_eq(tern_join(m.busy, NULL), 0);
    ck_assert_int_eq(tern_event_destroy(&m.ev), 0);
    tern_chan_release(m.ch);
    tern_future_release(m.f);
    close(m.pipe[0]);
    close(m.pipe[1]);
    return NULL;
}

START_TEST(callback_may_not_wait)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, callback_misuse_main, (void *)(intptr_t)_i, NULL), 0);
}
END_TEST

START_TEST(call_later_deadline_order)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, timed_order_main, NULL, NULL), 0);
}
END_TEST

static _Atomic int ran_count;

static void count_run(void *arg)
{
    atomic_fetch_add(&ran_count, 1);
    atomic_fetch_add((_Atomic int *)arg, 1);
}

static void *cancel_main(void *arg)
{
    static _Atomic int hit[N];
    tern_handle *h[N];
    for (int i = 0; i < N; i++) {
        int r = i % 2 ? tern_call_soon(NULL, count_run, &hit[i], &h[i])
                      : tern_call_later(NULL, 1000000, count_run, &hit[i], &h[i]);
        ck_assert_int_eq(r, 0);
    }
    for (int i = 0; i < N; i += 4) {
        ck_assert_int_eq(tern_handle_cancel(h[i]), 0);
        ck_assert_int_eq(tern_handle_cancelled(h[i]), 1);
        ck_assert_int_eq(tern_handle_cancel(h[i]), -EALREADY);
    }
    for (int i = 1; i < N; i += 4)
        ck_assert_int_eq(tern_handle_cancel(h[i]), 0);
    ck_assert_int_eq(tern_sleep(5000000), 0);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&hit[i]), i % 4 < 2 ? 0 : 1);
        if (i % 4 >= 2) {
            /* already ran */
            ck_assert_int_eq(tern_handle_cancel(h[i]), -EALREADY);
            ck_assert_int_eq(tern_handle_cancelled(h[i]), 0);
        }
        tern_handle_release(h[i]);
    }
    ck_assert_int_eq(atomic_load(&ran_count), N / 2);
    return NULL;
}

START_TEST(handle_cancel)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, cancel_main, NULL, NULL), 0);
}
END_TEST

/* call_soon_threadsafe from foreign threads: all run, once, on the loop's
 * thread, one at a time, each thread's in its own order. */
enum { THREADS = 4 };
static int per_thread = 10000;
static tern_loop *target;

static void *foreign_poster(void *arg)
{
    intptr_t id = (intptr_t)arg;
    for (intptr_t i = 0; i < per_thread; i++) {
        int r = tern_call_soon_threadsafe(target, record, (void *)(id * per_thread + i),
                                          NULL);
        ck_assert_int_eq(r, 0);
    }
    return NULL;
}

START_TEST(call_soon_threadsafe_from_threads)
{
    per_thread = SCALED(10000);
    tern_runtime *rt = rt_new(2);
    target = expect_loop = tern_runtime_loop(rt, 1);
    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, foreign_poster, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    WAIT_UNTIL(atomic_load(&ndone) >= THREADS * per_thread, WAIT_MS);
    ck_assert_int_eq(atomic_load(&ndone), THREADS * per_thread);
    int last[THREADS];
    memset(last, -1, sizeof last);
    for (int k = 0; k < THREADS * per_thread; k++) {
        int id = seen[k] / per_thread, i = seen[k] % per_thread;
        ck_assert_int_eq(i, last[id] + 1);
        last[id] = i;
    }
    tern_loop_info info;
    ck_assert_int_eq(tern_loop_get_info(target, &info), 0);
    ck_assert_uint_ge(info.stats.handles_run, (uint64_t)THREADS * per_thread);
    tern_runtime_free(rt);
}
END_TEST

static void *time_main(void *arg)
{
    uint64_t a = tern_loop_time(NULL);
    ck_assert_uint_gt(a, 0);
    ck_assert_uint_le(a, tern_now());
    tern_sleep(2000000);
    uint64_t b = tern_loop_time(NULL);
    ck_assert_uint_ge(b, a + 2000000);
    return NULL;
}

START_TEST(loop_time_follows_clock)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, time_main, NULL, NULL), 0);
}
END_TEST

START_TEST(loop_info_names_backend)
{
    tern_runtime *rt = rt_new(2);
    const char *want = getenv("TERN_BACKEND");
    for (unsigned i = 0; i < 2; i++) {
        tern_loop_info info;
        ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, i), &info), 0);
        ck_assert_uint_eq(info.worker, i);
        ck_assert_ptr_nonnull(info.backend_note);
        if (want)
            ck_assert_str_eq(info.backend, want);
        else
            ck_assert(!strcmp(info.backend, "io_uring") ||
                      !strcmp(info.backend, "epoll"));
    }
    tern_runtime_free(rt);
    /* the config forces a backend too */
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = 1;
    cfg.backend = TERN_BACKEND_EPOLL;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), 0);
    tern_loop_info info;
    ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, 0), &info), 0);
    ck_assert_str_eq(info.backend, "epoll");
    tern_runtime_free(rt);
}
END_TEST

static uint64_t median20(uint64_t *v)
{
    for (int i = 0; i < 20; i++)
        for (int j = i + 1; j < 20; j++)
            if (v[j] < v[i]) {
                uint64_t t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
    return v[10];
}

/* Sleeps wake no earlier than asked and soon after: within a few ms of
 * when the kernel wakes a thread that sleeps as long. A loaded machine
 * wakes everything late, so a fixed bound would not hold there; the
 * reference, a plain nanosleep of the worker's thread between the task's
 * sleeps, is late by as much. */
static void *accuracy_main(void *arg)
{
    uint64_t late[20], ref[20];
    for (int i = 0; i < 20; i++) {
        uint64_t want = (uint64_t)(i % 5 + 1) * 1000000;
        uint64_t t0 = tern_now();
        ck_assert_int_eq(tern_sleep(want), 0);
        uint64_t took = tern_now() - t0;
        ck_assert_uint_ge(took, want);
        late[i] = took - want;
        struct timespec ts = {0, (long)want};
        t0 = tern_now();
        while (nanosleep(&ts, &ts) < 0)
            ;
        took = tern_now() - t0;
        ref[i] = took > want ? took - want : 0;
    }
    uint64_t med = median20(late), ref_med = median20(ref);
    ck_assert_msg(med < ref_med + 5000000, "median lateness %llu ns, a thread's %llu ns",
                  (unsigned long long)med, (unsigned long long)ref_med);
    return NULL;
}

START_TEST(timer_accuracy)
{
    tern_config cfg = {.workers = 2};
    ck_assert_int_eq(tern_run(&cfg, accuracy_main, NULL, NULL), 0);
}
END_TEST

/* call_soon_threadsafe from the loop's own thread keeps call_soon order. */
static char abc[8];
static _Atomic int abc_len;

static void put_char(void *arg)
{
    abc[atomic_fetch_add(&abc_len, 1)] = *(char *)arg;
}

static void *mixed_soon_main(void *arg)
{
    tern_loop *l = tern_loop_current();
    ck_assert_int_eq(tern_call_soon(l, put_char, "A", NULL), 0);
    ck_assert_int_eq(tern_call_soon_threadsafe(l, put_char, "B", NULL), 0);
    ck_assert_int_eq(tern_call_soon(l, put_char, "C", NULL), 0);
    while (atomic_load(&abc_len) < 3)
        tern_yield();
    return NULL;
}

START_TEST(threadsafe_from_own_loop_keeps_order)
{
    tern_config cfg = {.workers = 1};
    ck_assert_int_eq(tern_run(&cfg, mixed_soon_main, NULL, NULL), 0);
    ck_assert_str_eq(abc, "ABC");
}
END_TEST

Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, call_soon_in_order);
    tcase_add_test(tc, call_soon_bad_arguments);
    tcase_add_test(tc, call_later_deadline_order);
    tcase_add_test(tc, call_later_from_the_call);
    tcase_add_test(tc, call_later_forever_dropped);
    tcase_add_loop_test(tc, callback_may_not_wait, 0, 3);
    tcase_add_test(tc, handle_cancel);
    tcase_add_test(tc, call_soon_threadsafe_from_threads);
    tcase_add_test(tc, loop_time_follows_clock);
    tcase_add_test(tc, loop_info_names_backend);
    tcase_add_test(tc, timer_accuracy);
    tcase_add_test(tc, threadsafe_from_own_loop_keeps_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(loop_suite());
}
