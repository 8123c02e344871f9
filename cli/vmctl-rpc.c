/* One channel and one completion queue per vmctl run; each call waits for its own batches in turn. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "vmctl-rpc.h"

/* A Get-VM of thousands of VMs must fit; gRPC's default receive limit is 4 MiB. */
#define VMCTL_MAX_MESSAGE_BYTES (64 * 1024 * 1024)

struct VmctlClient {
        char *target;
        grpc_channel *channel;
        grpc_completion_queue *cq;
};

static const char *const status_names[] = {
        "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED",
};

const char *vmctl_rpc_status_name(int status)
{
        if (status < 0 || (size_t)status >= G_N_ELEMENTS(status_names))
                return "UNKNOWN";
        return status_names[status];
}

char *vmctl_rpc_normalize_target(const char *server)
{
        if (server[0] == '/')
                return g_strconcat("unix:", server, NULL);
        return g_strdup(server);
}

bool vmctl_rpc_target_is_unix(const char *target)
{
        return g_str_has_prefix(target, "unix:");
}

char *vmctl_rpc_default_target(bool is_root, const char *env_socket, const char *runtime_dir)
{
        if (env_socket && env_socket[0])
                return vmctl_rpc_normalize_target(env_socket);
        if (is_root || !runtime_dir || !runtime_dir[0])
                return g_strdup("unix:/run/vmms/vmms.sock");
        return g_strconcat("unix:", runtime_dir, "/vmms/vmms.sock", NULL);
}

/* gRPC logs connection failures itself; vmctl says them once, in its own words. */
static void silent_log(gpr_log_func_args *args)
{
        (void)args;
}

void vmctl_tls_clear(VmctlTls *tls)
{
        g_clear_pointer(&tls->ca_pem, g_free);
        g_clear_pointer(&tls->cert_pem, g_free);
        if (tls->key_pem) {
                explicit_bzero(tls->key_pem, strlen(tls->key_pem));
                g_clear_pointer(&tls->key_pem, g_free);
        }
}

char *vmctl_rpc_config_path(const char *env_config, const char *config_home)
{
        g_autofree char *user = NULL;

        if (env_config && env_config[0])
                return g_strdup(env_config);
        if (config_home && config_home[0]) {
                user = g_build_filename(config_home, "vmms", "vmctl.conf", NULL);
                if (g_file_test(user, G_FILE_TEST_EXISTS))
                        return g_steal_pointer(&user);
        }
        if (g_file_test("/etc/vmms/vmctl.conf", G_FILE_TEST_EXISTS))
                return g_strdup("/etc/vmms/vmctl.conf");
        return NULL;
}

/* One PEM file: from the command line (`param`) or the config file's `key`, relative to its directory. */
static int read_pem(const char *cmdline, const char *param, GKeyFile *kf, const char *config_path,
                    const char *key, char **ret_pem, char **ret_error)
{
        g_autofree char *from_config = NULL, *path = NULL;
        g_autoptr(GError) error = NULL;

        if (cmdline) {
                path = g_strdup(cmdline);
        } else if (kf && (from_config = g_key_file_get_string(kf, "vmctl", key, NULL))) {
                g_autofree char *dir = g_path_get_dirname(config_path);

                path = g_path_is_absolute(from_config) ? g_strdup(from_config)
                                                       : g_build_filename(dir, from_config, NULL);
        } else {
                return 0;
        }
        if (!g_file_get_contents(path, ret_pem, NULL, &error)) {
                *ret_error = cmdline ? g_strdup_printf("cannot read -%s: %s", param, error->message)
                                     : g_strdup_printf("%s: %s: %s", config_path, key, error->message);
                return -EINVAL;
        }
        return 0;
}

