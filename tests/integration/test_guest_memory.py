"""The guest kernel's side of Dynamic Memory on a real hvd and vmwp: memsoak paging to
its synthetic disk when it outgrows visible memory (content intact, pressure above
100 % in the status reports), the cache workload trimming on the low-memory
notification when the balloon takes memory and growing back when it returns, and
ballooned pages staying out of host memory while the guest runs."""
import re
import time
import unittest

from test_dynamic_memory import start_vm
from vmms_host import HvHost, wait_for

MiB = 1 << 20
PASS_LINE = re.compile(r"^memsoak: pass (\d+) committed=(\d+) resident=(\d+) paged_out=(\d+) page_in=(\d+) "
                       r"page_out=(\d+) pass_ms=(\d+) hot=\d+ t=\d+$", re.M)
CACHE_LINE = re.compile(r"^cache: size=(\d+) trimmed=(\d+)$", re.M)


def passes(vm):
    return [tuple(int(x) for x in m) for m in PASS_LINE.findall(vm.console())]


def resident(host, name):
    return host.partition(host.counters(0.05), name)["resident_bytes"]


class PagingTest(unittest.TestCase):
    def test_memsoak_larger_than_visible_memory_pages_and_keeps_its_content(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "pager", "64MB", "64MB",
                                   "memsoak_mb=96 memsoak_step_mb=16 memsoak_step_ms=50")
            vm.wait_console(r"^paging: out of free pages at committed=\d+ visible=67108864", timeout=60)
            vm.wait_console(r"^memsoak: reached 100663296", timeout=120)
            wait_for(lambda: len(passes(vm)) >= 3, 180, what="three memsoak passes while paging")
            first, last = passes(vm)[0], passes(vm)[-1]
            _, committed, res, paged_out, page_in, page_out, _ = last
            # Every soaked page is either resident or on disk, and the disk really holds some.
            self.assertEqual(res + paged_out, 96 * MiB, last)
            self.assertGreater(paged_out, 16 * MiB, last)
            self.assertLessEqual(res, 64 * MiB, last)
            self.assertGreater(page_in, first[4], "pages keep coming back from disk")
            self.assertGreater(page_out, page_in)
            # Committed counts what is on disk: the guest asks for more than it sees.
            self.assertGreater(committed, 96 * MiB)
            status = control.status_until(lambda s: s.reporting and s.page_in_total > 0, 20, "pages in reported")
            self.assertGreater(status.committed_bytes, status.visible_bytes, "pressure above 100 %")
            self.assertGreater(status.page_out_total, 0)
            # Content survives the round trip: every page checks its index and pass at both ends.
            self.assertNotIn("CORRUPTION", vm.console())
            self.assertNotIn("unreadable", vm.console())
            self.assertIsNone(vm.proc.poll(), vm.stderr())
            control.close()

    def test_memsoak_that_fits_does_not_page(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "fits", "96MB", "96MB",
                                   "memsoak_mb=48 memsoak_step_mb=48 memsoak_step_ms=50")
            wait_for(lambda: len(passes(vm)) >= 2, 60, what="two memsoak passes")
            for p in passes(vm):
                self.assertEqual(p[3:6], (0, 0, 0), p)
            self.assertNotIn("paging:", vm.console())
            control.close()


class CacheTest(unittest.TestCase):
    def test_cache_trims_when_the_balloon_takes_memory_and_grows_back_when_it_returns(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "cache", "128MB", "128MB", "cache_mb=64", workload="cache")
            vm.wait_console(r"^cache: reached 67108864", timeout=60)
            # More than is free: the balloon takes what it can, then memory is low.
            self.assertEqual(control.adjust(-96 * MiB).error, 0)
            vm.wait_console(r"^cache: low memory free=\d+ threshold=\d+: trimming \d+", timeout=30)
            vm.wait_console(r"^dm: balloon request=\d+ asked=24576 took=\d+", timeout=30)
            sizes = [(int(s), int(t)) for s, t in CACHE_LINE.findall(vm.console())]
            self.assertLess(sizes[-1][0], 64 * MiB, sizes)
            self.assertGreater(sizes[-1][1], 0, sizes)
            status = control.status_until(lambda s: s.ballooned_bytes > 48 * MiB and not s.pending_remove_bytes,
                                          20, "the balloon holding what it took")
            self.assertEqual(status.refused_pages, 0)
            # Ballooned pages stay untouched: host memory does not creep back while the
            # guest runs (a read of a punched page would allocate it again).
            before = resident(host, "cache")
            time.sleep(3)
            self.assertLess(resident(host, "cache") - before, 2 * MiB)
            # Memory comes back: after its hold-off the cache grows to its target again.
            self.assertEqual(control.adjust(96 * MiB).error, 0)
            wait_for(lambda: len(re.findall(r"^cache: reached 67108864", vm.console(), re.M)) >= 2, 60,
                     what="the cache to grow back to 64 MiB")
            self.assertIsNone(vm.proc.poll(), vm.stderr())
            control.close()


if __name__ == "__main__":
    unittest.main()
