/* The bundled engine: the VM runs in one vmwp worker process that talks to hvd.
 *
 * A worker runs in its own session, so it outlives a vmmsd crash; the store keeps
 * its pid and the new vmmsd attaches to it through its control socket
 * (RUNTIME/workers/<id>.sock). Before a start the engine probes hvd (vmms-hvd.c): a
 * hypervisor that does not answer fails the start at once with Unavailable instead
 * of leaving a worker waiting on it. Each VM's paging disk (a sparse file of its
 * PagingBytes in paging_dir) must fit in the free space there when it starts, or the
 * start is refused naming both figures. A worker that is not up within start_timeout_ms,
 * or not gone within a stop's timeout plus KILL_GRACE_MS, is killed. Save-VM is the
 * worker's Save (the VM's whole state in one checksummed file), and a start with
 * vm->restore_path continues from such a file (vmwp --restore; with vm->restore_paused,
 * --restore-paused: the guest does not run until a Resume, as a moved VM waits for
 * its source's commit). Live migration is not
 * implemented by this engine yet and is refused by name. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/statvfs.h>

#include "vmms-engine.h"
#include "vmms-hvd.h"
#include "vmms-worker.h"

#define KILL_GRACE_MS 10000 /* after a stop's own timeout, before SIGKILL */

typedef struct Bundled {
        VmmsEngine base;
        VmmsBundledConfig config;
        VmmsHvd *hvd;
} Bundled;

/* The engine's state for one VM while it runs. */
typedef struct BundledVm {
        VmmsWorker *worker;
        guint kill_timer;
        guint start_timer;
        bool probing;  /* a start waits for hvd's answer */
        char *failure; /* why the engine killed the worker itself */
        char *guest_reason;
        bool guest_crashed;
        VmmsEngineDoneFn done; /* the pause or processor request in flight */
} BundledVm;

static Bundled *bundled(VmmsEngine *e)
{
        return (Bundled *)e;
}

static BundledVm *vm_data(VmmsVm *vm)
{
        if (!vm->engine_data)
                vm->engine_data = g_new0(BundledVm, 1);
        return vm->engine_data;
}

static void clear_timer(guint *timer)
{
        if (*timer)
                g_source_remove(*timer);
        *timer = 0;
}

static void release(VmmsEngine *e, VmmsVm *vm)
{
        BundledVm *b = vm->engine_data;

        (void)e;
        if (!b)
                return;
        clear_timer(&b->kill_timer);
        clear_timer(&b->start_timer);
        vmms_worker_free(b->worker);
        g_free(b->guest_reason);
        g_free(b->failure);
        g_free(b);
        vm->engine_data = NULL;
}

static char *file_for(const char *dir, const char *sub, const VmmsVm *vm, const char *suffix)
{
        g_autofree char *name = g_strconcat(vm->def.id, suffix, NULL);

        return g_build_filename(dir, sub, name, NULL);
}

/* ---- The worker's reports ---- */

static void on_worker_hello(VmmsWorker *w, const Vmms__Worker__Hello *hello, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;
        VmmsEngineRunning info = {
                .paused = hello->paused,
                .pid = hello->pid,
                .started_unix_ms = hello->started_unix_ms,
                .partition_id = hello->partition_id,
                .migration = (VmmsEngineMigrationPhase)hello->migration,
        };

        (void)w;
        if (g_strcmp0(hello->vm_id, vm->def.id) != 0) {
                g_warning("worker at %d says it runs VM %s, expected %s; ignoring it", hello->pid,
                          hello->vm_id, vm->def.id);
                return;
        }
        clear_timer(&b->start_timer);
        vm->engine->callbacks->running(vm, &info);
}

static void on_guest_stopped(VmmsWorker *w, const char *reason, bool crashed, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;

        (void)w;
        g_free(b->guest_reason);
        b->guest_reason = g_strdup(reason);
        b->guest_crashed = crashed;
}

