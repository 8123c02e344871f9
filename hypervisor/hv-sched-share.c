/* The share policy: Set-VMProcessor's reserve, cap and relative weight, exactly.
 *
 * What it guarantees. Among the VPs that want to run (contenders: runnable or
 * running; an idle VP is not one), each VP i is entitled to a fluid share s_i of one LP:
 *
 *     s_i = clamp(lambda * w_i, r_i, c_i),   sum(s_i) = min(capacity, sum(c_i))
 *
 * where w_i is its relative weight, r_i its reserve, c_i = min(its maximum, 1 LP) and
 * capacity the node's LP count; lambda is found by water-filling
 * (hv_sched_share_waterfill, O(n log n)). So weights split what is left after
 * reservations and caps; a reserve not used by an idle VP is not reserved at all (the
 * VP is no contender) and goes to the others; all equal = fair round robin. Admission
 * control (hv.c) keeps sum(r_i) <= capacity.
 *
 * How it keeps them: lag and deadlines. Each VP has a lag: the service the fluid model
 * gave it minus what it really got. Service is counted as it is delivered: when a VP
 * leaves an LP after running `ran` ns, the node's virtual time V advances by
 * ran / sum(s) and every contender is credited s_i * ran / sum(s), the runner debited
 * `ran` — so the lags of a node's contenders always sum to zero (hypervisor overhead
 * and idle time cannot make them drift). An LP runs the VP with the earliest virtual
 * deadline (slice - lag_i) / s_i: the moment the VP will be owed a whole slice. This is
 * global EDF on fluid deadlines (as in EEVDF); global EDF's tardiness is bounded when
 * every s_i <= 1 and sum(s_i) <= LPs, so lag stays within a few slices and over T
 * seconds each VP's share is within (a few slices) / T of s_i. The simulation
 * (tests/unit/test-sched-sim.c) checks the cases to 1 point or better.
 * Lag is clamped to +-HV_SCHED_LAG_SLICES slices; what a clamp cuts is given back to
 * the node's other contenders so the sum stays zero.
 *
 * Joining and leaving. A VP that stops contending gives its lag to the others (V is
 * shifted so the sum stays zero) and keeps only a debt (negative lag), which it brings
 * back when it next wakes: idling briefly cannot shed a debt, and credit owed to a VP
 * that went idle is forfeited — it did not want the time.
 *
 * Caps, in any window. c_i in the fluid model makes a capped VP's average right, but
 * "never more than c_i in any 100 ms window" needs more: each VP remembers its run
 * intervals of the last HV_SCHED_CAP_WINDOW_NS (a ring of HV_SCHED_CAP_RUNS; on
 * overflow the two oldest merge into one placed as late as possible, which can only
 * overstate later windows). A VP is dispatched only while its budget
 *     c_i * W - HV_SCHED_CAP_GUARD_NS - run(now - W, now)
 * is at least HV_SCHED_CAP_MIN_SLICE_NS, and for at most that budget. As the slice
 * runs, run(t - W, t) gains what it runs and can only lose old intervals, so the bound
 * holds at every instant provided the engine stops within the guard of the slice end
 * (the simulation overruns every slice by up to the guard and checks every window).
 * A held-back VP tells its LP when it may run again (pick_next's retry time), and an
 * LP running a VP with a later deadline ends that slice then, so a capped VP does not
 * lose its time waiting behind someone else's slice. What a cap costs below c_i: the
 * guard and the minimum slice, about 1 point at 30 % (test-sched-sim.c measures 29.2).
 *
 * Ganging. A partition's VPs are ganged unless it opted out (HvPartition.ganged;
 * Unicorn's lock-prefixed instructions are not atomic between LPs): at most one of
 * them is on an LP at any instant. The fluid model sees a ganged partition's k
 * contenders as one entity of weight sum(w_i), floor min(sum(r_i), 1) and ceiling
 * min(sum(c_i), 1) — it can never use more than one LP — and its members (whose
 * settings are the partition's, so equal) split its share evenly: s_i = S / k. So
 * a ganged VM competes with the same weight as before but is capped at one LP in
 * all; a reservation of k x r_i above 100 % is honoured only up to one LP (admission
 * still counts k x r_i, so nothing is over-promised to others). EDF then skips a
 * queued VP whose sibling is on an LP (hv_sched_vp_gang_blocked); since the entity's
 * share is at most 1, its members run one after another without losing their
 * deadlines, and the mechanism kicks an idle LP for a waiting sibling as soon as
 * the running one leaves. Placement needs one LP for a ganged partition. Measured on
 * the simulation: every case above holds with ganging on (the cases that need a VM
 * on two LPs at once opt out); what ganging costs is a multi-VP VM's parallelism —
 * a 2-VP VM alone on 2 LPs gets 1 LP, not 2.
 *
 * Extras. Soft affinity: among VPs whose deadlines are within slice /
 * HV_SCHED_AFFINITY_DIVISOR of the earliest, the LP prefers the one that last ran on it.
 * NUMA: a VP contends in its home node (its shares are computed against that node's
 * LPs); an LP with nothing eligible at home takes the earliest deadline of another node
 * (work conservation). Long spin wait: for the LP's next decision the yielder goes
 * behind every other eligible VP; it gives away the rest of its slice, not its share
 * (a yield that lasted until the yielder next ran would starve a VP that spun once
 * while others stay runnable). I/O-wake boost (optional): a VP woken from Idle goes
 * ahead of all others for one HV_SCHED_BOOST_SLICE_NS dispatch and may make a busy
 * LP's unboosted VP leave at once; it is still charged, and a VP already ahead of its
 * share by half the lag bound gets no boost, so waking often buys latency, not extra
 * share.
 *
 * Constants. The default slice (hvd --slice-ms, 10 ms) keeps the dispatch cost (a few
 * microseconds) far below 1 % and is fine-grained against the 100 ms cap window. The
 * lag bound (3 slices) is above what EDF needs in steady state, so it only trims
 * transients (settings changes, NUMA imbalance). The 1 ms minimum capped slice keeps a
 * capped VP's dispatches (about c_i * W / 1 ms per window at most) and its loss of
 * share (about 1 ms per window) small, and bounds its run intervals. The 250 us
 * guard covers the engine's stop latency (a block boundary after the timer's flag:
 * unicorn-facts.md measured p99 85 us over the request) plus the timer thread's wake-up.
 *
 * Bounded work. pick_next scans the VPs of the LP's node (and of the others only when
 * it must steal): O(VPs). vp_put and vp_wake are O(1) plus the cap-ring pruning. A
 * change of contenders or settings marks the node; the next decision brings every lag
 * up to date and recomputes the shares: O(n log n) once per batch of changes.
 *
 * Locking: every op runs under the scheduler lock (asserted through the mechanism's
 * callback); the policy takes no lock of its own and never blocks. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "hv-sched-share.h"
#include "hv-sched.h"

typedef struct ShareRun {
        uint64_t start_ns;
        uint64_t end_ns;
} ShareRun;

typedef struct ShareNode {
        uint32_t index;
        double capacity;    /* LPs */
        double vtime;       /* service per unit of share, ns */
        double share_sum;   /* of the contenders, as last computed */
        double pending_lag; /* lag of leavers and clamps, to spread over the contenders */
        bool shares_dirty;  /* contenders or settings changed since the shares were computed */
        GPtrArray *vps;     /* ShareVp* homed here */
        /* Scratch for the water-fill, grown as needed. */
        size_t scratch_len;
        double *weight, *lo, *hi, *out;
        uint32_t *members; /* contenders per water-fill entity */
        HvSchedShareEvent *events;
} ShareNode;

