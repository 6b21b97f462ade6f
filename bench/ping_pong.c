/*
 * ping_pong: a root task starts R rounds concurrently (as Tokio's
 * rt_multi_threaded ping_pong bench does); in a round two tasks bounce a
 * counter over two bounded tern channels of capacity 1 until it reaches H;
 * all rounds are joined. Timed from before the root spawn until it is joined.
 * Usage: ping_pong [--workers N] [R] [H]; one op = one hop (one send).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

typedef struct state {
    uint64_t r, h;
    _Atomic uint64_t hops;
} state;

/* One side of a round: what it sends on tx, what it receives on rx. */
typedef struct side {
    state *st;
    tern_chan *tx, *rx;
    int first;
} side;

static void send_hop(tern_chan *tx, uint64_t v)
{
    int rc = tern_chan_send(tx, &v);
    if (rc < 0)
        bench_die("tern_chan_send", rc);
}

/* Receives v and, unless v is the last hop, sends v + 1; the first side
 * starts with 1. Every value received must be the one after the last value
 * sent (or 1), so a lost, duplicated or corrupted hop is caught here.
 * Returns the number of sends this side made. */
static uint64_t play(const side *s)
{
    uint64_t h = s->st->h, sent = 0, last = 0;
    if (s->first) {
        send_hop(s->tx, 1);
        sent++;
        last = 1;
        if (h == 1)
            return sent;
    }
    for (;;) {
        uint64_t v;
        int rc = tern_chan_recv(s->rx, &v);
        if (rc < 0)
            bench_die("tern_chan_recv", rc);
        bench_check(rc == 1, "a round's channel ended before the last hop");
        bench_check(v == last + 1, "each hop carries the next value");
        if (v == h)
            break;
        send_hop(s->tx, v + 1);
        sent++;
        last = v + 1;
        if (last == h)
            break;
    }
    return sent;
}

static void *player(void *arg)
{
    return (void *)(uintptr_t)play(arg);
}

static void *round_task(void *arg)
{
    state *st = arg;
    tern_chan *a_to_b, *b_to_a;
    int rc = tern_chan_new(sizeof(uint64_t), 1, &a_to_b);
    if (rc == 0)
        rc = tern_chan_new(sizeof(uint64_t), 1, &b_to_a);
    if (rc < 0)
        bench_die("tern_chan_new", rc);

    /* b lives on this task's stack, which outlives the join below */
    side a = {st, a_to_b, b_to_a, 1}, b = {st, b_to_a, a_to_b, 0};
    tern_task *tb;
    rc = tern_spawn(player, &b, &tb);
    if (rc < 0)
        bench_die("tern_spawn", rc);
    uint64_t sent = play(&a);
    void *sent_b;
    rc = tern_join(tb, &sent_b);
    if (rc < 0)
        bench_die("tern_join", rc);
    atomic_fetch_add_explicit(&st->hops, sent + (uintptr_t)sent_b, memory_order_relaxed);
    tern_chan_release(a_to_b);
    tern_chan_release(b_to_a);
    return NULL;
}

static void *spawner(void *arg)
{
    state *st = arg;
    bench_spawn_join(st->r, round_task, st);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"R", "H"};
    static const uint64_t defs[] = {1000, 100};
    /* a side's send count travels back as a pointer-sized join result */
    static const uint64_t max[] = {UINT64_MAX / sizeof(void *), UINTPTR_MAX};
    bench_args a;
    bench_parse(argc, argv, "ping_pong", 2, names, defs, max, &a);

    static state st;
    st.r = a.size[0];
    st.h = a.size[1];
    if (st.h > UINT64_MAX / st.r) {
        fprintf(stderr, "error: R*H does not fit in 64 bits\n");
        return 2;
    }
    uint64_t elapsed_ns = bench_run_root(a.workers, spawner, &st);

    uint64_t total = st.r * st.h;
    bench_check(atomic_load(&st.hops) == total, "R*H sends counted");
    bench_result("ping_pong", total, elapsed_ns, NULL);
    return 0;
}
