/*
 * Helpers shared by tern's benchmark programs (see bench-contract.md):
 * argument parsing, the monotonic clock, VmRSS, checks and the RESULT line.
 * Every program is `<workload> [--workers N] [SIZE...]`.
 */
#ifndef TERN_BENCH_COMMON_H
#define TERN_BENCH_COMMON_H

#include <errno.h>
#include <stdint.h>

#include "tern.h"

#define BENCH_MAX_SIZES 8
#define BENCH_DEFAULT_WORKERS 2u

typedef struct bench_args {
    unsigned workers;               /* --workers N, default 2 */
    uint64_t size[BENCH_MAX_SIZES]; /* positional sizes (defaults filled in) */
} bench_args;

/* Parses argv as `<workload> [--workers N] [SIZE...]` (--workers N or
 * --workers=N anywhere). nsizes sizes with the given defaults and names
 * (for the usage line). Each size must be an integer in 1..max[i] (max NULL:
 * no limit beyond uint64). Bad arguments: usage on stderr, exit 2. */
void bench_parse(int argc, char **argv, const char *workload, int nsizes,
                 const char *const *names, const uint64_t *defaults, const uint64_t *max,
                 bench_args *out);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* VmRSS of this process in bytes, from /proc/self/status; exits 1 if it
 * cannot be read. */
uint64_t bench_vm_rss_bytes(void);

/* Creates the runtime under test with `workers` worker threads; exits 1 with
 * a message on failure. */
tern_runtime *bench_runtime_new(unsigned workers);

/* Prints the runtime's counters as one "INFO metrics key=value ..." line
 * (bench/run.sh shows them beside each result). */
void bench_print_metrics(tern_runtime *rt);

/* Prints the metrics line, then shuts the runtime down; exits 1 with a
 * message on failure. */
void bench_runtime_free(tern_runtime *rt);

/* Runs fn(arg) as the root task of a fresh runtime with `workers` workers,
 * timed from before its spawn until it is joined, then frees the runtime.
 * Returns the elapsed ns; exits 1 on any failure. */
uint64_t bench_run_root(unsigned workers, tern_task_fn fn, void *arg);

/* From a task: spawns n tasks running fn(arg) and joins them all; exits 1
 * on any failure. */
void bench_spawn_join(uint64_t n, tern_task_fn fn, void *arg);

/* Exits 1 with "error: verification failed: what" when ok is false. */
void bench_check(int ok, const char *what);

/* Prints "error: <what>: <tern_strerror(err)>" on stderr and exits 1. */
void bench_die(const char *what, int err) __attribute__((noreturn));

/* Prints the final line:
 * RESULT workload=<w> runtime=tern n=<n> secs=<%.6f> per_op_ns=<%.2f>
 *        ops_per_s=<%.0f><extra>
 * extra is appended verbatim (" key=value ..." or NULL / ""). */
void bench_result(const char *workload, uint64_t n, uint64_t elapsed_ns,
                  const char *extra);

#endif
