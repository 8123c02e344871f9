/* Cluster membership over etcd: the lease, the host record and the listing of hosts
 * (the design is in vmms-cluster.h). */
#include <errno.h>
#include <string.h>

#include <gio/gio.h>

#include "vmms-cluster-private.h"
#include "vmms-memory.h"
#include "vmms-ops.h"
#include "vmms.pb-c.h"

/* ---- What the main thread hears from the renewal thread ---- */

typedef struct ClusterNotice {
        VmmsManager *m;
        char *kind; /* an event kind: cluster-joined, cluster-lease-lost, cluster-error */
        char *message;
} ClusterNotice;

static gboolean notice_deliver(gpointer userdata)
{
        ClusterNotice *n = userdata;

        if (strcmp(n->kind, "cluster-error") == 0)
                g_warning("cluster: %s", n->message);
        else
                g_message("cluster: %s", n->message);
        vmms_manager_record_host_event(n->m, n->kind, n->message);
        return G_SOURCE_REMOVE;
}

static void notice_free(gpointer userdata)
{
        ClusterNotice *n = userdata;

        g_free(n->kind);
        g_free(n->message);
        g_free(n);
}

void cluster_notify(VmmsCluster *c, const char *kind, const char *fmt, ...)
{
        ClusterNotice *n = g_new0(ClusterNotice, 1);
        va_list ap;

        va_start(ap, fmt);
        n->m = c->m;
        n->kind = g_strdup(kind);
        n->message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_main_context_invoke_full(c->main_context, G_PRIORITY_DEFAULT, notice_deliver, n, notice_free);
}

/* ---- The host's figures (main thread) ---- */

static char *compat_text(VmmsManager *m)
{
        const Vmms__Hv__CompatibilityVector *v = vmms_manager_compat_vector(m, false);

        if (!v)
                return g_strdup("");
        return g_strdup_printf("%s/%s/%s/%.12s/abi%u/proto%u", v->engine, v->engine_version, v->cpu_model,
                               v->cpuid_hash, v->guest_abi_version, v->protocol_version);
}

/* Busy share of all LPs between the last two samples. */
static double cpu_load_pct(VmmsManager *m)
{
        const Vmms__Hv__Counters *prev, *cur;
        uint64_t busy = 0, all = 0;

        if (!vmms_manager_counters(m, &prev, &cur) || prev->n_lps != cur->n_lps)
                return 0;
        for (size_t i = 0; i < cur->n_lps; i++) {
                uint64_t b0 = prev->lps[i]->guest_ns + prev->lps[i]->hypervisor_ns;
                uint64_t b1 = cur->lps[i]->guest_ns + cur->lps[i]->hypervisor_ns;

                if (b1 < b0 || cur->lps[i]->idle_ns < prev->lps[i]->idle_ns)
                        return 0;
                busy += b1 - b0;
                all += b1 - b0 + cur->lps[i]->idle_ns - prev->lps[i]->idle_ns;
        }
        return all ? 100.0 * (double)busy / (double)all : 0;
}

/* CPU Wait Time Per Dispatch over every VP between the last two samples: the wait of all
 * their dispatches over the number of dispatches (each VP's counter, weighted by its
 * dispatches), ns. */
static double cpu_wait_per_dispatch_ns(VmmsManager *m)
{
        const Vmms__Hv__Counters *prev, *cur;
        uint64_t wait = 0, dispatches = 0;

        if (!vmms_manager_counters(m, &prev, &cur))
                return 0;
        for (size_t i = 0; i < cur->n_partitions; i++) {
                const Vmms__Hv__PartitionCounters *pc = cur->partitions[i], *pp = NULL;

                for (size_t k = 0; !pp && k < prev->n_partitions; k++)
                        if (prev->partitions[k]->partition_id == pc->partition_id)
                                pp = prev->partitions[k];
                for (size_t v = 0; pp && v < pc->n_vps && v < pp->n_vps; v++) {
                        const Vmms__Hv__VpCounters *a = pp->vps[v], *b = pc->vps[v];

                        if (b->dispatches < a->dispatches || b->wait_ns < a->wait_ns)
                                continue;
                        wait += b->wait_ns - a->wait_ns;
                        dispatches += b->dispatches - a->dispatches;
                }
        }
        return dispatches ? (double)wait / (double)dispatches : 0;
}

