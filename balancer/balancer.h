/* The Dynamic Memory balancer: a snapshot of the host and its VMs in, add/remove actions and counters out.
 * Pure policy (no I/O, no clock, no main loop); the design note is at the top of balancer.c. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Memory moves in whole units, Hyper-V's granularity; Minimum and Maximum are multiples of it (assigned
 * memory may fall between units when a balloon comes back short: the balancer counts whole units of it). */
#define BALANCER_UNIT_BYTES (UINT64_C(2) << 20)
#define BALANCER_MINIMUM_FLOOR_BYTES (UINT64_C(32) << 20) /* Set-VMMemory's smallest MinimumBytes */
#define BALANCER_BUFFER_MIN 5
#define BALANCER_BUFFER_MAX 2000
#define BALANCER_PRIORITY_MAX 100
#define BALANCER_PRIORITY_BAND_WIDTH 20 /* bands 0-19, 20-39, 40-59, 60-79, 80-100 */
#define BALANCER_N_BANDS 5
#define BALANCER_PRESSURE_WINDOW 60 /* ticks behind Average/Minimum/Maximum Pressure */
#define BALANCER_REASON_MAX 128

/* Tunables; balancer_config_init_default() gives the documented defaults (see balancer.c). Byte sizes are
 * rounded down to whole units and must leave at least one unit. */
typedef struct BalancerConfig {
        uint64_t max_add_per_vm_bytes;         /* largest add to one VM in one tick */
        uint64_t max_remove_per_vm_bytes;      /* largest remove from one VM in one tick that makes it page */
        uint64_t max_remove_free_per_vm_bytes; /* ...and one that leaves it all it has committed */
        uint64_t max_add_total_bytes;          /* all adds of one tick together */
        uint64_t max_remove_total_bytes;       /* all removes of one tick together */
        uint64_t min_step_bytes;               /* no smaller move, unless it restores a guarantee... */
        uint32_t min_step_divisor;             /* ...nor one smaller than assigned / min_step_divisor */
        uint32_t reversal_hold_ticks;          /* no reversal within this many ticks of the last action... */
        uint32_t urgent_pressure;              /* ...unless an add is for a VM at or above this pressure */
        uint64_t report_stale_ns;              /* a guest report older than this is missing */
} BalancerConfig;

typedef struct BalancerVm {
        uint64_t id; /* unique within a snapshot; history is kept by id */
        bool dynamic_memory_enabled;
        bool running;
        uint64_t minimum_bytes;
        uint64_t maximum_bytes;
        uint32_t buffer_percent;       /* 5..2000 */
        uint32_t priority;             /* 0..100 */
        uint64_t assigned_bytes;       /* assigned now, including memory a balloon has been asked for but not
                                          returned */
        uint64_t pending_remove_bytes; /* balloon requested, pages not yet back in the pool */
        uint64_t committed_bytes;      /* the guest's last report */
        uint64_t committed_time_ns;    /* when that report arrived (host clock of now_ns); 0: never */
        uint64_t goal_cap_bytes;       /* goal seeking's cap on want (balancer-goal.h); 0: none */
        bool goal_quiet;               /* goal seeking and paging in under its threshold: the pressure over
                                          100 is cold pages left on the paging disk, not a shortage, so the
                                          host's figures leave this VM out */
} BalancerVm;

typedef struct BalancerHost {
        uint64_t now_ns;               /* monotonic; only used to age guest reports */
        uint64_t pool_total_bytes;     /* the hypervisor's machine memory pool */
        uint64_t pool_available_bytes; /* unassigned now */
        uint64_t reserve_bytes;        /* never given to a VM */
} BalancerHost;

typedef struct BalancerSnapshot {
        BalancerHost host;
        const BalancerVm *vms;
        size_t n_vms;
} BalancerSnapshot;

typedef enum BalancerActionKind {
        BALANCER_ACTION_ADD = 1,    /* grow assigned memory: deflate the balloon first, hot-add the rest */
        BALANCER_ACTION_REMOVE = 2, /* shrink it: inflate the balloon; pages go back to the pool */
} BalancerActionKind;

typedef struct BalancerAction {
        uint64_t vm_id;
        BalancerActionKind kind;
        uint64_t bytes;                   /* a whole number of units, > 0 */
        char reason[BALANCER_REASON_MAX]; /* for the event log */
} BalancerAction;

typedef enum BalancerVmStatus {
        BALANCER_VM_BALANCED,      /* running with Dynamic Memory and a fresh report */
        BALANCER_VM_NOT_MANAGED,   /* Dynamic Memory off or not running: its memory counts as used */
        BALANCER_VM_NOT_REPORTING, /* report missing or stale: held where it is */
        BALANCER_VM_INVALID,       /* settings the balancer cannot honour (status_reason): held */
} BalancerVmStatus;

