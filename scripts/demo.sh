#!/usr/bin/env bash
# make demo: the daemon's main job against a local S3 server, end to end.
# Installs s3s-fs (once per machine), starts it on a free loopback port, creates sample
# vehicle logs in a temporary directory, runs `tvm-upload once` and prints the keys.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
cargo build --release --quiet
bin=target/release/tvm-upload

work=$(mktemp -d /tmp/tvm-upload-demo.XXXXXX)
port=$(free_port)
mkdir -p "$work/s3/t01logs" "$work/logs/terminal" "$work/logs/ros/run_2026/bags"

echo "== sample vehicle logs in $work/logs"
printf 'session started\nls -la\n' > "$work/logs/terminal/session 01.log"
printf '[rosout] node up\n' > "$work/logs/ros/run_2026/rosout.log"
head -c 20000000 /dev/urandom > "$work/logs/ros/run_2026/bags/drive+1.mcap"   # multipart
: > "$work/logs/ros/run_2026/empty.log"
echo secret > "$work/logs/ros/.hidden"                                      # never uploaded
echo partial > "$work/logs/ros/run_2026/write.active"                       # excluded
touch -d '10 minutes ago' "$work"/logs/terminal/* "$work"/logs/ros/run_2026/*.log "$work"/logs/ros/run_2026/bags/*
find "$work/logs" -type f | sed "s|$work/logs/|  |"

cat > "$work/config.json" <<JSON
{
  "vehicle_id": "demo-v001",
  "state_dir": "$work/state",
  "stability_seconds": 60,
  "sources": [
    { "name": "terminal", "path": "$work/logs/terminal" },
    { "name": "ros", "path": "$work/logs/ros", "exclude": ["*.active"], "priority": 1 }
  ],
  "s3": { "bucket": "t01logs", "region": "us-east-1", "endpoint": "http://127.0.0.1:$port",
          "path_style": true, "multipart_threshold": "8MiB", "part_size": "8MiB" }
}
JSON

start_s3s "$work/s3" "$port" demo-key demo-secret
trap 'kill $S3S_PID 2>/dev/null || true' EXIT

echo "== tvm-upload once (s3s-fs on 127.0.0.1:$port)"
AWS_ACCESS_KEY_ID=demo-key AWS_SECRET_ACCESS_KEY=demo-secret "$bin" once --config "$work/config.json"

echo "== keys in s3://t01logs (as the server stored them)"
(cd "$work/s3/t01logs" && find . -type f | sed 's|^\./|  |' | sort)
echo "== status"
"$bin" status --config "$work/config.json"
echo "(demo files stay in $work)"
