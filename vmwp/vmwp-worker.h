/* The VM worker: one per running VM. Creates the partition through hvd, loads the
 * guest, starts its VPs, and carries its console. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmwp-dm.h"

typedef struct VmwpConfig {
        char *name;
        uint32_t vp_count;
        uint64_t startup_bytes;
        uint64_t maximum_bytes;
        char *workload;
        char *cmdline_extra; /* more key=value boot parameters */
        char *guest_path;
        char *hvd_socket;
        char *console_log;     /* NULL: none */
        char *paging_file;     /* the synthetic disk; NULL: next to the console log, or in /tmp */
        uint64_t paging_bytes; /* its size; 0: VMWP_PAGING_DEFAULT_FACTOR x startup */
        bool console_stdout;
        /* Set-VMProcessor's settings; zeros are hvd's defaults (no reserve, no cap, 100). */
        uint32_t reserve_pct;
        uint32_t maximum_pct;
        uint32_t relative_weight;
        bool concurrent_vps;    /* the guest shares no atomics between VPs: do not gang them */
        bool cpu_compatibility; /* the guest reads the normalized CPUID (hv.proto PartitionCreate) */
} VmwpConfig;

typedef struct VmwpWorker VmwpWorker;

/* Called when the guest's VPs have all stopped; `crashed` when one faulted. */
typedef void (*VmwpStoppedFn)(VmwpWorker *w, bool crashed, void *userdata);

void vmwp_config_clear(VmwpConfig *config);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmwpConfig, vmwp_config_clear)
int vmwp_config_cmdline(const VmwpConfig *config, char **ret_cmdline, char **ret_error);

int vmwp_worker_new(const VmwpConfig *config, VmwpWorker **ret, char **ret_error);
void vmwp_worker_free(VmwpWorker *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpWorker, vmwp_worker_free)

int vmwp_worker_start(VmwpWorker *w, char **ret_error);
/* Save-VM: pauses the VM, writes its whole state to `path` (vmwp-save.h) and leaves it
 * paused; the caller destroys the partition. With keep_running (a checkpoint) the VM
 * runs on afterwards (unless it was paused). On failure the VM runs again as before
 * (unless it was paused) and no file is left at `path`'s temporary name. */
typedef struct VmwpSaveResult VmwpSaveResult;
int vmwp_worker_save(VmwpWorker *w, const char *path, bool keep_running, VmwpSaveResult *ret,
                     char **ret_error);
/* Instead of vmwp_worker_start: the VM from a file vmwp_worker_save wrote, checked
 * whole first; it runs from where it was saved, or with `paused` stays paused (its VPs
 * never ran here) until vmwp_worker_pause(w, false): a moved VM waits for its source's
 * commit. */
int vmwp_worker_restore(VmwpWorker *w, const char *path, bool paused, char **ret_error);
int vmwp_worker_stop(VmwpWorker *w);
void vmwp_worker_set_stopped_handler(VmwpWorker *w, VmwpStoppedFn fn, void *userdata);
/* The socket to watch; call vmwp_worker_dispatch when it is readable. */
int vmwp_worker_fd(VmwpWorker *w);
uint64_t vmwp_worker_partition_id(VmwpWorker *w);
bool vmwp_worker_paused(VmwpWorker *w);
/* Why the guest stopped (the first VP's reason), or "" while it runs. */
const char *vmwp_worker_stop_reason(VmwpWorker *w);
/* Asks the guest to shut down (it halts every VP); the stopped handler runs when it has. */
int vmwp_worker_request_shutdown(VmwpWorker *w);
int vmwp_worker_pause(VmwpWorker *w, bool paused, char **ret_error);
int vmwp_worker_dispatch(VmwpWorker *w);
/* Replaces the VM's processor settings in hvd (applies within one scheduling period);
 * hvd's refusal (range, admission) is in *ret_error. */
int vmwp_worker_set_processor(VmwpWorker *w, uint32_t reserve_pct, uint32_t maximum_pct,
                              uint32_t relative_weight, char **ret_error);
/* Dynamic Memory: vmmsd's MemoryAdjust (see vmwp_dm_adjust) and the MemoryStatus figures. */
int vmwp_worker_memory_adjust(VmwpWorker *w, int64_t delta_bytes, char **ret_error);
int vmwp_worker_memory_status(VmwpWorker *w, VmwpMemoryStatus *ret);
/* Called when the Dynamic Memory figures should reach vmmsd at once (vmwp_dm_set_status_handler). */
void vmwp_worker_set_memory_status_handler(VmwpWorker *w, VmwpDmStatusFn fn, void *userdata);
/* ---- Live migration (worker.proto's contract; vmwp-migrate.h does the work) ---- */
typedef enum VmwpMigrationPhase {
        VMWP_MIGRATION_NONE = 0, /* the values are worker.proto MigrationPhase's */
        VMWP_MIGRATION_OUT_PRECOPY = 1,
        VMWP_MIGRATION_OUT_DONE = 2,
        VMWP_MIGRATION_INCOMING_DONE = 3,
} VmwpMigrationPhase;
typedef struct VmwpMigrateOptions VmwpMigrateOptions;
typedef struct VmwpMigrateProgress VmwpMigrateProgress;
typedef struct VmwpMigrateDone VmwpMigrateDone;
typedef struct VmwpIncomingResult VmwpIncomingResult;
typedef void (*VmwpMigrationEndedFn)(VmwpWorker *w, bool ok, bool cancelled, const char *reason,
                                     const VmwpMigrateDone *done, void *userdata);
void vmwp_worker_set_migration_handler(VmwpWorker *w, VmwpMigrationEndedFn fn, void *userdata);
VmwpMigrationPhase vmwp_worker_migration_phase(VmwpWorker *w);
/* MigrateOut: takes `fd` (closed on every path). The handler reports the end. */
int vmwp_worker_migrate_out(VmwpWorker *w, int fd, const VmwpMigrateOptions *options, char **ret_error);
void vmwp_worker_migration_progress(VmwpWorker *w, VmwpMigrateProgress *ret);
/* Pre-copy: stops it (the handler follows). After the stream is done: abort, the VM as
 * it was before MigrateOut (resume: running whatever it was). */
int vmwp_worker_migrate_cancel(VmwpWorker *w, bool resume, char **ret_error);
/* Instead of vmwp_worker_start: the VM from a migration stream on `fd` (taken), left
 * paused with everything restored. */
int vmwp_worker_incoming(VmwpWorker *w, int fd, char **ret_error);
const VmwpIncomingResult *vmwp_worker_incoming_result(VmwpWorker *w);
/* The destination's VM ran for the first time. */
void vmwp_worker_migration_resumed(VmwpWorker *w);

/* The paging disk's default size, in startup memories: bounded by what the VM starts
 * with, never by its (Dynamic Memory) maximum, which may be 1 TB. vmmsd sets it. */
#define VMWP_PAGING_DEFAULT_FACTOR 4u
