/*
 * Backend selection: which I/O driver a worker opens, and why (the note
 * shows up in the loop's introspection).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/driver.h"
#include "io/io.h"

/* Fallbacks from io_uring to epoll: the reasons a kernel refuses a ring
 * (docs/design.md, "The I/O driver"). */
static const char *fallback_note(int err)
{
    switch (err) {
    case -ENOSYS:
        return "epoll: io_uring unavailable (-ENOSYS)";
    case -EPERM:
        return "epoll: io_uring unavailable (-EPERM)";
    case -ENOMEM:
        return "epoll: io_uring unavailable (-ENOMEM)";
    default:
        return NULL;
    }
}

/* AUTO chose io_uring (compared by address in tern__driver_refused). */
static const char auto_uring[] = "io_uring";

/* TERN_BACKEND: 1 and *want set, 0 when unset or empty, -EINVAL otherwise. */
static int env_backend(tern_backend *want)
{
    const char *s = getenv("TERN_BACKEND");
    if (!s || !*s)
        return 0;
    if (strcmp(s, "io_uring") == 0)
        *want = TERN_BACKEND_IO_URING;
    else if (strcmp(s, "epoll") == 0)
        *want = TERN_BACKEND_EPOLL;
    else {
        fprintf(stderr,
                "tern: TERN_BACKEND=%s: want io_uring or epoll (unset or empty: "
                "io_uring where the kernel allows it, else epoll)\n",
                s);
        return -EINVAL;
    }
    return 1;
}

static int open_forced(tern_backend want, tern__driver **out, const char **note,
                       int by_env)
{
    static const char *const notes[2][2] = {
        {"io_uring (forced by config)", "io_uring (forced by TERN_BACKEND)"},
        {"epoll (forced by config)", "epoll (forced by TERN_BACKEND)"},
    };
    int epoll = want == TERN_BACKEND_EPOLL;
    int rc = (epoll ? &tern__epoll_ops : &tern__uring_ops)->open(out);
    if (rc == 0 && note)
        *note = notes[epoll][by_env];
    return rc;
}

int tern__driver_open(tern_backend want, tern__driver **out, const char **note)
{
    if (!out)
        return -EINVAL;
    switch (want) {
    case TERN_BACKEND_IO_URING:
    case TERN_BACKEND_EPOLL:
        return open_forced(want, out, note, 0);
    case TERN_BACKEND_AUTO:
        break;
    default:
        return -EINVAL;
    }
    int rc = env_backend(&want);
    if (rc < 0)
        return rc;
    if (rc > 0)
        return open_forced(want, out, note, 1);

    rc = tern__uring_ops.open(out);
    if (rc == 0) {
        if (note)
            *note = auto_uring;
        return 0;
    }
    const char *why = fallback_note(rc);
    if (!why)
        return rc; /* e.g. -EMFILE: epoll would need descriptors too */
    rc = tern__epoll_ops.open(out);
    if (rc == 0 && note)
        *note = why;
    return rc;
}

int tern__driver_shared_new(tern_backend backend, struct tern__fdtab **out)
{
    *out = NULL;
    return backend == TERN_BACKEND_EPOLL ? tern__fdtab_new(out) : 0;
}

void tern__driver_shared_free(struct tern__fdtab *tab)
{
    tern__fdtab_free(tab);
}

const char *tern__driver_refused(const char *note, int err)
{
    if (note != auto_uring) /* forced by config or TERN_BACKEND: no fallback */
        return NULL;
    switch (err) {
    case -ENOSYS:
        return "epoll: io_uring worker ring refused (-ENOSYS)";
    case -EPERM:
        return "epoll: io_uring worker ring refused (-EPERM)";
    case -ENOMEM:
        return "epoll: io_uring worker ring refused (-ENOMEM)";
    default:
        return NULL;
    }
}
