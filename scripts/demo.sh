#!/usr/bin/env bash
# make demo: the fleet pipeline end to end on this machine.
# Installs the local servers (once per machine), starts s3s-fs on a free loopback port,
# creates sample vehicle logs (a CSV of CAN telemetry among them) in a temporary
# directory, runs `tvm-upload once` and prints the keys; then starts moto (DynamoDB,
# CloudWatch) and a Kafka broker (tansu), streams the uploaded CSV into Kafka with
# csv2kafka, and prints a few of the messages read back with confluent-kafka.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
cargo build --release --quiet
bin=target/release/tvm-upload
echo "== building csv2kafka (the first build compiles librdkafka: a few minutes)"
cargo build --release --quiet --features csv2kafka --bin csv2kafka
c2k=target/release/csv2kafka
tools=$(bash scripts/test-tools.sh --demo | tail -n 1)

work=$(mktemp -d /tmp/tvm-upload-demo.XXXXXX)
port=$(free_port)
mkdir -p "$work/s3/t01logs" "$work/logs/terminal" "$work/logs/ros/run_2026/bags" "$work/logs/can"

echo "== sample vehicle logs in $work/logs"
printf 'session started\nls -la\n' > "$work/logs/terminal/session 01.log"
printf '[rosout] node up\n' > "$work/logs/ros/run_2026/rosout.log"
head -c 20000000 /dev/urandom > "$work/logs/ros/run_2026/bags/drive+1.mcap"   # multipart
: > "$work/logs/ros/run_2026/empty.log"
python3 - "$work/logs/can/telemetry.csv" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write("ts,speed_kph,steering_deg,note\n")
    for i in range(1000):
        f.write(f"2026-11-22T08:{i // 60 % 60:02d}:{i % 60:02d}Z,{random.uniform(0, 90):.1f},"
                f"{random.uniform(-30, 30):.1f},\"lane {i % 3}, ok\"\n")
PY
echo secret > "$work/logs/ros/.hidden"                                      # never uploaded
echo partial > "$work/logs/ros/run_2026/write.active"                       # excluded
touch -d '10 minutes ago' "$work"/logs/terminal/* "$work"/logs/ros/run_2026/*.log "$work"/logs/ros/run_2026/bags/* "$work"/logs/can/*
find "$work/logs" -type f | sed "s|$work/logs/|  |"

cat > "$work/config.json" <<JSON
{
  "vehicle_id": "demo-v001",
  "state_dir": "$work/state",
  "stability_seconds": 60,
  "sources": [
    { "name": "terminal", "path": "$work/logs/terminal" },
    { "name": "ros", "path": "$work/logs/ros", "exclude": ["*.active"], "priority": 1 },
    { "name": "can", "path": "$work/logs/can" }
  ],
  "s3": { "bucket": "t01logs", "region": "us-east-1", "endpoint": "http://127.0.0.1:$port",
          "path_style": true, "multipart_threshold": "8MiB", "part_size": "8MiB" }
}
JSON

start_s3s "$work/s3" "$port" demo-key demo-secret
pids=("$S3S_PID")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

echo "== tvm-upload once (s3s-fs on 127.0.0.1:$port)"
AWS_ACCESS_KEY_ID=demo-key AWS_SECRET_ACCESS_KEY=demo-secret "$bin" once --config "$work/config.json"

echo "== keys in s3://t01logs (as the server stored them)"
(cd "$work/s3/t01logs" && find . -type f | sed 's|^\./|  |' | sort)
echo "== status"
"$bin" status --config "$work/config.json"

export AWS_ACCESS_KEY_ID=demo-key AWS_SECRET_ACCESS_KEY=demo-secret AWS_EC2_METADATA_DISABLED=true
aws_port=$(free_port)
kafka_port=$(free_port)
"$tools/venv/bin/moto_server" -H 127.0.0.1 -p "$aws_port" >"$work/moto.log" 2>&1 &
pids+=("$!")
"$tools/bin/tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
  >"$work/tansu.log" 2>&1 &
pids+=("$!")
for p in "$aws_port" "$kafka_port"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
"$tools/bin/tansu" topic create --broker "tcp://127.0.0.1:$kafka_port" --partitions 3 telemetry >/dev/null 2>&1
cat > "$work/c2k.json" <<JSON
{
  "kafka": { "bootstrap_servers": "127.0.0.1:$kafka_port", "topic": "telemetry" },
  "s3": { "region": "us-east-1", "endpoint": "http://127.0.0.1:$port", "path_style": true },
  "checkpoint": { "endpoint": "http://127.0.0.1:$aws_port" },
  "metrics": { "endpoint": "http://127.0.0.1:$aws_port", "interval_seconds": 1 }
}
JSON
key=$(cd "$work/s3/t01logs" && find . -name telemetry.csv | sed 's|^\./||')
echo "== csv2kafka run s3://t01logs/$key (Kafka: tansu on 127.0.0.1:$kafka_port)"
"$c2k" create-table --config "$work/c2k.json"
"$c2k" run --config "$work/c2k.json" "s3://t01logs/$key"
"$c2k" status --config "$work/c2k.json" "s3://t01logs/$key"
echo "== three of the messages, read back with confluent-kafka (partition, offset, job, line, value)"
"$tools/venv/bin/python" tests/common/kafka_read.py "127.0.0.1:$kafka_port" telemetry > "$work/messages.tsv"
head -3 "$work/messages.tsv"
echo "($(wc -l < "$work/messages.tsv") messages in the topic)"
echo "(demo files stay in $work)"
