/* The hypervisor context: pool, scheduler, partitions, and events to the main thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-clock.h"
#include "hv-wire.h"
#include "hv.h"

#define HV_PARTITION_NAME_MAX 64
#define HV_PARTITION_MIN_BYTES (4ull << 20) /* room for boot data, stacks and the 1 MiB kernel base */
#define HV_PARTITION_MAX_BYTES (1ull << 40)

/* Work an LP thread hands to the main thread, which alone talks to workers. */
typedef enum HvMainCallKind {
        HV_MAIN_CALL_CONSOLE,
        HV_MAIN_CALL_VP_STOPPED,
        HV_MAIN_CALL_MAILBOX,
} HvMainCallKind;

typedef struct HvMainCall {
        Hv *hv;
        uint64_t partition_id;
        HvMainCallKind kind;
        uint32_t vp_index;
        char *reason;
} HvMainCall;

/* A worker whose socket is full gets its guest notes again after this long. */
#define HV_MAILBOX_RETRY_MS 2

static void main_call_free(gpointer data)
{
        HvMainCall *call = data;

        g_free(call->reason);
        g_free(call);
}

static void deliver_console(Hv *hv, HvPartition *p)
{
        g_autoptr(GBytes) bytes = hv_partition_console_take(p);
        HvEvent event = {.kind = HV_EVENT_CONSOLE, .console = bytes};

        if (g_bytes_get_size(bytes) > 0 && hv->on_event)
                (void)hv->on_event(p, &event, hv->on_event_userdata);
}

static void queue_main_call(HvPartition *p, HvMainCallKind kind, uint32_t vp_index, const char *reason,
                            guint delay_ms);

/* Sends the guest's notes in order; a full socket keeps the rest queued (the guest sees
 * INSUFFICIENT_BUFFERS once the mailbox fills) and retries shortly. */
static void deliver_mailbox(Hv *hv, HvPartition *p)
{
        HvGuestNote *note;

        while ((note = hv_partition_mailbox_pop(p))) {
                HvEvent event = {
                        .kind = note->kind == HV_GUEST_NOTE_MESSAGE ? HV_EVENT_GUEST_MESSAGE
                                                                    : HV_EVENT_GUEST_SIGNAL,
                        .note = note,
                };
                int r = hv->on_event ? hv->on_event(p, &event, hv->on_event_userdata) : 0;

                if (r == -EAGAIN) {
                        hv_partition_mailbox_push_back(p, note);
                        queue_main_call(p, HV_MAIN_CALL_MAILBOX, 0, NULL, HV_MAILBOX_RETRY_MS);
                        return;
                }
                g_free(note);
        }
}

static gboolean main_call_run(gpointer data)
{
        HvMainCall *call = data;
        HvPartition *p = hv_partition_lookup(call->hv, call->partition_id);

        if (!p)
                return G_SOURCE_REMOVE;
        if (call->kind == HV_MAIN_CALL_MAILBOX) {
                deliver_mailbox(call->hv, p);
                return G_SOURCE_REMOVE;
        }
        deliver_console(call->hv, p); /* a halt's last words come before the halt */
        if (call->kind == HV_MAIN_CALL_VP_STOPPED && call->hv->on_event) {
                HvEvent event = {
                        .kind = HV_EVENT_VP_STOPPED, .vp_index = call->vp_index, .reason = call->reason};

                (void)call->hv->on_event(p, &event, call->hv->on_event_userdata);
        }
        return G_SOURCE_REMOVE;
}

static void queue_main_call(HvPartition *p, HvMainCallKind kind, uint32_t vp_index, const char *reason,
                            guint delay_ms)
{
        HvMainCall *call = g_new0(HvMainCall, 1);

        call->hv = p->hv;
        call->partition_id = p->id;
        call->kind = kind;
        call->vp_index = vp_index;
        call->reason = g_strdup(reason);
        if (delay_ms) {
                g_autoptr(GSource) source = g_timeout_source_new(delay_ms);

                g_source_set_callback(source, main_call_run, call, main_call_free);
                g_source_attach(source, p->hv->main_context);
                return;
        }
        g_main_context_invoke_full(p->hv->main_context, G_PRIORITY_DEFAULT, main_call_run, call,
                                   main_call_free);
}

void hv_queue_console_flush(HvPartition *p)
{
        queue_main_call(p, HV_MAIN_CALL_CONSOLE, 0, NULL, 0);
}

void hv_queue_mailbox_flush(HvPartition *p)
{
        queue_main_call(p, HV_MAIN_CALL_MAILBOX, 0, NULL, 0);
}

