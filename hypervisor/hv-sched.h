/* The VP scheduler's mechanism: LP threads, dispatch, time accounting, timers.
 * Which VP runs next is a policy's decision (HvSchedOps). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hv-partition.h"

typedef struct HvSched HvSched;

struct HvLp {
        HvSched *sched;
        uint32_t index;
        uint32_t node; /* NUMA node; fixed at start */
        GThread *thread;
        GCond cond;
        /* Guarded by the scheduler lock. Policies may read index, node, idle and
         * current; the rest is the mechanism's. */
        pid_t tid;
        bool idle;             /* may be kicked: it found nothing to run */
        bool waiting;          /* in the idle wait, for accounting */
        uint64_t mark_ns;      /* start of the time not yet accounted */
        uint64_t run_start_ns; /* when `current` entered the engine */
        HvVp *current;
        HvVp *last_vp;
        uint64_t slice_end_ns;
        uint64_t guest_ns;
        uint64_t hypervisor_ns;
        uint64_t scheduler_ns; /* the part of hypervisor_ns outside hypercalls */
        uint64_t idle_ns;
        uint64_t context_switches;
        uint64_t dispatches;
        void *policy_data;
};

/* Why a VP left its LP (vp_put). */
typedef enum HvSchedPutReason {
        HV_SCHED_PUT_PREEMPTED, /* its slice ended or it was asked to leave; still runnable */
        HV_SCHED_PUT_YIELDED,   /* long spin wait: runnable, but the rest of its slice is given away */
        HV_SCHED_PUT_BLOCKED,   /* idle, halted, paused or dying: not runnable */
} HvSchedPutReason;

typedef struct HvSchedPolicyConfig {
        HvLp *lps; /* the mechanism's LPs; see HvLp for what a policy may read */
        uint32_t n_lps;
        uint32_t n_nodes;
        uint64_t slice_ns; /* the default slice */
        bool io_boost;     /* boost VPs woken from Idle */
        /* Asserts the caller holds the lock the ops run under (NULL: nothing to assert). */
        void (*assert_locked)(void *ctx);
        void *lock_ctx;
} HvSchedPolicyConfig;

/* What a policy can say about a VP, for counters. */
typedef struct HvSchedVpStats {
        uint32_t share_ppm; /* its entitled share of one LP, parts per million */
        int64_t lag_ns;     /* entitled minus received: > 0 behind, < 0 ahead */
        uint64_t cap_throttles;
        uint64_t boosts;
        uint64_t cap_window_max_ns; /* the most run in any cap window since the cap was set */
} HvSchedVpStats;

/* A scheduling policy. Every op is called with the scheduler lock held (the mechanism
 * asserts it before calling; the policy asserts it through config->assert_locked) and
 * must not block. `now` is passed in, never read by the policy, so the policy also
 * runs on a simulated clock (tests/unit/test-sched-sim.c).
 * - init: builds the policy's state. free: accepts what init built.
 * - vp_add: a VP is created (not runnable yet), vp->home_node already placed; 0 or
 *   -errno. vp_remove: it is going away; it is neither queued nor running.
 * - vp_wake: the VP became runnable (started, woken from Idle when `from_idle`, or
 *   resumed); queue it. Returns a busy LP whose VP should leave now for it (the
 *   mechanism asks that VP to stop at its next block boundary), or NULL. The
 *   mechanism kicks an idle LP by itself; a policy returns an LP only if none is idle.
 * - pick_next: chooses and dequeues a runnable VP for `lp` and may shorten
 *   *ret_slice_ns (preset to the default slice). NULL idles the LP until it is kicked
 *   or until *ret_retry_ns (preset to UINT64_MAX = until kicked), an absolute time at
 *   which a VP held back now (a capped one) may run. It never returns a VP that
 *   hv_sched_vp_gang_blocked() says must wait (the mechanism asserts it); such a VP
 *   stays queued, and the mechanism kicks an idle LP for it when its sibling leaves.
 * - vp_put: the VP left `lp` after running `ran_ns` (ending at `now`) for `reason`;
 *   a runnable one is queued again. Also called with ran_ns 0 for a VP picked and then
 *   parked by the mechanism (its partition was paused meanwhile).
 * - partition_changed: p->processor changed; apply it from the next decision on.
 *   Optional. The mechanism then re-dispatches the partition's running VPs.
 * - vp_stats: fills *ret for counters. Optional (zeros without it). */
