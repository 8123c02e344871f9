/* The signs of an over-committed host, judged from the counters over a window.
 *
 * The seed names them: Available Memory short, Average Pressure near or over 100 for a
 * sustained period, guest paging rates high; and for processors, a high CPU Wait Time
 * Per Dispatch and logical processors at 100 %. Each rule below reads one counter
 * Get-Counter shows, so an operator can watch the same figure the rule judged.
 *
 *   rule             counter                                                 fires when          window
 *   host memory      \Hyper-V Dynamic Memory Balancer\Available Memory       < 5 % of the pool,    30 s
 *   short                                                                    every second
 *   host pressure    \Hyper-V Dynamic Memory Balancer\Average Pressure       >= 100, every second  30 s
 *   host LPs busy    \Hyper-V Hypervisor Logical Processor(_Total)\          >= 95 %, every second 30 s
 *                    % Total Run Time
 *   VM pressure      \Hyper-V Dynamic Memory VM(vm)\Average Pressure         >= 100, every second  30 s
 *   VM paging        \VMMS Guest Memory(vm)\Pages In + Pages Out             >= 64 pages/s, mean   10 s
 *   VM waiting for   \Hyper-V Hypervisor Virtual Processor(vm:Hv VP *)\      >= 1 ms, the mean     10 s
 *   CPU              CPU Wait Time Per Dispatch
 *   VM short of its  \Hyper-V Hypervisor Virtual Processor(vm:Hv VP *)\      >= 10 % of one LP     10 s
 *   CPU Reserve      % Total Run Time, against Reserve x Count               short, the mean
 *
 * Why these. Pressure is committed / assigned × 100: at 100 the guest has no free
 * memory and starts paging (the seed's guests 3–5 sat over 100 while guest 5 paged
 * "excessively"). A moment over 100 is the balancer's normal work — it adds memory
 * within a second or two — so the pressure rules want every second of the window over,
 * "a sustained period"; 30 s is long against the balancer's one-second tick and short
 * against an operator's patience. Available Memory under 5 % of the pool is the
 * balancer with nothing left to give; alone it is only a full host, so it is a host
 * sign but no VM's status. Paging and CPU wait are rates that come in bursts, so those
 * rules judge the mean over a shorter window: 64 pages (256 KB) a second is more than
 * a guest at rest ever pages here, and 1 ms waiting per dispatch is ten times what
 * hvd's scheduler costs a runnable VP when the host has spare processors. LPs at 95 %
 * rather than 100 % because the hypervisor's own time keeps _Total just short of it.
 *
 * A Reserve is "guaranteed when runnable": hvd's scheduler meets it exactly, but the libvirt
 * engine can only weigh its guests against each other (cgroups have no CPU minimum), so a
 * busy host can leave a libvirt VM short. Over the window, from its VPs' running totals:
 * run = what it got, wait = what it spent runnable but not running (libvirt's vcpu.N.delay,
 * hvd's VP wait), both in % of one LP; it wanted min(Reserve x Count, run + wait), and the
 * shortfall is wanted - run. An idle VM wants nothing and is never short. 10 % of one LP
 * is well past the few % a busy guest's dispatching costs here.
 *
 * Goal seeking (Set-VMMemory -GoalSeeking, balancer/balancer-goal.c) trims a VM below what it
 * commits: the pages it does not touch go to its paging disk and still count as committed, so
 * its pressure reads over 100 — 296 on the cold-majority guest of bench/dm_goal_seeking.py —
 * while it runs at full speed. That is the goal working, not a shortage: for a goal-seeking
 * VM, a second counts towards "pressure high" only while it also pages in over goal seeking's
 * own threshold (1 MiB/s, 256 pages/s, the mean over the paging rule's 10 s), and a VM that
 * does not is left out of the host's pressure rule (which then judges the mean Average
 * Pressure of the other VMs) and of the host's shortfall. Its paging rule stands as for any
 * VM: a probe that pages shows as "Paging" for its seconds.
 *
 * How long a sign has held (for_s) counts the seconds in a row its condition was true,
 * unbounded by the window: "Memory pressure high for 4 min". A VM's state is the set
 * of its rules that fire; vmms_health_end_second() reports a subject whose set changed,
 * which the manager records as a "health" event — once per change, never per tick.
 *
 * The advice names memory in figures. A VM at pressure P with C committed is relieved
 * at pressure 80 (the balancer's usual buffer of 20 %): it needs C × 100 / 80 assigned,
 * so relief = C / 0.8 − assigned. Past its Maximum Memory the advice is to raise the
 * Maximum; otherwise to free that much here by moving a VM away, naming the smallest
 * other VM whose assigned memory covers it (or the largest, if none does). The host's
 * relief is the sum of its VMs' reliefs.
 *
 * Bounded: each subject keeps VMMS_HEALTH_WINDOW_MAX samples; a second's work is one
 * pass over the rules for each subject. */
