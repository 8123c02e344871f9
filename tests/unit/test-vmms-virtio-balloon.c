/* A virtio-balloon guest's committed memory: live balloon size, stats up to a period old.
 * Each case is a sequence of reads as the libvirt engine makes them once a second. */
#include <glib.h>

#include "vmms-virtio-balloon.h"

typedef struct {
        uint64_t held, total, available, last_update;
        int64_t committed; /* -1: not known */
} Read;

static void check(const char *what, const Read *reads, size_t n)
{
        VmmsVirtioBalloon b = {0};

        for (size_t i = 0; i < n; i++) {
                uint64_t committed = 0;
                bool known =
                        vmms_virtio_balloon_committed(&b, reads[i].held, reads[i].total, reads[i].available,
                                                      reads[i].last_update, &committed);

                if (reads[i].committed < 0) {
                        if (known)
                                g_error("%s, read %zu: committed %" G_GUINT64_FORMAT ", wanted not known",
                                        what, i, committed);
                } else if (!known || committed != (uint64_t)reads[i].committed) {
                        g_error("%s, read %zu: %s %" G_GUINT64_FORMAT ", wanted %" G_GINT64_FORMAT, what, i,
                                known ? "committed" : "not known", committed, reads[i].committed);
                }
        }
}

static void test_committed_counts_the_reserve_and_stays_true_while_the_balloon_inflates(void)
{
        /* The measured case: a 512 MiB guest (524288 KiB) whose kernel reserved 55872 KiB,
         * MemTotal - MemAvailable 30568 KiB: committed 86440 KiB. The balancer inflates;
         * each report lags the balloon by up to a second. held - MemAvailable of the same
         * reads is 57768, 52648, then below 0 twice (a stale MemAvailable above held): the
         * figure that had the balancer trim the guest until it ran out of memory. */
        const Read reads[] = {
                {524288, 0, 0, 0, -1},                 /* the driver has not reported */
                {524288, 468416, 437848, 1000, 86440}, /* first report, balloon still */
                {495616, 468416, 437848, 1000, 86440}, /* inflating, report older */
                {461824, 439744, 409176, 1001, 86440}, /* report of a moment between */
                {372736, 405952, 375384, 1002, 86440},
                {149504, 227776, 197208, 1003, 86440},
                {88984, 93112, 62544, 1004, 86440},
                {88984, 33112, 2544, 1005, 86440}, /* still: the report is newer */
        };

        check("inflating", reads, G_N_ELEMENTS(reads));
}

static void test_the_reserve_is_learned_again_once_the_balloon_is_still(void)
{
        /* The initramfs freed after the first report: MemTotal grows by 20000 KiB with the
         * balloon still, so the reserve falls and committed with it. */
        const Read reads[] = {
                {262144, 200000, 150000, 9, -1}, /* the first read: reports may predate it */
                {262144, 200000, 150000, 10, 112144},
                {262144, 220000, 170000, 11, 92144},
                /* moved at second 11: the report stamped 11 may predate it */
                {200000, 160000, 110000, 11, 92144},
                {200000, 150000, 110000, 11, 82144},
                {200000, 150000, 110000, 12, 90000}, /* newer report, still: learned */
        };

        check("learned again", reads, G_N_ELEMENTS(reads));
}

static void test_a_reattached_guest_is_not_known_until_a_report_after_the_first_read(void)
{
        /* vmmsd restarted while the guest runs: the first read already has a report, which
         * may predate a move vmmsd did not see. */
        const Read reads[] = {
                {300000, 250000, 200000, 500, -1},
                {300000, 250000, 200000, 500, -1},
                {300000, 250000, 190000, 501, 110000},
        };

        check("re-attached", reads, G_N_ELEMENTS(reads));
}

static void test_plugged_memory_not_yet_online_counts_until_the_guest_onlines_it(void)
{
        /* virtio-mem plugs 65536 KiB: held grows at once, MemTotal when the guest onlines
         * it. While the reserve is the one learned before, committed follows MemTotal -
         * MemAvailable; a report after the plug with the block offline makes it part of
         * the reserve until the next still report. */
        const Read reads[] = {
                {262144, 212144, 112144, 19, -1},
                {262144, 212144, 112144, 20, 150000},
                {327680, 212144, 112144, 20, 150000},
                {327680, 212144, 112144, 21, 215536}, /* not online yet: counts */
                {327680, 277680, 177680, 22, 150000}, /* online and free: learned again */
        };

        check("hot-add", reads, G_N_ELEMENTS(reads));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func(
                "/vmms/virtio-balloon/committed_counts_the_reserve_and_stays_true_while_the_balloon_inflates",
                test_committed_counts_the_reserve_and_stays_true_while_the_balloon_inflates);
        g_test_add_func("/vmms/virtio-balloon/the_reserve_is_learned_again_once_the_balloon_is_still",
                        test_the_reserve_is_learned_again_once_the_balloon_is_still);
        g_test_add_func(
                "/vmms/virtio-balloon/a_reattached_guest_is_not_known_until_a_report_after_the_first_read",
                test_a_reattached_guest_is_not_known_until_a_report_after_the_first_read);
        g_test_add_func(
                "/vmms/virtio-balloon/plugged_memory_not_yet_online_counts_until_the_guest_onlines_it",
                test_plugged_memory_not_yet_online_counts_until_the_guest_onlines_it);
        return g_test_run();
}
