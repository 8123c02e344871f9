/* The worker's control socket: vmmsd connects here (again after its own restart) to
 * stop, pause, resume and reconfigure the VM; the worker reports a guest that stopped. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "vmwp-worker.h"

typedef struct VmwpControl VmwpControl;

/* What the control channel asks of the worker's main loop. */
typedef enum VmwpControlAction {
        VMWP_CONTROL_TURN_OFF, /* destroy the partition and exit */
        VMWP_CONTROL_SAVED,    /* the state is saved: destroy the partition and exit */
        VMWP_CONTROL_MIGRATED, /* MigrateFinish: the VM runs elsewhere; destroy and exit */
} VmwpControlAction;

typedef void (*VmwpControlActionFn)(VmwpControlAction action, void *userdata);

int vmwp_control_new(VmwpWorker *worker, const char *socket_path, const char *vm_id, VmwpControlActionFn fn,
                     void *userdata, VmwpControl **ret, char **ret_error);
void vmwp_control_free(VmwpControl *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmwpControl, vmwp_control_free)

/* Tells a connected vmmsd why the worker is about to exit (worker.proto Exiting). */
void vmwp_control_exiting(VmwpControl *c, int reason, const char *message);
/* Tells a connected vmmsd that the guest stopped by itself. */
void vmwp_control_guest_stopped(VmwpControl *c, const char *reason, bool crashed);
