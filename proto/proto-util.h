/* Helpers for code that walks protobuf-c messages by their descriptors. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* The size of one element of a repeated field of `type` in a protobuf-c message struct
 * (the stride of its array), or 0 for a type protobuf-c does not have. */
size_t proto_field_element_size(ProtobufCType type);
