#!/usr/bin/env bash
# The main job on the embedded default (SQLite store, bundled hypervisor): installs
# what is missing, builds, starts vmmsd (which starts hvd), creates and starts three
# VMs with vmctl, shows Get-VM, Get-Counter and the events, then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
seconds=${1:-6}
dir=$(mktemp -d /tmp/vmms-demo.XXXXXX)
export VMMS_SOCKET="unix:$dir/run/vmms.sock"
vmctl() { build/cli/vmctl "$@"; }
cleanup() {
  [ -n "${vmmsd_pid:-}" ] && kill "$vmmsd_pid" 2>/dev/null && wait "$vmmsd_pid" 2>/dev/null
  # vmmsd leaves VMs running across its own restarts; the demo ends them itself.
  pkill -f "$dir" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "== vmmsd: state in $dir/state (SQLite), hvd with a 1GB pool on 2 logical processors"
build/vmms/vmmsd --state-dir "$dir/state" --runtime-dir "$dir/run" --hvd-memory 1GB --hvd-lps 2 \
  --dbus none 2>"$dir/vmmsd.log" &
vmmsd_pid=$!
for _ in $(seq 200); do [ -S "$dir/run/vmms.sock" ] && break; sleep 0.05; done

echo "== vmctl New-VM / Set-VMProcessor / Start-VM"
vmctl New-VM -Name web -MemoryStartupBytes 128MB -ProcessorCount 2 -Workload cpu
vmctl New-VM -Name db -MemoryStartupBytes 128MB -Workload memsoak -BootArgs "memsoak_mb=300 memsoak_step_mb=32"
vmctl Set-VMMemory db -DynamicMemoryEnabled '$true' -MinimumBytes 64MB -MaximumBytes 1GB -Buffer 20
vmctl New-VM -Name spare -MemoryStartupBytes 64MB -Workload idle
vmctl Set-VMProcessor web -RelativeWeight 200 -Reserve 10
vmctl Start-VM web
vmctl Start-VM db
vmctl Start-VM spare
sleep "$seconds"

echo
echo "== vmctl Get-VM"
vmctl Get-VM
echo
echo "== vmctl Get-Counter (logical processors, virtual processors, memory)"
vmctl Get-Counter '\Hyper-V Hypervisor Logical Processor(*)\% Total Run Time' \
  '\Hyper-V Hypervisor Virtual Processor(*)\% Total Run Time' \
  '\Hyper-V Dynamic Memory VM(*)\Physical Memory' '\Hyper-V Dynamic Memory VM(*)\Current Pressure' \
  '\VMMS Partition(*)\Host Resident Bytes'
echo
echo "== vmctl Stop-VM (the guests shut down when asked) and Get-VMEvent"
vmctl Stop-VM web
vmctl Stop-VM db
vmctl Stop-VM spare -TurnOff
vmctl Get-VMEvent -Newest 12
