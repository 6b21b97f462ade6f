/*
 * The I/O driver's contract: timeouts, wakes from other threads, backend
 * selection and descriptor hygiene. Registered once per backend (CMake sets
 * TERN_BACKEND); tests that open with TERN_BACKEND_AUTO follow it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h" /* test_skip, run_suite */
#include "io/driver.h"

#ifndef TERN_TEST_SCALE
#define TERN_TEST_SCALE 1
#endif

#define MS 1000000LL

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int env_is(const char *name)
{
    const char *s = getenv("TERN_BACKEND");
    return s && strcmp(s, name) == 0;
}

/* A refused ring is a skip, not a pass and not a failure. */
static int uring_refused(int rc)
{
    if (rc != -ENOSYS && rc != -EPERM && rc != -ENOMEM)
        return 0;
    test_skip("io_uring unavailable here (%s)", strerror(-rc));
    return 1;
}

/* Opens the backend TERN_BACKEND names; returns from the test (a skip) when
 * that is io_uring and the kernel refuses it. */
#define OPEN_OR_SKIP(d)                                                                  \
    do {                                                                                 \
        int rc_ = tern__driver_open(TERN_BACKEND_AUTO, &(d), NULL);                      \
        if (rc_ != 0 && env_is("io_uring") && uring_refused(rc_))                        \
            return;                                                                      \
        ck_assert_int_eq(rc_, 0);                                                        \
    } while (0)

static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(dir);
    int n = 0;
    while (readdir(dir))
        n++;
    closedir(dir);
    return n;
}

START_TEST(t_note_names_backend)
{
    tern__driver *d;
    const char *note = NULL;
    int rc = tern__driver_open(TERN_BACKEND_AUTO, &d, &note);
    if (rc != 0 && env_is("io_uring") && uring_refused(rc))
        return;
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(note);
    const char *name = d->ops->name;
    ck_assert_msg(strncmp(note, name, strlen(name)) == 0, "note \"%s\" for %s", note,
                  name);
    if (env_is("io_uring"))
        ck_assert_ptr_eq(d->ops, &tern__uring_ops);
    if (env_is("epoll"))
        ck_assert_ptr_eq(d->ops, &tern__epoll_ops);
    ck_assert_int_eq(tern__driver_backend(d), d->ops == &tern__uring_ops
                                                  ? TERN_BACKEND_IO_URING
                                                  : TERN_BACKEND_EPOLL);
    printf("driver: %s\n", note);
    d->ops->close(d);
}
END_TEST

/* The config beats the environment: TERN_BACKEND only overrides AUTO. */
START_TEST(t_force_each_backend)
{
    tern__driver *d;
    const char *note = NULL;
    ck_assert_int_eq(tern__driver_open(TERN_BACKEND_EPOLL, &d, &note), 0);
    ck_assert_ptr_eq(d->ops, &tern__epoll_ops);
    ck_assert_str_eq(note, "epoll (forced by config)");
    d->ops->close(d);

    note = NULL;
    int rc = tern__driver_open(TERN_BACKEND_IO_URING, &d, &note);
    if (uring_refused(rc))
        return;
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_eq(d->ops, &tern__uring_ops);
    ck_assert_str_eq(note, "io_uring (forced by config)");
    d->ops->close(d);
}
END_TEST