typedef struct ShareVp {
        HvVp *vp;
        ShareNode *node;
        bool contender; /* runnable or running */
        bool queued;    /* runnable and waiting for an LP */
        bool boosted;   /* woken from Idle, boost not used yet */
        bool running_boosted;
        bool throttled;   /* the cap held it back at the last look */
        uint64_t woke_ns; /* orders the boosted, first come first served */
        double share;     /* fluid share of one LP */
        size_t entity;    /* its water-fill entity, as last computed */
        double lag;       /* ns, as of node->vtime == vmark */
        double vmark;
        uint64_t cap_throttles;
        uint64_t boosts;
        uint64_t cap_since_ns;      /* when the partition's settings last changed */
        uint64_t cap_window_max_ns; /* the most run in a window wholly after cap_since_ns */
        uint32_t n_runs;
        uint32_t first_run;
        ShareRun runs[HV_SCHED_CAP_RUNS];
} ShareVp;

typedef struct Share {
        HvSchedPolicyConfig config;
        ShareNode *nodes;
        double lag_max;
        double affinity_ns;
        ShareVp **yielders; /* per LP: the VP that just yielded it, for the LP's next pick */
} Share;

static void share_assert_locked(Share *sh)
{
        if (sh->config.assert_locked)
                sh->config.assert_locked(sh->config.lock_ctx);
}

