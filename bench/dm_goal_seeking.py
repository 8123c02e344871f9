#!/usr/bin/python3
"""Goal seeking against plain pressure-equalising, end to end through vmmsd on the bundled guest: two
VMs with the same workload on the same host at the same time — memsoak commits 192 MiB and rewrites
only 96 MiB of it (memsoak_hot_mb), pausing 20 ms between passes — one with Set-VMMemory
-GoalSeeking. Over the run from the moment both soaks reached their target, prints JSON:

- memory: each VM's time-weighted mean assigned memory (Get-VM every 0.5 s) and at the end; freed =
  plain's mean minus goal's (MiB) and as a share of plain's.
- passes: memsoak passes per second of guest time (its pass lines: pass number, reference time),
  per VM; slowdown = 1 - goal / plain (%). Both share the host's CPU alike, so the difference is
  what paging costs the goal-seeking guest.
- paging: the goal VM's page-in rate (KiB/s) over the whole window, the worst 10 s of it, and the
  share of 10 s windows over goal seeking's threshold (1 MiB/s).
- bound: the slowdown the README and balancer-goal.c state (SLOWDOWN_BOUND_PCT) and whether it held.

--seconds N (default 240) after both reached their target; --pause-ms N (default 20); --slice-s N
(default 30) for the timeline; --control: goal seeking off on both (what the comparison itself differs
by); --layout: no vmmsd and no goal seeking, two static VMs with a 96 MiB soak rewriting 40 MiB, one in
64 MiB (it pages while it grows, and its hot pages come back into scattered frames) and one in 128 MiB
(no paging): passes/s of each once page-ins have stopped, what a hot set that went through paging
costs on this engine whatever the balancer does."""
import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from test_dynamic_memory import start_vm  # noqa: E402
from vmmsd_host import VmmsdHost  # noqa: E402
from vmms_host import HvHost, wait_for  # noqa: E402

MiB = 1 << 20
PAGE = 4096
THRESHOLD = 1 * MiB  # balancer-goal.c's paging threshold, bytes/s
SLOWDOWN_BOUND_PCT = 20
SOAK, HOT = 192, 96
PASS = re.compile(r"^memsoak: pass (\d+) committed=\d+ resident=\d+ paged_out=\d+ page_in=(\d+) page_out=\d+ "
                  r"pass_ms=\d+ hot=\d+ t=(\d+)$", re.M)


def passes(text):
    """(pass, page_in pages, reference time ns) of each pass line."""
    return [tuple(map(int, m)) for m in PASS.findall(text)]


def time_weighted_mean(samples, t0, t1):
    """Mean of a step function sampled as (t, value) over [t0, t1]."""
    area, last_t, last_v = 0.0, t0, None
    for t, v in samples:
        if t <= t0:
            last_v = v
            continue
        if t > t1:
            break
        if last_v is not None:
            area += last_v * (t - last_t)
        last_t, last_v = t, v
    area += (last_v or 0) * (t1 - last_t)
    return area / (t1 - t0)


def pass_rate(lines):
    first, last = lines[0], lines[-1]
    return (last[0] - first[0]) / ((last[2] - first[2]) / 1e9)


def paging(lines, window_s=10):
    """Mean page-in KiB/s over the lines, the worst window_s of it, and the share of windows over THRESHOLD."""
    first, last = lines[0], lines[-1]
    mean = (last[1] - first[1]) * PAGE / ((last[2] - first[2]) / 1e9)
    rates, j = [], 0
    for i, a in enumerate(lines):
        while j < len(lines) and lines[j][2] - a[2] < window_s * 1e9:
            j += 1
        if j == len(lines):
            break
        b = lines[j]
        rates.append((b[1] - a[1]) * PAGE / ((b[2] - a[2]) / 1e9))
    return {"page_in_kib_per_s": round(mean / 1024, 1),
            "worst_10s_kib_per_s": round(max(rates) / 1024, 1) if rates else None,
            "windows_over_threshold_pct": round(100 * sum(r > THRESHOLD for r in rates) / len(rates), 1)
            if rates else None}


