/* The gRPC API (vmms.v1.Vmms): a server on the gRPC C core that hands every call to
 * the vmms core's operation table on the main thread. */
#pragma once

#include <glib.h>

#include "vmms-manager.h"

typedef struct ApiGrpcConfig {
        const char *unix_path;   /* mode 0660; NULL: none */
        const char *tcp_address; /* "host:port" with TLS; NULL: none */
        const char *tls_cert_path;
        const char *tls_key_path;
} ApiGrpcConfig;

typedef struct ApiGrpc ApiGrpc;

int api_grpc_new(VmmsManager *m, GMainContext *main_context, const ApiGrpcConfig *config, ApiGrpc **ret,
                 char **ret_error);
void api_grpc_free(ApiGrpc *server);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ApiGrpc, api_grpc_free)