/* ---- water-fill ---- */

static int compare_events(const void *a, const void *b)
{
        const HvSchedShareEvent *ea = a, *eb = b;

        if (ea->lambda != eb->lambda)
                return ea->lambda < eb->lambda ? -1 : 1;
        return (int)ea->saturates - (int)eb->saturates; /* leave floors before reaching ceilings */
}

void hv_sched_share_waterfill(const double *weight, const double *lo, const double *hi, size_t n,
                              double capacity, double *ret_shares, HvSchedShareEvent *scratch)
{
        double sum_lo = 0, sum_hi = 0, base, slope = 0, lambda = 0, target;

        for (size_t i = 0; i < n; i++) {
                sum_lo += lo[i];
                sum_hi += hi[i];
        }
        if (sum_hi <= capacity) {
                for (size_t i = 0; i < n; i++)
                        ret_shares[i] = hi[i];
                return;
        }
        if (sum_lo >= capacity) {
                for (size_t i = 0; i < n; i++)
                        ret_shares[i] = sum_lo > 0 ? lo[i] * capacity / sum_lo : 0;
                return;
        }
        /* f(lambda) = sum clamp(lambda w_i, lo_i, hi_i) is piecewise linear and
         * nondecreasing; walk its breakpoints until it reaches the target. */
        for (size_t i = 0; i < n; i++) {
                scratch[2 * i] = (HvSchedShareEvent){lo[i] / weight[i], (uint32_t)i, 0};
                scratch[2 * i + 1] = (HvSchedShareEvent){hi[i] / weight[i], (uint32_t)i, 1};
        }
        qsort(scratch, 2 * n, sizeof(*scratch), compare_events);
        target = capacity;
        base = sum_lo;
        for (size_t k = 0; k < 2 * n; k++) {
                const HvSchedShareEvent *e = &scratch[k];
                double f = base + slope * e->lambda;

                if (f >= target && slope > 0) {
                        lambda = (target - base) / slope;
                        break;
                }
                if (e->saturates) {
                        slope -= weight[e->index];
                        base += hi[e->index];
                } else {
                        slope += weight[e->index];
                        base -= lo[e->index];
                }
                lambda = e->lambda; /* reached only if the target lies at or past here */
        }
        for (size_t i = 0; i < n; i++)
                ret_shares[i] = CLAMP(lambda * weight[i], lo[i], hi[i]);
}

/* ---- lag ---- */

static double vp_lag(const ShareVp *sv)
{
        return sv->lag + sv->share * (sv->node->vtime - sv->vmark);
}

/* Brings the lag up to the node's virtual time, clamped; a clamp's cut goes to the others. */
static void vp_sync(Share *sh, ShareVp *sv)
{
        double lag = vp_lag(sv), clamped = CLAMP(lag, -sh->lag_max, sh->lag_max);

        if (clamped != lag && sv->contender) {
                sv->node->pending_lag += lag - clamped;
        }
        sv->lag = clamped;
        sv->vmark = sv->node->vtime;
}

