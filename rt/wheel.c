/*
 * Hierarchical timing wheel (see wheel.h for the contract).
 *
 * Time is counted in ticks since w->origin; w->elapsed is the wheel's current
 * tick `cur`. Read a tick as six base-64 digits, digit k being level k's slot.
 *
 * Placement. An entry due at tick d > cur goes to the level of the highest
 * digit in which d and cur differ, in slot d's digit there. That digit of d
 * is larger than cur's, so the slot comes due in the current rotation of
 * that level, at the tick where it begins ("slot start": cur's higher
 * digits, digit k = slot, lower digits zero), which is <= d. An entry with
 * d <= cur (due, or within the current tick) goes to level 0, slot of cur:
 * the "current slot". Deadlines 64^6 ticks or more away differ above the
 * top digit; they go to level 5 by their digit there, which is read
 * modulo the rotation: the slot comes due the next time digit 5 takes that
 * value, still <= d, and the entry is simply placed again from there.
 *
 * Invariants between calls:
 *  I1. Level-0 slots other than the current one hold entries of later ticks
 *      in cur's block of 64; the current slot holds entries with tick <= cur.
 *  I2. A slot at level k >= 1 starts strictly after cur. Slots are processed
 *      in start order, so an entry only moves towards level 0: it is placed
 *      at most once per level (plus once per rotation if beyond the range).
 *  I3. The current slot is in (deadline, seq) order, except for a tail of
 *      entries appended since the last advance, those with seq >= fresh_seq.
 *
 * advance(now) works in two phases, so no callback runs while entries sit
 * outside the slot lists (where tern__wheel_remove could not find them):
 *  1. Jump cur from one occupied slot start to the next (the bitmaps say
 *     where) up to target = tick(now), placing the entries of each slot
 *     again relative to the new cur. Whatever reaches level 0 at a tick
 *     <= target, and every cancelled entry met, is gathered in one list.
 *  2. Link that list, cancelled entries first and the rest sorted by
 *     (deadline, seq), into the current slot, then pop from its head while
 *     the head is cancelled or due, firing or reaping each one.
 * Most calls find the tick unchanged (a loop turns much faster than 1 ms);
 * they skip phase 1 and only sort the fresh tail and merge it in (I3), so a
 * call with nothing due costs O(1) however full the current tick is.
 * Entries inserted by a callback get seq >= the value at the start of phase
 * 2 and are appended behind every older entry of the current slot, so the
 * pop stops at them: they fire at the next advance call at the earliest,
 * even when already due. A callback that re-arms itself at a past deadline
 * therefore cannot keep one advance call spinning.
 *
 * State protocol (the only cross-thread part): state is PENDING while armed;
 * the owner moves it to FIRED and any thread to CANCELLED, both by CAS from
 * PENDING, so exactly one wins. CANCELLED is final until the owner re-arms.
 */
#include "rt/wheel.h"

#include <string.h>

#define BITS 6 /* log2(TERN__WHEEL_SLOTS) */
#define MASK ((uint64_t)TERN__WHEEL_SLOTS - 1)
#define TOP (TERN__WHEEL_LEVELS - 1)
#define DEFAULT_TICK_NS 1000000

_Static_assert(TERN__WHEEL_SLOTS == 1 << BITS, "one occupancy word per level");

/* Acquire: a canceller's writes made before its CAS are visible to the
 * owner that sees CANCELLED (and reaps). */
static uint32_t state_load(tern__timer *t)
{
    return atomic_load_explicit(&t->state, memory_order_acquire);
}

/* PENDING -> to. acq_rel on success: the loser of a fire/cancel race, which
 * reads the winner's value with acquire, also sees what the winner wrote
 * before; acquire on failure for the same reason. */
static int state_claim(tern__timer *t, uint32_t to)
{
    uint32_t expect = TERN__TIMER_PENDING;
    return atomic_compare_exchange_strong_explicit(
        &t->state, &expect, to, memory_order_acq_rel, memory_order_acquire);
}

static uint64_t tick_of(const tern__wheel *w, uint64_t ns)
{
    return ns <= w->origin ? 0 : (ns - w->origin) / w->tick_ns;
}

/* ns at which tick begins, saturating at UINT64_MAX. */
static uint64_t ns_of(const tern__wheel *w, uint64_t tick)
{
    if (tick > (UINT64_MAX - w->origin) / w->tick_ns)
        return UINT64_MAX;
    return w->origin + tick * w->tick_ns;
}

