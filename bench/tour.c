/*
 * A tour of the event-loop model in tern, step by step, in the spirit of a
 * walk through asyncio's internals. Every step checks what it shows and
 * prints it; the program exits 1 at the first step that does not hold.
 * ctest runs it (tests/CMakeLists.txt) and looks for the last line.
 *
 * Usage: tour    (no arguments; a few hundred milliseconds)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt/internal.h" /* step 8 builds a loop on the driver table itself */
#include "tern.h"

#define MS 1000000ull

static int step_no;

static void step(const char *title)
{
    printf("\nstep %d: %s\n", ++step_no, title);
}

static void check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("  %s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok) {
        fflush(stdout);
        exit(1);
    }
}

/* A log that callbacks and tasks append words to (guarded: they may run on
 * two workers). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[512];

static void log_word(const char *w)
{
    pthread_mutex_lock(&log_lock);
    if (*log_buf)
        strncat(log_buf, " ", sizeof log_buf - strlen(log_buf) - 1);
    strncat(log_buf, w, sizeof log_buf - strlen(log_buf) - 1);
    pthread_mutex_unlock(&log_lock);
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    log_buf[0] = 0;
    pthread_mutex_unlock(&log_lock);
}

static int log_is(const char *want)
{
    pthread_mutex_lock(&log_lock);
    int same = strcmp(log_buf, want) == 0;
    pthread_mutex_unlock(&log_lock);
    return same;
}

static void log_cb(void *arg)
{
    log_word(arg);
}

/* ---- step 1: what a loop holds ---------------------------------------------- */

static void *peek_loop(void *arg)
{
    /* a task runs on some worker's loop; schedule on it, then look */
    tern_loop *loop = tern_loop_current();
    tern_loop_info before, after;
    tern_loop_get_info(loop, &before);
    for (int i = 0; i < 3; i++)
        tern_call_soon(loop, log_cb, "soon", NULL);
    tern_call_later(loop, 50 * MS, log_cb, "later", NULL);
    tern_call_later(loop, 60 * MS, log_cb, "later", NULL);
    tern_loop_get_info(loop, &after);
    printf("  backend=%s (%s), worker %u\n", after.backend, after.backend_note,
           after.worker);
    printf("  ready handles %llu -> %llu (asyncio's _ready), timers armed %llu -> %llu "
           "(asyncio's _scheduled)\n",
           (unsigned long long)before.ready_handles,
           (unsigned long long)after.ready_handles, (unsigned long long)before.scheduled,
           (unsigned long long)after.scheduled);
    check(after.ready_handles == before.ready_handles + 3,
          "three call_soon handles wait in the FIFO");
    tern_sleep(80 * MS);
    tern_loop_get_info(loop, &after);
    check(log_is("soon soon soon later later"), "they ran: %s", log_buf);
    check(after.scheduled == 0, "no timer left armed");
    return NULL;
}

/* ---- step 2: I/O multiplexing ------------------------------------------------------ */

static int sp[2];

static void *io_waiter(void *arg)
{
    int ev = tern_poll(sp[0], POLLIN, tern_now() + 1000 * MS);
    check(ev > 0 && (ev & POLLIN), "the waiting task woke for POLLIN (events 0x%x)", ev);
    char buf[16] = {0};
    ssize_t n = tern_read(sp[0], buf, sizeof buf - 1, 0);
    check(n == 5 && strcmp(buf, "hello") == 0,
          "and read \"%s\" without blocking its worker", buf);
    return NULL;
}

static void *io_writer(void *arg)
{
    tern_sleep(10 * MS); /* the waiter is parked on the fd by now */
    check(tern_write(sp[1], "hello", 5, 0) == 5, "the other task wrote 5 bytes");
    return NULL;
}

/* ---- step 3: a future's life ------------------------------------------------------- */

static void future_cb(tern_future *f, void *arg)
{
    log_word(arg);
}

static void *future_tour(void *arg)
{
    tern_future *f;
    tern_future_new(&f);
    void *v;
    check(!tern_future_done(f) && tern_future_result(f, &v) == -EAGAIN,
          "a new future is pending");
    tern_future_add_done_callback(f, NULL, future_cb, "first");
    tern_future_add_done_callback(f, NULL, future_cb, "second");
    tern_future_set_result(f, (void *)42);
    check(tern_future_set_result(f, (void *)43) == -EALREADY,
          "it completes exactly once");
    check(tern_future_await(f, &v, 0) == 0 && v == (void *)42, "awaiting gives 42");
    tern_sleep(5 * MS);
    check(log_is("first second"), "done callbacks ran on this loop, in order: %s",
          log_buf);
    tern_future_release(f);
    return NULL;
}

