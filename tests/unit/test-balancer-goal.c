/* Goal seeking finds the smallest footprint that does not page: closed-loop runs against a simulated guest
 * whose page-in rate rises as its memory falls below its working set, and edge cases of the samples. */
#include <glib.h>
#include <string.h>

#include "balancer-goal.h"
#include "balancer.h"

#define MiB (UINT64_C(1) << 20)
#define NS_PER_TICK UINT64_C(1000000000)
#define SIM_TICKS 1000
#define SIM_REMOVE_PER_TICK (128 * MiB) /* the balancer's remove bound */
#define SIM_PASSES_PER_S 4              /* the workload sweeps its working set this often */

/* The guest: commits `committed`, touches `ws` of it (until change_tick, then ws_after). Below its working
 * set it reads back (ws − assigned) every pass; a step down trims in-use pages in proportion (ws / assigned
 * before the step), which come back in the next interval. Assigned follows min(want, cap) as the balancer
 * would: removes bounded per tick and not inside its dead band, adds at once. */
typedef struct GoalCase {
        const char *name;
        uint64_t assigned, committed, ws, minimum;
        uint64_t change_tick, ws_after, committed_after; /* 0: no change */
        uint64_t background_bytes_per_s;                 /* page-ins that happen whatever the footprint */
} GoalCase;

typedef struct GoalRun {
        uint64_t assigned[SIM_TICKS + 1];
        uint64_t cap[SIM_TICKS + 1];
        unsigned raises_after[SIM_TICKS + 1]; /* raises from tick i to the end */
        uint64_t paged_in_bytes;
} GoalRun;

static uint64_t sim_want(uint64_t committed, uint64_t minimum, uint64_t maximum)
{
        uint64_t want =
                (committed * 120 / 100 + BALANCER_UNIT_BYTES - 1) / BALANCER_UNIT_BYTES * BALANCER_UNIT_BYTES;

        return CLAMP(want, minimum, maximum);
}

static void sim_run(const GoalCase *c, GoalRun *run)
{
        BalancerGoalConfig config;
        BalancerGoal goal;
        uint64_t assigned = c->assigned, page_in = 0, maximum = 4096 * MiB;
        unsigned raises[SIM_TICKS + 1] = {0};

        balancer_goal_config_init_default(&config);
        balancer_goal_reset(&goal);
        memset(run, 0, sizeof(*run));
        for (uint64_t t = 0; t <= SIM_TICKS; t++) {
                bool changed = c->change_tick && t >= c->change_tick;
                uint64_t ws = changed && c->ws_after ? c->ws_after : c->ws;
                uint64_t committed = changed && c->committed_after ? c->committed_after : c->committed;
                BalancerGoalInput in = {
                        .minimum_bytes = c->minimum,
                        .maximum_bytes = maximum,
                        .assigned_bytes = assigned,
                        .committed_bytes = committed,
                        .page_in_total = page_in,
                        .report_ns = (t + 1) * NS_PER_TICK,
                };
                BalancerGoalDecision decision;
                uint64_t cap = balancer_goal_sample(&goal, &config, &in, &decision), target,
                         before = assigned, paged;

                g_assert_cmpuint(cap % BALANCER_UNIT_BYTES, ==, 0);
                g_assert_cmpuint(cap, >=, c->minimum);
                g_assert_cmpuint(cap, <=, maximum);
                run->assigned[t] = assigned;
                run->cap[t] = cap;
                raises[t] = decision == BALANCER_GOAL_RAISE;

                target = MIN(sim_want(committed, c->minimum, maximum), cap);
                if (target > assigned)
                        assigned = target;
                else if (assigned - target >= MAX(4 * MiB, assigned / 64))
                        assigned -= MIN(assigned - target, SIM_REMOVE_PER_TICK);

                paged = c->background_bytes_per_s;
                if (assigned < ws)
                        paged += (ws - assigned) * SIM_PASSES_PER_S;
                if (assigned < before)
                        paged += (before - assigned) * MIN(ws, before) / before;
                page_in += paged / BALANCER_GOAL_PAGE_BYTES;
                run->paged_in_bytes += paged;
        }
        for (int t = SIM_TICKS - 1; t >= 0; t--)
                run->raises_after[t] = run->raises_after[t + 1] + raises[t];
        run->raises_after[SIM_TICKS] = raises[SIM_TICKS];
}

/* The footprint at rest: at least the working set, at most two minimum steps above it. */
static void assert_at_working_set(const GoalRun *run, uint64_t ws, uint64_t from, uint64_t to, uint64_t slack,
                                  unsigned max_dips)
{
        unsigned dips = 0;

        for (uint64_t t = from; t <= to; t++) {
                g_assert_cmpuint(run->assigned[t], <=, ws + slack);
                dips += run->assigned[t] < ws;
        }
        g_assert_cmpuint(dips, <=, max_dips);
}