/* Slots above s: the ones still ahead in this rotation. */
static uint64_t above(unsigned s)
{
    return ~(((uint64_t)2 << s) - 1); /* 2 << 63 wraps to 0: nothing above 63 */
}

/* Appends t to a slot list. A list's head->prev points at its tail, the
 * tail's next is NULL; so t->prev != NULL exactly while t is linked. */
static void link_at(tern__wheel *w, tern__timer *t, unsigned level, unsigned slot)
{
    tern__timer **head = &w->slots[level][slot];
    t->next = NULL;
    if (*head) {
        t->prev = (*head)->prev;
        t->prev->next = t;
        (*head)->prev = t;
    } else {
        t->prev = t;
        *head = t;
        w->occupied[level] |= (uint64_t)1 << slot;
    }
    t->level = (uint8_t)level;
    t->slot = (uint8_t)slot;
    w->count++;
}

static void unlink_entry(tern__wheel *w, tern__timer *t)
{
    tern__timer **head = &w->slots[t->level][t->slot];
    if (*head == t) {
        *head = t->next;
        if (t->next)
            t->next->prev = t->prev; /* the tail */
    } else {
        t->prev->next = t->next;
        (t->next ? t->next : *head)->prev = t->prev;
    }
    if (!*head)
        w->occupied[t->level] &= ~((uint64_t)1 << t->slot);
    t->next = t->prev = NULL;
    w->count--;
}

/* Links t where its deadline belongs relative to the current tick. */
static void place(tern__wheel *w, tern__timer *t)
{
    uint64_t cur = w->elapsed, d = tick_of(w, t->deadline);
    unsigned level = 0;
    if (d < cur)
        d = cur;
    if (d != cur) {
        level = (unsigned)(63 - __builtin_clzll(d ^ cur)) / BITS;
        if (level > TOP)
            level = TOP; /* beyond the wheel's range: see the file comment */
    }
    link_at(w, t, level, (unsigned)(d >> (level * BITS)) & MASK);
}

/* The first tick after cur at which slot s of level k >= 1 begins. */
static uint64_t slot_start(uint64_t cur, unsigned k, unsigned s)
{
    unsigned up = (k + 1) * BITS;
    uint64_t t = (cur >> up << up) | (uint64_t)s << (k * BITS);
    return t > cur ? t : t + ((uint64_t)1 << up);
}

/* Earliest start of an occupied slot at level k >= 1, or UINT64_MAX. */
static uint64_t level_next(const tern__wheel *w, unsigned k)
{
    uint64_t occ = w->occupied[k];
    if (!occ)
        return UINT64_MAX;
    uint64_t ahead = occ & above((unsigned)(w->elapsed >> (k * BITS)) & MASK);
    /* Nothing ahead in this rotation: the lowest slot, next rotation. */
    unsigned s = (unsigned)__builtin_ctzll(ahead ? ahead : occ);
    return slot_start(w->elapsed, k, s);
}

static uint64_t upper_next(const tern__wheel *w)
{
    uint64_t best = UINT64_MAX;
    for (unsigned k = 1; k <= TOP; k++) {
        uint64_t t = level_next(w, k);
        if (t < best)
            best = t;
    }
    return best;
}

/* Detaches a whole slot list; its entries stay counted until relinked or
 * released with take(). */
static tern__timer *detach(tern__wheel *w, unsigned level, unsigned slot)
{
    tern__timer *list = w->slots[level][slot];
    w->slots[level][slot] = NULL;
    w->occupied[level] &= ~((uint64_t)1 << slot);
    return list;
}

static tern__timer *take(tern__wheel *w, tern__timer **list)
{
    tern__timer *t = *list;
    *list = t->next;
    t->next = t->prev = NULL;
    w->count--;
    return t;
}

static void push(tern__timer **list, tern__timer *t)
{
    t->next = *list;
    *list = t;
}

/* Moves the level-0 slots selected by mask onto *out. */
static void gather_level0(tern__wheel *w, uint64_t mask, tern__timer **out)
{
    for (uint64_t m = w->occupied[0] & mask; m; m &= m - 1) {
        tern__timer *list = detach(w, 0, (unsigned)__builtin_ctzll(m));
        while (list)
            push(out, take(w, &list));
    }
}

