/* The guest's physical page allocator: a bitmap over guest-physical memory with a
 * next-fit rotor, the accounting Dynamic Memory reports, hot-add and balloon hooks. */
#include "guest.h"

/*
 * Design note.
 *
 * Layout. [0, first_pfn) is reserved: the null page, the boot info, the boot stacks,
 * the kernel image up to _end, and the two bitmaps placed right after _end. The
 * bitmaps cover every page up to maximum_bytes (one bit each), so hot-added memory
 * needs no reallocation:
 *   used[]  — bit set: the page is not free (reserved, absent, allocated or taken);
 *   taken[] — bit set: the page was taken out by the balloon (guest_page_take).
 * Present memory is [first_pfn, visible) at boot plus every range added later; it is
 * kept as a short list of page ranges, merged when they touch.
 *
 * Accounting, in pages, each figure a multiple of GUEST_PAGE_SIZE when reported:
 *   visible   = reserved + present
 *   committed = reserved + allocated   (the low area, image and bitmaps count as
 *                                       committed, as a kernel's own memory would)
 *   free      = present pages neither allocated nor taken
 *   taken     = pages given to the balloon: neither committed nor free
 * so visible = committed + free + taken at all times.
 *
 * Guarantees. A page is handed out at most once until it is freed; free and give-back
 * refuse pages that are not in the matching state, so a bad caller cannot corrupt the
 * accounting. Single-page allocation is next fit: the search starts at the bitmap word
 * of the previous allocation, so a run of allocations costs O(1) words each rather
 * than a scan from page 0.
 *
 * Locking. One spinlock guards the bitmaps, the range list and the counters; the
 * *_locked helpers assert that it is held. Readers of a single counter do not take
 * it (an aligned 64-bit load is atomic). Under the Unicorn engine the lock does not
 * exclude VPs on other host threads (see spinlock.c); today only VP 0 allocates.
 */

#define GUEST_PAGE_MAX_RANGES 64
#define GUEST_BITS_PER_WORD 64

struct guest_page_range {
        uint64_t first_pfn;
        uint64_t end_pfn; /* exclusive */
};

struct guest_page_allocator {
        struct guest_spinlock lock;
        uint64_t *used;
        uint64_t *taken;
        uint64_t n_words;
        uint64_t maximum_pfn; /* pages the bitmaps cover */
        uint64_t first_pfn;   /* first page that may ever be allocated */
        uint64_t hint_word;
        uint64_t reserved_pages;
        uint64_t present_pages;
        uint64_t allocated_pages;
        uint64_t free_pages;
        uint64_t taken_pages;
        struct guest_page_range ranges[GUEST_PAGE_MAX_RANGES];
        unsigned n_ranges;
};

/* One physical memory, one allocator. */
static struct guest_page_allocator guest_pages;

static inline bool guest_bit_test(const uint64_t *map, uint64_t pfn)
{
        return (map[pfn / GUEST_BITS_PER_WORD] >> (pfn % GUEST_BITS_PER_WORD)) & 1;
}

static inline void guest_bit_set(uint64_t *map, uint64_t pfn)
{
        map[pfn / GUEST_BITS_PER_WORD] |= 1ull << (pfn % GUEST_BITS_PER_WORD);
}

static inline void guest_bit_clear(uint64_t *map, uint64_t pfn)
{
        map[pfn / GUEST_BITS_PER_WORD] &= ~(1ull << (pfn % GUEST_BITS_PER_WORD));
}

/* Whole words at a time: page ranges are large and guest stores are slow. */
static void guest_bits_clear_range(uint64_t *map, uint64_t first, uint64_t end)
{
        while (first < end && first % GUEST_BITS_PER_WORD)
                guest_bit_clear(map, first++);
        while (end - first >= GUEST_BITS_PER_WORD) {
                map[first / GUEST_BITS_PER_WORD] = 0;
                first += GUEST_BITS_PER_WORD;
        }
        while (first < end)
                guest_bit_clear(map, first++);
}

uint64_t guest_page_bitmap_bytes(uint64_t maximum_bytes)
{
        uint64_t pages = maximum_bytes / GUEST_PAGE_SIZE;
        uint64_t words = (pages + GUEST_BITS_PER_WORD - 1) / GUEST_BITS_PER_WORD;
        uint64_t bytes = 2 * words * sizeof(uint64_t);

        return (bytes + GUEST_PAGE_SIZE - 1) & ~(GUEST_PAGE_SIZE - 1);
}

static bool guest_page_present_locked(const struct guest_page_allocator *a, uint64_t pfn)
{
        GUEST_ASSERT(guest_spin_held(&a->lock));
        for (unsigned i = 0; i < a->n_ranges; i++)
                if (pfn >= a->ranges[i].first_pfn && pfn < a->ranges[i].end_pfn)
                        return true;
        return false;
}

static bool guest_page_overlaps_locked(const struct guest_page_allocator *a, uint64_t first, uint64_t end)
{
        GUEST_ASSERT(guest_spin_held(&a->lock));
        if (first < a->first_pfn)
                return true;
        for (unsigned i = 0; i < a->n_ranges; i++)
                if (first < a->ranges[i].end_pfn && a->ranges[i].first_pfn < end)
                        return true;
        return false;
}

