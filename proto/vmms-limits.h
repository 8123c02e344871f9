/* The limits of a VM's processor, memory and text settings: one table that vmctl (its early range
 * checks and help), vmmsd (its validators) and hvd (PartitionCreate/PartitionSetProcessor) all read,
 * so the three cannot disagree. Plain C with no dependencies, beside the generated proto code that
 * every layer may include.
 *
 * Maximum, the processor cap, is 1-100 % everywhere, as in Hyper-V: a 0 % cap would never let a
 * VP run. vmctl and vmmsd refuse 0. On hv.proto's wire (and only there) 0 stays "unset": proto3
 * scalars have no presence, so hvd reads 0 as the default, 100, for workers that predate this
 * table; it checks every other value against the range here. RelativeWeight's 0 on that wire is
 * "unset" (100) the same way. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The values by name, for static initialisers (vmctl's parameter tables) and messages. */
#define VMMS_PROCESSOR_COUNT_MIN 1
#define VMMS_PROCESSOR_COUNT_MAX 32
#define VMMS_PROCESSOR_COUNT_DEFAULT 1
#define VMMS_PROCESSOR_RESERVE_MIN 0
#define VMMS_PROCESSOR_RESERVE_MAX 100
#define VMMS_PROCESSOR_RESERVE_DEFAULT 0
#define VMMS_PROCESSOR_MAXIMUM_MIN 1
#define VMMS_PROCESSOR_MAXIMUM_MAX 100
#define VMMS_PROCESSOR_MAXIMUM_DEFAULT 100
#define VMMS_PROCESSOR_RELATIVE_WEIGHT_MIN 1
#define VMMS_PROCESSOR_RELATIVE_WEIGHT_MAX 10000
#define VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT 100

#define VMMS_MEMORY_BYTES_MIN (32ull << 20)
#define VMMS_MEMORY_BYTES_MAX (1ull << 40)
#define VMMS_MEMORY_BYTES_ALIGN (2ull << 20) /* Hyper-V takes memory sizes in multiples of 2 MB */
#define VMMS_MEMORY_STARTUP_BYTES_DEFAULT (512ull << 20)
#define VMMS_MEMORY_MINIMUM_BYTES_DEFAULT (512ull << 20)
#define VMMS_MEMORY_MAXIMUM_BYTES_DEFAULT VMMS_MEMORY_BYTES_MAX
#define VMMS_MEMORY_BUFFER_MIN 5
#define VMMS_MEMORY_BUFFER_MAX 2000
#define VMMS_MEMORY_BUFFER_DEFAULT 20
#define VMMS_MEMORY_PRIORITY_MIN 0
#define VMMS_MEMORY_PRIORITY_MAX 100
#define VMMS_MEMORY_PRIORITY_DEFAULT 50
/* The paging disk: 0 means VMMS_PAGING_DEFAULT_FACTOR x startup, never a multiple of the
 * (Dynamic Memory) maximum, which may be 1 TB. */
#define VMMS_PAGING_BYTES_MAX (4ull << 40)
#define VMMS_PAGING_DEFAULT_FACTOR 4

/* Text settings, in bytes of UTF-8 (BootArgs: printable ASCII). */
#define VMMS_NAME_LENGTH_MIN 1
#define VMMS_NAME_LENGTH_MAX 100
#define VMMS_BOOT_ARGS_LENGTH_MAX 200
#define VMMS_NOTES_LENGTH_MAX 4096

/* Connect-VM (WatchConsole): the console lines shown before following it. */
#define VMMS_CONSOLE_TAIL_LINES_DEFAULT 10
#define VMMS_CONSOLE_TAIL_LINES_MAX 10000

/* The cluster's auto-balance (Set-Cluster): an Average Pressure, % (the balancer's own cap),
 * and a CPU Wait Time Per Dispatch, µs (1 ms is Get-VMHostHealth's threshold for a VM). */
