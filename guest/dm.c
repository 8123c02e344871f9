/* The Dynamic Memory VSC: the status report each second, the balloon (take pages out,
 * give them back), hot-add, and the low-memory notification workloads subscribe to. */
#include "hypercall.h"
#include "vmbus.h"

/*
 * Design note.
 *
 * Status. Once per GUEST_DM_STATUS_PERIOD_NS of reference time (and at once when the
 * channel opens) the guest sends HV_DM_STATUS: committed (the allocator's committed
 * bytes plus what is paged out, see guest_memory_committed_bytes), visible, free,
 * ballooned, and the page-in/out totals. A full ring skips a report, not the next.
 *
 * Prompt reports. A step in demand should not wait up to a second to be heard: at
 * every poll the VSC compares its pressure (committed / held × 100, held = visible −
 * ballooned) with the last one it reported, and reports at once, flagged
 * HV_DM_STATUS_PROMPT, when pressure is at least GUEST_DM_PROMPT_PRESSURE and has risen
 * GUEST_DM_PROMPT_RISE points since. The host runs its balancer on such a report, so it
 * is rate-limited to one per GUEST_DM_PROMPT_INTERVAL_NS, and only rises count: a guest
 * that releases memory can wait for the next second (the host removes slowly anyway).
 * At the default 20 % buffer a guest given what it wants sits near pressure 83, so 90
 * means it has used over half its buffer; the rise keeps a guest that stays short (a
 * host with no room) from reporting more than once a second.
 *
 * Balloon. BALLOON_REQUEST(n) takes up to n free pages with guest_page_take, which
 * only marks them in the allocator's bitmaps: the guest never reads or writes a
 * ballooned page (the host punched it; a read would allocate it again). The page
 * numbers go back in BALLOON_RESPONSE chunks of at most HV_DM_PFNS_PER_PACKET, the
 * last with more = 0. Pages are taken a chunk at a time, just before the chunk is
 * sent, so a chunk that cannot be sent is given straight back.
 *
 * A request the free pages cannot meet stays open (one at a time) while the guest has
 * a way to free more: a pager with resident pages (paging.c pages cold pages out to its
 * disk while guest_dm_balloon_wanted_pages() says the balloon waits, and takes no free
 * frame the balloon is owed) or a low-memory subscriber (told at once; the cache
 * workload trims). Every poll takes what has become free, until the request is met or
 * GUEST_DM_BALLOON_WAIT_NS has passed; then the last chunk goes out, with fewer pages
 * than asked if that is all there was. Without this a guest whose memory is all in use
 * (the memory soaker) could never be squeezed below what it has committed, and a host
 * short of memory could not take back what the balancer decides (pressure could not be
 * equalised). The wait is bounded so the host's pending remove always ends; a new
 * request closes the open one first, and so does memory coming back (unballoon or
 * hot-add: the host has changed its mind, and the balloon must not eat what it adds). UNBALLOON_REQUEST gives
 * listed pages back only if the balloon holds them (guest_page_give_back refuses others and duplicates) and
 * answers how many it accepted (the console gets one line per second summing them, as
 * a large deflate comes as many requests). HOT_ADD_REQUEST adds the range to the
 * allocator, all or nothing, and answers the bytes accepted.
 *
 * Low memory. Memory is low when free < GUEST_LOW_MEMORY_PERCENT % of the memory the
 * guest holds now (visible minus ballooned), and never less than
 * GUEST_LOW_MEMORY_FLOOR_BYTES. Subscribers are told (a) while memory is low, at most
 * once per GUEST_LOW_MEMORY_PERIOD_NS, checked at every poll, and (b) at once after a
 * balloon request that leaves memory low or could not be met in full: the host wants
 * memory back, so caches should shrink now.
 *
 * The channel's requests are served one at a time, in ring order, from
 * guest_vmbus_poll on VP 0; replies wait (without polling) up to
 * GUEST_DM_SEND_TIMEOUT_NS for ring space and are dropped with a line after that.
 */

