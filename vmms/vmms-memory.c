/* The Dynamic Memory loop of vmmsd. The policy is the balancer's (its design note is
 * atop balancer/balancer.c); this file only gathers the figures and carries out the
 * plan (the manager does that), bounded by the balancer's own per-tick budget. Figures come from one source
 * each: the pool from hvd's counters, each VM's assigned/pending/committed from its
 * worker's MemoryStatus (a VM whose worker has not reported is held by the balancer).
 *
 * Prompt plans. A guest whose pressure steps up reports at once, and the manager asks
 * for a prompt plan (balancer_plan_prompt: adds only, only where the host has room) at
 * most once per VMMS_MEMORY_PROMPT_INTERVAL_NS after the last plan of either kind. hvd's
 * pool figure is a second old by then, so it is corrected by the adds planned since that
 * sample (each one charges the pool within milliseconds; hvd's next sample includes it).
 * Removes are not subtracted: their pages return later, and counting them early could
 * hand out memory that is still the guest's.
 *
 * Moves in flight. The worker sends a MemoryStatus right after every MemoryAdjust, but
 * a plan may come before it arrives: the once-a-second tick does not wait for the
 * prompt interval, and ran 8 ms after a prompt plan in bench/dm_convergence.py, adding
 * the same 110 MiB twice (the VM then overshot its want by 110 MiB for 6 s). So each
 * action is remembered for VMMS_MEMORY_IN_FLIGHT_NS; while the VM's last figures are
 * older than it, the snapshot counts it as done: an add in assigned memory, a remove
 * as pending. (A periodic status the worker sent just before it took the request can
 * still arrive after it: a window of a socket's latency, once a second.)
 *
 * Goal seeking (Set-VMMemory -GoalSeeking; balancer/balancer-goal.c). Each tick, a VM that
 * has it on, runs with Dynamic Memory and reports gets a sample of its goal (assigned,
 * committed, the guest's page-in counter) and the cap it returns goes into the snapshot;
 * prompt plans reuse the tick's cap. A VM that stops, turns it off or goes away loses its
 * goal, and starts afresh (from its footprint then) when it comes back. */
#include <errno.h>

#include "balancer-goal.h"
#include "vmms-memory.h"

/* How long an action may wait for the worker's figures to show it. */
#define VMMS_MEMORY_IN_FLIGHT_NS (2 * G_TIME_SPAN_SECOND * 1000)

typedef struct MemoryInFlight {
        uint64_t balancer_id;
        int64_t delta_bytes;
        uint64_t planned_ns;
} MemoryInFlight;

typedef struct MemoryGoal {
        uint64_t balancer_id; /* the hash key */
        BalancerGoal goal;
        uint64_t seen_tick; /* the tick that last sampled it */
} MemoryGoal;

struct VmmsMemory {
        Balancer *balancer;
        uint64_t reserve_bytes;
        BalancerPlan *plan;
        VmmsMemoryPool pool; /* hvd's last sample */
        bool have_pool;
        uint64_t added_since_sample; /* adds planned since that sample */
        uint64_t last_plan_ns;       /* monotonic; 0: none yet */
        GArray *in_flight;           /* MemoryInFlight, oldest first */
        BalancerGoalConfig goal_config;
        GHashTable *goals; /* &balancer_id → MemoryGoal, for goal-seeking VMs being balanced */
        uint64_t ticks;
};

int vmms_memory_new(uint64_t reserve_bytes, VmmsMemory **ret)
{
        g_autoptr(VmmsMemory) mem = g_new0(VmmsMemory, 1);
        int r;

        mem->reserve_bytes = reserve_bytes;
        mem->in_flight = g_array_new(FALSE, FALSE, sizeof(MemoryInFlight));
        balancer_goal_config_init_default(&mem->goal_config);
        mem->goals = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, g_free);
        r = balancer_new(NULL, &mem->balancer);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&mem);
        return 0;
}

void vmms_memory_free(VmmsMemory *mem)
{
        if (!mem)
                return;
        balancer_plan_free(mem->plan);
        balancer_free(mem->balancer);
        g_clear_pointer(&mem->in_flight, g_array_unref);
        if (mem->goals)
                g_hash_table_unref(mem->goals);
        g_free(mem);
}

