#!/usr/bin/env bash
# run_tests.sh unit|e2e|chaos|all — the Makefile's test targets under shorter names; the
# test lists live in the Makefile only.
#   unit   pure logic, no servers (under a minute)             make test-quick
#   e2e    the real binary against real local servers           make test-e2e
#   chaos  the kill loop                                        make test-chaos
#   all    everything `make test` runs                          make test
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-all}" in
  unit) make test-quick ;;
  e2e) make test-e2e ;;
  chaos) make test-chaos ;;
  all) make test ;;
  *) echo "usage: $0 unit|e2e|chaos|all" >&2; exit 2 ;;
esac
