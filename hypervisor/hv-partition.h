/* Partitions (VMs as the hypervisor sees them) and their virtual processors. */
#pragma once

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv-engine.h"

typedef struct Hv Hv;
typedef struct HvLp HvLp;
typedef struct HvPartition HvPartition;

typedef enum HvVpState {
        HV_VP_STOPPED,  /* created, not started; or halted */
        HV_VP_RUNNABLE, /* wants an LP */
        HV_VP_RUNNING,  /* on an LP */
        HV_VP_IDLE,     /* blocked in the Idle hypercall until its deadline or an event */
        HV_VP_DEAD,     /* its partition is being destroyed */
        HV_VP_PAUSED,   /* its partition is paused; runnable again on resume */
} HvVpState;

const char *hv_vp_state_to_string(HvVpState state);

typedef enum HvExitKind {
        HV_EXIT_NONE,
        HV_EXIT_PREEMPTED, /* slice over, or the VP is wanted elsewhere */
        HV_EXIT_IDLE,      /* Idle hypercall */
        HV_EXIT_YIELD,     /* long spin wait */
        HV_EXIT_HALT,      /* the guest halted or faulted; reason says which */
} HvExitKind;

struct HvVpExit {
        HvExitKind kind;
        uint64_t idle_deadline_ns; /* HV_EXIT_IDLE: 0 = until an event */
        uint64_t hypercall_ns;     /* time spent handling hypercalls during the run */
        char reason[160];          /* HV_EXIT_HALT */
};

struct HvVp {
        HvPartition *partition;
        uint32_t index;
        HvEngineVp *engine;

        /* Set under the scheduler lock, read by the engine without it. */
        atomic_int preempt;
        /* An event was signalled while the VP was not idle; Idle returns at once. */
        atomic_int event_pending;

        /* Guarded by the scheduler lock. */
        HvVpState state;
        uint64_t idle_deadline_ns;
        uint64_t runnable_since_ns;
        HvLp *last_lp;         /* where it runs now, or ran last (soft affinity) */
        bool resume_rax_valid; /* the engine writes RAX before resuming */
        uint64_t resume_rax;
        void *policy_data; /* owned by the scheduling policy */
        uint64_t run_ns;
        uint64_t guest_ns;
        uint64_t dispatches;
        uint64_t wait_ns;

        /* Written by the LP running the VP, read by counters. */
        _Atomic uint64_t hypercalls;
        _Atomic uint64_t invalid_hypercalls;
};

struct HvPartition {
        Hv *hv;
        uint64_t id;
        char *name;
        void *owner; /* the root-interface connection that created it */

        int ram_fd;
        uint8_t *ram;
        uint64_t maximum_bytes;
        _Atomic uint64_t visible_bytes;
        uint64_t assigned_bytes; /* charged to the pool; main thread only */

        uint32_t vp_count;
        HvVp **vps;

        atomic_bool dying;
        bool paused; /* guarded by the scheduler lock */

        GMutex console_lock;
        GByteArray *console;
        bool console_flush_queued;
        uint64_t console_dropped_bytes;
};

#define HV_CONSOLE_BUFFER_MAX (64u * 1024u)

int hv_partition_new(Hv *hv, const char *name, uint32_t vp_count, uint64_t startup_bytes,
                     uint64_t maximum_bytes, HvPartition **ret);
void hv_partition_free(HvPartition *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvPartition, hv_partition_free)

int hv_partition_vp_start(HvPartition *p, uint32_t vp_index, const HvVpRegs *regs);
uint64_t hv_partition_resident_bytes(const HvPartition *p);
bool hv_partition_range_valid(const HvPartition *p, uint64_t gpa, uint64_t len);
void hv_partition_console_write(HvPartition *p, const uint8_t *data, size_t len);
GBytes *hv_partition_console_take(HvPartition *p);
