/* VM definitions: defaults, validation of every setting, and the state machine.
 *
 * States and what each action may do from them (anything else is NotAllowed):
 *   Off      --Start-->  Starting --(worker ready)--> Running
 *   Running  --Pause-->  Paused   --Resume--> Running
 *   Running|Paused --Stop--> Stopping --(worker gone)--> Off
 *   Off|Saved --Remove--> (gone)
 * Starting and Stopping belong to a job in progress: every action waits for it to
 * end, so two clients racing on one VM get a clean refusal, never a half state.
 * Processor count and startup memory change only while Off, as in Hyper-V. */
#include <errno.h>
#include <string.h>

#include "vmms-vm.h"

static const char *const state_names[VMMS_VM_STATE_COUNT] = {
        [VMMS_VM_OFF] = "Off",
        [VMMS_VM_STARTING] = "Starting",
        [VMMS_VM_RUNNING] = "Running",
        [VMMS_VM_PAUSED] = "Paused",
        [VMMS_VM_STOPPING] = "Stopping",
        [VMMS_VM_SAVED] = "Saved",
        [VMMS_VM_MIGRATING] = "Migrating",
};

static const char *const action_names[VMMS_ACTION_COUNT] = {
        [VMMS_ACTION_START] = "start",
        [VMMS_ACTION_STOP] = "stop",
        [VMMS_ACTION_PAUSE] = "pause",
        [VMMS_ACTION_RESUME] = "resume",
        [VMMS_ACTION_REMOVE] = "remove",
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = "change the processor count of",
        [VMMS_ACTION_SET_STARTUP_MEMORY] = "change the startup memory or Dynamic Memory switch of",
};

/* allowed[action][state] */
static const bool allowed[VMMS_ACTION_COUNT][VMMS_VM_STATE_COUNT] = {
        [VMMS_ACTION_START] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_STOP] = {[VMMS_VM_RUNNING] = true, [VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_PAUSE] = {[VMMS_VM_RUNNING] = true},
        [VMMS_ACTION_RESUME] = {[VMMS_VM_PAUSED] = true},
        [VMMS_ACTION_REMOVE] = {[VMMS_VM_OFF] = true, [VMMS_VM_SAVED] = true},
        [VMMS_ACTION_SET_PROCESSOR_COUNT] = {[VMMS_VM_OFF] = true},
        [VMMS_ACTION_SET_STARTUP_MEMORY] = {[VMMS_VM_OFF] = true},
};

const char *vmms_vm_state_to_string(VmmsVmState state)
{
        return state < VMMS_VM_STATE_COUNT ? state_names[state] : "Unknown";
}

int vmms_vm_state_from_string(const char *text, VmmsVmState *ret_state)
{
        for (int i = 0; i < VMMS_VM_STATE_COUNT; i++)
                if (g_strcmp0(text, state_names[i]) == 0) {
                        *ret_state = (VmmsVmState)i;
                        return 0;
                }
        return -EINVAL;
}

const char *vmms_vm_action_to_string(VmmsVmAction action)
{
        return action < VMMS_ACTION_COUNT ? action_names[action] : "act on";
}

bool vmms_vm_action_allowed(const char *name, VmmsVmState state, VmmsVmAction action, VmmsError *error)
{
        if (action < VMMS_ACTION_COUNT && state < VMMS_VM_STATE_COUNT && allowed[action][state])
                return true;
        if (state == VMMS_VM_STARTING || state == VMMS_VM_STOPPING)
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "cannot %s VM '%s' now: it is %s; try again when that has finished",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        else
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION, "cannot %s VM '%s': it is %s",
                               vmms_vm_action_to_string(action), name, vmms_vm_state_to_string(state));
        return false;
}

void vmms_vm_definition_init_defaults(VmmsVmDefinition *def)
{
        memset(def, 0, sizeof(*def));
        def->state = VMMS_VM_OFF;
        def->processor =
                (VmmsProcessorSettings){.count = 1, .reserve = 0, .maximum = 100, .relative_weight = 100};
        def->memory = (VmmsMemorySettings){
                .dynamic_memory_enabled = false,
                .startup_bytes = 512ull << 20,
                .minimum_bytes = 512ull << 20,
                .maximum_bytes = 1ull << 40,
                .buffer = 20,
                .priority = 50,
        };
        def->workload = g_strdup("idle");
        def->boot_args = g_strdup("");
        def->notes = g_strdup("");
}

void vmms_vm_definition_clear(VmmsVmDefinition *def)
{
        g_free(def->name);
        g_free(def->workload);
        g_free(def->boot_args);
        g_free(def->notes);
        memset(def, 0, sizeof(*def));
}

void vmms_vm_definition_copy(VmmsVmDefinition *dst, const VmmsVmDefinition *src)
{
        *dst = *src;
        dst->name = g_strdup(src->name);
        dst->workload = g_strdup(src->workload);
        dst->boot_args = g_strdup(src->boot_args);
        dst->notes = g_strdup(src->notes);
}

/* Names become file and log names and show in tables: printable, no path or shell
 * metacharacters Windows also refuses, no blank ends. */
