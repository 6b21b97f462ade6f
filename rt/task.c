/*
 * Tasks: spawn, the state machine, park/unpark, join, cancel, yield, sleep.
 *
 * The state word (docs/design.md, invariant 2). Bits: SCHEDULED, RUNNING, NOTIFIED,
 * COMPLETE, CANCELLED. A task is "idle" when none of the first four is set.
 *
 *   wake:   idle      -> SCHEDULED, and the waker pushes it on a queue
 *           RUNNING   -> RUNNING|NOTIFIED (nobody pushes it)
 *           SCHEDULED -> unchanged (it will run anyway)
 *           COMPLETE  -> unchanged
 *   run:    SCHEDULED -> RUNNING            (the worker that popped it)
 *   park:   RUNNING   -> idle, or RUNNING|NOTIFIED -> SCHEDULED and requeued
 *           (by the worker, on its own stack, after the switch-out finished)
 *   finish: RUNNING   -> COMPLETE           (the worker, after the last switch)
 *
 * Tasks without a fiber and shutdown make three more, all here (this file
 * is the only writer of the state word; the others call these):
 *   job_start: SCHEDULED -> RUNNING         (the pool thread that took the
 *              blocking job from its queue, or its spawner when it was never
 *              queued: either way the only holder)
 *   freeze:    idle      -> RUNNING         (shutdown, for a task parked deaf
 *              to cancellation; the CAS fails on any other state)
 *   give_up:   RUNNING   -> RUNNING|COMPLETE|CANCELLED (after job_start or
 *              freeze: the task never runs again)
 *
 * Proof sketch that a task never runs on two stacks at once: only the wake
 * that moves idle -> SCHEDULED pushes the task, and only a worker that
 * popped it moves SCHEDULED -> RUNNING. While RUNNING, a wake can only set
 * NOTIFIED; the task becomes idle or SCHEDULED again only in the worker's
 * own code after tern__fiber_switch returned there, i.e. after the fiber's
 * registers and stack are no longer in use. So at most one queue holds the
 * task, and it is switched in again only after it was switched out. The
 * transitions out of RUNNING are release operations and run is an acquire,
 * so the next worker sees the saved context and everything the task wrote.
 *
 * job_start and freeze are the run of those paths: each takes the task from
 * a state in which nobody else will move it (a job in one queue, an idle
 * task claimed by CAS), so they keep "at most one runner"; give_up only adds
 * COMPLETE to a task one of them holds, so later wakes see a finished task.
 *
 * A wake may be stale (it was meant for an earlier wait): every wait loops on
 * its own condition, so a stale wake costs one extra trip, never a lost one.
 * Cancellation sets CANCELLED and wakes; it is sticky. Whether a suspension
 * point has handed the task its -ECANCELED (saw_cancel, which turns a body's
 * return into a cancelled finish) is kept here too: a wait whose grant won
 * the race against the cancel puts the mark back as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt/fault.h"
#include "rt/internal.h"

#ifdef TERN_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif

static _Atomic uint64_t next_id = 1;
#define ID_BATCH 1024 /* ids a worker takes from next_id at a time */
/* A sleep's timer entry. The entry and the task share it: the wheel's owner
 * fires or reaps it, the task cancels it when it resumes early; two owner
 * counts (wheel, task) decide who frees it. */
struct tern__sleep {
    tern__timer timer;
    tern_task *task; /* holds a task reference until fired or reaped */
    tern_loop *loop; /* whose wheel */
    _Atomic uint32_t owners;
    struct tern__sleep *reap_next; /* on loop->sleep_reap */
};

/* ---- references ----------------------------------------------------------- */

tern_task *tern_task_ref(tern_task *h)
{
    tern_task *t = tern__task_of(h);
    if (!t)
        return NULL;
    atomic_fetch_add_explicit(&t->refs, 1, TERN__RELAXED);
    return h;
}

/* ---- counting and recycling ------------------------------------------------------
 *
 * Spawned, finished and freed tasks are counted per worker (plain stores by
 * the owner) or, from other threads, in rt->foreign_counts (atomic adds), so
 * that spawning on one worker and finishing on another share no counter line.
 * unfinished = spawned - finished, live = spawned - freed.
 *
 * Task headers are recycled through a per-worker array; a worker with
 * too many hands half to a global list, a worker with none takes a batch
 * from it, so headers freed on one worker feed spawns on another. */

enum { CNT_SPAWNED, CNT_FINISHED, CNT_FREED };

/* w: the calling thread's loop, or NULL off rt's workers. */
static void count(tern_runtime *rt, tern_loop *w, int which)
{
    _Atomic uint64_t *c = w && w->rt == rt ? &w->counts[which] : NULL;
    if (c) /* release: pairs with the acquire in count_sum */
        atomic_store_explicit(c, atomic_load_explicit(c, TERN__RELAXED) + 1,
                              TERN__RELEASE);
    else
        atomic_fetch_add_explicit(&rt->foreign_counts[which], 1, TERN__ACQ_REL);
}

static uint64_t count_sum(tern_runtime *rt, int which)
{
    uint64_t n = atomic_load_explicit(&rt->foreign_counts[which], TERN__ACQUIRE);
    for (unsigned i = 0; i < rt->nworkers; i++)
        n += atomic_load_explicit(&rt->loops[i]->counts[which], TERN__ACQUIRE);
    return n;
}

/* Finished and freed are read before spawned: whatever was finished had
 * been spawned before, so the differences never go below zero. */
uint64_t tern__unfinished(tern_runtime *rt)
{
    uint64_t done = count_sum(rt, CNT_FINISHED);
    return count_sum(rt, CNT_SPAWNED) - done;
}

uint64_t tern_runtime_live_tasks(const tern_runtime *crt)
{
    tern_runtime *rt = (tern_runtime *)crt;
    if (!rt)
        return 0;
    uint64_t freed = count_sum(rt, CNT_FREED);
    return count_sum(rt, CNT_SPAWNED) - freed;
}

/* Headers off the workers: the foreign list, refilled from a batch. */
static tern_task *header_get_foreign(tern_runtime *rt)
{
    pthread_mutex_lock(&rt->free_lock);
    tern__batch *b = rt->foreign_free ? NULL : rt->free_batches;
    if (b) {
        rt->free_batches = b->next;
        atomic_fetch_sub_explicit(&rt->nbatches, 1, TERN__RELAXED);
        for (unsigned k = 0; k < TERN__TASK_CACHE / 2; k++) {
            b->task[k]->next = rt->foreign_free;
            rt->foreign_free = b->task[k];
        }
    }
    tern_task *t = rt->foreign_free;
    if (t)
        rt->foreign_free = t->next;
    pthread_mutex_unlock(&rt->free_lock);
    free(b);
    return t;
}

static tern_task *header_get(tern_runtime *rt, tern_loop *w)
{
    tern_task *t = NULL;
    if (w) {
        if (!w->nfree && atomic_load_explicit(&rt->nbatches, TERN__RELAXED)) {
            pthread_mutex_lock(&rt->free_lock);
            tern__batch *b = rt->free_batches;
            if (b) {
                rt->free_batches = b->next;
                atomic_fetch_sub_explicit(&rt->nbatches, 1, TERN__RELAXED);
            }
            pthread_mutex_unlock(&rt->free_lock);
            if (b) {
                memcpy(w->free_tasks, b->task, sizeof b->task);
                w->nfree = TERN__TASK_CACHE / 2;
                free(b);
            }
        }
        /* An array, not a list through the headers: taking one must not
         * read a header that another core freed (a cache miss per spawn). */
        if (w->nfree)
            t = w->free_tasks[--w->nfree];
    } else {
        t = header_get_foreign(rt);
    }
    if (t)
        return t;
    /* Cache-line aligned, so the first line really is one line (two lines
     * in all outside sanitizer builds). */
    t = aligned_alloc(64, (sizeof(tern_task) + 63) & ~(size_t)63);
    if (t)
        atomic_init(&t->gen, 1);
    return t;
}

