/* The Unicorn engine: one uc_engine per VP over the partition's shared RAM mapping.
 * Facts it relies on are in shared/notes/unicorn-facts.md: preemption only from a
 * block hook polling vp->preempt, guest RAM mapped as one region, hypercalls through
 * an `out` hook whose block ends right after the `out`.
 *
 * Preemption (issue 14; bench/unicorn_preemption.py measures each claim below on the
 * engine alone, bench/guest_speed_vs_qemu.py on hvd).
 *
 * Why a stop from another thread replays stores, read in Unicorn 2.1.1's source:
 * uc_emu_stop calls cpu_exit, which makes neg.icount_decr negative. Translated code
 * tests that word at the start of every block (gen_tb_start) and, a Unicorn addition
 * (check_exit_request in tcg/tcg-op.c), after every guest load and store, because an
 * unmapped or protected access only calls cpu_exit and returns (accel/tcg/cputlb.c).
 * Either test leaves through TB_EXIT_REQUESTED, and cpu_tb_exec then puts RIP back at
 * the block's start (uc->quit_request, which skips that, is set only by a RIP write
 * from a hook, and eip is not kept up to date inside a block anyway). So a stop from
 * outside lands after the first access of a block as often as before it and
 * everything before that access runs twice: 50 M paired increments stopped every
 * 1 ms from another thread ended 169 and 45 over (replayed stores; the block's
 * register updates replay too). The timeout argument is such a stop from a thread.
 *
 * The only safe point the public API offers is a callback the engine makes before
 * any instruction of a block runs: the block hook, emitted ahead of gen_tb_start's
 * test, so a uc_emu_stop made inside it leaves with nothing done. The alternatives:
 * - A hook's range is tested when a block is translated (HOOK_EXISTS_BOUNDED in
 *   translator.c): a block outside it carries no call at all (measured: the same time
 *   as no hook), but a loop outside it then never stops.
 * - Exits (UC_CTL_UC_USE_EXITS) are tested at translation too and compiled in as a
 *   hlt; a timer does not know where the guest will be, and moving an exit means
 *   dropping translations (UC_CTL_TB_REMOVE_CACHE). UC_CTL_TB_REQUEST_CACHE only
 *   translates ahead. UC_HOOK_EDGE_GENERATED fires in tb_find only when a new block is
 *   translated, never while translated blocks run chained, so hooking just loop heads
 *   cannot be built from it; and with a second block hook Unicorn drops the direct
 *   call for helper_uc_tracecode walking the hook list.
 * - Count mode adds a per-instruction hook (x22-35).
 * So one block hook stays. With exactly one, Unicorn 2.1 compiles a direct call to it
 * into each block (uc_add_inline_hook); that call, with an empty body, costs fib +14 %,
 * fill +22 %, copy +18 % of thread CPU over no hook. The body matters as much: the hook
 * that counted blocks to read the clock every 1,024 (a read-modify-write in memory every
 * block, a dependency chain from block to block) cost fib 25.7 ms, fill 11.7, copy 15.1,
 * cpu-burn 12.8 where one load of the flag costs 22.4, 9.6, 13.8, 11.7 (no hook 19.6,
 * 7.3, 11.5, 11.0; minima of 11 interleaved rounds). The clock read was there because
 * the scheduler's timer thread, on a busy host, woke late to set the flag; the slice end
 * now comes from a POSIX timer that signals the LP thread itself (slice_timer_arm), so
 * the kernel interrupts the running thread at the deadline whoever else wants the CPU,
 * and the hook is one load. Measured on 50 M paired increments: no replay with either
 * hook; mean slice for a 1 ms request 1.49 ms with the signal, 1.76 ms with the clock
 * poll, 10 ms: 11.5 and 11.5 ms (a host with load 9 on 2 cores).
 * The per-access test itself costs memory-bound code a load and a branch per access
 * that QEMU does not pay; no public setting removes it (uc->no_exit_request is
 * internal, used for ARM IT blocks).
 *
 * What only a change inside Unicorn can give, shown by an opt-in build
 * (bench/unicorn-patched, bench/unicorn-stop-at-block.patch, 5 files, ~60 lines): a
 * uc_emu_stop_at_block that sets only the sign bit of icount_decr, with the per-access
 * test changed to leave only on cpu_exit's all-ones value, so the stop is taken at the
 * next block start. With it the slice signal stops the engine and there is no block
 * hook. 50 M paired increments stopped by it from another thread every 1 ms: no
 * replay (uc_emu_stop, unchanged, still replays). Unicorn x86 alone builds here in
 * about 5 minutes. bench/guest_speed_vs_qemu.py, 4 rounds, hvd / patched hvd / QEMU
 * to native: cpu-burn 3.65 / 1.28 / 3.14, copy 8.6 / 5.5 / 9.3, fill 7.5 / 6.4 / 7.8,
 * fib 13.6 / 11.0 / 15.4, chase 1.18 / 1.10 / 2.15. The scheduler's and hypervisor
 * tests pass on it, but a preempt flag set for another reason than the slice end
 * waits there for the next hypercall or slice end (see the slice timer below).
 *
 * Mapping code and data apart: RAM above the kernel mapped read-write only (no code
 * check on a write-TLB refill) made one store per page with a 256-entry TLB 6 %
 * faster (24.0 -> 22.6 ms) and fill and copy no faster (scratch harness on the engine
 * alone); not worth it while the guest, not hvd, decides where its code lives.
 *
 * TLB and code buffer: see UNICORN_TLB_FLUSH_RUN_NS and UNICORN_TCG_BUFFER_BYTES.
 *
 * The processor: the model is set before the engine initializes (uc_ctl_set_cpu_model
 * fails once it has), and a CPUID hook answers for partitions that asked for the
 * normalized processor (hv-cpuid.c has what and why); returning 1 from it skips the
 * model's own CPUID. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <unicorn/unicorn.h>

#include "hv-abi.h"
#include "hv-clock.h"
#include "hv-cpuid.h"
#include "hv-hypercall.h"
#include "hv-partition.h"
#include "hv.h"

#define UNICORN_UNTIL_NEVER UINT64_MAX /* a non-canonical address no guest reaches */
/* Unicorn 2.1 reserves 1 GiB of address space per engine for translated code and
 * madvises it MADV_HUGEPAGE; a mapping of 2 MiB or more then comes PMD-aligned and its
 * first translation faults in a whole 2 MiB huge page. That page was most of the
 * ~3 MiB each running VP cost hvd (measured: 2,842 KiB per engine with a 32 MiB
 * buffer, 798 KiB with any buffer under 2 MiB). But a full buffer is not just a
 * retranslation: Unicorn 2.1.1 flushes it mid-execution and then patches a chained
 * jump into a block the flush freed (SIGSEGV in tb_set_jmp_target_x86_64, writing to
 * address 0). With a 2 MiB buffer the seed case's memsoak guest filled it within
 * seconds and hvd crashed in 3 of 3 ASan runs; with 32 MiB in none of 3 (and its
 * hot code never fills it). So the buffer stays large enough never to fill, and the
 * huge page is refused instead: the engine turns transparent huge pages off for hvd
 * (PR_SET_THP_DISABLE, process-wide, once). With THP in its usual "madvise" mode only
 * regions that ask for huge pages are affected, which in hvd are the code buffers;
 * guest RAM is a memfd, whose huge pages the shmem setting governs (normally never),
 * and loses them too where that is on. Measured: hvd with 10 idle VMs running went
 * from 3,226 KiB per VM (20,480 KiB AnonHugePages) to 1,410 KiB (none), and back to
 * 9.8 MB after they stopped either way; the speed kernels' thread CPU time did not
 * move (bench/unicorn_preemption.py under prctl: fib 23.3 -> 22.8 ms, fill 10.0 ->
 * 9.2, copy 14.4 -> 14.2, cpu-burn 11.8 -> 11.9, best of three runs): their hot
 * translated code is a few pages. */