static void on_memory_status(VmmsWorker *w, const Vmms__Worker__MemoryStatus *s, void *userdata)
{
        VmmsVm *vm = userdata;
        VmmsMemoryStatus status = {
                .reporting = s->reporting,
                .prompt = s->prompt,
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

        (void)w;
        vm->engine->callbacks->memory_status(vm, &status);
}

/* From the worker's exit code: why a start failed. */
static VmmsErrorCode start_failure_code(int exit_code)
{
        switch (exit_code) {
        case 4:
                return VMMS_ERROR_RESOURCE_EXHAUSTED; /* the pool or the reservations cannot cover it */
        case 1:
        case 3: /* the guest crashed: its image or its boot arguments, not vmmsd */
                return VMMS_ERROR_FAILED_PRECONDITION;
        default:
                return VMMS_ERROR_INTERNAL;
        }
}

/* "vmwp: <partition>: <reason>" -> "<reason>" */
/* A worker killed by a signal wrote nothing about it: its log's last line would be
 * unrelated, so only a worker that exited by itself is read. */
static char *worker_last_words(VmmsWorker *w, int exit_code)
{
        g_autofree char *line = vmms_worker_last_words(w, exit_code >= 0);
        const char *text = line;

        if (!line)
                return NULL;
        if (g_str_has_prefix(text, "vmwp: ")) {
                const char *colon = strstr(text + 6, ": ");

                text = colon ? colon + 2 : text + 6;
        }
        if (g_str_has_prefix(text, "stopped: "))
                text += strlen("stopped: ");
        return g_strdup(text);
}

static void report_exit(VmmsVm *vm, const char *how, const char *last_words, VmmsErrorCode start_error)
{
        BundledVm *b = vm->engine_data;
        g_autofree char *guest_reason = g_steal_pointer(&b->guest_reason);
        VmmsEngineExit exit = {
                .how = how,
                .last_words = last_words,
                .guest_reason = guest_reason,
                .guest_crashed = b->guest_crashed,
                .start_error = start_error,
        };
        VmmsEngineDoneFn done = g_steal_pointer(&b->done);

        release(vm->engine, vm);
        if (done) {
                VmmsError error = {0};

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its worker is gone: %s",
                               vm->def.name, how);
                done(vm, &error);
                vmms_error_clear(&error);
        }
        vm->engine->callbacks->exited(vm, &exit);
}

static void on_worker_exited(VmmsWorker *w, const char *why, int exit_code, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;
        g_autofree char *failure = NULL;
        g_autofree char *last = NULL;

        /* A worker dies with its hypervisor: if hvd has gone, say so (the manager
         * hears it now and marks every VM it ran, this one included). */
        vmms_hvd_check(bundled(vm->engine)->hvd);
        /* hvd's sockets close one by one as it dies: the worker may see it before
         * vmmsd's own connection does. Its word is as good. */
        if (vmms_worker_lost_hypervisor(w) && !vm->exit_reason)
                vmms_vm_host_lost(vm, "the hypervisor exited (the worker lost its connection to it)");
        failure = g_steal_pointer(&b->failure);
        if (!failure)
                last = worker_last_words(w, exit_code);
        report_exit(vm, why, failure ? failure : last,
                    failure ? VMMS_ERROR_UNAVAILABLE : start_failure_code(exit_code));
}