/* Headers are recycled, never freed, while the runtime lives (as Go keeps
 * its goroutine descriptors): a stale handle may still read a header's
 * generation. What is kept is the peak number of live tasks; stacks, the
 * large part of a task, go back as usual. */
static void header_put(tern_runtime *rt, tern_loop *w, tern_task *t)
{
    if (!w || w->rt != rt) {
        pthread_mutex_lock(&rt->free_lock);
        t->next = rt->foreign_free;
        rt->foreign_free = t;
        pthread_mutex_unlock(&rt->free_lock);
        return;
    }
    if (w->nfree == TERN__TASK_CACHE) {
        /* Hand the older half to the global list; without memory for a
         * batch, to the foreign list, linked through the headers. */
        tern__batch *b = malloc(sizeof *b);
        pthread_mutex_lock(&rt->free_lock);
        if (b) {
            memcpy(b->task, w->free_tasks, sizeof b->task);
            b->next = rt->free_batches;
            rt->free_batches = b;
            atomic_fetch_add_explicit(&rt->nbatches, 1, TERN__RELAXED);
        } else {
            for (unsigned k = 0; k < TERN__TASK_CACHE / 2; k++) {
                w->free_tasks[k]->next = rt->foreign_free;
                rt->foreign_free = w->free_tasks[k];
            }
        }
        pthread_mutex_unlock(&rt->free_lock);
        memmove(w->free_tasks, w->free_tasks + TERN__TASK_CACHE / 2,
                sizeof w->free_tasks / 2);
        w->nfree = TERN__TASK_CACHE / 2;
    }
    w->free_tasks[w->nfree++] = t;
}

void tern__task_cache_free(tern_runtime *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        tern_loop *w = rt->loops[i];
        for (unsigned k = 0; w && k < w->nfree; k++)
            free(w->free_tasks[k]);
    }
    for (tern__batch *b = rt->free_batches, *nb; b; b = nb) {
        nb = b->next;
        for (unsigned k = 0; k < TERN__TASK_CACHE / 2; k++)
            free(b->task[k]);
        free(b);
    }
    for (tern_task *t = rt->foreign_free, *nt; t; t = nt) {
        nt = t->next;
        free(t);
    }
}

static void retire(tern_task *t);

/* Every writer of a name holds its shard's lock, so under it a plain load
 * and store do (an exchange would be one more locked instruction per task). */
static char *take_name(tern_task *t)
{
    char *name = atomic_load_explicit(&t->name, TERN__RELAXED);
    atomic_store_explicit(&t->name, NULL, TERN__RELAXED);
    return name;
}

void tern__task_unref(tern_task *t)
{
    /* acq_rel: the last owner must see every other owner's writes */
    if (atomic_fetch_sub_explicit(&t->refs, 1, TERN__ACQ_REL) != 1)
        return;
    /* The next generation, never 0 (the mark of an internal pointer), so
     * that a handle kept past this point is refused from now on. */
    uint16_t g = (uint16_t)(atomic_load_explicit(&t->gen, TERN__RELAXED) + 1);
    atomic_store_explicit(&t->gen, g ? g : 1, TERN__RELAXED);
    if (atomic_load_explicit(&t->name, TERN__RELAXED)) { /* named after it finished */
        tern__registry_lock(t->rt, t->shard);
        char *name = take_name(t);
        tern__registry_unlock(t->rt, t->shard);
        free(name);
    }
    count(t->rt, tern__loop_self(), CNT_FREED);
    retire(t);
}

void tern_task_release(tern_task *h)
{
    tern_task *t = tern__task_of(h);
    if (t)
        tern__task_unref(t);
}

/* ---- the registry of live tasks ----------------------------------------------------
 *
 * Every task is linked into one shard of the registry (its spawner's) from spawn
 * to finish, as Tokio's OwnedTasks: shutdown walks it to cancel every task,
 * tern_dump to list them, the watchdog to name a stalled one.
 *
 * Spawn and exit take no lock here (docs/design.md, "concurrencykit or C11
 * atomics"). A worker's shard has one writer, the worker: it links at the
 * head and unlinks in place, publishing with release stores, so a walker
 * (acquire loads) sees whole headers. A task that finishes on another thread
 * is pushed on the shard's `away` stack, with its scheduler reference, for
 * the owner to unlink. The shard for tasks spawned off the workers has many
 * writers, which take its lock; walkers never do.
 *
 * Walkers (tern_dump, the watchdog, shutdown) run inside a ck_epoch section
 * on rt->reader. A header is unlinked before its last reference goes, and
 * its reuse is deferred with ck_epoch_call on the thread's record until
 * every section open at that time has ended: a walker never reads a header
 * that became another task. Only walkers open sections, so a poll usually
 * finds none and hands the headers back at once. Names and contexts are
 * freed while a walker may read them, so they change under the shard's
 * lock, which walkers take per shard. */

static tern__shard *shard_of(const tern_task *t)
{
    return &t->rt->shards[t->shard];
}

void tern__registry_lock(tern_runtime *rt, unsigned i)
{
    tern__spin_lock(&rt->shards[i].lock);
}

void tern__registry_unlock(tern_runtime *rt, unsigned i)
{
    tern__spin_unlock(&rt->shards[i].lock);
}

void tern__registry_enter(tern_runtime *rt)
{
    pthread_mutex_lock(&rt->reader_lock);
    ck_epoch_begin(rt->reader, NULL);
}

void tern__registry_leave(tern_runtime *rt)
{
    ck_epoch_end(rt->reader, NULL);
#ifdef TERN_TSAN
    __tsan_release(rt->reader); /* TSan does not see ck's grace period */
#endif
    pthread_mutex_unlock(&rt->reader_lock);
}

tern_task *tern__registry_first(tern_runtime *rt, unsigned i)
{
    /* seq_cst: shutdown's side of the pairing with `closing` (registry_add) */
    return atomic_load_explicit(&rt->shards[i].head, TERN__SEQ_CST);
}

tern_task *tern__registry_next(const tern_task *t)
{
    return atomic_load_explicit(&((tern_task *)t)->reg_next, TERN__ACQUIRE);
}

/* The grace period is over: no walker holds t. */
static void reuse(ck_epoch_entry_t *e)
{
    tern_task *t = (tern_task *)((char *)e - offsetof(tern_task, retire));
#ifdef TERN_TSAN
    __tsan_acquire(t->rt->reader);
#endif
    header_put(t->rt, tern__loop_self(), t);
}

/* t's last reference is gone and it is unlinked: reuse its header once no
 * walker can hold it. A worker defers on its own record and polls every
 * 64 headers (and before it parks); other threads share one record. */
static void retire(tern_task *t)
{
    tern_runtime *rt = t->rt;
    tern_loop *w = tern__loop_self();
    if (w && w->rt == rt) {
        tern__shard *sh = &rt->shards[w->index];
        ck_epoch_call(&sh->epoch, &t->retire, reuse);
        if (++sh->deferred >= 64) {
            sh->deferred = 0;
            ck_epoch_poll(&sh->epoch);
        }
        return;
    }
    tern__shard *sh = &rt->shards[rt->nworkers];
    pthread_mutex_lock(&rt->epoch_lock);
    ck_epoch_call(&sh->epoch, &t->retire, reuse);
    ck_epoch_poll(&sh->epoch);
    pthread_mutex_unlock(&rt->epoch_lock);
}

/* A task that registers after the shutdown walk read this shard's head
 * sees `closing` and is cancelled instead (seq_cst store then load, the
 * walk's seq_cst load of the head after its seq_cst store of closing). */
