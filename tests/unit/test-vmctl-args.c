/* vmctl's command line: verbs, PowerShell-style parameter binding, the range checks and their
 * messages, the update masks Set-VMProcessor/Set-VMMemory send, and the table and JSON output. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vmctl-args.h"
#include "vmctl-format.h"
#include "vmctl-rpc.h"
#include "vmctl-verbs.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define MAX_ARGS 16

/* Runs vmctl_main on argv (NULL-terminated, without "vmctl") and captures what it prints. */
typedef struct Run {
        int status;
        char *out;
        char *err;
} Run;

static void run_clear(Run *run)
{
        g_free(run->out);
        g_free(run->err);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Run, run_clear)

static void run_vmctl(const char *const *args, Run *ret_run)
{
        char *argv[MAX_ARGS + 2] = {(char *)"vmctl"};
        size_t out_len = 0, err_len = 0;
        FILE *out, *err;
        int argc = 1;

        for (; args[argc - 1]; argc++)
                argv[argc] = (char *)args[argc - 1];
        out = open_memstream(&ret_run->out, &out_len);
        err = open_memstream(&ret_run->err, &err_len);
        /* Never reach a real daemon from a unit test. */
        g_setenv("VMMS_SOCKET", "/nonexistent/vmctl-unit-test.sock", TRUE);
        ret_run->status = vmctl_main(argc, argv, out, err);
        fclose(out);
        fclose(err);
}

typedef struct UsageCase {
        const char *name;
        const char *args[MAX_ARGS];
        int status;
        const char *err; /* the whole of stderr */
} UsageCase;

