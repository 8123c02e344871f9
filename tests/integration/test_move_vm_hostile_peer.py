#!/usr/bin/python3
"""Move-VM against a hostile peer: a raw TLS client or server written here (Python's ssl,
a certificate from the hosts' CA, so it gets past TLS and the peer list) that breaks the
migration protocol (vmms-migration.h) on purpose.

- As a source, against a real destination: frames out of order, of an unknown type, with
  reserved bytes set, oversize, with a bad magic, a HELLO of another protocol version,
  refused offers and compare-only offers; each is refused or discarded with an event
  naming why, a compare-only refusal is logged as a compatibility check (not as a
  refused move), and nothing of any VM is left there.
- As a destination, against a real source moving a running VM: each wrong answer ends
  the move with an error naming it, and the VM runs on at the source.
- A second move of a VM (same id, or same name) while the first is in flight is refused
  by name, and the first completes.
- A source whose offer is accepted (a real one, replayed) and whose stream or saved file
  is garbage gets FAILED naming what the destination's worker found wrong, and the
  destination keeps nothing; so does one whose valid stream goes on past the most
  passes over RAM a source sends (an endless pre-copy)."""
import os
import shutil
import signal
import socket
import ssl
import struct
import threading
import unittest
import uuid
import zlib

import grpc
from gi.repository import GLib

from move_hosts import MiB, MoveHosts, passes
from test_move_vm import Mover
from vmms_host import wait_for

HELLO, OFFER, ACCEPT, REFUSE, STATE, DONE, STARTED, FAILED, READY, COMMIT, COMMITTED, BEGIN = range(1, 13)
PAYLOAD_MAX = 1 << 20
ZERO_RUN = 1  # a MEMORY run's kind (vmwp-stream.h): all zeros, no data follows


def frame(kind, payload=b"", length=None, magic=b"VMMG", reserved=0):
    return magic + struct.pack("<HHI", kind, reserved, len(payload) if length is None else length) + payload


def vardict(**values):
    """An a{sv} in normal form, from (type, value) pairs."""
    return GLib.Variant("a{sv}", {k.replace("_", "-"): GLib.Variant(t, v) for k, (t, v) in values.items()}
                        ).get_data_as_bytes().get_data()


def hello(version=3, host="hostile"):
    return frame(HELLO, vardict(version=("u", version), host=("s", host), engine=("s", "bundled"),
                                guest_abi=("u", 1)))


def offer(vm_id=None, name="hostile", compare_only=False, vps=1):
    values = dict(id=("s", vm_id or str(uuid.uuid4())), name=("s", name), vps=("u", vps), reserve=("u", 0),
                  maximum=("u", 100), weight=("u", 100), dynamic=("b", False), startup=("t", 64 * MiB),
                  minimum=("t", 64 * MiB), maximum_bytes=("t", 64 * MiB), buffer=("u", 20),
                  priority=("u", 50), paging=("t", 0), workload=("s", "idle"), boot_args=("s", ""),
                  notes=("s", ""), auto_start=("u", 0), created=("x", 0), needs=("t", 64 * MiB),
                  processor_compatibility=("b", False))
    if compare_only:
        values["compare_only"] = ("b", True)
    return frame(OFFER, vardict(**values))


