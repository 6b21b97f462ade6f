/* Async generators and streams: every call and its error paths,
 * back-pressure, early close with cleanup, error propagation, cancellation
 * from either side, deadlines, a foreign-thread consumer, pipelines and
 * channel round trips checked element by element, and a stress test with
 * exact counts. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "helpers.h"
#include "sync/sync.h"

#define MS 1000000ull

/* chan.c's element size, when it exports it (gen.c uses the same hook) */

/* A producer of from..to. It counts what it produced and marks its cleanup
 * after a slow (non-suspending) step, so a close that returned before the
 * cleanup had run would be seen. */
typedef struct counter {
    intptr_t from, to;
    int fail;       /* returned after the last value */
    int on_cancel;  /* returned when a yield said -ECANCELED (0: that code) */
    uint64_t sleep; /* ns before each value */
    /* when set, received from before value gate_at: that value waits until
     * the test closes the gate */
    tern_chan *gate;
    intptr_t gate_at;
    _Atomic int produced, cleaned, started;
    _Atomic(tern_task *) self; /* a reference, when publish is set */
    int publish;
} counter;

static int count_body(tern_gen *g, void *arg)
{
    counter *c = arg;
    int r = 0;
    atomic_store(&c->started, 1);
    if (c->publish)
        atomic_store(&c->self, tern_task_ref(tern_task_current()));
    for (intptr_t i = c->from; i <= c->to; i++) {
        if (c->sleep && (r = tern_sleep(c->sleep)) < 0)
            break;
        if (c->gate && i == c->gate_at && (r = tern_chan_recv(c->gate, &(int){0})) < 0)
            break;
        atomic_fetch_add(&c->produced, 1);
        if ((r = tern_gen_yield(g, (void *)i)) < 0)
            break;
    }
    usleep(2000); /* the slow cleanup step itself (see above) */
    atomic_store(&c->cleaned, 1);
    if (r < 0)
        return c->on_cancel ? c->on_cancel : r;
    return c->fail;
}

static counter *counter_new(intptr_t from, intptr_t to)
{
    counter *c = calloc(1, sizeof *c);
    c->from = from;
    c->to = to;
    return c;
}

static tern_gen *gen_of(counter *c)
{
    tern_gen *g = NULL;
    ck_assert_int_eq(tern_gen_new(count_body, c, &g), 0);
    return g;
}

static void wait_live_zero(tern_runtime *rt)
{
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
}

/* Runs fn on a fresh runtime of `workers` and checks that nothing is left:
 * no task, no descriptor. */
