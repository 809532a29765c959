#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test
# (lit + FileCheck IR tests and the GoogleTest binaries, through lit) and
# the generated dialect reference. Exit status 0 means all passed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/build.sh" all check-stlm
