#!/usr/bin/env bash
# Installs what is missing, builds, checks formatting, runs the default test suites
# and prints one line "N passed, N failed" counted from meson's test log.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }

format_failed=0
if ! ./scripts/check-format.sh; then
  format_failed=1
fi
meson test -C build --suite unit --suite integration --num-processes 2 --print-errorlogs
status=$?
python3 scripts/count-tests.py build/meson-logs/testlog.json "$format_failed"
counted=$?
[ $status -eq 0 ] && [ $counted -eq 0 ] && [ $format_failed -eq 0 ]