static void registry_add(tern_task *t)
{
    tern__shard *sh = shard_of(t);
    int foreign = t->shard == t->rt->nworkers;
    if (foreign)
        tern__spin_lock(&sh->lock);
    tern_task *head = atomic_load_explicit(&sh->head, TERN__RELAXED);
    t->reg_prev = NULL;
    atomic_store_explicit(&t->reg_next, head, TERN__RELAXED);
    if (head)
        head->reg_prev = t;
    atomic_store_explicit(&sh->head, t, TERN__SEQ_CST);
    if (atomic_load_explicit(&t->rt->closing, TERN__SEQ_CST))
        atomic_fetch_or_explicit(&t->state, TERN__TS_CANCELLED, TERN__RELAXED);
    if (foreign)
        tern__spin_unlock(&sh->lock);
}

/* The writer unlinks t in place: a walker standing on t still finds its
 * successor, and one that has not reached t yet skips it. release: the
 * successor's header was published to the writer, now to the walker. */
static void unlink_task(tern__shard *sh, tern_task *t)
{
    tern_task *next = atomic_load_explicit(&t->reg_next, TERN__RELAXED);
    if (t->reg_prev)
        atomic_store_explicit(&t->reg_prev->reg_next, next, TERN__RELEASE);
    else
        atomic_store_explicit(&sh->head, next, TERN__RELEASE);
    if (next)
        next->reg_prev = t->reg_prev;
}

/* Takes t out of the registry at its finish, by worker w (NULL: another
 * thread). Returns 0 when only t's owner may unlink it: then the finish
 * ends with hand_off instead of dropping the scheduler's reference. */
static int registry_remove(tern_loop *w, tern_task *t)
{
    tern__shard *sh = shard_of(t);
    /* Contexts and names are freed now (a context's values end with the
     * task), so walkers must not be reading them. */
    if (t->ctx || atomic_load_explicit(&t->name, TERN__RELAXED)) {
        tern__spin_lock(&sh->lock);
        tern_context *ctx = t->ctx;
        char *name = take_name(t);
        t->ctx = NULL;
        tern__spin_unlock(&sh->lock);
        tern_context_release(ctx);
        free(name);
    }
    tern_runtime *rt = t->rt;
    if (t->shard == rt->nworkers) {
        tern__spin_lock(&sh->lock);
        unlink_task(sh, t);
        tern__spin_unlock(&sh->lock);
        return 1;
    }
    if (w && w->rt == rt && w->index == t->shard) {
        unlink_task(sh, t);
        return 1;
    }
    return 0;
}

/* Pushes a finished t, with the scheduler's reference, on its owner's away
 * stack; the caller does not touch t afterwards (the owner may drop that
 * last reference at once). */
static void hand_off(tern_task *t)
{
    tern__shard *sh = shard_of(t);
    tern_loop *owner = t->rt->loops[t->shard];
    tern_task *top = atomic_load_explicit(&sh->away, TERN__RELAXED);
    do
        t->next = top;
    while (!atomic_compare_exchange_weak_explicit(&sh->away, &top, t, TERN__RELEASE,
                                                  TERN__RELAXED));
    /* A parked owner would keep t linked until it next wakes (seq_cst pairs
     * with park's store of parked, then its look at the stack). */
    if (!top && atomic_exchange_explicit(&owner->parked, 0, TERN__SEQ_CST))
        tern__loop_wake(owner);
}

void tern__registry_tidy(tern_loop *w, int poll)
{
    tern__shard *sh = &w->rt->shards[w->index];
    if (atomic_load_explicit(&sh->away, TERN__RELAXED)) {
        tern_task *t = atomic_exchange_explicit(&sh->away, NULL, TERN__ACQUIRE);
        for (tern_task *next; t; t = next) {
            next = t->next;
            unlink_task(sh, t);
            tern__task_unref(t); /* the scheduler's, carried by the stack */
        }
    }
    if (poll && sh->deferred) {
        sh->deferred = 0;
        ck_epoch_poll(&sh->epoch);
    }
}

void tern__registry_init(tern_runtime *rt)
{
    ck_epoch_init(&rt->epoch);
    ck_epoch_register(&rt->epoch, rt->reader, NULL);
    for (unsigned i = 0; i < rt->nshards; i++)
        ck_epoch_register(&rt->epoch, &rt->shards[i].epoch, NULL);
}

void tern__registry_fini(tern_runtime *rt)
{
    if (!rt->shards || !rt->shards[0].epoch.global)
        return; /* never initialised */
    /* What was finished away last; a loop that was never made (a failed
     * tern_runtime_new) ran nothing. */
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (rt->loops[i])
            tern__registry_tidy(rt->loops[i], 0);
    /* Nothing walks any more: every deferred header can go back. */
    for (unsigned i = 0; i < rt->nshards; i++)
        ck_epoch_reclaim(&rt->shards[i].epoch);
}

tern_context *tern__task_swap_ctx(tern_task *t, tern_context *c)
{
    tern__shard *sh = shard_of(t);
    tern__spin_lock(&sh->lock);
    tern_context *old = t->ctx;
    t->ctx = c;
    tern__spin_unlock(&sh->lock);
    return old;
}

int tern_task_set_name(tern_task *h, const char *name)
{
    tern_task *t = h ? tern__task_of(h) : tern__task_self();
    if (!t)
        return -EINVAL;
    char *copy = NULL;
    if (name) {
        size_t n = strlen(name);
        if (n > 255)
            return -ENAMETOOLONG;
        if (!(copy = malloc(n + 1)))
            return -ENOMEM;
        memcpy(copy, name, n + 1);
    }
    tern__shard *sh = shard_of(t);
    tern__spin_lock(&sh->lock);
    char *old = atomic_exchange_explicit(&t->name, copy, TERN__RELAXED);
    tern__spin_unlock(&sh->lock);
    free(old);
    return 0;
}

int tern_task_get_name(const tern_task *h, char *buf, size_t len)
{
    tern_task *t = h ? tern__task_of(h) : tern__task_self();
    if (!t || (!buf && len))
        return -EINVAL;
    tern__shard *sh = shard_of(t);
    tern__spin_lock(&sh->lock);
    const char *name = atomic_load_explicit(&t->name, TERN__RELAXED);
    size_t n = name ? strlen(name) : 0;
    if (len) {
        size_t k = n < len - 1 ? n : len - 1;
        memcpy(buf, name ? name : "", k);
        buf[k] = 0;
    }
    tern__spin_unlock(&sh->lock);
    return (int)n;
}

int tern_task_location(const tern_task *h, const char **file, int *line)
{
    tern_task *t = tern__task_of(h);
    if (!t)
        return -EINVAL;
    if (!t->file)
        return -ENOENT;
    if (file)
        *file = t->file;
    if (line)
        *line = (int)t->line;
    return 0;
}

void tern__wait_note(int kind, uintptr_t obj)
{
    tern_loop *w = tern__loop_self();
    tern_task *t = w ? w->current : NULL;
    if (!t)
        return;
    atomic_store_explicit(&t->wait_obj, obj, TERN__RELAXED);
    atomic_store_explicit(&t->wait_since, atomic_load_explicit(&w->now, TERN__RELAXED),
                          TERN__RELAXED);
    atomic_store_explicit(&t->wait_kind, (uint8_t)kind, TERN__RELAXED);
}

int tern__task_parked(const tern_task *h)
{
    const tern_task *t = tern__task_of(h);
    /* acquire: pairs with the release of the switch-out, so a caller that
     * sees the task idle also sees the wait it noted before parking */
    uint32_t st = atomic_load_explicit(&((tern_task *)t)->state, TERN__ACQUIRE);
    if (st &
        (TERN__TS_SCHEDULED | TERN__TS_RUNNING | TERN__TS_NOTIFIED | TERN__TS_COMPLETE))
        return -1;
    return atomic_load_explicit(&((tern_task *)t)->wait_kind, TERN__RELAXED);
}

