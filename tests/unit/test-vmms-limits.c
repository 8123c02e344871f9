/* One table of limits (proto/vmms-limits.h), three checkers: at each limit's edges and just past them,
 * vmctl's parser, vmmsd's validators and hvd's wire check accept and refuse alike, and each refusal
 * names the setting, so the three cannot drift apart. */
#include <string.h>

#include "hv-abi.h"
#include "hv-partition.h"
#include "vmctl-verbs.h"
#include "vmms-definition.h"
#include "vmms-limits.h"

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VmmsError, vmms_error_clear)

/* Writes value into the setting of def, and puts the settings it must agree with (Minimum <= Startup
 * <= Maximum, Reserve <= Maximum) where any in-range value fits. */
typedef void (*DefinitionSetter)(VmmsVmDefinition *def, uint64_t value, char **text);

static void set_count(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->processor.count = (uint32_t)value;
}

static void set_reserve(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->processor.reserve = (uint32_t)value;
}

static void set_maximum(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->processor.reserve = 0;
        def->processor.maximum = (uint32_t)value;
}

static void set_relative_weight(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->processor.relative_weight = (uint32_t)value;
}

static void set_startup_bytes(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.minimum_bytes = VMMS_MEMORY_BYTES_MIN;
        def->memory.maximum_bytes = VMMS_MEMORY_BYTES_MAX;
        def->memory.startup_bytes = value;
}

static void set_minimum_bytes(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.startup_bytes = def->memory.maximum_bytes = VMMS_MEMORY_BYTES_MAX;
        def->memory.minimum_bytes = value;
}

static void set_maximum_bytes(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.startup_bytes = def->memory.minimum_bytes = VMMS_MEMORY_BYTES_MIN;
        def->memory.maximum_bytes = value;
}

static void set_buffer(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.buffer = (uint32_t)value;
}

static void set_priority(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.priority = (uint32_t)value;
}

/* Text settings: value is a length; *text is a string of that many bytes. */
static void set_paging_bytes(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)text;
        def->memory.paging_bytes = value;
}

static void set_name(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)value;
        g_free(def->name);
        def->name = g_strdup(*text);
}

static void set_boot_args(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)value;
        g_free(def->boot_args);
        def->boot_args = g_strdup(*text);
}

static void set_notes(VmmsVmDefinition *def, uint64_t value, char **text)
{
        (void)value;
        g_free(def->notes);
        def->notes = g_strdup(*text);
}

typedef struct LimitCase {
        const char *name;
        VmmsLimitId limit;
        const char *verb; /* the vmctl verb and parameter that take the setting */
        const char *param;
        DefinitionSetter set;
        uint64_t step; /* "just past" the edge: one unit, or the 2 MB a memory size moves by */
        bool text;     /* the value is a length of text */
        bool hvd;      /* hvd takes it (hv.proto ProcessorSettings) */
} LimitCase;

static const LimitCase limit_cases[] = {
        {"count", VMMS_LIMIT_PROCESSOR_COUNT, "Set-VMProcessor", "Count", set_count, 1, false, false},
        {"processor-count", VMMS_LIMIT_PROCESSOR_COUNT, "New-VM", "ProcessorCount", set_count, 1, false,
         false},
        {"reserve", VMMS_LIMIT_PROCESSOR_RESERVE, "Set-VMProcessor", "Reserve", set_reserve, 1, false, true},
        {"maximum", VMMS_LIMIT_PROCESSOR_MAXIMUM, "Set-VMProcessor", "Maximum", set_maximum, 1, false, true},
        {"relative-weight", VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT, "Set-VMProcessor", "RelativeWeight",
         set_relative_weight, 1, false, true},
        {"startup-bytes", VMMS_LIMIT_MEMORY_STARTUP_BYTES, "Set-VMMemory", "StartupBytes", set_startup_bytes,
         VMMS_MEMORY_BYTES_ALIGN, false, false},
        {"memory-startup-bytes", VMMS_LIMIT_MEMORY_STARTUP_BYTES, "New-VM", "MemoryStartupBytes",
         set_startup_bytes, VMMS_MEMORY_BYTES_ALIGN, false, false},
        {"minimum-bytes", VMMS_LIMIT_MEMORY_MINIMUM_BYTES, "Set-VMMemory", "MinimumBytes", set_minimum_bytes,
         VMMS_MEMORY_BYTES_ALIGN, false, false},
        {"maximum-bytes", VMMS_LIMIT_MEMORY_MAXIMUM_BYTES, "Set-VMMemory", "MaximumBytes", set_maximum_bytes,
         VMMS_MEMORY_BYTES_ALIGN, false, false},
        {"buffer", VMMS_LIMIT_MEMORY_BUFFER, "Set-VMMemory", "Buffer", set_buffer, 1, false, false},
        {"priority", VMMS_LIMIT_MEMORY_PRIORITY, "Set-VMMemory", "Priority", set_priority, 1, false, false},
        {"paging-bytes", VMMS_LIMIT_MEMORY_PAGING_BYTES, "Set-VMMemory", "PagingBytes", set_paging_bytes,
         VMMS_MEMORY_BYTES_ALIGN, false, false},
        {"name", VMMS_LIMIT_NAME_LENGTH, "New-VM", "Name", set_name, 1, true, false},
        {"new-name", VMMS_LIMIT_NAME_LENGTH, "Rename-VM", "NewName", set_name, 1, true, false},
        {"boot-args", VMMS_LIMIT_BOOT_ARGS_LENGTH, "Set-VM", "BootArgs", set_boot_args, 1, true, false},
        {"notes", VMMS_LIMIT_NOTES_LENGTH, "Set-VM", "Notes", set_notes, 1, true, false},
};