static void run_checked(unsigned workers, tern_task_fn fn, void *arg)
{
    int fds = fd_count();
    tern_runtime *rt = rt_new(workers);
    void *res = (void *)1;
    ck_assert_int_eq(tern_block_on(rt, fn, arg, &res), 0);
    ck_assert_ptr_null(res);
    wait_live_zero(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}

/* ---- arguments ---------------------------------------------------------------- */

static void *off_runtime_new(void *arg)
{
    tern_gen *g;
    ck_assert_int_eq(tern_gen_new(count_body, arg, &g), -EPERM);
    return NULL;
}

static void *yield_elsewhere(void *arg)
{
    ck_assert_int_eq(tern_gen_yield(arg, NULL), -EINVAL);
    return NULL;
}

static void *bad_args_body(void *arg)
{
    counter *c = counter_new(1, 3);
    tern_gen *g, *s;
    tern_chan *ch;
    ck_assert_int_eq(tern_gen_new(NULL, NULL, &g), -EINVAL);
    ck_assert_int_eq(tern_gen_new(count_body, c, NULL), -EINVAL);
    ck_assert_int_eq(tern_gen_next(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(tern_gen_yield(NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_gen_close(NULL), -EINVAL);
    tern_gen_free(NULL);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_map(NULL, NULL, NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_map(g, NULL, NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_filter(g, NULL, NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_filter(NULL, NULL, NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_take(NULL, 1, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_take(g, 1, NULL), -EINVAL);
    ck_assert_int_eq(tern_gen_from_chan(NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_to_chan(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_gen_to_chan(g, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 1, &ch), 0);
    ck_assert_int_eq(tern_gen_from_chan(ch, NULL), -EINVAL);
    tern_chan_release(ch);
    ck_assert_int_eq(tern_chan_new(4, 1, &ch), 0); /* not pointer-sized elements */
    ck_assert_int_eq(tern_gen_from_chan(ch, &s), -EINVAL);
    ck_assert_int_eq(tern_gen_to_chan(g, ch, NULL), -EINVAL);
    tern_chan_release(ch);
    /* yield off the producer: from the consumer, another task, a thread */
    ck_assert_int_eq(tern_gen_yield(g, NULL), -EINVAL);
    void *v;
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_int_eq(tern_gen_yield(g, NULL), -EINVAL);
    tern_task *t;
    ck_assert_int_eq(tern_spawn(yield_elsewhere, g, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    pthread_t th;
    pthread_create(&th, NULL, yield_elsewhere, g);
    pthread_join(th, NULL);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)2);
    tern_gen_free(g);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    free(c);
    return NULL;
}

START_TEST(bad_arguments)
{
    pthread_t th;
    pthread_create(&th, NULL, off_runtime_new, NULL);
    pthread_join(th, NULL);
    run_checked(2, bad_args_body, NULL);
}
END_TEST

/* ---- values, end, back-pressure ---------------------------------------------------- */

static void *values_body(void *arg)
{
    enum { N = 50 };
    counter *c = counter_new(1, N);
    c->publish = 1;
    tern_gen *g = gen_of(c);
    void *v = NULL;
    /* lazy: nothing runs before the first next (the sleep is the chance an
     * eager producer would take; nothing to wait for) */
    tern_sleep(5 * MS);
    ck_assert_int_eq(atomic_load(&c->started), 0);
    for (intptr_t i = 1; i <= N; i++) {
        ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)i);
        /* back-pressure: the producer waits at its yield for the next ask,
         * having made nothing more */
        if (i % 10 == 0)
            TASK_WAIT_PARKED(atomic_load(&c->self), TERN__W_GEN);
        ck_assert_int_eq(atomic_load(&c->produced), (int)i);
    }
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    ck_assert_int_eq(tern_gen_next(g, NULL, 0), 0);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    ck_assert_int_eq(tern_gen_close(g), 0);
    ck_assert_int_eq(tern_gen_close(g), 0);
    tern_gen_free(g);
    tern_task_release(atomic_load(&c->self));
    free(c);
    return NULL;
}

START_TEST(values_in_order_with_back_pressure)
{
    run_checked(1, values_body, NULL);
    run_checked(4, values_body, NULL);
}
END_TEST

/* ---- close ---------------------------------------------------------------------- */

static void *close_body(void *arg)
{
    void *v;
    /* closed mid-stream: the producer's cleanup has run when close returns */
    counter *c = counter_new(1, INTPTR_MAX);
    tern_gen *g = gen_of(c);
    for (intptr_t i = 1; i <= 3; i++) {
        ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)i);
    }
    ck_assert_int_eq(tern_gen_close(g), 0);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    ck_assert_int_eq(atomic_load(&c->produced), 3);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    ck_assert_int_eq(tern_gen_close(g), 0);
    tern_gen_free(g);
    free(c);

    /* closed before the first next: the producer never runs */
    c = counter_new(1, 5);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_close(g), 0);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    tern_gen_free(g);
    ck_assert_int_eq(atomic_load(&c->started), 0);
    free(c);

    /* freed without a close: free closes */
    c = counter_new(1, INTPTR_MAX);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    tern_gen_free(g);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    free(c);

    /* a cleanup that fails: close reports it; -ECANCELED is not an error */
    c = counter_new(1, INTPTR_MAX);
    c->on_cancel = -EIO;
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_int_eq(tern_gen_close(g), -EIO);
    ck_assert_int_eq(tern_gen_close(g), -EIO);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -EIO);
    tern_gen_free(g);
    free(c);

    /* a producer asleep (not at yield) is cancelled there */
    c = counter_new(1, INTPTR_MAX);
    c->sleep = 10000 * MS;
    c->publish = 1;
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 20 * MS), -ETIMEDOUT);
    /* asleep indeed: a producer cancelled before its body ran would have
     * no cleanup to see */
    TASK_WAIT_UNTIL(atomic_load(&c->self) != NULL, WAIT_MS);
    TASK_WAIT_PARKED(atomic_load(&c->self), TERN__W_SLEEP);
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_gen_close(g), 0);
    ck_assert_uint_lt(tern_now() - t0, 5000 * MS); /* not the 10 s sleep */
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    tern_gen_free(g);
    tern_task_release(atomic_load(&c->self));
    free(c);
    return NULL;
}

START_TEST(early_close_runs_cleanup)
{
    run_checked(1, close_body, NULL);
    run_checked(4, close_body, NULL);
}
END_TEST

/* ---- errors -------------------------------------------------------------------- */

static void *error_body(void *arg)
{
    void *v;
    counter *c = counter_new(1, 2);
    c->fail = -EIO;
    tern_gen *g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)1);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)2);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -EIO);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -EIO);
    ck_assert_int_eq(tern_gen_close(g), -EIO);
    tern_gen_free(g);
    free(c);

    /* an error before any value */
    c = counter_new(1, 0);
    c->fail = -ENOENT;
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -ENOENT);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -ENOENT);
    tern_gen_free(g);
    free(c);
    return NULL;
}

