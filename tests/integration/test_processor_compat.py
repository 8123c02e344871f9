"""Processor compatibility between two vmmsd hosts on this machine: A's hvd runs the
default CPU model (qemu64), B's runs haswell. A VM that reads its host's CPUID is refused
by B before anything of it is sent (the VM keeps running on A in the same worker),
Compare-VM and the refusal list the differing fields with both values; the guest itself
prints the CPUID it reads (AMD's vendor on A, Intel's on B). With
CompatibilityForMigrationEnabled (set only while Off) the guest reads the normalized
baseline on either host, Compare-VM says compatible and the move succeeds."""
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import grpc

from test_access import make_ca, make_cert
from move_hosts import HOST_EXT, free_port
from vmms_host import BUILD, wait_for
from vmmsd_host import VmmsdHost

VMCTL = BUILD / "cli" / "vmctl"
MiB = 1 << 20
CPU_LINE = re.compile(r"^vmms-guest: cpu vendor=(\S+) max-leaf=(\S+) signature=(\S+) features=(\S+)$", re.M)
# The normalized baseline as the guest prints it (hypervisor/hv-cpuid.c).
BASELINE = ("VmmsBaseline", "1", "00000663", "80000000:0789a179")


def cpu_lines(host, vm_id):
    return CPU_LINE.findall(host.console(vm_id))


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class ProcessorCompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="vmms-compat-")
        d = cls.dir = Path(cls._tmp.name)
        make_ca(d, "ca")
        for name in ("hosta", "hostb"):
            make_cert(d, "ca", name, f"/CN={name}", HOST_EXT)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def host(self, name, peers, cpu_model=None):
        port = free_port()
        conf = self.dir / f"{name}-{port}.conf"
        conf.write_text(f"[access]\nmigration-peers={peers}\n")
        d = self.dir
        extra = ["--config", str(conf), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key"),
                 "--tls-ca", str(d / "ca.pem"), "--migration-listen", f"127.0.0.1:{port}", "--migration-name", name]
        if cpu_model:
            extra += ["--hvd-cpu-model", cpu_model]
        host = VmmsdHost(hvd_memory="512MB", extra=extra)
        host.address = f"127.0.0.1:{port}"
        wait_for(lambda: host.api.GetHost(host.pb.GetHostRequest(), timeout=5).memory_pool_bytes > 0, 30,
                 what=f"{name}'s hypervisor pool")
        return host

    def vmctl(self, host, *args):
        return subprocess.run([str(VMCTL), "-Server", f"unix:{host.socket}", *args], capture_output=True,
                              text=True, timeout=120)

    def boot(self, host, name):
        pb = host.pb
        host.api.StartVm(pb.VmRef(vm=name), timeout=30)
        vm = host.wait_state(name, pb.VM_STATE_RUNNING, timeout=30)
        wait_for(lambda: cpu_lines(host, vm.id), 30, what=f"{name}'s CPU line")
        return vm

    def set_compat(self, host, name, enabled):
        pb = host.pb
        return host.api.UpdateProcessor(pb.UpdateProcessorRequest(
            vm=name, processor=pb.ProcessorSettings(compatibility_for_migration_enabled=enabled),
            update_mask=["compatibility_for_migration_enabled"]), timeout=10)

    def test_differing_models_refuse_a_move_until_compatibility_is_enabled(self):
        with self.host("hosta", "CN=hostb") as a, self.host("hostb", "CN=hosta", cpu_model="haswell") as b:
            pb = a.pb
            a.create("web", startup=64 * MiB)
            vm = self.boot(a, "web")
            self.assertEqual(cpu_lines(a, vm.id)[-1][0], "AuthenticAMD", "qemu64 says it is AMD")

            report = a.api.CompareVm(pb.CompareVmRequest(vm="web", destination_host=b.address), timeout=30)
            self.assertFalse(report.compatible)
            self.assertFalse(report.source_vector.normalized)
            self.assertEqual(report.source_vector.cpu_model, "qemu64")
            fields = {d.field: (d.source, d.destination) for d in report.differences}
            self.assertEqual(fields["cpu_model"], ("qemu64", "haswell"))
            self.assertIn("cpuid_hash", fields)
            self.assertIn("cpuid 0x00000000.0 ebx", fields, "the vendor (AuthenticAMD/GenuineIntel) differs")
            self.assertNotIn("engine_version", fields, "both hosts run this build's Unicorn")
            self.assertIn("processor not compatible", report.reason)

            out = self.vmctl(a, "Compare-VM", "web", "-DestinationHost", b.address)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("not compatible", out.stdout)
            self.assertRegex(out.stdout, r"cpu_model\s+qemu64\s+haswell")

            pid = a.api.GetVm(pb.VmRef(vm="web"), timeout=5).worker_pid
            with self.assertRaises(grpc.RpcError) as e:
                a.api.MoveVm(pb.MoveVmRequest(vm="web", destination_host=b.address), timeout=60)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("cpu_model: qemu64 on the source, haswell on the destination", e.exception.details())
            # Refused before anything was sent: the VM never left its worker, B holds nothing.
            after = a.api.GetVm(pb.VmRef(vm="web"), timeout=5)
            self.assertEqual(after.state, pb.VM_STATE_RUNNING)
            self.assertEqual(after.worker_pid, pid, "the VM was saved (its worker ended) before the refusal")
            self.assertEqual(list(b.api.ListVms(pb.ListVmsRequest(), timeout=5).vms), [])
            self.assertEqual(list((b.state / "saved").glob("*")) if (b.state / "saved").exists() else [], [])

            out = self.vmctl(a, "Move-VM", "web", "-DestinationHost", b.address, "-CompatibilityReport")
            self.assertNotEqual(out.returncode, 0)
            self.assertRegex(out.stdout, r"cpu_model\s+qemu64\s+haswell")
            self.assertIn("not moved", out.stderr)
            self.assertEqual(a.api.GetVm(pb.VmRef(vm="web"), timeout=5).worker_pid, pid)

            # Only while Off, as in Hyper-V.
            with self.assertRaises(grpc.RpcError) as e:
                self.set_compat(a, "web", True)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("Running", e.exception.details())
            a.api.StopVm(pb.StopVmRequest(vm="web", turn_off=True), timeout=30)
            a.wait_state("web", pb.VM_STATE_OFF)
            self.assertTrue(self.set_compat(a, "web", True).processor.compatibility_for_migration_enabled)
            out = self.vmctl(a, "Get-VMProcessor", "web")
            self.assertRegex(out.stdout, r"CompatibilityForMigrationEnabled")
            self.assertRegex(out.stdout, r"web\s.*True")

            self.boot(a, "web")
            wait_for(lambda: cpu_lines(a, vm.id)[-1] == BASELINE, 30,
                     what=f"the guest on A to read the normalized CPUID (it printed {cpu_lines(a, vm.id)})")

            report = a.api.CompareVm(pb.CompareVmRequest(vm="web", destination_host=b.address), timeout=30)
            self.assertTrue(report.compatible, report.reason)
            self.assertEqual(list(report.differences), [])
            self.assertEqual(report.source_vector.cpu_model, "vmms-baseline-1")
            self.assertEqual(list(b.api.ListVms(pb.ListVmsRequest(), timeout=5).vms), [],
                             "a comparison creates nothing on the destination")

            out = self.vmctl(a, "Move-VM", "web", "-DestinationHost", b.address, "-CompatibilityReport")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("compatible", out.stdout)
            self.assertIn("Moved web", out.stdout)
            moved = b.wait_state("web", pb.VM_STATE_RUNNING)
            self.assertTrue(moved.processor.compatibility_for_migration_enabled)

            # On B (haswell), a boot of the moved VM still reads the baseline, while a VM
            # without the setting reads B's own model.
            b.api.StopVm(pb.StopVmRequest(vm="web", turn_off=True), timeout=30)
            b.wait_state("web", pb.VM_STATE_OFF)
            self.boot(b, "web")
            wait_for(lambda: cpu_lines(b, vm.id)[-1] == BASELINE, 30,
                     what=f"the guest on B to read the normalized CPUID (it printed {cpu_lines(b, vm.id)})")
            b.create("plain", startup=64 * MiB)
            plain = self.boot(b, "plain")
            self.assertEqual(cpu_lines(b, plain.id)[-1][0], "GenuineIntel", "haswell says it is Intel")


if __name__ == "__main__":
    unittest.main()
