/* The VM object and every operation on one VM. This is where a gRPC or D-Bus call
 * becomes a VM operation: the API adapter decodes the request, the core's access
 * check (vmms-access.c) judges the caller, the operation table (vmms-ops.c) looks the
 * VM up, and the functions here do the rest with one skeleton:
 *
 *   check the request -> begin the VM's job -> check its state -> act (through the
 *   engine) -> record the change with its event -> end the job (answer the call)
 *
 * States and what each action may do from them (anything else is NotAllowed):
 *   Off      --Start-->  Starting --(engine: running)--> Running
 *   Running  --Pause-->  Paused   --Resume--> Running
 *   Running|Paused --Stop--> Stopping --(engine: exited)--> Off
 *   any live state --(engine: exited)--> Off, with the reason as an event
 *   Off|Saved --Remove--> (gone)
 *   Running  --Move--> Migrating (saved, sending) --(destination committed)--> (gone)
 *                      Migrating --(anything failed before COMMIT)--> Starting from its saved state
 *                      Migrating --(the answer to COMMIT lost)--> Saved, in doubt (never started)
 *   (destination) Saved --received--> Starting (paused) --> Migrating --COMMIT--> Running
 * Starting and Stopping belong to a job in progress: every action waits for it to
 * end, so two clients racing on one VM get a clean refusal, never a half state.
 * Processor count and compatibility, startup memory and the workload change only while Off, as in
 * Hyper-V. A change reaches the store (with its event, in one transaction) before
 * memory, so a crash never leaves vmmsd believing something the disk does not say. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vmms-devices.h"
#include "vmms-engine.h"
#include "vmms-vm.h"

static const char *const action_names[VMMS_ACTION_COUNT] = {
        [VMMS_ACTION_START] = "start",
        [VMMS_ACTION_STOP] = "stop",
        [VMMS_ACTION_PAUSE] = "pause",
        [VMMS_ACTION_RESUME] = "resume",
        [VMMS_ACTION_REMOVE] = "remove",
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = "change the processor count of",
        [VMMS_ACTION_SET_PROCESSOR_COMPATIBILITY] = "change the processor compatibility for migration of",
        [VMMS_ACTION_SET_STARTUP_MEMORY] = "change the startup memory or Dynamic Memory switch of",
        [VMMS_ACTION_SET_WORKLOAD] = "change the workload or boot arguments of",
        [VMMS_ACTION_SAVE] = "save",
        [VMMS_ACTION_MIGRATE] = "move",
        [VMMS_ACTION_CHECKPOINT] = "checkpoint",
        [VMMS_ACTION_RESTORE_CHECKPOINT] = "restore a checkpoint of",
        [VMMS_ACTION_SET_DEVICES] = "add or remove drives or network adapters of",
};

/* allowed[action][state] */
static const bool allowed[VMMS_ACTION_COUNT][VMMS_VM_STATE_COUNT] = {
        [VMMS_ACTION_START] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_STOP] = {[VMMS_VM_RUNNING] = true, [VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_PAUSE] = {[VMMS_VM_RUNNING] = true},
        [VMMS_ACTION_RESUME] = {[VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_REMOVE] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SET_PROCESSOR_COMPATIBILITY] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SET_STARTUP_MEMORY] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SET_WORKLOAD] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SAVE] = {[VMMS_VM_RUNNING] = true, [VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_MIGRATE] = {[VMMS_VM_RUNNING] = true},
        /* A live VM's whole state without ending it; an Off VM's definition. */
        [VMMS_ACTION_CHECKPOINT] = {[VMMS_VM_OFF] = true, [VMMS_VM_RUNNING] = true, [VMMS_VM_PAUSED] = true},
        /* The current run is turned off (a Saved state discarded) first. */
        [VMMS_ACTION_RESTORE_CHECKPOINT] = {[VMMS_VM_OFF] = true,
                                            [VMMS_VM_RUNNING] = true,
                                            [VMMS_VM_PAUSED] = true,
                                            [VMMS_VM_SAVED] = true},
        /* Hot-plug is not done: the domain XML is written at each start. */
        [VMMS_ACTION_SET_DEVICES] = {[VMMS_VM_OFF] = true},
};

const char *vmms_vm_action_to_string(VmmsVmAction action)
{
        return action < VMMS_ACTION_COUNT ? action_names[action] : "act on";
}

bool vmms_vm_action_allowed(const char *name, VmmsVmState state, VmmsVmAction action, VmmsError *error)
{
        if (action < VMMS_ACTION_COUNT && state < VMMS_VM_STATE_COUNT && allowed[action][state])
                return true;
        if (state == VMMS_VM_STARTING || state == VMMS_VM_STOPPING)
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot %s VM '%s' now: it is %s; try again when that has finished",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        else
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION, "cannot %s VM '%s': it is %s",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        return false;
}

/* ---- The object ---- */

static int64_t now_ms(void)
{
        return g_get_real_time() / 1000;
}

VmmsVm *vmms_vm_new(VmmsVmContext *ctx, const VmmsVmDefinition *def, VmmsEngine *engine, uint64_t balancer_id)
{
        VmmsVm *vm = g_new0(VmmsVm, 1);

        vm->ctx = ctx;
        vm->engine = engine;
        vm->balancer_id = balancer_id;
        vm->move_percent = -1;
        vm->incoming_fd = -1;
        vmms_vm_definition_copy(&vm->def, def);
        return vm;
}

/* What runs the VM keeps running: a vmmsd that stops leaves the VMs alone. */
void vmms_vm_free(VmmsVm *vm)
{
        if (!vm)
                return;
        if (vm->engine && vm->engine_data)
                vm->engine->ops->release(vm->engine, vm);
        vmms_vm_definition_clear(&vm->def);
        g_free(vm->exit_reason);
        g_free(vm->restore_path);
        if (vm->incoming_fd >= 0)
                close(vm->incoming_fd);
        vmms_checkpoint_free(vm->checkpoint);
        g_free(vm);
}

bool vmms_vm_is_live(const VmmsVm *vm)
{
        return vm->def.state != VMMS_VM_OFF && vm->def.state != VMMS_VM_SAVED;
}

char *vmms_vm_partition_name(const VmmsVm *vm)
{
        GString *name = g_string_new(NULL);

        for (const char *c = vm->def.name; *c && name->len < 40; c++)
                g_string_append_c(name, g_ascii_isalnum(*c) || strchr("-_.", *c) ? *c : '_');
        g_string_append_printf(name, "-%.8s", vm->def.id);
        return g_string_free(name, FALSE);
}

static VmmsEventRecord event_for(const VmmsVm *vm, const char *kind, char *message)
{
        return (VmmsEventRecord){
                .time_unix_ms = now_ms(),
                .vm_id = (char *)vm->def.id,
                .vm_name = vm->def.name,
                .kind = (char *)kind,
                .state = vm->def.state,
                .message = message,
        };
}

int vmms_vm_persist(VmmsVm *vm, const char *kind, VmmsError *error, const char *fmt, ...)
{
        g_autofree char *message = NULL;
        VmmsEventRecord event;
        va_list ap;
        int r;

        va_start(ap, fmt);
        message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        vm->def.updated_unix_ms = now_ms();
        event = event_for(vm, kind, message);
        r = vmms_store_vm_update(vm->ctx->store, &vm->def, &event);
        if (r < 0) {
                g_autofree char *why = vmms_store_explain(vm->ctx->store, r);

                vmms_error_set(error, vmms_error_code_from_errno(r), "cannot save VM '%s': %s", vm->def.name,
                               why);
                return r;
        }
        vm->unsaved = false; /* the whole definition is written each time */
        vmms_events_notify(vm->ctx->events, &event);
        return 0;
}

void vmms_vm_record_event(VmmsVm *vm, const char *kind, const char *message)
{
        VmmsEventRecord event = event_for(vm, kind, (char *)message);
        int r = vmms_events_record(vm->ctx->events, &event);

        if (r < 0)
                g_warning("VM '%s': cannot record an event: %s", vm->def.name, g_strerror(-r));
}

/* A state change from the engine's side, which has no caller to tell: logged if the
 * store refuses it (the next change or a restart reconciles). */
