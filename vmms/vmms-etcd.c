/* etcd's v3 API spoken with the gRPC C core: one channel, one completion queue per call.
 * Messages are packed with protobuf-c (proto/etcd.proto) and sent as raw byte buffers,
 * as api/api-grpc.c does for vmmsd's own API. */
#include <errno.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "vmms-etcd.h"

struct VmmsEtcd {
        gint refs;
        char *endpoints;
        grpc_channel *channel;
};

/* Each endpoint HOST:PORT with a port in 1-65535; with several, each host an IPv4
 * literal (the channel's "ipv4:" target resolves nothing). */
static char *endpoints_target(const char *endpoints, char **ret_error)
{
        g_auto(GStrv) parts = g_strsplit(endpoints, ",", -1);
        guint n = g_strv_length(parts);

        if (n == 0) {
                *ret_error = g_strdup("no etcd endpoint given (etcd=HOST:PORT,...)");
                return NULL;
        }
        for (guint i = 0; i < n; i++) {
                const char *colon = strrchr(parts[i], ':');
                g_autofree char *host = colon ? g_strndup(parts[i], colon - parts[i]) : NULL;
                char *end = NULL;
                unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;

                if (!colon || !host[0] || !colon[1] || *end || port == 0 || port > 65535) {
                        *ret_error = g_strdup_printf("etcd endpoint '%s' is not HOST:PORT", parts[i]);
                        return NULL;
                }
                if (n > 1 && (!g_hostname_is_ip_address(host) || strchr(host, ':'))) {
                        *ret_error = g_strdup_printf("etcd endpoint '%s': with several members, each "
                                                     "must be an IPv4 address and port",
                                                     parts[i]);
                        return NULL;
                }
        }
        return n > 1 ? g_strconcat("ipv4:", endpoints, NULL) : g_strdup(endpoints);
}

int vmms_etcd_endpoints_check(const char *endpoints, char **ret_error)
{
        g_autofree char *target = endpoints_target(endpoints, ret_error);

        return target ? 0 : -EINVAL;
}

int vmms_etcd_new(const char *endpoints, VmmsEtcd **ret, char **ret_error)
{
        g_autofree char *target = endpoints_target(endpoints, ret_error);
        grpc_channel_credentials *credentials;
        VmmsEtcd *etcd;

        if (!target)
                return -EINVAL;
        grpc_init();
        etcd = g_new0(VmmsEtcd, 1);
        etcd->refs = 1;
        etcd->endpoints = g_strdup(endpoints);
        credentials = grpc_insecure_credentials_create();
        etcd->channel = grpc_channel_create(target, credentials, NULL);
        grpc_channel_credentials_release(credentials);
        *ret = etcd;
        return 0;
}

VmmsEtcd *vmms_etcd_ref(VmmsEtcd *etcd)
{
        g_atomic_int_inc(&etcd->refs);
        return etcd;
}

void vmms_etcd_unref(VmmsEtcd *etcd)
{
        if (!etcd || !g_atomic_int_dec_and_test(&etcd->refs))
                return;
        grpc_channel_destroy(etcd->channel);
        grpc_shutdown();
        g_free(etcd->endpoints);
        g_free(etcd);
}

const char *vmms_etcd_endpoints(const VmmsEtcd *etcd)
{
        return etcd->endpoints;
}

static int status_to_errno(grpc_status_code status)
{
        switch (status) {
        case GRPC_STATUS_OK:
                return 0;
        case GRPC_STATUS_NOT_FOUND:
                return -ENOENT;
        case GRPC_STATUS_DEADLINE_EXCEEDED:
                return -ETIMEDOUT;
        case GRPC_STATUS_UNAVAILABLE:
                return -ENOTCONN;
        default:
                return -EIO;
        }
}

/* One request, one response: a unary call, or the first exchange of a stream the client
 * half-closes at once (LeaseKeepAlive). etcd refuses streams on a member without a
 * leader only when asked to ("hasleader"), which keeps a cut-off member from answering. */
