/* The cluster's leader: the election and the HA job (the rules are in
 * vmms-cluster-private.h, above cluster_leader_pass).
 *
 * Timing, with TTL the lease and margin = TTL / 4: a host that stops renewing has its
 * guests paused by its own hvd's watchdog TTL - margin after its last renewal left
 * (vmms-cluster.c), its lease expires no sooner than TTL after it, and the leader acts
 * only once it has seen the host Down for a margin more: TTL + margin at the earliest.
 * Between the fence and the restart there are always 2 x margin in which no copy runs. */
#include <errno.h>
#include <string.h>

#include "vmms-cluster-private.h"

/* The election: the candidate key with the lowest create revision. *ret_token: that
 * revision when it is this host's key, else 0. */
static int election(VmmsCluster *c, int64_t *ret_token, char **ret_error)
{
        g_autofree char *end = vmms_etcd_prefix_end(LEADER_PREFIX);
        Etcdserverpb__RangeResponse *range = NULL;
        const Etcdserverpb__KeyValue *first = NULL;
        int r;

        r = vmms_etcd_range(c->etcd, LEADER_PREFIX, end, c->period_ms, &range, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < range->n_kvs; i++)
                if (!first || range->kvs[i]->create_revision < first->create_revision)
                        first = range->kvs[i];
        *ret_token = first && c->leader_key && first->key.len == strlen(c->leader_key) &&
                                     memcmp(first->key.data, c->leader_key, first->key.len) == 0
                             ? first->create_revision
                             : 0;
        etcdserverpb__range_response__free_unpacked(range, NULL);
        return 0;
}

typedef struct Candidate {
        Vmms__V1__ClusterNode *node; /* borrowed */
        bool up;
        bool paused;          /* Suspend-ClusterNode: takes no VMs */
        uint64_t free_bytes;  /* minus what this pass already placed there */
        uint32_t reserve_pct; /* plus what this pass already placed there */
} Candidate;

static bool running_wanted(Vmms__V1__VmState state)
{
        return state == VMMS__V1__VM_STATE__VM_STATE_RUNNING ||
               state == VMMS__V1__VM_STATE__VM_STATE_STARTING ||
               state == VMMS__V1__VM_STATE__VM_STATE_PAUSED ||
               state == VMMS__V1__VM_STATE__VM_STATE_MIGRATING;
}

/* The Up host, other than `dead`, with the most free memory that holds `vm` and admits its
 * Reserve; ties go to the least CPU load. */
static Candidate *choose(GArray *candidates, const char *dead, const Vmms__V1__Vm *vm)
{
        uint64_t need = vm->memory ? vm->memory->startup_bytes : 0;
        uint32_t reserve = vm->processor ? vm->processor->reserve * MAX(vm->processor->count, 1) : 0;
        Candidate *best = NULL;

        for (guint i = 0; i < candidates->len; i++) {
                Candidate *k = &g_array_index(candidates, Candidate, i);

                if (!k->up || k->paused || strcmp(k->node->name, dead) == 0 || k->free_bytes < need ||
                    k->reserve_pct + reserve > k->node->reservation_capacity_pct)
                        continue;
                if (!best || k->free_bytes > best->free_bytes ||
                    (k->free_bytes == best->free_bytes && k->node->cpu_load_pct < best->node->cpu_load_pct))
                        best = k;
        }
        if (best) {
                best->free_bytes -= need;
                best->reserve_pct += reserve;
        }
        return best;
}

int cluster_leader_put(VmmsCluster *c, int64_t token, Etcdserverpb__Compare *guard, ProtobufCBinaryData key,
                       const uint8_t *value, size_t len, char **ret_error)
{
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        Etcdserverpb__Compare fencing = ETCDSERVERPB__COMPARE__INIT;
        Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
        Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
        Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        Etcdserverpb__Compare *cmps[] = {&fencing, guard};
        Etcdserverpb__RequestOp *ops[] = {&op};
        Etcdserverpb__TxnResponse *resp = NULL;
        int r;

        fencing.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        fencing.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        fencing.key = (ProtobufCBinaryData){.data = (uint8_t *)c->leader_key, .len = strlen(c->leader_key)};
        fencing.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        fencing.create_revision = token;
        if (value) {
                put.key = key;
                put.value = (ProtobufCBinaryData){.data = (uint8_t *)value, .len = len};
                op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
                op.request_put = &put;
        } else {
                del.key = key;
                op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
                op.request_delete_range = &del;
        }
        txn.n_compare = 2;
        txn.compare = cmps;
        txn.n_success = 1;
        txn.success = ops;
        r = vmms_etcd_txn(c->etcd, &txn, c->period_ms, &resp, ret_error);
        if (r < 0)
                return r;
        r = resp->succeeded ? 1 : 0;
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        return r;
}

