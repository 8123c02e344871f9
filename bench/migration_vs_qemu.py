#!/usr/bin/python3
"""Migration of a 256 MiB guest that dirties 0 %, 10 % and 50 % of its memory per second,
vmms (vmctl Move-VM between two vmmsd hosts on loopback, mutual TLS) next to QEMU
(qemu-system-x86_64 -accel tcg, QMP `migrate` to a second QEMU started with -incoming
on loopback), in the same run, case by case. bench/migration.py measures the worker's half
alone (two workers on one hvd over a socketpair).

The guests do the same thing. vmms: the bundled guest's memsoak with memsoak_mb=224
memsoak_rate_kb=N; QEMU: bench/migration/migration-pvh.c. Both mark 224 MiB of pages,
then rewrite them in order at N KiB/s (N = 0, 10 % and 50 % of 256 MiB per second) and
print a tick with their own clock every 2 ms to their console (vmms: the console log;
QEMU: debugcon to a file). A thread polls both hosts' console files every millisecond.

Per move it records:
- total: vmms: MoveVmResult.time_elapsed_ms; QEMU: query-migrate's total-time.
- host_downtime: vmms: MoveVmResult.downtime_ms (pause on the source to running on the
  destination); QEMU: query-migrate's downtime.
- guest_stall: the guest's side as the host sees it: the largest wall-clock gap between
  two consecutive ticks arriving (polled every 1 ms, so it reads up to ~2 ms high).
- guest_clock_gap: the largest gap between consecutive ticks in the guest's own clock.
  Both vmms (the saved reference time goes on from the saved instant) and QEMU (the TSC
  offset migrates) stop the guest's clock while it is paused, so this stays near the
  2 ms tick period: the guest cannot see its downtime in its own clock. It is reported
  to show that, and that the clock never went backwards.
- bytes_over_ram: bytes sent ÷ 256 MiB (vmms: data_processed; QEMU: ram.transferred).
- total_over_ideal: total ÷ (256 MiB ÷ the loopback TCP bandwidth measured here);
  total_over_ideal_tls: the same over mutual TLS with the hosts' certificates, the kind of
  link Move-VM uses (QEMU's is plain TCP). Both links are measured in the run, under the
  same load.
- kind: what Move-VM did, from MoveVmResult.mode ("quick" = save, send, restore; "live"
  = pre-copy); a main whose MoveVmResult has no mode only does quick migration.

Usage: migration_vs_qemu.py [reps] [percents] (default 3 and 0,10,50). QEMU comes from
bench/setup; certificates from openssl. QEMU runs with max-bandwidth raised to the link's (its default caps at
128 MiB/s) and its default downtime-limit (300 ms), vmms with its default maximum
downtime. Prints one JSON object."""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from test_access import make_ca, make_cert  # noqa: E402
from vmms_host import BUILD, wait_for  # noqa: E402
from vmmsd_host import VmmsdHost  # noqa: E402

MiB = 1 << 20
RAM = 256 * MiB
SOAK_MB = 224
PERCENTS = (0, 10, 50)
TICK = re.compile(rb"^(?:memsoak: )?tick (\d+)", re.M)
HOST_EXT = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=clientAuth,serverAuth"
VMCTL = BUILD / "cli" / "vmctl"
PVH = BUILD / "bench" / "migration" / "bench-migration-pvh"
WARMUP_S = 2.0   # of ticks (and dirtying) before the move
AFTER_S = 1.0    # of ticks on the destination after it


