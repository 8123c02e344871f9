/* Client of hvd's root interface, for vmwp, vmmsd and tools. Synchronous calls;
 * events that arrive meanwhile go to the event handler. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.pb-c.h"

typedef struct HvClient HvClient;
typedef void (*HvClientEventFn)(const Vmms__Hv__Event *event, void *userdata);

int hv_client_connect(const char *socket_path, HvClient **ret);
void hv_client_free(HvClient *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HvClient, hv_client_free)

int hv_client_fd(HvClient *c);
void hv_client_set_event_handler(HvClient *c, HvClientEventFn fn, void *userdata);
/* Delivers the events waiting on the socket. -ECONNRESET when hvd has gone. */
int hv_client_dispatch(HvClient *c);
/* The message of the last failed call, or NULL. */
const char *hv_client_last_error(HvClient *c);

/* Set-VMProcessor's settings; the ranges are proto/vmms-limits.h's. A zero maximum or
 * weight is "unset" on the wire and takes the default (100 % cap, weight 100), never a
 * 0 % cap (hv.proto). hvd refuses out-of-range values naming the field, and a
 * reservation the host cannot honour naming the totals (hv_client_last_error). */
typedef struct HvClientProcessor {
        uint32_t reserve_pct;     /* 0-100 % of one LP, per VP */
        uint32_t maximum_pct;     /* 1-100 % of one LP, per VP */
        uint32_t relative_weight; /* 1-10000 */
        bool concurrent_vps;      /* PartitionCreate only: opt out of ganging (hv.proto) */
        bool restoring;           /* PartitionCreate only: created paused, VPs from saved state */
        bool cpu_compatibility;   /* PartitionCreate only: the guest reads the normalized CPUID */
} HvClientProcessor;

/* `processor` NULL: the defaults. The partition may grow to HV_MAX_VPS_PER_PARTITION VPs. */
int hv_client_partition_create(HvClient *c, const char *name, uint32_t vp_count, uint64_t startup_bytes,
                               uint64_t maximum_bytes, const HvClientProcessor *processor, uint64_t *ret_id,
                               int *ret_ram_fd);
/* Replaces all three settings of a running partition; applies within one scheduling period. */
int hv_client_partition_set_processor(HvClient *c, uint64_t partition_id, const HvClientProcessor *processor);
/* Hot-adds a VP started at rip/rsp (like VpStart); its index is returned. */
int hv_client_vp_add(HvClient *c, uint64_t partition_id, uint64_t rip, uint64_t rsp, uint64_t rdi,
                     uint64_t rsi, uint32_t *ret_vp_index);
int hv_client_vp_start(HvClient *c, uint64_t partition_id, uint32_t vp_index, uint64_t rip, uint64_t rsp,
                       uint64_t rdi, uint64_t rsi);
int hv_client_partition_destroy(HvClient *c, uint64_t partition_id);
int hv_client_partition_signal(HvClient *c, uint64_t partition_id, uint32_t vp_index);
int hv_client_partition_pause(HvClient *c, uint64_t partition_id, bool paused);
/* Save and restore, on a paused partition (hv.proto VpState, PartitionState). A VP's
 * state travels as a packed hv.proto VpState, as it is stored in a saved file and sent
 * to a peer; hvd checks every field of what is set. */
int hv_client_vp_state_get(HvClient *c, uint64_t partition_id, uint32_t vp_index, GBytes **ret_state);
int hv_client_vp_state_set(HvClient *c, uint64_t partition_id, const uint8_t *state, size_t len);
typedef struct HvClientPartitionState {
        uint64_t reference_time_ns; /* the guest's view of the reference clock */
        uint32_t vp_count;
        uint64_t visible_bytes;
        uint64_t ballooned_bytes;
        uint64_t hot_added_bytes;
} HvClientPartitionState;
int hv_client_partition_state_get(HvClient *c, uint64_t partition_id, HvClientPartitionState *ret);
int hv_client_partition_state_set(HvClient *c, uint64_t partition_id, uint64_t reference_time_ns);
/* Live migration's dirty tracking (hv.proto DirtyLogStart/Harvest/Stop). A harvest
 * fills `bitmap` (ceil(pages / 64) words, bit p = page p, zeroed first) with the pages
 * written since the last harvest, over the visible RAM up to `pages`. */
