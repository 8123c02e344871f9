/* The management service's core. Definitions live in the store and in memory; a
 * change reaches the store (with its event, in one transaction) before memory, so a
 * crash never leaves vmmsd believing something the disk does not say.
 *
 * A running VM is a worker process (vmwp) in its own session: it survives a vmmsd
 * crash, and a restarted vmmsd attaches to it again through its control socket. The
 * store keeps the worker's pid and the VM's state so the new vmmsd knows which VMs to
 * look for; one it cannot reach is recorded Off with an event saying so. */
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmms-manager.h"
#include "vmms-memory.h"

#define HVD_START_TIMEOUT_US (10 * G_USEC_PER_SEC)
#define KILL_GRACE_MS 10000 /* after a stop's own timeout, before SIGKILL */

typedef struct Watch {
        VmmsEventFn fn;
        void *userdata;
} Watch;

struct VmmsManager {
        VmmsConfig config;
        VmmsStore *store;
        GPtrArray *vms;
        GHashTable *by_id;   /* lower-case UUID -> VmmsVm* */
        GHashTable *by_name; /* case-folded name -> VmmsVm* */
        HvClient *hv;
        Vmms__Hv__Reply *counters_prev;
        Vmms__Hv__Reply *counters_cur;
        guint tick_source;
        GList *watches;
        VmmsVmReplyFn vm_reply;
        VmmsMemory *memory;
        uint64_t next_balancer_id;
};

static int64_t now_ms(void)
{
        return g_get_real_time() / 1000;
}

void vmms_config_clear(VmmsConfig *config)
{
        g_free(config->state_dir);
        g_free(config->runtime_dir);
        g_free(config->hvd_socket);
        g_free(config->hvd_path);
        g_free(config->vmwp_path);
        g_free(config->guest_path);
        memset(config, 0, sizeof(*config));
}

static void vm_free(VmmsVm *vm)
{
        if (!vm)
                return;
        if (vm->kill_timer)
                g_source_remove(vm->kill_timer);
        vmms_worker_free(vm->worker);
        vmms_vm_definition_clear(&vm->def);
        g_free(vm->guest_stop_reason);
        g_free(vm);
}

static char *worker_path(VmmsManager *m, const VmmsVm *vm, const char *suffix)
{
        g_autofree char *name = g_strconcat(vm->def.id, suffix, NULL);

        return g_build_filename(m->config.runtime_dir, "workers", name, NULL);
}

static char *log_path(VmmsManager *m, const VmmsVm *vm, const char *suffix)
{
        g_autofree char *name = g_strconcat(vm->def.id, suffix, NULL);

        return g_build_filename(m->config.state_dir, "logs", name, NULL);
}

/* hvd accepts [A-Za-z0-9-_.] names; the VM's UUID keeps partitions apart. */
char *vmms_vm_partition_name(const VmmsVm *vm)
{
        GString *name = g_string_new(NULL);

        for (const char *c = vm->def.name; *c && name->len < 40; c++)
                g_string_append_c(name, g_ascii_isalnum(*c) || strchr("-_.", *c) ? *c : '_');
        g_string_append_printf(name, "-%.8s", vm->def.id);
        return g_string_free(name, FALSE);
}

/* ---- Events ---- */

static void notify(VmmsManager *m, const VmmsEventRecord *event)
{
        for (GList *l = m->watches; l;) {
                Watch *w = l->data;

                l = l->next; /* a watcher may unsubscribe from its callback */
                w->fn(event, w->userdata);
        }
}

void *vmms_manager_watch(VmmsManager *m, VmmsEventFn fn, void *userdata)
{
        Watch *w = g_new0(Watch, 1);

        w->fn = fn;
        w->userdata = userdata;
        m->watches = g_list_append(m->watches, w);
        return w;
}

void vmms_manager_unwatch(VmmsManager *m, void *watch)
{
        m->watches = g_list_remove(m->watches, watch);
        g_free(watch);
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
        r = vmms_store_vm_update(vm->manager->store, &vm->def, &event);
        if (r < 0) {
                vmms_error_set(error, VMMS_ERROR_INTERNAL, "cannot save VM '%s': %s", vm->def.name,
                               g_strerror(-r));
                return r;
        }
        notify(vm->manager, &event);
        return 0;
}

/* A state change from the workers' side, which has no caller to tell: logged if the
 * store refuses it (the next change or a restart reconciles). */
