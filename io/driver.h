/*
 * The I/O driver table: what a worker loop needs from its backend. One
 * driver instance per worker; only the owning thread calls anything but
 * wake (DESIGN.md invariant 1). Internal to tern.
 *
 * Backends: io_uring (io/uring.c, liburing) and epoll (io/epoll.c). Both are
 * always compiled; tern__driver_open picks one at runtime start.
 */
#ifndef TERN_DRIVER_H
#define TERN_DRIVER_H

#include <stdint.h>

#include "tern.h"

typedef struct tern__driver tern__driver;

typedef struct tern__driver_ops {
    const char *name; /* "io_uring" or "epoll" */
    /* Creates an instance. 0 or -errno (io_uring: -ENOSYS, -EPERM, -ENOMEM
     * when the kernel or its policy refuses a ring). */
    int (*open)(tern__driver **out);
    /* Submits pending work and sleeps until a completion, a wake or the
     * timeout (ns; -1 = none, 0 = just reap). Returns the number of events
     * handled (wakes included) or -errno. Owner thread. */
    int (*wait)(tern__driver *d, int64_t timeout_ns);
    /* Makes the owner's current or next wait return soon. Any thread,
     * async-signal-safe. */
    void (*wake)(tern__driver *d);
    /* Releases the instance and its descriptors. Owner thread (or any thread
     * once the owner has stopped). */
    void (*close)(tern__driver *d);
} tern__driver_ops;

/* Every instance starts with its table, so a loop can call d->ops->wait. */
struct tern__driver {
    const tern__driver_ops *ops;
};

extern const tern__driver_ops tern__uring_ops;
extern const tern__driver_ops tern__epoll_ops;

/* Opens the backend asked for: TERN_BACKEND_AUTO reads the TERN_BACKEND
 * environment variable ("io_uring" / "epoll"; anything else is -EINVAL), and
 * without it tries io_uring and falls back to epoll on -ENOSYS, -EPERM or
 * -ENOMEM. A forced backend that fails returns its error. *note is set to a
 * static string saying why this backend was chosen (e.g. "io_uring
 * unavailable (-EPERM): epoll"). Returns 0 or -errno. */
int tern__driver_open(tern_backend want, tern__driver **out, const char **note);

#endif
