"""The seed's five-guest Dynamic Memory case, driven through vmmsd's gRPC API.

Full size: a 12 GiB pool; five VMs with minimum/maximum 2/6, 2/6, 0.5/6, 0.5/6, 0.5/8 GiB,
started at their minimum, each running the memory soaker as the seed's guests ran: VMs 1-2
light (512 MiB soaked, under their 2 GiB minimum: pressure under 40, like the seed's), VMs
3-4 wanting a little more than their minimum (1.125 GiB: squeezed near it, pressure over
100), VM 5 growing past its maximum (12 GiB: it pages). Midway VMs 1 and 2 are stopped.
`scale` divides every size (16 for CI: a 768 MiB pool). Samples every VM's assigned memory,
demand and pressure once a second and writes them as CSV and as a matplotlib plot."""
import csv
import time

from vmmsd_host import VmmsdHost

MiB = 1 << 20
GiB = 1 << 30
# (name, minimum, maximum, memory soaked) at full size
SEED_VMS = [("vm1", 2 * GiB, 6 * GiB, GiB // 2), ("vm2", 2 * GiB, 6 * GiB, GiB // 2),
            ("vm3", GiB // 2, 6 * GiB, 9 * GiB // 8), ("vm4", GiB // 2, 6 * GiB, 9 * GiB // 8),
            ("vm5", GiB // 2, 8 * GiB, 12 * GiB)]
POOL = 12 * GiB
# The seed's figures for this case (Figures 17-24 of "Understanding Hyper-V Dynamic Memory
# management"), at full size: what a run at any scale is compared with.
SEED_FIGURES = [
    ("Fig. 18", "VMs 1-2 assigned before they stop", "2 GiB each (their Minimum), flat"),
    ("Fig. 19", "VMs 1-2 pressure before they stop", "under 40"),
    ("Fig. 17-18", "VMs 3-4 assigned before VMs 1-2 stop", "near their 512 MiB Minimum"),
    ("Fig. 19", "VMs 3-5 pressure while memory is short", "over 100, equalised"),
    ("Fig. 21, 23", "VM 5 assigned after VMs 1-2 stop", "approaches its 8 GiB Maximum"),
    ("Fig. 23", "VMs 3-4 gain after VMs 1-2 stop", "about 1.5 GiB between them"),
    ("Fig. 24", "VMs 3-5 pressure after VMs 1-2 stop", "stays high (about 100 and over)"),
]


def align(n):
    return n // (2 * MiB) * (2 * MiB)


def run(scale=16, seconds=60, stop_at=35, on_sample=None, after=None):
    """Runs the case; returns the samples [(t, name, state, assigned, demand, pressure)]. VMs 1-2
    stop at stop_at seconds, or earlier once VM 5 has committed all it soaks (it has then
    outgrown the host, as the seed's had before they were stopped; its soaker's speed depends
    on the machine's). With `after`, the run ends that many seconds after the stop, else at
    `seconds`."""
    pool = POOL // scale
    vm5_soak = align(SEED_VMS[4][3] // scale)
    samples = []
    with VmmsdHost(hvd_memory=str(pool), hvd_lps=2, stop_timeout=5) as host:
        pb = host.pb
        for name, minimum, maximum, soak in SEED_VMS:
            minimum, maximum, soak = align(minimum // scale), align(maximum // scale), align(soak // scale)
            # Steps of 128 MiB (full size) every 250 ms, and at least a 48th of the soak, so VM 5 has
            # outgrown the pool within about 15 s whatever the scale, as the seed's soaker had.
            step = max(128 * MiB // scale, align(soak // 48))
            args = f"memsoak_mb={soak // MiB} memsoak_step_mb={step // MiB} memsoak_step_ms=250"
            host.api.CreateVm(pb.CreateVmRequest(
                name=name, workload="memsoak", boot_args=args,
                memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=minimum, minimum_bytes=minimum,
                                         maximum_bytes=maximum, buffer=20, priority=50,
                                         paging_bytes=max(soak, 4 * minimum))), timeout=10)  # room to page it all
        for name, *_ in SEED_VMS:
            host.api.StartVm(pb.VmRef(vm=name), timeout=60)
        t0 = time.monotonic()
        stopped = None
        vm5_demand = 0
        while time.monotonic() - t0 < (seconds if after is None else (stop_at if stopped is None else stopped) + after):
            t = time.monotonic() - t0
            if stopped is None and (t >= stop_at or vm5_demand >= vm5_soak):
                for name in ("vm1", "vm2"):
                    host.api.StopVm(pb.StopVmRequest(vm=name, turn_off=True), timeout=30)
                stopped = t
            for vm in host.api.ListVms(pb.ListVmsRequest(), timeout=10).vms:
                samples.append((round(t, 2), vm.name, pb.VmState.Name(vm.state), vm.assigned_memory_bytes,
                                vm.memory_demand_bytes, vm.memory_pressure))
                if vm.name == "vm5":
                    vm5_demand = vm.memory_demand_bytes
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


def stop_time(samples, names=("vm1", "vm2")):
    """When the first of `names` was seen not running (the case's event), or None."""
    return min((s[0] for s in samples if s[1] in names and s[2] != "VM_STATE_RUNNING"), default=None)


def summary(samples, scale, stop_at):
    """Our figures for each of SEED_FIGURES' rows, in MiB at this run's scale (None: not measured).
    'Before' is the 8 s before VMs 1-2 stop; 'after' the last 5 s of the run."""
    end = max(s[0] for s in samples)
    t_stop = stop_time(samples) or stop_at

    def window(name, t_from, t_to):
        return [s for s in samples if s[1] == name and t_from <= s[0] < t_to and s[2] == "VM_STATE_RUNNING"]

    before = {n: window(n, t_stop - 8, t_stop - 0.5) for n, *_ in SEED_VMS}
    after = {n: window(n, end - 5, end + 1) for n, *_ in SEED_VMS}
    mib = lambda rows: [s[3] // MiB for s in rows]  # noqa: E731
    pres = lambda rows: [s[5] for s in rows]  # noqa: E731

    def span(values):
        return f"{min(values)}-{max(values)}" if values and min(values) != max(values) else \
            (str(values[0]) if values else "none")

    spread = [max(ps) - min(ps) for ps in (
        [s[5] for n in ("vm3", "vm4", "vm5") for s in before[n] if s[0] == t] for t in
        sorted({s[0] for s in before["vm5"]})) if len(ps) == 3]
    def last(rows):
        return rows[-1][3] // MiB if rows else None

    ends = [last(before["vm3"]), last(before["vm4"]), last(after["vm3"]), last(after["vm4"])]
    gain = ends[2] + ends[3] - ends[0] - ends[1] if None not in ends else None
    unit = f"MiB at 1/{scale} size" if scale != 1 else "MiB"
    return [
        f"{span(mib(before['vm1']))} and {span(mib(before['vm2']))} {unit} (Minimum {2 * GiB // scale // MiB})",
        f"{span(pres(before['vm1']))} and {span(pres(before['vm2']))}",
        f"{span(mib(before['vm3']))} and {span(mib(before['vm4']))} {unit} (Minimum {GiB // 2 // scale // MiB})",
        f"vm3 {span(pres(before['vm3']))}, vm4 {span(pres(before['vm4']))}, vm5 {span(pres(before['vm5']))}; "
        f"spread within a second at most {max(spread, default=0)} points",
        f"{span(mib(after['vm5']))} {unit} (Maximum {8 * GiB // scale // MiB})",
        f"{gain} {unit} ({gain * scale / 1024:.2f} GiB at full size)" if gain is not None else "not measured",
        f"vm3 {span(pres(after['vm3']))}, vm4 {span(pres(after['vm4']))}, vm5 {span(pres(after['vm5']))}",
    ]


def print_beside_seed(samples, scale, stop_at, out=print):
    ours = summary(samples, scale, stop_at)
    w1 = max(len(f[1]) for f in SEED_FIGURES)
    w2 = max(len(f[2]) for f in SEED_FIGURES)
    out(f"{'figure':<11} {'what':<{w1}} {'seed (12 GiB host)':<{w2}} ours")
    for (fig, what, seed), mine in zip(SEED_FIGURES, ours):
        out(f"{fig:<11} {what:<{w1}} {seed:<{w2}} {mine}")


# One style per VM: colour, line style, marker. Where two VMs' lines coincide (VMs 1-2 at
# their Minimum, VMs 3-4 equalised) the wider line is drawn first and markers are staggered,
# so both stay visible without moving either line off its value.
STYLES = {"vm1": ("#1f77b4", "-", "o", 4.0), "vm2": ("#ff7f0e", "--", "s", 1.8),
          "vm3": ("#2ca02c", "-", "^", 4.0), "vm4": ("#d62728", "--", "v", 1.8),
          "vm5": ("#9467bd", "-", "D", 2.2)}


def write_plot(samples, path, title, scale=16, caption=""):
    """Two panels, like the seed's Figures 18-19 and 23-24: assigned memory (MiB) and pressure
    per VM over time, with the pool, VM 5's Maximum and the moment VMs 1-2 stop. The format
    follows the file name (.svg, .png); SVG keeps its text as text, so the series are named in it."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "vmms"  # the same run gives the same file
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted({s[1] for s in samples})
    fig, (mem, pres) = plt.subplots(2, 1, sharex=True, figsize=(10, 7.5))
    n_points = max(1, len({s[0] for s in samples}))
    for i, name in enumerate(names):
        colour, dash, marker, width = STYLES.get(name, ("#333333", ":", "x", 1.5))
        rows = [s for s in samples if s[1] == name and s[2] != "VM_STATE_OFF"]
        every = (i * 2 % 7, max(4, n_points // 12))  # staggered so coinciding lines show both markers
        for ax, value in ((mem, lambda s: s[3] / MiB), (pres, lambda s: s[5])):
            ax.plot([s[0] for s in rows], [value(s) for s in rows], dash, color=colour, marker=marker,
                    markevery=every, markersize=5, linewidth=width, label=name, zorder=3 + i)
    times = sorted({s[0] for s in samples})
    totals = [sum(s[3] for s in samples if s[0] == t and s[2] != "VM_STATE_OFF") / MiB for t in times]
    mem.plot(times, totals, ":", color="#555555", linewidth=1.5, label="total assigned", zorder=2)
    pool = POOL // scale / MiB
    vm5_max = 8 * GiB // scale / MiB
    mem.axhline(pool, color="black", linewidth=1, label=f"pool ({pool:.0f} MiB)")
    mem.axhline(vm5_max, color=STYLES["vm5"][0], linewidth=1, linestyle="-.",
                label=f"vm5 Maximum ({vm5_max:.0f} MiB)")
    pres.axhline(100, color="#888888", linewidth=1, linestyle="-.", label="pressure 100")
    pres.axhline(40, color="#bbbbbb", linewidth=1, linestyle="-.", label="pressure 40")
    t_stop = stop_time(samples)
    if t_stop is not None:
        for ax in (mem, pres):
            ax.axvline(t_stop, color="#444444", linewidth=1, linestyle=(0, (2, 2)))
        mem.annotate("VMs 1-2 stop", (t_stop, pool), xytext=(4, -14), textcoords="offset points")
    mem.set_ylabel("assigned memory (MiB)")
    pres.set_ylabel("pressure (committed / assigned, %)")
    pres.set_xlabel("seconds")
    for ax in (mem, pres):
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 5, 10]))
        ax.set_ylim(bottom=0)
        ax.grid(True, color="#eeeeee")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    mem.set_ylim(top=pool * 1.08)
    mem.set_title(title)
    fig.text(0.01, 0.01, caption, fontsize=8.5, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


SEED_CAPTION = ("Compare the seed's Figures 18-19 (assigned memory and pressure while memory is short: VMs 1-2 "
                "flat at their 2 GB Minimum under pressure 40, VMs 3-5 over 100) and 23-24 (after VMs 1-2 stop: "
                "VM 5 near its 8 GB Maximum, VMs 3-4 about 1.5 GB more between them, pressure still high). "
                "Lines that coincide are drawn wide under narrow, with staggered markers.")