static void node_grow_scratch(ShareNode *node, size_t n)
{
        if (node->scratch_len >= n)
                return;
        node->scratch_len = MAX(n, node->scratch_len * 2);
        node->weight = g_renew(double, node->weight, node->scratch_len);
        node->lo = g_renew(double, node->lo, node->scratch_len);
        node->hi = g_renew(double, node->hi, node->scratch_len);
        node->out = g_renew(double, node->out, node->scratch_len);
        node->events = g_renew(HvSchedShareEvent, node->events, 2 * node->scratch_len);
        node->members = g_renew(uint32_t, node->members, node->scratch_len);
}

/* The water-fill's entities: each contender of a partition that opted out of ganging,
 * and each ganged partition's contenders as one (see "Ganging" above). sv->entity and
 * node->members[e] (contenders in entity e) are set here. */
static size_t node_build_entities(ShareNode *node)
{
        g_autoptr(GHashTable) ganged = g_hash_table_new(NULL, NULL); /* HvPartition* -> entity + 1 */
        size_t n = 0;

        for (guint i = 0; i < node->vps->len; i++) {
                ShareVp *sv = node->vps->pdata[i];
                HvPartition *p = sv->vp->partition;
                const HvProcessorSettings *ps = &p->processor;
                gpointer found;

                if (!sv->contender)
                        continue;
                if (p->ganged && (found = g_hash_table_lookup(ganged, p))) {
                        size_t e = GPOINTER_TO_SIZE(found) - 1;

                        node->members[e]++;
                        node->weight[e] += ps->relative_weight;
                        node->lo[e] += ps->reserve_pct / 100.0;
                        node->hi[e] += ps->maximum_pct / 100.0;
                        sv->entity = e;
                        continue;
                }
                if (p->ganged)
                        g_hash_table_insert(ganged, p, GSIZE_TO_POINTER(n + 1));
                node->members[n] = 1;
                node->weight[n] = ps->relative_weight;
                node->lo[n] = ps->reserve_pct / 100.0;
                node->hi[n] = ps->maximum_pct / 100.0;
                sv->entity = n++;
        }
        for (size_t e = 0; e < n; e++) {
                node->hi[e] = MIN(node->hi[e], 1.0); /* a gang runs on one LP at a time */
                node->lo[e] = MIN(node->lo[e], node->hi[e]);
        }
        return n;
}

static void node_compute_shares(ShareNode *node)
{
        size_t n;

        node_grow_scratch(node, node->vps->len);
        n = node_build_entities(node);
        hv_sched_share_waterfill(node->weight, node->lo, node->hi, n, node->capacity, node->out,
                                 node->events);
        node->share_sum = 0;
        for (guint i = 0; i < node->vps->len; i++) {
                ShareVp *sv = node->vps->pdata[i];

                /* A gang's members have the same settings, so they split its share evenly. */
                sv->share = sv->contender ? node->out[sv->entity] / node->members[sv->entity] : 0;
                node->share_sum += sv->share;
        }
        node->shares_dirty = false;
}

/* Before the node's virtual time moves or lags are compared: account the service so far
 * at the old shares, recompute the shares if contenders changed, and spread pending lag
 * over the contenders in proportion to their shares. */
static void node_refresh(Share *sh, ShareNode *node)
{
        if (!node->shares_dirty && node->pending_lag == 0)
                return;
        for (guint i = 0; i < node->vps->len; i++)
                vp_sync(sh, node->vps->pdata[i]);
        if (node->shares_dirty)
                node_compute_shares(node);
        if (node->share_sum > 0)
                node->vtime += node->pending_lag / node->share_sum;
        node->pending_lag = 0;
}

static void vp_join(Share *sh, ShareVp *sv)
{
        ShareNode *node = sv->node;

        sv->vmark = node->vtime;
        sv->lag = CLAMP(MIN(sv->lag, 0.0), -sh->lag_max, 0.0); /* a debt comes back; credit does not */
        sv->contender = true;
        node->pending_lag -= sv->lag;
        node->shares_dirty = true;
}

static void vp_leave(Share *sh, ShareVp *sv)
{
        ShareNode *node = sv->node;

        node_refresh(sh, node);
        vp_sync(sh, sv);
        node->pending_lag += sv->lag;
        sv->lag = MIN(sv->lag, 0.0);
        sv->contender = false;
        sv->queued = false;
        sv->boosted = false;
        sv->share = 0;
        for (uint32_t i = 0; i < sh->config.n_lps; i++)
                if (sh->yielders[i] == sv)
                        sh->yielders[i] = NULL;
        node->shares_dirty = true;
}

