"""Save-VM through vmmsd: a running VM's whole state goes to a file and the VM is
Saved; Start-VM continues from where it was (the guest's own counters go on, its own
checks find no corruption) and the spent file is deleted; Remove-VM deletes a Saved
VM's file; Save-VM of a VM that does not run is refused by name."""
import re
import unittest

import grpc

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20


def counts(text, pattern):
    return [int(n) for n in re.findall(pattern, text, re.M)]


class SaveVmTest(unittest.TestCase):
    def saved_file(self, host, vm):
        return host.state / "saved" / f"{vm.id}.vmrs"

    def test_a_memsoak_guest_continues_where_it_was_saved(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = host.create("soak", startup=64 * MiB, workload="memsoak",
                             boot_args="memsoak_mb=24 memsoak_step_mb=24 memsoak_step_ms=50")
            host.api.StartVm(pb.VmRef(vm="soak"), timeout=30)
            wait_for(lambda: len(counts(host.console(vm.id), r"^memsoak: pass (\d+)")) >= 2, 60,
                     what="two memsoak passes")
            saved = host.api.SaveVm(pb.VmRef(vm="soak"), timeout=60)
            self.assertEqual(saved.state, pb.VM_STATE_SAVED)
            self.assertEqual(saved.worker_pid, 0)
            self.assertTrue(self.saved_file(host, vm).exists())
            events = host.api.ListEvents(pb.ListEventsRequest(vm="soak", limit=1), timeout=5).events
            self.assertRegex(events[-1].message, r"^saved \(\d+(\.\d)? MB written\)$")
            before = counts(host.console(vm.id), r"^memsoak: pass (\d+)")
            started = host.api.StartVm(pb.VmRef(vm="soak"), timeout=60)
            self.assertEqual(started.state, pb.VM_STATE_RUNNING)
            self.assertFalse(self.saved_file(host, vm).exists(), "the spent saved state stays")
            wait_for(lambda: len(counts(host.console(vm.id), r"^memsoak: pass (\d+)")) >= len(before) + 2, 60,
                     what="passes after the restore")
            after = counts(host.console(vm.id), r"^memsoak: pass (\d+)")[len(before):]
            self.assertGreater(after[0], before[-1], "the guest started over instead of continuing")
            self.assertNotIn("CORRUPTION", host.console(vm.id))
            events = [e.message for e in host.api.ListEvents(pb.ListEventsRequest(vm="soak", limit=5),
                                                               timeout=5).events]
            self.assertIn("restored from its saved state", events)

    def test_a_two_vp_cpu_guest_keeps_its_paired_counters(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = host.create("cpu", workload="cpu", vps=2)
            host.api.StartVm(pb.VmRef(vm="cpu"), timeout=30)
            wait_for(lambda: len(counts(host.console(vm.id), r"^cpu: vp=0 batches=(\d+)")) >= 2, 60,
                     what="cpu batches")
            host.api.SaveVm(pb.VmRef(vm="cpu"), timeout=60)
            before = counts(host.console(vm.id), r"^cpu: vp=0 batches=(\d+)")
            host.api.StartVm(pb.VmRef(vm="cpu"), timeout=60)
            wait_for(lambda: len(counts(host.console(vm.id), r"^cpu: vp=0 batches=(\d+)")) > len(before), 60,
                     what="batches after the restore")
            after = counts(host.console(vm.id), r"^cpu: vp=0 batches=(\d+)")[len(before):]
            self.assertGreater(after[0], before[-1])
            self.assertNotIn("CORRUPTION", host.console(vm.id))

    def test_remove_deletes_a_saved_vms_state_and_off_vms_are_refused(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = host.create("gone")
            with self.assertRaises(grpc.RpcError) as e:
                host.api.SaveVm(pb.VmRef(vm="gone"), timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("cannot save VM 'gone': it is Off", e.exception.details())
            host.api.StartVm(pb.VmRef(vm="gone"), timeout=30)
            host.api.SaveVm(pb.VmRef(vm="gone"), timeout=60)
            self.assertTrue(self.saved_file(host, vm).exists())
            host.api.RemoveVm(pb.VmRef(vm="gone"), timeout=10)
            self.assertFalse(self.saved_file(host, vm).exists())


if __name__ == "__main__":
    unittest.main()
