#!/usr/bin/python3
"""The seed's five-guest Dynamic Memory case at full size (12 GiB pool; --scale 16 for the
CI size), as a benchmark: writes CSV and a matplotlib plot (SVG and PNG) of assigned memory
and pressure per VM over time, prints the seed's figures beside ours, then a JSON summary."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import dm_seed_case  # noqa: E402

MiB = 1 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=120, help="run length if VMs 1-2 stop at --stop-at")
    ap.add_argument("--stop-at", type=int, default=70, help="the latest VMs 1-2 stop (earlier once VM 5 has "
                    "committed its whole soak); the run goes on for seconds - stop-at after")
    ap.add_argument("--out", default="dm-seed-case")
    a = ap.parse_args()
    samples = dm_seed_case.run(scale=a.scale, stop_at=a.stop_at, after=a.seconds - a.stop_at)
    stop_at = dm_seed_case.stop_time(samples) or a.stop_at  # earlier once VM 5 has committed its soak
    dm_seed_case.write_csv(samples, a.out + ".csv")
    title = f"Seed five-guest case, {12 * 1024 // a.scale} MiB pool" + (f" (1/{a.scale} size)" if a.scale > 1 else "")
    for ext in (".svg", ".png"):
        dm_seed_case.write_plot(samples, a.out + ext, title, scale=a.scale, caption=dm_seed_case.SEED_CAPTION)
    dm_seed_case.print_beside_seed(samples, a.scale, stop_at)
    last = {}
    before_stop = {}
    for t, name, state, assigned, demand, pressure in samples:
        last[name] = (state, assigned // MiB, demand // MiB, pressure)
        if t < stop_at:
            before_stop[name] = (state, assigned // MiB, demand // MiB, pressure)
    print(json.dumps({"benchmark": "dm_seed_case", "scale": a.scale, "csv": a.out + ".csv", "svg": a.out + ".svg",
                      "png": a.out + ".png", "vm1_vm2_stopped_at_s": stop_at, "before_stopping_vm1_vm2": before_stop, "end": last}, indent=2))


if __name__ == "__main__":
    main()
