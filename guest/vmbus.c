/* The guest's VMBus client: the message page and start-up handshake, channels over
 * rings in guest pages, and the poll that VP 0 runs to receive the host's news. */
#include "hypercall.h"
#include "vmbus.h"

/*
 * Design note.
 *
 * Start-up (hv-vmbus.h): guest_vmbus_start() allocates the message page and posts
 * INITIATE; the host answers VERSION_RESPONSE and one OFFER per device; for each offer
 * with a driver here the guest allocates ring pages and posts OPEN; OPEN_RESULT makes
 * the channel usable. The handshake is a state machine run by guest_vmbus_poll(), so
 * a slow host is caught up with later: start only waits GUEST_VMBUS_BOOT_WAIT_NS for
 * the channels, so the workload's first lines come after them in the usual case. A
 * hypervisor without PostMessage fails the hypercall at once; a worker that never
 * answers is given up on (one line) after GUEST_VMBUS_ANSWER_TIMEOUT_NS, and the guest
 * carries on without Dynamic Memory or paging.
 *
 * Rings. Each direction is a header page and data pages that need not be contiguous:
 * the data area is addressed by offset through the page list, and a packet may wrap
 * from its end to its start. The guest keeps its own copy of the index it owns (the
 * write index of the guest-to-host ring, the read index of the other) and only
 * publishes it; the host's index is read from the header and checked (below the data
 * size, 8-byte aligned) before use. Single producer, single consumer, so ordered
 * plain loads and stores suffice: payload before index on write, index before payload
 * on read (x86 keeps stores ordered and loads ordered; the compiler is held by
 * barriers). The guest sets reader_waiting in its incoming rings once and for all: it
 * always wants a signal, because it waits in Idle rather than spinning.
 *
 * Trust. Everything the host writes is checked: a malformed message or packet is
 * printed and dropped; a ring whose host index is impossible cannot be resynchronized,
 * so its channel is marked lost and no longer used (its pages stay allocated, since the
 * host may still write them). Nothing the host sends can make the guest assert.
 *
 * Budget. One poll reads at most GUEST_VMBUS_POLL_BUDGET packets per channel, so a
 * flooding host cannot starve the workload that polls.
 */

#define GUEST_VMBUS_MAX_CHANNELS 4
#define GUEST_VMBUS_BOOT_WAIT_NS (1 * GUEST_NS_PER_SEC)
#define GUEST_VMBUS_OFFER_SETTLE_NS (200 * GUEST_NS_PER_MS)
#define GUEST_VMBUS_ANSWER_TIMEOUT_NS (10 * GUEST_NS_PER_SEC)
#define GUEST_VMBUS_BOOT_IDLE_NS (5 * GUEST_NS_PER_MS)
#define GUEST_VMBUS_SEND_IDLE_NS (1 * GUEST_NS_PER_MS)
#define GUEST_VMBUS_POST_RETRY_NS (1 * GUEST_NS_PER_SEC)
#define GUEST_VMBUS_POLL_BUDGET 64
#define GUEST_VMBUS_MAX_COMPLAINTS 32
#define GUEST_VMBUS_RING_MAX_PAGES (HV_VMBUS_OPEN_MAX_PAGES / 2)

enum guest_vmbus_state {
        GUEST_VMBUS_OFF = 0,   /* not started, or no VMBus in this hypervisor */
        GUEST_VMBUS_INITIATED, /* INITIATE posted, no answer yet */
        GUEST_VMBUS_CONNECTED, /* the host accepted the version */
        GUEST_VMBUS_REFUSED,   /* the host refused the version */
};

enum guest_vmbus_channel_state {
        GUEST_VMBUS_CHANNEL_OPENING = 1, /* OPEN posted */
        GUEST_VMBUS_CHANNEL_OPEN,
        GUEST_VMBUS_CHANNEL_FAILED, /* the host refused OPEN, or posting it failed */
        GUEST_VMBUS_CHANNEL_LOST,   /* its ring went bad */
};

