#!/usr/bin/python3
"""Captures the real seeds of tests/fuzz/corpus/migrate-in/ and save-file/: boots the
bundled guest in a vmwp on a private hvd (the build's: VMMS_BUILD, default build/),
moves it live into a socket that this script reads (worker.proto MigrateOut), cancels
the move so the VM runs on, then saves it (worker.proto Save). Both are trimmed to a
few KiB, keeping every section but cutting MEMORY and DISK to a few short runs, and
their checksums made right again; edge cases are made by hand from the trimmed ones.

    VMMS_BUILD=build-x ./tests/fuzz/capture-seeds.py

The geometry is fuzz-worker.h's (FUZZ_VPS, FUZZ_MEMORY, the default paging disk). Each
seed is a flags byte (fuzz-worker.h FUZZ_KEEP_*) and the stream or file."""
import os
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from test_live_stream import Control, launch  # noqa: E402
from test_save import save  # noqa: E402
from vmms_host import HvHost  # noqa: E402

VPS, MEMORY = 2, "32MB"
PAGE = 4096
CONFIG, PARTITION, VP, VMBUS, DM, MEMORY_S, DISK, END = range(1, 9)
KEEP_CHECKSUMS, KEEP_SIZES = 1, 2


def pad(n):
    return (n + 7) & ~7


def sections(data):
    """[(type, payload)] of a stream or a file, after its 32-byte header."""
    out, at = [], 32
    while at + 24 <= len(data):
        kind, _, length = struct.unpack_from("<IIQ", data, at)
        out.append((kind, data[at + 24:at + 24 + length]))
        at += 24 + pad(length)
    return out


def header(magic, total, count):
    head = magic + struct.pack("<IIQI", 1, 32, total, count)
    return head + struct.pack("<I", zlib.crc32(head))


