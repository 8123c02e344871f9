/* The worker's log: its stderr, which vmmsd points at logs/<id>.worker.log. A guest
 * can make the worker complain as fast as it can send bad messages, so GLib messages
 * are rate-limited and the file is rotated at a size cap. */
#pragma once

#include <stdint.h>

#define VMWP_LOG_BURST 50             /* messages let through at once */
#define VMWP_LOG_PER_SECOND 20        /* and refilled each second */
#define VMWP_LOG_CAP_BYTES (4u << 20) /* then stderr's file is renamed to .1 and begun again */

/* Installs the writer for GLib's log functions; the file is rotated past cap_bytes. */
void vmwp_log_install(uint64_t cap_bytes);
