/*
 * The task dump (Go's goroutine dump, asyncio's all_tasks + print_stack).
 *
 * Every live task is in the registry (task.c). The dump copies one shard at
 * a time into a snapshot under that shard's lock, so the tasks cannot be
 * freed and their names and contexts cannot change while they are copied,
 * then prints the snapshot with no lock held: a slow FILE never holds up a
 * spawn. Nothing else stops, so states are each a moment's truth.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io.h"

typedef struct snap {
    tern_task *task; /* for the running check only; never dereferenced unlocked */
    uint64_t id;
    const char *file;
    uint32_t line;
    uint32_t state;
    uint8_t kind;
    uint8_t wkind;
    uintptr_t wobj;
    uint64_t wsince;
    tern_context *ctx; /* a reference, with TERN_DUMP_CONTEXT */
    char name[64];
} snap;

static const char *const wait_names[TERN__W_COUNT] = {
    [TERN__W_NONE] = "unknown",      [TERN__W_PARK] = "park",
    [TERN__W_SLEEP] = "sleep",       [TERN__W_JOIN] = "join",
    [TERN__W_FUTURE] = "future",     [TERN__W_CHAN_SEND] = "channel send",
    [TERN__W_CHAN_RECV] = "channel receive", [TERN__W_SELECT] = "select",
    [TERN__W_MUTEX] = "mutex",       [TERN__W_RWLOCK] = "rwlock",
    [TERN__W_SEM] = "semaphore",     [TERN__W_EVENT] = "event",
    [TERN__W_NOTIFY] = "notify",     [TERN__W_COND] = "condition",
    [TERN__W_BARRIER] = "barrier",   [TERN__W_WAITGROUP] = "waitgroup",
    [TERN__W_GROUP] = "task group",  [TERN__W_GEN] = "generator",
    [TERN__W_IO] = "io",             [TERN__W_FD] = "fd",
    [TERN__W_BLOCKING] = "blocking job",
};

/* Copies what a snapshot needs; the caller holds t's shard lock. */
static void snap_fill(snap *s, tern_task *t, int flags)
{
    s->task = t;
    s->id = t->id;
    s->file = t->file;
    s->line = t->line;
    s->kind = t->kind;
    s->state = atomic_load_explicit(&t->state, RELAXED);
    s->wkind = atomic_load_explicit(&t->wait_kind, RELAXED);
    s->wobj = atomic_load_explicit(&t->wait_obj, RELAXED);
    s->wsince = atomic_load_explicit(&t->wait_since, RELAXED);
    s->ctx = flags & TERN_DUMP_CONTEXT && t->ctx ? tern_context_ref(t->ctx) : NULL;
    snprintf(s->name, sizeof s->name, "%s", t->name ? t->name : "");
}

