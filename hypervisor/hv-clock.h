/* The hypervisor's clocks: host monotonic time and the reference clock every guest sees. */
#pragma once

#include <stdint.h>
#include <time.h>

static inline uint64_t hv_clock_monotonic_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
