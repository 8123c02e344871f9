/* gRPC server. One completion-queue thread takes calls off the wire; each call is
 * unpacked there and run on the main thread through the operation table, so the vmms
 * core is single-threaded. Answers are sent from the main thread (grpc_call_start_batch
 * is thread-safe); the queue thread frees a call once its last batch completes.
 *
 * Streams (WatchEvents) keep at most one message in flight, as the C core requires;
 * later ones queue. A stream ends when the client cancels (RECV_CLOSE_ON_SERVER
 * completes) or the server shuts down.
 *
 * Callers: the C core tells a server nothing about a unix peer's credentials, so
 * vmmsd accepts on the unix socket itself, reads SO_PEERCRED and hands the connected
 * fd to gRPC (grpc_server_add_channel_from_fd), whose calls then report the peer
 * "fd:N". While a call lives its transport keeps fd N open, so the last connection
 * accepted as N is the call's. On TCP, TLS requires a client certificate signed by the
 * configured CA; the call's auth context carries its subject. Every call goes to
 * vmms_access_dispatch with the caller so found. */
#include <errno.h>
#include <glib-unix.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api-grpc.h"
#include "proto-util.h"
#include "vmms-access.h"
#include "vmms-ops.h"

typedef enum TagKind {
        TAG_NEW_CALL,
        TAG_UNARY_DONE,
        TAG_STREAM_SENT,
        TAG_STREAM_CLOSED,
        TAG_SHUTDOWN,
        TAG_UNKNOWN_CALL,
        TAG_UNKNOWN_DONE,
} TagKind;

/* Limits on what one client may ask: a request's size (gRPC refuses a larger one with
 * RESOURCE_EXHAUSTED naming both sizes), and calls in flight per caller. */
#define API_GRPC_REQUEST_MAX_BYTES (256 * 1024)
#define API_GRPC_CALLS_PER_CALLER 64

typedef struct ApiMethod ApiMethod;
typedef struct ApiCall ApiCall;

typedef struct Tag {
        TagKind kind;
        void *data;
} Tag;

/* A registered method, waiting for its next call. */
struct ApiMethod {
        ApiGrpc *server;
        const VmmsOp *op;
        void *handle;
        Tag tag;
        grpc_call *call;
        gpr_timespec deadline;
        grpc_metadata_array metadata;
        grpc_byte_buffer *payload;
};

struct ApiCall {
        ApiGrpc *server;
        const VmmsOp *op;
        grpc_call *call;
        ProtobufCMessage *request;
        VmmsCall *vmms_call;
        VmmsCaller caller;
        Tag done_tag, sent_tag, closed_tag;
        grpc_byte_buffer *out;
        grpc_slice details;
        bool has_details;
        int cancelled;
        bool free_on_done; /* the done batch is the call's last */
        /* Streams: guarded by lock. refs: the queue thread's close batch and the main
         * thread's VmmsCall each hold one. */
        GMutex lock;
        GQueue pending; /* grpc_byte_buffer* */
        bool sending;
        bool closed;
        int refs;
};

/* A unix-socket peer as SO_PEERCRED saw it when vmmsd accepted it. */
typedef struct UnixPeer {
        uid_t uid;
        gid_t gid;
} UnixPeer;

struct ApiGrpc {
        VmmsManager *manager;
        VmmsAccess *access;
        GMainContext *main_context;
        grpc_server *server;
        grpc_completion_queue *cq;
        GThread *thread;
        ApiMethod *methods;
        size_t n_methods;
        Tag shutdown_tag;
        char *unix_path;
        int unix_fd;
        GSource *accept_source;
        GMutex peers_lock;
        GHashTable *unix_peers; /* accepted fd → UnixPeer, read by the queue thread */
        GHashTable *in_flight;  /* caller description → calls open, under peers_lock */
        bool started;
};

