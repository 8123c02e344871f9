/* The management service's core: the registry, the tick, start-up and the
 * hypervisor's comings and goings.
 *
 * Once a second the tick asks hvd for counters (vmms-hvd.c; never waiting for it).
 * When the sample arrives each VM's engine samples its figures, the Dynamic Memory
 * balancer plans (vmms-memory.c returns the plan) and the manager carries out the
 * plan through each VM. If hvd dies, every VM it ran is ended and recorded Off with
 * "the hypervisor exited"; hvd is started again on the next tick, and VMs whose
 * AutomaticStartAction is StartIfRunning or Start run again once it answers.
 *
 * At start-up a VM the store says runs is found again through its engine (a worker
 * outlives a vmmsd restart); one that cannot be found is recorded Off with an event,
 * and started again if its AutomaticStartAction says so. When vmmsd started hvd
 * itself (the host came up), VMs with AutomaticStartAction Start are started too. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <math.h>

#include "vmms-counters.h"
#include "vmms-engine.h"
#include "vmms-health.h"
#include "vmms-hvd.h"
#include "vmms-manager.h"
#include "vmms-memory.h"
#include "vmms-store-file.h"

#define START_TIMEOUT_MS_DEFAULT 30000

struct VmmsManager {
        VmmsConfig config;
        VmmsStore *store;
        VmmsEvents *events;
        VmmsVmContext vm_context;
        char *saved_dir;            /* STATE/saved: Saved VMs' state files */
        char *checkpoints_dir;      /* STATE/checkpoints/<vm id>: live checkpoints' state files */
        VmmsMigration *migration;   /* Move-VM; not owned */
        VmmsCluster *cluster;       /* vmmsd --cluster; not owned */
        VmmsStartGateFn start_gate; /* starts of vmmsd's own go through it when set */
        void *start_gate_data;
        GPtrArray *vms;
        GHashTable *by_id;   /* lower-case UUID -> VmmsVm* */
        GHashTable *by_name; /* case-folded name -> VmmsVm* */
        VmmsHvd *hvd;
        VmmsEngine *bundled;
        VmmsEngine *libvirt; /* NULL when vmmsd was built without libvirt */
        guint tick_source;
        VmmsMemory *memory;
        VmmsHealth *health;         /* the over-commit signs, fed each sample */
        guint memory_prompt_source; /* a prompt balancer run waiting out the rate limit */
        uint64_t next_balancer_id;
        int lock_fd;                 /* the state directory's lock, held for vmmsd's life */
        GPtrArray *unsaved_removals; /* ids of VMs removed while the store refused writes */
        bool low_space;              /* the low-space event was recorded and space has not come back */
};

/* Below this much free space where the store lives, vmmsd records a host event: the
 * larger of 64 MiB and 5 % of the filesystem. */
#define LOW_SPACE_FLOOR (UINT64_C(64) << 20)
#define LOW_SPACE_PERCENT 5

void vmms_config_clear(VmmsConfig *config)
{
        g_free(config->state_dir);
        g_free(config->runtime_dir);
        g_free(config->hvd_socket);
        g_free(config->hvd_path);
        g_free(config->vmwp_path);
        g_free(config->guest_path);
        g_free(config->paging_dir);
        g_free(config->libvirt_uri);
        g_free(config->libvirt_domain_type);
        g_free(config->libvirt_migration_uri);
        memset(config, 0, sizeof(*config));
}

/* ---- The registry ---- */

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
        if (error) {
                g_autofree char *quoted = vmms_quote(ref);

                vmms_error_set(error, VMMS_ERROR_NOT_FOUND, "no VM named or with id '%s'", quoted);
        }
        return NULL;
}

static VmmsEngine *engine_named(VmmsManager *m, const char *name)
{
        if (!name || !*name || g_strcmp0(name, m->bundled->ops->name) == 0)
                return m->bundled;
        if (m->libvirt && g_strcmp0(name, m->libvirt->ops->name) == 0)
                return m->libvirt;
        return NULL;
}

VmmsEngine *vmms_manager_engine(VmmsManager *m, const char *name)
{
        return name && *name ? engine_named(m, name) : NULL;
}

static VmmsVm *vm_new(VmmsManager *m, const VmmsVmDefinition *def, VmmsEngine *engine)
{
        return vmms_vm_new(&m->vm_context, def, engine, ++m->next_balancer_id);
}

