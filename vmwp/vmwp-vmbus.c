/* The host end of VMBus in the worker.
 *
 * Design note.
 *
 * News from the guest arrives as hvd events (a posted message, a signal for a
 * connection id). The event handler runs inside the hvd client, possibly while the
 * worker waits for one of its own calls to hvd, so it only queues; an idle source runs
 * vmwp_vmbus_process, which may call hvd freely. One process handles at most
 * VMBUS_NOTES_PER_PROCESS notes and VMBUS_PACKETS_PER_SIGNAL packets per signal, so a
 * flooding guest cannot starve vmmsd's control requests.
 *
 * Trust. Every guest message is length-checked and copied before use; OPEN's page list
 * is checked page by page (inside visible RAM, not the message page, not named twice,
 * not another channel's ring). Rings are read and written by vmwp-ring.c, which
 * checks every index and length; a ring found corrupt drops its channel (counted) and
 * the worker carries on.
 *
 * To the guest. Messages go into a free slot of the guest's message page (payload
 * first, then the type with a release store); packets into the channel's ring. What
 * does not fit waits, in order, and is retried every VMBUS_RETRY_MS. After writing, the
 * guest's VP 0 is signalled once per process. Having read packets also signals it, so a
 * guest waiting for ring space wakes at once rather than at its next timer. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "vmwp-state.h"
#include "vmwp-vmbus.h"

#define VMBUS_NOTES_PER_PROCESS 64
#define VMBUS_PACKETS_PER_SIGNAL 128
#define VMBUS_RETRY_MS 2
#define VMBUS_HOST_MESSAGES_MAX 64 /* waiting for a free slot */
#define VMBUS_NOTES_MAX 1024       /* queued guest news; hvd bounds it far lower */

typedef struct VmbusNote {
        bool is_signal;
        uint32_t connection_id;
        uint32_t len;
        uint8_t data[];
} VmbusNote;

/* A message or packet for the guest that waits for room. */
typedef struct VmbusOutgoing {
        uint32_t type;
        uint32_t len;
        uint8_t data[];
} VmbusOutgoing;

struct VmwpChannel {
        VmwpVmbus *bus;
        uint32_t id;
        uint32_t connection_id;
        const VmwpVspOps *ops;
        void *userdata;
        bool open;
        uint32_t n_pfns;
        uint64_t pfns[HV_VMBUS_OPEN_MAX_PAGES];
        VmwpRing in;    /* guest to host */
        VmwpRing out;   /* host to guest */
        GQueue backlog; /* VmbusOutgoing*, waiting for room in `out` */
};

struct VmwpVmbus {
        VmwpGuestRam *ram;
        VmwpSignalFn signal;
        void *signal_userdata;
        bool have_message_page;
        bool connected; /* the guest's version was accepted */
        uint64_t message_page_gpa;
        GPtrArray *channels; /* VmwpChannel*, index = id - 1 */
        GQueue notes;        /* VmbusNote* */
        GQueue messages;     /* VmbusOutgoing*, waiting for a free slot */
        guint process_source;
        guint retry_source;
        bool need_signal;
        VmwpVmbusStats stats;
};

static void channel_free(VmwpChannel *ch)
{
        g_queue_clear_full(&ch->backlog, g_free);
        g_free(ch);
}

int vmwp_vmbus_new(VmwpGuestRam *ram, VmwpSignalFn signal, void *userdata, VmwpVmbus **ret)
{
        VmwpVmbus *bus = g_new0(VmwpVmbus, 1);

        bus->ram = ram;
        bus->signal = signal;
        bus->signal_userdata = userdata;
        bus->channels = g_ptr_array_new_with_free_func((GDestroyNotify)channel_free);
        g_queue_init(&bus->notes);
        g_queue_init(&bus->messages);
        *ret = bus;
        return 0;
}

void vmwp_vmbus_free(VmwpVmbus *bus)
{
        if (!bus)
                return;
        if (bus->process_source)
                g_source_remove(bus->process_source);
        if (bus->retry_source)
                g_source_remove(bus->retry_source);
        g_queue_clear_full(&bus->notes, g_free);
        g_queue_clear_full(&bus->messages, g_free);
        g_ptr_array_unref(bus->channels);
        g_free(bus);
}

