/* Placement: the VMs' owner keys in etcd (the rules are in vmms-cluster.h). Reads and
 * transactions run on the cluster thread (sync) or on a GTask thread (claim, hand-over,
 * resolve, list); answers come back on the main thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>

#include "vmms-cluster-private.h"
#include "vmms-proto.h"

#define CALL_TIMEOUT_MIN_MS 2000

char *cluster_vm_key(const char *vm_id)
{
        return g_strconcat(VMS_PREFIX, vm_id, NULL);
}

static ProtobufCBinaryData bytes_of(const char *text)
{
        return (ProtobufCBinaryData){.data = (uint8_t *)text, .len = strlen(text)};
}

/* ---- The VM as placement writes it (main thread) ---- */

/* The definition and state, not the figures that change every second: a key is
 * rewritten when the VM changes, not at each sample. */
static GBytes *vm_pack(const VmmsVm *vm)
{
        Vmms__V1__Vm out = VMMS__V1__VM__INIT;
        Vmms__V1__ProcessorSettings p = VMMS__V1__PROCESSOR_SETTINGS__INIT;
        Vmms__V1__MemorySettings mem = VMMS__V1__MEMORY_SETTINGS__INIT;
        const VmmsVmDefinition *d = &vm->def;
        size_t len;
        uint8_t *buf;

        out.id = (char *)d->id;
        out.name = d->name;
        out.state = vmms_proto_vm_state(d->state);
        p.count = d->processor.count;
        p.reserve = d->processor.reserve;
        p.maximum = d->processor.maximum;
        p.relative_weight = d->processor.relative_weight;
        p.compatibility_for_migration_enabled = d->processor.compatibility_for_migration;
        out.processor = &p;
        mem.dynamic_memory_enabled = d->memory.dynamic_memory_enabled;
        mem.startup_bytes = d->memory.startup_bytes;
        mem.minimum_bytes = d->memory.minimum_bytes;
        mem.maximum_bytes = d->memory.maximum_bytes;
        mem.buffer = d->memory.buffer;
        mem.priority = d->memory.priority;
        mem.paging_bytes = d->memory.paging_bytes;
        mem.goal_seeking = d->memory.goal_seeking;
        out.memory = &mem;
        out.workload = d->workload ? d->workload : (char *)"";
        out.boot_args = d->boot_args ? d->boot_args : (char *)"";
        out.notes = d->notes ? d->notes : (char *)"";
        out.engine = d->engine ? d->engine : (char *)"";
        out.highly_available = d->highly_available;
        out.created_unix_ms = d->created_unix_ms;
        out.updated_unix_ms = d->updated_unix_ms;
        len = vmms__v1__vm__get_packed_size(&out);
        buf = g_malloc(len ? len : 1);
        vmms__v1__vm__pack(&out, buf);
        return g_bytes_new_take(buf, len);
}

GHashTable *cluster_placement_snapshot(VmmsCluster *c)
{
        GHashTable *local =
                g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_bytes_unref);
        GPtrArray *vms = vmms_manager_vms(c->m);

        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                g_hash_table_insert(local, g_strdup(vm->def.id), vm_pack(vm));
        }
        return local;
}

/* ---- Transactions on one owner key ---- */

static GBytes *cluster_vm_pack(const char *host, GBytes *vm)
{
        Vmms__V1__ClusterVm cv = VMMS__V1__CLUSTER_VM__INIT;
        gsize vlen;
        const uint8_t *vdata = g_bytes_get_data(vm, &vlen);
        Vmms__V1__Vm *unpacked = vmms__v1__vm__unpack(NULL, vlen, vdata);
        size_t len;
        uint8_t *buf;

        cv.host = (char *)host;
        cv.vm = unpacked;
        cv.updated_unix_ms = g_get_real_time() / 1000;
        len = vmms__v1__cluster_vm__get_packed_size(&cv);
        buf = g_malloc(len ? len : 1);
        vmms__v1__cluster_vm__pack(&cv, buf);
        if (unpacked)
                vmms__v1__vm__free_unpacked(unpacked, NULL);
        return g_bytes_new_take(buf, len);
}

