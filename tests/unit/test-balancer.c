/* The Dynamic Memory balancer keeps its promises: targets, priority bands, clamps, reserve, step bounds,
 * hysteresis, reports and counters — checked in a closed loop where actions change assigned memory and
 * balloons take time to return their pages. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "balancer.h"

#define MiB (UINT64_C(1) << 20)
#define NSEC_PER_TICK 1000000000ull
#define SIM_MAX_VMS 8
#define SIM_MAX_BALLOONS 16

/* The model: a pool, VMs whose assigned memory moves by the plan's actions, and balloons whose pages come
 * back balloon_latency ticks after the remove. Every tick checks the invariants the balancer promises. */
typedef struct SimBalloon {
        uint64_t bytes;
        uint64_t due_tick;
} SimBalloon;

typedef struct SimVm {
        BalancerVm vm;
        bool reporting;
        SimBalloon balloons[SIM_MAX_BALLOONS];
        int last_direction;
        unsigned direction_changes;
        uint64_t balloon_short_bytes; /* each balloon comes back this much short (the guest had no more) */
} SimVm;

typedef struct Sim {
        Balancer *balancer;
        BalancerConfig config;
        BalancerHost host;
        SimVm vms[SIM_MAX_VMS];
        size_t n_vms;
        uint64_t tick;
        unsigned balloon_latency;
        uint64_t tick_adds; /* bytes added in this tick, its prompt plans included */
        FILE *csv;
} Sim;

static void sim_init_with(Sim *sim, uint64_t pool_bytes, uint64_t reserve_bytes, const BalancerConfig *config)
{
        memset(sim, 0, sizeof(*sim));
        if (config)
                sim->config = *config;
        else
                balancer_config_init_default(&sim->config);
        g_assert_cmpint(balancer_new(&sim->config, &sim->balancer), ==, 0);
        sim->host.pool_total_bytes = pool_bytes;
        sim->host.pool_available_bytes = pool_bytes;
        sim->host.reserve_bytes = reserve_bytes;
        sim->balloon_latency = 1;
}

static void sim_init(Sim *sim, uint64_t pool_bytes, uint64_t reserve_bytes)
{
        sim_init_with(sim, pool_bytes, reserve_bytes, NULL);
}

static void sim_clear(Sim *sim)
{
        g_clear_pointer(&sim->balancer, balancer_free);
}

static SimVm *sim_add_vm(Sim *sim, uint64_t min_mib, uint64_t max_mib, uint32_t buffer, uint32_t priority,
                         uint64_t assigned_mib, uint64_t committed_mib)
{
        SimVm *v;

        g_assert_cmpuint(sim->n_vms, <, SIM_MAX_VMS);
        g_assert_cmpuint(sim->host.pool_available_bytes, >=, assigned_mib * MiB);
        v = &sim->vms[sim->n_vms];
        memset(v, 0, sizeof(*v));
        v->vm = (BalancerVm){
                .id = sim->n_vms + 1,
                .dynamic_memory_enabled = true,
                .running = true,
                .minimum_bytes = min_mib * MiB,
                .maximum_bytes = max_mib * MiB,
                .buffer_percent = buffer,
                .priority = priority,
                .assigned_bytes = assigned_mib * MiB,
                .committed_bytes = committed_mib * MiB,
        };
        v->reporting = true;
        sim->host.pool_available_bytes -= assigned_mib * MiB;
        sim->n_vms++;
        return v;
}

static SimVm *sim_vm(Sim *sim, uint64_t id)
{
        g_assert_cmpuint(id, >=, 1);
        g_assert_cmpuint(id, <=, sim->n_vms);
        return &sim->vms[id - 1];
}

static const BalancerVmCounters *plan_vm(const BalancerPlan *plan, uint64_t id)
{
        for (size_t i = 0; i < plan->n_vms; i++)
                if (plan->vms[i].vm_id == id)
                        return &plan->vms[i];
        g_assert_not_reached();
}

static const BalancerAction *plan_action(const BalancerPlan *plan, uint64_t id)
{
        for (size_t i = 0; i < plan->n_actions; i++)
                if (plan->actions[i].vm_id == id)
                        return &plan->actions[i];
        return NULL;
}

static uint32_t sim_pressure(const SimVm *v)
{
        return (uint32_t)((v->vm.committed_bytes * 100 + v->vm.assigned_bytes / 2) / v->vm.assigned_bytes);
}

static void sim_stop_vm(Sim *sim, SimVm *v)
{
        v->vm.running = false;
        sim->host.pool_available_bytes += v->vm.assigned_bytes - v->vm.pending_remove_bytes;
        v->vm.assigned_bytes = v->vm.pending_remove_bytes; /* the balloon's pages still come back */
}

static bool sim_balloons_in_flight(const Sim *sim)
{
        for (size_t i = 0; i < sim->n_vms; i++)
                if (sim->vms[i].vm.pending_remove_bytes)
                        return true;
        return false;
}

static void sim_check_and_apply(Sim *sim, const BalancerPlan *plan)
{
        const BalancerConfig *config = &sim->config;
        uint64_t adds = 0, removes = 0;
        uint64_t giveable = sim->host.pool_available_bytes > sim->host.reserve_bytes
                                    ? sim->host.pool_available_bytes - sim->host.reserve_bytes
                                    : 0;
        bool acted[SIM_MAX_VMS] = {false};

        for (size_t i = 0; i < plan->n_actions; i++) {
                const BalancerAction *a = &plan->actions[i];
                SimVm *v = sim_vm(sim, a->vm_id);
                uint64_t before = v->vm.assigned_bytes - v->vm.pending_remove_bytes, after;
                int direction = a->kind == BALANCER_ACTION_ADD ? 1 : -1;

                g_assert_false(acted[a->vm_id - 1]);
                acted[a->vm_id - 1] = true;
                g_assert_cmpint(plan_vm(plan, a->vm_id)->status, ==, BALANCER_VM_BALANCED);
                g_assert_cmpuint(a->bytes, >, 0);
                g_assert_cmpuint(a->bytes % BALANCER_UNIT_BYTES, ==, 0);
                g_assert_cmpstr(a->reason, !=, "");
                if (a->kind == BALANCER_ACTION_ADD) {
                        /* Past the per-VM step only where the host has room, and never past the target. */
                        if (!plan->room)
                                g_assert_cmpuint(a->bytes, <=, config->max_add_per_vm_bytes);
                        /* Counted from whole units: assigned may lie between them (a short balloon). */
                        g_assert_cmpuint(before / BALANCER_UNIT_BYTES * BALANCER_UNIT_BYTES + a->bytes, <=,
                                         plan_vm(plan, a->vm_id)->target_bytes);
                        adds += a->bytes;
                        after = before + a->bytes;
                        v->vm.assigned_bytes += a->bytes;
                        sim->host.pool_available_bytes -= a->bytes;
                } else {
                        SimBalloon *slot = NULL;

                        g_assert_false(plan->prompt); /* prompt plans only add */
                        /* 256 MiB where the target leaves the guest all it has committed, else 128. */
                        if (plan_vm(plan, a->vm_id)->target_bytes >= v->vm.committed_bytes)
                                g_assert_cmpuint(a->bytes, <=, config->max_remove_free_per_vm_bytes);
                        else
                                g_assert_cmpuint(a->bytes, <=, config->max_remove_per_vm_bytes);
                        g_assert_cmpuint(a->bytes, <=, before);
                        removes += a->bytes;
                        after = before - a->bytes;
                        for (size_t k = 0; k < SIM_MAX_BALLOONS && !slot; k++)
                                if (v->balloons[k].bytes == 0)
                                        slot = &v->balloons[k];
                        g_assert_nonnull(slot);
                        *slot = (SimBalloon){a->bytes, sim->tick + sim->balloon_latency};
                        v->vm.pending_remove_bytes += a->bytes;
                }
                /* Never below Minimum nor above Maximum, once inside. */
                if (before >= v->vm.minimum_bytes)
                        g_assert_cmpuint(after, >=, v->vm.minimum_bytes);
                if (before <= v->vm.maximum_bytes)
                        g_assert_cmpuint(after, <=, v->vm.maximum_bytes);
                if (v->last_direction && v->last_direction != direction)
                        v->direction_changes++;
                v->last_direction = direction;
        }
        /* Per-tick totals (prompt plans share their tick's), and adds only from memory that is back now,
         * above the reserve. */
        sim->tick_adds += adds;
        g_assert_cmpuint(sim->tick_adds, <=, config->max_add_total_bytes);
        g_assert_cmpuint(removes, <=, config->max_remove_total_bytes);
        g_assert_cmpuint(adds, <=, giveable);
}

/* One tick of the closed loop: balloons due come back, guests report, the balancer plans, the plan is
 * checked and carried out. The caller sets committed_bytes before and frees the plan after. */
