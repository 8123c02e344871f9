"""Why a worker ended reaches the event log from the worker itself (worker.proto's
Exiting), never from whatever its log's last line happens to be: a guest that faults at
boot is explained by the fault, a worker killed by a signal by the signal alone."""
import os
import signal
import struct
import unittest

import grpc

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

LOAD_GPA = 0x100000


def faulting_guest(path):
    """A minimal ELF64 guest whose first instruction is ud2."""
    code = b"\x0f\x0b" + b"\x90" * 14
    ehdr_size, phdr_size = 64, 56
    offset = ehdr_size + phdr_size
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, LOAD_GPA, ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 0,
                               0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, offset, LOAD_GPA, LOAD_GPA, len(code), len(code) + 4096, 0x1000)
    path.write_bytes(ehdr + phdr + code)


def last_event(host, vm):
    return host.api.ListEvents(host.pb.ListEventsRequest(vm=vm, limit=1), timeout=5).events[-1]


class WorkerExitTest(unittest.TestCase):
    def test_a_guest_that_faults_at_boot_is_explained_by_the_fault(self):
        with VmmsdHost() as host:
            guest = host.dir / "faulting.elf"
            faulting_guest(guest)
            host.kill9()
            host.args += ["--guest-path", str(guest)]
            host.start()
            host.create("faulty")
            try:
                host.api.StartVm(host.pb.VmRef(vm="faulty"), timeout=30)
            except grpc.RpcError as e:
                self.assertIn("invalid instruction at rip 0x100000", e.details())
            host.wait_state("faulty", host.pb.VM_STATE_OFF)
            event = last_event(host, "faulty")
            self.assertEqual(event.kind, "error")
            self.assertIn("invalid instruction at rip 0x100000", event.message)
            self.assertNotIn("stopped\n", event.message)

    def test_a_worker_killed_by_a_signal_is_explained_by_the_signal_alone(self):
        with VmmsdHost() as host:
            host.create("victim")
            pid = host.api.StartVm(host.pb.VmRef(vm="victim"), timeout=30).worker_pid
            os.kill(pid, signal.SIGKILL)
            host.wait_state("victim", host.pb.VM_STATE_OFF)
            self.assertEqual(last_event(host, "victim").message, "worker was killed by signal 9 (Killed)")

    def test_a_turned_off_vm_says_so(self):
        with VmmsdHost() as host:
            host.create("off")
            host.api.StartVm(host.pb.VmRef(vm="off"), timeout=30)
            host.api.StopVm(host.pb.StopVmRequest(vm="off", turn_off=True), timeout=30)
            self.assertEqual(last_event(host, "off").message, "stopped (turned off)")


if __name__ == "__main__":
    unittest.main()
