/* Locks and signals: Mutex, RwLock, Semaphore, Event, Notify, Condition,
 * Barrier, WaitGroup. Fairness, deadlines, cancellation (and its races with
 * grants), tasks and foreign threads on the same objects, bad arguments.
 *
 * Tests that need waiters queued in a known order look at the object's wait
 * queue (white box, through wait.h) and move on only once the previous
 * waiter is in it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "sync/sync.h"

#define MS 1000000ull

/* ---- helpers ------------------------------------------------------------------ */

static int qlen(tern__waitq *q)
{
    int n = 0;
    TERN__LOCK(q);
    for (tern__waiter *w = q->head; w; w = w->next)
        n++;
    TERN__UNLOCK(q);
    return n;
}

/* Lets others run (a task yields, a thread naps). */
static void pause_a_bit(void)
{
    if (tern_task_current())
        tern_yield();
    else
        usleep(100);
}

/* Waits until q holds n nodes: the n-th waiter is queued. */
static void await_qlen(tern__waitq *q, int n)
{
    uint64_t end = tern_now() + 20000 * MS;
    while (qlen(q) < n) {
        ck_assert_msg(tern_now() < end, "waiter %d never queued", n);
        pause_a_bit();
    }
}

/* Waits like await_qlen, but gives up when t (a waiter with a deadline)
 * is done first: 1 when the n-th waiter queued while t still waited. */
static int await_qlen_or_done(tern__waitq *q, int n, tern_task *t)
{
    uint64_t end = tern_now() + 20000 * MS;
    while (qlen(q) < n) {
        if (tern_task_done(t))
            return qlen(q) >= n;
        ck_assert_msg(tern_now() < end, "waiter %d never queued", n);
        pause_a_bit();
    }
    return 1;
}

/* Waits until the task first in q's queue has switched out in a wait of
 * kind: queued is not yet parked. It cannot leave meanwhile: it waits for
 * something the caller holds. */
static void await_head_parked(tern__waitq *q, int kind)
{
    TERN__LOCK(q);
    tern_task *t = q->head ? q->head->wake->task : NULL;
    TERN__UNLOCK(q);
    ck_assert_msg(t != NULL, "no task first in the queue");
    uint64_t end = tern_now() + 20000 * MS;
    while (tern__task_parked(t) != kind) {
        ck_assert_msg(tern_now() < end, "the waiter never parked");
        pause_a_bit();
    }
}

static void await_count(_Atomic int *c, int n)
{
    uint64_t end = tern_now() + 20000 * MS;
    while (atomic_load(c) < n) {
        ck_assert_msg(tern_now() < end, "count stuck at %d < %d", atomic_load(c), n);
        pause_a_bit();
    }
}

static pthread_t thread_start(void *(*fn)(void *), void *arg)
{
    pthread_t th = 0;
    ck_assert_int_eq(pthread_create(&th, NULL, fn, arg), 0);
    return th;
}

static void *thread_join(pthread_t th)
{
    void *r;
    ck_assert_int_eq(pthread_join(th, &r), 0);
    return r;
}

static tern_task *spawn(tern_task_fn fn, void *arg)
{
    tern_task *t;
    ck_assert_int_eq(tern_spawn(fn, arg, &t), 0);
    return t;
}

static void run_main(unsigned workers, tern_task_fn fn, void *arg)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    ck_assert_int_eq(tern_run(&cfg, fn, arg, NULL), 0);
}

/* ---- Mutex ------------------------------------------------------------------------ */

START_TEST(mutex_basic)
{
    tern_mutex m = TERN_MUTEX_INIT;
    ck_assert_int_eq(tern_mutex_try_lock(&m), 0);
    ck_assert_int_eq(tern_mutex_try_lock(&m), -EAGAIN);
    ck_assert_int_eq(tern_mutex_destroy(&m), -EBUSY);
    ck_assert_int_eq(tern_mutex_unlock(&m), 0);
    ck_assert_int_eq(tern_mutex_unlock(&m), -EPERM);
    /* outside any runtime: a thread locks without waiting */
    ck_assert_int_eq(tern_mutex_lock(&m), 0);
    ck_assert_int_eq(tern_mutex_lock_until(&m, tern_now() + 5 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_mutex_lock_until(&m, 1), -ETIMEDOUT); /* already past */
    ck_assert_int_eq(qlen(tern__wq_of(&m)), 0);
    ck_assert_int_eq(tern_mutex_unlock(&m), 0);
    ck_assert_int_eq(tern_mutex_lock_until(&m, 1), 0); /* free: a past deadline is fine */
    ck_assert_int_eq(tern_mutex_unlock(&m), 0);
    ck_assert_int_eq(tern_mutex_destroy(&m), 0);
    tern_mutex_init(&m);
    ck_assert_int_eq(tern_mutex_destroy(&m), 0);
}
END_TEST

/* Mutual exclusion: a plain counter, many tasks and foreign threads. */
static tern_mutex cm = TERN_MUTEX_INIT;
static long counter;
static int per_task;

static void *count_task(void *arg)
{
    for (int i = 0; i < per_task; i++) {
        if (i % 16 == 0) {
            int r;
            while ((r = tern_mutex_try_lock(&cm)) == -EAGAIN)
                tern_yield();
            ck_assert_int_eq(r, 0);
        } else {
            ck_assert_int_eq(tern_mutex_lock(&cm), 0);
        }
        counter++;
        ck_assert_int_eq(tern_mutex_unlock(&cm), 0);
    }
    return NULL;
}

static void *count_thread(void *arg)
{
    for (int i = 0; i < per_task; i++) {
        if (i & 1)
            ck_assert_int_eq(tern_mutex_lock_until(&cm, tern_now() + 60000 * MS), 0);
        else
            ck_assert_int_eq(tern_mutex_lock(&cm), 0);
        counter++;
        ck_assert_int_eq(tern_mutex_unlock(&cm), 0);
    }
    return NULL;
}

START_TEST(mutex_exclusion)
{
    enum { TASKS = 64, THREADS = 2 };
    per_task = SCALED(20000);
    tern_runtime *rt = rt_new(4);
    tern_task *t[TASKS];
    pthread_t th[THREADS];
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, count_task, NULL, &t[i]), 0);
    for (int i = 0; i < THREADS; i++)
        th[i] = thread_start(count_thread, NULL);
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++)
        thread_join(th[i]);
    ck_assert_int_eq(counter, (long)(TASKS + THREADS) * per_task);
    ck_assert_uint_eq(atomic_load(&tern__mutex_of(&cm)->state), 0);
    ck_assert_int_eq(tern_mutex_destroy(&cm), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* FIFO: waiters queued in a known order get the lock in that order; one of
 * them is a foreign thread. */
static tern_mutex fm;
static int fifo_order[16], fifo_n;

static void *fifo_locker(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&fm), 0);
    fifo_order[fifo_n++] = (int)(intptr_t)arg; /* guarded by fm */
    ck_assert_int_eq(tern_mutex_unlock(&fm), 0);
    return NULL;
}