static void on_vp_halt(HvVp *vp, const char *reason, void *userdata)
{
        (void)userdata;
        queue_main_call(vp->partition, HV_MAIN_CALL_VP_STOPPED, vp->index, reason, 0);
}

int hv_compat_vector_build(const HvEngineOps *engine, int cpu_model, bool normalized, HvCompatVector *ret,
                           char **ret_error)
{
        HvCompatVector v = {.normalized = normalized,
                            .guest_abi_version = HV_ABI_VERSION,
                            .protocol_version = HV_WIRE_PROTOCOL_VERSION};
        const char *name = engine->cpu_model_name(cpu_model);
        g_autofree char *missing = NULL;
        int r;

        if (!name) {
                *ret_error =
                        g_strdup_printf("the %s engine has no CPU model number %d", engine->name, cpu_model);
                return -EINVAL;
        }
        v.n_cpuid = hv_cpuid_vector_leaves_count;
        memcpy(v.cpuid, hv_cpuid_vector_leaves, sizeof(HvCpuidLeaf) * v.n_cpuid);
        r = engine->cpuid_probe(cpu_model, v.cpuid, v.n_cpuid);
        if (r < 0) {
                *ret_error = g_strdup_printf("the %s engine cannot run CPU model %s: %s", engine->name, name,
                                             g_strerror(-r));
                return -EINVAL;
        }
        missing = hv_cpuid_baseline_missing(v.cpuid, v.n_cpuid);
        if (missing) {
                *ret_error =
                        g_strdup_printf("CPU model %s lacks %s, which every vmms guest needs", name, missing);
                return -EINVAL;
        }
        g_strlcpy(v.engine, engine->name, sizeof(v.engine));
        if (normalized) {
                g_strlcpy(v.engine_version, HV_CPUID_BASELINE_ENGINE_VERSION, sizeof(v.engine_version));
                g_strlcpy(v.cpu_model, HV_CPUID_BASELINE_NAME, sizeof(v.cpu_model));
                for (size_t i = 0; i < v.n_cpuid; i++)
                        hv_cpuid_normalized(v.cpuid[i].leaf, v.cpuid[i].subleaf, &v.cpuid[i]);
        } else {
                engine->version(v.engine_version, sizeof(v.engine_version));
                g_strlcpy(v.cpu_model, name, sizeof(v.cpu_model));
        }
        hv_cpuid_hash(v.cpuid, v.n_cpuid, v.cpuid_hash);
        *ret = v;
        return 0;
}

int hv_new(const HvConfig *config, GMainContext *main_context, Hv **ret)
{
        g_autoptr(Hv) hv = g_new0(Hv, 1);
        HvSchedConfig sched_config = {
                .n_lps = config->n_lps,
                .n_nodes = config->n_nodes,
                .slice_ns = config->slice_ns,
                .io_boost = config->io_boost,
                .ops = config->sched_ops,
                .engine = config->engine,
                .on_halt = on_vp_halt,
                .userdata = NULL,
        };
        int r;

        hv->main_context = g_main_context_ref(main_context);
        hv->main_tid = gettid(); /* the root-interface thread, for its counters */
        hv->engine = config->engine;
        hv->clock_base_ns = hv_clock_monotonic_ns();
        hv->next_partition_id = 1;
        hv->partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
        hv->cpu_model = config->cpu_model;
        {
                g_autofree char *why = NULL;

                r = hv_compat_vector_build(hv->engine, hv->cpu_model, false, &hv->vector_host, &why);
                if (r >= 0)
                        r = hv_compat_vector_build(hv->engine, hv->cpu_model, true, &hv->vector_normalized,
                                                   &why);
                if (r < 0) {
                        g_warning("hvd: %s", why);
                        return r;
                }
        }
        r = hv_pool_init(&hv->pool, config->pool_bytes);
        if (r < 0)
                return r;
        r = hv_sched_new(&sched_config, &hv->sched);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&hv);
        return 0;
}

void hv_free(Hv *hv)
{
        if (!hv)
                return;
        if (hv->partitions) {
                g_autoptr(GList) partitions = g_hash_table_get_values(hv->partitions);

                for (GList *l = partitions; l; l = l->next)
                        hv_partition_destroy(hv, l->data);
                g_hash_table_unref(hv->partitions);
        }
        hv_sched_free(hv->sched);
        if (hv->main_context)
                g_main_context_unref(hv->main_context);
        g_free(hv);
}

uint64_t hv_reference_time_ns(const Hv *hv)
{
        return hv_clock_monotonic_ns() - hv->clock_base_ns;
}

