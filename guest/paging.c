/* Paging to the synthetic disk: a pager holds a region of pages that stay resident
 * while the allocator has room and move to disk slots when it has none. */
#include "guest.h"

/*
 * Design note.
 *
 * A pager is a table with one entry per page of its region: the frame's GPA with
 * GUEST_PAGER_RESIDENT, or the disk slot the page lives in (shifted) with
 * GUEST_PAGER_ON_DISK, or 0 (never added); and a bitmap of the slots of its share of
 * the disk (capacity slots from first_slot). Both are allocated at init (about 8 bytes
 * per page of capacity, contiguous) and never paged; so is one spare "bounce" frame.
 *
 * When a frame is needed (a new page, or a page coming back) and the allocator has
 * none, the pager evicts: it picks up to GUEST_PAGER_BATCH resident pages (below),
 * gives each the lowest free slot, writes them with all writes in flight at once, and
 * frees each frame whose write completed. A frame is freed only after its write
 * succeeded, so a failed or lost write loses nothing. A page coming back is read
 * together with the pages after it that are on disk too (up to a batch), since the
 * callers sweep in order; its slot is then free again.
 *
 * Which pages: second chance (CLOCK). guest_pager_get sets a resident page's
 * GUEST_PAGER_REFERENCED bit; a page added or read ahead starts without it. The hand
 * goes round the table: a referenced page loses its bit and stays, an unreferenced one
 * is picked. So pages used since the hand last passed stay while any other is resident,
 * and a trim takes the cold pages of a hot/cold workload before any hot one. It was
 * random replacement before, and every trim took hot pages in proportion to their
 * share: bench/dm_goal_seeking.py (192 MiB soak, 96 MiB hot, two runs each) measured
 * the goal-seeking guest 24-25 % slower than its twin with random eviction, freeing
 * 34-36 % of its memory, and 9.5-12.3 % slower with CLOCK, freeing 50-51 %. The price
 * is a sweep over more pages than fit (memsoak, every page hot, 96 MiB in 64 MiB):
 * CLOCK evicts in the order the sweep comes back, as FIFO does, so every page misses
 * (96 MiB read per pass against 67 MiB at random, 0.38 passes/s against 0.53).
 *
 * The disk's size is the host's (the offer does not say it): slots are used lowest
 * first, and the first slot whose write fails becomes slot_limit, so paging goes on
 * within the slots that work. When every slot below the limit is in use and no frame
 * is free, a page comes back through the bounce frame: it is read into the bounce
 * frame, a victim is written to the slot it left, and the victim's frame becomes the
 * bounce frame. So a full disk stops growth (the caller's add fails) but never access.
 *
 * The balloon. While a balloon request waits for pages (guest_dm_balloon_wanted_pages,
 * dm.c), the free frames are the balloon's: every call into a pager first pages out a
 * batch if free frames fall short of what the balloon waits for, and a pager that needs
 * a frame evicts before it takes one of them (falling back to one only when it cannot
 * evict, so the workload goes on and the balloon closes short at its deadline). The
 * pages go by the clock like any eviction; the balloon takes the frames at the next
 * VMBus poll (a storage wait polls too). So a guest whose memory is all in use gives
 * the host what it asks for by paging, as a guest kernel would reclaim for a balloon
 * driver, and its pressure rises above 100 instead of the host's request failing.
 *
 * Accounting (what Dynamic Memory reports): page_out_total and page_in_total count
 * pages moved; pages on disk count as committed (guest_memory_committed_bytes), since
 * the guest still needs them: that is what drives pressure above 100 %.
 *
 * Failures. No storage channel: no eviction, the caller sees -ENOMEM as it would
 * without paging. A disk that refuses slot 0 turns paging off for this pager with one
 * line. A page-in that fails returns -EIO and leaves the page on disk. VP 0 only: the
 * storage waits poll the VMBus.
 */

