/* Task names and locations, the task dump, the stall watchdog, metrics. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define MS 1000000ull

static tern_runtime *rt_with(tern_config *cfg, unsigned workers)
{
    cfg->workers = workers;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(cfg, &rt);
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    return rt;
}

static void spin(uint64_t ns)
{
    uint64_t end = tern_now() + ns;
    while (tern_now() < end)
        ;
}

/* A dump as one string (free it). */
static char *dump_str(tern_runtime *rt, int flags, int *count)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    int n = rt ? tern_runtime_dump(rt, f, flags) : tern_dump(f, flags);
    fclose(f);
    ck_assert_msg(n >= 0, "dump: %s", tern_strerror(n));
    if (count)
        *count = n;
    return buf;
}

/* The dump line that mentions needle, copied into line. */
static int find_line(const char *dump, const char *needle, char *line, size_t len)
{
    const char *p = strstr(dump, needle);
    if (!p)
        return 0;
    const char *b = p;
    while (b > dump && b[-1] != '\n')
        b--;
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - b) : strlen(b);
    if (n >= len)
        n = len - 1;
    memcpy(line, b, n);
    line[n] = 0;
    return 1;
}

static void *noop(void *arg)
{
    return arg;
}

static void *ev_wait(void *ev)
{
    return (void *)(intptr_t)tern_event_wait(ev, 0);
}

/* ---- names and locations ---------------------------------------------------- */

