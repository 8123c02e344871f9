/* The core's values in the public API's terms (vmms-proto.h). */
#include "vmms-proto.h"

Vmms__V1__VmState vmms_proto_vm_state(VmmsVmState state)
{
        static const Vmms__V1__VmState map[VMMS_VM_STATE_COUNT] = {
                [VMMS_VM_OFF] = VMMS__V1__VM_STATE__VM_STATE_OFF,
                [VMMS_VM_STARTING] = VMMS__V1__VM_STATE__VM_STATE_STARTING,
                [VMMS_VM_RUNNING] = VMMS__V1__VM_STATE__VM_STATE_RUNNING,
                [VMMS_VM_PAUSED] = VMMS__V1__VM_STATE__VM_STATE_PAUSED,
                [VMMS_VM_STOPPING] = VMMS__V1__VM_STATE__VM_STATE_STOPPING,
                [VMMS_VM_SAVED] = VMMS__V1__VM_STATE__VM_STATE_SAVED,
                [VMMS_VM_MIGRATING] = VMMS__V1__VM_STATE__VM_STATE_MIGRATING,
        };
        return state < VMMS_VM_STATE_COUNT ? map[state] : VMMS__V1__VM_STATE__VM_STATE_UNSPECIFIED;
}
