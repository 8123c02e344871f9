/* Partitions (VMs as the hypervisor sees them) and their virtual processors. */
#pragma once

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv-dirty.h"
#include "hv-engine.h"
#include "vmms-limits.h"

typedef struct Hv Hv;
typedef struct HvLp HvLp;
typedef struct HvPartition HvPartition;

/* What one root-interface connection may hold (hv-server.c owns it; hv-memory.c charges
 * memory against it alongside the pool). Main thread only. */
typedef struct HvQuota {
        uint64_t memory_limit_bytes;
        uint64_t memory_used_bytes; /* sum of assigned_bytes over the connection's partitions */
} HvQuota;

typedef enum HvVpState {
        HV_VP_STOPPED,  /* created, not started; or halted */
        HV_VP_RUNNABLE, /* wants an LP */
        HV_VP_RUNNING,  /* on an LP */
        HV_VP_IDLE,     /* blocked in the Idle hypercall until its deadline or an event */
        HV_VP_DEAD,     /* its partition is being destroyed */
        HV_VP_PAUSED,   /* its partition is paused; runnable again on resume */
} HvVpState;

const char *hv_vp_state_to_string(HvVpState state);

/* Set-VMProcessor's settings, per partition, applied to each of its VPs. */
typedef struct HvProcessorSettings {
        uint32_t reserve_pct;     /* 0-100: % of one LP guaranteed while runnable */
        uint32_t maximum_pct;     /* 1-100: cap, % of one LP in any HV_SCHED_CAP_WINDOW_NS */
        uint32_t relative_weight; /* 1-10000: share among contenders */
} HvProcessorSettings;

#define HV_PROCESSOR_DEFAULTS                                                                                \
        ((HvProcessorSettings){.reserve_pct = VMMS_PROCESSOR_RESERVE_DEFAULT,                                \
                               .maximum_pct = VMMS_PROCESSOR_MAXIMUM_DEFAULT,                                \
                               .relative_weight = VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT})

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

/* What the scheduler counts per VP; hv_sched_sample_vp copies it out. */
typedef struct HvVpCounters {
        uint64_t run_ns;   /* dispatched on an LP (guest + hypercalls) */
        uint64_t guest_ns; /* running guest code */
        uint64_t dispatches;
        uint64_t wait_ns; /* runnable but not dispatched */
        uint64_t signals; /* events signalled to it (pending interrupts) */
        uint64_t preferred_lp_dispatches;
        uint64_t home_node_dispatches;
        uint64_t wake_dispatches; /* dispatches right after a wake from Idle */
        uint64_t wake_wait_ns;
        uint64_t wake_wait_max_ns;
        uint64_t yields;
} HvVpCounters;

struct HvVp {
        HvPartition *partition;
        uint32_t index;
        HvEngineVp *engine;

        /* Set under the scheduler lock, read by the engine without it. */
        atomic_int preempt;
        _Atomic uint64_t slice_end_ns; /* the engine stops by itself once this passes */
        /* An event was signalled while the VP was not idle; Idle returns at once. */
        atomic_int event_pending;

        /* Guarded by the scheduler lock. */
        HvVpState state;
        uint64_t idle_deadline_ns;
        uint64_t runnable_since_ns;
        HvLp *last_lp;         /* where it runs now, or ran last (soft affinity) */
        bool resume_rax_valid; /* the engine writes RAX before resuming */
        uint64_t resume_rax;
        void *policy_data;   /* owned by the scheduling policy */
        uint32_t home_node;  /* NUMA node it is placed on */
        bool woke_from_idle; /* its next dispatch ends a wake-up, for wake latency */
        HvVpCounters counters;

        /* Written by the LP running the VP, read by counters. */
        _Atomic uint64_t hypercalls;
        _Atomic uint64_t invalid_hypercalls;

        HvVpDirty dirty; /* live migration's dirty tracking (hv-dirty.h) */
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

        /* vps[] has max_vp_count slots; a hot-added VP is stored before vp_count grows
         * (main thread only), so a reader on another thread sees only built VPs. */
        _Atomic uint32_t vp_count;
        uint32_t max_vp_count;
        HvVp **vps;

        atomic_bool dying;
        /* Ganged (the default): at most one of its VPs is on an LP at any instant, so
         * the guest's lock-prefixed instructions stay atomic (the engine does not make
         * them atomic between threads). false: the guest opted out (PartitionCreate
         * concurrent_vps). Set before its VPs reach the scheduler, then read-only. */
        bool ganged;
        /* The guest reads the normalized CPUID (hv-cpuid.c) instead of the model's:
         * PartitionCreate cpu_compatibility. Set before its VPs run, then read-only. */
        bool cpuid_normalized;
        _Atomic uint64_t cpuid_normalized_answers; /* CPUIDs answered from the baseline */
        /* Created by a restore (hv.proto PartitionCreate.restoring): paused, its VPs
         * wait for their saved state; cleared at its first resume. Main thread only. */
        bool restoring;
        /* The guest's reference time minus hvd's (hv_partition_reference_time_ns): 0
         * for a new partition, set by a restore so its guest's time goes on from where
         * it was saved. Written only while the partition is paused and restoring. */
        _Atomic int64_t reference_offset_ns;
        /* Guarded by the scheduler lock. */
        bool paused;
        uint32_t running_vps; /* its VPs on an LP now (hv-sched.c keeps it) */
        HvProcessorSettings processor;
        int32_t home_node; /* NUMA node its VPs are placed on, -1 when they did not fit on one */

