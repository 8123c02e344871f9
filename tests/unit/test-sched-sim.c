/* The share policy on a simulated clock and simulated LPs: a small event-driven
 * mechanism that calls the policy's ops exactly as hv-sched.c does (kick an idle LP on
 * wake, else preempt the LP the policy names; put after every run; retry a held-back
 * LP at the time the policy gives), so minutes of scheduling run in milliseconds and
 * shares are measured exactly. Engine stop latency can be simulated: every slice then
 * overruns by up to HV_SCHED_CAP_GUARD_NS, as Unicorn's does by a block. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "hv-sched-share.h"
#include "hv-sched.h"

#define MS (1000000ull)
#define SEC (1000ull * MS)
#define SIM_MAX_VMS 8
#define SIM_MAX_EXPECT 8

typedef enum SimKind {
        SIM_CPU,      /* always runnable */
        SIM_PERIODIC, /* runs burst_ns of CPU, then idles sleep_ns (woken from Idle) */
        SIM_SPINNER, /* runs burst_ns, then long-spin-wait yields (spin_yields times, 0: forever), then CPU */
        SIM_IDLE,    /* never runnable after start */
} SimKind;

typedef struct SimVmSpec {
        const char *name;
        uint32_t vps;
        uint32_t reserve, maximum, weight; /* 0 = the defaults, as on the wire */
        SimKind kind;
        uint64_t burst_ns, sleep_ns;
        uint64_t hot_add_ns; /* > 0: one more VP is hot-added then */
        uint32_t spin_yields;
        bool concurrent; /* opted out of ganging: its VPs may run on several LPs at once */
} SimVmSpec;

typedef enum SimMetric {
        SIM_SHARE_OF_TOTAL,          /* the VM's run time / all VMs' run time, % */
        SIM_LP_PCT,                  /* the VM's run time per VP, % of one LP */
        SIM_MAX_WINDOW_PCT,          /* the most any VP of the VM ran in any 100 ms window, % */
        SIM_MIN_WINDOW_PCT,          /* the least any VP of the VM ran in an aligned 1 s window, % */
        SIM_PREFERRED_LP_PCT,        /* dispatches on the LP the VP last ran on, % */
        SIM_HOME_NODE_PCT,           /* dispatches on the VP's home node, % */
        SIM_WAKE_WAIT_US,            /* mean wake-from-Idle to dispatch, us */
        SIM_LP_BUSY_PCT,             /* all LPs' run time / capacity, % (vm unused) */
        SIM_FAIRNESS_ERROR,          /* max |VP run - mean| / mean over all VPs, % (vm unused) */
        SIM_REPORTED_CAP_WINDOW_PCT, /* the policy's own cap_window_max_ns counter, % of the window */
        SIM_MAX_PARALLEL,            /* the most VPs of the VM running at one instant */
} SimMetric;

typedef struct SimExpect {
        const char *vm;
        SimMetric metric;
        double min, max;
} SimExpect;

typedef struct SimCase {
        const char *name;
        uint32_t n_lps, n_nodes;
        uint64_t duration_ns;
        uint64_t measure_from_ns; /* metrics cover [measure_from, duration) */
        bool io_boost;
        bool overshoot;    /* slices overrun by up to the cap guard, like the engine */
        uint32_t many_vps; /* > 0: that many single-VP CPU VMs instead of vms[] */
        SimVmSpec vms[SIM_MAX_VMS];
        /* At change_ns, the VM change_vm gets new settings (Set-VMProcessor). */
        uint64_t change_ns;
        const char *change_vm;
        HvProcessorSettings change_to;
        SimExpect expect[SIM_MAX_EXPECT];
} SimCase;

typedef struct SimRun {
        uint64_t start_ns, end_ns;
} SimRun;

typedef struct SimVp {
        HvVp vp;
        const SimVmSpec *spec;
        uint32_t vm;
        bool started, sleeping, runnable;
        uint64_t start_at, wake_at;
        uint64_t burst_left;
        GArray *runs; /* SimRun, clipped to the measurement later */
        uint64_t wake_waits, wake_wait_ns;
        uint32_t yields;
} SimVp;

typedef struct SimLp {
        SimVp *cur;
        uint64_t run_start, run_end;
        bool ends_by_burst;
        bool kicked;
        uint64_t retry_at;
} SimLp;

typedef struct Sim {
        const SimCase *tc;
        const HvSchedOps *ops;
        void *policy;
        bool in_op;
        uint64_t now;
        uint32_t rng;
        uint32_t n_lps, n_nodes, n_vms, n_vps;
        HvLp *lps;
        SimLp *slp;
        HvPartition *parts;
        SimVmSpec *specs;
        SimVp **vps;
        uint32_t *node_lps, *node_vps;
        bool changed;
} Sim;

static void sim_assert_locked(void *ctx)
{
        g_assert_true(((Sim *)ctx)->in_op);
}

/* The engine overruns a slice by whatever is left of the block it is in. */
static uint64_t sim_overshoot(Sim *sim)
{
        if (!sim->tc->overshoot)
                return 0;
        sim->rng = sim->rng * 1103515245u + 12345u;
        return (sim->rng >> 8) % HV_SCHED_CAP_GUARD_NS;
}

static HvLp *sim_find_idle_lp(Sim *sim, HvVp *vp)
{
        HvLp *any = NULL;

        if (vp->last_lp && vp->last_lp->idle)
                return vp->last_lp;
        for (uint32_t i = 0; i < sim->n_lps; i++) {
                if (!sim->lps[i].idle)
                        continue;
                if (sim->lps[i].node == vp->home_node)
                        return &sim->lps[i];
                if (!any)
                        any = &sim->lps[i];
        }
        return any;
}

