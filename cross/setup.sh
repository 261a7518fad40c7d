#!/usr/bin/env bash
# Installs what cross-building and testing for the vehicles needs, when missing:
# the Rust target, the aarch64 C compiler (ring builds C), qemu to run the result.
# Idempotent; needs root for apt-get (CI and the dev machines run as root).
set -euo pipefail
target=${1:-aarch64-unknown-linux-musl}
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
need=()
command -v file >/dev/null || need+=(file)
case $target in
  aarch64-*) command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
             command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static) ;;
  armv7-*)   command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
             command -v qemu-arm-static >/dev/null || need+=(qemu-user-static) ;;
esac
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