VmwpChannel *vmwp_vmbus_add_device(VmwpVmbus *bus, const VmwpVspOps *ops, void *userdata)
{
        VmwpChannel *ch = g_new0(VmwpChannel, 1);

        ch->bus = bus;
        ch->id = bus->channels->len + 1;
        ch->connection_id = ch->id;
        ch->ops = ops;
        ch->userdata = userdata;
        g_queue_init(&ch->backlog);
        g_ptr_array_add(bus->channels, ch);
        return ch;
}

const VmwpVmbusStats *vmwp_vmbus_stats(const VmwpVmbus *bus)
{
        return &bus->stats;
}

bool vmwp_channel_open(const VmwpChannel *channel)
{
        return channel->open;
}

uint32_t vmwp_channel_id(const VmwpChannel *channel)
{
        return channel->id;
}

uint32_t vmwp_channel_backlog(const VmwpChannel *channel)
{
        return channel->backlog.length;
}

/* ---- Scheduling ---- */

static gboolean on_process(gpointer userdata)
{
        VmwpVmbus *bus = userdata;

        if (vmwp_vmbus_process(bus))
                return G_SOURCE_CONTINUE;
        bus->process_source = 0;
        return G_SOURCE_REMOVE;
}

static void schedule_process(VmwpVmbus *bus)
{
        if (!bus->process_source)
                bus->process_source = g_idle_add(on_process, bus);
}

static gboolean on_retry(gpointer userdata)
{
        VmwpVmbus *bus = userdata;

        bus->retry_source = 0;
        schedule_process(bus);
        return G_SOURCE_REMOVE;
}

static void queue_note(VmwpVmbus *bus, VmbusNote *note)
{
        if (bus->notes.length >= VMBUS_NOTES_MAX) {
                bus->stats.bad_messages++;
                g_free(note);
                return;
        }
        g_queue_push_tail(&bus->notes, note);
        schedule_process(bus);
}

void vmwp_vmbus_queue_message(VmwpVmbus *bus, const uint8_t *data, size_t len)
{
        VmbusNote *note;

        if (len > HV_MESSAGE_PAYLOAD_MAX) { /* hvd never forwards one; the worker checks anyway */
                bus->stats.bad_messages++;
                return;
        }
        note = g_malloc0(sizeof(*note) + len);
        note->len = (uint32_t)len;
        memcpy(note->data, data, len);
        queue_note(bus, note);
}

void vmwp_vmbus_queue_signal(VmwpVmbus *bus, uint32_t connection_id)
{
        VmbusNote *note = g_new0(VmbusNote, 1);

        note->is_signal = true;
        note->connection_id = connection_id;
        queue_note(bus, note);
}

/* A ring the worker wrote (its header's index, and for an outgoing ring its data):
 * every page of it, for a live migration's sender. */
static void mark_ring(VmwpVmbus *bus, const VmwpRing *ring)
{
        if (!__atomic_load_n(&bus->ram->dirty, __ATOMIC_ACQUIRE))
                return;
        vmwp_guest_ram_mark_ptr(bus->ram, ring->header, HV_PAGE_SIZE);
        for (uint32_t i = 0; i < ring->data_size / HV_PAGE_SIZE; i++)
                vmwp_guest_ram_mark_ptr(bus->ram, ring->data[i], HV_PAGE_SIZE);
}

/* ---- Host messages (message page) ---- */

static bool write_message_slot(VmwpVmbus *bus, uint32_t type, const void *payload, uint32_t len)
{
        struct hv_message *slots = (struct hv_message *)(bus->ram->ram + bus->message_page_gpa);

        for (uint32_t i = 0; i < HV_MESSAGE_SLOTS; i++) {
                struct hv_message *slot = &slots[i];

                if (__atomic_load_n(&slot->type, __ATOMIC_ACQUIRE) != HV_VMBUS_MSG_NONE)
                        continue;
                slot->size = len;
                memcpy(slot->payload, payload, len);
                __atomic_store_n(&slot->type, type, __ATOMIC_RELEASE);
                vmwp_guest_ram_mark_ptr(bus->ram, slot, sizeof(*slot));
                bus->need_signal = true;
                return true;
        }
        return false;
}

/* In order: behind any message already waiting for a slot. */
static void post_host_message(VmwpVmbus *bus, uint32_t type, const void *payload, uint32_t len)
{
        VmbusOutgoing *m;

        g_assert(len <= HV_MESSAGE_PAYLOAD_MAX);
        if (bus->messages.length == 0 && write_message_slot(bus, type, payload, len))
                return;
        if (bus->messages.length >= VMBUS_HOST_MESSAGES_MAX) {
                bus->stats.host_messages_dropped++;
                return;
        }
        m = g_malloc(sizeof(*m) + len);
        m->type = type;
        m->len = len;
        memcpy(m->data, payload, len);
        g_queue_push_tail(&bus->messages, m);
}

