/* Live migration, the worker's half (worker.proto's "Live migration" section is the
 * contract; vmwp-stream.h the stream). The source's sender runs on its own thread so a
 * slow peer never blocks the worker's main loop, which keeps serving VMBus and vmmsd;
 * it asks the main thread (which owns the hvd connection) for each harvest, a throttle
 * step and the final pause, and blocks only on the stream fd. The destination's receiver
 * runs before the main loop (like --restore). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmwp-save.h"

#define VMWP_MIGRATE_DOWNTIME_DEFAULT_MS 300u
#define VMWP_MIGRATE_DOWNTIME_MAX_MS 60000u
#define VMWP_MIGRATE_ROUNDS_DEFAULT 30u
#define VMWP_MIGRATE_ROUNDS_MAX 1000u
#define VMWP_MIGRATE_BANDWIDTH_MIN (1ull << 20)

typedef struct VmwpMigrateOptions {
        uint32_t max_downtime_ms;           /* 0: the default */
        uint64_t max_bandwidth_bytes_per_s; /* 0: unlimited */
        bool auto_converge;
        uint32_t max_rounds; /* 0: the default */
} VmwpMigrateOptions;

/* worker.proto MigrationProgress. */
typedef struct VmwpMigrateProgress {
        uint32_t round;
        uint64_t ram_bytes, bytes_sent, bytes_remaining, dirty_bytes_per_s, bandwidth_bytes_per_s;
        uint32_t throttle_percent;
        bool paused;
        uint64_t data_pages, zero_pages, discarded_pages;
} VmwpMigrateProgress;

/* worker.proto MigrationOutDone. */
typedef struct VmwpMigrateDone {
        uint64_t bytes_sent, data_pages, zero_pages, discarded_pages;
        uint32_t rounds;
        uint64_t paused_unix_ns, paused_ns;
        uint32_t max_throttle_percent;
        uint64_t duration_ms, final_bytes, disk_bytes;
} VmwpMigrateDone;

/* What the sender needs of the worker, on the main thread. */
typedef struct VmwpMigrateWorkerOps {
        /* Pauses (true) or resumes the VPs; the worker keeps its paused flag. */
        int (*pause)(void *userdata, bool paused, char **ret_error);
        /* Caps the VPs `percent` below the VM's own Maximum (0: its own settings again). */
        int (*throttle)(void *userdata, uint32_t percent, char **ret_error);
        /* The sender ended (main thread): done (ok), or failed/cancelled with a reason;
         * by then a failed migration has left the VM as it was. */
        void (*ended)(void *userdata, bool ok, bool cancelled, const char *reason,
                      const VmwpMigrateDone *done);
} VmwpMigrateWorkerOps;

typedef struct VmwpMigration VmwpMigration;

/* Starts the sender over `fd` (taken: closed when the migration ends). The partition
 * must be live; dirty tracking starts here. vm_paused: the VM was paused already (it
 * stays so, and an abort leaves it so). -EINVAL naming a bad option. */
int vmwp_migration_start(const VmwpSaveParts *parts, int fd, const VmwpMigrateOptions *options,
                         bool vm_paused, const VmwpMigrateWorkerOps *ops, void *userdata, VmwpMigration **ret,
                         char **ret_error);
void vmwp_migration_progress(VmwpMigration *m, VmwpMigrateProgress *ret);
/* Pre-copy: stops the sender (ended() follows, cancelled). */
void vmwp_migration_cancel(VmwpMigration *m);
/* After ended(ok): the VM stays on the destination (commit) or runs here again (abort:
 * tracking off, throttle gone, VPs resumed unless `stay_paused`). */
int vmwp_migration_abort(VmwpMigration *m, bool stay_paused, char **ret_error);
/* Joins the sender (cancelling it first if it still runs) and frees. */
void vmwp_migration_free(VmwpMigration *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpMigration, vmwp_migration_free)

/* ---- Destination ---- */

/* The most memory a stream may carry, in passes over the visible RAM: round 0, the
 * default 30 dirty rounds and the final pass (vmmsd never raises max_rounds). A peer
 * whose stream goes on past it is refused: it would never end. */
#define VMWP_INCOMING_PASSES_MAX (VMWP_MIGRATE_ROUNDS_DEFAULT + 2u)

typedef struct VmwpIncomingResult {
        uint64_t bytes_received, duration_ms, data_pages, zero_pages, discarded_pages;
        uint32_t memory_sections;
} VmwpIncomingResult;

/* Builds the paused partition (created restoring) and its devices once the stream's
 * geometry is known and checked against the worker's own; fills *ret_parts. */
typedef int (*VmwpIncomingPrepareFn)(void *userdata, uint64_t visible_bytes, VmwpSaveParts *ret_parts,
                                     char **ret_error);

/* Reads the whole stream from `fd` (blocking), checking everything against vp_count and
 * maximum_bytes; the partition ends paused with every state restored. -EBADMSG (or
 * the errno) with *ret_error naming what was wrong: the caller destroys the partition. */
int vmwp_incoming_receive(int fd, uint32_t vp_count, uint64_t maximum_bytes, VmwpIncomingPrepareFn prepare,
                          void *userdata, VmwpIncomingResult *ret, char **ret_error);
