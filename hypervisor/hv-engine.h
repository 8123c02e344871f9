/* Execution engines: how a VP's guest code runs (Unicorn now, KVM later). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hv-cpuid.h"

typedef struct HvVp HvVp;
typedef struct HvEngineVp HvEngineVp;
typedef struct HvVpExit HvVpExit;

typedef struct HvVpRegs {
        uint64_t rip;
        uint64_t rsp;
        uint64_t rdi;
        uint64_t rsi;
} HvVpRegs;

/* A VP's architectural state for save and restore (hv.proto's VpRegisters, whose
 * comments say what each array holds). */
#define HV_VP_GPRS 16
#define HV_VP_SELECTORS 6
#define HV_VP_CRS 4
#define HV_VP_MSRS 8
#define HV_VP_DRS 6
typedef struct HvVpSegmentTable {
        uint64_t base;
        uint32_t limit;
        uint32_t selector;
        uint32_t flags;
} HvVpSegmentTable;

typedef struct HvVpCpuState {
        uint64_t gpr[HV_VP_GPRS];
        uint64_t rip, rflags;
        uint16_t selectors[HV_VP_SELECTORS];
        uint64_t fs_base, gs_base, kernel_gs_base;
        HvVpSegmentTable gdtr, idtr, ldtr, tr;
        uint64_t cr[HV_VP_CRS];
        uint64_t efer;
        uint64_t msrs[HV_VP_MSRS];
        uint64_t dr[HV_VP_DRS];
        uint16_t fpu_control, fpu_status, fpu_tag, fpu_opcode, fpu_cs, fpu_ds;
        uint64_t fpu_ip, fpu_dp;
        uint8_t fpu_registers[8][10];
        uint32_t mxcsr;
        uint8_t xmm[16][16];
} HvVpCpuState;

/* Contract of an engine. All ops return 0 or a negative errno.
 * - vp_create: builds the VP's execution state over the partition's RAM (mapping
 *   [0, visible) of it); called on the main thread before the VP is started.
 * - vp_set_regs: sets the start registers; only while the VP is not running.
 * - vp_run: runs guest code on the calling LP thread until vp->preempt is set or
 *   vp->slice_end_ns has passed (noticed within a block of either), a hypercall asks
 *   for an exit, or the guest faults; fills *exit (kind HV_EXIT_HALT
 *   with a reason on a fault). Never preempted from another thread (see
 *   shared/notes/unicorn-facts.md): it polls vp->preempt at block boundaries.
 * - vp_get_state / vp_set_state: the whole architectural state, only while the VP is
 *   not running (its partition paused); vp_set_state takes state already checked
 *   (hv-state.c) and returns -EINVAL if the engine still refuses a part of it.
 * - vp_dirty_log: live migration's dirty tracking (hv-dirty.h): from now on every
 *   guest store into RAM sets the bit of each page it touches in `bitmap` (`pages`
 *   bits; a store past them marks nothing); NULL stops marking and costs nothing
 *   more. Only on the VP's LP thread while it is not running; a store the engine has
 *   begun marks its page before it lands, so the caller swaps bitmaps only between
 *   runs.
 * - vp_free: accepts NULL; only while the VP is not running.
 * The processor (hv-cpuid.c): each VP is the model Hv.cpu_model names, and a partition
 * with cpuid_normalized reads hv_cpuid_normalized's answers to CPUID instead of the
 * model's (counted in its cpuid_normalized_answers).
 * - cpu_model_lookup: the model called `name` (NULL: the engine's default) into
 *   *ret_model, its canonical name into *ret_name; -ENOENT when there is none.
 * - cpu_model_name: the name of model number `i` (0, 1, ...), NULL past the last.
 * - version: the engine library's version as it reports it at run time ("2.1.1").
 * - cpuid_probe: fills the registers of each (leaf, subleaf) of table[0..n) as a fresh
 *   VP of `model` answers CPUID; main thread, at start. */
typedef struct HvEngineOps {
        const char *name;
        int (*vp_create)(HvVp *vp, HvEngineVp **ret_engine);
        int (*vp_set_regs)(HvEngineVp *engine, const HvVpRegs *regs);
        int (*vp_run)(HvEngineVp *engine, HvVpExit *exit);
        int (*vp_get_state)(HvEngineVp *engine, HvVpCpuState *ret);
        int (*vp_set_state)(HvEngineVp *engine, const HvVpCpuState *state);
        int (*vp_dirty_log)(HvEngineVp *engine, uint64_t *bitmap, uint64_t pages);
        void (*vp_free)(HvEngineVp *engine);
        int (*cpu_model_lookup)(const char *name, int *ret_model, const char **ret_name);
        const char *(*cpu_model_name)(int i);
        void (*version)(char *buf, size_t size);
        int (*cpuid_probe)(int model, HvCpuidLeaf *table, size_t n);
} HvEngineOps;

extern const HvEngineOps hv_engine_unicorn_ops;