START_TEST(t_invalid_backend)
{
    tern__driver *d = NULL;
    const char *note = NULL;
    char *saved = getenv("TERN_BACKEND") ? strdup(getenv("TERN_BACKEND")) : NULL;
    setenv("TERN_BACKEND", "kqueue", 1);
    ck_assert_int_eq(tern__driver_open(TERN_BACKEND_AUTO, &d, &note), -EINVAL);
    ck_assert_ptr_null(d);
    ck_assert_ptr_null(note);
    /* an explicit choice does not read the variable */
    ck_assert_int_eq(tern__driver_open(TERN_BACKEND_EPOLL, &d, NULL), 0);
    d->ops->close(d);
    if (saved)
        setenv("TERN_BACKEND", saved, 1);
    else
        unsetenv("TERN_BACKEND");
    free(saved);
    ck_assert_int_eq(tern__driver_open((tern_backend)42, &d, NULL), -EINVAL);
    ck_assert_int_eq(tern__driver_open(TERN_BACKEND_EPOLL, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(t_timeout_zero)
{
    tern__driver *d;
    OPEN_OR_SKIP(d);
    int64_t t0 = now_ns();
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(d->ops->wait(d, 0), 0);
    ck_assert_int_lt(now_ns() - t0, 1000 * MS);
    d->ops->close(d);
}
END_TEST

static void assert_times_out(tern__driver *d, int64_t timeout)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(d->ops->wait(d, timeout), 0);
    int64_t took = now_ns() - t0;
    ck_assert_msg(took >= timeout, "woke after %lld ns, before %lld", (long long)took,
                  (long long)timeout);
    ck_assert_msg(took < 2000 * MS, "slept %lld ns for %lld", (long long)took,
                  (long long)timeout);
}

START_TEST(t_timeout_20ms)
{
    tern__driver *d;
    OPEN_OR_SKIP(d);
    assert_times_out(d, 20 * MS); /* the first wait also submits the wake read */
    assert_times_out(d, 20 * MS);
    assert_times_out(d, 1500000); /* not a whole number of ms */
    d->ops->close(d);
}
END_TEST

typedef struct waker {
    tern__driver *d;
    pid_t owner; /* the thread that waits */
    atomic_int woke;
} waker;

/* 1 when thread tid of this process sleeps in a system call a driver
 * waits in, 0 when not (yet), -1 when the kernel does not say. */
static int sleeps_in_wait(pid_t tid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    char *end;
    long nr = strtol(buf, &end, 10); /* "running" unless it sleeps */
    if (end == buf)
        return 0;
    return nr == SYS_epoll_pwait || nr == SYS_io_uring_enter
#ifdef SYS_epoll_wait
           || nr == SYS_epoll_wait
#endif
#ifdef SYS_epoll_pwait2
           || nr == SYS_epoll_pwait2
#endif
        ;
}

static void *wake_later(void *arg)
{
    waker *w = arg;
    /* the wake must find the owner asleep in its wait, not on its way */
    int in = 0;
    for (int i = 0; i < 30000 && (in = sleeps_in_wait(w->owner)) == 0; i++)
        usleep(1000);
    ck_assert_msg(in != 0, "the owner never went to sleep in its wait");
    if (in < 0)
        printf(
            "wake_ends_infinite_wait: this kernel does not show where a thread sleeps\n");
    atomic_store(&w->woke, 1);
    w->d->ops->wake(w->d);
    return NULL;
}

START_TEST(t_wake_ends_infinite_wait)
{
    waker w = {.owner = (pid_t)syscall(SYS_gettid)};
    OPEN_OR_SKIP(w.d);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, wake_later, &w), 0);
    int n;
    while ((n = w.d->ops->wait(w.d, -1)) == 0) /* 0 only on a signal */
        ;
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(atomic_load(&w.woke), 1);
    pthread_join(th, NULL);
    w.d->ops->close(w.d);
}
END_TEST

START_TEST(t_wake_before_wait)
{
    tern__driver *d;
    OPEN_OR_SKIP(d);
    /* before the first wait: nothing submitted yet */
    d->ops->wake(d);
    int64_t t0 = now_ns();
    ck_assert_int_eq(d->ops->wait(d, -1), 1);
    ck_assert_int_lt(now_ns() - t0, 1000 * MS);
    /* with the wake read in flight: even a zero-timeout wait sees it */
    ck_assert_int_eq(d->ops->wait(d, 0), 0);
    d->ops->wake(d);
    ck_assert_int_eq(d->ops->wait(d, 0), 1);
    d->ops->wake(d);
    ck_assert_int_eq(d->ops->wait(d, 20 * MS), 1);
    ck_assert_int_lt(now_ns() - t0, 1000 * MS);
    d->ops->close(d);
}
END_TEST

START_TEST(t_wakes_coalesce)
{
    tern__driver *d;
    OPEN_OR_SKIP(d);
    for (int i = 0; i < 1000; i++)
        d->ops->wake(d);
    int total = 0, n, rounds = 0;
    while ((n = d->ops->wait(d, 0)) > 0 || total == 0) {
        total += n;
        ck_assert_int_lt(++rounds, 1000);
    }
    ck_assert_int_ge(n, 0);
    ck_assert_int_ge(total, 1);
    ck_assert_int_le(total, 2);
    assert_times_out(d, 10 * MS); /* consumed: no spurious returns */
    assert_times_out(d, 10 * MS);
    d->ops->close(d);
}
END_TEST

/* Wakes racing waits: the producer posts i, wakes, and waits for the owner
 * to acknowledge i before posting i + 1. A lost wake leaves the owner asleep
 * until its generous timeout, which fails the test. Each round trip takes
 * scheduler time, a lot of it on a loaded machine: past a time budget the
 * test stops early, once it has run at least RACE_MIN of them. */
enum { RACE_MIN = 2000 };
#define RACE_BUDGET (20000 * MS)

typedef struct race {
    tern__driver *d;
    unsigned n;
    atomic_uint posted;
    atomic_uint acked;
    atomic_int stop;
} race;

static void *race_producer(void *arg)
{
    race *r = arg;
    for (unsigned i = 1; i <= r->n && !atomic_load(&r->stop); i++) {
        atomic_store(&r->posted, i);
        r->d->ops->wake(r->d);
        /* spin a little (varies the timing), then yield: on a loaded machine
         * both threads may share one CPU */
        for (unsigned spin = 0; atomic_load(&r->acked) < i && !atomic_load(&r->stop);
             spin++)
            if (spin > (i % 64))
                sched_yield();
    }
    return NULL;
}