static BalancerPlan *sim_tick(Sim *sim)
{
        BalancerVm snapshot_vms[SIM_MAX_VMS];
        BalancerSnapshot snapshot;
        BalancerPlan *plan = NULL;

        sim->tick++;
        sim->tick_adds = 0;
        sim->host.now_ns = sim->tick * NSEC_PER_TICK;
        for (size_t i = 0; i < sim->n_vms; i++) {
                SimVm *v = &sim->vms[i];

                for (size_t k = 0; k < SIM_MAX_BALLOONS; k++) {
                        if (v->balloons[k].bytes && v->balloons[k].due_tick <= sim->tick) {
                                uint64_t back = v->balloons[k].bytes -
                                                MIN(v->balloon_short_bytes, v->balloons[k].bytes);

                                v->vm.assigned_bytes -= back;
                                v->vm.pending_remove_bytes -= v->balloons[k].bytes;
                                sim->host.pool_available_bytes += back;
                                v->balloons[k].bytes = 0;
                        }
                }
                if (v->reporting && v->vm.running)
                        v->vm.committed_time_ns = sim->host.now_ns;
                snapshot_vms[i] = v->vm;
        }
        snapshot = (BalancerSnapshot){sim->host, snapshot_vms, sim->n_vms};
        g_assert_cmpint(balancer_plan(sim->balancer, &snapshot, &plan), ==, 0);
        g_assert_cmpuint(plan->tick, ==, sim->tick);
        sim_check_and_apply(sim, plan);
        if (sim->csv) {
                for (size_t i = 0; i < sim->n_vms; i++) {
                        const SimVm *v = &sim->vms[i];

                        fprintf(sim->csv,
                                "%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT ",%d,%" G_GUINT64_FORMAT
                                ",%" G_GUINT64_FORMAT ",%u,%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "\n",
                                sim->tick, v->vm.id, v->vm.running, v->vm.assigned_bytes / MiB,
                                v->vm.committed_bytes / MiB, v->vm.running ? sim_pressure(v) : 0,
                                plan_vm(plan, v->vm.id)->target_bytes / MiB,
                                sim->host.pool_available_bytes / MiB);
                }
        }
        return plan;
}

/* A prompt plan between ticks (a guest's prompt report), checked and carried out like a tick's. */
static BalancerPlan *sim_prompt(Sim *sim)
{
        BalancerVm snapshot_vms[SIM_MAX_VMS];
        BalancerSnapshot snapshot;
        BalancerPlan *plan = NULL;

        sim->host.now_ns += NSEC_PER_TICK / 5;
        for (size_t i = 0; i < sim->n_vms; i++) {
                if (sim->vms[i].reporting && sim->vms[i].vm.running)
                        sim->vms[i].vm.committed_time_ns = sim->host.now_ns;
                snapshot_vms[i] = sim->vms[i].vm;
        }
        snapshot = (BalancerSnapshot){sim->host, snapshot_vms, sim->n_vms};
        g_assert_cmpint(balancer_plan_prompt(sim->balancer, &snapshot, &plan), ==, 0);
        g_assert_true(plan->prompt);
        g_assert_cmpuint(plan->tick, ==, sim->tick); /* the tick does not advance */
        sim_check_and_apply(sim, plan);
        return plan;
}

static bool plan_quiet(const BalancerPlan *plan)
{
        return plan->n_actions == 0 && plan->n_deferred == 0;
}

/* Runs until a tick has nothing to do and no balloon is in flight; returns how many ticks carried actions
 * before that (the convergence time), or fails the test after max_ticks. */
static uint64_t sim_run_until_converged(Sim *sim, uint64_t max_ticks)
{
        uint64_t start = sim->tick, last_active = sim->tick;

        for (uint64_t t = 0; t < max_ticks; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(sim);

                if (!plan_quiet(plan) || sim_balloons_in_flight(sim))
                        last_active = sim->tick;
                else
                        return last_active - start;
        }
        g_test_message("no convergence within %" G_GUINT64_FORMAT " ticks", max_ticks);
        g_assert_not_reached();
}

static void sim_assert_quiet_for(Sim *sim, uint64_t ticks)
{
        for (uint64_t t = 0; t < ticks; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(sim);

                g_assert_cmpuint(plan->n_actions, ==, 0);
        }
}

/* Steady workloads: start somewhere, converge, stay put, land where the policy says. */
enum {
        VM_EQUALISED = 1 << 0, /* pressures of the flagged VMs agree within 1 point */
        VM_DM_OFF = 1 << 1,
        VM_STOPPED = 1 << 2,
};

typedef struct VmSpec {
        uint64_t min_mib, max_mib;
        uint32_t buffer, priority;
        uint64_t start_mib, committed_mib;
        uint64_t expect_mib; /* final assigned; 0: not checked */
        unsigned flags;
} VmSpec;

#define VM(min, max, buffer, priority, start, committed, expect, flags)                                      \
        {                                                                                                    \
                (min), (max), (buffer), (priority), (start), (committed), (expect), (flags)                  \
        }

typedef struct SteadyCase {
        const char *name;
        uint64_t pool_mib, reserve_mib;
        uint64_t max_ticks;
        VmSpec vms[SIM_MAX_VMS];
} SteadyCase;

/* VM(minimum, maximum, buffer %, priority, start assigned, committed, expected assigned, flags), in MiB. */
static const SteadyCase steady_cases[] = {
        {"enough_memory_gives_everyone_committed_plus_buffer",
         4096,
         256,
         20,
         {VM(512, 2048, 20, 50, 512, 800, 960, 0), VM(256, 2048, 20, 50, 1024, 300, 360, 0),
          VM(256, 1024, 50, 30, 256, 400, 600, 0), VM(256, 1024, 20, 90, 300, 100, 256, 0)}},
        {"shortage_in_one_band_equalises_pressure",
         3072,
         0,
         20,
         {VM(256, 4096, 20, 50, 768, 1200, 0, VM_EQUALISED), VM(256, 4096, 20, 50, 768, 900, 0, VM_EQUALISED),
          VM(256, 4096, 20, 45, 768, 600, 0, VM_EQUALISED),
          VM(256, 4096, 20, 59, 768, 300, 0, VM_EQUALISED)}},
        {"shortage_across_bands_serves_higher_priority_first",
         2304,
         0,
         20,
         {VM(256, 2048, 20, 90, 512, 1000, 1200, 0), VM(256, 2048, 20, 80, 256, 400, 480, 0),
          VM(256, 2048, 20, 10, 1024, 800, 256, 0), VM(128, 2048, 20, 50, 512, 500, 368, 0)}},
        {"lower_band_is_squeezed_to_its_minimum_and_not_below",
         1024,
         0,
         20,
         {VM(256, 4096, 20, 100, 256, 4000, 768, 0), VM(256, 1024, 20, 0, 768, 700, 256, 0)}},
        {"want_is_clamped_to_minimum_and_maximum",
         8192,
         0,
         20,
         {VM(512, 2048, 20, 50, 1024, 10, 512, 0), VM(256, 1024, 20, 50, 512, 3000, 1024, 0),
          VM(512, 2048, 20, 50, 256, 100, 512, 0)}},
        {"buffer_sets_the_target",
         16384,
         0,
         40,
         {VM(256, 4096, 5, 50, 256, 500, 526, 0), VM(256, 4096, 20, 50, 256, 500, 600, 0),
          VM(256, 4096, 100, 50, 256, 500, 1000, 0), VM(256, 4096, 2000, 50, 256, 500, 4096, 0)}},
        {"host_reserve_is_never_given_away",
         2048,
         512,
         20,
         {VM(256, 2048, 20, 50, 256, 1000, 768, 0), VM(256, 2048, 20, 50, 256, 1000, 768, 0)}},
        {"breached_reserve_is_taken_back",
         2048,
         512,
         20,
         {VM(256, 2048, 20, 50, 1024, 900, 768, 0), VM(256, 2048, 20, 50, 1024, 900, 768, 0)}},
        {"unmanaged_vms_count_as_used_and_are_left_alone",
         3072,
         256,
         20,
         {VM(256, 4096, 20, 50, 1024, 2000, 1024, VM_DM_OFF),
          VM(256, 4096, 20, 50, 512, 2000, 512, VM_STOPPED), VM(256, 4096, 20, 50, 256, 2000, 1280, 0)}},
};

static void test_steady_case(gconstpointer data)
{
        const SteadyCase *tc = data;
        uint32_t low = UINT32_MAX, high = 0;
        uint64_t ticks;
        Sim sim;

        sim_init(&sim, tc->pool_mib * MiB, tc->reserve_mib * MiB);
        for (size_t i = 0; i < SIM_MAX_VMS && tc->vms[i].min_mib; i++) {
                const VmSpec *s = &tc->vms[i];
                SimVm *v = sim_add_vm(&sim, s->min_mib, s->max_mib, s->buffer, s->priority, s->start_mib,
                                      s->committed_mib);

                v->vm.dynamic_memory_enabled = !(s->flags & VM_DM_OFF);
                v->vm.running = !(s->flags & VM_STOPPED);
        }
        ticks = sim_run_until_converged(&sim, tc->max_ticks);
        g_test_message("%s: converged in %" G_GUINT64_FORMAT " ticks", tc->name, ticks);
        sim_assert_quiet_for(&sim, 20);

        for (size_t i = 0; i < sim.n_vms; i++) {
                const VmSpec *s = &tc->vms[i];
                const SimVm *v = &sim.vms[i];

                g_test_message("VM %zu: assigned %" G_GUINT64_FORMAT " MiB, pressure %u", i + 1,
                               v->vm.assigned_bytes / MiB, sim_pressure(v));
                if (s->expect_mib)
                        g_assert_cmpuint(v->vm.assigned_bytes / MiB, ==, s->expect_mib);
                if (s->flags & VM_EQUALISED) {
                        low = MIN(low, sim_pressure(v));
                        high = MAX(high, sim_pressure(v));
                }
                g_assert_cmpuint(v->direction_changes, <=, 1);
        }
        if (high > 0)
                g_assert_cmpuint(high - low, <=, 1);
        if (tc->reserve_mib)
                g_assert_cmpuint(sim.host.pool_available_bytes, >=, tc->reserve_mib * MiB);
        sim_clear(&sim);
}

/* Step bounds: where the host has room an add takes its whole gap in one tick; where memory is short (or
 * for removes) no action exceeds the bounds (checked every tick by the model) and a move of a known size
 * takes a known number of ticks, in equal steps. */
