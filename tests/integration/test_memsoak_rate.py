"""memsoak_rate_kb= on a real hvd and vmwp: once at its target, memsoak rewrites its
pages at the asked rate, measured in the guest's own reference time from its tick lines
(so the machine's load does not enter), keeps its pages' marks intact, writes nothing at
rate 0, and ticks every 2 ms of guest time. bench/migration_vs_qemu.py relies on all of it."""
import re
import unittest

from vmms_host import HvHost, wait_for

TICK = re.compile(r"^memsoak: tick (\d+) written (\d+)$", re.M)
PAGE = 4096
MiB = 1 << 20


def ticks(vm):
    return [(int(t), int(w)) for t, w in TICK.findall(vm.console())]


class MemsoakRateTest(unittest.TestCase):
    CASES = [
        # (rate KiB/s, soaked MiB): 0 writes nothing; 4 MiB/s wraps an 8 MiB soak every 2 s.
        (0, 8),
        (4096, 8),
    ]

    def test_paced_memsoak_writes_at_its_rate_in_guest_time(self):
        with HvHost(memory="512MB") as host:
            for rate, soak in self.CASES:
                with self.subTest(rate=rate):
                    vm = host.start_vm(f"rate{rate}", workload="memsoak", memory="64MB",
                                       boot_args=f"memsoak_mb={soak} memsoak_step_mb={soak} memsoak_step_ms=0 "
                                                 f"memsoak_rate_kb={rate}")
                    # 2.5 s of guest time: more than one whole pass at 4 MiB/s.
                    wait_for(lambda: len(ticks(vm)) > 2 and ticks(vm)[-1][0] - ticks(vm)[0][0] > 2.5e9, 120,
                             interval=0.2, what="2.5 s of ticks")
                    seen = ticks(vm)
                    (t0, w0), (t1, w1) = seen[0], seen[-1]
                    written_kib_per_s = (w1 - w0) * PAGE / 1024 / ((t1 - t0) / 1e9)
                    if rate == 0:
                        self.assertEqual(w1, 0)
                    else:
                        self.assertGreater(written_kib_per_s, rate * 0.9, seen[-1])
                        self.assertLess(written_kib_per_s, rate * 1.1, seen[-1])
                        self.assertGreater(w1 * PAGE, soak * MiB, "not one whole pass")
                    gaps = sorted(b[0] - a[0] for a, b in zip(seen, seen[1:]))
                    self.assertGreaterEqual(gaps[0], 2_000_000, "ticks closer than 2 ms")
                    self.assertLess(gaps[len(gaps) // 2], 4_000_000, "the median tick is not about 2 ms")
                    self.assertNotIn("CORRUPTION", vm.console())
                    vm.proc.kill()
                    vm.proc.wait()


if __name__ == "__main__":
    unittest.main()
