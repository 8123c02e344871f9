"""Access is judged once, in the core, for every API: a local user outside the operator
group reads (on a shared socket) or cannot connect (the default 0660), and is refused
Start-VM by name; a member of the operator group manages VMs; over TCP only clients with
a certificate from vmmsd's CA get a call, and their subject's role decides what it may
do. Certificates come from openssl in a temporary directory; the gRPC client is Debian's
python3-grpcio; local clients run as uid 65534 with no groups of root's."""
import grp
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import grpc

from vmmsd_host import VmmsdHost
from vmms_host import BUILD, wait_for

VMCTL = BUILD / "cli" / "vmctl"
NOBODY = 65534


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, ca, name, subject, ext):
    Path(d, f"{name}.ext").write_text(ext + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


def as_user(argv, uid=NOBODY, gid=NOBODY, env=None):
    """A client process as `uid` with primary group `gid` and no supplementary groups."""
    environment = {"PATH": os.environ["PATH"], "HOME": "/tmp", "VMCTL_CONFIG": "", **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, user=uid, group=gid,
                          extra_groups=[], env=environment)


def open_to_others(host):
    """The test's directories are root's 0700; the socket's own mode is what is under test."""
    for d in (host.dir, host.runtime):
        os.chmod(d, 0o755)


@unittest.skipUnless(os.geteuid() == 0, "needs root to run clients as other users")
class UnixSocketTest(unittest.TestCase):
    def test_shared_socket_lets_other_users_read_but_not_start(self):
        with VmmsdHost(hvd_memory="256MB", hvd_lps=1, extra=("--socket-mode", "0666")) as host:
            open_to_others(host)
            host.create("shared")
            self.assertEqual(os.stat(host.socket).st_mode & 0o777, 0o666)
            out = as_user([str(VMCTL), "-Server", str(host.socket), "Get-VM", "shared", "-Json"])
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(json.loads(out.stdout)[0]["name"], "shared")
            out = as_user([str(VMCTL), "-Server", str(host.socket), "Start-VM", "shared"])
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn(f"uid {NOBODY} may not StartVm: it needs the operator role (root or group vmms)",
                          out.stderr)
            # Through Debian's grpcio as well: the status is PERMISSION_DENIED.
            client = ("import grpc, sys\n"
                      "c = grpc.insecure_channel('unix:' + sys.argv[1])\n"
                      "m = c.unary_unary('/vmms.v1.Vmms/RemoveVm')\n"
                      "try:\n    m(b'\\x0a\\x06shared', timeout=10); print('OK')\n"
                      "except grpc.RpcError as e:\n    print(e.code().name, e.details())\n")
            out = as_user(["/usr/bin/python3", "-c", client, str(host.socket)])
            self.assertTrue(out.stdout.startswith("PERMISSION_DENIED"), out.stdout + out.stderr)
            self.assertEqual(host.api.GetVm(host.pb.VmRef(vm="shared"), timeout=5).state, host.pb.VM_STATE_OFF)
            events = host.api.ListEvents(host.pb.ListEventsRequest(), timeout=5).events
            refusals = [e.message for e in events if e.kind == "access-denied"]
            self.assertTrue(any(f"uid {NOBODY} may not StartVm" in m for m in refusals), refusals)

    def test_default_socket_keeps_other_users_out(self):
        with VmmsdHost(hvd_memory="256MB", hvd_lps=1) as host:
            open_to_others(host)
            self.assertEqual(os.stat(host.socket).st_mode & 0o777, 0o660)
            out = as_user([str(VMCTL), "-Server", str(host.socket), "Get-VM"])
            self.assertEqual(out.returncode, 3, out.stdout + out.stderr)

    def test_operator_group_member_manages_vms(self):
        group = f"vmmsacc{os.getpid() % 100000}"
        subprocess.run(["groupadd", group], check=True, capture_output=True, timeout=30)
        try:
            gid = grp.getgrnam(group).gr_gid
            with tempfile.TemporaryDirectory(prefix="vmms-access-") as tmp:
                conf = Path(tmp) / "vmms.conf"
                conf.write_text(f"[access]\noperator-group={group}\n")
                with VmmsdHost(hvd_memory="256MB", hvd_lps=1, extra=("--config", str(conf))) as host:
                    open_to_others(host)
                    self.assertEqual(os.stat(host.socket).st_gid, gid, "the socket belongs to the operator group")
                    out = as_user([str(VMCTL), "-Server", str(host.socket), "New-VM", "-Name", "member",
                                   "-MemoryStartupBytes", "64MB"], gid=gid)
                    self.assertEqual(out.returncode, 0, out.stderr)
                    out = as_user([str(VMCTL), "-Server", str(host.socket), "Remove-VM", "member"], gid=gid)
                    self.assertEqual(out.returncode, 0, out.stderr)
                    # The same user without the group cannot even connect (0660).
                    out = as_user([str(VMCTL), "-Server", str(host.socket), "Get-VM"])
                    self.assertEqual(out.returncode, 3, out.stderr)
        finally:
            subprocess.run(["groupdel", group], capture_output=True, timeout=30)


@unittest.skipUnless(shutil.which("openssl"), "needs openssl to make certificates")
class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="vmms-access-tls-")
        d = cls.dir = Path(cls._tmp.name)
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_cert(d, "ca", "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        client = "extendedKeyUsage=clientAuth"
        make_cert(d, "ca", "operator", "/O=vmms test/CN=ops1", client)
        make_cert(d, "ca", "reader", "/O=vmms test/CN=monitor", client)
        make_cert(d, "ca", "stranger", "/O=vmms test/CN=stranger", client)
        make_cert(d, "other-ca", "forged", "/O=vmms test/CN=ops1", client)
        (d / "vmms.conf").write_text("[access]\noperators=CN=ops1\nreaders=CN=monitor\n")
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            cls.address = f"127.0.0.1:{s.getsockname()[1]}"
        cls.host = VmmsdHost(hvd_memory="256MB", hvd_lps=1, extra=(
            "--grpc-tcp", cls.address, "--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
            "--tls-ca", str(d / "ca.pem"), "--config", str(d / "vmms.conf")))

    @classmethod
    def tearDownClass(cls):
        cls.host.close()
        cls._tmp.cleanup()

    def stub(self, cert=None):
        read = lambda name: (self.dir / name).read_bytes()
        creds = grpc.ssl_channel_credentials(read("ca.pem"), read(f"{cert}.key") if cert else None,
                                             read(f"{cert}.pem") if cert else None)
        channel = grpc.secure_channel(self.address, creds)
        self.addCleanup(channel.close)
        return self.host.pb_grpc.VmmsStub(channel)

    def create(self, cert, name):
        pb = self.host.pb
        return self.stub(cert).CreateVm(pb.CreateVmRequest(
            name=name, memory=pb.MemorySettings(startup_bytes=64 << 20), processor=pb.ProcessorSettings(count=1)),
            timeout=10)

    def test_clients_without_a_certificate_of_the_ca_get_no_call(self):
        for cert in (None, "forged"):
            with self.subTest(cert=cert):
                with self.assertRaises(grpc.RpcError) as caught:
                    self.create(cert, f"tls-{cert}")
                self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE, caught.exception.details())
        names = [vm.name for vm in self.host.api.ListVms(self.host.pb.ListVmsRequest(), timeout=5).vms]
        self.assertNotIn("tls-None", names)
        self.assertNotIn("tls-forged", names)

    def test_reader_reads_and_is_refused_changes_by_name(self):
        self.stub("reader").ListVms(self.host.pb.ListVmsRequest(), timeout=10)
        with self.assertRaises(grpc.RpcError) as caught:
            self.create("reader", "tls-reader")
        self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("CN=monitor", caught.exception.details())
        self.assertIn("may not CreateVm: it needs the operator role", caught.exception.details())

    def test_certificate_outside_the_map_is_refused_even_reads(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub("stranger").ListVms(self.host.pb.ListVmsRequest(), timeout=10)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("CN=stranger", caught.exception.details())
        self.assertIn("may not ListVms: it needs the reader role", caught.exception.details())

    def test_operator_creates_and_vmctl_presents_its_certificate(self):
        vm = self.create("operator", "tls-operator")
        self.assertEqual(vm.name, "tls-operator")
        d = self.dir
        out = subprocess.run([str(VMCTL), "-Server", self.address, "-CertificateFile", str(d / "ca.pem"),
                              "-ClientCertificateFile", str(d / "operator.pem"), "-ClientKeyFile",
                              str(d / "operator.key"), "Remove-VM", "tls-operator"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "VMCTL_CONFIG": ""})
        self.assertEqual(out.returncode, 0, out.stderr)
        # The client config file says the same: server, CA, certificate and key (relative to the file).
        (d / "vmctl.conf").write_text(f"[vmctl]\nserver={self.address}\nca=ca.pem\ncert=reader.pem\nkey=reader.key\n")
        env = {**os.environ, "VMCTL_CONFIG": str(d / "vmctl.conf")}
        env.pop("VMMS_SOCKET", None)
        out = subprocess.run([str(VMCTL), "New-VM", "-Name", "tls-vmctl", "-MemoryStartupBytes", "64MB"],
                             capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("may not CreateVm", out.stderr)
        out = subprocess.run([str(VMCTL), "Get-VMEvent", "-Newest", "50", "-Json"], capture_output=True, text=True,
                             timeout=60, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        refusals = [e["message"] for e in json.loads(out.stdout) if e["kind"] == "access-denied"]
        self.assertTrue(any("CN=monitor" in m and "may not CreateVm" in m for m in refusals), refusals)

    def test_vmmsd_refuses_tcp_without_a_ca(self):
        d = self.dir
        out = subprocess.run([str(BUILD / "vmms" / "vmmsd"), "--state-dir", str(d / "s2"), "--runtime-dir",
                              str(d / "r2"), "--dbus", "none", "--grpc-tcp", "127.0.0.1:1", "--tls-cert",
                              str(d / "server.pem"), "--tls-key", str(d / "server.key")],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2, out.stderr)
        self.assertIn("--tls-ca", out.stderr)


if __name__ == "__main__":
    unittest.main()
