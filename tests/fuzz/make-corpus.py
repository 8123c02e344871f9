#!/usr/bin/python3
"""Writes the seed inputs of tests/fuzz/corpus/<target>/ (the committed corpus also holds
inputs the fuzzer found, named regress-*; this script leaves those alone).

    ./tests/fuzz/make-corpus.py [TARGET…]

Seeds are what a well-behaved peer sends, so the fuzzer starts from deep paths; the
encodings follow hv-vmbus.h, hv-abi.h and proto/*.proto, written out here by hand (a
tiny protobuf encoder) so no generated code is needed."""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = 4096


# ---- protobuf wire format ----

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_int(field, n):
    return varint(field << 3) + varint(n)


def pb_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def pb_packed(field, values):
    return pb_bytes(field, b"".join(varint(v) for v in values))


# ---- vmbus: a guest program (fuzz-vmbus.c enum Op) ----

OP_INITIATE, OP_OPEN, OP_MESSAGE, OP_SEND, OP_SIGNAL, OP_SCRIBBLE, OP_ADJUST, OP_DRAIN = range(8)
MESSAGE_PFN = 16


def vb_initiate(pfn=MESSAGE_PFN):
    return bytes([OP_INITIATE, 0, pfn])


def vb_open(channel, base, ring_pages=4):
    return bytes([OP_OPEN, 0, base, channel, ring_pages])


def vb_send(channel, ptype, payload):
    return bytes([OP_SEND, channel - 1]) + struct.pack("<HH", ptype, len(payload)) + payload


def vb_signal(connection):
    return bytes([OP_SIGNAL, connection])


def vb_adjust(units):
    return bytes([OP_ADJUST, units & 0xFF])


def vb_scribble(pfn, offset, value):
    return bytes([OP_SCRIBBLE, pfn]) + struct.pack("<HI", offset, value)


def dm_status(committed, prompt=False):
    s = struct.pack("<7Q", 1000, committed, 256 << 10, 64 << 10, 0, 0, 0)
    return s + struct.pack("<II", 1 if prompt else 0, 0)


def dm_balloon_response(request_id, pfns, more=0):
    return struct.pack("<IIII", request_id, more, len(pfns), 0) + b"".join(struct.pack("<Q", p) for p in pfns)


def storage_request(request_id, slot, page=None):
    return struct.pack("<IIQ", request_id, 0, slot) + (page if page is not None else b"")


def vmbus_seeds():
    up = vb_initiate() + vb_open(1, 20) + vb_open(2, 30)
    return {
        "handshake": up + bytes([OP_DRAIN]),
        "dm-status": up + vb_send(1, 1, dm_status(100 << 10)) + vb_signal(1) + bytes([OP_DRAIN]),
        "dm-prompt-status": up + vb_send(1, 1, dm_status(200 << 10, True)) + vb_signal(1),
        "dm-balloon": up + vb_adjust(-1) + bytes([OP_DRAIN])
        + vb_send(1, 3, dm_balloon_response(1, [40, 41, 42], more=1))
        + vb_send(1, 3, dm_balloon_response(1, [43])) + vb_signal(1) + bytes([OP_DRAIN]),
        "dm-balloon-unasked": up + vb_send(1, 3, dm_balloon_response(7, [40, 41])) + vb_signal(1),
        "dm-grow": up + vb_adjust(-1) + vb_send(1, 3, dm_balloon_response(1, [40, 41])) + vb_signal(1)
        + vb_adjust(1) + bytes([OP_DRAIN]) + vb_send(1, 7, struct.pack("<IIQ", 2, 0, 2 << 20)) + vb_signal(1),
        "storage-write-read": up + vb_send(2, 1, storage_request(1, 3, b"\xab" * PAGE))
        + vb_send(2, 2, storage_request(2, 3)) + vb_signal(2) + bytes([OP_DRAIN]),
        "storage-bad-slot": up + vb_send(2, 2, storage_request(1, 1 << 40)) + vb_signal(2),
        "corrupt-write-index": up + vb_send(1, 1, dm_status(1)) + vb_scribble(20, 0, 4093) + vb_signal(1),
        "corrupt-read-index": up + vb_scribble(34, 4, 12345) + vb_adjust(-1),
        "reinitiate": up + vb_initiate(17) + vb_open(1, 40) + bytes([OP_DRAIN]),
        "bad-version": bytes([OP_INITIATE, 0x40, MESSAGE_PFN]) + struct.pack("<I", 99),
        "open-overlapping": vb_initiate() + vb_open(1, 20) + vb_open(2, 22) + vb_open(2, 16),
        "raw-short-message": vb_initiate() + bytes([OP_MESSAGE, 2, 4, 0]),
    }


