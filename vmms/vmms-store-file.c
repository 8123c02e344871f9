/* The store as a file. SQLite keeps a database whole across crashes, but it cannot
 * tell that the file it was handed is the wrong one: an empty file becomes a new
 * store, a damaged page is read as data, and a -wal left beside the file by another
 * store is replayed into it (SQLite ties WAL frames to each other, not to the
 * database). So vmmsd checks before it runs:
 *   - an empty file, or no file where `vmms.db.id` says a store was, is refused
 *     unless the operator asks for a new store (--init-store);
 *   - PRAGMA quick_check must say "ok";
 *   - the store's id (table meta, made by schema 3) must match `vmms.db.id`.
 * While it checks, SQLite must not checkpoint on close, or a refused foreign WAL
 * would be written into the database on the way out. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmms-store-file.h"

static char *id_path(const char *path)
{
        return g_strconcat(path, ".id", NULL);
}

/* Writes `contents` to `path` through a temporary file, synced, then renamed. */
static int write_whole(const char *path, const char *contents, size_t len, char **ret_error)
{
        g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
        int fd, r = 0;

        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot write %s: %s", tmp, g_strerror(-r));
                return r;
        }
        while (len > 0 && r == 0) {
                ssize_t n = write(fd, contents, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                else {
                        contents += n;
                        len -= (size_t)n;
                }
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                g_unlink(tmp);
                *ret_error = g_strdup_printf("cannot write %s: %s", path, g_strerror(-r));
        }
        return r;
}

int vmms_store_file_precheck(const char *path, bool init, char **ret_error)
{
        g_autofree char *ids = id_path(path);
        struct stat st;

        if (init)
                return 0;
        if (stat(path, &st) == 0 && st.st_size == 0) {
                *ret_error = g_strdup_printf(
                        "the store %s is an empty file, not a store; move it away (or restore a "
                        "backup with vmmsd --restore FILE), or start vmmsd with --init-store "
                        "to begin again with no VMs",
                        path);
                return -EUCLEAN;
        }
        if (stat(path, &st) < 0 && errno == ENOENT && g_file_test(ids, G_FILE_TEST_EXISTS)) {
                *ret_error = g_strdup_printf(
                        "the store %s is missing but %s says one was there; restore a backup "
                        "with vmmsd --restore FILE, or start vmmsd with --init-store to begin "
                        "again with no VMs",
                        path, ids);
                return -ENOENT;
        }
        return 0;
}

static char *store_id(sqlite3 *db)
{
        sqlite3_stmt *st;
        char *id = NULL;

        if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'store_id'", -1, &st, NULL) !=
            SQLITE_OK)
                return NULL; /* no meta table: a schema older than 3 */
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                id = g_strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return id;
}