static void set_state(VmmsVm *vm, VmmsVmState state, const char *kind, const char *message)
{
        VmmsError error = {0};

        vm->def.state = state;
        if (state == VMMS_VM_OFF || state == VMMS_VM_SAVED) {
                vm->def.worker_pid = 0;
                vm->def.started_unix_ms = 0;
        }
        if (vmms_vm_persist(vm, kind, &error, "%s", message) < 0) {
                g_warning("%s; it is recorded when the store takes writes again", error.message);
                vm->unsaved = true;
                vmms_error_clear(&error);
        }
}

void vmms_vm_save_pending(VmmsVm *vm)
{
        if (vm->unsaved)
                vmms_vm_persist(vm, "state", NULL, "%s (recorded late: the store refused it at the time)",
                                vmms_vm_state_to_string(vm->def.state));
}

/* ---- Jobs ---- */

bool vmms_vm_check_idle(VmmsVm *vm, VmmsError *error)
{
        if (!vm->job)
                return true;
        vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s' is busy: %s is in progress",
                       vm->def.name, vm->job);
        return false;
}

static void fail_call(VmmsCall *call, VmmsError *error)
{
        if (call)
                vmms_call_fail_with(call, error);
        vmms_error_clear(error);
}

/* Begins `job` if `action` is allowed and no other job runs; otherwise fails `call`. */
static bool job_begin(VmmsVm *vm, const char *job, VmmsVmAction action, VmmsCall *call)
{
        VmmsError error = {0};

        if (!vmms_vm_check_idle(vm, &error) ||
            (action < VMMS_ACTION_COUNT &&
             !vmms_vm_action_allowed(vm->def.name, vm->def.state, action, &error))) {
                fail_call(call, &error);
                return false;
        }
        vm->job = job;
        vm->job_call = call;
        return true;
}

/* Move-VM's destination waits for the start from what it received to end. */
static void job_notify_restore(VmmsVm *vm)
{
        void (*fn)(VmmsVm *, void *) = vm->move_restored;

        vm->move_restored = NULL;
        if (fn)
                fn(vm, vm->move_restored_data);
}

static void job_end(VmmsVm *vm)
{
        VmmsCall *call = vm->job_call;

        vm->job = NULL;
        vm->job_call = NULL;
        if (call)
                vm->ctx->reply(vm, call, vm->ctx->reply_data);
        job_notify_restore(vm);
}

static void job_fail(VmmsVm *vm, VmmsErrorCode code, const char *message)
{
        VmmsCall *call = vm->job_call;

        vm->job = NULL;
        vm->job_call = NULL;
        if (call)
                vmms_call_fail(call, code, "%s", message);
        job_notify_restore(vm);
}

static void job_fail_with(VmmsVm *vm, const VmmsError *error)
{
        job_fail(vm, error->code, error->message);
}

/* ---- Lifecycle ---- */

/* The start itself, in the caller's job: a fresh boot from Off, or from the saved
 * state when Saved. */
static void start_in_job(VmmsVm *vm)
{
        VmmsError error = {0};
        VmmsVmState was = vm->def.state;

        vm->restart_pending = false;
        g_clear_pointer(&vm->restore_path, g_free);
        if (was == VMMS_VM_SAVED)
                vm->restore_path = vmms_vm_saved_path(vm);
        vm->def.state = VMMS_VM_STARTING;
        if (vmms_vm_persist(vm, "state", &error, "starting") < 0) {
                vm->def.state = was;
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        vm->engine->ops->start(vm->engine, vm);
}

void vmms_vm_start(VmmsVm *vm, VmmsCall *call)
{
        if (job_begin(vm, "start", VMMS_ACTION_START, call))
                start_in_job(vm);
}

void vmms_vm_stop(VmmsVm *vm, bool turn_off, bool force, VmmsCall *call)
{
        VmmsError error = {0};

        if (!job_begin(vm, "stop", VMMS_ACTION_STOP, call))
                return;
        /* As Hyper-V, a paused guest cannot run its shutdown: say so rather than wait out the
         * stop timeout and turn it off unasked. */
        if (!turn_off && vm->def.state == VMMS_VM_PAUSED) {
                vmms_error_set(&error, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot shut down VM '%s': it is Paused; resume it first, or use -TurnOff",
                               vm->def.name);
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        vm->def.state = VMMS_VM_STOPPING;
        /* Stopping a VM always works, store or no store (a full disk must not keep a VM
         * running): the state is recorded when the store takes writes again. */
        if (vmms_vm_persist(vm, "state", &error, turn_off ? "turning off" : "shutting down") < 0) {
                g_warning("%s; stopping it all the same", error.message);
                vm->unsaved = true;
                vmms_error_clear(&error);
        }
        vm->engine->ops->stop(vm->engine, vm, turn_off,
                              force ? vm->ctx->force_timeout_ms : vm->ctx->stop_timeout_ms);
}

static void on_pause_done(VmmsVm *vm, const VmmsError *error)
{
        bool paused = g_strcmp0(vm->job, "pause") == 0;

        if (error) {
                job_fail_with(vm, error);
                return;
        }
        set_state(vm, paused ? VMMS_VM_PAUSED : VMMS_VM_RUNNING, "state", paused ? "paused" : "resumed");
        job_end(vm);
}

void vmms_vm_pause(VmmsVm *vm, bool paused, VmmsCall *call)
{
        if (!job_begin(vm, paused ? "pause" : "resume", paused ? VMMS_ACTION_PAUSE : VMMS_ACTION_RESUME,
                       call))
                return;
        vm->engine->ops->pause(vm->engine, vm, paused, on_pause_done);
}

/* ---- Settings ---- */

static void on_set_processor_done(VmmsVm *vm, const VmmsError *error)
{
        VmmsError perr = {0};

        if (error) {
                job_fail_with(vm, error);
                return;
        }
        vm->def.processor = vm->job_processor;
        if (vmms_vm_persist(vm, "settings", &perr,
                            "processor: Reserve %u, Maximum %u, RelativeWeight %u (applied live)",
                            vm->def.processor.reserve, vm->def.processor.maximum,
                            vm->def.processor.relative_weight) < 0) {
                job_fail_with(vm, &perr);
                vmms_error_clear(&perr);
                return;
        }
        job_end(vm);
}

/* Live processor settings go to the engine first; the store follows its yes. */
void vmms_vm_set_processor(VmmsVm *vm, const VmmsProcessorSettings *p, VmmsCall *call)
{
        VmmsError error = {0};

        if (!vmms_vm_processor_valid(p, &error) ||
            (p->count != vm->def.processor.count &&
             !vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_SET_PROCESSOR_COUNT, &error)) ||
            (p->compatibility_for_migration != vm->def.processor.compatibility_for_migration &&
             !vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_SET_PROCESSOR_COMPATIBILITY,
                                     &error))) {
                fail_call(call, &error);
                return;
        }
        if (!vmms_vm_processor_engine_valid(vm->def.name, vm->def.engine, p, &error)) {
                fail_call(call, &error);
                return;
        }
        if (!job_begin(vm, "processor settings", VMMS_ACTION_COUNT, call))
                return;
        if (vm->def.state == VMMS_VM_RUNNING || vm->def.state == VMMS_VM_PAUSED) {
                vm->job_processor = *p;
                vm->engine->ops->set_processor(vm->engine, vm, p, on_set_processor_done);
                return;
        }
        vm->def.processor = *p;
        if (vmms_vm_persist(vm, "settings", &error,
                            "processor: Count %u, Reserve %u, Maximum %u, RelativeWeight %u, "
                            "CompatibilityForMigrationEnabled %s",
                            p->count, p->reserve, p->maximum, p->relative_weight,
                            p->compatibility_for_migration ? "True" : "False") < 0) {
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        job_end(vm);
}

void vmms_vm_set_memory(VmmsVm *vm, const VmmsMemorySettings *mem, VmmsCall *call)
{
        VmmsError error = {0};
        VmmsMemorySettings old = vm->def.memory;
        g_autofree char *startup = NULL, *minimum = NULL, *maximum = NULL;

        if (!vmms_vm_memory_valid(mem, &error) ||
            ((mem->startup_bytes != old.startup_bytes ||
              mem->dynamic_memory_enabled != old.dynamic_memory_enabled) &&
             !vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_SET_STARTUP_MEMORY, &error)) ||
            (vmms_vm_is_live(vm) && !vmms_vm_memory_change_allowed_running(&old, mem, &error)) ||
            !vmms_vm_check_idle(vm, &error)) {
                fail_call(call, &error);
                return;
        }
        startup = vmms_format_bytes(mem->startup_bytes);
        minimum = vmms_format_bytes(mem->minimum_bytes);
        maximum = vmms_format_bytes(mem->maximum_bytes);
        vm->def.memory = *mem;
        if (vmms_vm_persist(vm, "settings", &error,
                            "memory: DynamicMemoryEnabled %s, Startup %s, Minimum %s, Maximum %s, Buffer %u, "
                            "Priority %u, GoalSeeking %s",
                            mem->dynamic_memory_enabled ? "true" : "false", startup, minimum, maximum,
                            mem->buffer, mem->priority, mem->goal_seeking ? "true" : "false") < 0) {
                vm->def.memory = old;
                fail_call(call, &error);
                return;
        }
        if (call)
                vm->ctx->reply(vm, call, vm->ctx->reply_data);
}

