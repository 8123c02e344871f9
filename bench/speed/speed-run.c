/* The driver of the guest-speed comparison: times each kernel with rdtsc (the host's
 * TSC natively, under Unicorn and under QEMU's TCG alike) and prints the cycles. */
#include "speed.h"

#define MIB (UINT64_C(1) << 20)

static inline uint64_t rdtsc(void)
{
        uint32_t lo, hi;

        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)::"memory");
        return ((uint64_t)hi << 32) | lo;
}

static uint64_t put_u64(char *at, uint64_t v)
{
        char digits[20];
        uint64_t n = 0, len = 0;

        do {
                digits[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                at[len++] = digits[--n];
        return len;
}

static uint64_t put_str(char *at, const char *s)
{
        uint64_t len = 0;

        while (s[len]) {
                at[len] = s[len];
                len++;
        }
        return len;
}

static void report(speed_write_fn write, const char *kernel, uint32_t round, uint64_t cycles, uint64_t sum)
{
        char line[128];
        uint64_t len = put_str(line, "SPEED ");

        len += put_str(line + len, kernel);
        line[len++] = ' ';
        len += put_u64(line + len, round);
        line[len++] = ' ';
        len += put_u64(line + len, cycles);
        line[len++] = ' ';
        len += put_u64(line + len, sum);
        line[len++] = '\n';
        write(line, len);
}

/* A permutation of n slots as one cycle (Sattolo's algorithm), so the chase visits
 * every slot in an order the prefetcher cannot guess. */
static void chase_init(uint64_t *next, uint64_t n)
{
        uint64_t x = 0x2545f4914f6cdd1dull;

        for (uint64_t i = 0; i < n; i++)
                next[i] = i;
        for (uint64_t i = n - 1; i > 0; i--) {
                uint64_t j, t;

                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                j = x % i;
                t = next[i];
                next[i] = next[j];
                next[j] = t;
        }
}

enum speed_kernel { K_CPU_BURN, K_COPY, K_COPY_ALIASED, K_FILL, K_FIB, K_CHASE, K_PAGE_TOUCH, K_COUNT };

static const char *const kernel_names[K_COUNT] = {
        "cpu_burn", "copy_16m", "copy_16m_aliased", "fill_16m", "fib27x40", "chase_1m", "page_touch_64m",
};

/* Sized so each runs some tens of milliseconds natively. */
static uint64_t run_kernel(enum speed_kernel k, uint8_t *arena)
{
        uint64_t *src = (uint64_t *)arena, sum = 0;
        struct cpu_burn_state burn;

        switch (k) {
        case K_CPU_BURN:
                cpu_burn_init(&burn, 1);
                speed_cpu_burn(&burn, UINT64_C(1) << 23);
                return cpu_burn_digest(&burn) ^ (burn.a - burn.c);
        case K_COPY:
        case K_COPY_ALIASED: {
                uint64_t *dst = (uint64_t *)(arena + (k == K_COPY ? 16 * MIB + MIB / 2 : 16 * MIB));

                for (int i = 0; i < 8; i++)
                        speed_copy(dst, src, 16 * MIB / 8);
                return dst[12345];
        }
        case K_FILL:
                for (int i = 0; i < 8; i++)
                        speed_fill(src, 16 * MIB / 8, (uint64_t)i);
                return src[4321];
        case K_FIB:
                for (int i = 0; i < 40; i++)
                        sum += speed_fib(27);
                return sum;
        case K_CHASE:
                return speed_chase(src, UINT64_C(1) << 22);
        case K_PAGE_TOUCH:
                for (int i = 0; i < 64; i++)
                        sum += speed_page_touch(arena, 64 * MIB);
                return sum;
        default:
                return 0;
        }
}

void speed_run_all(uint8_t *arena, uint32_t reps, speed_write_fn write)
{
        for (int k = 0; k < K_COUNT; k++) {
                uint64_t sum;

                if (k == K_CHASE)
                        chase_init((uint64_t *)arena, MIB / 8);
                run_kernel((enum speed_kernel)k, arena); /* warm: host pages, TLB, translations */
                for (uint32_t r = 0; r < reps; r++) {
                        uint64_t t0 = rdtsc();

                        sum = run_kernel((enum speed_kernel)k, arena);
                        report(write, kernel_names[k], r, rdtsc() - t0, sum);
                }
        }
        write("SPEED done\n", 11);
}
