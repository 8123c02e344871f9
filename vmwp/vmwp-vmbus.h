/* The host end of VMBus in the worker: the start-up handshake over the guest's message
 * page, one channel per device (VSP), rings mapped through the worker's view of guest
 * RAM, and signalling. hv-vmbus.h is the protocol. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmwp-ring.h"

/* The worker's view of guest RAM: mapped whole (maximum_bytes) once; the guest may use
 * [0, visible_bytes), which hot-add grows. */
typedef struct VmwpGuestRam {
        uint8_t *ram;
        uint64_t maximum_bytes;
        uint64_t visible_bytes;
        /* Live migration (vmwp-migrate.c): the pages the worker itself wrote into guest
         * RAM since the sender last took them, one bit per page of maximum_bytes; NULL
         * when no migration runs. hvd sees only the guest's own stores. Marked after
         * the store, so a sender that takes a bit (atomically) copies the new bytes.
         * Read and written only with the __atomic builtins (clang refuses them on an
         * _Atomic pointer). */
        uint64_t *dirty;
} VmwpGuestRam;

/* Marks [gpa, gpa + len) written by the worker (no-op unless a migration tracks it). */
static inline void vmwp_guest_ram_mark(VmwpGuestRam *ram, uint64_t gpa, uint64_t len)
{
        uint64_t *dirty = __atomic_load_n(&ram->dirty, __ATOMIC_ACQUIRE);
        uint64_t pages = ram->maximum_bytes / 4096;

        if (!dirty || len == 0)
                return;
        for (uint64_t page = gpa / 4096; page <= (gpa + len - 1) / 4096 && page < pages; page++)
                __atomic_fetch_or(&dirty[page / 64], 1ull << (page % 64), __ATOMIC_RELEASE);
}

/* The same, for a pointer into the mapping. */
static inline void vmwp_guest_ram_mark_ptr(VmwpGuestRam *ram, const void *at, uint64_t len)
{
        vmwp_guest_ram_mark(ram, (uint64_t)((const uint8_t *)at - ram->ram), len);
}

typedef struct VmwpVmbus VmwpVmbus;
typedef struct VmwpChannel VmwpChannel;

/* A device's host side. Callbacks run on the worker's main thread, from
 * vmwp_vmbus_process; they may send on any channel. */
typedef struct VmwpVspOps {
        const char *name;
        uint32_t device_class;   /* enum hv_vmbus_class */
        uint32_t min_ring_pages; /* per direction, header included; offered to the guest */
        void (*opened)(VmwpChannel *channel, void *userdata);
        /* A packet from the guest, already copied out of the ring; `length` is what the
         * packet header said and is <= HV_PACKET_MAX, nothing more is checked. */
        void (*packet)(VmwpChannel *channel, const VmwpPacket *packet, void *userdata);
        /* The channel is gone: its ring was corrupt, or the guest started over. */
        void (*closed)(VmwpChannel *channel, void *userdata);
} VmwpVspOps;

/* Raises an event on the guest's VP 0 (hvd's PartitionSignal). */
typedef int (*VmwpSignalFn)(void *userdata);

/* Problems and traffic, for logs and tests. What a guest gets wrong is logged as a
 * message and counted here, never a warning: it is the guest's failure, not the worker's. */
typedef struct VmwpVmbusStats {
        uint64_t messages;     /* guest messages handled */
        uint64_t bad_messages; /* dropped: short, unknown, out of order, bad pages */
        uint64_t signals;      /* guest signals for an open channel */
        uint64_t bad_signals;  /* for no open channel */
        uint64_t packets_in;
        uint64_t packets_out;
        uint64_t corrupt_rings;         /* channels dropped because their ring went bad */
        uint64_t guest_signals;         /* times VP 0 was signalled */
        uint64_t host_messages_dropped; /* the guest never freed a message slot */
} VmwpVmbusStats;

int vmwp_vmbus_new(VmwpGuestRam *ram, VmwpSignalFn signal, void *userdata, VmwpVmbus **ret);
void vmwp_vmbus_free(VmwpVmbus *bus);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpVmbus, vmwp_vmbus_free)

/* Before the guest starts: one channel per device, offered in this order with channel
 * and connection ids 1, 2, ... */
VmwpChannel *vmwp_vmbus_add_device(VmwpVmbus *bus, const VmwpVspOps *ops, void *userdata);

/* From hvd's events. They are only queued here (the caller may be inside a call to hvd)
 * and handled by vmwp_vmbus_process, which an idle source runs. */
void vmwp_vmbus_queue_message(VmwpVmbus *bus, const uint8_t *data, size_t len);
void vmwp_vmbus_queue_signal(VmwpVmbus *bus, uint32_t connection_id);

/* Handles queued guest news (a bounded batch), retries what waited for room, and
 * signals the guest once if anything was written for it. Returns true when more is
 * queued. */
bool vmwp_vmbus_process(VmwpVmbus *bus);

const VmwpVmbusStats *vmwp_vmbus_stats(const VmwpVmbus *bus);
/* Whether the guest page is the message page or a ring page of an open channel: the
 * worker itself writes such pages, so they must not be ballooned. */
bool vmwp_vmbus_page_in_use(const VmwpVmbus *bus, uint64_t pfn);

/* Save-VM: the host side's state (message page, each channel's ring pages and the
 * indexes it owns, and what waits to be sent or handled), appended to `out`. Restore
 * reads it back into a bus built with the same devices over the restored RAM; every
 * value is checked as OPEN checks a guest's (a saved file is untrusted). Neither
 * signals the guest. */
void vmwp_vmbus_save(const VmwpVmbus *bus, GByteArray *out);
int vmwp_vmbus_restore(VmwpVmbus *bus, const uint8_t *data, size_t len, char **ret_error);

bool vmwp_channel_open(const VmwpChannel *channel);
uint32_t vmwp_channel_id(const VmwpChannel *channel);
/* Packets waiting for room in the ring to the guest. */
uint32_t vmwp_channel_backlog(const VmwpChannel *channel);
#define VMWP_CHANNEL_BACKLOG_MAX 4096u

/* Sends a packet to the guest: into the ring now, or after the packets already
 * waiting. 0, -ENOTCONN (not open, or dropped), -ENOBUFS (the backlog is full) or
 * -EMSGSIZE. */
int vmwp_channel_send(VmwpChannel *channel, uint16_t type, const VmwpSegment *segs, unsigned n_segs);
