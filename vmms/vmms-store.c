/* The SQLite store. Schema changes are migrations, applied in order inside one
 * transaction each; the schema version lives in PRAGMA user_version. */
#include <errno.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "vmms-devices.h"
#include "vmms-store-file.h"
#include "vmms-store.h"

struct VmmsStore {
        sqlite3 *db;
        char *dir; /* where the store's file lives */
};

/* migrations[i] brings the schema from version i to i + 1. */
static const char *const migrations[] = {
        "CREATE TABLE vms ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  name TEXT NOT NULL UNIQUE COLLATE NOCASE,"
        "  state TEXT NOT NULL,"
        "  vp_count INTEGER NOT NULL CHECK (vp_count BETWEEN 1 AND 32),"
        "  cpu_reserve INTEGER NOT NULL CHECK (cpu_reserve BETWEEN 0 AND 100),"
        "  cpu_maximum INTEGER NOT NULL CHECK (cpu_maximum BETWEEN 0 AND 100),"
        "  cpu_weight INTEGER NOT NULL CHECK (cpu_weight BETWEEN 1 AND 10000),"
        "  dm_enabled INTEGER NOT NULL,"
        "  mem_startup INTEGER NOT NULL,"
        "  mem_minimum INTEGER NOT NULL,"
        "  mem_maximum INTEGER NOT NULL,"
        "  mem_buffer INTEGER NOT NULL CHECK (mem_buffer BETWEEN 5 AND 2000),"
        "  mem_priority INTEGER NOT NULL CHECK (mem_priority BETWEEN 0 AND 100),"
        "  workload TEXT NOT NULL,"
        "  boot_args TEXT NOT NULL,"
        "  notes TEXT NOT NULL,"
        "  created_ms INTEGER NOT NULL,"
        "  updated_ms INTEGER NOT NULL"
        ");"
        "CREATE TABLE vm_runtime ("
        "  vm_id TEXT PRIMARY KEY NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
        "  worker_pid INTEGER NOT NULL,"
        "  started_ms INTEGER NOT NULL"
        ");"
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  time_ms INTEGER NOT NULL,"
        "  vm_id TEXT NOT NULL,"
        "  vm_name TEXT NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  state TEXT NOT NULL,"
        "  message TEXT NOT NULL"
        ");"
        "CREATE INDEX events_by_vm ON events (vm_id, id);",
        /* 2: the engine that runs each VM and its AutomaticStartAction. Maximum 0 used to
         * be stored as given while hvd ran such a VP uncapped; it is 100 now and 0 is
         * refused. */
        "ALTER TABLE vms ADD COLUMN engine TEXT NOT NULL DEFAULT 'bundled';"
        "ALTER TABLE vms ADD COLUMN auto_start TEXT NOT NULL DEFAULT 'StartIfRunning';"
        "UPDATE vms SET cpu_maximum = 100 WHERE cpu_maximum = 0;",
        /* 3: the store's identity, kept beside it in vmms.db.id (vmms-store-file.c). */
        "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
        "INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));",
        /* 4: the paging disk's size (0: 4 x startup). */
        "ALTER TABLE vms ADD COLUMN paging_bytes INTEGER NOT NULL DEFAULT 0;",
        /* 5: the libvirt engine's guest: a kernel, initrd and command line, or a disk. */
        "ALTER TABLE vms ADD COLUMN kernel_path TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE vms ADD COLUMN initrd_path TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE vms ADD COLUMN kernel_args TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE vms ADD COLUMN vhd_path TEXT NOT NULL DEFAULT '';",
        /* 6: checkpoints: the VM's definition as it was (the vms columns) and, for a
         * live VM, the size of its state file (checkpoints/<vm_id>/<id>.vmrs; 0: none). */
        "CREATE TABLE checkpoints ("
        "  id TEXT PRIMARY KEY NOT NULL,"
        "  vm_id TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
        "  name TEXT NOT NULL COLLATE NOCASE,"
        "  created_ms INTEGER NOT NULL,"
        "  state_bytes INTEGER NOT NULL,"
        "  vm_name TEXT NOT NULL, state TEXT NOT NULL, vp_count INTEGER NOT NULL,"
        "  cpu_reserve INTEGER NOT NULL, cpu_maximum INTEGER NOT NULL, cpu_weight INTEGER NOT NULL,"
        "  dm_enabled INTEGER NOT NULL, mem_startup INTEGER NOT NULL, mem_minimum INTEGER NOT NULL,"
        "  mem_maximum INTEGER NOT NULL, mem_buffer INTEGER NOT NULL, mem_priority INTEGER NOT NULL,"
        "  workload TEXT NOT NULL, boot_args TEXT NOT NULL, notes TEXT NOT NULL,"
        "  vm_created_ms INTEGER NOT NULL, vm_updated_ms INTEGER NOT NULL, engine TEXT NOT NULL,"
        "  auto_start TEXT NOT NULL, paging_bytes INTEGER NOT NULL, kernel_path TEXT NOT NULL,"
        "  initrd_path TEXT NOT NULL, kernel_args TEXT NOT NULL, vhd_path TEXT NOT NULL,"
        "  UNIQUE (vm_id, name)"
        ");",
        /* 7: Move-VM in flight (vmms-migration.h): what a vmmsd restarted mid-move must
         * settle. direction 'out': this host gives the VM away (phase 'sending', then
         * 'committing' once COMMIT may have left); 'in': it receives one (phase
         * 'receiving', then 'committed'). No foreign key: an 'in' row is written before
         * the VM it announces. */
        "CREATE TABLE moves ("
        "  vm_id TEXT PRIMARY KEY NOT NULL,"
        "  direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),"
        "  peer TEXT NOT NULL,"
        "  phase TEXT NOT NULL,"
        "  updated_ms INTEGER NOT NULL"
        ");",
        /* 8: the libvirt engine's hard disk drives and network adapters (vmms-devices.c's
         * text: one per line). Rows from before have none, as before. */
        "ALTER TABLE vms ADD COLUMN hard_disk_drives TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE vms ADD COLUMN network_adapters TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE checkpoints ADD COLUMN hard_disk_drives TEXT NOT NULL DEFAULT '';"
        "ALTER TABLE checkpoints ADD COLUMN network_adapters TEXT NOT NULL DEFAULT '';",
        /* 9: Set-VMProcessor -CompatibilityForMigrationEnabled (the guest reads the
         * normalized CPUID); VMs and checkpoints from before it read their host's. */
        "ALTER TABLE vms ADD COLUMN cpu_compatibility INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE checkpoints ADD COLUMN cpu_compatibility INTEGER NOT NULL DEFAULT 0;",
        /* 10: Set-VMMemory -GoalSeeking (balancer/balancer-goal.c), off for every VM and
         * checkpoint there was. */
        "ALTER TABLE vms ADD COLUMN goal_seeking INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE checkpoints ADD COLUMN goal_seeking INTEGER NOT NULL DEFAULT 0;",
        /* 11: Set-VM -HighlyAvailable (a clustered VM the cluster's leader restarts on another
         * host when its own dies; vmms-cluster.h), off for every VM and checkpoint there was. */
        "ALTER TABLE vms ADD COLUMN highly_available INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE checkpoints ADD COLUMN highly_available INTEGER NOT NULL DEFAULT 0;",
};