static const UsageCase usage_cases[] = {
        {"no-verb", {NULL}, 2, "vmctl: no verb given; vmctl -? lists the verbs\n"},
        {"unknown-verb", {"Frob-VM", NULL}, 2, "vmctl: unknown verb 'Frob-VM'; vmctl -? lists the verbs\n"},
        {"unknown-parameter",
         {"Start-VM", "web", "-Foo", "1", NULL},
         2,
         "vmctl: Start-VM: unknown parameter -Foo\n"},
        {"unknown-parameter-with-colon",
         {"Get-VM", "-Colour:red", NULL},
         2,
         "vmctl: Get-VM: unknown parameter -Colour\n"},
        {"ambiguous-prefix",
         {"Set-VMMemory", "web", "-M", "1GB", NULL},
         2,
         "vmctl: Set-VMMemory: parameter -M is ambiguous: it could be -MinimumBytes, -MaximumBytes\n"},
        {"ambiguous-prefix-with-common-parameter",
         {"Set-VMMemory", "web", "-S", "1GB", NULL},
         2,
         "vmctl: Set-VMMemory: parameter -S is ambiguous: it could be -StartupBytes, -Server\n"},
        {"missing-required",
         {"New-VM", "-Name", "web", NULL},
         2,
         "vmctl: New-VM: missing required parameter -MemoryStartupBytes\n"},
        {"missing-name", {"Start-VM", NULL}, 2, "vmctl: Start-VM: missing required parameter -Name\n"},
        {"missing-value", {"Start-VM", "-Name", NULL}, 2, "vmctl: Start-VM: missing value for -Name\n"},
        {"parameter-is-not-a-value",
         {"New-VM", "-Name", "-MemoryStartupBytes", "1GB", NULL},
         2,
         "vmctl: New-VM: missing value for -Name\n"},
        {"bool-without-value-hints-at-shell-quoting",
         {"Set-VMMemory", "web", "-DynamicMemoryEnabled", NULL},
         2,
         "vmctl: Set-VMMemory: missing value for -DynamicMemoryEnabled (write $true or $false; quote '$true' "
         "in a "
         "shell)\n"},
        {"bool-garbage",
         {"Set-VMMemory", "web", "-DynamicMemoryEnabled", "maybe", NULL},
         2,
         "vmctl: Set-VMMemory: -DynamicMemoryEnabled expects $true or $false (got 'maybe')\n"},
        {"given-twice",
         {"Start-VM", "-Name", "a", "-name", "b", NULL},
         2,
         "vmctl: Start-VM: -Name is given more than once\n"},
        {"second-positional",
         {"Start-VM", "a", "b", NULL},
         2,
         "vmctl: Start-VM: unexpected argument 'b' (-Name is already given)\n"},
        {"positional-where-none-is-taken",
         {"Get-VMHost", "extra", NULL},
         2,
         "vmctl: Get-VMHost: unexpected argument 'extra'\n"},
        {"empty-name", {"Start-VM", "-Name:", NULL}, 2, "vmctl: Start-VM: -Name must not be empty\n"},
        {"bad-workload",
         {"New-VM", "web", "-MemoryStartupBytes", "512MB", "-Workload", "gpu", NULL},
         2,
         "vmctl: New-VM: -Workload must be one of idle, cpu, memsoak, cache (got 'gpu')\n"},
        {"bad-size",
         {"New-VM", "web", "-MemoryStartupBytes", "12XB", NULL},
         2,
         "vmctl: New-VM: -MemoryStartupBytes expects a size such as 512MB, 2GB or a byte count (got "
         "'12XB')\n"},
        {"size-too-large",
         {"New-VM", "web", "-MemoryStartupBytes", "20000000TB", NULL},
         2,
         "vmctl: New-VM: -MemoryStartupBytes is too large (got 20000000TB)\n"},
        {"not-a-number",
         {"Set-VMProcessor", "web", "-Reserve", "ten", NULL},
         2,
         "vmctl: Set-VMProcessor: -Reserve expects a whole number from 0 to 100 (got 'ten')\n"},
        {"processor-count-below-range",
         {"New-VM", "web", "-MemoryStartupBytes", "512MB", "-ProcessorCount", "0", NULL},
         2,
         "vmctl: New-VM: -ProcessorCount must be between 1 and 32 (got 0)\n"},
        {"processor-count-above-range",
         {"New-VM", "web", "-MemoryStartupBytes", "512MB", "-ProcessorCount", "33", NULL},
         2,
         "vmctl: New-VM: -ProcessorCount must be between 1 and 32 (got 33)\n"},
        {"count-above-range",
         {"Set-VMProcessor", "web", "-Count", "33", NULL},
         2,
         "vmctl: Set-VMProcessor: -Count must be between 1 and 32 (got 33)\n"},
        {"reserve-above-range",
         {"Set-VMProcessor", "web", "-Reserve", "101", NULL},
         2,
         "vmctl: Set-VMProcessor: -Reserve must be between 0 and 100 (got 101)\n"},
        {"reserve-negative",
         {"Set-VMProcessor", "web", "-Reserve", "-1", NULL},
         2,
         "vmctl: Set-VMProcessor: -Reserve must be between 0 and 100 (got -1)\n"},
        {"maximum-above-range",
         {"Set-VMProcessor", "web", "-Maximum:150", NULL},
         2,
         "vmctl: Set-VMProcessor: -Maximum must be between 1 and 100 (got 150)\n"},
        {"maximum-zero-is-refused-as-in-hyper-v",
         {"Set-VMProcessor", "web", "-Maximum", "0", NULL},
         2,
         "vmctl: Set-VMProcessor: -Maximum must be between 1 and 100 (got 0)\n"},
        {"relative-weight-below-range",
         {"Set-VMProcessor", "web", "-RelativeWeight", "0", NULL},
         2,
         "vmctl: Set-VMProcessor: -RelativeWeight must be between 1 and 10000 (got 0)\n"},
        {"relative-weight-above-range",
         {"Set-VMProcessor", "web", "-RelativeWeight", "10001", NULL},
         2,
         "vmctl: Set-VMProcessor: -RelativeWeight must be between 1 and 10000 (got 10001)\n"},
        {"buffer-below-range",
         {"Set-VMMemory", "web", "-Buffer", "4", NULL},
         2,
         "vmctl: Set-VMMemory: -Buffer must be between 5 and 2000 (got 4)\n"},
        {"buffer-above-range",
         {"Set-VMMemory", "web", "-Buffer", "2001", NULL},
         2,
         "vmctl: Set-VMMemory: -Buffer must be between 5 and 2000 (got 2001)\n"},
        {"priority-above-range",
         {"Set-VMMemory", "web", "-Priority", "101", NULL},
         2,
         "vmctl: Set-VMMemory: -Priority must be between 0 and 100 (got 101)\n"},
        {"minimum-bytes-below-32mb",
         {"Set-VMMemory", "web", "-MinimumBytes", "16MB", NULL},
         2,
         "vmctl: Set-VMMemory: -MinimumBytes must be between 32MB and 1TB (got 16MB)\n"},
        {"startup-bytes-below-32mb",
         {"New-VM", "web", "-MemoryStartupBytes", "16MB", NULL},
         2,
         "vmctl: New-VM: -MemoryStartupBytes must be between 32MB and 1TB (got 16MB)\n"},
        {"counter-sample-interval-zero",
         {"Get-Counter", "-SampleInterval", "0", NULL},
         2,
         "vmctl: Get-Counter: -SampleInterval must be between 1 and 3600 (got 0)\n"},
        {"counter-max-samples-zero",
         {"Get-Counter", "-MaxSamples", "0", NULL},
         2,
         "vmctl: Get-Counter: -MaxSamples must be between 1 and 1000000 (got 0)\n"},
        {"set-vm-needs-a-setting",
         {"Set-VM", "web", NULL},
         2,
         "vmctl: Set-VM: give at least one of -Notes, -AutomaticStartAction, -Workload, -BootArgs, "
         "-HighlyAvailable\n"},
        {"set-vm-bad-automatic-start-action",
         {"Set-VM", "web", "-AutomaticStartAction", "Sometimes", NULL},
         2,
         "vmctl: Set-VM: -AutomaticStartAction must be one of Nothing, StartIfRunning, Start (got "
         "'Sometimes')\n"},
        {"new-vm-bad-automatic-start-action",
         {"New-VM", "web", "-MemoryStartupBytes", "64MB", "-AutomaticStartAction", "Always", NULL},
         2,
         "vmctl: New-VM: -AutomaticStartAction must be one of Nothing, StartIfRunning, Start (got "
         "'Always')\n"},
        {"rename-vm-needs-new-name",
         {"Rename-VM", "web", NULL},
         2,
         "vmctl: Rename-VM: missing required parameter -NewName\n"},
        {"rename-vm-empty-new-name",
         {"Rename-VM", "web", "-NewName:", NULL},
         2,
         "vmctl: Rename-VM: -NewName must not be empty\n"},
        {"minimum-above-startup",
         {"Set-VMMemory", "web", "-MinimumBytes", "1GB", "-StartupBytes", "512MB", NULL},
         2,
         "vmctl: Set-VMMemory: -MinimumBytes (1GB) must not be more than -StartupBytes (512MB)\n"},
        {"startup-above-maximum",
         {"Set-VMMemory", "web", "-StartupBytes", "2GB", "-MaximumBytes", "1GB", NULL},
         2,
         "vmctl: Set-VMMemory: -StartupBytes (2GB) must not be more than -MaximumBytes (1GB)\n"},
        {"newest-below-range",
         {"Get-VMEvent", "-Newest", "0", NULL},
         2,
         "vmctl: Get-VMEvent: -Newest must be between 1 and 10000 (got 0)\n"},
        {"set-processor-needs-a-setting",
         {"Set-VMProcessor", "web", NULL},
         2,
         "vmctl: Set-VMProcessor: give at least one of -Count, -Reserve, -Maximum, -RelativeWeight, "
         "-CompatibilityForMigrationEnabled\n"},
        {"set-memory-needs-a-setting",
         {"Set-VMMemory", "web", NULL},
         2,
         "vmctl: Set-VMMemory: give at least one of -DynamicMemoryEnabled, -StartupBytes, -MinimumBytes, "
         "-MaximumBytes, -Buffer, -Priority, -PagingBytes, -GoalSeeking\n"},
        {"certificate-is-not-for-unix-sockets",
         {"Get-VM", "-Server", "unix:/tmp/x.sock", "-CertificateFile", "/etc/hostname", NULL},
         2,
         "vmctl: Get-VM: -CertificateFile is for a host:port -Server, not the unix socket "
         "unix:/tmp/x.sock\n"},
        {"help-for-an-unknown-verb",
         {"Get-Help", "Frob-VM", NULL},
         2,
         "vmctl: Get-Help: unknown verb 'Frob-VM'; vmctl -? lists the verbs\n"},
        {"unreachable-daemon-exits-3",
         {"Get-VM", NULL},
         3,
         "vmctl: cannot connect to vmmsd at unix:/nonexistent/vmctl-unit-test.sock: No such file or "
         "directory (is "
         "vmmsd running?)\n"},
        {"unreachable-server-option-wins-over-environment",
         {"-Server", "/nonexistent/other.sock", "Get-VM", NULL},
         3,
         "vmctl: cannot connect to vmmsd at unix:/nonexistent/other.sock: No such file or directory (is "
         "vmmsd "
         "running?)\n"},
};

static void test_usage_case(gconstpointer data)
{
        const UsageCase *tc = data;
        g_auto(Run) run = {0};

        run_vmctl(tc->args, &run);
        g_assert_cmpstr(run.err, ==, tc->err);
        g_assert_cmpint(run.status, ==, tc->status);
        g_assert_cmpstr(run.out, ==, "");
}

typedef struct HelpCase {
        const char *name;
        const char *args[MAX_ARGS];
        const char *contains;
} HelpCase;

