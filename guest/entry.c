/* Boot and shutdown of the vmms guest: VP 0 checks the boot info, sets up memory and
 * the console and picks the workload; the other VPs wait for it, then run their part. */
#include "guest.h"
#include "hypercall.h"

/* Visible memory must leave at least this much free after the kernel and bitmaps. */
#define GUEST_MIN_FREE_BYTES (UINT64_C(1) << 20)
/* Bound on maximum_bytes: keeps the allocator's bitmaps at 64 MiB or less. */
#define GUEST_MAX_MEMORY_BYTES (UINT64_C(1) << 40)
#define GUEST_BOOT_SPINS_BEFORE_IDLE 1000

enum guest_boot_state {
        GUEST_BOOT_PENDING = 0, /* what .bss starts as, before VP 0 has looked */
        GUEST_BOOT_DONE = 1,
        GUEST_BOOT_FAILED = 2,
};

/* Written by VP 0 only; the other VPs only read. */
static uint32_t guest_boot_state;
static struct hv_boot_info guest_boot_info; /* VP 0's validated copy */
static char guest_cmdline[HV_BOOT_CMDLINE_MAX];
static bool guest_cmdline_truncated;
static struct guest_config guest_config;
static uint64_t guest_boot_time;

uint64_t guest_boot_time_ns(void)
{
        return guest_boot_time;
}

/* The host writes requests into the live boot info page, not into VP 0's copy. */
void guest_check_host_request(void)
{
        const struct hv_boot_info *live = (const struct hv_boot_info *)(uintptr_t)HV_BOOT_INFO_GPA;

        if (!(live->host_request & HV_HOST_REQUEST_SHUTDOWN) || guest_config.ignore_shutdown)
                return;
        /* Every VP sees the request on its own; VP 0 says it for the guest. */
        if (guest_vp_index() == 0)
                guest_printf("vmms-guest: shutdown requested, halting\n");
        guest_hv_halt(GUEST_HALT_SHUTDOWN);
}

static uint64_t guest_image_end(void)
{
        return ((uint64_t)(uintptr_t)_end + GUEST_PAGE_SIZE - 1) & ~(GUEST_PAGE_SIZE - 1);
}

static bool guest_on_boot_stack(uint64_t vp)
{
        uint64_t rsp = guest_stack_pointer(), top = HV_BOOT_STACK_TOP(vp);

        return rsp < top && rsp >= top - HV_BOOT_STACK_SIZE;
}

static __attribute__((noreturn)) void guest_boot_fail(void)
{
        __atomic_store_n(&guest_boot_state, GUEST_BOOT_FAILED, __ATOMIC_RELEASE);
        guest_hv_halt(GUEST_HALT_BAD_BOOT);
}

/* Copies the boot info out of the loader's page and checks everything later code
 * relies on. Prints the first problem found and returns false. */
static bool guest_boot_info_load(const struct hv_boot_info *info)
{
        struct hv_boot_info *b = &guest_boot_info;
        uint64_t needed;
        size_t len;

        if ((uint64_t)(uintptr_t)info != HV_BOOT_INFO_GPA) {
                guest_printf("vmms-guest: bad boot info: at %p, expected 0x%lx\n", (const void *)info,
                             (uint64_t)HV_BOOT_INFO_GPA);
                return false;
        }
        memcpy(b, info, sizeof(*b));
        if (b->magic != HV_BOOT_INFO_MAGIC) {
                guest_printf("vmms-guest: bad boot info: magic 0x%x, expected 0x%x\n", b->magic,
                             HV_BOOT_INFO_MAGIC);
                return false;
        }
        if (b->abi_version != HV_ABI_VERSION) {
                guest_printf("vmms-guest: bad boot info: abi_version %u, this kernel speaks %u\n",
                             b->abi_version, HV_ABI_VERSION);
                return false;
        }
        if (b->vp_count == 0 || b->vp_count > HV_MAX_VPS_PER_PARTITION) {
                guest_printf("vmms-guest: bad boot info: vp_count %u, expected 1..%u\n", b->vp_count,
                             HV_MAX_VPS_PER_PARTITION);
                return false;
        }
        if (b->maximum_bytes > GUEST_MAX_MEMORY_BYTES) {
                guest_printf("vmms-guest: bad boot info: maximum=%lu, this kernel handles at most %lu\n",
                             b->maximum_bytes, GUEST_MAX_MEMORY_BYTES);
                return false;
        }
        if (b->visible_bytes > b->maximum_bytes) {
                guest_printf("vmms-guest: bad boot info: visible=%lu above maximum=%lu\n", b->visible_bytes,
                             b->maximum_bytes);
                return false;
        }
        needed = guest_image_end() + guest_page_bitmap_bytes(b->maximum_bytes) + GUEST_MIN_FREE_BYTES;
        if (b->visible_bytes < needed) {
                guest_printf("vmms-guest: bad boot info: visible=%lu, this kernel needs at least %lu\n",
                             b->visible_bytes, needed);
                return false;
        }

        /* The command line is printed back in messages: keep it one printable line. */
        len = strnlen(b->cmdline, HV_BOOT_CMDLINE_MAX);
        guest_cmdline_truncated = len == HV_BOOT_CMDLINE_MAX;
        if (guest_cmdline_truncated)
                len--;
        for (size_t i = 0; i < len; i++) {
                char c = b->cmdline[i];

                guest_cmdline[i] = c < 0x20 || c > 0x7e ? ' ' : c;
        }
        guest_cmdline[len] = '\0';
        return true;
}

