#!/usr/bin/env bash
# Installs every Debian package stlm needs to build and test. Idempotent: when all
# packages are present it prints nothing and returns in well under a second.
# Usage: scripts/install-deps.sh [--bench]   (--bench adds python3-torch, the
# benchmark peer, and OpenBLAS, without which Debian's torch falls back to
# the reference BLAS at a few GFLOP/s; never needed to build or test).
set -euo pipefail

packages=(
  cmake ninja-build ccache g++ python3 pkg-config
  python3-numpy python3-matplotlib
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
  libhalide14-0-dev
  libgtest-dev
  libyaml-cpp-dev nlohmann-json3-dev
  zlib1g-dev libzstd-dev libedit-dev libcurl4-openssl-dev libxml2-dev
  libopenmpi-dev openmpi-bin
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch libopenblas0-pthread)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
