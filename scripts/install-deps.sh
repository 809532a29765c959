#!/usr/bin/env bash
# Installs every Debian package stlm needs to build and test. Idempotent: when all
# packages are present it prints nothing and returns in well under a second.
# Usage: scripts/install-deps.sh [--bench | --llama-cpp]
#   --bench      adds python3-torch, the benchmark peer, and OpenBLAS, without
#                which Debian's torch falls back to the reference BLAS at a few
#                GFLOP/s; never needed to build or test.
#   --llama-cpp  adds llama.cpp: not a Debian package, it comes as the prebuilt
#                CPU libraries of the npm package node-llama-cpp (pinned below),
#                installed into build/llama-cpp (STLM_LLAMA_CPP_DIR overrides)
#                for scripts/llama-cpp.mjs. Needs Node.js 20 or later and the
#                npm registry; the GGUF export's llama.cpp test and
#                bench/decode.sh's llama.cpp columns use it, and skip without.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ "${1:-}" == "--llama-cpp" ]]; then
  version=3.21.1
  dir="${STLM_LLAMA_CPP_DIR:-$root/build/llama-cpp}"
  stamp="$dir/installed-$version"
  [[ -f "$stamp" ]] && exit 0
  command -v node > /dev/null && command -v npm > /dev/null || {
    echo "install-deps: llama.cpp needs node and npm (Node.js 20 or later)" >&2; exit 1; }
  major=$(node -p 'process.versions.node.split(".")[0]')
  if (( major < 20 )); then
    echo "install-deps: llama.cpp needs Node.js 20 or later; this is $(node --version)" >&2
    exit 1
  fi
  echo "install-deps: installing llama.cpp (node-llama-cpp $version, CPU libraries) into $dir" >&2
  mkdir -p "$dir"
  # Only the x64 CPU libraries: the optional GPU and other-platform builds
  # are 700 MB. Install scripts stay off (the package's would try to build
  # from source when its prebuilt libraries do not fit).
  [[ -f "$dir/package.json" ]] || echo '{"private": true}' > "$dir/package.json"
  timeout 300 npm install --prefix "$dir" --save-exact --omit=optional --ignore-scripts \
    --no-audit --no-fund --loglevel=error \
    "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >&2
  touch "$stamp"
  echo "install-deps: done" >&2
  exit 0
fi

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
case "${1:-}" in
  "") ;;
  --bench) packages+=(python3-torch libopenblas0-pthread) ;;
  *) echo "install-deps: unknown option '$1' (usage: install-deps.sh [--bench | --llama-cpp])" >&2
     exit 2 ;;
esac

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
