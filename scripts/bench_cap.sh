#!/usr/bin/env bash
# Bandwidth cap benchmark: the achieved upload rate against the configured
# `max_bytes_per_second`, with several uploaders sharing the one budget.
# Prints, for each cap, the bytes sent, the seconds taken and the ratio achieved/cap.
# The target is within ±10% over ~10 s. Not a test: timings depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/tvm-upload

work=$(mktemp -d /tmp/tvm-bench-cap.XXXXXX)
mkdir -p "$work/s3/t01logs"
port=$(free_port)
start_s3s "$work/s3" "$port" bench-key bench-secret
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$work"' EXIT

printf '%-14s %-12s %-10s %-10s %-14s %s\n' cap_B/s files bytes seconds achieved_B/s ratio
for cap in 1048576 4194304 16777216; do
  rm -rf "$work/logs" "$work/state" "$work/s3/t01logs"/*
  mkdir -p "$work/logs"
  # ~10 s of data at the cap: one multipart file and a handful of small ones,
  # uploaded by 3 uploaders that share the budget.
  total=$((cap * 10))
  head -c $((total * 6 / 10)) /dev/urandom > "$work/logs/big.bin"
  for i in $(seq 8); do head -c $((total * 4 / 10 / 8)) /dev/urandom > "$work/logs/small$i.bin"; done
  touch -d '1 hour ago' "$work"/logs/*
  cat > "$work/config.json" <<JSON
{ "vehicle_id": "bench", "state_dir": "$work/state", "stability_seconds": 1,
  "sources": [ { "name": "logs", "path": "$work/logs" } ],
  "s3": { "bucket": "t01logs", "region": "us-east-1", "endpoint": "http://127.0.0.1:$port",
          "path_style": true, "multipart_threshold": "5MiB", "part_size": "5MiB", "concurrency": 3 },
  "schedule": { "windows": [ { "start": "00:00", "end": "24:00", "max_bytes_per_second": $cap } ] },
  "log": { "level": "warn" } }
JSON
  start=$(date +%s.%N)
  AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret "$bin" once --config "$work/config.json"
  end=$(date +%s.%N)
  bytes=$(du -cb "$work"/logs/* | tail -1 | cut -f1)
  python3 - "$cap" "$bytes" "$start" "$end" <<'PY'
import sys
cap, b, s, e = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
secs = e - s
rate = b / secs
print(f"{cap:<14} {9:<12} {b:<10} {secs:<10.2f} {rate:<14.0f} {rate / cap:.3f}")
PY
done
