"""The chaos suite: kill -9 vmmsd, a worker (vmwp) or hvd at random moments while a
stream of operations runs, N rounds, and check after each round that
  - no definition is lost or half-written (what vmmsd acknowledged is there, settings
    changed together are seen together),
  - no VM runs twice, and no worker runs a VM vmmsd does not know as running,
  - no Running VM is without its worker,
  - the store passes PRAGMA quick_check.
Prints the figures as JSON; exits 1 if any round broke a rule.

    /usr/bin/python3 tests/chaos/chaos.py [--rounds 20] [--seed 1]
    meson test -C build --suite chaos
"""
import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import grpc  # noqa: E402

from vmms_host import wait_for  # noqa: E402
from vmmsd_host import VmmsdHost, pid_alive, processes_naming  # noqa: E402

MiB = 1 << 20
NAMES = [f"chaos{i}" for i in range(6)]
SETTLE_S = 25


class Model:
    """What vmmsd acknowledged, and what was in flight when the kill came."""

    def __init__(self):
        self.lock = threading.Lock()
        self.exists = {}      # name -> True (acknowledged created) / False (acknowledged removed)
        self.memory = {}      # name -> {(buffer, priority) acknowledged or in flight}
        self.uncertain = set()  # names whose create/remove was in flight at a kill

    def op(self, host, rng, stats):
        pb, api = host.pb, host.api
        name = rng.choice(NAMES)
        kind = rng.choice(["create", "create", "start", "start", "stop", "memory", "memory", "remove", "pause"])
        try:
            if kind == "create":
                with self.lock:
                    self.uncertain.add(name)
                api.CreateVm(pb.CreateVmRequest(name=name, memory=pb.MemorySettings(startup_bytes=32 * MiB),
                                                workload=rng.choice(["idle", "cpu"])), timeout=10)
                with self.lock:
                    self.exists[name] = True
                    self.memory[name] = {(20, 50)}
                    self.uncertain.discard(name)
            elif kind == "remove":
                with self.lock:
                    self.uncertain.add(name)
                api.RemoveVm(pb.VmRef(vm=name), timeout=10)
                with self.lock:
                    self.exists[name] = False
                    self.memory.pop(name, None)
                    self.uncertain.discard(name)
            elif kind == "start":
                api.StartVm(pb.VmRef(vm=name), timeout=10)
            elif kind == "stop":
                api.StopVm(pb.StopVmRequest(vm=name, turn_off=True), timeout=10)
            elif kind == "pause":
                api.PauseVm(pb.VmRef(vm=name), timeout=10)
            elif kind == "memory":
                value = rng.randrange(5, 100)
                with self.lock:
                    self.memory.setdefault(name, set()).add((value, value))
                api.UpdateMemory(pb.UpdateMemoryRequest(vm=name, memory=pb.MemorySettings(buffer=value, priority=value),
                                                        update_mask=["buffer", "priority"]), timeout=10)
                with self.lock:
                    self.memory[name] = {(value, value)}
            stats["acknowledged"] += 1
        except grpc.RpcError as e:
            stats["refused" if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                                grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) else "cut"] += 1
            if kind in ("create", "remove") and e.code() in (grpc.StatusCode.ALREADY_EXISTS,
                                                             grpc.StatusCode.NOT_FOUND):
                with self.lock:  # the refusal says how it stands
                    self.exists[name] = e.code() == grpc.StatusCode.ALREADY_EXISTS
                    self.uncertain.discard(name)
        stats["issued"] += 1


