/*
 * What the files of sync/ share (never installed): on top of the wait
 * protocol (rt/wait.h), the few calls one object makes into another's file,
 * and the test hooks that count waiters.
 */
#ifndef TERN_SYNC_INTERNAL_H
#define TERN_SYNC_INTERNAL_H

#include "rt/wait.h"

/* ---- the layouts behind tern_sync.h's opaque sized types ------------------
 *
 * The caller's storage is declared as words (tern__opaque) and set by the
 * _INIT macros as words, so tern reads it through these types: may_alias
 * tells the compiler the two views are one object. Each begins with its
 * wait queue, which the test hooks find through tern__wq_of. */
#define TERN__LAYOUT(name, fields)                                                       \
    typedef struct __attribute__((may_alias)) tern__##name fields tern__##name;          \
    _Static_assert(sizeof(tern__##name) <= sizeof(tern_##name) &&                        \
                       _Alignof(tern__##name) <= _Alignof(tern_##name),                  \
                   "tern_" #name " is too small for its layout");                        \
    static inline tern__##name *tern__##name##_of(tern_##name *p)                        \
    {                                                                                    \
        return (tern__##name *)(void *)p;                                                \
    }

TERN__LAYOUT(mutex, {
    tern__waitq q;
    _Atomic unsigned state;
})
TERN__LAYOUT(rwlock, {
    tern__waitq q;
    unsigned readers;
    unsigned writer;
})
TERN__LAYOUT(sem, {
    tern__waitq q;
    uint64_t permits; /* word 3: TERN_SEM_INIT(n) */
})
TERN__LAYOUT(event, {
    tern__waitq q;
    _Atomic unsigned set;
})
TERN__LAYOUT(notify, {
    tern__waitq q;
    unsigned permit;
})
TERN__LAYOUT(cond, { tern__waitq q; })
TERN__LAYOUT(barrier, {
    tern__waitq q;
    uint64_t parties; /* word 3: TERN_BARRIER_INIT(n) */
    unsigned arrived;
    uint64_t generation;
})
TERN__LAYOUT(waitgroup, {
    tern__waitq q;
    int64_t count;
})
TERN__LAYOUT(group, {
    tern__waitq q; /* the lock; the wait list holds the waiter */
    struct tern__gchild *children;
    uint64_t live;
    int err;
    unsigned state;
})
_Static_assert(offsetof(tern__sem, permits) == 3 * sizeof(uint64_t), "TERN_SEM_INIT");
_Static_assert(offsetof(tern__barrier, parties) == 3 * sizeof(uint64_t),
               "TERN_BARRIER_INIT");

/* The wait queue of any of the types above, for the test hooks. */
#define tern__wq_of(obj) ((tern__waitq *)(void *)(obj))

/* chan.c: a channel's element size (streams carry pointers only). */
size_t tern__chan_esize(const tern_chan *ch);

/* chan.c: the senders (op TERN_SELECT_SEND) or receivers waiting on ch,
 * for tests (tern__wq_waiting). */
size_t tern__chan_waiting(tern_chan *ch, int op);
/* future.c: tasks and threads waiting on f, for tests. */
size_t tern__future_waiting(tern_future *f);

/* chan.c: the size of ch's elements (signal.c checks a channel of int). */
size_t tern__chan_elem_size(const tern_chan *ch);

#endif
