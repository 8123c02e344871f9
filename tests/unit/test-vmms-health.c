/* The over-commit evaluator: each rule just under and at its threshold, for one second
 * less than its window and for the whole window; the advice's figures; and a state
 * change reported once, not every second. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "vmms-health.h"

#define MIB (UINT64_C(1) << 20)

typedef enum Figure { PRESSURE, PAGING, CPU_WAIT, HOST_AVAILABLE_PCT, HOST_PRESSURE, HOST_LP } Figure;

typedef struct RuleCase {
        const char *name;
        Figure figure;
        double value;
        unsigned seconds; /* samples pushed; paging's rate needs one more than its window */
        VmmsHealthRule rule;
        bool fires;
} RuleCase;

static const RuleCase rule_cases[] = {
        {"pressure just under 100 for long", PRESSURE, 99.9, 120, VMMS_HEALTH_VM_PRESSURE, false},
        {"pressure 100 one second short", PRESSURE, 100, 29, VMMS_HEALTH_VM_PRESSURE, false},
        {"pressure 100 for the window", PRESSURE, 100, 30, VMMS_HEALTH_VM_PRESSURE, true},
        {"pressure 180 longer than the window", PRESSURE, 180, 200, VMMS_HEALTH_VM_PRESSURE, true},
        {"paging just under 64/s", PAGING, 63.9, 60, VMMS_HEALTH_VM_PAGING, false},
        {"paging 64/s one second short", PAGING, 64, 10, VMMS_HEALTH_VM_PAGING, false},
        {"paging 64/s for the window", PAGING, 64, 11, VMMS_HEALTH_VM_PAGING, true},
        {"cpu wait just under 1 ms", CPU_WAIT, 999999, 60, VMMS_HEALTH_VM_CPU_WAIT, false},
        {"cpu wait 1 ms one second short", CPU_WAIT, 1e6, 9, VMMS_HEALTH_VM_CPU_WAIT, false},
        {"cpu wait 1 ms for the window", CPU_WAIT, 1e6, 10, VMMS_HEALTH_VM_CPU_WAIT, true},
        {"available exactly 5 %", HOST_AVAILABLE_PCT, 5, 60, VMMS_HEALTH_HOST_AVAILABLE_MEMORY, false},
        {"available 4.9 % one second short", HOST_AVAILABLE_PCT, 4.9, 29, VMMS_HEALTH_HOST_AVAILABLE_MEMORY,
         false},
        {"available 4.9 % for the window", HOST_AVAILABLE_PCT, 4.9, 30, VMMS_HEALTH_HOST_AVAILABLE_MEMORY,
         true},
        {"host pressure just under 100", HOST_PRESSURE, 99.9, 60, VMMS_HEALTH_HOST_AVERAGE_PRESSURE, false},
        {"host pressure 100 one second short", HOST_PRESSURE, 100, 29, VMMS_HEALTH_HOST_AVERAGE_PRESSURE,
         false},
        {"host pressure 100 for the window", HOST_PRESSURE, 100, 30, VMMS_HEALTH_HOST_AVERAGE_PRESSURE, true},
        {"LPs just under 95 %", HOST_LP, 94.9, 60, VMMS_HEALTH_HOST_LP_BUSY, false},
        {"LPs 95 % one second short", HOST_LP, 95, 29, VMMS_HEALTH_HOST_LP_BUSY, false},
        {"LPs 95 % for the window", HOST_LP, 95, 30, VMMS_HEALTH_HOST_LP_BUSY, true},
};

static VmmsHealthHostSample host_at_rest(void)
{
        return (VmmsHealthHostSample){.available_bytes = 512.0 * MIB,
                                      .pool_bytes = 1024.0 * MIB,
                                      .average_pressure = 50,
                                      .lp_run_pct = 10};
}

