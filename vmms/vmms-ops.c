/* The operation table: each handler turns a request into a core operation — it looks
 * the VM up and converts messages; the operation itself (job, state, engine, store)
 * is in vmms-vm.c, the registry's in vmms-manager.c. Access was judged before a
 * handler runs (vmms-access.c). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmms-cluster.h"
#include "vmms-counters.h"
#include "vmms-console.h"
#include "vmms-health.h"
#include "vmms-memory.h"
#include "vmms-migration.h"
#include "vmms-ops.h"
#include "vmms-proto.h"
#include "vmms.pb-c.h"

#define EVENTS_DEFAULT_LIMIT 100
/* Bounds on a request's work: counter path patterns (each sample is matched against
 * every one) and update-mask entries. */
#define COUNTER_PATHS_MAX 256
#define UPDATE_MASK_MAX 32
#define EVENTS_MAX_LIMIT 10000

/* ---- Conversions (responses are built from the call's memory) ---- */

static Vmms__V1__AutomaticStartAction auto_start_to_proto(VmmsAutoStart action)
{
        switch (action) {
        case VMMS_AUTO_START_NOTHING:
                return VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_NOTHING;
        case VMMS_AUTO_START_START:
                return VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START;
        default:
                return VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START_IF_RUNNING;
        }
}

/* UNSPECIFIED -> `unset`; an unknown value is refused. */
static bool auto_start_from_proto(Vmms__V1__AutomaticStartAction in, VmmsAutoStart unset, VmmsAutoStart *ret,
                                  VmmsError *error)
{
        switch (in) {
        case VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_UNSPECIFIED:
                *ret = unset;
                return true;
        case VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_NOTHING:
                *ret = VMMS_AUTO_START_NOTHING;
                return true;
        case VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START_IF_RUNNING:
                *ret = VMMS_AUTO_START_START_IF_RUNNING;
                return true;
        case VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START:
                *ret = VMMS_AUTO_START_START;
                return true;
        default:
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "automatic_start_action %d is not one of %s", (int)in,
                               "NOTHING, START_IF_RUNNING, START");
                return false;
        }
}

static void fill_devices(const VmmsVm *vm, Vmms__V1__Vm *out, VmmsCall *call)
{
        const GArray *drives = vm->def.hard_disk_drives;
        const GArray *adapters = vm->def.network_adapters;
        guint n_drives = drives ? drives->len : 0, n_adapters = adapters ? adapters->len : 0;

        out->hard_disk_drives = vmms_call_alloc(call, sizeof(Vmms__V1__HardDiskDrive *) * (n_drives + 1));
        for (guint i = 0; i < n_drives; i++) {
                const VmmsHardDiskDrive *d = &g_array_index(drives, VmmsHardDiskDrive, i);
                Vmms__V1__HardDiskDrive *o = vmms_call_new0(call, Vmms__V1__HardDiskDrive);

                vmms__v1__hard_disk_drive__init(o);
                o->path = vmms_call_strdup(call, d->path);
                o->format = vmms_call_strdup(call, d->format);
                o->vm_name = out->name;
                out->hard_disk_drives[out->n_hard_disk_drives++] = o;
        }
        out->network_adapters = vmms_call_alloc(call, sizeof(Vmms__V1__NetworkAdapter *) * (n_adapters + 1));
        for (guint i = 0; i < n_adapters; i++) {
                const VmmsNetworkAdapter *a = &g_array_index(adapters, VmmsNetworkAdapter, i);
                Vmms__V1__NetworkAdapter *o = vmms_call_new0(call, Vmms__V1__NetworkAdapter);

                vmms__v1__network_adapter__init(o);
                o->name = vmms_call_strdup(call, a->name);
                o->switch_name = vmms_call_strdup(call, a->switch_name);
                o->mac_address = vmms_call_strdup(call, a->mac_address);
                o->vm_name = out->name;
                out->network_adapters[out->n_network_adapters++] = o;
        }
}

static Vmms__V1__Vm *vm_to_proto(VmmsManager *m, VmmsCall *call, const VmmsVm *vm)
{
        Vmms__V1__Vm *out = vmms_call_new0(call, Vmms__V1__Vm);
        Vmms__V1__ProcessorSettings *p = vmms_call_new0(call, Vmms__V1__ProcessorSettings);
        Vmms__V1__MemorySettings *mem = vmms_call_new0(call, Vmms__V1__MemorySettings);
        bool live = vmms_vm_is_live(vm);

        vmms__v1__vm__init(out);
        vmms__v1__processor_settings__init(p);
        vmms__v1__memory_settings__init(mem);
        out->id = vmms_call_strdup(call, vm->def.id);
        out->name = vmms_call_strdup(call, vm->def.name);
        out->state = vmms_proto_vm_state(vm->def.state);
        fill_devices(vm, out, call);
        p->count = vm->def.processor.count;
        p->reserve = vm->def.processor.reserve;
        p->maximum = vm->def.processor.maximum;
        p->relative_weight = vm->def.processor.relative_weight;
        p->compatibility_for_migration_enabled = vm->def.processor.compatibility_for_migration;
        out->processor = p;
        mem->dynamic_memory_enabled = vm->def.memory.dynamic_memory_enabled;
        mem->startup_bytes = vm->def.memory.startup_bytes;
        mem->minimum_bytes = vm->def.memory.minimum_bytes;
        mem->maximum_bytes = vm->def.memory.maximum_bytes;
        mem->buffer = vm->def.memory.buffer;
        mem->priority = vm->def.memory.priority;
        mem->paging_bytes = vm->def.memory.paging_bytes;
        mem->goal_seeking = vm->def.memory.goal_seeking;
        out->memory = mem;
        out->workload = vmms_call_strdup(call, vm->def.workload);
        out->boot_args = vmms_call_strdup(call, vm->def.boot_args);
        out->notes = vmms_call_strdup(call, vm->def.notes);
        out->created_unix_ms = vm->def.created_unix_ms;
        out->updated_unix_ms = vm->def.updated_unix_ms;
        out->engine = vmms_call_strdup(call, vm->def.engine);
        out->automatic_start_action = auto_start_to_proto(vm->def.automatic_start_action);
        out->highly_available = vm->def.highly_available;
        out->kernel_path = vmms_call_strdup(call, vm->def.kernel_path ? vm->def.kernel_path : "");
        out->initrd_path = vmms_call_strdup(call, vm->def.initrd_path ? vm->def.initrd_path : "");
        out->kernel_args = vmms_call_strdup(call, vm->def.kernel_args ? vm->def.kernel_args : "");
        out->vhd_path = vmms_call_strdup(call, vm->def.vhd_path ? vm->def.vhd_path : "");
        if (live) {
                out->uptime_ms =
                        vm->def.started_unix_ms ? g_get_real_time() / 1000 - vm->def.started_unix_ms : 0;
                /* Every figure of one reply from one sample: assigned, demand and pressure
                 * from the guest's last report (Hyper-V Manager's Memory Demand and
                 * committed / assigned), before any report what the VM started with. */
                out->assigned_memory_bytes = vm->memory.received_ns       ? vm->memory.assigned_bytes
                                             : vm->figures.assigned_bytes ? vm->figures.assigned_bytes
                                                                          : vm->def.memory.startup_bytes;
                if (vm->memory.reporting && out->assigned_memory_bytes) {
                        out->memory_demand_bytes = vm->memory.committed_bytes;
                        out->memory_pressure =
                                balancer_pressure(vm->memory.committed_bytes, out->assigned_memory_bytes);
                }
                /* A paused VM uses no processor time, whatever the last sample said. */
                out->cpu_usage_pct = vm->def.state == VMMS_VM_PAUSED ? 0 : vm->figures.cpu_usage_pct;
                out->worker_pid = vm->def.worker_pid;
        }
        g_autofree char *engine_status = live ? vmms_vm_engine_status(vm) : NULL;

        if (vm->def.state == VMMS_VM_MIGRATING && vm->move_percent >= 0) {
                g_autofree char *status = g_strdup_printf("Migrating (%d %%)", vm->move_percent);

                out->status = vmms_call_strdup(call, status);
        } else if (engine_status) {
                out->status = vmms_call_strdup(call, engine_status);
        } else {
                g_autofree char *status = vmms_health_vm_status(vmms_manager_health(m), vm->def.name);

                out->status = vmms_call_strdup(call, status);
        }
        return out;
}