static void *names_body(void *arg)
{
    tern_task *t;
    int line = __LINE__ + 1;
    ck_assert_int_eq(tern_spawn(noop, NULL, &t), 0);
    const char *file = NULL;
    int l = 0;
    ck_assert_int_eq(tern_task_location(t, &file, &l), 0);
    ck_assert_str_eq(file, __FILE__);
    ck_assert_int_eq(l, line);

    char buf[8];
    ck_assert_int_eq(tern_task_get_name(t, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(tern_task_set_name(t, "worker-12"), 0);
    ck_assert_int_eq(tern_task_get_name(t, buf, sizeof buf), 9); /* full length */
    ck_assert_str_eq(buf, "worker-");                            /* truncated */
    ck_assert_int_eq(tern_task_get_name(t, NULL, 0), 9);
    ck_assert_int_eq(tern_task_get_name(t, NULL, 4), -EINVAL);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    ck_assert_int_eq(tern_task_set_name(t, big), -ENAMETOOLONG);
    ck_assert_int_eq(tern_task_get_name(t, buf, sizeof buf), 9); /* unchanged */
    ck_assert_int_eq(tern_task_set_name(t, NULL), 0);
    ck_assert_int_eq(tern_task_get_name(t, buf, sizeof buf), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);

    /* NULL means the calling task */
    ck_assert_int_eq(tern_task_set_name(NULL, "me"), 0);
    ck_assert_int_eq(tern_task_get_name(NULL, buf, sizeof buf), 2);
    ck_assert_str_eq(buf, "me");

    /* the plain function records no location */
    ck_assert_int_eq((tern_spawn)(noop, NULL, &t), 0);
    ck_assert_int_eq(tern_task_location(t, &file, &l), -ENOENT);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(tern_task_location(NULL, &file, &l), -EINVAL);
    return arg;
}

START_TEST(test_names_locations)
{
    tern_runtime *rt = rt_new(2);
    ck_assert_int_eq(tern_block_on(rt, names_body, NULL, NULL), 0);
    tern_task *t;
    int line = __LINE__ + 1;
    ck_assert_int_eq(tern_runtime_spawn(rt, noop, NULL, &t), 0);
    int l = 0;
    ck_assert_int_eq(tern_task_location(t, NULL, &l), 0);
    ck_assert_int_eq(l, line);
    ck_assert_int_eq(tern_task_set_name(t, "from outside"), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    /* outside a task there is no "current task" to name */
    ck_assert_int_eq(tern_task_set_name(NULL, "x"), -EINVAL);
    char buf[4];
    ck_assert_int_eq(tern_task_get_name(NULL, buf, sizeof buf), -EINVAL);
    tern_runtime_free(rt);
}
END_TEST

/* ---- the dump: every waiting state --------------------------------------------- */

typedef struct scene {
    int sv[2];
    tern_chan *ch;
    tern_mutex m;
    tern_future *f;
    tern_event ev;
    tern_ctxvar *req;
    tern_task *target;
    _Atomic int release_job;
    int lines[8];
} scene;

static void *w_sleep(void *arg)
{
    scene *s = arg;
    tern_ctxvar_set(s->req, (void *)0x2a, NULL);
    tern_sleep(30 * 1000 * MS);
    return NULL;
}

static void *w_recv(void *arg)
{
    scene *s = arg;
    char c;
    return (void *)tern_recv(s->sv[0], &c, 1, 0, 0);
}

static void *w_chan(void *arg)
{
    scene *s = arg;
    int v;
    return (void *)(intptr_t)tern_chan_recv(s->ch, &v);
}

static void *w_mutex(void *arg)
{
    scene *s = arg;
    int r = tern_mutex_lock(&s->m);
    if (r == 0)
        tern_mutex_unlock(&s->m);
    return (void *)(intptr_t)r;
}

static void *w_future(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)tern_future_await(s->f, NULL, 0);
}

static void *w_target(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)tern_event_wait(&s->ev, 0);
}

static void *w_join(void *arg)
{
    scene *s = arg;
    return (void *)(intptr_t)tern_join(s->target, NULL);
}

static void *w_job(void *arg)
{
    scene *s = arg;
    while (!atomic_load(&s->release_job))
        usleep(1000);
    return NULL;
}

static const char *const names[] = {"sleeper", "reader", "chan",  "locker",
                                    "awaiter", "target", "joiner"};
static tern_task_fn const bodies[] = {w_sleep,  w_recv,   w_chan, w_mutex,
                                      w_future, w_target, w_join};

static void *scene_body(void *arg)
{
    scene *s = arg;
    tern_runtime *rt = tern_runtime_current();
    tern_task *t[7];
    ck_assert_int_eq(tern_mutex_lock(&s->m), 0);
    for (int i = 0; i < 7; i++) {
        s->lines[i] = __LINE__ + 1;
        ck_assert_int_eq(tern_spawn(bodies[i], s, &t[i]), 0);
        ck_assert_int_eq(tern_task_set_name(t[i], names[i]), 0);
        if (i == 5)
            s->target = tern_task_ref(t[5]);
    }
    tern_task *job;
    ck_assert_int_eq(tern_spawn_blocking(w_job, s, &job), 0);
    ck_assert_int_eq(tern_task_set_name(job, "job"), 0);
    tern_task_set_name(NULL, "scene");

    /* wait until all seven wait somewhere (bounded: the asserts below say
     * which one did not) */
    char *d = NULL;
    for (uint64_t end = tern_now() + (uint64_t)WAIT_MS * MS; tern_now() < end;) {
        tern_sleep(20 * MS);
        free(d);
        d = dump_str(rt, TERN_DUMP_JSON | TERN_DUMP_CONTEXT, NULL);
        int waiting = 0;
        char line[1024], key[64];
        for (int i = 0; i < 7; i++) {
            snprintf(key, sizeof key, "\"name\":\"%s\"", names[i]);
            waiting += find_line(d, key, line, sizeof line) &&
                       strstr(line, "\"state\":\"waiting\"") != NULL;
        }
        if (waiting == 7 && strstr(d, "blocking-running"))
            break;
    }
    tern_sleep(20 * MS); /* so that every wait has lasted a while */
    free(d);
    d = dump_str(rt, TERN_DUMP_JSON | TERN_DUMP_CONTEXT, NULL);

    char line[1024], want[160], key[64];
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof key, "\"name\":\"%s\"", names[i]);
        ck_assert_msg(find_line(d, key, line, sizeof line), "%s missing from\n%s",
                      names[i], d);
        ck_assert_msg(strstr(line, "\"state\":\"waiting\""), "%s", line);
        snprintf(want, sizeof want, "\"file\":\"%s\",\"line\":%d", __FILE__, s->lines[i]);
        ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
        snprintf(want, sizeof want, "\"id\":%llu",
                 (unsigned long long)tern_task_id(t[i]));
        ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
        const char *w = strstr(line, "\"waited_ns\":");
        ck_assert_ptr_nonnull(w);
        ck_assert_msg(strtoull(w + 12, NULL, 10) >= 10 * MS, "%s", line);
        switch (i) {
        case 0:
            ck_assert_msg(strstr(line, "\"wait\":\"sleep\",\"until_ns\":"), "%s", line);
            ck_assert_msg(strstr(line, "\"context\":{\"request\":\"0x2a\"}"), "%s", line);
            break;
        case 1:
            snprintf(want, sizeof want, "\"wait\":\"recv\",\"fd\":%d", s->sv[0]);
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        case 2:
            snprintf(want, sizeof want, "\"wait\":\"channel receive\",\"object\":\"%p\"",
                     (void *)s->ch);
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        case 3:
            snprintf(want, sizeof want, "\"wait\":\"mutex\",\"object\":\"%p\"",
                     (void *)&s->m);
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        case 4:
            snprintf(want, sizeof want, "\"wait\":\"future\",\"object\":\"%p\"",
                     (void *)s->f);
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        case 5:
            snprintf(want, sizeof want, "\"wait\":\"event\",\"object\":\"%p\"",
                     (void *)&s->ev);
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        case 6:
            snprintf(want, sizeof want, "\"wait\":\"join\",\"task\":%llu",
                     (unsigned long long)tern_task_id(s->target));
            ck_assert_msg(strstr(line, want), "%s lacks %s", line, want);
            break;
        }
    }
    ck_assert_msg(find_line(d, "\"name\":\"scene\"", line, sizeof line), "%s", d);
    ck_assert_msg(strstr(line, "\"state\":\"running\",\"worker\":"), "%s", line);
    ck_assert_msg(find_line(d, "\"name\":\"job\"", line, sizeof line), "%s", d);
    ck_assert_msg(strstr(line, "\"state\":\"blocking-running\""), "%s", line);
    free(d);

    /* the text form says the same in words */
    d = dump_str(rt, TERN_DUMP_CONTEXT, NULL);
    ck_assert_msg(strstr(d, "tern runtime "), "%s", d);
    ck_assert_msg(find_line(d, "\"reader\"", line, sizeof line), "%s", d);
    snprintf(want, sizeof want, "recv on fd %d] spawned at %s:%d", s->sv[0], __FILE__,
             s->lines[1]);
    ck_assert_msg(strstr(line, "[waiting ") && strstr(line, want), "%s lacks %s", line,
                  want);
    ck_assert_msg(find_line(d, "\"sleeper\"", line, sizeof line) &&
                      strstr(line, "sleep, "),
                  "%s", d);
    ck_assert_msg(strstr(d, "    context: request=0x2a"), "%s", d);
    ck_assert_msg(find_line(d, "\"scene\"", line, sizeof line) &&
                      strstr(line, "[running on worker "),
                  "%s", d);
    free(d);

    /* let everyone go */
    tern_task_cancel(t[0]);
    ck_assert_int_eq(write(s->sv[1], "x", 1), 1);
    int v = 7;
    ck_assert_int_eq(tern_chan_send(s->ch, &v), 0);
    tern_mutex_unlock(&s->m);
    tern_future_set_result(s->f, NULL);
    tern_event_set(&s->ev);
    atomic_store(&s->release_job, 1);
    void *res;
    ck_assert_int_eq(tern_join(t[0], &res), -ECANCELED);
    ck_assert_int_eq(tern_join(t[1], &res), 0);
    ck_assert_int_eq((intptr_t)res, 1);
    ck_assert_int_eq(tern_join(t[2], &res), 0);
    ck_assert_int_eq((intptr_t)res, 1); /* one value received */
    for (int i = 3; i < 7; i++) {
        if (i == 5) { /* the joiner joins the target */
            tern_task_release(t[5]);
            continue;
        }
        ck_assert_int_eq(tern_join(t[i], &res), 0);
        ck_assert_int_eq((intptr_t)res, 0);
    }
    ck_assert_int_eq(tern_join(job, NULL), 0);
    return NULL;
}

