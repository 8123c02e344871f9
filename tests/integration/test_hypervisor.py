"""hvd and vmwp running the real guest kernel: console, counters, idle VPs, worker
death, and guest memory that really comes and goes on the host."""
import os
import re
import signal
import subprocess
import time
import unittest

from vmms_host import VMWP, HvHost, wait_for

MiB = 1 << 20


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """One protobuf field: ints as varints, bytes/str as length-delimited."""
    if isinstance(value, int):
        return encode_varint(number << 3) + encode_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


class CpuGuestTest(unittest.TestCase):
    def test_cpu_guest_prints_progress_and_its_vp_is_dispatched(self):
        with HvHost() as host:
            vm = host.start_vm("cpu1", workload="cpu")
            lines = vm.wait_console(r"^cpu: vp=0 batches=(\d+) iterations=(\d+) rate=(\d+)/s", count=2)
            self.assertGreater(int(lines[-1][1]), int(lines[0][1]), "iterations must grow")
            self.assertNotIn("CORRUPTION", vm.console())
            part = host.partition(host.counters(1.0), "cpu1")
            vp = part["vps"][0]
            self.assertGreater(vp["run_ns"], 0)
            self.assertGreater(vp["dispatches"], 0)
            self.assertGreater(vp["hypercalls"], 0)
            self.assertEqual(vp["invalid_hypercalls"], 0)
            self.assertGreater(vp["total_run_pct"], 20.0)

    def test_two_vp_guest_runs_both_vps_without_corruption(self):
        with HvHost() as host:
            vm = host.start_vm("cpu2", workload="cpu", vps=2)
            vm.wait_console(r"^vp1: cpu: vp=1 batches=", count=2)
            vm.wait_console(r"^cpu: vp=0 batches=", count=2)
            self.assertNotIn("CORRUPTION", vm.console())


class IdleTest(unittest.TestCase):
    def test_idle_vp_takes_no_lp_time_while_cpu_vp_takes_most_of_one(self):
        # Tolerance: the idle VP runs only to handle its 1 s timer, microseconds a
        # second, so 2 % leaves two orders of magnitude for noise. The cpu VP would
        # get ~100 % of an LP; > 50 % holds even with the other core busy.
        with HvHost(lps=2) as host:
            host.start_vm("idle1", workload="idle")
            cpu = host.start_vm("busy1", workload="cpu")
            cpu.wait_console(r"^cpu: vp=0 batches=")
            counters = host.counters(2.0)
            idle_vp = host.partition(counters, "idle1")["vps"][0]
            busy_vp = host.partition(counters, "busy1")["vps"][0]
            self.assertLess(idle_vp["total_run_pct"], 2.0, counters)
            self.assertGreater(busy_vp["total_run_pct"], 50.0, counters)
            self.assertIn(idle_vp["state"], ("idle", "runnable", "running"))
            idle_lp_time = sum(lp["idle_pct"] for lp in counters["lps"])
            self.assertGreater(idle_lp_time, 50.0, "one of the two LPs should be mostly idle")


class MemoryTest(unittest.TestCase):
    def test_memsoak_resident_memory_follows_what_the_guest_touched_and_returns_on_stop(self):
        with HvHost(memory="512MB") as host:
            vm = host.start_vm("soak1", workload="memsoak", memory="128MB",
                               boot_args="memsoak_mb=64 memsoak_step_mb=16 memsoak_step_ms=300")
            memfd = vm.ram_memfd()
            try:
                vm.wait_console(r"^memsoak: reached \d+", timeout=60)
                touched = [int(t) for _, t in re.findall(r"^memsoak: committed=(\d+) touched=(\d+)", vm.console(), re.M)]
                self.assertGreaterEqual(max(touched), 64 * MiB)
                part = host.partition(host.counters(0.1), "soak1")
                resident = part["resident_bytes"]
                # Resident covers what was touched, plus the kernel image and boot
                # data, and not much more: memory is sparse, not pre-allocated.
                self.assertGreaterEqual(resident, 64 * MiB)
                self.assertLess(resident, 64 * MiB + 16 * MiB, part)
                self.assertEqual(part["assigned_bytes"], 128 * MiB)
                self.assertEqual(vm.stop(), 0, vm.stderr())
                self.assertEqual(os.fstat(memfd).st_blocks, 0, "guest RAM must be returned to the host")
                counters = host.counters(0.1)
                self.assertEqual(counters["partitions"], [])
                self.assertEqual(counters["pool_used_bytes"], 0)
            finally:
                os.close(memfd)

    def test_killed_worker_partition_is_destroyed_and_pool_is_whole(self):
        with HvHost(memory="512MB") as host:
            vm = host.start_vm("victim", workload="memsoak", memory="96MB",
                               boot_args="memsoak_mb=32 memsoak_step_mb=32")
            survivor = host.start_vm("survivor", workload="idle")
            memfd = vm.ram_memfd()
            try:
                vm.wait_console(r"^memsoak: reached", timeout=60)
                self.assertGreater(os.fstat(memfd).st_blocks * 512, 32 * MiB)
                vm.stop(signal.SIGKILL)
                wait_for(lambda: host.partition(host.counters(0.05), "victim") is None, 10,
                         what="hvd to destroy the dead worker's partition")
                self.assertIsNone(host.hvd.poll(), "hvd must survive a worker's death")
                counters = host.counters(0.05)
                self.assertEqual([p["name"] for p in counters["partitions"]], ["survivor"])
                self.assertEqual(counters["pool_used_bytes"], 64 * MiB)
                self.assertEqual(os.fstat(memfd).st_blocks, 0)
                self.assertIsNone(survivor.proc.poll())
            finally:
                os.close(memfd)

    def test_partition_larger_than_the_pool_is_refused_by_name(self):
        with HvHost(memory="64MB") as host:
            vm = host.start_vm("big", memory="128MB", wait_boot=False)
            self.assertEqual(vm.proc.wait(timeout=10), 4, "exit code 4: refused for lack of resources")
            self.assertIn("exceeds the pool's available", vm.stderr())
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 0)


