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
 * hand out memory that is still the guest's. Each VM's assigned figure needs no
 * correction: the worker sends a MemoryStatus right after every MemoryAdjust, before its
 * reply, and plans are at least the interval apart. */
#include <errno.h>

#include "vmms-memory.h"

struct VmmsMemory {
        Balancer *balancer;
        uint64_t reserve_bytes;
        BalancerPlan *plan;
        VmmsMemoryPool pool; /* hvd's last sample */
        bool have_pool;
        uint64_t added_since_sample; /* adds planned since that sample */
        uint64_t last_plan_ns;       /* monotonic; 0: none yet */
};

int vmms_memory_new(uint64_t reserve_bytes, VmmsMemory **ret)
{
        g_autoptr(VmmsMemory) mem = g_new0(VmmsMemory, 1);
        int r;

        mem->reserve_bytes = reserve_bytes;
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
        g_free(mem);
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
        }
        r = prompt ? balancer_plan_prompt(mem->balancer, &snapshot, &plan)
                   : balancer_plan(mem->balancer, &snapshot, &plan);
        if (r < 0) {
                g_warning("balancer refused the snapshot: %s", g_strerror(-r));
                return NULL;
        }
        for (size_t i = 0; i < plan->n_actions; i++)
                if (plan->actions[i].kind == BALANCER_ACTION_ADD)
                        mem->added_since_sample += plan->actions[i].bytes;
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
