/* Dynamic Memory in vmmsd: once a second, and between seconds for a guest's prompt
 * report, a snapshot of the VMs' reports and the hypervisor's pool goes to the balancer
 * (balancer/, pure); the plan it returns is carried out by the manager (each action
 * through the VM's engine). The last plan's counters feed Get-VM and Get-Counter. */
#pragma once

#include "balancer.h"
#include "vmms-vm.h"

typedef struct VmmsMemory VmmsMemory;

int vmms_memory_new(uint64_t reserve_bytes, VmmsMemory **ret);
void vmms_memory_free(VmmsMemory *mem);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsMemory, vmms_memory_free)

/* The host's pool as the hypervisor accounts it. */
typedef struct VmmsMemoryPool {
        uint64_t total_bytes;
        uint64_t used_bytes;
} VmmsMemoryPool;

/* One balancer tick over `vms` (VmmsVm*): the plan, owned by `mem` until the next
 * tick, or NULL (logged) if the balancer refused the snapshot. */
const BalancerPlan *vmms_memory_tick(VmmsMemory *mem, GPtrArray *vms, const VmmsMemoryPool *pool,
                                     uint64_t now_ns);
/* Prompt plans (a guest reported a step up in demand) run at most this often, counting
 * from the last plan of either kind. */
#define VMMS_MEMORY_PROMPT_INTERVAL_NS (200 * G_TIME_SPAN_MILLISECOND * 1000)
/* How long until a prompt plan may run (0: now). */
uint64_t vmms_memory_prompt_delay_ns(VmmsMemory *mem, uint64_t now_ns);
/* A prompt plan (balancer_plan_prompt) on hvd's last pool figures, less the adds planned
 * since: NULL before hvd's first sample or if the balancer refused the snapshot. The
 * plan is owned by `mem` as vmms_memory_tick's is. */
const BalancerPlan *vmms_memory_prompt(VmmsMemory *mem, GPtrArray *vms, uint64_t now_ns);
/* The last plan's figures for a VM (NULL if it was not in it) and for the host. */
const BalancerVmCounters *vmms_memory_vm_counters(VmmsMemory *mem, uint64_t balancer_id);
const BalancerHostCounters *vmms_memory_host_counters(VmmsMemory *mem);
