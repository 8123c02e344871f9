/* The counter walk: Hyper-V's sets and names, each sample with its instance, the VM and
 * processor it is about, its value as Get-Counter shows it (rates over the last second)
 * and the same figure in base units (or the running total a rate is taken from) for
 * the metrics exporter. */
#include <math.h>

#include "vmms-counters.h"
#include "vmms-engine.h"
#include "vmms-memory.h"

#define LP_SET "Hyper-V Hypervisor Logical Processor"
#define HOST_SET "Hyper-V Hypervisor"
#define BALANCER_SET "Hyper-V Dynamic Memory Balancer"
#define DM_VM_SET "Hyper-V Dynamic Memory VM"
#define GUEST_SET "VMMS Guest Memory"
#define PARTITION_SET "VMMS Partition"
#define VP_SET "Hyper-V Hypervisor Virtual Processor"

#define MIB (1024.0 * 1024.0)
#define NS_PER_S 1e9

const VmmsCounterInfo vmms_counter_info[VMMS_COUNTER_COUNT] = {
        [VMMS_COUNTER_LP_TOTAL_RUN_TIME] = {LP_SET, "% Total Run Time", VMMS_COUNTER_UNIT_PERCENT,
                                            VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_LP_GUEST_RUN_TIME] = {LP_SET, "% Guest Run Time", VMMS_COUNTER_UNIT_PERCENT,
                                            VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_LP_HYPERVISOR_RUN_TIME] = {LP_SET, "% Hypervisor Run Time", VMMS_COUNTER_UNIT_PERCENT,
                                                 VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_LP_IDLE_TIME] = {LP_SET, "% Idle Time", VMMS_COUNTER_UNIT_PERCENT,
                                       VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_LP_CONTEXT_SWITCHES] = {LP_SET, "Context Switches/sec", VMMS_COUNTER_UNIT_PER_SECOND,
                                              VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_HOST_LOGICAL_PROCESSORS] = {HOST_SET, "Logical Processors", VMMS_COUNTER_UNIT_COUNT,
                                                  VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_HOST_PARTITIONS] = {HOST_SET, "Partitions", VMMS_COUNTER_UNIT_COUNT,
                                          VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_HOST_POOL_BYTES] = {HOST_SET, "Memory Pool Bytes", VMMS_COUNTER_UNIT_BYTES,
                                          VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_HOST_POOL_USED_BYTES] = {HOST_SET, "Memory Pool Used Bytes", VMMS_COUNTER_UNIT_BYTES,
                                               VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_BALANCER_AVAILABLE_MEMORY] = {BALANCER_SET, "Available Memory",
                                                    VMMS_COUNTER_UNIT_MEGABYTES, VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_BALANCER_AVERAGE_PRESSURE] = {BALANCER_SET, "Average Pressure",
                                                    VMMS_COUNTER_UNIT_PERCENT, VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_BALANCER_SYSTEM_CURRENT_PRESSURE] = {BALANCER_SET, "System Current Pressure",
                                                           VMMS_COUNTER_UNIT_PERCENT,
                                                           VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_PHYSICAL_MEMORY] = {DM_VM_SET, "Physical Memory", VMMS_COUNTER_UNIT_MEGABYTES,
                                             VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_GUEST_VISIBLE_MEMORY] = {DM_VM_SET, "Guest Visible Physical Memory",
                                                  VMMS_COUNTER_UNIT_MEGABYTES, VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_CURRENT_PRESSURE] = {DM_VM_SET, "Current Pressure", VMMS_COUNTER_UNIT_PERCENT,
                                              VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_AVERAGE_PRESSURE] = {DM_VM_SET, "Average Pressure", VMMS_COUNTER_UNIT_PERCENT,
                                              VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_MINIMUM_PRESSURE] = {DM_VM_SET, "Minimum Pressure", VMMS_COUNTER_UNIT_PERCENT,
                                              VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_MAXIMUM_PRESSURE] = {DM_VM_SET, "Maximum Pressure", VMMS_COUNTER_UNIT_PERCENT,
                                              VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VM_ADDED_MEMORY] = {DM_VM_SET, "Added Memory", VMMS_COUNTER_UNIT_MEGABYTES,
                                          VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_VM_REMOVED_MEMORY] = {DM_VM_SET, "Removed Memory", VMMS_COUNTER_UNIT_MEGABYTES,
                                            VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_VM_ADD_OPERATIONS] = {DM_VM_SET, "Memory Add Operations", VMMS_COUNTER_UNIT_COUNT,
                                            VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_VM_REMOVE_OPERATIONS] = {DM_VM_SET, "Memory Remove Operations", VMMS_COUNTER_UNIT_COUNT,
                                               VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_GUEST_COMMITTED_BYTES] = {GUEST_SET, "Committed Bytes", VMMS_COUNTER_UNIT_BYTES,
                                                VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_GUEST_PAGES_IN] = {GUEST_SET, "Pages In", VMMS_COUNTER_UNIT_COUNT,
                                         VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_GUEST_PAGES_OUT] = {GUEST_SET, "Pages Out", VMMS_COUNTER_UNIT_COUNT,
                                          VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_GUEST_BALLOONED_BYTES] = {GUEST_SET, "Ballooned Bytes", VMMS_COUNTER_UNIT_BYTES,
                                                VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_PARTITION_HOST_RESIDENT_BYTES] = {PARTITION_SET, "Host Resident Bytes",
                                                        VMMS_COUNTER_UNIT_BYTES, VMMS_COUNTER_BASE_GAUGE},
        [VMMS_COUNTER_VP_TOTAL_RUN_TIME] = {VP_SET, "% Total Run Time", VMMS_COUNTER_UNIT_PERCENT,
                                            VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_VP_GUEST_RUN_TIME] = {VP_SET, "% Guest Run Time", VMMS_COUNTER_UNIT_PERCENT,
                                            VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_VP_CPU_WAIT_TIME_PER_DISPATCH] = {VP_SET, "CPU Wait Time Per Dispatch",
                                                        VMMS_COUNTER_UNIT_NANOSECONDS,
                                                        VMMS_COUNTER_BASE_SECONDS},
        [VMMS_COUNTER_VP_DISPATCHES] = {VP_SET, "Dispatches/sec", VMMS_COUNTER_UNIT_PER_SECOND,
                                        VMMS_COUNTER_BASE_TOTAL},
        [VMMS_COUNTER_VP_HYPERCALLS] = {VP_SET, "Hypercalls/sec", VMMS_COUNTER_UNIT_PER_SECOND,
                                        VMMS_COUNTER_BASE_TOTAL},
};

