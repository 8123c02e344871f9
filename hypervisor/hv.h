/* The hypervisor: the context every part of hvd is handed (no process-wide state). */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "hv-partition.h"
#include "hv-pool.h"
#include "hv-sched.h"

typedef enum HvEventKind {
        HV_EVENT_CONSOLE,
        HV_EVENT_VP_STOPPED,
} HvEventKind;

typedef struct HvEvent {
        HvEventKind kind;
        uint32_t vp_index;
        const char *reason;
        GBytes *console;
} HvEvent;

/* Called on the main thread for each event of a partition that still exists. */
typedef void (*HvEventFn)(HvPartition *p, const HvEvent *event, void *userdata);

typedef struct HvConfig {
        uint64_t pool_bytes;
        uint32_t n_lps;
        uint64_t slice_ns;
        const HvSchedOps *sched_ops;
        const HvEngineOps *engine;
} HvConfig;

struct Hv {
        GMainContext *main_context;
        HvPool pool;
        HvSched *sched;
        const HvEngineOps *engine;
        uint64_t clock_base_ns;
        GHashTable *partitions; /* id -> HvPartition*, main thread only */
        uint64_t next_partition_id;
        HvEventFn on_event;
        void *on_event_userdata;
};

int hv_new(const HvConfig *config, GMainContext *main_context, Hv **ret);
void hv_free(Hv *hv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Hv, hv_free)

uint64_t hv_reference_time_ns(const Hv *hv);
int hv_partition_create(Hv *hv, const char *name, uint32_t vp_count, uint64_t startup_bytes,
                        uint64_t maximum_bytes, HvPartition **ret, char **ret_error);
void hv_partition_destroy(Hv *hv, HvPartition *p);
HvPartition *hv_partition_lookup(Hv *hv, uint64_t id);
void hv_queue_console_flush(HvPartition *p);
