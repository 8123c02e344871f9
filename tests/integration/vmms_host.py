"""Test fixtures that run the real programs: hvd, vmwp and hvctl from the build tree,
side by side in a temporary directory. Everything started is stopped at the end."""
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("VMMS_BUILD", SOURCE / "build"))
HVD = BUILD / "hypervisor" / "hvd"
HVCTL = BUILD / "hypervisor" / "hvctl"
VMWP = BUILD / "vmwp" / "vmwp"
GUEST = BUILD / "guest" / "vmms-guest"


_generated = {}


def proto_modules(*names, grpc=False):
    """Python modules protoc generates from proto/NAME.proto (NAME_pb2, and NAME_pb2_grpc
    with grpc), once per run, for clients nobody here wrote."""
    key = (names, grpc)
    if key not in _generated:
        out = Path(tempfile.mkdtemp(prefix="vmms-stubs-"))
        args = ["protoc", f"--python_out={out}", f"-I{SOURCE / 'proto'}"]
        if grpc:
            args += [f"--grpc_python_out={out}", "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"]
        subprocess.run(args + [str(SOURCE / "proto" / f"{n}.proto") for n in names], check=True)
        sys.path.insert(0, str(out))
        modules = [importlib.import_module(f"{n}_pb2") for n in names]
        if grpc:
            modules += [importlib.import_module(f"{n}_pb2_grpc") for n in names]
        _generated[key] = tuple(modules)
    return _generated[key]


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Vm:
    def __init__(self, host, name, proc, console_path):
        self.host = host
        self.name = name
        self.proc = proc
        self.console_path = console_path

    def console(self):
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, pattern, timeout=20, count=1):
        regex = re.compile(pattern, re.M)

        def found():
            matches = regex.findall(self.console())
            return matches if len(matches) >= count else None

        try:
            return wait_for(found, timeout, what=f"console of {self.name} to match {pattern!r} x{count}")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n--- console ---\n{self.console()[-2000:]}\n--- vmwp ---\n{self.stderr()}")

    def stderr(self):
        path = self.host.dir / f"{self.name}.vmwp.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ram_memfd(self):
        """Opens the VM's guest-RAM memfd through /proc, so its blocks can be measured
        even after the VM is gone."""
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(f"/memfd:vmms-ram-{self.name} "):
                return os.open(fd, os.O_RDONLY)
        raise AssertionError(f"no guest-RAM memfd in vmwp {self.proc.pid}")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


class HvHost:
    """One hvd on its own socket, with the VMs started on it."""

    def __init__(self, memory="1GB", lps=2, slice_ms=None, extra=()):
        self._tmp = tempfile.TemporaryDirectory(prefix="vmms-test-")
        self.dir = Path(self._tmp.name)
        self.socket = self.dir / "hvd.sock"
        self.vms = []
        args = [str(HVD), "--socket", str(self.socket), "--memory", memory, "--lps", str(lps), *extra]
        if slice_ms:
            args += ["--slice-ms", str(slice_ms)]
        self._hvd_log = open(self.dir / "hvd.log", "wb")
        self.hvd = subprocess.Popen(args, stdout=self._hvd_log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.socket.exists() or self.hvd.poll() is not None, 10, what="hvd's socket")
        if self.hvd.poll() is not None:
            raise AssertionError(f"hvd exited: {self.hvd_log()}")

    def hvd_log(self):
        return (self.dir / "hvd.log").read_text(errors="replace")

    def start_vm(self, name, workload="idle", vps=1, memory="64MB", maximum=None, boot_args=None, guest=None,
                 wait_boot=True):
        console = self.dir / f"{name}.console"
        args = [str(VMWP), "--name", name, "--hvd-socket", str(self.socket), "--vps", str(vps),
                "--memory", memory, "--workload", workload, "--console-log", str(console),
                "--guest", str(guest or GUEST)]
        if maximum:
            args += ["--maximum-memory", maximum]
        if boot_args:
            args += ["--boot-args", boot_args]
        log = open(self.dir / f"{name}.vmwp.log", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        vm = Vm(self, name, proc, console)
        self.vms.append(vm)
        if wait_boot:
            vm.wait_console(r"^vmms-guest: boot ")
        return vm

    def counters(self, interval=1.0):
        out = subprocess.run([str(HVCTL), "--socket", str(self.socket), "--json", "--interval", str(interval),
                              "counters"], check=True, capture_output=True, text=True, timeout=interval + 20)
        return json.loads(out.stdout)

    def partition(self, counters, name):
        for p in counters["partitions"]:
            if p["name"] == name:
                return p
        return None

    def raw_socket(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(self.socket))
        s.settimeout(10)
        return s

    def close(self):
        for vm in self.vms:
            if vm.proc.poll() is None:
                vm.proc.kill()
                vm.proc.wait()
        if self.hvd.poll() is None:
            self.hvd.terminate()
            try:
                self.hvd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.hvd.kill()
                self.hvd.wait()
        self._hvd_log.close()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