const char *vmms_counter_unit_name(VmmsCounterUnit unit)
{
        static const char *const names[] = {
                [VMMS_COUNTER_UNIT_COUNT] = "count",   [VMMS_COUNTER_UNIT_PERCENT] = "%",
                [VMMS_COUNTER_UNIT_BYTES] = "bytes",   [VMMS_COUNTER_UNIT_MEGABYTES] = "MB",
                [VMMS_COUNTER_UNIT_PER_SECOND] = "/s", [VMMS_COUNTER_UNIT_NANOSECONDS] = "ns",
        };

        return (size_t)unit < G_N_ELEMENTS(names) && names[unit] ? names[unit] : "count";
}

typedef struct CounterWalk {
        VmmsCounterFn fn;
        void *userdata;
        VmmsCounterSample sample; /* what the next emit() shares: instance, vm, lp, vp */
} CounterWalk;

static void emit(CounterWalk *w, VmmsCounterId id, double value, double base_value)
{
        w->sample.id = id;
        w->sample.value = value;
        w->sample.base_value = base_value;
        w->fn(&w->sample, w->userdata);
}

static void begin_instance(CounterWalk *w, const char *instance, const char *vm, int lp, int vp)
{
        w->sample = (VmmsCounterSample){.instance = instance, .vm = vm, .lp = lp, .vp = vp};
}

