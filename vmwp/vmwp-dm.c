/* The Dynamic Memory VSP.
 *
 * Design note.
 *
 * Grow (MemoryAdjust delta > 0). hvd acts first, then the guest is told: hvd charges
 * the pool (PartitionUnballoon, PartitionHotAdd) and may refuse, and only memory hvd
 * granted is offered. Deflating the balloon comes first (no new guest-physical range,
 * no engine remap), then hot-add in whole 2 MiB units from the old visible end
 * (vmwp_dm_plan_grow keeps the split exact). UNBALLOON_REQUEST carries the page
 * numbers most recently ballooned.
 *
 * Shrink (delta < 0). BALLOON_REQUEST asks the guest for n pages; it answers with
 * chunks of page numbers. Each chunk goes to hvd (PartitionBalloon) as it arrives, so
 * host memory falls while the guest is still collecting. Pages the worker itself
 * writes (the message page, ring pages) are refused here, the rest are judged by
 * hvd page by page; refused pages are counted, never acted on. What was asked and not
 * yet returned is pending_remove; a final chunk (more = 0) closes the request even if
 * the guest could spare fewer pages. A guest may take a while (it pages out to fill a
 * balloon, up to 2 s, guest/dm.c), but a request it never closes (a reply it could not
 * send, a hung guest) must not hold pending_remove for ever: vmmsd would count the
 * memory as on its way back and never hand it out. So a request open for
 * DM_BALLOON_EXPIRE_US is closed here; pages that come for it later are refused, as for
 * any request that is not open, and stay the guest's.
 *
 * Figures that cannot wait. A guest report flagged HV_DM_STATUS_PROMPT (its pressure
 * stepped up, guest/dm.c) is handed on at once through the status handler, so vmmsd
 * hears of it without waiting for the once-a-second MemoryStatus; the guest rate-limits
 * them. So is the end of a balloon request (its last chunk): assigned memory has fallen,
 * and vmmsd should not plan the next remove on the figure from before; and, at most every
 * DM_CHUNK_STATUS_US, a chunk of a request still open (a guest paging to fill it answers
 * over up to 2 s): the pool has the pages back at once, and a VM figure a second old
 * beside it would count them twice. A report from a
 * guest that predates the flags field is shorter and counts as periodic.
 *
 * The balancer in vmmsd sees the outcome in MemoryStatus; nothing here retries.
 * Figures that hvd owns (visible, assigned, ballooned, resident) are read from it, so
 * the report cannot drift from what the pool is charged. */
#include <errno.h>
#include <string.h>

#include "vmwp-dm.h"
#include "vmwp-state.h"

/* Pages per hvd request: hvd's limit (hv-memory.h HV_MEMORY_PAGES_MAX). */
#define DM_HV_PAGES_MAX 65536u
/* Figures while a balloon fills: at most this often. */
#define DM_CHUNK_STATUS_US (100 * 1000)
/* A balloon request the guest has not closed in this long is given up. */
#define DM_BALLOON_EXPIRE_US (10 * G_USEC_PER_SEC)

typedef struct BalloonRequest {
        uint32_t id;
        uint64_t remaining; /* pages asked and not yet returned */
        uint64_t accepted;  /* pages hvd took so far */
        int64_t sent_us;    /* monotonic; the restored ones count from the restore */
} BalloonRequest;

struct VmwpDm {
        VmwpVmbus *bus;
        VmwpChannel *channel;
        VmwpGuestRam *ram;
        const VmwpDmHvOps *hv;
        void *hv_userdata;
        struct hv_dm_status status;
        bool have_status;
        int64_t status_us; /* monotonic time it arrived */
        VmwpDmStatusFn status_fn;
        void *status_userdata;
        uint64_t prompt_reports;
        int64_t chunk_status_us; /* when a chunk last sent the figures */
        GArray *ballooned;       /* uint64_t pfns hvd holds as ballooned, most recent last */
        GArray *requests;        /* BalloonRequest, not finished by the guest */
        uint32_t next_request_id;
        uint64_t added_bytes_total;
        uint64_t removed_bytes_total;
        uint64_t add_operations;
        uint64_t remove_operations;
        uint64_t refused_pages;
        uint64_t bad_packets;
};