START_TEST(producer_error_propagates)
{
    run_checked(2, error_body, NULL);
}
END_TEST

/* ---- cancellation ---------------------------------------------------------------- */

static _Atomic int consumer_r = 1;

static void *cancelled_consumer(void *arg)
{
    counter *c = arg;
    tern_gen *g = gen_of(c);
    void *v;
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    atomic_store(&consumer_r, tern_gen_next(g, &v, 0)); /* cancelled here */
    /* the producer was cancelled too; close waits for it though we are
     * cancelled ourselves */
    tern_gen_free(g);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    return NULL;
}

static void *consumer_cancel_body(void *arg)
{
    counter *c = counter_new(1, INTPTR_MAX);
    /* the second value waits at a gate nobody opens */
    ck_assert_int_eq(tern_chan_new(sizeof(int), 0, &c->gate), 0);
    c->gate_at = 2;
    tern_task *t;
    ck_assert_int_eq(tern_spawn(cancelled_consumer, c, &t), 0);
    /* the producer at the gate was asked for the second value: the
     * consumer's wait now is its second next */
    TASK_WAIT_UNTIL(tern__chan_waiting(c->gate, TERN_SELECT_RECV) == 1, WAIT_MS);
    TASK_WAIT_PARKED(t, TERN__W_GEN);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    ck_assert_int_eq(tern_join(t, NULL), -ECANCELED);
    ck_assert_int_eq(atomic_load(&consumer_r), -ECANCELED);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    tern_chan_release(c->gate);
    free(c);
    return NULL;
}

START_TEST(cancel_from_consumer_side)
{
    run_checked(1, consumer_cancel_body, NULL);
    run_checked(4, consumer_cancel_body, NULL);
}
END_TEST

static void *producer_cancel_body(void *arg)
{
    void *v;
    counter *c = counter_new(1, INTPTR_MAX);
    c->publish = 1;
    tern_gen *g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    tern_task *p = atomic_load(&c->self);
    ck_assert_ptr_nonnull(p);
    /* the producer waits at yield: cancelled there, it gives up with
     * -ECANCELED, which the consumer sees as its error */
    ck_assert_int_eq(tern_task_cancel(p), 0);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -ECANCELED);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -ECANCELED);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    ck_assert_int_eq(tern_gen_close(g), 0);
    tern_gen_free(g);
    tern_task_release(p);
    free(c);

    /* cancelled while the consumer waits in next */
    c = counter_new(1, INTPTR_MAX);
    c->publish = 1;
    c->sleep = 10000 * MS;
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 10 * MS), -ETIMEDOUT);
    TASK_WAIT_UNTIL((p = atomic_load(&c->self)) != NULL, WAIT_MS);
    ck_assert_int_eq(tern_task_cancel(p), 0);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), -ECANCELED);
    tern_gen_free(g);
    tern_task_release(p);
    free(c);
    return NULL;
}

START_TEST(cancel_from_producer_side)
{
    run_checked(2, producer_cancel_body, NULL);
}
END_TEST

/* ---- deadlines and foreign threads ------------------------------------------------ */

