#!/usr/bin/env bash
# Compiled stlm vs PyTorch on one model, in one run: training step, forward
# (loss) and KV-cached generation, as bytes/s and ratios.
#
#   bench/ref3m.sh [SPEC.yaml] [--threads N] [--steps N] [--rounds R]
#                  [--bf16] [--plot DIR]
#
# --bf16 sets the spec's train.precision to bf16 on both sides (stlm's
# bf16 matmuls where stlm-compile finds them faster on this CPU; PyTorch's
# CPU autocast to bfloat16).
# Default spec: examples/models/ref-3m.yaml; 2 threads; 20 timed calls
# (medians) per round; 3 rounds alternating stlm and PyTorch (medians of
# the rounds, and each round's ratio). Needs a build (scripts/build.sh) and
# PyTorch (scripts/install-deps.sh --bench). A fair peer: bench/fair_peer.py
# times PyTorch's matmuls on the model's own shapes under each OpenBLAS
# core type the CPU allows and the fastest is used; OMP_WAIT_POLICY=passive
# and the thread count are set on both sides. The report names the choice,
# its GFLOP/s and the machine's measured FMA peak (stlm-bench-matmul
# --peak), and prints no ratio when the peer's matmuls run under half of
# that peak. --plot DIR keeps the results (DIR/<model>.txt) and draws them
# (bench/plot_bench.py: DIR/<model>-vs-pytorch.png).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
spec="$root/examples/models/ref-3m.yaml"
threads=2
steps=20
rounds=3
plot=""
bf16=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --plot) plot="$2"; shift 2 ;;
    --bf16) bf16=1; shift ;;
    -*) echo "ref3m.sh: unknown option $1" >&2; exit 2 ;;
    *) spec="$1"; shift ;;
  esac
done
for tool in stlm-compile stlm-run stlm-bench-model stlm-bench-matmul; do
  [[ -x "$bin/$tool" ]] || { echo "ref3m.sh: build first ($bin/$tool is missing)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import torch' 2>/dev/null || {
  echo "ref3m.sh: PyTorch is missing; run scripts/install-deps.sh --bench" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ((bf16)); then
  grep -q '^train:$' "$spec" || { echo "ref3m.sh: --bf16 needs a train: section in $spec" >&2; exit 2; }
  sed -e '/^  precision:/d' -e 's/^train:$/train:\n  precision: bf16/' "$spec" > "$work/spec-bf16.yaml"
  spec="$work/spec-bf16.yaml"
fi
"$bin/stlm-compile" "$spec" -o "$work/art" > /dev/null
"$bin/stlm-run" init "$spec" -o "$work/w.safetensors" > /dev/null
manifest="$(ls "$work"/art/*.manifest.json)"
name="$(basename "$manifest" .manifest.json)"
/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["spec"])' \
  "$manifest" > "$work/spec.json"

# The peer at its best on this machine, and the yardstick.
fair="$(/usr/bin/python3 "$root/bench/fair_peer.py" "$work/spec.json" --threads "$threads")"
coretype="$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["env"]["OPENBLAS_CORETYPE"] or "")' "$fair")"
peak="$("$bin/stlm-bench-matmul" --peak --threads "$threads")"
unset OPENBLAS_CORETYPE
[[ -n "$coretype" ]] && export OPENBLAS_CORETYPE="$coretype"
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
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
/usr/bin/python3 - "$manifest" "$fair" "$peak" "${#ours[@]}" "${ours[@]}" "${peer[@]}" <<'PY'
import json, statistics, sys
manifest = json.load(open(sys.argv[1]))
fair, peak = json.loads(sys.argv[2]), json.loads(sys.argv[3])
n = int(sys.argv[4])
ours = [json.loads(x) for x in sys.argv[5:5 + n]]
peer = [json.loads(x) for x in sys.argv[5 + n:]]
def med(runs, key):
    return statistics.median(r[key] for r in runs)
o, p = ours[0], peer[0]
print(f"model {o['model']}: batch {o['batch']} x context {o['context']}, "
      f"{p['threads']} threads, precision {p.get('precision', 'fp32')}, "
      f"peer {p['peer']} (its BLAS at "
      f"{med(peer, 'matmul_gflops'):.0f} GFLOP/s on a 1024x256x1024 matmul); "
      f"medians of {n} alternating rounds")
if p.get("precision") == "bf16":
    print("stlm's matmuls: " + ("bf16 kernels" if manifest.get("bf16_compute")
                                else "fp32 kernels (bf16 measured slower on "
                                     "this CPU: stlm-compile's note)"))
tried = ", ".join(f"{c['OPENBLAS_CORETYPE'] or 'unset'} "
                  + (f"{c['gflops']:.0f}" if c["gflops"] else "failed")
                  for c in fair["candidates"])
chosen = fair["env"]["OPENBLAS_CORETYPE"] or "unset"
print(f"peer configuration: OPENBLAS_CORETYPE={chosen}, "
      f"{fair['gflops']:.0f} GFLOP/s on the model's {fair['shapes']} matmuls "
      f"(tried: {tried}); this machine's measured fp32 FMA peak "
      f"{peak['fma_peak_gflops']:.0f} GFLOP/s on {peak['threads']} threads")
fair_enough = fair["gflops"] >= 0.5 * peak["fma_peak_gflops"]
if not fair_enough:
    print(f"no ratio: the peer's matmuls run at {fair['gflops']:.0f} GFLOP/s, "
          f"under half of the FMA peak ({peak['fma_peak_gflops']:.0f}); "
          "its figures are shown, a ratio against them would not be fair")
print(f"{'':10} {'stlm B/s':>12} {'PyTorch B/s':>12} {'ratio':>7}   per round")
for k in ("train", "forward", "generate"):
    a, b = med(ours, k + "_bytes_per_s"), med(peer, k + "_bytes_per_s")
    rounds = " ".join(f"{x[k + '_bytes_per_s'] / y[k + '_bytes_per_s']:.2f}"
                      for x, y in zip(ours, peer))
    if fair_enough:
        print(f"{k:10} {a:12.0f} {b:12.0f} {a / b:6.2f}x   {rounds}")
    else:
        print(f"{k:10} {a:12.0f} {b:12.0f} {'n/a':>7}")
print(f"(generate: greedy, KV cache, {o['generate_tokens']} tokens from a "
      "one-byte prompt, one sequence)")
print(json.dumps({"stlm": ours, "pytorch": peer, "peer_config": fair,
                  "fma_peak": peak, "fair": fair_enough}))
PY
}
if [[ -n "$plot" ]]; then
  mkdir -p "$plot"
  report | tee "$plot/$name.txt"
  /usr/bin/python3 "$root/bench/plot_bench.py" "$plot/$name.txt" -o "$plot"
else
  report
fi
