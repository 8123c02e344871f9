"""Move-VM between two vmmsd hosts on this machine (protocol version 3 over mutual TLS: the
source's worker sends the VM live, the destination's worker holds it paused, the source
commits, the destination resumes it): a
memsoak guest moved from A to B continues on B where it was (its pass counter goes on, no
CORRUPTION) and is gone from A; it moves back; WatchMoveVm and Get-VM show the progress;
vmctl prints it; Stop-VMMigration cancels a move not yet committed (the VM runs on at A,
B keeps nothing) and refuses one already committed; version 1 and 2 sources are
refused by name; a destination that does not list the source's certificate refuses; a client
without a certificate cannot connect; a destination whose pool is too small refuses
before anything is sent; a destination killed while receiving leaves the VM running on A.
The kill -9 matrix at every phase is test_move_vm_failures.py (suite migration). Phases
are reached with vmmsd's VMMS_MIGRATION_STOP_AT hook (it stops itself there), not sleeps."""
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import unittest

import grpc

from move_hosts import MiB, MoveHosts, passes, workers
from vmms_host import BUILD, wait_for

VMCTL = BUILD / "cli" / "vmctl"


class Mover(threading.Thread):
    """MoveVm in the background: its result or its error."""

    def __init__(self, test, src, dst, **kw):
        super().__init__()
        self.test, self.src, self.dst, self.kw = test, src, dst, kw
        self.result = self.error = None
        self.start()

    def run(self):
        try:
            self.result = self.test.move(self.src, self.dst, **self.kw)
        except grpc.RpcError as e:
            self.error = e


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class MoveVmTest(MoveHosts, unittest.TestCase):
    def test_a_memsoak_guest_moves_to_b_continues_there_and_moves_back(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = self.start_soak(a)
            result = self.move(a, b, max_downtime_ms=50)
            before = passes(a, vm.id)
            self.assertEqual(result.phase, "completed")
            self.assertEqual(result.mode, "live")
            self.assertEqual(result.percent, 100)
            self.assertEqual(result.data_processed, result.data_total)
            self.assertEqual(result.data_remaining, 0)
            self.assertGreater(result.data_total, 0)
            print(f"# A->B: {result.data_total} bytes, downtime {result.downtime_ms} ms, "
                  f"total {result.time_elapsed_ms} ms, {result.memory_bps} B/s")
            self.assert_nothing_of(a, vm)
            moved = b.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(moved.state, pb.VM_STATE_RUNNING)
            self.assertEqual(moved.id, vm.id)
            self.assert_continues(b, vm, after=before[-1])
            self.assertIn("moved to " + b.address, self.events(a))
            events = self.events(b, "web")
            self.assertIn("moved here from hosta", events)
            self.assertIn("restored from the received state, paused until the source commits the move", events)
            self.assertTrue(any(m.startswith(f"moving to {b.address} live") for m in self.events(a)),
                            self.events(a))

            back = self.move(b, a)
            self.assertEqual(back.phase, "completed")
            self.assert_nothing_of(b, vm)
            self.assert_continues(a, vm, after=passes(b, vm.id)[-1])

    def test_watch_move_vm_and_get_vm_show_the_progress(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", stop_at="ready-sent") as b:
            pb = a.pb
            vm = self.start_soak(a)
            mover = Mover(self, a, b)
            self.wait_stopped(b)  # B said READY: A commits and waits for B's answer
            got = wait_for(lambda: (lambda v: v if v.status.startswith("Migrating (") else None)(
                a.api.GetVm(pb.VmRef(vm="web"), timeout=5)), 30, interval=0.05, what="Get-VM's progress")
            self.assertEqual(got.state, pb.VM_STATE_MIGRATING)
            self.assertEqual(got.status, "Migrating (99 %)")
            items = []
            stream = a.api.WatchMoveVm(pb.VmRef(vm="web"), timeout=60)
            first = next(stream)
            items.append(first)
            self.assertEqual(first.phase, "committing")
            self.assertEqual(first.destination_host, b.address)
            self.assertEqual(first.data_processed, first.data_total)
            os.kill(b.proc.pid, signal.SIGCONT)
            items += list(stream)  # ends with the move
            mover.join()
            self.assertIsNone(mover.error)
            self.assertEqual([i.phase for i in items][-1], "completed")
            self.assertEqual(items[-1].percent, 100)
            percents = [i.percent for i in items]
            self.assertEqual(percents, sorted(percents))
            with self.assertRaises(grpc.RpcError) as e:
                list(b.api.WatchMoveVm(pb.VmRef(vm="web"), timeout=10))
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("is not being moved", e.exception.details())
            self.assert_continues(b, vm)

    def test_stop_vm_migration_keeps_the_vm_running_on_a_and_b_discards(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", stop_at="receiving") as b:
            pb = a.pb
            vm = self.start_soak(a)
            mover = Mover(self, a, b)
            self.wait_stopped(b)
            got = a.api.StopVmMigration(pb.VmRef(vm="web"), timeout=60)
            self.assertEqual(got.state, pb.VM_STATE_RUNNING)
            mover.join()
            self.assertEqual(mover.error.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("cancelled (Stop-VMMigration)", mover.error.details())
            os.kill(b.proc.pid, signal.SIGCONT)
            wait_for(lambda: any("discarded an incoming move of 'web'" in m for m in self.events(b)), 30,
                     what="B to discard what it received")
            self.assert_nothing_of(b, vm)
            self.assert_continues(a, vm, after=passes(a, vm.id)[-1])
            with self.assertRaises(grpc.RpcError) as e:
                a.api.StopVmMigration(pb.VmRef(vm="web"), timeout=10)
            self.assertIn("it is not being moved", e.exception.details())

    def test_stop_vm_migration_after_the_commit_is_refused(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", stop_at="commit-received") as b:
            pb = a.pb
            vm = self.start_soak(a)
            mover = Mover(self, a, b)
            self.wait_stopped(b)
            with self.assertRaises(grpc.RpcError) as e:
                a.api.StopVmMigration(pb.VmRef(vm="web"), timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("has been told to commit it", e.exception.details())
            os.kill(b.proc.pid, signal.SIGCONT)
            mover.join()
            self.assertIsNone(mover.error)
            self.assert_continues(b, vm)
            self.assertNotIn("web", self.vms(a))

    def test_vmctl_move_vm_prints_progress_and_runs_as_a_job(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            vm = self.start_soak(a)

            def vmctl(*args, sock=a.socket):
                return subprocess.run([str(VMCTL), *args], capture_output=True, text=True, timeout=120,
                                      env=dict(os.environ, VMMS_SOCKET=str(sock)))

            bad = vmctl("Move-VM", "web", "-DestinationHost", b.address, "-MaximumDowntime", "soon")
            self.assertEqual(bad.returncode, 2, bad.stderr)
            self.assertIn("-MaximumDowntime 'soon' is not a duration", bad.stderr)
            out = vmctl("Move-VM", "web", "-DestinationHost", b.address, "-MaximumDowntime", "50ms")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertRegex(out.stdout, r"Migrating \(\d+ %\) (saving|sending|restoring|committing)")
            self.assertRegex(out.stdout, rf"Moved web to {b.address} \(live migration\): .* sent, downtime \d+ ms")
            self.assert_continues(b, vm)
            stop = vmctl("Stop-VMMigration", "web", sock=b.socket)
            self.assertNotEqual(stop.returncode, 0)
            self.assertIn("it is not being moved", stop.stderr)
            job = vmctl("Move-VM", "web", "-DestinationHost", a.address, "-AsJob", sock=b.socket)
            self.assertEqual(job.returncode, 0, job.stderr)
            self.assertIn(f"Move-VM web to {a.address} runs as a job", job.stdout)
            wait_for(lambda: "web" in self.vms(a) and "web" not in self.vms(b), 60, interval=0.1,
                     what="the job to move the VM back to A")
            self.assert_continues(a, vm)

    def test_version_1_and_2_sources_are_refused_by_name(self):
        from gi.repository import GLib
        with self.host("hostb", "CN=hosta") as b:
            host, port = b.address.split(":")
            ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
            ctx.check_hostname = False
            ctx.load_cert_chain(str(self.dir / "hosta.pem"), str(self.dir / "hosta.key"))
            for version, named in ((1, "protocol version 1 (quick migration without a commit step)"),
                                   (2, "protocol version 2 (quick migration only, without BEGIN)")):
                with self.subTest(version=version):
                    hello = GLib.Variant("a{sv}", {
                        "version": GLib.Variant("u", version), "host": GLib.Variant("s", "old"),
                        "engine": GLib.Variant("s", "bundled"),
                        "guest-abi": GLib.Variant("u", 1)}).get_data_as_bytes().get_data()
                    with socket.create_connection((host, int(port)), timeout=10) as raw:
                        with ctx.wrap_socket(raw) as tls:
                            tls.sendall(b"VMMG" + struct.pack("<HHI", 1, 0, len(hello)) + hello)
                            header = b""
                            while len(header) < 12:
                                chunk = tls.recv(12 - len(header))
                                self.assertTrue(chunk, "closed without an answer")
                                header += chunk
                            kind, _, length = struct.unpack("<HHI", header[4:])
                            payload = b""
                            while len(payload) < length:
                                payload += tls.recv(length - len(payload))
                    self.assertEqual(kind, 4)  # REFUSE
                    reason = GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes(payload), False)
                    self.assertIn(named, reason["reason"])

    def test_a_destination_without_the_source_in_its_peers_refuses(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=stranger") as b:
            pb = a.pb
            vm = self.start_soak(a)
            with self.assertRaises(grpc.RpcError) as e:
                self.move(a, b)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("refused it: certificate CN=hosta", e.exception.details())
            self.assertIn("migration-peers", e.exception.details())
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).state, pb.VM_STATE_RUNNING)
            n = len(passes(a, vm.id))
            wait_for(lambda: len(passes(a, vm.id)) > n, 60, what="the guest to go on at A")
            self.assertTrue(any("refused an incoming move" in m and "CN=hosta" in m for m in self.events(b)))
            self.assertEqual(self.vms(b), {})

    def test_a_client_without_a_certificate_cannot_connect(self):
        with self.host("hostb", "CN=hosta") as b:
            host, port = b.address.split(":")
            ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
            ctx.check_hostname = False
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                with socket.create_connection((host, int(port)), timeout=10) as raw:
                    with ctx.wrap_socket(raw) as tls:
                        # TLS 1.3 reports the missing certificate on the first read.
                        tls.sendall(b"VMMG")
                        if not tls.recv(1):
                            raise ConnectionError("closed")
            self.assertTrue(any("refused a migration connection" in m for m in self.events(b)))

    def test_a_destination_whose_pool_is_too_small_refuses_up_front(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", hvd_memory="48MB") as b:
            pb = a.pb
            vm = self.start_soak(a)
            with self.assertRaises(grpc.RpcError) as e:
                self.move(a, b)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertRegex(e.exception.details(), r"refused it: the VM needs .* of memory but its pool has")
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).state, pb.VM_STATE_RUNNING)
            self.assertFalse(any("saving its state to move it" in m for m in self.events(a, "web")),
                             "the VM was paused before the destination accepted")
            self.assertEqual(passes(a, vm.id), sorted(passes(a, vm.id)))

    def test_a_destination_killed_while_receiving_leaves_the_vm_running_on_a(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", stop_at="receiving") as b:
            pb = a.pb
            vm = self.start_soak(a)
            mover = Mover(self, a, b)
            self.wait_stopped(b)
            b.kill9()
            mover.join()
            self.assertIn("cannot move VM 'web'", mover.error.details())
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).id, vm.id)
            self.assert_continues(a, vm, after=passes(a, vm.id)[-1])
            # B comes back with nothing of the VM (what it had received is discarded).
            b.env = None
            b.start()
            self.assert_nothing_of(b, vm)


if __name__ == "__main__":
    unittest.main()