int vmms_manager_vm_add(VmmsManager *m, const VmmsVmDefinition *def, VmmsVm **ret, VmmsError *error)
{
        VmmsEngine *engine = engine_named(m, def->engine);
        g_autofree char *explained = NULL;
        VmmsVm *vm;
        VmmsEventRecord event = {0};
        int r;

        if (!engine) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Engine '%s' is not one this host has (%s)", def->engine,
                               m->libvirt ? "bundled, libvirt" : "bundled");
                return -EINVAL;
        }
        if (vmms_manager_lookup(m, def->name, NULL)) {
                vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "a VM named '%s' already exists", def->name);
                return -EEXIST;
        }
        /* A boot disk is written by its guest: it may be no other VM's file. */
        for (guint i = 0; def->vhd_path && *def->vhd_path && i < m->vms->len; i++) {
                VmmsVm *other = m->vms->pdata[i];

                if (vmms_vm_uses_file(other, def->vhd_path)) {
                        vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS,
                                       "VHDPath '%s' is in use by VM '%s'; a disk image belongs to one VM",
                                       def->vhd_path, other->def.name);
                        return -EEXIST;
                }
        }
        vm = vm_new(m, def, engine);
        g_free(vm->def.engine);
        vm->def.engine = g_strdup(engine->ops->name);
        event = (VmmsEventRecord){.time_unix_ms = g_get_real_time() / 1000,
                                  .vm_id = vm->def.id,
                                  .vm_name = vm->def.name,
                                  .kind = (char *)"created",
                                  .state = vm->def.state,
                                  .message = (char *)"created"};
        r = vmms_store_vm_insert(m->store, &vm->def, &event);
        if (r < 0) {
                if (r == -EEXIST)
                        vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "a VM named '%s' already exists",
                                       def->name);
                else
                        vmms_error_set(error, vmms_error_code_from_errno(r), "cannot save VM '%s': %s",
                                       def->name, explained = vmms_store_explain(m->store, r));
                vmms_vm_free(vm);
                return r;
        }
        g_ptr_array_add(m->vms, vm);
        index_vm(m, vm);
        vmms_events_notify(m->events, &event);
        *ret = vm;
        return 0;
}

/* The store dropped the VM's checkpoint rows with it; their files (and any temporary
 * one a killed checkpoint left) go now. */
static void remove_checkpoint_files(VmmsManager *m, VmmsVm *vm)
{
        g_autofree char *dir = g_build_filename(m->checkpoints_dir, vm->def.id, NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        if (!d)
                return;
        while ((name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);

                if (unlink(path) < 0)
                        g_warning("VM '%s': cannot delete %s: %s", vm->def.name, path, g_strerror(errno));
        }
        if (rmdir(dir) < 0)
                g_warning("VM '%s': cannot delete %s: %s", vm->def.name, dir, g_strerror(errno));
}

/* Forgets `vm` (Off or Saved, no job) with `event`: store first, then its files. */
static int vm_forget(VmmsManager *m, VmmsVm *vm, VmmsEventRecord event, VmmsError *error)
{
        int r;

        if (!vmms_vm_removable(vm, error))
                return -EBUSY;
        r = vmms_store_vm_remove(m->store, vm->def.id, &event);
        if (r == -ENOSPC || r == -EDQUOT || r == -EIO) {
                /* Removing a VM always works: the store forgets it when it can. */
                g_autofree char *why = vmms_store_explain(m->store, r);

                g_warning("VM '%s': removed, but the store could not record it yet (%s)", vm->def.name, why);
                g_ptr_array_add(m->unsaved_removals, g_strdup(vm->def.id));
        } else if (r < 0) {
                g_autofree char *why = vmms_store_explain(m->store, r);

                vmms_error_set(error, vmms_error_code_from_errno(r), "cannot remove VM '%s': %s",
                               vm->def.name, why);
                return r;
        } else {
                vmms_events_notify(m->events, &event);
        }
        if (vm->def.state == VMMS_VM_SAVED) {
                g_autofree char *saved = vmms_vm_saved_path(vm);

                if (unlink(saved) < 0 && errno != ENOENT)
                        g_warning("VM '%s': cannot delete its saved state %s: %s", vm->def.name, saved,
                                  g_strerror(errno));
        }
        remove_checkpoint_files(m, vm);
        unindex_vm(m, vm);
        g_ptr_array_remove(m->vms, vm);
        return 0;
}

int vmms_manager_vm_remove(VmmsManager *m, VmmsVm *vm, VmmsError *error)
{
        return vm_forget(m, vm,
                         (VmmsEventRecord){.time_unix_ms = g_get_real_time() / 1000,
                                           .vm_id = vm->def.id,
                                           .vm_name = vm->def.name,
                                           .kind = (char *)"removed",
                                           .state = vm->def.state,
                                           .message = (char *)"removed"},
                         error);
}

int vmms_manager_vm_moved(VmmsManager *m, VmmsVm *vm, const char *destination, VmmsError *error)
{
        g_autofree char *message = g_strdup_printf("moved to %s", destination);

        vmms_vm_move_end(vm);
        vm->def.state = VMMS_VM_SAVED; /* its saved state is spent: deleted with it */
        return vm_forget(m, vm,
                         (VmmsEventRecord){.time_unix_ms = g_get_real_time() / 1000,
                                           .vm_id = vm->def.id,
                                           .vm_name = vm->def.name,
                                           .kind = (char *)"moved",
                                           .state = VMMS_VM_MIGRATING,
                                           .message = message},
                         error);
}

void vmms_manager_set_migration(VmmsManager *m, VmmsMigration *migration)
{
        m->migration = migration;
}

VmmsMigration *vmms_manager_migration(VmmsManager *m)
{
        return m->migration;
}

void vmms_manager_set_cluster(VmmsManager *m, VmmsCluster *cluster)
{
        m->cluster = cluster;
}

void vmms_manager_set_start_gate(VmmsManager *m, VmmsStartGateFn fn, void *userdata)
{
        m->start_gate = fn;
        m->start_gate_data = userdata;
}

static void start_own(VmmsManager *m, VmmsVm *vm)
{
        if (m->start_gate)
                m->start_gate(vm, m->start_gate_data);
        else
                vmms_vm_start(vm, NULL);
}

VmmsCluster *vmms_manager_cluster(VmmsManager *m)
{
        return m->cluster;
}

int vmms_manager_vm_update(VmmsManager *m, VmmsVm *vm, const VmmsVmSettings *s, VmmsError *error)
{
        VmmsVm *other = s->name ? vmms_manager_lookup(m, s->name, NULL) : NULL;
        g_autofree char *old_name = g_utf8_casefold(vm->def.name, -1);
        int r;

        if (other && other != vm) {
                vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS, "a VM named '%s' already exists", s->name);
                return -EEXIST;
        }
        /* The VM stays findable while the change is recorded: watchers look it up. */
        r = vmms_vm_update_settings(vm, s, error);
        if (r >= 0) {
                g_hash_table_remove(m->by_name, old_name);
                index_vm(m, vm);
        }
        return r;
}

