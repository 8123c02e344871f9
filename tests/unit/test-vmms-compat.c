/* Comparing processor compatibility vectors (vmms-compat.c): each change to a field is
 * listed with both values, nothing is listed for equal vectors, and the wire form
 * survives a round trip while a peer's malformed vector is refused by name; the store
 * keeps CompatibilityForMigrationEnabled, and rows from before it read false. */
#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>
#include <string.h>

#include "vmms-compat.h"
#include "vmms-store.h"

static const VmmsCompatLeaf base_leaves[] = {
        {0x0, 0, {0xd, 0x68747541, 0x444d4163, 0x69746e65}},
        {0x1, 0, {0x663, 0x800, 0x80002001, 0x078bfbfd}},
        {0x80000001, 0, {0x663, 0, 5, 0x2193fbfd}},
};

static void base_vector(VmmsCompatVector *v)
{
        *v = (VmmsCompatVector){
                .engine = g_strdup("unicorn"),
                .engine_version = g_strdup("2.1.1"),
                .cpu_model = g_strdup("qemu64"),
                .cpuid_hash = g_strdup("aa"),
                .cpuid = g_memdup2(base_leaves, sizeof(base_leaves)),
                .n_cpuid = G_N_ELEMENTS(base_leaves),
                .guest_abi_version = 1,
                .protocol_version = 1,
        };
}

static void set_string(char **field, const char *value)
{
        g_free(*field);
        *field = g_strdup(value);
}

/* Each case changes the destination's copy of the base vector and names what must be
 * listed, in order: field, source value, destination value. */
typedef struct CompareCase {
        const char *name;
        void (*change)(VmmsCompatVector *v);
        const char *expect[4][3];
        size_t n_expect;
} CompareCase;

static void change_nothing(VmmsCompatVector *v)
{
        (void)v;
}

static void change_model(VmmsCompatVector *v)
{
        set_string(&v->cpu_model, "haswell");
        set_string(&v->cpuid_hash, "bb");
        v->cpuid[1].regs[2] = 0xc6d82203;
}

static void change_engine_version(VmmsCompatVector *v)
{
        set_string(&v->engine_version, "2.0.1");
}

static void change_abi_and_protocol(VmmsCompatVector *v)
{
        v->guest_abi_version = 2;
        v->protocol_version = 3;
}

static void change_normalized(VmmsCompatVector *v)
{
        v->normalized = true;
}

static void drop_last_leaf(VmmsCompatVector *v)
{
        v->n_cpuid--;
}

static void add_leaf(VmmsCompatVector *v)
{
        v->cpuid = g_renew(VmmsCompatLeaf, v->cpuid, v->n_cpuid + 1);
        v->cpuid[v->n_cpuid++] = (VmmsCompatLeaf){0xd, 1, {1, 0, 0, 0}};
}

static void change_two_registers(VmmsCompatVector *v)
{
        v->cpuid[0].regs[0] = 0x1;
        v->cpuid[0].regs[3] = 0x49656e69;
}

static const CompareCase compare_cases[] = {
        {"equal_vectors_have_no_differences", change_nothing, {{0}}, 0},
        {"another_model_lists_model_hash_and_the_register",
         change_model,
         {{"cpu_model", "qemu64", "haswell"},
          {"cpuid_hash", "aa", "bb"},
          {"cpuid 0x00000001.0 ecx", "0x80002001", "0xc6d82203"}},
         3},
        {"another_engine_build_is_a_difference",
         change_engine_version,
         {{"engine_version", "2.1.1", "2.0.1"}},
         1},
        {"guest_abi_and_protocol_are_compared_as_numbers",
         change_abi_and_protocol,
         {{"guest_abi_version", "1", "2"}, {"protocol_version", "1", "3"}},
         2},
        {"normalized_on_one_side_only", change_normalized, {{"normalized", "false", "true"}}, 1},
        {"leaf_missing_on_the_destination", drop_last_leaf, {{"cpuid 0x80000001.0", "listed", "absent"}}, 1},
        {"leaf_only_on_the_destination", add_leaf, {{"cpuid 0x0000000d.1", "absent", "listed"}}, 1},
        {"each_differing_register_of_a_leaf_is_listed",
         change_two_registers,
         {{"cpuid 0x00000000.0 eax", "0x0000000d", "0x00000001"},
          {"cpuid 0x00000000.0 edx", "0x69746e65", "0x49656e69"}},
         2},
};

