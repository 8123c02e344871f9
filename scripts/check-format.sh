#!/usr/bin/env bash
# Fails, naming the files, when a C file differs from what .clang-format makes of it.
set -uo pipefail
cd "$(dirname "$0")/.."
bad=$(git ls-files '*.c' '*.h' | while read -r f; do
        clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
if [ -n "$bad" ]; then
  echo "not formatted per .clang-format (run: clang-format -i FILE):"; echo "$bad"
  exit 1
fi
