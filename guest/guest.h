/* Shared declarations of the vmms guest kernel: library, console, per-VP identity,
 * spinlocks, page allocator, boot command line and workloads. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv-abi.h"

/* There is no libc: the few errno values the kernel returns, negated. */
#define EIO 5
#define EAGAIN 11
#define ENOMEM 12
#define EBUSY 16
#define EEXIST 17
#define ENODEV 19
#define EINVAL 22
#define ENOSPC 28
#define ERANGE 34
#define ETIMEDOUT 110

/* uint64_t (unsigned long) constants, so they print with %lu like every other figure. */
#define GUEST_NS_PER_SEC UINT64_C(1000000000)
#define GUEST_NS_PER_MS UINT64_C(1000000)
#define GUEST_MIB UINT64_C(1048576)
#define GUEST_PAGE_SIZE ((uint64_t)HV_PAGE_SIZE)

/* Reasons passed to HV_CALL_HALT (the ABI leaves them to the guest). */
enum guest_halt_reason {
        GUEST_HALT_SHUTDOWN = 0,
        GUEST_HALT_BAD_BOOT = 1,
        GUEST_HALT_ASSERT = 2,
};

/* Linker script symbols. */
extern char __image_start[], __bss_start[], __bss_end[], _end[];

/* lib.c — what the compiler may call, plus string helpers. */
void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int guest_parse_u64(const char *s, size_t len, uint64_t *ret_value);

static inline uint64_t guest_stack_pointer(void)
{
        uint64_t rsp;

        __asm__("mov %%rsp, %0" : "=r"(rsp));
        return rsp;
}

/* The VP a piece of code runs on. Each VP stays on the boot stack the loader gave it,
 * at HV_BOOT_STACK_TOP(vp) (checked at entry), so the stack pointer names the VP. */
static inline uint32_t guest_vp_index(void)
{
        return (uint32_t)((guest_stack_pointer() - HV_BOOT_STACK_BASE) / HV_BOOT_STACK_SIZE);
}

/* console.c */
void guest_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void guest_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
void guest_console_write_raw(const char *s);
__attribute__((noreturn)) void guest_assert_failed(const char *expr, const char *file, int line);

