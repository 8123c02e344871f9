/* Sizes parse as operators write them, with Hyper-V's binary units. */
#include <errno.h>
#include <glib.h>

#include "hv-size.h"

typedef struct SizeCase {
        const char *text;
        int expect;
        uint64_t bytes;
} SizeCase;

static const SizeCase size_cases[] = {
        {"4096", 0, 4096},
        {"512MB", 0, 512ull << 20},
        {"512mb", 0, 512ull << 20},
        {"2GB", 0, 2ull << 30},
        {"1GiB", 0, 1ull << 30},
        {"64K", 0, 64ull << 10},
        {"1TB", 0, 1ull << 40},
        {"", -EINVAL, 0},
        {"MB", -EINVAL, 0},
        {"-1GB", -EINVAL, 0},
        {"12XB", -EINVAL, 0},
        {"1.5GB", -EINVAL, 0},
        {"99999999999999999999", -ERANGE, 0},
        {"20000000TB", -ERANGE, 0},
};

static void test_size_case(gconstpointer data)
{
        const SizeCase *tc = data;
        uint64_t bytes = 12345;

        g_assert_cmpint(hv_size_parse(tc->text, &bytes), ==, tc->expect);
        g_assert_cmpuint(bytes, ==, tc->expect == 0 ? tc->bytes : 12345);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        for (size_t i = 0; i < G_N_ELEMENTS(size_cases); i++) {
                g_autofree char *path = g_strdup_printf("/hv-size/parses/%zu", i);

                g_test_add_data_func(path, &size_cases[i], test_size_case);
        }
        return g_test_run();
}
