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

static void echo(server_conn *c, int fd)
{
    char buf[4096]; /* one page of the fiber stack */
    for (;;) {
        /* 0: the client closed; < 0: a reset, the idle timeout, the drain,
         * or -ECANCELED at shutdown */
        ssize_t n = server_recv_idle(c, fd, buf, sizeof buf);
        if (n <= 0)
            break;
        if (server_write(fd, buf, (size_t)n) < 0)
            break;
    }
}

int main(int argc, char **argv)
{
    return server_main(argc, argv, "tcp_echo", echo);
}
