#!/usr/bin/python3
"""Live migration at the worker (worker.proto's "Live migration" contract): a source
vmwp sends its running VM over a socketpair (MigrateOut with the fd on its control
socket) to a destination vmwp started with --incoming-fd; the destination resumes and
the source commits. The guests' own checks judge it: memsoak's page patterns and pass
counter, the cpu workload's paired counters, the idle guest's reference time."""
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from test_dynamic_memory import RootClient, WorkerControl
from vmms_host import GUEST, VMWP, HvHost, Vm, wait_for

MiB = 1 << 20


def launch(host, name, workload, vps=1, memory="64MB", boot_args=None, tag="", incoming=None):
    """A vmwp with a control socket; `incoming`: the fd it receives a migration on."""
    console = host.dir / f"{name}{tag}.console"
    control = host.dir / f"{name}{tag}.control"
    args = [str(VMWP), "--name", name, "--hvd-socket", str(host.socket), "--vps", str(vps), "--memory", memory,
            "--workload", workload, "--console-log", str(console), "--guest", str(GUEST),
            "--control-socket", str(control), "--paging-file", str(host.dir / f"{name}{tag}.paging")]
    if boot_args:
        args += ["--boot-args", boot_args]
    if incoming is not None:
        args += ["--incoming-fd", str(incoming)]
    log = open(host.dir / f"{name}{tag}.vmwp.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            pass_fds=(incoming,) if incoming is not None else ())
    log.close()
    vm = Vm(host, name + tag, proc, console)
    host.vms.append(vm)
    return vm, control


class Control(WorkerControl):
    def request(self, **body):
        request = self.worker.Request(id=self.next_id, **body)
        self.next_id += 1
        self.sock.send(request.SerializeToString())
        return self.reply(request.id)

    def reply(self, request_id):
        while True:
            message = self._receive()
            if message.HasField("reply") and message.reply.id == request_id:
                return message.reply

    def migrate_out(self, fd, **options):
        request = self.worker.Request(id=self.next_id, migrate_out=self.worker.MigrateOut(**options))
        self.next_id += 1
        socket.send_fds(self.sock, [request.SerializeToString()], [fd])
        return self.reply(request.id)

    def outcome(self, timeout=120):
        """MigrationProgress reports until MigrationOutDone or MigrationOutFailed."""
        progress = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._receive()
            if message.HasField("migration_progress"):
                progress.append(message.migration_progress)
            elif message.HasField("migration_out_done") or message.HasField("migration_out_failed"):
                return message, progress
        raise AssertionError("no migration outcome")


class LiveStreamTest(unittest.TestCase):
    def migrate(self, host, name, workload, ready, vps=1, memory="64MB", boot_args=None, **options):
        """Starts the VM, waits for `ready` on its console, migrates it to a second
        worker on the same hvd; returns (source, destination, done, progress, resumed_ns)."""
        src, src_control = launch(host, name, workload, vps=vps, memory=memory, boot_args=boot_args)
        src.wait_console(ready, timeout=60, count=2)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        dst, dst_control = launch(host, name, workload, vps=vps, memory=memory, boot_args=boot_args, tag="-dst",
                                  incoming=theirs.fileno())
        theirs.close()
        control = Control(src_control)
        reply = control.migrate_out(ours.fileno(), **options)
        ours.close()
        self.assertEqual(reply.error, 0, reply.error_message)
        outcome, progress = control.outcome()
        self.assertTrue(outcome.HasField("migration_out_done"), outcome)
        done = outcome.migration_out_done
        self.assertIsNone(src.proc.poll(), src.stderr())
        wait_for(lambda: os.path.exists(dst_control) or dst.proc.poll() is not None, 30, what="the destination")
        self.assertIsNone(dst.proc.poll(), dst.stderr())
        incoming = Control(dst_control)
        self.assertTrue(incoming.hello.paused)
        self.assertEqual(incoming.hello.migration, incoming.worker.MIGRATION_INCOMING_DONE)
        received = incoming._receive()
        self.assertTrue(received.HasField("incoming_done"), received)
        self.assertEqual(received.incoming_done.bytes_received, done.bytes_sent)
        resumed = incoming.request(resume=incoming.worker.Resume())
        self.assertEqual(resumed.error, 0, resumed.error_message)
        finished = control.request(migrate_finish=control.worker.MigrateFinish())
        self.assertEqual(finished.error, 0, finished.error_message)
        self.assertEqual(src.proc.wait(10), 0, src.stderr())
        self.assertIn("stopped: migrated", src.stderr())
        downtime_ms = (resumed.resumed_unix_ns - done.paused_unix_ns) / 1e6
        print(f"# {name}: {done.bytes_sent / MiB:.1f} MiB in {done.rounds} rounds, {done.duration_ms} ms; "
              f"data {done.data_pages} zero {done.zero_pages} discarded {done.discarded_pages} pages; "
              f"paused->END {done.paused_ns / 1e6:.1f} ms, paused->resumed {downtime_ms:.1f} ms, "
              f"throttle max {done.max_throttle_percent} %")
        self.assertGreater(downtime_ms, 0)
        self.assertGreater(len(progress), 0)
        return src, dst, done, progress, control, incoming

    def test_memsoak_pages_survive_the_move(self):
        with HvHost(memory="1GB") as host:
            boot = "memsoak_mb=48 memsoak_step_mb=16"
            src, dst, done, progress, *_ = self.migrate(host, "soak", "memsoak", r"^memsoak: pass \d+",
                                                        memory="128MB", boot_args=boot)
            passes = [int(p) for p in re.findall(r"^memsoak: pass (\d+)", src.console(), re.M)]
            dst.wait_console(r"^memsoak: pass \d+", timeout=60, count=2)
            after = [int(p) for p in re.findall(r"^memsoak: pass (\d+)", dst.console(), re.M)]
            self.assertGreater(after[0], passes[-1], "the pass counter started over")
            self.assertNotIn("CORRUPTION", dst.console())
            self.assertIsNone(dst.proc.poll(), dst.stderr())
            self.assertGreaterEqual(done.rounds, 1)
            # Holes went as nothing and zero pages as records: the stream is the data
            # pages sent and little more.
            self.assertGreater(done.data_pages, 48 * MiB // 4096)
            self.assertLess(done.bytes_sent, done.data_pages * 4096 * 1.01 + MiB)
            self.assertGreater(done.zero_pages, 0)

    def test_cpu_counters_stay_paired(self):
        with HvHost(memory="1GB") as host:
            src, dst, *_ = self.migrate(host, "cpu", "cpu", r"cpu: vp=1 batches=", vps=2)
            before = [int(b) for b in re.findall(r"^cpu: vp=0 batches=(\d+)", src.console(), re.M)]
            dst.wait_console(r"^cpu: vp=0 batches=", timeout=30, count=2)
            after = [int(b) for b in re.findall(r"^cpu: vp=0 batches=(\d+)", dst.console(), re.M)]
            self.assertGreater(after[0], before[-1], "the batch counter started over")
            self.assertNotIn("CORRUPTION", dst.console())
            self.assertNotIn("vmms-guest: boot", dst.console())
            self.assertIsNone(dst.proc.poll(), dst.stderr())

    def test_idle_guest_time_never_goes_back(self):
        with HvHost(memory="512MB") as host:
            src, dst, *_ = self.migrate(host, "idle", "idle", r"^idle: up \d+s", boot_args="idle_period_ms=50")
            ups_before = [int(u) for u in re.findall(r"^idle: up (\d+)s", src.console(), re.M)]
            dst.wait_console(r"^idle: up \d+s", timeout=30, count=2)
            ups_after = [int(u) for u in re.findall(r"^idle: up (\d+)s", dst.console(), re.M)]
            ups = ups_before + ups_after
            self.assertEqual(ups, sorted(ups), ups)
            self.assertGreaterEqual(ups_after[0], ups_before[-1])

    def start_slow_migration(self, host):
        """A memsoak VM migrating over a slow link (1 MiB/s), which keeps it in pre-copy
        long enough to act on it; returns (source, its control, the stream's far end)."""
        src, src_control = launch(host, "soak", "memsoak", memory="128MB",
                                  boot_args="memsoak_mb=48 memsoak_step_mb=16")
        src.wait_console(r"^memsoak: pass \d+", timeout=60)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control = Control(src_control)
        reply = control.migrate_out(ours.fileno(), max_bandwidth_bytes_per_s=MiB)
        ours.close()
        self.assertEqual(reply.error, 0, reply.error_message)
        return src, control, theirs

    def test_cancel_keeps_the_source_running(self):
        with HvHost(memory="512MB") as host:
            src, control, theirs = self.start_slow_migration(host)
            busy = control.request(save=control.worker.Save(path=str(host.dir / "x.vmrs")))
            self.assertEqual(busy.error, -16, busy.error_message)  # EBUSY
            cancel = control.request(migrate_cancel=control.worker.MigrateCancel())
            self.assertEqual(cancel.error, 0, cancel.error_message)
            outcome, _ = control.outcome()
            self.assertTrue(outcome.HasField("migration_out_failed"), outcome)
            self.assertTrue(outcome.migration_out_failed.cancelled)
            self.assertEqual(theirs.recv(1 << 20, socket.MSG_DONTWAIT)[:8], b"VMMSLIVE")
            passes = len(re.findall(r"^memsoak: pass \d+", src.console(), re.M))
            src.wait_console(r"^memsoak: pass \d+", timeout=60, count=passes + 1)
            self.assertNotIn("CORRUPTION", src.console())
            self.assertIsNone(src.proc.poll(), src.stderr())
            theirs.close()

    def test_a_peer_that_goes_away_fails_the_migration_and_the_vm_runs_on(self):
        with HvHost(memory="512MB") as host:
            src, control, theirs = self.start_slow_migration(host)
            self.assertEqual(theirs.recv(8, socket.MSG_WAITALL), b"VMMSLIVE")
            theirs.close()
            outcome, _ = control.outcome()
            self.assertTrue(outcome.HasField("migration_out_failed"), outcome)
            self.assertFalse(outcome.migration_out_failed.cancelled)
            self.assertIn("went away", outcome.migration_out_failed.reason)
            # Not paused, and a new migration may begin: the first one is over.
            self.assertEqual(control.request(pause=control.worker.Pause()).error, 0)
            self.assertEqual(control.request(resume=control.worker.Resume()).error, 0)
            passes = len(re.findall(r"^memsoak: pass \d+", src.console(), re.M))
            src.wait_console(r"^memsoak: pass \d+", timeout=60, count=passes + 1)
            self.assertNotIn("CORRUPTION", src.console())
            self.assertIsNone(src.proc.poll(), src.stderr())

    def test_damaged_streams_are_refused_by_name(self):
        with HvHost(memory="512MB") as host:
            src, src_control = launch(host, "idle", "idle")
            src.wait_console(r"^vmms-guest: boot ")
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            control = Control(src_control)
            self.assertEqual(control.migrate_out(ours.fileno()).error, 0)
            ours.close()
            chunks = []
            while True:
                data = theirs.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
            good = b"".join(chunks)
            outcome, _ = control.outcome()
            self.assertTrue(outcome.HasField("migration_out_done"), outcome)
            self.assertEqual(control.request(migrate_cancel=control.worker.MigrateCancel()).error, 0)
            cases = {
                "cut": (good[: len(good) // 2], "cut short"),
                "flipped": (good[:-40] + bytes([good[-40] ^ 1]) + good[-39:], "checksum"),
                "magic": (b"XXXXXXXX" + good[8:], "bad magic"),
                "empty": (b"", "cut short"),
            }
            for case, (data, why) in cases.items():
                with self.subTest(case):
                    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                    dst, _ = launch(host, "idle", "idle", tag=f"-{case}", incoming=b.fileno())
                    b.close()
                    try:
                        a.sendall(data)
                    except BrokenPipeError:
                        pass
                    a.close()
                    self.assertEqual(dst.proc.wait(20), 5, dst.stderr())
                    self.assertIn("incoming migration refused", dst.stderr())
                    self.assertIn(why, dst.stderr())
            names = [p["name"] for p in host.counters(0.05)["partitions"]]
            self.assertEqual(names, ["idle"], "a refused stream left a partition")
            self.assertIsNone(src.proc.poll(), src.stderr())


class DirtyLogRequestTest(unittest.TestCase):
    """hvd's DirtyLogStart/Harvest/Stop on the wire, checked like every root request."""

    def test_dirty_log_requests_are_checked(self):
        with HvHost(memory="256MB") as host:
            owner, other = RootClient(host), RootClient(host)
            pid, _ = owner.create("tracked", 32 * MiB, 64 * MiB)
            hv = owner.hv
            cases = [
                # (who, request, expected errno, words in the message)
                (owner, dict(dirty_log_harvest=hv.DirtyLogHarvest(partition_id=pid)), -2, "not tracked"),
                (owner, dict(dirty_log_stop=hv.DirtyLogStop(partition_id=pid)), -2, "not tracked"),
                (owner, dict(dirty_log_start=hv.DirtyLogStart(partition_id=pid)), 0, ""),
                (owner, dict(dirty_log_start=hv.DirtyLogStart(partition_id=pid)), -16, "tracked already"),
                (other, dict(dirty_log_harvest=hv.DirtyLogHarvest(partition_id=pid)), None,
                 "does not exist on this connection"),
                (other, dict(dirty_log_stop=hv.DirtyLogStop(partition_id=pid)), None,
                 "does not exist on this connection"),
                (owner, dict(dirty_log_harvest=hv.DirtyLogHarvest(partition_id=pid + 100)), None,
                 "does not exist on this connection"),
            ]
            for who, body, errno, words in cases:
                with self.subTest(body=str(body), who="owner" if who is owner else "other"):
                    reply, _ = who.call(**body)
                    if errno is None:
                        self.assertLess(reply.error, 0)
                    else:
                        self.assertEqual(reply.error, errno, reply.error_message)
                    self.assertIn(words, reply.error_message)
            # A harvest covers the visible RAM (32 MiB: 8192 pages), then nothing past it.
            reply, _ = owner.call(dirty_log_harvest=hv.DirtyLogHarvest(partition_id=pid))
            self.assertEqual((reply.dirty_log.pages, len(reply.dirty_log.bitmap)), (8192, 1024))
            reply, _ = owner.call(dirty_log_harvest=hv.DirtyLogHarvest(partition_id=pid, first_page=1 << 60))
            self.assertEqual((reply.error, reply.dirty_log.pages), (0, 0))
            self.assertEqual(owner.call(dirty_log_stop=hv.DirtyLogStop(partition_id=pid))[0].error, 0)
            owner.close()
            other.close()


if __name__ == "__main__":
    unittest.main()
