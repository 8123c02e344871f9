/* What preempting a Unicorn engine costs and whether it is safe, measured on the engine
 * alone (no hvd), for hv-engine-unicorn.c's choices. Two parts, both JSON:
 *
 *   bench-unicorn-preempt GUEST cost ROUNDS
 *     Thread CPU time of four speed kernels under each way of watching for preemption
 *     (no hook, an empty block hook, hvd's one-load hook, the clock-polling hook hvd
 *     used before, a hook whose range no block starts in). The engines run in turn,
 *     round after round, so a busy host slows all alike; min and median per cell.
 *
 *   bench-unicorn-preempt GUEST stop SLICE_US
 *     50 M paired increments (kernel 4), stopped every SLICE_US: by hvd's way (a
 *     per-thread timer signal sets a flag the block hook polls), by hvd's way before
 *     (the hook reads the clock every 1024 blocks) and by uc_emu_stop from another
 *     thread; with a Unicorn that has uc_emu_stop_at_block (bench/unicorn-patched,
 *     found at run time), also by that from another thread and with no hook. Counts stops, slice lengths and
 * the two counters, which must both end at 50 M; anything else is a replayed store.
 *
 * GUEST is bench-speed-preempt-guest (speed-preempt.c): the kernel number goes in RDI. */
#include <dlfcn.h>
#include <elf.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <unicorn/unicorn.h>

#include "bench-json.h"

#define RAM_BYTES (128u << 20)
#define STACK_TOP 0x1800000u
#define ARENA_GPA (32u << 20) /* SPEED_ARENA_GPA */
#define PAIRS 50000000u
#define MAX_ROUNDS 64
#define MAX_STOPS 1000000

static const char *const kernels[] = {"fib27x10", "fill_16m_x2", "copy_16m_x2", "cpu_burn"};

enum variant { V_NONE, V_EMPTY, V_FLAG, V_CLOCK_POLL, V_OUT_OF_RANGE, V_COUNT };
static const char *const variants[V_COUNT] = {"no_hook", "empty_hook", "flag_hook", "clock_poll_hook",
                                              "out_of_range_hook"};

static atomic_int preempt;
static unsigned blocks_to_clock = 1024;
static uint64_t slice_end_ns = UINT64_MAX;