static void *mutex_fifo_main(void *arg)
{
    enum { N = 8, THREAD_AT = 5 };
    tern_task *t[N] = {0};
    pthread_t th = 0;
    tern_mutex_init(&fm);
    fifo_n = 0;
    ck_assert_int_eq(tern_mutex_lock(&fm), 0);
    for (int i = 0; i < N; i++) {
        if (i == THREAD_AT)
            th = thread_start(fifo_locker, (void *)(intptr_t)i);
        else
            t[i] = spawn(fifo_locker, (void *)(intptr_t)i);
        await_qlen(tern__wq_of(&fm), i + 1);
    }
    /* no barging: the lock is held and handed over, never free */
    ck_assert_int_eq(tern_mutex_try_lock(&fm), -EAGAIN);
    ck_assert_int_eq(tern_mutex_unlock(&fm), 0);
    for (int i = 0; i < N; i++)
        if (t[i])
            ck_assert_int_eq(tern_join(t[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(fifo_n, N);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(fifo_order[i], i);
    ck_assert_int_eq(tern_mutex_destroy(&fm), 0);
    return NULL;
}

START_TEST(mutex_fifo)
{
    run_main(_i ? 4 : 1, mutex_fifo_main, NULL);
}
END_TEST

/* Deadlines: a task and a thread time out while another holds the lock,
 * and leave nothing queued; a lock_until that is served in time succeeds. */
static tern_mutex dm;

static void *timed_locker(void *arg)
{
    uint64_t t0 = tern_now();
    int r = tern_mutex_lock_until(&dm, t0 + 20 * MS);
    ck_assert_int_eq(r, -ETIMEDOUT);
    ck_assert_uint_ge(tern_now() - t0, 20 * MS);
    return NULL;
}

static void *served_locker(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock_until(&dm, tern_now() + 60000 * MS), 0);
    ck_assert_int_eq(tern_mutex_unlock(&dm), 0);
    return NULL;
}

static void *mutex_deadline_main(void *arg)
{
    tern_mutex_init(&dm);
    ck_assert_int_eq(tern_mutex_lock(&dm), 0);
    tern_task *t = spawn(timed_locker, NULL);
    pthread_t th = thread_start(timed_locker, NULL);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    thread_join(th);
    ck_assert_int_eq(qlen(tern__wq_of(&dm)), 0);
    /* the waiter bit went with them: a plain unlock frees it */
    ck_assert_uint_eq(atomic_load(&tern__mutex_of(&dm)->state), 1);
    t = spawn(served_locker, NULL);
    th = thread_start(served_locker, NULL);
    await_qlen(tern__wq_of(&dm), 2);
    TASK_WAIT_PARKED(t, TERN__W_MUTEX); /* a thread shows only its queue node */
    ck_assert_int_eq(tern_mutex_unlock(&dm), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    thread_join(th);
    ck_assert_int_eq(tern_mutex_destroy(&dm), 0);
    return NULL;
}

START_TEST(mutex_deadline)
{
    run_main(2, mutex_deadline_main, NULL);
}
END_TEST

/* A thread holds, a task waits (and the other way round); the unlock wakes
 * the other kind of waiter. */
static tern_mutex xm;
static _Atomic int x_stage;

static void *x_hold_thread(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&xm), 0);
    atomic_store(&x_stage, 1);
    await_qlen(tern__wq_of(&xm), 1); /* the task waits */
    await_head_parked(tern__wq_of(&xm), TERN__W_MUTEX);
    ck_assert_int_eq(tern_mutex_unlock(&xm), 0);
    /* now the thread waits for the task */
    await_count(&x_stage, 2);
    ck_assert_int_eq(tern_mutex_lock(&xm), 0);
    ck_assert_int_eq(atomic_load(&x_stage), 3);
    ck_assert_int_eq(tern_mutex_unlock(&xm), 0);
    return NULL;
}

static void *x_task(void *arg)
{
    await_count(&x_stage, 1);
    ck_assert_int_eq(tern_mutex_lock(&xm), 0);
    atomic_store(&x_stage, 2);
    await_qlen(tern__wq_of(&xm), 1); /* the thread waits */
    /* a thread shows no more than its queue node: the nap lets it get to
     * its futex wait too (the unlock must wake it either way) */
    tern_sleep(5 * MS);
    atomic_store(&x_stage, 3);
    ck_assert_int_eq(tern_mutex_unlock(&xm), 0);
    return NULL;
}

START_TEST(mutex_task_and_thread)
{
    tern_runtime *rt = rt_new(2);
    tern_task *t;
    pthread_t th = thread_start(x_hold_thread, NULL);
    ck_assert_int_eq(tern_runtime_spawn(rt, x_task, NULL, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    thread_join(th);
    ck_assert_int_eq(tern_mutex_destroy(&xm), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A cancelled waiter returns -ECANCELED and does not take the hand-off
 * meant for the waiter behind it. */
static tern_mutex km;
static _Atomic int k_res[2];

static void *k_waiter(void *arg)
{
    int i = (int)(intptr_t)arg;
    int r = tern_mutex_lock(&km);
    atomic_store(&k_res[i], r == 0 ? 1 : r);
    if (r == 0)
        ck_assert_int_eq(tern_mutex_unlock(&km), 0);
    return NULL;
}

static void *mutex_cancel_main(void *arg)
{
    tern_mutex_init(&km);
    ck_assert_int_eq(tern_mutex_lock(&km), 0);
    tern_task *a = spawn(k_waiter, (void *)0);
    await_qlen(tern__wq_of(&km), 1);
    tern_task *b = spawn(k_waiter, (void *)1);
    await_qlen(tern__wq_of(&km), 2);
    ck_assert_int_eq(tern_task_cancel(a), 0);
    ck_assert_int_eq(tern_join(a, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&k_res[0]), -ECANCELED);
    ck_assert_int_eq(qlen(tern__wq_of(&km)), 1);
    ck_assert_int_eq(atomic_load(&k_res[1]), 0);
    ck_assert_int_eq(tern_mutex_unlock(&km), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    ck_assert_int_eq(atomic_load(&k_res[1]), 1);
    ck_assert_int_eq(tern_mutex_destroy(&km), 0);
    return NULL;
}

START_TEST(mutex_cancel_waiter)
{
    run_main(2, mutex_cancel_main, NULL);
}
END_TEST

/* Cancel racing unlock: A and B queue; the holder unlocks and A is
 * cancelled at about the same time. Either A got the lock (and passes it
 * on) or it left; B always gets it, and the lock ends free. When the unlock
 * came first the grant was made: A must report success. */
static tern_mutex rm;
static _Atomic int ra_got, ra_cancel, rb_got;

static void *race_a(void *arg)
{
    int r = tern_mutex_lock(&rm);
    if (r == 0) {
        atomic_fetch_add(&ra_got, 1);
        ck_assert_int_eq(tern_mutex_unlock(&rm), 0);
    } else {
        ck_assert_int_eq(r, -ECANCELED);
        atomic_fetch_add(&ra_cancel, 1);
    }
    return NULL;
}

static void *race_b(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&rm), 0);
    atomic_fetch_add(&rb_got, 1);
    ck_assert_int_eq(tern_mutex_unlock(&rm), 0);
    return NULL;
}

static void *mutex_race_main(void *arg)
{
    int n = SCALED(3000), unlock_first = 0;
    tern_mutex_init(&rm);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(tern_mutex_lock(&rm), 0);
        tern_task *a = spawn(race_a, NULL);
        await_qlen(tern__wq_of(&rm), 1);
        tern_task *b = spawn(race_b, NULL);
        await_qlen(tern__wq_of(&rm), 2);
        int before = atomic_load(&ra_got);
        if (i & 1) {
            ck_assert_int_eq(tern_mutex_unlock(&rm), 0);
            tern_task_cancel(a);
            unlock_first++;
        } else {
            tern_task_cancel(a);
            ck_assert_int_eq(tern_mutex_unlock(&rm), 0);
        }
        tern_join(a, NULL); /* -ECANCELED even when granted: it saw the cancel */
        ck_assert_int_eq(tern_join(b, NULL), 0);
        if (i & 1)
            ck_assert_int_eq(atomic_load(&ra_got), before + 1);
        ck_assert_int_eq(atomic_load(&ra_got) + atomic_load(&ra_cancel), i + 1);
        ck_assert_int_eq(atomic_load(&rb_got), i + 1);
        ck_assert_int_eq(tern_mutex_try_lock(&rm), 0);
        ck_assert_int_eq(tern_mutex_unlock(&rm), 0);
    }
    ck_assert_int_ge(atomic_load(&ra_got), unlock_first);
    ck_assert_int_eq(tern_mutex_destroy(&rm), 0);
    return NULL;
}

START_TEST(mutex_cancel_race)
{
    run_main(4, mutex_race_main, NULL);
}
END_TEST

/* ---- RwLock ------------------------------------------------------------------------ */

START_TEST(rwlock_basic)
{
    tern_rwlock rw = TERN_RWLOCK_INIT;
    ck_assert_int_eq(tern_rwlock_unlock(&rw), -EPERM);
    ck_assert_int_eq(tern_rwlock_try_rdlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_rdlock(&rw), 0); /* readers share */
    ck_assert_int_eq(tern_rwlock_try_wrlock(&rw), -EAGAIN);
    ck_assert_int_eq(tern_rwlock_wrlock_until(&rw, tern_now() + 5 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_rwlock_destroy(&rw), -EBUSY);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), -EPERM);
    ck_assert_int_eq(tern_rwlock_wrlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_try_rdlock(&rw), -EAGAIN);
    ck_assert_int_eq(tern_rwlock_try_wrlock(&rw), -EAGAIN);
    ck_assert_int_eq(tern_rwlock_rdlock_until(&rw, 1), -ETIMEDOUT);
    ck_assert_int_eq(tern_rwlock_destroy(&rw), -EBUSY);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), -EPERM);
    ck_assert_int_eq(tern_rwlock_try_wrlock(&rw), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&rw), 0);
    ck_assert_int_eq(qlen(tern__wq_of(&rw)), 0);
    ck_assert_int_eq(tern_rwlock_destroy(&rw), 0);
    tern_rwlock_init(&rw);
    ck_assert_int_eq(tern_rwlock_destroy(&rw), 0);
}
END_TEST

/* FIFO with batching: behind a writer queue R0 R1 W2 R3 R4 W5. R0 and R1
 * go in together, then W2 alone, then R3 and R4 together, then W5. */
static tern_rwlock orw;
static char rw_order[16];
static _Atomic int rw_n, rw_inside;

