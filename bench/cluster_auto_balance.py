#!/usr/bin/python3
"""The leader's auto-balance over time, on three private etcd members and three vmmsd hosts
on this machine (test_cluster_balance.py's case): hosta's 256 MB pool is over-committed by
three Dynamic Memory memory soakers, every host runs --cluster-auto-balance THRESHOLD (or
none with --off). Once a second it samples each host's Average Pressure as its cluster
record says it and where each VM runs; it stops once every host has been under the
threshold for --settle samples in a row (or after --seconds). Writes CSV and a matplotlib
plot (SVG and PNG) of per-host pressure over time with the moves marked, then prints a
JSON summary. With --cpu the over-commitment is by CPU instead: four CPU burners of one VP
on hosta's two LPs (every pool 1 GB), and once hosta's CPU Wait Time Per Dispatch is over
--cpu-wait µs, vmctl Set-Cluster turns auto-balance on for CPU only (the pressure threshold
at its maximum); the figure sampled and plotted is each host's CPU wait. Usage:
cluster_auto_balance.py [--threshold 100] [--seconds 240] [--off] [--cpu [--cpu-wait 1000]]
[--out cluster-auto-balance]."""
import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_hosts import HOST_NAMES, ClusterHosts, cluster_vms, nodes, states, vmctl  # noqa: E402
from test_cluster_balance import SMALL_POOL, SOAK, SOAKERS  # noqa: E402
from vmms_host import wait_for  # noqa: E402

MiB = 1 << 20
COLOURS = {"hosta": "#d62728", "hostb": "#1f77b4", "hostc": "#2ca02c"}