#define GUEST_PAGER_RESIDENT UINT64_C(1)
#define GUEST_PAGER_ON_DISK UINT64_C(2)
#define GUEST_PAGER_REFERENCED UINT64_C(4) /* resident entries only: used since the hand passed */
#define GUEST_PAGER_SLOT_SHIFT 2
#define GUEST_PAGER_BATCH 8
#define GUEST_PAGER_FRAME_ATTEMPTS 4
#define GUEST_PAGER_BITS_PER_WORD 64

struct guest_paging_totals {
        uint64_t page_in;
        uint64_t page_out;
        uint64_t on_disk;
        uint64_t resident; /* pages of every pager in frames */
        bool announced;
};

/* Totals over every pager, for the status report. */
static struct guest_paging_totals guest_paging;

uint64_t guest_paging_in_total(void)
{
        return guest_paging.page_in;
}

uint64_t guest_paging_out_total(void)
{
        return guest_paging.page_out;
}

uint64_t guest_paging_out_bytes(void)
{
        return guest_paging.on_disk * GUEST_PAGE_SIZE;
}

bool guest_paging_can_reclaim(void)
{
        return guest_paging.resident > 0 && guest_storage_ready();
}

uint64_t guest_memory_committed_bytes(void)
{
        return guest_page_committed_bytes() + guest_paging_out_bytes();
}

static uint64_t guest_pager_map_words(uint64_t capacity)
{
        return (capacity + GUEST_PAGER_BITS_PER_WORD - 1) / GUEST_PAGER_BITS_PER_WORD;
}

int guest_pager_init(struct guest_pager *pager, uint64_t capacity)
{
        uint64_t bytes, table_pages, gpa, bounce = 0;
        int r;

        if (capacity == 0 || capacity > UINT64_MAX / (2 * sizeof(uint64_t)))
                return -EINVAL;
        bytes = (capacity + guest_pager_map_words(capacity)) * sizeof(uint64_t);
        table_pages = (bytes + GUEST_PAGE_SIZE - 1) / GUEST_PAGE_SIZE;
        r = guest_page_alloc_contig(table_pages, &gpa);
        if (r < 0)
                return r;
        memset((void *)(uintptr_t)gpa, 0, table_pages * GUEST_PAGE_SIZE);
        (void)guest_page_alloc(&bounce); /* without one, a full disk stops access too */
        *pager = (struct guest_pager){
                .table = (uint64_t *)(uintptr_t)gpa,
                .slot_map = (uint64_t *)(uintptr_t)gpa + capacity,
                .table_pages = table_pages,
                .capacity = capacity,
                .slot_limit = capacity,
                .bounce_gpa = bounce,
        };
        return 0;
}

static bool guest_pager_resident(uint64_t entry)
{
        return entry & GUEST_PAGER_RESIDENT;
}

static uint64_t guest_pager_frame_of(uint64_t entry)
{
        return entry & ~(GUEST_PAGE_SIZE - 1);
}

static uint64_t guest_pager_slot_of(uint64_t entry)
{
        return entry >> GUEST_PAGER_SLOT_SHIFT;
}

static uint64_t guest_pager_on_disk(uint64_t slot)
{
        return slot << GUEST_PAGER_SLOT_SHIFT | GUEST_PAGER_ON_DISK;
}

/* The lowest free slot below the limit; slot_hint is the lowest word that may have
 * one, so a run of allocations costs O(1) words each. */
static int guest_pager_slot_alloc(struct guest_pager *pager, uint64_t *ret_slot)
{
        uint64_t words = guest_pager_map_words(pager->slot_limit);

        for (uint64_t w = pager->slot_hint; w < words; w++) {
                uint64_t free_bits = ~pager->slot_map[w], slot;

                if (!free_bits)
                        continue;
                slot = w * GUEST_PAGER_BITS_PER_WORD + (uint64_t)__builtin_ctzll(free_bits);
                if (slot >= pager->slot_limit)
                        break;
                pager->slot_map[w] |= UINT64_C(1) << (slot % GUEST_PAGER_BITS_PER_WORD);
                pager->slot_hint = w;
                *ret_slot = slot;
                return 0;
        }
        return -ENOSPC;
}