void vmwp_dm_plan_grow(uint64_t want, uint64_t ballooned, uint64_t room, uint64_t unit,
                       uint64_t *ret_unballoon, uint64_t *ret_hot_add)
{
        uint64_t hot_add;

        if (want <= ballooned) {
                *ret_unballoon = want;
                *ret_hot_add = 0;
                return;
        }
        hot_add = (want - ballooned + unit - 1) / unit * unit;
        if (hot_add > room)
                hot_add = room;
        if (hot_add > want)
                hot_add = want;
        *ret_unballoon = want - hot_add < ballooned ? want - hot_add : ballooned;
        *ret_hot_add = hot_add;
}

/* ---- From the guest ---- */

static BalloonRequest *find_request(VmwpDm *dm, uint32_t id, guint *ret_index)
{
        for (guint i = 0; i < dm->requests->len; i++) {
                BalloonRequest *req = &g_array_index(dm->requests, BalloonRequest, i);

                if (req->id == id) {
                        *ret_index = i;
                        return req;
                }
        }
        return NULL;
}

/* Hands the guest's pages to hvd; returns how many hvd took. */
static uint64_t balloon_pages(VmwpDm *dm, const uint64_t *pfns, uint32_t n)
{
        uint64_t keep[HV_DM_PFNS_PER_PACKET];
        bool accepted[HV_DM_PFNS_PER_PACKET];
        HvClientPageTally tally;
        g_autofree char *why = NULL;
        uint32_t n_keep = 0;
        uint64_t n_accepted = 0;
        int r;

        for (uint32_t i = 0; i < n; i++)
                if (!vmwp_vmbus_page_in_use(dm->bus, pfns[i]))
                        keep[n_keep++] = pfns[i];
        dm->refused_pages += n - n_keep;
        if (n_keep == 0)
                return 0;
        r = dm->hv->balloon(dm->hv_userdata, keep, n_keep, accepted, &tally, &why);
        if (r < 0) {
                g_warning("dm: hvd did not take %u ballooned pages: %s", n_keep, why ? why : g_strerror(-r));
                return 0;
        }
        for (uint32_t i = 0; i < n_keep; i++)
                if (accepted[i]) {
                        g_array_append_val(dm->ballooned, keep[i]);
                        n_accepted++;
                }
        dm->refused_pages += n_keep - n_accepted;
        dm->removed_bytes_total += n_accepted * HV_PAGE_SIZE;
        if (n_accepted < n)
                g_message("dm: %" G_GUINT64_FORMAT " of %u ballooned pages refused (bad page numbers)",
                          (uint64_t)n - n_accepted, n);
        return n_accepted;
}

