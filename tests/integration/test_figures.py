"""Every figure of one reply comes from one sample, and no zero means "not sampled
yet": Start-VM's answer shows the memory the VM started with, a paused VM uses no
processor, pressure is the reply's own demand over its own assigned memory (static
memory too), and the first Get-VMHost after vmmsd starts has the host's figures."""
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
            self.assertEqual(vm.memory_pressure, vm.memory_demand_bytes * 100 // vm.assigned_memory_bytes)
            paused = host.api.PauseVm(pb.VmRef(vm="static"), timeout=30)
            self.assertEqual(paused.cpu_usage_pct, 0)


if __name__ == "__main__":
    unittest.main()