bool vmms_vm_name_valid(const char *name, VmmsError *error)
{
        size_t len = name ? strlen(name) : 0;

        if (len == 0 || len > VMMS_VM_NAME_MAX) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "name must be 1-%d characters (got %zu)",
                               VMMS_VM_NAME_MAX, len);
                return false;
        }
        if (!g_utf8_validate(name, (gssize)len, NULL)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "name is not valid UTF-8");
                return false;
        }
        for (const char *c = name; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f || strchr("/\\:*?\"<>|", *c)) {
                        vmms_error_set(
                                error, VMMS_ERROR_INVALID_ARGUMENT,
                                "name '%s' contains '%c'; names may not contain control characters or / \\ : "
                                "* ? \" < > |",
                                name, (unsigned char)*c < 0x20 ? '?' : *c);
                        return false;
                }
        if (g_ascii_isspace(name[0]) || g_ascii_isspace(name[len - 1])) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "name may not begin or end with a space");
                return false;
        }
        return true;
}

static bool in_range(const char *field, uint64_t value, uint64_t min, uint64_t max, VmmsError *error)
{
        if (value >= min && value <= max)
                return true;
        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                       "%s %" G_GUINT64_FORMAT " is out of range %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT,
                       field, value, min, max);
        return false;
}

bool vmms_vm_processor_valid(const VmmsProcessorSettings *p, VmmsError *error)
{
        if (!in_range("Count", p->count, 1, VMMS_VM_VPS_MAX, error) ||
            !in_range("Reserve", p->reserve, 0, 100, error) ||
            !in_range("Maximum", p->maximum, 0, 100, error) ||
            !in_range("RelativeWeight", p->relative_weight, 1, 10000, error))
                return false;
        if (p->reserve > p->maximum) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "Reserve %u exceeds Maximum %u",
                               p->reserve, p->maximum);
                return false;
        }
        return true;
}

static bool size_valid(const char *field, uint64_t bytes, VmmsError *error)
{
        if (!in_range(field, bytes, VMMS_MEMORY_MIN_BYTES, VMMS_MEMORY_MAX_BYTES, error))
                return false;
        if (bytes % VMMS_MEMORY_ALIGN != 0) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "%s %" G_GUINT64_FORMAT " is not a multiple of 2MB", field, bytes);
                return false;
        }
        return true;
}

bool vmms_vm_memory_valid(const VmmsMemorySettings *m, VmmsError *error)
{
        if (!size_valid("StartupBytes", m->startup_bytes, error) ||
            !size_valid("MinimumBytes", m->minimum_bytes, error) ||
            !size_valid("MaximumBytes", m->maximum_bytes, error) ||
            !in_range("Buffer", m->buffer, 5, 2000, error) ||
            !in_range("Priority", m->priority, 0, 100, error))
                return false;
        if (m->minimum_bytes > m->startup_bytes) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "MinimumBytes %" G_GUINT64_FORMAT " exceeds StartupBytes %" G_GUINT64_FORMAT,
                               m->minimum_bytes, m->startup_bytes);
                return false;
        }
        if (m->startup_bytes > m->maximum_bytes) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "StartupBytes %" G_GUINT64_FORMAT " exceeds MaximumBytes %" G_GUINT64_FORMAT,
                               m->startup_bytes, m->maximum_bytes);
                return false;
        }
        return true;
}

bool vmms_vm_workload_valid(const char *workload, const char *boot_args, const char *notes, VmmsError *error)
{
        static const char *const workloads[] = {"idle", "cpu", "memsoak"};
        bool known = false;

        for (size_t i = 0; i < G_N_ELEMENTS(workloads); i++)
                known = known || g_strcmp0(workload, workloads[i]) == 0;
        if (!known) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Workload '%s' is not one of idle, cpu, memsoak", workload ? workload : "");
                return false;
        }
        if (boot_args && strlen(boot_args) > VMMS_BOOT_ARGS_MAX) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "BootArgs is %zu characters; the limit is %d", strlen(boot_args),
                               VMMS_BOOT_ARGS_MAX);
                return false;
        }
        for (const char *c = boot_args; c && *c; c++)
                if (*c < 0x20 || *c > 0x7e) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "BootArgs may hold printable ASCII only");
                        return false;
                }
        if (notes && (strlen(notes) > VMMS_NOTES_MAX || !g_utf8_validate(notes, -1, NULL))) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "Notes must be UTF-8 of at most %d bytes",
                               VMMS_NOTES_MAX);
                return false;
        }
        return true;
}

bool vmms_vm_memory_change_allowed_running(const VmmsMemorySettings *old, const VmmsMemorySettings *new,
                                           VmmsError *error)
{
        if (new->minimum_bytes > old->minimum_bytes) {
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "MinimumBytes may only be lowered while the VM runs (%" G_GUINT64_FORMAT
                               " -> %" G_GUINT64_FORMAT ")",
                               old->minimum_bytes, new->minimum_bytes);
                return false;
        }
        if (new->maximum_bytes < old->maximum_bytes) {
                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "MaximumBytes may only be raised while the VM runs (%" G_GUINT64_FORMAT
                               " -> %" G_GUINT64_FORMAT ")",
                               old->maximum_bytes, new->maximum_bytes);
                return false;
        }
        return true;
}
