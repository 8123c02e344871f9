/* Protobuf messages as D-Bus values (see api-dbus-message.h). Everything is read from
 * protobuf-c's descriptors: field offsets, quantifiers for repeated and optional
 * fields, and enum value names. Incoming values are checked as strictly as the proto
 * types demand, and every refusal names the field. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "api-dbus-message.h"
#include "proto-util.h"

static const char *type_signature(ProtobufCType type)
{
        switch (type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                return "i";
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                return "x";
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                return "u";
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
                return "t";
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_DOUBLE:
                return "d";
        case PROTOBUF_C_TYPE_BOOL:
                return "b";
        case PROTOBUF_C_TYPE_ENUM:
        case PROTOBUF_C_TYPE_STRING:
                return "s";
        case PROTOBUF_C_TYPE_BYTES:
                return "ay";
        case PROTOBUF_C_TYPE_MESSAGE:
        default:
                return "a{sv}";
        }
}

/* How a refusal names what a field takes. */
static const char *type_description(ProtobufCType type)
{
        switch (type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                return "an int32";
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                return "an int64";
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                return "a uint32";
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
                return "a uint64";
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_DOUBLE:
                return "a number (d)";
        case PROTOBUF_C_TYPE_BOOL:
                return "a boolean (b)";
        case PROTOBUF_C_TYPE_ENUM:
                return "a name (s)";
        case PROTOBUF_C_TYPE_STRING:
                return "a string (s)";
        case PROTOBUF_C_TYPE_BYTES:
                return "bytes (ay)";
        case PROTOBUF_C_TYPE_MESSAGE:
        default:
                return "a dictionary (a{sv})";
        }
}

char *api_dbus_message_field_signature(const ProtobufCFieldDescriptor *field)
{
        return g_strconcat(field->label == PROTOBUF_C_LABEL_REPEATED ? "a" : "", type_signature(field->type),
                           NULL);
}

/* ---- Enums ---- */

/* The length of the prefix all value names share, cut after an underscore
 * ("VM_STATE_" for VmState), as proto style asks enums to prefix their values. */
static size_t enum_prefix_length(const ProtobufCEnumDescriptor *type)
{
        const char *first;
        size_t len;

        if (type->n_values < 2)
                return 0;
        first = type->values[0].name;
        len = strlen(first);
        for (unsigned i = 1; i < type->n_values; i++) {
                const char *name = type->values[i].name;
                size_t k = 0;

                while (k < len && name[k] == first[k])
                        k++;
                len = k;
        }
        while (len > 0 && first[len - 1] != '_')
                len--;
        return len;
}

static char *title_case(const char *upper)
{
        GString *out = g_string_new(NULL);
        bool word_start = true;

        for (const char *c = upper; *c; c++) {
                if (*c == '_') {
                        word_start = true;
                        continue;
                }
                g_string_append_c(out, word_start ? g_ascii_toupper(*c) : g_ascii_tolower(*c));
                word_start = false;
        }
        return g_string_free(out, FALSE);
}

char *api_dbus_message_enum_name(const ProtobufCEnumDescriptor *type, int value)
{
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(type, value);

        if (!v)
                return g_strdup_printf("%d", value);
        return title_case(v->name + enum_prefix_length(type));
}

/* By its D-Bus name ("Running"), its proto name (VM_STATE_RUNNING) or the part after
 * the prefix in any case ("running"). */
static const ProtobufCEnumValue *enum_value_by_name(const ProtobufCEnumDescriptor *type, const char *name)
{
        size_t prefix = enum_prefix_length(type);

        for (unsigned i = 0; i < type->n_values; i++) {
                const ProtobufCEnumValue *v = &type->values[i];
                g_autofree char *short_name = title_case(v->name + prefix);

                if (g_ascii_strcasecmp(name, v->name) == 0 ||
                    g_ascii_strcasecmp(name, v->name + prefix) == 0 ||
                    g_ascii_strcasecmp(name, short_name) == 0)
                        return v;
        }
        return NULL;
}

static char *enum_choices(const ProtobufCEnumDescriptor *type)
{
        g_autoptr(GString) out = g_string_new(NULL);

        for (unsigned i = 0; i < type->n_values; i++) {
                g_autofree char *name = api_dbus_message_enum_name(type, type->values[i].value);

                g_string_append_printf(out, "%s%s", i ? ", " : "", name);
        }
        return g_string_free(g_steal_pointer(&out), FALSE);
}

/* ---- Messages to variants ---- */

static GVariant *string_variant(const char *text)
{
        if (!text)
                return g_variant_new_string("");
        if (!g_utf8_validate(text, -1, NULL)) /* D-Bus strings must be UTF-8 */
                return g_variant_new_take_string(g_utf8_make_valid(text, -1));
        return g_variant_new_string(text);
}