/* Hyper-V's "Dynamic Memory VM" set, plus what Get-VM shows. Pressures are percent. */
typedef struct BalancerVmCounters {
        uint64_t vm_id;
        BalancerVmStatus status;
        const char *status_reason; /* static string, NULL when balanced */
        unsigned band;             /* priority / BALANCER_PRIORITY_BAND_WIDTH, capped */
        uint64_t assigned_bytes;   /* Physical Memory */
        uint64_t want_bytes;       /* committed × (1 + buffer), clamped; 0 unless balanced */
        uint64_t target_bytes;     /* where this tick's plan heads; assigned unless balanced */
        uint32_t current_pressure; /* last reported committed / assigned */
        uint32_t average_pressure; /* over the last BALANCER_PRESSURE_WINDOW reported ticks */
        uint32_t minimum_pressure; /* same window */
        uint32_t maximum_pressure; /* same window */
        uint64_t added_bytes;      /* Added Memory: total of the add actions issued */
        uint64_t removed_bytes;    /* Removed Memory */
        uint64_t add_operations;   /* Memory Add Operations */
        uint64_t remove_operations;
} BalancerVmCounters;

/* Hyper-V's "Dynamic Memory Balancer" set. */
typedef struct BalancerHostCounters {
        uint64_t available_bytes;         /* pool available above the reserve */
        uint32_t average_pressure;        /* mean of the balanced VMs' current pressures (not goal_quiet) */
        uint32_t system_current_pressure; /* their Σ committed / Σ assigned */
} BalancerHostCounters;

typedef enum BalancerOutcome {
        BALANCER_OUTCOME_NOTHING_TO_BALANCE, /* no balanced VM */
        BALANCER_OUTCOME_ENOUGH,             /* every balanced VM is headed for what it wants */
        BALANCER_OUTCOME_SHORTAGE,           /* bands above short_band get what they want, short_band is
                                                equalised at band_target_pressure, lower bands at minimum */
        BALANCER_OUTCOME_BELOW_FLOOR,        /* even all at minimum the reserve is not covered */
} BalancerOutcome;

typedef struct BalancerPlan {
        uint64_t tick; /* 1 for the first plan of a Balancer */
        BalancerOutcome outcome;
        unsigned short_band;
        uint32_t band_target_pressure;
        bool prompt;       /* made by balancer_plan_prompt */
        bool room;         /* the pool covered every add under way: adds took their whole gap */
        size_t n_deferred; /* balanced VMs still short of their target after this tick's actions */
        size_t n_actions;
        BalancerAction *actions; /* at most one per VM */
        size_t n_vms;
        BalancerVmCounters *vms; /* in snapshot order */
        BalancerHostCounters host;
} BalancerPlan;

typedef struct Balancer Balancer;

void balancer_config_init_default(BalancerConfig *ret_config);

/* config NULL means the defaults. Returns 0, or -EINVAL for a config with a zero bound. */
int balancer_new(const BalancerConfig *config, Balancer **ret_balancer);
void balancer_free(Balancer *balancer);

/* One tick. Returns 0 and a plan, or -EINVAL (nothing changed, no plan) for a malformed snapshot: NULL
 * pointers, duplicate VM ids, available above total. A VM with bad settings is not an error: it is held
 * and reported BALANCER_VM_INVALID. Work is O(n log n) in the snapshot's VMs. */
int balancer_plan(Balancer *balancer, const BalancerSnapshot *snapshot, BalancerPlan **ret_plan);
/* A plan between two ticks, for a guest that reported a step up in demand: the same targets, but it only
 * adds, and only when the host has room for every add under way (see "Prompt plans" in balancer.c); it
 * does not advance the tick (plan->tick is the current one) and spends what is left of the tick's add
 * budget. Call it at most a few times a tick (vmmsd: once per 200 ms at most). Same returns as
 * balancer_plan. */
int balancer_plan_prompt(Balancer *balancer, const BalancerSnapshot *snapshot, BalancerPlan **ret_plan);
void balancer_plan_free(BalancerPlan *plan);

/* Hyper-V's memory pressure: committed * 100 / assigned, rounded to the nearest percent; saturates
 * rather than wraps on absurd guest figures, UINT32_MAX for nothing assigned. Get-VM and the counters
 * use it for static memory too, so every figure of a VM's pressure is this one. */
uint32_t balancer_pressure(uint64_t committed, uint64_t assigned);

const char *balancer_outcome_to_string(BalancerOutcome outcome);
const char *balancer_vm_status_to_string(BalancerVmStatus status);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Balancer, balancer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BalancerPlan, balancer_plan_free)
