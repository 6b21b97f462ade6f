/*
 * Ready queues: one bounded lock-free queue per worker and the global inject
 * queue.
 *
 * Local queue (the design of Go's runq): a ring of TERN__LOCAL_QUEUE slots,
 * indices head and tail that only grow (uint32 wrap-around is harmless
 * because tail - head <= capacity).
 *
 *  - Only the owner writes tail, and only the owner writes slots, always at
 *    tail, and only while tail - head < capacity, so a slot in [head, tail)
 *    is never overwritten while it may still be read.
 *  - Every consumer (the owner popping one, a thief taking half) reads slots
 *    first and then claims them with a CAS on head. A consumer that read a
 *    slot which was consumed and overwritten meanwhile fails its CAS and
 *    throws what it read away. Slots are relaxed atomics so those stale reads
 *    are not data races.
 *  - The owner's release store of tail publishes the slot (and the task
 *    behind it); consumers load tail with acquire.
 *
 * Inject queue: two lists under one lock. Overflow from a local queue (half
 * of it, once per half-queue) becomes an array chunk at the front of the
 * overflow list:
 * those tasks are older than anything queued after them, and a task woken
 * on a busy worker must not wait behind a backlog of tasks that have not
 * even started (timers with 100k sleepers showed 70 ms of lateness when
 * overflow went to the back). Work from other threads goes to the back of
 * the remote list. Workers drain overflow first, except the fairness pull
 * every TERN__EVENT_INTERVAL tasks, which takes remote work first, so work
 * from outside cannot starve behind a stream of overflow. An atomic length
 * lets busy workers skip the lock.
 */
#include <stdlib.h>

#include "rt/fault.h"
#include "rt/internal.h"

#define MASK (TERN__LOCAL_QUEUE - 1)

static inline tern_task *slot_get(tern_loop *w, uint32_t i)
{
    return atomic_load_explicit(&w->buf[i & MASK], TERN__RELAXED);
}

static inline void slot_set(tern_loop *w, uint32_t i, tern_task *t)
{
    atomic_store_explicit(&w->buf[i & MASK], t, TERN__RELAXED);
}

/* Moves half of a full queue plus t to the inject queue. Returns 0 when a
 * consumer raced us and the queue is no longer full (retry the fast path). */
static int push_overflow(tern_loop *w, tern_task *t, uint32_t head, uint32_t tail)
{
    uint32_t n = (tail - head) / 2;
    tern__chunk *c = TERN__FAULT_ALLOC(malloc(sizeof *c));
    tern_task *stack_batch[TERN__CHUNK];
    tern_task **batch = c ? c->task : stack_batch;

    for (uint32_t i = 0; i < n; i++)
        batch[i] = slot_get(w, head + i);
    /* acq_rel: acquire so our slot reads are ordered before claiming them,
     * release for symmetry with thieves' claims. */
    if (!atomic_compare_exchange_strong_explicit(&w->head, &head, head + n, TERN__ACQ_REL,
                                                 TERN__RELAXED)) {
        free(c);
        return 0;
    }
    batch[n] = t;
    tern_runtime *rt = w->rt;
    if (!c) {
        /* No memory for a chunk: the remote list needs none. */
        for (uint32_t i = 0; i < n; i++)
            batch[i]->next = batch[i + 1];
        tern__inject_push(rt, batch[0], t, n + 1);
    } else {
        /* An array, so a pull moves pointers without touching each task
         * (walking a list of tasks another core just wrote was 15 % of
         * spawn_many). */
        c->head = 0;
        c->count = n + 1;
        pthread_mutex_lock(&rt->inject_lock);
        c->next = rt->over;
        rt->over = c;
        atomic_store_explicit(
            &rt->inject_len, atomic_load_explicit(&rt->inject_len, TERN__RELAXED) + n + 1,
            TERN__RELEASE);
        pthread_mutex_unlock(&rt->inject_lock);
    }
    /* Others should help with what we could not keep. */
    tern__notify_work(rt);
    return 1;
}

void tern__queue_push(tern_loop *w, tern_task *t)
{
    for (;;) {
        uint32_t head = atomic_load_explicit(&w->head, TERN__ACQUIRE);
        uint32_t tail = atomic_load_explicit(&w->tail, TERN__RELAXED); /* ours */
        if (tail - head < TERN__LOCAL_QUEUE) {
            slot_set(w, tail, t);
            /* release: the slot and the task's fields before the index */
            atomic_store_explicit(&w->tail, tail + 1, TERN__RELEASE);
            return;
        }
        if (push_overflow(w, t, head, tail))
            return;
    }
}

tern_task *tern__queue_pop(tern_loop *w)
{
    for (;;) {
        uint32_t head = atomic_load_explicit(&w->head, TERN__ACQUIRE);
        uint32_t tail = atomic_load_explicit(&w->tail, TERN__RELAXED);
        if (head == tail)
            return NULL;
        tern_task *t = slot_get(w, head);
        /* release: a thief that later claims past this slot must not see
         * the slot as free before our read of it is done */
        if (atomic_compare_exchange_weak_explicit(&w->head, &head, head + 1,
                                                  TERN__RELEASE, TERN__RELAXED))
            return t;
    }
}

