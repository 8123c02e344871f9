/* Dirty-page tracking; hv-dirty.h says how the per-VP bitmaps are swapped and why. */
#include <errno.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-dirty.h"
#include "hv.h"

#define WORDS(pages) (((pages) + 63) / 64)

static uint64_t bitmap_pages(const HvPartition *p)
{
        return p->maximum_bytes / HV_PAGE_SIZE;
}

bool hv_dirty_tracking(const HvPartition *p)
{
        return atomic_load_explicit(&p->dirty_tracking, memory_order_relaxed);
}

void hv_dirty_mark(uint64_t *bitmap, uint64_t pages, uint64_t gpa, uint64_t len)
{
        uint64_t first = gpa / HV_PAGE_SIZE, last;

        if (len == 0 || first >= pages)
                return;
        last = MIN((gpa + len - 1) / HV_PAGE_SIZE, pages - 1);
        for (uint64_t page = first; page <= last; page++)
                bitmap[page / 64] |= 1ull << (page % 64);
}

/* OR `from` into `into` and clear it. */
static void absorb(uint64_t *into, uint64_t *from, uint64_t words)
{
        for (uint64_t i = 0; i < words; i++)
                if (from[i]) {
                        into[i] |= from[i];
                        from[i] = 0;
                }
}

/* The partition is paused for the moment it takes to switch on (unless it is paused
 * already): a VP that entered its engine before tracking began runs without the hook,
 * and a store it makes after a page was copied would be lost. After the pause every VP
 * enters with the hook. */
int hv_dirty_start(HvPartition *p)
{
        uint64_t words = WORDS(bitmap_pages(p));
        bool was_paused = p->paused; /* written on the main thread only */

        if (hv_dirty_tracking(p))
                return -EBUSY;
        if (!was_paused)
                hv_sched_partition_pause(p->hv->sched, p, true);
        g_mutex_lock(&p->dirty_lock);
        if (!p->dirty_accumulated)
                p->dirty_accumulated = g_new0(uint64_t, words);
        memset(p->dirty_accumulated, 0, words * sizeof(uint64_t));
        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvVpDirty *d = &p->vps[i]->dirty;

                for (int k = 0; k < 2; k++) {
                        if (!d->bitmaps[k])
                                d->bitmaps[k] = g_new0(uint64_t, words);
                        memset(d->bitmaps[k], 0, words * sizeof(uint64_t));
                }
                d->swap_wanted = false;
        }
        atomic_store(&p->dirty_tracking, true);
        g_mutex_unlock(&p->dirty_lock);
        if (!was_paused)
                hv_sched_partition_pause(p->hv->sched, p, false);
        return 0;
}

/* Takes what every VP wrote up to now into the accumulated bitmap (the lock held). */
static void collect(HvPartition *p, uint64_t words)
{
        gint64 deadline = g_get_monotonic_time() + HV_DIRTY_LEAVE_WAIT_US;
        bool waiting = false;

        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvVpDirty *d = &p->vps[i]->dirty;

                if (!d->bitmaps[0])
                        continue; /* hot-added after the start: marks nothing yet */
                absorb(p->dirty_accumulated, d->bitmaps[!d->active], words);
                if (d->in_engine) {
                        d->swap_wanted = true;
                        atomic_store(&p->vps[i]->preempt, 1);
                        waiting = true;
                } else {
                        absorb(p->dirty_accumulated, d->bitmaps[d->active], words);
                }
        }
        while (waiting) {
                waiting = false;
                for (uint32_t i = 0; i < p->vp_count; i++)
                        waiting |= p->vps[i]->dirty.swap_wanted;
                if (waiting && !g_cond_wait_until(&p->dirty_cond, &p->dirty_lock, deadline))
                        break; /* still in it: its swap comes at its leave, for the next harvest */
        }
        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvVpDirty *d = &p->vps[i]->dirty;

                if (d->bitmaps[0] && !d->swap_wanted)
                        absorb(p->dirty_accumulated, d->bitmaps[!d->active], words);
        }
}

int hv_dirty_harvest(HvPartition *p, uint64_t first_page, uint64_t *out, uint64_t *ret_pages,
                     uint64_t *ret_dirty)
{
        uint64_t words = WORDS(bitmap_pages(p)), visible_pages, pages, dirty = 0;

        if (!hv_dirty_tracking(p))
                return -ENOENT;
        g_mutex_lock(&p->dirty_lock);
        collect(p, words);
        g_mutex_unlock(&p->dirty_lock);

        visible_pages = atomic_load(&p->visible_bytes) / HV_PAGE_SIZE;
        pages = first_page < visible_pages ? MIN(visible_pages - first_page, (uint64_t)HV_DIRTY_HARVEST_PAGES)
                                           : 0;
        memset(out, 0, WORDS(HV_DIRTY_HARVEST_PAGES) * sizeof(uint64_t));
        for (uint64_t k = 0; k < pages; k++) {
                uint64_t page = first_page + k;
                uint64_t *word = &p->dirty_accumulated[page / 64], bit = 1ull << (page % 64);

                if (*word & bit) {
                        *word &= ~bit;
                        out[k / 64] |= 1ull << (k % 64);
                        dirty++;
                }
        }
        *ret_pages = pages;
        *ret_dirty = dirty;
        return 0;
}

int hv_dirty_stop(HvPartition *p)
{
        if (!hv_dirty_tracking(p))
                return -ENOENT;
        atomic_store(&p->dirty_tracking, false);
        return 0;
}

void hv_dirty_vp_enter(HvVp *vp, const HvEngineOps *engine)
{
        HvPartition *p = vp->partition;
        HvVpDirty *d = &vp->dirty;
        uint64_t *target = NULL;

        if (!hv_dirty_tracking(p) && !d->engine_owned)
                return;
        g_mutex_lock(&p->dirty_lock);
        if (hv_dirty_tracking(p)) {
                if (!d->bitmaps[0]) { /* hot-added while tracking */
                        d->bitmaps[0] = g_new0(uint64_t, WORDS(bitmap_pages(p)));
                        d->bitmaps[1] = g_new0(uint64_t, WORDS(bitmap_pages(p)));
                }
                target = d->bitmaps[d->active];
        }
        d->in_engine = true;
        g_mutex_unlock(&p->dirty_lock);
        if (target != d->engine_owned && engine->vp_dirty_log(vp->engine, target, bitmap_pages(p)) >= 0)
                d->engine_owned = target;
}

/* The engine has stopped: a swap a harvest asked for is safe now, and it is told. */
void hv_dirty_vp_leave(HvVp *vp)
{
        HvPartition *p = vp->partition;
        HvVpDirty *d = &vp->dirty;

        if (!d->engine_owned && !d->in_engine)
                return;
        g_mutex_lock(&p->dirty_lock);
        d->in_engine = false;
        if (d->swap_wanted) {
                d->active = !d->active;
                d->swap_wanted = false;
                g_cond_broadcast(&p->dirty_cond);
        }
        g_mutex_unlock(&p->dirty_lock);
}

void hv_dirty_free(HvPartition *p)
{
        for (uint32_t i = 0; p->vps && i < p->vp_count; i++)
                if (p->vps[i])
                        for (int k = 0; k < 2; k++)
                                g_free(p->vps[i]->dirty.bitmaps[k]);
        g_free(p->dirty_accumulated);
        g_mutex_clear(&p->dirty_lock);
        g_cond_clear(&p->dirty_cond);
}
