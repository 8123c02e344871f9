/* Save-VM's file: writing a paused partition out, checking a file whole, loading it
 * into a partition created to be restored. vmwp-save.h describes the format. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "hv-abi.h"
#include "vmwp-save.h"
#include "vmwp-state.h"

#define SAVE_CHUNK_BYTES (1u << 20)
#define SAVE_PAD(n) VMWP_SECTION_PAD(n)

static void close_fdp(int *fd)
{
        if (*fd >= 0)
                close(*fd);
}
#define SAVE_AUTOCLOSE __attribute__((cleanup(close_fdp)))

static int read_all(int fd, void *data, size_t len, uint64_t offset)
{
        uint8_t *p = data;

        while (len > 0) {
                ssize_t n = pread(fd, p, len, (off_t)offset);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -EBADMSG; /* shorter than it says */
                p += n;
                len -= (size_t)n;
                offset += (uint64_t)n;
        }
        return 0;
}

/* ---- Writing ---- */

typedef VmwpSectionWriter SaveWriter;
#define section_begin vmwp_section_begin
#define section_append vmwp_section_append
#define section_end vmwp_section_end
#define section_whole vmwp_section_whole
#define get_le32 vmwp_le32
#define get_le64 vmwp_le64
#define put_le64 vmwp_put_le64

static bool page_zero(const uint8_t *page)
{
        static const uint8_t zeros[HV_PAGE_SIZE];

        return memcmp(page, zeros, HV_PAGE_SIZE) == 0;
}

static int append_run(SaveWriter *w, uint64_t at, const uint8_t *data, uint64_t len)
{
        return vmwp_section_append_run(w, at, VMWP_RUN_DATA, data, len);
}

/* Guest RAM [0, visible): the memfd's data extents (ballooned pages are holes), then
 * pages that are not all zeros, as runs. */
static int write_memory(SaveWriter *w, const VmwpSaveParts *parts, uint64_t *ret_bytes)
{
        uint64_t visible = parts->guest_ram->visible_bytes, bytes = 0;
        off_t data = 0;
        int r = 0;

        section_begin(w, VMWP_SAVE_MEMORY);
        while (r >= 0 && (uint64_t)data < visible) {
                off_t hole;
                uint64_t run_start = 0, run_len = 0;

                data = lseek(parts->ram_fd, data, SEEK_DATA);
                if (data < 0 || (uint64_t)data >= visible)
                        break; /* ENXIO: no data past here */
                hole = lseek(parts->ram_fd, data, SEEK_HOLE);
                if (hole < 0 || (uint64_t)hole > visible)
                        hole = (off_t)visible;
                data = data / (off_t)HV_PAGE_SIZE * (off_t)HV_PAGE_SIZE;
                for (uint64_t page = (uint64_t)data; page < (uint64_t)hole && r >= 0; page += HV_PAGE_SIZE) {
                        bool zero = page_zero(parts->ram + page);

                        if (!zero && run_len == 0)
                                run_start = page;
                        if (!zero)
                                run_len += HV_PAGE_SIZE;
                        if ((zero || page + HV_PAGE_SIZE >= (uint64_t)hole) && run_len > 0) {
                                r = append_run(w, run_start, parts->ram + run_start, run_len);
                                bytes += run_len;
                                run_len = 0;
                        }
                }
                data = hole;
        }
        if (r >= 0)
                r = section_end(w);
        *ret_bytes = bytes;
        return r;
}

/* The paging disk, whose data extents are read through a buffer. A stream splits it
 * into DISK sections of at most `section_max` payload bytes (0: one section), each
 * beginning with the slot count. */
