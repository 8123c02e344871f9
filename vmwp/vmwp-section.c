/* The shared section format: writing sections to a file or a stream, and checking
 * headers and runs read back from either (vmwp-section.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#ifdef VMWP_HAVE_LIBDEFLATE
#include <libdeflate.h>
#else
#include <zlib.h>
#endif

#include "hv-abi.h"
#include "vmwp-section.h"

/* CRC-32 (ISO-HDLC, zlib's): libdeflate's where it was built with it, the same sum. */
uint32_t vmwp_crc32(uint32_t sum, const void *data, size_t len)
{
#ifdef VMWP_HAVE_LIBDEFLATE
        return libdeflate_crc32(sum, data, len);
#else
        return (uint32_t)crc32_z(sum, data, len);
#endif
}

void vmwp_put_le32(uint8_t *p, uint32_t v)
{
        v = GUINT32_TO_LE(v);
        memcpy(p, &v, 4);
}

void vmwp_put_le64(uint8_t *p, uint64_t v)
{
        v = GUINT64_TO_LE(v);
        memcpy(p, &v, 8);
}

uint32_t vmwp_le32(const uint8_t *p)
{
        uint32_t v;

        memcpy(&v, p, 4);
        return GUINT32_FROM_LE(v);
}

uint64_t vmwp_le64(const uint8_t *p)
{
        uint64_t v;

        memcpy(&v, p, 8);
        return GUINT64_FROM_LE(v);
}

int vmwp_pwrite_all(int fd, const void *data, size_t len, uint64_t offset)
{
        const uint8_t *p = data;

        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t)offset);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n;
                len -= (size_t)n;
                offset += (uint64_t)n;
        }
        return 0;
}

void vmwp_section_writer_init_stream(VmwpSectionWriter *w, VmwpSectionWriteFn fn, void *ctx)
{
        *w = (VmwpSectionWriter){.fd = -1, .write_fn = fn, .write_ctx = ctx, .pending = g_byte_array_new()};
}

void vmwp_section_writer_clear(VmwpSectionWriter *w)
{
        if (w->pending)
                g_byte_array_unref(w->pending);
        w->pending = NULL;
}

void vmwp_section_begin(VmwpSectionWriter *w, uint32_t type)
{
        w->section_at = w->offset;
        w->offset += VMWP_SECTION_HEADER_BYTES;
        w->section_type = type;
        w->section_len = 0;
        w->section_crc = vmwp_crc32(0, NULL, 0);
        if (w->pending)
                g_byte_array_set_size(w->pending, 0);
}

/* A stream's data may be guest RAM the guest is writing at that moment: the checksum is
 * taken over the copy that will be sent, never over a second read of the source. */
int vmwp_section_append(VmwpSectionWriter *w, const void *data, size_t len)
{
        if (w->write_fn) {
                guint at = w->pending->len;

                g_byte_array_append(w->pending, data, (guint)len);
                w->section_crc = vmwp_crc32(w->section_crc, w->pending->data + at, len);
        } else {
                int r = vmwp_pwrite_all(w->fd, data, len, w->offset);

                if (r < 0)
                        return r;
                w->section_crc = vmwp_crc32(w->section_crc, data, len);
        }
        w->section_len += len;
        w->offset += len;
        return 0;
}

int vmwp_section_end(VmwpSectionWriter *w)
{
        static const uint8_t zeros[8];
        uint8_t header[VMWP_SECTION_HEADER_BYTES] = {0};
        uint64_t pad = VMWP_SECTION_PAD(w->section_len) - w->section_len;
        int r;

        vmwp_put_le32(header, w->section_type);
        vmwp_put_le64(header + 8, w->section_len);
        vmwp_put_le32(header + 16, w->section_crc);
        vmwp_put_le32(header + 20, vmwp_crc32(0, header, 20));
        if (w->write_fn) {
                r = w->write_fn(w->write_ctx, header, sizeof(header));
                if (r >= 0 && w->pending->len)
                        r = w->write_fn(w->write_ctx, w->pending->data, w->pending->len);
                if (r >= 0 && pad)
                        r = w->write_fn(w->write_ctx, zeros, pad);
                g_byte_array_set_size(w->pending, 0);
        } else {
                r = vmwp_pwrite_all(w->fd, header, sizeof(header), w->section_at);
                if (r >= 0 && pad)
                        r = vmwp_pwrite_all(w->fd, zeros, pad, w->offset);
        }
        w->offset += pad;
        w->sections++;
        return r;
}

int vmwp_section_whole(VmwpSectionWriter *w, uint32_t type, const void *data, size_t len)
{
        int r;

        vmwp_section_begin(w, type);
        r = vmwp_section_append(w, data, len);
        return r < 0 ? r : vmwp_section_end(w);
}

#define RUN_CHUNK_BYTES (1u << 20)

