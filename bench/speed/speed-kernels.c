/* The kernels of the guest-speed comparison; each stands for one kind of guest work.
 * Kept apart from the driver so the compiler cannot fold a kernel into its caller. */
#include "speed.h"

void speed_copy(uint64_t *dst, const uint64_t *src, uint64_t words)
{
        for (uint64_t i = 0; i < words; i++)
                dst[i] = src[i];
}

void speed_fill(uint64_t *dst, uint64_t words, uint64_t value)
{
        for (uint64_t i = 0; i < words; i++)
                dst[i] = value + i;
}

uint64_t speed_fib(uint32_t n)
{
        return n < 2 ? n : speed_fib(n - 1) + speed_fib(n - 2);
}

uint64_t speed_chase(const uint64_t *next, uint64_t steps)
{
        uint64_t at = 0;

        for (uint64_t i = 0; i < steps; i++)
                at = next[at];
        return at;
}

uint64_t speed_page_touch(uint8_t *base, uint64_t bytes)
{
        volatile uint8_t *p = base;

        for (uint64_t off = 0; off < bytes; off += 4096)
                p[off] += 1;
        return p[0];
}

void speed_cpu_burn(struct cpu_burn_state *s, uint64_t iterations)
{
        cpu_burn_run(s, iterations);
}