# ---- hypercall: guest RAM writes and calls (fuzz-hypercall.c) ----

CONSOLE_WRITE, IDLE, REFERENCE_TIME, LONG_SPIN_WAIT, HALT, PARTITION_INFO, POST_MESSAGE, SIGNAL_EVENT = range(1, 9)
HC_DELIVER = 0x40


def hc_reg(value):
    if value < 0x10000:
        return bytes([1]) + struct.pack("<H", value)
    return bytes([0x80]) + struct.pack("<Q", value & ((1 << 64) - 1))


def hc_call(code, a0=0, a1=0, a2=0):
    return bytes([code]) + hc_reg(a0) + hc_reg(a1) + hc_reg(a2)


def hc_write(at, data):
    return bytes([0x80]) + struct.pack("<HB", at, len(data)) + data


def hypercall_seeds():
    return {
        "console-write": hc_write(0x2000, b"hello\n") + hc_call(CONSOLE_WRITE, 0x2000, 6),
        "console-write-past-ram": hc_call(CONSOLE_WRITE, 0xFFF0, 0x100),
        "post-message": hc_write(0x3000, struct.pack("<IIQ", 1, 1, 16 * PAGE)) + hc_call(POST_MESSAGE, 0x3000, 16)
        + bytes([HC_DELIVER]),
        "post-message-flood": (hc_call(POST_MESSAGE, 0x3000, 240) * 80) + bytes([HC_DELIVER]),
        "signal-event": hc_call(SIGNAL_EVENT, 1) + hc_call(SIGNAL_EVENT, 1) + hc_call(SIGNAL_EVENT, 2)
        + bytes([HC_DELIVER]),
        "signal-event-wide": hc_call(SIGNAL_EVENT, 1 << 32),
        "idle": hc_call(IDLE, 1000) + hc_call(IDLE, (1 << 64) - 1) + hc_call(IDLE, 0),
        "reference-time": hc_call(REFERENCE_TIME),
        "long-spin-wait": hc_call(LONG_SPIN_WAIT, 100),
        "halt": hc_call(HALT, 7),
        "partition-info": hc_call(PARTITION_INFO, 1) + hc_call(PARTITION_INFO, 2) + hc_call(PARTITION_INFO, 77),
        "unknown-code": bytes([0x60]) + struct.pack("<Q", 1 << 40) + hc_reg(0) + hc_reg(0) + hc_reg(0),
    }


# ---- hv-server: hv.proto Requests, each framed by a u16 length (fuzz-hv-server.c) ----

MiB = 1 << 20


def hv_request(rid, field, body):
    return pb_int(1, rid) + pb_bytes(field, body)


def hv_packets(*requests):
    return b"".join(struct.pack("<H", len(r)) + r for r in requests)


def hv_processor(reserve, maximum, weight):
    return pb_int(1, reserve) + pb_int(2, maximum) + pb_int(3, weight)


def hv_create(rid=1, vps=1, startup=8 * MiB, maximum=16 * MiB, processor=None):
    body = pb_bytes(1, "fuzz") + pb_int(2, vps) + pb_int(3, startup) + pb_int(4, maximum)
    if processor:
        body += pb_bytes(5, processor)
    return hv_request(rid, 2, body)


def captured_vp_states():
    """The VP sections of the stream capture-seeds.py captured from the bundled guest:
    packed hv.proto VpState messages as a worker hands them to hvd on a restore."""
    data = open(os.path.join(HERE, "corpus", "migrate-in", "seed-captured"), "rb").read()[1:]
    out, at = [], 32
    while at + 24 <= len(data):
        kind, _, length = struct.unpack_from("<IIQ", data, at)
        if kind == 3:
            out.append(data[at + 24:at + 24 + length])
        at += 24 + ((length + 7) & ~7)
    return out