/* Adds [first, end) to the range list, merging with a range it touches. */
static int guest_page_range_insert_locked(struct guest_page_allocator *a, uint64_t first, uint64_t end)
{
        GUEST_ASSERT(guest_spin_held(&a->lock));
        for (unsigned i = 0; i < a->n_ranges; i++) {
                struct guest_page_range *r = &a->ranges[i];

                if (r->end_pfn == first) {
                        r->end_pfn = end;
                        return 0;
                }
                if (r->first_pfn == end) {
                        r->first_pfn = first;
                        return 0;
                }
        }
        if (a->n_ranges == GUEST_PAGE_MAX_RANGES)
                return -ENOMEM;
        a->ranges[a->n_ranges++] = (struct guest_page_range){first, end};
        return 0;
}

int guest_page_init(uint64_t first_free_gpa, uint64_t visible_bytes, uint64_t maximum_bytes)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t visible_pfn = visible_bytes / GUEST_PAGE_SIZE;
        uint64_t bitmap_bytes = guest_page_bitmap_bytes(maximum_bytes);
        int r;

        if (first_free_gpa % GUEST_PAGE_SIZE || visible_bytes > maximum_bytes)
                return -EINVAL;
        if (first_free_gpa + bitmap_bytes >= visible_bytes)
                return -ENOMEM;

        *a = (struct guest_page_allocator){0};
        a->maximum_pfn = maximum_bytes / GUEST_PAGE_SIZE;
        a->n_words = (a->maximum_pfn + GUEST_BITS_PER_WORD - 1) / GUEST_BITS_PER_WORD;
        a->used = (uint64_t *)(uintptr_t)first_free_gpa;
        a->taken = a->used + a->n_words;
        a->first_pfn = (first_free_gpa + bitmap_bytes) / GUEST_PAGE_SIZE;
        a->reserved_pages = a->first_pfn;
        memset(a->used, 0xff, a->n_words * sizeof(uint64_t));
        memset(a->taken, 0, a->n_words * sizeof(uint64_t));

        guest_spin_lock(&a->lock);
        r = guest_page_range_insert_locked(a, a->first_pfn, visible_pfn);
        if (r == 0) {
                guest_bits_clear_range(a->used, a->first_pfn, visible_pfn);
                a->present_pages = visible_pfn - a->first_pfn;
                a->free_pages = a->present_pages;
                a->hint_word = a->first_pfn / GUEST_BITS_PER_WORD;
        }
        guest_spin_unlock(&a->lock);
        return r;
}

/* Next fit from the rotor; free_pages > 0 guarantees a clear bit in some word. */
static uint64_t guest_page_find_free_locked(struct guest_page_allocator *a)
{
        uint64_t w = a->hint_word;

        GUEST_ASSERT(guest_spin_held(&a->lock));
        GUEST_ASSERT(a->free_pages > 0);
        for (uint64_t n = 0; n < a->n_words; n++, w++) {
                if (w == a->n_words)
                        w = 0;
                if (a->used[w] != ~0ull) {
                        a->hint_word = w;
                        return w * GUEST_BITS_PER_WORD + (uint64_t)__builtin_ctzll(~a->used[w]);
                }
        }
        guest_assert_failed("free page counted but not found", __FILE__, __LINE__);
}

int guest_page_alloc(uint64_t *ret_gpa)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t pfn;

        guest_spin_lock(&a->lock);
        if (a->free_pages == 0) {
                guest_spin_unlock(&a->lock);
                return -ENOMEM;
        }
        pfn = guest_page_find_free_locked(a);
        guest_bit_set(a->used, pfn);
        a->free_pages--;
        a->allocated_pages++;
        guest_spin_unlock(&a->lock);
        *ret_gpa = pfn * GUEST_PAGE_SIZE;
        return 0;
}

/* First fit from the rotor over runs of clear bits; for rare, small buffers. */
int guest_page_alloc_contig(uint64_t count, uint64_t *ret_gpa)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t start = 0, run = 0, pfn, scanned = 0;
        uint64_t limit = a->n_words * GUEST_BITS_PER_WORD;

        if (count == 0)
                return -EINVAL;
        guest_spin_lock(&a->lock);
        if (count > a->free_pages) {
                guest_spin_unlock(&a->lock);
                return -ENOMEM;
        }
        pfn = a->hint_word * GUEST_BITS_PER_WORD;
        while (run < count && scanned < limit + count) {
                if (pfn >= limit) { /* a run never wraps around the end */
                        pfn = 0;
                        run = 0;
                }
                if (pfn % GUEST_BITS_PER_WORD == 0 && a->used[pfn / GUEST_BITS_PER_WORD] == ~0ull) {
                        pfn += GUEST_BITS_PER_WORD;
                        scanned += GUEST_BITS_PER_WORD;
                        run = 0;
                        continue;
                }
                if (guest_bit_test(a->used, pfn)) {
                        run = 0;
                } else if (run++ == 0) {
                        start = pfn;
                }
                pfn++;
                scanned++;
        }
        if (run < count) {
                guest_spin_unlock(&a->lock);
                return -ENOMEM;
        }
        for (pfn = start; pfn < start + count; pfn++)
                guest_bit_set(a->used, pfn);
        a->free_pages -= count;
        a->allocated_pages += count;
        a->hint_word = (start + count) / GUEST_BITS_PER_WORD;
        if (a->hint_word >= a->n_words)
                a->hint_word = 0;
        guest_spin_unlock(&a->lock);
        *ret_gpa = start * GUEST_PAGE_SIZE;
        return 0;
}

