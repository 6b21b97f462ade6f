/* Helpers shared by tern's benchmark programs; see common.h. */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(const char *workload, int nsizes, const char *const *names,
                  const uint64_t *defaults, const char *msg)
{
    if (msg)
        fprintf(stderr, "error: %s\n", msg);
    fprintf(stderr, "usage: %s [--workers N]", workload);
    for (int i = 0; i < nsizes; i++)
        fprintf(stderr, " [%s]", names[i]);
    fprintf(stderr, "\n  defaults: --workers %u", BENCH_DEFAULT_WORKERS);
    for (int i = 0; i < nsizes; i++)
        fprintf(stderr, " %s=%llu", names[i], (unsigned long long)defaults[i]);
    fprintf(stderr, "\n");
    exit(2);
}

/* Strict decimal parse of a positive integer; 0 on any error. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end != '\0' || v == 0)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

void bench_parse(int argc, char **argv, const char *workload, int nsizes,
                 const char *const *names, const uint64_t *defaults, const uint64_t *max,
                 bench_args *out)
{
    char msg[256];
    int npos = 0;

    if (nsizes > BENCH_MAX_SIZES)
        nsizes = BENCH_MAX_SIZES;
    memset(out, 0, sizeof *out);
    out->workers = BENCH_DEFAULT_WORKERS;
    for (int i = 0; i < nsizes; i++)
        out->size[i] = defaults[i];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *wv = NULL;
        if (strcmp(a, "--workers") == 0) {
            if (i + 1 >= argc)
                usage(workload, nsizes, names, defaults, "--workers needs a value");
            wv = argv[++i];
        } else if (strncmp(a, "--workers=", 10) == 0) {
            wv = a + 10;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(workload, nsizes, names, defaults, NULL);
        }
        if (wv) {
            uint64_t w;
            if (!parse_u64(wv, &w) || w > 1024) {
                snprintf(msg, sizeof msg, "bad --workers %.64s (want 1..1024)", wv);
                usage(workload, nsizes, names, defaults, msg);
            }
            out->workers = (unsigned)w;
            continue;
        }
        if (npos >= nsizes) {
            snprintf(msg, sizeof msg, "unexpected argument: %.64s", a);
            usage(workload, nsizes, names, defaults, msg);
        }
        uint64_t v;
        if (!parse_u64(a, &v) || (max && v > max[npos])) {
            if (max)
                snprintf(msg, sizeof msg, "bad argument %d (%s): %.64s (want 1..%llu)",
                         npos + 1, names[npos], a, (unsigned long long)max[npos]);
            else
                snprintf(msg, sizeof msg, "bad argument %d (%s): %.64s", npos + 1,
                         names[npos], a);
            usage(workload, nsizes, names, defaults, msg);
        }
        out->size[npos++] = v;
    }
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bench_vm_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) {
        perror("error: /proc/self/status");
        exit(1);
    }
    char line[256];
    unsigned long long kb = 0;
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            found = sscanf(line + 6, "%llu", &kb) == 1;
            break;
        }
    }
    fclose(f);
    if (!found) {
        fprintf(stderr, "error: no VmRSS in /proc/self/status\n");
        exit(1);
    }
    return (uint64_t)kb * 1024;
}

void bench_die(const char *what, int err)
{
    fprintf(stderr, "error: %s: %s\n", what, tern_strerror(err));
    exit(1);
}

tern_runtime *bench_runtime_new(unsigned workers)
{
    tern_config cfg;
    tern_config_init(&cfg);
    cfg.workers = workers;
    tern_runtime *rt = NULL;
    int rc = tern_runtime_new(&cfg, &rt);
    if (rc < 0)
        bench_die("tern_runtime_new", rc);
    return rt;
}

void bench_print_metrics(tern_runtime *rt)
{
    tern_metrics m;
    if (tern_runtime_metrics(rt, &m) < 0)
        return;
    const tern_worker_stats *s = &m.total;
    printf(
        "INFO metrics backend=%s tasks_run=%llu steals=%llu stolen_tasks=%llu parks=%llu "
        "wakes=%llu inject_pulls=%llu lifo_hits=%llu local_hits=%llu budget_yields=%llu "
        "handles_run=%llu timers_fired=%llu busy_ms=%.1f io_submitted=%llu "
        "io_completed=%llu stalls=%llu direct_switches=%llu",
        m.backend, (unsigned long long)s->tasks_run, (unsigned long long)s->steals,
        (unsigned long long)s->stolen_tasks, (unsigned long long)s->parks,
        (unsigned long long)s->wakes, (unsigned long long)s->inject_pulls,
        (unsigned long long)s->lifo_hits, (unsigned long long)s->local_hits,
        (unsigned long long)s->budget_yields, (unsigned long long)s->handles_run,
        (unsigned long long)s->timers_fired, (double)s->busy_ns / 1e6,
        (unsigned long long)s->io_submitted, (unsigned long long)s->io_completed,
        (unsigned long long)m.stalls, (unsigned long long)s->direct_switches);
    uint64_t sampled = 0;
    for (int b = 0; b < TERN_POLL_BUCKETS; b++)
        sampled += m.poll_hist[b];
    if (sampled) { /* the bucket holding the median and the 99th sampled poll */
        uint64_t seen = 0;
        int p50 = -1, p99 = -1;
        for (int b = 0; b < TERN_POLL_BUCKETS; b++) {
            seen += m.poll_hist[b];
            if (p50 < 0 && seen * 2 >= sampled)
                p50 = b;
            if (p99 < 0 && seen * 100 >= sampled * 99)
                p99 = b;
        }
        printf(" polls_sampled=%llu poll_p50_lt_us=%u poll_p99_lt_us=%u",
               (unsigned long long)sampled, 1u << p50, 1u << p99);
    }
    printf("\n");
    fflush(stdout);
}

