/* The `memsoak` workload: VP 0 grows its memory in steps up to a target, then keeps
 * every page it holds in use (or only its first memsoak_hot_mb, the rest left cold),
 * paging to the synthetic disk when the guest runs out of free pages; the other VPs
 * idle. Drives Dynamic Memory's pressure, and goal seeking's (a cold majority). */
#include "guest.h"
#include "hypercall.h"

#define GUEST_MEMSOAK_REPORT_PASSES 10
#define GUEST_MEMSOAK_REPORT_NS (2 * GUEST_NS_PER_SEC)
/* Fast passes (a small hot set, no pause) report at most this often. */
#define GUEST_MEMSOAK_REPORT_MIN_NS (250 * GUEST_NS_PER_MS)
#define GUEST_MEMSOAK_MAX_CORRUPTION_REPORTS 16
#define GUEST_MEMSOAK_POLL_PAGES 256
/* The pager's table may take at most this fraction of free memory at start. */
#define GUEST_MEMSOAK_TABLE_SHARE 16
#define GUEST_MEMSOAK_TICK_NS (2 * GUEST_NS_PER_MS)
#define GUEST_MEMSOAK_TRAILER_MAGIC UINT64_C(0x6d656d736f616b21) /* "memsoak!" */

/* Each soaked page carries its index and the last pass that touched it at both ends,
 * so a lost store, a misplaced page or a page that came back from disk incomplete or
 * as another page shows up as CORRUPTION. */
struct guest_memsoak_mark {
        uint64_t index; /* the trailer holds index ^ GUEST_MEMSOAK_TRAILER_MAGIC */
        uint64_t pass;
};

struct guest_memsoak {
        uint64_t target_pages;
        uint64_t step_pages;
        uint64_t step_ns;
        uint64_t hold_ns;
        uint64_t hot_pages; /* the passes rewrite pages [0, hot_pages) */
        uint64_t pause_ns;
        uint64_t hot_grow_ns; /* after this long at the target, every page is hot; 0: never */
        /* Pages from cold_from on were cold until the hot part grew: up to pass
         * cold_until_pass their marks may be from any earlier pass. */
        uint64_t cold_from;
        uint64_t cold_until_pass;
        struct guest_pager pager;
        uint64_t pass;
        uint64_t corruptions;
        uint64_t io_errors;
        uint64_t last_report_ns;
        uint64_t last_pass_ns;
        bool out_of_memory;
        bool reached;
};

static volatile struct guest_memsoak_mark *guest_memsoak_head(uint64_t gpa)
{
        return (volatile struct guest_memsoak_mark *)(uintptr_t)gpa;
}

static volatile struct guest_memsoak_mark *guest_memsoak_trailer(uint64_t gpa)
{
        return (volatile struct guest_memsoak_mark *)(uintptr_t)(gpa + GUEST_PAGE_SIZE -
                                                                 sizeof(struct guest_memsoak_mark));
}

static void guest_memsoak_mark(uint64_t gpa, uint64_t index, uint64_t pass)
{
        guest_memsoak_head(gpa)->index = index;
        guest_memsoak_head(gpa)->pass = pass;
        guest_memsoak_trailer(gpa)->index = index ^ GUEST_MEMSOAK_TRAILER_MAGIC;
        guest_memsoak_trailer(gpa)->pass = pass;
}

/* VMBus and host requests between batches of pages: a pass may take seconds. */
static void guest_memsoak_service(uint64_t done)
{
        if (done % GUEST_MEMSOAK_POLL_PAGES == 0) {
                guest_vmbus_poll();
                guest_check_host_request();
        }
}

/* Allocates and touches up to one step; prints the step line and what came of it. */
static void guest_memsoak_grow(struct guest_memsoak *m)
{
        uint64_t n = m->target_pages - m->pager.n_pages;

        if (n > m->step_pages)
                n = m->step_pages;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t gpa;

                if (guest_pager_add(&m->pager, &gpa) < 0) {
                        m->out_of_memory = true;
                        break;
                }
                guest_memsoak_mark(gpa, m->pager.n_pages - 1, m->pass);
                guest_memsoak_service(i + 1);
        }
        guest_printf("memsoak: committed=%lu touched=%lu\n", guest_memory_committed_bytes(),
                     m->pager.n_pages * GUEST_PAGE_SIZE);
        if (m->out_of_memory)
                guest_printf("memsoak: out of memory at committed=%lu\n", guest_memory_committed_bytes());
        else if (m->pager.n_pages == m->target_pages) {
                m->reached = true;
                guest_printf("memsoak: reached %lu\n", m->pager.n_pages * GUEST_PAGE_SIZE);
        }
}

