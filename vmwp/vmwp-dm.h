/* The Dynamic Memory VSP: the guest's reports, and vmmsd's MemoryAdjust carried out
 * with the balloon and hot-add, hvd releasing and charging the memory. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv-client.h"
#include "vmwp-vmbus.h"

/* hvd's memory requests for this VM's partition (the worker implements them with
 * hv-client; tests with a fake). Each returns 0 or a negative errno with *ret_error. */
typedef struct VmwpDmHvOps {
        int (*hot_add)(void *userdata, uint64_t bytes, HvClientMemory *ret_memory, char **ret_error);
        /* ret_accepted[i]: whether hvd took page i. */
        int (*balloon)(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                       HvClientPageTally *ret_tally, char **ret_error);
        int (*unballoon)(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                         HvClientPageTally *ret_tally, char **ret_error);
        int (*memory_get)(void *userdata, HvClientMemory *ret_memory);
} VmwpDmHvOps;

typedef struct VmwpDm VmwpDm;

/* The figures of worker.proto's MemoryStatus. */
typedef struct VmwpMemoryStatus {
        bool reporting; /* the guest's DM VSC is connected and its last report is recent */
        uint64_t guest_time_ns;
        uint64_t committed_bytes;
        uint64_t visible_bytes;
        uint64_t assigned_bytes;
        uint64_t ballooned_bytes;
        uint64_t pending_remove_bytes;
        uint64_t resident_bytes;
        uint64_t page_in_total;
        uint64_t page_out_total;
        uint64_t added_bytes_total;
        uint64_t removed_bytes_total;
        uint64_t add_operations;
        uint64_t remove_operations;
        uint64_t refused_pages;
} VmwpMemoryStatus;

/* A report older than this no longer counts as the guest reporting. */
#define VMWP_DM_REPORT_STALE_US (3 * G_USEC_PER_SEC)
/* MemoryAdjust's unit, as hvd's hot-add. */
#define VMWP_DM_UNIT_BYTES (2ull << 20)

int vmwp_dm_new(VmwpVmbus *bus, VmwpGuestRam *ram, const VmwpDmHvOps *hv, void *hv_userdata, VmwpDm **ret);
void vmwp_dm_free(VmwpDm *dm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpDm, vmwp_dm_free)

/* Grows (> 0) or shrinks (< 0) assigned memory by delta_bytes (whole 2 MiB units).
 * Growing deflates the balloon first, then hot-adds; shrinking asks the balloon for
 * pages, which hvd releases as they arrive. 0 when it began; -ENOTCONN when the guest
 * has no DM channel, -ENOSPC at the maximum, -ENOMEM when the pool cannot cover it,
 * -EINVAL, -EBUSY; *ret_error names the cause. */
int vmwp_dm_adjust(VmwpDm *dm, int64_t delta_bytes, char **ret_error);
void vmwp_dm_status(VmwpDm *dm, VmwpMemoryStatus *ret);
/* Save-VM: the VSP's state (the guest's last report, the pages its balloon holds,
 * requests in flight, the totals), appended to `out`; restore reads it back after
 * VMBus's (which reopens the channel) and checks every page against the maximum. */
void vmwp_dm_save(const VmwpDm *dm, GByteArray *out);
int vmwp_dm_restore(VmwpDm *dm, const uint8_t *data, size_t len, char **ret_error);
/* The pages hvd holds as ballooned, for a restore to hand back to hvd. */
const uint64_t *vmwp_dm_ballooned(const VmwpDm *dm, size_t *ret_n);

/* Called when the figures should reach vmmsd now rather than on the second: prompt =
 * true as a guest report flagged HV_DM_STATUS_PROMPT arrives, false when a balloon
 * request has ended (vmwp_dm_status already returns the new figures). NULL stops it. */
typedef void (*VmwpDmStatusFn)(void *userdata, bool prompt);
void vmwp_dm_set_status_handler(VmwpDm *dm, VmwpDmStatusFn fn, void *userdata);

/* How a grow of `want` pages is split, for `ballooned` pages held by the balloon and
 * `room` pages left below the maximum: pages handed back, and pages hot-added (whole
 * `unit`s, or all of `room`). Deflating is preferred, but not so far that hot-add
 * would need a partial unit. Pure. */
void vmwp_dm_plan_grow(uint64_t want, uint64_t ballooned, uint64_t room, uint64_t unit,
                       uint64_t *ret_unballoon, uint64_t *ret_hot_add);