START_TEST(test_dump_states)
{
    int fds = fd_count();
    tern_runtime *rt = rt_new(2);
    scene s = {0};
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s.sv), 0);
    ck_assert_int_eq(tern_chan_new(sizeof(int), 1, &s.ch), 0);
    tern_mutex_init(&s.m);
    ck_assert_int_eq(tern_future_new(&s.f), 0);
    tern_event_init(&s.ev);
    ck_assert_int_eq(tern_ctxvar_new("request", NULL, NULL, &s.req), 0);
    ck_assert_int_eq(tern_block_on(rt, scene_body, &s, NULL), 0);
    tern_runtime_free(rt);
    tern_chan_release(s.ch);
    tern_future_release(s.f);
    tern_ctxvar_free(s.req);
    close(s.sv[0]);
    close(s.sv[1]);
    ck_assert_int_eq(fd_count(), fds);
}
END_TEST

/* A task spawned by a running task on a single worker is ready until the
 * spawner lets go. */
static void *yield_until(void *arg)
{
    while (!atomic_load((_Atomic int *)arg))
        ck_assert_int_eq(tern_yield(), 0);
    return NULL;
}

static void *ready_body(void *arg)
{
    tern_task *t;
    ck_assert_int_eq(tern_spawn(noop, NULL, &t), 0);
    ck_assert_int_eq(tern_task_set_name(t, "queued"), 0);
    char *d = dump_str(tern_runtime_current(), 0, NULL);
    char line[512];
    ck_assert_msg(find_line(d, "\"queued\"", line, sizeof line) &&
                      strstr(line, "[ready]"),
                  "%s", d);
    free(d);
    ck_assert_int_eq(tern_join(t, NULL), 0);

    /* A task that yielded waits in the run queue with its state still
     * RUNNING: ready too, not running on no worker. */
    _Atomic int stop = 0;
    ck_assert_int_eq(tern_spawn(yield_until, &stop, &t), 0);
    ck_assert_int_eq(tern_task_set_name(t, "yielder"), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tern_yield(), 0); /* one worker: it has run and yielded */
    d = dump_str(tern_runtime_current(), 0, NULL);
    ck_assert_msg(find_line(d, "\"yielder\"", line, sizeof line) &&
                      strstr(line, "[ready]"),
                  "%s", d);
    free(d);
    atomic_store(&stop, 1);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    return arg;
}

START_TEST(test_dump_ready)
{
    tern_runtime *rt = rt_new(1);
    ck_assert_int_eq(tern_block_on(rt, ready_body, NULL, NULL), 0);
    tern_runtime_free(rt);
}
END_TEST

START_TEST(test_dump_all_runtimes)
{
    tern_runtime *a = rt_new(1), *b = rt_new(1);
    tern_event ev;
    tern_event_init(&ev);
    tern_task *ta, *tb;
    ck_assert_int_eq(tern_runtime_spawn(a, ev_wait, &ev, &ta), 0);
    ck_assert_int_eq(tern_runtime_spawn(b, ev_wait, &ev, &tb), 0);
    tern_task_set_name(ta, "in-a");
    tern_task_set_name(tb, "in-b");
    int n;
    char *d = dump_str(NULL, 0, &n);
    ck_assert_int_ge(n, 2);
    ck_assert_msg(strstr(d, "\"in-a\"") && strstr(d, "\"in-b\""), "%s", d);
    free(d);
    tern_event_set(&ev);
    ck_assert_int_eq(tern_join(ta, NULL), 0);
    ck_assert_int_eq(tern_join(tb, NULL), 0);
    ck_assert_int_eq(tern_dump(NULL, 0), -EINVAL);
    FILE *f = fopen("/dev/null", "w");
    ck_assert_int_eq(tern_runtime_dump(a, f, 0x100), -EINVAL);
    ck_assert_int_eq(tern_runtime_dump(NULL, f, 0), -EINVAL);
    ck_assert_int_eq(tern_runtime_dump(a, NULL, 0), -EINVAL);
    fclose(f);
    tern_runtime_free(a);
    tern_runtime_free(b);
}
END_TEST

/* ---- the dump while 8 threads spawn and finish tasks ------------------------- */

static _Atomic long ran;
static tern_ctxvar *churn_var;

static void *churn_task(void *arg)
{
    tern_ctxvar_set(churn_var, arg, NULL); /* swaps the context the dump reads */
    tern_yield();
    atomic_fetch_add(&ran, 1);
    return arg;
}

