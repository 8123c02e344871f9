/* vmmsd's supervision of the hypervisor (hvd): starting it, one connection to it on
 * the main loop, counter samples, and knowing when it is stuck or gone. No call here
 * waits for hvd: a request that is not answered by its deadline makes hvd "not
 * answering", so Get-VM, events and D-Bus keep answering from the core. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hv.pb-c.h"
#include "vmms-error.h"

#define VMMS_HVD_DEADLINE_MS 2000

typedef struct VmmsHvd VmmsHvd;

/* hvd's own options that vmmsd passes on when it starts hvd (hvd-main.c checks them
 * again). Zero or NULL: hvd's default. `scheduler` is a static string. */
typedef struct VmmsHvdOptions {
        const char *scheduler; /* "share" or "round-robin" */
        uint32_t numa_nodes;
        uint32_t slice_ms;
        bool io_boost;
        const char *cpu_model; /* hvd --cpu-model; NULL: the engine's default */
} VmmsHvdOptions;

typedef struct VmmsHvdConfig {
        const char *socket_path;
        const char *hvd_path;
        const char *log_path; /* hvd's stdout and stderr when vmmsd starts it */
        uint64_t memory;      /* pool size; 0 = hvd's default */
        uint32_t lps;         /* 0 = hvd's default */
        bool spawn;           /* start hvd when it is not running */
        VmmsHvdOptions options;
} VmmsHvdConfig;

typedef struct VmmsHvdCallbacks {
        /* A new counter sample; `prev` is NULL for the first after a (re)connection. */
        void (*sample)(const Vmms__Hv__Counters *prev, const Vmms__Hv__Counters *cur, void *userdata);
        /* hvd has gone (its connection closed): every partition it held is gone too. */
        void (*lost)(const char *why, void *userdata);
        /* Connected again after it was lost. */
        void (*ready)(void *userdata);
} VmmsHvdCallbacks;

/* Connects to hvd, starting it first if it is not running and config->spawn; this is
 * the one place that waits (up to 10 s, at vmmsd's start-up and after hvd died). */
int vmms_hvd_new(const VmmsHvdConfig *config, const VmmsHvdCallbacks *callbacks, void *userdata,
                 VmmsHvd **ret, char **ret_error);
void vmms_hvd_free(VmmsHvd *hvd);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmmsHvd, vmms_hvd_free)

/* Once a second: reconnects if hvd was lost, asks for counters if no request is out. */
void vmms_hvd_tick(VmmsHvd *hvd);

/* Asks hvd for an answer now; `fn` runs once, with NULL when hvd answered within the
 * deadline, or with an Unavailable error naming hvd ("the hypervisor (hvd) did not
 * answer in 2 s"). It may run before this returns. */
typedef void (*VmmsHvdProbeFn)(const VmmsError *error, void *userdata);
void vmms_hvd_probe(VmmsHvd *hvd, VmmsHvdProbeFn fn, void *userdata);

/* Whether the connection was made by starting hvd (the host came up). */
bool vmms_hvd_started_here(VmmsHvd *hvd);
/* Reads what hvd has sent now; learns at once if it has gone (the lost callback runs). */
void vmms_hvd_check(VmmsHvd *hvd);

/* "running", or why hvd cannot be used now. */
const char *vmms_hvd_status(VmmsHvd *hvd);
const char *vmms_hvd_socket(VmmsHvd *hvd);
/* The processor compatibility vector of a partition created now, with or without the
 * normalized CPUID, read from hvd when the connection was made; NULL while there is no
 * connection or when hvd does not report it. */
const Vmms__Hv__CompatibilityVector *vmms_hvd_compat_vector(VmmsHvd *hvd, bool normalized);
/* The latest sample (NULL until hvd first answered). */
const Vmms__Hv__Counters *vmms_hvd_last_sample(VmmsHvd *hvd);
/* The last two samples of one connection (false until there are two). */
bool vmms_hvd_counters(VmmsHvd *hvd, const Vmms__Hv__Counters **ret_prev, const Vmms__Hv__Counters **ret_cur);
