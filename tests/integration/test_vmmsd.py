"""vmmsd end to end through its gRPC API, called by Debian's python3-grpcio with stubs
protoc generated from proto/vmms.proto: lifecycle, named errors, durability across
kill -9, re-attaching to running workers, and noticing a dead worker."""
import os
import random
import signal
import sqlite3
import threading
import time
import unittest

import grpc

from vmmsd_host import VmmsdHost, pid_alive
from vmms_host import wait_for

MiB = 1 << 20


class LifecycleTest(unittest.TestCase):
    def test_create_start_get_stop_remove(self):
        with VmmsdHost() as host:
            pb = host.pb
            created = host.create("web", startup=64 * MiB, workload="idle", vps=2)
            self.assertEqual(created.state, pb.VM_STATE_OFF)
            self.assertEqual(len(created.id), 36)
            self.assertEqual(created.processor.relative_weight, 100)
            self.assertEqual(created.memory.minimum_bytes, 64 * MiB)  # min(512MB, startup)

            started = host.api.StartVm(pb.VmRef(vm="web"), timeout=30)
            self.assertEqual(started.state, pb.VM_STATE_RUNNING)
            self.assertGreater(started.worker_pid, 0)
            self.assertTrue(pid_alive(started.worker_pid))
            wait_for(lambda: "vmms-guest: boot" in host.console(created.id), 20, what="the guest to boot")

            got = host.api.GetVm(pb.VmRef(vm=created.id), timeout=5)
            self.assertEqual(got.name, "web")
            self.assertEqual(got.state, pb.VM_STATE_RUNNING)
            listed = host.api.ListVms(pb.ListVmsRequest(name_filter="W*"), timeout=5)
            self.assertEqual([v.name for v in listed.vms], ["web"])

            stopped = host.api.StopVm(pb.StopVmRequest(vm="web"), timeout=30)
            self.assertEqual(stopped.state, pb.VM_STATE_OFF)
            self.assertIn("shutdown requested", host.console(created.id), "the guest must honour the request")
            self.assertFalse(pid_alive(started.worker_pid))

            removed = host.api.RemoveVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(removed.id, created.id)
            with self.assertRaises(grpc.RpcError) as e:
                host.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

            events = host.api.ListEvents(pb.ListEventsRequest(limit=50), timeout=5).events
            self.assertEqual([e.message for e in events],
                             ["created", "starting", "started", "shutting down", "stopped (the guest shut down)",
                              "removed"])

    def test_turn_off_pause_and_resume(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("box", workload="cpu")
            host.api.StartVm(pb.VmRef(vm="box"), timeout=30)
            paused = host.api.PauseVm(pb.VmRef(vm="box"), timeout=10)
            self.assertEqual(paused.state, pb.VM_STATE_PAUSED)
            path = "\\Hyper-V Hypervisor Virtual Processor(box:*)\\% Total Run Time"

            def run_pct():
                try:
                    samples = host.api.GetCounters(pb.GetCountersRequest(paths=[path]), timeout=5).samples
                except grpc.RpcError as e:  # NOT_FOUND until two samples hold the VP
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    return None
                self.assertEqual(len(samples), 1, samples)
                return samples[0].value

            # Rates cover vmmsd's last 1 s sample: wait for one that lies wholly after the
            # change (bounded), so the test does not depend on the tick's phase or load.
            below = lambda limit: (lambda v: v is not None and v < limit)(run_pct())
            above = lambda limit: (lambda v: v is not None and v > limit)(run_pct())
            wait_for(lambda: below(1.0), 10, interval=0.25, what="the paused VP to stop running")
            time.sleep(1.5)
            self.assertLess(run_pct(), 1.0, "a paused VM's VP must not run")
            resumed = host.api.ResumeVm(pb.VmRef(vm="box"), timeout=10)
            self.assertEqual(resumed.state, pb.VM_STATE_RUNNING)
            wait_for(lambda: above(20.0), 10, interval=0.25, what="the resumed cpu VM to run again")
            off = host.api.StopVm(pb.StopVmRequest(vm="box", turn_off=True), timeout=20)
            self.assertEqual(off.state, pb.VM_STATE_OFF)

    def test_graceful_stop_turns_off_a_guest_that_does_not_answer(self):
        # A running guest that ignores the shutdown request (ignore_shutdown=1, as a hung
        # guest would): after --stop-timeout the worker turns the VM off, and the event says so.
        with VmmsdHost(stop_timeout=2) as host:
            pb = host.pb
            host.create("deaf", workload="idle", boot_args="ignore_shutdown=1")
            host.api.StartVm(pb.VmRef(vm="deaf"), timeout=30)
            t0 = time.monotonic()
            stopped = host.api.StopVm(pb.StopVmRequest(vm="deaf"), timeout=30)
            self.assertEqual(stopped.state, pb.VM_STATE_OFF)
            self.assertGreaterEqual(time.monotonic() - t0, 1.5, "it must wait for the guest first")
            events = host.api.ListEvents(pb.ListEventsRequest(vm="deaf", limit=2), timeout=5).events
            self.assertEqual([e.message for e in events], ["shutting down", "stopped (turned off)"])

    def test_graceful_stop_of_a_paused_vm_is_refused_naming_the_remedy(self):
        # Hyper-V refuses to shut down a paused guest; -TurnOff still stops it, at once.
        with VmmsdHost(stop_timeout=30) as host:
            pb = host.pb
            host.create("napping", workload="idle")
            host.api.StartVm(pb.VmRef(vm="napping"), timeout=30)
            host.api.PauseVm(pb.VmRef(vm="napping"), timeout=10)
            with self.assertRaises(grpc.RpcError) as refused:
                host.api.StopVm(pb.StopVmRequest(vm="napping"), timeout=10)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertEqual(refused.exception.details(),
                             "cannot shut down VM 'napping': it is Paused; resume it first, or use -TurnOff")
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="napping"), timeout=5).state, pb.VM_STATE_PAUSED)
            t0 = time.monotonic()
            off = host.api.StopVm(pb.StopVmRequest(vm="napping", turn_off=True), timeout=30)
            self.assertEqual(off.state, pb.VM_STATE_OFF)
            self.assertLess(time.monotonic() - t0, 10, "-TurnOff must not wait for the guest")

    def test_watch_events_streams_state_changes(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("watched")
            stream = host.api.WatchEvents(pb.WatchEventsRequest(vm="watched"), timeout=60)
            seen = []

            def reader():
                try:
                    for event in stream:
                        seen.append(event.message)
                        if event.message == "started":
                            return
                except grpc.RpcError:
                    pass

            t = threading.Thread(target=reader)
            t.start()
            time.sleep(0.3)
            host.api.StartVm(pb.VmRef(vm="watched"), timeout=30)
            t.join(timeout=20)
            stream.cancel()
            self.assertEqual(seen, ["starting", "started"])


class ProcessorSettingsTest(unittest.TestCase):
    def test_live_processor_change_reaches_hvd_and_reservations_are_admission_controlled(self):
        import json
        import subprocess
        from vmms_host import HVCTL

        with VmmsdHost(hvd_lps=1) as host:  # capacity: 100 % of one LP
            pb = host.pb
            host.create("web", workload="idle", vps=2, reserve=20)
            host.api.StartVm(pb.VmRef(vm="web"), timeout=30)
            host.api.UpdateProcessor(pb.UpdateProcessorRequest(
                vm="web", processor=pb.ProcessorSettings(reserve=30, maximum=75, relative_weight=300),
                update_mask=["reserve", "maximum", "relative_weight"]), timeout=10)
            out = subprocess.run([str(HVCTL), "--socket", str(host.runtime / "hvd.sock"), "--json", "--interval",
                                  "0.05", "counters"], check=True, capture_output=True, text=True).stdout
            part = [p for p in json.loads(out)["partitions"] if p["name"].startswith("web-")][0]
            self.assertEqual((part["reserve"], part["maximum"]), (30, 75), part)
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="web"), timeout=5).processor.relative_weight, 300)
            # 2 VPs x 30 % are reserved of 100 %: 2 VPs x 80 % more would exceed capacity.
            host.create("greedy", workload="idle", vps=2, reserve=80)
            with self.assertRaises(grpc.RpcError) as e:
                host.api.StartVm(pb.VmRef(vm="greedy"), timeout=30)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.details())
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="greedy"), timeout=5).state, pb.VM_STATE_OFF)
            # A live change beyond capacity is refused and leaves the stored settings alone.
            with self.assertRaises(grpc.RpcError) as e:
                host.api.UpdateProcessor(pb.UpdateProcessorRequest(
                    vm="web", processor=pb.ProcessorSettings(reserve=60, maximum=100),
                    update_mask=["reserve", "maximum"]), timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.details())
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="web"), timeout=5).processor.reserve, 30)


