#!/usr/bin/python3
"""Dispatch overhead and fairness of hvd's VP scheduler with 2, 16 and 256 CPU-bound
VPs (guest `cpu` workloads, equal weights) on 2 LPs, for the share policy and, as the
baseline, round-robin. Prints one JSON object.

- dispatch_overhead_pct: LP time spent scheduling (lock, policy, dispatch; hvd's
  scheduler_ns, i.e. hypervisor time outside hypercalls) / all LP time.
- fairness_error_pct: max |VP run time - mean| / mean over the sample; rms alongside.
  With n VPs on 2 LPs a VP gets 2/n of the sample, so the error one slice of lag
  allows is slice / (sample * 2 / n): it grows with n for any slice-based scheduler,
  and `one_slice_error_pct` says how big that quantum is.

- policy_ns_per_decision: the policy alone (bench-sched-policy: vp_put + pick_next on
  a simulated clock, timed in thread CPU time), free of host noise; the rest of
  dispatch_overhead_pct is the mechanism (lock, clock reads, thread wake-ups) and the
  host descheduling the LP thread inside it (host_wait_pct says how busy the host was).

Usage: sched_fairness.py [SECONDS_PER_SAMPLE (default 20)]"""
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import BUILD, HvHost, wait_for  # noqa: E402

SLICE_MS = 10
LAYOUTS = {2: (1, 2), 16: (2, 8), 256: (8, 32)}  # VPs: (VMs, VPs per VM)


def rss_kib(pid, field="RssAnon"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def all_dispatched(host, names):
    counters = host.counters(0.05)
    for name in names:
        part = host.partition(counters, name)
        if not part or any(vp["dispatches"] == 0 for vp in part["vps"]):
            return False
    return True


def measure(n_vps, scheduler, seconds):
    vms, vps_per_vm = LAYOUTS[n_vps]
    names = [f"f{i}" for i in range(vms)]
    with HvHost(memory="2GB", lps=2, slice_ms=SLICE_MS, extra=["--scheduler", scheduler]) as host:
        rss_before = rss_kib(host.hvd.pid)
        for name in names:
            host.start_vm(name, workload="cpu", vps=vps_per_vm, memory="64MB", wait_boot=False)
        for vm in host.vms:
            vm.wait_console(r"^vmms-guest: boot ", timeout=120)
        wait_for(lambda: all_dispatched(host, names), 300, interval=0.5, what="every VP to run")
        time.sleep(2)  # past the boot's spin-waits
        counters = host.counters(seconds)
        rss_after = rss_kib(host.hvd.pid)
        corrupt = any("CORRUPTION" in vm.console() for vm in host.vms)
    runs = [vp["total_run_pct"] for name in names for vp in next(
        p for p in counters["partitions"] if p["name"] == name)["vps"]]
    mean = statistics.mean(runs)
    lps = counters["lps"]
    return {
        "vps": n_vps,
        "scheduler": scheduler,
        "sample_seconds": seconds,
        "dispatch_overhead_pct": round(statistics.mean(lp["scheduler_pct"] for lp in lps), 4),
        "hypervisor_pct": round(statistics.mean(lp["hypervisor_run_pct"] for lp in lps), 4),
        "lp_busy_pct": round(statistics.mean(lp["total_run_pct"] for lp in lps), 2),
        "dispatches_per_sec": round(sum(lp["dispatches_per_sec"] for lp in lps), 1),
        "mean_vp_pct_of_one_lp": round(mean, 3),
        "fairness_error_pct": round(100 * max(abs(r - mean) for r in runs) / mean, 2),
        "fairness_rms_pct": round(100 * statistics.pstdev(runs) / mean, 2),
        "one_slice_error_pct": round(100 * SLICE_MS / (seconds * 1000 * 2 / n_vps), 2),
        "hvd_anon_bytes_per_vp": (rss_after - rss_before) * 1024 // n_vps,
        "host_wait_pct": round(statistics.mean(lp["host_wait_pct"] for lp in lps), 2),
        "corruption_seen": corrupt,
    }


def policy_costs():
    out = subprocess.run([str(BUILD / "bench" / "bench-sched-policy")], check=True, capture_output=True, text=True)
    return {(r["scheduler"], r["vps"]): r["ns_per_decision"] for r in json.loads(out.stdout)}


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    costs = policy_costs()
    results = [measure(n, scheduler, seconds) for n in (2, 16, 256) for scheduler in ("share", "round-robin")]
    for r in results:
        r["policy_ns_per_decision"] = costs[(r["scheduler"], r["vps"])]
    print(json.dumps({"benchmark": "sched_fairness", "lps": 2, "slice_ms": SLICE_MS, "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