void bench_runtime_free(tern_runtime *rt)
{
    bench_print_metrics(rt);
    int rc = tern_runtime_free(rt);
    if (rc < 0)
        bench_die("tern_runtime_free", rc);
}

typedef struct root_arg {
    tern_task_fn fn;
    void *arg;
    uint64_t elapsed_ns;
} root_arg;

static void *timed_root(void *arg)
{
    root_arg *r = arg;
    uint64_t start = bench_now_ns();
    tern_task *t;
    int rc = tern_spawn(r->fn, r->arg, &t);
    if (rc < 0)
        bench_die("spawn the root task", rc);
    rc = tern_join(t, NULL);
    if (rc < 0)
        bench_die("join the root task", rc);
    r->elapsed_ns = bench_now_ns() - start;
    return NULL;
}

uint64_t bench_run_root(unsigned workers, tern_task_fn fn, void *arg)
{
    root_arg r = {.fn = fn, .arg = arg};
    tern_runtime *rt = bench_runtime_new(workers);
    int rc = tern_block_on(rt, timed_root, &r, NULL);
    if (rc < 0)
        bench_die("tern_block_on", rc);
    bench_runtime_free(rt);
    return r.elapsed_ns;
}

void bench_spawn_join(uint64_t n, tern_task_fn fn, void *arg)
{
    tern_task **h = malloc(n * sizeof *h);
    if (!h)
        bench_die("malloc", -ENOMEM);
    for (uint64_t i = 0; i < n; i++) {
        int rc = tern_spawn(fn, arg, &h[i]);
        if (rc < 0)
            bench_die("tern_spawn", rc);
    }
    for (uint64_t i = 0; i < n; i++) {
        int rc = tern_join(h[i], NULL);
        if (rc < 0)
            bench_die("tern_join", rc);
    }
    free(h);
}

void bench_check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "error: verification failed: %s\n", what);
        exit(1);
    }
}

void bench_result(const char *workload, uint64_t n, uint64_t elapsed_ns,
                  const char *extra)
{
    double secs = (double)elapsed_ns / 1e9;
    if (secs <= 0)
        secs = 1e-9; /* a clock that did not move: avoid dividing by zero */
    printf("RESULT workload=%s runtime=tern n=%llu secs=%.6f per_op_ns=%.2f "
           "ops_per_s=%.0f%s\n",
           workload, (unsigned long long)n, secs, secs * 1e9 / (double)n,
           (double)n / secs, extra ? extra : "");
    fflush(stdout);
}