static int call_once(VmmsEtcd *etcd, const char *method, const ProtobufCMessage *request,
                     const ProtobufCMessageDescriptor *response_type, int64_t timeout_ms,
                     ProtobufCMessage **ret_response, char **ret_error)
{
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        gpr_timespec deadline =
                gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
        size_t len = protobuf_c_message_get_packed_size(request);
        grpc_slice slice = grpc_slice_malloc(len);
        grpc_byte_buffer *send, *recv = NULL;
        grpc_metadata_array initial, trailing;
        grpc_metadata hasleader = {.key = grpc_slice_from_static_string("hasleader"),
                                   .value = grpc_slice_from_static_string("true")};
        grpc_status_code status = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();
        grpc_op ops[6];
        grpc_call *call;
        grpc_event ev;
        int r;

        protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(slice));
        send = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        grpc_metadata_array_init(&initial);
        grpc_metadata_array_init(&trailing);
        call = grpc_channel_create_call(etcd->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                        grpc_slice_from_static_string(method), NULL, deadline, NULL);
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &hasleader;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = send;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &recv;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
        ops[5].data.recv_status_on_client.status = &status;
        ops[5].data.recv_status_on_client.status_details = &details;
        if (grpc_call_start_batch(call, ops, G_N_ELEMENTS(ops), call, NULL) != GRPC_CALL_OK) {
                r = -EIO;
                if (ret_error)
                        *ret_error = g_strdup_printf("cannot start a call to %s", method);
                goto out;
        }
        ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        r = status_to_errno(status);
        if (ev.type != GRPC_OP_COMPLETE)
                r = -EIO;
        if (r < 0) {
                if (ret_error)
                        *ret_error = g_strdup_printf("etcd %s at %s: %.*s", method, etcd->endpoints,
                                                     (int)GRPC_SLICE_LENGTH(details),
                                                     (const char *)GRPC_SLICE_START_PTR(details));
        } else if (!recv) {
                r = -EIO;
                if (ret_error)
                        *ret_error = g_strdup_printf("etcd %s at %s: no answer", method, etcd->endpoints);
        } else {
                grpc_byte_buffer_reader reader;
                grpc_slice all;

                grpc_byte_buffer_reader_init(&reader, recv);
                all = grpc_byte_buffer_reader_readall(&reader);
                grpc_byte_buffer_reader_destroy(&reader);
                *ret_response = protobuf_c_message_unpack(response_type, NULL, GRPC_SLICE_LENGTH(all),
                                                          GRPC_SLICE_START_PTR(all));
                grpc_slice_unref(all);
                if (!*ret_response) {
                        r = -EIO;
                        if (ret_error)
                                *ret_error = g_strdup_printf("etcd %s at %s: an answer that does not "
                                                             "unpack as %s",
                                                             method, etcd->endpoints, response_type->name);
                }
        }
out:
        if (recv)
                grpc_byte_buffer_destroy(recv);
        grpc_byte_buffer_destroy(send);
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&initial);
        grpc_metadata_array_destroy(&trailing);
        grpc_call_unref(call);
        grpc_completion_queue_shutdown(cq);
        while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(cq);
        return r;
}

static ProtobufCBinaryData bytes_of(const char *text)
{
        return (ProtobufCBinaryData){.data = (uint8_t *)text, .len = text ? strlen(text) : 0};
}

int vmms_etcd_range(VmmsEtcd *etcd, const char *key, const char *range_end, int64_t timeout_ms,
                    Etcdserverpb__RangeResponse **ret, char **ret_error)
{
        Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int r;

        req.key = bytes_of(key);
        req.range_end = bytes_of(range_end);
        r = call_once(etcd, "/etcdserverpb.KV/Range", &req.base, &etcdserverpb__range_response__descriptor,
                      timeout_ms, &resp, ret_error);
        if (r < 0)
                return r;
        *ret = (Etcdserverpb__RangeResponse *)resp;
        return 0;
}

void vmms_etcd_range_free(Etcdserverpb__RangeResponse *range)
{
        if (range)
                etcdserverpb__range_response__free_unpacked(range, NULL);
}

int vmms_etcd_put(VmmsEtcd *etcd, const char *key, const void *value, size_t len, int64_t lease,
                  int64_t timeout_ms, int64_t *ret_revision, char **ret_error)
{
        Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
        Etcdserverpb__PutResponse *resp = NULL;
        int r;

        req.key = bytes_of(key);
        req.value = (ProtobufCBinaryData){.data = (uint8_t *)value, .len = len};
        req.lease = lease;
        r = call_once(etcd, "/etcdserverpb.KV/Put", &req.base, &etcdserverpb__put_response__descriptor,
                      timeout_ms, (ProtobufCMessage **)&resp, ret_error);
        if (r < 0)
                return r;
        if (ret_revision)
                *ret_revision = resp->header ? resp->header->revision : 0;
        etcdserverpb__put_response__free_unpacked(resp, NULL);
        return 0;
}

