/* The Dynamic Memory balancer: decides, once a tick, which VMs grow and which shrink.
 *
 * Design note
 * ===========
 * vmmsd calls balancer_plan() once a second with a snapshot (host pool figures, every VM's settings, assigned
 * memory and the guest's last committed report) and carries out the add/remove actions it gets back; between
 * ticks, on a guest's prompt report, it may call balancer_plan_prompt() (see Prompt plans). The
 * balancer does no I/O and reads no clock; its only state is a Balancer object holding, per VM id, a short
 * history (last action, a window of pressures, running totals) for hysteresis and counters.
 *
 * Formula. Pressure = committed / assigned × 100. A VM wants
 *         want = clamp(roundup(committed × (100 + Buffer) / 100, 2 MiB), Minimum, Maximum).
 * With goal seeking on (balancer-goal.c) want is at most the VM's goal cap, the smallest footprint found
 * not to page; the rest of the plan is unchanged.
 * Only running VMs with Dynamic Memory and a fresh report are balanced. Everything else is held: a VM with
 * Dynamic Memory off or not running is left alone, and its memory is simply absent from the pool's
 * available figure, so it counts as used. A guest whose report is missing or older than report_stale_ns
 * (5 s: five missed reports) is held where it is, neither grown nor shrunk: a stale committed figure is not
 * evidence of anything, and a guest that stopped reporting is unlikely to answer a balloon request either.
 * Its counters keep their last values and say so (BALANCER_VM_NOT_REPORTING); it rejoins when it reports.
 *
 * Budget. The memory the balanced VMs may share is
 *         D = Σ assigned(balanced) + pool available − reserve,
 * which the balancer's own actions never change (an add moves memory from the pool to a VM, a completed
 * remove moves it back), so targets do not chase the balancer's own moves: with a steady workload they are
 * constant, and each VM walks monotonically to its target and stops (the no-oscillation argument).
 *
 * Targets. If D covers Σ want, every VM's target is its want. Otherwise the priority bands are served from
 * the top: every VM first gets its Minimum; then each band in turn, highest first, gets its full want if
 * what remains covers it; the first band it does not cover gets what remains, shared so that its VMs end at
 * the same pressure P (each VM gets committed × 100 / P clamped to [Minimum, want] — water-filling: sort
 * the 2k points where a VM leaves its Minimum or reaches its want and sweep them, O(k log k)); the bands
 * below stay at Minimum. Whole units are handed out by largest remainder, ties by VM id, so a plan is a
 * pure function of the snapshot and its history.
 *
 * Bands. A band is a bucket of 20 priority points: 0-19, 20-39, 40-59 (the default 50), 60-79, 80-100.
 * Bands are strict (a higher band is served fully before a lower one gets anything above Minimum), so a
 * band must mean a deliberate choice: a priority slider nudged from 50 to 53 should not decide which VM
 * pages. Within a band, priority differences do not matter: pressure is equalised.
 *
 * Guarantees. (1) Nothing is ever given from the reserve: adds of a tick together never exceed pool
 * available − reserve as it is now, and when available is below the reserve the targets shrink to restore
 * it. (2) No VM is taken below its Minimum nor grown above its Maximum; one found outside is brought back
 * first. (3) Memory freed by a remove is reused only once it is back: a remove frees nothing in its own
 * tick; it shows in the pool's available figure of a later snapshot when the guest has returned the pages
 * (pending_remove_bytes, meanwhile, keeps it from being removed twice). (4) Every action is a whole number
 * of 2 MiB units and every tick's work is bounded.
 *
 * Partial units. Assigned memory and a pending remove are counted in whole units, rounded down. They fall
 * between units when a balloon comes back short (the guest had fewer pages to give than asked, see
 * guest/dm.c), and such a VM is balanced like any other: holding it as invalid, as the balancer once did,
 * froze it where it was for good (in the seed's five-guest case, two VMs never got back the memory that
 * was theirs once the others stopped). Rounding down counts D short by less than a unit per VM, so the
 * reserve promise holds; a move then ends less than a unit past its target, inside the dead band, and the
 * worker keeps a guest's memory within its Maximum whatever the balancer asks.
 *
 * Step bounds (defaults in balancer_config_init_default). Where memory is short, an add to one VM is at
 * most 256 MiB a tick: VMs compete for it, and small steps let the targets (which move as guests report)
 * settle before much memory has moved the wrong way. Where the host has room — every VM is headed for its
 * want (outcome enough) and the pool above the reserve covers every add under way now (plan->room) — an
 * add takes its whole gap at once: no VM competes for that memory, a guest onlines a hot-added range in
 * milliseconds, and each further step would only keep it paging for another second. Removes stay bounded,
 * room or not, on purpose: demand that fell may come back (a guest that just released memory often
 * re-commits it), so taking memory back a step a second errs towards a guest holding a little too much for a
 * second or two rather than paging; and while the host has room a slow remove costs it nothing. How large a
 * step depends on what it takes. A remove whose target leaves the guest everything it has committed takes
 * free pages only (a guest fills a 6 MiB balloon from free pages in 0.2-8 ms in the seed case's logs) and is
 * at most 256 MiB a tick: a 512 MiB release is back in three ticks, about 3 s with the tick's phase (at 128
 * MiB it took five, 4.4-6.1 s over four runs of bench/dm_convergence.py, past the 5 s the design aims for).
 * A remove whose target is below committed memory makes the guest page out to its disk to fill the balloon
 * and is at most 128 MiB a tick: that is paging work the guest does at once, and where memory is short the
 * VMs it goes to are still served at 128 MiB a tick from each donor. All adds of a tick together are at
 * most 1 GiB, and so are all removes: that bounds the host's hot-add and page-release work per second and
 * the damage one wrong snapshot can do. A gap larger than one step is cut into equal steps
 * (ceil(gap / bound) of them), so a move never ends with a sliver.
 *
 * Prompt plans. A guest whose pressure steps up reports at once (guest/dm.c), and vmmsd asks for a prompt
 * plan (at most once per 200 ms). It computes the same targets from the same snapshot, but only adds, and
 * only when the host has room as above: between ticks nothing contended moves, so the bounded steps,
 * the hysteresis and the reversal hold keep their meaning where they matter. It does not advance the tick
 * (the hold, the dead band's "move under way", the counters' 60-tick window all count ticks, not plans),
 * and its adds are charged to the tick's 1 GiB add budget, so the work per tick stays bounded however many
 * prompt plans run. The reserve promise holds as in a tick: adds never exceed pool available − reserve
 * as the snapshot gives it (vmmsd subtracts the adds planned since hvd's last sample).
 *
 * Hysteresis. (a) Dead band: a move starts only when the gap to the target is at least max(4 MiB,
 * assigned / 64) — about 1.5 points of pressure — unless it restores a guarantee (below Minimum, above
 * Maximum, reserve breached). A VM inside the dead band is at rest; jitter in committed stays below it.
 * Once started, a move runs to its target even when the memory available cuts its last piece small, so
 * targets are met exactly (pressure equalised to the unit, not to the dead band); it ends at the target or
 * when the target crosses to the other side; and when the moves under way need more than the pool, the
 * balloons in flight and the removes started will supply, donors resting inside their dead band release
 * that slack too (least needy first), or a move would wait for ever on memory nobody moves. (b) No reversal:
 * a VM is not moved in the direction opposite to its last action within 5 ticks of it (long enough for a
 * balloon to finish and the guest to report on its new size), unless the move restores a guarantee or it is
 * an add for a VM whose pressure has reached 100 — the one pressure line that matters, where committed
 * exceeds assigned and the guest pages; starving it to avoid flapping would be the worse failure — while
 * the host has room for every want (outcome enough). In a shortage every VM of the short band may be over
 * 100 (the seed's case equalises at 140-180), the exception would hold nothing back, and a VM whose demand
 * is still climbing turned back every tick or two (2 MiB down, 2 MiB up: measured by the contended
 * benchmark once guests could page to fill a balloon); there the equalised pressure is the fairness, and
 * the hold waits for the guest's next reports.
 *
 * Order within a tick. Removes go first by (guarantee first, lowest band, lowest pressure); adds by
 * (guarantee first, highest band, highest pressure); the per-tick totals and, for adds, the memory
 * available now are spent in that order. vmmsd may carry them out in any order: no add depends on a remove
 * of the same tick.
 *
 * Work per tick, for n VMs in the snapshot: validation (sort of ids), band sort, water-filling and action
 * ordering are O(n log n); history lookups O(1) each; counters O(n × BALANCER_PRESSURE_WINDOW). No loop
 * depends on memory sizes. A prompt plan costs the same, and vmmsd runs at most one per 200 ms.
 *
 * Outcomes of a tick (BalancerPlan.outcome): nothing to balance; enough (everyone headed for its want);
 * shortage (band short_band equalised at band_target_pressure, bands above satisfied, bands below at
 * Minimum); below floor (even all at Minimum the reserve is not covered: all head for Minimum, nothing is
 * added). Independently, a plan has zero or more actions (at most one per VM) and n_deferred VMs whose gap
 * outlasts this tick (step bounds, budget, reversal hold); no actions and nothing deferred means converged.
 *
 * Counters. Current Pressure is this tick's; Average/Minimum/Maximum Pressure cover the last 60 ticks in
 * which the VM reported. Added/Removed Memory and Add/Remove Operations count the actions the balancer
 * issued (an action vmmsd could not carry out shows in the next snapshot and is planned again). The host's
 * Average Pressure is the mean of the balanced VMs' pressures, System Current Pressure is Σ committed /
 * Σ assigned over them, Available Memory is the pool's available above the reserve.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

#define MiB (UINT64_C(1) << 20)

typedef struct BalancerVmHistory {
        uint64_t vm_id; /* the hash key */
        uint64_t seen_tick;
        uint32_t window[BALANCER_PRESSURE_WINDOW];
        uint32_t window_len;
        uint32_t window_next;
        uint32_t last_pressure;
        int last_direction;   /* +1 add, -1 remove, 0 no action yet */
        int moving_direction; /* a started move not yet at its target, or 0 */
        uint64_t last_action_tick;
        uint64_t added_bytes;
        uint64_t removed_bytes;
        uint64_t add_operations;
        uint64_t remove_operations;
} BalancerVmHistory;

