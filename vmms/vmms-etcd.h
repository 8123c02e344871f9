/* A small etcd v3 client over the gRPC C core (proto/etcd.proto): KV range, put, delete
 * and transactions, lease grant, keep-alive and revoke. Every call blocks until etcd
 * answers or its deadline passes, so it is called from a thread of its own (vmms-cluster.c),
 * never from the main loop; calls may run on several threads at once (each has its own
 * completion queue on the one channel). A call waits for a member to be reachable up to
 * its deadline (gRPC wait-for-ready), so the loss of one member of three is a retry, not
 * an error. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "etcd.pb-c.h"

typedef struct VmmsEtcd VmmsEtcd;

/* `endpoints`: "HOST:PORT" or "IP:PORT,IP:PORT,..." (several members: IPv4 literals).
 * -EINVAL with a message naming the bad endpoint. Connects lazily; one reference. */
int vmms_etcd_endpoints_check(const char *endpoints, char **ret_error);
int vmms_etcd_new(const char *endpoints, VmmsEtcd **ret, char **ret_error);
/* A thread that outlives its caller's reference (a listing in flight) holds its own. */
VmmsEtcd *vmms_etcd_ref(VmmsEtcd *etcd);
void vmms_etcd_unref(VmmsEtcd *etcd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsEtcd, vmms_etcd_unref)
const char *vmms_etcd_endpoints(const VmmsEtcd *etcd);

/* Calls that fail return -ETIMEDOUT (deadline), -ENOTCONN (no member reachable), -ENOENT
 * (etcd's NOT_FOUND, e.g. an expired lease) or -EIO (any other status), with etcd's
 * message in *ret_error (when ret_error is not NULL). */

/* The keys of [key, range_end); range_end NULL: `key` alone. Free *ret with
 * etcdserverpb__range_response__free_unpacked. */
int vmms_etcd_range(VmmsEtcd *etcd, const char *key, const char *range_end, int64_t timeout_ms,
                    Etcdserverpb__RangeResponse **ret, char **ret_error);
/* Frees a range's answer; NULL is fine. */
void vmms_etcd_range_free(Etcdserverpb__RangeResponse *range);
/* Puts `value` (len bytes) at `key`, attached to `lease` (0: none); *ret_revision (may
 * be NULL) is the store revision of the write. */
int vmms_etcd_put(VmmsEtcd *etcd, const char *key, const void *value, size_t len, int64_t lease,
                  int64_t timeout_ms, int64_t *ret_revision, char **ret_error);
int vmms_etcd_delete(VmmsEtcd *etcd, const char *key, int64_t timeout_ms, char **ret_error);
/* Free *ret with etcdserverpb__txn_response__free_unpacked. */
int vmms_etcd_txn(VmmsEtcd *etcd, const Etcdserverpb__TxnRequest *request, int64_t timeout_ms,
                  Etcdserverpb__TxnResponse **ret, char **ret_error);

/* A lease of at least `ttl_seconds` (etcd may grant more: its minimum is 2 s at default
 * election settings). */
int vmms_etcd_lease_grant(VmmsEtcd *etcd, int64_t ttl_seconds, int64_t timeout_ms, int64_t *ret_id,
                          int64_t *ret_ttl, char **ret_error);
/* One keep-alive: the lease's TTL starts over; -ENOENT when it has expired or was
 * revoked (etcd answers TTL 0 or NOT_FOUND). */
int vmms_etcd_lease_keepalive(VmmsEtcd *etcd, int64_t id, int64_t timeout_ms, int64_t *ret_ttl,
                              char **ret_error);
int vmms_etcd_lease_revoke(VmmsEtcd *etcd, int64_t id, int64_t timeout_ms, char **ret_error);

/* The range_end that makes [prefix, end) every key starting with `prefix`. */
char *vmms_etcd_prefix_end(const char *prefix);

/* A watch on [key, range_end) from the store's revision when it starts: etcd streams each
 * change (Watch, one stream per watch). Like the unary calls it asks for a member with a
 * leader ("hasleader"), so a member cut off from its quorum ends the stream instead of
 * going quiet. One thread at a time calls next. */
typedef struct VmmsEtcdWatch VmmsEtcdWatch;
/* Waits up to timeout_ms for etcd to confirm the watch. */
int vmms_etcd_watch_new(VmmsEtcd *etcd, const char *key, const char *range_end, int64_t timeout_ms,
                        VmmsEtcdWatch **ret, char **ret_error);
/* The next response with events: 1 and *ret (free with
 * etcdserverpb__watch_response__free_unpacked); 0 when none came within timeout_ms; < 0 when
 * the stream ended (etcd's reason in *ret_error): watch again, and read what changed meanwhile. */
int vmms_etcd_watch_next(VmmsEtcdWatch *w, int64_t timeout_ms, Etcdserverpb__WatchResponse **ret,
                         char **ret_error);
/* Cancels the stream if it runs; NULL is fine. */
void vmms_etcd_watch_free(VmmsEtcdWatch *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsEtcdWatch, vmms_etcd_watch_free)