struct guest_vmbus_ring {
        struct hv_ring_header *header;
        uint64_t data_gpas[GUEST_VMBUS_RING_MAX_PAGES - 1];
        uint32_t data_size;
        uint32_t own_index; /* write index (outgoing) or read index (incoming) */
};

struct guest_vmbus_channel {
        const struct guest_vmbus_driver *driver;
        enum guest_vmbus_channel_state state;
        uint32_t channel_id;
        uint32_t connection_id;
        uint32_t ring_pages;
        struct guest_vmbus_ring out; /* guest to host */
        struct guest_vmbus_ring in;  /* host to guest */
        uint64_t next_tick_ns;
};

struct guest_vmbus {
        enum guest_vmbus_state state;
        struct hv_message *message_page;
        uint64_t initiate_ns;
        uint64_t last_offer_ns;
        bool gave_up;
        bool in_poll;
        uint64_t complaints;
        struct guest_vmbus_channel channels[GUEST_VMBUS_MAX_CHANNELS];
        unsigned n_channels;
};

/* One bus per guest, driven by VP 0. */
static struct guest_vmbus guest_vmbus;

static const struct guest_vmbus_driver *const guest_vmbus_drivers[] = {
        &guest_dm_driver,
        &guest_storage_driver,
};

static inline void guest_compiler_barrier(void)
{
        __asm__ volatile("" ::: "memory");
}

void guest_vmbus_complain(const char *fmt, ...)
{
        va_list ap;
        uint64_t n = guest_vmbus.complaints++;

        if (n > GUEST_VMBUS_MAX_COMPLAINTS)
                return;
        if (n == GUEST_VMBUS_MAX_COMPLAINTS) {
                guest_printf("vmbus: more problems with what the host sent; not shown\n");
                return;
        }
        va_start(ap, fmt);
        guest_vprintf(fmt, ap);
        va_end(ap);
}

bool guest_vmbus_in_poll(void)
{
        return guest_vmbus.in_poll;
}

/* ---- Rings ---- */

static void *guest_ring_at(const struct guest_vmbus_ring *ring, uint32_t offset, uint32_t *ret_contig)
{
        uint32_t in_page = offset % (uint32_t)GUEST_PAGE_SIZE;

        *ret_contig = (uint32_t)GUEST_PAGE_SIZE - in_page;
        return (uint8_t *)(uintptr_t)ring->data_gpas[offset / GUEST_PAGE_SIZE] + in_page;
}

/* Copies len bytes out of the data area from offset, wrapping at its end. */
static void guest_ring_read(const struct guest_vmbus_ring *ring, uint32_t offset, void *dst, uint32_t len)
{
        uint8_t *d = dst;

        while (len > 0) {
                uint32_t contig;
                const void *src = guest_ring_at(ring, offset, &contig);
                uint32_t n = len < contig ? len : contig;

                memcpy(d, src, n);
                d += n;
                len -= n;
                offset = (offset + n) % ring->data_size;
        }
}

/* Copies len bytes into the data area at offset (zeros when src is NULL), wrapping at
 * its end; returns the offset after them. */
static uint32_t guest_ring_write(struct guest_vmbus_ring *ring, uint32_t offset, const void *src,
                                 uint32_t len)
{
        const uint8_t *s = src;

        while (len > 0) {
                uint32_t contig;
                void *dst = guest_ring_at(ring, offset, &contig);
                uint32_t n = len < contig ? len : contig;

                if (s) {
                        memcpy(dst, s, n);
                        s += n;
                } else {
                        memset(dst, 0, n);
                }
                len -= n;
                offset = (offset + n) % ring->data_size;
        }
        return offset;
}

static uint32_t guest_packet_span(uint32_t payload_len)
{
        return (uint32_t)sizeof(struct hv_packet_header) +
               ((payload_len + HV_PACKET_ALIGN - 1) & ~(HV_PACKET_ALIGN - 1));
}

/* A host index the guest can use: inside the data area and packet aligned. */
static bool guest_ring_index_valid(const struct guest_vmbus_ring *ring, uint32_t index)
{
        return index < ring->data_size && index % HV_PACKET_ALIGN == 0;
}