typedef struct StepCase {
        const char *name;
        size_t n_vms;
        uint64_t min_mib, max_mib, start_mib, committed_mib;
        uint64_t reserve_mib; /* of a 16 GiB pool: a large one leaves the VMs short of their want */
        uint64_t expect_ticks;
        uint64_t expect_step_mib; /* every action of the run */
} StepCase;

static const StepCase step_cases[] = {
        {"add_of_1_GiB_with_room_is_one_tick", 1, 256, 4096, 512, 1280, 0, 1, 1024},
        {"add_of_1_GiB_in_a_short_pool_takes_four_ticks_of_256_MiB", 1, 256, 4096, 512, 1300, 14848, 4, 256},
        {"remove_of_512_MiB_of_free_memory_takes_two_ticks_of_256_MiB", 1, 512, 4096, 1024, 100, 0, 2, 256},
        {"remove_of_600_MiB_of_free_memory_takes_three_equal_ticks", 1, 424, 4096, 1024, 100, 0, 3, 200},
        /* 512 MiB above the reserve for a VM that has committed 900: the guest pages, 128 MiB a tick. */
        {"remove_that_makes_the_guest_page_takes_four_ticks_of_128_MiB", 1, 256, 4096, 1024, 900, 15872, 4,
         128},
        {"gap_just_over_one_step_with_room_is_one_tick", 1, 256, 4096, 508, 640, 0, 1, 260},
        {"gap_just_over_one_step_in_a_short_pool_is_cut_in_two_equal_steps", 1, 256, 4096, 508, 660, 15616, 2,
         130},
        {"total_bound_spreads_eight_adds_over_two_ticks", 8, 256, 4096, 256, 426, 0, 2, 256},
};

static void test_step_case(gconstpointer data)
{
        const StepCase *tc = data;
        uint64_t start = 0, last_active = 0;
        Sim sim;

        sim_init(&sim, 16384 * MiB, tc->reserve_mib * MiB);
        for (size_t i = 0; i < tc->n_vms; i++)
                sim_add_vm(&sim, tc->min_mib, tc->max_mib, 20, 50, tc->start_mib, tc->committed_mib);
        for (uint64_t t = 0; t < 20; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                for (size_t i = 0; i < plan->n_actions; i++)
                        g_assert_cmpuint(plan->actions[i].bytes, ==, tc->expect_step_mib * MiB);
                if (plan->n_actions) {
                        start = start ? start : sim.tick;
                        last_active = sim.tick;
                }
        }
        g_assert_cmpuint(last_active - start + 1, ==, tc->expect_ticks);
        sim_clear(&sim);
}

/* A steady workload converges within 20 ticks, then the balancer stays silent; no VM ever turns back more
 * than once. With jitter, committed wanders ±jitter_permille around its level every tick, like a real
 * guest's report: a VM resting inside its dead band may take one late correction when the noise pushes
 * the gap past the band's edge (it then rests on the target, where the noise alone cannot reach the
 * edge), never a back-and-forth. */
typedef struct SteadyRunCase {
        const char *name;
        unsigned jitter_permille;
        uint64_t max_late_actions; /* after tick 20 */
} SteadyRunCase;

static const SteadyRunCase steady_run_cases[] = {
        {"no_oscillation_over_1000_ticks_of_a_steady_workload", 0, 0},
        {"no_oscillation_over_1000_ticks_of_a_jittery_workload", 5, 6},
};

static void test_no_oscillation(gconstpointer data)
{
        const SteadyRunCase *tc = data;
        static const uint64_t committed_mib[] = {1200, 800, 1500, 1000, 700, 400};
        static const uint32_t priority[] = {80, 90, 50, 50, 40, 59};
        g_autoptr(GRand) rand = g_rand_new_with_seed(42);
        uint64_t last_active = 0, late_actions = 0;
        Sim sim;

        sim_init(&sim, 6144 * MiB, 256 * MiB);
        for (size_t i = 0; i < G_N_ELEMENTS(committed_mib); i++)
                sim_add_vm(&sim, 256, 4096, 20, priority[i], 960, committed_mib[i]);
        for (uint64_t t = 0; t < 1000; t++) {
                g_autoptr(BalancerPlan) plan = NULL;

                for (size_t i = 0; i < sim.n_vms; i++) {
                        double jitter = g_rand_double_range(rand, -1.0, 1.0) * tc->jitter_permille / 1000.0;

                        sim.vms[i].vm.committed_bytes =
                                (uint64_t)(committed_mib[i] * MiB * (1.0 + jitter)) & ~4095ull;
                }
                plan = sim_tick(&sim);
                g_assert_cmpint(plan->outcome, ==, BALANCER_OUTCOME_SHORTAGE);
                if (plan->n_actions)
                        last_active = sim.tick;
                if (sim.tick > 20)
                        late_actions += plan->n_actions;
        }
        g_test_message("%s: last action at tick %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT " after tick 20",
                       tc->name, last_active, late_actions);
        g_assert_cmpuint(late_actions, <=, tc->max_late_actions);
        for (size_t i = 0; i < sim.n_vms; i++)
                g_assert_cmpuint(sim.vms[i].direction_changes, <=, 1);
        sim_clear(&sim);
}

/* Step changes in demand, closed loop, with prompt plans between ticks as vmmsd runs them on a guest's
 * prompt report: VM 1's committed memory steps up by step_mib at tick 50, holds, and falls back at tick
 * 400; the other VMs stay steady. Checked: the step is met within expect_up_ticks (adds in one tick where
 * there is room), every tick's bounds and the reserve hold (the model checks each plan), the balancer is
 * silent for the 50 ticks before each change and for the last 100 (no oscillation over 1,000 ticks), and
 * no VM turns back more than once per change in demand. */
typedef struct StepRunCase {
        const char *name;
        uint64_t pool_mib, reserve_mib;
        size_t n_vms;      /* VM 1 steps; the others commit other_committed_mib */
        uint64_t rest_mib; /* VM 1's committed at rest */
        uint64_t step_mib; /* added to it at tick 50, taken away at tick 400 */
        uint64_t other_committed_mib;
        uint64_t expect_up_ticks;   /* from the step to VM 1 at its target */
        uint64_t expect_down_ticks; /* from the fall back to VM 1 at its target, balloons back */
        unsigned prompts_per_tick;
} StepRunCase;

/* Down: with room, VM 1 gives back what it no longer uses (everything above its new want) at 256 MiB a tick
 * in equal steps; in a short pool it gives it to the others waiting for it. */
static const StepRunCase step_run_cases[] = {
        {"step_of_64_MiB_with_room_is_met_in_one_tick", 8192, 512, 1, 200, 64, 0, 1, 1, 4},
        {"step_of_512_MiB_with_room_is_met_in_one_tick", 8192, 512, 1, 50, 512, 0, 1, 3, 4},
        {"step_of_2_GiB_with_room_is_met_in_three_ticks", 8192, 512, 1, 50, 2048, 0, 3, 10, 4},
        {"step_of_512_MiB_with_room_beside_steady_vms", 8192, 512, 4, 50, 512, 600, 1, 3, 4},
        {"step_of_512_MiB_without_prompt_plans", 8192, 512, 2, 50, 512, 600, 1, 3, 0},
        {"step_of_512_MiB_in_a_short_pool_moves_in_bounded_steps", 2048, 256, 3, 50, 512, 500, 8, 3, 4},
        {"step_of_1_GiB_in_a_short_pool_moves_in_bounded_steps", 2048, 256, 3, 200, 1024, 400, 8, 4, 4},
        {"step_of_256_MiB_in_a_short_pool_moves_in_bounded_steps", 1536, 128, 2, 300, 256, 500, 8, 2, 4},
};

static uint64_t sim_step_run_vm_target(const BalancerPlan *plan)
{
        return plan_vm(plan, 1)->target_bytes;
}

static void test_step_run(gconstpointer data)
{
        const StepRunCase *tc = data;
        uint64_t up_ticks = 0, down_ticks = 0, last_action = 0, changes_in_demand = 2;
        Sim sim;

        sim_init(&sim, tc->pool_mib * MiB, tc->reserve_mib * MiB);
        sim_add_vm(&sim, 64, 4096, 20, 50, 128, tc->rest_mib);
        for (size_t i = 1; i < tc->n_vms; i++)
                sim_add_vm(&sim, 64, 4096, 20, 50, 128, tc->other_committed_mib);
        for (uint64_t t = 1; t <= 1000; t++) {
                g_autoptr(BalancerPlan) plan = NULL;
                SimVm *v = &sim.vms[0];
                bool acted;

                if (t == 50)
                        v->vm.committed_bytes = (tc->rest_mib + tc->step_mib) * MiB;
                if (t == 400)
                        v->vm.committed_bytes = tc->rest_mib * MiB;
                plan = sim_tick(&sim);
                acted = plan->n_actions > 0;
                if (t >= 50 && t < 400 && !up_ticks && v->vm.assigned_bytes == sim_step_run_vm_target(plan) &&
                    plan->n_deferred == 0 && !acted)
                        up_ticks = t - 50;
                if (t >= 400 && !down_ticks && v->vm.assigned_bytes == sim_step_run_vm_target(plan) &&
                    plan->n_deferred == 0 && !acted && !sim_balloons_in_flight(&sim))
                        down_ticks = t - 400;
                for (unsigned k = 0; k < tc->prompts_per_tick; k++) {
                        g_autoptr(BalancerPlan) prompt = sim_prompt(&sim);

                        acted = acted || prompt->n_actions > 0;
                }
                if (acted)
                        last_action = t;
                /* Silent before each change in demand, and at the end. */
                g_assert_false(acted && ((t >= 0 + 350 && t < 400) || (t >= 900)));
                g_assert_false(acted && t > 10 && t < 50);
                if (sim.host.pool_available_bytes < sim.host.reserve_bytes)
                        g_assert_cmpuint(t, <, 10); /* only the start may find the reserve short */
        }
        g_test_message("%s: up in %" G_GUINT64_FORMAT " ticks, down in %" G_GUINT64_FORMAT
                       " ticks, last action at tick %" G_GUINT64_FORMAT,
                       tc->name, up_ticks, down_ticks, last_action);
        g_assert_cmpuint(up_ticks, >, 0);
        /* up_ticks counts to the first quiet tick: the move's ticks, plus one when prompts do not act. */
        g_assert_cmpuint(up_ticks, <=, tc->expect_up_ticks + 1);
        /* down_ticks too, and the last balloon comes back a tick after it is asked for. */
        g_assert_cmpuint(down_ticks, >, 0);
        g_assert_cmpuint(down_ticks, <=, tc->expect_down_ticks + 1);
        for (size_t i = 0; i < sim.n_vms; i++) {
                g_test_message("VM %zu: %u direction changes", i + 1, sim.vms[i].direction_changes);
                g_assert_cmpuint(sim.vms[i].direction_changes, <=, changes_in_demand);
        }
        g_assert_cmpuint(sim.host.pool_available_bytes, >=, sim.host.reserve_bytes);
        sim_clear(&sim);
}