static VmmsHealthVmSample vm_at_rest(void)
{
        return (VmmsHealthVmSample){.average_pressure = 50,
                                    .pages_total = 0,
                                    .cpu_wait_per_dispatch_ns = 1000,
                                    .cpu_run_pct = 5,
                                    .assigned_bytes = 128 * MIB,
                                    .committed_bytes = 64 * MIB,
                                    .maximum_bytes = 1024 * MIB};
}

/* One second: the host and 'web', with `f` set to `value` (paging as a rate). */
static GPtrArray *push_second(VmmsHealth *h, Figure f, double value, unsigned second)
{
        VmmsHealthHostSample host = host_at_rest();
        VmmsHealthVmSample vm = vm_at_rest();

        switch (f) {
        case PRESSURE:
                vm.average_pressure = value;
                break;
        case PAGING:
                vm.pages_total = value * second;
                break;
        case CPU_WAIT:
                vm.cpu_wait_per_dispatch_ns = value;
                break;
        case HOST_AVAILABLE_PCT:
                host.available_bytes = host.pool_bytes * value / 100;
                break;
        case HOST_PRESSURE:
                host.average_pressure = value;
                break;
        case HOST_LP:
                host.lp_run_pct = value;
                break;
        }
        vmms_health_push_host(h, &host);
        vmms_health_push_vm(h, "web", &vm);
        return vmms_health_end_second(h);
}

static const VmmsHealthFinding *find(GPtrArray *findings, VmmsHealthRule rule)
{
        for (guint i = 0; i < findings->len; i++)
                if (((VmmsHealthFinding *)findings->pdata[i])->rule == rule)
                        return findings->pdata[i];
        return NULL;
}

static void test_rules_fire_at_threshold_after_window(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(rule_cases); i++) {
                const RuleCase *c = &rule_cases[i];
                g_autoptr(VmmsHealth) h = vmms_health_new();
                g_autoptr(GPtrArray) findings = NULL;
                const VmmsHealthFinding *f;
                g_autofree char *status = NULL;

                for (unsigned s = 0; s < c->seconds; s++)
                        g_ptr_array_unref(push_second(h, c->figure, c->value, s));
                findings = vmms_health_findings(h);
                f = find(findings, c->rule);
                g_test_message("%s", c->name);
                g_assert_true((f != NULL) == c->fires);
                g_assert_cmpuint(findings->len, ==, c->fires ? 1 : 0);
                status = vmms_health_vm_status(h, "web");
                if (f && vmms_health_rules[c->rule].status)
                        g_assert_true(g_str_has_prefix(status, vmms_health_rules[c->rule].status));
                else
                        g_assert_cmpstr(status, ==, "Operating normally");
                if (!f)
                        continue;
                g_assert_cmpfloat(f->threshold, ==,
                                  c->rule == VMMS_HEALTH_HOST_AVAILABLE_MEMORY
                                          ? 51
                                          : vmms_health_rules[c->rule].threshold);
                g_assert_cmpuint(f->window_s, ==, vmms_health_rules[c->rule].window_s);
                g_assert_nonnull(f->advice);
                g_assert_nonnull(f->counter);
                if (c->rule == VMMS_HEALTH_HOST_AVAILABLE_MEMORY)
                        g_assert_cmpfloat(f->value, ==, 50); /* 4.9 % of 1024 MB, in whole MB */
                else
                        g_assert_cmpfloat_with_epsilon(f->value, c->value, 1e-6);
        }
}

/* 'web' commits 150 MB in 100 MB (pressure 150); 'db' has 200 MB (or 80) at pressure 50 and
 * 'spare' 64 MB; the host has nothing available. Pressure 80 needs 187.5 MB: 88 MB more. */
typedef struct AdviceCase {
        const char *name;
        uint64_t web_maximum;
        double host_available_mib;
        uint64_t db_mib;
        uint64_t relief_mib;
        const char *advice_has[3];
} AdviceCase;