static GVariant *element_to_variant(const ProtobufCFieldDescriptor *field, const void *p)
{
        switch (field->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                return g_variant_new_int32(*(const int32_t *)p);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                return g_variant_new_int64(*(const int64_t *)p);
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                return g_variant_new_uint32(*(const uint32_t *)p);
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
                return g_variant_new_uint64(*(const uint64_t *)p);
        case PROTOBUF_C_TYPE_FLOAT:
                return g_variant_new_double(*(const float *)p);
        case PROTOBUF_C_TYPE_DOUBLE:
                return g_variant_new_double(*(const double *)p);
        case PROTOBUF_C_TYPE_BOOL:
                return g_variant_new_boolean(*(const protobuf_c_boolean *)p);
        case PROTOBUF_C_TYPE_ENUM:
                return g_variant_new_take_string(
                        api_dbus_message_enum_name(field->descriptor, *(const int *)p));
        case PROTOBUF_C_TYPE_STRING:
                return string_variant(*(char *const *)p);
        case PROTOBUF_C_TYPE_BYTES: {
                const ProtobufCBinaryData *b = p;

                return g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, b->data, b->len, 1);
        }
        case PROTOBUF_C_TYPE_MESSAGE:
        default: {
                const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;

                return sub ? api_dbus_message_to_variant(sub)
                           : g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0);
        }
        }
}

GVariant *api_dbus_message_field_to_variant(const ProtobufCMessage *message,
                                            const ProtobufCFieldDescriptor *field)
{
        const uint8_t *base = (const uint8_t *)message;

        if (field->label == PROTOBUF_C_LABEL_REPEATED) {
                size_t n = *(const size_t *)(base + field->quantifier_offset);
                const uint8_t *array = *(const uint8_t *const *)(base + field->offset);
                g_autofree char *signature = api_dbus_message_field_signature(field);
                GVariantBuilder builder;

                g_variant_builder_init(&builder, G_VARIANT_TYPE(signature));
                for (size_t i = 0; i < n; i++)
                        g_variant_builder_add_value(
                                &builder,
                                element_to_variant(field, array + i * proto_field_element_size(field->type)));
                return g_variant_builder_end(&builder);
        }
        return element_to_variant(field, base + field->offset);
}

static bool field_present(const ProtobufCMessage *message, const ProtobufCFieldDescriptor *field)
{
        const uint8_t *base = (const uint8_t *)message;

        if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
                return *(const uint32_t *)(base + field->quantifier_offset) == field->id;
        if (field->label == PROTOBUF_C_LABEL_REPEATED)
                return true;
        if (field->type == PROTOBUF_C_TYPE_MESSAGE)
                return *(const ProtobufCMessage *const *)(base + field->offset) != NULL;
        /* Optional strings have no has_ flag: NULL is absent. */
        if (field->label == PROTOBUF_C_LABEL_OPTIONAL && field->type == PROTOBUF_C_TYPE_STRING)
                return *(char *const *)(base + field->offset) != NULL;
        if (field->label == PROTOBUF_C_LABEL_OPTIONAL)
                return *(const protobuf_c_boolean *)(base + field->quantifier_offset);
        return true;
}

GVariant *api_dbus_message_to_variant(const ProtobufCMessage *message)
{
        const ProtobufCMessageDescriptor *type = message->descriptor;
        GVariantBuilder builder;

        g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT);
        for (unsigned i = 0; i < type->n_fields; i++) {
                const ProtobufCFieldDescriptor *field = &type->fields[i];

                if (field_present(message, field))
                        g_variant_builder_add(&builder, "{sv}", field->name,
                                              api_dbus_message_field_to_variant(message, field));
        }
        return g_variant_builder_end(&builder);
}

/* ---- Variants to messages ---- */

ProtobufCMessage *api_dbus_message_new(const ProtobufCMessageDescriptor *type, GPtrArray *arena)
{
        ProtobufCMessage *message = g_malloc0(type->sizeof_message);

        g_ptr_array_add(arena, message);
        protobuf_c_message_init(type, message);
        return message;
}

static GVariant *unboxed(GVariant *value)
{
        GVariant *v = g_variant_ref(value);

        while (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
                GVariant *inner = g_variant_get_variant(v);

                g_variant_unref(v);
                v = inner;
        }
        return v;
}

