/* What the cluster's files share: the keys, the cluster object, and the calls between
 * membership (vmms-cluster.c) and placement (vmms-cluster-placement.c). */
#pragma once

#include "hv-client.h"
#include "vmms-cluster-balance-rule.h"
#include "vmms-cluster.h"
#include "vmms-etcd.h"
#include "vmms.pb-c.h"

#define CLUSTER_PREFIX "/vmms/"
#define HOSTS_PREFIX CLUSTER_PREFIX "hosts/"
#define ALIVE_PREFIX CLUSTER_PREFIX "alive/"
#define VMS_PREFIX CLUSTER_PREFIX "vms/"
#define LEADER_PREFIX CLUSTER_PREFIX "leader/"
#define PAUSED_PREFIX CLUSTER_PREFIX "paused/"   /* Suspend-ClusterNode: "pause" or "drain" */
#define BALANCE_PREFIX CLUSTER_PREFIX "balance/" /* auto-balance: a ClusterBalanceMove asked of a host */
/* Auto-balance's hysteresis (records in a row, one a period), its rate limit (periods
 * between two asks) and the time a move back the same way is not asked (periods); the
 * rules are in vmms-cluster-balance-rule.h. */
#define BALANCE_LOOKS 3
#define BALANCE_SPACING_PERIODS 3
#define BALANCE_PINGPONG_PERIODS 30
#define HOST_NAME_MAX_LEN 63

struct VmmsCluster {
        VmmsManager *m;
        VmmsEtcd *etcd;
        char *host_name, *host_address;
        char *alive_key, *record_key;
        uint32_t lease_ttl_s;
        uint32_t period_ms;       /* TTL / 3: renewals and the host's figures */
        uint32_t fence_margin_ms; /* TTL / 4: self-fence at TTL - margin, HA restarts after TTL + margin */
        char *hvd_socket;         /* the watchdog's connection goes there */
        GMainContext *main_context;
        guint figures_timer;
        void *watch;          /* the manager's events: a VM that changes is written out at once */
        guint vm_change_idle; /* one snapshot per burst of events */
        GThread *thread;
        GThread *watch_thread; /* vmms-cluster-watch.c: etcd's changes wake `thread` */

        /* The cluster thread's own */
        HvClient *watchdog;      /* a connection to hvd of its own, for WatchdogArm */
        bool watchdog_said;      /* that it cannot be armed, once */
        bool fenced_unarmed;     /* fenced for a lost lease since the last arm: a fired watchdog is no news */
        int64_t renewed_sent_us; /* monotonic: when the last renewal that succeeded left */
        bool fenced_unrenewed;   /* fenced for renewals failing past TTL - margin, since the last success */
        char *leader_key;        /* LEADER_PREFIX + this lease, created with the alive key */
        GHashTable *down_since;  /* host name -> monotonic µs the leader first saw it Down */
        int64_t leader_wake_us;  /* the leader's next pass: a Down host's fence margin ends; 0: none */
        GHashTable *ha_said;     /* VM ids whose restart the leader could not place, said once */
        GHashTable *stale;       /* VM id -> StaleKey (vmms-cluster-placement.c): keys naming this host
                                    for a VM it does not have, since when */
        uint32_t auto_balance_pct;        /* --cluster-auto-balance: the settings' first value (0: off) */
        ClusterBalanceRule *balance_rule; /* the leader's looks and recent moves */

        GMutex lock; /* guards what follows */
        GCond wake;
        bool stopping;
        bool kicked;              /* the main thread has news: sync the VMs before the period ends */
        GBytes *figures;          /* packed ClusterNode without the lease fields, from the main thread */
        GHashTable *local;        /* this host's VMs: id -> GBytes (packed Vm), from the main thread */
        GHashTable *removed;      /* ids of VMs removed here whose keys are to go (a set) */
        bool drain;               /* this host's paused key says "drain" */
        GBytes *balance;          /* this host's balance key's value (a ClusterBalanceMove), NULL if none */
        int64_t balance_rev;      /* its mod revision */
        int64_t balance_done_rev; /* the main thread has handled that revision: the key is deleted */

        /* Main thread: the drain (a step each period, from the figures' tick) */
        bool drain_choosing; /* a target is being chosen for a VM */
        bool drain_said;     /* that nothing is left to move, once per drain */
        /* Main thread: the auto-balance move asked of this host */
        int64_t balance_moved_rev; /* the balance key's revision acted on */
        char balance_vm_id[37];    /* the VM moving for it; empty: none */
};

/* The watch thread (vmms-cluster-watch.c): wakes the cluster thread when etcd changes a
 * key that concerns it; ends when `stopping` is set. */
gpointer cluster_watch_thread(gpointer userdata);

/* Whether `range` holds the key prefix + name (a host's alive or paused key). */
bool cluster_range_names(const Etcdserverpb__RangeResponse *range, const char *prefix, const char *name);

