/* Hypercall wrappers for the vmms guest: one `out` to HV_HYPERCALL_PORT per call,
 * following the register convention in hv-abi.h. */
#pragma once

#include <stdint.h>

#include "hv-abi.h"

/* The jump after `out` ends the engine's translated block at the hypercall, so a
 * hypercall that stops the engine never re-runs stores made earlier in the block. */
static inline int64_t guest_hypercall(uint32_t code, uint64_t arg0, uint64_t arg1, uint64_t arg2)
{
        uint64_t rax = code;
        register uint64_t r8 __asm__("r8") = arg2;

        __asm__ volatile("outl %%eax, %%dx\n\t"
                         "jmp 1f\n"
                         "1:"
                         : "+a"(rax)
                         : "d"((uint16_t)HV_HYPERCALL_PORT), "D"(arg0), "S"(arg1), "r"(r8)
                         : "memory");
        return (int64_t)rax;
}

static inline int64_t guest_hv_console_write(const void *buf, uint64_t len)
{
        return guest_hypercall(HV_CALL_CONSOLE_WRITE, (uint64_t)(uintptr_t)buf, len, 0);
}

/* deadline_ns is absolute on the reference clock; 0 waits for an event. */
static inline int64_t guest_hv_idle(uint64_t deadline_ns)
{
        return guest_hypercall(HV_CALL_IDLE, deadline_ns, 0, 0);
}

static inline uint64_t guest_hv_reference_time(void)
{
        return (uint64_t)guest_hypercall(HV_CALL_REFERENCE_TIME, 0, 0, 0);
}

static inline void guest_hv_long_spin_wait(uint64_t spin_count)
{
        guest_hypercall(HV_CALL_LONG_SPIN_WAIT, spin_count, 0, 0);
}

static inline int64_t guest_hv_partition_info(enum hv_partition_info what)
{
        return guest_hypercall(HV_CALL_PARTITION_INFO, what, 0, 0);
}

/* HALT must not return; if a hypervisor lets it, stay parked without burning CPU. */
static inline __attribute__((noreturn)) void guest_hv_halt(uint64_t reason)
{
        for (;;) {
                guest_hypercall(HV_CALL_HALT, reason, 0, 0);
                guest_hv_idle(0);
        }
}
