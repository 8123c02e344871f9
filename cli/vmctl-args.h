/* vmctl's command-line grammar: PowerShell-style parameters (-Name value, -Name:value, case-insensitive,
 * unambiguous prefixes, one positional) bound against a verb's parameter table. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#define VMCTL_MIB (1ull << 20)

typedef enum VmctlParamType {
        VMCTL_PARAM_STRING, /* free text */
        VMCTL_PARAM_CHOICE, /* one of choices[], case-insensitive; bound to the table's spelling */
        VMCTL_PARAM_UINT,   /* a whole number within [min, max] */
        VMCTL_PARAM_SIZE,   /* bytes (512MB, 2GB, 1024) within [min, max] */
        VMCTL_PARAM_BOOL,   /* takes a value: $true $false true false 1 0 */
        VMCTL_PARAM_SWITCH, /* present means true; -Name:$false says false */
        VMCTL_PARAM_LIST,   /* repeatable text; the positional one takes every loose argument */
} VmctlParamType;

typedef struct VmctlParam {
        const char *name;
        VmctlParamType type;
        bool required;
        bool positional;            /* loose arguments bind here (at most one per table) */
        bool allow_empty;           /* STRING: '' is a value (it clears the setting) */
        uint64_t min;               /* UINT and SIZE */
        uint64_t max;               /* UINT and SIZE; STRING: its length in bytes; 0 means no limit */
        const char *const *choices; /* CHOICE: NULL-terminated */
        const char *help;
        bool has_default;       /* UINT and SIZE: help says "Default: <default_value>." */
        uint64_t default_value; /* what vmmsd uses when the parameter is not given */
} VmctlParam;

typedef struct VmctlValue {
        bool set;
        const char *text; /* as written; points into argv */
        uint64_t number;  /* UINT, SIZE */
        bool flag;        /* BOOL, SWITCH */
        GPtrArray *list;  /* LIST: const char * into argv */
} VmctlValue;

/* Parameters bound for one verb: values[i] belongs to params[i]. */
typedef struct VmctlArgs {
        const VmctlParam *params;
        size_t n_params;
        VmctlValue *values;
        bool help; /* -? was given */
} VmctlArgs;

void vmctl_args_free(VmctlArgs *args);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmctlArgs, vmctl_args_free)

/* Binds argv[0..argc) against params. With stop_at_positional, stops at the first loose argument and
 * stores its index in *ret_consumed (argc when there is none); otherwise loose arguments bind to the
 * positional parameter and every required parameter must be present unless -? was given.
 * Returns 0, or -EINVAL with *ret_error naming the parameter and what was wrong. */
int vmctl_args_parse(const VmctlParam *params, size_t n_params, int argc, char **argv,
                     bool stop_at_positional, VmctlArgs **ret_args, int *ret_consumed, char **ret_error);

/* The value bound to the parameter called name (which must be in the table). */
const VmctlValue *vmctl_args_get(const VmctlArgs *args, const char *name);
bool vmctl_args_has(const VmctlArgs *args, const char *name);

/* The single-value parsers the binder uses; each returns 0 or -EINVAL/-ERANGE. */
int vmctl_parse_size(const char *text, uint64_t *ret_bytes);
int vmctl_parse_bool(const char *text, bool *ret_value);

/* Writes bytes as an operator would (512MB, 2GB, 1000000). */
char *vmctl_format_size(uint64_t bytes);