static grpc_status_code status_from_error(VmmsErrorCode code)
{
        switch (code) {
        case VMMS_OK:
                return GRPC_STATUS_OK;
        case VMMS_ERROR_INVALID_ARGUMENT:
                return GRPC_STATUS_INVALID_ARGUMENT;
        case VMMS_ERROR_NOT_FOUND:
                return GRPC_STATUS_NOT_FOUND;
        case VMMS_ERROR_ALREADY_EXISTS:
                return GRPC_STATUS_ALREADY_EXISTS;
        case VMMS_ERROR_FAILED_PRECONDITION:
                return GRPC_STATUS_FAILED_PRECONDITION;
        case VMMS_ERROR_RESOURCE_EXHAUSTED:
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        case VMMS_ERROR_UNAVAILABLE:
                return GRPC_STATUS_UNAVAILABLE;
        case VMMS_ERROR_PERMISSION_DENIED:
                return GRPC_STATUS_PERMISSION_DENIED;
        default:
                return GRPC_STATUS_INTERNAL;
        }
}

static grpc_byte_buffer *pack(const ProtobufCMessage *msg)
{
        size_t len = protobuf_c_message_get_packed_size(msg);
        grpc_slice slice = grpc_slice_malloc(len);
        grpc_byte_buffer *bb;

        protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
        bb = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        return bb;
}

/* NULL for malformed data; with *error set when a string field is bad (proto-util.h). */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *type, grpc_byte_buffer *bb, char *error,
                                size_t error_size)
{
        grpc_byte_buffer_reader reader;
        grpc_slice slice;
        ProtobufCMessage *msg = NULL;

        if (!bb) {
                /* No payload: the empty message. */
                return protobuf_c_message_unpack(type, NULL, 0, (const uint8_t *)"");
        }
        if (!grpc_byte_buffer_reader_init(&reader, bb))
                return NULL;
        slice = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        if (proto_check_strings(type, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice), error,
                                error_size) == 0)
                msg = protobuf_c_message_unpack(type, NULL, GRPC_SLICE_LENGTH(slice),
                                                GRPC_SLICE_START_PTR(slice));
        grpc_slice_unref(slice);
        return msg;
}

/* Counts a caller's open calls; false when it already has API_GRPC_CALLS_PER_CALLER. */
static bool caller_enter(ApiGrpc *server, const VmmsCaller *caller)
{
        const char *key = caller->description ? caller->description : "?";
        unsigned n;

        g_mutex_lock(&server->peers_lock);
        n = GPOINTER_TO_UINT(g_hash_table_lookup(server->in_flight, key));
        g_hash_table_replace(server->in_flight, g_strdup(key), GUINT_TO_POINTER(n + 1));
        g_mutex_unlock(&server->peers_lock);
        return n < API_GRPC_CALLS_PER_CALLER;
}

static void caller_leave(ApiGrpc *server, const VmmsCaller *caller)
{
        const char *key = caller->description ? caller->description : "?";
        unsigned n;

        g_mutex_lock(&server->peers_lock);
        n = GPOINTER_TO_UINT(g_hash_table_lookup(server->in_flight, key));
        if (n > 1)
                g_hash_table_replace(server->in_flight, g_strdup(key), GUINT_TO_POINTER(n - 1));
        else
                g_hash_table_remove(server->in_flight, key);
        g_mutex_unlock(&server->peers_lock);
}

static void api_call_free(ApiCall *c)
{
        grpc_byte_buffer *bb;

        caller_leave(c->server, &c->caller);
        if (c->request)
                protobuf_c_message_free_unpacked(c->request, NULL);
        if (c->out)
                grpc_byte_buffer_destroy(c->out);
        if (c->has_details)
                grpc_slice_unref(c->details);
        while ((bb = g_queue_pop_head(&c->pending)))
                grpc_byte_buffer_destroy(bb);
        g_mutex_clear(&c->lock);
        vmms_caller_clear(&c->caller);
        if (c->call)
                grpc_call_unref(c->call);
        g_free(c);
}

static void stream_unref(ApiCall *c)
{
        bool last;

        g_mutex_lock(&c->lock);
        last = --c->refs == 0;
        g_mutex_unlock(&c->lock);
        if (last)
                api_call_free(c);
}

/* Ends a call with `status` and `response` (if any). A stream has already sent its
 * initial metadata and waits for the close in its own batch; anything else sends
 * both here and is freed when this batch completes. */
