/* hvd's Dynamic Memory: each balloon page is judged alone (outside RAM, duplicate,
 * wrong state), hot-add and unballoon are charged to the pool or refused whole, and a
 * ballooned page really leaves host memory. Real partitions (memfd RAM), no VPs. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/stat.h>

#include "hv-abi.h"
#include "hv-memory.h"
#include "hv.h"

#define MiB (1ull << 20)
#define PAGES(bytes) ((bytes) / HV_PAGE_SIZE)

/* ---- Classification, table-driven ---- */

typedef struct ClassifyCase {
        const char *name;
        bool to_balloon;
        uint64_t ballooned[4]; /* pages ballooned before the request; 0 ends the list */
        uint64_t pfns[6];
        size_t n;
        HvPageVerdict expect[6];
        HvPageTally tally;
} ClassifyCase;

#define VISIBLE_PAGES 1024u

static const ClassifyCase classify_cases[] = {
        {"pages_inside_visible_ram_are_accepted",
         true,
         {0},
         {1, 2, 1023},
         3,
         {HV_PAGE_ACCEPTED, HV_PAGE_ACCEPTED, HV_PAGE_ACCEPTED},
         {.accepted = 3}},
        {"page_at_the_visible_end_is_outside_ram",
         true,
         {0},
         {1024},
         1,
         {HV_PAGE_OUTSIDE_RAM},
         {.outside_ram = 1}},
        {"page_whose_address_would_overflow_is_outside_ram",
         true,
         {0},
         {UINT64_MAX, 1ull << 52},
         2,
         {HV_PAGE_OUTSIDE_RAM, HV_PAGE_OUTSIDE_RAM},
         {.outside_ram = 2}},
        {"page_named_twice_is_refused_the_second_time",
         true,
         {0},
         {7, 8, 7},
         3,
         {HV_PAGE_ACCEPTED, HV_PAGE_ACCEPTED, HV_PAGE_DUPLICATE},
         {.accepted = 2, .duplicate = 1}},
        {"page_ballooned_already_is_refused",
         true,
         {9},
         {9, 10},
         2,
         {HV_PAGE_WRONG_STATE, HV_PAGE_ACCEPTED},
         {.accepted = 1, .wrong_state = 1}},
        {"bad_pages_do_not_spoil_the_good_ones",
         true,
         {5},
         {4, 5, 4, 5000, 6},
         5,
         {HV_PAGE_ACCEPTED, HV_PAGE_WRONG_STATE, HV_PAGE_DUPLICATE, HV_PAGE_OUTSIDE_RAM, HV_PAGE_ACCEPTED},
         {.accepted = 2, .outside_ram = 1, .duplicate = 1, .wrong_state = 1}},
        {"unballoon_accepts_ballooned_pages",
         false,
         {3, 4},
         {3, 4},
         2,
         {HV_PAGE_ACCEPTED, HV_PAGE_ACCEPTED},
         {.accepted = 2}},
        {"unballoon_refuses_a_page_not_ballooned",
         false,
         {3},
         {3, 8},
         2,
         {HV_PAGE_ACCEPTED, HV_PAGE_WRONG_STATE},
         {.accepted = 1, .wrong_state = 1}},
        {"unballoon_refuses_a_duplicate",
         false,
         {3},
         {3, 3},
         2,
         {HV_PAGE_ACCEPTED, HV_PAGE_DUPLICATE},
         {.accepted = 1, .duplicate = 1}},
        {"empty_request_accepts_nothing", true, {0}, {0}, 0, {0}, {0}},
};

static void test_classify(gconstpointer data)
{
        const ClassifyCase *tc = data;
        uint64_t bitmap[VISIBLE_PAGES / 64] = {0};
        HvPageVerdict verdicts[6];
        HvPageTally tally;

        for (size_t i = 0; i < G_N_ELEMENTS(tc->ballooned) && tc->ballooned[i]; i++)
                bitmap[tc->ballooned[i] / 64] |= 1ull << (tc->ballooned[i] % 64);
        hv_memory_classify(VISIBLE_PAGES, bitmap, tc->to_balloon, tc->pfns, tc->n, verdicts, &tally);
        for (size_t i = 0; i < tc->n; i++)
                g_assert_cmpint(verdicts[i], ==, tc->expect[i]);
        g_assert_cmpuint(tally.accepted, ==, tc->tally.accepted);
        g_assert_cmpuint(tally.outside_ram, ==, tc->tally.outside_ram);
        g_assert_cmpuint(tally.duplicate, ==, tc->tally.duplicate);
        g_assert_cmpuint(tally.wrong_state, ==, tc->tally.wrong_state);
}

