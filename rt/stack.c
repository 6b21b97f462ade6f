/*
 * The stack pool: fiber stacks carved from large anonymous regions, handed
 * out through per-worker caches.
 *
 * Layout. A region is one MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE mapping of
 * n stacks of pool->stack_size bytes each (n = 64 for the first region,
 * doubling to 1024), so a million 64 KiB stacks cost about a thousand
 * mappings, far under vm.max_map_count (65530). NORESERVE keeps untouched
 * stacks out of the commit charge; pages are committed on first touch and
 * stay committed while the stack is reused, which is what makes reuse hot.
 * Stack headers (tern__stack) live in an array beside the region, not in the
 * stacks, so carving a stack touches none of its memory.
 *
 * Guards. The lowest page of every stack is its guard, set up once when the
 * stack is carved:
 *  1. madvise(MADV_GUARD_INSTALL) (Linux 6.13+) installs a guard marker in
 *     the page table without splitting the mapping: no extra mapping.
 *  2. Older kernels answer EINVAL; we remember that (process-wide) and use
 *     mprotect(PROT_NONE), which splits the region: about two mappings per
 *     stack. A process-wide budget (MPROTECT_BUDGET) keeps those below the
 *     map-count limit, leaving room for everything else the process maps.
 *  3. Beyond the budget, or when mprotect fails, the stack gets a canary at
 *     its lowest usable bytes and guarded = 0; the scheduler checks it with
 *     tern__stack_check when the fiber switches out.
 *
 * Caches. Cache i belongs to worker i's thread and is touched without locks:
 * a LIFO list of at most CACHE_MAX stacks, most recently used first. An
 * empty cache refills CACHE_BATCH stacks from the global list (carving more
 * when it runs dry); a full one moves its colder half to the global list.
 * The global list, the region list and carving are under pool->lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rt/fault.h"
#include "rt/fiber.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif

#ifdef TERN_ASAN
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

#define CACHE_MAX 64          /* stacks a worker cache holds at most */
#define CACHE_BATCH 32        /* refill / spill unit: half a cache */
#define REGION_FIRST 64       /* stacks in the first region of a pool */
#define REGION_MAX 1024       /* ... doubling up to this many */
#define MPROTECT_BUDGET 16384 /* extra mappings all pools may create */
#define CANARY_WORDS 8

typedef struct region {
    struct region *next;
    char *base;
    size_t nstacks;      /* capacity */
    size_t carved;       /* stacks[0..carved) are in use or on a list */
    unsigned mprotected; /* guards made with mprotect, 2 budget units each */
    tern__stack stacks[];
} region;

typedef struct cache {
    tern__stack *head;
    unsigned count;
} __attribute__((aligned(64))) cache; /* no false sharing between workers */

struct tern__stack_pool {
    size_t stack_size; /* rounded to pages, guard included */
    size_t page;
    unsigned ncaches;
    int guard_kind; /* TERN_GUARD_*; written before use by tests only */
    cache *caches;

    pthread_mutex_t lock; /* guards everything below */
    tern__stack *free_head;
    size_t free_count;
    region *regions;    /* newest first; only the newest has stacks to carve */
    size_t next_region; /* stacks in the next region to map */

    /* Read without the lock by tests/introspection. */
    _Atomic uint64_t carved, nregions;
};

/* Process-wide, because the kernel and vm.max_map_count are. */
static atomic_int madvise_guard_missing;
static atomic_long mprotect_budget = MPROTECT_BUDGET;

static uint64_t canary_word(const tern__stack *s, int i)
{
    /* Mixed with the address so one stack's canary copied onto another (or
     * a stale pattern) does not pass. */
    return 0x7465726e5f63616eull ^
           ((uint64_t)(uintptr_t)s->base * 0x9e3779b97f4a7c15ull) ^ (uint64_t)i;
}

static void canary_write(tern__stack *s, size_t page)
{
    uint64_t *w = (uint64_t *)(s->base + page);
    for (int i = 0; i < CANARY_WORDS; i++)
        w[i] = canary_word(s, i);
}

NO_ASAN int tern__stack_check(const tern__stack *s)
{
    if (s->guarded)
        return 0;
    /* sysconf(_SC_PAGESIZE) reads a value glibc cached at startup. */
    const volatile uint64_t *w =
        (const uint64_t *)(s->base + (size_t)sysconf(_SC_PAGESIZE));
    for (int i = 0; i < CANARY_WORDS; i++)
        if (w[i] != canary_word(s, i))
            return -EFAULT;
    return 0;
}