static void finish(ApiCall *c, const ProtobufCMessage *response, grpc_status_code status, const char *message,
                   bool stream_started)
{
        grpc_op ops[4];
        size_t n = 0;
        grpc_call_error err;

        memset(ops, 0, sizeof(ops));
        c->free_on_done = !stream_started;
        if (!stream_started) {
                ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
                n++;
                if (response) {
                        c->out = pack(response);
                        ops[n].op = GRPC_OP_SEND_MESSAGE;
                        ops[n].data.send_message.send_message = c->out;
                        n++;
                }
                ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
                n++;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = status;
        if (message) {
                c->details = grpc_slice_from_copied_string(message);
                c->has_details = true;
                ops[n].data.send_status_from_server.status_details = &c->details;
        }
        n++;
        c->done_tag = (Tag){.kind = TAG_UNARY_DONE, .data = c};
        err = grpc_call_start_batch(c->call, ops, n, &c->done_tag, NULL);
        if (err != GRPC_CALL_OK) {
                g_warning("grpc: cannot answer %s: error %d", c->op->name, err);
                if (c->free_on_done)
                        api_call_free(c);
        }
}

static void on_vmms_reply(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                          void *userdata)
{
        ApiCall *c = userdata;

        (void)call;
        c->vmms_call = NULL;
        if (c->op->streaming) {
                /* A stream refused before it began (e.g. unknown VM). */
                g_mutex_lock(&c->lock);
                if (!c->closed)
                        finish(c, NULL, status_from_error(error->code), error->message, true);
                g_mutex_unlock(&c->lock);
                stream_unref(c);
                return;
        }
        finish(c, error->code == VMMS_OK ? response : NULL, status_from_error(error->code), error->message,
               false);
}

static void stream_send_next_locked(ApiCall *c)
{
        grpc_op op;
        grpc_byte_buffer *bb = g_queue_pop_head(&c->pending);

        if (!bb) {
                c->sending = false;
                return;
        }
        if (c->out)
                grpc_byte_buffer_destroy(c->out);
        c->out = bb;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = bb;
        c->sending = true;
        c->refs++; /* held by the send batch */
        c->sent_tag = (Tag){.kind = TAG_STREAM_SENT, .data = c};
        if (grpc_call_start_batch(c->call, &op, 1, &c->sent_tag, NULL) != GRPC_CALL_OK) {
                c->sending = false;
                c->refs--;
        }
}

static void on_vmms_send(VmmsCall *call, const ProtobufCMessage *item, void *userdata)
{
        ApiCall *c = userdata;

        (void)call;
        g_mutex_lock(&c->lock);
        if (!c->closed) {
                g_queue_push_tail(&c->pending, pack(item));
                if (!c->sending)
                        stream_send_next_locked(c);
        }
        g_mutex_unlock(&c->lock);
}

static gboolean run_on_main(gpointer userdata)
{
        ApiCall *c = userdata;
        ProtobufCMessage *request;
        bool closed;

        if (c->op->streaming) {
                g_mutex_lock(&c->lock);
                closed = c->closed;
                g_mutex_unlock(&c->lock);
                if (closed) { /* the client left before we began */
                        stream_unref(c);
                        return G_SOURCE_REMOVE;
                }
        }
        /* A reply made inside run() may let the queue thread free `c` before run()
         * returns: take the request out first and touch nothing of `c` after. */
        request = g_steal_pointer(&c->request);
        c->vmms_call = vmms_call_new(c->op, &c->caller, on_vmms_reply, on_vmms_send, c);
        vmms_access_dispatch(c->server->access, c->server->manager, c->op, request, c->vmms_call);
        protobuf_c_message_free_unpacked(request, NULL); /* valid only during run() */
        return G_SOURCE_REMOVE;
}

/* On the main thread: the client of a stream went away. */
static gboolean cancel_on_main(gpointer userdata)
{
        ApiCall *c = userdata;

        if (c->vmms_call) {
                vmms_call_cancel(c->vmms_call);
                c->vmms_call = NULL;
                stream_unref(c); /* the VmmsCall's reference */
        }
        stream_unref(c); /* this task's reference */
        return G_SOURCE_REMOVE;
}

static void request_next(ApiMethod *method)
{
        grpc_metadata_array_init(&method->metadata);
        method->call = NULL;
        method->payload = NULL;
        method->tag = (Tag){.kind = TAG_NEW_CALL, .data = method};
        grpc_server_request_registered_call(method->server->server, method->handle, &method->call,
                                            &method->deadline, &method->metadata, &method->payload,
                                            method->server->cq, method->server->cq, &method->tag);
}

/* The first value of an auth-context property, as a string (NULL if absent). */
static char *auth_property(const grpc_auth_context *ctx, const char *name)
{
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);

        return p ? g_strndup(p->value, p->value_length) : NULL;
}

