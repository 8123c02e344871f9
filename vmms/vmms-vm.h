/* The VM object: its definition, its state machine, its job, and every operation on
 * one VM (vmms-vm.c). An engine (vmms-engine.h) runs it; the manager keeps the
 * registry; the APIs reach these operations through the operation table. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmms-call.h"
#include "vmms-definition.h"
#include "vmms-error.h"
#include "vmms-events.h"
#include "vmms-store.h"

struct VmmsEngineMigration;    /* vmms-engine.h */
struct VmmsEngineDirectTarget; /* vmms-engine.h */

typedef enum VmmsVmAction {
        VMMS_ACTION_START,
        VMMS_ACTION_STOP,
        VMMS_ACTION_PAUSE,
        VMMS_ACTION_RESUME,
        VMMS_ACTION_REMOVE,
        VMMS_ACTION_SET_PROCESSOR_COUNT,
        VMMS_ACTION_SET_PROCESSOR_COMPATIBILITY,
        VMMS_ACTION_SET_STARTUP_MEMORY,
        VMMS_ACTION_SET_WORKLOAD,
        VMMS_ACTION_SAVE,
        VMMS_ACTION_MIGRATE,
        VMMS_ACTION_CHECKPOINT,
        VMMS_ACTION_RESTORE_CHECKPOINT,
        VMMS_ACTION_SET_DEVICES,
        VMMS_ACTION_COUNT,
} VmmsVmAction;

const char *vmms_vm_action_to_string(VmmsVmAction action);
/* Whether `action` is allowed in `state`; if not, a NotAllowed error naming both. */
bool vmms_vm_action_allowed(const char *name, VmmsVmState state, VmmsVmAction action, VmmsError *error);

typedef struct VmmsVm VmmsVm;
typedef struct VmmsEngine VmmsEngine;

/* Answers a finished job's call with the VM; set by the operation table. */
typedef void (*VmmsVmReplyFn)(VmmsVm *vm, VmmsCall *call, void *userdata);

/* What every VM shares: where it is recorded and how a finished job is answered. */
typedef struct VmmsVmContext {
        VmmsStore *store;
        VmmsEvents *events;
        VmmsVmReplyFn reply;
        void *reply_data;
        /* A guest reported at once that its pressure stepped up (a prompt report): the
         * manager may run the memory balancer now. NULL: nothing is told. */
        void (*memory_prompt)(VmmsVm *vm, void *userdata);
        void *memory_prompt_data;
        const char *saved_dir;       /* <id>.vmrs: the state of each Saved VM */
        const char *checkpoints_dir; /* <vm id>/<checkpoint id>.vmrs: live checkpoints' states */
        uint32_t stop_timeout_ms;    /* how long a graceful stop waits before turning off */
        uint32_t force_timeout_ms;   /* the same with -Force */
} VmmsVmContext;

/* The guest's latest Dynamic Memory report. */
typedef struct VmmsMemoryStatus {
        bool reporting;
        bool prompt;          /* sent at once: the guest's pressure stepped up */
        uint64_t received_ns; /* host monotonic time it arrived; 0: never */
        uint64_t committed_bytes;
        uint64_t visible_bytes;
        uint64_t assigned_bytes;
        uint64_t ballooned_bytes;
        uint64_t pending_remove_bytes;
        uint64_t resident_bytes;
        uint64_t page_in_total;
        uint64_t page_out_total;
} VmmsMemoryStatus;

/* Live figures, sampled by the engine once a second. */
typedef struct VmmsVmFigures {
        double cpu_usage_pct; /* of the host's logical processors */
        uint64_t assigned_bytes;
        uint64_t resident_bytes; /* host memory really backing the guest, measured */
} VmmsVmFigures;

