/* The cluster's settings (Get-Cluster, Set-Cluster) at /vmms/settings: a packed
 * vmms.v1.ClusterSettings. Any host writes them, by a transaction that compares the key's
 * revision with the one it read (created only where absent); the leader reads them each
 * pass, and writes its own vmmsd --cluster-auto-balance there, fenced, while none are. */
#include <errno.h>
#include <string.h>

#include <gio/gio.h>

#include "vmms-cluster-private.h"

#define SETTINGS_KEY CLUSTER_PREFIX "settings"
#define SET_ATTEMPTS 5 /* writes that lost to another in a row before Set-Cluster gives up */
#define CALL_TIMEOUT_MIN_MS 2000

/* This host's defaults: what the leader writes while the key is absent. */
static void defaults(const VmmsCluster *c, Vmms__V1__ClusterSettings *out)
{
        vmms__v1__cluster_settings__init(out);
        out->auto_balance = c->auto_balance_pct != 0;
        out->auto_balance_threshold =
                c->auto_balance_pct ? c->auto_balance_pct : VMMS_CLUSTER_AUTO_BALANCE_DEFAULT;
        out->auto_balance_cpu_wait_us = VMMS_CLUSTER_CPU_WAIT_DEFAULT_US;
        out->updated_by = c->host_name;
}

static GBytes *settings_pack(const Vmms__V1__ClusterSettings *s)
{
        size_t len = vmms__v1__cluster_settings__get_packed_size(s);
        uint8_t *buf = g_malloc(len ? len : 1);

        vmms__v1__cluster_settings__pack(s, buf);
        return g_bytes_new_take(buf, len);
}

/* The settings a value holds, checked: a value out of range is never acted on. */
static Vmms__V1__ClusterSettings *settings_unpack(const ProtobufCBinaryData *value)
{
        Vmms__V1__ClusterSettings *s = vmms__v1__cluster_settings__unpack(NULL, value->len, value->data);

        if (s && (s->auto_balance_threshold < VMMS_CLUSTER_AUTO_BALANCE_MIN ||
                  s->auto_balance_threshold > VMMS_CLUSTER_AUTO_BALANCE_MAX ||
                  s->auto_balance_cpu_wait_us < VMMS_CLUSTER_CPU_WAIT_MIN_US ||
                  s->auto_balance_cpu_wait_us > VMMS_CLUSTER_CPU_WAIT_MAX_US)) {
                vmms__v1__cluster_settings__free_unpacked(s, NULL);
                return NULL;
        }
        return s;
}

int cluster_settings_leader(VmmsCluster *c, int64_t token, Vmms__V1__ClusterSettings **ret, char **ret_error)
{
        Etcdserverpb__RangeResponse *range = NULL;
        Vmms__V1__ClusterSettings *s = NULL;
        int r;

        r = vmms_etcd_range(c->etcd, SETTINGS_KEY, NULL, c->period_ms, &range, ret_error);
        if (r < 0)
                return r;
        if (range->n_kvs == 1) {
                s = settings_unpack(&range->kvs[0]->value);
                if (!s) {
                        *ret_error =
                                g_strdup_printf("%s holds no ClusterSettings this version reads (Set-Cluster "
                                                "writes them again)",
                                                SETTINGS_KEY);
                        r = -EBADMSG;
                }
        } else {
                Vmms__V1__ClusterSettings first;
                Etcdserverpb__Compare absent = ETCDSERVERPB__COMPARE__INIT;
                g_autoptr(GBytes) packed = NULL;
                gsize len;
                const uint8_t *data;

                defaults(c, &first);
                first.stored = true;
                first.updated_unix_ms = g_get_real_time() / 1000;
                packed = settings_pack(&first);
                data = g_bytes_get_data(packed, &len);
                absent.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
                absent.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
                absent.key =
                        (ProtobufCBinaryData){.data = (uint8_t *)SETTINGS_KEY, .len = strlen(SETTINGS_KEY)};
                absent.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
                absent.create_revision = 0;
                r = cluster_leader_put(c, token, &absent, absent.key, data, len, ret_error);
                if (r > 0) {
                        cluster_notify(
                                c, "cluster-settings",
                                "leader %s (token %" G_GINT64_FORMAT "): the cluster's settings are "
                                "this host's defaults: auto-balance %s, threshold %u %%, CPU wait %u µs",
                                c->host_name, token, first.auto_balance ? "on" : "off",
                                first.auto_balance_threshold, first.auto_balance_cpu_wait_us);
                        s = vmms__v1__cluster_settings__unpack(NULL, len, data);
                }
                /* Refused: deposed, or a Set-Cluster came first; the next pass reads it. */
                r = r < 0 ? r : 0;
        }
        vmms_etcd_range_free(range);
        *ret = s;
        return r;
}