unsigned tern__queue_len(const tern_loop *w)
{
    tern_loop *m = (tern_loop *)w;
    uint32_t head = atomic_load_explicit(&m->head, TERN__ACQUIRE);
    uint32_t tail = atomic_load_explicit(&m->tail, TERN__ACQUIRE);
    uint32_t n = tail - head;
    return n > TERN__LOCAL_QUEUE ? 0 : n; /* a torn pair of reads */
}

/*
 * Steals half of victim's queue into w's, which must have room for half a
 * queue (only w's owner calls this: when it found nothing locally, or to
 * rescue a worker that stopped making progress). Returns the number of
 * tasks moved; they are published in w's queue.
 */
unsigned tern__queue_steal(tern_loop *victim, tern_loop *w)
{
    uint32_t mytail = atomic_load_explicit(&w->tail, TERN__RELAXED);
    for (;;) {
        uint32_t head = atomic_load_explicit(&victim->head, TERN__ACQUIRE);
        /* acquire: pairs with the owner's release of tail, so the slots and
         * the tasks behind them are visible */
        uint32_t tail = atomic_load_explicit(&victim->tail, TERN__ACQUIRE);
        uint32_t n = tail - head;
        n -= n / 2;
        if (n == 0) {
            /* The LIFO slot is stolen only when the queue is empty: taking
             * it while the owner is busy keeps a woken task from waiting
             * behind a long-running one. */
            tern_task *t = atomic_load_explicit(&victim->lifo, TERN__RELAXED);
            if (t && atomic_compare_exchange_strong_explicit(
                         &victim->lifo, &t, NULL, TERN__ACQUIRE, TERN__RELAXED)) {
                slot_set(w, mytail, t);
                atomic_store_explicit(&w->tail, mytail + 1, TERN__RELEASE);
                return 1;
            }
            return 0;
        }
        if (n > TERN__LOCAL_QUEUE / 2)
            continue; /* head and tail read at different moments */
        for (uint32_t i = 0; i < n; i++)
            slot_set(w, mytail + i, slot_get(victim, head + i));
        if (atomic_compare_exchange_weak_explicit(&victim->head, &head, head + n,
                                                  TERN__ACQ_REL, TERN__RELAXED)) {
            atomic_store_explicit(&w->tail, mytail + n, TERN__RELEASE);
            return n;
        }
    }
}

/* Appends the list first..last (n tasks, linked by next) to the back of
 * the remote list. */
void tern__inject_push(tern_runtime *rt, tern_task *first, tern_task *last, unsigned n)
{
    last->next = NULL;
    pthread_mutex_lock(&rt->inject_lock);
    if (rt->remote_tail)
        rt->remote_tail->next = first;
    else
        rt->remote_head = first;
    rt->remote_tail = last;
    atomic_store_explicit(&rt->remote_len,
                          atomic_load_explicit(&rt->remote_len, TERN__RELAXED) + n,
                          TERN__RELAXED);
    atomic_store_explicit(&rt->inject_len,
                          atomic_load_explicit(&rt->inject_len, TERN__RELAXED) + n,
                          TERN__RELEASE);
    pthread_mutex_unlock(&rt->inject_lock);
}

/*
 * Takes a fair share of the inject queue: returns one task to run now and
 * moves up to half a local queue more into w's queue (which the caller
 * knows is empty or nearly so). remote_first: serve the remote list before
 * the overflow chunks (the fairness pull).
 */
tern_task *tern__inject_pull(tern_runtime *rt, tern_loop *w, int remote_first)
{
    if (atomic_load_explicit(&rt->inject_len, TERN__ACQUIRE) == 0)
        return NULL;
    tern_task *grab[TERN__CHUNK];
    tern__chunk *emptied = NULL;
    uint64_t got = 0;
    pthread_mutex_lock(&rt->inject_lock);
    uint64_t len = atomic_load_explicit(&rt->inject_len, TERN__RELAXED);
    uint64_t n = len / rt->nworkers + 1;
    uint32_t room = TERN__LOCAL_QUEUE - tern__queue_len(w);
    if (n > room / 2 + 1)
        n = room / 2 + 1;
    /* The fairness pull runs while the local queue is busy: one task, as
     * Go and Tokio take. A batch would keep the local queue from ever
     * emptying, and the overflow list, served only then, would starve. */
    if (remote_first)
        n = 1;
    tern__chunk *c = rt->over;
    if (c && !(remote_first && rt->remote_head)) {
        while (got < n && c->head < c->count)
            grab[got++] = c->task[c->head++];
        if (c->head == c->count) {
            rt->over = c->next;
            emptied = c;
        }
    } else {
        while (got < n && rt->remote_head) {
            grab[got++] = rt->remote_head;
            rt->remote_head = rt->remote_head->next;
        }
        if (!rt->remote_head)
            rt->remote_tail = NULL;
        atomic_store_explicit(&rt->remote_len,
                              atomic_load_explicit(&rt->remote_len, TERN__RELAXED) - got,
                              TERN__RELAXED);
    }
    atomic_store_explicit(&rt->inject_len, len - got, TERN__RELAXED);
    pthread_mutex_unlock(&rt->inject_lock);
    free(emptied);
    if (!got)
        return NULL;
    for (uint64_t i = 1; i < got; i++)
        tern__queue_push(w, grab[i]);
    TERN__STAT_ADD(w, inject_pulls, got);
    return grab[0];
}
