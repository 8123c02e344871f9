/* Dirty-page tracking for live migration: which guest pages were written since the last
 * harvest (hv.proto DirtyLogStart/Harvest/Stop).
 *
 * Each VP has two bitmaps over the partition's maximum RAM. The engine's write hook
 * sets bits in the VP's active one; it fires BEFORE the store lands (Unicorn's
 * UC_HOOK_MEM_WRITE), so a bitmap the engine may still be writing through must never be
 * harvested: a page copied between the bit and the store would be sent stale and its
 * bit gone. The active bitmap therefore changes only on the VP's own LP thread, between
 * runs, and a harvest takes only bitmaps no engine is running on. A harvest is complete
 * up to the moment it is taken: a VP in its engine is asked to leave it at its next
 * translated block (its preempt flag, the scheduler's own safe preemption) and to swap
 * bitmaps as it leaves (hv_dirty_vp_leave); the harvest waits for that, then takes the
 * retired bitmap, and both of a VP that is not in its engine (it cannot enter while the
 * harvest holds the partition's dirty lock). A round's dirty count is therefore the
 * round's own, not the round before's: with the old "swap at the next entry", a VP that
 * was out of its engine at one harvest showed nothing at the next, and a migration
 * believed it had converged and paused with a whole round still to send. The wait is
 * bounded (HV_DIRTY_LEAVE_WAIT_US, for an LP thread the host does not schedule): a VP
 * that has not left by then is harvested at the next harvest. Harvests OR what they
 * take into the partition's accumulated bitmap, and hand out ranges of it.
 *
 * Cost: nothing while the partition is not tracking (one relaxed load per dispatch);
 * while tracking, the engine's write hook (measured ~x1.07 on store-heavy code) and an
 * uncontended mutex per dispatch. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "hv-engine.h"

typedef struct HvPartition HvPartition;
typedef struct HvVp HvVp;

/* How long a harvest waits for a running VP to leave its engine (one translated block,
 * unless the host does not run its LP thread). */
#define HV_DIRTY_LEAVE_WAIT_US 50000

/* Pages one harvest reply covers at most: a 512 KiB bitmap, inside a wire message. */
#define HV_DIRTY_HARVEST_PAGES (4u << 20)

/* A VP's part (in HvVp). bitmaps and active change under the partition's dirty_lock. */
typedef struct HvVpDirty {
        uint64_t *bitmaps[2];
        int active;             /* the one the engine writes while in it */
        bool in_engine;         /* between hv_dirty_vp_enter and hv_dirty_vp_leave */
        bool swap_wanted;       /* a harvest waits for the VP to leave and swap */
        uint64_t *engine_owned; /* what the engine was last given (LP thread only) */
} HvVpDirty;

/* Main thread. Start: every page counts clean from now; -EBUSY when already tracking. */
int hv_dirty_start(HvPartition *p);
/* Main thread. Collects what the VPs wrote up to now (waiting for a running VP to leave
 * its engine, as above), then hands out and clears the accumulated
 * bits of pages [first_page, first_page + *ret_pages), where *ret_pages is at most
 * HV_DIRTY_HARVEST_PAGES and stops at the visible RAM's end (0 when first_page is past
 * it). `out` holds ceil(HV_DIRTY_HARVEST_PAGES / 64) words. -ENOENT when not tracking. */
int hv_dirty_harvest(HvPartition *p, uint64_t first_page, uint64_t *out, uint64_t *ret_pages,
                     uint64_t *ret_dirty);
/* Main thread. Stops tracking; engines drop their hook at their next entry. */
int hv_dirty_stop(HvPartition *p);
bool hv_dirty_tracking(const HvPartition *p);

/* The VP's LP thread, right before and after running it in its engine. */
void hv_dirty_vp_enter(HvVp *vp, const HvEngineOps *engine);
void hv_dirty_vp_leave(HvVp *vp);

/* Marks pages hvd itself writes on a VP's behalf (on its LP thread, in its run). */
void hv_dirty_mark(uint64_t *bitmap, uint64_t pages, uint64_t gpa, uint64_t len);

/* hv_partition_free: the bitmaps (no VP runs any more). */
void hv_dirty_free(HvPartition *p);