static uint64_t clock_ns(clockid_t clock)
{
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void hook_empty(uc_engine *uc, uint64_t address, uint32_t size, void *data)
{
        (void)uc, (void)address, (void)size, (void)data;
}

/* hvd's hook since issue 14: one load of the flag. */
static void hook_flag(uc_engine *uc, uint64_t address, uint32_t size, void *data)
{
        (void)address, (void)size, (void)data;
        if (__builtin_expect(atomic_load_explicit(&preempt, memory_order_relaxed), 0))
                uc_emu_stop(uc);
}

/* hvd's hook before: a block counter and the clock every 1024 blocks, then the flag. */
static void hook_clock_poll(uc_engine *uc, uint64_t address, uint32_t size, void *data)
{
        (void)address, (void)size, (void)data;
        if (--blocks_to_clock == 0) {
                blocks_to_clock = 1024;
                if (clock_ns(CLOCK_MONOTONIC) >= slice_end_ns)
                        atomic_store_explicit(&preempt, 1, memory_order_relaxed);
        }
        if (atomic_load_explicit(&preempt, memory_order_relaxed))
                uc_emu_stop(uc);
}

static uint8_t *load_guest(const char *path)
{
        uint8_t *ram = mmap(NULL, RAM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        FILE *f = fopen(path, "rb");
        Elf64_Ehdr eh;

        if (ram == MAP_FAILED || !f || fread(&eh, sizeof(eh), 1, f) != 1 ||
            memcmp(eh.e_ident, ELFMAG, SELFMAG)) {
                fprintf(stderr, "bench-unicorn-preempt: cannot read the guest %s\n", path);
                exit(1);
        }
        for (int i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;

                if (fseek(f, (long)(eh.e_phoff + (uint64_t)i * eh.e_phentsize), SEEK_SET) ||
                    fread(&ph, sizeof(ph), 1, f) != 1) {
                        fprintf(stderr, "bench-unicorn-preempt: %s: bad program header\n", path);
                        exit(1);
                }
                if (ph.p_type != PT_LOAD)
                        continue;
                if (ph.p_paddr + ph.p_memsz > ARENA_GPA || fseek(f, (long)ph.p_offset, SEEK_SET) ||
                    fread(ram + ph.p_paddr, 1, ph.p_filesz, f) != ph.p_filesz) {
                        fprintf(stderr, "bench-unicorn-preempt: %s: bad segment\n", path);
                        exit(1);
                }
        }
        fclose(f);
        return ram;
}

static uc_engine *engine_new(uint8_t *ram, enum variant v)
{
        uc_engine *uc;
        uc_hook hook;

        if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK ||
            uc_ctl_set_tcg_buffer_size(uc, 32u << 20) != UC_ERR_OK ||
            uc_mem_map_ptr(uc, 0, RAM_BYTES, UC_PROT_ALL, ram) != UC_ERR_OK) {
                fprintf(stderr, "bench-unicorn-preempt: cannot set up an engine\n");
                exit(1);
        }
        if (v == V_EMPTY)
                uc_hook_add(uc, &hook, UC_HOOK_BLOCK, (void *)hook_empty, NULL, 1, 0);
        else if (v == V_FLAG)
                uc_hook_add(uc, &hook, UC_HOOK_BLOCK, (void *)hook_flag, NULL, 1, 0);
        else if (v == V_CLOCK_POLL)
                uc_hook_add(uc, &hook, UC_HOOK_BLOCK, (void *)hook_clock_poll, NULL, 1, 0);
        else if (v == V_OUT_OF_RANGE)
                uc_hook_add(uc, &hook, UC_HOOK_BLOCK, (void *)hook_flag, NULL, 0x10, 0x20);
        return uc;
}

/* Runs until the guest halts, resuming after each stop; returns the number of stops. */
static uint64_t run_kernel(uc_engine *uc, uint64_t kernel, uint64_t slice_ns, timer_t *timer, uint64_t *lens)
{
        uint64_t rip = 0x100000, rsp = STACK_TOP, stops = 0;
        uint8_t byte = 0;

        uc_reg_write(uc, UC_X86_REG_RSP, &rsp);
        uc_reg_write(uc, UC_X86_REG_RDI, &kernel);
        for (;;) {
                uint64_t start = clock_ns(CLOCK_MONOTONIC);

                atomic_store(&preempt, 0);
                slice_end_ns = slice_ns ? start + slice_ns : UINT64_MAX;
                if (timer) {
                        struct itimerspec when = {
                                .it_value = {.tv_sec = (time_t)(slice_end_ns / 1000000000u),
                                             .tv_nsec = (long)(slice_end_ns % 1000000000u)}};

                        timer_settime(*timer, TIMER_ABSTIME, &when, NULL);
                }
                if (uc_emu_start(uc, rip, UINT64_MAX, 0, 0) != UC_ERR_OK) {
                        fprintf(stderr, "bench-unicorn-preempt: the guest faulted\n");
                        exit(1);
                }
                uc_reg_read(uc, UC_X86_REG_RIP, &rip);
                if (uc_mem_read(uc, rip - 1, &byte, 1) == UC_ERR_OK && byte == 0xf4)
                        return stops;
                if (lens && stops < MAX_STOPS)
                        lens[stops] = clock_ns(CLOCK_MONOTONIC) - start;
                stops++;
        }
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

        return x < y ? -1 : x > y;
}

static JsonObject *cell(double min, double median)
{
        JsonObject *o = json_object_new();

        json_object_set_double_member(o, "min", min);
        json_object_set_double_member(o, "median", median);
        return o;
}

static JsonObject *cost(uint8_t *ram, int rounds)
{
        static double ms[V_COUNT][MAX_ROUNDS];
        JsonObject *result = json_object_new(), *by_kernel = json_object_new();

        json_object_set_string_member(result, "benchmark", "unicorn_preemption_cost");
        json_object_set_string_member(result, "unit", "thread_cpu_ms");
        json_object_set_int_member(result, "rounds", rounds);
        for (size_t k = 0; k < sizeof(kernels) / sizeof(kernels[0]); k++) {
                JsonObject *by_variant = json_object_new();
                uc_engine *uc[V_COUNT];

                for (int v = 0; v < V_COUNT; v++)
                        uc[v] = engine_new(ram, v);
                for (int r = -1; r < rounds; r++) /* round -1 translates: untimed */
                        for (int v = 0; v < V_COUNT; v++) {
                                uint64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);

                                run_kernel(uc[v], k, 0, NULL, NULL);
                                if (r >= 0)
                                        ms[v][r] = (double)(clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e6;
                        }
                for (int v = 0; v < V_COUNT; v++) {
                        qsort(ms[v], (size_t)rounds, sizeof(double), cmp_double);
                        json_object_set_object_member(by_variant, variants[v],
                                                      cell(ms[v][0], ms[v][rounds / 2]));
                        uc_close(uc[v]);
                }
                json_object_set_object_member(by_kernel, kernels[k], by_variant);
        }
        json_object_set_object_member(result, "kernels", by_kernel);
        return result;
}

static void on_timer_signal(int signo)
{
        (void)signo;
        atomic_store_explicit(&preempt, 1, memory_order_relaxed);
}

typedef uc_err (*StopFn)(uc_engine *uc);

typedef struct CrossStop {
        uc_engine *uc;
        StopFn stop;
        uint64_t slice_ns;
        atomic_bool done;
} CrossStop;

static void *cross_stopper(void *data)
{
        CrossStop *cs = data;
        struct timespec pause = {.tv_nsec = (long)cs->slice_ns};

        while (!atomic_load(&cs->done)) {
                nanosleep(&pause, NULL);
                cs->stop(cs->uc);
        }
        return NULL;
}

static void stop_one(JsonObject *ways, uint8_t *ram, const char *how, uint64_t slice_ns, StopFn stop)
{
        static uint64_t lens[MAX_STOPS];
        volatile uint64_t *a = (uint64_t *)(ram + ARENA_GPA), *c = a + 8;
        bool by_signal = !strcmp(how, "timer_signal_and_flag_hook"),
             by_poll = !strcmp(how, "clock_poll_hook");
        uc_engine *uc = engine_new(ram, by_signal ? V_FLAG : by_poll ? V_CLOCK_POLL : V_NONE);
        CrossStop cs = {.uc = uc, .stop = stop, .slice_ns = slice_ns};
        uint64_t stops, n, t0 = clock_ns(CLOCK_MONOTONIC);
        pthread_t thread;
        timer_t timer;
        JsonObject *o = json_object_new();
        double mean = 0;

        *a = *c = 0;
        if (by_signal) {
                struct sigaction sa = {.sa_handler = on_timer_signal, .sa_flags = SA_RESTART};
                struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 2};

                sigemptyset(&sa.sa_mask);
                sev._sigev_un._tid = gettid();
                if (sigaction(SIGRTMIN + 2, &sa, NULL) < 0 ||
                    timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0) {
                        perror("bench-unicorn-preempt: timer");
                        exit(1);
                }
                stops = run_kernel(uc, 4, slice_ns, &timer, lens);
                timer_delete(timer);
        } else if (by_poll) {
                stops = run_kernel(uc, 4, slice_ns, NULL, lens);
        } else {
                pthread_create(&thread, NULL, cross_stopper, &cs);
                stops = run_kernel(uc, 4, 0, NULL, lens);
                atomic_store(&cs.done, true);
                pthread_join(thread, NULL);
        }
        n = stops < MAX_STOPS ? stops : MAX_STOPS;
        for (uint64_t i = 0; i < n; i++)
                mean += (double)lens[i] / (double)(n ? n : 1);
        qsort(lens, n, sizeof(uint64_t), cmp_u64);
        json_object_set_int_member(o, "stops", (gint64)stops);
        json_object_set_double_member(o, "slice_mean_us", mean / 1e3);
        json_object_set_double_member(o, "slice_p99_us", n ? (double)lens[n * 99 / 100] / 1e3 : 0.0);
        json_object_set_int_member(o, "wall_ms", (gint64)((clock_ns(CLOCK_MONOTONIC) - t0) / 1000000));
        json_object_set_int_member(o, "a", (gint64)*a);
        json_object_set_int_member(o, "c", (gint64)*c);
        json_object_set_int_member(o, "expected", PAIRS);
        json_object_set_boolean_member(o, "replayed", *a != PAIRS || *c != PAIRS);
        json_object_set_object_member(ways, how, o);
        uc_close(uc);
}

