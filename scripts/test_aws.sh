#!/usr/bin/env bash
# Opt-in end-to-end check against real AWS: uploads a small tree (one multipart file)
# with `tvm-upload once` to TEST_BUCKET, verifies every object's bytes and metadata with
# boto3, publishes metrics if TEST_CLOUDWATCH=1, and deletes what it created.
# Needs TEST_BUCKET, a region (AWS_REGION) and credentials in the environment;
# without them it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TEST_BUCKET:-}" ] || [ -z "${AWS_REGION:-}" ] || { [ -z "${AWS_ACCESS_KEY_ID:-}" ] && [ -z "${AWS_PROFILE:-}" ]; }; then
  echo "test-aws: skipped: set TEST_BUCKET, AWS_REGION and AWS credentials to run it against a real bucket"
  exit 0
fi
tools=$(bash scripts/test-tools.sh | tail -n 1)
cargo build --release --quiet
work=$(mktemp -d /tmp/tvm-test-aws.XXXXXX)
prefix="tvm-upload-test/$(date +%s)-$$/"
mkdir -p "$work/logs/a b"
head -c 9000000 /dev/urandom > "$work/logs/big.bin"
echo "hello" > "$work/logs/a b/ünï +%.log"
touch -d '1 hour ago' "$work/logs/big.bin" "$work/logs/a b/ünï +%.log"
metrics=""
[ "${TEST_CLOUDWATCH:-0}" = 1 ] && metrics=', "metrics": { "namespace": "TVM/UploadTest", "interval_seconds": 5 }'
cat > "$work/config.json" <<JSON
{ "vehicle_id": "test-aws", "state_dir": "$work/state", "stability_seconds": 1,
  "sources": [ { "name": "logs", "path": "$work/logs" } ],
  "s3": { "bucket": "$TEST_BUCKET", "prefix": "$prefix" } $metrics }
JSON
cleanup() {
  "$tools/venv/bin/python" - "$TEST_BUCKET" "$prefix" <<'PY' || true
import sys, boto3
b, p = sys.argv[1:3]
s3 = boto3.client("s3")
for o in s3.list_objects_v2(Bucket=b, Prefix=p).get("Contents", []):
    s3.delete_object(Bucket=b, Key=o["Key"])
for u in s3.list_multipart_uploads(Bucket=b, Prefix=p).get("Uploads", []):
    s3.abort_multipart_upload(Bucket=b, Key=u["Key"], UploadId=u["UploadId"])
PY
  rm -rf "$work"
}
trap cleanup EXIT
target/release/tvm-upload once --config "$work/config.json"
"$tools/venv/bin/python" - "$TEST_BUCKET" "$prefix" "$work/logs" <<'PY'
import hashlib, os, sys, boto3
b, p, root = sys.argv[1:4]
s3 = boto3.client("s3")
keys = {o["Key"] for o in s3.list_objects_v2(Bucket=b, Prefix=p).get("Contents", [])}
assert len(keys) == 2, keys
for dirpath, _, files in os.walk(root):
    for f in files:
        data = open(os.path.join(dirpath, f), "rb").read()
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        key = next(k for k in keys if k.endswith("/logs/" + rel))
        obj = s3.get_object(Bucket=b, Key=key)
        assert obj["Body"].read() == data, key
        assert obj["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest(), key
print("test-aws: 2 objects verified in s3://%s/%s" % (b, p))
PY
