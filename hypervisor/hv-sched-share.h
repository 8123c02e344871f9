/* The share policy's constants and its pure share computation, visible to tests. The
 * algorithm and the reasons for each number are in hv-sched-share.c. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define HV_SCHED_CAP_WINDOW_NS (100ull * 1000000ull)  /* a cap holds in every window this long */
#define HV_SCHED_CAP_MIN_SLICE_NS (1000ull * 1000ull) /* a capped VP waits for at least this much budget */
#define HV_SCHED_CAP_GUARD_NS (250ull * 1000ull)      /* budget kept back for the engine's stop latency */
#define HV_SCHED_CAP_RUNS 64u                         /* run intervals remembered per VP */
#define HV_SCHED_LAG_SLICES 3u                        /* lag is bounded to this many default slices */
#define HV_SCHED_AFFINITY_DIVISOR 10u                 /* soft affinity tolerates slice / this */
#define HV_SCHED_BOOST_SLICE_NS (1000000ull)          /* the slice of a boosted dispatch */

/* Fluid shares by water-filling: s_i = clamp(lambda * weight_i, lo_i, hi_i) with the one
 * lambda that makes sum(s_i) = min(capacity, sum(hi_i)). Needs lo_i <= hi_i and
 * weight_i > 0. When sum(lo_i) exceeds capacity (reservations a node cannot honour)
 * the floors are scaled down to fit: s_i = lo_i * capacity / sum(lo_i). `scratch` holds
 * 2n entries of HvSchedShareEvent. O(n log n). */
typedef struct HvSchedShareEvent {
        double lambda;
        uint32_t index;
        uint32_t saturates; /* 0: the VP leaves its floor here; 1: it reaches its ceiling */
} HvSchedShareEvent;

void hv_sched_share_waterfill(const double *weight, const double *lo, const double *hi, size_t n,
                              double capacity, double *ret_shares, HvSchedShareEvent *scratch);