static void test_classify_without_a_bitmap_treats_nothing_as_ballooned(void)
{
        const uint64_t pfns[] = {1, 2};
        HvPageVerdict verdicts[2];
        HvPageTally tally;

        hv_memory_classify(VISIBLE_PAGES, NULL, true, pfns, 2, verdicts, &tally);
        g_assert_cmpuint(tally.accepted, ==, 2);
        hv_memory_classify(VISIBLE_PAGES, NULL, false, pfns, 2, verdicts, &tally);
        g_assert_cmpuint(tally.wrong_state, ==, 2);
}

/* ---- Partitions ---- */

typedef struct Fixture {
        Hv hv;
        HvPartition *p;
} Fixture;

static HvPartition *partition_new(Hv *hv, const char *name, uint64_t startup, uint64_t maximum)
{
        HvPartition *p;

        g_assert_cmpint(hv_partition_new(hv, name, 0, 1, startup, maximum, &p), ==, 0);
        g_assert_cmpint(hv_pool_charge(&hv->pool, startup), ==, 0);
        p->assigned_bytes = startup;
        return p;
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
        (void)data;
        memset(f, 0, sizeof(*f));
        f->hv.engine = &hv_engine_unicorn_ops;
        g_assert_cmpint(hv_pool_init(&f->hv.pool, 64 * MiB), ==, 0);
        f->p = partition_new(&f->hv, "dm", 16 * MiB, 48 * MiB);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        (void)data;
        hv_partition_free(f->p);
}

static uint64_t resident(const HvPartition *p)
{
        struct stat st;

        g_assert_cmpint(fstat(p->ram_fd, &st), ==, 0);
        return (uint64_t)st.st_blocks * 512;
}

static void assert_accounting(const Fixture *f)
{
        g_assert_cmpuint(f->p->assigned_bytes, ==,
                         f->p->visible_bytes - f->p->ballooned_pages * HV_PAGE_SIZE);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, f->p->assigned_bytes);
}

typedef struct HotAddCase {
        const char *name;
        uint64_t bytes;
        int expect;
        uint64_t visible_after;
        const char *message; /* part of the error, if any */
} HotAddCase;

/* The fixture: 16 MiB visible of 48 MiB maximum, pool 64 MiB with 16 MiB used. */
static const HotAddCase hot_add_cases[] = {
        {"hot_add_of_whole_units_grows_visible", 4 * MiB, 0, 20 * MiB, NULL},
        {"hot_add_up_to_the_maximum_is_accepted", 32 * MiB, 0, 48 * MiB, NULL},
        {"hot_add_beyond_the_maximum_is_refused", 34 * MiB, -ENOSPC, 16 * MiB, "room for"},
        {"hot_add_of_zero_is_refused", 0, -EINVAL, 16 * MiB, "room for"},
        {"hot_add_of_a_partial_unit_is_refused", 3 * MiB, -EINVAL, 16 * MiB, "2 MiB units"},
        {"hot_add_wrapping_around_is_refused", UINT64_MAX - 4095, -ENOSPC, 16 * MiB, "room for"},
};

static void test_hot_add(Fixture *f, gconstpointer data)
{
        const HotAddCase *tc = data;
        g_autofree char *error = NULL;
        int r = hv_memory_hot_add(f->p, tc->bytes, &error);

        g_assert_cmpint(r, ==, tc->expect);
        g_assert_cmpuint(f->p->visible_bytes, ==, tc->visible_after);
        if (tc->message)
                g_assert_nonnull(strstr(error, tc->message));
        assert_accounting(f);
}

static void test_hot_add_beyond_the_pool_is_refused_naming_the_figures(Fixture *f, gconstpointer data)
{
        HvPartition *other = partition_new(&f->hv, "other", 40 * MiB, 40 * MiB);
        g_autofree char *error = NULL;

        (void)data;
        g_assert_cmpint(hv_memory_hot_add(f->p, 10 * MiB, &error), ==, -ENOMEM);
        g_assert_nonnull(strstr(error, "exceeds the pool's available 8388608 bytes"));
        g_assert_cmpuint(f->p->visible_bytes, ==, 16 * MiB);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 56 * MiB);
        hv_partition_free(other);
}

