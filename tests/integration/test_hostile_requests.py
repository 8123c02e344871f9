"""Requests built to hurt get a named answer and hurt nobody: unknown methods are
UNIMPLEMENTED at once, oversized requests and counts are refused naming the limit, a
NUL byte never cuts a string short, names cannot hide control, bidi or separator
characters, boot arguments cannot override the definition, errors never echo a huge
string, and one caller cannot hold more than its share of calls."""
import unittest

import grpc

from vmms_host import wait_for
from vmmsd_host import VmmsdHost

C = grpc.StatusCode


class HostileRequestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.host = VmmsdHost()
        cls.pb = cls.host.pb
        cls.host.create("base2")

    @classmethod
    def tearDownClass(cls):
        cls.host.close()

    def refused(self, call, code, *texts):
        with self.assertRaises(grpc.RpcError) as e:
            call()
        self.assertEqual(e.exception.code(), code, e.exception.details())
        for text in texts:
            self.assertIn(text, e.exception.details())
        return e.exception.details()

    def test_an_unknown_method_is_unimplemented_at_once(self):
        nope = self.host.channel.unary_unary("/vmms.v1.Vmms/DoesNotExist")
        self.refused(lambda: nope(b"", timeout=5), C.UNIMPLEMENTED, "no method /vmms.v1.Vmms/DoesNotExist")
        other = self.host.channel.unary_unary("/some.Other/Thing")
        for _ in range(50):  # each is answered, none is left waiting
            self.refused(lambda: other(b"", timeout=5), C.UNIMPLEMENTED)

    def test_oversized_requests_and_counts_are_refused_naming_the_limit(self):
        pb, api = self.pb, self.host.api
        self.refused(lambda: api.GetCounters(pb.GetCountersRequest(paths=["\\a(*)\\b"] * 300), timeout=10),
                     C.INVALID_ARGUMENT, "paths has 300 entries; at most 256")
        self.refused(lambda: api.GetCounters(pb.GetCountersRequest(paths=["\\a(*)\\b"] * 500000), timeout=30),
                     C.RESOURCE_EXHAUSTED)
        self.refused(lambda: api.UpdateMemory(pb.UpdateMemoryRequest(vm="base2", update_mask=["buffer"] * 40),
                                              timeout=10), C.INVALID_ARGUMENT, "at most 32")
        # The heaviest allowed request does not hold up a small one (once there are counters).
        wait_for(lambda: api.GetCounters(pb.GetCountersRequest(), timeout=5).samples, 10, what="counters")
        api.GetCounters(pb.GetCountersRequest(paths=["\\Hyper-V*(*)\\*"] * 256), timeout=10)
        self.assertEqual(api.GetVm(pb.VmRef(vm="base2"), timeout=2).name, "base2")

    def test_errors_quote_a_huge_string_briefly(self):
        pb, api = self.pb, self.host.api
        details = self.refused(lambda: api.GetVm(pb.VmRef(vm="x" * 200000), timeout=10), C.NOT_FOUND)
        self.assertLess(len(details), 200)
        self.assertIn("…", details)
        details = self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name="y" * 200000), timeout=10),
                               C.INVALID_ARGUMENT, "name must be 1-100 bytes long")
        self.assertLess(len(details), 200)

    def test_a_nul_byte_never_cuts_a_string_short(self):
        pb, api = self.pb, self.host.api
        self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name="nul\0../../x"), timeout=10),
                     C.INVALID_ARGUMENT, "name holds a NUL byte")
        self.refused(lambda: api.GetVm(pb.VmRef(vm="base2\0x"), timeout=10), C.INVALID_ARGUMENT, "NUL")
        self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name="w", workload="idle\0evil"), timeout=10),
                     C.INVALID_ARGUMENT, "workload holds a NUL byte")
        names = [v.name for v in api.ListVms(pb.ListVmsRequest(), timeout=5).vms]
        self.assertNotIn("nul", names)
        self.assertNotIn("w", names)

    def test_names_and_notes_cannot_hide_characters(self):
        pb, api = self.pb, self.host.api
        for name, code in (("evil\u202etxt.exe", "U+202E"), ("two\u2028lines", "U+2028"), ("zero\u200bwidth", "U+200B"),
                           ("bell\u0007", "U+0007"), ("c1\u0085", "U+0085")):
            with self.subTest(name=ascii(name)):
                self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name=name), timeout=10),
                             C.INVALID_ARGUMENT, code)
        self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name="notes", notes="a\u202eb"), timeout=10),
                     C.INVALID_ARGUMENT, "Notes hold U+202E")
        vm = api.CreateVm(pb.CreateVmRequest(name="notes-ok", notes="line one\n\tline two"), timeout=10)
        self.assertEqual(vm.notes, "line one\n\tline two")
        api.RemoveVm(pb.VmRef(vm="notes-ok"), timeout=10)

    def test_boot_args_cannot_override_the_workload(self):
        pb, api = self.pb, self.host.api
        self.refused(lambda: api.CreateVm(pb.CreateVmRequest(name="sneaky", workload="idle",
                                                              boot_args="memsoak_mb=8 workload=cpu"), timeout=10),
                     C.INVALID_ARGUMENT, "BootArgs may not set workload=")
        vm = api.CreateVm(pb.CreateVmRequest(name="cache-ok", workload="cache"), timeout=10)
        self.assertEqual(vm.workload, "cache")
        api.RemoveVm(pb.VmRef(vm="cache-ok"), timeout=10)

    def test_one_caller_cannot_hold_more_than_its_share_of_calls(self):
        pb = self.pb
        # Eight connections of the same user: the share is the caller's, not a connection's.
        channels = [grpc.insecure_channel(f"unix:{self.host.socket}") for _ in range(8)]
        stubs = [self.host.pb_grpc.VmmsStub(c) for c in channels]
        streams = [stubs[i % 8].WatchEvents(pb.WatchEventsRequest()) for i in range(70)]
        try:
            # 64 stay open; the 6 past the share are refused.
            refused = wait_for(lambda: (lambda r: r if len(r) >= 6 else None)(
                [s for s in streams if s.done() and s.code() == C.RESOURCE_EXHAUSTED]), 20,
                what="the streams past the share to be refused")
            self.assertEqual(len(refused), 6)
            self.assertIn("uid 0 has 64 calls in flight", refused[0].details())
            self.refused(lambda: self.host.api.GetVm(pb.VmRef(vm="base2"), timeout=5), C.RESOURCE_EXHAUSTED,
                         "calls in flight")
        finally:
            for s in streams:
                s.cancel()
            for c in channels:
                c.close()
        # The share comes back as the streams close.
        vm = wait_for(lambda: self.get_or_none("base2"), 20, what="a call after the streams closed")
        self.assertEqual(vm.name, "base2")

    def get_or_none(self, name):
        try:
            return self.host.api.GetVm(self.pb.VmRef(vm=name), timeout=5)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), C.RESOURCE_EXHAUSTED, e.details())
            return None

if __name__ == "__main__":
    unittest.main()
