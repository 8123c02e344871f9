/* The hypervisor: the context every part of hvd is handed (no process-wide state). */
#pragma once

#include <glib.h>
#include <stdint.h>
#include <sys/types.h>

#include "hv-partition.h"
#include "hv-pool.h"
#include "hv-sched.h"

typedef enum HvEventKind {
        HV_EVENT_CONSOLE,
        HV_EVENT_VP_STOPPED,
        HV_EVENT_GUEST_MESSAGE,
        HV_EVENT_GUEST_SIGNAL,
} HvEventKind;

typedef struct HvEvent {
        HvEventKind kind;
        uint32_t vp_index;
        const char *reason;
        GBytes *console;
        const HvGuestNote *note; /* HV_EVENT_GUEST_MESSAGE, HV_EVENT_GUEST_SIGNAL */
} HvEvent;

/* Called on the main thread for each event of a partition that still exists. Returns 0,
 * or -EAGAIN when the receiver cannot take a guest note now (it is offered again
 * later, in order); other kinds are never offered twice. */
typedef int (*HvEventFn)(HvPartition *p, const HvEvent *event, void *userdata);

typedef struct HvConfig {
        uint64_t pool_bytes;
        uint32_t n_lps;
        uint32_t n_nodes; /* 0 or 1: one NUMA node */
        uint64_t slice_ns;
        bool io_boost;
        const HvSchedOps *sched_ops;
        const HvEngineOps *engine;
        int cpu_model; /* the engine's model number (cpu_model_lookup); 0: its default */
} HvConfig;

struct Hv {
        GMainContext *main_context;
        HvPool pool;
        HvSched *sched;
        const HvEngineOps *engine;
        uint64_t clock_base_ns;
        GHashTable *partitions; /* id -> HvPartition*, main thread only */
        uint64_t next_partition_id;
        uint64_t reserved_pct; /* sum of reserve % x VPs over partitions; main thread only */
        pid_t main_tid;
        HvEventFn on_event;
        void *on_event_userdata;
        /* The processor every VP is (hv-cpuid.c), and the vectors of a partition that
         * reads its own CPUID and of one that reads the normalized baseline. */
        int cpu_model;
        HvCompatVector vector_host;
        HvCompatVector vector_normalized;
};

int hv_new(const HvConfig *config, GMainContext *main_context, Hv **ret);
void hv_free(Hv *hv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Hv, hv_free)

uint64_t hv_reference_time_ns(const Hv *hv);
/* The vector of a model of `engine`: -EINVAL with a message when the engine cannot run
 * it or it lacks the baseline every vmms guest needs (hv-cpuid.c). */
int hv_compat_vector_build(const HvEngineOps *engine, int cpu_model, bool normalized, HvCompatVector *ret,
                           char **ret_error);
typedef struct HvPartitionSpec {
        const char *name;
        uint32_t vp_count;
        uint32_t max_vp_count; /* 0: HV_MAX_VPS_PER_PARTITION */
        uint64_t startup_bytes;
        uint64_t maximum_bytes;
        HvProcessorSettings processor; /* in range (hv_processor_settings_from_wire) */
        bool concurrent_vps;           /* opt out of ganging (HvPartition.ganged) */
        bool restoring;                /* created paused, VPs wait for their saved state */
        bool cpuid_normalized;         /* the guest reads the baseline CPUID (hv-cpuid.c) */
} HvPartitionSpec;

/* Host threads as Linux's scheduler sees them (/proc/self/task/TID/schedstat). */
typedef struct HvThreadStat {
        uint64_t run_ns;
        uint64_t wait_ns;
        uint64_t timeslices;
} HvThreadStat;

uint64_t hv_capacity_pct(const Hv *hv);
int hv_thread_stat(pid_t tid, HvThreadStat *ret);
int hv_partition_create(Hv *hv, const HvPartitionSpec *spec, HvPartition **ret, char **ret_error);
int hv_partition_set_processor(Hv *hv, HvPartition *p, const HvProcessorSettings *settings, char **ret_error);
int hv_partition_vp_add(Hv *hv, HvPartition *p, const HvVpRegs *regs, uint32_t *ret_index, char **ret_error);
void hv_partition_destroy(Hv *hv, HvPartition *p);
HvPartition *hv_partition_lookup(Hv *hv, uint64_t id);
void hv_queue_console_flush(HvPartition *p);
void hv_queue_mailbox_flush(HvPartition *p);