static void *deadline_body(void *arg)
{
    void *v = NULL;
    counter *c = counter_new(1, 2);
    /* the first value waits at a gate opened after both deadlines, however
     * late this task runs */
    ck_assert_int_eq(tern_chan_new(sizeof(int), 0, &c->gate), 0);
    c->gate_at = 1;
    tern_gen *g = gen_of(c);
    uint64_t t0 = tern_now();
    ck_assert_int_eq(tern_gen_next(g, &v, t0 + 10 * MS), -ETIMEDOUT);
    ck_assert_uint_ge(tern_now() - t0, 10 * MS);
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 10 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_chan_close(c->gate), 0);
    /* the ask stands: the value comes, and no second one behind it */
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)1);
    ck_assert_int_eq(atomic_load(&c->produced), 1);
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 5000 * MS), 1);
    ck_assert_ptr_eq(v, (void *)2);
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 5000 * MS), 0);
    tern_gen_free(g);
    tern_chan_release(c->gate);
    free(c);
    return NULL;
}

START_TEST(next_with_deadline)
{
    run_checked(2, deadline_body, NULL);
}
END_TEST

static void *make_gen(void *arg)
{
    return gen_of(arg);
}

START_TEST(foreign_thread_consumer)
{
    enum { N = 200 };
    int fds = fd_count();
    tern_runtime *rt = rt_new(2);
    counter *c = counter_new(1, N);
    void *res;
    ck_assert_int_eq(tern_block_on(rt, make_gen, c, &res), 0);
    tern_gen *g = res;
    void *v;
    for (intptr_t i = 1; i <= N; i++) {
        ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)i);
        ck_assert_int_eq(atomic_load(&c->produced), (int)i);
    }
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    tern_gen_free(g);
    free(c);

    /* deadline and early close from the thread */
    c = counter_new(1, INTPTR_MAX);
    c->sleep = 40 * MS;
    ck_assert_int_eq(tern_block_on(rt, make_gen, c, &res), 0);
    g = res;
    ck_assert_int_eq(tern_gen_next(g, &v, tern_now() + 5 * MS), -ETIMEDOUT);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_int_eq(tern_gen_close(g), 0);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    tern_gen_free(g);
    free(c);
    wait_live_zero(rt);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(fd_count(), fds);
}
END_TEST

/* ---- pipelines ------------------------------------------------------------------- */

static void *times2(void *v, void *arg)
{
    return (void *)((intptr_t)v * 2);
}

static void *plus(void *v, void *arg)
{
    return (void *)((intptr_t)v + (intptr_t)arg);
}

static int div3(void *v, void *arg)
{
    return (intptr_t)v % 3 == 0;
}

static void *pipeline_body(void *arg)
{
    enum { N = 1000, K = 100 };
    void *v;
    counter *c = counter_new(1, N);
    tern_gen *g = gen_of(c), *m, *f, *t;
    ck_assert_int_eq(tern_gen_map(g, times2, NULL, &m), 0);
    ck_assert_int_eq(tern_gen_filter(m, div3, NULL, &f), 0);
    ck_assert_int_eq(tern_gen_take(f, K, &t), 0);
    /* 2x divisible by 3 <=> x is: 6, 12, 18, ... */
    for (intptr_t k = 1; k <= K; k++) {
        ck_assert_int_eq(tern_gen_next(t, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)(6 * k));
    }
    ck_assert_int_eq(tern_gen_next(t, &v, 0), 0);
    /* take stopped early: the source was closed and cleaned up, and
     * back-pressure held all the way down */
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    ck_assert_int_le(atomic_load(&c->produced), 3 * K + 1);
    tern_gen_free(t);
    free(c);

    /* the source's error comes through every stage */
    c = counter_new(1, 5);
    c->fail = -EIO;
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_map(g, plus, (void *)100, &m), 0);
    ck_assert_int_eq(tern_gen_take(m, 10, &t), 0);
    for (intptr_t i = 1; i <= 5; i++) {
        ck_assert_int_eq(tern_gen_next(t, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)(i + 100));
    }
    ck_assert_int_eq(tern_gen_next(t, &v, 0), -EIO);
    ck_assert_int_eq(tern_gen_close(t), -EIO);
    tern_gen_free(t);
    free(c);

    /* closing the head closes the whole chain */
    c = counter_new(1, INTPTR_MAX);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_map(g, times2, NULL, &m), 0);
    ck_assert_int_eq(tern_gen_filter(m, div3, NULL, &f), 0);
    ck_assert_int_eq(tern_gen_next(f, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)6);
    ck_assert_int_eq(tern_gen_close(f), 0);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    tern_gen_free(f);
    free(c);

    /* stages freed unstarted free their sources; take 0 ends at once */
    c = counter_new(1, 5);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_map(g, times2, NULL, &m), 0);
    tern_gen_free(m);
    ck_assert_int_eq(atomic_load(&c->started), 0);
    g = gen_of(c);
    ck_assert_int_eq(tern_gen_take(g, 0, &t), 0);
    ck_assert_int_eq(tern_gen_next(t, &v, 0), 0);
    tern_gen_free(t);
    ck_assert_int_eq(atomic_load(&c->started), 0);
    free(c);
    return NULL;
}