static void on_worker_migration(VmmsWorker *w, const Vmms__Worker__Message *msg, void *userdata)
{
        VmmsVm *vm = userdata;
        VmmsEngineMigration m = {0};

        (void)w;
        switch (msg->body_case) {
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_PROGRESS: {
                const Vmms__Worker__MigrationProgress *p = msg->migration_progress;

                m = (VmmsEngineMigration){.kind = VMMS_ENGINE_MIGRATION_PROGRESS,
                                          .round = p->round,
                                          .ram_bytes = p->ram_bytes,
                                          .bytes_sent = p->bytes_sent,
                                          .bytes_remaining = p->bytes_remaining,
                                          .dirty_bytes_per_s = p->dirty_bytes_per_s,
                                          .bandwidth_bytes_per_s = p->bandwidth_bytes_per_s,
                                          .throttle_percent = p->throttle_percent};
                break;
        }
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_DONE: {
                const Vmms__Worker__MigrationOutDone *d = msg->migration_out_done;

                m = (VmmsEngineMigration){.kind = VMMS_ENGINE_MIGRATION_SENT,
                                          .round = d->rounds,
                                          .bytes_sent = d->bytes_sent,
                                          .throttle_percent = d->max_throttle_percent,
                                          .paused_unix_ns = d->paused_unix_ns};
                break;
        }
        case VMMS__WORKER__MESSAGE__BODY_MIGRATION_OUT_FAILED:
                m = (VmmsEngineMigration){.kind = VMMS_ENGINE_MIGRATION_FAILED,
                                          .reason = msg->migration_out_failed->reason,
                                          .cancelled = msg->migration_out_failed->cancelled};
                break;
        case VMMS__WORKER__MESSAGE__BODY_INCOMING_DONE:
                m = (VmmsEngineMigration){.kind = VMMS_ENGINE_MIGRATION_RECEIVED,
                                          .bytes_sent = msg->incoming_done->bytes_received};
                break;
        default:
                return;
        }
        if (vm->engine->callbacks->migration)
                vm->engine->callbacks->migration(vm, &m);
}

static const VmmsWorkerCallbacks worker_callbacks = {
        .migration = on_worker_migration,
        .hello = on_worker_hello,
        .guest_stopped = on_guest_stopped,
        .memory_status = on_memory_status,
        .exited = on_worker_exited,
};

/* ---- Lifecycle ---- */

static bool available(VmmsEngine *e, char **ret_why)
{
        const char *status = vmms_hvd_status(bundled(e)->hvd);

        if (g_strcmp0(status, "running") == 0)
                return true;
        *ret_why = g_strdup(status);
        return false;
}

static gboolean on_start_timeout(gpointer userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;

        b->start_timer = 0;
        g_warning("VM '%s': its worker did not come up in %u s; killing it", vm->def.name,
                  bundled(vm->engine)->config.start_timeout_ms / 1000);
        g_free(b->failure);
        b->failure = g_strdup_printf("the worker did not come up in %u s (is the hypervisor answering?)",
                                     bundled(vm->engine)->config.start_timeout_ms / 1000);
        vmms_worker_kill(b->worker);
        return G_SOURCE_REMOVE;
}

/* The paging disk is sparse and grows as the guest pages, up to its size: that size
 * must be free now, or the guest would fill the filesystem vmmsd's store may share. */
static bool paging_fits(VmmsVm *vm, const char *dir, uint64_t bytes)
{
        struct statvfs st;
        uint64_t free_bytes;
        g_autofree char *need = NULL, *have = NULL, *message = NULL;

        if (statvfs(dir, &st) < 0)
                return true; /* the worker's own open names the problem */
        free_bytes = (uint64_t)st.f_bavail * st.f_frsize;
        if (free_bytes >= bytes)
                return true;
        need = vmms_format_bytes(bytes);
        have = vmms_format_bytes(free_bytes);
        message = g_strdup_printf("its paging disk needs %s but %s has %s free (lower Set-VMMemory "
                                  "-PagingBytes, or free space there)",
                                  need, dir, have);
        report_exit(vm, message, message, VMMS_ERROR_RESOURCE_EXHAUSTED);
        return false;
}

/* The engine owns a start's incoming stream fd: closed once the worker has it, or the
 * start failed. */
static void drop_incoming(VmmsVm *vm)
{
        if (vm->incoming_fd >= 0)
                close(vm->incoming_fd);
        vm->incoming_fd = -1;
}

