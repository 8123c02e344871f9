/* The signs of an over-committed host (Get-VMHostHealth and Get-VM's Status): a pure
 * evaluator fed one snapshot of counter figures a second, keeping a bounded window per
 * VM and for the host, and judging the rules vmms-health.c's essay lists. No I/O, no
 * clock: a sample is "one second later" than the one before it. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* The most seconds any rule looks back; each subject keeps at most this many samples. */
#define VMMS_HEALTH_WINDOW_MAX 64

typedef enum VmmsHealthRule {
        VMMS_HEALTH_HOST_AVAILABLE_MEMORY, /* the balancer has (almost) nothing left to give */
        VMMS_HEALTH_HOST_AVERAGE_PRESSURE, /* the VMs together want more than they have */
        VMMS_HEALTH_HOST_LP_BUSY,          /* every logical processor is busy */
        VMMS_HEALTH_VM_PRESSURE,           /* one VM commits more than it is given */
        VMMS_HEALTH_VM_PAGING,             /* one VM pages to its disk */
        VMMS_HEALTH_VM_CPU_WAIT,           /* one VM's processors wait to be dispatched */
        VMMS_HEALTH_VM_CPU_RESERVE,        /* one VM gets less than its Reserve while it asks for it */
        VMMS_HEALTH_RULE_COUNT,
} VmmsHealthRule;

typedef struct VmmsHealthRuleInfo {
        const char *name;    /* "vm-memory-pressure", as the API names the rule */
        const char *counter; /* the counter's name as Get-Counter shows it */
        const char *unit;    /* of value and threshold: "%", "MB", "pages/s", "µs" */
        double threshold;    /* the rule fires at or past it (below it for Available Memory) */
        unsigned window_s;   /* how many seconds of samples the rule judges */
        bool sustained;      /* every sample in the window past the threshold, not the mean */
        const char *status;  /* a VM rule's Get-VM Status ("Paging"); NULL for host rules */
} VmmsHealthRuleInfo;

/* Indexed by VmmsHealthRule. */
extern const VmmsHealthRuleInfo vmms_health_rules[VMMS_HEALTH_RULE_COUNT];

/* One second's figures of one running VM. A figure not known this second is NAN. */
typedef struct VmmsHealthVmSample {
        double average_pressure;         /* \Hyper-V Dynamic Memory VM(vm)\Average Pressure, % */
        double pages_total;              /* Pages In + Pages Out, running totals */
        double pages_in_total;           /* Pages In alone, the running total goal seeking judges */
        double cpu_wait_per_dispatch_ns; /* the mean over the VM's VPs */
        double cpu_run_pct;              /* % Total Run Time summed over its VPs (100 = one LP) */
        double cpu_run_s_total;          /* its VPs' run time, seconds, running total (NAN: not known) */
        double cpu_wait_s_total;         /* their time runnable but not running, likewise */
        double cpu_reserve_pct;          /* Reserve x Count, % of one LP (0: no reservation) */
        uint64_t assigned_bytes;
        uint64_t committed_bytes;
        uint64_t maximum_bytes; /* its Maximum Memory (Startup for static memory) */
        bool static_memory;     /* average_pressure is this second's committed / assigned: the balancer
                                   keeps no window, so a finding names Current Pressure */
        bool goal_seeking;      /* Set-VMMemory -GoalSeeking with Dynamic Memory: pressure over 100 is its
                                   goal, not a shortage, unless it pages in over goal seeking's threshold */
} VmmsHealthVmSample;

/* One second's figures of the host. */
typedef struct VmmsHealthHostSample {
        double available_bytes;  /* \Hyper-V Dynamic Memory Balancer\Available Memory */
        double pool_bytes;       /* the memory pool's size */
        double average_pressure; /* \Hyper-V Dynamic Memory Balancer\Average Pressure */
        double lp_run_pct;       /* \Hyper-V Hypervisor Logical Processor(_Total)\% Total Run Time */
} VmmsHealthHostSample;

typedef struct VmmsHealthFinding {
        VmmsHealthRule rule;
        char *vm;      /* the VM it is about; NULL: the host */
        char *counter; /* the counter's full path, '\Set(Instance)\Counter' */
        double value;  /* over the window: the mean, or for a sustained rule the least extreme */
        double threshold;
        unsigned window_s;
        unsigned for_s;        /* how long the sign has held, in seconds (>= window_s) */
        uint64_t relief_bytes; /* memory that would relieve it; 0 when memory does not help */
        char *advice;
} VmmsHealthFinding;

typedef struct VmmsHealth VmmsHealth;

VmmsHealth *vmms_health_new(void);
void vmms_health_free(VmmsHealth *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsHealth, vmms_health_free)

/* One second: the host's figures, then each running VM's; vmms_health_end_second()
 * judges the host (after its VMs: goal-seeking ones at their goal leave its pressure
 * rule), forgets VMs that had no sample this second (they stopped) and returns the subjects
 * whose state changed, as "" for the host or the VM's name (free with
 * g_ptr_array_unref). */
void vmms_health_push_host(VmmsHealth *h, const VmmsHealthHostSample *sample);
void vmms_health_push_vm(VmmsHealth *h, const char *vm, const VmmsHealthVmSample *sample);
GPtrArray *vmms_health_end_second(VmmsHealth *h);

/* Every finding now, host first, then VMs by name; of VmmsHealthFinding, each freed
 * with the array. */
GPtrArray *vmms_health_findings(VmmsHealth *h);
/* A VM's Get-VM Status: "Operating normally", or its signs ("Memory pressure high for
 * 4 min", "Paging", "Waiting for CPU") joined by ", ". Newly allocated. */
char *vmms_health_vm_status(VmmsHealth *h, const char *vm);
/* The host's state in a sentence: "healthy" or its signs. Newly allocated. */
char *vmms_health_host_status(VmmsHealth *h);