START_TEST(pipeline_element_by_element)
{
    run_checked(1, pipeline_body, NULL);
    run_checked(4, pipeline_body, NULL);
}
END_TEST

static void *feeder(void *arg)
{
    tern_chan *ch = arg;
    for (intptr_t i = 1; i <= 500; i++) {
        void *v = (void *)i;
        ck_assert_int_eq(tern_chan_send(ch, &v), 0);
    }
    tern_chan_close(ch);
    return NULL;
}

static void *chan_body(void *arg)
{
    enum { N = 500 };
    tern_chan *in, *out;
    tern_gen *s, *m;
    tern_task *feed, *pump;
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 4, &in), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 0, &out), 0);
    ck_assert_int_eq(tern_spawn(feeder, in, &feed), 0);
    ck_assert_int_eq(tern_gen_from_chan(in, &s), 0);
    tern_chan_release(in); /* the stream holds its own reference */
    ck_assert_int_eq(tern_gen_map(s, plus, (void *)1000, &m), 0);
    ck_assert_int_eq(tern_gen_to_chan(m, out, &pump), 0);
    void *v;
    for (intptr_t i = 1; i <= N; i++) {
        ck_assert_int_eq(tern_chan_recv(out, &v), 1);
        ck_assert_ptr_eq(v, (void *)(i + 1000));
    }
    ck_assert_int_eq(tern_chan_recv(out, &v), 0);
    void *res = (void *)1;
    ck_assert_int_eq(tern_join(pump, &res), 0);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(tern_join(feed, NULL), 0);
    tern_chan_release(out);

    /* the reader goes away: the pump sees -EPIPE and closes the stream */
    counter *c = counter_new(1, INTPTR_MAX);
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 0, &out), 0);
    ck_assert_int_eq(tern_gen_to_chan(gen_of(c), out, &pump), 0);
    for (intptr_t i = 1; i <= 3; i++) {
        ck_assert_int_eq(tern_chan_recv(out, &v), 1);
        ck_assert_ptr_eq(v, (void *)i);
    }
    tern_chan_close(out);
    ck_assert_int_eq(tern_join(pump, &res), 0);
    ck_assert_ptr_eq(res, (void *)(intptr_t)-EPIPE);
    ck_assert_int_eq(atomic_load(&c->cleaned), 1);
    tern_chan_release(out);
    free(c);

    /* a stream of a channel closed at once is empty; detached pump */
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 1, &in), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(void *), 1, &out), 0);
    tern_chan_close(in);
    ck_assert_int_eq(tern_gen_from_chan(in, &s), 0);
    ck_assert_int_eq(tern_gen_to_chan(s, out, NULL), 0);
    ck_assert_int_eq(tern_chan_recv(out, &v), 0);
    tern_chan_release(in);
    tern_chan_release(out);
    return NULL;
}

START_TEST(chan_round_trip)
{
    run_checked(1, chan_body, NULL);
    run_checked(4, chan_body, NULL);
}
END_TEST

/* A pump cancelled before its body ran still closes the channel and frees
 * the generator (ASan sees the rest). With one worker the pump cannot start
 * before the cancel; with four it may, and the outcome must be the same.
 * Twice: a generator nobody pulled from, and one whose producer already
 * waits at its yield (closed without waiting: the pump's end must not). */
