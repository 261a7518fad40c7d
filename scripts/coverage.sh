#!/usr/bin/env bash
# Line coverage with cargo-llvm-cov over the whole suite (the e2e tests' runs of the
# binary are instrumented too). Installs the tool (pinned in scripts/test-tools.lock) into the tools cache.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(bash scripts/test-tools.sh | tail -n 1)
rustup component list --installed | grep -q llvm-tools || rustup component add llvm-tools-preview
bash scripts/test-tools.sh --cargo cargo-llvm-cov >/dev/null
PATH="$tools/bin:$PATH" cargo llvm-cov --all-targets --features csv2kafka,test-knobs --summary-only 2>&1 | tee target/coverage.txt | tail -30
echo "coverage: full table in target/coverage.txt"