static const HelpCase help_cases[] = {
        {"question-mark-lists-verbs", {"-?", NULL}, "  Set-VMProcessor  Changes a VM's processor settings"},
        {"get-help-lists-verbs", {"Get-Help", NULL}, "  Get-Counter      Reads performance counters"},
        {"get-help-explains-a-verb", {"get-help", "set-vmprocessor", NULL}, "NAME\n    Set-VMProcessor\n"},
        {"get-help-shows-ranges",
         {"Get-Help", "Set-VMMemory", NULL},
         "[-Buffer <5-2000>] [-Priority <0-100>]"},
        {"verb-question-mark-explains-it", {"Stop-VM", "-?", NULL}, "    -TurnOff\n"},
        {"verb-help-needs-no-required-parameters",
         {"New-VM", "--help", NULL},
         "-MemoryStartupBytes <size 32MB-1TB>"},
        {"get-help-shows-maximum-from-one", {"Get-Help", "Set-VMProcessor", NULL}, "[-Maximum <1-100>]"},
        {"get-help-shows-defaults-from-the-limits",
         {"Get-Help", "Set-VMProcessor", NULL},
         "Share among VMs competing for processors. Default 100."},
        {"get-help-explains-set-vm",
         {"Get-Help", "Set-VM", NULL},
         "[-AutomaticStartAction <Nothing|StartIfRunning|Start>]"},
        {"get-help-explains-rename-vm",
         {"Rename-VM", "-?", NULL},
         "SYNTAX\n    Rename-VM [-Name] <string> -NewName <string>"},
        {"verb-list-has-set-vm", {"-?", NULL}, "  Set-VM           Changes a VM's notes"},
        {"verb-list-has-rename-vm", {"-?", NULL}, "  Rename-VM        Gives a VM a new name"},
        {"question-mark-before-verb", {"-?", "Start-VM", NULL}, "SYNTAX\n    Start-VM [-Name] <string>"},
};

static void test_help_case(gconstpointer data)
{
        const HelpCase *tc = data;
        g_auto(Run) run = {0};

        run_vmctl(tc->args, &run);
        g_assert_cmpstr(run.err, ==, "");
        g_assert_cmpint(run.status, ==, 0);
        if (!strstr(run.out, tc->contains))
                g_error("'%s' not in:\n%s", tc->contains, run.out);
}

static void test_verbs_are_case_insensitive(void)
{
        static const char *const spellings[] = {"Get-VM", "get-vm", "GET-VM", "gEt-Vm"};

        for (size_t i = 0; i < G_N_ELEMENTS(spellings); i++) {
                const VmctlVerb *verb = vmctl_verb_find(spellings[i]);

                g_assert_nonnull(verb);
                g_assert_cmpstr(verb->name, ==, "Get-VM");
        }
        g_assert_null(vmctl_verb_find("Get-VMs"));
        g_assert_null(vmctl_verb_find("Get"));
}

/* The text between heading and the next line that starts in column 0 (the next heading). */
static char *help_section(const char *help, const char *heading)
{
        const char *start = strstr(help, heading), *end;

        if (!start)
                return NULL;
        start += strlen(heading);
        for (end = start; *end; end++)
                if (end[0] == '\n' && end[1] && end[1] != ' ' && end[1] != '\n')
                        break;
        return g_strndup(start, (gsize)(end - start));
}

static JsonNode *parse_json(const char *text)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) error = NULL;

        if (!json_parser_load_from_data(parser, text, -1, &error))
                g_error("not JSON (%s):\n%s", error->message, text);
        return json_node_copy(json_parser_get_root(parser));
}

/* Every verb's help, as text and as -Json: a synopsis, a parameters section that says something, and
 * an example that runs vmctl. */
static void test_every_verb_and_parameter_explains_itself(void)
{
        size_t n_verbs;
        const VmctlVerb *verbs = vmctl_verbs(&n_verbs);

        g_assert_cmpuint(n_verbs, >=, 15);
        for (size_t i = 0; i < n_verbs; i++) {
                const char *args[] = {"Get-Help", verbs[i].name, NULL};
                const char *json_args[] = {"Get-Help", verbs[i].name, "-Json", NULL};
                g_auto(Run) run = {0}, json_run = {0};
                g_autofree char *synopsis = NULL, *params = NULL, *example = NULL;
                g_autoptr(JsonNode) root = NULL;
                JsonObject *help;
                JsonArray *json_params, *examples;

                g_assert_true(verbs[i].synopsis && verbs[i].synopsis[0]);
                g_assert_true(g_str_has_prefix(verbs[i].example, "vmctl "));
                for (size_t p = 0; p < verbs[i].n_params; p++)
                        if (!verbs[i].params[p].help || !verbs[i].params[p].help[0])
                                g_error("%s -%s has no help", verbs[i].name, verbs[i].params[p].name);

                run_vmctl(args, &run);
                g_assert_cmpint(run.status, ==, 0);
                synopsis = help_section(run.out, "\nSYNOPSIS\n");
                params = help_section(run.out, "\nPARAMETERS\n");
                example = help_section(run.out, "\nEXAMPLE\n");
                if (!synopsis || !strstr(synopsis, verbs[i].synopsis) || !params ||
                    !g_str_has_prefix(params, "    ") || !example || !g_str_has_prefix(example, "    vmctl "))
                        g_error("%s's help lacks a synopsis, a parameters section or an example:\n%s",
                                verbs[i].name, run.out);

                run_vmctl(json_args, &json_run);
                g_assert_cmpint(json_run.status, ==, 0);
                root = parse_json(json_run.out);
                help = json_node_get_object(root);
                g_assert_cmpstr(json_object_get_string_member(help, "name"), ==, verbs[i].name);
                g_assert_cmpstr(json_object_get_string_member(help, "synopsis"), ==, verbs[i].synopsis);
                json_params = json_object_get_array_member(help, "parameters");
                g_assert_cmpuint(json_array_get_length(json_params), ==, verbs[i].n_params);
                for (guint p = 0; p < json_array_get_length(json_params); p++) {
                        JsonObject *param = json_array_get_object_element(json_params, p);

                        g_assert_cmpstr(json_object_get_string_member(param, "name"), ==,
                                        verbs[i].params[p].name);
                        g_assert_nonnull(json_object_get_string_member(param, "type"));
                        g_assert_cmpstr(json_object_get_string_member(param, "description"), ==,
                                        verbs[i].params[p].help);
                        g_assert_true(json_object_has_member(param, "default") ==
                                      verbs[i].params[p].has_default);
                }
                examples = json_object_get_array_member(help, "examples");
                g_assert_cmpuint(json_array_get_length(examples), >=, 1);
                g_assert_cmpstr(json_array_get_string_element(examples, 0), ==, verbs[i].example);
        }
}

/* Parses args for verb and returns the bound values; the args must outlive them. */
static VmctlArgs *bind(const char *verb_name, const char *const *args)
{
        const VmctlVerb *verb = vmctl_verb_find(verb_name);
        g_autofree char *error = NULL;
        VmctlArgs *bound = NULL;
        int argc = 0;

        g_assert_nonnull(verb);
        while (args[argc])
                argc++;
        if (vmctl_verb_parse(verb, argc, (char **)args, &bound, &error) < 0)
                g_error("%s: %s", verb_name, error);
        return bound;
}