static void guest_memsoak_check(struct guest_memsoak *m, uint64_t index, uint64_t gpa)
{
        volatile struct guest_memsoak_mark *head = guest_memsoak_head(gpa),
                                           *trailer = guest_memsoak_trailer(gpa);
        uint64_t h_index = head->index, h_pass = head->pass;
        uint64_t t_index = trailer->index ^ GUEST_MEMSOAK_TRAILER_MAGIC, t_pass = trailer->pass;

        if (h_index == index && t_index == index && h_pass == m->pass - 1 && t_pass == m->pass - 1)
                return;
        if (h_index == index && t_index == index && h_pass == t_pass && h_pass < m->pass &&
            index >= m->cold_from && m->pass <= m->cold_until_pass)
                return;
        if (m->corruptions++ < GUEST_MEMSOAK_MAX_CORRUPTION_REPORTS)
                guest_printf("memsoak: CORRUPTION page=%lu gpa=0x%lx index=%lu/%lu pass=%lu/%lu expected "
                             "pass=%lu\n",
                             index, gpa, h_index, t_index, h_pass, t_pass, m->pass - 1);
}

/* Reads then writes every hot page once (every page unless memsoak_hot_mb= says
 * fewer), bringing paged-out ones back; the cold ones stay where they are. */
static void guest_memsoak_touch_hot(struct guest_memsoak *m)
{
        uint64_t start = guest_hv_reference_time();
        uint64_t n = m->hot_pages < m->pager.n_pages ? m->hot_pages : m->pager.n_pages;

        m->pass++;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t gpa;
                int r = guest_pager_get(&m->pager, i, &gpa);

                if (r < 0) {
                        if (m->io_errors++ < GUEST_MEMSOAK_MAX_CORRUPTION_REPORTS)
                                guest_printf("memsoak: page %lu unreadable: error %d\n", i, r);
                } else {
                        guest_memsoak_check(m, i, gpa);
                        guest_memsoak_mark(gpa, i, m->pass);
                }
                guest_memsoak_service(i + 1);
        }
        m->last_pass_ns = guest_hv_reference_time() - start;
}

/* Paced (memsoak_rate_kb=): rewrites the pages in order, as many each millisecond as the
 * rate has made due, and prints its reference time and the pages written so far every
 * GUEST_MEMSOAK_TICK_NS, so the host sees how long the guest stood still
 * (bench/migration_vs_qemu.py). A guest slower than the rate writes as fast as it can. */
static __attribute__((noreturn)) void guest_memsoak_paced(struct guest_memsoak *m, uint64_t rate_kb)
{
        uint64_t start = guest_hv_reference_time(), next_tick = start, done = 0, cursor = 0;

        for (;;) {
                uint64_t now = guest_hv_reference_time();
                uint64_t due = (now - start) / 1000 * rate_kb / (GUEST_PAGE_SIZE / 1024 * 1000000);

                for (; m->pager.n_pages && done < due; done++) {
                        uint64_t gpa;

                        if (cursor == 0)
                                m->pass++;
                        if (guest_pager_get(&m->pager, cursor, &gpa) == 0) {
                                guest_memsoak_check(m, cursor, gpa);
                                guest_memsoak_mark(gpa, cursor, m->pass);
                        }
                        cursor = (cursor + 1) % m->pager.n_pages;
                        guest_memsoak_service(done + 1);
                }
                if (now >= next_tick) {
                        guest_printf("memsoak: tick %lu written %lu\n", now, done);
                        next_tick = now + GUEST_MEMSOAK_TICK_NS;
                }
                guest_sleep_ns(GUEST_NS_PER_MS);
        }
}

static void guest_memsoak_report(struct guest_memsoak *m)
{
        uint64_t now = guest_hv_reference_time();

        if (m->pass % GUEST_MEMSOAK_REPORT_PASSES != 0 && now - m->last_report_ns < GUEST_MEMSOAK_REPORT_NS)
                return;
        if (now - m->last_report_ns < GUEST_MEMSOAK_REPORT_MIN_NS)
                return;
        m->last_report_ns = now;
        /* t= (reference time) lets the host count passes per second of guest time. */
        guest_printf("memsoak: pass %lu committed=%lu resident=%lu paged_out=%lu page_in=%lu page_out=%lu "
                     "pass_ms=%lu hot=%lu t=%lu\n",
                     m->pass, guest_memory_committed_bytes(), m->pager.resident_pages * GUEST_PAGE_SIZE,
                     m->pager.paged_out_pages * GUEST_PAGE_SIZE, guest_paging_in_total(),
                     guest_paging_out_total(), m->last_pass_ns / GUEST_NS_PER_MS,
                     (m->hot_pages < m->pager.n_pages ? m->hot_pages : m->pager.n_pages) * GUEST_PAGE_SIZE,
                     now);
}