int cluster_guarded_write(VmmsEtcd *etcd, const char *key, bool create, int64_t rev, GBytes *value,
                          int64_t timeout_ms, Etcdserverpb__KeyValue **ret_current,
                          Etcdserverpb__TxnResponse **ret_resp, char **ret_error)
{
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
        Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, get = ETCDSERVERPB__REQUEST_OP__INIT;
        Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
        Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        Etcdserverpb__RangeRequest range = ETCDSERVERPB__RANGE_REQUEST__INIT;
        Etcdserverpb__Compare *cmps[] = {&cmp};
        Etcdserverpb__RequestOp *success[] = {&op}, *failure[] = {&get};
        Etcdserverpb__TxnResponse *resp = NULL;
        gsize vlen = 0;
        int r;

        cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        cmp.key = bytes_of(key);
        if (create) {
                cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
                cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
                cmp.create_revision = 0;
        } else {
                cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
                cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
                cmp.mod_revision = rev;
        }
        if (value) {
                put.key = cmp.key;
                put.value.data = (uint8_t *)g_bytes_get_data(value, &vlen);
                put.value.len = vlen;
                op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
                op.request_put = &put;
        } else {
                del.key = cmp.key;
                op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
                op.request_delete_range = &del;
        }
        range.key = cmp.key;
        get.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        get.request_range = &range;
        txn.n_compare = 1;
        txn.compare = cmps;
        txn.n_success = 1;
        txn.success = success;
        txn.n_failure = 1;
        txn.failure = failure;
        r = vmms_etcd_txn(etcd, &txn, timeout_ms, &resp, ret_error);
        if (r < 0)
                return r;
        *ret_current = NULL;
        if (!resp->succeeded && resp->n_responses == 1 && resp->responses[0]->response_range &&
            resp->responses[0]->response_range->n_kvs == 1)
                *ret_current = resp->responses[0]->response_range->kvs[0];
        *ret_resp = resp; /* owns *ret_current */
        return resp->succeeded ? 1 : 0;
}

static Vmms__V1__ClusterVm *cluster_vm_unpack(const Etcdserverpb__KeyValue *kv)
{
        return kv ? vmms__v1__cluster_vm__unpack(NULL, kv->value.len, kv->value.data) : NULL;
}

/* ---- Sync (cluster thread) ---- */

static bool same_vm(const Vmms__V1__ClusterVm *cv, GBytes *vm)
{
        g_autofree uint8_t *packed = NULL;
        size_t len;

        if (!cv->vm)
                return false;
        len = vmms__v1__vm__get_packed_size(cv->vm);
        packed = g_malloc(len ? len : 1);
        vmms__v1__vm__pack(cv->vm, packed);
        return len == g_bytes_get_size(vm) && memcmp(packed, g_bytes_get_data(vm, NULL), len) == 0;
}

/* One local VM's key: created if absent, rewritten if this host owns it and it changed. */
static int sync_one(VmmsCluster *c, const char *id, GBytes *vm, const Etcdserverpb__KeyValue *kv,
                    char **ret_error)
{
        g_autofree char *key = cluster_vm_key(id);
        g_autoptr(GBytes) value = NULL;
        Vmms__V1__ClusterVm *cv = cluster_vm_unpack(kv);
        Etcdserverpb__KeyValue *current = NULL;
        Etcdserverpb__TxnResponse *resp = NULL;
        int r = 0;

        if (kv && (!cv || strcmp(cv->host, c->host_name) != 0 || (same_vm(cv, vm) && !cv->restart)))
                goto out; /* another host's (placement leaves it alone), or unchanged */
        value = cluster_vm_pack(c->host_name, vm);
        r = cluster_guarded_write(c->etcd, key, !kv, kv ? kv->mod_revision : 0, value, c->period_ms, &current,
                                  &resp, ret_error);
        /* A compare that failed: the key changed since the range; the next pass sees how. */
        if (resp)
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
out:
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        return r < 0 ? r : 0;
}

/* A removed VM's key, if this host still owns it. */
static int delete_removed(VmmsCluster *c, const char *id, char **ret_error)
{
        g_autofree char *key = cluster_vm_key(id);
        Etcdserverpb__RangeResponse *range = NULL;
        Etcdserverpb__KeyValue *current = NULL;
        Etcdserverpb__TxnResponse *resp = NULL;
        Vmms__V1__ClusterVm *cv = NULL;
        int r;

        r = vmms_etcd_range(c->etcd, key, NULL, c->period_ms, &range, ret_error);
        if (r < 0)
                return r;
        cv = range->n_kvs == 1 ? cluster_vm_unpack(range->kvs[0]) : NULL;
        if (cv && strcmp(cv->host, c->host_name) == 0)
                r = cluster_guarded_write(c->etcd, key, false, range->kvs[0]->mod_revision, NULL,
                                          c->period_ms, &current, &resp, ret_error);
        if (resp)
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        etcdserverpb__range_response__free_unpacked(range, NULL);
        return r < 0 ? r : 0;
}

/* ---- Stale keys (cluster thread) ---- */

typedef struct StaleKey {
        int64_t mod_revision; /* the key as first seen stale */
        int64_t since_us;     /* monotonic */
} StaleKey;

/* A key naming this host, without restart, for a VM this host does not have: deleted once
 * it has stayed so, unchanged, for a lease TTL (cluster_placement_sync's rules). */