static void on_balloon_response(VmwpDm *dm, const VmwpPacket *packet)
{
        struct hv_dm_balloon_response response;
        uint64_t pfns[HV_DM_PFNS_PER_PACKET];
        BalloonRequest *req;
        uint64_t accepted;
        uint32_t asked;
        guint index;

        if (packet->length < sizeof(response)) {
                dm->bad_packets++;
                return;
        }
        memcpy(&response, packet->data, sizeof(response));
        if (response.n_pfns > HV_DM_PFNS_PER_PACKET ||
            packet->length < sizeof(response) + response.n_pfns * sizeof(uint64_t)) {
                dm->bad_packets++;
                return;
        }
        memcpy(pfns, packet->data + sizeof(response), response.n_pfns * sizeof(uint64_t));
        /* The guest gives back only what a MemoryAdjust asked for: pages beyond what the
         * request still wants, or for a request that is not open, are refused unread, so a
         * guest cannot shrink itself unasked and then make the host hold the pages anew. */
        req = find_request(dm, response.request_id, &index);
        asked = req ? (uint32_t)MIN(req->remaining, (uint64_t)response.n_pfns) : 0;
        if (asked < response.n_pfns) {
                dm->refused_pages += response.n_pfns - asked;
                g_message("dm: refused %u ballooned pages the guest was not asked for (request %u %s)",
                          response.n_pfns - asked, response.request_id, req ? "wants fewer" : "is not open");
        }
        accepted = asked ? balloon_pages(dm, pfns, asked) : 0;
        if (!req)
                return;
        req->remaining -= asked;
        req->accepted += accepted;
        if (!response.more) {
                if (req->accepted > 0)
                        dm->remove_operations++;
                g_array_remove_index(dm->requests, index);
                if (dm->status_fn)
                        dm->status_fn(dm->status_userdata, false);
        } else if (accepted > 0 && dm->status_fn &&
                   g_get_monotonic_time() - dm->chunk_status_us >= DM_CHUNK_STATUS_US) {
                dm->chunk_status_us = g_get_monotonic_time();
                dm->status_fn(dm->status_userdata, false);
        }
}

static void on_packet(VmwpChannel *channel, const VmwpPacket *packet, void *userdata)
{
        VmwpDm *dm = userdata;

        (void)channel;
        switch (packet->type) {
        case HV_DM_STATUS:
                if (packet->length < HV_DM_STATUS_MIN_SIZE) {
                        dm->bad_packets++;
                        return;
                }
                memset(&dm->status, 0, sizeof(dm->status));
                memcpy(&dm->status, packet->data, MIN(packet->length, sizeof(dm->status)));
                dm->have_status = true;
                dm->status_us = g_get_monotonic_time();
                if (dm->status.flags & HV_DM_STATUS_PROMPT) {
                        dm->prompt_reports++;
                        if (dm->status_fn)
                                dm->status_fn(dm->status_userdata, true);
                }
                break;
        case HV_DM_BALLOON_RESPONSE:
                on_balloon_response(dm, packet);
                break;
        case HV_DM_UNBALLOON_RESPONSE: {
                struct hv_dm_unballoon_response response;

                if (packet->length < sizeof(response)) {
                        dm->bad_packets++;
                        return;
                }
                memcpy(&response, packet->data, sizeof(response));
                break;
        }
        case HV_DM_HOT_ADD_RESPONSE: {
                struct hv_dm_hot_add_response response;

                if (packet->length < sizeof(response)) {
                        dm->bad_packets++;
                        return;
                }
                memcpy(&response, packet->data, sizeof(response));
                if (response.bytes_accepted == 0)
                        g_message("dm: the guest refused hot-add request %u", response.request_id);
                break;
        }
        default:
                dm->bad_packets++;
                break;
        }
}

static void on_opened(VmwpChannel *channel, void *userdata)
{
        VmwpDm *dm = userdata;

        (void)channel;
        dm->have_status = false;
}

/* Requests in flight die with the channel; pages hvd holds stay ballooned. */
static void on_closed(VmwpChannel *channel, void *userdata)
{
        VmwpDm *dm = userdata;

        (void)channel;
        g_array_set_size(dm->requests, 0);
        dm->have_status = false;
}

static const VmwpVspOps dm_vsp_ops = {
        .name = "dynamic-memory",
        .device_class = HV_VMBUS_CLASS_DYNAMIC_MEMORY,
        .min_ring_pages = 4,
        .opened = on_opened,
        .packet = on_packet,
        .closed = on_closed,
};

