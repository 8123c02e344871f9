"""Connect-VM: the guest's console through vmmsd's WatchConsole stream — its last lines first, then
what the guest writes next, until Ctrl-C — and the same stream from an independent gRPC client."""
import os
import queue
import signal
import subprocess
import threading
import time
import unittest

from vmmsd_host import VMMSD, VmmsdHost
from vmms_host import BUILD, wait_for

VMCTL = BUILD / "cli" / "vmctl"


class Follower:
    """`vmctl Connect-VM` running, its stdout lines gathered by a thread."""

    def __init__(self, socket, *args):
        env = dict(os.environ, VMMS_SOCKET=str(socket))
        self.proc = subprocess.Popen([str(VMCTL), "Connect-VM", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, fragment, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no console line with {fragment!r} in {timeout} s; saw {self.seen}")

    def first_lines(self, n, timeout=10):
        for _ in range(n):
            self.seen.append(self.lines.get(timeout=timeout))
        return self.seen[:n]

    def interrupt(self):
        """Ctrl-C; returns the exit status."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return status


@unittest.skipUnless(VMMSD.exists(), "vmmsd not built")
class ConnectVmTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = VmmsdHost(stop_timeout=5)

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def vmctl(self, *args):
        env = dict(os.environ, VMMS_SOCKET=str(self.host.socket))
        return subprocess.run([str(VMCTL), *args], capture_output=True, text=True, timeout=60, env=env)

    def start(self, name, workload):
        vm = self.host.create(name, workload=workload)
        self.addCleanup(self.vmctl, "Remove-VM", name, "-Force")
        return vm

    def test_boot_lines_appear_as_the_guest_boots_and_ctrl_c_leaves(self):
        self.start("booting", "cpu")
        follower = Follower(self.host.socket, "booting")  # before Start-VM: nothing to show yet
        try:
            out = self.vmctl("Start-VM", "booting")
            self.assertEqual(out.returncode, 0, out.stderr)
            line = follower.wait_line("vmms-guest: boot")
            self.assertIn("workload=cpu", line)
            self.assertIsNone(follower.proc.poll(), "Connect-VM keeps following")
        finally:
            status = follower.interrupt()
        self.assertIn(status, (-signal.SIGINT, 130), "Ctrl-C ends Connect-VM")

    def test_tail_shows_the_last_lines_then_follows_a_shutdown(self):
        vm = self.start("tailed", "idle")
        out = self.vmctl("Start-VM", "tailed")
        self.assertEqual(out.returncode, 0, out.stderr)
        # The idle guest is quiet once its VMBus channels are open.
        wait_for(lambda: "storage open" in self.host.console(vm.id), 20, what="the guest to finish booting")
        time.sleep(0.5)
        log = self.host.console(vm.id).rstrip("\n").split("\n")
        follower = Follower(self.host.socket, "tailed", "-Tail", "2")
        try:
            self.assertEqual(follower.first_lines(2), log[-2:])
            out = self.vmctl("Stop-VM", "tailed")
            self.assertEqual(out.returncode, 0, out.stderr)
            follower.wait_line("shutdown requested")
            self.assertNotIn(log[-3], follower.seen, "-Tail 2 shows two lines, not more")
        finally:
            follower.interrupt()

    def test_grpc_stream_sends_the_console_bytes(self):
        vm = self.start("streamed", "idle")
        self.host.api.StartVm(self.host.pb.VmRef(vm="streamed"), timeout=30)
        wait_for(lambda: "vmms-guest: boot" in self.host.console(vm.id), 20, what="the boot line")
        stream = self.host.api.WatchConsole(self.host.pb.WatchConsoleRequest(vm=vm.id, tail_lines=100),
                                            timeout=30)
        data = b""
        for chunk in stream:
            data += chunk.data
            if b"vmms-guest: boot" in data:
                break
        stream.cancel()
        self.assertTrue(data.startswith(b"vmms-guest: boot"), data[:200])

    def test_unknown_vm_and_bad_tail_are_refused(self):
        out = self.vmctl("Connect-VM", "no-such-vm")
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("no-such-vm", out.stderr)
        out = self.vmctl("Connect-VM", "x", "-Tail", "0")
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("Tail", out.stderr)
        import grpc
        with self.assertRaises(grpc.RpcError) as caught:
            for _ in self.host.api.WatchConsole(self.host.pb.WatchConsoleRequest(vm="no-such-vm"), timeout=10):
                pass
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main()
