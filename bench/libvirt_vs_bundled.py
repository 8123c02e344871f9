#!/usr/bin/python3
"""A libvirt Linux guest next to a bundled guest of the same configured memory, in one run:
boot-to-console time and the host memory each costs. One vmmsd with both engines (a
private libvirtd, QEMU's TCG: this machine's /dev/kvm does not run guests), two VMs of
--memory static memory (Dynamic Memory off, so neither is ballooned) and 1 vCPU/VP:
  libvirt: Debian's kernel + the busybox initramfs (tests/libvirt/make-guest.sh), idle;
           its marker is "vmms-guest: up" (modules loaded, after the kernel's boot)
  bundled: the bundled guest kernel, workload idle; its marker is "vmms-guest: boot"
           (its first line: it has no drivers to load)
Each repetition starts them one after the other (which goes first alternates), waits
--settle seconds with both running, measures, and turns both off.

- boot_s: from just before `vmctl Start-VM` to the marker appearing in the VM's console
  log (polled every 20 ms); start_vm_call_s: until Start-VM returned.
- Memory, kB, from /proc (smaps_rollup's Pss divides a page shared by N processes by N,
  so Pss sums without counting a page twice):
  libvirt: QEMU's Rss and Pss (smaps), the parts of its Rss in guest RAM and in TCG's
           translated-code buffer, and libvirt's own figure (virsh dommemstat's rss, which
           libvirt reads from QEMU's /proc/PID/stat); libvirtd itself is not counted (one
           per host, whatever it runs).
  bundled: vmwp's VmRSS and Pss, and the VM's share of hvd: hvd's anonymous and shared
           Pss while the VM runs minus the same just before it started (hvd maps the VM's
           guest-RAM memfd too, and keeps its VP's engine; its libraries' Pss moves with
           how many processes share them, so it is left out). total_pss = vmwp Pss + hvd
           share.
  Both: Host Resident Bytes, vmmsd's own per-VM figure (Get-Counter \\VMMS Partition(*)\\
  Host Resident Bytes: libvirt's rss; for a bundled VM, its guest RAM resident in hvd).
Per figure: the values of every repetition and their median, min and max.

Usage: libvirt_vs_bundled.py [--reps N (5)] [--memory SIZE (256MB)] [--settle S (10)]"""
import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from libvirt_env import GUEST_DIR, PrivateLibvirtd, ensure_guest, qemu_memory_kib, vmctl  # noqa: E402
from vmms_host import HVD, wait_for  # noqa: E402
from vmmsd_host import VmmsdHost, processes_naming  # noqa: E402

BOOT_TIMEOUT = 300  # TCG on a shared 2-core machine: 6-9 s alone, much more under load
MARKERS = {"libvirt": "vmms-guest: up", "bundled": "vmms-guest: boot "}


def proc_kb(pid):
    """VmRSS, RssAnon, RssFile, RssShmem (status) and Pss, its anonymous and shared-memory
    parts, AnonHugePages (smaps_rollup), kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_Shmem", "AnonHugePages"):
            out[key] = int(value.split()[0])
    return out


def hvd_pid(host):
    for pid in processes_naming(str(host.dir)):
        try:
            if os.readlink(f"/proc/{pid}/exe") == str(HVD):
                return pid
        except OSError:
            continue
    raise RuntimeError("no hvd under this vmmsd")


def get_vm(host, name):
    return json.loads(vmctl(host, "Get-VM", name, "-Json").stdout)[0]


def host_resident(host):
    """{vm name: bytes} from vmmsd's Host Resident Bytes counter."""
    out = {}
    for s in json.loads(vmctl(host, "Get-Counter", r"\VMMS Partition(*)\Host Resident Bytes", "-Json").stdout)[
            "samples"]:
        out[re.match(r"^\\VMMS Partition\((.*)\)\\", s["path"])[1]] = int(s["value"])
    return out


def boot(host, name, engine):
    """Start-VM, then wait for the guest's marker; (seconds to the marker, seconds Start-VM took)."""
    vm_id = get_vm(host, name)["id"]
    marker = MARKERS[engine]
    before = host.console(vm_id).count(marker)  # libvirt's serial file is appended to
    t0 = time.monotonic()
    vmctl(host, "Start-VM", name)
    call = time.monotonic() - t0
    wait_for(lambda: host.console(vm_id).count(marker) > before, BOOT_TIMEOUT, interval=0.02,
             what=f"{name}'s console marker")
    return time.monotonic() - t0, call