static void spawn_worker(VmmsVm *vm)
{
        Bundled *e = bundled(vm->engine);
        BundledVm *b = vm_data(vm);
        g_autofree char *control = file_for(e->config.runtime_dir, "workers", vm, ".sock");
        g_autofree char *log = file_for(e->config.state_dir, "logs", vm, ".worker.log");
        g_autofree char *console = file_for(e->config.state_dir, "logs", vm, ".console.log");
        g_autofree char *partition = vmms_vm_partition_name(vm);
        g_autofree char *paging = file_for(e->config.paging_dir, "", vm, ".paging");
        g_autofree char *why = NULL;
        int r;
        VmmsWorkerSpawn spawn = {
                .vmwp_path = e->config.vmwp_path,
                .guest_path = e->config.guest_path,
                .hvd_socket = vmms_hvd_socket(e->hvd),
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
                .cpu_compatibility = vm->def.processor.compatibility_for_migration,
                .workload = vm->def.workload,
                .boot_args = vm->def.boot_args,
                .paging_file = paging,
                .paging_bytes = vmms_vm_paging_bytes(&vm->def.memory),
                .restore_path = vm->restore_path,
                .restore_paused = vm->restore_paused,
                .incoming_fd = vm->incoming_fd,
        };

        if (!paging_fits(vm, e->config.paging_dir, spawn.paging_bytes)) {
                drop_incoming(vm);
                return;
        }
        r = vmms_worker_spawn(&spawn, &worker_callbacks, vm, &b->worker, &why);
        drop_incoming(vm); /* the worker has its own copy */
        if (r < 0) {
                report_exit(vm, why, NULL, VMMS_ERROR_INTERNAL);
                return;
        }
        /* A worker receiving a live migration is up only once the whole stream is in:
         * the move's own timeouts end a stalled one. */
        if (spawn.incoming_fd < 0)
                b->start_timer = g_timeout_add(e->config.start_timeout_ms, on_start_timeout, vm);
}

static void on_start_probe(const VmmsError *error, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;

        b->probing = false;
        if (error) {
                drop_incoming(vm);
                report_exit(vm, error->message, NULL, error->code);
                return;
        }
        spawn_worker(vm);
}

static void start(VmmsEngine *e, VmmsVm *vm)
{
        BundledVm *b = vm_data(vm);

        b->probing = true;
        vmms_hvd_probe(bundled(e)->hvd, on_start_probe, vm);
}

static int attach(VmmsEngine *e, VmmsVm *vm)
{
        g_autofree char *control = file_for(bundled(e)->config.runtime_dir, "workers", vm, ".sock");
        BundledVm *b = vm_data(vm);
        int r;

        r = vmms_worker_attach(control, vm->def.worker_pid, &worker_callbacks, vm, &b->worker);
        if (r < 0)
                release(e, vm);
        return r;
}

static gboolean on_kill_timer(gpointer userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;

        b->kill_timer = 0;
        g_warning("VM '%s': its worker did not stop in time; killing it", vm->def.name);
        vmms_worker_kill(b->worker);
        return G_SOURCE_REMOVE;
}

static void on_shutdown_reply(int error, const char *message, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;

        /* Success: the worker exits when the guest has stopped or the timeout hits. */
        if (error < 0 && error != -ECONNRESET && b && b->worker) {
                g_warning("VM '%s': the worker refused to stop (%s); killing it", vm->def.name, message);
                vmms_worker_kill(b->worker);
        }
}

static void stop(VmmsEngine *e, VmmsVm *vm, bool turn_off, uint32_t timeout_ms)
{
        BundledVm *b = vm_data(vm);
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__Shutdown shutdown = VMMS__WORKER__SHUTDOWN__INIT;

        (void)e;
        if (!b->worker) {
                report_exit(vm, "its worker was not running", NULL, VMMS_OK);
                return;
        }
        shutdown.turn_off = turn_off;
        shutdown.timeout_ms = timeout_ms;
        req.body_case = VMMS__WORKER__REQUEST__BODY_SHUTDOWN;
        req.shutdown = &shutdown;
        clear_timer(&b->kill_timer);
        b->kill_timer = g_timeout_add(timeout_ms + KILL_GRACE_MS, on_kill_timer, vm);
        vmms_worker_request(b->worker, &req, on_shutdown_reply, vm);
}

