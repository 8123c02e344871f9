/* VM definitions: defaults, validation of every setting, state names. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "vmms-definition.h"

static const char *const state_names[VMMS_VM_STATE_COUNT] = {
        [VMMS_VM_OFF] = "Off",
        [VMMS_VM_STARTING] = "Starting",
        [VMMS_VM_RUNNING] = "Running",
        [VMMS_VM_PAUSED] = "Paused",
        [VMMS_VM_STOPPING] = "Stopping",
        [VMMS_VM_SAVED] = "Saved",
        [VMMS_VM_MIGRATING] = "Migrating",
};

static const char *const auto_start_names[VMMS_AUTO_START_COUNT] = {
        [VMMS_AUTO_START_NOTHING] = "Nothing",
        [VMMS_AUTO_START_START_IF_RUNNING] = "StartIfRunning",
        [VMMS_AUTO_START_START] = "Start",
};

const char *vmms_auto_start_to_string(VmmsAutoStart action)
{
        return action < VMMS_AUTO_START_COUNT ? auto_start_names[action] : "Nothing";
}

int vmms_auto_start_from_string(const char *text, VmmsAutoStart *ret_action)
{
        for (int i = 0; i < VMMS_AUTO_START_COUNT; i++)
                if (g_ascii_strcasecmp(text ? text : "", auto_start_names[i]) == 0) {
                        *ret_action = (VmmsAutoStart)i;
                        return 0;
                }
        return -EINVAL;
}

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

static void hard_disk_drive_clear(gpointer p)
{
        VmmsHardDiskDrive *d = p;

        g_free(d->path);
        g_free(d->format);
}

static void network_adapter_clear(gpointer p)
{
        VmmsNetworkAdapter *a = p;

        g_free(a->name);
        g_free(a->switch_name);
}

GArray *vmms_hard_disk_drives_new(void)
{
        GArray *a = g_array_new(FALSE, TRUE, sizeof(VmmsHardDiskDrive));

        g_array_set_clear_func(a, hard_disk_drive_clear);
        return a;
}

GArray *vmms_network_adapters_new(void)
{
        GArray *a = g_array_new(FALSE, TRUE, sizeof(VmmsNetworkAdapter));

        g_array_set_clear_func(a, network_adapter_clear);
        return a;
}

static GArray *hard_disk_drives_copy(const GArray *src)
{
        GArray *a = vmms_hard_disk_drives_new();

        for (guint i = 0; src && i < src->len; i++) {
                const VmmsHardDiskDrive *d = &g_array_index(src, VmmsHardDiskDrive, i);
                VmmsHardDiskDrive copy = {.path = g_strdup(d->path), .format = g_strdup(d->format)};

                g_array_append_val(a, copy);
        }
        return a;
}

static GArray *network_adapters_copy(const GArray *src)
{
        GArray *a = vmms_network_adapters_new();

        for (guint i = 0; src && i < src->len; i++) {
                const VmmsNetworkAdapter *n = &g_array_index(src, VmmsNetworkAdapter, i);
                VmmsNetworkAdapter copy = {.name = g_strdup(n->name),
                                           .switch_name = g_strdup(n->switch_name)};

                g_strlcpy(copy.mac_address, n->mac_address, sizeof(copy.mac_address));
                g_array_append_val(a, copy);
        }
        return a;
}

void vmms_vm_definition_init_defaults(VmmsVmDefinition *def)
{
        memset(def, 0, sizeof(*def));
        def->state = VMMS_VM_OFF;
        def->processor = (VmmsProcessorSettings){
                .count = VMMS_PROCESSOR_COUNT_DEFAULT,
                .reserve = VMMS_PROCESSOR_RESERVE_DEFAULT,
                .maximum = VMMS_PROCESSOR_MAXIMUM_DEFAULT,
                .relative_weight = VMMS_PROCESSOR_RELATIVE_WEIGHT_DEFAULT,
        };
        def->memory = (VmmsMemorySettings){
                .dynamic_memory_enabled = false,
                .startup_bytes = VMMS_MEMORY_STARTUP_BYTES_DEFAULT,
                .minimum_bytes = VMMS_MEMORY_MINIMUM_BYTES_DEFAULT,
                .maximum_bytes = VMMS_MEMORY_MAXIMUM_BYTES_DEFAULT,
                .buffer = VMMS_MEMORY_BUFFER_DEFAULT,
                .priority = VMMS_MEMORY_PRIORITY_DEFAULT,
        };
        def->workload = g_strdup("idle");
        def->boot_args = g_strdup("");
        def->notes = g_strdup("");
        def->engine = g_strdup("bundled");
        def->kernel_path = g_strdup("");
        def->initrd_path = g_strdup("");
        def->kernel_args = g_strdup("");
        def->vhd_path = g_strdup("");
        def->hard_disk_drives = vmms_hard_disk_drives_new();
        def->network_adapters = vmms_network_adapters_new();
        def->automatic_start_action = VMMS_AUTO_START_START_IF_RUNNING;
}

void vmms_vm_definition_clear(VmmsVmDefinition *def)
{
        g_free(def->name);
        g_free(def->workload);
        g_free(def->boot_args);
        g_free(def->notes);
        g_free(def->engine);
        g_free(def->kernel_path);
        g_free(def->initrd_path);
        g_free(def->kernel_args);
        g_free(def->vhd_path);
        if (def->hard_disk_drives)
                g_array_unref(def->hard_disk_drives);
        if (def->network_adapters)
                g_array_unref(def->network_adapters);
        memset(def, 0, sizeof(*def));
}

void vmms_vm_definition_copy(VmmsVmDefinition *dst, const VmmsVmDefinition *src)
{
        *dst = *src;
        dst->name = g_strdup(src->name);
        dst->workload = g_strdup(src->workload);
        dst->boot_args = g_strdup(src->boot_args);
        dst->notes = g_strdup(src->notes);
        dst->engine = g_strdup(src->engine);
        dst->kernel_path = g_strdup(src->kernel_path);
        dst->initrd_path = g_strdup(src->initrd_path);
        dst->kernel_args = g_strdup(src->kernel_args);
        dst->vhd_path = g_strdup(src->vhd_path);
        dst->hard_disk_drives = hard_disk_drives_copy(src->hard_disk_drives);
        dst->network_adapters = network_adapters_copy(src->network_adapters);
}

/* Names become file and log names and show in tables: printable, no path or shell
 * metacharacters Windows also refuses, no blank ends. */
