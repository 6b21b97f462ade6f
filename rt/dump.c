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

#include "rt/internal.h"

/* A task's context variables are copied too, under the lock: a reference
 * to its context kept past the lock could outlive the task, and with it
 * the variables (tern_ctxvar_free after the join) and the values (their
 * destructors would run on the dumping thread). */
#define SNAP_VARS 16 /* variables shown per task */
typedef struct snap_var {
    char name[32];
    void *value;
} snap_var;

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
    size_t var0, nvars; /* its variables in the snapshot's var array */
    char name[64];      /* cut at 63 bytes */
} snap;

typedef struct snapbuf {
    snap *s;
    size_t cap;
    snap_var *v;
    size_t vcap, nv;
} snapbuf;

static const char *const wait_names[TERN__W_COUNT] = {
    [TERN__W_NONE] = "unknown",
    [TERN__W_PARK] = "park",
    [TERN__W_SLEEP] = "sleep",
    [TERN__W_JOIN] = "join",
    [TERN__W_FUTURE] = "future",
    [TERN__W_CHAN_SEND] = "channel send",
    [TERN__W_CHAN_RECV] = "channel receive",
    [TERN__W_SELECT] = "select",
    [TERN__W_MUTEX] = "mutex",
    [TERN__W_RWLOCK] = "rwlock",
    [TERN__W_SEM] = "semaphore",
    [TERN__W_EVENT] = "event",
    [TERN__W_NOTIFY] = "notify",
    [TERN__W_COND] = "condition",
    [TERN__W_BARRIER] = "barrier",
    [TERN__W_WAITGROUP] = "waitgroup",
    [TERN__W_GROUP] = "task group",
    [TERN__W_GEN] = "generator",
    [TERN__W_IO] = "io",
    [TERN__W_BLOCKING] = "blocking job",
    [TERN__W_SIGNAL] = "signal",
};

