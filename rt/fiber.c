/*
 * Fibers: the context switch, the first entry into a new fiber, sanitizer
 * bookkeeping, and the SIGSEGV handler that names a task whose stack
 * overflowed into its guard page.
 *
 * The switch. A suspended context is its callee-saved state pushed on its
 * own stack, plus the stack pointer saved in tern__fiber.sp. Switching saves
 * ours, loads the other stack pointer, pops its state and returns into it.
 * Caller-saved registers need no saving: the switch is an ordinary call, so
 * the compiler already treats them as clobbered. What is saved:
 *   x86-64:  rbx rbp r12-r15, MXCSR and the x87 control word (the SysV ABI
 *            makes their control bits callee-saved), rsp.
 *   aarch64: x19-x28, x29 (fp), x30 (lr, where we return to), d8-d15, sp.
 * Other architectures use ucontext (slow: swapcontext makes a sigprocmask
 * system call), and so does any build with TERN_FIBER_UCONTEXT defined,
 * which is how the fallback gets tested on x86-64.
 *
 * A new fiber's stack is prepared to look like a suspended context whose
 * saved return address is tern__fiber_trampoline and whose saved callee-saved
 * registers hold entry and arg; the first switch "returns" into the
 * trampoline, which calls tern__fiber_boot(entry, arg) on an aligned stack.
 *
 * Plain builds: tern__fiber_switch is the assembly itself (`last` unused).
 * Sanitizer builds: tern__fiber_switch is C that tells the sanitizer, then
 * calls the assembly (tern__fiber_jump).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h> /* the stack pointer of a fault */
#include <unistd.h>

#include "rt/fiber.h"

#if defined(TERN_FIBER_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__))
#define FIBER_UCONTEXT 1
#include <ucontext.h>
#endif

#if defined(TERN_TSAN) || defined(TERN_ASAN) || defined(FIBER_UCONTEXT)
#define FIBER_WRAPPED 1 /* tern__fiber_switch is C around the raw switch */
#endif

/* The sanitizer entry points, declared here so neither compiler's header
 * layout matters. */
#ifdef TERN_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif
#ifdef TERN_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

_Static_assert(offsetof(tern__fiber, sp) == 0, "the assembly stores sp at offset 0");

/* Called from the trampoline only. Global (hidden) so the assembly can name
 * it whatever the compiler does to static functions. */
__attribute__((noreturn, used)) void tern__fiber_boot(void (*entry)(void *), void *arg);
void tern__fiber_trampoline(void);

#ifdef FIBER_WRAPPED
#define RAW_SWITCH "tern__fiber_jump"
void tern__fiber_jump(tern__fiber *from, tern__fiber *to);
#else
#define RAW_SWITCH "tern__fiber_switch"
#endif

/* ---- the switch, per architecture ---------------------------------------- */

#if !defined(FIBER_UCONTEXT) && defined(__x86_64__)
/* Frame of a suspended context, lowest address first (sp points at it):
 *   [0] MXCSR (4 bytes) | x87 control word (2 bytes) | pad
 *   [1] r15 [2] r14 [3] r13 [4] r12 [5] rbx [6] rbp [7] return address
 * The x87 control word and MXCSR cost about 2 ns per round trip; they stay,
 * because a task that changes rounding mode must not change it for the
 * next task on the worker. */