static uint64_t new_id(tern_loop *w)
{
    if (!w)
        return atomic_fetch_add_explicit(&next_id, 1, TERN__RELAXED);
    if (w->id_next == w->id_end) {
        w->id_next = atomic_fetch_add_explicit(&next_id, ID_BATCH, TERN__RELAXED);
        w->id_end = w->id_next + ID_BATCH;
    }
    return w->id_next++;
}

int tern__task_new(tern_runtime *rt, tern_task_fn fn, void *arg, int kind,
                   tern_task **out, int handle, const char *file, int line)
{
    if (atomic_load_explicit(&rt->closing, TERN__RELAXED))
        return -ESHUTDOWN;
    tern_loop *w = tern__loop_self();
    if (w && w->rt != rt)
        w = NULL;
    /* The seam covers recycled headers too: a spawn must cope whether or
     * not its header came from malloc. */
    tern_task *t = TERN__FAULT_ALLOC(header_get(rt, w));
    if (!t)
        return -ENOMEM;
    atomic_init(&t->state, TERN__TS_SCHEDULED);
    atomic_init(&t->refs, handle ? 2 : 1); /* the scheduler's, the caller's */
    atomic_init(&t->joiner, 0);
    t->next = NULL;
    t->fiber.stack = NULL;
#ifdef TERN_TSAN
    t->fiber.tsan = NULL;
#endif
    t->rt = rt;
    t->fn = fn;
    t->arg = arg;
    t->on_exit = NULL;
    t->drop_only = 0;
    t->scope = NULL;
    t->result = NULL;
    t->status = 0;
    t->kind = (uint8_t)kind;
    t->started = 0;
    t->saw_cancel = 0;
    t->yielded = 0;
    t->ctx = tern__context_capture(); /* a task starts in its spawner's context */
    t->id = new_id(w);
    t->file = file;
    t->line = line > 0 ? (uint32_t)line : 0;
    atomic_init(&t->name, NULL);
    /* The spawning worker's shard: a task is mostly finished where it was
     * spawned, so its registry line stays in that core's cache. */
    t->shard = (uint16_t)(w ? w->index : rt->nworkers);
    atomic_init(&t->wait_kind, TERN__W_NONE);
    atomic_init(&t->wait_obj, 0);
    atomic_init(&t->wait_since, 0);
    count(rt, w, CNT_SPAWNED);
    registry_add(t);
    if (out)
        *out = t;
    return 0;
}

/* Puts t at the back of w's queue and lets a sleeping worker help when more
 * than one task waits here (Tokio's rule). The relaxed look at the sleepers
 * spares the fence on this hot path when nobody sleeps; a sleeper it misses
 * was registering at that very moment and looks at every queue after
 * registering (worker.c), and at worst this worker runs the task itself:
 * nothing is lost. */
static void requeue(tern_loop *w, tern_task *t)
{
    tern__queue_push(w, t);
    if (!atomic_load_explicit(&w->searching, TERN__RELAXED) &&
        atomic_load_explicit(&w->rt->idle.nsleepers, TERN__RELAXED) &&
        tern__queue_len(w) > 1)
        tern__notify_work(w->rt);
}

/*
 * Puts a SCHEDULED task on a queue: the calling worker's own queue when the
 * caller is a worker of the same runtime (its LIFO slot when lifo is set),
 * the inject queue otherwise; then wakes an idle worker if the work could
 * use one.
 */
void tern__schedule(tern_runtime *rt, tern_task *t, int lifo)
{
    tern_loop *w = tern__loop_self();
    if (!w || w->rt != rt) {
        tern__inject_push(rt, t, t, 1);
        tern__notify_work(rt);
        return;
    }
    if (lifo) {
        /* Only the owner fills the slot; thieves only empty it. So an
         * empty slot stays empty until our store, which needs no
         * read-modify-write (one locked instruction less per hand-off). */
        tern_task *prev = atomic_load_explicit(&w->lifo, TERN__RELAXED);
        if (!prev) {
            atomic_store_explicit(&w->lifo, t, TERN__RELEASE);
            return; /* one task, run next by us: nothing for others */
        }
        prev = atomic_exchange_explicit(&w->lifo, t, TERN__ACQ_REL);
        if (!prev)
            return;
        t = prev;
    }
    requeue(w, t);
}

static void switch_out(tern_task *t, int reason);
static int run_begin(tern_loop *w, tern_task *t);
static void run_end(tern_loop *w, tern_task *t);
static void took_over(void);

static int spawn_fiber(tern_runtime *rt, tern_task_fn fn, void *arg,
                       void (*drop)(void *arg), tern_task **out, const char *file,
                       int line)
{
    if (!rt || !fn)
        return -EINVAL;
    tern_task *t;
    int r = tern__task_new(rt, fn, arg, TERN__KIND_FIBER, &t, out != NULL, file, line);
    if (r < 0)
        return r;
    /* before it is queued: only the worker that runs it reads them */
    t->on_exit = drop;
    t->drop_only = 1;
    if (out)
        *out = tern__handle(t);
    tern__schedule(rt, t, 0);
    /* Spawning is work too: a task that spawns in a loop without ever
     * waiting yields once its cooperative budget is spent, so the tasks it
     * made run while their headers are still warm instead of piling up
     * (spawn_many's backlog grew to 200 MB and 4x the time without it). */
    tern_loop *w = tern__loop_self();
    tern_task *me = w && w->rt == rt ? w->current : NULL;
    if (me && (me->budget == 0 || --me->budget == 0)) {
        TERN__STAT_INC(w, budget_yields);
        switch_out(me, TERN__SW_YIELD);
    }
    return 0;
}

int tern_runtime_spawn_at(tern_runtime *rt, tern_task_fn fn, void *arg, tern_task **out,
                          const char *file, int line)
{
    return spawn_fiber(rt, fn, arg, NULL, out, file, line);
}

int tern_runtime_spawn_owned_at(tern_runtime *rt, tern_task_fn fn, void *arg,
                                void (*drop)(void *arg), tern_task **out,
                                const char *file, int line)
{
    return spawn_fiber(rt, fn, arg, drop, out, file, line);
}

int tern_spawn_owned_at(tern_task_fn fn, void *arg, void (*drop)(void *arg),
                        tern_task **out, const char *file, int line)
{
    tern_loop *w = tern__loop_self();
    if (!w)
        return -EPERM;
    return tern_runtime_spawn_owned_at(w->rt, fn, arg, drop, out, file, line);
}

int tern__spawn_on_exit(tern_runtime *rt, tern_task_fn fn, void *arg,
                        void (*on_exit)(void *arg), tern_task **out)
{
    tern_task *t;
    int r = tern__task_new(rt, fn, arg, TERN__KIND_FIBER, &t, out != NULL, NULL, 0);
    if (r < 0)
        return r;
    t->on_exit = on_exit; /* before it is queued: only a worker finishes it */
    if (out)
        *out = tern__handle(t);
    tern__schedule(rt, t, 0);
    return 0;
}

int tern_spawn_at(tern_task_fn fn, void *arg, tern_task **out, const char *file, int line)
{
    tern_loop *w = tern__loop_self();
    if (!w)
        return -EPERM;
    return tern_runtime_spawn_at(w->rt, fn, arg, out, file, line);
}

int(tern_runtime_spawn)(tern_runtime *rt, tern_task_fn fn, void *arg, tern_task **out)
{
    return tern_runtime_spawn_at(rt, fn, arg, out, NULL, 0);
}

