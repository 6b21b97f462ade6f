/*
 * mpsc: P producer tasks each send 1..M into one bounded tern channel of
 * capacity CAP; one consumer task receives until the channel is closed and
 * drained. The last producer to finish closes the channel (Tokio's: the last
 * Sender dropped). Timed from before the root spawn until the consumer is
 * joined. Usage: mpsc [--workers N] [P] [M] [CAP]; one op = one message.
 */
#include <stdatomic.h>
#include <stdio.h>

#include "common.h"

typedef struct state {
    uint64_t p, m, cap;
    tern_chan *ch;
    _Atomic uint64_t producing; /* producers that have not finished sending */
    uint64_t count, sum;        /* the consumer's */
} state;

static void *producer(void *arg)
{
    state *st = arg;
    /* its own reference: the consumer may release its one as soon as the
     * close below lets it see the end of the stream */
    tern_chan *ch = tern_chan_ref(st->ch);
    for (uint64_t i = 1; i <= st->m; i++) {
        int rc = tern_chan_send(ch, &i);
        if (rc < 0)
            bench_die("tern_chan_send", rc);
    }
    if (atomic_fetch_sub_explicit(&st->producing, 1, memory_order_acq_rel) == 1) {
        int rc = tern_chan_close(ch);
        if (rc < 0)
            bench_die("tern_chan_close", rc);
    }
    tern_chan_release(ch);
    return NULL;
}

static void *consumer(void *arg)
{
    state *st = arg;
    int rc = tern_chan_new(sizeof(uint64_t), st->cap, &st->ch);
    if (rc < 0)
        bench_die("tern_chan_new", rc);
    atomic_store(&st->producing, st->p);
    for (uint64_t i = 0; i < st->p; i++) {
        rc = tern_spawn(producer, st, NULL);
        if (rc < 0)
            bench_die("tern_spawn", rc);
    }
    uint64_t v, count = 0, sum = 0;
    while ((rc = tern_chan_recv(st->ch, &v)) == 1) {
        count++;
        sum += v;
    }
    if (rc < 0)
        bench_die("tern_chan_recv", rc);
    st->count = count;
    st->sum = sum;
    tern_chan_release(st->ch);
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"P", "M", "CAP"};
    static const uint64_t defs[] = {4, 250000, 1024};
    static const uint64_t max[] = {UINT64_MAX, UINT64_MAX, (uint64_t)1 << 32};
    bench_args a;
    bench_parse(argc, argv, "mpsc", 3, names, defs, max, &a);

    static state st;
    st.p = a.size[0];
    st.m = a.size[1];
    st.cap = a.size[2];
    /* n = P*M and the checksum P*M*(M+1)/2 must fit in 64 bits (the
     * product below cannot overflow 128 bits once P*M fits in 64) */
    unsigned __int128 pm = (unsigned __int128)st.p * st.m;
    unsigned __int128 want_sum =
        pm <= UINT64_MAX ? pm * ((unsigned __int128)st.m + 1) / 2 : 0;
    if (pm > UINT64_MAX || want_sum > UINT64_MAX) {
        fprintf(stderr, "error: P*M*(M+1)/2 does not fit in 64 bits\n");
        return 2;
    }
    uint64_t elapsed_ns = bench_run_root(a.workers, consumer, &st);

    uint64_t total = st.p * st.m;
    bench_check(st.count == total, "P*M messages received");
    bench_check(st.sum == (uint64_t)want_sum, "sum of the messages is P*M*(M+1)/2");
    bench_result("mpsc", total, elapsed_ns, NULL);
    return 0;
}
