/* Auto-balance (vmmsd --cluster-auto-balance PCT): the leader moves VMs off a host that
 * stays over-committed to the host with the most room (the rules are in
 * vmms-cluster-private.h, above cluster_balance_pass).
 *
 * The leader decides, the over-committed host moves: the leader cannot migrate another
 * host's VM, so it writes /vmms/balance/<from> (a ClusterBalanceMove, guarded by its
 * fencing token and created only if absent); <from> reads it with its renewals, moves its
 * VM under the most pressure that fits on the target with Move-VM's live migration (drain's
 * path: the owner key is handed over in the commit step), and deletes the key when the move
 * has ended, however it ended. */
#include <math.h>
#include <string.h>

#include "vmms-cluster-private.h"
#include "vmms-memory.h"
#include "vmms-migration.h"

/* ---- The leader (cluster thread) ---- */

typedef struct HostLooks {
        int64_t last_renewal_unix_ms; /* the record last looked at: a look is a new record */
        unsigned over;                /* consecutive looks with its average pressure over the threshold */
        unsigned under;               /* consecutive looks under it: a target needs BALANCE_LOOKS */
} HostLooks;

void cluster_balance_forget(VmmsCluster *c)
{
        g_hash_table_remove_all(c->balance_looks);
}

static HostLooks *looks_of(VmmsCluster *c, const char *name)
{
        HostLooks *l = g_hash_table_lookup(c->balance_looks, name);

        if (!l) {
                l = g_new0(HostLooks, 1);
                g_hash_table_insert(c->balance_looks, g_strdup(name), l);
        }
        return l;
}

/* The leader's write: the move's key, if the leader still holds its token and no move is
 * asked of `from` already. 1 written, 0 refused. */
static int ask(VmmsCluster *c, int64_t token, const Vmms__V1__ClusterBalanceMove *move, char **ret_error)
{
        g_autofree char *key = g_strconcat(BALANCE_PREFIX, move->from, NULL);
        Etcdserverpb__Compare absent = ETCDSERVERPB__COMPARE__INIT;
        size_t len = vmms__v1__cluster_balance_move__get_packed_size(move);
        g_autofree uint8_t *packed = g_malloc(len ? len : 1);

        vmms__v1__cluster_balance_move__pack(move, packed);
        absent.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        absent.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        absent.key = (ProtobufCBinaryData){.data = (uint8_t *)key, .len = strlen(key)};
        absent.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        absent.create_revision = 0;
        return cluster_leader_put(c, token, &absent, absent.key, packed, len, ret_error);
}

/* Whether the key of a move asked of or towards `name` is in `balance`. */
static bool in_flight(const Etcdserverpb__RangeResponse *balance, const char *name)
{
        for (size_t i = 0; i < balance->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = balance->kvs[i];
                Vmms__V1__ClusterBalanceMove *m =
                        vmms__v1__cluster_balance_move__unpack(NULL, kv->value.len, kv->value.data);
                bool hit = m && (strcmp(m->from, name) == 0 || strcmp(m->to, name) == 0);

                if (m)
                        vmms__v1__cluster_balance_move__free_unpacked(m, NULL);
                if (hit)
                        return true;
        }
        return false;
}