static void *rw_order_task(void *arg)
{
    const char *who = arg;
    int wr = who[0] == 'W';
    ck_assert_int_eq(wr ? tern_rwlock_wrlock(&orw) : tern_rwlock_rdlock(&orw), 0);
    int in = atomic_fetch_add(&rw_inside, 1) + 1, most = in;
    rw_order[atomic_fetch_add(&rw_n, 1)] = who[1];
    for (int i = 0; i < 5; i++) { /* let whoever came in with us run */
        int cur = atomic_load(&rw_inside);
        most = cur > most ? cur : most;
        tern_yield();
    }
    /* a writer is alone; each reader saw its partner inside with it */
    ck_assert_int_eq(most, wr ? 1 : 2);
    atomic_fetch_sub(&rw_inside, 1);
    ck_assert_int_eq(tern_rwlock_unlock(&orw), 0);
    return NULL;
}

static void *rw_fifo_main(void *arg)
{
    static const char *who[] = {"R0", "R1", "W2", "R3", "R4", "W5"};
    enum { N = 6 };
    tern_task *t[N];
    tern_rwlock_init(&orw);
    ck_assert_int_eq(tern_rwlock_wrlock(&orw), 0);
    for (int i = 0; i < N; i++) {
        t[i] = spawn(rw_order_task, (void *)who[i]);
        await_qlen(tern__wq_of(&orw), i + 1);
    }
    ck_assert_int_eq(tern_rwlock_unlock(&orw), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    ck_assert_int_eq(atomic_load(&rw_n), N);
    /* readers let in together may start in either order */
    ck_assert(strchr("01", rw_order[0]) && strchr("01", rw_order[1]) &&
              rw_order[0] != rw_order[1]);
    ck_assert_int_eq(rw_order[2], '2');
    ck_assert(strchr("34", rw_order[3]) && strchr("34", rw_order[4]) &&
              rw_order[3] != rw_order[4]);
    ck_assert_int_eq(rw_order[5], '5');
    ck_assert_int_eq(tern_rwlock_destroy(&orw), 0);
    return NULL;
}

START_TEST(rwlock_fifo_batches)
{
    run_main(1, rw_fifo_main, NULL);
}
END_TEST

/* Writer preference: readers hold, a writer queues, and from then on new
 * readers queue behind it; the writer goes in when the last old reader
 * leaves, then the new readers. */
static tern_rwlock prw;
static _Atomic int p_writer_in, p_reader_in;

static void *pref_writer(void *arg)
{
    ck_assert_int_eq(tern_rwlock_wrlock(&prw), 0);
    atomic_store(&p_writer_in, 1);
    ck_assert_int_eq(atomic_load(&p_reader_in), 0);
    tern_sleep(2 * MS); /* held a while: room for a reader to barge in */
    atomic_store(&p_writer_in, 2);
    ck_assert_int_eq(tern_rwlock_unlock(&prw), 0);
    return NULL;
}

static void *pref_reader(void *arg)
{
    ck_assert_int_eq(tern_rwlock_rdlock(&prw), 0);
    ck_assert_int_eq(atomic_load(&p_writer_in), 2);
    atomic_fetch_add(&p_reader_in, 1);
    ck_assert_int_eq(tern_rwlock_unlock(&prw), 0);
    return NULL;
}

static void *rw_pref_main(void *arg)
{
    tern_rwlock_init(&prw);
    ck_assert_int_eq(tern_rwlock_rdlock(&prw), 0);
    ck_assert_int_eq(tern_rwlock_rdlock(&prw), 0); /* two old holds */
    tern_task *w = spawn(pref_writer, NULL);
    await_qlen(tern__wq_of(&prw), 1);
    ck_assert_int_eq(tern_rwlock_try_rdlock(&prw), -EAGAIN);
    ck_assert_int_eq(tern_rwlock_rdlock_until(&prw, tern_now() + 2 * MS), -ETIMEDOUT);
    tern_task *r1 = spawn(pref_reader, NULL);
    await_qlen(tern__wq_of(&prw), 2);
    pthread_t th = thread_start(pref_reader, NULL); /* a thread queues too */
    await_qlen(tern__wq_of(&prw), 3);
    ck_assert_int_eq(tern_rwlock_unlock(&prw), 0);
    tern_sleep(2 * MS);                             /* room for a wrong grant to show */
    ck_assert_int_eq(atomic_load(&p_writer_in), 0); /* one old reader left */
    ck_assert_int_eq(tern_rwlock_unlock(&prw), 0);
    ck_assert_int_eq(tern_join(w, NULL), 0);
    ck_assert_int_eq(tern_join(r1, NULL), 0);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&p_reader_in), 2);
    ck_assert_int_eq(tern_rwlock_destroy(&prw), 0);
    return NULL;
}

START_TEST(rwlock_writer_preference)
{
    run_main(2, rw_pref_main, NULL);
}
END_TEST

/* A writer waiting at the head gives up (deadline, then cancel): the
 * readers it held back go in while the old reader still holds. */
static tern_rwlock arw;
static _Atomic int a_reader_in;

/* arg: how many ms it waits; 0: until cancelled */
static void *abandon_writer(void *arg)
{
    uint64_t ms = (uintptr_t)arg;
    int r = tern_rwlock_wrlock_until(&arw, ms ? tern_now() + ms * MS : 0);
    ck_assert_int_eq(r, ms ? -ETIMEDOUT : -ECANCELED);
    return NULL;
}

static void *abandon_reader(void *arg)
{
    ck_assert_int_eq(tern_rwlock_rdlock(&arw), 0);
    atomic_fetch_add(&a_reader_in, 1);
    ck_assert_int_eq(tern_rwlock_unlock(&arw), 0);
    return NULL;
}

static void *rw_abandon_main(void *arg)
{
    tern_rwlock_init(&arw);
    /* the readers must queue behind the timed writer before its deadline;
     * where they did not (a slow machine), the round proved nothing and is
     * run again with a longer one */
    uint64_t wait_ms = 200;
    for (int timed = 1; timed >= 0; timed--) {
        atomic_store(&a_reader_in, 0);
        ck_assert_int_eq(tern_rwlock_rdlock(&arw), 0);
        tern_task *w = spawn(abandon_writer, (void *)(uintptr_t)(timed ? wait_ms : 0));
        await_qlen(tern__wq_of(&arw), 1);
        tern_task *r1 = spawn(abandon_reader, NULL);
        tern_task *r2 = spawn(abandon_reader, NULL);
        if (!await_qlen_or_done(tern__wq_of(&arw), 3, w)) {
            ck_assert_int_eq(tern_join(w, NULL), 0);
            ck_assert_int_eq(tern_join(r1, NULL), 0);
            ck_assert_int_eq(tern_join(r2, NULL), 0);
            ck_assert_int_eq(tern_rwlock_unlock(&arw), 0);
            ck_assert_uint_lt(wait_ms, 60000);
            wait_ms *= 4;
            timed++; /* the same round again */
            continue;
        }
        if (!timed)
            ck_assert_int_eq(tern_task_cancel(w), 0);
        tern_join(w, NULL);
        await_count(&a_reader_in, 2); /* while we still read */
        ck_assert_int_eq(tern_join(r1, NULL), 0);
        ck_assert_int_eq(tern_join(r2, NULL), 0);
        ck_assert_int_eq(atomic_load(&a_reader_in), 2);
        ck_assert_int_eq(tern_rwlock_unlock(&arw), 0);
        ck_assert_int_eq(tern_rwlock_destroy(&arw), 0);
    }
    return NULL;
}

START_TEST(rwlock_abandoned_writer)
{
    run_main(2, rw_abandon_main, NULL);
}
END_TEST

/* Stress: writers keep two plain words equal; readers must never see them
 * differ; the final count is exact. */
static tern_rwlock srw = TERN_RWLOCK_INIT;
static long sa, sb;
static _Atomic long reads_done;

static void *rw_stress_task(void *arg)
{
    int writer = (int)(intptr_t)arg;
    int n = SCALED(5000);
    for (int i = 0; i < n; i++) {
        if (writer || i % 8 == 0) {
            ck_assert_int_eq(tern_rwlock_wrlock(&srw), 0);
            sa++;
            sb++;
        } else {
            ck_assert_int_eq(tern_rwlock_rdlock(&srw), 0);
            ck_assert_int_eq(sa, sb);
            atomic_fetch_add_explicit(&reads_done, 1, memory_order_relaxed);
        }
        ck_assert_int_eq(tern_rwlock_unlock(&srw), 0);
    }
    return NULL;
}

