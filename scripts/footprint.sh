#!/usr/bin/env bash
# Footprint figures for docs/GUIDE.md ("Footprint"): binary sizes, idle RSS and idle CPU over 60 s of
# `run` watching a tree of 1,000 uploaded files, and peak RSS of `once` uploading a
# 1 GiB file to a local s3s-fs. Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/tvm-upload
work=$(mktemp -d /tmp/tvm-footprint.XXXXXX)
mkdir -p "$work/s3/t01logs" "$work/logs/tree"
port=$(free_port)
start_s3s "$work/s3" "$port" fp-key fp-secret
trap 'kill $S3S_PID 2>/dev/null || true; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=fp-key AWS_SECRET_ACCESS_KEY=fp-secret
config() {
  cat > "$work/config.json" <<JSON
{ "vehicle_id": "fp", "state_dir": "$work/state", "stability_seconds": 5,
  "sources": [ { "name": "logs", "path": "$work/logs/$1" } ],
  "s3": { "bucket": "t01logs", "region": "us-east-1", "endpoint": "http://127.0.0.1:$port",
          "path_style": true }, "log": { "level": "warn" } }
JSON
}
ls -l target/release/tvm-upload | awk '{printf "binary x86_64 (native release): %d bytes\n", $5}'
[ -f target/aarch64-unknown-linux-musl/release/tvm-upload ] &&
  ls -l target/aarch64-unknown-linux-musl/release/tvm-upload | awk '{printf "binary aarch64 musl static: %d bytes\n", $5}'

for i in $(seq 1000); do echo "line $i" > "$work/logs/tree/f$((i % 20))_$i.log"; done
touch -d '1 hour ago' "$work"/logs/tree/*
config tree
"$bin" once --config "$work/config.json"
"$bin" run --config "$work/config.json" & pid=$!
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks); sleep 60; t1=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hz=$(getconf CLK_TCK)
echo "idle RSS (run, 1,000 files watched and uploaded): ${rss} KiB"
awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "idle CPU over 60 s: %d ticks = %.2f s (%.3f%%)\n", d, d / hz, d / hz / 60 * 100 }'
kill -TERM $pid; wait $pid || true

mkdir -p "$work/logs/big"
head -c 1073741824 /dev/urandom > "$work/logs/big/one.bin"
touch -d '1 hour ago' "$work/logs/big/one.bin"
rm -rf "$work/state"; config big
/usr/bin/time -v "$bin" once --config "$work/config.json" 2> "$work/time.txt"
awk -F': ' '/Maximum resident/ {print "peak RSS, once, one 1 GiB file (8 MiB parts, concurrency 2): " $2 " KiB"}
            /Elapsed/ {print "  wall time: " $2}
            /User time/ {u=$2} /System time/ {print "  CPU: " u + $2 " s"}' "$work/time.txt"