static void guest_pager_slot_free(struct guest_pager *pager, uint64_t slot)
{
        uint64_t w = slot / GUEST_PAGER_BITS_PER_WORD;

        pager->slot_map[w] &= ~(UINT64_C(1) << (slot % GUEST_PAGER_BITS_PER_WORD));
        if (w < pager->slot_hint)
                pager->slot_hint = w;
}

/* A write to slot failed while the disk is still there: it ends before that slot. */
static void guest_pager_slot_refused(struct guest_pager *pager, uint64_t slot, int status)
{
        guest_pager_slot_free(pager, slot);
        if (!guest_storage_ready() || slot >= pager->slot_limit)
                return;
        pager->slot_limit = slot;
        guest_printf("paging: the disk refused slot %lu (error %d): paging within %lu slots\n",
                     pager->first_slot + slot, status, slot);
}

static bool guest_pager_can_page(struct guest_pager *pager)
{
        if (pager->paging_off || !guest_storage_ready() || pager->n_pages == 0)
                return false;
        if (!pager->has_slots) {
                if (guest_storage_reserve_slots(pager->capacity, &pager->first_slot) < 0)
                        return false;
                pager->has_slots = true;
        }
        if (!guest_paging.announced) {
                guest_paging.announced = true;
                guest_printf(
                        "paging: out of free pages at committed=%lu visible=%lu: paging to the synthetic "
                        "disk\n",
                        guest_memory_committed_bytes(), guest_page_visible_bytes());
        }
        return true;
}

/* Up to max resident pages outside [keep_first, keep_end), unreferenced ones as the
 * hand reaches them, clearing the bits it passes. A second round finds a victim when
 * every page was referenced; it stops once it has one, so none is picked twice. */
static unsigned guest_pager_pick(struct guest_pager *pager, uint64_t keep_first, uint64_t keep_end,
                                 uint64_t *victims, unsigned max)
{
        unsigned n = 0;

        for (uint64_t k = 0; k < 2 * pager->n_pages && n < max; k++) {
                uint64_t i = pager->hand;

                if (k == pager->n_pages && n > 0)
                        break;
                pager->hand = i + 1 < pager->n_pages ? i + 1 : 0;
                if ((i >= keep_first && i < keep_end) || !guest_pager_resident(pager->table[i]))
                        continue;
                if (pager->table[i] & GUEST_PAGER_REFERENCED)
                        pager->table[i] &= ~GUEST_PAGER_REFERENCED;
                else
                        victims[n++] = i;
        }
        return n;
}

static void guest_pager_count_out(struct guest_pager *pager)
{
        pager->resident_pages--;
        guest_paging.resident--;
        pager->paged_out_pages++;
        guest_paging.page_out++;
        guest_paging.on_disk++;
}

static void guest_pager_count_in(struct guest_pager *pager)
{
        pager->resident_pages++;
        guest_paging.resident++;
        pager->paged_out_pages--;
        guest_paging.page_in++;
        guest_paging.on_disk--;
}

/* Writes up to a batch of resident pages outside [keep_first, keep_end) to free slots
 * and frees their frames. 0 if at least one frame was freed. */
