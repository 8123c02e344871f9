/* bench_cpu_burn: guest/cpu-burn.h's loop, built natively with the guest's flags. */
#pragma once

#include <stdint.h>

#include "cpu-burn.h"

void bench_cpu_burn(struct cpu_burn_state *s, uint64_t iterations);