START_TEST(t_wakes_race_waits)
{
    race r = {.n = 100000 / TERN_TEST_SCALE};
    OPEN_OR_SKIP(r.d);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, race_producer, &r), 0);
    unsigned acked = 0;
    int64_t end = now_ns() + RACE_BUDGET;
    while (acked < r.n) {
        if (acked >= RACE_MIN && now_ns() > end) {
            printf("wakes_race_waits: %u of %u round trips in the time budget\n", acked,
                   r.n);
            atomic_store(&r.stop, 1);
            break;
        }
        /* mix zero-timeout polls with sleeping waits */
        int n = r.d->ops->wait(r.d, acked % 3 == 0 ? 0 : 5000 * MS);
        ck_assert_int_ge(n, 0);
        unsigned p = atomic_load(&r.posted);
        if (p > acked) {
            acked = p;
            atomic_store(&r.acked, acked);
        } else if (acked % 3 != 0) {
            ck_assert_msg(n > 0, "wake lost: wait timed out with %u posted, %u acked", p,
                          acked);
        } else {
            sched_yield(); /* polling: let the producer run */
        }
    }
    pthread_join(th, NULL);
    r.d->ops->close(r.d);
}
END_TEST

START_TEST(t_open_close_no_fd_leak)
{
    tern__driver *d;
    OPEN_OR_SKIP(d); /* warm up whatever the libraries open once */
    d->ops->wait(d, 0);
    d->ops->close(d);
    int before = count_fds();
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(tern__driver_open(TERN_BACKEND_AUTO, &d, NULL), 0);
        if (i % 2) {
            d->ops->wake(d);
            ck_assert_int_eq(d->ops->wait(d, -1), 1);
        }
        d->ops->close(d);
    }
    ck_assert_int_eq(count_fds(), before);
}
END_TEST

/* Error paths in open: with room for 0 or 1 new descriptor, open fails with
 * -EMFILE and leaves nothing behind; with room for 2 it works. */
START_TEST(t_open_fails_cleanly)
{
    tern__driver *d;
    OPEN_OR_SKIP(d);
    d->ops->close(d);
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int before = count_fds();
    int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC); /* all fds below are taken */
    ck_assert_int_ge(lowest, 0);
    close(lowest);
    for (int room = 0; room <= 2; room++) {
        struct rlimit lim = {(rlim_t)lowest + room, old.rlim_max};
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
        d = NULL;
        int rc = tern__driver_open(TERN_BACKEND_AUTO, &d, NULL);
        if (rc == 0)
            d->ops->close(d);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        ck_assert_int_eq(rc, room < 2 ? -EMFILE : 0);
        ck_assert_int_eq(count_fds(), before);
    }
}
END_TEST

static void *open_on_thread(void *arg)
{
    tern__driver **d = arg;
    if (tern__driver_open(TERN_BACKEND_AUTO, d, NULL) != 0)
        *d = NULL;
    else
        (*d)->ops->wait(*d, 0);
    return NULL;
}

/* "Any thread once the owner has stopped": the owner exits without closing,
 * the main thread closes, nothing leaks. */
START_TEST(t_close_from_other_thread)
{
    tern__driver *d;
    OPEN_OR_SKIP(d); /* this thread owns a driver too while it closes another */
    int before = count_fds();
    tern__driver *other = NULL;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, open_on_thread, &other), 0);
    pthread_join(th, NULL);
    ck_assert_ptr_nonnull(other);
    other->ops->close(other);
    ck_assert_int_eq(count_fds(), before);
    /* and this thread's own driver still works */
    d->ops->wake(d);
    ck_assert_int_eq(d->ops->wait(d, -1), 1);
    assert_times_out(d, 5 * MS);
    d->ops->close(d);
}
END_TEST

static Suite *driver_suite(void)
{
    Suite *s = suite_create("driver");
    TCase *tc = tcase_create("driver");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t_note_names_backend);
    tcase_add_test(tc, t_force_each_backend);
    tcase_add_test(tc, t_invalid_backend);
    tcase_add_test(tc, t_timeout_zero);
    tcase_add_test(tc, t_timeout_20ms);
    tcase_add_test(tc, t_wake_ends_infinite_wait);
    tcase_add_test(tc, t_wake_before_wait);
    tcase_add_test(tc, t_wakes_coalesce);
    tcase_add_test(tc, t_wakes_race_waits);
    tcase_add_test(tc, t_open_close_no_fd_leak);
    tcase_add_test(tc, t_open_fails_cleanly);
    tcase_add_test(tc, t_close_from_other_thread);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(driver_suite());
}