int(tern_spawn)(tern_task_fn fn, void *arg, tern_task **out)
{
    return tern_spawn_at(fn, arg, out, NULL, 0);
}

/* ---- the state machine -------------------------------------------------------- */

void tern__task_wake(tern_task *t, uint32_t extra)
{
    uint32_t s = atomic_load_explicit(&t->state, TERN__ACQUIRE);
    for (;;) {
        uint32_t n;
        if (s & TERN__TS_COMPLETE)
            return;
        if (s & TERN__TS_RUNNING)
            n = s | TERN__TS_NOTIFIED | extra;
        else if (s & TERN__TS_SCHEDULED)
            n = s | extra;
        else
            n = s | TERN__TS_SCHEDULED | extra;
        /* Even when nothing changes (NOTIFIED or SCHEDULED already set) the
         * CAS writes: the task's next read-modify-write of the state then
         * reads from our release, so it sees the condition we set before
         * waking it. Returning without a write would let a coalesced wake
         * pass unseen on weakly ordered CPUs.
         * acq_rel: acquire the parker's release (its context is saved),
         * release our own writes (the condition we are waking it for). */
        if (atomic_compare_exchange_weak_explicit(&t->state, &s, n, TERN__ACQ_REL,
                                                  TERN__ACQUIRE)) {
            if (n != s && !(s & (TERN__TS_RUNNING | TERN__TS_SCHEDULED))) {
                /* Its saved context and the frames of the wait it returns
                 * through are cold by now (ping_pong's 2000 tasks missed
                 * on most of them): start loading them while the waker
                 * finishes its own work. */
                if (t->fiber.sp)
                    for (int k = 0; k < 8; k++)
                        __builtin_prefetch((char *)t->fiber.sp + 64 * k);
                tern_loop *w = tern__loop_self();
                tern__schedule(t->rt, t, w && w->current); /* a task's wake: LIFO */
            }
            return;
        }
    }
}

void tern_unpark(tern_task *h)
{
    tern_task *t = tern__task_of(h);
    if (t)
        tern__task_wake(t, 0);
}

int tern_task_cancel(tern_task *h)
{
    tern_task *t = tern__task_of(h);
    if (!t)
        return -EINVAL;
    uint32_t s = atomic_load_explicit(&t->state, TERN__ACQUIRE);
    if (s & TERN__TS_COMPLETE)
        return -EALREADY;
    tern__task_wake(t, TERN__TS_CANCELLED);
    return 0;
}

int tern_task_done(const tern_task *h)
{
    tern_task *t = tern__task_of(h);
    if (!t)
        return -EINVAL;
    return (atomic_load_explicit(&t->state, TERN__ACQUIRE) & TERN__TS_COMPLETE) != 0;
}

uint64_t tern_task_id(const tern_task *h)
{
    const tern_task *t = tern__task_of(h);
    return t ? t->id : 0;
}

tern_task *tern__task_self(void)
{
    tern_loop *w = tern__loop_self();
    return w ? w->current : NULL;
}

tern_task *tern_task_current(void)
{
    tern_task *t = tern__task_self();
    return t ? tern__handle(t) : NULL;
}

uint64_t tern_task_current_id(void)
{
    tern_task *t = tern__task_self();
    return t ? t->id : 0;
}

/* Whether t was cancelled. A suspension point that returns -ECANCELED
 * marks the task, so that a body which then returns is reported as
 * cancelled (the C form of letting asyncio's CancelledError propagate); a
 * body that finished without meeting one keeps its result. */
static int cancelled(tern_task *t)
{
    /* A scope that expired or was cancelled cancels what is inside it
     * (the task's own cancel state is not touched); a shield hides what
     * lies outside it, the task's own cancel included. */
    for (struct tern__scope *sc = t->scope; sc; sc = sc->outer) {
        if (sc->expired || sc->cancelled)
            return 1;
        if (sc->shield)
            return 0;
    }
    if (!(atomic_load_explicit(&t->state, TERN__RELAXED) & TERN__TS_CANCELLED))
        return 0;
    t->saw_cancel = 1;
    return 1;
}

/* The scope whose deadline bounds t's suspension points: the earliest
 * deadline up to the innermost shield (the innermost scope on a tie), or
 * NULL when none has one. */
static struct tern__scope *scope_due(tern_task *t)
{
    struct tern__scope *due = NULL;
    for (struct tern__scope *sc = t->scope; sc; sc = sc->outer) {
        if (sc->deadline && (!due || sc->deadline < due->deadline))
            due = sc;
        if (sc->shield)
            break;
    }
    return due;
}

int tern_scope_enter(tern_scope *scope, uint64_t deadline, int flags)
{
    tern_task *t = tern__task_self();
    if (!scope || (flags & ~TERN_SCOPE_SHIELD))
        return -EINVAL;
    if (!t)
        return -EPERM;
    struct tern__scope *sc = (struct tern__scope *)(void *)scope;
    *sc = (struct tern__scope){.outer = t->scope,
                               .deadline = deadline,
                               .shield = (flags & TERN_SCOPE_SHIELD) != 0};
    t->scope = sc;
    return 0;
}

int tern_scope_cancel(tern_scope *scope)
{
    tern_task *t = tern__task_self();
    if (!scope)
        return -EINVAL;
    for (struct tern__scope *sc = t ? t->scope : NULL; sc; sc = sc->outer) {
        if (sc == (struct tern__scope *)(void *)scope) {
            int was = sc->cancelled;
            sc->cancelled = 1;
            return was ? -EALREADY : 0;
        }
    }
    return -EINVAL; /* not a scope the calling task is in */
}

int tern_scope_exit(tern_scope *scope)
{
    tern_task *t = tern__task_self();
    struct tern__scope *sc = (struct tern__scope *)(void *)scope;
    if (!scope || !t || t->scope != sc)
        return -EINVAL; /* scopes leave innermost first, on their own task */
    t->scope = sc->outer;
    return sc->expired ? -ETIMEDOUT : sc->cancelled ? -ECANCELED : 0;
}

int tern_task_uncancel(void)
{
    tern_task *t = tern__task_self();
    if (!t)
        return -EPERM;
    /* a wake the cancel made may linger as a permit: one early return of a
     * park at most, which every wait loops over */
    uint32_t s = atomic_fetch_and_explicit(&t->state, ~(uint32_t)TERN__TS_CANCELLED,
                                           TERN__RELAXED);
    t->saw_cancel = 0;
    return (s & TERN__TS_CANCELLED) != 0;
}

int tern__cancelled(void)
{
    tern_loop *w = tern__loop_self();
    return w && w->current && cancelled(w->current);
}

/* The fiber's first frame. Never returns: the last switch gives the stack
 * back to the worker, which finishes the task. */
static void task_entry(void *arg)
{
    tern_task *t = arg;
    took_over();
    t->result = t->fn(t->arg);
    switch_out(t, TERN__SW_DONE);
    __builtin_unreachable();
}

/*
 * Switches from the running task to the next one; returns when the task is
 * switched in again, possibly on another worker.
 *
 * While the turn lasts (TERN__EVENT_INTERVAL tasks between two looks at
 * timers, handles and I/O) the next local task is switched to directly,
 * the way the worker's loop would pick it (the LIFO slot, within its
 * streak, then the queue): a task that wakes another and waits hands over
 * in one switch instead of two, and nothing runs in between. The worker
 * gets control back when the turn ends or the worker has nothing local.
 * What the loop does after a switch-out (run_end) is then done by the task
 * switched to, in took_over, once this task's context is saved.
 */