/* What -Json says of a parameter: its type by PowerShell's name, ranges, default, choices. */
static void test_help_json_gives_types_ranges_and_defaults(void)
{
        const char *args[] = {"Set-VMProcessor", "-?", "-Json", NULL};
        const char *new_vm[] = {"Get-Help", "New-VM", "-Json", NULL};
        g_auto(Run) run = {0}, new_vm_run = {0};
        g_autoptr(JsonNode) root = NULL, new_vm_root = NULL;
        JsonObject *weight = NULL, *startup = NULL, *workload = NULL;
        JsonArray *params;

        run_vmctl(args, &run);
        g_assert_cmpint(run.status, ==, 0);
        root = parse_json(run.out);
        params = json_object_get_array_member(json_node_get_object(root), "parameters");
        for (guint i = 0; i < json_array_get_length(params); i++) {
                JsonObject *param = json_array_get_object_element(params, i);

                if (strcmp(json_object_get_string_member(param, "name"), "RelativeWeight") == 0)
                        weight = param;
        }
        g_assert_nonnull(weight);
        g_assert_cmpstr(json_object_get_string_member(weight, "type"), ==, "UInt64");
        g_assert_cmpint(json_object_get_int_member(weight, "minimum"), ==, 1);
        g_assert_cmpint(json_object_get_int_member(weight, "maximum"), ==, 10000);
        g_assert_cmpint(json_object_get_int_member(weight, "default"), ==, 100);
        g_assert_false(json_object_get_boolean_member(weight, "common"));

        run_vmctl(new_vm, &new_vm_run);
        new_vm_root = parse_json(new_vm_run.out);
        params = json_object_get_array_member(json_node_get_object(new_vm_root), "parameters");
        for (guint i = 0; i < json_array_get_length(params); i++) {
                JsonObject *param = json_array_get_object_element(params, i);
                const char *name = json_object_get_string_member(param, "name");

                if (strcmp(name, "MemoryStartupBytes") == 0)
                        startup = param;
                else if (strcmp(name, "Workload") == 0)
                        workload = param;
        }
        g_assert_nonnull(startup);
        g_assert_cmpstr(json_object_get_string_member(startup, "unit"), ==, "bytes");
        g_assert_cmpint(json_object_get_int_member(startup, "minimum"), ==, 32 * MiB);
        g_assert_true(json_object_get_boolean_member(startup, "required"));
        g_assert_nonnull(workload);
        g_assert_cmpstr(json_array_get_string_element(json_object_get_array_member(workload, "choices"), 3),
                        ==, "cache");
}

/* Get-Help -Json without a verb lists every verb with its synopsis. */
static void test_help_json_lists_every_verb(void)
{
        const char *args[] = {"Get-Help", "-Json", NULL};
        g_auto(Run) run = {0};
        g_autoptr(JsonNode) root = NULL;
        size_t n_verbs;
        const VmctlVerb *verbs = vmctl_verbs(&n_verbs);
        JsonArray *list;

        run_vmctl(args, &run);
        g_assert_cmpint(run.status, ==, 0);
        root = parse_json(run.out);
        list = json_node_get_array(root);
        g_assert_cmpuint(json_array_get_length(list), ==, n_verbs);
        for (size_t i = 0; i < n_verbs; i++) {
                JsonObject *verb = json_array_get_object_element(list, (guint)i);

                g_assert_cmpstr(json_object_get_string_member(verb, "name"), ==, verbs[i].name);
                g_assert_cmpstr(json_object_get_string_member(verb, "synopsis"), ==, verbs[i].synopsis);
        }
}

typedef struct BindCase {
        const char *name;
        const char *verb;
        const char *args[MAX_ARGS];
        const char *param;
        const char *text; /* expected text, or NULL to skip */
        uint64_t number;  /* UINT/SIZE */
        bool flag;        /* BOOL/SWITCH */
} BindCase;

static const BindCase bind_cases[] = {
        {"name-value", "Start-VM", {"-Name", "web", NULL}, "Name", "web", 0, false},
        {"name-colon-value", "Start-VM", {"-Name:web", NULL}, "Name", "web", 0, false},
        {"name-is-case-insensitive", "Start-VM", {"-nAmE", "web", NULL}, "Name", "web", 0, false},
        {"name-by-prefix", "Start-VM", {"-N", "web", NULL}, "Name", "web", 0, false},
        {"double-dash-accepted", "Start-VM", {"--name", "web", NULL}, "Name", "web", 0, false},
        {"positional-name", "Start-VM", {"web", NULL}, "Name", "web", 0, false},
        {"positional-vmname", "Set-VMProcessor", {"web", "-Reserve", "10", NULL}, "VMName", "web", 0, false},
        {"positional-after-parameters",
         "Set-VMProcessor",
         {"-Reserve", "10", "web", NULL},
         "VMName",
         "web",
         0,
         false},
        {"colon-value-keeps-later-colons",
         "Get-VM",
         {"-Server:unix:/run/x.sock", NULL},
         "Server",
         "unix:/run/x.sock",
         0,
         false},
        {"prefix-of-long-name",
         "Set-VMProcessor",
         {"web", "-Rel", "200", NULL},
         "RelativeWeight",
         NULL,
         200,
         false},
        {"uint-colon", "Set-VMProcessor", {"web", "-Reserve:0", NULL}, "Reserve", NULL, 0, false},
        {"uint-at-top-of-range",
         "Set-VMProcessor",
         {"web", "-RelativeWeight", "10000", NULL},
         "RelativeWeight",
         NULL,
         10000,
         false},
        {"size-mb-is-mib",
         "New-VM",
         {"web", "-MemoryStartupBytes", "512MB", NULL},
         "MemoryStartupBytes",
         NULL,
         512 * MiB,
         false},
        {"size-gb", "New-VM", {"web", "-Mem", "2GB", NULL}, "MemoryStartupBytes", NULL, 2 * GiB, false},
        {"size-lowercase",
         "New-VM",
         {"web", "-Mem", "2gb", NULL},
         "MemoryStartupBytes",
         NULL,
         2 * GiB,
         false},
        {"size-bytes", "New-VM", {"web", "-Mem", "1073741824", NULL}, "MemoryStartupBytes", NULL, GiB, false},
        {"size-gib", "New-VM", {"web", "-Mem", "1GiB", NULL}, "MemoryStartupBytes", NULL, GiB, false},
        {"minimum-bytes-at-32mb",
         "Set-VMMemory",
         {"web", "-Min", "32MB", NULL},
         "MinimumBytes",
         NULL,
         32 * MiB,
         false},
        {"workload-case-folded",
         "New-VM",
         {"web", "-Mem", "1GB", "-Workload", "MemSoak", NULL},
         "Workload",
         "memsoak",
         0,
         false},
        {"bool-dollar-true",
         "Set-VMMemory",
         {"web", "-DynamicMemoryEnabled", "$true", NULL},
         "DynamicMemoryEnabled",
         NULL,
         0,
         true},
        {"bool-dollar-false",
         "Set-VMMemory",
         {"web", "-Dyn", "$False", NULL},
         "DynamicMemoryEnabled",
         NULL,
         0,
         false},
        {"bool-true", "Set-VMMemory", {"web", "-Dyn", "TRUE", NULL}, "DynamicMemoryEnabled", NULL, 0, true},
        {"bool-false",
         "Set-VMMemory",
         {"web", "-Dyn", "false", NULL},
         "DynamicMemoryEnabled",
         NULL,
         0,
         false},
        {"bool-one", "Set-VMMemory", {"web", "-Dyn", "1", NULL}, "DynamicMemoryEnabled", NULL, 0, true},
        {"bool-zero", "Set-VMMemory", {"web", "-Dyn:0", NULL}, "DynamicMemoryEnabled", NULL, 0, false},
        {"switch-present", "Stop-VM", {"web", "-TurnOff", NULL}, "TurnOff", NULL, 0, true},
        {"switch-colon-false", "Stop-VM", {"web", "-TurnOff:$false", NULL}, "TurnOff", NULL, 0, false},
        {"switch-does-not-take-next-argument", "Stop-VM", {"-Force", "web", NULL}, "Name", "web", 0, false},
        {"common-json-switch", "Get-VM", {"-json", NULL}, "Json", NULL, 0, true},
};

