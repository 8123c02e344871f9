/* The guest's CPU-burner loop compiled natively, the peer the guest's speed is
 * compared with. Prints iterations per second as JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench-json.h"
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
        JsonObject *result = json_object_new();
        double t0, t1;

        if (iterations == 0) {
                fprintf(stderr, "bench-cpu-native: iterations must be a positive number\n");
                return 2;
        }
        t0 = now_s();
        bench_cpu_burn(&state, iterations);
        t1 = now_s();
        json_object_set_int_member(result, "iterations", (gint64)iterations);
        json_object_set_double_member(result, "seconds", t1 - t0);
        json_object_set_double_member(result, "iterations_per_sec", (double)iterations / (t1 - t0));
        json_object_set_boolean_member(result, "ok", state.a == state.c);
        bench_json_print_object(result);
        return 0;
}
