#!/usr/bin/python3
"""How close the libvirt engine gets to a Reserve. cgroups have no CPU minimum, so vmmsd
meets reservations with weights (vmms-engine-libvirt.c: water-filling over cpu_shares);
this measures what that gives real guests. Three 1-vCPU libvirt guests (Debian's kernel in
QEMU TCG, a private libvirtd), each running one busy loop (vmms.burn=1), on this host's
LPs (three busy vCPUs on two LPs: 67 % of an LP each without reservations, so a Reserve
above that binds); then, for each phase, Set-VMProcessor and SECONDS of measurement. Each
guest's CPU time is its QEMU process's (utime + stime in /proc/PID/stat: under this
private libvirtd QEMU's cpuacct group is the root one, whose cpuacct.usage counts the
whole host), and the weight in force is read back from the kernel: cpu.shares of the
domain's cpu cgroup (cgroup v1 here; cpu.weight on v2). Prints one JSON object.

Per phase and guest:
- reserve_pct: its Reserve (% of one LP); cpu_shares: the weight vmmsd gave its domain
  (virsh schedinfo); kernel_shares: what its cpu cgroup file says
- pct_of_lp: the CPU it got, in % of one LP (usage / wall time)
- share_of_guests: its part of the guests' CPU time; target_share: cpu_shares / the
  sum, what weights promise when every guest is busy
- reserve_met: pct_of_lp >= reserve_pct
Per phase: guests_pct_of_host (the guests together, of all LPs) and the host's load
average, because the weights only divide what the guests as a group get: other host
processes (everyone else on this machine) are not their siblings.
Last, admission: a fifth VM whose Reserve does not fit is refused at Start-VM.

Usage: libvirt_reserve.py [SECONDS (default 20)]"""
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from libvirt_env import GUEST_DIR, PrivateLibvirtd, ensure_guest, vmctl  # noqa: E402
from vmms_host import wait_for  # noqa: E402
from vmmsd_host import VmmsdHost  # noqa: E402

GUESTS = ["b1", "b2", "b3"]
# (phase, {guest: Reserve}): every guest not named has Reserve 0, RelativeWeight 100.
PHASES = [("equal", {}), ("one_reserve", {"b1": 100}), ("two_reserves", {"b1": 100, "b2": 80})]
BOOT_TIMEOUT = 600  # each, one after the other, with the earlier ones burning



def get_vm(host, name):
    return json.loads(vmctl(host, "Get-VM", name, "-Json").stdout)[0]


def cpu_cgroup_file(pid):
    """The domain's cpu.shares (v1) or cpu.weight (v2) for QEMU `pid` (its threads sit in
    the domain's emulator/vcpuN children)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        path = re.sub(r"/(emulator|vcpu\d+)$", "", path).lstrip("/")
        if "cpu" in controllers.split(","):
            return Path("/sys/fs/cgroup/cpu") / path / "cpu.shares"
        if controllers == "":
            return Path("/sys/fs/cgroup") / path / "cpu.weight"
    raise RuntimeError(f"no cpu cgroup for pid {pid}")


def cpu_ns(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def cpu_shares(libvirtd, domain):
    return int(re.search(r"cpu_shares\s*:\s*(\d+)", libvirtd.virsh("schedinfo", domain).stdout)[1])


def measure(host, libvirtd, pids, domains, reserves, seconds):
    for name in GUESTS:
        vmctl(host, "Set-VMProcessor", name, "-Reserve", str(reserves.get(name, 0)))
    time.sleep(2)  # the new weights in force
    load_before = os.getloadavg()[0]
    before = {n: cpu_ns(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall_ns = (time.monotonic() - t0) * 1e9
    used = {n: cpu_ns(p) - before[n] for n, p in pids.items()}
    shares = {n: cpu_shares(libvirtd, domains[n]) for n in GUESTS}
    total = sum(used.values())
    guests = {}
    for n in GUESTS:
        pct = 100 * used[n] / wall_ns
        kernel = cpu_cgroup_file(pids[n])
        guests[n] = {"reserve_pct": reserves.get(n, 0), "cpu_shares": shares[n],
                     "kernel_shares": int(kernel.read_text()) if kernel.exists() else None,
                     "pct_of_lp": round(pct, 1),
                     "share_of_guests": round(used[n] / total, 3),
                     "target_share": round(shares[n] / sum(shares.values()), 3),
                     "reserve_met": pct >= reserves.get(n, 0)}
    return {"guests": guests, "guests_pct_of_host": round(100 * total / (wall_ns * os.cpu_count()), 1),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20
    ensure_guest()
    libvirtd = PrivateLibvirtd()
    host = None
    try:
        host = VmmsdHost(hvd_memory="2GB", stop_timeout=5,
                         extra=("--libvirt-uri", libvirtd.uri, "--libvirt-domain-type", "qemu"))
        for name in GUESTS:
            vmctl(host, "New-VM", "-Name", name, "-Engine", "libvirt", "-MemoryStartupBytes", "192MB",
                  "-ProcessorCount", "1", "-KernelPath", str(GUEST_DIR / "vmlinuz"),
                  "-InitrdPath", str(GUEST_DIR / "initrd.img"), "-KernelArgs", "quiet vmms.burn=1")
            vmctl(host, "Start-VM", name)
            vm_id = get_vm(host, name)["id"]
            wait_for(lambda: "vmms-guest: up" in host.console(vm_id), BOOT_TIMEOUT, interval=0.5,
                     what=f"{name} to boot")
        ids = {n: get_vm(host, n)["id"] for n in GUESTS}
        domains = {n: f"vmms-{n}-{ids[n][:8]}" for n in GUESTS}
        pids = {n: get_vm(host, n)["workerPid"] for n in GUESTS}
        result = {"benchmark": "libvirt_reserve", "seconds_per_phase": seconds, "host_lps": os.cpu_count(),
                  "guests": len(GUESTS), "vcpus_per_guest": 1, "domain_type": "qemu (TCG)", "phases": {}}
        for phase, reserves in PHASES:
            result["phases"][phase] = measure(host, libvirtd, pids, domains, reserves, seconds)
        # Admission: the running VMs reserve 180 % of one LP; 2 vCPUs at Reserve 100 more do not fit.
        vmctl(host, "New-VM", "-Name", "b5", "-Engine", "libvirt", "-MemoryStartupBytes", "192MB",
              "-ProcessorCount", "2", "-KernelPath", str(GUEST_DIR / "vmlinuz"),
              "-InitrdPath", str(GUEST_DIR / "initrd.img"))
        vmctl(host, "Set-VMProcessor", "b5", "-Reserve", "100")
        r = vmctl(host, "Start-VM", "b5", check=False)
        result["admission"] = {"refused": r.returncode != 0, "message": r.stderr.strip()}
        print(json.dumps(result, indent=2))
    finally:
        if host:
            for name in GUESTS:
                vmctl(host, "Stop-VM", name, "-TurnOff", check=False)
            host.close()
        libvirtd.stop()


if __name__ == "__main__":
    main()