static void set_state(VmmsVm *vm, VmmsVmState state, const char *kind, const char *message)
{
        VmmsError error = {0};

        vm->def.state = state;
        if (state == VMMS_VM_OFF) {
                vm->def.worker_pid = 0;
                vm->def.started_unix_ms = 0;
        }
        if (vmms_vm_persist(vm, kind, &error, "%s", message) < 0) {
                g_warning("%s", error.message);
                vmms_error_clear(&error);
        }
}

static void job_end(VmmsVm *vm)
{
        VmmsCall *call = vm->job_call;

        vm->job = NULL;
        vm->job_call = NULL;
        if (call)
                vm->manager->vm_reply(vm, call);
}

static void job_fail(VmmsVm *vm, VmmsErrorCode code, const char *message)
{
        VmmsCall *call = vm->job_call;

        vm->job = NULL;
        vm->job_call = NULL;
        if (call)
                vmms_call_fail(call, code, "%s", message);
}

bool vmms_vm_check_idle(VmmsVm *vm, VmmsError *error)
{
        if (!vm->job)
                return true;
        vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION, "VM '%s' is busy: %s is in progress",
                       vm->def.name, vm->job);
        return false;
}

static bool job_begin(VmmsVm *vm, const char *job, VmmsCall *call)
{
        VmmsError error = {0};

        if (!vmms_vm_check_idle(vm, &error)) {
                vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return false;
        }
        vm->job = job;
        vm->job_call = call;
        return true;
}

/* ---- Workers ---- */

static void on_worker_hello(VmmsWorker *w, const Vmms__Worker__Hello *hello, void *userdata)
{
        VmmsVm *vm = userdata;

        (void)w;
        if (g_strcmp0(hello->vm_id, vm->def.id) != 0) {
                g_warning("worker at %d says it runs VM %s, expected %s; ignoring it", hello->pid,
                          hello->vm_id, vm->def.id);
                return;
        }
        vm->partition_id = hello->partition_id;
        vm->def.worker_pid = hello->pid;
        vm->def.started_unix_ms = hello->started_unix_ms;
        if (vm->def.state == VMMS_VM_STARTING) {
                set_state(vm, VMMS_VM_RUNNING, "state", "started");
                job_end(vm);
        } else if (vm->def.state == VMMS_VM_RUNNING && hello->paused) {
                set_state(vm, VMMS_VM_PAUSED, "state", "re-attached to its worker: paused");
        } else if (vm->def.state == VMMS_VM_PAUSED && !hello->paused) {
                set_state(vm, VMMS_VM_RUNNING, "state", "re-attached to its worker: running");
        }
}

static void on_guest_stopped(VmmsWorker *w, const char *reason, bool crashed, void *userdata)
{
        VmmsVm *vm = userdata;

        (void)w;
        g_free(vm->guest_stop_reason);
        vm->guest_stop_reason = g_strdup(reason);
        vm->guest_crashed = crashed;
}

/* From the worker's exit code and last words: why a start failed. */
static VmmsErrorCode start_failure_code(int exit_code)
{
        switch (exit_code) {
        case 4:
                return VMMS_ERROR_RESOURCE_EXHAUSTED; /* the pool or the reservations cannot cover it */
        case 1:
                return VMMS_ERROR_FAILED_PRECONDITION;
        default:
                return VMMS_ERROR_INTERNAL;
        }
}

static char *worker_last_words(VmmsVm *vm)
{
        g_autofree char *line = vmms_worker_last_log_line(vm->worker);
        const char *text = line;

        if (!line)
                return NULL;
        /* "vmwp: <partition>: <reason>" -> "<reason>" */
        if (g_str_has_prefix(text, "vmwp: ")) {
                const char *colon = strstr(text + 6, ": ");

                text = colon ? colon + 2 : text + 6;
        }
        return g_strdup(text);
}