static int write_disk(SaveWriter *w, int disk_fd, uint64_t section_max, uint64_t *ret_bytes)
{
        g_autofree uint8_t *buf = g_malloc(SAVE_CHUNK_BYTES);
        struct stat st;
        uint8_t slots[8];
        off_t data = 0;
        uint64_t bytes = 0;
        int r;

        if (fstat(disk_fd, &st) < 0)
                return -errno;
        put_le64(slots, (uint64_t)st.st_size / HV_PAGE_SIZE);
        section_begin(w, VMWP_SAVE_DISK);
        r = section_append(w, slots, sizeof(slots));
        while (r >= 0 && data < st.st_size) {
                off_t hole;

                data = lseek(disk_fd, data, SEEK_DATA);
                if (data < 0)
                        break;
                hole = lseek(disk_fd, data, SEEK_HOLE);
                if (hole < 0)
                        hole = st.st_size;
                data = data / (off_t)HV_PAGE_SIZE * (off_t)HV_PAGE_SIZE;
                hole = MIN((hole + (off_t)HV_PAGE_SIZE - 1) / (off_t)HV_PAGE_SIZE * (off_t)HV_PAGE_SIZE,
                           st.st_size);
                while (r >= 0 && data < hole) {
                        size_t n = (size_t)MIN((off_t)SAVE_CHUNK_BYTES, hole - data);

                        if (section_max && w->section_len + VMWP_RUN_HEADER_BYTES + n > section_max) {
                                r = section_end(w);
                                section_begin(w, VMWP_SAVE_DISK);
                                if (r >= 0)
                                        r = section_append(w, slots, sizeof(slots));
                        }
                        if (r >= 0)
                                r = read_all(disk_fd, buf, n, (uint64_t)data);
                        if (r >= 0)
                                r = append_run(w, (uint64_t)data, buf, n);
                        bytes += n;
                        data += (off_t)n;
                }
        }
        if (r >= 0)
                r = section_end(w);
        *ret_bytes = bytes;
        return r;
}

int vmwp_save_write_disk(VmwpSectionWriter *w, const VmwpSaveParts *parts, uint64_t section_max,
                         uint64_t *ret_bytes, char **ret_error)
{
        SAVE_AUTOCLOSE int disk_fd = -1;
        int r;

        *ret_bytes = 0;
        if (!parts->paging_path)
                return 0;
        disk_fd = open(parts->paging_path, O_RDONLY | O_CLOEXEC);
        if (disk_fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot open the paging disk %s: %s", parts->paging_path,
                                             g_strerror(-r));
                return r;
        }
        r = write_disk(w, disk_fd, section_max, ret_bytes);
        if (r < 0)
                *ret_error = g_strdup_printf("cannot write the paging disk: %s", g_strerror(-r));
        return r;
}

static int write_header(SaveWriter *w)
{
        uint8_t header[VMWP_SAVE_HEADER_BYTES];

        vmwp_format_header_encode(header, VMWP_SAVE_MAGIC, VMWP_SAVE_VERSION, w->offset, w->sections);
        return vmwp_pwrite_all(w->fd, header, sizeof(header), 0);
}

int vmwp_save_write_config(VmwpSectionWriter *w, const VmwpSaveParts *parts)
{
        g_autoptr(GByteArray) buf = g_byte_array_new();

        vmwp_state_put_u32(buf, parts->vp_count);
        vmwp_state_put_u64(buf, parts->guest_ram->maximum_bytes);
        vmwp_state_put_u64(buf, parts->guest_ram->visible_bytes);
        return section_whole(w, VMWP_SAVE_CONFIG, buf->data, buf->len);
}

int vmwp_save_write_device_state(VmwpSectionWriter *w, const VmwpSaveParts *parts, char **ret_error)
{
        g_autoptr(GByteArray) buf = g_byte_array_new();
        HvClientPartitionState state;
        int r;

        r = hv_client_partition_state_get(parts->hv, parts->partition_id, &state);
        if (r < 0) {
                *ret_error = g_strdup_printf("hvd: %s", hv_client_last_error(parts->hv));
                return r;
        }
        vmwp_state_put_u64(buf, state.reference_time_ns);
        vmwp_state_put_u64(buf, state.ballooned_bytes);
        r = section_whole(w, VMWP_SAVE_PARTITION, buf->data, buf->len);
        for (uint32_t i = 0; r >= 0 && i < parts->vp_count; i++) {
                g_autoptr(GBytes) vp = NULL;

                r = hv_client_vp_state_get(parts->hv, parts->partition_id, i, &vp);
                if (r < 0) {
                        *ret_error = g_strdup_printf("hvd: vp %u: %s", i, hv_client_last_error(parts->hv));
                        return r;
                }
                r = section_whole(w, VMWP_SAVE_VP, g_bytes_get_data(vp, NULL), g_bytes_get_size(vp));
        }
        g_byte_array_set_size(buf, 0);
        vmwp_vmbus_save(parts->vmbus, buf);
        if (r >= 0)
                r = section_whole(w, VMWP_SAVE_VMBUS, buf->data, buf->len);
        g_byte_array_set_size(buf, 0);
        vmwp_dm_save(parts->dm, buf);
        if (r >= 0)
                r = section_whole(w, VMWP_SAVE_DM, buf->data, buf->len);
        if (r < 0 && !*ret_error)
                *ret_error = g_strdup_printf("cannot write the VM's state: %s", g_strerror(-r));
        return r;
}