typedef struct churner {
    tern_runtime *rt;
    long spawned;
} churner;

static void *churn_thread(void *arg)
{
    churner *c = arg;
    tern_task *t[16];
    for (int round = 0; round < SCALED(2000); round++) {
        int n = 0;
        for (; n < 16; n++) {
            if (tern_runtime_spawn(c->rt, churn_task, (void *)(intptr_t)n, &t[n]) < 0)
                break;
            if (n & 1)
                tern_task_set_name(t[n], "churn");
        }
        for (int i = 0; i < n; i++) {
            void *res;
            ck_assert_int_eq(tern_join(t[i], &res), 0);
            ck_assert_int_eq((intptr_t)res, i);
        }
        c->spawned += n;
    }
    return NULL;
}

START_TEST(test_dump_under_churn)
{
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_ctxvar_new("churn", NULL, NULL, &churn_var), 0);
    atomic_store(&ran, 0);
    churner c[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        c[i] = (churner){rt, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, churn_thread, &c[i]), 0);
    }
    FILE *f = fopen("/dev/null", "w");
    int dumps = 0;
    /* dump until every thread is done (each round is bounded) */
    for (;;) {
        int flags = dumps % 2 ? TERN_DUMP_JSON | TERN_DUMP_CONTEXT : TERN_DUMP_CONTEXT;
        ck_assert_int_ge(tern_runtime_dump(rt, f, flags), 0);
        dumps++;
        if (atomic_load(&ran) >= 8L * 16 * SCALED(2000))
            break;
        usleep(500);
    }
    long spawned = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        spawned += c[i].spawned;
    }
    fclose(f);
    ck_assert_int_eq(spawned, 8L * 16 * SCALED(2000));
    ck_assert_int_eq(atomic_load(&ran), spawned);
    ck_assert_int_gt(dumps, 1);
    tern_runtime_free(rt);
    tern_ctxvar_free(churn_var);
}
END_TEST

/* ---- tasks that finish away from the worker that registered them ----------- */

/* A task spawned on worker A is linked into A's shard, and only A unlinks
 * it: a task that finishes on worker B (stolen, or woken there) or on a
 * blocking pool thread is handed back to A on A's away stack. Dumps walk the
 * shards all along, so a header reused too early would show up as a wrong
 * count, a hang or an ASan report. */
static _Atomic long away_ran, away_far;
static tern_ctxvar *away_var;

static void note_where(void)
{
    tern_loop *w = tern__loop_self();
    if (!w || w->index != tern__task_self()->shard)
        atomic_fetch_add(&away_far, 1);
}

static void *away_job(void *arg)
{
    note_where(); /* a pool thread: always away */
    return arg;
}

static void *away_child(void *arg)
{
    tern_future *f = arg;
    void *v = NULL;
    ck_assert_int_eq(tern_future_await(f, &v, 0), 0); /* woken by the parent */
    tern_ctxvar_set(away_var, v, NULL);
    tern_task *job;
    ck_assert_int_eq(tern_spawn_blocking(away_job, v, &job), 0);
    void *res = NULL;
    ck_assert_int_eq(tern_join(job, &res), 0);
    ck_assert_ptr_eq(res, v);
    tern_yield(); /* another worker may take it here */
    note_where();
    atomic_fetch_add(&away_ran, 1);
    return v;
}

#define AWAY_KIDS 16

static void *away_parent(void *arg)
{
    for (int round = 0; round < SCALED(300); round++) {
        tern_future *f;
        ck_assert_int_eq(tern_future_new(&f), 0);
        tern_task *t[AWAY_KIDS];
        for (int i = 0; i < AWAY_KIDS; i++) {
            ck_assert_int_eq(tern_spawn(away_child, f, &t[i]), 0);
            if (i & 1)
                tern_task_set_name(t[i], "away");
        }
        tern_yield(); /* the children park on f, some on other workers */
        ck_assert_int_eq(tern_future_set_result(f, arg), 0);
        for (int i = 0; i < AWAY_KIDS; i++) {
            void *res = NULL;
            ck_assert_int_eq(tern_join(t[i], &res), 0);
            ck_assert_ptr_eq(res, arg);
        }
        tern_future_release(f);
    }
    return arg;
}

typedef struct dumper {
    tern_runtime *rt;
    _Atomic int stop;
    int dumps;
} dumper;

static void *dump_loop(void *arg)
{
    dumper *d = arg;
    FILE *f = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(f);
    while (!atomic_load(&d->stop)) {
        int flags = d->dumps % 2 ? TERN_DUMP_JSON | TERN_DUMP_CONTEXT : TERN_DUMP_CONTEXT;
        ck_assert_int_ge(tern_runtime_dump(d->rt, f, flags), 0);
        d->dumps++;
    }
    fclose(f);
    return NULL;
}

START_TEST(test_registry_finish_away)
{
    tern_runtime *rt = rt_new(4);
    ck_assert_int_eq(tern_ctxvar_new("away", NULL, NULL, &away_var), 0);
    atomic_store(&away_ran, 0);
    atomic_store(&away_far, 0);
    dumper d = {.rt = rt};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, dump_loop, &d), 0);
    enum { PARENTS = 4 };
    tern_task *p[PARENTS];
    for (intptr_t i = 0; i < PARENTS; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, away_parent, (void *)(i + 1), &p[i]), 0);
    for (intptr_t i = 0; i < PARENTS; i++) {
        void *res = NULL;
        ck_assert_int_eq(tern_join(p[i], &res), 0);
        ck_assert_ptr_eq(res, (void *)(i + 1));
    }
    atomic_store(&d.stop, 1);
    pthread_join(th, NULL);
    long n = (long)PARENTS * SCALED(300) * AWAY_KIDS;
    ck_assert_int_eq(atomic_load(&away_ran), n);
    /* every blocking job finished away (children that were stolen add more) */
    ck_assert_int_ge(atomic_load(&away_far), n);
    ck_assert_int_gt(d.dumps, 0);
    WAIT_UNTIL(tern_runtime_live_tasks(rt) == 0, WAIT_MS);
    tern_runtime_free(rt);
    tern_ctxvar_free(away_var);
}
END_TEST