static void figures_take(VmmsCluster *c)
{
        Vmms__V1__ClusterNode node = VMMS__V1__CLUSTER_NODE__INIT;
        const Vmms__Hv__Counters *cur = vmms_manager_last_sample(c->m);
        GPtrArray *vms = vmms_manager_vms(c->m);
        g_autoptr(GArray) engines = vmms_manager_engines(c->m);
        g_autofree char *compat = compat_text(c->m);
        const BalancerHostCounters *balancer = vmms_memory_host_counters(vmms_manager_memory(c->m));
        g_autofree char **engine_names = g_new0(char *, engines->len + 1);
        g_autofree uint8_t *packed = NULL;
        size_t len;

        node.name = c->host_name;
        node.address = c->host_address;
        for (guint i = 0; i < engines->len; i++) {
                VmmsEngineInfo *e = &g_array_index(engines, VmmsEngineInfo, i);

                if (e->available)
                        engine_names[node.n_engines++] = (char *)e->name;
        }
        node.engines = engine_names;
        if (cur) {
                node.reservation_used_pct = cur->reserved_pct;
                node.reservation_capacity_pct = cur->capacity_pct;
                node.logical_processors = (uint32_t)cur->n_lps;
                node.memory_pool_bytes = cur->pool_total_bytes;
                node.memory_free_bytes = cur->pool_total_bytes > cur->pool_used_bytes
                                                 ? cur->pool_total_bytes - cur->pool_used_bytes
                                                 : 0;
        }
        node.cpu_load_pct = cpu_load_pct(c->m);
        node.cpu_wait_per_dispatch_ns = cpu_wait_per_dispatch_ns(c->m);
        if (balancer) {
                node.average_pressure = balancer->average_pressure;
                node.available_memory_bytes = balancer->available_bytes;
        }
        node.compatibility_vector = compat;
        node.vm_count = vms->len;
        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->def.state != VMMS_VM_OFF && vm->def.state != VMMS_VM_SAVED)
                        node.running_vm_count++;
        }
        len = vmms__v1__cluster_node__get_packed_size(&node);
        packed = g_malloc(len ? len : 1);
        vmms__v1__cluster_node__pack(&node, packed);
        for (guint i = 0; i < engines->len; i++)
                g_free(g_array_index(engines, VmmsEngineInfo, i).why_not);
        g_mutex_lock(&c->lock);
        g_clear_pointer(&c->figures, g_bytes_unref);
        c->figures = g_bytes_new_take(g_steal_pointer(&packed), len);
        g_mutex_unlock(&c->lock);
}

/* This host's VMs for placement; kick: have the cluster thread write them now. */
static void local_take(VmmsCluster *c, bool kick)
{
        g_autoptr(GHashTable) local = cluster_placement_snapshot(c);

        g_mutex_lock(&c->lock);
        g_clear_pointer(&c->local, g_hash_table_unref);
        c->local = g_steal_pointer(&local);
        if (kick) {
                c->kicked = true;
                g_cond_broadcast(&c->wake);
        }
        g_mutex_unlock(&c->lock);
}

static gboolean on_figures_tick(gpointer userdata)
{
        VmmsCluster *c = userdata;
        bool drain;

        figures_take(c);
        local_take(c, false);
        g_mutex_lock(&c->lock);
        drain = c->drain;
        g_mutex_unlock(&c->lock);
        if (drain)
                cluster_drain_step(c);
        else
                c->drain_said = false;
        cluster_balance_step(c);
        return G_SOURCE_CONTINUE;
}

/* A VM's event (created, state, settings, removed...): its owner key follows at once.
 * Events come in bursts; one snapshot per main-loop turn. */
static gboolean on_vm_changed_idle(gpointer userdata)
{
        VmmsCluster *c = userdata;

        c->vm_change_idle = 0;
        local_take(c, true);
        return G_SOURCE_REMOVE;
}

static void on_event(const VmmsEventRecord *event, void *userdata)
{
        VmmsCluster *c = userdata;

        if (!event->vm_id || !event->vm_id[0])
                return;
        if (g_strcmp0(event->kind, "removed") == 0) {
                g_mutex_lock(&c->lock);
                g_hash_table_add(c->removed, g_strdup(event->vm_id));
                g_mutex_unlock(&c->lock);
        }
        if (!c->vm_change_idle)
                c->vm_change_idle = g_idle_add(on_vm_changed_idle, c);
}

/* ---- Renewals (the cluster thread) ---- */

/* Creates this host's alive key and its candidate key for the election on `lease`,
 * unless another lease holds the alive key. */
static int alive_claim(VmmsCluster *c, int64_t lease, const char *leader_key, char **ret_error)
{
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
        Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, op2 = ETCDSERVERPB__REQUEST_OP__INIT;
        Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT,
                                 put2 = ETCDSERVERPB__PUT_REQUEST__INIT;
        Etcdserverpb__Compare *cmps[] = {&cmp};
        Etcdserverpb__RequestOp *ops[] = {&op, &op2};
        Etcdserverpb__TxnResponse *resp = NULL;
        int r;

        cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
        cmp.key = (ProtobufCBinaryData){.data = (uint8_t *)c->alive_key, .len = strlen(c->alive_key)};
        cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        cmp.create_revision = 0;
        put.key = cmp.key;
        put.value = (ProtobufCBinaryData){.data = (uint8_t *)c->host_address, .len = strlen(c->host_address)};
        put.lease = lease;
        op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op.request_put = &put;
        put2.key = (ProtobufCBinaryData){.data = (uint8_t *)leader_key, .len = strlen(leader_key)};
        put2.value = (ProtobufCBinaryData){.data = (uint8_t *)c->host_name, .len = strlen(c->host_name)};
        put2.lease = lease;
        op2.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op2.request_put = &put2;
        txn.n_compare = 1;
        txn.compare = cmps;
        txn.n_success = 2;
        txn.success = ops;
        r = vmms_etcd_txn(c->etcd, &txn, c->period_ms, &resp, ret_error);
        if (r < 0)
                return r;
        if (!resp->succeeded) {
                *ret_error =
                        g_strdup_printf("another vmmsd holds the host name %s in the cluster (%s exists); "
                                        "this host waits for it to go",
                                        c->host_name, c->alive_key);
                r = -EEXIST;
        }
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        return r;
}