int vmms_manager_vm_add_hard_disk_drive(VmmsManager *m, VmmsVm *vm, const char *path, VmmsError *error)
{
        g_autofree char *real = path && g_path_is_absolute(path) ? realpath(path, NULL) : NULL;
        g_autofree char *state = m->config.state_dir ? realpath(m->config.state_dir, NULL) : NULL;

        for (guint i = 0; real && i < m->vms->len; i++) {
                VmmsVm *other = m->vms->pdata[i];

                if (other != vm && vmms_vm_uses_file(other, real)) {
                        vmms_error_set(error, VMMS_ERROR_ALREADY_EXISTS,
                                       "'%s' is in use by VM '%s'; a disk image belongs to one VM", path,
                                       other->def.name);
                        return -EEXIST;
                }
        }
        if (real && state && g_str_has_prefix(real, state) && real[strlen(state)] == '/') {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "'%s' is inside vmmsd's state directory %s; disk images live elsewhere", path,
                               state);
                return -EINVAL;
        }
        return vmms_vm_add_hard_disk_drive(vm, path, error);
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

void vmms_manager_set_vm_reply(VmmsManager *m, VmmsVmReplyFn fn)
{
        m->vm_context.reply = fn;
        m->vm_context.reply_data = m;
}

VmmsMemory *vmms_manager_memory(VmmsManager *m)
{
        return m->memory;
}

/* ---- Events ---- */

void *vmms_manager_watch(VmmsManager *m, VmmsEventFn fn, void *userdata)
{
        return vmms_events_watch(m->events, fn, userdata);
}

void vmms_manager_unwatch(VmmsManager *m, void *watch)
{
        vmms_events_unwatch(m->events, watch);
}

/* An event about the host rather than one VM (e.g. a refused call): the store keys
 * events by VM, so it has an empty vm_id and vm_name. */
void vmms_manager_record_host_event(VmmsManager *m, const char *kind, const char *message)
{
        VmmsEventRecord event = {
                .time_unix_ms = g_get_real_time() / 1000,
                .vm_id = (char *)"",
                .vm_name = (char *)"",
                .kind = (char *)kind,
                .state = VMMS_VM_OFF,
                .message = (char *)message,
        };
        int r = vmms_events_record(m->events, &event);

        if (r < 0)
                g_warning("cannot record a %s event: %s", kind, g_strerror(-r));
}

/* ---- The hypervisor and the tick ---- */

bool vmms_manager_counters(VmmsManager *m, const Vmms__Hv__Counters **ret_prev,
                           const Vmms__Hv__Counters **ret_cur)
{
        return vmms_hvd_counters(m->hvd, ret_prev, ret_cur);
}

const Vmms__Hv__Counters *vmms_manager_last_sample(VmmsManager *m)
{
        return vmms_hvd_last_sample(m->hvd);
}

const Vmms__Hv__CompatibilityVector *vmms_manager_compat_vector(VmmsManager *m, bool normalized)
{
        return vmms_hvd_compat_vector(m->hvd, normalized);
}

void vmms_manager_when_sampled(VmmsManager *m, VmmsSampledFn fn, void *userdata)
{
        vmms_hvd_probe(m->hvd, fn, userdata);
}

