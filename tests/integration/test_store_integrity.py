"""vmmsd runs only on a store that is whole and its own: an empty file, a damaged
one, or another store's -wal beside it are refused with a message that says what to
do, and nothing is written to them; a backup taken while vmmsd runs restores every
VM; one vmmsd per state directory."""
import hashlib
import os
import random
import shutil
import subprocess
import unittest

from vmmsd_host import VMMSD, VmmsdHost


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vmmsd(host, *args):
    """vmmsd on host's directories with `args`, expected to exit by itself."""
    return subprocess.run([*host.args, *args], capture_output=True, text=True, timeout=60)


def names(host):
    return sorted(vm.name for vm in host.api.ListVms(host.pb.ListVmsRequest(), timeout=5).vms)


class StoreIntegrityTest(unittest.TestCase):
    def stopped_host_with(self, host, vm_names):
        for name in vm_names:
            host.create(name)
        host.proc.terminate()
        host.proc.wait(timeout=10)
        return host.state / "vmms.db"

    def test_an_empty_store_file_is_refused_unless_init_store(self):
        with VmmsdHost() as host:
            db = self.stopped_host_with(host, ["a"])
            db.write_bytes(b"")
            p = vmmsd(host)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("is an empty file", p.stderr)
            self.assertIn("--init-store", p.stderr)
            self.assertEqual(db.stat().st_size, 0)  # nothing written over it
            host.args.append("--init-store")
            host.start()
            self.assertEqual(names(host), [])

    def test_a_missing_store_where_one_was_is_refused(self):
        with VmmsdHost() as host:
            db = self.stopped_host_with(host, ["a"])
            db.unlink()
            p = vmmsd(host)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("is missing", p.stderr)
            self.assertFalse(db.exists())

    def test_a_damaged_store_is_refused_and_left_as_it_was(self):
        with VmmsdHost() as host:
            db = self.stopped_host_with(host, [f"vm{i}" for i in range(40)])
            data = bytearray(db.read_bytes())
            rng = random.Random(7)
            page = 4096
            for n in range(1, len(data) // page):  # every page but the header's
                for _ in range(64):
                    data[n * page + rng.randrange(page)] = rng.randrange(256)
            db.write_bytes(bytes(data))
            before = sha(db)
            p = vmmsd(host)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("damaged", p.stderr)
            self.assertIn("--restore", p.stderr)
            self.assertEqual(sha(db), before)

    def test_another_stores_wal_is_refused_and_not_replayed(self):
        with VmmsdHost() as mine, VmmsdHost() as other:
            db = self.stopped_host_with(mine, ["only-one"])
            for i in range(30):
                other.create(f"theirs{i}")
            other.kill9()  # its WAL keeps the VMs, not yet checkpointed
            wal = other.state / "vmms.db-wal"
            self.assertGreater(wal.stat().st_size, 0)
            shutil.copy(wal, mine.state / "vmms.db-wal")
            before = sha(db)
            p = vmmsd(mine)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("not the one this state directory had", p.stderr)
            self.assertEqual(sha(db), before)

    def test_a_backup_taken_while_running_restores_every_vm(self):
        with VmmsdHost() as host:
            for i in range(5):
                host.create(f"keep{i}")
            backup = host.dir / "backup.db"
            p = vmmsd(host, "--backup", str(backup))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("backed up", p.stdout)
            host.create("after-backup")
            # A restore under a running vmmsd is refused.
            p = vmmsd(host, "--restore", str(backup))
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("another vmmsd", p.stderr)
            host.proc.terminate()
            host.proc.wait(timeout=10)
            db = host.state / "vmms.db"
            db.write_bytes(os.urandom(8192))  # the disk ate it
            p = vmmsd(host, "--restore", str(backup))
            self.assertEqual(p.returncode, 0, p.stderr)
            host.start()
            self.assertEqual(names(host), [f"keep{i}" for i in range(5)])

    def test_a_second_vmmsd_on_one_state_directory_is_refused(self):
        with VmmsdHost() as host:
            args = [a for a in host.args]
            sock = args.index("--runtime-dir") + 1
            args[sock] = str(host.dir / "run2")
            p = subprocess.run(args, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("another vmmsd", p.stderr)
            self.assertIn(str(host.proc.pid), p.stderr)


if __name__ == "__main__":
    unittest.main()
