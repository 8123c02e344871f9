/* Dynamic Memory in vmmsd: once a second, a snapshot of the VMs' reports and the
 * hypervisor's pool goes to the balancer (balancer/, pure), and its actions go to the
 * workers. The last plan's counters feed Get-VM and Get-Counter. */
#pragma once

#include "balancer.h"
#include "hv.pb-c.h"

typedef struct VmmsManager VmmsManager;
typedef struct VmmsMemory VmmsMemory;

int vmms_memory_new(uint64_t reserve_bytes, VmmsMemory **ret);
void vmms_memory_free(VmmsMemory *mem);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsMemory, vmms_memory_free)

/* One balancer tick over `m`'s VMs with the pool figures of `counters`. */
void vmms_memory_tick(VmmsMemory *mem, VmmsManager *m, const Vmms__Hv__Counters *counters, uint64_t now_ns);
/* The last plan's figures for a VM (NULL if it was not in it) and for the host. */
const BalancerVmCounters *vmms_memory_vm_counters(VmmsMemory *mem, uint64_t balancer_id);
const BalancerHostCounters *vmms_memory_host_counters(VmmsMemory *mem);