static int join(VmmsCluster *c, int64_t *ret_lease, char **ret_error)
{
        int64_t lease = 0, ttl = 0;
        int r;

        g_autofree char *leader_key = NULL;

        r = vmms_etcd_lease_grant(c->etcd, c->lease_ttl_s, c->period_ms, &lease, &ttl, ret_error);
        if (r < 0)
                return r;
        leader_key = g_strdup_printf(LEADER_PREFIX "%016" G_GINT64_MODIFIER "x", lease);
        r = alive_claim(c, lease, leader_key, ret_error);
        if (r < 0) {
                vmms_etcd_lease_revoke(c->etcd, lease, c->period_ms, NULL);
                return r;
        }
        g_free(c->leader_key);
        c->leader_key = g_steal_pointer(&leader_key);
        *ret_lease = lease;
        return 0;
}

static int record_put(VmmsCluster *c, int64_t lease, char **ret_error)
{
        g_autoptr(GBytes) figures = NULL;
        Vmms__V1__ClusterNode *node;
        g_autofree uint8_t *packed = NULL;
        size_t len;
        gsize flen;
        const uint8_t *fdata;

        g_mutex_lock(&c->lock);
        figures = c->figures ? g_bytes_ref(c->figures) : NULL;
        g_mutex_unlock(&c->lock);
        fdata = figures ? g_bytes_get_data(figures, &flen) : NULL;
        node = vmms__v1__cluster_node__unpack(NULL, fdata ? flen : 0, fdata);
        if (!node)
                return -EIO;
        node->last_renewal_unix_ms = g_get_real_time() / 1000;
        node->lease_id = lease;
        node->lease_ttl_seconds = c->lease_ttl_s;
        len = vmms__v1__cluster_node__get_packed_size(node);
        packed = g_malloc(len ? len : 1);
        vmms__v1__cluster_node__pack(node, packed);
        vmms__v1__cluster_node__free_unpacked(node, NULL);
        return vmms_etcd_put(c->etcd, c->record_key, packed, len, 0, c->period_ms, NULL, ret_error);
}

/* ---- Self-fence ---- */

/* Main thread: every VM that runs here is turned off, and the host says why. */
typedef struct FenceNotice {
        VmmsManager *m;
        char *why;
} FenceNotice;

static gboolean fence_deliver(gpointer userdata)
{
        FenceNotice *f = userdata;
        GPtrArray *vms = vmms_manager_vms(f->m);
        g_autofree char *message = NULL;
        guint n = 0;

        for (guint i = 0; i < vms->len; i++) {
                VmmsVm *vm = vms->pdata[i];

                if (vm->def.state == VMMS_VM_OFF || vm->def.state == VMMS_VM_SAVED)
                        continue;
                vmms_vm_record_event(vm, "cluster-fenced", "turned off: this host fenced itself");
                vmms_vm_stop(vm, true, true, NULL);
                n++;
        }
        message = g_strdup_printf("self-fence: %s; turned off %u VM%s (the cluster may run them elsewhere)",
                                  f->why, n, n == 1 ? "" : "s");
        g_warning("cluster: %s", message);
        vmms_manager_record_host_event(f->m, "cluster-fenced", message);
        return G_SOURCE_REMOVE;
}

static void fence_free(gpointer userdata)
{
        FenceNotice *f = userdata;

        g_free(f->why);
        g_free(f);
}

static void fence(VmmsCluster *c, const char *why)
{
        FenceNotice *f = g_new0(FenceNotice, 1);

        f->m = c->m;
        f->why = g_strdup(why);
        g_main_context_invoke_full(c->main_context, G_PRIORITY_HIGH, fence_deliver, f, fence_free);
}

/* Arms hvd's watchdog to fire TTL - margin after `sent_us` (when the renewal that just
 * succeeded left): if this vmmsd renews no more (stopped, killed, cut off), hvd pauses
 * every guest before the lease can expire and the leader restart them elsewhere. A
 * watchdog that fired since the last arm means this host's guests were paused: fenced. */
static void watchdog_arm(VmmsCluster *c, int64_t sent_us)
{
        int64_t left_ms = (int64_t)c->lease_ttl_s * 1000 - c->fence_margin_ms -
                          (g_get_monotonic_time() - sent_us) / 1000;
        bool fired = false;
        int r;

        if (!c->watchdog && hv_client_connect(c->hvd_socket, &c->watchdog) < 0) {
                if (!c->watchdog_said)
                        cluster_notify(c, "cluster-error",
                                       "cannot reach hvd at %s to arm its watchdog: this host's VMs run on "
                                       "unfenced until it can",
                                       c->hvd_socket);
                c->watchdog_said = true;
                return;
        }
        r = hv_client_watchdog_arm(c->watchdog, (uint32_t)MAX(left_ms, 1), &fired);
        if (r < 0) {
                g_clear_pointer(&c->watchdog, hv_client_free);
                return;
        }
        c->watchdog_said = false;
        if (fired && !c->fenced_unarmed)
                fence(c, "hvd's watchdog paused every VM here: this host did not renew its cluster lease "
                         "in time");
        c->fenced_unarmed = false;
}

