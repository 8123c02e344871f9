/* Console following by polling: the worker appends with plain writes, so a size
 * check every POLL_MS is cheaper and surer than inotify's hints, and the work per tick
 * is bounded (READ_PER_TICK) so one chatty guest cannot stall the main loop. The tail
 * is found by reading backwards at most TAIL_SCAN_MAX bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmms-console.h"

#define POLL_MS 100
#define READ_PER_TICK (4 * VMMS_CONSOLE_CHUNK_MAX)
#define TAIL_SCAN_MAX (1 << 20)

struct VmmsConsoleWatch {
        char *path;
        uint32_t tail_lines;
        VmmsConsoleFn fn;
        void *userdata;
        int fd;
        bool tailed; /* the first open, which starts at the tail, is done */
        dev_t dev;
        ino_t ino;
        off_t offset;
        guint timer;
};

size_t vmms_console_tail_offset(const uint8_t *data, size_t len, uint32_t lines)
{
        size_t i = len;

        if (lines == 0)
                return len;
        /* A final newline ends the last line rather than starting an empty one. */
        if (i > 0 && data[i - 1] == '\n')
                i--;
        while (i > 0) {
                if (data[i - 1] == '\n' && --lines == 0)
                        return i;
                i--;
        }
        return 0;
}

/* Where the first read of a log starts: the beginning of its last tail_lines lines. */
static off_t tail_start(int fd, off_t size, uint32_t tail_lines)
{
        size_t scan = (size_t)MIN(size, (off_t)TAIL_SCAN_MAX);
        g_autofree uint8_t *buf = g_malloc(scan ? scan : 1);
        ssize_t n = pread(fd, buf, scan, size - (off_t)scan);

        if (n != (ssize_t)scan)
                return size;
        return size - (off_t)scan + (off_t)vmms_console_tail_offset(buf, scan, tail_lines);
}

static void console_close(VmmsConsoleWatch *w)
{
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
}

/* Opens the log if it is there and is not the one open already (rotated or removed
 * and created again). */
static void console_open(VmmsConsoleWatch *w)
{
        struct stat st;

        if (stat(w->path, &st) < 0) {
                console_close(w);
                return;
        }
        if (w->fd >= 0 && st.st_dev == w->dev && st.st_ino == w->ino)
                return;
        console_close(w);
        w->fd = open(w->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (w->fd < 0 || fstat(w->fd, &st) < 0) {
                console_close(w);
                return;
        }
        w->dev = st.st_dev;
        w->ino = st.st_ino;
        w->offset = w->tailed ? 0 : tail_start(w->fd, st.st_size, w->tail_lines);
        w->tailed = true;
}

static gboolean on_console_poll(gpointer userdata)
{
        VmmsConsoleWatch *w = userdata;
        g_autofree uint8_t *buf = NULL;
        size_t budget = READ_PER_TICK;
        struct stat st;

        console_open(w);
        if (w->fd < 0) {
                w->tailed = true; /* a log that appears later is all new */
                return G_SOURCE_CONTINUE;
        }
        if (fstat(w->fd, &st) < 0)
                return G_SOURCE_CONTINUE;
        if (st.st_size < w->offset) /* truncated: a new log in the same file */
                w->offset = 0;
        if (st.st_size == w->offset)
                return G_SOURCE_CONTINUE;
        buf = g_malloc(VMMS_CONSOLE_CHUNK_MAX);
        while (budget > 0) {
                ssize_t n = pread(w->fd, buf, MIN(budget, VMMS_CONSOLE_CHUNK_MAX), w->offset);

                if (n <= 0)
                        break;
                w->offset += n;
                budget -= (size_t)n;
                w->fn(buf, (size_t)n, w->userdata);
        }
        return G_SOURCE_CONTINUE;
}

VmmsConsoleWatch *vmms_console_watch_new(const char *path, uint32_t tail_lines, VmmsConsoleFn fn,
                                         void *userdata)
{
        VmmsConsoleWatch *w = g_new0(VmmsConsoleWatch, 1);

        w->path = g_strdup(path);
        w->tail_lines = tail_lines;
        w->fn = fn;
        w->userdata = userdata;
        w->fd = -1;
        w->timer = g_timeout_add(POLL_MS, on_console_poll, w);
        /* The tail at once, not a poll later. */
        on_console_poll(w);
        return w;
}

void vmms_console_watch_free(VmmsConsoleWatch *w)
{
        if (!w)
                return;
        if (w->timer)
                g_source_remove(w->timer);
        console_close(w);
        g_free(w->path);
        g_free(w);
}
