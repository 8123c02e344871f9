/* The `cpu` workload: every VP burns CPU in fixed batches, checks that no store was
 * lost or replayed, and reports its rate about once per second. */
#include "cpu-burn.h"
#include "guest.h"
#include "hypercall.h"

#define GUEST_CPU_BATCH_ITERATIONS (UINT64_C(1) << 20)

void guest_workload_cpu_run(uint32_t vp)
{
        struct cpu_burn_state s;
        uint64_t batches = 0, iterations = 0;
        uint64_t last_time = guest_hv_reference_time(), last_iterations = 0;

        cpu_burn_init(&s, vp);
        for (;;) {
                uint64_t now, elapsed;

                cpu_burn_run(&s, GUEST_CPU_BATCH_ITERATIONS);
                batches++;
                iterations += GUEST_CPU_BATCH_ITERATIONS;
                guest_check_host_request();
                guest_vmbus_poll();
                /* a == c alone misses a replay of a block holding both stores. */
                if (s.a != s.c || s.a != iterations) {
                        guest_printf("cpu: CORRUPTION a=%lu c=%lu expected=%lu\n", s.a, s.c, iterations);
                        s.a = s.c = iterations; /* report each corruption once */
                }
                now = guest_hv_reference_time();
                if (now < last_time) { /* never trust a clock to be monotonic */
                        last_time = now;
                        last_iterations = iterations;
                        continue;
                }
                elapsed = now - last_time;
                if (elapsed < GUEST_NS_PER_SEC)
                        continue;
                guest_printf("cpu: vp=%u batches=%lu iterations=%lu rate=%lu/s hash=0x%016lx\n", vp, batches,
                             iterations, (iterations - last_iterations) * GUEST_NS_PER_SEC / elapsed,
                             cpu_burn_digest(&s));
                last_time = now;
                last_iterations = iterations;
        }
}