static double rate(uint64_t now, uint64_t before, uint64_t dt_ns, double scale)
{
        return dt_ns ? (double)(now - before) * scale / (double)dt_ns : 0;
}

static const VmmsVm *vm_of_partition(GPtrArray *vms, uint64_t partition_id)
{
        for (guint i = 0; partition_id && i < vms->len; i++)
                if (((VmmsVm *)vms->pdata[i])->partition_id == partition_id)
                        return vms->pdata[i];
        return NULL;
}

static void walk_lps(CounterWalk *w, const Vmms__Hv__Counters *prev, const Vmms__Hv__Counters *cur)
{
        uint64_t dt = cur->time_ns - prev->time_ns, total_guest = 0, total_hyp = 0, total_idle = 0;

        for (size_t i = 0; i < cur->n_lps && i < prev->n_lps; i++) {
                const Vmms__Hv__LpCounters *a = prev->lps[i], *b = cur->lps[i];
                g_autofree char *instance = g_strdup_printf("Hv LP %u", b->index);
                double guest = rate(b->guest_ns, a->guest_ns, dt, 100),
                       hyp = rate(b->hypervisor_ns, a->hypervisor_ns, dt, 100);

                total_guest += b->guest_ns - a->guest_ns;
                total_hyp += b->hypervisor_ns - a->hypervisor_ns;
                total_idle += b->idle_ns - a->idle_ns;
                begin_instance(w, instance, NULL, (int)b->index, -1);
                emit(w, VMMS_COUNTER_LP_TOTAL_RUN_TIME, guest + hyp,
                     (double)(b->guest_ns + b->hypervisor_ns) / NS_PER_S);
                emit(w, VMMS_COUNTER_LP_GUEST_RUN_TIME, guest, (double)b->guest_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_LP_HYPERVISOR_RUN_TIME, hyp, (double)b->hypervisor_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_LP_IDLE_TIME, rate(b->idle_ns, a->idle_ns, dt, 100),
                     (double)b->idle_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_LP_CONTEXT_SWITCHES,
                     rate(b->context_switches, a->context_switches, dt, 1e9), (double)b->context_switches);
        }
        if (cur->n_lps) {
                double n = (double)cur->n_lps;

                begin_instance(w, "_Total", NULL, -1, -1);
                w->sample.aggregate = true;
                emit(w, VMMS_COUNTER_LP_TOTAL_RUN_TIME, rate(total_guest + total_hyp, 0, dt, 100) / n, NAN);
                emit(w, VMMS_COUNTER_LP_GUEST_RUN_TIME, rate(total_guest, 0, dt, 100) / n, NAN);
                emit(w, VMMS_COUNTER_LP_HYPERVISOR_RUN_TIME, rate(total_hyp, 0, dt, 100) / n, NAN);
                emit(w, VMMS_COUNTER_LP_IDLE_TIME, rate(total_idle, 0, dt, 100) / n, NAN);
        }
}

static void walk_host(CounterWalk *w, VmmsMemory *memory, const Vmms__Hv__Counters *cur)
{
        const BalancerHostCounters *h = vmms_memory_host_counters(memory);

        begin_instance(w, "_Total", NULL, -1, -1);
        emit(w, VMMS_COUNTER_HOST_LOGICAL_PROCESSORS, (double)cur->n_lps, (double)cur->n_lps);
        emit(w, VMMS_COUNTER_HOST_PARTITIONS, (double)cur->n_partitions, (double)cur->n_partitions);
        emit(w, VMMS_COUNTER_HOST_POOL_BYTES, (double)cur->pool_total_bytes, (double)cur->pool_total_bytes);
        emit(w, VMMS_COUNTER_HOST_POOL_USED_BYTES, (double)cur->pool_used_bytes,
             (double)cur->pool_used_bytes);
        if (!h)
                return;
        begin_instance(w, "System Balancer", NULL, -1, -1);
        emit(w, VMMS_COUNTER_BALANCER_AVAILABLE_MEMORY, (double)(h->available_bytes >> 20),
             (double)h->available_bytes);
        emit(w, VMMS_COUNTER_BALANCER_AVERAGE_PRESSURE, h->average_pressure, h->average_pressure / 100.0);
        emit(w, VMMS_COUNTER_BALANCER_SYSTEM_CURRENT_PRESSURE, h->system_current_pressure,
             h->system_current_pressure / 100.0);
}

