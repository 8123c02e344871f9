"""The VP scheduler on a real hvd: the seed's 80/20 case with guest `cpu` workloads,
reservations refused beyond capacity, and - through the root interface with a few
bytes of hand-assembled guest code - caps and weights changed on running partitions,
hot-added VPs, long-spin-wait yields and NUMA placement.

Every assertion is a ratio or an invariant read from hvd's counters, never a
wall-clock time: the counters measure LP time the same way the policy charges it, so
host noise moves both together."""
import mmap
import os
import socket
import subprocess
import time
import unittest

from test_hypervisor import field
from vmms_host import GUEST, VMWP, HvHost, Vm, wait_for

MiB = 1 << 20
CODE_GPA = 0x100000
STACK_TOP = 0x80000

# Guest code for partitions the test builds itself (no kernel): each loops forever.
SPIN = bytes([0xEB, 0xFE])  # jmp $
HYPERCALL = bytes([0xBA, 0x56, 0x48, 0x00, 0x00, 0xEF, 0xEB, 0x00])  # mov edx,0x4856; out dx,eax; jmp +0
# mov eax,LONG_SPIN_WAIT; hypercall; jmp back to the start
SPIN_YIELD = bytes([0xB8, 0x04, 0, 0, 0]) + HYPERCALL + bytes([0xEB, 0x100 - 15])


