/* The VP scheduler's mechanism, after Xen's sched/core.c: it owns the LP threads,
 * dispatches the VP a policy picks for a slice, accounts time, and runs the timers.
 *
 * Threads: one per LP, plus one timer thread. An LP thread asks the policy for a VP,
 * runs it in the engine until the engine returns, then hands it back. The engine is
 * never stopped from outside (that corrupts guest memory under Unicorn); instead the
 * timer thread sets vp->preempt when the slice ends and the engine polls it at block
 * boundaries. The timer thread also wakes VPs whose Idle deadline passed.
 *
 * A policy may hold a VP back (a capped one): pick_next then returns a time to retry
 * and the LP waits until that time or a kick. A policy may also ask, when a VP wakes,
 * for a busy LP's VP to leave early (I/O-wake boost); the mechanism sets that VP's
 * preempt flag, so the engine still stops only at a block boundary.
 *
 * Ganging: a ganged partition (the default, HvPartition.ganged) has at most one VP
 * on an LP at any instant, because Unicorn does not make a guest's lock-prefixed
 * instructions atomic between engines on different threads. The mechanism counts
 * p->running_vps around each run; a policy never picks a VP whose sibling runs
 * (hv_sched_vp_gang_blocked), and when a ganged VP leaves its LP with a sibling
 * waiting, an idle LP is kicked for the sibling, so ganging never leaves work behind
 * an idle LP. A partition that opted out runs its VPs on as many LPs as it likes.
 *
 * Placement: LPs are split evenly into NUMA nodes; a partition gets a home node where
 * all its VPs fit (hv_sched_partition_place), and each VP carries it (vp->home_node)
 * for the policy to honour. The mechanism counts dispatches on the home node and on
 * the LP a VP last ran on (soft affinity).
 *
 * Locking: one lock, s->lock, guards all scheduler state, every policy call, and the
 * VP and partition fields marked so. It is never held while guest code runs. Nothing
 * else is taken while it is held except partition console locks (leaf).
 *
 * Accounting per LP: guest time = inside the engine minus hypercall handling;
 * hypervisor time = scheduling, dispatch and hypercalls, of which scheduler time is
 * everything but the hypercalls; idle = waiting for work. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "hv-abi.h"
#include "hv-clock.h"
#include "hv-sched.h"

struct HvSched {
        GMutex lock;
        GCond timer_cond;
        GCond vp_cond; /* a VP left an LP; partition_stop waits on it */
        GThread *timer_thread;
        pid_t timer_tid;
        uint64_t timer_wake_ns; /* when the timer thread will next look, if not kicked */
        HvLp *lps;
        uint32_t n_lps;
        uint32_t n_nodes;
        uint32_t *node_lps; /* LPs per node */
        uint32_t *node_vps; /* VPs placed per node */
        GPtrArray *vps;
        uint64_t slice_ns;
        bool io_boost;
        const HvSchedOps *ops;
        void *policy;
        const HvEngineOps *engine;
        HvSchedHaltFn on_halt;
        void *userdata;
        bool shutting_down;
};

const char *hv_vp_state_to_string(HvVpState state)
{
        static const char *const names[] = {
                [HV_VP_STOPPED] = "stopped", [HV_VP_RUNNABLE] = "runnable", [HV_VP_RUNNING] = "running",
                [HV_VP_IDLE] = "idle",       [HV_VP_DEAD] = "dead",         [HV_VP_PAUSED] = "paused",
        };
        return state < G_N_ELEMENTS(names) ? names[state] : "unknown";
}

static void assert_locked(HvSched *s)
{
        /* GMutex cannot say who holds it; a failed trylock proves someone does. */
        g_assert(!g_mutex_trylock(&s->lock) || (g_mutex_unlock(&s->lock), false));
}

static void policy_assert_locked(void *ctx)
{
        assert_locked(ctx);
}

const HvSchedOps *hv_sched_ops_lookup(const char *name)
{
        static const HvSchedOps *const all[] = {&hv_sched_share_ops, &hv_sched_round_robin_ops};

        for (size_t i = 0; i < G_N_ELEMENTS(all); i++)
                if (strcmp(all[i]->name, name) == 0)
                        return all[i];
        return NULL;
}