static void test_bind_case(gconstpointer data)
{
        const BindCase *tc = data;
        g_autoptr(VmctlArgs) args = bind(tc->verb, tc->args);
        const VmctlValue *v = vmctl_args_get(args, tc->param);

        g_assert_true(v->set);
        if (tc->text)
                g_assert_cmpstr(v->text, ==, tc->text);
        switch (args->params[v - args->values].type) {
        case VMCTL_PARAM_UINT:
        case VMCTL_PARAM_SIZE:
                g_assert_cmpuint(v->number, ==, tc->number);
                break;
        case VMCTL_PARAM_BOOL:
        case VMCTL_PARAM_SWITCH:
                g_assert_cmpint(v->flag, ==, tc->flag);
                break;
        default:
                break;
        }
}

static void test_exact_name_beats_longer_prefix_match(void)
{
        static const VmctlParam params[] = {
                {.name = "Count", .type = VMCTL_PARAM_UINT, .max = 100},
                {.name = "CountLimit", .type = VMCTL_PARAM_UINT, .max = 100},
        };
        const char *argv[] = {"-count", "3", "-countl", "4"};
        g_autoptr(VmctlArgs) args = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(vmctl_args_parse(params, 2, 4, (char **)argv, false, &args, NULL, &error), ==, 0);
        g_assert_cmpuint(vmctl_args_get(args, "Count")->number, ==, 3);
        g_assert_cmpuint(vmctl_args_get(args, "CountLimit")->number, ==, 4);
}

static void test_counter_paths_are_all_positional(void)
{
        const char *argv[] = {"\\Dynamic Memory VM(*)\\Average Pressure", "-Counter", "\\A(b)\\C",
                              "\\Hyper-V Hypervisor\\Partitions", NULL};
        g_autoptr(VmctlArgs) args = bind("Get-Counter", argv);
        const VmctlValue *v = vmctl_args_get(args, "Counter");

        g_assert_cmpuint(v->list->len, ==, 3);
        g_assert_cmpstr(v->list->pdata[0], ==, "\\Dynamic Memory VM(*)\\Average Pressure");
        g_assert_cmpstr(v->list->pdata[1], ==, "\\A(b)\\C");
        g_assert_cmpstr(v->list->pdata[2], ==, "\\Hyper-V Hypervisor\\Partitions");
}

typedef struct MaskCase {
        const char *name;
        const char *verb;
        const char *args[MAX_ARGS];
        const char *mask[7]; /* NULL-terminated */
        uint64_t values[6];  /* the masked fields' values, in mask order */
} MaskCase;

static const MaskCase mask_cases[] = {
        {"processor-reserve-only",
         "Set-VMProcessor",
         {"web", "-Reserve", "10", NULL},
         {"reserve", NULL},
         {10}},
        {"processor-explicit-zero-is-sent",
         "Set-VMProcessor",
         {"web", "-Reserve", "0", NULL},
         {"reserve", NULL},
         {0}},
        {"processor-count-and-weight",
         "Set-VMProcessor",
         {"web", "-RelativeWeight", "200", "-Count", "2", NULL},
         {"count", "relative_weight", NULL},
         {2, 200}},
        {"processor-all-four",
         "Set-VMProcessor",
         {"web", "-Count", "4", "-Reserve", "10", "-Maximum", "75", "-RelativeWeight", "200", NULL},
         {"count", "reserve", "maximum", "relative_weight", NULL},
         {4, 10, 75, 200}},
        {"memory-dynamic-memory-off",
         "Set-VMMemory",
         {"web", "-DynamicMemoryEnabled", "$false", NULL},
         {"dynamic_memory_enabled", NULL},
         {0}},
        {"memory-issue-example",
         "Set-VMMemory",
         {"web", "-DynamicMemoryEnabled", "$true", "-MinimumBytes", "256MB", "-MaximumBytes", "2GB",
          "-Buffer", "20", "-Priority", "80", NULL},
         {"dynamic_memory_enabled", "minimum_bytes", "maximum_bytes", "buffer", "priority", NULL},
         {1, 256 * MiB, 2 * GiB, 20, 80}},
        {"memory-startup-only",
         "Set-VMMemory",
         {"web", "-StartupBytes", "1GB", NULL},
         {"startup_bytes", NULL},
         {GiB}},
        {"memory-priority-zero-is-sent",
         "Set-VMMemory",
         {"web", "-Priority", "0", NULL},
         {"priority", NULL},
         {0}},
        {"memory-all-six",
         "Set-VMMemory",
         {"web", "-Dyn", "1", "-Startup", "512MB", "-Min", "64MB", "-Max", "1GB", "-Buf", "5", "-Pri", "100",
          NULL},
         {"dynamic_memory_enabled", "startup_bytes", "minimum_bytes", "maximum_bytes", "buffer", "priority",
          NULL},
         {1, 512 * MiB, 64 * MiB, GiB, 5, 100}},
};

/* A scalar field of a settings message, found by its proto name through the descriptor. */
static uint64_t settings_field(const ProtobufCMessage *settings, const char *name)
{
        const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field_by_name(settings->descriptor, name);
        const char *member;

        g_assert_nonnull(f);
        member = (const char *)settings + f->offset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_UINT64:
                return *(const uint64_t *)member;
        case PROTOBUF_C_TYPE_UINT32:
                return *(const uint32_t *)member;
        case PROTOBUF_C_TYPE_BOOL:
                return *(const protobuf_c_boolean *)member;
        default:
                g_assert_not_reached();
        }
}

/* Packs the request and reads it back, so what is checked is what goes on the wire. */
static ProtobufCMessage *wire_round_trip(const ProtobufCMessage *request)
{
        size_t len = protobuf_c_message_get_packed_size(request);
        g_autofree uint8_t *wire = g_malloc(len + 1);

        protobuf_c_message_pack(request, wire);
        return protobuf_c_message_unpack(request->descriptor, NULL, len, wire);
}

