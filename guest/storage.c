/* The storage VSC: the synthetic disk the guest pages to, as page-sized slots written
 * and read through a VMBus channel, a few requests in flight at a time. */
#include "hypercall.h"
#include "vmbus.h"

/*
 * Design note.
 *
 * A request copies a page into the ring (WRITE) or asks for one (READ), then
 * guest_storage_wait() polls the bus until its COMPLETION arrives; a read's data is
 * copied from the ring straight into the request's frame. The caller keeps the frame
 * allocated until the wait returns. Requests are matched to completions by id; a
 * completion for no request in flight is dropped with a line.
 *
 * A completion that does not come within GUEST_STORAGE_TIMEOUT_NS makes the disk
 * unusable for the rest of the guest's life: the request is abandoned (a late
 * completion finds it so and its data is dropped, never written to a frame that may
 * have been reused), and guest_storage_ready() turns false. Paging then stops; pages
 * already on the disk cannot be read back, and their readers get -EIO.
 *
 * Slots are handed out by guest_storage_reserve_slots, a bump allocator: the disk's
 * size is the host's business (the offer does not carry it), so a slot past its end
 * shows up as a failed completion.
 */

#define GUEST_STORAGE_RING_PAGES 13 /* the most OPEN can carry: 11 page writes in flight */
#define GUEST_STORAGE_TIMEOUT_NS (10 * GUEST_NS_PER_SEC)
#define GUEST_STORAGE_IDLE_NS (1 * GUEST_NS_PER_MS)

enum guest_storage_request_state {
        GUEST_STORAGE_FREE = 0,
        GUEST_STORAGE_PENDING,
        GUEST_STORAGE_DONE,
        GUEST_STORAGE_ABANDONED, /* timed out; the completion, if it comes, frees it */
};

struct guest_storage_request {
        enum guest_storage_request_state state;
        uint32_t id;
        bool write;
        int status;
        uint64_t slot;
        uint64_t gpa;
        uint64_t submitted_ns;
};

struct guest_storage {
        struct guest_vmbus_channel *channel;
        bool failed;
        uint32_t next_id;
        uint64_t next_slot;
        struct guest_storage_request requests[GUEST_STORAGE_MAX_INFLIGHT];
};

/* One paging disk per guest, used from VP 0. */
static struct guest_storage guest_storage;

bool guest_storage_ready(void)
{
        return guest_storage.channel && !guest_storage.failed;
}

int guest_storage_reserve_slots(uint64_t count, uint64_t *ret_first)
{
        struct guest_storage *s = &guest_storage;

        if (count > UINT64_MAX - s->next_slot)
                return -ENOSPC;
        *ret_first = s->next_slot;
        s->next_slot += count;
        return 0;
}

int guest_storage_submit(bool write, uint64_t slot, uint64_t gpa, uint32_t *ret_handle)
{
        struct guest_storage *s = &guest_storage;
        struct guest_storage_request *req = NULL;
        struct hv_storage_request wire;
        struct guest_vmbus_segment segs[2];
        uint32_t handle;
        int r;

        if (!guest_storage_ready())
                return -ENODEV;
        for (handle = 0; handle < GUEST_STORAGE_MAX_INFLIGHT; handle++) {
                if (s->requests[handle].state == GUEST_STORAGE_FREE) {
                        req = &s->requests[handle];
                        break;
                }
        }
        if (!req)
                return -EBUSY;
        if (++s->next_id == 0) /* 0 is never an id, so a zeroed packet matches nothing */
                s->next_id = 1;
        wire = (struct hv_storage_request){.request_id = s->next_id, .slot = slot};
        segs[0] = (struct guest_vmbus_segment){&wire, sizeof(wire)};
        segs[1] = (struct guest_vmbus_segment){(const void *)(uintptr_t)gpa, (uint32_t)GUEST_PAGE_SIZE};
        r = guest_vmbus_send_wait(s->channel, write ? HV_STORAGE_WRITE : HV_STORAGE_READ, segs, write ? 2 : 1,
                                  GUEST_STORAGE_TIMEOUT_NS);
        if (r < 0) {
                if (r == -ETIMEDOUT && !s->failed) {
                        s->failed = true;
                        guest_printf(
                                "storage: the host reads no requests (ring full for %lu s): paging off\n",
                                GUEST_STORAGE_TIMEOUT_NS / GUEST_NS_PER_SEC);
                }
                return r;
        }
        *req = (struct guest_storage_request){
                .state = GUEST_STORAGE_PENDING,
                .id = s->next_id,
                .write = write,
                .slot = slot,
                .gpa = gpa,
                .submitted_ns = guest_hv_reference_time(),
        };
        *ret_handle = handle;
        return 0;
}

