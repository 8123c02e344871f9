/* The normalized processor (hv-cpuid.c): what each leaf answers, that every host and
 * model gives the same normalized vector, and that a model lacking the baseline is
 * refused by name. */
#include <errno.h>
#include <glib.h>
#include <string.h>

#include "hv.h"

typedef struct LeafCase {
        const char *name;
        uint32_t leaf, subleaf;
        bool listed;
        uint32_t eax, ebx, ecx, edx;
} LeafCase;

/* Registers written out by hand from the baseline's definition (hv-cpuid.c), not read
 * back from the table. */
static const LeafCase leaf_cases[] = {
        {"vendor_is_VmmsBaseline_and_max_basic_leaf_1", 0x0, 0, true, 0x1, 0x736d6d56 /* Vmms */,
         0x656e696c /* line */, 0x65736142 /* Base */},
        {"leaf_1_is_x86_64_v1_with_the_hypervisor_bit", 0x1, 0, true, 0x00000663, 0x00000800, 0x80000000,
         0x0789a179},
        {"leaf_1_ignores_the_subleaf", 0x1, 7, true, 0x00000663, 0x00000800, 0x80000000, 0x0789a179},
        {"structured_extended_features_are_none", 0x7, 0, false, 0, 0, 0, 0},
        {"xsave_leaf_is_zeros", 0xd, 1, false, 0, 0, 0, 0},
        {"hypervisor_leaf_says_VmmsVmmsVmms", 0x40000000, 0, true, 0x40000000, 0x736d6d56, 0x736d6d56,
         0x736d6d56},
        {"hypervisor_leaves_beyond_are_zeros", 0x40000001, 0, false, 0, 0, 0, 0},
        {"max_extended_leaf_is_0x80000008", 0x80000000, 0, true, 0x80000008, 0, 0, 0},
        {"extended_features_are_syscall_nx_lm", 0x80000001, 0, true, 0, 0, 0, 0x20100800},
        {"brand_string_first_part", 0x80000002, 0, true, 0x736d6d76, 0x73616220, 0x6e696c65, 0x38782065},
        {"brand_string_second_part", 0x80000003, 0, true, 0x34362d36, 0x6f727020, 0x73736563, 0x0000726f},
        {"brand_string_third_part_is_padding", 0x80000004, 0, true, 0, 0, 0, 0},
        {"address_sizes_40_physical_48_linear", 0x80000008, 0, true, 0x3028, 0, 0, 0},
        {"extended_leaves_beyond_the_max_are_zeros", 0x80000009, 0, false, 0, 0, 0, 0},
        {"unknown_leaf_is_zeros", 0xffffffff, 3, false, 0, 0, 0, 0},
};

static void test_leaf(gconstpointer data)
{
        const LeafCase *c = data;
        HvCpuidLeaf r;

        g_assert_cmpint(hv_cpuid_normalized(c->leaf, c->subleaf, &r), ==, c->listed);
        g_assert_cmphex(r.leaf, ==, c->leaf);
        g_assert_cmphex(r.subleaf, ==, c->subleaf);
        g_assert_cmphex(r.eax, ==, c->eax);
        g_assert_cmphex(r.ebx, ==, c->ebx);
        g_assert_cmphex(r.ecx, ==, c->ecx);
        g_assert_cmphex(r.edx, ==, c->edx);
}

static int model(const char *name)
{
        const char *canonical;
        int m;

        g_assert_cmpint(hv_engine_unicorn_ops.cpu_model_lookup(name, &m, &canonical), ==, 0);
        return m;
}

static void test_normalized_vector_is_the_same_on_every_model(void)
{
        static const char *const models[] = {"qemu64", "haswell", "epyc-rome", "core2duo"};
        HvCompatVector first, v;

        for (size_t i = 0; i < G_N_ELEMENTS(models); i++) {
                g_autofree char *why = NULL;

                g_assert_cmpint(
                        hv_compat_vector_build(&hv_engine_unicorn_ops, model(models[i]), true, &v, &why), ==,
                        0);
                g_assert_true(v.normalized);
                g_assert_cmpstr(v.cpu_model, ==, HV_CPUID_BASELINE_NAME);
                g_assert_cmpstr(v.engine_version, ==, HV_CPUID_BASELINE_ENGINE_VERSION);
                if (i == 0)
                        first = v;
                else {
                        g_assert_cmpstr(v.engine, ==, first.engine);
                        g_assert_cmpstr(v.cpuid_hash, ==, first.cpuid_hash);
                        g_assert_cmpmem(v.cpuid, v.n_cpuid * sizeof(HvCpuidLeaf), first.cpuid,
                                        first.n_cpuid * sizeof(HvCpuidLeaf));
                }
        }
}