/* Waits until `until_us`, or until the main thread kicks (not sooner than
 * KICK_SPACING_MS after the last pass) or asks to stop; returns whether to go on. */
#define KICK_SPACING_MS 100
#define RETRY_MS 200
static bool wait_until(VmmsCluster *c, int64_t until_us, int64_t last_pass_us)
{
        bool go_on;

        g_mutex_lock(&c->lock);
        for (;;) {
                int64_t now = g_get_monotonic_time();

                if (c->stopping || now >= until_us ||
                    (c->kicked && now >= last_pass_us + KICK_SPACING_MS * 1000))
                        break;
                g_cond_wait_until(&c->wake, &c->lock,
                                  c->kicked ? MIN(until_us, last_pass_us + KICK_SPACING_MS * 1000)
                                            : until_us);
        }
        go_on = !c->stopping;
        g_mutex_unlock(&c->lock);
        return go_on;
}

/* Whether Suspend-ClusterNode -Drain asked this host to move its VMs away, and the move
 * auto-balance asked of it: both keys in one round trip (a renewal's calls are what stand
 * between the watchdog and its deadline). */
static int marks_read(VmmsCluster *c, char **ret_error)
{
        g_autofree char *paused_key = g_strconcat(PAUSED_PREFIX, c->host_name, NULL);
        g_autofree char *balance_key = g_strconcat(BALANCE_PREFIX, c->host_name, NULL);
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        Etcdserverpb__RangeRequest paused = ETCDSERVERPB__RANGE_REQUEST__INIT,
                                   balance = ETCDSERVERPB__RANGE_REQUEST__INIT;
        Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, op2 = ETCDSERVERPB__REQUEST_OP__INIT;
        Etcdserverpb__RequestOp *ops[] = {&op, &op2};
        Etcdserverpb__TxnResponse *resp = NULL;
        const Etcdserverpb__RangeResponse *range;
        bool drain;
        int r;

        paused.key = (ProtobufCBinaryData){.data = (uint8_t *)paused_key, .len = strlen(paused_key)};
        balance.key = (ProtobufCBinaryData){.data = (uint8_t *)balance_key, .len = strlen(balance_key)};
        op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        op.request_range = &paused;
        op2.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        op2.request_range = &balance;
        txn.n_success = 2;
        txn.success = ops;
        r = vmms_etcd_txn(c->etcd, &txn, c->period_ms, &resp, ret_error);
        if (r < 0)
                return r;
        if (resp->n_responses != 2 ||
            resp->responses[0]->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE ||
            resp->responses[1]->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE) {
                *ret_error = g_strdup_printf("etcd answered the read of %s and %s with %zu responses, not "
                                             "two ranges",
                                             paused_key, balance_key, resp->n_responses);
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
                return -EIO;
        }
        range = resp->responses[0]->response_range;
        drain = range->n_kvs == 1 && range->kvs[0]->value.len == strlen("drain") &&
                memcmp(range->kvs[0]->value.data, "drain", strlen("drain")) == 0;
        g_mutex_lock(&c->lock);
        c->drain = drain;
        g_mutex_unlock(&c->lock);
        r = cluster_balance_take(c, resp->responses[1]->response_range, ret_error);
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        return r;
}

/* A renewal failed. Once TTL - margin has passed since the last one that succeeded left,
 * hvd's watchdog has paused this host's guests and the lease may expire before etcd
 * answers again (a majority of its members down, this host cut off): the host turns its
 * VMs off, as the leader will count on, and says why, once until a renewal succeeds. */
static void fence_unrenewed(VmmsCluster *c, const char *why)
{
        int64_t budget_ms = (int64_t)c->lease_ttl_s * 1000 - c->fence_margin_ms;
        g_autofree char *message = NULL;

        if (c->fenced_unrenewed || g_get_monotonic_time() < c->renewed_sent_us + budget_ms * 1000)
                return;
        message = g_strdup_printf("%s could not renew its cluster lease within %" G_GINT64_FORMAT
                                  " ms (TTL %u s less the fence margin): %s",
                                  c->host_name, budget_ms, c->lease_ttl_s, why ? why : "etcd did not answer");
        fence(c, message);
        c->fenced_unrenewed = true;
        c->fenced_unarmed = true; /* the watchdog that fired meanwhile is this fence, said already */
}

/* Joins if not joined, else renews the lease; arms the watchdog; then rewrites the
 * record. A lost lease fences this host (its VMs off) and it joins again only after
 * the leader has had the time to restart its HA VMs elsewhere. */