class BadInputTest(unittest.TestCase):
    def test_malformed_request_gets_an_error_reply_and_hvd_keeps_serving(self):
        with HvHost() as host:
            s = host.raw_socket()
            s.send(b"\xff\xff\xff\xff\x0f garbage")
            reply = s.recv(65536)
            self.assertIn(b"malformed request", reply)
            s.close()
            self.assertIsNone(host.hvd.poll())
            self.assertEqual(host.counters(0.05)["partitions"], [])

    def test_out_of_range_partition_requests_are_refused_with_the_field_named(self):
        cases = [
            ({"name": "x", "vp_count": 0, "startup": 64 * MiB, "maximum": 64 * MiB}, b"vp_count 0 is out of range"),
            ({"name": "x", "vp_count": 99, "startup": 64 * MiB, "maximum": 64 * MiB}, b"vp_count 99 is out of range"),
            ({"name": "a/b", "vp_count": 1, "startup": 64 * MiB, "maximum": 64 * MiB}, b"name must be"),
            ({"name": "x" * 300, "vp_count": 1, "startup": 64 * MiB, "maximum": 64 * MiB}, b"name must be"),
            ({"name": "x", "vp_count": 1, "startup": 64 * MiB + 1, "maximum": 128 * MiB}, b"startup_bytes"),
            ({"name": "x", "vp_count": 1, "startup": 64 * MiB, "maximum": 32 * MiB}, b"maximum_bytes"),
        ]
        with HvHost() as host:
            s = host.raw_socket()
            for i, (req, message) in enumerate(cases, start=1):
                with self.subTest(req=req):
                    body = (field(1, req["name"]) + field(2, req["vp_count"]) + field(3, req["startup"]) +
                            field(4, req["maximum"]))
                    s.send(field(1, i) + field(2, body))
                    reply = s.recv(65536)
                    self.assertIn(message, reply)
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 0)

    def test_a_connection_cannot_touch_another_connections_partition(self):
        with HvHost() as host:
            host.start_vm("owned", workload="idle")
            s = host.raw_socket()
            s.send(field(1, 1) + field(4, field(1, 1)))  # PartitionDestroy{partition_id=1}
            self.assertIn(b"does not exist on this connection", s.recv(65536))
            self.assertIsNotNone(host.partition(host.counters(0.05), "owned"))

    def test_compatibility_vectors_are_the_hosts_or_a_partitions_own(self):
        """CompatibilityVectorGet (hv.proto): the host's vector with its model or the
        normalized baseline; a partition's only on the connection that owns it."""
        with HvHost() as host:
            host.start_vm("owned", workload="idle")
            s = host.raw_socket()
            s.send(field(1, 1) + field(21, b""))
            reply = s.recv(65536)
            self.assertIn(b"unicorn", reply)
            self.assertIn(b"qemu64", reply)
            s.send(field(1, 2) + field(21, field(2, 1)))
            reply = s.recv(65536)
            self.assertIn(b"vmms-baseline-1", reply)
            self.assertNotIn(b"qemu64", reply)
            s.send(field(1, 3) + field(21, field(1, 1)))
            self.assertIn(b"does not exist on this connection", s.recv(65536))
            s.close()

    def test_bad_guest_images_are_refused_with_a_reason(self):
        with HvHost() as host:
            garbage = host.dir / "garbage.elf"
            garbage.write_bytes(b"\x7fELF" + os.urandom(200))
            for name, image, message in [("noimage", host.dir / "missing.elf", "cannot read guest image"),
                                         ("garbage", garbage, "ELF")]:
                with self.subTest(image=str(image)):
                    vm = host.start_vm(name, guest=image, wait_boot=False)
                    self.assertEqual(vm.proc.wait(timeout=10), 1)
                    self.assertIn(message, vm.stderr())
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 0)

    def test_vmwp_refuses_bad_arguments_naming_them(self):
        cases = [
            (["--name", "x", "--vps", "0"], "--vps 0 is out of range"),
            (["--name", "x", "--memory", "lots"], "--memory 'lots' is not a size"),
            (["--name", "x", "--workload", "mine"], "workload 'mine' is not one of"),
            (["--vps", "1"], "--name is required"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                out = subprocess.run([str(VMWP), "--hvd-socket", "/nonexistent", *args], capture_output=True,
                                     text=True, timeout=10)
                self.assertNotEqual(out.returncode, 0)
                self.assertIn(message, out.stderr)


if __name__ == "__main__":
    unittest.main()