static void set_error(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void set_error(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (!ret_error)
                return;
        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
}

static bool name_valid(const char *name)
{
        size_t len = name ? strlen(name) : 0;

        if (len == 0 || len > HV_PARTITION_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!g_ascii_isalnum(name[i]) && !strchr("-_.", name[i]))
                        return false;
        return true;
}

uint64_t hv_capacity_pct(const Hv *hv)
{
        return 100ull * hv_sched_lp_count(hv->sched);
}

/* Reads what Linux knows of a host thread: "run_ns wait_ns timeslices". -ENOENT where
 * the kernel keeps no schedstat. */
int hv_thread_stat(pid_t tid, HvThreadStat *ret)
{
        char path[64], buf[128];
        FILE *f;
        HvThreadStat st;
        int n;

        if (tid <= 0)
                return -ENOENT;
        snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        n = fgets(buf, sizeof(buf), f)
                    ? sscanf(buf, "%" SCNu64 " %" SCNu64 " %" SCNu64, &st.run_ns, &st.wait_ns, &st.timeslices)
                    : 0;
        fclose(f);
        if (n != 3)
                return -EIO;
        *ret = st;
        return 0;
}

/* Admission control, as VMware does it: the host's reservations may not exceed its
 * capacity, so every reservation can be honoured at once. */
static int admit_reservation(Hv *hv, uint64_t old_pct, uint64_t new_pct, char **ret_error)
{
        uint64_t total = hv->reserved_pct - old_pct + new_pct;

        if (new_pct > old_pct && total > hv_capacity_pct(hv)) {
                set_error(ret_error,
                          "reservations would total %" G_GUINT64_FORMAT "%% of %" G_GUINT64_FORMAT
                          "%% capacity",
                          total, hv_capacity_pct(hv));
                return -ENOSPC;
        }
        return 0;
}

/* Validates everything (the worker is not trusted), admits the reservation, charges
 * the pool for the startup memory, places the partition on a NUMA node and registers
 * the VPs with the scheduler. */
int hv_partition_create(Hv *hv, const HvPartitionSpec *spec, HvPartition **ret, char **ret_error)
{
        g_autoptr(HvPartition) p = NULL;
        uint32_t vp_count = spec->vp_count;
        uint32_t max_vp_count = spec->max_vp_count ? spec->max_vp_count : HV_MAX_VPS_PER_PARTITION;
        uint64_t startup_bytes = spec->startup_bytes, maximum_bytes = spec->maximum_bytes, reserve_pct;
        int r;

        if (!name_valid(spec->name)) {
                set_error(ret_error, "name must be 1-%d characters of A-Z a-z 0-9 - _ .",
                          HV_PARTITION_NAME_MAX);
                return -EINVAL;
        }
        if (vp_count == 0 || vp_count > HV_MAX_VPS_PER_PARTITION) {
                set_error(ret_error, "vp_count %u is out of range 1-%d", vp_count, HV_MAX_VPS_PER_PARTITION);
                return -EINVAL;
        }
        if (max_vp_count < vp_count || max_vp_count > HV_MAX_VPS_PER_PARTITION) {
                set_error(ret_error, "maximum_vp_count %u is out of range %u-%d", max_vp_count, vp_count,
                          HV_MAX_VPS_PER_PARTITION);
                return -EINVAL;
        }
        if (startup_bytes < HV_PARTITION_MIN_BYTES || startup_bytes % HV_PAGE_SIZE != 0) {
                set_error(ret_error,
                          "startup_bytes %" G_GUINT64_FORMAT " must be a multiple of 4096 and at least %llu",
                          startup_bytes, HV_PARTITION_MIN_BYTES);
                return -EINVAL;
        }
        if (maximum_bytes < startup_bytes || maximum_bytes > HV_PARTITION_MAX_BYTES ||
            maximum_bytes % HV_PAGE_SIZE != 0) {
                set_error(ret_error,
                          "maximum_bytes %" G_GUINT64_FORMAT
                          " must be a multiple of 4096, at least startup_bytes "
                          "%" G_GUINT64_FORMAT " and at most %llu",
                          maximum_bytes, startup_bytes, HV_PARTITION_MAX_BYTES);
                return -EINVAL;
        }
        reserve_pct = (uint64_t)spec->processor.reserve_pct * vp_count;
        r = admit_reservation(hv, 0, reserve_pct, ret_error);
        if (r < 0)
                return r;
        if (startup_bytes > hv_pool_available(&hv->pool)) {
                set_error(ret_error,
                          "startup_bytes %" G_GUINT64_FORMAT
                          " exceeds the pool's available %" G_GUINT64_FORMAT " bytes",
                          startup_bytes, hv_pool_available(&hv->pool));
                return -ENOMEM;
        }
        r = hv_partition_new(hv, spec->name, vp_count, max_vp_count, startup_bytes, maximum_bytes, &p);
        if (r < 0) {
                set_error(ret_error, "cannot build the partition: %s", g_strerror(-r));
                return r;
        }
        r = hv_pool_charge(&hv->pool, startup_bytes);
        if (r < 0)
                return r;
        p->assigned_bytes = startup_bytes;
        p->processor = spec->processor; /* not in the scheduler yet: no lock needed */
        p->ganged = !spec->concurrent_vps;
        p->cpuid_normalized = spec->cpuid_normalized;
        p->restoring = spec->restoring;
        p->paused = spec->restoring; /* not in the scheduler yet: no lock needed */
        p->id = hv->next_partition_id++;
        hv_sched_partition_place(hv->sched, p);
        for (uint32_t i = 0; i < vp_count; i++) {
                r = hv_sched_vp_add(hv->sched, p->vps[i]);
                if (r < 0) {
                        hv_sched_partition_stop(hv->sched, p);
                        hv_pool_credit(&hv->pool, p->assigned_bytes);
                        set_error(ret_error, "the scheduler refused the VPs: %s", g_strerror(-r));
                        return r;
                }
        }
        hv->reserved_pct += reserve_pct;
        g_hash_table_insert(hv->partitions, &p->id, p);
        *ret = g_steal_pointer(&p);
        return 0;
}

/* Set-VMProcessor on a running partition: admitted like a new one, then applied by
 * the scheduler from its next decision. */
int hv_partition_set_processor(Hv *hv, HvPartition *p, const HvProcessorSettings *settings, char **ret_error)
{
        uint32_t vps = p->vp_count;
        int r;

        r = admit_reservation(hv, (uint64_t)p->processor.reserve_pct * vps,
                              (uint64_t)settings->reserve_pct * vps, ret_error);
        if (r < 0)
                return r;
        hv->reserved_pct = hv->reserved_pct - (uint64_t)p->processor.reserve_pct * vps +
                           (uint64_t)settings->reserve_pct * vps;
        hv_sched_partition_set_processor(hv->sched, p, settings);
        return 0;
}

/* Hot-adds VP number p->vp_count and starts it at `regs`. The VP is published in
 * p->vps before vp_count grows, so readers on other threads never see a hole. */
int hv_partition_vp_add(Hv *hv, HvPartition *p, const HvVpRegs *regs, uint32_t *ret_index, char **ret_error)
{
        uint32_t index = p->vp_count;
        HvVp *vp;
        int r;

        if (index >= p->max_vp_count) {
                set_error(ret_error, "partition already has its maximum of %u VPs", p->max_vp_count);
                return -ENOSPC;
        }
        if (!hv_partition_range_valid(p, regs->rip, 1) || regs->rsp < 8 ||
            !hv_partition_range_valid(p, regs->rsp - 8, 8)) {
                set_error(ret_error, "rip or rsp lies outside the partition's visible RAM");
                return -ERANGE;
        }
        r = admit_reservation(hv, 0, p->processor.reserve_pct, ret_error);
        if (r < 0)
                return r;
        r = hv_partition_vp_new(p, &vp);
        if (r < 0) {
                set_error(ret_error, "cannot build the VP: %s", g_strerror(-r));
                return r;
        }
        r = hv_sched_vp_add(hv->sched, vp);
        if (r < 0) {
                hv->engine->vp_free(vp->engine);
                g_free(vp);
                set_error(ret_error, "the scheduler refused the VP: %s", g_strerror(-r));
                return r;
        }
        p->vps[index] = vp;
        atomic_store_explicit(&p->vp_count, index + 1, memory_order_release);
        hv->reserved_pct += p->processor.reserve_pct;
        r = hv_partition_vp_start(p, index, regs);
        if (r < 0) {
                set_error(ret_error, "cannot start the VP: %s", g_strerror(-r));
                return r; /* it stays, stopped, counted; the partition is otherwise fine */
        }
        *ret_index = index;
        return 0;
}

void hv_partition_destroy(Hv *hv, HvPartition *p)
{
        hv_sched_partition_stop(hv->sched, p);
        g_hash_table_remove(hv->partitions, &p->id);
        hv_pool_credit(&hv->pool, p->assigned_bytes);
        hv->reserved_pct -= (uint64_t)p->processor.reserve_pct * p->vp_count;
        hv_partition_free(p);
}

HvPartition *hv_partition_lookup(Hv *hv, uint64_t id)
{
        return g_hash_table_lookup(hv->partitions, &id);
}
