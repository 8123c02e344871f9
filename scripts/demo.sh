#!/usr/bin/env bash
# The main job on the embedded default: starts hvd (the bundled hypervisor), runs one
# VM with the guest kernel's CPU workload for a few seconds, shows its console and the
# hypervisor's counters, then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
seconds=${1:-5}
dir=$(mktemp -d /tmp/vmms-demo.XXXXXX)
cleanup() {
  [ -n "${vmwp_pid:-}" ] && kill "$vmwp_pid" 2>/dev/null && wait "$vmwp_pid" 2>/dev/null
  [ -n "${hvd_pid:-}" ] && kill "$hvd_pid" 2>/dev/null && wait "$hvd_pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== hvd: pool 1GB, 2 logical processors"
build/hypervisor/hvd --socket "$dir/hvd.sock" --memory 1GB --lps 2 2>"$dir/hvd.log" &
hvd_pid=$!
for _ in $(seq 100); do [ -S "$dir/hvd.sock" ] && break; sleep 0.05; done

echo "== vmwp: VM 'demo', 2 VPs, 128MB, workload cpu — guest console:"
build/vmwp/vmwp --name demo --vps 2 --memory 128MB --workload cpu \
  --hvd-socket "$dir/hvd.sock" --console-stdout 2>"$dir/vmwp.log" &
vmwp_pid=$!
sleep "$seconds"

echo
echo "== hvctl counters (1 s sample)"
build/hypervisor/hvctl --socket "$dir/hvd.sock" counters