static int renew(VmmsCluster *c, int64_t *lease, int64_t *rejoin_us, char **ret_error)
{
        int64_t sent_us = g_get_monotonic_time();
        int r;

        if (*lease == 0) {
                if (sent_us < *rejoin_us)
                        return 0;
                r = join(c, lease, ret_error);
                if (r >= 0)
                        cluster_notify(c, "cluster-joined",
                                       "%s joined the cluster at %s as %s (lease %" G_GINT64_MODIFIER
                                       "x, TTL %u s)",
                                       c->host_name, vmms_etcd_endpoints(c->etcd), c->host_address, *lease,
                                       c->lease_ttl_s);
        } else {
                r = vmms_etcd_lease_keepalive(c->etcd, *lease, c->period_ms, NULL, ret_error);
                if (r == -ENOENT) {
                        g_autofree char *why = g_strdup_printf("%s lost its cluster lease %" G_GINT64_MODIFIER
                                                               "x (not renewed within %u s)",
                                                               c->host_name, *lease, c->lease_ttl_s);

                        cluster_notify(c, "cluster-lease-lost", "%s", why);
                        fence(c, why);
                        c->fenced_unarmed = true;
                        *lease = 0;
                        *rejoin_us = g_get_monotonic_time() +
                                     ((int64_t)c->fence_margin_ms + 3 * (int64_t)c->period_ms) * 1000;
                        g_clear_pointer(ret_error, g_free);
                        return 0;
                }
                if (r < 0)
                        fence_unrenewed(c, *ret_error);
        }
        if (r >= 0) {
                c->renewed_sent_us = sent_us;
                c->fenced_unrenewed = false;
                watchdog_arm(c, sent_us);
        }
        if (r >= 0)
                r = record_put(c, *lease, ret_error);
        if (r >= 0)
                r = marks_read(c, ret_error);
        return r;
}

/* Each period the lease and the record; each period and whenever the main thread kicks,
 * the VMs' owner keys. A failure is said once, when it starts, and its end once. */
static gpointer cluster_thread(gpointer userdata)
{
        VmmsCluster *c = userdata;
        int64_t lease = 0, next_renewal = 0, last_pass = 0, rejoin = 0;
        bool failing = false, renew_failing = false;

        do {
                g_autofree char *why = NULL;
                g_autoptr(GHashTable) local = NULL, removed = NULL;
                int r = 0;

                last_pass = g_get_monotonic_time();
                if (last_pass >= next_renewal) {
                        next_renewal = last_pass + (int64_t)c->period_ms * 1000;
                        r = renew(c, &lease, &rejoin, &why);
                        /* A renewal that failed (etcd electing a leader, a member gone) is tried
                         * again soon: the watchdog's deadline does not wait for the period. */
                        if (r < 0)
                                next_renewal = MIN(next_renewal, g_get_monotonic_time() + RETRY_MS * 1000);
                        renew_failing = r < 0;
                } else if (renew_failing) {
                        /* Kicked while renewals fail: the pass's etcd calls would only wait
                         * in front of the next renewal. */
                        r = -EAGAIN;
                }
                g_mutex_lock(&c->lock);
                c->kicked = false;
                local = c->local ? g_hash_table_ref(c->local) : NULL;
                removed = g_steal_pointer(&c->removed);
                c->removed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                g_mutex_unlock(&c->lock);
                if (r >= 0 && lease && local)
                        r = cluster_placement_sync(c, local, removed, &why);
                if (r >= 0 && lease)
                        r = cluster_leader_pass(c, &why);
                if ((r < 0 || !lease || !local) && g_hash_table_size(removed)) {
                        /* Not done: the next pass tries again. */
                        GHashTableIter it;
                        gpointer id;

                        g_mutex_lock(&c->lock);
                        g_hash_table_iter_init(&it, removed);
                        while (g_hash_table_iter_next(&it, &id, NULL))
                                g_hash_table_add(c->removed, g_strdup(id));
                        g_mutex_unlock(&c->lock);
                }
                if (r < 0 && !failing)
                        cluster_notify(c, "cluster-error", "%s", why ? why : g_strerror(-r));
                else if (r >= 0 && failing)
                        cluster_notify(c, "cluster-joined", "%s reaches etcd again", c->host_name);
                failing = r < 0;
        } while (wait_until(c, c->leader_wake_us ? MIN(next_renewal, c->leader_wake_us) : next_renewal,
                            last_pass));
        return NULL;
}

/* ---- Starts of vmmsd's own (AutomaticStartAction) ---- */

typedef struct GatedStart {
        VmmsCluster *c;
        char vm_id[37];
} GatedStart;

static void on_gate_claimed(const VmmsError *error, const char *result, void *userdata)
{
        g_autofree GatedStart *g = userdata;
        VmmsVm *vm = vmms_manager_lookup(g->c->m, g->vm_id, NULL);

        (void)result;
        if (!vm)
                return;
        if (error) {
                g_autofree char *why = g_strdup_printf("not started on its own: %s", error->message);

                g_message("cluster: VM '%s' %s", vm->def.name, why);
                vmms_vm_record_event(vm, "cluster", why);
                return;
        }
        if (!vm->job && (vm->def.state == VMMS_VM_OFF || vm->def.state == VMMS_VM_SAVED))
                vmms_vm_start(vm, NULL);
}

