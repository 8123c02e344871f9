"""Move-VM between two vmmsd hosts on this machine (quick migration over mutual TLS):
a memsoak guest moved from A to B continues on B where it was (its pass counter goes on,
no CORRUPTION) and is gone from A; it moves back; a destination that does not list the
source's certificate refuses and the VM runs on at A; a client without a certificate
cannot connect; a destination whose pool is too small refuses before anything is sent;
a destination killed mid-transfer leaves the VM running again on A and nothing on B; a
destination killed once the whole state is sent leaves A's copy Saved "in doubt", never
started by the move, and the operator's Start-VM / Remove-VM settles it on one host.
Certificates come from openssl in a temporary directory."""
import re
import signal
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

import grpc

from test_access import make_ca, make_cert
from vmms_host import wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20
HOST_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth"
SOAK = "memsoak_mb=24 memsoak_step_mb=24 memsoak_step_ms=50"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def passes(host, vm_id):
    return [int(n) for n in re.findall(r"^memsoak: pass (\d+)", host.console(vm_id), re.M)]


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class MoveVmTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="vmms-move-")
        d = cls.dir = Path(cls._tmp.name)
        make_ca(d, "ca")
        for name in ("hosta", "hostb", "stranger"):
            make_cert(d, "ca", name, f"/CN={name}", HOST_EXT)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def host(self, name, peers, hvd_memory="1GB"):
        port = free_port()
        conf = self.dir / f"{name}-{port}.conf"
        conf.write_text(f"[access]\nmigration-peers={peers}\n")
        d = self.dir
        host = VmmsdHost(hvd_memory=hvd_memory, extra=(
            "--config", str(conf), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key"),
            "--tls-ca", str(d / "ca.pem"), "--migration-listen", f"127.0.0.1:{port}", "--migration-name", name))
        host.address = f"127.0.0.1:{port}"
        wait_for(lambda: host.api.GetHost(host.pb.GetHostRequest(), timeout=5).memory_pool_bytes > 0, 30,
                 what=f"{name}'s hypervisor pool")
        return host

    def start_soak(self, host, name="web"):
        pb = host.pb
        vm = host.create(name, startup=64 * MiB, workload="memsoak", boot_args=SOAK)
        host.api.StartVm(pb.VmRef(vm=name), timeout=30)
        wait_for(lambda: len(passes(host, vm.id)) >= 2, 60, what="two memsoak passes")
        return vm

    def move(self, src, dst, name="web", timeout=120):
        return src.api.MoveVm(src.pb.MoveVmRequest(vm=name, destination_host=dst.address), timeout=timeout)

    def assert_gone(self, host, vm, name="web"):
        with self.assertRaises(grpc.RpcError) as e:
            host.api.GetVm(host.pb.VmRef(vm=name), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertFalse((host.state / "saved" / f"{vm.id}.vmrs").exists())
        self.assertEqual(list((host.state / "saved").glob("*")) if (host.state / "saved").exists() else [], [])

    def test_a_memsoak_guest_moves_to_b_continues_there_and_moves_back(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = self.start_soak(a)
            result = self.move(a, b)
            before = passes(a, vm.id)
            self.assertEqual(result.phase, "completed")
            self.assertEqual(result.data_processed, result.data_total)
            self.assertGreater(result.data_total, 0)
            print(f"# A->B: {result.data_total} bytes, downtime {result.downtime_ms} ms, "
                  f"total {result.time_elapsed_ms} ms")
            self.assert_gone(a, vm)
            moved = b.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(moved.state, pb.VM_STATE_RUNNING)
            self.assertEqual(moved.id, vm.id)
            wait_for(lambda: len(passes(b, vm.id)) >= 2, 60, what="passes on B")
            after = passes(b, vm.id)
            self.assertGreater(after[0], before[-1], "the guest started over on B instead of continuing")
            self.assertNotIn("CORRUPTION", b.console(vm.id))
            events = [e.message for e in a.api.ListEvents(pb.ListEventsRequest(limit=20), timeout=5).events]
            self.assertIn("moved to " + b.address, events)
            events = [e.message for e in b.api.ListEvents(pb.ListEventsRequest(vm="web", limit=20),
                                                            timeout=5).events]
            self.assertIn("moved here from hosta", events)

            back = self.move(b, a)
            self.assertEqual(back.phase, "completed")
            self.assert_gone(b, vm)
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).state, pb.VM_STATE_RUNNING)
            on_b = passes(b, vm.id)
            wait_for(lambda: any(p > on_b[-1] for p in passes(a, vm.id)), 60, what="passes on A again")
            self.assertNotIn("CORRUPTION", a.console(vm.id))

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
            events = [e.message for e in b.api.ListEvents(pb.ListEventsRequest(limit=20), timeout=5).events]
            self.assertTrue(any("refused an incoming move" in m and "CN=hosta" in m for m in events), events)
            self.assertEqual(list(b.api.ListVms(pb.ListVmsRequest(), timeout=5).vms), [])

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
            events = [e.message for e in b.api.ListEvents(b.pb.ListEventsRequest(limit=20), timeout=5).events]
            self.assertTrue(any("refused a migration connection" in m for m in events), events)

    def test_a_destination_whose_pool_is_too_small_refuses_up_front(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", hvd_memory="48MB") as b:
            pb = a.pb
            vm = self.start_soak(a)
            with self.assertRaises(grpc.RpcError) as e:
                self.move(a, b)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertRegex(e.exception.details(), r"refused it: the VM needs .* of memory but its pool has")
            got = a.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(got.state, pb.VM_STATE_RUNNING)
            events = [e.message for e in a.api.ListEvents(pb.ListEventsRequest(vm="web", limit=20),
                                                            timeout=5).events]
            self.assertFalse(any("saving its state to move it" in m for m in events),
                             "the VM was paused before the destination accepted")
            self.assertEqual(passes(a, vm.id), sorted(passes(a, vm.id)))

    def test_a_destination_killed_mid_transfer_leaves_the_vm_running_on_a(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = self.start_soak(a)
            incoming = b.state / "saved" / f"{vm.id}.vmrs.incoming"

            def kill_when_receiving():
                wait_for(lambda: incoming.exists() and incoming.stat().st_size > 0, 60, interval=0.005,
                         what="the transfer to begin")
                b.kill9()

            killer = threading.Thread(target=kill_when_receiving)
            killer.start()
            with self.assertRaises(grpc.RpcError) as e:
                self.move(a, b)
            killer.join()
            self.assertIn("cannot move VM 'web'", e.exception.details())
            got = a.wait_state("web", pb.VM_STATE_RUNNING, timeout=60)
            self.assertEqual(got.id, vm.id)
            before = passes(a, vm.id)
            wait_for(lambda: len(passes(a, vm.id)) > len(before), 60, what="the guest to go on at A")
            self.assertNotIn("CORRUPTION", a.console(vm.id))
            # B comes back with nothing of the VM (what it had received is discarded).
            b.start()
            self.assertEqual(list(b.api.ListVms(pb.ListVmsRequest(), timeout=5).vms), [])
            self.assertEqual([p.name for p in (b.state / "saved").glob("*")], [])


    def test_a_destination_killed_after_done_leaves_the_vm_saved_in_doubt_on_a(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = self.start_soak(a)
            received = b.state / "saved" / f"{vm.id}.vmrs"

            def kill_once_whole():
                # B renames the state to its final name on DONE, before it starts the VM.
                wait_for(received.exists, 60, interval=0.001, what="the whole state on B")
                b.proc.send_signal(signal.SIGSTOP)
                b.kill9()

            killer = threading.Thread(target=kill_once_whole)
            killer.start()
            with self.assertRaises(grpc.RpcError) as e:
                self.move(a, b)
            killer.join()
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("is unknown", e.exception.details())
            # A never starts its copy: it stays Saved, with the event saying what to do.
            time.sleep(1)
            got = a.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(got.state, pb.VM_STATE_SAVED)
            self.assertTrue((a.state / "saved" / f"{vm.id}.vmrs").exists())
            events = [e.message for e in a.api.ListEvents(pb.ListEventsRequest(vm="web", limit=20),
                                                            timeout=5).events]
            self.assertTrue(any("is unknown" in m and "Remove-VM" in m for m in events), events)
            before = passes(a, vm.id)
            # The operator settles it on one host: B's copy is removed if B kept one, A's started.
            b.start()
            try:
                on_b = b.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            except grpc.RpcError as err:
                self.assertEqual(err.code(), grpc.StatusCode.NOT_FOUND)
                on_b = None
            if on_b is not None:
                if on_b.state in (pb.VM_STATE_STARTING, pb.VM_STATE_STOPPING):
                    on_b = wait_for(lambda: (lambda v: v if v.state not in (
                        pb.VM_STATE_STARTING, pb.VM_STATE_STOPPING) else None)(
                        b.api.GetVm(pb.VmRef(vm="web"), timeout=5)), 60, what="B's copy to settle")
                if on_b.state in (pb.VM_STATE_RUNNING, pb.VM_STATE_PAUSED):
                    b.api.StopVm(pb.StopVmRequest(vm="web", turn_off=True), timeout=30)
                b.api.RemoveVm(pb.VmRef(vm="web"), timeout=30)
            a.api.StartVm(pb.VmRef(vm="web"), timeout=30)
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).state, pb.VM_STATE_RUNNING)
            wait_for(lambda: len(passes(a, vm.id)) > len(before), 60, what="the guest to go on at A")
            self.assertGreater(passes(a, vm.id)[-1], before[-1] if before else -1)
            self.assertNotIn("CORRUPTION", a.console(vm.id))
            self.assertEqual(list(b.api.ListVms(pb.ListVmsRequest(), timeout=5).vms), [])

if __name__ == "__main__":
    unittest.main()
