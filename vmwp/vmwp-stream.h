/* The live-migration stream (worker.proto MigrateOut / --incoming-fd): Save-VM's
 * section format (vmwp-save.h) written once, front to back, to a socket or pipe.
 *
 *   header (32 bytes): "VMMSLIVE", u32 version, u32 header bytes (32), u64 0, u32 0,
 *                      u32 CRC-32 of the 28 bytes before it (a stream's length and
 *                      section count are not known when it starts)
 *   sections: exactly the save file's framing (24-byte header with the payload's
 *             length and CRC-32 and its own CRC-32, payload padded with zeros to 8)
 *
 * Order: CONFIG (u32 VPs, u64 maximum bytes, u64 visible bytes: checked against the
 * destination's configuration before anything else is read), then any number of
 * MEMORY sections (round 0, then each dirty round; a section's payload is at most
 * VMWP_STREAM_SECTION_MAX), then, written while the source is paused, MEMORY sections
 * with the last dirty set, PARTITION, one VP per VP, VMBUS, DM, DISK (optional), END.
 * MEMORY may appear again after PARTITION only in the order written above; anything
 * else out of place is refused by name.
 *
 * MEMORY runs: u64 gpa | kind, u64 bytes, then `bytes` of data for a data run only.
 * gpa and bytes are page-aligned and inside the visible RAM; the kind sits in the
 * gpa's low bits (always 0 in a save file, which only holds data runs):
 *   VMWP_RUN_DATA     the pages' bytes follow
 *   VMWP_RUN_ZERO     the pages are all zeros (nothing follows)
 *   VMWP_RUN_DISCARD  the pages were given to the balloon: punched, nothing follows
 * Runs inside one section do not overlap and increase; across sections a later run
 * for a page replaces what an earlier one said. */
#pragma once

#include <stdint.h>

#define VMWP_STREAM_MAGIC "VMMSLIVE"
#define VMWP_STREAM_VERSION 1u
/* A stream MEMORY section's payload at most; a receiver refuses larger ones. */
#define VMWP_STREAM_SECTION_MAX (4u << 20)

typedef enum VmwpRunKind {
        VMWP_RUN_DATA = 0,
        VMWP_RUN_ZERO = 1,
        VMWP_RUN_DISCARD = 2,
} VmwpRunKind;
#define VMWP_RUN_KIND_MASK 0xfffu