/* The leader's write: the VM's key to `target` with restart set, if the leader still
 * holds its token and nobody changed the key since it was read. 1 done, 0 refused. */
static int give(VmmsCluster *c, int64_t token, const Etcdserverpb__KeyValue *kv, Vmms__V1__ClusterVm *cv,
                const char *target, char **ret_error)
{
        Etcdserverpb__Compare unchanged = ETCDSERVERPB__COMPARE__INIT;
        Vmms__V1__ClusterVm out = *cv;
        g_autofree uint8_t *packed = NULL;
        size_t len;

        out.host = (char *)target;
        out.restart = true;
        out.restarted_from = cv->host;
        out.updated_unix_ms = g_get_real_time() / 1000;
        len = vmms__v1__cluster_vm__get_packed_size(&out);
        packed = g_malloc(len ? len : 1);
        vmms__v1__cluster_vm__pack(&out, packed);
        unchanged.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        unchanged.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        unchanged.key = kv->key;
        unchanged.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        unchanged.mod_revision = kv->mod_revision;
        return cluster_leader_put(c, token, &unchanged, kv->key, packed, len, ret_error);
}

/* The leader's sweep of an owner key naming a host that has no record (a host record is
 * written before its first owner key, and kept after its lease: such a key names no host
 * of this cluster, e.g. after etcd was restored from a backup or a record deleted by hand).
 * Deleted with the fencing token and the key's revision; a host that has the VM writes
 * the key for itself on its next pass. */
static int forget(VmmsCluster *c, int64_t token, const Etcdserverpb__KeyValue *kv,
                  const Vmms__V1__ClusterVm *cv, char **ret_error)
{
        Etcdserverpb__Compare unchanged = ETCDSERVERPB__COMPARE__INIT;
        int r;

        unchanged.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        unchanged.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        unchanged.key = kv->key;
        unchanged.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        unchanged.mod_revision = kv->mod_revision;
        r = cluster_leader_put(c, token, &unchanged, kv->key, NULL, 0, ret_error);
        if (r > 0)
                cluster_notify(
                        c, "cluster-reconcile",
                        "leader %s (token %" G_GINT64_FORMAT "): owner key %.*s named %s for VM '%s', "
                        "but no host of that name ever joined (no /vmms/hosts/ record): deleted; a host "
                        "that has the VM takes the key again",
                        c->host_name, token, (int)kv->key.len, (const char *)kv->key.data, cv->host,
                        cv->vm ? cv->vm->name : "?");
        return r < 0 ? r : 0;
}

