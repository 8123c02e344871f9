"""vmmsd's D-Bus API on a private dbus-daemon, driven by clients nobody here wrote
(gdbus, busctl, dbus-send): the lifecycle, each API seeing the other's VMs at once,
PropertiesChanged when a VM starts, named errors for bad input, who may change things
(the bus policy file and the daemon's own check, with a client running as nobody), the
introspection XML against golden files, and the cluster's methods against a host joined
to private etcd members."""
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

from etcd_cluster import EtcdCluster, free_ports
from vmmsd_host import VMMSD, VmmsdHost
from vmms_host import SOURCE, wait_for

NAME = "org.vmms.Manager1"
MANAGER = "/org/vmms/Manager1"
GOLDEN = Path(__file__).resolve().parent / "golden"
MiB = 1 << 20
NOBODY = 65534

SESSION_CONFIG = """<busconfig>
  <type>session</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# The system bus's own rules (Debian's system.conf, less what needs a real system),
# with vmms's policy file included as share/dbus-1/system.d would include it.
SYSTEM_CONFIG = """<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


class PrivateBus:
    """A dbus-daemon of our own, reachable by any local user (the tests run clients as
    nobody)."""

    def __init__(self, config):
        self._tmp = tempfile.TemporaryDirectory(prefix="vmms-dbus-")
        self.dir = Path(self._tmp.name)
        os.chmod(self.dir, 0o755)
        conf = self.dir / "bus.conf"
        conf.write_text(config.format(dir=self.dir, policy=SOURCE / "api" / "org.vmms.Manager1.conf"))
        self.proc = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise AssertionError(f"dbus-daemon did not start: {self.proc.stderr.read()}")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self._tmp.cleanup()


def run(argv, user=None, check=False):
    """A client process; as `user` (a uid) when given, with no groups of root's."""
    kw = {}
    if user is not None:
        kw = dict(user=user, group=user, extra_groups=[], env={"PATH": os.environ["PATH"], "HOME": "/tmp"})
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {p.stderr}")
    return p


def unvariant(value):
    """busctl --json's {"type": ..., "data": ...} variants as plain values."""
    if isinstance(value, dict):
        if set(value) == {"type", "data"}:
            return unvariant(value["data"])
        return {k: unvariant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unvariant(v) for v in value]
    return value


def vm_path(vm_id):
    return "/org/vmms/vm/" + vm_id.replace("-", "_")


def dbus_error(p):
    """(error name, message) of a failed gdbus call or dbus-send."""
    m = re.search(r"GDBus\.Error:([\w.]+): (.*)", p.stderr) or re.search(r"^Error ([\w.]+): (.*)", p.stderr, re.M)
    if not m:
        raise AssertionError(f"no D-Bus error in: rc={p.returncode} out={p.stdout!r} err={p.stderr!r}")
    return m.group(1), m.group(2).strip()


class Monitor:
    """`gdbus monitor` on vmmsd's name, its lines collected as they come."""

    def __init__(self, address, path=None):
        argv = ["gdbus", "monitor", "--address", address, "--dest", NAME]
        if path:
            argv += ["--object-path", path]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        # Its match rule is in place once it has seen who owns the name.
        self.wait(lambda line: "is owned by" in line, what="gdbus monitor to subscribe")

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def seen(self, predicate):
        with self._lock:
            return [line for line in self.lines if predicate(line)]

    def wait(self, predicate, timeout=10, what="a signal"):
        return wait_for(lambda: self.seen(predicate) or None, timeout, interval=0.02, what=what)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=5)
        self.proc.stdout.close()


