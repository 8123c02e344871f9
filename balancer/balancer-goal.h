/* Goal seeking (Set-VMMemory -GoalSeeking): per VM, a cap on the balancer's target that walks down to the
 * smallest footprint whose paging stays under a threshold. Pure (no I/O, no clock); the design note is at the
 * top of balancer-goal.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define BALANCER_GOAL_PAGE_BYTES UINT64_C(4096) /* the guest's page, the unit of its paging counters */

/* Tunables; balancer_goal_config_init_default() gives the documented defaults. */
typedef struct BalancerGoalConfig {
        uint64_t paging_threshold_bytes_per_s; /* page-ins above this: the footprint is too small */
        uint64_t min_step_bytes;               /* no probe smaller than this (nor than assigned / 32) */
        uint32_t first_step_divisor;           /* the first probe takes assigned / this */
        uint32_t settle_ticks;                 /* quiet samples at the cap before the next probe down */
        uint32_t confirm_ticks;                /* paging samples in a row before the cap goes up */
        uint32_t hold_ticks;                   /* after a raise, no probe down for this long */
        uint32_t floor_ticks;                  /* a level that paged is not probed again for this long... */
        uint32_t floor_ticks_max;              /* ...doubling each time it pages again, up to this */
} BalancerGoalConfig;

/* One sample: the VM's settings, what it holds and the guest's last report. */
typedef struct BalancerGoalInput {
        uint64_t minimum_bytes;
        uint64_t maximum_bytes;
        uint64_t assigned_bytes;
        uint64_t committed_bytes;
        uint64_t page_in_total; /* pages the guest has read back from its paging disk, since boot */
        uint64_t report_ns;     /* when that report arrived (monotonic); 0: no report yet */
} BalancerGoalInput;

typedef enum BalancerGoalDecision {
        BALANCER_GOAL_WAIT,   /* nothing judged: no new report, too soon, or the footprint still moving */
        BALANCER_GOAL_HOLD,   /* judged, no move: settling, held after a raise, or paging not yet confirmed */
        BALANCER_GOAL_PROBE,  /* quiet at the cap: the cap went down one step */
        BALANCER_GOAL_RAISE,  /* paging confirmed: the cap went up */
        BALANCER_GOAL_GROW,   /* the guest committed more: the cap went up by as much */
        BALANCER_GOAL_AT_GOAL /* quiet, and the next step down is a level known to page */
} BalancerGoalDecision;

/* Per-VM state; zero it (or balancer_goal_reset) before the first sample. */
typedef struct BalancerGoal {
        bool started;
        uint64_t cap_bytes;
        uint64_t step_bytes;  /* the next probe's size */
        uint64_t floor_bytes; /* a footprint that paged; 0: none known */
        uint64_t floor_until; /* tick at which that knowledge expires */
        uint32_t floor_ticks; /* the current expiry period (backs off) */
        bool reprobe;         /* the last probe went past an expired floor */
        uint64_t hold_until;  /* no probe down before this tick */
        uint64_t tick;        /* samples judged */
        uint32_t quiet_run;   /* quiet samples in a row */
        uint32_t paging_run;  /* paging samples in a row */
        uint32_t steady_run;  /* samples in a row with assigned unchanged */
        uint32_t raise_run;   /* raises since the last probe or goal: each one doubles the next */
        uint64_t last_assigned;
        uint64_t last_committed;
        uint64_t last_page_in;
        uint64_t last_report_ns;
        uint64_t rate_bytes_per_s; /* the last page-in rate measured */
        uint64_t raises;           /* counters, for Get-VMMemory and the bench */
        uint64_t probes;
} BalancerGoal;

void balancer_goal_config_init_default(BalancerGoalConfig *ret_config);
void balancer_goal_reset(BalancerGoal *goal);

/* Feeds one sample; returns the cap on the VM's target (a whole number of balancer units, within [Minimum,
 * Maximum]) and, if ret_decision is not NULL, what this sample decided. Call once per balancer tick; samples
 * without a new report change nothing. */
uint64_t balancer_goal_sample(BalancerGoal *goal, const BalancerGoalConfig *config,
                              const BalancerGoalInput *in, BalancerGoalDecision *ret_decision);

const char *balancer_goal_decision_to_string(BalancerGoalDecision decision);