static void sim_preempt(Sim *sim, HvLp *lp)
{
        SimLp *s = &sim->slp[lp->index];
        uint64_t end = sim->now + sim_overshoot(sim);

        if (s->cur && end < s->run_end) {
                s->run_end = end;
                s->ends_by_burst = false;
        }
}

/* As vp_make_runnable in hv-sched.c. */
static void sim_wake(Sim *sim, SimVp *sv, bool from_idle)
{
        HvLp *preempt_lp, *idle_lp;

        sv->runnable = true;
        sv->sleeping = false;
        sv->vp.runnable_since_ns = sim->now;
        sv->vp.woke_from_idle = from_idle;
        sim->in_op = true;
        preempt_lp = sim->ops->vp_wake(sim->policy, &sv->vp, sim->now, from_idle);
        sim->in_op = false;
        idle_lp = hv_sched_vp_gang_blocked(&sv->vp) ? NULL : sim_find_idle_lp(sim, &sv->vp);
        if (idle_lp) {
                idle_lp->idle = false;
                sim->slp[idle_lp->index].kicked = true;
        } else if (preempt_lp) {
                sim_preempt(sim, preempt_lp);
        }
}

static bool sim_spinning(const SimVp *sv)
{
        return sv->spec->spin_yields == 0 || sv->yields < sv->spec->spin_yields;
}

static void sim_pick(Sim *sim, HvLp *lp)
{
        SimLp *s = &sim->slp[lp->index];
        uint64_t slice = 10 * MS, retry = UINT64_MAX, slice_end; /* the default slice, as in hvd */
        HvVp *vp;
        SimVp *sv;

        sim->in_op = true;
        vp = sim->ops->pick_next(sim->policy, lp, sim->now, &slice, &retry);
        sim->in_op = false;
        s->kicked = false;
        if (!vp) {
                lp->idle = true;
                s->retry_at = retry;
                return;
        }
        sv = (SimVp *)vp;
        g_assert_true(sv->runnable);
        g_assert_false(hv_sched_vp_gang_blocked(vp));
        vp->partition->running_vps++;
        g_assert_cmpuint(slice, >, 0);
        lp->idle = false;
        s->retry_at = UINT64_MAX;
        /* Dispatch bookkeeping, as lp_dispatch. */
        vp->counters.dispatches++;
        if (vp->woke_from_idle) {
                vp->woke_from_idle = false;
                sv->wake_waits++;
                sv->wake_wait_ns += sim->now - vp->runnable_since_ns;
        }
        if (vp->last_lp == lp)
                vp->counters.preferred_lp_dispatches++;
        if (lp->node == vp->home_node)
                vp->counters.home_node_dispatches++;
        vp->last_lp = lp;
        lp->current = vp;
        s->cur = sv;
        s->run_start = sim->now;
        slice_end = sim->now + slice + sim_overshoot(sim);
        s->ends_by_burst =
                sv->spec->kind == SIM_PERIODIC || (sv->spec->kind == SIM_SPINNER && sim_spinning(sv))
                        ? sim->now + sv->burst_left <= slice_end
                        : false;
        s->run_end = s->ends_by_burst ? sim->now + sv->burst_left : slice_end;
}

/* As gang_kick in hv-sched.c: a waiting sibling gets an idle LP once its gang leaves. */
static void sim_gang_kick(Sim *sim, HvPartition *p)
{
        if (!p->ganged || p->running_vps > 0)
                return;
        for (uint32_t i = 0; i < p->vp_count; i++) {
                SimVp *sibling = (SimVp *)p->vps[i];
                HvLp *idle_lp;

                if (!sibling || !sibling->runnable)
                        continue;
                idle_lp = sim_find_idle_lp(sim, &sibling->vp);
                if (idle_lp) {
                        idle_lp->idle = false;
                        sim->slp[idle_lp->index].kicked = true;
                }
                return;
        }
}

static void sim_end_run(Sim *sim, HvLp *lp)
{
        SimLp *s = &sim->slp[lp->index];
        SimVp *sv = s->cur;
        uint64_t ran = sim->now - s->run_start;
        HvSchedPutReason reason = HV_SCHED_PUT_PREEMPTED;
        SimRun run = {s->run_start, sim->now};

        g_array_append_val(sv->runs, run);
        sv->vp.counters.run_ns += ran;
        if (s->ends_by_burst) {
                sv->burst_left = sv->spec->burst_ns;
                if (sv->spec->kind == SIM_PERIODIC) {
                        reason = HV_SCHED_PUT_BLOCKED;
                        sv->runnable = false;
                        sv->sleeping = true;
                        sv->wake_at = sim->now + sv->spec->sleep_ns;
                } else {
                        reason = HV_SCHED_PUT_YIELDED;
                        sv->yields++;
                }
        } else if (sv->spec->kind == SIM_PERIODIC || sv->spec->kind == SIM_SPINNER) {
                sv->burst_left -= MIN(ran, sv->burst_left);
        }
        if (reason != HV_SCHED_PUT_BLOCKED)
                sv->vp.runnable_since_ns = sim->now;
        lp->current = NULL;
        s->cur = NULL;
        sv->vp.partition->running_vps--;
        sim->in_op = true;
        sim->ops->vp_put(sim->policy, &sv->vp, lp, ran, sim->now, reason);
        sim->in_op = false;
        s->kicked = true; /* the LP loop picks again at once */
        sim_gang_kick(sim, sv->vp.partition);
}

