/* Auto-balance's decision (the rules are in vmms-cluster-balance-rule.h). */
#include <string.h>

#include "vmms-cluster-balance-rule.h"

#define RECENT_MOVES 8 /* remembered for the ping-pong rule: more than a pingpong_ms holds */

typedef struct HostLooks {
        int64_t record_ms; /* the record last counted */
        unsigned over_memory, over_cpu;
        unsigned room; /* looks in a row under both thresholds */
} HostLooks;

typedef struct RecentMove {
        char *from, *to;
        int64_t at_ms;
} RecentMove;

struct ClusterBalanceRule {
        GHashTable *looks; /* host name -> HostLooks */
        bool asked;        /* last_ask_ms holds an ask */
        int64_t last_ask_ms;
        RecentMove recent[RECENT_MOVES]; /* a ring, next at recent_next */
        unsigned recent_next;
};

ClusterBalanceRule *cluster_balance_rule_new(void)
{
        ClusterBalanceRule *rule = g_new0(ClusterBalanceRule, 1);

        rule->looks = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return rule;
}

void cluster_balance_rule_forget(ClusterBalanceRule *rule)
{
        g_hash_table_remove_all(rule->looks);
        rule->asked = false;
        for (unsigned i = 0; i < RECENT_MOVES; i++) {
                g_clear_pointer(&rule->recent[i].from, g_free);
                g_clear_pointer(&rule->recent[i].to, g_free);
        }
}

void cluster_balance_rule_free(ClusterBalanceRule *rule)
{
        if (!rule)
                return;
        cluster_balance_rule_forget(rule);
        g_hash_table_unref(rule->looks);
        g_free(rule);
}

void cluster_balance_decision_clear(ClusterBalanceDecision *d)
{
        g_clear_pointer(&d->reason, g_free);
        *d = (ClusterBalanceDecision){0};
}

static HostLooks *looks_of(ClusterBalanceRule *rule, const char *name)
{
        HostLooks *l = g_hash_table_lookup(rule->looks, name);

        if (!l) {
                l = g_new0(HostLooks, 1);
                g_hash_table_insert(rule->looks, g_strdup(name), l);
        }
        return l;
}

static bool memory_over(const ClusterBalanceSettings *s, const ClusterBalanceHost *h)
{
        return s->pressure_threshold > 0 && h->average_pressure > s->pressure_threshold;
}

static bool cpu_over(const ClusterBalanceSettings *s, const ClusterBalanceHost *h)
{
        return s->cpu_wait_threshold_ns > 0 && h->cpu_wait_ns >= s->cpu_wait_threshold_ns;
}

/* Room: under every threshold that is on (a host at the pressure threshold has none). */
static bool has_room(const ClusterBalanceSettings *s, const ClusterBalanceHost *h)
{
        return (s->pressure_threshold <= 0 || h->average_pressure < s->pressure_threshold) &&
               !cpu_over(s, h) && h->memory_free_bytes > 0;
}

static void count_look(const ClusterBalanceSettings *s, HostLooks *l, const ClusterBalanceHost *h)
{
        if (!h->eligible) {
                /* Down, Paused or in a move: its figures say nothing yet (a host whose move
                 * just ended starts counting again: its cool-down). */
                *l = (HostLooks){.record_ms = h->record_ms};
                return;
        }
        if (h->record_ms == l->record_ms)
                return; /* no new record: no new look */
        l->record_ms = h->record_ms;
        l->over_memory = memory_over(s, h) ? l->over_memory + 1 : 0;
        l->over_cpu = cpu_over(s, h) ? l->over_cpu + 1 : 0;
        l->room = has_room(s, h) ? l->room + 1 : 0;
}

/* How far over its threshold a sustained sign puts the host (0: none), and which. */
static double severity(const ClusterBalanceSettings *s, const HostLooks *l, const ClusterBalanceHost *h,
                       ClusterBalanceCause *ret_cause)
{
        double memory = l->over_memory >= s->looks ? h->average_pressure / s->pressure_threshold : 0;
        double cpu = l->over_cpu >= s->looks ? h->cpu_wait_ns / s->cpu_wait_threshold_ns : 0;

        *ret_cause = memory >= cpu ? CLUSTER_BALANCE_MEMORY : CLUSTER_BALANCE_CPU;
        return MAX(memory, cpu);
}

/* Whether one of `from`'s VMs fits on `to`: its memory and its Reserve. */
static bool one_fits(const ClusterBalanceHost *from, const ClusterBalanceHost *to)
{
        for (size_t i = 0; i < from->n_vms; i++)
                if (from->vms[i].startup_bytes <= to->memory_free_bytes &&
                    (uint64_t)to->reservation_used_pct + from->vms[i].reserve_pct <=
                            to->reservation_capacity_pct)
                        return true;
        return false;
}