/* A VM vmmsd would start on its own starts only if this host holds its key (a host back
 * from a crash must not start what the leader restarted elsewhere). */
static void start_gate(VmmsVm *vm, void *userdata)
{
        GatedStart *g = g_new0(GatedStart, 1);

        g->c = userdata;
        g_strlcpy(g->vm_id, vm->def.id, sizeof(g->vm_id));
        vmms_cluster_claim(g->c, vm, on_gate_claimed, g);
}

/* ---- Setup ---- */

static bool host_name_valid(const char *name)
{
        size_t n = name ? strlen(name) : 0;

        if (n == 0 || n > HOST_NAME_MAX_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!g_ascii_isalnum(name[i]) && !strchr("._-", name[i]))
                        return false;
        return true;
}

static bool address_valid(const char *address)
{
        const char *colon = address ? strrchr(address, ':') : NULL;
        char *end = NULL;
        unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;

        return colon && colon != address && colon[1] && !*end && port > 0 && port <= 65535;
}

int vmms_cluster_config_check(const VmmsClusterConfig *config, char **ret_error)
{
        g_autofree char *why = NULL;

        if (!config->spec || !g_str_has_prefix(config->spec, "etcd=")) {
                *ret_error = g_strdup_printf("--cluster '%s' is not etcd=IP:PORT,IP:PORT,...",
                                             config->spec ? config->spec : "");
                return -EINVAL;
        }
        if (!host_name_valid(config->host_name)) {
                *ret_error = g_strdup_printf("--host-name '%s' is not 1-%d letters, digits, '.', '_' or '-'",
                                             config->host_name ? config->host_name : "", HOST_NAME_MAX_LEN);
                return -EINVAL;
        }
        if (!address_valid(config->host_address)) {
                *ret_error = g_strdup_printf("--host-address '%s' is not HOST:PORT (where peers move VMs to: "
                                             "this host's --migration-listen)",
                                             config->host_address ? config->host_address : "");
                return -EINVAL;
        }
        if (config->lease_ttl_s && (config->lease_ttl_s < VMMS_CLUSTER_LEASE_TTL_MIN ||
                                    config->lease_ttl_s > VMMS_CLUSTER_LEASE_TTL_MAX)) {
                *ret_error = g_strdup_printf("--cluster-lease-ttl %u is out of range %d-%d (etcd grants "
                                             "no lease under %d s)",
                                             config->lease_ttl_s, VMMS_CLUSTER_LEASE_TTL_MIN,
                                             VMMS_CLUSTER_LEASE_TTL_MAX, VMMS_CLUSTER_LEASE_TTL_MIN);
                return -EINVAL;
        }
        if (config->auto_balance_pct > VMMS_CLUSTER_AUTO_BALANCE_MAX) {
                *ret_error = g_strdup_printf("--cluster-auto-balance %u is out of range 1-%d (an average "
                                             "memory pressure, %%; 0 turns it off)",
                                             config->auto_balance_pct, VMMS_CLUSTER_AUTO_BALANCE_MAX);
                return -EINVAL;
        }
        if (vmms_etcd_endpoints_check(config->spec + strlen("etcd="), &why) < 0) {
                *ret_error = g_strdup_printf("--cluster: %s", why);
                return -EINVAL;
        }
        return 0;
}

int vmms_cluster_new(VmmsManager *m, const VmmsClusterConfig *config, VmmsCluster **ret, char **ret_error)
{
        g_autoptr(VmmsCluster) c = NULL;
        g_autoptr(VmmsEtcd) etcd = NULL;
        int r;

        r = vmms_cluster_config_check(config, ret_error);
        if (r < 0)
                return r;
        r = vmms_etcd_new(config->spec + strlen("etcd="), &etcd, ret_error);
        if (r < 0) {
                g_autofree char *why = *ret_error;

                *ret_error = g_strdup_printf("--cluster: %s", why);
                return r;
        }
        c = g_new0(VmmsCluster, 1);
        c->m = m;
        c->etcd = g_steal_pointer(&etcd);
        c->host_name = g_strdup(config->host_name);
        c->host_address = g_strdup(config->host_address);
        c->alive_key = g_strconcat(ALIVE_PREFIX, config->host_name, NULL);
        c->record_key = g_strconcat(HOSTS_PREFIX, config->host_name, NULL);
        c->lease_ttl_s = config->lease_ttl_s ? config->lease_ttl_s : VMMS_CLUSTER_LEASE_TTL_DEFAULT;
        c->period_ms = c->lease_ttl_s * 1000 / 3;
        c->fence_margin_ms = c->lease_ttl_s * 1000 / 4;
        c->hvd_socket = g_strdup(vmms_manager_config(m)->hvd_socket);
        c->down_since = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        c->ha_said = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        c->stale = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        c->auto_balance_pct = config->auto_balance_pct;
        c->balance_rule = cluster_balance_rule_new();
        c->main_context = g_main_context_ref_thread_default();
        g_mutex_init(&c->lock);
        g_cond_init(&c->wake);
        c->removed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        figures_take(c);
        local_take(c, false);
        c->figures_timer = g_timeout_add(c->period_ms, on_figures_tick, c);
        c->watch = vmms_manager_watch(m, on_event, c);
        c->thread = g_thread_new("vmms-cluster", cluster_thread, c);
        c->watch_thread = g_thread_new("vmms-cluster-watch", cluster_watch_thread, c);
        vmms_manager_set_cluster(m, c);
        vmms_manager_set_start_gate(m, start_gate, c);
        *ret = g_steal_pointer(&c);
        return 0;
}

