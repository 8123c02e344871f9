/* The `memsoak` workload: VP 0 grows its memory in steps up to a target, then keeps
 * every page it holds in use; the other VPs idle. Drives Dynamic Memory's pressure. */
#include "guest.h"
#include "hypercall.h"

#define GUEST_MEMSOAK_PASS_MS 100
#define GUEST_MEMSOAK_REPORT_PASSES 10
#define GUEST_MEMSOAK_MAX_CORRUPTION_REPORTS 16

/* Soaked pages are chained through their own first words, so the workload needs no
 * memory beyond what it soaks; pfn and pass make a lost or misplaced store visible. */
struct guest_memsoak_page {
        uint64_t pfn;
        uint64_t pass; /* the last pass that touched the page */
        uint64_t next_gpa;
};

struct guest_memsoak {
        uint64_t target_pages;
        uint64_t step_pages;
        uint64_t step_ns;
        uint64_t pages;
        uint64_t head_gpa; /* 0: empty (page 0 is never allocated) */
        uint64_t pass;
        uint64_t corruptions;
        bool out_of_memory;
        bool reached;
};

static struct guest_memsoak_page *guest_memsoak_page(uint64_t gpa)
{
        return (struct guest_memsoak_page *)(uintptr_t)gpa;
}

/* Allocates and touches up to one step; prints the step line and what came of it. */
static void guest_memsoak_grow(struct guest_memsoak *m)
{
        uint64_t n = m->target_pages - m->pages;

        if (n > m->step_pages)
                n = m->step_pages;
        for (uint64_t i = 0; i < n; i++) {
                uint64_t gpa;
                volatile struct guest_memsoak_page *page;

                if (guest_page_alloc(&gpa) < 0) {
                        m->out_of_memory = true;
                        break;
                }
                page = guest_memsoak_page(gpa);
                page->pfn = gpa / GUEST_PAGE_SIZE;
                page->pass = m->pass;
                page->next_gpa = m->head_gpa;
                m->head_gpa = gpa;
                m->pages++;
        }
        guest_printf("memsoak: committed=%lu touched=%lu\n", guest_page_committed_bytes(),
                     m->pages * GUEST_PAGE_SIZE);
        if (m->out_of_memory)
                guest_printf("memsoak: out of memory at committed=%lu\n", guest_page_committed_bytes());
        else if (m->pages == m->target_pages) {
                m->reached = true;
                guest_printf("memsoak: reached %lu\n", m->pages * GUEST_PAGE_SIZE);
        }
}

/* Reads then writes every soaked page once. */
static void guest_memsoak_touch_all(struct guest_memsoak *m)
{
        uint64_t gpa = m->head_gpa;

        m->pass++;
        while (gpa) {
                volatile struct guest_memsoak_page *page = guest_memsoak_page(gpa);
                uint64_t pfn = page->pfn, pass = page->pass;

                if (pfn != gpa / GUEST_PAGE_SIZE || pass != m->pass - 1) {
                        if (m->corruptions++ < GUEST_MEMSOAK_MAX_CORRUPTION_REPORTS)
                                guest_printf(
                                        "memsoak: CORRUPTION gpa=0x%lx pfn=%lu pass=%lu expected pass=%lu\n",
                                        gpa, pfn, pass, m->pass - 1);
                        page->pfn = gpa / GUEST_PAGE_SIZE;
                }
                page->pass = m->pass;
                gpa = page->next_gpa;
        }
}

void guest_workload_memsoak_run(uint32_t vp, const struct guest_config *config)
{
        struct guest_memsoak m = {
                .target_pages = config->memsoak_mb * GUEST_MIB / GUEST_PAGE_SIZE,
                .step_pages = config->memsoak_step_mb * GUEST_MIB / GUEST_PAGE_SIZE,
                .step_ns = config->memsoak_step_ms * GUEST_NS_PER_MS,
        };
        uint64_t next_step;

        if (vp != 0)
                guest_workload_idle_run(false, config->idle_period_ms);

        while (!m.reached && !m.out_of_memory) {
                guest_memsoak_grow(&m);
                if (!m.reached)
                        guest_sleep_ns(m.step_ns);
        }
        next_step = guest_hv_reference_time() + m.step_ns;
        for (;;) {
                guest_sleep_ns(GUEST_MEMSOAK_PASS_MS * GUEST_NS_PER_MS);
                guest_memsoak_touch_all(&m);
                if (m.pass % GUEST_MEMSOAK_REPORT_PASSES == 0)
                        guest_printf("memsoak: pass %lu committed=%lu\n", m.pass,
                                     guest_page_committed_bytes());
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