int cluster_balance_pass(VmmsCluster *c, int64_t token, char **ret_error)
{
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *paused_end = vmms_etcd_prefix_end(PAUSED_PREFIX);
        g_autofree char *balance_end = vmms_etcd_prefix_end(BALANCE_PREFIX);
        g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(cluster_node_free);
        Etcdserverpb__RangeResponse *hosts = NULL, *alive = NULL, *paused = NULL, *balance = NULL;
        Vmms__V1__ClusterNode *from = NULL, *to = NULL;
        const double threshold = c->auto_balance_pct;
        int r;

        if (!c->auto_balance_pct)
                return 0;
        r = vmms_etcd_range(c->etcd, ALIVE_PREFIX, alive_end, c->period_ms, &alive, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, HOSTS_PREFIX, hosts_end, c->period_ms, &hosts, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, PAUSED_PREFIX, paused_end, c->period_ms, &paused, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, BALANCE_PREFIX, balance_end, c->period_ms, &balance, ret_error);
        if (r < 0)
                goto out;
        /* A move asked of a host that went Down is never answered: its key goes, so the
         * cluster is not stuck at one move in flight. */
        for (size_t i = 0; r >= 0 && i < balance->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = balance->kvs[i];
                g_autofree char *key = g_strndup((const char *)kv->key.data, kv->key.len);

                if (!cluster_range_names(alive, ALIVE_PREFIX, key + strlen(BALANCE_PREFIX))) {
                        r = vmms_etcd_delete(c->etcd, key, c->period_ms, ret_error);
                        if (r >= 0)
                                cluster_notify(c, "cluster-balance",
                                               "leader %s: %s is Down: the move asked of it is dropped",
                                               c->host_name, key + strlen(BALANCE_PREFIX));
                        goto out; /* the next pass reads the keys again */
                }
        }
        for (size_t i = 0; i < hosts->n_kvs; i++) {
                Vmms__V1__ClusterNode *n = vmms__v1__cluster_node__unpack(NULL, hosts->kvs[i]->value.len,
                                                                          hosts->kvs[i]->value.data);
                HostLooks *l;

                if (!n)
                        continue;
                g_ptr_array_add(nodes, n);
                l = looks_of(c, n->name);
                if (!cluster_range_names(alive, ALIVE_PREFIX, n->name) ||
                    cluster_range_names(paused, PAUSED_PREFIX, n->name) || in_flight(balance, n->name)) {
                        /* Down, Paused, or in a move: its figures say nothing yet. A host whose
                         * move just ended starts counting again (its cool-down). */
                        l->over = l->under = 0;
                        l->last_renewal_unix_ms = n->last_renewal_unix_ms;
                        continue;
                }
                if (n->last_renewal_unix_ms != l->last_renewal_unix_ms) {
                        l->last_renewal_unix_ms = n->last_renewal_unix_ms;
                        l->over = n->average_pressure > threshold ? l->over + 1 : 0;
                        l->under = n->average_pressure < threshold ? l->under + 1 : 0;
                }
                if (l->over >= BALANCE_LOOKS && (!from || n->average_pressure > from->average_pressure))
                        from = n;
                else if (l->under >= BALANCE_LOOKS && n->memory_free_bytes > 0 &&
                         (!to || n->memory_free_bytes > to->memory_free_bytes))
                        to = n;
        }
        if (balance->n_kvs || !from || !to)
                goto out; /* one move at a time in the cluster; or nothing to do, or nowhere to go */
        {
                Vmms__V1__ClusterBalanceMove move = VMMS__V1__CLUSTER_BALANCE_MOVE__INIT;
                g_autofree char *reason = g_strdup_printf(
                        "%s over-committed: Average Pressure %.0f %% over %.0f for %u looks, Available "
                        "Memory %" G_GUINT64_FORMAT
                        " MiB; %s has room: Average Pressure %.0f %%, %" G_GUINT64_FORMAT " MiB free",
                        from->name, from->average_pressure, threshold, looks_of(c, from->name)->over,
                        from->available_memory_bytes >> 20, to->name, to->average_pressure,
                        to->memory_free_bytes >> 20);

                move.from = from->name;
                move.to = to->name;
                move.to_address = to->address;
                move.to_free_bytes = to->memory_free_bytes;
                move.reason = reason;
                r = ask(c, token, &move, ret_error);
                if (r > 0) {
                        looks_of(c, from->name)->over = 0;
                        cluster_notify(c, "cluster-balance",
                                       "leader %s (token %" G_GINT64_FORMAT "): asks %s", c->host_name, token,
                                       reason);
                }
                r = r < 0 ? r : 0;
        }
out:
        vmms_etcd_range_free(hosts);
        vmms_etcd_range_free(alive);
        vmms_etcd_range_free(paused);
        vmms_etcd_range_free(balance);
        return r;
}

/* ---- The host asked to move (cluster thread: the key; main thread: the move) ---- */

