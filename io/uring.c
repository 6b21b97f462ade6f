/*
 * The io_uring backend (liburing): one ring per worker, created by that
 * worker, submitted to and reaped only by it.
 *
 * Completions are dispatched by kind, never through a function pointer in
 * the request: every SQE's user_data is the address of an op record that
 * starts with an enum uring_kind, and reap() switches on it. user_data 0
 * means "no record, nothing to do" (for SQEs whose completion only matters
 * to the kernel, such as cancels). Kinds: the wake, and tasks' operations.
 *
 * Cross-thread wake: an eventfd with one IORING_OP_READ always queued or in
 * flight. wake() writes the eventfd (any thread, async-signal-safe); the read
 * completes, the owner's wait returns, and reap() queues the read again; it
 * goes to the kernel with the next wait's submission, so re-arming costs no
 * syscall of its own. Wakes that arrive while no read is in flight add up in
 * the eventfd counter, so none is lost and many coalesce into one completion.
 * (IORING_OP_MSG_RING would avoid the eventfd, but only a thread that owns a
 * ring can send one, and wakes come from foreign threads and signal
 * handlers too.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io/driver.h"
#include "io/io.h"
#include "rt/fault.h"

#ifdef TERN_TSAN
/* The eventfd write -> kernel -> read completion is a real happens-before
 * edge that ThreadSanitizer cannot see through the ring; tell it. */
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TSAN_ACQUIRE(p) __tsan_acquire(p)
#define TSAN_RELEASE(p) __tsan_release(p)
#else
#define TSAN_ACQUIRE(p) ((void)(p))
#define TSAN_RELEASE(p) ((void)(p))
#endif

#define RING_ENTRIES 256

enum uring_kind {
    URING_WAKE = 1,                    /* the eventfd read behind wake() */
    URING_IO = TERN__URING_IO,         /* a task's operation (tern__ioop, io.h) */
    URING_ACCEPT = TERN__URING_ACCEPT, /* a listener's multishot (accept.c) */
    URING_RECV = TERN__URING_RECV,     /* a stream's multishot (recv.c) */
};

/* The head of every op record whose address rides in user_data. */
typedef struct uring_op {
    unsigned char kind; /* enum uring_kind */
} uring_op;

typedef struct uring {
    tern__driver base;
    struct io_uring ring;
    int efd;
    pthread_t owner;   /* the thread that opened it (see uring_close) */
    bool wake_armed;   /* the eventfd read is queued or in flight */
    bool always_enter; /* pending completions may be invisible from user space */
    uring_op wake_op;
    uint64_t wake_buf; /* the eventfd read lands here */
    tern__bufs *bufs;  /* provided buffers, from the first stream's read on */
    bool bufs_tried;   /* made, or refused for good */
} uring;

/*
 * Setup flags, best first. A kernel answers -EINVAL to any flag it does not
 * know, so each tier drops what an older kernel lacks.
 *  - SINGLE_ISSUER (6.0): only the owning worker submits (docs/design.md invariant
 *    1), so the kernel can skip submission locking. It also binds the ring to
 *    the thread that creates it: open must run on the owner thread.
 *  - DEFER_TASKRUN (6.1, needs SINGLE_ISSUER): completion work runs only when
 *    the owner enters the kernel to wait, never as an interrupt in the middle
 *    of a running task.
 *  - COOP_TASKRUN (5.19): the older, weaker form: completion work waits for
 *    our next syscall instead of an IPI.
 *  - TASKRUN_FLAG (5.19, with either of the above): the kernel raises
 *    IORING_SQ_TASKRUN when such deferred work is pending, so a zero-timeout
 *    wait knows whether entering the kernel would reap anything. Without it,
 *    a DEFER_TASKRUN ring must enter on every wait.
 *  - SUBMIT_ALL (5.18): one bad SQE does not stop the rest of a batch.
 */