struct VmmsVm {
        VmmsVmContext *ctx;
        VmmsVmDefinition def;
        VmmsEngine *engine;
        void *engine_data;     /* the engine's state for this VM while it runs */
        uint64_t partition_id; /* hvd's partition (bundled engine), for counters */
        /* The job in progress (NULL: none): every state-changing operation waits for
         * it to end, so racing clients get a clean "busy" answer. job_call is NULL for
         * jobs vmmsd began itself (automatic start). */
        const char *job;
        VmmsCall *job_call;
        /* Why the VM is being ended when vmmsd knows better than the engine. */
        char *exit_reason;
        /* Started again when the hypervisor is back (AutomaticStartAction). */
        bool restart_pending;
        /* Save-VM: the engine has written the state (the VM becomes Saved as it ends),
         * and the file a start continues from (NULL: a fresh boot). */
        bool save_written;
        uint64_t saved_bytes;
        char *restore_path;
        /* Move-VM: told once the state is saved for the move (or could not be). */
        void (*move_saved)(VmmsVm *vm, const VmmsError *error, void *userdata);
        void *move_saved_data;
        /* Move-VM's destination: the start from the received state stays paused (the VM
         * is Migrating here until the source commits), and what the commit's Resume
         * tells. The source: how far the move is, for Get-VM's Status (-1: no move). */
        bool restore_paused;
        int incoming_fd;      /* a live move's stream for the start (the engine closes it); -1: none */
        bool incoming_direct; /* the engine brings the VM here itself (a direct move) */
        /* A live move (the engine sends the stream while the VM runs): its reports go to
         * move_event; false: a quick one (saved, then sent). */
        bool move_live;
        void (*move_event)(VmmsVm *vm, const struct VmmsEngineMigration *m, void *userdata);
        void (*move_live_started)(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata);
        void *move_event_data;
        void (*move_resumed)(VmmsVm *vm, const VmmsError *error, void *userdata);
        void *move_resumed_data;
        void (*move_restored)(VmmsVm *vm, void *userdata);
        void *move_restored_data;
        int move_percent;
        /* A Saved VM that is this host's again after a move cut short by a restart:
         * started from its state as soon as the hypervisor runs. */
        bool resume_pending;
        /* The checkpoint a checkpoint or restore job is taking or putting back. */
        VmmsCheckpoint *checkpoint;
        /* A state change the store refused (a full disk): written on a later tick. */
        bool unsaved;
        VmmsProcessorSettings job_processor; /* what a live processor job applies */
        VmmsVmFigures figures;
        uint64_t balancer_id; /* the balancer's key for this VM, unique for vmmsd's life */
        VmmsMemoryStatus memory;
};

VmmsVm *vmms_vm_new(VmmsVmContext *ctx, const VmmsVmDefinition *def, VmmsEngine *engine,
                    uint64_t balancer_id);
void vmms_vm_free(VmmsVm *vm);

/* Whether the VM runs in some form (Starting, Running, Paused, Stopping, Migrating). */
bool vmms_vm_is_live(const VmmsVm *vm);
/* hvd's partition name for the VM: [A-Za-z0-9-_.] from its name, and its UUID. */
char *vmms_vm_partition_name(const VmmsVm *vm);