struct Balancer {
        BalancerConfig config;
        uint64_t tick;
        uint64_t tick_added_units; /* adds issued in this tick, its prompt plans included */
        GHashTable *histories;     /* &vm_id → BalancerVmHistory, for running Dynamic Memory VMs */
};

typedef enum TargetWhy {
        TARGET_WANT,       /* what it wants */
        TARGET_BAND_LEVEL, /* equalised pressure in the short band */
        TARGET_LOWER_BAND, /* Minimum: a higher band took the rest */
        TARGET_FLOOR,      /* Minimum: not even the minimums fit beside the reserve */
} TargetWhy;

typedef enum Guarantee {
        GUARANTEE_NONE,
        GUARANTEE_BELOW_MINIMUM,
        GUARANTEE_ABOVE_MAXIMUM,
        GUARANTEE_RESERVE,
} Guarantee;

/* Per-VM working record of one plan. Sizes are in units. */
typedef struct PlanVm {
        const BalancerVm *vm;
        BalancerVmHistory *history;
        BalancerVmStatus status;
        const char *status_reason;
        unsigned band;
        uint32_t pressure;
        double committed_units;
        uint64_t min_units;
        uint64_t max_units;
        uint64_t want_units;
        uint64_t current_units; /* assigned minus what a balloon is already returning */
        uint64_t target_units;
        double remainder; /* water-filling: fractional unit lost to rounding down */
        TargetWhy why;
        Guarantee guarantee;
        int direction;       /* of the gap between target and current */
        uint64_t gap_units;  /* its size */
        uint64_t step_units; /* this tick's proposed step after the per-VM bound; 0: none */
} PlanVm;

