/* The section format Save-VM's file and the live-migration stream share (vmwp-save.h
 * and vmwp-stream.h describe the two): a 32-byte header, then sections of a 24-byte
 * header (type, payload length, payload CRC-32, header CRC-32) and a payload padded
 * with zeros to 8 bytes. One writer, one header check and one run check serve both. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmwp-stream.h"

#define VMWP_FORMAT_HEADER_BYTES 32u
#define VMWP_SECTION_HEADER_BYTES 24u
#define VMWP_SECTION_PAD(n) (((n) + 7) & ~(uint64_t)7)
#define VMWP_RUN_HEADER_BYTES 16u

typedef struct VmwpSaveSection {
        uint32_t type;
        uint64_t offset; /* of the payload in the file (a stream: bytes before it) */
        uint64_t length;
} VmwpSaveSection;

/* Where a stream writer's bytes go: 0 or a negative errno (the migration is over). */
typedef int (*VmwpSectionWriteFn)(void *ctx, const void *data, size_t len);

typedef struct VmwpSectionWriter {
        /* A file: payloads are written in place with pwrite, each header when its
         * section ends. A stream (write_fn set): a section is gathered in `pending` and
         * written whole, header first, when it ends. */
        int fd;
        VmwpSectionWriteFn write_fn;
        void *write_ctx;
        GByteArray *pending;
        uint64_t offset;      /* end of what is written */
        uint64_t section_at;  /* the open section's header */
        uint64_t section_len; /* its payload so far */
        uint32_t section_type;
        uint32_t section_crc;
        uint32_t sections;
} VmwpSectionWriter;

uint32_t vmwp_crc32(uint32_t sum, const void *data, size_t len);
/* pwrite() all of `data` at `offset`, across short writes and EINTR: 0 or -errno. */
int vmwp_pwrite_all(int fd, const void *data, size_t len, uint64_t offset);
/* Sets *ret_error from the format and returns -EBADMSG: how a reader of a saved state
 * or a migration stream refuses what it was given. */
int vmwp_bad_message(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
uint32_t vmwp_le32(const uint8_t *p);
uint64_t vmwp_le64(const uint8_t *p);
void vmwp_put_le32(uint8_t *p, uint32_t v);
void vmwp_put_le64(uint8_t *p, uint64_t v);

void vmwp_section_writer_init_stream(VmwpSectionWriter *w, VmwpSectionWriteFn fn, void *ctx);
void vmwp_section_writer_clear(VmwpSectionWriter *w);
void vmwp_section_begin(VmwpSectionWriter *w, uint32_t type);
int vmwp_section_append(VmwpSectionWriter *w, const void *data, size_t len);
int vmwp_section_end(VmwpSectionWriter *w);
int vmwp_section_whole(VmwpSectionWriter *w, uint32_t type, const void *data, size_t len);
/* One MEMORY/DISK run: its header, and the bytes for a data run. */
int vmwp_section_append_run(VmwpSectionWriter *w, uint64_t at, VmwpRunKind kind, const uint8_t *data,
                            uint64_t len);

/* The 32-byte header: magic, version, header bytes, total bytes and section count (0
 * for a stream, which knows neither when it starts), CRC. */
void vmwp_format_header_encode(uint8_t out[VMWP_FORMAT_HEADER_BYTES], const char *magic, uint32_t version,
                               uint64_t total_bytes, uint32_t sections);
/* Checks magic, checksum, version and size; -EBADMSG naming what is wrong. */
int vmwp_format_header_check(const uint8_t header[VMWP_FORMAT_HEADER_BYTES], const char *magic,
                             uint32_t version, const char *what, char **ret_error);
/* A section header: its checksum, a known type (first..last), the reserved word. The
 * payload lies after `offset` + the header. */
int vmwp_section_header_parse(const uint8_t header[VMWP_SECTION_HEADER_BYTES], uint32_t index,
                              uint32_t first_type, uint32_t last_type, uint64_t offset, VmwpSaveSection *ret,
                              char **ret_error);
/* A payload read whole with its padding: the CRC and that the padding is zeros. */
int vmwp_section_payload_check(const uint8_t *payload, uint64_t length, const uint8_t header[24],
                               uint32_t index, char **ret_error);

/* A run header inside a section: gpa (low bits: the kind), bytes. Page-aligned, not
 * empty, inside `limit`, at or after `next` (runs of one section increase), a data
 * run's bytes within the `remaining` payload; kinds other than data only when
 * `kinds_allowed`. On success *ret_at is the page-aligned address. */
int vmwp_run_parse(const uint8_t run[VMWP_RUN_HEADER_BYTES], uint64_t limit, uint64_t next,
                   uint64_t remaining, bool kinds_allowed, const char *what, uint64_t *ret_at,
                   uint64_t *ret_len, VmwpRunKind *ret_kind, char **ret_error);
