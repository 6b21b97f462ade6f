/* The public headers as a C++ program sees them: they compile as C++ (no
 * _Atomic, no C-only initialisers), every _INIT macro works, and each sized
 * type has the size and alignment the C library was built with
 * (cxx_sizes.c), so C++ code may embed them. */
#include <cstdio>
#include <tern.h>
#include <tern_io.h>

extern "C" const size_t tern_test_c_sizes[][2];

/* a list, one type a line, in the order of cxx_sizes.c */
// clang-format off
#define TYPES(X)                                                                  \
    X(tern_group)                                                                 \
    X(tern_mutex)                                                                 \
    X(tern_rwlock)                                                                \
    X(tern_sem)                                                                   \
    X(tern_event)                                                                 \
    X(tern_notify)                                                                \
    X(tern_cond)                                                                  \
    X(tern_barrier)                                                               \
    X(tern_waitgroup)                                                             \
    X(tern_config)                                                                \
    X(tern_stall)                                                                 \
    X(tern_blocking_info)                                                         \
    X(tern_worker_stats)                                                          \
    X(tern_loop_info)                                                             \
    X(tern_metrics)                                                               \
    X(tern_select_case)
// clang-format on

int main()
{
    tern_group g = TERN_GROUP_INIT;
    tern_mutex m = TERN_MUTEX_INIT;
    tern_rwlock rw = TERN_RWLOCK_INIT;
    tern_sem s = TERN_SEM_INIT(2);
    tern_event e = TERN_EVENT_INIT;
    tern_notify n = TERN_NOTIFY_INIT;
    tern_cond c = TERN_COND_INIT;
    tern_barrier b = TERN_BARRIER_INIT(2);
    tern_waitgroup wg = TERN_WAITGROUP_INIT;
    (void)g, (void)rw, (void)e, (void)n, (void)c, (void)b, (void)wg;
    int bad = 0, i = 0;
#define CHECK(T)                                                                         \
    if (sizeof(T) != tern_test_c_sizes[i][0] || alignof(T) != tern_test_c_sizes[i][1]) { \
        std::printf("%s: C++ %zu/%zu, C %zu/%zu\n", #T, sizeof(T), alignof(T),           \
                    tern_test_c_sizes[i][0], tern_test_c_sizes[i][1]);                   \
        bad = 1;                                                                         \
    }                                                                                    \
    i++;
    TYPES(CHECK)
    /* and the library takes them from C++ */
    if (tern_mutex_try_lock(&m) != 0 || tern_mutex_unlock(&m) != 0 ||
        tern_sem_available(&s) != 2)
        bad = 1;
    std::printf(bad ? "cxx_headers: FAILED\n" : "cxx_headers: sizes agree\n");
    return bad;
}