static const char *const band_names[BALANCER_N_BANDS] = {"lowest", "low", "normal", "high", "highest"};

static uint64_t units_floor(uint64_t bytes)
{
        return bytes / BALANCER_UNIT_BYTES;
}

static uint64_t units_ceil_u128(unsigned __int128 bytes)
{
        unsigned __int128 units = (bytes + BALANCER_UNIT_BYTES - 1) / BALANCER_UNIT_BYTES;

        return units > UINT64_MAX ? UINT64_MAX : (uint64_t)units;
}

static uint64_t mib_of_units(uint64_t units)
{
        return units * (BALANCER_UNIT_BYTES / MiB);
}

uint32_t balancer_pressure(uint64_t committed, uint64_t assigned)
{
        unsigned __int128 p;

        if (assigned == 0)
                return UINT32_MAX;
        p = ((unsigned __int128)committed * 100 + assigned / 2) / assigned;
        return p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
}

static unsigned band_of(uint32_t priority)
{
        unsigned band = priority / BALANCER_PRIORITY_BAND_WIDTH;

        return band < BALANCER_N_BANDS ? band : BALANCER_N_BANDS - 1;
}

void balancer_config_init_default(BalancerConfig *ret_config)
{
        *ret_config = (BalancerConfig){
                .max_add_per_vm_bytes = 256 * MiB,
                .max_remove_per_vm_bytes = 128 * MiB,
                .max_remove_free_per_vm_bytes = 256 * MiB,
                .max_add_total_bytes = 1024 * MiB,
                .max_remove_total_bytes = 1024 * MiB,
                .min_step_bytes = 4 * MiB,
                .min_step_divisor = 64,
                .reversal_hold_ticks = 5,
                .urgent_pressure = 100,
                .report_stale_ns = 5000000000ull,
        };
}

int balancer_new(const BalancerConfig *config, Balancer **ret_balancer)
{
        Balancer *balancer;
        BalancerConfig defaults;

        if (!ret_balancer)
                return -EINVAL;
        if (!config) {
                balancer_config_init_default(&defaults);
                config = &defaults;
        }
        if (units_floor(config->max_add_per_vm_bytes) == 0 ||
            units_floor(config->max_remove_per_vm_bytes) == 0 ||
            units_floor(config->max_remove_free_per_vm_bytes) == 0 ||
            units_floor(config->max_add_total_bytes) == 0 ||
            units_floor(config->max_remove_total_bytes) == 0 || config->min_step_divisor == 0)
                return -EINVAL;

        balancer = g_new0(Balancer, 1);
        balancer->config = *config;
        balancer->histories = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
        *ret_balancer = balancer;
        return 0;
}

void balancer_free(Balancer *balancer)
{
        if (!balancer)
                return;
        g_clear_pointer(&balancer->histories, g_hash_table_unref);
        g_free(balancer);
}

void balancer_plan_free(BalancerPlan *plan)
{
        if (!plan)
                return;
        g_free(plan->actions);
        g_free(plan->vms);
        g_free(plan);
}

const char *balancer_outcome_to_string(BalancerOutcome outcome)
{
        switch (outcome) {
        case BALANCER_OUTCOME_NOTHING_TO_BALANCE:
                return "nothing to balance";
        case BALANCER_OUTCOME_ENOUGH:
                return "enough";
        case BALANCER_OUTCOME_SHORTAGE:
                return "shortage";
        case BALANCER_OUTCOME_BELOW_FLOOR:
                return "below floor";
        }
        return "unknown";
}

const char *balancer_vm_status_to_string(BalancerVmStatus status)
{
        switch (status) {
        case BALANCER_VM_BALANCED:
                return "balanced";
        case BALANCER_VM_NOT_MANAGED:
                return "not managed";
        case BALANCER_VM_NOT_REPORTING:
                return "not reporting";
        case BALANCER_VM_INVALID:
                return "invalid";
        }
        return "unknown";
}

static int compare_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return (x > y) - (x < y);
}

static int snapshot_check(const BalancerSnapshot *snapshot)
{
        g_autofree uint64_t *ids = NULL;

        if (snapshot->n_vms > 0 && !snapshot->vms)
                return -EINVAL;
        if (snapshot->host.pool_available_bytes > snapshot->host.pool_total_bytes)
                return -EINVAL;
        if (snapshot->n_vms < 2)
                return 0;
        ids = g_new(uint64_t, snapshot->n_vms);
        for (size_t i = 0; i < snapshot->n_vms; i++)
                ids[i] = snapshot->vms[i].id;
        qsort(ids, snapshot->n_vms, sizeof(*ids), compare_u64);
        for (size_t i = 1; i < snapshot->n_vms; i++)
                if (ids[i] == ids[i - 1])
                        return -EINVAL;
        return 0;
}