def section(kind, payload):
    head = struct.pack("<IIQI", kind, 0, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload + bytes(pad(len(payload)) - len(payload))


def build(magic, secs, file):
    body = b"".join(section(k, p) for k, p in secs)
    return header(magic, 32 + len(body) if file else 0, len(secs) if file else 0) + body


def runs(payload, skip=0):
    """[(gpa|kind, bytes, data)] of a MEMORY or DISK payload."""
    out, at = [], skip
    while at + 16 <= len(payload):
        raw, length = struct.unpack_from("<QQ", payload, at)
        at += 16
        data = b""
        if raw & 0xFFF == 0:
            data, at = payload[at:at + length], at + length
        out.append((raw, length, data))
    return out


def trim_runs(payload, keep, skip=0):
    """The first `keep` runs but only one data run, cut to its first page (a seed must
    stay under fuzz.sh's -max_len)."""
    out, data_runs = bytearray(payload[:skip]), 0
    for raw, length, data in runs(payload, skip)[:keep]:
        if raw & 0xFFF == 0:
            if data_runs:
                continue
            length, data, data_runs = PAGE, data[:PAGE], 1
        out += struct.pack("<QQ", raw, length) + data
    return bytes(out)


def trim(secs):
    """Every section but MEMORY and DISK as it was; the first and last MEMORY and the
    first DISK section cut to a few runs."""
    memory = [i for i, (k, _) in enumerate(secs) if k == MEMORY_S]
    disk = [i for i, (k, _) in enumerate(secs) if k == DISK]
    out = []
    for i, (k, p) in enumerate(secs):
        if k == MEMORY_S and i in (memory[0], memory[-1]):
            out.append((k, trim_runs(p, 6)))
        elif k == DISK and i == disk[0]:
            out.append((k, trim_runs(p, 2, skip=8)))
        elif k not in (MEMORY_S, DISK):
            out.append((k, p))
    return out


def capture(build_dir):
    os.environ.setdefault("VMMS_BUILD", str(build_dir))
    with HvHost(memory="512MB") as host:
        vm, control_path = launch(host, "seed", "idle", vps=VPS, memory=MEMORY)
        vm.wait_console(r"^vmbus: channel 2 storage open", timeout=60)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        received = bytearray()

        def read():
            while True:
                chunk = theirs.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        control = Control(control_path)
        reply = control.migrate_out(ours.fileno())
        ours.close()
        assert reply.error == 0, reply.error_message
        outcome, _ = control.outcome()
        assert outcome.HasField("migration_out_done"), outcome
        total = outcome.migration_out_done.bytes_sent
        deadline = time.monotonic() + 30
        while len(received) < total and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(received) == total, (len(received), total)
        for _ in range(100):  # the sender's thread may still be returning
            reply = control.request(migrate_cancel=control.worker.MigrateCancel())
            if reply.error == 0:
                break
            time.sleep(0.05)
        assert reply.error == 0, reply.error_message
        control.close()
        theirs.close()
        path = host.dir / "seed.vmrs"
        reply, _ = save(control_path, path)
        assert reply.error == 0, reply.error_message
        return bytes(received), path.read_bytes()


def seeds(stream, saved):
    s, f = trim(sections(stream)), trim(sections(saved))
    live = build(b"VMMSLIVE", s, False)
    file = build(b"VMMSVMRS", f, True)
    vp = [i for i, (k, _) in enumerate(s) if k == VP]
    first_memory = next(i for i, (k, _) in enumerate(s) if k == MEMORY_S)
    config = struct.pack("<IQQ", VPS, 32 << 20, 32 << 20)
    out = {"migrate-in": {}, "save-file": {}}
    m = out["migrate-in"]
    m["seed-captured"] = bytes([0]) + live
    m["seed-captured-exact-checksums"] = bytes([KEEP_CHECKSUMS]) + live
    m["seed-empty"] = bytes([0])
    m["seed-header-only"] = bytes([0]) + build(b"VMMSLIVE", [], False)
    m["seed-wrong-version"] = bytes([0]) + live[:8] + struct.pack("<I", 2) + live[12:]
    m["seed-wrong-geometry"] = bytes([0]) + build(b"VMMSLIVE", [(CONFIG, struct.pack("<IQQ", 1, 64 << 20,
                                                                                      64 << 20))] + s[1:], False)
    m["seed-visible-not-page"] = bytes([0]) + build(b"VMMSLIVE", [(CONFIG, config[:12] + struct.pack(
        "<Q", (16 << 20) + 1))] + s[1:], False)
    m["seed-vmbus-before-vps"] = bytes([0]) + build(b"VMMSLIVE", s[:vp[0]] + s[vp[-1] + 1:], False)
    m["seed-vp-missing"] = bytes([0]) + build(b"VMMSLIVE", s[:vp[0]] + s[vp[0] + 1:], False)
    m["seed-memory-after-partition"] = bytes([0]) + build(
        b"VMMSLIVE", s[:vp[0]] + [s[first_memory]] + s[vp[0]:], False)
    m["seed-no-end"] = bytes([0]) + build(b"VMMSLIVE", s[:-1], False)
    m["seed-end-not-empty"] = bytes([0]) + build(b"VMMSLIVE", s[:-1] + [(END, b"\0" * 8)], False)
    kinds = b"".join([struct.pack("<QQ", 0x1000 | 1, PAGE), struct.pack("<QQ", 0x2000 | 2, 2 * PAGE),
                      struct.pack("<QQ", 0x8000, PAGE) + b"\xa5" * PAGE, struct.pack("<QQ", 0x9000 | 3, PAGE)])
    m["seed-run-kinds"] = bytes([0]) + build(b"VMMSLIVE", s[:first_memory + 1] + [(MEMORY_S, kinds)] +
                                             s[first_memory + 1:], False)
    m["seed-run-outside"] = bytes([0]) + build(b"VMMSLIVE", s[:first_memory] + [(MEMORY_S, struct.pack(
        "<QQ", (32 << 20) - PAGE, 2 * PAGE) + b"\0" * 2 * PAGE)] + s[first_memory + 1:], False)
    m["seed-section-oversize"] = bytes([0]) + live[:32] + section(CONFIG, config) + struct.pack(
        "<IIQII", MEMORY_S, 0, 1 << 40, 0, 0)
    # Two ballooned pages: the DM's list (its last field) and PARTITION's count agree,
    # so the balloon goes back to hvd; and a DISK section with a page of data.
    def ballooned(secs):
        dm = next(p for k, p in secs if k == DM)
        assert dm[-8:] == bytes(8), "the captured DM state has ballooned pages already"
        extra = {DM: dm[:-8] + struct.pack("<QQQ", 2, 0x300, 0x301),
                 PARTITION: next(p for k, p in secs if k == PARTITION)[:8] + struct.pack("<Q", 2 * PAGE)}
        return [(k, extra.get(k, p)) for k, p in secs]

    def disk_run(secs):
        slots = next(p for k, p in secs if k == DISK)[:8]
        return [(k, slots + struct.pack("<QQ", PAGE, PAGE) + b"\x5a" * PAGE if k == DISK else p) for k, p in secs]

    m["seed-ballooned"] = bytes([0]) + build(b"VMMSLIVE", ballooned(s), False)
    m["seed-disk-run"] = bytes([0]) + build(b"VMMSLIVE", disk_run(s), False)
    f_ = out["save-file"]
    f_["seed-ballooned"] = bytes([0]) + build(b"VMMSVMRS", ballooned(f), True)
    f_["seed-disk-run"] = bytes([0]) + build(b"VMMSVMRS", disk_run(f), True)
    f_["seed-captured"] = bytes([0]) + file
    f_["seed-captured-exact"] = bytes([KEEP_CHECKSUMS | KEEP_SIZES]) + file
    f_["seed-empty"] = bytes([KEEP_SIZES])
    f_["seed-cut"] = bytes([KEEP_CHECKSUMS | KEEP_SIZES]) + file[:len(file) // 2]
    f_["seed-flipped"] = bytes([KEEP_CHECKSUMS | KEEP_SIZES]) + file[:-40] + bytes([file[-40] ^ 1]) + file[-39:]
    f_["seed-magic"] = bytes([0]) + b"VMMSLIVE" + file[8:]
    fvp = [i for i, (k, _) in enumerate(f) if k == VP]
    f_["seed-vp-missing"] = bytes([0]) + build(b"VMMSVMRS", f[:fvp[0]] + f[fvp[0] + 1:], True)
    f_["seed-two-configs"] = bytes([0]) + build(b"VMMSVMRS", [f[0]] + f, True)
    f_["seed-wrong-geometry"] = bytes([0]) + build(b"VMMSVMRS", [(CONFIG, struct.pack("<IQQ", 2, 64 << 20,
                                                                                      32 << 20))] + f[1:], True)
    f_["seed-trailing"] = bytes([0]) + file + b"\0" * 16
    f_["seed-count-lies"] = bytes([KEEP_SIZES]) + file[:24] + struct.pack("<I", 1000) + file[28:]
    return out


def main():
    build_dir = Path(os.environ.get("VMMS_BUILD", HERE.parents[1] / "build"))
    stream, saved = capture(build_dir)
    print(f"captured a {len(stream)}-byte stream and a {len(saved)}-byte saved file")
    for target, files in seeds(stream, saved).items():
        d = HERE / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
            print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