#define UNICORN_TCG_BUFFER_BYTES (32u << 20)
/* Unicorn's software TLB (QEMU's) starts at 256 entries (1 MiB of reach) and resizes
 * only when it is flushed: doubling when more than 70 % was used since the last flush,
 * halving after 100 ms under 30 %. With paging off the guest never flushes it, so it
 * would stay at 256 entries forever. The engine flushes it when the VP has run this
 * long since the last flush; measured (bench/guest_speed_vs_qemu.py), flushing every
 * 10 ms took one store per page over 64 MiB from 15.1x native to 1.15x and a copy whose
 * destination aliases its source in a 256-entry TLB from 72x to 4.7x, with no kernel
 * measurably slower. Bounded: at most 100 flushes a second per VP. */
#define UNICORN_TLB_FLUSH_RUN_NS (10u * 1000 * 1000)

struct HvEngineVp {
        HvVp *vp;
        uc_engine *uc;
        bool preempted; /* it stopped because vp->preempt was set */
        uint64_t run_ns_since_tlb_flush;
        uint64_t mapped_bytes;
        bool mapped_in_pieces; /* a hot-add was mapped mid-run as a second region */
        HvVpExit *exit;        /* of the run in progress */
        uc_hook hook_block, hook_out, hook_in, hook_intr, hook_invalid, hook_unmapped, hook_cpuid;
        /* Dirty tracking (vp_dirty_log): the write hook and where it marks. */
        uc_hook hook_write;
        uint64_t *dirty_bitmap;
        uint64_t dirty_pages;
};