static int stale_reconcile(VmmsCluster *c, const char *id, const Etcdserverpb__KeyValue *kv,
                           const Vmms__V1__ClusterVm *cv, char **ret_error)
{
        StaleKey *seen = g_hash_table_lookup(c->stale, id);
        int64_t now = g_get_monotonic_time();
        g_autofree char *key = NULL;
        Etcdserverpb__KeyValue *current = NULL;
        Etcdserverpb__TxnResponse *resp = NULL;
        int r;

        if (!seen || seen->mod_revision != kv->mod_revision) {
                seen = g_new(StaleKey, 1);
                seen->mod_revision = kv->mod_revision;
                seen->since_us = now;
                g_hash_table_insert(c->stale, g_strdup(id), seen);
                return 0;
        }
        if (now - seen->since_us < (int64_t)c->lease_ttl_s * G_USEC_PER_SEC)
                return 0;
        key = cluster_vm_key(id);
        r = cluster_guarded_write(c->etcd, key, false, kv->mod_revision, NULL, c->period_ms, &current, &resp,
                                  ret_error);
        if (r > 0)
                cluster_notify(
                        c, "cluster-reconcile",
                        "owner key %s named %s for VM '%s', which this host does not have (its store "
                        "restored or replaced, the VM removed while etcd was unreachable, or a move in "
                        "given up): deleted; a host that has the VM takes the key again",
                        key, c->host_name, cv->vm ? cv->vm->name : id);
        if (resp)
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
        g_hash_table_remove(c->stale, id);
        return r < 0 ? r : 0;
}

/* ---- What the main thread is asked to do ---- */

typedef struct PlacementRequest {
        VmmsCluster *c;
        GBytes *cluster_vm; /* the key's value */
        bool turn_off;      /* a VM running here that another host owns */
} PlacementRequest;

static gboolean request_deliver(gpointer userdata)
{
        PlacementRequest *q = userdata;
        gsize len;
        const uint8_t *data = g_bytes_get_data(q->cluster_vm, &len);
        Vmms__V1__ClusterVm *cv;
        VmmsVm *vm;

        if (!q->turn_off) {
                cluster_placement_restart_here(q->c, q->cluster_vm);
                return G_SOURCE_REMOVE;
        }
        cv = vmms__v1__cluster_vm__unpack(NULL, len, data);
        vm = cv && cv->vm ? vmms_manager_lookup(q->c->m, cv->vm->id, NULL) : NULL;
        /* A VM in a job (a move hands its key over before COMMIT) is not another's yet. */
        if (vm && !vm->job && (vm->def.state == VMMS_VM_RUNNING || vm->def.state == VMMS_VM_PAUSED)) {
                g_autofree char *why = g_strdup_printf("turned off: the cluster gave it to %s", cv->host);

                g_warning("cluster: VM '%s' %s", vm->def.name, why);
                vmms_vm_record_event(vm, "cluster-fenced", why);
                vmms_vm_stop(vm, true, true, NULL);
        }
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        return G_SOURCE_REMOVE;
}

static void request_free(gpointer userdata)
{
        PlacementRequest *q = userdata;

        g_bytes_unref(q->cluster_vm);
        g_free(q);
}

static void request(VmmsCluster *c, const Etcdserverpb__KeyValue *kv, bool turn_off)
{
        PlacementRequest *q = g_new0(PlacementRequest, 1);

        q->c = c;
        q->cluster_vm = g_bytes_new(kv->value.data, kv->value.len);
        q->turn_off = turn_off;
        g_main_context_invoke_full(c->main_context, G_PRIORITY_DEFAULT, request_deliver, q, request_free);
}

static bool state_live(Vmms__V1__VmState state)
{
        return state == VMMS__V1__VM_STATE__VM_STATE_RUNNING ||
               state == VMMS__V1__VM_STATE__VM_STATE_PAUSED || state == VMMS__V1__VM_STATE__VM_STATE_STARTING;
}

/* The key as Move-VM's hand-over wrote it (the VM still Migrating, as the source packed
 * it): the destination has not written it as its own yet. A source restarted in doubt
 * (vmms_vm_move_recover) keeps its copy until the destination does, or the key comes back
 * (the destination gave the move up and its stale key went). */
static bool handed_over_unconfirmed(const Vmms__V1__ClusterVm *cv)
{
        return cv->vm && cv->vm->state == VMMS__V1__VM_STATE__VM_STATE_MIGRATING;
}

static Vmms__V1__VmState local_state(GBytes *vm)
{
        gsize len;
        const uint8_t *data = g_bytes_get_data(vm, &len);
        Vmms__V1__Vm *v = vmms__v1__vm__unpack(NULL, len, data);
        Vmms__V1__VmState state = v ? v->state : VMMS__V1__VM_STATE__VM_STATE_UNSPECIFIED;

        if (v)
                vmms__v1__vm__free_unpacked(v, NULL);
        return state;
}