static int write_state(SaveWriter *w, const VmwpSaveParts *parts, VmwpSaveResult *result, char **ret_error)
{
        int r;

        r = vmwp_save_write_config(w, parts);
        if (r >= 0)
                r = vmwp_save_write_device_state(w, parts, ret_error);
        if (r >= 0)
                r = write_memory(w, parts, &result->memory_bytes);
        if (r >= 0)
                r = vmwp_save_write_disk(w, parts, 0, &result->disk_bytes, ret_error);
        if (r >= 0)
                r = section_whole(w, VMWP_SAVE_END, NULL, 0);
        if (r >= 0)
                r = write_header(w);
        if (r < 0 && !*ret_error)
                *ret_error = g_strdup_printf("cannot write the saved state: %s", g_strerror(-r));
        return r;
}

static int fsync_dir_of(const char *path)
{
        g_autofree char *dir = g_path_get_dirname(path);
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

int vmwp_save_write(const VmwpSaveParts *parts, const char *path, VmwpSaveResult *ret, char **ret_error)
{
        g_autofree char *tmp = g_strdup_printf("%s.tmp", path);
        VmwpSaveResult result = {0};
        int64_t t0 = g_get_monotonic_time();
        SaveWriter w = {.offset = VMWP_SAVE_HEADER_BYTES};
        int r;

        w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (w.fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot create %s: %s", tmp, g_strerror(-r));
                return r;
        }
        r = write_state(&w, parts, &result, ret_error);
        if (r >= 0 && fsync(w.fd) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot fsync %s: %s", tmp, g_strerror(-r));
        }
        close(w.fd);
        if (r >= 0 && rename(tmp, path) < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot rename %s into place: %s", tmp, g_strerror(-r));
        }
        if (r < 0) {
                unlink(tmp);
                return r;
        }
        (void)fsync_dir_of(path);
        result.file_bytes = w.offset;
        result.duration_ms = (uint64_t)(g_get_monotonic_time() - t0) / 1000;
        *ret = result;
        return 0;
}

/* ---- Checking ---- */

/* The order sections must come in: each type once, VP vp_count times, DISK optional. */
static int check_order(const GArray *sections, uint32_t vp_count, char **ret_error)
{
        static const uint32_t order[] = {VMWP_SAVE_CONFIG, VMWP_SAVE_PARTITION, VMWP_SAVE_VP,
                                         VMWP_SAVE_VMBUS,  VMWP_SAVE_DM,        VMWP_SAVE_MEMORY,
                                         VMWP_SAVE_DISK,   VMWP_SAVE_END};
        guint i = 0;

        for (size_t k = 0; k < G_N_ELEMENTS(order); k++) {
                uint32_t want = order[k] == VMWP_SAVE_VP ? vp_count : 1, n = 0;

                while (i < sections->len && g_array_index(sections, VmwpSaveSection, i).type == order[k]) {
                        n++;
                        i++;
                }
                if (n != want && !(order[k] == VMWP_SAVE_DISK && n == 0))
                        return vmwp_bad_message(ret_error,
                                                "the file has %u sections of type %u where %u belong", n,
                                                order[k], want);
        }
        if (i != sections->len)
                return vmwp_bad_message(ret_error, "section %u (type %u) is out of order", i,
                                        g_array_index(sections, VmwpSaveSection, i).type);
        return 0;
}

int vmwp_save_check(int fd, uint32_t vp_count, GArray **ret_sections, char **ret_error)
{
        g_autoptr(GArray) sections = g_array_new(FALSE, FALSE, sizeof(VmwpSaveSection));
        g_autofree uint8_t *buf = g_malloc(SAVE_CHUNK_BYTES);
        uint8_t header[VMWP_SAVE_HEADER_BYTES];
        uint64_t file_bytes, offset = VMWP_SAVE_HEADER_BYTES;
        uint32_t count;
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t)st.st_size < VMWP_SAVE_HEADER_BYTES || read_all(fd, header, sizeof(header), 0) < 0)
                return vmwp_bad_message(ret_error, "the file is %jd bytes, shorter than its header",
                                        (intmax_t)st.st_size);
        r = vmwp_format_header_check(header, VMWP_SAVE_MAGIC, VMWP_SAVE_VERSION, "a saved VM", ret_error);
        if (r < 0)
                return r;
        file_bytes = get_le64(header + 16);
        count = get_le32(header + 24);
        if (file_bytes != (uint64_t)st.st_size)
                return vmwp_bad_message(ret_error,
                                        "the file is %jd bytes, its header says %" G_GUINT64_FORMAT
                                        " (torn or cut)",
                                        (intmax_t)st.st_size, file_bytes);
        if (count > vp_count + 7u)
                return vmwp_bad_message(ret_error, "the header counts %u sections, at most %u belong", count,
                                        vp_count + 7u);
        for (uint32_t i = 0; i < count; i++) {
                uint8_t sh[VMWP_SAVE_SECTION_HEADER_BYTES];
                VmwpSaveSection s;
                uint32_t sum = vmwp_crc32(0, NULL, 0);

                if (file_bytes - offset < sizeof(sh) || read_all(fd, sh, sizeof(sh), offset) < 0)
                        return vmwp_bad_message(ret_error, "section %u's header runs past the end", i);
                r = vmwp_section_header_parse(sh, i, VMWP_SAVE_CONFIG, VMWP_SAVE_END, offset, &s, ret_error);
                if (r < 0)
                        return r;
                if (s.length > file_bytes - s.offset || SAVE_PAD(s.length) > file_bytes - s.offset)
                        return vmwp_bad_message(ret_error,
                                                "section %u (type %u) says %" G_GUINT64_FORMAT
                                                " bytes, past the end of the file",
                                                i, s.type, s.length);
                if (s.type != VMWP_SAVE_MEMORY && s.type != VMWP_SAVE_DISK &&
                    s.length > VMWP_SAVE_SMALL_SECTION_MAX)
                        return vmwp_bad_message(ret_error,
                                                "section %u (type %u) is %" G_GUINT64_FORMAT
                                                " bytes, over its limit",
                                                i, s.type, s.length);
                for (uint64_t done = 0; done < SAVE_PAD(s.length);) {
                        size_t n = (size_t)MIN((uint64_t)SAVE_CHUNK_BYTES, SAVE_PAD(s.length) - done);
                        size_t payload = (size_t)(done < s.length ? MIN((uint64_t)n, s.length - done) : 0);

                        r = read_all(fd, buf, n, s.offset + done);
                        if (r < 0)
                                return r == -EBADMSG
                                               ? vmwp_bad_message(ret_error, "section %u is cut short", i)
                                               : r;
                        sum = vmwp_crc32(sum, buf, payload);
                        for (size_t k = payload; k < n; k++)
                                if (buf[k] != 0)
                                        return vmwp_bad_message(ret_error, "section %u's padding is not zero",
                                                                i);
                        done += n;
                }
                if (sum != get_le32(sh + 16))
                        return vmwp_bad_message(ret_error, "section %u (type %u) fails its checksum", i,
                                                s.type);
                g_array_append_val(sections, s);
                offset = s.offset + SAVE_PAD(s.length);
        }
        if (offset != file_bytes)
                return vmwp_bad_message(ret_error, "%" G_GUINT64_FORMAT " bytes follow the last section",
                                        file_bytes - offset);
        r = check_order(sections, vp_count, ret_error);
        if (r < 0)
                return r;
        *ret_sections = g_steal_pointer(&sections);
        return 0;
}