/* cur has just reached the start of slot s at level k: place its entries
 * again (they land lower, or at the top level for the next rotation), except
 * cancelled ones, which go straight to *out to be reaped. */
static void cascade(tern__wheel *w, unsigned k, unsigned s, tern__timer **out)
{
    tern__timer *list = detach(w, k, s);
    while (list) {
        tern__timer *t = take(w, &list);
        if (state_load(t) == TERN__TIMER_CANCELLED)
            push(out, t);
        else
            place(w, t);
    }
}

/* Phase 1: moves the wheel to target and returns every entry with tick <=
 * target and every cancelled entry met on the way, unlinked. */
static tern__timer *move_to(tern__wheel *w, uint64_t target)
{
    tern__timer *out = NULL;
    uint64_t t;
    while ((t = upper_next(w)) <= target) {
        /* t starts a new block of 64, so all of level 0 is due (I1). */
        gather_level0(w, ~(uint64_t)0, &out);
        w->elapsed = t;
        /* Every level whose digits below are all zero at t has its current
         * slot starting now (I2 and t being the earliest start). */
        for (unsigned k = TOP; k >= 1; k--)
            if ((t & (((uint64_t)1 << (k * BITS)) - 1)) == 0)
                cascade(w, k, (unsigned)(t >> (k * BITS)) & MASK, &out);
    }
    if ((target >> BITS) == (w->elapsed >> BITS))
        gather_level0(w, ~above((unsigned)(target & MASK)), &out);
    else
        gather_level0(w, ~(uint64_t)0, &out);
    w->elapsed = target;
    return out;
}

static int before(const tern__timer *a, const tern__timer *b)
{
    return a->deadline != b->deadline ? a->deadline < b->deadline : a->seq < b->seq;
}

/* Merge sort of a NULL-terminated list by (deadline, seq). deadline and seq
 * do not change while the wheel holds an entry, so the order is exact. */
static tern__timer *sort(tern__timer *list)
{
    if (!list || !list->next)
        return list;
    tern__timer *slow = list, *fast = list->next;
    while (fast && fast->next) {
        slow = slow->next;
        fast = fast->next->next;
    }
    tern__timer *b = slow->next, *head = NULL, **tail = &head;
    slow->next = NULL;
    tern__timer *a = sort(list);
    b = sort(b);
    while (a && b) {
        tern__timer **min = before(b, a) ? &b : &a;
        *tail = *min;
        tail = &(*min)->next;
        *min = (*min)->next;
    }
    *tail = a ? a : b;
    return head;
}

void tern__wheel_init(tern__wheel *w, uint64_t now, uint64_t tick_ns)
{
    memset(w, 0, sizeof *w);
    w->tick_ns = tick_ns ? tick_ns : DEFAULT_TICK_NS;
    w->origin = now;
}

void tern__wheel_insert(tern__wheel *w, tern__timer *t)
{
    if (t->prev)
        unlink_entry(w, t); /* re-arming a linked entry moves it */
    t->seq = w->seq++;
    /* Release: a thread that later cancels t, having learnt of it through
     * some acquire, finds PENDING and not an older state. */
    atomic_store_explicit(&t->state, TERN__TIMER_PENDING, memory_order_release);
    place(w, t);
}

int tern__wheel_remove(tern__wheel *w, tern__timer *t)
{
    if (!t->prev)
        return 0;
    /* An owner-side cancel: a later tern__timer_cancel must not win and
     * then wait for a reap that will never come. */
    state_claim(t, TERN__TIMER_CANCELLED);
    unlink_entry(w, t);
    return 1;
}

/* Phase 2 on a new tick: cancelled entries first, so none is left behind the
 * first entry that is not due (it may be far from due: cascaded early); the
 * rest in order. The state read is only a hint; the CAS in advance decides. */
static void link_gathered(tern__wheel *w, unsigned slot, tern__timer *list)
{
    tern__timer *cancelled = NULL, *rest = NULL;
    while (list) {
        tern__timer *t = list;
        list = t->next;
        push(state_load(t) == TERN__TIMER_CANCELLED ? &cancelled : &rest, t);
    }
    for (tern__timer *t; (t = cancelled);) {
        cancelled = t->next;
        link_at(w, t, 0, slot);
    }
    for (tern__timer *t, *s = sort(rest); (t = s);) {
        s = t->next;
        link_at(w, t, 0, slot);
    }
}

