/* The worker's VMBus host, Dynamic Memory and storage VSPs against a scripted guest in
 * ordinary memory and a fake hvd: the handshake, OPEN's page checks, corrupt rings,
 * balloon pages refused one by one, grow split between deflate and hot-add, and the
 * paging disk's slot checks. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/mman.h>

#include "vmwp-dm.h"
#include "vmwp-storage.h"
#include "vmwp-vmbus.h"

#define MiB (1ull << 20)
#define VISIBLE (16 * MiB)
#define MAXIMUM (32 * MiB)
#define MESSAGE_PFN 16u
#define RING_PAGES 4u
#define DM_CHANNEL 1u
#define STORAGE_CHANNEL 2u

/* ---- A fake hvd: pages are ballooned in a set, as hvd's bitmap would hold them ---- */

typedef struct FakeHv {
        VmwpGuestRam *ram;
        GHashTable *ballooned; /* pfn + 1 */
        uint64_t hot_added;
        uint32_t hot_adds;
        uint32_t unballoon_calls;
        int signals;
        bool pool_empty;
} FakeHv;

static int fake_signal(void *userdata)
{
        ((FakeHv *)userdata)->signals++;
        return 0;
}

static int fake_hot_add(void *userdata, uint64_t bytes, HvClientMemory *ret, char **ret_error)
{
        FakeHv *hv = userdata;

        if (hv->pool_empty) {
                *ret_error = g_strdup("pool empty");
                return -ENOMEM;
        }
        hv->hot_added += bytes;
        hv->hot_adds++;
        *ret = (HvClientMemory){.visible_bytes = hv->ram->visible_bytes + bytes};
        return 0;
}

static int fake_pages(FakeHv *hv, bool to_balloon, const uint64_t *pfns, size_t n, bool *ret_accepted)
{
        g_autoptr(GHashTable) seen = g_hash_table_new(g_direct_hash, NULL);

        for (size_t i = 0; i < n; i++) {
                gpointer key = GSIZE_TO_POINTER(pfns[i] + 1);
                bool ok = pfns[i] < hv->ram->visible_bytes / HV_PAGE_SIZE && g_hash_table_add(seen, key) &&
                          g_hash_table_contains(hv->ballooned, key) != to_balloon;

                ret_accepted[i] = ok;
                if (ok && to_balloon)
                        g_hash_table_add(hv->ballooned, key);
                else if (ok)
                        g_hash_table_remove(hv->ballooned, key);
        }
        return 0;
}

static int fake_balloon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                        HvClientPageTally *tally, char **ret_error)
{
        (void)tally;
        (void)ret_error;
        return fake_pages(userdata, true, pfns, n, ret_accepted);
}

static int fake_unballoon(void *userdata, const uint64_t *pfns, size_t n, bool *ret_accepted,
                          HvClientPageTally *tally, char **ret_error)
{
        FakeHv *hv = userdata;

        (void)tally;
        hv->unballoon_calls++;
        if (hv->pool_empty) {
                *ret_error = g_strdup("pool empty");
                return -ENOMEM;
        }
        return fake_pages(hv, false, pfns, n, ret_accepted);
}

static int fake_memory_get(void *userdata, HvClientMemory *ret)
{
        FakeHv *hv = userdata;
        uint64_t ballooned = g_hash_table_size(hv->ballooned) * HV_PAGE_SIZE;

        *ret = (HvClientMemory){.visible_bytes = hv->ram->visible_bytes,
                                .assigned_bytes = hv->ram->visible_bytes - ballooned,
                                .ballooned_bytes = ballooned};
        return 0;
}

static const VmwpDmHvOps fake_hv_ops = {
        .hot_add = fake_hot_add,
        .balloon = fake_balloon,
        .unballoon = fake_unballoon,
        .memory_get = fake_memory_get,
};

/* ---- The scripted guest ---- */

