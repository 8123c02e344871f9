"""The seed's five-guest Dynamic Memory case, scaled down for CI (sizes / 16: a 768 MiB
pool; VMs min/max 128/384, 128/384, 32/384, 32/384, 32/512 MiB, started at their
minimum; VM 5 soaks memory past 512 MiB, the others idle). Expected, from the seed:
VMs 3-4 are squeezed toward their minimum, VMs 1-2 stay at 128 MiB, VM 5's pressure goes
above 100 and it pages; after VMs 1-2 stop, VM 5 rises to its maximum. Also writes the
run as CSV and SVG into the test log directory."""
import os
import unittest
from pathlib import Path

import grpc

import dm_seed_case

MiB = 1 << 20


class SeedCaseTest(unittest.TestCase):
    def test_seed_five_guest_case_scaled_down(self):
        paging = {}

        def probe(host, t):
            pb = host.pb
            try:
                for s in host.api.GetCounters(pb.GetCountersRequest(
                        paths=["\\VMMS Guest Memory(vm5)\\Pages Out"]), timeout=5).samples:
                    paging[round(t)] = s.value
            except grpc.RpcError as e:  # NOT_FOUND until vm5's worker has reported
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise

        stop_at, seconds = 30, 45
        samples = dm_seed_case.run(scale=16, seconds=seconds, stop_at=stop_at, on_sample=probe)
        out = Path(os.environ.get("MESON_BUILD_ROOT", "/tmp")) / "dm-seed-case-scaled"
        dm_seed_case.write_csv(samples, f"{out}.csv")
        dm_seed_case.write_svg(samples, f"{out}.svg", "Seed five-guest case, 768 MiB pool (scaled down)")

        def at(name, t_from, t_to):
            return [s for s in samples if s[1] == name and t_from <= s[0] < t_to]

        before = (stop_at - 8, stop_at - 0.5)  # settled, before VMs 1-2 stop
        for name in ("vm1", "vm2"):
            self.assertTrue(all(s[3] == 128 * MiB for s in at(name, *before)), at(name, *before))
        for name in ("vm3", "vm4"):
            assigned = [s[3] for s in at(name, *before)]
            self.assertTrue(assigned and max(assigned) <= 40 * MiB, f"{name} not squeezed: {assigned}")
        vm5 = at("vm5", *before)
        self.assertTrue(vm5 and max(s[5] for s in vm5) > 100, f"vm5 pressure: {[s[5] for s in vm5]}")
        self.assertGreater(max(paging.values(), default=0), 0, "vm5 must page when committed exceeds assigned")
        after = at("vm5", seconds - 5, seconds)
        self.assertTrue(after and after[-1][3] == 512 * MiB, f"vm5 after VMs 1-2 stop: {[s[3] for s in after]}")
        # The balancer never gives away more than the pool.
        for t in sorted({s[0] for s in samples}):
            total = sum(s[3] for s in samples if s[0] == t and s[2] != "VM_STATE_OFF")
            self.assertLessEqual(total, 768 * MiB, f"assigned {total} > pool at t={t}")


if __name__ == "__main__":
    unittest.main()
