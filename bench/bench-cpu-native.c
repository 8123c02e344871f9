/* The guest's CPU-burner loop compiled natively, the peer the guest's speed is
 * compared with. Prints iterations per second as JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cpu-burn-native.h"

static double now_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
        uint64_t iterations = argc > 1 ? strtoull(argv[1], NULL, 10) : (1ull << 26);
        struct cpu_burn_state state = {0};
        double t0, t1;

        if (iterations == 0) {
                fprintf(stderr, "bench-cpu-native: iterations must be a positive number\n");
                return 2;
        }
        t0 = now_s();
        bench_cpu_burn(&state, iterations);
        t1 = now_s();
        printf("{\"iterations\": %" PRIu64 ", \"seconds\": %.6f, \"iterations_per_sec\": %.0f, \"ok\": %s}\n",
               iterations, t1 - t0, (double)iterations / (t1 - t0), state.a == state.c ? "true" : "false");
        return 0;
}