        GMutex console_lock;
        GByteArray *console;
        bool console_flush_queued;
        uint64_t console_dropped_bytes;

        /* Dynamic Memory (hv-memory.c); main thread only. assigned_bytes is always
         * visible_bytes - ballooned_pages * HV_PAGE_SIZE. */
        uint64_t *ballooned; /* one bit per page of maximum_bytes; NULL until the first balloon */
        uint64_t ballooned_pages;
        uint64_t hot_added_bytes;
        uint64_t refused_pages;
        uint64_t retouched_pages; /* ballooned pages the guest touched again, charged back */
        HvQuota *quota;           /* its connection's memory limit; NULL: none */

        /* Guest -> worker notes (PostMessage, SignalEvent): queued by LP threads, sent
         * by the main thread in order. Bounded, so a guest cannot make hvd hoard memory
         * for a worker that does not read; signals are kept once per connection id. */
        GMutex mailbox_lock;
        GQueue mailbox; /* HvGuestNote*, oldest first */
        uint32_t mailbox_messages;
        uint32_t mailbox_signals;
        bool mailbox_flush_queued;
        uint64_t guest_messages;
        uint64_t guest_messages_refused;
        uint64_t guest_signals;
        uint64_t guest_signals_coalesced;

        /* Dirty-page tracking (hv-dirty.h): on while a migration copies the RAM. */
        atomic_bool dirty_tracking;
        GMutex dirty_lock;
        GCond dirty_cond;            /* a VP left its engine with a swap a harvest waits for */
        uint64_t *dirty_accumulated; /* harvested from the VPs, not yet handed out */
};

#define HV_CONSOLE_BUFFER_MAX (64u * 1024u)
#define HV_MAILBOX_MESSAGES_MAX 64u /* posted messages waiting for the worker */
#define HV_MAILBOX_SIGNALS_MAX 32u  /* distinct connection ids with a signal pending */

typedef enum HvGuestNoteKind {
        HV_GUEST_NOTE_MESSAGE,
        HV_GUEST_NOTE_SIGNAL,
} HvGuestNoteKind;

typedef struct HvGuestNote {
        HvGuestNoteKind kind;
        uint32_t connection_id; /* HV_GUEST_NOTE_SIGNAL */
        uint32_t len;           /* HV_GUEST_NOTE_MESSAGE */
        uint8_t data[];
} HvGuestNote;

int hv_processor_settings_from_wire(uint32_t reserve_pct, uint32_t maximum_pct, uint32_t relative_weight,
                                    HvProcessorSettings *ret, char **ret_error);

int hv_partition_new(Hv *hv, const char *name, uint32_t vp_count, uint32_t max_vp_count,
                     uint64_t startup_bytes, uint64_t maximum_bytes, HvPartition **ret);
int hv_partition_vp_new(HvPartition *p, HvVp **ret);
void hv_partition_free(HvPartition *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvPartition, hv_partition_free)

/* The reference clock as this partition's guest sees it, and its deadlines (guest
 * reference time, 0 = none) as host monotonic time and back. */
uint64_t hv_partition_reference_time_ns(const HvPartition *p);
uint64_t hv_partition_deadline_to_host(const HvPartition *p, uint64_t guest_ns);
uint64_t hv_partition_deadline_to_guest(const HvPartition *p, uint64_t host_ns);
int hv_partition_vp_start(HvPartition *p, uint32_t vp_index, const HvVpRegs *regs);
uint64_t hv_partition_resident_bytes(const HvPartition *p);
bool hv_partition_range_valid(const HvPartition *p, uint64_t gpa, uint64_t len);
void hv_partition_console_write(HvPartition *p, const uint8_t *data, size_t len);
GBytes *hv_partition_console_take(HvPartition *p);
/* On an LP thread: queue a copy of a guest message or a signal for the worker. Return
 * 0 or -HV_STATUS_INSUFFICIENT_BUFFERS when the mailbox is full (the guest retries). */
int hv_partition_post_message(HvPartition *p, const uint8_t *data, uint32_t len);
int hv_partition_signal_event(HvPartition *p, uint32_t connection_id);
/* On the main thread: the oldest note (NULL when empty), and putting it back first when
 * the worker could not take it yet. */
HvGuestNote *hv_partition_mailbox_pop(HvPartition *p);
void hv_partition_mailbox_push_back(HvPartition *p, HvGuestNote *note);
