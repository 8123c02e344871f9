/* The guest's CPU-burner loop as a native function, compiled with the guest's code
 * generation flags (see meson.build) so the comparison is of engines, not compilers. */
#include "cpu-burn-native.h"

void bench_cpu_burn(struct cpu_burn_state *s, uint64_t iterations)
{
        cpu_burn_run(s, iterations);
}