#define GUEST_DM_RING_PAGES 4
#define GUEST_DM_STATUS_PERIOD_NS GUEST_NS_PER_SEC
#define GUEST_DM_PROMPT_PRESSURE 90
#define GUEST_DM_PROMPT_RISE 10
#define GUEST_DM_PROMPT_INTERVAL_NS (200 * GUEST_NS_PER_MS)
#define GUEST_DM_SEND_TIMEOUT_NS (2 * GUEST_NS_PER_SEC)
#define GUEST_DM_BALLOON_WAIT_NS (2 * GUEST_NS_PER_SEC)
#define GUEST_DM_BALLOON_POLL_NS (10 * GUEST_NS_PER_MS)
#define GUEST_DM_SUMMARY_PERIOD_NS GUEST_NS_PER_SEC
#define GUEST_LOW_MEMORY_PERCENT 10
#define GUEST_LOW_MEMORY_FLOOR_BYTES (4 * GUEST_MIB)
#define GUEST_LOW_MEMORY_PERIOD_NS GUEST_NS_PER_SEC
#define GUEST_LOW_MEMORY_MAX_SUBSCRIBERS 4

struct guest_low_memory_subscriber {
        guest_low_memory_fn *fn;
        void *userdata;
};

/* The balloon request being filled. */
struct guest_dm_balloon {
        bool open;
        uint32_t request_id;
        uint32_t asked;
        uint64_t remaining;
        uint64_t taken;
        uint64_t start_ns;
        uint64_t deadline_ns;
};

struct guest_dm {
        struct guest_vmbus_channel *channel;
        struct guest_dm_balloon balloon;
        uint64_t next_status_ns;
        uint64_t status_sent;
        uint64_t status_skipped;
        uint64_t last_status_ns;       /* when the last report went out; 0: none yet */
        uint64_t last_status_pressure; /* its pressure */
        uint64_t prompt_sent;
        struct guest_low_memory_subscriber subscribers[GUEST_LOW_MEMORY_MAX_SUBSCRIBERS];
        unsigned n_subscribers;
        uint64_t low_memory_last_ns;
        bool low_memory_raised; /* ever: last_ns is meaningful */
        /* Unballoon requests come a page list (<= HV_DM_PFNS_PER_PACKET) at a time: they
         * are summed into one line per GUEST_DM_SUMMARY_PERIOD_NS. */
        uint64_t unballoon_requests;
        uint64_t unballoon_asked;
        uint64_t unballoon_accepted;
        uint64_t unballoon_first_id;
        uint64_t next_summary_ns;
        /* The page list of the request being served: a response chunk, or the pages
         * of an unballoon request. */
        uint64_t pfns[HV_DM_PFNS_PER_PACKET];
};

/* One Dynamic Memory device per guest, served on VP 0. */
static struct guest_dm guest_dm;

/* ---- Low memory ---- */

int guest_dm_low_memory_subscribe(guest_low_memory_fn *fn, void *userdata)
{
        struct guest_dm *dm = &guest_dm;

        if (dm->n_subscribers == GUEST_LOW_MEMORY_MAX_SUBSCRIBERS)
                return -ENOMEM;
        dm->subscribers[dm->n_subscribers++] = (struct guest_low_memory_subscriber){fn, userdata};
        return 0;
}

uint64_t guest_dm_low_memory_threshold_bytes(void)
{
        uint64_t held = guest_page_visible_bytes() - guest_page_taken_bytes();
        uint64_t threshold = held / 100 * GUEST_LOW_MEMORY_PERCENT;

        return threshold > GUEST_LOW_MEMORY_FLOOR_BYTES ? threshold : GUEST_LOW_MEMORY_FLOOR_BYTES;
}

static void guest_dm_raise_low_memory(uint64_t now_ns)
{
        struct guest_dm *dm = &guest_dm;
        uint64_t threshold = guest_dm_low_memory_threshold_bytes();

        dm->low_memory_last_ns = now_ns;
        dm->low_memory_raised = true;
        for (unsigned i = 0; i < dm->n_subscribers; i++)
                dm->subscribers[i].fn(dm->subscribers[i].userdata, guest_page_free_bytes(), threshold);
}

void guest_dm_check_low_memory(uint64_t now_ns)
{
        struct guest_dm *dm = &guest_dm;

        if (dm->n_subscribers == 0 || guest_page_free_bytes() >= guest_dm_low_memory_threshold_bytes())
                return;
        if (dm->low_memory_raised && now_ns - dm->low_memory_last_ns < GUEST_LOW_MEMORY_PERIOD_NS)
                return;
        guest_dm_raise_low_memory(now_ns);
}

/* ---- Status ---- */

