/* Dirty-page tracking (hv-dirty.h): a guest that writes known pages is harvested as
 * exactly those pages, and the per-VP bitmap swap never loses a store a VP makes while
 * the harvester runs beside it. Real hvd parts: the scheduler, the Unicorn engine,
 * memfd RAM. */
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-dirty.h"
#include "hv.h"

#define MiB (1ull << 20)
#define RAM_BYTES (16 * MiB)
#define PAGES (RAM_BYTES / HV_PAGE_SIZE)
#define CODE_GPA 0x100000u

typedef struct Fixture {
        GMainContext *context;
        Hv *hv;
        HvPartition *p;
        bool halted;
        uint64_t *out;
} Fixture;

static int on_event(HvPartition *p, const HvEvent *event, void *userdata)
{
        Fixture *f = userdata;

        (void)p;
        if (event->kind == HV_EVENT_VP_STOPPED)
                f->halted = true;
        return 0;
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
        HvConfig config = {.pool_bytes = 64 * MiB,
                           .n_lps = 1,
                           .slice_ns = 2000000,
                           .sched_ops = &hv_sched_round_robin_ops,
                           .engine = &hv_engine_unicorn_ops};
        HvPartitionSpec spec = {
                .name = "dirty", .vp_count = 1, .startup_bytes = RAM_BYTES, .maximum_bytes = RAM_BYTES};
        g_autofree char *error = NULL;

        (void)data;
        memset(f, 0, sizeof(*f));
        f->context = g_main_context_new();
        g_assert_cmpint(hv_new(&config, f->context, &f->hv), ==, 0);
        f->hv->on_event = on_event;
        f->hv->on_event_userdata = f;
        spec.processor = HV_PROCESSOR_DEFAULTS;
        g_assert_cmpint(hv_partition_create(f->hv, &spec, &f->p, &error), ==, 0);
        f->out = g_new0(uint64_t, (HV_DIRTY_HARVEST_PAGES + 63) / 64);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        (void)data;
        hv_free(f->hv);
        g_main_context_unref(f->context);
        g_free(f->out);
}

/* Guest code: `mov [gpa], rax` for each address, then hlt (idle for ever: IF is clear). */
static void write_stores(Fixture *f, const uint64_t *gpas, size_t n)
{
        uint8_t *code = f->p->ram + CODE_GPA;
        size_t at = 0;

        for (size_t i = 0; i < n; i++) {
                uint32_t disp = (uint32_t)gpas[i];

                memcpy(code + at, (uint8_t[]){0x48, 0x89, 0x04, 0x25}, 4);
                memcpy(code + at + 4, &disp, 4);
                at += 8;
        }
        code[at] = 0xf4;
}

static void run_until_halted(Fixture *f)
{
        HvVpRegs regs = {.rip = CODE_GPA, .rsp = 0x80000};

        g_assert_cmpint(hv_partition_vp_start(f->p, 0, &regs), ==, 0);
        /* hlt is the guest's idle: the VP waits in Idle after its stores. */
        for (int i = 0; i < 2000 && !f->halted && atomic_load(&f->p->vps[0]->state) != HV_VP_IDLE; i++)
                if (!g_main_context_iteration(f->context, FALSE))
                        g_usleep(2000);
        g_assert_cmpint(f->p->vps[0]->state, ==, HV_VP_IDLE);
}

static GArray *harvested(Fixture *f)
{
        GArray *pages = g_array_new(FALSE, FALSE, sizeof(uint64_t));
        uint64_t n, dirty;

        g_assert_cmpint(hv_dirty_harvest(f->p, 0, f->out, &n, &dirty), ==, 0);
        g_assert_cmpuint(n, ==, PAGES);
        for (uint64_t k = 0; k < n; k++)
                if (f->out[k / 64] & (1ull << (k % 64)))
                        g_array_append_val(pages, k);
        g_assert_cmpuint(pages->len, ==, dirty);
        return pages;
}

