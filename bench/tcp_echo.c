/*
 * tcp_echo: the server of bench-contract.md's tcp_echo workload. Listens on
 * 127.0.0.1:PORT and echoes every byte on every connection, one task per
 * connection, until the client closes it; stops cleanly on SIGINT, SIGTERM
 * or after LIFETIME_S seconds. Prints no RESULT line: bench/loadgen (or the
 * peer harness's) drives it and measures.
 * Usage: tcp_echo [--workers N] PORT [LIFETIME_S]
 */
#include <stdint.h>

#include "server.h"

static void *echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096]; /* one page of the fiber stack */
    for (;;) {
        /* 0: the client closed; < 0: a reset, or -ECANCELED at shutdown */
        ssize_t n = tern_recv(fd, buf, sizeof buf, 0, 0);
        if (n <= 0)
            break;
        if (tern_write_all(fd, buf, (size_t)n, NULL, 0) < 0)
            break;
    }
    tern_close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    return server_main(argc, argv, "tcp_echo", echo);
}
