/* The Dynamic Memory loop of vmmsd. The policy is the balancer's (its design note is
 * atop balancer/balancer.c); this file only gathers the figures and carries out the
 * plan (the manager does that), bounded by the balancer's own per-tick budget. Figures come from one source
 * each: the pool from hvd's counters, each VM's assigned/pending/committed from its
 * worker's MemoryStatus (a VM whose worker has not reported is held by the balancer). */
#include <errno.h>

#include "vmms-memory.h"

struct VmmsMemory {
        Balancer *balancer;
        uint64_t reserve_bytes;
        BalancerPlan *plan;
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

const BalancerPlan *vmms_memory_tick(VmmsMemory *mem, GPtrArray *vms, const VmmsMemoryPool *pool,
                                     uint64_t now_ns)
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
        r = balancer_plan(mem->balancer, &snapshot, &plan);
        if (r < 0) {
                g_warning("balancer refused the snapshot: %s", g_strerror(-r));
                return NULL;
        }
        balancer_plan_free(mem->plan);
        mem->plan = plan;
        return plan;
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
