/*
 * Direct hand-offs (rt/task.c, switch_out): a task that switches out runs
 * the next local task straight away. What must still hold: a pair of tasks
 * handing off to each other for ever leaves the worker's other work (a
 * ready task, a timer, an I/O completion) waiting a bounded number of
 * hand-offs, and under stealing and cancellation every message is
 * delivered exactly once and no task resumes twice.
 */
#include "io_helpers.h"

/* ---- a pair that never stops, and what it must not starve -------------------- */

/*
 * The bounds, in hand-offs of the pair rather than in time (a loaded
 * machine stretches time, not the count of tasks run in between):
 *  - a streak of TERN__LIFO_STREAK runs of the LIFO slot gives the queue
 *    one task, so a ready task waits a streak for each task queued ahead
 *    of it and one for itself (here at most the 3 other tasks of the test);
 *  - a due timer fires at the next turn of the loop, within
 *    TERN__EVENT_INTERVAL tasks, and its task then waits as a ready task;
 *  - an I/O completion is collected at a turn too; io_uring may need a
 *    second turn, the first one running the kernel's completion work.
 */
#define READY_BOUND (4 * (TERN__LIFO_STREAK + 1) + 16)
#define TIMER_BOUND (2 * TERN__EVENT_INTERVAL + READY_BOUND)
#define IO_BOUND (3 * TERN__EVENT_INTERVAL + READY_BOUND)
#define ROUNDS 20
#define HOP_CAP 50000000 /* the pair stops by itself after this many */

struct starve {
    tern_chan *ab, *ba;
    _Atomic uint64_t hops;
    _Atomic int stop, capped;
    /* the timer: set by the sleeper, marked by the pair once it is due */
    _Atomic uint64_t due_at, due_mark;
    /* the I/O: the pair writes one byte when the reader waits */
    int sp[2];
    tern_task *reader;
    _Atomic int want_byte;
    _Atomic uint64_t write_mark;
    uint64_t worst_ready, worst_timer, worst_io;
};

static void pair_hop(struct starve *s, int writer)
{
    uint64_t h = atomic_fetch_add_explicit(&s->hops, 1, memory_order_relaxed) + 1;
    uint64_t due = atomic_load_explicit(&s->due_at, memory_order_relaxed);
    if (due && !atomic_load_explicit(&s->due_mark, memory_order_relaxed) &&
        tern_now() >= due)
        atomic_store_explicit(&s->due_mark, h, memory_order_relaxed);
    if (writer && atomic_load(&s->want_byte) &&
        tern__task_parked(s->reader) == TERN__W_IO) {
        atomic_store(&s->want_byte, 0);
        atomic_store(&s->write_mark, h);
        ck_assert_int_eq(write(s->sp[1], "x", 1), 1);
    }
    if (h >= HOP_CAP) {
        atomic_store(&s->capped, 1);
        atomic_store(&s->stop, 1);
    }
}

/* The two sides: a hop is one message each way. Stopping closes a's
 * channel, which ends b, which closes b's. */
static void *side_a(void *arg)
{
    struct starve *s = arg;
    uint64_t v = 0;
    for (;;) {
        if (atomic_load(&s->stop)) {
            tern_chan_close(s->ab);
            return NULL;
        }
        if (tern_chan_send(s->ab, &v) < 0)
            return NULL;
        int r = tern_chan_recv(s->ba, &v);
        if (r != 1)
            return NULL;
        pair_hop(s, 1);
    }
}

static void *side_b(void *arg)
{
    struct starve *s = arg;
    uint64_t v;
    for (;;) {
        int r = tern_chan_recv(s->ab, &v);
        if (r != 1) {
            tern_chan_close(s->ba);
            return NULL;
        }
        pair_hop(s, 0);
        v++;
        if (tern_chan_send(s->ba, &v) < 0)
            return NULL;
    }
}

static void *yielder(void *arg)
{
    struct starve *s = arg;
    for (int i = 0; i < ROUNDS * 10; i++) {
        uint64_t h0 = atomic_load(&s->hops);
        ck_assert_int_eq(tern_yield(), 0);
        uint64_t d = atomic_load(&s->hops) - h0;
        if (d > s->worst_ready)
            s->worst_ready = d;
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    struct starve *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t deadline = tern_now() + MS;
        atomic_store(&s->due_mark, 0);
        atomic_store(&s->due_at, deadline);
        ck_assert_int_eq(tern_sleep_until(deadline), 0);
        uint64_t h = atomic_load(&s->hops), mark = atomic_load(&s->due_mark);
        atomic_store(&s->due_at, 0);
        if (mark && h - mark > s->worst_timer)
            s->worst_timer = h - mark;
    }
    return NULL;
}

static void *byte_reader(void *arg)
{
    struct starve *s = arg;
    for (int i = 0; i < ROUNDS; i++) {
        char c;
        atomic_store(&s->want_byte, 1);
        ck_assert_int_eq(tern_read(s->sp[0], &c, 1, LONG_DL()), 1);
        uint64_t d = atomic_load(&s->hops) - atomic_load(&s->write_mark);
        if (d > s->worst_io)
            s->worst_io = d;
    }
    return NULL;
}

