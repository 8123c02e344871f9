/* Move-VM between two vmmsd hosts over mutual TLS. Live (pre-copy): the source's
 * worker writes the VM's stream (worker.proto MigrateOut) while the guest runs, pauses
 * it for the last pass, and vmmsd relays the stream to the destination, whose worker
 * (vmwp --incoming-fd) applies it and holds the VM paused. Quick (the fallback when
 * the source's worker cannot send live, e.g. one older than vmmsd): the source saves
 * the VM, streams the saved-state file, and the destination restores it paused
 * (vmwp --restore-paused). Either way the guest does not run there yet: the
 * destination answers READY. The source records in its store that COMMIT may leave, sends COMMIT;
 * the destination records the commit, resumes the VM and answers COMMITTED; the
 * source then forgets the VM. The VM runs on exactly one host at every instant:
 * - anything that fails before COMMIT is sent (a lost link, a FAILED answer, a
 *   refusal, Stop-VMMigration): the source starts the VM again from its saved state
 *   and the destination discards what it received (a restored, paused VM is killed
 *   and removed: it never ran there);
 * - a destination that cannot resume after COMMIT (its worker died) discards the VM
 *   and answers FAILED: it never ran there, so the source continues it;
 * - COMMIT sent and no answer: the destination may run the VM, so the source keeps it
 *   Saved "in doubt" and never starts it itself; the event says what to do (Start-VM
 *   on one host, Remove-VM on the other).
 * Restarts: each side keeps a row per move in its store (vmms-store.h moves). A source
 * restarted mid-move finds 'out' rows: phase 'sending' (COMMIT never left) -> the VM is
 * its own again (it runs on, or continues from its saved state); 'committing' -> in
 * doubt as above. A destination restarted finds 'in' rows: 'receiving' -> the VM (if
 * created) is killed and removed; 'committed' -> it is resumed and kept.
 *
 * Transport: TCP with TLS, both sides presenting their host certificate (--tls-cert,
 * --tls-key), each verified against --tls-ca. The destination (--migration-listen)
 * requires a client certificate and accepts a source only if its subject or "CN=name"
 * is in vmms.conf [access] migration-peers; the source likewise moves a VM only to a
 * host whose certificate is listed there. A refusal is an event on the refusing host.
 *
 * Wire protocol, version 3. Every message is one frame, little-endian:
 *   bytes 0-3   magic "VMMG"
 *   bytes 4-5   u16 type (below)
 *   bytes 6-7   u16 reserved, 0
 *   bytes 8-11  u32 payload length, at most VMMS_MIGRATION_PAYLOAD_MAX
 *   payload     STATE: raw bytes; every other type: a GVariant a{sv} in normal form
 * Any other magic, type, reserved value, length, a missing or mistyped key, or a
 * frame out of order ends the connection; the peer is untrusted.
 *   source -> destination                         destination -> source
 *   HELLO   version u, host s, engine s, guest-abi u
 *   OFFER   the definition (keys as VmmsVmDefinition:
 *           id, name, vps, reserve, maximum, weight,
 *           dynamic b, startup t, minimum t,
 *           maximum-bytes t, buffer u, priority u,
 *           paging t, highly-available b (optional: off
 *           when absent), goal-seeking b (optional: off
 *           when absent), workload, boot-args, notes s,
 *           auto-start u, created x), needs t (the
 *           memory it holds now)
 *                                                 ACCEPT  {}  or  REFUSE  reason s
 *   BEGIN   mode s: "live" (STATE carries the
 *           worker's stream, vmwp/vmwp-stream.h) or
 *           "quick" (STATE carries the saved file)
 *   STATE*  the stream or the saved-state file, in order
 *   DONE    bytes t (the file's size)
 *                                                 READY   {}  (restored, paused)
 *                                                         or  FAILED  reason s
 *   COMMIT  {}
 *                                                 COMMITTED {}  (it runs there)
 *                                                         or  FAILED  reason s
 * A version 1 peer (quick migration with STARTED and no commit step) or version 2
 * (no BEGIN, quick only) is refused by name at HELLO; frame numbers keep their
 * meaning, STARTED (7) is no longer sent.
 * The destination checks before ACCEPT: the protocol version; the same engine
 * ("bundled", available here) and guest ABI version (hv-abi.h HV_ABI_VERSION), which
 * is what the saved state's processor context depends on; no other move of a VM with
 * that id or name is arriving (accepted and not yet ended: the second is refused by
 * name, the first goes on); the name and id are free;
 * its hypervisor's pool minus the memory reserve can hold `needs`; the definition
 * passes the same checks as CreateVm.
 *
 * Processor compatibility (vmms-compat.h): OFFER also holds processor-compatibility b
 * (the VM's CompatibilityForMigrationEnabled) and processor a{sv}, the VM's
 * compatibility vector on the source. The destination checks it first: its own vector
 * for the same setting must equal it field by field, or it answers REFUSE with reason s
 * and differences a(sss) (field, source value, destination value), before anything of
 * the VM's state is sent.
 *
 * Compare-only (Compare-VM): the source sends HELLO and an OFFER with compare-only b
 * true; the destination makes every check it would make for a move and answers ACCEPT
 * {} or REFUSE as above, then closes. Nothing else is sent, nothing is created on
 * either side, and the VM may be in any state. The destination logs the answer as a
 * compatibility check ("compared VM ..."), never as a refused move.
 *
 * Tests only: VMMS_MIGRATION_STOP_AT=<phase> in vmmsd's environment makes it stop
 * itself (SIGSTOP) as a move passes <phase>, after logging "migration: stopping at
 * <phase>", so a test can kill a process at an exact point without sleeping. Source
 * phases: accepted (its 'out' row written, nothing paused yet), sending (the first
 * STATE frame written), ready (READY received, COMMIT not yet recorded), commit-sent
 * (COMMIT written). Destination phases: receiving (the first STATE frame stored),
 * ready-sent, commit-received (the commit recorded, not yet resumed), resumed (not yet
 * answered COMMITTED). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vmms-access.h"
#include "vmms-call.h"
#include "vmms-manager.h"

#define VMMS_MIGRATION_VERSION 3
#define VMMS_MIGRATION_HEADER_SIZE 12
#define VMMS_MIGRATION_PAYLOAD_MAX (1u << 20)

typedef enum VmmsMigrationFrame {
        VMMS_MIGRATION_HELLO = 1,
        VMMS_MIGRATION_OFFER,
        VMMS_MIGRATION_ACCEPT,
        VMMS_MIGRATION_REFUSE,
        VMMS_MIGRATION_STATE,
        VMMS_MIGRATION_DONE,
        VMMS_MIGRATION_STARTED, /* version 1 only */
        VMMS_MIGRATION_FAILED,
        VMMS_MIGRATION_READY,
        VMMS_MIGRATION_COMMIT,
        VMMS_MIGRATION_COMMITTED,
        VMMS_MIGRATION_BEGIN,
        VMMS_MIGRATION_FRAME_COUNT,
} VmmsMigrationFrame;