static void sim_apply_change(Sim *sim)
{
        for (uint32_t m = 0; m < sim->n_vms; m++) {
                HvPartition *p = &sim->parts[m];

                if (strcmp(sim->specs[m].name, sim->tc->change_vm) != 0)
                        continue;
                p->processor = sim->tc->change_to;
                sim->in_op = true;
                sim->ops->partition_changed(sim->policy, p, sim->now);
                sim->in_op = false;
                for (uint32_t i = 0; i < sim->n_lps; i++)
                        if (sim->slp[i].cur && sim->slp[i].cur->vp.partition == p)
                                sim_preempt(sim, &sim->lps[i]);
        }
        sim->changed = true;
}

/* Processes everything due at sim->now; returns whether anything happened. */
static bool sim_step(Sim *sim)
{
        bool acted = false;

        for (uint32_t i = 0; i < sim->n_lps; i++)
                if (sim->slp[i].cur && sim->slp[i].run_end <= sim->now) {
                        sim_end_run(sim, &sim->lps[i]);
                        acted = true;
                }
        if (sim->tc->change_vm && !sim->changed && sim->now >= sim->tc->change_ns) {
                sim_apply_change(sim);
                acted = true;
        }
        for (uint32_t v = 0; v < sim->n_vps; v++) {
                SimVp *sv = sim->vps[v];

                if (!sv->started && sv->start_at <= sim->now) {
                        sv->started = true;
                        if (sv->spec->kind != SIM_IDLE)
                                sim_wake(sim, sv, false);
                        acted = true;
                } else if (sv->sleeping && sv->wake_at <= sim->now) {
                        sim_wake(sim, sv, true);
                        acted = true;
                }
        }
        for (uint32_t i = 0; i < sim->n_lps; i++) {
                SimLp *s = &sim->slp[i];

                if (!s->cur && (s->kicked || s->retry_at <= sim->now)) {
                        sim_pick(sim, &sim->lps[i]);
                        acted = true;
                }
        }
        return acted;
}

static uint64_t sim_next_event(Sim *sim)
{
        uint64_t next = sim->tc->duration_ns;

        for (uint32_t i = 0; i < sim->n_lps; i++) {
                const SimLp *s = &sim->slp[i];

                next = MIN(next, s->cur ? s->run_end : s->retry_at);
        }
        for (uint32_t v = 0; v < sim->n_vps; v++) {
                const SimVp *sv = sim->vps[v];

                if (!sv->started)
                        next = MIN(next, sv->start_at);
                else if (sv->sleeping)
                        next = MIN(next, sv->wake_at);
        }
        if (sim->tc->change_vm && !sim->changed)
                next = MIN(next, sim->tc->change_ns);
        return MAX(next, sim->now);
}

static SimVp *sim_vp_new(Sim *sim, uint32_t m, uint32_t index, uint64_t start_at)
{
        SimVp *sv = g_new0(SimVp, 1);
        HvPartition *p = &sim->parts[m];

        sv->spec = &sim->specs[m];
        sv->vm = m;
        sv->vp.partition = p;
        sv->vp.index = index;
        sv->start_at = start_at;
        sv->burst_left = sv->spec->burst_ns;
        sv->runs = g_array_new(FALSE, FALSE, sizeof(SimRun));
        p->vps[index] = &sv->vp;
        p->vp_count = MAX(p->vp_count, index + 1);
        /* Placement as hv_sched_vp_add. */
        if (p->home_node >= 0 && (p->ganged || index + 1 <= sim->node_lps[p->home_node]))
                sv->vp.home_node = (uint32_t)p->home_node;
        else
                sv->vp.home_node = (uint32_t)hv_sched_place(sim->node_lps, sim->node_vps, sim->n_nodes, 0);
        sim->node_vps[sv->vp.home_node]++;
        sim->in_op = true;
        g_assert_cmpint(sim->ops->vp_add(sim->policy, &sv->vp), ==, 0);
        sim->in_op = false;
        return sv;
}