typedef struct Fixture {
        uint8_t *ram;
        VmwpGuestRam guest_ram;
        FakeHv hv;
        VmwpVmbus *bus;
        VmwpDm *dm;
        VmwpStorage *storage;
        char *paging_path;
        VmwpRing to_host[3];   /* per channel id: the guest writes */
        VmwpRing from_host[3]; /* the guest reads */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *why = NULL;
        g_autofree char *dir = g_dir_make_tmp("vmwp-vmbus-XXXXXX", &error);

        (void)data;
        memset(f, 0, sizeof(*f));
        f->ram = mmap(NULL, MAXIMUM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        g_assert_true(f->ram != MAP_FAILED);
        f->guest_ram = (VmwpGuestRam){.ram = f->ram, .maximum_bytes = MAXIMUM, .visible_bytes = VISIBLE};
        f->hv.ram = &f->guest_ram;
        f->hv.ballooned = g_hash_table_new(g_direct_hash, NULL);
        g_assert_cmpint(vmwp_vmbus_new(&f->guest_ram, fake_signal, &f->hv, &f->bus), ==, 0);
        g_assert_cmpint(vmwp_dm_new(f->bus, &f->guest_ram, &fake_hv_ops, &f->hv, &f->dm), ==, 0);
        f->paging_path = g_build_filename(dir, "disk.paging", NULL);
        g_assert_cmpint(vmwp_storage_new(f->bus, f->paging_path, 8, &f->storage, &why), ==, 0);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
        g_autofree char *dir = g_path_get_dirname(f->paging_path);

        (void)data;
        vmwp_storage_free(f->storage);
        g_assert_false(g_file_test(f->paging_path, G_FILE_TEST_EXISTS)); /* removed at exit */
        g_rmdir(dir);
        g_free(f->paging_path);
        vmwp_dm_free(f->dm);
        vmwp_vmbus_free(f->bus);
        g_hash_table_unref(f->hv.ballooned);
        munmap(f->ram, MAXIMUM);
}

static void post(Fixture *f, const void *message, size_t len)
{
        vmwp_vmbus_queue_message(f->bus, message, len);
        while (vmwp_vmbus_process(f->bus))
                ;
}

static void signal_host(Fixture *f, uint32_t connection_id)
{
        vmwp_vmbus_queue_signal(f->bus, connection_id);
        while (vmwp_vmbus_process(f->bus))
                ;
}

/* Takes every message out of the message page, in slot order. */
static GArray *take_messages(Fixture *f)
{
        struct hv_message *slots = (struct hv_message *)(f->ram + MESSAGE_PFN * HV_PAGE_SIZE);
        GArray *out = g_array_new(FALSE, TRUE, sizeof(struct hv_message));

        for (uint32_t i = 0; i < HV_MESSAGE_SLOTS; i++) {
                if (slots[i].type == HV_VMBUS_MSG_NONE)
                        continue;
                g_array_append_vals(out, &slots[i], 1);
                slots[i].type = HV_VMBUS_MSG_NONE;
        }
        return out;
}

static void initiate(Fixture *f, uint32_t version)
{
        struct hv_vmbus_initiate m = {.type = HV_VMBUS_MSG_INITIATE,
                                      .version = version,
                                      .message_page_gpa = MESSAGE_PFN * HV_PAGE_SIZE};

        post(f, &m, sizeof(m));
}

/* OPEN with rings at 100 + 10 * channel_id; returns the OPEN_RESULT status. */
static int32_t open_channel(Fixture *f, uint32_t channel_id, struct hv_vmbus_open *open, size_t len)
{
        g_autoptr(GArray) messages = NULL;
        struct hv_vmbus_open_result result = {.status = 1};

        post(f, open, len);
        messages = take_messages(f);
        for (guint i = 0; i < messages->len; i++) {
                const struct hv_message *m = &g_array_index(messages, struct hv_message, i);

                if (m->type == HV_VMBUS_MSG_OPEN_RESULT)
                        memcpy(&result, m->payload, sizeof(result));
        }
        g_assert_cmpint(result.status, !=, 1);
        if (result.status == 0) {
                uint8_t *pages[HV_VMBUS_OPEN_MAX_PAGES];

                for (uint32_t i = 0; i < 2 * open->ring_pages; i++)
                        pages[i] = f->ram + open->pfns[i] * HV_PAGE_SIZE;
                g_assert_cmpint(vmwp_ring_init(&f->to_host[channel_id], pages, open->ring_pages, false), ==,
                                0);
                g_assert_cmpint(vmwp_ring_init(&f->from_host[channel_id], pages + open->ring_pages,
                                               open->ring_pages, true),
                                ==, 0);
        }
        return result.status;
}

static struct hv_vmbus_open open_message(uint32_t channel_id)
{
        struct hv_vmbus_open open = {
                .type = HV_VMBUS_MSG_OPEN, .channel_id = channel_id, .ring_pages = RING_PAGES};

        for (uint32_t i = 0; i < 2 * RING_PAGES; i++)
                open.pfns[i] = 100 + 10 * channel_id + i;
        return open;
}

static void connect_all(Fixture *f)
{
        struct hv_vmbus_open open;

        initiate(f, HV_VMBUS_VERSION);
        g_array_unref(take_messages(f));
        open = open_message(DM_CHANNEL);
        g_assert_cmpint(open_channel(f, DM_CHANNEL, &open, sizeof(open)), ==, 0);
        open = open_message(STORAGE_CHANNEL);
        g_assert_cmpint(open_channel(f, STORAGE_CHANNEL, &open, sizeof(open)), ==, 0);
}

static void guest_send(Fixture *f, uint32_t channel_id, uint16_t type, const void *a, uint32_t alen,
                       const void *b, uint32_t blen)
{
        VmwpSegment segs[] = {{a, alen}, {b, blen}};

        g_assert_cmpint(vmwp_ring_write(&f->to_host[channel_id], type, segs, b ? 2 : 1), ==, 0);
        signal_host(f, channel_id);
}

static bool guest_receive(Fixture *f, uint32_t channel_id, VmwpPacket *ret)
{
        return vmwp_ring_read(&f->from_host[channel_id], ret) == 0;
}

/* ---- Handshake ---- */

static void test_initiate_gets_the_version_then_one_offer_per_device(Fixture *f, gconstpointer data)
{
        g_autoptr(GArray) messages = NULL;
        const struct hv_message *m;
        struct hv_vmbus_version_response version;
        struct hv_vmbus_offer offer;

        (void)data;
        initiate(f, HV_VMBUS_VERSION);
        messages = take_messages(f);
        g_assert_cmpuint(messages->len, ==, 3);
        m = &g_array_index(messages, struct hv_message, 0);
        g_assert_cmpuint(m->type, ==, HV_VMBUS_MSG_VERSION_RESPONSE);
        memcpy(&version, m->payload, sizeof(version));
        g_assert_cmpuint(version.accepted, ==, 1);
        for (guint i = 1; i < 3; i++) {
                m = &g_array_index(messages, struct hv_message, i);
                g_assert_cmpuint(m->type, ==, HV_VMBUS_MSG_OFFER);
                g_assert_cmpuint(m->size, ==, sizeof(offer));
                memcpy(&offer, m->payload, sizeof(offer));
                g_assert_cmpuint(offer.channel_id, ==, i);
                g_assert_cmpuint(offer.connection_id, ==, i);
                g_assert_cmpuint(offer.device_class, ==,
                                 i == 1 ? HV_VMBUS_CLASS_DYNAMIC_MEMORY : HV_VMBUS_CLASS_STORAGE);
                g_assert_cmpuint(offer.min_ring_pages, >=, 2);
        }
        g_assert_cmpint(f->hv.signals, ==, 1); /* once for the batch */
}

static void test_initiate_with_another_version_is_refused_without_offers(Fixture *f, gconstpointer data)
{
        g_autoptr(GArray) messages = NULL;
        struct hv_vmbus_version_response version;
        struct hv_vmbus_open open = open_message(DM_CHANNEL);

        (void)data;
        initiate(f, HV_VMBUS_VERSION + 1);
        messages = take_messages(f);
        g_assert_cmpuint(messages->len, ==, 1);
        memcpy(&version, g_array_index(messages, struct hv_message, 0).payload, sizeof(version));
        g_assert_cmpuint(version.accepted, ==, 0);
        post(f, &open, sizeof(open)); /* not connected: dropped */
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->bad_messages, ==, 1);
}