static void test_compare(gconstpointer data)
{
        const CompareCase *c = data;
        g_auto(VmmsCompatVector) source = {0}, destination = {0};
        g_autoptr(GPtrArray) differences = NULL;

        base_vector(&source);
        base_vector(&destination);
        c->change(&destination);
        differences = vmms_compat_compare(&source, &destination);
        g_assert_cmpuint(differences->len, ==, c->n_expect);
        for (size_t i = 0; i < c->n_expect; i++) {
                const VmmsCompatDifference *d = differences->pdata[i];

                g_assert_cmpstr(d->field, ==, c->expect[i][0]);
                g_assert_cmpstr(d->source, ==, c->expect[i][1]);
                g_assert_cmpstr(d->destination, ==, c->expect[i][2]);
        }
}

static void test_format_names_both_hosts_and_bounds_the_list(void)
{
        g_auto(VmmsCompatVector) source = {0}, destination = {0};
        g_autoptr(GPtrArray) differences = NULL;
        g_autofree char *all = NULL, *cut = NULL;

        base_vector(&source);
        base_vector(&destination);
        change_model(&destination);
        differences = vmms_compat_compare(&source, &destination);
        all = vmms_compat_differences_format(differences, 8);
        g_assert_nonnull(strstr(all, "cpu_model: qemu64 on the source, haswell on the destination"));
        cut = vmms_compat_differences_format(differences, 1);
        g_assert_nonnull(strstr(cut, "and 2 more"));
        g_assert_null(strstr(cut, "cpuid_hash"));
}

static void test_vector_round_trips_through_the_wire(void)
{
        g_auto(VmmsCompatVector) v = {0}, back = {0};
        g_autoptr(GVariant) wire = NULL;
        g_autoptr(GPtrArray) differences = NULL;
        g_autofree char *why = NULL;

        base_vector(&v);
        v.normalized = true;
        wire = g_variant_ref_sink(vmms_compat_vector_to_variant(&v));
        g_assert_true(vmms_compat_vector_from_variant(wire, &back, &why));
        differences = vmms_compat_compare(&v, &back);
        g_assert_cmpuint(differences->len, ==, 0);
        g_assert_true(back.normalized);
}

static void test_differences_round_trip_through_the_wire(void)
{
        g_auto(VmmsCompatVector) source = {0}, destination = {0};
        g_autoptr(GPtrArray) differences = NULL, back = NULL;
        g_autoptr(GVariant) wire = NULL;
        g_autofree char *why = NULL;

        base_vector(&source);
        base_vector(&destination);
        change_model(&destination);
        differences = vmms_compat_compare(&source, &destination);
        wire = g_variant_ref_sink(vmms_compat_differences_to_variant(differences));
        g_assert_true(vmms_compat_differences_from_variant(wire, &back, &why));
        g_assert_cmpuint(back->len, ==, differences->len);
        g_assert_cmpstr(((VmmsCompatDifference *)back->pdata[2])->field, ==, "cpuid 0x00000001.0 ecx");
}

/* A peer's vector, built by hand; each case breaks one thing. */
typedef struct PeerCase {
        const char *name;
        const char *text; /* GVariant text of the a{sv} */
        const char *expect_in_error;
} PeerCase;

#define GOOD_KEYS                                                                                            \
        "'engine': <'unicorn'>, 'engine-version': <'2.1.1'>, 'cpu-model': <'qemu64'>, 'cpuid-hash': "        \
        "<'aa'>, "                                                                                           \
        "'guest-abi': <uint32 1>, 'hv-protocol': <uint32 1>, 'normalized': <false>"