/* Counts the actions the VM's figures do not show yet (see Moves in flight). */
static void memory_in_flight_apply(VmmsMemory *mem, const VmmsVm *vm, BalancerVm *b)
{
        for (guint i = 0; i < mem->in_flight->len; i++) {
                const MemoryInFlight *f = &g_array_index(mem->in_flight, MemoryInFlight, i);

                if (f->balancer_id != b->id || vm->memory.received_ns >= f->planned_ns)
                        continue;
                if (f->delta_bytes > 0)
                        b->assigned_bytes += (uint64_t)f->delta_bytes;
                else if (b->pending_remove_bytes + (uint64_t)-f->delta_bytes < b->assigned_bytes)
                        b->pending_remove_bytes += (uint64_t)-f->delta_bytes;
        }
}

static void memory_in_flight_record(VmmsMemory *mem, const BalancerPlan *plan, uint64_t now_ns)
{
        guint old = 0;

        while (old < mem->in_flight->len &&
               g_array_index(mem->in_flight, MemoryInFlight, old).planned_ns + VMMS_MEMORY_IN_FLIGHT_NS <
                       now_ns)
                old++;
        g_array_remove_range(mem->in_flight, 0, old);
        for (size_t i = 0; i < plan->n_actions; i++) {
                const BalancerAction *a = &plan->actions[i];
                MemoryInFlight f = {
                        .balancer_id = a->vm_id,
                        .delta_bytes =
                                a->kind == BALANCER_ACTION_ADD ? (int64_t)a->bytes : -(int64_t)a->bytes,
                        .planned_ns = now_ns,
                };

                g_array_append_val(mem->in_flight, f);
        }
}

/* The goal's cap for a goal-seeking VM being balanced (sampled on a tick, as it was on a prompt plan),
 * 0 for any other VM. */
static uint64_t memory_goal_cap(VmmsMemory *mem, VmmsVm *vm, const BalancerVm *b, bool prompt)
{
        MemoryGoal *g;
        BalancerGoalInput in;
        BalancerGoalDecision decision;
        uint64_t before, cap;

        if (!vm->def.memory.goal_seeking || !b->dynamic_memory_enabled || !b->running ||
            !b->committed_time_ns)
                return 0;
        g = g_hash_table_lookup(mem->goals, &b->id);
        if (prompt)
                return g && g->goal.started ? g->goal.cap_bytes : 0;
        if (!g) {
                g = g_new0(MemoryGoal, 1);
                g->balancer_id = b->id;
                balancer_goal_reset(&g->goal);
                g_hash_table_insert(mem->goals, &g->balancer_id, g);
        }
        g->seen_tick = mem->ticks;
        in = (BalancerGoalInput){
                .minimum_bytes = b->minimum_bytes,
                .maximum_bytes = b->maximum_bytes,
                .assigned_bytes = b->assigned_bytes,
                .committed_bytes = b->committed_bytes,
                .page_in_total = vm->memory.page_in_total,
                .report_ns = b->committed_time_ns,
        };
        before = g->goal.cap_bytes;
        cap = balancer_goal_sample(&g->goal, &mem->goal_config, &in, &decision);
        if (decision == BALANCER_GOAL_PROBE || decision == BALANCER_GOAL_RAISE ||
            decision == BALANCER_GOAL_GROW)
                g_message("goal seeking: %s %s %" G_GUINT64_FORMAT " MiB -> %" G_GUINT64_FORMAT
                          " MiB (page-in %" G_GUINT64_FORMAT " KiB/s, assigned %" G_GUINT64_FORMAT " MiB)",
                          vm->def.name, balancer_goal_decision_to_string(decision), before >> 20, cap >> 20,
                          g->goal.rate_bytes_per_s >> 10, b->assigned_bytes >> 20);
        return cap;
}

/* Whether a goal-seeking VM pages in under goal seeking's threshold at its last report: its pressure over
 * 100 is then cold pages on its paging disk, and the host's Average Pressure leaves it out (as health's
 * host rule does, vmms-health.c). */
static bool memory_goal_quiet(VmmsMemory *mem, const BalancerVm *b)
{
        const MemoryGoal *g;

        if (!b->goal_cap_bytes)
                return false;
        g = g_hash_table_lookup(mem->goals, &b->id);
        return g && g->goal.started &&
               g->goal.rate_bytes_per_s <= mem->goal_config.paging_threshold_bytes_per_s;
}

static gboolean memory_goal_unseen(gpointer key, gpointer value, gpointer user_data)
{
        (void)key;
        return ((MemoryGoal *)value)->seen_tick != *(const uint64_t *)user_data;
}

