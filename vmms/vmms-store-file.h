/* The store as a file: whether the file at hand is ours and whole before vmmsd runs
 * on it, and copies of it (backup while vmmsd runs, restore while it does not). */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>

/* Before SQLite touches `path`: an empty file, or a missing file where the identity
 * file says a store was, is refused unless `init` (the operator asked for a new,
 * empty store). */
int vmms_store_file_precheck(const char *path, bool init, char **ret_error);
/* After opening, before anything is written: PRAGMA quick_check, and the store's id
 * (its meta table) against the identity file beside it (`path`.id), so a -wal or a
 * database file from another store is refused. `store_id` NULL: the store has no id
 * yet (a schema older than 3). */
int vmms_store_file_check(sqlite3 *db, const char *path, char **ret_error);
/* Writes `path`.id (atomically) when it is missing, after migrations gave an id. */
int vmms_store_file_remember(sqlite3 *db, const char *path, char **ret_error);

/* Takes the state directory's lock (`dir`/vmms.lock, held while the fd is open): one
 * vmmsd per state directory, and no restore under a running one. -EBUSY naming the
 * holder if it is taken. */
int vmms_store_file_lock(const char *dir, int *ret_fd, char **ret_error);

/* An online copy of the open store `db` to `dest` (SQLite's backup API), written to a
 * temporary file, synced and renamed: `dest` is whole or absent. */
int vmms_store_file_backup(sqlite3 *db, const char *dest, char **ret_error);
/* Replaces the store at `path` with `backup` after checking it; vmmsd must not be
 * running on it (the caller holds the state directory's lock). */
int vmms_store_file_restore(const char *backup, const char *path, char **ret_error);