def rate_kb(percent):
    return RAM // 1024 * percent // 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_bps(nbytes=512 * MiB, certs=None):
    """Loopback TCP bandwidth: one stream of nbytes, 1 MiB writes. With `certs` (the hosts'
    directory), over mutual TLS with hosta's and hostb's certificates, as Move-VM's link."""
    import ssl
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = [0]
    if certs:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_cert_chain(str(certs / "hostb.pem"), str(certs / "hostb.key"))
        client = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        client.check_hostname = False
        client.load_cert_chain(str(certs / "hosta.pem"), str(certs / "hosta.key"))

    def receive():
        conn, _ = srv.accept()
        if certs:
            conn = server.wrap_socket(conn, server_side=True)
        buf = bytearray(MiB)
        with conn:
            while got[0] < nbytes:
                n = conn.recv_into(buf)
                if not n:
                    break
                got[0] += n

    t = threading.Thread(target=receive)
    t.start()
    chunk = b"\x5a" * MiB
    with socket.create_connection(srv.getsockname()) as raw:
        c = client.wrap_socket(raw) if certs else raw
        start = time.monotonic()
        for _ in range(nbytes // MiB):
            c.sendall(chunk)
        t.join()
        elapsed = time.monotonic() - start
    srv.close()
    return nbytes / elapsed


class TickWatch:
    """Polls console files every millisecond for tick lines; keeps (host time, guest ns)."""

    def __init__(self, paths):
        self.paths = paths
        self.offsets = {p: 0 for p in paths}
        self.partial = {p: b"" for p in paths}
        self.ticks = []
        self.corrupt = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _poll(self):
        now = time.monotonic()
        for p in self.paths:
            try:
                with open(p, "rb") as f:
                    f.seek(self.offsets[p])
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self.offsets[p] += len(data)
            data = self.partial[p] + data
            cut = data.rfind(b"\n") + 1
            self.partial[p] = data[cut:]
            whole = data[:cut]
            if b"CORRUPTION" in whole:
                self.corrupt = True
            self.ticks.extend((now, int(m.group(1))) for m in TICK.finditer(whole))

    def _run(self):
        while not self._stop.is_set():
            self._poll()
            time.sleep(0.001)
        self._poll()

    def __enter__(self):
        for p in self.paths:  # only what comes from now on
            self.offsets[p] = p.stat().st_size if p.exists() else 0
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self):
        if len(self.ticks) < 2:
            raise SystemExit(f"migration_vs_qemu: only {len(self.ticks)} ticks seen")
        stall = max(b[0] - a[0] for a, b in zip(self.ticks, self.ticks[1:]))
        clock = max(b[1] - a[1] for a, b in zip(self.ticks, self.ticks[1:]))
        monotonic = all(b[1] > a[1] for a, b in zip(self.ticks, self.ticks[1:]))
        return {"guest_stall_ms": round(stall * 1000, 1), "guest_clock_gap_ms": round(clock / 1e6, 1),
                "guest_clock_monotonic": monotonic, "ticks": len(self.ticks)}


def last_object(text):
    """The last of the JSON objects vmctl printed (Move-VM -Json prints its progress first)."""
    decoder, pos, obj = json.JSONDecoder(), 0, None
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        obj, pos = decoder.raw_decode(text, pos)
    if not obj or obj.get("phase") != "completed":
        raise SystemExit(f"migration_vs_qemu: Move-VM did not complete: {text[-2000:]}")
    return obj


def steps_line(log, name):
    """The last "steps (ms)" line vmmsd logged for VM `name`: where the move's time went."""
    found = re.findall(rf"(?:Move-VM|incoming move of) '{re.escape(name)}' steps \(ms\):(.*)", log)
    return found[-1].strip() if found else None


# --- vmms ---------------------------------------------------------------------------

