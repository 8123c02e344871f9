"""memsoak_hot_mb= on a real hvd and vmwp: memsoak commits its whole soak but its passes
rewrite only the hot part, so a soak larger than visible memory stops paging in once its
hot part is resident (the cold rest stays on disk), where the same soak all hot pages in
every pass; a balloon that makes the guest page takes cold pages and leaves the hot part
alone; its pass lines carry the hot size and the guest's reference time, and its pages'
marks stay intact. Goal seeking (test_goal_seeking.py, bench/dm_goal_seeking.py) relies on
all of it."""
import re
import unittest

from test_dynamic_memory import start_vm
from vmms_host import HvHost, wait_for

MiB = 1 << 20
PASS = re.compile(r"^memsoak: pass (\d+) committed=(\d+) resident=(\d+) paged_out=(\d+) page_in=(\d+) "
                  r"page_out=(\d+) pass_ms=(\d+) hot=(\d+) t=(\d+)$", re.M)


def passes(vm):
    return [dict(zip(("pass", "committed", "resident", "paged_out", "page_in", "page_out", "pass_ms", "hot", "t"),
                     map(int, m))) for m in PASS.findall(vm.console())]


def settled(vm, since):
    """The last report and the one a pass line before it, if page_in did not move between them."""
    seen = passes(vm)[since:]
    if len(seen) >= 2 and seen[-1]["page_in"] == seen[-2]["page_in"] and seen[-1]["pass"] > seen[-2]["pass"]:
        return seen[-2], seen[-1]
    return None


class MemsoakHotTest(unittest.TestCase):
    def assert_pages_in_every_pass(self, vm):
        """The last two pass lines: all 96 MiB hot, and what does not fit in 64 MiB (16 MiB at least)
        read back from disk on every pass between them."""
        a, b = passes(vm)[-2:]
        self.assertEqual(b["hot"], 96 * MiB)
        self.assertGreater(b["page_in"] - a["page_in"], (b["pass"] - a["pass"]) * 16 * MiB // 4096, (a, b))

    def assert_intact(self, vm):
        self.assertNotIn("CORRUPTION", vm.console())
        self.assertNotIn("unreadable", vm.console())
        self.assertIsNone(vm.proc.poll(), vm.stderr())

    def test_cold_majority_stays_on_disk_while_the_hot_part_is_rewritten(self):
        # 96 MiB soaked in 64 MiB visible: a third at least is on disk. The hot soak
        # rewrites 8 MiB of it; the other rewrites all of it.
        soak = "memsoak_mb=96 memsoak_step_mb=16 memsoak_step_ms=50"
        with HvHost(memory="512MB") as host:
            hot, hot_control = start_vm(host, "hot", "64MB", "64MB", f"{soak} memsoak_hot_mb=8")
            full, full_control = start_vm(host, "full", "64MB", "64MB", soak)
            for vm in (hot, full):
                vm.wait_console(r"^memsoak: reached 100663296", timeout=180)
            wait_for(lambda: len(passes(full)) >= 3, 240, what="three all-hot passes")
            # The hot part's pages the growth evicted come back within a few passes, each
            # evicting a page the clock finds unreferenced (a cold one): then no page-ins at all.
            reached = len(passes(hot))
            before, after = wait_for(lambda: settled(hot, reached), 120, what="the hot soak's page-ins to stop")
            self.assertEqual(after["hot"], 8 * MiB)
            self.assertGreater(after["committed"], 96 * MiB, "committed counts the cold pages on disk")
            self.assertGreater(after["paged_out"], 32 * MiB - 1, after)
            self.assertEqual(after["resident"] + after["paged_out"], 96 * MiB, after)
            self.assertGreater(after["t"], before["t"], "reference time moves on")
            # The same soak all hot brings pages back on every pass: at least what does not fit.
            self.assert_pages_in_every_pass(full)
            for vm, control in ((hot, hot_control), (full, full_control)):
                self.assert_intact(vm)
                control.close()

    def test_balloon_pages_out_cold_pages_and_leaves_the_hot_part(self):
        # 40 MiB soaked in 64 MiB, 8 MiB of it hot: it fits. The balloon then asks for 32 MiB,
        # more than is free, so the guest pages about a third of its soak out. The pager's
        # clock passes the hot pages (used since) and takes cold ones: the hot part never
        # comes back from disk. Random eviction would take a fifth of the trim from it.
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "trim", "64MB", "64MB",
                                   "memsoak_mb=40 memsoak_step_mb=8 memsoak_step_ms=0 memsoak_hot_mb=8 "
                                   "memsoak_pause_ms=20")
            vm.wait_console(r"^memsoak: reached 41943040", timeout=120)
            wait_for(lambda: len(passes(vm)) >= 2, 60, what="two pass lines")
            self.assertEqual(passes(vm)[-1]["paged_out"], 0, "the soak fits before the balloon")
            self.assertEqual(control.adjust(-32 * MiB).error, 0)
            control.status_until(lambda s: s.ballooned_bytes == 32 * MiB and not s.pending_remove_bytes, 60,
                                 "the balloon holding 32 MiB")
            seen = len(passes(vm))
            wait_for(lambda: len(passes(vm)) >= seen + 2, 60, what="two pass lines after the balloon")
            last = passes(vm)[-1]
            self.assertGreater(last["paged_out"], 8 * MiB, last)
            self.assertEqual(last["page_in"], 0, last)
            self.assert_intact(vm)
            control.close()

    def test_hot_part_that_grows_brings_the_cold_pages_back(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "grows", "64MB", "64MB",
                                   "memsoak_mb=96 memsoak_step_mb=16 memsoak_step_ms=50 memsoak_hot_mb=8 "
                                   "memsoak_hot_grow_s=2")
            vm.wait_console(r"^memsoak: hot grows to 100663296", timeout=180)
            grown = len(passes(vm))
            wait_for(lambda: len(passes(vm)) >= grown + 3, 240, what="three passes of the grown hot part")
            self.assert_pages_in_every_pass(vm)
            # The cold pages' marks from before the growth are accepted once, then checked.
            self.assert_intact(vm)
            control.close()

    def test_hot_part_larger_than_the_soak_is_all_of_it(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "small", "64MB", "64MB",
                                   "memsoak_mb=8 memsoak_step_mb=8 memsoak_step_ms=0 memsoak_hot_mb=32 "
                                   "memsoak_pause_ms=0")
            wait_for(lambda: len(passes(vm)) >= 3, 60, what="three pass lines")
            seen = passes(vm)
            self.assertEqual(seen[-1]["hot"], 8 * MiB)
            # No pause: the lines come at most every 250 ms of guest time, passes in between.
            self.assertGreater(seen[-1]["pass"] - seen[-2]["pass"], 1, seen[-2:])
            self.assertGreaterEqual(seen[-1]["t"] - seen[-2]["t"], 250_000_000)
            self.assertNotIn("CORRUPTION", vm.console())
            control.close()


if __name__ == "__main__":
    unittest.main()
