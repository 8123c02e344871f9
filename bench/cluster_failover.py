#!/usr/bin/python3
"""Failover time of a highly available VM and its parts, on three private etcd members and
three vmmsd hosts on this machine: the VM's host's vmmsd is stopped (kill -STOP) and the
clock runs from there. Each part is a time from the stop (seconds), read where it happens:
  lease_expired_s   etcd deleted the host's alive key (its lease ran out; polled on etcd)
  down_seen_s       the leader saw the host Down (its cluster-down event)
  given_s           the leader gave the VM's key to another host (its cluster-ha event)
  restart_s         that host began Start-VM for it (the VM's cluster-ha event there)
  running_s         the VM Running there (its state event)
  guest_marker_s    the guest's first console marker there (memsoak: pass N), polled
and the intervals between them: detect (expired -> seen), margin (seen -> given: the fence
margin the leader waits; detect_and_margin is both), placement (given -> restart), start
(restart -> running), guest (running -> marker). Then cluster-wide Get-VM (ListVms
-Cluster) latency with N VMs over the 3 hosts (0 skips it).
Usage: cluster_failover.py [runs] [lease_ttl_s] [vms]. Prints one JSON object."""
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_hosts import HOST_NAMES, ClusterHosts, cluster_vms, nodes, owner_record, states  # noqa: E402
from move_hosts import SOAK, passes  # noqa: E402
from vmms_host import wait_for  # noqa: E402

MiB = 1 << 20


def poll(predicate, timeout=120):
    return wait_for(predicate, timeout, interval=0.02)


def event_time(host, t0, vm="", kind=None, match=lambda e: True):
    """The wall-clock time (s) of host's first event at or after t0 of `kind` that matches."""
    found = [e.time_unix_ms / 1000 for e in host.api.ListEvents(host.pb.ListEventsRequest(vm=vm, limit=10000),
                                                                  timeout=10).events
             if e.time_unix_ms / 1000 >= t0 - 0.002 and (kind is None or e.kind == kind) and match(e)]
    return min(found) if found else None


def failover(hosts, etcd, ttl, run):
    leader = next(h for h in hosts.values() if nodes(h)[h.name].leader)
    victim = next(h for h in hosts.values() if h is not leader)
    name = f"ha{run}"
    vm = victim.create(name, startup=64 * MiB, workload="memsoak", boot_args=SOAK)
    victim.api.UpdateVm(victim.pb.UpdateVmRequest(vm=name, highly_available=True, update_mask=["highly_available"]),
                        timeout=10)
    victim.api.StartVm(victim.pb.VmRef(vm=name), timeout=60)
    poll(lambda: len(passes(victim, vm.id)) >= 2)
    poll(lambda: (lambda v: v and v.state == leader.pb.VM_STATE_RUNNING)(cluster_vms(leader).get(name)))
    os.kill(victim.proc.pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        poll(lambda: etcd.get(f"/vmms/alive/{victim.name}") is None)
        expired = time.time()
        poll(lambda: (lambda cv: cv is not None and cv.host != victim.name)(owner_record(etcd, leader, vm.id)))
        new = hosts[owner_record(etcd, leader, vm.id).host]
        poll(lambda: len(passes(new, vm.id)) >= 1)
        marker = time.time()
        # A vmmsd older than the cluster-down event has none: detect and margin are then one part.
        seen = event_time(leader, t0, kind="cluster-down", match=lambda e: victim.name in e.message)
        given = poll(lambda: event_time(leader, t0, kind="cluster-ha", match=lambda e: f"'{name}'" in e.message))
        restart = poll(lambda: event_time(new, t0, vm=name, kind="cluster-ha"))
        running = poll(lambda: event_time(new, t0, vm=name, kind="state",
                                          match=lambda e: e.state == new.pb.VM_STATE_RUNNING))
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    poll(lambda: states(leader)[victim.name] == "UP")
    for h in (victim, new):
        try:
            h.api.StopVm(h.pb.StopVmRequest(vm=name, turn_off=True), timeout=30)
        except Exception:
            pass
        h.api.RemoveVm(h.pb.VmRef(vm=name), timeout=30)
    at = {"lease_expired_s": expired, "down_seen_s": seen, "given_s": given, "restart_s": restart,
          "running_s": running, "guest_marker_s": marker}
    out = {k: v - t0 for k, v in at.items() if v is not None}
    out.update({"detect_and_margin_s": given - expired, "placement_s": restart - given,
                "start_s": running - restart, "guest_s": marker - running})
    if seen is not None:
        out.update({"detect_s": seen - expired, "margin_s": given - seen})
    return out


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ttl = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    n_vms = int(sys.argv[3]) if len(sys.argv) > 3 else 1000

    class Bench(ClusterHosts):
        pass

    Bench.setUpClass()
    hosts = {}
    try:
        for name in HOST_NAMES:
            hosts[name] = Bench.join(name, ttl=ttl)
            hosts[name].name = name
        poll(lambda: states(hosts["hosta"]) == {n: "UP" for n in HOST_NAMES})
        poll(lambda: sum(n.leader for n in nodes(hosts["hosta"]).values()) == 1)
        samples = [failover(hosts, Bench.etcd, ttl, i) for i in range(runs)]
        result = {"lease_ttl_s": ttl, "fence_margin_s": ttl / 4, "runs": runs}
        for key in sorted(set().union(*samples)):
            values = [s[key] for s in samples if key in s]
            result[key] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                           "max": round(max(values), 3)}
        # Cluster-wide Get-VM with n_vms defined over the three hosts (Off: only their keys matter).
        if n_vms:
            names = list(HOST_NAMES)
            for i in range(n_vms):
                hosts[names[i % 3]].create(f"bench-{i:04d}")
            poll(lambda: len(cluster_vms(hosts["hosta"])) >= n_vms, timeout=300)
            lat = []
            for _ in range(20):
                t = time.monotonic()
                count = len(cluster_vms(hosts["hostb"]))
                lat.append(time.monotonic() - t)
            lat.sort()
            result["cluster_list_vms"] = {"vms": count, "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                                          "max_ms": round(lat[-1] * 1000, 1)}
    finally:
        for h in hosts.values():
            h.close()
        Bench.tearDownClass()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
