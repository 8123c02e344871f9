"""The seed's five-guest Dynamic Memory case, driven through vmmsd's gRPC API.

Full size: a 12 GiB pool; five VMs with minimum/maximum 2/6, 2/6, 0.5/6, 0.5/6, 0.5/8 GiB,
started at their minimum; VM 5 runs the memory soaker growing past what it can be given,
the others idle. Midway VMs 1 and 2 are stopped. `scale` divides every size (16 for CI:
a 768 MiB pool). Samples every VM's assigned memory, demand and pressure once a second
and can write them as CSV and as an SVG plot of assigned memory and pressure over time."""
import csv
import time
from pathlib import Path

from vmmsd_host import VmmsdHost

MiB = 1 << 20
GiB = 1 << 30
# (name, minimum, maximum) at full size
SEED_VMS = [("vm1", 2 * GiB, 6 * GiB), ("vm2", 2 * GiB, 6 * GiB), ("vm3", GiB // 2, 6 * GiB),
            ("vm4", GiB // 2, 6 * GiB), ("vm5", GiB // 2, 8 * GiB)]
POOL = 12 * GiB


def align(n):
    return n // (2 * MiB) * (2 * MiB)


def run(scale=16, seconds=60, stop_at=35, soak_bytes=None, on_sample=None):
    """Runs the case; returns the samples [(t, name, state, assigned, demand, pressure)]."""
    pool = POOL // scale
    samples = []
    with VmmsdHost(hvd_memory=str(pool), hvd_lps=2, stop_timeout=5) as host:
        pb = host.pb
        for name, minimum, maximum in SEED_VMS:
            minimum, maximum = align(minimum // scale), align(maximum // scale)
            soak = soak_bytes or (maximum * 3 // 2)  # past what it may be given: it pages
            workload, args = ("memsoak", f"memsoak_mb={soak // MiB} memsoak_step_mb={max(8, 128 // scale)} "
                              f"memsoak_step_ms=250") if name == "vm5" else ("idle", "")
            host.api.CreateVm(pb.CreateVmRequest(
                name=name, workload=workload, boot_args=args,
                memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=minimum, minimum_bytes=minimum,
                                         maximum_bytes=maximum, buffer=20, priority=50,
                                         paging_bytes=align(soak))), timeout=10)  # room to page all it soaks
        for name, _, _ in SEED_VMS:
            host.api.StartVm(pb.VmRef(vm=name), timeout=60)
        t0 = time.monotonic()
        stopped = False
        while time.monotonic() - t0 < seconds:
            t = time.monotonic() - t0
            if not stopped and t >= stop_at:
                for name in ("vm1", "vm2"):
                    host.api.StopVm(pb.StopVmRequest(vm=name, turn_off=True), timeout=30)
                stopped = True
            for vm in host.api.ListVms(pb.ListVmsRequest(), timeout=10).vms:
                samples.append((round(t, 2), vm.name, pb.VmState.Name(vm.state), vm.assigned_memory_bytes,
                                vm.memory_demand_bytes, vm.memory_pressure))
            if on_sample:
                on_sample(host, t)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - t)))
        host.extra = {"events": [e.message for e in host.api.ListEvents(
            pb.ListEventsRequest(limit=10000), timeout=10).events]}
    return samples


def write_csv(samples, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "vm", "state", "assigned_bytes", "demand_bytes", "pressure"])
        w.writerows(samples)


def write_svg(samples, path, title):
    """Two panels, like the seed's figures: assigned memory (MiB) and pressure per VM."""
    names = sorted({s[1] for s in samples})
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    t_max = max((s[0] for s in samples), default=1) or 1
    a_max = max((s[3] for s in samples), default=1) / MiB or 1
    p_max = max(max((s[5] for s in samples), default=1), 100)
    width, height, pad = 900, 260, 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{2 * height + 72}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="{pad}" y="20" font-size="15">{title}</text>']

    def panel(y0, label, value, vmax, unit, marks=()):
        out.append(f'<rect x="{pad}" y="{y0}" width="{width - 2 * pad}" height="{height - 40}" fill="none" '
                   f'stroke="#888"/>')
        for k in range(0, int(t_max) + 1, 10):
            x = pad + (width - 2 * pad) * k / t_max
            out.append(f'<text x="{x:.1f}" y="{y0 + height - 26}" text-anchor="middle">{k}</text>')
        for m in marks:  # e.g. pressure 100: committed equals assigned
            y = y0 + (height - 40) * (1 - m / vmax)
            out.append(f'<line x1="{pad}" y1="{y:.1f}" x2="{width - pad}" y2="{y:.1f}" stroke="#bbb" '
                       f'stroke-dasharray="4 4"/>')
        out.append(f'<text x="{pad}" y="{y0 - 6}">{label}</text>')
        for k in range(5):
            v = vmax * k / 4
            y = y0 + (height - 40) * (1 - k / 4)
            out.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{round(v)}{unit}</text>')
        for i, name in enumerate(names):
            pts = [(pad + (width - 2 * pad) * s[0] / t_max, y0 + (height - 40) * (1 - value(s) / vmax))
                   for s in samples if s[1] == name]
            if pts:
                d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{d}" fill="none" stroke="{colours[i % 5]}" stroke-width="2"/>')
            out.append(f'<text x="{width - pad + 6}" y="{y0 + 14 * (i + 1)}" fill="{colours[i % 5]}">{name}</text>')

    panel(50, "Assigned memory (MiB)", lambda s: s[3] / MiB, a_max, "")
    panel(50 + height + 20, "Memory pressure (committed / assigned, %)", lambda s: s[5], p_max, "", marks=(100,))
    out.append(f'<text x="{width / 2}" y="{2 * height + 66}" text-anchor="middle">seconds</text></svg>')
    Path(path).write_text("\n".join(out))