/* A prompt plan adds the whole gap at once where the host has room, does not advance the tick, and never
 * removes; where memory is short it leaves the move to the tick's bounded steps. */
static void test_prompt_plan_adds_the_whole_gap_only_where_there_is_room(void)
{
        Sim sim;

        sim_init(&sim, 4096 * MiB, 256 * MiB);
        sim_add_vm(&sim, 64, 4096, 20, 50, 128, 100);
        sim_add_vm(&sim, 64, 4096, 20, 50, 1024, 100); /* wants 120: a remove is due, but not from a prompt */
        sim_vm(&sim, 1)->vm.committed_bytes = 800 * MiB;
        {
                g_autoptr(BalancerPlan) plan = sim_prompt(&sim);
                const BalancerAction *a = plan_action(plan, 1);

                g_assert_true(plan->room);
                g_assert_nonnull(a);
                g_assert_cmpint(a->kind, ==, BALANCER_ACTION_ADD);
                g_assert_cmpuint(a->bytes, ==, 960 * MiB - 128 * MiB);
                g_assert_null(plan_action(plan, 2));
                g_assert_cmpuint(plan->tick, ==, 0);
        }
        sim_clear(&sim);

        /* Short: 1536 MiB above the reserve for wants of 2400 and 2400. */
        sim_init(&sim, 2048 * MiB, 512 * MiB);
        sim_add_vm(&sim, 64, 4096, 20, 50, 512, 500);
        sim_add_vm(&sim, 64, 4096, 20, 50, 512, 500);
        {
                g_autoptr(BalancerPlan) tick = sim_tick(&sim);
        }
        sim_vm(&sim, 1)->vm.committed_bytes = 2000 * MiB;
        sim_vm(&sim, 2)->vm.committed_bytes = 2000 * MiB;
        {
                g_autoptr(BalancerPlan) plan = sim_prompt(&sim);

                g_assert_false(plan->room);
                g_assert_cmpuint(plan->n_actions, ==, 0);
                g_assert_cmpuint(plan->n_deferred, >, 0);
        }
        {
                g_autoptr(BalancerPlan) tick = sim_tick(&sim);

                g_assert_cmpint(tick->outcome, ==, BALANCER_OUTCOME_SHORTAGE);
                for (size_t i = 0; i < tick->n_actions; i++)
                        g_assert_cmpuint(tick->actions[i].bytes, <=, sim.config.max_add_per_vm_bytes);
        }
        sim_clear(&sim);
}

/* Prompt plans spend what is left of their tick's add budget: many of them cannot add more in one tick
 * than the tick itself may. */
static void test_prompt_plans_share_the_tick_add_budget(void)
{
        Sim sim;
        uint64_t added = 0;

        sim_init(&sim, 16384 * MiB, 0);
        for (size_t i = 0; i < 4; i++)
                sim_add_vm(&sim, 64, 4096, 20, 50, 128, 100);
        {
                g_autoptr(BalancerPlan) tick = sim_tick(&sim);
        }
        for (size_t i = 0; i < 4; i++) {
                g_autoptr(BalancerPlan) plan = NULL;

                sim.vms[i].vm.committed_bytes = 600 * MiB; /* wants 720: a gap of 600 each */
                plan = sim_prompt(&sim);
                for (size_t k = 0; k < plan->n_actions; k++)
                        added += plan->actions[k].bytes;
        }
        g_assert_cmpuint(added, ==, sim.config.max_add_total_bytes); /* sim_prompt checks it per tick */
        {
                g_autoptr(BalancerPlan) tick = sim_tick(&sim);

                g_assert_cmpuint(tick->n_actions, >, 0); /* the next tick carries on */
        }
        sim_clear(&sim);
}

/* A guest that stops reporting is held where it is once its report is stale, its memory counting as used;
 * it rejoins when it reports again. A guest that never reported is held from the start. */
static void test_guest_that_stops_reporting_is_held(void)
{
        Sim sim;
        SimVm *quiet, *busy, *silent;
        uint64_t held_at;

        sim_init(&sim, 2048 * MiB, 0);
        quiet = sim_add_vm(&sim, 256, 2048, 20, 50, 768, 600);
        busy = sim_add_vm(&sim, 256, 2048, 20, 50, 512, 400);
        silent = sim_add_vm(&sim, 256, 2048, 20, 50, 256, 0);
        silent->reporting = false;
        sim_run_until_converged(&sim, 20);
        g_assert_cmpuint(quiet->vm.assigned_bytes, ==, 720 * MiB);
        g_assert_cmpuint(busy->vm.assigned_bytes, ==, 480 * MiB);

        /* The quiet guest's reports stop: vmmsd keeps passing its last figure, ageing. It is still believed
         * for 5 s; then it is held, and the busy VM's demand, rising now, can be met only from the pool. */
        quiet->reporting = false;
        held_at = quiet->vm.assigned_bytes;
        for (uint64_t t = 0; t < 40; t++) {
                g_autoptr(BalancerPlan) plan = NULL;
                const BalancerVmCounters *c;

                if (t == 6)
                        busy->vm.committed_bytes = 1800 * MiB;
                plan = sim_tick(&sim);
                c = plan_vm(plan, quiet->vm.id);

                g_assert_cmpint(plan_vm(plan, silent->vm.id)->status, ==, BALANCER_VM_NOT_REPORTING);
                g_assert_cmpstr(plan_vm(plan, silent->vm.id)->status_reason, ==, "guest has not reported");
                g_assert_null(plan_action(plan, silent->vm.id));
                if (t < 5)
                        g_assert_cmpint(c->status, ==, BALANCER_VM_BALANCED);
                else {
                        g_assert_cmpint(c->status, ==, BALANCER_VM_NOT_REPORTING);
                        g_assert_cmpstr(c->status_reason, ==, "guest report stale");
                        g_assert_cmpuint(c->current_pressure, ==, 83); /* the last one it reported */
                        g_assert_null(plan_action(plan, quiet->vm.id));
                }
        }
        g_assert_cmpuint(quiet->vm.assigned_bytes, ==, held_at);
        /* The busy VM had only the pool: 2048 − 720 held − 256 never reported. */
        g_assert_cmpuint(busy->vm.assigned_bytes, ==, (2048 - 720 - 256) * MiB);

        quiet->reporting = true;
        quiet->vm.committed_bytes = 100 * MiB;
        sim_run_until_converged(&sim, 40);
        g_assert_cmpuint(quiet->vm.assigned_bytes, ==, 256 * MiB);
        g_assert_cmpuint(busy->vm.assigned_bytes, ==, (2048 - 256 - 256) * MiB);
        sim_clear(&sim);
}

/* With slow balloons (pages back three ticks after the request), memory a remove frees is not promised to
 * anyone until it is back, and a pending balloon is not asked for twice. */
static void test_freed_memory_is_reused_only_after_it_is_back(void)
{
        Sim sim;
        SimVm *donor, *taker;
        uint64_t first_add = 0;
        g_autoptr(BalancerPlan) last = NULL;

        sim_init(&sim, 2048 * MiB, 0);
        sim.balloon_latency = 3;
        donor = sim_add_vm(&sim, 128, 2048, 20, 50, 1536, 200);
        taker = sim_add_vm(&sim, 256, 2048, 20, 50, 512, 1000);
        for (uint64_t t = 0; t < 30; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                if (!first_add && plan_action(plan, taker->vm.id))
                        first_add = sim.tick;
        }
        g_assert_cmpuint(first_add, ==, 1 + sim.balloon_latency);
        g_assert_cmpuint(donor->vm.assigned_bytes, ==, 240 * MiB);
        g_assert_cmpuint(taker->vm.assigned_bytes, ==, 1200 * MiB);
        last = sim_tick(&sim);
        g_assert_cmpuint(plan_vm(last, donor->vm.id)->removed_bytes, ==, (1536 - 240) * MiB);
        g_assert_cmpuint(plan_vm(last, taker->vm.id)->added_bytes, ==, (1200 - 512) * MiB);
        sim_clear(&sim);
}

/* Two VMs whose demand climbs in steps on a pool too small for both (bench/dm_convergence.py --contended in
 * the closed loop): each steps up in turn and then holds; while they climb, the short band's target moves
 * every tick. Neither turns back more than once after its start-up remove (at most twice in all), whatever
 * the step sizes, and both end equalised and silent. */
typedef struct ClimbCase {
        const char *name;
        uint64_t a_step_mib, a_every; /* VM a's committed climbs by a_step_mib every a_every ticks... */
        uint64_t b_step_mib, b_every; /* ...and VM b's by b_step_mib every b_every ticks, to 640 MiB each */
        unsigned balloon_latency;     /* ticks: a guest that pages to fill a balloon is slow */
} ClimbCase;

