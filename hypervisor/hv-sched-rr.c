/* Round-robin policy: one FIFO of runnable VPs shared by all LPs, a fixed slice each.
 * Fair when every VP is CPU-bound; an idle VP is not queued and costs nothing. It
 * ignores reserve, cap, weight and NUMA homes: `hvd --scheduler round-robin` is the
 * baseline the share policy is measured against. */
#include <errno.h>

#include "hv-sched.h"

typedef struct RoundRobin {
        GQueue runqueue; /* of HvVp*, linked through RoundRobinVp.link */
} RoundRobin;

typedef struct RoundRobinVp {
        GList link;
        bool queued;
} RoundRobinVp;

static int rr_init(const HvSchedPolicyConfig *config, void **ret_policy)
{
        RoundRobin *rr = g_new0(RoundRobin, 1);

        (void)config;
        g_queue_init(&rr->runqueue);
        *ret_policy = rr;
        return 0;
}

static void rr_free(void *policy)
{
        g_free(policy);
}

static int rr_vp_add(void *policy, HvVp *vp)
{
        RoundRobinVp *rvp = g_new0(RoundRobinVp, 1);

        (void)policy;
        rvp->link.data = vp;
        vp->policy_data = rvp;
        return 0;
}

static void rr_dequeue(RoundRobin *rr, RoundRobinVp *rvp)
{
        if (!rvp->queued)
                return;
        g_queue_unlink(&rr->runqueue, &rvp->link);
        rvp->queued = false;
}

static void rr_enqueue(RoundRobin *rr, RoundRobinVp *rvp)
{
        if (rvp->queued)
                return;
        g_queue_push_tail_link(&rr->runqueue, &rvp->link);
        rvp->queued = true;
}

static void rr_vp_remove(void *policy, HvVp *vp)
{
        RoundRobinVp *rvp = vp->policy_data;

        if (!rvp)
                return;
        rr_dequeue(policy, rvp);
        g_free(rvp);
        vp->policy_data = NULL;
}

static HvLp *rr_vp_wake(void *policy, HvVp *vp, uint64_t now, bool from_idle)
{
        (void)now;
        (void)from_idle;
        rr_enqueue(policy, vp->policy_data);
        return NULL; /* never preempts */
}

static HvVp *rr_pick_next(void *policy, HvLp *lp, uint64_t now, uint64_t *ret_slice_ns,
                          uint64_t *ret_retry_ns)
{
        RoundRobin *rr = policy;
        GList *link = g_queue_peek_head_link(&rr->runqueue);
        HvVp *vp;

        (void)lp;
        (void)now;
        (void)ret_slice_ns; /* the core's default slice */
        (void)ret_retry_ns; /* nothing is held back: idle until kicked */
        /* The first in line whose ganged sibling is not on an LP. */
        while (link && hv_sched_vp_gang_blocked(link->data))
                link = link->next;
        if (!link)
                return NULL;
        vp = link->data;
        rr_dequeue(rr, vp->policy_data);
        return vp;
}

static void rr_vp_put(void *policy, HvVp *vp, HvLp *lp, uint64_t ran_ns, uint64_t now,
                      HvSchedPutReason reason)
{
        (void)lp;
        (void)ran_ns;
        (void)now;
        if (reason != HV_SCHED_PUT_BLOCKED) /* a yielder goes to the tail, behind every other */
                rr_enqueue(policy, vp->policy_data);
}

const HvSchedOps hv_sched_round_robin_ops = {
        .name = "round-robin",
        .init = rr_init,
        .free = rr_free,
        .vp_add = rr_vp_add,
        .vp_remove = rr_vp_remove,
        .vp_wake = rr_vp_wake,
        .pick_next = rr_pick_next,
        .vp_put = rr_vp_put,
};
