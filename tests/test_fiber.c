/*
 * Fibers and the stack pool: context switches (values, registers, FP
 * control state), migration between threads, deep recursion, guard pages
 * and the overflow report, the canary fallback, pool caches and scale.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rt/fiber.h"

#ifndef TERN_TEST_SCALE
#define TERN_TEST_SCALE 1
#endif
#if defined(TERN_ASAN) || defined(TERN_TSAN)
#define SANITIZED 1
#endif
#ifdef TERN_TSAN
void *__tsan_get_current_fiber(void);
#endif

#define STACK_SIZE (64 * 1024)

/* ---- helpers -------------------------------------------------------------- */

static tern__stack_pool *new_pool(size_t size, unsigned ncaches)
{
    tern__stack_pool *p = NULL;
    ck_assert_int_eq(tern__stack_pool_new(size, ncaches, &p), 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

static int maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    int n = 0, c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* The permissions of the mapping holding addr, e.g. "---p"; "" if none. */
static void maps_perms(const void *addr, char out[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    out[0] = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && (uintptr_t)addr >= lo &&
            (uintptr_t)addr < hi) {
            memcpy(out, perms, 5);
            break;
        }
    }
    fclose(f);
}

/* 1 when this kernel has MADV_GUARD_INSTALL (Linux 6.13+). */
static int kernel_has_guard_madvise(void)
{
    char *p =
        mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(p != MAP_FAILED);
    int ok = madvise(p, 4096, 102 /* MADV_GUARD_INSTALL */) == 0;
    munmap(p, 8192);
    return ok;
}

/* Runs fn in a child with stderr captured; returns the wait status. */
static int run_child(void (*fn)(void *), void *arg, char *err, size_t errlen)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < errlen && (r = read(fds[0], err + n, errlen - 1 - n)) > 0)
        n += (size_t)r;
    err[n] = 0;
    close(fds[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* Overwrites the callee-saved registers, so a switch that forgot one
 * would hand the other context garbage. */
static inline void trash_callee_saved(void)
{
#if defined(__x86_64__)
    __asm__ volatile("movq $-1, %%rbx\n movq $-1, %%r12\n movq $-1, %%r13\n"
                     "movq $-1, %%r14\n movq $-1, %%r15\n" ::
                         : "rbx", "r12", "r13", "r14", "r15");
#elif defined(__aarch64__)
    __asm__ volatile("mov x19, #-1\n mov x20, #-1\n mov x21, #-1\n mov x22, #-1\n"
                     "mov x23, #-1\n mov x24, #-1\n mov x25, #-1\n mov x26, #-1\n"
                     "mov x27, #-1\n mov x28, #-1\n fmov d8, xzr\n fmov d9, xzr\n"
                     "fmov d10, xzr\n fmov d11, xzr\n fmov d12, xzr\n fmov d13, xzr\n"
                     "fmov d14, xzr\n fmov d15, xzr\n" ::
                         : "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
                           "x28", "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15");
#endif
}

/* ---- ping-pong ------------------------------------------------------------ */

static tern__fiber pp_main, pp_fib;
static uint64_t pp_in, pp_out; /* plain memory: the switch is a call barrier */
static int pp_stop;

static void pp_entry(void *arg)
{
    ck_assert_ptr_eq(arg, &pp_fib);
    /* The stack must be 16-byte aligned on entry, as in any call. */
    ck_assert_uint_eq((uintptr_t)__builtin_frame_address(0) & 15, 0);
#ifdef TERN_TSAN
    /* TSan follows the switch: this fiber runs as its own TSan fiber. */
    ck_assert_ptr_nonnull(pp_fib.tsan);
    ck_assert_ptr_eq(__tsan_get_current_fiber(), pp_fib.tsan);
#endif
    while (!pp_stop) {
        pp_out = pp_in * 3 + 1;
        trash_callee_saved();
        tern__fiber_switch(&pp_fib, &pp_main, 0);
    }
    tern__fiber_switch(&pp_fib, &pp_main, 1);
}

START_TEST(test_pingpong)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__stack *s = tern__stack_get(pool, 0);
    ck_assert_ptr_nonnull(s);
    tern__fiber_init_thread(&pp_main);
    memset(&pp_fib, 0, sizeof(pp_fib));
    tern__fiber_init(&pp_fib, s, pp_entry, &pp_fib);
    pp_stop = 0;

    /* Values live in callee-saved registers across the switch. */
    uint64_t a = 1, b = 2, c = 3, d = 4, e = 5;
    double x = 0.5, y = 1.25;
    const long n = 1000000 / TERN_TEST_SCALE;
    for (long i = 0; i < n; i++) {
        pp_in = (uint64_t)i;
        tern__fiber_switch(&pp_main, &pp_fib, 0);
        ck_assert_uint_eq(pp_out, (uint64_t)i * 3 + 1);
        a += pp_out, b ^= a, c += b >> 3, d += c, e ^= d << 1;
        x += 1.0, y *= 1.0000001;
    }
    /* Same arithmetic without switches. */
    uint64_t a2 = 1, b2 = 2, c2 = 3, d2 = 4, e2 = 5;
    double x2 = 0.5, y2 = 1.25;
    for (long i = 0; i < n; i++) {
        uint64_t out = (uint64_t)i * 3 + 1;
        a2 += out, b2 ^= a2, c2 += b2 >> 3, d2 += c2, e2 ^= d2 << 1;
        x2 += 1.0, y2 *= 1.0000001;
    }
    ck_assert_uint_eq(a, a2);
    ck_assert_uint_eq(b, b2);
    ck_assert_uint_eq(c, c2);
    ck_assert_uint_eq(d, d2);
    ck_assert_uint_eq(e, e2);
    ck_assert(x == x2 && y == y2);

    pp_stop = 1;
    tern__fiber_switch(&pp_main, &pp_fib, 0);
    tern__fiber_destroy(&pp_fib);
    tern__stack_put(pool, 0, s);
    tern__stack_pool_free(pool);
}
END_TEST

/* ---- FP control state is per context ----------------------------------------- */

static tern__fiber fp_main, fp_fib;
static int fp_seen_in_fiber;

static void fp_entry(void *arg)
{
    fesetround(FE_UPWARD);
    tern__fiber_switch(&fp_fib, &fp_main, 0);
    fp_seen_in_fiber = fegetround();
    tern__fiber_switch(&fp_fib, &fp_main, 1);
}

START_TEST(test_fp_state)
{
#if !defined(__x86_64__)
    return; /* aarch64 keeps FPCR per thread, not per fiber */
#endif
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__stack *s = tern__stack_get(pool, 0);
    tern__fiber_init_thread(&fp_main);
    memset(&fp_fib, 0, sizeof(fp_fib));
    tern__fiber_init(&fp_fib, s, fp_entry, NULL);
    ck_assert_int_eq(fegetround(), FE_TONEAREST);
    tern__fiber_switch(&fp_main, &fp_fib, 0);
    ck_assert_int_eq(fegetround(), FE_TONEAREST); /* the fiber's change stayed there */
    fesetround(FE_TOWARDZERO);
    tern__fiber_switch(&fp_main, &fp_fib, 0);
    ck_assert_int_eq(fp_seen_in_fiber, FE_UPWARD);
    ck_assert_int_eq(fegetround(), FE_TOWARDZERO);
    fesetround(FE_TONEAREST);
    tern__fiber_destroy(&fp_fib);
    tern__stack_put(pool, 0, s);
    tern__stack_pool_free(pool);
}
END_TEST

/* ---- deep recursion within the stack ------------------------------------------ */

static tern__fiber dr_main, dr_fib;
static uintptr_t dr_lowest;
static long dr_result;

__attribute__((noinline)) static long recurse(int depth)
{
    volatile char buf[1024];
    buf[0] = (char)depth;
    buf[sizeof(buf) - 1] = 1;
    if ((uintptr_t)buf < dr_lowest)
        dr_lowest = (uintptr_t)buf;
    if (depth == 0)
        return buf[sizeof(buf) - 1];
    return recurse(depth - 1) + buf[sizeof(buf) - 1]; /* not a tail call */
}

static void dr_entry(void *arg)
{
    dr_result = recurse((int)(intptr_t)arg);
    tern__fiber_switch(&dr_fib, &dr_main, 1);
}

START_TEST(test_deep_recursion)
{
    const size_t size = 256 * 1024;
    tern__stack_pool *pool = new_pool(size, 1);
    tern__stack *s = tern__stack_get(pool, 0);
    tern__fiber_init_thread(&dr_main);
    memset(&dr_fib, 0, sizeof(dr_fib));
    int depth = (int)(size / 2 / 1280); /* about half the stack, with frame overhead */
    dr_lowest = UINTPTR_MAX;
    tern__fiber_init(&dr_fib, s, dr_entry, (void *)(intptr_t)depth);
    tern__fiber_switch(&dr_main, &dr_fib, 0);
    ck_assert_int_eq(dr_result, depth + 1);
#ifndef TERN_ASAN /* ASan may put the buffers on its fake stack */
    ck_assert_uint_ge(dr_lowest, (uintptr_t)s->base + 4096);
    ck_assert_uint_lt(dr_lowest, (uintptr_t)s->base + size * 2 / 3);
#endif
    tern__fiber_destroy(&dr_fib);
    tern__stack_put(pool, 0, s);
    tern__stack_pool_free(pool);
}
END_TEST

/* ---- migration between threads --------------------------------------------- */

/* One fiber, resumed alternately by two threads. Each resume runs one step;
 * the fiber switches back to whichever thread resumed it (mig_home). The
 * hand-off between threads is a release/acquire on mig_turn, as the
 * scheduler's task state word will be. TSan must see no race on the plain
 * variables, which live both in globals and on the fiber's stack. */
static tern__fiber mig_fib;
static tern__fiber *mig_home;
static tern__stack *mig_stack;
static _Atomic int mig_turn; /* 0 or 1: whose turn; 2: finished */
static long mig_counter, mig_local_total, mig_steps;
static long mig_ran_on[2];
static int mig_cur_thread, mig_finished;

static void mig_entry(void *arg)
{
    long local = 0; /* on the fiber stack */
    for (long i = 0; i < mig_steps; i++) {
        local++;
        mig_counter++;
        mig_ran_on[mig_cur_thread]++;
        tern__fiber_switch(&mig_fib, mig_home, 0);
    }
    mig_local_total = local;
    mig_finished = 1;
    tern__fiber_switch(&mig_fib, mig_home, 1);
}

static void *mig_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    tern__fiber self;
    tern__fiber_init_thread(&self);
    ck_assert_int_eq(tern__fiber_thread_init(), 0);
    for (;;) {
        int t;
        while ((t = atomic_load_explicit(&mig_turn, memory_order_acquire)) != me &&
               t != 2)
            sched_yield();
        if (t == 2)
            break;
        mig_home = &self;
        mig_cur_thread = me;
        tern__fiber_set_current(mig_stack, 1);
        tern__fiber_switch(&self, &mig_fib, 0);
        tern__fiber_set_current(NULL, 0);
        /* Publishes the fiber's saved context and everything it wrote. */
        atomic_store_explicit(&mig_turn, mig_finished ? 2 : !me, memory_order_release);
    }
    tern__fiber_thread_exit();
    return NULL;
}