static void on_worker_exited(VmmsWorker *w, const char *why, int exit_code, void *userdata)
{
        VmmsVm *vm = userdata;
        VmmsVmState was = vm->def.state;
        g_autofree char *last = worker_last_words(vm);
        g_autofree char *message = NULL;

        (void)w;
        if (vm->kill_timer) {
                g_source_remove(vm->kill_timer);
                vm->kill_timer = 0;
        }
        if (was == VMMS_VM_STARTING) {
                message = g_strdup_printf("failed to start: %s", last ? last : why);
                set_state(vm, VMMS_VM_OFF, "error", message);
                job_fail(vm, start_failure_code(exit_code), message);
        } else if (was == VMMS_VM_STOPPING) {
                message = g_strdup_printf("stopped (%s)",
                                          vm->guest_stop_reason ? "the guest shut down" : "turned off");
                set_state(vm, VMMS_VM_OFF, "state", message);
                job_end(vm);
        } else if (vm->guest_stop_reason) {
                message =
                        g_strdup_printf("the guest %s: %s", vm->guest_crashed ? "crashed" : "stopped itself",
                                        vm->guest_stop_reason);
                set_state(vm, VMMS_VM_OFF, vm->guest_crashed ? "error" : "state", message);
                job_fail(vm, VMMS_ERROR_FAILED_PRECONDITION, message);
        } else {
                message = g_strdup_printf("%s%s%s", why, last ? ": " : "", last ? last : "");
                set_state(vm, VMMS_VM_OFF, "worker-exit", message);
                job_fail(vm, VMMS_ERROR_UNAVAILABLE, message);
        }
        g_clear_pointer(&vm->guest_stop_reason, g_free);
        vm->memory = (VmmsMemoryStatus){0};
        vm->partition_id = 0;
        vm->cpu_usage_pct = 0;
        vm->assigned_bytes = vm->resident_bytes = 0;
        g_clear_pointer(&vm->worker, vmms_worker_free);
}

static void on_memory_status(VmmsWorker *w, const Vmms__Worker__MemoryStatus *s, void *userdata)
{
        VmmsVm *vm = userdata;

        (void)w;
        vm->memory = (VmmsMemoryStatus){
                .reporting = s->reporting,
                .received_ns = (uint64_t)g_get_monotonic_time() * 1000,
                .committed_bytes = s->committed_bytes,
                .visible_bytes = s->visible_bytes,
                .assigned_bytes = s->assigned_bytes,
                .ballooned_bytes = s->ballooned_bytes,
                .pending_remove_bytes = s->pending_remove_bytes,
                .resident_bytes = s->resident_bytes,
                .page_in_total = s->page_in_total,
                .page_out_total = s->page_out_total,
        };
}

static const VmmsWorkerCallbacks worker_callbacks = {
        .hello = on_worker_hello,
        .guest_stopped = on_guest_stopped,
        .memory_status = on_memory_status,
        .exited = on_worker_exited,
};

/* An event that changes no definition (e.g. a memory move). */
static void record_event(VmmsVm *vm, const char *kind, const char *message)
{
        VmmsEventRecord event = event_for(vm, kind, (char *)message);
        int r = vmms_store_event_append(vm->manager->store, &event);

        if (r < 0)
                g_warning("VM '%s': cannot record an event: %s", vm->def.name, g_strerror(-r));
        else
                notify(vm->manager, &event);
}

static void on_memory_adjust_reply(int error, const char *message, void *userdata)
{
        char *name = userdata;

        if (error < 0 && error != -ECONNRESET)
                g_warning("VM '%s': the worker refused a memory change: %s", name, message);
        g_free(name);
}

void vmms_vm_adjust_memory(VmmsVm *vm, int64_t delta_bytes, const char *reason)
{
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__MemoryAdjust body = VMMS__WORKER__MEMORY_ADJUST__INIT;
        g_autofree char *message = NULL;

        if (!vm->worker)
                return;
        body.delta_bytes = delta_bytes;
        body.reason = (char *)reason;
        req.body_case = VMMS__WORKER__REQUEST__BODY_MEMORY_ADJUST;
        req.memory_adjust = &body;
        vmms_worker_request(vm->worker, &req, on_memory_adjust_reply, g_strdup(vm->def.name));
        message = g_strdup_printf("%s %" G_GINT64_FORMAT " MiB: %s", delta_bytes > 0 ? "adding" : "removing",
                                  (delta_bytes > 0 ? delta_bytes : -delta_bytes) >> 20, reason);
        record_event(vm, "memory", message);
}

VmmsMemory *vmms_manager_memory(VmmsManager *m)
{
        return m->memory;
}