int vmms_vm_update_settings(VmmsVm *vm, const VmmsVmSettings *s, VmmsError *error)
{
        g_auto(VmmsVmDefinition) old = {0};
        bool workload_changes = (s->workload && g_strcmp0(s->workload, vm->def.workload) != 0) ||
                                (s->boot_args && g_strcmp0(s->boot_args, vm->def.boot_args) != 0);
        GString *what = g_string_new(NULL);
        int r;

        if ((s->name && !vmms_vm_name_valid(s->name, error)) ||
            !vmms_vm_workload_valid(s->workload ? s->workload : vm->def.workload,
                                    s->boot_args ? s->boot_args : vm->def.boot_args,
                                    s->notes ? s->notes : vm->def.notes, error) ||
            s->automatic_start_action > VMMS_AUTO_START_COUNT ||
            (workload_changes &&
             !vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_SET_WORKLOAD, error)) ||
            !vmms_vm_check_idle(vm, error)) {
                g_string_free(what, TRUE);
                return -EINVAL;
        }
        vmms_vm_definition_copy(&old, &vm->def);
        if (s->name && g_strcmp0(s->name, vm->def.name) != 0) {
                g_string_append_printf(what, "renamed from '%s'; ", vm->def.name);
                g_free(vm->def.name);
                vm->def.name = g_strdup(s->name);
        }
        if (s->notes) {
                g_free(vm->def.notes);
                vm->def.notes = g_strdup(s->notes);
                g_string_append(what, "notes changed; ");
        }
        if (s->automatic_start_action < VMMS_AUTO_START_COUNT) {
                vm->def.automatic_start_action = s->automatic_start_action;
                g_string_append_printf(what, "AutomaticStartAction %s; ",
                                       vmms_auto_start_to_string(s->automatic_start_action));
        }
        if (s->workload) {
                g_free(vm->def.workload);
                vm->def.workload = g_strdup(s->workload);
                g_string_append_printf(what, "Workload %s; ", s->workload);
        }
        if (s->boot_args) {
                g_free(vm->def.boot_args);
                vm->def.boot_args = g_strdup(s->boot_args);
                g_string_append_printf(what, "BootArgs '%s'; ", s->boot_args);
        }
        if (s->highly_available >= 0) {
                vm->def.highly_available = s->highly_available != 0;
                g_string_append_printf(what, "HighlyAvailable %s; ", s->highly_available ? "true" : "false");
        }
        if (what->len >= 2)
                g_string_truncate(what, what->len - 2);
        r = vmms_vm_persist(vm, "settings", error, "%s", what->str);
        g_string_free(what, TRUE);
        if (r < 0) {
                vmms_vm_definition_clear(&vm->def);
                vmms_vm_definition_copy(&vm->def, &old);
        }
        return r;
}

/* ---- Devices (libvirt VMs) ---- */

static bool vm_has_mac(const VmmsVm *vm, const char *mac)
{
        for (guint i = 0; i < vm->def.network_adapters->len; i++)
                if (g_ascii_strcasecmp(
                            g_array_index(vm->def.network_adapters, VmmsNetworkAdapter, i).mac_address,
                            mac) == 0)
                        return true;
        return false;
}

static bool devices_changeable(VmmsVm *vm, VmmsError *error)
{
        if (g_strcmp0(vm->def.engine, "libvirt") != 0) {
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "VM '%s' runs on the %s engine, whose guest has no disks or network "
                               "adapters; they are for libvirt VMs (New-VM -Engine libvirt)",
                               vm->def.name, vm->def.engine);
                return false;
        }
        return vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_SET_DEVICES, error) &&
               vmms_vm_check_idle(vm, error);
}

/* Persists the changed definition, or puts `old` back. */
static int persist_devices(VmmsVm *vm, VmmsVmDefinition *old, VmmsError *error, const char *what)
{
        int r = vmms_vm_persist(vm, "settings", error, "%s", what);

        if (r < 0) {
                vmms_vm_definition_clear(&vm->def);
                vmms_vm_definition_copy(&vm->def, old);
        }
        return r;
}

bool vmms_vm_uses_file(const VmmsVm *vm, const char *path)
{
        const GArray *drives = vm->def.hard_disk_drives;

        if (vmms_disk_same_file(vm->def.vhd_path, path) || vmms_disk_same_file(vm->def.kernel_path, path) ||
            vmms_disk_same_file(vm->def.initrd_path, path))
                return true;
        for (guint i = 0; drives && i < drives->len; i++)
                if (vmms_disk_same_file(g_array_index(drives, VmmsHardDiskDrive, i).path, path))
                        return true;
        return false;
}

int vmms_vm_add_hard_disk_drive(VmmsVm *vm, const char *path, VmmsError *error)
{
        g_auto(VmmsVmDefinition) old = {0};
        g_autofree char *what = NULL;
        VmmsHardDiskDrive d = {0};

        if (!devices_changeable(vm, error))
                return -EINVAL;
        if (vmms_vm_uses_file(vm, path)) {
                vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "VM '%s' already uses '%s'", vm->def.name,
                               path);
                return -EEXIST;
        }
        if (!vmms_disk_image_valid(path, &d.format, error))
                return -EINVAL;
        if (vm->def.hard_disk_drives->len >= VMMS_HARD_DISK_DRIVES_MAX) {
                g_free(d.format);
                vmms_error_set(error, VMMS_ERROR_RESOURCE_EXHAUSTED,
                               "VM '%s' has %d hard disk drives besides its boot disk, the most it can have",
                               vm->def.name, VMMS_HARD_DISK_DRIVES_MAX);
                return -ENOSPC;
        }
        vmms_vm_definition_copy(&old, &vm->def);
        d.path = g_strdup(path);
        what = g_strdup_printf("hard disk drive %s added (%s)", path, d.format);
        g_array_append_val(vm->def.hard_disk_drives, d);
        return persist_devices(vm, &old, error, what);
}

int vmms_vm_remove_hard_disk_drive(VmmsVm *vm, const char *path, VmmsError *error)
{
        GArray *drives = vm->def.hard_disk_drives;
        g_auto(VmmsVmDefinition) old = {0};
        g_autofree char *what = NULL;

        if (!devices_changeable(vm, error))
                return -EINVAL;
        for (guint i = 0; i < drives->len; i++) {
                const char *p = g_array_index(drives, VmmsHardDiskDrive, i).path;

                if (g_strcmp0(p, path) != 0 && !vmms_disk_same_file(p, path))
                        continue;
                vmms_vm_definition_copy(&old, &vm->def);
                what = g_strdup_printf("hard disk drive %s removed", p);
                g_array_remove_index(vm->def.hard_disk_drives, i);
                return persist_devices(vm, &old, error, what);
        }
        if (vmms_disk_same_file(vm->def.vhd_path, path) || g_strcmp0(vm->def.vhd_path, path) == 0)
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "'%s' is VM '%s''s boot disk (VHDPath), not an added drive", path,
                               vm->def.name);
        else
                vmms_error_set(error, VMMS_ERROR_NOT_FOUND, "VM '%s' has no hard disk drive '%s'",
                               vm->def.name, path);
        return -ENOENT;
}