static const GoalCase converge_cases[] = {
        {"idle-heap", 640 * MiB, 512 * MiB, 96 * MiB, 64 * MiB, 0, 0, 0, 0},
        {"large-cache", 2048 * MiB, 1700 * MiB, 300 * MiB, 64 * MiB, 0, 0, 0, 0},
        {"background-paging-under-threshold", 640 * MiB, 512 * MiB, 96 * MiB, 64 * MiB, 0, 0, 0, 128 * 1024},
        {"everything-hot", 640 * MiB, 512 * MiB, 512 * MiB, 64 * MiB, 0, 0, 0, 0},
};

/* Converges to just above the working set and stays there for 1,000 ticks: after convergence the
 * footprint stays under ws + 2 steps (a re-probe's raise overshoots by that much at most), it dips below the
 * working set only in the few re-probes the backed-off floor allows, and the cap goes up at most once per
 * re-probe. */
static void test_goal_converges_just_above_working_set_without_oscillating(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(converge_cases); i++) {
                const GoalCase *c = &converge_cases[i];
                g_autofree GoalRun *run = g_new0(GoalRun, 1);
                uint64_t slack = 2 * MAX(8 * MiB, c->ws / 32);

                g_test_message("case %s", c->name);
                sim_run(c, run);
                assert_at_working_set(run, c->ws, 300, SIM_TICKS, slack + 2 * BALANCER_UNIT_BYTES, 30);
                g_assert_cmpuint(run->assigned[SIM_TICKS], >=, c->ws);
                /* Re-probes back off 60, 120, 240, 480 ticks: at most four more raises after tick 300. */
                g_assert_cmpuint(run->raises_after[300], <=, 4);
                /* What pressure-equalising alone would leave: want = committed + 20 %; freed most of it. */
                g_assert_cmpuint(run->assigned[SIM_TICKS], <, sim_want(c->committed, c->minimum, 4096 * MiB));
        }
}

/* When the working set grows the guest pages; the cap follows it up within 20 ticks and settles just above
 * it again. */
static void test_goal_returns_memory_when_working_set_grows(void)
{
        static const GoalCase cases[] = {
                {"ws-grows-committed-same", 640 * MiB, 512 * MiB, 96 * MiB, 64 * MiB, 500, 256 * MiB, 0, 0},
                {"ws-and-committed-grow", 640 * MiB, 512 * MiB, 96 * MiB, 64 * MiB, 500, 700 * MiB, 900 * MiB,
                 0},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const GoalCase *c = &cases[i];
                g_autofree GoalRun *run = g_new0(GoalRun, 1);
                uint64_t slack = 2 * MAX(8 * MiB, c->ws_after / 32) + 2 * BALANCER_UNIT_BYTES, reached = 500;

                g_test_message("case %s", c->name);
                sim_run(c, run);
                g_assert_cmpuint(run->assigned[499], <, c->ws_after);
                while (reached < SIM_TICKS && run->assigned[reached] < c->ws_after)
                        reached++;
                g_test_message("reached the new working set %" G_GUINT64_FORMAT " ticks after it grew",
                               reached - 500);
                /* Raises in a row double: 15 and 13 ticks here (39 and 25 when each raise was the same). */
                g_assert_cmpuint(reached, <=, 520);
                assert_at_working_set(run, c->ws_after, 700, SIM_TICKS, slack, 30);
                g_assert_cmpuint(run->assigned[SIM_TICKS], >=, c->ws_after);
        }
}

/* A working set that shrinks without committed falling is found by the floor's re-probes. */
static void test_goal_finds_working_set_that_shrinks(void)
{
        static const GoalCase c = {"ws-shrinks", 640 * MiB, 512 * MiB, 300 * MiB, 64 * MiB,
                                   300,          96 * MiB,  0,         0};
        g_autofree GoalRun *run = g_new0(GoalRun, 1);

        sim_run(&c, run);
        g_assert_cmpuint(run->assigned[299], >=, 280 * MiB); /* at the old working set, less a re-probe */
        g_assert_cmpuint(run->assigned[SIM_TICKS], >=, 96 * MiB);
        g_assert_cmpuint(run->assigned[SIM_TICKS], <=, 96 * MiB + 2 * 8 * MiB + BALANCER_UNIT_BYTES);
}

/* The cap never goes below Minimum: a working set under it rests at Minimum and never pages. */
static void test_goal_stops_at_minimum(void)
{
        static const GoalCase c = {"ws-under-minimum", 640 * MiB, 512 * MiB, 40 * MiB, 128 * MiB, 0, 0, 0, 0};
        g_autofree GoalRun *run = g_new0(GoalRun, 1);

        sim_run(&c, run);
        g_assert_cmpuint(run->assigned[SIM_TICKS], ==, 128 * MiB);
        g_assert_cmpuint(run->raises_after[0], ==, 0);
}

/* Samples that carry no evidence change nothing: no report, the same report again, a report too soon after
 * the last, an older report, a page-in counter that went back. */