typedef struct BadMessageCase {
        const char *name;
        uint32_t type;
        uint32_t len;
        uint64_t message_page_gpa;
} BadMessageCase;

static const BadMessageCase bad_message_cases[] = {
        {"initiate_naming_a_page_outside_ram_is_ignored", HV_VMBUS_MSG_INITIATE, 16, VISIBLE},
        {"initiate_naming_an_unaligned_page_is_ignored", HV_VMBUS_MSG_INITIATE, 16, MESSAGE_PFN * 4096 + 8},
        {"initiate_cut_short_is_ignored", HV_VMBUS_MSG_INITIATE, 12, MESSAGE_PFN * 4096},
        {"message_of_unknown_type_is_ignored", 99, 16, MESSAGE_PFN * 4096},
        {"message_shorter_than_its_type_is_ignored", HV_VMBUS_MSG_INITIATE, 2, MESSAGE_PFN * 4096},
};

static void test_bad_message(Fixture *f, gconstpointer data)
{
        const BadMessageCase *tc = data;
        struct hv_vmbus_initiate m = {
                .type = tc->type, .version = HV_VMBUS_VERSION, .message_page_gpa = tc->message_page_gpa};
        g_autoptr(GArray) messages = NULL;

        post(f, &m, tc->len);
        messages = take_messages(f);
        g_assert_cmpuint(messages->len, ==, 0);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->bad_messages, ==, 1);
        g_assert_cmpint(f->hv.signals, ==, 0);
}

typedef struct OpenCase {
        const char *name;
        uint32_t channel_id;
        uint32_t ring_pages;
        int bad_index; /* -1: none; else this pfn is replaced by bad_pfn */
        uint64_t bad_pfn;
        uint32_t cut;       /* bytes cut off the message's end */
        bool corrupt_index; /* the to-host ring's header says read_index = 12 */
        int32_t expect;
} OpenCase;

static const OpenCase open_cases[] = {
        {"open_with_good_pages_succeeds", DM_CHANNEL, RING_PAGES, -1, 0, 0, false, 0},
        {"open_with_the_largest_rings_succeeds", DM_CHANNEL, VMWP_RING_MAX_PAGES, -1, 0, 0, false, 0},
        {"open_with_a_page_outside_visible_ram_is_denied", DM_CHANNEL, RING_PAGES, 3, VISIBLE / 4096, 0,
         false, -HV_STATUS_ACCESS_DENIED},
        {"open_with_a_page_number_that_overflows_is_denied", DM_CHANNEL, RING_PAGES, 0, UINT64_MAX, 0, false,
         -HV_STATUS_ACCESS_DENIED},
        {"open_with_the_message_page_is_denied", DM_CHANNEL, RING_PAGES, 5, MESSAGE_PFN, 0, false,
         -HV_STATUS_ACCESS_DENIED},
        {"open_naming_a_page_twice_is_refused", DM_CHANNEL, RING_PAGES, 7, 102, 0, false,
         -HV_STATUS_INVALID_PARAMETER},
        {"open_with_fewer_pages_than_offered_is_refused", DM_CHANNEL, 2, -1, 0, 0, false,
         -HV_STATUS_INVALID_PARAMETER},
        {"open_with_more_pages_than_fit_is_refused", DM_CHANNEL, VMWP_RING_MAX_PAGES + 1, -1, 0, 0, false,
         -HV_STATUS_INVALID_PARAMETER},
        {"open_of_an_unknown_channel_is_refused", 9, RING_PAGES, -1, 0, 0, false,
         -HV_STATUS_INVALID_PARAMETER},
        {"open_whose_page_list_is_cut_short_is_refused", DM_CHANNEL, RING_PAGES, -1, 0, 200, false,
         -HV_STATUS_INVALID_PARAMETER},
        {"open_of_a_ring_with_an_impossible_index_is_refused", DM_CHANNEL, RING_PAGES, -1, 0, 0, true,
         -HV_STATUS_INVALID_PARAMETER},
};