static void sim_setup(Sim *sim, const SimCase *tc)
{
        HvSchedPolicyConfig config;
        GPtrArray *vps = g_ptr_array_new();

        memset(sim, 0, sizeof(*sim));
        sim->tc = tc;
        sim->ops = &hv_sched_share_ops;
        sim->rng = 12345;
        sim->n_lps = tc->n_lps;
        sim->n_nodes = MAX(tc->n_nodes, 1u);
        sim->lps = g_new0(HvLp, sim->n_lps);
        sim->slp = g_new0(SimLp, sim->n_lps);
        sim->node_lps = g_new0(uint32_t, sim->n_nodes);
        sim->node_vps = g_new0(uint32_t, sim->n_nodes);
        for (uint32_t i = 0; i < sim->n_lps; i++) {
                sim->lps[i].index = i;
                sim->lps[i].node = (uint32_t)((uint64_t)i * sim->n_nodes / sim->n_lps);
                sim->node_lps[sim->lps[i].node]++;
                sim->slp[i].kicked = true;
                sim->slp[i].retry_at = UINT64_MAX;
        }
        config = (HvSchedPolicyConfig){
                .lps = sim->lps,
                .n_lps = sim->n_lps,
                .n_nodes = sim->n_nodes,
                .slice_ns = 10 * MS,
                .io_boost = tc->io_boost,
                .assert_locked = sim_assert_locked,
                .lock_ctx = sim,
        };
        g_assert_cmpint(sim->ops->init(&config, &sim->policy), ==, 0);

        sim->n_vms = 0;
        while (sim->n_vms < SIM_MAX_VMS && tc->vms[sim->n_vms].name)
                sim->n_vms++;
        if (tc->many_vps)
                sim->n_vms = tc->many_vps;
        sim->specs = g_new0(SimVmSpec, sim->n_vms);
        sim->parts = g_new0(HvPartition, sim->n_vms);
        for (uint32_t m = 0; m < sim->n_vms; m++) {
                HvPartition *p = &sim->parts[m];
                g_autofree char *error = NULL;

                sim->specs[m] =
                        tc->many_vps ? (SimVmSpec){.name = "many", .vps = 1, .kind = SIM_CPU} : tc->vms[m];
                p->id = m + 1;
                p->max_vp_count = sim->specs[m].vps + (sim->specs[m].hot_add_ns ? 1 : 0);
                p->vps = g_new0(HvVp *, p->max_vp_count);
                g_assert_cmpint(hv_processor_settings_from_wire(sim->specs[m].reserve, sim->specs[m].maximum,
                                                                sim->specs[m].weight, &p->processor, &error),
                                ==, 0);
                p->ganged = !sim->specs[m].concurrent;
                p->home_node = hv_sched_place(sim->node_lps, sim->node_vps, sim->n_nodes,
                                              p->ganged ? 1 : sim->specs[m].vps);
                for (uint32_t v = 0; v < sim->specs[m].vps; v++)
                        g_ptr_array_add(vps, sim_vp_new(sim, m, v, 0));
                if (sim->specs[m].hot_add_ns)
                        g_ptr_array_add(vps, sim_vp_new(sim, m, sim->specs[m].vps, sim->specs[m].hot_add_ns));
        }
        sim->n_vps = vps->len;
        sim->vps = (SimVp **)g_ptr_array_free(vps, FALSE);
}

static void sim_run(Sim *sim)
{
        uint64_t steps = 0;

        while (sim->now < sim->tc->duration_ns) {
                while (sim_step(sim))
                        g_assert_cmpuint(++steps, <, 100000000);
                sim->now = sim_next_event(sim);
        }
        /* End the runs in progress so they count. */
        for (uint32_t i = 0; i < sim->n_lps; i++)
                if (sim->slp[i].cur) {
                        sim->slp[i].ends_by_burst = false;
                        sim_end_run(sim, &sim->lps[i]);
                }
}

static void sim_free(Sim *sim)
{
        sim->in_op = true;
        for (uint32_t v = 0; v < sim->n_vps; v++) {
                sim->ops->vp_remove(sim->policy, &sim->vps[v]->vp);
                g_array_unref(sim->vps[v]->runs);
                g_free(sim->vps[v]);
        }
        sim->ops->free(sim->policy);
        for (uint32_t m = 0; m < sim->n_vms; m++)
                g_free(sim->parts[m].vps);
        g_free(sim->parts);
        g_free(sim->specs);
        g_free(sim->vps);
        g_free(sim->lps);
        g_free(sim->slp);
        g_free(sim->node_lps);
        g_free(sim->node_vps);
}

/* ---- measuring ---- */

static uint64_t runs_between(const SimVp *sv, uint64_t from, uint64_t to)
{
        uint64_t sum = 0;

        for (guint k = 0; k < sv->runs->len; k++) {
                const SimRun *r = &g_array_index(sv->runs, SimRun, k);
                uint64_t a = MAX(r->start_ns, from), b = MIN(r->end_ns, to);

                if (b > a)
                        sum += b - a;
        }
        return sum;
}

/* The most the VP ran in any window of length w inside [from, to): a window's run is
 * largest with its end at a run's end or its start at a run's start. */
static uint64_t max_window_run(const SimVp *sv, uint64_t w, uint64_t from, uint64_t to)
{
        uint64_t best = 0;

        for (guint k = 0; k < sv->runs->len; k++) {
                const SimRun *r = &g_array_index(sv->runs, SimRun, k);

                if (r->end_ns >= from + w && r->end_ns <= to)
                        best = MAX(best, runs_between(sv, r->end_ns - w, r->end_ns));
                if (r->start_ns >= from && r->start_ns + w <= to)
                        best = MAX(best, runs_between(sv, r->start_ns, r->start_ns + w));
        }
        return best;
}

static int compare_edges(const void *a, const void *b)
{
        const int64_t *x = a, *y = b;

        /* By time; at one instant an end (-1) before a start (+1). */
        return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (int)(x[1] - y[1]);
}

/* The most VPs of VM `vm` running at one instant. */
static double max_parallel(Sim *sim, const char *vm)
{
        g_autoptr(GArray) edges = g_array_new(FALSE, FALSE, 2 * sizeof(int64_t));
        int64_t now = 0, best = 0;

        for (uint32_t v = 0; v < sim->n_vps; v++) {
                SimVp *sv = sim->vps[v];

                if (strcmp(sv->spec->name, vm) != 0)
                        continue;
                for (guint k = 0; k < sv->runs->len; k++) {
                        const SimRun *r = &g_array_index(sv->runs, SimRun, k);
                        int64_t start[2] = {(int64_t)r->start_ns, 1}, end[2] = {(int64_t)r->end_ns, -1};

                        if (r->end_ns > r->start_ns) {
                                g_array_append_val(edges, start);
                                g_array_append_val(edges, end);
                        }
                }
        }
        g_array_sort(edges, compare_edges);
        for (guint k = 0; k < edges->len; k++) {
                now += ((int64_t *)(void *)edges->data)[2 * k + 1];
                best = MAX(best, now);
        }
        return (double)best;
}

