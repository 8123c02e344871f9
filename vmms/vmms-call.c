/* Calls: one in-flight operation and the memory its response is built from. */
#include <string.h>

#include "vmms-call.h"

struct VmmsCall {
        const VmmsOp *op;
        uid_t caller_uid;
        VmmsCallReplyFn reply;
        VmmsCallSendFn send;
        void *userdata;
        VmmsCallCancelFn cancel;
        void *cancel_data;
        GPtrArray *arena;
};

VmmsCall *vmms_call_new(const VmmsOp *op, uid_t caller_uid, VmmsCallReplyFn reply, VmmsCallSendFn send,
                        void *userdata)
{
        VmmsCall *call = g_new0(VmmsCall, 1);

        call->op = op;
        call->caller_uid = caller_uid;
        call->reply = reply;
        call->send = send;
        call->userdata = userdata;
        call->arena = g_ptr_array_new_with_free_func(g_free);
        return call;
}

static void call_free(VmmsCall *call)
{
        g_ptr_array_unref(call->arena);
        g_free(call);
}

const VmmsOp *vmms_call_op(VmmsCall *call)
{
        return call->op;
}

uid_t vmms_call_caller_uid(VmmsCall *call)
{
        return call->caller_uid;
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