static void guest_dm_balloon_fill(struct guest_dm *dm, uint64_t now_ns, bool can_wait);
static bool guest_dm_can_reclaim(const struct guest_dm *dm);

/* committed / held × 100; held is what the guest has now (visible − ballooned). */
static uint64_t guest_dm_pressure(uint64_t committed)
{
        uint64_t held = guest_page_visible_bytes() - guest_page_taken_bytes();

        return held ? committed / (held / 100 ? held / 100 : 1) : UINT64_MAX;
}

static void guest_dm_send_status(struct guest_dm *dm, uint64_t now_ns, uint32_t flags)
{
        struct hv_dm_status status = {
                .time_ns = now_ns,
                .committed_bytes = guest_memory_committed_bytes(),
                .visible_bytes = guest_page_visible_bytes(),
                .free_bytes = guest_page_free_bytes(),
                .ballooned_bytes = guest_page_taken_bytes(),
                .page_in_total = guest_paging_in_total(),
                .page_out_total = guest_paging_out_total(),
                .flags = flags,
        };
        struct guest_vmbus_segment seg = {&status, sizeof(status)};

        if (guest_vmbus_send(dm->channel, HV_DM_STATUS, &seg, 1) < 0) {
                dm->status_skipped++;
                return;
        }
        dm->status_sent++;
        dm->last_status_ns = now_ns;
        dm->last_status_pressure = guest_dm_pressure(status.committed_bytes);
}

/* A report at once when pressure has stepped up (see the design note). */
static void guest_dm_check_prompt(struct guest_dm *dm, uint64_t now_ns)
{
        uint64_t pressure, last = dm->last_status_pressure;

        if (!dm->last_status_ns || now_ns - dm->last_status_ns < GUEST_DM_PROMPT_INTERVAL_NS)
                return;
        pressure = guest_dm_pressure(guest_memory_committed_bytes());
        if (pressure < GUEST_DM_PROMPT_PRESSURE || pressure < last + GUEST_DM_PROMPT_RISE)
                return;
        guest_dm_send_status(dm, now_ns, HV_DM_STATUS_PROMPT);
        dm->prompt_sent++;
        guest_printf("dm: prompt report pressure=%lu (last reported %lu) committed=%lu\n", pressure, last,
                     guest_memory_committed_bytes());
}

static void guest_dm_print_unballoon(struct guest_dm *dm, uint64_t now_ns)
{
        guest_printf("dm: unballoon requests=%lu first=%lu asked=%lu accepted=%lu ballooned=%lu free=%lu\n",
                     dm->unballoon_requests, dm->unballoon_first_id, dm->unballoon_asked,
                     dm->unballoon_accepted, guest_page_taken_bytes(), guest_page_free_bytes());
        dm->unballoon_requests = dm->unballoon_asked = dm->unballoon_accepted = 0;
        dm->next_summary_ns = now_ns + GUEST_DM_SUMMARY_PERIOD_NS;
}

static uint64_t guest_dm_tick(struct guest_vmbus_channel *channel, uint64_t now_ns)
{
        struct guest_dm *dm = &guest_dm;

        (void)channel;
        if (dm->unballoon_requests && now_ns >= dm->next_summary_ns)
                guest_dm_print_unballoon(dm, now_ns);
        guest_dm_check_prompt(dm, now_ns);
        if (dm->balloon.open)
                guest_dm_balloon_fill(dm, now_ns, guest_dm_can_reclaim(dm));
        if (now_ns >= dm->next_status_ns) {
                guest_dm_send_status(dm, now_ns, 0);
                /* Keep the phase: a late poll does not push every later report back. */
                dm->next_status_ns += GUEST_DM_STATUS_PERIOD_NS;
                if (dm->next_status_ns <= now_ns)
                        dm->next_status_ns = now_ns + GUEST_DM_STATUS_PERIOD_NS;
        }
        if (dm->balloon.open && now_ns + GUEST_DM_BALLOON_POLL_NS < dm->next_status_ns)
                return now_ns + GUEST_DM_BALLOON_POLL_NS;
        if (dm->unballoon_requests && dm->next_summary_ns < dm->next_status_ns)
                return dm->next_summary_ns;
        return dm->next_status_ns;
}

/* ---- Requests ---- */

