/* Every counter vmmsd publishes, walked in one place: Get-Counter (vmms-ops.c) shows
 * the walk by Hyper-V's paths, the metrics exporter (api/api-metrics.c) by
 * Prometheus's names, so the two always show the same figures. */
#pragma once

#include <stdbool.h>

#include "vmms-manager.h"

typedef enum VmmsCounterId {
        /* Hyper-V Hypervisor Logical Processor(Hv LP n | _Total) */
        VMMS_COUNTER_LP_TOTAL_RUN_TIME,
        VMMS_COUNTER_LP_GUEST_RUN_TIME,
        VMMS_COUNTER_LP_HYPERVISOR_RUN_TIME,
        VMMS_COUNTER_LP_IDLE_TIME,
        VMMS_COUNTER_LP_CONTEXT_SWITCHES,
        /* Hyper-V Hypervisor(_Total) */
        VMMS_COUNTER_HOST_LOGICAL_PROCESSORS,
        VMMS_COUNTER_HOST_PARTITIONS,
        VMMS_COUNTER_HOST_POOL_BYTES,
        VMMS_COUNTER_HOST_POOL_USED_BYTES,
        /* Hyper-V Dynamic Memory Balancer(System Balancer) */
        VMMS_COUNTER_BALANCER_AVAILABLE_MEMORY,
        VMMS_COUNTER_BALANCER_AVERAGE_PRESSURE,
        VMMS_COUNTER_BALANCER_SYSTEM_CURRENT_PRESSURE,
        /* Hyper-V Dynamic Memory VM(vm) */
        VMMS_COUNTER_VM_PHYSICAL_MEMORY,
        VMMS_COUNTER_VM_GUEST_VISIBLE_MEMORY,
        VMMS_COUNTER_VM_CURRENT_PRESSURE,
        VMMS_COUNTER_VM_AVERAGE_PRESSURE,
        VMMS_COUNTER_VM_MINIMUM_PRESSURE,
        VMMS_COUNTER_VM_MAXIMUM_PRESSURE,
        VMMS_COUNTER_VM_ADDED_MEMORY,
        VMMS_COUNTER_VM_REMOVED_MEMORY,
        VMMS_COUNTER_VM_ADD_OPERATIONS,
        VMMS_COUNTER_VM_REMOVE_OPERATIONS,
        /* VMMS Guest Memory(vm) */
        VMMS_COUNTER_GUEST_COMMITTED_BYTES,
        VMMS_COUNTER_GUEST_PAGES_IN,
        VMMS_COUNTER_GUEST_PAGES_OUT,
        VMMS_COUNTER_GUEST_BALLOONED_BYTES,
        /* VMMS Partition(vm) */
        VMMS_COUNTER_PARTITION_HOST_RESIDENT_BYTES,
        /* Hyper-V Hypervisor Virtual Processor(vm:Hv VP n) */
        VMMS_COUNTER_VP_TOTAL_RUN_TIME,
        VMMS_COUNTER_VP_GUEST_RUN_TIME,
        VMMS_COUNTER_VP_CPU_WAIT_TIME_PER_DISPATCH,
        VMMS_COUNTER_VP_DISPATCHES,
        VMMS_COUNTER_VP_HYPERCALLS,
        VMMS_COUNTER_COUNT,
} VmmsCounterId;

typedef enum VmmsCounterUnit {
        VMMS_COUNTER_UNIT_COUNT,   /* a plain number */
        VMMS_COUNTER_UNIT_PERCENT, /* of elapsed time, or Hyper-V's pressure (committed / assigned × 100) */
        VMMS_COUNTER_UNIT_BYTES,
        VMMS_COUNTER_UNIT_MEGABYTES,  /* MiB: Hyper-V's Dynamic Memory counters count in MB */
        VMMS_COUNTER_UNIT_PER_SECOND, /* over the last second */
        VMMS_COUNTER_UNIT_NANOSECONDS,
} VmmsCounterUnit;

/* What the sample's base_value is. */
typedef enum VmmsCounterBase {
        VMMS_COUNTER_BASE_GAUGE, /* the figure now, in base units: bytes, a count, a ratio (percent / 100) */
        VMMS_COUNTER_BASE_TOTAL, /* a running total (a count or bytes) since the partition was made */
        VMMS_COUNTER_BASE_SECONDS, /* a running total of seconds since the partition was made */
} VmmsCounterBase;

typedef struct VmmsCounterInfo {
        const char *set;  /* Hyper-V's counter set, "Hyper-V Dynamic Memory VM" */
        const char *name; /* Hyper-V's counter name, "Physical Memory" */
        VmmsCounterUnit unit;
        VmmsCounterBase base;
} VmmsCounterInfo;

/* The unit as Get-Counter shows it beside a value: "%", "bytes", "MB", "/s", "ns", "count". */
const char *vmms_counter_unit_name(VmmsCounterUnit unit);

/* Indexed by VmmsCounterId. */
extern const VmmsCounterInfo vmms_counter_info[VMMS_COUNTER_COUNT];

typedef struct VmmsCounterSample {
        VmmsCounterId id;
        const char *instance; /* Hyper-V's instance: "Hv LP 0", "_Total", "web", "web:Hv VP 1" */
        bool aggregate;       /* the _Total instance of a per-processor set */
        const char *vm;       /* the VM (or a partition vmmsd does not know) it is about; NULL: the host */
        int lp;               /* the logical processor's index; -1: none */
        int vp;               /* the virtual processor's index; -1: none */
        double value;         /* as Get-Counter shows it, in the info's unit */
        /* The same figure in base units or, for a rate, the running total it is the
         * rate of (the info's base says which); NAN for an aggregate. */
        double base_value;
} VmmsCounterSample;

/* Called for each sample; everything in it is valid only during the call. */
typedef void (*VmmsCounterFn)(const VmmsCounterSample *sample, void *userdata);

/* What the walk reads (vmms_manager_counter_sources fills it): the VMs, the memory
 * balancer's last plan and hvd's last two samples. Passed in, so this file reads
 * nothing of the manager's and the manager may walk the counters itself. */
struct VmmsCounterSources {
        GPtrArray *vms; /* VmmsVm* */
        VmmsMemory *memory;
        const Vmms__Hv__Counters *prev, *cur;
};

/* Walks every counter of the two samples and the memory balancer's last plan;
 * counters of a partition appear from its second sample on. Main thread. */
void vmms_counters_walk(const VmmsCounterSources *src, VmmsCounterFn fn, void *userdata);