START_TEST(rwlock_stress)
{
    enum { TASKS = 16, THREADS = 2 };
    int n = SCALED(5000);
    tern_runtime *rt = rt_new(4);
    tern_task *t[TASKS];
    pthread_t th[THREADS];
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(
            tern_runtime_spawn(rt, rw_stress_task, (void *)(intptr_t)(i % 4 == 0), &t[i]),
            0);
    for (int i = 0; i < THREADS; i++)
        th[i] = thread_start(rw_stress_task, (void *)(intptr_t)i);
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    for (int i = 0; i < THREADS; i++)
        thread_join(th[i]);
    /* writers: 4 tasks + thread 1 all the time; the others every 8th turn */
    long per_reader_writes = (n + 7) / 8;
    long writes = 5L * n + 13L * per_reader_writes;
    ck_assert_int_eq(sa, writes);
    ck_assert_int_eq(sb, writes);
    ck_assert_int_eq(atomic_load(&reads_done), 13L * (n - per_reader_writes));
    ck_assert_int_eq(tern_rwlock_destroy(&srw), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- Semaphore --------------------------------------------------------------------- */

START_TEST(sem_basic)
{
    tern_sem s = TERN_SEM_INIT(2);
    ck_assert_uint_eq(tern_sem_available(&s), 2);
    ck_assert_int_eq(tern_sem_try_acquire(&s, 3), -EAGAIN);
    ck_assert_int_eq(tern_sem_try_acquire(&s, 2), 0);
    ck_assert_int_eq(tern_sem_try_acquire(&s, 1), -EAGAIN);
    ck_assert_int_eq(tern_sem_acquire_until(&s, 1, tern_now() + 5 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_sem_acquire_until(&s, 1, 1), -ETIMEDOUT);
    ck_assert_int_eq(qlen(tern__wq_of(&s)), 0);
    ck_assert_int_eq(tern_sem_release(&s, 5), 0);
    ck_assert_uint_eq(tern_sem_available(&s), 5);
    ck_assert_int_eq(tern_sem_acquire(&s, 5), 0);
    ck_assert_uint_eq(tern_sem_available(&s), 0);
    ck_assert_int_eq(tern_sem_acquire(&s, 0), -EINVAL);
    ck_assert_int_eq(tern_sem_acquire_until(&s, 0, 0), -EINVAL);
    ck_assert_int_eq(tern_sem_try_acquire(&s, 0), -EINVAL);
    ck_assert_int_eq(tern_sem_release(&s, 0), -EINVAL);
    ck_assert_int_eq(tern_sem_release(&s, UINT64_MAX), 0);
    ck_assert_int_eq(tern_sem_release(&s, 1), -EOVERFLOW);
    ck_assert_uint_eq(tern_sem_available(&s), UINT64_MAX); /* unchanged */
    ck_assert_int_eq(tern_sem_destroy(&s), 0);
    tern_sem_init(&s, 7);
    ck_assert_uint_eq(tern_sem_available(&s), 7);
    ck_assert_int_eq(tern_sem_destroy(&s), 0);
}
END_TEST

/* Strict FIFO: a request for 3 at the head is not overtaken by requests
 * for 1 behind it, even when enough permits for them are free. */
static tern_sem fs;
static int sem_order[8], sem_n;
static _Atomic int sem_got;

static void *sem_taker(void *arg)
{
    int n = (int)(intptr_t)arg;
    ck_assert_int_eq(tern_sem_acquire(&fs, (uint64_t)n), 0);
    sem_order[sem_n++] = n; /* one worker */
    atomic_fetch_add(&sem_got, 1);
    return NULL;
}

static void *sem_fifo_main(void *arg)
{
    tern_sem_init(&fs, 0);
    sem_n = 0;
    tern_task *a = spawn(sem_taker, (void *)3);
    await_qlen(tern__wq_of(&fs), 1);
    tern_task *b = spawn(sem_taker, (void *)1);
    await_qlen(tern__wq_of(&fs), 2);
    tern_task *c = spawn(sem_taker, (void *)2);
    await_qlen(tern__wq_of(&fs), 3);
    ck_assert_int_eq(tern_sem_release(&fs, 2), 0);
    tern_sleep(2 * MS); /* room for a wrong grant to show */
    ck_assert_int_eq(atomic_load(&sem_got), 0);
    ck_assert_uint_eq(tern_sem_available(&fs), 2);
    ck_assert_int_eq(tern_sem_try_acquire(&fs, 1), -EAGAIN); /* others wait */
    ck_assert_int_eq(tern_sem_release(&fs, 1), 0);           /* 3: the head goes */
    ck_assert_int_eq(tern_join(a, NULL), 0);
    ck_assert_uint_eq(tern_sem_available(&fs), 0);
    ck_assert_int_eq(tern_sem_release(&fs, 1), 0); /* 1: enough for b only */
    ck_assert_int_eq(tern_join(b, NULL), 0);
    tern_sleep(2 * MS); /* room for a wrong grant to show */
    ck_assert_int_eq(atomic_load(&sem_got), 2);
    ck_assert_int_eq(tern_sem_release(&fs, 3), 0); /* c takes 2, 1 is left */
    ck_assert_int_eq(tern_join(c, NULL), 0);
    ck_assert_int_eq(sem_n, 3);
    ck_assert_int_eq(sem_order[0], 3);
    ck_assert_int_eq(sem_order[1], 1);
    ck_assert_int_eq(sem_order[2], 2);
    ck_assert_uint_eq(tern_sem_available(&fs), 1);
    ck_assert_int_eq(tern_sem_try_acquire(&fs, 1), 0);
    ck_assert_uint_eq(tern_sem_available(&fs), 0);
    ck_assert_int_eq(tern_sem_destroy(&fs), 0);
    return NULL;
}

START_TEST(sem_fifo)
{
    run_main(1, sem_fifo_main, NULL);
}
END_TEST

/* A big request at the head gives up (deadline, then cancel): the small
 * one behind it is served from the permits that were already free. */
static tern_sem bs;

/* arg: how many ms it waits; 0: until cancelled */
static void *sem_big(void *arg)
{
    uint64_t ms = (uintptr_t)arg;
    int r = tern_sem_acquire_until(&bs, 5, ms ? tern_now() + ms * MS : 0);
    ck_assert_int_eq(r, ms ? -ETIMEDOUT : -ECANCELED);
    return NULL;
}

static _Atomic int small_got;

static void *sem_small(void *arg)
{
    ck_assert_int_eq(tern_sem_acquire(&bs, 1), 0);
    atomic_fetch_add(&small_got, 1);
    return NULL;
}

static void *sem_abandon_main(void *arg)
{
    /* as in rw_abandon_main: a timed head gone before the small one queued
     * behind it proved nothing, and the round is run again waiting longer */
    uint64_t wait_ms = 200;
    for (int timed = 1; timed >= 0; timed--) {
        tern_sem_init(&bs, 2);
        int got = atomic_load(&small_got);
        tern_task *big = spawn(sem_big, (void *)(uintptr_t)(timed ? wait_ms : 0));
        await_qlen(tern__wq_of(&bs), 1);
        pthread_t th = thread_start(sem_small, NULL);
        if (!await_qlen_or_done(tern__wq_of(&bs), 2, big)) {
            ck_assert_int_eq(tern_join(big, NULL), 0);
            thread_join(th);
            ck_assert_uint_eq(tern_sem_available(&bs), 1);
            ck_assert_int_eq(tern_sem_destroy(&bs), 0);
            ck_assert_uint_lt(wait_ms, 60000);
            wait_ms *= 4;
            timed++; /* the same round again */
            continue;
        }
        ck_assert_uint_eq(tern_sem_available(&bs), 2);
        ck_assert_int_eq(tern_sem_destroy(&bs), -EBUSY);
        if (!timed)
            ck_assert_int_eq(tern_task_cancel(big), 0);
        tern_join(big, NULL);
        await_count(&small_got, got + 1);
        thread_join(th);
        ck_assert_uint_eq(tern_sem_available(&bs), 1);
        ck_assert_int_eq(tern_sem_destroy(&bs), 0);
    }
    return NULL;
}

START_TEST(sem_abandoned_head)
{
    run_main(2, sem_abandon_main, NULL);
}
END_TEST

/* At most `permits` holders at once; every permit comes back. */
static tern_sem ls = TERN_SEM_INIT(3);
static _Atomic int ls_inside, ls_max, ls_done;

static void *sem_limited(void *arg)
{
    for (int i = 0; i < SCALED(2000); i++) {
        uint64_t n = 1 + (uint64_t)(i % 2);
        ck_assert_int_eq(tern_sem_acquire(&ls, n), 0);
        int in = atomic_fetch_add(&ls_inside, (int)n) + (int)n;
        ck_assert_int_le(in, 3);
        int mx = atomic_load(&ls_max);
        while (in > mx && !atomic_compare_exchange_weak(&ls_max, &mx, in))
            ;
        if (tern_task_current() && i % 4 == 0)
            tern_yield();
        atomic_fetch_sub(&ls_inside, (int)n);
        ck_assert_int_eq(tern_sem_release(&ls, n), 0);
    }
    atomic_fetch_add(&ls_done, 1);
    return NULL;
}

START_TEST(sem_stress)
{
    enum { TASKS = 16 };
    tern_runtime *rt = rt_new(4);
    tern_task *t[TASKS];
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, sem_limited, NULL, &t[i]), 0);
    pthread_t th = thread_start(sem_limited, NULL);
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&ls_done), TASKS + 1);
    ck_assert_int_le(atomic_load(&ls_max), 3);
    ck_assert_uint_eq(tern_sem_available(&ls), 3);
    ck_assert_int_eq(tern_sem_destroy(&ls), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- Event ------------------------------------------------------------------------ */

static tern_event ev = TERN_EVENT_INIT;
static _Atomic int ev_woken;

static void *ev_waiter(void *arg)
{
    ck_assert_int_eq(tern_event_wait(&ev, 0), 0);
    atomic_fetch_add(&ev_woken, 1);
    return NULL;
}

static void *event_main(void *arg)
{
    enum { N = 10 };
    tern_task *t[N];
    ck_assert_int_eq(tern_event_is_set(&ev), 0);
    ck_assert_int_eq(tern_event_wait(&ev, tern_now() + 5 * MS), -ETIMEDOUT);
    for (int i = 0; i < N; i++)
        t[i] = spawn(ev_waiter, NULL);
    pthread_t th = thread_start(ev_waiter, NULL);
    await_qlen(tern__wq_of(&ev), N + 1);
    ck_assert_int_eq(tern_event_destroy(&ev), -EBUSY);
    tern_sleep(2 * MS); /* room for a wrong wake-up to show */
    ck_assert_int_eq(atomic_load(&ev_woken), 0);
    ck_assert_int_eq(tern_event_set(&ev), 0);
    ck_assert_int_eq(tern_event_clear(&ev), 0); /* woken waiters stay woken */
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&ev_woken), N + 1);
    ck_assert_int_eq(tern_event_is_set(&ev), 0);
    ck_assert_int_eq(tern_event_set(&ev), 0);
    ck_assert_int_eq(tern_event_set(&ev), 0);
    ck_assert_int_eq(tern_event_is_set(&ev), 1);
    ck_assert_int_eq(tern_event_wait(&ev, 1), 0); /* set: at once */
    ck_assert_int_eq(tern_event_clear(&ev), 0);
    ck_assert_int_eq(tern_event_wait(&ev, 1), -ETIMEDOUT);
    ck_assert_int_eq(qlen(tern__wq_of(&ev)), 0);
    ck_assert_int_eq(tern_event_destroy(&ev), 0);
    tern_event_init(&ev);
    ck_assert_int_eq(tern_event_is_set(&ev), 0);
    return NULL;
}