static int ha_pass(VmmsCluster *c, int64_t token, char **ret_error)
{
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *vms_end = vmms_etcd_prefix_end(VMS_PREFIX);
        g_autofree char *paused_end = vmms_etcd_prefix_end(PAUSED_PREFIX);
        g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(cluster_node_free);
        g_autoptr(GArray) candidates = g_array_new(FALSE, TRUE, sizeof(Candidate));
        g_autoptr(GHashTable) down = g_hash_table_new(g_str_hash, g_str_equal); /* name -> ready */
        g_autoptr(GHashTable) recorded = g_hash_table_new(g_str_hash, g_str_equal);
        Etcdserverpb__RangeResponse *hosts = NULL, *alive = NULL, *vms = NULL, *paused = NULL;
        int64_t now = g_get_monotonic_time();
        int r;

        c->leader_wake_us = 0;
        r = vmms_etcd_range(c->etcd, ALIVE_PREFIX, alive_end, c->period_ms, &alive, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, HOSTS_PREFIX, hosts_end, c->period_ms, &hosts, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, VMS_PREFIX, vms_end, c->period_ms, &vms, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, PAUSED_PREFIX, paused_end, c->period_ms, &paused, ret_error);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < hosts->n_kvs; i++) {
                Vmms__V1__ClusterNode *n = vmms__v1__cluster_node__unpack(NULL, hosts->kvs[i]->value.len,
                                                                          hosts->kvs[i]->value.data);
                Candidate k = {0};

                if (!n)
                        continue;
                g_ptr_array_add(nodes, n);
                g_hash_table_add(recorded, n->name);
                k.node = n;
                k.up = cluster_range_names(alive, ALIVE_PREFIX, n->name);
                k.paused = cluster_range_names(paused, PAUSED_PREFIX, n->name);
                k.free_bytes = n->memory_free_bytes;
                k.reserve_pct = n->reservation_used_pct;
                g_array_append_val(candidates, k);
                if (k.up) {
                        g_hash_table_remove(c->down_since, n->name);
                } else {
                        int64_t *since = g_hash_table_lookup(c->down_since, n->name);

                        if (!since) {
                                since = g_new(int64_t, 1);
                                *since = now;
                                g_hash_table_insert(c->down_since, g_strdup(n->name), since);
                                cluster_notify(c, "cluster-down",
                                               "leader %s: host %s is Down (its lease expired); its highly "
                                               "available VMs restart elsewhere after the fence margin "
                                               "(%u ms)",
                                               c->host_name, n->name, c->fence_margin_ms);
                        }
                        if (now - *since >= (int64_t)c->fence_margin_ms * 1000)
                                g_hash_table_add(down, n->name);
                        else if (!c->leader_wake_us ||
                                 *since + (int64_t)c->fence_margin_ms * 1000 < c->leader_wake_us)
                                c->leader_wake_us = *since + (int64_t)c->fence_margin_ms * 1000;
                }
        }
        for (size_t i = 0; r >= 0 && i < vms->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = vms->kvs[i];
                Vmms__V1__ClusterVm *cv = vmms__v1__cluster_vm__unpack(NULL, kv->value.len, kv->value.data);
                Candidate *target;

                /* Records come before a host's first key: a key no newer than the records' read
                 * names a host whose record was read. */
                if (cv && !g_hash_table_contains(recorded, cv->host) && hosts->header &&
                    kv->mod_revision <= hosts->header->revision) {
                        r = forget(c, token, kv, cv, ret_error);
                        goto next;
                }
                if (!cv || !cv->vm || !cv->vm->highly_available || !g_hash_table_contains(down, cv->host) ||
                    (!running_wanted(cv->vm->state) && !cv->restart))
                        goto next;
                target = choose(candidates, cv->host, cv->vm);
                if (!target) {
                        if (!g_hash_table_contains(c->ha_said, cv->vm->id))
                                cluster_notify(
                                        c, "cluster-ha",
                                        "leader %s: cannot restart highly available VM '%s' of Down host "
                                        "%s: no Up host has %" G_GUINT64_FORMAT
                                        " MiB free and room for its Reserve",
                                        c->host_name, cv->vm->name, cv->host,
                                        (cv->vm->memory ? cv->vm->memory->startup_bytes : 0) >> 20);
                        g_hash_table_add(c->ha_said, g_strdup(cv->vm->id));
                        goto next;
                }
                r = give(c, token, kv, cv, target->node->name, ret_error);
                if (r > 0) {
                        g_hash_table_remove(c->ha_said, cv->vm->id);
                        cluster_notify(c, "cluster-ha",
                                       "leader %s (token %" G_GINT64_FORMAT
                                       "): restarting highly available VM "
                                       "'%s' of Down host %s on %s (%" G_GUINT64_FORMAT " MiB free there)",
                                       c->host_name, token, cv->vm->name, cv->host, target->node->name,
                                       target->node->memory_free_bytes >> 20);
                }
                if (r == 0)
                        g_debug("cluster: the leader's write for '%s' was refused: deposed, or the key moved",
                                cv->vm->name);
                r = r < 0 ? r : 0;
        next:
                if (cv)
                        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        }
out:
        vmms_etcd_range_free(hosts);
        vmms_etcd_range_free(alive);
        vmms_etcd_range_free(vms);
        vmms_etcd_range_free(paused);
        return r;
}

int cluster_leader_pass(VmmsCluster *c, char **ret_error)
{
        int64_t token = 0;
        int r;

        r = election(c, &token, ret_error);
        if (r < 0)
                return r;
        if (!token) {
                g_hash_table_remove_all(c->down_since); /* a new term starts its own clocks */
                c->leader_wake_us = 0;
                cluster_balance_forget(c);
                return 0;
        }
        r = ha_pass(c, token, ret_error);
        if (r >= 0)
                r = cluster_balance_pass(c, token, ret_error);
        return r;
}
