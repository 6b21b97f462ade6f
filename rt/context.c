/*
 * Context variables: immutable, reference-counted contexts over a hash
 * array mapped trie (Bagwell's HAMT, the structure CPython's contextvars
 * use).
 *
 * A trie node holds up to 32 entries selected by 5 bits of the variable's
 * hash per level; a bitmap says which are present, and the entries are
 * packed. An entry is a leaf (a variable and its value) or, tagged with
 * bit 0, a child node. Past the last 5-bit level (the whole 32-bit hash is
 * used up) variables with equal hashes share a collision node, a plain
 * list. Setting copies the path from the root to the leaf (O(log32 n)
 * nodes) and shares everything else, so every version stays valid while
 * anyone holds it. Nodes and leaves are reference counted; a leaf's last
 * release runs its variable's destructor on the value.
 *
 * Where "current" lives: in the running task (t->ctx), or, outside tasks
 * (loop callbacks, foreign threads), in a thread-local slot. Invariant 3:
 * nothing here keeps the slot's address across a suspension.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt/internal.h"

#define BITS 5
#define MAX_SHIFT 30 /* the last level uses the top 2 bits; deeper is collisions */

struct tern_ctxvar {
    uint32_t hash;
    void *deflt;
    void (*dtor)(void *);
    char name[];
};

typedef struct leaf {
    _Atomic uint32_t refs;
    tern_ctxvar *var;
    void *value;
} leaf;

typedef struct node {
    _Atomic uint32_t refs;
    uint32_t bitmap; /* trie node: which of the 32 slots are present */
    uint32_t hash;   /* collision node: the hash all its leaves share */
    uint8_t collision;
    uint8_t n; /* entries */
    void *e[]; /* leaf *, or node * | 1 */
} node;

struct tern_context {
    _Atomic uint32_t refs;
    uint32_t pinned; /* the shared empty context is never freed */
    node *root;
    size_t count;
};

struct tern_ctxtoken {
    tern_ctxvar *var;
    leaf *old; /* the setting before (a reference), or NULL: unset */
    int used;
};

static tern_context empty_ctx = {.pinned = 1};
static __thread tern_context *tls_ctx;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

/* A thread that set a variable outside tasks holds a context in tls_ctx;
 * give it back when the thread exits. */
static void tls_exit(void *unused)
{
    tern_context_release(tls_ctx);
    tls_ctx = NULL;
}

static void tls_key_make(void)
{
    pthread_key_create(&tls_key, tls_exit);
}

/* ---- variables ------------------------------------------------------------ */

static uint32_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

int tern_ctxvar_new(const char *name, void *deflt, void (*dtor)(void *),
                    tern_ctxvar **out)
{
    if (!name || !out)
        return -EINVAL;
    size_t len = strlen(name);
    tern_ctxvar *v = malloc(sizeof *v + len + 1);
    if (!v)
        return -ENOMEM;
    v->hash = mix((uintptr_t)v);
    v->deflt = deflt;
    v->dtor = dtor;
    memcpy(v->name, name, len + 1);
    *out = v;
    return 0;
}

void tern_ctxvar_free(tern_ctxvar *v)
{
    free(v);
}

const char *tern_ctxvar_name(const tern_ctxvar *v)
{
    return v ? v->name : "";
}

void tern__ctxvar_set_hash(tern_ctxvar *v, uint32_t hash)
{
    v->hash = hash;
}

/* ---- the trie ----------------------------------------------------------------- */

static int is_node(const void *e)
{
    return (uintptr_t)e & 1;
}

static node *as_node(void *e)
{
    return (node *)((uintptr_t)e & ~(uintptr_t)1);
}

static void *tag(node *n)
{
    return (void *)((uintptr_t)n | 1);
}

static leaf *leaf_new(tern_ctxvar *var, void *value)
{
    leaf *l = malloc(sizeof *l);
    if (l) {
        atomic_init(&l->refs, 1);
        l->var = var;
        l->value = value;
    }
    return l;
}

static void leaf_release(leaf *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, TERN__ACQ_REL) != 1)
        return;
    if (l->var->dtor)
        l->var->dtor(l->value);
    free(l);
}

static void entry_ref(void *e)
{
    atomic_fetch_add_explicit(is_node(e) ? &as_node(e)->refs : &((leaf *)e)->refs, 1,
                              TERN__RELAXED);
}

static void node_release(node *n)
{
    if (!n || atomic_fetch_sub_explicit(&n->refs, 1, TERN__ACQ_REL) != 1)
        return;
    for (unsigned i = 0; i < n->n; i++) {
        if (is_node(n->e[i]))
            node_release(as_node(n->e[i]));
        else
            leaf_release(n->e[i]);
    }
    free(n);
}

