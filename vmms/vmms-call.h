/* An operation in flight, as every API hands it to the vmms core: the core answers
 * it once (vmms_call_return or vmms_call_fail), possibly later (Start waits for the
 * worker); a streaming operation sends items until the client goes away. Responses
 * are built from memory the call owns (vmms_call_alloc), freed when the call ends.
 * Calls live on the main thread. */
#pragma once

#include <glib.h>
#include <protobuf-c/protobuf-c.h>
#include <sys/types.h>

#include "vmms-error.h"

typedef struct VmmsCall VmmsCall;
typedef struct VmmsOp VmmsOp;

/* Who a call comes from, as its API established it; the core judges it
 * (vmms-access.h). An API never guesses: what it cannot establish stays unset. */
typedef enum VmmsTransport {
        VMMS_TRANSPORT_UNKNOWN,  /* a peer the API could not identify: refused */
        VMMS_TRANSPORT_SELF,     /* vmmsd itself (an API's own bookkeeping, e.g. D-Bus objects) */
        VMMS_TRANSPORT_UNIX,     /* the gRPC unix socket: SO_PEERCRED */
        VMMS_TRANSPORT_TLS,      /* gRPC over TCP: the verified client certificate */
        VMMS_TRANSPORT_DBUS,     /* the bus's word for the sender's uid */
        VMMS_TRANSPORT_LOOPBACK, /* plain HTTP on a loopback address (metrics): any local process */
} VmmsTransport;

typedef struct VmmsCaller {
        VmmsTransport transport;
        uid_t uid;         /* unix, dbus */
        gid_t gid;         /* unix: the peer's; dbus: the uid's primary group */
        char *subject;     /* tls: the certificate's subject (RFC 2253); NULL without one */
        char *common_name; /* tls: its CN, if any */
        char *description; /* for messages: "uid 1000", "certificate CN=ops1" */
} VmmsCaller;

void vmms_caller_init_self(VmmsCaller *caller);
void vmms_caller_init_unix(VmmsCaller *caller, uid_t uid, gid_t gid);
void vmms_caller_init_dbus(VmmsCaller *caller, uid_t uid, gid_t gid);
/* subject NULL: a TLS client that presented no certificate. */
void vmms_caller_init_tls(VmmsCaller *caller, const char *subject, const char *common_name);
/* A local process on a loopback TCP connection without TLS; `peer` is its address. */
void vmms_caller_init_loopback(VmmsCaller *caller, const char *peer);
void vmms_caller_init_unknown(VmmsCaller *caller, const char *peer);
void vmms_caller_copy(VmmsCaller *dest, const VmmsCaller *src);
void vmms_caller_clear(VmmsCaller *caller);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsCaller, vmms_caller_clear)

/* Invoked once with either a response or an error; the response is only valid
 * during the callback. */
typedef void (*VmmsCallReplyFn)(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                                void *userdata);
/* Invoked for each item of a streaming operation; valid during the callback. */
typedef void (*VmmsCallSendFn)(VmmsCall *call, const ProtobufCMessage *item, void *userdata);
/* The core's cleanup when the client went away before the call ended. */
typedef void (*VmmsCallCancelFn)(VmmsCall *call, void *op_data);

/* The call keeps its own copy of `caller`. */
VmmsCall *vmms_call_new(const VmmsOp *op, const VmmsCaller *caller, VmmsCallReplyFn reply,
                        VmmsCallSendFn send, void *userdata);
const VmmsOp *vmms_call_op(VmmsCall *call);
const VmmsCaller *vmms_call_caller(VmmsCall *call);

void *vmms_call_alloc(VmmsCall *call, size_t size);
char *vmms_call_strdup(VmmsCall *call, const char *text);
#define vmms_call_new0(call, type) ((type *)vmms_call_alloc((call), sizeof(type)))

/* Ends the call (it is freed). */
void vmms_call_return(VmmsCall *call, const ProtobufCMessage *response);
void vmms_call_fail(VmmsCall *call, VmmsErrorCode code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
void vmms_call_fail_with(VmmsCall *call, const VmmsError *error);

/* Streaming. */
void vmms_call_send(VmmsCall *call, const ProtobufCMessage *item);
void vmms_call_set_cancel(VmmsCall *call, VmmsCallCancelFn fn, void *op_data);
/* From the API: the client went away. Runs the cancel hook and frees the call. */
void vmms_call_cancel(VmmsCall *call);