int cluster_placement_sync(VmmsCluster *c, GHashTable *local, GHashTable *removed, char **ret_error)
{
        g_autofree char *end = vmms_etcd_prefix_end(VMS_PREFIX);
        g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
        g_autoptr(GHashTable) stale = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        Etcdserverpb__RangeResponse *range = NULL;
        GHashTableIter it;
        gpointer id, vm;
        int r = 0;

        g_hash_table_iter_init(&it, removed);
        while (r >= 0 && g_hash_table_iter_next(&it, &id, NULL))
                if (!g_hash_table_contains(local, id)) /* a VM removed, then a VM of that id again */
                        r = delete_removed(c, id, ret_error);
        if (r < 0)
                return r;
        r = vmms_etcd_range(c->etcd, VMS_PREFIX, end, c->period_ms, &range, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < range->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = range->kvs[i];
                g_autofree char *kid = g_strndup((const char *)kv->key.data + strlen(VMS_PREFIX),
                                                 kv->key.len - strlen(VMS_PREFIX));
                gpointer mine = NULL;
                bool here = g_hash_table_lookup_extended(local, kid, &id, &mine);
                Vmms__V1__ClusterVm *cv = cluster_vm_unpack(kv);
                bool owned = cv && strcmp(cv->host, c->host_name) == 0;

                if (here)
                        g_hash_table_add(seen, id);
                if (owned && cv->restart && (!here || !state_live(local_state(mine))))
                        request(c, kv, false); /* the leader gave it here: define and start it */
                else if (cv && !owned && here && state_live(local_state(mine)) &&
                         !handed_over_unconfirmed(cv))
                        request(c, kv, true); /* another host's: never two copies */
                else if (here)
                        r = sync_one(c, kid, mine, kv, ret_error);
                else if (owned && !cv->restart) {
                        g_hash_table_add(stale, g_strdup(kid));
                        r = stale_reconcile(c, kid, kv, cv, ret_error);
                }
                if (cv)
                        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        }
        g_hash_table_iter_init(&it, local);
        while (r >= 0 && g_hash_table_iter_next(&it, &id, &vm))
                if (!g_hash_table_contains(seen, id))
                        r = sync_one(c, id, vm, NULL, ret_error);
        g_hash_table_iter_init(&it, c->stale); /* stale no more: counts again from zero */
        while (r >= 0 && g_hash_table_iter_next(&it, &id, NULL))
                if (!g_hash_table_contains(stale, id))
                        g_hash_table_iter_remove(&it);
        etcdserverpb__range_response__free_unpacked(range, NULL);
        return r < 0 ? r : 0;
}

/* ---- Calls answered later (GTask threads) ---- */

typedef struct PlacementJob {
        VmmsEtcd *etcd;
        char *host_name; /* this host's */
        int64_t timeout_ms;
        char *vm_id, *vm_name;
        GBytes *vm;         /* claim, hand-over: the VM as this host has it */
        char *target;       /* hand-over: the destination's address; resolve: the name */
        char *pattern;      /* list: the name filter, casefolded; name check: the name, casefolded */
        bool refuse_paused; /* claim: Start-VM, refused while this host is Paused */
        VmmsClusterDoneFn fn;
        void *userdata;
        VmmsCall *call; /* list */
        /* The answer */
        VmmsError error;
        char *result;
        Etcdserverpb__RangeResponse *range; /* list */
} PlacementJob;

static void placement_job_free(PlacementJob *j)
{
        vmms_etcd_unref(j->etcd);
        g_free(j->host_name);
        g_free(j->vm_id);
        g_free(j->vm_name);
        if (j->vm)
                g_bytes_unref(j->vm);
        g_free(j->target);
        g_free(j->pattern);
        vmms_error_clear(&j->error);
        g_free(j->result);
        vmms_etcd_range_free(j->range);
        g_free(j);
}

static PlacementJob *placement_job_new(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata)
{
        PlacementJob *j = g_new0(PlacementJob, 1);

        j->etcd = vmms_etcd_ref(c->etcd);
        j->host_name = g_strdup(c->host_name);
        j->timeout_ms = MAX(c->period_ms, CALL_TIMEOUT_MIN_MS);
        if (vm) {
                j->vm_id = g_strdup(vm->def.id);
                j->vm_name = g_strdup(vm->def.name);
                j->vm = vm_pack(vm);
        }
        j->fn = fn;
        j->userdata = userdata;
        return j;
}

static void placement_job_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        PlacementJob *j = g_task_get_task_data(G_TASK(result));

        (void)source;
        (void)userdata;
        j->fn(j->error.code ? &j->error : NULL, j->result, j->userdata);
}

static void placement_job_start(PlacementJob *j, GTaskThreadFunc run, GAsyncReadyCallback done)
{
        g_autoptr(GTask) task = g_task_new(NULL, NULL, done, NULL);

        g_task_set_task_data(task, j, (GDestroyNotify)placement_job_free);
        g_task_run_in_thread(task, run);
}

/* Whether this host's paused key exists: 1 Paused, 0 not, < 0 etcd failed (*ret_why). */
static int host_paused(PlacementJob *j, char **ret_why)
{
        g_autofree char *paused_key = g_strconcat(PAUSED_PREFIX, j->host_name, NULL);
        Etcdserverpb__RangeResponse *paused = NULL;
        int r;

        r = vmms_etcd_range(j->etcd, paused_key, NULL, j->timeout_ms, &paused, ret_why);
        if (r >= 0)
                r = paused->n_kvs == 1;
        vmms_etcd_range_free(paused);
        return r;
}