bool vmms_manager_counter_sources(VmmsManager *m, VmmsCounterSources *ret)
{
        *ret = (VmmsCounterSources){.vms = m->vms, .memory = m->memory};
        return vmms_hvd_counters(m->hvd, &ret->prev, &ret->cur);
}

const char *vmms_manager_hypervisor_status(VmmsManager *m)
{
        return vmms_hvd_status(m->hvd);
}

GArray *vmms_manager_engines(VmmsManager *m)
{
        GArray *engines = g_array_new(FALSE, TRUE, sizeof(VmmsEngineInfo));
        VmmsEngineInfo info = {.name = m->bundled->ops->name};

        info.available = m->bundled->ops->available(m->bundled, &info.why_not);
        g_array_append_val(engines, info);
        if (m->libvirt) {
                info = (VmmsEngineInfo){.name = m->libvirt->ops->name};
                info.available = m->libvirt->ops->available(m->libvirt, &info.why_not);
                g_array_append_val(engines, info);
        }
        return engines;
}

static VmmsVm *vm_by_balancer_id(VmmsManager *m, uint64_t id)
{
        for (guint i = 0; i < m->vms->len; i++)
                if (((VmmsVm *)m->vms->pdata[i])->balancer_id == id)
                        return m->vms->pdata[i];
        return NULL;
}

static void memory_carry_out(VmmsManager *m, const BalancerPlan *plan)
{
        for (size_t i = 0; plan && i < plan->n_actions; i++) {
                const BalancerAction *a = &plan->actions[i];
                VmmsVm *vm = vm_by_balancer_id(m, a->vm_id);

                if (vm)
                        vmms_vm_adjust_memory(
                                vm, a->kind == BALANCER_ACTION_ADD ? (int64_t)a->bytes : -(int64_t)a->bytes,
                                a->reason);
        }
}

/* A guest's prompt report: the balancer runs now on the last pool figures, or once the
 * rate limit (vmms-memory.c) allows; the periodic tick still runs as before. */
static gboolean on_memory_prompt_timer(gpointer userdata);

static void memory_run_prompt(VmmsManager *m)
{
        uint64_t now_ns = (uint64_t)g_get_monotonic_time() * 1000;
        uint64_t delay_ns = vmms_memory_prompt_delay_ns(m->memory, now_ns);

        if (delay_ns > 0) {
                if (!m->memory_prompt_source)
                        m->memory_prompt_source =
                                g_timeout_add((guint)(delay_ns / 1000000) + 1, on_memory_prompt_timer, m);
                return;
        }
        memory_carry_out(m, vmms_memory_prompt(m->memory, m->vms, now_ns));
}

static gboolean on_memory_prompt_timer(gpointer userdata)
{
        VmmsManager *m = userdata;

        m->memory_prompt_source = 0;
        memory_run_prompt(m);
        return G_SOURCE_REMOVE;
}

static void on_vm_memory_prompt(VmmsVm *vm, void *userdata)
{
        (void)vm;
        memory_run_prompt(userdata);
}

/* ---- The over-commit signs (vmms-health.c judges; here the counters feed it) ---- */

typedef struct HealthVmFigures {
        VmmsHealthVmSample sample;
        double wait_sum_ns;
        unsigned n_vps;
        bool have_pressure;
} HealthVmFigures;

typedef struct HealthCollect {
        VmmsHealthHostSample host;
        GHashTable *vms; /* name -> HealthVmFigures* */
} HealthCollect;

static void health_collect(const VmmsCounterSample *c, void *userdata)
{
        HealthCollect *hc = userdata;
        HealthVmFigures *v;

        switch (c->id) {
        case VMMS_COUNTER_LP_TOTAL_RUN_TIME:
                if (c->aggregate)
                        hc->host.lp_run_pct = c->value;
                return;
        case VMMS_COUNTER_HOST_POOL_BYTES:
                hc->host.pool_bytes = c->base_value;
                return;
        case VMMS_COUNTER_BALANCER_AVAILABLE_MEMORY:
                hc->host.available_bytes = c->base_value;
                return;
        case VMMS_COUNTER_BALANCER_AVERAGE_PRESSURE:
                hc->host.average_pressure = c->value;
                return;
        default:
                break;
        }
        if (!c->vm)
                return;
        v = g_hash_table_lookup(hc->vms, c->vm);
        if (!v) {
                v = g_new0(HealthVmFigures, 1);
                v->sample = (VmmsHealthVmSample){.average_pressure = NAN,
                                                 .pages_total = NAN,
                                                 .pages_in_total = NAN,
                                                 .cpu_wait_per_dispatch_ns = NAN,
                                                 .cpu_run_s_total = NAN,
                                                 .cpu_wait_s_total = NAN};
                g_hash_table_insert(hc->vms, g_strdup(c->vm), v);
        }
        switch (c->id) {
        case VMMS_COUNTER_VM_PHYSICAL_MEMORY:
                v->sample.assigned_bytes = (uint64_t)c->base_value;
                break;
        case VMMS_COUNTER_GUEST_COMMITTED_BYTES:
                v->sample.committed_bytes = (uint64_t)c->base_value;
                break;
        case VMMS_COUNTER_VM_AVERAGE_PRESSURE:
                v->sample.average_pressure = c->value;
                v->have_pressure = true;
                break;
        case VMMS_COUNTER_GUEST_PAGES_IN:
                v->sample.pages_in_total = c->value;
                v->sample.pages_total = (isnan(v->sample.pages_total) ? 0 : v->sample.pages_total) + c->value;
                break;
        case VMMS_COUNTER_GUEST_PAGES_OUT:
                v->sample.pages_total = (isnan(v->sample.pages_total) ? 0 : v->sample.pages_total) + c->value;
                break;
        case VMMS_COUNTER_VP_CPU_WAIT_TIME_PER_DISPATCH:
                v->wait_sum_ns += c->value;
                v->n_vps++;
                /* base_value: the VP's wait time so far, in seconds */
                v->sample.cpu_wait_s_total =
                        (isnan(v->sample.cpu_wait_s_total) ? 0 : v->sample.cpu_wait_s_total) + c->base_value;
                break;
        case VMMS_COUNTER_VP_TOTAL_RUN_TIME:
                v->sample.cpu_run_pct += c->value;
                v->sample.cpu_run_s_total =
                        (isnan(v->sample.cpu_run_s_total) ? 0 : v->sample.cpu_run_s_total) + c->base_value;
                break;
        default:
                break;
        }
}