static void test_hot_add_to_the_maximum_may_end_in_a_partial_unit(Fixture *f, gconstpointer data)
{
        HvPartition *odd = partition_new(&f->hv, "odd", 4 * MiB, 7 * MiB);
        g_autofree char *error = NULL;

        (void)data;
        g_assert_cmpint(hv_memory_hot_add(odd, 2 * MiB, &error), ==, 0);
        g_assert_cmpint(hv_memory_hot_add(odd, 1 * MiB, &error), ==, 0); /* exactly the rest */
        g_assert_cmpuint(odd->visible_bytes, ==, 7 * MiB);
        hv_partition_free(odd);
}

static void touch(HvPartition *p, uint64_t first_pfn, uint64_t n)
{
        for (uint64_t i = 0; i < n; i++)
                memset(p->ram + (first_pfn + i) * HV_PAGE_SIZE, 0xa5, HV_PAGE_SIZE);
}

static void test_balloon_releases_host_memory_and_credits_the_pool(Fixture *f, gconstpointer data)
{
        g_autofree uint64_t *pfns = g_new(uint64_t, 1024);
        HvPageVerdict *verdicts = g_new(HvPageVerdict, 1024);
        HvPageTally tally;
        g_autofree char *error = NULL;
        uint64_t before;

        (void)data;
        touch(f->p, 1024, 1024); /* 4 MiB the guest used */
        before = resident(f->p);
        g_assert_cmpuint(before, >=, 4 * MiB);
        for (uint64_t i = 0; i < 1024; i++)
                pfns[i] = 2047 - i; /* in no helpful order: runs are found by sorting */
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 1024, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(tally.accepted, ==, 1024);
        g_assert_cmpuint(before - resident(f->p), ==, 4 * MiB); /* measured, not computed */
        g_assert_cmpuint(f->p->ballooned_pages, ==, 1024);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 12 * MiB);
        assert_accounting(f);
        g_free(verdicts);
}

static void test_balloon_refuses_bad_pages_one_by_one_and_counts_them(Fixture *f, gconstpointer data)
{
        const uint64_t pfns[] = {100, PAGES(16 * MiB), 100, 101, UINT64_MAX};
        HvPageVerdict verdicts[G_N_ELEMENTS(pfns)];
        HvPageTally tally;
        g_autofree char *error = NULL;

        (void)data;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, G_N_ELEMENTS(pfns), verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(tally.accepted, ==, 2);
        g_assert_cmpuint(tally.outside_ram, ==, 2);
        g_assert_cmpuint(tally.duplicate, ==, 1);
        g_assert_cmpuint(f->p->refused_pages, ==, 3);
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 1, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(tally.wrong_state, ==, 1); /* page 100 is ballooned now */
        g_assert_cmpuint(f->p->refused_pages, ==, 4);
        assert_accounting(f);
}

static void test_bad_pages_cannot_free_another_partitions_memory(Fixture *f, gconstpointer data)
{
        HvPartition *victim = partition_new(&f->hv, "victim", 16 * MiB, 16 * MiB);
        g_autofree uint64_t *pfns = g_new(uint64_t, 4096);
        g_autofree HvPageVerdict *verdicts = g_new(HvPageVerdict, 4096);
        HvPageTally tally;
        g_autofree char *error = NULL;
        uint64_t victim_before;

        (void)data;
        touch(victim, 0, 2048);
        victim_before = resident(victim);
        /* Page numbers are the partition's own: past its visible end there is nothing. */
        for (uint64_t i = 0; i < 4096; i++)
                pfns[i] = PAGES(16 * MiB) + i;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 4096, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(tally.accepted, ==, 0);
        g_assert_cmpuint(tally.outside_ram, ==, 4096);
        g_assert_cmpuint(resident(victim), ==, victim_before);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 32 * MiB);
        hv_partition_free(victim);
}