static void claim_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *key = cluster_vm_key(j->vm_id);
        g_autoptr(GBytes) value = cluster_vm_pack(j->host_name, j->vm);
        g_autofree char *why = NULL;
        Etcdserverpb__KeyValue *current = NULL;
        Etcdserverpb__TxnResponse *resp = NULL;
        Vmms__V1__ClusterVm *cv = NULL;
        int r;

        (void)source;
        (void)cancellable;
        if (j->refuse_paused && host_paused(j, &why) != 0) {
                if (why)
                        vmms_error_set(
                                &j->error, VMMS_ERROR_UNAVAILABLE,
                                "cannot start VM '%s': the cluster cannot say whether %s is Paused: %s",
                                j->vm_name, j->host_name, why);
                else
                        vmms_error_set(
                                &j->error, VMMS_ERROR_FAILED_PRECONDITION,
                                "cannot start VM '%s' on %s: the host is Paused (Suspend-ClusterNode) and "
                                "starts no VMs; Resume-ClusterNode %s first, or start it on another host",
                                j->vm_name, j->host_name, j->host_name);
                g_task_return_boolean(task, TRUE);
                return;
        }
        r = cluster_guarded_write(j->etcd, key, true, 0, value, j->timeout_ms, &current, &resp, &why);
        if (r < 0)
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE,
                               "cannot start VM '%s': the cluster cannot say which host owns it: %s",
                               j->vm_name, why);
        else if (r == 0 && !(cv = cluster_vm_unpack(current)))
                vmms_error_set(&j->error, VMMS_ERROR_INTERNAL,
                               "cannot start VM '%s': its owner key %s holds no ClusterVm", j->vm_name, key);
        else if (r == 0 && strcmp(cv->host, j->host_name) != 0)
                vmms_error_set(
                        &j->error, VMMS_ERROR_FAILED_PRECONDITION,
                        "cannot start VM '%s' on %s: it is owned by %s in the cluster (start it there, or "
                        "Move-VM it here)",
                        j->vm_name, j->host_name, cv->host);
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        if (resp)
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
        g_task_return_boolean(task, TRUE);
}

void vmms_cluster_claim(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata)
{
        placement_job_start(placement_job_new(c, vm, fn, userdata), claim_run, placement_job_done);
}

void vmms_cluster_claim_for_start(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata)
{
        PlacementJob *j = placement_job_new(c, vm, fn, userdata);

        j->refuse_paused = true;
        placement_job_start(j, claim_run, placement_job_done);
}

/* Another host's VM with the name (casefolded, as a host compares its own), other than
 * the VM `vm_id` itself. */
static void name_check_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *end = vmms_etcd_prefix_end(VMS_PREFIX);
        g_autofree char *why = NULL;
        Etcdserverpb__RangeResponse *range = NULL;

        (void)source;
        (void)cancellable;
        if (vmms_etcd_range(j->etcd, VMS_PREFIX, end, j->timeout_ms, &range, &why) < 0) {
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE,
                               "cannot check that the name '%s' is free in the cluster: %s", j->vm_name, why);
                g_task_return_boolean(task, TRUE);
                return;
        }
        for (size_t i = 0; !j->error.code && i < range->n_kvs; i++) {
                Vmms__V1__ClusterVm *cv = cluster_vm_unpack(range->kvs[i]);

                if (cv && cv->vm && strcmp(cv->host, j->host_name) != 0 &&
                    (!j->vm_id || strcmp(cv->vm->id, j->vm_id) != 0)) {
                        g_autofree char *folded = g_utf8_casefold(cv->vm->name, -1);

                        if (strcmp(folded, j->pattern) == 0)
                                vmms_error_set(
                                        &j->error, VMMS_ERROR_ALREADY_EXISTS,
                                        "a VM named '%s' already exists in the cluster: %s owns it "
                                        "(VM names are unique cluster-wide; Get-VM -Cluster lists them)",
                                        cv->vm->name, cv->host);
                }
                if (cv)
                        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        }
        vmms_etcd_range_free(range);
        g_task_return_boolean(task, TRUE);
}

void vmms_cluster_check_name(VmmsCluster *c, const char *name, const char *vm_id, VmmsClusterDoneFn fn,
                             void *userdata)
{
        PlacementJob *j = placement_job_new(c, NULL, fn, userdata);

        j->vm_name = g_strdup(name);
        j->vm_id = g_strdup(vm_id);
        j->pattern = g_utf8_casefold(name, -1);
        placement_job_start(j, name_check_run, placement_job_done);
}

