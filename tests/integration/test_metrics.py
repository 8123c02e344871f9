"""vmmsd --metrics: Debian's own Prometheus server scrapes vmmsd and answers PromQL with
the Dynamic Memory VM's pressure and assigned memory as Get-Counter shows them; the
exposition text parses with Debian's python3-prometheus-client and names every Get-Counter
counter by Prometheus's rules (label escaping: tests/unit/test-api-metrics.c, as neither
vmmsd nor hvd lets a name hold a quote or a backslash); over TLS a client certificate
without a role in [access] gets 403, as it would get PERMISSION_DENIED on gRPC."""
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from test_access import make_ca, make_cert
from vmmsd_host import VMMSD, VmmsdHost
from vmms_host import wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
MiB = 1 << 20
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Every Get-Counter counter and the metric that serves it (README, Metrics).
METRIC_OF = {
    ("Hyper-V Hypervisor Logical Processor", "% Total Run Time"): "vmms_lp_run_time_seconds_total",
    ("Hyper-V Hypervisor Logical Processor", "% Guest Run Time"): "vmms_lp_guest_run_time_seconds_total",
    ("Hyper-V Hypervisor Logical Processor", "% Hypervisor Run Time"): "vmms_lp_hypervisor_run_time_seconds_total",
    ("Hyper-V Hypervisor Logical Processor", "% Idle Time"): "vmms_lp_idle_time_seconds_total",
    ("Hyper-V Hypervisor Logical Processor", "Context Switches/sec"): "vmms_lp_context_switches_total",
    ("Hyper-V Hypervisor", "Logical Processors"): "vmms_host_logical_processors",
    ("Hyper-V Hypervisor", "Partitions"): "vmms_host_partitions",
    ("Hyper-V Hypervisor", "Memory Pool Bytes"): "vmms_host_memory_pool_bytes",
    ("Hyper-V Hypervisor", "Memory Pool Used Bytes"): "vmms_host_memory_pool_used_bytes",
    ("Hyper-V Dynamic Memory Balancer", "Available Memory"): "vmms_dm_balancer_available_memory_bytes",
    ("Hyper-V Dynamic Memory Balancer", "Average Pressure"): "vmms_dm_balancer_average_pressure_ratio",
    ("Hyper-V Dynamic Memory Balancer", "System Current Pressure"):
        "vmms_dm_balancer_system_current_pressure_ratio",
    ("Hyper-V Dynamic Memory VM", "Physical Memory"): "vmms_vm_memory_assigned_bytes",
    ("Hyper-V Dynamic Memory VM", "Guest Visible Physical Memory"): "vmms_vm_memory_visible_bytes",
    ("Hyper-V Dynamic Memory VM", "Current Pressure"): "vmms_vm_memory_pressure_ratio",
    ("Hyper-V Dynamic Memory VM", "Average Pressure"): "vmms_vm_memory_average_pressure_ratio",
    ("Hyper-V Dynamic Memory VM", "Minimum Pressure"): "vmms_vm_memory_minimum_pressure_ratio",
    ("Hyper-V Dynamic Memory VM", "Maximum Pressure"): "vmms_vm_memory_maximum_pressure_ratio",
    ("Hyper-V Dynamic Memory VM", "Added Memory"): "vmms_vm_memory_added_bytes_total",
    ("Hyper-V Dynamic Memory VM", "Removed Memory"): "vmms_vm_memory_removed_bytes_total",
    ("Hyper-V Dynamic Memory VM", "Memory Add Operations"): "vmms_vm_memory_add_operations_total",
    ("Hyper-V Dynamic Memory VM", "Memory Remove Operations"): "vmms_vm_memory_remove_operations_total",
    ("VMMS Guest Memory", "Committed Bytes"): "vmms_vm_memory_committed_bytes",
    ("VMMS Guest Memory", "Pages In"): "vmms_vm_guest_pages_in_total",
    ("VMMS Guest Memory", "Pages Out"): "vmms_vm_guest_pages_out_total",
    ("VMMS Guest Memory", "Ballooned Bytes"): "vmms_vm_memory_ballooned_bytes",
    ("VMMS Partition", "Host Resident Bytes"): "vmms_vm_memory_host_resident_bytes",
    ("Hyper-V Hypervisor Virtual Processor", "% Total Run Time"): "vmms_vp_run_time_seconds_total",
    ("Hyper-V Hypervisor Virtual Processor", "% Guest Run Time"): "vmms_vp_guest_run_time_seconds_total",
    ("Hyper-V Hypervisor Virtual Processor", "CPU Wait Time Per Dispatch"): "vmms_vp_cpu_wait_time_seconds_total",
    ("Hyper-V Hypervisor Virtual Processor", "Dispatches/sec"): "vmms_vp_dispatches_total",
    ("Hyper-V Hypervisor Virtual Processor", "Hypercalls/sec"): "vmms_vp_hypercalls_total",
}
PATH = re.compile(r"^\\(?P<set>[^(]+)\((?P<instance>.*)\)\\(?P<counter>[^\\]+)$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def get_counters(host):
    """{(set, instance, counter): value} from Get-Counter."""
    out = {}
    for s in host.api.GetCounters(host.pb.GetCountersRequest(), timeout=10).samples:
        m = PATH.match(s.path)
        out[(m["set"], m["instance"], m["counter"])] = s.value
    return out


def start_dm_vm(host, name):
    """A memsoak VM with Dynamic Memory that grows past its startup memory and holds."""
    pb = host.pb
    host.api.CreateVm(pb.CreateVmRequest(
        name=name, workload="memsoak", boot_args="memsoak_mb=80 memsoak_step_mb=16 memsoak_step_ms=100",
        memory=pb.MemorySettings(dynamic_memory_enabled=True, startup_bytes=64 * MiB, minimum_bytes=64 * MiB,
                                 maximum_bytes=256 * MiB, buffer=20, priority=50)), timeout=10)
    host.api.StartVm(pb.VmRef(vm=name), timeout=60)
    wait_for(lambda: ("Hyper-V Dynamic Memory VM", name, "Current Pressure") in get_counters(host), 30,
             interval=0.2, what=f"{name}'s pressure in Get-Counter")


class Prometheus:
    """Debian's prometheus on loopback with its own config and data directory."""

    def __init__(self, target_port, interval="1s"):
        self.dir = Path(tempfile.mkdtemp(prefix="vmms-prometheus-"))
        self.port = free_port()
        (self.dir / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
            f"scrape_configs:\n  - job_name: vmmsd\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, interval=0.2, what="prometheus to be ready")

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited: " + (self.dir / "prometheus.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql):
        return self.api("query", query=promql)["result"]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@unittest.skipUnless(Path(PROMETHEUS).exists(), "Debian's prometheus is not installed (scripts/install-deps.sh)")
class PrometheusScrapeTest(unittest.TestCase):
    def test_promql_returns_the_vms_pressure_and_assigned_memory_as_get_counter_shows_them(self):
        port = free_port()
        with VmmsdHost(hvd_memory="512MB", extra=("--metrics", f"127.0.0.1:{port}")) as host, \
                Prometheus(port) as prom:
            start_dm_vm(host, "db")
            seen = []  # (time, pressure, assigned MB) from Get-Counter, every 0.2 s

            def sample():
                c = get_counters(host)
                seen.append((time.monotonic(), c.get(("Hyper-V Dynamic Memory VM", "db", "Current Pressure")),
                             c.get(("Hyper-V Dynamic Memory VM", "db", "Physical Memory"))))

            def scraped():
                sample()
                return prom.query('vmms_vm_memory_pressure_ratio{vm="db"}')

            wait_for(scraped, 60, interval=0.2, what="prometheus to scrape db's pressure")
            up = prom.query('up{job="vmmsd"}')
            self.assertEqual(up[0]["value"][1], "1", up)
            # Let the guest hold its target, then compare: Prometheus's latest sample is at
            # most a scrape interval old, Get-Counter moves once a tick.
            wait_for(lambda: sample() or seen[-1][1] and seen[-1][1] > 0, 30, interval=0.2,
                     what="db to report pressure")
            for _ in range(10):
                sample()
                time.sleep(0.2)
            pressure = prom.query('vmms_vm_memory_pressure_ratio{vm="db"}')
            assigned = prom.query('vmms_vm_memory_assigned_bytes{vm="db"}')
            sample()
            recent = [s for s in seen if s[0] >= seen[-1][0] - 3.5]
            self.assertEqual(len(pressure), 1, pressure)
            self.assertEqual(pressure[0]["metric"]["job"], "vmmsd")
            self.assertIn(round(float(pressure[0]["value"][1]) * 100), {s[1] for s in recent}, (pressure, recent))
            self.assertGreater(float(pressure[0]["value"][1]), 0)
            self.assertIn(int(float(assigned[0]["value"][1])) >> 20, {s[2] for s in recent}, (assigned, recent))
            self.assertGreaterEqual(int(float(assigned[0]["value"][1])), 64 * MiB)
            # A counter works with PromQL's rate(): the VP ran in the last seconds.
            ran = prom.query('rate(vmms_vp_run_time_seconds_total{vm="db",vp="0"}[5s])')
            self.assertEqual(len(ran), 1, ran)
            self.assertGreater(float(ran[0]["value"][1]), 0)
            running = prom.query('vmms_vm_state{vm="db",state="Running"}')
            self.assertEqual(running[0]["value"][1], "1", running)


class ExpositionTest(unittest.TestCase):
    def test_every_counter_is_served_with_valid_names_help_and_type(self):
        port = free_port()
        with VmmsdHost(hvd_memory="512MB", extra=("--metrics", f"127.0.0.1:{port}")) as host:
            start_dm_vm(host, "db")
            host.create("idle")
            wait_for(lambda: any(k[0] == "Hyper-V Hypervisor Virtual Processor" for k in get_counters(host)), 30,
                     interval=0.2, what="db's VP counters")
            counters = get_counters(host)
            status, content_type, text = fetch(port)
        self.assertEqual(status, 200)
        self.assertEqual(content_type, "text/plain; version=0.0.4; charset=utf-8")

        families = {f.name: f for f in text_string_to_metric_families(text)}
        helps = re.findall(r"^# HELP (\S+) ", text, re.M)
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        self.assertEqual(len(helps), len(set(helps)), "a HELP line twice")
        series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
        self.assertEqual(len(series), len(set(series)), "a series twice")
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = re.match(r"[^{ ]+", line).group(0)
                self.assertRegex(name, METRIC_NAME)
                self.assertIn(name, types, f"{name} has no TYPE line")
                self.assertIn(name, helps, f"{name} has no HELP line")
                self.assertEqual(types[name] == "counter", name.endswith("_total"), name)
        for f in families.values():
            for s in f.samples:
                for label in s.labels:
                    self.assertRegex(label, LABEL_NAME)

        # Every Get-Counter counter has its metric; _Total instances are left to sum().
        values = {}
        for f in families.values():
            for s in f.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        served = {s.name for f in families.values() for s in f.samples}
        self.assertEqual({(s, c) for s, _, c in counters} - set(METRIC_OF), set(), "a counter this test lacks")
        for (set_name, instance, counter) in counters:
            self.assertIn(METRIC_OF[(set_name, counter)], served, (set_name, counter))
        self.assertEqual(set(METRIC_OF.values()) - served, set(), "a metric not served")
        # Figures agree with Get-Counter's (sampled just before, so within a tick).
        pool = counters[("Hyper-V Hypervisor", "_Total", "Memory Pool Bytes")]
        self.assertEqual(values[("vmms_host_memory_pool_bytes", ())], pool)
        self.assertEqual(values[("vmms_host_logical_processors", ())], 2)

        self.assertIn(("vmms_vm_memory_assigned_bytes", (("vm", "db"),)), values)
        self.assertIn(("vmms_vp_run_time_seconds_total", (("vm", "db"), ("vp", "0"))), values)
        # The state set: one state 1, the others 0, for a VM that is off as for one that runs.
        for name, state in (("idle", "Off"), ("db", "Running")):
            states = {s.labels["state"]: s.value for s in families["vmms_vm_state"].samples if s.labels["vm"] == name}
            self.assertEqual(states.pop(state), 1, states)
            self.assertTrue(states and all(v == 0 for v in states.values()), states)

    def test_a_wrong_method_or_path_is_refused(self):
        port = free_port()
        with VmmsdHost(hvd_memory="256MB", hvd_lps=1, extra=("--metrics", f"localhost:{port}")):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/metrics", body=b"x")
            r = conn.getresponse()
            self.assertEqual((r.status, r.getheader("Allow")), (405, "GET, HEAD"))
            r.read()
            conn.request("GET", "/")
            r = conn.getresponse()
            self.assertEqual(r.status, 404)
            conn.close()

    def test_plain_http_off_loopback_is_refused_at_start(self):
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([str(VMMSD), "--state-dir", d + "/s",
                                  "--runtime-dir", d + "/r", "--dbus", "none", "--no-spawn-hvd",
                                  "--metrics", "0.0.0.0:1"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("give --tls-cert, --tls-key and --tls-ca", out.stderr)


class TlsAccessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="vmms-metrics-tls-")
        d = cls.d = Path(cls.tmp.name)
        make_ca(d, "ca")
        make_ca(d, "other")
        make_cert(d, "ca", "host", "/CN=vmhost", "subjectAltName=IP:127.0.0.1")
        make_cert(d, "ca", "monitor", "/CN=monitor", "extendedKeyUsage=clientAuth")
        make_cert(d, "ca", "stranger", "/CN=stranger", "extendedKeyUsage=clientAuth")
        make_cert(d, "other", "forged", "/CN=monitor", "extendedKeyUsage=clientAuth")
        (d / "vmms.conf").write_text("[access]\nreaders=CN=monitor\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def scrape(self, port, client=None):
        ctx = ssl.create_default_context(cafile=str(self.d / "ca.pem"))
        if client:
            ctx.load_cert_chain(str(self.d / f"{client}.pem"), str(self.d / f"{client}.key"))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def test_only_a_certificate_with_a_role_may_scrape_over_tls(self):
        port = free_port()
        d = self.d
        with VmmsdHost(hvd_memory="256MB", hvd_lps=1,
                       extra=("--metrics", f"127.0.0.1:{port}", "--metrics-tls", "--tls-cert", str(d / "host.pem"),
                              "--tls-key", str(d / "host.key"), "--tls-ca", str(d / "ca.pem"),
                              "--config", str(d / "vmms.conf"))) as host:
            wait_for(lambda: "vmms_host_logical_processors 1" in self.scrape(port, "monitor")[1], 20,
                     interval=0.2, what="the reader's scrape")
            status, body = self.scrape(port, "stranger")
            self.assertEqual(status, 403, body)
            self.assertIn("certificate CN=stranger may not GetCounters: it needs the reader role", body)
            status, body = self.scrape(port)
            self.assertEqual(status, 403, body)
            self.assertIn("a TLS client without a certificate may not GetCounters", body)
            # A certificate the CA did not sign does not get as far as a request.
            try:
                status, body = self.scrape(port, "forged")
            except (ssl.SSLError, ConnectionError) as e:
                status, body = None, str(e)
            self.assertNotEqual(status, 200, body)
            # Plain HTTP gets no metrics from a TLS port.
            try:
                status, _, _ = fetch(port)
            except (OSError, http.client.HTTPException):
                status = None
            self.assertNotEqual(status, 200)
            events = host.api.ListEvents(host.pb.ListEventsRequest(), timeout=5).events
            refusals = [e.message for e in events if e.kind == "access-denied"]
            self.assertTrue(any("CN=stranger may not GetCounters" in m for m in refusals), refusals)


if __name__ == "__main__":
    unittest.main()
