"""Two vmmsd hosts on this machine for the Move-VM tests: certificates from one CA (openssl
in a temporary directory), each host listening for moves on a loopback port, and the
guest checks (memsoak's pass counter and its CORRUPTION line)."""
import re
import socket
import tempfile
import time
from pathlib import Path

from test_access import make_ca, make_cert
from vmms_host import wait_for
from vmmsd_host import VmmsdHost, pid_alive, processes_naming

MiB = 1 << 20
HOST_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth"
SOAK = "memsoak_mb=24 memsoak_step_mb=24 memsoak_step_ms=50"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def passes(host, vm_id):
    return [int(n) for n in re.findall(r"^memsoak: pass (\d+)", host.console(vm_id), re.M)]


def stopped(pid):
    """Whether the process is stopped (SIGSTOP): a vmmsd at its VMMS_MIGRATION_STOP_AT phase."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def workers(host, vm_id):
    """The pids of the vmwp workers running vm_id on host."""
    return [pid for pid in processes_naming(str(host.dir))
            if pid_alive(pid) and vm_id in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            and Path(f"/proc/{pid}/comm").read_text().strip() == "vmwp"]


class MoveHosts:
    """Mixin: setUpClass makes the certificates; host() starts a vmmsd that moves VMs."""

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

    def host(self, name, peers, hvd_memory="1GB", stop_at=None, extra=()):
        port = free_port()
        conf = self.dir / f"{name}-{port}.conf"
        conf.write_text(f"[access]\nmigration-peers={peers}\n")
        d = self.dir
        host = VmmsdHost(hvd_memory=hvd_memory, env={"VMMS_MIGRATION_STOP_AT": stop_at} if stop_at else None,
                         extra=("--config", str(conf), "--tls-cert", str(d / f"{name}.pem"),
                                "--tls-key", str(d / f"{name}.key"), "--tls-ca", str(d / "ca.pem"),
                                "--migration-listen", f"127.0.0.1:{port}", "--migration-name", name, *extra))
        host.address = f"127.0.0.1:{port}"
        self.wait_pool(host)
        return host

    def wait_pool(self, host):
        wait_for(lambda: host.api.GetHost(host.pb.GetHostRequest(), timeout=5).memory_pool_bytes > 0, 30,
                 what="the hypervisor pool")

    def start_soak(self, host, name="web", boot_args=SOAK):
        pb = host.pb
        vm = host.create(name, startup=64 * MiB, workload="memsoak", boot_args=boot_args)
        host.api.StartVm(pb.VmRef(vm=name), timeout=30)
        wait_for(lambda: len(passes(host, vm.id)) >= 2, 60, what="two memsoak passes")
        return vm

    def move(self, src, dst, name="web", timeout=120, **kw):
        return src.api.MoveVm(src.pb.MoveVmRequest(vm=name, destination_host=dst.address, **kw), timeout=timeout)

    def vms(self, host):
        return {v.name: v for v in host.api.ListVms(host.pb.ListVmsRequest(), timeout=5).vms}

    def events(self, host, vm=""):
        return [e.message for e in host.api.ListEvents(host.pb.ListEventsRequest(vm=vm, limit=50),
                                                       timeout=5).events]

    def assert_nothing_of(self, host, vm):
        """No definition, no worker, no state file of the VM on host."""
        self.assertNotIn(vm.name, self.vms(host))
        # A live move's source worker ends its (paused) copy just after the commit.
        wait_for(lambda: not workers(host, vm.id), 30, interval=0.05, what="the worker to end")
        saved = host.state / "saved"
        self.assertEqual([p.name for p in saved.glob("*")] if saved.exists() else [], [])

    def assert_continues(self, host, vm, after=-1):
        """The guest runs on host and goes on from its own counter, uncorrupted."""
        pb = host.pb
        host.wait_state(vm.name, pb.VM_STATE_RUNNING, timeout=60)
        wait_for(lambda: any(p > after for p in passes(host, vm.id)), 60, what="the guest's next pass")
        self.assertNotIn("CORRUPTION", host.console(vm.id))
        self.assertEqual(len(workers(host, vm.id)), 1)

    def wait_stopped(self, host):
        wait_for(lambda: stopped(host.proc.pid), 60, interval=0.01, what="vmmsd to stop at its phase")