/* The Up host with `address`; NULL with an error in j->error when none. */
static char *host_by_address(PlacementJob *j, const char *address, const char *what)
{
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *why = NULL;
        Etcdserverpb__RangeResponse *hosts = NULL, *alive = NULL;
        char *found = NULL;
        int r;

        r = vmms_etcd_range(j->etcd, ALIVE_PREFIX, alive_end, j->timeout_ms, &alive, &why);
        if (r >= 0)
                r = vmms_etcd_range(j->etcd, HOSTS_PREFIX, hosts_end, j->timeout_ms, &hosts, &why);
        if (r < 0) {
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "%s: cannot read the cluster's hosts: %s",
                               what, why);
                goto out;
        }
        for (size_t i = 0; !found && i < hosts->n_kvs; i++) {
                Vmms__V1__ClusterNode *n = vmms__v1__cluster_node__unpack(NULL, hosts->kvs[i]->value.len,
                                                                          hosts->kvs[i]->value.data);

                if (n && strcmp(n->address, address) == 0 &&
                    cluster_range_names(alive, ALIVE_PREFIX, n->name))
                        found = g_strdup(n->name);
                if (n)
                        vmms__v1__cluster_node__free_unpacked(n, NULL);
        }
        if (!found)
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION,
                               "%s: no Up host of the cluster has the address %s", what, address);
out:
        vmms_etcd_range_free(hosts);
        vmms_etcd_range_free(alive);
        return found;
}

static void hand_over_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *key = cluster_vm_key(j->vm_id);
        g_autofree char *what = g_strdup_printf("cannot hand VM '%s' over to %s", j->vm_name, j->target);
        g_autofree char *dest = NULL, *why = NULL;
        g_autoptr(GBytes) value = NULL;
        Etcdserverpb__RangeResponse *range = NULL;
        Etcdserverpb__KeyValue *current = NULL;
        Etcdserverpb__TxnResponse *resp = NULL;
        Vmms__V1__ClusterVm *cv = NULL;
        int r;

        (void)source;
        (void)cancellable;
        dest = host_by_address(j, j->target, what);
        if (!dest)
                goto out;
        r = vmms_etcd_range(j->etcd, key, NULL, j->timeout_ms, &range, &why);
        if (r < 0) {
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "%s: %s", what, why);
                goto out;
        }
        cv = range->n_kvs == 1 ? cluster_vm_unpack(range->kvs[0]) : NULL;
        if (range->n_kvs == 1 && (!cv || strcmp(cv->host, j->host_name) != 0)) {
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION, "%s: it is owned by %s, not %s",
                               what, cv ? cv->host : "nobody readable", j->host_name);
                goto out;
        }
        value = cluster_vm_pack(dest, j->vm);
        r = cluster_guarded_write(j->etcd, key, range->n_kvs == 0,
                                  range->n_kvs ? range->kvs[0]->mod_revision : 0, value, j->timeout_ms,
                                  &current, &resp, &why);
        if (r < 0)
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "%s: %s", what, why);
        else if (r == 0)
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION,
                               "%s: its owner key changed while it was handed over", what);
        else
                j->result = g_steal_pointer(&dest);
out:
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        if (resp)
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
        vmms_etcd_range_free(range);
        g_task_return_boolean(task, TRUE);
}

void vmms_cluster_hand_over(VmmsCluster *c, VmmsVm *vm, const char *destination, VmmsClusterDoneFn fn,
                            void *userdata)
{
        PlacementJob *j = placement_job_new(c, vm, fn, userdata);

        j->target = g_strdup(destination);
        placement_job_start(j, hand_over_run, placement_job_done);
}

static void resolve_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *record_key = g_strconcat(HOSTS_PREFIX, j->target, NULL);
        g_autofree char *alive_key = g_strconcat(ALIVE_PREFIX, j->target, NULL);
        g_autofree char *paused_key = g_strconcat(PAUSED_PREFIX, j->target, NULL);
        g_autofree char *why = NULL;
        Etcdserverpb__RangeResponse *record = NULL, *alive = NULL, *paused = NULL;
        Vmms__V1__ClusterNode *n = NULL;
        int r;

        (void)source;
        (void)cancellable;
        r = vmms_etcd_range(j->etcd, alive_key, NULL, j->timeout_ms, &alive, &why);
        if (r >= 0)
                r = vmms_etcd_range(j->etcd, paused_key, NULL, j->timeout_ms, &paused, &why);
        if (r >= 0)
                r = vmms_etcd_range(j->etcd, record_key, NULL, j->timeout_ms, &record, &why);
        if (r < 0)
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "cannot look host %s up in the cluster: %s",
                               j->target, why);
        else if (record->n_kvs != 1 || !(n = vmms__v1__cluster_node__unpack(NULL, record->kvs[0]->value.len,
                                                                            record->kvs[0]->value.data)))
                vmms_error_set(&j->error, VMMS_ERROR_NOT_FOUND,
                               "no host named '%s' in the cluster (Get-ClusterNode lists them)", j->target);
        else if (strcmp(n->name, j->host_name) == 0)
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION, "host %s is this host", j->target);
        else if (alive->n_kvs != 1)
                vmms_error_set(&j->error, VMMS_ERROR_FAILED_PRECONDITION,
                               "host %s is Down (its lease expired): nothing can move to it", j->target);
        else if (paused->n_kvs == 1)
                vmms_error_set(
                        &j->error, VMMS_ERROR_FAILED_PRECONDITION,
                        "host %s is Paused (Suspend-ClusterNode): it takes no VMs until Resume-ClusterNode",
                        j->target);
        else
                j->result = g_strdup(n->address);
        if (n)
                vmms__v1__cluster_node__free_unpacked(n, NULL);
        vmms_etcd_range_free(record);
        vmms_etcd_range_free(alive);
        vmms_etcd_range_free(paused);
        g_task_return_boolean(task, TRUE);
}

