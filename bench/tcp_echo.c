/*
 * tcp_echo: the server of bench-contract.md's tcp_echo workload. Listens on
 * 127.0.0.1:PORT and echoes every byte on every connection, one task per
 * connection, until the client closes it; stops cleanly on SIGINT, SIGTERM
 * or after LIFETIME_S seconds. Prints no RESULT line: bench/loadgen (or the
 * peer harness's) drives it and measures.
 *
 * A connection that sends nothing for TERN_SERVER_IDLE_TIMEOUT_MS (75 s), or
 * does not read its echo within TERN_SERVER_WRITE_TIMEOUT_MS (60 s), is
 * closed; at a stop, connections waiting for bytes are closed at once and
 * one writing its echo may finish it until TERN_SERVER_DRAIN_TIMEOUT_MS
 * (5 s). See server.h.
 * Usage: tcp_echo [--workers N] PORT [LIFETIME_S]
 */
#include <stdint.h>

#include "server.h"

/* What one read brought goes back in one write, through the stream's two
 * sides (the copy between them is small beside the system calls). */
static void echo(server_conn *c, int fd)
{
    tern_stream *s;
    if (tern_stream_new(fd, NULL, &s) < 0)
        return;
    const server_limits *lim = server_get_limits();
    for (;;) {
        /* 0: the client closed; < 0: a reset, the idle timeout, the drain,
         * or -ECANCELED at shutdown */
        const void *d;
        ssize_t n = server_stream_idle(c, s, &d);
        if (n <= 0)
            break;
        if (tern_stream_write(s, d, (size_t)n, NULL,
                              server_deadline(lim->write_timeout_ns)) < 0)
            break;
        tern_stream_consume(s, (size_t)n);
        if (server_flush(s) < 0)
            break;
    }
    tern_stream_free(s); /* what a failed write left is dropped */
}

int main(int argc, char **argv)
{
    return server_main(argc, argv, "tcp_echo", echo);
}