START_TEST(event_wakes_all)
{
    run_main(2, event_main, NULL);
}
END_TEST

/* A cancelled event waiter leaves; the set later reaches the others. */
static void *ev_cancel_waiter(void *arg)
{
    ck_assert_int_eq(tern_event_wait(&ev, 0), -ECANCELED);
    return NULL;
}

static void *event_cancel_main(void *arg)
{
    tern_event_init(&ev);
    atomic_store(&ev_woken, 0);
    tern_task *a = spawn(ev_cancel_waiter, NULL);
    await_qlen(tern__wq_of(&ev), 1);
    tern_task *b = spawn(ev_waiter, NULL);
    await_qlen(tern__wq_of(&ev), 2);
    ck_assert_int_eq(tern_task_cancel(a), 0);
    ck_assert_int_eq(tern_join(a, NULL), -ECANCELED);
    ck_assert_int_eq(qlen(tern__wq_of(&ev)), 1);
    ck_assert_int_eq(tern_event_set(&ev), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    ck_assert_int_eq(atomic_load(&ev_woken), 1);
    ck_assert_int_eq(tern_event_destroy(&ev), 0);
    return NULL;
}

START_TEST(event_cancel_waiter)
{
    run_main(2, event_cancel_main, NULL);
}
END_TEST

/* ---- Notify ------------------------------------------------------------------------ */

static tern_notify nt;
static int nt_order[16], nt_n;
static _Atomic int nt_woken;

static void *nt_waiter(void *arg)
{
    ck_assert_int_eq(tern_notify_wait(&nt, 0), 0);
    nt_order[__atomic_fetch_add(&nt_n, 1, __ATOMIC_RELAXED)] = (int)(intptr_t)arg;
    atomic_fetch_add(&nt_woken, 1);
    return NULL;
}

static void *notify_main(void *arg)
{
    enum { N = 6 };
    tern_task *t[N];
    tern_notify_init(&nt);
    /* a notify before the wait is kept, but only one */
    ck_assert_int_eq(tern_notify_one(&nt), 0);
    ck_assert_int_eq(tern_notify_one(&nt), 0);
    ck_assert_int_eq(tern_notify_wait(&nt, 1), 0);
    ck_assert_int_eq(tern_notify_wait(&nt, tern_now() + 2 * MS), -ETIMEDOUT);
    /* notify_all with nobody waiting stores nothing */
    ck_assert_int_eq(tern_notify_all(&nt), 0);
    ck_assert_int_eq(tern_notify_wait(&nt, 1), -ETIMEDOUT);
    ck_assert_int_eq(qlen(tern__wq_of(&nt)), 0);
    /* notify_one wakes the longest waiter, one at a time */
    for (int i = 0; i < N; i++) {
        t[i] = spawn(nt_waiter, (void *)(intptr_t)i);
        await_qlen(tern__wq_of(&nt), i + 1);
    }
    ck_assert_int_eq(tern_notify_destroy(&nt), -EBUSY);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tern_notify_one(&nt), 0);
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
        tern_sleep(MS); /* room for a second wake-up to show */
        ck_assert_int_eq(atomic_load(&nt_woken), i + 1);
    }
    /* notify_all wakes the rest and leaves no permit behind */
    ck_assert_int_eq(tern_notify_all(&nt), 0);
    for (int i = 3; i < N; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    ck_assert_int_eq(atomic_load(&nt_woken), N);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nt_order[i], i);
    ck_assert_int_eq(tern_notify_wait(&nt, 1), -ETIMEDOUT);
    /* a thread waits and a task notifies it */
    pthread_t th = thread_start(nt_waiter, (void *)99);
    await_qlen(tern__wq_of(&nt), 1);
    ck_assert_int_eq(tern_notify_one(&nt), 0);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&nt_woken), N + 1);
    ck_assert_int_eq(tern_notify_wait(&nt, 1), -ETIMEDOUT);
    ck_assert_int_eq(tern_notify_destroy(&nt), 0);
    return NULL;
}

START_TEST(notify_semantics)
{
    run_main(2, notify_main, NULL);
}
END_TEST

/* Cancel racing notify_one: either the waiter took the notification or it
 * left and the notification became the stored permit; never both, never
 * neither. */
static _Atomic int nr_got, nr_cancel;

static void *nr_waiter(void *arg)
{
    int r = tern_notify_wait(&nt, 0);
    if (r == 0) {
        atomic_fetch_add(&nr_got, 1);
    } else {
        ck_assert_int_eq(r, -ECANCELED);
        atomic_fetch_add(&nr_cancel, 1);
    }
    return NULL;
}

static void *notify_race_main(void *arg)
{
    int n = SCALED(3000);
    tern_notify_init(&nt);
    for (int i = 0; i < n; i++) {
        tern_task *t = spawn(nr_waiter, NULL);
        await_qlen(tern__wq_of(&nt), 1);
        int got = atomic_load(&nr_got);
        if (i & 1) {
            ck_assert_int_eq(tern_notify_one(&nt), 0);
            tern_task_cancel(t);
        } else {
            tern_task_cancel(t);
            ck_assert_int_eq(tern_notify_one(&nt), 0);
        }
        tern_join(t, NULL);
        int took = atomic_load(&nr_got) - got;
        if (i & 1)
            ck_assert_int_eq(took, 1); /* claimed before the cancel */
        int permit = tern_notify_wait(&nt, 1) == 0;
        ck_assert_int_eq(took + permit, 1);
        ck_assert_int_eq(atomic_load(&nr_got) + atomic_load(&nr_cancel), i + 1);
        ck_assert_int_eq(qlen(tern__wq_of(&nt)), 0);
    }
    ck_assert_int_eq(tern_notify_destroy(&nt), 0);
    return NULL;
}

START_TEST(notify_cancel_race)
{
    run_main(4, notify_race_main, NULL);
}
END_TEST

/* ---- Condition -------------------------------------------------------------------- */

/* Bounded buffer with two conditions; producers are tasks and a thread. */
enum { PC_CAP = 4, PC_PRODUCERS = 4, PC_CONSUMERS = 4 };
static tern_mutex pcm;
static tern_cond not_full, not_empty;
static long pc_buf[PC_CAP];
static int pc_head, pc_count, pc_closed, pc_items;
static _Atomic long pc_sum, pc_taken;