void vmms_cluster_resolve(VmmsCluster *c, const char *name, VmmsClusterDoneFn fn, void *userdata)
{
        PlacementJob *j = placement_job_new(c, NULL, fn, userdata);

        j->target = g_strdup(name);
        placement_job_start(j, resolve_run, placement_job_done);
}

/* The drain's target: the Up, not Paused host other than this one with the most free
 * memory that holds the VM's startup memory. */
static void choose_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *paused_end = vmms_etcd_prefix_end(PAUSED_PREFIX);
        g_autofree char *why = NULL;
        Etcdserverpb__RangeResponse *hosts = NULL, *alive = NULL, *paused = NULL;
        gsize vlen;
        const uint8_t *vdata = g_bytes_get_data(j->vm, &vlen);
        Vmms__V1__Vm *vm = vmms__v1__vm__unpack(NULL, vlen, vdata);
        uint64_t need = vm && vm->memory ? vm->memory->startup_bytes : 0, best_free = 0;
        int r;

        (void)source;
        (void)cancellable;
        r = vmms_etcd_range(j->etcd, ALIVE_PREFIX, alive_end, j->timeout_ms, &alive, &why);
        if (r >= 0)
                r = vmms_etcd_range(j->etcd, PAUSED_PREFIX, paused_end, j->timeout_ms, &paused, &why);
        if (r >= 0)
                r = vmms_etcd_range(j->etcd, HOSTS_PREFIX, hosts_end, j->timeout_ms, &hosts, &why);
        if (r < 0) {
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "cannot read the cluster's hosts: %s", why);
                goto out;
        }
        for (size_t i = 0; i < hosts->n_kvs; i++) {
                Vmms__V1__ClusterNode *n = vmms__v1__cluster_node__unpack(NULL, hosts->kvs[i]->value.len,
                                                                          hosts->kvs[i]->value.data);
                bool up = n && cluster_range_names(alive, ALIVE_PREFIX, n->name);
                bool is_paused = n && cluster_range_names(paused, PAUSED_PREFIX, n->name);

                if (n && up && !is_paused && strcmp(n->name, j->host_name) != 0 &&
                    n->memory_free_bytes >= need && (!j->result || n->memory_free_bytes > best_free)) {
                        g_free(j->result);
                        j->result = g_strdup(n->address);
                        best_free = n->memory_free_bytes;
                }
                if (n)
                        vmms__v1__cluster_node__free_unpacked(n, NULL);
        }
        if (!j->result)
                vmms_error_set(&j->error, VMMS_ERROR_RESOURCE_EXHAUSTED,
                               "no Up host that is not Paused has %" G_GUINT64_FORMAT " MiB free for VM '%s'",
                               need >> 20, j->vm_name);
out:
        if (vm)
                vmms__v1__vm__free_unpacked(vm, NULL);
        vmms_etcd_range_free(hosts);
        vmms_etcd_range_free(alive);
        vmms_etcd_range_free(paused);
        g_task_return_boolean(task, TRUE);
}

void cluster_placement_choose(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata)
{
        placement_job_start(placement_job_new(c, vm, fn, userdata), choose_run, placement_job_done);
}

/* ---- ListVms -Cluster ---- */

static void list_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        PlacementJob *j = task_data;
        g_autofree char *end = vmms_etcd_prefix_end(VMS_PREFIX);
        g_autofree char *why = NULL;

        (void)source;
        (void)cancellable;
        if (vmms_etcd_range(j->etcd, VMS_PREFIX, end, j->timeout_ms, &j->range, &why) < 0)
                vmms_error_set(&j->error, VMMS_ERROR_UNAVAILABLE, "cannot read the cluster's VMs: %s", why);
        g_task_return_boolean(task, TRUE);
}

static void cluster_vm_free(gpointer cv)
{
        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
}

static void list_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        PlacementJob *j = g_task_get_task_data(G_TASK(result));
        g_autoptr(GPtrArray) held = g_ptr_array_new_with_free_func(cluster_vm_free);
        g_autoptr(GPatternSpec) pattern = j->pattern ? g_pattern_spec_new(j->pattern) : NULL;
        Vmms__V1__ListVmsResponse *out;

        (void)source;
        (void)userdata;
        if (j->error.code) {
                vmms_call_fail_with(j->call, &j->error);
                return;
        }
        out = vmms_call_new0(j->call, Vmms__V1__ListVmsResponse);
        vmms__v1__list_vms_response__init(out);
        out->vms = vmms_call_alloc(j->call, sizeof(Vmms__V1__Vm *) * (j->range->n_kvs + 1));
        for (size_t i = 0; i < j->range->n_kvs; i++) {
                Vmms__V1__ClusterVm *cv = cluster_vm_unpack(j->range->kvs[i]);

                if (!cv)
                        continue;
                g_ptr_array_add(held, cv);
                if (!cv->vm)
                        continue;
                if (pattern) {
                        g_autofree char *name = g_utf8_casefold(cv->vm->name, -1);

                        if (!g_pattern_spec_match_string(pattern, name))
                                continue;
                }
                if (cv->vm->host != protobuf_c_empty_string)
                        free(cv->vm->host);
                cv->vm->host = strdup(cv->host); /* freed with cv */
                out->vms[out->n_vms++] = cv->vm;
        }
        vmms_call_return(j->call, &out->base);
}

