/* Dynamic Memory in hvd: hot-add, balloon and unballoon, and the pool accounting.
 *
 * Design note.
 *
 * Figures, per partition, in bytes:
 *   visible   = startup + hot-added          (what the guest may address, from GPA 0)
 *   ballooned = pages the balloon gave back  (a bitmap over maximum_bytes, one bit a page)
 *   assigned  = visible - ballooned          (what the pool is charged for it)
 * Hot-add charges the pool before visible grows; a balloon credits it after the pages
 * are punched out of the memfd; an unballoon charges it before the bits clear. So
 * pool.used is the sum of assigned over partitions at every return to the main loop,
 * and a request the pool cannot cover changes nothing.
 *
 * Trust. The requests come from a worker, their page numbers from its guest: neither
 * is trusted. Page numbers are relative to the partition (gpa / 4096) and checked
 * against its visible RAM, so no request can reach another partition's memory. Each
 * page is judged alone (hv_memory_classify) and a bad one is refused and counted while
 * the good ones of the same request go through.
 *
 * Host memory. A ballooned page is punched out of the memfd (FALLOC_FL_PUNCH_HOLE), so
 * the host really gets it back: resident memory (st_blocks) falls, measured. Runs of
 * consecutive pages are punched with one call.
 *
 * A guest that touches a ballooned page again makes the host allocate it anew (memfd
 * faults fill holes, reads too), and nothing in the engine can stop it. So hvd looks:
 * hv_memory_reconcile, every HV_MEMORY_RECONCILE_MS and before any figure is reported,
 * compares resident (fstat, O(1)) with assigned. Resident above assigned can only be
 * ballooned pages touched again, or pages past visible RAM that the worker touched
 * through its mapping. Then it finds the ballooned pages that are resident (mincore
 * over the partition's RAM, in chunks that hold ballooned pages only) and takes them
 * out of the balloon: charged to the pool and to the connection's quota like an
 * unballoon. If either cannot cover them, nothing is charged and the caller stops the
 * partition, whose retouched pages are punched again (hv_memory_release_retouched).
 * Pages past visible are punched: nothing of the guest's lives there.
 * So resident <= assigned holds at every reconcile, and between two of them a guest can
 * hold no more than what its VPs touch in HV_MEMORY_RECONCILE_MS (the documented slack,
 * HV_MEMORY_RESIDENT_SLACK_BYTES, measured by tests/integration/test_dynamic_memory.py
 * with a guest that stores to every ballooned page as fast as it can).
 *
 * Visible RAM never shrinks: memory is taken back by the balloon only. Engines map
 * [0, visible) and pick up a hot-add at the guest's first touch of the new range or at
 * their next dispatch (hv-engine-unicorn.c). Main thread only: no lock is taken, and
 * visible_bytes is atomic for the LP threads that read it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-memory.h"
#include "hv.h"

static bool bit_test(const uint64_t *map, uint64_t bit)
{
        return map && (map[bit / 64] >> (bit % 64)) & 1;
}

static void bit_set(uint64_t *map, uint64_t bit)
{
        map[bit / 64] |= 1ull << (bit % 64);
}

static void bit_clear(uint64_t *map, uint64_t bit)
{
        map[bit / 64] &= ~(1ull << (bit % 64));
}

static uint64_t maximum_pages(const HvPartition *p)
{
        return p->maximum_bytes / HV_PAGE_SIZE;
}

static uint64_t visible_pages(const HvPartition *p)
{
        return atomic_load(&p->visible_bytes) / HV_PAGE_SIZE;
}

void hv_memory_classify(uint64_t n_visible_pages, const uint64_t *ballooned, bool to_balloon,
                        const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts, HvPageTally *ret_tally)
{
        /* Pages seen so far in this request; key pfn + 1 (pfn < visible, so no wrap). */
        g_autoptr(GHashTable) seen = g_hash_table_new(g_direct_hash, NULL);
        HvPageTally tally = {0};

        for (size_t i = 0; i < n; i++) {
                uint64_t pfn = pfns[i];
                HvPageVerdict verdict;

                if (pfn >= n_visible_pages) {
                        verdict = HV_PAGE_OUTSIDE_RAM;
                        tally.outside_ram++;
                } else if (!g_hash_table_add(seen, (gpointer)(uintptr_t)(pfn + 1))) {
                        verdict = HV_PAGE_DUPLICATE;
                        tally.duplicate++;
                } else if (bit_test(ballooned, pfn) == to_balloon) {
                        verdict = HV_PAGE_WRONG_STATE;
                        tally.wrong_state++;
                } else {
                        verdict = HV_PAGE_ACCEPTED;
                        tally.accepted++;
                }
                ret_verdicts[i] = verdict;
        }
        *ret_tally = tally;
}