int vmwp_dm_new(VmwpVmbus *bus, VmwpGuestRam *ram, const VmwpDmHvOps *hv, void *hv_userdata, VmwpDm **ret)
{
        VmwpDm *dm = g_new0(VmwpDm, 1);

        dm->bus = bus;
        dm->ram = ram;
        dm->hv = hv;
        dm->hv_userdata = hv_userdata;
        dm->ballooned = g_array_new(FALSE, FALSE, sizeof(uint64_t));
        dm->requests = g_array_new(FALSE, FALSE, sizeof(BalloonRequest));
        dm->next_request_id = 1;
        dm->channel = vmwp_vmbus_add_device(bus, &dm_vsp_ops, dm);
        *ret = dm;
        return 0;
}

void vmwp_dm_set_status_handler(VmwpDm *dm, VmwpDmStatusFn fn, void *userdata)
{
        dm->status_fn = fn;
        dm->status_userdata = userdata;
}

void vmwp_dm_free(VmwpDm *dm)
{
        if (!dm)
                return;
        g_array_unref(dm->ballooned);
        g_array_unref(dm->requests);
        g_free(dm);
}

/* ---- MemoryAdjust ---- */

static int send_unballoon(VmwpDm *dm, const uint64_t *pfns, uint64_t n)
{
        for (uint64_t i = 0; i < n; i += HV_DM_PFNS_PER_PACKET) {
                uint32_t chunk = (uint32_t)MIN(n - i, HV_DM_PFNS_PER_PACKET);
                struct hv_dm_unballoon_request request = {.request_id = dm->next_request_id++,
                                                          .n_pfns = chunk};
                VmwpSegment segs[] = {{&request, sizeof(request)},
                                      {pfns + i, chunk * (uint32_t)sizeof(uint64_t)}};
                int r = vmwp_channel_send(dm->channel, HV_DM_UNBALLOON_REQUEST, segs, G_N_ELEMENTS(segs));

                if (r < 0)
                        return r;
        }
        return 0;
}

/* Deflates by up to n pages, newest first: hvd charges them, then the guest gets them.
 * Returns the pages given back, or a negative errno when none could be. */
static int64_t deflate(VmwpDm *dm, uint64_t n, char **ret_error)
{
        g_autofree bool *accepted = g_new(bool, MIN(n, DM_HV_PAGES_MAX) + 1);
        g_autoptr(GArray) given = g_array_new(FALSE, FALSE, sizeof(uint64_t));
        int r = 0;

        while (given->len < n && dm->ballooned->len > 0) {
                uint64_t chunk = MIN(MIN(n - given->len, DM_HV_PAGES_MAX), dm->ballooned->len);
                uint64_t *tail = &g_array_index(dm->ballooned, uint64_t, dm->ballooned->len - chunk);
                HvClientPageTally tally;

                r = dm->hv->unballoon(dm->hv_userdata, tail, chunk, accepted, &tally, ret_error);
                if (r < 0)
                        break;
                for (uint64_t i = 0; i < chunk; i++) {
                        if (accepted[i])
                                g_array_append_val(given, tail[i]);
                        else
                                dm->refused_pages++; /* hvd does not hold it: forget it */
                }
                g_array_set_size(dm->ballooned, dm->ballooned->len - (guint)chunk);
        }
        if (given->len == 0 && r < 0)
                return r;
        if (given->len > 0) {
                g_clear_pointer(ret_error, g_free);
                r = send_unballoon(dm, (const uint64_t *)given->data, given->len);
                if (r < 0)
                        g_warning("dm: cannot send %u unballooned pages to the guest: %s", given->len,
                                  g_strerror(-r));
                dm->added_bytes_total += (uint64_t)given->len * HV_PAGE_SIZE;
        }
        return given->len;
}

static int hot_add(VmwpDm *dm, uint64_t bytes, char **ret_error)
{
        HvClientMemory memory;
        struct hv_dm_hot_add_request request = {.request_id = dm->next_request_id++, .bytes = bytes};
        VmwpSegment seg = {&request, sizeof(request)};
        int r;

        r = dm->hv->hot_add(dm->hv_userdata, bytes, &memory, ret_error);
        if (r < 0)
                return r;
        dm->ram->visible_bytes = memory.visible_bytes;
        request.gpa = memory.visible_bytes - bytes;
        dm->added_bytes_total += bytes;
        r = vmwp_channel_send(dm->channel, HV_DM_HOT_ADD_REQUEST, &seg, 1);
        if (r < 0)
                g_warning("dm: cannot send hot-add of %" G_GUINT64_FORMAT " bytes to the guest: %s", bytes,
                          g_strerror(-r));
        return 0;
}