/* A "health" event for each VM or the host whose signs changed: the status, and the
 * first finding's counter, value and threshold with its advice. */
static void health_record_changes(VmmsManager *m, GPtrArray *changes)
{
        g_autoptr(GPtrArray) findings = changes->len ? vmms_health_findings(m->health) : NULL;

        for (guint i = 0; i < changes->len; i++) {
                const char *subject = changes->pdata[i];
                VmmsVm *vm = *subject ? vmms_manager_lookup(m, subject, NULL) : NULL;
                g_autofree char *status = NULL;
                GString *message;
                g_autofree char *text = NULL;

                if (*subject && (!vm || !vmms_vm_is_live(vm)))
                        continue; /* it stopped: its state event says so */
                status = *subject ? vmms_health_vm_status(m->health, subject)
                                  : vmms_health_host_status(m->health);
                message = g_string_new(status);
                for (guint k = 0; k < findings->len; k++) {
                        const VmmsHealthFinding *f = findings->pdata[k];

                        if (g_strcmp0(f->vm, *subject ? subject : NULL) != 0)
                                continue;
                        g_string_append_printf(message, ": %s %.0f %s (threshold %.0f, %u s window); %s",
                                               f->counter, f->value, vmms_health_rules[f->rule].unit,
                                               f->threshold, f->window_s, f->advice);
                        break;
                }
                text = g_string_free(message, FALSE);
                if (vm)
                        vmms_vm_record_event(vm, "health", text);
                else
                        vmms_manager_record_host_event(m, "health", text);
        }
}

/* Once a sample: the counters walked as Get-Counter shows them, into the evaluator. */
static void health_feed(VmmsManager *m)
{
        g_autoptr(GHashTable) vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        HealthCollect hc = {.host = {.available_bytes = NAN,
                                     .pool_bytes = NAN,
                                     .average_pressure = NAN,
                                     .lp_run_pct = NAN},
                            .vms = vms};
        VmmsCounterSources sources;
        g_autoptr(GPtrArray) changes = NULL;
        GHashTableIter iter;
        gpointer key, value;

        if (!vmms_manager_counter_sources(m, &sources))
                return;
        vmms_counters_walk(&sources, health_collect, &hc);
        vmms_health_push_host(m->health, &hc.host);
        g_hash_table_iter_init(&iter, vms);
        while (g_hash_table_iter_next(&iter, &key, &value)) {
                HealthVmFigures *v = value;
                VmmsVm *vm = vmms_manager_lookup(m, key, NULL);

                if (!vm || !vmms_vm_is_live(vm))
                        continue;
                if (v->n_vps)
                        v->sample.cpu_wait_per_dispatch_ns = v->wait_sum_ns / v->n_vps;
                /* Static memory has no balancer counters: its pressure is Hyper-V's formula. */
                if (!v->have_pressure && v->sample.assigned_bytes && v->sample.committed_bytes) {
                        v->sample.average_pressure =
                                (double)v->sample.committed_bytes * 100 / (double)v->sample.assigned_bytes;
                        v->sample.static_memory = true;
                }
                v->sample.goal_seeking = vm->def.memory.dynamic_memory_enabled && vm->def.memory.goal_seeking;
                v->sample.cpu_reserve_pct = (double)vm->def.processor.reserve * vm->def.processor.count;
                v->sample.maximum_bytes = vm->def.memory.dynamic_memory_enabled
                                                  ? vm->def.memory.maximum_bytes
                                                  : vm->def.memory.startup_bytes;
                vmms_health_push_vm(m->health, vm->def.name, &v->sample);
        }
        changes = vmms_health_end_second(m->health);
        health_record_changes(m, changes);
}

