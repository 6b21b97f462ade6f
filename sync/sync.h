/*
 * What the files of sync/ share (never installed): on top of the wait
 * protocol (rt/wait.h), the few calls one object makes into another's file,
 * and the test hooks that count waiters.
 */
#ifndef TERN_SYNC_INTERNAL_H
#define TERN_SYNC_INTERNAL_H

#include "rt/wait.h"

/* chan.c: a channel's element size (streams carry pointers only). */
size_t tern__chan_esize(const tern_chan *ch);

/* chan.c: the senders (op TERN_SELECT_SEND) or receivers waiting on ch,
 * for tests (tern__wq_waiting). */
size_t tern__chan_waiting(tern_chan *ch, int op);
/* future.c: tasks and threads waiting on f, for tests. */
size_t tern__future_waiting(tern_future *f);

#endif