static void test_unballoon_charges_the_pool_all_or_nothing(Fixture *f, gconstpointer data)
{
        HvPartition *hog;
        g_autofree uint64_t *pfns = g_new(uint64_t, 2048);
        g_autofree HvPageVerdict *verdicts = g_new(HvPageVerdict, 2048);
        HvPageTally tally;
        g_autofree char *error = NULL;

        (void)data;
        for (uint64_t i = 0; i < 2048; i++)
                pfns[i] = 1024 + i;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 2048, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 8 * MiB);
        hog = partition_new(&f->hv, "hog", 52 * MiB, 52 * MiB); /* 4 MiB left, 8 MiB ballooned */
        g_assert_cmpint(hv_memory_unballoon(f->p, pfns, 2048, verdicts, &tally, &error), ==, -ENOMEM);
        g_assert_nonnull(strstr(error, "exceeds the pool's available 4194304 bytes"));
        g_assert_cmpuint(f->p->ballooned_pages, ==, 2048); /* nothing changed */
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 60 * MiB);
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(hv_memory_unballoon(f->p, pfns, 1024, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(tally.accepted, ==, 1024);
        g_assert_cmpuint(f->p->ballooned_pages, ==, 1024);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 64 * MiB);
        hv_partition_free(hog);
        f->hv.pool.used_bytes -= 52 * MiB;
        assert_accounting(f);
}

static void test_a_request_over_the_page_limit_is_refused_whole(Fixture *f, gconstpointer data)
{
        size_t n = HV_MEMORY_PAGES_MAX + 1;
        g_autofree uint64_t *pfns = g_new0(uint64_t, n);
        g_autofree HvPageVerdict *verdicts = g_new(HvPageVerdict, n);
        HvPageTally tally;
        g_autofree char *error = NULL;

        (void)data;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, n, verdicts, &tally, &error), ==, -E2BIG);
        g_assert_cmpuint(f->p->ballooned_pages, ==, 0);
        g_assert_cmpuint(f->p->refused_pages, ==, 0);
}

/* A hostile guest balloons pages, then touches them again: hvd finds them and charges
 * them back, so resident never stays above assigned. */
static void test_retouched_ballooned_pages_are_charged_back(Fixture *f, gconstpointer data)
{
        g_autofree uint64_t *pfns = g_new(uint64_t, 2048);
        g_autofree HvPageVerdict *verdicts = g_new(HvPageVerdict, 2048);
        HvPageTally tally;
        g_autofree char *error = NULL;
        uint64_t pages;

        (void)data;
        touch(f->p, 1024, 2048);
        for (uint64_t i = 0; i < 2048; i++)
                pfns[i] = 1024 + i;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 2048, verdicts, &tally, &error), ==, 0);
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 8 * MiB);
        g_assert_cmpint(hv_memory_reconcile(f->p, &pages, &error), ==, 0);
        g_assert_cmpuint(pages, ==, 0); /* nothing touched again yet */
        touch(f->p, 0, 4096);           /* every page, the ballooned ones too */
        g_assert_cmpuint(resident(f->p), >, f->p->assigned_bytes);
        g_assert_cmpint(hv_memory_reconcile(f->p, &pages, &error), ==, 0);
        g_assert_cmpuint(pages, ==, 2048);
        g_assert_cmpuint(f->p->retouched_pages, ==, 2048);
        g_assert_cmpuint(f->p->ballooned_pages, ==, 0);
        g_assert_cmpuint(resident(f->p), <=, f->p->assigned_bytes);
        assert_accounting(f);
}

static void test_retouched_pages_the_pool_cannot_cover_are_refused_and_released(Fixture *f,
                                                                                gconstpointer data)
{
        HvPartition *hog;
        g_autofree uint64_t *pfns = g_new(uint64_t, 2048);
        g_autofree HvPageVerdict *verdicts = g_new(HvPageVerdict, 2048);
        HvPageTally tally;
        g_autofree char *error = NULL;
        uint64_t pages;

        (void)data;
        for (uint64_t i = 0; i < 2048; i++)
                pfns[i] = 1024 + i;
        g_assert_cmpint(hv_memory_balloon(f->p, pfns, 2048, verdicts, &tally, &error), ==, 0);
        hog = partition_new(&f->hv, "hog", 54 * MiB, 54 * MiB); /* 2 MiB left */
        touch(f->p, 0, 4096);
        g_assert_cmpint(hv_memory_reconcile(f->p, &pages, &error), ==, -ENOMEM);
        g_assert_nonnull(strstr(error, "touched 2048 ballooned pages again"));
        g_assert_nonnull(strstr(error, "exceeds the pool's available 2097152 bytes"));
        g_assert_cmpuint(f->p->ballooned_pages, ==, 2048); /* nothing charged */
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 62 * MiB);
        hv_memory_release_retouched(f->p);
        g_assert_cmpuint(resident(f->p), <=, f->p->assigned_bytes);
        hv_partition_free(hog);
        f->hv.pool.used_bytes -= 54 * MiB;
        assert_accounting(f);
}

