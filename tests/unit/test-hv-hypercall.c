/* Hypercall argument validation: a bad argument from the guest returns a status to
 * the guest and counts; it never touches memory outside the guest's visible RAM. */
#include <glib.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-hypercall.h"
#include "hv.h"

#define VISIBLE (1ull << 20)
#define MAXIMUM (4ull << 20)

typedef struct Fixture {
        Hv hv;
        HvPartition partition;
        HvVp vp;
        HvVp *vps[1];
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
        (void)data;
        memset(f, 0, sizeof(*f));
        f->hv.main_context = g_main_context_new();
        f->hv.partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
        f->partition.hv = &f->hv;
        f->partition.id = 1;
        f->partition.name = "test";
        f->partition.ram = g_malloc0(MAXIMUM);
        f->partition.maximum_bytes = MAXIMUM;
        f->partition.visible_bytes = VISIBLE;
        f->partition.vp_count = 1;
        f->partition.vps = f->vps;
        f->vps[0] = &f->vp;
        f->partition.console = g_byte_array_new();
        g_mutex_init(&f->partition.console_lock);
        f->vp.partition = &f->partition;
        memcpy(f->partition.ram + 0x2000, "hello\n", 6);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        (void)data;
        g_free(f->partition.ram);
        g_byte_array_unref(f->partition.console);
        g_mutex_clear(&f->partition.console_lock);
        g_hash_table_unref(f->hv.partitions);
        g_main_context_unref(f->hv.main_context);
}

typedef struct CallCase {
        const char *name;
        uint64_t code, arg0, arg1;
        int64_t expect; /* exact result, unless expect_nonneg */
        bool expect_nonneg;
        HvExitKind expect_exit;
        uint64_t console_bytes; /* bytes the console must hold afterwards */
        uint64_t invalid;       /* invalid_hypercalls afterwards */
} CallCase;

static const CallCase call_cases[] = {
        {"console_write_inside_ram_is_accepted", HV_CALL_CONSOLE_WRITE, 0x2000, 6, 6, false, HV_EXIT_NONE, 6,
         0},
        {"console_write_of_zero_bytes_is_accepted", HV_CALL_CONSOLE_WRITE, 0x2000, 0, 0, false, HV_EXIT_NONE,
         0, 0},
        {"console_write_ending_at_the_last_visible_byte_is_accepted", HV_CALL_CONSOLE_WRITE, VISIBLE - 16, 16,
         16, false, HV_EXIT_NONE, 16, 0},
        {"console_write_past_visible_ram_is_denied", HV_CALL_CONSOLE_WRITE, VISIBLE - 4, 16,
         -HV_STATUS_ACCESS_DENIED, false, HV_EXIT_NONE, 0, 1},
        {"console_write_in_unassigned_maximum_is_denied", HV_CALL_CONSOLE_WRITE, VISIBLE + 4096, 16,
         -HV_STATUS_ACCESS_DENIED, false, HV_EXIT_NONE, 0, 1},
        {"console_write_with_wrapping_address_is_denied", HV_CALL_CONSOLE_WRITE, UINT64_MAX - 2, 16,
         -HV_STATUS_ACCESS_DENIED, false, HV_EXIT_NONE, 0, 1},
        {"console_write_longer_than_the_limit_is_refused", HV_CALL_CONSOLE_WRITE, 0x2000,
         HV_CONSOLE_WRITE_MAX + 1, -HV_STATUS_INVALID_PARAMETER, false, HV_EXIT_NONE, 0, 1},
        {"unknown_call_code_is_refused", 999, 0, 0, -HV_STATUS_INVALID_HYPERCALL_CODE, false, HV_EXIT_NONE, 0,
         1},
        {"call_code_zero_is_refused", 0, 0, 0, -HV_STATUS_INVALID_HYPERCALL_CODE, false, HV_EXIT_NONE, 0, 1},
        {"idle_exits_the_engine", HV_CALL_IDLE, 0, 0, HV_IDLE_WOKE_TIMER, false, HV_EXIT_IDLE, 0, 0},
        {"long_spin_wait_yields", HV_CALL_LONG_SPIN_WAIT, 100, 0, 0, false, HV_EXIT_YIELD, 0, 0},
        {"halt_stops_the_vp", HV_CALL_HALT, 7, 0, 0, false, HV_EXIT_HALT, 0, 0},
        {"reference_time_is_nonnegative", HV_CALL_REFERENCE_TIME, 0, 0, 0, true, HV_EXIT_NONE, 0, 0},
        {"partition_info_reports_visible_bytes", HV_CALL_PARTITION_INFO, HV_PARTITION_INFO_VISIBLE_BYTES, 0,
         VISIBLE, false, HV_EXIT_NONE, 0, 0},
        {"partition_info_refuses_unknown_item", HV_CALL_PARTITION_INFO, 77, 0, -HV_STATUS_INVALID_PARAMETER,
         false, HV_EXIT_NONE, 0, 1},
};

static void test_call_case(Fixture *f, gconstpointer data)
{
        const CallCase *tc = data;
        HvVpExit exit = {0};
        int64_t result = hv_hypercall_dispatch(&f->vp, tc->code, tc->arg0, tc->arg1, 0, &exit);

        if (tc->expect_nonneg)
                g_assert_cmpint(result, >=, 0);
        else
                g_assert_cmpint(result, ==, tc->expect);
        g_assert_cmpint(exit.kind, ==, tc->expect_exit);
        g_assert_cmpuint(f->partition.console->len, ==, tc->console_bytes);
        g_assert_cmpuint(atomic_load(&f->vp.hypercalls), ==, 1);
        g_assert_cmpuint(atomic_load(&f->vp.invalid_hypercalls), ==, tc->invalid);
}

static void test_idle_deadline_is_converted_and_never_wraps(Fixture *f, gconstpointer data)
{
        HvVpExit exit = {0};

        (void)data;
        f->hv.clock_base_ns = 1000;
        hv_hypercall_dispatch(&f->vp, HV_CALL_IDLE, 5000, 0, 0, &exit);
        g_assert_cmpuint(exit.idle_deadline_ns, ==, 6000);
        hv_hypercall_dispatch(&f->vp, HV_CALL_IDLE, UINT64_MAX - 10, 0, 0, &exit);
        g_assert_cmpuint(exit.idle_deadline_ns, ==, 0); /* until an event, not a wrapped past deadline */
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(call_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-hypercall/%s", call_cases[i].name);

                g_test_add(path, Fixture, &call_cases[i], fixture_setup, test_call_case, fixture_teardown);
        }
        g_test_add("/hv-hypercall/idle_deadline_is_converted_and_never_wraps", Fixture, NULL, fixture_setup,
                   test_idle_deadline_is_converted_and_never_wraps, fixture_teardown);
        return g_test_run();
}
