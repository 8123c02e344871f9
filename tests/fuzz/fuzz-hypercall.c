/* Guest -> hvd: hypercalls with guest-chosen codes, registers and memory, dispatched as
 * an LP thread does (hv-hypercall.c), and what they queue delivered to the worker as
 * hvd's main thread does (hv.c, hv-partition.c's mailbox and console). The partition is
 * built as test-hv-mailbox.c builds it. Each step of the input writes guest RAM, makes
 * one call, or lets the main thread deliver what the calls queued.
 *
 * Checks beyond the sanitizers: every result is a value or one of the statuses the ABI
 * names, a refused call (other than a full mailbox) counts as invalid exactly once, and
 * what reaches the worker is what the ABI allows (messages of 1 to
 * HV_MESSAGE_PAYLOAD_MAX bytes, signals for a non-zero 32-bit connection id). */
#include <glib.h>

#include "fuzz.h"
#include "hv-abi.h"
#include "hv-hypercall.h"
#include "hv-vmbus.h"
#include "hv.h"

#define VISIBLE (64u << 10)
#define MAXIMUM (128u << 10)
#define STEPS_MAX 256

static int on_event(HvPartition *p, const HvEvent *event, void *userdata)
{
        (void)p;
        (void)userdata;
        switch (event->kind) {
        case HV_EVENT_GUEST_MESSAGE:
                FUZZ_CHECK(event->note->len >= 1 && event->note->len <= HV_MESSAGE_PAYLOAD_MAX);
                break;
        case HV_EVENT_GUEST_SIGNAL:
                FUZZ_CHECK(event->note->connection_id != 0);
                break;
        default:
                break;
        }
        return 0;
}

static bool status_known(int64_t result)
{
        switch (-result) {
        case HV_STATUS_INVALID_HYPERCALL_CODE:
        case HV_STATUS_INVALID_HYPERCALL_INPUT:
        case HV_STATUS_INVALID_ALIGNMENT:
        case HV_STATUS_INVALID_PARAMETER:
        case HV_STATUS_ACCESS_DENIED:
        case HV_STATUS_INSUFFICIENT_BUFFERS:
                return true;
        default:
                return false;
        }
}

/* A register: mostly small values (addresses and lengths inside the partition), or any. */
static uint64_t fuzz_register(FuzzInput *in)
{
        uint8_t kind = fuzz_u8(in);

        return kind & 0x80 ? fuzz_u64(in) : fuzz_u16(in) * (uint64_t)(kind & 0x7f ? kind & 0x7f : 1);
}

static void call(HvVp *vp, FuzzInput *in, uint64_t code)
{
        uint64_t arg0 = fuzz_register(in), arg1 = fuzz_register(in), arg2 = fuzz_register(in);
        uint64_t invalid = atomic_load(&vp->invalid_hypercalls);
        HvVpExit exit = {0};
        int64_t result = hv_hypercall_dispatch(vp, code, arg0, arg1, arg2, &exit);

        FUZZ_CHECK(result >= 0 || status_known(result));
        FUZZ_CHECK(atomic_load(&vp->invalid_hypercalls) - invalid ==
                   (result < 0 && result != -HV_STATUS_INSUFFICIENT_BUFFERS));
        FUZZ_CHECK(exit.kind <= HV_EXIT_HALT);
        if (exit.kind == HV_EXIT_HALT)
                FUZZ_CHECK(memchr(exit.reason, '\0', sizeof(exit.reason)) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        FuzzInput in = {data, size};
        Hv hv = {0};
        HvPartition *p;
        HvVp vp = {0};

        fuzz_quiet_logs();
        hv.main_context = g_main_context_new();
        hv.partitions = g_hash_table_new(g_int64_hash, g_int64_equal);
        hv.engine = &hv_engine_unicorn_ops;
        hv.on_event = on_event;
        FUZZ_CHECK(hv_partition_new(&hv, "fuzz", 0, 1, VISIBLE, MAXIMUM, &p) == 0);
        p->id = 1;
        g_hash_table_insert(hv.partitions, &p->id, p);
        vp.partition = p;

        for (int step = 0; step < STEPS_MAX && in.size > 0; step++) {
                uint8_t op = fuzz_u8(&in);

                if (op & 0x80) { /* the guest writes its RAM */
                        uint16_t at = fuzz_u16(&in) % VISIBLE;
                        size_t want = fuzz_u8(&in);
                        size_t len = MIN(want, VISIBLE - at);

                        fuzz_take(&in, p->ram + at, len);
                        continue;
                }
                if (op < 0x40)
                        call(&vp, &in, op % (HV_CALL_CODE_MAX + 1));
                else if (op < 0x60)
                        while (g_main_context_iteration(hv.main_context, FALSE))
                                ;
                else
                        call(&vp, &in, fuzz_u64(&in));
        }
        while (g_main_context_iteration(hv.main_context, FALSE))
                ;
        g_hash_table_remove(hv.partitions, &p->id);
        hv_partition_free(p);
        g_hash_table_unref(hv.partitions);
        g_main_context_unref(hv.main_context);
        return 0;
}
