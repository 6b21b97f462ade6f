/*
 * Fault injection (internal; built only with -DTERN_FAULTS=ON).
 *
 * Every system call and runtime allocation that can fail goes through a
 * seam, checked right before the real call. In a normal build a seam is the
 * plain call: the macros below expand to it, and no tern__fault symbol
 * exists. In a TERN_FAULTS build a seam asks tern__fault() whether to fail
 * instead, and with what errno; nothing fails until a spec says so.
 *
 * Spec (environment variable TERN_FAULTS, read once at the first seam; or
 * tern__fault_set from a test): items separated by commas.
 *
 *   seed=N                       seeds the probability draws (default 1)
 *   SEAM[:ERRNO][:every=N|:p=X][:after=N]
 *
 *   SEAM   one of the names in TERN__FAULT_SEAMS below (mmap, malloc, ...)
 *   ERRNO  symbolic (ENOMEM, EMFILE, ...) or a number; default per seam
 *   every=N  fail every N-th call;  p=X  fail with probability X (0..1);
 *            neither: fail every call
 *   after=N  let the first N calls through before any of that applies
 *
 *   TERN_FAULTS="mmap:ENOMEM:after=2,accept:EMFILE:p=0.2,seed=42"
 *
 * A seam that fails reports the way its call does: -1 or MAP_FAILED with
 * errno set (libc), -errno (liburing), the errno itself (pthread_create),
 * NULL (allocations; their errno is ignored). An invalid TERN_FAULTS aborts
 * the process with a message (a fault test that silently injects nothing
 * proves nothing).
 */
#ifndef TERN_FAULT_H
#define TERN_FAULT_H

#include <errno.h>

/* X(ID, name, default errno) */
/* clang-format off */
#define TERN__FAULT_SEAMS(X)                                                              \
    X(MMAP, "mmap", ENOMEM)                      /* fiber stack regions */               \
    X(MPROTECT, "mprotect", ENOMEM)              /* guard pages, old kernels */          \
    X(MADVISE, "madvise", ENOMEM)                /* guard pages (MADV_GUARD_INSTALL) */  \
    X(THREAD, "pthread_create", EAGAIN)          /* workers, blocking pool */            \
    X(URING_INIT, "io_uring_queue_init", ENOMEM) /* a worker's ring */                   \
    X(URING_SUBMIT, "io_uring_submit", EAGAIN)   /* submit (and wait) */                 \
    X(EPOLL_CREATE, "epoll_create", EMFILE)      /* a worker's epoll set */              \
    X(EPOLL_CTL, "epoll_ctl", ENOMEM)            /* registrations, the wake fd's too */  \
    X(EPOLL_WAIT, "epoll_wait", EINTR)           /* epoll_wait, epoll_pwait2 */          \
    X(EVENTFD, "eventfd", EMFILE)                /* both backends' wake fd */            \
    X(ACCEPT, "accept", EMFILE)                                                          \
    X(CONNECT, "connect", ECONNREFUSED)                                                  \
    X(READ, "read", ECONNRESET)                  /* read, readv */                       \
    X(WRITE, "write", EPIPE)                     /* write, writev */                     \
    X(SEND, "send", EPIPE)                       /* send, sendmsg, sendto */             \
    X(RECV, "recv", ECONNRESET)                  /* recv, recvmsg, recvfrom */           \
    X(MALLOC, "malloc", ENOMEM)                  /* runtime structures */
/* clang-format on */

#define TERN__FAULT_ENUM_(id, name, err) TERN__FAULT_##id,
enum tern__fault_seam { TERN__FAULT_SEAMS(TERN__FAULT_ENUM_) TERN__FAULT_NSEAMS };
#undef TERN__FAULT_ENUM_

#ifdef TERN_FAULTS

/* 0, or the positive errno the caller must fail with now. Any thread. */
int tern__fault(enum tern__fault_seam seam);
/* Replaces the whole configuration (seams not named stop failing) and
 * zeroes every counter. NULL or "" turns everything off. 0 or -EINVAL
 * (nothing changed). Meant for tests between runtimes: calls racing it may
 * see the old or the new setting of a seam. */
int tern__fault_set(const char *spec);
/* Faults injected at seam since the last tern__fault_set (or start). */
unsigned long tern__fault_count(enum tern__fault_seam seam);
/* Calls that passed seam in the same period while it was configured. */
unsigned long tern__fault_calls(enum tern__fault_seam seam);

#define TERN__FAULT(s) tern__fault(TERN__FAULT_##s)
/* A libc call: `failed` (-1, MAP_FAILED) with errno set, or the call. */
#define TERN__FAULT_SYS(s, failed, call)                                                 \
    ({                                                                                   \
        int fe_ = tern__fault(TERN__FAULT_##s);                                          \
        fe_ ? (errno = fe_, (failed)) : (call);                                          \
    })
/* A call that returns -errno (liburing). */
#define TERN__FAULT_NEG(s, call)                                                         \
    ({                                                                                   \
        int fe_ = tern__fault(TERN__FAULT_##s);                                          \
        fe_ ? -fe_ : (call);                                                             \
    })
/* A call that returns the errno itself (pthread_create). */
#define TERN__FAULT_POS(s, call)                                                         \
    ({                                                                                   \
        int fe_ = tern__fault(TERN__FAULT_##s);                                          \
        fe_ ? fe_ : (call);                                                              \
    })
/* An allocation of a runtime structure: NULL, or the call. */
#define TERN__FAULT_ALLOC(call) (tern__fault(TERN__FAULT_MALLOC) ? NULL : (call))

#else

#define TERN__FAULT(s) 0
#define TERN__FAULT_SYS(s, failed, call) (call)
#define TERN__FAULT_NEG(s, call) (call)
#define TERN__FAULT_POS(s, call) (call)
#define TERN__FAULT_ALLOC(call) (call)

#endif
#endif