static const BalancerPlan *memory_plan(VmmsMemory *mem, GPtrArray *vms, const VmmsMemoryPool *pool,
                                       uint64_t now_ns, bool prompt)
{
        g_autofree BalancerVm *snap = g_new0(BalancerVm, vms->len + 1);
        BalancerSnapshot snapshot = {
                .host =
                        {
                                .now_ns = now_ns,
                                .pool_total_bytes = pool->total_bytes,
                                .pool_available_bytes = pool->total_bytes - pool->used_bytes,
                                .reserve_bytes = mem->reserve_bytes,
                        },
                .vms = snap,
        };
        BalancerPlan *plan = NULL;
        int r;

        if (!prompt)
                mem->ticks++;
        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];
                BalancerVm *b = &snap[snapshot.n_vms++];
                bool live = vm->engine_data &&
                            (vm->def.state == VMMS_VM_RUNNING || vm->def.state == VMMS_VM_PAUSED);

                b->id = vm->balancer_id;
                b->dynamic_memory_enabled = vm->def.memory.dynamic_memory_enabled;
                /* A paused VM keeps its memory: the balancer leaves it alone. */
                b->running = live && vm->def.state == VMMS_VM_RUNNING;
                b->minimum_bytes = vm->def.memory.minimum_bytes;
                b->maximum_bytes = vm->def.memory.maximum_bytes;
                b->buffer_percent = vm->def.memory.buffer;
                b->priority = vm->def.memory.priority;
                if (live && vm->memory.received_ns) {
                        b->assigned_bytes = vm->memory.assigned_bytes;
                        b->pending_remove_bytes = vm->memory.pending_remove_bytes;
                } else {
                        b->assigned_bytes = live ? vm->figures.assigned_bytes : 0;
                }
                if (live && vm->memory.reporting) {
                        b->committed_bytes = vm->memory.committed_bytes;
                        b->committed_time_ns = vm->memory.received_ns;
                }
                if (live && vm->memory.received_ns)
                        memory_in_flight_apply(mem, vm, b);
                b->goal_cap_bytes = memory_goal_cap(mem, vm, b, prompt);
                b->goal_quiet = memory_goal_quiet(mem, b);
        }
        /* Goals of VMs that stopped, turned goal seeking off or went away: they start afresh. */
        if (!prompt)
                g_hash_table_foreach_remove(mem->goals, memory_goal_unseen, &mem->ticks);
        r = prompt ? balancer_plan_prompt(mem->balancer, &snapshot, &plan)
                   : balancer_plan(mem->balancer, &snapshot, &plan);
        if (r < 0) {
                g_warning("balancer refused the snapshot: %s", g_strerror(-r));
                return NULL;
        }
        for (size_t i = 0; i < plan->n_actions; i++)
                if (plan->actions[i].kind == BALANCER_ACTION_ADD)
                        mem->added_since_sample += plan->actions[i].bytes;
        memory_in_flight_record(mem, plan, now_ns);
        mem->last_plan_ns = now_ns;
        balancer_plan_free(mem->plan);
        mem->plan = plan;
        return plan;
}

const BalancerPlan *vmms_memory_tick(VmmsMemory *mem, GPtrArray *vms, const VmmsMemoryPool *pool,
                                     uint64_t now_ns)
{
        mem->pool = *pool;
        mem->have_pool = true;
        mem->added_since_sample = 0;
        return memory_plan(mem, vms, pool, now_ns, false);
}

uint64_t vmms_memory_prompt_delay_ns(VmmsMemory *mem, uint64_t now_ns)
{
        uint64_t next;

        if (!mem->last_plan_ns)
                return 0;
        next = mem->last_plan_ns + VMMS_MEMORY_PROMPT_INTERVAL_NS;
        return now_ns < next ? next - now_ns : 0;
}

const BalancerPlan *vmms_memory_prompt(VmmsMemory *mem, GPtrArray *vms, uint64_t now_ns)
{
        VmmsMemoryPool pool = mem->pool;

        if (!mem->have_pool)
                return NULL;
        pool.used_bytes = MIN(pool.used_bytes + mem->added_since_sample, pool.total_bytes);
        return memory_plan(mem, vms, &pool, now_ns, true);
}

const BalancerVmCounters *vmms_memory_vm_counters(VmmsMemory *mem, uint64_t balancer_id)
{
        for (size_t i = 0; mem->plan && i < mem->plan->n_vms; i++)
                if (mem->plan->vms[i].vm_id == balancer_id)
                        return &mem->plan->vms[i];
        return NULL;
}

const BalancerHostCounters *vmms_memory_host_counters(VmmsMemory *mem)
{
        return mem->plan ? &mem->plan->host : NULL;
}
