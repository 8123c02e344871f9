/* The guest's VMBus client (vmbus.c) as its channel drivers see it: drivers for the
 * Dynamic Memory VSC (dm.c) and the paging disk (storage.c). Everything here runs on
 * VP 0 only: under the Unicorn engine, VPs on other host threads cannot share state
 * safely, and one VP is enough for the channel traffic. */
#pragma once

#include "guest.h"
#include "hv-vmbus.h"

struct guest_vmbus_channel;

/* A packet still in its host-to-guest ring: a handler copies out what it needs with
 * guest_vmbus_packet_copy() before it returns, after which the space is reused. */
struct guest_vmbus_packet {
        const struct guest_vmbus_channel *channel;
        uint16_t type;
        uint32_t length; /* payload bytes, <= HV_PACKET_MAX */
        uint32_t offset; /* of the payload in the ring's data area */
};

/* One per device class the guest drives. The callbacks run from guest_vmbus_poll()
 * on VP 0 and must not call it back (directly or by waiting for a completion). */
struct guest_vmbus_driver {
        const char *name;
        uint32_t device_class; /* enum hv_vmbus_class */
        uint32_t ring_pages;   /* per direction, header included; raised to the offer's minimum */
        void (*opened)(struct guest_vmbus_channel *channel);
        void (*packet)(struct guest_vmbus_channel *channel, const struct guest_vmbus_packet *packet);
        /* The channel broke (corrupt ring): it sends and receives nothing more. */
        void (*lost)(struct guest_vmbus_channel *channel);
        /* Called on every poll while open; returns the reference time it next wants to
         * be called at, or 0 for no deadline. May be NULL. */
        uint64_t (*tick)(struct guest_vmbus_channel *channel, uint64_t now_ns);
};

/* Pieces of one outgoing packet's payload, gathered into the ring without staging. */
struct guest_vmbus_segment {
        const void *data;
        uint32_t len;
};

extern const struct guest_vmbus_driver guest_dm_driver;
extern const struct guest_vmbus_driver guest_storage_driver;

void guest_vmbus_packet_copy(const struct guest_vmbus_packet *packet, uint32_t offset, void *dst,
                             uint32_t len);

/* Writes one packet into the channel's guest-to-host ring and signals the host.
 * -EAGAIN: no room now (the host has not read enough yet); -ENODEV: channel not open;
 * -EINVAL: the payload is larger than HV_PACKET_MAX. */
int guest_vmbus_send(struct guest_vmbus_channel *channel, uint16_t type,
                     const struct guest_vmbus_segment *segs, unsigned n_segs);
/* As guest_vmbus_send, but waits up to timeout_ns of reference time for room. It does
 * not poll, so drivers' callbacks may use it. -ETIMEDOUT if the host never made room. */
int guest_vmbus_send_wait(struct guest_vmbus_channel *channel, uint16_t type,
                          const struct guest_vmbus_segment *segs, unsigned n_segs, uint64_t timeout_ns);
bool guest_vmbus_in_poll(void);

/* Prints a problem with what the host sent, the first GUEST_VMBUS_MAX_COMPLAINTS times;
 * later ones are only counted, so a confused host cannot flood the console. */
void guest_vmbus_complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
