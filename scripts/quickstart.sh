#!/usr/bin/env bash
# The README's first command: installs what is missing (Debian packages),
# builds, assembles a default corpus (scripts/corpus.sh) unless --data
# names a text, compiles char-tiny, trains it for about two minutes with
# the live progress line (and a JSON-lines log), saves the checkpoint and
# generates text from a prompt. Everything it writes goes to build/quickstart/.
#
# Usage: scripts/quickstart.sh [--data FILE] [--seconds S] [--steps N]
#                              [--prompt TEXT] [--out DIR] [--no-build]
#   --data FILE    train on FILE instead of the default corpus
#   --seconds S    stop training after S seconds (default 120)
#   --steps N      training steps (default 4000; training stops at whichever
#                  of N steps and S seconds comes first; the learning rate
#                  follows the spec's schedule over its train.steps)
#   --prompt TEXT  what generation continues (default "The ")
#   --out DIR      where to write (default build/quickstart)
#   --no-build     use the build as it is (tests run the script this way)
# Environment: STLM_BUILD_DIR (default: build).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${STLM_BUILD_DIR:-$root/build}
data="" seconds=120 steps=4000 prompt="The " build=1 out=$build_dir/quickstart
while [[ $# -gt 0 ]]; do
  case $1 in
    --data) data=${2:?--data needs a file}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --steps) steps=${2:?--steps needs a number}; shift 2 ;;
    --prompt) prompt=${2?--prompt needs a text}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
               exit 0 ;;
    *) echo "quickstart.sh: error: unknown option '$1' (see --help)" >&2
       exit 2 ;;
  esac
done

if [[ $build == 1 ]]; then
  echo "== building (first time: about 40 minutes on 2 cores)"
  "$root/scripts/build.sh" stlm-compile stlm-run stlm-kernelgen
fi
bin=$build_dir/bin
mkdir -p "$out"
if [[ -z $data ]]; then
  data=$out/corpus.txt
  "$root/scripts/corpus.sh" "$data"
fi
spec=$root/examples/models/char-tiny.yaml

echo "== compiling $spec"
"$bin/stlm-compile" "$spec" -o "$out/char-tiny"

echo "== training for up to $seconds s on $data"
rm -f "$out/train.jsonl"
"$bin/stlm-run" train "$spec" --data "$data" --steps "$steps" \
  --max-time "$seconds" --eval-every 500 --artifact "$out/char-tiny" \
  --log "$out/train.jsonl" --save "$out/char-tiny.safetensors"

echo "== generating from \"$prompt\""
printf '%s' "$prompt"
"$bin/stlm-run" generate "$out/char-tiny.safetensors" --prompt "$prompt" \
  --tokens 400 --temperature 0.8 --top-k 40 --artifact "$out/char-tiny"
echo
echo "== done: checkpoint $out/char-tiny.safetensors, log $out/train.jsonl"
