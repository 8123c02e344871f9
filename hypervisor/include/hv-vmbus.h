/* VMBus as vmms does it: channels between a VSC in the guest and a VSP in the worker
 * (vmwp), over ring buffers in guest memory the guest grants, with signalling through
 * hvd. Shared by guest/ and vmwp/; versioned with HV_VMBUS_VERSION.
 *
 * Signalling. Guest -> worker: the guest posts a small message (HV_CALL_POST_MESSAGE,
 * at most HV_MESSAGE_PAYLOAD_MAX bytes, copied by hvd and forwarded to the worker) or
 * signals a channel (HV_CALL_SIGNAL_EVENT with the channel's connection id; hvd
 * forwards it, coalesced). Worker -> guest: the worker writes a message into a free
 * slot of the guest's message page, or writes a channel's host-to-guest ring, then asks
 * hvd to signal VP 0 (PartitionSignal): an Idle in progress returns at once with
 * HV_IDLE_WOKE_EVENT, and a VP that is running finds the news at its next check.
 *
 * Start-up. The guest allocates its message page and posts HV_VMBUS_MSG_INITIATE with
 * its address. The worker answers HV_VMBUS_MSG_VERSION_RESPONSE, then one
 * HV_VMBUS_MSG_OFFER per device it hosts. For each offer the guest wants, it allocates
 * ring pages and posts HV_VMBUS_MSG_OPEN with their page numbers; the worker checks
 * every page (inside the guest's visible RAM, not the message page, no duplicates),
 * maps them through its view of guest RAM and answers HV_VMBUS_MSG_OPEN_RESULT.
 *
 * The guest is untrusted: the worker checks every message, ring index and packet
 * length against the ring's size before using it, and drops a channel whose ring is
 * corrupt (counted), never crashing. */
#pragma once

#include <stdint.h>

#include "hv-abi.h"

#define HV_VMBUS_VERSION 1

/* ---- The message page (host -> guest) ---- */

#define HV_MESSAGE_SIZE 256u
#define HV_MESSAGE_PAYLOAD_MAX 240u
#define HV_MESSAGE_SLOTS 16u /* 16 x 256 = one page */

/* A slot is free when type is 0. The host writes size and payload, then type (store
 * ordered after them); the guest copies the message out, then stores 0 to type. */
struct hv_message {
        volatile uint32_t type; /* enum hv_vmbus_msg_type, 0 = free */
        uint32_t size;          /* bytes of payload used */
        uint8_t reserved[8];
        uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
};

/* ---- Channel management messages ---- */

enum hv_vmbus_msg_type {
        HV_VMBUS_MSG_NONE = 0,
        HV_VMBUS_MSG_INITIATE = 1,         /* guest -> host */
        HV_VMBUS_MSG_VERSION_RESPONSE = 2, /* host -> guest */
        HV_VMBUS_MSG_OFFER = 3,            /* host -> guest */
        HV_VMBUS_MSG_OPEN = 4,             /* guest -> host */
        HV_VMBUS_MSG_OPEN_RESULT = 5,      /* host -> guest */
};

enum hv_vmbus_class {
        HV_VMBUS_CLASS_DYNAMIC_MEMORY = 1,
        HV_VMBUS_CLASS_STORAGE = 2, /* the synthetic disk the guest pages to */
};

/* Every posted message starts with its type (the message page has it in the slot). */
struct hv_vmbus_initiate {
        uint32_t type; /* HV_VMBUS_MSG_INITIATE */
        uint32_t version;
        uint64_t message_page_gpa; /* page aligned, inside visible RAM */
};

struct hv_vmbus_version_response {
        uint32_t version;
        uint32_t accepted; /* 0: the guest's version is refused */
};

struct hv_vmbus_offer {
        uint32_t channel_id;
        uint32_t device_class;   /* enum hv_vmbus_class */
        uint32_t connection_id;  /* what the guest passes to HV_CALL_SIGNAL_EVENT */
        uint32_t min_ring_pages; /* per direction, including the ring's header page */
};

#define HV_VMBUS_OPEN_MAX_PAGES 26u

/* pfns[0 .. ring_pages) is the guest-to-host ring, pfns[ring_pages .. 2*ring_pages)
 * the host-to-guest ring; page 0 of each ring is its header. */
struct hv_vmbus_open {
        uint32_t type; /* HV_VMBUS_MSG_OPEN */
        uint32_t channel_id;
        uint32_t ring_pages; /* per direction, >= the offer's min_ring_pages */
        uint32_t reserved;
        uint64_t pfns[HV_VMBUS_OPEN_MAX_PAGES];
};

struct hv_vmbus_open_result {
        uint32_t channel_id;
        int32_t status; /* 0 or -(HV_STATUS_*) */
};

