/* etcd's v3 API spoken with the gRPC C core: one channel, one completion queue per call.
 * Messages are packed with protobuf-c (proto/etcd.proto) and sent as raw byte buffers,
 * as api/api-grpc.c does for vmmsd's own API. */
#include <errno.h>
#include <stdbool.h>
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

/* What a failed call's message adds to etcd's own words, for the statuses an operator
 * meets when etcd itself is in trouble. */
static const char *status_hint(grpc_status_code status)
{
        switch (status) {
        case GRPC_STATUS_DEADLINE_EXCEEDED:
                return " (no answer in time: etcd answers only while a majority of its members are up and "
                       "agree on a leader)";
        case GRPC_STATUS_UNAVAILABLE:
                return " (no member reachable, or none with a leader: etcd needs a majority of its members "
                       "up)";
        default:
                return "";
        }
}

/* Every call's first two ops: the metadata asking for a member with a leader (waiting for
 * one to be reachable), then `request` packed into *ret_send, which the caller destroys once
 * the batch has completed. `hasleader` lives as long as the batch. */
static void request_ops(grpc_op ops[2], grpc_metadata *hasleader, const ProtobufCMessage *request,
                        grpc_byte_buffer **ret_send)
{
        grpc_slice slice = grpc_slice_malloc(protobuf_c_message_get_packed_size(request));

        protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(slice));
        *ret_send = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        hasleader->key = grpc_slice_from_static_string("hasleader");
        hasleader->value = grpc_slice_from_static_string("true");
        memset(ops, 0, 2 * sizeof(*ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = hasleader;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = *ret_send;
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
        grpc_byte_buffer *send, *recv = NULL;
        grpc_metadata_array initial, trailing;
        grpc_metadata hasleader;
        grpc_status_code status = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();
        grpc_op ops[6];
        grpc_call *call;
        grpc_event ev;
        int r;

        grpc_metadata_array_init(&initial);
        grpc_metadata_array_init(&trailing);
        call = grpc_channel_create_call(etcd->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                        grpc_slice_from_static_string(method), NULL, deadline, NULL);
        memset(ops, 0, sizeof(ops));
        request_ops(ops, &hasleader, request, &send);
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
                        *ret_error = g_strdup_printf("etcd %s at %s: %.*s%s", method, etcd->endpoints,
                                                     (int)GRPC_SLICE_LENGTH(details),
                                                     (const char *)GRPC_SLICE_START_PTR(details),
                                                     status_hint(status));
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

/* ---- Watch ---- */

/* The stream's batches, each its own tag on the watch's completion queue: the create request
 * sent, the status (completes when the stream ends), one message received. */
enum { WATCH_SENT = 1, WATCH_STATUS, WATCH_RECEIVED };

struct VmmsEtcdWatch {
        VmmsEtcd *etcd;
        grpc_completion_queue *cq;
        grpc_call *call;
        unsigned pending;      /* batches started and not yet completed, one bit per tag */
        bool received_initial; /* the first receive also takes the initial metadata */
        grpc_metadata hasleader;
        grpc_byte_buffer *send; /* the create request, kept until the call ends */
        grpc_byte_buffer *recv; /* the receive batch's message */
        grpc_metadata_array initial, trailing;
        grpc_status_code status;
        grpc_slice details;
        bool ended; /* the status came, or a receive found the stream closed */
        char *why;  /* why it ended */
};

static int watch_batch(VmmsEtcdWatch *w, const grpc_op *ops, size_t n, intptr_t tag)
{
        if (grpc_call_start_batch(w->call, ops, n, (void *)tag, NULL) != GRPC_CALL_OK)
                return -EIO;
        w->pending |= 1u << tag;
        return 0;
}

static int watch_receive(VmmsEtcdWatch *w)
{
        grpc_op ops[2];
        size_t n = 0;

        memset(ops, 0, sizeof(ops));
        if (!w->received_initial) {
                ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
                ops[n++].data.recv_initial_metadata.recv_initial_metadata = &w->initial;
                w->received_initial = true;
        }
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = &w->recv;
        return watch_batch(w, ops, n, WATCH_RECEIVED);
}

static void watch_end(VmmsEtcdWatch *w, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void watch_end(VmmsEtcdWatch *w, const char *fmt, ...)
{
        va_list ap;

        w->ended = true;
        if (w->why)
                return;
        va_start(ap, fmt);
        w->why = g_strdup_vprintf(fmt, ap);
        va_end(ap);
}

int vmms_etcd_watch_next(VmmsEtcdWatch *w, int64_t timeout_ms, Etcdserverpb__WatchResponse **ret,
                         char **ret_error)
{
        gpr_timespec deadline =
                gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));

        while (!w->ended) {
                grpc_event ev;

                if (!(w->pending & (1u << WATCH_RECEIVED)) && watch_receive(w) < 0) {
                        watch_end(w, "cannot read the watch's stream");
                        break;
                }
                ev = grpc_completion_queue_next(w->cq, deadline, NULL);
                if (ev.type == GRPC_QUEUE_TIMEOUT)
                        return 0;
                if (ev.type != GRPC_OP_COMPLETE) {
                        watch_end(w, "the watch's queue shut down");
                        break;
                }
                w->pending &= ~(1u << (intptr_t)ev.tag);
                if ((intptr_t)ev.tag == WATCH_STATUS) {
                        watch_end(w, "%.*s", (int)GRPC_SLICE_LENGTH(w->details),
                                  (const char *)GRPC_SLICE_START_PTR(w->details));
                } else if ((intptr_t)ev.tag == WATCH_RECEIVED) {
                        Etcdserverpb__WatchResponse *resp = NULL;
                        grpc_byte_buffer_reader reader;
                        grpc_slice all;

                        if (!ev.success || !w->recv) {
                                /* Closed: the status says why; wait for it. */
                                w->received_initial = true;
                                if (!(w->pending & (1u << WATCH_STATUS)))
                                        watch_end(w, "the stream closed");
                                while (!w->ended && (w->pending & (1u << WATCH_STATUS))) {
                                        ev = grpc_completion_queue_next(w->cq, deadline, NULL);
                                        if (ev.type != GRPC_OP_COMPLETE) {
                                                watch_end(w, "the stream closed");
                                                break;
                                        }
                                        w->pending &= ~(1u << (intptr_t)ev.tag);
                                        if ((intptr_t)ev.tag == WATCH_STATUS)
                                                watch_end(w, "%.*s", (int)GRPC_SLICE_LENGTH(w->details),
                                                          (const char *)GRPC_SLICE_START_PTR(w->details));
                                }
                                break;
                        }
                        grpc_byte_buffer_reader_init(&reader, w->recv);
                        all = grpc_byte_buffer_reader_readall(&reader);
                        grpc_byte_buffer_reader_destroy(&reader);
                        grpc_byte_buffer_destroy(w->recv);
                        w->recv = NULL;
                        resp = etcdserverpb__watch_response__unpack(NULL, GRPC_SLICE_LENGTH(all),
                                                                    GRPC_SLICE_START_PTR(all));
                        grpc_slice_unref(all);
                        if (!resp) {
                                watch_end(w, "an answer that does not unpack as a WatchResponse");
                                break;
                        }
                        if (resp->canceled) {
                                watch_end(w, "etcd canceled the watch: %s",
                                          resp->cancel_reason && resp->cancel_reason[0] ? resp->cancel_reason
                                                                                        : "no reason given");
                                etcdserverpb__watch_response__free_unpacked(resp, NULL);
                                break;
                        }
                        *ret = resp;
                        return 1;
                }
        }
        if (ret_error)
                *ret_error = g_strdup_printf("etcd watch at %s: %s", w->etcd->endpoints,
                                             w->why && w->why[0] ? w->why : "the stream ended");
        return -ENOTCONN;
}

int vmms_etcd_watch_new(VmmsEtcd *etcd, const char *key, const char *range_end, int64_t timeout_ms,
                        VmmsEtcdWatch **ret, char **ret_error)
{
        g_autoptr(VmmsEtcdWatch) w = g_new0(VmmsEtcdWatch, 1);
        Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
        Etcdserverpb__WatchCreateRequest create = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
        Etcdserverpb__WatchResponse *first = NULL;
        grpc_op ops[2], status_op;
        int64_t until_us = g_get_monotonic_time() + timeout_ms * 1000;
        int r;

        w->etcd = vmms_etcd_ref(etcd);
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->details = grpc_empty_slice();
        grpc_metadata_array_init(&w->initial);
        grpc_metadata_array_init(&w->trailing);
        w->call = grpc_channel_create_call(etcd->channel, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                           grpc_slice_from_static_string("/etcdserverpb.Watch/Watch"), NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        create.key = bytes_of(key);
        create.range_end = bytes_of(range_end);
        req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
        req.create_request = &create;
        request_ops(ops, &w->hasleader, &req.base, &w->send);
        memset(&status_op, 0, sizeof(status_op));
        status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        status_op.data.recv_status_on_client.trailing_metadata = &w->trailing;
        status_op.data.recv_status_on_client.status = &w->status;
        status_op.data.recv_status_on_client.status_details = &w->details;
        r = watch_batch(w, ops, G_N_ELEMENTS(ops), WATCH_SENT);
        if (r >= 0)
                r = watch_batch(w, &status_op, 1, WATCH_STATUS);
        if (r < 0) {
                if (ret_error)
                        *ret_error = g_strdup_printf("cannot start a watch at %s", etcd->endpoints);
                return r;
        }
        /* etcd's first answer says the watch exists (created). */
        for (;;) {
                int64_t left_ms = (until_us - g_get_monotonic_time()) / 1000;

                r = left_ms > 0 ? vmms_etcd_watch_next(w, left_ms, &first, ret_error) : 0;
                if (r < 0)
                        return r;
                if (r == 0) {
                        if (ret_error)
                                *ret_error = g_strdup_printf(
                                        "etcd watch at %s: no answer within %" G_GINT64_FORMAT " ms",
                                        etcd->endpoints, timeout_ms);
                        return -ETIMEDOUT;
                }
                r = first->created;
                etcdserverpb__watch_response__free_unpacked(first, NULL);
                if (r)
                        break;
        }
        *ret = g_steal_pointer(&w);
        return 0;
}

void vmms_etcd_watch_free(VmmsEtcdWatch *w)
{
        if (!w)
                return;
        if (w->call) {
                if (w->pending)
                        grpc_call_cancel(w->call, NULL);
                while (w->pending) {
                        grpc_event ev =
                                grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

                        if (ev.type != GRPC_OP_COMPLETE)
                                break;
                        w->pending &= ~(1u << (intptr_t)ev.tag);
                }
                grpc_call_unref(w->call);
        }
        if (w->recv)
                grpc_byte_buffer_destroy(w->recv);
        if (w->send)
                grpc_byte_buffer_destroy(w->send);
        grpc_completion_queue_shutdown(w->cq);
        while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
                ;
        grpc_completion_queue_destroy(w->cq);
        grpc_metadata_array_destroy(&w->initial);
        grpc_metadata_array_destroy(&w->trailing);
        grpc_slice_unref(w->details);
        g_free(w->why);
        vmms_etcd_unref(w->etcd);
        g_free(w);
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