static const ClimbCase climb_cases[] = {
        {"climbing_demands_in_a_short_pool_do_not_flap_320_and_160_MiB_steps", 320, 3, 160, 4, 1},
        {"climbing_demands_in_a_short_pool_do_not_flap_64_and_32_MiB_steps", 64, 1, 32, 1, 1},
        {"climbing_demands_in_a_short_pool_do_not_flap_16_MiB_steps", 16, 1, 16, 2, 1},
        {"climbing_demands_in_a_short_pool_do_not_flap_with_slow_balloons", 320, 3, 160, 4, 3},
        {"climbing_demands_in_a_short_pool_do_not_flap_8_and_4_MiB_steps_slow_balloons", 8, 1, 4, 1, 3},
};

static void test_climb(gconstpointer data)
{
        const ClimbCase *tc = data;
        uint64_t last_action = 0;
        SimVm *a, *b;
        Sim sim;

        sim_init(&sim, 1024 * MiB, 64 * MiB);
        sim.balloon_latency = tc->balloon_latency;
        a = sim_add_vm(&sim, 64, 1024, 20, 50, 128, 1);
        b = sim_add_vm(&sim, 64, 1024, 20, 50, 128, 1);
        for (uint64_t t = 1; t <= 1000; t++) {
                g_autoptr(BalancerPlan) plan = NULL;

                if (t > 2 && t % tc->a_every == 0)
                        a->vm.committed_bytes = MIN(a->vm.committed_bytes + tc->a_step_mib * MiB, 640 * MiB);
                if (t > 2 && t % tc->b_every == 0)
                        b->vm.committed_bytes = MIN(b->vm.committed_bytes + tc->b_step_mib * MiB, 640 * MiB);
                plan = sim_tick(&sim);
                for (unsigned k = 0; k < 4; k++) {
                        g_autoptr(BalancerPlan) prompt = sim_prompt(&sim);

                        if (prompt->n_actions)
                                last_action = t;
                }
                if (plan->n_actions)
                        last_action = t;
        }
        g_test_message("%s: direction changes a %u, b %u; last action at tick %" G_GUINT64_FORMAT, tc->name,
                       a->direction_changes, b->direction_changes, last_action);
        g_assert_cmpuint(a->direction_changes, <=, 2);
        g_assert_cmpuint(b->direction_changes, <=, 2);
        g_assert_cmpuint(last_action, <, 200);
        g_assert_cmpuint(MAX(sim_pressure(a), sim_pressure(b)) - MIN(sim_pressure(a), sim_pressure(b)), <=,
                         1);
        sim_clear(&sim);
}

/* A balloon that comes back short (the guest had fewer pages to give than asked) leaves assigned memory
 * between units. Such a VM is still balanced: squeezed in a shortage without turning back, and given its
 * want once the host has room again, for every size of shortfall. Closed loop, 1,000 ticks per case. */
typedef struct ShortBalloonCase {
        const char *name;
        uint64_t short_bytes; /* per balloon */
} ShortBalloonCase;

static const ShortBalloonCase short_balloon_cases[] = {
        {"balloon_short_by_one_page_keeps_the_vm_balanced", 4096},
        {"balloon_short_by_a_third_of_a_unit_keeps_the_vm_balanced", 1384448},
        {"balloon_short_by_a_unit_and_a_half_keeps_the_vm_balanced", 3 * MiB},
};

static void test_short_balloon(gconstpointer data)
{
        const ShortBalloonCase *tc = data;
        uint64_t squeezed_mib = 0, quiet_from = 0;
        SimVm *small, *big;
        Sim sim;

        /* The seed's case at 1/16 size, two VMs: the small one wants 88 MiB, the big one its 512 MiB Maximum,
         * and the 528 MiB above the reserve are short of both until the pool grows at tick 500. */
        sim_init(&sim, 560 * MiB, 32 * MiB);
        small = sim_add_vm(&sim, 32, 384, 20, 50, 128, 73);
        big = sim_add_vm(&sim, 32, 512, 20, 50, 400, 764);
        small->balloon_short_bytes = tc->short_bytes;
        for (uint64_t t = 1; t <= 1000; t++) {
                g_autoptr(BalancerPlan) plan = NULL;

                if (t == 500) {
                        sim.host.pool_total_bytes += 128 * MiB; /* like other VMs stopping */
                        sim.host.pool_available_bytes += 128 * MiB;
                        squeezed_mib = small->vm.assigned_bytes / MiB;
                }
                plan = sim_tick(&sim);
                g_assert_cmpint(plan_vm(plan, small->vm.id)->status, ==, BALANCER_VM_BALANCED);
                if (plan->n_actions)
                        quiet_from = t + 1;
        }
        g_test_message("%s: squeezed to %" G_GUINT64_FORMAT " MiB, ends at %" G_GUINT64_FORMAT
                       " bytes, quiet from tick %" G_GUINT64_FORMAT,
                       tc->name, squeezed_mib, small->vm.assigned_bytes, quiet_from);
        g_assert_cmpuint(small->vm.assigned_bytes % BALANCER_UNIT_BYTES, !=,
                         0);                                      /* it did fall between units */
        g_assert_cmpuint(squeezed_mib, <, 73);                    /* below committed */
        g_assert_cmpuint(small->vm.assigned_bytes, >=, 88 * MiB); /* its want, once there is room */
        g_assert_cmpuint(small->vm.assigned_bytes, <, 88 * MiB + BALANCER_UNIT_BYTES);
        g_assert_cmpuint(big->vm.assigned_bytes, ==, 512 * MiB);
        g_assert_cmpuint(quiet_from, <, 600);
        g_assert_cmpuint(small->direction_changes, <=, 1);
        g_assert_cmpuint(big->direction_changes, <=, 1);
        g_assert_cmpuint(sim.host.pool_available_bytes, >=, sim.host.reserve_bytes);
        sim_clear(&sim);
}

/* In a shortage the band's equalised pressure decides, and the hold keeps a VM that just gave memory from
 * taking it back even over pressure 100 (there every VM of the band may be); with room it would be fed. */
static void test_reversal_is_held_in_a_shortage_even_over_pressure_100(void)
{
        Sim sim;
        SimVm *b;

        sim_init(&sim, 1024 * MiB, 0);
        sim_add_vm(&sim, 64, 4096, 20, 50, 512, 560);
        b = sim_add_vm(&sim, 64, 4096, 20, 50, 512, 480); /* equalised at 102: b gives about 40 MiB */
        g_autoptr(BalancerPlan) shrink = sim_tick(&sim);
        g_assert_cmpint(shrink->outcome, ==, BALANCER_OUTCOME_SHORTAGE);
        g_assert_nonnull(plan_action(shrink, b->vm.id));
        g_assert_cmpint(plan_action(shrink, b->vm.id)->kind, ==, BALANCER_ACTION_REMOVE);

        b->vm.committed_bytes = 620 * MiB; /* pressure over 120, above the band's: held all the same */
        for (unsigned t = 0; t < sim.config.reversal_hold_ticks - 1; t++) {
                g_autoptr(BalancerPlan) held = sim_tick(&sim);

                g_assert_cmpint(held->outcome, ==, BALANCER_OUTCOME_SHORTAGE);
                g_assert_cmpuint(plan_vm(held, b->vm.id)->target_bytes, >, b->vm.assigned_bytes);
                g_assert_null(plan_action(held, b->vm.id));
        }
        sim_clear(&sim);
}

/* Hysteresis: no turning back within the hold after an action, except to feed a VM whose pressure reached
 * 100; and nothing moves for a gap inside the dead band. */
static void test_reversal_is_held_after_an_add(void)
{
        uint64_t first_remove = 0;
        Sim sim;
        SimVm *v;

        sim_init(&sim, 4096 * MiB, 0);
        v = sim_add_vm(&sim, 256, 4096, 20, 50, 512, 500);
        g_autoptr(BalancerPlan) grow = sim_tick(&sim);
        g_assert_nonnull(plan_action(grow, v->vm.id));
        g_assert_cmpint(plan_action(grow, v->vm.id)->kind, ==, BALANCER_ACTION_ADD);
        v->vm.committed_bytes = 200 * MiB;
        for (uint64_t t = 0; t < 10 && !first_remove; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                if (plan_action(plan, v->vm.id))
                        first_remove = sim.tick;
                else
                        g_assert_cmpuint(plan->n_deferred, ==, 1);
        }
        g_assert_cmpuint(first_remove, ==, 1 + sim.config.reversal_hold_ticks + 1);
        sim_clear(&sim);
}

static void test_reversal_is_allowed_when_pressure_reaches_100(void)
{
        Sim sim;
        SimVm *v;

        sim_init(&sim, 4096 * MiB, 0);
        v = sim_add_vm(&sim, 256, 4096, 20, 50, 480, 300);
        g_autoptr(BalancerPlan) shrink = sim_tick(&sim);
        g_assert_cmpint(plan_action(shrink, v->vm.id)->kind, ==, BALANCER_ACTION_REMOVE);
        g_assert_cmpuint(plan_action(shrink, v->vm.id)->bytes, ==, 120 * MiB);

        v->vm.committed_bytes = 340 * MiB; /* pressure 94: wants 408, but the remove was just now */
        g_autoptr(BalancerPlan) held = sim_tick(&sim);
        g_assert_null(plan_action(held, v->vm.id));
        g_assert_cmpuint(held->n_deferred, ==, 1);

        v->vm.committed_bytes = 400 * MiB; /* pressure 111: the guest pages, feed it now */
        g_autoptr(BalancerPlan) fed = sim_tick(&sim);
        g_assert_nonnull(plan_action(fed, v->vm.id));
        g_assert_cmpint(plan_action(fed, v->vm.id)->kind, ==, BALANCER_ACTION_ADD);
        g_assert_cmpuint(plan_action(fed, v->vm.id)->bytes, ==, 120 * MiB);
        sim_clear(&sim);
}