def read_frame(tls):
    """(type, payload) of the next frame, or None once the peer has closed."""
    def exactly(n):
        data = b""
        while len(data) < n:
            try:
                chunk = tls.recv(n - len(data))
            except (ssl.SSLError, ConnectionError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

    header = exactly(12)
    if header is None:
        return None
    kind, _, length = struct.unpack("<HHI", header[4:])
    payload = exactly(length) if length else b""
    return None if payload is None else (kind, payload)


def stream(*sections, magic=b"VMMSLIVE"):
    """A migration stream (vmwp-stream.h): the header, then (type, payload) sections."""
    head = magic + struct.pack("<IIQI", 1, 32, 0, 0)
    out = head + struct.pack("<I", zlib.crc32(head))
    for kind, payload in sections:
        sh = struct.pack("<IIQI", kind, 0, len(payload), zlib.crc32(payload))
        out += sh + struct.pack("<I", zlib.crc32(sh)) + payload + bytes(-len(payload) % 8)
    return out


def reason(payload):
    return GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes(payload), False)["reason"]


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class HostilePeerTest(MoveHosts, unittest.TestCase):
    def client(self, host, cert="hosta"):
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.dir / f"{cert}.pem"), str(self.dir / f"{cert}.key"))
        address, port = host.address.split(":")
        return ctx.wrap_socket(socket.create_connection((address, int(port)), timeout=20))

    def converse(self, host, frames):
        """Sends `frames` (each waits for nothing), then the answer frame, or None if closed."""
        with self.client(host) as tls:
            for f in frames:
                try:
                    tls.sendall(f)
                except (ssl.SSLError, ConnectionError):
                    break
            return read_frame(tls)

    def wait_event(self, host, text):
        wait_for(lambda: any(text in m for m in self.events(host)), 20, what=f"an event naming {text!r}")

    def test_a_hostile_source_is_refused_by_name_and_leaves_nothing(self):
        # name, frames, the answer (None: the connection just ends), what it and the event say
        cases = [
            ("state before hello", [frame(STATE, b"\0" * 16)], None, "it sent STATE out of order"),
            ("offer before hello", [offer()], None, "it sent OFFER out of order"),
            ("hello twice", [hello(), hello()], None, "it sent HELLO out of order"),
            ("begin before an offer", [hello(), frame(BEGIN, vardict(mode=("s", "quick")))], None,
             "it sent BEGIN out of order"),
            ("done before an accept", [hello(), frame(DONE, vardict(bytes=("t", 0)))], None,
             "it sent DONE out of order"),
            ("unknown frame type", [frame(99)], None, "unknown frame type 99"),
            ("reserved bytes set", [frame(HELLO, reserved=1)], None, "reserved"),
            ("oversize frame", [frame(STATE, length=PAYLOAD_MAX + 1)], None,
             f"frame of {PAYLOAD_MAX + 1} bytes; at most {PAYLOAD_MAX}"),
            ("bad magic", [frame(HELLO, magic=b"HTTP")], None, "bad magic"),
            ("hello of version 4", [hello(version=4)], REFUSE, "protocol version 4"),
            ("hello of another engine", [frame(HELLO, vardict(version=("u", 3), host=("s", "hostile"),
                                                              engine=("s", "libvirt"), guest_abi=("u", 1)))],
             REFUSE, "its engine is 'libvirt'"),
            ("offer without a processor", [hello(host="mover"), offer(name="moved")], REFUSE,
             "refused an incoming move of 'moved' from mover: the source did not say what processor"),
            ("compare-only offer without a processor", [hello(host="comparer"), offer(name="compared",
                                                                                       compare_only=True)],
             REFUSE, "compared VM 'compared' from comparer: it could not move here: the source did not say"),
            ("compare-only offer of a bad definition", [hello(host="comparer2"),
                                                        offer(name="bad", compare_only=True, vps=0)],
             REFUSE, "compared VM 'bad' from comparer2: it could not move here: the offered definition"),
        ]
        with self.host("hostb", "CN=hosta") as b:
            for name, frames, answer, says in cases:
                with self.subTest(name):
                    got = self.converse(b, frames)
                    if answer is None:
                        self.assertIsNone(got, f"{name}: answered {got}")
                    else:
                        self.assertIsNotNone(got, f"{name}: closed without an answer")
                        self.assertEqual(got[0], answer)
                        self.assertIn(says.split(": ")[-1], reason(got[1]))
                    self.wait_event(b, says)
            events = self.events(b)
            self.assertFalse([m for m in events if "refused an incoming move" in m and "compare" in m], events)
            self.assertFalse([m for m in events if "'compared'" in m and "refused" in m], events)
            self.assertEqual(self.vms(b), {})
            saved = b.state / "saved"
            self.assertEqual([p.name for p in saved.glob("*")] if saved.exists() else [], [])
            self.assertIsNone(b.proc.poll(), b.log())

    def test_a_hostile_destination_ends_the_move_and_the_vm_runs_on(self):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.dir / "ca.pem"))
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_cert_chain(str(self.dir / "hostb.pem"), str(self.dir / "hostb.key"))
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def answer_offer(*frames):
            def act(tls):
                for _ in (HELLO, OFFER):
                    assert read_frame(tls) is not None
                for f in frames:
                    tls.sendall(f)
            return act

        def skip_ready(tls):
            """Accepts, takes the whole stream, then says COMMITTED where READY belongs."""
            answer_offer(frame(ACCEPT, vardict()))(tls)
            while (got := read_frame(tls)) is not None and got[0] != DONE:
                pass
            tls.sendall(frame(COMMITTED, vardict()))

        cases = [
            ("unknown frame type", answer_offer(frame(99)), "unknown frame type 99"),
            ("oversize frame", answer_offer(frame(REFUSE, length=2 * PAYLOAD_MAX)),
             f"frame of {2 * PAYLOAD_MAX} bytes; at most {PAYLOAD_MAX}"),
            ("bad magic", answer_offer(frame(ACCEPT, vardict(), magic=b"XXXX")), "bad magic"),
            ("ready to an offer", answer_offer(frame(READY, vardict())), "answered READY to the offer"),
            ("refuse without a reason", answer_offer(frame(REFUSE, b"\xff\x00\x01")),
             "answered REFUSE to the offer"),
            ("committed instead of ready", skip_ready, "answered COMMITTED to DONE"),
        ]
        with self.host("hosta", "CN=hostb") as a:
            pb = a.pb
            vm = self.start_soak(a)
            destination = "127.0.0.1:%d" % listener.getsockname()[1]
            for name, act, says in cases:
                with self.subTest(name):
                    def serve():
                        conn, _ = listener.accept()
                        conn.settimeout(60)
                        try:
                            with server.wrap_socket(conn, server_side=True) as tls:
                                act(tls)
                                read_frame(tls)  # until the source hangs up
                        except (ssl.SSLError, OSError, AssertionError):
                            pass

                    peer = threading.Thread(target=serve, daemon=True)
                    peer.start()
                    with self.assertRaises(grpc.RpcError) as e:
                        a.api.MoveVm(pb.MoveVmRequest(vm="web", destination_host=destination), timeout=120)
                    peer.join(30)
                    self.assertIn(says, e.exception.details())
                    a.wait_state("web", pb.VM_STATE_RUNNING, timeout=60)
            n = len(passes(a, vm.id))
            wait_for(lambda: len(passes(a, vm.id)) > n, 60, what="the guest to go on at A")
            self.assertNotIn("CORRUPTION", a.console(vm.id))

    def test_a_second_move_of_a_vm_in_flight_is_refused_by_name(self):
        with self.host("hosta", "CN=hostb", stop_at="accepted") as a, self.host("hostb", "CN=hosta") as b:
            pb = a.pb
            vm = self.start_soak(a)
            mover = Mover(self, a, b)
            self.wait_stopped(a)  # B accepted the first move; A holds it there
            arriving = f"a move of VM 'web' ({vm.id}) from hosta is already arriving there"
            # name, the second source's host name, its offer, how B logs the refusal
            cases = [
                ("the same id", "second", offer(vm_id=vm.id, name="web"), "refused an incoming move of 'web'"),
                ("the same name, another id", "third", offer(name="web"), "refused an incoming move of 'web'"),
                ("a compare-only offer of it", "fourth", offer(vm_id=vm.id, name="web", compare_only=True),
                 "compared VM 'web'"),
            ]
            for name, source, second, logged in cases:
                with self.subTest(name):
                    got = self.converse(b, [hello(host=source), second])
                    self.assertIsNotNone(got, "closed without an answer")
                    self.assertEqual(got[0], REFUSE)
                    self.assertIn(arriving, reason(got[1]))
                    self.wait_event(b, f"{logged} from {source}: " +
                                    ("it could not move here: " if "compared" in logged else "") + arriving)
            os.kill(a.proc.pid, signal.SIGCONT)
            mover.join(120)
            self.assertIsNone(mover.error, mover.error)
            self.assertEqual(mover.result.phase, "completed")
            self.assert_continues(b, vm)

    def capture_offer(self, a, vm_name):
        """The OFFER a real source sends for vm_name (a listener playing hostb refuses it,
        so the VM runs on), as a dict of GLib.Variant values."""
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.dir / "ca.pem"))
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_cert_chain(str(self.dir / "hostb.pem"), str(self.dir / "hostb.key"))
        captured = []
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def serve():
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True) as tls:
                    read_frame(tls)
                    captured.append(read_frame(tls))
                    tls.sendall(frame(REFUSE, vardict(reason=("s", "captured"))))
                    read_frame(tls)

            peer = threading.Thread(target=serve, daemon=True)
            peer.start()
            with self.assertRaises(grpc.RpcError):
                a.api.MoveVm(a.pb.MoveVmRequest(vm=vm_name, destination_host="127.0.0.1:%d" %
                                                listener.getsockname()[1]), timeout=60)
            peer.join(30)
        kind, payload = captured[0]
        self.assertEqual(kind, OFFER)
        offered = GLib.Variant.new_from_bytes(GLib.VariantType("a{sv}"), GLib.Bytes(payload), False)
        return {k: offered.lookup_value(k, None) for k in offered.keys()}

    def test_a_hostile_stream_or_saved_file_fails_naming_what_was_wrong(self):
        memory = stream((6, b""))  # MEMORY before CONFIG
        cases = [
            ("live, not a stream", "live", b"GARBAGE!" + bytes(56), "not a migration stream (bad magic)"),
            ("live, out of order", "live", memory, "section 0 (MEMORY) is out of order: CONFIG belongs there"),
            ("live, another geometry", "live", stream((1, struct.pack("<IQQ", 7, 1 << 30, 1 << 30))),
             "the incoming VM has 7 VPs"),
            ("quick, not a saved file", "quick", b"VMMSLIVE" + bytes(56), "not a saved VM (bad magic)"),
            # a valid stream whose pre-copy never ends: one zero run over all of RAM per section
            ("live, endless pre-copy", "live", stream((1, struct.pack("<IQQ", 1, 64 * MiB, 64 * MiB)),
                                                      *[(6, struct.pack("<QQ", ZERO_RUN, 64 * MiB))] * 40),
             "more than 32 passes over the VM's 16384 pages (33 MEMORY sections) and it has not ended"),
        ]
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta") as b:
            a.create("web")
            a.api.StartVm(a.pb.VmRef(vm="web"), timeout=30)
            offered = self.capture_offer(a, "web")
            for n, (name, mode, data, says) in enumerate(cases):
                with self.subTest(name):
                    values = dict(offered, id=GLib.Variant("s", str(uuid.uuid4())),
                                  name=GLib.Variant("s", f"hostile{n}"))
                    offer_frame = frame(OFFER, GLib.Variant("a{sv}", values).get_data_as_bytes().get_data())
                    with self.client(b) as tls:
                        tls.sendall(hello() + offer_frame)
                        accepted = read_frame(tls)
                        self.assertEqual(accepted[0], ACCEPT, accepted)
                        try:
                            tls.sendall(frame(BEGIN, vardict(mode=("s", mode))) + frame(STATE, data) +
                                        frame(DONE, vardict(bytes=("t", len(data)))))
                        except (ssl.SSLError, ConnectionError):
                            pass
                        answer = read_frame(tls)
                    self.assertIsNotNone(answer, "closed without an answer")
                    self.assertEqual(answer[0], FAILED)
                    self.assertIn(says, reason(answer[1]))
                    wait_for(lambda: f"hostile{n}" not in self.vms(b), 30, what="the received VM to go")
            self.assertEqual(self.vms(b), {})
            saved = b.state / "saved"
            self.assertEqual([p.name for p in saved.glob("*")] if saved.exists() else [], [])
            self.assertEqual(a.api.GetVm(a.pb.VmRef(vm="web"), timeout=5).state, a.pb.VM_STATE_RUNNING)


if __name__ == "__main__":
    unittest.main()
