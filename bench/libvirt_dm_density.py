#!/usr/bin/python3
"""What Dynamic Memory gives back on a host of N idle Linux guests, against static memory,
and how many more guests of that size would fit in the same host memory. One vmmsd, a
private libvirtd, QEMU's TCG (this machine's /dev/kvm does not run guests); N libvirt
guests (Debian's kernel + the busybox initramfs of tests/libvirt/make-guest.sh, idle, 1
vCPU) of --memory startup memory, run twice, one phase after the other:
  static:  Dynamic Memory off; measured --static-settle seconds after the last boot
  dynamic: Dynamic Memory on, Minimum --minimum, Maximum = startup (no hot-add), buffer
           20 %; measured once the balancer has settled: the sum of assigned memory moved
           less than 4 MiB over 20 s (at least 30 s after the last boot, at most
           --settle-max seconds; "settled" says whether it did)
Per guest (MiB): assigned (Get-VM: the balloon's size, what vmms charges its pool),
demand (the guest's committed memory from its balloon stats), libvirt_rss (virsh
dommemstat rss: QEMU's resident memory), qemu_pss (from smaps, shared libraries divided),
the parts of QEMU's rss in guest RAM (guest_ram_rss: what the guest touched and has not
ballooned) and in TCG's translated-code buffer (tcg_code_rss: none under KVM), and the
guest's last MemTotal line. Per phase, their sums.

given_back: static sums minus dynamic sums. more_guests_fit: how many more guests of the
dynamic phase's mean size the static phase's memory would hold:
floor(static sum / dynamic mean) - N, once by assigned (the pool vmms gives out; the
memory a host must have to promise every guest its startup) and once by libvirt rss (the
host memory actually resident). Starting a Dynamic Memory guest still takes its startup
memory until the balancer trims it, so the extra guests fit once started one at a time.

Usage: libvirt_dm_density.py [--guests N (3)] [--memory SIZE (512MB)] [--minimum SIZE
(64MB)] [--static-settle S (30)] [--settle-max S (300)]"""
import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from libvirt_env import GUEST_DIR, PrivateLibvirtd, ensure_guest, qemu_memory_kib, vmctl  # noqa: E402
from vmms_host import wait_for  # noqa: E402
from vmmsd_host import VmmsdHost  # noqa: E402

BOOT_TIMEOUT = 300  # TCG on a shared 2-core machine: 6-9 s alone, much more under load
MIB = 1 << 20


def get_vm(host, name):
    return json.loads(vmctl(host, "Get-VM", name, "-Json").stdout)[0]


def boot_all(host, names):
    for name in names:
        vm_id = get_vm(host, name)["id"]
        before = host.console(vm_id).count("vmms-guest: up")
        vmctl(host, "Start-VM", name)
        wait_for(lambda: host.console(vm_id).count("vmms-guest: up") > before, BOOT_TIMEOUT, interval=0.2,
                 what=f"{name}'s console marker")