static void *pc_producer(void *arg)
{
    long base = (long)(intptr_t)arg * 1000000;
    for (int i = 0; i < pc_items; i++) {
        ck_assert_int_eq(tern_mutex_lock(&pcm), 0);
        while (pc_count == PC_CAP)
            ck_assert_int_eq(tern_cond_wait(&not_full, &pcm, 0), 0);
        pc_buf[(pc_head + pc_count++) % PC_CAP] = base + i;
        ck_assert_int_eq(tern_cond_signal(&not_empty), 0);
        ck_assert_int_eq(tern_mutex_unlock(&pcm), 0);
    }
    return NULL;
}

static void *pc_consumer(void *arg)
{
    for (;;) {
        ck_assert_int_eq(tern_mutex_lock(&pcm), 0);
        while (pc_count == 0 && !pc_closed)
            ck_assert_int_eq(tern_cond_wait(&not_empty, &pcm, 0), 0);
        if (pc_count == 0) {
            ck_assert_int_eq(tern_mutex_unlock(&pcm), 0);
            return NULL;
        }
        long v = pc_buf[pc_head];
        pc_head = (pc_head + 1) % PC_CAP;
        pc_count--;
        ck_assert_int_eq(tern_cond_signal(&not_full), 0);
        ck_assert_int_eq(tern_mutex_unlock(&pcm), 0);
        atomic_fetch_add(&pc_sum, v);
        atomic_fetch_add(&pc_taken, 1);
    }
}

START_TEST(cond_producer_consumer)
{
    pc_items = SCALED(20000);
    tern_mutex_init(&pcm);
    tern_cond_init(&not_full);
    tern_cond_init(&not_empty);
    tern_runtime *rt = rt_new(4);
    tern_task *p[PC_PRODUCERS], *c[PC_CONSUMERS];
    for (int i = 0; i < PC_CONSUMERS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, pc_consumer, NULL, &c[i]), 0);
    for (int i = 0; i < PC_PRODUCERS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, pc_producer, (void *)(intptr_t)i, &p[i]),
                         0);
    pthread_t th = thread_start(pc_producer, (void *)(intptr_t)PC_PRODUCERS);
    pthread_t tc = thread_start(pc_consumer, NULL);
    for (int i = 0; i < PC_PRODUCERS; i++)
        ck_assert_int_eq(tern_join(p[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(tern_mutex_lock(&pcm), 0);
    pc_closed = 1;
    ck_assert_int_eq(tern_cond_broadcast(&not_empty), 0);
    ck_assert_int_eq(tern_mutex_unlock(&pcm), 0);
    for (int i = 0; i < PC_CONSUMERS; i++)
        ck_assert_int_eq(tern_join(c[i], NULL), 0);
    thread_join(tc);
    long n = pc_items, np = PC_PRODUCERS + 1;
    ck_assert_int_eq(atomic_load(&pc_taken), np * n);
    /* producer k sends k * 1000000 + i for i < n */
    long want = 1000000 * n * (np * (np - 1) / 2) + np * (n * (n - 1) / 2);
    ck_assert_int_eq(atomic_load(&pc_sum), want);
    ck_assert_int_eq(tern_cond_destroy(&not_full), 0);
    ck_assert_int_eq(tern_cond_destroy(&not_empty), 0);
    ck_assert_int_eq(tern_mutex_destroy(&pcm), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* Errors, timeout and cancel: the mutex is held again on every return,
 * and a cancelled waiter still waits for a mutex someone else holds.
 * signal wakes the longest waiter; broadcast wakes all. */
static tern_mutex cdm;
static tern_cond cdc;
static _Atomic int cd_stage, cd_woken;
static int cd_order[8], cd_n;

static void *cd_cancelled(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, 0), -ECANCELED);
    ck_assert_int_eq(tern_mutex_try_lock(&cdm), -EAGAIN); /* ours again */
    atomic_store(&cd_stage, 2);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    return NULL;
}

static void *cd_signalled(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, 0), 0);
    cd_order[cd_n++] = (int)(intptr_t)arg; /* under cdm */
    atomic_fetch_add(&cd_woken, 1);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    return NULL;
}