/* Who is calling, from the connection the call came on. */
static void identify_caller(ApiGrpc *server, grpc_call *call, VmmsCaller *ret)
{
        g_autofree char *peer = NULL;
        grpc_auth_context *ctx;
        char *raw = grpc_call_get_peer(call);
        int fd;

        peer = g_strdup(raw);
        gpr_free(raw);
        if (peer && sscanf(peer, "fd:%d", &fd) == 1) {
                UnixPeer *p;

                g_mutex_lock(&server->peers_lock);
                p = g_hash_table_lookup(server->unix_peers, GINT_TO_POINTER(fd));
                if (p)
                        vmms_caller_init_unix(ret, p->uid, p->gid);
                else
                        vmms_caller_init_unknown(ret, peer);
                g_mutex_unlock(&server->peers_lock);
                return;
        }
        ctx = grpc_call_auth_context(call);
        if (ctx) {
                g_autofree char *type = auth_property(ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);

                if (g_strcmp0(type, GRPC_SSL_TRANSPORT_SECURITY_TYPE) == 0) {
                        g_autofree char *subject = NULL, *cn = NULL;

                        if (grpc_auth_context_peer_is_authenticated(ctx)) {
                                subject = auth_property(ctx, GRPC_X509_SUBJECT_PROPERTY_NAME);
                                cn = auth_property(ctx, GRPC_X509_CN_PROPERTY_NAME);
                        }
                        vmms_caller_init_tls(ret, subject, cn);
                        grpc_auth_context_release(ctx);
                        return;
                }
                grpc_auth_context_release(ctx);
        }
        vmms_caller_init_unknown(ret, peer);
}

static void on_new_call(ApiMethod *method, bool success)
{
        ApiGrpc *server = method->server;
        char bad_string[160] = "";
        ApiCall *c;

        grpc_metadata_array_destroy(&method->metadata);
        if (!success) { /* the server is shutting down */
                if (method->payload)
                        grpc_byte_buffer_destroy(method->payload);
                return;
        }
        c = g_new0(ApiCall, 1);
        c->server = server;
        c->op = method->op;
        c->call = method->call;
        identify_caller(server, c->call, &c->caller);
        g_mutex_init(&c->lock);
        g_queue_init(&c->pending);
        if (!caller_enter(server, &c->caller)) {
                g_autofree char *message = g_strdup_printf(
                        "%s has %d calls in flight, the most one caller may have; wait for some to end",
                        c->caller.description ? c->caller.description : "this caller",
                        API_GRPC_CALLS_PER_CALLER);

                if (method->payload)
                        grpc_byte_buffer_destroy(method->payload);
                request_next(method);
                finish(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, message, false);
                return;
        }
        c->request = unpack(c->op->request_type, method->payload, bad_string, sizeof(bad_string));
        if (method->payload)
                grpc_byte_buffer_destroy(method->payload);
        request_next(method);
        if (!c->request) {
                g_autofree char *message = bad_string[0]
                                                   ? g_strdup_printf("%s: %s", c->op->name, bad_string)
                                                   : g_strdup_printf("malformed request: not a %s message",
                                                                     c->op->request_type->name);

                finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, message, false);
                return;
        }
        if (c->op->streaming) {
                grpc_op ops[2];

                memset(ops, 0, sizeof(ops));
                ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
                ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                ops[1].data.recv_close_on_server.cancelled = &c->cancelled;
                c->refs = 2; /* the close batch, and the main thread's VmmsCall */
                c->closed_tag = (Tag){.kind = TAG_STREAM_CLOSED, .data = c};
                grpc_call_start_batch(c->call, ops, 2, &c->closed_tag, NULL);
        }
        g_main_context_invoke(server->main_context, run_on_main, c);
}

