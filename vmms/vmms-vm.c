/* The VM's state machine.
 *
 * States and what each action may do from them (anything else is NotAllowed):
 *   Off      --Start-->  Starting --(worker ready)--> Running
 *   Running  --Pause-->  Paused   --Resume--> Running
 *   Running|Paused --Stop--> Stopping --(worker gone)--> Off
 *   Off|Saved --Remove--> (gone)
 * Starting and Stopping belong to a job in progress: every action waits for it to
 * end, so two clients racing on one VM get a clean refusal, never a half state.
 * Processor count and startup memory change only while Off, as in Hyper-V. */
#include <errno.h>
#include <string.h>

#include "vmms-vm.h"

static const char *const action_names[VMMS_ACTION_COUNT] = {
        [VMMS_ACTION_START] = "start",
        [VMMS_ACTION_STOP] = "stop",
        [VMMS_ACTION_PAUSE] = "pause",
        [VMMS_ACTION_RESUME] = "resume",
        [VMMS_ACTION_REMOVE] = "remove",
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = "change the processor count of",
        [VMMS_ACTION_SET_STARTUP_MEMORY] = "change the startup memory or Dynamic Memory switch of",
};

/* allowed[action][state] */
static const bool allowed[VMMS_ACTION_COUNT][VMMS_VM_STATE_COUNT] = {
        [VMMS_ACTION_START] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_STOP] = {[VMMS_VM_RUNNING] = true, [VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_PAUSE] = {[VMMS_VM_RUNNING] = true},
        [VMMS_ACTION_RESUME] = {[VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_REMOVE] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SET_STARTUP_MEMORY] = {[VMMS_VM_OFF] = true},
};

const char *vmms_vm_action_to_string(VmmsVmAction action)
{
        return action < VMMS_ACTION_COUNT ? action_names[action] : "act on";
}

bool vmms_vm_action_allowed(const char *name, VmmsVmState state, VmmsVmAction action, VmmsError *error)
{
        if (action < VMMS_ACTION_COUNT && state < VMMS_VM_STATE_COUNT && allowed[action][state])
                return true;
        if (state == VMMS_VM_STARTING || state == VMMS_VM_STOPPING)
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot %s VM '%s' now: it is %s; try again when that has finished",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        else
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION, "cannot %s VM '%s': it is %s",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        return false;
}
