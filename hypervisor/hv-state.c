/* Save and restore of a paused partition (hv.proto's VpState, PartitionState).
 *
 * Trust. A state to restore may come from a saved file or a peer host: each register
 * is checked against what a guest could have put there itself (reserved bits clear,
 * addresses canonical or inside its RAM, long mode on, no debug breakpoint armed, as
 * the engine delivers no #DB), so hvd never hands the engine a state no guest could
 * reach. The guest ABI is flat 64-bit code; paging, if the guest turns it on, needs PAE.
 *
 * Time. Idle deadlines travel as the guest's reference time, and the partition's
 * reference time is set (PartitionStateSet) before its VPs' states, so a restored
 * guest's clock goes on from the saved instant and never goes backwards. */
#include <errno.h>
#include <string.h>

#include "hv-abi.h"
#include "hv-state.h"

#define CR0_PE (1ull << 0)
#define CR0_PG (1ull << 31)
#define CR0_KNOWN 0xe005003full /* PE MP EM TS ET NE WP AM NW CD PG */
#define CR4_PAE (1ull << 5)
#define CR4_KNOWN 0x007f07ffull /* VME..OSXMMEXCPT, UMIP, FSGSBASE PCIDE OSXSAVE SMEP SMAP PKE */
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_KNOWN 0xd01ull /* SCE LME LMA NXE */
#define RFLAGS_FIXED1 (1ull << 1)
#define RFLAGS_KNOWN 0x3f7fd7ull /* CF, bit 1, PF AF ZF SF TF IF DF OF IOPL NT RF VM AC VIF VIP ID */
#define RFLAGS_VM (1ull << 17)
#define DR7_ENABLES 0xffull
#define MXCSR_KNOWN 0xffffull

enum {
        MSR_STAR,
        MSR_LSTAR,
        MSR_CSTAR,
        MSR_SFMASK,
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP,
        MSR_SYSENTER_EIP,
        MSR_PAT,
};

static bool canonical(uint64_t address)
{
        int64_t high = (int64_t)address >> 47;

        return high == 0 || high == -1;
}

static bool pat_valid(uint64_t pat)
{
        for (int i = 0; i < 8; i++) {
                uint8_t type = (uint8_t)(pat >> (8 * i));

                if (type != 0 && type != 1 && type != 4 && type != 5 && type != 6 && type != 7)
                        return false;
        }
        return true;
}