static void test_gap_inside_the_dead_band_moves_nothing(void)
{
        Sim sim;
        SimVm *v;

        sim_init(&sim, 4096 * MiB, 0);
        v = sim_add_vm(&sim, 256, 4096, 20, 50, 1024, 850); /* wants 1020: 4 MiB short, dead band 16 MiB */
        g_autoptr(BalancerPlan) plan = sim_tick(&sim);
        g_assert_cmpuint(plan_vm(plan, v->vm.id)->target_bytes, ==, 1020 * MiB);
        g_assert_cmpuint(plan->n_actions, ==, 0);
        g_assert_cmpuint(plan->n_deferred, ==, 0);
        sim_clear(&sim);
}

/* When even every VM at its Minimum would eat into the reserve, all head for Minimum and nothing is added,
 * not even to a VM below it: the reserve comes first. */
static void test_below_floor_keeps_minimums_and_the_reserve(void)
{
        Sim sim;
        SimVm *low, *other, *fixed;

        sim_init(&sim, 1024 * MiB, 512 * MiB);
        fixed = sim_add_vm(&sim, 256, 1024, 20, 50, 256, 100);
        fixed->vm.dynamic_memory_enabled = false;
        low = sim_add_vm(&sim, 256, 1024, 20, 50, 254, 500); /* below its Minimum by a unit */
        other = sim_add_vm(&sim, 256, 1024, 20, 50, 256, 500);
        for (uint64_t t = 0; t < 10; t++) {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                g_assert_cmpint(plan->outcome, ==, BALANCER_OUTCOME_BELOW_FLOOR);
                g_assert_cmpuint(plan->n_actions, ==, 0);
                g_assert_cmpuint(plan_vm(plan, low->vm.id)->target_bytes, ==, 256 * MiB);
                g_assert_cmpuint(plan_vm(plan, other->vm.id)->target_bytes, ==, 256 * MiB);
                g_assert_cmpuint(plan->host.available_bytes, ==, 0);
        }
        g_assert_cmpuint(low->vm.assigned_bytes, ==, 254 * MiB);
        sim_clear(&sim);
}

/* Counters: the pressure window, the totals of issued actions, the host-wide figures. */
static void test_counters_follow_history(void)
{
        uint64_t added = 0, removed = 0, adds = 0, removes = 0, tick_adds;
        Sim sim;
        SimVm *pinned, *mover;

        sim_init(&sim, 4096 * MiB, 512 * MiB);
        pinned = sim_add_vm(&sim, 1024, 1024, 20, 50, 1024, 0);
        mover = sim_add_vm(&sim, 256, 2048, 20, 50, 256, 1000);
        for (uint64_t t = 1; t <= 70; t++) {
                g_autoptr(BalancerPlan) plan = NULL;
                const BalancerVmCounters *c;

                pinned->vm.committed_bytes = pinned->vm.assigned_bytes * (10 + t) / 100;
                if (t == 30)
                        mover->vm.committed_bytes = 100 * MiB;
                plan = sim_tick(&sim);
                tick_adds = 0;
                for (size_t i = 0; i < plan->n_actions; i++) {
                        g_assert_cmpuint(plan->actions[i].vm_id, ==, mover->vm.id);
                        if (plan->actions[i].kind == BALANCER_ACTION_ADD) {
                                tick_adds += plan->actions[i].bytes;
                                added += plan->actions[i].bytes;
                                adds++;
                        } else {
                                removed += plan->actions[i].bytes;
                                removes++;
                        }
                }
                c = plan_vm(plan, mover->vm.id);
                g_assert_cmpuint(c->added_bytes, ==, added);
                g_assert_cmpuint(c->removed_bytes, ==, removed);
                g_assert_cmpuint(c->add_operations, ==, adds);
                g_assert_cmpuint(c->remove_operations, ==, removes);
                g_assert_cmpuint(c->current_pressure, ==,
                                 (mover->vm.committed_bytes * 100 + c->assigned_bytes / 2) /
                                         c->assigned_bytes);
                /* Host figures are the snapshot's: before this tick's adds left the pool. */
                g_assert_cmpuint(plan->host.available_bytes, ==,
                                 sim.host.pool_available_bytes + tick_adds - 512 * MiB);
                g_assert_cmpuint(plan->host.average_pressure, ==,
                                 (plan_vm(plan, pinned->vm.id)->current_pressure + c->current_pressure + 1) /
                                         2);
                g_assert_cmpuint(plan->host.system_current_pressure, ==,
                                 ((pinned->vm.committed_bytes + mover->vm.committed_bytes) * 100 +
                                  (c->assigned_bytes + 1024 * MiB) / 2) /
                                         (c->assigned_bytes + 1024 * MiB));
                if (t == 70) {
                        const BalancerVmCounters *p = plan_vm(plan, pinned->vm.id);

                        /* The window holds ticks 11..70: pressures 21..80. */
                        g_assert_cmpuint(p->current_pressure, ==, 80);
                        g_assert_cmpuint(p->minimum_pressure, ==, 21);
                        g_assert_cmpuint(p->maximum_pressure, ==, 80);
                        g_assert_cmpuint(p->average_pressure, ==, 51);
                        g_assert_cmpuint(p->want_bytes, ==, 1024 * MiB);
                }
        }
        g_assert_cmpuint(adds, ==, 1); /* 256 → 1200 with room: the whole gap in one add */
        g_assert_cmpuint(added, ==, 944 * MiB);
        g_assert_cmpuint(removes, ==, 4); /* 1200 → 256 of free memory: four equal steps of 236 MiB */
        g_assert_cmpuint(removed, ==, 944 * MiB);
        sim_clear(&sim);
}

static BalancerVm healthy_vm(uint64_t id)
{
        return (BalancerVm){
                .id = id,
                .dynamic_memory_enabled = true,
                .running = true,
                .minimum_bytes = 256 * MiB,
                .maximum_bytes = 1024 * MiB,
                .buffer_percent = 20,
                .priority = 50,
                .assigned_bytes = 512 * MiB,
                .committed_bytes = 100 * MiB,
                .committed_time_ns = 1,
        };
}

/* A malformed snapshot is refused whole and leaves no trace; bad settings on one VM hold only that VM. */
static void test_malformed_snapshot_is_refused_and_changes_nothing(void)
{
        g_autoptr(Balancer) balancer = NULL;
        BalancerVm vms[2] = {healthy_vm(7), healthy_vm(7)};
        BalancerSnapshot snapshot = {{1, 4096 * MiB, 1024 * MiB, 0}, vms, 2};
        BalancerPlan *plan = NULL;

        g_assert_cmpint(balancer_new(NULL, &balancer), ==, 0);
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, -EINVAL); /* duplicate ids */
        g_assert_null(plan);
        vms[1].id = 8;
        snapshot.host.pool_available_bytes = 8192 * MiB;
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, -EINVAL); /* available > total */
        snapshot.host.pool_available_bytes = 1024 * MiB;
        snapshot.vms = NULL;
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, -EINVAL);
        g_assert_cmpint(balancer_plan(balancer, NULL, &plan), ==, -EINVAL);
        g_assert_null(plan);
        snapshot.vms = vms;
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, 0);
        g_assert_cmpuint(plan->tick, ==, 1);
        balancer_plan_free(plan);
}

typedef struct InvalidCase {
        const char *name;
        void (*spoil)(BalancerVm *vm);
        const char *reason;
} InvalidCase;

static void spoil_minimum_below_floor(BalancerVm *vm)
{
        vm->minimum_bytes = 16 * MiB;
}
static void spoil_maximum_below_minimum(BalancerVm *vm)
{
        vm->maximum_bytes = 128 * MiB;
}
static void spoil_unaligned_minimum(BalancerVm *vm)
{
        vm->minimum_bytes += 4096;
}
static void spoil_zero_assigned(BalancerVm *vm)
{
        vm->assigned_bytes = 0;
}
static void spoil_pending_beyond_assigned(BalancerVm *vm)
{
        vm->pending_remove_bytes = vm->assigned_bytes;
}
static void spoil_buffer_too_small(BalancerVm *vm)
{
        vm->buffer_percent = 4;
}
static void spoil_buffer_too_large(BalancerVm *vm)
{
        vm->buffer_percent = 2001;
}
static void spoil_priority_too_high(BalancerVm *vm)
{
        vm->priority = 101;
}

static const InvalidCase invalid_cases[] = {
        {"minimum_below_32_MiB", spoil_minimum_below_floor, "minimum below 32 MiB"},
        {"maximum_below_minimum", spoil_maximum_below_minimum, "maximum below minimum"},
        {"unaligned_minimum", spoil_unaligned_minimum, "minimum or maximum not a multiple of 2 MiB"},
        {"zero_assigned", spoil_zero_assigned, "assigned memory zero"},
        {"pending_remove_beyond_assigned", spoil_pending_beyond_assigned,
         "pending remove not below assigned"},
        {"buffer_below_5", spoil_buffer_too_small, "buffer outside 5-2000%"},
        {"buffer_above_2000", spoil_buffer_too_large, "buffer outside 5-2000%"},
        {"priority_above_100", spoil_priority_too_high, "priority above 100"},
};