bool vmms_vm_name_valid(const char *name, VmmsError *error)
{
        size_t len = name ? strlen(name) : 0;

        if (!vmms_limit_check(VMMS_LIMIT_NAME_LENGTH, NULL, len, NULL, 0)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "name must be %d-%d bytes long (got %zu)",
                               VMMS_NAME_LENGTH_MIN, VMMS_NAME_LENGTH_MAX, len);
                return false;
        }
        if (!g_utf8_validate(name, (gssize)len, NULL)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "name is not valid UTF-8");
                return false;
        }
        for (const char *p = name; *p; p = g_utf8_next_char(p))
                if (vmms_unichar_hidden(g_utf8_get_char(p), NULL)) {
                        vmms_error_set(
                                error, VMMS_ERROR_INVALID_ARGUMENT,
                                "name holds U+%04X, a control, format or separator character (such as a "
                                "right-to-left override): names show as they are",
                                g_utf8_get_char(p));
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

/* Checks value against its limit, naming the setting as Hyper-V does ("Maximum 0 is out of range
 * 1-100"). */
static bool in_range(VmmsLimitId id, uint64_t value, VmmsError *error)
{
        char message[128];

        if (vmms_limit_check(id, NULL, value, message, sizeof(message)))
                return true;
        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "%s", message);
        return false;
}

bool vmms_vm_processor_engine_valid(const char *name, const char *engine, const VmmsProcessorSettings *p,
                                    VmmsError *error)
{
        if (!p->compatibility_for_migration || g_strcmp0(engine, "bundled") == 0)
                return true;
        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                       "VM '%s' runs on the %s engine, which does not normalize the processor: "
                       "CompatibilityForMigrationEnabled is for bundled VMs",
                       name, engine);
        return false;
}

bool vmms_vm_processor_valid(const VmmsProcessorSettings *p, VmmsError *error)
{
        if (!in_range(VMMS_LIMIT_PROCESSOR_COUNT, p->count, error) ||
            !in_range(VMMS_LIMIT_PROCESSOR_RESERVE, p->reserve, error) ||
            !in_range(VMMS_LIMIT_PROCESSOR_MAXIMUM, p->maximum, error) ||
            !in_range(VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT, p->relative_weight, error))
                return false;
        if (p->reserve > p->maximum) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "Reserve %u exceeds Maximum %u",
                               p->reserve, p->maximum);
                return false;
        }
        return true;
}

