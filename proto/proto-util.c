/* Descriptor-walking helpers shared by the layers that convert protobuf-c messages. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto-util.h"

size_t proto_field_element_size(ProtobufCType type)
{
        switch (type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
                return sizeof(int32_t);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
                return sizeof(int64_t);
        case PROTOBUF_C_TYPE_FLOAT:
                return sizeof(float);
        case PROTOBUF_C_TYPE_DOUBLE:
                return sizeof(double);
        case PROTOBUF_C_TYPE_BOOL:
                return sizeof(protobuf_c_boolean);
        case PROTOBUF_C_TYPE_ENUM:
                return sizeof(int);
        case PROTOBUF_C_TYPE_STRING:
                return sizeof(char *);
        case PROTOBUF_C_TYPE_BYTES:
                return sizeof(ProtobufCBinaryData);
        case PROTOBUF_C_TYPE_MESSAGE:
                return sizeof(ProtobufCMessage *);
        }
        return 0;
}

/* A varint at *p (advancing it); false past the end or longer than 10 bytes. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
        uint64_t value = 0;

        for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
                uint8_t byte = *(*p)++;

                value |= (uint64_t)(byte & 0x7f) << shift;
                if (!(byte & 0x80)) {
                        *ret = value;
                        return true;
                }
        }
        return false;
}

/* UTF-8 per RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t len)
{
        size_t i = 0;

        while (i < len) {
                uint8_t c = s[i];
                size_t n = c < 0x80             ? 1
                           : (c & 0xe0) == 0xc0 ? 2
                           : (c & 0xf0) == 0xe0 ? 3
                           : (c & 0xf8) == 0xf0 ? 4
                                                : 0;
                uint32_t cp;

                if (n == 0 || i + n > len)
                        return false;
                cp = n == 1 ? c : c & (0x7f >> n);
                for (size_t k = 1; k < n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (s[i + k] & 0x3f);
                }
                if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n;
        }
        return true;
}

static int check_strings(const ProtobufCMessageDescriptor *type, const uint8_t *p, const uint8_t *end,
                         unsigned depth, char *ret_error, size_t error_size)
{
        if (depth > 32)
                return 0; /* the unpacker refuses what nests deeper than it allows */
        while (p < end) {
                uint64_t key, len = 0;
                const ProtobufCFieldDescriptor *field;

                if (!read_varint(&p, end, &key))
                        return 0;
                switch (key & 7) {
                case 0: /* varint */
                        if (!read_varint(&p, end, &len))
                                return 0;
                        continue;
                case 1: /* 64-bit */
                        p += (size_t)(end - p) < 8 ? (size_t)(end - p) : 8;
                        continue;
                case 5: /* 32-bit */
                        p += (size_t)(end - p) < 4 ? (size_t)(end - p) : 4;
                        continue;
                case 2: /* length-delimited */
                        if (!read_varint(&p, end, &len) || len > (uint64_t)(end - p))
                                return 0;
                        break;
                default:
                        return 0;
                }
                field = key >> 3 <= UINT32_MAX
                                ? protobuf_c_message_descriptor_get_field(type, (unsigned)(key >> 3))
                                : NULL;
                if (field && field->type == PROTOBUF_C_TYPE_STRING) {
                        if (memchr(p, '\0', (size_t)len)) {
                                snprintf(ret_error, error_size, "%s holds a NUL byte", field->name);
                                return -EINVAL;
                        }
                        if (!utf8_valid(p, (size_t)len)) {
                                snprintf(ret_error, error_size, "%s is not valid UTF-8", field->name);
                                return -EINVAL;
                        }
                } else if (field && field->type == PROTOBUF_C_TYPE_MESSAGE) {
                        int r = check_strings(field->descriptor, p, p + len, depth + 1, ret_error,
                                              error_size);

                        if (r < 0)
                                return r;
                }
                p += len;
        }
        return 0;
}

int proto_check_strings(const ProtobufCMessageDescriptor *type, const uint8_t *data, size_t len,
                        char *ret_error, size_t error_size)
{
        return check_strings(type, data, data + len, 0, ret_error, error_size);
}