static void kill_vm(VmmsEngine *e, VmmsVm *vm)
{
        BundledVm *b = vm->engine_data;

        (void)e;
        if (b && b->worker)
                vmms_worker_kill(b->worker);
        else if (b && b->probing)
                return; /* the probe fails and reports the exit */
}

/* ---- Requests to a running worker ---- */

static void on_worker_reply(int error, const char *message, void *userdata)
{
        VmmsVm *vm = userdata;
        BundledVm *b = vm->engine_data;
        VmmsEngineDoneFn done;
        VmmsError e = {0};

        if (!b || !b->done)
                return; /* the worker's exit already answered */
        done = g_steal_pointer(&b->done);
        if (error < 0) {
                vmms_error_set(&e, vmms_error_code_from_errno(error), "VM '%s': %s", vm->def.name,
                               message && *message ? message : g_strerror(-error));
                if (e.code == VMMS_ERROR_INTERNAL || e.code == VMMS_ERROR_PERMISSION_DENIED)
                        e.code = VMMS_ERROR_FAILED_PRECONDITION;
                done(vm, &e);
                vmms_error_clear(&e);
                return;
        }
        done(vm, NULL);
}

static void request(VmmsVm *vm, Vmms__Worker__Request *req, VmmsEngineDoneFn done)
{
        BundledVm *b = vm->engine_data;

        if (!b || !b->worker || b->done) {
                VmmsError error = {0};

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its worker is not reachable",
                               vm->def.name);
                done(vm, &error);
                vmms_error_clear(&error);
                return;
        }
        b->done = done;
        vmms_worker_request(b->worker, req, on_worker_reply, vm);
}

static void pause_vm(VmmsEngine *e, VmmsVm *vm, bool paused, VmmsEngineDoneFn done)
{
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__Pause pause = VMMS__WORKER__PAUSE__INIT;
        Vmms__Worker__Resume resume = VMMS__WORKER__RESUME__INIT;

        (void)e;
        if (paused) {
                req.body_case = VMMS__WORKER__REQUEST__BODY_PAUSE;
                req.pause = &pause;
        } else {
                req.body_case = VMMS__WORKER__REQUEST__BODY_RESUME;
                req.resume = &resume;
        }
        request(vm, &req, done);
}

static void set_processor(VmmsEngine *e, VmmsVm *vm, const VmmsProcessorSettings *p, VmmsEngineDoneFn done)
{
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__SetProcessor body = VMMS__WORKER__SET_PROCESSOR__INIT;

        (void)e;
        body.reserve = p->reserve;
        body.maximum = p->maximum;
        body.relative_weight = p->relative_weight;
        req.body_case = VMMS__WORKER__REQUEST__BODY_SET_PROCESSOR;
        req.set_processor = &body;
        request(vm, &req, done);
}

static void on_memory_adjust_reply(int error, const char *message, void *userdata)
{
        char *name = userdata;

        if (error < 0 && error != -ECONNRESET)
                g_warning("VM '%s': the worker refused a memory change: %s", name, message);
        g_free(name);
}

static void adjust_memory(VmmsEngine *e, VmmsVm *vm, int64_t delta_bytes, const char *reason)
{
        BundledVm *b = vm->engine_data;
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__MemoryAdjust body = VMMS__WORKER__MEMORY_ADJUST__INIT;

        (void)e;
        if (!b || !b->worker)
                return;
        body.delta_bytes = delta_bytes;
        body.reason = (char *)reason;
        req.body_case = VMMS__WORKER__REQUEST__BODY_MEMORY_ADJUST;
        req.memory_adjust = &body;
        vmms_worker_request(b->worker, &req, on_memory_adjust_reply, g_strdup(vm->def.name));
}