static void test_mask_case(gconstpointer data)
{
        const MaskCase *tc = data;
        g_autoptr(VmctlArgs) args = bind(tc->verb, tc->args);
        g_autoptr(ProtobufCMessage) sent = NULL;
        g_autofree char *error = NULL;
        VmctlProcessorUpdate processor;
        VmctlMemoryUpdate memory;
        const ProtobufCMessage *settings;
        char **mask;
        size_t n = 0, n_mask;

        if (strcmp(tc->verb, "Set-VMProcessor") == 0) {
                g_assert_cmpint(vmctl_processor_update_init(&processor, args, &error), ==, 0);
                sent = wire_round_trip(&processor.request.base);
                g_assert_cmpstr(((Vmms__V1__UpdateProcessorRequest *)sent)->vm, ==, "web");
                settings = &((Vmms__V1__UpdateProcessorRequest *)sent)->processor->base;
                mask = ((Vmms__V1__UpdateProcessorRequest *)sent)->update_mask;
                n_mask = ((Vmms__V1__UpdateProcessorRequest *)sent)->n_update_mask;
        } else {
                g_assert_cmpint(vmctl_memory_update_init(&memory, args, &error), ==, 0);
                sent = wire_round_trip(&memory.request.base);
                g_assert_cmpstr(((Vmms__V1__UpdateMemoryRequest *)sent)->vm, ==, "web");
                settings = &((Vmms__V1__UpdateMemoryRequest *)sent)->memory->base;
                mask = ((Vmms__V1__UpdateMemoryRequest *)sent)->update_mask;
                n_mask = ((Vmms__V1__UpdateMemoryRequest *)sent)->n_update_mask;
        }
        while (tc->mask[n])
                n++;
        g_assert_cmpuint(n_mask, ==, n);
        for (size_t i = 0; i < n; i++) {
                g_assert_cmpstr(mask[i], ==, tc->mask[i]);
                g_assert_cmpuint(settings_field(settings, tc->mask[i]), ==, tc->values[i]);
        }
}

static void test_new_vm_sends_processor_settings_only_when_given(void)
{
        const char *plain[] = {"web", "-MemoryStartupBytes", "512MB", NULL};
        const char *full[] = {"-Name",  "db",        "-Mem", "1GB",       "-ProcessorCount",
                              "4",      "-Workload", "cpu",  "-BootArgs", "a=1 b",
                              "-Notes", "n",         NULL};
        g_autoptr(VmctlArgs) a = bind("New-VM", plain), b = bind("New-VM", full);
        VmctlCreate create;

        vmctl_create_init(&create, a);
        g_assert_cmpstr(create.request.name, ==, "web");
        g_assert_null(create.request.processor);
        g_assert_cmpuint(create.request.memory->startup_bytes, ==, 512 * MiB);
        g_assert_cmpstr(create.request.workload, ==, "");

        vmctl_create_init(&create, b);
        g_assert_cmpstr(create.request.name, ==, "db");
        g_assert_nonnull(create.request.processor);
        g_assert_cmpuint(create.request.processor->count, ==, 4);
        g_assert_cmpuint(create.request.memory->startup_bytes, ==, GiB);
        g_assert_cmpstr(create.request.workload, ==, "cpu");
        g_assert_cmpstr(create.request.boot_args, ==, "a=1 b");
        g_assert_cmpstr(create.request.notes, ==, "n");
}

/* Set-VM and Rename-VM: the UpdateVmRequest on the wire names exactly the given parameters. */
typedef struct VmUpdateCase {
        const char *name;
        const char *verb;
        const char *args[MAX_ARGS];
        const char *mask[6];   /* NULL-terminated */
        const char *values[5]; /* each masked field on the wire: text, or an enum's proto name */
} VmUpdateCase;

static const VmUpdateCase vm_update_cases[] = {
        {"set-vm-notes-only", "Set-VM", {"web", "-Notes", "front end", NULL}, {"notes", NULL}, {"front end"}},
        {"set-vm-notes-may-be-cleared", "Set-VM", {"web", "-Notes:", NULL}, {"notes", NULL}, {""}},
        {"set-vm-automatic-start-action-any-case",
         "Set-VM",
         {"web", "-AutomaticStartAction", "startifrunning", NULL},
         {"automatic_start_action", NULL},
         {"AUTOMATIC_START_ACTION_START_IF_RUNNING"}},
        {"set-vm-everything",
         "Set-VM",
         {"-Name", "web", "-Workload", "cpu", "-BootArgs", "a=1", "-AutomaticStartAction", "Nothing",
          "-Notes", "n", NULL},
         {"notes", "workload", "boot_args", "automatic_start_action", NULL},
         {"n", "cpu", "a=1", "AUTOMATIC_START_ACTION_NOTHING"}},
        {"rename-vm", "Rename-VM", {"web", "-NewName", "web2", NULL}, {"name", NULL}, {"web2"}},
};

static void test_vm_update_case(gconstpointer data)
{
        const VmUpdateCase *tc = data;
        g_autoptr(VmctlArgs) args = bind(tc->verb, tc->args);
        g_autoptr(ProtobufCMessage) sent = NULL;
        g_autofree char *error = NULL;
        Vmms__V1__UpdateVmRequest *request;
        VmctlVmUpdate update;
        size_t n = 0;

        g_assert_cmpint(vmctl_vm_update_init(&update, args, &error), ==, 0);
        sent = wire_round_trip(&update.request.base);
        request = (Vmms__V1__UpdateVmRequest *)sent;
        g_assert_cmpstr(request->vm, ==, "web");
        while (tc->mask[n])
                n++;
        g_assert_cmpuint(request->n_update_mask, ==, n);
        for (size_t i = 0; i < n; i++) {
                const ProtobufCFieldDescriptor *f =
                        protobuf_c_message_descriptor_get_field_by_name(sent->descriptor, tc->mask[i]);
                const char *member = (const char *)sent + f->offset;

                g_assert_cmpstr(request->update_mask[i], ==, tc->mask[i]);
                if (f->type == PROTOBUF_C_TYPE_ENUM)
                        g_assert_cmpstr(
                                protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)member)
                                        ->name,
                                ==, tc->values[i]);
                else
                        g_assert_cmpstr(*(char *const *)member, ==, tc->values[i]);
        }
}

static void test_new_vm_sends_automatic_start_action_and_engine(void)
{
        const char *plain[] = {"web", "-MemoryStartupBytes", "64MB", NULL};
        const char *full[] = {
                "web", "-MemoryStartupBytes", "64MB", "-AutomaticStartAction", "start", "-Engine", "bundled",
                NULL};
        g_autoptr(VmctlArgs) a = bind("New-VM", plain), b = bind("New-VM", full);
        VmctlCreate create;

        vmctl_create_init(&create, a);
        g_assert_cmpint(create.request.automatic_start_action, ==,
                        VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_UNSPECIFIED);
        g_assert_cmpstr(create.request.engine, ==, "");
        vmctl_create_init(&create, b);
        g_assert_cmpint(create.request.automatic_start_action, ==,
                        VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START);
        g_assert_cmpstr(create.request.engine, ==, "bundled");
}

typedef struct SizeCase {
        const char *text;
        int expect;
        uint64_t bytes;
} SizeCase;

