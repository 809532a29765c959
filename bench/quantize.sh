#!/usr/bin/env bash
# What quantization costs in accuracy and buys in size, in one run: each
# model is trained natively on the text (its spec's steps, or --steps),
# its checkpoint quantized to int8 and to int4 (groups of --group inputs,
# `stlm-run quantize`), and the three evaluated by the same engine on the
# same validation windows: compiled (`stlm-compile`, and `--quantize` for
# the quantized ones), or the reference evaluator with --backend reference. The table gives validation bits per byte, the change against
# float, the float weights' size (without optimizer state) and the
# quantized files' sizes.
#
#   bench/quantize.sh [--models "char-tiny ref-3m stlm-10m"] [--steps N]
#                     [--group N] [--eval-windows N] [--data FILE]
#                     [--threads N] [--backend native|reference]
#                     [--out DIR]
#
# Defaults: char-tiny, its spec's steps, group 32, every validation
# window, ../shared/data/tinyshakespeare.txt, 2 threads, DIR a temporary
# directory (kept: checkpoints and logs). Models are examples/models/NAME.
#
# Measured with the defaults (AMD EPYC, 2 threads, the reference evaluator
# then): char-tiny 2.391 bits per byte float, 2.391 int8 (+0.00 %), 2.397
# int4 (+0.25 %); 4.33 MB of float weights, 1.32 MB int8, 0.80 MB int4.
# Needs a build (scripts/build.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
data="$root/../shared/data/tinyshakespeare.txt"
models="char-tiny"
steps=""
group=32
windows=""
threads=2
backend=native
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --group) group="$2"; shift 2 ;;
    --eval-windows) windows="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "quantize.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f "$data" ]] || { echo "quantize.sh: no data file $data" >&2; exit 1; }
[[ -x "$bin/stlm-run" ]] || { echo "quantize.sh: build first (scripts/build.sh)" >&2; exit 1; }
out="${out:-$(mktemp -d /tmp/stlm-quantize.XXXXXX)}"
mkdir -p "$out"
bpb() { sed -n 's/.*| \([0-9.]*\) bits\/byte.*/\1/p'; }
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.2f", b / 1e6 }'; }
rows=()
for m in $models; do
  spec="$root/examples/models/$m.yaml"
  [[ -f "$spec" ]] || { echo "quantize.sh: no model $spec" >&2; exit 1; }
  if [[ -n "$steps" ]]; then
    warm=$(( steps / 20 > 0 ? steps / 20 : 1 ))
    sed -e "s/^  steps: .*/  steps: $steps/" -e "s/^  warmup: .*/  warmup: $warm/" \
      "$spec" > "$out/$m.yaml"
    spec="$out/$m.yaml"
  fi
  echo "== $m: training" >&2
  "$bin/stlm-run" train "$spec" --data "$data" --threads "$threads" \
    --save "$out/$m.safetensors" --log "$out/$m.train.jsonl" --quiet
  evalArgs=(--data "$data" --backend "$backend")
  [[ $backend != reference ]] && evalArgs+=(--threads "$threads")
  [[ -n "$windows" ]] && evalArgs+=(--eval-windows "$windows")
  f=$("$bin/stlm-run" eval "$out/$m.safetensors" "${evalArgs[@]}" | bpb)
  row="| $m | $f"
  for s in int8 int4; do
    "$bin/stlm-run" quantize "$out/$m.safetensors" -o "$out/$m.$s.safetensors" \
      --to "$s" --group "$group" > "$out/$m.$s.log"
    # The float weights' size without optimizer state, as quantize counts it.
    [[ $s == int8 ]] && row+=" | $(sed -n 's/.*: \([0-9.]*\) MB -> .*/\1/p' "$out/$m.$s.log") MB"
    echo "== $m: $s" >&2
    q=$("$bin/stlm-run" eval "$out/$m.$s.safetensors" "${evalArgs[@]}" | bpb)
    row+=" | $q ($(awk -v a="$q" -v b="$f" 'BEGIN { printf "%+.2f %%", 100 * (a / b - 1) }')) | $(mb "$out/$m.$s.safetensors") MB"
  done
  rows+=("$row |")
done
echo
echo "validation bits per byte ($backend backend, same windows), group $group; files in $out"
echo "| model | float | weights | int8 | file | int4 | file |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
