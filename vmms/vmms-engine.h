/* Engines: what runs a VM. The core (vmms-vm.c) decides what may happen to a VM and
 * records it; an engine only makes it happen and reports back, through the callbacks
 * the core gives it. One file per engine; `bundled` (hvd + one vmwp per VM) is the
 * first. Every op runs on the main thread and never waits for the engine's processes.
 *
 * Outcomes: an op that ends later reports through `done` (exactly once) or, for the
 * lifecycle, through the callbacks: after start() or attach() succeeds the engine
 * calls running() when the VM runs and exited() exactly once when it is gone
 * (including a start that failed). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.pb-c.h"
#include "vmms-vm.h"

typedef struct VmmsEngine VmmsEngine;

/* Live migration, as the engine reports it (the bundled engine: worker.proto). */
typedef enum VmmsEngineMigrationPhase {
        VMMS_ENGINE_MIGRATION_NONE,
        VMMS_ENGINE_MIGRATION_OUT_PRECOPY, /* sending while the VM runs */
        VMMS_ENGINE_MIGRATION_OUT_DONE,    /* the whole stream is written, the VM paused */
        VMMS_ENGINE_MIGRATION_INCOMING_DONE,
} VmmsEngineMigrationPhase;

typedef enum VmmsEngineMigrationKind {
        VMMS_ENGINE_MIGRATION_PROGRESS,
        VMMS_ENGINE_MIGRATION_SENT,     /* the stream is complete; the VM is paused here */
        VMMS_ENGINE_MIGRATION_FAILED,   /* the stream could not be completed; the VM runs on */
        VMMS_ENGINE_MIGRATION_RECEIVED, /* destination: applied whole, paused */
} VmmsEngineMigrationKind;

typedef struct VmmsEngineMigration {
        VmmsEngineMigrationKind kind;
        uint32_t round;
        uint64_t ram_bytes;
        uint64_t bytes_sent;
        uint64_t bytes_remaining;
        uint64_t dirty_bytes_per_s;
        uint64_t bandwidth_bytes_per_s;
        uint32_t throttle_percent;
        uint64_t paused_unix_ns; /* SENT: when the VPs were paused */
        const char *reason;      /* FAILED */
        bool cancelled;          /* FAILED: by migrate_end(commit false) */
} VmmsEngineMigration;

/* Where a direct migration sends a VM (the destination's engine says). */
typedef struct VmmsEngineDirectTarget {
        char *uri;          /* the destination engine's connection, as the source's reaches it */
        char *console_path; /* the VM's console log there */
} VmmsEngineDirectTarget;

static inline void vmms_engine_direct_target_clear(VmmsEngineDirectTarget *t)
{
        g_clear_pointer(&t->uri, g_free);
        g_clear_pointer(&t->console_path, g_free);
}

/* Why a VM the engine ran is gone. */
typedef struct VmmsEngineExit {
        const char *how;          /* how its process ended ("exited with status 1", "killed by signal 9") */
        const char *last_words;   /* the engine's last message about it, or NULL */
        const char *guest_reason; /* the guest stopped itself: its reason; NULL otherwise */
        bool guest_crashed;
        VmmsErrorCode start_error; /* a start that failed: why, as an error code */
} VmmsEngineExit;

typedef struct VmmsEngineRunning {
        bool paused;
        int32_t pid;                        /* the process that runs the VM */
        int64_t started_unix_ms;            /* when it started (kept across a vmmsd restart) */
        uint64_t partition_id;              /* hvd's partition (bundled), 0 for other engines */
        VmmsEngineMigrationPhase migration; /* where a live migration stands (a re-attach mid-move) */
} VmmsEngineRunning;

typedef struct VmmsEngineCallbacks {
        void (*running)(VmmsVm *vm, const VmmsEngineRunning *info);
        void (*exited)(VmmsVm *vm, const VmmsEngineExit *exit);
        void (*memory_status)(VmmsVm *vm, const VmmsMemoryStatus *status);
        void (*migration)(VmmsVm *vm, const VmmsEngineMigration *m);
} VmmsEngineCallbacks;