/* ---- the stall watchdog ---------------------------------------------------------- */

static pthread_mutex_t stall_lock = PTHREAD_MUTEX_INITIALIZER;
static int nstalls;
static tern_stall last_stall;
static char last_name[64], last_file[256];

static void on_stall(const tern_stall *s, void *arg)
{
    pthread_mutex_lock(&stall_lock);
    nstalls++;
    last_stall = *s;
    snprintf(last_name, sizeof last_name, "%s", s->name);
    snprintf(last_file, sizeof last_file, "%s", s->file);
    (*(int *)arg)++;
    pthread_mutex_unlock(&stall_lock);
}

static int stalls_seen(void)
{
    pthread_mutex_lock(&stall_lock);
    int n = nstalls;
    pthread_mutex_unlock(&stall_lock);
    return n;
}

/* Holds its worker until the watchdog has made `want` reports in all (or
 * WAIT_MS at most, and then the test fails on the count): a fixed spin could
 * end before a monitor thread the machine kept off the CPU took its two
 * samples. */
static void hold_until_reported(int want)
{
    uint64_t end = tern_now() + (uint64_t)WAIT_MS * MS;
    while (stalls_seen() < want && tern_now() < end)
        spin(MS);
}

static void *spinner(void *arg)
{
    hold_until_reported((int)(intptr_t)arg);
    return arg;
}

/* With no watchdog there is nothing to wait for: a poll as long as one that
 * is reported. */
static void *spin_300ms(void *arg)
{
    spin(300 * MS);
    return arg;
}

/* The longest poll of the polite tasks, as they measured it themselves. */
static _Atomic uint64_t polite_max_ns;

static void *polite(void *arg)
{
    uint64_t end = tern_now() + 400 * MS;
    while (tern_now() < end) {
        uint64_t t0 = tern_now();
        spin(200000); /* 0.2 ms of work, then give the worker back */
        uint64_t took = tern_now() - t0, max = atomic_load(&polite_max_ns);
        while (took > max && !atomic_compare_exchange_weak(&polite_max_ns, &max, took))
            ;
        tern_sleep(MS);
    }
    return arg;
}

static void spin_cb(void *arg)
{
    hold_until_reported((int)(intptr_t)arg);
}

START_TEST(test_watchdog)
{
    nstalls = 0;
    int calls = 0;
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.watchdog = 1;
    cfg.stall_ms = 100;
    cfg.on_stall = on_stall;
    cfg.stall_arg = &calls;
    tern_runtime *rt = rt_with(&cfg, 2);

    /* well-behaved tasks: no report. The sleep gives a wrong report the
     * time to come. A worker the machine keeps off the CPU for a whole
     * threshold in the middle of a poll is stalled as far as the watchdog
     * can tell; the tasks time their polls, and only a machine that held
     * one for a quarter threshold excuses a report. */
    atomic_store(&polite_max_ns, 0);
    tern_task *p[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, polite, NULL, &p[i]), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tern_join(p[i], NULL), 0);
    usleep(150000);
    int base = stalls_seen();
    ck_assert_msg(base == 0 || atomic_load(&polite_max_ns) >= 25 * MS,
                  "%d reports of polls that took at most %llu us", base,
                  (unsigned long long)(atomic_load(&polite_max_ns) / 1000));

    /* a task that holds its worker: exactly one report, naming it */
    tern_task *t;
    uint64_t t0 = tern_now();
    int line = __LINE__ + 1;
    ck_assert_int_eq(tern_runtime_spawn(rt, spinner, (void *)(intptr_t)(base + 1), &t),
                     0);
    uint64_t id = tern_task_id(t);
    ck_assert_int_eq(tern_task_set_name(t, "spinner"), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    uint64_t lived = tern_now() - t0;
    usleep(100000); /* a couple of samples after it ended: no second report */
    ck_assert_int_eq(stalls_seen(), base + 1);
    ck_assert_int_eq(calls, base + 1);
    ck_assert_int_eq(last_stall.task_id, id);
    ck_assert_str_eq(last_name, "spinner");
    ck_assert_str_eq(last_file, __FILE__);
    ck_assert_int_eq(last_stall.line, line);
    ck_assert_uint_ge(last_stall.held_ns, 100 * MS);
    for (size_t i = 0; i < sizeof last_stall.reserved / sizeof last_stall.reserved[0];
         i++)
        ck_assert_uint_eq(last_stall.reserved[i], 0);
    /* held no longer than the task lived: a bound that holds however late
     * the monitor sampled */
    ck_assert_uint_le(last_stall.held_ns, lived);
    ck_assert_uint_lt(last_stall.worker, 2);
    tern_metrics m;
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    ck_assert_int_eq(m.stalls, base + 1);
    ck_assert_int_eq(m.total.stalls, base + 1);

    /* a loop callback that holds its worker: reported as a callback */
    ck_assert_int_eq(tern_call_soon_threadsafe(tern_runtime_loop(rt, 1), spin_cb,
                                               (void *)(intptr_t)(base + 2), NULL),
                     0);
    WAIT_UNTIL(stalls_seen() >= base + 2, WAIT_MS);
    usleep(200000); /* no second report */
    ck_assert_int_eq(stalls_seen(), base + 2);
    ck_assert_int_eq(last_stall.task_id, 0);
    ck_assert_int_eq(last_stall.worker, 1);
    tern_worker_stats ws;
    ck_assert_int_eq(tern_worker_metrics(rt, 1, &ws), 0);
    ck_assert_uint_ge(ws.stalls, 1);
    tern_runtime_free(rt);
}
END_TEST