/* Unlinks the entries appended to the current slot since the last advance
 * (seq >= fresh_seq: they form its tail) and returns them in a list. */
static tern__timer *split_fresh(tern__wheel *w, unsigned slot)
{
    tern__timer *list = NULL, *head;
    while ((head = w->slots[0][slot]) && head->prev->seq >= w->fresh_seq) {
        tern__timer *t = head->prev;
        unlink_entry(w, t);
        push(&list, t);
    }
    return list;
}

/* Links t in front of p, an entry of level-0 slot `slot`. */
static void link_before(tern__wheel *w, tern__timer *t, unsigned slot, tern__timer *p)
{
    t->next = p;
    t->prev = p->prev;
    if (w->slots[0][slot] == p)
        w->slots[0][slot] = t; /* t->prev is the tail, as a head's must be */
    else
        t->prev->next = t;
    p->prev = t;
    t->level = 0;
    t->slot = (uint8_t)slot;
    w->count++;
}

/* Merges a sorted list into the sorted current slot. The cursor only moves
 * forward, and overdue entries belong near the front, so this is cheap. */
static void merge_into(tern__wheel *w, unsigned slot, tern__timer *list)
{
    tern__timer *p = w->slots[0][slot];
    while (list) {
        tern__timer *t = list;
        list = t->next;
        while (p && !before(t, p))
            p = p->next;
        if (p)
            link_before(w, t, slot, p);
        else
            link_at(w, t, 0, slot);
    }
}

uint64_t tern__wheel_advance(tern__wheel *w, uint64_t now,
                             void (*fire)(tern__timer *, void *),
                             void (*reap)(tern__timer *, void *), void *ctx)
{
    uint64_t target = tick_of(w, now);
    if (target < w->elapsed)
        target = w->elapsed; /* the clock never runs the wheel backwards */
    unsigned cur = (unsigned)(target & MASK);
    /* Most calls stay in the same tick (the loop turns faster than 1 ms):
     * the current slot is still sorted but for what was appended since the
     * last call, so no slot moves and only that tail is sorted. */
    if (target == w->elapsed)
        merge_into(w, cur, sort(split_fresh(w, cur)));
    else
        link_gathered(w, cur, move_to(w, target));

    /* The current slot is now in order (cancelled first after a new tick).
     * Entries callbacks insert get seq >= seq0 and go behind all of it. */
    uint64_t seq0 = w->seq, fired = 0;
    tern__timer *t;
    while ((t = w->slots[0][cur]) && t->seq < seq0) {
        if (t->deadline > now && state_load(t) != TERN__TIMER_CANCELLED)
            break; /* in order: nothing older behind it is due */
        unlink_entry(w, t);
        if (state_claim(t, TERN__TIMER_FIRED)) {
            fired++;
            fire(t, ctx);
        } else {
            reap(t, ctx);
        }
    }
    /* What is left with seq < seq0 is in order: the cancelled prefix went
     * first, the loop only unlinks, callbacks only remove or append. */
    w->fresh_seq = seq0;
    return fired;
}

uint64_t tern__wheel_next(const tern__wheel *w)
{
    if (!w->count)
        return UINT64_MAX;
    uint64_t cur = w->elapsed, best = UINT64_MAX;
    /* The current slot holds overdue deadlines and ones inside this tick:
     * report the exact minimum, so the loop neither spins nor oversleeps.
     * Its head starts the sorted part; only the fresh tail is scanned. */
    const tern__timer *head = w->slots[0][cur & MASK];
    if (head) {
        best = head->deadline;
        for (const tern__timer *t = head->prev; t != head && t->seq >= w->fresh_seq;
             t = t->prev)
            if (t->deadline < best)
                best = t->deadline;
    }
    uint64_t later = w->occupied[0] & above((unsigned)(cur & MASK));
    if (later) {
        uint64_t ns = ns_of(w, (cur & ~MASK) | (uint64_t)__builtin_ctzll(later));
        if (ns < best)
            best = ns;
    }
    uint64_t up = upper_next(w);
    if (up != UINT64_MAX && ns_of(w, up) < best)
        best = ns_of(w, up);
    return best;
}

int tern__timer_cancel(tern__timer *t)
{
    return state_claim(t, TERN__TIMER_CANCELLED);
}