static void switch_out(tern_task *t, int reason)
{
    tern_loop *w = t->loop;
    t->reason = (uint8_t)reason;
    tern__fiber *to = &w->sched;
    /* Not when this poll is being timed, nor when the next one is due to
     * be: the worker's own context times them (poll_timed). */
    while (w->turn_ran < TERN__EVENT_INTERVAL && !w->timing && w->poll_countdown > 1) {
        tern_task *next = tern__next_local(w);
        if (!next)
            break;
        if (run_begin(w, next)) {
            TERN__STAT_INC(w, direct_switches);
            w->handed_from = t;
            to = &next->fiber;
            break;
        }
    }
    tern__fiber_switch(&t->fiber, to, reason == TERN__SW_DONE);
    took_over();
}

/* ---- the join slot ----------------------------------------------------------------
 *
 * t->joiner holds at most one joiner, as a tagged pointer: a task (tag
 * TERN__JOIN_TASK, holding a reference to itself), a foreign thread's
 * waiter (TERN__JOIN_THREAD) or a future (TERN__JOIN_FUTURE, holding a
 * reference to the future). A joiner claims the empty slot and then reads
 * the state; finish writes COMPLETE and then empties the slot, telling
 * whoever it held. Both sides are seq_cst, so one of them sees the other:
 * either finish finds the joiner, or the joiner sees COMPLETE (and takes
 * itself back, or learns that finish took it). */

typedef void (*future_done_fn)(void *future, void *result, int status);
/* relaxed: a finisher reads it only after taking a future out of a slot,
 * which the future's side put there after storing the hook */
static _Atomic(future_done_fn) future_done_hook;

void tern__join_future_hook(future_done_fn done)
{
    atomic_store_explicit(&future_done_hook, done, TERN__RELAXED);
}

static uintptr_t join_word(void *who, int tag)
{
    return (uintptr_t)who | (uintptr_t)tag;
}

int tern__join_claim(tern_task *t, void *who, int tag)
{
    uintptr_t exp = 0;
    return atomic_compare_exchange_strong_explicit(&t->joiner, &exp, join_word(who, tag),
                                                   TERN__SEQ_CST, TERN__RELAXED);
}

int tern__join_unclaim(tern_task *t, void *who, int tag)
{
    uintptr_t exp = join_word(who, tag);
    return atomic_compare_exchange_strong_explicit(&t->joiner, &exp, 0, TERN__SEQ_CST,
                                                   TERN__RELAXED);
}

int tern__task_has_joiner(const tern_task *h)
{
    return atomic_load_explicit(&tern__task_of(h)->joiner, TERN__SEQ_CST) != 0;
}

/* Empties the slot of a task that just became COMPLETE and tells the
 * joiner it held, if any: its result and status are final. */
static void join_notify(tern_task *t)
{
    uintptr_t j = atomic_exchange_explicit(&t->joiner, 0, TERN__SEQ_CST);
    void *who = (void *)(j & ~(uintptr_t)3);
    switch (j & 3) {
    case TERN__JOIN_THREAD:
        tern__thread_wake(who);
        break;
    case TERN__JOIN_FUTURE:
        atomic_load_explicit(&future_done_hook, TERN__RELAXED)(who, t->result, t->status);
        break;
    default:
        if (who) {
            tern__task_wake(who, 0);
            tern__task_unref(who);
        }
    }
}

/* ---- transitions made outside the worker loop ------------------------------------ */

uint32_t tern__task_job_start(tern_task *t)
{
    /* acquire: the spawner's writes to the header and to arg */
    return atomic_fetch_xor_explicit(&t->state, TERN__TS_SCHEDULED | TERN__TS_RUNNING,
                                     TERN__ACQUIRE);
}

int tern__task_freeze(tern_task *t)
{
    const uint32_t busy =
        TERN__TS_SCHEDULED | TERN__TS_RUNNING | TERN__TS_NOTIFIED | TERN__TS_COMPLETE;
    uint32_t s = atomic_load_explicit(&t->state, TERN__RELAXED);
    /* idle is the only state nobody else moves a task out of; once RUNNING,
     * a wake only sets NOTIFIED */
    while (!(s & busy) &&
           !atomic_compare_exchange_weak_explicit(&t->state, &s, s | TERN__TS_RUNNING,
                                                  TERN__ACQUIRE, TERN__RELAXED))
        ;
    return !(s & busy);
}

void tern__task_give_up(tern_task *t)
{
    t->status = -ECANCELED;
    t->result = NULL;
    uint32_t s = atomic_load_explicit(&t->state, TERN__RELAXED);
    /* seq_cst: the join slot's pairing, as in tern__task_finish */
    while (!atomic_compare_exchange_weak_explicit(
        &t->state, &s, s | TERN__TS_COMPLETE | TERN__TS_CANCELLED, TERN__SEQ_CST,
        TERN__RELAXED))
        ;
    join_notify(t);
}

uint8_t tern__cancel_seen(const tern_task *t)
{
    return t->saw_cancel;
}

void tern__cancel_seen_set(tern_task *t, uint8_t seen)
{
    t->saw_cancel = seen;
}

void tern__task_finish(tern_loop *w, tern_task *t)
{
    tern_runtime *rt = t->rt;
    if (t->fiber.stack) {
        tern__fiber_destroy(&t->fiber);
        tern__stack_put(rt->stacks, w ? w->index : TERN__STACK_NO_CACHE, t->fiber.stack);
        t->fiber.stack = NULL;
    }
    if (t->on_exit && !t->drop_only)
        t->on_exit(t->arg);
    int linked_here = registry_remove(w, t);
    /* One transition to COMPLETE: clearing RUNNING first would show an
     * idle task for an instant, and a racing wake (a cancel) would queue a
     * finished task a second time. release: result and status before
     * COMPLETE; seq_cst: see the joiner slot below. */
    uint32_t s = atomic_load_explicit(&t->state, TERN__RELAXED);
    while (!atomic_compare_exchange_weak_explicit(
        &t->state, &s, (s & TERN__TS_CANCELLED) | TERN__TS_COMPLETE, TERN__SEQ_CST,
        TERN__RELAXED))
        ;
    join_notify(t);
    count(rt, w, CNT_FINISHED);
    if (atomic_load_explicit(&rt->closing, TERN__ACQUIRE)) {
        pthread_mutex_lock(&rt->done_lock);
        pthread_cond_broadcast(&rt->done_cond);
        pthread_mutex_unlock(&rt->done_lock);
    }
    if (linked_here)
        tern__task_unref(t); /* the scheduler's reference */
    else
        hand_off(t);
}

/* One poll in TERN__POLL_SAMPLE (when tern_config.metrics is on) is timed
 * into the histogram; the countdown costs every other poll one decrement. */
static __attribute__((noinline)) void poll_timed(tern_loop *w, tern_task *t)
{
    if (!w->rt->cfg.metrics) {
        w->poll_countdown = UINT32_MAX;
        tern__fiber_switch(&w->sched, &t->fiber, 0);
        return;
    }
    w->poll_countdown = TERN__POLL_SAMPLE;
    w->timing = 1; /* one poll of one task: no direct switch to another */
    uint64_t t0 = tern_now();
    tern__fiber_switch(&w->sched, &t->fiber, 0);
    uint64_t us = (tern_now() - t0) / 1000;
    w->timing = 0;
    unsigned b = us ? 64 - (unsigned)__builtin_clzll(us) : 0;
    if (b >= TERN__POLL_HIST)
        b = TERN__POLL_HIST - 1;
    atomic_store_explicit(&w->poll_hist[b],
                          atomic_load_explicit(&w->poll_hist[b], TERN__RELAXED) + 1,
                          TERN__RELAXED);
}

/* Makes t, popped from a queue (state SCHEDULED), the task w runs next:
 * RUNNING, current, counted against the turn. Runs on the worker's own
 * context or, for a direct switch, on the fiber that is about to switch
 * away. Returns 0 when t finished instead (cancelled before it started, or
 * no stack for it): there is nothing to switch to. */
