#!/usr/bin/env bash
# Fuzzes one target of tests/fuzz with libFuzzer for a while:
#   ./scripts/fuzz.sh TARGET [SECONDS] [libFuzzer flags…]     e.g. ./scripts/fuzz.sh vmbus 600
#   ./scripts/fuzz.sh --list
# Installs clang's fuzzer runtime if missing, builds build-fuzz (CC=clang, -Dfuzzing=true)
# and fuzzes with a working corpus in build-fuzz/corpus/TARGET seeded from the committed
# one. A crash is saved as build-fuzz/artifacts/TARGET/crash-…: add it to
# tests/fuzz/corpus/TARGET/ with the fix, and the default test suite replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--list" ] || [ $# -lt 1 ]; then
  ls tests/fuzz/corpus
  [ $# -ge 1 ] || { echo "usage: $0 TARGET [SECONDS] [libFuzzer flags…]" >&2; exit 2; }
  exit 0
fi
target=$1
seconds=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
[ -d "tests/fuzz/corpus/$target" ] || { echo "$0: no target '$target' (--list)" >&2; exit 2; }

./scripts/install-deps.sh
# clang and its libFuzzer runtime: only fuzzing needs them, the default build does not.
need=()
for p in clang libclang-rt-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
fi

[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzzing=true -Dwerror=false >/dev/null
# migrate-in and save-file feed a whole worker, which talks to the build's hvd.
ninja -C build-fuzz "tests/fuzz/fuzz-$target" hypervisor/hvd

mkdir -p "build-fuzz/corpus/$target" "build-fuzz/artifacts/$target"
# Inputs are programs of a few dozen steps or one message: 8 KiB is plenty (libFuzzer's
# default of 4 KiB would cut an ELF image or a page-sized packet short). A migration
# stream or a saved file holds a page of RAM and every device's state: 16 KiB.
max_len=8192
case $target in migrate-in | save-file) max_len=16384 ;; esac
export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
exec "build-fuzz/tests/fuzz/fuzz-$target" -max_total_time="$seconds" -max_len=$max_len -timeout=10 \
  -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$target/" \
  "$@" "build-fuzz/corpus/$target" "tests/fuzz/corpus/$target"
