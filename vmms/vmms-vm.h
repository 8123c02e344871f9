/* The VM object: its state machine (which action is allowed in which state) and, in
 * vmms-vm.c, every operation on one VM. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmms-definition.h"
#include "vmms-error.h"

typedef enum VmmsVmAction {
        VMMS_ACTION_START,
        VMMS_ACTION_STOP,
        VMMS_ACTION_PAUSE,
        VMMS_ACTION_RESUME,
        VMMS_ACTION_REMOVE,
        VMMS_ACTION_SET_PROCESSOR_COUNT,
        VMMS_ACTION_SET_STARTUP_MEMORY,
        VMMS_ACTION_COUNT,
} VmmsVmAction;

const char *vmms_vm_action_to_string(VmmsVmAction action);
/* Whether `action` is allowed in `state`; if not, a NotAllowed error naming both. */
bool vmms_vm_action_allowed(const char *name, VmmsVmState state, VmmsVmAction action, VmmsError *error);
