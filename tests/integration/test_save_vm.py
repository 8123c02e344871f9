"""Save-VM through vmmsd: a running VM's whole state goes to a file and the VM is
Saved; Start-VM continues from where it was (the guest's own counters go on, its own
checks find no corruption) and the spent file is deleted; Remove-VM deletes a Saved
VM's file; Save-VM of a VM that does not run is refused by name; a damaged or foreign
saved file is refused at Start-VM naming what is wrong, and the VM stays Saved with the
file as it was."""
import re
import struct
import unittest
import zlib

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

    def test_a_damaged_saved_file_is_refused_and_the_vm_stays_saved(self):
        def other_geometry(good):
            """CONFIG (the first section) saying 2 VPs, its checksums right: a file of another VM."""
            config = struct.pack("<I", 2) + good[60:76]
            head = struct.pack("<IIQI", 1, 0, len(config), zlib.crc32(config))
            out = good[:32] + head + struct.pack("<I", zlib.crc32(head)) + config + good[76:]
            return out[:28] + struct.pack("<I", zlib.crc32(out[:28])) + out[32:]

        cases = [
            ("empty", lambda good: b"", "shorter than its header"),
            ("cut in half", lambda good: good[:len(good) // 2], "torn or cut"),
            ("a flipped byte", lambda good: good[:-40] + bytes([good[-40] ^ 1]) + good[-39:], "checksum"),
            ("another format", lambda good: b"VMMSLIVE" + good[8:], "not a saved VM (bad magic)"),
            ("another VM's", other_geometry, "the saved VM has 2 VPs"),
        ]
        with VmmsdHost() as host:
            pb = host.pb
            vm = host.create("idle")
            host.api.StartVm(pb.VmRef(vm="idle"), timeout=30)
            wait_for(lambda: "idle: up" in host.console(vm.id) or "vmbus: connected" in host.console(vm.id), 60,
                     what="the guest to boot")
            host.api.SaveVm(pb.VmRef(vm="idle"), timeout=60)
            path = self.saved_file(host, vm)
            good = path.read_bytes()
            self.assertEqual(good[:8], b"VMMSVMRS")
            for name, damage, says in cases:
                with self.subTest(name):
                    bad = damage(good)
                    path.write_bytes(bad)
                    with self.assertRaises(grpc.RpcError) as e:
                        host.api.StartVm(pb.VmRef(vm="idle"), timeout=60)
                    self.assertIn("failed to restore its saved state", e.exception.details())
                    self.assertIn(says, e.exception.details())
                    self.assertEqual(host.api.GetVm(pb.VmRef(vm="idle"), timeout=5).state, pb.VM_STATE_SAVED)
                    self.assertEqual(path.read_bytes(), bad, "a refused file was changed")
            path.write_bytes(good)
            started = host.api.StartVm(pb.VmRef(vm="idle"), timeout=60)
            self.assertEqual(started.state, pb.VM_STATE_RUNNING)
            self.assertFalse(path.exists(), "the spent saved state stays")


if __name__ == "__main__":
    unittest.main()