/* NULL when the balancer can honour these settings; otherwise why not. */
static const char *vm_settings_problem(const BalancerVm *vm)
{
        if (vm->minimum_bytes < BALANCER_MINIMUM_FLOOR_BYTES)
                return "minimum below 32 MiB";
        if (vm->maximum_bytes < vm->minimum_bytes)
                return "maximum below minimum";
        if (vm->minimum_bytes % BALANCER_UNIT_BYTES || vm->maximum_bytes % BALANCER_UNIT_BYTES)
                return "minimum or maximum not a multiple of 2 MiB";
        /* Assigned and pending need not be whole units: a balloon the guest could not fill leaves them
         * between units (see Partial units in the design note). */
        if (vm->assigned_bytes == 0)
                return "assigned memory zero";
        if (vm->pending_remove_bytes >= vm->assigned_bytes)
                return "pending remove not below assigned";
        if (vm->buffer_percent < BALANCER_BUFFER_MIN || vm->buffer_percent > BALANCER_BUFFER_MAX)
                return "buffer outside 5-2000%";
        if (vm->priority > BALANCER_PRIORITY_MAX)
                return "priority above 100";
        return NULL;
}

static BalancerVmHistory *history_get(Balancer *balancer, uint64_t vm_id)
{
        BalancerVmHistory *history = g_hash_table_lookup(balancer->histories, &vm_id);

        if (!history) {
                history = g_new0(BalancerVmHistory, 1);
                history->vm_id = vm_id;
                g_hash_table_insert(balancer->histories, &history->vm_id, history);
        }
        history->seen_tick = balancer->tick;
        return history;
}

static void plan_vm_classify(Balancer *balancer, const BalancerHost *host, const BalancerVm *vm, PlanVm *p)
{
        uint64_t age;

        p->vm = vm;
        p->band = band_of(vm->priority);
        p->current_units = units_floor(vm->assigned_bytes);
        p->target_units = p->current_units;
        if (!vm->dynamic_memory_enabled || !vm->running) {
                p->status = BALANCER_VM_NOT_MANAGED;
                p->status_reason = !vm->running ? "not running" : "dynamic memory off";
                return;
        }
        p->history = history_get(balancer, vm->id);
        p->status_reason = vm_settings_problem(vm);
        if (p->status_reason) {
                p->status = BALANCER_VM_INVALID;
                return;
        }
        age = host->now_ns > vm->committed_time_ns ? host->now_ns - vm->committed_time_ns : 0;
        if (vm->committed_time_ns == 0 || age > balancer->config.report_stale_ns) {
                p->status = BALANCER_VM_NOT_REPORTING;
                p->status_reason =
                        vm->committed_time_ns == 0 ? "guest has not reported" : "guest report stale";
                return;
        }

        p->status = BALANCER_VM_BALANCED;
        p->pressure = balancer_pressure(vm->committed_bytes, vm->assigned_bytes);
        p->committed_units = (double)vm->committed_bytes / (double)BALANCER_UNIT_BYTES;
        p->min_units = units_floor(vm->minimum_bytes);
        p->max_units = units_floor(vm->maximum_bytes);
        p->current_units = units_floor(vm->assigned_bytes - vm->pending_remove_bytes);
        p->want_units = units_ceil_u128(
                ((unsigned __int128)vm->committed_bytes * (100 + vm->buffer_percent) + 99) / 100);
        /* Goal seeking (balancer-goal.c) found a smaller footprint that does not page. */
        if (vm->goal_cap_bytes && units_floor(vm->goal_cap_bytes) < p->want_units)
                p->want_units = units_floor(vm->goal_cap_bytes);
        p->want_units = CLAMP(p->want_units, p->min_units, p->max_units);
}

static int compare_band_desc_then_id(const void *a, const void *b)
{
        const PlanVm *x = *(PlanVm *const *)a, *y = *(PlanVm *const *)b;

        if (x->band != y->band)
                return x->band > y->band ? -1 : 1;
        return (x->vm->id > y->vm->id) - (x->vm->id < y->vm->id);
}

typedef struct FillPoint {
        double level;      /* assigned / committed at which the slope changes */
        double slope_step; /* + committed where a VM leaves its Minimum, − where it reaches its want */
} FillPoint;

static int compare_fill_point(const void *a, const void *b)
{
        double x = ((const FillPoint *)a)->level, y = ((const FillPoint *)b)->level;

        return (x > y) - (x < y);
}

/* The level s (assigned / committed, = 100 / pressure) at which Σ clamp(committed × s, min, want) over the
 * band reaches budget, with Σ min ≤ budget < Σ want. */
static double band_fill_level(PlanVm **vms, size_t n, double budget)
{
        g_autofree FillPoint *points = g_new(FillPoint, 2 * n);
        size_t n_points = 0;
        double filled = 0, slope = 0, level = 0;

        for (size_t i = 0; i < n; i++) {
                filled += (double)vms[i]->min_units;
                if (vms[i]->committed_units > 0 && vms[i]->want_units > vms[i]->min_units) {
                        double c = vms[i]->committed_units;

                        points[n_points++] = (FillPoint){(double)vms[i]->min_units / c, c};
                        points[n_points++] = (FillPoint){(double)vms[i]->want_units / c, -c};
                }
        }
        if (n_points == 0)
                return 0;
        qsort(points, n_points, sizeof(*points), compare_fill_point);
        if (filled >= budget)
                return points[0].level;
        for (size_t i = 0; i < n_points; i++) {
                double next = filled + slope * (points[i].level - level);

                if (next >= budget)
                        return level + (budget - filled) / slope;
                filled = next;
                level = points[i].level;
                slope += points[i].slope_step;
        }
        return level;
}