class DbusClient:
    """The calls the tests make, each through a real D-Bus client."""

    def __init__(self, address):
        self.address = address

    def busctl(self, *args, user=None, check=True):
        return run(["busctl", f"--address={self.address}", *args], user=user, check=check)

    def call(self, method, signature="", *args, path=MANAGER, interface="org.vmms.Manager1"):
        """busctl call, its --json answer as plain values."""
        argv = ["--json=short", "call", NAME, path, interface, method]
        if signature:
            argv += [signature, *map(str, args)]
        out = self.busctl(*argv).stdout
        return unvariant(json.loads(out)["data"]) if out.strip() else []

    def gdbus(self, method, *args, path=MANAGER, interface="org.vmms.Manager1", user=None):
        return run(["gdbus", "call", "--address", self.address, "--dest", NAME, "--object-path", path,
                    "--method", f"{interface}.{method}", *args], user=user)

    def prop(self, path, name):
        out = self.busctl("--json=short", "get-property", NAME, path, "org.vmms.VM1", name).stdout
        return unvariant(json.loads(out))

    def objects(self):
        return self.busctl("tree", "--list", NAME).stdout.split()

    def create(self, name, startup=64 * MiB, workload="idle"):
        """CreateVm(s name, a{sv} options) through busctl's own argument syntax."""
        path, vm = self.call("CreateVm", "sa{sv}", name, 2, "memory", "a{sv}", 1, "startup_bytes", "t", startup,
                             "workload", "s", workload)
        return path, vm


class SessionBusHost:
    """Mixin: one private session bus and one vmmsd on it (--dbus session, and `extra`)
    for the whole class."""

    @classmethod
    def start_host(cls, extra=()):
        cls.bus = PrivateBus(SESSION_CONFIG)
        cls.saved_env = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = cls.bus.address
        try:
            cls.host = VmmsdHost(extra=("--dbus", "session", *extra))
        except Exception:
            cls.bus.close()
            raise
        cls.dbus = DbusClient(cls.bus.address)
        wait_for(lambda: MANAGER in cls.dbus.objects(), 10, what="vmmsd on the bus")

    @classmethod
    def stop_host(cls):
        cls.host.close()
        cls.bus.close()
        if cls.saved_env is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = cls.saved_env