static int guest_pager_evict(struct guest_pager *pager, uint64_t keep_first, uint64_t keep_end)
{
        uint64_t victims[GUEST_PAGER_BATCH], slots[GUEST_PAGER_BATCH];
        uint32_t handles[GUEST_PAGER_BATCH];
        unsigned n, submitted = 0, written = 0;
        int r = 0;

        if (!guest_pager_can_page(pager))
                return -ENOMEM;
        n = guest_pager_pick(pager, keep_first, keep_end, victims, GUEST_PAGER_BATCH);
        for (; submitted < n; submitted++) {
                if (guest_pager_slot_alloc(pager, &slots[submitted]) < 0)
                        break;
                r = guest_storage_submit(true, pager->first_slot + slots[submitted],
                                         guest_pager_frame_of(pager->table[victims[submitted]]),
                                         &handles[submitted]);
                if (r < 0) {
                        guest_pager_slot_free(pager, slots[submitted]);
                        break;
                }
        }
        if (submitted == 0)
                return -ENOSPC;
        for (unsigned j = 0; j < submitted; j++) {
                uint64_t *entry = &pager->table[victims[j]];
                int status = guest_storage_wait(handles[j]);

                if (status < 0) {
                        guest_pager_slot_refused(pager, slots[j], status);
                        r = status;
                        continue;
                }
                guest_page_free(guest_pager_frame_of(*entry));
                *entry = guest_pager_on_disk(slots[j]);
                guest_pager_count_out(pager);
                written++;
        }
        if (written > 0)
                return 0;
        if (pager->slot_limit == 0 && !pager->paging_off) {
                pager->paging_off = true;
                guest_printf("paging: page-out failed (error %d): paging off at committed=%lu\n", r,
                             guest_memory_committed_bytes());
        }
        return r < 0 ? r : -EIO;
}

/* Every free frame is owed to a balloon request that waits for pages. */
static bool guest_pager_frames_owed(void)
{
        uint64_t wanted = guest_dm_balloon_wanted_pages();

        return wanted > 0 && guest_page_free_bytes() / GUEST_PAGE_SIZE <= wanted;
}

/* Before a pager's work: a batch out to the disk if the balloon waits for more pages
 * than are free. */
static void guest_pager_trim(struct guest_pager *pager, uint64_t keep_first, uint64_t keep_end)
{
        if (guest_pager_frames_owed())
                (void)guest_pager_evict(pager, keep_first, keep_end);
}

/* A free frame, evicting pages outside [keep_first, keep_end) when there is none, or
 * when the balloon is owed the free ones. A balloon request served while the writes
 * complete may take the frames just freed, so a few rounds are allowed. */
static int guest_pager_frame(struct guest_pager *pager, uint64_t keep_first, uint64_t keep_end,
                             uint64_t *ret_gpa)
{
        for (int attempt = 0;; attempt++) {
                if (!guest_pager_frames_owed() && guest_page_alloc(ret_gpa) == 0)
                        return 0;
                if (attempt == GUEST_PAGER_FRAME_ATTEMPTS ||
                    guest_pager_evict(pager, keep_first, keep_end) < 0)
                        return guest_page_alloc(ret_gpa) == 0 ? 0 : -ENOMEM;
        }
}

int guest_pager_add(struct guest_pager *pager, uint64_t *ret_gpa)
{
        uint64_t gpa;
        int r;

        if (pager->n_pages == pager->capacity)
                return -ENOSPC;
        guest_pager_trim(pager, pager->n_pages, pager->n_pages + 1);
        r = guest_pager_frame(pager, pager->n_pages, pager->n_pages + 1, &gpa);
        if (r < 0)
                return r;
        pager->table[pager->n_pages++] = gpa | GUEST_PAGER_RESIDENT;
        pager->resident_pages++;
        guest_paging.resident++;
        *ret_gpa = gpa;
        return 0;
}

/* No free frame and no free slot: bring index back through the bounce frame and send
 * a victim to the slot it leaves; the victim's frame is the next bounce frame. */