static void exit_halt(HvVpExit *exit, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void exit_halt(HvVpExit *exit, const char *fmt, ...)
{
        va_list ap;

        exit->kind = HV_EXIT_HALT;
        va_start(ap, fmt);
        vsnprintf(exit->reason, sizeof(exit->reason), fmt, ap);
        va_end(ap);
}

static uint64_t reg_read(uc_engine *uc, int reg)
{
        uint64_t value = 0;

        uc_reg_read(uc, reg, &value);
        return value;
}

/* Called at the start of every translated block, so it is the hottest code hvd has:
 * one load and a not-taken branch (see the header for what a heavier body cost). */
static void on_block(uc_engine *uc, uint64_t address, uint32_t size, void *userdata)
{
        HvEngineVp *e = userdata;

        (void)address;
        (void)size;
        if (G_UNLIKELY(atomic_load_explicit(&e->vp->preempt, memory_order_relaxed))) {
                e->preempted = true;
                uc_emu_stop(uc);
        }
}

/* ---- The slice timer: a POSIX timer per LP thread that signals that thread ----
 * At its slice end the VP's own thread is interrupted by the kernel, whose handler
 * sets the running VP's preempt flag; the block hook then stops at the next block.
 * A signal needs nothing else to be scheduled (the scheduler's timer thread, which
 * also sets the flag, can wake late on a busy host), so the hook need not read the
 * clock itself. The handler touches only this thread's running engine.
 *
 * Built against a Unicorn patched with bench/unicorn-stop-at-block.patch (an opt-in
 * bench build, see bench/unicorn-patched), the handler also stops the engine with
 * uc_emu_stop_at_block, which takes effect at the next block start and never in
 * the middle of one, and there is no block hook at all. There a preempt flag set by
 * the scheduler for any other reason (an I/O-wake boost, a pause) is seen only at
 * the next hypercall or slice end. */
typedef struct UnicornSliceTimer {
        timer_t id;
        uint64_t armed_ns; /* absolute CLOCK_MONOTONIC end it is set for */
} UnicornSliceTimer;

static __thread HvEngineVp *slice_engine __attribute__((tls_model("initial-exec")));

static void slice_timer_free(gpointer data)
{
        UnicornSliceTimer *t = data;

        timer_delete(t->id);
        g_free(t);
}

static GPrivate slice_timer_key = G_PRIVATE_INIT(slice_timer_free);

static void on_slice_signal(int signo)
{
        HvEngineVp *e = slice_engine;

        (void)signo;
        if (!e)
                return;
        atomic_store_explicit(&e->vp->preempt, 1, memory_order_relaxed);
#ifdef UC_HAS_STOP_AT_BLOCK
        uc_emu_stop_at_block(e->uc);
#endif
}

static int slice_signal(void)
{
        return SIGRTMIN + 2;
}

static gpointer slice_signal_install(gpointer data)
{
        struct sigaction sa = {.sa_handler = on_slice_signal, .sa_flags = SA_RESTART};

        (void)data;
        sigemptyset(&sa.sa_mask);
        return GINT_TO_POINTER(sigaction(slice_signal(), &sa, NULL) == 0 ? 1 : -errno);
}

/* Arms this thread's timer for end_ns (creating it on the thread's first slice). */
static int slice_timer_arm(uint64_t end_ns)
{
        static GOnce installed = G_ONCE_INIT;
        UnicornSliceTimer *t = g_private_get(&slice_timer_key);
        struct itimerspec when = {.it_value = {.tv_sec = (time_t)(end_ns / 1000000000u),
                                               .tv_nsec = (long)(end_ns % 1000000000u)}};
        int r = GPOINTER_TO_INT(g_once(&installed, slice_signal_install, NULL));

        if (r < 0)
                return r;
        if (!t) {
                struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = slice_signal()};

                sev._sigev_un._tid = gettid();
                t = g_new0(UnicornSliceTimer, 1);
                if (timer_create(CLOCK_MONOTONIC, &sev, &t->id) < 0) {
                        r = -errno;
                        g_free(t);
                        return r;
                }
                g_private_set(&slice_timer_key, t);
        }
        if (t->armed_ns == end_ns)
                return 0;
        if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0)
                when.it_value.tv_nsec = 1; /* zero would disarm; a past time fires at once */
        if (timer_settime(t->id, TIMER_ABSTIME, &when, NULL) < 0)
                return -errno;
        t->armed_ns = end_ns;
        return 0;
}

static void on_out(uc_engine *uc, uint32_t port, int size, uint32_t value, void *userdata)
{
        HvEngineVp *e = userdata;
        uint64_t t0 = hv_clock_monotonic_ns();
        int64_t result;

        if (port != HV_HYPERCALL_PORT || size != 4) {
                /* No device lives on other ports; the write goes nowhere. */
                atomic_fetch_add(&e->vp->invalid_hypercalls, 1);
                return;
        }
        result = hv_hypercall_dispatch(e->vp, value, reg_read(uc, UC_X86_REG_RDI),
                                       reg_read(uc, UC_X86_REG_RSI), reg_read(uc, UC_X86_REG_R8), e->exit);
        uc_reg_write(uc, UC_X86_REG_RAX, &result);
        if (e->exit->kind != HV_EXIT_NONE)
                uc_emu_stop(uc);
        e->exit->hypercall_ns += hv_clock_monotonic_ns() - t0;
}

static uint32_t on_in(uc_engine *uc, uint32_t port, int size, void *userdata)
{
        (void)uc;
        (void)port;
        (void)size;
        (void)userdata;
        return UINT32_MAX; /* an empty bus */
}