static void guest_vmbus_channel_lose(struct guest_vmbus_channel *c, const char *why, uint32_t value)
{
        if (c->state != GUEST_VMBUS_CHANNEL_OPEN)
                return;
        c->state = GUEST_VMBUS_CHANNEL_LOST;
        guest_printf("vmbus: channel %u %s lost: %s (%u); no longer used\n", c->channel_id, c->driver->name,
                     why, value);
        if (c->driver->lost)
                c->driver->lost(c);
}

void guest_vmbus_packet_copy(const struct guest_vmbus_packet *packet, uint32_t offset, void *dst,
                             uint32_t len)
{
        const struct guest_vmbus_ring *ring = &packet->channel->in;

        GUEST_ASSERT(offset <= packet->length && len <= packet->length - offset);
        guest_ring_read(ring, (packet->offset + offset) % ring->data_size, dst, len);
}

int guest_vmbus_send(struct guest_vmbus_channel *c, uint16_t type, const struct guest_vmbus_segment *segs,
                     unsigned n_segs)
{
        struct guest_vmbus_ring *ring = &c->out;
        struct hv_packet_header header = {.type = type};
        uint32_t len = 0, span, read_index, free_bytes, w;

        if (c->state != GUEST_VMBUS_CHANNEL_OPEN)
                return -ENODEV;
        for (unsigned i = 0; i < n_segs; i++) {
                if (segs[i].len > HV_PACKET_MAX - len)
                        return -EINVAL;
                len += segs[i].len;
        }
        span = guest_packet_span(len);
        read_index = ring->header->read_index;
        if (!guest_ring_index_valid(ring, read_index)) {
                guest_vmbus_channel_lose(c, "bad read index from the host", read_index);
                return -ENODEV;
        }
        guest_compiler_barrier(); /* the host's read index before reusing the space */
        free_bytes = (read_index + ring->data_size - ring->own_index - 1) % ring->data_size;
        if (span > free_bytes)
                return -EAGAIN;

        header.length = len;
        w = guest_ring_write(ring, ring->own_index, &header, sizeof(header));
        for (unsigned i = 0; i < n_segs; i++)
                w = guest_ring_write(ring, w, segs[i].data, segs[i].len);
        w = guest_ring_write(ring, w, NULL, span - (uint32_t)sizeof(header) - len);
        guest_compiler_barrier(); /* the packet before the index that publishes it */
        ring->own_index = w;
        ring->header->write_index = w;
        /* Always signal: hvd coalesces, and a missed signal would stall the channel. */
        guest_hypercall(HV_CALL_SIGNAL_EVENT, c->connection_id, 0, 0);
        return 0;
}

int guest_vmbus_send_wait(struct guest_vmbus_channel *c, uint16_t type,
                          const struct guest_vmbus_segment *segs, unsigned n_segs, uint64_t timeout_ns)
{
        uint64_t deadline = guest_hv_reference_time() + timeout_ns;

        for (;;) {
                int r = guest_vmbus_send(c, type, segs, n_segs);
                uint64_t now;

                if (r != -EAGAIN)
                        return r;
                now = guest_hv_reference_time();
                if (now >= deadline)
                        return -ETIMEDOUT;
                guest_hv_idle(now + GUEST_VMBUS_SEND_IDLE_NS);
        }
}

/* Reads and dispatches up to the poll budget of packets from the incoming ring. */
static void guest_vmbus_channel_receive(struct guest_vmbus_channel *c)
{
        struct guest_vmbus_ring *ring = &c->in;

        for (unsigned n = 0; n < GUEST_VMBUS_POLL_BUDGET && c->state == GUEST_VMBUS_CHANNEL_OPEN; n++) {
                uint32_t write_index = ring->header->write_index, available, span;
                struct hv_packet_header header;
                struct guest_vmbus_packet packet;

                if (!guest_ring_index_valid(ring, write_index)) {
                        guest_vmbus_channel_lose(c, "bad write index from the host", write_index);
                        return;
                }
                if (write_index == ring->own_index)
                        return;
                guest_compiler_barrier(); /* the index before the packet it publishes */
                available = (write_index + ring->data_size - ring->own_index) % ring->data_size;
                guest_ring_read(ring, ring->own_index, &header, sizeof(header));
                if (header.length > HV_PACKET_MAX || guest_packet_span(header.length) > available) {
                        guest_vmbus_channel_lose(c, "packet longer than the ring holds", header.length);
                        return;
                }
                span = guest_packet_span(header.length);
                packet = (struct guest_vmbus_packet){
                        .channel = c,
                        .type = header.type,
                        .length = header.length,
                        .offset = (ring->own_index + (uint32_t)sizeof(header)) % ring->data_size,
                };
                c->driver->packet(c, &packet);
                guest_compiler_barrier(); /* done with the packet before giving its space back */
                ring->own_index = (ring->own_index + span) % ring->data_size;
                ring->header->read_index = ring->own_index;
        }
}

