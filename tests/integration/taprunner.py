"""Runs a unittest module and reports each test as a TAP line, so meson and .ci/run
count tests one by one rather than one per file."""
import importlib.util
import sys
import time
import unittest


class TapResult(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.number = 0

    def _line(self, ok, test, note=""):
        self._reported = True
        self.number += 1
        name = test.id().split(".", 1)[-1]
        print(f"{'ok' if ok else 'not ok'} {self.number} - {name}{note}", flush=True)

    def startTest(self, test):
        super().startTest(test)
        self._start = time.monotonic()
        self._reported = False
        print(f"# {test.id()} ...", flush=True)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            for line in self._exc_info_to_string(err, test).rstrip().splitlines():
                print(f"# {subtest.id()}: {line}", flush=True)

    def stopTest(self, test):
        # A test whose subtests failed gets neither addSuccess nor addFailure.
        if not self._reported:
            self._line(False, test, " (subtest failure)")
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(True, test, f" ({time.monotonic() - self._start:.1f}s)")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line(True, test, f" # SKIP {reason}")

    def _fail(self, test, err, kind):
        text = self._exc_info_to_string(err, test)
        for line in text.rstrip().splitlines():
            print(f"# {line}", flush=True)
        self._line(False, test, f" ({kind})")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err, "failure")

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err, "error")


def main():
    path = sys.argv[1]
    spec = importlib.util.spec_from_file_location("under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(__import__("pathlib").Path(path).parent))
    spec.loader.exec_module(module)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    if len(sys.argv) > 2:
        suite = unittest.TestSuite(t for t in _flatten(suite) if any(p in t.id() for p in sys.argv[2:]))
    print(f"1..{suite.countTestCases()}", flush=True)
    result = TapResult()
    suite.run(result)
    sys.exit(0 if result.wasSuccessful() else 1)


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


if __name__ == "__main__":
    main()