/* Only a partition created with cpuid_normalized is answered here; 0 lets the model
 * answer. */
static int on_cpuid(uc_engine *uc, void *userdata)
{
        HvEngineVp *e = userdata;
        HvPartition *p = e->vp->partition;
        HvCpuidLeaf r;
        uint64_t eax, ebx, ecx, edx;

        if (!p->cpuid_normalized)
                return 0;
        hv_cpuid_normalized((uint32_t)reg_read(uc, UC_X86_REG_RAX), (uint32_t)reg_read(uc, UC_X86_REG_RCX),
                            &r);
        eax = r.eax;
        ebx = r.ebx;
        ecx = r.ecx;
        edx = r.edx;
        uc_reg_write(uc, UC_X86_REG_RAX, &eax);
        uc_reg_write(uc, UC_X86_REG_RBX, &ebx);
        uc_reg_write(uc, UC_X86_REG_RCX, &ecx);
        uc_reg_write(uc, UC_X86_REG_RDX, &edx);
        atomic_fetch_add_explicit(&p->cpuid_normalized_answers, 1, memory_order_relaxed);
        return 1;
}

static void on_interrupt(uc_engine *uc, uint32_t intno, void *userdata)
{
        HvEngineVp *e = userdata;

        exit_halt(e->exit, "guest exception %u at rip 0x%" G_GINT64_MODIFIER "x", intno,
                  reg_read(uc, UC_X86_REG_RIP));
        uc_emu_stop(uc);
}

static bool on_invalid(uc_engine *uc, void *userdata)
{
        HvEngineVp *e = userdata;

        exit_halt(e->exit, "invalid instruction at rip 0x%" G_GINT64_MODIFIER "x",
                  reg_read(uc, UC_X86_REG_RIP));
        return false;
}

/* Between runs: [0, visible) as one region (one region keeps guest code fast). */
static int map_visible(HvEngineVp *e, uint64_t visible)
{
        HvPartition *p = e->vp->partition;

        if (e->mapped_bytes == visible && !e->mapped_in_pieces)
                return 0;
        if (e->mapped_bytes && uc_mem_unmap(e->uc, 0, e->mapped_bytes) != UC_ERR_OK)
                return -EIO;
        e->mapped_bytes = 0;
        e->mapped_in_pieces = false;
        if (uc_mem_map_ptr(e->uc, 0, visible, UC_PROT_ALL, p->ram) != UC_ERR_OK)
                return -ENOMEM;
        e->mapped_bytes = visible;
        return 0;
}

/* RAM hot-added while the VP runs is announced to the guest through a ring it may
 * read in the same slice, so its first touch can come before the next dispatch. The
 * new range is mapped here as a second region, and the access retried; the next
 * dispatch maps it back into one. Anything else past visible RAM is a guest fault. */
static bool on_unmapped(uc_engine *uc, uc_mem_type type, uint64_t address, int size, int64_t value,
                        void *userdata)
{
        HvEngineVp *e = userdata;
        HvPartition *p = e->vp->partition;
        uint64_t visible = atomic_load_explicit(&p->visible_bytes, memory_order_acquire);

        (void)type;
        (void)size;
        (void)value;
        if (address >= visible || e->mapped_bytes >= visible)
                return false;
        if (uc_mem_map_ptr(uc, e->mapped_bytes, visible - e->mapped_bytes, UC_PROT_ALL,
                           p->ram + e->mapped_bytes) != UC_ERR_OK)
                return false;
        e->mapped_bytes = visible;
        e->mapped_in_pieces = true;
        return true;
}

/* Called before the store lands (hv-dirty.h says why that matters). */
static void on_write(uc_engine *uc, uc_mem_type type, uint64_t address, int size, int64_t value,
                     void *userdata)
{
        HvEngineVp *e = userdata;

        (void)uc;
        (void)type;
        (void)value;
        hv_dirty_mark(e->dirty_bitmap, e->dirty_pages, address, (uint64_t)MAX(size, 1));
}

/* Unicorn calls memory hooks from its store helpers, so code translated before the hook
 * came is tracked too (tests/unit/test-hv-dirty.c runs such code, a TLB miss and a hit).
 * The TLB is flushed when the hook comes or goes, between runs. The translation cache is
 * not: flushing it cost the memsoak guest about a second of retranslation at 100 % of
 * an LP each time tracking began (measured), for nothing. */
static int unicorn_vp_dirty_log(HvEngineVp *e, uint64_t *bitmap, uint64_t pages)
{
        e->dirty_bitmap = bitmap;
        e->dirty_pages = bitmap ? pages : 0;
        if (bitmap && !e->hook_write) {
                if (uc_hook_add(e->uc, &e->hook_write, UC_HOOK_MEM_WRITE, (void *)on_write, e, 1, 0) !=
                    UC_ERR_OK) {
                        e->hook_write = 0;
                        return -EIO;
                }
        } else if (!bitmap && e->hook_write) {
                uc_hook_del(e->uc, e->hook_write);
                e->hook_write = 0;
        } else
                return 0;
        uc_ctl_flush_tlb(e->uc);
        return 0;
}