static int guest_dm_reply(struct guest_dm *dm, uint16_t type, const void *reply, uint32_t len,
                          const void *extra, uint32_t extra_len)
{
        struct guest_vmbus_segment segs[2] = {{reply, len}, {extra, extra_len}};
        int r = guest_vmbus_send_wait(dm->channel, type, segs, extra_len ? 2 : 1, GUEST_DM_SEND_TIMEOUT_NS);

        if (r < 0)
                guest_printf("dm: cannot send reply type %u: error %d\n", type, r);
        return r;
}

uint64_t guest_dm_balloon_wanted_pages(void)
{
        return guest_dm.balloon.open ? guest_dm.balloon.remaining : 0;
}

/* Sends what is free now of the open request, a chunk at a time; closes it when met, when
 * nothing in the guest can free more, or at its deadline (then possibly with an empty
 * last chunk). */
static void guest_dm_balloon_fill(struct guest_dm *dm, uint64_t now_ns, bool can_wait)
{
        struct guest_dm_balloon *b = &dm->balloon;
        bool last;

        do {
                uint64_t want = b->remaining < HV_DM_PFNS_PER_PACKET ? b->remaining : HV_DM_PFNS_PER_PACKET;
                uint64_t got = guest_page_take(want, dm->pfns);
                struct hv_dm_balloon_response response = {.request_id = b->request_id,
                                                          .n_pfns = (uint32_t)got};

                last = b->remaining == got || (got < want && (!can_wait || now_ns >= b->deadline_ns));
                if (got == 0 && !last)
                        return; /* nothing free yet: the next poll looks again */
                response.more = !last;
                if (guest_dm_reply(dm, HV_DM_BALLOON_RESPONSE, &response, sizeof(response), dm->pfns,
                                   (uint32_t)(got * sizeof(dm->pfns[0]))) < 0) {
                        /* The host never saw these: they are still the guest's. The host's
                         * pending remove ends when the worker gives up on the request. */
                        guest_page_give_back(dm->pfns, got);
                        last = true;
                        break;
                }
                b->remaining -= got;
                b->taken += got;
        } while (!last);
        b->open = false;
        guest_printf("dm: balloon request=%u asked=%u took=%lu in %lu us ballooned=%lu free=%lu\n",
                     b->request_id, b->asked, b->taken, (guest_hv_reference_time() - b->start_ns) / 1000,
                     guest_page_taken_bytes(), guest_page_free_bytes());
}

/* The host gives memory back (unballoon, hot-add): it no longer wants the pages the open
 * request still waits for, and the balloon must not eat what it gives. */
static void guest_dm_balloon_close(struct guest_dm *dm)
{
        struct guest_dm_balloon *b = &dm->balloon;

        if (!b->open)
                return;
        b->remaining = 0; /* an empty last chunk */
        guest_dm_balloon_fill(dm, guest_hv_reference_time(), false);
}

static bool guest_dm_can_reclaim(const struct guest_dm *dm)
{
        return guest_paging_can_reclaim() || dm->n_subscribers > 0;
}

static void guest_dm_balloon(struct guest_dm *dm, const struct hv_dm_balloon_request *request)
{
        uint64_t now = guest_hv_reference_time();

        if (dm->balloon.open) /* the host asks again: what the last one could not get ends now */
                guest_dm_balloon_fill(dm, now, false);
        dm->balloon = (struct guest_dm_balloon){
                .open = true,
                .request_id = request->request_id,
                .asked = request->n_pages,
                .remaining = request->n_pages,
                .start_ns = now,
                .deadline_ns = now + GUEST_DM_BALLOON_WAIT_NS,
        };
        guest_dm_balloon_fill(dm, now, guest_dm_can_reclaim(dm));
        if (!dm->balloon.open && guest_page_free_bytes() >= guest_dm_low_memory_threshold_bytes())
                return;
        /* Short, or left low: caches shrink now, and what they free goes to the balloon at once. */
        guest_dm_raise_low_memory(now);
        if (dm->balloon.open)
                guest_dm_balloon_fill(dm, now, guest_dm_can_reclaim(dm));
}

