/*
 * What tern's example servers (tcp_echo, http) share: the command line
 * `<name> [--workers N] PORT [LIFETIME_S]`, a listener on 127.0.0.1:PORT
 * (PORT 0: one the kernel picks, shown in the INFO line), an accept task
 * that spawns one task per connection, the timeouts below, and a clean stop
 * on SIGINT, SIGTERM or after LIFETIME_S seconds: the listener is closed at
 * once, idle connections are closed, requests in flight may finish until
 * the drain deadline, then what is left is cancelled and the exit status
 * is 0.
 *
 * The limits come from the environment (milliseconds; 0: no limit; a bad
 * value is named on stderr and the exit status is 2). The defaults are
 * nginx's:
 *   TERN_SERVER_HEADER_TIMEOUT_MS  60000  from a request's first byte to the
 *                                         end of its head (http); also the
 *                                         longest wait for a body's next bytes
 *   TERN_SERVER_IDLE_TIMEOUT_MS    75000  no byte of a next request (http) or
 *                                         message (tcp_echo) within it: close
 *   TERN_SERVER_WRITE_TIMEOUT_MS   60000  an answer not taken by the peer
 *                                         within it: close
 *   TERN_SERVER_DRAIN_TIMEOUT_MS    5000  after a stop, how long requests in
 *                                         flight may take to finish
 *   TERN_SERVER_BODY_MAX         1048576  bytes: a larger request body gets
 *                                         413 (http)
 */
#ifndef TERN_BENCH_SERVER_H
#define TERN_BENCH_SERVER_H

#include <sys/types.h>

#include "common.h"

typedef struct server_limits {
    uint64_t header_timeout_ns; /* 0: none */
    uint64_t idle_timeout_ns;
    uint64_t write_timeout_ns;
    uint64_t drain_timeout_ns;
    uint64_t body_max; /* bytes */
} server_limits;

/* One accepted connection, as the server tracks it for the drain. */
typedef struct server_conn server_conn;

/* Serves one connection: fd (TCP_NODELAY set) is the function's, and
 * server.c closes it after the function returns. */
typedef void (*server_conn_fn)(server_conn *c, int fd);

/* Runs the server and returns main()'s exit status: 0 after a clean stop,
 * 1 when the runtime or the listener failed, 2 for bad arguments or limits
 * (after a message). Each accepted connection becomes a detached task
 * running conn. When the drain deadline has passed, connections still
 * waiting are woken with -ECANCELED and must then return. */
int server_main(int argc, char **argv, const char *name, server_conn_fn conn);

/* The limits in force (read from the environment by server_main). */
const server_limits *server_get_limits(void);

/* tern_now() + ns, or 0 (no deadline) when ns is 0. */
uint64_t server_deadline(uint64_t ns);

/* Waits, up to the idle timeout, for the first bytes of a next request
 * (tcp_echo: any bytes) to be in s, which holds none, and points *data at
 * them like tern_stream_peek. Returns the count buffered, 0 when the peer
 * closed, -ETIMEDOUT when it stayed idle, -ECANCELED when the server is
 * draining (the connection is to be closed, even if some bytes came), or
 * another error. */
ssize_t server_stream_idle(server_conn *c, tern_stream *s, const void **data);

/* tern_stream_flush with the write timeout. Returns 0 or a negative errno
 * (-ETIMEDOUT: the peer did not read). */
int server_flush(tern_stream *s);

/* 1 once a stop has begun: an answer should then close its connection. */
int server_draining(void);

#endif