/* ---- Loading ---- */

static const VmwpSaveSection *find_section(const GArray *sections, uint32_t type, uint32_t nth)
{
        for (guint i = 0; i < sections->len; i++) {
                const VmwpSaveSection *s = &g_array_index(sections, VmwpSaveSection, i);

                if (s->type == type && nth-- == 0)
                        return s;
        }
        return NULL;
}

static uint8_t *read_section(int fd, const VmwpSaveSection *s)
{
        uint8_t *data = g_malloc(s->length + 1);

        if (read_all(fd, data, s->length, s->offset) < 0) {
                g_free(data);
                return NULL;
        }
        return data;
}

int vmwp_save_read_config(int fd, const GArray *sections, uint32_t *ret_vp_count, uint64_t *ret_maximum_bytes,
                          uint64_t *ret_visible_bytes, char **ret_error)
{
        const VmwpSaveSection *s = find_section(sections, VMWP_SAVE_CONFIG, 0);
        g_autofree uint8_t *data = s ? read_section(fd, s) : NULL;
        VmwpStateReader r;
        uint32_t vps;
        uint64_t maximum, visible;

        if (!data)
                return vmwp_bad_message(ret_error, "the CONFIG section cannot be read");
        r = vmwp_state_reader(data, s->length);
        vps = vmwp_state_get_u32(&r);
        maximum = vmwp_state_get_u64(&r);
        visible = vmwp_state_get_u64(&r);
        if (!vmwp_state_done(&r))
                return vmwp_bad_message(
                        ret_error, "the CONFIG section is %" G_GUINT64_FORMAT " bytes, not 20", s->length);
        if (vps == 0 || vps > HV_MAX_VPS_PER_PARTITION || visible == 0 || visible % HV_PAGE_SIZE != 0 ||
            visible > maximum || maximum % HV_PAGE_SIZE != 0)
                return vmwp_bad_message(ret_error,
                                        "the saved geometry (%u VPs, %" G_GUINT64_FORMAT
                                        " of %" G_GUINT64_FORMAT " bytes visible) is impossible",
                                        vps, visible, maximum);
        *ret_vp_count = vps;
        *ret_maximum_bytes = maximum;
        *ret_visible_bytes = visible;
        return 0;
}

