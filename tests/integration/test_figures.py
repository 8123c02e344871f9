"""Every figure of one reply comes from one sample, and no zero means "not sampled
yet": Start-VM's answer shows the memory the VM started with, a paused VM uses no
processor, pressure is the reply's own demand over its own assigned memory (static
memory too, and Get-Counter says the same), and the first Get-VMHost after vmmsd starts has the host's figures."""
import unittest

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20


class FiguresTest(unittest.TestCase):
    def test_the_first_get_vmhost_has_the_hosts_figures(self):
        with VmmsdHost(hvd_lps=2) as host:
            h = host.api.GetHost(host.pb.GetHostRequest(), timeout=10)
            self.assertEqual(h.logical_processors, 2)
            self.assertEqual(h.memory_pool_bytes, 1 << 30)
            self.assertEqual(h.hypervisor_status, "running")

    def test_start_pause_and_get_vm_answer_with_consistent_figures(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("static", startup=64 * MiB, workload="memsoak", boot_args="memsoak_mb=32")
            vm = host.api.StartVm(pb.VmRef(vm="static"), timeout=30)
            self.assertEqual(vm.assigned_memory_bytes, 64 * MiB)  # not 0 before the first sample
            vm = wait_for(lambda: (lambda v: v if v.memory_demand_bytes >= 32 * MiB else None)(
                host.api.GetVm(pb.VmRef(vm="static"), timeout=5)), 30, what="the soaker's demand")
            self.assertGreater(vm.memory_pressure, 0)  # static memory has a pressure too
            # Hyper-V's rounding: 33 MB of 64 MB reads 52, not 51.
            self.assertEqual(vm.memory_pressure,
                             (vm.memory_demand_bytes * 100 + vm.assigned_memory_bytes // 2) // vm.assigned_memory_bytes)

            # Get-Counter's Current Pressure is Get-VM's figure, from the same report; a static VM has no
            # window of pressures, so no Average, Minimum or Maximum Pressure rather than zeros.
            def counters_agree():
                before = host.api.GetVm(pb.VmRef(vm="static"), timeout=5).memory_pressure
                samples = {s.path: s.value for s in host.api.GetCounters(pb.GetCountersRequest(
                    paths=["\\Hyper-V Dynamic Memory VM(static)\\*"]), timeout=10).samples}
                after = host.api.GetVm(pb.VmRef(vm="static"), timeout=5).memory_pressure
                current = samples.get("\\Hyper-V Dynamic Memory VM(static)\\Current Pressure")
                return samples if before == after == current else None
            samples = wait_for(counters_agree, 30, interval=0.2, what="Get-Counter's pressure to be Get-VM's")
            for name in ("Average Pressure", "Minimum Pressure", "Maximum Pressure"):
                self.assertNotIn(f"\\Hyper-V Dynamic Memory VM(static)\\{name}", samples)
            paused = host.api.PauseVm(pb.VmRef(vm="static"), timeout=30)
            self.assertEqual(paused.cpu_usage_pct, 0)


if __name__ == "__main__":
    unittest.main()