static void unicorn_vp_free(HvEngineVp *e)
{
        if (!e)
                return;
        if (e->uc)
                uc_close(e->uc);
        g_free(e);
        /* uc_close frees an engine's heap in pieces glibc keeps in its arenas:
         * without this, 50 idle VMs started and stopped left hvd at 27 MB instead of
         * 8.6 MB; with it (and the small TCG buffer), 10.3 MB. */
        malloc_trim(0);
}

static bool add_block_hook(HvEngineVp *e)
{
#ifdef UC_HAS_STOP_AT_BLOCK
        (void)e;
        (void)on_block;
        return true; /* the slice signal stops the engine itself */
#else
        return uc_hook_add(e->uc, &e->hook_block, UC_HOOK_BLOCK, (void *)on_block, e, 1, 0) == UC_ERR_OK;
#endif
}

static gpointer refuse_huge_code_pages(gpointer data)
{
        (void)data;
        (void)prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0); /* on failure: 2 MiB more per VP */
        return NULL;
}

static int unicorn_vp_create(HvVp *vp, HvEngineVp **ret_engine)
{
        static GOnce thp_once = G_ONCE_INIT;
        HvEngineVp *e = g_new0(HvEngineVp, 1);
        uc_err err;
        int r;

        g_once(&thp_once, refuse_huge_code_pages, NULL);
        e->vp = vp;
        err = uc_open(UC_ARCH_X86, UC_MODE_64, &e->uc);
        if (err != UC_ERR_OK) {
                g_free(e);
                return -ENOMEM;
        }
        if (uc_ctl_set_cpu_model(e->uc, vp->partition->hv->cpu_model) != UC_ERR_OK) {
                r = -EINVAL;
                goto fail;
        }
        /* Unicorn >= 2.1 only; an older one keeps its default, which is no error. */
#ifdef uc_ctl_set_tcg_buffer_size
        (void)uc_ctl_set_tcg_buffer_size(e->uc, UNICORN_TCG_BUFFER_BYTES);
#endif
        r = map_visible(e, atomic_load(&vp->partition->visible_bytes));
        if (r < 0)
                goto fail;
        if (!add_block_hook(e) ||
            uc_hook_add(e->uc, &e->hook_out, UC_HOOK_INSN, (void *)on_out, e, 1, 0, UC_X86_INS_OUT) !=
                    UC_ERR_OK ||
            uc_hook_add(e->uc, &e->hook_in, UC_HOOK_INSN, (void *)on_in, e, 1, 0, UC_X86_INS_IN) !=
                    UC_ERR_OK ||
            uc_hook_add(e->uc, &e->hook_intr, UC_HOOK_INTR, (void *)on_interrupt, e, 1, 0) != UC_ERR_OK ||
            uc_hook_add(e->uc, &e->hook_invalid, UC_HOOK_INSN_INVALID, (void *)on_invalid, e, 1, 0) !=
                    UC_ERR_OK ||
            uc_hook_add(e->uc, &e->hook_unmapped, UC_HOOK_MEM_UNMAPPED, (void *)on_unmapped, e, 1, 0) !=
                    UC_ERR_OK ||
            uc_hook_add(e->uc, &e->hook_cpuid, UC_HOOK_INSN, (void *)on_cpuid, e, 1, 0, UC_X86_INS_CPUID) !=
                    UC_ERR_OK) {
                r = -EIO;
                goto fail;
        }
        *ret_engine = e;
        return 0;
fail:
        unicorn_vp_free(e);
        return r;
}

static int unicorn_vp_set_regs(HvEngineVp *e, const HvVpRegs *regs)
{
        if (uc_reg_write(e->uc, UC_X86_REG_RIP, &regs->rip) != UC_ERR_OK ||
            uc_reg_write(e->uc, UC_X86_REG_RSP, &regs->rsp) != UC_ERR_OK ||
            uc_reg_write(e->uc, UC_X86_REG_RDI, &regs->rdi) != UC_ERR_OK ||
            uc_reg_write(e->uc, UC_X86_REG_RSI, &regs->rsi) != UC_ERR_OK)
                return -EIO;
        return 0;
}

static bool stopped_after_hlt(HvEngineVp *e, uint64_t rip)
{
        uint8_t byte = 0;

        return rip > 0 && uc_mem_read(e->uc, rip - 1, &byte, 1) == UC_ERR_OK && byte == 0xf4;
}

