/* Shared bits of the Check suites. */
#ifndef TERN_TEST_HELPERS_H
#define TERN_TEST_HELPERS_H

#include <check.h>
#include <dirent.h>
#include <stdlib.h>

#include "tern.h"

/* Check's ck_assert_msg records every *passing* check as well: a write to
 * its pipe under a global mutex. In the hot loops of tasks and threads that
 * would serialise the code under test and give ThreadSanitizer
 * happens-before edges that hide real races (and made the channel suite 9x
 * slower). So a check calls into Check only when it fails; every
 * ck_assert_* goes through this macro. */
#undef ck_assert_msg
#define ck_assert_msg(expr, ...)                                                           \
    ((expr) ? (void)0                                                                      \
            : _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed",        \
                                ##__VA_ARGS__))

#ifndef TERN_TEST_SCALE
#define TERN_TEST_SCALE 1
#endif
/* Stress sizes shrink in sanitizer builds, never to nothing. */
#define SCALED(n) ((n) / TERN_TEST_SCALE > 0 ? (n) / TERN_TEST_SCALE : 1)

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

/* Runs a suite; the process exits non-zero when any test failed. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