static void reply_vm(VmmsVm *vm, VmmsCall *call, void *manager)
{
        vmms_call_return(call, &vm_to_proto(manager, call, vm)->base);
}

static void fail(VmmsCall *call, VmmsError *error)
{
        vmms_call_fail_with(call, error);
        vmms_error_clear(error);
}

/* ---- Create, get, list, remove ---- */

static void processor_from_proto(VmmsProcessorSettings *p, const Vmms__V1__ProcessorSettings *in)
{
        if (!in)
                return;
        if (in->count)
                p->count = in->count;
        p->reserve = in->reserve;
        if (in->maximum)
                p->maximum = in->maximum;
        if (in->relative_weight)
                p->relative_weight = in->relative_weight;
        p->compatibility_for_migration = in->compatibility_for_migration_enabled;
}

/* New-VM in a cluster: the name is checked against the other hosts' VMs first. */
typedef struct CreateWait {
        VmmsManager *m;
        VmmsCall *call;
        VmmsVmDefinition def;
} CreateWait;

static void on_create_name_checked(const VmmsError *error, const char *result, void *userdata)
{
        CreateWait *w = userdata;
        VmmsError add_error = {0};
        VmmsVm *vm;

        (void)result;
        if (error)
                vmms_call_fail_with(w->call, error);
        else if (vmms_manager_vm_add(w->m, &w->def, &vm, &add_error) < 0)
                fail(w->call, &add_error);
        else
                reply_vm(vm, w->call, w->m);
        vmms_vm_definition_clear(&w->def);
        g_free(w);
}

static void op_create_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__CreateVmRequest *req = (const Vmms__V1__CreateVmRequest *)request;
        VmmsCluster *cluster = vmms_manager_cluster(m);
        g_auto(VmmsVmDefinition) def = {0};
        VmmsError error = {0};
        g_autofree char *uuid = g_uuid_string_random();
        VmmsVm *vm;

        vmms_vm_definition_init_defaults(&def);
        g_strlcpy(def.id, uuid, sizeof(def.id));
        def.name = g_strdup(req->name);
        /* Unset fields take Hyper-V's New-VM defaults: 1 VP, weight 100, no cap,
         * Minimum = min(512MB, Startup), Maximum 1TB, Buffer 20 %, Priority 50. */
        processor_from_proto(&def.processor, req->processor);
        if (req->memory) {
                const Vmms__V1__MemorySettings *in = req->memory;

                def.memory.dynamic_memory_enabled = in->dynamic_memory_enabled;
                if (in->startup_bytes)
                        def.memory.startup_bytes = in->startup_bytes;
                def.memory.minimum_bytes =
                        in->minimum_bytes ? in->minimum_bytes : MIN(512ull << 20, def.memory.startup_bytes);
                if (in->maximum_bytes)
                        def.memory.maximum_bytes = in->maximum_bytes;
                if (in->buffer)
                        def.memory.buffer = in->buffer;
                if (in->priority)
                        def.memory.priority = in->priority;
                def.memory.paging_bytes = in->paging_bytes;
                def.memory.goal_seeking = in->goal_seeking;
        }
        if (req->workload && *req->workload) {
                g_free(def.workload);
                def.workload = g_strdup(req->workload);
        }
        g_free(def.boot_args);
        def.boot_args = g_strdup(req->boot_args ? req->boot_args : "");
        g_free(def.notes);
        def.notes = g_strdup(req->notes ? req->notes : "");
        def.created_unix_ms = def.updated_unix_ms = g_get_real_time() / 1000;
        if (req->engine && *req->engine) {
                g_free(def.engine);
                def.engine = g_strdup(req->engine);
        }
        g_free(def.kernel_path);
        def.kernel_path = g_strdup(req->kernel_path ? req->kernel_path : "");
        g_free(def.initrd_path);
        def.initrd_path = g_strdup(req->initrd_path ? req->initrd_path : "");
        g_free(def.kernel_args);
        def.kernel_args = g_strdup(req->kernel_args ? req->kernel_args : "");
        g_free(def.vhd_path);
        def.vhd_path = g_strdup(req->vhd_path ? req->vhd_path : "");
        if (!auto_start_from_proto(req->automatic_start_action, VMMS_AUTO_START_START_IF_RUNNING,
                                   &def.automatic_start_action, &error) ||
            !vmms_vm_name_valid(def.name, &error) || !vmms_vm_processor_valid(&def.processor, &error) ||
            !vmms_vm_processor_engine_valid(def.name, def.engine, &def.processor, &error) ||
            !vmms_vm_memory_valid(&def.memory, &error) ||
            !vmms_vm_workload_valid(def.workload, def.boot_args, def.notes, &error) ||
            !vmms_vm_boot_source_valid(&def, &error)) {
                fail(call, &error);
                return;
        }
        if (cluster) {
                CreateWait *w = g_new0(CreateWait, 1);

                w->m = m;
                w->call = call;
                vmms_vm_definition_copy(&w->def, &def);
                vmms_cluster_check_name(cluster, def.name, NULL, on_create_name_checked, w);
                return;
        }
        if (vmms_manager_vm_add(m, &def, &vm, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

static VmmsVm *lookup(VmmsManager *m, const char *ref, VmmsCall *call)
{
        VmmsError error = {0};
        VmmsVm *vm = vmms_manager_lookup(m, ref, &error);

        if (!vm)
                fail(call, &error);
        return vm;
}

static void op_get_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (vm)
                reply_vm(vm, call, m);
}

static void op_list_vms(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__ListVmsRequest *req = (const Vmms__V1__ListVmsRequest *)request;
        Vmms__V1__ListVmsResponse *out = vmms_call_new0(call, Vmms__V1__ListVmsResponse);
        GPtrArray *vms = vmms_manager_vms(m);
        g_autoptr(GPatternSpec) pattern = NULL;
        g_autofree char *folded = NULL;

        if (req->cluster) {
                VmmsCluster *cluster = vmms_manager_cluster(m);

                if (!cluster)
                        vmms_call_fail(
                                call, VMMS_ERROR_FAILED_PRECONDITION,
                                "this host is not in a cluster: Get-VM -Cluster needs vmmsd --cluster");
                else
                        vmms_cluster_list_vms(cluster, req->name_filter, call);
                return;
        }
        vmms__v1__list_vms_response__init(out);
        if (req->name_filter && *req->name_filter) {
                folded = g_utf8_casefold(req->name_filter, -1);
                pattern = g_pattern_spec_new(folded);
        }
        out->vms = vmms_call_alloc(call, sizeof(Vmms__V1__Vm *) * (vms->len + 1));
        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (pattern) {
                        g_autofree char *name = g_utf8_casefold(vm->def.name, -1);

                        if (!g_pattern_spec_match_string(pattern, name))
                                continue;
                }
                out->vms[out->n_vms++] = vm_to_proto(m, call, vm);
        }
        vmms_call_return(call, &out->base);
}