class SessionBusTest(SessionBusHost, unittest.TestCase):
    """One private bus and one vmmsd (--dbus session) for the whole class; each test
    uses VMs of its own."""

    @classmethod
    def setUpClass(cls):
        cls.start_host()

    @classmethod
    def tearDownClass(cls):
        cls.stop_host()

    def test_create_start_get_stop_remove_over_dbus(self):
        d = self.dbus
        path, vm = d.create("dbus-life")
        self.assertEqual(path, vm_path(vm["id"]))
        self.assertEqual((vm["name"], vm["state"]), ("dbus-life", "Off"))
        self.assertEqual(vm["memory"]["startup_bytes"], 64 * MiB)
        self.assertIn(path, d.objects())

        started = d.gdbus("StartVm", "dbus-life")
        self.assertEqual(started.returncode, 0, started.stderr)
        self.assertIn("'state': <'Running'>", started.stdout)
        self.assertEqual(d.prop(path, "State"), "Running")
        self.assertGreater(d.prop(path, "WorkerPID"), 0)
        got_path, got = d.call("GetVm", "s", vm["id"])
        self.assertEqual((got_path, got["name"], got["state"]), (path, "dbus-life", "Running"))

        # The VM object's own methods reach the same operations.
        stopped = d.call("Stop", "bb", "false", "false", path=path, interface="org.vmms.VM1")
        self.assertEqual(stopped[0]["state"], "Off")
        self.assertEqual(d.prop(path, "State"), "Off")

        self.assertEqual(d.call("RemoveVm", "s", "dbus-life"), [vm["id"]])
        self.assertNotIn(path, d.objects())
        self.assertEqual(dbus_error(d.gdbus("GetVm", "dbus-life"))[0], "org.vmms.Error.NotFound")

    def test_vm_created_over_grpc_appears_on_dbus_at_once(self):
        d, pb = self.dbus, self.host.pb
        monitor = Monitor(self.bus.address)
        try:
            vm = self.host.create("from-grpc")
            path = vm_path(vm.id)
            # No waiting: the object exists by the time gRPC has answered.
            self.assertEqual(d.prop(path, "Name"), "from-grpc")
            self.assertEqual(d.prop(path, "StartupMemory"), 64 * MiB)
            monitor.wait(lambda line: "InterfacesAdded" in line and path in line, what="InterfacesAdded")

            self.host.api.RemoveVm(pb.VmRef(vm="from-grpc"), timeout=5)
            self.assertNotIn(path, d.objects())
            monitor.wait(lambda line: "InterfacesRemoved" in line and path in line, what="InterfacesRemoved")
        finally:
            monitor.close()

    def test_vm_created_over_dbus_appears_in_grpc_list(self):
        pb = self.host.pb
        path, vm = self.dbus.create("from-dbus", workload="cpu")
        listed = self.host.api.ListVms(pb.ListVmsRequest(name_filter="from-dbus"), timeout=5).vms
        self.assertEqual([(v.id, v.workload) for v in listed], [(vm["id"], "cpu")])
        self.assertEqual(path, vm_path(listed[0].id))
        self.host.api.RemoveVm(pb.VmRef(vm="from-dbus"), timeout=5)

    def test_properties_changed_announces_running_state_and_figures_once_a_second(self):
        d, pb = self.dbus, self.host.pb
        path, vm = d.create("watched")
        monitor = Monitor(self.bus.address, path)
        try:
            self.host.api.StartVm(pb.VmRef(vm="watched"), timeout=30)
            monitor.wait(lambda line: "PropertiesChanged" in line and "'State': <'Running'>" in line,
                         what="PropertiesChanged State Running")
            self.assertTrue(monitor.seen(lambda line: "'State': <'Starting'>" in line), monitor.lines)
            time.sleep(3.0)
            figures = monitor.seen(lambda line: "'Uptime'" in line)
            self.assertGreaterEqual(len(figures), 2, "running figures are announced every second")
            self.assertLessEqual(len(figures), 4, f"figures at most once a second: {figures}")
            self.assertGreater(d.prop(path, "Uptime"), 0)
            # Status is Get-VM's (what carries "Migrating (NN %)" during a move).
            self.assertEqual(d.prop(path, "Status"), self.host.api.GetVm(pb.VmRef(vm="watched"), timeout=5).status)
        finally:
            monitor.close()
            self.host.api.StopVm(pb.StopVmRequest(vm="watched", turn_off=True), timeout=20)
            self.host.api.RemoveVm(pb.VmRef(vm="watched"), timeout=5)

    def test_event_signal_carries_every_recorded_event(self):
        monitor = Monitor(self.bus.address, MANAGER)
        try:
            self.dbus.create("evented")
            self.dbus.call("RemoveVm", "s", "evented")
            for kind in ("created", "removed"):
                monitor.wait(lambda line: "org.vmms.Manager1.Event" in line and "'evented'" in line
                             and f"'kind': <'{kind}'>" in line, what=f"the {kind} Event signal")
        finally:
            monitor.close()

    def test_bad_input_gets_named_errors_with_the_grpc_messages(self):
        import grpc
        d, pb = self.dbus, self.host.pb
        d.create("bad-input")
        cases = [
            # (gdbus call arguments, D-Bus error, message fragment, the same call over gRPC)
            (("GetVm", "no-such-vm"), "org.vmms.Error.NotFound", "no-such-vm",
             lambda: self.host.api.GetVm(pb.VmRef(vm="no-such-vm"), timeout=5)),
            (("UpdateProcessor", "bad-input", "{'reserve': <150>}"), "org.vmms.Error.InvalidArgument", "Reserve",
             lambda: self.host.api.UpdateProcessor(pb.UpdateProcessorRequest(
                 vm="bad-input", processor=pb.ProcessorSettings(reserve=150), update_mask=["reserve"]), timeout=5)),
            # Maximum is 1-100 as in Hyper-V: 0 is refused, not stored as a 0 % cap or "no cap".
            (("UpdateProcessor", "bad-input", "{'maximum': <0>}"), "org.vmms.Error.InvalidArgument",
             "Maximum 0 is out of range 1-100",
             lambda: self.host.api.UpdateProcessor(pb.UpdateProcessorRequest(
                 vm="bad-input", processor=pb.ProcessorSettings(maximum=0), update_mask=["maximum"]), timeout=5)),
            (("UpdateVm", "bad-input", "{'automatic_start_action': <'Sometimes'>}"),
             "org.vmms.Error.InvalidArgument", "Sometimes", None),
            (("UpdateMemory", "bad-input", "{'buffer': <1>}"), "org.vmms.Error.InvalidArgument", "Buffer",
             lambda: self.host.api.UpdateMemory(pb.UpdateMemoryRequest(
                 vm="bad-input", memory=pb.MemorySettings(buffer=1), update_mask=["buffer"]), timeout=5)),
            (("CreateVm", "bad-input", "{}"), "org.vmms.Error.AlreadyExists", "bad-input",
             lambda: self.host.api.CreateVm(pb.CreateVmRequest(name="bad-input"), timeout=5)),
            (("PauseVm", "bad-input"), "org.vmms.Error.NotAllowed", "bad-input",
             lambda: self.host.api.PauseVm(pb.VmRef(vm="bad-input"), timeout=5)),
            (("UpdateProcessor", "bad-input", "{'count': <-1>}"), "org.vmms.Error.InvalidArgument",
             "processor.count", None),
            (("UpdateMemory", "bad-input", "{'buffer': <'big'>}"), "org.vmms.Error.InvalidArgument",
             "memory.buffer", None),
            (("UpdateMemory", "bad-input", "{'startup_bytes': <uint64 18446744073709551615>}"),
             "org.vmms.Error.InvalidArgument", "StartupBytes", None),
            (("CreateVm", "x", "{'bogus': <1>}"), "org.vmms.Error.InvalidArgument", "unknown field 'bogus'", None),
            (("CreateVm", "x", "{'processor': <'four'>}"), "org.vmms.Error.InvalidArgument", "processor", None),
            (("GetCounters", "['no-backslash']"), "org.vmms.Error.InvalidArgument", "no-backslash", None),
        ]
        for args, name, fragment, over_grpc in cases:
            with self.subTest(args=args):
                error, message = dbus_error(d.gdbus(*args))
                self.assertEqual(error, name, message)
                self.assertIn(fragment, message)
                if over_grpc:
                    with self.assertRaises(grpc.RpcError) as e:
                        over_grpc()
                    self.assertEqual(message, e.exception.details(), "the same message as gRPC")
        # Arguments of the wrong D-Bus type never reach vmmsd's code.
        p = run(["dbus-send", f"--bus={self.bus.address}", f"--dest={NAME}", "--print-reply", MANAGER,
                 "org.vmms.Manager1.GetVm", "int32:5"])
        self.assertEqual(dbus_error(p)[0], "org.freedesktop.DBus.Error.InvalidArgs")
        p = d.busctl("call", NAME, MANAGER, "org.vmms.Manager1", "StopVm", "s", "bad-input", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("does not match expected type", p.stderr)
        self.assertIsNone(self.host.proc.poll(), "vmmsd survived the bad input")
        self.assertIn("hostname", d.call("GetHost")[0])
        d.call("RemoveVm", "s", "bad-input")

    def test_update_vm_changes_only_the_keys_given_and_the_properties_follow(self):
        d, pb = self.dbus, self.host.pb
        path, vm = d.create("dbus-set")
        self.assertEqual((vm["engine"], vm["automatic_start_action"]), ("bundled", "StartIfRunning"))
        self.assertEqual(d.prop(path, "Engine"), "bundled")
        self.assertEqual(d.prop(path, "AutomaticStartAction"), "StartIfRunning")

        got_path, got = d.call("UpdateVm", "sa{sv}", "dbus-set", 2, "notes", "s", "set over D-Bus",
                               "automatic_start_action", "s", "Start")
        self.assertEqual(got_path, path)
        self.assertIn(path, d.objects(), "UpdateVm must leave the VM's object exported")
        self.assertEqual((got["notes"], got["automatic_start_action"], got["workload"], got["name"]),
                         ("set over D-Bus", "Start", "idle", "dbus-set"), "only the keys given change")
        wait_for(lambda: d.prop(path, "AutomaticStartAction") == "Start", 5, interval=0.1,
                 what="AutomaticStartAction to follow UpdateVm")
        self.assertEqual(d.prop(path, "Notes"), "set over D-Bus")
        grpc_vm = self.host.api.GetVm(pb.VmRef(vm="dbus-set"), timeout=5)
        self.assertEqual((grpc_vm.notes, grpc_vm.automatic_start_action),
                         ("set over D-Bus", pb.AUTOMATIC_START_ACTION_START))

        # The VM object's own Update renames it; the object (named by UUID) stays.
        renamed = d.call("Update", "a{sv}", 1, "name", "s", "dbus-set2", path=path, interface="org.vmms.VM1")
        self.assertEqual((renamed[0]["name"], renamed[0]["notes"]), ("dbus-set2", "set over D-Bus"))
        wait_for(lambda: d.prop(path, "Name") == "dbus-set2", 5, interval=0.1, what="Name to follow Update")
        self.assertEqual(dbus_error(d.gdbus("GetVm", "dbus-set"))[0], "org.vmms.Error.NotFound")
        d.create("dbus-taken")
        error, message = dbus_error(d.gdbus("UpdateVm", "dbus-set2", "{'name': <'dbus-taken'>}"))
        self.assertEqual(error, "org.vmms.Error.AlreadyExists", message)
        self.assertIn("dbus-taken", message)
        self.assertEqual(d.prop(path, "Name"), "dbus-set2")
        d.call("RemoveVm", "s", "dbus-set2")
        d.call("RemoveVm", "s", "dbus-taken")

    def test_second_vmmsd_on_the_same_bus_says_the_name_is_taken(self):
        with tempfile.TemporaryDirectory(prefix="vmmsd-second-") as tmp:
            p = subprocess.run([str(VMMSD), "--state-dir", f"{tmp}/state", "--runtime-dir", f"{tmp}/run",
                                "--no-spawn-hvd", "--hvd-socket", str(self.host.runtime / "hvd.sock"),
                                "--dbus", "session"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("org.vmms.Manager1 is owned by another process", p.stderr)
        self.assertIn(MANAGER, self.dbus.objects(), "the first vmmsd keeps the name")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run a client as another user")
    def test_daemon_refuses_changes_from_users_outside_the_vmms_group(self):
        d = self.dbus
        d.create("guarded")
        try:
            read = d.gdbus("GetVm", "guarded", user=NOBODY)
            self.assertEqual(read.returncode, 0, read.stderr)
            for method, args in (("CreateVm", ("intruder", "{}")), ("StartVm", ("guarded",)),
                                 ("RemoveVm", ("guarded",))):
                with self.subTest(method=method):
                    error, message = dbus_error(d.gdbus(method, *args, user=NOBODY))
                    self.assertEqual(error, "org.vmms.Error.AccessDenied")
                    self.assertIn(method, message)
                    self.assertIn("vmms", message)
            self.assertEqual(d.prop(vm_path(d.call("GetVm", "s", "guarded")[1]["id"]), "State"), "Off")
        finally:
            d.call("RemoveVm", "s", "guarded")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to run a client as another user")
    def test_one_connection_keeps_its_callers_rights_across_calls(self):
        """vmmsd learns a caller's uid once per connection: the answers on one connection
        (GLib's own client, through PyGObject) stay those of its user."""
        script = """import sys
from gi.repository import Gio, GLib
flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
c = Gio.DBusConnection.new_for_address_sync(sys.argv[1], flags, None, None)
for method, sig, args in (("GetVm", "(s)", ("kept",)), ("CreateVm", "(sa{sv})", ("kept-2", {})),
                          ("GetVm", "(s)", ("kept",)), ("RemoveVm", "(s)", ("kept-2",))):
    try:
        c.call_sync("org.vmms.Manager1", "/org/vmms/Manager1", "org.vmms.Manager1", method,
                    GLib.Variant(sig, args), None, Gio.DBusCallFlags.NONE, -1, None)
        print(method, "ok")
    except GLib.Error as e:
        print(method, Gio.DBusError.get_remote_error(e))
"""
        self.dbus.create("kept")
        try:
            for user, expected in ((NOBODY, ["GetVm ok", "CreateVm org.vmms.Error.AccessDenied", "GetVm ok",
                                             "RemoveVm org.vmms.Error.AccessDenied"]),
                                   (None, ["GetVm ok", "CreateVm ok", "GetVm ok", "RemoveVm ok"])):
                with self.subTest(user=user):
                    p = run(["/usr/bin/python3", "-c", script, self.bus.address], user=user)
                    self.assertEqual(p.stdout.split("\n")[:-1], expected, p.stderr)
        finally:
            self.dbus.call("RemoveVm", "s", "kept")

    def test_introspection_matches_golden_files(self):
        """The XML vmmsd serves, byte for byte; VMMS_UPDATE_GOLDEN=1 rewrites the files
        after a deliberate change to api/*.xml."""
        path, _ = self.dbus.create("introspected")
        try:
            for interface, obj in (("org.vmms.Manager1", MANAGER), ("org.vmms.VM1", path)):
                with self.subTest(interface=interface):
                    xml = run(["gdbus", "introspect", "--address", self.bus.address, "--dest", NAME,
                               "--object-path", obj, "--xml"], check=True).stdout
                    m = re.search(rf'( *<interface name="{re.escape(interface)}">.*?</interface>\n)', xml, re.S)
                    self.assertIsNotNone(m, xml)
                    golden = GOLDEN / f"{interface}.introspect.xml"
                    if os.environ.get("VMMS_UPDATE_GOLDEN"):
                        golden.write_text(m.group(1))
                    self.assertEqual(m.group(1), golden.read_text(),
                                     f"{interface} changed; if on purpose, rerun with VMMS_UPDATE_GOLDEN=1")
        finally:
            self.dbus.call("RemoveVm", "s", "introspected")

    def test_manager_has_a_method_for_every_unary_rpc(self):
        """Both APIs serve one operation table: a new rpc needs its D-Bus method."""
        proto = (SOURCE / "proto" / "vmms.proto").read_text()
        rpcs = {name for name, stream in re.findall(r"rpc (\w+)\(\w+\) returns \((stream )?\w+\)", proto)
                if not stream}
        xml = run(["gdbus", "introspect", "--address", self.bus.address, "--dest", NAME, "--object-path", MANAGER,
                   "--xml"], check=True).stdout
        manager = re.search(r'<interface name="org.vmms.Manager1">.*?</interface>', xml, re.S).group(0)
        self.assertEqual(set(re.findall(r'<method name="(\w+)"', manager)), rpcs)
        self.assertIn('<signal name="Event">', manager, "WatchEvents is the Event signal")


class ClusterDbusTest(SessionBusHost, unittest.TestCase):
    """The cluster's methods over D-Bus against a real cluster: one vmmsd joined to three
    private etcd members (Debian's etcd-server, as test_cluster.py starts them), called with
    busctl and gdbus: Get-ClusterNode, Suspend-/Resume-ClusterNode, Get-/Set-Cluster, and
    named errors for a host no one has and a bad setting."""

    @classmethod
    def setUpClass(cls):
        cls.etcd = EtcdCluster()
        cls.address = f"127.0.0.1:{free_ports(1)[0]}"
        try:
            cls.start_host(("--cluster", f"etcd={cls.etcd.endpoints}", "--host-name", "dbushost",
                            "--host-address", cls.address, "--cluster-lease-ttl", "4"))
        except Exception:
            cls.etcd.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stop_host()
        cls.etcd.close()

    def node(self, nodes):
        self.assertEqual([n["name"] for n in nodes], ["dbushost"])
        return nodes[0]

    def wait_up(self):
        return wait_for(lambda: (lambda n: n if n and n[0]["state"] == "Up" else None)(
            self.dbus.call("ListClusterNodes")[0]), 30, interval=0.2, what="the host Up in the cluster")

    def test_list_cluster_nodes_shows_the_host_and_its_figures(self):
        node = self.node(self.wait_up())
        self.assertEqual(node["address"], self.address)
        self.assertEqual(node["lease_ttl_seconds"], 4)
        self.assertIn("bundled", node["engines"])
        # The figures auto-balance reads, CPU wait among them, are in every record.
        for key in ("average_pressure", "available_memory_bytes", "cpu_wait_per_dispatch_ns", "cpu_load_pct"):
            self.assertIn(key, node)
        self.assertEqual(self.etcd.get_prefix("/vmms/hosts/"), ["/vmms/hosts/dbushost"])

    def test_suspend_and_resume_cluster_node_change_its_state(self):
        self.wait_up()
        try:
            nodes = self.dbus.call("SuspendClusterNode", "sb", "dbushost", "false")[0]
            self.assertEqual(self.node(nodes)["state"], "Paused")
            self.assertEqual(self.etcd.get_prefix("/vmms/paused/"), ["/vmms/paused/dbushost"])
            self.assertEqual(self.node(self.dbus.call("ListClusterNodes")[0])["state"], "Paused")
        finally:
            nodes = self.dbus.call("ResumeClusterNode", "s", "dbushost")[0]
        self.assertEqual(self.node(nodes)["state"], "Up")
        self.assertEqual(self.etcd.get_prefix("/vmms/paused/"), [])
        error, message = dbus_error(self.dbus.gdbus("SuspendClusterNode", "nosuch", "false"))
        self.assertEqual(error, "org.vmms.Error.NotFound")
        self.assertIn("no host named 'nosuch' in the cluster", message)

    def test_get_and_set_cluster_settings(self):
        self.wait_up()
        # The leader (this host, alone) writes its own defaults: auto-balance off.
        settings = wait_for(lambda: (lambda s: s if s["stored"] else None)(self.dbus.call("GetCluster")[0]), 30,
                            interval=0.2, what="the leader to store the cluster's settings")
        self.assertEqual((settings["auto_balance"], settings["auto_balance_threshold"],
                          settings["auto_balance_cpu_wait_us"], settings["updated_by"]),
                         (False, 100, 1000, "dbushost"))
        try:
            changed = self.dbus.call("SetCluster", "a{sv}", 2, "auto_balance", "b", "true",
                                     "auto_balance_threshold", "u", 150)[0]
            self.assertEqual((changed["auto_balance"], changed["auto_balance_threshold"],
                              changed["auto_balance_cpu_wait_us"]), (True, 150, 1000))
            got = self.dbus.call("GetCluster")[0]
            self.assertEqual((got["auto_balance"], got["auto_balance_threshold"]), (True, 150))
            self.assertGreaterEqual(got["updated_unix_ms"], settings["updated_unix_ms"])
            for options, name in (("{'auto_balance_threshold': <uint32 0>}", "AutoBalanceThreshold 0"),
                                  ("{'auto_balance_cpu_wait_us': <uint32 2000000>}", "AutoBalanceCpuWait 2000000"),
                                  ("{}", "names no setting")):
                with self.subTest(options=options):
                    error, message = dbus_error(self.dbus.gdbus("SetCluster", options))
                    self.assertEqual(error, "org.vmms.Error.InvalidArgument")
                    self.assertIn(name, message)
            self.assertEqual(self.dbus.call("GetCluster")[0]["auto_balance_threshold"], 150, "nothing half-written")
        finally:
            self.dbus.call("SetCluster", "a{sv}", 2, "auto_balance", "b", "false", "auto_balance_threshold", "u", 100)


@unittest.skipUnless(os.geteuid() == 0, "needs root: vmmsd owns the name on a system bus as root")
class SystemBusPolicyTest(unittest.TestCase):
    def test_policy_file_lets_anyone_read_and_only_managers_change(self):
        bus = PrivateBus(SYSTEM_CONFIG)
        saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        host = None
        try:
            host = VmmsdHost(extra=("--dbus", "system"))
            d = DbusClient(bus.address)
            wait_for(lambda: MANAGER in d.objects(), 10, what="vmmsd on the system bus")
            path, _ = d.create("policy")  # as root

            for args in (("ListVms", ""), ("GetVm", "policy"), ("GetHost",)):
                with self.subTest(read=args[0]):
                    p = d.gdbus(*args, user=NOBODY)
                    self.assertEqual(p.returncode, 0, p.stderr)
            p = d.busctl("get-property", NAME, path, "org.vmms.VM1", "State", user=NOBODY)
            self.assertEqual(p.stdout.strip(), 's "Off"')
            p = run(["gdbus", "call", "--address", bus.address, "--dest", NAME, "--object-path", "/org/vmms",
                     "--method", "org.freedesktop.DBus.ObjectManager.GetManagedObjects"], user=NOBODY)
            self.assertIn(path, p.stdout)

            for args in (("CreateVm", "intruder", "{}"), ("StartVm", "policy"), ("RemoveVm", "policy")):
                with self.subTest(change=args[0]):
                    error, _ = dbus_error(d.gdbus(*args, user=NOBODY))
                    self.assertEqual(error, "org.freedesktop.DBus.Error.AccessDenied")
            p = d.gdbus("Start", path=path, interface="org.vmms.VM1", user=NOBODY)
            self.assertEqual(dbus_error(p)[0], "org.freedesktop.DBus.Error.AccessDenied")
            self.assertEqual(d.call("RemoveVm", "s", "policy"), [_vm_id(path)])
        finally:
            if host:
                host.close()
            bus.close()
            if saved is None:
                os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved


def _vm_id(path):
    return path.rsplit("/", 1)[1].replace("_", "-")


if __name__ == "__main__":
    unittest.main()
