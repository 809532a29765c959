#!/usr/bin/env bash
# Compiled stlm vs PyTorch on one model, in one run: training step, forward
# (loss) and KV-cached generation, as bytes/s and ratios.
#
#   bench/ref3m.sh [SPEC.yaml] [--threads N] [--steps N] [--rounds R]
#                  [--plot DIR]
#
# Default spec: examples/models/ref-3m.yaml; 2 threads; 20 timed calls
# (medians) per round; 3 rounds alternating stlm and PyTorch (medians of
# the rounds, and each round's ratio). Needs a build (scripts/build.sh) and
# PyTorch (scripts/install-deps.sh --bench). For a fair peer it unsets
# OPENBLAS_CORETYPE, sets OMP_WAIT_POLICY=passive and the thread count on
# both sides. --plot DIR keeps the results (DIR/<model>.txt) and draws them
# (bench/plot_bench.py: DIR/<model>-vs-pytorch.png).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
spec="$root/examples/models/ref-3m.yaml"
threads=2
steps=20
rounds=3
plot=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --plot) plot="$2"; shift 2 ;;
    -*) echo "ref3m.sh: unknown option $1" >&2; exit 2 ;;
    *) spec="$1"; shift ;;
  esac
done
for tool in stlm-compile stlm-run stlm-bench-model; do
  [[ -x "$bin/$tool" ]] || { echo "ref3m.sh: build first ($bin/$tool is missing)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "ref3m.sh: PyTorch is missing; run scripts/install-deps.sh --bench" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/stlm-compile" "$spec" -o "$work/art" > /dev/null
"$bin/stlm-run" init "$spec" -o "$work/w.safetensors" > /dev/null
manifest="$(ls "$work"/art/*.manifest.json)"
name="$(basename "$manifest" .manifest.json)"
/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spec"])' \
  "$manifest" > "$work/spec.json"

unset OPENBLAS_CORETYPE
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$threads"
# Alternate the two, `rounds` times each, so a noisy stretch of the
# machine hits both; report the median of each figure.
ours=() peer=()
for ((r = 0; r < rounds; r++)); do
  ours+=("$("$bin/stlm-bench-model" "$work/art/lib$name.so" "$work/w.safetensors" \
    --steps "$steps" --threads "$threads" --generate 128)")
  peer+=("$(/usr/bin/python3 "$root/bench/torch_model.py" "$work/spec.json" \
    --threads "$threads" --steps "$steps" --generate 128)")
done
report() {
/usr/bin/python3 - "${#ours[@]}" "${ours[@]}" "${peer[@]}" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
ours = [json.loads(x) for x in sys.argv[2:2 + n]]
peer = [json.loads(x) for x in sys.argv[2 + n:]]
def med(runs, key):
    return statistics.median(r[key] for r in runs)
o, p = ours[0], peer[0]
print(f"model {o['model']}: batch {o['batch']} x context {o['context']}, "
      f"{p['threads']} threads, peer {p['peer']} (fp32, its BLAS at "
      f"{med(peer, 'matmul_gflops'):.0f} GFLOP/s on a 1024x256x1024 matmul); "
      f"medians of {n} alternating rounds")
if med(peer, "matmul_gflops") < 30:
    print("warning: the peer's BLAS is slow (the reference BLAS?); "
          "scripts/install-deps.sh --bench installs OpenBLAS")
print(f"{'':10} {'stlm B/s':>12} {'PyTorch B/s':>12} {'ratio':>7}   per round")
for k in ("train", "forward", "generate"):
    a, b = med(ours, k + "_bytes_per_s"), med(peer, k + "_bytes_per_s")
    rounds = " ".join(f"{x[k + '_bytes_per_s'] / y[k + '_bytes_per_s']:.2f}"
                      for x, y in zip(ours, peer))
    print(f"{k:10} {a:12.0f} {b:12.0f} {a / b:6.2f}x   {rounds}")
print(f"(generate: greedy, KV cache, {o['generate_tokens']} tokens from a "
      "one-byte prompt, one sequence)")
print(json.dumps({"stlm": ours, "pytorch": peer}))
PY
}
if [[ -n "$plot" ]]; then
  mkdir -p "$plot"
  report | tee "$plot/$name.txt"
  /usr/bin/python3 "$root/bench/plot_bench.py" "$plot/$name.txt" -o "$plot"
else
  report
fi