static const AdviceCase advice_cases[] = {
        {"room under the maximum, none on the host",
         1024 * MIB,
         0,
         200,
         88,
         {"88 MB more", "move 'db' (200 MB", NULL}},
        {"no other VM covers it",
         1024 * MIB,
         0,
         80,
         88,
         {"move 'web' to a host with 188 MB free", "moving 'db', 80 MB assigned, frees only part", NULL}},
        {"past the maximum", 128 * MIB, 0, 200, 88, {"88 MB more", "from 128 MB to at least 188 MB", NULL}},
        {"the host has it", 1024 * MIB, 200, 200, 88, {"88 MB more", "host has it available", NULL}},
};

static void push_three(VmmsHealth *h, const AdviceCase *c)
{
        VmmsHealthHostSample host = host_at_rest();
        VmmsHealthVmSample web = vm_at_rest(), db = vm_at_rest(), spare = vm_at_rest();

        host.available_bytes = c->host_available_mib * MIB;
        host.average_pressure = 120;
        web.assigned_bytes = 100 * MIB;
        web.committed_bytes = 150 * MIB;
        web.average_pressure = 150;
        web.maximum_bytes = c->web_maximum;
        db.assigned_bytes = c->db_mib * MIB;
        spare.assigned_bytes = 64 * MIB;
        vmms_health_push_host(h, &host);
        vmms_health_push_vm(h, "web", &web);
        vmms_health_push_vm(h, "db", &db);
        vmms_health_push_vm(h, "spare", &spare);
        g_ptr_array_unref(vmms_health_end_second(h));
}

static void test_advice_names_vm_and_memory(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(advice_cases); i++) {
                const AdviceCase *c = &advice_cases[i];
                g_autoptr(VmmsHealth) h = vmms_health_new();
                g_autoptr(GPtrArray) findings = NULL;
                const VmmsHealthFinding *vm, *host;

                for (unsigned s = 0; s < 30; s++)
                        push_three(h, c);
                findings = vmms_health_findings(h);
                vm = find(findings, VMMS_HEALTH_VM_PRESSURE);
                host = find(findings, VMMS_HEALTH_HOST_AVERAGE_PRESSURE);
                g_test_message("%s: %s", c->name, vm ? vm->advice : "(none)");
                g_assert_nonnull(vm);
                g_assert_cmpstr(vm->vm, ==, "web");
                g_assert_cmpstr(vm->counter, ==, "\\Hyper-V Dynamic Memory VM(web)\\Average Pressure");
                g_assert_cmpuint(vm->relief_bytes, ==, c->relief_mib * MIB);
                for (size_t k = 0; c->advice_has[k]; k++)
                        g_assert_nonnull(strstr(vm->advice, c->advice_has[k]));
                /* The host needs what its pressed VMs need; 'web' (100 MB) is the smallest to cover it. */
                g_assert_nonnull(host);
                g_assert_null(host->vm);
                g_assert_cmpuint(host->relief_bytes, ==, 88 * MIB);
                g_assert_nonnull(strstr(host->advice, "need 88 MB more: move 'web' (100 MB"));
        }
}

/* Static memory has no balancer window: its pressure finding names the counter it came from. */
static void test_static_memory_pressure_names_current_pressure(void)
{
        g_autoptr(VmmsHealth) h = vmms_health_new();
        g_autoptr(GPtrArray) findings = NULL;
        const VmmsHealthFinding *f;

        for (unsigned s = 0; s < 30; s++) {
                VmmsHealthHostSample host = host_at_rest();
                VmmsHealthVmSample vm = vm_at_rest();

                vm.assigned_bytes = 64 * MIB;
                vm.committed_bytes = 80 * MIB;
                vm.average_pressure = 125;
                vm.maximum_bytes = 64 * MIB;
                vm.static_memory = true;
                vmms_health_push_host(h, &host);
                vmms_health_push_vm(h, "web", &vm);
                g_ptr_array_unref(vmms_health_end_second(h));
        }
        findings = vmms_health_findings(h);
        f = find(findings, VMMS_HEALTH_VM_PRESSURE);
        g_assert_nonnull(f);
        g_assert_cmpstr(f->counter, ==, "\\Hyper-V Dynamic Memory VM(web)\\Current Pressure");
        g_assert_cmpfloat(f->value, ==, 125);
}