/* ---- Channel set-up ---- */

/* PostMessage, retried while hvd's mailbox for the worker is full (back-pressure, not
 * an error) for up to GUEST_VMBUS_POST_RETRY_NS. */
static int64_t guest_vmbus_post(const void *message, uint64_t len)
{
        uint64_t deadline = guest_hv_reference_time() + GUEST_VMBUS_POST_RETRY_NS;

        for (;;) {
                int64_t r = guest_hypercall(HV_CALL_POST_MESSAGE, (uint64_t)(uintptr_t)message, len, 0);
                uint64_t now;

                if (r != -HV_STATUS_INSUFFICIENT_BUFFERS)
                        return r;
                now = guest_hv_reference_time();
                if (now >= deadline)
                        return r;
                guest_hv_idle(now + GUEST_VMBUS_SEND_IDLE_NS);
        }
}

static const struct guest_vmbus_driver *guest_vmbus_driver_for(uint32_t device_class)
{
        for (size_t i = 0; i < sizeof(guest_vmbus_drivers) / sizeof(guest_vmbus_drivers[0]); i++)
                if (guest_vmbus_drivers[i]->device_class == device_class)
                        return guest_vmbus_drivers[i];
        return NULL;
}

static struct guest_vmbus_channel *guest_vmbus_channel_find(uint32_t channel_id)
{
        for (unsigned i = 0; i < guest_vmbus.n_channels; i++)
                if (guest_vmbus.channels[i].channel_id == channel_id)
                        return &guest_vmbus.channels[i];
        return NULL;
}

static void guest_vmbus_ring_setup(struct guest_vmbus_ring *ring, const uint64_t *pfns, uint32_t ring_pages)
{
        *ring = (struct guest_vmbus_ring){
                .header = (struct hv_ring_header *)(uintptr_t)(pfns[0] * GUEST_PAGE_SIZE),
                .data_size = (ring_pages - 1) * (uint32_t)GUEST_PAGE_SIZE,
        };
        for (uint32_t i = 1; i < ring_pages; i++)
                ring->data_gpas[i - 1] = pfns[i] * GUEST_PAGE_SIZE;
}

/* Pages for both rings, zeroed (the indexes start at 0), then OPEN. On failure the
 * pages are freed: the host never heard of them. */
static int guest_vmbus_channel_open(struct guest_vmbus_channel *c)
{
        struct hv_vmbus_open open = {
                .type = HV_VMBUS_MSG_OPEN,
                .channel_id = c->channel_id,
                .ring_pages = c->ring_pages,
        };
        uint32_t n = 2 * c->ring_pages, got;
        int64_t r;

        for (got = 0; got < n; got++) {
                uint64_t gpa;

                if (guest_page_alloc(&gpa) < 0)
                        break;
                memset((void *)(uintptr_t)gpa, 0, GUEST_PAGE_SIZE);
                open.pfns[got] = gpa / GUEST_PAGE_SIZE;
        }
        if (got < n) {
                r = -ENOMEM;
                goto fail;
        }
        guest_vmbus_ring_setup(&c->out, open.pfns, c->ring_pages);
        guest_vmbus_ring_setup(&c->in, open.pfns + c->ring_pages, c->ring_pages);
        c->in.header->reader_waiting = 1;
        c->state = GUEST_VMBUS_CHANNEL_OPENING;
        r = guest_vmbus_post(&open, sizeof(open));
        if (r >= 0)
                return 0;
fail:
        for (uint32_t i = 0; i < got; i++)
                guest_page_free(open.pfns[i] * GUEST_PAGE_SIZE);
        c->state = GUEST_VMBUS_CHANNEL_FAILED;
        guest_printf("vmbus: cannot open channel %u %s: error %ld\n", c->channel_id, c->driver->name, r);
        return (int)r;
}