static void retry_host_messages(VmwpVmbus *bus)
{
        VmbusOutgoing *m;

        while ((m = g_queue_peek_head(&bus->messages)) && write_message_slot(bus, m->type, m->data, m->len))
                g_free(g_queue_pop_head(&bus->messages));
}

/* ---- Channels ---- */

static VmwpChannel *channel_by_id(VmwpVmbus *bus, uint32_t id)
{
        return id >= 1 && id <= bus->channels->len ? bus->channels->pdata[id - 1] : NULL;
}

static VmwpChannel *channel_by_connection(VmwpVmbus *bus, uint32_t connection_id)
{
        for (guint i = 0; i < bus->channels->len; i++) {
                VmwpChannel *ch = bus->channels->pdata[i];

                if (ch->connection_id == connection_id)
                        return ch;
        }
        return NULL;
}

static void channel_close(VmwpChannel *ch, const char *why)
{
        if (!ch->open)
                return;
        ch->open = false;
        ch->n_pfns = 0;
        g_queue_clear_full(&ch->backlog, g_free);
        g_queue_init(&ch->backlog);
        if (why)
                g_message("vmbus: channel %u (%s) dropped: %s", ch->id, ch->ops->name, why);
        if (ch->ops->closed)
                ch->ops->closed(ch, ch->userdata);
}

static void channel_corrupt(VmwpChannel *ch, const char *why)
{
        ch->bus->stats.corrupt_rings++;
        channel_close(ch, why);
}

/* Writes waiting packets while they fit. */
static void channel_retry_backlog(VmwpChannel *ch)
{
        VmbusOutgoing *o;

        while (ch->open && (o = g_queue_peek_head(&ch->backlog))) {
                VmwpSegment seg = {o->data, o->len};
                int r = vmwp_ring_write(&ch->out, (uint16_t)o->type, &seg, 1);

                if (r == 0)
                        mark_ring(ch->bus, &ch->out);

                if (r == -EAGAIN)
                        return;
                g_free(g_queue_pop_head(&ch->backlog));
                if (r == -EBADMSG) {
                        channel_corrupt(ch, "the guest's read index is outside its ring");
                        return;
                }
                if (r == 0) {
                        ch->bus->stats.packets_out++;
                        ch->bus->need_signal = true;
                }
        }
}

int vmwp_channel_send(VmwpChannel *ch, uint16_t type, const VmwpSegment *segs, unsigned n_segs)
{
        VmbusOutgoing *o;
        uint32_t len = 0;
        int r;

        if (!ch->open)
                return -ENOTCONN;
        if (ch->backlog.length == 0) {
                r = vmwp_ring_write(&ch->out, type, segs, n_segs);
                if (r == 0) {
                        mark_ring(ch->bus, &ch->out);
                        ch->bus->stats.packets_out++;
                        ch->bus->need_signal = true;
                        schedule_process(ch->bus);
                        return 0;
                }
                if (r == -EBADMSG) {
                        channel_corrupt(ch, "the guest's read index is outside its ring");
                        return -ENOTCONN;
                }
                if (r != -EAGAIN)
                        return r;
        }
        if (ch->backlog.length >= VMWP_CHANNEL_BACKLOG_MAX)
                return -ENOBUFS;
        for (unsigned i = 0; i < n_segs; i++)
                len += segs[i].len;
        if (len > HV_PACKET_MAX)
                return -EMSGSIZE;
        o = g_malloc(sizeof(*o) + len);
        o->type = type;
        o->len = 0;
        for (unsigned i = 0; i < n_segs; i++) {
                memcpy(o->data + o->len, segs[i].data, segs[i].len);
                o->len += segs[i].len;
        }
        g_queue_push_tail(&ch->backlog, o);
        if (!ch->bus->retry_source)
                ch->bus->retry_source = g_timeout_add(VMBUS_RETRY_MS, on_retry, ch->bus);
        return 0;
}