/* ---- caps ---- */

static ShareRun *run_at(ShareVp *sv, uint32_t k)
{
        return &sv->runs[(sv->first_run + k) % HV_SCHED_CAP_RUNS];
}

static void runs_prune(ShareVp *sv, uint64_t now)
{
        uint64_t from = now > HV_SCHED_CAP_WINDOW_NS ? now - HV_SCHED_CAP_WINDOW_NS : 0;

        while (sv->n_runs > 0 && run_at(sv, 0)->end_ns <= from) {
                sv->first_run = (sv->first_run + 1) % HV_SCHED_CAP_RUNS;
                sv->n_runs--;
        }
}

static void runs_record(ShareVp *sv, uint64_t start_ns, uint64_t end_ns)
{
        runs_prune(sv, end_ns);
        if (sv->n_runs == HV_SCHED_CAP_RUNS) {
                /* Merge the two oldest into one ending where the second ends: the same run
                 * placed later can only count in more of the windows still to come. */
                ShareRun *a = run_at(sv, 0), *b = run_at(sv, 1);
                uint64_t len = (a->end_ns - a->start_ns) + (b->end_ns - b->start_ns);

                b->start_ns = b->end_ns - len;
                sv->first_run = (sv->first_run + 1) % HV_SCHED_CAP_RUNS;
                sv->n_runs--;
        }
        *run_at(sv, sv->n_runs++) = (ShareRun){start_ns, end_ns};
}

static uint64_t cap_window_budget(const ShareVp *sv)
{
        return (uint64_t)sv->vp->partition->processor.maximum_pct * HV_SCHED_CAP_WINDOW_NS / 100;
}

/* Run time in (now - W, now]. */
static uint64_t runs_in_window(ShareVp *sv, uint64_t now)
{
        uint64_t from = now > HV_SCHED_CAP_WINDOW_NS ? now - HV_SCHED_CAP_WINDOW_NS : 0, sum = 0;

        runs_prune(sv, now);
        for (uint32_t k = 0; k < sv->n_runs; k++) {
                const ShareRun *r = run_at(sv, k);

                sum += r->end_ns - MAX(r->start_ns, from);
        }
        return sum;
}

static uint64_t cap_allowed(const ShareVp *sv)
{
        uint64_t allowed = cap_window_budget(sv);

        return allowed > HV_SCHED_CAP_GUARD_NS ? allowed - HV_SCHED_CAP_GUARD_NS : 0;
}

/* How long the VP may run from `now` without passing its cap in any window; 0 when
 * it must wait. UINT64_MAX when uncapped. */
static uint64_t cap_budget(ShareVp *sv, uint64_t now)
{
        uint64_t allowed, used;

        if (sv->vp->partition->processor.maximum_pct >= 100)
                return UINT64_MAX;
        allowed = cap_allowed(sv);
        used = runs_in_window(sv, now);
        if (used >= allowed || allowed - used < HV_SCHED_CAP_MIN_SLICE_NS)
                return 0;
        return allowed - used;
}

/* The earliest time the cap lets the VP run again (it does not run meanwhile): when
 * enough of its recent runs have slid out of the window. */
static uint64_t cap_release(ShareVp *sv, uint64_t now)
{
        uint64_t allowed = cap_allowed(sv), target, acc = 0;

        if (allowed < HV_SCHED_CAP_MIN_SLICE_NS)
                return UINT64_MAX; /* a cap so small it never fits a slice */
        target = allowed - HV_SCHED_CAP_MIN_SLICE_NS;
        runs_prune(sv, now);
        for (uint32_t k = sv->n_runs; k-- > 0;) {
                const ShareRun *r = run_at(sv, k);
                uint64_t len = r->end_ns - r->start_ns;

                if (acc + len > target)
                        return MAX(now, r->end_ns - (target - acc) + HV_SCHED_CAP_WINDOW_NS);
                acc += len;
        }
        return now;
}

