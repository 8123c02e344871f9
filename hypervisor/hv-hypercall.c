/* Hypercall dispatch. The guest is untrusted: each argument is checked, a bad one
 * returns an HV_STATUS to the guest and counts in invalid_hypercalls. */
#include "hv-abi.h"
#include "hv-clock.h"
#include "hv-hypercall.h"
#include "hv-vmbus.h"
#include "hv.h"

static int64_t console_write(HvVp *vp, uint64_t gpa, uint64_t len)
{
        HvPartition *p = vp->partition;

        if (len > HV_CONSOLE_WRITE_MAX)
                return -HV_STATUS_INVALID_PARAMETER;
        if (!hv_partition_range_valid(p, gpa, len))
                return -HV_STATUS_ACCESS_DENIED;
        hv_partition_console_write(p, p->ram + gpa, len);
        return (int64_t)len;
}

/* Copied at once: the guest may reuse its buffer as soon as the call returns. */
static int64_t post_message(HvVp *vp, uint64_t gpa, uint64_t len)
{
        HvPartition *p = vp->partition;

        if (len == 0 || len > HV_MESSAGE_PAYLOAD_MAX)
                return -HV_STATUS_INVALID_PARAMETER;
        if (!hv_partition_range_valid(p, gpa, len))
                return -HV_STATUS_ACCESS_DENIED;
        return hv_partition_post_message(p, p->ram + gpa, (uint32_t)len);
}

static int64_t signal_event(HvVp *vp, uint64_t connection_id)
{
        if (connection_id == 0 || connection_id > UINT32_MAX)
                return -HV_STATUS_INVALID_PARAMETER;
        return hv_partition_signal_event(vp->partition, (uint32_t)connection_id);
}

static int64_t partition_info(HvVp *vp, uint64_t what)
{
        switch (what) {
        case HV_PARTITION_INFO_VISIBLE_BYTES:
                return (int64_t)atomic_load(&vp->partition->visible_bytes);
        case HV_PARTITION_INFO_VP_COUNT:
                return vp->partition->vp_count;
        default:
                return -HV_STATUS_INVALID_PARAMETER;
        }
}

int64_t hv_hypercall_dispatch(HvVp *vp, uint64_t code, uint64_t arg0, uint64_t arg1, uint64_t arg2,
                              HvVpExit *exit)
{
        int64_t result;

        (void)arg2;
        atomic_fetch_add(&vp->hypercalls, 1);
        switch (code) {
        case HV_CALL_CONSOLE_WRITE:
                result = console_write(vp, arg0, arg1);
                break;
        case HV_CALL_IDLE:
                exit->kind = HV_EXIT_IDLE;
                /* The guest's reference time to host monotonic time; a deadline past the end
                 * of time waits for an event. */
                exit->idle_deadline_ns = hv_partition_deadline_to_host(vp->partition, arg0);
                result = HV_IDLE_WOKE_TIMER; /* replaced at wake-up if an event woke it */
                break;
        case HV_CALL_REFERENCE_TIME:
                result = (int64_t)hv_partition_reference_time_ns(vp->partition);
                break;
        case HV_CALL_LONG_SPIN_WAIT:
                exit->kind = HV_EXIT_YIELD;
                result = 0;
                break;
        case HV_CALL_HALT:
                exit->kind = HV_EXIT_HALT;
                g_snprintf(exit->reason, sizeof(exit->reason), "guest halted (code %" G_GUINT64_FORMAT ")",
                           arg0);
                result = 0;
                break;
        case HV_CALL_PARTITION_INFO:
                result = partition_info(vp, arg0);
                break;
        case HV_CALL_POST_MESSAGE:
                result = post_message(vp, arg0, arg1);
                break;
        case HV_CALL_SIGNAL_EVENT:
                result = signal_event(vp, arg0);
                break;
        default:
                result = -HV_STATUS_INVALID_HYPERCALL_CODE;
                break;
        }
        /* A full mailbox is back-pressure on a well-behaved guest, counted in the
         * partition's refused messages, not an invalid call. */
        if (result < 0 && result != -HV_STATUS_INSUFFICIENT_BUFFERS)
                atomic_fetch_add(&vp->invalid_hypercalls, 1);
        return result;
}
