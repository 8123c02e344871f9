/* One direction of a VMBus channel's ring (hv-vmbus.h), over guest pages the worker
 * maps. Pure: no I/O and no GLib main loop, so tests drive it over ordinary memory. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "hv-vmbus.h"

#define VMWP_RING_MAX_PAGES (HV_VMBUS_OPEN_MAX_PAGES / 2)

typedef struct VmwpRing {
        struct hv_ring_header *header;
        uint8_t *data[VMWP_RING_MAX_PAGES - 1]; /* the data pages, in ring order */
        uint32_t data_size;
        /* The index this side owns (read index of an incoming ring, write index of an
         * outgoing one). Kept here and only published: the guest may scribble on the
         * header, but never on what the worker believes. */
        uint32_t own_index;
} VmwpRing;

/* A packet read out of a ring: copied, so the guest cannot change it while it is used. */
typedef struct VmwpPacket {
        uint16_t type;
        uint32_t length;
        uint8_t data[HV_PACKET_MAX];
} VmwpPacket;

/* Pieces of one outgoing payload, gathered into the ring. */
typedef struct VmwpSegment {
        const void *data;
        uint32_t len;
} VmwpSegment;

/* pages[0] is the header page, pages[1 .. ring_pages) the data pages. The index this
 * side owns starts where the header has it (the guest zeroes fresh rings). -EINVAL for
 * a page count outside 2-VMWP_RING_MAX_PAGES, -EBADMSG when that index is unusable. */
int vmwp_ring_init(VmwpRing *ring, uint8_t *const *pages, uint32_t ring_pages, bool incoming);

/* The bytes a payload of `length` takes in a ring: header, payload, padding to 8. */
uint32_t vmwp_ring_packet_span(uint32_t length);

/* Takes the oldest packet out of an incoming ring. 0, -EAGAIN when it is empty, or
 * -EBADMSG when the guest's write index or the packet's length is impossible (the
 * ring is corrupt and cannot be resynchronized). */
int vmwp_ring_read(VmwpRing *ring, VmwpPacket *ret);

/* Appends a packet to an outgoing ring. 0, -EAGAIN when it does not fit now, -EMSGSIZE
 * when it never could (> HV_PACKET_MAX or the ring is too small), or -EBADMSG when the
 * guest's read index is impossible. */
int vmwp_ring_write(VmwpRing *ring, uint16_t type, const VmwpSegment *segs, unsigned n_segs);

/* Whether the guest's read index of an outgoing ring says it has read everything. */
bool vmwp_ring_drained(const VmwpRing *ring);
