/* A Save-VM file -> vmwp: the saved state a worker reads at Start-VM from Saved
 * (vmwp_worker_restore, as `vmwp --restore --restore-paused` does: checked whole, then
 * loaded into a paused partition of a real hvd, fuzz-worker.h). The file may be damaged
 * or written by someone else. The input is a flags byte (FUZZ_KEEP_*), then the file;
 * unless told otherwise the harness makes its checksums, size and section count right
 * so the fuzzer reaches the checks behind them. Seeds: a file saved from the bundled
 * guest, trimmed (capture-seeds.py), and hand-made edge cases.
 *
 * Checks beyond the sanitizers: hvd survives; a refused file comes with a message that
 * names the file and why; the file itself is never changed; an accepted one leaves the
 * VM paused. */
#include "fuzz-worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(VmwpWorker) w = NULL;
        g_autofree char *why = NULL, *path = NULL, *before = NULL, *after = NULL;
        gsize before_len = 0, after_len = 0;
        int fd, r;

        fuzz_world_start();
        w = fuzz_worker_new();
        fd = fuzz_input_file(data, size, true, &path);
        close(fd);
        FUZZ_CHECK(g_file_get_contents(path, &before, &before_len, NULL));
        r = vmwp_worker_restore(w, path, true, &why);
        if (r < 0) {
                FUZZ_CHECK(why && strstr(why, path));
        } else {
                FUZZ_CHECK(!why);
                FUZZ_CHECK(vmwp_worker_paused(w));
        }
        FUZZ_CHECK(g_file_get_contents(path, &after, &after_len, NULL));
        FUZZ_CHECK(before_len == after_len && memcmp(before, after, before_len) == 0);
        unlink(path);
        fuzz_world_check();
        return 0;
}