/* Hyper-V's "Dynamic Memory VM" set (memory in MB, as Hyper-V counts it), from the
 * balancer's last plan and the worker's last report. */
static void walk_memory(CounterWalk *w, VmmsMemory *memory, const VmmsVm *vm, const char *name,
                        const Vmms__Hv__PartitionCounters *pc)
{
        const BalancerVmCounters *dm = vm ? vmms_memory_vm_counters(memory, vm->balancer_id) : NULL;

        begin_instance(w, name, name, -1, -1);
        emit(w, VMMS_COUNTER_VM_PHYSICAL_MEMORY, (double)(pc->assigned_bytes >> 20),
             (double)pc->assigned_bytes);
        if (vm && vm->memory.received_ns) {
                emit(w, VMMS_COUNTER_VM_GUEST_VISIBLE_MEMORY, (double)(vm->memory.visible_bytes >> 20),
                     (double)vm->memory.visible_bytes);
                /* Not Hyper-V counters: what the guest commits and pages to its synthetic disk. */
                emit(w, VMMS_COUNTER_GUEST_COMMITTED_BYTES, (double)vm->memory.committed_bytes,
                     (double)vm->memory.committed_bytes);
                emit(w, VMMS_COUNTER_GUEST_PAGES_IN, (double)vm->memory.page_in_total,
                     (double)vm->memory.page_in_total);
                emit(w, VMMS_COUNTER_GUEST_PAGES_OUT, (double)vm->memory.page_out_total,
                     (double)vm->memory.page_out_total);
                emit(w, VMMS_COUNTER_GUEST_BALLOONED_BYTES, (double)vm->memory.ballooned_bytes,
                     (double)vm->memory.ballooned_bytes);
        }
        if (!dm)
                return;
        if (dm->status == BALANCER_VM_NOT_MANAGED) {
                /* Static memory: the balancer keeps no window, so no Average, Minimum or Maximum (not
                 * zeros); Current is Get-VM's figure, from the same report. */
                if (vm->memory.reporting && vm->memory.assigned_bytes) {
                        uint32_t pressure =
                                balancer_pressure(vm->memory.committed_bytes, vm->memory.assigned_bytes);

                        emit(w, VMMS_COUNTER_VM_CURRENT_PRESSURE, pressure, pressure / 100.0);
                }
        } else {
                emit(w, VMMS_COUNTER_VM_CURRENT_PRESSURE, dm->current_pressure, dm->current_pressure / 100.0);
                emit(w, VMMS_COUNTER_VM_AVERAGE_PRESSURE, dm->average_pressure, dm->average_pressure / 100.0);
                emit(w, VMMS_COUNTER_VM_MINIMUM_PRESSURE, dm->minimum_pressure, dm->minimum_pressure / 100.0);
                emit(w, VMMS_COUNTER_VM_MAXIMUM_PRESSURE, dm->maximum_pressure, dm->maximum_pressure / 100.0);
        }
        emit(w, VMMS_COUNTER_VM_ADDED_MEMORY, (double)(dm->added_bytes >> 20), (double)dm->added_bytes);
        emit(w, VMMS_COUNTER_VM_REMOVED_MEMORY, (double)(dm->removed_bytes >> 20), (double)dm->removed_bytes);
        emit(w, VMMS_COUNTER_VM_ADD_OPERATIONS, (double)dm->add_operations, (double)dm->add_operations);
        emit(w, VMMS_COUNTER_VM_REMOVE_OPERATIONS, (double)dm->remove_operations,
             (double)dm->remove_operations);
}