static double sim_measure(Sim *sim, const SimExpect *e)
{
        uint64_t from = sim->tc->measure_from_ns, to = sim->tc->duration_ns, span = to - from;
        double total = 0, mine = 0, count = 0, value = e->metric == SIM_MIN_WINDOW_PCT ? INFINITY : 0;
        uint64_t dispatches = 0, hits = 0, waits = 0, wait_ns = 0;

        for (uint32_t v = 0; v < sim->n_vps; v++)
                total += (double)runs_between(sim->vps[v], from, to);
        if (e->metric == SIM_LP_BUSY_PCT)
                return 100.0 * total / ((double)span * sim->n_lps);
        if (e->metric == SIM_MAX_PARALLEL)
                return max_parallel(sim, e->vm);
        if (e->metric == SIM_FAIRNESS_ERROR) {
                double mean = total / sim->n_vps, worst = 0;

                for (uint32_t v = 0; v < sim->n_vps; v++)
                        worst = MAX(worst, fabs((double)runs_between(sim->vps[v], from, to) - mean));
                return 100.0 * worst / mean;
        }
        for (uint32_t v = 0; v < sim->n_vps; v++) {
                SimVp *sv = sim->vps[v];

                if (strcmp(sv->spec->name, e->vm) != 0)
                        continue;
                count++;
                mine += (double)runs_between(sv, from, to);
                dispatches += sv->vp.counters.dispatches;
                waits += sv->wake_waits;
                wait_ns += sv->wake_wait_ns;
                if (e->metric == SIM_PREFERRED_LP_PCT)
                        hits += sv->vp.counters.preferred_lp_dispatches;
                if (e->metric == SIM_HOME_NODE_PCT)
                        hits += sv->vp.counters.home_node_dispatches;
                if (e->metric == SIM_MAX_WINDOW_PCT)
                        value = MAX(value,
                                    100.0 * (double)max_window_run(sv, HV_SCHED_CAP_WINDOW_NS, from, to) /
                                            HV_SCHED_CAP_WINDOW_NS);
                if (e->metric == SIM_REPORTED_CAP_WINDOW_PCT) {
                        HvSchedVpStats stats = {0};

                        sim->in_op = true;
                        sim->ops->vp_stats(sim->policy, &sv->vp, to, &stats);
                        sim->in_op = false;
                        value = MAX(value, 100.0 * (double)stats.cap_window_max_ns / HV_SCHED_CAP_WINDOW_NS);
                }
                if (e->metric == SIM_MIN_WINDOW_PCT)
                        for (uint64_t t = from; t + SEC <= to; t += SEC)
                                value = MIN(value, 100.0 * (double)runs_between(sv, t, t + SEC) / SEC);
        }
        g_assert_cmpfloat(count, >, 0); /* the expectation names a VM of the case */
        switch (e->metric) {
        case SIM_SHARE_OF_TOTAL:
                return 100.0 * mine / total;
        case SIM_LP_PCT:
                return 100.0 * mine / count / (double)span;
        case SIM_PREFERRED_LP_PCT:
        case SIM_HOME_NODE_PCT:
                return dispatches ? 100.0 * (double)hits / (double)dispatches : 0;
        case SIM_WAKE_WAIT_US:
                return waits ? (double)wait_ns / (double)waits / 1000.0 : 0;
        default:
                return value;
        }
}

static const char *const metric_names[] = {
        [SIM_SHARE_OF_TOTAL] = "share of all LP time %",
        [SIM_LP_PCT] = "% of one LP per VP",
        [SIM_MAX_WINDOW_PCT] = "max % in any 100 ms window",
        [SIM_MIN_WINDOW_PCT] = "min % in an aligned 1 s window",
        [SIM_PREFERRED_LP_PCT] = "dispatches on the preferred LP %",
        [SIM_HOME_NODE_PCT] = "dispatches on the home node %",
        [SIM_WAKE_WAIT_US] = "mean wake-to-dispatch us",
        [SIM_LP_BUSY_PCT] = "LP busy %",
        [SIM_FAIRNESS_ERROR] = "fairness error %",
        [SIM_REPORTED_CAP_WINDOW_PCT] = "max % in a 100 ms window, as hvd reports it",
        [SIM_MAX_PARALLEL] = "most VPs running at one instant",
};

/* ---- cases ---- */

#define CPU(n, vps_, w)                                                                                      \
        {                                                                                                    \
                .name = n, .vps = vps_, .weight = w, .kind = SIM_CPU                                         \
        }