/* The pager's table covers the target, unless that table would not fit: then the
 * target shrinks to what a table of a sixteenth of free memory covers. */
static uint64_t guest_memsoak_capacity(uint64_t target_pages)
{
        uint64_t max_table = guest_page_free_bytes() / GUEST_MEMSOAK_TABLE_SHARE;
        uint64_t max_pages = max_table / sizeof(uint64_t);

        if (target_pages <= max_pages)
                return target_pages;
        guest_printf("memsoak: a page table for %lu bytes does not fit; soaking at most %lu\n",
                     target_pages * GUEST_PAGE_SIZE, max_pages * GUEST_PAGE_SIZE);
        return max_pages;
}

void guest_workload_memsoak_run(uint32_t vp, const struct guest_config *config)
{
        struct guest_memsoak m = {
                .target_pages = config->memsoak_mb * GUEST_MIB / GUEST_PAGE_SIZE,
                .step_pages = config->memsoak_step_mb * GUEST_MIB / GUEST_PAGE_SIZE,
                .step_ns = config->memsoak_step_ms * GUEST_NS_PER_MS,
                .hold_ns = config->memsoak_hold_s * GUEST_NS_PER_SEC,
                .hot_pages = config->memsoak_hot_mb == GUEST_MEMSOAK_ALL_HOT
                                     ? UINT64_MAX
                                     : config->memsoak_hot_mb * GUEST_MIB / GUEST_PAGE_SIZE,
                .pause_ns = config->memsoak_pause_ms * GUEST_NS_PER_MS,
                .hot_grow_ns = config->memsoak_hot_grow_s * GUEST_NS_PER_SEC,
        };
        uint64_t next_step, reached_ns = 0;
        int r;

        if (vp != 0)
                guest_workload_idle_run(false, config->idle_period_ms);

        m.target_pages = guest_memsoak_capacity(m.target_pages);
        r = m.target_pages ? guest_pager_init(&m.pager, m.target_pages) : -ENOMEM;
        if (r < 0) {
                guest_printf("memsoak: no memory for its page table (error %d); idling\n", r);
                guest_workload_idle_run(true, config->idle_period_ms);
        }
        while (!m.reached && !m.out_of_memory) {
                guest_memsoak_grow(&m);
                if (!m.reached)
                        guest_sleep_ns(m.step_ns);
        }
        if (config->memsoak_rate_kb != GUEST_MEMSOAK_UNPACED)
                guest_memsoak_paced(&m, config->memsoak_rate_kb);
        next_step = guest_hv_reference_time() + m.step_ns;
        for (;;) {
                guest_sleep_ns(m.pause_ns);
                if (!m.pause_ns)
                        guest_check_host_request(); /* the sleep only polled the VMBus */
                guest_memsoak_touch_hot(&m);
                guest_memsoak_report(&m);
                if (m.reached && !reached_ns)
                        reached_ns = guest_hv_reference_time();
                if (m.hot_grow_ns && reached_ns && m.hot_pages < m.pager.n_pages &&
                    guest_hv_reference_time() - reached_ns >= m.hot_grow_ns) {
                        m.cold_from = m.hot_pages;
                        m.cold_until_pass = m.pass + 1;
                        m.hot_pages = m.pager.n_pages;
                        guest_printf("memsoak: hot grows to %lu\n", m.hot_pages * GUEST_PAGE_SIZE);
                }
                if (m.reached && m.hold_ns) {
                        if (guest_hv_reference_time() - reached_ns >= m.hold_ns) {
                                uint64_t bytes = m.pager.n_pages * GUEST_PAGE_SIZE;

                                guest_pager_release(&m.pager);
                                guest_printf("memsoak: released %lu committed=%lu\n", bytes,
                                             guest_memory_committed_bytes());
                                guest_workload_idle_run(true, config->idle_period_ms);
                        }
                }
                /* Memory may come back (hot-add, balloon deflate): resume growing at the
                 * step pace. The out-of-memory line is printed once per shortage. */
                if (m.reached || guest_hv_reference_time() < next_step)
                        continue;
                next_step = guest_hv_reference_time() + m.step_ns;
                if (guest_page_free_bytes() == 0)
                        continue;
                m.out_of_memory = false;
                guest_memsoak_grow(&m);
        }
}