/* Any D-Bus integer as sign and magnitude, so every range check is exact. */
static bool integer_of(GVariant *v, bool *ret_negative, uint64_t *ret_magnitude)
{
        int64_t s;

        switch (g_variant_classify(v)) {
        case G_VARIANT_CLASS_BYTE:
                s = g_variant_get_byte(v);
                break;
        case G_VARIANT_CLASS_INT16:
                s = g_variant_get_int16(v);
                break;
        case G_VARIANT_CLASS_UINT16:
                s = g_variant_get_uint16(v);
                break;
        case G_VARIANT_CLASS_INT32:
                s = g_variant_get_int32(v);
                break;
        case G_VARIANT_CLASS_UINT32:
                s = g_variant_get_uint32(v);
                break;
        case G_VARIANT_CLASS_INT64:
                s = g_variant_get_int64(v);
                break;
        case G_VARIANT_CLASS_UINT64:
                *ret_negative = false;
                *ret_magnitude = g_variant_get_uint64(v);
                return true;
        default:
                return false;
        }
        *ret_negative = s < 0;
        *ret_magnitude = s < 0 ? (uint64_t)(-(s + 1)) + 1 : (uint64_t)s;
        return true;
}

static int refuse_type(const ProtobufCFieldDescriptor *field, GVariant *v, const char *path, char **ret_error)
{
        g_autofree char *shown = g_variant_print(v, TRUE);

        if (strlen(shown) > 60)
                strcpy(shown + 57, "...");
        *ret_error =
                g_strdup_printf("field '%s' takes %s, not %s", path, type_description(field->type), shown);
        return -EINVAL;
}

static int integer_from_variant(const ProtobufCFieldDescriptor *field, GVariant *v, void *p, const char *path,
                                char **ret_error)
{
        bool negative, is_signed = false;
        uint64_t magnitude, max;
        int64_t value;

        if (!integer_of(v, &negative, &magnitude))
                return refuse_type(field, v, path, ret_error);
        switch (field->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
                is_signed = true;
                max = INT32_MAX;
                break;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
                is_signed = true;
                max = INT64_MAX;
                break;
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                max = UINT32_MAX;
                break;
        default:
                max = UINT64_MAX;
                break;
        }
        /* A signed type holds one more negative value than positive ones. */
        if ((negative && (!is_signed || magnitude > max + 1)) || (!negative && magnitude > max)) {
                *ret_error =
                        g_strdup_printf("field '%s': %s%" G_GUINT64_FORMAT " is out of range for %s", path,
                                        negative ? "-" : "", magnitude, type_description(field->type));
                return -EINVAL;
        }
        value = negative ? -(int64_t)(magnitude - 1) - 1 : (int64_t)magnitude;
        switch (proto_field_element_size(field->type)) {
        case sizeof(uint32_t):
                if (is_signed)
                        *(int32_t *)p = (int32_t)value;
                else
                        *(uint32_t *)p = (uint32_t)magnitude;
                break;
        default:
                if (is_signed)
                        *(int64_t *)p = value;
                else
                        *(uint64_t *)p = magnitude;
                break;
        }
        return 0;
}

static int element_from_variant(const ProtobufCFieldDescriptor *field, GVariant *value, void *p,
                                const char *path, GPtrArray *arena, char **ret_error)
{
        g_autoptr(GVariant) v = unboxed(value);
        bool negative;
        uint64_t magnitude;

        switch (field->type) {
        case PROTOBUF_C_TYPE_STRING:
                if (!g_variant_is_of_type(v, G_VARIANT_TYPE_STRING) &&
                    !g_variant_is_of_type(v, G_VARIANT_TYPE_OBJECT_PATH))
                        return refuse_type(field, v, path, ret_error);
                *(char **)p = g_strdup(g_variant_get_string(v, NULL));
                g_ptr_array_add(arena, *(char **)p);
                return 0;
        case PROTOBUF_C_TYPE_BYTES: {
                ProtobufCBinaryData *b = p;
                const void *data;
                size_t len;

                if (!g_variant_is_of_type(v, G_VARIANT_TYPE_BYTESTRING))
                        return refuse_type(field, v, path, ret_error);
                data = g_variant_get_fixed_array(v, &len, 1);
                b->data = g_memdup2(data, len);
                b->len = len;
                g_ptr_array_add(arena, b->data);
                return 0;
        }
        case PROTOBUF_C_TYPE_BOOL:
                if (!g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN))
                        return refuse_type(field, v, path, ret_error);
                *(protobuf_c_boolean *)p = g_variant_get_boolean(v);
                return 0;
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_DOUBLE: {
                double d;

                if (g_variant_is_of_type(v, G_VARIANT_TYPE_DOUBLE))
                        d = g_variant_get_double(v);
                else if (integer_of(v, &negative, &magnitude))
                        d = negative ? -(double)magnitude : (double)magnitude;
                else
                        return refuse_type(field, v, path, ret_error);
                if (field->type == PROTOBUF_C_TYPE_FLOAT)
                        *(float *)p = (float)d;
                else
                        *(double *)p = d;
                return 0;
        }
        case PROTOBUF_C_TYPE_ENUM: {
                const ProtobufCEnumDescriptor *type = field->descriptor;
                const ProtobufCEnumValue *ev = NULL;

                if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING))
                        ev = enum_value_by_name(type, g_variant_get_string(v, NULL));
                else if (integer_of(v, &negative, &magnitude) && !negative && magnitude <= INT32_MAX)
                        ev = protobuf_c_enum_descriptor_get_value(type, (int)magnitude);
                else
                        return refuse_type(field, v, path, ret_error);
                if (!ev) {
                        g_autofree char *choices = enum_choices(type);
                        g_autofree char *shown = g_variant_print(v, FALSE);

                        *ret_error = g_strdup_printf("field '%s': %s is not one of %s", path, shown, choices);
                        return -EINVAL;
                }
                *(int *)p = ev->value;
                return 0;
        }
        case PROTOBUF_C_TYPE_MESSAGE: {
                ProtobufCMessage **sub = p;
                g_autofree char *prefix = g_strconcat(path, ".", NULL);

                if (!g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT))
                        return refuse_type(field, v, path, ret_error);
                if (!*sub)
                        *sub = api_dbus_message_new(field->descriptor, arena);
                return api_dbus_message_set_fields(*sub, v, prefix, arena, ret_error);
        }
        default:
                return integer_from_variant(field, v, p, path, ret_error);
        }
}