#define VMMS_CLUSTER_AUTO_BALANCE_MIN 1
#define VMMS_CLUSTER_AUTO_BALANCE_MAX 1000
#define VMMS_CLUSTER_AUTO_BALANCE_DEFAULT 100
#define VMMS_CLUSTER_CPU_WAIT_MIN_US 1
#define VMMS_CLUSTER_CPU_WAIT_MAX_US 1000000
#define VMMS_CLUSTER_CPU_WAIT_DEFAULT_US 1000

typedef enum VmmsLimitId {
        VMMS_LIMIT_PROCESSOR_COUNT,
        VMMS_LIMIT_PROCESSOR_RESERVE,
        VMMS_LIMIT_PROCESSOR_MAXIMUM,
        VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT,
        VMMS_LIMIT_MEMORY_STARTUP_BYTES,
        VMMS_LIMIT_MEMORY_MINIMUM_BYTES,
        VMMS_LIMIT_MEMORY_MAXIMUM_BYTES,
        VMMS_LIMIT_MEMORY_BUFFER,
        VMMS_LIMIT_MEMORY_PRIORITY,
        VMMS_LIMIT_MEMORY_PAGING_BYTES,
        VMMS_LIMIT_NAME_LENGTH,
        VMMS_LIMIT_BOOT_ARGS_LENGTH,
        VMMS_LIMIT_NOTES_LENGTH,
        VMMS_LIMIT_COUNT,
} VmmsLimitId;

typedef struct VmmsLimit {
        const char *name;  /* Hyper-V's parameter name: vmctl's and vmmsd's messages */
        const char *field; /* the proto field: hvd's messages, update masks */
        uint64_t min;
        uint64_t max;
        uint64_t default_value;
        const char *unit;
        bool is_size; /* a memory size: messages write it as people do, "16 MB", "32 MB–1 TB" */
} VmmsLimit;

static const VmmsLimit vmms_limits[VMMS_LIMIT_COUNT] = {
        [VMMS_LIMIT_PROCESSOR_COUNT] = {"Count", "count", VMMS_PROCESSOR_COUNT_MIN, VMMS_PROCESSOR_COUNT_MAX,
                                        VMMS_PROCESSOR_COUNT_DEFAULT, "virtual processors"},
        [VMMS_LIMIT_PROCESSOR_RESERVE] = {"Reserve", "reserve", VMMS_PROCESSOR_RESERVE_MIN,
                                          VMMS_PROCESSOR_RESERVE_MAX, VMMS_PROCESSOR_RESERVE_DEFAULT,
                                          "% of one logical processor"},
        [VMMS_LIMIT_PROCESSOR_MAXIMUM] = {"Maximum", "maximum", VMMS_PROCESSOR_MAXIMUM_MIN,
                                          VMMS_PROCESSOR_MAXIMUM_MAX, VMMS_PROCESSOR_MAXIMUM_DEFAULT,
                                          "% of one logical processor"},
        [VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT] = {"RelativeWeight", "relative_weight",
                                                  VMMS_PROCESSOR_RELATIVE_WEIGHT_MIN,
                                                  VMMS_PROCESSOR_RELATIVE_WEIGHT_MAX,
                                                  VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT, "share"},
        [VMMS_LIMIT_MEMORY_STARTUP_BYTES] = {"StartupBytes", "startup_bytes", VMMS_MEMORY_BYTES_MIN,
                                             VMMS_MEMORY_BYTES_MAX, VMMS_MEMORY_STARTUP_BYTES_DEFAULT,
                                             "bytes", true},
        [VMMS_LIMIT_MEMORY_MINIMUM_BYTES] = {"MinimumBytes", "minimum_bytes", VMMS_MEMORY_BYTES_MIN,
                                             VMMS_MEMORY_BYTES_MAX, VMMS_MEMORY_MINIMUM_BYTES_DEFAULT,
                                             "bytes", true},
        [VMMS_LIMIT_MEMORY_MAXIMUM_BYTES] = {"MaximumBytes", "maximum_bytes", VMMS_MEMORY_BYTES_MIN,
                                             VMMS_MEMORY_BYTES_MAX, VMMS_MEMORY_MAXIMUM_BYTES_DEFAULT,
                                             "bytes", true},
        [VMMS_LIMIT_MEMORY_BUFFER] = {"Buffer", "buffer", VMMS_MEMORY_BUFFER_MIN, VMMS_MEMORY_BUFFER_MAX,
                                      VMMS_MEMORY_BUFFER_DEFAULT, "% over committed memory"},
        [VMMS_LIMIT_MEMORY_PRIORITY] = {"Priority", "priority", VMMS_MEMORY_PRIORITY_MIN,
                                        VMMS_MEMORY_PRIORITY_MAX, VMMS_MEMORY_PRIORITY_DEFAULT, "priority"},
        [VMMS_LIMIT_MEMORY_PAGING_BYTES] = {"PagingBytes", "paging_bytes", 0, VMMS_PAGING_BYTES_MAX, 0,
                                            "bytes (0: 4 x StartupBytes)", true},
        [VMMS_LIMIT_NAME_LENGTH] = {"Name", "name", VMMS_NAME_LENGTH_MIN, VMMS_NAME_LENGTH_MAX, 0, "bytes"},
        [VMMS_LIMIT_BOOT_ARGS_LENGTH] = {"BootArgs", "boot_args", 0, VMMS_BOOT_ARGS_LENGTH_MAX, 0, "bytes"},
        [VMMS_LIMIT_NOTES_LENGTH] = {"Notes", "notes", 0, VMMS_NOTES_LENGTH_MAX, 0, "bytes"},
};