/* vmctl: 0 when it binds `-param value` for the verb, else -EINVAL with *ret_error naming it. */
static int vmctl_check(const LimitCase *tc, const char *value, char **ret_error)
{
        const VmctlVerb *verb = vmctl_verb_find(tc->verb);
        g_autofree char *param = g_strdup_printf("-%s", tc->param);
        const char *argv[8];
        g_autoptr(VmctlArgs) args = NULL;
        int argc = 0;

        g_assert_nonnull(verb);
        if (strcmp(tc->param, "Name") != 0)
                argv[argc++] = "web";
        argv[argc++] = param;
        argv[argc++] = value;
        if (strcmp(tc->verb, "New-VM") == 0 && strcmp(tc->param, "MemoryStartupBytes") != 0) {
                argv[argc++] = "-MemoryStartupBytes";
                argv[argc++] = "64MB";
        }
        return vmctl_verb_parse(verb, argc, (char **)argv, &args, ret_error);
}

/* vmmsd: whether its validators take a definition with the setting at value. */
static bool vmmsd_check(const LimitCase *tc, uint64_t value, char *text, VmmsError *error)
{
        g_auto(VmmsVmDefinition) def;

        vmms_vm_definition_init_defaults(&def);
        def.name = g_strdup("web");
        tc->set(&def, value, &text);
        return vmms_vm_name_valid(def.name, error) && vmms_vm_processor_valid(&def.processor, error) &&
               vmms_vm_memory_valid(&def.memory, error) &&
               vmms_vm_workload_valid(def.workload, def.boot_args, def.notes, error);
}

/* hvd: what it makes of the setting at value on hv.proto's wire, others unset. */
static int hvd_check(const LimitCase *tc, uint64_t value, HvProcessorSettings *ret, char **ret_error)
{
        uint32_t wire[3] = {0, 0, 0};

        switch (tc->limit) {
        case VMMS_LIMIT_PROCESSOR_RESERVE:
                wire[0] = (uint32_t)value;
                break;
        case VMMS_LIMIT_PROCESSOR_MAXIMUM:
                wire[1] = (uint32_t)value;
                break;
        case VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT:
                wire[2] = (uint32_t)value;
                break;
        default:
                g_assert_not_reached();
        }
        return hv_processor_settings_from_wire(wire[0], wire[1], wire[2], ret, ret_error);
}

static uint32_t hvd_value(const LimitCase *tc, const HvProcessorSettings *settings)
{
        switch (tc->limit) {
        case VMMS_LIMIT_PROCESSOR_RESERVE:
                return settings->reserve_pct;
        case VMMS_LIMIT_PROCESSOR_MAXIMUM:
                return settings->maximum_pct;
        case VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT:
                return settings->relative_weight;
        default:
                g_assert_not_reached();
        }
}