/* error NULL: done. */
typedef void (*VmmsEngineDoneFn)(VmmsVm *vm, const VmmsError *error);
typedef void (*VmmsEngineSavedFn)(VmmsVm *vm, const VmmsError *error, uint64_t file_bytes);
/* unsupported: what runs the VM cannot migrate live (e.g. a worker older than vmmsd). */
typedef void (*VmmsEngineMigrateFn)(VmmsVm *vm, const VmmsError *error, bool unsupported);

typedef struct VmmsEngineOps {
        const char *name;
        /* Whether VMs can run now; if not, *ret_why says why. When they can, the engine
         * may set *ret_why to a note on how it runs them (e.g. without KVM). Any state. */
        bool (*available)(VmmsEngine *e, char **ret_why);
        /* Off -> Starting: begins running the VM from its definition. Outcome through
         * running() or exited() (a failed start names its cause in exit->last_words). */
        void (*start)(VmmsEngine *e, VmmsVm *vm);
        /* At vmmsd start-up, for a VM the store says runs: finds it again. < 0 (a
         * negative errno): it is gone; nothing was reported. Then as after start(). */
        int (*attach)(VmmsEngine *e, VmmsVm *vm);
        /* Running|Paused -> Stopping: asks the guest to shut down (turn_off: stops it at
         * once), turning it off after timeout_ms. Outcome through exited(). */
        void (*stop)(VmmsEngine *e, VmmsVm *vm, bool turn_off, uint32_t timeout_ms);
        /* Ends the VM now, asking nothing (the host lost what ran it). Outcome through
         * exited(). */
        void (*kill)(VmmsEngine *e, VmmsVm *vm);
        /* Running <-> Paused. */
        void (*pause)(VmmsEngine *e, VmmsVm *vm, bool paused, VmmsEngineDoneFn done);
        /* Running|Paused: applies Reserve, Maximum and RelativeWeight live. */
        void (*set_processor)(VmmsEngine *e, VmmsVm *vm, const VmmsProcessorSettings *p,
                              VmmsEngineDoneFn done);
        /* Running: Dynamic Memory grows (> 0) or shrinks the VM's memory; refusals are
         * logged, the balancer's next snapshot shows what happened. */
        void (*adjust_memory)(VmmsEngine *e, VmmsVm *vm, int64_t delta_bytes, const char *reason);
        /* Running|Paused: live figures, measured by what runs the VM. */
        void (*sample)(VmmsEngine *e, VmmsVm *vm, VmmsVmFigures *ret);
        /* Frees the engine's state for the VM without touching what runs it (vmmsd is
         * stopping, or the VM is gone). No callback follows. */
        void (*release)(VmmsEngine *e, VmmsVm *vm);
        /* Running|Paused: writes the VM's whole state to `path` (whole or absent) and
         * ends it: done(vm, NULL, bytes) when the file is in place, then exited() as
         * the VM's process goes; done(vm, error, 0) and the VM runs on when it cannot.
         * The next start() with vm->restore_path set continues from such a file. An
         * engine that cannot save calls done with an error naming the operation.
         * keep_running (a checkpoint): the VM goes on as it was once the file is in
         * place, and no exited() follows. */
        void (*save)(VmmsEngine *e, VmmsVm *vm, const char *path, bool keep_running, VmmsEngineSavedFn done);
        /* Optional, Running|Paused: Get-VM's Status when the engine cannot reach the VM now
         * ("Not responding (why)"), newly allocated; NULL when it can. */
        char *(*status)(VmmsEngine *e, const VmmsVm *vm);
        /* Optional, any state: whether `switch_name` names a network VMs can attach to;
         * if not, an error naming it. An engine that cannot tell now says true. */
        bool (*network_valid)(VmmsEngine *e, const char *switch_name, VmmsError *error);
        /* Optional, Running|Paused: the VM's last two samples in hvd's partition counter
         * shape (vps with run, guest and wait time and dispatches; assigned, visible,
         * ballooned and resident bytes), *ret_dt_ns apart, for the counter walk of VMs
         * hvd does not run. false: fewer than two samples yet. Valid until the engine's
         * next sample (main thread). */
        bool (*counters)(VmmsEngine *e, const VmmsVm *vm, const Vmms__Hv__PartitionCounters **ret_prev,
                         const Vmms__Hv__PartitionCounters **ret_cur, uint64_t *ret_dt_ns);
        /* Direct live migration (NULL: the engine has none): the engine moves the VM
         * itself, host to host (libvirt's peer-to-peer migration), and vmmsd moves only
         * the definition (vmms-migration.c).
         * Destination, any state: where a source's engine sends VM `vm_id`; false with
         * *ret_why when it cannot take one now. The destination's start() with
         * vm->incoming_direct set waits for the VM to arrive: running() (not paused)
         * once it runs here; kill() before then ends the wait (exited()). */
        bool (*migrate_direct_target)(VmmsEngine *e, const char *vm_id, VmmsEngineDirectTarget *ret,
                                      char **ret_why);
        /* Source, Running: moves the VM to `target` while it runs, its memory going to
         * `data_host`. done once it has begun; then callbacks->migration reports
         * PROGRESS, and SENT once the VM runs at the destination (nothing here can take
         * it back: migrate_end(commit) reports exited()) or FAILED (it runs on here).
         * migrate_end(commit false) before SENT aborts it; done follows the abort. */
        void (*migrate_direct)(VmmsEngine *e, VmmsVm *vm, const VmmsEngineDirectTarget *target,
                               const char *data_host, uint32_t max_downtime_ms, VmmsEngineMigrateFn done);
        /* Live migration's source (NULL: the engine has none): Running: writes the VM's
         * stream to `fd` while it runs (the caller keeps and closes its own copy of fd);
         * done once it has begun, then callbacks->migration reports progress and SENT
         * (the VM paused) or FAILED (it runs on). */
        void (*migrate_out)(VmmsEngine *e, VmmsVm *vm, int fd, uint32_t max_downtime_ms,
                            VmmsEngineMigrateFn done);
        /* Ends it: commit (the VM is the destination's: what ran it here ends, exited()
         * follows; `done` may be NULL), or not (it runs on here as before). */
        void (*migrate_end)(VmmsEngine *e, VmmsVm *vm, bool commit, VmmsEngineDoneFn done);
} VmmsEngineOps;

