/* Auto-balance (Set-Cluster -AutoBalance, first from vmmsd --cluster-auto-balance PCT):
 * the leader moves VMs off a host that stays over-committed, by memory or by CPU, to a
 * host with room (the decision is vmms-cluster-balance-rule.c's; how the leader feeds it
 * is in vmms-cluster-private.h, above cluster_balance_pass).
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

void cluster_balance_forget(VmmsCluster *c)
{
        cluster_balance_rule_forget(c->balance_rule);
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

/* The running VMs of the bundled engine each host owns (what a move can take), from the
 * owner keys: host name -> GArray of ClusterBalanceVm. */
static GHashTable *movable_vms(const Etcdserverpb__RangeResponse *vms)
{
        GHashTable *by_host =
                g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_array_unref);

        for (size_t i = 0; i < vms->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = vms->kvs[i];
                Vmms__V1__ClusterVm *cv = vmms__v1__cluster_vm__unpack(NULL, kv->value.len, kv->value.data);
                GArray *list;

                if (cv && cv->vm && cv->vm->state == VMMS__V1__VM_STATE__VM_STATE_RUNNING &&
                    (!cv->vm->engine[0] || strcmp(cv->vm->engine, "bundled") == 0)) {
                        ClusterBalanceVm v = {
                                .startup_bytes = cv->vm->memory ? cv->vm->memory->startup_bytes : 0,
                                .reserve_pct = cv->vm->processor ? cv->vm->processor->reserve *
                                                                           MAX(cv->vm->processor->count, 1)
                                                                 : 0,
                        };

                        list = g_hash_table_lookup(by_host, cv->host);
                        if (!list) {
                                list = g_array_new(FALSE, TRUE, sizeof(ClusterBalanceVm));
                                g_hash_table_insert(by_host, g_strdup(cv->host), list);
                        }
                        g_array_append_val(list, v);
                }
                if (cv)
                        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        }
        return by_host;
}

/* A move asked of a host that went Down is never answered: its key goes, so the cluster
 * is not stuck at one move in flight. 1: a key went (the next pass reads the keys again). */
static int drop_unanswerable(VmmsCluster *c, const Etcdserverpb__RangeResponse *balance,
                             const Etcdserverpb__RangeResponse *alive, char **ret_error)
{
        for (size_t i = 0; i < balance->n_kvs; i++) {
                const Etcdserverpb__KeyValue *kv = balance->kvs[i];
                g_autofree char *key = g_strndup((const char *)kv->key.data, kv->key.len);
                int r;

                if (cluster_range_names(alive, ALIVE_PREFIX, key + strlen(BALANCE_PREFIX)))
                        continue;
                r = vmms_etcd_delete(c->etcd, key, c->period_ms, ret_error);
                if (r < 0)
                        return r;
                cluster_notify(c, "cluster-balance", "leader %s: %s is Down: the move asked of it is dropped",
                               c->host_name, key + strlen(BALANCE_PREFIX));
                return 1;
        }
        return 0;
}

static int ask_decided(VmmsCluster *c, int64_t token, const ClusterBalanceDecision *d,
                       const Vmms__V1__ClusterNode *to, char **ret_error)
{
        Vmms__V1__ClusterBalanceMove move = VMMS__V1__CLUSTER_BALANCE_MOVE__INIT;
        int r;

        move.from = (char *)d->from->name;
        move.to = (char *)d->to->name;
        move.to_address = to->address;
        move.to_free_bytes = to->memory_free_bytes;
        move.to_reserve_room_pct = d->to_reserve_room_pct;
        move.reason = d->reason;
        move.by_cpu = d->cause == CLUSTER_BALANCE_CPU;
        r = ask(c, token, &move, ret_error);
        if (r > 0) {
                cluster_balance_rule_asked(c->balance_rule, d, g_get_monotonic_time() / 1000);
                cluster_notify(c, "cluster-balance", "leader %s (token %" G_GINT64_FORMAT "): asks %s",
                               c->host_name, token, d->reason);
        }
        return r < 0 ? r : 0;
}

