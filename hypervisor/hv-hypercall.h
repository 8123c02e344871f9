/* Hypercall dispatch: every argument from the guest is validated here. */
#pragma once

#include <stdint.h>

#include "hv-partition.h"

/* Runs on the LP thread executing `vp`. Returns the value for the guest's RAX (>= 0,
 * or -(HV_STATUS_*)); may ask the engine to exit through *exit. */
int64_t hv_hypercall_dispatch(HvVp *vp, uint64_t code, uint64_t arg0, uint64_t arg1, uint64_t arg2,
                              HvVpExit *exit);
