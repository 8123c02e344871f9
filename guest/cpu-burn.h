/* The CPU burner's inner loop, pure C with no dependencies so the benchmark can build
 * this same header natively and compare speeds with the guest. */
#pragma once

#include <stdint.h>

/* a and c are incremented once per iteration through volatile pointers, so they are
 * real stores: after any number of iterations a == c == iterations run, unless the
 * engine replayed or lost a store. */
struct cpu_burn_state {
        uint64_t hash;
        uint64_t mix;
        uint64_t a;
        uint64_t pad; /* keeps a and c in different words the compiler cannot merge */
        uint64_t c;
};

static inline void cpu_burn_init(struct cpu_burn_state *s, uint64_t seed)
{
        s->hash = seed * 0x9e3779b97f4a7c15ull + 1; /* xorshift needs a nonzero state */
        s->mix = seed;
        s->a = 0;
        s->pad = 0;
        s->c = 0;
}

/* An xorshift64 chain feeding a multiply-xorshift mix, with a few adds, and the two
 * counted stores placed apart so they fall in different parts of the loop body. */
static inline void cpu_burn_run(struct cpu_burn_state *s, uint64_t iterations)
{
        volatile uint64_t *a = &s->a;
        volatile uint64_t *c = &s->c;
        uint64_t x = s->hash, y = s->mix;

        for (uint64_t i = 0; i < iterations; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *a += 1;
                y += x;
                y *= 0xbf58476d1ce4e5b9ull;
                y ^= y >> 31;
                y += i;
                *c += 1;
        }
        s->hash = x;
        s->mix = y;
}

/* The figure printed as hash=: identical natively and in the guest for the same seed
 * and iteration count. */
static inline uint64_t cpu_burn_digest(const struct cpu_burn_state *s)
{
        return s->hash ^ s->mix;
}
