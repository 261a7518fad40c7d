#!/usr/bin/env bash
# Line coverage with cargo-llvm-cov over the whole suite (the e2e tests' runs of the
# binary are instrumented too). Installs the tool into the tools cache once.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(bash scripts/test-tools.sh | tail -n 1)
rustup component list --installed | grep -q llvm-tools || rustup component add llvm-tools-preview
if [ ! -x "$tools/bin/cargo-llvm-cov" ]; then
  cargo install cargo-llvm-cov --locked --root "$tools"
fi
PATH="$tools/bin:$PATH" cargo llvm-cov --all-targets --features csv2kafka --summary-only 2>&1 | tee target/coverage.txt | tail -30
echo "coverage: full table in target/coverage.txt"
