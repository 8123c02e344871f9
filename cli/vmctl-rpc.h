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

/* A channel to target; with root_cert_pem (not for unix targets) the channel uses TLS and trusts only
 * that certificate. Connecting happens on the first call. */
int vmctl_client_new(const char *target, const char *root_cert_pem, VmctlClient **ret_client);
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