/* CPU use over the last two hvd samples; memory as hvd accounts and measures it. */
static void sample(VmmsEngine *e, VmmsVm *vm, VmmsVmFigures *ret)
{
        const Vmms__Hv__Counters *prev, *cur;
        const Vmms__Hv__PartitionCounters *pc = NULL, *pp = NULL;
        uint64_t run = 0, dt;

        *ret = (VmmsVmFigures){0};
        if (!vm->partition_id || !vmms_hvd_counters(bundled(e)->hvd, &prev, &cur))
                return;
        for (size_t k = 0; k < cur->n_partitions; k++)
                if (cur->partitions[k]->partition_id == vm->partition_id)
                        pc = cur->partitions[k];
        for (size_t k = 0; pc && k < prev->n_partitions; k++)
                if (prev->partitions[k]->partition_id == vm->partition_id)
                        pp = prev->partitions[k];
        if (!pc)
                return;
        dt = cur->time_ns - prev->time_ns;
        for (size_t v = 0; pp && v < pc->n_vps && v < pp->n_vps; v++)
                run += pc->vps[v]->run_ns - pp->vps[v]->run_ns;
        ret->cpu_usage_pct = dt && cur->n_lps ? 100.0 * (double)run / ((double)dt * (double)cur->n_lps) : 0;
        ret->assigned_bytes = pc->assigned_bytes;
        ret->resident_bytes = pc->resident_bytes;
}

typedef struct SaveRequest {
        VmmsVm *vm;
        VmmsEngineSavedFn done;
} SaveRequest;

static void on_save_reply(int error, const char *message, const Vmms__Worker__Reply *reply, void *userdata)
{
        g_autofree SaveRequest *s = userdata;
        VmmsError e = {0};

        if (error < 0) {
                vmms_error_set(
                        &e, error == -ENOSPC ? VMMS_ERROR_RESOURCE_EXHAUSTED : VMMS_ERROR_FAILED_PRECONDITION,
                        "cannot save VM '%s': %s", s->vm->def.name,
                        message && *message ? message : g_strerror(-error));
                s->done(s->vm, &e, 0);
                vmms_error_clear(&e);
                return;
        }
        s->done(s->vm, NULL, reply && reply->saved ? reply->saved->file_bytes : 0);
}

/* The worker pauses the VM, writes path.tmp, syncs and renames it, answers with what
 * it wrote, then destroys the partition and exits, or resumes it with keep_running
 * (worker.proto Save). */
static void save(VmmsEngine *e, VmmsVm *vm, const char *path, bool keep_running, VmmsEngineSavedFn done)
{
        BundledVm *b = vm->engine_data;
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__Save body = VMMS__WORKER__SAVE__INIT;
        SaveRequest *s;

        (void)e;
        if (!b || !b->worker) {
                VmmsError error = {0};

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its worker is not reachable",
                               vm->def.name);
                done(vm, &error, 0);
                vmms_error_clear(&error);
                return;
        }
        s = g_new0(SaveRequest, 1);
        s->vm = vm;
        s->done = done;
        body.path = (char *)path;
        body.keep_running = keep_running;
        req.body_case = VMMS__WORKER__REQUEST__BODY_SAVE;
        req.save = &body;
        vmms_worker_request_full(b->worker, &req, on_save_reply, s);
}

typedef struct MigrateRequest {
        VmmsVm *vm;
        VmmsEngineMigrateFn done;
} MigrateRequest;