static inline const VmmsLimit *vmms_limit(VmmsLimitId id)
{
        return &vmms_limits[id];
}

/* A size as people write it: "512 KB", "64 MB", "1.5 GB" (binary units, as Hyper-V writes them);
 * with exact, a size that is not a whole number of its unit also gives its bytes, "1.0 TB
 * (1099511627777 bytes)". Writes at most size bytes to buf. */
static inline void vmms_limit_format_size(uint64_t bytes, bool exact, char *buf, size_t size)
{
        static const char *const units[] = {"bytes", "KB", "MB", "GB", "TB"};
        double value = (double)bytes;
        size_t u = 0;
        bool whole;

        while (value >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                value /= 1024;
                u++;
        }
        whole = (bytes & ((1ull << (10 * u)) - 1)) == 0;
        if (u == 0 || value >= 100 || whole)
                snprintf(buf, size, "%.0f %s", value, units[u]);
        else
                snprintf(buf, size, "%.1f %s", value, units[u]);
        if (exact && !whole) {
                size_t len = strlen(buf);

                snprintf(buf + len, size > len ? size - len : 0, " (%llu bytes)", (unsigned long long)bytes);
        }
}

/* Whether value is within the limit. Otherwise, when error is not NULL, writes
 * "<label> <value> is out of range <min>-<max>" there, label being what the caller's users call the
 * setting (the limit's name or field; NULL: its name); sizes as people write them ("StartupBytes
 * 16 MB is out of range 32 MB–1 TB"). */
static inline bool vmms_limit_check(VmmsLimitId id, const char *label, uint64_t value, char *error,
                                    size_t error_size)
{
        const VmmsLimit *limit = vmms_limit(id);
        char text[3][48];

        if (value >= limit->min && value <= limit->max)
                return true;
        if (!error || !error_size)
                return false;
        if (limit->is_size) {
                vmms_limit_format_size(value, true, text[0], sizeof(text[0]));
                vmms_limit_format_size(limit->min, true, text[1], sizeof(text[1]));
                vmms_limit_format_size(limit->max, true, text[2], sizeof(text[2]));
                snprintf(error, error_size, "%s %s is out of range %s–%s", label ? label : limit->name,
                         text[0], text[1], text[2]);
        } else {
                snprintf(error, error_size, "%s %llu is out of range %llu-%llu", label ? label : limit->name,
                         (unsigned long long)value, (unsigned long long)limit->min,
                         (unsigned long long)limit->max);
        }
        return false;
}
