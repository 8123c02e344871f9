/* The hypervisor context: pool, scheduler, partitions, and events to the main thread. */
#include <errno.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-clock.h"
#include "hv.h"

#define HV_PARTITION_NAME_MAX 64
#define HV_PARTITION_MIN_BYTES (4ull << 20) /* room for boot data, stacks and the 1 MiB kernel base */
#define HV_PARTITION_MAX_BYTES (1ull << 40)

typedef struct HvMainCall {
        Hv *hv;
        uint64_t partition_id;
        HvEventKind kind;
        uint32_t vp_index;
        char *reason;
} HvMainCall;

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
                hv->on_event(p, &event, hv->on_event_userdata);
}

static gboolean main_call_run(gpointer data)
{
        HvMainCall *call = data;
        HvPartition *p = hv_partition_lookup(call->hv, call->partition_id);

        if (!p)
                return G_SOURCE_REMOVE;
        deliver_console(call->hv, p); /* a halt's last words come before the halt */
        if (call->kind == HV_EVENT_VP_STOPPED && call->hv->on_event) {
                HvEvent event = {
                        .kind = HV_EVENT_VP_STOPPED, .vp_index = call->vp_index, .reason = call->reason};

                call->hv->on_event(p, &event, call->hv->on_event_userdata);
        }
        return G_SOURCE_REMOVE;
}

static void queue_main_call(HvPartition *p, HvEventKind kind, uint32_t vp_index, const char *reason)
{
        HvMainCall *call = g_new0(HvMainCall, 1);

        call->hv = p->hv;
        call->partition_id = p->id;
        call->kind = kind;
        call->vp_index = vp_index;
        call->reason = g_strdup(reason);
        g_main_context_invoke_full(p->hv->main_context, G_PRIORITY_DEFAULT, main_call_run, call,
                                   main_call_free);
}

void hv_queue_console_flush(HvPartition *p)
{
        queue_main_call(p, HV_EVENT_CONSOLE, 0, NULL);
}

static void on_vp_halt(HvVp *vp, const char *reason, void *userdata)
{
        (void)userdata;
        queue_main_call(vp->partition, HV_EVENT_VP_STOPPED, vp->index, reason);
}

int hv_new(const HvConfig *config, GMainContext *main_context, Hv **ret)
{
        g_autoptr(Hv) hv = g_new0(Hv, 1);
        HvSchedConfig sched_config = {
                .n_lps = config->n_lps,
                .slice_ns = config->slice_ns,
                .ops = config->sched_ops,
                .engine = config->engine,
                .on_halt = on_vp_halt,
                .userdata = NULL,
        };
        int r;

        hv->main_context = g_main_context_ref(main_context);
        hv->engine = config->engine;
        hv->clock_base_ns = hv_clock_monotonic_ns();
        hv->next_partition_id = 1;
        hv->partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
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

/* Validates everything (the worker is not trusted), charges the pool for the startup
 * memory, and registers the VPs with the scheduler. */
int hv_partition_create(Hv *hv, const char *name, uint32_t vp_count, uint64_t startup_bytes,
                        uint64_t maximum_bytes, HvPartition **ret, char **ret_error)
{
        g_autoptr(HvPartition) p = NULL;
        int r;

        if (!name_valid(name)) {
                set_error(ret_error, "name must be 1-%d characters of A-Z a-z 0-9 - _ .",
                          HV_PARTITION_NAME_MAX);
                return -EINVAL;
        }
        if (vp_count == 0 || vp_count > HV_MAX_VPS_PER_PARTITION) {
                set_error(ret_error, "vp_count %u is out of range 1-%d", vp_count, HV_MAX_VPS_PER_PARTITION);
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
        if (startup_bytes > hv_pool_available(&hv->pool)) {
                set_error(ret_error,
                          "startup_bytes %" G_GUINT64_FORMAT
                          " exceeds the pool's available %" G_GUINT64_FORMAT " bytes",
                          startup_bytes, hv_pool_available(&hv->pool));
                return -ENOMEM;
        }
        r = hv_partition_new(hv, name, vp_count, startup_bytes, maximum_bytes, &p);
        if (r < 0) {
                set_error(ret_error, "cannot build the partition: %s", g_strerror(-r));
                return r;
        }
        r = hv_pool_charge(&hv->pool, startup_bytes);
        if (r < 0)
                return r;
        p->assigned_bytes = startup_bytes;
        p->id = hv->next_partition_id++;
        for (uint32_t i = 0; i < vp_count; i++) {
                r = hv_sched_vp_add(hv->sched, p->vps[i]);
                if (r < 0) {
                        hv_sched_partition_stop(hv->sched, p);
                        hv_pool_credit(&hv->pool, p->assigned_bytes);
                        set_error(ret_error, "the scheduler refused the VPs: %s", g_strerror(-r));
                        return r;
                }
        }
        g_hash_table_insert(hv->partitions, &p->id, p);
        *ret = g_steal_pointer(&p);
        return 0;
}

void hv_partition_destroy(Hv *hv, HvPartition *p)
{
        hv_sched_partition_stop(hv->sched, p);
        g_hash_table_remove(hv->partitions, &p->id);
        hv_pool_credit(&hv->pool, p->assigned_bytes);
        hv_partition_free(p);
}

HvPartition *hv_partition_lookup(Hv *hv, uint64_t id)
{
        return g_hash_table_lookup(hv->partitions, &id);
}