def measure(host, libvirtd, names):
    guests = {}
    for name in names:
        vm = get_vm(host, name)
        dom = f"vmms-{name}-{vm['id'][:8]}"
        r = libvirtd.virsh("dommemstat", dom)
        m = re.search(r"^rss (\d+)", r.stdout, re.M)
        if not m:
            raise RuntimeError(f"virsh dommemstat {dom}: {r.stdout}{r.stderr} (VM {name} is {vm['state']}; "
                               f"console: {host.console(vm['id'])[-1500:]})")
        rss = int(m[1])
        memtotal = re.findall(r"MemTotal: (\d+) kB", host.console(vm["id"]))
        qemu = qemu_memory_kib(vm["workerPid"], int(vm["memory"]["startupBytes"]) // 1024)
        guests[name] = {"assigned": round(vm["assignedMemoryBytes"] / MIB, 1),
                        "demand": round(vm["memoryDemandBytes"] / MIB, 1),
                        "libvirt_rss": round(rss / 1024, 1),
                        "qemu_pss": round(qemu["pss"] / 1024, 1),
                        "guest_ram_rss": round(qemu["guest_ram_rss"] / 1024, 1),
                        "tcg_code_rss": round(qemu["tcg_code_rss"] / 1024, 1),
                        "guest_memtotal": round(int(memtotal[-1]) / 1024, 1) if memtotal else None}
    sums = {k: round(sum(g[k] for g in guests.values()), 1)
            for k in ("assigned", "demand", "libvirt_rss", "qemu_pss", "guest_ram_rss", "tcg_code_rss")}
    return {"guests": guests, "sum": sums}


def assigned_sum(host, names):
    return sum(get_vm(host, n)["assignedMemoryBytes"] for n in names)


def wait_settled(host, names, settle_max):
    """Samples the sum of assigned memory every 2 s until it moved less than 4 MiB over 20 s
    (from 30 s on); (settled, seconds, [[t, MiB] every 10 s])."""
    t0 = time.monotonic()
    history = []
    timeline = []
    while True:
        t = time.monotonic() - t0
        total = assigned_sum(host, names)
        history.append((t, total))
        if not timeline or t - timeline[-1][0] >= 10:
            timeline.append([round(t), round(total / MIB)])
        window = [v for s, v in history if s >= t - 20]
        if t >= 30 and history[0][0] <= t - 20 and max(window) - min(window) < 4 * MIB:
            return True, t, timeline
        if t >= settle_max:
            return False, t, timeline
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--guests", type=int, default=3)
    ap.add_argument("--memory", default="512MB")
    ap.add_argument("--minimum", default="64MB")
    ap.add_argument("--static-settle", type=float, default=30)
    ap.add_argument("--settle-max", type=float, default=300)
    args = ap.parse_args()
    if args.guests < 1:
        ap.error(f"--guests must be at least 1, not {args.guests}")
    ensure_guest()
    libvirtd = PrivateLibvirtd()
    host = None
    names = [f"idle{i + 1}" for i in range(args.guests)]
    try:
        host = VmmsdHost(hvd_memory="4GB", stop_timeout=5,
                         extra=("--libvirt-uri", libvirtd.uri, "--libvirt-domain-type", "qemu"))
        for name in names:
            vmctl(host, "New-VM", "-Name", name, "-Engine", "libvirt", "-MemoryStartupBytes", args.memory,
                  "-ProcessorCount", "1", "-KernelPath", str(GUEST_DIR / "vmlinuz"),
                  "-InitrdPath", str(GUEST_DIR / "initrd.img"), "-KernelArgs", "quiet")
        result = {"benchmark": "libvirt_dm_density", "guests": args.guests, "memory": args.memory,
                  "minimum": args.minimum, "unit": "MiB", "libvirt_domain_type": "qemu (TCG)",
                  "host_lps": os.cpu_count()}

        boot_all(host, names)
        time.sleep(args.static_settle)
        result["static"] = measure(host, libvirtd, names)
        for name in names:
            vmctl(host, "Stop-VM", name, "-TurnOff")

        for name in names:
            vmctl(host, "Set-VMMemory", name, "-DynamicMemoryEnabled", "$true", "-MinimumBytes", args.minimum,
                  "-MaximumBytes", args.memory, "-Buffer", "20")
        boot_all(host, names)
        settled, seconds, timeline = wait_settled(host, names, args.settle_max)
        result["dynamic"] = measure(host, libvirtd, names)
        result["dynamic"].update({"settled": settled, "settle_s": round(seconds),
                                  "assigned_sum_timeline": timeline})
        for name in names:
            vmctl(host, "Stop-VM", name, "-TurnOff")

        st, dy = result["static"]["sum"], result["dynamic"]["sum"]
        measures = ("assigned", "libvirt_rss", "qemu_pss", "guest_ram_rss")
        result["given_back"] = {k: round(st[k] - dy[k], 1) for k in measures}
        result["given_back_pct"] = {k: round(100 * (st[k] - dy[k]) / st[k], 1) for k in measures}
        result["more_guests_fit"] = {
            k: math.floor(st[k] / statistics.mean(g[k] for g in result["dynamic"]["guests"].values())) - args.guests
            for k in ("assigned", "libvirt_rss")}
        result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2))
    finally:
        if host:
            host.close()
        libvirtd.stop()


if __name__ == "__main__":
    main()