/* ---- Get-Cluster, Set-Cluster (GTask threads) ---- */

typedef struct SettingsJob {
        VmmsEtcd *etcd;
        VmmsCall *call;
        int64_t timeout_ms;
        Vmms__V1__ClusterSettings defaults;
        char *host_name;
        bool set;
        Vmms__V1__SetClusterRequest change; /* the fields update_mask names */
        bool change_auto_balance, change_threshold, change_cpu_wait;
        /* The answer */
        VmmsError error;
        Vmms__V1__ClusterSettings *result; /* NULL: the defaults */
} SettingsJob;

static void settings_job_free(SettingsJob *j)
{
        vmms_etcd_unref(j->etcd);
        g_free(j->host_name);
        vmms_error_clear(&j->error);
        if (j->result)
                vmms__v1__cluster_settings__free_unpacked(j->result, NULL);
        g_free(j);
}

/* Set-Cluster: read, change, write back if the key has not changed since; again if it has. */
static void settings_set(SettingsJob *j)
{
        g_autofree char *why = NULL;

        for (unsigned attempt = 0; attempt < SET_ATTEMPTS; attempt++) {
                Etcdserverpb__RangeResponse *range = NULL;
                Etcdserverpb__KeyValue *current = NULL;
                Etcdserverpb__TxnResponse *resp = NULL;
                Vmms__V1__ClusterSettings *stored = NULL, next;
                g_autoptr(GBytes) packed = NULL;
                int r;

                if (vmms_etcd_range(j->etcd, SETTINGS_KEY, NULL, j->timeout_ms, &range, &why) < 0)
                        break;
                stored = range->n_kvs == 1 ? settings_unpack(&range->kvs[0]->value) : NULL;
                next = stored ? *stored : j->defaults;
                if (j->change_auto_balance)
                        next.auto_balance = j->change.auto_balance;
                if (j->change_threshold)
                        next.auto_balance_threshold = j->change.auto_balance_threshold;
                if (j->change_cpu_wait)
                        next.auto_balance_cpu_wait_us = j->change.auto_balance_cpu_wait_us;
                next.updated_by = j->host_name;
                next.updated_unix_ms = g_get_real_time() / 1000;
                next.stored = true;
                packed = settings_pack(&next);
                r = cluster_guarded_write(j->etcd, SETTINGS_KEY, range->n_kvs == 0,
                                          range->n_kvs ? range->kvs[0]->mod_revision : 0, packed,
                                          j->timeout_ms, &current, &resp, &why);
                if (stored)
                        vmms__v1__cluster_settings__free_unpacked(stored, NULL);
                vmms_etcd_range_free(range);
                if (resp)
                        etcdserverpb__txn_response__free_unpacked(resp, NULL);
                if (r < 0)
                        break;
                if (r > 0) {
                        gsize len;
                        const uint8_t *data = g_bytes_get_data(packed, &len);

                        j->result = vmms__v1__cluster_settings__unpack(NULL, len, data);
                        return;
                }
                g_clear_pointer(&why, g_free); /* another write came between: read again */
        }
        if (why)
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "cannot write the cluster's settings: %s",
                               why);
        else
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot write the cluster's settings: they changed under %d writes in a row",
                               SET_ATTEMPTS);
}

static void settings_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        SettingsJob *j = task_data;
        g_autofree char *why = NULL;
        Etcdserverpb__RangeResponse *range = NULL;

        (void)source;
        (void)cancellable;
        if (j->set) {
                settings_set(j);
        } else if (vmms_etcd_range(j->etcd, SETTINGS_KEY, NULL, j->timeout_ms, &range, &why) < 0) {
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "cannot read the cluster's settings: %s",
                               why);
        } else if (range->n_kvs == 1 && !(j->result = settings_unpack(&range->kvs[0]->value))) {
                vmms_error_set(
                        &j->error, VMMS_ERROR_INTERNAL,
                        "%s holds no ClusterSettings this version reads (Set-Cluster writes them again)",
                        SETTINGS_KEY);
        }
        vmms_etcd_range_free(range);
        g_task_return_boolean(task, TRUE);
}

