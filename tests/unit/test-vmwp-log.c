/* The worker's log writer: a flood of messages is cut to the burst and counted, the
 * count is said when messages flow again, and the file is rotated at its cap. Runs
 * without GLib's test harness: the writer under test owns stdout and stderr. */
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmwp-log.h"

#define CAP 3000 /* the flood passes it once */

static int failures, number;

static void check(bool ok, const char *what)
{
        printf("%s %d - %s\n", ok ? "ok" : "not ok", ++number, what);
        failures += !ok;
}

static unsigned count_lines(const char *text, const char *needle)
{
        unsigned n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

int main(void)
{
        g_autofree char *dir = g_dir_make_tmp("vmwp-log-XXXXXX", NULL);
        g_autofree char *path = g_build_filename(dir, "worker.log", NULL);
        g_autofree char *rotated = g_strconcat(path, ".1", NULL);
        g_autofree char *now = NULL, *before = NULL;
        int saved_out = dup(STDOUT_FILENO), saved_err = dup(STDERR_FILENO);
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640);
        unsigned flood_now, flood_before;
        struct stat st;

        fflush(stdout);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        vmwp_log_install(CAP);
        for (int i = 0; i < 300; i++)
                g_message("flood %03d: a malformed message from the guest, refused and logged", i);
        g_usleep(1100 * 1000); /* the bucket refills */
        g_message("after the flood");
        fflush(stdout);
        fflush(stderr);
        dup2(saved_out, STDOUT_FILENO);
        dup2(saved_err, STDERR_FILENO);

        g_file_get_contents(path, &now, NULL, NULL);
        g_file_get_contents(rotated, &before, NULL, NULL);
        flood_now = now ? count_lines(now, "flood ") : 0;
        flood_before = before ? count_lines(before, "flood ") : 0;
        printf("1..4\n");
        /* The burst, and what refills while the loop runs (a few ms at 20 a second). */
        printf("# %u flood lines kept of 300 (%u before the rotation)\n", flood_now + flood_before,
               flood_before);
        check(flood_now + flood_before >= VMWP_LOG_BURST && flood_now + flood_before <= VMWP_LOG_BURST + 3,
              "a flood is cut to the burst");
        check(now && strstr(now, "messages suppressed") && strstr(now, "after the flood"),
              "the suppressed count is said when messages flow again");
        check(before && strstr(now, "the earlier part is in"), "the file was rotated at its cap");
        check(stat(path, &st) == 0 && st.st_size <= CAP, "the current file stays under the cap");
        g_unlink(path);
        g_unlink(rotated);
        g_rmdir(dir);
        return failures ? 1 : 0;
}
