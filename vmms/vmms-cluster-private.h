/* What the cluster's files share: the keys, the cluster object, and the calls between
 * membership (vmms-cluster.c) and placement (vmms-cluster-placement.c). */
#pragma once

#include "vmms-cluster.h"
#include "vmms-etcd.h"
#include "vmms.pb-c.h"

#define CLUSTER_PREFIX "/vmms/"
#define HOSTS_PREFIX CLUSTER_PREFIX "hosts/"
#define ALIVE_PREFIX CLUSTER_PREFIX "alive/"
#define VMS_PREFIX CLUSTER_PREFIX "vms/"
#define HOST_NAME_MAX_LEN 63

struct VmmsCluster {
        VmmsManager *m;
        VmmsEtcd *etcd;
        char *host_name, *host_address;
        char *alive_key, *record_key;
        uint32_t lease_ttl_s;
        uint32_t period_ms; /* TTL / 3: renewals and the host's figures */
        GMainContext *main_context;
        guint figures_timer;
        void *watch;          /* the manager's events: a VM that changes is written out at once */
        guint vm_change_idle; /* one snapshot per burst of events */
        GThread *thread;

        GMutex lock; /* guards what follows */
        GCond wake;
        bool stopping;
        bool kicked;         /* the main thread has news: sync the VMs before the period ends */
        GBytes *figures;     /* packed ClusterNode without the lease fields, from the main thread */
        GHashTable *local;   /* this host's VMs: id -> GBytes (packed Vm), from the main thread */
        GHashTable *removed; /* ids of VMs removed here whose keys are to go (a set) */
};

void cluster_notify(VmmsCluster *c, const char *kind, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* Main thread: this host's VMs as placement writes them (id -> GBytes of a packed Vm
 * holding the definition and state, not the figures that change every second). */
GHashTable *cluster_placement_snapshot(VmmsCluster *c);
/* Cluster thread, each period and when kicked: every local VM has an owner key (created
 * for this host when absent); this host's keys follow its VMs' definitions and states
 * (compared on the key's revision); the keys of VMs removed here (`removed`, a set of
 * ids) go. Keys other hosts own are left alone. A key this host owns without having the
 * VM (the VM moved in but is not registered yet, or a store restored from a backup) is
 * left too: only a removal deletes. */
int cluster_placement_sync(VmmsCluster *c, GHashTable *local, GHashTable *removed, char **ret_error);

/* The key of a VM and its ClusterVm value. */
char *cluster_vm_key(const char *vm_id);