#include <math.h>
#include <string.h>

#include "balancer-goal.h"
#include "vmms-error.h"
#include "vmms-health.h"

#define RELIEF_TARGET_PRESSURE 80.0

const VmmsHealthRuleInfo vmms_health_rules[VMMS_HEALTH_RULE_COUNT] = {
        [VMMS_HEALTH_HOST_AVAILABLE_MEMORY] =
                {"host-available-memory",
                 "\\Hyper-V Dynamic Memory Balancer(System Balancer)\\Available Memory", "MB", 5, 30, true,
                 NULL},
        [VMMS_HEALTH_HOST_AVERAGE_PRESSURE] =
                {"host-average-pressure",
                 "\\Hyper-V Dynamic Memory Balancer(System Balancer)\\Average Pressure", "%", 100, 30, true,
                 NULL},
        [VMMS_HEALTH_HOST_LP_BUSY] = {"host-lp-busy",
                                      "\\Hyper-V Hypervisor Logical Processor(_Total)\\% Total Run Time", "%",
                                      95, 30, true, NULL},
        [VMMS_HEALTH_VM_PRESSURE] = {"vm-memory-pressure",
                                     "\\Hyper-V Dynamic Memory VM(%s)\\Average Pressure", "%", 100, 30, true,
                                     "Memory pressure high"},
        [VMMS_HEALTH_VM_PAGING] = {"vm-paging", "\\VMMS Guest Memory(%s)\\Pages In + Pages Out", "pages/s",
                                   64, 10, false, "Paging"},
        [VMMS_HEALTH_VM_CPU_WAIT] =
                {"vm-cpu-wait",
                 "\\Hyper-V Hypervisor Virtual Processor(%s:Hv VP *)\\CPU Wait Time Per Dispatch", "ns", 1e6,
                 10, false, "Waiting for CPU"},
        [VMMS_HEALTH_VM_CPU_RESERVE] =
                {"vm-cpu-reserve", "\\Hyper-V Hypervisor Virtual Processor(%s:Hv VP *)\\% Total Run Time",
                 "%", 10, 10, false, "CPU reserve not met"},
};

typedef struct HealthSubject {
        union {
                VmmsHealthHostSample host[VMMS_HEALTH_WINDOW_MAX];
                VmmsHealthVmSample vm[VMMS_HEALTH_WINDOW_MAX];
        } ring;
        unsigned n;    /* samples held, at most VMMS_HEALTH_WINDOW_MAX */
        unsigned head; /* where the next sample goes */
        unsigned run[VMMS_HEALTH_RULE_COUNT];
        unsigned firing;  /* bit per rule */
        unsigned changed; /* firing before this second (for end_second) */
        bool seen;        /* pushed this second */
        bool reported;    /* had a state before: the first second is no change */
} HealthSubject;

struct VmmsHealth {
        HealthSubject host;
        double goal_paging_pages_per_s; /* goal seeking's paging threshold, in pages/s */
        bool host_seen_ever;
        GHashTable *vms; /* name -> HealthSubject* */
};

VmmsHealth *vmms_health_new(void)
{
        VmmsHealth *h = g_new0(VmmsHealth, 1);
        BalancerGoalConfig goal;

        balancer_goal_config_init_default(&goal);
        h->goal_paging_pages_per_s = (double)goal.paging_threshold_bytes_per_s / BALANCER_GOAL_PAGE_BYTES;
        h->vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return h;
}