static void *starve_main(void *arg)
{
    struct starve *s = arg;
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 0, &s->ab), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 0, &s->ba), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->sp), 0);
    tern_loop_info before;
    ck_assert_int_eq(tern_loop_get_info(NULL, &before), 0);
    tern_task *a, *b, *y, *sl;
    ck_assert_int_eq(tern_spawn(byte_reader, s, &s->reader), 0);
    ck_assert_int_eq(tern_spawn(side_a, s, &a), 0);
    ck_assert_int_eq(tern_spawn(side_b, s, &b), 0);
    ck_assert_int_eq(tern_spawn(yielder, s, &y), 0);
    ck_assert_int_eq(tern_spawn(sleeper, s, &sl), 0);
    ck_assert_int_eq(tern_join(y, NULL), 0);
    ck_assert_int_eq(tern_join(sl, NULL), 0);
    ck_assert_int_eq(tern_join(s->reader, NULL), 0);
    atomic_store(&s->stop, 1);
    ck_assert_int_eq(tern_join(a, NULL), 0);
    ck_assert_int_eq(tern_join(b, NULL), 0);
    tern_loop_info after;
    ck_assert_int_eq(tern_loop_get_info(NULL, &after), 0);
    /* the pair handed off directly: this tested the direct path */
    ck_assert_uint_gt(after.stats.direct_switches - before.stats.direct_switches,
                      atomic_load(&s->hops) / 2);
    tern_chan_release(s->ab);
    tern_chan_release(s->ba);
    ck_assert_int_eq(tern_close(s->sp[0]), 0);
    ck_assert_int_eq(tern_close(s->sp[1]), 0);
    return NULL;
}

START_TEST(pair_does_not_starve)
{
    struct starve s = {0};
    tern_runtime *rt = rt_make(1);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, starve_main, &s, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_msg(!atomic_load(&s.capped),
                  "the pair ran %d hops before the others finished", HOP_CAP);
    ck_assert_msg(s.worst_ready <= READY_BOUND,
                  "a ready task waited %llu hops (bound %d)",
                  (unsigned long long)s.worst_ready, READY_BOUND);
    ck_assert_msg(s.worst_timer <= TIMER_BOUND, "a due timer waited %llu hops (bound %d)",
                  (unsigned long long)s.worst_timer, TIMER_BOUND);
    ck_assert_msg(s.worst_io <= IO_BOUND, "a completion waited %llu hops (bound %d)",
                  (unsigned long long)s.worst_io, IO_BOUND);
}
END_TEST

/* ---- hand-offs racing stealing and cancellation, counted -------------------- */

/*
 * Producers send numbered items through one rendezvous channel, so every
 * item is a hand-off from a producer to a consumer; four workers steal
 * from each other while a foreign thread cancels producers and consumers
 * at random. A cancelled task ends, and the main task starts another in
 * its slot (a producer goes on from its slot's next item). Every item is
 * then received exactly once, and no wait of any task returns twice.
 */
#define PRODUCERS 8
#define CONSUMERS 8
#define ITEMS SCALED(1000000)
#define PER_PRODUCER (ITEMS / PRODUCERS)

struct counted;

struct slot {
    struct counted *c;
    /* The slot's task, and the lock under which the canceller uses the
     * handle: without it the main task could join (and a spawn reuse) the
     * header between the canceller's load and its cancel. */
    pthread_mutex_t lock;
    _Atomic(tern_task *) task;
    _Atomic int waiting;   /* 1 inside a channel call: never entered twice */
    _Atomic uint64_t next; /* producers: the next item to send, up to end */
    uint64_t end;
};

struct counted {
    tern_chan *ch;
    struct slot prod[PRODUCERS], cons[CONSUMERS];
    _Atomic unsigned char *seen; /* per item: times received */
    _Atomic uint64_t received, cancels_seen;
    _Atomic int stop_canceller;
};

static void enter_wait(struct slot *sl)
{
    ck_assert_int_eq(atomic_exchange(&sl->waiting, 1), 0);
}

static void leave_wait(struct slot *sl)
{
    ck_assert_int_eq(atomic_exchange(&sl->waiting, 0), 1);
}