void vmms_vm_start(VmmsVm *vm, VmmsCall *call)
{
        VmmsManager *m = vm->manager;
        VmmsError error = {0};
        g_autofree char *control = worker_path(m, vm, ".sock");
        g_autofree char *log = log_path(m, vm, ".worker.log");
        g_autofree char *console = log_path(m, vm, ".console.log");
        g_autofree char *partition = vmms_vm_partition_name(vm);
        g_autofree char *why = NULL;
        VmmsWorkerSpawn spawn = {
                .vmwp_path = m->config.vmwp_path,
                .guest_path = m->config.guest_path,
                .hvd_socket = m->config.hvd_socket,
                .control_socket = control,
                .log_path = log,
                .console_path = console,
                .vm_id = vm->def.id,
                .partition_name = partition,
                .vp_count = vm->def.processor.count,
                .startup_bytes = vm->def.memory.startup_bytes,
                .maximum_bytes = vm->def.memory.dynamic_memory_enabled ? vm->def.memory.maximum_bytes
                                                                       : vm->def.memory.startup_bytes,
                .reserve = vm->def.processor.reserve,
                .maximum = vm->def.processor.maximum,
                .relative_weight = vm->def.processor.relative_weight,
                .workload = vm->def.workload,
                .boot_args = vm->def.boot_args,
        };
        int r;

        if (!vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_START, &error) ||
            !job_begin(vm, "start", call)) {
                if (error.code)
                        vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return;
        }
        vm->def.state = VMMS_VM_STARTING;
        if (vmms_vm_persist(vm, "state", &error, "starting") < 0) {
                vm->def.state = VMMS_VM_OFF;
                vm->job = NULL;
                vm->job_call = NULL;
                vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return;
        }
        r = vmms_worker_spawn(&spawn, &worker_callbacks, vm, &vm->worker, &why);
        if (r < 0) {
                set_state(vm, VMMS_VM_OFF, "error", why);
                job_fail(vm, VMMS_ERROR_INTERNAL, why);
        }
}

static gboolean on_kill_timer(gpointer userdata)
{
        VmmsVm *vm = userdata;

        vm->kill_timer = 0;
        g_warning("VM '%s': its worker did not stop in time; killing it", vm->def.name);
        if (vm->worker)
                vmms_worker_kill(vm->worker);
        return G_SOURCE_REMOVE;
}

static void on_shutdown_reply(int error, const char *message, void *userdata)
{
        VmmsVm *vm = userdata;

        /* Success: the worker exits when the guest has stopped or the timeout hits. */
        if (error < 0 && error != -ECONNRESET && vm->worker) {
                g_warning("VM '%s': the worker refused to stop (%s); killing it", vm->def.name, message);
                vmms_worker_kill(vm->worker);
        }
}

void vmms_vm_stop(VmmsVm *vm, bool turn_off, bool force, VmmsCall *call)
{
        VmmsManager *m = vm->manager;
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__Shutdown shutdown = VMMS__WORKER__SHUTDOWN__INIT;
        VmmsError error = {0};
        VmmsVmState was = vm->def.state;

        if (!vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_STOP, &error) ||
            !job_begin(vm, "stop", call)) {
                if (error.code)
                        vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return;
        }
        vm->def.state = VMMS_VM_STOPPING;
        if (vmms_vm_persist(vm, "state", &error, turn_off ? "turning off" : "shutting down") < 0) {
                vm->def.state = was;
                vm->job = NULL;
                vm->job_call = NULL;
                vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return;
        }
        shutdown.turn_off = turn_off;
        shutdown.timeout_ms = force ? m->config.force_timeout_ms : m->config.stop_timeout_ms;
        req.body_case = VMMS__WORKER__REQUEST__BODY_SHUTDOWN;
        req.shutdown = &shutdown;
        vm->kill_timer = g_timeout_add(shutdown.timeout_ms + KILL_GRACE_MS, on_kill_timer, vm);
        if (vm->worker)
                vmms_worker_request(vm->worker, &req, on_shutdown_reply, vm);
}

typedef struct WorkerJob {
        VmmsVm *vm;
        VmmsVmState state_after; /* VMMS_VM_STATE_COUNT: unchanged */
        VmmsProcessorSettings processor;
        bool set_processor;
} WorkerJob;

static void on_worker_job_reply(int error, const char *message, void *userdata)
{
        g_autofree WorkerJob *job = userdata;
        VmmsVm *vm = job->vm;
        VmmsError perr = {0};

        if (error < 0) {
                VmmsErrorCode code = error == -ENOSPC || error == -ENOMEM ? VMMS_ERROR_RESOURCE_EXHAUSTED
                                     : error == -EINVAL                   ? VMMS_ERROR_INVALID_ARGUMENT
                                     : error == -ECONNRESET || error == -ENOTCONN
                                             ? VMMS_ERROR_UNAVAILABLE
                                             : VMMS_ERROR_FAILED_PRECONDITION;
                g_autofree char *text = g_strdup_printf("VM '%s': %s", vm->def.name,
                                                        message && *message ? message : g_strerror(-error));

                job_fail(vm, code, text);
                return;
        }
        if (job->set_processor) {
                vm->def.processor = job->processor;
                if (vmms_vm_persist(vm, "settings", &perr,
                                    "processor: Reserve %u, Maximum %u, RelativeWeight %u (applied live)",
                                    vm->def.processor.reserve, vm->def.processor.maximum,
                                    vm->def.processor.relative_weight) < 0) {
                        job_fail(vm, perr.code, perr.message);
                        vmms_error_clear(&perr);
                        return;
                }
        }
        if (job->state_after != VMMS_VM_STATE_COUNT)
                set_state(vm, job->state_after, "state",
                          job->state_after == VMMS_VM_PAUSED ? "paused" : "resumed");
        job_end(vm);
}

