/* A guest's committed memory from virtio-balloon stats.
 *
 * Committed is what the guest holds less what it could give back: held - MemAvailable,
 * where held counts the memory its kernel reserved at boot (MemTotal does not), which no
 * balloon can take. The catch is time: held (the balloon's actual size) is live, QEMU
 * updates it as the guest moves pages, but MemTotal and MemAvailable come from the
 * guest's last report, up to a stats period old. While the balloon inflates by tens of
 * MiB a second, held - MemAvailable mixes a smaller held with an older, larger
 * MemAvailable and reads near 0 (measured: an idle 512 MiB guest committing 84 MiB read
 * 57, then 2, then 0 MiB as the balancer trimmed it, so the balancer trimmed on to
 * Minimum and the guest ran out of memory).
 *
 * So the two are split: the kernel's reserve (held - MemTotal) is learned only from a
 * report newer than the last change of held, while the balloon is still; the rest,
 * MemTotal - MemAvailable, comes from one report and is always consistent. committed =
 * reserve + MemTotal - MemAvailable. A report taken mid-move is at most a period old,
 * not inconsistent. The reserve shrinks after boot (the initramfs freed) and grows
 * while plugged virtio-mem blocks are not yet online; it is learned again each time the
 * balloon is still. */
#include "vmms-virtio-balloon.h"

bool vmms_virtio_balloon_committed(VmmsVirtioBalloon *b, uint64_t held_kib, uint64_t total_kib,
                                   uint64_t available_kib, uint64_t last_update, uint64_t *ret_committed_kib)
{
        if (held_kib != b->held_kib) {
                /* Reports stamped this second or earlier may predate the change. */
                b->held_kib = held_kib;
                b->report_at_move = last_update;
        } else if (last_update > b->report_at_move) {
                b->reserved_kib = held_kib > total_kib ? held_kib - total_kib : 0;
                b->known = true;
        }
        if (!b->known || last_update == 0)
                return false;
        *ret_committed_kib = b->reserved_kib + (total_kib > available_kib ? total_kib - available_kib : 0);
        return true;
}
