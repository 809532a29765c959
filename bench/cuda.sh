#!/usr/bin/env bash
# The CUDA artifact against PyTorch on the same GPU, in one run: for each
# model under DIR/bench (an artifact and init.safetensors, as
# scripts/cuda-device.sh prepares them), stlm-bench-model (median ms of a
# training step, forward pass and batch-1 KV-cached generation through the
# C runtime) and bench/torch_gpu.py (PyTorch eager, torch.compile and the
# step as one CUDA graph; eager KV-cached generation), then a table of
# ms/step, tokens/s and our ratio to each.
#
#   bench/cuda.sh DIR [--steps N] [--forms eager,compile,graph] [--fp32]
#
# bench/plot_bench.py draws its output (run it where matplotlib is, e.g.
# on the log scripts/cuda-device.sh's run.sh brings back as bench.log).
set -uo pipefail
dir="$1"; shift
steps=30
forms="eager,compile,graph"
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --forms) forms="$2"; shift 2 ;;
    --fp32) extra+=(--fp32); shift ;;
    *) echo "cuda.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "$0")" && pwd)"
torch_py="$here/torch_gpu.py"
[[ -f "$torch_py" ]] || torch_py="$here/../bench/torch_gpu.py"
declare -A peers # one PyTorch run per model: variants share it
for m in "$dir"/bench/*/; do
  name="$(basename "$m")"
  lib="$(ls "$m"/lib*.so)"
  model="$(basename "$lib" .so)"; model="${model#lib}"
  init="$m/init.safetensors"
  [[ -e "$init" ]] || init=random
  ours="$("$dir/bin/stlm-bench-model" "$lib" "$init" --steps "$steps" --generate 256)" ||
    { echo "$name: stlm-bench-model failed" >&2; continue; }
  if [[ -z "${peers[$model]:-}" ]]; then
    peers[$model]="$(python3 "$torch_py" "$m"/*.manifest.json --steps "$steps" --forms "$forms" "${extra[@]}")" ||
      { echo "$name: torch_gpu.py failed" >&2; continue; }
  fi
  peer="${peers[$model]}"
  echo "== $name"
  echo "$ours"
  echo "$peer"
  python3 - "$ours" "$peer" "$forms" <<'PY'
import json, sys
o, p, forms = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3].split(",")
n = o["batch"] * o["context"]
print(f"{o['model']} (batch {o['batch']} x {o['context']}) on {p['gpu']}:")
print(f"  stlm cuda      {o['train_ms']:8.3f} ms/step  {n / o['train_ms'] * 1e3:12.0f} tokens/s")
for f in forms:
    ms = p[f + "_ms"]
    print(f"  torch {f:8s} {ms:8.3f} ms/step  {n / ms * 1e3:12.0f} tokens/s   stlm is {ms / o['train_ms']:5.2f}x")
print(f"  generation (batch 1, {o['generate_tokens']} tokens): stlm {o['generate_bytes_per_s']:.0f} tokens/s, "
      f"torch eager {p['generate_tokens_per_s']:.0f} tokens/s: {o['generate_bytes_per_s'] / p['generate_tokens_per_s']:.2f}x")
PY
done