/* Reads n bytes of a section's payload: from the file, or from `mem` (a stream's
 * section, read whole). */
static int read_payload(int fd, const uint8_t *mem, void *dst, size_t n, uint64_t offset)
{
        if (!mem)
                return read_all(fd, dst, n, offset);
        memcpy(dst, mem + offset, n);
        return 0;
}

/* Runs of (u64 at | kind, u64 bytes, bytes), page-aligned, increasing, inside `limit`,
 * copied to `ram` (or written to `out_fd` when ram is NULL). A stream's runs may also
 * say zero or discarded pages (`kinds`): those are punched out of `ram_fd`. The
 * payload is the file's at s->offset, or `mem` (then s->offset is 0). */
static int load_runs(int fd, const uint8_t *mem, const VmwpSaveSection *s, uint64_t skip, uint64_t limit,
                     uint8_t *ram, int ram_fd, int out_fd, bool kinds, const char *what, uint64_t *counts,
                     char **ret_error)
{
        g_autofree uint8_t *buf = ram ? NULL : g_malloc(SAVE_CHUNK_BYTES);
        uint64_t pos = skip, next = 0;

        while (pos < s->length) {
                uint8_t run[VMWP_RUN_HEADER_BYTES];
                uint64_t at, len;
                VmwpRunKind kind;
                int r;

                if (s->length - pos < sizeof(run) ||
                    read_payload(fd, mem, run, sizeof(run), s->offset + pos) < 0)
                        return vmwp_bad_message(ret_error, "%s: a run header is cut short", what);
                pos += sizeof(run);
                r = vmwp_run_parse(run, limit, next, s->length - pos, kinds, what, &at, &len, &kind,
                                   ret_error);
                if (r < 0)
                        return r;
                if (counts)
                        counts[kind] += len / HV_PAGE_SIZE;
                if (kind != VMWP_RUN_DATA) {
                        if (fallocate(ram_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at,
                                      (off_t)len) < 0)
                                return vmwp_bad_message(ret_error,
                                                        "%s: cannot clear %" G_GUINT64_FORMAT " bytes: %s",
                                                        what, len, g_strerror(errno));
                        next = at + len;
                        continue;
                }
                for (uint64_t done = 0; done < len;) {
                        size_t n = (size_t)MIN((uint64_t)SAVE_CHUNK_BYTES, len - done);

                        if (ram)
                                r = read_payload(fd, mem, ram + at + done, n, s->offset + pos + done);
                        else {
                                r = read_payload(fd, mem, buf, n, s->offset + pos + done);
                                if (r >= 0)
                                        r = vmwp_pwrite_all(out_fd, buf, n, at + done);
                        }
                        if (r < 0)
                                return vmwp_bad_message(ret_error, "%s: cannot load a run: %s", what,
                                                        g_strerror(-r));
                        done += n;
                }
                pos += len;
                next = at + len;
        }
        return 0;
}