static int grow(VmwpDm *dm, uint64_t bytes, char **ret_error)
{
        uint64_t want = bytes / HV_PAGE_SIZE, room, unballoon, hot_add_pages;
        int64_t deflated = 0;
        int r;

        room = (dm->ram->maximum_bytes - dm->ram->visible_bytes) / HV_PAGE_SIZE;
        vmwp_dm_plan_grow(want, dm->ballooned->len, room, VMWP_DM_UNIT_BYTES / HV_PAGE_SIZE, &unballoon,
                          &hot_add_pages);
        if (unballoon + hot_add_pages == 0) {
                *ret_error = g_strdup_printf("the VM is at its maximum memory (%" G_GUINT64_FORMAT
                                             " bytes) with nothing ballooned",
                                             dm->ram->maximum_bytes);
                return -ENOSPC;
        }
        if (unballoon > 0) {
                deflated = deflate(dm, unballoon, ret_error);
                if (deflated < 0)
                        return (int)deflated;
        }
        if (hot_add_pages > 0) {
                r = hot_add(dm, hot_add_pages * HV_PAGE_SIZE, ret_error);
                if (r < 0 && deflated == 0)
                        return r;
                if (r < 0) /* part of the grow happened: that is the answer, the status says how much */
                        g_clear_pointer(ret_error, g_free);
        }
        dm->add_operations++;
        return 0;
}

static int shrink(VmwpDm *dm, uint64_t bytes)
{
        BalloonRequest req = {
                .id = dm->next_request_id++,
                .remaining = bytes / HV_PAGE_SIZE,
                .sent_us = g_get_monotonic_time(),
        };
        struct hv_dm_balloon_request request = {.request_id = req.id, .n_pages = (uint32_t)req.remaining};
        VmwpSegment seg = {&request, sizeof(request)};
        int r;

        r = vmwp_channel_send(dm->channel, HV_DM_BALLOON_REQUEST, &seg, 1);
        if (r < 0)
                return r;
        g_array_append_val(dm->requests, req);
        return 0;
}

int vmwp_dm_adjust(VmwpDm *dm, int64_t delta_bytes, char **ret_error)
{
        uint64_t bytes = delta_bytes < 0 ? -(uint64_t)delta_bytes : (uint64_t)delta_bytes;
        uint64_t packets;

        if (delta_bytes == 0 || bytes % VMWP_DM_UNIT_BYTES != 0 || bytes / HV_PAGE_SIZE > UINT32_MAX) {
                *ret_error = g_strdup_printf("delta_bytes %" G_GINT64_FORMAT
                                             " must be a non-zero multiple of 2 MiB (2097152) below 16 TiB",
                                             delta_bytes);
                return -EINVAL;
        }
        if (!vmwp_channel_open(dm->channel)) {
                *ret_error = g_strdup("the guest's Dynamic Memory driver is not connected");
                return -ENOTCONN;
        }
        packets = bytes / HV_PAGE_SIZE / HV_DM_PFNS_PER_PACKET + 2;
        if (vmwp_channel_backlog(dm->channel) + packets > VMWP_CHANNEL_BACKLOG_MAX) {
                *ret_error = g_strdup_printf("the guest has %u Dynamic Memory requests still to take",
                                             vmwp_channel_backlog(dm->channel));
                return -EBUSY;
        }
        return delta_bytes > 0 ? grow(dm, bytes, ret_error) : shrink(dm, bytes);
}