class VmmsPair:
    def __init__(self, certs):
        self.certs = certs
        self.hosts = [self._host("hosta", "CN=hostb"), self._host("hostb", "CN=hosta")]

    def _host(self, name, peers):
        d = self.certs
        port = free_port()
        conf = d / f"{name}.conf"
        conf.write_text(f"[access]\nmigration-peers={peers}\n")
        host = VmmsdHost(hvd_memory="1GB", extra=(
            "--config", str(conf), "--tls-cert", str(d / f"{name}.pem"), "--tls-key", str(d / f"{name}.key"),
            "--tls-ca", str(d / "ca.pem"), "--migration-listen", f"127.0.0.1:{port}", "--migration-name", name))
        host.address = f"127.0.0.1:{port}"
        wait_for(lambda: host.api.GetHost(host.pb.GetHostRequest(), timeout=5).memory_pool_bytes > 0, 30,
                 what=f"{name}'s hypervisor pool")
        return host

    def close(self):
        for h in self.hosts:
            h.close()

    def vmctl(self, host, *args):
        env = dict(os.environ, VMMS_SOCKET=str(host.socket))
        out = subprocess.run([str(VMCTL), *args], capture_output=True, text=True, timeout=600, env=env)
        if out.returncode != 0:
            raise SystemExit(f"migration_vs_qemu: vmctl {' '.join(args)}: {out.stderr}\n{host.log()[-3000:]}")
        return out.stdout

    def run(self, percent, rep):
        a, b = self.hosts
        pb = a.pb
        name = f"mig{percent}r{rep}"
        vm = a.create(name, startup=RAM, workload="memsoak",
                      boot_args=f"memsoak_mb={SOAK_MB} memsoak_step_mb={SOAK_MB} memsoak_step_ms=0 "
                                f"memsoak_rate_kb={rate_kb(percent)}")
        a.api.StartVm(pb.VmRef(vm=name), timeout=30)
        wait_for(lambda: "memsoak: tick" in a.console(vm.id), 300, interval=0.2, what="the first tick")
        logs = [h.state / "logs" / f"{vm.id}.console.log" for h in (a, b)]
        with TickWatch(logs) as watch:
            time.sleep(WARMUP_S)
            moved = last_object(self.vmctl(a, "Move-VM", name, "-DestinationHost", b.address, "-Json"))
            wait_for(lambda: b.console(vm.id).count("memsoak: tick") * 0.002 >= AFTER_S, 60, interval=0.1,
                     what="ticks on the destination")
        console = b.console(vm.id)
        self.vmctl(b, "Stop-VM", name, "-TurnOff")
        self.vmctl(b, "Remove-VM", name, "-Force")
        out = {"total_ms": int(moved.get("timeElapsedMs", 0)), "host_downtime_ms": int(moved.get("downtimeMs", 0)),
               "bytes_sent": int(moved.get("dataProcessed", 0)),
               "kind": moved.get("mode", "quick"), **watch.summary()}
        for k in ("memoryIteration", "autoConvergeThrottle", "memoryBps"):
            if k in moved:
                out[k] = int(moved[k])
        out["corruption"] = watch.corrupt or "CORRUPTION" in console
        out["steps"] = {role: steps_line(h.log(), name) for role, h in (("source", a), ("destination", b))}
        return out


# --- QEMU ---------------------------------------------------------------------------

class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        wait_for(lambda: self._connect(path), 30, interval=0.05, what="QEMU's QMP socket")
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.call("qmp_capabilities")

    def _connect(self, path):
        try:
            self.sock.connect(str(path))
            return True
        except OSError:
            return False

    def _read(self):
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def call(self, cmd, **args):
        self.file.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise SystemExit(f"migration_vs_qemu: QMP {cmd}: {reply['error']}")
        return reply["return"]

    def close(self):
        self.sock.close()


def qemu_run(qemu, tmp, percent, link, rep):
    port = free_port()
    procs = []
    try:
        for role in ("src", "dst"):
            args = [qemu, "-accel", "tcg", "-cpu", "qemu64", "-m", "256M", "-display", "none", "-nodefaults",
                    "-no-reboot", "-kernel", str(PVH), "-append", f"rate_kb={rate_kb(percent)}",
                    "-debugcon", f"file:{tmp}/{role}{rep}.log",
                    "-qmp", f"unix:{tmp}/{role}{rep}.qmp,server=on,wait=off"]
            if role == "dst":
                args += ["-incoming", f"tcp:127.0.0.1:{port}"]
            with open(f"{tmp}/{role}{rep}.err", "w") as err:
                procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err))
        src_log, dst_log = Path(f"{tmp}/src{rep}.log"), Path(f"{tmp}/dst{rep}.log")
        src, dst = Qmp(f"{tmp}/src{rep}.qmp"), Qmp(f"{tmp}/dst{rep}.qmp")
        wait_for(lambda: src_log.exists() and b"tick" in src_log.read_bytes(), 300, interval=0.2,
                 what="the QEMU guest's first tick")
        src.call("migrate-set-parameters", **{"max-bandwidth": int(link) * 2})
        with TickWatch([src_log, dst_log]) as watch:
            time.sleep(WARMUP_S)
            src.call("migrate", uri=f"tcp:127.0.0.1:{port}")
            info = wait_for(lambda: (lambda i: i if i.get("status") in ("completed", "failed") else None)(
                src.call("query-migrate")), 600, interval=0.05, what="QEMU's migration")
            if info["status"] != "completed":
                raise SystemExit(f"migration_vs_qemu: QEMU's migration failed: {info}")
            wait_for(lambda: dst_log.exists() and dst_log.read_bytes().count(b"tick") * 0.002 >= AFTER_S, 60,
                     interval=0.1, what="ticks on the destination QEMU")
        src.close()
        dst.close()
        ram = info["ram"]
        return {"total_ms": info["total-time"], "host_downtime_ms": info["downtime"],
                "bytes_sent": ram["transferred"], "kind": "live", "dirty_sync_count": ram.get("dirty-sync-count"),
                **watch.summary(),
                "corruption": watch.corrupt or b"CORRUPTION" in dst_log.read_bytes()}
    finally:
        for p in procs:
            p.kill()
            p.wait()