static void guest_vmbus_on_offer(const struct hv_vmbus_offer *offer)
{
        const struct guest_vmbus_driver *driver = guest_vmbus_driver_for(offer->device_class);
        struct guest_vmbus_channel *c;
        uint32_t ring_pages;

        guest_vmbus.last_offer_ns = guest_hv_reference_time();
        if (!driver) {
                guest_printf("vmbus: ignoring offer of channel %u: device class %u has no driver here\n",
                             offer->channel_id, offer->device_class);
                return;
        }
        if (guest_vmbus_channel_find(offer->channel_id)) {
                guest_vmbus_complain("vmbus: ignoring second offer of channel %u\n", offer->channel_id);
                return;
        }
        for (unsigned i = 0; i < guest_vmbus.n_channels; i++) {
                if (guest_vmbus.channels[i].driver == driver) {
                        guest_vmbus_complain("vmbus: ignoring offer of channel %u: a %s channel exists\n",
                                             offer->channel_id, driver->name);
                        return;
                }
        }
        ring_pages = driver->ring_pages > offer->min_ring_pages ? driver->ring_pages : offer->min_ring_pages;
        if (ring_pages > GUEST_VMBUS_RING_MAX_PAGES) {
                guest_vmbus_complain(
                        "vmbus: ignoring offer of channel %u: %u ring pages, at most %u fit OPEN\n",
                        offer->channel_id, offer->min_ring_pages, GUEST_VMBUS_RING_MAX_PAGES);
                return;
        }
        if (guest_vmbus.n_channels == GUEST_VMBUS_MAX_CHANNELS) {
                guest_vmbus_complain("vmbus: ignoring offer of channel %u: too many channels\n",
                                     offer->channel_id);
                return;
        }
        c = &guest_vmbus.channels[guest_vmbus.n_channels++];
        *c = (struct guest_vmbus_channel){
                .driver = driver,
                .channel_id = offer->channel_id,
                .connection_id = offer->connection_id,
                .ring_pages = ring_pages,
        };
        guest_vmbus_channel_open(c);
}

static void guest_vmbus_on_open_result(const struct hv_vmbus_open_result *result)
{
        struct guest_vmbus_channel *c = guest_vmbus_channel_find(result->channel_id);

        if (!c || c->state != GUEST_VMBUS_CHANNEL_OPENING) {
                guest_vmbus_complain("vmbus: ignoring OPEN_RESULT for channel %u that is not opening\n",
                                     result->channel_id);
                return;
        }
        if (result->status != 0) {
                /* The host may have mapped some pages before refusing: keep them all. */
                c->state = GUEST_VMBUS_CHANNEL_FAILED;
                guest_printf("vmbus: host refused to open channel %u %s: status %d\n", c->channel_id,
                             c->driver->name, result->status);
                return;
        }
        c->state = GUEST_VMBUS_CHANNEL_OPEN;
        guest_printf("vmbus: channel %u %s open (%u+%u ring pages)\n", c->channel_id, c->driver->name,
                     c->ring_pages, c->ring_pages);
        if (c->driver->opened)
                c->driver->opened(c);
}

static void guest_vmbus_on_version(const struct hv_vmbus_version_response *response)
{
        if (guest_vmbus.state == GUEST_VMBUS_CONNECTED || guest_vmbus.state == GUEST_VMBUS_REFUSED) {
                guest_vmbus_complain("vmbus: ignoring a second VERSION_RESPONSE\n");
                return;
        }
        if (!response->accepted) {
                guest_vmbus.state = GUEST_VMBUS_REFUSED;
                guest_printf("vmbus: host refused version %u (it speaks %u): carrying on without Dynamic "
                             "Memory\n",
                             HV_VMBUS_VERSION, response->version);
                return;
        }
        guest_vmbus.state = GUEST_VMBUS_CONNECTED;
        guest_printf("vmbus: connected, version %u%s\n", HV_VMBUS_VERSION,
                     guest_vmbus.gave_up ? " (late answer)" : "");
}