static void walk_vps(CounterWalk *w, const char *name, const Vmms__Hv__PartitionCounters *pp,
                     const Vmms__Hv__PartitionCounters *pc, uint64_t dt)
{
        for (size_t v = 0; v < pc->n_vps && v < pp->n_vps; v++) {
                const Vmms__Hv__VpCounters *a = pp->vps[v], *b = pc->vps[v];
                g_autofree char *instance = g_strdup_printf("%s:Hv VP %u", name, b->index);
                uint64_t dispatches = b->dispatches - a->dispatches;

                begin_instance(w, instance, name, -1, (int)b->index);
                emit(w, VMMS_COUNTER_VP_TOTAL_RUN_TIME, rate(b->run_ns, a->run_ns, dt, 100),
                     (double)b->run_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_VP_GUEST_RUN_TIME, rate(b->guest_ns, a->guest_ns, dt, 100),
                     (double)b->guest_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_VP_CPU_WAIT_TIME_PER_DISPATCH,
                     dispatches ? (double)(b->wait_ns - a->wait_ns) / (double)dispatches : 0,
                     (double)b->wait_ns / NS_PER_S);
                emit(w, VMMS_COUNTER_VP_DISPATCHES, rate(b->dispatches, a->dispatches, dt, 1e9),
                     (double)b->dispatches);
                emit(w, VMMS_COUNTER_VP_HYPERCALLS, rate(b->hypercalls, a->hypercalls, dt, 1e9),
                     (double)b->hypercalls);
        }
}

/* One partition's sets: Dynamic Memory VM, host-resident bytes, and its VPs (from
 * its second sample on). */
static void walk_partition(CounterWalk *w, VmmsMemory *memory, const VmmsVm *vm, const char *name,
                           const Vmms__Hv__PartitionCounters *pp, const Vmms__Hv__PartitionCounters *pc,
                           uint64_t dt)
{
        walk_memory(w, memory, vm, name, pc);
        begin_instance(w, name, name, -1, -1);
        emit(w, VMMS_COUNTER_PARTITION_HOST_RESIDENT_BYTES, (double)pc->resident_bytes,
             (double)pc->resident_bytes);
        if (pp)
                walk_vps(w, name, pp, pc, dt);
}

void vmms_counters_walk(const VmmsCounterSources *src, VmmsCounterFn fn, void *userdata)
{
        CounterWalk w = {.fn = fn, .userdata = userdata};
        const Vmms__Hv__Counters *prev = src->prev, *cur = src->cur;

        walk_lps(&w, prev, cur);
        walk_host(&w, src->memory, cur);
        for (size_t i = 0; i < cur->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pc = cur->partitions[i], *pp = NULL;
                const VmmsVm *vm = vm_of_partition(src->vms, pc->partition_id);
                const char *name = vm ? vm->def.name : pc->name;

                for (size_t k = 0; k < prev->n_partitions; k++)
                        if (prev->partitions[k]->partition_id == pc->partition_id)
                                pp = prev->partitions[k];
                walk_partition(&w, src->memory, vm, name, pp, pc, cur->time_ns - prev->time_ns);
        }
        /* VMs another engine runs (libvirt): the same sets from that engine's samples. */
        for (guint i = 0; i < src->vms->len; i++) {
                const VmmsVm *vm = src->vms->pdata[i];
                const Vmms__Hv__PartitionCounters *pp = NULL, *pc = NULL;
                uint64_t dt = 0;

                if (vm->partition_id || !vm->engine || !vm->engine->ops->counters || !vmms_vm_is_live(vm) ||
                    !vm->engine->ops->counters(vm->engine, vm, &pp, &pc, &dt))
                        continue;
                walk_partition(&w, src->memory, vm, vm->def.name, pp, pc, dt);
        }
}