static int run_begin(tern_loop *w, tern_task *t)
{
    /* A task run while the runtime closes is cancelled, so shutdown needs
     * to find only the parked ones (see the registry). */
    if (atomic_load_explicit(&w->rt->closing, TERN__RELAXED))
        atomic_fetch_or_explicit(&t->state, TERN__TS_CANCELLED, TERN__RELAXED);
    uint32_t s = 0;
    if (t->yielded) {
        /* Still RUNNING from before its yield: nobody else could have
         * queued it, and the queue's release/acquire carried its context. */
        t->yielded = 0;
    } else {
        /* acquire: the context and data of the worker that last ran it */
        s = atomic_fetch_xor_explicit(&t->state, TERN__TS_SCHEDULED | TERN__TS_RUNNING,
                                      TERN__ACQUIRE);
    }
    if (__builtin_expect(s & TERN__TS_COMPLETE, 0)) {
        /* Invariant 2 broken: fail loudly instead of corrupting the heap. */
        static const char msg[] = "tern: a finished task was scheduled again\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
    }
    w->turn_ran++;
    if (!t->started) {
        t->started = 1;
        tern__stack *st = NULL;
        if ((s & TERN__TS_CANCELLED) ||
            !(st = tern__stack_get(w->rt->stacks, w->index))) {
            /* cancelled before it started, or no stack: its body never runs,
             * and what arg owns is handed to drop */
            t->status = s & TERN__TS_CANCELLED ? -ECANCELED : -ENOMEM;
            TERN__STAT_INC(w, never_ran);
            /* On a direct switch we are still on the fiber switching out:
             * drop and on_exit run outside any task all the same, and the
             * wakes they make go where the loop's would. */
            tern_task *cur = w->current;
            w->current = NULL;
            if (t->on_exit && t->drop_only)
                t->on_exit(t->arg);
            tern__task_finish(w, t);
            w->current = cur;
            return 0;
        }
        tern__fiber_init(&t->fiber, st, task_entry, t);
        t->unguarded = !st->guarded;
    }
    t->loop = w;
    t->budget = (uint16_t)w->rt->cfg.budget;
    w->poll_countdown--;
    w->current = t;
    tern__fiber_set_current(t->fiber.stack, t->id);
    TERN__STAT_INC(w, tasks_run);
    /* release: the watchdog reads the task's spawn fields through it */
    atomic_store_explicit(&w->busy_task, t, TERN__RELEASE);
    return 1;
}

/* Applies the transition t's switch-out reason asks for. t has switched
 * out of w and its context is saved: this runs on the worker's own context
 * or on the fiber t switched to directly, never on t's. */
static void run_end(tern_loop *w, tern_task *t)
{
    /* Without a guard page (old kernels, past the mapping budget) an
     * overflow is caught by the canary, at the latest here. */
    if (__builtin_expect(t->unguarded, 0) && tern__stack_check(t->fiber.stack))
        tern__stack_overflow_abort(t->fiber.stack, t->id);

    if (t->reason == TERN__SW_DONE) {
        if (t->saw_cancel)
            t->status = -ECANCELED;
        tern__task_finish(w, t);
        return;
    }
    if (t->reason == TERN__SW_YIELD) {
        /* A yield leaves the state RUNNING: a wake meanwhile only sets
         * NOTIFIED (a stale permit at worst), so nobody else queues it. */
        t->yielded = 1;
        /* A yield goes behind every ready task, overflow included: pushed
         * on a full local queue it would run again long before the tasks
         * that overflowed, which come back one per EVENT_INTERVAL while the
         * queue stays full (1,000 yielders on one worker: some had not run
         * when 600 had finished). Without a backlog it stays local. */
        if (atomic_load_explicit(&w->rt->inject_len, TERN__RELAXED)) {
            tern__inject_push(w->rt, t, t, 1);
            if (atomic_load_explicit(&w->rt->idle.nsleepers, TERN__RELAXED))
                tern__notify_work(w->rt);
        } else
            requeue(w, t);
        return;
    }
    uint32_t s = atomic_load_explicit(&t->state, TERN__RELAXED);
    for (;;) {
        uint32_t n = s & ~(uint32_t)(TERN__TS_RUNNING | TERN__TS_NOTIFIED);
        if (s & TERN__TS_NOTIFIED)
            n |= TERN__TS_SCHEDULED;
        /* release: the saved context and the task's writes, for whoever
         * wakes it and whichever worker runs it next; acquire: what a waker
         * wrote before setting NOTIFIED, for the task's next run */
        if (atomic_compare_exchange_weak_explicit(&t->state, &s, n, TERN__ACQ_REL,
                                                  TERN__RELAXED)) {
            if (n & TERN__TS_SCHEDULED)
                requeue(w, t);
            return;
        }
    }
}

/* Worker side: runs t (popped from a queue, state SCHEDULED) until control
 * comes back to the worker's own context, then finishes the switch-out of
 * whichever task came back: t, or the last of the tasks it handed over to
 * directly. */
void tern__task_run(tern_loop *w, tern_task *t)
{
    if (!run_begin(w, t))
        return;
    if (__builtin_expect(w->poll_countdown == 0, 0)) {
        poll_timed(w, t);
    } else {
        tern__fiber_switch(&w->sched, &t->fiber, 0);
    }
    t = w->current;
    atomic_store_explicit(&w->busy_task, NULL, TERN__RELAXED);
    tern__fiber_set_current(NULL, 0);
    w->current = NULL;
    run_end(w, t);
}

/* A direct switch finishes here, first thing on the fiber switched to
 * (its resumed switch_out, or task_entry): the switch-out of the task it
 * came from, whose context is saved by now. */
static void took_over(void)
{
    tern_loop *w = tern__loop_self();
    tern_task *from = w->handed_from;
    if (from) {
        w->handed_from = NULL;
        /* As on the worker's own context: no task is current while the
         * previous one's switch-out finishes (its on_exit, its joiner's
         * future callbacks, context destructors), so none of that runs as
         * this task, waits as it, or sends its wakes to our LIFO slot. */
        tern_task *me = w->current;
        w->current = NULL;
        run_end(w, from);
        w->current = me;
    }
}

/* ---- suspension points ---------------------------------------------------------- */

static tern_task *self_task(void)
{
    return tern__task_self();
}

int tern_yield(void)
{
    tern_task *t = self_task();
    if (!t)
        return -EPERM;
    struct tern__scope *due = t->scope ? scope_due(t) : NULL;
    if (due && tern_now() >= due->deadline)
        due->expired = 1; /* a deadline bounds a loop of yields too */
    if (cancelled(t))
        return -ECANCELED;
    switch_out(t, TERN__SW_YIELD);
    return cancelled(t) ? -ECANCELED : 0;
}

int tern__yield_nocancel(void)
{
    tern_task *t = self_task();
    if (!t)
        return -EPERM;
    switch_out(t, TERN__SW_YIELD);
    return 0;
}

static void sleep_put(tern__sleep *sl)
{
    if (atomic_fetch_sub_explicit(&sl->owners, 1, TERN__ACQ_REL) == 1)
        free(sl);
}

/* Called by the wheel's owner (handle.c dispatches by timer kind). */
void tern__sleep_fire(tern__sleep *sl)
{
    tern_task *t = sl->task;
    tern__task_wake(t, 0);
    tern__task_unref(t);
    sleep_put(sl);
}

void tern__sleep_reap(tern__sleep *sl)
{
    tern__task_unref(sl->task);
    sleep_put(sl);
}

tern__sleep *tern__sleep_of(tern__timer *tm)
{
    return (tern__sleep *)((char *)tm - offsetof(tern__sleep, timer));
}