/* An idle LP for `vp`: the one it last ran on, else one of its home node, else any. */
static HvLp *find_idle_lp(HvSched *s, HvVp *vp)
{
        HvLp *any = NULL;

        assert_locked(s);
        if (vp->last_lp && vp->last_lp->idle)
                return vp->last_lp;
        for (uint32_t i = 0; i < s->n_lps; i++) {
                HvLp *lp = &s->lps[i];

                if (!lp->idle)
                        continue;
                if (lp->node == vp->home_node)
                        return lp;
                if (!any)
                        any = lp;
        }
        return any;
}

static void kick_lp(HvLp *lp)
{
        assert_locked(lp->sched);
        lp->idle = false; /* claimed; the LP sets it again if it finds nothing */
        g_cond_signal(&lp->cond);
}

/* Makes the timer thread look again by `when` (a slice end or an idle deadline). It
 * is woken only if it would look later: waking it on every dispatch cost each LP a
 * round trip through the host scheduler (the timer preempting the LP thread, then
 * blocking on the lock it holds), about as much as the rest of the dispatch. */
static void timer_kick(HvSched *s, uint64_t when)
{
        assert_locked(s);
        if (when >= s->timer_wake_ns)
                return;
        s->timer_wake_ns = when;
        g_cond_signal(&s->timer_cond);
}

static void vp_make_runnable(HvSched *s, HvVp *vp, uint64_t now, bool from_idle)
{
        HvLp *idle_lp, *preempt_lp;

        assert_locked(s);
        vp->state = HV_VP_RUNNABLE;
        vp->runnable_since_ns = now;
        vp->woke_from_idle = from_idle;
        preempt_lp = s->ops->vp_wake(s->policy, vp, now, from_idle);
        /* A VP whose sibling runs cannot use an idle LP yet; gang_kick does it later. */
        idle_lp = hv_sched_vp_gang_blocked(vp) ? NULL : find_idle_lp(s, vp);
        if (idle_lp)
                kick_lp(idle_lp);
        else if (preempt_lp && preempt_lp->current)
                atomic_store(&preempt_lp->current->preempt, 1);
}

static void vp_wake_from_idle(HvSched *s, HvVp *vp, uint64_t now, uint64_t woke)
{
        assert_locked(s);
        vp->resume_rax_valid = true;
        vp->resume_rax = woke;
        vp_make_runnable(s, vp, now, true);
}

/* A ganged VP left its LP: an idle LP for a sibling that waited for it, if any. */
static void gang_kick(HvSched *s, HvPartition *p)
{
        assert_locked(s);
        if (!p->ganged || p->running_vps > 0)
                return;
        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvVp *sibling = p->vps[i];
                HvLp *idle_lp;

                if (!sibling || sibling->state != HV_VP_RUNNABLE)
                        continue;
                idle_lp = find_idle_lp(s, sibling);
                if (idle_lp)
                        kick_lp(idle_lp);
                return;
        }
}

/* After a run: the VP's next state from how the engine exited. */
static void vp_after_run(HvSched *s, HvVp *vp, HvLp *lp, const HvVpExit *exit, uint64_t ran_ns, uint64_t now)
{
        HvSchedPutReason reason = HV_SCHED_PUT_BLOCKED;

        assert_locked(s);
        if (atomic_load(&vp->partition->dying)) {
                vp->state = HV_VP_DEAD;
        } else
                switch (exit->kind) {
                case HV_EXIT_NONE:
                case HV_EXIT_PREEMPTED:
                        reason = HV_SCHED_PUT_PREEMPTED;
                        break;
                case HV_EXIT_YIELD:
                        vp->counters.yields++;
                        reason = HV_SCHED_PUT_YIELDED;
                        break;
                case HV_EXIT_IDLE:
                        if (atomic_exchange(&vp->event_pending, 0)) {
                                vp->resume_rax_valid = true;
                                vp->resume_rax = HV_IDLE_WOKE_EVENT;
                                reason = HV_SCHED_PUT_PREEMPTED;
                        } else if (exit->idle_deadline_ns != 0 && exit->idle_deadline_ns <= now) {
                                reason = HV_SCHED_PUT_PREEMPTED;
                        } else {
                                vp->state = HV_VP_IDLE;
                                vp->idle_deadline_ns = exit->idle_deadline_ns;
                                if (vp->idle_deadline_ns)
                                        timer_kick(s, vp->idle_deadline_ns);
                        }
                        break;
                case HV_EXIT_HALT:
                        vp->state = HV_VP_STOPPED;
                        if (s->on_halt)
                                s->on_halt(vp, exit->reason, s->userdata);
                        break;
                }
        if (reason != HV_SCHED_PUT_BLOCKED && vp->partition->paused) {
                vp->state = HV_VP_PAUSED;
                reason = HV_SCHED_PUT_BLOCKED;
        } else if (reason != HV_SCHED_PUT_BLOCKED) {
                vp->state = HV_VP_RUNNABLE;
                vp->runnable_since_ns = now;
        }
        s->ops->vp_put(s->policy, vp, lp, ran_ns, now, reason);
        gang_kick(s, vp->partition);
        g_cond_broadcast(&s->vp_cond);
}