static int refuse(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int refuse(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int check_counts(const Vmms__Hv__VpRegisters *w, char **ret_error)
{
        if (w->n_gpr != HV_VP_GPRS)
                return refuse(ret_error, "registers: gpr holds %zu values, not %d", w->n_gpr, HV_VP_GPRS);
        if (w->n_selectors != HV_VP_SELECTORS)
                return refuse(ret_error, "registers: selectors holds %zu values, not %d", w->n_selectors,
                              HV_VP_SELECTORS);
        if (w->n_cr != HV_VP_CRS)
                return refuse(ret_error, "registers: cr holds %zu values, not %d", w->n_cr, HV_VP_CRS);
        if (w->n_msrs != HV_VP_MSRS)
                return refuse(ret_error, "registers: msrs holds %zu values, not %d", w->n_msrs, HV_VP_MSRS);
        if (w->n_dr != HV_VP_DRS)
                return refuse(ret_error, "registers: dr holds %zu values, not %d", w->n_dr, HV_VP_DRS);
        if (w->fpu_registers.len != sizeof(((HvVpCpuState *)0)->fpu_registers))
                return refuse(ret_error, "registers: fpu_registers is %zu bytes, not 80",
                              w->fpu_registers.len);
        if (w->xmm.len != sizeof(((HvVpCpuState *)0)->xmm))
                return refuse(ret_error, "registers: xmm is %zu bytes, not 256", w->xmm.len);
        return 0;
}

static int check_control(const Vmms__Hv__VpRegisters *w, uint64_t visible_bytes, char **ret_error)
{
        uint64_t cr0 = w->cr[0], cr3 = w->cr[2], cr4 = w->cr[3];
        bool paging = cr0 & CR0_PG;

        if ((cr0 & ~CR0_KNOWN) || !(cr0 & CR0_PE))
                return refuse(ret_error,
                              "registers: cr0 0x%" G_GINT64_MODIFIER "x has reserved bits or lacks PE", cr0);
        if (cr4 & ~CR4_KNOWN)
                return refuse(ret_error, "registers: cr4 0x%" G_GINT64_MODIFIER "x has reserved bits", cr4);
        if (paging && !(cr4 & CR4_PAE))
                return refuse(ret_error, "registers: paging on without PAE (cr4 0x%" G_GINT64_MODIFIER "x)",
                              cr4);
        if (paging && ((cr3 >> 52) || (cr3 & ~0xfffull) >= visible_bytes))
                return refuse(ret_error, "registers: cr3 0x%" G_GINT64_MODIFIER "x lies outside guest RAM",
                              cr3);
        if (!canonical(w->cr[1]))
                return refuse(ret_error, "registers: cr2 0x%" G_GINT64_MODIFIER "x is not canonical",
                              w->cr[1]);
        if ((w->efer & ~EFER_KNOWN) || (w->efer & (EFER_LME | EFER_LMA)) != (EFER_LME | EFER_LMA))
                return refuse(ret_error,
                              "registers: efer 0x%" G_GINT64_MODIFIER
                              "x has reserved bits or is not long mode",
                              w->efer);
        if (((w->rflags & ~RFLAGS_KNOWN) | (w->rflags & RFLAGS_VM) | (~w->rflags & RFLAGS_FIXED1)) != 0)
                return refuse(ret_error,
                              "registers: rflags 0x%" G_GINT64_MODIFIER "x is not a long-mode value",
                              w->rflags);
        if (paging ? !canonical(w->rip) : w->rip >= visible_bytes)
                return refuse(ret_error, "registers: rip 0x%" G_GINT64_MODIFIER "x lies outside guest RAM",
                              w->rip);
        return 0;
}

static int check_tables(const Vmms__Hv__VpRegisters *w, char **ret_error)
{
        const uint64_t bases[] = {w->fs_base,   w->gs_base,   w->kernel_gs_base, w->gdtr_base,
                                  w->idtr_base, w->ldtr_base, w->tr_base};
        static const char *const names[] = {"fs_base",   "gs_base",   "kernel_gs_base", "gdtr_base",
                                            "idtr_base", "ldtr_base", "tr_base"};

        for (size_t i = 0; i < G_N_ELEMENTS(bases); i++)
                if (!canonical(bases[i]))
                        return refuse(ret_error, "registers: %s 0x%" G_GINT64_MODIFIER "x is not canonical",
                                      names[i], bases[i]);
        for (size_t i = 0; i < HV_VP_SELECTORS; i++)
                if (w->selectors[i] > 0xffff)
                        return refuse(ret_error, "registers: selector %zu is 0x%x, over 16 bits", i,
                                      w->selectors[i]);
        if (w->gdtr_limit > 0xffff || w->idtr_limit > 0xffff || w->ldtr_selector > 0xffff ||
            w->tr_selector > 0xffff)
                return refuse(ret_error, "registers: a descriptor-table limit or selector is over 16 bits");
        return 0;
}

static int check_msrs_and_debug(const Vmms__Hv__VpRegisters *w, char **ret_error)
{
        const uint64_t *m = w->msrs;

        if (!canonical(m[MSR_LSTAR]) || !canonical(m[MSR_CSTAR]) || !canonical(m[MSR_SYSENTER_ESP]) ||
            !canonical(m[MSR_SYSENTER_EIP]))
                return refuse(ret_error, "registers: a system-call entry MSR is not canonical");
        if (m[MSR_SFMASK] >> 32 || m[MSR_SYSENTER_CS] > 0xffff)
                return refuse(ret_error, "registers: SFMASK or SYSENTER_CS has reserved bits");
        if (!pat_valid(m[MSR_PAT]))
                return refuse(ret_error,
                              "registers: PAT 0x%" G_GINT64_MODIFIER "x names a reserved memory type",
                              m[MSR_PAT]);
        for (int i = 0; i < 4; i++)
                if (!canonical(w->dr[i]))
                        return refuse(ret_error, "registers: dr%d is not canonical", i);
        if (w->dr[4] >> 32 || w->dr[5] >> 32 || (w->dr[5] & DR7_ENABLES))
                return refuse(
                        ret_error,
                        "registers: dr6/dr7 have reserved bits or arm a breakpoint (dr7 0x%" G_GINT64_MODIFIER
                        "x)",
                        w->dr[5]);
        if (w->fpu_control > 0xffff || w->fpu_status > 0xffff || w->fpu_tag > 0xffff ||
            w->fpu_opcode > 0x7ff || w->fpu_cs > 0xffff || w->fpu_ds > 0xffff)
                return refuse(ret_error, "registers: an x87 control field is over its width");
        if (w->mxcsr & ~MXCSR_KNOWN)
                return refuse(ret_error, "registers: mxcsr 0x%x has reserved bits", w->mxcsr);
        return 0;
}

int hv_state_registers_from_wire(const Vmms__Hv__VpRegisters *w, uint64_t visible_bytes, HvVpCpuState *ret,
                                 char **ret_error)
{
        HvVpCpuState st = {0};
        int r;

        if (!w)
                return refuse(ret_error, "registers are missing");
        r = check_counts(w, ret_error);
        if (r >= 0)
                r = check_control(w, visible_bytes, ret_error);
        if (r >= 0)
                r = check_tables(w, ret_error);
        if (r >= 0)
                r = check_msrs_and_debug(w, ret_error);
        if (r < 0)
                return r;
        memcpy(st.gpr, w->gpr, sizeof(st.gpr));
        for (size_t i = 0; i < HV_VP_SELECTORS; i++)
                st.selectors[i] = (uint16_t)w->selectors[i];
        memcpy(st.cr, w->cr, sizeof(st.cr));
        memcpy(st.msrs, w->msrs, sizeof(st.msrs));
        memcpy(st.dr, w->dr, sizeof(st.dr));
        memcpy(st.fpu_registers, w->fpu_registers.data, sizeof(st.fpu_registers));
        memcpy(st.xmm, w->xmm.data, sizeof(st.xmm));
        st.rip = w->rip;
        st.rflags = w->rflags;
        st.fs_base = w->fs_base;
        st.gs_base = w->gs_base;
        st.kernel_gs_base = w->kernel_gs_base;
        st.gdtr = (HvVpSegmentTable){.base = w->gdtr_base, .limit = w->gdtr_limit};
        st.idtr = (HvVpSegmentTable){.base = w->idtr_base, .limit = w->idtr_limit};
        st.ldtr = (HvVpSegmentTable){.base = w->ldtr_base,
                                     .limit = w->ldtr_limit,
                                     .selector = w->ldtr_selector,
                                     .flags = w->ldtr_flags};
        st.tr = (HvVpSegmentTable){
                .base = w->tr_base, .limit = w->tr_limit, .selector = w->tr_selector, .flags = w->tr_flags};
        st.efer = w->efer;
        st.fpu_control = (uint16_t)w->fpu_control;
        st.fpu_status = (uint16_t)w->fpu_status;
        st.fpu_tag = (uint16_t)w->fpu_tag;
        st.fpu_opcode = (uint16_t)w->fpu_opcode;
        st.fpu_cs = (uint16_t)w->fpu_cs;
        st.fpu_ds = (uint16_t)w->fpu_ds;
        st.fpu_ip = w->fpu_ip;
        st.fpu_dp = w->fpu_dp;
        st.mxcsr = w->mxcsr;
        *ret = st;
        return 0;
}

static void *arena_dup(GPtrArray *arena, const void *data, size_t len)
{
        void *copy = g_memdup2(data, len);

        g_ptr_array_add(arena, copy);
        return copy;
}

static Vmms__Hv__VpRegisters *registers_to_wire(const HvVpCpuState *st, GPtrArray *arena)
{
        Vmms__Hv__VpRegisters *w = g_new0(Vmms__Hv__VpRegisters, 1);
        uint32_t *selectors = g_new0(uint32_t, HV_VP_SELECTORS);

        g_ptr_array_add(arena, w);
        g_ptr_array_add(arena, selectors);
        vmms__hv__vp_registers__init(w);
        for (size_t i = 0; i < HV_VP_SELECTORS; i++)
                selectors[i] = st->selectors[i];
        w->n_gpr = HV_VP_GPRS;
        w->gpr = arena_dup(arena, st->gpr, sizeof(st->gpr));
        w->n_selectors = HV_VP_SELECTORS;
        w->selectors = selectors;
        w->n_cr = HV_VP_CRS;
        w->cr = arena_dup(arena, st->cr, sizeof(st->cr));
        w->n_msrs = HV_VP_MSRS;
        w->msrs = arena_dup(arena, st->msrs, sizeof(st->msrs));
        w->n_dr = HV_VP_DRS;
        w->dr = arena_dup(arena, st->dr, sizeof(st->dr));
        w->fpu_registers.len = sizeof(st->fpu_registers);
        w->fpu_registers.data = arena_dup(arena, st->fpu_registers, sizeof(st->fpu_registers));
        w->xmm.len = sizeof(st->xmm);
        w->xmm.data = arena_dup(arena, st->xmm, sizeof(st->xmm));
        w->rip = st->rip;
        w->rflags = st->rflags;
        w->fs_base = st->fs_base;
        w->gs_base = st->gs_base;
        w->kernel_gs_base = st->kernel_gs_base;
        w->gdtr_base = st->gdtr.base;
        w->gdtr_limit = st->gdtr.limit;
        w->idtr_base = st->idtr.base;
        w->idtr_limit = st->idtr.limit;
        w->ldtr_base = st->ldtr.base;
        w->ldtr_limit = st->ldtr.limit;
        w->ldtr_selector = st->ldtr.selector;
        w->ldtr_flags = st->ldtr.flags;
        w->tr_base = st->tr.base;
        w->tr_limit = st->tr.limit;
        w->tr_selector = st->tr.selector;
        w->tr_flags = st->tr.flags;
        w->efer = st->efer;
        w->fpu_control = st->fpu_control;
        w->fpu_status = st->fpu_status;
        w->fpu_tag = st->fpu_tag;
        w->fpu_opcode = st->fpu_opcode;
        w->fpu_ip = st->fpu_ip;
        w->fpu_dp = st->fpu_dp;
        w->fpu_cs = st->fpu_cs;
        w->fpu_ds = st->fpu_ds;
        w->mxcsr = st->mxcsr;
        return w;
}

int hv_state_vp_get(Hv *hv, HvPartition *p, uint32_t vp_index, Vmms__Hv__VpState *ret, GPtrArray *arena,
                    char **ret_error)
{
        HvVpCpuState cpu;
        HvVpRunSnapshot run;
        int r;

        if (vp_index >= p->vp_count)
                return refuse(ret_error, "vp_index %u is out of range 0-%u", vp_index, p->vp_count - 1);
        r = hv_sched_vp_snapshot(hv->sched, p->vps[vp_index], &cpu, &run);
        if (r == -EBUSY) {
                *ret_error = g_strdup("the partition must be paused to read its state");
                return r;
        }
        if (r < 0) {
                *ret_error = g_strdup_printf("the engine could not read vp %u: %s", vp_index, g_strerror(-r));
                return r;
        }
        vmms__hv__vp_state__init(ret);
        ret->vp_index = vp_index;
        ret->run_state = run.state == HV_VP_IDLE       ? VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_IDLE
                         : run.state == HV_VP_RUNNABLE ? VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_RUNNABLE
                                                       : VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_STOPPED;
        ret->idle_deadline_ns = hv_partition_deadline_to_guest(p, run.idle_deadline_ns);
        ret->event_pending = run.event_pending;
        ret->resume_rax_valid = run.resume_rax_valid;
        ret->resume_rax = run.resume_rax;
        ret->registers = registers_to_wire(&cpu, arena);
        return 0;
}

int hv_state_vp_set(Hv *hv, HvPartition *p, const Vmms__Hv__VpState *state, char **ret_error)
{
        HvVpCpuState cpu;
        HvVpRunSnapshot run = {0};
        int r;

        if (!state)
                return refuse(ret_error, "state is missing");
        if (!p->restoring)
                return refuse(ret_error, "the partition was not created to be restored");
        if (state->vp_index >= p->vp_count)
                return refuse(ret_error, "vp_index %u is out of range 0-%u", state->vp_index,
                              p->vp_count - 1);
        switch (state->run_state) {
        case VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_STOPPED:
                run.state = HV_VP_STOPPED;
                break;
        case VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_RUNNABLE:
                run.state = HV_VP_RUNNABLE;
                break;
        case VMMS__HV__VP_RUN_STATE__VP_RUN_STATE_IDLE:
                run.state = HV_VP_IDLE;
                break;
        default:
                return refuse(ret_error, "run_state %d is not a VP run state", (int)state->run_state);
        }
        if (state->idle_deadline_ns && run.state != HV_VP_IDLE)
                return refuse(ret_error, "idle_deadline_ns is set for a VP that is not idle");
        r = hv_state_registers_from_wire(state->registers, atomic_load(&p->visible_bytes), &cpu, ret_error);
        if (r < 0)
                return r;
        run.idle_deadline_ns = hv_partition_deadline_to_host(p, state->idle_deadline_ns);
        run.event_pending = state->event_pending;
        run.resume_rax_valid = state->resume_rax_valid;
        run.resume_rax = state->resume_rax;
        r = hv_sched_vp_restore(hv->sched, p->vps[state->vp_index], &cpu, &run);
        if (r == -EBUSY)
                *ret_error =
                        g_strdup_printf("vp %u has run or has its state already, or the partition is not "
                                        "paused",
                                        state->vp_index);
        else if (r < 0)
                *ret_error = g_strdup_printf("the engine refused vp %u's state", state->vp_index);
        return r;
}

int hv_state_partition_get(HvPartition *p, Vmms__Hv__PartitionState *ret, char **ret_error)
{
        if (!p->paused) { /* read on the main thread, which alone pauses and resumes */
                *ret_error = g_strdup("the partition must be paused to read its state");
                return -EBUSY;
        }
        vmms__hv__partition_state__init(ret);
        ret->reference_time_ns = hv_partition_reference_time_ns(p);
        ret->vp_count = p->vp_count;
        ret->visible_bytes = atomic_load(&p->visible_bytes);
        ret->ballooned_bytes = p->ballooned_pages * HV_PAGE_SIZE;
        ret->hot_added_bytes = p->hot_added_bytes;
        return 0;
}

int hv_state_partition_set(HvPartition *p, uint64_t reference_time_ns, char **ret_error)
{
        if (!p->restoring || !p->paused)
                return refuse(ret_error, "the partition was not created to be restored, or runs already");
        if (reference_time_ns > INT64_MAX)
                return refuse(ret_error, "reference_time_ns %" G_GUINT64_FORMAT " is past 2^63",
                              reference_time_ns);
        atomic_store(&p->reference_offset_ns,
                     (int64_t)reference_time_ns - (int64_t)hv_reference_time_ns(p->hv));
        return 0;
}
