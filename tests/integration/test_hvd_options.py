"""vmmsd passes hvd's own options (scheduler, NUMA layout, slice, I/O-wake boost) on to the hvd it
starts, from its flags and from vmms.conf, and refuses a bad one before starting anything."""
import subprocess
import tempfile
import unittest
from pathlib import Path

from vmmsd_host import VMMSD, VmmsdHost, processes_naming


def hvd_command_line(host):
    for pid in processes_naming(str(host.runtime / "hvd.sock")):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if args[0].endswith(b"/hvd"):
            return [a.decode() for a in args if a]
    raise AssertionError(f"no hvd running on {host.runtime}: {host.log()}")


def hvd_log(host):
    return (host.state / "logs" / "hvd.log").read_text(errors="replace")


@unittest.skipUnless(VMMSD.exists(), "vmmsd not built")
class HvdOptionsTest(unittest.TestCase):
    def test_flags_reach_hvd(self):
        with VmmsdHost(extra=("--hvd-scheduler", "round-robin", "--hvd-numa-nodes", "2", "--hvd-io-boost",
                              "--hvd-slice-ms", "5")) as host:
            args = hvd_command_line(host)
            for want in ("--scheduler=round-robin", "--numa-nodes=2", "--io-boost", "--slice-ms=5"):
                self.assertIn(want, args)
            log = hvd_log(host)
            self.assertIn("2 LPs in 2 NUMA nodes", log)
            self.assertIn("slice 5 ms", log)
            self.assertIn("scheduler round-robin with I/O-wake boost", log)

    def test_vmms_conf_keys_reach_hvd_and_flags_win(self):
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "vmms.conf"
            conf.write_text("[vmmsd]\nhvd-scheduler=round-robin\nhvd-numa-nodes=2\nhvd-io-boost=true\n")
            with VmmsdHost(extra=("--config", str(conf), "--hvd-scheduler", "share")) as host:
                args = hvd_command_line(host)
                self.assertIn("--scheduler=share", args, "the command line wins")
                self.assertIn("--numa-nodes=2", args)
                self.assertIn("--io-boost", args)
                self.assertIn("scheduler share with I/O-wake boost", hvd_log(host))

    def test_without_options_hvd_keeps_its_defaults(self):
        with VmmsdHost() as host:
            args = hvd_command_line(host)
            self.assertFalse([a for a in args if a.split("=")[0] in (
                "--scheduler", "--numa-nodes", "--io-boost", "--slice-ms")], args)

    def test_bad_options_stop_vmmsd_naming_them(self):
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "vmms.conf"
            conf.write_text("[vmmsd]\nhvd-numa-nodes=many\n")
            cases = [
                (["--hvd-scheduler", "fifo"], "--hvd-scheduler 'fifo' is not one of share, round-robin"),
                (["--hvd-lps", "2", "--hvd-numa-nodes", "3"], "--hvd-numa-nodes 3 is out of range 1-2"),
                (["--hvd-slice-ms", "5000"], "--hvd-slice-ms 5000 is out of range 1-1000"),
                (["--config", str(conf)], "hvd-numa-nodes"),
            ]
            for args, message in cases:
                with self.subTest(args=args):
                    p = subprocess.run([str(VMMSD), "--state-dir", f"{tmp}/state", "--runtime-dir", f"{tmp}/run",
                                        "--dbus", "none", *args], capture_output=True, text=True, timeout=30)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn(message, p.stderr)
                    self.assertFalse((Path(tmp) / "run" / "hvd.sock").exists(), "nothing was started")


if __name__ == "__main__":
    unittest.main()