static void settings_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        SettingsJob *j = g_task_get_task_data(G_TASK(result));
        const Vmms__V1__ClusterSettings *s = j->result ? j->result : &j->defaults;
        Vmms__V1__ClusterSettings *out;

        (void)source;
        (void)userdata;
        if (j->error.code) {
                vmms_call_fail_with(j->call, &j->error);
                return;
        }
        out = vmms_call_new0(j->call, Vmms__V1__ClusterSettings);
        *out = *s;
        out->updated_by = vmms_call_strdup(j->call, s->updated_by);
        vmms_call_return(j->call, &out->base);
}

static SettingsJob *settings_job_new(VmmsCluster *c, VmmsCall *call)
{
        SettingsJob *j = g_new0(SettingsJob, 1);

        j->etcd = vmms_etcd_ref(c->etcd);
        j->call = call;
        j->timeout_ms = MAX(c->period_ms, CALL_TIMEOUT_MIN_MS);
        j->host_name = g_strdup(c->host_name);
        defaults(c, &j->defaults);
        j->defaults.updated_by = j->host_name;
        return j;
}

static void settings_job_start(SettingsJob *j)
{
        g_autoptr(GTask) task = g_task_new(NULL, NULL, settings_done, NULL);

        g_task_set_task_data(task, j, (GDestroyNotify)settings_job_free);
        g_task_run_in_thread(task, settings_run);
}

void vmms_cluster_get_settings(VmmsCluster *c, VmmsCall *call)
{
        settings_job_start(settings_job_new(c, call));
}

void vmms_cluster_set_settings(VmmsCluster *c, const Vmms__V1__SetClusterRequest *request, VmmsCall *call)
{
        SettingsJob *j;
        bool auto_balance = false, threshold = false, cpu_wait = false;

        if (request->n_update_mask == 0) {
                vmms_call_fail(call, VMMS_ERROR_INVALID_ARGUMENT,
                               "Set-Cluster names no setting to change (update_mask: auto_balance, "
                               "auto_balance_threshold, auto_balance_cpu_wait_us)");
                return;
        }
        for (size_t i = 0; i < request->n_update_mask; i++) {
                const char *name = request->update_mask[i];

                if (strcmp(name, "auto_balance") == 0) {
                        auto_balance = true;
                } else if (strcmp(name, "auto_balance_threshold") == 0) {
                        threshold = true;
                        if (request->auto_balance_threshold < VMMS_CLUSTER_AUTO_BALANCE_MIN ||
                            request->auto_balance_threshold > VMMS_CLUSTER_AUTO_BALANCE_MAX) {
                                vmms_call_fail(
                                        call, VMMS_ERROR_INVALID_ARGUMENT,
                                        "AutoBalanceThreshold %u is out of range %d-%d (an Average Pressure, "
                                        "%%, over which a host is over-committed)",
                                        request->auto_balance_threshold, VMMS_CLUSTER_AUTO_BALANCE_MIN,
                                        VMMS_CLUSTER_AUTO_BALANCE_MAX);
                                return;
                        }
                } else if (strcmp(name, "auto_balance_cpu_wait_us") == 0) {
                        cpu_wait = true;
                        if (request->auto_balance_cpu_wait_us < VMMS_CLUSTER_CPU_WAIT_MIN_US ||
                            request->auto_balance_cpu_wait_us > VMMS_CLUSTER_CPU_WAIT_MAX_US) {
                                vmms_call_fail(
                                        call, VMMS_ERROR_INVALID_ARGUMENT,
                                        "AutoBalanceCpuWait %u is out of range %d-%d (a CPU Wait Time Per "
                                        "Dispatch, µs, at or over which a host is over-committed by CPU)",
                                        request->auto_balance_cpu_wait_us, VMMS_CLUSTER_CPU_WAIT_MIN_US,
                                        VMMS_CLUSTER_CPU_WAIT_MAX_US);
                                return;
                        }
                } else {
                        vmms_call_fail(
                                call, VMMS_ERROR_INVALID_ARGUMENT,
                                "Set-Cluster has no setting '%s' (auto_balance, auto_balance_threshold, "
                                "auto_balance_cpu_wait_us)",
                                name);
                        return;
                }
        }
        j = settings_job_new(c, call);
        j->set = true;
        j->change.auto_balance = request->auto_balance;
        j->change.auto_balance_threshold = request->auto_balance_threshold;
        j->change.auto_balance_cpu_wait_us = request->auto_balance_cpu_wait_us;
        j->change_auto_balance = auto_balance;
        j->change_threshold = threshold;
        j->change_cpu_wait = cpu_wait;
        settings_job_start(j);
}
