"""A full state filesystem gets a clear answer and loses nothing: changes are refused
with RESOURCE_EXHAUSTED saying how much is free, turning a VM off and removing one
still work and are recorded when space comes back, a low-space event comes first,
and a paging disk that does not fit refuses the start. The state directory is a
small tmpfs of the test's own."""
import errno
import os
import subprocess
import tempfile
import unittest
from pathlib import Path

import grpc

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

SIZE_MB = 48


class SmallFilesystem:
    def __init__(self, size_mb):
        self.dir = Path(tempfile.mkdtemp(prefix="vmms-small-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0750", "tmpfs", str(self.dir)],
                       check=True)

    def fill(self):
        """Writes a filler file until the filesystem refuses more."""
        with open(self.dir / "filler", "wb") as f:
            block = b"\xa5" * (1 << 20)
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise

    def free(self):
        (self.dir / "filler").unlink(missing_ok=True)

    def close(self):
        subprocess.run(["umount", "-l", str(self.dir)], check=False)
        os.rmdir(self.dir)


@unittest.skipUnless(os.geteuid() == 0, "mounting a tmpfs needs root")
class FullDiskTest(unittest.TestCase):
    def setUp(self):
        self.fs = SmallFilesystem(SIZE_MB)
        self.state = self.fs.dir / "state"
        self.host = VmmsdHost(extra=("--state-dir", str(self.state)))
        self.host.state = self.state

    def tearDown(self):
        self.host.close()
        self.fs.close()

    def test_a_full_store_refuses_changes_by_name_but_turn_off_and_remove_work(self):
        host, pb = self.host, self.host.pb
        host.create("running", paging_bytes=8 << 20)  # it must fit the small filesystem
        host.create("doomed")
        host.api.StartVm(pb.VmRef(vm="running"), timeout=30)
        # Below the low-space floor from the start (the filesystem is smaller than it).
        wait_for(lambda: any(e.kind == "low-space" for e in
                             host.api.ListEvents(pb.ListEventsRequest(limit=50), timeout=5).events) or None,
                 10, what="a low-space event")
        self.fs.fill()
        # SQLite may still have room in its WAL for a write or two: the refusal comes soon.
        created = []
        for i in range(200):
            try:
                host.create(f"new{i}")
                created.append(f"new{i}")
            except grpc.RpcError as e:
                refusal = e
                break
        else:
            self.fail("a full filesystem never refused a new VM")
        self.assertEqual(refusal.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("state filesystem is full", refusal.details())
        self.assertIn("free in", refusal.details())
        with self.assertRaises(grpc.RpcError) as e:
            host.api.UpdateMemory(pb.UpdateMemoryRequest(vm="doomed", memory=pb.MemorySettings(buffer=30),
                                                         update_mask=["buffer"]), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Turning off and removing still work.
        vm = host.api.StopVm(pb.StopVmRequest(vm="running", turn_off=True), timeout=30)
        self.assertEqual(vm.state, pb.VM_STATE_OFF)
        host.api.RemoveVm(pb.VmRef(vm="doomed"), timeout=10)
        self.assertEqual(sorted(v.name for v in host.api.ListVms(pb.ListVmsRequest(), timeout=5).vms),
                         sorted(["running", *created]))
        # Space comes back: both changes reach the store (a restart reads them back).
        self.fs.free()
        wait_for(lambda: any("recorded late" in e.message for e in
                             host.api.ListEvents(pb.ListEventsRequest(limit=50), timeout=5).events) or None,
                 15, what="the late writes")
        host.kill9()
        host.start()
        vms = {v.name: v for v in host.api.ListVms(pb.ListVmsRequest(), timeout=5).vms}
        self.assertEqual(set(vms), {"running", *created})
        self.assertEqual(vms["running"].state, pb.VM_STATE_OFF)

    def test_a_paging_disk_that_does_not_fit_refuses_the_start(self):
        host, pb = self.host, self.host.pb
        host.create("pager", paging_bytes=1 << 30)
        with self.assertRaises(grpc.RpcError) as e:
            host.api.StartVm(pb.VmRef(vm="pager"), timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("paging disk needs 1 GB", e.exception.details())
        self.assertEqual(host.api.GetVm(pb.VmRef(vm="pager"), timeout=5).state, pb.VM_STATE_OFF)
        # The default (4 x startup = 256 MB) does not fit a 48 MB filesystem either; 16 MB does.
        host.api.UpdateMemory(pb.UpdateMemoryRequest(vm="pager", memory=pb.MemorySettings(paging_bytes=16 << 20),
                                                     update_mask=["paging_bytes"]), timeout=10)
        self.assertEqual(host.api.StartVm(pb.VmRef(vm="pager"), timeout=30).state, pb.VM_STATE_RUNNING)


if __name__ == "__main__":
    unittest.main()