/* Reads and hands over up to a budget of packets; true when the budget ran out. */
static bool channel_receive(VmwpChannel *ch)
{
        VmwpPacket packet;

        for (int n = 0; n < VMBUS_PACKETS_PER_SIGNAL; n++) {
                int r;

                if (!ch->open)
                        return false;
                r = vmwp_ring_read(&ch->in, &packet);
                if (r == 0)
                        mark_ring(ch->bus, &ch->in);
                if (r == -EAGAIN)
                        return false;
                if (r < 0) {
                        channel_corrupt(ch, "the guest's ring has an impossible index or packet length");
                        return false;
                }
                ch->bus->stats.packets_in++;
                ch->bus->need_signal = true; /* a guest waiting for room wakes now */
                ch->ops->packet(ch, &packet, ch->userdata);
        }
        return true;
}

bool vmwp_vmbus_page_in_use(const VmwpVmbus *bus, uint64_t pfn)
{
        if (bus->have_message_page && pfn == bus->message_page_gpa / HV_PAGE_SIZE)
                return true;
        for (guint i = 0; i < bus->channels->len; i++) {
                const VmwpChannel *ch = bus->channels->pdata[i];

                for (uint32_t p = 0; ch->open && p < ch->n_pfns; p++)
                        if (ch->pfns[p] == pfn)
                                return true;
        }
        return false;
}

/* ---- Guest messages ---- */

static bool page_visible(const VmwpVmbus *bus, uint64_t pfn)
{
        return pfn < bus->ram->visible_bytes / HV_PAGE_SIZE;
}

/* A guest starting over (INITIATE again) gets a fresh bus: channels and waiting
 * messages of the old one are dropped. */
static void bus_reset(VmwpVmbus *bus)
{
        for (guint i = 0; i < bus->channels->len; i++)
                channel_close(bus->channels->pdata[i], NULL);
        g_queue_clear_full(&bus->messages, g_free);
        g_queue_init(&bus->messages);
        bus->connected = false;
        bus->have_message_page = false;
}

static void handle_initiate(VmwpVmbus *bus, const uint8_t *data, uint32_t len)
{
        struct hv_vmbus_initiate initiate;
        struct hv_vmbus_version_response response = {.version = HV_VMBUS_VERSION};

        if (len < sizeof(initiate)) {
                bus->stats.bad_messages++;
                return;
        }
        memcpy(&initiate, data, sizeof(initiate));
        if (initiate.message_page_gpa % HV_PAGE_SIZE != 0 ||
            !page_visible(bus, initiate.message_page_gpa / HV_PAGE_SIZE)) {
                /* Nowhere to answer: the guest gives up on its own. */
                bus->stats.bad_messages++;
                g_message("vmbus: INITIATE names message page 0x%" G_GINT64_MODIFIER
                          "x, not a page inside visible RAM; ignored",
                          initiate.message_page_gpa);
                return;
        }
        bus_reset(bus);
        bus->have_message_page = true;
        bus->message_page_gpa = initiate.message_page_gpa;
        response.accepted = initiate.version == HV_VMBUS_VERSION;
        post_host_message(bus, HV_VMBUS_MSG_VERSION_RESPONSE, &response, sizeof(response));
        if (!response.accepted) {
                g_message("vmbus: refused guest version %u (speaks %u)", initiate.version, HV_VMBUS_VERSION);
                return;
        }
        bus->connected = true;
        for (guint i = 0; i < bus->channels->len; i++) {
                const VmwpChannel *ch = bus->channels->pdata[i];
                struct hv_vmbus_offer offer = {
                        .channel_id = ch->id,
                        .device_class = ch->ops->device_class,
                        .connection_id = ch->connection_id,
                        .min_ring_pages = ch->ops->min_ring_pages,
                };

                post_host_message(bus, HV_VMBUS_MSG_OFFER, &offer, sizeof(offer));
        }
}

/* 0 or -(HV_STATUS_*) for OPEN_RESULT. */
static int32_t check_open(VmwpVmbus *bus, VmwpChannel *ch, const struct hv_vmbus_open *open, uint32_t len)
{
        uint32_t n = 2 * open->ring_pages;

        if (!ch)
                return -HV_STATUS_INVALID_PARAMETER;
        if (ch->open)
                return -HV_STATUS_ACCESS_DENIED;
        if (open->ring_pages < ch->ops->min_ring_pages || open->ring_pages > VMWP_RING_MAX_PAGES ||
            len < offsetof(struct hv_vmbus_open, pfns) + n * sizeof(uint64_t))
                return -HV_STATUS_INVALID_PARAMETER;
        for (uint32_t i = 0; i < n; i++) {
                uint64_t pfn = open->pfns[i];

                if (!page_visible(bus, pfn) || vmwp_vmbus_page_in_use(bus, pfn))
                        return -HV_STATUS_ACCESS_DENIED;
                for (uint32_t j = 0; j < i; j++)
                        if (open->pfns[j] == pfn)
                                return -HV_STATUS_INVALID_PARAMETER;
        }
        return 0;
}