static const SizeCase size_cases[] = {
        {"1024", 0, 1024},          {"512MB", 0, 512 * MiB},
        {"512mb", 0, 512 * MiB},    {"2GB", 0, 2 * GiB},
        {"1GiB", 0, GiB},           {"64KB", 0, 64 << 10},
        {"1TB", 0, 1ull << 40},     {"", -EINVAL, 0},
        {"MB", -EINVAL, 0},         {"-1GB", -EINVAL, 0},
        {"1.5GB", -EINVAL, 0},      {"12XB", -EINVAL, 0},
        {"2 GB", -EINVAL, 0},       {"99999999999999999999", -ERANGE, 0},
        {"20000000TB", -ERANGE, 0},
};

static void test_size_case(gconstpointer data)
{
        const SizeCase *tc = data;
        uint64_t bytes = 12345;

        g_assert_cmpint(vmctl_parse_size(tc->text, &bytes), ==, tc->expect);
        g_assert_cmpuint(bytes, ==, tc->expect == 0 ? tc->bytes : 12345);
}

static void test_sizes_print_in_the_largest_exact_unit(void)
{
        static const struct {
                uint64_t bytes;
                const char *text;
        } cases[] = {{32 * MiB, "32MB"}, {2 * GiB, "2GB"}, {1536 * MiB, "1536MB"}, {1000, "1000"}, {0, "0"}};

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *text = vmctl_format_size(cases[i].bytes);

                g_assert_cmpstr(text, ==, cases[i].text);
        }
}

static void test_default_target(void)
{
        static const struct {
                bool root;
                const char *env, *runtime_dir, *target;
        } cases[] = {
                {true, NULL, "/run/user/1000", "unix:/run/vmms/vmms.sock"},
                {false, NULL, "/run/user/1000", "unix:/run/user/1000/vmms/vmms.sock"},
                {false, "", "/run/user/1000", "unix:/run/user/1000/vmms/vmms.sock"},
                {false, "/tmp/t/vmms.sock", "/run/user/1000", "unix:/tmp/t/vmms.sock"},
                {true, "unix:/tmp/t/vmms.sock", NULL, "unix:/tmp/t/vmms.sock"},
                {false, "10.0.0.1:5050", NULL, "10.0.0.1:5050"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *target =
                        vmctl_rpc_default_target(cases[i].root, cases[i].env, cases[i].runtime_dir);

                g_assert_cmpstr(target, ==, cases[i].target);
        }
        g_assert_true(vmctl_rpc_target_is_unix("unix:/x"));
        g_assert_false(vmctl_rpc_target_is_unix("host:5050"));
}

static void test_json_names_are_lower_camel_case(void)
{
        static const char *const cases[][2] = {
                {"cpu_usage_pct", "cpuUsagePct"},
                {"id", "id"},
                {"dynamic_memory_enabled", "dynamicMemoryEnabled"},
                {"created_unix_ms", "createdUnixMs"},
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *name = vmctl_json_name(cases[i][0]);

                g_assert_cmpstr(name, ==, cases[i][1]);
        }
}

static void test_json_has_every_field_with_proto_names(void)
{
        Vmms__V1__ProcessorSettings processor = VMMS__V1__PROCESSOR_SETTINGS__INIT;
        Vmms__V1__Vm vm = VMMS__V1__VM__INIT;
        g_autoptr(GString) out = g_string_new(NULL);

        vm.id = (char *)"1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        vm.name = (char *)"we\"b\n";
        vm.state = VMMS__V1__VM_STATE__VM_STATE_RUNNING;
        processor.count = 2;
        processor.maximum = 100;
        processor.relative_weight = 100;
        vm.processor = &processor;
        vm.engine = (char *)"bundled";
        vm.automatic_start_action = VMMS__V1__AUTOMATIC_START_ACTION__AUTOMATIC_START_ACTION_START;
        vm.cpu_usage_pct = 12.5;
        vm.assigned_memory_bytes = 5ull << 30;
        vm.uptime_ms = -1;
        vmctl_json_append_message(out, &vm.base, false);
        g_assert_cmpstr(
                out->str, ==,
                "{\"id\":\"1b4e28ba-2fa1-11d2-883f-0016d3cca427\",\"name\":\"we\\\"b\\n\","
                "\"state\":\"VM_STATE_RUNNING\",\"processor\":{\"count\":2,\"reserve\":0,\"maximum\":100,"
                "\"relativeWeight\":100,\"compatibilityForMigrationEnabled\":false},\"memory\":null,"
                "\"workload\":\"\",\"bootArgs\":\"\",\"notes\":\"\","
                "\"createdUnixMs\":0,\"updatedUnixMs\":0,\"uptimeMs\":-1,\"assignedMemoryBytes\":5368709120,"
                "\"memoryDemandBytes\":0,\"memoryPressure\":0,\"cpuUsagePct\":12.5,\"workerPid\":0,"
                "\"engine\":\"bundled\",\"automaticStartAction\":\"AUTOMATIC_START_ACTION_START\","
                "\"kernelPath\":\"\","
                "\"initrdPath\":\"\",\"kernelArgs\":\"\",\"vhdPath\":\"\",\"status\":\"\","
                "\"hardDiskDrives\":[],\"networkAdapters\":[],\"host\":\"\",\"highlyAvailable\":false}\n");
}

/* json-glib's layout: two-space indent, "name" : value; values chosen to print the same at any
 * precision (the round trip of every double is test-vmctl-json's). */
static void test_json_arrays_pretty_print(void)
{
        Vmms__V1__CounterSample a = VMMS__V1__COUNTER_SAMPLE__INIT, b = VMMS__V1__COUNTER_SAMPLE__INIT;
        ProtobufCMessage *samples[] = {&a.base, &b.base};
        g_autoptr(GString) out = g_string_new(NULL), empty = g_string_new(NULL);

        a.path = (char *)"\\A(x)\\B";
        a.value = 0.25;
        a.unit = (char *)"%";
        b.path = (char *)"\\C\\D";
        b.value = -2.5;
        b.unit = (char *)"bytes";
        vmctl_json_append_array(out, samples, 2, true);
        g_assert_cmpstr(
                out->str, ==,
                "[\n  {\n    \"path\" : \"\\\\A(x)\\\\B\",\n    \"value\" : 0.25,\n    \"unit\" : \"%\"\n  "
                "},\n"
                "  {\n    \"path\" : \"\\\\C\\\\D\",\n    \"value\" : -2.5,\n    \"unit\" : \"bytes\"\n  "
                "}\n]\n");
        vmctl_json_append_array(empty, NULL, 0, true);
        g_assert_cmpstr(empty->str, ==, "[]\n");
}

static void test_get_vm_table_is_aligned_with_dashes_under_headers(void)
{
        Vmms__V1__Vm web = VMMS__V1__VM__INIT, db = VMMS__V1__VM__INIT;
        Vmms__V1__Vm *vms[] = {&web, &db};
        g_autoptr(GString) out = g_string_new(NULL);

        web.name = (char *)"web";
        web.state = VMMS__V1__VM_STATE__VM_STATE_RUNNING;
        web.cpu_usage_pct = 12.4;
        web.assigned_memory_bytes = 512 * MiB;
        web.memory_demand_bytes = 300 * MiB;
        web.memory_pressure = 58;
        web.uptime_ms = (2 * 86400 + 3 * 3600 + 4 * 60 + 5) * 1000ll;
        web.status = (char *)"Memory pressure high for 4 min";
        db.name = (char *)"database-01";
        db.state = VMMS__V1__VM_STATE__VM_STATE_OFF;
        vmctl_format_vms(out, vms, 2);
        g_assert_cmpstr(
                out->str, ==,
                "Name        State   CPUUsage(%) MemoryAssigned(M) MemoryDemand(M) Pressure Uptime     "
                "Status\n"
                "----        -----   ----------- ----------------- --------------- -------- ------     "
                "------\n"
                "web         Running          12               512             300       58 2.03:04:05 "
                "Memory pressure high for 4 min\n"
                "database-01 Off               0                 0               0        0 00:00:00   "
                "Operating normally\n");
}

/* Straight after Start-VM the guest has not reported: its demand and pressure are unknown, not 0. */
static void test_get_vm_table_says_when_the_guest_has_not_reported(void)
{
        Vmms__V1__Vm fresh = VMMS__V1__VM__INIT;
        Vmms__V1__Vm *vms[] = {&fresh};
        g_autoptr(GString) out = g_string_new(NULL);

        fresh.name = (char *)"web";
        fresh.state = VMMS__V1__VM_STATE__VM_STATE_RUNNING;
        fresh.assigned_memory_bytes = 64 * MiB;
        vmctl_format_vms(out, vms, 1);
        g_assert_cmpstr(
                out->str, ==,
                "Name State   CPUUsage(%) MemoryAssigned(M) MemoryDemand(M) Pressure Uptime   Status\n"
                "---- -----   ----------- ----------------- --------------- -------- ------   ------\n"
                "web  Running           0                64               -        - 00:00:00 "
                "Operating normally\n");
}

static void test_empty_table_prints_nothing(void)
{
        g_autoptr(GString) out = g_string_new(NULL);

        vmctl_format_vms(out, NULL, 0);
        g_assert_cmpstr(out->str, ==, "");
}

static void test_counter_rows_are_path_value_and_unit(void)
{
        Vmms__V1__CounterSample a = VMMS__V1__COUNTER_SAMPLE__INIT, b = VMMS__V1__COUNTER_SAMPLE__INIT;
        Vmms__V1__CounterSample *samples[] = {&a, &b};
        Vmms__V1__GetCountersResponse response = VMMS__V1__GET_COUNTERS_RESPONSE__INIT;
        g_autoptr(GString) out = g_string_new(NULL);

        a.path = (char *)"\\Hyper-V Hypervisor Logical Processor(0)\\% Total Run Time";
        a.value = 12.3456;
        a.unit = (char *)"%";
        b.path = (char *)"\\Dynamic Memory Balancer\\Available Memory";
        b.value = 1024;
        b.unit = (char *)"MB";
        response.samples = samples;
        response.n_samples = 2;
        vmctl_format_counters(out, &response);
        g_assert_cmpstr(out->str, ==,
                        "Path                                                      Value Unit\n"
                        "----                                                      ----- ----\n"
                        "\\Hyper-V Hypervisor Logical Processor(0)\\% Total Run Time 12.35 %\n"
                        "\\Dynamic Memory Balancer\\Available Memory                  1024 MB\n");
}

static void test_uptime_reads_like_a_timespan(void)
{
        static const struct {
                int64_t ms;
                const char *text;
        } cases[] = {{0, "00:00:00"},        {999, "00:00:00"},        {61000, "00:01:01"},
                     {86399000, "23:59:59"}, {86400000, "1.00:00:00"}, {-5, "00:00:00"}};

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *text = vmctl_format_uptime(cases[i].ms);

                g_assert_cmpstr(text, ==, cases[i].text);
        }
}