void vmms_health_free(VmmsHealth *h)
{
        if (!h)
                return;
        g_clear_pointer(&h->vms, g_hash_table_unref);
        g_free(h);
}

/* The index of the sample `back` seconds ago (0: the latest). */
static unsigned ring_at(const HealthSubject *s, unsigned back)
{
        return (s->head + VMMS_HEALTH_WINDOW_MAX - 1 - back) % VMMS_HEALTH_WINDOW_MAX;
}

static void ring_advance(HealthSubject *s)
{
        s->head = (s->head + 1) % VMMS_HEALTH_WINDOW_MAX;
        s->n = MIN(s->n + 1, VMMS_HEALTH_WINDOW_MAX);
}

/* One second's figure of a rule for the subject's latest sample (NAN: not known). */
static double host_figure(const VmmsHealthHostSample *x, VmmsHealthRule rule)
{
        switch (rule) {
        case VMMS_HEALTH_HOST_AVAILABLE_MEMORY:
                return x->pool_bytes > 0 ? x->available_bytes * 100 / x->pool_bytes : NAN;
        case VMMS_HEALTH_HOST_AVERAGE_PRESSURE:
                return x->average_pressure;
        case VMMS_HEALTH_HOST_LP_BUSY:
                return x->lp_run_pct;
        default:
                return NAN;
        }
}

static bool past(VmmsHealthRule rule, double value)
{
        if (isnan(value))
                return false;
        if (rule == VMMS_HEALTH_HOST_AVAILABLE_MEMORY)
                return value < vmms_health_rules[rule].threshold;
        return value >= vmms_health_rules[rule].threshold;
}

/* A mean rule's figure over its window: paging as the rate between the window's ends,
 * CPU wait as the mean of the known seconds. NAN until the window is full. */
static double vm_window_mean(const HealthSubject *s, VmmsHealthRule rule)
{
        unsigned window = vmms_health_rules[rule].window_s;
        double sum = 0;
        unsigned known = 0;

        if (s->n < window + (rule == VMMS_HEALTH_VM_PAGING))
                return NAN;
        if (rule == VMMS_HEALTH_VM_PAGING) {
                double now = s->ring.vm[ring_at(s, 0)].pages_total,
                       then = s->ring.vm[ring_at(s, window)].pages_total;

                return isnan(now) || isnan(then) || now < then ? NAN : (now - then) / window;
        }
        for (unsigned i = 0; i < window; i++) {
                double x = s->ring.vm[ring_at(s, i)].cpu_wait_per_dispatch_ns;

                if (!isnan(x)) {
                        sum += x;
                        known++;
                }
        }
        return known ? sum / known : NAN;
}

/* The reserve rule's figures over its window, in % of one LP: what the VM got (run), what it
 * waited (wait), and how far short of its reservation it was (the essay's formula). NAN
 * until the window is full, without a reservation, or when a total is not known or went
 * back (a restart). */
static double vm_reserve_shortfall(const HealthSubject *s, double *ret_run, double *ret_wait)
{
        unsigned window = vmms_health_rules[VMMS_HEALTH_VM_CPU_RESERVE].window_s;
        const VmmsHealthVmSample *now, *then;
        double run, wait;

        if (s->n < window + 1)
                return NAN;
        now = &s->ring.vm[ring_at(s, 0)];
        then = &s->ring.vm[ring_at(s, window)];
        if (!(now->cpu_reserve_pct > 0) || isnan(now->cpu_run_s_total) || isnan(then->cpu_run_s_total) ||
            isnan(now->cpu_wait_s_total) || isnan(then->cpu_wait_s_total) ||
            now->cpu_run_s_total < then->cpu_run_s_total || now->cpu_wait_s_total < then->cpu_wait_s_total)
                return NAN;
        run = (now->cpu_run_s_total - then->cpu_run_s_total) * 100 / window;
        wait = (now->cpu_wait_s_total - then->cpu_wait_s_total) * 100 / window;
        if (ret_run)
                *ret_run = run;
        if (ret_wait)
                *ret_wait = wait;
        return MAX(0, MIN(now->cpu_reserve_pct, run + wait) - run);
}

