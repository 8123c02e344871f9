/* Protobuf messages as D-Bus values, driven by protobuf-c's descriptors: a message is
 * an a{sv} keyed by proto field names, so the D-Bus API needs no per-operation code.
 * Fields map to their natural D-Bus types (uint64 → t, string → s, enum → its value's
 * name as a string, message → a{sv}, repeated → an array of those). */
#pragma once

#include <gio/gio.h>
#include <protobuf-c/protobuf-c.h>

/* The D-Bus type of `field` ("t", "a{sv}", "as"…); free with g_free. */
char *api_dbus_message_field_signature(const ProtobufCFieldDescriptor *field);

/* "Running" for VM_STATE_RUNNING: the value's name without the enum's common prefix. */
char *api_dbus_message_enum_name(const ProtobufCEnumDescriptor *type, int value);

/* The whole message as a{sv}, or one of its fields; floating references. Unset
 * sub-messages (and proto2-style optional fields) are left out of the dictionary; a
 * field's value is its zero when unset. */
GVariant *api_dbus_message_to_variant(const ProtobufCMessage *message);
GVariant *api_dbus_message_field_to_variant(const ProtobufCMessage *message,
                                            const ProtobufCFieldDescriptor *field);

/* An empty message of `type`, allocated from `arena` (a GPtrArray freeing with g_free),
 * like everything the setters below put into it. */
ProtobufCMessage *api_dbus_message_new(const ProtobufCMessageDescriptor *type, GPtrArray *arena);

/* Sets `field` from `value` (consumed if floating, as GVariant builders do). Integers may come in any D-Bus
 * integer type holding the value; a{sv} sets a sub-message's fields. -EINVAL with a message naming `path`
 * (the field as the caller knows it, e.g. "memory.buffer") when the value does not fit. */
int api_dbus_message_set_field(ProtobufCMessage *message, const ProtobufCFieldDescriptor *field,
                               GVariant *value, const char *path, GPtrArray *arena, char **ret_error);
/* Sets the fields an a{sv} names; `prefix` ("" or "memory.") leads the paths in errors. */
int api_dbus_message_set_fields(ProtobufCMessage *message, GVariant *dict, const char *prefix,
                                GPtrArray *arena, char **ret_error);