VmmsHealth *vmms_manager_health(VmmsManager *m)
{
        return m->health;
}

static void on_hvd_sample(const Vmms__Hv__Counters *prev, const Vmms__Hv__Counters *cur, void *userdata)
{
        VmmsManager *m = userdata;
        VmmsMemoryPool pool = {.total_bytes = cur->pool_total_bytes, .used_bytes = cur->pool_used_bytes};

        (void)prev;
        for (guint i = 0; i < m->vms->len; i++) {
                VmmsVm *vm = m->vms->pdata[i];

                vmms_vm_sample(vm);
                /* One pool spans the engines: memory assigned to a VM hvd does not run is
                 * charged to hvd's pool figure too (vmms-engine-libvirt.c says why). */
                if (vm->engine != m->bundled && vmms_vm_is_live(vm))
                        pool.used_bytes = MIN(pool.total_bytes, pool.used_bytes + vm->figures.assigned_bytes);
        }
        memory_carry_out(m,
                         vmms_memory_tick(m->memory, m->vms, &pool, (uint64_t)g_get_monotonic_time() * 1000));
        health_feed(m);
}

static void on_hvd_lost(const char *why, void *userdata)
{
        VmmsManager *m = userdata;

        for (guint i = 0; i < m->vms->len; i++) {
                VmmsVm *vm = m->vms->pdata[i];

                if (vm->engine == m->bundled)
                        vmms_vm_host_lost(vm, why);
        }
}

static const VmmsHvdCallbacks hvd_callbacks = {
        .sample = on_hvd_sample,
        .lost = on_hvd_lost,
};

/* VMs marked for an automatic start run again once the hypervisor answers. */
static void start_pending(VmmsManager *m)
{
        if (g_strcmp0(vmms_hvd_status(m->hvd), "running") != 0)
                return;
        for (guint i = 0; i < m->vms->len; i++) {
                VmmsVm *vm = m->vms->pdata[i];

                if (vm->resume_pending && vm->def.state == VMMS_VM_SAVED && !vm->job) {
                        vm->resume_pending = false;
                        g_message("VM '%s': continues from its saved state (a move was cut short)",
                                  vm->def.name);
                        start_own(m, vm);
                        continue;
                }
                if (!vm->restart_pending || vm->def.state != VMMS_VM_OFF || vm->job)
                        continue;
                g_message("VM '%s': automatic start (%s)", vm->def.name,
                          vmms_auto_start_to_string(vm->def.automatic_start_action));
                vmms_vm_record_event(vm, "state", "automatic start");
                start_own(m, vm);
        }
}

/* Changes the store refused (a full disk) are written as soon as it takes them. */
static void save_pending(VmmsManager *m)
{
        for (guint i = 0; i < m->vms->len; i++)
                vmms_vm_save_pending(m->vms->pdata[i]);
        while (m->unsaved_removals->len) {
                const char *id = m->unsaved_removals->pdata[m->unsaved_removals->len - 1];
                VmmsEventRecord event = {
                        .time_unix_ms = g_get_real_time() / 1000,
                        .vm_id = (char *)id,
                        .vm_name = (char *)"",
                        .kind = (char *)"removed",
                        .message = (char *)"removed (recorded late: the store refused it at the time)"};
                int r = vmms_store_vm_remove(m->store, id, &event);

                if (r < 0 && r != -ENOENT)
                        return;
                if (r == 0)
                        vmms_events_notify(m->events, &event);
                g_ptr_array_remove_index(m->unsaved_removals, m->unsaved_removals->len - 1);
        }
}

/* A host event when free space where the store lives runs low, and one when it is back. */
static void watch_space(VmmsManager *m)
{
        uint64_t total, free_bytes = vmms_store_free_bytes(m->store, &total);
        uint64_t floor = MAX(LOW_SPACE_FLOOR, total / 100 * LOW_SPACE_PERCENT);
        g_autofree char *free_text = NULL;
        g_autofree char *floor_text = NULL;
        g_autofree char *message = NULL;

        if (free_bytes == UINT64_MAX || (free_bytes < floor) == m->low_space)
                return;
        m->low_space = free_bytes < floor;
        free_text = vmms_format_bytes(free_bytes);
        floor_text = vmms_format_bytes(floor);
        message = m->low_space
                          ? g_strdup_printf("the state filesystem (%s) has %s free, below %s: free space "
                                            "before the store fills and changes can no longer be saved",
                                            m->config.state_dir, free_text, floor_text)
                          : g_strdup_printf("the state filesystem (%s) has %s free again",
                                            m->config.state_dir, free_text);
        if (m->low_space)
                g_warning("%s", message);
        vmms_manager_record_host_event(m, m->low_space ? "low-space" : "space", message);
}