int api_dbus_message_set_field(ProtobufCMessage *message, const ProtobufCFieldDescriptor *field,
                               GVariant *value, const char *path, GPtrArray *arena, char **ret_error)
{
        g_autoptr(GVariant) held = g_variant_ref_sink(value); /* consumes a floating value */
        uint8_t *base = (uint8_t *)message;
        int r;

        if (field->label == PROTOBUF_C_LABEL_REPEATED) {
                g_autoptr(GVariant) v = unboxed(value);
                size_t n, size = proto_field_element_size(field->type);
                uint8_t *array;

                if (!g_variant_is_of_type(v, G_VARIANT_TYPE_ARRAY)) {
                        g_autofree char *shown = g_variant_print(v, TRUE);

                        *ret_error = g_strdup_printf("field '%s' takes a list of %s, not %s", path,
                                                     type_description(field->type), shown);
                        return -EINVAL;
                }
                n = g_variant_n_children(v);
                array = g_malloc0(MAX(n, 1) * size);
                g_ptr_array_add(arena, array);
                for (size_t i = 0; i < n; i++) {
                        g_autoptr(GVariant) child = g_variant_get_child_value(v, i);
                        g_autofree char *child_path = g_strdup_printf("%s[%zu]", path, i);

                        r = element_from_variant(field, child, array + i * size, child_path, arena,
                                                 ret_error);
                        if (r < 0)
                                return r;
                }
                *(size_t *)(base + field->quantifier_offset) = n;
                *(uint8_t **)(base + field->offset) = array;
                return 0;
        }
        r = element_from_variant(field, value, base + field->offset, path, arena, ret_error);
        if (r < 0)
                return r;
        if (field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
                *(uint32_t *)(base + field->quantifier_offset) = field->id;
        else if (field->label == PROTOBUF_C_LABEL_OPTIONAL && field->type != PROTOBUF_C_TYPE_STRING &&
                 field->type != PROTOBUF_C_TYPE_MESSAGE)
                *(protobuf_c_boolean *)(base + field->quantifier_offset) = 1;
        return 0;
}

static char *field_names(const ProtobufCMessageDescriptor *type)
{
        g_autoptr(GString) out = g_string_new(NULL);

        for (unsigned i = 0; i < type->n_fields; i++)
                g_string_append_printf(out, "%s%s", i ? ", " : "", type->fields[i].name);
        return g_string_free(g_steal_pointer(&out), FALSE);
}

int api_dbus_message_set_fields(ProtobufCMessage *message, GVariant *dict, const char *prefix,
                                GPtrArray *arena, char **ret_error)
{
        const ProtobufCMessageDescriptor *type = message->descriptor;
        GVariantIter iter;
        const char *key;
        GVariant *value;

        if (!g_variant_is_of_type(dict, G_VARIANT_TYPE_VARDICT)) {
                *ret_error =
                        g_strdup_printf("'%s' takes a dictionary (a{sv}) of %s fields", prefix, type->name);
                return -EINVAL;
        }
        g_variant_iter_init(&iter, dict);
        while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
                g_autoptr(GVariant) owned = value;
                const ProtobufCFieldDescriptor *field =
                        protobuf_c_message_descriptor_get_field_by_name(type, key);
                g_autofree char *path = g_strconcat(prefix, key, NULL);
                int r;

                if (!field) {
                        g_autofree char *names = field_names(type);

                        *ret_error =
                                g_strdup_printf("unknown field '%s' (%s has: %s)", path, type->name, names);
                        return -EINVAL;
                }
                r = api_dbus_message_set_field(message, field, owned, path, arena, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}