START_TEST(test_migrate)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    mig_stack = tern__stack_get(pool, 0);
    memset(&mig_fib, 0, sizeof(mig_fib));
    tern__fiber_init(&mig_fib, mig_stack, mig_entry, NULL);
    mig_steps = 100000 / TERN_TEST_SCALE;
    mig_counter = mig_local_total = 0;
    mig_ran_on[0] = mig_ran_on[1] = 0;
    mig_finished = 0;
    atomic_store(&mig_turn, 0);
    pthread_t a, b;
    ck_assert_int_eq(pthread_create(&a, NULL, mig_thread, (void *)0), 0);
    ck_assert_int_eq(pthread_create(&b, NULL, mig_thread, (void *)1), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    ck_assert_int_eq(mig_counter, mig_steps);
    ck_assert_int_eq(mig_local_total, mig_steps);
    /* Strict alternation: half the steps on each thread. */
    ck_assert_int_eq(mig_ran_on[0], (mig_steps + 1) / 2);
    ck_assert_int_eq(mig_ran_on[1], mig_steps / 2);
    tern__fiber_destroy(&mig_fib);
    tern__stack_put(pool, 0, mig_stack);
    tern__stack_pool_free(pool);
}
END_TEST

/* ---- many fibers, stacks and fiber structs reused ------------------------------ */

