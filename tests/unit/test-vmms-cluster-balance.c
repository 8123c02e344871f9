/* Auto-balance's decision (vmms-cluster-balance-rule.c), replayed look by look: each case
 * is three hosts' records over time and the move expected after each look (or none). */
#include <glib.h>
#include <string.h>

#include "vmms-cluster-balance-rule.h"

#define LOOKS 3
#define SPACING_MS 3000
#define PINGPONG_MS 30000
#define CAPACITY 200 /* 2 LPs */
#define N_HOSTS 3

typedef struct Figures {
        double pressure, wait_us;
        unsigned free_mib;
        unsigned reserve_used;
        bool out; /* Down, Paused or in a move */
} Figures;

/* Over-committed by memory, by CPU; hosts with room (more, less memory; some CPU wait);
 * hosts without room. */
#define HOT_MEM                                                                                              \
        {                                                                                                    \
                150, 10, 0, 0, false                                                                         \
        }
#define HOT_MEM_LESS                                                                                         \
        {                                                                                                    \
                130, 10, 0, 0, false                                                                         \
        }
#define HOT_CPU                                                                                              \
        {                                                                                                    \
                50, 5000, 512, 0, false                                                                      \
        }
#define HOT_BOTH                                                                                             \
        {                                                                                                    \
                110, 9000, 0, 0, false                                                                       \
        } /* CPU 9x its threshold, memory 1.1x */
#define ROOMY                                                                                                \
        {                                                                                                    \
                40, 10, 800, 0, false                                                                        \
        }
#define ROOMY_LESS                                                                                           \
        {                                                                                                    \
                40, 10, 300, 0, false                                                                        \
        }
#define ROOMY_WAITING                                                                                        \
        {                                                                                                    \
                40, 800, 900, 0, false                                                                       \
        } /* under the CPU threshold, but waits more */
#define RESERVE_FULL                                                                                         \
        {                                                                                                    \
                40, 10, 900, CAPACITY, false                                                                 \
        }
#define FULL                                                                                                 \
        {                                                                                                    \
                90, 10, 0, 0, false                                                                          \
        }
#define DOWN                                                                                                 \
        {                                                                                                    \
                40, 10, 900, 0, true                                                                         \
        }

typedef struct Step {
        Figures host[N_HOSTS];
        int64_t at_ms;  /* 0: the step's index in seconds */
        bool stale;     /* the same records as the step before: no new look */
        bool in_flight; /* a move is asked somewhere */
        int from, to;   /* the move expected (host index), -1: none */
        ClusterBalanceCause cause;
} Step;

typedef struct Case {
        const char *name;
        unsigned vm_mib, vm_reserve; /* every host's one movable VM */
        Step steps[10];
} Case;

#define NONE -1, -1, CLUSTER_BALANCE_NONE
#define MOVE(f, t) f, t, CLUSTER_BALANCE_MEMORY
#define MOVE_CPU(f, t) f, t, CLUSTER_BALANCE_CPU

