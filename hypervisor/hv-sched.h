/* The VP scheduler's mechanism: LP threads, dispatch, time accounting, timers.
 * Which VP runs next is a policy's decision (HvSchedOps). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv-partition.h"

typedef struct HvSched HvSched;

struct HvLp {
        HvSched *sched;
        uint32_t index;
        GThread *thread;
        GCond cond;
        /* Guarded by the scheduler lock. */
        bool idle;    /* may be kicked: it found nothing to run */
        bool waiting; /* in the idle wait, for accounting */
        uint64_t mark_ns;      /* start of the time not yet accounted */
        uint64_t run_start_ns; /* when `current` entered the engine */
        HvVp *current;
        HvVp *last_vp;
        uint64_t slice_end_ns;
        uint64_t guest_ns;
        uint64_t hypervisor_ns;
        uint64_t idle_ns;
        uint64_t context_switches;
        void *policy_data;
};

/* A scheduling policy. Every op is called with the scheduler lock held and must not
 * block; `now` is passed in (never read by the policy) so the policy also runs on a
 * simulated clock.
 * - init/free: the policy's state for `n_lps` LPs.
 * - vp_add: a VP is created (not runnable yet). vp_remove: it is going away; it is
 *   not runnable and not running.
 * - vp_wake: the VP became runnable; queue it.
 * - pick_next: choose and dequeue a runnable VP for `lp`, or NULL to idle the LP;
 *   sets *ret_slice_ns.
 * - vp_put: the VP left `lp` after running `ran_ns`; `runnable` says whether it
 *   still wants to run (then the policy queues it again). */
typedef struct HvSchedOps {
        const char *name;
        int (*init)(uint32_t n_lps, void **ret_policy);
        void (*free)(void *policy);
        int (*vp_add)(void *policy, HvVp *vp);
        void (*vp_remove)(void *policy, HvVp *vp);
        void (*vp_wake)(void *policy, HvVp *vp, uint64_t now);
        HvVp *(*pick_next)(void *policy, HvLp *lp, uint64_t now, uint64_t *ret_slice_ns);
        void (*vp_put)(void *policy, HvVp *vp, HvLp *lp, uint64_t ran_ns, uint64_t now, bool runnable);
} HvSchedOps;

extern const HvSchedOps hv_sched_round_robin_ops;

/* Called on an LP thread with the scheduler lock held when a VP halts. */
typedef void (*HvSchedHaltFn)(HvVp *vp, const char *reason, void *userdata);

typedef struct HvSchedConfig {
        uint32_t n_lps;
        uint64_t slice_ns;
        const HvSchedOps *ops;
        const HvEngineOps *engine;
        HvSchedHaltFn on_halt;
        void *userdata;
} HvSchedConfig;

int hv_sched_new(const HvSchedConfig *config, HvSched **ret);
void hv_sched_free(HvSched *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvSched, hv_sched_free)

int hv_sched_vp_add(HvSched *s, HvVp *vp);
int hv_sched_vp_start(HvSched *s, HvVp *vp, const HvVpRegs *regs);
void hv_sched_vp_signal(HvSched *s, HvVp *vp);
void hv_sched_partition_stop(HvSched *s, HvPartition *p);
void hv_sched_partition_pause(HvSched *s, HvPartition *p, bool paused);

typedef struct HvLpSample {
        uint64_t guest_ns;
        uint64_t hypervisor_ns;
        uint64_t idle_ns;
        uint64_t context_switches;
} HvLpSample;

typedef struct HvVpSample {
        HvVpState state;
        uint64_t run_ns;
        uint64_t guest_ns;
        uint64_t dispatches;
        uint64_t wait_ns;
} HvVpSample;

uint32_t hv_sched_lp_count(HvSched *s);
void hv_sched_sample_lps(HvSched *s, HvLpSample *ret_samples);
void hv_sched_sample_vp(HvSched *s, HvVp *vp, HvVpSample *ret_sample);
