/* The metrics exporter's exposition text: every counter of the core's walk has a metric
 * with HELP and TYPE lines and a name Prometheus accepts, counters end in _total, label
 * values are escaped, and aggregates are left to PromQL. */
#include <glib.h>
#include <string.h>

#include "api-metrics.h"

#define ODD_VM "we\"b\\x"
#define ODD_VM_ESCAPED "we\\\"b\\\\x"

static char *render_every_counter(const char *vm)
{
        ApiMetricsScrape *scrape = api_metrics_scrape_new();

        for (int id = 0; id < VMMS_COUNTER_COUNT; id++) {
                VmmsCounterSample sample = {.id = id,
                                            .instance = "x",
                                            .vm = vm,
                                            .lp = -1,
                                            .vp = 0,
                                            .value = 1,
                                            .base_value = id + 0.5};

                api_metrics_scrape_add_counter(scrape, &sample);
                sample.aggregate = true; /* a _Total instance: not served */
                sample.vp = 7;
                api_metrics_scrape_add_counter(scrape, &sample);
                sample.aggregate = false; /* the same series again: written once */
                sample.vp = 0;
                api_metrics_scrape_add_counter(scrape, &sample);
        }
        api_metrics_scrape_add_vm(scrape, vm, VMMS_VM_RUNNING);
        return api_metrics_scrape_finish(scrape);
}

static void test_every_counter_has_a_valid_name_help_and_type(void)
{
        g_autofree char *text = render_every_counter("web");
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        g_autoptr(GRegex) name_re = g_regex_new("^[a-zA-Z_:][a-zA-Z0-9_:]*$", 0, 0, NULL);
        g_autoptr(GHashTable) types = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GHashTable) helps = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        guint series = 0;

        for (char **l = lines; *l && **l; l++) {
                g_auto(GStrv) parts = g_strsplit(*l, " ", 4);

                if (g_str_has_prefix(*l, "# HELP ")) {
                        g_assert_true(g_regex_match(name_re, parts[2], 0, NULL));
                        g_assert_false(g_hash_table_contains(helps, parts[2]));
                        g_assert_nonnull(parts[3]);
                        g_hash_table_add(helps, g_strdup(parts[2]));
                } else if (g_str_has_prefix(*l, "# TYPE ")) {
                        g_assert_true(g_strcmp0(parts[3], "counter") == 0 ||
                                      g_strcmp0(parts[3], "gauge") == 0);
                        g_assert_true(g_str_has_suffix(parts[2], "_total") ==
                                      (g_strcmp0(parts[3], "counter") == 0));
                        g_hash_table_insert(types, g_strdup(parts[2]), g_strdup(parts[3]));
                } else {
                        g_autofree char *name = g_strndup(*l, strcspn(*l, "{ "));

                        g_assert_true(g_regex_match(name_re, name, 0, NULL));
                        g_assert_true(g_hash_table_contains(types, name)); /* TYPE comes first */
                        g_assert_true(g_hash_table_contains(helps, name));
                        g_assert_null(strstr(*l, "vp=\"7\""));
                        series++;
                }
        }
        /* One series per counter, and a state set of every state for the one VM. */
        g_assert_cmpuint(series, ==, VMMS_COUNTER_COUNT + VMMS_VM_STATE_COUNT);
        g_assert_cmpuint(g_hash_table_size(types), ==, VMMS_COUNTER_COUNT + 1);
        g_assert_nonnull(strstr(text, "\nvmms_vm_memory_assigned_bytes{vm=\"web\",vp=\"0\"} 12.5\n"));
        g_assert_nonnull(strstr(text, "\nvmms_vm_state{vm=\"web\",state=\"Running\"} 1\n"));
        g_assert_nonnull(strstr(text, "\nvmms_vm_state{vm=\"web\",state=\"Off\"} 0\n"));
        g_assert_nonnull(strstr(text, "# TYPE vmms_vp_run_time_seconds_total counter\n"));
        g_assert_nonnull(strstr(text, "# TYPE vmms_vm_memory_pressure_ratio gauge\n"));
}

static void test_label_values_are_escaped(void)
{
        g_autofree char *text = render_every_counter(ODD_VM);

        g_assert_nonnull(strstr(text, "vmms_vm_memory_assigned_bytes{vm=\"" ODD_VM_ESCAPED "\",vp=\"0\"}"));
        g_assert_nonnull(strstr(text, "vmms_vm_state{vm=\"" ODD_VM_ESCAPED "\",state=\"Running\"} 1\n"));
        g_assert_null(strstr(text, "\"" ODD_VM "\""));
}

static void test_a_newline_in_a_label_is_escaped(void)
{
        ApiMetricsScrape *scrape = api_metrics_scrape_new();
        g_autofree char *text = NULL;

        api_metrics_scrape_add_vm(scrape, "two\nlines", VMMS_VM_OFF);
        text = api_metrics_scrape_finish(scrape);
        g_assert_nonnull(strstr(text, "vmms_vm_state{vm=\"two\\nlines\",state=\"Off\"} 1\n"));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/api-metrics/every-counter-has-a-valid-name-help-and-type",
                        test_every_counter_has_a_valid_name_help_and_type);
        g_test_add_func("/api-metrics/label-values-are-escaped", test_label_values_are_escaped);
        g_test_add_func("/api-metrics/a-newline-in-a-label-is-escaped", test_a_newline_in_a_label_is_escaped);
        return g_test_run();
}