/* The environment switches the watchdog on; the default prints to stderr. */
START_TEST(test_watchdog_env)
{
    nstalls = 0;
    int calls = 0;
    setenv("TERN_WATCHDOG", "50", 1);
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.on_stall = on_stall;
    cfg.stall_arg = &calls;
    tern_runtime *rt = rt_with(&cfg, 1);
    unsetenv("TERN_WATCHDOG");
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, spinner, (void *)(intptr_t)1, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    usleep(50000); /* no second report */
    ck_assert_int_eq(stalls_seen(), 1);
    ck_assert_uint_ge(last_stall.held_ns, 50 * MS);
    tern_runtime_free(rt);

    /* off by default */
    nstalls = 0;
    rt = rt_with(&cfg, 1);
    ck_assert_int_eq(tern_runtime_spawn(rt, spin_300ms, NULL, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(stalls_seen(), 0);
    tern_runtime_free(rt);
}
END_TEST

/* ---- the dump signal --------------------------------------------------------------- */

START_TEST(test_dump_signal)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.dump_signal = SIGUSR1;
    tern_runtime *rt = rt_with(&cfg, 1);
    tern_event ev;
    tern_event_init(&ev);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, ev_wait, &ev, &t), 0);
    tern_task_set_name(t, "signalled");
    WAIT_PARKED(t, TERN__W_EVENT);

    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    raise(SIGUSR1);
    char buf[4096] = "";
    /* The whole line: stderr is unbuffered, so the name can be there before
     * the state. No WAIT_UNTIL: its failure would leave stderr redirected. */
    uint64_t end = tern_now() + (uint64_t)WAIT_MS * MS;
    while (!strstr(buf, "\"signalled\" [waiting") && tern_now() < end) {
        usleep(5000);
        fflush(stderr);
        size_t n = pread(fileno(tmp), buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = 0;
    }
    dup2(saved, 2);
    close(saved);
    fclose(tmp);
    ck_assert_msg(strstr(buf, "tern runtime ") && strstr(buf, "\"signalled\" [waiting"),
                  "%s", buf);
    tern_event_set(&ev);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    tern_runtime_free(rt);
    /* the program's own disposition is back */
    struct sigaction sa;
    sigaction(SIGUSR1, NULL, &sa);
    ck_assert_ptr_eq((void *)sa.sa_handler, (void *)SIG_DFL);

    /* by name, from the environment */
    setenv("TERN_DUMP_SIGNAL", "USR2", 1);
    tern_config_init(&cfg);
    rt = rt_with(&cfg, 1);
    unsetenv("TERN_DUMP_SIGNAL");
    sigaction(SIGUSR2, NULL, &sa);
    ck_assert_ptr_ne((void *)sa.sa_handler, (void *)SIG_DFL);
    tern_runtime_free(rt);
    sigaction(SIGUSR2, NULL, &sa);
    ck_assert_ptr_eq((void *)sa.sa_handler, (void *)SIG_DFL);

    /* blocked by the program: it would never fire, so tern says so (and
     * says nothing when it is not blocked, as above) */
    sigset_t usr2, old;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, &old);
    tern_config_init(&cfg);
    cfg.dump_signal = SIGUSR2;
    stderr_capture cap;
    char said[1024];
    stderr_capture_start(&cap);
    rt = rt_with(&cfg, 1);
    stderr_capture_stop(&cap, said, sizeof said);
    tern_runtime_free(rt);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ck_assert_msg(strstr(said, "dump signal") && strstr(said, "is blocked"), "%s", said);
}
END_TEST

START_TEST(test_config_errors)
{
    tern_config cfg;
    tern_runtime *rt = NULL;
    int bad_signals[] = {-1,     SIGKILL, SIGSTOP, SIGSEGV, SIGBUS,
                         SIGFPE, SIGILL,  SIGABRT, 65};
    for (size_t i = 0; i < sizeof bad_signals / sizeof bad_signals[0]; i++) {
        tern_config_init(&cfg);
        cfg.dump_signal = bad_signals[i];
        ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    }
    tern_config_init(&cfg);
    cfg.watchdog = 1;
    cfg.stall_ms = 3600001;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), -EINVAL);
    /* the environment is checked as strictly */
    const char *bad_env[][2] = {
        {"TERN_DUMP_SIGNAL", "SEGV"}, {"TERN_DUMP_SIGNAL", "NOPE"},
        {"TERN_DUMP_SIGNAL", "9"},    {"TERN_WATCHDOG", "abc"},
        {"TERN_WATCHDOG", "-5"},      {"TERN_WATCHDOG", "3600001"},
        {"TERN_BACKEND", "uring"}};
    for (size_t i = 0; i < sizeof bad_env / sizeof bad_env[0]; i++) {
        char *saved = getenv(bad_env[i][0]) ? strdup(getenv(bad_env[i][0])) : NULL;
        setenv(bad_env[i][0], bad_env[i][1], 1);
        tern_config_init(&cfg);
        stderr_capture cap;
        char said[1024];
        stderr_capture_start(&cap);
        int r = tern_runtime_new(&cfg, &rt);
        stderr_capture_stop(&cap, said, sizeof said);
        if (saved)
            setenv(bad_env[i][0], saved, 1);
        else
            unsetenv(bad_env[i][0]);
        free(saved);
        ck_assert_msg(r == -EINVAL, "%s=%s: %d", bad_env[i][0], bad_env[i][1], r);
        /* the variable, its value and what would do are named */
        char want[128];
        snprintf(want, sizeof want, "tern: %s=%s: want ", bad_env[i][0], bad_env[i][1]);
        ck_assert_msg(strstr(said, want), "%s=%s said: %s", bad_env[i][0], bad_env[i][1],
                      said);
    }
    /* it only ever switches on: TERN_WATCHDOG=0 leaves the program's watchdog */
    setenv("TERN_WATCHDOG", "0", 1);
    tern_config_init(&cfg);
    cfg.watchdog = 1;
    ck_assert_int_eq(tern_runtime_new(&cfg, &rt), 0);
    unsetenv("TERN_WATCHDOG");
    tern_runtime_free(rt);
}
END_TEST

