"""vmctl driving the real vmmsd (which starts the real hvd and vmwp): the lifecycle, JSON output,
settings, the range checks, and the exit status and message of every kind of failure."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from vmmsd_host import VMMSD, VmmsdHost
from vmms_host import BUILD, wait_for

VMCTL = BUILD / "cli" / "vmctl"
MiB = 1 << 20
GiB = 1 << 30


class Vmctl:
    """vmctl pointed at one VmmsdHost through VMMS_SOCKET."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.socket = daemon.socket
        # vmmsd serves before it has attached to hvd; until then the host reports no processors.
        lps = int(daemon.args[daemon.args.index("--hvd-lps") + 1])
        wait_for(lambda: self.json("Get-VMHost")["logicalProcessors"] == lps, 20, interval=0.1,
                 what="vmmsd to attach to hvd")

    def vmctl(self, *args, timeout=120):
        env = dict(os.environ, VMMS_SOCKET=str(self.socket))
        return subprocess.run([str(VMCTL), *args], capture_output=True, text=True, timeout=timeout, env=env)

    def ok(self, *args, timeout=120):
        """Runs vmctl and insists it succeeds; returns its stdout."""
        out = self.vmctl(*args, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"vmctl {' '.join(args)} exited {out.returncode}: {out.stderr}\n"
                                 f"--- vmmsd ---\n{self.daemon.log()[-3000:]}")
        return out.stdout

    def json(self, *args):
        return json.loads(self.ok(*args, "-Json"))

    def vm(self, name):
        vms = self.json("Get-VM", "-Name", name)
        assert len(vms) == 1, vms
        return vms[0]

    def wait_state(self, name, state, timeout=30):
        return wait_for(lambda: self.vm(name)["state"] == state, timeout, interval=0.2,
                        what=f"{name} to be {state}")


def table(text):
    """A PowerShell-style table as (header columns, dashes line, rows split on runs of spaces)."""
    lines = text.rstrip("\n").split("\n")
    return lines[0].split(), lines[1], [line.split() for line in lines[2:]]


def require_vmmsd(test):
    # Skipped test by test (not class by class) so the TAP plan still counts every test.
    if not VMMSD.exists():
        test.skipTest(f"vmmsd is not built at {VMMSD}")


class HostTestCase(unittest.TestCase):
    daemon = None

    @classmethod
    def setUpClass(cls):
        if VMMSD.exists():
            cls.daemon = VmmsdHost(stop_timeout=5)
            try:
                cls.host = Vmctl(cls.daemon)
            except BaseException:
                cls.daemon.close()
                raise

    @classmethod
    def tearDownClass(cls):
        if cls.daemon:
            cls.daemon.close()

    def setUp(self):
        require_vmmsd(self)

    def new_vm(self, name, *extra):
        self.host.ok("New-VM", "-Name", name, "-MemoryStartupBytes", "64MB", *extra)
        self.addCleanup(self.host.vmctl, "Remove-VM", name, "-Force")

    def assert_fails(self, args, status, *fragments):
        out = self.host.vmctl(*args)
        self.assertEqual(out.returncode, status, f"vmctl {args}: stdout {out.stdout!r} stderr {out.stderr!r}")
        self.assertEqual(out.stdout, "", args)
        lines = out.stderr.rstrip("\n").split("\n")
        self.assertEqual(len(lines), 1, f"one line of error expected: {out.stderr!r}")
        for fragment in fragments:
            self.assertIn(fragment, out.stderr, args)
        return out.stderr