#define ADD_CASES(prefix, table, func)                                                                       \
        for (size_t i = 0; i < G_N_ELEMENTS(table); i++) {                                                   \
                g_autofree char *path = g_strdup_printf(prefix "/%s", table[i].name);                        \
                g_test_add_data_func(path, &table[i], func);                                                 \
        }

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        ADD_CASES("/vmctl/usage", usage_cases, test_usage_case);
        ADD_CASES("/vmctl/help", help_cases, test_help_case);
        ADD_CASES("/vmctl/bind", bind_cases, test_bind_case);
        ADD_CASES("/vmctl/update-mask", mask_cases, test_mask_case);
        ADD_CASES("/vmctl/update-vm", vm_update_cases, test_vm_update_case);
        for (size_t i = 0; i < G_N_ELEMENTS(size_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmctl/size/%s",
                                                        size_cases[i].text[0] ? size_cases[i].text : "empty");

                g_test_add_data_func(path, &size_cases[i], test_size_case);
        }
        g_test_add_func("/vmctl/verbs-are-case-insensitive", test_verbs_are_case_insensitive);
        g_test_add_func("/vmctl/help/every-verb-and-parameter-explains-itself",
                        test_every_verb_and_parameter_explains_itself);
        g_test_add_func("/vmctl/help/json-gives-types-ranges-and-defaults",
                        test_help_json_gives_types_ranges_and_defaults);
        g_test_add_func("/vmctl/help/json-lists-every-verb", test_help_json_lists_every_verb);
        g_test_add_func("/vmctl/bind/exact-name-beats-longer-prefix-match",
                        test_exact_name_beats_longer_prefix_match);
        g_test_add_func("/vmctl/bind/counter-paths-are-all-positional",
                        test_counter_paths_are_all_positional);
        g_test_add_func("/vmctl/new-vm/processor-settings-only-when-given",
                        test_new_vm_sends_processor_settings_only_when_given);
        g_test_add_func("/vmctl/new-vm/automatic-start-action-and-engine",
                        test_new_vm_sends_automatic_start_action_and_engine);
        g_test_add_func("/vmctl/size/prints-in-largest-exact-unit",
                        test_sizes_print_in_the_largest_exact_unit);
        g_test_add_func("/vmctl/default-target", test_default_target);
        g_test_add_func("/vmctl/json/names-are-lower-camel-case", test_json_names_are_lower_camel_case);
        g_test_add_func("/vmctl/json/every-field-with-proto-names",
                        test_json_has_every_field_with_proto_names);
        g_test_add_func("/vmctl/json/arrays-pretty-print", test_json_arrays_pretty_print);
        g_test_add_func("/vmctl/table/get-vm-aligned-with-dashes",
                        test_get_vm_table_is_aligned_with_dashes_under_headers);
        g_test_add_func("/vmctl/table/empty-prints-nothing", test_empty_table_prints_nothing);
        g_test_add_func("/vmctl/table/get-vm-says-when-the-guest-has-not-reported",
                        test_get_vm_table_says_when_the_guest_has_not_reported);
        g_test_add_func("/vmctl/table/counter-rows", test_counter_rows_are_path_value_and_unit);
        g_test_add_func("/vmctl/uptime-reads-like-a-timespan", test_uptime_reads_like_a_timespan);
        return g_test_run();
}