void vmms_cluster_list_vms(VmmsCluster *c, const char *name_filter, VmmsCall *call)
{
        PlacementJob *j = placement_job_new(c, NULL, NULL, NULL);

        j->call = call;
        if (name_filter && *name_filter)
                j->pattern = g_utf8_casefold(name_filter, -1);
        placement_job_start(j, list_run, list_done);
}

/* ---- Restarting a highly available VM here (main thread) ---- */

/* The definition a ClusterVm carries, checked as CreateVm checks a request: it comes
 * from another host. */
static bool definition_from_proto(const Vmms__V1__Vm *in, VmmsVmDefinition *def, VmmsError *error)
{
        vmms_vm_definition_init_defaults(def);
        if (!in->id || strlen(in->id) != 36) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "its key holds no VM id");
                return false;
        }
        g_strlcpy(def->id, in->id, sizeof(def->id));
        def->name = g_strdup(in->name);
        if (in->processor) {
                def->processor.count = in->processor->count;
                def->processor.reserve = in->processor->reserve;
                def->processor.maximum = in->processor->maximum;
                def->processor.relative_weight = in->processor->relative_weight;
                def->processor.compatibility_for_migration =
                        in->processor->compatibility_for_migration_enabled;
        }
        if (in->memory) {
                def->memory.dynamic_memory_enabled = in->memory->dynamic_memory_enabled;
                def->memory.startup_bytes = in->memory->startup_bytes;
                def->memory.minimum_bytes = in->memory->minimum_bytes;
                def->memory.maximum_bytes = in->memory->maximum_bytes;
                def->memory.buffer = in->memory->buffer;
                def->memory.priority = in->memory->priority;
                def->memory.paging_bytes = in->memory->paging_bytes;
                def->memory.goal_seeking = in->memory->goal_seeking;
        }
        g_free(def->workload);
        def->workload = g_strdup(in->workload);
        g_free(def->boot_args);
        def->boot_args = g_strdup(in->boot_args);
        g_free(def->notes);
        def->notes = g_strdup(in->notes);
        if (in->engine && *in->engine) {
                g_free(def->engine);
                def->engine = g_strdup(in->engine);
        }
        def->highly_available = in->highly_available;
        def->created_unix_ms = in->created_unix_ms;
        def->updated_unix_ms = g_get_real_time() / 1000;
        return vmms_vm_name_valid(def->name, error) && vmms_vm_processor_valid(&def->processor, error) &&
               vmms_vm_processor_engine_valid(def->name, def->engine, &def->processor, error) &&
               vmms_vm_memory_valid(&def->memory, error) &&
               vmms_vm_workload_valid(def->workload, def->boot_args, def->notes, error) &&
               vmms_vm_boot_source_valid(def, error);
}

void cluster_placement_restart_here(VmmsCluster *c, GBytes *cluster_vm)
{
        gsize len;
        const uint8_t *data = g_bytes_get_data(cluster_vm, &len);
        Vmms__V1__ClusterVm *cv = vmms__v1__cluster_vm__unpack(NULL, len, data);
        g_auto(VmmsVmDefinition) def = {0};
        g_autofree char *why = NULL;
        VmmsError error = {0};
        VmmsVm *vm;

        if (!cv || !cv->vm || strcmp(cv->host, c->host_name) != 0)
                goto out;
        vm = vmms_manager_lookup(c->m, cv->vm->id, NULL);
        if (!vm && (!definition_from_proto(cv->vm, &def, &error) ||
                    vmms_manager_vm_add(c->m, &def, &vm, &error) < 0)) {
                why = g_strdup_printf(
                        "cannot restart highly available VM '%s' here (the leader gave it to %s "
                        "when %s went Down): %s",
                        cv->vm->name, c->host_name, cv->restarted_from, error.message);
                g_warning("cluster: %s", why);
                vmms_manager_record_host_event(c->m, "cluster-ha", why);
                vmms_error_clear(&error);
                goto out;
        }
        if (vm->def.state != VMMS_VM_OFF || vm->job)
                goto out;
        why = g_strdup_printf("restarting: highly available, its host %s is Down", cv->restarted_from);
        g_message("cluster: VM '%s' %s", vm->def.name, why);
        vmms_vm_record_event(vm, "cluster-ha", why);
        vmms_vm_start(vm, NULL);
out:
        if (cv)
                vmms__v1__cluster_vm__free_unpacked(cv, NULL);
}
