/* Durable state of the management service: VM definitions and the event log, in
 * SQLite (WAL, foreign keys on). Every change is one transaction, so a kill -9 at any
 * moment leaves either the old or the new definition. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmms-definition.h"

typedef struct VmmsStore VmmsStore;

typedef struct VmmsEventRecord {
        int64_t id;
        int64_t time_unix_ms;
        char *vm_id;
        char *vm_name;
        char *kind; /* created, state, settings, worker-exit, removed, error */
        VmmsVmState state;
        char *message;
} VmmsEventRecord;

void vmms_event_record_free(VmmsEventRecord *event);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsEventRecord, vmms_event_record_free)

/* Opens the store at `path` after checking it is whole and ours (vmms-store-file.h);
 * a new store is made where there is no file, or with `init` where the file is
 * empty. Refusals say what is wrong and what to do. */
int vmms_store_open(const char *path, bool init, VmmsStore **ret, char **ret_error);
/* What a failed write means, for a message: a full disk says how much is free and
 * where; anything else is strerror. */
char *vmms_store_explain(VmmsStore *store, int r);
/* Free bytes where the store lives (UINT64_MAX if unknown), and the filesystem's size. */
uint64_t vmms_store_free_bytes(VmmsStore *store, uint64_t *ret_total);
/* An online backup to `dest` (whole or absent). */
int vmms_store_backup(VmmsStore *store, const char *dest, char **ret_error);
void vmms_store_free(VmmsStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsStore, vmms_store_free)

/* Each writes the definition and appends `event` (its id set on success) in one
 * transaction. insert: -EEXIST if the name or id is taken. update/remove: -ENOENT. */
int vmms_store_vm_insert(VmmsStore *store, const VmmsVmDefinition *def, VmmsEventRecord *event);
int vmms_store_vm_update(VmmsStore *store, const VmmsVmDefinition *def, VmmsEventRecord *event);
int vmms_store_vm_remove(VmmsStore *store, const char *id, VmmsEventRecord *event);
/* All definitions, as VmmsVmDefinition* (free with vmms_vm_definition_free). */
int vmms_store_vm_list(VmmsStore *store, GPtrArray **ret_defs);
void vmms_vm_definition_free(VmmsVmDefinition *def);

int vmms_store_event_append(VmmsStore *store, VmmsEventRecord *event);
/* Events after `after_id` (of one VM when vm_id is set), oldest first, at most `limit`;
 * with newest, the last `limit` of them. */
int vmms_store_event_list(VmmsStore *store, const char *vm_id, int64_t after_id, uint32_t limit, bool newest,
                          GPtrArray **ret_events);

/* A checkpoint (Checkpoint-VM): the VM's definition as it was (def.state: its state
 * then) and, when it was live, the size of its state file (0: the definition only). */
typedef struct VmmsCheckpoint {
        char *id; /* UUID; the state file is checkpoints/<vm id>/<id>.vmrs */
        char *name;
        int64_t created_unix_ms;
        uint64_t state_bytes;
        VmmsVmDefinition def;
} VmmsCheckpoint;

void vmms_checkpoint_free(VmmsCheckpoint *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsCheckpoint, vmms_checkpoint_free)

/* Each with `event` in one transaction. insert: -EEXIST if the VM has a checkpoint of
 * that name (case-insensitive). remove: -ENOENT. A VM's checkpoints go with its row. */
int vmms_store_checkpoint_insert(VmmsStore *store, const VmmsCheckpoint *c, VmmsEventRecord *event);
int vmms_store_checkpoint_remove(VmmsStore *store, const char *id, VmmsEventRecord *event);
/* One VM's checkpoints, oldest first, as VmmsCheckpoint*. */
int vmms_store_checkpoint_list(VmmsStore *store, const char *vm_id, GPtrArray **ret_checkpoints);

/* A Move-VM in flight (vmms-migration.h): written as a move passes each point a
 * restarted vmmsd must know about, cleared when it ends. */
typedef struct VmmsMoveRecord {
        char *vm_id;
        bool outgoing; /* this host gives the VM away; false: it receives it */
        char *peer;    /* the other host (its address, or its name for an incoming move) */
        char *phase;
} VmmsMoveRecord;

void vmms_move_record_free(VmmsMoveRecord *r);
/* set: inserts or replaces the VM's row; clear: removes it (0 if there was none). */
int vmms_store_move_set(VmmsStore *store, const char *vm_id, bool outgoing, const char *peer,
                        const char *phase);
int vmms_store_move_clear(VmmsStore *store, const char *vm_id);
/* Every row, as VmmsMoveRecord*. */
int vmms_store_move_list(VmmsStore *store, GPtrArray **ret_moves);