static int take_budget(long n)
{
    long left = atomic_load_explicit(&mprotect_budget, memory_order_relaxed);
    while (left >= n)
        if (atomic_compare_exchange_weak_explicit(&mprotect_budget, &left, left - n,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

/* 1 when the kernel has no MADV_GUARD_INSTALL (or a filter forbids it). */
static int guard_madvise(char *p, size_t page)
{
    for (int tries = 0; tries < 4; tries++) {
        if (TERN__FAULT_SYS(MADVISE, -1, madvise(p, page, MADV_GUARD_INSTALL)) == 0)
            return 0;
        if (errno == EINVAL || errno == ENOSYS || errno == EPERM) {
            atomic_store_explicit(&madvise_guard_missing, 1, memory_order_relaxed);
            return -1;
        }
        if (errno != EINTR && errno != EAGAIN)
            return -1; /* e.g. ENOMEM for a page table: try mprotect */
    }
    return -1;
}

/* Sets up the guard of a freshly carved stack (see the top of the file). */
static void guard_stack(tern__stack_pool *pool, region *r, tern__stack *s)
{
    size_t page = pool->page;
    int kind = pool->guard_kind;
    if (kind == TERN__GUARD_AUTO &&
        !atomic_load_explicit(&madvise_guard_missing, memory_order_relaxed) &&
        guard_madvise(s->base, page) == 0) {
        s->guarded = 1;
        return;
    }
    if (kind != TERN__GUARD_CANARY && take_budget(2)) {
        if (TERN__FAULT_SYS(MPROTECT, -1, mprotect(s->base, page, PROT_NONE)) == 0) {
            s->guarded = 1;
            r->mprotected++;
            return;
        }
        /* ENOMEM: the map-count limit is nearer than the budget thought. */
        atomic_fetch_add_explicit(&mprotect_budget, 2, memory_order_relaxed);
    }
    canary_write(s, page);
    s->guarded = 0;
}

/* Maps a new region, halving its size down to one stack while the kernel
 * refuses (strict overcommit, address-space limits). NULL when even one
 * stack cannot be mapped. */
static region *region_new(tern__stack_pool *pool)
{
    size_t size = pool->stack_size;
    for (size_t n = pool->next_region; n >= 1; n /= 2) {
        region *r = TERN__FAULT_ALLOC(malloc(sizeof(*r) + n * sizeof(tern__stack)));
        if (!r)
            continue;
        void *p =
            TERN__FAULT_SYS(MMAP, MAP_FAILED,
                            mmap(NULL, n * size, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (p == MAP_FAILED) {
            free(r);
            continue;
        }
        r->base = p;
        r->nstacks = n;
        r->carved = 0;
        r->mprotected = 0;
        r->next = pool->regions;
        pool->regions = r;
        pool->next_region = n * 2 < REGION_MAX ? n * 2 : REGION_MAX;
        atomic_fetch_add_explicit(&pool->nregions, 1, memory_order_relaxed);
        return r;
    }
    return NULL;
}

/* Carves up to want stacks onto the global list; returns how many. Called
 * with pool->lock held. */
static size_t carve(tern__stack_pool *pool, size_t want)
{
    size_t n = 0;
    while (n < want) {
        region *r = pool->regions;
        if (!r || r->carved == r->nstacks) {
            r = region_new(pool);
            if (!r)
                break;
        }
        tern__stack *s = &r->stacks[r->carved++];
        s->base = r->base + (r->carved - 1) * pool->stack_size;
        s->size = pool->stack_size;
        guard_stack(pool, r, s);
        s->next = pool->free_head;
        pool->free_head = s;
        pool->free_count++;
        n++;
    }
    atomic_fetch_add_explicit(&pool->carved, n, memory_order_relaxed);
    return n;
}

/* Moves up to n stacks from the global list into chain; returns the count.
 * Carves n more only when the list is empty: stacks already carved (and
 * maybe warm) go first. Called with pool->lock held. */
static unsigned take_global(tern__stack_pool *pool, unsigned n, tern__stack **chain)
{
    if (pool->free_count == 0)
        carve(pool, n);
    unsigned got = 0;
    tern__stack *head = pool->free_head, *last = NULL;
    for (tern__stack *s = head; s && got < n; s = s->next) {
        last = s;
        got++;
    }
    if (got) {
        pool->free_head = last->next;
        pool->free_count -= got;
        last->next = NULL;
        *chain = head;
    }
    return got;
}

static void give_global(tern__stack_pool *pool, tern__stack *head, tern__stack *tail,
                        size_t n)
{
    pthread_mutex_lock(&pool->lock);
    tail->next = pool->free_head;
    pool->free_head = head;
    pool->free_count += n;
    pthread_mutex_unlock(&pool->lock);
}

int tern__stack_pool_new(size_t stack_size, unsigned ncaches, tern__stack_pool **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (stack_size < TERN__STACK_MIN || stack_size > TERN__STACK_MAX || ncaches == 0 ||
        ncaches > TERN__STACK_MAX_CACHES)
        return -EINVAL;
    tern__stack_pool *pool = TERN__FAULT_ALLOC(calloc(1, sizeof(*pool)));
    if (!pool)
        return -ENOMEM;
    if (posix_memalign((void **)&pool->caches, 64, ncaches * sizeof(cache))) {
        free(pool);
        return -ENOMEM;
    }
    memset(pool->caches, 0, ncaches * sizeof(cache));
    pool->stack_size = (stack_size + page - 1) & ~(page - 1);
    pool->page = page;
    pool->ncaches = ncaches;
    pool->guard_kind = TERN__GUARD_AUTO;
    pool->next_region = REGION_FIRST;
    pthread_mutex_init(&pool->lock, NULL);
    *out = pool;
    return 0;
}

void tern__stack_pool_free(tern__stack_pool *pool)
{
    if (!pool)
        return;
    region *r = pool->regions;
    while (r) {
        region *next = r->next;
        size_t len = r->nstacks * pool->stack_size;
#ifdef TERN_ASAN
        /* Frames of fibers that never returned leave poisoned shadow; a
         * later mapping at this address must not inherit it. */
        __asan_unpoison_memory_region(r->base, len);
#endif
        munmap(r->base, len);
        atomic_fetch_add_explicit(&mprotect_budget, 2 * (long)r->mprotected,
                                  memory_order_relaxed);
        free(r);
        r = next;
    }
    pthread_mutex_destroy(&pool->lock);
    free(pool->caches);
    free(pool);
}

/* The cache ran dry: take a batch from the global list. */
static tern__stack *refill(tern__stack_pool *pool, cache *c)
{
    tern__stack *chain = NULL;
    pthread_mutex_lock(&pool->lock);
    unsigned got = take_global(pool, CACHE_BATCH, &chain);
    pthread_mutex_unlock(&pool->lock);
    if (!got)
        return NULL; /* out of memory or mappings */
    c->head = chain->next;
    c->count = got - 1;
    return chain;
}

tern__stack *tern__stack_get(tern__stack_pool *pool, unsigned cache_index)
{
    if (cache_index < pool->ncaches) {
        cache *c = &pool->caches[cache_index];
        tern__stack *s = c->head;
        if (s) {
            c->head = s->next;
            c->count--;
            return s;
        }
        return refill(pool, c);
    }
    tern__stack *s = NULL;
    pthread_mutex_lock(&pool->lock);
    take_global(pool, 1, &s);
    pthread_mutex_unlock(&pool->lock);
    return s;
}

/* The cache is over CACHE_MAX: keep the CACHE_BATCH most recently used
 * stacks (their pages are warm) and move the rest to the global list. */
static void spill(tern__stack_pool *pool, cache *c)
{
    tern__stack *keep = c->head;
    for (unsigned i = 1; i < CACHE_BATCH; i++)
        keep = keep->next;
    tern__stack *head = keep->next, *tail = head;
    size_t n = 1;
    while (tail->next) {
        tail = tail->next;
        n++;
    }
    keep->next = NULL;
    c->count = CACHE_BATCH;
    give_global(pool, head, tail, n);
}

void tern__stack_put(tern__stack_pool *pool, unsigned cache_index, tern__stack *s)
{
    if (cache_index < pool->ncaches) {
        cache *c = &pool->caches[cache_index];
        s->next = c->head;
        c->head = s;
        if (++c->count > CACHE_MAX)
            spill(pool, c);
        return;
    }
    give_global(pool, s, s, 1);
}

uint64_t tern__stack_pool_carved(const tern__stack_pool *pool)
{
    return atomic_load_explicit(&pool->carved, memory_order_relaxed);
}

uint64_t tern__stack_pool_regions(const tern__stack_pool *pool)
{
    return atomic_load_explicit(&pool->nregions, memory_order_relaxed);
}

unsigned tern__stack_pool_cached(const tern__stack_pool *pool, unsigned cache_index)
{
    return cache_index < pool->ncaches ? pool->caches[cache_index].count : 0;
}

void tern__stack_pool_set_guard(tern__stack_pool *pool, int kind)
{
    pool->guard_kind = kind;
}