static void worker_job(VmmsVm *vm, const char *name, Vmms__Worker__Request *req, WorkerJob *job,
                       VmmsCall *call)
{
        if (!job_begin(vm, name, call)) {
                g_free(job);
                return;
        }
        if (!vm->worker) {
                g_free(job);
                job_fail(vm, VMMS_ERROR_UNAVAILABLE, "the VM's worker is not reachable");
                return;
        }
        vmms_worker_request(vm->worker, req, on_worker_job_reply, job);
}

void vmms_vm_pause(VmmsVm *vm, bool paused, VmmsCall *call)
{
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__Pause pause = VMMS__WORKER__PAUSE__INIT;
        Vmms__Worker__Resume resume = VMMS__WORKER__RESUME__INIT;
        VmmsError error = {0};
        WorkerJob *job;

        if (!vmms_vm_action_allowed(vm->def.name, vm->def.state,
                                    paused ? VMMS_ACTION_PAUSE : VMMS_ACTION_RESUME, &error)) {
                vmms_call_fail_with(call, &error);
                vmms_error_clear(&error);
                return;
        }
        if (paused) {
                req.body_case = VMMS__WORKER__REQUEST__BODY_PAUSE;
                req.pause = &pause;
        } else {
                req.body_case = VMMS__WORKER__REQUEST__BODY_RESUME;
                req.resume = &resume;
        }
        job = g_new0(WorkerJob, 1);
        job->vm = vm;
        job->state_after = paused ? VMMS_VM_PAUSED : VMMS_VM_RUNNING;
        worker_job(vm, paused ? "pause" : "resume", &req, job, call);
}

/* Live processor settings go to the worker, then hvd; the store follows hvd's yes. */
void vmms_vm_set_processor(VmmsVm *vm, const VmmsProcessorSettings *p, VmmsCall *call)
{
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__SetProcessor body = VMMS__WORKER__SET_PROCESSOR__INIT;
        WorkerJob *job = g_new0(WorkerJob, 1);

        body.reserve = p->reserve;
        body.maximum = p->maximum;
        body.relative_weight = p->relative_weight;
        req.body_case = VMMS__WORKER__REQUEST__BODY_SET_PROCESSOR;
        req.set_processor = &body;
        job->vm = vm;
        job->state_after = VMMS_VM_STATE_COUNT;
        job->processor = *p;
        job->set_processor = true;
        worker_job(vm, "processor settings", &req, job, call);
}

void vmms_manager_set_vm_reply(VmmsManager *m, VmmsVmReplyFn fn)
{
        m->vm_reply = fn;
}

/* ---- Definitions ---- */

static void index_vm(VmmsManager *m, VmmsVm *vm)
{
        g_hash_table_insert(m->by_id, g_ascii_strdown(vm->def.id, -1), vm);
        g_hash_table_insert(m->by_name, g_utf8_casefold(vm->def.name, -1), vm);
}

static void unindex_vm(VmmsManager *m, VmmsVm *vm)
{
        g_autofree char *id = g_ascii_strdown(vm->def.id, -1);
        g_autofree char *name = g_utf8_casefold(vm->def.name, -1);

        g_hash_table_remove(m->by_id, id);
        g_hash_table_remove(m->by_name, name);
}

