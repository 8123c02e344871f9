"""--memory-reserve (and vmms.conf's memory-reserve) keeps pool memory the balancer never
gives to a VM: the Dynamic Memory Balancer's Available Memory (what the balanced VMs may
share: their memory plus the pool's free memory) is smaller by the reserve. (The flag was
parsed and then ignored.)"""
import unittest

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20
AVAILABLE = "\\Hyper-V Dynamic Memory Balancer(System Balancer)\\Available Memory"


def available_mb(host):
    samples = host.api.GetCounters(host.pb.GetCountersRequest(paths=[AVAILABLE]), timeout=5).samples
    return samples[0].value if samples else None


class MemoryReserveTest(unittest.TestCase):
    def available(self, extra):
        with VmmsdHost(hvd_memory="1GB", extra=extra) as host:
            host.create("dm", startup=64 * MiB, dynamic_memory_enabled=True, minimum_bytes=64 * MiB,
                        maximum_bytes=128 * MiB)
            host.api.StartVm(host.pb.VmRef(vm="dm"), timeout=30)

            def settled():
                try:
                    value = available_mb(host)
                except Exception:
                    return None
                vm = host.api.GetVm(host.pb.VmRef(vm="dm"), timeout=5)
                return (value, vm.assigned_memory_bytes) if value is not None and vm.assigned_memory_bytes else None

            value, _ = wait_for(settled, 20, interval=0.2, what="the balancer's figures")
            return value

    def test_the_flag_reserves_pool_memory(self):
        self.assertAlmostEqual(self.available(()), 1024, delta=2)
        self.assertAlmostEqual(self.available(("--memory-reserve", "512MB")), 1024 - 512, delta=2)

    def test_vmms_conf_reserves_pool_memory(self):
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as d:
            conf = Path(d) / "vmms.conf"
            conf.write_text("[vmmsd]\nmemory-reserve=512MB\n")
            self.assertAlmostEqual(self.available(("--config", str(conf))), 1024 - 512, delta=2)


if __name__ == "__main__":
    unittest.main()