/* A change is reported the second it happens, once; a stopped VM with signs reports its
 * return to normal by leaving. */
static void test_state_change_reported_once(void)
{
        g_autoptr(VmmsHealth) h = vmms_health_new();
        unsigned changes = 0, second = 0;

        for (; second < 60; second++) {
                g_autoptr(GPtrArray) c = push_second(h, PRESSURE, 150, second);

                changes += c->len;
                if (c->len)
                        g_assert_cmpuint(second, ==, 29);
                if (c->len)
                        g_assert_cmpstr(c->pdata[0], ==, "web");
        }
        g_assert_cmpuint(changes, ==, 1);
        {
                g_autoptr(GPtrArray) c = push_second(h, PRESSURE, 50, second++);
                g_autoptr(GPtrArray) again = push_second(h, PRESSURE, 50, second++);

                g_assert_cmpuint(c->len, ==, 1);
                g_assert_cmpuint(again->len, ==, 0);
        }
        for (unsigned s = 0; s < 30; s++)
                g_ptr_array_unref(push_second(h, PRESSURE, 150, second++));
        {
                VmmsHealthHostSample host = host_at_rest();
                g_autoptr(GPtrArray) c = NULL;
                g_autofree char *status = NULL;

                vmms_health_push_host(h, &host);
                c = vmms_health_end_second(h);
                g_assert_cmpuint(c->len, ==, 1);
                g_assert_cmpstr(c->pdata[0], ==, "web");
                status = vmms_health_vm_status(h, "web");
                g_assert_cmpstr(status, ==, "Operating normally");
        }
}

typedef struct StatusCase {
        unsigned seconds;
        const char *status;
} StatusCase;