class BadInputTest(unittest.TestCase):
    def test_errors_are_named_and_leave_the_store_unchanged(self):
        with VmmsdHost(hvd_memory="256MB") as host:
            pb = host.pb
            host.create("base")
            host.create("busy", startup=128 * MiB, minimum_bytes=64 * MiB)
            host.api.StartVm(pb.VmRef(vm="busy"), timeout=30)
            before = host.api.ListVms(pb.ListVmsRequest(), timeout=5)
            C = grpc.StatusCode
            cases = [
                ("unknown VM", lambda: host.api.GetVm(pb.VmRef(vm="nope")), C.NOT_FOUND, "nope"),
                ("duplicate name", lambda: host.create("BASE"), C.ALREADY_EXISTS, "already exists"),
                ("name with a slash", lambda: host.create("a/b"), C.INVALID_ARGUMENT, "'/'"),
                ("300-character name", lambda: host.create("x" * 300), C.INVALID_ARGUMENT, "1-100 bytes"),
                ("count 33", lambda: host.create("c", vps=33), C.INVALID_ARGUMENT, "Count 33"),
                ("reserve 101", lambda: host.create("c", reserve=101), C.INVALID_ARGUMENT, "Reserve 101"),
                ("maximum 101", lambda: host.create("c", maximum=101), C.INVALID_ARGUMENT, "Maximum 101"),
                ("weight 10001", lambda: host.create("c", relative_weight=10001), C.INVALID_ARGUMENT,
                 "RelativeWeight 10001"),
                ("buffer 4", lambda: host.create("c", buffer=4), C.INVALID_ARGUMENT, "Buffer 4"),
                ("buffer 2001", lambda: host.create("c", buffer=2001), C.INVALID_ARGUMENT, "Buffer 2001"),
                ("priority 101", lambda: host.create("c", priority=101), C.INVALID_ARGUMENT, "Priority 101"),
                ("minimum below 32MB", lambda: host.create("c", minimum_bytes=16 * MiB), C.INVALID_ARGUMENT,
                 "MinimumBytes 16 MB is out of range 32 MB\u20131 TB"),
                ("startup above 1TB", lambda: host.create("c", startup=(1 << 40) + 2 * MiB), C.INVALID_ARGUMENT,
                 "StartupBytes 1.0 TB (1099513724928 bytes) is out of range 32 MB\u20131 TB"),
                ("minimum above startup", lambda: host.create("c", startup=64 * MiB, minimum_bytes=128 * MiB),
                 C.INVALID_ARGUMENT, "MinimumBytes 128 MB exceeds StartupBytes 64 MB"),
                ("startup above maximum", lambda: host.create("c", startup=256 * MiB, maximum_bytes=128 * MiB),
                 C.INVALID_ARGUMENT, "StartupBytes 256 MB exceeds MaximumBytes 128 MB"),
                ("unknown workload", lambda: host.create("c", workload="mine"), C.INVALID_ARGUMENT, "Workload"),
                ("start a running VM", lambda: host.api.StartVm(pb.VmRef(vm="busy")), C.FAILED_PRECONDITION,
                 "it is Running"),
                ("remove a running VM", lambda: host.api.RemoveVm(pb.VmRef(vm="busy")), C.FAILED_PRECONDITION,
                 "it is Running"),
                ("resume a running VM", lambda: host.api.ResumeVm(pb.VmRef(vm="busy")), C.FAILED_PRECONDITION,
                 "it is Running"),
                ("stop an off VM", lambda: host.api.StopVm(pb.StopVmRequest(vm="base")), C.FAILED_PRECONDITION,
                 "it is Off"),
                ("empty update mask", lambda: host.api.UpdateProcessor(pb.UpdateProcessorRequest(vm="base")),
                 C.INVALID_ARGUMENT, "update_mask is empty"),
                ("unknown mask field", lambda: host.api.UpdateMemory(pb.UpdateMemoryRequest(
                    vm="base", update_mask=["colour"])), C.INVALID_ARGUMENT, "unknown field 'colour'"),
                ("count change while running", lambda: host.api.UpdateProcessor(pb.UpdateProcessorRequest(
                    vm="busy", processor=pb.ProcessorSettings(count=2), update_mask=["count"])),
                 C.FAILED_PRECONDITION, "processor count"),
                ("bad counter path", lambda: host.api.GetCounters(pb.GetCountersRequest(paths=["nonsense"])),
                 C.INVALID_ARGUMENT, "not of the form"),
                ("counter path matching nothing", lambda: host.api.GetCounters(pb.GetCountersRequest(
                    paths=["\\No Such Set(*)\\Anything"])),
                 C.NOT_FOUND, "no counter matches '\\No Such Set(*)\\Anything'"),
                ("raise minimum while running", lambda: host.api.UpdateMemory(pb.UpdateMemoryRequest(
                    vm="busy", memory=pb.MemorySettings(minimum_bytes=96 * MiB), update_mask=["minimum_bytes"])),
                 C.FAILED_PRECONDITION, "may only be lowered"),
                ("lower maximum while running", lambda: host.api.UpdateMemory(pb.UpdateMemoryRequest(
                    vm="busy", memory=pb.MemorySettings(maximum_bytes=128 * MiB), update_mask=["maximum_bytes"])),
                 C.FAILED_PRECONDITION, "may only be raised"),
                ("startup change while running", lambda: host.api.UpdateMemory(pb.UpdateMemoryRequest(
                    vm="busy", memory=pb.MemorySettings(startup_bytes=192 * MiB), update_mask=["startup_bytes"])),
                 C.FAILED_PRECONDITION, "startup memory"),
            ]
            for what, call, code, text in cases:
                with self.subTest(what):
                    with self.assertRaises(grpc.RpcError) as e:
                        call()
                    self.assertEqual(e.exception.code(), code, e.exception.details())
                    self.assertIn(text, e.exception.details())
            after = host.api.ListVms(pb.ListVmsRequest(), timeout=5)
            strip = lambda vms: [(v.id, v.name, v.state, v.processor, v.memory, v.updated_unix_ms) for v in vms.vms]
            self.assertEqual(strip(before), strip(after))

    def test_start_beyond_the_pool_is_resource_exhausted_and_vm_stays_off(self):
        with VmmsdHost(hvd_memory="128MB") as host:
            pb = host.pb
            host.create("huge", startup=256 * MiB)
            with self.assertRaises(grpc.RpcError) as e:
                host.api.StartVm(pb.VmRef(vm="huge"), timeout=30)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.details())
            self.assertIn("pool", e.exception.details())
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="huge"), timeout=5).state, pb.VM_STATE_OFF)

    def test_malformed_protobuf_is_invalid_argument(self):
        with VmmsdHost() as host:
            raw = host.channel.unary_unary("/vmms.v1.Vmms/GetVm")
            with self.assertRaises(grpc.RpcError) as e:
                raw(b"\xff\xff\xff\xff\x0f\x01", timeout=5)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("malformed request", e.exception.details())
            self.assertIsNone(host.proc.poll())