static node *node_alloc(unsigned n)
{
    node *x = malloc(sizeof *x + n * sizeof(void *));
    if (x) {
        atomic_init(&x->refs, 1);
        x->bitmap = x->hash = 0;
        x->collision = 0;
        x->n = (uint8_t)n;
    }
    return x;
}

/* A copy of n with entry i replaced by e (taken over), or removed (e NULL
 * and remove set), or e inserted at i (insert set). The other entries are
 * shared: each gains a reference. */
static node *node_edit(const node *n, unsigned i, void *e, int insert, int remove)
{
    unsigned cnt = n->n + (insert ? 1 : 0) - (remove ? 1 : 0);
    node *x = node_alloc(cnt);
    if (!x)
        return NULL;
    x->bitmap = n->bitmap;
    x->hash = n->hash;
    x->collision = n->collision;
    unsigned k = 0;
    for (unsigned j = 0; j < n->n; j++) {
        if (j == i) {
            if (insert)
                x->e[k++] = e;
            else if (!remove) {
                x->e[k++] = e;
                continue;
            } else
                continue;
        }
        entry_ref(n->e[j]);
        x->e[k++] = n->e[j];
    }
    if (insert && i == n->n)
        x->e[k++] = e;
    return x;
}

static uint32_t slot_of(uint32_t hash, unsigned shift)
{
    return 1u << ((hash >> shift) & 31);
}

static unsigned index_of(uint32_t bitmap, uint32_t bit)
{
    return (unsigned)__builtin_popcount(bitmap & (bit - 1));
}

static leaf *lookup(const node *n, tern_ctxvar *v)
{
    for (unsigned shift = 0; n; shift += BITS) {
        if (n->collision) {
            for (unsigned i = 0; i < n->n; i++)
                if (((leaf *)n->e[i])->var == v)
                    return n->e[i];
            return NULL;
        }
        uint32_t bit = slot_of(v->hash, shift);
        if (!(n->bitmap & bit))
            return NULL;
        void *e = n->e[index_of(n->bitmap, bit)];
        if (!is_node(e))
            return ((leaf *)e)->var == v ? e : NULL;
        n = as_node(e);
    }
    return NULL;
}

/* A node holding just the two leaves a and b (different variables, both
 * taken over), at the level of shift. NULL (a and b released) when out of
 * memory. */
static node *pair(leaf *a, leaf *b, unsigned shift)
{
    if (shift > MAX_SHIFT) {
        node *x = node_alloc(2);
        if (!x)
            goto oom;
        x->collision = 1;
        x->hash = a->var->hash;
        x->e[0] = a;
        x->e[1] = b;
        return x;
    }
    uint32_t ba = slot_of(a->var->hash, shift), bb = slot_of(b->var->hash, shift);
    if (ba == bb) {
        node *child = pair(a, b, shift + BITS);
        if (!child)
            return NULL; /* a and b were released */
        node *x = node_alloc(1);
        if (!x) {
            node_release(child); /* drops a and b as well */
            return NULL;
        }
        x->bitmap = ba;
        x->e[0] = tag(child);
        return x;
    }
    node *x = node_alloc(2);
    if (!x)
        goto oom;
    x->bitmap = ba | bb;
    x->e[ba < bb ? 0 : 1] = a;
    x->e[ba < bb ? 1 : 0] = b;
    return x;
oom:
    leaf_release(a);
    leaf_release(b);
    return NULL;
}

/* n with l set for l->var (l is taken over). *added tells whether the
 * variable was new. NULL when out of memory (l is released then). */
static node *assoc(const node *n, unsigned shift, leaf *l, int *added)
{
    tern_ctxvar *v = l->var;
    if (!n) {
        node *x = node_alloc(1);
        if (!x) {
            leaf_release(l);
            return NULL;
        }
        x->bitmap = slot_of(v->hash, shift);
        x->e[0] = l;
        *added = 1;
        return x;
    }
    node *x;
    if (n->collision) {
        for (unsigned i = 0; i < n->n; i++)
            if (((leaf *)n->e[i])->var == v) {
                *added = 0;
                x = node_edit(n, i, l, 0, 0);
                goto done;
            }
        *added = 1;
        x = node_edit(n, n->n, l, 1, 0);
        goto done;
    }
    uint32_t bit = slot_of(v->hash, shift);
    unsigned i = index_of(n->bitmap, bit);
    if (!(n->bitmap & bit)) {
        *added = 1;
        x = node_edit(n, i, l, 1, 0);
        if (x)
            x->bitmap |= bit;
        goto done;
    }
    void *e = n->e[i];
    void *ne;
    if (is_node(e)) {
        node *child = assoc(as_node(e), shift + BITS, l, added);
        if (!child)
            return NULL;
        ne = tag(child);
    } else if (((leaf *)e)->var == v) {
        *added = 0;
        ne = l;
    } else {
        entry_ref(e);
        node *child = pair(e, l, shift + BITS);
        if (!child)
            return NULL;
        *added = 1;
        ne = tag(child);
    }
    x = node_edit(n, i, ne, 0, 0);
    if (!x) {
        if (is_node(ne))
            node_release(as_node(ne));
        else
            leaf_release(ne);
    }
    return x;
done:
    if (!x)
        leaf_release(l);
    return x;
}