/* Arms a timer on the current worker's wheel that wakes t at deadline. */
static tern__sleep *sleep_arm(tern_task *t, uint64_t deadline)
{
    tern__sleep *sl = TERN__FAULT_ALLOC(malloc(sizeof *sl));
    if (!sl)
        return NULL;
    memset(&sl->timer, 0, sizeof sl->timer);
    sl->timer.deadline = deadline;
    sl->timer.kind = TERN__TIMER_SLEEP;
    sl->task = tern_task_ref(t);
    sl->loop = t->loop;
    atomic_init(&sl->owners, 2);
    tern__wheel_insert(&t->loop->wheel, &sl->timer);
    return sl;
}

/* Disarms after the task resumed. Returns 1 when the timer had fired. */
static int sleep_disarm(tern_task *t, tern__sleep *sl)
{
    if (!tern__timer_cancel(&sl->timer)) {
        sleep_put(sl); /* fired: the wheel side let go or will */
        return 1;
    }
    if (sl->loop == t->loop) {
        /* We are on the wheel's owner thread: unlink now instead of leaving
         * the entry for the reaper. */
        tern__wheel_remove(&t->loop->wheel, &sl->timer);
        tern__task_unref(t);
        sleep_put(sl);
        sleep_put(sl);
        return 0;
    }
    /* Resumed on another worker: hand our share to the owner, which
     * unlinks the entry at its next turn. Left in the wheel, it would keep
     * the task (and its header) alive until the deadline, which for a
     * recv_until(now + 30 s) that succeeded at once is 30 s. */
    tern_loop *owner = sl->loop;
    tern__sleep *head = atomic_load_explicit(&owner->sleep_reap, TERN__RELAXED);
    do
        sl->reap_next = head;
    while (!atomic_compare_exchange_weak_explicit(&owner->sleep_reap, &head, sl,
                                                  TERN__SEQ_CST, TERN__RELAXED));
    /* A parked owner would sleep until that very deadline: wake it (seq_cst
     * pairs with park's store of parked, then its look at the list). */
    if (!head && atomic_exchange_explicit(&owner->parked, 0, TERN__SEQ_CST))
        tern__loop_wake(owner);
    return 0;
}

void tern__sleep_reap_remote(tern_loop *w)
{
    tern__sleep *sl = atomic_exchange_explicit(&w->sleep_reap, NULL, TERN__ACQUIRE);
    while (sl) {
        tern__sleep *next = sl->reap_next;
        if (tern__wheel_remove(&w->wheel, &sl->timer)) {
            /* the wheel's share, as reap would have dropped it */
            tern__task_unref(sl->task);
            sleep_put(sl);
        }
        sleep_put(sl); /* the share the task handed over */
        sl = next;
    }
}

int tern__park(uint64_t deadline, int nocancel)
{
    tern_task *t = self_task();
    if (!t)
        return -EPERM;
    if (!nocancel && cancelled(t))
        return -ECANCELED;
    /* A permit already waiting: take it without switching, while the
     * cooperative budget lasts. */
    uint32_t s = atomic_load_explicit(&t->state, TERN__ACQUIRE);
    if ((s & TERN__TS_NOTIFIED) && t->budget > 0) {
        t->budget--;
        atomic_fetch_and_explicit(&t->state, ~(uint32_t)TERN__TS_NOTIFIED, TERN__ACQUIRE);
        return 0;
    }
    if (s & TERN__TS_NOTIFIED)
        TERN__STAT_INC(t->loop, budget_yields);
    /* A scope's deadline earlier than the wait's own: reaching it expires
     * the scope, which the wait reports as a cancel (asyncio.timeout). A
     * wait that must finish (nocancel) is bounded by its own only. */
    struct tern__scope *due = nocancel ? NULL : scope_due(t);
    if (due && deadline && deadline != UINT64_MAX && deadline < due->deadline)
        due = NULL;
    uint64_t until = due ? due->deadline : deadline;
    tern__sleep *sl = NULL;
    if (until && until != UINT64_MAX) {
        if (tern_now() >= until) {
            if (!due)
                return -ETIMEDOUT;
            due->expired = 1;
            return -ECANCELED;
        }
        sl = sleep_arm(t, until);
        if (!sl)
            return -ENOMEM;
    }
    switch_out(t, TERN__SW_PARK);
    int fired = sl ? sleep_disarm(t, sl) : 0;
    if (fired && due)
        due->expired = 1;
    if (!nocancel && cancelled(t))
        return -ECANCELED;
    return fired ? -ETIMEDOUT : 0;
}

int tern_park(uint64_t deadline)
{
    tern__wait_note(TERN__W_PARK, (uintptr_t)deadline);
    return tern__park(deadline, 0);
}

int tern_sleep_until(uint64_t deadline)
{
    if (!self_task())
        return -EPERM;
    tern__wait_note(TERN__W_SLEEP, (uintptr_t)deadline);
    for (;;) {
        int r = tern__park(deadline ? deadline : 1, 0);
        if (r == -ETIMEDOUT)
            return 0;
        if (r < 0)
            return r;
    }
}

int tern_sleep(uint64_t ns)
{
    return tern_sleep_until(tern__after(tern_now(), ns));
}

/* ---- join ------------------------------------------------------------------------ */

static int join_result(tern_task *t, void **result)
{
    int st = t->status;
    if (result && st == 0)
        *result = t->result;
    tern__task_unref(t);
    return st;
}

int tern_join(tern_task *h, void **result)
{
    tern_task *t = tern__task_of(h);
    if (!t)
        return -EINVAL;
    tern_task *me = self_task();
    if (me == t)
        return -EINVAL;
    /* acquire: pairs with the release in finish, so result is visible */
    if (atomic_load_explicit(&t->state, TERN__ACQUIRE) & TERN__TS_COMPLETE)
        return join_result(t, result);

    if (!me && tern__loop_self())
        return -EPERM; /* a loop callback may not wait: its loop would stop */
    if (!me) {
        tern__thread_waiter tw = {0};
        if (!tern__join_claim(t, &tw, TERN__JOIN_THREAD))
            return -EBUSY;
        /* finish may or may not have taken our waiter; wait for it to let
         * go of it either way */
        if ((atomic_load_explicit(&t->state, TERN__SEQ_CST) & TERN__TS_COMPLETE) &&
            tern__join_unclaim(t, &tw, TERN__JOIN_THREAD))
            return join_result(t, result);
        tern__thread_wait(&tw);
        return join_result(t, result);
    }

    tern_task_ref(me); /* the join slot's reference */
    if (!tern__join_claim(t, me, TERN__JOIN_TASK)) {
        tern__task_unref(me);
        return -EBUSY;
    }
    int r = 0;
    tern__wait_note(TERN__W_JOIN, (uintptr_t)t->id);
    while (!(atomic_load_explicit(&t->state, TERN__SEQ_CST) & TERN__TS_COMPLETE)) {
        r = tern__park(0, 0);
        if (r == -ECANCELED)
            break;
    }
    if (r == -ECANCELED &&
        !(atomic_load_explicit(&t->state, TERN__ACQUIRE) & TERN__TS_COMPLETE)) {
        if (tern__join_unclaim(t, me, TERN__JOIN_TASK))
            tern__task_unref(me);
        /* else finish took the slot: it wakes us (a stale wake) and drops
         * the slot's reference itself */
        return -ECANCELED;
    }
    /* finish cleared the slot and dropped its reference, or we clear it */
    if (tern__join_unclaim(t, me, TERN__JOIN_TASK))
        tern__task_unref(me);
    /* acquire: pairs with the release in finish, so result is visible */
    (void)atomic_load_explicit(&t->state, TERN__ACQUIRE);
    return join_result(t, result);
}
