/* Framing of the root interface: one protobuf message per SOCK_SEQPACKET packet,
 * with at most one fd passed as SCM_RIGHTS. Used by hvd and by its clients. */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#define HV_WIRE_MESSAGE_MAX (1u << 20)
/* The root interface's version, part of a processor's compatibility vector: raised when
 * hv.proto changes what a message means (adding a field does not). */
#define HV_WIRE_PROTOCOL_VERSION 1

int hv_wire_send(int sock, const ProtobufCMessage *msg, int pass_fd);
int hv_wire_recv(int sock, uint8_t *buf, size_t size, size_t *ret_len, int *ret_fd);
char *hv_wire_default_socket_path(void);