static void test_open(Fixture *f, gconstpointer data)
{
        const OpenCase *tc = data;
        struct hv_vmbus_open open = open_message(DM_CHANNEL);

        initiate(f, HV_VMBUS_VERSION);
        g_array_unref(take_messages(f));
        open.channel_id = tc->channel_id;
        open.ring_pages = tc->ring_pages;
        for (uint32_t i = 0; i < HV_VMBUS_OPEN_MAX_PAGES; i++)
                open.pfns[i] = 100 + i;
        if (tc->bad_index >= 0)
                open.pfns[tc->bad_index] = tc->bad_pfn;
        if (tc->corrupt_index)
                ((struct hv_ring_header *)(f->ram + open.pfns[0] * HV_PAGE_SIZE))->read_index = 12;
        g_assert_cmpint(open_channel(f, DM_CHANNEL, &open, sizeof(open) - tc->cut), ==, tc->expect);
        g_assert_cmpint(vmwp_vmbus_page_in_use(f->bus, open.pfns[1]), ==, tc->expect == 0);
}

static void test_second_open_of_an_open_channel_is_denied(Fixture *f, gconstpointer data)
{
        struct hv_vmbus_open open = open_message(DM_CHANNEL);

        (void)data;
        connect_all(f);
        for (uint32_t i = 0; i < 2 * RING_PAGES; i++)
                open.pfns[i] = 300 + i;
        g_assert_cmpint(open_channel(f, DM_CHANNEL, &open, sizeof(open)), ==, -HV_STATUS_ACCESS_DENIED);
}

static void test_open_with_another_channels_ring_page_is_denied(Fixture *f, gconstpointer data)
{
        struct hv_vmbus_open open = open_message(DM_CHANNEL);

        (void)data;
        initiate(f, HV_VMBUS_VERSION);
        g_array_unref(take_messages(f));
        g_assert_cmpint(open_channel(f, DM_CHANNEL, &open, sizeof(open)), ==, 0);
        open = open_message(STORAGE_CHANNEL);
        open.pfns[2] = 100 + 10 * DM_CHANNEL + 2;
        g_assert_cmpint(open_channel(f, STORAGE_CHANNEL, &open, sizeof(open)), ==, -HV_STATUS_ACCESS_DENIED);
}

/* ---- Rings in use ---- */

static void test_corrupt_ring_drops_the_channel_and_counts(Fixture *f, gconstpointer data)
{
        struct hv_ring_header *header;
        g_autofree char *why = NULL;

        (void)data;
        connect_all(f);
        header = f->to_host[DM_CHANNEL].header;
        header->write_index = 8 * 4096 + 8; /* past the data area */
        signal_host(f, DM_CHANNEL);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->corrupt_rings, ==, 1);
        g_assert_cmpint(vmwp_dm_adjust(f->dm, -(int64_t)(2 * MiB), &why), ==, -ENOTCONN);
        g_assert_false(vmwp_vmbus_page_in_use(f->bus, 100 + 10 * DM_CHANNEL));
        signal_host(f, DM_CHANNEL); /* later signals for it are counted, not acted on */
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->bad_signals, ==, 1);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->corrupt_rings, ==, 1);
}

static void test_packet_longer_than_what_was_written_drops_the_channel(Fixture *f, gconstpointer data)
{
        struct hv_packet_header lie = {.type = HV_DM_STATUS, .length = 4000};
        VmwpRing *ring;

        (void)data;
        connect_all(f);
        ring = &f->to_host[DM_CHANNEL];
        memcpy(ring->data[0], &lie, sizeof(lie));
        ring->header->write_index = 64;
        signal_host(f, DM_CHANNEL);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->corrupt_rings, ==, 1);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->packets_in, ==, 0);
}

static void test_signal_for_an_unknown_connection_is_counted(Fixture *f, gconstpointer data)
{
        (void)data;
        connect_all(f);
        signal_host(f, 77);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->bad_signals, ==, 1);
}

/* ---- Dynamic Memory ---- */

static void send_status(Fixture *f, uint64_t committed)
{
        struct hv_dm_status status = {.time_ns = 5, .committed_bytes = committed, .visible_bytes = VISIBLE};

        guest_send(f, DM_CHANNEL, HV_DM_STATUS, &status, sizeof(status), NULL, 0);
}

