"""Move-VM of a libvirt VM: two vmmsd hosts, each with its own private libvirtd, on this
machine. libvirt's peer-to-peer live migration carries the guest (the source's libvirtd
to the destination's, QEMU's memory over loopback TCP); vmmsd moves the definition. One
real guest (Debian's kernel in TCG) goes A -> B, a cancelled move leaves it on B, a move
whose libvirt migration fails leaves it running on B, then it goes B -> A."""
import json
import re
import threading
import time
import unittest

from libvirt_env import GUEST_DIR, PrivateLibvirtd, ensure_guest, vmctl
from move_hosts import HOST_EXT, MoveHosts
from test_access import make_cert
from vmms_host import wait_for

BOOT_TIMEOUT = 90  # TCG on 2 shared cores: 6-9 s alone, much more under load
PEERS = "CN=hosta;CN=hostb;CN=hostc"


def ticks(host, vm_id):
    return [int(k) for k in re.findall(r"^vmms-guest: tick (\d+)", host.console(vm_id), re.M)]


class LibvirtMove(MoveHosts, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_guest()
        MoveHosts.setUpClass()
        make_cert(cls.dir, "ca", "hostc", "/CN=hostc", HOST_EXT)
        cls.libvirtd = {}
        try:
            for name in ("a", "b"):
                cls.libvirtd[name] = PrivateLibvirtd(prefix=f"vmms-libvirtd-{name}-")
            # Two libvirtd on one host name their domains' cgroups by domain id and name:
            # A's guest must not get the id B gives the same domain when it arrives (1).
            # A throwaway domain on A takes id 1.
            xml = cls.libvirtd["a"].dir / "spacer.xml"
            xml.write_text("<domain type='qemu'><name>spacer</name><memory unit='MiB'>16</memory>"
                           "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>")
            for args in (("create", str(xml), "--paused"), ("destroy", "spacer")):
                r = cls.libvirtd["a"].virsh(*args)
                if r.returncode != 0:
                    raise RuntimeError(f"virsh {args[0]}: {r.stderr}")
        except Exception:
            cls.tearDownClass()
            raise
        cls.hosts = {}

    @classmethod
    def tearDownClass(cls):
        for host in getattr(cls, "hosts", {}).values():
            host.close()
        for libvirtd in cls.libvirtd.values():
            libvirtd.stop()
        MoveHosts.tearDownClass()

    def libvirt_host(self, name, libvirtd, migration_uri=None):
        """A vmmsd on libvirtd; other hosts' libvirtd reach it at migration_uri (default: its
        socket, as qemu+unix:// -- libvirt refuses a plain qemu:/// destination as "the same
        host")."""
        if name not in self.hosts:
            uri = migration_uri or libvirtd.uri.replace("qemu://", "qemu+unix://", 1)
            self.hosts[name] = self.host(name, PEERS, extra=("--libvirt-uri", libvirtd.uri, "--libvirt-domain-type",
                                                             "qemu", "--libvirt-migration-uri", uri))
        return self.hosts[name]

    def setUp(self):
        self.a = self.libvirt_host("hosta", self.libvirtd["a"])
        self.b = self.libvirt_host("hostb", self.libvirtd["b"])

    def vmctl(self, host, *args, check=True):
        return vmctl(host, *args, check=check)

    def get_vm(self, host, name):
        r = self.vmctl(host, "Get-VM", name, "-Json", check=False)
        return json.loads(r.stdout)[0] if r.returncode == 0 else None

    def assert_runs_on(self, host, libvirtd, other, other_libvirtd, vm_id):
        """Running on host, its domain in libvirtd, nothing of it on other; ticks go on there."""
        vm = self.get_vm(host, "deb")
        self.assertEqual(vm["state"], "VM_STATE_RUNNING")
        self.assertIsNone(self.get_vm(other, "deb"))
        self.assertEqual([d for d in libvirtd.domains() if vm_id[:8] in d], [f"vmms-deb-{vm_id[:8]}"])
        self.assertEqual([d for d in other_libvirtd.domains() if vm_id[:8] in d], [])
        last = max(ticks(host, vm_id) or [0])
        wait_for(lambda: max(ticks(host, vm_id) or [0]) > last, 30, interval=0.2, what="the guest's next tick")

    def test_1_move_vm_carries_a_running_guest_to_the_other_libvirtd(self):
        self.vmctl(self.a, "New-VM", "-Name", "deb", "-Engine", "libvirt", "-MemoryStartupBytes", "256MB",
                   "-ProcessorCount", "1", "-KernelPath", str(GUEST_DIR / "vmlinuz"),
                   "-InitrdPath", str(GUEST_DIR / "initrd.img"), "-KernelArgs", "quiet vmms.tick_s=1")
        vm_id = self.get_vm(self.a, "deb")["id"]
        self.__class__.vm_id = vm_id
        started = time.monotonic()
        self.vmctl(self.a, "Start-VM", "deb")
        wait_for(lambda: len(ticks(self.a, vm_id)) >= 2, BOOT_TIMEOUT, interval=0.2, what="two ticks on A")
        print(f"# boot to the second tick: {time.monotonic() - started:.1f} s", flush=True)

        statuses = []
        done = threading.Event()

        def watch():  # Get-VM's Status while the move runs
            while not done.is_set():
                vm = self.get_vm(self.a, "deb")
                if vm:
                    statuses.append(vm.get("status", ""))
                time.sleep(0.1)
        watcher = threading.Thread(target=watch)
        watcher.start()
        before = max(ticks(self.a, vm_id))
        began = time.monotonic()
        try:
            r = self.vmctl(self.a, "Move-VM", "deb", "-DestinationHost", self.b.address)
        finally:
            done.set()
            watcher.join()
        print(f"# Move-VM A -> B: {time.monotonic() - began:.1f} s; {r.stdout.strip().splitlines()[-1]}",
              flush=True)
        self.assertTrue(any(re.fullmatch(r"Migrating \(\d+ %\)", s) for s in statuses), statuses)
        percents = [int(m[1]) for s in statuses if (m := re.fullmatch(r"Migrating \((\d+) %\)", s))]
        self.assertGreater(max(percents), 0, statuses)
        self.assert_runs_on(self.b, self.libvirtd["b"], self.a, self.libvirtd["a"], vm_id)
        # the guest's own counter goes on where it was: it is the same guest, not a new boot
        on_b = ticks(self.b, vm_id)
        self.assertGreater(on_b[0], before, on_b)
        self.assertEqual(on_b, list(range(on_b[0], on_b[0] + len(on_b))), "no tick lost or repeated on B")
        self.assertNotIn("vmms-guest: up", self.b.console(vm_id), "a new boot on B")
        events = self.events(self.b, "deb")
        self.assertIn("moved here from hosta", " ".join(events))
        print("# " + next(e for e in events if e.startswith("libvirt migrated it here")), flush=True)

    def test_2_stop_vmmigration_aborts_libvirts_job_and_the_guest_runs_on(self):
        vm_id = self.vm_id
        r = self.vmctl(self.b, "Move-VM", "deb", "-DestinationHost", self.a.address, "-AsJob")
        self.vmctl(self.b, "Stop-VMMigration", "deb")
        self.assert_runs_on(self.b, self.libvirtd["b"], self.a, self.libvirtd["a"], vm_id)
        events = " ".join(self.events(self.b, "deb"))
        self.assertIn("cancelled (Stop-VMMigration)", events, r.stdout)

    def test_3_a_failed_libvirt_migration_leaves_the_guest_running_on_the_source(self):
        # hostc's vmmsd accepts the VM but names a libvirtd nobody listens on: libvirt's
        # migration fails before anything moved.
        c = self.libvirt_host("hostc", self.libvirtd["a"],
                              f"qemu+unix:///system?socket={self.libvirtd['a'].dir}/no-such-socket")
        r = self.vmctl(self.b, "Move-VM", "deb", "-DestinationHost", c.address, check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("no-such-socket", r.stderr)
        # hostc removes what it prepared once the source's answer ends its side of the move
        # (after Move-VM returned on the source)
        wait_for(lambda: self.get_vm(c, "deb") is None, 60, interval=0.2, what="hostc to drop the VM")
        self.assert_runs_on(self.b, self.libvirtd["b"], self.a, self.libvirtd["a"], self.vm_id)

    def test_4_and_back_again(self):
        vm_id = self.vm_id
        self.vmctl(self.b, "Move-VM", "deb", "-DestinationHost", self.a.address)
        self.assert_runs_on(self.a, self.libvirtd["a"], self.b, self.libvirtd["b"], vm_id)
        self.vmctl(self.a, "Stop-VM", "deb", "-TurnOff")


if __name__ == "__main__":
    unittest.main()
