#!/usr/bin/env bash
# Builds the static release binary for a vehicle target (default aarch64 musl; x86_64 musl
# is the same build for the machine itself, what make bench measures) and
# prints its path and size. The C parts (ring) are compiled by the GNU cross gcc; the
# final link uses the same gcc with Rust's self-contained musl startup files and libc,
# so the result is fully static and runs under busybox with no libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-aarch64-unknown-linux-musl}
# An optional second argument, a cargo feature (test-knobs): the binary is then copied to
# tvm-upload-<feature> beside the shipped one, which the next plain build restores.
feature=${2:-}
bash cross/setup.sh "$target"
case $target in
  aarch64-unknown-linux-musl)
    export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc ;;
  armv7-unknown-linux-musleabihf)
    export CC_armv7_unknown_linux_musleabihf=arm-linux-gnueabihf-gcc
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER=arm-linux-gnueabihf-gcc ;;
  x86_64-unknown-linux-musl)
    # The vehicle's shape on the build machine, for make bench: the host gcc builds the
    # C parts and links with Rust's self-contained musl, as for the vehicles.
    export CC_x86_64_unknown_linux_musl=gcc
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=gcc ;;
  *) echo "cross/build.sh: unknown target $target" >&2; exit 2 ;;
esac
bin=target/$target/release/tvm-upload
if [ -n "$feature" ]; then
  cargo build --release --target "$target" --quiet --features "$feature"
  cp "$bin" "$bin-$feature"
  bin=$bin-$feature
else
  cargo build --release --target "$target" --quiet
fi
size=$(stat -c %s "$bin")
awk -v b="$bin" -v s="$size" 'BEGIN { printf "%s: %d bytes (%.2f MiB)\n", b, s, s / 1048576 }'