class LifecycleTest(HostTestCase):
    def test_new_get_start_running_stop_remove(self):
        out = self.host.ok("New-VM", "-Name", "life", "-MemoryStartupBytes", "64MB", "-ProcessorCount", "1",
                           "-Workload", "idle")
        header, dashes, rows = table(out)
        self.assertEqual(header, ["Name", "State", "CPUUsage(%)", "MemoryAssigned(M)", "MemoryDemand(M)",
                                  "Pressure", "Uptime", "Status"])
        self.assertEqual(rows[0][:2], ["life", "Off"])

        header, dashes, rows = table(self.host.ok("Get-VM"))
        self.assertEqual(header[:2], ["Name", "State"])
        self.assertTrue(set(dashes) <= {"-", " "}, dashes)
        self.assertIn(["life", "Off"], [row[:2] for row in rows])

        self.assertEqual(self.host.ok("Start-VM", "life"), "", "Start-VM prints nothing without -Passthru")
        self.host.wait_state("life", "VM_STATE_RUNNING")
        # Live figures arrive with the worker's reports, about once a second.
        wait_for(lambda: self.host.vm("life")["assignedMemoryBytes"] > 0, 10, interval=0.2,
                 what="life's assigned memory")
        rows = table(self.host.ok("Get-VM", "-Name", "life"))[2]
        self.assertEqual(rows[0][:2], ["life", "Running"])
        self.assertEqual(rows[0][-2:], ["Operating", "normally"])
        self.assertGreater(int(rows[0][3]), 0, "a running VM has memory assigned")

        self.host.ok("Stop-VM", "life", timeout=60)
        self.host.wait_state("life", "VM_STATE_OFF")
        rows = table(self.host.ok("Get-VM", "life"))[2]
        self.assertEqual(rows[0][:2], ["life", "Off"])

        self.assertEqual(self.host.ok("Remove-VM", "-Name", "life"), "")
        self.assert_fails(["Get-VM", "-Name", "life"], 1, "vmctl: Get-VM: ", "life")
        self.assertNotIn("life", self.host.ok("Get-VM"))

    def test_turn_off_suspend_and_resume(self):
        self.new_vm("pausable")
        self.host.ok("Start-VM", "pausable")
        self.host.wait_state("pausable", "VM_STATE_RUNNING")
        self.host.ok("Suspend-VM", "pausable")
        self.host.wait_state("pausable", "VM_STATE_PAUSED")
        self.assertEqual(table(self.host.ok("Get-VM", "pausable"))[2][0][1], "Paused")
        self.host.ok("Resume-VM", "pausable")
        self.host.wait_state("pausable", "VM_STATE_RUNNING")
        out = self.host.ok("Stop-VM", "pausable", "-TurnOff", "-Passthru")
        self.assertEqual(table(out)[2][0][0], "pausable")
        self.host.wait_state("pausable", "VM_STATE_OFF")

    def test_disallowed_transitions_exit_1_and_remove_force_turns_off_first(self):
        self.new_vm("busy")
        self.host.ok("Start-VM", "busy")
        self.host.wait_state("busy", "VM_STATE_RUNNING")
        self.assert_fails(["Start-VM", "busy"], 1, "vmctl: Start-VM: ")
        self.assert_fails(["Remove-VM", "busy"], 1, "vmctl: Remove-VM: ")
        self.assertEqual(self.host.vm("busy")["state"], "VM_STATE_RUNNING", "a refused operation changes nothing")
        self.host.ok("Remove-VM", "busy", "-Force")
        self.assert_fails(["Get-VM", "busy"], 1, "vmctl: Get-VM: ")

    def test_verbs_and_parameters_as_powershell_writes_them(self):
        self.host.ok("new-vm", "-name:PsStyle", "-memorystartup", "64mb", "-Proc", "2")
        self.addCleanup(self.host.vmctl, "Remove-VM", "PsStyle", "-Force")
        vm = self.host.json("GET-VM", "-N", "PsStyle")[0]
        self.assertEqual(vm["name"], "PsStyle")
        self.assertEqual(vm["processor"]["count"], 2)
        self.assertEqual(vm["memory"]["startupBytes"], 64 * MiB)
        names = [v["name"] for v in self.host.json("Get-VM", "Ps*")]
        self.assertEqual(names, ["PsStyle"])
        self.assertEqual(self.host.json("Get-VM", "NoSuch*"), [], "a pattern matching nothing is an empty list")


