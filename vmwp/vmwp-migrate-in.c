/* Live migration's receiver, the destination worker's side: reads the stream
 * (vmwp-stream.h) front to back. Everything in it is untrusted: the header, each
 * section's checksums and length (MEMORY and DISK at most VMWP_STREAM_SECTION_MAX, the
 * rest at most VMWP_SAVE_SMALL_SECTION_MAX), the order of sections, the geometry
 * against the worker's own configuration, and each run against the visible RAM (the
 * checks Save-VM's loader makes, shared in vmwp-save.c and vmwp-section.c). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "hv-abi.h"
#include "vmwp-migrate.h"
#include "vmwp-state.h"

typedef struct Reader {
        int fd;
        uint64_t offset; /* bytes read so far */
} Reader;

/* Exactly len bytes; a stream that ends first is cut short. */
static int read_exact(Reader *rd, void *data, size_t len, const char *what, char **ret_error)
{
        uint8_t *p = data;

        while (len > 0) {
                ssize_t n = read(rd->fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return vmwp_bad_message(ret_error,
                                                "cannot read the stream after %" G_GUINT64_FORMAT
                                                " bytes (%s): %s",
                                                rd->offset, what, g_strerror(errno));
                if (n == 0)
                        return vmwp_bad_message(
                                ret_error, "the stream is cut short after %" G_GUINT64_FORMAT " bytes, in %s",
                                rd->offset, what);
                p += n;
                len -= (size_t)n;
                rd->offset += (uint64_t)n;
        }
        return 0;
}

static const char *type_name(uint32_t type)
{
        static const char *const names[] = {"?",  "CONFIG", "PARTITION", "VP", "VMBUS",
                                            "DM", "MEMORY", "DISK",      "END"};

        return type < G_N_ELEMENTS(names) ? names[type] : "?";
}

/* Where a section may come: CONFIG first; MEMORY any number of times until PARTITION;
 * PARTITION, VP x vp_count, VMBUS, DM once each in that order; DISK any number of
 * times after DM; END after DM. */
typedef enum Stage {
        STAGE_START,  /* CONFIG next */
        STAGE_MEMORY, /* MEMORY or PARTITION */
        STAGE_VPS,    /* VP until vp_count, then VMBUS */
        STAGE_DM,     /* DM */
        STAGE_TAIL,   /* DISK or END */
} Stage;

static bool section_allowed(Stage stage, uint32_t type, uint32_t vps_seen, uint32_t vp_count)
{
        switch (stage) {
        case STAGE_START:
                return type == VMWP_SAVE_CONFIG;
        case STAGE_MEMORY:
                return type == VMWP_SAVE_MEMORY || type == VMWP_SAVE_PARTITION;
        case STAGE_VPS:
                return vps_seen < vp_count ? type == VMWP_SAVE_VP : type == VMWP_SAVE_VMBUS;
        case STAGE_DM:
                return type == VMWP_SAVE_DM;
        case STAGE_TAIL:
                return type == VMWP_SAVE_DISK || type == VMWP_SAVE_END;
        }
        return false;
}

/* What section_allowed() would take next, for the refusal. */
static char *section_expected(Stage stage, uint32_t vps_seen, uint32_t vp_count)
{
        switch (stage) {
        case STAGE_START:
                return g_strdup("CONFIG");
        case STAGE_MEMORY:
                return g_strdup("MEMORY or PARTITION");
        case STAGE_VPS:
                return vps_seen < vp_count ? g_strdup_printf("VP %u of %u", vps_seen + 1, vp_count)
                                           : g_strdup("VMBUS");
        case STAGE_DM:
                return g_strdup("DM");
        case STAGE_TAIL:
                return g_strdup("DISK or END");
        }
        return g_strdup("nothing");
}

int vmwp_incoming_receive(int fd, uint32_t vp_count, uint64_t maximum_bytes, VmwpIncomingPrepareFn prepare,
                          void *userdata, VmwpIncomingResult *ret, char **ret_error)
{
        g_autoptr(GPtrArray) held = g_ptr_array_new_with_free_func(g_free);
        g_autofree VmwpSaveBlob *vps = g_new0(VmwpSaveBlob, vp_count);
        VmwpSaveState state = {.vps = vps};
        VmwpSaveParts parts = {0};
        uint8_t header[VMWP_FORMAT_HEADER_BYTES];
        Reader rd = {.fd = fd};
        uint64_t counts[3] = {0}, t0 = (uint64_t)g_get_monotonic_time();
        uint32_t index = 0, vps_seen = 0, memory_sections = 0;
        uint64_t pages_max = 0;
        Stage stage = STAGE_START;
        int r;

        r = read_exact(&rd, header, sizeof(header), "the header", ret_error);
        if (r < 0)
                return r;
        r = vmwp_format_header_check(header, VMWP_STREAM_MAGIC, VMWP_STREAM_VERSION, "a migration stream",
                                     ret_error);
        if (r < 0)
                return r;
        for (;; index++) {
                uint8_t sh[VMWP_SECTION_HEADER_BYTES];
                g_autofree uint8_t *payload = NULL;
                g_autofree char *what = NULL;
                VmwpSaveSection s;
                uint64_t limit;

                r = read_exact(&rd, sh, sizeof(sh), "a section header", ret_error);
                if (r < 0)
                        return r;
                r = vmwp_section_header_parse(sh, index, VMWP_SAVE_CONFIG, VMWP_SAVE_END,
                                              rd.offset - sizeof(sh), &s, ret_error);
                if (r < 0)
                        return r;
                if (!section_allowed(stage, s.type, vps_seen, vp_count)) {
                        g_autofree char *expected = section_expected(stage, vps_seen, vp_count);

                        return vmwp_bad_message(ret_error,
                                                "section %u (%s) is out of order: %s belongs there", index,
                                                type_name(s.type), expected);
                }
                limit = s.type == VMWP_SAVE_MEMORY || s.type == VMWP_SAVE_DISK ? VMWP_STREAM_SECTION_MAX
                                                                               : VMWP_SAVE_SMALL_SECTION_MAX;
                if (s.length > limit)
                        return vmwp_bad_message(ret_error,
                                                "section %u (%s) says %" G_GUINT64_FORMAT
                                                " bytes, over its limit of %" G_GUINT64_FORMAT,
                                                index, type_name(s.type), s.length, limit);
                what = g_strdup_printf("section %u (%s)", index, type_name(s.type));
                payload = g_malloc(VMWP_SECTION_PAD(s.length) + 1);
                r = read_exact(&rd, payload, VMWP_SECTION_PAD(s.length), what, ret_error);
                if (r >= 0)
                        r = vmwp_section_payload_check(payload, s.length, sh, index, ret_error);
                if (r < 0)
                        return r;

                switch (s.type) {
                case VMWP_SAVE_CONFIG: {
                        VmwpStateReader sr = vmwp_state_reader(payload, s.length);
                        uint32_t vps_in = vmwp_state_get_u32(&sr);
                        uint64_t maximum = vmwp_state_get_u64(&sr), visible = vmwp_state_get_u64(&sr);

                        if (!vmwp_state_done(&sr))
                                return vmwp_bad_message(ret_error,
                                                        "the CONFIG section is %" G_GUINT64_FORMAT
                                                        " bytes, not 20",
                                                        s.length);
                        if (vps_in != vp_count || maximum != maximum_bytes)
                                return vmwp_bad_message(
                                        ret_error,
                                        "the incoming VM has %u VPs and %" G_GUINT64_FORMAT
                                        " bytes maximum; this worker's definition %u and %" G_GUINT64_FORMAT,
                                        vps_in, maximum, vp_count, maximum_bytes);
                        if (visible == 0 || visible % HV_PAGE_SIZE != 0 || visible > maximum)
                                return vmwp_bad_message(ret_error,
                                                        "the incoming VM's visible memory (%" G_GUINT64_FORMAT
                                                        " bytes) is impossible",
                                                        visible);
                        pages_max = visible / HV_PAGE_SIZE * VMWP_INCOMING_PASSES_MAX;
                        r = prepare(userdata, visible, &parts, ret_error);
                        if (r < 0)
                                return r;
                        stage = STAGE_MEMORY;
                        break;
                }
                case VMWP_SAVE_MEMORY:
                        r = vmwp_save_load_memory_payload(&parts, payload, s.length, counts, ret_error);
                        if (r < 0)
                                return r;
                        memory_sections++;
                        if (counts[VMWP_RUN_DATA] + counts[VMWP_RUN_ZERO] + counts[VMWP_RUN_DISCARD] >
                            pages_max)
                                return vmwp_bad_message(
                                        ret_error,
                                        "the stream's memory records cover more than %u passes over the "
                                        "VM's %" G_GUINT64_FORMAT " pages (%u MEMORY sections) and it has "
                                        "not ended: a source sends at most round 0, %u dirty rounds and "
                                        "the final pass",
                                        VMWP_INCOMING_PASSES_MAX, pages_max / VMWP_INCOMING_PASSES_MAX,
                                        memory_sections, VMWP_MIGRATE_ROUNDS_DEFAULT);
                        break;
                case VMWP_SAVE_PARTITION:
                        state.partition = (VmwpSaveBlob){.data = payload, .len = s.length};
                        g_ptr_array_add(held, g_steal_pointer(&payload));
                        stage = STAGE_VPS;
                        break;
                case VMWP_SAVE_VP:
                        vps[vps_seen++] = (VmwpSaveBlob){.data = payload, .len = s.length};
                        g_ptr_array_add(held, g_steal_pointer(&payload));
                        break;
                case VMWP_SAVE_VMBUS:
                        state.vmbus = (VmwpSaveBlob){.data = payload, .len = s.length};
                        g_ptr_array_add(held, g_steal_pointer(&payload));
                        stage = STAGE_DM;
                        break;
                case VMWP_SAVE_DM:
                        state.dm = (VmwpSaveBlob){.data = payload, .len = s.length};
                        g_ptr_array_add(held, g_steal_pointer(&payload));
                        stage = STAGE_TAIL;
                        break;
                case VMWP_SAVE_DISK:
                        r = vmwp_save_load_disk_payload(&parts, payload, s.length, ret_error);
                        if (r < 0)
                                return r;
                        break;
                case VMWP_SAVE_END:
                        if (s.length != 0)
                                return vmwp_bad_message(ret_error, "the END section is not empty");
                        r = vmwp_save_load_state(&parts, &state, ret_error);
                        if (r < 0)
                                return r;
                        *ret = (VmwpIncomingResult){
                                .bytes_received = rd.offset,
                                .duration_ms = ((uint64_t)g_get_monotonic_time() - t0) / 1000,
                                .data_pages = counts[VMWP_RUN_DATA],
                                .zero_pages = counts[VMWP_RUN_ZERO],
                                .discarded_pages = counts[VMWP_RUN_DISCARD],
                                .memory_sections = memory_sections,
                        };
                        return 0;
                }
        }
}