def write_plot(samples, moves, path, title, threshold, key="pressure", ylabel="host Average Pressure (%)"):
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "vmms"
    import matplotlib.pyplot as plt

    fig, (pres, count) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5),
                                     gridspec_kw={"height_ratios": (3, 1)})
    for name in HOST_NAMES:
        rows = [s for s in samples if s["host"] == name]
        pres.plot([s["t"] for s in rows], [s[key] for s in rows], "-", color=COLOURS[name], label=name)
        count.step([s["t"] for s in rows], [s["vms"] for s in rows], where="post", color=COLOURS[name],
                   label=name)
    pres.axhline(threshold, color="#888888", linewidth=1, linestyle="-.", label=f"threshold {threshold}")
    for t, vm, src, dst in moves:
        for ax in (pres, count):
            ax.axvline(t, color="#444444", linewidth=1, linestyle=(0, (2, 2)))
        pres.annotate(f"{vm}: {src}→{dst}", (t, threshold), xytext=(4, 8), textcoords="offset points",
                      rotation=90, fontsize=8)
    pres.set_ylabel(ylabel)
    count.set_ylabel("VMs running")
    count.set_xlabel("seconds")
    pres.set_title(title)
    pres.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threshold", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=240)
    ap.add_argument("--settle", type=int, default=10, help="samples in a row with every host under the threshold")
    ap.add_argument("--off", action="store_true", help="no --cluster-auto-balance: nothing should move")
    ap.add_argument("--cpu", action="store_true", help="over-committed by CPU: four burners on hosta")
    ap.add_argument("--cpu-wait", type=int, default=1000, help="with --cpu: the CPU wait threshold, µs")
    ap.add_argument("--out", default="cluster-auto-balance")
    a = ap.parse_args()
    # What is judged: each host's Average Pressure (%), or with --cpu its CPU wait (µs).
    key, threshold = ("cpu_wait_us", a.cpu_wait) if a.cpu else ("pressure", a.threshold)

    class Bench(ClusterHosts):
        pass

    Bench.setUpClass()
    hosts = {}
    samples, moves = [], []
    extra = () if a.off or a.cpu else ("--cluster-auto-balance", str(a.threshold))
    vm_names = [f"burn{i}" for i in range(4)] if a.cpu else list(SOAKERS)
    try:
        for name in HOST_NAMES:
            small = name == "hosta" and not a.cpu
            hosts[name] = Bench.join(name, hvd_memory=SMALL_POOL if small else "1GB", extra=extra)
        h = hosts["hosta"]
        wait_for(lambda: states(h) == {n: "UP" for n in HOST_NAMES}, 60, interval=0.2, what="all Up")
        for name in vm_names:
            if a.cpu:
                h.create(name, startup=64 * MiB, workload="cpu")
            else:
                h.create(name, startup=64 * MiB, workload="memsoak", dynamic_memory_enabled=True,
                         minimum_bytes=64 * MiB, maximum_bytes=256 * MiB, buffer=20, priority=50,
                         paging_bytes=256 * MiB, boot_args=SOAK)
            h.api.StartVm(h.pb.VmRef(vm=name), timeout=60)
        t0 = time.monotonic()
        where = {name: "hosta" for name in vm_names}
        turned_on = None
        settled = 0
        seen_over = False
        while time.monotonic() - t0 < a.seconds:
            t = round(time.monotonic() - t0, 1)
            listed = nodes(hosts["hostb"])
            placed = {name: v.host for name, v in cluster_vms(hosts["hostb"]).items()}
            for name in HOST_NAMES:
                samples.append({"t": t, "host": name, "pressure": listed[name].average_pressure,
                                "cpu_wait_us": round(listed[name].cpu_wait_per_dispatch_ns / 1000),
                                "available_mib": listed[name].available_memory_bytes // MiB,
                                "free_mib": listed[name].memory_free_bytes // MiB,
                                "vms": sum(1 for host in placed.values() if host == name)})
            for vm, host in placed.items():
                if where.get(vm) != host:
                    moves.append((t, vm, where.get(vm), host))
                    where[vm] = host
            figure = {n: (v.cpu_wait_per_dispatch_ns / 1000 if a.cpu else v.average_pressure)
                      for n, v in listed.items()}
            seen_over = seen_over or figure["hosta"] > threshold
            if a.cpu and not a.off and seen_over and turned_on is None:
                r = vmctl(hosts["hostb"], "Set-Cluster", "-AutoBalance", "$true", "-AutoBalanceThreshold", "1000",
                          "-AutoBalanceCpuWait", str(a.cpu_wait))
                if r.returncode != 0:
                    raise SystemExit(f"Set-Cluster failed: {r.stderr}")
                turned_on = t
            under = all(v < threshold for v in figure.values())
            settled = settled + 1 if seen_over and under else 0
            if settled >= a.settle:
                break
            time.sleep(max(0.0, t0 + t + 1.0 - time.monotonic()))
        asks = [e.message for hh in hosts.values()
                for e in hh.api.ListEvents(hh.pb.ListEventsRequest(limit=10000), timeout=10).events
                if e.kind == "cluster-balance" and "asks" in e.message]
    finally:
        for hh in hosts.values():
            hh.close()
        Bench.tearDownClass()
    with open(a.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "host", "pressure", "cpu_wait_us", "available_mib", "free_mib",
                                          "vms"])
        w.writeheader()
        w.writerows(samples)
    if a.cpu:
        title = (f"Auto-balance by CPU {'off' if a.off else f'on at {turned_on} s (CPU wait {a.cpu_wait} µs)'}: "
                 f"four one-VP burners on hosta's 2 LPs")
        ylabel = "host CPU Wait Time Per Dispatch (µs)"
    else:
        title = (f"Auto-balance {'off' if a.off else f'on (threshold {a.threshold})'}: hosta {SMALL_POOL} pool, "
                 f"three memory soakers; hostb, hostc 1 GB")
        ylabel = "host Average Pressure (%)"
    for ext in (".svg", ".png"):
        write_plot(samples, moves, a.out + ext, title, threshold, key, ylabel)
    peak = max((s[key] for s in samples if s["host"] == "hosta"), default=0)
    last_t = samples[-1]["t"] if samples else 0
    print(json.dumps({
        "benchmark": "cluster_auto_balance", "auto_balance": None if a.off else 1000 if a.cpu else a.threshold,
        "by": "cpu" if a.cpu else "memory", "cpu_wait_threshold_us": a.cpu_wait if a.cpu else None,
        "turned_on_at_s": turned_on,
        "csv": a.out + ".csv", "svg": a.out + ".svg", "png": a.out + ".png",
        f"hosta_peak_{key}": peak, "moves": [{"t_s": t, "vm": vm, "from": s, "to": d} for t, vm, s, d in moves],
        "asks": asks, "balanced": settled >= a.settle, "seconds_sampled": last_t,
        f"end_{key}": {s["host"]: s[key] for s in samples if s["t"] == last_t},
        "end_vms": {s["host"]: s["vms"] for s in samples if s["t"] == last_t}}, indent=2))


if __name__ == "__main__":
    main()