static const unsigned setup_tiers[] = {
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
        IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

static int setup_ring(struct io_uring *ring)
{
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof setup_tiers / sizeof setup_tiers[0]; i++) {
        struct io_uring_params p = {.flags = setup_tiers[i]};
        rc = TERN__FAULT_NEG(URING_INIT,
                             io_uring_queue_init_params(RING_ENTRIES, ring, &p));
        if (rc != -EINVAL)
            break;
    }
    return rc;
}

/* An SQE, submitting what is queued once if the SQ is full. NULL when the
 * kernel still has taken none. */
static struct io_uring_sqe *get_sqe(uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        (void)TERN__FAULT_NEG(URING_SUBMIT, io_uring_submit(&u->ring));
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static void arm_wake(uring *u)
{
    struct io_uring_sqe *sqe = get_sqe(u);
    if (!sqe)
        return; /* wake_armed stays false: the next wait tries again */
    io_uring_prep_read(sqe, u->efd, &u->wake_buf, sizeof u->wake_buf, 0);
    io_uring_sqe_set_data(sqe, &u->wake_op);
    u->wake_armed = true;
}

static int uring_open(tern__driver **out)
{
    uring *u = TERN__FAULT_ALLOC(calloc(1, sizeof *u));
    if (!u)
        return -ENOMEM;
    int rc = setup_ring(&u->ring);
    if (rc < 0) {
        free(u);
        return rc;
    }
    /* Blocking on purpose: before eventfd supported non-blocking reads from
     * io_uring (5.x), a read on an O_NONBLOCK eventfd completed at once with
     * -EAGAIN instead of waiting. Nothing else reads it, and a write blocks
     * only when the counter nears 2^64. */
    u->efd = TERN__FAULT_SYS(EVENTFD, -1, eventfd(0, EFD_CLOEXEC));
    if (u->efd < 0) {
        rc = -errno;
        io_uring_queue_exit(&u->ring);
        free(u);
        return rc;
    }
    /* 5.18+: enter through a per-thread registered index instead of an fd
     * lookup on every io_uring_enter. Optional: older kernels say -EINVAL,
     * and a thread holds at most 16 (-EBUSY); then we use the plain fd. */
    (void)io_uring_register_ring_fd(&u->ring);
    u->owner = pthread_self();
    u->always_enter = (u->ring.flags & IORING_SETUP_DEFER_TASKRUN) &&
                      !(u->ring.flags & IORING_SETUP_TASKRUN_FLAG);
    u->base.ops = &tern__uring_ops;
    u->wake_op.kind = URING_WAKE;
    arm_wake(u); /* goes in with the first wait's submission */
    *out = &u->base;
    return 0;
}

static void on_wake(uring *u, int res)
{
    (void)res; /* 8 (the counter, now zero) or an error: either way, re-arm */
    TSAN_ACQUIRE(&u->wake_op);
    u->wake_armed = false;
    arm_wake(u);
}

/* Dispatches every ready CQE; returns how many carried an op record. */
static int reap(uring *u)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    int n = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        seen++;
        /* LIBURING_UDATA_TIMEOUT: liburing's own timeout SQE, used for a
         * timed wait on kernels without IORING_FEAT_EXT_ARG (< 5.11). */
        if (cqe->user_data == 0 || cqe->user_data == LIBURING_UDATA_TIMEOUT)
            continue;
        uring_op *op = io_uring_cqe_get_data(cqe);
        n++;
        switch ((enum uring_kind)op->kind) {
        case URING_WAKE:
            on_wake(u, cqe->res);
            break;
        case URING_IO:
            atomic_fetch_sub_explicit(&u->base.busy, 1, memory_order_relaxed);
            tern__io_complete((tern__ioop *)op, cqe->res);
            break;
        case URING_ACCEPT: {
            int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
            if (!more)
                atomic_fetch_sub_explicit(&u->base.busy, 1, memory_order_relaxed);
            tern__accept_complete((tern__ioop *)op, cqe->res, more);
            break;
        }
        case URING_RECV:
            if (cqe->flags & IORING_CQE_F_BUFFER)
                TSAN_ACQUIRE(u->bufs); /* from the put that gave it back */
            if (!(cqe->flags & IORING_CQE_F_MORE))
                atomic_fetch_sub_explicit(&u->base.busy, 1, memory_order_relaxed);
            tern__rx_complete((tern__ioop *)op, cqe->res, cqe->flags);
            break;
        }
    }
    io_uring_cq_advance(&u->ring, seen);
    return n;
}