static void *producer(void *arg)
{
    struct slot *sl = arg;
    while (sl->next < sl->end) {
        uint64_t item = sl->next;
        enter_wait(sl);
        int r = tern_chan_send(sl->c->ch, &item);
        leave_wait(sl);
        if (r == -ECANCELED) {
            atomic_fetch_add(&sl->c->cancels_seen, 1);
            return NULL; /* not sent: the slot's next task sends it */
        }
        ck_assert_int_eq(r, 0);
        sl->next++;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct slot *sl = arg;
    for (;;) {
        uint64_t item;
        enter_wait(sl);
        int r = tern_chan_recv(sl->c->ch, &item);
        leave_wait(sl);
        if (r == -ECANCELED) {
            atomic_fetch_add(&sl->c->cancels_seen, 1);
            return NULL; /* nothing taken */
        }
        if (r == 0)
            return NULL; /* closed: every item is in */
        ck_assert_int_eq(r, 1);
        ck_assert_uint_lt(item, ITEMS);
        ck_assert_int_eq(atomic_fetch_add(&sl->c->seen[item], 1), 0);
        atomic_fetch_add(&sl->c->received, 1);
    }
}

static void *canceller(void *arg)
{
    struct counted *c = arg;
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    while (!atomic_load(&c->stop_canceller)) {
        unsigned i = (unsigned)(rnd_next(&rng) % (PRODUCERS + CONSUMERS));
        struct slot *sl = i < PRODUCERS ? &c->prod[i] : &c->cons[i - PRODUCERS];
        pthread_mutex_lock(&sl->lock);
        tern_task *t = atomic_load(&sl->task);
        if (t) {
            int r = tern_task_cancel(t);
            ck_assert_msg(r == 0 || r == -EALREADY, "cancel: %s", tern_strerror(r));
        }
        pthread_mutex_unlock(&sl->lock);
        spin_units(50 + (unsigned)(rnd_next(&rng) % 200));
    }
    return NULL;
}

static void restart(struct slot *sl, tern_task_fn fn)
{
    tern_task *t;
    ck_assert_int_eq(tern_spawn(fn, sl, &t), 0);
    atomic_store(&sl->task, t);
}

/* Joins a finished task of sl and starts the next one while work is left;
 * returns 1 when the slot is still busy. */
static int tend(struct slot *sl, tern_task_fn fn, int more)
{
    tern_task *t = atomic_load(&sl->task);
    if (!t)
        return 0;
    if (!tern_task_done(t))
        return 1;
    pthread_mutex_lock(&sl->lock);
    atomic_store(&sl->task, NULL);
    pthread_mutex_unlock(&sl->lock);
    int r = tern_join(t, NULL);
    ck_assert_msg(r == 0 || r == -ECANCELED, "join: %s", tern_strerror(r));
    if (more)
        restart(sl, fn);
    return more;
}

static void *counted_main(void *arg)
{
    struct counted *c = arg;
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 0, &c->ch), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        c->prod[i] = (struct slot){.c = c,
                                   .next = (uint64_t)i * PER_PRODUCER,
                                   .end = (uint64_t)(i + 1) * PER_PRODUCER,
                                   .lock = PTHREAD_MUTEX_INITIALIZER};
        restart(&c->prod[i], producer);
    }
    for (int i = 0; i < CONSUMERS; i++) {
        c->cons[i] = (struct slot){.c = c, .lock = PTHREAD_MUTEX_INITIALIZER};
        restart(&c->cons[i], consumer);
    }
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, canceller, c), 0);
    uint64_t end = tern_now() + 120 * SEC;
    int busy = 1;
    while (busy && tern_now() < end) {
        busy = 0;
        for (int i = 0; i < PRODUCERS; i++)
            busy |= tend(&c->prod[i], producer, c->prod[i].next < c->prod[i].end);
        for (int i = 0; i < CONSUMERS; i++)
            tend(&c->cons[i], consumer, 1);
        tern_sleep(200000);
    }
    atomic_store(&c->stop_canceller, 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(!busy, "producers still busy after 120 s");
    /* every item sent: close, and the consumers drain and end */
    ck_assert_int_eq(tern_chan_close(c->ch), 0);
    for (int i = 0; i < CONSUMERS; i++)
        tend(&c->cons[i], consumer, 0);
    for (int i = 0; i < CONSUMERS; i++) {
        tern_task *t = atomic_load(&c->cons[i].task);
        if (t) {
            int r = tern_join(t, NULL);
            ck_assert_msg(r == 0 || r == -ECANCELED, "join: %s", tern_strerror(r));
        }
    }
    tern_chan_release(c->ch);
    return NULL;
}

START_TEST(handoffs_counted)
{
    struct counted *c = calloc(1, sizeof *c);
    ck_assert_ptr_nonnull(c);
    c->seen = calloc(ITEMS, 1);
    ck_assert_ptr_nonnull(c->seen);
    tern_runtime *rt = rt_make(4);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, counted_main, c, NULL), 0);
    tern_metrics m;
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_uint_eq(atomic_load(&c->received), ITEMS);
    for (uint64_t i = 0; i < ITEMS; i++)
        ck_assert_msg(atomic_load(&c->seen[i]) == 1, "item %llu received %d times",
                      (unsigned long long)i, (int)atomic_load(&c->seen[i]));
    /* what the test is about happened: cancels landed, workers stole,
     * tasks handed off directly */
    ck_assert_uint_gt(atomic_load(&c->cancels_seen), 0);
    ck_assert_uint_gt(m.total.steals, 0);
    ck_assert_uint_gt(m.total.direct_switches, 0);
    free((void *)c->seen);
    free(c);
}
END_TEST

static Suite *handoff_suite(void)
{
    Suite *s = suite_create("handoff");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pair_does_not_starve);
    tcase_add_test(tc, handoffs_counted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(handoff_suite());
}