static void test_status_says_how_long(void)
{
        static const StatusCase cases[] = {
                {29, "Operating normally"},
                {45, "Memory pressure high for 45 s"},
                {240, "Memory pressure high for 4 min"},
                {1000, "Memory pressure high for 16 min"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(VmmsHealth) h = vmms_health_new();
                g_autofree char *status = NULL;
                g_autoptr(GPtrArray) findings = NULL;

                for (unsigned s = 0; s < cases[i].seconds; s++)
                        g_ptr_array_unref(push_second(h, PRESSURE, 150, s));
                status = vmms_health_vm_status(h, "web");
                g_assert_cmpstr(status, ==, cases[i].status);
                findings = vmms_health_findings(h);
                if (findings->len)
                        g_assert_cmpuint(((VmmsHealthFinding *)findings->pdata[0])->for_s, ==,
                                         cases[i].seconds);
        }
}

/* Signs together: pressure, paging and CPU wait all at once read as one status. */
static void test_status_joins_signs(void)
{
        g_autoptr(VmmsHealth) h = vmms_health_new();
        g_autofree char *status = NULL;
        g_autofree char *host = NULL;

        for (unsigned s = 0; s < 31; s++) {
                VmmsHealthHostSample hs = host_at_rest();
                VmmsHealthVmSample vm = vm_at_rest();

                vm.average_pressure = 130;
                vm.pages_total = 500.0 * s;
                vm.cpu_wait_per_dispatch_ns = 5e6;
                hs.available_bytes = 0;
                vmms_health_push_host(h, &hs);
                vmms_health_push_vm(h, "web", &vm);
                g_ptr_array_unref(vmms_health_end_second(h));
        }
        status = vmms_health_vm_status(h, "web");
        g_assert_cmpstr(status, ==, "Memory pressure high for 31 s, Paging, Waiting for CPU");
        host = vmms_health_host_status(h);
        g_assert_cmpstr(host, ==, "memory short");
}

/* A goal-seeking VM's pressure over 100 is its goal (committed counts the cold pages it left on disk):
 * neither its status nor the host's pressure rule flags it unless it also pages in over goal seeking's
 * threshold (256 pages/s, the mean over 10 s). 'db' sits at pressure 84 beside it; the host's Average
 * Pressure counter is the mean of both. */
typedef struct GoalCase {
        const char *name;
        bool goal_seeking;
        double pressure;
        double page_in_per_s;
        bool vm_fires;
        bool host_fires;
} GoalCase;

static const GoalCase goal_cases[] = {
        {"without goal seeking, pressure 296 is high", false, 296, 0, true, true},
        {"at its goal: pressure 296, no page-ins", true, 296, 0, false, false},
        {"at its goal: page-ins at the threshold", true, 296, 256, false, false},
        {"short: page-ins over the threshold", true, 296, 257, true, true},
        {"paging but pressure under 100", true, 90, 1000, false, false},
};

static void test_goal_seeking_pressure_flagged_only_when_paging(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(goal_cases); i++) {
                const GoalCase *c = &goal_cases[i];
                g_autoptr(VmmsHealth) h = vmms_health_new();
                g_autoptr(GPtrArray) findings = NULL;
                g_autofree char *status = NULL;
                g_autofree char *host_status = NULL;

                g_test_message("%s", c->name);
                /* 10 s to know the page-in rate, then the pressure rule's 30 s, and some. */
                for (unsigned s = 0; s < 45; s++) {
                        VmmsHealthHostSample host = host_at_rest();
                        VmmsHealthVmSample web = vm_at_rest(), db = vm_at_rest();

                        host.average_pressure = (c->pressure + 84) / 2;
                        web.goal_seeking = c->goal_seeking;
                        web.average_pressure = c->pressure;
                        web.assigned_bytes = 64 * MIB;
                        web.committed_bytes = (uint64_t)(c->pressure * 64 / 100) * MIB;
                        web.pages_in_total = c->page_in_per_s * s;
                        web.pages_total = web.pages_in_total;
                        db.average_pressure = 84;
                        vmms_health_push_host(h, &host);
                        vmms_health_push_vm(h, "web", &web);
                        vmms_health_push_vm(h, "db", &db);
                        g_ptr_array_unref(vmms_health_end_second(h));
                }
                findings = vmms_health_findings(h);
                g_assert_true((find(findings, VMMS_HEALTH_VM_PRESSURE) != NULL) == c->vm_fires);
                g_assert_true((find(findings, VMMS_HEALTH_HOST_AVERAGE_PRESSURE) != NULL) == c->host_fires);
                status = vmms_health_vm_status(h, "web");
                g_assert_true(g_str_has_prefix(status, "Memory pressure high") == c->vm_fires);
                host_status = vmms_health_host_status(h);
                g_assert_true((strstr(host_status, "memory pressure high") != NULL) == c->host_fires);
        }
}

/* A Reserve is judged against what the VM asked for: its run time plus the time its VPs
 * waited to run, over the window, never more than the reservation. */
typedef struct ReserveCase {
        const char *name;
        double reserve_pct, run_pct, wait_pct; /* % of one LP, every second */
        unsigned seconds;
        bool fires;
        double shortfall;
} ReserveCase;

static const ReserveCase reserve_cases[] = {
        {"met: it got more than it reserved", 50, 60, 40, 30, false, 0},
        {"short while its VPs waited", 50, 30, 60, 30, true, 20},
        {"idle: it asked for less than it reserved", 50, 5, 0, 30, false, 0},
        {"short of what it asked, under the threshold", 50, 30, 5, 30, false, 5},
        {"short by exactly the threshold", 50, 30, 10, 30, true, 10},
        {"short, one second before the window is full", 50, 30, 60, 10, false, 20},
        {"short, the window just full", 50, 30, 60, 11, true, 20},
        {"no reservation", 0, 10, 90, 30, false, 0},
        {"two VPs reserving 50 % each", 100, 60, 100, 30, true, 40},
};