static void set_error(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void set_error(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
}

/* Charges the pool and the partition's quota, or names the figures of the one that
 * cannot cover `bytes` (and charges neither). */
static int charge_pool(HvPartition *p, const char *what, uint64_t bytes, char **ret_error)
{
        HvPool *pool = &p->hv->pool;
        HvQuota *quota = p->quota;
        int r = hv_pool_charge(pool, bytes);

        if (r < 0) {
                set_error(ret_error,
                          "%s (%" G_GUINT64_FORMAT " bytes) exceeds the pool's available %" G_GUINT64_FORMAT
                          " bytes (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " used)",
                          what, bytes, hv_pool_available(pool), pool->used_bytes, pool->total_bytes);
                return r;
        }
        if (quota &&
            bytes > quota->memory_limit_bytes - MIN(quota->memory_used_bytes, quota->memory_limit_bytes)) {
                (void)hv_pool_credit(pool, bytes);
                set_error(ret_error,
                          "%s (%" G_GUINT64_FORMAT
                          " bytes) exceeds the connection's memory limit of %" G_GUINT64_FORMAT
                          " bytes (%" G_GUINT64_FORMAT " held; hvd --connection-memory)",
                          what, bytes, quota->memory_limit_bytes, quota->memory_used_bytes);
                return -EDQUOT;
        }
        if (quota)
                quota->memory_used_bytes += bytes;
        return 0;
}

static void credit_pool(HvPartition *p, uint64_t bytes)
{
        int r = hv_pool_credit(&p->hv->pool, bytes);

        g_assert(r == 0); /* the pages were part of assigned, which the pool was charged for */
        if (p->quota)
                p->quota->memory_used_bytes -= MIN(bytes, p->quota->memory_used_bytes);
}

int hv_memory_hot_add(HvPartition *p, uint64_t bytes, char **ret_error)
{
        uint64_t visible = atomic_load(&p->visible_bytes);
        uint64_t room = p->maximum_bytes - visible;
        int r;

        if (bytes == 0 || bytes > room) {
                set_error(ret_error,
                          "hot-add of %" G_GUINT64_FORMAT
                          " bytes: the partition has room for 1-%" G_GUINT64_FORMAT
                          " more (visible %" G_GUINT64_FORMAT " of maximum %" G_GUINT64_FORMAT ")",
                          bytes, room, visible, p->maximum_bytes);
                return bytes == 0 ? -EINVAL : -ENOSPC;
        }
        if (bytes % HV_HOT_ADD_UNIT != 0 && bytes != room) {
                set_error(ret_error,
                          "hot-add of %" G_GUINT64_FORMAT
                          " bytes: must be whole 2 MiB units, or exactly the %" G_GUINT64_FORMAT
                          " bytes up to the maximum",
                          bytes, room);
                return -EINVAL;
        }
        r = charge_pool(p, "hot-add", bytes, ret_error);
        if (r < 0)
                return r;
        p->assigned_bytes += bytes;
        p->hot_added_bytes += bytes;
        atomic_store_explicit(&p->visible_bytes, visible + bytes, memory_order_release);
        return 0;
}

