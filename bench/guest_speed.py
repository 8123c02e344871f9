#!/usr/bin/python3
"""Guest speed on the bundled hypervisor next to the same loop compiled natively, the
time from vmwp start to the guest's first console line, and the host memory a VM costs
beyond its guest RAM. Prints one JSON object."""
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import BUILD, HvHost, wait_for  # noqa: E402

NATIVE = BUILD / "bench" / "bench-cpu-native"


def native_rate(iterations):
    out = subprocess.run([str(NATIVE), str(iterations)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def instructions_per_iteration():
    """Counted, not timed: callgrind's instruction totals for N and 2N iterations."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    for n in (1 << 20, 1 << 21):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(NATIVE), str(n)],
                             capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", out.stderr)
        if not m:
            return None
        totals.append(int(m.group(1)))
    return (totals[1] - totals[0]) / (1 << 20)


def rss_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    natives = [native_rate(1 << 26)["iterations_per_sec"] for _ in range(3)]
    native = statistics.median(natives)
    ipi = instructions_per_iteration()

    with HvHost(memory="1GB", lps=2) as host:
        hvd_anon_before = rss_kib(host.hvd.pid, "RssAnon")
        t0 = time.monotonic()
        vm = host.start_vm("speed", workload="cpu", memory="64MB", wait_boot=False)
        wait_for(lambda: vm.console().strip() != "", 30, interval=0.001, what="the first console line")
        first_line_s = time.monotonic() - t0
        time.sleep(seconds)
        rates = [int(r) for r in re.findall(r"^cpu: vp=0 batches=\d+ iterations=\d+ rate=(\d+)/s", vm.console(),
                                            re.M)]
        steady = rates[1:] or rates  # the first interval includes boot
        guest = statistics.median(steady) if steady else 0
        part = host.partition(host.counters(0.5), "speed")
        hvd_anon_after = rss_kib(host.hvd.pid, "RssAnon")
        vmwp_anon = rss_kib(vm.proc.pid, "RssAnon")
        corrupt = "CORRUPTION" in vm.console()

    result = {
        "benchmark": "guest_speed",
        "native_iterations_per_sec": round(native),
        "guest_iterations_per_sec": round(guest),
        "guest_to_native_ratio": round(guest / native, 4) if native else None,
        "instructions_per_iteration": round(ipi, 2) if ipi else None,
        "native_instructions_per_sec": round(native * ipi) if ipi else None,
        "guest_instructions_per_sec": round(guest * ipi) if ipi else None,
        "guest_rate_samples": len(steady),
        "vmwp_start_to_first_console_line_ms": round(first_line_s * 1000, 1),
        "per_vm_host_overhead_bytes": {
            "hvd_anon_delta": (hvd_anon_after - hvd_anon_before) * 1024,
            "vmwp_anon": vmwp_anon * 1024,
            "guest_resident": part["resident_bytes"] if part else None,
        },
        "corruption_seen": corrupt,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