static const PeerCase peer_cases[] = {
        {"no_cpuid_table", "{" GOOD_KEYS "}", "cpuid"},
        {"a_leaf_twice",
         "{" GOOD_KEYS ", 'cpuid': <[(uint32 1, uint32 0, uint32 0, uint32 0, uint32 0, uint32 0), "
         "(uint32 1, uint32 0, uint32 0, uint32 0, uint32 0, uint32 0)]>}",
         "twice"},
        {"mistyped_number",
         "{'engine': <'unicorn'>, 'engine-version': <'2.1.1'>, 'cpu-model': <'qemu64'>, 'cpuid-hash': "
         "<'aa'>, "
         "'guest-abi': <'1'>, 'hv-protocol': <uint32 1>, 'normalized': <false>, 'cpuid': <@a(uuuuuu) []>}",
         "guest-abi"},
        {"unprintable_model",
         "{'engine': <'unicorn'>, 'engine-version': <'2.1.1'>, 'cpu-model': <'qemu\\u000164'>, "
         "'cpuid-hash': <'aa'>, 'guest-abi': <uint32 1>, 'hv-protocol': <uint32 1>, 'normalized': <false>, "
         "'cpuid': <@a(uuuuuu) []>}",
         "cpu-model"},
        {"missing_engine",
         "{'engine-version': <'2.1.1'>, 'cpu-model': <'qemu64'>, 'cpuid-hash': <'aa'>, 'guest-abi': <uint32 "
         "1>, "
         "'hv-protocol': <uint32 1>, 'normalized': <false>, 'cpuid': <@a(uuuuuu) []>}",
         "engine"},
};

static void test_peer_vector_refused(gconstpointer data)
{
        const PeerCase *c = data;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) v = g_variant_parse(G_VARIANT_TYPE_VARDICT, c->text, NULL, NULL, &error);
        g_auto(VmmsCompatVector) out = {0};
        g_autofree char *why = NULL;

        g_assert_no_error(error);
        g_assert_false(vmms_compat_vector_from_variant(v, &out, &why));
        g_assert_nonnull(why);
        g_assert_nonnull(strstr(why, c->expect_in_error));
}

static void test_peer_vector_with_too_many_leaves_is_refused(void)
{
        g_auto(VmmsCompatVector) v = {0}, out = {0};
        g_autoptr(GVariant) wire = NULL;
        g_autofree char *why = NULL;

        base_vector(&v);
        v.cpuid = g_renew(VmmsCompatLeaf, v.cpuid, VMMS_COMPAT_CPUID_MAX + 1);
        for (size_t i = 0; i <= VMMS_COMPAT_CPUID_MAX; i++)
                v.cpuid[i] = (VmmsCompatLeaf){.leaf = (uint32_t)i};
        v.n_cpuid = VMMS_COMPAT_CPUID_MAX + 1;
        wire = g_variant_ref_sink(vmms_compat_vector_to_variant(&v));
        g_assert_false(vmms_compat_vector_from_variant(wire, &out, &why));
        g_assert_nonnull(strstr(why, "at most"));
}

static void remove_store(const char *dir, const char *db)
{
        static const char *const suffixes[] = {"", ".id", "-wal", "-shm"};

        for (size_t i = 0; i < G_N_ELEMENTS(suffixes); i++) {
                g_autofree char *path = g_strconcat(db, suffixes[i], NULL);

                g_unlink(path);
        }
        g_rmdir(dir);
}

static void insert_vm(VmmsStore *store, const char *id, const char *name, bool compatibility)
{
        g_auto(VmmsVmDefinition) def = {0};
        VmmsEventRecord event = {.kind = (char *)"created", .message = (char *)"created"};

        vmms_vm_definition_init_defaults(&def);
        g_strlcpy(def.id, id, sizeof(def.id));
        def.name = g_strdup(name);
        def.processor.relative_weight = 321;
        def.processor.compatibility_for_migration = compatibility;
        event.vm_id = def.id;
        event.vm_name = def.name;
        g_assert_cmpint(vmms_store_vm_insert(store, &def, &event), ==, 0);
}

