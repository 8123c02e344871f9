/* The machine memory pool never over-commits and refuses bad charges and credits. */
#include <errno.h>
#include <glib.h>

#include "hv-pool.h"

#define MiB (1ull << 20)

typedef struct PoolStep {
        char op; /* 'c' charge, 'r' credit */
        uint64_t bytes;
        int expect;
        uint64_t expect_used;
} PoolStep;

typedef struct PoolCase {
        const char *name;
        uint64_t total;
        PoolStep steps[6];
} PoolCase;

static const PoolCase pool_cases[] = {
        {"charges_up_to_the_total",
         64 * MiB,
         {{'c', 32 * MiB, 0, 32 * MiB}, {'c', 32 * MiB, 0, 64 * MiB}, {'c', 4096, -ENOMEM, 64 * MiB}}},
        {"refuses_a_charge_larger_than_available_and_charges_nothing",
         64 * MiB,
         {{'c', 48 * MiB, 0, 48 * MiB}, {'c', 32 * MiB, -ENOMEM, 48 * MiB}, {'c', 16 * MiB, 0, 64 * MiB}}},
        {"credit_returns_memory",
         64 * MiB,
         {{'c', 64 * MiB, 0, 64 * MiB}, {'r', 16 * MiB, 0, 48 * MiB}, {'c', 16 * MiB, 0, 64 * MiB}}},
        {"refuses_credit_beyond_what_is_charged",
         64 * MiB,
         {{'c', 8 * MiB, 0, 8 * MiB}, {'r', 16 * MiB, -ERANGE, 8 * MiB}}},
        {"refuses_partial_pages",
         64 * MiB,
         {{'c', 4095, -EINVAL, 0}, {'c', 4096, 0, 4096}, {'r', 100, -EINVAL, 4096}}},
        {"huge_charge_does_not_wrap", 64 * MiB, {{'c', UINT64_MAX - 4095, -ENOMEM, 0}}},
};

static void test_pool_case(gconstpointer data)
{
        const PoolCase *tc = data;
        HvPool pool;

        g_assert_cmpint(hv_pool_init(&pool, tc->total), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(tc->steps) && tc->steps[i].op; i++) {
                const PoolStep *step = &tc->steps[i];
                int r = step->op == 'c' ? hv_pool_charge(&pool, step->bytes)
                                        : hv_pool_credit(&pool, step->bytes);

                g_assert_cmpint(r, ==, step->expect);
                g_assert_cmpuint(pool.used_bytes, ==, step->expect_used);
                g_assert_cmpuint(hv_pool_available(&pool), ==, tc->total - step->expect_used);
        }
}

static void test_pool_refuses_empty_or_partial_total(void)
{
        HvPool pool;

        g_assert_cmpint(hv_pool_init(&pool, 0), ==, -EINVAL);
        g_assert_cmpint(hv_pool_init(&pool, 4097), ==, -EINVAL);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(pool_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-pool/%s", pool_cases[i].name);

                g_test_add_data_func(path, &pool_cases[i], test_pool_case);
        }
        g_test_add_func("/hv-pool/refuses_empty_or_partial_total", test_pool_refuses_empty_or_partial_total);
        return g_test_run();
}