int cluster_balance_pass(VmmsCluster *c, int64_t token, char **ret_error)
{
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *paused_end = vmms_etcd_prefix_end(PAUSED_PREFIX);
        g_autofree char *balance_end = vmms_etcd_prefix_end(BALANCE_PREFIX);
        g_autofree char *vms_end = vmms_etcd_prefix_end(VMS_PREFIX);
        g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(cluster_node_free);
        g_autoptr(GArray) hosts_in = g_array_new(FALSE, TRUE, sizeof(ClusterBalanceHost));
        g_autoptr(GHashTable) movable = NULL;
        Etcdserverpb__RangeResponse *hosts = NULL, *alive = NULL, *paused = NULL, *balance = NULL,
                                    *vms = NULL;
        Vmms__V1__ClusterSettings *settings = NULL;
        ClusterBalanceDecision d = {0};
        ClusterBalanceSettings rule;
        int r;

        r = cluster_settings_leader(c, token, &settings, ret_error);
        if (r < 0 || !settings || !settings->auto_balance) {
                /* Off: a later on counts its looks afresh. */
                cluster_balance_rule_forget(c->balance_rule);
                goto out;
        }
        rule = (ClusterBalanceSettings){
                .pressure_threshold = settings->auto_balance_threshold,
                .cpu_wait_threshold_ns = settings->auto_balance_cpu_wait_us * 1000.0,
                .looks = BALANCE_LOOKS,
                .spacing_ms = (int64_t)BALANCE_SPACING_PERIODS * c->period_ms,
                .pingpong_ms = (int64_t)BALANCE_PINGPONG_PERIODS * c->period_ms,
        };
        r = vmms_etcd_range(c->etcd, ALIVE_PREFIX, alive_end, c->period_ms, &alive, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, HOSTS_PREFIX, hosts_end, c->period_ms, &hosts, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, PAUSED_PREFIX, paused_end, c->period_ms, &paused, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, BALANCE_PREFIX, balance_end, c->period_ms, &balance, ret_error);
        if (r >= 0)
                r = vmms_etcd_range(c->etcd, VMS_PREFIX, vms_end, c->period_ms, &vms, ret_error);
        if (r >= 0)
                r = drop_unanswerable(c, balance, alive, ret_error);
        if (r != 0)
                goto out;
        movable = movable_vms(vms);
        for (size_t i = 0; i < hosts->n_kvs; i++) {
                Vmms__V1__ClusterNode *n = vmms__v1__cluster_node__unpack(NULL, hosts->kvs[i]->value.len,
                                                                          hosts->kvs[i]->value.data);
                GArray *own;
                ClusterBalanceHost h;

                if (!n)
                        continue;
                g_ptr_array_add(nodes, n);
                own = g_hash_table_lookup(movable, n->name);
                h = (ClusterBalanceHost){
                        .name = n->name,
                        .eligible = cluster_range_names(alive, ALIVE_PREFIX, n->name) &&
                                    !cluster_range_names(paused, PAUSED_PREFIX, n->name) &&
                                    !in_flight(balance, n->name),
                        .record_ms = n->last_renewal_unix_ms,
                        .average_pressure = n->average_pressure,
                        .cpu_wait_ns = n->cpu_wait_per_dispatch_ns,
                        .cpu_load_pct = n->cpu_load_pct,
                        .memory_free_bytes = n->memory_free_bytes,
                        .available_memory_bytes = n->available_memory_bytes,
                        .reservation_used_pct = n->reservation_used_pct,
                        .reservation_capacity_pct = n->reservation_capacity_pct,
                        .vms = own ? (const ClusterBalanceVm *)(const void *)own->data : NULL,
                        .n_vms = own ? own->len : 0,
                };
                g_array_append_val(hosts_in, h);
        }
        cluster_balance_rule_decide(c->balance_rule, &rule,
                                    (const ClusterBalanceHost *)(const void *)hosts_in->data, hosts_in->len,
                                    balance->n_kvs > 0, g_get_monotonic_time() / 1000, &d);
        if (d.cause != CLUSTER_BALANCE_NONE)
                r = ask_decided(c, token, &d,
                                nodes->pdata[d.to - (const ClusterBalanceHost *)(const void *)hosts_in->data],
                                ret_error);
out:
        cluster_balance_decision_clear(&d);
        if (settings)
                vmms__v1__cluster_settings__free_unpacked(settings, NULL);
        vmms_etcd_range_free(hosts);
        vmms_etcd_range_free(alive);
        vmms_etcd_range_free(paused);
        vmms_etcd_range_free(balance);
        vmms_etcd_range_free(vms);
        return r < 0 ? r : 0;
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

/* What a VM weighs in a move: by CPU, the processor time it uses (% of one LP); by
 * memory, its pressure. */
static double vm_weight(VmmsCluster *c, VmmsVm *vm, bool by_cpu)
{
        return by_cpu ? vm->figures.cpu_usage_pct : vm_pressure(c, vm);
}

/* The running VM Move-VM can move whose memory fits in `room` and whose Reserve fits in
 * `reserve_room`, the heaviest (vm_weight). */
static VmmsVm *balance_choose(VmmsCluster *c, uint64_t room, uint32_t reserve_room, bool by_cpu)
{
        GPtrArray *vms = vmms_manager_vms(c->m);
        VmmsVm *best = NULL;

        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->job || vm->def.state != VMMS_VM_RUNNING || strcmp(vm->def.engine, "bundled") != 0 ||
                    vm->def.memory.startup_bytes > room ||
                    (uint64_t)vm->def.processor.reserve * MAX(vm->def.processor.count, 1) > reserve_room)
                        continue;
                if (!best || vm_weight(c, vm, by_cpu) > vm_weight(c, best, by_cpu))
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
        vm = move && mig ? balance_choose(c, move->to_free_bytes, move->to_reserve_room_pct, move->by_cpu)
                         : NULL;
        if (!vm) {
                g_autofree char *what = g_strdup_printf(
                        "auto-balance: nothing moves to %s: %s", move ? move->to : "?",
                        !move  ? "the leader's request is unreadable"
                        : !mig ? "this host cannot move VMs (no --tls-cert, --tls-key, --tls-ca)"
                               : "no running VM of the bundled engine fits in the memory free there "
                                 "and its room for Reserve");

                g_message("cluster: %s", what);
                vmms_manager_record_host_event(c->m, "cluster-balance", what);
                balance_done(c, rev);
        } else {
                g_autofree char *what =
                        g_strdup_printf("auto-balance: moving to %s (%s %.0f %% here): %s", move->to,
                                        move->by_cpu ? "CPU usage" : "Average Pressure",
                                        vm_weight(c, vm, move->by_cpu), move->reason);

                g_message("cluster: VM '%s' %s", vm->def.name, what);
                vmms_vm_record_event(vm, "cluster-balance", what);
                g_strlcpy(c->balance_vm_id, vm->def.id, sizeof(c->balance_vm_id));
                vmms_migration_move(mig, vm, move->to_address, 0, NULL);
        }
        if (move)
                vmms__v1__cluster_balance_move__free_unpacked(move, NULL);
}
