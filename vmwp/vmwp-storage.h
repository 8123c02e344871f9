/* The storage VSP: the synthetic disk the guest pages to, a sparse file of page-sized
 * slots in the worker. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "vmwp-vmbus.h"

typedef struct VmwpStorage VmwpStorage;

typedef struct VmwpStorageStats {
        uint64_t slots;
        uint64_t reads;
        uint64_t writes;
        uint64_t refused; /* bad slot, short packet, unknown type */
        uint64_t io_errors;
} VmwpStorageStats;

/* Creates (or truncates) the file at `path`, sparse, with `slots` page-sized slots;
 * it is removed again by vmwp_storage_free. */
int vmwp_storage_new(VmwpVmbus *bus, const char *path, uint64_t slots, VmwpStorage **ret, char **ret_error);
void vmwp_storage_free(VmwpStorage *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpStorage, vmwp_storage_free)

const VmwpStorageStats *vmwp_storage_stats(const VmwpStorage *s);