def workers(host):
    """vm id -> pids of the vmwp processes running it."""
    running = {}
    for pid in processes_naming(str(host.runtime / "workers")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm != "vmwp":
            continue
        for arg in cmdline:
            if arg.startswith(b"--vm-id="):
                running.setdefault(arg[len(b"--vm-id="):].decode(), []).append(pid)
    return running


def check(host, model):
    pb = host.pb
    problems = []
    vms = {v.name: v for v in host.api.ListVms(pb.ListVmsRequest(), timeout=10).vms}
    with model.lock:
        for name, exists in model.exists.items():
            if name in model.uncertain:
                continue
            if exists and name not in vms:
                problems.append(f"{name}: acknowledged but gone")
            if not exists and name in vms:
                problems.append(f"{name}: removed but back")
        for name, vm in vms.items():
            allowed = model.memory.get(name)
            seen = (vm.memory.buffer, vm.memory.priority)
            if seen[0] != seen[1] and seen != (20, 50):
                problems.append(f"{name}: Buffer and Priority half-written {seen}")
            elif allowed and seen not in allowed and name not in model.uncertain:
                problems.append(f"{name}: memory settings {seen} were never acknowledged ({sorted(allowed)})")
    by_id = {v.id: v for v in vms.values()}
    for vm_id, pids in workers(host).items():
        vm = by_id.get(vm_id)
        if len(pids) > 1:
            problems.append(f"VM {vm_id} runs in {len(pids)} workers {pids}")
        if not vm or vm.state not in (pb.VM_STATE_RUNNING, pb.VM_STATE_PAUSED):
            problems.append(f"worker {pids} runs VM {vm_id}, which vmmsd has as "
                            f"{pb.VmState.Name(vm.state) if vm else 'unknown'}")
    for vm in vms.values():
        if vm.state in (pb.VM_STATE_RUNNING, pb.VM_STATE_PAUSED) and not (vm.worker_pid and pid_alive(vm.worker_pid)):
            problems.append(f"{vm.name} is {pb.VmState.Name(vm.state)} without a worker")
    db = sqlite3.connect(f"file:{host.state / 'vmms.db'}?mode=ro", uri=True)
    try:
        result = db.execute("PRAGMA quick_check").fetchall()
    finally:
        db.close()
    if result != [("ok",)]:
        problems.append(f"store: quick_check says {result}")
    return problems


def settled(host):
    """No VM between states, every running VM with its worker and every worker with its
    VM: what a host at rest looks like (a round that never gets there fails)."""
    pb = host.pb
    vms = host.api.ListVms(pb.ListVmsRequest(), timeout=10).vms
    if any(v.state in (pb.VM_STATE_STARTING, pb.VM_STATE_STOPPING) for v in vms):
        return False
    live = [v for v in vms if v.state in (pb.VM_STATE_RUNNING, pb.VM_STATE_PAUSED)]
    # A worker that died with hvd is noticed within moments: wait for vmmsd to catch up.
    if any(not (v.worker_pid and pid_alive(v.worker_pid)) for v in live):
        return False
    return set(workers(host)) <= {v.id for v in live}


def hvd_pid(host):
    pids = [p for p in processes_naming(f"--socket={host.runtime}/hvd.sock")
            if Path(f"/proc/{p}/comm").read_text().strip() == "hvd"]
    return pids[0] if pids else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    model = Model()
    stats = {"rounds": args.rounds, "seed": args.seed, "issued": 0, "acknowledged": 0, "refused": 0, "cut": 0,
             "kills": {"vmmsd": 0, "vmwp": 0, "hvd": 0}, "violations": [], "settle_timeouts": 0}
    started = time.monotonic()
    with VmmsdHost(hvd_memory="1GB", stop_timeout=2) as host:
        for round_no in range(args.rounds):
            stop = threading.Event()

            def stream():
                while not stop.is_set():
                    model.op(host, rng, stats)

            thread = threading.Thread(target=stream)
            thread.start()
            time.sleep(rng.uniform(0.2, 1.5))
            target = rng.choice(["vmmsd", "vmwp", "hvd"])
            if target == "vmmsd":
                host.kill9()
            elif target == "vmwp":
                pids = [p for ps in workers(host).values() for p in ps]
                if pids:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                else:
                    target = "vmmsd"
                    host.kill9()
            else:
                pid = hvd_pid(host)
                if pid:
                    os.kill(pid, signal.SIGKILL)
            stats["kills"][target] += 1
            stop.set()
            thread.join()
            if target == "vmmsd":
                host.start()
            try:  # at rest twice, a second apart: processes that die with hvd take a moment
                for _ in range(2):
                    wait_for(lambda: settled(host), SETTLE_S, interval=0.2, what="the host to settle")
                    time.sleep(1)
            except TimeoutError:
                stats["settle_timeouts"] += 1
            problems = check(host, model)
            for problem in problems:
                stats["violations"].append(f"round {round_no} (killed {target}): {problem}")
            if problems and "log" not in stats:  # vmmsd's side of the first broken round
                stats["log"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"vmms-chaos-{os.getpid()}.log")
                events = host.api.ListEvents(host.pb.ListEventsRequest(limit=80), timeout=10).events
                vms = host.api.ListVms(host.pb.ListVmsRequest(), timeout=10).vms
                Path(stats["log"]).write_text(host.log() + "\n== events\n" + "\n".join(
                    f"{e.vm_name} {e.kind} {host.pb.VmState.Name(e.state)}: {e.message}" for e in events) +
                    "\n== vms\n" + "\n".join(f"{v.name} {host.pb.VmState.Name(v.state)} pid {v.worker_pid}"
                                               for v in vms) + f"\n== workers {workers(host)}\n")
            with model.lock:
                model.uncertain.clear()
                for vm in host.api.ListVms(host.pb.ListVmsRequest(), timeout=10).vms:
                    model.exists[vm.name] = True
                    model.memory[vm.name] = {(vm.memory.buffer, vm.memory.priority)}
                for name in NAMES:
                    if name not in {v.name for v in host.api.ListVms(host.pb.ListVmsRequest(), timeout=10).vms}:
                        model.exists[name] = False
    stats["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(stats, indent=2))
    ok = not stats["violations"] and not stats["settle_timeouts"]
    print(f"{args.rounds if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