static __attribute__((noreturn)) void guest_run_workload(uint32_t vp)
{
        switch (guest_config.workload) {
        case GUEST_WORKLOAD_CPU:
                guest_workload_cpu_run(vp);
        case GUEST_WORKLOAD_MEMSOAK:
                guest_workload_memsoak_run(vp, &guest_config);
        case GUEST_WORKLOAD_CACHE:
                guest_workload_cache_run(vp, &guest_config);
        case GUEST_WORKLOAD_IDLE:
        default:
                guest_workload_idle_run(vp == 0, guest_config.idle_period_ms);
        }
}

static void guest_cpuid(uint32_t leaf, uint32_t ret[4])
{
        __asm__ volatile("cpuid"
                         : "=a"(ret[0]), "=b"(ret[1]), "=c"(ret[2]), "=d"(ret[3])
                         : "a"(leaf), "c"(0));
}

/* What the processor says it is (vendor, leaf 1's signature and ECX:EDX features), so
 * the host's tests can see which CPUID this guest reads: its model's, or the normalized
 * baseline of Set-VMProcessor -CompatibilityForMigrationEnabled. */
static void guest_print_cpu(void)
{
        uint32_t id[4], features[4];
        char vendor[13];

        guest_cpuid(0, id);
        guest_cpuid(1, features);
        memcpy(vendor, &id[1], 4);
        memcpy(vendor + 4, &id[3], 4);
        memcpy(vendor + 8, &id[2], 4);
        for (int i = 0; i < 12; i++)
                if (vendor[i] < 0x20 || vendor[i] > 0x7e)
                        vendor[i] = '?';
        vendor[12] = '\0';
        guest_printf("vmms-guest: cpu vendor=%s max-leaf=%x signature=%08x features=%08x:%08x\n", vendor,
                     id[0], features[0], features[2], features[3]);
}

static __attribute__((noreturn)) void guest_boot_vp0(const struct hv_boot_info *info)
{
        const struct hv_boot_info *b = &guest_boot_info;
        int r;

        /* The loader zeroes .bss, but nothing else may run on a kernel that trusts it. */
        memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
        guest_boot_time = guest_hv_reference_time();

        if (!guest_boot_info_load(info))
                guest_boot_fail();
        r = guest_page_init(guest_image_end(), b->visible_bytes, b->maximum_bytes);
        if (r < 0) {
                guest_printf("vmms-guest: page allocator setup failed: error %d\n", r);
                guest_boot_fail();
        }
        guest_cmdline_parse(guest_cmdline, &guest_config);

        guest_printf("vmms-guest: boot abi=%u vps=%u visible=%lu workload=%s\n", b->abi_version, b->vp_count,
                     b->visible_bytes, guest_workload_name(guest_config.workload));
        if (guest_cmdline_truncated)
                guest_printf("vmms-guest: command line not terminated, cut to %u bytes\n",
                             HV_BOOT_CMDLINE_MAX - 1);
        guest_cmdline_print_issues(&guest_config);
        guest_print_cpu();
        guest_printf("vmms-guest: memory visible=%lu maximum=%lu committed=%lu free=%lu\n",
                     guest_page_visible_bytes(), b->maximum_bytes, guest_page_committed_bytes(),
                     guest_page_free_bytes());

        /* The other VPs need nothing from VMBus (it is VP 0's): let them go first. */
        __atomic_store_n(&guest_boot_state, GUEST_BOOT_DONE, __ATOMIC_RELEASE);
        guest_vmbus_start();
        guest_run_workload(0);
}

static __attribute__((noreturn)) void guest_boot_secondary(uint32_t vp)
{
        uint64_t spins = 0;
        uint32_t state;

        /* Nothing in .bss may be touched before VP 0 has cleared it and said so. If VP 0
         * takes long (or died before saying), stop spinning and poll from IDLE. */
        while ((state = __atomic_load_n(&guest_boot_state, __ATOMIC_ACQUIRE)) == GUEST_BOOT_PENDING) {
                if (++spins < GUEST_BOOT_SPINS_BEFORE_IDLE)
                        guest_hv_long_spin_wait(spins);
                else
                        guest_hv_idle(guest_hv_reference_time() + GUEST_NS_PER_MS);
        }
        if (state != GUEST_BOOT_DONE)
                guest_hv_halt(GUEST_HALT_BAD_BOOT);
        if (vp >= guest_boot_info.vp_count) {
                guest_printf("vmms-guest: vp %u started but vp_count is %u\n", vp, guest_boot_info.vp_count);
                guest_hv_halt(GUEST_HALT_BAD_BOOT);
        }
        guest_run_workload(vp);
}

void guest_main(uint64_t vp, const struct hv_boot_info *info)
{
        /* The console finds a VP's line buffer from its stack, so both must be sane. */
        if (vp >= HV_MAX_VPS_PER_PARTITION || !guest_on_boot_stack(vp)) {
                guest_console_write_raw("vmms-guest: a VP started with a bad index or stack\n");
                guest_hv_halt(GUEST_HALT_BAD_BOOT);
        }
        if (vp == 0)
                guest_boot_vp0(info);
        guest_boot_secondary((uint32_t)vp);
}
