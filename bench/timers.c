/*
 * timers: a root task spawns K tasks; task i reads the clock, sleeps
 * 1 + x_i % MAX_MS ms (x_i the i-th output of splitmix64 seeded with 42, the
 * same sequence as every peer), reads the clock again. Timed from before the
 * root spawn until all K are joined. Extra key late_us = mean of (actual -
 * requested), each floored at 0, in µs. Check: K wake-ups, none early.
 * Usage: timers [--workers N] [K] [MAX_MS]; one op = one sleeper.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

static uint64_t splitmix64_next(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct state {
    uint64_t k;
    const uint64_t *ms;
    _Atomic uint64_t late_ns;
    _Atomic uint64_t woke;
    _Atomic uint64_t early;
    _Atomic uint64_t worst_early_ns; /* worst shortfall seen, for the message */
} state;

static state st;

static void *sleeper(void *arg)
{
    uint64_t want = (uint64_t)(uintptr_t)arg * 1000000ull;
    uint64_t t0 = bench_now_ns();
    int rc = tern_sleep(want);
    if (rc < 0)
        bench_die("tern_sleep", rc);
    uint64_t got = bench_now_ns() - t0;
    if (got < want) {
        atomic_fetch_add_explicit(&st.early, 1, memory_order_relaxed);
        uint64_t short_ns = want - got, cur = atomic_load(&st.worst_early_ns);
        while (short_ns > cur &&
               !atomic_compare_exchange_weak(&st.worst_early_ns, &cur, short_ns))
            ;
    } else {
        atomic_fetch_add_explicit(&st.late_ns, got - want, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&st.woke, 1, memory_order_relaxed);
    return NULL;
}

static void *spawner(void *arg)
{
    (void)arg;
    tern_task **h = malloc(st.k * sizeof *h);
    if (!h)
        bench_die("malloc", -ENOMEM);
    for (uint64_t i = 0; i < st.k; i++) {
        int rc = tern_spawn(sleeper, (void *)(uintptr_t)st.ms[i], &h[i]);
        if (rc < 0)
            bench_die("tern_spawn", rc);
    }
    for (uint64_t i = 0; i < st.k; i++) {
        int rc = tern_join(h[i], NULL);
        if (rc < 0)
            bench_die("tern_join", rc);
    }
    free(h);
    return NULL;
}

static void *root(void *arg)
{
    uint64_t *elapsed = arg;
    uint64_t start = bench_now_ns();
    tern_task *r;
    int rc = tern_spawn(spawner, NULL, &r);
    if (rc < 0)
        bench_die("spawn the root task", rc);
    rc = tern_join(r, NULL);
    if (rc < 0)
        bench_die("join the root task", rc);
    *elapsed = bench_now_ns() - start;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"K", "MAX_MS"};
    static const uint64_t defs[] = {100000, 50};
    static const uint64_t max[] = {UINT64_MAX / sizeof(void *), 1000ull * 3600 * 24};
    bench_args a;
    bench_parse(argc, argv, "timers", 2, names, defs, max, &a);

    uint64_t k = a.size[0], max_ms = a.size[1];
    uint64_t *ms = malloc(k * sizeof *ms);
    if (!ms)
        bench_die("malloc", -ENOMEM);
    uint64_t rng = 42, req_sum = 0;
    for (uint64_t i = 0; i < k; i++) {
        ms[i] = 1 + splitmix64_next(&rng) % max_ms;
        req_sum += ms[i];
    }
    st.k = k;
    st.ms = ms;

    uint64_t elapsed = 0;
    tern_runtime *rt = bench_runtime_new(a.workers);
    int rc = tern_block_on(rt, root, &elapsed, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);

    bench_check(atomic_load(&st.woke) == k, "every sleeper woke once");
    if (atomic_load(&st.early)) {
        fprintf(stderr,
                "error: verification failed: %llu of %llu sleepers woke early "
                "(worst by %llu ns)\n",
                (unsigned long long)atomic_load(&st.early), (unsigned long long)k,
                (unsigned long long)atomic_load(&st.worst_early_ns));
        return 1;
    }
    double late_us = (double)atomic_load(&st.late_ns) / (double)k / 1000.0;
    char extra[64];
    snprintf(extra, sizeof extra, " late_us=%.1f", late_us);
    printf("INFO timers requested_ms_sum=%llu\n", (unsigned long long)req_sum);
    bench_result("timers", k, elapsed, extra);
    free(ms);
    return 0;
}