static const VmmsNetworkAdapter *find_adapter(const VmmsVm *vm, const char *name)
{
        for (guint i = 0; i < vm->def.network_adapters->len; i++) {
                const VmmsNetworkAdapter *a = &g_array_index(vm->def.network_adapters, VmmsNetworkAdapter, i);

                g_autofree char *a_folded = g_utf8_casefold(a->name, -1);
                g_autofree char *folded = g_utf8_casefold(name, -1);

                if (strcmp(a_folded, folded) == 0)
                        return a;
        }
        return NULL;
}

int vmms_vm_add_network_adapter(VmmsVm *vm, const char *switch_name, const char *name, VmmsError *error)
{
        g_auto(VmmsVmDefinition) old = {0};
        g_autofree char *what = NULL;
        g_autofree char *chosen = NULL;
        VmmsNetworkAdapter a = {0};

        if (!devices_changeable(vm, error) || !vmms_switch_name_valid(switch_name, error) ||
            (name && *name && !vmms_adapter_name_valid(name, error)))
                return -EINVAL;
        if (vm->def.network_adapters->len >= VMMS_NETWORK_ADAPTERS_MAX) {
                vmms_error_set(error, VMMS_ERROR_RESOURCE_EXHAUSTED,
                               "VM '%s' has %d network adapters, the most it can have", vm->def.name,
                               VMMS_NETWORK_ADAPTERS_MAX);
                return -ENOSPC;
        }
        if (name && *name) {
                if (find_adapter(vm, name)) {
                        vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS,
                                       "VM '%s' already has a network adapter named '%s'", vm->def.name,
                                       name);
                        return -EEXIST;
                }
                chosen = g_strdup(name);
        } else {
                chosen = g_strdup(VMMS_ADAPTER_NAME_DEFAULT);
                for (unsigned n = 2; find_adapter(vm, chosen); n++) {
                        g_free(chosen);
                        chosen = g_strdup_printf("%s %u", VMMS_ADAPTER_NAME_DEFAULT, n);
                }
        }
        if (vm->engine && vm->engine->ops->network_valid &&
            !vm->engine->ops->network_valid(vm->engine, switch_name, error))
                return -ENOENT;
        vmms_vm_definition_copy(&old, &vm->def);
        a.name = g_steal_pointer(&chosen);
        a.switch_name = g_strdup(switch_name);
        /* Unique within the VM; across VMs the 24 random bits make a clash unlikely and
         * libvirt refuses to start a second NIC with a MAC already on the bridge. */
        do
                vmms_mac_address_generate(a.mac_address);
        while (vm_has_mac(vm, a.mac_address));
        what = g_strdup_printf("network adapter '%s' added on switch '%s' (%s)", a.name, switch_name,
                               a.mac_address);
        g_array_append_val(vm->def.network_adapters, a);
        return persist_devices(vm, &old, error, what);
}

int vmms_vm_remove_network_adapter(VmmsVm *vm, const char *name, VmmsError *error)
{
        g_auto(VmmsVmDefinition) old = {0};
        g_autofree char *what = NULL;
        const VmmsNetworkAdapter *a;

        if (!devices_changeable(vm, error))
                return -EINVAL;
        a = find_adapter(vm, name ? name : "");
        if (!a) {
                vmms_error_set(error, VMMS_ERROR_NOT_FOUND, "VM '%s' has no network adapter named '%s'",
                               vm->def.name, name ? name : "");
                return -ENOENT;
        }
        vmms_vm_definition_copy(&old, &vm->def);
        what = g_strdup_printf("network adapter '%s' removed", a->name);
        g_array_remove_index(vm->def.network_adapters,
                             (guint)(a - (const VmmsNetworkAdapter *)vm->def.network_adapters->data));
        return persist_devices(vm, &old, error, what);
}

bool vmms_vm_removable(VmmsVm *vm, VmmsError *error)
{
        return vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_REMOVE, error) &&
               vmms_vm_check_idle(vm, error);
}

char *vmms_vm_saved_path(const VmmsVm *vm)
{
        g_autofree char *name = g_strconcat(vm->def.id, ".vmrs", NULL);

        return g_build_filename(vm->ctx->saved_dir, name, NULL);
}

static void on_saved(VmmsVm *vm, const VmmsError *error, uint64_t file_bytes)
{
        if (error) {
                job_fail_with(vm, error); /* the VM runs on */
                return;
        }
        /* Saved once the engine's process has gone (exited follows). */
        vm->save_written = true;
        vm->saved_bytes = file_bytes;
}

void vmms_vm_save(VmmsVm *vm, VmmsCall *call)
{
        g_autofree char *path = NULL;

        if (!job_begin(vm, "save", VMMS_ACTION_SAVE, call))
                return;
        path = vmms_vm_saved_path(vm);
        vm->save_written = false;
        vm->engine->ops->save(vm->engine, vm, path, false, on_saved);
}

/* ---- Move-VM (the source's side; vmms-migration.c has the protocol) ---- */

static void move_saved_notify(VmmsVm *vm, const VmmsError *error)
{
        void (*fn)(VmmsVm *, const VmmsError *, void *) = vm->move_saved;

        vm->move_saved = NULL;
        if (fn)
                fn(vm, error, vm->move_saved_data);
}

bool vmms_vm_move_begin(VmmsVm *vm, VmmsCall *call)
{
        return job_begin(vm, "move", VMMS_ACTION_MIGRATE, call);
}

static void on_move_saved(VmmsVm *vm, const VmmsError *error, uint64_t file_bytes)
{
        if (error) {
                set_state(vm, VMMS_VM_RUNNING, "error", error->message); /* it runs on */
                move_saved_notify(vm, error);
                return;
        }
        /* Migrating once the engine's process has gone (exited follows). */
        vm->save_written = true;
        vm->saved_bytes = file_bytes;
}

void vmms_vm_move_save(VmmsVm *vm, void (*fn)(VmmsVm *vm, const VmmsError *error, void *userdata),
                       void *userdata)
{
        g_autofree char *path = vmms_vm_saved_path(vm);

        vm->move_saved = fn;
        vm->move_saved_data = userdata;
        vm->save_written = false;
        set_state(vm, VMMS_VM_MIGRATING, "state", "saving its state to move it");
        vm->engine->ops->save(vm->engine, vm, path, false, on_move_saved);
}

VmmsCall *vmms_vm_move_take_call(VmmsVm *vm)
{
        VmmsCall *call = vm->job_call;

        vm->job_call = NULL;
        return call;
}

void vmms_vm_move_end(VmmsVm *vm)
{
        vm->job = NULL;
        vm->job_call = NULL;
}

static void on_live_cancelled(VmmsVm *vm, const VmmsError *error)
{
        if (error)
                g_warning("VM '%s': %s", vm->def.name, error->message); /* its exit, if any, says the rest */
        if (vm->def.state == VMMS_VM_MIGRATING && vm->engine_data)
                set_state(vm, VMMS_VM_RUNNING, "state", "runs on here (the move was given up)");
        vmms_vm_move_end(vm);
}

void vmms_vm_move_abort(VmmsVm *vm, VmmsErrorCode code, const char *why)
{
        VmmsCall *call = vmms_vm_move_take_call(vm);
        g_autofree char *message = g_strdup_printf("cannot move VM '%s': %s", vm->def.name, why);

        vm->move_saved = NULL;
        vm->move_event = NULL;
        if (call)
                vmms_call_fail(call, code, "%s", message);
        if (vm->move_live) {
                /* Its worker still runs it (or holds it paused): it goes on here. */
                vm->move_live = false;
                vmms_vm_record_event(vm, "error", message);
                if (vm->def.state == VMMS_VM_MIGRATING && vm->engine_data) {
                        vm->engine->ops->migrate_end(vm->engine, vm, false, on_live_cancelled);
                        return;
                }
                vmms_vm_move_end(vm);
                return;
        }
        if (vm->def.state != VMMS_VM_MIGRATING) {
                vmms_vm_record_event(vm, "error", message);
                vmms_vm_move_end(vm);
                return;
        }
        /* The source still owns it: it continues from the state it saved. */
        vmms_vm_record_event(vm, "error", message);
        vm->def.state = VMMS_VM_SAVED;
        start_in_job(vm);
}