/* Closes the requests the guest has left open too long (see the design note). */
static void expire_requests(VmwpDm *dm)
{
        int64_t now = g_get_monotonic_time();

        for (guint i = dm->requests->len; i-- > 0;) {
                const BalloonRequest *req = &g_array_index(dm->requests, BalloonRequest, i);

                if (now - req->sent_us < DM_BALLOON_EXPIRE_US)
                        continue;
                g_message("dm: balloon request %u still wants %" G_GUINT64_FORMAT
                          " pages after %" G_GINT64_FORMAT " s: given up",
                          req->id, req->remaining, (now - req->sent_us) / G_USEC_PER_SEC);
                if (req->accepted > 0)
                        dm->remove_operations++;
                g_array_remove_index(dm->requests, i);
        }
}

void vmwp_dm_status(VmwpDm *dm, VmwpMemoryStatus *ret)
{
        HvClientMemory memory = {
                .visible_bytes = dm->ram->visible_bytes,
                .assigned_bytes = dm->ram->visible_bytes - (uint64_t)dm->ballooned->len * HV_PAGE_SIZE,
                .ballooned_bytes = (uint64_t)dm->ballooned->len * HV_PAGE_SIZE,
        };
        uint64_t pending = 0;

        if (dm->hv->memory_get(dm->hv_userdata, &memory) < 0)
                g_warning("dm: hvd did not report the partition's memory; using the worker's figures");
        expire_requests(dm);
        for (guint i = 0; i < dm->requests->len; i++)
                pending += g_array_index(dm->requests, BalloonRequest, i).remaining;
        *ret = (VmwpMemoryStatus){
                .reporting = vmwp_channel_open(dm->channel) && dm->have_status &&
                             g_get_monotonic_time() - dm->status_us < VMWP_DM_REPORT_STALE_US,
                .guest_time_ns = dm->have_status ? dm->status.time_ns : 0,
                .committed_bytes = dm->have_status ? dm->status.committed_bytes : 0,
                .visible_bytes = memory.visible_bytes,
                .assigned_bytes = memory.assigned_bytes,
                .ballooned_bytes = memory.ballooned_bytes,
                .pending_remove_bytes = pending * HV_PAGE_SIZE,
                .resident_bytes = memory.resident_bytes,
                .page_in_total = dm->have_status ? dm->status.page_in_total : 0,
                .page_out_total = dm->have_status ? dm->status.page_out_total : 0,
                .added_bytes_total = dm->added_bytes_total,
                .removed_bytes_total = dm->removed_bytes_total,
                .add_operations = dm->add_operations,
                .remove_operations = dm->remove_operations,
                .refused_pages = dm->refused_pages,
        };
}

/* ---- Save-VM ---- */

#define DM_SAVED_REQUESTS_MAX 64u /* requests in flight; vmwp_dm_adjust keeps far fewer */

void vmwp_dm_save(const VmwpDm *dm, GByteArray *out)
{
        vmwp_state_put_u32(out, dm->have_status);
        vmwp_state_put_blob(out, &dm->status, sizeof(dm->status));
        vmwp_state_put_u64(out, dm->prompt_reports);
        vmwp_state_put_u32(out, dm->next_request_id);
        vmwp_state_put_u64(out, dm->added_bytes_total);
        vmwp_state_put_u64(out, dm->removed_bytes_total);
        vmwp_state_put_u64(out, dm->add_operations);
        vmwp_state_put_u64(out, dm->remove_operations);
        vmwp_state_put_u64(out, dm->refused_pages);
        vmwp_state_put_u64(out, dm->bad_packets);
        vmwp_state_put_u32(out, dm->requests->len);
        for (guint i = 0; i < dm->requests->len; i++) {
                const BalloonRequest *req = &g_array_index(dm->requests, BalloonRequest, i);

                vmwp_state_put_u32(out, req->id);
                vmwp_state_put_u64(out, req->remaining);
                vmwp_state_put_u64(out, req->accepted);
        }
        vmwp_state_put_u64(out, dm->ballooned->len);
        for (guint i = 0; i < dm->ballooned->len; i++)
                vmwp_state_put_u64(out, g_array_index(dm->ballooned, uint64_t, i));
}