/* Time since lp->mark_ns was hypervisor time spent scheduling. */
static void account_scheduling(HvLp *lp, uint64_t now)
{
        assert_locked(lp->sched);
        lp->hypervisor_ns += now - lp->mark_ns;
        lp->scheduler_ns += now - lp->mark_ns;
        lp->mark_ns = now;
}

/* Waits until kicked, shutting down, or `retry_ns` (absolute; UINT64_MAX = never). */
static void lp_idle_wait(HvSched *s, HvLp *lp, uint64_t retry_ns)
{
        uint64_t now;

        assert_locked(s);
        lp->idle = true;
        lp->waiting = true;
        while (lp->idle && !s->shutting_down) {
                if (retry_ns == UINT64_MAX) {
                        g_cond_wait(&lp->cond, &s->lock);
                        continue;
                }
                /* g_cond_wait_until takes g_get_monotonic_time() microseconds, the same clock. */
                if (!g_cond_wait_until(&lp->cond, &s->lock, (gint64)((retry_ns + 999) / 1000)) &&
                    hv_clock_monotonic_ns() >= retry_ns)
                        break;
        }
        lp->idle = false;
        lp->waiting = false;
        now = hv_clock_monotonic_ns();
        lp->idle_ns += now - lp->mark_ns;
        lp->mark_ns = now;
}

/* Dispatch bookkeeping for `vp` about to enter the engine on `lp`. */
static void lp_dispatch(HvSched *s, HvLp *lp, HvVp *vp, uint64_t now, uint64_t slice_ns)
{
        uint64_t waited = now - vp->runnable_since_ns;

        assert_locked(s);
        g_assert(!hv_sched_vp_gang_blocked(vp)); /* the policy's contract */
        vp->partition->running_vps++;
        vp->state = HV_VP_RUNNING;
        vp->counters.dispatches++;
        vp->counters.wait_ns += waited;
        if (vp->woke_from_idle) {
                vp->woke_from_idle = false;
                vp->counters.wake_dispatches++;
                vp->counters.wake_wait_ns += waited;
                vp->counters.wake_wait_max_ns = MAX(vp->counters.wake_wait_max_ns, waited);
        }
        if (vp->last_lp == lp)
                vp->counters.preferred_lp_dispatches++;
        if (lp->node == vp->home_node)
                vp->counters.home_node_dispatches++;
        if (lp->last_vp != vp)
                lp->context_switches++;
        lp->dispatches++;
        lp->current = vp;
        vp->last_lp = lp;
        lp->slice_end_ns = now + slice_ns;
        atomic_store(&vp->slice_end_ns, lp->slice_end_ns);
        atomic_store(&vp->preempt, 0);
        timer_kick(s, lp->slice_end_ns);
}

