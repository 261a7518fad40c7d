#!/usr/bin/env bash
# run_tests.sh unit|integration|e2e|all
#   unit         pure logic, no servers (under a minute)
#   integration  the CLI and config through the real binary, no servers
#   e2e          the real binary against real local S3/CloudWatch servers
#   all          everything above
set -euo pipefail
cd "$(dirname "$0")/.."
e2e_tests=(--test e2e --test operations --test monitoring --test busybox)
case "${1:-all}" in
  unit) cargo test --bins ;;
  integration) cargo test --test cli ;;
  e2e) bash scripts/test-tools.sh >/dev/null; cargo test "${e2e_tests[@]}" ;;
  all) bash scripts/test-tools.sh >/dev/null; cargo test --all-targets ;;
  *) echo "usage: $0 unit|integration|e2e|all" >&2; exit 2 ;;
esac
