/*
 * Fault injection: the spec parser and the decision each seam asks for
 * (see fault.h for the syntax). Compiled to nothing without TERN_FAULTS.
 *
 * Every field is atomic and read relaxed: seams run on any thread, and a
 * test may reconfigure between runs while stray threads (a retiring
 * blocking thread) still pass a seam. Probabilities draw from one shared
 * counter mixed by splitmix64, so draws need no per-thread state (a task
 * may move between threads) and a seed makes a single-threaded run
 * repeatable.
 */
#include "rt/fault.h"

#ifdef TERN_FAULTS

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct seam {
    _Atomic int err; /* errno to inject; 0 = seam off */
    _Atomic unsigned long every;
    _Atomic uint64_t p; /* probability * 2^64 - 1 (0 = use every) */
    _Atomic unsigned long after;
    _Atomic unsigned long calls, faults;
} seam;

#define NAME_(id, name, err) name,
static const char *const names[] = {TERN__FAULT_SEAMS(NAME_)};
#undef NAME_
#define ERR_(id, name, err) err,
static const int default_err[] = {TERN__FAULT_SEAMS(ERR_)};
#undef ERR_

static seam seams[TERN__FAULT_NSEAMS];
static _Atomic int armed; /* any seam on: the fast path reads only this */
static _Atomic uint64_t seed = 1, draws;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

#define E(x)                                                                             \
    {                                                                                    \
#x, x                                                                            \
    }
static const struct {
    const char *name;
    int err;
} errnos[] = {
    E(ENOMEM),      E(EMFILE),       E(ENFILE),        E(EAGAIN),    E(EINTR),
    E(EPERM),       E(EACCES),       E(ENOSYS),        E(EINVAL),    E(EBUSY),
    E(EIO),         E(ENOSPC),       E(ENOBUFS),       E(EBADF),     E(EPIPE),
    E(ECONNRESET),  E(ECONNREFUSED), E(ECONNABORTED),  E(ETIMEDOUT), E(EHOSTUNREACH),
    E(ENETUNREACH), E(EADDRINUSE),   E(EADDRNOTAVAIL),
};
#undef E

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* One parsed item, applied only when the whole spec parsed. */
typedef struct item {
    int err;
    unsigned long every, after;
    uint64_t p;
} item;

static int parse_errno(const char *s, int *out)
{
    for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
        if (strcmp(s, errnos[i].name) == 0)
            return *out = errnos[i].err, 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || v <= 0 || v > 4095)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_ulong(const char *s, unsigned long *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    *out = strtoul(s, &end, 10);
    return *end ? -1 : 0;
}

/* "SEAM[:opt]*" into items[]; tok is modified. */
static int parse_item(char *tok, item *items)
{
    char *save, *name = strtok_r(tok, ":", &save);
    int id = -1;
    for (int i = 0; name && i < TERN__FAULT_NSEAMS; i++)
        if (strcmp(name, names[i]) == 0)
            id = i;
    if (id < 0)
        return -1;
    item it = {.err = default_err[id]};
    for (char *opt; (opt = strtok_r(NULL, ":", &save));) {
        if (strncmp(opt, "every=", 6) == 0) {
            if (parse_ulong(opt + 6, &it.every) || it.every == 0)
                return -1;
        } else if (strncmp(opt, "after=", 6) == 0) {
            if (parse_ulong(opt + 6, &it.after))
                return -1;
        } else if (strncmp(opt, "p=", 2) == 0) {
            char *end;
            double p = strtod(opt + 2, &end);
            if (*end || end == opt + 2 || !(p >= 0 && p <= 1))
                return -1;
            it.p = p >= 1 ? UINT64_MAX : (uint64_t)(p * 18446744073709551616.0);
            if (it.p == 0)
                it.err = 0; /* p=0: never */
        } else if (parse_errno(opt, &it.err)) {
            return -1;
        }
    }
    if (!it.p && !it.every)
        it.every = 1;
    items[id] = it;
    return 0;
}

static int apply(const char *spec)
{
    item items[TERN__FAULT_NSEAMS] = {{0}};
    uint64_t s = 1;
    char *copy = strdup(spec ? spec : "");
    if (!copy)
        return -ENOMEM;
    int bad = 0;
    char *save;
    for (char *tok = strtok_r(copy, ",", &save); tok && !bad;
         tok = strtok_r(NULL, ",", &save)) {
        unsigned long v;
        if (strncmp(tok, "seed=", 5) == 0)
            bad = parse_ulong(tok + 5, &v) ? 1 : (s = v, 0);
        else
            bad = parse_item(tok, items) != 0;
    }
    free(copy);
    if (bad)
        return -EINVAL;
    int any = 0;
    atomic_store_explicit(&armed, 0, memory_order_relaxed);
    for (int i = 0; i < TERN__FAULT_NSEAMS; i++) {
        seam *sm = &seams[i];
        atomic_store_explicit(&sm->err, items[i].err, memory_order_relaxed);
        atomic_store_explicit(&sm->every, items[i].every, memory_order_relaxed);
        atomic_store_explicit(&sm->p, items[i].p, memory_order_relaxed);
        atomic_store_explicit(&sm->after, items[i].after, memory_order_relaxed);
        atomic_store_explicit(&sm->calls, 0, memory_order_relaxed);
        atomic_store_explicit(&sm->faults, 0, memory_order_relaxed);
        any |= items[i].err != 0;
    }
    atomic_store_explicit(&seed, s, memory_order_relaxed);
    atomic_store_explicit(&draws, 0, memory_order_relaxed);
    atomic_store_explicit(&armed, any, memory_order_relaxed);
    return 0;
}

static void env_init(void)
{
    const char *spec = getenv("TERN_FAULTS");
    if (spec && apply(spec) < 0) {
        static const char msg[] = "tern: cannot parse TERN_FAULTS (see rt/fault.h)\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
}

int tern__fault(enum tern__fault_seam id)
{
    pthread_once(&env_once, env_init);
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    seam *sm = &seams[id];
    int err = atomic_load_explicit(&sm->err, memory_order_relaxed);
    if (!err)
        return 0;
    unsigned long n = atomic_fetch_add_explicit(&sm->calls, 1, memory_order_relaxed) + 1;
    unsigned long after = atomic_load_explicit(&sm->after, memory_order_relaxed);
    if (n <= after)
        return 0;
    unsigned long every = atomic_load_explicit(&sm->every, memory_order_relaxed);
    uint64_t p = atomic_load_explicit(&sm->p, memory_order_relaxed);
    int hit;
    if (every)
        hit = (n - after) % every == 0;
    else
        hit = mix(atomic_load_explicit(&seed, memory_order_relaxed) ^
                  mix(atomic_fetch_add_explicit(&draws, 1, memory_order_relaxed))) < p;
    if (!hit)
        return 0;
    atomic_fetch_add_explicit(&sm->faults, 1, memory_order_relaxed);
    return err;
}

int tern__fault_set(const char *spec)
{
    pthread_once(&env_once, env_init); /* so the environment cannot undo this later */
    return apply(spec);
}

unsigned long tern__fault_count(enum tern__fault_seam id)
{
    return atomic_load_explicit(&seams[id].faults, memory_order_relaxed);
}

unsigned long tern__fault_calls(enum tern__fault_seam id)
{
    return atomic_load_explicit(&seams[id].calls, memory_order_relaxed);
}

#else
typedef int tern__fault_off; /* ISO C wants something in a translation unit */
#endif