def decode(data):
    """A protobuf message as {field: [values]}: varints as ints, the rest as bytes."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


class RootClient:
    """The root interface spoken by hand, as a worker would: the partitions it creates
    are its own, and die with the connection."""

    def __init__(self, host):
        self.sock = host.raw_socket()
        self.next_id = 1
        self.maps = []

    def call(self, body_field, body):
        request_id = self.next_id
        self.next_id += 1
        self.sock.send(field(1, request_id) + field(body_field, body))
        while True:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 1)
            message = decode(data)
            if 1 in message:  # a reply, not an event
                reply = decode(message[1][0])
                if reply.get(1, [0])[0] == request_id:
                    return reply, fds
            for fd in fds:
                os.close(fd)

    def create(self, name, vps=1, reserve=0, maximum=0, weight=0, max_vps=0, code=SPIN, concurrent=False):
        """Creates a partition whose RAM holds `code` at CODE_GPA; returns its id. `concurrent`
        opts out of ganging (PartitionCreate.concurrent_vps)."""
        settings = field(1, reserve) + field(2, maximum) + field(3, weight)
        body = (field(1, name) + field(2, vps) + field(3, 8 * MiB) + field(4, 8 * MiB) + field(5, settings) +
                field(6, max_vps) + field(7, int(concurrent)))
        reply, fds = self.call(2, body)
        if 2 in reply:
            raise AssertionError(reply.get(3, [b""])[0].decode())
        ram = mmap.mmap(fds[0], 8 * MiB)
        os.close(fds[0])
        ram[CODE_GPA:CODE_GPA + len(code)] = code
        self.maps.append(ram)
        return decode(reply[4][0])[1][0]

    def error_of(self, body_field, body):
        reply, fds = self.call(body_field, body)
        for fd in fds:
            os.close(fd)
        return reply.get(3, [b""])[0].decode() if 2 in reply else None

    def start(self, partition_id, vp_index, rip=CODE_GPA):
        stack = STACK_TOP - vp_index * 0x1000
        assert self.error_of(3, field(1, partition_id) + field(2, vp_index) + field(3, rip) + field(4, stack)) is None

    def set_processor(self, partition_id, reserve=0, maximum=0, weight=0):
        settings = field(1, reserve) + field(2, maximum) + field(3, weight)
        return self.error_of(8, field(1, partition_id) + field(2, settings))

    def add_vp(self, partition_id, rip=CODE_GPA, rsp=STACK_TOP - 0x8000):
        reply, _ = self.call(9, field(1, partition_id) + field(2, rip) + field(3, rsp))
        if 2 in reply:
            return None, reply.get(3, [b""])[0].decode()
        return decode(reply[6][0]).get(1, [0])[0], None

    def close(self):
        for ram in self.maps:
            ram.close()
        self.sock.close()


def start_vm(host, name, vps, extra=(), workload="cpu"):
    """Like HvHost.start_vm, with vmwp's scheduling options; does not wait for boot."""
    console = host.dir / f"{name}.console"
    args = [str(VMWP), "--name", name, "--hvd-socket", str(host.socket), "--vps", str(vps), "--memory", "64MB",
            "--workload", workload, "--console-log", str(console), "--guest", str(GUEST), *extra]
    with open(host.dir / f"{name}.vmwp.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    vm = Vm(host, name, proc, console)
    host.vms.append(vm)
    return vm


def vp_pct(host, counters, name):
    return [vp["total_run_pct"] for vp in host.partition(counters, name)["vps"]]


class SeedCaseTest(unittest.TestCase):
    def test_production_vms_at_weight_200_get_80_percent_and_test_vms_at_50_get_20(self):
        # Tolerance: 5 points. The policy keeps every VP within 3 slices (30 ms) of its
        # share at all times, and counters measure LP time on the clock the policy
        # charges, so over a 5 s sample of 2 LPs (10 s of LP time) the four production
        # VPs can be off by at most 4 x 30 ms at each end: 2.4 points. Host load slows
        # every VP alike and cannot move the ratio; 5 points is twice the bound.
        with HvHost(lps=2) as host:
            vms = [start_vm(host, name, 2, ["--relative-weight", str(weight)])
                   for name, weight in [("prod1", 200), ("prod2", 200), ("test1", 50), ("test2", 50)]]
            for vm in vms:
                vm.wait_console(r"^vp1: cpu: vp=1 batches=", timeout=60)
            counters = host.counters(5.0)
            run = {vm.name: sum(vp_pct(host, counters, vm.name)) for vm in vms}
            total = sum(run.values())
            production = 100 * (run["prod1"] + run["prod2"]) / total
            self.assertAlmostEqual(production, 80, delta=5, msg=counters)
            self.assertGreater(total, 150, "2 LPs of CPU-bound VPs must be mostly busy")
            for vm in vms:
                self.assertNotIn("CORRUPTION", vm.console())
                for vp in host.partition(counters, vm.name)["vps"]:
                    self.assertGreater(vp["dispatches"], 0)
                    self.assertAlmostEqual(vp["share_pct"], 40 if vm.name.startswith("prod") else 10, delta=0.01)


class AdmissionTest(unittest.TestCase):
    def test_reservations_beyond_capacity_are_refused_naming_the_totals(self):
        with HvHost(lps=2) as host:
            first = start_vm(host, "big", 2, ["--reserve", "80"], workload="idle")
            first.wait_console(r"^vmms-guest: boot ")
            second = start_vm(host, "late", 1, ["--reserve", "50"], workload="idle")
            self.assertNotEqual(second.proc.wait(timeout=20), 0)
            self.assertIn("reservations would total 210% of 200% capacity", second.stderr())
            counters = host.counters(0.05)
            self.assertEqual(counters["reserved_pct"], 160)
            self.assertEqual(counters["capacity_pct"], 200)
            self.assertIsNone(first.proc.poll())

    def test_out_of_range_settings_are_refused_with_the_field_named(self):
        cases = [
            ({"reserve": 101}, "reserve 101 is out of range 0-100"),
            ({"maximum": 150}, "maximum 150 is out of range"),
            ({"weight": 10001}, "relative_weight 10001 is out of range 1-10000"),
            ({"reserve": 50, "maximum": 40}, "reserve 50 exceeds maximum 40"),
            ({"max_vps": 33}, "maximum_vp_count 33 is out of range"),
        ]
        with HvHost(lps=2) as host:
            client = RootClient(host)
            for i, (settings, message) in enumerate(cases):
                with self.subTest(settings=settings):
                    with self.assertRaises(AssertionError) as raised:
                        client.create(f"bad{i}", **settings)
                    self.assertIn(message, str(raised.exception))
            self.assertEqual(host.counters(0.05)["partitions"], [])
            client.close()


class LivePartitionTest(unittest.TestCase):
    """Partitions built over the root interface with spinning guest code."""

    def test_cap_and_weight_set_on_running_partitions_apply_at_once(self):
        # Tolerance: 5 points, for the same reason as the seed case (lag within 3
        # slices over a 1.5 s sample of one LP is 4 points at most for two VPs).
        with HvHost(lps=1) as host:
            client = RootClient(host)
            a, b = client.create("a"), client.create("b")
            client.start(a, 0)
            client.start(b, 0)
            counters = host.counters(1.5)
            self.assertAlmostEqual(vp_pct(host, counters, "a")[0], 50, delta=5, msg=counters)
            self.assertIsNone(client.set_processor(a, maximum=20))
            counters = host.counters(1.5)
            # The cap holds in every 100 ms window; the guard keeps it there despite the
            # engine's stop latency, so it is below 20 % plus a point for host hiccups,
            # plus up to two more when the host itself keeps the LP thread waiting (its
            # host_wait_pct: a slice's end is late by as much as the thread is descheduled,
            # seen as 21.0-21.4 % with host_wait 78 % on a machine running other builds).
            host_wait = counters["lps"][0]["host_wait_pct"]
            self.assertLess(vp_pct(host, counters, "a")[0], 21 + 2 * host_wait / 100, counters)
            self.assertGreater(vp_pct(host, counters, "b")[0], 75, counters)
            capped = host.partition(counters, "a")["vps"][0]
            self.assertGreater(capped["cap_throttles"], 0)
            # hvd measures the fullest 100 ms window itself. It is not asserted tight:
            # the host may deschedule an LP thread past its slice end, which hvd cannot
            # prevent (20.3-20.9 % on a quiet host, more under load); the simulation
            # checks the exact bound. Here: it is measured, and is near the cap.
            self.assertGreater(capped["cap_window_max_pct"], 15, counters)
            self.assertIsNone(client.set_processor(a, weight=300))
            counters = host.counters(1.5)
            self.assertAlmostEqual(vp_pct(host, counters, "a")[0], 75, delta=5, msg=counters)
            self.assertEqual(host.partition(counters, "a")["relative_weight"], 300)
            self.assertIn("relative_weight 10001 is out of range", client.set_processor(a, weight=10001))
            client.close()

    def test_hot_added_vp_runs_up_to_the_partitions_maximum(self):
        with HvHost(lps=2) as host:
            client = RootClient(host)
            p = client.create("grows", max_vps=2, concurrent=True)
            client.start(p, 0)
            _, error = client.add_vp(p, rip=64 * MiB)
            self.assertIn("outside the partition's visible RAM", error)
            index, error = client.add_vp(p)
            self.assertEqual((index, error), (1, None))
            index, error = client.add_vp(p)
            self.assertIsNone(index)
            self.assertIn("already has its maximum of 2 VPs", error)
            counters = host.counters(1.0)
            vps = host.partition(counters, "grows")["vps"]
            self.assertEqual(len(vps), 2)
            for vp in vps:
                self.assertGreater(vp["dispatches"], 0)
                self.assertGreater(vp["total_run_pct"], 80, counters)  # one LP each
            client.close()

    def test_hot_added_vp_of_a_ganged_partition_shares_its_one_lp(self):
        with HvHost(lps=2) as host:
            client = RootClient(host)
            p = client.create("gang", max_vps=2)
            client.start(p, 0)
            self.assertEqual(client.add_vp(p), (1, None))
            counters = host.counters(1.0)
            vps = host.partition(counters, "gang")["vps"]
            self.assertLess(sum(vp["total_run_pct"] for vp in vps), 105, counters)  # one LP between them
            for vp in vps:
                self.assertGreater(vp["total_run_pct"], 35, counters)
            client.close()

    def test_long_spin_wait_gives_the_rest_of_the_slice_away(self):
        with HvHost(lps=1) as host:
            client = RootClient(host)
            spinner, worker = client.create("spinner", code=SPIN_YIELD), client.create("worker")
            client.start(spinner, 0)
            client.start(worker, 0)
            counters = host.counters(1.0)
            spin_vp = host.partition(counters, "spinner")["vps"][0]
            self.assertGreater(spin_vp["yields"], 0)
            self.assertGreater(vp_pct(host, counters, "worker")[0], 90, counters)
            client.close()

    def test_numa_places_each_partition_on_its_own_node_and_keeps_it_there(self):
        with HvHost(lps=2, extra=["--numa-nodes", "2"]) as host:
            client = RootClient(host)
            ids = [client.create(name) for name in ("n0", "n1")]
            for p in ids:
                client.start(p, 0)
            counters = host.counters(1.0)
            self.assertEqual(counters["numa_nodes"], 2)
            nodes = sorted(host.partition(counters, name)["vps"][0]["home_node"] for name in ("n0", "n1"))
            self.assertEqual(nodes, [0, 1])
            for name in ("n0", "n1"):
                vp = host.partition(counters, name)["vps"][0]
                self.assertEqual(vp["home_node_dispatches"], vp["dispatches"])
                # Soft affinity: one VP per LP, so every dispatch after the first is on
                # the LP it last ran on.
                self.assertGreaterEqual(vp["preferred_lp_dispatches"], vp["dispatches"] - 1)
            client.close()


# Each VP: 20 M `lock inc qword [0x200000]`, then `lock inc qword [0x200008]` (done), then
# hlt (Idle) forever. mov ecx,20000000; mov ebx,0x200000; L: lock inc [rbx]; dec ecx;
# jnz L; lock inc [rbx+8]; H: hlt; jmp H.
LOCK_INCS = 20_000_000
LOCK_INC_LOOP = (bytes([0xB9]) + LOCK_INCS.to_bytes(4, "little") + bytes([0xBB, 0, 0, 0x20, 0]) +
                 bytes([0xF0, 0x48, 0xFF, 0x03, 0xFF, 0xC9, 0x75, 0xF8]) +
                 bytes([0xF0, 0x48, 0xFF, 0x43, 0x08, 0xF4, 0xEB, 0xFD]))
COUNTER_GPA = 0x200000


class GangTest(unittest.TestCase):
    """Unicorn does not make lock-prefixed instructions atomic between LPs, so hvd gangs
    a partition's VPs: never two on LPs at the same instant, unless it opted out."""

    def lock_inc_race(self, concurrent):
        with HvHost(lps=2) as host:
            client = RootClient(host)
            p = client.create("atomics", vps=2, code=LOCK_INC_LOOP, concurrent=concurrent)
            ram = client.maps[-1]
            started = time.monotonic()
            client.start(p, 0)
            client.start(p, 1)
            wait_for(lambda: int.from_bytes(ram[COUNTER_GPA + 8:COUNTER_GPA + 16], "little") == 2, 300,
                     what="both VPs' last lock inc")
            elapsed = time.monotonic() - started
            total = int.from_bytes(ram[COUNTER_GPA:COUNTER_GPA + 8], "little")
            print(f"# lock inc: 2 x {LOCK_INCS} from two VPs, {'concurrent' if concurrent else 'ganged'}: "
                  f"sum {total} in {elapsed:.2f} s", flush=True)
            client.close()
            return total

    def test_two_vps_lock_inc_20m_each_sum_exactly_40m_when_ganged(self):
        self.assertEqual(self.lock_inc_race(concurrent=False), 2 * LOCK_INCS)

    def test_a_partition_that_opts_out_runs_its_vps_on_two_lps_at_once(self):
        # What ganging prevents: the sum falls short when both VPs run at once (measured
        # ~22.9 M). Not asserted short (the host may happen to serialize the threads);
        # asserted: both VPs really were on LPs at the same time.
        with HvHost(lps=2) as host:
            client = RootClient(host)
            p = client.create("free", vps=2, concurrent=True)
            client.start(p, 0)
            client.start(p, 1)
            counters = host.counters(1.0)
            vps = host.partition(counters, "free")["vps"]
            self.assertGreater(sum(vp["total_run_pct"] for vp in vps), 150, counters)
            client.close()
        self.lock_inc_race(concurrent=True)


if __name__ == "__main__":
    unittest.main()