static int compare_remainder_desc_then_id(const void *a, const void *b)
{
        const PlanVm *x = *(PlanVm *const *)a, *y = *(PlanVm *const *)b;

        if (x->remainder != y->remainder)
                return x->remainder > y->remainder ? -1 : 1;
        return (x->vm->id > y->vm->id) - (x->vm->id < y->vm->id);
}

/* Shares budget units across one band so its VMs end at one pressure; returns that pressure. */
static uint32_t band_equalise(PlanVm **vms, size_t n, uint64_t budget)
{
        double level = band_fill_level(vms, n, (double)budget);
        int64_t left = (int64_t)budget;
        bool progress = true;

        for (size_t i = 0; i < n; i++) {
                PlanVm *p = vms[i];
                double ideal = p->committed_units * level;

                if (ideal >= (double)p->want_units)
                        p->target_units = p->want_units;
                else
                        p->target_units = MAX((uint64_t)ideal, p->min_units);
                p->remainder = ideal - (double)p->target_units;
                p->why = TARGET_BAND_LEVEL;
                left -= (int64_t)p->target_units;
        }
        /* Rounding down lost less than a unit per VM; hand it back by largest remainder. Floating error
         * can leave the sum a unit off either way; the passes settle it. */
        qsort(vms, n, sizeof(*vms), compare_remainder_desc_then_id);
        while (left != 0 && progress) {
                progress = false;
                for (size_t k = 0; k < n && left != 0; k++) {
                        PlanVm *p = left > 0 ? vms[k] : vms[n - 1 - k];

                        if (left > 0 && p->target_units < p->want_units) {
                                p->target_units++;
                                left--;
                                progress = true;
                        } else if (left < 0 && p->target_units > p->min_units) {
                                p->target_units--;
                                left++;
                                progress = true;
                        }
                }
        }
        if (level <= 0)
                return UINT32_MAX;
        return 100.0 / level >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)(100.0 / level + 0.5);
}

/* Sets every balanced VM's target; vms is reordered. */
static void plan_targets(BalancerPlan *plan, PlanVm **vms, size_t n, int64_t budget)
{
        int64_t remaining = budget;

        if (n == 0) {
                plan->outcome = BALANCER_OUTCOME_NOTHING_TO_BALANCE;
                return;
        }
        for (size_t i = 0; i < n; i++)
                remaining -= (int64_t)vms[i]->min_units;
        if (remaining < 0) {
                for (size_t i = 0; i < n; i++) {
                        vms[i]->target_units = vms[i]->min_units;
                        vms[i]->why = TARGET_FLOOR;
                }
                plan->outcome = BALANCER_OUTCOME_BELOW_FLOOR;
                return;
        }

        plan->outcome = BALANCER_OUTCOME_ENOUGH;
        qsort(vms, n, sizeof(*vms), compare_band_desc_then_id);
        for (size_t start = 0, end; start < n; start = end) {
                int64_t extra = 0, band_min = 0;

                for (end = start; end < n && vms[end]->band == vms[start]->band; end++) {
                        extra += (int64_t)(vms[end]->want_units - vms[end]->min_units);
                        band_min += (int64_t)vms[end]->min_units;
                }
                if (plan->outcome == BALANCER_OUTCOME_SHORTAGE) {
                        for (size_t i = start; i < end; i++) {
                                vms[i]->target_units = vms[i]->min_units;
                                vms[i]->why = TARGET_LOWER_BAND;
                        }
                } else if (extra <= remaining) {
                        for (size_t i = start; i < end; i++) {
                                vms[i]->target_units = vms[i]->want_units;
                                vms[i]->why = TARGET_WANT;
                        }
                        remaining -= extra;
                } else {
                        plan->outcome = BALANCER_OUTCOME_SHORTAGE;
                        plan->short_band = vms[start]->band;
                        plan->band_target_pressure =
                                band_equalise(vms + start, end - start, (uint64_t)(band_min + remaining));
                        remaining = 0;
                }
        }
}

static uint64_t min_step_units(const BalancerConfig *config, uint64_t current_units)
{
        uint64_t fixed = (config->min_step_bytes + BALANCER_UNIT_BYTES - 1) / BALANCER_UNIT_BYTES;
        uint64_t relative = (current_units + config->min_step_divisor - 1) / config->min_step_divisor;

        return MAX(MAX(fixed, relative), 1);
}

typedef enum Proposal {
        PROPOSAL_NONE,  /* at its target */
        PROPOSAL_STEP,  /* a move, step_units this tick */
        PROPOSAL_HELD,  /* a reversal within the hold: deferred */
        PROPOSAL_SLACK, /* a remove inside the dead band: started only if a move under way needs it */
} Proposal;

/* The per-VM bound of this tick's step (see Step bounds): a remove that leaves the guest all it has committed
 * takes free pages only and may be larger than one that makes it page. */
static uint64_t step_bound_units(const BalancerConfig *config, const PlanVm *p)
{
        if (p->direction > 0)
                return units_floor(config->max_add_per_vm_bytes);
        if ((double)p->target_units >= p->committed_units)
                return units_floor(config->max_remove_free_per_vm_bytes);
        return units_floor(config->max_remove_per_vm_bytes);
}