/* Writes a header for `type` and `length` into `out`. */
void vmms_migration_header_write(uint8_t out[VMMS_MIGRATION_HEADER_SIZE], VmmsMigrationFrame type,
                                 uint32_t length);
/* Checks a header from the peer: 0 with the type and length, or -EPROTO with a
 * message naming what was wrong. */
int vmms_migration_header_parse(const uint8_t in[VMMS_MIGRATION_HEADER_SIZE], VmmsMigrationFrame *ret_type,
                                uint32_t *ret_length, char **ret_error);

typedef struct VmmsMigrationConfig {
        const char *listen; /* HOST:PORT to accept moves on; NULL: send only */
        const char *tls_cert_path;
        const char *tls_key_path;
        const char *tls_ca_path;
        const char *host_name; /* this host in HELLO; NULL: the system's host name */
} VmmsMigrationConfig;

typedef struct VmmsMigration VmmsMigration;

/* Reads the TLS material and starts listening when config->listen is set; the
 * manager is told (vmms_manager_set_migration). -EINVAL with a message otherwise. */
int vmms_migration_new(VmmsManager *m, VmmsAccess *access, const VmmsMigrationConfig *config,
                       VmmsMigration **ret, char **ret_error);
void vmms_migration_free(VmmsMigration *mig);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsMigration, vmms_migration_free)

/* MoveVm: moves the Running `vm` to `destination` (HOST:PORT); ends `call` with a
 * MoveVmResult once the destination runs it, or with an error naming why not (the VM
 * then runs on here, or is Saved in doubt as above). max_downtime_ms 0: the default. */
void vmms_migration_move(VmmsMigration *mig, VmmsVm *vm, const char *destination, uint32_t max_downtime_ms,
                         VmmsCall *call);
/* WatchMoveVm: streams `vm`'s move's progress (MoveVmResult items) until it ends;
 * FailedPrecondition if it is not being moved. */
void vmms_migration_watch(VmmsMigration *mig, VmmsVm *vm, VmmsCall *call);
/* StopVmMigration: cancels `vm`'s move if COMMIT has not been sent; answers `call`
 * with the VM once it runs here again. */
void vmms_migration_cancel(VmmsMigration *mig, VmmsVm *vm, VmmsCall *call);
/* CompareVm: asks `destination` whether it would take `vm` now (compare-only above);
 * ends `call` with a CompareVmResult listing the processor's differences, or with an
 * error when the destination could not be asked. The VM is not touched. */
void vmms_migration_compare(VmmsMigration *mig, VmmsVm *vm, const char *destination, VmmsCall *call);
