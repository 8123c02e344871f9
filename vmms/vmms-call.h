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

/* Invoked once with either a response or an error; the response is only valid
 * during the callback. */
typedef void (*VmmsCallReplyFn)(VmmsCall *call, const ProtobufCMessage *response, const VmmsError *error,
                                void *userdata);
/* Invoked for each item of a streaming operation; valid during the callback. */
typedef void (*VmmsCallSendFn)(VmmsCall *call, const ProtobufCMessage *item, void *userdata);
/* The core's cleanup when the client went away before the call ended. */
typedef void (*VmmsCallCancelFn)(VmmsCall *call, void *op_data);

VmmsCall *vmms_call_new(const VmmsOp *op, uid_t caller_uid, VmmsCallReplyFn reply, VmmsCallSendFn send,
                        void *userdata);
const VmmsOp *vmms_call_op(VmmsCall *call);
uid_t vmms_call_caller_uid(VmmsCall *call);

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