static int unicorn_vp_run(HvEngineVp *e, HvVpExit *exit)
{
        HvVp *vp = e->vp;
        uint64_t rip, t0;
        uc_err err;
        int r;

        r = map_visible(e, atomic_load(&vp->partition->visible_bytes));
        if (r < 0) {
                exit_halt(exit, "cannot map guest RAM into the engine");
                return r;
        }
        if (vp->resume_rax_valid) {
                uc_reg_write(e->uc, UC_X86_REG_RAX, &vp->resume_rax);
                vp->resume_rax_valid = false;
        }
        if (e->run_ns_since_tlb_flush >= UNICORN_TLB_FLUSH_RUN_NS) {
                uc_ctl_flush_tlb(e->uc); /* lets the TLB resize to the working set */
                e->run_ns_since_tlb_flush = 0;
        }
        slice_engine = e; /* before arming: a slice already over signals at once */
        r = slice_timer_arm(atomic_load_explicit(&vp->slice_end_ns, memory_order_relaxed));
        if (r < 0) {
                slice_engine = NULL;
                exit_halt(exit, "cannot arm the slice timer: %s", g_strerror(-r));
                return r;
        }
        e->exit = exit;
        e->preempted = false;
        rip = reg_read(e->uc, UC_X86_REG_RIP);
        t0 = hv_clock_monotonic_ns();
        err = uc_emu_start(e->uc, rip, UNICORN_UNTIL_NEVER, 0, 0);
        e->run_ns_since_tlb_flush += hv_clock_monotonic_ns() - t0;
        slice_engine = NULL;
        e->exit = NULL;
        if (err != UC_ERR_OK) {
                if (exit->kind != HV_EXIT_HALT)
                        exit_halt(exit, "guest fault: %s at rip 0x%" G_GINT64_MODIFIER "x", uc_strerror(err),
                                  reg_read(e->uc, UC_X86_REG_RIP));
                return 0;
        }
#ifdef UC_HAS_STOP_AT_BLOCK
        e->preempted = atomic_load(&vp->preempt) && !stopped_after_hlt(e, reg_read(e->uc, UC_X86_REG_RIP));
#endif
        if (exit->kind == HV_EXIT_NONE && e->preempted) {
                exit->kind = HV_EXIT_PREEMPTED;
                return 0;
        }
        if (exit->kind == HV_EXIT_NONE && stopped_after_hlt(e, reg_read(e->uc, UC_X86_REG_RIP))) {
                /* hlt is not trapped: treat it as Idle until an event, as hardware would. */
                exit->kind = HV_EXIT_IDLE;
                exit->idle_deadline_ns = 0;
        }
        return 0;
}

/* ---- Save and restore: the state register by register ----
 * Not uc_context_save: its blob is the engine version's CPU structure (5,552 bytes in
 * 2.1.1, host pointers included), so a saved file or a peer could neither be checked
 * nor move between Unicorn versions. Measured: reading every register below costs
 * about 1 us per VP, uc_context_save + restore 0.35 us; both are nothing next to a
 * save's memory. Unicorn 2.1.1 has no CR8 (UC_ERR_ARG) and writes CS/SS/DS/ES as bare
 * selectors, FS/GS through a descriptor load. */
static const int unicorn_gprs[HV_VP_GPRS] = {
        UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX, UC_X86_REG_RSP, UC_X86_REG_RBP,
        UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
        UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
};
static const int unicorn_selectors[HV_VP_SELECTORS] = {
        UC_X86_REG_ES, UC_X86_REG_CS, UC_X86_REG_SS, UC_X86_REG_DS, UC_X86_REG_FS, UC_X86_REG_GS,
};
static const int unicorn_crs[HV_VP_CRS] = {UC_X86_REG_CR0, UC_X86_REG_CR2, UC_X86_REG_CR3, UC_X86_REG_CR4};
static const int unicorn_drs[HV_VP_DRS] = {UC_X86_REG_DR0, UC_X86_REG_DR1, UC_X86_REG_DR2,
                                           UC_X86_REG_DR3, UC_X86_REG_DR6, UC_X86_REG_DR7};
/* STAR LSTAR CSTAR SFMASK SYSENTER_CS/ESP/EIP PAT, in hv.proto's order. */
static const uint32_t unicorn_msrs[HV_VP_MSRS] = {0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,
                                                  0x174,      0x175,      0x176,      0x277};
#define UNICORN_MSR_EFER 0xc0000080u
#define UNICORN_MSR_KERNEL_GS_BASE 0xc0000102u

static bool table_read(uc_engine *uc, int reg, HvVpSegmentTable *ret)
{
        uc_x86_mmr mmr = {0};

        if (uc_reg_read(uc, reg, &mmr) != UC_ERR_OK)
                return false;
        *ret = (HvVpSegmentTable){
                .base = mmr.base, .limit = mmr.limit, .selector = mmr.selector, .flags = mmr.flags};
        return true;
}

static bool table_write(uc_engine *uc, int reg, const HvVpSegmentTable *table)
{
        uc_x86_mmr mmr = {.selector = (uint16_t)table->selector,
                          .base = table->base,
                          .limit = table->limit,
                          .flags = table->flags};

        return uc_reg_write(uc, reg, &mmr) == UC_ERR_OK;
}

static bool msr_read(uc_engine *uc, uint32_t index, uint64_t *ret)
{
        uc_x86_msr msr = {.rid = index};

        if (uc_reg_read(uc, UC_X86_REG_MSR, &msr) != UC_ERR_OK)
                return false;
        *ret = msr.value;
        return true;
}

