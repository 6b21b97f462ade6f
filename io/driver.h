/*
 * The I/O driver table: what a worker loop needs from its backend. One
 * driver instance per worker; only the owning thread calls anything but
 * wake (docs/design.md, invariant 1). Internal to tern.
 *
 * Backends: io_uring (io/uring.c, liburing) and epoll (io/epoll.c). Both are
 * always compiled; tern__driver_open picks one at runtime start.
 */
#ifndef TERN_DRIVER_H
#define TERN_DRIVER_H

#include <stdatomic.h>
#include <stdint.h>

#include "tern.h"

typedef struct tern__driver tern__driver;
struct tern__ioop;
struct tern__fdtab;

/* How a backend runs an operation (io.c dispatches on it). */
enum tern__driver_kind {
    TERN__DRIVER_COMPLETION, /* the kernel does the whole operation: submit/cancel */
    TERN__DRIVER_READINESS,  /* the task does it once the fd is ready (fdtab) */
};

typedef struct tern__driver_ops {
    const char *name; /* "io_uring" or "epoll" */
    enum tern__driver_kind kind;
    /* Creates an instance. Call it on the thread that will own it: an
     * io_uring ring is bound to its creating thread (SINGLE_ISSUER, the
     * registered ring fd). 0 or -errno (io_uring: -ENOSYS, -EPERM, -ENOMEM
     * when the kernel or its policy refuses a ring; -EMFILE, -ENFILE,
     * -ENOMEM when descriptors or memory run out). */
    int (*open)(tern__driver **out);
    /* Submits pending work and sleeps until a completion, a wake or the
     * timeout (ns; < 0 = none, 0 = just reap, never sleeping). Returns
     * before the timeout only for an event or a signal (EINTR: 0 events; a
     * ring's teardown can interrupt its thread's next sleep this way, so
     * recheck the clock rather than assume the timeout passed). May
     * overshoot (epoll without epoll_pwait2 rounds up to whole ms). Returns
     * the number of events handled (wakes included; 0 on timeout or a
     * signal) or -errno. Owner thread. */
    int (*wait)(tern__driver *d, int64_t timeout_ns);
    /* Makes the owner's current or next wait return soon. Wakes before a
     * wait are kept, and wakes coalesce: any number before one wait counts
     * as one event. Costs one write(2); a loop should skip it when the
     * owner is not parked. Any thread, async-signal-safe, errno preserved. */
    void (*wake)(tern__driver *d);
    /* Releases the instance and its descriptors. Owner thread (or any thread
     * once the owner has stopped; io_uring then frees the ring's kernel
     * memory only when the owner thread exits). */
    void (*close)(tern__driver *d);
    /* TERN__DRIVER_COMPLETION backends only (NULL for epoll, which waits
     * for readiness through the descriptor table instead, see io.h).
     * submit queues op for the next wait's submission: 0, or -EAGAIN when
     * no SQE could be had. cancel asks the kernel to cancel the operation
     * whose record is at key; it never dereferences key, which may already
     * be gone. Owner thread. */
    int (*submit)(tern__driver *d, struct tern__ioop *op);
    void (*cancel)(tern__driver *d, uintptr_t key);
    /* Collects, without sleeping, the events that d's owner has not come
     * to collect (it is descheduled, or runs a task that does not yield),
     * and hands them on as its own wait would: the woken tasks run on the
     * caller's worker. Leaves d's wakes to d. Returns the count handled.
     * Any thread but d's owner. NULL for io_uring: a completion is made in
     * the context of the thread that submitted it (task work), so no
     * other thread can bring it about. */
    int (*help)(tern__driver *d);
} tern__driver_ops;

/* Every instance starts with this head, so a loop can call d->ops->wait. */
struct tern__driver {
    const tern__driver_ops *ops;
    _Atomic unsigned busy;     /* operations or registrations the owner must
                                  poll for while it is not parked */
    struct tern__fdtab *fdtab; /* epoll: the runtime's descriptor table */
};

extern const tern__driver_ops tern__uring_ops;
extern const tern__driver_ops tern__epoll_ops;

/* Opens the backend asked for: TERN_BACKEND_AUTO reads the TERN_BACKEND
 * environment variable ("io_uring" / "epoll"; unset or empty means none;
 * anything else is -EINVAL), and without it tries io_uring and falls back to
 * epoll on -ENOSYS, -EPERM or -ENOMEM. A forced backend that fails returns
 * its error. On success, when note is not NULL, *note is set to a static
 * string that starts with the backend's name and says why it was chosen:
 * "io_uring", "io_uring (forced by config)", "epoll (forced by TERN_BACKEND)",
 * "epoll: io_uring unavailable (-EPERM)", ... Returns 0 or -errno (-EINVAL
 * for out NULL or an unknown want). Call it on the owner thread.
 *
 * Every worker opens its own driver; to keep them all on one backend, open
 * the first with the configured value and the rest with
 * tern__driver_backend(first). */
int tern__driver_open(tern_backend want, tern__driver **out, const char **note);

/* When AUTO's probe chose io_uring (note is the note it gave) and a worker's
 * ring was then refused with err (-ENOSYS, -EPERM, -ENOMEM: an older
 * kernel's locked-memory limit can admit the probe's ring and not a later
 * one), the note for starting over on epoll; NULL when the runtime must
 * fail instead (a forced backend, or another error). */
const char *tern__driver_refused(const char *note, int err);

/* The runtime-wide part of a backend, beside its per-worker instances: the
 * descriptor table readiness backends share (its every fd is homed on one
 * worker's epoll set); NULL for io_uring, which needs none. new, before the
 * workers open their drivers for backend: 0 or -ENOMEM; free (NULL is
 * fine), after every driver was closed. Each worker's driver gets it in
 * d->fdtab. */
int tern__driver_shared_new(tern_backend backend, struct tern__fdtab **out);
void tern__driver_shared_free(struct tern__fdtab *tab);

/* The name of an I/O operation code (enum tern__io_code in io.h), for
 * tern_dump: "read", "accept", ...; "io" for an unknown one. */
const char *tern__io_name(int code);

/* The backend d runs (never TERN_BACKEND_AUTO). */
static inline tern_backend tern__driver_backend(const tern__driver *d)
{
    return d->ops == &tern__uring_ops ? TERN_BACKEND_IO_URING : TERN_BACKEND_EPOLL;
}

#endif