/* ---- choosing ---- */

typedef struct ShareChoice {
        ShareVp *best;
        int best_class;
        double best_deadline;
        uint64_t retry_ns; /* earliest cap release among the held-back */
} ShareChoice;

/* Lower runs first: boosted, then ordinary, then the VP that just yielded `lp`. */
static int vp_class(Share *sh, const ShareVp *sv, const HvLp *lp)
{
        return sv->boosted ? 0 : sh->yielders[lp->index] == sv ? 2 : 1;
}

static double vp_deadline(Share *sh, const ShareVp *sv)
{
        if (sv->boosted)
                return (double)sv->woke_ns;
        if (sv->share <= 0)
                return INFINITY;
        return ((double)sh->config.slice_ns - vp_lag(sv)) / sv->share;
}

/* Considers every queued VP of `node` for `lp`. */
static void node_choose(Share *sh, ShareNode *node, HvLp *lp, uint64_t now, ShareChoice *c)
{
        node_refresh(sh, node);
        for (guint i = 0; i < node->vps->len; i++) {
                ShareVp *sv = node->vps->pdata[i];
                double deadline;
                int cls;

                if (!sv->queued || hv_sched_vp_gang_blocked(sv->vp))
                        continue;
                if (cap_budget(sv, now) == 0) {
                        if (!sv->throttled)
                                sv->cap_throttles++;
                        sv->throttled = true;
                        c->retry_ns = MIN(c->retry_ns, cap_release(sv, now));
                        continue;
                }
                sv->throttled = false;
                cls = vp_class(sh, sv, lp);
                deadline = vp_deadline(sh, sv);
                if (!c->best || cls < c->best_class ||
                    (cls == c->best_class && deadline < c->best_deadline)) {
                        c->best = sv;
                        c->best_class = cls;
                        c->best_deadline = deadline;
                }
        }
        if (!c->best || c->best->vp->last_lp == lp || c->best_class != 1)
                return;
        /* Soft affinity: a near-tie goes to the VP whose state is warm on this LP. */
        for (guint i = 0; i < node->vps->len; i++) {
                ShareVp *sv = node->vps->pdata[i];

                if (sv->queued && !sv->throttled && !hv_sched_vp_gang_blocked(sv->vp) &&
                    vp_class(sh, sv, lp) == 1 && sv->vp->last_lp == lp &&
                    vp_deadline(sh, sv) <= c->best_deadline + sh->affinity_ns) {
                        c->best = sv;
                        return;
                }
        }
}

/* When the first held-back VP of `node` that would go before a VP of `deadline`
 * becomes eligible (UINT64_MAX: none). The LP's slice ends then, so a capped VP
 * that is owed time does not lose it waiting for someone else's slice to end. */
static uint64_t held_back_release(Share *sh, ShareNode *node, uint64_t now, double deadline)
{
        uint64_t release = UINT64_MAX;

        for (guint i = 0; i < node->vps->len; i++) {
                ShareVp *sv = node->vps->pdata[i];

                if (sv->queued && sv->throttled && vp_deadline(sh, sv) < deadline)
                        release = MIN(release, cap_release(sv, now));
        }
        return release;
}

/* ---- ops ---- */

static void share_free(void *policy)
{
        Share *sh = policy;

        if (!sh)
                return;
        for (uint32_t n = 0; sh->nodes && n < sh->config.n_nodes; n++) {
                ShareNode *node = &sh->nodes[n];

                if (node->vps)
                        g_ptr_array_unref(node->vps);
                g_free(node->weight);
                g_free(node->lo);
                g_free(node->hi);
                g_free(node->out);
                g_free(node->events);
                g_free(node->members);
        }
        g_free(sh->nodes);
        g_free(sh->yielders);
        g_free(sh);
}