__asm__(".pushsection .text\n"
        ".globl " RAW_SWITCH "\n"
        ".hidden " RAW_SWITCH "\n"
        ".type " RAW_SWITCH ",@function\n"
        ".p2align 4\n" RAW_SWITCH ":\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    subq $8, %rsp\n"
        "    stmxcsr (%rsp)\n"
        "    fnstcw 4(%rsp)\n"
        "    movq %rsp, (%rdi)\n" /* from->sp */
        "    movq (%rsi), %rsp\n" /* to->sp */
        "    ldmxcsr (%rsp)\n"
        "    fldcw 4(%rsp)\n"
        "    addq $8, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        /* pop+jmp rather than ret: the return-stack predictor always
         * misses here (we return to another context's call site), the
         * indirect-branch predictor mostly hits. Measured: 13-15 ns per
         * round trip instead of 30-34. */
        "    popq %rcx\n"
        "    jmpq *%rcx\n"
        ".size " RAW_SWITCH ", .-" RAW_SWITCH "\n"
        /* Entered by the jump above with rsp 16-byte aligned, r12 = entry,
         * r13 = arg. No caller: tell unwinders the chain ends here. */
        ".globl tern__fiber_trampoline\n"
        ".hidden tern__fiber_trampoline\n"
        ".type tern__fiber_trampoline,@function\n"
        ".p2align 4\n"
        "tern__fiber_trampoline:\n"
        "    .cfi_startproc\n"
        "    .cfi_undefined rip\n"
        "    movq %r12, %rdi\n"
        "    movq %r13, %rsi\n"
        "    call tern__fiber_boot\n"
        "    ud2\n"
        "    .cfi_endproc\n"
        ".size tern__fiber_trampoline, .-tern__fiber_trampoline\n"
        ".popsection\n");

static void prepare(tern__fiber *f, char *top, void (*entry)(void *), void *arg)
{
    uint64_t *sp = (uint64_t *)((uintptr_t)top & ~(uintptr_t)15) - 10;
    memset(sp, 0, 10 * sizeof(*sp));
    sp[0] = 0x1f80u | (uint64_t)0x037fu << 32; /* ABI defaults: MXCSR, x87 CW */
    sp[3] = (uint64_t)(uintptr_t)arg;          /* r13 */
    sp[4] = (uint64_t)(uintptr_t)entry;        /* r12 */
    sp[7] = (uint64_t)(uintptr_t)tern__fiber_trampoline;
    /* sp[8], sp[9]: a zero "return address" above the trampoline's frame;
     * after the ret, rsp = &sp[8], 16-byte aligned. */
    f->sp = sp;
}

#elif !defined(FIBER_UCONTEXT) && defined(__aarch64__)
/* Frame of a suspended context (160 bytes, sp points at it):
 *   x19..x28 at 0..72, x29 at 80, x30 (return address) at 88, d8..d15 at 96.. */
__asm__(".pushsection .text\n"
        ".globl " RAW_SWITCH "\n"
        ".hidden " RAW_SWITCH "\n"
        ".type " RAW_SWITCH ",%function\n"
        ".p2align 4\n" RAW_SWITCH ":\n"
        "    sub sp, sp, #160\n"
        "    stp x19, x20, [sp, #0]\n"
        "    stp x21, x22, [sp, #16]\n"
        "    stp x23, x24, [sp, #32]\n"
        "    stp x25, x26, [sp, #48]\n"
        "    stp x27, x28, [sp, #64]\n"
        "    stp x29, x30, [sp, #80]\n"
        "    stp d8, d9, [sp, #96]\n"
        "    stp d10, d11, [sp, #112]\n"
        "    stp d12, d13, [sp, #128]\n"
        "    stp d14, d15, [sp, #144]\n"
        "    mov x9, sp\n"
        "    str x9, [x0]\n" /* from->sp */
        "    ldr x9, [x1]\n" /* to->sp */
        "    mov sp, x9\n"
        "    ldp x19, x20, [sp, #0]\n"
        "    ldp x21, x22, [sp, #16]\n"
        "    ldp x23, x24, [sp, #32]\n"
        "    ldp x25, x26, [sp, #48]\n"
        "    ldp x27, x28, [sp, #64]\n"
        "    ldp x29, x30, [sp, #80]\n"
        "    ldp d8, d9, [sp, #96]\n"
        "    ldp d10, d11, [sp, #112]\n"
        "    ldp d12, d13, [sp, #128]\n"
        "    ldp d14, d15, [sp, #144]\n"
        "    add sp, sp, #160\n"
        /* ret, not br x30: a br target must be a BTI landing pad when
         * branch protection is on, and our return sites are not. */
        "    ret\n"
        ".size " RAW_SWITCH ", .-" RAW_SWITCH "\n"
        /* Entered by the ret above with x19 = entry, x20 = arg, x29 = 0. */
        ".globl tern__fiber_trampoline\n"
        ".hidden tern__fiber_trampoline\n"
        ".type tern__fiber_trampoline,%function\n"
        ".p2align 4\n"
        "tern__fiber_trampoline:\n"
        "    .cfi_startproc\n"
        "    .cfi_undefined x30\n"
        "    mov x0, x19\n"
        "    mov x1, x20\n"
        "    bl tern__fiber_boot\n"
        "    brk #0\n"
        "    .cfi_endproc\n"
        ".size tern__fiber_trampoline, .-tern__fiber_trampoline\n"
        ".popsection\n");

static void prepare(tern__fiber *f, char *top, void (*entry)(void *), void *arg)
{
    uint64_t *sp = (uint64_t *)((uintptr_t)top & ~(uintptr_t)15) - 20;
    memset(sp, 0, 20 * sizeof(*sp));
    sp[0] = (uint64_t)(uintptr_t)entry;                   /* x19 */
    sp[1] = (uint64_t)(uintptr_t)arg;                     /* x20 */
    sp[11] = (uint64_t)(uintptr_t)tern__fiber_trampoline; /* x30 */
    f->sp = sp;
}

#else /* ucontext fallback */
/* A suspended context is a ucontext_t on its own stack: in the frame of the
 * tern__fiber_jump call that suspended it, or, for a fiber not yet started,
 * at the top of its stack with the entry point beside it. */
typedef struct boot_block {
    ucontext_t uc;
    void (*entry)(void *);
    void *arg;
} boot_block;

/* makecontext passes int arguments: the block's address in two halves. */
static void uc_trampoline(unsigned hi, unsigned lo)
{
    boot_block *b = (boot_block *)(uintptr_t)(((uint64_t)hi << 32) | lo);
    tern__fiber_boot(b->entry, b->arg);
}

static void prepare(tern__fiber *f, char *top, void (*entry)(void *), void *arg)
{
    char *bottom = f->stack->base + (size_t)sysconf(_SC_PAGESIZE);
    boot_block *b =
        (boot_block *)(((uintptr_t)top - sizeof(boot_block)) & ~(uintptr_t)63);
    memset(b, 0, sizeof(*b));
    getcontext(&b->uc);
    b->uc.uc_link = NULL;
    b->uc.uc_stack.ss_sp = bottom;
    b->uc.uc_stack.ss_size = (size_t)((char *)b - bottom);
    b->entry = entry;
    b->arg = arg;
    uint64_t p = (uint64_t)(uintptr_t)b;
    makecontext(&b->uc, (void (*)(void))uc_trampoline, 2, (unsigned)(p >> 32),
                (unsigned)p);
    f->sp = &b->uc;
}

void tern__fiber_jump(tern__fiber *from, tern__fiber *to)
{
    ucontext_t here;
    from->sp = &here;
    swapcontext(&here, (ucontext_t *)to->sp);
}
#endif

/* ---- the C side ------------------------------------------------------------- */

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(2, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void tern__fiber_boot(void (*entry)(void *), void *arg)
{
#ifdef TERN_ASAN
    /* First arrival on this stack: complete the switch that started in
     * tern__fiber_switch. No fake stack to restore yet. */
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    entry(arg);
    static const char msg[] = "tern: a fiber entry function returned\n";
    write_all(msg, sizeof(msg) - 1);
    abort();
}

void tern__fiber_init(tern__fiber *f, tern__stack *s, void (*entry)(void *), void *arg)
{
    f->stack = s;
#ifdef TERN_ASAN
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* Frames of the stack's previous fiber, which never returned, may have
     * left poisoned redzones behind. */
    __asan_unpoison_memory_region(s->base + page, s->size - page);
    f->asan_bottom = s->base + page;
    f->asan_size = s->size - page;
#endif
    /* Cache colouring: stacks are a power-of-two-ish stride apart, so every
     * stack top would map to the same L1/L2 sets and a few hundred fibers
     * would thrash 8 ways (yield_many ran 93 ns per yield on one worker).
     * Starting each stack up to 2 KiB below its top spreads the saved
     * contexts over 32 sets while a parked fiber still fits its top page. */
    size_t color = ((uintptr_t)s->base / s->size) % 32 * 64;
    prepare(f, s->base + s->size - color, entry, arg);
#ifdef TERN_TSAN
    /* A fresh TSan fiber: a reused one would still carry the shadow call
     * stack of the fiber that ran before and never returned. */
    if (f->tsan)
        __tsan_destroy_fiber(f->tsan);
    f->tsan = __tsan_create_fiber(0);
#endif
}

void tern__fiber_init_thread(tern__fiber *f)
{
    memset(f, 0, sizeof(*f));
#ifdef TERN_TSAN
    f->tsan = __tsan_get_current_fiber();
#endif
#ifdef TERN_ASAN
    /* ASan needs the bounds of the stack a switch enters. */
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&a, &lo, &size) == 0) {
            f->asan_bottom = lo;
            f->asan_size = size;
        }
        pthread_attr_destroy(&a);
    }