static void check_value(const LimitCase *tc, uint64_t value)
{
        const VmmsLimit *limit = vmms_limit(tc->limit);
        bool expect = value >= limit->min && value <= limit->max;
        g_autofree char *text =
                tc->text ? g_strnfill(value, 'a') : g_strdup_printf("%" G_GUINT64_FORMAT, value);
        g_autofree char *vmctl_error = NULL, *hvd_error = NULL;
        g_auto(VmmsError) vmmsd_error = {0};
        g_autofree char *param = g_strdup_printf("-%s", tc->param);
        HvProcessorSettings settings;
        int r;

        g_test_message("%s %" G_GUINT64_FORMAT ": %s", limit->name, value,
                       expect ? "in range" : "out of range");
        r = vmctl_check(tc, text, &vmctl_error);
        if (expect != (r == 0))
                g_error("vmctl %s %s %s: %s", tc->verb, param, tc->text ? "(length)" : text,
                        r == 0 ? "accepted" : vmctl_error);
        if (!expect)
                g_assert_nonnull(strstr(vmctl_error, param));

        if (expect != vmmsd_check(tc, value, text, &vmmsd_error))
                g_error("vmmsd %s %" G_GUINT64_FORMAT ": %s", limit->name, value,
                        expect ? vmmsd_error.message : "accepted");
        if (!expect) {
                g_assert_cmpint(vmmsd_error.code, ==, VMMS_ERROR_INVALID_ARGUMENT);
                if (g_ascii_strncasecmp(vmmsd_error.message, limit->name, strlen(limit->name)) != 0)
                        g_error("vmmsd's error does not name %s: %s", limit->name, vmmsd_error.message);
        }

        if (!tc->hvd)
                return;
        r = hvd_check(tc, value, &settings, &hvd_error);
        if (value == 0 && limit->min > 0) {
                /* hv.proto's 0 is "unset": the default, never a 0 % cap or weight. */
                g_assert_cmpint(r, ==, 0);
                g_assert_cmpuint(hvd_value(tc, &settings), ==, limit->default_value);
                return;
        }
        if (expect != (r == 0))
                g_error("hvd %s %" G_GUINT64_FORMAT ": %s", limit->field, value,
                        r == 0 ? "accepted" : hvd_error);
        if (expect)
                g_assert_cmpuint(hvd_value(tc, &settings), ==, value);
        else
                g_assert_true(g_str_has_prefix(hvd_error, limit->field));
}

static void test_limit_edges_agree(gconstpointer data)
{
        const LimitCase *tc = data;
        const VmmsLimit *limit = vmms_limit(tc->limit);

        if (limit->min >= tc->step)
                check_value(tc, limit->min - tc->step);
        check_value(tc, limit->min);
        check_value(tc, limit->max);
        check_value(tc, limit->max + tc->step);
}

static void test_maximum_zero_is_refused_by_vmctl_and_vmmsd(void)
{
        const LimitCase *maximum = &limit_cases[3];
        g_auto(VmmsError) error = {0};
        g_autofree char *vmctl_error = NULL;

        g_assert_cmpint(maximum->limit, ==, VMMS_LIMIT_PROCESSOR_MAXIMUM);
        g_assert_cmpint(vmctl_check(maximum, "0", &vmctl_error), ==, -EINVAL);
        g_assert_cmpstr(vmctl_error, ==, "-Maximum must be between 1 and 100 (got 0)");
        g_assert_false(vmmsd_check(maximum, 0, NULL, &error));
        g_assert_cmpstr(error.message, ==, "Maximum 0 is out of range 1-100");
}