static int load_disk(const VmwpSaveParts *parts, int fd, const uint8_t *mem, const VmwpSaveSection *s,
                     char **ret_error)
{
        SAVE_AUTOCLOSE int disk_fd = -1;
        struct stat st;
        uint8_t slots_le[8];
        uint64_t slots;

        if (s->length < sizeof(slots_le) || read_payload(fd, mem, slots_le, sizeof(slots_le), s->offset) < 0)
                return vmwp_bad_message(ret_error, "DISK: the section is cut short");
        slots = get_le64(slots_le);
        if (!parts->paging_path)
                return vmwp_bad_message(ret_error, "DISK: the saved VM has a paging disk, this worker none");
        disk_fd = open(parts->paging_path, O_WRONLY | O_CLOEXEC);
        if (disk_fd < 0 || fstat(disk_fd, &st) < 0)
                return vmwp_bad_message(ret_error, "DISK: cannot open the paging disk %s: %s",
                                        parts->paging_path, g_strerror(errno));
        if (slots != (uint64_t)st.st_size / HV_PAGE_SIZE)
                return vmwp_bad_message(ret_error,
                                        "DISK: the saved paging disk has %" G_GUINT64_FORMAT
                                        " slots, this one %jd",
                                        slots, (intmax_t)(st.st_size / (off_t)HV_PAGE_SIZE));
        return load_runs(fd, mem, s, sizeof(slots_le), slots * HV_PAGE_SIZE, NULL, -1, disk_fd, false, "DISK",
                         NULL, ret_error);
}

int vmwp_save_load_memory_payload(const VmwpSaveParts *parts, const uint8_t *payload, uint64_t length,
                                  uint64_t counts[3], char **ret_error)
{
        VmwpSaveSection s = {.type = VMWP_SAVE_MEMORY, .offset = 0, .length = length};

        return load_runs(-1, payload, &s, 0, parts->guest_ram->visible_bytes, parts->ram, parts->ram_fd, -1,
                         true, "MEMORY", counts, ret_error);
}

int vmwp_save_load_disk_payload(const VmwpSaveParts *parts, const uint8_t *payload, uint64_t length,
                                char **ret_error)
{
        VmwpSaveSection s = {.type = VMWP_SAVE_DISK, .offset = 0, .length = length};

        return load_disk(parts, -1, payload, &s, ret_error);
}

static int load_partition(const VmwpSaveParts *parts, const uint8_t *data, size_t len, uint64_t *ret_time,
                          char **ret_error)
{
        VmwpStateReader r = vmwp_state_reader(data, data ? len : 0);
        uint64_t time_ns = vmwp_state_get_u64(&r), ballooned = vmwp_state_get_u64(&r);
        size_t n_pfns;

        if (!data || !vmwp_state_done(&r))
                return vmwp_bad_message(ret_error, "PARTITION: the section is malformed");
        (void)vmwp_dm_ballooned(parts->dm, &n_pfns);
        if (ballooned != n_pfns * HV_PAGE_SIZE)
                return vmwp_bad_message(ret_error,
                                        "PARTITION: hvd held %" G_GUINT64_FORMAT
                                        " ballooned bytes, the balloon %zu pages",
                                        ballooned, n_pfns);
        *ret_time = time_ns;
        return 0;
}

