/* Save-VM's file (STATE/saved/<id>.vmrs): a versioned header, then checksummed
 * sections. Written to a temporary name, fsynced and renamed into place, so a save
 * killed midway leaves the previous file (or none); read back only after the whole
 * file has been checked.
 *
 *   header (32 bytes): "VMMSVMRS", u32 version, u32 header bytes (32), u64 file bytes,
 *                      u32 section count, u32 CRC-32 of the 28 bytes before it
 *   section (24 bytes + payload padded with zeros to 8): u32 type, u32 0, u64 payload
 *                      bytes, u32 CRC-32 of the payload, u32 CRC-32 of the 20 bytes before
 *
 * Sections, all little-endian, in this order: CONFIG (u32 VPs, u64 maximum bytes, u64
 * visible bytes), PARTITION (u64 the guest's reference time, u64 ballooned bytes),
 * one VP per VP (a packed hv.proto VpState), VMBUS and DM (vmwp_vmbus_save,
 * vmwp_dm_save), MEMORY (runs of u64 gpa, u64 bytes, the bytes: only pages that are
 * not holes and not all zeros), DISK (u64 slots, then runs as MEMORY's over the paging
 * disk), END (empty, last). */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "vmwp-dm.h"
#include "vmwp-section.h"
#include "vmwp-vmbus.h"

#define VMWP_SAVE_MAGIC "VMMSVMRS"
#define VMWP_SAVE_VERSION 1u
#define VMWP_SAVE_HEADER_BYTES VMWP_FORMAT_HEADER_BYTES
#define VMWP_SAVE_SECTION_HEADER_BYTES VMWP_SECTION_HEADER_BYTES
#define VMWP_SAVE_SMALL_SECTION_MAX (16u << 20) /* every section but MEMORY and DISK */

typedef enum VmwpSaveSectionType {
        VMWP_SAVE_CONFIG = 1,
        VMWP_SAVE_PARTITION = 2,
        VMWP_SAVE_VP = 3,
        VMWP_SAVE_VMBUS = 4,
        VMWP_SAVE_DM = 5,
        VMWP_SAVE_MEMORY = 6,
        VMWP_SAVE_DISK = 7,
        VMWP_SAVE_END = 8,
} VmwpSaveSectionType;

/* Checks the whole file: header, every section's bounds and checksums, the order and
 * count of sections (vp_count VP sections). Returns 0 and the sections in file order,
 * or -EBADMSG (-EIO for a read error) with *ret_error naming what is wrong. */
int vmwp_save_check(int fd, uint32_t vp_count, GArray **ret_sections, char **ret_error);

/* What a save and a restore work on: the worker's parts. */
typedef struct VmwpSaveParts {
        HvClient *hv;
        uint64_t partition_id;
        int ram_fd;
        uint8_t *ram;
        VmwpGuestRam *guest_ram;
        VmwpVmbus *vmbus;
        VmwpDm *dm;
        const char *paging_path;
        uint32_t vp_count;
} VmwpSaveParts;

typedef struct VmwpSaveResult {
        uint64_t file_bytes;
        uint64_t memory_bytes; /* guest RAM written (non-zero pages) */
        uint64_t disk_bytes;
        uint64_t duration_ms;
} VmwpSaveResult;

/* Writes the paused partition's file to `path` (through path.tmp, fsync, rename). */
int vmwp_save_write(const VmwpSaveParts *parts, const char *path, VmwpSaveResult *ret, char **ret_error);

/* The CONFIG section of a checked file: the geometry the partition must be created with. */
int vmwp_save_read_config(int fd, const GArray *sections, uint32_t *ret_vp_count, uint64_t *ret_maximum_bytes,
                          uint64_t *ret_visible_bytes, char **ret_error);
/* Loads memory, disk, device state and VP state into a partition created restoring
 * with the file's geometry; the partition stays paused. */
int vmwp_save_load(const VmwpSaveParts *parts, int fd, const GArray *sections, char **ret_error);

/* ---- The pieces a live migration's stream shares with the file (vmwp-stream.h) ---- */

/* CONFIG, from the parts' geometry. */
int vmwp_save_write_config(VmwpSectionWriter *w, const VmwpSaveParts *parts);
/* PARTITION, one VP per VP, VMBUS, DM: read from hvd and the devices of a paused
 * partition (main thread: it calls hvd). */
int vmwp_save_write_device_state(VmwpSectionWriter *w, const VmwpSaveParts *parts, char **ret_error);
/* DISK sections of at most section_max payload bytes each (0: one), when the VM has a
 * paging disk; *ret_bytes its data. */
int vmwp_save_write_disk(VmwpSectionWriter *w, const VmwpSaveParts *parts, uint64_t section_max,
                         uint64_t *ret_bytes, char **ret_error);

typedef struct VmwpSaveBlob {
        const uint8_t *data;
        size_t len;
} VmwpSaveBlob;
/* The device and VP sections' payloads (vps: vp_count of them), already checked. */
typedef struct VmwpSaveState {
        VmwpSaveBlob partition, vmbus, dm;
        VmwpSaveBlob *vps;
} VmwpSaveState;
/* Restores devices, balloon, reference time and VPs (in that order) into a paused
 * partition created restoring, whose memory is loaded. */
int vmwp_save_load_state(const VmwpSaveParts *parts, const VmwpSaveState *state, char **ret_error);
/* A stream's MEMORY payload (runs of every kind; later runs for a page win) and DISK
 * payload, read whole; counts[kind] += pages. */
int vmwp_save_load_memory_payload(const VmwpSaveParts *parts, const uint8_t *payload, uint64_t length,
                                  uint64_t counts[3], char **ret_error);
int vmwp_save_load_disk_payload(const VmwpSaveParts *parts, const uint8_t *payload, uint64_t length,
                                char **ret_error);