static void op_remove_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        Vmms__V1__RemoveVmResponse *out = vmms_call_new0(call, Vmms__V1__RemoveVmResponse);
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        vmms__v1__remove_vm_response__init(out);
        out->id = vmms_call_strdup(call, vm->def.id);
        if (vmms_manager_vm_remove(m, vm, &error) < 0) {
                fail(call, &error);
                return;
        }
        vmms_call_return(call, &out->base);
}

/* ---- Lifecycle ---- */

/* A call waiting for the cluster (claim, resolve) before it acts on a VM. */
typedef struct ClusterWait {
        VmmsManager *m;
        VmmsCall *call;
        char vm_id[37];
        uint32_t max_downtime_ms; /* Move-VM */
} ClusterWait;

static ClusterWait *cluster_wait_new(VmmsManager *m, VmmsCall *call, const VmmsVm *vm)
{
        ClusterWait *w = g_new0(ClusterWait, 1);

        w->m = m;
        w->call = call;
        g_strlcpy(w->vm_id, vm->def.id, sizeof(w->vm_id));
        return w;
}

/* The VM again after the wait: it may have been removed meanwhile. */
static VmmsVm *cluster_wait_vm(ClusterWait *w, const VmmsError *error)
{
        if (error) {
                vmms_call_fail_with(w->call, error);
                return NULL;
        }
        return lookup(w->m, w->vm_id, w->call);
}

static void on_claimed(const VmmsError *error, const char *result, void *userdata)
{
        g_autofree ClusterWait *w = userdata;
        VmmsVm *vm = cluster_wait_vm(w, error);

        (void)result;
        if (vm)
                vmms_vm_start(vm, w->call);
}

/* In a cluster a VM starts only on the host that owns it, and not while the host is
 * Paused (vmms-cluster.h): the claim comes first. */
static void op_start_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);
        VmmsCluster *cluster = vmms_manager_cluster(m);

        if (vm && cluster)
                vmms_cluster_claim_for_start(cluster, vm, on_claimed, cluster_wait_new(m, call, vm));
        else if (vm)
                vmms_vm_start(vm, call);
}

static void op_stop_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__StopVmRequest *req = (const Vmms__V1__StopVmRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);

        if (vm)
                vmms_vm_stop(vm, req->turn_off, req->force, call);
}

static void op_pause_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (vm)
                vmms_vm_pause(vm, true, call);
}

static void op_save_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (vm)
                vmms_vm_save(vm, call);
}

/* The VM named `ref` and this host's migration end, or NULL with `call` failed naming
 * what is missing; `verb` says what was asked ("move", "compare"). */
static VmmsVm *migration_target(VmmsManager *m, const char *ref, const char *verb, VmmsMigration **ret_mig,
                                VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ref, call);

        if (!vm)
                return NULL;
        *ret_mig = vmms_manager_migration(m);
        if (!*ret_mig) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot %s VM '%s': this vmmsd has no host certificate for moves "
                               "(start it with --tls-cert, --tls-key and --tls-ca)",
                               verb, vm->def.name);
                return NULL;
        }
        return vm;
}

static void on_destination_resolved(const VmmsError *error, const char *address, void *userdata)
{
        g_autofree ClusterWait *w = userdata;
        VmmsVm *vm = cluster_wait_vm(w, error);
        VmmsMigration *mig = vmms_manager_migration(w->m);

        if (vm && mig)
                vmms_migration_move(mig, vm, address, w->max_downtime_ms, w->call);
}

/* Move-VM in a cluster, once the VM's name is known free of other hosts' VMs: a
 * destination without a port is a host's name, its address from the cluster's address
 * book. */
typedef struct MoveWait {
        ClusterWait w;
        char *destination;
} MoveWait;

static void on_move_name_checked(const VmmsError *error, const char *result, void *userdata)
{
        MoveWait *mw = userdata;
        VmmsVm *vm = cluster_wait_vm(&mw->w, error);
        VmmsMigration *mig = vmms_manager_migration(mw->w.m);
        VmmsCluster *cluster = vmms_manager_cluster(mw->w.m);

        (void)result;
        if (vm && mig && cluster && !strchr(mw->destination, ':')) {
                ClusterWait *w = cluster_wait_new(mw->w.m, mw->w.call, vm);

                w->max_downtime_ms = mw->w.max_downtime_ms;
                vmms_cluster_resolve(cluster, mw->destination, on_destination_resolved, w);
        } else if (vm && mig) {
                vmms_migration_move(mig, vm, mw->destination, mw->w.max_downtime_ms, mw->w.call);
        } else if (vm) {
                vmms_call_fail(mw->w.call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot move VM '%s': this host "
                               "left the cluster or lost its migration end meanwhile",
                               vm->def.name);
        }
        g_free(mw->destination);
        g_free(mw);
}

static void op_move_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__MoveVmRequest *req = (const Vmms__V1__MoveVmRequest *)request;
        VmmsMigration *mig = NULL;
        VmmsVm *vm = migration_target(m, req->vm, "move", &mig, call);
        VmmsCluster *cluster = vmms_manager_cluster(m);
        MoveWait *mw;

        if (!vm)
                return;
        if (!cluster || !req->destination_host || !req->destination_host[0]) {
                vmms_migration_move(mig, vm, req->destination_host, req->max_downtime_ms, call);
                return;
        }
        mw = g_new0(MoveWait, 1);
        mw->w.m = m;
        mw->w.call = call;
        g_strlcpy(mw->w.vm_id, vm->def.id, sizeof(mw->w.vm_id));
        mw->w.max_downtime_ms = req->max_downtime_ms;
        mw->destination = g_strdup(req->destination_host);
        vmms_cluster_check_name(cluster, vm->def.name, vm->def.id, on_move_name_checked, mw);
}

static void op_watch_move_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsMigration *mig = vmms_manager_migration(m);
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (!vm)
                return;
        if (!mig) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s' is not being moved",
                               vm->def.name);
                return;
        }
        vmms_migration_watch(mig, vm, call);
}

static void op_stop_vm_migration(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsMigration *mig = vmms_manager_migration(m);
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (!vm)
                return;
        if (!mig) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot stop the migration of VM '%s': it is not being moved", vm->def.name);
                return;
        }
        vmms_migration_cancel(mig, vm, call);
}