/* ---- Rings ---- */

/* One direction. The writer owns write_index, the reader read_index; both count
 * bytes modulo data_size, where data_size = (ring_pages - 1) * HV_PAGE_SIZE. The ring
 * is empty when they are equal and never filled completely (one byte stays free). */
struct hv_ring_header {
        volatile uint32_t write_index;
        volatile uint32_t read_index;
        volatile uint32_t reader_waiting; /* set by a reader about to wait for a signal */
        uint32_t reserved;
};

/* A packet in a ring: this header, then `length` payload bytes, then padding to 8. */
struct hv_packet_header {
        uint16_t type;
        uint16_t reserved;
        uint32_t length;
};

#define HV_PACKET_ALIGN 8u
#define HV_PACKET_MAX (HV_PAGE_SIZE + 64u) /* a page of data plus a header */

/* ---- Dynamic Memory (device class 1), packets in its channel ---- */

enum hv_dm_packet_type {
        HV_DM_STATUS = 1,            /* guest -> host, once a second */
        HV_DM_BALLOON_REQUEST = 2,   /* host -> guest: take n pages back */
        HV_DM_BALLOON_RESPONSE = 3,  /* guest -> host: the pages, in chunks */
        HV_DM_UNBALLOON_REQUEST = 4, /* host -> guest: these pages are yours again */
        HV_DM_UNBALLOON_RESPONSE = 5,
        HV_DM_HOT_ADD_REQUEST = 6, /* host -> guest: a new range of RAM */
        HV_DM_HOT_ADD_RESPONSE = 7,
};

struct hv_dm_status {
        uint64_t time_ns;         /* reference time of the figures */
        uint64_t committed_bytes; /* see guest/page-alloc.c for what counts */
        uint64_t visible_bytes;
        uint64_t free_bytes;
        uint64_t ballooned_bytes; /* pages the balloon holds */
        uint64_t page_in_total;   /* pages read back from the synthetic disk */
        uint64_t page_out_total;  /* pages written to it */
        /* Added after version 1 shipped: a guest may send the struct without it (the
         * worker reads a missing field as 0). */
        uint32_t flags; /* HV_DM_STATUS_* */
        uint32_t reserved;
};

/* Sent at once, not on the second: the guest's pressure stepped up (guest/dm.c). */
#define HV_DM_STATUS_PROMPT 1u
/* The size of struct hv_dm_status before flags. */
#define HV_DM_STATUS_MIN_SIZE 56u
_Static_assert(__builtin_offsetof(struct hv_dm_status, flags) == HV_DM_STATUS_MIN_SIZE,
               "hv_dm_status grew only at its end");

struct hv_dm_balloon_request {
        uint32_t request_id;
        uint32_t n_pages;
};

#define HV_DM_PFNS_PER_PACKET 500u

/* The guest answers a request with one or more responses; the last has more = 0. It
 * may return fewer pages than asked (all it could spare). */
struct hv_dm_balloon_response {
        uint32_t request_id;
        uint32_t more;
        uint32_t n_pfns;
        uint32_t reserved;
        uint64_t pfns[]; /* n_pfns <= HV_DM_PFNS_PER_PACKET */
};

struct hv_dm_unballoon_request {
        uint32_t request_id;
        uint32_t n_pfns;
        uint64_t pfns[]; /* pages previously ballooned, n_pfns <= HV_DM_PFNS_PER_PACKET */
};

struct hv_dm_unballoon_response {
        uint32_t request_id;
        uint32_t n_accepted;
};

struct hv_dm_hot_add_request {
        uint32_t request_id;
        uint32_t reserved;
        uint64_t gpa; /* the old visible end; the guest's visible RAM becomes gpa + bytes */
        uint64_t bytes;
};

struct hv_dm_hot_add_response {
        uint32_t request_id;
        uint32_t reserved;
        uint64_t bytes_accepted;
};

/* ---- Storage (device class 2): the synthetic disk for paging ---- */

enum hv_storage_packet_type {
        HV_STORAGE_WRITE = 1,      /* guest -> host: hv_storage_request + HV_PAGE_SIZE bytes */
        HV_STORAGE_READ = 2,       /* guest -> host: hv_storage_request */
        HV_STORAGE_COMPLETION = 3, /* host -> guest: hv_storage_completion (+ a page for reads) */
};

struct hv_storage_request {
        uint32_t request_id;
        uint32_t reserved;
        uint64_t slot; /* page-sized slot on the disk, < the disk's slots */
};

struct hv_storage_completion {
        uint32_t request_id;
        int32_t status; /* 0 or -(HV_STATUS_*) */
};