def hv_server_seeds():
    create = hv_create()
    pid = pb_int(1, 1)
    restoring = hv_request(1, 2, pb_bytes(1, "fuzz") + pb_int(2, 2) + pb_int(3, 8 * MiB) + pb_int(4, 16 * MiB) +
                           pb_int(8, 1))
    vps = captured_vp_states()
    return {
        "restore-vp-state": hv_packets(restoring, *[hv_request(2 + i, 15, pid + pb_bytes(2, vp)) for i, vp in
                                                    enumerate(vps)],
                                       hv_request(9, 17, pid + pb_int(2, 123456789)),
                                       hv_request(10, 7, pid + pb_int(2, 0))),
        "create": hv_packets(create),
        "create-with-processor": hv_packets(hv_create(processor=hv_processor(10, 50, 200), vps=2)),
        "create-too-big": hv_packets(hv_create(startup=1 << 40, maximum=1 << 41)),
        "memory": hv_packets(create, hv_request(2, 10, pid + pb_int(2, 2 * MiB)),
                             hv_request(3, 11, pid + pb_packed(2, [1, 2, 3, 3, 1 << 30])),
                             hv_request(4, 12, pid + pb_packed(2, [1, 2, 7])),
                             hv_request(5, 13, pid)),
        "processor-pause-signal": hv_packets(create, hv_request(2, 8, pid + pb_bytes(2, hv_processor(5, 60, 300))),
                                             hv_request(3, 7, pid + pb_int(2, 1)),
                                             hv_request(4, 6, pid + pb_int(2, 0)),
                                             hv_request(5, 7, pid + pb_int(2, 0))),
        "vp-start-add": hv_packets(create, hv_request(2, 3, pid + pb_int(2, 0) + pb_int(3, 0x100000) + pb_int(4, 0x200000)),
                                   hv_request(3, 9, pid + pb_int(2, 0x100000) + pb_int(3, 0x300000)),
                                   hv_request(4, 4, pid)),
        "counters": hv_packets(create, hv_request(2, 5, b"")),
        "destroy-twice": hv_packets(create, hv_request(2, 4, pid), hv_request(3, 4, pid)),
        "not-mine": hv_packets(hv_request(1, 13, pb_int(1, 99)), hv_request(2, 11, pb_int(1, 99) + pb_packed(2, [1]))),
        "empty-and-garbage": hv_packets(b"", b"\xff\xff\xff", pb_int(1, 5)),
    }


# ---- elf: guest kernel images (fuzz-elf.c: 1 MiB of RAM, loads from 64 KiB) ----

def elf_image(entry=0x10008, phdrs=None, code=b"\x90" * 64):
    phdrs = phdrs if phdrs is not None else [(1, 5, 64 + 56 * 2, 0x10000, len(code), len(code) + 4096), (4, 4, 0, 0, 0, 0)]
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    eh = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    ph = b"".join(struct.pack("<IIQQQQQQ", t, f, off, addr, addr, filesz, memsz, 8)
                  for (t, f, off, addr, filesz, memsz) in phdrs)
    return eh + ph + code


def elf_seeds():
    return {
        "minimal": elf_image(),
        "entry-outside": elf_image(entry=0x90000),
        "below-min-gpa": elf_image(phdrs=[(1, 5, 176, 0x1000, 64, 64)], entry=0x1008),
        "past-ram": elf_image(phdrs=[(1, 5, 176, 0xFFF00, 64, 0x1000)], entry=0xFFF08),
        "two-segments": elf_image(phdrs=[(1, 5, 176, 0x10000, 32, 32), (1, 6, 208, 0x20000, 32, 0x8000)]),
        "truncated": elf_image()[:100],
        "not-elf": b"MZ" + bytes(100),
    }


# ---- vmms-worker: worker.proto Messages, each framed by a u16 length ----