int hv_client_dirty_log_start(HvClient *c, uint64_t partition_id);
int hv_client_dirty_log_harvest(HvClient *c, uint64_t partition_id, uint64_t *bitmap, uint64_t pages,
                                uint64_t *ret_dirty);
int hv_client_dirty_log_stop(HvClient *c, uint64_t partition_id);
/* Dynamic Memory. A partition's memory figures (hv.proto PartitionMemory). */
typedef struct HvClientMemory {
        uint64_t visible_bytes;
        uint64_t assigned_bytes; /* visible - ballooned: what the pool is charged */
        uint64_t ballooned_bytes;
        uint64_t maximum_bytes;
        uint64_t resident_bytes; /* measured: memfd st_blocks */
        uint64_t hot_added_bytes;
        uint64_t refused_pages;
        uint64_t pool_available_bytes;
} HvClientMemory;

/* What hvd made of each page of a balloon or unballoon request. */
typedef struct HvClientPageTally {
        uint32_t accepted;
        uint32_t refused_outside_ram;
        uint32_t refused_duplicate;
        uint32_t refused_wrong_state;
} HvClientPageTally;

/* Grows visible RAM by `bytes` (2 MiB units, or up to the maximum); -ENOMEM naming the
 * figures when the pool cannot cover it. ret_memory (may be NULL): the figures after. */
int hv_client_partition_hot_add(HvClient *c, uint64_t partition_id, uint64_t bytes,
                                HvClientMemory *ret_memory);
/* Gives back (balloon) or takes again (unballoon) the guest pages `pfns`. Bad pages are
 * refused one by one, not failing the call: ret_accepted[i] (n entries, may be NULL)
 * says which went through. At most 65536 pages per call. */
int hv_client_partition_balloon(HvClient *c, uint64_t partition_id, const uint64_t *pfns, size_t n,
                                bool *ret_accepted, HvClientPageTally *ret_tally, HvClientMemory *ret_memory);
int hv_client_partition_unballoon(HvClient *c, uint64_t partition_id, const uint64_t *pfns, size_t n,
                                  bool *ret_accepted, HvClientPageTally *ret_tally,
                                  HvClientMemory *ret_memory);
int hv_client_partition_memory_get(HvClient *c, uint64_t partition_id, HvClientMemory *ret_memory);

/* Without waiting, for callers on a main loop: sends a CountersGet (its id in *ret_id),
 * and takes the next reply that has arrived (-EAGAIN: none yet; -ECONNRESET: hvd has
 * gone). Events met on the way go to the event handler. */
int hv_client_counters_request(HvClient *c, uint64_t *ret_id);
int hv_client_reply_take(HvClient *c, Vmms__Hv__Reply **ret_reply);

/* A processor's compatibility vector (hv.proto CompatibilityVectorGet): partition_id 0
 * for this host's with or without `normalized`. *ret_reply holds
 * reply->compatibility_vector; free with hv_client_reply_free. */
int hv_client_compatibility_vector_get(HvClient *c, uint64_t partition_id, bool normalized,
                                       Vmms__Hv__Reply **ret_reply);

/* hv.proto WatchdogArm: hvd pauses every partition unless armed again within timeout_ms
 * (0 disarms); *ret_fired: it fired since it was last armed. */
int hv_client_watchdog_arm(HvClient *c, uint32_t timeout_ms, bool *ret_fired);

/* On success *ret_reply holds reply->counters; free with hv_client_reply_free. */
int hv_client_counters_get(HvClient *c, Vmms__Hv__Reply **ret_reply);
void hv_client_reply_free(Vmms__Hv__Reply *reply);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Vmms__Hv__Reply, hv_client_reply_free)
