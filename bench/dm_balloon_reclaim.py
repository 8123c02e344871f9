#!/usr/bin/python3
"""Dynamic Memory: how fast the balloon gives host memory back, and how long hot-add
takes. Host memory freed is measured (the partition memfd's st_blocks, as hvd's
counters report it), never computed from page counts. Prints one JSON object:

- hvd_balloon: PartitionBalloon over the root interface, 65,536-page requests, on
  1 GiB a client touched through the memfd: hvd's own cost (checks, punch-hole, pool).
- guest_balloon: vmmsd's path end to end: MemoryAdjust to vmwp, BALLOON_REQUEST to the
  guest kernel (under Unicorn), page numbers back through the ring, PartitionBalloon;
  timed from the request until hvd counts every page ballooned. The guest first soaks
  and releases most of its RAM, so the balloon's pages are mostly ones the host backed.
- hot_add: PartitionHotAdd round trips (2 MiB); MemoryAdjust of 64 MiB until vmwp
  replies (hvd has charged and grown it) and until the guest's console line says the
  guest accepted the range (that line also crosses hvd's console path)."""
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from test_dynamic_memory import PAGE, RootClient, start_vm, touch  # noqa: E402
from vmms_host import HvHost, wait_for  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
HV_REQUEST_PAGES = 65536


def partition(client, name):
    """This partition's counters, read over the same connection (CountersGet)."""
    reply, _ = client.call(counters_get=client.hv.CountersGet())
    for p in reply.counters.partitions:
        if p.name == name:
            return p
    return None


def rate(freed, seconds):
    return round(freed / GiB / seconds, 3) if seconds > 0 else None


def encoded_balloons(client, pid, pages):
    """The requests, serialized before the clock starts: Python's protobuf encoding of
    65,536 page numbers takes longer than hvd's handling of them."""
    requests = []
    for first in range(0, pages, HV_REQUEST_PAGES):
        request = client.hv.Request(id=client.next_id, partition_balloon=client.hv.PartitionBalloon(
            partition_id=pid, pfns=range(first, first + HV_REQUEST_PAGES)))
        client.next_id += 1
        requests.append((request.id, request.SerializeToString()))
    return requests


def hvd_balloon():
    with HvHost(memory="2GB") as host:
        client = RootClient(host)
        pid, ram = client.create("reclaim", GiB, GiB)
        pages = GiB // PAGE
        touch(ram, 0, pages)
        requests = encoded_balloons(client, pid, pages)
        before = partition(client, "reclaim").resident_bytes
        t0 = time.monotonic()
        for request_id, data in requests:
            client.sock.send(data)
            message = client.hv.Message()
            message.ParseFromString(client.sock.recv(1 << 20))
            assert message.reply.id == request_id, message
            assert message.reply.partition_memory.pages.accepted == HV_REQUEST_PAGES, message
        seconds = time.monotonic() - t0
        after = partition(client, "reclaim").resident_bytes
        client.close()
        return {"ballooned_bytes": GiB, "seconds": round(seconds, 4), "resident_before_bytes": before,
                "resident_after_bytes": after, "freed_bytes": before - after,
                "freed_gib_per_s": rate(before - after, seconds)}


def guest_balloon_once():
    with HvHost(memory="2GB") as host:
        vm, control = start_vm(host, "reclaim", "576MB", "576MB",
                               "memsoak_mb=512 memsoak_step_mb=128 memsoak_step_ms=10 memsoak_hold_s=1")
        vm.wait_console(r"^memsoak: released", timeout=120)
        client = RootClient(host)
        before = partition(client, "reclaim").resident_bytes
        target = 512 * MiB
        t0 = time.monotonic()
        reply = control.adjust(-target)
        assert reply.error == 0, reply.error_message
        part = wait_for(lambda: (lambda p: p if p.ballooned_bytes >= target else None)(partition(client, "reclaim")),
                        120, interval=0.002, what="the balloon to hold 512 MiB")
        seconds = time.monotonic() - t0
        after = part.resident_bytes
        line = re.findall(r"^dm: balloon request=\d+ asked=\d+ took=\d+ in (\d+) us", vm.console(), re.M)
        control.close()
        client.close()
        return {"ballooned_bytes": part.ballooned_bytes, "seconds": round(seconds, 4),
                "resident_before_bytes": before, "resident_after_bytes": after, "freed_bytes": before - after,
                "freed_gib_per_s": rate(before - after, seconds),
                "ballooned_gib_per_s": rate(part.ballooned_bytes, seconds),
                "guest_balloon_us": int(line[-1]) if line else None}


def guest_balloon(runs=3):
    """Median of `runs` fresh VMs (the guest's pace varies with host scheduling)."""
    results = [guest_balloon_once() for _ in range(runs)]
    median = sorted(results, key=lambda r: r["freed_gib_per_s"])[runs // 2]
    return dict(median, runs_freed_gib_per_s=[r["freed_gib_per_s"] for r in results])


def hot_add():
    with HvHost(memory="2GB") as host:
        client = RootClient(host)
        pid, _ = client.create("grow", 64 * MiB, GiB)
        samples = []
        for _ in range(100):
            t0 = time.perf_counter()
            reply = client.hot_add(pid, 2 * MiB)
            samples.append(time.perf_counter() - t0)
            assert reply.error == 0, reply.error_message
        client.close()
        vm, control = start_vm(host, "grow2", "64MB", "1GB", "memsoak_mb=16")
        replies, accepted = [], []
        for i in range(10):
            t0 = time.monotonic()
            assert control.adjust(64 * MiB).error == 0
            replies.append(time.monotonic() - t0)
            wait_for(lambda: len(re.findall(r"^dm: hot-add request=\d+ .*accepted=67108864", vm.console(), re.M)) > i,
                     20, interval=0.0005, what="the guest to accept the range")
            accepted.append(time.monotonic() - t0)
        control.close()
        return {"hvd_request_2mib_p50_us": round(statistics.median(samples) * 1e6, 1),
                "hvd_request_2mib_max_us": round(max(samples) * 1e6, 1),
                "memory_adjust_64mib_reply_p50_ms": round(statistics.median(replies) * 1000, 2),
                "memory_adjust_64mib_to_guest_accept_p50_ms": round(statistics.median(accepted) * 1000, 2),
                "memory_adjust_64mib_to_guest_accept_max_ms": round(max(accepted) * 1000, 2)}


def main():
    print(json.dumps({"benchmark": "dm_balloon_reclaim", "hvd_balloon": hvd_balloon(),
                      "guest_balloon": guest_balloon(), "hot_add": hot_add()}, indent=2))


if __name__ == "__main__":
    main()