/* ---- Devices (libvirt VMs) ---- */

static void op_add_hard_disk_drive(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__HardDiskDriveRequest *req = (const Vmms__V1__HardDiskDriveRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        if (vmms_manager_vm_add_hard_disk_drive(m, vm, req->path, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

static void op_remove_hard_disk_drive(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__HardDiskDriveRequest *req = (const Vmms__V1__HardDiskDriveRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        if (vmms_vm_remove_hard_disk_drive(vm, req->path, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

static void op_add_network_adapter(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__NetworkAdapterRequest *req = (const Vmms__V1__NetworkAdapterRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        if (vmms_vm_add_network_adapter(vm, req->switch_name, req->name, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

static void op_remove_network_adapter(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__NetworkAdapterRequest *req = (const Vmms__V1__NetworkAdapterRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        if (vmms_vm_remove_network_adapter(vm, req->name, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

/* Compare-VM: any state; the VM is only read. */
static void op_compare_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__CompareVmRequest *req = (const Vmms__V1__CompareVmRequest *)request;
        VmmsMigration *mig = NULL;
        VmmsVm *vm = migration_target(m, req->vm, "compare", &mig, call);

        if (vm)
                vmms_migration_compare(mig, vm, req->destination_host, call);
}

/* ---- Checkpoints ---- */

static void op_checkpoint_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__CheckpointVmRequest *req = (const Vmms__V1__CheckpointVmRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);

        if (vm)
                vmms_vm_checkpoint(vm, req->name, call);
}

static void op_list_checkpoints(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        Vmms__V1__ListCheckpointsResponse *out = vmms_call_new0(call, Vmms__V1__ListCheckpointsResponse);
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);
        g_autoptr(GPtrArray) list = NULL;
        VmmsError error = {0};

        if (!vm)
                return;
        if (vmms_vm_checkpoints(vm, &list, &error) < 0) {
                fail(call, &error);
                return;
        }
        vmms__v1__list_checkpoints_response__init(out);
        out->checkpoints = vmms_call_alloc(call, sizeof(Vmms__V1__Checkpoint *) * (list->len + 1));
        for (guint i = 0; i < list->len; i++) {
                const VmmsCheckpoint *c = list->pdata[i];
                Vmms__V1__Checkpoint *o = vmms_call_new0(call, Vmms__V1__Checkpoint);

                vmms__v1__checkpoint__init(o);
                o->id = vmms_call_strdup(call, c->id);
                o->name = vmms_call_strdup(call, c->name);
                o->vm_id = vmms_call_strdup(call, vm->def.id);
                o->created_unix_ms = c->created_unix_ms;
                o->vm_state = vmms_proto_vm_state(c->def.state);
                o->state_bytes = c->state_bytes;
                out->checkpoints[out->n_checkpoints++] = o;
        }
        vmms_call_return(call, &out->base);
}

static void op_restore_checkpoint(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__CheckpointRef *req = (const Vmms__V1__CheckpointRef *)request;
        VmmsVm *vm = lookup(m, req->vm, call);

        if (vm)
                vmms_vm_restore_checkpoint(vm, req->name, call);
}

static void op_remove_checkpoint(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__CheckpointRef *req = (const Vmms__V1__CheckpointRef *)request;
        Vmms__V1__RemoveCheckpointResponse *out = vmms_call_new0(call, Vmms__V1__RemoveCheckpointResponse);
        VmmsVm *vm = lookup(m, req->vm, call);
        VmmsError error = {0};

        if (!vm)
                return;
        vmms__v1__remove_checkpoint_response__init(out);
        if (vmms_vm_remove_checkpoint(vm, req->name, &error) < 0) {
                fail(call, &error);
                return;
        }
        vmms_call_return(call, &out->base);
}

static void op_resume_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ((const Vmms__V1__VmRef *)request)->vm, call);

        if (vm)
                vmms_vm_pause(vm, false, call);
}

/* ---- Settings ---- */

/* Checks every mask entry against `fields`; an empty or unknown one is refused. */
static bool mask_valid(char **mask, size_t n, const char *const *fields, size_t n_fields, VmmsError *error)
{
        if (n == 0) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "update_mask is empty: name the fields to change");
                return false;
        }
        if (n > UPDATE_MASK_MAX) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "update_mask has %zu entries; at most %d",
                               n, UPDATE_MASK_MAX);
                return false;
        }
        for (size_t i = 0; i < n; i++) {
                bool known = false;

                for (size_t f = 0; f < n_fields; f++)
                        known = known || g_strcmp0(mask[i], fields[f]) == 0;
                if (!known) {
                        g_autofree char *quoted = vmms_quote(mask[i]);

                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "update_mask names unknown field '%s'", quoted);
                        return false;
                }
        }
        return true;
}

static bool masked(char **mask, size_t n, const char *field)
{
        for (size_t i = 0; i < n; i++)
                if (g_strcmp0(mask[i], field) == 0)
                        return true;
        return false;
}

/* The start of both updates: the VM, and a mask naming only `fields`. */
static VmmsVm *update_target(VmmsManager *m, const char *ref, char **mask, size_t n_mask,
                             const char *const *fields, size_t n_fields, VmmsCall *call)
{
        VmmsVm *vm = lookup(m, ref, call);
        VmmsError error = {0};

        if (vm && !mask_valid(mask, n_mask, fields, n_fields, &error)) {
                fail(call, &error);
                return NULL;
        }
        return vm;
}

static void op_update_processor(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        static const char *const fields[] = {"count", "reserve", "maximum", "relative_weight",
                                             "compatibility_for_migration_enabled"};
        const Vmms__V1__UpdateProcessorRequest *req = (const Vmms__V1__UpdateProcessorRequest *)request;
        Vmms__V1__ProcessorSettings empty = VMMS__V1__PROCESSOR_SETTINGS__INIT;
        const Vmms__V1__ProcessorSettings *in = req->processor ? req->processor : &empty;
        VmmsVm *vm = update_target(m, req->vm, req->update_mask, req->n_update_mask, fields,
                                   G_N_ELEMENTS(fields), call);
        VmmsProcessorSettings p;

        if (!vm)
                return;
        p = vm->def.processor;
        if (masked(req->update_mask, req->n_update_mask, "count"))
                p.count = in->count;
        if (masked(req->update_mask, req->n_update_mask, "reserve"))
                p.reserve = in->reserve;
        if (masked(req->update_mask, req->n_update_mask, "maximum"))
                p.maximum = in->maximum;
        if (masked(req->update_mask, req->n_update_mask, "relative_weight"))
                p.relative_weight = in->relative_weight;
        if (masked(req->update_mask, req->n_update_mask, "compatibility_for_migration_enabled"))
                p.compatibility_for_migration = in->compatibility_for_migration_enabled;
        vmms_vm_set_processor(vm, &p, call);
}

static void op_update_memory(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        static const char *const fields[] = {"dynamic_memory_enabled", "startup_bytes", "minimum_bytes",
                                             "maximum_bytes",          "buffer",        "priority",
                                             "paging_bytes",           "goal_seeking"};
        const Vmms__V1__UpdateMemoryRequest *req = (const Vmms__V1__UpdateMemoryRequest *)request;
        Vmms__V1__MemorySettings empty = VMMS__V1__MEMORY_SETTINGS__INIT;
        const Vmms__V1__MemorySettings *in = req->memory ? req->memory : &empty;
        VmmsVm *vm = update_target(m, req->vm, req->update_mask, req->n_update_mask, fields,
                                   G_N_ELEMENTS(fields), call);
        VmmsMemorySettings mem;

        if (!vm)
                return;
        mem = vm->def.memory;
        if (masked(req->update_mask, req->n_update_mask, "dynamic_memory_enabled"))
                mem.dynamic_memory_enabled = in->dynamic_memory_enabled;
        if (masked(req->update_mask, req->n_update_mask, "startup_bytes"))
                mem.startup_bytes = in->startup_bytes;
        if (masked(req->update_mask, req->n_update_mask, "minimum_bytes"))
                mem.minimum_bytes = in->minimum_bytes;
        if (masked(req->update_mask, req->n_update_mask, "maximum_bytes"))
                mem.maximum_bytes = in->maximum_bytes;
        if (masked(req->update_mask, req->n_update_mask, "buffer"))
                mem.buffer = in->buffer;
        if (masked(req->update_mask, req->n_update_mask, "priority"))
                mem.priority = in->priority;
        if (masked(req->update_mask, req->n_update_mask, "paging_bytes"))
                mem.paging_bytes = in->paging_bytes;
        if (masked(req->update_mask, req->n_update_mask, "goal_seeking"))
                mem.goal_seeking = in->goal_seeking;
        vmms_vm_set_memory(vm, &mem, call);
}

/* Rename-VM in a cluster: the new name is checked against the other hosts' VMs first
 * (the settings' text is copied: the wait outlives the request's handler). */
typedef struct UpdateWait {
        ClusterWait w;
        VmmsVmSettings s;
        char *name, *notes, *workload, *boot_args;
} UpdateWait;

static void on_update_name_checked(const VmmsError *error, const char *result, void *userdata)
{
        UpdateWait *u = userdata;
        VmmsVm *vm = cluster_wait_vm(&u->w, error);
        VmmsError update_error = {0};

        (void)result;
        if (vm && vmms_manager_vm_update(u->w.m, vm, &u->s, &update_error) < 0)
                fail(u->w.call, &update_error);
        else if (vm)
                reply_vm(vm, u->w.call, u->w.m);
        g_free(u->name);
        g_free(u->notes);
        g_free(u->workload);
        g_free(u->boot_args);
        g_free(u);
}

static void op_update_vm(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        static const char *const fields[] = {"name",     "notes",     "automatic_start_action",
                                             "workload", "boot_args", "highly_available"};
        const Vmms__V1__UpdateVmRequest *req = (const Vmms__V1__UpdateVmRequest *)request;
        VmmsVm *vm = update_target(m, req->vm, req->update_mask, req->n_update_mask, fields,
                                   G_N_ELEMENTS(fields), call);
        VmmsVmSettings s = {.automatic_start_action = VMMS_AUTO_START_COUNT, .highly_available = -1};
        VmmsCluster *cluster = vmms_manager_cluster(m);
        VmmsError error = {0};

        if (!vm)
                return;
        if (masked(req->update_mask, req->n_update_mask, "name"))
                s.name = req->name ? req->name : "";
        if (masked(req->update_mask, req->n_update_mask, "notes"))
                s.notes = req->notes ? req->notes : "";
        if (masked(req->update_mask, req->n_update_mask, "workload"))
                s.workload = req->workload ? req->workload : "";
        if (masked(req->update_mask, req->n_update_mask, "boot_args"))
                s.boot_args = req->boot_args ? req->boot_args : "";
        if (masked(req->update_mask, req->n_update_mask, "highly_available"))
                s.highly_available = req->highly_available;
        if (masked(req->update_mask, req->n_update_mask, "automatic_start_action") &&
            req->automatic_start_action ==
                    VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_UNSPECIFIED)
                vmms_error_set(&error, VMMS_ERROR_INVALID_ARGUMENT,
                               "automatic_start_action is in update_mask but unset");
        if (error.code || (masked(req->update_mask, req->n_update_mask, "automatic_start_action") &&
                           !auto_start_from_proto(req->automatic_start_action, VMMS_AUTO_START_COUNT,
                                                  &s.automatic_start_action, &error))) {
                fail(call, &error);
                return;
        }
        if (cluster && s.name && *s.name) {
                UpdateWait *w = g_new0(UpdateWait, 1);

                w->w.m = m;
                w->w.call = call;
                g_strlcpy(w->w.vm_id, vm->def.id, sizeof(w->w.vm_id));
                w->s = s;
                w->s.name = w->name = g_strdup(s.name);
                w->s.notes = w->notes = g_strdup(s.notes);
                w->s.workload = w->workload = g_strdup(s.workload);
                w->s.boot_args = w->boot_args = g_strdup(s.boot_args);
                vmms_cluster_check_name(cluster, s.name, vm->def.id, on_update_name_checked, w);
                return;
        }
        if (vmms_manager_vm_update(m, vm, &s, &error) < 0) {
                fail(call, &error);
                return;
        }
        reply_vm(vm, call, m);
}

/* ---- Host, counters, events ---- */

typedef struct HostQuery {
        VmmsManager *m;
        VmmsCall *call;
} HostQuery;

static void reply_host(VmmsManager *m, VmmsCall *call)
{
        Vmms__V1__Host *out = vmms_call_new0(call, Vmms__V1__Host);
        const VmmsConfig *config = vmms_manager_config(m);
        const Vmms__Hv__Counters *cur = vmms_manager_last_sample(m);
        GPtrArray *vms = vmms_manager_vms(m);
        g_autoptr(GArray) engines = NULL;

        vmms__v1__host__init(out);
        out->hostname = vmms_call_strdup(call, g_get_host_name());
        out->version = vmms_call_strdup(call, VMMS_VERSION);
        out->state_dir = vmms_call_strdup(call, config->state_dir);
        out->hypervisor_socket = vmms_call_strdup(call, config->hvd_socket);
        if (cur) {
                out->logical_processors = (uint32_t)cur->n_lps;
                out->memory_pool_bytes = cur->pool_total_bytes;
                out->memory_pool_used_bytes = cur->pool_used_bytes;
                out->reservation_capacity_pct = (uint32_t)cur->n_lps * 100;
        }
        out->hypervisor_status = vmms_call_strdup(call, vmms_manager_hypervisor_status(m));
        engines = vmms_manager_engines(m);
        out->engines = vmms_call_alloc(call, sizeof(char *) * (engines->len + 1));
        out->engine_status = vmms_call_alloc(call, sizeof(char *) * (engines->len + 1));
        for (guint i = 0; i < engines->len; i++) {
                VmmsEngineInfo *e = &g_array_index(engines, VmmsEngineInfo, i);
                g_autofree char *status =
                        g_strdup_printf("%s%s%s", e->available ? "available" : "unavailable",
                                        e->why_not ? ": " : "", e->why_not ? e->why_not : "");

                out->engines[out->n_engines++] = vmms_call_strdup(call, e->name);
                out->engine_status[out->n_engine_status++] = vmms_call_strdup(call, status);
                g_free(e->why_not);
        }
        out->vm_count = vms->len;
        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->def.state == VMMS_VM_OFF || vm->def.state == VMMS_VM_SAVED)
                        continue;
                out->running_vm_count++;
                out->reservation_used_pct += vm->def.processor.reserve * vm->def.processor.count;
        }
        vmms_call_return(call, &out->base);
}

static void on_host_sampled(const VmmsError *error, void *userdata)
{
        g_autofree HostQuery *q = userdata;

        (void)error; /* hypervisor_status says why there are no figures */
        reply_host(q->m, q->call);
}

/* The host's figures come from hvd's latest sample; before its first, the answer waits
 * for one (at most hvd's deadline) rather than saying 0 processors. */
static void op_get_host(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        HostQuery *q;

        (void)request;
        if (vmms_manager_last_sample(m)) {
                reply_host(m, call);
                return;
        }
        q = g_new0(HostQuery, 1);
        q->m = m;
        q->call = call;
        vmms_manager_when_sampled(m, on_host_sampled, q);
}

/* Get-ClusterNode: the hosts as etcd has them (vmms-cluster.c answers later). */
static void op_list_cluster_nodes(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsCluster *cluster = vmms_manager_cluster(m);

        (void)request;
        if (!cluster) {
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "this host is not in a cluster (start vmmsd with --cluster etcd=IP:PORT,... "
                               "--host-name NAME --host-address HOST:PORT)");
                return;
        }
        vmms_cluster_list_nodes(cluster, call);
}

static VmmsCluster *cluster_or_fail(VmmsManager *m, VmmsCall *call)
{
        VmmsCluster *cluster = vmms_manager_cluster(m);

        if (!cluster)
                vmms_call_fail(call, VMMS_ERROR_FAILED_PRECONDITION,
                               "this host is not in a cluster (start vmmsd with --cluster etcd=IP:PORT,... "
                               "--host-name NAME --host-address HOST:PORT)");
        return cluster;
}

static void op_suspend_cluster_node(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__SuspendClusterNodeRequest *req = (const Vmms__V1__SuspendClusterNodeRequest *)request;
        VmmsCluster *cluster = cluster_or_fail(m, call);

        if (cluster)
                vmms_cluster_suspend_node(cluster, req->name, req->drain, call);
}

static void op_resume_cluster_node(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__ResumeClusterNodeRequest *req = (const Vmms__V1__ResumeClusterNodeRequest *)request;
        VmmsCluster *cluster = cluster_or_fail(m, call);

        if (cluster)
                vmms_cluster_resume_node(cluster, req->name, call);
}

static void op_get_cluster(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsCluster *cluster = cluster_or_fail(m, call);

        (void)request;
        if (cluster)
                vmms_cluster_get_settings(cluster, call);
}

static void op_set_cluster(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsCluster *cluster = cluster_or_fail(m, call);

        if (cluster)
                vmms_cluster_set_settings(cluster, (const Vmms__V1__SetClusterRequest *)request, call);
}

typedef struct CounterList {
        VmmsCall *call;
        GPtrArray *samples;
        GPtrArray *patterns; /* GPatternSpec*, casefolded; empty = all */
        bool *matched;       /* per pattern: whether a sample matched it */
} CounterList;

static void counter_add(const VmmsCounterSample *sample, void *userdata)
{
        CounterList *list = userdata;
        const VmmsCounterInfo *info = &vmms_counter_info[sample->id];
        g_autofree char *path = g_strdup_printf("\\%s(%s)\\%s", info->set, sample->instance, info->name);
        g_autofree char *folded = g_utf8_casefold(path, -1);
        Vmms__V1__CounterSample *s;
        bool wanted = list->patterns->len == 0;

        for (guint i = 0; i < list->patterns->len; i++)
                if (g_pattern_spec_match_string(list->patterns->pdata[i], folded))
                        wanted = list->matched[i] = true;
        if (!wanted)
                return;
        s = vmms_call_new0(list->call, Vmms__V1__CounterSample);
        vmms__v1__counter_sample__init(s);
        s->path = vmms_call_strdup(list->call, path);
        s->value = sample->value;
        s->unit = vmms_call_strdup(list->call, vmms_counter_unit_name(info->unit));
        g_ptr_array_add(list->samples, s);
}

static void op_get_counters(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__GetCountersRequest *req = (const Vmms__V1__GetCountersRequest *)request;
        Vmms__V1__GetCountersResponse *out = vmms_call_new0(call, Vmms__V1__GetCountersResponse);
        g_autoptr(GPtrArray) samples = g_ptr_array_new();
        g_autoptr(GPtrArray) patterns = g_ptr_array_new_with_free_func((GDestroyNotify)g_pattern_spec_free);
        g_autofree bool *matched = g_new0(bool, req->n_paths + 1);
        CounterList list = {.call = call, .samples = samples, .patterns = patterns, .matched = matched};
        VmmsCounterSources sources;

        if (req->n_paths > COUNTER_PATHS_MAX) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT, "paths has %zu entries; at most %d",
                               req->n_paths, COUNTER_PATHS_MAX);
                return;
        }
        for (size_t i = 0; i < req->n_paths; i++) {
                g_autofree char *folded = NULL;

                if (!req->paths[i] || req->paths[i][0] != '\\' || !strchr(req->paths[i] + 1, '\\')) {
                        g_autofree char *quoted = vmms_quote(req->paths[i]);

                        vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT,
                                       "counter path '%s' is not of the form \\Set(Instance)\\Counter",
                                       quoted);
                        return;
                }
                folded = g_utf8_casefold(req->paths[i], -1);
                g_ptr_array_add(patterns, g_pattern_spec_new(folded));
        }
        if (vmms_manager_counter_sources(m, &sources))
                vmms_counters_walk(&sources, counter_add, &list);
        /* As PowerShell's Get-Counter, a path that names no counter is an error, not an empty
         * answer; a VM's counters appear with its first sample, a VP's rates with its second. */
        for (size_t i = 0; i < req->n_paths; i++)
                if (!list.matched[i]) {
                        g_autofree char *quoted = vmms_quote(req->paths[i]);

                        vmms_call_fail(call, VMMS_ERROR_NOT_FOUND,
                                       "no counter matches '%s'; vmctl Get-Counter lists them (a VM's "
                                       "counters appear once it has been sampled)",
                                       quoted);
                        return;
                }
        vmms__v1__get_counters_response__init(out);
        out->timestamp_unix_ms = g_get_real_time() / 1000;
        out->n_samples = samples->len;
        out->samples = (Vmms__V1__CounterSample **)samples->pdata;
        vmms_call_return(call, &out->base);
}

