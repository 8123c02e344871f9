/* Helpers for code that walks protobuf-c messages by their descriptors. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* The size of one element of a repeated field of `type` in a protobuf-c message struct
 * (the stride of its array), or 0 for a type protobuf-c does not have. */
size_t proto_field_element_size(ProtobufCType type);

/* Checks the string fields of a serialized message of `type` (and of the messages in
 * it) before protobuf-c unpacks it: protobuf-c hands strings out NUL-terminated, so a
 * NUL inside one would silently cut it short ("nul\0../x" read as "nul"). Returns 0, or
 * -EINVAL with *ret_error naming the field ("name holds a NUL byte", "notes is not
 * UTF-8"). Malformed wire data is left to the unpacker. */
int proto_check_strings(const ProtobufCMessageDescriptor *type, const uint8_t *data, size_t len,
                        char *ret_error, size_t error_size);