static void test_host_vectors_differ_by_model_and_name_it(void)
{
        g_autofree char *why = NULL;
        HvCompatVector a, b;

        g_assert_cmpint(hv_compat_vector_build(&hv_engine_unicorn_ops, model("qemu64"), false, &a, &why), ==,
                        0);
        g_assert_cmpint(hv_compat_vector_build(&hv_engine_unicorn_ops, model("haswell"), false, &b, &why), ==,
                        0);
        g_assert_cmpstr(a.cpu_model, ==, "qemu64");
        g_assert_cmpstr(b.cpu_model, ==, "haswell");
        g_assert_cmpstr(a.engine_version, ==, b.engine_version);
        g_assert_cmpstr(a.cpuid_hash, !=, b.cpuid_hash);
        g_assert_cmpuint(strlen(a.cpuid_hash), ==, HV_CPUID_HASH_LEN);
        g_assert_cmpuint(a.n_cpuid, ==, hv_cpuid_vector_leaves_count);
}

typedef struct ModelCase {
        const char *model;
        const char *missing; /* NULL: accepted */
} ModelCase;

static const ModelCase model_cases[] = {
        {"qemu64", NULL},
        {"epyc", NULL},
        {"coreduo", "SYSCALL"}, /* a 32-bit model Unicorn still runs in 64-bit mode */
        {"486", "LM"},
};

static void test_model_lacking_the_baseline_is_refused_by_name(gconstpointer data)
{
        const ModelCase *c = data;
        g_autofree char *why = NULL;
        HvCompatVector v;
        int r = hv_compat_vector_build(&hv_engine_unicorn_ops, model(c->model), false, &v, &why);

        if (!c->missing) {
                g_assert_cmpint(r, ==, 0);
                return;
        }
        g_assert_cmpint(r, ==, -EINVAL);
        g_assert_nonnull(strstr(why, c->model));
        g_assert_nonnull(strstr(why, c->missing));
}

static void test_hash_follows_every_bit_of_the_table(void)
{
        HvCpuidLeaf table[2];
        char a[HV_CPUID_HASH_LEN + 1], b[HV_CPUID_HASH_LEN + 1];

        hv_cpuid_normalized(0x1, 0, &table[0]);
        hv_cpuid_normalized(0x80000001, 0, &table[1]);
        hv_cpuid_hash(table, 2, a);
        hv_cpuid_hash(table, 2, b);
        g_assert_cmpstr(a, ==, b);
        table[1].edx ^= 1u << 20; /* NX */
        hv_cpuid_hash(table, 2, b);
        g_assert_cmpstr(a, !=, b);
}

static void test_unknown_model_name_is_not_found(void)
{
        const char *canonical;
        int m;

        g_assert_cmpint(hv_engine_unicorn_ops.cpu_model_lookup("pentium9", &m, &canonical), ==, -ENOENT);
        g_assert_cmpint(hv_engine_unicorn_ops.cpu_model_lookup("HasWell", &m, &canonical), ==, 0);
        g_assert_cmpstr(canonical, ==, "haswell");
        g_assert_cmpint(hv_engine_unicorn_ops.cpu_model_lookup(NULL, &m, &canonical), ==, 0);
        g_assert_cmpstr(canonical, ==, "qemu64");
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(leaf_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-cpuid/normalized/%s", leaf_cases[i].name);

                g_test_add_data_func(path, &leaf_cases[i], test_leaf);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(model_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-cpuid/model/%s", model_cases[i].model);

                g_test_add_data_func(path, &model_cases[i],
                                     test_model_lacking_the_baseline_is_refused_by_name);
        }
        g_test_add_func("/hv-cpuid/normalized_vector_is_the_same_on_every_model",
                        test_normalized_vector_is_the_same_on_every_model);
        g_test_add_func("/hv-cpuid/host_vectors_differ_by_model_and_name_it",
                        test_host_vectors_differ_by_model_and_name_it);
        g_test_add_func("/hv-cpuid/hash_follows_every_bit_of_the_table",
                        test_hash_follows_every_bit_of_the_table);
        g_test_add_func("/hv-cpuid/unknown_model_name_is_not_found", test_unknown_model_name_is_not_found);
        return g_test_run();
}
