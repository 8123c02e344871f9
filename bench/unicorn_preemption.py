#!/usr/bin/python3
"""What watching for preemption costs a Unicorn engine, and whether each way of stopping
it is safe (bench/speed/bench-unicorn-preempt.c, on the engine alone). Prints one JSON
object: the cost table (thread CPU ms per kernel and hook, interleaved rounds) and, per
slice length, the paired-increment check of hvd's stop and of a cross-thread stop.
Usage: unicorn_preemption.py [rounds] [slice_us ...]; defaults 11 and 1000 10000. Run
with LD_LIBRARY_PATH naming another libunicorn to measure that one."""
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import BUILD  # noqa: E402

SPEED = BUILD / "bench" / "speed"


def rounded(value):
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def run(*args):
    out = subprocess.run([str(SPEED / "bench-unicorn-preempt"), str(SPEED / "bench-speed-preempt-guest"), *args],
                         check=True, capture_output=True, text=True)
    return rounded(json.loads(out.stdout))


def main():
    rounds = sys.argv[1] if len(sys.argv) > 1 else "11"
    slices = sys.argv[2:] or ["1000", "10000"]
    print(json.dumps({"benchmark": "unicorn_preemption", "cost": run("cost", rounds),
                      "stop": [run("stop", s) for s in slices]}, indent=2))


if __name__ == "__main__":
    main()