static void test_a_quota_limits_what_a_partition_may_be_charged(Fixture *f, gconstpointer data)
{
        HvQuota quota = {.memory_limit_bytes = 20 * MiB, .memory_used_bytes = 16 * MiB};
        g_autofree char *error = NULL;

        (void)data;
        f->p->quota = &quota;
        g_assert_cmpint(hv_memory_hot_add(f->p, 8 * MiB, &error), ==, -EDQUOT);
        g_assert_nonnull(strstr(error, "exceeds the connection's memory limit of 20971520 bytes"));
        g_assert_cmpuint(f->hv.pool.used_bytes, ==, 16 * MiB); /* the pool was not charged either */
        g_clear_pointer(&error, g_free);
        g_assert_cmpint(hv_memory_hot_add(f->p, 4 * MiB, &error), ==, 0);
        g_assert_cmpuint(quota.memory_used_bytes, ==, 20 * MiB);
        assert_accounting(f);
}

static void test_pages_past_visible_ram_are_released(Fixture *f, gconstpointer data)
{
        g_autofree char *error = NULL;
        uint64_t pages, before;

        (void)data;
        touch(f->p, 0, 1024);
        before = resident(f->p);
        /* The worker's mapping reaches past visible: all 32 MiB of it, above assigned. */
        touch(f->p, PAGES(16 * MiB), PAGES(32 * MiB));
        g_assert_cmpint(hv_memory_reconcile(f->p, &pages, &error), ==, 0);
        g_assert_cmpuint(resident(f->p), ==, before);
        assert_accounting(f);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(classify_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-memory/classify/%s", classify_cases[i].name);

                g_test_add_data_func(path, &classify_cases[i], test_classify);
        }
        g_test_add_func("/hv-memory/classify/without_a_bitmap_nothing_is_ballooned",
                        test_classify_without_a_bitmap_treats_nothing_as_ballooned);
        for (size_t i = 0; i < G_N_ELEMENTS(hot_add_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-memory/%s", hot_add_cases[i].name);

                g_test_add(path, Fixture, &hot_add_cases[i], fixture_setup, test_hot_add, fixture_teardown);
        }
#define ADD(name, fn) g_test_add("/hv-memory/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        ADD("hot_add_beyond_the_pool_is_refused_naming_the_figures",
            test_hot_add_beyond_the_pool_is_refused_naming_the_figures);
        ADD("hot_add_to_the_maximum_may_end_in_a_partial_unit",
            test_hot_add_to_the_maximum_may_end_in_a_partial_unit);
        ADD("balloon_releases_host_memory_and_credits_the_pool",
            test_balloon_releases_host_memory_and_credits_the_pool);
        ADD("balloon_refuses_bad_pages_one_by_one_and_counts_them",
            test_balloon_refuses_bad_pages_one_by_one_and_counts_them);
        ADD("bad_pages_cannot_free_another_partitions_memory",
            test_bad_pages_cannot_free_another_partitions_memory);
        ADD("unballoon_charges_the_pool_all_or_nothing", test_unballoon_charges_the_pool_all_or_nothing);
        ADD("a_request_over_the_page_limit_is_refused_whole",
            test_a_request_over_the_page_limit_is_refused_whole);
        ADD("retouched_ballooned_pages_are_charged_back", test_retouched_ballooned_pages_are_charged_back);
        ADD("retouched_pages_the_pool_cannot_cover_are_refused_and_released",
            test_retouched_pages_the_pool_cannot_cover_are_refused_and_released);
        ADD("a_quota_limits_what_a_partition_may_be_charged",
            test_a_quota_limits_what_a_partition_may_be_charged);
        ADD("pages_past_visible_ram_are_released", test_pages_past_visible_ram_are_released);
#undef ADD
        return g_test_run();
}