static bool msr_write(uc_engine *uc, uint32_t index, uint64_t value)
{
        uc_x86_msr msr = {.rid = index, .value = value};

        return uc_reg_write(uc, UC_X86_REG_MSR, &msr) == UC_ERR_OK;
}

static int unicorn_vp_get_state(HvEngineVp *e, HvVpCpuState *ret)
{
        uc_engine *uc = e->uc;
        HvVpCpuState st = {0};
        bool ok = true;

        for (size_t i = 0; i < HV_VP_GPRS; i++)
                ok = ok && uc_reg_read(uc, unicorn_gprs[i], &st.gpr[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_SELECTORS; i++)
                ok = ok && uc_reg_read(uc, unicorn_selectors[i], &st.selectors[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_CRS; i++)
                ok = ok && uc_reg_read(uc, unicorn_crs[i], &st.cr[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_DRS; i++)
                ok = ok && uc_reg_read(uc, unicorn_drs[i], &st.dr[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_MSRS; i++)
                ok = ok && msr_read(uc, unicorn_msrs[i], &st.msrs[i]);
        for (int i = 0; i < 8; i++)
                ok = ok && uc_reg_read(uc, UC_X86_REG_FP0 + i, st.fpu_registers[i]) == UC_ERR_OK;
        for (int i = 0; i < 16; i++)
                ok = ok && uc_reg_read(uc, (i < 8 ? UC_X86_REG_XMM0 + i : UC_X86_REG_XMM8 + i - 8),
                                       st.xmm[i]) == UC_ERR_OK;
        ok = ok && uc_reg_read(uc, UC_X86_REG_RIP, &st.rip) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_RFLAGS, &st.rflags) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FS_BASE, &st.fs_base) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_GS_BASE, &st.gs_base) == UC_ERR_OK &&
             msr_read(uc, UNICORN_MSR_KERNEL_GS_BASE, &st.kernel_gs_base) &&
             msr_read(uc, UNICORN_MSR_EFER, &st.efer) && table_read(uc, UC_X86_REG_GDTR, &st.gdtr) &&
             table_read(uc, UC_X86_REG_IDTR, &st.idtr) && table_read(uc, UC_X86_REG_LDTR, &st.ldtr) &&
             table_read(uc, UC_X86_REG_TR, &st.tr) &&
             uc_reg_read(uc, UC_X86_REG_FPCW, &st.fpu_control) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FPSW, &st.fpu_status) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FPTAG, &st.fpu_tag) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FOP, &st.fpu_opcode) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FIP, &st.fpu_ip) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FDP, &st.fpu_dp) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FCS, &st.fpu_cs) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_FDS, &st.fpu_ds) == UC_ERR_OK &&
             uc_reg_read(uc, UC_X86_REG_MXCSR, &st.mxcsr) == UC_ERR_OK;
        if (!ok)
                return -EIO;
        *ret = st;
        return 0;
}

/* Control state first (EFER, CR0, CR4 decide how the rest is read), RIP last. */
static int unicorn_vp_set_state(HvEngineVp *e, const HvVpCpuState *st)
{
        uc_engine *uc = e->uc;
        bool ok = msr_write(uc, UNICORN_MSR_EFER, st->efer);

        for (size_t i = 0; i < HV_VP_CRS; i++)
                ok = ok && uc_reg_write(uc, unicorn_crs[i], &st->cr[i]) == UC_ERR_OK;
        ok = ok && table_write(uc, UC_X86_REG_GDTR, &st->gdtr) &&
             table_write(uc, UC_X86_REG_IDTR, &st->idtr) && table_write(uc, UC_X86_REG_LDTR, &st->ldtr) &&
             table_write(uc, UC_X86_REG_TR, &st->tr);
        for (size_t i = 0; i < HV_VP_SELECTORS; i++)
                ok = ok && uc_reg_write(uc, unicorn_selectors[i], &st->selectors[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_GPRS; i++)
                ok = ok && uc_reg_write(uc, unicorn_gprs[i], &st->gpr[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_DRS; i++)
                ok = ok && uc_reg_write(uc, unicorn_drs[i], &st->dr[i]) == UC_ERR_OK;
        for (size_t i = 0; i < HV_VP_MSRS; i++)
                ok = ok && msr_write(uc, unicorn_msrs[i], st->msrs[i]);
        for (int i = 0; i < 8; i++)
                ok = ok && uc_reg_write(uc, UC_X86_REG_FP0 + i, st->fpu_registers[i]) == UC_ERR_OK;
        for (int i = 0; i < 16; i++)
                ok = ok && uc_reg_write(uc, (i < 8 ? UC_X86_REG_XMM0 + i : UC_X86_REG_XMM8 + i - 8),
                                        st->xmm[i]) == UC_ERR_OK;
        ok = ok && uc_reg_write(uc, UC_X86_REG_FS_BASE, &st->fs_base) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_GS_BASE, &st->gs_base) == UC_ERR_OK &&
             msr_write(uc, UNICORN_MSR_KERNEL_GS_BASE, st->kernel_gs_base) &&
             uc_reg_write(uc, UC_X86_REG_FPCW, &st->fpu_control) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FPSW, &st->fpu_status) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FPTAG, &st->fpu_tag) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FOP, &st->fpu_opcode) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FIP, &st->fpu_ip) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FDP, &st->fpu_dp) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FCS, &st->fpu_cs) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_FDS, &st->fpu_ds) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_MXCSR, &st->mxcsr) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_RFLAGS, &st->rflags) == UC_ERR_OK &&
             uc_reg_write(uc, UC_X86_REG_RIP, &st->rip) == UC_ERR_OK;
        if (!ok)
                return -EINVAL;
        uc_ctl_flush_tlb(uc); /* translations made under the old control state are stale */
        return 0;
}