/* A goal-seeking VM's page-in rate over the paging rule's window (NAN until it is full). */
static double vm_goal_paging(const HealthSubject *s)
{
        unsigned window = vmms_health_rules[VMMS_HEALTH_VM_PAGING].window_s;
        double now, then;

        if (s->n < window + 1)
                return NAN;
        now = s->ring.vm[ring_at(s, 0)].pages_in_total;
        then = s->ring.vm[ring_at(s, window)].pages_in_total;
        return isnan(now) || isnan(then) || now < then ? NAN : (now - then) / window;
}

/* Whether the VM's pressure this second means it is short of memory: always, unless it seeks a goal;
 * then only while it pages in over goal seeking's threshold (its pressure over 100 is pages it left on
 * disk because it does not touch them). */
static bool vm_pressure_is_shortage(const VmmsHealth *h, const HealthSubject *s)
{
        double paging;

        if (!s->ring.vm[ring_at(s, 0)].goal_seeking)
                return true;
        paging = vm_goal_paging(s);
        return !isnan(paging) && paging > h->goal_paging_pages_per_s;
}

static double vm_figure(const HealthSubject *s, VmmsHealthRule rule)
{
        if (rule == VMMS_HEALTH_VM_PRESSURE)
                return s->ring.vm[ring_at(s, 0)].average_pressure;
        if (rule == VMMS_HEALTH_VM_CPU_RESERVE)
                return vm_reserve_shortfall(s, NULL, NULL);
        return vm_window_mean(s, rule);
}

/* Updates each rule's run of seconds and which rules fire. */
static void judge(const VmmsHealth *h, HealthSubject *s, bool is_host)
{
        VmmsHealthRule first = is_host ? VMMS_HEALTH_HOST_AVAILABLE_MEMORY : VMMS_HEALTH_VM_PRESSURE;
        VmmsHealthRule last = is_host ? VMMS_HEALTH_HOST_LP_BUSY : VMMS_HEALTH_VM_CPU_RESERVE;

        s->firing = 0;
        for (VmmsHealthRule r = first; r <= last; r++) {
                const VmmsHealthRuleInfo *info = &vmms_health_rules[r];
                double x = is_host ? host_figure(&s->ring.host[ring_at(s, 0)], r) : vm_figure(s, r);

                bool sign = past(r, x) && (r != VMMS_HEALTH_VM_PRESSURE || vm_pressure_is_shortage(h, s));

                s->run[r] = sign ? s->run[r] + 1 : 0;
                /* A mean rule's first true second already stands for a whole window. */
                if (info->sustained ? s->run[r] >= info->window_s : s->run[r] > 0)
                        s->firing |= 1u << r;
        }
}

void vmms_health_push_host(VmmsHealth *h, const VmmsHealthHostSample *sample)
{
        h->host.ring.host[h->host.head] = *sample;
        ring_advance(&h->host);
        h->host.seen = true;
}

void vmms_health_push_vm(VmmsHealth *h, const char *vm, const VmmsHealthVmSample *sample)
{
        HealthSubject *s = g_hash_table_lookup(h->vms, vm);

        if (!s) {
                s = g_new0(HealthSubject, 1);
                g_hash_table_insert(h->vms, g_strdup(vm), s);
        }
        s->ring.vm[s->head] = *sample;
        ring_advance(s);
        s->seen = true;
        judge(h, s, false);
}

/* The host's Average Pressure counter is the mean over its VMs, a goal-seeking VM's over 100 at its goal
 * included. When a VM this second is such a one, the host's pressure rule judges the mean Average
 * Pressure of the other dynamic-memory VMs instead (none: nothing to judge). */
