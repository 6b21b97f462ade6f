/*
 * The convenient socket layer: name resolution on the blocking pool,
 * listeners and connectors for TCP, Unix-domain and UDP sockets, options
 * and addresses.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "io/io.h"

int tern_socket(int domain, int type, int protocol)
{
    /* Blocking sockets suit io_uring best (no EAGAIN round trip); epoll
     * needs them non-blocking. Off the runtime, non-blocking is the choice
     * that works everywhere. */
    tern_runtime *rt = tern_runtime_current();
    if (!rt || rt->backend != TERN_BACKEND_IO_URING)
        type |= SOCK_NONBLOCK;
    int fd = socket(domain, type | SOCK_CLOEXEC, protocol);
    if (fd < 0)
        return -errno;
    tern__io_fd_forget(fd, 0);
    return fd;
}

/* ---- name resolution --------------------------------------------------------------- */

/* One lookup, shared by the asking task and the blocking thread: the task
 * may give up (deadline, cancel) while the thread still runs, and then the
 * thread cleans up. The wake record's claim decides which of the two does. */
typedef struct lookup {
    tern__wake wake;
    tern__waiter node; /* claimed by the thread when it finishes first */
    char *host, *service;
    struct addrinfo hints;
    int has_hints;
    struct addrinfo *res;
    int err;
} lookup;

static int eai_errno(int eai)
{
    switch (eai) {
    case 0:
        return 0;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno ? -errno : -EIO;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
    case EAI_SERVICE:
        return -ENXIO;
    case EAI_BADFLAGS:
    case EAI_FAMILY:
    case EAI_SOCKTYPE:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static void lookup_free(lookup *l)
{
    if (l->res)
        freeaddrinfo(l->res);
    free(l->host);
    free(l->service);
    free(l);
}

tern__getaddrinfo_fn tern__lookup = getaddrinfo;

static void *lookup_job(void *arg)
{
    lookup *l = arg;
    int eai = tern__lookup(l->host, l->service, l->has_hints ? &l->hints : NULL, &l->res);
    l->err = eai_errno(eai);
    if (eai)
        l->res = NULL;
    return NULL;
}

/* After lookup_job, unless shutdown abandoned it (then l is kept). */
static void lookup_deliver(void *arg)
{
    lookup *l = arg;
    if (!tern__waiter_claim(&l->node)) {
        lookup_free(l); /* the task gave up: nobody will read it */
        return;
    }
    tern__wake_post(&l->node);
}

int tern_getaddrinfo(const char *host, const char *service, const struct addrinfo *hints,
                     struct addrinfo **res, uint64_t deadline)
{
    if (!res || (!host && !service))
        return -EINVAL;
    if (!tern__task_self())
        return -EPERM;
    lookup *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    if ((host && !(l->host = strdup(host))) ||
        (service && !(l->service = strdup(service)))) {
        lookup_free(l);
        return -ENOMEM;
    }
    if (hints) {
        l->hints = *hints;
        l->hints.ai_addr = NULL;
        l->hints.ai_canonname = NULL;
        l->hints.ai_next = NULL;
        l->has_hints = 1;
    }
    tern__wake_init(&l->wake);
    l->node.wake = &l->wake;
    /* a job that always runs, even at shutdown: it frees l if we left */
    int r = tern__blocking_must(lookup_job, lookup_deliver, l);
    if (r < 0) {
        lookup_free(l);
        return r;
    }
    tern__wait_note(TERN__W_BLOCKING, (uintptr_t)l);
    r = tern__wake_wait(&l->wake, deadline, 0);
    if (r < 0)
        return r; /* abandoned: the job frees l */
    r = l->err;
    *res = l->res;
    l->res = NULL;
    lookup_free(l);
    return r;
}

/* Fills *ss from a numeric host, or returns 0 when host is not numeric. */
static socklen_t numeric(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        return sizeof *a4;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        return sizeof *a6;
    }
    return 0;
}

/* Resolves host:port for socktype: numeric hosts without a lookup. Returns
 * a list to free with freeaddrinfo, or a negative errno. */
static int resolve(const char *host, uint16_t port, int socktype, int passive,
                   struct addrinfo **out, uint64_t deadline)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_socktype = socktype,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0) |
                                         AI_ADDRCONFIG};
    struct sockaddr_storage ss;
    if (host && numeric(host, port, &ss)) {
        /* no lookup: works off the runtime too; and no AI_ADDRCONFIG, which
         * would refuse "::1" on a host whose only IPv6 is loopback */
        hints.ai_flags = (hints.ai_flags & ~AI_ADDRCONFIG) | AI_NUMERICHOST;
        int eai = getaddrinfo(host, service, &hints, out);
        return eai_errno(eai);
    }
    return tern_getaddrinfo(host, service, &hints, out, deadline);
}

/* ---- listeners and connectors ------------------------------------------------------ */