static void op_get_host_health(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        VmmsHealth *health = vmms_manager_health(m);
        Vmms__V1__HostHealth *out = vmms_call_new0(call, Vmms__V1__HostHealth);
        g_autoptr(GPtrArray) findings = vmms_health_findings(health);
        g_autofree char *status = vmms_health_host_status(health);

        (void)request;
        vmms__v1__host_health__init(out);
        out->status = vmms_call_strdup(call, status);
        out->findings = vmms_call_alloc(call, sizeof(Vmms__V1__HealthFinding *) * (findings->len + 1));
        for (guint i = 0; i < findings->len; i++) {
                const VmmsHealthFinding *f = findings->pdata[i];
                Vmms__V1__HealthFinding *o = vmms_call_new0(call, Vmms__V1__HealthFinding);

                vmms__v1__health_finding__init(o);
                o->vm = vmms_call_strdup(call, f->vm ? f->vm : "");
                o->rule = (char *)vmms_health_rules[f->rule].name;
                o->counter = vmms_call_strdup(call, f->counter);
                o->value = f->value;
                o->threshold = f->threshold;
                o->unit = (char *)vmms_health_rules[f->rule].unit;
                o->window_seconds = f->window_s;
                o->for_seconds = f->for_s;
                o->relief_bytes = f->relief_bytes;
                o->advice = vmms_call_strdup(call, f->advice);
                out->findings[out->n_findings++] = o;
        }
        vmms_call_return(call, &out->base);
}

