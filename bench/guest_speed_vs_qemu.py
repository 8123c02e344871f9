#!/usr/bin/python3
"""Guest speed on hvd next to the same code natively and under QEMU's TCG.

The kernels (bench/speed/) are compiled once with the guest's flags and linked into a
native program, an hvd guest and a PVH kernel for qemu-system-x86_64 -accel tcg. Each
round runs all three in turn (so load on the machine hits them alike); every run times
each kernel `reps` times with rdtsc after one untimed warm-up. Prints one JSON object:
per kernel the pooled median cycles of each and the ratios hvd/native, qemu/native and
hvd/qemu. Usage: guest_speed_vs_qemu.py [rounds] [reps]. QEMU comes from bench/setup.
With HVD_PATCHED_BUILD naming a build made by bench/unicorn-patched, its hvd (Unicorn with
bench/unicorn-stop-at-block.patch, no block hook) runs too, as the hvd_patched column."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import vmms_host  # noqa: E402
from vmms_host import BUILD, HvHost, wait_for  # noqa: E402

SPEED = BUILD / "bench" / "speed"
LINE = re.compile(r"^SPEED (\S+) (\d+) (\d+) (\d+)$", re.M)


def parse(text, where):
    if "SPEED done" not in text:
        raise SystemExit(f"guest_speed_vs_qemu: {where} did not finish:\n{text[-2000:]}")
    return [(m.group(1), int(m.group(3)), int(m.group(4))) for m in LINE.finditer(text)]


def run_native(reps):
    out = subprocess.run([str(SPEED / "bench-speed-native"), str(reps)], check=True, capture_output=True, text=True)
    return parse(out.stdout, "native")


def run_hvd(reps, hvd=None):
    default, vmms_host.HVD = vmms_host.HVD, hvd or vmms_host.HVD
    try:
        host = HvHost(memory="1GB", lps=2)
    finally:
        vmms_host.HVD = default
    with host:
        vm = host.start_vm("speed", memory="128MB", guest=SPEED / "bench-speed-hvd", boot_args=f"reps={reps}",
                           wait_boot=False)
        wait_for(lambda: "SPEED done" in vm.console() or vm.proc.poll() is not None, 900, interval=0.2,
                 what="the hvd run")
        return parse(vm.console(), "hvd")


def run_qemu(qemu):
    out = subprocess.run([qemu, "-accel", "tcg", "-cpu", "qemu64", "-m", "128M", "-nographic", "-nodefaults",
                          "-no-reboot", "-kernel", str(SPEED / "bench-speed-pvh"), "-debugcon", "stdio",
                          "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
                         capture_output=True, text=True, timeout=900)
    return parse(out.stdout, "qemu")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise SystemExit("guest_speed_vs_qemu: qemu-system-x86_64 is missing; run bench/setup")
    patched = os.environ.get("HVD_PATCHED_BUILD")
    patched_hvd = Path(patched) / "hypervisor" / "hvd" if patched else None
    cycles = {}
    sums = {}
    order = []
    for _ in range(rounds):
        # The PVH kernel always times 3 reps per run; the others follow `reps`.
        runs = [("native", run_native(reps)), ("hvd", run_hvd(reps))]
        if patched_hvd:
            runs.append(("hvd_patched", run_hvd(reps, patched_hvd)))
        runs.append(("qemu", run_qemu(qemu)))
        for engine, results in runs:
            for kernel, c, s in results:
                if kernel not in order:
                    order.append(kernel)
                cycles.setdefault(kernel, {}).setdefault(engine, []).append(c)
                sums.setdefault(kernel, {}).setdefault(engine, set()).add(s)
    kernels = {}
    for kernel in order:
        med = {e: statistics.median(v) for e, v in cycles[kernel].items()}
        kernels[kernel] = {
            "median_cycles": {e: round(v) for e, v in med.items()},
            "samples": {e: len(v) for e, v in cycles[kernel].items()},
            "hvd_to_native": round(med["hvd"] / med["native"], 2),
            "qemu_to_native": round(med["qemu"] / med["native"], 2),
            "hvd_to_qemu": round(med["hvd"] / med["qemu"], 3),
        }
        if "hvd_patched" in med:
            kernels[kernel]["hvd_patched_to_native"] = round(med["hvd_patched"] / med["native"], 2)
            kernels[kernel]["hvd_patched_to_qemu"] = round(med["hvd_patched"] / med["qemu"], 3)
        if kernel != "page_touch_64m" and len(set().union(*sums[kernel].values())) != 1:
            kernels[kernel]["results_differ"] = {e: sorted(v) for e, v in sums[kernel].items()}
    print(json.dumps({"benchmark": "guest_speed_vs_qemu", "rounds": rounds, "reps_per_run": reps,
                      "kernels": kernels}, indent=2))


if __name__ == "__main__":
    main()
