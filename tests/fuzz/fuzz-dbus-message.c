/* D-Bus callers -> vmmsd: a caller's a{sv} turned into the request of an operation
 * (api-dbus-message.c), as the D-Bus service does before the op table runs. The input is
 * the operation's name, a NUL, and the serialized a{sv} (GVariant's format, taken to its
 * normal form as GDBus hands it over); an unknown name picks an operation by its first
 * byte. Any D-Bus user may call (readers too), so nothing here may trust the value.
 *
 * Checks beyond the sanitizers: a value that is accepted makes a request protobuf-c
 * considers whole (protobuf_c_message_check), which packs, unpacks to the same bytes,
 * and converts back to an a{sv}; a refused one names why. */
#include <gio/gio.h>

#include "api-dbus-message.h"
#include "fuzz.h"
#include "vmms-ops.h"

static const VmmsOp *pick_op(FuzzInput *in)
{
        const uint8_t *nul = memchr(in->data, '\0', in->size);
        const VmmsOp *op = NULL;

        if (nul) {
                g_autofree char *name = g_strndup((const char *)in->data, (size_t)(nul - in->data));

                op = vmms_op_lookup(name);
                in->size -= (size_t)(nul - in->data) + 1;
                in->data = nul + 1;
        }
        return op ? op : &vmms_ops[(in->size ? in->data[0] : 0) % vmms_ops_count];
}

static void check_request(const ProtobufCMessage *request)
{
        size_t size = protobuf_c_message_get_packed_size(request);
        g_autofree uint8_t *packed = g_malloc(size + 1);
        g_autofree uint8_t *again = NULL;
        ProtobufCMessage *copy;

        FUZZ_CHECK(protobuf_c_message_check(request));
        FUZZ_CHECK(protobuf_c_message_pack(request, packed) == size);
        copy = protobuf_c_message_unpack(request->descriptor, NULL, size, packed);
        FUZZ_CHECK(copy);
        FUZZ_CHECK(protobuf_c_message_get_packed_size(copy) == size);
        again = g_malloc(size + 1);
        protobuf_c_message_pack(copy, again);
        FUZZ_CHECK(memcmp(packed, again, size) == 0);
        protobuf_c_message_free_unpacked(copy, NULL);
        g_variant_unref(g_variant_ref_sink(api_dbus_message_to_variant(request)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        FuzzInput in = {data, size};
        const VmmsOp *op = pick_op(&in);
        g_autoptr(GBytes) bytes = g_bytes_new(in.data, in.size);
        g_autoptr(GVariant) wire =
                g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes, FALSE));
        g_autoptr(GVariant) dict = g_variant_get_normal_form(wire);
        g_autoptr(GPtrArray) arena = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *why = NULL;
        ProtobufCMessage *request;
        int r;

        fuzz_quiet_logs();
        request = api_dbus_message_new(op->request_type, arena);
        r = api_dbus_message_set_fields(request, dict, "", arena, &why);
        if (r < 0)
                FUZZ_CHECK(why && *why);
        else
                check_request(request);
        return 0;
}
