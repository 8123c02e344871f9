/* VMBus rings in guest memory, as the worker sees them. The guest is untrusted: its
 * index is read once per operation, checked (inside the data area, packet aligned)
 * before use, and each packet's length is checked against what the ring holds. Loads
 * of the guest's index are acquires and stores of ours releases, so a packet's bytes
 * are in place before the index that publishes them. */
#include <errno.h>
#include <string.h>

#include "vmwp-ring.h"

static bool index_valid(const VmwpRing *ring, uint32_t index)
{
        return index < ring->data_size && index % HV_PACKET_ALIGN == 0;
}

int vmwp_ring_init(VmwpRing *ring, uint8_t *const *pages, uint32_t ring_pages, bool incoming)
{
        VmwpRing r = {0};
        uint32_t own;

        if (ring_pages < 2 || ring_pages > VMWP_RING_MAX_PAGES)
                return -EINVAL;
        r.header = (struct hv_ring_header *)pages[0];
        for (uint32_t i = 1; i < ring_pages; i++)
                r.data[i - 1] = pages[i];
        r.data_size = (ring_pages - 1) * (uint32_t)HV_PAGE_SIZE;
        own = incoming ? __atomic_load_n(&r.header->read_index, __ATOMIC_ACQUIRE)
                       : __atomic_load_n(&r.header->write_index, __ATOMIC_ACQUIRE);
        if (!index_valid(&r, own))
                return -EBADMSG;
        r.own_index = own;
        *ring = r;
        return 0;
}

uint32_t vmwp_ring_packet_span(uint32_t length)
{
        return (uint32_t)sizeof(struct hv_packet_header) +
               ((length + HV_PACKET_ALIGN - 1) & ~(HV_PACKET_ALIGN - 1));
}

/* The byte at `offset` of the data area, and how many follow it on the same page: the
 * data pages need not be contiguous. */
static uint8_t *ring_at(const VmwpRing *ring, uint32_t offset, uint32_t *ret_contig)
{
        uint32_t in_page = offset % (uint32_t)HV_PAGE_SIZE;

        *ret_contig = (uint32_t)HV_PAGE_SIZE - in_page;
        return ring->data[offset / HV_PAGE_SIZE] + in_page;
}

/* Copies out of the data area from `offset`, wrapping at its end; returns the offset after. */
static uint32_t ring_read_bytes(const VmwpRing *ring, uint32_t offset, void *dst, uint32_t len)
{
        uint8_t *d = dst;

        while (len > 0) {
                uint32_t contig, n;
                const uint8_t *at = ring_at(ring, offset, &contig);

                n = len < contig ? len : contig;
                memcpy(d, at, n);
                d += n;
                len -= n;
                offset = (offset + n) % ring->data_size;
        }
        return offset;
}

/* Copies `src` (NULL: zeros) into the data area at `offset`; returns the offset after. */
static uint32_t ring_write_bytes(const VmwpRing *ring, uint32_t offset, const void *src, uint32_t len)
{
        const uint8_t *s = src;

        while (len > 0) {
                uint32_t contig, n;
                uint8_t *at = ring_at(ring, offset, &contig);

                n = len < contig ? len : contig;
                if (s) {
                        memcpy(at, s, n);
                        s += n;
                } else {
                        memset(at, 0, n);
                }
                len -= n;
                offset = (offset + n) % ring->data_size;
        }
        return offset;
}

int vmwp_ring_read(VmwpRing *ring, VmwpPacket *ret)
{
        uint32_t write_index = __atomic_load_n(&ring->header->write_index, __ATOMIC_ACQUIRE);
        uint32_t available, span, offset;
        struct hv_packet_header header;

        if (!index_valid(ring, write_index))
                return -EBADMSG;
        if (write_index == ring->own_index)
                return -EAGAIN;
        available = (write_index + ring->data_size - ring->own_index) % ring->data_size;
        offset = ring_read_bytes(ring, ring->own_index, &header, sizeof(header));
        if (header.length > HV_PACKET_MAX)
                return -EBADMSG;
        span = vmwp_ring_packet_span(header.length);
        if (span > available)
                return -EBADMSG;
        ret->type = header.type;
        ret->length = header.length;
        ring_read_bytes(ring, offset, ret->data, header.length);
        ring->own_index = (ring->own_index + span) % ring->data_size;
        __atomic_store_n(&ring->header->read_index, ring->own_index, __ATOMIC_RELEASE);
        return 0;
}

int vmwp_ring_write(VmwpRing *ring, uint16_t type, const VmwpSegment *segs, unsigned n_segs)
{
        struct hv_packet_header header = {.type = type};
        uint32_t read_index = __atomic_load_n(&ring->header->read_index, __ATOMIC_ACQUIRE);
        uint32_t length = 0, span, free_bytes, offset;

        for (unsigned i = 0; i < n_segs; i++) {
                if (segs[i].len > HV_PACKET_MAX - length)
                        return -EMSGSIZE;
                length += segs[i].len;
        }
        span = vmwp_ring_packet_span(length);
        if (span >= ring->data_size)
                return -EMSGSIZE;
        if (!index_valid(ring, read_index))
                return -EBADMSG;
        /* One byte always stays free, so a full ring never looks empty. */
        free_bytes = (read_index + ring->data_size - ring->own_index - 1) % ring->data_size;
        if (span > free_bytes)
                return -EAGAIN;
        header.length = length;
        offset = ring_write_bytes(ring, ring->own_index, &header, sizeof(header));
        for (unsigned i = 0; i < n_segs; i++)
                offset = ring_write_bytes(ring, offset, segs[i].data, segs[i].len);
        offset = ring_write_bytes(ring, offset, NULL, span - (uint32_t)sizeof(header) - length);
        ring->own_index = offset;
        __atomic_store_n(&ring->header->write_index, offset, __ATOMIC_RELEASE);
        return 0;
}

bool vmwp_ring_drained(const VmwpRing *ring)
{
        return __atomic_load_n(&ring->header->read_index, __ATOMIC_ACQUIRE) == ring->own_index;
}
