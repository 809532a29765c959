#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test
# (lit + FileCheck IR tests and the GoogleTest binaries, through lit) and
# the generated dialect reference. Exit status 0 means all passed.
# Usage: scripts/test.sh [--sanitize]
#   --sanitize  the same suite built with AddressSanitizer and
#               UndefinedBehaviorSanitizer, in build-sanitize/ (a separate
#               build; STLM_BUILD_DIR overrides)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  "") ;;
  --sanitize)
    export STLM_BUILD_DIR=${STLM_BUILD_DIR:-$root/build-sanitize}
    export STLM_CMAKE_ARGS="-DSTLM_SANITIZE=ON" ;;
  *) echo "test.sh: error: unknown option '$1' (usage: scripts/test.sh [--sanitize])" >&2
     exit 2 ;;
esac
# llama.cpp runs the GGUF export in one test; without it (no Node.js 20 or
# no npm registry) that test is skipped, never failed.
"$root/scripts/install-deps.sh" --llama-cpp ||
  echo "test.sh: llama.cpp was not installed; the GGUF export is not run by it" >&2
"$root/scripts/build.sh" all check-stlm