/* The payload sizes each host message must have at least (more is tolerated). */
static const uint32_t guest_vmbus_message_min_size[] = {
        [HV_VMBUS_MSG_VERSION_RESPONSE] = sizeof(struct hv_vmbus_version_response),
        [HV_VMBUS_MSG_OFFER] = sizeof(struct hv_vmbus_offer),
        [HV_VMBUS_MSG_OPEN_RESULT] = sizeof(struct hv_vmbus_open_result),
};

static void guest_vmbus_dispatch_message(uint32_t type, const uint8_t *payload, uint32_t size)
{
        union {
                struct hv_vmbus_version_response version;
                struct hv_vmbus_offer offer;
                struct hv_vmbus_open_result open_result;
        } m;

        if (type >= sizeof(guest_vmbus_message_min_size) / sizeof(guest_vmbus_message_min_size[0]) ||
            guest_vmbus_message_min_size[type] == 0) {
                guest_vmbus_complain("vmbus: dropping message of unknown type %u\n", type);
                return;
        }
        if (size < guest_vmbus_message_min_size[type]) {
                guest_vmbus_complain("vmbus: dropping message type %u of %u bytes, expected %u\n", type, size,
                                     guest_vmbus_message_min_size[type]);
                return;
        }
        memcpy(&m, payload, guest_vmbus_message_min_size[type]);
        if (type != HV_VMBUS_MSG_VERSION_RESPONSE && guest_vmbus.state != GUEST_VMBUS_CONNECTED) {
                guest_vmbus_complain("vmbus: dropping message type %u: the version was refused\n", type);
                return;
        }
        switch (type) {
        case HV_VMBUS_MSG_VERSION_RESPONSE:
                guest_vmbus_on_version(&m.version);
                break;
        case HV_VMBUS_MSG_OFFER:
                guest_vmbus_on_offer(&m.offer);
                break;
        case HV_VMBUS_MSG_OPEN_RESULT:
                guest_vmbus_on_open_result(&m.open_result);
                break;
        }
}

/* Every occupied slot, VERSION_RESPONSE first. Slots are not ordered, and the host
 * may still be filling them while they are read, so a message that comes before the
 * version is known stays in its slot until a later poll. */
static void guest_vmbus_read_messages(void)
{
        struct hv_message *page = guest_vmbus.message_page;

        for (int round = 0; round < 2; round++) {
                if (round == 1 && guest_vmbus.state == GUEST_VMBUS_INITIATED)
                        return;
                for (unsigned i = 0; i < HV_MESSAGE_SLOTS; i++) {
                        struct hv_message *slot = &page[i];
                        uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
                        uint32_t type = slot->type, size;

                        if (type == HV_VMBUS_MSG_NONE)
                                continue;
                        if ((round == 0) != (type == HV_VMBUS_MSG_VERSION_RESPONSE))
                                continue;
                        guest_compiler_barrier(); /* type before the payload it publishes */
                        size = slot->size;
                        if (size <= HV_MESSAGE_PAYLOAD_MAX)
                                memcpy(payload, slot->payload, size);
                        guest_compiler_barrier(); /* copied out before the slot is freed */
                        slot->type = HV_VMBUS_MSG_NONE;
                        if (size > HV_MESSAGE_PAYLOAD_MAX)
                                guest_vmbus_complain("vmbus: dropping message type %u: size %u above %u\n",
                                                     type, size, HV_MESSAGE_PAYLOAD_MAX);
                        else
                                guest_vmbus_dispatch_message(type, payload, size);
                }
        }
}

/* ---- The bus ---- */

