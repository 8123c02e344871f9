/* Following a guest's console log (Connect-VM): the last lines first, then what the
 * worker appends, read from the file the engine names (logs/<id>.console.log). */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

typedef struct VmmsConsoleWatch VmmsConsoleWatch;

/* Invoked on the main thread with each piece of the console, at most
 * VMMS_CONSOLE_CHUNK_MAX bytes; valid during the callback. */
#define VMMS_CONSOLE_CHUNK_MAX 65536
typedef void (*VmmsConsoleFn)(const uint8_t *data, size_t len, void *userdata);

/* Starts following `path` (which may not exist yet: it is waited for), first with its
 * last `tail_lines` lines. A log that shrinks or is replaced is read again from its
 * start. Never fails. */
VmmsConsoleWatch *vmms_console_watch_new(const char *path, uint32_t tail_lines, VmmsConsoleFn fn,
                                         void *userdata);
void vmms_console_watch_free(VmmsConsoleWatch *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsConsoleWatch, vmms_console_watch_free)

/* The offset where the last `lines` lines of the `len` bytes at `data` begin (a last
 * line without its newline counts as one). Pure, for the tail and its test. */
size_t vmms_console_tail_offset(const uint8_t *data, size_t len, uint32_t lines);
