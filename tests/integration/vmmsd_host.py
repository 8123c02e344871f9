"""A vmmsd on its own state and runtime directories, with the hvd it starts, and a
gRPC client built from proto/vmms.proto by protoc for Debian's python3-grpcio — a
client nobody here wrote. Every process whose command line names the directory is
killed at the end (vmmsd detaches hvd and the workers so they outlive it)."""
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from vmms_host import BUILD, proto_modules, wait_for

VMMSD = BUILD / "vmms" / "vmmsd"


def stubs():
    """vmms_pb2 and vmms_pb2_grpc."""
    return proto_modules("vmms", grpc=True)


def processes_naming(text):
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class VmmsdHost:
    def __init__(self, hvd_memory="1GB", hvd_lps=2, stop_timeout=10, extra=(), env=None):
        self._tmp = tempfile.TemporaryDirectory(prefix="vmmsd-test-")
        self.dir = Path(self._tmp.name)
        self.state = self.dir / "state"
        self.runtime = self.dir / "run"
        self.socket = self.runtime / "vmms.sock"
        self.args = [str(VMMSD), "--state-dir", str(self.state), "--runtime-dir", str(self.runtime),
                     "--hvd-memory", hvd_memory, "--hvd-lps", str(hvd_lps), "--stop-timeout", str(stop_timeout),
                     "--dbus", "none", *extra]  # a later --dbus in extra wins
        self.proc = None
        self.env = env  # more environment for vmmsd (None: the test's own); start() reads it
        self._channel = None
        self.pb, self.pb_grpc = stubs()
        self.start()

    def start(self):
        log = open(self.dir / "vmmsd.log", "ab")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_for(lambda: self.socket.exists() or self.proc.poll() is not None, 20, what="vmmsd's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"vmmsd exited: {self.log()}")
        self.reconnect()

    def reconnect(self):
        import grpc
        if self._channel:
            self._channel.close()
        self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        grpc.channel_ready_future(self._channel).result(timeout=10)
        self.api = self.pb_grpc.VmmsStub(self._channel)

    @property
    def channel(self):
        return self._channel

    def log(self):
        return (self.dir / "vmmsd.log").read_text(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def create(self, name, startup=64 << 20, workload="idle", vps=1, **kw):
        pb = self.pb
        memory = pb.MemorySettings(startup_bytes=startup, **{k: v for k, v in kw.items() if k in (
            "minimum_bytes", "maximum_bytes", "buffer", "priority", "dynamic_memory_enabled", "paging_bytes")})
        processor = pb.ProcessorSettings(count=vps, **{k: v for k, v in kw.items() if k in (
            "reserve", "maximum", "relative_weight")})
        return self.api.CreateVm(pb.CreateVmRequest(name=name, memory=memory, processor=processor,
                                                    workload=workload, boot_args=kw.get("boot_args", "")),
                                 timeout=10)

    def wait_state(self, name, state, timeout=20):
        pb = self.pb
        return wait_for(lambda: (lambda vm: vm if vm.state == state else None)(
            self.api.GetVm(pb.VmRef(vm=name), timeout=5)), timeout, interval=0.1,
            what=f"VM {name} to be {pb.VmState.Name(state)}")

    def console(self, vm_id):
        path = self.state / "logs" / f"{vm_id}.console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self):
        if self._channel:
            self._channel.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for _ in range(50):
            pids = processes_naming(str(self.dir))
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