static gboolean on_tick(gpointer userdata)
{
        VmmsManager *m = userdata;

        watch_space(m);
        save_pending(m);
        vmms_hvd_tick(m->hvd);
        start_pending(m);
        return G_SOURCE_CONTINUE;
}

/* ---- Start-up ---- */

/* A VM the store says is running: find it again, or record that it is gone. */
static void reattach(VmmsManager *m, VmmsVm *vm, bool host_started)
{
        if (vm->def.state == VMMS_VM_MIGRATING && vm->engine->ops->attach(vm->engine, vm) < 0) {
                /* A move was under way: its worker had saved and ended, or died. The saved
                 * state is kept; the migration settles whose the VM is (vmms-migration.c). */
                g_autofree char *saved = vmms_vm_saved_path(vm);
                bool kept = g_file_test(saved, G_FILE_TEST_EXISTS);

                vm->def.state = kept ? VMMS_VM_SAVED : VMMS_VM_OFF;
                vm->def.worker_pid = 0;
                vm->def.started_unix_ms = 0;
                vmms_vm_persist(vm, kept ? "state" : "worker-exit", NULL, "%s",
                                kept ? "a move was under way when vmmsd stopped: its saved state is kept"
                                     : "a move was under way when vmmsd stopped and its worker is gone");
                return;
        }
        if (vm->def.state == VMMS_VM_MIGRATING && vm->engine_data) {
                g_message("VM '%s': re-attached to its worker (pid %d) mid-move", vm->def.name,
                          vm->def.worker_pid);
                return;
        }
        if (vm->engine->ops->attach(vm->engine, vm) < 0) {
                vm->def.state = VMMS_VM_OFF;
                vm->def.worker_pid = 0;
                vm->def.started_unix_ms = 0;
                vmms_vm_persist(vm, "worker-exit", NULL, "%s",
                                host_started ? "the hypervisor was not running when vmmsd started"
                                             : "its worker was gone when vmmsd started");
                vm->restart_pending = vm->def.automatic_start_action != VMMS_AUTO_START_NOTHING;
                return;
        }
        g_message("VM '%s': re-attached to its worker (pid %d)", vm->def.name, vm->def.worker_pid);
        if (vm->def.state == VMMS_VM_STOPPING) {
                /* The stop was cut short by our restart: finish it. */
                vm->job = "stop";
                vm->engine->ops->stop(vm->engine, vm, true, m->config.force_timeout_ms);
        } else if (vm->def.state == VMMS_VM_STARTING) {
                vm->job = "start"; /* its Hello finishes the start */
        }
}

static int make_dirs(const VmmsConfig *config, char **ret_error)
{
        g_autofree char *logs = g_build_filename(config->state_dir, "logs", NULL);
        g_autofree char *workers = g_build_filename(config->runtime_dir, "workers", NULL);
        g_autofree char *saved = g_build_filename(config->state_dir, "saved", NULL);
        g_autofree char *checkpoints = g_build_filename(config->state_dir, "checkpoints", NULL);
        const char *dirs[] = {config->state_dir,  logs,  config->runtime_dir, workers,
                              config->paging_dir, saved, checkpoints};

        for (size_t i = 0; i < G_N_ELEMENTS(dirs); i++)
                if (g_mkdir_with_parents(dirs[i], 0750) < 0) {
                        int r = -errno;

                        *ret_error = g_strdup_printf("cannot create %s: %s", dirs[i], g_strerror(-r));
                        return r;
                }
        return 0;
}

static void copy_config(VmmsConfig *dst, const VmmsConfig *src)
{
        *dst = *src;
        dst->state_dir = g_strdup(src->state_dir);
        dst->runtime_dir = g_strdup(src->runtime_dir);
        dst->hvd_socket = g_strdup(src->hvd_socket);
        dst->hvd_path = g_strdup(src->hvd_path);
        dst->vmwp_path = g_strdup(src->vmwp_path);
        dst->guest_path = g_strdup(src->guest_path);
        dst->libvirt_uri = g_strdup(src->libvirt_uri);
        dst->libvirt_domain_type = g_strdup(src->libvirt_domain_type);
        dst->libvirt_migration_uri = g_strdup(src->libvirt_migration_uri);
        dst->paging_dir = src->paging_dir ? g_strdup(src->paging_dir)
                                          : g_build_filename(src->state_dir, "paging", NULL);
        if (!dst->start_timeout_ms)
                dst->start_timeout_ms = START_TIMEOUT_MS_DEFAULT;
}