static int guest_pager_swap_in(struct guest_pager *pager, uint64_t index)
{
        uint64_t slot = guest_pager_slot_of(pager->table[index]), victim, victim_gpa;
        uint32_t handle;
        int r;

        if (!pager->bounce_gpa && guest_page_alloc(&pager->bounce_gpa) < 0)
                return -ENOMEM;
        r = guest_storage_submit(false, pager->first_slot + slot, pager->bounce_gpa, &handle);
        if (r == 0)
                r = guest_storage_wait(handle);
        if (r < 0)
                return r;
        pager->table[index] = pager->bounce_gpa | GUEST_PAGER_RESIDENT;
        pager->bounce_gpa = 0;
        guest_pager_count_in(pager);
        if (guest_pager_pick(pager, index, index + 1, &victim, 1) == 0) {
                guest_pager_slot_free(pager, slot);
                return 0;
        }
        victim_gpa = guest_pager_frame_of(pager->table[victim]);
        r = guest_storage_submit(true, pager->first_slot + slot, victim_gpa, &handle);
        if (r == 0)
                r = guest_storage_wait(handle);
        if (r < 0) {
                guest_pager_slot_refused(pager, slot, r);
                return 0; /* index is resident; the next swap finds a bounce frame or fails */
        }
        pager->table[victim] = guest_pager_on_disk(slot);
        pager->bounce_gpa = victim_gpa;
        guest_pager_count_out(pager);
        return 0;
}

/* Reads [index, index + n) back from disk into fresh frames, all reads in flight at
 * once. Returns the status of the page at index. */
static int guest_pager_read(struct guest_pager *pager, uint64_t index, unsigned n)
{
        uint64_t gpas[GUEST_PAGER_BATCH];
        uint32_t handles[GUEST_PAGER_BATCH];
        unsigned framed = 0, submitted = 0;
        int first_status = -EIO;

        for (; framed < n; framed++)
                if (guest_pager_frame(pager, index, index + n, &gpas[framed]) < 0)
                        break;
        if (framed == 0)
                return guest_pager_swap_in(pager, index);
        for (; submitted < framed; submitted++)
                if (guest_storage_submit(
                            false, pager->first_slot + guest_pager_slot_of(pager->table[index + submitted]),
                            gpas[submitted], &handles[submitted]) < 0)
                        break;
        for (unsigned j = submitted; j < framed; j++)
                guest_page_free(gpas[j]);
        for (unsigned j = 0; j < submitted; j++) {
                uint64_t *entry = &pager->table[index + j];
                int status = guest_storage_wait(handles[j]);

                if (j == 0)
                        first_status = status;
                if (status < 0) {
                        guest_page_free(gpas[j]);
                        continue;
                }
                guest_pager_slot_free(pager, guest_pager_slot_of(*entry));
                *entry = gpas[j] | GUEST_PAGER_RESIDENT;
                guest_pager_count_in(pager);
        }
        return first_status;
}

int guest_pager_get(struct guest_pager *pager, uint64_t index, uint64_t *ret_gpa)
{
        unsigned n = 1;
        int r;

        if (index >= pager->n_pages)
                return -EINVAL;
        guest_pager_trim(pager, index, index + GUEST_PAGER_BATCH);
        if (!guest_pager_resident(pager->table[index])) {
                if (!guest_storage_ready())
                        return -EIO;
                while (n < GUEST_PAGER_BATCH && index + n < pager->n_pages &&
                       !guest_pager_resident(pager->table[index + n]))
                        n++;
                r = guest_pager_read(pager, index, n);
                if (r < 0)
                        return r;
        }
        pager->table[index] |= GUEST_PAGER_REFERENCED;
        *ret_gpa = guest_pager_frame_of(pager->table[index]);
        return 0;
}

/* Frees every frame and forgets the pages on disk, then the table. */
void guest_pager_release(struct guest_pager *pager)
{
        for (uint64_t i = 0; i < pager->n_pages; i++) {
                uint64_t entry = pager->table[i];

                if (guest_pager_resident(entry)) {
                        guest_page_free(guest_pager_frame_of(entry));
                        guest_paging.resident--;
                } else {
                        guest_paging.on_disk--;
                }
        }
        if (pager->bounce_gpa)
                guest_page_free(pager->bounce_gpa);
        guest_page_free_contig((uint64_t)(uintptr_t)pager->table, pager->table_pages);
        *pager = (struct guest_pager){0};
}