/* ---- step 4: task scheduling order ------------------------------------------------- */

static void *named(void *arg)
{
    log_word(arg);
    return NULL;
}

static void *spawn_three(void *arg)
{
    tern_task *t[3];
    tern_spawn(named, "A", &t[0]);
    tern_spawn(named, "B", &t[1]);
    tern_spawn(named, "C", &t[2]);
    log_word("spawner-continues");
    for (int i = 0; i < 3; i++)
        tern_join(t[i], NULL);
    return NULL;
}

/* ---- step 5: call_soon / call_later / call_at -------------------------------------- */

static void *order_tour(void *arg)
{
    uint64_t now = tern_loop_time(NULL);
    tern_call_later(NULL, 4 * MS, log_cb, "later(4ms)", NULL);
    tern_call_at(NULL, now + 2 * MS, log_cb, "at(now+2ms)", NULL);
    tern_call_soon(NULL, log_cb, "soon1", NULL);
    tern_call_soon(NULL, log_cb, "soon2", NULL);
    tern_sleep(20 * MS);
    return NULL;
}

/* ---- step 6: a generator pipeline -------------------------------------------------- */

static int count_to_10(tern_gen *g, void *arg)
{
    for (uintptr_t i = 1; i <= 10; i++) {
        int r = tern_gen_yield(g, (void *)i);
        if (r < 0)
            return r;
    }
    return 0;
}

static void *square(void *v, void *arg)
{
    return (void *)((uintptr_t)v * (uintptr_t)v);
}

static int is_even(void *v, void *arg)
{
    return (uintptr_t)v % 2 == 0;
}

static void *pipeline_tour(void *arg)
{
    tern_gen *g, *m, *f, *t;
    tern_gen_new(count_to_10, NULL, &g);
    tern_gen_map(g, square, NULL, &m);
    tern_gen_filter(m, is_even, NULL, &f);
    tern_gen_take(f, 3, &t);
    void *v;
    char got[64] = "";
    int r;
    while ((r = tern_gen_next(t, &v, 0)) > 0)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lu", *got ? " " : "",
                 (unsigned long)(uintptr_t)v);
    check(r == 0 && strcmp(got, "4 16 36") == 0,
          "1..10 -> square -> even -> take 3 gives %s, then the end", got);
    tern_gen_free(t); /* closes the stages behind it too */
    return NULL;
}

/* ---- step 7: context variables follow requests across workers ---------------------- */

static tern_ctxvar *request_id;
static _Atomic int moved, mismatches;

static void *handle_request(void *arg)
{
    tern_ctxvar_set(request_id, arg, NULL);
    tern_loop *first = tern_loop_current();
    for (int i = 0; i < 200; i++) {
        if (tern_ctxvar_get(request_id) != arg)
            atomic_fetch_add(&mismatches, 1);
        if (tern_loop_current() != first)
            atomic_store(&moved, 1);
        if (i % 20 == 19)
            tern_sleep(1 * MS); /* a timer wake-up may land it on another worker */
        else
            tern_yield();
    }
    return NULL;
}

static void *requests_tour(void *arg)
{
    tern_task *t[8];
    for (uintptr_t i = 0; i < 8; i++)
        tern_spawn(handle_request, (void *)(i + 100), &t[i]);
    for (int i = 0; i < 8; i++)
        tern_join(t[i], NULL);
    check(atomic_load(&mismatches) == 0,
          "8 concurrent requests each saw only their own id");
    printf("  (some request %s worker meanwhile)\n",
           atomic_load(&moved) ? "changed" : "did not change");
    check(tern_ctxvar_get(request_id) == NULL, "and the spawner's context never had one");
    return NULL;
}

/* ---- step 8: a mini event loop on the driver table ------------------------------------
 *
 * What every loop is: a FIFO of ready callbacks, a list of timed ones, and
 * a selector to sleep in until the next timer or a wake-up. Here in a few
 * dozen lines, with tern's own driver as the selector. */

typedef struct mini_cb {
    struct mini_cb *next;
    uint64_t when; /* 0: ready now */
    void (*fn)(void *);
    void *arg;
} mini_cb;

typedef struct mini_loop {
    tern__driver *selector;
    mini_cb *ready, *timers; /* timers sorted by when */
    pthread_mutex_t lock;    /* call_soon_threadsafe comes from other threads */
    int stop;
} mini_loop;

