/* Calls: one in-flight operation and the memory its response is built from. */
#include <string.h>

#include "vmms-call.h"

struct VmmsCall {
        const VmmsOp *op;
        VmmsCaller caller;
        VmmsCallReplyFn reply;
        VmmsCallSendFn send;
        void *userdata;
        VmmsCallCancelFn cancel;
        void *cancel_data;
        GPtrArray *arena;
};

void vmms_caller_init_self(VmmsCaller *caller)
{
        *caller = (VmmsCaller){.transport = VMMS_TRANSPORT_SELF, .description = g_strdup("vmmsd itself")};
}

void vmms_caller_init_unix(VmmsCaller *caller, uid_t uid, gid_t gid)
{
        *caller = (VmmsCaller){
                .transport = VMMS_TRANSPORT_UNIX,
                .uid = uid,
                .gid = gid,
                .description = g_strdup_printf("uid %u", (unsigned)uid),
        };
}

void vmms_caller_init_dbus(VmmsCaller *caller, uid_t uid, gid_t gid)
{
        *caller = (VmmsCaller){
                .transport = VMMS_TRANSPORT_DBUS,
                .uid = uid,
                .gid = gid,
                .description = g_strdup_printf("uid %u", (unsigned)uid),
        };
}

void vmms_caller_init_tls(VmmsCaller *caller, const char *subject, const char *common_name)
{
        *caller = (VmmsCaller){
                .transport = VMMS_TRANSPORT_TLS,
                .subject = g_strdup(subject),
                .common_name = g_strdup(common_name),
                .description = subject ? g_strdup_printf("certificate %s", subject)
                                       : g_strdup("a TLS client without a certificate"),
        };
}

void vmms_caller_init_loopback(VmmsCaller *caller, const char *peer)
{
        *caller = (VmmsCaller){
                .transport = VMMS_TRANSPORT_LOOPBACK,
                .description = g_strdup_printf("local HTTP client %s", peer ? peer : "(unknown)"),
        };
}

void vmms_caller_init_unknown(VmmsCaller *caller, const char *peer)
{
        *caller = (VmmsCaller){
                .transport = VMMS_TRANSPORT_UNKNOWN,
                .description = g_strdup_printf("unidentified peer %s", peer ? peer : "(none)"),
        };
}

void vmms_caller_copy(VmmsCaller *dest, const VmmsCaller *src)
{
        *dest = *src;
        dest->subject = g_strdup(src->subject);
        dest->common_name = g_strdup(src->common_name);
        dest->description = g_strdup(src->description);
}

void vmms_caller_clear(VmmsCaller *caller)
{
        g_clear_pointer(&caller->subject, g_free);
        g_clear_pointer(&caller->common_name, g_free);
        g_clear_pointer(&caller->description, g_free);
}

VmmsCall *vmms_call_new(const VmmsOp *op, const VmmsCaller *caller, VmmsCallReplyFn reply,
                        VmmsCallSendFn send, void *userdata)
{
        VmmsCall *call = g_new0(VmmsCall, 1);

        call->op = op;
        vmms_caller_copy(&call->caller, caller);
        call->reply = reply;
        call->send = send;
        call->userdata = userdata;
        call->arena = g_ptr_array_new_with_free_func(g_free);
        return call;
}

static void call_free(VmmsCall *call)
{
        g_ptr_array_unref(call->arena);
        vmms_caller_clear(&call->caller);
        g_free(call);
}

const VmmsOp *vmms_call_op(VmmsCall *call)
{
        return call->op;
}

const VmmsCaller *vmms_call_caller(VmmsCall *call)
{
        return &call->caller;
}

void *vmms_call_alloc(VmmsCall *call, size_t size)
{
        void *p = g_malloc0(size ? size : 1);

        g_ptr_array_add(call->arena, p);
        return p;
}

char *vmms_call_strdup(VmmsCall *call, const char *text)
{
        char *copy = g_strdup(text ? text : "");

        g_ptr_array_add(call->arena, copy);
        return copy;
}

void vmms_call_return(VmmsCall *call, const ProtobufCMessage *response)
{
        VmmsError ok = {0};

        call->reply(call, response, &ok, call->userdata);
        call_free(call);
}

void vmms_call_fail_with(VmmsCall *call, const VmmsError *error)
{
        call->reply(call, NULL, error, call->userdata);
        call_free(call);
}

void vmms_call_fail(VmmsCall *call, VmmsErrorCode code, const char *fmt, ...)
{
        VmmsError error = {.code = code};
        va_list ap;

        va_start(ap, fmt);
        error.message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        vmms_call_fail_with(call, &error);
        g_free(error.message);
}

void vmms_call_send(VmmsCall *call, const ProtobufCMessage *item)
{
        if (call->send)
                call->send(call, item, call->userdata);
}

void vmms_call_set_cancel(VmmsCall *call, VmmsCallCancelFn fn, void *op_data)
{
        call->cancel = fn;
        call->cancel_data = op_data;
}

void vmms_call_cancel(VmmsCall *call)
{
        if (call->cancel)
                call->cancel(call, call->cancel_data);
        call_free(call);
}