static void event_to_proto(Vmms__V1__Event *out, const VmmsEventRecord *e)
{
        vmms__v1__event__init(out);
        out->id = e->id;
        out->time_unix_ms = e->time_unix_ms;
        out->vm_id = e->vm_id;
        out->vm_name = e->vm_name;
        out->kind = e->kind;
        out->state = vmms_proto_vm_state(e->state);
        out->message = e->message ? e->message : "";
}

static const char *event_vm_filter(VmmsManager *m, const char *ref, VmmsCall *call, bool *ret_ok)
{
        VmmsVm *vm;

        *ret_ok = true;
        if (!ref || !*ref)
                return NULL;
        vm = lookup(m, ref, call);
        *ret_ok = vm != NULL;
        return vm ? vm->def.id : NULL;
}

static void op_list_events(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__ListEventsRequest *req = (const Vmms__V1__ListEventsRequest *)request;
        Vmms__V1__ListEventsResponse *out = vmms_call_new0(call, Vmms__V1__ListEventsResponse);
        g_autoptr(GPtrArray) events = NULL;
        uint32_t limit = req->limit ? req->limit : EVENTS_DEFAULT_LIMIT;
        bool ok;
        const char *vm_id = event_vm_filter(m, req->vm, call, &ok);
        int r;

        if (!ok)
                return;
        if (limit > EVENTS_MAX_LIMIT) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT, "limit %u is out of range 1-%d", limit,
                               EVENTS_MAX_LIMIT);
                return;
        }
        /* Without after_id: the newest `limit` events, oldest first (Get-VMEvent -Newest). */
        r = vmms_store_event_list(vmms_manager_store(m), vm_id, req->after_id, limit, req->after_id == 0,
                                  &events);
        if (r < 0) {
                vmms_call_fail(call, VMMS_ERROR_INTERNAL, "cannot read the event log: %s", g_strerror(-r));
                return;
        }
        vmms__v1__list_events_response__init(out);
        out->events = vmms_call_alloc(call, sizeof(Vmms__V1__Event *) * (events->len + 1));
        for (guint i = 0; i < events->len; i++) {
                Vmms__V1__Event *e = vmms_call_new0(call, Vmms__V1__Event);
                VmmsEventRecord *rec = events->pdata[i];

                event_to_proto(e, rec);
                e->vm_id = vmms_call_strdup(call, rec->vm_id);
                e->vm_name = vmms_call_strdup(call, rec->vm_name);
                e->kind = vmms_call_strdup(call, rec->kind);
                e->message = vmms_call_strdup(call, rec->message);
                out->events[out->n_events++] = e;
        }
        vmms_call_return(call, &out->base);
}

