"""The over-commit signs with real guests (vmms/vmms-health.c): a memsoak guest that
outgrows a small pool shows pressure or paging in Get-VM's Status and in
Get-VMHostHealth, with the counter, its value, the threshold, the window and advice,
and a "health" event; a host at rest is healthy and records no health event.

Nothing here asserts a wall-clock time: only findings, counts and states. The waits
are upper bounds for the rules' windows (30 s sustained pressure, 10 s of paging)."""
import subprocess
import unittest

from vmms_host import BUILD, wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20
VMCTL = BUILD / "cli" / "vmctl"
MEMORY_SIGNS = ("vm-memory-pressure", "vm-paging")


def vmctl(host, *args):
    return subprocess.run([str(VMCTL), "-Server", f"unix:{host.socket}", *args], capture_output=True, text=True,
                          timeout=30)


def health_events(host, pb):
    return [e for e in host.api.ListEvents(pb.ListEventsRequest(limit=10000), timeout=10).events
            if e.kind == "health"]


class HealthTest(unittest.TestCase):
    def test_host_at_rest_is_healthy(self):
        with VmmsdHost(hvd_memory="512MB", hvd_lps=2) as host:
            pb = host.pb
            host.create("calm", startup=64 * MiB)
            host.api.StartVm(pb.VmRef(vm="calm"), timeout=60)
            # Past every rule's window (30 s), so a sign would have fired by now.
            samples = []
            wait_for(lambda: samples.append(1) or len(samples) > 35, 60, interval=1.0,
                     what="35 s of samples")
            health = host.api.GetHostHealth(pb.GetHostHealthRequest(), timeout=10)
            self.assertEqual(health.status, "healthy")
            self.assertEqual(len(health.findings), 0, health.findings)
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="calm"), timeout=10).status, "Operating normally")
            self.assertEqual(health_events(host, pb), [])
            out = vmctl(host, "Get-VMHostHealth")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("Host     : healthy", out.stdout)
            self.assertIn("none", out.stdout)

    def test_memsoak_outgrowing_a_small_pool_shows_pressure_and_paging(self):
        # A 256 MB pool; the guest may grow to 512 MB and soaks 384 MB: it cannot be
        # given what it commits, so its pressure stays over 100 and it pages.
        with VmmsdHost(hvd_memory="256MB", hvd_lps=2, stop_timeout=5) as host:
            pb = host.pb
            host.create("soak", startup=64 * MiB, workload="memsoak", dynamic_memory_enabled=True,
                        minimum_bytes=64 * MiB, maximum_bytes=512 * MiB, buffer=20, priority=50,
                        paging_bytes=512 * MiB,
                        boot_args="memsoak_mb=384 memsoak_step_mb=16 memsoak_step_ms=100")
            host.api.StartVm(pb.VmRef(vm="soak"), timeout=60)

            vm = wait_for(lambda: (lambda v: v if v.status.startswith(("Memory pressure high", "Paging"))
                                   else None)(host.api.GetVm(pb.VmRef(vm="soak"), timeout=10)),
                          150, interval=1.0, what="soak's status to show memory pressure or paging")
            self.assertEqual(vm.state, pb.VM_STATE_RUNNING)

            health = host.api.GetHostHealth(pb.GetHostHealthRequest(), timeout=10)
            mine = [f for f in health.findings if f.vm == "soak"]
            self.assertTrue(any(f.rule in MEMORY_SIGNS for f in mine), health)
            for f in mine:
                self.assertIn("(soak", f.counter)
                self.assertGreaterEqual(f.value, f.threshold, f)
                self.assertGreater(f.window_seconds, 0)
                self.assertGreaterEqual(f.for_seconds, f.window_seconds)
                self.assertIn("'soak'", f.advice)
                if f.rule in MEMORY_SIGNS:
                    self.assertGreater(f.relief_bytes, 0, f)
                    self.assertIn("MB more", f.advice)
            pressure = [f for f in mine if f.rule == "vm-memory-pressure"]
            for f in pressure:
                self.assertEqual(f.counter, "\\Hyper-V Dynamic Memory VM(soak)\\Average Pressure")
                self.assertEqual(f.threshold, 100)
                self.assertEqual(f.window_seconds, 30)

            events = [e for e in health_events(host, pb) if e.vm_name == "soak"]
            self.assertGreaterEqual(len(events), 1)
            self.assertTrue(events[0].message.startswith(("Memory pressure high", "Paging")), events[0])
            self.assertIn("threshold", events[0].message)
            # A change is an event, not a tick: far fewer events than seconds gone by.
            self.assertLess(len(events), 10, [e.message for e in events])

            out = vmctl(host, "Get-VMHostHealth")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("VMName   : soak", out.stdout)
            self.assertIn("Advice   : ", out.stdout)
            table = vmctl(host, "Get-VM", "soak")
            self.assertEqual(table.returncode, 0, table.stderr)
            self.assertRegex(table.stdout, r"(Memory pressure high for \d+ (s|min)|Paging)")

            # Stopping it: no VM's sign is left.
            host.api.StopVm(pb.StopVmRequest(vm="soak", turn_off=True), timeout=30)
            wait_for(lambda: not [f for f in host.api.GetHostHealth(pb.GetHostHealthRequest(), timeout=10)
                                  .findings if f.vm], 10, interval=0.5, what="soak's findings to go")
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="soak"), timeout=10).status, "Operating normally")


if __name__ == "__main__":
    unittest.main()