static bool size_valid(VmmsLimitId id, uint64_t bytes, VmmsError *error)
{
        if (!in_range(id, bytes, error))
                return false;
        if (bytes % VMMS_MEMORY_BYTES_ALIGN != 0) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "%s %" G_GUINT64_FORMAT " bytes is not a multiple of 2 MB",
                               vmms_limit(id)->name, bytes);
                return false;
        }
        return true;
}

bool vmms_vm_memory_valid(const VmmsMemorySettings *m, VmmsError *error)
{
        if (!size_valid(VMMS_LIMIT_MEMORY_STARTUP_BYTES, m->startup_bytes, error) ||
            !size_valid(VMMS_LIMIT_MEMORY_MINIMUM_BYTES, m->minimum_bytes, error) ||
            !size_valid(VMMS_LIMIT_MEMORY_MAXIMUM_BYTES, m->maximum_bytes, error) ||
            !in_range(VMMS_LIMIT_MEMORY_BUFFER, m->buffer, error) ||
            !in_range(VMMS_LIMIT_MEMORY_PRIORITY, m->priority, error) ||
            !size_valid(VMMS_LIMIT_MEMORY_PAGING_BYTES, m->paging_bytes, error))
                return false;
        if (m->minimum_bytes > m->startup_bytes) {
                g_autofree char *minimum = vmms_format_bytes(m->minimum_bytes),
                                *startup = vmms_format_bytes(m->startup_bytes);

                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "MinimumBytes %s exceeds StartupBytes %s",
                               minimum, startup);
                return false;
        }
        if (m->startup_bytes > m->maximum_bytes) {
                g_autofree char *startup = vmms_format_bytes(m->startup_bytes),
                                *maximum = vmms_format_bytes(m->maximum_bytes);

                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "StartupBytes %s exceeds MaximumBytes %s",
                               startup, maximum);
                return false;
        }
        return true;
}

bool vmms_vm_workload_valid(const char *workload, const char *boot_args, const char *notes, VmmsError *error)
{
        static const char *const workloads[] = {"idle", "cpu", "memsoak", "cache"};
        /* Boot parameters the definition sets itself: BootArgs may not override them. */
        static const char *const defined_keys[] = {"workload"};
        g_auto(GStrv) words = NULL;
        bool known = false;
        g_autofree char *quoted = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(workloads); i++)
                known = known || g_strcmp0(workload, workloads[i]) == 0;
        if (!known) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Workload '%s' is not one of idle, cpu, memsoak, cache",
                               quoted = vmms_quote(workload));
                return false;
        }
        if (boot_args && !vmms_limit_check(VMMS_LIMIT_BOOT_ARGS_LENGTH, NULL, strlen(boot_args), NULL, 0)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "BootArgs is %zu bytes long; the limit is %d", strlen(boot_args),
                               VMMS_BOOT_ARGS_LENGTH_MAX);
                return false;
        }
        for (const char *c = boot_args; c && *c; c++)
                if (*c < 0x20 || *c > 0x7e) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "BootArgs may hold printable ASCII only");
                        return false;
                }
        words = g_strsplit(boot_args ? boot_args : "", " ", -1);
        for (size_t w = 0; words[w]; w++)
                for (size_t k = 0; k < G_N_ELEMENTS(defined_keys); k++) {
                        size_t n = strlen(defined_keys[k]);

                        if (strncmp(words[w], defined_keys[k], n) == 0 && words[w][n] == '=') {
                                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                               "BootArgs may not set %s=: the VM's %s setting does",
                                               defined_keys[k], defined_keys[k]);
                                return false;
                        }
                }
        if (notes && (!vmms_limit_check(VMMS_LIMIT_NOTES_LENGTH, NULL, strlen(notes), NULL, 0) ||
                      !g_utf8_validate(notes, -1, NULL))) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "Notes must be UTF-8 of at most %d bytes (got %zu)", VMMS_NOTES_LENGTH_MAX,
                               strlen(notes));
                return false;
        }
        for (const char *p = notes; p && *p; p = g_utf8_next_char(p))
                if (vmms_unichar_hidden(g_utf8_get_char(p), "\n\t\r")) {
                        vmms_error_set(
                                error, VMMS_ERROR_INVALID_ARGUMENT,
                                "Notes hold U+%04X, a control or format character (only newlines and tabs "
                                "may be in notes)",
                                g_utf8_get_char(p));
                        return false;
                }
        return true;
}