static void host_leave_out_goals(VmmsHealth *h)
{
        VmmsHealthHostSample *x = &h->host.ring.host[ring_at(&h->host, 0)];
        GHashTableIter iter;
        gpointer value;
        double sum = 0;
        unsigned n = 0, left_out = 0;

        g_hash_table_iter_init(&iter, h->vms);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
                const HealthSubject *s = value;
                const VmmsHealthVmSample *v = &s->ring.vm[ring_at(s, 0)];

                if (!s->seen || v->static_memory || isnan(v->average_pressure))
                        continue;
                if (!vm_pressure_is_shortage(h, s)) {
                        left_out++;
                        continue;
                }
                sum += v->average_pressure;
                n++;
        }
        if (left_out)
                x->average_pressure = n ? sum / n : NAN;
}

static bool subject_changed(HealthSubject *s)
{
        bool changed = s->reported ? s->firing != s->changed : s->firing != 0;

        s->changed = s->firing;
        s->reported = true;
        s->seen = false;
        return changed;
}

GPtrArray *vmms_health_end_second(VmmsHealth *h)
{
        GPtrArray *changes = g_ptr_array_new_with_free_func(g_free);
        GHashTableIter iter;
        gpointer key, value;

        if (h->host.seen) {
                host_leave_out_goals(h);
                judge(h, &h->host, true);
                if (subject_changed(&h->host))
                        g_ptr_array_add(changes, g_strdup(""));
        }
        g_hash_table_iter_init(&iter, h->vms);
        while (g_hash_table_iter_next(&iter, &key, &value)) {
                HealthSubject *s = value;

                if (!s->seen) {
                        /* Stopped: a VM that had signs goes back to normal by leaving. */
                        if (s->changed)
                                g_ptr_array_add(changes, g_strdup(key));
                        g_hash_table_iter_remove(&iter);
                        continue;
                }
                if (subject_changed(s))
                        g_ptr_array_add(changes, g_strdup(key));
        }
        return changes;
}

/* ---- Findings and advice ---- */

static void finding_free(gpointer p)
{
        VmmsHealthFinding *f = p;

        g_free(f->vm);
        g_free(f->counter);
        g_free(f->advice);
        g_free(f);
}

static const VmmsHealthVmSample *latest_vm(const HealthSubject *s)
{
        return &s->ring.vm[ring_at(s, 0)];
}

/* Memory that brings a VM to pressure 80, rounded up to a MiB. */
static uint64_t vm_relief_bytes(const VmmsHealthVmSample *x)
{
        double want = (double)x->committed_bytes * 100.0 / RELIEF_TARGET_PRESSURE;

        if (want <= (double)x->assigned_bytes)
                return 0;
        return ((uint64_t)ceil((want - (double)x->assigned_bytes) / (1 << 20))) << 20;
}

