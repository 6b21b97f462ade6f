/*
 * Signals (sync/signal.c, with the handler and thread of rt/monitor.c).
 * Check runs each test in a child process of its own, so the signals a
 * test sends with kill(2) and the dispositions it changes stay there.
 */
#include <pthread.h>
#include <signal.h>

#include "io_helpers.h"

/* The signals the tests send, blocked in the test's thread before the
 * runtime starts (its threads inherit the mask), as a program that takes
 * signals with tern should: then only tern's signal thread takes them. The
 * thread that sends one would otherwise be the kernel's first choice, and
 * a thread parked in a raw system call has its handler held back by
 * ThreadSanitizer. */
static void block_test_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
}

#define SIG_TEST(name)                                                                   \
    static void *name##_main(void *arg);                                                 \
    START_TEST(name)                                                                     \
    {                                                                                    \
        block_test_signals();                                                            \
        run_io(_i, name##_main, NULL);                                                   \
    }                                                                                    \
    END_TEST                                                                             \
    static void *name##_main(void *arg)

static void *bad_args_main(void *arg)
{
    tern_signal *s;
    int usr2 = SIGUSR2, bad[] = {0, -1, SIGKILL, SIGSTOP, SIGSEGV, SIGFPE, NSIG};
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_signal_new(NULL, 1, NULL, &s), -EINVAL);
    ck_assert_int_eq(tern_signal_new(&usr2, 0, NULL, &s), -EINVAL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(tern_signal_new(&bad[i], 1, NULL, &s), -EINVAL);
    int mixed[] = {SIGUSR2, SIGKILL};
    ck_assert_int_eq(tern_signal_new(mixed, 2, NULL, &s), -EINVAL);
    tern_chan *wide;
    ck_assert_int_eq(tern_chan_new(sizeof(uint64_t), 4, &wide), 0);
    ck_assert_int_eq(tern_signal_new(&usr2, 1, wide, &s), -EINVAL);
    tern_chan_release(wide);
    ck_assert_int_eq(tern_signal_wait(NULL, 0), -EINVAL);
    tern_signal_free(NULL);
    /* nothing was left installed by the refusals */
    struct sigaction sa;
    sigaction(SIGUSR2, NULL, &sa);
    ck_assert_ptr_eq((void *)sa.sa_handler, (void *)SIG_DFL);
    return NULL;
}

SIG_TEST(bad_arguments)
{
    return bad_args_main(arg);
}

/* ---- every subscription sees each arrival once ---------------------------------- */

struct waiter {
    tern_signal *s;
    int got;
};

static void *wait_task(void *arg)
{
    struct waiter *w = arg;
    w->got = tern_signal_wait(w->s, LONG_DL());
    return NULL;
}

static void *wait_thread(void *arg)
{
    return wait_task(arg);
}

SIG_TEST(every_subscriber_once)
{
    int usr2 = SIGUSR2, usr1 = SIGUSR1;
    struct waiter a = {0}, b = {0}, c = {0};
    tern_signal *other;
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &a.s), 0);
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &b.s), 0);
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &c.s), 0);
    ck_assert_int_eq(tern_signal_new(&usr1, 1, NULL, &other), 0);
    tern_task *ta, *tb;
    ck_assert_int_eq(tern_spawn(wait_task, &a, &ta), 0);
    ck_assert_int_eq(tern_spawn(wait_task, &b, &tb), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, wait_thread, &c), 0);
    TASK_WAIT_PARKED(ta, TERN__W_SIGNAL);
    TASK_WAIT_PARKED(tb, TERN__W_SIGNAL);
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    ck_assert_int_eq(tern_join(ta, NULL), 0);
    ck_assert_int_eq(tern_join(tb, NULL), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(a.got, SIGUSR2);
    ck_assert_int_eq(b.got, SIGUSR2);
    ck_assert_int_eq(c.got, SIGUSR2);
    /* once each: nothing more for them, nothing for the other signal */
    ck_assert_int_eq(tern_signal_wait(a.s, dl_ms(30)), -ETIMEDOUT);
    ck_assert_int_eq(tern_signal_wait(c.s, dl_ms(1)), -ETIMEDOUT);
    ck_assert_int_eq(tern_signal_wait(other, dl_ms(1)), -ETIMEDOUT);
    tern_signal_free(a.s);
    tern_signal_free(b.s);
    tern_signal_free(c.s);
    tern_signal_free(other);
    return NULL;
}