int vmms_manager_new(const VmmsConfig *config, VmmsManager **ret, char **ret_error)
{
        g_autoptr(VmmsManager) m = g_new0(VmmsManager, 1);
        g_autoptr(GPtrArray) defs = NULL;
        g_autofree char *db = NULL, *hvd_log = NULL;
        VmmsHvdConfig hvd_config;
        VmmsBundledConfig bundled_config;
        bool host_started;
        int r;

        m->lock_fd = -1;
        m->unsaved_removals = g_ptr_array_new_with_free_func(g_free);
        copy_config(&m->config, config);
        m->vms = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_vm_free);
        m->by_id = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        m->by_name = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        r = vmms_memory_new(m->config.memory_reserve, &m->memory);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot start the memory balancer: %s", g_strerror(-r));
                return r;
        }
        m->health = vmms_health_new();
        r = make_dirs(&m->config, ret_error);
        if (r < 0)
                return r;
        db = g_build_filename(m->config.state_dir, "vmms.db", NULL);
        r = vmms_store_file_lock(m->config.state_dir, &m->lock_fd, ret_error);
        if (r < 0)
                return r;
        r = vmms_store_open(db, m->config.init_store, &m->store, ret_error);
        if (r < 0)
                return r;
        m->events = vmms_events_new(m->store);
        m->vm_context = (VmmsVmContext){
                .store = m->store,
                .events = m->events,
                .saved_dir = m->saved_dir = g_build_filename(m->config.state_dir, "saved", NULL),
                .checkpoints_dir = m->checkpoints_dir =
                        g_build_filename(m->config.state_dir, "checkpoints", NULL),
                .stop_timeout_ms = m->config.stop_timeout_ms,
                .force_timeout_ms = m->config.force_timeout_ms,
                .memory_prompt = on_vm_memory_prompt,
                .memory_prompt_data = m,
        };
        hvd_log = g_build_filename(m->config.state_dir, "logs", "hvd.log", NULL);
        hvd_config = (VmmsHvdConfig){
                .socket_path = m->config.hvd_socket,
                .hvd_path = m->config.hvd_path,
                .log_path = hvd_log,
                .memory = m->config.hvd_memory,
                .lps = m->config.hvd_lps,
                .spawn = m->config.spawn_hvd,
                .options = m->config.hvd_options,
        };
        r = vmms_hvd_new(&hvd_config, &hvd_callbacks, m, &m->hvd, ret_error);
        if (r < 0)
                return r;
        host_started = vmms_hvd_started_here(m->hvd);
        bundled_config = (VmmsBundledConfig){
                .vmwp_path = m->config.vmwp_path,
                .guest_path = m->config.guest_path,
                .runtime_dir = m->config.runtime_dir,
                .state_dir = m->config.state_dir,
                .paging_dir = m->config.paging_dir,
                .start_timeout_ms = m->config.start_timeout_ms,
        };
        m->bundled = vmms_engine_bundled_new(&bundled_config, m->hvd, &vmms_vm_engine_callbacks);
#ifdef VMMS_HAVE_LIBVIRT
        m->libvirt = vmms_engine_libvirt_new(
                &(VmmsLibvirtConfig){.uri = m->config.libvirt_uri,
                                     .domain_type = m->config.libvirt_domain_type,
                                     .state_dir = m->config.state_dir,
                                     .migration_uri = m->config.libvirt_migration_uri},
                &vmms_vm_engine_callbacks);
#endif
        r = vmms_store_vm_list(m->store, &defs);
        if (r < 0) {
                *ret_error = g_strdup_printf("cannot read the VM definitions: %s", g_strerror(-r));
                return r;
        }
        for (guint i = 0; i < defs->len; i++) {
                const VmmsVmDefinition *def = defs->pdata[i];
                VmmsEngine *engine = engine_named(m, def->engine);
                VmmsVm *vm;

                if (!engine) {
                        *ret_error =
                                g_strdup_printf("VM '%s' names engine '%s', which this vmmsd does not have",
                                                def->name, def->engine);
                        return -EINVAL;
                }
                vm = vm_new(m, def, engine);
                g_ptr_array_add(m->vms, vm);
                index_vm(m, vm);
                if (vmms_vm_is_live(vm))
                        reattach(m, vm, host_started);
                else if (host_started && vm->def.automatic_start_action == VMMS_AUTO_START_START)
                        vm->restart_pending = true;
        }
        m->tick_source = g_timeout_add_seconds(1, on_tick, m);
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
        if (m->memory_prompt_source)
                g_source_remove(m->memory_prompt_source);
        if (m->vms)
                g_ptr_array_unref(m->vms);
        if (m->by_id)
                g_hash_table_unref(m->by_id);
        if (m->by_name)
                g_hash_table_unref(m->by_name);
        vmms_engine_bundled_free(m->bundled);
#ifdef VMMS_HAVE_LIBVIRT
        vmms_engine_libvirt_free(m->libvirt);
#endif
        vmms_hvd_free(m->hvd);
        vmms_memory_free(m->memory);
        vmms_health_free(m->health);
        vmms_events_free(m->events);
        vmms_store_free(m->store);
        vmms_config_clear(&m->config);
        if (m->lock_fd >= 0)
                close(m->lock_fd);
        g_free(m->saved_dir);
        g_free(m->checkpoints_dir);
        if (m->unsaved_removals)
                g_ptr_array_unref(m->unsaved_removals);
        g_free(m);
}