# --- summary ------------------------------------------------------------------------

def summarize(samples, ideal_ms, ideal_tls_ms):
    def med(k):
        return statistics.median(s[k] for s in samples)

    out = {k: med(k) for k in ("total_ms", "host_downtime_ms", "guest_stall_ms", "guest_clock_gap_ms")}
    out["bytes_over_ram"] = round(med("bytes_sent") / RAM, 3)
    out["total_over_ideal"] = round(out["total_ms"] / ideal_ms, 2)
    out["total_over_ideal_tls"] = round(out["total_ms"] / ideal_tls_ms, 2)
    out["kind"] = sorted({s["kind"] for s in samples})
    out["guest_clock_monotonic"] = all(s["guest_clock_monotonic"] for s in samples)
    out["corruption"] = any(s["corruption"] for s in samples)
    out["samples"] = samples
    return out


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    percents = tuple(int(p) for p in sys.argv[2].split(",")) if len(sys.argv) > 2 else PERCENTS
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise SystemExit("migration_vs_qemu: qemu-system-x86_64 is missing; run bench/setup")
    if not shutil.which("openssl"):
        raise SystemExit("migration_vs_qemu: openssl is missing; run scripts/install-deps.sh")
    with tempfile.TemporaryDirectory(prefix="vmms-bench-migration-") as tmp:
        d = Path(tmp)
        make_ca(d, "ca")
        for name in ("hosta", "hostb"):
            make_cert(d, "ca", name, f"/CN={name}", HOST_EXT)
        link = statistics.median(link_bps() for _ in range(3))
        link_tls = statistics.median(link_bps(certs=d) for _ in range(3))
        ideal_ms, ideal_tls_ms = RAM / link * 1000, RAM / link_tls * 1000
        pair = VmmsPair(d)
        raw = {"vmms": {p: [] for p in percents}, "qemu": {p: [] for p in percents}}
        try:
            for rep in range(reps):
                for p in percents:  # alternate, so load on the machine hits both alike
                    raw["vmms"][p].append(pair.run(p, rep))
                    raw["qemu"][p].append(qemu_run(qemu, tmp, p, link, rep))
        finally:
            pair.close()
    cases = {}
    for p in percents:
        case = {"dirty_percent_per_s": p, "dirty_kib_per_s": rate_kb(p)}
        for engine in ("vmms", "qemu"):
            case[engine] = summarize(raw[engine][p], ideal_ms, ideal_tls_ms)
        v = case["vmms"]
        case["targets_vmms"] = {"total_le_2x_ideal": v["total_over_ideal"] <= 2.0,
                                "total_le_2x_ideal_tls": v["total_over_ideal_tls"] <= 2.0}
        if p in (0, 10):
            case["targets_vmms"]["downtime_le_30ms"] = max(v["host_downtime_ms"], v["guest_stall_ms"]) <= 30
        cases[f"dirty_{p}pct"] = case
    kinds = sorted({k for c in cases.values() for k in c["vmms"]["kind"]})
    print(json.dumps({
        "benchmark": "migration_vs_qemu", "reps": reps, "guest_ram_bytes": RAM, "soaked_bytes": SOAK_MB * MiB,
        "vmms_kind": kinds[0] if len(kinds) == 1 else kinds,
        "vmms_kind_note": "quick: Move-VM saves the VM, sends the state and restores it (the guest is paused "
                          "for the whole transfer); live: pre-copy",
        "link_bytes_per_s": round(link), "ideal_ms": round(ideal_ms, 1),
        "link_tls_bytes_per_s": round(link_tls), "ideal_tls_ms": round(ideal_tls_ms, 1),
        "ideal_note": "ideal: RAM / one plain TCP stream on loopback (QEMU's kind of link); ideal_tls: "
                      "the same over mutual TLS with the hosts' certificates (Move-VM's kind of link)",
        "qemu": {"max_bandwidth": round(link * 2), "downtime_limit_ms": 300, "accel": "tcg"},
        "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