#define GUEST_ASSERT(expr)                                                                                   \
        do {                                                                                                 \
                if (!(expr))                                                                                 \
                        guest_assert_failed(#expr, __FILE__, __LINE__);                                      \
        } while (0)

/* Test-and-test-and-set spinlock. Under the Unicorn engine, lock-prefixed
 * instructions are not atomic between VPs running on different host threads (see
 * guest_spin_lock), so no correctness-critical path may rely on a lock shared by VPs
 * there; on hardware-assisted engines it is an ordinary spinlock. */
struct guest_spinlock {
        volatile uint32_t locked;
        volatile uint32_t owner; /* VP index + 1 of the holder, for assertions */
};

void guest_spin_lock(struct guest_spinlock *lock);
void guest_spin_unlock(struct guest_spinlock *lock);

static inline bool guest_spin_held(const struct guest_spinlock *lock)
{
        return lock->locked && lock->owner == guest_vp_index() + 1;
}

/* page-alloc.c — see the design note at the top of that file. Addresses are GPAs. */
int guest_page_init(uint64_t first_free_gpa, uint64_t visible_bytes, uint64_t maximum_bytes);
int guest_page_alloc(uint64_t *ret_gpa);
int guest_page_alloc_contig(uint64_t count, uint64_t *ret_gpa);
int guest_page_free(uint64_t gpa);
int guest_page_free_contig(uint64_t gpa, uint64_t count);
uint64_t guest_page_take(uint64_t count, uint64_t *ret_pfns);
uint64_t guest_page_give_back(const uint64_t *pfns, uint64_t count);
int guest_page_add_range(uint64_t gpa, uint64_t bytes);
uint64_t guest_page_committed_bytes(void);
uint64_t guest_page_free_bytes(void);
uint64_t guest_page_visible_bytes(void);
uint64_t guest_page_taken_bytes(void);
uint64_t guest_page_bitmap_bytes(uint64_t maximum_bytes);

/* vmbus.c — the VMBus client, VP 0 only (on other VPs poll does nothing). start posts
 * INITIATE and waits briefly for the channels; poll, called after every Idle return and
 * between batches of work, reads the host's messages and packets and runs the drivers'
 * timers; next_deadline is the reference time poll next wants to run by (0: none). */
void guest_vmbus_start(void);
void guest_vmbus_poll(void);
uint64_t guest_vmbus_next_deadline(void);

/* dm.c — the low-memory notification (see the threshold in dm.c). Callbacks run on VP
 * 0 from guest_vmbus_poll and may allocate and free pages but must not wait on VMBus. */
typedef void guest_low_memory_fn(void *userdata, uint64_t free_bytes, uint64_t threshold_bytes);
int guest_dm_low_memory_subscribe(guest_low_memory_fn *fn, void *userdata);
uint64_t guest_dm_low_memory_threshold_bytes(void);
void guest_dm_check_low_memory(uint64_t now_ns);
/* Pages the open balloon request still waits for (0: none): pagers page out to free them
 * and leave that many free frames alone. */
uint64_t guest_dm_balloon_wanted_pages(void);

/* storage.c — the synthetic disk the guest pages to: page-sized slots, asynchronous
 * requests (at most GUEST_STORAGE_MAX_INFLIGHT) that wait_* completes. VP 0 only. */
#define GUEST_STORAGE_MAX_INFLIGHT 16
bool guest_storage_ready(void);
int guest_storage_reserve_slots(uint64_t count, uint64_t *ret_first);
int guest_storage_submit(bool write, uint64_t slot, uint64_t gpa, uint32_t *ret_handle);
int guest_storage_wait(uint32_t handle);

/* paging.c — a region of pages that may live on the synthetic disk while the
 * allocator has no free page; see the design note there. */
struct guest_pager {
        uint64_t *table;    /* one entry per page of the region */
        uint64_t *slot_map; /* one bit per slot of the region's share of the disk */
        uint64_t table_pages;
        uint64_t capacity;
        uint64_t n_pages;
        uint64_t first_slot;
        uint64_t slot_limit; /* slots at or past it failed to write: the disk ends there */
        uint64_t slot_hint;
        uint64_t bounce_gpa; /* a spare frame for paging in when no slot is free */
        uint64_t resident_pages;
        uint64_t paged_out_pages;
        uint64_t hand; /* the next entry the clock looks at */
        bool has_slots;
        bool paging_off;
};

int guest_pager_init(struct guest_pager *pager, uint64_t capacity);
int guest_pager_add(struct guest_pager *pager, uint64_t *ret_gpa);
int guest_pager_get(struct guest_pager *pager, uint64_t index, uint64_t *ret_gpa);
void guest_pager_release(struct guest_pager *pager);
uint64_t guest_paging_in_total(void);
uint64_t guest_paging_out_total(void);
uint64_t guest_paging_out_bytes(void);
/* Some pager has resident pages it could page out (a balloon may wait for them). */
bool guest_paging_can_reclaim(void);
/* What Dynamic Memory reports as committed: the allocator's committed bytes plus the
 * pages that live on the disk (they are demand the guest has, like a commit charge). */
uint64_t guest_memory_committed_bytes(void);

/* cmdline.c */
enum guest_workload {
        GUEST_WORKLOAD_IDLE,
        GUEST_WORKLOAD_CPU,
        GUEST_WORKLOAD_MEMSOAK,
        GUEST_WORKLOAD_CACHE,
};

#define GUEST_CMDLINE_MAX_ISSUES 8

struct guest_cmdline_issue {
        bool bad_value; /* else: unknown key */
        const char *key;
        size_t key_len;
};

#define GUEST_MEMSOAK_UNPACED UINT64_MAX
#define GUEST_MEMSOAK_ALL_HOT UINT64_MAX

struct guest_config {
        enum guest_workload workload;
        uint64_t memsoak_mb;
        uint64_t memsoak_step_mb;
        uint64_t memsoak_step_ms;
        uint64_t memsoak_hold_s;     /* then release everything; 0 = hold forever */
        uint64_t memsoak_rate_kb;    /* paced rewriting, KiB/s; GUEST_MEMSOAK_UNPACED: back-to-back passes */
        uint64_t memsoak_hot_mb;     /* MiB the passes rewrite; GUEST_MEMSOAK_ALL_HOT: every page */
        uint64_t memsoak_pause_ms;   /* between passes (default 100) */
        uint64_t memsoak_hot_grow_s; /* then every page is hot; 0 = never */
        uint64_t cache_mb;
        uint64_t idle_period_ms;  /* how often an idle VP wakes (idle_period_ms=, default 1000) */
        uint64_t ignore_shutdown; /* 1: never answer the host's shutdown request (a hung guest) */
        /* Problems found while parsing, printed after the banner. */
        struct guest_cmdline_issue issues[GUEST_CMDLINE_MAX_ISSUES];
        unsigned n_issues;
        unsigned n_issues_dropped;
};

void guest_cmdline_parse(const char *cmdline, struct guest_config *ret_config);
void guest_cmdline_print_issues(const struct guest_config *config);
const char *guest_workload_name(enum guest_workload workload);

/* workload-*.c: each runs forever on the calling VP. */
void guest_sleep_ns(uint64_t ns);
__attribute__((noreturn)) void guest_workload_idle_run(bool report, uint64_t period_ms);
__attribute__((noreturn)) void guest_workload_cpu_run(uint32_t vp);
__attribute__((noreturn)) void guest_workload_memsoak_run(uint32_t vp, const struct guest_config *config);
__attribute__((noreturn)) void guest_workload_cache_run(uint32_t vp, const struct guest_config *config);

/* entry.c: called by boot.S on every VP; the reference time of VP 0's boot; host
 * requests, checked on every wake-up and between batches of work (may not return). */
__attribute__((noreturn)) void guest_main(uint64_t vp, const struct hv_boot_info *info);
uint64_t guest_boot_time_ns(void);
void guest_check_host_request(void);
