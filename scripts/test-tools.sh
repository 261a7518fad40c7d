#!/usr/bin/env bash
# Installs the real servers the tests talk to into a per-machine cache outside the
# checkout, so each machine builds them once. Idempotent: a second run only checks.
#
#   s3s-fs 0.14.1  a real S3 server that checks SigV4 (presigned URLs, expiry),
#                  x-amz-checksum-sha256 on PUT and Content-MD5.
#   moto server    checks multipart semantics s3s-fs does not (InvalidPart, EntityTooSmall)
#                  and later serves CloudWatch.
#
# Prints the cache directory on its last line; the harness reads TVM_TOOLS_DIR.
set -euo pipefail

tools="${TVM_TOOLS_DIR:-$HOME/.cache/tvm-upload-tools}"
mkdir -p "$tools"

if [ ! -x "$tools/bin/s3s-fs" ]; then
  echo "test-tools: building s3s-fs 0.14.1 into $tools (takes ~5 minutes, once per machine)" >&2
  # Newer s3s-fs releases need a newer rustc than the machine's; the version is pinned.
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$tools" >&2
fi

if [ ! -x "$tools/venv/bin/moto_server" ]; then
  echo "test-tools: installing moto server into $tools/venv" >&2
  python3 -m venv "$tools/venv" >&2
  "$tools/venv/bin/pip" install --quiet 'moto[server]>=5,<6' >&2
fi

echo "$tools"