/* The balloon's pages go back to hvd as they were: punched and credited. */
static int load_balloon(const VmwpSaveParts *parts, char **ret_error)
{
        size_t n;
        const uint64_t *pfns = vmwp_dm_ballooned(parts->dm, &n);

        for (size_t done = 0; done < n;) {
                size_t chunk = MIN(n - done, (size_t)65536);
                g_autofree bool *accepted = g_new(bool, chunk);
                HvClientPageTally tally;
                int r = hv_client_partition_balloon(parts->hv, parts->partition_id, pfns + done, chunk,
                                                    accepted, &tally, NULL);

                if (r < 0 || tally.accepted != chunk)
                        return vmwp_bad_message(ret_error, "hvd took %u of %zu saved ballooned pages: %s",
                                                r < 0 ? 0 : tally.accepted, chunk,
                                                r < 0 ? hv_client_last_error(parts->hv)
                                                      : "duplicates or outside RAM");
                done += chunk;
        }
        return 0;
}

int vmwp_save_load_state(const VmwpSaveParts *parts, const VmwpSaveState *state, char **ret_error)
{
        uint64_t time_ns = 0;
        int r;

        r = vmwp_vmbus_restore(parts->vmbus, state->vmbus.data, state->vmbus.len, ret_error);
        if (r >= 0)
                r = vmwp_dm_restore(parts->dm, state->dm.data, state->dm.len, ret_error);
        if (r >= 0)
                r = load_partition(parts, state->partition.data, state->partition.len, &time_ns, ret_error);
        if (r >= 0)
                r = load_balloon(parts, ret_error);
        if (r < 0)
                return r;
        r = hv_client_partition_state_set(parts->hv, parts->partition_id, time_ns);
        if (r < 0)
                return vmwp_bad_message(ret_error, "hvd refused the saved reference time: %s",
                                        hv_client_last_error(parts->hv));
        for (uint32_t i = 0; i < parts->vp_count; i++) {
                r = hv_client_vp_state_set(parts->hv, parts->partition_id, state->vps[i].data,
                                           state->vps[i].len);
                if (r < 0)
                        return vmwp_bad_message(ret_error, "hvd refused VP %u's saved state: %s", i,
                                                hv_client_last_error(parts->hv));
        }
        return 0;
}

int vmwp_save_load(const VmwpSaveParts *parts, int fd, const GArray *sections, char **ret_error)
{
        g_autoptr(GPtrArray) held = g_ptr_array_new_with_free_func(g_free);
        g_autofree VmwpSaveBlob *vps = g_new0(VmwpSaveBlob, parts->vp_count);
        VmwpSaveState state = {.vps = vps};
        const VmwpSaveSection *s;
        struct {
                uint32_t type, nth;
                VmwpSaveBlob *blob;
        } wanted[3 + HV_MAX_VPS_PER_PARTITION];
        size_t n_wanted = 0;
        int r;

        s = find_section(sections, VMWP_SAVE_MEMORY, 0);
        r = load_runs(fd, NULL, s, 0, parts->guest_ram->visible_bytes, parts->ram, parts->ram_fd, -1, false,
                      "MEMORY", NULL, ret_error);
        if (r >= 0 && (s = find_section(sections, VMWP_SAVE_DISK, 0)))
                r = load_disk(parts, fd, NULL, s, ret_error);
        if (r < 0)
                return r;
        wanted[n_wanted++] = (typeof(wanted[0])){VMWP_SAVE_VMBUS, 0, &state.vmbus};
        wanted[n_wanted++] = (typeof(wanted[0])){VMWP_SAVE_DM, 0, &state.dm};
        wanted[n_wanted++] = (typeof(wanted[0])){VMWP_SAVE_PARTITION, 0, &state.partition};
        for (uint32_t i = 0; i < parts->vp_count && i < HV_MAX_VPS_PER_PARTITION; i++)
                wanted[n_wanted++] = (typeof(wanted[0])){VMWP_SAVE_VP, i, &vps[i]};
        for (size_t k = 0; k < n_wanted; k++) {
                uint8_t *data;

                s = find_section(sections, wanted[k].type, wanted[k].nth);
                data = s ? read_section(fd, s) : NULL;
                if (!data)
                        return vmwp_bad_message(ret_error, "section type %u cannot be read", wanted[k].type);
                g_ptr_array_add(held, data);
                *wanted[k].blob = (VmwpSaveBlob){.data = data, .len = s->length};
        }
        return vmwp_save_load_state(parts, &state, ret_error);
}