static void on_migrate_out_reply(int error, const char *message, const Vmms__Worker__Reply *reply,
                                 void *userdata)
{
        g_autofree MigrateRequest *m = userdata;
        VmmsError e = {0};

        (void)reply;
        if (error < 0) {
                vmms_error_set(&e, error == -EBUSY ? VMMS_ERROR_FAILED_PRECONDITION : VMMS_ERROR_UNAVAILABLE,
                               "cannot migrate VM '%s' live: %s", m->vm->def.name,
                               message && *message ? message : g_strerror(-error));
                m->done(m->vm, &e, error == -EOPNOTSUPP);
                vmms_error_clear(&e);
                return;
        }
        m->done(m->vm, NULL, false);
}

/* worker.proto MigrateOut, with the stream's fd attached; a worker that does not know
 * the request (older than vmmsd) answers -EOPNOTSUPP. */
static void migrate_out(VmmsEngine *e, VmmsVm *vm, int fd, uint32_t max_downtime_ms, VmmsEngineMigrateFn done)
{
        BundledVm *b = vm->engine_data;
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__MigrateOut body = VMMS__WORKER__MIGRATE_OUT__INIT;
        MigrateRequest *m;

        (void)e;
        if (!b || !b->worker) {
                VmmsError error = {0};

                vmms_error_set(&error, VMMS_ERROR_UNAVAILABLE, "VM '%s': its worker is not reachable",
                               vm->def.name);
                done(vm, &error, false);
                vmms_error_clear(&error);
                return;
        }
        m = g_new0(MigrateRequest, 1);
        m->vm = vm;
        m->done = done;
        body.max_downtime_ms = max_downtime_ms;
        body.auto_converge = true;
        req.body_case = VMMS__WORKER__REQUEST__BODY_MIGRATE_OUT;
        req.migrate_out = &body;
        vmms_worker_request_fd(b->worker, &req, fd, on_migrate_out_reply, m);
}

static void on_finish_reply(int error, const char *message, void *userdata)
{
        (void)userdata; /* the VM may be gone already: it is the destination's */
        if (error < 0 && error != -ECONNRESET)
                g_warning("a moved VM's worker refused to finish: %s", message);
}

static void migrate_end(VmmsEngine *e, VmmsVm *vm, bool commit, VmmsEngineDoneFn done)
{
        BundledVm *b = vm->engine_data;
        Vmms__Worker__Request req = VMMS__WORKER__REQUEST__INIT;
        Vmms__Worker__MigrateFinish finish = VMMS__WORKER__MIGRATE_FINISH__INIT;
        Vmms__Worker__MigrateCancel cancel = VMMS__WORKER__MIGRATE_CANCEL__INIT;

        (void)e;
        if (commit) {
                req.body_case = VMMS__WORKER__REQUEST__BODY_MIGRATE_FINISH;
                req.migrate_finish = &finish;
                if (b && b->worker)
                        vmms_worker_request(b->worker, &req, on_finish_reply, NULL);
                if (done)
                        done(vm, NULL);
                return;
        }
        req.body_case = VMMS__WORKER__REQUEST__BODY_MIGRATE_CANCEL;
        req.migrate_cancel = &cancel;
        request(vm, &req, done);
}

static const VmmsEngineOps bundled_ops = {
        .name = "bundled",
        .available = available,
        .start = start,
        .attach = attach,
        .stop = stop,
        .kill = kill_vm,
        .pause = pause_vm,
        .set_processor = set_processor,
        .adjust_memory = adjust_memory,
        .sample = sample,
        .release = release,
        .save = save,
        .migrate_out = migrate_out,
        .migrate_end = migrate_end,
};

VmmsEngine *vmms_engine_bundled_new(const VmmsBundledConfig *config, VmmsHvd *hvd,
                                    const VmmsEngineCallbacks *callbacks)
{
        Bundled *e = g_new0(Bundled, 1);

        e->base.ops = &bundled_ops;
        e->base.callbacks = callbacks;
        e->config = *config;
        e->hvd = hvd;
        return &e->base;
}

void vmms_engine_bundled_free(VmmsEngine *e)
{
        g_free(e);
}
