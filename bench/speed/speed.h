/* The guest-speed kernels and their driver: compiled once with the guest's flags and
 * linked unchanged into a native program, an hvd guest and a PVH kernel for QEMU, so
 * the three runs execute byte-identical code. */
#pragma once

#include <stdint.h>

#include "cpu-burn.h"

/* Bytes of RAM the driver uses from its arena (the largest kernel's working set). */
#define SPEED_ARENA_BYTES (UINT64_C(64) << 20)
/* Where the hvd and QEMU builds place the arena (guest-physical, paging off or identity). */
#define SPEED_ARENA_GPA (UINT64_C(32) << 20)

typedef void (*speed_write_fn)(const char *text, uint64_t len);

/* Runs every kernel once untimed, then `reps` timed rounds; prints one line per timed
 * run, "SPEED <kernel> <round> <tsc cycles> <checksum>", then "SPEED done". */
void speed_run_all(uint8_t *arena, uint32_t reps, speed_write_fn write);

void speed_copy(uint64_t *dst, const uint64_t *src, uint64_t words);
void speed_fill(uint64_t *dst, uint64_t words, uint64_t value);
uint64_t speed_fib(uint32_t n);
uint64_t speed_chase(const uint64_t *next, uint64_t steps);
uint64_t speed_page_touch(uint8_t *base, uint64_t bytes);
void speed_cpu_burn(struct cpu_burn_state *s, uint64_t iterations);