static gpointer lp_thread(gpointer data)
{
        HvLp *lp = data;
        HvSched *s = lp->sched;

        g_mutex_lock(&s->lock);
        lp->tid = gettid();
        lp->mark_ns = hv_clock_monotonic_ns();
        while (!s->shutting_down) {
                uint64_t now = hv_clock_monotonic_ns(), slice_ns = s->slice_ns, retry_ns = UINT64_MAX, t0, t1;
                HvVpExit exit = {0};
                HvVp *vp;

                account_scheduling(lp, now);
                vp = s->ops->pick_next(s->policy, lp, now, &slice_ns, &retry_ns);
                if (!vp) {
                        account_scheduling(lp, hv_clock_monotonic_ns());
                        lp_idle_wait(s, lp, retry_ns);
                        continue;
                }

                g_assert(vp->state == HV_VP_RUNNABLE);
                if (vp->partition->paused) {
                        /* Paused while queued: the policy has dequeued it; park it. */
                        vp->state = HV_VP_PAUSED;
                        s->ops->vp_put(s->policy, vp, lp, 0, now, HV_SCHED_PUT_BLOCKED);
                        continue;
                }
                lp_dispatch(s, lp, vp, now, slice_ns);
                t0 = hv_clock_monotonic_ns();
                account_scheduling(lp, t0);
                lp->run_start_ns = t0;
                g_mutex_unlock(&s->lock);

                hv_dirty_vp_enter(vp, s->engine);
                s->engine->vp_run(vp->engine, &exit);
                hv_dirty_vp_leave(vp);
                t1 = hv_clock_monotonic_ns();

                g_mutex_lock(&s->lock);
                lp->hypervisor_ns += exit.hypercall_ns;
                lp->guest_ns += (t1 - t0) - MIN(exit.hypercall_ns, t1 - t0);
                lp->mark_ns = t1; /* waiting for the lock counts as scheduling */
                vp->counters.run_ns += t1 - t0;
                vp->counters.guest_ns += (t1 - t0) - MIN(exit.hypercall_ns, t1 - t0);
                lp->current = NULL;
                lp->last_vp = vp;
                vp->partition->running_vps--;
                vp_after_run(s, vp, lp, &exit, t1 - t0, t1);
        }
        g_mutex_unlock(&s->lock);
        return NULL;
}

static gpointer timer_thread(gpointer data)
{
        HvSched *s = data;

        g_mutex_lock(&s->lock);
        s->timer_tid = gettid();
        while (!s->shutting_down) {
                uint64_t now = hv_clock_monotonic_ns(), next = now + G_TIME_SPAN_SECOND * 1000ull;
                gint64 wait_until;

                for (uint32_t i = 0; i < s->n_lps; i++) {
                        HvLp *lp = &s->lps[i];

                        if (!lp->current)
                                continue;
                        if (lp->slice_end_ns <= now) {
                                atomic_store(&lp->current->preempt, 1);
                                lp->slice_end_ns = UINT64_MAX; /* asked once per slice */
                        } else
                                next = MIN(next, lp->slice_end_ns);
                }
                for (guint i = 0; i < s->vps->len; i++) {
                        HvVp *vp = s->vps->pdata[i];

                        if (vp->state != HV_VP_IDLE || vp->idle_deadline_ns == 0 || vp->partition->paused)
                                continue;
                        if (vp->idle_deadline_ns <= now)
                                vp_wake_from_idle(s, vp, now, HV_IDLE_WOKE_TIMER);
                        else
                                next = MIN(next, vp->idle_deadline_ns);
                }
                /* g_cond_wait_until takes g_get_monotonic_time() microseconds, the same clock. */
                s->timer_wake_ns = next;
                wait_until = (gint64)(next / 1000) + 1;
                g_cond_wait_until(&s->timer_cond, &s->lock, wait_until);
                s->timer_wake_ns = 0; /* looking now: nobody needs to kick */
        }
        g_mutex_unlock(&s->lock);
        return NULL;
}

int hv_sched_new(const HvSchedConfig *config, HvSched **ret)
{
        g_autoptr(HvSched) s = NULL;
        HvSchedPolicyConfig policy_config;
        int r;

        if (config->n_lps == 0 || config->n_lps > 1024 || config->n_nodes > config->n_lps ||
            config->slice_ns < 100000 || !config->ops || !config->engine)
                return -EINVAL;

        s = g_new0(HvSched, 1);
        g_mutex_init(&s->lock);
        g_cond_init(&s->timer_cond);
        g_cond_init(&s->vp_cond);
        s->n_lps = config->n_lps;
        s->n_nodes = MAX(config->n_nodes, 1u);
        s->slice_ns = config->slice_ns;
        s->io_boost = config->io_boost;
        s->ops = config->ops;
        s->engine = config->engine;
        s->on_halt = config->on_halt;
        s->userdata = config->userdata;
        s->vps = g_ptr_array_new();
        s->lps = g_new0(HvLp, s->n_lps);
        s->node_lps = g_new0(uint32_t, s->n_nodes);
        s->node_vps = g_new0(uint32_t, s->n_nodes);
        for (uint32_t i = 0; i < s->n_lps; i++) {
                s->lps[i].sched = s;
                s->lps[i].index = i;
                s->lps[i].node = (uint32_t)((uint64_t)i * s->n_nodes / s->n_lps);
                s->node_lps[s->lps[i].node]++;
                g_cond_init(&s->lps[i].cond);
        }
        policy_config = (HvSchedPolicyConfig){
                .lps = s->lps,
                .n_lps = s->n_lps,
                .n_nodes = s->n_nodes,
                .slice_ns = s->slice_ns,
                .io_boost = s->io_boost,
                .assert_locked = policy_assert_locked,
                .lock_ctx = s,
        };
        r = s->ops->init(&policy_config, &s->policy);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < s->n_lps; i++) {
                g_autofree char *name = g_strdup_printf("hv-lp%u", i);

                s->lps[i].thread = g_thread_new(name, lp_thread, &s->lps[i]);
        }
        s->timer_thread = g_thread_new("hv-timer", timer_thread, s);
        *ret = g_steal_pointer(&s);
        return 0;
}

