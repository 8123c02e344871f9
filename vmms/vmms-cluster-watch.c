/* The cluster's watch: a stream of etcd's changes under /vmms/ that wakes the cluster
 * thread when one concerns it, so a host going Down, a VM given here and a term that can
 * begin are acted on at once rather than at the next period (TTL / 3). The periods stay:
 * the watch only brings a pass forward, and a pass reads everything again, so an event
 * lost while the stream was down is found by the next pass as before.
 *
 * What wakes the cluster thread:
 *   - an alive key deleted: a host went Down; the leader starts its fence-margin clock
 *     (vmms-cluster-leader.c) from that moment, not up to a period later;
 *   - a candidate key deleted: the leader's term ended; the next candidate takes over;
 *   - an owner key naming this host with restart set: the leader gave a VM here;
 *   - an owner key naming another host for a VM this host has: placement turns it off
 *     here if it runs (never two copies).
 * Renewals, record writes and this host's own key writes do not; nor, while renewals
 * fail, does anything (vmms-cluster.c): the lease comes first. */
#include <errno.h>
#include <string.h>

#include "vmms-cluster-private.h"

#define WATCH_POLL_MS 250 /* how soon the watch thread notices vmmsd stopping */

static bool has_prefix(const ProtobufCBinaryData *key, const char *prefix)
{
        size_t n = strlen(prefix);

        return key->len >= n && memcmp(key->data, prefix, n) == 0;
}

/* Whether `event` concerns this host's cluster thread (the list above). */
static bool event_wakes(VmmsCluster *c, const Etcdserverpb__Event *event)
{
        const Etcdserverpb__KeyValue *kv = event->kv;
        bool put = event->type == ETCDSERVERPB__EVENT__EVENT_TYPE__PUT;
        Vmms__V1__ClusterVm *cv;
        bool wakes = false;

        if (!kv)
                return false;
        if (!put && (has_prefix(&kv->key, ALIVE_PREFIX) || has_prefix(&kv->key, LEADER_PREFIX)))
                return true;
        if (!put || !has_prefix(&kv->key, VMS_PREFIX))
                return false;
        cv = vmms__v1__cluster_vm__unpack(NULL, kv->value.len, kv->value.data);
        if (!cv)
                return false;
        if (strcmp(cv->host, c->host_name) == 0) {
                wakes = cv->restart;
        } else {
                g_autofree char *id = g_strndup((const char *)kv->key.data + strlen(VMS_PREFIX),
                                                kv->key.len - strlen(VMS_PREFIX));

                g_mutex_lock(&c->lock);
                wakes = c->local && g_hash_table_contains(c->local, id);
                g_mutex_unlock(&c->lock);
        }
        vmms__v1__cluster_vm__free_unpacked(cv, NULL);
        return wakes;
}

static void kick(VmmsCluster *c)
{
        g_mutex_lock(&c->lock);
        c->kicked = true;
        g_cond_broadcast(&c->wake);
        g_mutex_unlock(&c->lock);
}

/* Sleeps `ms` unless vmmsd stops first; returns whether to go on. */
static bool pause_unless_stopping(VmmsCluster *c, int64_t ms)
{
        int64_t until = g_get_monotonic_time() + ms * 1000;
        bool go_on;

        g_mutex_lock(&c->lock);
        while (!c->stopping && g_cond_wait_until(&c->wake, &c->lock, until))
                ;
        go_on = !c->stopping;
        g_mutex_unlock(&c->lock);
        return go_on;
}

static bool stopping(VmmsCluster *c)
{
        bool stop;

        g_mutex_lock(&c->lock);
        stop = c->stopping;
        g_mutex_unlock(&c->lock);
        return stop;
}

gpointer cluster_watch_thread(gpointer userdata)
{
        VmmsCluster *c = userdata;
        g_autofree char *end = vmms_etcd_prefix_end(CLUSTER_PREFIX);
        g_autoptr(VmmsEtcdWatch) w = NULL;

        while (!stopping(c)) {
                g_autofree char *why = NULL;
                Etcdserverpb__WatchResponse *resp = NULL;
                bool wakes = false;
                int r;

                if (!w) {
                        /* etcd unreachable: the renewals say so; the watch tries again. What
                         * changed meanwhile is found by the next periodic pass, not a kicked
                         * one: a new watch often follows an etcd election, when a pass's
                         * calls would wait in front of the renewal that keeps the lease. */
                        if (vmms_etcd_watch_new(c->etcd, CLUSTER_PREFIX, end, c->period_ms, &w, &why) < 0) {
                                g_debug("cluster: %s", why);
                                if (!pause_unless_stopping(c, c->period_ms))
                                        break;
                                continue;
                        }
                }
                r = vmms_etcd_watch_next(w, WATCH_POLL_MS, &resp, &why);
                if (r < 0) {
                        g_debug("cluster: %s", why);
                        g_clear_pointer(&w, vmms_etcd_watch_free);
                        continue;
                }
                for (size_t i = 0; r > 0 && !wakes && i < resp->n_events; i++)
                        wakes = event_wakes(c, resp->events[i]);
                if (resp)
                        etcdserverpb__watch_response__free_unpacked(resp, NULL);
                if (wakes)
                        kick(c);
        }
        return NULL;
}