class DurabilityTest(unittest.TestCase):
    def test_kill9_of_vmmsd_leaves_vms_running_and_a_restart_reattaches(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("one", workload="cpu")
            host.create("two", workload="idle")
            host.create("off")
            pids = {n: host.api.StartVm(pb.VmRef(vm=n), timeout=30).worker_pid for n in ("one", "two")}
            host.api.PauseVm(pb.VmRef(vm="two"), timeout=10)
            host.kill9()
            time.sleep(0.5)
            for name, pid in pids.items():
                self.assertTrue(pid_alive(pid), f"worker of {name} must survive vmmsd")
            host.start()
            vms = {v.name: v for v in host.api.ListVms(pb.ListVmsRequest(), timeout=5).vms}
            self.assertEqual(vms["one"].state, pb.VM_STATE_RUNNING)
            self.assertEqual(vms["two"].state, pb.VM_STATE_PAUSED)
            self.assertEqual(vms["off"].state, pb.VM_STATE_OFF)
            self.assertEqual(vms["one"].worker_pid, pids["one"])
            # The re-attached workers obey the new vmmsd.
            self.assertEqual(host.api.ResumeVm(pb.VmRef(vm="two"), timeout=10).state, pb.VM_STATE_RUNNING)
            self.assertEqual(host.api.StopVm(pb.StopVmRequest(vm="one", turn_off=True), timeout=20).state,
                             pb.VM_STATE_OFF)
            # A re-attached worker is not vmmsd's child: Off is reported when its control
            # socket closes, a moment before its process has finished exiting.
            wait_for(lambda: not pid_alive(pids["one"]), 10, what="the turned-off worker to exit")

    def test_kill9_while_definitions_change_leaves_old_or_new(self):
        # Two fields change together; a torn write would show one without the other.
        a = {"minimum_bytes": 128 * MiB, "buffer": 20}
        b = {"minimum_bytes": 64 * MiB, "buffer": 50}
        for attempt in range(3):
            with VmmsdHost() as host:
                pb = host.pb
                for i in range(4):
                    host.create(f"vm{i}", startup=256 * MiB, minimum_bytes=a["minimum_bytes"], buffer=a["buffer"])
                stop = threading.Event()

                def writer():
                    n = 0
                    while not stop.is_set():
                        want = b if n % 2 else a
                        try:
                            host.api.UpdateMemory(pb.UpdateMemoryRequest(
                                vm=f"vm{n % 4}", memory=pb.MemorySettings(**want),
                                update_mask=["minimum_bytes", "buffer"]), timeout=2)
                        except grpc.RpcError:
                            pass
                        n += 1

                threads = [threading.Thread(target=writer) for _ in range(2)]
                for t in threads:
                    t.start()
                time.sleep(0.3 + random.random() * 0.5)
                host.kill9()
                stop.set()
                for t in threads:
                    t.join()
                db = sqlite3.connect(host.state / "vmms.db")
                self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
                db.close()
                host.start()
                for vm in host.api.ListVms(pb.ListVmsRequest(), timeout=5).vms:
                    pair = {"minimum_bytes": vm.memory.minimum_bytes, "buffer": vm.memory.buffer}
                    self.assertIn(pair, (a, b), f"{vm.name} is half-written: {pair}")

    def test_a_worker_killed_with_sigkill_is_noticed_and_explained(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("victim", workload="cpu")
            pid = host.api.StartVm(pb.VmRef(vm="victim"), timeout=30).worker_pid
            os.kill(pid, signal.SIGKILL)
            host.wait_state("victim", pb.VM_STATE_OFF)
            events = host.api.ListEvents(pb.ListEventsRequest(vm="victim", limit=10), timeout=5).events
            self.assertEqual(events[-1].kind, "worker-exit")
            self.assertIn("killed by signal 9", events[-1].message)
            # And the VM starts again.
            self.assertEqual(host.api.StartVm(pb.VmRef(vm="victim"), timeout=30).state, pb.VM_STATE_RUNNING)


if __name__ == "__main__":
    unittest.main()