static bool guest_page_is_allocated_locked(const struct guest_page_allocator *a, uint64_t pfn)
{
        return pfn < a->maximum_pfn && guest_page_present_locked(a, pfn) && guest_bit_test(a->used, pfn) &&
               !guest_bit_test(a->taken, pfn);
}

int guest_page_free_contig(uint64_t gpa, uint64_t count)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t first = gpa / GUEST_PAGE_SIZE;

        if (gpa % GUEST_PAGE_SIZE || count == 0 || first + count < first)
                return -EINVAL;
        guest_spin_lock(&a->lock);
        /* All or nothing: a bad page anywhere leaves every page as it was. */
        for (uint64_t pfn = first; pfn < first + count; pfn++) {
                if (!guest_page_is_allocated_locked(a, pfn)) {
                        guest_spin_unlock(&a->lock);
                        return -EINVAL;
                }
        }
        for (uint64_t pfn = first; pfn < first + count; pfn++)
                guest_bit_clear(a->used, pfn);
        a->allocated_pages -= count;
        a->free_pages += count;
        guest_spin_unlock(&a->lock);
        return 0;
}

int guest_page_free(uint64_t gpa)
{
        return guest_page_free_contig(gpa, 1);
}

/* For the balloon: takes up to count pages out of the guest and lists their frame
 * numbers; they stop counting as committed or free. Returns how many were taken. */
uint64_t guest_page_take(uint64_t count, uint64_t *ret_pfns)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t n;

        guest_spin_lock(&a->lock);
        for (n = 0; n < count && a->free_pages > 0; n++) {
                uint64_t pfn = guest_page_find_free_locked(a);

                guest_bit_set(a->used, pfn);
                guest_bit_set(a->taken, pfn);
                a->free_pages--;
                a->taken_pages++;
                ret_pfns[n] = pfn;
        }
        guest_spin_unlock(&a->lock);
        return n;
}

/* The balloon gives pages back. Pages that were not taken (or are listed twice) are
 * skipped; returns how many came back. */
uint64_t guest_page_give_back(const uint64_t *pfns, uint64_t count)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t accepted = 0;

        guest_spin_lock(&a->lock);
        for (uint64_t i = 0; i < count; i++) {
                uint64_t pfn = pfns[i];

                if (pfn >= a->maximum_pfn || !guest_bit_test(a->taken, pfn))
                        continue;
                guest_bit_clear(a->taken, pfn);
                guest_bit_clear(a->used, pfn);
                a->taken_pages--;
                a->free_pages++;
                accepted++;
        }
        guest_spin_unlock(&a->lock);
        return accepted;
}

/* Hot-add: [gpa, gpa + bytes) becomes free memory. It must be page aligned, below
 * maximum_bytes and not already present. */
int guest_page_add_range(uint64_t gpa, uint64_t bytes)
{
        struct guest_page_allocator *a = &guest_pages;
        uint64_t first = gpa / GUEST_PAGE_SIZE, end = (gpa + bytes) / GUEST_PAGE_SIZE;
        int r;

        if (gpa % GUEST_PAGE_SIZE || bytes % GUEST_PAGE_SIZE || bytes == 0 || gpa + bytes < gpa)
                return -EINVAL;
        if (end > a->maximum_pfn)
                return -ERANGE;
        guest_spin_lock(&a->lock);
        if (guest_page_overlaps_locked(a, first, end)) {
                guest_spin_unlock(&a->lock);
                return -EEXIST;
        }
        r = guest_page_range_insert_locked(a, first, end);
        if (r == 0) {
                guest_bits_clear_range(a->used, first, end);
                a->present_pages += end - first;
                a->free_pages += end - first;
        }
        guest_spin_unlock(&a->lock);
        return r;
}

static uint64_t guest_page_read(const uint64_t *counter)
{
        return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

uint64_t guest_page_committed_bytes(void)
{
        return (guest_page_read(&guest_pages.reserved_pages) +
                guest_page_read(&guest_pages.allocated_pages)) *
               GUEST_PAGE_SIZE;
}

uint64_t guest_page_free_bytes(void)
{
        return guest_page_read(&guest_pages.free_pages) * GUEST_PAGE_SIZE;
}

uint64_t guest_page_visible_bytes(void)
{
        return (guest_page_read(&guest_pages.reserved_pages) + guest_page_read(&guest_pages.present_pages)) *
               GUEST_PAGE_SIZE;
}

uint64_t guest_page_taken_bytes(void)
{
        return guest_page_read(&guest_pages.taken_pages) * GUEST_PAGE_SIZE;
}