static int quick_check(sqlite3 *db, const char *path, char **ret_error)
{
        sqlite3_stmt *st;
        g_autoptr(GString) problems = g_string_new(NULL);
        int rc;

        if (sqlite3_prepare_v2(db, "PRAGMA quick_check(5)", -1, &st, NULL) != SQLITE_OK) {
                *ret_error =
                        g_strdup_printf("the store %s is damaged or not a store (%s); restore a backup with "
                                        "vmmsd --restore FILE",
                                        path, sqlite3_errmsg(db));
                return -EUCLEAN;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *row = (const char *)sqlite3_column_text(st, 0);

                if (g_strcmp0(row, "ok") != 0)
                        g_string_append_printf(problems, "%s%s", problems->len ? "; " : "", row ? row : "?");
        }
        if (rc != SQLITE_DONE && !problems->len)
                g_string_append(problems, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        if (problems->len) {
                *ret_error =
                        g_strdup_printf("the store %s is damaged (%s); restore a backup with vmmsd --restore "
                                        "FILE, or move it away and start with --init-store",
                                        path, problems->str);
                return -EUCLEAN;
        }
        return 0;
}

int vmms_store_file_check(sqlite3 *db, const char *path, char **ret_error)
{
        g_autofree char *ids = id_path(path);
        g_autofree char *expected = NULL;
        g_autofree char *actual = NULL;
        int r;

        r = quick_check(db, path, ret_error);
        if (r < 0)
                return r;
        if (!g_file_get_contents(ids, &expected, NULL, NULL))
                return 0; /* remembered after the migrations */
        g_strstrip(expected);
        actual = store_id(db);
        if (g_strcmp0(actual, expected) != 0) {
                *ret_error =
                        g_strdup_printf("the store %s is not the one this state directory had: it says it is "
                                        "store %s, %s says %s (a database or -wal file from another store?); "
                                        "nothing was changed; restore a backup with vmmsd --restore FILE",
                                        path, actual ? actual : "(no id)", ids, expected);
                return -EUCLEAN;
        }
        return 0;
}

int vmms_store_file_remember(sqlite3 *db, const char *path, char **ret_error)
{
        g_autofree char *ids = id_path(path);
        g_autofree char *id = store_id(db);
        g_autofree char *line = NULL;

        if (g_file_test(ids, G_FILE_TEST_EXISTS))
                return 0;
        if (!id) {
                *ret_error = g_strdup_printf("the store %s has no id after its migrations", path);
                return -EPROTO;
        }
        line = g_strconcat(id, "\n", NULL);
        return write_whole(ids, line, strlen(line), ret_error);
}

int vmms_store_file_backup(sqlite3 *db, const char *dest, char **ret_error)
{
        g_autofree char *tmp = g_strconcat(dest, ".tmp", NULL);
        sqlite3 *out = NULL;
        sqlite3_backup *backup;
        int rc, fd, r = 0;

        g_unlink(tmp);
        if (sqlite3_open_v2(tmp, &out, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
                *ret_error = g_strdup_printf("cannot create %s: %s", tmp,
                                             out ? sqlite3_errmsg(out) : "out of memory");
                sqlite3_close(out);
                return -EIO;
        }
        backup = sqlite3_backup_init(out, "main", db, "main");
        if (!backup) {
                *ret_error = g_strdup_printf("cannot back up to %s: %s", dest, sqlite3_errmsg(out));
                sqlite3_close(out);
                g_unlink(tmp);
                return -EIO;
        }
        rc = sqlite3_backup_step(backup, -1);
        sqlite3_backup_finish(backup);
        if (rc != SQLITE_DONE) {
                *ret_error = g_strdup_printf("cannot back up to %s: %s", dest, sqlite3_errstr(rc));
                r = rc == SQLITE_FULL ? -ENOSPC : -EIO;
        }
        sqlite3_close(out);
        if (r == 0) {
                fd = open(tmp, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || fsync(fd) < 0)
                        r = -errno;
                if (fd >= 0)
                        close(fd);
                if (r == 0 && rename(tmp, dest) < 0)
                        r = -errno;
                if (r < 0)
                        *ret_error = g_strdup_printf("cannot write %s: %s", dest, g_strerror(-r));
        }
        if (r < 0)
                g_unlink(tmp);
        return r;
}

int vmms_store_file_restore(const char *backup, const char *path, char **ret_error)
{
        g_autofree char *contents = NULL;
        g_autofree char *id = NULL;
        g_autofree char *line = NULL;
        g_autofree char *wal = g_strconcat(path, "-wal", NULL);
        g_autofree char *shm = g_strconcat(path, "-shm", NULL);
        g_autofree char *ids = id_path(path);
        g_autoptr(GError) error = NULL;
        sqlite3 *db = NULL;
        size_t len;
        int r;

        if (sqlite3_open_v2(backup, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
                *ret_error = g_strdup_printf("cannot open the backup %s: %s", backup,
                                             db ? sqlite3_errmsg(db) : "out of memory");
                sqlite3_close(db);
                return -EIO;
        }
        r = quick_check(db, backup, ret_error);
        if (r == 0) {
                id = store_id(db);
                if (!id) {
                        *ret_error =
                                g_strdup_printf("%s is not a vmms store backup (it has no store id)", backup);
                        r = -EINVAL;
                }
        }
        sqlite3_close(db);
        if (r < 0)
                return r;
        if (!g_file_get_contents(backup, &contents, &len, &error)) {
                *ret_error = g_strdup_printf("cannot read the backup: %s", error->message);
                return -EIO;
        }
        /* The old WAL belongs to the old database: gone before the new one is in. */
        g_unlink(wal);
        g_unlink(shm);
        r = write_whole(path, contents, len, ret_error);
        if (r < 0)
                return r;
        line = g_strconcat(id, "\n", NULL);
        return write_whole(ids, line, strlen(line), ret_error);
}

int vmms_store_file_lock(const char *dir, int *ret_fd, char **ret_error)
{
        g_autofree char *path = g_build_filename(dir, "vmms.lock", NULL);
        g_autofree char *holder = NULL;
        g_autofree char *pid = NULL;
        int fd, r;

        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
                r = -errno;
                *ret_error = g_strdup_printf("cannot open %s: %s", path, g_strerror(-r));
                return r;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                r = -errno;
                g_file_get_contents(path, &holder, NULL, NULL);
                *ret_error = g_strdup_printf("another vmmsd (pid %s) is using the state directory %s",
                                             holder && *g_strstrip(holder) ? holder : "?", dir);
                close(fd);
                return r == -EWOULDBLOCK ? -EBUSY : r;
        }
        pid = g_strdup_printf("%d\n", (int)getpid());
        if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, strlen(pid), 0) < 0)
                g_warning("cannot note our pid in %s: %s", path, g_strerror(errno));
        *ret_fd = fd;
        return 0;
}