static bool boot_file_valid(const char *field, const char *path, VmmsError *error)
{
        g_autofree char *quoted = NULL;

        if (!path || !*path)
                return true;
        if (strlen(path) > VMMS_BOOT_ARGS_LENGTH_MAX || !g_utf8_validate(path, -1, NULL)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "%s must be UTF-8 of at most %d bytes",
                               field, VMMS_BOOT_ARGS_LENGTH_MAX);
                return false;
        }
        if (!g_path_is_absolute(path)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "%s '%s' is not an absolute path", field,
                               quoted = vmms_quote(path));
                return false;
        }
        if (!g_file_test(path, G_FILE_TEST_IS_REGULAR) || access(path, R_OK) < 0) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT, "%s '%s' is not a readable file", field,
                               quoted = vmms_quote(path));
                return false;
        }
        return true;
}

bool vmms_vm_boot_source_valid(const VmmsVmDefinition *def, VmmsError *error)
{
        bool kernel = def->kernel_path && *def->kernel_path;
        bool vhd = def->vhd_path && *def->vhd_path;
        bool libvirt = g_strcmp0(def->engine, "libvirt") == 0;

        if (!libvirt && (kernel || vhd || (def->initrd_path && *def->initrd_path) ||
                         (def->kernel_args && *def->kernel_args))) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "KernelPath, InitrdPath, KernelArgs and VHDPath are for the libvirt engine; "
                               "the %s engine boots its own guest",
                               def->engine ? def->engine : "bundled");
                return false;
        }
        if (libvirt && !kernel && !vhd) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "a libvirt VM needs KernelPath (with InitrdPath and KernelArgs) or VHDPath");
                return false;
        }
        if (!kernel && ((def->initrd_path && *def->initrd_path) || (def->kernel_args && *def->kernel_args))) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "InitrdPath and KernelArgs need KernelPath");
                return false;
        }
        if (def->kernel_args && (strlen(def->kernel_args) > VMMS_BOOT_ARGS_LENGTH_MAX)) {
                vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                               "KernelArgs is %zu bytes long; the limit is %d", strlen(def->kernel_args),
                               VMMS_BOOT_ARGS_LENGTH_MAX);
                return false;
        }
        for (const char *c = def->kernel_args; c && *c; c++)
                if (*c < 0x20 || *c > 0x7e) {
                        vmms_error_set(error, VMMS_ERROR_INVALID_ARGUMENT,
                                       "KernelArgs may hold printable ASCII only");
                        return false;
                }
        return boot_file_valid("KernelPath", def->kernel_path, error) &&
               boot_file_valid("InitrdPath", def->initrd_path, error) &&
               boot_file_valid("VHDPath", def->vhd_path, error);
}

bool vmms_vm_memory_change_allowed_running(const VmmsMemorySettings *old, const VmmsMemorySettings *new,
                                           VmmsError *error)
{
        if (new->minimum_bytes > old->minimum_bytes) {
                g_autofree char *from = vmms_format_bytes(old->minimum_bytes),
                                *to = vmms_format_bytes(new->minimum_bytes);

                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "MinimumBytes may only be lowered while the VM runs (%s -> %s)", from, to);
                return false;
        }
        if (new->maximum_bytes < old->maximum_bytes) {
                g_autofree char *from = vmms_format_bytes(old->maximum_bytes),
                                *to = vmms_format_bytes(new->maximum_bytes);

                vmms_error_set(error, VMMS_ERROR_FAILED_PRECONDITION,
                               "MaximumBytes may only be raised while the VM runs (%s -> %s)", from, to);
                return false;
        }
        return true;
}

uint64_t vmms_vm_paging_bytes(const VmmsMemorySettings *m)
{
        return m->paging_bytes ? m->paging_bytes : m->startup_bytes * VMMS_PAGING_DEFAULT_FACTOR;
}