int main(int argc, char **argv)
{
        StopFn stop_at_block = (StopFn)dlsym(RTLD_DEFAULT, "uc_emu_stop_at_block");
        JsonObject *result, *ways;
        uint8_t *ram;
        int n;

        if (argc != 4 || (strcmp(argv[2], "cost") && strcmp(argv[2], "stop")) || (n = atoi(argv[3])) <= 0) {
                fprintf(stderr, "usage: bench-unicorn-preempt GUEST cost ROUNDS | GUEST stop SLICE_US\n");
                return 2;
        }
        ram = load_guest(argv[1]);
        if (!strcmp(argv[2], "cost")) {
                bench_json_print_object(cost(ram, n < MAX_ROUNDS ? n : MAX_ROUNDS));
                return 0;
        }
        result = json_object_new();
        ways = json_object_new();
        json_object_set_string_member(result, "benchmark", "unicorn_preemption_stop");
        json_object_set_string_member(result, "unicorn",
                                      getenv("LD_LIBRARY_PATH") ? getenv("LD_LIBRARY_PATH") : "system");
        json_object_set_int_member(result, "slice_us", n);
        stop_one(ways, ram, "timer_signal_and_flag_hook", (uint64_t)n * 1000, NULL);
        stop_one(ways, ram, "clock_poll_hook", (uint64_t)n * 1000, NULL);
        stop_one(ways, ram, "uc_emu_stop_from_another_thread", (uint64_t)n * 1000, uc_emu_stop);
        if (stop_at_block)
                stop_one(ways, ram, "uc_emu_stop_at_block_from_another_thread", (uint64_t)n * 1000,
                         stop_at_block);
        json_object_set_object_member(result, "ways", ways);
        bench_json_print_object(result);
        return 0;
}