/* n without v. *removed tells whether v was there. Returns n itself (with
 * a new reference) when v is absent, NULL for an empty result, or the
 * new node; *oom is set when memory ran out. */
static node *without(node *n, unsigned shift, tern_ctxvar *v, int *removed, int *oom)
{
    *removed = 0;
    if (!n)
        return NULL;
    unsigned i;
    if (n->collision) {
        for (i = 0; i < n->n && ((leaf *)n->e[i])->var != v; i++)
            ;
        if (i == n->n)
            goto same;
    } else {
        uint32_t bit = slot_of(v->hash, shift);
        if (!(n->bitmap & bit))
            goto same;
        i = index_of(n->bitmap, bit);
        void *e = n->e[i];
        if (is_node(e)) {
            node *child = without(as_node(e), shift + BITS, v, removed, oom);
            if (*oom)
                return NULL;
            if (!*removed) {
                node_release(child);
                goto same;
            }
            if (child) {
                node *x = node_edit(n, i, tag(child), 0, 0);
                if (!x) {
                    node_release(child);
                    *oom = 1;
                }
                return x;
            }
            /* the child emptied: drop its slot below */
        } else if (((leaf *)e)->var != v) {
            goto same;
        }
    }
    *removed = 1;
    if (n->n == 1)
        return NULL;
    node *x = node_edit(n, i, NULL, 0, 1);
    if (!x)
        *oom = 1;
    else if (!n->collision)
        x->bitmap &= ~slot_of(v->hash, shift);
    return x;
same:
    atomic_fetch_add_explicit(&n->refs, 1, TERN__RELAXED);
    return n;
}

/* ---- contexts ---------------------------------------------------------------------- */

