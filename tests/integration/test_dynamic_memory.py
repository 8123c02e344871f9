"""Dynamic Memory on a real hvd and vmwp: through the root interface, hot-add charged
to the pool, balloon pages judged one by one and host memory that really falls; and
with the guest kernel, a memsoak VM grown by hot-add and shrunk by its balloon through
vmwp's control socket (worker.proto), as vmmsd's balancer will drive it.

Host memory is measured, never computed: hvctl's resident_bytes is the partition
memfd's st_blocks. Messages are built with protoc's Python code from proto/, a client
nobody here wrote."""
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from vmms_host import GUEST, VMWP, HvHost, Vm, proto_modules, wait_for

MiB = 1 << 20
PAGE = 4096
CODE_GPA = 0x100000
STACK_TOP = 0x80000
# Guest code that never idles: ask for the visible size, store it in the last 8 bytes
# of visible RAM, again. mov eax,PARTITION_INFO; mov edi,VISIBLE_BYTES; mov edx,port;
# out dx,eax; jmp +0; mov [rax-8],rax; jmp to the start.
STORE_AT_VISIBLE_END = bytes([0xB8, 6, 0, 0, 0, 0xBF, 1, 0, 0, 0, 0xBA, 0x56, 0x48, 0, 0, 0xEF, 0xEB, 0x00,
                              0x48, 0x89, 0x40, 0xF8, 0xEB, 0x100 - 24])


def stubs():
    """hv_pb2 and worker_pb2."""
    return proto_modules("hv", "worker")


