/* VMBus rings as the worker reads and writes them: every index and length the guest
 * controls is checked, a corrupt ring is reported (never read past), and packets
 * survive wrapping across data pages that are not contiguous. */
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "vmwp-ring.h"

#define RING_PAGES 3u /* header + 2 data pages */
#define DATA_SIZE ((RING_PAGES - 1) * (uint32_t)HV_PAGE_SIZE)

typedef struct Ring {
        uint8_t *pages[RING_PAGES];
        VmwpRing ring;
} Ring;

/* Data pages in reverse address order, so a copy that assumed contiguity would fail. */
static void ring_setup(Ring *r, bool incoming, uint32_t write_index, uint32_t read_index, int *ret_init)
{
        static uint8_t memory[RING_PAGES][HV_PAGE_SIZE] __attribute__((aligned(4096)));
        struct hv_ring_header *header;

        memset(memory, 0, sizeof(memory));
        r->pages[0] = memory[0];
        r->pages[1] = memory[2];
        r->pages[2] = memory[1];
        header = (struct hv_ring_header *)r->pages[0];
        header->write_index = write_index;
        header->read_index = read_index;
        *ret_init = vmwp_ring_init(&r->ring, r->pages, RING_PAGES, incoming);
}

/* Puts a packet header at `offset` of the data area, as a guest would. */
static void put_header(Ring *r, uint32_t offset, uint16_t type, uint32_t length)
{
        struct hv_packet_header h = {.type = type, .length = length};

        memcpy(r->pages[1 + offset / HV_PAGE_SIZE] + offset % HV_PAGE_SIZE, &h, sizeof(h));
}

typedef struct ReadCase {
        const char *name;
        uint32_t read_index;  /* where the worker starts reading */
        uint32_t write_index; /* what the guest published */
        uint32_t length;      /* the packet header's length at read_index */
        int expect_init;
        int expect_read;
        uint32_t read_index_after;
} ReadCase;

static const ReadCase read_cases[] = {
        {"empty_ring_has_nothing", 0, 0, 0, 0, -EAGAIN, 0},
        {"packet_that_fits_is_read", 0, 24, 16, 0, 0, 24},
        {"packet_of_zero_bytes_is_read", 0, 8, 0, 0, 0, 8},
        {"packet_wrapping_at_the_end_is_read", DATA_SIZE - 16, 16, 20, 0, 0, 16},
        {"write_index_past_the_data_is_corrupt", 0, DATA_SIZE, 16, 0, -EBADMSG, 0},
        {"write_index_far_past_the_data_is_corrupt", 0, UINT32_MAX - 7, 16, 0, -EBADMSG, 0},
        {"unaligned_write_index_is_corrupt", 0, 20, 8, 0, -EBADMSG, 0},
        {"length_beyond_what_was_written_is_corrupt", 0, 24, 17, 0, -EBADMSG, 0},
        {"length_above_the_packet_limit_is_corrupt", 0, DATA_SIZE - 8, HV_PACKET_MAX + 8, 0, -EBADMSG, 0},
        {"length_that_wraps_32_bits_is_corrupt", 0, 24, UINT32_MAX, 0, -EBADMSG, 0},
        {"read_index_the_guest_left_past_the_data_refuses_the_ring", DATA_SIZE + 8, 0, 0, -EBADMSG, 0, 0},
        {"unaligned_read_index_refuses_the_ring", 4, 0, 0, -EBADMSG, 0, 0},
};

static void test_read(gconstpointer data)
{
        const ReadCase *tc = data;
        Ring r;
        VmwpPacket packet;
        int init;

        ring_setup(&r, true, tc->write_index, tc->read_index, &init);
        g_assert_cmpint(init, ==, tc->expect_init);
        if (init < 0)
                return;
        put_header(&r, tc->read_index, 7, tc->length);
        g_assert_cmpint(vmwp_ring_read(&r.ring, &packet), ==, tc->expect_read);
        g_assert_cmpuint(r.ring.own_index, ==, tc->expect_read == 0 ? tc->read_index_after : tc->read_index);
        if (tc->expect_read == 0) {
                g_assert_cmpuint(packet.type, ==, 7);
                g_assert_cmpuint(packet.length, ==, tc->length);
                g_assert_cmpuint(((struct hv_ring_header *)r.pages[0])->read_index, ==, tc->read_index_after);
        }
}