static void test_reserve_shortfall_counts_what_was_asked_for(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(reserve_cases); i++) {
                const ReserveCase *c = &reserve_cases[i];
                g_autoptr(VmmsHealth) h = vmms_health_new();
                g_autoptr(GPtrArray) findings = NULL;
                g_autofree char *status = NULL;
                const VmmsHealthFinding *f;

                g_test_message("%s", c->name);
                for (unsigned sec = 0; sec < c->seconds; sec++) {
                        VmmsHealthHostSample host = host_at_rest();
                        VmmsHealthVmSample vm = vm_at_rest();

                        vm.cpu_reserve_pct = c->reserve_pct;
                        vm.cpu_run_s_total = 1000 + c->run_pct / 100 * sec; /* a VM that ran before */
                        vm.cpu_wait_s_total = 7 + c->wait_pct / 100 * sec;
                        vm.cpu_run_pct = c->run_pct;
                        vmms_health_push_host(h, &host);
                        vmms_health_push_vm(h, "db", &vm);
                        g_ptr_array_unref(vmms_health_end_second(h));
                }
                findings = vmms_health_findings(h);
                f = find(findings, VMMS_HEALTH_VM_CPU_RESERVE);
                status = vmms_health_vm_status(h, "db");
                g_assert_true((f != NULL) == c->fires);
                g_assert_cmpstr(status, ==, c->fires ? "CPU reserve not met" : "Operating normally");
                if (!f)
                        continue;
                g_assert_cmpfloat_with_epsilon(f->value, c->shortfall, 1e-6);
                g_assert_cmpfloat(f->threshold, ==, 10);
                g_assert_cmpstr(f->counter, ==,
                                "\\Hyper-V Hypervisor Virtual Processor(db:Hv VP *)\\% Total Run Time");
                g_autofree char *got =
                        g_strdup_printf("'db' got %.0f %% of one logical processor against a "
                                        "Reserve of %.0f %% while its processors waited %.0f %%",
                                        c->run_pct, c->reserve_pct, c->wait_pct);
                g_assert_true(g_str_has_prefix(f->advice, got));
        }
}

/* A restart starts the running totals again: no shortfall is made up from the drop. */
static void test_reserve_shortfall_ignores_totals_that_go_back(void)
{
        g_autoptr(VmmsHealth) h = vmms_health_new();
        g_autoptr(GPtrArray) findings = NULL;

        for (unsigned sec = 0; sec < 30; sec++) {
                VmmsHealthHostSample host = host_at_rest();
                VmmsHealthVmSample vm = vm_at_rest();

                vm.cpu_reserve_pct = 100;
                vm.cpu_run_s_total = sec < 20 ? 100 + sec : 0.1 * (sec - 20);
                vm.cpu_wait_s_total = sec < 20 ? 50 : 0.9 * (sec - 20);
                vmms_health_push_host(h, &host);
                vmms_health_push_vm(h, "db", &vm);
                g_ptr_array_unref(vmms_health_end_second(h));
        }
        findings = vmms_health_findings(h);
        g_assert_null(find(findings, VMMS_HEALTH_VM_CPU_RESERVE));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/health/rules-fire-at-threshold-after-window",
                        test_rules_fire_at_threshold_after_window);
        g_test_add_func("/health/advice-names-vm-and-memory", test_advice_names_vm_and_memory);
        g_test_add_func("/health/reserve-shortfall-counts-what-was-asked-for",
                        test_reserve_shortfall_counts_what_was_asked_for);
        g_test_add_func("/health/reserve-shortfall-ignores-totals-that-go-back",
                        test_reserve_shortfall_ignores_totals_that_go_back);
        g_test_add_func("/health/static-memory-pressure-names-current-pressure",
                        test_static_memory_pressure_names_current_pressure);
        g_test_add_func("/health/state-change-reported-once", test_state_change_reported_once);
        g_test_add_func("/health/status-says-how-long", test_status_says_how_long);
        g_test_add_func("/health/status-joins-signs", test_status_joins_signs);
        g_test_add_func("/health/goal-seeking-pressure-flagged-only-when-paging",
                        test_goal_seeking_pressure_flagged_only_when_paging);
        return g_test_run();
}
