#!/usr/bin/python3
"""Dynamic Memory convergence after a step change in demand, end to end through vmmsd:
a VM at rest (at its 64 MiB minimum, 1 GiB maximum, its guest committing about 1 MiB)
suddenly commits 512 MiB more in one step, holds it for 20 s, then releases it. (Until
issue 16 the workload was memsoak_mb=576 with 512 MiB steps: a second step of 64 MiB
eight seconds after the first, which the up figure then measured.) Measures the seconds from the guest's report of the
new demand until assigned memory settles within one dead band of its target (committed x
1.2, the default buffer) — up, and then down again after the release — and prints the
timeline of the step up: the guest's first prompt report (its console line), the report
reaching vmmsd (Get-VM's demand), each add vmmsd sent (its memory event), each hot-add the
guest onlined (its console line) and each assigned figure vmmsd saw; and of the step down:
each remove sent, the guest filling each balloon, each assigned figure. Prints JSON.
--runs N repeats the single-VM run N times and adds the median and worst of each figure.

--contended: two such VMs with staggered steps on a pool too small for both; counts how
often each VM's assigned memory changes direction (per minute): hysteresis at work."""
import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmmsd_host import VmmsdHost  # noqa: E402

MiB = 1 << 20
POLL_S = 0.05


class ConsoleTail(threading.Thread):
    """Stamps each new console line with the host's monotonic time as it appears."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.lines, self.stop = path, [], False

    def run(self):
        pos, partial = 0, b""
        while not self.stop:
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                    pos += len(data)
            except OSError:
                data = b""
            now = time.monotonic()
            *complete, partial = (partial + data).split(b"\n")
            self.lines += [(now, line.decode(errors="replace")) for line in complete]
            time.sleep(0.01)


def settle_time(samples, t_from, target_of):
    """First time after t_from from which assigned stays within 4 MiB + 1/64 of the target."""
    after = [s for s in samples if s[0] >= t_from]
    for i, (t, assigned, demand) in enumerate(after):
        if all(abs(a - target_of(d)) <= 4 * MiB + a / 64 for _, a, d in after[i:]):
            return round(t - t_from, 2)
    return None


def target(d):
    return min(max(int(d * 1.2) // (2 * MiB) * (2 * MiB), 64 * MiB), 1024 * MiB)


def direction_changes(assigned):
    """Reversals of the assigned figure's direction (ignoring runs of equal values)."""
    return len(direction_change_points(assigned))


def direction_change_points(assigned):
    """Indexes at which the assigned figure turns back, with the figures before and after."""
    points, last = [], 0
    for i, (a, b) in enumerate(zip(assigned, assigned[1:])):
        d = (b > a) - (b < a)
        if d and last and d != last:
            points.append((i + 1, a, b))
        if d:
            last = d
    return points


def start_vm(host, name, boot_args, maximum=1024 * MiB):
    pb = host.pb
    vm = host.api.CreateVm(pb.CreateVmRequest(
        name=name, workload="memsoak", boot_args=boot_args,
        memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=128 * MiB,
                                 minimum_bytes=64 * MiB, maximum_bytes=maximum, buffer=20)), timeout=10)
    host.api.StartVm(pb.VmRef(vm=name), timeout=30)
    tail = ConsoleTail(host.state / "logs" / f"{vm.id}.console.log")
    tail.start()
    return vm.id, tail


def poll(host, names, seconds):
    pb = host.pb
    t0 = time.monotonic()
    samples = {n: [] for n in names}
    while time.monotonic() - t0 < seconds:
        for n in names:
            vm = host.api.GetVm(pb.VmRef(vm=n), timeout=5)
            samples[n].append((time.monotonic(), vm.assigned_memory_bytes, vm.memory_demand_bytes))
        time.sleep(POLL_S)
    return samples


def memory_events(host, name, wall_to_mono):
    pb = host.pb
    events = host.api.ListEvents(pb.ListEventsRequest(vm=name, limit=10000), timeout=10).events
    return [(e.time_unix_ms / 1000 + wall_to_mono, e.message) for e in events if e.kind == "memory"]


def demand_changes(samples, t_from, t_to):
    out, last = [], None
    for t, a, d in samples:
        if t_from - 1.5 < t < t_to and d != last:
            out.append((t, a, d))
            last = d
    return out[:12]