/* Pages in `expect` (sorted) exactly. */
static void assert_pages(GArray *got, const uint64_t *expect, size_t n)
{
        g_assert_cmpuint(got->len, ==, n);
        for (size_t i = 0; i < n; i++)
                g_assert_cmpuint(g_array_index(got, uint64_t, i), ==, expect[i]);
}

static void test_guest_stores_are_harvested_as_exactly_their_pages(Fixture *f, gconstpointer data)
{
        /* 0x40ffc straddles pages 0x40 and 0x41: an 8-byte store marks both. */
        static const uint64_t gpas[] = {0x200000, 0x200008, 0x7000, 0x40ffc, 0xfff000, 0x3456788};
        static const uint64_t expect[] = {0x7, 0x40, 0x41, 0x200, 0xfff};
        g_autoptr(GArray) first = NULL, second = NULL;

        (void)data;
        write_stores(f, gpas, 5); /* the last address lies outside RAM: not run */
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        g_assert_cmpint(hv_dirty_start(f->p), ==, -EBUSY);
        run_until_halted(f);
        first = harvested(f);
        assert_pages(first, expect, G_N_ELEMENTS(expect));
        second = harvested(f); /* a harvest hands its pages out once */
        assert_pages(second, NULL, 0);
        g_assert_cmpint(hv_dirty_stop(f->p), ==, 0);
        g_assert_cmpint(hv_dirty_harvest(f->p, 0, f->out, &(uint64_t){0}, &(uint64_t){0}), ==, -ENOENT);
}

/* A page stored to again after a harvest is dirty again, though the engine's TLB still
 * holds it from the first store: the VP stores, idles, is woken, stores again. */
static void test_a_page_stored_again_after_a_harvest_is_dirty_again(Fixture *f, gconstpointer data)
{
        /* mov [0x200000], rax; hlt; mov [0x200000], rax; hlt */
        static const uint8_t code[] = {0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xf4,
                                       0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xf4};
        static const uint64_t expect[] = {0x200};
        g_autoptr(GArray) first = NULL, second = NULL;

        (void)data;
        memcpy(f->p->ram + CODE_GPA, code, sizeof(code));
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        run_until_halted(f);
        first = harvested(f);
        assert_pages(first, expect, 1);
        hv_sched_vp_signal(f->hv->sched, f->p->vps[0]);
        for (int i = 0; i < 2000 && f->p->vps[0]->counters.dispatches < 2; i++)
                g_usleep(2000);
        for (int i = 0; i < 2000 && atomic_load(&f->p->vps[0]->state) != HV_VP_IDLE; i++)
                g_usleep(2000);
        g_assert_cmpuint(f->p->vps[0]->counters.dispatches, >=, 2);
        second = harvested(f);
        assert_pages(second, expect, 1);
}

/* Code translated before tracking began stores through the hook too: the VP stores and
 * idles, tracking starts, the VP is woken and runs the same block again. */
static void wake_and_wait(Fixture *f, uint64_t dispatches)
{
        hv_sched_vp_signal(f->hv->sched, f->p->vps[0]);
        for (int i = 0; i < 2000 && f->p->vps[0]->counters.dispatches < dispatches; i++)
                g_usleep(2000);
        for (int i = 0; i < 2000 && atomic_load(&f->p->vps[0]->state) != HV_VP_IDLE; i++)
                g_usleep(2000);
        g_assert_cmpuint(f->p->vps[0]->counters.dispatches, >=, dispatches);
}

/* Code translated before tracking began stores through the hook too, the first time
 * (a TLB miss) and again (the page's TLB entry filled by then): the VP stores and
 * idles, tracking starts, the VP is woken twice and runs the same block each time. */
static void test_code_translated_before_the_start_is_tracked(Fixture *f, gconstpointer data)
{
        /* again: mov [0x200000], rax; hlt; jmp again */
        static const uint8_t code[] = {0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xf4, 0xeb, 0xf5};
        static const uint64_t expect[] = {0x200};

        (void)data;
        memcpy(f->p->ram + CODE_GPA, code, sizeof(code));
        run_until_halted(f);
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        for (uint64_t round = 2; round <= 3; round++) {
                g_autoptr(GArray) pages = NULL;

                wake_and_wait(f, round);
                pages = harvested(f);
                assert_pages(pages, expect, 1);
        }
}