void vmms_event_record_free(VmmsEventRecord *event)
{
        if (!event)
                return;
        g_free(event->vm_id);
        g_free(event->vm_name);
        g_free(event->kind);
        g_free(event->message);
        g_free(event);
}

void vmms_vm_definition_free(VmmsVmDefinition *def)
{
        if (!def)
                return;
        vmms_vm_definition_clear(def);
        g_free(def);
}

/* SQLite's result as a negative errno: a full disk is -ENOSPC, so callers can say so. */
static int sqlite_errno(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        default:
                return -EIO;
        }
}

static int exec(VmmsStore *store, const char *sql)
{
        return sqlite_errno(sqlite3_exec(store->db, sql, NULL, NULL, NULL));
}

static int schema_version(VmmsStore *store, int *ret_version)
{
        sqlite3_stmt *st;
        int r = -EIO;

        if (sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
                return -EIO;
        if (sqlite3_step(st) == SQLITE_ROW) {
                *ret_version = sqlite3_column_int(st, 0);
                r = 0;
        }
        sqlite3_finalize(st);
        return r;
}

static int migrate(VmmsStore *store, char **ret_error)
{
        int version;

        if (schema_version(store, &version) < 0) {
                *ret_error = g_strdup_printf("cannot read the schema version: %s", sqlite3_errmsg(store->db));
                return -EIO;
        }
        if (version > (int)G_N_ELEMENTS(migrations)) {
                *ret_error =
                        g_strdup_printf("the store has schema version %d, newer than this vmmsd knows (%d)",
                                        version, (int)G_N_ELEMENTS(migrations));
                return -EPROTO;
        }
        for (; version < (int)G_N_ELEMENTS(migrations); version++) {
                g_autofree char *bump = g_strdup_printf("PRAGMA user_version = %d", version + 1);

                if (exec(store, "BEGIN IMMEDIATE") < 0 || exec(store, migrations[version]) < 0 ||
                    exec(store, bump) < 0 || exec(store, "COMMIT") < 0) {
                        *ret_error = g_strdup_printf("migration to schema version %d failed: %s", version + 1,
                                                     sqlite3_errmsg(store->db));
                        exec(store, "ROLLBACK");
                        return -EIO;
                }
        }
        return 0;
}

int vmms_store_open(const char *path, bool init, VmmsStore **ret, char **ret_error)
{
        g_autoptr(VmmsStore) store = g_new0(VmmsStore, 1);
        int r;

        store->dir = g_path_get_dirname(path);
        r = vmms_store_file_precheck(path, init, ret_error);
        if (r < 0)
                return r;
        if (init) {
                g_autofree char *ids = g_strconcat(path, ".id", NULL);
                struct stat st;

                /* A new store replaces only an empty or missing file, never a damaged one. */
                if (stat(path, &st) == 0 && st.st_size > 0) {
                        *ret_error =
                                g_strdup_printf("--init-store makes a new store only where %s is empty or "
                                                "missing; it holds %lld bytes: move it away first",
                                                path, (long long)st.st_size);
                        return -EEXIST;
                }
                g_unlink(path);
                g_unlink(ids);
        }
        if (sqlite3_open_v2(path, &store->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                            NULL) != SQLITE_OK) {
                *ret_error = g_strdup_printf("cannot open %s: %s", path,
                                             store->db ? sqlite3_errmsg(store->db) : "out of memory");
                return -EIO;
        }
        sqlite3_busy_timeout(store->db, 5000);
        /* Nothing reaches the file until it has passed the checks: no checkpoint of a
         * WAL that may not be ours on the way out. */
        sqlite3_db_config(store->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        r = vmms_store_file_check(store->db, path, ret_error);
        if (r < 0)
                return r;
        /* WAL with synchronous=FULL: a commit is on disk when it returns, and a crash
         * mid-write leaves the last commit. */
        if (exec(store, "PRAGMA journal_mode = WAL") < 0 || exec(store, "PRAGMA synchronous = FULL") < 0 ||
            exec(store, "PRAGMA foreign_keys = ON") < 0) {
                *ret_error = g_strdup_printf("cannot configure %s: %s", path, sqlite3_errmsg(store->db));
                return -EIO;
        }
        r = migrate(store, ret_error);
        if (r < 0)
                return r;
        r = vmms_store_file_remember(store->db, path, ret_error);
        if (r < 0)
                return r;
        sqlite3_db_config(store->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
        *ret = g_steal_pointer(&store);
        return 0;
}

void vmms_store_free(VmmsStore *store)
{
        if (!store)
                return;
        sqlite3_close_v2(store->db);
        g_free(store->dir);
        g_free(store);
}

static int prepare(VmmsStore *store, const char *sql, sqlite3_stmt **ret)
{
        if (sqlite3_prepare_v2(store->db, sql, -1, ret, NULL) != SQLITE_OK) {
                g_warning("store: cannot prepare '%s': %s", sql, sqlite3_errmsg(store->db));
                return -EIO;
        }
        return 0;
}

/* Steps a write statement and finalizes it. */
static int step_done(VmmsStore *store, sqlite3_stmt *st)
{
        int rc = sqlite3_step(st), extended = sqlite3_extended_errcode(store->db);

        sqlite3_finalize(st);
        if (rc == SQLITE_DONE)
                return 0;
        if (extended == SQLITE_CONSTRAINT_UNIQUE || extended == SQLITE_CONSTRAINT_PRIMARYKEY)
                return -EEXIST;
        g_warning("store: write failed: %s", sqlite3_errmsg(store->db));
        return extended == SQLITE_CONSTRAINT_CHECK ? -EINVAL : sqlite_errno(rc);
}

static int write_event(VmmsStore *store, VmmsEventRecord *event)
{
        sqlite3_stmt *st;
        int r;

        r = prepare(store,
                    "INSERT INTO events (time_ms, vm_id, vm_name, kind, state, message) VALUES (?, ?, ?, ?, "
                    "?, ?)",
                    &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, event->time_unix_ms);
        sqlite3_bind_text(st, 2, event->vm_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, event->vm_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, event->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, vmms_vm_state_to_string(event->state), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, event->message ? event->message : "", -1, SQLITE_STATIC);
        r = step_done(store, st);
        if (r < 0)
                return r == -EEXIST ? -EIO : r;
        event->id = sqlite3_last_insert_rowid(store->db);
        return 0;
}

/* Binds ?1-?27; the device lists' text is freed with the statement. */
static void bind_definition(sqlite3_stmt *st, const VmmsVmDefinition *def)
{
        sqlite3_bind_text(st, 1, def->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, def->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, vmms_vm_state_to_string(def->state), -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, (int)def->processor.count);
        sqlite3_bind_int(st, 5, (int)def->processor.reserve);
        sqlite3_bind_int(st, 6, (int)def->processor.maximum);
        sqlite3_bind_int(st, 7, (int)def->processor.relative_weight);
        sqlite3_bind_int(st, 8, def->memory.dynamic_memory_enabled);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)def->memory.startup_bytes);
        sqlite3_bind_int64(st, 10, (sqlite3_int64)def->memory.minimum_bytes);
        sqlite3_bind_int64(st, 11, (sqlite3_int64)def->memory.maximum_bytes);
        sqlite3_bind_int(st, 12, (int)def->memory.buffer);
        sqlite3_bind_int(st, 13, (int)def->memory.priority);
        sqlite3_bind_text(st, 14, def->workload, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 15, def->boot_args ? def->boot_args : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 16, def->notes ? def->notes : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 17, def->created_unix_ms);
        sqlite3_bind_int64(st, 18, def->updated_unix_ms);
        sqlite3_bind_text(st, 19, def->engine ? def->engine : "bundled", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 20, vmms_auto_start_to_string(def->automatic_start_action), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 21, (sqlite3_int64)def->memory.paging_bytes);
        sqlite3_bind_text(st, 22, def->kernel_path ? def->kernel_path : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 23, def->initrd_path ? def->initrd_path : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 24, def->kernel_args ? def->kernel_args : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 25, def->vhd_path ? def->vhd_path : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 26, vmms_hard_disk_drives_to_text(def->hard_disk_drives), -1, g_free);
        sqlite3_bind_text(st, 27, vmms_network_adapters_to_text(def->network_adapters), -1, g_free);
        /* After the checkpoint's own ?28-?31. */
        sqlite3_bind_int(st, 32, def->processor.compatibility_for_migration);
        sqlite3_bind_int(st, 33, def->memory.goal_seeking);
        sqlite3_bind_int(st, 34, def->highly_available);
}

static int write_runtime(VmmsStore *store, const VmmsVmDefinition *def)
{
        sqlite3_stmt *st;
        int r;

        if (def->worker_pid <= 0) {
                r = prepare(store, "DELETE FROM vm_runtime WHERE vm_id = ?", &st);
                if (r < 0)
                        return r;
                sqlite3_bind_text(st, 1, def->id, -1, SQLITE_STATIC);
                return step_done(store, st);
        }
        r = prepare(store,
                    "INSERT OR REPLACE INTO vm_runtime (vm_id, worker_pid, started_ms) VALUES (?, ?, ?)",
                    &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, def->id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, def->worker_pid);
        sqlite3_bind_int64(st, 3, def->started_unix_ms);
        return step_done(store, st);
}

/* Runs body() between BEGIN and COMMIT; rolls back on any failure. */
static int transaction(VmmsStore *store, int (*body)(VmmsStore *, const void *, VmmsEventRecord *),
                       const void *arg, VmmsEventRecord *event)
{
        int r;

        r = exec(store, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = body(store, arg, event);
        if (r >= 0 && event)
                r = write_event(store, event);
        if (r >= 0)
                r = exec(store, "COMMIT");
        if (r < 0) {
                exec(store, "ROLLBACK");
                if (event)
                        event->id = 0;
        }
        return r;
}

static int insert_body(VmmsStore *store, const void *arg, VmmsEventRecord *event)
{
        const VmmsVmDefinition *def = arg;
        sqlite3_stmt *st;
        int r;

        (void)event;
        r = prepare(
                store,
                "INSERT INTO vms (id, name, state, vp_count, cpu_reserve, cpu_maximum, cpu_weight, "
                "dm_enabled, "
                "mem_startup, mem_minimum, mem_maximum, mem_buffer, mem_priority, workload, boot_args, "
                "notes, "
                "created_ms, updated_ms, engine, auto_start, paging_bytes, kernel_path, initrd_path, "
                "kernel_args, vhd_path, hard_disk_drives, network_adapters, cpu_compatibility, goal_seeking, "
                "highly_available) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
                "?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?32, ?33, ?34)",
                &st);
        if (r < 0)
                return r;
        bind_definition(st, def);
        r = step_done(store, st);
        return r < 0 ? r : write_runtime(store, def);
}

static int update_body(VmmsStore *store, const void *arg, VmmsEventRecord *event)
{
        const VmmsVmDefinition *def = arg;
        sqlite3_stmt *st;
        int r;

        (void)event;
        r = prepare(
                store,
                "UPDATE vms SET name = ?2, state = ?3, vp_count = ?4, cpu_reserve = ?5, cpu_maximum = ?6, "
                "cpu_weight = ?7, dm_enabled = ?8, mem_startup = ?9, mem_minimum = ?10, mem_maximum = ?11, "
                "mem_buffer = ?12, mem_priority = ?13, workload = ?14, boot_args = ?15, notes = ?16, "
                "created_ms = ?17, updated_ms = ?18, engine = ?19, auto_start = ?20, paging_bytes = ?21, "
                "kernel_path = ?22, initrd_path = ?23, kernel_args = ?24, vhd_path = ?25, "
                "hard_disk_drives = ?26, network_adapters = ?27, cpu_compatibility = ?32, goal_seeking = "
                "?33, "
                "highly_available = ?34 "
                "WHERE id = ?1",
                &st);
        if (r < 0)
                return r;
        bind_definition(st, def);
        r = step_done(store, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(store->db) == 0)
                return -ENOENT;
        return write_runtime(store, def);
}

/* Runs `sql` (a DELETE … WHERE id = ?) for `id`; -ENOENT if it deleted nothing. */
static int delete_by_id(VmmsStore *store, const char *sql, const char *id)
{
        sqlite3_stmt *st;
        int r;

        r = prepare(store, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        r = step_done(store, st);
        if (r < 0)
                return r;
        return sqlite3_changes(store->db) == 0 ? -ENOENT : 0;
}

static int remove_body(VmmsStore *store, const void *arg, VmmsEventRecord *event)
{
        (void)event;
        return delete_by_id(store, "DELETE FROM vms WHERE id = ?", arg);
}

int vmms_store_vm_insert(VmmsStore *store, const VmmsVmDefinition *def, VmmsEventRecord *event)
{
        return transaction(store, insert_body, def, event);
}

int vmms_store_vm_update(VmmsStore *store, const VmmsVmDefinition *def, VmmsEventRecord *event)
{
        return transaction(store, update_body, def, event);
}

int vmms_store_vm_remove(VmmsStore *store, const char *id, VmmsEventRecord *event)
{
        return transaction(store, remove_body, id, event);
}

int vmms_store_event_append(VmmsStore *store, VmmsEventRecord *event)
{
        return write_event(store, event);
}

static char *column_text(sqlite3_stmt *st, int column)
{
        const unsigned char *text = sqlite3_column_text(st, column);

        return g_strdup(text ? (const char *)text : "");
}

/* A definition from columns 0-26 as vmms_store_vm_list selects them, its device lists
 * from columns `devices` and `devices` + 1, and CompatibilityForMigrationEnabled from
 * `devices` + 2, GoalSeeking from `devices` + 3, HighlyAvailable from `devices` + 4. */
static void read_definition(sqlite3_stmt *st, int devices, VmmsVmDefinition *def)
{
        g_autofree char *state = column_text(st, 2);
        g_autofree char *auto_start = column_text(st, 21);

        g_strlcpy(def->id, (const char *)sqlite3_column_text(st, 0), sizeof(def->id));
        def->name = column_text(st, 1);
        if (vmms_vm_state_from_string(state, &def->state) < 0)
                def->state = VMMS_VM_OFF;
        def->processor.count = (uint32_t)sqlite3_column_int(st, 3);
        def->processor.reserve = (uint32_t)sqlite3_column_int(st, 4);
        def->processor.maximum = (uint32_t)sqlite3_column_int(st, 5);
        def->processor.relative_weight = (uint32_t)sqlite3_column_int(st, 6);
        def->memory.dynamic_memory_enabled = sqlite3_column_int(st, 7) != 0;
        def->memory.startup_bytes = (uint64_t)sqlite3_column_int64(st, 8);
        def->memory.minimum_bytes = (uint64_t)sqlite3_column_int64(st, 9);
        def->memory.maximum_bytes = (uint64_t)sqlite3_column_int64(st, 10);
        def->memory.buffer = (uint32_t)sqlite3_column_int(st, 11);
        def->memory.priority = (uint32_t)sqlite3_column_int(st, 12);
        def->workload = column_text(st, 13);
        def->boot_args = column_text(st, 14);
        def->notes = column_text(st, 15);
        def->created_unix_ms = sqlite3_column_int64(st, 16);
        def->updated_unix_ms = sqlite3_column_int64(st, 17);
        def->worker_pid = sqlite3_column_int(st, 18);
        def->started_unix_ms = sqlite3_column_int64(st, 19);
        def->engine = column_text(st, 20);
        def->memory.paging_bytes = (uint64_t)sqlite3_column_int64(st, 22);
        def->kernel_path = column_text(st, 23);
        def->initrd_path = column_text(st, 24);
        def->kernel_args = column_text(st, 25);
        def->vhd_path = column_text(st, 26);
        def->hard_disk_drives =
                vmms_hard_disk_drives_from_text((const char *)sqlite3_column_text(st, devices));
        def->network_adapters =
                vmms_network_adapters_from_text((const char *)sqlite3_column_text(st, devices + 1));
        def->processor.compatibility_for_migration = sqlite3_column_int(st, devices + 2) != 0;
        def->memory.goal_seeking = sqlite3_column_int(st, devices + 3) != 0;
        def->highly_available = sqlite3_column_int(st, devices + 4) != 0;
        if (vmms_auto_start_from_string(auto_start, &def->automatic_start_action) < 0)
                def->automatic_start_action = VMMS_AUTO_START_START_IF_RUNNING;
}

int vmms_store_vm_list(VmmsStore *store, GPtrArray **ret_defs)
{
        g_autoptr(GPtrArray) defs = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_vm_definition_free);
        sqlite3_stmt *st;
        int rc, r;

        r = prepare(
                store,
                "SELECT v.id, v.name, v.state, v.vp_count, v.cpu_reserve, v.cpu_maximum, v.cpu_weight, "
                "v.dm_enabled, v.mem_startup, v.mem_minimum, v.mem_maximum, v.mem_buffer, v.mem_priority, "
                "v.workload, v.boot_args, v.notes, v.created_ms, v.updated_ms, "
                "COALESCE(r.worker_pid, 0), COALESCE(r.started_ms, 0), v.engine, v.auto_start, "
                "v.paging_bytes, v.kernel_path, v.initrd_path, v.kernel_args, v.vhd_path, "
                "v.hard_disk_drives, v.network_adapters, v.cpu_compatibility, v.goal_seeking, "
                "v.highly_available "
                "FROM vms v LEFT JOIN vm_runtime r ON r.vm_id = v.id ORDER BY v.created_ms, v.name",
                &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                VmmsVmDefinition *def = g_new0(VmmsVmDefinition, 1);

                read_definition(st, 27, def);
                g_ptr_array_add(defs, def);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret_defs = g_steal_pointer(&defs);
        return 0;
}

int vmms_store_event_list(VmmsStore *store, const char *vm_id, int64_t after_id, uint32_t limit, bool newest,
                          GPtrArray **ret_events)
{
        g_autoptr(GPtrArray) events = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_event_record_free);
        const char *sql =
                newest ? "SELECT * FROM (SELECT id, time_ms, vm_id, vm_name, kind, state, message FROM "
                         "events "
                         "WHERE id > ?1 AND (?2 IS NULL OR vm_id = ?2) ORDER BY id DESC LIMIT ?3) ORDER BY id"
                       : "SELECT id, time_ms, vm_id, vm_name, kind, state, message FROM events "
                         "WHERE id > ?1 AND (?2 IS NULL OR vm_id = ?2) ORDER BY id LIMIT ?3";
        sqlite3_stmt *st;
        int rc, r;

        r = prepare(store, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, after_id);
        if (vm_id)
                sqlite3_bind_text(st, 2, vm_id, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, 2);
        sqlite3_bind_int64(st, 3, limit);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                VmmsEventRecord *e = g_new0(VmmsEventRecord, 1);
                g_autofree char *state = column_text(st, 5);

                e->id = sqlite3_column_int64(st, 0);
                e->time_unix_ms = sqlite3_column_int64(st, 1);
                e->vm_id = column_text(st, 2);
                e->vm_name = column_text(st, 3);
                e->kind = column_text(st, 4);
                if (vmms_vm_state_from_string(state, &e->state) < 0)
                        e->state = VMMS_VM_OFF;
                e->message = column_text(st, 6);
                g_ptr_array_add(events, e);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret_events = g_steal_pointer(&events);
        return 0;
}

int vmms_store_backup(VmmsStore *store, const char *dest, char **ret_error)
{
        return vmms_store_file_backup(store->db, dest, ret_error);
}

uint64_t vmms_store_free_bytes(VmmsStore *store, uint64_t *ret_total)
{
        struct statvfs st;

        if (statvfs(store->dir, &st) < 0) {
                if (ret_total)
                        *ret_total = 0;
                return UINT64_MAX;
        }
        if (ret_total)
                *ret_total = (uint64_t)st.f_blocks * st.f_frsize;
        return (uint64_t)st.f_bavail * st.f_frsize;
}

char *vmms_store_explain(VmmsStore *store, int r)
{
        g_autofree char *free_text = NULL;

        if (r != -ENOSPC && r != -EDQUOT)
                return g_strdup(g_strerror(-r));
        free_text = vmms_format_bytes(vmms_store_free_bytes(store, NULL));
        return g_strdup_printf("the state filesystem is full (%s free in %s)", free_text, store->dir);
}

/* ---- Checkpoints ---- */

void vmms_checkpoint_free(VmmsCheckpoint *c)
{
        if (!c)
                return;
        g_free(c->id);
        g_free(c->name);
        vmms_vm_definition_clear(&c->def);
        g_free(c);
}

/* The definition binds ?1-?27 and ?32-?34 as in vms (its id is vm_id, its state the VM's then). */
static int checkpoint_insert_body(VmmsStore *store, const void *arg, VmmsEventRecord *event)
{
        const VmmsCheckpoint *c = arg;
        sqlite3_stmt *st;
        int r;

        (void)event;
        r = prepare(
                store,
                "INSERT INTO checkpoints (vm_id, vm_name, state, vp_count, cpu_reserve, cpu_maximum, "
                "cpu_weight, dm_enabled, mem_startup, mem_minimum, mem_maximum, mem_buffer, mem_priority, "
                "workload, boot_args, notes, vm_created_ms, vm_updated_ms, engine, auto_start, "
                "paging_bytes, kernel_path, initrd_path, kernel_args, vhd_path, hard_disk_drives, "
                "network_adapters, id, name, created_ms, state_bytes, cpu_compatibility, goal_seeking, "
                "highly_available) "
                "VALUES (?1, ?2, ?3, "
                "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, "
                "?23, "
                "?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)",
                &st);
        if (r < 0)
                return r;
        bind_definition(st, &c->def);
        sqlite3_bind_text(st, 28, c->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 29, c->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 30, c->created_unix_ms);
        sqlite3_bind_int64(st, 31, (sqlite3_int64)c->state_bytes);
        return step_done(store, st);
}

static int checkpoint_remove_body(VmmsStore *store, const void *arg, VmmsEventRecord *event)
{
        (void)event;
        return delete_by_id(store, "DELETE FROM checkpoints WHERE id = ?", arg);
}

int vmms_store_checkpoint_insert(VmmsStore *store, const VmmsCheckpoint *c, VmmsEventRecord *event)
{
        return transaction(store, checkpoint_insert_body, c, event);
}

int vmms_store_checkpoint_remove(VmmsStore *store, const char *id, VmmsEventRecord *event)
{
        return transaction(store, checkpoint_remove_body, id, event);
}

int vmms_store_checkpoint_list(VmmsStore *store, const char *vm_id, GPtrArray **ret_checkpoints)
{
        g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_checkpoint_free);
        sqlite3_stmt *st;
        int rc, r;

        r = prepare(
                store,
                "SELECT vm_id, vm_name, state, vp_count, cpu_reserve, cpu_maximum, cpu_weight, dm_enabled, "
                "mem_startup, mem_minimum, mem_maximum, mem_buffer, mem_priority, workload, boot_args, "
                "notes, vm_created_ms, vm_updated_ms, 0, 0, engine, auto_start, paging_bytes, "
                "kernel_path, initrd_path, kernel_args, vhd_path, id, name, created_ms, state_bytes, "
                "hard_disk_drives, network_adapters, cpu_compatibility, goal_seeking, highly_available "
                "FROM checkpoints "
                "WHERE vm_id = ? "
                "ORDER BY created_ms, rowid",
                &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, vm_id, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                VmmsCheckpoint *c = g_new0(VmmsCheckpoint, 1);

                read_definition(st, 31, &c->def);
                c->id = column_text(st, 27);
                c->name = column_text(st, 28);
                c->created_unix_ms = sqlite3_column_int64(st, 29);
                c->state_bytes = (uint64_t)sqlite3_column_int64(st, 30);
                g_ptr_array_add(list, c);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret_checkpoints = g_steal_pointer(&list);
        return 0;
}

/* ---- Moves in flight ---- */

void vmms_move_record_free(VmmsMoveRecord *r)
{
        if (!r)
                return;
        g_free(r->vm_id);
        g_free(r->peer);
        g_free(r->phase);
        g_free(r);
}

int vmms_store_move_set(VmmsStore *store, const char *vm_id, bool outgoing, const char *peer,
                        const char *phase)
{
        sqlite3_stmt *st;
        int r;

        r = prepare(store,
                    "INSERT OR REPLACE INTO moves (vm_id, direction, peer, phase, updated_ms) VALUES (?, ?, "
                    "?, ?, "
                    "?)",
                    &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, vm_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, outgoing ? "out" : "in", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, peer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, phase, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, g_get_real_time() / 1000);
        return step_done(store, st);
}

int vmms_store_move_clear(VmmsStore *store, const char *vm_id)
{
        int r = delete_by_id(store, "DELETE FROM moves WHERE vm_id = ?", vm_id);

        return r == -ENOENT ? 0 : r;
}

int vmms_store_move_list(VmmsStore *store, GPtrArray **ret_moves)
{
        g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)vmms_move_record_free);
        sqlite3_stmt *st;
        int rc, r;

        r = prepare(store, "SELECT vm_id, direction, peer, phase FROM moves ORDER BY rowid", &st);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                VmmsMoveRecord *m = g_new0(VmmsMoveRecord, 1);
                g_autofree char *direction = column_text(st, 1);

                m->vm_id = column_text(st, 0);
                m->outgoing = g_strcmp0(direction, "out") == 0;
                m->peer = column_text(st, 2);
                m->phase = column_text(st, 3);
                g_ptr_array_add(list, m);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret_moves = g_steal_pointer(&list);
        return 0;
}
