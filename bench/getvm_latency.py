#!/usr/bin/python3
"""Get-VM latency (p50/p99) and throughput over vmmsd's unix socket with 1,000 defined
VMs, measured by bench-getvm (a gRPC C-core client). Prints one JSON object."""
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from vmms_host import BUILD  # noqa: E402
from vmmsd_host import VmmsdHost  # noqa: E402

VMS = 1000


def main():
    with VmmsdHost() as host:
        pb = host.pb
        t0 = time.monotonic()
        for i in range(VMS):
            host.api.CreateVm(pb.CreateVmRequest(name=f"bench-{i:04d}", memory=pb.MemorySettings(
                startup_bytes=64 << 20)), timeout=10)
        create_s = time.monotonic() - t0
        out = subprocess.run([str(BUILD / "bench" / "bench-getvm"), f"unix:{host.socket}", str(VMS), "3000", "16",
                              "3"], check=True, capture_output=True, text=True)
        result = json.loads(out.stdout)
        result["create_vms_per_sec"] = round(VMS / create_s)
        listed = host.api.ListVms(pb.ListVmsRequest(), timeout=30)
        result["list_vms_count"] = len(listed.vms)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