struct VmmsEngine {
        const VmmsEngineOps *ops;
        const VmmsEngineCallbacks *callbacks;
};

/* The bundled engine: hvd (supervised by vmmsd) and one vmwp per running VM. */
typedef struct VmmsHvd VmmsHvd;
typedef struct VmmsBundledConfig {
        const char *vmwp_path;
        const char *guest_path;
        const char *runtime_dir;   /* workers/<id>.sock */
        const char *state_dir;     /* logs/<id>.worker.log, logs/<id>.console.log */
        const char *paging_dir;    /* <id>.paging: each VM's paging disk, sized by its PagingBytes */
        uint32_t start_timeout_ms; /* a worker that is not up by then is killed */
} VmmsBundledConfig;

VmmsEngine *vmms_engine_bundled_new(const VmmsBundledConfig *config, VmmsHvd *hvd,
                                    const VmmsEngineCallbacks *callbacks);
void vmms_engine_bundled_free(VmmsEngine *e);

/* The libvirt engine: each VM is a libvirt domain (vmms-engine-libvirt.c says how
 * settings and policy map onto it). Connects at once and keeps reconnecting. */
typedef struct VmmsLibvirtConfig {
        const char *uri;           /* NULL: qemu:///system */
        const char *domain_type;   /* "kvm", "qemu" (TCG) or "auto" (kvm if libvirt offers it) */
        const char *state_dir;     /* logs/<id>.console.log */
        const char *migration_uri; /* this libvirtd as other hosts' libvirtd reach it; NULL: uri */
} VmmsLibvirtConfig;

VmmsEngine *vmms_engine_libvirt_new(const VmmsLibvirtConfig *config, const VmmsEngineCallbacks *callbacks);
void vmms_engine_libvirt_free(VmmsEngine *e);
