/* The `cache` workload: VP 0 grows a buffer cache toward cache_mb while memory is
 * plentiful and trims it on the low-memory notification, as SQL Server and .NET do;
 * the other VPs idle. */
#include "guest.h"
#include "hypercall.h"

/*
 * Growth: GUEST_CACHE_STEP_PAGES every GUEST_CACHE_TICK_MS, only while free memory
 * stays at least twice the low-memory threshold after the step (so growing never
 * itself raises the notification) and not within GUEST_CACHE_HOLD_OFF_NS of a trim
 * (so the cache and the balloon do not chase each other). Trim: each notification
 * frees the oldest GUEST_CACHE_TRIM_PERCENT % of the cache (at least a step), at
 * once, from the callback: memory the host is asking for is free by the time the
 * balloon looks again. Pages are kept in FIFO order through their first word.
 */

#define GUEST_CACHE_STEP_PAGES 1024 /* 4 MiB */
#define GUEST_CACHE_TICK_MS 100
#define GUEST_CACHE_TRIM_PERCENT 25
#define GUEST_CACHE_HOLD_OFF_NS (5 * GUEST_NS_PER_SEC)
#define GUEST_CACHE_REPORT_NS GUEST_NS_PER_SEC

struct guest_cache {
        uint64_t target_pages;
        uint64_t pages;
        uint64_t head_gpa; /* oldest; 0: empty (page 0 is never allocated) */
        uint64_t tail_gpa;
        uint64_t trimmed_bytes; /* in total */
        uint64_t trims;
        uint64_t last_trim_ns;
        uint64_t last_report_ns;
        uint64_t reported_pages;
        uint64_t reported_trimmed;
        bool reached;
};

struct guest_cache_page {
        uint64_t next_gpa;
        uint64_t serial; /* touched so the host really backs the page */
};

static struct guest_cache_page *guest_cache_page(uint64_t gpa)
{
        return (struct guest_cache_page *)(uintptr_t)gpa;
}

static void guest_cache_report(struct guest_cache *c)
{
        c->last_report_ns = guest_hv_reference_time();
        c->reported_pages = c->pages;
        c->reported_trimmed = c->trimmed_bytes;
        guest_printf("cache: size=%lu trimmed=%lu\n", c->pages * GUEST_PAGE_SIZE, c->trimmed_bytes);
}

static bool guest_cache_grow(struct guest_cache *c)
{
        uint64_t n = c->target_pages - c->pages, threshold = guest_dm_low_memory_threshold_bytes();

        if (n > GUEST_CACHE_STEP_PAGES)
                n = GUEST_CACHE_STEP_PAGES;
        if (n == 0 || guest_page_free_bytes() < 2 * threshold + n * GUEST_PAGE_SIZE)
                return false;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t gpa;
                struct guest_cache_page *page;

                if (guest_page_alloc(&gpa) < 0)
                        break;
                page = guest_cache_page(gpa);
                page->next_gpa = 0;
                page->serial = c->pages;
                if (c->tail_gpa)
                        guest_cache_page(c->tail_gpa)->next_gpa = gpa;
                else
                        c->head_gpa = gpa;
                c->tail_gpa = gpa;
                c->pages++;
        }
        return true;
}

static uint64_t guest_cache_trim(struct guest_cache *c, uint64_t n)
{
        uint64_t freed = 0;

        while (freed < n && c->head_gpa) {
                uint64_t gpa = c->head_gpa;

                c->head_gpa = guest_cache_page(gpa)->next_gpa;
                if (!c->head_gpa)
                        c->tail_gpa = 0;
                guest_page_free(gpa);
                c->pages--;
                freed++;
        }
        return freed;
}

static void guest_cache_on_low_memory(void *userdata, uint64_t free_bytes, uint64_t threshold_bytes)
{
        struct guest_cache *c = userdata;
        uint64_t n = c->pages * GUEST_CACHE_TRIM_PERCENT / 100, freed;

        if (c->pages == 0)
                return;
        if (n < GUEST_CACHE_STEP_PAGES)
                n = GUEST_CACHE_STEP_PAGES;
        freed = guest_cache_trim(c, n);
        c->trimmed_bytes += freed * GUEST_PAGE_SIZE;
        c->trims++;
        c->last_trim_ns = guest_hv_reference_time();
        c->reached = false;
        guest_printf("cache: low memory free=%lu threshold=%lu: trimming %lu\n", free_bytes, threshold_bytes,
                     freed * GUEST_PAGE_SIZE);
        guest_cache_report(c);
}

void guest_workload_cache_run(uint32_t vp, const struct guest_config *config)
{
        /* Static: the low-memory callback holds a pointer to it for the guest's life. */
        static struct guest_cache cache;
        struct guest_cache *c = &cache;

        if (vp != 0)
                guest_workload_idle_run(false, config->idle_period_ms);
        c->target_pages = config->cache_mb * GUEST_MIB / GUEST_PAGE_SIZE;
        if (guest_dm_low_memory_subscribe(guest_cache_on_low_memory, c) < 0)
                guest_printf("cache: cannot subscribe to the low-memory notification\n");
        guest_printf("cache: target=%lu low_memory_threshold=%lu\n", c->target_pages * GUEST_PAGE_SIZE,
                     guest_dm_low_memory_threshold_bytes());
        for (;;) {
                uint64_t now = guest_hv_reference_time();

                if (!c->trims || now - c->last_trim_ns >= GUEST_CACHE_HOLD_OFF_NS)
                        guest_cache_grow(c);
                if (!c->reached && c->pages == c->target_pages) {
                        c->reached = true;
                        guest_printf("cache: reached %lu\n", c->pages * GUEST_PAGE_SIZE);
                }
                if ((c->pages != c->reported_pages || c->trimmed_bytes != c->reported_trimmed) &&
                    now - c->last_report_ns >= GUEST_CACHE_REPORT_NS)
                        guest_cache_report(c);
                guest_sleep_ns(GUEST_CACHE_TICK_MS * GUEST_NS_PER_MS);
        }
}
