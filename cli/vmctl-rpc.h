/* vmctl's gRPC client: unary and server-streaming calls to vmmsd over the gRPC C core, carrying
 * protobuf-c messages. It tells "could not reach vmmsd" apart from "vmmsd said no". */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <protobuf-c/protobuf-c.h>

typedef struct VmctlClient VmctlClient;

/* Where vmctl connects without -Server: $VMMS_SOCKET (a path or a target), else /run/vmms/vmms.sock for
 * root, else RUNTIME_DIR/vmms/vmms.sock. Returns a gRPC target. */
char *vmctl_rpc_default_target(bool is_root, const char *env_socket, const char *runtime_dir);

/* Turns what an operator wrote after -Server into a gRPC target: a bare path becomes unix:PATH;
 * unix:PATH and host:port stay as they are. */
char *vmctl_rpc_normalize_target(const char *server);
bool vmctl_rpc_target_is_unix(const char *target);

/* TLS for a host:port target, as PEM text: the CA to trust (NULL: no TLS) and the client's certificate
 * and key, which vmmsd requires. */
typedef struct VmctlTls {
        char *ca_pem;
        char *cert_pem;
        char *key_pem;
} VmctlTls;

void vmctl_tls_clear(VmctlTls *tls);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmctlTls, vmctl_tls_clear)

/* What the command line said about the server (NULL: not given). */
typedef struct VmctlConnectOptions {
        const char *server;    /* -Server */
        const char *ca_file;   /* -CertificateFile */
        const char *cert_file; /* -ClientCertificateFile */
        const char *key_file;  /* -ClientKeyFile */
} VmctlConnectOptions;

/* The client config file: $VMCTL_CONFIG, else $XDG_CONFIG_HOME/vmms/vmctl.conf, else /etc/vmms/vmctl.conf,
 * the first that exists (NULL: none). */
char *vmctl_rpc_config_path(const char *env_config, const char *config_home);

/* Where and how to connect. The command line wins; then $VMMS_SOCKET for the server; then the config
 * file's [vmctl] server, ca, cert and key (paths relative to the file); then the default socket. Reads the
 * PEM files. -EINVAL with a message naming the parameter or key and the file when something does not fit
 * (a certificate for a unix socket, a certificate without its key) or cannot be read. */
int vmctl_rpc_resolve(const VmctlConnectOptions *options, bool is_root, const char *env_socket,
                      const char *runtime_dir, const char *config_path, char **ret_target, VmctlTls *ret_tls,
                      char **ret_error);

/* A channel to target; with tls->ca_pem (not for unix targets) the channel uses TLS, trusts only that CA and
 * presents the client certificate if there is one. Connecting happens on the first call. */
int vmctl_client_new(const char *target, const VmctlTls *tls, VmctlClient **ret_client);
void vmctl_client_free(VmctlClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmctlClient, vmctl_client_free)

const char *vmctl_client_target(const VmctlClient *client);

/* Calls method ("/vmms.v1.Vmms/GetVm") with request and unpacks the reply as reply_type. Returns 0 and
 * *ret_reply (free with protobuf_c_message_free_unpacked); -ENOTCONN when vmmsd could not be reached
 * (*ret_error says where and why); -EREMOTEIO when vmmsd answered with an error status (*ret_error is its
 * message, *ret_status its gRPC code if ret_status is not NULL); -EBADMSG when the reply does not unpack. */
int vmctl_client_call(VmctlClient *client, const char *method, const ProtobufCMessage *request,
                      const ProtobufCMessageDescriptor *reply_type, int64_t timeout_ms,
                      ProtobufCMessage **ret_reply, int *ret_status, char **ret_error);

/* Called for each streamed message; return 0 to go on, a negative errno to cancel the call. */
typedef int (*VmctlStreamFunc)(const ProtobufCMessage *message, void *userdata);

/* Calls a server-streaming method and hands each message to on_message until the server ends the
 * stream. Returns 0 when it ends with OK, the callback's error when it cancelled, otherwise as
 * vmctl_client_call. */
int vmctl_client_stream(VmctlClient *client, const char *method, const ProtobufCMessage *request,
                        const ProtobufCMessageDescriptor *reply_type, VmctlStreamFunc on_message,
                        void *userdata, int *ret_status, char **ret_error);

/* The gRPC name of a status code ("NOT_FOUND"). */
const char *vmctl_rpc_status_name(int status);

/* For g_autoptr(ProtobufCMessage) on replies. */
static inline void vmctl_message_free(ProtobufCMessage *message)
{
        protobuf_c_message_free_unpacked(message, NULL);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ProtobufCMessage, vmctl_message_free)
