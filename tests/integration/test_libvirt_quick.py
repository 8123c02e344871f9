"""The libvirt engine's paths that need a real libvirtd but no guest boot, quick enough for
the default suite (the boots are in the libvirt suite): a private libvirtd with its QEMU
driver (tests/libvirt/private-libvirtd.sh), a vmmsd pointed at it, and VMs whose start
libvirt or QEMU refuses, or vmmsd refuses before asking libvirt. None of them leaves a
domain behind."""
import json
import os
import time
import unittest

from libvirt_env import PrivateLibvirtd, ensure_libvirtd, vmctl
from vmmsd_host import VmmsdHost
from vmms_host import BUILD, wait_for

GUEST = BUILD / "guest" / "vmms-guest"  # the bundled guest: an ELF QEMU cannot boot


class LibvirtQuick(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ensure_libvirtd()
        cls.libvirtd = PrivateLibvirtd()
        try:
            cls.host = VmmsdHost(stop_timeout=5, extra=("--libvirt-uri", cls.libvirtd.uri,
                                                        "--libvirt-domain-type", "qemu"))
        except Exception:
            cls.libvirtd.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.host.close()
        finally:
            cls.libvirtd.stop()

    def vmctl(self, *args, check=True):
        return vmctl(self.host, *args, check=check)

    def vm(self, name):
        return json.loads(self.vmctl("Get-VM", name, "-Json").stdout)[0]

    def last_event(self, name):
        return json.loads(self.vmctl("Get-VMEvent", "-VMName", name, "-Newest", "1", "-Json").stdout)[0]["message"]

    def libvirt_status(self):
        host = json.loads(self.vmctl("Get-VMHost", "-Json").stdout)
        return dict(zip(host["engines"], host["engineStatus"]))["libvirt"]

    def new_vm(self, name, *more):
        self.vmctl("New-VM", "-Name", name, "-Engine", "libvirt", "-MemoryStartupBytes", "128MB",
                   "-KernelPath", str(GUEST), *more)

    def assert_start_fails(self, name, says):
        r = self.vmctl("Start-VM", name, check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(says, r.stderr)
        self.assertEqual(self.vm(name)["state"], "VM_STATE_OFF")
        self.assertIn(says, self.last_event(name))
        self.assertEqual(self.libvirtd.domains(), [])

    def test_a_reserve_that_does_not_fit_is_refused_before_libvirt_is_asked(self):
        lps = os.cpu_count()
        self.new_vm("greedy", "-ProcessorCount", str(lps + 1))
        self.vmctl("Set-VMProcessor", "greedy", "-Reserve", "100")
        self.assert_start_fails("greedy", f"its Reserve of 100 % on {lps + 1} processors does not fit")
        self.vmctl("Remove-VM", "greedy", "-Force")

    def test_a_kernel_qemu_cannot_load_fails_start_vm_with_qemus_reason(self):
        self.new_vm("elf")
        self.assert_start_fails("elf", "libvirt could not create the domain")
        self.assertIn("PVH ELF Note", self.last_event("elf"))
        self.vmctl("Remove-VM", "elf", "-Force")

    def test_a_network_libvirtd_no_longer_has_fails_start_vm_naming_it(self):
        k = os.getpid() % 60
        xml = self.libvirtd.dir / "quick-net.xml"
        xml.write_text(f"<network><name>vmms-quick</name><forward mode='open'/>"
                       f"<bridge name='vmmsq{os.getpid() % 100000}' stp='off'/><dns enable='no'/>"
                       f"<ip address='198.51.100.{4 * k + 1}' netmask='255.255.255.252'/></network>")
        r = self.libvirtd.virsh("net-create", str(xml))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.new_vm("nic")
        self.vmctl("Add-VMNetworkAdapter", "nic", "-SwitchName", "vmms-quick")
        self.libvirtd.virsh("net-destroy", "vmms-quick")
        self.assert_start_fails("nic", "vmms-quick")
        self.vmctl("Remove-VM", "nic", "-Force")

    def test_z_libvirtd_going_away_is_reported_and_survived(self):
        self.assertTrue(self.libvirt_status().startswith("available"), self.libvirt_status())
        self.new_vm("later")
        self.libvirtd.stop_daemon()
        wait_for(lambda: "not reachable" in self.libvirt_status(), 30, interval=0.2,
                 what="Get-VMHost to say libvirtd is gone")
        self.assertIn(self.libvirtd.uri, self.libvirt_status())
        r = self.vmctl("Start-VM", "later", check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("libvirt", r.stderr)
        self.assertEqual(self.vm("later")["state"], "VM_STATE_OFF")
        began = time.monotonic()
        self.libvirtd.start_daemon()
        wait_for(lambda: self.libvirt_status().startswith("available"), 30, interval=0.2,
                 what="vmmsd to reconnect to libvirtd")
        print(f"# reconnected {time.monotonic() - began:.1f} s after libvirtd came back", flush=True)
        self.vmctl("Remove-VM", "later", "-Force")


if __name__ == "__main__":
    unittest.main()