static void test_status_report_makes_the_vm_reporting(Fixture *f, gconstpointer data)
{
        VmwpMemoryStatus s;

        (void)data;
        vmwp_dm_status(f->dm, &s);
        g_assert_false(s.reporting);
        connect_all(f);
        vmwp_dm_status(f->dm, &s);
        g_assert_false(s.reporting); /* open, but nothing reported yet */
        send_status(f, 5 * MiB);
        vmwp_dm_status(f->dm, &s);
        g_assert_true(s.reporting);
        g_assert_cmpuint(s.committed_bytes, ==, 5 * MiB);
        g_assert_cmpuint(s.visible_bytes, ==, VISIBLE);
        g_assert_cmpuint(s.assigned_bytes, ==, VISIBLE);
}

static void test_short_status_is_dropped(Fixture *f, gconstpointer data)
{
        struct hv_dm_status status = {.committed_bytes = 1};
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        /* Shorter than the oldest status a guest may send (version 1's, without flags). */
        guest_send(f, DM_CHANNEL, HV_DM_STATUS, &status, HV_DM_STATUS_MIN_SIZE - 8, NULL, 0);
        vmwp_dm_status(f->dm, &s);
        g_assert_false(s.reporting);
}

static struct hv_dm_balloon_request expect_balloon_request(Fixture *f)
{
        VmwpPacket packet;
        struct hv_dm_balloon_request request;

        g_assert_true(guest_receive(f, DM_CHANNEL, &packet));
        g_assert_cmpuint(packet.type, ==, HV_DM_BALLOON_REQUEST);
        memcpy(&request, packet.data, sizeof(request));
        return request;
}

static void balloon_response(Fixture *f, uint32_t request_id, bool more, const uint64_t *pfns, uint32_t n)
{
        struct hv_dm_balloon_response response = {.request_id = request_id, .more = more, .n_pfns = n};

        guest_send(f, DM_CHANNEL, HV_DM_BALLOON_RESPONSE, &response, sizeof(response), pfns,
                   n * (uint32_t)sizeof(uint64_t));
}

static void test_balloon_pages_are_judged_one_by_one(Fixture *f, gconstpointer data)
{
        struct hv_dm_balloon_request request;
        g_autofree char *why = NULL;
        uint64_t good[300], bad[] = {VISIBLE / 4096, 2000, MESSAGE_PFN, 100 + 10 * DM_CHANNEL + 1};
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        g_assert_cmpint(vmwp_dm_adjust(f->dm, -(int64_t)(2 * MiB), &why), ==, 0);
        request = expect_balloon_request(f);
        g_assert_cmpuint(request.n_pages, ==, 512);
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.pending_remove_bytes, ==, 2 * MiB);
        for (uint32_t i = 0; i < G_N_ELEMENTS(good); i++)
                good[i] = 2000 + i;
        balloon_response(f, request.request_id, true, good, G_N_ELEMENTS(good));
        /* Outside RAM, ballooned already (2000), the message page, a ring page. */
        balloon_response(f, request.request_id, false, bad, G_N_ELEMENTS(bad));
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.ballooned_bytes, ==, 300 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.assigned_bytes, ==, VISIBLE - 300 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.refused_pages, ==, 4);
        g_assert_cmpuint(s.pending_remove_bytes, ==, 0); /* the guest said it was done */
        g_assert_cmpuint(s.removed_bytes_total, ==, 300 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.remove_operations, ==, 1);
}

/* A hostile guest: pages nobody asked for, then more than a request asked for. */
static void test_unasked_balloon_pages_are_refused(Fixture *f, gconstpointer data)
{
        struct hv_dm_balloon_request request;
        g_autofree char *why = NULL;
        uint64_t pages[600];
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        for (uint32_t i = 0; i < G_N_ELEMENTS(pages); i++)
                pages[i] = 2000 + i;
        balloon_response(f, 77, false, pages, 100); /* no request 77 is open */
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.ballooned_bytes, ==, 0);
        g_assert_cmpuint(s.assigned_bytes, ==, VISIBLE);
        g_assert_cmpuint(s.refused_pages, ==, 100);
        g_assert_cmpuint(g_hash_table_size(f->hv.ballooned), ==, 0); /* hvd never heard of them */

        g_assert_cmpint(vmwp_dm_adjust(f->dm, -(int64_t)(2 * MiB), &why), ==, 0);
        request = expect_balloon_request(f);
        g_assert_cmpuint(request.n_pages, ==, 512);
        balloon_response(f, request.request_id, true, pages, 500);
        balloon_response(f, request.request_id, true, pages + 500, 100); /* 12 more are wanted, not 100 */
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.ballooned_bytes, ==, 512 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.refused_pages, ==, 100 + 88);
        g_assert_cmpuint(g_hash_table_size(f->hv.ballooned), ==, 512);
        g_assert_cmpuint(s.pending_remove_bytes, ==, 0);
}

static void count_status(void *userdata, bool prompt)
{
        g_assert_false(prompt);
        (*(unsigned *)userdata)++;
}

