#!/usr/bin/env python3
"""Counts test cases from meson's testlog.json: each TAP 'ok'/'not ok' line of a TAP
test counts once; a test with no TAP lines counts by its result. A formatting failure
counts as one failed check. Prints 'N passed, N failed'."""
import json
import re
import sys

TAP = re.compile(r"^(not ok|ok)\b(.*)$", re.M)


def main():
    log, format_failed = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
    passed = failed = 0
    try:
        lines = open(log).read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        results = TAP.findall(entry.get("stdout") or "")
        if results:
            for status, rest in results:
                if status == "ok":
                    passed += 1
                else:
                    failed += 1
            if entry.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL") and not any(s == "not ok" for s, _ in results):
                failed += 1  # crashed or timed out after its last TAP line
        elif entry.get("result") in ("OK", "EXPECTEDFAIL", "SKIP"):
            passed += 1
        else:
            failed += 1
    failed += format_failed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