class RootClient:
    """hvd's root interface as a worker speaks it: its partitions are its own."""

    def __init__(self, host):
        self.hv, _ = stubs()
        self.sock = host.raw_socket()
        self.next_id = 1
        self.maps = []

    def call(self, **body):
        request = self.hv.Request(id=self.next_id, **body)
        self.next_id += 1
        self.sock.send(request.SerializeToString())
        while True:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 1)
            message = self.hv.Message()
            message.ParseFromString(data)
            if message.HasField("reply") and message.reply.id == request.id:
                return message.reply, fds
            for fd in fds:
                os.close(fd)

    def create(self, name, startup, maximum):
        """A partition with no VP running; returns (id, its RAM mapped here)."""
        reply, fds = self.call(partition_create=self.hv.PartitionCreate(
            name=name, vp_count=1, startup_bytes=startup, maximum_bytes=maximum))
        assert reply.error == 0, reply.error_message
        ram = mmap.mmap(fds[0], maximum)
        os.close(fds[0])
        self.maps.append(ram)
        return reply.partition_created.partition_id, ram

    def start(self, partition_id, code):
        self.maps[-1][CODE_GPA:CODE_GPA + len(code)] = code
        reply, _ = self.call(vp_start=self.hv.VpStart(partition_id=partition_id, vp_index=0, rip=CODE_GPA,
                                                      rsp=STACK_TOP))
        assert reply.error == 0, reply.error_message

    def balloon(self, partition_id, pfns):
        return self.call(partition_balloon=self.hv.PartitionBalloon(partition_id=partition_id, pfns=pfns))[0]

    def unballoon(self, partition_id, pfns):
        return self.call(partition_unballoon=self.hv.PartitionUnballoon(partition_id=partition_id, pfns=pfns))[0]

    def hot_add(self, partition_id, nbytes):
        return self.call(partition_hot_add=self.hv.PartitionHotAdd(partition_id=partition_id, bytes=nbytes))[0]

    def counters(self):
        return self.call(counters_get=self.hv.CountersGet())[0].counters

    def partition_counters(self, name):
        return next(p for p in self.counters().partitions if p.name == name)

    def wait_vp_stopped(self, timeout):
        """The reason of the next VpStopped event on this connection."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 1)
                for fd in fds:
                    os.close(fd)
                message = self.hv.Message()
                message.ParseFromString(data)
                if message.HasField("event") and message.event.HasField("vp_stopped"):
                    return message.event.vp_stopped.reason
        finally:
            self.sock.settimeout(None)

    def close(self):
        for ram in self.maps:
            ram.close()
        self.sock.close()


def touch(ram, first_pfn, pages):
    for pfn in range(first_pfn, first_pfn + pages):
        ram[pfn * PAGE:pfn * PAGE + 8] = b"touched!"


# A hostile guest: stores to every page of [8 MiB, 512 MiB) as fast as it can, again and
# again. mov rax,START; mov rbx,END; L: mov [rax],rax; add rax,4096; cmp rax,rbx; jb L;
# jmp to the start.
RETOUCH_FROM, RETOUCH_TO = 8 * MiB, 512 * MiB
RETOUCH_ALL = (bytes([0x48, 0xB8]) + RETOUCH_FROM.to_bytes(8, "little") + bytes([0x48, 0xBB]) +
               RETOUCH_TO.to_bytes(8, "little") + bytes([0x48, 0x89, 0x00, 0x48, 0x05, 0, 0x10, 0, 0]) +
               bytes([0x48, 0x39, 0xD8, 0x72, 0xF2, 0xEB, 0xDC]))
# hvd's documented slack (hv-memory.h HV_MEMORY_RESIDENT_SLACK_BYTES).
RESIDENT_SLACK = 32 * MiB


def balloon_range(client, pid, first_pfn, end_pfn):
    for start in range(first_pfn, end_pfn, 65536):
        reply = client.balloon(pid, list(range(start, min(end_pfn, start + 65536))))
        assert reply.error == 0, reply.error_message


class HostileGuestMemoryTest(unittest.TestCase):
    """A guest that balloons 504 of its 512 MiB and touches all of it again: hvd charges
    the pages back, so the host never holds much more than the pool is charged for."""

    def test_ballooned_pages_touched_again_are_charged_back_to_the_pool(self):
        with HvHost(memory="1GB", lps=2) as host:
            client = RootClient(host)
            pid, _ = client.create("hostile", 512 * MiB, 512 * MiB)
            balloon_range(client, pid, RETOUCH_FROM // PAGE, RETOUCH_TO // PAGE)
            self.assertEqual(client.counters().pool_used_bytes, 8 * MiB)
            client.start(pid, RETOUCH_ALL)
            # Sampled as vmmsd samples Host Resident Bytes, but every 5 ms, for 5 s and until the
            # guest has touched all 504 MiB (on a machine other tests share that may take longer).
            worst = 0
            deadline, give_up = time.monotonic() + 5, time.monotonic() + 60
            while True:
                part = client.partition_counters("hostile")
                worst = max(worst, part.resident_bytes - part.assigned_bytes)
                now = time.monotonic()
                if now >= give_up or (now >= deadline and part.resident_bytes >= RETOUCH_TO - RETOUCH_FROM):
                    break
                time.sleep(0.005)
            counters = client.counters()
            part = next(p for p in counters.partitions if p.name == "hostile")
            print(f"# hostile guest: resident {part.resident_bytes} assigned {part.assigned_bytes} "
                  f"retouched {part.retouched_pages} pages; worst resident - assigned seen {worst} bytes",
                  flush=True)
            # Resident 504 MiB and more: were it not charged back, assigned would be 8 MiB.
            self.assertGreaterEqual(part.resident_bytes, RETOUCH_TO - RETOUCH_FROM)
            self.assertGreaterEqual(part.assigned_bytes, part.resident_bytes - RESIDENT_SLACK)
            self.assertGreater(part.retouched_pages, (RETOUCH_TO - RETOUCH_FROM - RESIDENT_SLACK) // PAGE)
            self.assertEqual(counters.pool_used_bytes, part.assigned_bytes)
            self.assertLessEqual(worst, RESIDENT_SLACK)
            self.assertIn("ballooned pages again; charged back", host.hvd_log())
            client.close()

    def test_a_guest_the_pool_cannot_cover_is_stopped_naming_why(self):
        with HvHost(memory="600MB", lps=2, extra=["--connection-memory", "100%"]) as host:
            client, other = RootClient(host), RootClient(host)
            pid, _ = client.create("hostile", 512 * MiB, 512 * MiB)
            balloon_range(client, pid, RETOUCH_FROM // PAGE, RETOUCH_TO // PAGE)
            other.create("bystander", 560 * MiB, 560 * MiB)  # 32 MiB of the pool left
            client.start(pid, RETOUCH_ALL)
            reason = client.wait_vp_stopped(60)
            self.assertIn("ballooned pages again", reason)
            self.assertIn("exceeds the pool's available", reason)
            counters = client.counters()
            part = next(p for p in counters.partitions if p.name == "hostile")
            self.assertLessEqual(part.resident_bytes, part.assigned_bytes)
            self.assertEqual(counters.pool_used_bytes, sum(p.assigned_bytes for p in counters.partitions))
            self.assertIsNone(host.hvd.poll())
            other.close()
            client.close()


class RootInterfaceLimitsTest(unittest.TestCase):
    """One connection cannot take the whole pool, and a bad packet is answered, not fatal."""

    def test_an_empty_packet_is_refused_and_the_connection_keeps_its_partition(self):
        with HvHost(memory="256MB") as host:
            client = RootClient(host)
            pid, _ = client.create("keep", 16 * MiB, 16 * MiB)
            for packet, says in ((b"", "empty request"), (b"\xff\xff\xff", "malformed request")):
                client.sock.send(packet)
                data, _, _, _ = socket.recv_fds(client.sock, 1 << 20, 1)
                message = client.hv.Message()
                message.ParseFromString(data)
                self.assertLess(message.reply.error, 0)
                self.assertIn(says, message.reply.error_message)
            part = client.partition_counters("keep")
            self.assertEqual(part.partition_id, pid)
            self.assertIsNone(host.hvd.poll())
            client.close()

    def test_a_connection_is_held_to_its_limits_naming_them(self):
        with HvHost(memory="256MB", extra=["--connection-partitions", "2", "--connection-vps", "3"]) as host:
            client = RootClient(host)
            # Default memory limit: 75 % of the pool, 192 MiB.
            reply, _ = client.call(partition_create=client.hv.PartitionCreate(
                name="big", vp_count=1, startup_bytes=200 * MiB, maximum_bytes=200 * MiB))
            self.assertIn("would exceed this connection's memory limit of 201326592 bytes", reply.error_message)
            pid, _ = client.create("a", 128 * MiB, 256 * MiB)
            reply = client.hot_add(pid, 96 * MiB)
            self.assertIn("exceeds the connection's memory limit of 201326592 bytes", reply.error_message)
            self.assertEqual(client.counters().pool_used_bytes, 128 * MiB)
            reply, _ = client.call(partition_create=client.hv.PartitionCreate(
                name="b", vp_count=3, startup_bytes=16 * MiB, maximum_bytes=16 * MiB))
            self.assertIn("exceed its limit (hvd --connection-vps 3)", reply.error_message)
            client.create("c", 16 * MiB, 16 * MiB)
            reply, _ = client.call(partition_create=client.hv.PartitionCreate(
                name="d", vp_count=1, startup_bytes=16 * MiB, maximum_bytes=16 * MiB))
            self.assertIn("holds 2 partitions, its limit (hvd --connection-partitions 2)", reply.error_message)
            # Another connection has limits of its own.
            other = RootClient(host)
            other.create("e", 64 * MiB, 64 * MiB)
            other.close()
            client.close()


class RootInterfaceMemoryTest(unittest.TestCase):
    def test_ballooned_pages_leave_host_memory_and_return_to_the_pool(self):
        with HvHost(memory="256MB") as host:
            client = RootClient(host)
            pid, ram = client.create("soak", 64 * MiB, 128 * MiB)
            touch(ram, 4096, 8192)  # 32 MiB the guest would have used
            before = host.partition(host.counters(0.05), "soak")
            self.assertGreaterEqual(before["resident_bytes"], 32 * MiB)
            reply = client.balloon(pid, list(range(4096, 4096 + 8192)))
            self.assertEqual(reply.error, 0, reply.error_message)
            self.assertEqual(reply.partition_memory.pages.accepted, 8192)
            counters = host.counters(0.05)
            after = host.partition(counters, "soak")
            # Measured from the memfd's blocks, not derived from the page count.
            self.assertGreaterEqual(before["resident_bytes"] - after["resident_bytes"], 32 * MiB)
            self.assertEqual(after["ballooned_bytes"], 32 * MiB)
            self.assertEqual(after["assigned_bytes"], 32 * MiB)
            self.assertEqual(after["visible_bytes"], 64 * MiB)
            self.assertEqual(counters["pool_used_bytes"], 32 * MiB)
            reply = client.unballoon(pid, list(range(4096, 4096 + 2048)))
            self.assertEqual(reply.partition_memory.pages.accepted, 2048)
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 40 * MiB)
            client.close()

    def test_bad_page_numbers_are_refused_one_by_one_and_counted(self):
        with HvHost(memory="256MB") as host:
            client = RootClient(host)
            pid, _ = client.create("liar", 16 * MiB, 64 * MiB)
            visible_pages = 16 * MiB // PAGE
            self.assertEqual(client.balloon(pid, [100]).partition_memory.pages.accepted, 1)
            # A good page, then: past visible RAM, in unassigned maximum, named twice,
            # ballooned already, an address-sized number, and another good page.
            pfns = [200, visible_pages, 32 * MiB // PAGE, 200, 100, (1 << 64) - 1, 201]
            pages = client.balloon(pid, pfns).partition_memory.pages
            self.assertEqual(pages.accepted, 2)
            self.assertEqual(pages.refused_outside_ram, 3)
            self.assertEqual(pages.refused_duplicate, 1)
            self.assertEqual(pages.refused_wrong_state, 1)
            self.assertEqual(list(pages.refused_indices), [1, 2, 3, 4, 5])
            pages = client.unballoon(pid, [100, 100, 300]).partition_memory.pages
            self.assertEqual((pages.accepted, pages.refused_duplicate, pages.refused_wrong_state), (1, 1, 1))
            part = host.partition(host.counters(0.05), "liar")
            self.assertEqual(part["refused_pages"], 7)
            self.assertEqual(part["ballooned_bytes"], 2 * PAGE)
            self.assertIsNone(host.hvd.poll())
            client.close()

    def test_a_partition_cannot_free_another_partitions_memory(self):
        with HvHost(memory="256MB") as host:
            victim_client, attacker = RootClient(host), RootClient(host)
            victim, ram = victim_client.create("victim", 32 * MiB, 32 * MiB)
            touch(ram, 0, 8192)
            resident = host.partition(host.counters(0.05), "victim")["resident_bytes"]
            mine, _ = attacker.create("attacker", 16 * MiB, 16 * MiB)
            pages = attacker.balloon(mine, list(range(4096, 4096 + 8192))).partition_memory.pages
            self.assertEqual(pages.accepted, 0)
            self.assertEqual(pages.refused_outside_ram, 8192)
            reply = attacker.balloon(victim, [1, 2, 3])
            self.assertIn("does not exist on this connection", reply.error_message)
            self.assertEqual(host.partition(host.counters(0.05), "victim")["resident_bytes"], resident)
            attacker.close()
            victim_client.close()

    def test_hot_add_is_charged_to_the_pool_and_refused_naming_the_figures(self):
        with HvHost(memory="256MB") as host:
            client = RootClient(host)
            pid, _ = client.create("grow", 64 * MiB, 512 * MiB)
            reply = client.hot_add(pid, 128 * MiB)
            self.assertEqual(reply.error, 0, reply.error_message)
            self.assertEqual(reply.partition_memory.visible_bytes, 192 * MiB)
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 192 * MiB)
            reply = client.hot_add(pid, 128 * MiB)
            self.assertLess(reply.error, 0)
            self.assertIn("exceeds the pool's available 67108864 bytes", reply.error_message)
            reply = client.hot_add(pid, 3 * MiB)
            self.assertIn("2 MiB units", reply.error_message)
            part = host.partition(host.counters(0.05), "grow")
            self.assertEqual((part["visible_bytes"], part["hot_added_bytes"]), (192 * MiB, 128 * MiB))
            client.close()


    def test_hot_added_memory_is_usable_at_once_by_a_running_vp(self):
        # The VP stores at its visible end in a tight loop, so it touches the new range
        # in the slice during which it is added, before any re-dispatch maps it.
        with HvHost(memory="256MB", lps=1, slice_ms=1000) as host:
            client = RootClient(host)
            pid, ram = client.create("busy", 16 * MiB, 64 * MiB)
            client.start(pid, STORE_AT_VISIBLE_END)
            wait_for(lambda: ram[16 * MiB - 8:16 * MiB] == (16 * MiB).to_bytes(8, "little"), 10,
                     what="the VP's store at the old visible end")
            previous = 16 * MiB
            for visible in (18 * MiB, 20 * MiB, 40 * MiB, 64 * MiB):
                if visible == 64 * MiB:  # after a re-dispatch, which maps the pieces back into one region
                    dispatches = host.partition(host.counters(0.01), "busy")["vps"][0]["dispatches"]
                    wait_for(lambda: host.partition(host.counters(0.01), "busy")["vps"][0]["dispatches"] > dispatches,
                             10, what="the VP's next dispatch")
                reply = client.hot_add(pid, visible - previous)
                self.assertEqual(reply.error, 0, reply.error_message)
                wait_for(lambda: ram[visible - 8:visible] == visible.to_bytes(8, "little"), 10,
                         what=f"the VP's store at the new visible end {visible}")
                previous = visible
            part = host.partition(host.counters(0.05), "busy")
            self.assertEqual(part["vps"][0]["invalid_hypercalls"], 0)
            self.assertNotIn("stopped", host.hvd_log())
            client.close()


class WorkerControl:
    """vmwp's control socket as vmmsd uses it: Hello, requests, MemoryStatus each second."""

    def __init__(self, path):
        _, self.worker = stubs()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        wait_for(lambda: os.path.exists(path), 20, what="vmwp's control socket")
        self.sock.connect(str(path))
        self.sock.settimeout(20)
        self.next_id = 1
        self.hello = self._receive().hello

    def _receive(self):
        message = self.worker.Message()
        message.ParseFromString(self.sock.recv(65536))
        return message

    def adjust(self, delta):
        request = self.worker.Request(id=self.next_id, memory_adjust=self.worker.MemoryAdjust(
            delta_bytes=delta, reason="test"))
        self.next_id += 1
        self.sock.send(request.SerializeToString())
        while True:
            message = self._receive()
            if message.HasField("reply") and message.reply.id == request.id:
                return message.reply

    def status_until(self, predicate, timeout, what):
        """MemoryStatus reports until one satisfies `predicate`; returns it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            message = self._receive()
            if message.HasField("memory_status"):
                last = message.memory_status
                if predicate(last):
                    return last
        raise AssertionError(f"no MemoryStatus with {what} in {timeout}s; the last:\n{last}")

    def close(self):
        self.sock.close()


def start_vm(host, name, memory, maximum, boot_args, workload="memsoak"):
    """Like HvHost.start_vm, with vmwp's control socket; waits for the VMBus channels."""
    console = host.dir / f"{name}.console"
    control = host.dir / f"{name}.control"
    args = [str(VMWP), "--name", name, "--hvd-socket", str(host.socket), "--memory", memory,
            "--maximum-memory", maximum, "--workload", workload, "--boot-args", boot_args,
            "--console-log", str(console), "--guest", str(GUEST), "--control-socket", str(control)]
    with open(host.dir / f"{name}.vmwp.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    vm = Vm(host, name, proc, console)
    host.vms.append(vm)
    vm.wait_console(r"^vmbus: channel \d+ dynamic-memory open")
    return vm, WorkerControl(control)


class GuestDynamicMemoryTest(unittest.TestCase):
    def test_memsoak_grows_by_hot_add_into_memory_it_touches(self):
        with HvHost(memory="512MB") as host:
            vm, control = start_vm(host, "grow", "64MB", "256MB",
                                   "memsoak_mb=112 memsoak_step_mb=16 memsoak_step_ms=100")
            status = control.status_until(lambda s: s.reporting and s.committed_bytes > 48 * MiB, 30,
                                          "the guest reporting its soak")
            self.assertEqual(status.visible_bytes, 64 * MiB)
            started = time.monotonic()
            reply = control.adjust(96 * MiB)
            self.assertEqual(reply.error, 0, reply.error_message)
            vm.wait_console(r"^dm: hot-add request=\d+ gpa=0x4000000 bytes=100663296 accepted=100663296")
            hot_add_s = time.monotonic() - started
            status = control.status_until(lambda s: s.visible_bytes == 160 * MiB, 5, "visible 160 MiB")
            self.assertEqual(status.assigned_bytes, 160 * MiB)
            self.assertEqual(status.added_bytes_total, 96 * MiB)
            self.assertEqual(status.add_operations, 1)
            # The soak reaches its target in the new range: the guest touches memory
            # the engine had not mapped when its VP was dispatched.
            vm.wait_console(r"^memsoak: reached", timeout=60)
            part = wait_for(lambda: (lambda p: p if p["resident_bytes"] > 100 * MiB else None)(
                host.partition(host.counters(0.05), "grow")), 30, what="resident memory past 100 MiB")
            self.assertEqual(part["visible_bytes"], 160 * MiB)
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 160 * MiB)
            self.assertNotIn("CORRUPTION", vm.console())
            self.assertIsNone(vm.proc.poll(), vm.stderr())
            print(f"# hot-add of 96 MiB: {hot_add_s * 1000:.0f} ms from MemoryAdjust to the guest's line")
            control.close()

    def test_balloon_takes_back_released_memory_and_host_memory_falls(self):
        with HvHost(memory="512MB") as host:
            # The soak fills most of visible RAM, then frees it: the balloon's pages
            # are then mostly ones the host had to back.
            vm, control = start_vm(host, "shrink", "96MB", "96MB",
                                   "memsoak_mb=80 memsoak_step_mb=40 memsoak_step_ms=50 memsoak_hold_s=1")
            vm.wait_console(r"^memsoak: released", timeout=60)
            before = host.partition(host.counters(0.05), "shrink")
            self.assertGreater(before["resident_bytes"], 80 * MiB)
            reply = control.adjust(-64 * MiB)
            self.assertEqual(reply.error, 0, reply.error_message)
            status = control.status_until(lambda s: s.ballooned_bytes == 64 * MiB and not s.pending_remove_bytes, 20,
                                          "64 MiB ballooned")
            self.assertEqual(status.assigned_bytes, 32 * MiB)
            self.assertEqual(status.removed_bytes_total, 64 * MiB)
            self.assertEqual(status.refused_pages, 0)
            after = host.partition(host.counters(0.05), "shrink")
            self.assertEqual(after["ballooned_bytes"], 64 * MiB)
            # Measured: at least the released pages the balloon took are gone from the host.
            self.assertLess(after["resident_bytes"], before["resident_bytes"] - 40 * MiB, (before, after))
            self.assertEqual(host.counters(0.05)["pool_used_bytes"], 32 * MiB)
            # Growing again deflates the balloon before any hot-add.
            self.assertEqual(control.adjust(32 * MiB).error, 0)
            status = control.status_until(lambda s: s.ballooned_bytes == 32 * MiB, 10, "32 MiB ballooned")
            self.assertEqual(status.visible_bytes, 96 * MiB)
            self.assertEqual(status.assigned_bytes, 64 * MiB)
            self.assertIsNone(vm.proc.poll(), vm.stderr())
            control.close()

    def test_memory_adjust_is_refused_with_a_reason(self):
        with HvHost(memory="256MB") as host:
            _, control = start_vm(host, "refuse", "64MB", "96MB", "memsoak_mb=8")
            cases = [(3 * MiB, "multiple of 2 MiB"), (0, "multiple of 2 MiB"), (1 << 30, None),
                     (64 * MiB, "maximum memory")]
            for delta, message in cases:
                with self.subTest(delta=delta):
                    reply = control.adjust(delta)
                    if message is None:  # more than the room: what fits is hot-added
                        self.assertEqual(reply.error, 0, reply.error_message)
                    else:
                        self.assertLess(reply.error, 0)
                        self.assertIn(message, reply.error_message)
            control.close()

    def test_a_guest_that_stops_reporting_is_shown_as_not_reporting(self):
        with HvHost(memory="256MB") as host:
            _, control = start_vm(host, "quiet", "64MB", "64MB", "memsoak_mb=8")
            control.status_until(lambda s: s.reporting, 10, "reporting")
            request = control.worker.Request(id=100, pause=control.worker.Pause())
            control.sock.send(request.SerializeToString())
            status = control.status_until(lambda s: not s.reporting, 10, "reporting = false while paused")
            self.assertEqual(status.assigned_bytes, 64 * MiB)  # hvd's figures keep coming
            request = control.worker.Request(id=101, resume=control.worker.Resume())
            control.sock.send(request.SerializeToString())
            control.status_until(lambda s: s.reporting, 10, "reporting again after resume")
            control.close()


if __name__ == "__main__":
    unittest.main()
