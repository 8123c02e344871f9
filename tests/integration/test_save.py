#!/usr/bin/python3
"""Save-VM at the worker: vmwp writes a paused VM's whole state through its control
socket and exits; `vmwp --restore FILE` starts it again from there. The guest's own
checks judge the round trip: the cpu workload's paired counters, memsoak's page
patterns and pass counter, the idle guest's reference time."""
import os
import re
import signal
import subprocess
import time
import unittest

from test_dynamic_memory import WorkerControl
from vmms_host import GUEST, VMWP, HvHost, Vm, wait_for

MiB = 1 << 20


def launch(host, name, workload, vps=1, memory="64MB", boot_args=None, restore=None, tag=""):
    console = host.dir / f"{name}.console"
    control = host.dir / f"{name}{tag}.control"
    args = [str(VMWP), "--name", name, "--hvd-socket", str(host.socket), "--vps", str(vps), "--memory", memory,
            "--workload", workload, "--console-log", str(console), "--guest", str(GUEST),
            "--control-socket", str(control), "--paging-file", str(host.dir / f"{name}.paging")]
    if boot_args:
        args += ["--boot-args", boot_args]
    if restore:
        args += ["--restore", str(restore)]
    log = open(host.dir / f"{name}{tag}.vmwp.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    vm = Vm(host, name + tag, proc, console)
    host.vms.append(vm)
    return vm, control


def save(control_path, path):
    control = WorkerControl(control_path)
    request = control.worker.Request(id=1, save=control.worker.Save(path=str(path)))
    started = time.monotonic()
    control.sock.send(request.SerializeToString())
    while True:
        message = control._receive()
        if message.HasField("reply") and message.reply.id == 1:
            control.close()
            return message.reply, time.monotonic() - started


def restore(host, name, workload, path, **kwargs):
    started = time.monotonic()
    vm, control = launch(host, name, workload, restore=path, tag="-restored", **kwargs)
    wait_for(lambda: os.path.exists(control) or vm.proc.poll() is not None, 20, what="the restored worker")
    return vm, time.monotonic() - started


class SaveRestoreTest(unittest.TestCase):
    def round_trip(self, host, name, workload, **kwargs):
        """Start, let it run, save, restore; returns (vm, saved reply, console before)."""
        vm, control = launch(host, name, workload, **kwargs)
        vm.wait_console(r"^vmms-guest: boot ")
        return vm, control

    def saved(self, vm, control, path):
        reply, save_s = save(control, path)
        self.assertEqual(reply.error, 0, reply.error_message)
        self.assertEqual(vm.proc.wait(10), 0, vm.stderr())
        self.assertIn("stopped: saved", vm.stderr())
        self.assertTrue(path.exists())
        self.assertFalse(path.with_name(path.name + ".tmp").exists())
        self.assertEqual(reply.saved.file_bytes, path.stat().st_size)
        print(f"# {vm.name}: saved {reply.saved.file_bytes / MiB:.1f} MiB "
              f"({reply.saved.memory_bytes / MiB:.1f} MiB of RAM) in {save_s * 1000:.0f} ms")
        return reply

    def test_cpu_guest_continues_without_corruption(self):
        with HvHost(memory="512MB") as host:
            path = host.dir / "cpu.vmrs"
            vm, control = self.round_trip(host, "cpu", "cpu", vps=2)
            vm.wait_console(r"cpu: vp=1 batches=", timeout=30, count=2)
            self.saved(vm, control, path)
            before = [int(b) for b in re.findall(r"^cpu: vp=0 batches=(\d+)", vm.console(), re.M)]
            lines_before = len(vm.console().splitlines())
            new, restore_s = restore(host, "cpu", "cpu", path, vps=2)
            wait_for(lambda: len(new.console().splitlines()) > lines_before + 4, 30, what="output after restore")
            after = [int(b) for b in re.findall(r"^cpu: vp=0 batches=(\d+)", new.console(), re.M)]
            self.assertIsNone(new.proc.poll(), new.stderr())
            self.assertNotIn("CORRUPTION", new.console())
            self.assertNotIn("vmms-guest: boot", "\n".join(new.console().splitlines()[lines_before:]))
            new_batches = after[len(before):]
            self.assertTrue(new_batches, new.console())
            self.assertGreater(new_batches[0], before[-1], "the batch counter started over")
            print(f"# cpu: restored in {restore_s * 1000:.0f} ms; batches {before[-1]} -> {new_batches[0]}")

    def test_memsoak_patterns_survive_and_passes_continue(self):
        with HvHost(memory="512MB") as host:
            path = host.dir / "soak.vmrs"
            vm, control = self.round_trip(host, "soak", "memsoak", memory="128MB",
                                          boot_args="memsoak_mb=48 memsoak_step_mb=16")
            vm.wait_console(r"^memsoak: pass \d+", timeout=60, count=2)
            reply = self.saved(vm, control, path)
            self.assertGreater(reply.saved.memory_bytes, 40 * MiB)
            self.assertLess(path.stat().st_size, 128 * MiB, "the file is not sparse")
            passes = [int(p) for p in re.findall(r"^memsoak: pass (\d+)", vm.console(), re.M)]
            new, _ = restore(host, "soak", "memsoak", path, memory="128MB",
                             boot_args="memsoak_mb=48 memsoak_step_mb=16")
            new.wait_console(r"^memsoak: pass \d+", timeout=60, count=len(passes) + 2)
            after = [int(p) for p in re.findall(r"^memsoak: pass (\d+)", new.console(), re.M)]
            self.assertGreater(after[len(passes)], passes[-1], "the pass counter started over")
            self.assertNotIn("CORRUPTION", new.console())
            self.assertIsNone(new.proc.poll(), new.stderr())

    def test_idle_guest_time_goes_on_across_a_new_hypervisor(self):
        """A new hvd's reference clock starts near 0; the restored guest's must not."""
        with HvHost(memory="256MB") as first:
            path = first.dir / "idle.vmrs"
            vm, control = self.round_trip(first, "idle", "idle", boot_args="idle_period_ms=50")
            vm.wait_console(r"^idle: up 10s", timeout=30)
            self.saved(vm, control, path)
            data = path.read_bytes()
        with HvHost(memory="256MB") as second:
            path = second.dir / "idle.vmrs"
            path.write_bytes(data)
            (second.dir / "idle.console").write_text(vm.console())
            new, _ = restore(second, "idle", "idle", path)
            new.wait_console(r"^idle: up 20s", timeout=30)
            ups = [int(u) for u in re.findall(r"^idle: up (\d+)s", new.console(), re.M)]
            self.assertEqual(ups, sorted(ups), new.console())
            self.assertIsNone(new.proc.poll(), new.stderr())

    def test_damaged_files_are_refused_by_name(self):
        with HvHost(memory="256MB") as host:
            path = host.dir / "idle.vmrs"
            vm, control = self.round_trip(host, "idle", "idle")
            self.saved(vm, control, path)
            good = path.read_bytes()
            cases = {
                "cut": (good[: len(good) // 2], "torn or cut"),
                "flipped": (good[:-20] + bytes([good[-20] ^ 1]) + good[-19:], "checksum"),
                "magic": (b"XXXXXXXX" + good[8:], "bad magic"),
                "empty": (b"", "shorter than its header"),
            }
            for name, (data, why) in cases.items():
                with self.subTest(name):
                    bad = host.dir / f"{name}.vmrs"
                    bad.write_bytes(data)
                    new, _ = restore(host, "idle", "idle", bad)
                    self.assertNotEqual(new.proc.wait(10), 0)
                    self.assertIn(why, new.stderr())
            self.assertFalse(host.counters(0.05)["partitions"], "a refused file left a partition")

    def test_worker_killed_mid_save_leaves_no_saved_file(self):
        with HvHost(memory="512MB") as host:
            path = host.dir / "soak.vmrs"
            vm, control = self.round_trip(host, "soak", "memsoak", memory="256MB",
                                          boot_args="memsoak_mb=160 memsoak_step_mb=32")
            vm.wait_console(r"^memsoak: reached", timeout=60)
            client = WorkerControl(control)
            client.sock.send(client.worker.Request(id=1, save=client.worker.Save(path=str(path))).SerializeToString())
            tmp = path.with_name(path.name + ".tmp")
            wait_for(lambda: tmp.exists() and tmp.stat().st_size > 0, 10, interval=0.001, what="the save to begin")
            os.kill(vm.proc.pid, signal.SIGKILL)
            vm.proc.wait(10)
            self.assertFalse(path.exists(), "a killed save left a file under the saved name")
            if tmp.exists():  # what a killed worker leaves is never taken for a save
                new, _ = restore(host, "soak", "memsoak", tmp, memory="256MB")
                self.assertNotEqual(new.proc.wait(10), 0)
                self.assertIn("unusable", new.stderr())


if __name__ == "__main__":
    unittest.main()
