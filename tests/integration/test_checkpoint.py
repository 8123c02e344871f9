"""Checkpoints through vmmsd with the real guest: a running VM's checkpoint keeps it
running; restoring it takes the guest back (memsoak's pass counter returns to near the
checkpoint's and its own page-pattern checks find no CORRUPTION) and leaves the
checkpoint usable; an Off VM's checkpoint restores its settings and leaves it Off;
names are refused by name; Remove-VMSnapshot and Remove-VM delete the files; a worker
killed mid-checkpoint never leaves a usable checkpoint."""
import os
import re
import signal
import unittest

import grpc

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

MiB = 1 << 20
PASS = r"^memsoak: pass (\d+)"
PRINTED_EVERY = 10  # memsoak prints every tenth pass


def passes(host, vm):
    return [int(n) for n in re.findall(PASS, host.console(vm.id), re.M)]


class CheckpointTest(unittest.TestCase):
    def files(self, host, vm):
        d = host.state / "checkpoints" / vm.id
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def soak(self, host, name="soak"):
        vm = host.create(name, startup=64 * MiB, workload="memsoak",
                         boot_args="memsoak_mb=24 memsoak_step_mb=24 memsoak_step_ms=50")
        host.api.StartVm(host.pb.VmRef(vm=name), timeout=30)
        wait_for(lambda: len(passes(host, vm)) >= 2, 60, what="two memsoak passes")
        return vm

    def test_restoring_a_running_checkpoint_takes_the_guest_back(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = self.soak(host)
            pid = host.api.GetVm(pb.VmRef(vm="soak"), timeout=5).worker_pid
            after = host.api.CheckpointVm(pb.CheckpointVmRequest(vm="soak", name="before-upgrade"), timeout=60)
            at_checkpoint = passes(host, vm)[-1]
            self.assertEqual(after.state, pb.VM_STATE_RUNNING)
            self.assertEqual(after.worker_pid, pid, "the checkpoint ended the VM's run")
            listed = host.api.ListCheckpoints(pb.VmRef(vm="soak"), timeout=5).checkpoints
            self.assertEqual([c.name for c in listed], ["before-upgrade"])
            self.assertEqual(listed[0].vm_state, pb.VM_STATE_RUNNING)
            self.assertGreater(listed[0].state_bytes, 0)
            self.assertGreater(listed[0].created_unix_ms, 0)
            self.assertEqual(self.files(host, vm), [f"{listed[0].id}.vmrs"])
            # It runs on: more passes, then the restore takes it back.
            wait_for(lambda: passes(host, vm)[-1] >= at_checkpoint + 3 * PRINTED_EVERY, 60, what="passes after the checkpoint")
            ahead = passes(host, vm)[-1]
            seen = len(passes(host, vm))
            restored = host.api.RestoreCheckpoint(pb.CheckpointRef(vm="soak", name="before-upgrade"), timeout=60)
            self.assertEqual(restored.state, pb.VM_STATE_RUNNING)
            self.assertNotEqual(restored.worker_pid, pid)
            # The old run printed only passes past `ahead` before it was turned off; the
            # restored guest goes on from the checkpoint's pass (a fresh boot would print 1).
            wait_for(lambda: [p for p in passes(host, vm)[seen:] if p <= at_checkpoint + PRINTED_EVERY], 60,
                     what=f"a pass near {at_checkpoint} after the restore")
            back = [p for p in passes(host, vm)[seen:] if p <= ahead]
            self.assertGreaterEqual(min(back), at_checkpoint, "the guest started over instead of going back")
            self.assertNotIn("CORRUPTION", host.console(vm.id))
            # The checkpoint stays usable; the copy the VM started from is spent.
            self.assertEqual(self.files(host, vm), [f"{listed[0].id}.vmrs"])
            self.assertFalse((host.state / "saved" / f"{vm.id}.vmrs").exists())
            host.api.RemoveCheckpoint(pb.CheckpointRef(vm="soak", name="before-upgrade"), timeout=10)
            self.assertEqual(len(host.api.ListCheckpoints(pb.VmRef(vm="soak"), timeout=5).checkpoints), 0)
            self.assertEqual(self.files(host, vm), [])

    def test_an_off_checkpoint_restores_the_settings_and_the_vm_stays_off(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("cold")
            host.api.UpdateVm(pb.UpdateVmRequest(vm="cold", notes="first", update_mask=["notes"]), timeout=10)
            host.api.CheckpointVm(pb.CheckpointVmRequest(vm="cold", name="clean"), timeout=10)
            listed = host.api.ListCheckpoints(pb.VmRef(vm="cold"), timeout=5).checkpoints
            self.assertEqual(listed[0].vm_state, pb.VM_STATE_OFF)
            self.assertEqual(listed[0].state_bytes, 0)
            host.api.UpdateVm(pb.UpdateVmRequest(vm="cold", notes="changed", update_mask=["notes"]), timeout=10)
            host.api.UpdateProcessor(pb.UpdateProcessorRequest(vm="cold", processor=pb.ProcessorSettings(count=2),
                                                       update_mask=["count"]), timeout=10)
            vm = host.api.RestoreCheckpoint(pb.CheckpointRef(vm="cold", name="clean"), timeout=10)
            self.assertEqual(vm.state, pb.VM_STATE_OFF)
            self.assertEqual(vm.notes, "first")
            self.assertEqual(vm.processor.count, 1)

    def test_names_are_refused_by_name(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("web")
            host.api.CheckpointVm(pb.CheckpointVmRequest(vm="web", name="a"), timeout=10)
            cases = [
                (lambda: host.api.CheckpointVm(pb.CheckpointVmRequest(vm="web", name="A"), timeout=10),
                 grpc.StatusCode.ALREADY_EXISTS, "VM 'web' already has a checkpoint named 'A'"),
                (lambda: host.api.CheckpointVm(pb.CheckpointVmRequest(vm="web", name=""), timeout=10),
                 grpc.StatusCode.INVALID_ARGUMENT, "cannot checkpoint VM 'web': checkpoint name must be"),
                (lambda: host.api.RestoreCheckpoint(pb.CheckpointRef(vm="web", name="b"), timeout=10),
                 grpc.StatusCode.NOT_FOUND, "VM 'web' has no checkpoint named 'b'"),
                (lambda: host.api.RemoveCheckpoint(pb.CheckpointRef(vm="web", name="b"), timeout=10),
                 grpc.StatusCode.NOT_FOUND, "VM 'web' has no checkpoint named 'b'"),
            ]
            for act, code, message in cases:
                with self.subTest(message=message):
                    with self.assertRaises(grpc.RpcError) as e:
                        act()
                    self.assertEqual(e.exception.code(), code)
                    self.assertIn(message, e.exception.details())

    def test_remove_vm_deletes_its_checkpoints_files(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = self.soak(host, "gone")
            host.api.CheckpointVm(pb.CheckpointVmRequest(vm="gone", name="one"), timeout=60)
            host.api.CheckpointVm(pb.CheckpointVmRequest(vm="gone", name="two"), timeout=60)
            self.assertEqual(len(self.files(host, vm)), 2)
            host.api.StopVm(pb.StopVmRequest(vm="gone", turn_off=True), timeout=30)
            host.api.RemoveVm(pb.VmRef(vm="gone"), timeout=10)
            self.assertFalse((host.state / "checkpoints" / vm.id).exists())

    def test_a_worker_killed_mid_checkpoint_leaves_no_usable_checkpoint(self):
        with VmmsdHost() as host:
            pb = host.pb
            vm = self.soak(host, "torn")
            pid = host.api.GetVm(pb.VmRef(vm="torn"), timeout=5).worker_pid
            future = host.api.CheckpointVm.future(pb.CheckpointVmRequest(vm="torn", name="torn"), timeout=60)
            wait_for(lambda: any(n.endswith(".tmp") for n in self.files(host, vm)) or future.done(), 30,
                     interval=0.001, what="the checkpoint's temporary file")
            os.kill(pid, signal.SIGKILL)
            try:
                future.result()
            except grpc.RpcError:
                pass
            host.wait_state("torn", pb.VM_STATE_OFF)
            listed = host.api.ListCheckpoints(pb.VmRef(vm="torn"), timeout=5).checkpoints
            whole = [n for n in self.files(host, vm) if n.endswith(".vmrs")]
            # Every listed checkpoint has its whole file; a torn write is never listed (it
            # leaves at most a temporary file, which Remove-VM deletes).
            self.assertLessEqual({f"{c.id}.vmrs" for c in listed}, set(whole))
            for c in listed:
                self.assertEqual((host.state / "checkpoints" / vm.id / f"{c.id}.vmrs").stat().st_size,
                                 c.state_bytes)


if __name__ == "__main__":
    unittest.main()
