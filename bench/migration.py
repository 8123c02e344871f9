#!/usr/bin/python3
"""Live migration at the worker (worker.proto MigrateOut / --incoming-fd), a 256 MiB
guest dirtying about 0 %, 10 % and 50 % of its memory per second, migrated over a
socketpair between two workers on one hvd: total time, downtime (the source's pause to
the destination's resume, as the workers report them; and the source's pause to END
written), bytes sent / guest RAM, and the ideal (the bytes the guest holds / the link
bandwidth the sender measured). Also what dirty tracking costs a guest's stores
(bench-dirty-log). Prints JSON.

The guest's own reference time is not a downtime measure here: the clock is restored
from the value saved at the pause, so the guest sees only the destination's own paused
time, never the transfer (by design, as for Save-VM: its time never jumps). The dirty
rates are memsoak's working set touched every pass (about 10 passes a second), and the
rate the sender measured is printed beside the one asked for.

QEMU side by side, and the whole Move-VM between two vmmsd hosts: bench/migration_vs_qemu.py."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from test_live_stream import Control, launch  # noqa: E402
from vmms_host import BUILD, HvHost, wait_for  # noqa: E402

MiB = 1 << 20
RAM = "256MB"
# memsoak touches its whole working set every ~150 ms (a pass, then 100 ms asleep).
CASES = [
    ("0%", "idle", None, 0),
    ("10%", "memsoak", "memsoak_mb=4 memsoak_step_mb=4", 0),
    ("50%", "memsoak", "memsoak_mb=19 memsoak_step_mb=19", 0),
    # The same guest over a 32 MiB/s link: it dirties faster than it is sent, so
    # auto-converge throttles it.
    ("50%", "memsoak", "memsoak_mb=19 memsoak_step_mb=19", 32 * MiB),
]


def one(host, label, workload, boot_args, link):
    name = f"m{label.rstrip('%')}"
    src, src_control = launch(host, name, workload, memory=RAM, boot_args=boot_args)
    ready = r"^vmms-guest: boot " if workload == "idle" else r"^memsoak: pass \d+"
    src.wait_console(ready, timeout=60, count=1 if workload == "idle" else 3)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    dst, dst_control = launch(host, name, workload, memory=RAM, boot_args=boot_args, tag="-dst",
                              incoming=theirs.fileno())
    theirs.close()
    control = Control(src_control)
    t0 = time.monotonic()
    reply = control.migrate_out(ours.fileno(), auto_converge=True, max_bandwidth_bytes_per_s=link)
    ours.close()
    assert reply.error == 0, reply.error_message
    outcome, progress = control.outcome(timeout=300)
    assert outcome.HasField("migration_out_done"), f"{label} link {link}: {outcome}\n{dst.stderr()[-1500:]}"
    done = outcome.migration_out_done
    wait_for(lambda: os.path.exists(dst_control) or dst.proc.poll() is not None, 60, what="the destination")
    incoming = Control(dst_control)
    incoming._receive()  # IncomingDone
    resumed = incoming.request(resume=incoming.worker.Resume())
    total_s = time.monotonic() - t0
    assert resumed.error == 0, resumed.error_message
    assert control.request(migrate_finish=control.worker.MigrateFinish()).error == 0
    src.proc.wait(10)
    if workload == "memsoak":
        dst.wait_console(r"^memsoak: pass \d+", timeout=60, count=1)
    corrupt = "CORRUPTION" in dst.console()
    bandwidth = max((p.bandwidth_bytes_per_s for p in progress), default=0)
    dirty = max([p.dirty_bytes_per_s for p in progress] + [0])
    held = (done.data_pages + done.zero_pages) * 4096
    incoming.close()
    control.close()
    dst.stop()
    return {
        "dirty_asked": label,
        "workload": workload,
        "boot_args": boot_args or "",
        "guest_ram_bytes": 256 * MiB,
        "link_limit_bytes_per_s": link,
        "dirty_bytes_per_s_measured": dirty,
        "rounds": done.rounds,
        "max_throttle_percent": done.max_throttle_percent,
        "total_s": round(total_s, 3),
        "sender_duration_s": done.duration_ms / 1000,
        "downtime_ms_paused_to_resumed": round((resumed.resumed_unix_ns - done.paused_unix_ns) / 1e6, 1),
        "downtime_ms_paused_to_end_written": round(done.paused_ns / 1e6, 1),
        "final_bytes": done.final_bytes,
        "bytes_sent": done.bytes_sent,
        "bytes_sent_over_ram": round(done.bytes_sent / (256 * MiB), 3),
        "data_pages": done.data_pages,
        "zero_pages": done.zero_pages,
        "link_bytes_per_s_measured": bandwidth,
        "ideal_s": round(held / bandwidth, 3) if bandwidth else None,
        "total_over_ideal": round(total_s / (held / bandwidth), 2) if bandwidth and held else None,
        "guest_corruption": corrupt,
    }


def main():
    results = []
    for label, workload, boot_args, link in CASES:
        with HvHost(memory="1GB") as host:
            results.append(one(host, label, workload, boot_args, link))
    overhead = json.loads(subprocess.run([str(BUILD / "bench" / "bench-dirty-log")], check=True,
                                         capture_output=True, text=True, timeout=600).stdout)
    print(json.dumps({"bench": "migration", "transport": "socketpair, one hvd", "cases": results,
                      "dirty_tracking_cost": overhead}, indent=1))


if __name__ == "__main__":
    main()