static void *pump_cancel_body(void *arg)
{
    int one_worker = arg != NULL;
    for (int pulled = 0; pulled < 2; pulled++) {
        counter *c = counter_new(1, 10);
        tern_gen *g = gen_of(c);
        void *v;
        if (pulled)
            ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
        tern_chan *out;
        tern_task *pump;
        ck_assert_int_eq(tern_chan_new(sizeof(void *), 1, &out), 0);
        ck_assert_int_eq(tern_gen_to_chan(g, out, &pump), 0);
        ck_assert_int_eq(tern_task_cancel(pump), 0);
        /* closed promptly (the deadline only turns a hang into a failure);
         * a pump that did start may have passed on a value first */
        int r;
        uint64_t until = tern_now() + WAIT_MS * MS;
        while ((r = tern_chan_recv_until(out, &v, until)) == 1)
            ck_assert(!one_worker);
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(tern_join(pump, NULL), -ECANCELED);
        if (one_worker && !pulled)
            ck_assert_int_eq(atomic_load(&c->started), 0);
        /* a producer that was waiting is cancelled and cleans up */
        if (pulled)
            TASK_WAIT_UNTIL(atomic_load(&c->cleaned), WAIT_MS);
        if (pulled || one_worker)
            ck_assert_int_eq(atomic_load(&c->cleaned), pulled);
        tern_chan_release(out);
        /* the cleaned mark comes before the producer's end: let g go */
        TASK_WAIT_UNTIL(tern_runtime_live_tasks(tern_runtime_current()) <= 1, WAIT_MS);
        free(c);
    }
    return NULL;
}

START_TEST(pump_cancelled_before_start)
{
    run_checked(1, pump_cancel_body, (void *)1);
    run_checked(4, pump_cancel_body, NULL);
}
END_TEST

/* ---- stress ----------------------------------------------------------------------- */

static _Atomic uint64_t stress_sum, stress_cleaned;

static int stress_gen(tern_gen *g, void *arg)
{
    intptr_t n = (intptr_t)arg;
    int r = 0;
    for (intptr_t i = 1; i <= n && r == 0; i++)
        r = tern_gen_yield(g, (void *)i);
    atomic_fetch_add(&stress_cleaned, 1);
    return r == -ECANCELED ? 0 : r;
}

static void *stress_consumer(void *arg)
{
    intptr_t id = (intptr_t)arg;
    intptr_t n = 100;
    tern_gen *g, *m;
    ck_assert_int_eq(tern_gen_new(stress_gen, (void *)n, &g), 0);
    if (id % 2)
        ck_assert_int_eq(tern_gen_map(g, plus, (void *)0, &m), 0);
    else
        m = g;
    intptr_t stop = id % 3 == 0 ? n / 2 : n; /* every third closes early */
    void *v;
    uint64_t sum = 0;
    for (intptr_t i = 1; i <= stop; i++) {
        ck_assert_int_eq(tern_gen_next(m, &v, 0), 1);
        ck_assert_ptr_eq(v, (void *)i);
        sum += (uint64_t)i;
    }
    if (stop == n)
        ck_assert_int_eq(tern_gen_next(m, &v, 0), 0);
    ck_assert_int_eq(tern_gen_close(m), 0);
    tern_gen_free(m);
    atomic_fetch_add(&stress_sum, sum);
    return NULL;
}

static void *stress_body(void *arg)
{
    unsigned n = SCALED(2000);
    tern_task **t = calloc(n, sizeof *t);
    uint64_t want = 0;
    for (unsigned i = 0; i < n; i++) {
        ck_assert_int_eq(tern_spawn(stress_consumer, (void *)(intptr_t)i, &t[i]), 0);
        want += i % 3 == 0 ? 50 * 51 / 2 : 100 * 101 / 2;
    }
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    ck_assert_uint_eq(atomic_load(&stress_sum), want);
    ck_assert_uint_eq(atomic_load(&stress_cleaned), n);
    free(t);
    return NULL;
}

START_TEST(many_generators_stress)
{
    run_checked(4, stress_body, NULL);
}
END_TEST

static Suite *gen_suite(void)
{
    Suite *s = suite_create("gen");
    TCase *tc = tcase_create("gen");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, values_in_order_with_back_pressure);
    tcase_add_test(tc, early_close_runs_cleanup);
    tcase_add_test(tc, producer_error_propagates);
    tcase_add_test(tc, cancel_from_consumer_side);
    tcase_add_test(tc, cancel_from_producer_side);
    tcase_add_test(tc, next_with_deadline);
    tcase_add_test(tc, foreign_thread_consumer);
    tcase_add_test(tc, pipeline_element_by_element);
    tcase_add_test(tc, chan_round_trip);
    tcase_add_test(tc, pump_cancelled_before_start);
    tcase_add_test(tc, many_generators_stress);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(gen_suite());
}