/* An on_stall callback may dump; it may not make or free runtimes. */
static _Atomic int cb_new_result = 1, cb_dump_result = -1;

static void on_stall_reentrant(const tern_stall *s, void *arg)
{
    tern_runtime *rt = NULL;
    atomic_store(&cb_new_result, tern_runtime_new(NULL, &rt));
    FILE *f = fopen("/dev/null", "w");
    atomic_store(&cb_dump_result, tern_dump(f, 0));
    fclose(f);
    pthread_mutex_lock(&stall_lock); /* counted last: the spinner waits for it */
    nstalls++;
    pthread_mutex_unlock(&stall_lock);
}

START_TEST(test_on_stall_reentrant)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.watchdog = 1;
    cfg.stall_ms = 50;
    cfg.on_stall = on_stall_reentrant;
    nstalls = 0;
    tern_runtime *rt = rt_with(&cfg, 1);
    tern_task *t;
    ck_assert_int_eq(tern_runtime_spawn(rt, spinner, (void *)(intptr_t)1, &t), 0);
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_int_eq(stalls_seen(), 1);
    ck_assert_int_eq(atomic_load(&cb_new_result), -EDEADLK);
    ck_assert_int_ge(atomic_load(&cb_dump_result), 0);
    tern_runtime_free(rt);
}
END_TEST

/* Group children record where they were spawned; odd names stay on one line. */
static int child_wait(void *arg)
{
    return tern_event_wait(arg, 0);
}

static void *group_body(void *arg)
{
    tern_event *ev = arg;
    tern_group g;
    tern_group_init(&g);
    int line = __LINE__ + 1;
    ck_assert_int_eq(tern_group_spawn(&g, child_wait, ev), 0);
    tern_task_set_name(NULL, "two\nlines \"quoted\"");
    char *d = NULL;
    char want[300];
    snprintf(want, sizeof want, "[waiting ");
    for (int i = 0; i < 200; i++) {
        free(d);
        d = dump_str(tern_runtime_current(), 0, NULL);
        char key[300];
        snprintf(key, sizeof key, "spawned at %s:%d", __FILE__, line);
        char l[1024];
        if (find_line(d, key, l, sizeof l) && strstr(l, want))
            break;
        tern_sleep(5 * MS);
    }
    snprintf(want, sizeof want, "spawned at %s:%d", __FILE__, line);
    ck_assert_msg(strstr(d, want), "%s", d);
    ck_assert_msg(strstr(d, "\"two\\x0alines \\\"quoted\\\"\""), "%s", d);
    free(d);
    d = dump_str(tern_runtime_current(), TERN_DUMP_JSON, NULL);
    ck_assert_msg(strstr(d, "\"name\":\"two\\u000alines \\\"quoted\\\"\""), "%s", d);
    free(d);
    tern_event_set(ev);
    ck_assert_int_eq(tern_group_wait(&g), 0);
    return NULL;
}

START_TEST(test_group_location_and_escapes)
{
    tern_runtime *rt = rt_new(2);
    tern_event ev;
    tern_event_init(&ev);
    ck_assert_int_eq(tern_block_on(rt, group_body, &ev, NULL), 0);
    tern_runtime_free(rt);
}
END_TEST

/* ---- metrics ----------------------------------------------------------------------- */

typedef struct work {
    _Atomic long left;
    tern_event done;
} work;

static void *bit_of_work(void *arg)
{
    work *w = arg;
    spin(2000);
    if (atomic_fetch_sub(&w->left, 1) == 1)
        tern_event_set(&w->done);
    return NULL;
}

/* One task spawns everything: the other workers have to steal. The first
 * 100 stay in this worker's queue (under its 256 slots: none overflows to
 * the inject queue) while this task holds the worker until another has
 * stolen some; on a loaded machine the other worker could otherwise wake
 * late and only ever pull overflow from the inject queue. */
static void *unbalanced(void *arg)
{
    work *w = arg;
    long n = atomic_load(&w->left), first = n < 100 ? n : 100;
    for (long i = 0; i < first; i++)
        ck_assert_int_eq(tern_spawn(bit_of_work, w, NULL), 0);
    tern_metrics m = {0};
    uint64_t end = tern_now() + (uint64_t)WAIT_MS * MS;
    while (tern_runtime_metrics(tern_runtime_current(), &m) == 0 && m.total.steals == 0 &&
           tern_now() < end)
        ;
    for (long i = first; i < n; i++)
        ck_assert_int_eq(tern_spawn(bit_of_work, w, NULL), 0);
    return (void *)(intptr_t)tern_event_wait(&w->done, 0);
}