/* A guest that pages to fill a balloon answers in chunks over a while: the first chunk sends the figures at
 * once (the pool has those pages back), the next within 100 ms waits for the timer or the end; an empty last
 * chunk (the guest could give no more) closes the request, and what was ballooned need not be whole units. */
static void test_balloon_filled_over_time_sends_figures_as_it_goes(Fixture *f, gconstpointer data)
{
        struct hv_dm_balloon_request request;
        g_autofree char *why = NULL;
        uint64_t pages[300];
        unsigned sent = 0;
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        vmwp_dm_set_status_handler(f->dm, count_status, &sent);
        for (uint32_t i = 0; i < G_N_ELEMENTS(pages); i++)
                pages[i] = 2000 + i;
        g_assert_cmpint(vmwp_dm_adjust(f->dm, -(int64_t)(2 * MiB), &why), ==, 0);
        request = expect_balloon_request(f);
        balloon_response(f, request.request_id, true, pages, 200);
        g_assert_cmpuint(sent, ==, 1);
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.pending_remove_bytes, ==, (512 - 200) * HV_PAGE_SIZE);
        balloon_response(f, request.request_id, true, pages + 200, 100);
        g_assert_cmpuint(sent, ==, 1); /* within 100 ms of the last */
        balloon_response(f, request.request_id, false, NULL, 0);
        g_assert_cmpuint(sent, ==, 2); /* the end */
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.pending_remove_bytes, ==, 0);
        g_assert_cmpuint(s.ballooned_bytes, ==, 300 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.assigned_bytes, ==, VISIBLE - 300 * HV_PAGE_SIZE);
        g_assert_cmpuint(s.remove_operations, ==, 1);
}

static void test_balloon_response_with_a_lying_page_count_is_dropped(Fixture *f, gconstpointer data)
{
        struct hv_dm_balloon_response response = {.request_id = 1, .n_pfns = 400};
        uint64_t pfns[10] = {3000};
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        guest_send(f, DM_CHANNEL, HV_DM_BALLOON_RESPONSE, &response, sizeof(response), pfns, sizeof(pfns));
        response.n_pfns = HV_DM_PFNS_PER_PACKET + 1;
        guest_send(f, DM_CHANNEL, HV_DM_BALLOON_RESPONSE, &response, sizeof(response), pfns, sizeof(pfns));
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.ballooned_bytes, ==, 0);
        g_assert_cmpuint(vmwp_vmbus_stats(f->bus)->corrupt_rings, ==, 0); /* a bad packet, not a bad ring */
}

static void test_grow_deflates_the_balloon_then_hot_adds_whole_units(Fixture *f, gconstpointer data)
{
        struct hv_dm_balloon_request request;
        g_autofree char *why = NULL;
        uint64_t pfns[HV_DM_PFNS_PER_PACKET];
        uint64_t unballooned = 0;
        struct hv_dm_hot_add_request hot_add = {0};
        VmwpPacket packet;
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        g_assert_cmpint(vmwp_dm_adjust(f->dm, -(int64_t)(4 * MiB), &why), ==, 0);
        request = expect_balloon_request(f);
        for (uint32_t chunk = 0; chunk < 3; chunk++) { /* 400 + 400 + 224: the 1024 asked */
                for (uint32_t i = 0; i < 400; i++)
                        pfns[i] = 1000 + chunk * 400 + i;
                balloon_response(f, request.request_id, chunk < 2, pfns, chunk < 2 ? 400 : 224);
        }
        g_assert_cmpuint(g_hash_table_size(f->hv.ballooned), ==, 1024);
        /* +6 MiB = 1536 pages: all 1024 ballooned pages back, and one 2 MiB hot-add. */
        g_assert_cmpint(vmwp_dm_adjust(f->dm, (int64_t)(6 * MiB), &why), ==, 0);
        while (guest_receive(f, DM_CHANNEL, &packet)) {
                if (packet.type == HV_DM_UNBALLOON_REQUEST) {
                        struct hv_dm_unballoon_request u;

                        memcpy(&u, packet.data, sizeof(u));
                        g_assert_cmpuint(u.n_pfns, <=, HV_DM_PFNS_PER_PACKET);
                        g_assert_cmpuint(packet.length, ==, sizeof(u) + u.n_pfns * sizeof(uint64_t));
                        unballooned += u.n_pfns;
                } else {
                        g_assert_cmpuint(packet.type, ==, HV_DM_HOT_ADD_REQUEST);
                        memcpy(&hot_add, packet.data, sizeof(hot_add));
                }
                while (vmwp_vmbus_process(f->bus)) /* what waited for room */
                        ;
        }
        g_assert_cmpuint(unballooned, ==, 1024);
        g_assert_cmpuint(hot_add.gpa, ==, VISIBLE);
        g_assert_cmpuint(hot_add.bytes, ==, 2 * MiB);
        g_assert_cmpuint(g_hash_table_size(f->hv.ballooned), ==, 0);
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.visible_bytes, ==, VISIBLE + 2 * MiB);
        g_assert_cmpuint(s.added_bytes_total, ==, 6 * MiB);
        g_assert_cmpuint(s.add_operations, ==, 1);
}

