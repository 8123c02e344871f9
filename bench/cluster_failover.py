#!/usr/bin/python3
"""Failover time of a highly available VM and its parts, on three private etcd members and
three vmmsd hosts on this machine: the VM's host's vmmsd is stopped (kill -STOP) and the
clock runs from there to its host Down (ListClusterNodes from the leader), the VM's key
given to another host, the VM Running there, and the guest's second memsoak pass there;
then cluster-wide Get-VM (ListVms -Cluster) latency with N VMs over the 3 hosts.
Usage: cluster_failover.py [runs] [lease_ttl_s] [vms]. Prints one JSON object."""
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_hosts import HOST_NAMES, ClusterHosts, cluster_vms, nodes, states  # noqa: E402
from move_hosts import SOAK, passes  # noqa: E402
from vmms_host import wait_for  # noqa: E402

MiB = 1 << 20


def poll(predicate, timeout=120):
    return wait_for(predicate, timeout, interval=0.02)


def failover(hosts, ttl, run):
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
    t0 = time.monotonic()
    try:
        poll(lambda: states(leader)[victim.name] == "DOWN")
        down = time.monotonic() - t0
        poll(lambda: cluster_vms(leader)[name].host != victim.name)
        given = time.monotonic() - t0
        new = hosts[cluster_vms(leader)[name].host]
        poll(lambda: {v.name: v.state for v in new.api.ListVms(new.pb.ListVmsRequest(), timeout=5).vms}.get(name)
             == new.pb.VM_STATE_RUNNING)
        running = time.monotonic() - t0
        poll(lambda: len(passes(new, vm.id)) >= 2)
        guest = time.monotonic() - t0
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    poll(lambda: states(leader)[victim.name] == "UP")
    for h in (victim, new):
        try:
            h.api.StopVm(h.pb.StopVmRequest(vm=name, turn_off=True), timeout=30)
        except Exception:
            pass
        h.api.RemoveVm(h.pb.VmRef(vm=name), timeout=30)
    return {"down_s": down, "given_s": given, "running_s": running, "guest_second_pass_s": guest}


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
        samples = [failover(hosts, ttl, i) for i in range(runs)]
        result = {"lease_ttl_s": ttl, "fence_margin_s": ttl / 4, "runs": runs}
        for key in samples[0]:
            values = [s[key] for s in samples]
            result[key] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                           "max": round(max(values), 3)}
        # Cluster-wide Get-VM with n_vms defined over the three hosts (Off: only their keys matter).
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