def wk_seeds():
    hello = pb_bytes(1, pb_bytes(1, "b0b2f5a4-vm") + pb_int(2, 4242) + pb_int(3, 1) + pb_int(4, 1700000000000))
    status = pb_bytes(4, pb_int(1, 1) + pb_int(3, 100 * MiB) + pb_int(4, 512 * MiB) + pb_int(5, 512 * MiB)
                      + pb_int(16, 1))
    return {
        "hello-status": hv_packets(hello, status, status),
        "replies-in-order": hv_packets(hello, pb_bytes(2, pb_int(1, 1)), pb_bytes(2, pb_int(1, 2) + pb_int(2, (1 << 64) - 22)
                                                                          + pb_bytes(3, "busy")),
                                       pb_bytes(2, pb_int(1, 3))),
        "reply-out-of-order": hv_packets(pb_bytes(2, pb_int(1, 3)), pb_bytes(2, pb_int(1, 1))),
        "guest-stopped": hv_packets(hello, pb_bytes(3, pb_bytes(1, "guest halted (code 7)") + pb_int(2, 1))),
        "exiting": hv_packets(pb_bytes(5, pb_int(1, 2) + pb_bytes(2, "guest fault: #GP at rip 0x100010"))),
        "garbage": hv_packets(b"\xff" * 9, b"", pb_bytes(9, b"x")),
    }


# ---- dbus-message: an operation's name, NUL, and its a{sv} in GVariant's format ----

def dbus_seeds():
    from gi.repository import GLib

    def req(op, fields):
        return op.encode() + b"\0" + GLib.Variant("a{sv}", fields).get_data_as_bytes().get_data()

    V = GLib.Variant
    return {
        "create": req("CreateVm", {"name": V("s", "web"), "workload": V("s", "cpu"),
                                   "processor": V("a{sv}", {"count": V("u", 2), "reserve": V("u", 10)}),
                                   "memory": V("a{sv}", {"startup_bytes": V("t", 512 << 20),
                                                         "dynamic_memory_enabled": V("b", True)}),
                                   "automatic_start_action": V("s", "Start")}),
        "create-wrong-types": req("CreateVm", {"name": V("u", 7), "processor": V("s", "x")}),
        "update-memory-mask": req("UpdateMemory", {"vm": V("s", "db"), "update_mask": V("as", ["buffer", "priority"]),
                                                   "memory": V("a{sv}", {"buffer": V("i", 20), "priority": V("y", 80)})}),
        "update-processor-negative": req("UpdateProcessor", {"vm": V("s", "web"),
                                                             "processor": V("a{sv}", {"maximum": V("x", -1)})}),
        "counters": req("GetCounters", {"paths": V("as", ["\\Hyper-V Hypervisor(*)\\Partitions"])}),
        "events": req("ListEvents", {"vm": V("s", ""), "after_id": V("x", 5), "limit": V("q", 10)}),
        "stop-boxed": req("StopVm", {"vm": V("v", V("s", "web")), "turn_off": V("b", True)}),
        "unknown-field": req("GetVm", {"nope": V("s", "x")}),
        "update-vm-enum": req("UpdateVm", {"vm": V("s", "a"), "automatic_start_action": V("s", "Sometimes")}),
    }


def grpc_seeds():
    """The operation's name, a NUL, and its request as a client serializes it."""
    def req(op, body):
        return op.encode() + b"\0" + body

    processor = pb_int(1, 2) + pb_int(2, 10) + pb_int(3, 75) + pb_int(4, 200)
    memory = pb_int(1, 1) + pb_int(2, 512 << 20) + pb_int(3, 256 << 20) + pb_int(4, 2 << 30) + pb_int(5, 20) + \
        pb_int(6, 80) + pb_int(7, 64 << 20)
    return {
        "create": req("CreateVm", pb_bytes(1, "web") + pb_bytes(2, processor) + pb_bytes(3, memory) +
                      pb_bytes(4, "memsoak") + pb_bytes(5, "memsoak_mb=64") + pb_bytes(6, "notes\nline two")),
        "create-nul": req("CreateVm", pb_bytes(1, b"nul\0../../x")),
        "create-bidi": req("CreateVm", pb_bytes(1, "evil\u202etxt")),
        "create-bad-utf8": req("CreateVm", pb_bytes(1, b"\xc3\x28")),
        "get": req("GetVm", pb_bytes(1, "web")),
        "update-memory": req("UpdateMemory", pb_bytes(1, "web") + pb_bytes(2, memory) + pb_bytes(3, "buffer") +
                             pb_bytes(3, "priority")),
        "update-processor": req("UpdateProcessor", pb_bytes(1, "web") + pb_bytes(2, processor) +
                                pb_bytes(3, "maximum")),
        "update-vm": req("UpdateVm", pb_bytes(1, "web") + pb_bytes(2, "web2") + pb_bytes(5, "cpu") +
                         pb_bytes(6, "workload=idle") + pb_bytes(7, "name")),
        "counters": req("GetCounters", pb_bytes(1, "\\Hyper-V Hypervisor(*)\\*")),
    }


