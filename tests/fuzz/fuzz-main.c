/* The replay driver (systemd's fuzz-main.c does the same): runs a fuzz target once on
 * each file named, or on each file of each directory named, in name order. Fails when
 * a target aborts (sanitizers stop at the first error) or when there was nothing to run,
 * so a corpus that went missing cannot pass. */
#include <dirent.h>
#include <glib.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path)
{
        g_autoptr(GError) error = NULL;
        g_autofree char *contents = NULL;
        g_autofree uint8_t *exact = NULL;
        gsize size;

        if (!g_file_get_contents(path, &contents, &size, &error)) {
                fprintf(stderr, "fuzz-main: %s\n", error->message);
                return -1;
        }
        printf("replaying %s (%zu bytes)\n", path, (size_t)size);
        fflush(stdout);
        /* A copy of exactly `size` bytes, so a read past the input is caught. */
        exact = g_memdup2(contents, size);
        LLVMFuzzerTestOneInput(exact, size);
        return 0;
}

static int compare_names(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_dir(const char *path, unsigned *ret_count)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GDir) dir = g_dir_open(path, 0, &error);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        const char *name;

        if (!dir) {
                fprintf(stderr, "fuzz-main: %s\n", error->message);
                return -1;
        }
        while ((name = g_dir_read_name(dir)))
                g_ptr_array_add(names, g_build_filename(path, name, NULL));
        qsort(names->pdata, names->len, sizeof(char *), compare_names);
        for (guint i = 0; i < names->len; i++) {
                if (replay_file(names->pdata[i]) < 0)
                        return -1;
                (*ret_count)++;
        }
        return 0;
}

int main(int argc, char **argv)
{
        unsigned count = 0;

        for (int i = 1; i < argc; i++) {
                int r;

                if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
                        r = replay_dir(argv[i], &count);
                } else {
                        r = replay_file(argv[i]);
                        count++;
                }
                if (r < 0)
                        return 1;
        }
        if (count == 0) {
                fprintf(stderr, "fuzz-main: no inputs to replay\n");
                return 1;
        }
        printf("%u inputs replayed\n", count);
        return 0;
}