def step_timeline(samples, events, console, t_step, t_end):
    """Milestones of one step up, in seconds after t_step (the first report of the step at vmmsd)."""
    rel = lambda t: round(t - t_step, 3)  # noqa: E731
    prompt = [t for t, line in console if line.startswith("dm: prompt report") and t_step - 3 < t < t_end]
    adds = [(t, m) for t, m in events if m.startswith("adding") and t_step - 0.5 < t < t_end]
    online = [(t, line) for t, line in console if line.startswith("dm: hot-add") and t_step - 0.5 < t < t_end]
    seen, last = [], None
    for t, a, _ in samples:
        if t_step - 0.5 < t < t_end and a != last:
            if last is not None:
                seen.append((rel(t), a // MiB))
            last = a
    timeline = {
        "demand_at_vmmsd_mib": [(rel(t), d // MiB) for t, _, d in demand_changes(samples, t_step, t_end)],
        "guest_prompt_reports": [rel(t) for t in prompt[:8]],
        "report_at_vmmsd": 0.0,
        "adds_sent": [(rel(t), int(re.match(r"adding (\d+)", m).group(1))) for t, m in adds],
        "guest_onlined": [(rel(t), int(re.search(r"accepted=(\d+)", line).group(1)) // MiB)
                          for t, line in online],
        "assigned_seen_mib": seen,
    }
    if adds and online:
        timeline["first_add_to_guest_online_s"] = round(online[0][0] - adds[0][0], 3)
    return timeline


def single(seconds):
    with VmmsdHost(hvd_memory="2GB", hvd_lps=2) as host:
        wall_to_mono = time.monotonic() - time.time()
        _, tail = start_vm(host, "step",
                           "memsoak_mb=512 memsoak_step_mb=512 memsoak_step_ms=8000 memsoak_hold_s=20")
        samples = poll(host, ["step"], seconds)["step"]
        events = memory_events(host, "step", wall_to_mono)
        tail.stop = True
    t0 = samples[0][0]
    rest = min(d for _, _, d in samples if d > 0) if any(d for _, _, d in samples) else 0
    step_at = next((t for t, _, d in samples if d >= rest + 16 * MiB), None)
    up_at = next((t for t, _, d in samples if d >= 500 * MiB), None)
    down_at = next((t for t, _, d in samples if up_at and t > up_at and d < 200 * MiB), None)
    peak = max(samples, key=lambda s: s[1])
    result = {
        "benchmark": "dm_convergence",
        "step_up_bytes": 512 * MiB,
        "seconds_to_converge_up": settle_time([s for s in samples if not down_at or s[0] < down_at], up_at,
                                              target) if up_at else None,
        "seconds_to_converge_down": settle_time(samples, down_at, target) if down_at else None,
        "seconds_from_first_report_to_converged_up":
            settle_time([s for s in samples if not down_at or s[0] < down_at], step_at, target)
            if step_at else None,
        "peak_assigned_bytes": peak[1],
        "final_assigned_bytes": samples[-1][1],
        "final_demand_bytes": samples[-1][2],
        "samples": len(samples),
        "step_seen_at_s": round(step_at - t0, 2) if step_at else None,
        "direction_changes": direction_changes([a for _, a, _ in samples]),
    }
    if step_at:
        result["timeline_up"] = step_timeline(samples, events, tail.lines, step_at,
                                              down_at or samples[-1][0])
    if down_at:
        removes = [(round(t - down_at, 3), int(re.match(r"removing (\d+)", m).group(1)))
                   for t, m in events if m.startswith("removing") and t > down_at - 0.5]
        balloons = [(round(t - down_at, 3), int(m.group(1)) * 4096 // MiB, int(m.group(2)) / 1000)
                    for t, line in tail.lines if t > down_at - 0.5
                    for m in [re.search(r"dm: balloon request=\d+ asked=\d+ took=(\d+) in (\d+) us", line)] if m]
        seen, last = [], None
        for t, a, _ in samples:
            if t > down_at - 0.5 and a != last:
                if last is not None:
                    seen.append((round(t - down_at, 3), a // MiB))
                last = a
        # From vmmsd seeing the release: each remove sent (MiB), the guest filling each balloon
        # (MiB taken, ms), each assigned figure vmmsd saw.
        result["timeline_down"] = {"removes_sent": removes[:12], "guest_balloons_mib_ms": balloons[:12],
                                   "assigned_seen_mib": seen[:12]}
    return result


def contended(seconds):
    """Two VMs on a pool that cannot give both their step: each steps up in turn and holds."""
    with VmmsdHost(hvd_memory="1GB", hvd_lps=2, extra=("--memory-reserve", "64MB")) as host:
        start_vm(host, "a", "memsoak_mb=640 memsoak_step_mb=320 memsoak_step_ms=3000")
        start_vm(host, "b", "memsoak_mb=640 memsoak_step_mb=160 memsoak_step_ms=4000")
        samples = poll(host, ["a", "b"], seconds)
    minutes = seconds / 60
    result = {"benchmark": "dm_convergence_contended", "seconds": seconds, "pool_bytes": 1024 * MiB}
    for n, s in samples.items():
        settled = [x for x in s if x[0] - s[0][0] >= seconds / 3]  # after both have stepped up
        result[n] = {
            "direction_changes": direction_changes([a for _, a, _ in s]),
            "direction_changes_at_s_mib": [(round(s[i][0] - s[0][0], 2), a // MiB, b // MiB)
                                           for i, a, b in direction_change_points([a for _, a, _ in s])],
            "direction_changes_per_minute": round(direction_changes([a for _, a, _ in s]) / minutes, 2),
            "direction_changes_per_minute_settled":
                round(direction_changes([a for _, a, _ in settled]) / (minutes * 2 / 3), 2),
            "final_assigned_mib": s[-1][1] // MiB,
            "final_demand_mib": s[-1][2] // MiB,
            "min_assigned_mib_settled": min(a for _, a, _ in settled) // MiB,
            "max_assigned_mib_settled": max(a for _, a, _ in settled) // MiB,
        }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contended", action="store_true", help="two VMs competing for a short pool")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--runs", type=int, default=1, help="repeat the single-VM run; median and worst")
    args = parser.parse_args()
    if args.contended:
        result = contended(args.seconds or 60)
    elif args.runs > 1:
        runs = [single(args.seconds or 45) for _ in range(args.runs)]
        result = {"benchmark": "dm_convergence", "runs": runs}
        for key in ("seconds_to_converge_up", "seconds_to_converge_down"):
            values = [r[key] for r in runs]
            done = [v for v in values if v is not None]  # None: never settled in the run
            result[key] = {"all": values, "median": statistics.median(done) if done else None,
                           "worst": None if None in values else max(values)}
    else:
        result = single(args.seconds or 45)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