static void mini_call(mini_loop *l, uint64_t when, void (*fn)(void *), void *arg)
{
    mini_cb *c = calloc(1, sizeof *c), **p;
    c->when = when;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&l->lock);
    p = when ? &l->timers : &l->ready;
    while (*p && (!when || (*p)->when <= when))
        p = &(*p)->next;
    c->next = *p;
    *p = c;
    pthread_mutex_unlock(&l->lock);
    l->selector->ops->wake(l->selector); /* it may be asleep in the selector */
}

static void mini_run(mini_loop *l)
{
    while (!l->stop) {
        pthread_mutex_lock(&l->lock);
        uint64_t now = tern_now();
        while (l->timers && l->timers->when <= now) { /* due timers become ready */
            mini_cb *c = l->timers, **p = &l->ready;
            l->timers = c->next;
            while (*p)
                p = &(*p)->next;
            c->next = NULL;
            *p = c;
        }
        mini_cb *batch = l->ready; /* run what was ready when the turn began */
        l->ready = NULL;
        int64_t timeout = batch ? 0 : l->timers ? (int64_t)(l->timers->when - now) : -1;
        pthread_mutex_unlock(&l->lock);
        while (batch) {
            mini_cb *c = batch;
            batch = c->next;
            c->fn(c->arg);
            free(c);
        }
        if (!l->stop)
            l->selector->ops->wait(l->selector, timeout); /* the "select" */
    }
}

static mini_loop mini;

static void mini_stop(void *arg)
{
    log_word(arg);
    mini.stop = 1;
}

static void *mini_other_thread(void *arg)
{
    usleep(2000);
    mini_call(&mini, 0, log_cb, "threadsafe");
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = 2;
    tern_runtime *rt;
    if (tern_runtime_new(&cfg, &rt) < 0)
        return 1;

    step("a loop is a FIFO of ready handles, a timer wheel and an I/O selector");
    log_reset();
    tern_block_on(rt, peek_loop, NULL, NULL);

    step("I/O multiplexing: a task waits on a socket pair while its worker runs others");
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp);
    tern_task *w, *r;
    tern_runtime_spawn(rt, io_waiter, NULL, &w);
    tern_runtime_spawn(rt, io_writer, NULL, &r);
    tern_join(w, NULL);
    tern_join(r, NULL);
    close(sp[0]);
    close(sp[1]);

    step("a Future: pending, then one outcome, then its callbacks");
    log_reset();
    tern_block_on(rt, future_tour, NULL, NULL);

    step("task scheduling: spawned tasks queue FIFO and run when the spawner lets go");
    tern_runtime *one;
    cfg.workers = 1;
    tern_runtime_new(&cfg, &one);
    log_reset();
    tern_block_on(one, spawn_three, NULL, NULL);
    check(log_is("spawner-continues A B C"), "one worker ran: %s", log_buf);
    tern_runtime_free(one);

    step("call_soon runs next turn, in order; call_at / call_later by deadline");
    log_reset();
    tern_block_on(rt, order_tour, NULL, NULL);
    check(log_is("soon1 soon2 at(now+2ms) later(4ms)"), "order: %s", log_buf);

    step("an async generator pipeline pulls one value at a time");
    tern_block_on(rt, pipeline_tour, NULL, NULL);

    step("context variables: each concurrent request keeps its own id across workers");
    tern_ctxvar_new("request_id", NULL, NULL, &request_id);
    tern_block_on(rt, requests_tour, NULL, NULL);
    tern_ctxvar_free(request_id);

    step("a mini event loop in a few dozen lines on tern's driver table");
    pthread_mutex_init(&mini.lock, NULL);
    int opened = tern__driver_open(TERN_BACKEND_AUTO, &mini.selector, NULL);
    check(opened == 0, "selector: %s", opened == 0 ? mini.selector->ops->name : "none");
    log_reset();
    uint64_t now = tern_now();
    mini_call(&mini, now + 100 * MS, mini_stop, "stop(100ms)");
    mini_call(&mini, now + 50 * MS, log_cb, "timer(50ms)");
    mini_call(&mini, 0, log_cb, "soon");
    pthread_t th;
    pthread_create(&th, NULL, mini_other_thread, NULL);
    mini_run(&mini);
    pthread_join(th, NULL);
    check(log_is("soon threadsafe timer(50ms) stop(100ms)"), "it ran: %s", log_buf);
    mini.selector->ops->close(mini.selector);

    tern_runtime_free(rt);
    printf("\ntour: all %d steps passed\n", step_no);
    return 0;
}
