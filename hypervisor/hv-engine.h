/* Execution engines: how a VP's guest code runs (Unicorn now, KVM later). */
#pragma once

#include <stdint.h>

typedef struct HvVp HvVp;
typedef struct HvEngineVp HvEngineVp;
typedef struct HvVpExit HvVpExit;

typedef struct HvVpRegs {
        uint64_t rip;
        uint64_t rsp;
        uint64_t rdi;
        uint64_t rsi;
} HvVpRegs;

/* Contract of an engine. All ops return 0 or a negative errno.
 * - vp_create: builds the VP's execution state over the partition's RAM (mapping
 *   [0, visible) of it); called on the main thread before the VP is started.
 * - vp_set_regs: sets the start registers; only while the VP is not running.
 * - vp_run: runs guest code on the calling LP thread until vp->preempt is set or
 *   vp->slice_end_ns has passed (checked every few microseconds), a hypercall asks
 *   for an exit, or the guest faults; fills *exit (kind HV_EXIT_HALT
 *   with a reason on a fault). Never preempted from another thread (see
 *   shared/notes/unicorn-facts.md): it polls vp->preempt at block boundaries.
 * - vp_free: accepts NULL; only while the VP is not running. */
typedef struct HvEngineOps {
        const char *name;
        int (*vp_create)(HvVp *vp, HvEngineVp **ret_engine);
        int (*vp_set_regs)(HvEngineVp *engine, const HvVpRegs *regs);
        int (*vp_run)(HvEngineVp *engine, HvVpExit *exit);
        void (*vp_free)(HvEngineVp *engine);
} HvEngineOps;

extern const HvEngineOps hv_engine_unicorn_ops;
