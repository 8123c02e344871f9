/* The guest of bench/unicorn_preemption.py: runs one speed kernel, picked by the host
 * in RDI, then halts. Kernel 4 is the store-replay check: two counters incremented
 * together, in one translated block, that must end equal. */
#include "speed.h"

#define SPEED_PAIRS 50000000u

static void pair_increments(volatile uint64_t *a, volatile uint64_t *c)
{
        for (uint32_t i = 0; i < SPEED_PAIRS; i++) {
                *a += 1;
                *c += 1;
        }
}

__attribute__((section(".text.boot"), noreturn)) void guest_entry(uint64_t kernel)
{
        uint64_t *arena = (uint64_t *)(uintptr_t)SPEED_ARENA_GPA;
        struct cpu_burn_state burn;
        volatile uint64_t sink = 0;

        switch (kernel) {
        case 0:
                for (int i = 0; i < 10; i++)
                        sink += speed_fib(27);
                break;
        case 1:
                for (int i = 0; i < 2; i++)
                        speed_fill(arena, (16u << 20) / 8, (uint64_t)i);
                break;
        case 2:
                for (int i = 0; i < 2; i++)
                        speed_copy(arena + ((16u << 20) + (1u << 19)) / 8, arena, (16u << 20) / 8);
                break;
        case 3:
                cpu_burn_init(&burn, 1);
                speed_cpu_burn(&burn, UINT64_C(1) << 21);
                sink = cpu_burn_digest(&burn);
                break;
        case 4:
                pair_increments(arena, arena + 8);
                break;
        }
        (void)sink;
        for (;;)
                __asm__ volatile("hlt");
}