static void test_size_messages_read_as_people_write_sizes(void)
{
        static const struct {
                VmmsLimitId limit;
                uint64_t value;
                const char *message;
        } cases[] = {
                {VMMS_LIMIT_MEMORY_STARTUP_BYTES, 16ull << 20,
                 "StartupBytes 16 MB is out of range 32 MB–1 TB"},
                {VMMS_LIMIT_MEMORY_MINIMUM_BYTES, 0, "MinimumBytes 0 bytes is out of range 32 MB–1 TB"},
                {VMMS_LIMIT_MEMORY_MAXIMUM_BYTES, (1ull << 40) + (2ull << 20),
                 "MaximumBytes 1.0 TB (1099513724928 bytes) is out of range 32 MB–1 TB"},
                {VMMS_LIMIT_MEMORY_STARTUP_BYTES, 3ull << 39,
                 "StartupBytes 1.5 TB (1649267441664 bytes) is out of range 32 MB–1 TB"},
                {VMMS_LIMIT_MEMORY_PAGING_BYTES, 5ull << 40, "PagingBytes 5 TB is out of range 0 bytes–4 TB"},
                {VMMS_LIMIT_PROCESSOR_COUNT, 33, "Count 33 is out of range 1-32"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                char message[160];

                g_assert_false(
                        vmms_limit_check(cases[i].limit, NULL, cases[i].value, message, sizeof(message)));
                g_assert_cmpstr(message, ==, cases[i].message);
        }
}

static void test_sizes_read_as_people_write_them(void)
{
        static const struct {
                uint64_t bytes;
                const char *text;
        } cases[] = {{0, "0 bytes"},         {1023, "1023 bytes"},   {512ull << 10, "512 KB"},
                     {64ull << 20, "64 MB"}, {3ull << 29, "1.5 GB"}, {(100ull << 30) + 1, "100 GB"},
                     {1ull << 40, "1 TB"},   {4ull << 40, "4 TB"}};

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *text = vmms_format_bytes(cases[i].bytes);

                g_assert_cmpstr(text, ==, cases[i].text);
        }
}

static void test_defaults_are_the_tables(void)
{
        g_auto(VmmsVmDefinition) def;
        HvProcessorSettings hv = HV_PROCESSOR_DEFAULTS;

        for (int i = 0; i < VMMS_LIMIT_COUNT; i++) {
                const VmmsLimit *limit = vmms_limit((VmmsLimitId)i);

                g_assert_nonnull(limit->name);
                g_assert_nonnull(limit->field);
                g_assert_nonnull(limit->unit);
                g_assert_cmpuint(limit->min, <=, limit->max);
                if (limit->default_value)
                        g_assert_true(vmms_limit_check((VmmsLimitId)i, NULL, limit->default_value, NULL, 0));
        }
        vmms_vm_definition_init_defaults(&def);
        g_assert_cmpuint(def.processor.count, ==, vmms_limit(VMMS_LIMIT_PROCESSOR_COUNT)->default_value);
        g_assert_cmpuint(def.processor.reserve, ==, vmms_limit(VMMS_LIMIT_PROCESSOR_RESERVE)->default_value);
        g_assert_cmpuint(def.processor.maximum, ==, vmms_limit(VMMS_LIMIT_PROCESSOR_MAXIMUM)->default_value);
        g_assert_cmpuint(def.processor.relative_weight, ==,
                         vmms_limit(VMMS_LIMIT_PROCESSOR_RELATIVE_WEIGHT)->default_value);
        g_assert_cmpuint(def.memory.startup_bytes, ==,
                         vmms_limit(VMMS_LIMIT_MEMORY_STARTUP_BYTES)->default_value);
        g_assert_cmpuint(def.memory.buffer, ==, vmms_limit(VMMS_LIMIT_MEMORY_BUFFER)->default_value);
        g_assert_cmpuint(def.memory.priority, ==, vmms_limit(VMMS_LIMIT_MEMORY_PRIORITY)->default_value);
        g_assert_true(vmms_vm_processor_valid(&def.processor, NULL));
        g_assert_true(vmms_vm_memory_valid(&def.memory, NULL));

        g_assert_cmpuint(hv.reserve_pct, ==, def.processor.reserve);
        g_assert_cmpuint(hv.maximum_pct, ==, def.processor.maximum);
        g_assert_cmpuint(hv.relative_weight, ==, def.processor.relative_weight);
        g_assert_cmpuint(VMMS_PROCESSOR_COUNT_MAX, ==, HV_MAX_VPS_PER_PARTITION);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(limit_cases); i++) {
                g_autofree char *path = g_strdup_printf("/limits/edges-agree/%s", limit_cases[i].name);

                g_test_add_data_func(path, &limit_cases[i], test_limit_edges_agree);
        }
        g_test_add_func("/limits/maximum-zero-is-refused-by-vmctl-and-vmmsd",
                        test_maximum_zero_is_refused_by_vmctl_and_vmmsd);
        g_test_add_func("/limits/size-messages-read-as-people-write-sizes",
                        test_size_messages_read_as_people_write_sizes);
        g_test_add_func("/limits/sizes-read-as-people-write-them", test_sizes_read_as_people_write_them);
        g_test_add_func("/limits/defaults-are-the-tables", test_defaults_are_the_tables);
        return g_test_run();
}
