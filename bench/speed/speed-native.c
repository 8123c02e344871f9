/* The native run of the guest-speed kernels: the same objects the guests run, on a
 * pre-faulted arena. Usage: bench-speed-native [rounds]. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "speed.h"

static void write_stdout(const char *text, uint64_t len)
{
        fwrite(text, 1, len, stdout);
        fflush(stdout);
}

int main(int argc, char **argv)
{
        uint32_t reps = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 3;
        uint8_t *arena = mmap(NULL, SPEED_ARENA_BYTES, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

        if (arena == MAP_FAILED) {
                perror("bench-speed-native: mmap");
                return 1;
        }
        speed_run_all(arena, reps ? reps : 1, write_stdout);
        return 0;
}
