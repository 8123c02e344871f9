/* The management service's core: it owns the VM definitions (durable in the store),
 * their state machines and workers, supervises hvd, samples counters, and records
 * events. Everything runs on the main thread; the APIs reach it through the
 * operation table (vmms-ops.h). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv-client.h"
#include "vmms-call.h"
#include "vmms-store.h"
#include "vmms-vm.h"
#include "vmms-worker.h"

typedef struct VmmsConfig {
        char *state_dir;   /* vmms.db and logs/ */
        char *runtime_dir; /* vmms.sock, hvd.sock, workers/ */
        char *hvd_socket;
        char *hvd_path;
        char *vmwp_path;
        char *guest_path;
        uint64_t hvd_memory; /* pool size when vmmsd starts hvd; 0 = hvd's default */
        uint32_t hvd_lps;    /* 0 = hvd's default */
        bool spawn_hvd;
        uint32_t stop_timeout_ms;  /* how long a graceful stop waits before turning off */
        uint32_t force_timeout_ms; /* the same with -Force */
        uint64_t memory_reserve;   /* pool memory the balancer never gives to a VM */
} VmmsConfig;

void vmms_config_clear(VmmsConfig *config);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsConfig, vmms_config_clear)

typedef struct VmmsManager VmmsManager;

/* A worker's latest Dynamic Memory report (worker.proto MemoryStatus). */
typedef struct VmmsMemoryStatus {
        bool reporting;
        uint64_t received_ns; /* host monotonic time it arrived; 0: never */
        uint64_t committed_bytes;
        uint64_t visible_bytes;
        uint64_t assigned_bytes;
        uint64_t ballooned_bytes;
        uint64_t pending_remove_bytes;
        uint64_t resident_bytes;
        uint64_t page_in_total;
        uint64_t page_out_total;
} VmmsMemoryStatus;

typedef struct VmmsVm {
        VmmsManager *manager;
        VmmsVmDefinition def;
        VmmsWorker *worker;
        uint64_t partition_id;
        /* The job in progress (NULL: none): every state-changing operation waits for
         * it to end, so racing clients get a clean "busy" answer. */
        const char *job;
        VmmsCall *job_call;
        guint kill_timer;
        char *guest_stop_reason;
        bool guest_crashed;
        /* Live figures, from the hypervisor's counters. */
        double cpu_usage_pct;
        uint64_t assigned_bytes;
        uint64_t resident_bytes;
        /* Dynamic Memory. */
        uint64_t balancer_id; /* the balancer's key for this VM, unique for vmmsd's life */
        VmmsMemoryStatus memory;
} VmmsVm;

int vmms_manager_new(const VmmsConfig *config, VmmsManager **ret, char **ret_error);
void vmms_manager_free(VmmsManager *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsManager, vmms_manager_free)

const VmmsConfig *vmms_manager_config(VmmsManager *m);
VmmsStore *vmms_manager_store(VmmsManager *m);
/* VMs in creation order. */
GPtrArray *vmms_manager_vms(VmmsManager *m);
/* By name (case-insensitive) or UUID; a NotFound error naming `ref` if none. */
VmmsVm *vmms_manager_lookup(VmmsManager *m, const char *ref, VmmsError *error);

/* Adds a new definition (store first: nothing is in memory that is not durable). */
int vmms_manager_vm_add(VmmsManager *m, const VmmsVmDefinition *def, VmmsVm **ret, VmmsError *error);
int vmms_manager_vm_remove(VmmsManager *m, VmmsVm *vm, VmmsError *error);
/* Persists vm->def with an event in one transaction, then tells the watchers. */
int vmms_vm_persist(VmmsVm *vm, const char *kind, VmmsError *error, const char *fmt, ...) G_GNUC_PRINTF(4, 5);

/* Whether no job is in progress on the VM; if one is, a NotAllowed error naming it. */
bool vmms_vm_check_idle(VmmsVm *vm, VmmsError *error);

/* Lifecycle. Each ends `call` when the VM has reached its state or failed. */
void vmms_vm_start(VmmsVm *vm, VmmsCall *call);
void vmms_vm_stop(VmmsVm *vm, bool turn_off, bool force, VmmsCall *call);
void vmms_vm_pause(VmmsVm *vm, bool paused, VmmsCall *call);
void vmms_vm_set_processor(VmmsVm *vm, const VmmsProcessorSettings *p, VmmsCall *call);
/* Answers a finished job's call with the VM; set by the operation table. */
typedef void (*VmmsVmReplyFn)(VmmsVm *vm, VmmsCall *call);
void vmms_manager_set_vm_reply(VmmsManager *m, VmmsVmReplyFn fn);

/* Events. A watcher gets every event recorded after it subscribed. */
typedef void (*VmmsEventFn)(const VmmsEventRecord *event, void *userdata);
void *vmms_manager_watch(VmmsManager *m, VmmsEventFn fn, void *userdata);
void vmms_manager_unwatch(VmmsManager *m, void *watch);

/* Dynamic Memory: asks the VM's worker to grow (> 0) or shrink its assigned memory. */
void vmms_vm_adjust_memory(VmmsVm *vm, int64_t delta_bytes, const char *reason);
typedef struct VmmsMemory VmmsMemory;
VmmsMemory *vmms_manager_memory(VmmsManager *m);

/* The last two hypervisor counter samples (NULL until there are two). */
bool vmms_manager_counters(VmmsManager *m, const Vmms__Hv__Counters **ret_prev,
                           const Vmms__Hv__Counters **ret_cur);
char *vmms_vm_partition_name(const VmmsVm *vm);

/* Records an event about the host, not one VM (vm_id and vm_name ""), e.g. a refused
 * call; watchers see it like any other. */
void vmms_manager_record_host_event(VmmsManager *m, const char *kind, const char *message);