#endif
}

#ifdef FIBER_WRAPPED
/* Not instrumented by ASan itself: its locals must stay on the real stack
 * while ASan's idea of "the current stack" is in flux. */
NO_ASAN void tern__fiber_switch(tern__fiber *from, tern__fiber *to, int last)
{
#ifdef TERN_TSAN
    /* A last switch forgets from: destroy its TSan state once to is
     * current (a fiber may not destroy itself). A thread's own context
     * (stack NULL) belongs to TSan and is never destroyed. */
    void *dead = NULL;
    if (last && from->stack) {
        dead = from->tsan;
        from->tsan = NULL;
    }
    __tsan_switch_to_fiber(to->tsan, 0);
    if (dead)
        __tsan_destroy_fiber(dead);
#endif
#ifdef TERN_ASAN
    /* A NULL save slot on the last switch lets ASan free from's fake
     * stack; otherwise it travels with the fiber through `fake`. */
    void *fake = NULL;
    __sanitizer_start_switch_fiber(last ? NULL : &fake, to->asan_bottom, to->asan_size);
#endif
    tern__fiber_jump(from, to);
#ifdef TERN_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    (void)last;
}
#endif

void tern__fiber_destroy(tern__fiber *f)
{
#ifdef TERN_TSAN
    if (f->tsan && f->stack)
        __tsan_destroy_fiber(f->tsan);
    f->tsan = NULL;
#endif
    (void)f;
}