#define NFIB 64
static tern__fiber mf_main, mf_fib[NFIB];
static long mf_steps[NFIB];

static void mf_entry(void *arg)
{
    int i = (int)(intptr_t)arg;
    for (int k = 0; k < 20; k++) {
        mf_steps[i]++;
        tern__fiber_switch(&mf_fib[i], &mf_main, 0);
    }
    tern__fiber_switch(&mf_fib[i], &mf_main, 1);
}

START_TEST(test_many_fibers_reused)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__fiber_init_thread(&mf_main);
    memset(mf_fib, 0, sizeof(mf_fib));
    memset(mf_steps, 0, sizeof(mf_steps));
    tern__stack *st[NFIB];
    for (int gen = 0; gen < 5; gen++) {
        for (int i = 0; i < NFIB; i++) {
            st[i] = tern__stack_get(pool, 0);
            ck_assert_ptr_nonnull(st[i]);
            tern__fiber_init(&mf_fib[i], st[i], mf_entry, (void *)(intptr_t)i);
        }
        for (int k = 0; k < 21; k++) /* 20 steps, then the last switch */
            for (int i = 0; i < NFIB; i++)
                tern__fiber_switch(&mf_main, &mf_fib[i], 0);
        for (int i = 0; i < NFIB; i++)
            tern__stack_put(pool, 0, st[i]);
    }
    for (int i = 0; i < NFIB; i++) {
        ck_assert_int_eq(mf_steps[i], 5 * 20);
        tern__fiber_destroy(&mf_fib[i]);
    }
    /* All generations reused the same 64 stacks. */
    ck_assert_uint_le(tern__stack_pool_carved(pool), 2 * NFIB);
    tern__stack_pool_free(pool);
}
END_TEST