/* Snapshots shard i into *buf (grown as needed). Returns the count or -1. */
static long shard_snap(tern_runtime *rt, unsigned i, snap **buf, size_t *cap, int flags)
{
    for (;;) {
        size_t n = 0;
        tern__registry_lock(rt, i);
        for (tern_task *t = rt->shards[i].head; t; t = t->reg_next)
            n++;
        if (n <= *cap) {
            n = 0;
            for (tern_task *t = rt->shards[i].head; t; t = t->reg_next)
                snap_fill(&(*buf)[n++], t, flags);
            tern__registry_unlock(rt, i);
            return (long)n;
        }
        tern__registry_unlock(rt, i);
        size_t ncap = n + n / 2 + 16;
        snap *nb = realloc(*buf, ncap * sizeof *nb);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
}

/* JSON strings: names and paths are the caller's bytes. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

typedef struct ctx_print {
    FILE *f;
    int json;
    int first;
} ctx_print;

static void ctx_var(tern_ctxvar *v, void *value, void *arg)
{
    ctx_print *p = arg;
    if (p->json) {
        fputs(p->first ? "" : ",", p->f);
        json_str(p->f, tern_ctxvar_name(v));
        fprintf(p->f, ":\"%p\"", value);
    } else {
        fprintf(p->f, "%s%s=%p", p->first ? "" : " ", tern_ctxvar_name(v), value);
    }
    p->first = 0;
}

/* The state in words, and the worker when running. */
static const char *state_name(const snap *s, int *worker, tern_task *const *busy,
                              unsigned nworkers)
{
    *worker = -1;
    if (s->kind != TERN_KIND_FIBER)
        return s->state & TS_RUNNING ? "blocking-running" : "blocking-queued";
    if (s->state & TS_RUNNING) {
        for (unsigned k = 0; k < nworkers; k++)
            if (busy[k] == s->task)
                *worker = (int)k;
        return "running";
    }
    if (s->state & TS_SCHEDULED)
        return "ready";
    if (s->state & TS_COMPLETE)
        return "finishing";
    return "waiting";
}

static void print_wait_text(FILE *f, const snap *s, uint64_t now)
{
    double waited = s->wsince && now > s->wsince ? (double)(now - s->wsince) / 1e9 : 0;
    unsigned k = s->wkind < TERN__W_COUNT ? s->wkind : TERN__W_NONE;
    fprintf(f, " %.3f s: ", waited);
    switch (k) {
    case TERN__W_SLEEP:
        fprintf(f, "sleep, %.3f s left",
                s->wobj > now ? (double)(s->wobj - now) / 1e9 : 0.0);
        break;
    case TERN__W_JOIN:
        fprintf(f, "join of task %llu", (unsigned long long)s->wobj);
        break;
    case TERN__W_IO:
        fprintf(f, "%s on fd %d", tern__io_name((int)(s->wobj >> 32)),
                (int)(unsigned)(s->wobj & 0xffffffffu));
        break;
    case TERN__W_PARK:
        fputs("park", f);
        break;
    default:
        fprintf(f, "%s %p", wait_names[k], (void *)s->wobj);
    }
}

static void print_wait_json(FILE *f, const snap *s, uint64_t now)
{
    unsigned k = s->wkind < TERN__W_COUNT ? s->wkind : TERN__W_NONE;
    uint64_t waited = s->wsince && now > s->wsince ? now - s->wsince : 0;
    fprintf(f, ",\"waited_ns\":%llu,\"wait\":", (unsigned long long)waited);
    if (k == TERN__W_IO) {
        json_str(f, tern__io_name((int)(s->wobj >> 32)));
        fprintf(f, ",\"fd\":%d", (int)(unsigned)(s->wobj & 0xffffffffu));
        return;
    }
    json_str(f, wait_names[k]);
    if (k == TERN__W_SLEEP)
        fprintf(f, ",\"until_ns\":%llu", (unsigned long long)s->wobj);
    else if (k == TERN__W_JOIN)
        fprintf(f, ",\"task\":%llu", (unsigned long long)s->wobj);
    else if (k != TERN__W_PARK && k != TERN__W_NONE)
        fprintf(f, ",\"object\":\"%p\"", (void *)s->wobj);
}

static void print_snap(FILE *f, tern_runtime *rt, const snap *s, int flags,
                       tern_task *const *busy, uint64_t now)
{
    int worker;
    const char *state = state_name(s, &worker, busy, rt->nworkers);
    int waiting = !strcmp(state, "waiting");
    if (flags & TERN_DUMP_JSON) {
        fprintf(f, "{\"runtime\":\"%p\",\"id\":%llu,\"name\":", (void *)rt,
                (unsigned long long)s->id);
        json_str(f, s->name);
        fputs(",\"file\":", f);
        if (s->file)
            json_str(f, s->file);
        else
            fputs("null", f);
        fprintf(f, ",\"line\":%u,\"state\":\"%s\"", s->line, state);
        if (worker >= 0)
            fprintf(f, ",\"worker\":%d", worker);
        if (waiting)
            print_wait_json(f, s, now);
        if (s->ctx) {
            ctx_print p = {f, 1, 1};
            fputs(",\"context\":{", f);
            tern__context_each(s->ctx, ctx_var, &p);
            fputc('}', f);
        }
        fputs("}\n", f);
        return;
    }
    fprintf(f, "task %llu", (unsigned long long)s->id);
    if (s->name[0])
        fprintf(f, " \"%s\"", s->name);
    fprintf(f, " [%s", state);
    if (worker >= 0)
        fprintf(f, " on worker %d", worker);
    if (waiting)
        print_wait_text(f, s, now);
    fputc(']', f);
    if (s->file)
        fprintf(f, " spawned at %s:%u", s->file, s->line);
    fputc('\n', f);
    if (s->ctx && tern_context_len(s->ctx)) {
        ctx_print p = {f, 0, 1};
        fputs("    context: ", f);
        tern__context_each(s->ctx, ctx_var, &p);
        fputc('\n', f);
    }
}

int tern_runtime_dump(tern_runtime *rt, FILE *f, int flags)
{
    if (!rt || !f || (flags & ~(TERN_DUMP_JSON | TERN_DUMP_CONTEXT)))
        return -EINVAL;
    tern_task **busy = calloc(rt->nworkers, sizeof *busy);
    if (!busy)
        return -ENOMEM;
    tern_metrics m;
    tern_runtime_metrics(rt, &m);
    if (!(flags & TERN_DUMP_JSON))
        fprintf(f,
                "tern runtime %p: %u workers, %s, %llu live tasks, %llu ready, %llu "
                "injected, %llu timers, %u blocking threads (%u idle, %u queued jobs)\n",
                (void *)rt, rt->nworkers, m.backend, (unsigned long long)m.live_tasks,
                (unsigned long long)m.ready_tasks, (unsigned long long)m.inject_depth,
                (unsigned long long)m.timers_armed, m.blocking_threads, m.blocking_idle,
                m.blocking_queued);
    snap *buf = NULL;
    size_t cap = 0;
    long total = 0;
    int err = 0;
    for (unsigned i = 0; i < rt->nshards && !err; i++) {
        /* which task each worker runs, read just before its shard is copied */
        for (unsigned k = 0; k < rt->nworkers; k++)
            busy[k] = atomic_load_explicit(&rt->loops[k]->busy_task, RELAXED);
        long n = shard_snap(rt, i, &buf, &cap, flags);
        if (n < 0) {
            err = -ENOMEM;
            break;
        }
        uint64_t now = tern_now();
        for (long j = 0; j < n; j++) {
            print_snap(f, rt, &buf[j], flags, busy, now);
            tern_context_release(buf[j].ctx);
        }
        total += n;
    }
    free(buf);
    free(busy);
    if (!err && (fflush(f) != 0 || ferror(f)))
        err = -EIO;
    return err ? err : (int)total;
}

int tern__stall_describe(tern_runtime *rt, tern_task *t, tern_stall *s, char *name,
                         size_t namelen)
{
    for (unsigned i = 0; i < rt->nshards; i++) {
        tern__registry_lock(rt, i);
        for (tern_task *u = rt->shards[i].head; u; u = u->reg_next) {
            if (u != t)
                continue;
            s->task_id = u->id;
            s->file = u->file ? u->file : "";
            s->line = (int)u->line;
            snprintf(name, namelen, "%s", u->name ? u->name : "");
            s->name = name;
            tern__registry_unlock(rt, i);
            return 1;
        }
        tern__registry_unlock(rt, i);
    }
    return 0;
}
