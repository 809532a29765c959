#!/usr/bin/env bash
# Configures (once) and builds stlm in ./build with Ninja and ccache.
# Usage: scripts/build.sh [ninja targets...]   (default: all)
# Environment: STLM_BUILD_DIR (default: build), STLM_BUILD_TYPE (default:
# Release), STLM_JOBS (default: 2), STLM_CMAKE_ARGS (more -D options, used
# when the build directory is configured).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${STLM_BUILD_DIR:-$root/build}
build_type=${STLM_BUILD_TYPE:-Release}
jobs=${STLM_JOBS:-2}

"$root/scripts/install-deps.sh"

if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -G Ninja -S "$root" -B "$build_dir" \
    -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ ${STLM_CMAKE_ARGS:-} \
    >/dev/null
fi
ninja -C "$build_dir" -j "$jobs" "$@"