int vmms_manager_vm_add(VmmsManager *m, const VmmsVmDefinition *def, VmmsVm **ret, VmmsError *error)
{
        VmmsVm *vm;
        VmmsEventRecord event;
        int r;

        if (vmms_manager_lookup(m, def->name, NULL)) {
                vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "a VM named '%s' already exists", def->name);
                return -EEXIST;
        }
        vm = g_new0(VmmsVm, 1);
        vm->manager = m;
        vm->balancer_id = ++m->next_balancer_id;
        vmms_vm_definition_copy(&vm->def, def);
        event = event_for(vm, "created", "created");
        r = vmms_store_vm_insert(m->store, &vm->def, &event);
        if (r < 0) {
                if (r == -EEXIST)
                        vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "a VM named '%s' already exists",
                                       def->name);
                else
                        vmms_error_set(error, VMMS_ERROR_INTERNAL, "cannot save VM '%s': %s", def->name,
                                       g_strerror(-r));
                vm_free(vm);
                return r;
        }
        g_ptr_array_add(m->vms, vm);
        index_vm(m, vm);
        notify(m, &event);
        *ret = vm;
        return 0;
}

int vmms_manager_vm_remove(VmmsManager *m, VmmsVm *vm, VmmsError *error)
{
        VmmsEventRecord event = event_for(vm, "removed", "removed");
        int r;

        if (!vmms_vm_action_allowed(vm->def.name, vm->def.state, VMMS_ACTION_REMOVE, error))
                return -EBUSY;
        if (!vmms_vm_check_idle(vm, error))
                return -EBUSY;
        r = vmms_store_vm_remove(m->store, vm->def.id, &event);
        if (r < 0) {
                vmms_error_set(error, VMMS_ERROR_INTERNAL, "cannot remove VM '%s': %s", vm->def.name,
                               g_strerror(-r));
                return r;
        }
        notify(m, &event);
        unindex_vm(m, vm);
        g_ptr_array_remove(m->vms, vm);
        return 0;
}

VmmsVm *vmms_manager_lookup(VmmsManager *m, const char *ref, VmmsError *error)
{
        VmmsVm *vm = NULL;

        if (ref && *ref && g_utf8_validate(ref, -1, NULL)) {
                g_autofree char *id = g_ascii_strdown(ref, -1);
                g_autofree char *name = g_utf8_casefold(ref, -1);

                vm = g_hash_table_lookup(m->by_id, id);
                if (!vm)
                        vm = g_hash_table_lookup(m->by_name, name);
                if (vm)
                        return vm;
        }
        vmms_error_set(error, VMMS_ERROR_NOT_FOUND, "no VM named or with id '%s'", ref ? ref : "");
        return NULL;
}

GPtrArray *vmms_manager_vms(VmmsManager *m)
{
        return m->vms;
}

const VmmsConfig *vmms_manager_config(VmmsManager *m)
{
        return &m->config;
}

VmmsStore *vmms_manager_store(VmmsManager *m)
{
        return m->store;
}

/* ---- hvd and counters ---- */

static void hvd_child_setup(gpointer userdata)
{
        (void)userdata;
        setsid();
}

/* Connects to hvd, starting it first if it is not running and we may. */
static int hvd_connect(VmmsManager *m, char **ret_error)
{
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *log = NULL;
        int64_t deadline;
        GPid pid;
        int log_fd, r;

        r = hv_client_connect(m->config.hvd_socket, &m->hv);
        if (r >= 0 || !m->config.spawn_hvd) {
                if (r < 0)
                        *ret_error = g_strdup_printf("cannot connect to hvd at %s: %s", m->config.hvd_socket,
                                                     g_strerror(-r));
                return r;
        }
        argv = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(argv, g_strdup(m->config.hvd_path));
        g_ptr_array_add(argv, g_strdup_printf("--socket=%s", m->config.hvd_socket));
        if (m->config.hvd_memory)
                g_ptr_array_add(argv, g_strdup_printf("--memory=%" G_GUINT64_FORMAT, m->config.hvd_memory));
        if (m->config.hvd_lps)
                g_ptr_array_add(argv, g_strdup_printf("--lps=%u", m->config.hvd_lps));
        g_ptr_array_add(argv, NULL);
        log = g_build_filename(m->config.state_dir, "logs", "hvd.log", NULL);
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (!g_spawn_async_with_fds(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, hvd_child_setup, NULL,
                                    &pid, -1, log_fd, log_fd, &error)) {
                if (log_fd >= 0)
                        close(log_fd);
                *ret_error = g_strdup_printf("cannot start hvd (%s): %s", m->config.hvd_path, error->message);
                return -ENOEXEC;
        }
        if (log_fd >= 0)
                close(log_fd);
        g_message("started hvd (pid %d) on %s", pid, m->config.hvd_socket);
        deadline = g_get_monotonic_time() + HVD_START_TIMEOUT_US;
        while ((r = hv_client_connect(m->config.hvd_socket, &m->hv)) < 0 &&
               g_get_monotonic_time() < deadline) {
                if (waitpid(pid, NULL, WNOHANG) == pid) {
                        *ret_error = g_strdup_printf("hvd exited at once; see %s", log);
                        return -ECHILD;
                }
                g_usleep(20000);
        }
        if (r < 0)
                *ret_error =
                        g_strdup_printf("hvd did not open %s in time; see %s", m->config.hvd_socket, log);
        return r;
}

