#!/usr/bin/env bash
# Before a commit: formatting, clippy and the unit tests; about a minute on a warm build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets --all-features -q -- -D warnings
cargo test --lib --bins -q
