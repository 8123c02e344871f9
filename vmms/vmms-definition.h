/* A VM's durable definition (one row of the store): its settings, their defaults and
 * the validation of each, and the state it was last recorded in. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmms-error.h"
#include "vmms-limits.h"

/* The settings' limits are proto/vmms-limits.h's, which vmctl and hvd read too. */
#define VMMS_VM_NAME_MAX VMMS_NAME_LENGTH_MAX
#define VMMS_VM_VPS_MAX VMMS_PROCESSOR_COUNT_MAX
#define VMMS_MEMORY_MIN_BYTES VMMS_MEMORY_BYTES_MIN
#define VMMS_MEMORY_MAX_BYTES VMMS_MEMORY_BYTES_MAX
#define VMMS_MEMORY_ALIGN VMMS_MEMORY_BYTES_ALIGN
#define VMMS_BOOT_ARGS_MAX VMMS_BOOT_ARGS_LENGTH_MAX
#define VMMS_NOTES_MAX VMMS_NOTES_LENGTH_MAX

typedef enum VmmsVmState {
        VMMS_VM_OFF,
        VMMS_VM_STARTING,
        VMMS_VM_RUNNING,
        VMMS_VM_PAUSED,
        VMMS_VM_STOPPING,
        VMMS_VM_SAVED,     /* reserved: save/restore */
        VMMS_VM_MIGRATING, /* reserved: live migration */
        VMMS_VM_STATE_COUNT,
} VmmsVmState;

/* Hyper-V's AutomaticStartAction (vmms.proto has the meaning of each). */
typedef enum VmmsAutoStart {
        VMMS_AUTO_START_NOTHING,
        VMMS_AUTO_START_START_IF_RUNNING,
        VMMS_AUTO_START_START,
        VMMS_AUTO_START_COUNT,
} VmmsAutoStart;

const char *vmms_auto_start_to_string(VmmsAutoStart action);
int vmms_auto_start_from_string(const char *text, VmmsAutoStart *ret_action);

typedef struct VmmsProcessorSettings {
        uint32_t count;
        uint32_t reserve;
        uint32_t maximum;
        uint32_t relative_weight;
        /* The guest reads the normalized CPUID (hypervisor/hv-cpuid.c), so it may move
         * to hosts of another CPU model or engine build; only while Off, as in Hyper-V. */
        bool compatibility_for_migration;
} VmmsProcessorSettings;

typedef struct VmmsMemorySettings {
        bool dynamic_memory_enabled;
        uint64_t startup_bytes;
        uint64_t minimum_bytes;
        uint64_t maximum_bytes;
        uint32_t buffer;
        uint32_t priority;
        uint64_t paging_bytes; /* the paging disk; 0: VMMS_PAGING_DEFAULT_FACTOR x startup */
        bool goal_seeking;     /* cap the balancer's target at the footprint that does not page */
} VmmsMemorySettings;

/* Add-VMHardDiskDrive: a disk image the libvirt engine attaches beside VHDPath (the
 * boot disk), as a virtio disk in the order added. format: what vmms-devices.c probed
 * when it was added ("qcow2", "raw", ...). */
typedef struct VmmsHardDiskDrive {
        char *path;
        char *format;
} VmmsHardDiskDrive;

/* Add-VMNetworkAdapter: a virtio NIC on a libvirt network (switch_name), with a MAC
 * address fixed when it is added, so the guest sees the same NIC each boot. */
typedef struct VmmsNetworkAdapter {
        char *name;
        char *switch_name;
        char mac_address[18]; /* "52:54:00:xx:xx:xx" */
} VmmsNetworkAdapter;

#define VMMS_HARD_DISK_DRIVES_MAX 16
#define VMMS_NETWORK_ADAPTERS_MAX 8

/* The durable definition: one row of the store. */
typedef struct VmmsVmDefinition {
        char id[37];
        char *name;
        VmmsVmState state;
        VmmsProcessorSettings processor;
        VmmsMemorySettings memory;
        char *workload;
        char *boot_args;
        char *notes;
        char *engine; /* "bundled" or "libvirt" */
        /* The libvirt engine's guest: a kernel (with an initrd and its command line) or a
         * disk image; empty strings when unset. */
        char *kernel_path;
        char *initrd_path;
        char *kernel_args;
        char *vhd_path;
        /* The libvirt engine's devices beyond the boot source (vmms-devices.c). */
        GArray *hard_disk_drives; /* of VmmsHardDiskDrive; never NULL once initialised */
        GArray *network_adapters; /* of VmmsNetworkAdapter */
        VmmsAutoStart automatic_start_action;
        /* In a cluster: restarted on another host by the leader when its host dies. */
        bool highly_available;
        int64_t created_unix_ms;
        int64_t updated_unix_ms;
        /* Runtime, kept so a restarted vmmsd finds its workers. */
        int32_t worker_pid;
        int64_t started_unix_ms;
} VmmsVmDefinition;

void vmms_vm_definition_init_defaults(VmmsVmDefinition *def);
/* Empty arrays of VmmsHardDiskDrive / VmmsNetworkAdapter that free their elements. */
GArray *vmms_hard_disk_drives_new(void);
GArray *vmms_network_adapters_new(void);
void vmms_vm_definition_clear(VmmsVmDefinition *def);
void vmms_vm_definition_copy(VmmsVmDefinition *dst, const VmmsVmDefinition *src);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsVmDefinition, vmms_vm_definition_clear)

const char *vmms_vm_state_to_string(VmmsVmState state);
int vmms_vm_state_from_string(const char *text, VmmsVmState *ret_state);

bool vmms_vm_name_valid(const char *name, VmmsError *error);
bool vmms_vm_processor_valid(const VmmsProcessorSettings *p, VmmsError *error);
/* CompatibilityForMigrationEnabled needs an engine that normalizes the processor:
 * the bundled one. */
bool vmms_vm_processor_engine_valid(const char *name, const char *engine, const VmmsProcessorSettings *p,
                                    VmmsError *error);
/* The paging disk's size: the setting, or its default. */
uint64_t vmms_vm_paging_bytes(const VmmsMemorySettings *m);
bool vmms_vm_memory_valid(const VmmsMemorySettings *m, VmmsError *error);
bool vmms_vm_workload_valid(const char *workload, const char *boot_args, const char *notes, VmmsError *error);
/* The guest's boot source for its engine: the libvirt engine needs KernelPath or
 * VHDPath (absolute paths to readable files); the bundled engine takes neither. */
bool vmms_vm_boot_source_valid(const VmmsVmDefinition *def, VmmsError *error);
/* While running, Minimum may only be lowered and Maximum only raised (as Hyper-V). */
bool vmms_vm_memory_change_allowed_running(const VmmsMemorySettings *old, const VmmsMemorySettings *new,
                                           VmmsError *error);