static void *cond_main(void *arg)
{
    tern_mutex_init(&cdm);
    tern_cond_init(&cdc);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, 0), -EPERM);
    ck_assert_int_eq(qlen(tern__wq_of(&cdc)), 0);
    /* timeout: back with the lock */
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, t0 + 10 * MS), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now() - t0, 10 * MS);
    ck_assert_int_eq(tern_mutex_try_lock(&cdm), -EAGAIN);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, 1), -ETIMEDOUT);
    ck_assert_int_eq(qlen(tern__wq_of(&cdc)), 0);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    /* a signal with nobody waiting is not kept */
    ck_assert_int_eq(tern_cond_signal(&cdc), 0);
    ck_assert_int_eq(tern_cond_broadcast(&cdc), 0);
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, tern_now() + MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    /* cancel while we hold the mutex: it must wait for it */
    tern_task *c = spawn(cd_cancelled, NULL);
    await_qlen(tern__wq_of(&cdc), 1);
    ck_assert_int_eq(tern_cond_destroy(&cdc), -EBUSY);
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    ck_assert_int_eq(tern_task_cancel(c), 0);
    await_qlen(tern__wq_of(&cdm), 1);
    tern_sleep(2 * MS); /* room for it to return without the mutex */
    ck_assert_int_eq(atomic_load(&cd_stage), 0);
    ck_assert_int_eq(qlen(tern__wq_of(&cdc)), 0);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    ck_assert_int_eq(tern_join(c, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&cd_stage), 2);
    /* signal: longest waiter first (one is a thread); broadcast: the rest */
    enum { N = 5, THREAD_AT = 2 };
    tern_task *t[N] = {0};
    pthread_t th = 0;
    cd_n = 0;
    for (int i = 0; i < N; i++) {
        if (i == THREAD_AT)
            th = thread_start(cd_signalled, (void *)(intptr_t)i);
        else
            t[i] = spawn(cd_signalled, (void *)(intptr_t)i);
        await_qlen(tern__wq_of(&cdc), i + 1);
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tern_cond_signal(&cdc), 0);
        await_count(&cd_woken, i + 1);
        tern_sleep(MS); /* room for a second wake-up to show */
        ck_assert_int_eq(atomic_load(&cd_woken), i + 1);
    }
    ck_assert_int_eq(tern_cond_broadcast(&cdc), 0);
    for (int i = 0; i < N; i++)
        if (t[i])
            ck_assert_int_eq(tern_join(t[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(cd_n, N);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(cd_order[i], i);
    ck_assert_int_eq(tern_cond_destroy(&cdc), 0);
    ck_assert_int_eq(tern_mutex_destroy(&cdm), 0);
    return NULL;
}

START_TEST(cond_semantics)
{
    run_main(2, cond_main, NULL);
}
END_TEST

/* A thread waits on a condition; a task signals it under the mutex. */
static void *cd_thread_timeout(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&cdm), 0);
    ck_assert_int_eq(tern_cond_wait(&cdc, &cdm, tern_now() + 5 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_mutex_try_lock(&cdm), -EAGAIN);
    ck_assert_int_eq(tern_mutex_unlock(&cdm), 0);
    return NULL;
}

static void *cd_signal_task(void *arg)
{
    ck_assert_int_eq(tern_cond_signal(&cdc), 0);
    return NULL;
}

START_TEST(cond_foreign_thread)
{
    tern_mutex_init(&cdm);
    tern_cond_init(&cdc);
    thread_join(thread_start(cd_thread_timeout, NULL));
    tern_runtime *rt = rt_new(2);
    cd_n = 0;
    pthread_t th = thread_start(cd_signalled, (void *)7);
    await_qlen(tern__wq_of(&cdc), 1);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, cd_signal_task, NULL, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    thread_join(th);
    ck_assert_int_eq(cd_n, 1);
    ck_assert_int_eq(cd_order[0], 7);
    ck_assert_int_eq(tern_cond_destroy(&cdc), 0);
    ck_assert_int_eq(tern_mutex_destroy(&cdm), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* ---- Barrier ---------------------------------------------------------------------- */

enum { B_TASKS = 6, B_THREADS = 2, B_PARTIES = B_TASKS + B_THREADS, B_ROUNDS_MAX = 2000 };
static tern_barrier rb = TERN_BARRIER_INIT(B_PARTIES);
static _Atomic int b_arrivals[B_ROUNDS_MAX], b_leaders[B_ROUNDS_MAX];
static int b_rounds;

static void *b_party(void *arg)
{
    for (int r = 0; r < b_rounds; r++) {
        atomic_fetch_add(&b_arrivals[r], 1);
        int ret = tern_barrier_wait(&rb, 0);
        ck_assert_int_ge(ret, 0);
        ck_assert_int_le(ret, 1);
        /* nobody leaves before everyone came */
        ck_assert_int_eq(atomic_load(&b_arrivals[r]), B_PARTIES);
        atomic_fetch_add(&b_leaders[r], ret);
    }
    return NULL;
}

START_TEST(barrier_rounds)
{
    b_rounds = SCALED(B_ROUNDS_MAX);
    tern_runtime *rt = rt_new(4);
    tern_task *t[B_TASKS];
    pthread_t th[B_THREADS];
    for (int i = 0; i < B_TASKS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, b_party, NULL, &t[i]), 0);
    for (int i = 0; i < B_THREADS; i++)
        th[i] = thread_start(b_party, NULL);
    for (int i = 0; i < B_TASKS; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    for (int i = 0; i < B_THREADS; i++)
        thread_join(th[i]);
    for (int r = 0; r < b_rounds; r++) {
        ck_assert_int_eq(atomic_load(&b_leaders[r]), 1);
        ck_assert_int_eq(atomic_load(&b_arrivals[r]), B_PARTIES);
    }
    ck_assert_uint_eq(tern__barrier_of(&rb)->generation, (uint64_t)b_rounds);
    ck_assert_int_eq(tern_barrier_destroy(&rb), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
}
END_TEST

/* A waiter that times out or is cancelled no longer counts: the round
 * still needs `parties` live arrivals. */
static tern_barrier lb;
static _Atomic int lb_sum, lb_done;

static void *lb_timed(void *arg)
{
    ck_assert_int_eq(tern_barrier_wait(&lb, tern_now() + 10 * MS), -ETIMEDOUT);
    return NULL;
}

static void *lb_forever(void *arg)
{
    int r = tern_barrier_wait(&lb, 0);
    if (arg) {
        ck_assert_int_eq(r, -ECANCELED);
    } else {
        ck_assert_int_ge(r, 0);
        atomic_fetch_add(&lb_sum, r);
        atomic_fetch_add(&lb_done, 1);
    }
    return NULL;
}

static void *barrier_leave_main(void *arg)
{
    ck_assert_int_eq(tern_barrier_init(&lb, 3), 0);
    tern_task *a = spawn(lb_timed, NULL);
    ck_assert_int_eq(tern_join(a, NULL), 0);
    ck_assert_uint_eq(tern__barrier_of(&lb)->arrived, 0);
    ck_assert_int_eq(tern_barrier_destroy(&lb), 0);
    tern_task *c = spawn(lb_forever, (void *)1); /* will be cancelled */
    await_qlen(tern__wq_of(&lb), 1);
    ck_assert_int_eq(tern_barrier_destroy(&lb), -EBUSY);
    ck_assert_int_eq(tern_task_cancel(c), 0);
    ck_assert_int_eq(tern_join(c, NULL), -ECANCELED);
    ck_assert_uint_eq(tern__barrier_of(&lb)->arrived, 0);
    /* two live waiters do not make a round of three */
    tern_task *x = spawn(lb_forever, NULL), *y = spawn(lb_forever, NULL);
    await_qlen(tern__wq_of(&lb), 2);
    tern_sleep(2 * MS); /* room for a short round to show */
    ck_assert_int_eq(atomic_load(&lb_done), 0);
    /* the third (us) is the leader */
    ck_assert_int_eq(tern_barrier_wait(&lb, 0), 1);
    ck_assert_int_eq(tern_join(x, NULL), 0);
    ck_assert_int_eq(tern_join(y, NULL), 0);
    ck_assert_int_eq(atomic_load(&lb_done), 2);
    ck_assert_int_eq(atomic_load(&lb_sum), 0);
    ck_assert_uint_eq(tern__barrier_of(&lb)->generation, 1);
    ck_assert_int_eq(tern_barrier_destroy(&lb), 0);
    /* one party: every caller leads its own round */
    ck_assert_int_eq(tern_barrier_init(&lb, 1), 0);
    ck_assert_int_eq(tern_barrier_wait(&lb, 0), 1);
    ck_assert_int_eq(tern_barrier_wait(&lb, 1), 1);
    ck_assert_int_eq(tern_barrier_destroy(&lb), 0);
    return NULL;
}

START_TEST(barrier_leave)
{
    run_main(2, barrier_leave_main, NULL);
}
END_TEST

/* Cancel racing the last arrival: each round has one waiter that may be
 * cancelled as the leader arrives. Every outcome is consistent: the round
 * has exactly one leader, and a cancelled waiter is not counted. */
static tern_barrier cb;
static _Atomic int cb_ok, cb_cancel;

static void *cb_waiter(void *arg)
{
    int r = tern_barrier_wait(&cb, 0);
    if (r == -ECANCELED) {
        atomic_fetch_add(&cb_cancel, 1);
    } else {
        ck_assert_int_eq(r, 0);
        atomic_fetch_add(&cb_ok, 1);
    }
    return NULL;
}

static void *barrier_race_main(void *arg)
{
    int n = SCALED(2000);
    ck_assert_int_eq(tern_barrier_init(&cb, 2), 0);
    for (int i = 0; i < n; i++) {
        tern_task *t = spawn(cb_waiter, NULL);
        await_qlen(tern__wq_of(&cb), 1);
        int ok = atomic_load(&cb_ok);
        if (i & 1) {
            ck_assert_int_eq(tern_barrier_wait(&cb, 0), 1);
            tern_task_cancel(t);
            tern_join(t, NULL);
            ck_assert_int_eq(atomic_load(&cb_ok), ok + 1);
        } else {
            tern_task_cancel(t);
            /* either the waiter was still counted (we lead) or it left (we
             * wait alone; the helper below completes the round) */
            int r = tern_barrier_wait(&cb, tern_now() + 2 * MS);
            tern_join(t, NULL);
            if (r == 1) {
                ck_assert_int_eq(atomic_load(&cb_ok), ok + 1);
            } else {
                ck_assert_int_eq(r, -ETIMEDOUT);
                ck_assert_int_eq(atomic_load(&cb_ok), ok);
            }
        }
        ck_assert_uint_eq(tern__barrier_of(&cb)->arrived, 0);
        ck_assert_int_eq(qlen(tern__wq_of(&cb)), 0);
        ck_assert_int_eq(atomic_load(&cb_ok) + atomic_load(&cb_cancel), i + 1);
    }
    ck_assert_int_eq(tern_barrier_destroy(&cb), 0);
    return NULL;
}

START_TEST(barrier_cancel_race)
{
    run_main(4, barrier_race_main, NULL);
}
END_TEST

/* ---- WaitGroup -------------------------------------------------------------------- */

static tern_waitgroup wg = TERN_WAITGROUP_INIT;
static _Atomic int wg_finished, wg_waiters_ok;
static int wg_workers;

static void *wg_worker(void *arg)
{
    if ((intptr_t)arg % 3 == 0)
        tern_yield();
    atomic_fetch_add(&wg_finished, 1);
    ck_assert_int_eq(tern_waitgroup_done(&wg), 0);
    return NULL;
}

static void *wg_waiter(void *arg)
{
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 0), 0);
    ck_assert_int_eq(atomic_load(&wg_finished), wg_workers);
    atomic_fetch_add(&wg_waiters_ok, 1);
    return NULL;
}

static void *waitgroup_main(void *arg)
{
    enum { WAITERS = 4 };
    wg_workers = SCALED(2000);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 0), 0); /* zero: at once */
    ck_assert_int_eq(tern_waitgroup_add(&wg, wg_workers), 0);
    tern_task *w[WAITERS];
    for (int i = 0; i < WAITERS; i++)
        w[i] = spawn(wg_waiter, NULL);
    pthread_t th = thread_start(wg_waiter, NULL);
    await_qlen(tern__wq_of(&wg), WAITERS + 1);
    ck_assert_int_eq(tern_waitgroup_destroy(&wg), -EBUSY);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, tern_now() + MS), -ETIMEDOUT);
    for (int i = 0; i < wg_workers; i++)
        ck_assert_int_eq(tern_spawn(wg_worker, (void *)(intptr_t)i, NULL), 0);
    for (int i = 0; i < WAITERS; i++)
        ck_assert_int_eq(tern_join(w[i], NULL), 0);
    thread_join(th);
    ck_assert_int_eq(atomic_load(&wg_waiters_ok), WAITERS + 1);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 1), 0);
    /* below zero: refused, nothing changes */
    ck_assert_int_eq(tern_waitgroup_done(&wg), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_add(&wg, 2), 0);
    ck_assert_int_eq(tern_waitgroup_add(&wg, -3), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 1), -ETIMEDOUT);
    ck_assert_int_eq(tern_waitgroup_add(&wg, INT64_MAX), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_add(&wg, -2), 0);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 1), 0);
    ck_assert_int_eq(tern_waitgroup_add(&wg, 0), 0);
    ck_assert_int_eq(qlen(tern__wq_of(&wg)), 0);
    ck_assert_int_eq(tern_waitgroup_destroy(&wg), 0);
    tern_waitgroup_init(&wg);
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 1), 0);
    return NULL;
}

START_TEST(waitgroup_many)
{
    run_main(4, waitgroup_main, NULL);
}
END_TEST