typedef struct HvSchedOps {
        const char *name;
        int (*init)(const HvSchedPolicyConfig *config, void **ret_policy);
        void (*free)(void *policy);
        int (*vp_add)(void *policy, HvVp *vp);
        void (*vp_remove)(void *policy, HvVp *vp);
        HvLp *(*vp_wake)(void *policy, HvVp *vp, uint64_t now, bool from_idle);
        HvVp *(*pick_next)(void *policy, HvLp *lp, uint64_t now, uint64_t *ret_slice_ns,
                           uint64_t *ret_retry_ns);
        void (*vp_put)(void *policy, HvVp *vp, HvLp *lp, uint64_t ran_ns, uint64_t now,
                       HvSchedPutReason reason);
        void (*partition_changed)(void *policy, HvPartition *p, uint64_t now);
        void (*vp_stats)(void *policy, HvVp *vp, uint64_t now, HvSchedVpStats *ret);
} HvSchedOps;

/* Whether `vp` must wait because another VP of its ganged partition is on an LP
 * (HvPartition.ganged). Under the scheduler lock. */
static inline bool hv_sched_vp_gang_blocked(const HvVp *vp)
{
        return vp->partition->ganged && vp->partition->running_vps > 0;
}

extern const HvSchedOps hv_sched_round_robin_ops;
extern const HvSchedOps hv_sched_share_ops;

/* The policies hvd offers, by name; NULL if unknown. */
const HvSchedOps *hv_sched_ops_lookup(const char *name);

/* Called on an LP thread with the scheduler lock held when a VP halts. */
typedef void (*HvSchedHaltFn)(HvVp *vp, const char *reason, void *userdata);

typedef struct HvSchedConfig {
        uint32_t n_lps;
        uint32_t n_nodes; /* 0 or 1: one node; LPs are split evenly, in order */
        uint64_t slice_ns;
        bool io_boost;
        const HvSchedOps *ops;
        const HvEngineOps *engine;
        HvSchedHaltFn on_halt;
        void *userdata;
} HvSchedConfig;

int hv_sched_new(const HvSchedConfig *config, HvSched **ret);
void hv_sched_free(HvSched *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvSched, hv_sched_free)

/* NUMA placement: the node with the most LPs left over after the VPs already placed
 * on it, among those with at least `n_vps` LPs (any node when `n_vps` is 0); -1 when
 * none is that large. Pure, so the simulation places VPs as hvd does. */
int32_t hv_sched_place(const uint32_t *node_lps, const uint32_t *node_vps, uint32_t n_nodes, uint32_t n_vps);
/* Chooses p->home_node for a partition of p->vp_count VPs; before its VPs are added. */
void hv_sched_partition_place(HvSched *s, HvPartition *p);
int hv_sched_vp_add(HvSched *s, HvVp *vp);
int hv_sched_vp_start(HvSched *s, HvVp *vp, const HvVpRegs *regs);
void hv_sched_vp_signal(HvSched *s, HvVp *vp);
void hv_sched_partition_stop(HvSched *s, HvPartition *p);
void hv_sched_partition_pause(HvSched *s, HvPartition *p, bool paused);
/* Save and restore (hv-state.c): what a VP of a paused partition was doing. */
typedef struct HvVpRunSnapshot {
        HvVpState state;           /* HV_VP_STOPPED, HV_VP_RUNNABLE (runs on resume) or HV_VP_IDLE */
        uint64_t idle_deadline_ns; /* host monotonic; 0 = until an event */
        bool event_pending;
        bool resume_rax_valid;
        uint64_t resume_rax;
} HvVpRunSnapshot;
/* Reads the VP's run state and registers. -EBUSY unless its partition is paused. */
int hv_sched_vp_snapshot(HvSched *s, HvVp *vp, HvVpCpuState *ret_cpu, HvVpRunSnapshot *ret_run);
/* Gives a VP that never ran (of a paused partition) its registers and run state, both
 * checked already; it runs from there on resume. -EBUSY otherwise, or the engine's error. */
int hv_sched_vp_restore(HvSched *s, HvVp *vp, const HvVpCpuState *cpu, const HvVpRunSnapshot *run);
/* Applies new settings (already validated and admitted). */
void hv_sched_partition_set_processor(HvSched *s, HvPartition *p, const HvProcessorSettings *settings);

typedef struct HvLpSample {
        uint32_t node;
        pid_t tid;
        uint64_t guest_ns;
        uint64_t hypervisor_ns;
        uint64_t scheduler_ns;
        uint64_t idle_ns;
        uint64_t context_switches;
        uint64_t dispatches;
} HvLpSample;

typedef struct HvVpSample {
        HvVpState state;
        uint32_t home_node;
        HvVpCounters counters; /* with the run in progress counted */
        HvSchedVpStats policy;
} HvVpSample;

uint32_t hv_sched_lp_count(HvSched *s);
uint32_t hv_sched_node_count(HvSched *s);
const char *hv_sched_policy_name(HvSched *s);
bool hv_sched_io_boost(HvSched *s);
pid_t hv_sched_timer_tid(HvSched *s);
void hv_sched_sample_lps(HvSched *s, HvLpSample *ret_samples);
void hv_sched_sample_vp(HvSched *s, HvVp *vp, HvVpSample *ret_sample);