void hv_sched_free(HvSched *s)
{
        if (!s)
                return;
        g_mutex_lock(&s->lock);
        s->shutting_down = true;
        for (uint32_t i = 0; s->lps && i < s->n_lps; i++) {
                if (s->lps[i].current)
                        atomic_store(&s->lps[i].current->preempt, 1);
                g_cond_signal(&s->lps[i].cond);
        }
        g_cond_signal(&s->timer_cond);
        g_mutex_unlock(&s->lock);
        for (uint32_t i = 0; s->lps && i < s->n_lps; i++) {
                if (s->lps[i].thread)
                        g_thread_join(s->lps[i].thread);
                g_cond_clear(&s->lps[i].cond);
        }
        if (s->timer_thread)
                g_thread_join(s->timer_thread);
        if (s->policy)
                s->ops->free(s->policy);
        g_free(s->lps);
        g_free(s->node_lps);
        g_free(s->node_vps);
        if (s->vps)
                g_ptr_array_unref(s->vps);
        g_cond_clear(&s->vp_cond);
        g_cond_clear(&s->timer_cond);
        g_mutex_clear(&s->lock);
        g_free(s);
}

int32_t hv_sched_place(const uint32_t *node_lps, const uint32_t *node_vps, uint32_t n_nodes, uint32_t n_vps)
{
        int32_t best = -1;
        int64_t best_free = INT64_MIN;

        for (uint32_t n = 0; n < n_nodes; n++) {
                int64_t free_lps = (int64_t)node_lps[n] - (int64_t)node_vps[n];

                if (n_vps > node_lps[n])
                        continue;
                if (free_lps > best_free) {
                        best = (int32_t)n;
                        best_free = free_lps;
                }
        }
        return best;
}

void hv_sched_partition_place(HvSched *s, HvPartition *p)
{
        g_mutex_lock(&s->lock);
        /* A ganged partition needs one LP at a time, however many VPs it has. */
        p->home_node = hv_sched_place(s->node_lps, s->node_vps, s->n_nodes, p->ganged ? 1 : p->vp_count);
        g_mutex_unlock(&s->lock);
}

/* A VP goes to its partition's home node while the partition still fits there (it
 * may have grown by hot-add); otherwise to the least loaded node. */
int hv_sched_vp_add(HvSched *s, HvVp *vp)
{
        HvPartition *p = vp->partition;
        int r;

        g_mutex_lock(&s->lock);
        vp->state = HV_VP_STOPPED;
        if (p->home_node >= 0 && (p->ganged || MAX(p->vp_count, vp->index + 1) <= s->node_lps[p->home_node]))
                vp->home_node = (uint32_t)p->home_node;
        else
                vp->home_node = (uint32_t)hv_sched_place(s->node_lps, s->node_vps, s->n_nodes, 0);
        r = s->ops->vp_add(s->policy, vp);
        if (r >= 0) {
                g_ptr_array_add(s->vps, vp);
                s->node_vps[vp->home_node]++;
        }
        g_mutex_unlock(&s->lock);
        return r;
}

/* Starts a VP that has never run, at `regs`. -EBUSY if it has run already. */
int hv_sched_vp_start(HvSched *s, HvVp *vp, const HvVpRegs *regs)
{
        int r = -EBUSY;

        g_mutex_lock(&s->lock);
        if (vp->state == HV_VP_STOPPED && vp->counters.dispatches == 0 &&
            !atomic_load(&vp->partition->dying)) {
                r = s->engine->vp_set_regs(vp->engine, regs);
                if (r >= 0)
                        vp_make_runnable(s, vp, hv_clock_monotonic_ns(), false);
        }
        g_mutex_unlock(&s->lock);
        return r;
}