int vmwp_dm_restore(VmwpDm *dm, const uint8_t *data, size_t len, char **ret_error)
{
        VmwpStateReader r = vmwp_state_reader(data, len);
        uint64_t max_pages = dm->ram->maximum_bytes / HV_PAGE_SIZE, n_ballooned;
        uint32_t have_status = vmwp_state_get_u32(&r), status_len, n_requests;
        const uint8_t *status = vmwp_state_get_blob(&r, sizeof(dm->status), &status_len);

        if (!status || status_len != sizeof(dm->status) || have_status > 1) {
                *ret_error = g_strdup("dm: the saved guest report is malformed");
                return -EBADMSG;
        }
        memcpy(&dm->status, status, sizeof(dm->status));
        dm->have_status = have_status;
        dm->status_us = g_get_monotonic_time();
        dm->prompt_reports = vmwp_state_get_u64(&r);
        dm->next_request_id = vmwp_state_get_u32(&r);
        dm->added_bytes_total = vmwp_state_get_u64(&r);
        dm->removed_bytes_total = vmwp_state_get_u64(&r);
        dm->add_operations = vmwp_state_get_u64(&r);
        dm->remove_operations = vmwp_state_get_u64(&r);
        dm->refused_pages = vmwp_state_get_u64(&r);
        dm->bad_packets = vmwp_state_get_u64(&r);
        n_requests = vmwp_state_get_u32(&r);
        if (r.failed || n_requests > DM_SAVED_REQUESTS_MAX) {
                *ret_error = g_strdup_printf("dm: %u saved requests in flight, at most %u", n_requests,
                                             DM_SAVED_REQUESTS_MAX);
                return -EBADMSG;
        }
        g_array_set_size(dm->requests, 0);
        for (uint32_t i = 0; i < n_requests; i++) {
                BalloonRequest req = {.id = vmwp_state_get_u32(&r), .sent_us = g_get_monotonic_time()};

                req.remaining = vmwp_state_get_u64(&r);
                req.accepted = vmwp_state_get_u64(&r);
                if (req.remaining > max_pages || req.accepted > max_pages) {
                        *ret_error = g_strdup_printf(
                                "dm: saved request %u asks for more pages than the VM has", req.id);
                        return -EBADMSG;
                }
                g_array_append_val(dm->requests, req);
        }
        n_ballooned = vmwp_state_get_u64(&r);
        if (r.failed || n_ballooned > dm->ram->visible_bytes / HV_PAGE_SIZE) {
                *ret_error = g_strdup_printf("dm: %" G_GUINT64_FORMAT
                                             " saved ballooned pages, more than visible RAM",
                                             n_ballooned);
                return -EBADMSG;
        }
        g_array_set_size(dm->ballooned, 0);
        for (uint64_t i = 0; i < n_ballooned && !r.failed; i++) {
                uint64_t pfn = vmwp_state_get_u64(&r);

                if (pfn >= dm->ram->visible_bytes / HV_PAGE_SIZE) {
                        *ret_error = g_strdup_printf("dm: saved ballooned page %" G_GUINT64_FORMAT
                                                     " lies outside visible RAM",
                                                     pfn);
                        return -EBADMSG;
                }
                g_array_append_val(dm->ballooned, pfn);
        }
        if (!vmwp_state_done(&r)) {
                *ret_error = g_strdup("dm: the saved state is cut short or has bytes left over");
                return -EBADMSG;
        }
        return 0;
}

const uint64_t *vmwp_dm_ballooned(const VmwpDm *dm, size_t *ret_n)
{
        *ret_n = dm->ballooned->len;
        return (const uint64_t *)dm->ballooned->data;
}
