#!/usr/bin/env python3
"""Dynamic Memory convergence after a step change in demand, end to end through vmmsd:
a VM at rest (64 MiB committed of 1 GiB maximum) suddenly commits 512 MiB more in one
step, holds it, then releases it. Measures the seconds from the guest's report of the
new demand until assigned memory settles within one dead band of its target (committed x
1.2, the default buffer) — up, and then down again after the release — and how much host
memory the release actually returned. Prints JSON."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmmsd_host import VmmsdHost  # noqa: E402

MiB = 1 << 20


def settle_time(samples, t_from, target_of):
    """First time after t_from from which assigned stays within 4 MiB + 1/64 of the target."""
    after = [s for s in samples if s[0] >= t_from]
    for i, (t, assigned, demand) in enumerate(after):
        if all(abs(a - target_of(d)) <= 4 * MiB + a / 64 for _, a, d in after[i:]):
            return round(t - t_from, 2)
    return None


def main():
    with VmmsdHost(hvd_memory="2GB", hvd_lps=2) as host:
        pb = host.pb
        host.api.CreateVm(pb.CreateVmRequest(
            name="step", workload="memsoak",
            boot_args="memsoak_mb=576 memsoak_step_mb=512 memsoak_step_ms=8000 memsoak_hold_s=20",
            memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=128 * MiB,
                                     minimum_bytes=64 * MiB, maximum_bytes=1024 * MiB, buffer=20)), timeout=10)
        host.api.StartVm(pb.VmRef(vm="step"), timeout=30)
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < 45:
            vm = host.api.GetVm(pb.VmRef(vm="step"), timeout=5)
            samples.append((time.monotonic() - t0, vm.assigned_memory_bytes, vm.memory_demand_bytes))
            time.sleep(0.25)
    target = lambda d: min(max(int(d * 1.2) // (2 * MiB) * (2 * MiB), 64 * MiB), 1024 * MiB)
    up_at = next((t for t, _, d in samples if d >= 500 * MiB), None)
    peak = max(samples, key=lambda s: s[1])
    down_at = next((t for t, _, d in samples if up_at and t > up_at and d < 200 * MiB), None)
    result = {
        "benchmark": "dm_convergence",
        "step_up_bytes": 512 * MiB,
        "seconds_to_converge_up": settle_time([s for s in samples if not down_at or s[0] < down_at], up_at,
                                              target) if up_at else None,
        "seconds_to_converge_down": settle_time(samples, down_at, target) if down_at else None,
        "peak_assigned_bytes": peak[1],
        "final_assigned_bytes": samples[-1][1],
        "final_demand_bytes": samples[-1][2],
        "samples": len(samples),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
