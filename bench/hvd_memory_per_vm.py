#!/usr/bin/python3
"""hvd's own memory per running VM, and what it gives back when they stop.

Starts one hvd, reads its memory (VmRSS, RssAnon, RssFile, RssShmem and AnonHugePages
from /proc, kB), starts N idle one-VP VMs (32 MB each), reads it again, stops them and
reads it once more. Prints one JSON object with the three readings and the growth per
VM. Guest RAM is not in hvd's RSS until hvd itself touches it. Usage:
hvd_memory_per_vm.py [vms] (default 10)."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import HvHost  # noqa: E402

STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def memory_kb(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            out[key] = int(value.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            out["AnonHugePages"] = int(line.split()[1])
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with HvHost(memory="2GB", lps=2) as host:
        before = memory_kb(host.hvd.pid)
        vms = [host.start_vm(f"idle{i}", memory="32MB") for i in range(n)]
        time.sleep(2)  # every VP has run and gone idle
        running = memory_kb(host.hvd.pid)
        for vm in vms:
            vm.stop()
        time.sleep(2)
        stopped = memory_kb(host.hvd.pid)
    print(json.dumps({"benchmark": "hvd_memory_per_vm", "vms": n, "unit": "kB", "before": before,
                      "running": running, "after_stop": stopped,
                      "rss_per_vm": round((running["VmRSS"] - before["VmRSS"]) / n),
                      "huge_pages_per_vm": round((running["AnonHugePages"] - before["AnonHugePages"]) / n)},
                     indent=2))


if __name__ == "__main__":
    main()