/* ---- The processor model ---- */

/* QEMU's names for Unicorn's x86 models, in uc_cpu_x86 order. */
static const char *const unicorn_models[] = {
        "qemu64",     "phenom",         "core2duo",       "kvm64",
        "qemu32",     "kvm32",          "coreduo",        "486",
        "pentium",    "pentium2",       "pentium3",       "athlon",
        "n270",       "conroe",         "penryn",         "nehalem",
        "westmere",   "sandybridge",    "ivybridge",      "haswell",
        "broadwell",  "skylake-client", "skylake-server", "cascadelake-server",
        "cooperlake", "icelake-client", "icelake-server", "denverton",
        "snowridge",  "knightsmill",    "opteron-g1",     "opteron-g2",
        "opteron-g3", "opteron-g4",     "opteron-g5",     "epyc",
        "dhyana",     "epyc-rome",
};
G_STATIC_ASSERT(G_N_ELEMENTS(unicorn_models) == UC_CPU_X86_ENDING);

static int unicorn_cpu_model_lookup(const char *name, int *ret_model, const char **ret_name)
{
        for (size_t i = 0; i < G_N_ELEMENTS(unicorn_models); i++)
                if ((!name && i == UC_CPU_X86_QEMU64) ||
                    (name && g_ascii_strcasecmp(name, unicorn_models[i]) == 0)) {
                        *ret_model = (int)i;
                        *ret_name = unicorn_models[i];
                        return 0;
                }
        return -ENOENT;
}

static const char *unicorn_cpu_model_name(int i)
{
        return i >= 0 && (size_t)i < G_N_ELEMENTS(unicorn_models) ? unicorn_models[i] : NULL;
}

/* uc_version's answer is major, minor, patch and extra, a byte each. */
static void unicorn_version(char *buf, size_t size)
{
        unsigned major, minor, all = uc_version(&major, &minor);

        snprintf(buf, size, "%u.%u.%u", all >> 24 & 0xff, all >> 16 & 0xff, all >> 8 & 0xff);
}

/* A throwaway engine of the model runs one CPUID per leaf: the answers a guest gets. */
static int unicorn_cpuid_probe(int model, HvCpuidLeaf *table, size_t n)
{
        static const uint8_t cpuid[] = {0x0f, 0xa2};
        const uint64_t code = 0x1000;
        uc_engine *uc = NULL;
        int r = -EIO;

        if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK)
                return -ENOMEM;
        if (uc_ctl_set_cpu_model(uc, model) != UC_ERR_OK) {
                r = -EINVAL;
                goto out;
        }
        if (uc_mem_map(uc, code, 0x1000, UC_PROT_ALL) != UC_ERR_OK ||
            uc_mem_write(uc, code, cpuid, sizeof(cpuid)) != UC_ERR_OK)
                goto out;
        for (size_t i = 0; i < n; i++) {
                uint64_t eax = table[i].leaf, ecx = table[i].subleaf;

                if (uc_reg_write(uc, UC_X86_REG_RAX, &eax) != UC_ERR_OK ||
                    uc_reg_write(uc, UC_X86_REG_RCX, &ecx) != UC_ERR_OK ||
                    uc_emu_start(uc, code, code + sizeof(cpuid), 0, 0) != UC_ERR_OK)
                        goto out;
                table[i].eax = (uint32_t)reg_read(uc, UC_X86_REG_RAX);
                table[i].ebx = (uint32_t)reg_read(uc, UC_X86_REG_RBX);
                table[i].ecx = (uint32_t)reg_read(uc, UC_X86_REG_RCX);
                table[i].edx = (uint32_t)reg_read(uc, UC_X86_REG_RDX);
        }
        r = 0;
out:
        uc_close(uc);
        return r;
}

const HvEngineOps hv_engine_unicorn_ops = {
        .name = "unicorn",
        .vp_create = unicorn_vp_create,
        .vp_set_regs = unicorn_vp_set_regs,
        .vp_run = unicorn_vp_run,
        .vp_get_state = unicorn_vp_get_state,
        .vp_set_state = unicorn_vp_set_state,
        .vp_dirty_log = unicorn_vp_dirty_log,
        .vp_free = unicorn_vp_free,
        .cpu_model_lookup = unicorn_cpu_model_lookup,
        .cpu_model_name = unicorn_cpu_model_name,
        .version = unicorn_version,
        .cpuid_probe = unicorn_cpuid_probe,
};
