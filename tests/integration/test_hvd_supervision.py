"""vmmsd never waits for its hypervisor: a stopped hvd leaves Get-VM, events and D-Bus
answering while starts fail with UNAVAILABLE naming hvd; a killed hvd ends its VMs
with the reason, is started again, and VMs whose AutomaticStartAction says so run
again. Real hvd, vmwp and guests; a private dbus-daemon for the D-Bus side."""
import os
import signal
import time
import unittest
from pathlib import Path

import grpc

from test_dbus import MANAGER, SESSION_CONFIG, DbusClient, PrivateBus
from vmms_host import wait_for
from vmmsd_host import VmmsdHost, pid_alive, processes_naming


def hvd_pid(host):
    pids = [pid for pid in processes_naming(f"--socket={host.runtime}/hvd.sock")
            if Path(f"/proc/{pid}/comm").read_text().strip() == "hvd"]
    if len(pids) != 1:
        raise AssertionError(f"expected one hvd for {host.runtime}, found {pids}")
    return pids[0]


def status(host):
    return host.api.GetHost(host.pb.GetHostRequest(), timeout=5).hypervisor_status


def events_of(host, vm):
    return host.api.ListEvents(host.pb.ListEventsRequest(vm=vm, limit=50), timeout=5).events


class StoppedHypervisorTest(unittest.TestCase):
    def setUp(self):
        self.bus = PrivateBus(SESSION_CONFIG)
        self.saved = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = self.bus.address
        self.host = VmmsdHost(extra=("--dbus", "session"))
        self.dbus = DbusClient(self.bus.address)
        wait_for(lambda: MANAGER in self.dbus.objects(), 10, what="vmmsd on the bus")
        self.hvd = None

    def tearDown(self):
        if self.hvd and pid_alive(self.hvd):
            os.kill(self.hvd, signal.SIGCONT)
        self.host.close()
        self.bus.close()
        if self.saved is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = self.saved

    def test_sigstop_of_hvd_keeps_the_core_answering_and_fails_starts_unavailable(self):
        host, pb = self.host, self.host.pb
        host.create("running")
        host.create("later")
        host.api.StartVm(pb.VmRef(vm="running"), timeout=30)
        wait_for(lambda: status(host) == "running", 10, what="hvd to be running")
        self.hvd = hvd_pid(host)
        os.kill(self.hvd, signal.SIGSTOP)
        # The core answers without asking hvd: each call's own deadline (1 s) is half
        # hvd's (2 s), so none of them waited for it.
        for _ in range(5):
            self.assertEqual(host.api.GetVm(pb.VmRef(vm="running"), timeout=1).state, pb.VM_STATE_RUNNING)
            host.api.ListEvents(pb.ListEventsRequest(limit=5), timeout=1)
        self.assertEqual(self.dbus.call("GetVm", "s", "running")[1]["name"], "running")
        wait_for(lambda: "did not answer" in status(host) or None, 15, what="hvd to be reported not answering")
        self.assertEqual(self.dbus.call("GetVm", "s", "later")[1]["state"], "Off")
        with self.assertRaises(grpc.RpcError) as e:
            host.api.StartVm(pb.VmRef(vm="later"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("hvd", e.exception.details())
        self.assertIn("did not answer", e.exception.details())
        self.assertEqual(host.api.GetVm(pb.VmRef(vm="later"), timeout=1).state, pb.VM_STATE_OFF)
        # SIGCONT: everything works again.
        os.kill(self.hvd, signal.SIGCONT)
        wait_for(lambda: status(host) == "running" or None, 15, what="hvd to answer again")
        self.assertEqual(host.api.StartVm(pb.VmRef(vm="later"), timeout=30).state, pb.VM_STATE_RUNNING)
        self.assertEqual(host.api.GetVm(pb.VmRef(vm="running"), timeout=5).state, pb.VM_STATE_RUNNING)


class KilledHypervisorTest(unittest.TestCase):
    def test_kill9_of_hvd_records_vms_off_and_restarts_those_that_should_run(self):
        with VmmsdHost() as host:
            pb = host.pb
            host.create("again")  # AutomaticStartAction defaults to StartIfRunning
            host.api.CreateVm(pb.CreateVmRequest(
                name="stays-off", memory=pb.MemorySettings(startup_bytes=64 << 20),
                automatic_start_action=pb.AUTOMATIC_START_ACTION_NOTHING), timeout=10)
            host.create("never-ran")
            first = {name: host.api.StartVm(pb.VmRef(vm=name), timeout=30).worker_pid
                     for name in ("again", "stays-off")}
            wait_for(lambda: status(host) == "running", 10, what="hvd to be running")
            old_hvd = hvd_pid(host)
            os.kill(old_hvd, signal.SIGKILL)
            host.wait_state("stays-off", pb.VM_STATE_OFF)
            self.assertIn("hypervisor exited", events_of(host, "stays-off")[-1].message)
            # hvd is started again and the StartIfRunning VM runs in a new worker.
            wait_for(lambda: status(host) == "running" or None, 20, what="hvd to be back")
            self.assertNotEqual(hvd_pid(host), old_hvd)
            vm = wait_for(lambda: (lambda v: v if v.state == pb.VM_STATE_RUNNING and v.worker_pid != first["again"]
                                   else None)(host.api.GetVm(pb.VmRef(vm="again"), timeout=5)),
                          30, what="'again' to run again")
            self.assertNotEqual(vm.worker_pid, first["again"])
            messages = [e.message for e in events_of(host, "again")]
            self.assertTrue(any("hypervisor exited" in m for m in messages), messages)
            self.assertIn("automatic start", messages)
            # Nothing else lost or changed.
            time.sleep(1.5)  # a tick: nothing else is started
            vms = {v.name: v for v in host.api.ListVms(pb.ListVmsRequest(), timeout=5).vms}
            self.assertEqual(set(vms), {"again", "stays-off", "never-ran"})
            self.assertEqual(vms["stays-off"].state, pb.VM_STATE_OFF)
            self.assertEqual(vms["never-ran"].state, pb.VM_STATE_OFF)
            self.assertEqual(vms["stays-off"].automatic_start_action, pb.AUTOMATIC_START_ACTION_NOTHING)
            self.assertEqual(host.api.StartVm(pb.VmRef(vm="stays-off"), timeout=30).state, pb.VM_STATE_RUNNING)


if __name__ == "__main__":
    unittest.main()