static const SimCase cases[] = {
        {
                .name = "seed_production_weight_200_gets_80_percent_and_test_weight_50_gets_20",
                .n_lps = 2,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("prod", 2, 200), CPU("prod", 2, 200), CPU("test", 2, 50), CPU("test", 2, 50)},
                .expect = {{"prod", SIM_SHARE_OF_TOTAL, 79, 81},
                           {"test", SIM_SHARE_OF_TOTAL, 19, 21},
                           {"prod", SIM_LP_PCT, 39.5, 40.5},
                           {"test", SIM_LP_PCT, 9.5, 10.5},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                .name = "seed_case_holds_with_engine_stop_latency",
                .n_lps = 2,
                .overshoot = true,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("prod", 2, 200), CPU("prod", 2, 200), CPU("test", 2, 50), CPU("test", 2, 50)},
                .expect = {{"prod", SIM_SHARE_OF_TOTAL, 79, 81}, {"test", SIM_SHARE_OF_TOTAL, 19, 21}},
        },
        {
                .name = "weights_100_150_250_share_20_30_50",
                .n_lps = 2,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("w100", 2, 100), CPU("w150", 2, 150), CPU("w250", 2, 250)},
                .expect = {{"w100", SIM_SHARE_OF_TOTAL, 19, 21},
                           {"w150", SIM_SHARE_OF_TOTAL, 29, 31},
                           {"w250", SIM_SHARE_OF_TOTAL, 49, 51}},
        },
        {
                .name = "default_settings_are_fair_round_robin",
                .n_lps = 2,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("a", 1, 0), CPU("b", 1, 0), CPU("c", 1, 0), CPU("d", 1, 0), CPU("e", 1, 0)},
                .expect = {{"a", SIM_LP_PCT, 39.5, 40.5},
                           {"e", SIM_LP_PCT, 39.5, 40.5},
                           {NULL, SIM_FAIRNESS_ERROR, 0, 1}},
        },
        {
                .name = "a_vp_never_gets_more_than_one_lp_whatever_its_weight",
                .n_lps = 2,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("heavy", 1, 10000), CPU("light", 4, 1)},
                .expect = {{"heavy", SIM_LP_PCT, 99, 100.01}, {"light", SIM_LP_PCT, 24.5, 25.5}},
        },
        {
                .name = "cap_30_is_never_exceeded_in_any_100ms_window",
                .n_lps = 1,
                .overshoot = true,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 0,
                .vms = {{.name = "capped", .vps = 1, .maximum = 30, .kind = SIM_CPU}, CPU("free", 1, 0)},
                .expect = {{"capped", SIM_MAX_WINDOW_PCT, 0, 30.0},
                           {"capped", SIM_REPORTED_CAP_WINDOW_PCT, 29.5, 30.0},
                           {"capped", SIM_LP_PCT, 29, 30},
                           {"free", SIM_LP_PCT, 69, 71.5}},
        },
        {
                .name = "capped_vp_alone_leaves_the_rest_of_its_lp_idle",
                .n_lps = 1,
                .overshoot = true,
                .duration_ns = 30 * SEC,
                .vms = {{.name = "capped", .vps = 2, .maximum = 30, .kind = SIM_CPU}},
                .expect = {{"capped", SIM_MAX_WINDOW_PCT, 0, 30.0},
                           {"capped", SIM_LP_PCT, 29, 30},
                           {NULL, SIM_LP_BUSY_PCT, 58, 60}},
        },
        {
                .name = "reservation_40_is_met_under_full_contention",
                .n_lps = 1,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "reserved", .vps = 1, .reserve = 40, .weight = 1, .kind = SIM_CPU},
                        CPU("heavy", 1, 10000),
                        CPU("other", 2, 100)},
                .expect = {{"reserved", SIM_LP_PCT, 39.9, 41},
                           {"reserved", SIM_MIN_WINDOW_PCT, 38, 100},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                .name = "reservation_is_a_floor_not_a_ceiling",
                .n_lps = 1,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "reserved", .vps = 1, .reserve = 20, .weight = 300, .kind = SIM_CPU},
                        CPU("other", 1, 100)},
                .expect = {{"reserved", SIM_LP_PCT, 74.5, 75.5}, {"other", SIM_LP_PCT, 24.5, 25.5}},
        },
        {
                /* The cap holds in every window, so the guard and the 1 ms minimum slice
                 * cost the floor about a point: reserve = maximum gets just under it. */
                .name = "reserve_equal_to_cap_pins_the_share_just_under_it",
                .n_lps = 1,
                .overshoot = true,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "pinned",
                         .vps = 1,
                         .reserve = 30,
                         .maximum = 30,
                         .weight = 1,
                         .kind = SIM_CPU},
                        CPU("heavy", 1, 10000)},
                .expect = {{"pinned", SIM_LP_PCT, 29, 30}, {"pinned", SIM_MAX_WINDOW_PCT, 0, 30}},
        },
        {
                .name = "idle_vm_with_a_reservation_lets_others_use_its_share",
                .n_lps = 1,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "idle", .vps = 1, .reserve = 50, .kind = SIM_IDLE},
                        CPU("b", 1, 0),
                        CPU("c", 1, 0)},
                .expect = {{"b", SIM_LP_PCT, 49.5, 50.5},
                           {"c", SIM_LP_PCT, 49.5, 50.5},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                .name = "mostly_idle_vm_takes_what_it_needs_and_cpu_vms_split_the_rest",
                .n_lps = 2,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "io",
                         .vps = 1,
                         .kind = SIM_PERIODIC,
                         .burst_ns = 1 * MS,
                         .sleep_ns = 9 * MS},
                        CPU("a", 1, 0),
                        CPU("b", 1, 0),
                        CPU("c", 1, 0)},
                /* io wants 1 ms in every 10 ms plus its wait for an LP, so ~9 %. */
                .expect = {{"io", SIM_LP_PCT, 8.5, 10.5},
                           {"a", SIM_LP_PCT, 63, 64.5},
                           {"c", SIM_LP_PCT, 63, 64.5},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                .name = "long_spin_wait_yields_the_rest_of_the_slice",
                .n_lps = 1,
                .duration_ns = 10 * SEC,
                .vms = {{.name = "spinner", .vps = 1, .kind = SIM_SPINNER, .burst_ns = 50000},
                        CPU("worker", 1, 0)},
                .expect = {{"spinner", SIM_LP_PCT, 0, 2}, {"worker", SIM_LP_PCT, 98, 100}},
        },
        {
                /* As a guest's secondary VP spinning at boot, then busy like the rest. */
                .name = "a_vp_that_yielded_is_not_starved_afterwards",
                .n_lps = 2,
                .duration_ns = 10 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "booting",
                         .vps = 1,
                         .kind = SIM_SPINNER,
                         .burst_ns = 50000,
                         .spin_yields = 1},
                        {.name = "busy", .vps = 3, .kind = SIM_CPU, .concurrent = true}},
                .expect = {{"booting", SIM_LP_PCT, 49.5, 50.5}, {"busy", SIM_LP_PCT, 49.5, 50.5}},
        },
        {
                .name = "weight_change_applies_within_one_period",
                .n_lps = 1,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 10 * SEC + 100 * MS,
                .vms = {CPU("a", 1, 100), CPU("b", 1, 100)},
                .change_ns = 10 * SEC,
                .change_vm = "a",
                .change_to = {.reserve_pct = 0, .maximum_pct = 100, .relative_weight = 300},
                .expect = {{"a", SIM_LP_PCT, 74.5, 75.5}, {"a", SIM_MIN_WINDOW_PCT, 72, 100}},
        },
        {
                .name = "cap_set_on_a_running_vm_holds_from_the_next_window",
                .n_lps = 1,
                .overshoot = true,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 10 * SEC + HV_SCHED_CAP_WINDOW_NS,
                .vms = {CPU("a", 1, 0), CPU("b", 1, 0)},
                .change_ns = 10 * SEC,
                .change_vm = "a",
                .change_to = {.reserve_pct = 0, .maximum_pct = 20, .relative_weight = 100},
                .expect = {{"a", SIM_MAX_WINDOW_PCT, 0, 20},
                           {"a", SIM_REPORTED_CAP_WINDOW_PCT, 19.5, 20},
                           {"b", SIM_LP_PCT, 79.5, 81}},
        },
        {
                .name = "hot_added_vp_gets_its_share",
                .n_lps = 2,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 6 * SEC,
                .vms = {{.name = "grows", .vps = 1, .weight = 100, .kind = SIM_CPU, .hot_add_ns = 5 * SEC},
                        CPU("other", 2, 100)},
                .expect = {{"grows", SIM_LP_PCT, 49.5, 50.5}, {"other", SIM_LP_PCT, 49.5, 50.5}},
        },
        {
                .name = "soft_affinity_keeps_each_vp_on_its_lp_when_they_fit",
                .n_lps = 2,
                .duration_ns = 10 * SEC,
                .vms = {CPU("a", 1, 0), CPU("b", 1, 0)},
                .expect = {{"a", SIM_PREFERRED_LP_PCT, 99, 100}, {"b", SIM_PREFERRED_LP_PCT, 99, 100}},
        },
        {
                .name = "numa_keeps_each_vm_on_its_home_node",
                .n_lps = 4,
                .n_nodes = 2,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("a", 2, 0), CPU("b", 2, 0), CPU("c", 2, 0), CPU("d", 2, 0)},
                .expect = {{"a", SIM_HOME_NODE_PCT, 100, 100},
                           {"d", SIM_HOME_NODE_PCT, 100, 100},
                           {"a", SIM_LP_PCT, 49.5, 50.5},
                           {"d", SIM_LP_PCT, 49.5, 50.5}},
        },
        {
                .name = "numa_idle_node_steals_work_from_a_busy_one",
                .n_lps = 4,
                .n_nodes = 2,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                /* a on node 0, idle on node 1, c on node 0 (both full; the first wins):
                 * node 1's LPs have nothing of their own and take node 0's third VP. */
                .vms = {{.name = "a", .vps = 2, .kind = SIM_CPU, .concurrent = true},
                        {.name = "idle", .vps = 2, .kind = SIM_IDLE, .concurrent = true},
                        CPU("c", 1, 0)},
                .expect = {{"a", SIM_LP_PCT, 99, 100.01},
                           {"c", SIM_LP_PCT, 99, 100.01},
                           {NULL, SIM_LP_BUSY_PCT, 74.9, 75.1}},
        },
        {
                .name = "without_boost_a_waking_vp_waits_for_a_slice_to_end",
                .n_lps = 2,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "io",
                         .vps = 1,
                         .kind = SIM_PERIODIC,
                         .burst_ns = 100000,
                         .sleep_ns = 5 * MS},
                        {.name = "cpu", .vps = 4, .kind = SIM_CPU, .concurrent = true}},
                .expect = {{"io", SIM_WAKE_WAIT_US, 1000, 20000}},
        },
        {
                .name = "io_wake_boost_runs_a_woken_vp_at_once",
                .n_lps = 2,
                .io_boost = true,
                .overshoot = true,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "io",
                         .vps = 1,
                         .kind = SIM_PERIODIC,
                         .burst_ns = 100000,
                         .sleep_ns = 5 * MS},
                        {.name = "cpu", .vps = 4, .kind = SIM_CPU, .concurrent = true}},
                .expect = {{"io", SIM_WAKE_WAIT_US, 0, 250}, {"cpu", SIM_LP_PCT, 47, 50}},
        },
        {
                .name = "ganged_vm_never_runs_two_vps_at_once",
                .n_lps = 2,
                .overshoot = true,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("g", 2, 0)},
                .expect = {{"g", SIM_MAX_PARALLEL, 1, 1},
                           {"g", SIM_LP_PCT, 49.5, 50.5},
                           {NULL, SIM_LP_BUSY_PCT, 49.9, 50.1}},
        },
        {
                .name = "concurrent_vm_runs_its_vps_on_two_lps",
                .n_lps = 2,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {{.name = "c", .vps = 2, .kind = SIM_CPU, .concurrent = true}},
                .expect = {{"c", SIM_MAX_PARALLEL, 2, 2}, {"c", SIM_LP_PCT, 99.5, 100.01}},
        },
        {
                /* Entities g (2 x 100, at most 1 LP), a, b share 2 LPs: g 1, a 0.5, b 0.5. */
                .name = "ganged_vm_beside_others_keeps_every_lp_busy",
                .n_lps = 2,
                .overshoot = true,
                .duration_ns = 30 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("g", 2, 0), CPU("a", 1, 0), CPU("b", 1, 0)},
                .expect = {{"g", SIM_MAX_PARALLEL, 1, 1},
                           {"g", SIM_LP_PCT, 49, 51},
                           {"a", SIM_LP_PCT, 49, 51},
                           {"b", SIM_LP_PCT, 49, 51},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                /* Ungang-ed, 100:150:250 of 3 LPs would be 0.6/0.9/1.5 LP; a gang takes at
                 * most one LP, so each of the three VMs gets exactly one. */
                .name = "ganged_vms_take_at_most_one_lp_each_whatever_their_weight",
                .n_lps = 3,
                .duration_ns = 20 * SEC,
                .measure_from_ns = 1 * SEC,
                .vms = {CPU("w100", 2, 100), CPU("w150", 2, 150), CPU("w250", 2, 250)},
                .expect = {{"w100", SIM_LP_PCT, 49.5, 50.5},
                           {"w250", SIM_LP_PCT, 49.5, 50.5},
                           {"w250", SIM_MAX_PARALLEL, 1, 1},
                           {NULL, SIM_LP_BUSY_PCT, 99.9, 100.1}},
        },
        {
                .name = "many_vps_share_fairly_256_on_2_lps",
                .n_lps = 2,
                .overshoot = true,
                .many_vps = 256,
                .duration_ns = 60 * SEC,
                .measure_from_ns = 0,
                .expect = {{NULL, SIM_FAIRNESS_ERROR, 0, 3}},
        },
};