static void test_invalid_settings_hold_only_that_vm(gconstpointer data)
{
        const InvalidCase *tc = data;
        g_autoptr(Balancer) balancer = NULL;
        g_autoptr(BalancerPlan) plan = NULL;
        BalancerVm vms[2] = {healthy_vm(1), healthy_vm(2)};
        BalancerSnapshot snapshot = {{1, 4096 * MiB, 2048 * MiB, 0}, vms, 2};

        tc->spoil(&vms[0]);
        g_assert_cmpint(balancer_new(NULL, &balancer), ==, 0);
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, 0);
        g_assert_cmpint(plan->vms[0].status, ==, BALANCER_VM_INVALID);
        g_assert_cmpstr(plan->vms[0].status_reason, ==, tc->reason);
        g_assert_null(plan_action(plan, 1));
        g_assert_cmpint(plan->vms[1].status, ==, BALANCER_VM_BALANCED);
        g_assert_nonnull(plan_action(plan, 2)); /* 512 → 256: the healthy VM is still balanced */
}

/* The host's Average Pressure and System Current Pressure leave out a goal-seeking VM that pages under its
 * threshold (its pressure over 100 is cold pages on its paging disk), and count it again once it pages. */
typedef struct HostPressureCase {
        const char *name;
        uint64_t committed_mib[2]; /* both VMs hold 512 MiB */
        bool goal_quiet[2];
        uint32_t average_pressure, system_current_pressure;
} HostPressureCase;

static const HostPressureCase host_pressure_cases[] = {
        {"both-counted", {256, 768}, {false, false}, 100, 100},
        {"quiet-goal-seeker-left-out", {256, 1536}, {false, true}, 50, 50},
        {"paging-goal-seeker-counted", {256, 1536}, {false, false}, 175, 175},
        {"all-quiet-reads-zero", {1024, 1536}, {true, true}, 0, 0},
};

static void test_host_pressure_leaves_out_quiet_goal_seekers(gconstpointer data)
{
        const HostPressureCase *tc = data;
        g_autoptr(Balancer) balancer = NULL;
        g_autoptr(BalancerPlan) plan = NULL;
        BalancerVm vms[2] = {healthy_vm(1), healthy_vm(2)};
        BalancerSnapshot snapshot = {{1, 4096 * MiB, 2048 * MiB, 0}, vms, 2};

        for (size_t i = 0; i < 2; i++) {
                vms[i].committed_bytes = tc->committed_mib[i] * MiB;
                vms[i].maximum_bytes = 4096 * MiB;
                vms[i].goal_cap_bytes = tc->goal_quiet[i] ? 512 * MiB : 0;
                vms[i].goal_quiet = tc->goal_quiet[i];
        }
        g_assert_cmpint(balancer_new(NULL, &balancer), ==, 0);
        g_assert_cmpint(balancer_plan(balancer, &snapshot, &plan), ==, 0);
        g_assert_cmpuint(plan->host.average_pressure, ==, tc->average_pressure);
        g_assert_cmpuint(plan->host.system_current_pressure, ==, tc->system_current_pressure);
        /* The VM's own counters are untouched: Get-VMMemory still shows what it reads. */
        for (size_t i = 0; i < 2; i++)
                g_assert_cmpuint(plan->vms[i].current_pressure, ==, tc->committed_mib[i] * 100 / 512);
}

/* The plan is a function of the VMs, not of the order vmmsd happens to list them in. */
static void test_plan_does_not_depend_on_snapshot_order(void)
{
        static const uint64_t committed_mib[] = {1000, 400, 800, 500, 700};
        static const uint32_t priority[] = {90, 80, 10, 50, 50};
        BalancerVm forward[5], backward[5];
        g_autoptr(BalancerPlan) a = NULL;
        g_autoptr(BalancerPlan) b = NULL;
        g_autoptr(Balancer) one = NULL;
        g_autoptr(Balancer) two = NULL;

        for (size_t i = 0; i < 5; i++) {
                forward[i] = healthy_vm(i + 1);
                forward[i].maximum_bytes = 2048 * MiB;
                forward[i].committed_bytes = committed_mib[i] * MiB;
                forward[i].priority = priority[i];
                backward[4 - i] = forward[i];
        }
        g_assert_cmpint(balancer_new(NULL, &one), ==, 0);
        g_assert_cmpint(balancer_new(NULL, &two), ==, 0);
        g_assert_cmpint(
                balancer_plan(one, &(BalancerSnapshot){{1, 3072 * MiB, 512 * MiB, 0}, forward, 5}, &a), ==,
                0);
        g_assert_cmpint(
                balancer_plan(two, &(BalancerSnapshot){{1, 3072 * MiB, 512 * MiB, 0}, backward, 5}, &b), ==,
                0);
        g_assert_cmpint(a->outcome, ==, BALANCER_OUTCOME_SHORTAGE);
        g_assert_cmpuint(a->n_actions, ==, b->n_actions);
        for (uint64_t id = 1; id <= 5; id++) {
                const BalancerAction *x = plan_action(a, id), *y = plan_action(b, id);

                g_assert_cmpuint(plan_vm(a, id)->target_bytes, ==, plan_vm(b, id)->target_bytes);
                g_assert_true((x == NULL) == (y == NULL));
                if (x) {
                        g_assert_cmpint(x->kind, ==, y->kind);
                        g_assert_cmpuint(x->bytes, ==, y->bytes);
                        g_assert_cmpstr(x->reason, ==, y->reason);
                }
        }
}

/* The seed's five-guest case, sizes divided by `divisor` from the full-size run (16: CI's 768 MiB pool,
 * 1: the 12 GiB original). Every VM has priority 50 and buffer 20; VMs 1-4 idle, VM 5 runs a memory soaker
 * that commits 8 (scaled) MiB a tick, 2 while it pages (committed above assigned), up to 768 (scaled) MiB,
 * well past its 512 MiB maximum. Phase 2 stops VMs 1 and 2. */
typedef struct SeedResult {
        uint64_t soak_done_tick; /* VM 5's committed stopped growing */
        uint64_t phase1_ticks;   /* ticks with actions after that, until quiet */
        uint64_t phase2_ticks;   /* ticks with actions after VMs 1-2 stop, until quiet */
        uint64_t end_assigned_mib[5];
        uint32_t end_pressure[5];
        uint64_t phase1_assigned_mib[5];
        uint32_t phase1_pressure[5];
        uint64_t vm12_low_mib, vm12_high_mib; /* over phase 1 */
        uint64_t first_shortage_tick;         /* the pool first could not give everyone its want */
        uint64_t vm34_at_minimum_tick;        /* VMs 3-4 both reached their minimum */
        BalancerOutcome phase1_outcome, phase2_outcome;
        uint32_t phase1_band_target_pressure;
        unsigned direction_changes[5];
} SeedResult;

static void seed_run(unsigned divisor, FILE *csv, SeedResult *ret)
{
        const uint64_t k = 16 / divisor; /* scale from the CI sizes below */
        Sim sim;
        SimVm *vm[5];

        memset(ret, 0, sizeof(*ret));
        ret->vm12_low_mib = UINT64_MAX;
        sim_init(&sim, 768 * k * MiB, 32 * k * MiB);
        sim.csv = csv;
        vm[0] = sim_add_vm(&sim, 128 * k, 384 * k, 20, 50, 128 * k, 48 * k);
        vm[1] = sim_add_vm(&sim, 128 * k, 384 * k, 20, 50, 128 * k, 48 * k);
        vm[2] = sim_add_vm(&sim, 32 * k, 384 * k, 20, 50, 64 * k, 40 * k);
        vm[3] = sim_add_vm(&sim, 32 * k, 384 * k, 20, 50, 64 * k, 40 * k);
        vm[4] = sim_add_vm(&sim, 32 * k, 512 * k, 20, 50, 32 * k, 24 * k);

        while (!ret->soak_done_tick) {
                g_autoptr(BalancerPlan) plan = NULL;
                SimVm *soak = vm[4];
                uint64_t grow = (soak->vm.committed_bytes > soak->vm.assigned_bytes ? 2 : 8) * k * MiB;

                soak->vm.committed_bytes = MIN(soak->vm.committed_bytes + grow, 768 * k * MiB);
                plan = sim_tick(&sim);
                if (!ret->first_shortage_tick && plan->outcome == BALANCER_OUTCOME_SHORTAGE)
                        ret->first_shortage_tick = sim.tick;
                if (!ret->vm34_at_minimum_tick && vm[2]->vm.assigned_bytes == vm[2]->vm.minimum_bytes &&
                    vm[3]->vm.assigned_bytes == vm[3]->vm.minimum_bytes)
                        ret->vm34_at_minimum_tick = sim.tick;
                for (size_t i = 0; i < 2; i++) {
                        ret->vm12_low_mib = MIN(ret->vm12_low_mib, vm[i]->vm.assigned_bytes / MiB);
                        ret->vm12_high_mib = MAX(ret->vm12_high_mib, vm[i]->vm.assigned_bytes / MiB);
                }
                if (soak->vm.committed_bytes == 768 * k * MiB)
                        ret->soak_done_tick = sim.tick;
                g_assert_cmpuint(sim.tick, <, 10000);
        }
        ret->phase1_ticks = sim_run_until_converged(&sim, 200);
        {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                ret->phase1_outcome = plan->outcome;
                ret->phase1_band_target_pressure = plan->band_target_pressure;
        }
        for (size_t i = 0; i < 2; i++) {
                ret->vm12_low_mib = MIN(ret->vm12_low_mib, vm[i]->vm.assigned_bytes / MiB);
                ret->vm12_high_mib = MAX(ret->vm12_high_mib, vm[i]->vm.assigned_bytes / MiB);
        }
        for (size_t i = 0; i < 5; i++) {
                ret->phase1_assigned_mib[i] = vm[i]->vm.assigned_bytes / MiB;
                ret->phase1_pressure[i] = sim_pressure(vm[i]);
        }

        sim_stop_vm(&sim, vm[0]);
        sim_stop_vm(&sim, vm[1]);
        ret->phase2_ticks = sim_run_until_converged(&sim, 200);
        sim_assert_quiet_for(&sim, 20);
        {
                g_autoptr(BalancerPlan) plan = sim_tick(&sim);

                ret->phase2_outcome = plan->outcome;
        }
        for (size_t i = 0; i < 5; i++) {
                ret->end_assigned_mib[i] = vm[i]->vm.assigned_bytes / MiB;
                ret->end_pressure[i] = vm[i]->vm.running ? sim_pressure(vm[i]) : 0;
                ret->direction_changes[i] = vm[i]->direction_changes;
        }
        sim_clear(&sim);
}

