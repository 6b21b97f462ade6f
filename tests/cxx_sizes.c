/* The sizes and alignments of tern's sized public types as C sees them, for
 * cxx_headers.cpp to compare with C++'s; same order as its TYPES list. */
#include <stdalign.h>
#include <stddef.h>

#include "tern.h"

#define SZ(T) {sizeof(T), alignof(T)},
/* in the order of cxx_headers.cpp's TYPES */
// clang-format off
const size_t tern_test_c_sizes[][2] = {
    SZ(tern_group) SZ(tern_mutex) SZ(tern_rwlock) SZ(tern_sem) SZ(tern_event)
    SZ(tern_notify) SZ(tern_cond) SZ(tern_barrier) SZ(tern_waitgroup) SZ(tern_config)
    SZ(tern_stall) SZ(tern_blocking_info) SZ(tern_worker_stats) SZ(tern_loop_info)
    SZ(tern_metrics) SZ(tern_select_case)
};
// clang-format on