static void test_grow_the_pool_cannot_cover_changes_nothing(Fixture *f, gconstpointer data)
{
        g_autofree char *why = NULL;
        VmwpPacket packet;
        VmwpMemoryStatus s;

        (void)data;
        connect_all(f);
        f->hv.pool_empty = true;
        g_assert_cmpint(vmwp_dm_adjust(f->dm, (int64_t)(2 * MiB), &why), ==, -ENOMEM);
        g_assert_nonnull(strstr(why, "pool empty"));
        g_assert_false(guest_receive(f, DM_CHANNEL, &packet));
        vmwp_dm_status(f->dm, &s);
        g_assert_cmpuint(s.visible_bytes, ==, VISIBLE);
        g_assert_cmpuint(s.add_operations, ==, 0);
}

typedef struct AdjustCase {
        const char *name;
        int64_t delta;
        bool connect;
        int expect;
} AdjustCase;

static const AdjustCase adjust_cases[] = {
        {"adjust_without_a_connected_guest_is_refused", 2 * (int64_t)MiB, false, -ENOTCONN},
        {"adjust_of_zero_is_refused", 0, true, -EINVAL},
        {"adjust_of_a_partial_unit_is_refused", 3 * (int64_t)MiB, true, -EINVAL},
        {"adjust_past_the_maximum_hot_adds_what_fits", 64 * (int64_t)MiB, true, 0},
        {"shrink_of_a_whole_unit_begins", -2 * (int64_t)MiB, true, 0},
};

static void test_adjust(Fixture *f, gconstpointer data)
{
        const AdjustCase *tc = data;
        g_autofree char *why = NULL;
        int r;

        if (tc->connect)
                connect_all(f);
        r = vmwp_dm_adjust(f->dm, tc->delta, &why);
        g_assert_cmpint(r, ==, tc->expect);
        if (r < 0)
                g_assert_nonnull(why);
}

static void test_adjust_at_the_maximum_is_refused(Fixture *f, gconstpointer data)
{
        g_autofree char *why = NULL;

        (void)data;
        connect_all(f);
        g_assert_cmpint(vmwp_dm_adjust(f->dm, (int64_t)(MAXIMUM - VISIBLE), &why), ==, 0);
        g_assert_cmpuint(f->guest_ram.visible_bytes, ==, MAXIMUM);
        g_assert_cmpint(vmwp_dm_adjust(f->dm, (int64_t)(2 * MiB), &why), ==, -ENOSPC);
        g_assert_nonnull(strstr(why, "maximum"));
}

typedef struct PlanCase {
        const char *name;
        uint64_t want, ballooned, room;
        uint64_t unballoon, hot_add;
} PlanCase;

static const PlanCase plan_cases[] = {
        {"balloon_covers_the_whole_grow", 512, 2000, 5000, 512, 0},
        {"empty_balloon_means_hot_add", 1024, 0, 5000, 0, 1024},
        {"partial_balloon_keeps_hot_add_in_whole_units", 1024, 700, 5000, 512, 512},
        {"balloon_of_whole_units_is_all_deflated", 1536, 1024, 5000, 1024, 512},
        {"hot_add_is_capped_at_the_room_left", 2048, 100, 300, 100, 300},
        {"room_short_of_a_unit_deflates_more", 1024, 900, 200, 824, 200},
        {"no_room_and_no_balloon_grows_nothing", 512, 0, 0, 0, 0},
};

static void test_plan_grow(gconstpointer data)
{
        const PlanCase *tc = data;
        uint64_t unballoon, hot_add;

        vmwp_dm_plan_grow(tc->want, tc->ballooned, tc->room, 512, &unballoon, &hot_add);
        g_assert_cmpuint(unballoon, ==, tc->unballoon);
        g_assert_cmpuint(hot_add, ==, tc->hot_add);
        g_assert_cmpuint(unballoon + hot_add, <=, tc->want);
}

/* ---- Storage ---- */

static struct hv_storage_completion expect_completion(Fixture *f, uint8_t *ret_page)
{
        VmwpPacket packet;
        struct hv_storage_completion completion;

        g_assert_true(guest_receive(f, STORAGE_CHANNEL, &packet));
        g_assert_cmpuint(packet.type, ==, HV_STORAGE_COMPLETION);
        memcpy(&completion, packet.data, sizeof(completion));
        if (ret_page) {
                g_assert_cmpuint(packet.length, ==, sizeof(completion) + HV_PAGE_SIZE);
                memcpy(ret_page, packet.data + sizeof(completion), HV_PAGE_SIZE);
        }
        return completion;
}

static void test_storage_reads_back_what_was_written(Fixture *f, gconstpointer data)
{
        struct hv_storage_request request = {.request_id = 11, .slot = 7};
        uint8_t page[HV_PAGE_SIZE], back[HV_PAGE_SIZE];

        (void)data;
        connect_all(f);
        for (size_t i = 0; i < sizeof(page); i++)
                page[i] = (uint8_t)(i * 7);
        guest_send(f, STORAGE_CHANNEL, HV_STORAGE_WRITE, &request, sizeof(request), page, sizeof(page));
        g_assert_cmpint(expect_completion(f, NULL).status, ==, 0);
        request.request_id = 12;
        guest_send(f, STORAGE_CHANNEL, HV_STORAGE_READ, &request, sizeof(request), NULL, 0);
        g_assert_cmpint(expect_completion(f, back).status, ==, 0);
        g_assert_cmpmem(back, sizeof(back), page, sizeof(page));
        request.slot = 3; /* never written: zeros */
        guest_send(f, STORAGE_CHANNEL, HV_STORAGE_READ, &request, sizeof(request), NULL, 0);
        g_assert_cmpint(expect_completion(f, back).status, ==, 0);
        g_assert_cmpuint(back[0] | back[4095], ==, 0);
}