typedef struct WriteCase {
        const char *name;
        uint32_t write_index; /* the worker's */
        uint32_t read_index;  /* the guest's */
        uint32_t length;
        int expect;
} WriteCase;

static const WriteCase write_cases[] = {
        {"packet_into_an_empty_ring_is_written", 0, 0, 100, 0},
        {"packet_that_leaves_a_gap_is_written", 0, 0, HV_PACKET_MAX, 0},
        {"packet_without_room_waits", 64, 72, 16, -EAGAIN},
        {"packet_just_fitting_before_the_reader_is_written", 64, 96, 16, 0},
        {"packet_above_the_limit_never_fits", 0, 0, HV_PACKET_MAX + 1, -EMSGSIZE},
        {"guest_read_index_past_the_data_is_corrupt", 0, DATA_SIZE, 16, -EBADMSG},
        {"unaligned_guest_read_index_is_corrupt", 0, 12, 16, -EBADMSG},
};

static void test_write(gconstpointer data)
{
        const WriteCase *tc = data;
        static uint8_t payload[HV_PACKET_MAX + 1];
        VmwpSegment seg = {payload, tc->length};
        Ring r;
        int init;

        ring_setup(&r, false, tc->write_index, tc->read_index, &init);
        g_assert_cmpint(init, ==, 0);
        g_assert_cmpint(vmwp_ring_write(&r.ring, 3, &seg, 1), ==, tc->expect);
        if (tc->expect == 0)
                g_assert_cmpuint(((struct hv_ring_header *)r.pages[0])->write_index, ==,
                                 (tc->write_index + vmwp_ring_packet_span(tc->length)) % DATA_SIZE);
        else
                g_assert_cmpuint(((struct hv_ring_header *)r.pages[0])->write_index, ==, tc->write_index);
}

/* A writer and a reader over the same pages: every byte comes back, across the wrap
 * and the page boundary, for many packet sizes. */
static void test_packets_round_trip_across_wraps(void)
{
        Ring w, rd;
        VmwpPacket packet;
        uint8_t payload[HV_PACKET_MAX];
        int init;

        ring_setup(&w, false, 0, 0, &init);
        g_assert_cmpint(init, ==, 0);
        rd.ring = w.ring; /* same pages, the other side */
        rd.ring.own_index = 0;
        for (uint32_t i = 0; i < 200; i++) {
                uint32_t len = (i * 997) % HV_PACKET_MAX;
                VmwpSegment segs[] = {{payload, len / 2}, {payload + len / 2, len - len / 2}};

                for (uint32_t b = 0; b < len; b++)
                        payload[b] = (uint8_t)(b * 31 + i);
                g_assert_cmpint(vmwp_ring_write(&w.ring, (uint16_t)i, segs, 2), ==, 0);
                g_assert_cmpint(vmwp_ring_read(&rd.ring, &packet), ==, 0);
                g_assert_cmpuint(packet.type, ==, i);
                g_assert_cmpuint(packet.length, ==, len);
                g_assert_cmpmem(packet.data, len, payload, len);
                g_assert_true(vmwp_ring_drained(&w.ring));
        }
        g_assert_cmpint(vmwp_ring_read(&rd.ring, &packet), ==, -EAGAIN);
}

static void test_own_index_ignores_what_the_guest_writes_there(void)
{
        Ring r;
        VmwpPacket packet;
        int init;

        ring_setup(&r, true, 24, 0, &init);
        put_header(&r, 0, 1, 16);
        /* The guest scribbles on the reader's index. */
        ((struct hv_ring_header *)r.pages[0])->read_index = 4096;
        g_assert_cmpint(vmwp_ring_read(&r.ring, &packet), ==, 0);
        g_assert_cmpuint(r.ring.own_index, ==, 24);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(read_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmwp-ring/read/%s", read_cases[i].name);

                g_test_add_data_func(path, &read_cases[i], test_read);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(write_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmwp-ring/write/%s", write_cases[i].name);

                g_test_add_data_func(path, &write_cases[i], test_write);
        }
        g_test_add_func("/vmwp-ring/packets_round_trip_across_wraps", test_packets_round_trip_across_wraps);
        g_test_add_func("/vmwp-ring/own_index_ignores_what_the_guest_writes_there",
                        test_own_index_ignores_what_the_guest_writes_there);
        return g_test_run();
}
