/* gRPC callers -> vmmsd: a request's bytes as the gRPC adapter takes them (api-grpc.c):
 * the wire check of every string field (proto_check_strings), protobuf-c's unpacking,
 * then the core's validation of the settings the request carries (the definition's
 * validators in vmms-definition.c), which every operation runs before it acts. The
 * input is the operation's name, a NUL and the serialized request (an unknown name
 * picks an operation by its first byte). Any client that reaches the socket may send it.
 *
 * Checks beyond the sanitizers: a request the wire check passes has no string that is
 * not valid UTF-8 (protobuf-c would hand one out as it is); one it refuses names the
 * field; each validator either accepts or says why. */
#include <errno.h>

#include "fuzz.h"
#include "proto-util.h"
#include "vmms-definition.h"
#include "vmms-ops.h"
#include "vmms.pb-c.h"

/* Every string field of `msg` and of the messages in it is valid UTF-8. */
static void check_strings(const ProtobufCMessage *msg, unsigned depth)
{
        const ProtobufCMessageDescriptor *d = msg->descriptor;

        FUZZ_CHECK(depth < 64);
        for (unsigned i = 0; i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                const char *base = (const char *)msg + f->offset;

                if (f->label == PROTOBUF_C_LABEL_REPEATED) {
                        size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
                        void *const *items = *(void *const *const *)base;

                        for (size_t k = 0; k < n; k++) {
                                if (f->type == PROTOBUF_C_TYPE_STRING)
                                        FUZZ_CHECK(g_utf8_validate(items[k], -1, NULL));
                                else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                                        check_strings(items[k], depth + 1);
                        }
                } else if (f->type == PROTOBUF_C_TYPE_STRING) {
                        const char *s = *(const char *const *)base;

                        FUZZ_CHECK(!s || g_utf8_validate(s, -1, NULL));
                } else if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(void *const *)base) {
                        check_strings(*(const ProtobufCMessage *const *)base, depth + 1);
                }
        }
}

/* A validator's verdict: accepted, or refused with a message. */
static void verdict(bool ok, VmmsError *error)
{
        FUZZ_CHECK(ok ? error->code == VMMS_OK : error->code != VMMS_OK && error->message && *error->message);
        vmms_error_clear(error);
}

static void check_processor(const Vmms__V1__ProcessorSettings *in)
{
        VmmsProcessorSettings p = {in->count, in->reserve, in->maximum, in->relative_weight,
                                   in->compatibility_for_migration_enabled};
        VmmsError error = {0};

        verdict(vmms_vm_processor_valid(&p, &error), &error);
}

static void check_memory(const Vmms__V1__MemorySettings *in)
{
        VmmsMemorySettings m = {.dynamic_memory_enabled = in->dynamic_memory_enabled,
                                .startup_bytes = in->startup_bytes,
                                .minimum_bytes = in->minimum_bytes,
                                .maximum_bytes = in->maximum_bytes,
                                .buffer = in->buffer,
                                .priority = in->priority,
                                .paging_bytes = in->paging_bytes};
        VmmsError error = {0};

        verdict(vmms_vm_memory_valid(&m, &error), &error);
}

static void check_texts(const char *name, const char *workload, const char *boot_args, const char *notes)
{
        VmmsError error = {0};

        if (name)
                verdict(vmms_vm_name_valid(name, &error), &error);
        verdict(vmms_vm_workload_valid(workload && *workload ? workload : "idle", boot_args, notes, &error),
                &error);
}

static void validate(const VmmsOp *op, const ProtobufCMessage *request)
{
        if (op->request_type == &vmms__v1__create_vm_request__descriptor) {
                const Vmms__V1__CreateVmRequest *r = (const void *)request;

                check_texts(r->name, r->workload, r->boot_args, r->notes);
                if (r->processor)
                        check_processor(r->processor);
                if (r->memory)
                        check_memory(r->memory);
        } else if (op->request_type == &vmms__v1__update_processor_request__descriptor) {
                const Vmms__V1__UpdateProcessorRequest *r = (const void *)request;

                if (r->processor)
                        check_processor(r->processor);
        } else if (op->request_type == &vmms__v1__update_memory_request__descriptor) {
                const Vmms__V1__UpdateMemoryRequest *r = (const void *)request;

                if (r->memory)
                        check_memory(r->memory);
        } else if (op->request_type == &vmms__v1__update_vm_request__descriptor) {
                const Vmms__V1__UpdateVmRequest *r = (const void *)request;

                check_texts(r->name && *r->name ? r->name : NULL, r->workload, r->boot_args, r->notes);
        }
}

static const VmmsOp *pick_op(const uint8_t **data, size_t *size)
{
        const uint8_t *nul = memchr(*data, '\0', *size);
        const VmmsOp *op = NULL;

        if (nul) {
                g_autofree char *name = g_strndup((const char *)*data, (size_t)(nul - *data));

                op = vmms_op_lookup(name);
                *size -= (size_t)(nul - *data) + 1;
                *data = nul + 1;
        }
        return op ? op : &vmms_ops[(*size ? (*data)[0] : 0) % vmms_ops_count];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const VmmsOp *op = pick_op(&data, &size);
        char why[160] = "";
        ProtobufCMessage *request = NULL;
        int r;

        fuzz_quiet_logs();
        r = proto_check_strings(op->request_type, data, size, why, sizeof(why));
        if (r < 0) {
                FUZZ_CHECK(r == -EINVAL && why[0]);
                return 0;
        }
        request = protobuf_c_message_unpack(op->request_type, NULL, size, data);
        if (!request)
                return 0; /* malformed: the adapter answers INVALID_ARGUMENT */
        check_strings(request, 0);
        validate(op, request);
        protobuf_c_message_free_unpacked(request, NULL);
        return 0;
}
