/* The guest ABI of the vmms hypervisor: hypercall codes, status codes and the boot
 * protocol, shared by hvd, vmwp and the freestanding guest kernel. Versioned. */
#pragma once

#include <stdint.h>

#define HV_ABI_VERSION 1

/* A hypercall is `outl %eax, %dx` with DX = HV_HYPERCALL_PORT, EAX = call code and
 * the arguments in RDI, RSI, R8. The result comes back in RAX: >= 0 on success,
 * -(HV_STATUS_*) on failure. The guest must follow the `out` with a jump to the next
 * instruction so the engine's translated block ends there. */
#define HV_HYPERCALL_PORT 0x4856

enum hv_call_code {
        HV_CALL_CONSOLE_WRITE = 1,  /* (gpa, len) -> bytes accepted; len <= HV_CONSOLE_WRITE_MAX */
        HV_CALL_IDLE = 2,           /* (deadline_ns) -> HV_IDLE_WOKE_*; 0 = until an event */
        HV_CALL_REFERENCE_TIME = 3, /* () -> ns on the reference clock shared by all partitions */
        HV_CALL_LONG_SPIN_WAIT = 4, /* (spin_count) -> 0; the VP yields the rest of its slice */
        HV_CALL_HALT = 5,           /* (reason) -> does not return; the VP stops */
        HV_CALL_PARTITION_INFO = 6, /* (what) -> value; see enum hv_partition_info */
        HV_CALL_POST_MESSAGE = 7,   /* (gpa, len) -> 0; len <= HV_MESSAGE_PAYLOAD_MAX; see hv-vmbus.h */
        HV_CALL_SIGNAL_EVENT = 8,   /* (connection_id) -> 0; tells the worker a channel has news */
        HV_CALL_CODE_MAX
};

/* Hyper-V's status numbering, returned negated. */
enum hv_status {
        HV_STATUS_SUCCESS = 0,
        HV_STATUS_INVALID_HYPERCALL_CODE = 2,
        HV_STATUS_INVALID_HYPERCALL_INPUT = 3,
        HV_STATUS_INVALID_ALIGNMENT = 4,
        HV_STATUS_INVALID_PARAMETER = 5,
        HV_STATUS_ACCESS_DENIED = 6,
        HV_STATUS_INSUFFICIENT_BUFFERS = 19,
};

enum hv_idle_woke {
        HV_IDLE_WOKE_TIMER = 0, /* the deadline passed */
        HV_IDLE_WOKE_EVENT = 1, /* an event was signalled to the VP */
};

enum hv_partition_info {
        HV_PARTITION_INFO_VISIBLE_BYTES = 1, /* RAM the guest may use, from GPA 0 */
        HV_PARTITION_INFO_VP_COUNT = 2,
};

#define HV_CONSOLE_WRITE_MAX 4096u

/* ---- Boot protocol (vmwp -> guest) ----
 * vmwp loads the guest ELF (PT_LOAD segments at their physical addresses, at or
 * above HV_GUEST_KERNEL_BASE) and writes a struct hv_boot_info at HV_BOOT_INFO_GPA.
 * Every VP starts at the ELF entry point in 64-bit mode with paging off (guest
 * addresses are physical), RDI = VP index, RSI = HV_BOOT_INFO_GPA and RSP = the top
 * of its boot stack, HV_BOOT_STACK_TOP(vp). */
#define HV_BOOT_INFO_GPA 0x1000ull
#define HV_BOOT_INFO_MAGIC 0x564d4d53u /* "VMMS" */
#define HV_BOOT_CMDLINE_MAX 256
#define HV_BOOT_STACK_BASE 0x10000ull
#define HV_BOOT_STACK_SIZE 0x4000ull
#define HV_MAX_VPS_PER_PARTITION 32
#define HV_BOOT_STACK_TOP(vp) (HV_BOOT_STACK_BASE + ((uint64_t)(vp) + 1) * HV_BOOT_STACK_SIZE)
#define HV_GUEST_KERNEL_BASE 0x100000ull
#define HV_PAGE_SIZE 4096ull

struct hv_boot_info {
        uint32_t magic;
        uint32_t abi_version;
        uint32_t vp_count;
        uint32_t reserved0;
        uint64_t visible_bytes;            /* RAM the guest may use, from GPA 0 */
        uint64_t maximum_bytes;            /* the most it may ever be given (hot-add) */
        char cmdline[HV_BOOT_CMDLINE_MAX]; /* "workload=cpu memsoak_mb=64 ..." */
        /* Written by the host while the guest runs, then VP 0 is signalled (its Idle
         * returns HV_IDLE_WOKE_EVENT); the guest reads it on every wake-up and between
         * batches of work. HV_HOST_REQUEST_* bits. */
        volatile uint32_t host_request;
        uint32_t reserved1;
};

#define HV_HOST_REQUEST_SHUTDOWN 0x1u /* shut down: print a line, then every VP halts */