def timeline(samples, t0, lines, slice_s):
    """Per slice of slice_s from the start of the window: each VM's mean assigned MiB, passes/s and the goal
    VM's page-in KiB/s (guest time for the passes, host time for Get-VM's figures)."""
    out, start = [], {n: lines[n][0][2] for n in lines}
    for k in range(int((lines["goal"][-1][2] - start["goal"]) / 1e9 // slice_s)):
        row = {"from_s": k * slice_s}
        for n in lines:
            part = [p for p in lines[n] if k * slice_s * 1e9 <= p[2] - start[n] <= (k + 1) * slice_s * 1e9]
            if len(part) < 2:
                break
            row[f"{n}_mib"] = round(time_weighted_mean(samples[n], t0 + k * slice_s, t0 + (k + 1) * slice_s) / MiB)
            row[f"{n}_passes_per_s"] = round(pass_rate(part), 2)
            if n == "goal":
                row["goal_page_in_kib_per_s"] = round(
                    (part[-1][1] - part[0][1]) * PAGE / ((part[-1][2] - part[0][2]) / 1e9) / 1024)
        else:
            row["slowdown_pct"] = round(100 * (1 - row["goal_passes_per_s"] / row["plain_passes_per_s"]), 1)
            out.append(row)
    return out


def layout(seconds):
    boot = "memsoak_mb=96 memsoak_step_mb=16 memsoak_step_ms=50 memsoak_hot_mb=40 memsoak_pause_ms=20"
    with HvHost(memory="512MB") as host:
        vms = {"paged": start_vm(host, "paged", "64MB", "64MB", boot)[0],
               "never_paged": start_vm(host, "never", "128MB", "128MB", boot)[0]}
        for vm in vms.values():
            vm.wait_console(r"^memsoak: reached", timeout=180)
        # Settled: page_in unchanged over `seconds` of guest time.
        def quiet(vm):
            p = passes(vm.console())
            first = next((x for x in reversed(p) if p[-1][2] - x[2] >= seconds * 1e9), None)
            return (first, p[-1]) if first and first[1] == p[-1][1] else None
        spans = {n: wait_for(lambda: quiet(vm), 300, interval=1, what=f"{n} without page-ins")
                 for n, vm in vms.items()}
    rate = {n: (b[0] - a[0]) / ((b[2] - a[2]) / 1e9) for n, (a, b) in spans.items()}
    return {"workload": boot, "seconds": seconds,
            "passes_per_s": {n: round(r, 2) for n, r in rate.items()},
            "page_in_pages": {n: spans[n][1][1] for n in spans},
            "slowdown_pct": round(100 * (1 - rate["paged"] / rate["never_paged"]), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=240)
    parser.add_argument("--pause-ms", type=int, default=20)
    parser.add_argument("--slice-s", type=int, default=30)
    parser.add_argument("--control", action="store_true",
                        help="goal seeking off on both VMs: what the comparison itself differs by")
    parser.add_argument("--layout", action="store_true", help="a paged hot set against one never paged")
    opts = parser.parse_args()
    if opts.layout:
        print(json.dumps(layout(40), indent=2))
        return 0
    boot = (f"memsoak_mb={SOAK} memsoak_step_mb=32 memsoak_step_ms=100 memsoak_hot_mb={HOT} "
            f"memsoak_pause_ms={opts.pause_ms}")
    with VmmsdHost(hvd_memory="1GB") as host:
        pb = host.pb
        ids = {}
        for name, goal in (("goal", True), ("plain", False)):
            vm = host.api.CreateVm(pb.CreateVmRequest(
                name=name, workload="memsoak", boot_args=boot,
                memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=256 * MiB,
                                         minimum_bytes=32 * MiB, maximum_bytes=512 * MiB, buffer=20,
                                         goal_seeking=goal and not opts.control)), timeout=10)
            ids[name] = vm.id
            host.api.StartVm(pb.VmRef(vm=name), timeout=30)
        samples = {n: [] for n in ids}

        def sample():
            for n in ids:
                samples[n].append((time.monotonic(), host.api.GetVm(pb.VmRef(vm=n), timeout=5).assigned_memory_bytes))

        while not all("memsoak: reached" in host.console(i) for i in ids.values()):
            sample()
            time.sleep(0.5)
        t0 = time.monotonic()
        first_pass = {n: len(passes(host.console(i))) for n, i in ids.items()}
        while time.monotonic() - t0 < opts.seconds:
            sample()
            time.sleep(0.5)
        t1 = time.monotonic()
        lines = {n: passes(host.console(i))[first_pass[n]:] for n, i in ids.items()}
        corrupt = any("CORRUPTION" in host.console(i) for i in ids.values())

    mean = {n: time_weighted_mean(samples[n], t0, t1) for n in ids}
    rate = {n: pass_rate(lines[n]) for n in ids}
    slowdown = 100 * (1 - rate["goal"] / rate["plain"])
    result = {
        "workload": boot, "seconds": opts.seconds, "control": opts.control,
        "memory": {
            "goal_mean_mib": round(mean["goal"] / MiB, 1), "plain_mean_mib": round(mean["plain"] / MiB, 1),
            "goal_end_mib": samples["goal"][-1][1] >> 20, "plain_end_mib": samples["plain"][-1][1] >> 20,
            "freed_mib": round((mean["plain"] - mean["goal"]) / MiB, 1),
            "freed_pct": round(100 * (1 - mean["goal"] / mean["plain"]), 1),
        },
        "passes": {"goal_per_s": round(rate["goal"], 2), "plain_per_s": round(rate["plain"], 2),
                   "slowdown_pct": round(slowdown, 1)},
        "paging": {"goal": paging(lines["goal"]), "plain": paging(lines["plain"]),
                   "threshold_kib_per_s": THRESHOLD // 1024},
        "timeline": timeline(samples, t0, lines, opts.slice_s),
        "bound": {"slowdown_pct": SLOWDOWN_BOUND_PCT, "holds": slowdown <= SLOWDOWN_BOUND_PCT and not corrupt},
        "corruption": corrupt,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["bound"]["holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
