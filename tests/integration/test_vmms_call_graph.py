"""The vmms core's files never call each other in a loop: when two files call each
other, one of them is hiding a callback or a result that should be returned (the
Dynamic Memory tick returns a plan the manager applies; engines report through
callbacks). Reads the sources; runs nothing."""
import re
import unittest
from pathlib import Path

VMMS = Path(__file__).resolve().parents[2] / "vmms"
DEFINITION = re.compile(r"^(?:[A-Za-z_][\w \*]*\s+\**)(vmms_\w+)\s*\(", re.M)


def call_graph():
    sources = {p.name: p.read_text() for p in VMMS.glob("*.c") if not p.name.endswith("-main.c")}
    defined = {}
    for name, text in sources.items():
        for m in DEFINITION.finditer(text):
            defined.setdefault(m.group(1), name)
    calls = {name: set() for name in sources}
    for name, text in sources.items():
        for function, where in defined.items():
            if where != name and re.search(r"\b" + function + r"\s*\(", text):
                calls[name].add(where)
    return calls


class CallGraphTest(unittest.TestCase):
    def test_no_two_files_of_vmms_call_each_other(self):
        calls = call_graph()
        self.assertIn("vmms-vm.c", calls["vmms-manager.c"])  # the graph is really read
        loops = sorted((a, b) for a in calls for b in calls[a] if a < b and a in calls.get(b, ()))
        self.assertEqual(loops, [], f"files that call each other: {loops}")

    def test_the_vm_object_and_the_memory_loop_do_not_call_the_manager(self):
        calls = call_graph()
        for name in ("vmms-vm.c", "vmms-memory.c", "vmms-engine-bundled.c", "vmms-hvd.c"):
            self.assertNotIn("vmms-manager.c", calls[name], name)


if __name__ == "__main__":
    unittest.main()