static void test_stores_before_the_start_are_not_dirty(Fixture *f, gconstpointer data)
{
        static const uint64_t gpas[] = {0x300000, 0x301000};
        g_autoptr(GArray) pages = NULL;

        (void)data;
        write_stores(f, gpas, G_N_ELEMENTS(gpas));
        run_until_halted(f);
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        pages = harvested(f);
        assert_pages(pages, NULL, 0);
}

static void test_a_harvest_past_the_visible_ram_is_empty(Fixture *f, gconstpointer data)
{
        uint64_t n = 1, dirty = 1;

        (void)data;
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        g_assert_cmpint(hv_dirty_harvest(f->p, PAGES, f->out, &n, &dirty), ==, 0);
        g_assert_cmpuint(n, ==, 0);
        g_assert_cmpuint(dirty, ==, 0);
        g_assert_cmpint(hv_dirty_harvest(f->p, UINT64_MAX, f->out, &n, &dirty), ==, 0);
        g_assert_cmpuint(n, ==, 0);
}

/* ---- The swap, raced: an LP thread "runs" the VP (enter, mark before the store as the
 * engine's hook does, store, leave) while the main thread harvests and copies what it
 * harvested, as a migration does. Each pass stores to every page once, so a store whose
 * bit a harvest took before it landed is that page's last: once the VP has stopped, a
 * last (complete) harvest is taken and the copy must equal memory, page for page. ---- */

#define RACE_PAGES 4096u
#define RACE_PASSES 12u

typedef struct Racer {
        Fixture *f;
        uint64_t *engine_bitmap; /* what vp_dirty_log gave the "engine" */
        uint64_t engine_pages;
        uint64_t pass;
        atomic_bool done;
} Racer;

static Racer *racer_now;

static int racer_dirty_log(HvEngineVp *engine, uint64_t *bitmap, uint64_t pages)
{
        (void)engine;
        racer_now->engine_bitmap = bitmap;
        racer_now->engine_pages = pages;
        return 0;
}

static const HvEngineOps racer_engine = {.name = "racer", .vp_dirty_log = racer_dirty_log};

static gpointer racer_thread(gpointer data)
{
        Racer *r = data;
        HvVp *vp = r->f->p->vps[0];
        uint64_t *ram = (uint64_t *)r->f->p->ram;

        for (uint64_t page = 0; page < RACE_PAGES;) {
                hv_dirty_vp_enter(vp, &racer_engine);
                for (int i = 0; i < 64 && page < RACE_PAGES; i++, page++) {
                        g_assert_nonnull(r->engine_bitmap);
                        hv_dirty_mark(r->engine_bitmap, r->engine_pages, page * HV_PAGE_SIZE, 8);
                        /* Widen the mark-to-store window, so a harvester that took a
                         * bitmap still being written would copy the page inside it. */
                        for (volatile int spin = 0; spin < 300; spin++)
                                ;
                        __atomic_store_n(&ram[page * (HV_PAGE_SIZE / 8)], r->pass << 32 | page,
                                         __ATOMIC_RELEASE);
                }
                hv_dirty_vp_leave(vp);
        }
        atomic_store(&r->done, true);
        return NULL;
}

static void copy_harvest(Fixture *f, uint64_t *copy)
{
        uint64_t n, dirty;
        const uint64_t *ram = (const uint64_t *)f->p->ram;

        g_assert_cmpint(hv_dirty_harvest(f->p, 0, f->out, &n, &dirty), ==, 0);
        for (uint64_t k = 0; k < MIN(n, (uint64_t)RACE_PAGES); k++)
                if (f->out[k / 64] & (1ull << (k % 64)))
                        copy[k] = __atomic_load_n(&ram[k * (HV_PAGE_SIZE / 8)], __ATOMIC_ACQUIRE);
}

