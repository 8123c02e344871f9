/* bench/migration_vs_qemu.py's guest for QEMU: what the vmms guest's memsoak does with
 * memsoak_mb=224 memsoak_rate_kb=N, as a bare-metal PVH kernel. It marks 224 MiB of
 * pages (index and pass at both ends of each, as memsoak does), then rewrites them in
 * order at N KiB/s and prints "tick NS" on debugcon every 2 ms, NS being its own
 * clock (the TSC, calibrated against the PIT at boot). A mark that does not read back
 * prints CORRUPTION. The rate comes from the command line (-append "rate_kb=N").
 * With no timer interrupt it spins between slices, as a busy guest would. */
#include <stdint.h>

#define MIG_ARENA_GPA (UINT64_C(16) << 20)
#define MIG_ARENA_BYTES (UINT64_C(224) << 20)
#define MIG_PAGE 4096
#define MIG_TICK_NS 2000000
#define MIG_PIT_HZ 1193182
#define MIG_TRAILER_MAGIC UINT64_C(0x6d656d736f616b21)
#define MIG_START_INFO_MAGIC 0x336ec578u

struct mig_start_info { /* the head of Xen's hvm_start_info */
        uint32_t magic, version, flags, nr_modules;
        uint64_t modlist_paddr, cmdline_paddr;
};

static inline void outb(uint16_t port, uint8_t v)
{
        __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
        uint8_t v;

        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

static inline uint64_t rdtsc(void)
{
        uint32_t lo, hi;

        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return (uint64_t)hi << 32 | lo;
}

static void put(const char *s)
{
        while (*s)
                outb(0xe9, (uint8_t)*s++);
}

static void put_u64(uint64_t v)
{
        char buf[24];
        int i = sizeof(buf) - 1;

        buf[i] = '\0';
        do {
                buf[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        put(buf + i);
}

/* TSC ticks per second: PIT channel 2 counts 65535 down in mode 0 (gate on port 0x61,
 * OUT2 read back on bit 5), about 55 ms; the fastest of three tries. */
static uint64_t tsc_hz(void)
{
        uint64_t best = UINT64_MAX;

        for (int i = 0; i < 3; i++) {
                uint64_t t0, t1;

                outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
                outb(0x43, 0xb0);
                outb(0x42, 0xff);
                outb(0x42, 0xff);
                t0 = rdtsc();
                while (!(inb(0x61) & 0x20))
                        ;
                t1 = rdtsc();
                if (t1 - t0 < best)
                        best = t1 - t0;
        }
        return best * MIG_PIT_HZ / 65535;
}

static uint64_t rate_kb_from(const struct mig_start_info *info)
{
        const char *p;
        uint64_t v = 0;

        if (!info || info->magic != MIG_START_INFO_MAGIC || !info->cmdline_paddr)
                return 0;
        for (p = (const char *)(uintptr_t)info->cmdline_paddr; *p; p++) {
                if (p[0] == 'r' && p[1] == 'a' && p[2] == 't' && p[3] == 'e' && p[4] == '_' && p[5] == 'k' &&
                    p[6] == 'b' && p[7] == '=') {
                        for (p += 8; *p >= '0' && *p <= '9'; p++)
                                v = v * 10 + (uint64_t)(*p - '0');
                        return v;
                }
        }
        return 0;
}

static uint64_t corruptions;

static void mark(uint64_t index, uint64_t pass)
{
        volatile uint64_t *page = (volatile uint64_t *)(uintptr_t)(MIG_ARENA_GPA + index * MIG_PAGE);

        page[0] = index;
        page[1] = pass;
        page[MIG_PAGE / 8 - 2] = index ^ MIG_TRAILER_MAGIC;
        page[MIG_PAGE / 8 - 1] = pass;
}

static void check(uint64_t index, uint64_t pass)
{
        volatile uint64_t *page = (volatile uint64_t *)(uintptr_t)(MIG_ARENA_GPA + index * MIG_PAGE);

        if (page[0] == index && page[1] == pass && page[MIG_PAGE / 8 - 2] == (index ^ MIG_TRAILER_MAGIC) &&
            page[MIG_PAGE / 8 - 1] == pass)
                return;
        if (corruptions++ < 16) {
                put("CORRUPTION page=");
                put_u64(index);
                put("\n");
        }
}

void pvh_main(const struct mig_start_info *info);
void pvh_main(const struct mig_start_info *info)
{
        const uint64_t n = MIG_ARENA_BYTES / MIG_PAGE;
        uint64_t rate_kb = rate_kb_from(info), hz = tsc_hz();
        uint64_t start, next_tick, done = 0, cursor = 0, pass = 0;

        put("migration: tsc_hz=");
        put_u64(hz);
        put(" rate_kb=");
        put_u64(rate_kb);
        put("\n");
        for (uint64_t i = 0; i < n; i++)
                mark(i, 0);
        put("migration: reached\n");
        start = rdtsc();
        next_tick = 0;
        for (;;) {
                /* Nanoseconds of its own clock, split so no product overflows. */
                uint64_t t = rdtsc() - start;
                uint64_t now = t / hz * 1000000000u + t % hz * 1000000000u / hz;
                uint64_t due = now / 1000 * rate_kb / (MIG_PAGE / 1024 * 1000000u);

                for (; done < due; done++) {
                        if (cursor == 0)
                                pass++;
                        check(cursor, pass - 1);
                        mark(cursor, pass);
                        cursor = (cursor + 1) % n;
                }
                if (now >= next_tick) {
                        put("tick ");
                        put_u64(now);
                        put("\n");
                        next_tick = now + MIG_TICK_NS;
                }
                __asm__ volatile("pause");
        }
}