static const VmmsVmDefinition *find(GPtrArray *defs, const char *name)
{
        for (guint i = 0; i < defs->len; i++)
                if (g_strcmp0(((VmmsVmDefinition *)defs->pdata[i])->name, name) == 0)
                        return defs->pdata[i];
        g_assert_not_reached();
}

static void test_store_keeps_the_setting_and_old_rows_read_false(void)
{
        g_autofree char *dir = g_dir_make_tmp("vmms-compat-XXXXXX", NULL);
        g_autofree char *db = g_build_filename(dir, "vmms.db", NULL);
        g_autofree char *why = NULL;
        g_autoptr(GPtrArray) defs = NULL;
        VmmsStore *store = NULL;
        sqlite3 *raw;

        g_assert_cmpint(vmms_store_open(db, true, &store, &why), ==, 0);
        insert_vm(store, "6f1c3a52-0000-4000-8000-000000000009", "old", true);
        vmms_store_free(store);

        /* The file as a vmmsd before migration 9 left it: no column, a row that was set. */
        g_assert_cmpint(sqlite3_open(db, &raw), ==, SQLITE_OK);
        g_assert_cmpint(sqlite3_exec(raw,
                                     "ALTER TABLE vms DROP COLUMN cpu_compatibility;"
                                     "ALTER TABLE checkpoints DROP COLUMN cpu_compatibility;"
                                     "ALTER TABLE vms DROP COLUMN highly_available;"
                                     "ALTER TABLE checkpoints DROP COLUMN highly_available;"
                                     "ALTER TABLE vms DROP COLUMN goal_seeking;"
                                     "ALTER TABLE checkpoints DROP COLUMN goal_seeking;"
                                     "PRAGMA user_version = 8;",
                                     NULL, NULL, NULL),
                        ==, SQLITE_OK);
        sqlite3_close(raw);

        g_assert_cmpint(vmms_store_open(db, false, &store, &why), ==, 0);
        insert_vm(store, "6f1c3a52-0000-4000-8000-00000000000a", "new", true);
        g_assert_cmpint(vmms_store_vm_list(store, &defs), ==, 0);
        g_assert_cmpuint(defs->len, ==, 2);
        g_assert_false(find(defs, "old")->processor.compatibility_for_migration);
        g_assert_cmpuint(find(defs, "old")->processor.relative_weight, ==, 321);
        g_assert_true(find(defs, "new")->processor.compatibility_for_migration);
        g_assert_cmpuint(find(defs, "new")->processor.relative_weight, ==, 321);
        vmms_store_free(store);
        remove_store(dir, db);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(compare_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmms-compat/compare/%s", compare_cases[i].name);

                g_test_add_data_func(path, &compare_cases[i], test_compare);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(peer_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmms-compat/peer-refused/%s", peer_cases[i].name);

                g_test_add_data_func(path, &peer_cases[i], test_peer_vector_refused);
        }
        g_test_add_func("/vmms-compat/format_names_both_hosts_and_bounds_the_list",
                        test_format_names_both_hosts_and_bounds_the_list);
        g_test_add_func("/vmms-compat/vector_round_trips_through_the_wire",
                        test_vector_round_trips_through_the_wire);
        g_test_add_func("/vmms-compat/differences_round_trip_through_the_wire",
                        test_differences_round_trip_through_the_wire);
        g_test_add_func("/vmms-compat/peer_vector_with_too_many_leaves_is_refused",
                        test_peer_vector_with_too_many_leaves_is_refused);
        g_test_add_func("/vmms-compat/store_keeps_the_setting_and_old_rows_read_false",
                        test_store_keeps_the_setting_and_old_rows_read_false);
        return g_test_run();
}