def migration_peer_seeds():
    """A frame header, then an a{sv} payload in GVariant's normal form (GLib's own
    serializer, as vmmsd writes it)."""
    from gi.repository import GLib

    def frame(kind, payload=b"", reserved=0, length=None):
        return b"VMMG" + struct.pack("<HHI", kind, reserved, len(payload) if length is None else length) + payload

    def vector(leaves=((0, 0, 0xD, 0x68747541, 0x444D4163, 0x69746E65), (1, 0, 0x663, 0, 0x80002001, 0x78BFBFD)),
               model="qemu64"):
        return GLib.Variant("a{sv}", {
            "engine": GLib.Variant("s", "unicorn"), "engine-version": GLib.Variant("s", "2.1.1"),
            "cpu-model": GLib.Variant("s", model), "cpuid-hash": GLib.Variant("s", "ab" * 32),
            "cpuid": GLib.Variant("a(uuuuuu)", list(leaves)), "guest-abi": GLib.Variant("u", 1),
            "hv-protocol": GLib.Variant("u", 1), "normalized": GLib.Variant("b", False)})

    def payload(**values):
        return GLib.Variant("a{sv}", values).get_data_as_bytes().get_data()

    offer, refuse = 2, 4
    differences = GLib.Variant("a(sss)", [("cpu_model", "qemu64", "haswell"),
                                          ("cpuid 0x00000001.0 ecx", "0x80002001", "absent")])
    return {
        "offer-with-vector": frame(offer, payload(processor=vector())),
        "refuse-with-differences": frame(refuse, payload(reason=GLib.Variant("s", "processor not compatible"),
                                                         differences=differences)),
        "vector-leaf-twice": frame(offer, payload(processor=vector(leaves=((1, 0, 1, 2, 3, 4),
                                                                           (1, 0, 5, 6, 7, 8))))),
        "vector-unprintable": frame(offer, payload(processor=vector(model="qemu\x01"))),
        "vector-65-leaves": frame(offer, payload(processor=vector(leaves=[(i, 0, 0, 0, 0, 0) for i in range(65)]))),
        "differences-overlong": frame(refuse, payload(differences=GLib.Variant("a(sss)", [("x" * 200, "", "")]))),
        "header-unknown-type": frame(99),
        "header-reserved": frame(1, reserved=1),
        "header-oversize": frame(5, length=(1 << 20) + 1),
        "header-bad-magic": b"HTTP/1.1 200",
        "payload-not-normal": frame(offer, b"\xff" * 40),
    }


TARGETS = {
    "vmbus": vmbus_seeds,
    "hypercall": hypercall_seeds,
    "hv-server": hv_server_seeds,
    "vmms-worker": wk_seeds,
    "elf": elf_seeds,
    "dbus-message": dbus_seeds,
    "grpc-request": grpc_seeds,
    "migration-peer": migration_peer_seeds,
}


def main(argv):
    names = argv[1:] or sorted(TARGETS)
    for name in names:
        out = os.path.join(HERE, "corpus", name)
        os.makedirs(out, exist_ok=True)
        for seed, data in TARGETS[name]().items():
            with open(os.path.join(out, "seed-" + seed), "wb") as f:
                f.write(data)
        print(f"{name}: {len(TARGETS[name]())} seeds in {out}")


if __name__ == "__main__":
    main(sys.argv)