/* After DONE the destination may run the VM: starting it here too could make two
 * runners, so it stays Saved (its state kept) until the operator says which host keeps
 * it. */
void vmms_vm_move_in_doubt(VmmsVm *vm, const char *destination, const char *why)
{
        VmmsCall *call = vmms_vm_move_take_call(vm);
        char *message = g_strdup_printf(
                "the outcome of moving VM '%s' to %s is unknown (%s); it is kept Saved here and not "
                "started: if Get-VM on %s shows it, Remove-VM it here, otherwise Start-VM it here",
                vm->def.name, destination, why, destination);

        vm->move_saved = NULL;
        vm->move_event = NULL;
        if (vm->move_live) {
                g_free(message);
                message = g_strdup_printf(
                        "the outcome of moving VM '%s' to %s is unknown (%s); it is kept Paused here: if "
                        "Get-VM on %s shows it, Stop-VM -TurnOff and Remove-VM it here, otherwise Resume-VM "
                        "it "
                        "here",
                        vm->def.name, destination, why, destination);
        }
        if (call)
                vmms_call_fail(call, VMMS_ERROR_UNAVAILABLE, "cannot move VM '%s': %s", vm->def.name,
                               message);
        set_state(vm, vm->move_live ? VMMS_VM_PAUSED : VMMS_VM_SAVED, "error", message);
        vm->move_live = false;
        vmms_vm_move_end(vm);
        g_free(message);
}

/* ---- Move-VM: the destination's side, and a restarted source ---- */

void vmms_vm_move_receive(VmmsVm *vm)
{
        vm->restore_paused = true;
        vmms_vm_start(vm, NULL);
}

void vmms_vm_move_receive_live(VmmsVm *vm, int fd)
{
        vm->restore_paused = true;
        vm->incoming_fd = fd;
        vmms_vm_start(vm, NULL);
}

void vmms_vm_move_watch_restore(VmmsVm *vm, void (*fn)(VmmsVm *vm, void *userdata), void *userdata)
{
        vm->move_restored = fn;
        vm->move_restored_data = userdata;
}

static void on_live_started(VmmsVm *vm, const VmmsError *error, bool unsupported)
{
        void (*fn)(VmmsVm *, const VmmsError *, bool, void *) = vm->move_live_started;

        vm->move_live_started = NULL;
        if (error) {
                vm->move_event = NULL;
        } else {
                vm->move_live = true;
                set_state(vm, VMMS_VM_MIGRATING, "state",
                          "sending its memory while it runs (live migration)");
        }
        fn(vm, error, unsupported, vm->move_event_data);
}

void vmms_vm_move_live(VmmsVm *vm, int fd, uint32_t max_downtime_ms,
                       void (*fn)(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata),
                       void (*event)(VmmsVm *vm, const struct VmmsEngineMigration *m, void *userdata),
                       void *userdata)
{
        if (!vm->engine->ops->migrate_out) {
                fn(vm, NULL, true, userdata); /* this engine moves VMs quick only */
                return;
        }
        vm->move_event = event;
        vm->move_event_data = userdata;
        vm->move_live_started = fn;
        vm->engine->ops->migrate_out(vm->engine, vm, fd, max_downtime_ms, on_live_started);
}

bool vmms_vm_moves_direct(const VmmsVm *vm)
{
        return vm->engine->ops->migrate_direct != NULL;
}

void vmms_vm_move_direct(VmmsVm *vm, const VmmsEngineDirectTarget *target, const char *data_host,
                         uint32_t max_downtime_ms,
                         void (*fn)(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata),
                         void (*event)(VmmsVm *vm, const struct VmmsEngineMigration *m, void *userdata),
                         void *userdata)
{
        vm->move_event = event;
        vm->move_event_data = userdata;
        vm->move_live_started = fn;
        vm->engine->ops->migrate_direct(vm->engine, vm, target, data_host, max_downtime_ms, on_live_started);
}

void vmms_vm_move_receive_direct(VmmsVm *vm)
{
        vm->restore_paused = true;
        vm->incoming_direct = true;
        vmms_vm_start(vm, NULL);
}

void vmms_vm_move_finish(VmmsVm *vm)
{
        vm->move_event = NULL;
        if (vm->move_live && vm->engine_data)
                vm->engine->ops->migrate_end(vm->engine, vm, true, NULL);
        vm->move_live = false;
}

static void on_move_resumed(VmmsVm *vm, const VmmsError *error)
{
        void (*fn)(VmmsVm *, const VmmsError *, void *) = vm->move_resumed;

        vm->move_resumed = NULL;
        vm->job = NULL;
        if (!error && vm->def.state == VMMS_VM_MIGRATING)
                set_state(vm, VMMS_VM_RUNNING, "state", "resumed: the move is committed");
        if (fn)
                fn(vm, error, vm->move_resumed_data);
}

void vmms_vm_move_commit(VmmsVm *vm, const char *source,
                         void (*fn)(VmmsVm *vm, const VmmsError *error, void *userdata), void *userdata)
{
        g_autofree char *message = g_strdup_printf("%s committed the move: resuming it here", source);

        vm->move_resumed = fn;
        vm->move_resumed_data = userdata;
        vm->job = "commit";
        if (vm->incoming_direct) {
                /* Its engine brought it here running: nothing to resume. */
                vm->incoming_direct = false;
                vmms_vm_record_event(vm, "state", "the move is committed");
                on_move_resumed(vm, NULL);
                return;
        }
        vm->engine->ops->pause(vm->engine, vm, false, on_move_resumed); /* the guest's downtime ends */
        vmms_vm_record_event(vm, "state", message);
}

void vmms_vm_move_discard(VmmsVm *vm, const char *why)
{
        if (!vmms_vm_is_live(vm) || !vm->engine_data)
                return;
        g_free(vm->exit_reason);
        vm->exit_reason = g_strdup(why);
        vm->restart_pending = false;
        vm->engine->ops->kill(vm->engine, vm);
}

void vmms_vm_move_recover(VmmsVm *vm, const char *destination, bool committing)
{
        g_autofree char *message = NULL;

        if (committing) {
                message = g_strdup_printf(
                        "the outcome of moving VM '%s' to %s is unknown (vmmsd restarted after it told %s "
                        "to commit); it is kept Saved here and not started: if Get-VM on %s shows it, "
                        "Remove-VM it here, otherwise Start-VM it here",
                        vm->def.name, destination, destination, destination);
                if (vmms_vm_is_live(vm) && vm->engine_data) {
                        /* A live move's worker holds the VM paused: kept so, never resumed by
                         * the move (the destination may run it). */
                        g_free(message);
                        message = g_strdup_printf(
                                "the outcome of moving VM '%s' to %s is unknown (vmmsd restarted after it "
                                "told %s to commit); it is kept Paused here: if Get-VM on %s shows it, "
                                "Stop-VM -TurnOff and Remove-VM it here, otherwise Resume-VM it here",
                                vm->def.name, destination, destination, destination);
                        set_state(vm, VMMS_VM_PAUSED, "error", message);
                        return;
                }
                set_state(vm, VMMS_VM_SAVED, "error", message);
                return;
        }
        message = g_strdup_printf("the move to %s was cut short by a vmmsd restart before it was "
                                  "committed; VM '%s' is this host's again",
                                  destination, vm->def.name);
        if (vm->def.state == VMMS_VM_MIGRATING && vm->engine_data) {
                /* Its Hello says whether it runs (the save never began) or is saving. */
                vmms_vm_record_event(vm, "state", message);
                vm->job = "move-recover";
                return;
        }
        if (vmms_vm_is_live(vm)) {
                vmms_vm_record_event(vm, "state", message); /* it never stopped running here */
                return;
        }
        if (vm->def.state == VMMS_VM_SAVED) {
                set_state(vm, VMMS_VM_SAVED, "state", message);
                vm->resume_pending = true;
        }
}