typedef struct StorageCase {
        const char *name;
        uint16_t type;
        uint64_t slot;
        uint32_t length;
} StorageCase;

static const StorageCase storage_cases[] = {
        {"write_past_the_last_slot_is_refused", HV_STORAGE_WRITE, 8, 16 + 4096},
        {"read_far_past_the_last_slot_is_refused", HV_STORAGE_READ, UINT64_MAX, 16},
        {"write_without_its_page_is_refused", HV_STORAGE_WRITE, 1, 16 + 100},
};

static void test_storage_refusal(Fixture *f, gconstpointer data)
{
        const StorageCase *tc = data;
        static uint8_t body[16 + HV_PAGE_SIZE];
        struct hv_storage_request request = {.request_id = 9, .slot = tc->slot};
        struct hv_storage_completion completion;

        connect_all(f);
        memcpy(body, &request, sizeof(request));
        guest_send(f, STORAGE_CHANNEL, tc->type, body, tc->length, NULL, 0);
        completion = expect_completion(f, NULL);
        g_assert_cmpuint(completion.request_id, ==, 9);
        g_assert_cmpint(completion.status, ==, -HV_STATUS_INVALID_PARAMETER);
        g_assert_cmpuint(vmwp_storage_stats(f->storage)->refused, ==, 1);
        g_assert_cmpuint(vmwp_storage_stats(f->storage)->writes + vmwp_storage_stats(f->storage)->reads, ==,
                         0);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
#define ADD(name, fn) g_test_add("/vmwp-vmbus/" name, Fixture, NULL, fixture_setup, fn, fixture_teardown)
#define ADD_CASES(prefix, cases, fn)                                                                         \
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {                                                   \
                g_autofree char *path = g_strdup_printf("/vmwp-vmbus/" prefix "%s", cases[i].name);          \
                g_test_add(path, Fixture, &cases[i], fixture_setup, fn, fixture_teardown);                   \
        }
        ADD("initiate_gets_the_version_then_one_offer_per_device",
            test_initiate_gets_the_version_then_one_offer_per_device);
        ADD("initiate_with_another_version_is_refused_without_offers",
            test_initiate_with_another_version_is_refused_without_offers);
        ADD_CASES("", bad_message_cases, test_bad_message);
        ADD_CASES("", open_cases, test_open);
        ADD("second_open_of_an_open_channel_is_denied", test_second_open_of_an_open_channel_is_denied);
        ADD("open_with_another_channels_ring_page_is_denied",
            test_open_with_another_channels_ring_page_is_denied);
        ADD("corrupt_ring_drops_the_channel_and_counts", test_corrupt_ring_drops_the_channel_and_counts);
        ADD("packet_longer_than_what_was_written_drops_the_channel",
            test_packet_longer_than_what_was_written_drops_the_channel);
        ADD("signal_for_an_unknown_connection_is_counted", test_signal_for_an_unknown_connection_is_counted);
        ADD("dm/status_report_makes_the_vm_reporting", test_status_report_makes_the_vm_reporting);
        ADD("dm/short_status_is_dropped", test_short_status_is_dropped);
        ADD("dm/balloon_pages_are_judged_one_by_one", test_balloon_pages_are_judged_one_by_one);
        ADD("dm/unasked_balloon_pages_are_refused", test_unasked_balloon_pages_are_refused);
        ADD("dm/balloon_filled_over_time_sends_figures_as_it_goes",
            test_balloon_filled_over_time_sends_figures_as_it_goes);
        ADD("dm/balloon_response_with_a_lying_page_count_is_dropped",
            test_balloon_response_with_a_lying_page_count_is_dropped);
        ADD("dm/grow_deflates_the_balloon_then_hot_adds_whole_units",
            test_grow_deflates_the_balloon_then_hot_adds_whole_units);
        ADD("dm/grow_the_pool_cannot_cover_changes_nothing", test_grow_the_pool_cannot_cover_changes_nothing);
        ADD_CASES("dm/", adjust_cases, test_adjust);
        ADD("dm/adjust_at_the_maximum_is_refused", test_adjust_at_the_maximum_is_refused);
        for (size_t i = 0; i < G_N_ELEMENTS(plan_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmwp-vmbus/dm/plan/%s", plan_cases[i].name);

                g_test_add_data_func(path, &plan_cases[i], test_plan_grow);
        }
        ADD("storage/reads_back_what_was_written", test_storage_reads_back_what_was_written);
        ADD_CASES("storage/", storage_cases, test_storage_refusal);
#undef ADD_CASES
#undef ADD
        return g_test_run();
}