/* Cuts a move into equal steps of at most the per-VM bound. */
static void plan_vm_start_move(const BalancerConfig *config, PlanVm *p)
{
        uint64_t bound = step_bound_units(config, p);
        uint64_t steps = (p->gap_units + bound - 1) / bound;

        p->step_units = (p->gap_units + steps - 1) / steps;
        p->history->moving_direction = p->direction;
}

/* Proposes this tick's step for one balanced VM, or says why not. A gap must reach the dead band to start a
 * move; a started move then runs to its target, however small the pieces the budget cuts it into, and ends
 * there or when the target crosses to the other side. */
static Proposal plan_vm_propose(const Balancer *balancer, PlanVm *p, bool reserve_breached,
                                bool room_for_wants)
{
        const BalancerConfig *config = &balancer->config;
        BalancerVmHistory *history = p->history;
        bool reversal;

        p->direction = p->target_units > p->current_units ? 1 : p->target_units < p->current_units ? -1 : 0;
        p->gap_units =
                p->direction > 0 ? p->target_units - p->current_units : p->current_units - p->target_units;
        if (history->moving_direction != p->direction)
                history->moving_direction = 0;
        if (p->direction == 0)
                return PROPOSAL_NONE;
        if (p->current_units < p->min_units)
                p->guarantee = GUARANTEE_BELOW_MINIMUM;
        else if (p->current_units > p->max_units)
                p->guarantee = GUARANTEE_ABOVE_MAXIMUM;
        else if (p->direction < 0 && reserve_breached)
                p->guarantee = GUARANTEE_RESERVE;

        if (p->guarantee == GUARANTEE_NONE && history->moving_direction == 0) {
                reversal = history->last_direction == -p->direction &&
                           balancer->tick - history->last_action_tick <= config->reversal_hold_ticks &&
                           !(p->direction > 0 && p->pressure >= config->urgent_pressure && room_for_wants);
                if (p->gap_units < min_step_units(config, p->current_units))
                        return p->direction < 0 && !reversal ? PROPOSAL_SLACK : PROPOSAL_NONE;
                if (reversal)
                        return PROPOSAL_HELD;
        }
        plan_vm_start_move(config, p);
        return PROPOSAL_STEP;
}

static void format_reason(const BalancerPlan *plan, const PlanVm *p, char *buf)
{
        const BalancerVm *vm = p->vm;
        const char *relation = p->direction > 0 ? ">" : "<";

        switch (p->guarantee) {
        case GUARANTEE_BELOW_MINIMUM:
                g_snprintf(buf, BALANCER_REASON_MAX, "below minimum %" G_GUINT64_FORMAT " MiB",
                           vm->minimum_bytes / MiB);
                return;
        case GUARANTEE_ABOVE_MAXIMUM:
                g_snprintf(buf, BALANCER_REASON_MAX, "above maximum %" G_GUINT64_FORMAT " MiB",
                           vm->maximum_bytes / MiB);
                return;
        case GUARANTEE_RESERVE:
        case GUARANTEE_NONE:
                break;
        }
        switch (p->why) {
        case TARGET_WANT:
                g_snprintf(buf, BALANCER_REASON_MAX,
                           "pressure %u: committed %" G_GUINT64_FORMAT
                           " MiB + buffer %u%% wants %" G_GUINT64_FORMAT " MiB%s",
                           p->pressure, vm->committed_bytes / MiB, vm->buffer_percent,
                           mib_of_units(p->want_units),
                           p->guarantee == GUARANTEE_RESERVE ? ", host reserve breached" : "");
                return;
        case TARGET_BAND_LEVEL:
                g_snprintf(buf, BALANCER_REASON_MAX, "pressure %u %s band target %u (%s priority band short)",
                           p->pressure, relation, plan->band_target_pressure, band_names[p->band]);
                return;
        case TARGET_LOWER_BAND:
                g_snprintf(buf, BALANCER_REASON_MAX,
                           "squeezed toward minimum: %s priority band is below the short %s band",
                           band_names[p->band], band_names[plan->short_band]);
                return;
        case TARGET_FLOOR:
                g_snprintf(buf, BALANCER_REASON_MAX,
                           "squeezed toward minimum: minimums and host reserve exceed the pool");
                return;
        }
}

static void plan_emit(Balancer *balancer, BalancerPlan *plan, PlanVm *p, uint64_t units)
{
        BalancerAction *action = &plan->actions[plan->n_actions++];
        BalancerVmHistory *history = p->history;
        uint64_t bytes = units * BALANCER_UNIT_BYTES;

        action->vm_id = p->vm->id;
        action->kind = p->direction > 0 ? BALANCER_ACTION_ADD : BALANCER_ACTION_REMOVE;
        action->bytes = bytes;
        format_reason(plan, p, action->reason);
        history->last_direction = p->direction;
        history->last_action_tick = balancer->tick;
        if (p->direction > 0) {
                balancer->tick_added_units += units;
                history->added_bytes += bytes;
                history->add_operations++;
        } else {
                history->removed_bytes += bytes;
                history->remove_operations++;
        }
}

/* Move order: guarantees lead; then removes take from the least needy (lowest band, lowest pressure) and
 * adds serve the neediest (highest band, highest pressure); ties by id. */