/* A call to a method vmmsd does not serve: answered UNIMPLEMENTED at once (without
 * this, gRPC leaves it waiting for its deadline and holding memory). */
typedef struct UnknownCall {
        ApiGrpc *server;
        Tag tag;
        grpc_call *call;
        grpc_call_details details;
        grpc_metadata_array metadata;
        grpc_slice status_details;
        bool has_status_details;
        int cancelled;
} UnknownCall;

static void unknown_call_free(UnknownCall *u)
{
        if (u->call)
                grpc_call_unref(u->call);
        if (u->has_status_details)
                grpc_slice_unref(u->status_details);
        grpc_call_details_destroy(&u->details);
        grpc_metadata_array_destroy(&u->metadata);
        g_free(u);
}

static void request_unknown(ApiGrpc *server)
{
        UnknownCall *u = g_new0(UnknownCall, 1);

        u->server = server;
        grpc_call_details_init(&u->details);
        grpc_metadata_array_init(&u->metadata);
        u->tag = (Tag){.kind = TAG_UNKNOWN_CALL, .data = u};
        if (grpc_server_request_call(server->server, &u->call, &u->details, &u->metadata, server->cq,
                                     server->cq, &u->tag) != GRPC_CALL_OK)
                unknown_call_free(u);
}

static void on_unknown_call(UnknownCall *u, bool success)
{
        g_autofree char *method = NULL;
        g_autofree char *message = NULL;
        grpc_op ops[3];

        if (!success) { /* the server is shutting down */
                unknown_call_free(u);
                return;
        }
        request_unknown(u->server);
        method = grpc_slice_to_c_string(u->details.method);
        message = g_strdup_printf("vmmsd has no method %.100s%s (it serves vmms.v1.Vmms, proto/vmms.proto)",
                                  method, strlen(method) > 100 ? "…" : "");
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[1].data.recv_close_on_server.cancelled = &u->cancelled;
        ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[2].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
        u->status_details = grpc_slice_from_copied_string(message);
        u->has_status_details = true;
        ops[2].data.send_status_from_server.status_details = &u->status_details;
        u->tag = (Tag){.kind = TAG_UNKNOWN_DONE, .data = u};
        if (grpc_call_start_batch(u->call, ops, 3, &u->tag, NULL) != GRPC_CALL_OK)
                unknown_call_free(u);
}