void guest_vmbus_poll(void)
{
        struct guest_vmbus *bus = &guest_vmbus;
        uint64_t now;

        if (guest_vp_index() != 0 || bus->in_poll)
                return;
        bus->in_poll = true;
        if (bus->message_page)
                guest_vmbus_read_messages();
        now = guest_hv_reference_time();
        if (bus->state == GUEST_VMBUS_INITIATED && !bus->gave_up &&
            now - bus->initiate_ns >= GUEST_VMBUS_ANSWER_TIMEOUT_NS) {
                bus->gave_up = true;
                guest_printf(
                        "vmbus: no answer to INITIATE after %lu s (an older worker?): carrying on without "
                        "Dynamic Memory\n",
                        GUEST_VMBUS_ANSWER_TIMEOUT_NS / GUEST_NS_PER_SEC);
        }
        for (unsigned i = 0; i < bus->n_channels; i++) {
                struct guest_vmbus_channel *c = &bus->channels[i];

                guest_vmbus_channel_receive(c);
                if (c->state == GUEST_VMBUS_CHANNEL_OPEN && c->driver->tick)
                        c->next_tick_ns = c->driver->tick(c, now);
        }
        guest_dm_check_low_memory(now);
        bus->in_poll = false;
}

uint64_t guest_vmbus_next_deadline(void)
{
        uint64_t next = 0;

        for (unsigned i = 0; i < guest_vmbus.n_channels; i++) {
                const struct guest_vmbus_channel *c = &guest_vmbus.channels[i];

                if (c->state == GUEST_VMBUS_CHANNEL_OPEN && c->next_tick_ns &&
                    (!next || c->next_tick_ns < next))
                        next = c->next_tick_ns;
        }
        return next;
}

/* Done waiting at boot: refused, or every offer so far settled and either every driver
 * has its channel or no new offer came for a while (the host offers what it has). */
static bool guest_vmbus_settled(uint64_t now)
{
        const struct guest_vmbus *bus = &guest_vmbus;

        if (bus->state != GUEST_VMBUS_CONNECTED)
                return bus->state != GUEST_VMBUS_INITIATED;
        for (unsigned i = 0; i < bus->n_channels; i++)
                if (bus->channels[i].state == GUEST_VMBUS_CHANNEL_OPENING)
                        return false;
        return bus->n_channels == sizeof(guest_vmbus_drivers) / sizeof(guest_vmbus_drivers[0]) ||
               now - bus->last_offer_ns >= GUEST_VMBUS_OFFER_SETTLE_NS;
}

void guest_vmbus_start(void)
{
        struct guest_vmbus *bus = &guest_vmbus;
        struct hv_vmbus_initiate initiate = {.type = HV_VMBUS_MSG_INITIATE, .version = HV_VMBUS_VERSION};
        uint64_t gpa, now;
        int64_t r;

        GUEST_ASSERT(guest_vp_index() == 0 && bus->state == GUEST_VMBUS_OFF);
        if (guest_page_alloc(&gpa) < 0) {
                guest_printf("vmbus: no page for the message page: carrying on without Dynamic Memory\n");
                return;
        }
        memset((void *)(uintptr_t)gpa, 0, GUEST_PAGE_SIZE);
        initiate.message_page_gpa = gpa;
        r = guest_vmbus_post(&initiate, sizeof(initiate));
        if (r < 0) {
                /* Nobody holds the page: the hypervisor refused the message outright. */
                guest_page_free(gpa);
                guest_printf("vmbus: PostMessage failed (error %ld): carrying on without Dynamic Memory\n",
                             r);
                return;
        }
        bus->message_page = (struct hv_message *)(uintptr_t)gpa;
        bus->initiate_ns = bus->last_offer_ns = guest_hv_reference_time();
        bus->state = GUEST_VMBUS_INITIATED;
        for (;;) {
                guest_vmbus_poll();
                now = guest_hv_reference_time();
                if (guest_vmbus_settled(now) || now - bus->initiate_ns >= GUEST_VMBUS_BOOT_WAIT_NS)
                        break;
                guest_hv_idle(now + GUEST_VMBUS_BOOT_IDLE_NS);
                guest_check_host_request();
        }
}