class JsonTest(HostTestCase):
    def test_every_verb_prints_json_with_proto_field_names(self):
        vm = json.loads(self.host.ok("New-VM", "-Name", "jay", "-MemoryStartupBytes", "64MB", "-Notes", "hi \"there\"",
                                     "-BootArgs", "a=1", "-Json"))
        self.addCleanup(self.host.vmctl, "Remove-VM", "jay", "-Force")
        for field in ("id", "name", "state", "processor", "memory", "workload", "bootArgs", "notes",
                      "createdUnixMs", "updatedUnixMs", "uptimeMs", "assignedMemoryBytes", "memoryDemandBytes",
                      "memoryPressure", "cpuUsagePct", "workerPid", "engine", "automaticStartAction"):
            self.assertIn(field, vm)
        self.assertEqual(vm["name"], "jay")
        self.assertEqual(vm["state"], "VM_STATE_OFF")
        self.assertEqual(vm["notes"], 'hi "there"')
        self.assertEqual(vm["bootArgs"], "a=1")
        self.assertEqual(vm["memory"]["startupBytes"], 64 * MiB)
        self.assertEqual(vm["processor"]["count"], 1)
        self.assertEqual(len(vm["id"]), 36)

        listed = self.host.json("Get-VM")
        self.assertIsInstance(listed, list)
        self.assertIn(vm["id"], [v["id"] for v in listed])
        self.assertEqual(self.host.json("Get-VM", vm["id"])[0]["name"], "jay", "a VM is found by UUID too")

        host = self.host.json("Get-VMHost")
        self.assertEqual(host["logicalProcessors"], 2)
        self.assertEqual(host["memoryPoolBytes"], GiB)
        self.assertGreaterEqual(host["vmCount"], 1)
        self.assertIn("bundled", host["engines"])
        self.assertEqual(host["hypervisorStatus"], "running")

        processors = self.host.json("Get-VMProcessor", "jay")
        self.assertEqual(processors[0]["processor"]["relativeWeight"], 100)
        memory = self.host.json("Get-VMMemory", "jay")
        self.assertEqual(memory[0]["memory"]["startupBytes"], 64 * MiB)

        events = self.host.json("Get-VMEvent", "-VMName", "jay")
        self.assertIsInstance(events, list)
        self.assertIn("created", [e["kind"] for e in events])
        self.assertTrue(all(e["vmName"] == "jay" for e in events), events)
        newest = self.host.json("Get-VMEvent", "-Newest", "1")
        self.assertEqual(len(newest), 1)

        counters = self.host.json("Get-Counter")
        self.assertIn("samples", counters)
        self.assertIn("timestampUnixMs", counters)

        removed = json.loads(self.host.ok("Remove-VM", "jay", "-Json"))
        self.assertEqual(removed, {"id": vm["id"]})

    def test_tables_for_host_counters_and_events(self):
        self.new_vm("tab")
        header, dashes, rows = table(self.host.ok("Get-VMHost"))
        self.assertEqual(header[:3], ["Name", "LogicalProcessorCount", "MemoryCapacity(M)"])
        self.assertEqual(header[-2:], ["Engines", "HypervisorStatus"])
        self.assertIn("bundled", rows[0][-2].split(","))
        self.assertEqual(rows[0][-1], "running")
        out = self.host.ok("Get-Counter")
        if out:
            header, dashes, rows = table(out)
            self.assertEqual(header, ["Path", "Value", "Unit"])
            self.assertTrue(all(row[0].startswith("\\") for row in rows), rows)
        header, dashes, rows = table(self.host.ok("Get-VMEvent", "tab"))
        self.assertEqual(header, ["Id", "Time", "VMName", "Kind", "State", "Message"])
        self.assertIn("created", [row[4] for row in rows])  # Id, date, time, VMName, Kind
        header = table(self.host.ok("Get-VMMemory", "tab"))[0]
        self.assertEqual(header, ["VMName", "DynamicMemoryEnabled", "Minimum(M)", "Startup(M)", "Maximum(M)",
                                  "Buffer", "Priority", "GoalSeeking"])

    def test_get_counter_max_samples_and_continuous_sample_apart(self):
        path = "\\Hyper-V Hypervisor(*)\\Logical Processors"
        wait_for(lambda: self.host.vmctl("Get-Counter", path).returncode == 0, 20, interval=0.2,
                 what="vmmsd's first counter sample")
        t0 = time.monotonic()
        lines = self.host.ok("Get-Counter", path, "-MaxSamples", "3", "-SampleInterval", "1", "-Json").splitlines()
        self.assertGreaterEqual(time.monotonic() - t0, 1.9, "three samples are two intervals apart")
        samples = [json.loads(line) for line in lines]
        self.assertEqual(len(samples), 3, lines)
        times = [s["timestampUnixMs"] for s in samples]
        self.assertTrue(all(b - a >= 900 for a, b in zip(times, times[1:])), times)
        self.assertTrue(all(s["samples"][0]["unit"] == "count" for s in samples), samples)
        header = table(self.host.ok("Get-Counter", path, "-MaxSamples", "2", "-SampleInterval", "1"))[0]
        self.assertEqual(header, ["Path", "Value", "Unit"])
        self.assert_fails(["Get-Counter", "-Continuous", "-MaxSamples", "2"], 2,
                          "vmctl: Get-Counter: give -Continuous or -MaxSamples, not both")

        env = dict(os.environ, VMMS_SOCKET=str(self.host.socket))
        watcher = subprocess.Popen([str(VMCTL), "Get-Counter", path, "-Continuous", "-SampleInterval", "1", "-Json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            seen = [json.loads(watcher.stdout.readline()) for _ in range(3)]
            self.assertEqual(len(seen), 3)
            self.assertIsNone(watcher.poll(), "-Continuous keeps sampling")
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=10)
            watcher.stdout.close()
            watcher.stderr.close()

    def test_get_vmevent_wait_streams_new_events(self):
        env = dict(os.environ, VMMS_SOCKET=str(self.host.socket))
        watcher = subprocess.Popen([str(VMCTL), "Get-VMEvent", "-Newest", "1", "-Wait", "-Json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            time.sleep(0.5)
            self.new_vm("streamed")
            deadline = time.monotonic() + 20
            seen = []
            while time.monotonic() < deadline:
                line = watcher.stdout.readline()
                if not line:
                    break
                event = json.loads(line)
                seen.append(event)
                if event["vmName"] == "streamed" and event["kind"] == "created":
                    break
            self.assertIn(("streamed", "created"), [(e["vmName"], e["kind"]) for e in seen], seen)
            self.assertIsNone(watcher.poll(), "-Wait keeps running")
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=10)
            watcher.stdout.close()
            watcher.stderr.close()


class SettingsTest(HostTestCase):
    def test_set_vmprocessor_changes_only_the_given_fields(self):
        self.new_vm("cpuset")
        out = self.host.ok("Set-VMProcessor", "cpuset", "-Reserve", "10", "-Passthru")
        header, dashes, rows = table(out)
        self.assertEqual(header, ["VMName", "Count", "Reserve", "Maximum", "RelativeWeight",
                                  "CompatibilityForMigrationEnabled"])
        self.assertEqual(rows[0], ["cpuset", "1", "10", "100", "100", "False"])
        self.host.ok("Set-VMProcessor", "-VMName", "cpuset", "-RelativeWeight", "200", "-Maximum", "75")
        processor = self.host.vm("cpuset")["processor"]
        self.assertEqual(processor, {"count": 1, "reserve": 10, "maximum": 75, "relativeWeight": 200,
                                     "compatibilityForMigrationEnabled": False})
        self.host.ok("Set-VMProcessor", "cpuset", "-Count", "2")
        self.assertEqual(self.host.vm("cpuset")["processor"]["count"], 2)
        self.host.ok("Set-VMProcessor", "cpuset", "-CompatibilityForMigrationEnabled", "$true")
        processor = self.host.vm("cpuset")["processor"]
        self.assertEqual(processor, {"count": 2, "reserve": 10, "maximum": 75, "relativeWeight": 200,
                                     "compatibilityForMigrationEnabled": True})

    def test_set_vmprocessor_reaches_a_running_vm(self):
        self.new_vm("cpulive")
        self.host.ok("Start-VM", "cpulive")
        self.host.wait_state("cpulive", "VM_STATE_RUNNING")
        self.host.ok("Set-VMProcessor", "cpulive", "-Maximum", "50")
        self.assertEqual(self.host.vm("cpulive")["processor"]["maximum"], 50)

    def test_set_vmmemory_changes_only_the_given_fields(self):
        self.new_vm("memset")
        before = self.host.vm("memset")["memory"]
        self.host.ok("Set-VMMemory", "memset", "-DynamicMemoryEnabled", "$true", "-MinimumBytes", "32MB",
                     "-MaximumBytes", "256MB", "-Buffer", "25", "-Priority", "80")
        memory = self.host.vm("memset")["memory"]
        self.assertEqual(memory, {"dynamicMemoryEnabled": True, "startupBytes": before["startupBytes"],
                                  "minimumBytes": 32 * MiB, "maximumBytes": 256 * MiB, "buffer": 25,
                                  "priority": 80, "pagingBytes": before["pagingBytes"],
                                  "goalSeeking": False})
        self.host.ok("Set-VMMemory", "memset", "-GoalSeeking", "$true")
        self.assertEqual(self.host.vm("memset")["memory"], dict(memory, goalSeeking=True))
        out = self.host.ok("Set-VMMemory", "memset", "-Dyn:false", "-Passthru")
        self.assertEqual(table(out)[2][0], ["memset", "False", "32", "64", "256", "25", "80", "True"])

    def test_set_vm_notes_and_automatic_start_action_round_trip(self):
        self.new_vm("setvm")
        vm = self.host.vm("setvm")
        self.assertEqual((vm["engine"], vm["automaticStartAction"]),
                         ("bundled", "AUTOMATIC_START_ACTION_START_IF_RUNNING"))
        self.assertEqual(self.host.ok("Set-VM", "setvm", "-Notes", "front end", "-AutomaticStartAction", "Start"),
                         "", "Set-VM prints nothing without -Passthru")
        vm = self.host.vm("setvm")
        self.assertEqual((vm["notes"], vm["automaticStartAction"]), ("front end", "AUTOMATIC_START_ACTION_START"))
        # Only what is given changes; the words are case-insensitive.
        vm = json.loads(self.host.ok("Set-VM", "setvm", "-AutomaticStartAction", "nothing", "-Json"))
        self.assertEqual((vm["notes"], vm["automaticStartAction"]), ("front end", "AUTOMATIC_START_ACTION_NOTHING"))
        self.host.ok("Set-VM", "setvm", "-Notes", "")
        self.assertEqual(self.host.vm("setvm")["notes"], "", "-Notes '' clears the notes")
        rows = table(self.host.ok("Set-VM", "setvm", "-Workload", "cpu", "-BootArgs", "a=1", "-Passthru"))[2]
        self.assertEqual(rows[0][:2], ["setvm", "Off"])
        vm = self.host.vm("setvm")
        self.assertEqual((vm["workload"], vm["bootArgs"], vm["automaticStartAction"]),
                         ("cpu", "a=1", "AUTOMATIC_START_ACTION_NOTHING"))

    def test_new_vm_takes_automatic_start_action_and_engine(self):
        self.new_vm("autostart", "-AutomaticStartAction", "Start", "-Engine", "bundled")
        vm = self.host.vm("autostart")
        self.assertEqual((vm["engine"], vm["automaticStartAction"]), ("bundled", "AUTOMATIC_START_ACTION_START"))

    def test_rename_vm_keeps_the_vm_and_refuses_a_taken_name(self):
        self.new_vm("oldname")
        vm_id = self.host.vm("oldname")["id"]
        self.addCleanup(self.host.vmctl, "Remove-VM", "newname", "-Force")
        self.assertEqual(self.host.ok("Rename-VM", "oldname", "-NewName", "newname"), "")
        self.assertEqual(self.host.vm("newname")["id"], vm_id)
        self.assert_fails(["Get-VM", "oldname"], 1, "vmctl: Get-VM: ", "oldname")
        self.new_vm("taken")
        self.assert_fails(["Rename-VM", "newname", "-NewName", "taken"], 1, "vmctl: Rename-VM: ", "taken")
        self.assertEqual(self.host.vm("newname")["id"], vm_id, "a refused rename changes nothing")
        self.assertEqual(self.host.vm("taken")["name"], "taken")

    def test_daemon_refuses_settings_that_conflict_with_stored_ones(self):
        # The CLI cannot know the stored StartupBytes (64MB): vmmsd refuses, naming the field.
        self.new_vm("memconflict")
        before = self.host.vm("memconflict")
        err = self.assert_fails(["Set-VMMemory", "memconflict", "-MinimumBytes", "128MB"], 1,
                                "vmctl: Set-VMMemory: ")
        self.assertRegex(err, "(?i)minimum")
        self.assertEqual(self.host.vm("memconflict")["memory"], before["memory"])

    def test_each_out_of_range_setting_exits_2_naming_the_parameter_and_changes_nothing(self):
        self.new_vm("ranges")
        before = self.host.vm("ranges")
        cases = [
            (["Set-VMProcessor", "ranges", "-Reserve", "101"], "-Reserve must be between 0 and 100 (got 101)"),
            (["Set-VMProcessor", "ranges", "-Maximum", "101"], "-Maximum must be between 1 and 100 (got 101)"),
            (["Set-VMProcessor", "ranges", "-Maximum", "0"], "-Maximum must be between 1 and 100 (got 0)"),
            (["Set-VMProcessor", "ranges", "-RelativeWeight", "0"],
             "-RelativeWeight must be between 1 and 10000 (got 0)"),
            (["Set-VMProcessor", "ranges", "-RelativeWeight", "10001"],
             "-RelativeWeight must be between 1 and 10000 (got 10001)"),
            (["Set-VMProcessor", "ranges", "-Count", "33"], "-Count must be between 1 and 32 (got 33)"),
            (["Set-VMMemory", "ranges", "-Buffer", "4"], "-Buffer must be between 5 and 2000 (got 4)"),
            (["Set-VMMemory", "ranges", "-Buffer", "2001"], "-Buffer must be between 5 and 2000 (got 2001)"),
            (["Set-VMMemory", "ranges", "-Priority", "101"], "-Priority must be between 0 and 100 (got 101)"),
            (["Set-VMMemory", "ranges", "-MinimumBytes", "16MB"],
             "-MinimumBytes must be between 32MB and 1TB (got 16MB)"),
            (["Set-VM", "ranges", "-AutomaticStartAction", "Sometimes"],
             "-AutomaticStartAction must be one of Nothing, StartIfRunning, Start (got 'Sometimes')"),
            (["Set-VM", "ranges", "-Notes", "n" * 4097], "-Notes must be at most 4096 bytes long (got 4097)"),
            (["Rename-VM", "ranges", "-NewName", "x" * 101], "-NewName must be at most 100 bytes long (got 101)"),
            (["New-VM", "ranges2", "-MemoryStartupBytes", "64MB", "-AutomaticStartAction", "Always"],
             "-AutomaticStartAction must be one of Nothing, StartIfRunning, Start (got 'Always')"),
            (["Set-VMMemory", "ranges", "-StartupBytes", "1GB", "-MaximumBytes", "512MB"],
             "-StartupBytes (1GB) must not be more than -MaximumBytes (512MB)"),
            (["New-VM", "ranges2", "-MemoryStartupBytes", "64MB", "-ProcessorCount", "0"],
             "-ProcessorCount must be between 1 and 32 (got 0)"),
            (["New-VM", "ranges2", "-MemoryStartupBytes", "64MB", "-ProcessorCount", "33"],
             "-ProcessorCount must be between 1 and 32 (got 33)"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assert_fails(args, 2, f"vmctl: {args[0]}: {message}")
        self.assertEqual(self.host.vm("ranges"), before)
        self.assertNotIn("ranges2", [v["name"] for v in self.host.json("Get-VM")])


class ErrorTest(HostTestCase):
    def test_unknown_vm_exits_1_with_the_daemons_message(self):
        for args in (["Get-VM", "-Name", "ghost"], ["Start-VM", "ghost"], ["Stop-VM", "ghost", "-TurnOff"],
                     ["Suspend-VM", "ghost"], ["Resume-VM", "ghost"], ["Remove-VM", "ghost"],
                     ["Set-VMProcessor", "ghost", "-Reserve", "5"], ["Set-VMMemory", "ghost", "-Priority", "5"],
                     ["Set-VM", "ghost", "-Notes", "n"], ["Rename-VM", "ghost", "-NewName", "ghost2"],
                     ["Get-VMEvent", "-VMName", "ghost"]):
            with self.subTest(args=args):
                self.assert_fails(args, 1, f"vmctl: {args[0]}: ", "ghost")

    def test_counter_path_matching_nothing_exits_1_naming_it(self):
        self.assert_fails(["Get-Counter", "\\No Such Set(*)\\Anything"], 1,
                          "vmctl: Get-Counter: no counter matches '\\No Such Set(*)\\Anything'")

    def test_duplicate_name_exits_1(self):
        self.new_vm("twin")
        self.assert_fails(["New-VM", "twin", "-MemoryStartupBytes", "64MB"], 1, "vmctl: New-VM: ", "twin")

    def test_names_the_daemon_refuses_exit_1(self):
        self.assert_fails(["New-VM", "a/b", "-MemoryStartupBytes", "64MB"], 1, "vmctl: New-VM: ")
        # A name longer than vmmsd takes is refused before it is sent, with the daemon's limit.
        self.assert_fails(["New-VM", "x" * 300, "-MemoryStartupBytes", "64MB"], 2,
                          "vmctl: New-VM: -Name must be at most 100 bytes long (got 300)")

    def test_bad_usage_exits_2_with_one_line(self):
        cases = [
            (["Frob-VM"], "vmctl: unknown verb 'Frob-VM'"),
            (["Get-VM", "-Colour", "red"], "vmctl: Get-VM: unknown parameter -Colour"),
            (["New-VM", "-Name", "x"], "vmctl: New-VM: missing required parameter -MemoryStartupBytes"),
            (["Set-VMMemory", "x", "-M", "1GB"], "parameter -M is ambiguous"),
            (["New-VM", "x", "-MemoryStartupBytes", "lots"], "-MemoryStartupBytes expects a size"),
            (["Set-VMProcessor", "x"], "give at least one of -Count, -Reserve"),
            (["Set-VM", "x"], "vmctl: Set-VM: give at least one of -Notes, -AutomaticStartAction"),
            (["Rename-VM", "x"], "vmctl: Rename-VM: missing required parameter -NewName"),
            ([], "vmctl: no verb given"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                self.assert_fails(args, 2, message)

    def test_unreachable_daemon_exits_3_saying_where(self):
        out = subprocess.run([str(VMCTL), "-Server", "unix:/nonexistent/vmms.sock", "Get-VM"], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 3)
        self.assertIn("unix:/nonexistent/vmms.sock", out.stderr)
        out = subprocess.run([str(VMCTL), "-Server", "127.0.0.1:1", "Get-VMHost"], capture_output=True, text=True,
                             timeout=30)
        self.assertEqual(out.returncode, 3)
        self.assertIn("127.0.0.1:1", out.stderr)

    def test_help_needs_no_daemon(self):
        out = subprocess.run([str(VMCTL), "-?"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0)
        self.assertIn("Set-VMMemory", out.stdout)
        out = subprocess.run([str(VMCTL), "Get-Help", "New-VM"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0)
        self.assertIn("-MemoryStartupBytes <size 32MB-1TB>", out.stdout)
        out = subprocess.run([str(VMCTL), "Get-Help", "Set-VM"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0)
        self.assertIn("[-AutomaticStartAction <Nothing|StartIfRunning|Start>]", out.stdout)


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make a certificate")
class TlsTest(unittest.TestCase):
    def test_host_port_with_certificate_file_talks_tls(self):
        require_vmmsd(self)
        with tempfile.TemporaryDirectory(prefix="vmctl-tls-") as tmp:
            d = Path(tmp)
            ca, cert, key = d / "ca.pem", d / "cert.pem", d / "key.pem"

            def openssl(*args):
                subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=60)

            # A CA, vmmsd's certificate and vmctl's client certificate (vmmsd requires one).
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                    "-days", "1", "-subj", "/CN=vmctl test CA")
            for name, subject, ext in (("", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                                       ("client-", "/CN=vmctl-test", "extendedKeyUsage=clientAuth")):
                (d / f"{name}ext").write_text(ext + "\n")
                openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}key.pem", "-out",
                        f"{name}req.pem", "-subj", subject)
                openssl("x509", "-req", "-in", f"{name}req.pem", "-CA", "ca.pem", "-CAkey", "ca.key",
                        "-CAcreateserial", "-out", f"{name}cert.pem", "-days", "1", "-extfile", f"{name}ext")
            (d / "vmms.conf").write_text("[access]\nreaders=CN=vmctl-test\n")
            address = f"127.0.0.1:{free_tcp_port()}"
            with VmmsdHost(hvd_memory="256MB", hvd_lps=1, extra=("--grpc-tcp", address, "--tls-cert", str(cert),
                                                                  "--tls-key", str(key), "--tls-ca", str(ca),
                                                                  "--config", str(d / "vmms.conf"))):
                def vmctl(*args):
                    return subprocess.run([str(VMCTL), "-Server", address, *args], capture_output=True, text=True,
                                          timeout=60, env={**os.environ, "VMCTL_CONFIG": ""})

                def host_over_tls():
                    out = vmctl("-CertificateFile", str(ca), "-ClientCertificateFile", str(d / "client-cert.pem"),
                                "-ClientKeyFile", str(d / "client-key.pem"), "Get-VMHost", "-Json")
                    return json.loads(out.stdout) if out.returncode == 0 else None

                # Until vmmsd has attached to hvd it reports no processors; wait for that too.
                answer = wait_for(lambda: (lambda h: h if h and h["logicalProcessors"] == 1 else None)(
                    host_over_tls()), 20, interval=0.2, what="vmmsd over TLS")
                self.assertEqual(answer["memoryPoolBytes"], 256 * MiB)
                plain = vmctl("Get-VMHost")
                self.assertEqual(plain.returncode, 3, "without -CertificateFile vmctl speaks plaintext to a TLS port")
                self.assertIn(f"cannot connect to vmmsd at {address}", plain.stderr)
                anonymous = vmctl("-CertificateFile", str(ca), "Get-VMHost")
                self.assertEqual(anonymous.returncode, 3, "vmmsd lets no client without a certificate open a call")


if __name__ == "__main__":
    unittest.main()
