/* The cost of a scheduling decision, without the host in the way: N CPU-bound VPs on
 * 2 LPs driven through the policy's ops (vp_put of the VP leaving, pick_next of the
 * next) on a simulated clock, timed on the real one. Prints JSON for each policy and N.
 * Usage: bench-sched-policy [DISPATCHES (default 200000)] */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench-json.h"
#include "hv-sched.h"

#define N_LPS 2u
#define SLICE_NS (10ull * 1000000ull)

static uint64_t thread_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double ns_per_dispatch(const HvSchedOps *ops, uint32_t n_vps, uint64_t dispatches)
{
        HvLp lps[N_LPS] = {{.index = 0}, {.index = 1}};
        HvSchedPolicyConfig config = {.lps = lps, .n_lps = N_LPS, .n_nodes = 1, .slice_ns = SLICE_NS};
        HvPartition partition = {.processor = HV_PROCESSOR_DEFAULTS, .max_vp_count = n_vps};
        HvVp *vps = g_new0(HvVp, n_vps);
        void *policy;
        uint64_t now = 0, t0, t1;

        partition.vps = g_new0(HvVp *, n_vps);
        if (ops->init(&config, &policy) < 0)
                abort();
        for (uint32_t i = 0; i < n_vps; i++) {
                vps[i].partition = &partition;
                vps[i].index = i;
                partition.vps[i] = &vps[i];
                partition.vp_count = i + 1;
                if (ops->vp_add(policy, &vps[i]) < 0)
                        abort();
                ops->vp_wake(policy, &vps[i], now, false);
        }
        for (uint32_t l = 0; l < N_LPS; l++) {
                uint64_t slice = SLICE_NS, retry = UINT64_MAX;

                lps[l].current = ops->pick_next(policy, &lps[l], now, &slice, &retry);
                lps[l].current->last_lp = &lps[l];
        }
        t0 = thread_ns();
        for (uint64_t d = 0; d < dispatches; d++) {
                HvLp *lp = &lps[d % N_LPS];
                uint64_t slice = SLICE_NS, retry = UINT64_MAX;

                now += SLICE_NS / N_LPS;
                ops->vp_put(policy, lp->current, lp, SLICE_NS, now, HV_SCHED_PUT_PREEMPTED);
                lp->current = ops->pick_next(policy, lp, now, &slice, &retry);
                lp->current->last_lp = lp;
        }
        t1 = thread_ns();
        for (uint32_t i = 0; i < n_vps; i++)
                ops->vp_remove(policy, &vps[i]);
        ops->free(policy);
        g_free(partition.vps);
        g_free(vps);
        return (double)(t1 - t0) / (double)dispatches;
}

int main(int argc, char **argv)
{
        static const HvSchedOps *const policies[] = {&hv_sched_share_ops, &hv_sched_round_robin_ops};
        static const uint32_t sizes[] = {2, 16, 256};
        uint64_t dispatches = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
        JsonArray *results = json_array_new();

        for (size_t p = 0; p < G_N_ELEMENTS(policies); p++)
                for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
                        double ns = ns_per_dispatch(policies[p], sizes[s], dispatches);
                        JsonObject *result = json_object_new();

                        json_object_set_string_member(result, "scheduler", policies[p]->name);
                        json_object_set_int_member(result, "vps", sizes[s]);
                        json_object_set_double_member(result, "ns_per_decision", ns);
                        /* At the default slice an LP makes 1e9 / SLICE_NS decisions a second. */
                        json_object_set_double_member(result, "pct_of_lp_at_10ms_slices",
                                                      100.0 * ns / (double)SLICE_NS);
                        json_array_add_object_element(results, result);
                }
        bench_json_print_array(results);
        return 0;
}
