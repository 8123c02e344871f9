/* The core's values in the public API's terms (proto/vmms.proto), for every file that
 * writes them: the operation table's replies and the cluster's keys in etcd. */
#pragma once

#include "vmms-definition.h"
#include "vmms.pb-c.h"

/* A VM's state as the public API names it. */
Vmms__V1__VmState vmms_proto_vm_state(VmmsVmState state);