static bool goes_back(const ClusterBalanceRule *rule, const ClusterBalanceSettings *s, const char *from,
                      const char *to, int64_t now_ms)
{
        for (unsigned i = 0; i < RECENT_MOVES; i++) {
                const RecentMove *m = &rule->recent[i];

                if (m->from && strcmp(m->from, to) == 0 && strcmp(m->to, from) == 0 &&
                    now_ms - m->at_ms < s->pingpong_ms)
                        return true;
        }
        return false;
}

/* Better target for `cause`: memory by the most free memory, CPU by the least wait. */
static bool better(ClusterBalanceCause cause, const ClusterBalanceHost *k, const ClusterBalanceHost *best)
{
        if (!best)
                return true;
        if (cause == CLUSTER_BALANCE_CPU) {
                if (k->cpu_wait_ns != best->cpu_wait_ns)
                        return k->cpu_wait_ns < best->cpu_wait_ns;
                return k->memory_free_bytes > best->memory_free_bytes;
        }
        if (k->memory_free_bytes != best->memory_free_bytes)
                return k->memory_free_bytes > best->memory_free_bytes;
        return k->cpu_wait_ns < best->cpu_wait_ns;
}

static char *reason_of(const ClusterBalanceSettings *s, const ClusterBalanceDecision *d)
{
        const ClusterBalanceHost *f = d->from, *t = d->to;

        if (d->cause == CLUSTER_BALANCE_CPU)
                return g_strdup_printf("%s over-committed by CPU: CPU Wait Time Per Dispatch %.0f µs at or "
                                       "over %.0f for %u looks, CPU load %.0f %%; %s has room: CPU Wait Time "
                                       "Per Dispatch %.0f µs, %" G_GUINT64_FORMAT " MiB free",
                                       f->name, f->cpu_wait_ns / 1000, s->cpu_wait_threshold_ns / 1000,
                                       d->looks, f->cpu_load_pct, t->name, t->cpu_wait_ns / 1000,
                                       t->memory_free_bytes >> 20);
        return g_strdup_printf(
                "%s over-committed: Average Pressure %.0f %% over %.0f for %u looks, Available "
                "Memory %" G_GUINT64_FORMAT " MiB; %s has room: Average Pressure %.0f %%, "
                "%" G_GUINT64_FORMAT " MiB free",
                f->name, f->average_pressure, s->pressure_threshold, d->looks,
                f->available_memory_bytes >> 20, t->name, t->average_pressure, t->memory_free_bytes >> 20);
}

void cluster_balance_rule_decide(ClusterBalanceRule *rule, const ClusterBalanceSettings *s,
                                 const ClusterBalanceHost *hosts, size_t n_hosts, bool in_flight,
                                 int64_t now_ms, ClusterBalanceDecision *ret)
{
        const ClusterBalanceHost *from = NULL, *to = NULL;
        ClusterBalanceCause cause = CLUSTER_BALANCE_NONE;
        double worst = 0;

        *ret = (ClusterBalanceDecision){0};
        for (size_t i = 0; i < n_hosts; i++)
                count_look(s, looks_of(rule, hosts[i].name), &hosts[i]);
        if (in_flight || (rule->asked && now_ms - rule->last_ask_ms < s->spacing_ms))
                return; /* the rate limit: the looks above still count */
        for (size_t i = 0; i < n_hosts; i++) {
                ClusterBalanceCause c;
                double sev;

                if (!hosts[i].eligible)
                        continue;
                sev = severity(s, looks_of(rule, hosts[i].name), &hosts[i], &c);
                if (sev > worst) {
                        worst = sev;
                        from = &hosts[i];
                        cause = c;
                }
        }
        if (!from)
                return;
        for (size_t i = 0; i < n_hosts; i++) {
                const ClusterBalanceHost *k = &hosts[i];

                if (k == from || !k->eligible || looks_of(rule, k->name)->room < s->looks ||
                    !one_fits(from, k) || goes_back(rule, s, from->name, k->name, now_ms))
                        continue;
                if (better(cause, k, to))
                        to = k;
        }
        if (!to)
                return; /* nowhere to go */
        ret->cause = cause;
        ret->from = from;
        ret->to = to;
        ret->looks = cause == CLUSTER_BALANCE_CPU ? looks_of(rule, from->name)->over_cpu
                                                  : looks_of(rule, from->name)->over_memory;
        ret->to_reserve_room_pct = to->reservation_capacity_pct > to->reservation_used_pct
                                           ? to->reservation_capacity_pct - to->reservation_used_pct
                                           : 0;
        ret->reason = reason_of(s, ret);
}

void cluster_balance_rule_asked(ClusterBalanceRule *rule, const ClusterBalanceDecision *d, int64_t now_ms)
{
        RecentMove *m = &rule->recent[rule->recent_next];
        HostLooks *l = looks_of(rule, d->from->name);

        rule->asked = true;
        rule->last_ask_ms = now_ms;
        g_free(m->from);
        g_free(m->to);
        m->from = g_strdup(d->from->name);
        m->to = g_strdup(d->to->name);
        m->at_ms = now_ms;
        rule->recent_next = (rule->recent_next + 1) % RECENT_MOVES;
        l->over_memory = l->over_cpu = l->room = 0;
}