/* ---- Checkpoints ----
 * A checkpoint of a live VM is the worker's Save with keep_running: the VM pauses,
 * its state goes to checkpoints/<vm id>/<id>.vmrs through a temporary name, and it
 * runs on. The store's row is written only once the file is whole, so a save killed
 * midway leaves at most a temporary file and never a checkpoint. An Off VM's
 * checkpoint is its definition alone. Restoring turns the current run off, puts the
 * definition back, and for a live checkpoint starts the VM from a copy of the file
 * (as Start-VM from Saved), so the checkpoint stays usable. */

char *vmms_vm_checkpoint_path(const VmmsVm *vm, const char *checkpoint_id)
{
        g_autofree char *name = g_strconcat(checkpoint_id, ".vmrs", NULL);

        return g_build_filename(vm->ctx->checkpoints_dir, vm->def.id, name, NULL);
}

int vmms_vm_checkpoints(VmmsVm *vm, GPtrArray **ret_checkpoints, VmmsError *error)
{
        int r = vmms_store_checkpoint_list(vm->ctx->store, vm->def.id, ret_checkpoints);

        if (r < 0)
                vmms_error_set(error, vmms_error_code_from_errno(r),
                               "cannot list the checkpoints of VM '%s': %s", vm->def.name, g_strerror(-r));
        return r;
}

/* The VM's checkpoint named `name` (case-insensitive), or NULL with NotFound. */
static VmmsCheckpoint *checkpoint_find(VmmsVm *vm, const char *name, VmmsError *error)
{
        g_autoptr(GPtrArray) list = NULL;
        g_autofree char *quoted = vmms_quote(name ? name : "");

        if (vmms_vm_checkpoints(vm, &list, error) < 0)
                return NULL;
        for (guint i = 0; i < list->len; i++) {
                VmmsCheckpoint *c = list->pdata[i];

                if (name && g_ascii_strcasecmp(c->name, name) == 0)
                        return g_ptr_array_steal_index(list, i);
        }
        vmms_error_set(error, VMMS_ERROR_NOT_FOUND,
                       "VM '%s' has no checkpoint named '%s'; Get-VMSnapshot %s lists them", vm->def.name,
                       quoted, vm->def.name);
        return NULL;
}

/* Writes the checkpoint's row with its event; the file (if any) is whole by now. */
static int checkpoint_record(VmmsVm *vm, VmmsCheckpoint *c, VmmsError *error)
{
        g_autofree char *size = vmms_format_bytes(c->state_bytes);
        g_autofree char *message = NULL;
        g_autofree char *quoted = vmms_quote(c->name);
        VmmsEventRecord event;
        int r;

        message = c->state_bytes ? g_strdup_printf("checkpoint '%s' taken (%s written)", quoted, size)
                                 : g_strdup_printf("checkpoint '%s' taken (its settings: the VM is %s)",
                                                   quoted, vmms_vm_state_to_string(c->def.state));
        event = event_for(vm, "checkpoint", message);
        r = vmms_store_checkpoint_insert(vm->ctx->store, c, &event);
        if (r == -EEXIST) {
                vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS,
                               "VM '%s' already has a checkpoint named '%s'", vm->def.name, quoted);
                return r;
        }
        if (r < 0) {
                g_autofree char *why = vmms_store_explain(vm->ctx->store, r);

                vmms_error_set(error, vmms_error_code_from_errno(r),
                               "cannot record checkpoint '%s' of VM '%s': %s", quoted, vm->def.name, why);
                return r;
        }
        vmms_events_notify(vm->ctx->events, &event);
        return 0;
}

static void on_checkpoint_saved(VmmsVm *vm, const VmmsError *error, uint64_t file_bytes)
{
        g_autoptr(VmmsCheckpoint) c = g_steal_pointer(&vm->checkpoint);
        g_autofree char *path = NULL;
        VmmsError rerr = {0};
        bool ours = g_strcmp0(vm->job, "checkpoint") == 0;

        if (!c)
                return;
        if (error) {
                if (ours)
                        job_fail_with(vm, error); /* no file was left; the VM runs on */
                return;
        }
        path = vmms_vm_checkpoint_path(vm, c->id);
        c->state_bytes = MAX(file_bytes, 1);
        if (checkpoint_record(vm, c, &rerr) < 0) {
                if (unlink(path) < 0 && errno != ENOENT)
                        g_warning("VM '%s': cannot delete %s: %s", vm->def.name, path, g_strerror(errno));
                if (ours)
                        job_fail_with(vm, &rerr);
                vmms_error_clear(&rerr);
                return;
        }
        if (ours)
                job_end(vm);
}