static int share_init(const HvSchedPolicyConfig *config, void **ret_policy)
{
        Share *sh;

        if (config->n_lps == 0 || config->n_nodes == 0 || config->n_nodes > config->n_lps ||
            config->slice_ns == 0)
                return -EINVAL;
        sh = g_new0(Share, 1);
        sh->config = *config;
        sh->lag_max = (double)HV_SCHED_LAG_SLICES * (double)config->slice_ns;
        sh->affinity_ns = (double)config->slice_ns / HV_SCHED_AFFINITY_DIVISOR;
        sh->nodes = g_new0(ShareNode, config->n_nodes);
        sh->yielders = g_new0(ShareVp *, config->n_lps);
        for (uint32_t n = 0; n < config->n_nodes; n++) {
                sh->nodes[n].index = n;
                sh->nodes[n].vps = g_ptr_array_new();
        }
        for (uint32_t i = 0; i < config->n_lps; i++) {
                if (config->lps[i].node >= config->n_nodes) {
                        share_free(sh);
                        return -EINVAL;
                }
                sh->nodes[config->lps[i].node].capacity += 1.0;
        }
        *ret_policy = sh;
        return 0;
}

static int share_vp_add(void *policy, HvVp *vp)
{
        Share *sh = policy;
        ShareVp *sv;

        share_assert_locked(sh);
        if (vp->home_node >= sh->config.n_nodes)
                return -EINVAL;
        sv = g_new0(ShareVp, 1);
        sv->vp = vp;
        sv->node = &sh->nodes[vp->home_node];
        g_ptr_array_add(sv->node->vps, sv);
        vp->policy_data = sv;
        return 0;
}

static void share_vp_remove(void *policy, HvVp *vp)
{
        Share *sh = policy;
        ShareVp *sv = vp->policy_data;

        share_assert_locked(sh);
        if (!sv)
                return;
        if (sv->contender)
                vp_leave(sh, sv);
        g_ptr_array_remove_fast(sv->node->vps, sv);
        g_free(sv);
        vp->policy_data = NULL;
}

/* A busy LP whose VP a boosted waker may displace: the waker's last LP, else one of
 * its node, else any; never one running a boosted VP. NULL if an LP is idle (the
 * mechanism kicks that one). */
static HvLp *boost_victim(Share *sh, ShareVp *sv)
{
        HvLp *same_node = NULL, *any = NULL;

        if (hv_sched_vp_gang_blocked(sv->vp)) {
                /* Only its running sibling's LP can make room for it. */
                for (uint32_t i = 0; i < sh->config.n_lps; i++) {
                        HvLp *lp = &sh->config.lps[i];
                        ShareVp *cur = lp->current ? lp->current->policy_data : NULL;

                        if (lp->current && lp->current->partition == sv->vp->partition)
                                return cur && cur->running_boosted ? NULL : lp;
                }
                return NULL;
        }

        for (uint32_t i = 0; i < sh->config.n_lps; i++) {
                HvLp *lp = &sh->config.lps[i];
                ShareVp *cur;

                if (lp->idle || !lp->current)
                        return NULL;
                cur = lp->current->policy_data;
                if (cur && cur->running_boosted)
                        continue;
                if (lp == sv->vp->last_lp)
                        return lp;
                if (!same_node && lp->node == sv->node->index)
                        same_node = lp;
                if (!any)
                        any = lp;
        }
        return same_node ? same_node : any;
}

static HvLp *share_vp_wake(void *policy, HvVp *vp, uint64_t now, bool from_idle)
{
        Share *sh = policy;
        ShareVp *sv = vp->policy_data;

        share_assert_locked(sh);
        if (!sv->contender)
                vp_join(sh, sv);
        sv->queued = true;
        if (!from_idle || !sh->config.io_boost || cap_budget(sv, now) == 0 || sv->lag < -sh->lag_max / 2)
                return NULL;
        sv->boosted = true;
        sv->woke_ns = now;
        sv->boosts++;
        return boost_victim(sh, sv);
}