static void test_case(gconstpointer data)
{
        const SimCase *tc = data;
        Sim sim;

        sim_setup(&sim, tc);
        sim_run(&sim);
        for (size_t i = 0; i < SIM_MAX_EXPECT && (tc->expect[i].vm || tc->expect[i].max > 0); i++) {
                const SimExpect *e = &tc->expect[i];
                double value = sim_measure(&sim, e);

                g_test_message("%s: %s %s = %.3f (expected %.2f-%.2f)", tc->name, e->vm ? e->vm : "all",
                               metric_names[e->metric], value, e->min, e->max);
                if (value < e->min || value > e->max)
                        g_test_fail_printf("%s: %s %s = %.3f, expected %.2f-%.2f", tc->name,
                                           e->vm ? e->vm : "all", metric_names[e->metric], value, e->min,
                                           e->max);
        }
        sim_free(&sim);
}

/* ---- the water-fill on its own ---- */

typedef struct FillCase {
        const char *name;
        size_t n;
        double capacity;
        double weight[4], lo[4], hi[4];
        double expect[4];
} FillCase;

static const FillCase fill_cases[] = {
        {"weights_split_capacity_in_proportion", 3, 1.0, {100, 150, 250}, {0}, {1, 1, 1}, {0.2, 0.3, 0.5}},
        {"a_ceiling_passes_its_excess_to_the_others", 2, 1.0, {100, 100}, {0}, {0.3, 1}, {0.3, 0.7}},
        {"a_floor_is_taken_first_and_weights_split_the_rest", 2, 1.0, {1, 100}, {0.4, 0}, {1, 1}, {0.4, 0.6}},
        {"a_floor_below_the_fair_share_changes_nothing", 2, 1.0, {100, 100}, {0.2, 0}, {1, 1}, {0.5, 0.5}},
        {"fewer_vps_than_lps_each_get_one_lp", 2, 4.0, {1, 10000}, {0}, {1, 1}, {1, 1}},
        {"no_vp_gets_more_than_one_lp", 3, 2.0, {10000, 1, 1}, {0}, {1, 1, 1}, {1, 0.5, 0.5}},
        {"floors_beyond_capacity_are_scaled_to_fit", 2, 1.0, {1, 1}, {0.8, 0.8}, {1, 1}, {0.5, 0.5}},
        {"floor_equal_to_ceiling_is_exact", 2, 1.0, {1, 1000}, {0.3, 0}, {0.3, 1}, {0.3, 0.7}},
};

static void test_fill_case(gconstpointer data)
{
        const FillCase *tc = data;
        double shares[4], sum = 0;
        HvSchedShareEvent scratch[8];

        hv_sched_share_waterfill(tc->weight, tc->lo, tc->hi, tc->n, tc->capacity, shares, scratch);
        for (size_t i = 0; i < tc->n; i++) {
                g_assert_cmpfloat_with_epsilon(shares[i], tc->expect[i], 1e-9);
                sum += shares[i];
        }
        g_assert_cmpfloat(sum, <=, tc->capacity + 1e-9);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(fill_cases); i++) {
                g_autofree char *path = g_strdup_printf("/sched-share/waterfill/%s", fill_cases[i].name);

                g_test_add_data_func(path, &fill_cases[i], test_fill_case);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *path = g_strdup_printf("/sched-sim/%s", cases[i].name);

                g_test_add_data_func(path, &cases[i], test_case);
        }
        return g_test_run();
}
