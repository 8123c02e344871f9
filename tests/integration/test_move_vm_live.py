"""Live Move-VM (pre-copy) of each guest workload from A to B and back, on two vmmsd hosts on
this machine, checked by the guests' own checks: memsoak's pass counter goes on and its
page patterns find no CORRUPTION; the two-VP cpu guest's paired counters go on without
CORRUPTION; the idle guest's uptime (its reference time) goes on from where it was and
never backwards. Each move reports mode "live", its rounds and a downtime, and
Get-VMEvent on the source says it was live. Slow (a minute or two): suite migration."""
import re
import shutil
import unittest

from move_hosts import SOAK, MiB, MoveHosts, workers
from vmms_host import wait_for

# (workload, boot args, VPs, the console line that counts, its counter's group)
GUESTS = [
    ("memsoak", SOAK, 1, r"^memsoak: pass (\d+)"),
    ("cpu", "", 2, r"^cpu: vp=0 batches=(\d+)"),
    ("idle", "", 1, r"^idle: up (\d+)s"),
]


def counts(host, vm_id, pattern):
    return [int(n) for n in re.findall(pattern, host.console(vm_id), re.M)]


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class MoveVmLiveTest(MoveHosts, unittest.TestCase):
    def round_trip(self, workload, boot_args, vps, pattern):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = a.create("web", startup=64 * MiB, workload=workload, vps=vps, boot_args=boot_args)
            a.api.StartVm(pb.VmRef(vm="web"), timeout=30)
            wait_for(lambda: len(counts(a, vm.id, pattern)) >= 1, 60, what=f"{workload}'s first report")
            last = counts(a, vm.id, pattern)[-1]
            for src, dst in ((a, b), (b, a)):
                result = self.move(src, dst, max_downtime_ms=50)
                print(f"# {workload} {src.address}->{dst.address}: mode {result.mode}, {result.data_total} bytes, "
                      f"round {result.memory_iteration}, downtime {result.downtime_ms} ms, "
                      f"total {result.time_elapsed_ms} ms, throttle {result.auto_converge_throttle} %")
                self.assertEqual(result.mode, "live")
                self.assertEqual(result.phase, "completed")
                self.assertEqual(result.data_processed, result.data_total)
                self.assert_nothing_of(src, vm)
                dst.wait_state("web", pb.VM_STATE_RUNNING, timeout=30)
                self.assertTrue(any(m.startswith(f"moving to {dst.address} live") for m in self.events(src)),
                                self.events(src))
                # The guest goes on from its own counter on the destination, uncorrupted.
                wait_for(lambda: any(n > last for n in counts(dst, vm.id, pattern)), 60,
                         what=f"{workload} to go on at {dst.address}")
                seen = counts(dst, vm.id, pattern)
                self.assertEqual(seen, sorted(seen), f"{workload}'s counter went backwards")
                self.assertNotIn("CORRUPTION", dst.console(vm.id))
                last = seen[-1]
            self.assertEqual(len(workers(a, vm.id)), 1)

    def test_memsoak_moves_live_and_back(self):
        self.round_trip(*GUESTS[0])

    def test_a_two_vp_cpu_guest_moves_live_and_back(self):
        self.round_trip(*GUESTS[1])

    def test_an_idle_guest_moves_live_and_back_its_time_going_on(self):
        self.round_trip(*GUESTS[2])


if __name__ == "__main__":
    unittest.main()