static void handle_open(VmwpVmbus *bus, const uint8_t *data, uint32_t len)
{
        struct hv_vmbus_open open = {0};
        struct hv_vmbus_open_result result;
        uint8_t *pages[HV_VMBUS_OPEN_MAX_PAGES];
        VmwpChannel *ch;

        if (!bus->connected || len < offsetof(struct hv_vmbus_open, pfns)) {
                bus->stats.bad_messages++;
                return;
        }
        memcpy(&open, data, len < sizeof(open) ? len : sizeof(open));
        ch = channel_by_id(bus, open.channel_id);
        result = (struct hv_vmbus_open_result){.channel_id = open.channel_id};
        result.status = check_open(bus, ch, &open, len);
        if (result.status == 0) {
                for (uint32_t i = 0; i < 2 * open.ring_pages; i++)
                        pages[i] = bus->ram->ram + open.pfns[i] * HV_PAGE_SIZE;
                if (vmwp_ring_init(&ch->in, pages, open.ring_pages, true) < 0 ||
                    vmwp_ring_init(&ch->out, pages + open.ring_pages, open.ring_pages, false) < 0)
                        result.status = -HV_STATUS_INVALID_PARAMETER;
        }
        if (result.status != 0) {
                bus->stats.bad_messages++;
                g_message("vmbus: refused to open channel %u: status %d", open.channel_id, result.status);
                post_host_message(bus, HV_VMBUS_MSG_OPEN_RESULT, &result, sizeof(result));
                return;
        }
        ch->n_pfns = 2 * open.ring_pages;
        memcpy(ch->pfns, open.pfns, ch->n_pfns * sizeof(uint64_t));
        /* The worker never polls: it always wants the guest's signal. */
        __atomic_store_n(&ch->in.header->reader_waiting, 1, __ATOMIC_RELEASE);
        ch->open = true;
        post_host_message(bus, HV_VMBUS_MSG_OPEN_RESULT, &result, sizeof(result));
        g_message("vmbus: channel %u (%s) open, %u+%u ring pages", ch->id, ch->ops->name, open.ring_pages,
                  open.ring_pages);
        if (ch->ops->opened)
                ch->ops->opened(ch, ch->userdata);
        channel_receive(ch); /* anything the guest wrote before it heard back */
}

static void handle_message(VmwpVmbus *bus, const VmbusNote *note)
{
        uint32_t type;

        if (note->len < sizeof(type)) {
                bus->stats.bad_messages++;
                return;
        }
        memcpy(&type, note->data, sizeof(type));
        bus->stats.messages++;
        switch (type) {
        case HV_VMBUS_MSG_INITIATE:
                handle_initiate(bus, note->data, note->len);
                break;
        case HV_VMBUS_MSG_OPEN:
                handle_open(bus, note->data, note->len);
                break;
        default:
                bus->stats.bad_messages++;
                break;
        }
}

/* A channel whose packets exceeded one batch's budget gets its signal again, behind
 * the other news. */
static void handle_signal(VmwpVmbus *bus, uint32_t connection_id)
{
        VmwpChannel *ch = channel_by_connection(bus, connection_id);

        if (!ch || !ch->open) {
                bus->stats.bad_signals++;
                return;
        }
        bus->stats.signals++;
        if (channel_receive(ch))
                vmwp_vmbus_queue_signal(bus, connection_id);
        channel_retry_backlog(ch);
}