static HvVp *share_pick_next(void *policy, HvLp *lp, uint64_t now, uint64_t *ret_slice_ns,
                             uint64_t *ret_retry_ns)
{
        Share *sh = policy;
        ShareChoice c = {.retry_ns = UINT64_MAX};
        ShareVp *sv;
        uint64_t budget;

        share_assert_locked(sh);
        node_choose(sh, &sh->nodes[lp->node], lp, now, &c);
        for (uint32_t n = 0; !c.best && n < sh->config.n_nodes; n++)
                if (n != lp->node)
                        node_choose(sh, &sh->nodes[n], lp, now, &c);
        sh->yielders[lp->index] = NULL; /* a yield gives away one decision, not a turn forever */
        if (!c.best) {
                *ret_retry_ns = c.retry_ns;
                return NULL;
        }
        sv = c.best;
        budget = cap_budget(sv, now);
        *ret_slice_ns = MIN(*ret_slice_ns, budget);
        if (c.best_class == 1) {
                uint64_t release = held_back_release(sh, sv->node, now, c.best_deadline);

                if (release != UINT64_MAX)
                        *ret_slice_ns = MIN(*ret_slice_ns,
                                            MAX(release - MIN(release, now), HV_SCHED_CAP_MIN_SLICE_NS));
        }
        if (sv->boosted)
                *ret_slice_ns = MIN(*ret_slice_ns, HV_SCHED_BOOST_SLICE_NS);
        sv->running_boosted = sv->boosted;
        sv->boosted = false;
        sv->queued = false;
        return sv->vp;
}

static void share_vp_put(void *policy, HvVp *vp, HvLp *lp, uint64_t ran_ns, uint64_t now,
                         HvSchedPutReason reason)
{
        Share *sh = policy;
        ShareVp *sv = vp->policy_data;
        ShareNode *node = sv->node;

        share_assert_locked(sh);
        node_refresh(sh, node);
        if (ran_ns > 0) {
                if (node->share_sum > 0)
                        node->vtime += (double)ran_ns / node->share_sum;
                vp_sync(sh, sv);
                sv->lag -= (double)ran_ns;
                vp_sync(sh, sv); /* clamp */
                runs_record(sv, now - MIN(ran_ns, now), now);
                /* A window's run peaks where a run ends: check the one ending here. */
                if (sv->vp->partition->processor.maximum_pct < 100 &&
                    now >= sv->cap_since_ns + HV_SCHED_CAP_WINDOW_NS)
                        sv->cap_window_max_ns = MAX(sv->cap_window_max_ns, runs_in_window(sv, now));
        }
        sv->running_boosted = false;
        switch (reason) {
        case HV_SCHED_PUT_PREEMPTED:
                sv->queued = true;
                break;
        case HV_SCHED_PUT_YIELDED:
                sv->queued = true;
                sh->yielders[lp->index] = sv; /* the LP picks next, right after this put */
                break;
        case HV_SCHED_PUT_BLOCKED:
                vp_leave(sh, sv);
                break;
        }
}

static void share_partition_changed(void *policy, HvPartition *p, uint64_t now)
{
        Share *sh = policy;

        share_assert_locked(sh);
        for (uint32_t i = 0; i < p->vp_count; i++) {
                ShareVp *sv = p->vps[i]->policy_data;

                if (!sv)
                        continue;
                sv->node->shares_dirty = true;
                sv->cap_since_ns = now;
                sv->cap_window_max_ns = 0;
        }
}

static void share_vp_stats(void *policy, HvVp *vp, uint64_t now, HvSchedVpStats *ret)
{
        Share *sh = policy;
        ShareVp *sv = vp->policy_data;

        share_assert_locked(sh);
        (void)now;
        if (!sv)
                return;
        node_refresh(sh, sv->node);
        ret->share_ppm = (uint32_t)lround(sv->share * 1e6);
        ret->lag_ns = (int64_t)vp_lag(sv);
        ret->cap_throttles = sv->cap_throttles;
        ret->boosts = sv->boosts;
        ret->cap_window_max_ns = sv->cap_window_max_ns;
}

const HvSchedOps hv_sched_share_ops = {
        .name = "share",
        .init = share_init,
        .free = share_free,
        .vp_add = share_vp_add,
        .vp_remove = share_vp_remove,
        .vp_wake = share_vp_wake,
        .pick_next = share_pick_next,
        .vp_put = share_vp_put,
        .partition_changed = share_partition_changed,
        .vp_stats = share_vp_stats,
};