static void update_vm_figures(VmmsManager *m)
{
        const Vmms__Hv__Counters *prev, *cur;

        if (!vmms_manager_counters(m, &prev, &cur))
                return;
        for (guint i = 0; i < m->vms->len; i++) {
                VmmsVm *vm = m->vms->pdata[i];
                const Vmms__Hv__PartitionCounters *pc = NULL, *pp = NULL;
                uint64_t run = 0, dt = cur->time_ns - prev->time_ns;

                for (size_t k = 0; vm->partition_id && k < cur->n_partitions; k++)
                        if (cur->partitions[k]->partition_id == vm->partition_id)
                                pc = cur->partitions[k];
                for (size_t k = 0; pc && k < prev->n_partitions; k++)
                        if (prev->partitions[k]->partition_id == vm->partition_id)
                                pp = prev->partitions[k];
                if (!pc) {
                        vm->cpu_usage_pct = 0;
                        vm->assigned_bytes = vm->resident_bytes = 0;
                        continue;
                }
                for (size_t v = 0; pp && v < pc->n_vps && v < pp->n_vps; v++)
                        run += pc->vps[v]->run_ns - pp->vps[v]->run_ns;
                vm->cpu_usage_pct =
                        dt && cur->n_lps ? 100.0 * (double)run / ((double)dt * (double)cur->n_lps) : 0;
                vm->assigned_bytes = pc->assigned_bytes;
                vm->resident_bytes = pc->resident_bytes;
        }
}

static gboolean on_tick(gpointer userdata)
{
        VmmsManager *m = userdata;
        Vmms__Hv__Reply *sample = NULL;
        g_autofree char *why = NULL;

        if (!m->hv && hvd_connect(m, &why) < 0) {
                g_warning("%s", why);
                return G_SOURCE_CONTINUE;
        }
        if (hv_client_counters_get(m->hv, &sample) < 0) {
                g_warning("hvd: %s; reconnecting", hv_client_last_error(m->hv));
                g_clear_pointer(&m->hv, hv_client_free);
                return G_SOURCE_CONTINUE;
        }
        hv_client_reply_free(m->counters_prev);
        m->counters_prev = m->counters_cur;
        m->counters_cur = sample;
        update_vm_figures(m);
        vmms_memory_tick(m->memory, m, sample->counters, (uint64_t)g_get_monotonic_time() * 1000);
        return G_SOURCE_CONTINUE;
}

bool vmms_manager_counters(VmmsManager *m, const Vmms__Hv__Counters **ret_prev,
                           const Vmms__Hv__Counters **ret_cur)
{
        if (!m->counters_prev || !m->counters_cur)
                return false;
        *ret_prev = m->counters_prev->counters;
        *ret_cur = m->counters_cur->counters;
        return true;
}

/* ---- Start-up ---- */

/* A VM the store says is running: find its worker again, or record that it is gone. */
static void reattach(VmmsManager *m, VmmsVm *vm)
{
        g_autofree char *control = worker_path(m, vm, ".sock");
        int r;

        r = vmms_worker_attach(control, vm->def.worker_pid, &worker_callbacks, vm, &vm->worker);
        if (r < 0) {
                set_state(vm, VMMS_VM_OFF, "worker-exit", "its worker was gone when vmmsd started");
                return;
        }
        g_message("VM '%s': re-attached to its worker (pid %d)", vm->def.name, vm->def.worker_pid);
        if (vm->def.state == VMMS_VM_STOPPING) {
                /* The stop was cut short by our restart: finish it. */
                Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
                Vmms__Worker__Shutdown shutdown = VMMS__WORKER__SHUTDOWN__INIT;

                shutdown.turn_off = true;
                req.body_case = VMMS__WORKER__REQUEST__BODY_SHUTDOWN;
                req.shutdown = &shutdown;
                vm->job = "stop";
                vmms_worker_request(vm->worker, &req, on_shutdown_reply, vm);
        } else if (vm->def.state == VMMS_VM_STARTING) {
                vm->job = "start"; /* its Hello finishes the start */
        }
}