static const Case cases[] = {
        {"hysteresis: over for one look fewer than needed moves nothing",
         64,
         0,
         {{{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE}}},
        {"hysteresis: over for K looks moves to the host with the most free memory",
         64,
         0,
         {{{HOT_MEM, ROOMY_LESS, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY_LESS, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY_LESS, ROOMY}, 0, false, false, MOVE(0, 2)}}},
        {"hysteresis: one look under starts the count again",
         64,
         0,
         {{{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{ROOMY, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, MOVE(0, 1)}}},
        {"hysteresis: a record seen again is not another look",
         64,
         0,
         {{{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, true, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, true, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, MOVE(0, 1)}}},
        {"hysteresis: a target needs K looks of room too",
         64,
         0,
         {{{HOT_MEM, HOT_MEM_LESS, FULL}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, FULL}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, FULL}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, FULL}, 0, false, false, MOVE(0, 1)}}},
        {"cpu: sustained CPU wait moves to the host with the least wait, not the most memory",
         64,
         0,
         {{{HOT_CPU, ROOMY_WAITING, ROOMY}, 0, false, false, NONE},
          {{HOT_CPU, ROOMY_WAITING, ROOMY}, 0, false, false, NONE},
          {{HOT_CPU, ROOMY_WAITING, ROOMY}, 0, false, false, MOVE_CPU(0, 2)}}},
        {"cpu: the sign furthest over its threshold names the cause",
         64,
         0,
         {{{HOT_BOTH, ROOMY, ROOMY_WAITING}, 0, false, false, NONE},
          {{HOT_BOTH, ROOMY, ROOMY_WAITING}, 0, false, false, NONE},
          {{HOT_BOTH, ROOMY, ROOMY_WAITING}, 0, false, false, MOVE_CPU(0, 1)}}},
        {"target: the most over-committed host is the source",
         64,
         0,
         {{{HOT_MEM_LESS, HOT_MEM, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM_LESS, HOT_MEM, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM_LESS, HOT_MEM, ROOMY}, 0, false, false, MOVE(1, 2)}}},
        {"reserve admission: a host with its Reserve taken gets no VM with a Reserve",
         64,
         50,
         {{{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, MOVE(0, 2)}}},
        {"reserve admission: a VM without a Reserve may go to that host",
         64,
         0,
         {{{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, RESERVE_FULL, ROOMY_LESS}, 0, false, false, MOVE(0, 1)}}},
        {"no room: nothing moves when no other host has room",
         64,
         0,
         {{{HOT_MEM, FULL, HOT_MEM_LESS}, 0, false, false, NONE},
          {{HOT_MEM, FULL, HOT_MEM_LESS}, 0, false, false, NONE},
          {{HOT_MEM, FULL, HOT_MEM_LESS}, 0, false, false, NONE},
          {{HOT_MEM, FULL, HOT_MEM_LESS}, 0, false, false, NONE},
          {{HOT_MEM, FULL, HOT_MEM_LESS}, 0, false, false, NONE}}},
        {"no room: nothing moves when the VM fits on no host",
         1024,
         0,
         {{{HOT_MEM, ROOMY, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY_LESS}, 0, false, false, NONE}}},
        {"no room: a Down or Paused host neither gives nor takes",
         64,
         0,
         {{{HOT_MEM, DOWN, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, DOWN, ROOMY_LESS}, 0, false, false, NONE},
          {{HOT_MEM, DOWN, ROOMY_LESS}, 0, false, false, MOVE(0, 2)}}},
        {"rate limit: nothing is asked while a move is in flight",
         64,
         0,
         {{{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, true, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, true, NONE},
          {{HOT_MEM, ROOMY, ROOMY}, 0, false, false, MOVE(0, 1)}}},
        {"rate limit: two asks are spaced",
         64,
         0,
         {{{HOT_MEM, HOT_MEM_LESS, ROOMY}, 1000, false, false, NONE},
          {{HOT_MEM, HOT_MEM_LESS, ROOMY}, 2000, false, false, NONE},
          {{HOT_MEM, HOT_MEM_LESS, ROOMY}, 3000, false, false, MOVE(0, 2)},
          {{FULL, HOT_MEM_LESS, ROOMY}, 4000, false, false, NONE},
          {{FULL, HOT_MEM_LESS, ROOMY}, 5500, false, false, NONE},
          {{FULL, HOT_MEM_LESS, ROOMY}, 6000, false, false, MOVE(1, 2)}}},
        {"cool-down: the source counts K new looks before it asks again",
         64,
         0,
         {{{HOT_MEM, FULL, ROOMY}, 1000, false, false, NONE},
          {{HOT_MEM, FULL, ROOMY}, 2000, false, false, NONE},
          {{HOT_MEM, FULL, ROOMY}, 3000, false, false, MOVE(0, 2)},
          {{HOT_MEM, FULL, ROOMY}, 10000, false, false, NONE},
          {{HOT_MEM, FULL, ROOMY}, 11000, false, false, NONE},
          {{HOT_MEM, FULL, ROOMY}, 12000, false, false, MOVE(0, 2)}}},
        {"no ping-pong: no move back the way one went until the window passed",
         64,
         0,
         {{{HOT_MEM, ROOMY, FULL}, 1000, false, false, NONE},
          {{HOT_MEM, ROOMY, FULL}, 2000, false, false, NONE},
          {{HOT_MEM, ROOMY, FULL}, 3000, false, false, MOVE(0, 1)},
          {{ROOMY, HOT_MEM, FULL}, 10000, false, false, NONE},
          {{ROOMY, HOT_MEM, FULL}, 11000, false, false, NONE},
          {{ROOMY, HOT_MEM, FULL}, 12000, false, false, NONE},
          {{ROOMY, HOT_MEM, FULL}, 20000, false, false, NONE},
          {{ROOMY, HOT_MEM, FULL}, 3000 + PINGPONG_MS, false, false, MOVE(1, 0)}}},
};

static const ClusterBalanceSettings settings = {
        .pressure_threshold = 100,
        .cpu_wait_threshold_ns = 1000 * 1000,
        .looks = LOOKS,
        .spacing_ms = SPACING_MS,
        .pingpong_ms = PINGPONG_MS,
};

static const char *const names[N_HOSTS] = {"hosta", "hostb", "hostc"};

/* One case of the table, look by look. */
static void test_case(const void *data)
{
        const Case *c = data;
        g_autoptr(ClusterBalanceRule) rule = cluster_balance_rule_new();
        ClusterBalanceVm vm = {.startup_bytes = (uint64_t)c->vm_mib << 20, .reserve_pct = c->vm_reserve};
        int64_t record = 0;

        {
                for (size_t i = 0; i < G_N_ELEMENTS(c->steps) && c->steps[i].host[0].pressure; i++) {
                        const Step *s = &c->steps[i];
                        int64_t now = s->at_ms ? s->at_ms : (int64_t)(i + 1) * 1000;
                        ClusterBalanceHost hosts[N_HOSTS];
                        ClusterBalanceDecision d;
                        int from = -1, to = -1;

                        if (!s->stale)
                                record++;
                        for (int h = 0; h < N_HOSTS; h++) {
                                const Figures *f = &s->host[h];

                                hosts[h] = (ClusterBalanceHost){
                                        .name = names[h],
                                        .eligible = !f->out,
                                        .record_ms = record,
                                        .average_pressure = f->pressure,
                                        .cpu_wait_ns = f->wait_us * 1000,
                                        .memory_free_bytes = (uint64_t)f->free_mib << 20,
                                        .reservation_used_pct = f->reserve_used,
                                        .reservation_capacity_pct = CAPACITY,
                                        .vms = &vm,
                                        .n_vms = 1,
                                };
                        }
                        cluster_balance_rule_decide(rule, &settings, hosts, N_HOSTS, s->in_flight, now, &d);
                        if (d.from)
                                from = (int)(d.from - hosts);
                        if (d.to)
                                to = (int)(d.to - hosts);
                        if (from != s->from || to != s->to || d.cause != s->cause)
                                g_error("%s, look %zu: expected %d -> %d (cause %d), decided %d -> %d (cause "
                                        "%d): %s",
                                        c->name, i + 1, s->from, s->to, s->cause, from, to, d.cause,
                                        d.reason ? d.reason : "no move");
                        if (d.cause != CLUSTER_BALANCE_NONE) {
                                g_assert_nonnull(d.reason);
                                g_assert_nonnull(strstr(d.reason, names[from]));
                                g_assert_nonnull(strstr(d.reason, names[to]));
                                g_assert_cmpuint(d.looks, >=, LOOKS);
                                cluster_balance_rule_asked(rule, &d, now);
                        } else {
                                g_assert_null(d.reason);
                        }
                        cluster_balance_decision_clear(&d);
                }
        }
}

/* "hysteresis: one look under starts the count again" -> "/cluster-balance/hysteresis-one-look-under-..." */
static char *case_path(const char *name)
{
        GString *path = g_string_new("/cluster-balance/");
        bool dash = false;

        for (const char *p = name; *p; p++) {
                if (g_ascii_isalnum(*p)) {
                        if (dash && path->str[path->len - 1] != '/')
                                g_string_append_c(path, '-');
                        g_string_append_c(path, g_ascii_tolower(*p));
                        dash = false;
                } else {
                        dash = true;
                }
        }
        return g_string_free(path, FALSE);
}

/* What the event says: the cause by name, and the figures behind it. */
static void test_reason_names_cause_and_figures(void)
{
        g_autoptr(ClusterBalanceRule) rule = cluster_balance_rule_new();
        ClusterBalanceVm vm = {.startup_bytes = 64 << 20};
        ClusterBalanceHost hosts[2] = {
                {.name = "hosta",
                 .eligible = true,
                 .average_pressure = 50,
                 .cpu_wait_ns = 4.2e6,
                 .cpu_load_pct = 99,
                 .memory_free_bytes = 512u << 20,
                 .reservation_capacity_pct = CAPACITY,
                 .vms = &vm,
                 .n_vms = 1},
                {.name = "hostb",
                 .eligible = true,
                 .average_pressure = 30,
                 .cpu_wait_ns = 20e3,
                 .memory_free_bytes = 700u << 20,
                 .reservation_capacity_pct = CAPACITY,
                 .vms = &vm,
                 .n_vms = 1},
        };
        ClusterBalanceDecision d = {0};

        for (int i = 1; i <= LOOKS; i++) {
                hosts[0].record_ms = hosts[1].record_ms = i;
                cluster_balance_decision_clear(&d);
                cluster_balance_rule_decide(rule, &settings, hosts, 2, false, i * 1000, &d);
        }
        g_assert_cmpint(d.cause, ==, CLUSTER_BALANCE_CPU);
        g_assert_cmpstr(
                d.reason, ==,
                "hosta over-committed by CPU: CPU Wait Time Per Dispatch 4200 µs at or over 1000 for 3 "
                "looks, CPU load 99 %; hostb has room: CPU Wait Time Per Dispatch 20 µs, 700 MiB free");
        g_assert_cmpuint(d.to_reserve_room_pct, ==, CAPACITY);
        cluster_balance_decision_clear(&d);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
                g_autofree char *path = case_path(cases[k].name);

                g_test_add_data_func(path, &cases[k], test_case);
        }
        g_test_add_func("/cluster-balance/reason-names-cause-and-figures",
                        test_reason_names_cause_and_figures);
        return g_test_run();
}