int vmctl_rpc_resolve(const VmctlConnectOptions *options, bool is_root, const char *env_socket,
                      const char *runtime_dir, const char *config_path, char **ret_target, VmctlTls *ret_tls,
                      char **ret_error)
{
        g_autoptr(GKeyFile) kf = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *target = NULL, *config_server = NULL;
        g_auto(VmctlTls) tls = {0};
        int r;

        if (config_path) {
                kf = g_key_file_new();
                if (!g_key_file_load_from_file(kf, config_path, G_KEY_FILE_NONE, &error)) {
                        *ret_error = g_strdup_printf("cannot read %s: %s", config_path, error->message);
                        return -EINVAL;
                }
                config_server = g_key_file_get_string(kf, "vmctl", "server", NULL);
        }
        if (options->server)
                target = vmctl_rpc_normalize_target(options->server);
        else if ((!env_socket || !env_socket[0]) && config_server)
                target = vmctl_rpc_normalize_target(config_server);
        else
                target = vmctl_rpc_default_target(is_root, env_socket, runtime_dir);
        if (vmctl_rpc_target_is_unix(target)) {
                const char *given = options->ca_file     ? "-CertificateFile"
                                    : options->cert_file ? "-ClientCertificateFile"
                                    : options->key_file  ? "-ClientKeyFile"
                                                         : NULL;

                if (given) {
                        *ret_error = g_strdup_printf("%s is for a host:port -Server, not the unix socket %s",
                                                     given, target);
                        return -EINVAL;
                }
                *ret_target = g_steal_pointer(&target);
                return 0; /* the config file's TLS settings are for its TCP server */
        }
        r = read_pem(options->ca_file, "CertificateFile", kf, config_path, "ca", &tls.ca_pem, ret_error);
        if (r >= 0)
                r = read_pem(options->cert_file, "ClientCertificateFile", kf, config_path, "cert",
                             &tls.cert_pem, ret_error);
        if (r >= 0)
                r = read_pem(options->key_file, "ClientKeyFile", kf, config_path, "key", &tls.key_pem,
                             ret_error);
        if (r < 0)
                return r;
        if (!tls.cert_pem != !tls.key_pem) {
                *ret_error =
                        g_strdup(tls.cert_pem ? "-ClientCertificateFile needs -ClientKeyFile (or key in the "
                                                "config file)"
                                              : "-ClientKeyFile needs -ClientCertificateFile (or cert in the "
                                                "config file)");
                return -EINVAL;
        }
        if (tls.cert_pem && !tls.ca_pem) {
                *ret_error =
                        g_strdup("a client certificate needs -CertificateFile (or ca in the config file): "
                                 "the CA that signed vmmsd's certificate");
                return -EINVAL;
        }
        *ret_target = g_steal_pointer(&target);
        *ret_tls = tls;
        tls = (VmctlTls){0};
        return 0;
}

int vmctl_client_new(const char *target, const VmctlTls *tls, VmctlClient **ret_client)
{
        g_autoptr(VmctlClient) client = NULL;
        grpc_channel_credentials *credentials;
        grpc_arg arg = {
                .type = GRPC_ARG_INTEGER,
                .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                .value.integer = VMCTL_MAX_MESSAGE_BYTES,
        };
        grpc_channel_args args = {.num_args = 1, .args = &arg};
        const char *root_cert_pem = tls ? tls->ca_pem : NULL;
        grpc_ssl_pem_key_cert_pair pair = {0};

        if (!target || !target[0])
                return -EINVAL;
        if (root_cert_pem && vmctl_rpc_target_is_unix(target))
                return -EINVAL;
        if (!g_getenv("GRPC_VERBOSITY"))
                gpr_set_log_function(silent_log);
        grpc_init();
        client = g_new0(VmctlClient, 1);
        client->target = g_strdup(target);
        if (root_cert_pem && tls->cert_pem) {
                pair.cert_chain = tls->cert_pem;
                pair.private_key = tls->key_pem;
        }
        credentials = root_cert_pem ? grpc_ssl_credentials_create(root_cert_pem,
                                                                  pair.cert_chain ? &pair : NULL, NULL, NULL)
                                    : grpc_insecure_credentials_create();
        client->channel = grpc_channel_create(target, credentials, &args);
        grpc_channel_credentials_release(credentials);
        client->cq = grpc_completion_queue_create_for_next(NULL);
        *ret_client = g_steal_pointer(&client);
        return 0;
}