static tern_context *ctx_new(node *root, size_t count)
{
    if (!root)
        return &empty_ctx;
    tern_context *c = malloc(sizeof *c);
    if (!c) {
        node_release(root);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->pinned = 0;
    c->root = root;
    c->count = count;
    return c;
}

tern_context *tern_context_ref(tern_context *c)
{
    if (c && !c->pinned)
        atomic_fetch_add_explicit(&c->refs, 1, TERN__RELAXED);
    return c;
}

void tern_context_release(tern_context *c)
{
    if (!c || c->pinned || atomic_fetch_sub_explicit(&c->refs, 1, TERN__ACQ_REL) != 1)
        return;
    node_release(c->root);
    free(c);
}

tern_context *tern_context_new(void)
{
    return &empty_ctx;
}

size_t tern_context_len(const tern_context *c)
{
    return c ? c->count : 0;
}

int tern_context_get(const tern_context *c, tern_ctxvar *v, void **value)
{
    if (!c || !v)
        return -EINVAL;
    leaf *l = lookup(c->root, v);
    if (l && value)
        *value = l->value;
    return l != NULL;
}

static void each(const node *n, void (*fn)(tern_ctxvar *, void *, void *), void *arg)
{
    for (unsigned i = 0; n && i < n->n; i++) {
        if (is_node(n->e[i])) {
            each(as_node(n->e[i]), fn, arg);
        } else {
            leaf *l = n->e[i];
            fn(l->var, l->value, arg);
        }
    }
}

void tern__context_each(const tern_context *c, void (*fn)(tern_ctxvar *, void *, void *),
                        void *arg)
{
    if (c)
        each(c->root, fn, arg);
}

/* Where the caller's current context lives. Re-read after any suspension:
 * the task may be on another thread by then. */
static tern_context **current_slot(void)
{
    tern_task *t = tern__task_self();
    return t ? &t->ctx : &tls_ctx;
}

static tern_context *current(void)
{
    tern_context *c = *current_slot();
    return c ? c : &empty_ctx;
}

/* Makes c (a reference, taken over) the caller's current context. */
static void replace_current(tern_context *c)
{
    tern_task *t = tern__task_self();
    if (t) {
        /* under the registry lock: tern_dump may be reading the old one */
        tern_context_release(tern__task_swap_ctx(t, c));
        return;
    }
    tern_context **slot = &tls_ctx;
    tern_context *old = *slot;
    *slot = c;
    if (slot == &tls_ctx && c && !c->pinned) {
        pthread_once(&tls_once, tls_key_make);
        pthread_setspecific(tls_key, (void *)1);
    }
    tern_context_release(old);
}

tern_context *tern_context_copy(void)
{
    return tern_context_ref(current());
}

/* task.c and handle.c: what a spawned task or a scheduled handle starts
 * with (a reference), and the swap around a handle's callback. */
tern_context *tern__context_capture(void)
{
    /* NULL stands for the empty context, so that a task that never sets a
     * variable has nothing to drop under the registry lock when it ends. */
    tern_context *c = *current_slot();
    return c && !c->pinned ? tern_context_ref(c) : NULL;
}

/* The slot holds its own reference: a set inside the callback replaces
 * (and releases) it, not the handle's. */
tern_context *tern__context_enter(tern_context *c)
{
    tern_context *prev = tls_ctx;
    tls_ctx = tern_context_ref(c);
    return prev;
}

void tern__context_leave(tern_context *prev)
{
    tern_context_release(tls_ctx);
    tls_ctx = prev;
}

void *tern_context_run(tern_context *ctx, tern_task_fn fn, void *arg)
{
    if (!ctx || !fn)
        return NULL;
    tern_context *prev = tern_context_ref(*current_slot());
    replace_current(tern_context_ref(ctx));
    void *r = fn(arg);
    replace_current(prev); /* the slot again: fn may have moved us */
    return r;
}

/* ---- get, set, reset --------------------------------------------------------------- */

void *tern_ctxvar_get(tern_ctxvar *v)
{
    if (!v)
        return NULL;
    leaf *l = lookup(current()->root, v);
    return l ? l->value : v->deflt;
}

int tern_ctxvar_lookup(tern_ctxvar *v, void **value)
{
    if (!v)
        return -EINVAL;
    return tern_context_get(current(), v, value);
}

/* The current context with v set to l (taken over), or to nothing when
 * l is NULL. */
static int set_leaf(tern_ctxvar *v, leaf *l)
{
    tern_context *cur = current();
    node *root;
    size_t count = cur->count;
    if (l) {
        int added = 0;
        root = assoc(cur->root, 0, l, &added);
        if (!root)
            return -ENOMEM;
        count += added;
    } else {
        int removed = 0, oom = 0;
        root = without(cur->root, 0, v, &removed, &oom);
        if (oom)
            return -ENOMEM;
        count -= removed;
    }
    tern_context *c = ctx_new(root, count);
    if (!c)
        return -ENOMEM;
    replace_current(c);
    return 0;
}

int tern_ctxvar_set(tern_ctxvar *v, void *value, tern_ctxtoken **token)
{
    if (!v)
        return -EINVAL;
    tern_ctxtoken *tk = NULL;
    if (token) {
        if (!(tk = calloc(1, sizeof *tk)))
            return -ENOMEM;
        tk->var = v;
        tk->old = lookup(current()->root, v);
        if (tk->old)
            entry_ref(tk->old);
    }
    leaf *l = leaf_new(v, value);
    if (!l) {
        tern_ctxtoken_free(tk);
        return -ENOMEM;
    }
    /* A failed set sets nothing: keep a reference of our own, so that the
     * failure path frees the leaf without running the destructor on a
     * value the caller still owns. */
    entry_ref(l);
    int r = set_leaf(v, l);
    if (r < 0) {
        free(l); /* ours was the last reference */
        tern_ctxtoken_free(tk);
        return r;
    }
    atomic_fetch_sub_explicit(&l->refs, 1, TERN__RELEASE); /* the context keeps one */
    if (token)
        *token = tk;
    return 0;
}

int tern_ctxvar_reset(tern_ctxvar *v, tern_ctxtoken *tk)
{
    if (!v || !tk || tk->used || tk->var != v)
        return -EINVAL;
    if (tk->old)
        entry_ref(tk->old); /* assoc takes one over; the token keeps its own */
    int r = set_leaf(v, tk->old);
    if (r == 0)
        tk->used = 1;
    return r;
}

void tern_ctxtoken_free(tern_ctxtoken *tk)
{
    if (!tk)
        return;
    if (tk->old)
        leaf_release(tk->old);
    free(tk);
}