static void copy_str(char *dst, size_t len, const char *src)
{
    size_t n = src ? strnlen(src, len - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

static void var_copy(tern_ctxvar *v, void *value, void *arg)
{
    snapbuf *b = arg;
    snap *s = &b->s[-1]; /* the snapshot being filled (see snap_fill) */
    if (s->nvars == SNAP_VARS)
        return;
    snap_var *sv = &b->v[s->var0 + s->nvars++];
    copy_str(sv->name, sizeof sv->name, tern_ctxvar_name(v));
    sv->value = value;
    b->nv++;
}

static size_t vars_of(const tern_task *t, int flags)
{
    if (!(flags & TERN_DUMP_CONTEXT) || !t->ctx)
        return 0;
    size_t n = tern_context_len(t->ctx);
    return n < SNAP_VARS ? n : SNAP_VARS;
}

/* Copies what a snapshot needs into b->s[0]; the caller holds t's shard
 * lock and made room for vars_of(t) variables. */
static void snap_fill(snapbuf *b, tern_task *t, int flags)
{
    snap *s = b->s;
    s->task = t;
    s->id = t->id;
    s->file = t->file;
    s->line = t->line;
    s->kind = t->kind;
    s->state = atomic_load_explicit(&t->state, TERN__RELAXED);
    s->wkind = atomic_load_explicit(&t->wait_kind, TERN__RELAXED);
    s->wobj = atomic_load_explicit(&t->wait_obj, TERN__RELAXED);
    s->wsince = atomic_load_explicit(&t->wait_since, TERN__RELAXED);
    copy_str(s->name, sizeof s->name, atomic_load_explicit(&t->name, TERN__RELAXED));
    s->var0 = b->nv;
    s->nvars = 0;
    b->s++;
    if (vars_of(t, flags))
        tern__context_each(t->ctx, var_copy, b);
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t ncap = need + need / 2 + 16;
    void *np = realloc(*p, ncap * size);
    if (!np)
        return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

/* Snapshots the unfinished tasks of shard i into b (grown as needed:
 * counted while copying, grown outside the walk, then again). Returns the
 * count or -1. */
static long shard_snap(tern_runtime *rt, unsigned i, snapbuf *b, int flags)
{
    for (;;) {
        size_t n = 0, nv = 0;
        snap *first = b->s;
        b->nv = 0;
        tern__registry_enter(rt);
        tern__registry_lock(rt, i);
        for (tern_task *t = tern__registry_first(rt, i); t; t = tern__registry_next(t)) {
            if (atomic_load_explicit(&t->state, TERN__ACQUIRE) & TERN__TS_COMPLETE)
                continue; /* finished, not unlinked yet */
            size_t k = vars_of(t, flags);
            if (++n <= b->cap && nv + k <= b->vcap)
                snap_fill(b, t, flags);
            nv += k;
        }
        tern__registry_unlock(rt, i);
        tern__registry_leave(rt);
        b->s = first;
        if (n <= b->cap && nv <= b->vcap)
            return (long)n;
        if (grow((void **)&b->s, &b->cap, n, sizeof *b->s) < 0 ||
            grow((void **)&b->v, &b->vcap, nv, sizeof *b->v) < 0)
            return -1;
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

/* Text: a name on one line, quotes and control bytes escaped. */
static void text_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}

/* The state in words, and the worker when running. */
static const char *state_name(const snap *s, int *worker, tern_task *const *busy,
                              unsigned nworkers)
{
    *worker = -1;
    if (s->kind != TERN__KIND_FIBER)
        return s->state & TERN__TS_RUNNING ? "blocking-running" : "blocking-queued";
    if (s->state & TERN__TS_RUNNING) {
        for (unsigned k = 0; k < nworkers; k++)
            if (busy[k] == s->task)
                *worker = (int)k;
        /* on no worker: it yielded and waits in a run queue (a yield
         * leaves the state RUNNING, task.c), or is being switched */
        return *worker >= 0 ? "running" : "ready";
    }
    if (s->state & TERN__TS_SCHEDULED)
        return "ready";
    if (s->state & TERN__TS_COMPLETE)
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

static void print_snap(FILE *f, tern_runtime *rt, const snap *s, const snap_var *vars,
                       int flags, tern_task *const *busy, uint64_t now)
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
        if (flags & TERN_DUMP_CONTEXT) {
            fputs(",\"context\":{", f);
            for (size_t k = 0; k < s->nvars; k++) {
                fputs(k ? "," : "", f);
                json_str(f, vars[s->var0 + k].name);
                fprintf(f, ":\"%p\"", vars[s->var0 + k].value);
            }
            fputc('}', f);
        }
        fputs("}\n", f);
        return;
    }
    fprintf(f, "task %llu", (unsigned long long)s->id);
    if (s->name[0]) {
        fputs(" \"", f);
        text_str(f, s->name);
        fputc('"', f);
    }
    fprintf(f, " [%s", state);
    if (worker >= 0)
        fprintf(f, " on worker %d", worker);
    if (waiting)
        print_wait_text(f, s, now);
    fputc(']', f);
    if (s->file)
        fprintf(f, " spawned at %s:%u", s->file, s->line);
    fputc('\n', f);
    if (s->nvars) {
        fputs("    context:", f);
        for (size_t k = 0; k < s->nvars; k++) {
            fputc(' ', f);
            text_str(f, vars[s->var0 + k].name);
            fprintf(f, "=%p", vars[s->var0 + k].value);
        }
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
    snapbuf b = {0};
    long total = 0;
    int err = 0;
    for (unsigned i = 0; i < rt->nshards && !err; i++) {
        /* which task each worker runs, read just before its shard is copied */
        for (unsigned k = 0; k < rt->nworkers; k++)
            busy[k] = atomic_load_explicit(&rt->loops[k]->busy_task, TERN__RELAXED);
        long n = shard_snap(rt, i, &b, flags);
        if (n < 0) {
            err = -ENOMEM;
            break;
        }
        uint64_t now = tern_now();
        for (long j = 0; j < n; j++)
            print_snap(f, rt, &b.s[j], b.v, flags, busy, now);
        total += n;
    }
    free(b.s);
    free(b.v);
    free(busy);
    if (!err && (fflush(f) != 0 || ferror(f)))
        err = -EIO;
    return err ? err : (int)total;
}

int tern__stall_describe(tern_runtime *rt, tern_task *t, tern_stall *s, char *name,
                         size_t namelen)
{
    int found = 0;
    tern__registry_enter(rt);
    for (unsigned i = 0; i < rt->nshards && !found; i++) {
        tern__registry_lock(rt, i);
        for (tern_task *u = tern__registry_first(rt, i); u; u = tern__registry_next(u)) {
            if (u != t ||
                atomic_load_explicit(&u->state, TERN__ACQUIRE) & TERN__TS_COMPLETE)
                continue;
            s->task_id = u->id;
            s->file = u->file ? u->file : "";
            s->line = (int)u->line;
            copy_str(name, namelen, atomic_load_explicit(&u->name, TERN__RELAXED));
            s->name = name;
            found = 1;
            break;
        }
        tern__registry_unlock(rt, i);
    }
    tern__registry_leave(rt);
    return found;
}