/* Three tasks on one subscription share its arrivals: three kills, each
 * taken by exactly one of them. */
static _Atomic int shared_got;

static void *shared_wait(void *arg)
{
    int r = tern_signal_wait(arg, LONG_DL());
    ck_assert_int_eq(r, SIGUSR1);
    atomic_fetch_add(&shared_got, 1);
    return NULL;
}

SIG_TEST(one_subscription_shared)
{
    int usr1 = SIGUSR1;
    tern_signal *s;
    ck_assert_int_eq(tern_signal_new(&usr1, 1, NULL, &s), 0);
    atomic_store(&shared_got, 0);
    tern_task *t[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tern_spawn(shared_wait, s, &t[i]), 0);
    for (int i = 0; i < 3; i++) {
        /* one at a time: two pending arrivals of one signal would merge */
        ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
        TASK_WAIT_UNTIL(atomic_load(&shared_got) == i + 1, WAIT_MS);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    ck_assert_int_eq(tern_signal_wait(s, dl_ms(20)), -ETIMEDOUT);
    tern_signal_free(s);
    return NULL;
}

/* A channel gets the number too; the count for wait is kept as well. */
SIG_TEST(to_a_channel)
{
    int sigs[] = {SIGUSR1, SIGUSR2};
    tern_chan *ch;
    ck_assert_int_eq(tern_chan_new(sizeof(int), 4, &ch), 0);
    tern_signal *s;
    ck_assert_int_eq(tern_signal_new(sigs, 2, ch, &s), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    int v = 0;
    ck_assert_int_eq(tern_chan_recv_until(ch, &v, LONG_DL()), 1);
    ck_assert_int_eq(v, SIGUSR2);
    ck_assert_int_eq(tern_signal_wait(s, LONG_DL()), SIGUSR2);
    tern_signal_free(s);
    ck_assert_int_eq(tern_chan_try_recv(ch, &v), -EAGAIN);
    tern_chan_release(ch);
    return NULL;
}

static void *cancel_me(void *arg)
{
    return (void *)(intptr_t)tern_signal_wait(arg, 0);
}

SIG_TEST(deadline_and_cancel)
{
    int usr1 = SIGUSR1;
    tern_signal *s;
    ck_assert_int_eq(tern_signal_new(&usr1, 1, NULL, &s), 0);
    ck_assert_int_eq(tern_signal_wait(s, dl_ms(2)), -ETIMEDOUT);
    tern_task *t;
    ck_assert_int_eq(tern_spawn(cancel_me, s, &t), 0);
    TASK_WAIT_PARKED(t, TERN__W_SIGNAL);
    ck_assert_int_eq(tern_task_cancel(t), 0);
    void *r;
    ck_assert_int_eq(tern_join(t, &r), -ECANCELED);
    /* the arrival after the cancel is still counted for the next wait */
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    ck_assert_int_eq(tern_signal_wait(s, LONG_DL()), SIGUSR1);
    tern_signal_free(s);
    return NULL;
}

/* ---- the process's signal state ------------------------------------------------------
 */

static void program_handler(int sig)
{
    (void)sig;
}

SIG_TEST(disposition_restored)
{
    struct sigaction mine, cur;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = program_handler;
    sigemptyset(&mine.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR2, &mine, NULL), 0);
    int usr2 = SIGUSR2, pipe_sig = SIGPIPE;
    tern_signal *s1, *s2, *sp;
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &s1), 0);
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &s2), 0);
    sigaction(SIGUSR2, NULL, &cur);
    ck_assert_ptr_ne((void *)cur.sa_handler, (void *)program_handler);
    tern_signal_free(s1);
    sigaction(SIGUSR2, NULL, &cur);
    ck_assert_ptr_ne((void *)cur.sa_handler, (void *)program_handler); /* s2 has it */
    tern_signal_free(s2);
    sigaction(SIGUSR2, NULL, &cur);
    ck_assert_ptr_eq((void *)cur.sa_handler, (void *)program_handler);

    /* the runtime ignores SIGPIPE; a subscription takes it for a while */
    sigaction(SIGPIPE, NULL, &cur);
    ck_assert_ptr_eq((void *)cur.sa_handler, (void *)SIG_IGN);
    ck_assert_int_eq(tern_signal_new(&pipe_sig, 1, NULL, &sp), 0);
    ck_assert_int_eq(kill(getpid(), SIGPIPE), 0);
    ck_assert_int_eq(tern_signal_wait(sp, LONG_DL()), SIGPIPE);
    tern_signal_free(sp);
    sigaction(SIGPIPE, NULL, &cur);
    ck_assert_ptr_eq((void *)cur.sa_handler, (void *)SIG_IGN);
    return NULL;
}