int hv_sched_vp_snapshot(HvSched *s, HvVp *vp, HvVpCpuState *ret_cpu, HvVpRunSnapshot *ret_run)
{
        HvVpRunSnapshot run = {0};
        int r = -EBUSY;

        g_mutex_lock(&s->lock);
        if (vp->partition->paused && vp->state != HV_VP_RUNNING && !atomic_load(&vp->partition->dying)) {
                r = s->engine->vp_get_state(vp->engine, ret_cpu);
                run.state = vp->state == HV_VP_PAUSED ? HV_VP_RUNNABLE : vp->state;
                run.idle_deadline_ns = vp->state == HV_VP_IDLE ? vp->idle_deadline_ns : 0;
                run.event_pending = atomic_load(&vp->event_pending);
                run.resume_rax_valid = vp->resume_rax_valid;
                run.resume_rax = vp->resume_rax;
        }
        g_mutex_unlock(&s->lock);
        if (r >= 0)
                *ret_run = run;
        return r;
}

int hv_sched_vp_restore(HvSched *s, HvVp *vp, const HvVpCpuState *cpu, const HvVpRunSnapshot *run)
{
        int r = -EBUSY;

        g_mutex_lock(&s->lock);
        if (vp->partition->paused && vp->state == HV_VP_STOPPED && vp->counters.dispatches == 0 &&
            !atomic_load(&vp->partition->dying)) {
                r = s->engine->vp_set_state(vp->engine, cpu);
                if (r >= 0) {
                        /* Paused stands for runnable: the resume makes it so, as for any pause. */
                        vp->state = run->state == HV_VP_RUNNABLE ? HV_VP_PAUSED : run->state;
                        vp->idle_deadline_ns = run->state == HV_VP_IDLE ? run->idle_deadline_ns : 0;
                        atomic_store(&vp->event_pending, run->event_pending);
                        vp->resume_rax_valid = run->resume_rax_valid;
                        vp->resume_rax = run->resume_rax;
                }
        }
        g_mutex_unlock(&s->lock);
        return r;
}

/* An event for the VP: wakes it from Idle, or makes its next Idle return at once. */
void hv_sched_vp_signal(HvSched *s, HvVp *vp)
{
        g_mutex_lock(&s->lock);
        vp->counters.signals++;
        if (vp->state == HV_VP_IDLE && !vp->partition->paused)
                vp_wake_from_idle(s, vp, hv_clock_monotonic_ns(), HV_IDLE_WOKE_EVENT);
        else
                atomic_store(&vp->event_pending, 1);
        g_mutex_unlock(&s->lock);
}

/* Pausing takes effect before this returns: no VP of `p` runs afterwards (each running
 * one leaves its LP at its next block). Idle VPs stay idle and keep their deadline;
 * resuming wakes those whose deadline or event came meanwhile. */
void hv_sched_partition_pause(HvSched *s, HvPartition *p, bool paused)
{
        uint64_t now = hv_clock_monotonic_ns();
        bool running;

        g_mutex_lock(&s->lock);
        if (p->paused == paused || atomic_load(&p->dying)) {
                g_mutex_unlock(&s->lock);
                return;
        }
        p->paused = paused;
        if (!paused) {
                for (uint32_t i = 0; i < p->vp_count; i++) {
                        HvVp *vp = p->vps[i];

                        if (vp->state == HV_VP_PAUSED)
                                vp_make_runnable(s, vp, now, false);
                        else if (vp->state == HV_VP_IDLE && atomic_exchange(&vp->event_pending, 0))
                                vp_wake_from_idle(s, vp, now, HV_IDLE_WOKE_EVENT);
                        else if (vp->state == HV_VP_IDLE && vp->idle_deadline_ns &&
                                 vp->idle_deadline_ns <= now)
                                vp_wake_from_idle(s, vp, now, HV_IDLE_WOKE_TIMER);
                }
                g_cond_signal(&s->timer_cond);
                g_mutex_unlock(&s->lock);
                return;
        }
        do {
                running = false;
                for (uint32_t i = 0; i < p->vp_count; i++)
                        if (p->vps[i]->state == HV_VP_RUNNING) {
                                atomic_store(&p->vps[i]->preempt, 1);
                                running = true;
                        }
                if (running)
                        g_cond_wait(&s->vp_cond, &s->lock);
        } while (running);
        g_mutex_unlock(&s->lock);
}