static int compare_names(gconstpointer a, gconstpointer b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static GPtrArray *sorted_names(VmmsHealth *h)
{
        GPtrArray *names = g_ptr_array_sized_new(g_hash_table_size(h->vms));
        GHashTableIter iter;
        gpointer key;

        g_hash_table_iter_init(&iter, h->vms);
        while (g_hash_table_iter_next(&iter, &key, NULL))
                g_ptr_array_add(names, key);
        g_ptr_array_sort(names, compare_names);
        return names;
}

/* The VM to move to free `bytes`: the smallest whose assigned memory covers it, else
 * the largest; never `except`. NULL when there is none. */
static const char *vm_to_move(VmmsHealth *h, uint64_t bytes, const char *except, uint64_t *ret_assigned)
{
        g_autoptr(GPtrArray) names = sorted_names(h);
        const char *cover = NULL, *largest = NULL;
        uint64_t cover_bytes = 0, largest_bytes = 0;

        for (guint i = 0; i < names->len; i++) {
                const char *name = names->pdata[i];
                uint64_t a = latest_vm(g_hash_table_lookup(h->vms, name))->assigned_bytes;

                if (except && strcmp(name, except) == 0)
                        continue;
                if (a >= bytes && (!cover || a < cover_bytes)) {
                        cover = name;
                        cover_bytes = a;
                }
                if (!largest || a > largest_bytes) {
                        largest = name;
                        largest_bytes = a;
                }
        }
        *ret_assigned = cover ? cover_bytes : largest_bytes;
        return cover ? cover : largest;
}

/* The VM using the most processor time, never `except`. */
static const char *vm_busiest(VmmsHealth *h, const char *except, double *ret_pct)
{
        g_autoptr(GPtrArray) names = sorted_names(h);
        const char *busiest = NULL;

        *ret_pct = 0;
        for (guint i = 0; i < names->len; i++) {
                double pct = latest_vm(g_hash_table_lookup(h->vms, names->pdata[i]))->cpu_run_pct;

                if ((except && strcmp(names->pdata[i], except) == 0) || isnan(pct))
                        continue;
                if (!busiest || pct > *ret_pct) {
                        busiest = names->pdata[i];
                        *ret_pct = pct;
                }
        }
        return busiest;
}

static double host_available_bytes(VmmsHealth *h)
{
        return h->host.n ? h->host.ring.host[ring_at(&h->host, 0)].available_bytes : 0;
}

static char *advice_memory_for_vm(VmmsHealth *h, const char *vm, const VmmsHealthVmSample *x, uint64_t relief)
{
        g_autofree char *relief_text = vmms_format_bytes(relief);
        g_autofree char *want_text = vmms_format_bytes(x->assigned_bytes + relief);
        g_autofree char *max_text = vmms_format_bytes(x->maximum_bytes);
        const char *other;
        uint64_t other_bytes;
        g_autofree char *other_text = NULL;

        if (x->assigned_bytes + relief > x->maximum_bytes)
                return g_strdup_printf(
                        "give '%s' %s more memory: raise its Maximum Memory from %s to at least "
                        "%s (Set-VMMemory %s -MaximumBytes)",
                        vm, relief_text, max_text, want_text, vm);
        if (host_available_bytes(h) >= (double)relief)
                return g_strdup_printf("give '%s' %s more memory (%s in all); the host has it available: "
                                       "raise its Memory Priority or Buffer",
                                       vm, relief_text, want_text);
        other = vm_to_move(h, relief, vm, &other_bytes);
        if (!other)
                return g_strdup_printf("give '%s' %s more memory (%s in all): move it to a host with that "
                                       "much free",
                                       vm, relief_text, want_text);
        other_text = vmms_format_bytes(other_bytes);
        if (other_bytes < relief)
                return g_strdup_printf("give '%s' %s more memory (%s in all): move '%s' to a host with %s "
                                       "free (moving '%s', %s assigned, frees only part of it)",
                                       vm, relief_text, want_text, vm, want_text, other, other_text);
        return g_strdup_printf("give '%s' %s more memory (%s in all): move '%s' (%s assigned) to another "
                               "host, or move '%s' to a host with %s free",
                               vm, relief_text, want_text, other, other_text, vm, want_text);
}

/* What it got and waited against its reservation, and who to move. */
static char *advice_reserve(VmmsHealth *h, const char *vm, const HealthSubject *s)
{
        double run = NAN, wait = NAN, pct;
        const char *busiest = vm_busiest(h, vm, &pct);
        g_autofree char *got = NULL;

        vm_reserve_shortfall(s, &run, &wait);
        got = g_strdup_printf("'%s' got %.0f %% of one logical processor against a Reserve of %.0f %% while "
                              "its processors waited %.0f %%",
                              vm, run, latest_vm(s)->cpu_reserve_pct, wait);
        if (busiest)
                return g_strdup_printf("%s: move '%s' (%.0f %% of one logical processor) to another host, or "
                                       "lower '%s''s Reserve (Set-VMProcessor -Reserve)",
                                       got, busiest, pct, vm);
        return g_strdup_printf(
                "%s: processes outside vmms take it; move '%s' to a less busy host, or lower its "
                "Reserve (Set-VMProcessor -Reserve)",
                got, vm);
}

static VmmsHealthFinding *finding_new(VmmsHealthRule rule, const char *vm, double value, unsigned run)
{
        const VmmsHealthRuleInfo *info = &vmms_health_rules[rule];
        VmmsHealthFinding *f = g_new0(VmmsHealthFinding, 1);

        f->rule = rule;
        f->vm = g_strdup(vm);
        /* The counter paths name the VM by a %s; host paths have none. */
        f->counter = vm ? g_strdup_printf(info->counter, vm) : g_strdup(info->counter);
        f->value = value;
        f->threshold = info->threshold;
        f->window_s = info->window_s;
        f->for_s = info->sustained ? run : run + info->window_s - 1;
        return f;
}

/* The least extreme figure of a sustained host rule's window: what was past the
 * threshold every second. */
static double host_window_value(const HealthSubject *s, VmmsHealthRule rule)
{
        unsigned window = MIN(vmms_health_rules[rule].window_s, s->n);
        double v = NAN;

        for (unsigned i = 0; i < window; i++) {
                double x = host_figure(&s->ring.host[ring_at(s, i)], rule);

                if (isnan(v) || (rule == VMMS_HEALTH_HOST_AVAILABLE_MEMORY ? x > v : x < v))
                        v = x;
        }
        return v;
}

static void host_findings(VmmsHealth *h, GPtrArray *out)
{
        const HealthSubject *s = &h->host;
        const VmmsHealthHostSample *x = s->n ? &s->ring.host[ring_at(s, 0)] : NULL;
        g_autoptr(GPtrArray) names = sorted_names(h);
        uint64_t shortfall = 0;

        for (guint i = 0; i < names->len; i++) {
                const VmmsHealthVmSample *v = latest_vm(g_hash_table_lookup(h->vms, names->pdata[i]));

                if (v->average_pressure >= vmms_health_rules[VMMS_HEALTH_VM_PRESSURE].threshold &&
                    vm_pressure_is_shortage(h, g_hash_table_lookup(h->vms, names->pdata[i])))
                        shortfall += vm_relief_bytes(v);
        }
        for (VmmsHealthRule r = VMMS_HEALTH_HOST_AVAILABLE_MEMORY; x && r <= VMMS_HEALTH_HOST_LP_BUSY; r++) {
                VmmsHealthFinding *f;

                if (!(s->firing & (1u << r)))
                        continue;
                f = finding_new(r, NULL, host_window_value(s, r), s->run[r]);
                if (r == VMMS_HEALTH_HOST_AVAILABLE_MEMORY) {
                        /* Shown in the counter's unit: MB, against 5 % of the pool. */
                        f->value = floor(f->value * x->pool_bytes / 100 / (1 << 20));
                        f->threshold = floor(f->threshold * x->pool_bytes / 100 / (1 << 20));
                }
                if (r == VMMS_HEALTH_HOST_LP_BUSY) {
                        double pct;
                        const char *busiest = vm_busiest(h, NULL, &pct);

                        f->advice =
                                busiest ? g_strdup_printf("move '%s' (%.0f %% of one logical processor) to "
                                                          "another host, or cap it with Set-VMProcessor "
                                                          "-Maximum",
                                                          busiest, pct)
                                        : g_strdup("add logical processors or move VMs to another host");
                } else if (shortfall > 0) {
                        uint64_t assigned;
                        const char *move = vm_to_move(h, shortfall, NULL, &assigned);
                        g_autofree char *need = vmms_format_bytes(shortfall);
                        g_autofree char *frees = vmms_format_bytes(assigned);

                        f->relief_bytes = shortfall;
                        f->advice = g_strdup_printf("the VMs under pressure need %s more: move '%s' (%s "
                                                    "assigned) to another host",
                                                    need, move, frees);
                } else {
                        f->advice = g_strdup("no VM is under pressure yet: start no more VMs on this host");
                }
                g_ptr_array_add(out, f);
        }
}

static void vm_findings(VmmsHealth *h, const char *name, GPtrArray *out)
{
        const HealthSubject *s = g_hash_table_lookup(h->vms, name);
        const VmmsHealthVmSample *x = latest_vm(s);

        for (VmmsHealthRule r = VMMS_HEALTH_VM_PRESSURE; r <= VMMS_HEALTH_VM_CPU_RESERVE; r++) {
                VmmsHealthFinding *f;
                double value = NAN;

                if (!(s->firing & (1u << r)))
                        continue;
                if (r == VMMS_HEALTH_VM_PRESSURE) {
                        for (unsigned i = 0; i < MIN(s->n, vmms_health_rules[r].window_s); i++)
                                value = isnan(value) ? s->ring.vm[ring_at(s, i)].average_pressure
                                                     : MIN(value, s->ring.vm[ring_at(s, i)].average_pressure);
                } else {
                        value = vm_figure(s, r);
                }
                f = finding_new(r, name, value, s->run[r]);
                if (r == VMMS_HEALTH_VM_PRESSURE && x && x->static_memory) {
                        g_free(f->counter);
                        f->counter =
                                g_strdup_printf("\\Hyper-V Dynamic Memory VM(%s)\\Current Pressure", name);
                }
                if (r == VMMS_HEALTH_VM_CPU_WAIT) {
                        double pct;
                        const char *busiest = vm_busiest(h, name, &pct);

                        f->advice =
                                busiest ? g_strdup_printf("move '%s' (%.0f %% of one logical processor) to "
                                                          "another host, or raise '%s''s Set-VMProcessor "
                                                          "-RelativeWeight or -Reserve",
                                                          busiest, pct, name)
                                        : g_strdup_printf("give '%s' fewer virtual processors or a host with "
                                                          "more logical processors",
                                                          name);
                } else if (r == VMMS_HEALTH_VM_CPU_RESERVE) {
                        f->advice = advice_reserve(h, name, s);
                } else {
                        f->relief_bytes = vm_relief_bytes(x);
                        if (f->relief_bytes == 0) /* paging within its own limit: an eighth more */
                                f->relief_bytes = ((x->assigned_bytes / 8 + (1 << 20) - 1) >> 20) << 20;
                        f->advice = advice_memory_for_vm(h, name, x, f->relief_bytes);
                }
                g_ptr_array_add(out, f);
        }
}

GPtrArray *vmms_health_findings(VmmsHealth *h)
{
        GPtrArray *out = g_ptr_array_new_with_free_func(finding_free);
        g_autoptr(GPtrArray) names = sorted_names(h);

        host_findings(h, out);
        for (guint i = 0; i < names->len; i++)
                vm_findings(h, names->pdata[i], out);
        return out;
}

static char *duration(unsigned s)
{
        if (s < 120)
                return g_strdup_printf("%u s", s);
        return g_strdup_printf("%u min", s / 60);
}

char *vmms_health_vm_status(VmmsHealth *h, const char *vm)
{
        const HealthSubject *s = g_hash_table_lookup(h->vms, vm);
        GString *status = g_string_new(NULL);

        for (VmmsHealthRule r = VMMS_HEALTH_VM_PRESSURE; s && r <= VMMS_HEALTH_VM_CPU_RESERVE; r++) {
                if (!(s->firing & (1u << r)))
                        continue;
                g_string_append_printf(status, "%s%s", status->len ? ", " : "", vmms_health_rules[r].status);
                if (r == VMMS_HEALTH_VM_PRESSURE) {
                        g_autofree char *held = duration(s->run[r]);

                        g_string_append_printf(status, " for %s", held);
                }
        }
        if (!status->len)
                g_string_append(status, "Operating normally");
        return g_string_free(status, FALSE);
}

char *vmms_health_host_status(VmmsHealth *h)
{
        static const char *const signs[] = {
                [VMMS_HEALTH_HOST_AVAILABLE_MEMORY] = "memory short",
                [VMMS_HEALTH_HOST_AVERAGE_PRESSURE] = "memory pressure high",
                [VMMS_HEALTH_HOST_LP_BUSY] = "logical processors busy",
        };
        GString *status = g_string_new(NULL);

        for (VmmsHealthRule r = VMMS_HEALTH_HOST_AVAILABLE_MEMORY; r <= VMMS_HEALTH_HOST_LP_BUSY; r++)
                if (h->host.firing & (1u << r))
                        g_string_append_printf(status, "%s%s", status->len ? ", " : "", signs[r]);
        if (!status->len)
                g_string_append(status, "healthy");
        return g_string_free(status, FALSE);
}
