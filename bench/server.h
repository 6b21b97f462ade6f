/*
 * What tern's benchmark servers (tcp_echo, http) share: the command line
 * `<name> [--workers N] PORT [LIFETIME_S]`, a listener on 127.0.0.1:PORT
 * (PORT 0: one the kernel picks, shown in the INFO line), an accept task that spawns one
 * task per connection, and a clean stop on SIGINT, SIGTERM or after LIFETIME_S seconds.
 */
#ifndef TERN_BENCH_SERVER_H
#define TERN_BENCH_SERVER_H

#include "common.h"

/* Runs the server and returns main()'s exit status: 0 after a clean stop,
 * 1 when the runtime or the listener failed, 2 for bad arguments (after a
 * usage line). Each accepted connection (TCP_NODELAY set) becomes a detached
 * task running conn((void *)(intptr_t)fd); it owns fd and must tern_close it.
 * When the server stops, tasks still waiting on their connection are woken
 * with -ECANCELED by the runtime's shutdown and must then return. */
int server_main(int argc, char **argv, const char *name, tern_task_fn conn);

#endif