void vmms_vm_checkpoint(VmmsVm *vm, const char *name, VmmsCall *call)
{
        g_autoptr(VmmsCheckpoint) c = NULL;
        g_autoptr(GPtrArray) list = NULL;
        g_autofree char *uuid = NULL;
        g_autofree char *dir = NULL;
        g_autofree char *path = NULL;
        VmmsError error = {0};

        if (!vmms_vm_name_valid(name, &error)) {
                VmmsError named = {0};

                vmms_error_set(&named, VMMS_ERROR_INVALID_ARGUMENT,
                               "cannot checkpoint VM '%s': checkpoint %s", vm->def.name, error.message);
                vmms_error_clear(&error);
                fail_call(call, &named);
                return;
        }
        if (!job_begin(vm, "checkpoint", VMMS_ACTION_CHECKPOINT, call))
                return;
        c = g_new0(VmmsCheckpoint, 1);
        uuid = g_uuid_string_random();
        c->id = g_strdup(uuid);
        c->name = g_strdup(name);
        c->created_unix_ms = now_ms();
        vmms_vm_definition_copy(&c->def, &vm->def);
        /* A duplicate name is refused before anything is written. */
        if (vmms_vm_checkpoints(vm, &list, &error) < 0) {
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        for (guint i = 0; i < list->len; i++)
                if (g_ascii_strcasecmp(((VmmsCheckpoint *)list->pdata[i])->name, name) == 0) {
                        g_autofree char *quoted = vmms_quote(name);

                        vmms_error_set(&error, VMMS_ERROR_ALREADY_EXISTS,
                                       "VM '%s' already has a checkpoint named '%s'", vm->def.name, quoted);
                        job_fail_with(vm, &error);
                        vmms_error_clear(&error);
                        return;
                }
        if (vm->def.state == VMMS_VM_OFF) {
                if (checkpoint_record(vm, c, &error) < 0) {
                        job_fail_with(vm, &error);
                        vmms_error_clear(&error);
                        return;
                }
                job_end(vm);
                return;
        }
        dir = g_build_filename(vm->ctx->checkpoints_dir, vm->def.id, NULL);
        if (g_mkdir_with_parents(dir, 0750) < 0) {
                int r = errno;

                vmms_error_set(&error, vmms_error_code_from_errno(-r),
                               "cannot checkpoint VM '%s': cannot make %s: %s", vm->def.name, dir,
                               g_strerror(r));
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        vmms_checkpoint_free(vm->checkpoint);
        path = vmms_vm_checkpoint_path(vm, c->id);
        vm->checkpoint = g_steal_pointer(&c);
        vm->engine->ops->save(vm->engine, vm, path, true, on_checkpoint_saved);
}

/* `from` to `to` through to.tmp, synced and renamed: whole or absent. */
static int copy_file(const char *from, const char *to, char **ret_error)
{
        g_autofree char *tmp = g_strconcat(to, ".tmp", NULL);
        int in = -1, out = -1, r = 0;
        ssize_t n;

        in = open(from, O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot open %s: %s", from, g_strerror(-r));
                return r;
        }
        out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot create %s: %s", tmp, g_strerror(-r));
                close(in);
                return r;
        }
        while ((n = copy_file_range(in, NULL, out, NULL, 1u << 30, 0)) > 0)
                ;
        if (n < 0 || fsync(out) < 0 || rename(tmp, to) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot copy %s to %s: %s", from, to, g_strerror(-r));
                (void)unlink(tmp);
        }
        close(in);
        close(out);
        return r;
}

/* In the restore job with the VM Off or Saved (its old state file already gone):
 * puts the checkpoint's settings back (the VM keeps its id, name and engine) and, for
 * a live checkpoint, starts it from a copy of the checkpoint's state. */
static void restore_apply(VmmsVm *vm)
{
        g_autoptr(VmmsCheckpoint) c = g_steal_pointer(&vm->checkpoint);
        g_auto(VmmsVmDefinition) next = {0};
        g_autofree char *quoted = vmms_quote(c->name);
        g_autofree char *saved = vmms_vm_saved_path(vm);
        g_autofree char *why = NULL;
        VmmsError error = {0};
        VmmsVmDefinition old;

        vmms_vm_definition_copy(&next, &c->def);
        g_free(next.name);
        next.name = g_strdup(vm->def.name);
        g_free(next.engine);
        next.engine = g_strdup(vm->def.engine);
        next.created_unix_ms = vm->def.created_unix_ms;
        next.state = c->state_bytes ? VMMS_VM_SAVED : VMMS_VM_OFF;
        next.worker_pid = 0;
        next.started_unix_ms = 0;
        if (c->state_bytes) {
                g_autofree char *from = vmms_vm_checkpoint_path(vm, c->id);

                if (copy_file(from, saved, &why) < 0) {
                        g_autofree char *message = g_strdup_printf(
                                "cannot restore checkpoint '%s' of VM '%s': %s", quoted, vm->def.name, why);

                        vmms_vm_record_event(vm, "error", message);
                        job_fail(vm, VMMS_ERROR_INTERNAL, message);
                        return;
                }
        }
        old = vm->def;
        vm->def = next;
        next = old; /* freed on return: the definition that is replaced */
        if (vmms_vm_persist(vm, "settings", &error, "restored checkpoint '%s'%s", quoted,
                            c->state_bytes ? "; starting from its state" : " (its settings)") < 0) {
                old = vm->def;
                vm->def = next;
                next = old;
                (void)unlink(saved);
                job_fail_with(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        if (c->state_bytes)
                start_in_job(vm);
        else
                job_end(vm);
}

void vmms_vm_restore_checkpoint(VmmsVm *vm, const char *name, VmmsCall *call)
{
        g_autoptr(VmmsCheckpoint) c = NULL;
        g_autofree char *quoted = NULL;
        VmmsError error = {0};

        c = checkpoint_find(vm, name, &error);
        if (!c) {
                fail_call(call, &error);
                return;
        }
        if (!job_begin(vm, "restore-checkpoint", VMMS_ACTION_RESTORE_CHECKPOINT, call))
                return;
        quoted = vmms_quote(c->name);
        vmms_checkpoint_free(vm->checkpoint);
        vm->checkpoint = g_steal_pointer(&c);
        if (vm->def.state == VMMS_VM_SAVED) {
                /* Its saved state is discarded, as Hyper-V does. */
                g_autofree char *saved = vmms_vm_saved_path(vm);

                if (unlink(saved) < 0 && errno != ENOENT)
                        g_warning("VM '%s': cannot delete %s: %s", vm->def.name, saved, g_strerror(errno));
        }
        if (!vmms_vm_is_live(vm)) {
                restore_apply(vm);
                return;
        }
        /* The current run is turned off; restore_apply follows its exit. */
        vm->def.state = VMMS_VM_STOPPING;
        if (vmms_vm_persist(vm, "state", &error, "turning off to restore checkpoint '%s'", quoted) < 0) {
                g_warning("%s; turning it off all the same", error.message);
                vm->unsaved = true;
                vmms_error_clear(&error);
        }
        vm->engine->ops->stop(vm->engine, vm, true, vm->ctx->force_timeout_ms);
}

int vmms_vm_remove_checkpoint(VmmsVm *vm, const char *name, VmmsError *error)
{
        g_autoptr(VmmsCheckpoint) c = NULL;
        g_autofree char *quoted = NULL;
        g_autofree char *message = NULL;
        g_autofree char *path = NULL;
        VmmsEventRecord event;
        int r;

        c = checkpoint_find(vm, name, error);
        if (!c)
                return -ENOENT;
        if (!vmms_vm_check_idle(vm, error)) /* a restore of it may be reading it */
                return -EBUSY;
        quoted = vmms_quote(c->name);
        message = g_strdup_printf("checkpoint '%s' removed", quoted);
        event = event_for(vm, "checkpoint", message);
        r = vmms_store_checkpoint_remove(vm->ctx->store, c->id, &event);
        if (r < 0) {
                g_autofree char *why = vmms_store_explain(vm->ctx->store, r);

                vmms_error_set(error, vmms_error_code_from_errno(r),
                               "cannot remove checkpoint '%s' of VM '%s': %s", quoted, vm->def.name, why);
                return r;
        }
        vmms_events_notify(vm->ctx->events, &event);
        path = vmms_vm_checkpoint_path(vm, c->id);
        if (c->state_bytes && unlink(path) < 0 && errno != ENOENT)
                g_warning("VM '%s': cannot delete %s: %s", vm->def.name, path, g_strerror(errno));
        return 0;
}

/* ---- Figures and Dynamic Memory ---- */

void vmms_vm_adjust_memory(VmmsVm *vm, int64_t delta_bytes, const char *reason)
{
        g_autofree char *message = NULL;

        if (vm->def.state != VMMS_VM_RUNNING || !vm->engine_data)
                return;
        vm->engine->ops->adjust_memory(vm->engine, vm, delta_bytes, reason);
        message = g_strdup_printf("%s %" G_GINT64_FORMAT " MiB: %s", delta_bytes > 0 ? "adding" : "removing",
                                  (delta_bytes > 0 ? delta_bytes : -delta_bytes) >> 20, reason);
        vmms_vm_record_event(vm, "memory", message);
}

void vmms_vm_sample(VmmsVm *vm)
{
        if (vmms_vm_is_live(vm) && vm->engine_data)
                vm->engine->ops->sample(vm->engine, vm, &vm->figures);
        else
                vm->figures = (VmmsVmFigures){0};
}

void vmms_vm_host_lost(VmmsVm *vm, const char *why)
{
        if (!vmms_vm_is_live(vm) || !vm->engine_data)
                return;
        g_free(vm->exit_reason);
        vm->exit_reason = g_strdup(why);
        /* Hyper-V starts such a VM again when the host is back, unless told Nothing. */
        vm->restart_pending = vm->def.automatic_start_action != VMMS_AUTO_START_NOTHING &&
                              vm->def.state != VMMS_VM_STOPPING;
        vm->engine->ops->kill(vm->engine, vm);
}

/* ---- What the engine reports ---- */

static void on_engine_running(VmmsVm *vm, const VmmsEngineRunning *info)
{
        vm->partition_id = info->partition_id;
        vm->def.worker_pid = info->pid;
        vm->def.started_unix_ms = info->started_unix_ms;
        if (vm->def.state == VMMS_VM_STARTING && vm->restore_paused && vm->incoming_direct) {
                /* A direct move's VM arrived, running: the engine's own migration ended
                 * on the source, so this host has it; the source commits the move. */
                vm->restore_paused = false;
                set_state(
                        vm, VMMS_VM_MIGRATING, "state",
                        "arrived through its engine's own migration; runs here, the source commits the move");
                job_end(vm);
        } else if (vm->def.state == VMMS_VM_STARTING && vm->restore_paused && !info->paused) {
                /* It must not run before the commit: a worker that did not stay paused is ended. */
                g_warning("VM '%s': its worker runs the received state instead of holding it paused; "
                          "ending it",
                          vm->def.name);
                g_free(vm->exit_reason);
                vm->exit_reason = g_strdup("its worker did not hold the received state paused");
                vm->engine->ops->kill(vm->engine, vm);
        } else if (vm->def.state == VMMS_VM_STARTING && vm->restore_paused) {
                /* A moved VM, paused until its source commits; the received state is spent. */
                g_autofree char *path = g_steal_pointer(&vm->restore_path);

                vm->restore_paused = false;
                set_state(vm, VMMS_VM_MIGRATING, "state",
                          "restored from the received state, paused until the source commits the move");
                if (path && unlink(path) < 0 && errno != ENOENT)
                        g_warning("VM '%s': cannot delete %s: %s", vm->def.name, path, g_strerror(errno));
                job_end(vm);
        } else if (vm->def.state == VMMS_VM_MIGRATING && g_strcmp0(vm->job, "move-recover") == 0) {
                /* A restarted source: a worker that runs was never told to save, or it
                 * was sending live (its stream's reader is gone: it stops and runs on);
                 * one that holds a live stream's end paused is told to go on. */
                if (info->migration == VMMS_ENGINE_MIGRATION_OUT_PRECOPY ||
                    info->migration == VMMS_ENGINE_MIGRATION_OUT_DONE) {
                        vm->engine->ops->migrate_end(vm->engine, vm, false, on_live_cancelled);
                        vm->job = NULL;
                } else if (!info->paused) {
                        set_state(vm, VMMS_VM_RUNNING, "state", "runs on here (the move never began)");
                        job_end(vm);
                }
        } else if (vm->def.state == VMMS_VM_STARTING && vm->restore_path) {
                /* It runs from its saved state, which is spent (Hyper-V deletes it too). */
                g_autofree char *path = g_steal_pointer(&vm->restore_path);

                set_state(vm, VMMS_VM_RUNNING, "state", "restored from its saved state");
                if (unlink(path) < 0 && errno != ENOENT)
                        g_warning("VM '%s': cannot delete %s: %s", vm->def.name, path, g_strerror(errno));
                job_end(vm);
        } else if (vm->def.state == VMMS_VM_STARTING) {
                set_state(vm, VMMS_VM_RUNNING, "state", "started");
                job_end(vm);
        } else if (vm->def.state == VMMS_VM_RUNNING && info->paused) {
                set_state(vm, VMMS_VM_PAUSED, "state", "re-attached to its worker: paused");
        } else if (vm->def.state == VMMS_VM_PAUSED && !info->paused) {
                set_state(vm, VMMS_VM_RUNNING, "state", "re-attached to its worker: running");
        }
}

char *vmms_vm_engine_status(const VmmsVm *vm)
{
        return vm->engine && vm->engine->ops->status ? vm->engine->ops->status(vm->engine, vm) : NULL;
}

static void on_engine_exited(VmmsVm *vm, const VmmsEngineExit *exit)
{
        VmmsVmState was = vm->def.state;
        g_autofree char *message = NULL;
        bool restore_next = false;

        if (vm->move_live && vm->move_event) {
                /* A live move's worker is gone: the move ends with it (the VM ends here too). */
                g_autofree char *why =
                        g_strdup_printf("its worker ended: %s%s%s", exit->how, exit->last_words ? ": " : "",
                                        exit->last_words ? exit->last_words : "");
                VmmsEngineMigration m = {.kind = VMMS_ENGINE_MIGRATION_FAILED, .reason = why};

                vm->move_event(vm, &m, vm->move_event_data);
                was = vm->def.state;
        }
        if (was == VMMS_VM_STOPPING && vm->checkpoint && g_strcmp0(vm->job, "restore-checkpoint") == 0) {
                set_state(vm, VMMS_VM_OFF, "state", "turned off to restore a checkpoint");
                restore_next = true;
        } else if (g_strcmp0(vm->job, "move-recover") == 0 && !vm->exit_reason) {
                /* A restarted source whose worker was saving for the move: it continues
                 * from that state if the save completed. */
                g_autofree char *saved = vmms_vm_saved_path(vm);

                vm->job = NULL;
                if (g_file_test(saved, G_FILE_TEST_EXISTS)) {
                        set_state(vm, VMMS_VM_SAVED, "state", "saved for a move that was cut short");
                        vm->resume_pending = true;
                } else {
                        message = g_strdup_printf("its worker ended while saving for a move: %s",
                                                  exit->last_words ? exit->last_words : exit->how);
                        set_state(vm, VMMS_VM_OFF, "error", message);
                }
        } else if (vm->save_written && g_strcmp0(vm->job, "move") == 0) {
                g_autofree char *size = vmms_format_bytes(vm->saved_bytes);

                message = g_strdup_printf("saved for the move (%s written); sending it", size);
                vm->save_written = false;
                set_state(vm, VMMS_VM_MIGRATING, "state", message);
                move_saved_notify(vm, NULL);
        } else if (vm->save_written) {
                g_autofree char *size = vmms_format_bytes(vm->saved_bytes);

                message = g_strdup_printf("saved (%s written)", size);
                vm->save_written = false;
                set_state(vm, VMMS_VM_SAVED, "state", message);
                job_end(vm);
        } else if (was == VMMS_VM_STARTING && vm->restore_path && !vm->exit_reason) {
                /* The state stays, to try again or to delete with Remove-VM. */
                message = g_strdup_printf("failed to restore its saved state: %s",
                                          exit->last_words ? exit->last_words : exit->how);
                set_state(vm, VMMS_VM_SAVED, "error", message);
                job_fail(vm, exit->start_error ? exit->start_error : VMMS_ERROR_INTERNAL, message);
        } else if (vm->exit_reason) {
                message = g_strdup_printf("%s", vm->exit_reason);
                set_state(vm, VMMS_VM_OFF, "error", message);
                job_fail(vm, VMMS_ERROR_UNAVAILABLE, message);
        } else if (was == VMMS_VM_STARTING) {
                message = g_strdup_printf("failed to start: %s",
                                          exit->last_words ? exit->last_words : exit->how);
                set_state(vm, VMMS_VM_OFF, "error", message);
                job_fail(vm, exit->start_error ? exit->start_error : VMMS_ERROR_INTERNAL, message);
        } else if (was == VMMS_VM_STOPPING) {
                message = g_strdup_printf("stopped (%s)",
                                          exit->guest_reason ? "the guest shut down" : "turned off");
                set_state(vm, VMMS_VM_OFF, "state", message);
                job_end(vm);
        } else if (exit->guest_reason) {
                message = g_strdup_printf("the guest %s: %s",
                                          exit->guest_crashed ? "crashed" : "stopped itself",
                                          exit->guest_reason);
                set_state(vm, VMMS_VM_OFF, exit->guest_crashed ? "error" : "state", message);
                job_fail(vm, VMMS_ERROR_FAILED_PRECONDITION, message);
        } else {
                message = g_strdup_printf("%s%s%s", exit->how, exit->last_words ? ": " : "",
                                          exit->last_words ? exit->last_words : "");
                set_state(vm, VMMS_VM_OFF, "worker-exit", message);
                job_fail(vm, VMMS_ERROR_UNAVAILABLE, message);
        }
        if (vm->move_saved) {
                VmmsError lost = {0};

                vmms_error_set(&lost, VMMS_ERROR_UNAVAILABLE, "VM '%s' ended before its state was saved",
                               vm->def.name);
                move_saved_notify(vm, &lost);
                vmms_error_clear(&lost);
        }
        g_clear_pointer(&vm->exit_reason, g_free);
        g_clear_pointer(&vm->restore_path, g_free);
        vm->restore_paused = false;
        vm->incoming_direct = false;
        vm->memory = (VmmsMemoryStatus){0};
        vm->figures = (VmmsVmFigures){0};
        vm->partition_id = 0;
        if (restore_next)
                restore_apply(vm);
}

static void on_engine_memory_status(VmmsVm *vm, const VmmsMemoryStatus *status)
{
        vm->memory = *status;
        if (status->prompt && status->reporting && vm->def.state == VMMS_VM_RUNNING && vm->ctx->memory_prompt)
                vm->ctx->memory_prompt(vm, vm->ctx->memory_prompt_data);
}

static void on_engine_migration(VmmsVm *vm, const VmmsEngineMigration *m)
{
        if (vm->move_event)
                vm->move_event(vm, m, vm->move_event_data);
}

const VmmsEngineCallbacks vmms_vm_engine_callbacks = {
        .running = on_engine_running,
        .exited = on_engine_exited,
        .memory_status = on_engine_memory_status,
        .migration = on_engine_migration,
};