void cluster_notify(VmmsCluster *c, const char *kind, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* Main thread: this host's VMs as placement writes them (id -> GBytes of a packed Vm
 * holding the definition and state, not the figures that change every second). */
GHashTable *cluster_placement_snapshot(VmmsCluster *c);
/* Cluster thread, each period and when kicked: every local VM has an owner key (created
 * for this host when absent); this host's keys follow its VMs' definitions and states
 * (compared on the key's revision); the keys of VMs removed here (`removed`, a set of
 * ids) go. Keys other hosts own are left alone. A key this host owns without having the
 * VM and without restart set (this host's store restored or replaced, the VM removed while
 * etcd was unreachable and vmmsd restarted since, a move in that the destination gave up
 * after the key was handed to it) is stale: once it has stayed so, unchanged, for a lease
 * TTL (a VM being registered here is in the snapshot long before), it is deleted by a
 * transaction that compares its revision, and a cluster-reconcile event says so; a host
 * that has the VM then writes the key for itself on its next pass. */
int cluster_placement_sync(VmmsCluster *c, GHashTable *local, GHashTable *removed, char **ret_error);

/* One compare (create revision 0, or mod revision `rev`) guarding one put (value) or
 * one delete (value NULL); on failure the key's current value comes back in
 * *ret_current (NULL when absent), owned by *ret_resp (free it with
 * etcdserverpb__txn_response__free_unpacked). 1: done; 0: the compare failed. */
int cluster_guarded_write(VmmsEtcd *etcd, const char *key, bool create, int64_t rev, GBytes *value,
                          int64_t timeout_ms, Etcdserverpb__KeyValue **ret_current,
                          Etcdserverpb__TxnResponse **ret_resp, char **ret_error);

/* The key of a VM and its ClusterVm value. */
char *cluster_vm_key(const char *vm_id);

/* A GPtrArray free function for unpacked ClusterNode records. */
void cluster_node_free(gpointer node);

/* Cluster thread, each pass: the election (the leader is the holder of the key under
 * LEADER_PREFIX with the lowest create revision, and that revision is its fencing token:
 * every write it makes compares it), then, on the leader, the HA job: a highly available
 * VM that was running on a host Down for at least the fence margin goes to the Up host
 * with the most free memory (then the least CPU load) that can hold it and admit its
 * Reserve, by a transaction that compares the token and the VM key's revision. Its sweep:
 * an owner key naming a host that never joined (no record) is deleted the same way, with a
 * cluster-reconcile event. */
int cluster_leader_pass(VmmsCluster *c, char **ret_error);
/* Cluster thread, the leader's every write: puts `key` = `value` (value NULL: deletes `key`)
 * only if the leader still holds its fencing `token` (its election key's create revision)
 * and `guard` holds. 1 written, 0 refused (deposed, or the guard failed), < 0 etcd failed. */
int cluster_leader_put(VmmsCluster *c, int64_t token, Etcdserverpb__Compare *guard, ProtobufCBinaryData key,
                       const uint8_t *value, size_t len, char **ret_error);

/* Cluster thread, on the leader after the HA job while the cluster's settings say
 * auto-balance: each host's new record is a look for cluster_balance_rule_decide (Up, not
 * Paused and in no move: eligible; its movable VMs from the owner keys); a move it decides
 * is asked of the source (/vmms/balance/<host>, written with the fencing token, only where
 * absent). Each ask is a cluster-balance event naming the figures. */
int cluster_balance_pass(VmmsCluster *c, int64_t token, char **ret_error);
/* A new term counts its own looks. */
void cluster_balance_forget(VmmsCluster *c);
/* Cluster thread, with each renewal: this host's balance key as just read (`range`) into
 * `balance`; deleted instead once the main thread has handled it. */
int cluster_balance_take(VmmsCluster *c, const Etcdserverpb__RangeResponse *range, char **ret_error);
/* Main thread, each period: a new ask moves this host's running VM under the most pressure
 * that fits on the target (Move-VM's live migration); its end (moved or not) is handled. */
void cluster_balance_step(VmmsCluster *c);

/* Cluster thread, the leader each pass: the cluster's settings (vmms-cluster-settings.c);
 * while etcd has none, this host's defaults are written there (fenced, only where absent).
 * *ret NULL when there are none to act on yet; free with
 * vmms__v1__cluster_settings__free_unpacked. */
int cluster_settings_leader(VmmsCluster *c, int64_t token, Vmms__V1__ClusterSettings **ret, char **ret_error);

/* Main thread: the Up, not Paused host other than this one with the most free memory
 * that can hold `vm` (result: its address). */
void cluster_placement_choose(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata);
/* Main thread, each period while this host drains: moves its next running VM away. */
void cluster_drain_step(VmmsCluster *c);

/* Main thread: a key this host was given with `restart` set (packed ClusterVm): the VM
 * is defined here from it if it is not, and started if it is Off. */
void cluster_placement_restart_here(VmmsCluster *c, GBytes *cluster_vm);