/* ---- stack overflow ----------------------------------------------------------- */

static tern__fiber of_main, of_fib;

__attribute__((noinline)) static long recurse_forever(long n)
{
    volatile char buf[512];
    buf[0] = (char)n;
    if (n > (1L << 40)) /* never: keeps the compiler from calling this infinite */
        return 0;
    return recurse_forever(n + 1) + buf[0];
}

static void of_entry(void *arg)
{
    recurse_forever(0);
    tern__fiber_switch(&of_fib, &of_main, 1);
}

struct of_args {
    int guard;
    uint64_t task_id;
};

static void overflow_child(void *p)
{
    struct of_args *a = p;
    if (tern__fiber_thread_init() != 0)
        _exit(3);
    tern__stack_pool *pool;
    if (tern__stack_pool_new(STACK_SIZE, 1, &pool) != 0)
        _exit(4);
    tern__stack_pool_set_guard(pool, a->guard);
    tern__stack *s = tern__stack_get(pool, 0);
    if (!s || !s->guarded)
        _exit(5);
    tern__fiber_init_thread(&of_main);
    tern__fiber_init(&of_fib, s, of_entry, NULL);
    tern__fiber_set_current(s, a->task_id);
    tern__fiber_switch(&of_main, &of_fib, 0);
    _exit(6); /* not reached: the overflow aborts */
}

static void check_overflow(int guard, uint64_t id)
{
    struct of_args a = {guard, id};
    char err[4096], want[128];
    int st = run_child(overflow_child, &a, err, sizeof(err));
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
                  "child status %#x, stderr: %s", st, err);
    snprintf(want, sizeof(want), "tern: task %llu overflowed its stack (guard page at 0x",
             (unsigned long long)id);
    ck_assert_msg(strstr(err, want) != NULL, "stderr: %s", err);
}

START_TEST(test_overflow_madvise_guard)
{
    check_overflow(TERN__GUARD_AUTO, 4242);
}
END_TEST

START_TEST(test_overflow_mprotect_guard)
{
    check_overflow(TERN__GUARD_MPROTECT, 18446744073709551615ull);
}
END_TEST

/* A fault that is not a guard-page hit still behaves as a plain crash (or
 * goes to the handler that was there before, e.g. ASan's). */
static void wild_child(void *p)
{
    tern__fiber_thread_init();
    tern__stack_pool *pool;
    tern__stack_pool_new(STACK_SIZE, 1, &pool);
    tern__stack *s = tern__stack_get(pool, 0);
    tern__fiber_set_current(s, 7);
    volatile uintptr_t bad = 16; /* opaque to the compiler */
    *(volatile int *)bad = 1;
    _exit(0);
}

START_TEST(test_wild_fault_not_reported)
{
    char err[8192];
    int st = run_child(wild_child, NULL, err, sizeof(err));
#ifdef SANITIZED
    /* The sanitizer's own SIGSEGV handler reports it; it exits or aborts
     * depending on its options. */
    ck_assert_msg(WIFSIGNALED(st) || WEXITSTATUS(st) != 0, "status %#x", st);
    ck_assert_msg(strstr(err, "Sanitizer") != NULL, "stderr: %s", err);
#else
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "status %#x", st);
#endif
    ck_assert_msg(strstr(err, "overflowed") == NULL, "stderr: %s", err);
}
END_TEST