void vmctl_client_free(VmctlClient *client)
{
        if (!client)
                return;
        if (client->cq) {
                grpc_completion_queue_shutdown(client->cq);
                while (grpc_completion_queue_next(client->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                               .type != GRPC_QUEUE_SHUTDOWN)
                        ;
                grpc_completion_queue_destroy(client->cq);
        }
        if (client->channel)
                grpc_channel_destroy(client->channel);
        if (client->target)
                grpc_shutdown();
        g_free(client->target);
        g_free(client);
}

const char *vmctl_client_target(const VmctlClient *client)
{
        return client->target;
}

/* Waits for the batch started with tag; returns whether it succeeded. */
static bool wait_batch(VmctlClient *client, void *tag)
{
        for (;;) {
                grpc_event ev =
                        grpc_completion_queue_next(client->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        return false;
                if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
                        return ev.success != 0;
        }
}

static grpc_byte_buffer *pack_message(const ProtobufCMessage *message)
{
        size_t len = protobuf_c_message_get_packed_size(message);
        grpc_slice slice = grpc_slice_malloc(len);
        grpc_byte_buffer *buffer;

        protobuf_c_message_pack(message, GRPC_SLICE_START_PTR(slice));
        buffer = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        return buffer;
}

static ProtobufCMessage *unpack_message(grpc_byte_buffer *buffer, const ProtobufCMessageDescriptor *type)
{
        grpc_byte_buffer_reader reader;
        ProtobufCMessage *message;
        grpc_slice all;

        if (!grpc_byte_buffer_reader_init(&reader, buffer))
                return NULL;
        all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        message = protobuf_c_message_unpack(type, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
        return message;
}

/* Why a unix socket cannot be reached, in an operator's words; NULL when it looks reachable. */
static char *unix_socket_problem(const char *target)
{
        const char *path = target + strlen("unix:");
        struct stat st;

        if (g_str_has_prefix(path, "//"))
                path += 2;
        if (stat(path, &st) < 0)
                return g_strdup_printf("%s (is vmmsd running?)", g_strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return g_strdup("the path is not a socket");
        if (access(path, R_OK | W_OK) < 0)
                return g_strdup_printf("%s (vmmsd's socket is for root and its group)", g_strerror(errno));
        return NULL;
}

/* Maps a call's final status to vmctl's errors. A failure while the channel is not ready means vmmsd
 * was not reached (or, for a stream that had started, went away); anything else is vmmsd's answer. */
static int call_result(VmctlClient *client, grpc_status_code status, grpc_slice details, bool was_connected,
                       int *ret_status, char **ret_error)
{
        g_autofree char *message =
                g_strndup((const char *)GRPC_SLICE_START_PTR(details), GRPC_SLICE_LENGTH(details));
        g_autofree char *problem = NULL;

        if (status == GRPC_STATUS_OK)
                return 0;
        if ((status == GRPC_STATUS_UNAVAILABLE || status == GRPC_STATUS_DEADLINE_EXCEEDED) &&
            grpc_channel_check_connectivity_state(client->channel, 0) != GRPC_CHANNEL_READY) {
                if (!was_connected && vmctl_rpc_target_is_unix(client->target))
                        problem = unix_socket_problem(client->target);
                if (!problem)
                        problem = g_strdup(message[0] ? message : "no answer");
                if (ret_error)
                        *ret_error = g_strdup_printf("%s vmmsd at %s: %s",
                                                     was_connected ? "lost the connection to"
                                                                   : "cannot connect to",
                                                     client->target, problem);
                return -ENOTCONN;
        }
        if (ret_status)
                *ret_status = status;
        if (ret_error)
                *ret_error = message[0] ? g_steal_pointer(&message) : g_strdup(vmctl_rpc_status_name(status));
        return -EREMOTEIO;
}

static gpr_timespec deadline_after(int64_t timeout_ms)
{
        if (timeout_ms <= 0)
                return gpr_inf_future(GPR_CLOCK_REALTIME);
        return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* One call's state: the request sent, the metadata and status received. */
typedef struct RpcCall {
        grpc_call *call;
        grpc_byte_buffer *send;
        grpc_metadata_array initial, trailing;
        grpc_status_code status;
        grpc_slice details;
} RpcCall;

static void rpc_call_begin(RpcCall *rc, VmctlClient *client, const char *method,
                           const ProtobufCMessage *request, int64_t timeout_ms)
{
        *rc = (RpcCall){
                .send = pack_message(request), .status = GRPC_STATUS_UNKNOWN, .details = grpc_empty_slice()};
        grpc_metadata_array_init(&rc->initial);
        grpc_metadata_array_init(&rc->trailing);
        rc->call = grpc_channel_create_call(client->channel, NULL, GRPC_PROPAGATE_DEFAULTS, client->cq,
                                            grpc_slice_from_static_string(method), NULL,
                                            deadline_after(timeout_ms), NULL);
}

static void rpc_call_end(RpcCall *rc)
{
        grpc_call_unref(rc->call);
        grpc_byte_buffer_destroy(rc->send);
        grpc_slice_unref(rc->details);
        grpc_metadata_array_destroy(&rc->initial);
        grpc_metadata_array_destroy(&rc->trailing);
}

/* The ops that open a call: our metadata, the request and the half-close out, the server's metadata in. */
#define RPC_OPEN_OPS 4
static void rpc_open_ops(RpcCall *rc, grpc_op ops[RPC_OPEN_OPS])
{
        memset(ops, 0, RPC_OPEN_OPS * sizeof(grpc_op));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = rc->send;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &rc->initial;
}

static void rpc_status_op(RpcCall *rc, grpc_op *op)
{
        memset(op, 0, sizeof(*op));
        op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op->data.recv_status_on_client.trailing_metadata = &rc->trailing;
        op->data.recv_status_on_client.status = &rc->status;
        op->data.recv_status_on_client.status_details = &rc->details;
}

static int start_failed(const char *method, char **ret_error)
{
        if (ret_error)
                *ret_error = g_strdup_printf("cannot start a call to %s", method);
        return -EIO;
}

int vmctl_client_call(VmctlClient *client, const char *method, const ProtobufCMessage *request,
                      const ProtobufCMessageDescriptor *reply_type, int64_t timeout_ms,
                      ProtobufCMessage **ret_reply, int *ret_status, char **ret_error)
{
        grpc_byte_buffer *received = NULL;
        ProtobufCMessage *reply = NULL;
        grpc_op ops[RPC_OPEN_OPS + 2];
        RpcCall rc;
        int r;

        rpc_call_begin(&rc, client, method, request, timeout_ms);
        rpc_open_ops(&rc, ops);
        memset(&ops[RPC_OPEN_OPS], 0, sizeof(grpc_op));
        ops[RPC_OPEN_OPS].op = GRPC_OP_RECV_MESSAGE;
        ops[RPC_OPEN_OPS].data.recv_message.recv_message = &received;
        rpc_status_op(&rc, &ops[RPC_OPEN_OPS + 1]);
        if (grpc_call_start_batch(rc.call, ops, G_N_ELEMENTS(ops), ops, NULL) != GRPC_CALL_OK) {
                r = start_failed(method, ret_error);
                goto cleanup;
        }
        wait_batch(client, ops);
        r = call_result(client, rc.status, rc.details, false, ret_status, ret_error);
        if (r < 0)
                goto cleanup;
        reply = received ? unpack_message(received, reply_type) : NULL;
        if (!reply) {
                r = -EBADMSG;
                if (ret_error)
                        *ret_error = g_strdup_printf("vmmsd's answer to %s is not a %s message", method,
                                                     reply_type->name);
                goto cleanup;
        }
        *ret_reply = reply;
cleanup:
        if (received)
                grpc_byte_buffer_destroy(received);
        rpc_call_end(&rc);
        return r;
}

/* Receives messages until the stream ends or on_message stops it; returns the callback's error or 0. */
static int receive_stream(VmctlClient *client, grpc_call *call, const ProtobufCMessageDescriptor *reply_type,
                          VmctlStreamFunc on_message, void *userdata, char **ret_error)
{
        for (;;) {
                grpc_byte_buffer *received = NULL;
                ProtobufCMessage *message;
                grpc_op op = {.op = GRPC_OP_RECV_MESSAGE, .data.recv_message.recv_message = &received};
                int r;

                if (grpc_call_start_batch(call, &op, 1, &op, NULL) != GRPC_CALL_OK)
                        return 0;
                if (!wait_batch(client, &op) || !received)
                        return 0;
                message = unpack_message(received, reply_type);
                grpc_byte_buffer_destroy(received);
                if (!message) {
                        if (ret_error)
                                *ret_error =
                                        g_strdup_printf("vmmsd streamed something that is not a %s message",
                                                        reply_type->name);
                        grpc_call_cancel(call, NULL);
                        return -EBADMSG;
                }
                r = on_message(message, userdata);
                protobuf_c_message_free_unpacked(message, NULL);
                if (r < 0) {
                        grpc_call_cancel(call, NULL);
                        return r;
                }
        }
}

int vmctl_client_stream(VmctlClient *client, const char *method, const ProtobufCMessage *request,
                        const ProtobufCMessageDescriptor *reply_type, VmctlStreamFunc on_message,
                        void *userdata, int *ret_status, char **ret_error)
{
        grpc_op start[RPC_OPEN_OPS], finish;
        bool connected;
        int r, stopped = 0;
        RpcCall rc;

        rpc_call_begin(&rc, client, method, request, 0);
        rpc_open_ops(&rc, start);
        rpc_status_op(&rc, &finish);
        if (grpc_call_start_batch(rc.call, start, G_N_ELEMENTS(start), start, NULL) != GRPC_CALL_OK) {
                r = start_failed(method, ret_error);
                goto cleanup;
        }
        connected = wait_batch(client, start);
        if (connected)
                stopped = receive_stream(client, rc.call, reply_type, on_message, userdata, ret_error);
        if (grpc_call_start_batch(rc.call, &finish, 1, &finish, NULL) == GRPC_CALL_OK)
                wait_batch(client, &finish);
        if (stopped < 0)
                r = stopped;
        else
                r = call_result(client, rc.status, rc.details, connected, ret_status, ret_error);
cleanup:
        rpc_call_end(&rc);
        return r;
}