static void test_goal_ignores_samples_without_evidence(void)
{
        static const struct {
                const char *name;
                uint64_t report_ns, page_in_total;
        } cases[] = {
                {"no-report", 0, 1000000},
                {"same-report", 10 * NS_PER_TICK, 1000000},
                {"too-soon", 10 * NS_PER_TICK + NS_PER_TICK / 4, 1000000},
                {"older-report", 5 * NS_PER_TICK, 1000000},
                {"counter-went-back", 11 * NS_PER_TICK, 0},
        };
        BalancerGoalConfig config;

        balancer_goal_config_init_default(&config);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                BalancerGoal goal;
                BalancerGoalInput in = {
                        .minimum_bytes = 64 * MiB,
                        .maximum_bytes = 1024 * MiB,
                        .assigned_bytes = 512 * MiB,
                        .committed_bytes = 400 * MiB,
                        .page_in_total = 100,
                        .report_ns = 10 * NS_PER_TICK,
                };
                BalancerGoalDecision decision;
                uint64_t cap, ticks;

                g_test_message("case %s", cases[i].name);
                balancer_goal_reset(&goal);
                cap = balancer_goal_sample(&goal, &config, &in, NULL);
                g_assert_cmpuint(cap, ==, 512 * MiB);
                ticks = goal.tick;
                in.report_ns = cases[i].report_ns;
                in.page_in_total = cases[i].page_in_total;
                g_assert_cmpuint(balancer_goal_sample(&goal, &config, &in, &decision), ==, cap);
                g_assert_cmpint(decision, ==, BALANCER_GOAL_WAIT);
                g_assert_cmpuint(goal.tick, ==, ticks);
        }
}

/* Before the first report the cap is no cap (Maximum); it is always clamped to [Minimum, Maximum]. */
static void test_goal_cap_is_within_settings(void)
{
        BalancerGoalConfig config;
        BalancerGoal goal;
        BalancerGoalInput in = {.minimum_bytes = 64 * MiB, .maximum_bytes = 1024 * MiB + 4096};

        balancer_goal_config_init_default(&config);
        balancer_goal_reset(&goal);
        g_assert_cmpuint(balancer_goal_sample(&goal, &config, &in, NULL), ==, 1024 * MiB);
        in.report_ns = NS_PER_TICK;
        in.assigned_bytes = 2048 * MiB; /* above Maximum: the cap is not */
        g_assert_cmpuint(balancer_goal_sample(&goal, &config, &in, NULL), ==, 1024 * MiB);
}

/* The balancer honours the cap: want is min(committed + Buffer, cap), within [Minimum, Maximum]; 0 is no
 * cap. */
static void test_balancer_target_honours_goal_cap(void)
{
        static const struct {
                const char *name;
                uint64_t cap, want;
        } cases[] = {
                {"no-cap", 0, 480 * MiB}, /* committed 400 MiB + 20 % */
                {"cap-below-want", 128 * MiB, 128 * MiB},
                {"cap-above-want", 1024 * MiB, 480 * MiB},
                {"cap-below-minimum", 32 * MiB, 64 * MiB},
                {"cap-not-whole-units", 129 * MiB, 128 * MiB},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(Balancer) balancer = NULL;
                g_autoptr(BalancerPlan) plan = NULL;
                BalancerVm vm = {
                        .id = 1,
                        .dynamic_memory_enabled = true,
                        .running = true,
                        .minimum_bytes = 64 * MiB,
                        .maximum_bytes = 2048 * MiB,
                        .buffer_percent = 20,
                        .priority = 50,
                        .assigned_bytes = 512 * MiB,
                        .committed_bytes = 400 * MiB,
                        .committed_time_ns = NS_PER_TICK,
                        .goal_cap_bytes = cases[i].cap,
                };
                BalancerSnapshot snapshot = {
                        .host = {.now_ns = NS_PER_TICK,
                                 .pool_total_bytes = 4096 * MiB,
                                 .pool_available_bytes = 3584 * MiB,
                                 .reserve_bytes = 256 * MiB},
                        .vms = &vm,
                        .n_vms = 1,
                };

                g_test_message("case %s", cases[i].name);
                g_assert_cmpint(balancer_new(NULL, &balancer), ==, 0);
                g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, 0);
                g_assert_cmpuint(plan->vms[0].want_bytes, ==, cases[i].want);
                g_assert_cmpuint(plan->vms[0].target_bytes, ==, cases[i].want);
        }
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/balancer-goal/converges_just_above_working_set_without_oscillating",
                        test_goal_converges_just_above_working_set_without_oscillating);
        g_test_add_func("/balancer-goal/returns_memory_when_working_set_grows",
                        test_goal_returns_memory_when_working_set_grows);
        g_test_add_func("/balancer-goal/finds_working_set_that_shrinks",
                        test_goal_finds_working_set_that_shrinks);
        g_test_add_func("/balancer-goal/stops_at_minimum", test_goal_stops_at_minimum);
        g_test_add_func("/balancer-goal/ignores_samples_without_evidence",
                        test_goal_ignores_samples_without_evidence);
        g_test_add_func("/balancer-goal/cap_is_within_settings", test_goal_cap_is_within_settings);
        g_test_add_func("/balancer-goal/balancer_target_honours_goal_cap",
                        test_balancer_target_honours_goal_cap);
        return g_test_run();
}
