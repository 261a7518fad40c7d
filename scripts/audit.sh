#!/usr/bin/env bash
# cargo-deny: licenses, banned or duplicate crates, and sources (crates.io only), from
# deny.toml; and the RustSec advisories when the advisory database can be fetched (it
# lives on GitHub, which some build machines cannot reach: then that check is skipped
# and says so, rather than failing or passing silently).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(bash scripts/test-tools.sh --cargo cargo-deny | tail -n 1)
deny="$tools/bin/cargo-deny"
"$deny" check bans licenses sources
if timeout 60 "$deny" fetch >/dev/null 2>&1; then
  "$deny" check advisories
else
  echo "audit: the RustSec advisory database could not be fetched from here; advisories NOT checked" >&2
fi
