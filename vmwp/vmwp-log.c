/* Rate limit: a token bucket of VMWP_LOG_BURST messages, refilled at
 * VMWP_LOG_PER_SECOND; what it drops is counted and said once the bucket has room
 * again ("N messages suppressed"). Size cap: when stderr is a regular file larger than
 * VMWP_LOG_CAP_BYTES, it is renamed to NAME.1 (replacing the last one) and a new NAME
 * takes fd 2 (and fd 1 when it shares the file), so the log never holds more than
 * twice the cap. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmwp-log.h"

typedef struct LogState {
        uint64_t cap_bytes;
        double tokens;
        int64_t refilled_us;
        uint64_t suppressed;
} LogState;

static LogState log_state = {.tokens = VMWP_LOG_BURST};

static void rotate_if_full(void)
{
        struct stat st, out;
        char link[64], path[4096];
        g_autofree char *old = NULL;
        ssize_t n;
        int fd;

        if (fstat(STDERR_FILENO, &st) < 0 || !S_ISREG(st.st_mode) ||
            (uint64_t)st.st_size < log_state.cap_bytes)
                return;
        g_snprintf(link, sizeof(link), "/proc/self/fd/%d", STDERR_FILENO);
        n = readlink(link, path, sizeof(path) - 1);
        if (n <= 0)
                return;
        path[n] = '\0';
        old = g_strconcat(path, ".1", NULL);
        if (rename(path, old) < 0)
                return;
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0)
                return;
        /* GLib writes messages to stdout: it follows when it shares stderr's file. */
        if (fstat(STDOUT_FILENO, &out) == 0 && out.st_ino == st.st_ino && out.st_dev == st.st_dev)
                dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        fprintf(stderr, "vmwp: the log reached %" G_GUINT64_FORMAT " bytes; the earlier part is in %s\n",
                log_state.cap_bytes, old);
}

/* Whether a message may be written now. */
static bool take_token(void)
{
        int64_t now = g_get_monotonic_time();

        log_state.tokens += (double)(now - log_state.refilled_us) * VMWP_LOG_PER_SECOND / G_USEC_PER_SEC;
        if (log_state.tokens > VMWP_LOG_BURST)
                log_state.tokens = VMWP_LOG_BURST;
        log_state.refilled_us = now;
        if (log_state.tokens < 1) {
                log_state.suppressed++;
                return false;
        }
        log_state.tokens -= 1;
        return true;
}

static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields,
                               gpointer userdata)
{
        (void)userdata;
        if (!take_token())
                return G_LOG_WRITER_HANDLED;
        rotate_if_full();
        if (log_state.suppressed) {
                fprintf(stderr, "vmwp: %" G_GUINT64_FORMAT " messages suppressed (more than %d a second)\n",
                        log_state.suppressed, VMWP_LOG_PER_SECOND);
                log_state.suppressed = 0;
        }
        return g_log_writer_standard_streams(level, fields, n_fields, NULL);
}

void vmwp_log_install(uint64_t cap_bytes)
{
        log_state.cap_bytes = cap_bytes;
        log_state.refilled_us = g_get_monotonic_time();
        g_log_set_writer_func(writer, NULL, NULL);
}