bool vmwp_vmbus_process(VmwpVmbus *bus)
{
        bool backlog = false;
        VmbusNote *note;

        for (int n = 0; n < VMBUS_NOTES_PER_PROCESS && (note = g_queue_pop_head(&bus->notes)); n++) {
                if (note->is_signal)
                        handle_signal(bus, note->connection_id);
                else
                        handle_message(bus, note);
                g_free(note);
        }
        if (bus->have_message_page)
                retry_host_messages(bus);
        backlog = bus->messages.length > 0;
        for (guint i = 0; i < bus->channels->len; i++) {
                VmwpChannel *ch = bus->channels->pdata[i];

                channel_retry_backlog(ch);
                backlog = backlog || ch->backlog.length > 0;
        }
        if (bus->need_signal) {
                bus->need_signal = false;
                bus->stats.guest_signals++;
                if (bus->signal(bus->signal_userdata) < 0)
                        g_warning("vmbus: cannot signal the guest");
        }
        if (backlog && !bus->retry_source)
                bus->retry_source = g_timeout_add(VMBUS_RETRY_MS, on_retry, bus);
        return bus->notes.length > 0;
}

/* ---- Save-VM ---- */

static void save_outgoing(const GQueue *queue, GByteArray *out)
{
        vmwp_state_put_u32(out, queue->length);
        for (const GList *l = queue->head; l; l = l->next) {
                const VmbusOutgoing *o = l->data;

                vmwp_state_put_u32(out, o->type);
                vmwp_state_put_blob(out, o->data, o->len);
        }
}

void vmwp_vmbus_save(const VmwpVmbus *bus, GByteArray *out)
{
        vmwp_state_put_u32(out, bus->have_message_page);
        vmwp_state_put_u32(out, bus->connected);
        vmwp_state_put_u64(out, bus->message_page_gpa);
        vmwp_state_put_u32(out, bus->channels->len);
        for (guint i = 0; i < bus->channels->len; i++) {
                const VmwpChannel *ch = bus->channels->pdata[i];

                vmwp_state_put_u32(out, ch->open);
                vmwp_state_put_u32(out, ch->open ? ch->n_pfns : 0);
                for (uint32_t k = 0; ch->open && k < ch->n_pfns; k++)
                        vmwp_state_put_u64(out, ch->pfns[k]);
                vmwp_state_put_u32(out, ch->open ? ch->in.own_index : 0);
                vmwp_state_put_u32(out, ch->open ? ch->out.own_index : 0);
                save_outgoing(&ch->backlog, out);
        }
        save_outgoing(&bus->messages, out);
        vmwp_state_put_u32(out, bus->notes.length);
        for (const GList *l = bus->notes.head; l; l = l->next) {
                const VmbusNote *note = l->data;

                vmwp_state_put_u32(out, note->is_signal);
                vmwp_state_put_u32(out, note->connection_id);
                vmwp_state_put_blob(out, note->data, note->len);
        }
}

static int restore_outgoing(VmwpStateReader *r, GQueue *queue, uint32_t max_count, uint32_t max_len)
{
        uint32_t n = vmwp_state_get_u32(r);

        if (n > max_count)
                return -EBADMSG;
        for (uint32_t i = 0; i < n && !r->failed; i++) {
                uint32_t type = vmwp_state_get_u32(r), len;
                const uint8_t *data = vmwp_state_get_blob(r, max_len, &len);
                VmbusOutgoing *o;

                if (!data)
                        return -EBADMSG;
                o = g_malloc(sizeof(*o) + len);
                o->type = type;
                o->len = len;
                memcpy(o->data, data, len);
                g_queue_push_tail(queue, o);
        }
        return r->failed ? -EBADMSG : 0;
}

