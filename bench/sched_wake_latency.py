#!/usr/bin/python3
"""Wake-to-run latency of a VP woken from Idle while every LP is busy, with and
without hvd's I/O-wake boost. Two 2-VP `cpu` VMs keep both LPs busy; an `idle` VM
wakes every IDLE_PERIOD_MS. hvd measures the latency itself: the time from the wake
(its Idle deadline passing, on the timer thread) to the VP's dispatch, summed per VP
(wake_wait_ns / wake_dispatches, and the maximum). Prints one JSON object.

Usage: sched_wake_latency.py [SECONDS (default 10)]"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import HvHost  # noqa: E402

# Not a multiple or divisor of the 10 ms slice: with a 10 ms period the wake-ups
# phase-lock to slice ends (the waker is dispatched at a slice end and its next
# deadline lands on the next one), which hides the wait a boost is meant to cut.
IDLE_PERIOD_MS = 7


def measure(boost, seconds):
    extra = ["--io-boost"] if boost else []
    with HvHost(memory="1GB", lps=2, extra=extra) as host:
        for name in ("busy1", "busy2"):
            host.start_vm(name, workload="cpu", vps=2, memory="64MB")
        waker = host.start_vm("waker", workload="idle", memory="64MB",
                              boot_args=f"idle_period_ms={IDLE_PERIOD_MS}")
        for vm in host.vms:
            vm.wait_console(r"^(vp1: )?cpu: vp=1 batches=|^vmms-guest: boot ", timeout=60)
        time.sleep(1)
        first = host.counters(0.01)
        counters = host.counters(seconds)
        assert "unknown" not in waker.console(), waker.console()
    before = host.partition(first, "waker")["vps"][0]
    after = host.partition(counters, "waker")["vps"][0]
    wakes = after["wake_dispatches"] - before["wake_dispatches"]
    busy = [vp["total_run_pct"] for name in ("busy1", "busy2") for vp in host.partition(counters, name)["vps"]]
    return {
        "io_boost": boost,
        "wakes": wakes,
        "mean_wake_to_dispatch_us": round((after["wake_wait_ns"] - before["wake_wait_ns"]) / wakes / 1000, 1)
        if wakes else None,
        "max_wake_to_dispatch_us": round(after["wake_wait_max_ns"] / 1000, 1),
        "boosts": after["boosts"],
        "waker_run_pct": after["total_run_pct"],
        "busy_vp_pct_of_one_lp": [round(b, 2) for b in busy],
        "lp_busy_pct": [lp["total_run_pct"] for lp in counters["lps"]],
    }


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    results = [measure(boost, seconds) for boost in (False, True)]
    print(json.dumps({"benchmark": "sched_wake_latency", "lps": 2, "idle_period_ms": IDLE_PERIOD_MS,
                      "sample_seconds": seconds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