static int compare_move_order(const PlanVm *x, const PlanVm *y, int neediest_first)
{
        bool gx = x->guarantee != GUARANTEE_NONE, gy = y->guarantee != GUARANTEE_NONE;

        if (gx != gy)
                return gx ? -1 : 1;
        if (x->band != y->band)
                return (x->band < y->band ? -1 : 1) * -neediest_first;
        if (x->pressure != y->pressure)
                return (x->pressure < y->pressure ? -1 : 1) * -neediest_first;
        return (x->vm->id > y->vm->id) - (x->vm->id < y->vm->id);
}

static int compare_remove_order(const void *a, const void *b)
{
        return compare_move_order(*(PlanVm *const *)a, *(PlanVm *const *)b, -1);
}

static int compare_add_order(const void *a, const void *b)
{
        return compare_move_order(*(PlanVm *const *)a, *(PlanVm *const *)b, 1);
}

/* Spends one direction's budget over its proposals, in order. */
static void plan_spend(Balancer *balancer, BalancerPlan *plan, PlanVm **proposals, size_t n, uint64_t budget)
{
        for (size_t i = 0; i < n; i++) {
                PlanVm *p = proposals[i];
                uint64_t units = MIN(p->step_units, budget);

                if (units < p->gap_units)
                        plan->n_deferred++;
                else
                        p->history->moving_direction = 0; /* the move completes with this action */
                if (units == 0)
                        continue;
                plan_emit(balancer, plan, p, units);
                budget -= units;
        }
}

static void plan_actions(Balancer *balancer, BalancerPlan *plan, PlanVm **vms, size_t n,
                         const BalancerHost *host)
{
        const BalancerConfig *config = &balancer->config;
        bool reserve_breached = host->pool_available_bytes < host->reserve_bytes;
        uint64_t available =
                reserve_breached ? 0 : units_floor(host->pool_available_bytes - host->reserve_bytes);
        uint64_t need = 0, supply = available, add_budget;
        g_autofree PlanVm **adds = g_new(PlanVm *, n + 1);
        g_autofree PlanVm **removes = g_new(PlanVm *, n + 1);
        g_autofree PlanVm **slack = g_new(PlanVm *, n + 1);
        size_t n_adds = 0, n_removes = 0, n_slack = 0;

        for (size_t i = 0; i < n; i++) {
                PlanVm *p = vms[i];
                int moving = p->history->moving_direction;

                supply += units_floor(p->vm->pending_remove_bytes);
                switch (plan_vm_propose(balancer, p, reserve_breached,
                                        plan->outcome == BALANCER_OUTCOME_ENOUGH)) {
                case PROPOSAL_NONE:
                        break;
                case PROPOSAL_HELD:
                        plan->n_deferred++;
                        break;
                case PROPOSAL_SLACK:
                        slack[n_slack++] = p;
                        break;
                case PROPOSAL_STEP:
                        if (p->direction > 0) {
                                adds[n_adds++] = p;
                                need += p->gap_units;
                        } else if (plan->prompt) {
                                p->history->moving_direction = moving; /* removes wait for the tick */
                                plan->n_deferred++;
                        } else {
                                removes[n_removes++] = p;
                                supply += p->gap_units;
                        }
                        break;
                }
        }
        /* Room: everyone is headed for what it wants and the pool above the reserve covers every add under
         * way now. Then an add takes its whole gap at once: no VM competes for this memory, so cutting it
         * into steps would only keep a guest paging for longer. */
        plan->room = plan->outcome == BALANCER_OUTCOME_ENOUGH && n_adds > 0 && need <= available;
        for (size_t i = 0; plan->room && i < n_adds; i++)
                adds[i]->step_units = adds[i]->gap_units;
        add_budget = units_floor(config->max_add_total_bytes);
        add_budget = add_budget > balancer->tick_added_units ? add_budget - balancer->tick_added_units : 0;
        add_budget = MIN(add_budget, available);
        qsort(adds, n_adds, sizeof(*adds), compare_add_order);
        if (plan->prompt) {
                /* Between ticks only the uncontended case moves; the tick handles the rest in steps. */
                if (!plan->room) {
                        plan->n_deferred += n_adds;
                        return;
                }
                plan_spend(balancer, plan, adds, n_adds, add_budget);
                return;
        }
        /* Moves under way want more than the pool, the balloons in flight and the removes started will
         * give: release the dead-band slack of donors too, least needy first, or those moves would wait
         * for ever on memory nobody moves. */
        qsort(slack, n_slack, sizeof(*slack), compare_remove_order);
        for (size_t i = 0; i < n_slack && need > supply; i++) {
                plan_vm_start_move(config, slack[i]);
                removes[n_removes++] = slack[i];
                supply += slack[i]->gap_units;
        }
        qsort(removes, n_removes, sizeof(*removes), compare_remove_order);
        plan_spend(balancer, plan, removes, n_removes, units_floor(config->max_remove_total_bytes));
        plan_spend(balancer, plan, adds, n_adds, add_budget);
}

static void history_sample(BalancerVmHistory *history, uint32_t pressure)
{
        history->window[history->window_next] = pressure;
        history->window_next = (history->window_next + 1) % BALANCER_PRESSURE_WINDOW;
        if (history->window_len < BALANCER_PRESSURE_WINDOW)
                history->window_len++;
        history->last_pressure = pressure;
}

