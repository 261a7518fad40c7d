#!/usr/bin/env bash
# The size budget: the static aarch64 release binary must stay at or under 4 MiB.
# Prints the size and fails (exit 1) past the budget, or when the binary carries the
# test-only knobs (built with the `test-knobs` feature: never shipped).
set -euo pipefail
bin=${1:-target/aarch64-unknown-linux-musl/release/tvm-upload}
budget=$((4 * 1024 * 1024))
size=$(stat -c %s "$bin")
awk -v b="$bin" -v s="$size" -v m="$budget" 'BEGIN { printf "size: %s %d bytes (%.2f MiB), budget %d bytes (4 MiB)\n", b, s, s / 1048576, m }'
if [ "$size" -gt "$budget" ]; then
  echo "size: OVER BUDGET by $((size - budget)) bytes" >&2
  exit 1
fi
if grep -q -a 'TVM_UPLOAD_TEST_' "$bin"; then
  echo "size: $bin was built with the test-only knobs (feature test-knobs): not a binary to ship" >&2
  exit 1
fi