static gpointer cq_thread(gpointer userdata)
{
        ApiGrpc *server = userdata;

        for (;;) {
                grpc_event ev =
                        grpc_completion_queue_next(server->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                Tag *tag;

                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        break;
                if (ev.type != GRPC_OP_COMPLETE)
                        continue;
                tag = ev.tag;
                switch (tag->kind) {
                case TAG_NEW_CALL:
                        on_new_call(tag->data, ev.success);
                        break;
                case TAG_UNARY_DONE: {
                        ApiCall *c = tag->data;

                        if (c->free_on_done)
                                api_call_free(c);
                        break;
                }
                case TAG_STREAM_SENT: {
                        ApiCall *c = tag->data;
                        bool last;

                        g_mutex_lock(&c->lock);
                        c->refs--;
                        if (ev.success && !c->closed)
                                stream_send_next_locked(c);
                        else
                                c->sending = false;
                        last = c->refs == 0;
                        g_mutex_unlock(&c->lock);
                        if (last)
                                api_call_free(c);
                        break;
                }
                case TAG_STREAM_CLOSED: {
                        ApiCall *c = tag->data;

                        g_mutex_lock(&c->lock);
                        c->closed = true;
                        g_mutex_unlock(&c->lock);
                        /* The close batch's reference moves to the main-thread task. */
                        g_main_context_invoke(server->main_context, cancel_on_main, c);
                        break;
                }
                case TAG_UNKNOWN_CALL:
                        on_unknown_call(tag->data, ev.success);
                        break;
                case TAG_UNKNOWN_DONE:
                        unknown_call_free(tag->data);
                        break;
                case TAG_SHUTDOWN:
                        /* Every call is cancelled; nothing new can arrive. */
                        grpc_completion_queue_shutdown(server->cq);
                        break;
                }
        }
        return NULL;
}

static int add_tls_port(ApiGrpc *server, const ApiGrpcConfig *config, char **ret_error)
{
        g_autofree char *cert = NULL, *key = NULL, *ca = NULL;
        g_autoptr(GError) error = NULL;
        grpc_ssl_pem_key_cert_pair pair;
        grpc_server_credentials *creds;
        int port;

        if (!config->tls_cert_path || !config->tls_key_path) {
                *ret_error =
                        g_strdup("TCP listening needs --tls-cert and --tls-key (plain TCP is not offered)");
                return -EINVAL;
        }
        if (!config->tls_ca_path) {
                *ret_error = g_strdup("TCP listening needs --tls-ca: without a CA to verify client "
                                      "certificates anyone who reaches the port could manage VMs");
                return -EINVAL;
        }
        if (!g_file_get_contents(config->tls_cert_path, &cert, NULL, &error) ||
            !g_file_get_contents(config->tls_key_path, &key, NULL, &error) ||
            !g_file_get_contents(config->tls_ca_path, &ca, NULL, &error)) {
                *ret_error = g_strdup_printf("cannot read TLS material: %s", error->message);
                return -ENOENT;
        }
        pair.cert_chain = cert;
        pair.private_key = key;
        /* No certificate, or one the CA did not sign: the handshake fails, no call opens. */
        creds = grpc_ssl_server_credentials_create_ex(
                ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
        port = grpc_server_add_http2_port(server->server, config->tcp_address, creds);
        grpc_server_credentials_release(creds);
        if (port <= 0) {
                *ret_error = g_strdup_printf("cannot listen on %s with TLS", config->tcp_address);
                return -EADDRINUSE;
        }
        return 0;
}

/* On the main context: takes every pending connection, records its credentials and
 * hands it to gRPC. A peer whose credentials cannot be read is dropped. */
static gboolean on_unix_accept(gint fd, GIOCondition condition, gpointer userdata)
{
        ApiGrpc *server = userdata;

        (void)condition;
        for (;;) {
                int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                struct ucred cred;
                socklen_t len = sizeof(cred);
                grpc_server_credentials *creds;
                UnixPeer *peer;

                if (conn < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                g_warning("grpc: cannot accept on %s: %s", server->unix_path,
                                          g_strerror(errno));
                        if (errno == EINTR)
                                continue;
                        return G_SOURCE_CONTINUE;
                }
                if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                        g_warning("grpc: dropping a connection on %s: cannot read its credentials: %s",
                                  server->unix_path, g_strerror(errno));
                        close(conn);
                        continue;
                }
                peer = g_new(UnixPeer, 1);
                peer->uid = cred.uid;
                peer->gid = cred.gid;
                g_mutex_lock(&server->peers_lock);
                g_hash_table_replace(server->unix_peers, GINT_TO_POINTER(conn), peer);
                g_mutex_unlock(&server->peers_lock);
                creds = grpc_insecure_server_credentials_create();
                grpc_server_add_channel_from_fd(server->server, conn, creds);
                grpc_server_credentials_release(creds);
        }
}

/* Binds the socket with `mode`, owned by the operator group so its members can
 * connect; accepting starts with start_unix_accept once gRPC serves. */
static int listen_unix(ApiGrpc *server, const char *path, mode_t mode, char **ret_error)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        gid_t gid;
        int r;

        if (strlen(path) >= sizeof(addr.sun_path)) {
                *ret_error = g_strdup_printf("the socket path %s is too long", path);
                return -ENAMETOOLONG;
        }
        strcpy(addr.sun_path, path);
        server->unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (server->unix_fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot create a socket: %s", g_strerror(-r));
                return r;
        }
        (void)unlink(path);
        if (bind(server->unix_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot listen on unix:%s: %s", path, g_strerror(-r));
                return r;
        }
        server->unix_path = g_strdup(path);
        /* Nobody can connect before listen(), so the mode holds from the first peer. */
        if (chmod(path, mode) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot set the mode of %s: %s", path, g_strerror(-r));
                return r;
        }
        if (vmms_access_operator_gid(server->access, &gid) && chown(path, (uid_t)-1, gid) < 0)
                g_warning("grpc: cannot give %s to group %s (its members cannot connect): %s", path,
                          vmms_access_operator_group(server->access), g_strerror(errno));
        if (listen(server->unix_fd, SOMAXCONN) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot listen on unix:%s: %s", path, g_strerror(-r));
                return r;
        }
        return 0;
}

static grpc_server *create_server(void)
{
        grpc_arg limit = {.type = GRPC_ARG_INTEGER,
                          .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                          .value.integer = API_GRPC_REQUEST_MAX_BYTES};
        grpc_channel_args args = {.num_args = 1, .args = &limit};

        return grpc_server_create(&args, NULL);
}

int api_grpc_new(VmmsManager *m, VmmsAccess *access, GMainContext *main_context, const ApiGrpcConfig *config,
                 ApiGrpc **ret, char **ret_error)
{
        g_autoptr(ApiGrpc) server = g_new0(ApiGrpc, 1);
        int r;

        grpc_init();
        server->manager = m;
        server->access = access;
        server->unix_fd = -1;
        g_mutex_init(&server->peers_lock);
        server->unix_peers = g_hash_table_new_full(NULL, NULL, NULL, g_free);
        server->in_flight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        server->main_context = g_main_context_ref(main_context);
        server->cq = grpc_completion_queue_create_for_next(NULL);
        server->server = create_server();
        grpc_server_register_completion_queue(server->server, server->cq, NULL);
        server->n_methods = vmms_ops_count;
        server->methods = g_new0(ApiMethod, vmms_ops_count);
        for (size_t i = 0; i < vmms_ops_count; i++) {
                g_autofree char *path = g_strdup_printf("/vmms.v1.Vmms/%s", vmms_ops[i].name);

                server->methods[i].server = server;
                server->methods[i].op = &vmms_ops[i];
                server->methods[i].handle = grpc_server_register_method(
                        server->server, path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        }
        if (config->unix_path) {
                r = listen_unix(server, config->unix_path, config->unix_mode ? config->unix_mode : 0660,
                                ret_error);
                if (r < 0)
                        return r;
        }
        if (config->tcp_address) {
                r = add_tls_port(server, config, ret_error);
                if (r < 0)
                        return r;
        }
        grpc_server_start(server->server);
        server->started = true;
        if (server->unix_fd >= 0) {
                server->accept_source = g_unix_fd_source_new(server->unix_fd, G_IO_IN);
                g_source_set_callback(server->accept_source, G_SOURCE_FUNC(on_unix_accept), server, NULL);
                g_source_attach(server->accept_source, server->main_context);
        }
        for (size_t i = 0; i < server->n_methods; i++)
                request_next(&server->methods[i]);
        request_unknown(server);
        server->thread = g_thread_new("grpc-cq", cq_thread, server);
        *ret = g_steal_pointer(&server);
        return 0;
}

void api_grpc_free(ApiGrpc *server)
{
        if (!server)
                return;
        if (server->accept_source) {
                g_source_destroy(server->accept_source);
                g_source_unref(server->accept_source);
        }
        if (server->unix_fd >= 0)
                close(server->unix_fd);
        if (server->server) {
                server->shutdown_tag = (Tag){.kind = TAG_SHUTDOWN};
                grpc_server_shutdown_and_notify(server->server, server->cq, &server->shutdown_tag);
                grpc_server_cancel_all_calls(server->server);
        }
        if (server->thread) {
                g_thread_join(server->thread); /* it ends the queue on the shutdown tag */
        } else if (server->cq) {
                /* Never started serving: take the shutdown notification here. */
                if (server->server)
                        grpc_completion_queue_next(server->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                grpc_completion_queue_shutdown(server->cq);
                while (grpc_completion_queue_next(server->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                               .type != GRPC_QUEUE_SHUTDOWN)
                        ;
        }
        if (server->server)
                grpc_server_destroy(server->server);
        if (server->cq)
                grpc_completion_queue_destroy(server->cq);
        if (server->unix_path)
                unlink(server->unix_path);
        g_free(server->unix_path);
        if (server->unix_peers)
                g_hash_table_unref(server->unix_peers);
        if (server->in_flight)
                g_hash_table_unref(server->in_flight);
        g_mutex_clear(&server->peers_lock);
        g_free(server->methods);
        if (server->main_context)
                g_main_context_unref(server->main_context);
        g_free(server);
        grpc_shutdown();
}