/* Whether a zero-timeout wait must enter the kernel: SQEs to submit, or
 * completions the kernel holds back (deferred task work, CQ overflow). */
static bool must_enter(const uring *u)
{
    unsigned kflags = IO_URING_READ_ONCE(*u->ring.sq.kflags);
    return u->always_enter || io_uring_sq_ready(&u->ring) ||
           (kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
}

static int uring_wait(tern__driver *d, int64_t timeout_ns)
{
    uring *u = (uring *)d;
    struct io_uring_cqe *cqe;
    int rc = 0;

    if (!u->wake_armed)
        arm_wake(u);
    if (timeout_ns == 0 || io_uring_cq_ready(&u->ring)) {
        /* Do not sleep: submit and collect what is ready, in at most one
         * syscall, and none when there is nothing to submit or collect. */
        if (must_enter(u))
            rc = TERN__FAULT_NEG(URING_SUBMIT, io_uring_submit_and_get_events(&u->ring));
    } else if (timeout_ns < 0) {
        rc = TERN__FAULT_NEG(URING_SUBMIT, io_uring_submit_and_wait_timeout(
                                               &u->ring, &cqe, 1, NULL, NULL));
    } else {
        struct __kernel_timespec ts = {
            .tv_sec = timeout_ns / 1000000000,
            .tv_nsec = timeout_ns % 1000000000,
        };
        rc = TERN__FAULT_NEG(
            URING_SUBMIT, io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL));
    }
    int n = reap(u);
    /* -ETIME: the timeout passed. -EINTR: a signal. -EAGAIN/-EBUSY: the
     * kernel is short of request memory or the CQ overflowed; reaping fixes
     * the latter. All are normal returns to the loop. */
    if (rc >= 0 || rc == -ETIME || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
        return n;
    return n ? n : rc;
}

/* Prepares op's SQE. The file position (-1) is what read/write without an
 * offset mean; sends never raise SIGPIPE. */
static int uring_submit(tern__driver *d, tern__ioop *op)
{
    uring *u = (uring *)d;
    struct io_uring_sqe *sqe = get_sqe(u);
    if (!sqe)
        return -EAGAIN;
    unsigned len = op->len > 0x7ffff000u ? 0x7ffff000u : (unsigned)op->len;
    switch ((enum tern__io_code)op->code) {
    case TERN__IO_READ:
    case TERN__IO_PREAD:
        io_uring_prep_read(sqe, op->fd, op->buf, len, (uint64_t)op->off);
        break;
    case TERN__IO_WRITE:
    case TERN__IO_PWRITE:
        io_uring_prep_write(sqe, op->fd, op->buf, len, (uint64_t)op->off);
        break;
    case TERN__IO_READV:
        io_uring_prep_readv(sqe, op->fd, op->iov, (unsigned)op->iovcnt,
                            (uint64_t)op->off);
        break;
    case TERN__IO_WRITEV:
        io_uring_prep_writev(sqe, op->fd, op->iov, (unsigned)op->iovcnt,
                             (uint64_t)op->off);
        break;
    case TERN__IO_RECV:
        io_uring_prep_recv(sqe, op->fd, op->buf, len, op->flags);
        break;
    case TERN__IO_SEND:
        io_uring_prep_send(sqe, op->fd, op->buf, len, op->flags | MSG_NOSIGNAL);
        break;
    case TERN__IO_RECVMSG:
        io_uring_prep_recvmsg(sqe, op->fd, op->msg, (unsigned)op->flags);
        break;
    case TERN__IO_SENDMSG:
        io_uring_prep_sendmsg(sqe, op->fd, op->msg, (unsigned)op->flags | MSG_NOSIGNAL);
        break;
    case TERN__IO_ACCEPT:
        io_uring_prep_accept(sqe, op->fd, op->addr, op->addrlen, op->flags);
        break;
    case TERN__IO_CONNECT:
        io_uring_prep_connect(sqe, op->fd, op->addr, op->alen);
        break;
    case TERN__IO_POLL:
        io_uring_prep_poll_add(sqe, op->fd, (unsigned)(unsigned short)op->events);
        break;
    case TERN__IO_OPEN:
        io_uring_prep_openat(sqe, AT_FDCWD, op->path, op->flags, op->mode);
        break;
    case TERN__IO_FSYNC:
        io_uring_prep_fsync(sqe, op->fd, op->flags ? IORING_FSYNC_DATASYNC : 0);
        break;
    case TERN__IO_STATX:
        io_uring_prep_statx(sqe, op->fd, op->path, op->flags, op->mask, op->stx);
        break;
    case TERN__IO_CLOSE:
        io_uring_prep_close(sqe, op->fd);
        break;
    case TERN__IO_ACCEPT_MULTI:
        io_uring_prep_multishot_accept(sqe, op->fd, NULL, NULL, op->flags);
        break;
    case TERN__IO_RECV_MULTI:
        /* the kernel picks each buffer from the ring (group 0: one ring
         * per io_uring instance) */
        io_uring_prep_recv_multishot(sqe, op->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = 0;
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    atomic_fetch_add_explicit(&d->busy, 1, memory_order_relaxed);
    return 0;
}

/* The operation completes with -ECANCELED (or its own result, if it was
 * already done); the cancel's own completion carries no record. */
static void uring_cancel(tern__driver *d, uintptr_t key)
{
    uring *u = (uring *)d;
    struct io_uring_sqe *sqe;
    /* The kernel may refuse submissions while the CQ is full: reap too. */
    while (!(sqe = get_sqe(u))) {
        io_uring_submit_and_get_events(&u->ring);
        reap(u);
    }
    io_uring_prep_cancel(sqe, (void *)key, 0);
    io_uring_sqe_set_data64(sqe, 0);
}

static void uring_wake(tern__driver *d)
{
    uring *u = (uring *)d;
    uint64_t one = 1;
    int saved = errno; /* a signal handler may be the caller */
    TSAN_RELEASE(&u->wake_op);
    ssize_t r = write(u->efd, &one, sizeof one);
    (void)r; /* cannot fail short of a counter near 2^64 */
    errno = saved;
}

/* Tears the ring down (cancelling the pending read) and closes both fds.
 * io_uring_queue_exit also unregisters the ring fd by index, and that index
 * is looked up in the *calling* thread's table. From another thread it could
 * hit that thread's own registered ring, so there we spoil the index (the
 * kernel then answers -EINVAL and touches nothing); the owner's entry then
 * keeps the ring alive until the owner thread exits. */
static void uring_close(tern__driver *d)
{
    uring *u = (uring *)d;
    if (!pthread_equal(pthread_self(), u->owner))
        u->ring.enter_ring_fd = -1;
    io_uring_queue_exit(&u->ring);
    tern__accept_driver_gone(d);
    if (u->bufs) {
        tern__spin_lock(&u->bufs->lock);
        atomic_store_explicit(&u->bufs->dead, 1, memory_order_relaxed);
        tern__spin_unlock(&u->bufs->lock);
        tern__rx_driver_gone(u->bufs);
        tern__bufs_unref(u->bufs);
    }
    close(u->efd);
    free(u);
}

/* ---- provided buffers -------------------------------------------------------------- */

unsigned tern__bufs_count = 512; /* 2 MiB per worker that reads streams */

static void bufs_free(tern__bufs *b)
{
    free(b->ring);
    free(b->data);
    free(b->len);
    free(b->next);
    free(b);
}

/* Registration is the kernel's test: -EINVAL before 5.19 (no buffer
 * rings). Multishot receive came later (6.0); recv.c learns of its absence
 * from the first SQE's -EINVAL. */
static int bufs_new(uring *u, tern__bufs **out)
{
    unsigned count = tern__bufs_count;
    if (!count || count > 32768 || (count & (count - 1)))
        return -EINVAL;
    tern__bufs *b = TERN__FAULT_ALLOC(calloc(1, sizeof *b));
    if (!b)
        return -ENOMEM;
    b->count = count;
    b->size = TERN__BUF_SIZE;
    b->mask = (unsigned)io_uring_buf_ring_mask(count);
    long page = sysconf(_SC_PAGESIZE);
    void *ring = NULL;
    if (posix_memalign(&ring, page > 0 ? (size_t)page : 4096,
                       count * sizeof(struct io_uring_buf)) != 0)
        ring = NULL;
    b->ring = ring;
    b->data = TERN__FAULT_ALLOC(malloc((size_t)count * b->size));
    b->len = TERN__FAULT_ALLOC(calloc(count, sizeof *b->len));
    b->next = TERN__FAULT_ALLOC(calloc(count, sizeof *b->next));
    if (!b->ring || !b->data || !b->len || !b->next) {
        bufs_free(b);
        return -ENOMEM;
    }
    io_uring_buf_ring_init(b->ring);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)b->ring, .ring_entries = count, .bgid = 0};
    int r = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (r < 0) {
        bufs_free(b);
        return r;
    }
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(b->ring, b->data + (size_t)i * b->size, b->size,
                              (unsigned short)i, (int)b->mask, (int)i);
    io_uring_buf_ring_advance(b->ring, (int)count);
    atomic_init(&b->refs, 1); /* the driver's */
    *out = b;
    return 0;
}

tern__bufs *tern__uring_bufs(tern__driver *d)
{
    uring *u = (uring *)d;
    if (!u->bufs_tried) {
        /* a failure for memory is tried again on the next stream */
        int r = tern__multishot_off() ? -EOPNOTSUPP : bufs_new(u, &u->bufs);
        u->bufs_tried = r != -ENOMEM;
    }
    if (u->bufs)
        atomic_fetch_add_explicit(&u->bufs->refs, 1, memory_order_relaxed);
    return u->bufs;
}

void tern__bufs_put(tern__bufs *b, unsigned bid)
{
    tern__spin_lock(&b->lock);
    if (!atomic_load_explicit(&b->dead, memory_order_relaxed)) {
        io_uring_buf_ring_add(b->ring, b->data + (size_t)bid * b->size, b->size,
                              (unsigned short)bid, (int)b->mask, 0);
        /* a release store of the tail: the kernel sees the entry first */
        io_uring_buf_ring_advance(b->ring, 1);
    }
    /* the kernel refills it and a completion hands it out again: the
     * edge ThreadSanitizer cannot see (reap's TSAN_ACQUIRE) */
    TSAN_RELEASE(b);
    tern__spin_unlock(&b->lock);
    atomic_fetch_sub_explicit(&b->out, 1, memory_order_relaxed);
}

void tern__bufs_unref(tern__bufs *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        bufs_free(b);
}

const tern__driver_ops tern__uring_ops = {
    .name = "io_uring",
    .kind = TERN__DRIVER_COMPLETION,
    .open = uring_open,
    .wait = uring_wait,
    .wake = uring_wake,
    .close = uring_close,
    .submit = uring_submit,
    .cancel = uring_cancel,
};