void vmms_cluster_free(VmmsCluster *c)
{
        if (!c)
                return;
        if (c->thread) {
                g_mutex_lock(&c->lock);
                c->stopping = true;
                g_cond_broadcast(&c->wake);
                g_mutex_unlock(&c->lock);
                g_thread_join(c->thread);
        }
        if (c->watch_thread)
                g_thread_join(c->watch_thread);
        if (c->figures_timer)
                g_source_remove(c->figures_timer);
        if (c->vm_change_idle)
                g_source_remove(c->vm_change_idle);
        if (c->watch)
                vmms_manager_unwatch(c->m, c->watch);
        g_clear_pointer(&c->local, g_hash_table_unref);
        g_clear_pointer(&c->removed, g_hash_table_unref);
        if (c->m && vmms_manager_cluster(c->m) == c) {
                vmms_manager_set_cluster(c->m, NULL);
                vmms_manager_set_start_gate(c->m, NULL, NULL);
        }
        g_clear_pointer(&c->figures, g_bytes_unref);
        g_mutex_clear(&c->lock);
        g_cond_clear(&c->wake);
        if (c->main_context)
                g_main_context_unref(c->main_context);
        vmms_etcd_unref(c->etcd);
        g_free(c->host_name);
        g_free(c->host_address);
        g_free(c->alive_key);
        g_free(c->record_key);
        g_free(c->hvd_socket);
        g_free(c->leader_key);
        if (c->watchdog)
                hv_client_free(c->watchdog);
        if (c->down_since)
                g_hash_table_unref(c->down_since);
        if (c->ha_said)
                g_hash_table_unref(c->ha_said);
        if (c->stale)
                g_hash_table_unref(c->stale);
        cluster_balance_rule_free(c->balance_rule);
        g_clear_pointer(&c->balance, g_bytes_unref);
        g_free(c);
}

const char *vmms_cluster_host_name(const VmmsCluster *c)
{
        return c->host_name;
}

/* ---- ListClusterNodes ---- */

typedef struct NodeListing {
        VmmsEtcd *etcd;
        VmmsCall *call;
        uint32_t timeout_ms;
        char *change_name;        /* Suspend-/Resume-ClusterNode: the host; NULL for a listing */
        const char *change_value; /* "pause", "drain"; NULL: resume */
        Etcdserverpb__RangeResponse *hosts, *alive, *leaders, *paused;
        VmmsErrorCode code;
        char *error;
        int r;
} NodeListing;

static void node_listing_free(NodeListing *l)
{
        vmms_etcd_unref(l->etcd);
        vmms_etcd_range_free(l->hosts);
        vmms_etcd_range_free(l->alive);
        vmms_etcd_range_free(l->leaders);
        vmms_etcd_range_free(l->paused);
        g_free(l->change_name);
        g_free(l->error);
        g_free(l);
}

/* Suspend-/Resume-ClusterNode's write: the paused key of a host that has a record. */
static int node_change(NodeListing *l)
{
        g_autofree char *record_key = g_strconcat(HOSTS_PREFIX, l->change_name, NULL);
        g_autofree char *paused_key = g_strconcat(PAUSED_PREFIX, l->change_name, NULL);
        Etcdserverpb__RangeResponse *record = NULL;
        int r;

        r = vmms_etcd_range(l->etcd, record_key, NULL, l->timeout_ms, &record, &l->error);
        if (r < 0)
                return r;
        if (record->n_kvs == 0) {
                l->code = VMMS_ERROR_NOT_FOUND;
                l->error = g_strdup_printf("no host named '%s' in the cluster (Get-ClusterNode lists them)",
                                           l->change_name);
                r = -ENOENT;
        } else if (l->change_value) {
                r = vmms_etcd_put(l->etcd, paused_key, l->change_value, strlen(l->change_value), 0,
                                  l->timeout_ms, NULL, &l->error);
        } else {
                r = vmms_etcd_delete(l->etcd, paused_key, l->timeout_ms, &l->error);
        }
        etcdserverpb__range_response__free_unpacked(record, NULL);
        return r;
}