typedef struct EventWatch {
        VmmsManager *m;
        VmmsCall *call;
        char vm_id[37];
        void *watch;
} EventWatch;

static void on_watched_event(const VmmsEventRecord *event, void *userdata)
{
        EventWatch *w = userdata;
        Vmms__V1__Event item;

        if (w->vm_id[0] && g_strcmp0(w->vm_id, event->vm_id) != 0)
                return;
        event_to_proto(&item, event);
        vmms_call_send(w->call, &item.base);
}

static void on_watch_cancel(VmmsCall *call, void *op_data)
{
        EventWatch *w = op_data;

        (void)call;
        vmms_manager_unwatch(w->m, w->watch);
        g_free(w);
}

static void op_watch_events(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__WatchEventsRequest *req = (const Vmms__V1__WatchEventsRequest *)request;
        g_autoptr(GPtrArray) backlog = NULL;
        bool ok;
        const char *vm_id = event_vm_filter(m, req->vm, call, &ok);
        EventWatch *w;

        if (!ok)
                return;
        w = g_new0(EventWatch, 1);
        w->m = m;
        w->call = call;
        g_strlcpy(w->vm_id, vm_id ? vm_id : "", sizeof(w->vm_id));
        /* The backlog after after_id first, then every event as it is recorded. */
        if (req->after_id > 0 && vmms_store_event_list(vmms_manager_store(m), vm_id, req->after_id,
                                                       EVENTS_MAX_LIMIT, false, &backlog) >= 0)
                for (guint i = 0; i < backlog->len; i++)
                        on_watched_event(backlog->pdata[i], w);
        w->watch = vmms_manager_watch(m, on_watched_event, w);
        vmms_call_set_cancel(call, on_watch_cancel, w);
}

/* Connect-VM: the guest's console from the log its engine writes. */
static void on_console_data(const uint8_t *data, size_t len, void *userdata)
{
        Vmms__V1__ConsoleChunk chunk = VMMS__V1__CONSOLE_CHUNK__INIT;

        chunk.data.data = (uint8_t *)data;
        chunk.data.len = len;
        vmms_call_send(userdata, &chunk.base);
}

static void on_console_cancel(VmmsCall *call, void *op_data)
{
        (void)call;
        vmms_console_watch_free(op_data);
}

static void op_watch_console(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call)
{
        const Vmms__V1__WatchConsoleRequest *req = (const Vmms__V1__WatchConsoleRequest *)request;
        VmmsVm *vm = lookup(m, req->vm, call);
        g_autofree char *name = NULL, *path = NULL;
        uint32_t tail = req->tail_lines ? req->tail_lines : VMMS_CONSOLE_TAIL_LINES_DEFAULT;

        if (!vm)
                return;
        if (tail > VMMS_CONSOLE_TAIL_LINES_MAX) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT, "tail_lines %u is out of range 1-%d", tail,
                               VMMS_CONSOLE_TAIL_LINES_MAX);
                return;
        }
        name = g_strconcat(vm->def.id, ".console.log", NULL);
        path = g_build_filename(vmms_manager_config(m)->state_dir, "logs", name, NULL);
        vmms_call_set_cancel(call, on_console_cancel,
                             vmms_console_watch_new(path, tail, on_console_data, call));
}

#define OP(method, req, resp, fn, least_role)                                                                \
        {                                                                                                    \
                .name = method, .request_type = &req, .response_type = &resp, .run = fn, .role = least_role  \
        }

