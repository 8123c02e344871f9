/* Save and restore of a paused partition: its VPs' registers and run states and its
 * guest's reference time, as hv.proto's VpState and PartitionState. What comes in may
 * come from a saved file or a peer host, so every field is checked as guest input is. */
#pragma once

#include <glib.h>

#include "hv.h"
#include "hv.pb-c.h"

/* Pure: checks a VpRegisters message against a partition of `visible_bytes` and
 * converts it. 0, or -EINVAL with *ret_error naming the field. */
int hv_state_registers_from_wire(const Vmms__Hv__VpRegisters *wire, uint64_t visible_bytes, HvVpCpuState *ret,
                                 char **ret_error);
/* Fills *ret (its arrays from `arena`, freed with it) from the VP's state. -EBUSY
 * unless the partition is paused. */
int hv_state_vp_get(Hv *hv, HvPartition *p, uint32_t vp_index, Vmms__Hv__VpState *ret, GPtrArray *arena,
                    char **ret_error);
/* Only on a paused, restoring partition, once per VP, after hv_state_partition_set. */
int hv_state_vp_set(Hv *hv, HvPartition *p, const Vmms__Hv__VpState *state, char **ret_error);
int hv_state_partition_get(HvPartition *p, Vmms__Hv__PartitionState *ret, char **ret_error);
int hv_state_partition_set(HvPartition *p, uint64_t reference_time_ns, char **ret_error);