static int setopt(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

static int bind_one(const struct sockaddr *addr, socklen_t len, int type, int backlog,
                    unsigned flags)
{
    int fd = tern_socket(addr->sa_family, type, 0);
    if (fd < 0)
        return fd;
    int r = 0;
    if (type == SOCK_STREAM)
        r = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!r && (flags & TERN_REUSEPORT))
        r = setopt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (!r && addr->sa_family == AF_INET6)
        r = setopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, (flags & TERN_V6ONLY) != 0);
    if (!r && bind(fd, addr, len) < 0)
        r = -errno;
    if (!r && type == SOCK_STREAM && listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        r = -errno;
    if (r) {
        close(fd);
        return r;
    }
    return fd;
}

/* host NULL or "": the IPv6 wildcard, which takes IPv4 too unless V6ONLY;
 * the IPv4 one where the system has no IPv6. Otherwise the first resolved
 * address that binds. */
static int listen_on(const char *host, uint16_t port, int type, int backlog,
                     unsigned flags)
{
    if (flags & ~(TERN_REUSEPORT | TERN_V6ONLY))
        return -EINVAL;
    if (!host || !*host) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
                                  .sin6_port = htons(port),
                                  .sin6_addr = IN6ADDR_ANY_INIT};
        int fd = bind_one((struct sockaddr *)&a6, sizeof a6, type, backlog, flags);
        if (fd != -EAFNOSUPPORT)
            return fd;
        struct sockaddr_in a4 = {.sin_family = AF_INET,
                                 .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY)};
        return bind_one((struct sockaddr *)&a4, sizeof a4, type, backlog, flags);
    }
    struct addrinfo *list;
    int r = resolve(host, port, type, 1, &list, 0);
    if (r < 0)
        return r;
    r = -ENXIO;
    for (struct addrinfo *a = list; a; a = a->ai_next)
        if ((r = bind_one(a->ai_addr, a->ai_addrlen, type, backlog, flags)) >= 0)
            break;
    freeaddrinfo(list);
    return r;
}

int tern_tcp_listen(const char *host, uint16_t port, int backlog, unsigned flags)
{
    return listen_on(host, port, SOCK_STREAM, backlog, flags);
}

int tern_udp_bind(const char *host, uint16_t port)
{
    return listen_on(host, port, SOCK_DGRAM, 0, 0);
}

static int connect_one(const struct sockaddr *addr, socklen_t len, uint64_t deadline)
{
    int fd = tern_socket(addr->sa_family, SOCK_STREAM, 0);
    if (fd < 0)
        return fd;
    int r = tern_connect(fd, addr, len, deadline);
    if (r < 0) {
        tern_close(fd);
        return r;
    }
    return fd;
}

int tern_tcp_connect(const char *host, uint16_t port, uint64_t deadline)
{
    if (!host || !*host)
        return -EINVAL;
    if (!tern__task_self())
        return -EPERM;
    struct addrinfo *list;
    int r = resolve(host, port, SOCK_STREAM, 0, &list, deadline);
    if (r < 0)
        return r;
    r = -ENXIO;
    for (struct addrinfo *a = list; a; a = a->ai_next) {
        r = connect_one(a->ai_addr, a->ai_addrlen, deadline);
        if (r >= 0 || r == -ETIMEDOUT || r == -ECANCELED)
            break;
    }
    freeaddrinfo(list);
    return r;
}

static int unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    if (!path || !*path)
        return -EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof sun->sun_path)
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int tern_unix_listen(const char *path, int backlog)
{
    struct sockaddr_un sun;
    socklen_t len;
    int r = unix_addr(path, &sun, &len);
    return r < 0 ? r : bind_one((struct sockaddr *)&sun, len, SOCK_STREAM, backlog, 0);
}

int tern_unix_connect(const char *path, uint64_t deadline)
{
    struct sockaddr_un sun;
    socklen_t len;
    int r = unix_addr(path, &sun, &len);
    if (r < 0)
        return r;
    if (!tern__task_self())
        return -EPERM;
    return connect_one((struct sockaddr *)&sun, len, deadline);
}

/* ---- options and addresses --------------------------------------------------------- */

int tern_sock_nodelay(int fd, int on)
{
    return setopt(fd, IPPROTO_TCP, TCP_NODELAY, on != 0);
}

int tern_sock_keepalive(int fd, int idle_s)
{
    if (idle_s < 0)
        return -EINVAL;
    int r = setopt(fd, SOL_SOCKET, SO_KEEPALIVE, idle_s > 0);
    if (!r && idle_s > 0)
        r = setopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle_s);
    return r;
}

int tern_sock_bufsizes(int fd, int rcvbuf, int sndbuf)
{
    if (rcvbuf < 0 || sndbuf < 0)
        return -EINVAL;
    int r = 0;
    if (rcvbuf)
        r = setopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf);
    if (!r && sndbuf)
        r = setopt(fd, SOL_SOCKET, SO_SNDBUF, sndbuf);
    return r;
}

int tern_sock_local_addr(int fd, struct sockaddr_storage *addr, socklen_t *len)
{
    if (!addr || !len)
        return -EINVAL;
    return getsockname(fd, (struct sockaddr *)addr, len) < 0 ? -errno : 0;
}

int tern_sock_peer_addr(int fd, struct sockaddr_storage *addr, socklen_t *len)
{
    if (!addr || !len)
        return -EINVAL;
    return getpeername(fd, (struct sockaddr *)addr, len) < 0 ? -errno : 0;
}