/* Takes every VP of `p` off the LPs and out of the scheduler. Returns once none of
 * them runs; the wait is bounded by one translated block per running VP. */
void hv_sched_partition_stop(HvSched *s, HvPartition *p)
{
        bool running;

        g_mutex_lock(&s->lock);
        atomic_store(&p->dying, true);
        do {
                running = false;
                for (uint32_t i = 0; i < p->vp_count; i++) {
                        HvVp *vp = p->vps[i];

                        if (!vp)
                                continue;
                        if (vp->state == HV_VP_RUNNING) {
                                atomic_store(&vp->preempt, 1);
                                running = true;
                        }
                }
                if (running)
                        g_cond_wait(&s->vp_cond, &s->lock);
        } while (running);

        for (uint32_t i = 0; i < p->vp_count; i++) {
                HvVp *vp = p->vps[i];

                if (!vp || !g_ptr_array_remove_fast(s->vps, vp))
                        continue;
                s->ops->vp_remove(s->policy, vp);
                s->node_vps[vp->home_node]--;
                vp->state = HV_VP_DEAD;
        }
        g_mutex_unlock(&s->lock);
}

/* Settings apply to the next decision; the partition's running VPs leave their LPs at
 * their next block so a lower cap or weight holds at once, not after their slice. */
void hv_sched_partition_set_processor(HvSched *s, HvPartition *p, const HvProcessorSettings *settings)
{
        g_mutex_lock(&s->lock);
        p->processor = *settings;
        if (s->ops->partition_changed)
                s->ops->partition_changed(s->policy, p, hv_clock_monotonic_ns());
        for (uint32_t i = 0; i < p->vp_count; i++)
                if (p->vps[i]->state == HV_VP_RUNNING)
                        atomic_store(&p->vps[i]->preempt, 1);
        g_mutex_unlock(&s->lock);
}

uint32_t hv_sched_lp_count(HvSched *s)
{
        return s->n_lps;
}

uint32_t hv_sched_node_count(HvSched *s)
{
        return s->n_nodes;
}

const char *hv_sched_policy_name(HvSched *s)
{
        return s->ops->name;
}

bool hv_sched_io_boost(HvSched *s)
{
        return s->io_boost;
}

pid_t hv_sched_timer_tid(HvSched *s)
{
        pid_t tid;

        g_mutex_lock(&s->lock);
        tid = s->timer_tid;
        g_mutex_unlock(&s->lock);
        return tid;
}

void hv_sched_sample_lps(HvSched *s, HvLpSample *ret_samples)
{
        uint64_t now;

        g_mutex_lock(&s->lock);
        now = hv_clock_monotonic_ns();
        for (uint32_t i = 0; i < s->n_lps; i++) {
                HvLp *lp = &s->lps[i];

                ret_samples[i] = (HvLpSample){
                        .node = lp->node,
                        .tid = lp->tid,
                        .guest_ns = lp->guest_ns,
                        .hypervisor_ns = lp->hypervisor_ns,
                        .scheduler_ns = lp->scheduler_ns,
                        .idle_ns = lp->idle_ns,
                        .context_switches = lp->context_switches,
                        .dispatches = lp->dispatches,
                };
                /* Count the segment in progress, so a long slice or a long idle shows. */
                if (lp->waiting)
                        ret_samples[i].idle_ns += now - lp->mark_ns;
                else if (lp->current)
                        ret_samples[i].guest_ns += now - lp->run_start_ns;
        }
        g_mutex_unlock(&s->lock);
}

void hv_sched_sample_vp(HvSched *s, HvVp *vp, HvVpSample *ret_sample)
{
        uint64_t now;

        g_mutex_lock(&s->lock);
        now = hv_clock_monotonic_ns();
        *ret_sample = (HvVpSample){
                .state = vp->state,
                .home_node = vp->home_node,
                .counters = vp->counters,
        };
        if (vp->state == HV_VP_RUNNING && vp->last_lp) {
                ret_sample->counters.run_ns += now - vp->last_lp->run_start_ns;
                ret_sample->counters.guest_ns += now - vp->last_lp->run_start_ns;
        }
        if (s->ops->vp_stats && vp->state != HV_VP_DEAD)
                s->ops->vp_stats(s->policy, vp, now, &ret_sample->policy);
        g_mutex_unlock(&s->lock);
}
