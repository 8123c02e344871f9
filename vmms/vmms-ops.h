/* The operation table: every operation of the public API (proto/vmms.proto), with its
 * request and response types. The gRPC server and the D-Bus service both dispatch
 * through it, so the two APIs cannot drift. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "vmms-access.h"
#include "vmms-call.h"
#include "vmms-manager.h"
#include "vmms.pb-c.h"

/* Contract: run() is called on the main thread with a request of request_type, valid
 * only during run(). It ends `call` exactly once (now or later), with a message of
 * response_type or an error; a streaming op sends items until the call is cancelled.
 * `role` is the least role a caller needs (vmms-access.h): reader for what only looks,
 * operator for everything that changes something. */
struct VmmsOp {
        const char *name; /* the gRPC method and the D-Bus method name */
        const ProtobufCMessageDescriptor *request_type;
        const ProtobufCMessageDescriptor *response_type;
        bool streaming;
        VmmsRole role;
        void (*run)(VmmsManager *m, const ProtobufCMessage *request, VmmsCall *call);
};

extern const VmmsOp vmms_ops[];
extern const size_t vmms_ops_count;

const VmmsOp *vmms_op_lookup(const char *name);
/* Sets up the manager to answer finished jobs with a Vm message. */
void vmms_ops_attach(VmmsManager *m);
