#!/usr/bin/python3
"""The leader's auto-balance over time, on three private etcd members and three vmmsd hosts
on this machine (test_cluster_balance.py's case): hosta's 256 MB pool is over-committed by
three Dynamic Memory memory soakers, every host runs --cluster-auto-balance THRESHOLD (or
none with --off). Once a second it samples each host's Average Pressure as its cluster
record says it and where each VM runs; it stops once every host has been under the
threshold for --settle samples in a row (or after --seconds). Writes CSV and a matplotlib
plot (SVG and PNG) of per-host pressure over time with the moves marked, then prints a
JSON summary. Usage: cluster_auto_balance.py [--threshold 100] [--seconds 240] [--off]
[--out cluster-auto-balance]."""
import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_hosts import HOST_NAMES, ClusterHosts, cluster_vms, nodes, states  # noqa: E402
from test_cluster_balance import SMALL_POOL, SOAK, SOAKERS  # noqa: E402
from vmms_host import wait_for  # noqa: E402

MiB = 1 << 20
COLOURS = {"hosta": "#d62728", "hostb": "#1f77b4", "hostc": "#2ca02c"}


def write_plot(samples, moves, path, title, threshold):
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "vmms"
    import matplotlib.pyplot as plt

    fig, (pres, count) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5),
                                     gridspec_kw={"height_ratios": (3, 1)})
    for name in HOST_NAMES:
        rows = [s for s in samples if s["host"] == name]
        pres.plot([s["t"] for s in rows], [s["pressure"] for s in rows], "-", color=COLOURS[name], label=name)
        count.step([s["t"] for s in rows], [s["vms"] for s in rows], where="post", color=COLOURS[name],
                   label=name)
    pres.axhline(threshold, color="#888888", linewidth=1, linestyle="-.", label=f"threshold {threshold}")
    for t, vm, src, dst in moves:
        for ax in (pres, count):
            ax.axvline(t, color="#444444", linewidth=1, linestyle=(0, (2, 2)))
        pres.annotate(f"{vm}: {src}→{dst}", (t, threshold), xytext=(4, 8), textcoords="offset points",
                      rotation=90, fontsize=8)
    pres.set_ylabel("host Average Pressure (%)")
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
    ap.add_argument("--out", default="cluster-auto-balance")
    a = ap.parse_args()

    class Bench(ClusterHosts):
        pass

    Bench.setUpClass()
    hosts = {}
    samples, moves = [], []
    extra = () if a.off else ("--cluster-auto-balance", str(a.threshold))
    try:
        for name in HOST_NAMES:
            hosts[name] = Bench.join(name, hvd_memory=SMALL_POOL if name == "hosta" else "1GB", extra=extra)
        h = hosts["hosta"]
        wait_for(lambda: states(h) == {n: "UP" for n in HOST_NAMES}, 60, interval=0.2, what="all Up")
        for name in SOAKERS:
            h.create(name, startup=64 * MiB, workload="memsoak", dynamic_memory_enabled=True,
                     minimum_bytes=64 * MiB, maximum_bytes=256 * MiB, buffer=20, priority=50,
                     paging_bytes=256 * MiB, boot_args=SOAK)
            h.api.StartVm(h.pb.VmRef(vm=name), timeout=60)
        t0 = time.monotonic()
        where = {name: "hosta" for name in SOAKERS}
        settled = 0
        seen_over = False
        while time.monotonic() - t0 < a.seconds:
            t = round(time.monotonic() - t0, 1)
            listed = nodes(hosts["hostb"])
            placed = {name: v.host for name, v in cluster_vms(hosts["hostb"]).items()}
            for name in HOST_NAMES:
                samples.append({"t": t, "host": name, "pressure": listed[name].average_pressure,
                                "available_mib": listed[name].available_memory_bytes // MiB,
                                "free_mib": listed[name].memory_free_bytes // MiB,
                                "vms": sum(1 for host in placed.values() if host == name)})
            for vm, host in placed.items():
                if where.get(vm) != host:
                    moves.append((t, vm, where.get(vm), host))
                    where[vm] = host
            seen_over = seen_over or listed["hosta"].average_pressure > a.threshold
            under = all(n.average_pressure < a.threshold for n in listed.values())
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
        w = csv.DictWriter(f, fieldnames=["t", "host", "pressure", "available_mib", "free_mib", "vms"])
        w.writeheader()
        w.writerows(samples)
    title = (f"Auto-balance {'off' if a.off else f'on (threshold {a.threshold})'}: hosta {SMALL_POOL} pool, "
             f"three memory soakers; hostb, hostc 1 GB")
    for ext in (".svg", ".png"):
        write_plot(samples, moves, a.out + ext, title, a.threshold)
    peak = max((s["pressure"] for s in samples if s["host"] == "hosta"), default=0)
    last_t = samples[-1]["t"] if samples else 0
    print(json.dumps({
        "benchmark": "cluster_auto_balance", "auto_balance": None if a.off else a.threshold,
        "csv": a.out + ".csv", "svg": a.out + ".svg", "png": a.out + ".png",
        "hosta_peak_pressure": peak, "moves": [{"t_s": t, "vm": vm, "from": s, "to": d} for t, vm, s, d in moves],
        "asks": asks, "balanced": settled >= a.settle, "seconds_sampled": last_t,
        "end_pressure": {s["host"]: s["pressure"] for s in samples if s["t"] == last_t},
        "end_vms": {s["host"]: s["vms"] for s in samples if s["t"] == last_t}}, indent=2))


if __name__ == "__main__":
    main()