static int make_dirs(const VmmsConfig *config, char **ret_error)
{
        g_autofree char *logs = g_build_filename(config->state_dir, "logs", NULL);
        g_autofree char *workers = g_build_filename(config->runtime_dir, "workers", NULL);
        const char *dirs[] = {config->state_dir, logs, config->runtime_dir, workers};

        for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++)
                if (g_mkdir_with_parents(dirs[i], 0750) < 0) {
                        int r = -errno;

                        *ret_error = g_strdup_printf("cannot create %s: %s", dirs[i], g_strerror(-r));
                        return r;
                }
        return 0;
}

int vmms_manager_new(const VmmsConfig *config, VmmsManager **ret, char **ret_error)
{
        g_autoptr(VmmsManager) m = g_new0(VmmsManager, 1);
        g_autoptr(GPtrArray) defs = NULL;
        g_autofree char *db = NULL;
        int r;

        m->config = (VmmsConfig){
                .state_dir = g_strdup(config->state_dir),
                .runtime_dir = g_strdup(config->runtime_dir),
                .hvd_socket = g_strdup(config->hvd_socket),
                .hvd_path = g_strdup(config->hvd_path),
                .vmwp_path = g_strdup(config->vmwp_path),
                .guest_path = g_strdup(config->guest_path),
                .hvd_memory = config->hvd_memory,
                .hvd_lps = config->hvd_lps,
                .spawn_hvd = config->spawn_hvd,
                .stop_timeout_ms = config->stop_timeout_ms,
                .force_timeout_ms = config->force_timeout_ms,
                .memory_reserve = config->memory_reserve,
        };
        m->vms = g_ptr_array_new_with_free_func((GDestroyNotify)vm_free);
        m->by_id = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->by_name = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        r = vmms_memory_new(m->config.memory_reserve, &m->memory);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot start the memory balancer: %s", g_strerror(-r));
                return r;
        }
        r = make_dirs(&m->config, ret_error);
        if (r < 0)
                return r;
        db = g_build_filename(m->config.state_dir, "vmms.db", NULL);
        r = vmms_store_open(db, &m->store, ret_error);
        if (r < 0)
                return r;
        r = hvd_connect(m, ret_error);
        if (r < 0)
                return r;
        r = vmms_store_vm_list(m->store, &defs);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot read the VM definitions: %s", g_strerror(-r));
                return r;
        }
        for (guint i = 0; i < defs->len; i++) {
                VmmsVm *vm = g_new0(VmmsVm, 1);

                vm->manager = m;
                vm->balancer_id = ++m->next_balancer_id;
                vmms_vm_definition_copy(&vm->def, defs->pdata[i]);
                g_ptr_array_add(m->vms, vm);
                index_vm(m, vm);
                if (vm->def.state != VMMS_VM_OFF && vm->def.state != VMMS_VM_SAVED)
                        reattach(m, vm);
        }
        m->tick_source = g_timeout_add_seconds(1, on_tick, m);
        on_tick(m);
        *ret = g_steal_pointer(&m);
        return 0;
}

/* Workers keep running: a vmmsd that stops (or restarts) leaves the VMs alone. */
void vmms_manager_free(VmmsManager *m)
{
        if (!m)
                return;
        if (m->tick_source)
                g_source_remove(m->tick_source);
        g_list_free_full(m->watches, g_free);
        if (m->by_id)
                g_hash_table_unref(m->by_id);
        if (m->by_name)
                g_hash_table_unref(m->by_name);
        if (m->vms)
                g_ptr_array_unref(m->vms);
        vmms_memory_free(m->memory);
        hv_client_reply_free(m->counters_prev);
        hv_client_reply_free(m->counters_cur);
        hv_client_free(m->hv);
        vmms_store_free(m->store);
        vmms_config_clear(&m->config);
        g_free(m);
}

/* An event about the host rather than one VM (e.g. a refused call): the store keys
 * events by VM, so it has an empty vm_id and vm_name. */
void vmms_manager_record_host_event(VmmsManager *m, const char *kind, const char *message)
{
        VmmsEventRecord event = {
                .time_unix_ms = now_ms(),
                .vm_id = (char *)"",
                .vm_name = (char *)"",
                .kind = (char *)kind,
                .state = VMMS_VM_OFF,
                .message = (char *)message,
        };
        int r = vmms_store_event_append(m->store, &event);

        if (r < 0)
                g_warning("cannot record a %s event: %s", kind, g_strerror(-r));
        else
                notify(m, &event);
}
