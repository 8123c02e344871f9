/* vmctl -Json's round trip: what vmctl writes, a JSON parser reads back as the same text and numbers —
 * quotes, backslashes, control characters, non-ASCII, text that is not UTF-8, doubles at the edges of
 * their range, NaN and the infinities, 64-bit integers. Compact and pretty alike. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "vmctl-format.h"

/* vm written by vmctl, then parsed back: its JSON object (pretty or one line). */
static JsonNode *round_trip(const Vmms__V1__Vm *vm, bool pretty)
{
        g_autoptr(GString) out = g_string_new(NULL);
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) error = NULL;

        vmctl_json_append_message(out, &vm->base, pretty);
        g_assert_true(g_str_has_suffix(out->str, "\n"));
        if (!pretty)
                g_assert_true(strchr(out->str, '\n') == out->str + out->len - 1); /* one line */
        if (!json_parser_load_from_data(parser, out->str, -1, &error))
                g_error("vmctl wrote JSON its parser refuses (%s):\n%s", error->message, out->str);
        return json_node_copy(json_parser_get_root(parser));
}

typedef struct TextCase {
        const char *name;
        const char *text;
        const char *reads; /* what a parser reads back; NULL means text itself */
} TextCase;

static const TextCase text_cases[] = {
        {"empty", "", NULL},
        {"double-quotes", "say \"hi\" and \"\"", NULL},
        {"backslashes", "C:\\vms\\web\\ \\\\ \\u0041 \\n", NULL},
        {"newline-tab-return", "one\ntwo\tthree\r\n", NULL},
        {"control-characters", "\x01\x02\x07\x08\x0b\x0c\x1b\x1f", NULL},
        {"delete",
         "a\x7f"
         "b",
         NULL},
        {"latin", "caf\xc3\xa9 na\xc3\xafve", NULL},
        {"cjk", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", NULL},
        {"emoji-outside-the-bmp", "\xf0\x9f\x98\x80 \xf0\x9d\x84\x9e", NULL},
        {"line-and-paragraph-separators",
         "a\xe2\x80\xa8"
         "b\xe2\x80\xa9"
         "c",
         NULL},
        {"looks-like-json", "{\"name\": [1, 2], \"x\": null}", NULL},
        {"markup", "</script><!-- & -->", NULL},
        {"invalid-utf8-byte",
         "a\xff"
         "b",
         "a\xef\xbf\xbd"
         "b"},
        {"truncated-utf8", "caf\xc3", "caf\xef\xbf\xbd"},
};

static void test_text_round_trips(gconstpointer data)
{
        const TextCase *tc = data;
        const char *expected = tc->reads ? tc->reads : tc->text;

        for (int pretty = 0; pretty <= 1; pretty++) {
                Vmms__V1__Vm vm = VMMS__V1__VM__INIT;
                g_autoptr(JsonNode) root = NULL;
                JsonObject *object;

                vm.name = (char *)tc->text;
                vm.notes = (char *)tc->text;
                root = round_trip(&vm, pretty);
                object = json_node_get_object(root);
                g_assert_cmpstr(json_object_get_string_member(object, "name"), ==, expected);
                g_assert_cmpstr(json_object_get_string_member(object, "notes"), ==, expected);
        }
}

typedef struct DoubleCase {
        const char *name;
        double value;
        const char *reads; /* proto3's word for a value JSON has no number for, else NULL */
} DoubleCase;

static const DoubleCase double_cases[] = {
        {"zero", 0.0, NULL},
        {"one-tenth", 0.1, NULL},
        {"one-third", 1.0 / 3.0, NULL},
        {"whole", 100.0, NULL},
        {"negative", -12.5, NULL},
        {"huge", 1e300, NULL},
        {"largest", 1.7976931348623157e308, NULL},
        {"smallest-subnormal", 4.9406564584124654e-324, NULL},
        {"two-to-the-53-plus-one-rounded", 9007199254740993.0, NULL},
        {"nan", NAN, "NaN"},
        {"infinity", INFINITY, "Infinity"},
        {"minus-infinity", -INFINITY, "-Infinity"},
};

static void test_double_round_trips(gconstpointer data)
{
        const DoubleCase *tc = data;

        for (int pretty = 0; pretty <= 1; pretty++) {
                Vmms__V1__Vm vm = VMMS__V1__VM__INIT;
                g_autoptr(JsonNode) root = NULL;
                JsonNode *member;

                vm.cpu_usage_pct = tc->value;
                root = round_trip(&vm, pretty);
                member = json_object_get_member(json_node_get_object(root), "cpuUsagePct");
                if (tc->reads) {
                        g_assert_cmpstr(json_node_get_string(member), ==, tc->reads);
                        continue;
                }
                /* Bit for bit: the number read back is the double that was written. */
                g_assert_true(json_node_get_value_type(member) == G_TYPE_DOUBLE);
                g_assert_true(json_node_get_double(member) == tc->value);
        }
}

typedef struct IntegerCase {
        const char *name;
        int64_t uptime_ms;          /* int64 */
        uint64_t assigned;          /* uint64 */
        double assigned_reads_near; /* 0: read back exactly as an integer */
} IntegerCase;

static const IntegerCase integer_cases[] = {
        {"zero", 0, 0, 0},
        {"minus-one", -1, 1, 0},
        {"past-double-precision", 9007199254740993, 9007199254740993ull, 0},
        {"int64-extremes", INT64_MIN, INT64_MAX, 0},
        {"uint64-max-as-a-double", INT64_MAX, UINT64_MAX, 18446744073709551615.0},
};

static void test_integer_round_trips(gconstpointer data)
{
        const IntegerCase *tc = data;
        Vmms__V1__Vm vm = VMMS__V1__VM__INIT;
        g_autoptr(JsonNode) root = NULL;
        JsonObject *object;

        vm.uptime_ms = tc->uptime_ms;
        vm.assigned_memory_bytes = tc->assigned;
        root = round_trip(&vm, false);
        object = json_node_get_object(root);
        g_assert_cmpint(json_object_get_int_member(object, "uptimeMs"), ==, tc->uptime_ms);
        if (tc->assigned_reads_near == 0) {
                g_assert_cmpint((uint64_t)json_object_get_int_member(object, "assignedMemoryBytes"), ==,
                                tc->assigned);
                return;
        }
        g_assert_cmpfloat(json_object_get_double_member(object, "assignedMemoryBytes"), ==,
                          tc->assigned_reads_near);
}

/* An enum value vmctl does not know (a newer vmmsd) is written as its number, not dropped. */
static void test_unknown_enum_value_is_its_number(void)
{
        Vmms__V1__Vm vm = VMMS__V1__VM__INIT;
        g_autoptr(JsonNode) root = NULL;
        JsonObject *object;

        vm.state = (Vmms__V1__VmState)77;
        root = round_trip(&vm, true);
        object = json_node_get_object(root);
        g_assert_cmpint(json_object_get_int_member(object, "state"), ==, 77);
        g_assert_true(json_object_get_null_member(object, "memory"));
}

#define ADD_CASES(prefix, table, func)                                                                       \
        for (size_t i = 0; i < G_N_ELEMENTS(table); i++) {                                                   \
                g_autofree char *path = g_strdup_printf(prefix "/%s", table[i].name);                        \
                g_test_add_data_func(path, &table[i], func);                                                 \
        }

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        ADD_CASES("/vmctl-json/text-round-trips", text_cases, test_text_round_trips);
        ADD_CASES("/vmctl-json/double-round-trips", double_cases, test_double_round_trips);
        ADD_CASES("/vmctl-json/integer-round-trips", integer_cases, test_integer_round_trips);
        g_test_add_func("/vmctl-json/unknown-enum-value-is-its-number",
                        test_unknown_enum_value_is_its_number);
        return g_test_run();
}