static int restore_channel(VmwpVmbus *bus, VmwpChannel *ch, VmwpStateReader *r, char **ret_error)
{
        struct hv_vmbus_open open = {.channel_id = ch->id};
        uint8_t *pages[HV_VMBUS_OPEN_MAX_PAGES];
        uint32_t is_open = vmwp_state_get_u32(r), n_pfns = vmwp_state_get_u32(r), in_index, out_index;

        if (r->failed || is_open > 1 || n_pfns > HV_VMBUS_OPEN_MAX_PAGES || n_pfns % 2 != 0 ||
            (is_open && n_pfns == 0) || (!is_open && n_pfns != 0)) {
                *ret_error = g_strdup_printf("vmbus: channel %u's saved state is malformed", ch->id);
                return -EBADMSG;
        }
        open.ring_pages = n_pfns / 2;
        for (uint32_t k = 0; k < n_pfns; k++)
                open.pfns[k] = vmwp_state_get_u64(r);
        in_index = vmwp_state_get_u32(r);
        out_index = vmwp_state_get_u32(r);
        if (r->failed) {
                *ret_error = g_strdup_printf("vmbus: channel %u's saved state is cut short", ch->id);
                return -EBADMSG;
        }
        if (is_open) {
                if (check_open(bus, ch, &open, sizeof(open)) != 0) {
                        *ret_error = g_strdup_printf("vmbus: channel %u's saved ring pages are not usable",
                                                     ch->id);
                        return -EBADMSG;
                }
                for (uint32_t k = 0; k < n_pfns; k++)
                        pages[k] = bus->ram->ram + open.pfns[k] * HV_PAGE_SIZE;
                if (vmwp_ring_init(&ch->in, pages, open.ring_pages, true) < 0 ||
                    vmwp_ring_init(&ch->out, pages + open.ring_pages, open.ring_pages, false) < 0 ||
                    in_index >= ch->in.data_size || in_index % 8 != 0 || out_index >= ch->out.data_size ||
                    out_index % 8 != 0) {
                        *ret_error = g_strdup_printf("vmbus: channel %u's saved rings are corrupt", ch->id);
                        return -EBADMSG;
                }
                ch->in.own_index = in_index;
                ch->out.own_index = out_index;
                ch->n_pfns = n_pfns;
                memcpy(ch->pfns, open.pfns, n_pfns * sizeof(uint64_t));
                ch->open = true;
        }
        if (restore_outgoing(r, &ch->backlog, VMWP_CHANNEL_BACKLOG_MAX, HV_PACKET_MAX) < 0) {
                *ret_error = g_strdup_printf("vmbus: channel %u's saved backlog is malformed", ch->id);
                return -EBADMSG;
        }
        if (is_open && ch->ops->opened)
                ch->ops->opened(ch, ch->userdata);
        return 0;
}

int vmwp_vmbus_restore(VmwpVmbus *bus, const uint8_t *data, size_t len, char **ret_error)
{
        VmwpStateReader r = vmwp_state_reader(data, len);
        uint32_t have_page = vmwp_state_get_u32(&r), connected = vmwp_state_get_u32(&r), n_channels, n_notes;
        uint64_t page_gpa = vmwp_state_get_u64(&r);
        int ret;

        n_channels = vmwp_state_get_u32(&r);
        if (r.failed || have_page > 1 || connected > 1 || (connected && !have_page) ||
            (have_page && (page_gpa % HV_PAGE_SIZE != 0 || !page_visible(bus, page_gpa / HV_PAGE_SIZE)))) {
                *ret_error = g_strdup("vmbus: the saved message page is not a page inside visible RAM");
                return -EBADMSG;
        }
        if (n_channels != bus->channels->len) {
                *ret_error = g_strdup_printf("vmbus: the saved VM has %u channels, this worker offers %u",
                                             n_channels, bus->channels->len);
                return -EBADMSG;
        }
        bus->have_message_page = have_page;
        bus->connected = connected;
        bus->message_page_gpa = page_gpa;
        for (guint i = 0; i < bus->channels->len; i++) {
                ret = restore_channel(bus, bus->channels->pdata[i], &r, ret_error);
                if (ret < 0)
                        return ret;
        }
        if (restore_outgoing(&r, &bus->messages, VMBUS_HOST_MESSAGES_MAX, HV_MESSAGE_PAYLOAD_MAX) < 0) {
                *ret_error = g_strdup("vmbus: the saved host messages are malformed");
                return -EBADMSG;
        }
        n_notes = vmwp_state_get_u32(&r);
        if (n_notes > VMBUS_NOTES_MAX) {
                *ret_error = g_strdup("vmbus: too many saved guest notes");
                return -EBADMSG;
        }
        for (uint32_t i = 0; i < n_notes && !r.failed; i++) {
                uint32_t is_signal = vmwp_state_get_u32(&r), connection_id = vmwp_state_get_u32(&r), note_len;
                const uint8_t *note_data = vmwp_state_get_blob(&r, HV_MESSAGE_PAYLOAD_MAX, &note_len);
                VmbusNote *note;

                if (!note_data || is_signal > 1) {
                        r.failed = true; /* refused below, never dropped quietly */
                        break;
                }
                note = g_malloc(sizeof(*note) + note_len);
                note->is_signal = is_signal;
                note->connection_id = connection_id;
                note->len = note_len;
                memcpy(note->data, note_data, note_len);
                g_queue_push_tail(&bus->notes, note);
        }
        if (!vmwp_state_done(&r)) {
                *ret_error = g_strdup("vmbus: the saved state is cut short or has bytes left over");
                return -EBADMSG;
        }
        schedule_process(bus);
        return 0;
}