int guest_storage_wait(uint32_t handle)
{
        struct guest_storage *s = &guest_storage;
        struct guest_storage_request *req;
        int status;

        GUEST_ASSERT(handle < GUEST_STORAGE_MAX_INFLIGHT && !guest_vmbus_in_poll());
        req = &s->requests[handle];
        GUEST_ASSERT(req->state == GUEST_STORAGE_PENDING || req->state == GUEST_STORAGE_DONE);
        while (req->state == GUEST_STORAGE_PENDING) {
                uint64_t now;

                guest_vmbus_poll();
                if (req->state != GUEST_STORAGE_PENDING)
                        break;
                now = guest_hv_reference_time();
                if (s->failed) { /* the channel was lost: nothing will complete */
                        req->state = GUEST_STORAGE_ABANDONED;
                        return -EIO;
                }
                if (now - req->submitted_ns >= GUEST_STORAGE_TIMEOUT_NS) {
                        req->state = GUEST_STORAGE_ABANDONED;
                        s->failed = true;
                        guest_printf(
                                "storage: no completion for request %u (slot %lu) in %lu s: paging off\n",
                                req->id, req->slot, GUEST_STORAGE_TIMEOUT_NS / GUEST_NS_PER_SEC);
                        return -ETIMEDOUT;
                }
                guest_hv_idle(now + GUEST_STORAGE_IDLE_NS);
                guest_check_host_request();
        }
        status = req->status;
        req->state = GUEST_STORAGE_FREE;
        return status;
}

static void guest_storage_packet(struct guest_vmbus_channel *channel, const struct guest_vmbus_packet *packet)
{
        struct guest_storage *s = &guest_storage;
        struct hv_storage_completion completion;
        struct guest_storage_request *req = NULL;

        (void)channel;
        if (packet->type != HV_STORAGE_COMPLETION || packet->length < sizeof(completion)) {
                guest_vmbus_complain("storage: dropping packet type %u of %u bytes\n", packet->type,
                                     packet->length);
                return;
        }
        guest_vmbus_packet_copy(packet, 0, &completion, sizeof(completion));
        for (unsigned i = 0; i < GUEST_STORAGE_MAX_INFLIGHT; i++) {
                struct guest_storage_request *r = &s->requests[i];

                if ((r->state == GUEST_STORAGE_PENDING || r->state == GUEST_STORAGE_ABANDONED) &&
                    r->id == completion.request_id) {
                        req = r;
                        break;
                }
        }
        if (!req) {
                guest_vmbus_complain("storage: dropping completion for request %u: none in flight\n",
                                     completion.request_id);
                return;
        }
        if (req->state == GUEST_STORAGE_ABANDONED) {
                req->state = GUEST_STORAGE_FREE;
                return;
        }
        req->status = 0;
        if (completion.status != 0) {
                req->status = -EIO; /* the caller says what it means (a full disk, a lost page) */
        } else if (!req->write && packet->length < sizeof(completion) + GUEST_PAGE_SIZE) {
                guest_vmbus_complain("storage: read of slot %lu completed with %u bytes, expected %lu\n",
                                     req->slot, packet->length, sizeof(completion) + GUEST_PAGE_SIZE);
                req->status = -EIO;
        } else if (!req->write) {
                guest_vmbus_packet_copy(packet, sizeof(completion), (void *)(uintptr_t)req->gpa,
                                        (uint32_t)GUEST_PAGE_SIZE);
        }
        req->state = GUEST_STORAGE_DONE;
}

static void guest_storage_opened(struct guest_vmbus_channel *channel)
{
        guest_storage.channel = channel;
}

static void guest_storage_lost(struct guest_vmbus_channel *channel)
{
        (void)channel;
        guest_storage.failed = true;
        /* Nothing more will complete: waiters see failed and give up. */
}

const struct guest_vmbus_driver guest_storage_driver = {
        .name = "storage",
        .device_class = HV_VMBUS_CLASS_STORAGE,
        .ring_pages = GUEST_STORAGE_RING_PAGES,
        .opened = guest_storage_opened,
        .packet = guest_storage_packet,
        .lost = guest_storage_lost,
};