int cluster_balance_take(VmmsCluster *c, const Etcdserverpb__RangeResponse *range, char **ret_error)
{
        const Etcdserverpb__KeyValue *kv = range->n_kvs == 1 ? range->kvs[0] : NULL;
        int64_t done;
        int r = 0;

        g_mutex_lock(&c->lock);
        done = c->balance_done_rev;
        g_mutex_unlock(&c->lock);
        if (kv && kv->mod_revision == done) {
                /* Handled: the key goes, and the leader may ask again. Only the leader creates
                 * it, and only where it is absent, so this is the key the move answered. */
                g_autofree char *key = g_strndup((const char *)kv->key.data, kv->key.len);

                r = vmms_etcd_delete(c->etcd, key, c->period_ms, ret_error);
                if (r >= 0)
                        kv = NULL;
        }
        g_mutex_lock(&c->lock);
        g_clear_pointer(&c->balance, g_bytes_unref);
        c->balance_rev = 0;
        if (kv) {
                c->balance = g_bytes_new(kv->value.data, kv->value.len);
                c->balance_rev = kv->mod_revision;
        }
        g_mutex_unlock(&c->lock);
        return r < 0 ? r : 0;
}

static void balance_done(VmmsCluster *c, int64_t rev)
{
        g_mutex_lock(&c->lock);
        c->balance_done_rev = rev;
        g_mutex_unlock(&c->lock);
}

static double vm_pressure(VmmsCluster *c, VmmsVm *vm)
{
        const BalancerVmCounters *dm = vmms_memory_vm_counters(vmms_manager_memory(c->m), vm->balancer_id);

        return dm ? dm->average_pressure : 0;
}

/* The running VM Move-VM can move that fits in `room`, under the most pressure. */
static VmmsVm *balance_choose(VmmsCluster *c, uint64_t room)
{
        GPtrArray *vms = vmms_manager_vms(c->m);
        VmmsVm *best = NULL;

        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->job || vm->def.state != VMMS_VM_RUNNING || strcmp(vm->def.engine, "bundled") != 0 ||
                    vm->def.memory.startup_bytes > room)
                        continue;
                if (!best || vm_pressure(c, vm) > vm_pressure(c, best))
                        best = vm;
        }
        return best;
}

void cluster_balance_step(VmmsCluster *c)
{
        g_autoptr(GBytes) packed = NULL;
        Vmms__V1__ClusterBalanceMove *move;
        VmmsMigration *mig = vmms_manager_migration(c->m);
        VmmsVm *vm;
        int64_t rev;
        gsize len;
        const uint8_t *data;

        g_mutex_lock(&c->lock);
        packed = c->balance ? g_bytes_ref(c->balance) : NULL;
        rev = c->balance_rev;
        g_mutex_unlock(&c->lock);
        if (!packed || rev == c->balance_moved_rev) {
                if (!packed || !c->balance_vm_id[0])
                        return;
                /* The move under way: done once the VM is gone from here or its job ended. */
                vm = vmms_manager_lookup(c->m, c->balance_vm_id, NULL);
                if (vm && vm->job && strcmp(vm->job, "move") == 0)
                        return;
                c->balance_vm_id[0] = '\0';
                balance_done(c, rev);
                return;
        }
        data = g_bytes_get_data(packed, &len);
        move = vmms__v1__cluster_balance_move__unpack(NULL, len, data);
        c->balance_moved_rev = rev;
        c->balance_vm_id[0] = '\0';
        vm = move && mig ? balance_choose(c, move->to_free_bytes) : NULL;
        if (!vm) {
                g_autofree char *what = g_strdup_printf(
                        "auto-balance: nothing moves to %s: %s", move ? move->to : "?",
                        !move  ? "the leader's request is unreadable"
                        : !mig ? "this host cannot move VMs (no --tls-cert, --tls-key, --tls-ca)"
                               : "no running VM of the bundled engine fits in the memory free there");

                g_message("cluster: %s", what);
                vmms_manager_record_host_event(c->m, "cluster-balance", what);
                balance_done(c, rev);
        } else {
                g_autofree char *what =
                        g_strdup_printf("auto-balance: moving to %s (Average Pressure %.0f %% here): %s",
                                        move->to, vm_pressure(c, vm), move->reason);

                g_message("cluster: VM '%s' %s", vm->def.name, what);
                vmms_vm_record_event(vm, "cluster-balance", what);
                g_strlcpy(c->balance_vm_id, vm->def.id, sizeof(c->balance_vm_id));
                vmms_migration_move(mig, vm, move->to_address, 0, NULL);
        }
        if (move)
                vmms__v1__cluster_balance_move__free_unpacked(move, NULL);
}