const VmmsOp vmms_ops[] = {
        OP("CreateVm", vmms__v1__create_vm_request__descriptor, vmms__v1__vm__descriptor, op_create_vm,
           VMMS_ROLE_OPERATOR),
        OP("GetVm", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_get_vm, VMMS_ROLE_READER),
        OP("ListVms", vmms__v1__list_vms_request__descriptor, vmms__v1__list_vms_response__descriptor,
           op_list_vms, VMMS_ROLE_READER),
        OP("UpdateProcessor", vmms__v1__update_processor_request__descriptor, vmms__v1__vm__descriptor,
           op_update_processor, VMMS_ROLE_OPERATOR),
        OP("UpdateMemory", vmms__v1__update_memory_request__descriptor, vmms__v1__vm__descriptor,
           op_update_memory, VMMS_ROLE_OPERATOR),
        OP("UpdateVm", vmms__v1__update_vm_request__descriptor, vmms__v1__vm__descriptor, op_update_vm,
           VMMS_ROLE_OPERATOR),
        OP("StartVm", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_start_vm,
           VMMS_ROLE_OPERATOR),
        OP("StopVm", vmms__v1__stop_vm_request__descriptor, vmms__v1__vm__descriptor, op_stop_vm,
           VMMS_ROLE_OPERATOR),
        OP("PauseVm", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_pause_vm,
           VMMS_ROLE_OPERATOR),
        OP("SaveVm", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_save_vm, VMMS_ROLE_OPERATOR),
        OP("MoveVm", vmms__v1__move_vm_request__descriptor, vmms__v1__move_vm_result__descriptor, op_move_vm,
           VMMS_ROLE_OPERATOR),
        OP("StopVmMigration", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_stop_vm_migration,
           VMMS_ROLE_OPERATOR),
        OP("ResumeVm", vmms__v1__vm_ref__descriptor, vmms__v1__vm__descriptor, op_resume_vm,
           VMMS_ROLE_OPERATOR),
        OP("AddHardDiskDrive", vmms__v1__hard_disk_drive_request__descriptor, vmms__v1__vm__descriptor,
           op_add_hard_disk_drive, VMMS_ROLE_OPERATOR),
        OP("RemoveHardDiskDrive", vmms__v1__hard_disk_drive_request__descriptor, vmms__v1__vm__descriptor,
           op_remove_hard_disk_drive, VMMS_ROLE_OPERATOR),
        OP("AddNetworkAdapter", vmms__v1__network_adapter_request__descriptor, vmms__v1__vm__descriptor,
           op_add_network_adapter, VMMS_ROLE_OPERATOR),
        OP("RemoveNetworkAdapter", vmms__v1__network_adapter_request__descriptor, vmms__v1__vm__descriptor,
           op_remove_network_adapter, VMMS_ROLE_OPERATOR),
        OP("CheckpointVm", vmms__v1__checkpoint_vm_request__descriptor, vmms__v1__vm__descriptor,
           op_checkpoint_vm, VMMS_ROLE_OPERATOR),
        OP("ListCheckpoints", vmms__v1__vm_ref__descriptor, vmms__v1__list_checkpoints_response__descriptor,
           op_list_checkpoints, VMMS_ROLE_READER),
        OP("RestoreCheckpoint", vmms__v1__checkpoint_ref__descriptor, vmms__v1__vm__descriptor,
           op_restore_checkpoint, VMMS_ROLE_OPERATOR),
        OP("RemoveCheckpoint", vmms__v1__checkpoint_ref__descriptor,
           vmms__v1__remove_checkpoint_response__descriptor, op_remove_checkpoint, VMMS_ROLE_OPERATOR),
        OP("RemoveVm", vmms__v1__vm_ref__descriptor, vmms__v1__remove_vm_response__descriptor, op_remove_vm,
           VMMS_ROLE_OPERATOR),
        OP("GetHost", vmms__v1__get_host_request__descriptor, vmms__v1__host__descriptor, op_get_host,
           VMMS_ROLE_READER),
        OP("GetCounters", vmms__v1__get_counters_request__descriptor,
           vmms__v1__get_counters_response__descriptor, op_get_counters, VMMS_ROLE_READER),
        OP("ListClusterNodes", vmms__v1__list_cluster_nodes_request__descriptor,
           vmms__v1__list_cluster_nodes_response__descriptor, op_list_cluster_nodes, VMMS_ROLE_READER),
        OP("SuspendClusterNode", vmms__v1__suspend_cluster_node_request__descriptor,
           vmms__v1__list_cluster_nodes_response__descriptor, op_suspend_cluster_node, VMMS_ROLE_OPERATOR),
        OP("ResumeClusterNode", vmms__v1__resume_cluster_node_request__descriptor,
           vmms__v1__list_cluster_nodes_response__descriptor, op_resume_cluster_node, VMMS_ROLE_OPERATOR),
        OP("GetCluster", vmms__v1__get_cluster_request__descriptor, vmms__v1__cluster_settings__descriptor,
           op_get_cluster, VMMS_ROLE_READER),
        OP("SetCluster", vmms__v1__set_cluster_request__descriptor, vmms__v1__cluster_settings__descriptor,
           op_set_cluster, VMMS_ROLE_OPERATOR),
        OP("GetHostHealth", vmms__v1__get_host_health_request__descriptor, vmms__v1__host_health__descriptor,
           op_get_host_health, VMMS_ROLE_READER),
        /* Operator: it makes this host connect to another with its certificate. */
        OP("CompareVm", vmms__v1__compare_vm_request__descriptor, vmms__v1__compare_vm_result__descriptor,
           op_compare_vm, VMMS_ROLE_OPERATOR),
        OP("ListEvents", vmms__v1__list_events_request__descriptor,
           vmms__v1__list_events_response__descriptor, op_list_events, VMMS_ROLE_READER),
        {.name = "WatchEvents",
         .request_type = &vmms__v1__watch_events_request__descriptor,
         .response_type = &vmms__v1__event__descriptor,
         .run = op_watch_events,
         .streaming = true,
         .role = VMMS_ROLE_READER},
        {.name = "WatchMoveVm",
         .request_type = &vmms__v1__vm_ref__descriptor,
         .response_type = &vmms__v1__move_vm_result__descriptor,
         .run = op_watch_move_vm,
         .streaming = true,
         .role = VMMS_ROLE_READER},
        {.name = "WatchConsole",
         .request_type = &vmms__v1__watch_console_request__descriptor,
         .response_type = &vmms__v1__console_chunk__descriptor,
         .run = op_watch_console,
         .streaming = true,
         .role = VMMS_ROLE_READER},
};
const size_t vmms_ops_count = G_N_ELEMENTS(vmms_ops);

const VmmsOp *vmms_op_lookup(const char *name)
{
        for (size_t i = 0; i < vmms_ops_count; i++)
                if (g_strcmp0(vmms_ops[i].name, name) == 0)
                        return &vmms_ops[i];
        return NULL;
}

void vmms_ops_attach(VmmsManager *m)
{
        vmms_manager_set_vm_reply(m, reply_vm);
}