static void guest_dm_unballoon(struct guest_dm *dm, const struct guest_vmbus_packet *packet)
{
        struct hv_dm_unballoon_request request;
        struct hv_dm_unballoon_response response;
        uint64_t accepted;

        guest_vmbus_packet_copy(packet, 0, &request, sizeof(request));
        if (request.n_pfns > HV_DM_PFNS_PER_PACKET ||
            packet->length < sizeof(request) + request.n_pfns * sizeof(uint64_t)) {
                guest_vmbus_complain("dm: dropping unballoon request %u: %u pages in a %u-byte packet\n",
                                     request.request_id, request.n_pfns, packet->length);
                return;
        }
        guest_dm_balloon_close(dm);
        guest_vmbus_packet_copy(packet, sizeof(request), dm->pfns,
                                request.n_pfns * (uint32_t)sizeof(uint64_t));
        accepted = guest_page_give_back(dm->pfns, request.n_pfns);
        response = (struct hv_dm_unballoon_response){
                .request_id = request.request_id,
                .n_accepted = (uint32_t)accepted,
        };
        if (dm->unballoon_requests++ == 0)
                dm->unballoon_first_id = request.request_id;
        dm->unballoon_asked += request.n_pfns;
        dm->unballoon_accepted += accepted;
        guest_dm_reply(dm, HV_DM_UNBALLOON_RESPONSE, &response, sizeof(response), NULL, 0);
}

static void guest_dm_hot_add(struct guest_dm *dm, const struct hv_dm_hot_add_request *request)
{
        struct hv_dm_hot_add_response response = {.request_id = request->request_id};
        int r;

        guest_dm_balloon_close(dm);
        r = guest_page_add_range(request->gpa, request->bytes);

        if (r == 0)
                response.bytes_accepted = request->bytes;
        guest_printf("dm: hot-add request=%u gpa=0x%lx bytes=%lu accepted=%lu%s visible=%lu\n",
                     request->request_id, request->gpa, request->bytes, response.bytes_accepted,
                     r == -EEXIST   ? " (overlaps present memory)"
                     : r == -ERANGE ? " (beyond the maximum)"
                     : r == -EINVAL ? " (not whole pages)"
                     : r < 0        ? " (too many ranges)"
                                    : "",
                     guest_page_visible_bytes());
        guest_dm_reply(dm, HV_DM_HOT_ADD_RESPONSE, &response, sizeof(response), NULL, 0);
}

static void guest_dm_packet(struct guest_vmbus_channel *channel, const struct guest_vmbus_packet *packet)
{
        struct guest_dm *dm = &guest_dm;
        union {
                struct hv_dm_balloon_request balloon;
                struct hv_dm_hot_add_request hot_add;
        } request;
        uint32_t need;

        (void)channel;
        switch (packet->type) {
        case HV_DM_BALLOON_REQUEST:
                need = sizeof(request.balloon);
                break;
        case HV_DM_UNBALLOON_REQUEST:
                need = sizeof(struct hv_dm_unballoon_request);
                break;
        case HV_DM_HOT_ADD_REQUEST:
                need = sizeof(request.hot_add);
                break;
        default:
                guest_vmbus_complain("dm: dropping packet of unknown type %u (%u bytes)\n", packet->type,
                                     packet->length);
                return;
        }
        if (packet->length < need) {
                guest_vmbus_complain("dm: dropping packet type %u of %u bytes, expected %u\n", packet->type,
                                     packet->length, need);
                return;
        }
        switch (packet->type) {
        case HV_DM_BALLOON_REQUEST:
                guest_vmbus_packet_copy(packet, 0, &request.balloon, sizeof(request.balloon));
                guest_dm_balloon(dm, &request.balloon);
                break;
        case HV_DM_UNBALLOON_REQUEST:
                guest_dm_unballoon(dm, packet);
                break;
        case HV_DM_HOT_ADD_REQUEST:
                guest_vmbus_packet_copy(packet, 0, &request.hot_add, sizeof(request.hot_add));
                guest_dm_hot_add(dm, &request.hot_add);
                break;
        }
}

static void guest_dm_opened(struct guest_vmbus_channel *channel)
{
        struct guest_dm *dm = &guest_dm;

        dm->channel = channel;
        dm->next_status_ns = guest_hv_reference_time(); /* the first report at the next tick */
}

const struct guest_vmbus_driver guest_dm_driver = {
        .name = "dynamic-memory",
        .device_class = HV_VMBUS_CLASS_DYNAMIC_MEMORY,
        .ring_pages = GUEST_DM_RING_PAGES,
        .opened = guest_dm_opened,
        .packet = guest_dm_packet,
        .tick = guest_dm_tick,
};