START_TEST(test_thread_init_twice)
{
    ck_assert_int_eq(tern__fiber_thread_init(), 0);
    ck_assert_int_eq(tern__fiber_thread_init(), 0);
    stack_t ss;
    ck_assert_int_eq(sigaltstack(NULL, &ss), 0);
    ck_assert(!(ss.ss_flags & SS_DISABLE));
    tern__fiber_thread_exit();
    tern__fiber_thread_exit();
}
END_TEST

/* ---- guards: mprotect and canary ------------------------------------------------ */

START_TEST(test_mprotect_guard)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__stack_pool_set_guard(pool, TERN__GUARD_MPROTECT);
    tern__stack *s = tern__stack_get(pool, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->guarded, 1);
    char perms[5];
    maps_perms(s->base, perms);
    ck_assert_str_eq(perms, "---p");
    maps_perms(s->base + 4096, perms);
    ck_assert_str_eq(perms, "rw-p");
    ck_assert_int_eq(tern__stack_check(s), 0);
    tern__stack_put(pool, 0, s);
    tern__stack_pool_free(pool);
}
END_TEST

static tern__fiber cn_main, cn_fib;
static void cn_entry(void *arg)
{
    *(long *)arg = recurse(20);
    tern__fiber_switch(&cn_fib, &cn_main, 1);
}

START_TEST(test_canary)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__stack_pool_set_guard(pool, TERN__GUARD_CANARY);
    tern__stack *s = tern__stack_get(pool, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->guarded, 0);
    ck_assert_int_eq(tern__stack_check(s), 0);

    /* A fiber that stays within its stack leaves the canary alone. */
    long r = 0;
    tern__fiber_init_thread(&cn_main);
    memset(&cn_fib, 0, sizeof(cn_fib));
    tern__fiber_init(&cn_fib, s, cn_entry, &r);
    tern__fiber_switch(&cn_main, &cn_fib, 0);
    ck_assert_int_eq(r, 21);
    tern__fiber_destroy(&cn_fib);
    ck_assert_int_eq(tern__stack_check(s), 0);

    /* An overflow that reached the lowest usable bytes is caught. */
    volatile char *low = s->base + 4096;
    low[8] ^= 0x55;
    ck_assert_int_eq(tern__stack_check(s), -EFAULT);
    low[8] ^= 0x55;
    ck_assert_int_eq(tern__stack_check(s), 0);
    tern__stack_put(pool, 0, s);
    tern__stack_pool_free(pool);
}
END_TEST

static void canary_abort_child(void *p)
{
    tern__stack_pool *pool;
    tern__stack_pool_new(STACK_SIZE, 1, &pool);
    tern__stack_pool_set_guard(pool, TERN__GUARD_CANARY);
    tern__stack *s = tern__stack_get(pool, 0);
    if (tern__stack_check(s) == 0)
        s->base[4096] ^= 1;
    if (tern__stack_check(s) != 0)
        tern__stack_overflow_abort(s, 99);
    _exit(0);
}

START_TEST(test_canary_report)
{
    char err[4096];
    int st = run_child(canary_abort_child, NULL, err, sizeof(err));
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %#x", st);
    ck_assert_msg(strstr(err, "tern: task 99 overflowed its stack") != NULL, "stderr: %s",
                  err);
}
END_TEST

/* ---- pool ---------------------------------------------------------------------- */