static void *echo_rounds(void *arg)
{
    int *sv = arg;
    for (int i = 0; i < 10; i++) {
        char c = (char)i, d = 0;
        if (tern_send(sv[0], &c, 1, 0, 0) != 1 || tern_recv(sv[1], &d, 1, 0, 0) != 1 ||
            c != d)
            return (void *)1;
    }
    return NULL;
}

static void *sleep_long(void *arg)
{
    return (void *)(intptr_t)tern_sleep(30 * 1000 * MS);
}

static void *job_wait(void *arg)
{
    while (!atomic_load((_Atomic int *)arg))
        usleep(1000);
    return NULL;
}

static uint64_t hist_sum(const tern_metrics *m)
{
    uint64_t n = 0;
    for (int b = 0; b < TERN_POLL_BUCKETS; b++)
        n += m->poll_hist[b];
    return n;
}

START_TEST(test_metrics)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.metrics = 1;
    tern_runtime *rt = rt_with(&cfg, 2);
    const long n = SCALED(20000);
    work w = {.left = n};
    tern_event_init(&w.done);
    ck_assert_int_eq(tern_block_on(rt, unbalanced, &w, NULL), 0);
    tern_metrics m;
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    ck_assert_int_eq(m.workers, 2);
    tern_loop_info li;
    ck_assert_int_eq(tern_loop_get_info(tern_runtime_loop(rt, 0), &li), 0);
    ck_assert_str_eq(m.backend, li.backend);
    ck_assert_uint_ge(m.total.tasks_run, (uint64_t)n + 1);
    ck_assert_uint_gt(m.total.steals, 0);
    ck_assert_uint_ge(m.total.stolen_tasks, m.total.steals);
    ck_assert_uint_gt(m.total.local_hits + m.total.lifo_hits, 0);
    ck_assert_uint_gt(m.total.busy_ns, 0);
    ck_assert_uint_gt(hist_sum(&m), 0);
    ck_assert_uint_le(hist_sum(&m), m.total.tasks_run);
    tern_worker_stats s0, s1;
    ck_assert_int_eq(tern_worker_metrics(rt, 0, &s0), 0);
    ck_assert_int_eq(tern_worker_metrics(rt, 1, &s1), 0);
    ck_assert_uint_le(s0.tasks_run + s1.tasks_run, m.total.tasks_run + 16);

    /* I/O counted per operation */
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    tern_metrics before;
    tern_runtime_metrics(rt, &before);
    ck_assert_int_eq(tern_block_on(rt, echo_rounds, sv, NULL), 0);
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    ck_assert_uint_ge(m.total.io_submitted - before.total.io_submitted, 20);
    ck_assert_uint_ge(m.total.io_completed - before.total.io_completed, 20);
    close(sv[0]);
    close(sv[1]);

    /* timers, live tasks and the blocking pool, while they exist */
    tern_task *sl[5], *job;
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, sleep_long, NULL, &sl[i]), 0);
    _Atomic int go = 0;
    ck_assert_int_eq(tern_runtime_spawn_blocking(rt, job_wait, &go, &job), 0);
    WAIT_UNTIL(tern_runtime_metrics(rt, &m) == 0 && m.timers_armed >= 5 &&
                   m.blocking_threads > m.blocking_idle,
               WAIT_MS);
    ck_assert_uint_ge(m.timers_armed, 5);
    ck_assert_uint_ge(m.live_tasks, 6);
    ck_assert_uint_ge(m.blocking_threads, 1);
    ck_assert_uint_gt(m.blocking_threads, m.blocking_idle);
    atomic_store(&go, 1);
    ck_assert_int_eq(tern_join(job, NULL), 0);
    for (int i = 0; i < 5; i++) {
        tern_task_cancel(sl[i]);
        ck_assert_int_eq(tern_join(sl[i], NULL), -ECANCELED);
    }

    ck_assert_int_eq(tern_runtime_metrics(NULL, &m), -EINVAL);
    ck_assert_int_eq(tern_runtime_metrics(rt, NULL), -EINVAL);
    ck_assert_int_eq(tern_worker_metrics(rt, 2, &s0), -EINVAL);
    ck_assert_int_eq(tern_worker_metrics(NULL, 0, &s0), -EINVAL);
    ck_assert_int_eq(tern_worker_metrics(rt, 0, NULL), -EINVAL);
    tern_runtime_free(rt);

    /* without cfg.metrics, no poll is timed; the counters still count */
    rt = rt_new(2);
    w.left = n;
    tern_event_init(&w.done);
    ck_assert_int_eq(tern_block_on(rt, unbalanced, &w, NULL), 0);
    ck_assert_int_eq(tern_runtime_metrics(rt, &m), 0);
    ck_assert_uint_eq(hist_sum(&m), 0);
    ck_assert_uint_ge(m.total.tasks_run, (uint64_t)n);
    tern_runtime_free(rt);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("observe");
    TCase *tc = tcase_create("observe");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_names_locations);
    tcase_add_test(tc, test_dump_states);
    tcase_add_test(tc, test_dump_ready);
    tcase_add_test(tc, test_dump_all_runtimes);
    tcase_add_test(tc, test_dump_under_churn);
    tcase_add_test(tc, test_registry_finish_away);
    tcase_add_test(tc, test_watchdog);
    tcase_add_test(tc, test_watchdog_env);
    tcase_add_test(tc, test_dump_signal);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_on_stall_reentrant);
    tcase_add_test(tc, test_group_location_and_escapes);
    tcase_add_test(tc, test_metrics);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
