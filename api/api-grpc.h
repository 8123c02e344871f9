/* The gRPC API (vmms.v1.Vmms): a server on the gRPC C core that hands every call to
 * the vmms core's operation table on the main thread. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "vmms-access.h"
#include "vmms-manager.h"

typedef struct ApiGrpcConfig {
        const char *unix_path;   /* NULL: none; group: the access policy's operator group */
        mode_t unix_mode;        /* 0: 0660 */
        const char *tcp_address; /* "host:port" with TLS; NULL: none */
        const char *tls_cert_path;
        const char *tls_key_path;
        const char *tls_ca_path; /* required with tcp_address: client certificates are verified */
} ApiGrpcConfig;

typedef struct ApiGrpc ApiGrpc;

/* Every call goes through vmms_access_dispatch with `access`, which must outlive the
 * server. */
int api_grpc_new(VmmsManager *m, VmmsAccess *access, GMainContext *main_context, const ApiGrpcConfig *config,
                 ApiGrpc **ret, char **ret_error);
void api_grpc_free(ApiGrpc *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ApiGrpc, api_grpc_free)