START_TEST(test_pool_bad_args)
{
    tern__stack_pool *p = (tern__stack_pool *)1;
    ck_assert_int_eq(tern__stack_pool_new(STACK_SIZE, 1, NULL), -EINVAL);
    ck_assert_int_eq(tern__stack_pool_new(0, 1, &p), -EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(tern__stack_pool_new(TERN__STACK_MIN - 1, 1, &p), -EINVAL);
    ck_assert_int_eq(tern__stack_pool_new(TERN__STACK_MAX + 1, 1, &p), -EINVAL);
    ck_assert_int_eq(tern__stack_pool_new(STACK_SIZE, 0, &p), -EINVAL);
    ck_assert_int_eq(tern__stack_pool_new(STACK_SIZE, TERN__STACK_MAX_CACHES + 1, &p),
                     -EINVAL);
    ck_assert_ptr_null(p);
    tern__stack_pool_free(NULL);
    /* Sizes round up to pages; the guard is part of the size. */
    ck_assert_int_eq(tern__stack_pool_new(TERN__STACK_MIN + 1, 1, &p), 0);
    tern__stack *s = tern__stack_get(p, 0);
    ck_assert_uint_eq(s->size, TERN__STACK_MIN + 4096);
    ck_assert_uint_eq((uintptr_t)s->base % 4096, 0);
    tern__stack_put(p, 0, s);
    tern__stack_pool_free(p);
}
END_TEST

START_TEST(test_pool_reuse)
{
    tern__stack_pool *pool = new_pool(STACK_SIZE, 2);
    tern__stack *s = tern__stack_get(pool, 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->size, STACK_SIZE);
    ck_assert_int_eq(s->guarded, 1);
    memset(s->base + 4096, 0xab, STACK_SIZE - 4096); /* all usable bytes are writable */
    tern__stack_put(pool, 0, s);
    ck_assert_ptr_eq(tern__stack_get(pool, 0), s); /* the hottest comes back first */
    uint64_t carved = tern__stack_pool_carved(pool);
    tern__stack_put(pool, 0, s);
    for (int i = 0; i < 1000; i++) {
        tern__stack *t = tern__stack_get(pool, 0);
        ck_assert_ptr_eq(t, s);
        tern__stack_put(pool, 0, t);
    }
    ck_assert_uint_eq(tern__stack_pool_carved(pool), carved);
    /* A thread without a cache uses the global list. */
    tern__stack *g = tern__stack_get(pool, TERN__STACK_NO_CACHE);
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_ne(g, s);
    tern__stack_put(pool, TERN__STACK_NO_CACHE, g);
    tern__stack_pool_free(pool);
}
END_TEST

START_TEST(test_pool_spill_refill)
{
    enum { N = 200 };
    tern__stack_pool *pool = new_pool(STACK_SIZE, 2);
    tern__stack *st[N];
    for (int i = 0; i < N; i++) {
        st[i] = tern__stack_get(pool, 0);
        ck_assert_ptr_nonnull(st[i]);
        for (int j = 0; j < i; j++)
            ck_assert_ptr_ne(st[i], st[j]);
    }
    uint64_t carved = tern__stack_pool_carved(pool);
    ck_assert_uint_ge(carved, N);
    ck_assert_uint_lt(carved, N + 64); /* refills come in batches, not regions */
    for (int i = 0; i < N; i++) {
        tern__stack_put(pool, 0, st[i]);
        ck_assert_uint_le(tern__stack_pool_cached(pool, 0), 64);
    }
    unsigned kept = tern__stack_pool_cached(pool, 0);
    ck_assert_uint_ge(kept, 32);
    /* The last stack put is still in the cache (the colder half spilled). */
    tern__stack *hot = tern__stack_get(pool, 0);
    ck_assert_ptr_eq(hot, st[N - 1]);
    tern__stack_put(pool, 0, hot);

    /* Everything spilled is reusable by another worker without carving. */
    uint64_t spilled = carved - kept;
    tern__stack **other = malloc(sizeof(*other) * (spilled + 1));
    for (uint64_t i = 0; i < spilled; i++) {
        other[i] = tern__stack_get(pool, 1);
        ck_assert_ptr_nonnull(other[i]);
    }
    ck_assert_uint_eq(tern__stack_pool_carved(pool), carved);
    other[spilled] = tern__stack_get(pool, 1);
    ck_assert_ptr_nonnull(other[spilled]);
    ck_assert_uint_gt(tern__stack_pool_carved(pool), carved);
    for (uint64_t i = 0; i <= spilled; i++)
        tern__stack_put(pool, 1, other[i]);
    ck_assert_uint_le(tern__stack_pool_cached(pool, 1), 64);
    free(other);
    tern__stack_pool_free(pool);
}
END_TEST

START_TEST(test_pool_million)
{
    const long n = 1000000 / TERN_TEST_SCALE;
    tern__stack_pool *pool = new_pool(STACK_SIZE, 1);
    tern__stack **st = malloc(sizeof(*st) * (size_t)n);
    ck_assert_ptr_nonnull(st);
    int before = maps_lines();
    for (long i = 0; i < n; i++) {
        st[i] = tern__stack_get(pool, 0);
        ck_assert_ptr_nonnull(st[i]);
    }
    int during = maps_lines();
    ck_assert_uint_ge(tern__stack_pool_carved(pool), (uint64_t)n);
    /* About one mapping per 1024 stacks, never one per stack. */
    ck_assert_uint_le(tern__stack_pool_regions(pool), (uint64_t)n / 1024 + 8);
    int guarded = 0;
    for (long i = 0; i < n; i++)
        guarded += st[i]->guarded;
    if (kernel_has_guard_madvise()) {
        /* Every stack guarded, at no mapping cost. */
        ck_assert_msg(during - before < 2000 && during < 10000, "maps %d -> %d", before,
                      during);
        ck_assert_int_eq(guarded, n);
    } else {
        /* mprotect guards up to the budget (two mappings each), then canaries. */
        ck_assert_msg(during < 65530 / 2, "maps %d -> %d", before, during);
        ck_assert_int_ge(guarded, n < 8000 ? n : 8000);
    }
    /* The stacks are usable: touch the top and bottom of a few. */
    for (long i = 0; i < n; i += n / 16) {
        st[i]->base[4096] = 1;
        st[i]->base[st[i]->size - 1] = 1;
    }
    char *sample[16];
    for (int k = 0; k < 16; k++)
        sample[k] = st[(n - 1) / 15 * k]->base;
    for (long i = 0; i < n; i++)
        tern__stack_put(pool, 0, st[i]);
    tern__stack_pool_free(pool);
    /* Everything is unmapped again (mincore fails with ENOMEM on a hole;
     * the maps count is no measure here, sanitizer runtimes map too). */
    for (int k = 0; k < 16; k++) {
        unsigned char vec;
        ck_assert_int_eq(mincore(sample[k], 4096, &vec), -1);
        ck_assert_int_eq(errno, ENOMEM);
    }
    free(st);
}
END_TEST

/* Running out of address space: get returns NULL, nothing crashes, and the
 * pool frees cleanly. */
static void enomem_child(void *p)
{
    tern__stack_pool *pool;
    if (tern__stack_pool_new(STACK_SIZE, 1, &pool) != 0)
        _exit(2);
    static tern__stack *st[100000];
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1)
        _exit(3);
    fclose(f);
    struct rlimit rl = {.rlim_cur = pages * 4096 + (32ul << 20),
                        .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        _exit(4);
    int n = 0;
    while (n < 100000 && (st[n] = tern__stack_get(pool, 0)) != NULL)
        n++;
    if (n == 0 || n == 100000)
        _exit(5);
    if (tern__stack_get(pool, TERN__STACK_NO_CACHE) != NULL)
        _exit(6);
    for (int i = 0; i < n; i++)
        tern__stack_put(pool, 0, st[i]);
    /* Freed stacks are handed out again even now. */
    tern__stack *again = tern__stack_get(pool, 0);
    if (!again)
        _exit(7);
    tern__stack_put(pool, 0, again);
    tern__stack_pool_free(pool);
    _exit(0);
}

START_TEST(test_pool_enomem)
{
#ifdef SANITIZED
    return; /* the sanitizers' shadow memory does not live under RLIMIT_AS */
#endif
    char err[1024];
    int st = run_child(enomem_child, NULL, err, sizeof(err));
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x: %s", st, err);
}
END_TEST

/* ---- suite ---------------------------------------------------------------------- */

static Suite *fiber_suite(void)
{
    Suite *s = suite_create("fiber");
    TCase *tc = tcase_create("switch");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pingpong);
    tcase_add_test(tc, test_fp_state);
    tcase_add_test(tc, test_deep_recursion);
    tcase_add_test(tc, test_migrate);
    tcase_add_test(tc, test_many_fibers_reused);
    suite_add_tcase(s, tc);

    tc = tcase_create("overflow");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_overflow_madvise_guard);
    tcase_add_test(tc, test_overflow_mprotect_guard);
    tcase_add_test(tc, test_wild_fault_not_reported);
    tcase_add_test(tc, test_thread_init_twice);
    tcase_add_test(tc, test_mprotect_guard);
    tcase_add_test(tc, test_canary);
    tcase_add_test(tc, test_canary_report);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_pool_bad_args);
    tcase_add_test(tc, test_pool_reuse);
    tcase_add_test(tc, test_pool_spill_refill);
    tcase_add_test(tc, test_pool_million);
    tcase_add_test(tc, test_pool_enomem);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fiber_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
