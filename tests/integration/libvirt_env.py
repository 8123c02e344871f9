"""What the libvirt engine's tests share: the packages (scripts/libvirt-deps.sh when one is
missing), the test guest (tests/libvirt/make-guest.sh), and private libvirtd instances
(tests/libvirt/private-libvirtd.sh, never the system's)."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vmms_host import BUILD, SOURCE

LIBVIRT_DIR = SOURCE / "tests" / "libvirt"
GUEST_DIR = BUILD / "tests" / "libvirt-guest"
VMCTL = BUILD / "cli" / "vmctl"


def vmctl(host, *args, check=True, timeout=180):
    """vmctl ARGS against host (a VmmsdHost); check: an AssertionError naming the command
    and its output when it exits non-zero."""
    env = dict(os.environ, VMMS_SOCKET=f"unix:{host.socket}")
    r = subprocess.run([str(VMCTL), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"vmctl {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
    return r


def virsh(uri, *args):
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30)


def ensure_libvirtd():
    """libvirtd, QEMU, busybox and the libvirt-qemu account (scripts/libvirt-deps.sh when one is missing)."""
    if not (shutil.which("libvirtd") and shutil.which("virsh") and Path("/bin/busybox").exists() and
            shutil.which("qemu-system-x86_64") and subprocess.run(["getent", "passwd", "libvirt-qemu"],
                                                                  capture_output=True).returncode == 0):
        subprocess.run([str(SOURCE / "scripts" / "libvirt-deps.sh")], check=True, timeout=600)


def ensure_guest():
    """ensure_libvirtd(), then GUEST_DIR's vmlinuz and initrd.img."""
    ensure_libvirtd()
    subprocess.run([str(LIBVIRT_DIR / "make-guest.sh"), str(GUEST_DIR)], check=True, timeout=300,
                   stdout=subprocess.DEVNULL)


class PrivateLibvirtd:
    """A libvirtd of the test's own in a temporary directory; stop() destroys its domains."""

    def __init__(self, prefix="vmms-libvirtd-"):
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.dir = Path(self._tmp.name)
        self.start_daemon()

    def start_daemon(self):
        self.uri = subprocess.run([str(LIBVIRT_DIR / "private-libvirtd.sh"), "start", str(self.dir)], check=True,
                                  capture_output=True, text=True, timeout=30).stdout.strip()

    def stop_daemon(self):
        """Destroys its domains and networks and stops it; its directory stays for start_daemon()."""
        subprocess.run([str(LIBVIRT_DIR / "private-libvirtd.sh"), "stop", str(self.dir)], timeout=60)

    def virsh(self, *args):
        return virsh(self.uri, *args)

    def domains(self):
        """The names of its running domains."""
        return [n for n in self.virsh("list", "--name").stdout.split() if n]

    def stop(self):
        self.stop_daemon()
        self._tmp.cleanup()


def qemu_memory_kib(pid, ram_kib):
    """QEMU's memory from /proc/PID/smaps, KiB: rss and pss (shared pages divided among the
    processes mapping them), and the part of rss in guest RAM (the anonymous mapping of
    ram_kib, the domain's <memory>) and in TCG's translated-code buffer (the anonymous
    executable mapping; none under KVM)."""
    out = {"rss": 0, "pss": 0, "guest_ram_rss": 0, "tcg_code_rss": 0}
    anonymous = executable = False
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
            anonymous, executable = len(fields) == 5, "x" in fields[1]
            continue
        if fields[0] == "Size:":
            size = int(fields[1])
        elif fields[0] == "Rss:":
            out["rss"] += int(fields[1])
            if anonymous and size == ram_kib:
                out["guest_ram_rss"] += int(fields[1])
            elif anonymous and executable:
                out["tcg_code_rss"] += int(fields[1])
        elif fields[0] == "Pss:":
            out["pss"] += int(fields[1])
    return out
