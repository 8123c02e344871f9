"""`meson install` into a DESTDIR: the programs where an operator looks for them, the D-Bus files, a
systemd unit that systemd-analyze accepts, a sample vmms.conf vmmsd reads, man pages that name every
verb vmctl has, and bash completion that completes vmctl's verbs, parameters and values."""
import json
import re
import os
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

from vmms_host import BUILD

VMCTL = BUILD / "cli" / "vmctl"
VMMSD = BUILD / "vmms" / "vmmsd"


def build_options():
    out = subprocess.run(["meson", "introspect", "--buildoptions", str(BUILD)], capture_output=True, text=True,
                         check=True).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


@unittest.skipUnless(VMMSD.exists() and shutil.which("meson"), "needs the build tree and meson")
class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="vmms-install-")
        cls.dest = Path(cls._tmp.name) / "dest"
        p = subprocess.run(["meson", "install", "-C", str(BUILD), "--no-rebuild", "--quiet", "--destdir",
                            str(cls.dest)], capture_output=True, text=True)
        if p.returncode != 0:
            raise AssertionError(f"meson install failed: {p.stdout}{p.stderr}")
        o = build_options()
        cls.prefix = Path(o["prefix"])

        def where(option, *rest):
            d = Path(o[option])
            return (d if d.is_absolute() else cls.prefix / d).joinpath(*rest)
        cls.where = staticmethod(where)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def installed(self, path):
        """The DESTDIR copy of an absolute installed path."""
        return self.dest / Path(path).relative_to("/")

    def test_programs_are_installed_executable(self):
        for path in (self.where("bindir", "vmctl"), self.where("bindir", "hvctl"), self.where("sbindir", "vmmsd"),
                     self.where("sbindir", "hvd"), self.where("libexecdir", "vmms", "vmwp")):
            with self.subTest(path=str(path)):
                mode = self.installed(path).stat().st_mode
                self.assertTrue(mode & stat.S_IXUSR and mode & stat.S_IXOTH, oct(mode))
        guest = self.installed(self.where("libexecdir", "vmms", "vmms-guest")).read_bytes()
        self.assertEqual(guest[:4], b"\x7fELF", "the guest kernel vmwp loads")

    def test_installed_vmmsd_uses_the_installed_hypervisor_and_worker(self):
        hvd = self.where("sbindir", "hvd")
        if hvd.exists():
            self.skipTest(f"{hvd} exists on this machine: vmmsd would really start it")
        run = Path(self._tmp.name) / "run"
        p = subprocess.run([str(self.installed(self.where("sbindir", "vmmsd"))), "--state-dir",
                            f"{self._tmp.name}/state", "--runtime-dir", str(run), "--dbus", "none", "--init-store"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"cannot start hvd ({hvd})", p.stderr, "not the build tree's hvd")

    def test_dbus_policy_and_interfaces(self):
        for name in ("org.vmms.Manager1.xml", "org.vmms.VM1.xml"):
            installed = self.installed(self.where("datadir", "dbus-1", "interfaces", name))
            self.assertEqual(installed.read_bytes(), (Path(__file__).parents[2] / "api" / name).read_bytes())
        policy = self.installed(self.where("datadir", "dbus-1", "system.d", "org.vmms.Manager1.conf")).read_text()
        self.assertIn('<allow own="org.vmms.Manager1"/>', policy)

    def unit(self):
        return self.installed(self.prefix / "lib" / "systemd" / "system" / "vmmsd.service")

    def test_systemd_unit_starts_the_installed_vmmsd_with_the_installed_config(self):
        text = self.unit().read_text()
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        program, *args = exec_start.split("=", 1)[1].split()
        self.assertEqual(program, str(self.where("sbindir", "vmmsd")))
        self.assertEqual(args, ["--config", str(self.where("sysconfdir", "vmms", "vmms.conf"))])
        self.assertTrue(self.installed(args[1]).exists())
        self.assertIn("KillMode=process", text, "restarting vmmsd must leave hvd and the workers running")
        self.assertIn("RuntimeDirectoryPreserve=yes", text, "their sockets outlive vmmsd too")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "no systemd-analyze here")
    def test_systemd_analyze_verify_accepts_the_unit(self):
        # The unit as installed, pointed at the DESTDIR copy of vmmsd (verify checks it exists).
        unit = Path(self._tmp.name) / "verify" / "vmmsd.service"
        unit.parent.mkdir(exist_ok=True)
        unit.write_text(self.unit().read_text().replace(f"ExecStart={self.prefix}",
                                                        f"ExecStart={self.dest}{self.prefix}"))
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", str(unit)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stderr), (0, ""), p.stdout)

    def test_sample_config_is_read_by_vmmsd_and_its_keys_are_real(self):
        conf = self.installed(self.where("sysconfdir", "vmms", "vmms.conf"))
        text = conf.read_text()
        for key in ("state-dir", "hvd-memory", "hvd-scheduler", "hvd-numa-nodes", "hvd-io-boost", "socket-mode",
                    "grpc-tcp", "tls-ca", "operator-group", "operators", "readers"):
            self.assertIn(f"#{key}=", text)
        # Uncommented, the hvd keys must be ones vmmsd checks: a bad value is refused by name.
        bad = Path(self._tmp.name) / "bad.conf"
        bad.write_text(text.replace("#hvd-scheduler=share", "hvd-scheduler=fifo"))
        p = subprocess.run([str(VMMSD), "--config", str(bad), "--state-dir", f"{self._tmp.name}/s2",
                            "--runtime-dir", f"{self._tmp.name}/r2", "--dbus", "none"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--hvd-scheduler 'fifo'", p.stderr)
        # As installed (everything commented out) vmmsd takes it and goes on to start.
        p = subprocess.run([str(VMMSD), "--config", str(conf), "--state-dir", f"{self._tmp.name}/s3",
                            "--runtime-dir", f"{self._tmp.name}/r3", "--dbus", "none", "--no-spawn-hvd"],
                           capture_output=True, text=True, timeout=30)
        self.assertNotIn("cannot read", p.stderr)
        self.assertNotIn("vmms.conf:", p.stderr)
        self.assertIn("hvd", p.stderr, "it got as far as looking for hvd")

    def test_man_pages_render_and_name_every_verb(self):
        if not shutil.which("man"):
            self.skipTest("no man here")
        pages = {}
        for section, name in (("1", "vmctl"), ("8", "vmmsd")):
            path = self.installed(self.where("mandir", f"man{section}", f"{name}.{section}"))
            p = subprocess.run(["man", "-l", "-Tutf8", str(path)], capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, MANWIDTH="200"))
            self.assertEqual((p.returncode, p.stderr), (0, ""))
            pages[name] = re.sub(".\x08", "", p.stdout)  # no bold or underline overstrikes
        verbs = [line.split()[0] for line in subprocess.run([str(VMCTL), "--complete"], capture_output=True,
                                                            text=True, check=True).stdout.splitlines()]
        self.assertIn("Connect-VM", verbs)
        for verb in verbs:
            self.assertIn(verb, pages["vmctl"], "vmctl(1) misses a verb")
        for option in ("--hvd-scheduler", "--hvd-numa-nodes", "--hvd-io-boost", "--state-dir", "--config"):
            self.assertIn(option, pages["vmmsd"])

    def complete(self, *words):
        """What the installed completion offers for the last word of `vmctl WORDS`."""
        script = self.installed(self.where("datadir", "bash-completion", "completions", "vmctl"))
        env = dict(os.environ, PATH=f"{self.installed(self.where('bindir'))}:{os.environ['PATH']}",
                   VMMS_SOCKET=f"{self._tmp.name}/nothing.sock")
        p = subprocess.run(["bash", "-c", 'source "$0"; COMP_WORDS=(vmctl "$@"); COMP_CWORD=$#; _vmctl; '
                            'printf "%s\\n" "${COMPREPLY[@]}"', str(script), *words],
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [w for w in p.stdout.split("\n") if w]

    def test_bash_completion_offers_verbs_parameters_and_values(self):
        self.assertEqual(self.complete("sta"), ["Start-VM"])
        self.assertIn("Connect-VM", self.complete(""))
        self.assertEqual(self.complete("Connect-VM", "-T"), ["-Tail"])
        self.assertEqual(self.complete("new-vm", "-Workload", ""), ["idle", "cpu", "memsoak", "cache"])
        self.assertEqual(self.complete("Set-VM", "x", "-AutomaticStartAction", "st"), ["StartIfRunning", "Start"])
        self.assertEqual(self.complete("Set-VMMemory", "x", "-DynamicMemoryEnabled", ""), ["$true", "$false"])
        self.assertEqual(self.complete("Get-Help", "set-vmm"), ["Set-VMMemory"])
        self.assertIn("-Passthru", self.complete("Stop-VM", "web", "-"))


if __name__ == "__main__":
    unittest.main()
