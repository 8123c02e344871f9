/* A cluster of vmmsd hosts whose shared state lives in etcd (vmmsd --cluster).
 *
 * Membership: each host holds an etcd lease of `lease_ttl_s` seconds and renews it every
 * TTL/3. Attached to the lease is /vmms/alive/<host>, so the key disappears when the host
 * stops renewing; beside it, /vmms/hosts/<host> is the host's record (a packed
 * vmms.v1.ClusterNode: address, engines, capacity, free memory, CPU load, compatibility
 * vector, VM counts, the balancer's Average Pressure and Available Memory, the time of the
 * last renewal), rewritten at each renewal and kept
 * after the lease expires. A host is Up while its alive key exists and Down once it is
 * gone. The alive key is created only if absent, so a second vmmsd with the same
 * --host-name does not take a live host's place.
 *
 * Threads: etcd calls block, so they run on the cluster's own thread (renewals) or on a
 * GTask thread (a listing); the main thread hands the thread the host's figures each
 * period and hears back about joins and lost leases through the main context. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "vmms-call.h"
#include "vmms-limits.h"
#include "vmms-manager.h"
#include "vmms.pb-c.h"

#define VMMS_CLUSTER_LEASE_TTL_DEFAULT 10
#define VMMS_CLUSTER_LEASE_TTL_MIN 2 /* etcd's own minimum at its default election settings */
#define VMMS_CLUSTER_LEASE_TTL_MAX 3600

typedef struct VmmsClusterConfig {
        const char *spec;          /* --cluster: "etcd=IP:PORT,IP:PORT,..." */
        const char *host_name;     /* --host-name */
        const char *host_address;  /* --host-address: HOST:PORT where peers move VMs to */
        uint32_t lease_ttl_s;      /* 0: VMMS_CLUSTER_LEASE_TTL_DEFAULT */
        uint32_t auto_balance_pct; /* --cluster-auto-balance: 0 off, else the average pressure (%) over
                                      which the leader moves VMs off a host; the cluster's settings
                                      (Set-Cluster) start from it */
} VmmsClusterConfig;

/* Checks the settings: the spec's form (etcd=, each endpoint HOST:PORT), the host name
 * ([A-Za-z0-9._-], 1-63 bytes), the address (HOST:PORT), the TTL's range. -EINVAL with a
 * message naming what was wrong. */
int vmms_cluster_config_check(const VmmsClusterConfig *config, char **ret_error);
/* Checks the settings and starts joining in the background. The manager is told
 * (vmms_manager_set_cluster). */
int vmms_cluster_new(VmmsManager *m, const VmmsClusterConfig *config, VmmsCluster **ret, char **ret_error);
/* Stops renewing (the lease then expires on its own: VMs keep running, as they do when
 * vmmsd stops) and forgets the manager. */
void vmms_cluster_free(VmmsCluster *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsCluster, vmms_cluster_free)

const char *vmms_cluster_host_name(const VmmsCluster *c);

/* ListClusterNodes: answers `call` later, from etcd, with every host that ever joined. */
void vmms_cluster_list_nodes(VmmsCluster *c, VmmsCall *call);
/* Suspend-ClusterNode (drain: the host moves its running VMs away) and Resume-ClusterNode
 * of the host called `name`, then the listing; NOT_FOUND for a name no host has. */
void vmms_cluster_suspend_node(VmmsCluster *c, const char *name, bool drain, VmmsCall *call);
void vmms_cluster_resume_node(VmmsCluster *c, const char *name, VmmsCall *call);

/* Get-Cluster: the cluster-wide settings as etcd holds them (vmms-cluster-settings.c);
 * before any are stored, this host's defaults with `stored` false. */
void vmms_cluster_get_settings(VmmsCluster *c, VmmsCall *call);
/* Set-Cluster: the fields update_mask names change, by a transaction that compares the
 * key's revision with the one read (read again and retried when another write came
 * between); a bad value or an unknown field is refused by name (INVALID_ARGUMENT). */
void vmms_cluster_set_settings(VmmsCluster *c, const Vmms__V1__SetClusterRequest *request, VmmsCall *call);

/* Placement (vmms-cluster-placement.c). Each VM of a host in a cluster has an owner key,
 * /vmms/vms/<id>, holding a vmms.v1.ClusterVm: the owner's name and the VM as the owner
 * last wrote it. The key is created only where it is absent (create revision 0) and
 * changed or deleted only by a transaction that compares its mod revision with the one
 * just read, so two hosts can never both believe they took it. A VM runs only on the
 * host its key names: Start-VM claims the key first and is refused, by the owner's name,
 * when another host holds it; Move-VM hands the key to the destination in its commit
 * step, before COMMIT leaves (a hand-over that fails ends the move with the VM running
 * on here). */

/* Answers on the main thread: `error` NULL on success; `result` (may be NULL) as each
 * call says. */
typedef void (*VmmsClusterDoneFn)(const VmmsError *error, const char *result, void *userdata);
/* Start-VM: the key for this host if absent, or kept if this host holds it; refused
 * (FAILED_PRECONDITION, naming the owner) when another host holds it. */
void vmms_cluster_claim(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata);
/* Start-VM asked by a caller: as vmms_cluster_claim, but refused (FAILED_PRECONDITION)
 * while this host is Paused (Suspend-ClusterNode). What vmmsd starts on its own (a move
 * cut short during a drain) claims with vmms_cluster_claim. */
void vmms_cluster_claim_for_start(VmmsCluster *c, VmmsVm *vm, VmmsClusterDoneFn fn, void *userdata);
/* New-VM, Rename-VM and Move-VM: VM names are unique in the cluster. Refused (ALREADY_EXISTS, naming
 * the owner) when an owner key of another host holds a VM called `name` (casefolded) other
 * than `vm_id` (NULL: any). A check, not a reservation: two hosts creating one name in the
 * same instant both pass. */
void vmms_cluster_check_name(VmmsCluster *c, const char *name, const char *vm_id, VmmsClusterDoneFn fn,
                             void *userdata);
/* Move-VM's commit step: the key passes to the Up host whose address is `destination`
 * (an address no host of the cluster has is refused); result: that host's name. */
void vmms_cluster_hand_over(VmmsCluster *c, VmmsVm *vm, const char *destination, VmmsClusterDoneFn fn,
                            void *userdata);
/* Move-VM -DestinationHost NAME: the address of the Up host called `name` (the address
 * book is the hosts' records); NOT_FOUND, or FAILED_PRECONDITION when it is Down or this
 * host. */
void vmms_cluster_resolve(VmmsCluster *c, const char *name, VmmsClusterDoneFn fn, void *userdata);
/* ListVms with cluster set: every VM of the cluster, each with its owner (Vm.host);
 * `name_filter` as ListVms's. */
void vmms_cluster_list_vms(VmmsCluster *c, const char *name_filter, VmmsCall *call);