static void plan_vm_counters(const PlanVm *p, BalancerVmCounters *c)
{
        const BalancerVmHistory *history = p->history;
        uint64_t sum = 0;

        c->vm_id = p->vm->id;
        c->status = p->status;
        c->status_reason = p->status_reason;
        c->band = p->band;
        c->assigned_bytes = p->vm->assigned_bytes;
        c->target_bytes = p->status == BALANCER_VM_BALANCED ? p->target_units * BALANCER_UNIT_BYTES
                                                            : p->vm->assigned_bytes;
        c->want_bytes = p->status == BALANCER_VM_BALANCED ? p->want_units * BALANCER_UNIT_BYTES : 0;
        if (!history)
                return;
        c->current_pressure = history->last_pressure;
        c->minimum_pressure = history->window_len ? UINT32_MAX : 0;
        for (uint32_t i = 0; i < history->window_len; i++) {
                sum += history->window[i];
                c->minimum_pressure = MIN(c->minimum_pressure, history->window[i]);
                c->maximum_pressure = MAX(c->maximum_pressure, history->window[i]);
        }
        c->average_pressure =
                history->window_len ? (uint32_t)((sum + history->window_len / 2) / history->window_len) : 0;
        c->added_bytes = history->added_bytes;
        c->removed_bytes = history->removed_bytes;
        c->add_operations = history->add_operations;
        c->remove_operations = history->remove_operations;
}

static void plan_counters(BalancerPlan *plan, PlanVm *pvs, size_t n, const BalancerHost *host)
{
        unsigned __int128 committed = 0, assigned = 0;
        uint64_t pressure_sum = 0;
        size_t n_balanced = 0;

        for (size_t i = 0; i < n; i++) {
                if (pvs[i].status == BALANCER_VM_BALANCED) {
                        /* The window holds one sample a tick; a prompt plan only updates Current. */
                        if (plan->prompt)
                                pvs[i].history->last_pressure = pvs[i].pressure;
                        else
                                history_sample(pvs[i].history, pvs[i].pressure);
                        /* A goal-seeking VM at rest reads over 100 by design: the host's figures leave it
                         * out. */
                        if (!pvs[i].vm->goal_quiet) {
                                committed += pvs[i].vm->committed_bytes;
                                assigned += pvs[i].vm->assigned_bytes;
                                pressure_sum += pvs[i].pressure;
                                n_balanced++;
                        }
                }
                plan_vm_counters(&pvs[i], &plan->vms[i]);
        }
        plan->n_vms = n;
        plan->host.available_bytes = host->pool_available_bytes > host->reserve_bytes
                                             ? host->pool_available_bytes - host->reserve_bytes
                                             : 0;
        if (n_balanced > 0) {
                unsigned __int128 system = (committed * 100 + assigned / 2) / assigned;

                plan->host.average_pressure = (uint32_t)((pressure_sum + n_balanced / 2) / n_balanced);
                plan->host.system_current_pressure = system > UINT32_MAX ? UINT32_MAX : (uint32_t)system;
        }
}

static gboolean history_unseen(gpointer key, gpointer value, gpointer user_data)
{
        const BalancerVmHistory *history = value;
        const uint64_t *tick = user_data;

        (void)key;
        return history->seen_tick != *tick;
}

static int plan_make(Balancer *balancer, const BalancerSnapshot *snapshot, bool prompt,
                     BalancerPlan **ret_plan)
{
        g_autoptr(BalancerPlan) plan = NULL;
        g_autofree PlanVm *pvs = NULL;
        g_autofree PlanVm **balanced = NULL;
        const BalancerHost *host;
        size_t n, n_balanced = 0;
        int64_t budget;
        int r;

        if (!balancer || !snapshot || !ret_plan)
                return -EINVAL;
        r = snapshot_check(snapshot);
        if (r < 0)
                return r;

        host = &snapshot->host;
        n = snapshot->n_vms;
        if (!prompt) {
                balancer->tick++;
                balancer->tick_added_units = 0;
        }
        plan = g_new0(BalancerPlan, 1);
        plan->tick = balancer->tick;
        plan->prompt = prompt;
        plan->actions = g_new0(BalancerAction, n + 1);
        plan->vms = g_new0(BalancerVmCounters, n + 1);
        pvs = g_new0(PlanVm, n + 1);
        balanced = g_new(PlanVm *, n + 1);

        /* D = Σ assigned(balanced) + available − reserve: may be negative when the reserve is breached. */
        budget = (int64_t)units_floor(host->pool_available_bytes) -
                 (int64_t)units_ceil_u128(host->reserve_bytes);
        for (size_t i = 0; i < n; i++) {
                plan_vm_classify(balancer, host, &snapshot->vms[i], &pvs[i]);
                if (pvs[i].status == BALANCER_VM_BALANCED) {
                        balanced[n_balanced++] = &pvs[i];
                        budget += (int64_t)units_floor(pvs[i].vm->assigned_bytes);
                } else if (pvs[i].history) {
                        pvs[i].history->moving_direction = 0; /* a held VM's move is over */
                }
        }
        plan_targets(plan, balanced, n_balanced, budget);
        plan_actions(balancer, plan, balanced, n_balanced, host);
        plan_counters(plan, pvs, n, host);
        g_hash_table_foreach_remove(balancer->histories, history_unseen, &balancer->tick);

        *ret_plan = g_steal_pointer(&plan);
        return 0;
}

int balancer_plan(Balancer *balancer, const BalancerSnapshot *snapshot, BalancerPlan **ret_plan)
{
        return plan_make(balancer, snapshot, false, ret_plan);
}

int balancer_plan_prompt(Balancer *balancer, const BalancerSnapshot *snapshot, BalancerPlan **ret_plan)
{
        return plan_make(balancer, snapshot, true, ret_plan);
}