int vmms_etcd_delete(VmmsEtcd *etcd, const char *key, int64_t timeout_ms, char **ret_error)
{
        Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        Etcdserverpb__DeleteRangeResponse *resp = NULL;
        int r;

        req.key = bytes_of(key);
        r = call_once(etcd, "/etcdserverpb.KV/DeleteRange", &req.base,
                      &etcdserverpb__delete_range_response__descriptor, timeout_ms,
                      (ProtobufCMessage **)&resp, ret_error);
        if (r < 0)
                return r;
        etcdserverpb__delete_range_response__free_unpacked(resp, NULL);
        return 0;
}

int vmms_etcd_txn(VmmsEtcd *etcd, const Etcdserverpb__TxnRequest *request, int64_t timeout_ms,
                  Etcdserverpb__TxnResponse **ret, char **ret_error)
{
        return call_once(etcd, "/etcdserverpb.KV/Txn", &request->base,
                         &etcdserverpb__txn_response__descriptor, timeout_ms, (ProtobufCMessage **)ret,
                         ret_error);
}

int vmms_etcd_lease_grant(VmmsEtcd *etcd, int64_t ttl_seconds, int64_t timeout_ms, int64_t *ret_id,
                          int64_t *ret_ttl, char **ret_error)
{
        Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
        Etcdserverpb__LeaseGrantResponse *resp = NULL;
        int r;

        req.ttl = ttl_seconds;
        r = call_once(etcd, "/etcdserverpb.Lease/LeaseGrant", &req.base,
                      &etcdserverpb__lease_grant_response__descriptor, timeout_ms, (ProtobufCMessage **)&resp,
                      ret_error);
        if (r < 0)
                return r;
        if (resp->error && resp->error[0]) {
                if (ret_error)
                        *ret_error = g_strdup_printf("etcd refused a lease of %" G_GINT64_FORMAT " s: %s",
                                                     ttl_seconds, resp->error);
                r = -EIO;
        } else {
                *ret_id = resp->id;
                *ret_ttl = resp->ttl;
        }
        etcdserverpb__lease_grant_response__free_unpacked(resp, NULL);
        return r;
}

int vmms_etcd_lease_keepalive(VmmsEtcd *etcd, int64_t id, int64_t timeout_ms, int64_t *ret_ttl,
                              char **ret_error)
{
        Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
        Etcdserverpb__LeaseKeepAliveResponse *resp = NULL;
        int r;

        req.id = id;
        r = call_once(etcd, "/etcdserverpb.Lease/LeaseKeepAlive", &req.base,
                      &etcdserverpb__lease_keep_alive_response__descriptor, timeout_ms,
                      (ProtobufCMessage **)&resp, ret_error);
        if (r < 0)
                return r;
        if (resp->ttl <= 0) {
                if (ret_error)
                        *ret_error = g_strdup_printf("etcd lease %" G_GINT64_MODIFIER "x has expired", id);
                r = -ENOENT;
        } else if (ret_ttl) {
                *ret_ttl = resp->ttl;
        }
        etcdserverpb__lease_keep_alive_response__free_unpacked(resp, NULL);
        return r;
}

int vmms_etcd_lease_revoke(VmmsEtcd *etcd, int64_t id, int64_t timeout_ms, char **ret_error)
{
        Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
        Etcdserverpb__LeaseRevokeResponse *resp = NULL;
        int r;

        req.id = id;
        r = call_once(etcd, "/etcdserverpb.Lease/LeaseRevoke", &req.base,
                      &etcdserverpb__lease_revoke_response__descriptor, timeout_ms,
                      (ProtobufCMessage **)&resp, ret_error);
        if (r < 0)
                return r;
        etcdserverpb__lease_revoke_response__free_unpacked(resp, NULL);
        return 0;
}

char *vmms_etcd_prefix_end(const char *prefix)
{
        char *end = g_strdup(prefix);
        size_t n = strlen(end);

        /* Keys here are printable text: the last byte is never 0xff. */
        g_assert(n > 0);
        end[n - 1]++;
        return end;
}