static void node_listing_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
        NodeListing *l = task_data;
        g_autofree char *hosts_end = vmms_etcd_prefix_end(HOSTS_PREFIX);
        g_autofree char *alive_end = vmms_etcd_prefix_end(ALIVE_PREFIX);
        g_autofree char *leaders_end = vmms_etcd_prefix_end(LEADER_PREFIX);
        g_autofree char *paused_end = vmms_etcd_prefix_end(PAUSED_PREFIX);

        (void)source;
        (void)cancellable;
        l->code = VMMS_ERROR_UNAVAILABLE;
        l->r = l->change_name ? node_change(l) : 0;
        /* Alive first: a host whose record is read after its lease is never shown Up late. */
        if (l->r >= 0)
                l->r = vmms_etcd_range(l->etcd, ALIVE_PREFIX, alive_end, l->timeout_ms, &l->alive, &l->error);
        if (l->r >= 0)
                l->r = vmms_etcd_range(l->etcd, LEADER_PREFIX, leaders_end, l->timeout_ms, &l->leaders,
                                       &l->error);
        if (l->r >= 0)
                l->r = vmms_etcd_range(l->etcd, PAUSED_PREFIX, paused_end, l->timeout_ms, &l->paused,
                                       &l->error);
        if (l->r >= 0)
                l->r = vmms_etcd_range(l->etcd, HOSTS_PREFIX, hosts_end, l->timeout_ms, &l->hosts, &l->error);
        g_task_return_boolean(task, TRUE);
}

bool cluster_range_names(const Etcdserverpb__RangeResponse *range, const char *prefix, const char *name)
{
        size_t plen = strlen(prefix), nlen = strlen(name);

        for (size_t i = 0; i < range->n_kvs; i++) {
                const ProtobufCBinaryData *k = &range->kvs[i]->key;

                if (k->len == plen + nlen && memcmp(k->data, prefix, plen) == 0 &&
                    memcmp(k->data + plen, name, nlen) == 0)
                        return true;
        }
        return false;
}

void cluster_node_free(gpointer node)
{
        vmms__v1__cluster_node__free_unpacked(node, NULL);
}

static void node_listing_done(GObject *source, GAsyncResult *result, gpointer userdata)
{
        NodeListing *l = g_task_get_task_data(G_TASK(result));
        Vmms__V1__ListClusterNodesResponse *out;
        g_autoptr(GPtrArray) nodes = NULL;
        const Etcdserverpb__KeyValue *leader = NULL;

        (void)source;
        (void)userdata;
        if (l->r < 0 && l->code != VMMS_ERROR_UNAVAILABLE) {
                vmms_call_fail(l->call, l->code, "%s", l->error);
                return;
        }
        if (l->r < 0) {
                vmms_call_fail(l->call, VMMS_ERROR_UNAVAILABLE, "cannot %s the cluster's hosts: %s",
                               l->change_name ? "change" : "read", l->error);
                return;
        }
        for (size_t i = 0; i < l->leaders->n_kvs; i++)
                if (!leader || l->leaders->kvs[i]->create_revision < leader->create_revision)
                        leader = l->leaders->kvs[i];
        nodes = g_ptr_array_new_with_free_func(cluster_node_free);
        out = vmms_call_new0(l->call, Vmms__V1__ListClusterNodesResponse);
        vmms__v1__list_cluster_nodes_response__init(out);
        out->nodes = vmms_call_alloc(l->call, sizeof(Vmms__V1__ClusterNode *) * (l->hosts->n_kvs + 1));
        for (size_t i = 0; i < l->hosts->n_kvs; i++) {
                const ProtobufCBinaryData *v = &l->hosts->kvs[i]->value;
                Vmms__V1__ClusterNode *node = vmms__v1__cluster_node__unpack(NULL, v->len, v->data);

                if (!node)
                        continue; /* not a record this version wrote */
                g_ptr_array_add(nodes, node);
                if (!node->name[0])
                        continue;
                node->state = !cluster_range_names(l->alive, ALIVE_PREFIX, node->name)
                                      ? VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_DOWN
                              : cluster_range_names(l->paused, PAUSED_PREFIX, node->name)
                                      ? VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_PAUSED
                                      : VMMS__V1__CLUSTER_NODE_STATE__CLUSTER_NODE_STATE_UP;
                node->leader = leader && leader->value.len == strlen(node->name) &&
                               memcmp(leader->value.data, node->name, leader->value.len) == 0;
                out->nodes[out->n_nodes++] = node;
        }
        vmms_call_return(l->call, &out->base);
}

static void node_listing_start(VmmsCluster *c, VmmsCall *call, const char *change_name,
                               const char *change_value)
{
        g_autoptr(GTask) task = g_task_new(NULL, NULL, node_listing_done, NULL);
        NodeListing *l = g_new0(NodeListing, 1);

        l->etcd = vmms_etcd_ref(c->etcd);
        l->call = call;
        l->timeout_ms = MAX(c->period_ms, 2000);
        l->change_name = g_strdup(change_name);
        l->change_value = change_value;
        g_task_set_task_data(task, l, (GDestroyNotify)node_listing_free);
        g_task_run_in_thread(task, node_listing_run);
}

void vmms_cluster_list_nodes(VmmsCluster *c, VmmsCall *call)
{
        node_listing_start(c, call, NULL, NULL);
}

void vmms_cluster_suspend_node(VmmsCluster *c, const char *name, bool drain, VmmsCall *call)
{
        node_listing_start(c, call, name ? name : "", drain ? "drain" : "pause");
}

void vmms_cluster_resume_node(VmmsCluster *c, const char *name, VmmsCall *call)
{
        node_listing_start(c, call, name ? name : "", NULL);
}