/* Persists vm->def with an event in one transaction, then tells the watchers. */
int vmms_vm_persist(VmmsVm *vm, const char *kind, VmmsError *error, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
/* An event about the VM that changes no definition. */
void vmms_vm_record_event(VmmsVm *vm, const char *kind, const char *message);
/* Get-VM's Status when the VM's engine cannot reach it now ("Not responding (why)"),
 * newly allocated; NULL when it can. */
char *vmms_vm_engine_status(const VmmsVm *vm);

/* Whether no job is in progress on the VM; if one is, a NotAllowed error naming it. */
bool vmms_vm_check_idle(VmmsVm *vm, VmmsError *error);

/* Operations. Each ends `call` (when not NULL) once: with the VM when it has reached
 * its state, or with an error naming what was wrong. */
void vmms_vm_start(VmmsVm *vm, VmmsCall *call);
void vmms_vm_stop(VmmsVm *vm, bool turn_off, bool force, VmmsCall *call);
void vmms_vm_pause(VmmsVm *vm, bool paused, VmmsCall *call);
void vmms_vm_set_processor(VmmsVm *vm, const VmmsProcessorSettings *p, VmmsCall *call);
void vmms_vm_set_memory(VmmsVm *vm, const VmmsMemorySettings *mem, VmmsCall *call);

/* Set-VM (the name is the registry's: vmms_manager_vm_update checks it is free). */
/* NULL fields are unchanged. */
typedef struct VmmsVmSettings {
        const char *name;
        const char *notes;
        VmmsAutoStart automatic_start_action; /* VMMS_AUTO_START_COUNT: unchanged */
        const char *workload;
        const char *boot_args;
        int highly_available; /* 0 or 1; -1: unchanged */
} VmmsVmSettings;
int vmms_vm_update_settings(VmmsVm *vm, const VmmsVmSettings *s, VmmsError *error);
/* Add-/Remove-VMHardDiskDrive and -VMNetworkAdapter (libvirt VMs, while Off). The
 * disk image is probed (vmms-devices.h) and may not be one the VM has already; that no
 * other VM holds it is the registry's check (vmms_manager_vm_add_hard_disk_drive).
 * An adapter's switch is checked with the engine when it can say (network_valid);
 * name NULL or empty: "Network Adapter", numbered if taken. Removals name the disk by
 * its path (or the same file) and the adapter by its name; NotFound otherwise. */
int vmms_vm_add_hard_disk_drive(VmmsVm *vm, const char *path, VmmsError *error);
int vmms_vm_remove_hard_disk_drive(VmmsVm *vm, const char *path, VmmsError *error);
int vmms_vm_add_network_adapter(VmmsVm *vm, const char *switch_name, const char *name, VmmsError *error);
int vmms_vm_remove_network_adapter(VmmsVm *vm, const char *name, VmmsError *error);
/* Whether the VM uses the file at `path` as its kernel, initrd, boot disk or a drive. */
bool vmms_vm_uses_file(const VmmsVm *vm, const char *path);
/* Whether the VM may be removed now. */
bool vmms_vm_removable(VmmsVm *vm, VmmsError *error);
/* Save-VM: Running|Paused -> Saved, the state in ctx->saved_dir/<id>.vmrs; Start-VM
 * continues from it (refused by name where the engine cannot save). */
void vmms_vm_save(VmmsVm *vm, VmmsCall *call);
/* Where a Saved VM's state is. */
char *vmms_vm_saved_path(const VmmsVm *vm);

/* Move-VM, as vmms-migration.c drives it (save, send, restore paused there, commit).
 * The source keeps the VM, and its saved state, until the destination says it runs it:
 *   move_begin   Running: begins the job "move" (or fails `call`)
 *   move_save    Running -> Migrating: the state goes to the saved path and the worker
 *                ends; `fn` runs once, with an error if the VM could not be saved (it
 *                then runs on, or ended as the engine reported)
 *   move_abort   fails the call naming why; a Migrating VM starts again from its saved
 *                state (it continues where it was), a Running one just ends the job
 *   move_in_doubt  the destination may run it (its answer to DONE was lost): fails the
 *                call naming why and keeps the Migrating VM Saved, never starting it
 *                here; the event says what the operator does (Start-VM on one host,
 *                Remove-VM on the other)
 *   move_take_call / move_end   the destination runs it: the call is the mover's to
 *                answer, the job ends (the VM, Migrating, is then removed by the manager) */
bool vmms_vm_move_begin(VmmsVm *vm, VmmsCall *call);
void vmms_vm_move_save(VmmsVm *vm, void (*fn)(VmmsVm *vm, const VmmsError *error, void *userdata),
                       void *userdata);
void vmms_vm_move_abort(VmmsVm *vm, VmmsErrorCode code, const char *why);
void vmms_vm_move_in_doubt(VmmsVm *vm, const char *destination, const char *why);
VmmsCall *vmms_vm_move_take_call(VmmsVm *vm);
void vmms_vm_move_end(VmmsVm *vm);
/* The destination's side:
 *   move_receive  Saved (just received): starts it from its state, paused; it is
 *                Migrating once its worker is up (or Saved/Off with the start's error)
 *   move_commit  Migrating: the source committed: Resume; `fn` runs once, and the VM
 *                is Running, or still Migrating (or Off, its worker gone) with an error
 *   move_discard a live VM that must not run here (no commit came): its worker is
 *                killed and it ends Off, `why` as the event */
void vmms_vm_move_receive(VmmsVm *vm);
/* Live: Off (just received its definition): starts it reading the stream from `fd`
 * (the engine owns fd from here), paused once it is applied, as move_receive. */
void vmms_vm_move_receive_live(VmmsVm *vm, int fd);
/* `fn` runs once when the start of move_receive(_live) ends, restored or not (the
 * VM's state says which); NULL: nobody waits any more. */
void vmms_vm_move_watch_restore(VmmsVm *vm, void (*fn)(VmmsVm *vm, void *userdata), void *userdata);
/* Live, the source: Running -> Migrating while the engine writes the stream to `fd`
 * (the caller keeps its copy); `fn` runs once it began, or with an error (the VM runs
 * on; unsupported: the engine cannot, a quick move may follow). Reports then go to
 * `event` until move_abort, move_in_doubt or move_finish. */
void vmms_vm_move_live(VmmsVm *vm, int fd, uint32_t max_downtime_ms,
                       void (*fn)(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata),
                       void (*event)(VmmsVm *vm, const struct VmmsEngineMigration *m, void *userdata),
                       void *userdata);
/* Direct (the engine moves the VM itself, vmms-engine.h's migrate_direct): whether the
 * VM's engine can; the source's Running -> Migrating as move_live, without a stream;
 * the destination's Off -> Starting, waiting for the VM to arrive, then Migrating
 * while it runs here until move_commit, which then only records it Running. */
bool vmms_vm_moves_direct(const VmmsVm *vm);
void vmms_vm_move_direct(VmmsVm *vm, const struct VmmsEngineDirectTarget *target, const char *data_host,
                         uint32_t max_downtime_ms,
                         void (*fn)(VmmsVm *vm, const VmmsError *error, bool unsupported, void *userdata),
                         void (*event)(VmmsVm *vm, const struct VmmsEngineMigration *m, void *userdata),
                         void *userdata);
void vmms_vm_move_receive_direct(VmmsVm *vm);
/* Live, committed: what runs it here ends (the destination runs it). */
void vmms_vm_move_finish(VmmsVm *vm);
void vmms_vm_move_commit(VmmsVm *vm, const char *source,
                         void (*fn)(VmmsVm *vm, const VmmsError *error, void *userdata), void *userdata);
void vmms_vm_move_discard(VmmsVm *vm, const char *why);
/* After a vmmsd restart, a VM it was giving away: before COMMIT could have left
 * (committing false) the VM is its own again: it runs on if its worker still runs,
 * or continues from its saved state; once COMMIT may have left, it is kept Saved, in
 * doubt, with an event naming what to do. */
void vmms_vm_move_recover(VmmsVm *vm, const char *destination, bool committing);

/* Checkpoint-VM: Running|Paused: the whole state, the VM running on as it was (the
 * engine's save with keep_running); Off: the definition alone. Names are unique per
 * VM (case-insensitive): a duplicate is AlreadyExists, an empty or bad one
 * InvalidArgument. The call ends with the VM. */
void vmms_vm_checkpoint(VmmsVm *vm, const char *name, VmmsCall *call);
/* Restore-VMSnapshot: Off|Running|Paused|Saved -> the checkpoint's settings, and for
 * a live checkpoint Running from a copy of its state (the current run turned off
 * first); an Off checkpoint leaves the VM Off. The checkpoint stays. */
void vmms_vm_restore_checkpoint(VmmsVm *vm, const char *name, VmmsCall *call);
/* Remove-VMSnapshot: its row, then its file. NotFound names the VM and the name. */
int vmms_vm_remove_checkpoint(VmmsVm *vm, const char *name, VmmsError *error);
/* The VM's checkpoints, oldest first (VmmsCheckpoint*). */
int vmms_vm_checkpoints(VmmsVm *vm, GPtrArray **ret_checkpoints, VmmsError *error);
/* checkpoints_dir/<vm id>/<checkpoint_id>.vmrs */
char *vmms_vm_checkpoint_path(const VmmsVm *vm, const char *checkpoint_id);

/* Dynamic Memory: asks the engine to grow (> 0) or shrink the VM's memory. */
void vmms_vm_adjust_memory(VmmsVm *vm, int64_t delta_bytes, const char *reason);
/* Writes a state change the store refused earlier, if there is one. */
void vmms_vm_save_pending(VmmsVm *vm);
/* The engine's live figures, once a second. */
void vmms_vm_sample(VmmsVm *vm);
/* What ran the VM is gone (hvd died): the VM is ended and recorded Off with `why`,
 * and marked for an automatic start if its AutomaticStartAction says so. */
void vmms_vm_host_lost(VmmsVm *vm, const char *why);

/* The callbacks every engine reports through. */
extern const struct VmmsEngineCallbacks vmms_vm_engine_callbacks;