static void test_racing_harvests_lose_no_store(Fixture *f, gconstpointer data)
{
        Racer r = {.f = f};
        g_autofree uint64_t *copy = g_new0(uint64_t, RACE_PAGES);
        const uint64_t *ram = (const uint64_t *)f->p->ram;
        int differ = 0, harvests = 0;

        (void)data;
        racer_now = &r;
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        for (r.pass = 1; r.pass <= RACE_PASSES; r.pass++) {
                GThread *thread;

                atomic_store(&r.done, false);
                thread = g_thread_new("racer", racer_thread, &r);
                while (!atomic_load(&r.done)) {
                        copy_harvest(f, copy);
                        harvests++;
                }
                g_thread_join(thread);
                copy_harvest(f, copy); /* the VP is out of its engine: this one is complete */
                for (uint32_t k = 0; k < RACE_PAGES; k++)
                        differ += copy[k] != ram[k * (HV_PAGE_SIZE / 8)];
        }
        g_test_message("%u passes of %u stores raced %d harvests; %d pages differ", RACE_PASSES, RACE_PAGES,
                       harvests, differ);
        g_assert_cmpint(harvests, >, (int)RACE_PASSES);
        g_assert_cmpint(differ, ==, 0);
}

/* ---- A harvest while the VP is in its engine holds what it stored up to then: the VP
 * stores, then stays in its "engine" until it is asked to leave (its preempt flag, as the
 * block hook sees it), as a guest that never idles does. ---- */

#define RUNNING_PAGES 100u

static gpointer running_thread(gpointer data)
{
        Racer *r = data;
        HvVp *vp = r->f->p->vps[0];
        uint64_t *ram = (uint64_t *)r->f->p->ram;

        hv_dirty_vp_enter(vp, &racer_engine);
        for (uint64_t page = 0; page < RUNNING_PAGES; page++) {
                hv_dirty_mark(r->engine_bitmap, r->engine_pages, page * HV_PAGE_SIZE, 8);
                ram[page * (HV_PAGE_SIZE / 8)] = page + 1;
        }
        atomic_store(&r->done, true);
        for (int i = 0; i < 20000 && !atomic_load(&vp->preempt); i++) /* bounded: fails, not hangs */
                g_usleep(100);
        atomic_store(&vp->preempt, 0);
        hv_dirty_vp_leave(vp);
        return NULL;
}

static void test_a_harvest_while_the_vp_runs_holds_its_stores_so_far(Fixture *f, gconstpointer data)
{
        Racer r = {.f = f};
        g_autoptr(GArray) pages = NULL;
        g_autofree uint64_t *expect = g_new(uint64_t, RUNNING_PAGES);
        GThread *thread;

        (void)data;
        racer_now = &r;
        for (uint64_t k = 0; k < RUNNING_PAGES; k++)
                expect[k] = k;
        g_assert_cmpint(hv_dirty_start(f->p), ==, 0);
        thread = g_thread_new("running", running_thread, &r);
        while (!atomic_load(&r.done))
                g_usleep(100);
        pages = harvested(f);
        g_thread_join(thread);
        assert_pages(pages, expect, RUNNING_PAGES);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
#define ADD(name, fn) g_test_add("/hv-dirty/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("guest_stores_are_harvested_as_exactly_their_pages",
            test_guest_stores_are_harvested_as_exactly_their_pages);
        ADD("a_page_stored_again_after_a_harvest_is_dirty_again",
            test_a_page_stored_again_after_a_harvest_is_dirty_again);
        ADD("code_translated_before_the_start_is_tracked", test_code_translated_before_the_start_is_tracked);
        ADD("stores_before_the_start_are_not_dirty", test_stores_before_the_start_are_not_dirty);
        ADD("a_harvest_past_the_visible_ram_is_empty", test_a_harvest_past_the_visible_ram_is_empty);
        ADD("racing_harvests_lose_no_store", test_racing_harvests_lose_no_store);
        ADD("a_harvest_while_the_vp_runs_holds_its_stores_so_far",
            test_a_harvest_while_the_vp_runs_holds_its_stores_so_far);
        return g_test_run();
}