/* The program blocks the signal in its thread before starting the runtime,
 * so every thread of the runtime inherits the block: the signal still
 * arrives (tern's signal thread unblocks it in itself). Afterwards the
 * program's mask is as it was: a kill stays pending. */
static void *blocked_main(void *arg)
{
    int usr2 = SIGUSR2;
    tern_signal *s;
    ck_assert_int_eq(tern_signal_new(&usr2, 1, NULL, &s), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    ck_assert_int_eq(tern_signal_wait(s, LONG_DL()), SIGUSR2);
    tern_signal_free(s);
    return NULL;
}

START_TEST(blocked_by_the_program)
{
    sigset_t usr2, old, pending;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &usr2, &old), 0);
    tern_runtime *rt = rt_make(2);
    if (!rt)
        return;
    ck_assert_int_eq(tern_block_on(rt, blocked_main, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    ck_assert_int_eq(sigpending(&pending), 0);
    ck_assert_int_eq(sigismember(&pending, SIGUSR2), 1);
    struct timespec zero = {0, 0};
    ck_assert_int_eq(sigtimedwait(&usr2, NULL, &zero), SIGUSR2);
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}
END_TEST

/* Beside the dump signal: the subscription sees the signal and the
 * runtime keeps tern's handler after it lets go; the runtime's free puts
 * the program's default back. */
static void *dump_main(void *arg)
{
    int usr1 = SIGUSR1;
    tern_signal *s;
    ck_assert_int_eq(tern_signal_new(&usr1, 1, NULL, &s), 0);
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    ck_assert_int_eq(tern_signal_wait(s, LONG_DL()), SIGUSR1);
    tern_signal_free(s);
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    ck_assert_ptr_ne((void *)cur.sa_handler, (void *)SIG_DFL);
    return NULL;
}

START_TEST(beside_the_dump_signal)
{
    block_test_signals();
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = 1;
    cfg.dump_signal = SIGUSR1;
    tern_runtime *rt = NULL;
    int r = tern_runtime_new(&cfg, &rt);
    if (r != 0 && backend_is("io_uring")) {
        test_skip("io_uring unavailable here (%s)", tern_strerror(r));
        return;
    }
    ck_assert_int_eq(r, 0);
    stderr_capture cap;
    char said[4096];
    stderr_capture_start(&cap);
    ck_assert_int_eq(tern_block_on(rt, dump_main, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    stderr_capture_stop(&cap, said, sizeof said);
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    ck_assert_ptr_eq((void *)cur.sa_handler, (void *)SIG_DFL);
}
END_TEST

static Suite *signal_suite(void)
{
    Suite *s = suite_create("signal");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, bad_arguments, 0, 2);
    tcase_add_loop_test(tc, every_subscriber_once, 0, 2);
    tcase_add_loop_test(tc, one_subscription_shared, 0, 2);
    tcase_add_loop_test(tc, to_a_channel, 0, 2);
    tcase_add_loop_test(tc, deadline_and_cancel, 0, 2);
    tcase_add_loop_test(tc, disposition_restored, 0, 2);
    tcase_add_test(tc, blocked_by_the_program);
    tcase_add_test(tc, beside_the_dump_signal);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(signal_suite());
}