typedef struct SeedCase {
        const char *name;
        unsigned divisor;
        uint64_t max_phase2_ticks; /* VM 5 climbs by 96×k MiB, at most 256 MiB a tick */
} SeedCase;

static const SeedCase seed_cases[] = {
        {"seed_five_guest_case_scaled_down", 16, 1},
        {"seed_five_guest_case_full_size", 1, 6},
};

static void test_seed_case(gconstpointer data)
{
        const SeedCase *tc = data;
        const uint64_t k = 16 / tc->divisor;
        SeedResult r;

        seed_run(tc->divisor, NULL, &r);
        g_test_message("%s: first shortage at tick %" G_GUINT64_FORMAT
                       ", VMs 3-4 at minimum at tick %" G_GUINT64_FORMAT
                       ", soak done at tick %" G_GUINT64_FORMAT ", quiet %" G_GUINT64_FORMAT
                       " ticks later; after VMs 1-2 stop, quiet in %" G_GUINT64_FORMAT " ticks",
                       tc->name, r.first_shortage_tick, r.vm34_at_minimum_tick, r.soak_done_tick,
                       r.phase1_ticks, r.phase2_ticks);
        for (size_t i = 0; i < 5; i++)
                g_test_message("VM %zu: phase 1 %" G_GUINT64_FORMAT " MiB pressure %u; end %" G_GUINT64_FORMAT
                               " MiB pressure %u",
                               i + 1, r.phase1_assigned_mib[i], r.phase1_pressure[i], r.end_assigned_mib[i],
                               r.end_pressure[i]);
        /* VMs 1-2: idle, their want is below their minimum, so they sit at it throughout. */
        g_assert_cmpuint(r.vm12_low_mib, ==, 128 * k);
        g_assert_cmpuint(r.vm12_high_mib, ==, 128 * k);
        /* VMs 3-4 share VM 5's band, whose pressure passes theirs at their minimum: squeezed to it. */
        g_assert_cmpuint(r.phase1_assigned_mib[2], ==, 32 * k);
        g_assert_cmpuint(r.phase1_assigned_mib[3], ==, 32 * k);
        g_assert_cmpuint(r.vm34_at_minimum_tick, >, r.first_shortage_tick);
        /* VM 5 gets the rest above the reserve: 768 − 32 − 128 − 128 − 32 − 32 (×k), and pages. */
        g_assert_cmpuint(r.phase1_assigned_mib[4], ==, 416 * k);
        g_assert_cmpuint(r.phase1_pressure[4], >, 100);
        g_assert_cmpint(r.phase1_outcome, ==, BALANCER_OUTCOME_SHORTAGE);
        g_assert_cmpuint(r.phase1_band_target_pressure, ==, r.phase1_pressure[4]);
        g_assert_cmpuint(r.phase1_ticks, <=, 1);
        /* VMs 1-2 stopped: VM 5 rises to its maximum and VMs 3-4 get their want back. */
        g_assert_cmpuint(r.end_assigned_mib[4], ==, 512 * k);
        g_assert_cmpuint(r.end_pressure[4], >, 100);
        g_assert_cmpuint(r.end_assigned_mib[2], ==, 48 * k);
        g_assert_cmpuint(r.end_assigned_mib[3], ==, 48 * k);
        g_assert_cmpuint(r.phase2_ticks, <=, tc->max_phase2_ticks);
        g_assert_cmpint(r.phase2_outcome, ==, BALANCER_OUTCOME_ENOUGH);
        for (size_t i = 0; i < 5; i++)
                g_assert_cmpuint(r.direction_changes[i], <=, 1);
}

/* The seed run as CSV for plotting: BALANCER_SEED_CSV=path keeps it (BALANCER_SEED_DIVISOR=1 for full
 * size); otherwise it goes to a temporary file that is checked and removed. */
static void test_seed_case_writes_csv(void)
{
        const char *keep = g_getenv("BALANCER_SEED_CSV");
        const char *divisor_env = g_getenv("BALANCER_SEED_DIVISOR");
        unsigned divisor = divisor_env ? (unsigned)g_ascii_strtoull(divisor_env, NULL, 10) : 16;
        g_autofree char *path = NULL;
        g_autofree char *contents = NULL;
        g_auto(GStrv) lines = NULL;
        SeedResult r;
        FILE *csv;
        int fd = -1;

        g_assert_true(divisor == 1 || divisor == 2 || divisor == 4 || divisor == 8 || divisor == 16);
        if (keep) {
                path = g_strdup(keep);
        } else {
                fd = g_file_open_tmp("balancer-seed-XXXXXX.csv", &path, NULL);
                g_assert_cmpint(fd, >=, 0);
                close(fd);
        }
        csv = fopen(path, "w");
        g_assert_nonnull(csv);
        fprintf(csv, "tick,vm,running,assigned_mib,committed_mib,pressure,target_mib,pool_available_mib\n");
        seed_run(divisor, csv, &r);
        g_assert_cmpint(fclose(csv), ==, 0);

        g_assert_true(g_file_get_contents(path, &contents, NULL, NULL));
        lines = g_strsplit(contents, "\n", -1);
        g_assert_cmpstr(lines[0], ==,
                        "tick,vm,running,assigned_mib,committed_mib,pressure,target_mib,pool_available_mib");
        g_assert_true(g_str_has_prefix(lines[1], "1,1,1,"));
        g_assert_cmpuint(g_strv_length(lines), >, 5 * r.soak_done_tick);
        if (keep)
                g_test_message("seed run written to %s", path);
        else
                g_unlink(path);
}

/* Registers one test per row of a case table; every row starts with its name. */
static void add_cases(const char *prefix, const void *rows, size_t n_rows, size_t row_size,
                      GTestDataFunc func)
{
        for (size_t i = 0; i < n_rows; i++) {
                const void *row = (const char *)rows + i * row_size;
                g_autofree char *path = g_strdup_printf("%s%s", prefix, *(const char *const *)row);

                g_test_add_data_func(path, row, func);
        }
}

#define ADD_CASES(prefix, table, func) add_cases(prefix, table, G_N_ELEMENTS(table), sizeof((table)[0]), func)

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        ADD_CASES("/balancer/", steady_cases, test_steady_case);
        ADD_CASES("/balancer/", step_cases, test_step_case);
        ADD_CASES("/balancer/", steady_run_cases, test_no_oscillation);
        ADD_CASES("/balancer/", step_run_cases, test_step_run);
        g_test_add_func("/balancer/prompt_plan_adds_the_whole_gap_only_where_there_is_room",
                        test_prompt_plan_adds_the_whole_gap_only_where_there_is_room);
        g_test_add_func("/balancer/prompt_plans_share_the_tick_add_budget",
                        test_prompt_plans_share_the_tick_add_budget);
        ADD_CASES("/balancer/invalid_settings_hold_only_that_vm/", invalid_cases,
                  test_invalid_settings_hold_only_that_vm);
        ADD_CASES("/balancer/", seed_cases, test_seed_case);
        g_test_add_func("/balancer/guest_that_stops_reporting_is_held",
                        test_guest_that_stops_reporting_is_held);
        g_test_add_func("/balancer/freed_memory_is_reused_only_after_it_is_back",
                        test_freed_memory_is_reused_only_after_it_is_back);
        ADD_CASES("/balancer/", climb_cases, test_climb);
        ADD_CASES("/balancer/", short_balloon_cases, test_short_balloon);
        g_test_add_func("/balancer/reversal_is_held_after_an_add", test_reversal_is_held_after_an_add);
        g_test_add_func("/balancer/reversal_is_held_in_a_shortage_even_over_pressure_100",
                        test_reversal_is_held_in_a_shortage_even_over_pressure_100);
        g_test_add_func("/balancer/reversal_is_allowed_when_pressure_reaches_100",
                        test_reversal_is_allowed_when_pressure_reaches_100);
        g_test_add_func("/balancer/gap_inside_the_dead_band_moves_nothing",
                        test_gap_inside_the_dead_band_moves_nothing);
        g_test_add_func("/balancer/below_floor_keeps_minimums_and_the_reserve",
                        test_below_floor_keeps_minimums_and_the_reserve);
        g_test_add_func("/balancer/counters_follow_history", test_counters_follow_history);
        g_test_add_func("/balancer/malformed_snapshot_is_refused_and_changes_nothing",
                        test_malformed_snapshot_is_refused_and_changes_nothing);
        for (size_t i = 0; i < G_N_ELEMENTS(host_pressure_cases); i++) {
                g_autofree char *path =
                        g_strdup_printf("/balancer/host-pressure/%s", host_pressure_cases[i].name);

                g_test_add_data_func(path, &host_pressure_cases[i],
                                     test_host_pressure_leaves_out_quiet_goal_seekers);
        }
        g_test_add_func("/balancer/plan_does_not_depend_on_snapshot_order",
                        test_plan_does_not_depend_on_snapshot_order);
        g_test_add_func("/balancer/seed_case_writes_csv", test_seed_case_writes_csv);
        return g_test_run();
}