def summary(values):
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "values": [round(v, 3) for v in values]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--memory", default="256MB")
    ap.add_argument("--settle", type=float, default=10)
    args = ap.parse_args()
    if args.reps < 1:
        ap.error(f"--reps must be at least 1, not {args.reps}")
    ensure_guest()
    libvirtd = PrivateLibvirtd()
    host = None
    samples = {"libvirt": [], "bundled": []}
    try:
        host = VmmsdHost(hvd_memory="2GB", stop_timeout=5,
                         extra=("--libvirt-uri", libvirtd.uri, "--libvirt-domain-type", "qemu"))
        vmctl(host, "New-VM", "-Name", "lv", "-Engine", "libvirt", "-MemoryStartupBytes", args.memory,
              "-ProcessorCount", "1", "-KernelPath", str(GUEST_DIR / "vmlinuz"),
              "-InitrdPath", str(GUEST_DIR / "initrd.img"), "-KernelArgs", "quiet")
        vmctl(host, "New-VM", "-Name", "bd", "-MemoryStartupBytes", args.memory, "-ProcessorCount", "1")
        hvd = hvd_pid(host)
        for rep in range(args.reps):
            order = [("lv", "libvirt"), ("bd", "bundled")]
            if rep % 2:
                order.reverse()
            s = {"libvirt": {}, "bundled": {}}
            for name, engine in order:
                if engine == "bundled":
                    hvd_before = proc_kb(hvd)
                s[engine]["boot_s"], s[engine]["start_vm_call_s"] = boot(host, name, engine)
            time.sleep(args.settle)
            resident = host_resident(host)
            lv = get_vm(host, "lv")
            qemu = qemu_memory_kib(lv["workerPid"], int(lv["memory"]["startupBytes"]) // 1024)
            stat = libvirtd.virsh("dommemstat", f"vmms-lv-{lv['id'][:8]}").stdout
            s["libvirt"].update({"qemu_rss_kb": qemu["rss"], "qemu_pss_kb": qemu["pss"],
                                 "qemu_guest_ram_rss_kb": qemu["guest_ram_rss"],
                                 "qemu_tcg_code_rss_kb": qemu["tcg_code_rss"],
                                 "libvirt_rss_kb": int(re.search(r"^rss (\d+)", stat, re.M)[1]),
                                 "host_resident_kb": resident["lv"] // 1024})
            vmwp = proc_kb(get_vm(host, "bd")["workerPid"])
            hvd_now = proc_kb(hvd)
            share = (hvd_now["Pss_Anon"] + hvd_now["Pss_Shmem"]) - (hvd_before["Pss_Anon"] + hvd_before["Pss_Shmem"])
            s["bundled"].update({"vmwp_rss_kb": vmwp["VmRSS"], "vmwp_pss_kb": vmwp["Pss"],
                                 "hvd_share_pss_kb": share,
                                 "hvd_share_rss_kb": hvd_now["VmRSS"] - hvd_before["VmRSS"],
                                 "total_pss_kb": vmwp["Pss"] + share,
                                 "host_resident_kb": resident["bd"] // 1024})
            for name, _ in order:
                vmctl(host, "Stop-VM", name, "-TurnOff")
            for engine in s:
                samples[engine].append(s[engine])
            print(f"# rep {rep + 1}/{args.reps}: {json.dumps(s)}", file=sys.stderr, flush=True)
        result = {"benchmark": "libvirt_vs_bundled", "memory": args.memory, "vcpus": 1, "reps": args.reps,
                  "settle_s": args.settle, "libvirt_domain_type": "qemu (TCG)", "host_lps": os.cpu_count(),
                  "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
        for engine, reps in samples.items():
            result[engine] = {key: summary([r[key] for r in reps]) for key in reps[0]}
        result["ratio_libvirt_to_bundled"] = {
            "boot_s": round(result["libvirt"]["boot_s"]["median"] / result["bundled"]["boot_s"]["median"], 1),
            "pss": round(result["libvirt"]["qemu_pss_kb"]["median"] / result["bundled"]["total_pss_kb"]["median"], 1)}
        print(json.dumps(result, indent=2))
    finally:
        if host:
            host.close()
        libvirtd.stop()


if __name__ == "__main__":
    main()
