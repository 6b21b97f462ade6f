/* Context variables: get/set/reset and tokens, immutable copies, run,
 * propagation to tasks, handles and future callbacks, destructors, and a
 * HAMT property test against a plain reference map. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "rt/internal.h"

START_TEST(get_set_reset_tokens)
{
    tern_ctxvar *v, *w;
    ck_assert_int_eq(tern_ctxvar_new("request_id", (void *)1, NULL, &v), 0);
    ck_assert_int_eq(tern_ctxvar_new("user", NULL, NULL, &w), 0);
    ck_assert_str_eq(tern_ctxvar_name(v), "request_id");
    ck_assert_ptr_eq(tern_ctxvar_get(v), (void *)1); /* the default */
    void *x = (void *)99;
    ck_assert_int_eq(tern_ctxvar_lookup(v, &x), 0);
    ck_assert_ptr_eq(x, (void *)99);

    tern_ctxtoken *t1, *t2;
    ck_assert_int_eq(tern_ctxvar_set(v, (void *)10, &t1), 0);
    ck_assert_ptr_eq(tern_ctxvar_get(v), (void *)10);
    ck_assert_int_eq(tern_ctxvar_set(v, (void *)20, &t2), 0);
    ck_assert_int_eq(tern_ctxvar_lookup(v, &x), 1);
    ck_assert_ptr_eq(x, (void *)20);
    ck_assert_int_eq(tern_ctxvar_reset(w, t2), -EINVAL); /* another variable's */
    ck_assert_int_eq(tern_ctxvar_reset(v, t2), 0);
    ck_assert_ptr_eq(tern_ctxvar_get(v), (void *)10);
    ck_assert_int_eq(tern_ctxvar_reset(v, t2), -EINVAL); /* used twice */
    ck_assert_int_eq(tern_ctxvar_reset(v, t1), 0);
    ck_assert_int_eq(tern_ctxvar_lookup(v, NULL), 0); /* unset again */
    ck_assert_ptr_eq(tern_ctxvar_get(v), (void *)1);
    tern_ctxtoken_free(t1);
    tern_ctxtoken_free(t2);

    ck_assert_int_eq(tern_ctxvar_new(NULL, NULL, NULL, &v), -EINVAL);
    ck_assert_int_eq(tern_ctxvar_new("x", NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_ctxvar_set(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(tern_ctxvar_reset(v, NULL), -EINVAL);
    ck_assert_int_eq(tern_ctxvar_lookup(NULL, NULL), -EINVAL);
    ck_assert_ptr_null(tern_ctxvar_get(NULL));
    ck_assert_str_eq(tern_ctxvar_name(NULL), "");
    ck_assert_int_eq(tern_context_get(NULL, v, NULL), -EINVAL);
    ck_assert_ptr_null(tern_context_run(NULL, NULL, NULL));
    tern_ctxtoken_free(NULL);
    tern_context_release(NULL);
    tern_ctxvar_free(v);
    tern_ctxvar_free(w);
}
END_TEST

START_TEST(copies_are_immutable)
{
    tern_ctxvar *v, *w;
    ck_assert_int_eq(tern_ctxvar_new("v", NULL, NULL, &v), 0);
    ck_assert_int_eq(tern_ctxvar_new("w", NULL, NULL, &w), 0);
    tern_context *empty = tern_context_copy();
    ck_assert_uint_eq(tern_context_len(empty), 0);
    tern_ctxtoken *tv, *tw;
    ck_assert_int_eq(tern_ctxvar_set(v, (void *)1, &tv), 0);
    tern_context *one = tern_context_copy();
    ck_assert_int_eq(tern_ctxvar_set(v, (void *)2, NULL), 0);
    ck_assert_int_eq(tern_ctxvar_set(w, (void *)3, &tw), 0);
    void *x;
    ck_assert_int_eq(tern_context_get(one, v, &x), 1);
    ck_assert_ptr_eq(x, (void *)1);
    ck_assert_int_eq(tern_context_get(one, w, &x), 0);
    ck_assert_uint_eq(tern_context_len(one), 1);
    ck_assert_int_eq(tern_context_get(empty, v, &x), 0);
    tern_context *now = tern_context_copy();
    ck_assert_uint_eq(tern_context_len(now), 2);
    ck_assert_ptr_eq(tern_context_ref(now), now);
    tern_context_release(now);
    tern_context_release(now);
    tern_context_release(one);
    tern_context_release(empty);
    tern_context *e = tern_context_new();
    ck_assert_uint_eq(tern_context_len(e), 0);
    tern_context_release(e);
    /* resetting the first sets leaves this thread's context empty again */
    ck_assert_int_eq(tern_ctxvar_reset(w, tw), 0);
    ck_assert_int_eq(tern_ctxvar_reset(v, tv), 0);
    tern_ctxtoken_free(tv);
    tern_ctxtoken_free(tw);
    now = tern_context_copy();
    ck_assert_uint_eq(tern_context_len(now), 0);
    tern_context_release(now);
    tern_ctxvar_free(v);
    tern_ctxvar_free(w);
}
END_TEST

/* ---- run ------------------------------------------------------------------------ */

static tern_ctxvar *rv;

static void *inner_run(void *arg)
{
    ck_assert_ptr_eq(tern_ctxvar_get(rv), arg);
    ck_assert_int_eq(tern_ctxvar_set(rv, (void *)77, NULL), 0);
    ck_assert_ptr_eq(tern_ctxvar_get(rv), (void *)77);
    return (void *)5;
}

static void *run_in_task(void *arg)
{
    ck_assert_int_eq(tern_ctxvar_set(rv, (void *)1, NULL), 0);
    tern_context *c = tern_context_copy();
    ck_assert_int_eq(tern_ctxvar_set(rv, (void *)2, NULL), 0);
    /* run c (rv = 1); what fn sets stays inside; rv = 2 afterwards */
    ck_assert_ptr_eq(tern_context_run(c, inner_run, (void *)1), (void *)5);
    ck_assert_ptr_eq(tern_ctxvar_get(rv), (void *)2);
    void *x;
    ck_assert_int_eq(tern_context_get(c, rv, &x), 1);
    ck_assert_ptr_eq(x, (void *)1);
    tern_context_release(c);
    return NULL;
}

START_TEST(run_restores)
{
    ck_assert_int_eq(tern_ctxvar_new("rv", NULL, NULL, &rv), 0);
    tern_runtime *rt = rt_new(2);
    ck_assert_int_eq(tern_block_on(rt, run_in_task, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    /* and on a plain thread */
    tern_ctxtoken *t;
    ck_assert_int_eq(tern_ctxvar_set(rv, (void *)3, &t), 0);
    tern_context *c = tern_context_copy();
    ck_assert_ptr_eq(tern_context_run(c, inner_run, (void *)3), (void *)5);
    ck_assert_ptr_eq(tern_ctxvar_get(rv), (void *)3);
    tern_context_release(c);
    ck_assert_int_eq(tern_ctxvar_reset(rv, t), 0);
    tern_ctxtoken_free(t);
    tern_ctxvar_free(rv);
}
END_TEST

/* ---- propagation ------------------------------------------------------------------- */

static tern_ctxvar *pv;

static void *child_sees(void *arg)
{
    ck_assert_ptr_eq(tern_ctxvar_get(pv), arg);
    ck_assert_int_eq(tern_ctxvar_set(pv, (void *)999, NULL),
                     0); /* the parent never sees it */
    ck_assert_int_eq(tern_yield(), 0);
    ck_assert_ptr_eq(tern_ctxvar_get(pv), (void *)999);
    return NULL;
}

static _Atomic int cb_seen;
static tern_loop *cb_loop;

static void cb_reads(void *arg)
{
    ck_assert_ptr_eq(tern_ctxvar_get(pv), arg);
    atomic_fetch_add(&cb_seen, 1);
}

static void fut_cb_reads(tern_future *f, void *arg)
{
    cb_reads(arg);
}

static void *parent(void *arg)
{
    ck_assert_int_eq(tern_ctxvar_set(pv, (void *)1, NULL), 0);
    tern_task *t;
    ck_assert_int_eq(tern_spawn(child_sees, (void *)1, &t), 0);
    ck_assert_int_eq(tern_ctxvar_set(pv, (void *)2, NULL), 0); /* after the spawn */
    ck_assert_int_eq(tern_join(t, NULL), 0);
    ck_assert_ptr_eq(tern_ctxvar_get(pv), (void *)2);

    /* handles run in the context current when scheduled */
    cb_loop = tern_loop_current();
    ck_assert_int_eq(tern_call_soon(NULL, cb_reads, (void *)2, NULL), 0);
    ck_assert_int_eq(tern_call_later(NULL, 1000000, cb_reads, (void *)2, NULL), 0);
    tern_future *f;
    ck_assert_int_eq(tern_future_new(&f), 0);
    ck_assert_int_eq(tern_future_add_done_callback(f, NULL, fut_cb_reads, (void *)2), 0);
    ck_assert_int_eq(tern_ctxvar_set(pv, (void *)3, NULL), 0); /* too late for them */
    ck_assert_int_eq(tern_future_set_result(f, NULL), 0);
    tern_future_release(f);
    TASK_WAIT_UNTIL(atomic_load(&cb_seen) >= 3, WAIT_MS);
    return NULL;
}

static void *thread_posts(void *arg)
{
    ck_assert_int_eq(tern_ctxvar_set(pv, (void *)42, NULL), 0);
    ck_assert_int_eq(tern_call_soon_threadsafe(cb_loop, cb_reads, (void *)42, NULL), 0);
    return NULL; /* the thread's context is released at exit */
}

START_TEST(propagation)
{
    ck_assert_int_eq(tern_ctxvar_new("pv", NULL, NULL, &pv), 0);
    tern_runtime *rt = rt_new(4);
    atomic_store(&cb_seen, 0);
    ck_assert_int_eq(tern_block_on(rt, parent, NULL, NULL), 0);
    pthread_t th;
    pthread_create(&th, NULL, thread_posts, NULL);
    pthread_join(th, NULL);
    WAIT_UNTIL(atomic_load(&cb_seen) >= 4, WAIT_MS);
    ck_assert_int_eq(atomic_load(&cb_seen), 4);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    ck_assert_ptr_null(tern_ctxvar_get(pv)); /* this thread never set it */
    tern_ctxvar_free(pv);
}
END_TEST

/* Each of many tasks keeps its own request id while it hops workers. */
static tern_ctxvar *idv;
static _Atomic unsigned iso_ok;

static void *request(void *arg)
{
    ck_assert_int_eq(tern_ctxvar_set(idv, arg, NULL), 0);
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(tern_yield(), 0);
        ck_assert_ptr_eq(tern_ctxvar_get(idv), arg);
    }
    atomic_fetch_add(&iso_ok, 1);
    return NULL;
}

START_TEST(isolation_across_workers)
{
    unsigned n = SCALED(2000);
    ck_assert_int_eq(tern_ctxvar_new("id", NULL, NULL, &idv), 0);
    tern_runtime *rt = rt_new(4);
    tern_task **t = calloc(n, sizeof *t);
    atomic_store(&iso_ok, 0);
    for (uintptr_t i = 0; i < n; i++)
        ck_assert_int_eq(tern_runtime_spawn(rt, request, (void *)(i + 1), &t[i]), 0);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(tern_join(t[i], NULL), 0);
    ck_assert_uint_eq(atomic_load(&iso_ok), n);
    free(t);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    tern_ctxvar_free(idv);
}
END_TEST

/* ---- destructors ------------------------------------------------------------------- */

static _Atomic int dtor_calls;

static void count_dtor(void *v)
{
    atomic_fetch_add(&dtor_calls, 1);
    free(v);
}

START_TEST(destructor_once_per_value)
{
    tern_ctxvar *v;
    tern_ctxtoken *t0, *t;
    atomic_store(&dtor_calls, 0);
    ck_assert_int_eq(tern_ctxvar_new("owned", NULL, count_dtor, &v), 0);
    ck_assert_int_eq(tern_ctxvar_set(v, malloc(16), &t0), 0); /* A */
    tern_context *held = tern_context_copy();
    ck_assert_int_eq(tern_ctxvar_set(v, malloc(16), NULL), 0); /* B */
    ck_assert_int_eq(atomic_load(&dtor_calls), 0);             /* A: `held` has it */
    ck_assert_int_eq(tern_ctxvar_set(v, malloc(16), NULL), 0); /* C */
    ck_assert_int_eq(atomic_load(&dtor_calls), 1);             /* B: nobody left */
    tern_context_release(held);
    ck_assert_int_eq(atomic_load(&dtor_calls), 2);           /* A */
    ck_assert_int_eq(tern_ctxvar_set(v, malloc(16), &t), 0); /* D; t keeps C */
    ck_assert_int_eq(atomic_load(&dtor_calls), 2);
    tern_ctxtoken_free(t);
    ck_assert_int_eq(atomic_load(&dtor_calls), 3); /* C */
    ck_assert_int_eq(tern_ctxvar_reset(v, t0), 0); /* unset again */
    ck_assert_int_eq(atomic_load(&dtor_calls), 4); /* D */
    tern_ctxtoken_free(t0);
    ck_assert_int_eq(atomic_load(&dtor_calls), 4);
    tern_ctxvar_free(v);
}
END_TEST

/* ---- the HAMT against a reference map ---------------------------------------------- */

enum { NV = 3000, SNAPS = 8 };

static uint64_t rng_state = 42;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *hamt_property_body(void *arg)
{
    static tern_ctxvar *vars[NV];
    static uintptr_t ref[NV]; /* 0 = unset */
    static uintptr_t snap_ref[SNAPS][NV];
    tern_context *snap[SNAPS] = {0};
    char name[16];
    for (int i = 0; i < NV; i++) {
        snprintf(name, sizeof name, "v%d", i);
        ck_assert_int_eq(tern_ctxvar_new(name, NULL, NULL, &vars[i]), 0);
        /* a third share a handful of hashes (full collisions), a third
         * differ only in the top bits (the deepest level) */
        if (i % 3 == 0)
            tern__ctxvar_set_hash(vars[i], (uint32_t)(i % 7) * 0x11111111u);
        else if (i % 3 == 1)
            tern__ctxvar_set_hash(vars[i], 0x0abcdefu | ((uint32_t)(i % 8) << 29));
        ref[i] = 0;
    }
    unsigned ops = SCALED(200000);
    for (unsigned k = 0; k < ops; k++) {
        unsigned i = (unsigned)(rnd() % NV);
        unsigned what = (unsigned)(rnd() % 10);
        if (what < 6) {
            uintptr_t val = (uintptr_t)(rnd() | 1);
            ck_assert_int_eq(tern_ctxvar_set(vars[i], (void *)val, NULL), 0);
            ref[i] = val;
        } else if (what < 8) {
            /* unset through a token made by a set on an unset variable */
            tern_ctxtoken *t;
            uintptr_t before = ref[i];
            ck_assert_int_eq(tern_ctxvar_set(vars[i], (void *)7, &t), 0);
            ck_assert_int_eq(tern_ctxvar_reset(vars[i], t), 0);
            tern_ctxtoken_free(t);
            void *x = NULL;
            ck_assert_int_eq(tern_ctxvar_lookup(vars[i], &x), before != 0);
            if (before)
                ck_assert_uint_eq((uintptr_t)x, before);
        } else if (what == 8) {
            void *x = NULL;
            int r = tern_ctxvar_lookup(vars[i], &x);
            ck_assert_int_eq(r, ref[i] != 0);
            if (r)
                ck_assert_uint_eq((uintptr_t)x, ref[i]);
        } else {
            unsigned s = (unsigned)(rnd() % SNAPS);
            if (snap[s]) {
                /* an old snapshot still says exactly what it said */
                for (int j = 0; j < NV; j += 7) {
                    void *x = NULL;
                    int r = tern_context_get(snap[s], vars[j], &x);
                    ck_assert_int_eq(r, snap_ref[s][j] != 0);
                    if (r)
                        ck_assert_uint_eq((uintptr_t)x, snap_ref[s][j]);
                }
                tern_context_release(snap[s]);
            }
            snap[s] = tern_context_copy();
            memcpy(snap_ref[s], ref, sizeof ref);
        }
    }
    size_t set = 0;
    for (int i = 0; i < NV; i++) {
        void *x = NULL;
        int r = tern_ctxvar_lookup(vars[i], &x);
        ck_assert_int_eq(r, ref[i] != 0);
        if (r)
            ck_assert_uint_eq((uintptr_t)x, ref[i]);
        set += ref[i] != 0;
    }
    tern_context *cur = tern_context_copy();
    ck_assert_uint_eq(tern_context_len(cur), set);
    tern_context_release(cur);
    for (int s = 0; s < SNAPS; s++)
        tern_context_release(snap[s]);
    return vars;
}

START_TEST(hamt_property)
{
    /* in a task: its context goes with it, so the variables can go after */
    tern_runtime *rt = rt_new(1);
    void *vars;
    ck_assert_int_eq(tern_block_on(rt, hamt_property_body, NULL, &vars), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    for (int i = 0; i < NV; i++)
        tern_ctxvar_free(((tern_ctxvar **)vars)[i]);
}
END_TEST

/* A generator's producer starts in the context of the consumer that pulled
 * first, and a future's done callback runs in its adder's. */
static tern_ctxvar *gv;

static int yield_ctx(tern_gen *g, void *arg)
{
    return tern_gen_yield(g, tern_ctxvar_get(gv));
}

static void *consume_in_ctx(void *arg)
{
    tern_ctxtoken *t;
    ck_assert_int_eq(tern_ctxvar_set(gv, (void *)7, &t), 0);
    tern_gen *g;
    ck_assert_int_eq(tern_gen_new(yield_ctx, NULL, &g), 0);
    void *v = NULL;
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 1);
    ck_assert_ptr_eq(v, (void *)7);
    ck_assert_int_eq(tern_gen_next(g, &v, 0), 0);
    tern_gen_free(g);
    ck_assert_int_eq(tern_ctxvar_reset(gv, t), 0);
    tern_ctxtoken_free(t);
    return NULL;
}

START_TEST(generator_inherits_context)
{
    ck_assert_int_eq(tern_ctxvar_new("gv", NULL, NULL, &gv), 0);
    tern_runtime *rt = rt_new(2);
    ck_assert_int_eq(tern_block_on(rt, consume_in_ctx, NULL, NULL), 0);
    ck_assert_int_eq(tern_runtime_free(rt), 0);
    tern_ctxvar_free(gv);
}
END_TEST

static Suite *ctx_suite(void)
{
    Suite *s = suite_create("ctx");
    TCase *tc = tcase_create("ctx");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, get_set_reset_tokens);
    tcase_add_test(tc, copies_are_immutable);
    tcase_add_test(tc, run_restores);
    tcase_add_test(tc, propagation);
    tcase_add_test(tc, isolation_across_workers);
    tcase_add_test(tc, destructor_once_per_value);
    tcase_add_test(tc, hamt_property);
    tcase_add_test(tc, generator_inherits_context);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(ctx_suite());
}
