/* Another host -> vmwp: the live-migration stream (vmwp-stream.h) a destination worker
 * reads with vmwp_worker_incoming, exactly as `vmwp --incoming-fd` does, into a paused
 * partition of a real hvd (fuzz-worker.h). The input is a flags byte (FUZZ_KEEP_*),
 * then the stream; unless told otherwise the harness makes its checksums right so the
 * fuzzer reaches the checks behind them. Seeds: streams captured from a real move of
 * the bundled guest, trimmed (capture-seeds.py), and hand-made edge cases.
 *
 * Checks beyond the sanitizers: hvd survives; a refused stream comes with a message
 * naming why; an accepted one was read no further than its input and leaves the VM
 * paused. */
#include "fuzz-worker.h"
#include "vmwp-migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(VmwpWorker) w = NULL;
        g_autofree char *why = NULL, *path = NULL;
        int fd, r;

        fuzz_world_start();
        w = fuzz_worker_new();
        fd = fuzz_input_file(data, size, false, &path);
        r = vmwp_worker_incoming(w, fd, &why);
        if (r < 0) {
                FUZZ_CHECK(why && g_str_has_prefix(why, "incoming migration refused: ") &&
                           strlen(why) > strlen("incoming migration refused: "));
        } else {
                const VmwpIncomingResult *result = vmwp_worker_incoming_result(w);

                FUZZ_CHECK(!why);
                FUZZ_CHECK(result->bytes_received <= (size ? size - 1 : 0));
                FUZZ_CHECK(vmwp_worker_paused(w));
                FUZZ_CHECK(vmwp_worker_migration_phase(w) == VMWP_MIGRATION_INCOMING_DONE);
        }
        unlink(path);
        fuzz_world_check();
        return 0;
}