static void *wg_cancelled(void *arg)
{
    ck_assert_int_eq(tern_waitgroup_wait(&wg, 0), -ECANCELED);
    return NULL;
}

static void *waitgroup_cancel_main(void *arg)
{
    tern_waitgroup_init(&wg);
    ck_assert_int_eq(tern_waitgroup_add(&wg, 1), 0);
    tern_task *t = spawn(wg_cancelled, NULL);
    await_qlen(tern__wq_of(&wg), 1);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(qlen(tern__wq_of(&wg)), 0);
    ck_assert_int_eq(tern_waitgroup_destroy(&wg), 0);
    ck_assert_int_eq(tern_waitgroup_done(&wg), 0);
    return NULL;
}

START_TEST(waitgroup_cancel)
{
    run_main(2, waitgroup_cancel_main, NULL);
}
END_TEST

/* ---- destroy while waited on, every kind --------------------------------------- */

static tern_mutex dbm;
static tern_rwlock dbr;
static tern_sem dbs;
static tern_notify dbn;

static void *db_mutex(void *arg)
{
    ck_assert_int_eq(tern_mutex_lock(&dbm), 0);
    return (void *)(intptr_t)tern_mutex_unlock(&dbm);
}

static void *db_rw(void *arg)
{
    ck_assert_int_eq(tern_rwlock_wrlock(&dbr), 0);
    return (void *)(intptr_t)tern_rwlock_unlock(&dbr);
}

static void *db_sem(void *arg)
{
    return (void *)(intptr_t)tern_sem_acquire(&dbs, 1);
}

static void *db_notify(void *arg)
{
    return (void *)(intptr_t)tern_notify_wait(&dbn, 0);
}

static void *destroy_busy_main(void *arg)
{
    tern_mutex_init(&dbm);
    tern_rwlock_init(&dbr);
    tern_sem_init(&dbs, 0);
    tern_notify_init(&dbn);
    ck_assert_int_eq(tern_mutex_lock(&dbm), 0);
    ck_assert_int_eq(tern_rwlock_rdlock(&dbr), 0);
    tern_task *t[4] = {spawn(db_mutex, NULL), spawn(db_rw, NULL), spawn(db_sem, NULL),
                       spawn(db_notify, NULL)};
    await_qlen(tern__wq_of(&dbm), 1);
    await_qlen(tern__wq_of(&dbr), 1);
    await_qlen(tern__wq_of(&dbs), 1);
    await_qlen(tern__wq_of(&dbn), 1);
    ck_assert_int_eq(tern_mutex_destroy(&dbm), -EBUSY);
    ck_assert_int_eq(tern_rwlock_destroy(&dbr), -EBUSY);
    ck_assert_int_eq(tern_sem_destroy(&dbs), -EBUSY);
    ck_assert_int_eq(tern_notify_destroy(&dbn), -EBUSY);
    ck_assert_int_eq(tern_mutex_unlock(&dbm), 0);
    ck_assert_int_eq(tern_rwlock_unlock(&dbr), 0);
    ck_assert_int_eq(tern_sem_release(&dbs, 1), 0);
    ck_assert_int_eq(tern_notify_one(&dbn), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        ck_assert_int_eq(tern_join(t[i], &r), 0);
        ck_assert_int_eq((int)(intptr_t)r, 0);
    }
    ck_assert_int_eq(tern_mutex_destroy(&dbm), 0);
    ck_assert_int_eq(tern_rwlock_destroy(&dbr), 0);
    ck_assert_int_eq(tern_sem_destroy(&dbs), 0);
    ck_assert_int_eq(tern_notify_destroy(&dbn), 0);
    return NULL;
}

START_TEST(destroy_busy)
{
    run_main(2, destroy_busy_main, NULL);
}
END_TEST

/* ---- bad arguments ----------------------------------------------------------------- */

START_TEST(bad_arguments)
{
    tern_mutex m = TERN_MUTEX_INIT;
    tern_mutex_init(NULL);
    ck_assert_int_eq(tern_mutex_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_mutex_lock(NULL), -EINVAL);
    ck_assert_int_eq(tern_mutex_lock_until(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_mutex_try_lock(NULL), -EINVAL);
    ck_assert_int_eq(tern_mutex_unlock(NULL), -EINVAL);

    tern_rwlock_init(NULL);
    ck_assert_int_eq(tern_rwlock_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_rwlock_rdlock(NULL), -EINVAL);
    ck_assert_int_eq(tern_rwlock_wrlock(NULL), -EINVAL);
    ck_assert_int_eq(tern_rwlock_rdlock_until(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_rwlock_wrlock_until(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_rwlock_try_rdlock(NULL), -EINVAL);
    ck_assert_int_eq(tern_rwlock_try_wrlock(NULL), -EINVAL);
    ck_assert_int_eq(tern_rwlock_unlock(NULL), -EINVAL);

    tern_sem_init(NULL, 1);
    ck_assert_int_eq(tern_sem_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_sem_acquire(NULL, 1), -EINVAL);
    ck_assert_int_eq(tern_sem_acquire_until(NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(tern_sem_try_acquire(NULL, 1), -EINVAL);
    ck_assert_int_eq(tern_sem_release(NULL, 1), -EINVAL);
    ck_assert_uint_eq(tern_sem_available(NULL), 0);

    tern_event_init(NULL);
    ck_assert_int_eq(tern_event_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_event_set(NULL), -EINVAL);
    ck_assert_int_eq(tern_event_clear(NULL), -EINVAL);
    ck_assert_int_eq(tern_event_is_set(NULL), 0);
    ck_assert_int_eq(tern_event_wait(NULL, 0), -EINVAL);

    tern_notify_init(NULL);
    ck_assert_int_eq(tern_notify_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_notify_one(NULL), -EINVAL);
    ck_assert_int_eq(tern_notify_all(NULL), -EINVAL);
    ck_assert_int_eq(tern_notify_wait(NULL, 0), -EINVAL);

    tern_cond c = TERN_COND_INIT;
    tern_cond_init(NULL);
    ck_assert_int_eq(tern_cond_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_cond_wait(NULL, &m, 0), -EINVAL);
    ck_assert_int_eq(tern_cond_wait(&c, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_cond_wait(&c, &m, 0), -EPERM); /* m not locked */
    ck_assert_int_eq(tern_cond_signal(NULL), -EINVAL);
    ck_assert_int_eq(tern_cond_broadcast(NULL), -EINVAL);
    ck_assert_int_eq(tern_cond_destroy(&c), 0);

    tern_barrier b = {0};
    ck_assert_int_eq(tern_barrier_init(NULL, 1), -EINVAL);
    ck_assert_int_eq(tern_barrier_init(&b, 0), -EINVAL);
    ck_assert_int_eq(tern_barrier_wait(&b, 0), -EINVAL); /* zero parties */
    ck_assert_int_eq(tern_barrier_wait(NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_barrier_destroy(NULL), -EINVAL);

    tern_waitgroup_init(NULL);
    ck_assert_int_eq(tern_waitgroup_destroy(NULL), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_add(NULL, 1), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_done(NULL), -EINVAL);
    ck_assert_int_eq(tern_waitgroup_wait(NULL, 0), -EINVAL);
}
END_TEST

Suite *lock_suite(void)
{
    Suite *s = suite_create("lock");
    TCase *tc = tcase_create("lock");
    tcase_add_test(tc, mutex_basic);
    tcase_add_test(tc, mutex_exclusion);
    tcase_add_loop_test(tc, mutex_fifo, 0, 2);
    tcase_add_test(tc, mutex_deadline);
    tcase_add_test(tc, mutex_task_and_thread);
    tcase_add_test(tc, mutex_cancel_waiter);
    tcase_add_test(tc, mutex_cancel_race);
    tcase_add_test(tc, rwlock_basic);
    tcase_add_test(tc, rwlock_fifo_batches);
    tcase_add_test(tc, rwlock_writer_preference);
    tcase_add_test(tc, rwlock_abandoned_writer);
    tcase_add_test(tc, rwlock_stress);
    tcase_add_test(tc, sem_basic);
    tcase_add_test(tc, sem_fifo);
    tcase_add_test(tc, sem_abandoned_head);
    tcase_add_test(tc, sem_stress);
    tcase_add_test(tc, event_wakes_all);
    tcase_add_test(tc, event_cancel_waiter);
    tcase_add_test(tc, notify_semantics);
    tcase_add_test(tc, notify_cancel_race);
    tcase_add_test(tc, cond_producer_consumer);
    tcase_add_test(tc, cond_semantics);
    tcase_add_test(tc, cond_foreign_thread);
    tcase_add_test(tc, barrier_rounds);
    tcase_add_test(tc, barrier_leave);
    tcase_add_test(tc, barrier_cancel_race);
    tcase_add_test(tc, waitgroup_many);
    tcase_add_test(tc, waitgroup_cancel);
    tcase_add_test(tc, destroy_busy);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(lock_suite());
}
