/* The management service's core: the registry of VMs (durable in the store), the
 * tick that samples figures and runs Dynamic Memory, re-attaching to running VMs at
 * start-up, automatic starts, and the engines and hypervisor they run on. Operations
 * on one VM live in vmms-vm.c. Everything runs on the main thread; the APIs reach it
 * through the operation table (vmms-ops.h). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.pb-c.h"
#include "vmms-call.h"
#include "vmms-events.h"
#include "vmms-hvd.h"
#include "vmms-store.h"
#include "vmms-vm.h"

typedef struct VmmsConfig {
        char *state_dir;   /* vmms.db and logs/ */
        char *runtime_dir; /* vmms.sock, hvd.sock, workers/ */
        char *hvd_socket;
        char *hvd_path;
        char *vmwp_path;
        char *guest_path;
        uint64_t hvd_memory;        /* pool size when vmmsd starts hvd; 0 = hvd's default */
        uint32_t hvd_lps;           /* 0 = hvd's default */
        VmmsHvdOptions hvd_options; /* scheduler, NUMA nodes, slice, I/O boost */
        bool spawn_hvd;
        uint32_t stop_timeout_ms;    /* how long a graceful stop waits before turning off */
        uint32_t force_timeout_ms;   /* the same with -Force */
        uint32_t start_timeout_ms;   /* a VM not running by then is turned off; 0 = 30 s */
        uint64_t memory_reserve;     /* pool memory the balancer never gives to a VM */
        bool init_store;             /* an empty or missing vmms.db may become a new store */
        char *paging_dir;            /* the VMs' paging disks; NULL: STATE/paging */
        char *libvirt_uri;           /* the libvirt engine's libvirtd; NULL: qemu:///system */
        char *libvirt_domain_type;   /* kvm, qemu or auto (NULL) */
        char *libvirt_migration_uri; /* this libvirtd as peers' libvirtd reach it; NULL: libvirt_uri */
} VmmsConfig;

void vmms_config_clear(VmmsConfig *config);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsConfig, vmms_config_clear)

typedef struct VmmsManager VmmsManager;
typedef struct VmmsMemory VmmsMemory;

int vmms_manager_new(const VmmsConfig *config, VmmsManager **ret, char **ret_error);
void vmms_manager_free(VmmsManager *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsManager, vmms_manager_free)

const VmmsConfig *vmms_manager_config(VmmsManager *m);
VmmsStore *vmms_manager_store(VmmsManager *m);
/* VMs in creation order. */
GPtrArray *vmms_manager_vms(VmmsManager *m);
/* By name (case-insensitive) or UUID; a NotFound error naming `ref` if none. */
VmmsVm *vmms_manager_lookup(VmmsManager *m, const char *ref, VmmsError *error);

/* Adds a new definition (store first: nothing is in memory that is not durable). An
 * unknown engine is refused by name. */
int vmms_manager_vm_add(VmmsManager *m, const VmmsVmDefinition *def, VmmsVm **ret, VmmsError *error);
int vmms_manager_vm_remove(VmmsManager *m, VmmsVm *vm, VmmsError *error);
/* Move-VM: the destination runs `vm` now; its job ends and it is forgotten here, files
 * and all, with the event "moved to <destination>". */
int vmms_manager_vm_moved(VmmsManager *m, VmmsVm *vm, const char *destination, VmmsError *error);
/* The host-to-host mover (vmms-migration.h); NULL when vmmsd has none. Not owned. */
typedef struct VmmsMigration VmmsMigration;
void vmms_manager_set_migration(VmmsManager *m, VmmsMigration *migration);
VmmsMigration *vmms_manager_migration(VmmsManager *m);
/* The cluster this host is in (vmms-cluster.h), NULL off a cluster; not owned. */
typedef struct VmmsCluster VmmsCluster;
void vmms_manager_set_cluster(VmmsManager *m, VmmsCluster *cluster);
/* What vmmsd starts on its own (AutomaticStartAction, a move cut short) goes through
 * `fn` when one is set: in a cluster, only a VM this host owns may start (the cluster
 * claims its key first). fn starts vm, or says why not. */
typedef void (*VmmsStartGateFn)(VmmsVm *vm, void *userdata);
void vmms_manager_set_start_gate(VmmsManager *m, VmmsStartGateFn fn, void *userdata);
VmmsCluster *vmms_manager_cluster(VmmsManager *m);
/* Set-VM and Rename-VM: a new name must be free. */
int vmms_manager_vm_update(VmmsManager *m, VmmsVm *vm, const VmmsVmSettings *s, VmmsError *error);
/* Add-VMHardDiskDrive: refuses an image another VM uses (as a drive, boot disk, kernel
 * or initrd) or one inside vmmsd's state directory, then vmms_vm_add_hard_disk_drive. */
int vmms_manager_vm_add_hard_disk_drive(VmmsManager *m, VmmsVm *vm, const char *path, VmmsError *error);

/* Answers a finished job's call with the VM; set by the operation table. */
void vmms_manager_set_vm_reply(VmmsManager *m, VmmsVmReplyFn fn);

/* Events: a watcher gets every event recorded after it subscribed. */
void *vmms_manager_watch(VmmsManager *m, VmmsEventFn fn, void *userdata);
void vmms_manager_unwatch(VmmsManager *m, void *watch);
/* Records an event about the host, not one VM (vm_id and vm_name ""), e.g. a refused
 * call; watchers see it like any other. */
void vmms_manager_record_host_event(VmmsManager *m, const char *kind, const char *message);

VmmsMemory *vmms_manager_memory(VmmsManager *m);
/* The over-commit signs, judged from the counters once a sample (vmms-health.h). */
typedef struct VmmsHealth VmmsHealth;
VmmsHealth *vmms_manager_health(VmmsManager *m);
/* The last two hypervisor counter samples (false until there are two). */
bool vmms_manager_counters(VmmsManager *m, const Vmms__Hv__Counters **ret_prev,
                           const Vmms__Hv__Counters **ret_cur);
/* The hypervisor's latest counter sample (NULL before its first answer), and a way to
 * wait for one: `fn` runs once hvd has answered or failed to within its deadline. */
const Vmms__Hv__Counters *vmms_manager_last_sample(VmmsManager *m);
typedef void (*VmmsSampledFn)(const VmmsError *error, void *userdata);
void vmms_manager_when_sampled(VmmsManager *m, VmmsSampledFn fn, void *userdata);
/* What the counter walk reads (vmms-counters.h); false until hvd has been sampled
 * twice. */
typedef struct VmmsCounterSources VmmsCounterSources;
bool vmms_manager_counter_sources(VmmsManager *m, VmmsCounterSources *ret);
/* The processor compatibility vector a VM started now on this host would have, with or
 * without the normalized CPUID (vmms-hvd.h); NULL while hvd cannot say. */
const Vmms__Hv__CompatibilityVector *vmms_manager_compat_vector(VmmsManager *m, bool normalized);
/* "running", or why the hypervisor cannot be used now. */
const char *vmms_manager_hypervisor_status(VmmsManager *m);
/* The engines VMs can name, each with whether it can run VMs now. */
typedef struct VmmsEngineInfo {
        const char *name;
        bool available;
        char *why_not; /* why not, or (when available) a note on how it runs VMs; may be NULL */
} VmmsEngineInfo;
GArray *vmms_manager_engines(VmmsManager *m); /* of VmmsEngineInfo; free with g_array_unref */
/* The engine of that name (vmms-engine.h), NULL if this vmmsd has none. */
VmmsEngine *vmms_manager_engine(VmmsManager *m, const char *name);