static int compare_pfns(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

/* Gives the pages' host memory back, one fallocate per run of consecutive pages. A
 * failure leaves those pages resident (reported); their accounting stands, since the
 * guest gave them up either way. */
static void punch_pages(HvPartition *p, uint64_t *pfns, size_t n)
{
        qsort(pfns, n, sizeof(*pfns), compare_pfns);
        for (size_t i = 0; i < n;) {
                size_t j = i + 1;

                while (j < n && pfns[j] == pfns[j - 1] + 1)
                        j++;
                if (fallocate(p->ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              (off_t)(pfns[i] * HV_PAGE_SIZE), (off_t)((j - i) * HV_PAGE_SIZE)) < 0)
                        g_warning("partition %" G_GUINT64_FORMAT
                                  " (%s): cannot release %zu pages at pfn %" G_GUINT64_FORMAT ": %s",
                                  p->id, p->name, j - i, pfns[i], g_strerror(errno));
                i = j;
        }
}

static int check_request(size_t n, char **ret_error)
{
        if (n > HV_MEMORY_PAGES_MAX) {
                set_error(ret_error, "%zu pages in one request; the limit is %u", n, HV_MEMORY_PAGES_MAX);
                return -E2BIG;
        }
        return 0;
}

int hv_memory_balloon(HvPartition *p, const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts,
                      HvPageTally *ret_tally, char **ret_error)
{
        g_autofree uint64_t *accepted = NULL;
        HvPageTally tally;
        size_t n_accepted = 0;
        int r;

        r = check_request(n, ret_error);
        if (r < 0)
                return r;
        hv_memory_classify(visible_pages(p), p->ballooned, true, pfns, n, ret_verdicts, &tally);
        if (tally.accepted > 0 && !p->ballooned)
                p->ballooned = g_new0(uint64_t, (maximum_pages(p) + 63) / 64);
        accepted = g_new(uint64_t, tally.accepted ? tally.accepted : 1);
        for (size_t i = 0; i < n; i++)
                if (ret_verdicts[i] == HV_PAGE_ACCEPTED) {
                        bit_set(p->ballooned, pfns[i]);
                        accepted[n_accepted++] = pfns[i];
                }
        punch_pages(p, accepted, n_accepted);
        credit_pool(p, n_accepted * HV_PAGE_SIZE);
        p->ballooned_pages += n_accepted;
        p->assigned_bytes -= n_accepted * HV_PAGE_SIZE;
        p->refused_pages += n - n_accepted;
        *ret_tally = tally;
        return 0;
}

int hv_memory_unballoon(HvPartition *p, const uint64_t *pfns, size_t n, HvPageVerdict *ret_verdicts,
                        HvPageTally *ret_tally, char **ret_error)
{
        g_autofree char *what = NULL;
        HvPageTally tally;
        uint64_t bytes;
        int r;

        r = check_request(n, ret_error);
        if (r < 0)
                return r;
        hv_memory_classify(visible_pages(p), p->ballooned, false, pfns, n, ret_verdicts, &tally);
        bytes = (uint64_t)tally.accepted * HV_PAGE_SIZE;
        what = g_strdup_printf("unballoon of %u pages", tally.accepted);
        r = charge_pool(p, what, bytes, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (ret_verdicts[i] == HV_PAGE_ACCEPTED)
                        bit_clear(p->ballooned, pfns[i]);
        p->ballooned_pages -= tally.accepted;
        p->assigned_bytes += bytes;
        p->refused_pages += n - tally.accepted;
        *ret_tally = tally;
        return 0;
}

/* Pages per mincore call: 16 MiB of guest RAM, a 4 KiB vector. */
#define RECONCILE_CHUNK_PAGES 4096u

static bool chunk_has_ballooned(const HvPartition *p, uint64_t first, uint64_t n)
{
        for (uint64_t w = first / 64; w < (first + n + 63) / 64; w++)
                if (p->ballooned[w])
                        return true;
        return false;
}

/* The ballooned pages of [0, visible) that are resident again, in order. */
static GArray *find_retouched(HvPartition *p)
{
        GArray *found = g_array_new(FALSE, FALSE, sizeof(uint64_t));
        uint64_t n_visible = visible_pages(p);
        unsigned char vec[RECONCILE_CHUNK_PAGES];

        if (!p->ballooned)
                return found;
        for (uint64_t first = 0; first < n_visible; first += RECONCILE_CHUNK_PAGES) {
                uint64_t n = MIN(RECONCILE_CHUNK_PAGES, n_visible - first);

                if (!chunk_has_ballooned(p, first, n))
                        continue;
                if (mincore(p->ram + first * HV_PAGE_SIZE, n * HV_PAGE_SIZE, vec) < 0) {
                        g_warning("partition %" G_GUINT64_FORMAT " (%s): mincore: %s", p->id, p->name,
                                  g_strerror(errno));
                        continue;
                }
                for (uint64_t i = 0; i < n; i++)
                        if ((vec[i] & 1) && bit_test(p->ballooned, first + i)) {
                                uint64_t pfn = first + i;

                                g_array_append_val(found, pfn);
                        }
        }
        return found;
}

/* Pages past visible RAM hold nothing of the guest's: anything resident there (the
 * worker's mapping covers the whole memfd) is punched. */
static void release_past_visible(HvPartition *p)
{
        uint64_t visible = atomic_load(&p->visible_bytes);
        off_t data;

        if (visible >= p->maximum_bytes)
                return;
        data = lseek(p->ram_fd, (off_t)visible, SEEK_DATA);
        if (data < 0 || (uint64_t)data >= p->maximum_bytes)
                return;
        if (fallocate(p->ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)visible,
                      (off_t)(p->maximum_bytes - visible)) < 0)
                g_warning("partition %" G_GUINT64_FORMAT " (%s): cannot release memory past visible: %s",
                          p->id, p->name, g_strerror(errno));
}

int hv_memory_reconcile(HvPartition *p, uint64_t *ret_pages, char **ret_error)
{
        g_autoptr(GArray) found = NULL;
        g_autofree char *what = NULL;
        uint64_t bytes;
        int r;

        *ret_pages = 0;
        if (hv_partition_resident_bytes(p) <= p->assigned_bytes)
                return 0;
        release_past_visible(p);
        found = find_retouched(p);
        if (found->len == 0)
                return 0;
        bytes = (uint64_t)found->len * HV_PAGE_SIZE;
        what = g_strdup_printf("the guest touched %u ballooned pages again; charging them back", found->len);
        r = charge_pool(p, what, bytes, ret_error);
        if (r < 0)
                return r;
        for (guint i = 0; i < found->len; i++)
                bit_clear(p->ballooned, g_array_index(found, uint64_t, i));
        p->ballooned_pages -= found->len;
        p->assigned_bytes += bytes;
        p->retouched_pages += found->len;
        *ret_pages = found->len;
        return 0;
}

void hv_memory_release_retouched(HvPartition *p)
{
        g_autoptr(GArray) found = find_retouched(p);

        release_past_visible(p);
        punch_pages(p, (uint64_t *)(void *)found->data, found->len);
}