/* ---- stack overflow reporting ------------------------------------------------ */

/* Read by the SIGSEGV handler: initial-exec TLS is a plain %fs-relative
 * load, safe in a signal handler (no lazy allocation). Written by
 * tern__fiber_set_current alone, out of line, before the switch it is for,
 * so no fiber caches their address across a switch. */
#define TLS_IE __attribute__((tls_model("initial-exec")))
static __thread const tern__stack *cur_stack TLS_IE;
static __thread uint64_t cur_task TLS_IE;
static __thread void *alt_mem;
static __thread size_t alt_len;

static struct sigaction prev_segv;
static pthread_once_t segv_once = PTHREAD_ONCE_INIT;
static int segv_err;
static uintptr_t page_size; /* set before the handler is installed */

#define ALTSTACK_SIZE (64 * 1024)

void tern__fiber_set_current(tern__stack *s, uint64_t task_id)
{
    cur_stack = s;
    cur_task = task_id;
}

static size_t fmt_u64(char *out, uint64_t v, unsigned base)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* Async-signal-safe: stack buffer, write(2), abort(). */
static _Noreturn void report_overflow(const void *guard, uint64_t task_id)
{
    char buf[128];
    size_t n = 0;
    static const char a[] = "tern: task ",
                      b[] = " overflowed its stack (guard page at 0x", c[] = ")\n";
    memcpy(buf + n, a, sizeof(a) - 1), n += sizeof(a) - 1;
    n += fmt_u64(buf + n, task_id, 10);
    memcpy(buf + n, b, sizeof(b) - 1), n += sizeof(b) - 1;
    n += fmt_u64(buf + n, (uint64_t)(uintptr_t)guard, 16);
    memcpy(buf + n, c, sizeof(c) - 1), n += sizeof(c) - 1;
    write_all(buf, n);
    abort();
}

void tern__stack_overflow_abort(const tern__stack *s, uint64_t task_id)
{
    report_overflow(s->base, task_id);
}

/* The stack pointer when the fault came, or 0 where unknown. */
static uintptr_t fault_sp(const void *uc)
{
#if defined(__x86_64__)
    return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.sp;
#else
    (void)uc;
    return 0;
#endif
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    const tern__stack *s = cur_stack;
    /* si_code > 0: a fault the kernel raised, not a kill(2). The running
     * fiber overflowed when the fault is in its guard page or a page or two
     * around its lowest usable address, or when its stack pointer is below
     * that address at all: a frame bigger than the guard, built without
     * stack-clash protection, faults wherever it first lands. */
    if (s && si->si_code > 0) {
        uintptr_t a = (uintptr_t)si->si_addr, lo = (uintptr_t)s->base + page_size;
        uintptr_t sp = fault_sp(uc);
        if ((a >= lo - 2 * page_size && a < lo + 2 * page_size) ||
            (sp && sp < lo && sp >= lo - ((uintptr_t)1 << 40)))
            report_overflow(s->base, cur_task);
    }
    /* Not ours: put back whoever handled SIGSEGV before us (the default
     * action, or e.g. ASan's handler) and return. A fault re-executes the
     * instruction and faults again under that disposition; a signal sent
     * with kill is re-raised, pending until this handler returns. */
    sigaction(SIGSEGV, &prev_segv, NULL);
    if (si->si_code <= 0)
        raise(sig);
    (void)uc;
}

static void install_segv(void)
{
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &prev_segv) != 0)
        segv_err = -errno;
}

int tern__fiber_thread_init(void)
{
    pthread_once(&segv_once, install_segv);
    if (segv_err)
        return segv_err;
    if (alt_mem)
        return 0;
    /* The handler must not run on the stack that just overflowed. Keep an
     * alternate stack the thread already has (ASan gives threads one). */
    stack_t old;
    if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE))
        return 0;
    void *mem = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -ENOMEM;
    stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        int e = errno;
        munmap(mem, ALTSTACK_SIZE);
        return -e;
    }
    alt_mem = mem;
    alt_len = ALTSTACK_SIZE;
    return 0;
}

void tern__fiber_thread_exit(void)
{
    if (!alt_mem)
        return;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == alt_mem) {
        stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    munmap(alt_mem, alt_len);
    alt_mem = NULL;
    alt_len = 0;
}