int vmwp_section_append_run(VmwpSectionWriter *w, uint64_t at, VmwpRunKind kind, const uint8_t *data,
                            uint64_t len)
{
        uint8_t run[VMWP_RUN_HEADER_BYTES];
        int r;

        vmwp_put_le64(run, at | (uint64_t)kind);
        vmwp_put_le64(run + 8, len);
        r = vmwp_section_append(w, run, sizeof(run));
        for (uint64_t done = 0; r >= 0 && kind == VMWP_RUN_DATA && done < len; done += RUN_CHUNK_BYTES)
                r = vmwp_section_append(w, data + done, MIN(RUN_CHUNK_BYTES, len - done));
        return r;
}

void vmwp_format_header_encode(uint8_t out[VMWP_FORMAT_HEADER_BYTES], const char *magic, uint32_t version,
                               uint64_t total_bytes, uint32_t sections)
{
        memset(out, 0, VMWP_FORMAT_HEADER_BYTES);
        memcpy(out, magic, 8);
        vmwp_put_le32(out + 8, version);
        vmwp_put_le32(out + 12, VMWP_FORMAT_HEADER_BYTES);
        vmwp_put_le64(out + 16, total_bytes);
        vmwp_put_le32(out + 24, sections);
        vmwp_put_le32(out + 28, vmwp_crc32(0, out, 28));
}

int vmwp_bad_message(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

int vmwp_format_header_check(const uint8_t header[VMWP_FORMAT_HEADER_BYTES], const char *magic,
                             uint32_t version, const char *what, char **ret_error)
{
        if (memcmp(header, magic, 8) != 0)
                return vmwp_bad_message(ret_error, "not %s (bad magic)", what);
        if (vmwp_le32(header + 28) != vmwp_crc32(0, header, 28))
                return vmwp_bad_message(ret_error, "the header's checksum is wrong");
        if (vmwp_le32(header + 8) != version)
                return vmwp_bad_message(ret_error, "format version %u; this worker reads %u",
                                        vmwp_le32(header + 8), version);
        if (vmwp_le32(header + 12) != VMWP_FORMAT_HEADER_BYTES)
                return vmwp_bad_message(ret_error, "header size %u, expected %u", vmwp_le32(header + 12),
                                        VMWP_FORMAT_HEADER_BYTES);
        return 0;
}

int vmwp_section_header_parse(const uint8_t sh[VMWP_SECTION_HEADER_BYTES], uint32_t index,
                              uint32_t first_type, uint32_t last_type, uint64_t offset, VmwpSaveSection *ret,
                              char **ret_error)
{
        uint32_t type = vmwp_le32(sh);

        if (vmwp_le32(sh + 20) != vmwp_crc32(0, sh, 20))
                return vmwp_bad_message(ret_error, "section %u's header checksum is wrong", index);
        if (type < first_type || type > last_type || vmwp_le32(sh + 4) != 0)
                return vmwp_bad_message(ret_error, "section %u has unknown type %u", index, type);
        *ret = (VmwpSaveSection){
                .type = type, .offset = offset + VMWP_SECTION_HEADER_BYTES, .length = vmwp_le64(sh + 8)};
        return 0;
}

int vmwp_section_payload_check(const uint8_t *payload, uint64_t length, const uint8_t sh[24], uint32_t index,
                               char **ret_error)
{
        for (uint64_t k = length; k < VMWP_SECTION_PAD(length); k++)
                if (payload[k] != 0)
                        return vmwp_bad_message(ret_error, "section %u's padding is not zero", index);
        if (vmwp_crc32(vmwp_crc32(0, NULL, 0), payload, length) != vmwp_le32(sh + 16))
                return vmwp_bad_message(ret_error, "section %u (type %u) fails its checksum", index,
                                        vmwp_le32(sh));
        return 0;
}

int vmwp_run_parse(const uint8_t run[VMWP_RUN_HEADER_BYTES], uint64_t limit, uint64_t next,
                   uint64_t remaining, bool kinds_allowed, const char *what, uint64_t *ret_at,
                   uint64_t *ret_len, VmwpRunKind *ret_kind, char **ret_error)
{
        uint64_t raw = vmwp_le64(run), len = vmwp_le64(run + 8);
        uint64_t at = raw & ~(uint64_t)VMWP_RUN_KIND_MASK, kind = raw & VMWP_RUN_KIND_MASK;

        if (kind > VMWP_RUN_DISCARD || (kind != VMWP_RUN_DATA && !kinds_allowed))
                return vmwp_bad_message(
                        ret_error, "%s: run at 0x%" G_GINT64_MODIFIER "x has unknown kind %" G_GUINT64_FORMAT,
                        what, at, kind);
        if (len == 0 || len % HV_PAGE_SIZE != 0 || at < next || at > limit || len > limit - at ||
            (kind == VMWP_RUN_DATA && len > remaining))
                return vmwp_bad_message(ret_error,
                                        "%s: run at 0x%" G_GINT64_MODIFIER "x of %" G_GUINT64_FORMAT
                                        " bytes is misaligned, overlaps, or lies outside %" G_GUINT64_FORMAT
                                        " bytes",
                                        what, at, len, limit);
        *ret_at = at;
        *ret_len = len;
        *ret_kind = (VmwpRunKind)kind;
        return 0;
}
