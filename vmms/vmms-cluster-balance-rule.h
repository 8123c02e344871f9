/* Auto-balance's decision, apart from etcd: which over-committed host moves a VM, to
 * which host with room, and why. Pure: no I/O, no clock (the caller says what time it
 * is), so a table of cases can replay it (tests/unit/test-vmms-cluster-balance.c).
 *
 * A host is over-committed by memory when its Dynamic Memory balancer's Average Pressure
 * is over the pressure threshold, by CPU when the CPU Wait Time Per Dispatch of its VPs
 * is at or over the CPU wait threshold; each record it writes (one a period) is a look.
 *
 * - Hysteresis: a host moves a VM only after `looks` looks in a row over a threshold,
 *   and takes one only after as many looks under both; a host in a move, Down or Paused
 *   counts from zero again once it is eligible, and so does the source after an ask.
 * - Rate limit: one move in flight in the cluster, and asks at least `spacing_ms` apart.
 * - Target: an eligible host with room in which one of the source's movable VMs fits,
 *   both its memory (startup <= free) and its Reserve (Reserve admission: used + the VM's
 *   Reserve <= capacity); for a memory move the one with the most free memory (ties: the
 *   least CPU wait), for a CPU move the one with the least CPU wait (ties: the most free
 *   memory). No such host: no move.
 * - No ping-pong: a move back the way a move went (to -> from) less than `pingpong_ms`
 *   after it is not asked.
 * When both hosts' signs hold, the source is the one furthest over its threshold (value /
 * threshold), and its cause is the rule that says so. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum ClusterBalanceCause {
        CLUSTER_BALANCE_NONE,   /* no move */
        CLUSTER_BALANCE_MEMORY, /* the source's Average Pressure */
        CLUSTER_BALANCE_CPU,    /* the source's CPU Wait Time Per Dispatch */
} ClusterBalanceCause;

/* A running VM of a host that could move (what the VM's owner key says). */
typedef struct ClusterBalanceVm {
        uint64_t startup_bytes;
        uint32_t reserve_pct; /* Reserve x VPs, % of one LP */
} ClusterBalanceVm;

typedef struct ClusterBalanceHost {
        const char *name;
        bool eligible;     /* Up, not Paused, no move asked of it or towards it */
        int64_t record_ms; /* its last renewal: a record not seen before is a look */
        double average_pressure;
        double cpu_wait_ns; /* CPU Wait Time Per Dispatch over its VPs, ns */
        double cpu_load_pct;
        uint64_t memory_free_bytes;
        uint64_t available_memory_bytes;
        uint32_t reservation_used_pct, reservation_capacity_pct;
        const ClusterBalanceVm *vms; /* its movable VMs */
        size_t n_vms;
} ClusterBalanceHost;

typedef struct ClusterBalanceSettings {
        double pressure_threshold;    /* %; 0: no memory rule */
        double cpu_wait_threshold_ns; /* 0: no CPU rule */
        unsigned looks;               /* the hysteresis: looks in a row */
        int64_t spacing_ms;           /* the rate limit: between two asks */
        int64_t pingpong_ms;          /* a move back is not asked sooner */
} ClusterBalanceSettings;

typedef struct ClusterBalanceDecision {
        ClusterBalanceCause cause;      /* NONE: no move */
        const ClusterBalanceHost *from; /* borrowed from the hosts given */
        const ClusterBalanceHost *to;
        unsigned looks;               /* how many looks `from` has been over */
        uint32_t to_reserve_room_pct; /* the target's capacity - used: the VM's Reserve must fit */
        char *reason;                 /* the figures that made it ask; NULL for no move */
} ClusterBalanceDecision;

typedef struct ClusterBalanceRule ClusterBalanceRule;

ClusterBalanceRule *cluster_balance_rule_new(void);
void cluster_balance_rule_free(ClusterBalanceRule *rule);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ClusterBalanceRule, cluster_balance_rule_free)
/* A new term: the looks, the rate limit and the moves remembered start over. */
void cluster_balance_rule_forget(ClusterBalanceRule *rule);

/* Counts each host's new look, then decides. `in_flight`: a move is asked and not ended
 * yet somewhere in the cluster. Free ret->reason with cluster_balance_decision_clear. */
void cluster_balance_rule_decide(ClusterBalanceRule *rule, const ClusterBalanceSettings *settings,
                                 const ClusterBalanceHost *hosts, size_t n_hosts, bool in_flight,
                                 int64_t now_ms, ClusterBalanceDecision *ret);
/* The ask of `d` was written at `now_ms`: the rate limit and the ping-pong memory start,
 * and its source counts its looks from zero. */
void cluster_balance_rule_asked(ClusterBalanceRule *rule, const ClusterBalanceDecision *d, int64_t now_ms);
void cluster_balance_decision_clear(ClusterBalanceDecision *d);
