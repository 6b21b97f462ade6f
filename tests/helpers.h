/* Shared bits of the Check suites. */
#ifndef TERN_TEST_HELPERS_H
#define TERN_TEST_HELPERS_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rt/internal.h" /* tern.h, and the observation hooks tests wait on */

/* Check's ck_assert_msg records every *passing* check as well: a write to
 * its pipe under a global mutex. In the hot loops of tasks and threads that
 * would serialise the code under test and give ThreadSanitizer
 * happens-before edges that hide real races (and made the channel suite 9x
 * slower). So a check calls into Check only when it fails; every
 * ck_assert_* goes through this macro. */
#undef ck_assert_msg
#define ck_assert_msg(expr, ...)                                                         \
    ((expr) ? (void)0                                                                    \
            : _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed",      \
                                ##__VA_ARGS__))

#ifndef TERN_TEST_SCALE
#define TERN_TEST_SCALE 1
#endif
/* Stress sizes shrink in sanitizer builds, never to nothing. */
#define SCALED(n) ((n) / TERN_TEST_SCALE > 0 ? (n) / TERN_TEST_SCALE : 1)

/* Waits until cond holds, polling every 100 us, for at most ms
 * milliseconds, then fails the test instead of hanging it. Tests use this
 * on observable state (a task parked in its wait, a queue length, the join
 * slot, a counter), never a flag set before the call it announces and
 * never a fixed sleep standing in for "it has started". The bound is
 * generous because a loaded sanitizer run is slow, not because the state
 * takes long to reach. */
#define WAIT_UNTIL(cond, ms)                                                             \
    do {                                                                                 \
        for (long wait_i_ = 0; !(cond) && wait_i_ < (long)(ms)*10; wait_i_++)            \
            usleep(100);                                                                 \
        if (!(cond))                                                                     \
            ck_abort_msg("waited %d ms for: %s", (int)(ms), #cond);                      \
    } while (0)
/* The bound WAIT_UNTIL callers use unless a test needs its own. */
#define WAIT_MS 30000

/* Waits until task t has switched out in a wait of kind (a TERN__W_* from
 * rt/internal.h; -1 for any wait). */
#define WAIT_PARKED(t, kind)                                                             \
    WAIT_UNTIL((kind) < 0 ? tern__task_parked(t) >= 0 : tern__task_parked(t) == (kind),  \
               WAIT_MS)

/* The same from inside a task: polls with tern_sleep, because a usleep
 * would hold the worker, and on a runtime with one worker the task waited
 * on could then never run. Bounded by tern_now(), as a sleep can take
 * longer than asked on a loaded machine. */
#define TASK_WAIT_UNTIL(cond, ms)                                                        \
    do {                                                                                 \
        uint64_t wait_end_ = tern_now() + (uint64_t)(ms)*1000000u;                       \
        while (!(cond) && tern_now() < wait_end_)                                        \
            tern_sleep(100000);                                                          \
        if (!(cond))                                                                     \
            ck_abort_msg("waited %d ms for: %s", (int)(ms), #cond);                      \
    } while (0)
#define TASK_WAIT_PARKED(t, kind)                                                        \
    TASK_WAIT_UNTIL((kind) < 0 ? tern__task_parked(t) >= 0                               \
                               : tern__task_parked(t) == (kind),                         \
                    WAIT_MS)

/* A short busy wait, n units of roughly a system call each, to vary the
 * moment an action lands. Not sched_yield: under CPU hogs each call can
 * hand a whole time slice to a hog, and a round that yields 60 times then
 * takes a fifth of a second (cancel_recv_races_send ran past its timeout). */
static inline void spin_units(unsigned n)
{
    for (volatile unsigned k = 0; k < n * 200u; k++)
        ;
}

/* Open descriptors of this process. */
static inline int fd_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static inline tern_runtime *rt_new(unsigned workers)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    ck_assert_msg(r == 0, "tern_runtime_new: %s", tern_strerror(r));
    return rt;
}

/* Skips: Check has none, and forks each test, so a test that cannot run
 * here counts itself in a page shared with the parent (CK_FORK=no too). */
static _Atomic int *test_skips_;

/* Says why the rest of the calling test cannot run here and counts it; the
 * test then returns. run_suite reports the suite as skipped (exit 77, ctest's
 * SKIP_RETURN_CODE) when a test skipped and none failed. */
#define test_skip(...)                                                                   \
    do {                                                                                 \
        printf("SKIP: " __VA_ARGS__);                                                    \
        printf("\n");                                                                    \
        fflush(stdout);                                                                  \
        if (test_skips_)                                                                 \
            atomic_fetch_add(test_skips_, 1);                                            \
    } while (0)

/* Runs a suite; the process exits non-zero when any test failed, 77 when
 * none failed but some skipped. */
/* What the calls between stderr_capture_start and stderr_capture_stop
 * wrote to stderr, NUL-terminated in buf (the rest cut). */
typedef struct stderr_capture {
    FILE *tmp;
    int saved;
} stderr_capture;

static inline void stderr_capture_start(stderr_capture *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    ck_assert_ptr_nonnull(c->tmp);
    c->saved = dup(2);
    ck_assert_int_ge(c->saved, 0);
    dup2(fileno(c->tmp), 2);
}

static inline void stderr_capture_stop(stderr_capture *c, char *buf, size_t len)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    ssize_t n = pread(fileno(c->tmp), buf, len - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    fclose(c->tmp);
}

static inline int run_suite(Suite *s)
{
    /* A suite forced onto io_uring where the kernel refuses rings (seccomp,
     * io_uring_disabled, no support) cannot run: a skip, not a failure. */
    const char *be = getenv("TERN_BACKEND");
    if (be && strcmp(be, "io_uring") == 0) {
        tern_config cfg;
        tern_config_init(&cfg);
        cfg.workers = 1;
        tern_runtime *rt = NULL;
        int r = tern_runtime_new(&cfg, &rt);
        if (r == -ENOSYS || r == -EPERM || r == -ENOMEM) {
            printf("SKIP: io_uring unavailable here (%s)\n", tern_strerror(r));
            return 77;
        }
        if (r == 0)
            tern_runtime_free(rt);
    }
    test_skips_ = mmap(NULL, sizeof *test_skips_, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (test_skips_ == MAP_FAILED)
        test_skips_ = NULL;
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return EXIT_FAILURE;
    if (test_skips_ && atomic_load(test_skips_)) {
        printf("%d skipped: the suite reports itself as skipped\n",
               atomic_load(test_skips_));
        return 77;
    }
    return EXIT_SUCCESS;
}

#endif
