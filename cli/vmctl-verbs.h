/* vmctl's verbs: each is a name, a parameter table (types, ranges, help) and a handler that turns the
 * bound parameters into vmmsd calls and prints the answer. vmctl_main() dispatches argv to them. */
#pragma once

#include <stdio.h>

#include "vmctl-args.h"
#include "vmctl-rpc.h"
#include "vmms.pb-c.h"

/* vmctl's exit statuses. */
enum {
        VMCTL_EXIT_OK = 0,
        VMCTL_EXIT_FAILED = 1,      /* vmmsd refused or failed the operation */
        VMCTL_EXIT_USAGE = 2,       /* the command line is wrong */
        VMCTL_EXIT_UNREACHABLE = 3, /* vmmsd could not be reached */
};

typedef struct VmctlVerb VmctlVerb;

/* What a handler works with. Handlers write to out and, on failure, return a negative errno with
 * error set: -EINVAL for a command-line mistake, -ENOTCONN when vmmsd is unreachable, others when
 * vmmsd said no. */
typedef struct VmctlContext {
        const VmctlVerb *verb;
        const VmctlArgs *args;
        VmctlClient *client; /* NULL for verbs that need no server */
        bool json;
        FILE *out;
        char *error;
} VmctlContext;

typedef int (*VmctlHandler)(VmctlContext *ctx);

struct VmctlVerb {
        const char *name;
        const char *synopsis;
        const char *example;
        const VmctlParam *params;
        size_t n_params;
        VmctlHandler handler;
        bool needs_server;
};

/* The verb called name (case-insensitive), or NULL. */
const VmctlVerb *vmctl_verb_find(const char *name);
const VmctlVerb *vmctl_verbs(size_t *ret_n_verbs);

/* Binds a verb's parameters (its own and the common ones) from the arguments after the verb. */
int vmctl_verb_parse(const VmctlVerb *verb, int argc, char **argv, VmctlArgs **ret_args, char **ret_error);

/* Set-VMProcessor's request, pointing into args: only the parameters given are set and named in
 * update_mask. -EINVAL when none is given. */
typedef struct VmctlProcessorUpdate {
        Vmms__V1__UpdateProcessorRequest request;
        Vmms__V1__ProcessorSettings processor;
        char *mask[5];
} VmctlProcessorUpdate;
int vmctl_processor_update_init(VmctlProcessorUpdate *update, const VmctlArgs *args, char **ret_error);

/* Set-VMMemory's request, the same way; also refuses Minimum > Startup > Maximum among those given. */
typedef struct VmctlMemoryUpdate {
        Vmms__V1__UpdateMemoryRequest request;
        Vmms__V1__MemorySettings memory;
        char *mask[8]; /* one per settable field (memory_fields in vmctl-verbs.c) */
} VmctlMemoryUpdate;
int vmctl_memory_update_init(VmctlMemoryUpdate *update, const VmctlArgs *args, char **ret_error);

/* Set-VM's and Rename-VM's request, the same way: -NewName, -Notes, -AutomaticStartAction, -Workload
 * and -BootArgs as far as the verb has them. -EINVAL when none is given. */
typedef struct VmctlVmUpdate {
        Vmms__V1__UpdateVmRequest request;
        char *mask[6]; /* one per settable field */
} VmctlVmUpdate;
int vmctl_vm_update_init(VmctlVmUpdate *update, const VmctlArgs *args, char **ret_error);

/* -AutomaticStartAction's word (any case) as vmms.proto's enum; UNSPECIFIED for no word of it. */
Vmms__V1__AutomaticStartAction vmctl_automatic_start_action(const char *text);

/* New-VM's request, pointing into args. */
typedef struct VmctlCreate {
        Vmms__V1__CreateVmRequest request;
        Vmms__V1__ProcessorSettings processor;
        Vmms__V1__MemorySettings memory;
} VmctlCreate;
void vmctl_create_init(VmctlCreate *create, const VmctlArgs *args);

/* The whole program: argv as main() gets it; returns an exit status. */
int vmctl_main(int argc, char **argv, FILE *out, FILE *err);
