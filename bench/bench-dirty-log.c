/* What hvd's dirty-page tracking (hv-dirty.h) costs a guest: the same store loops run in
 * a real partition (scheduler, Unicorn engine, memfd RAM) with tracking off and on,
 * alternately, and the time from VpStart to the guest's final hlt is compared. Prints
 * JSON: per loop, the median of each and their ratio. bench/run runs it. */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-dirty.h"
#include "hv.h"

#define MiB (1ull << 20)
#define RAM_BYTES (32 * MiB)
#define CODE_GPA 0x100000u
#define AREA_GPA 0x400000u
#define AREA_BYTES (16 * MiB)
#define REPS 5

typedef struct Loop {
        const char *name;
        uint32_t stride;
        uint32_t passes;
} Loop;

static const Loop loops[] = {
        {"one_store_per_page", 4096, 1500},
        {"every_8_bytes", 8, 6},
};

/* mov rcx, passes; outer: mov rbx, AREA; inner: mov [rbx], rax; add rbx, stride;
 * cmp rbx, AREA_END; jb inner; dec rcx; jnz outer; hlt */
static void write_code(uint8_t *code, const Loop *l)
{
        uint8_t prog[] = {0x48, 0xc7, 0xc1, 0,    0,    0,    0,    0x48, 0xc7, 0xc3, 0,    0,    0,
                          0,    0x48, 0x89, 0x03, 0x48, 0x81, 0xc3, 0,    0,    0,    0,    0x48, 0x81,
                          0xfb, 0,    0,    0,    0,    0x72, 0xed, 0x48, 0xff, 0xc9, 0x75, 0xe1, 0xf4};
        uint32_t area = AREA_GPA, end = AREA_GPA + AREA_BYTES;

        memcpy(prog + 3, &l->passes, 4);
        memcpy(prog + 10, &area, 4);
        memcpy(prog + 20, &l->stride, 4);
        memcpy(prog + 27, &end, 4);
        memcpy(code, prog, sizeof(prog));
}

static double run_once(Hv *hv, const Loop *l, bool tracking, uint64_t *ret_dirty)
{
        HvPartitionSpec spec = {
                .name = "bench", .vp_count = 1, .startup_bytes = RAM_BYTES, .maximum_bytes = RAM_BYTES};
        HvVpRegs regs = {.rip = CODE_GPA, .rsp = 0x80000};
        g_autofree uint64_t *out = g_new0(uint64_t, (HV_DIRTY_HARVEST_PAGES + 63) / 64);
        g_autofree char *error = NULL;
        HvPartition *p;
        int64_t t0, t1;
        uint64_t pages = 0, dirty = 0;

        spec.processor = HV_PROCESSOR_DEFAULTS;
        if (hv_partition_create(hv, &spec, &p, &error) < 0)
                g_error("partition: %s", error);
        write_code(p->ram + CODE_GPA, l);
        if (tracking && hv_dirty_start(p) < 0)
                g_error("dirty start");
        t0 = g_get_monotonic_time();
        if (hv_partition_vp_start(p, 0, &regs) < 0)
                g_error("vp start");
        while (atomic_load(&p->vps[0]->state) != HV_VP_IDLE)
                g_usleep(200);
        t1 = g_get_monotonic_time();
        if (tracking)
                (void)hv_dirty_harvest(p, 0, out, &pages, &dirty);
        *ret_dirty = dirty;
        hv_partition_destroy(hv, p);
        return (double)(t1 - t0) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

int main(void)
{
        HvConfig config = {.pool_bytes = 256 * MiB,
                           .n_lps = 1,
                           .slice_ns = 10000000,
                           .sched_ops = &hv_sched_round_robin_ops,
                           .engine = &hv_engine_unicorn_ops};
        g_autoptr(GMainContext) context = g_main_context_new();
        g_autoptr(Hv) hv = NULL;

        if (hv_new(&config, context, &hv) < 0)
                g_error("hv_new");
        printf("{\"bench\": \"dirty_log\", \"engine\": \"unicorn\", \"reps\": %d, \"loops\": [", REPS);
        for (size_t k = 0; k < G_N_ELEMENTS(loops); k++) {
                const Loop *l = &loops[k];
                double off[REPS], on[REPS];
                uint64_t dirty = 0, stores = (uint64_t)l->passes * (AREA_BYTES / l->stride);

                for (int i = 0; i < REPS; i++) {
                        off[i] = run_once(hv, l, false, &dirty);
                        on[i] = run_once(hv, l, true, &dirty);
                }
                qsort(off, REPS, sizeof(double), cmp_double);
                qsort(on, REPS, sizeof(double), cmp_double);
                printf("%s{\"loop\": \"%s\", \"stores\": %" G_GUINT64_FORMAT
                       ", \"off_s\": %.4f, \"on_s\": %.4f, "
                       "\"ratio\": %.3f, \"ns_per_store_off\": %.2f, \"ns_per_store_on\": %.2f, "
                       "\"dirty_pages_harvested\": %" G_GUINT64_FORMAT "}",
                       k ? ", " : "", l->name, stores, off[REPS / 2], on[REPS / 2],
                       on[REPS / 2] / off[REPS / 2], off[REPS / 2] * 1e9 / (double)stores,
                       on[REPS / 2] * 1e9 / (double)stores, dirty);
        }
        printf("]}\n");
        return 0;
}
