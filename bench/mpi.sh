#!/usr/bin/env bash
# Data-parallel training on this machine: for each model, in one run,
#   A  1 rank  x 2 threads, the spec as shipped (batch B)
#   B  1 rank  x 2 threads, accumulate 2 (global batch 2B: B's math)
#   C  2 ranks x 1 thread under mpirun (global batch 2B, data-parallel)
# as ms/step and bytes/s (medians of the per-step times of each run, the
# first steps left out, then medians over rounds that alternate A, B, C),
# with C's all-reduce time per step and its share of C's step. Then, with
# --model-100m, stlm-100m's measured single-rank step time goes into
# bench/mpi_model.py: how its step grows with ranks at 1 and 100 Gb/s.
#
#   bench/mpi.sh [--models "char-tiny ref-3m stlm-10m"] [--steps N]
#                [--rounds R] [--model-100m]
#
# Needs a build with MPI (scripts/build.sh; scripts/install-deps.sh
# installs OpenMPI) and ../shared/data/tinyshakespeare.txt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
data="$root/../shared/data/tinyshakespeare.txt"
models="char-tiny ref-3m stlm-10m"
steps=30
rounds=3
model100=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --model-100m) model100=1; shift ;;
    *) echo "mpi.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/stlm-run" ]] || { echo "mpi.sh: build first ($bin/stlm-run is missing)" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "mpi.sh: no mpirun; run scripts/install-deps.sh" >&2; exit 1; }
[[ -r "$data" ]] || { echo "mpi.sh: $data is missing" >&2; exit 1; }
mpirun=(mpirun --oversubscribe --bind-to core --mca btl_vader_single_copy_mechanism none)
[[ $(id -u) -eq 0 ]] && mpirun+=(--allow-run-as-root)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export OMP_WAIT_POLICY=passive

# Median per-step seconds of a JSON-lines log (steps after the first 3),
# and the median all-reduce seconds when it has them.
stats() {
  /usr/bin/python3 - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"event":"train"' in l]
t = [r["elapsed_s"] for r in rows]
d = [b - a for a, b in zip(t[2:], t[3:])]
red = [r["allreduce_s"] for r in rows[3:] if "allreduce_s" in r]
print(statistics.median(d), statistics.median(red) if red else 0)
PY
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(mpirun --version | head -1)"
echo
echo "| model | bytes all-reduced | A: 1 rank x 2 thr, batch B | B: 1 rank x 2 thr, accumulate 2 | C: 2 ranks x 1 thr | C all-reduce / step | C vs B |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for model in $models; do
  spec="$root/examples/models/$model.yaml"
  sed '/^train:/a\  accumulate: 2' "$spec" > "$work/$model-acc2.yaml"
  batch=$(sed -n 's/^  batch: *//p' "$spec")
  context=$(sed -n 's/^  context: *//p' "$spec")
  run() { # label, then the command
    local label=$1; shift
    "$@" --data "$data" --steps "$steps" --eval-windows "$batch" --quiet \
      --log "$work/$label.jsonl" > /dev/null
    stats "$work/$label.jsonl"
    rm -f "$work/$label.jsonl"
  }
  a=() b=() c=() r=()
  for ((i = 0; i < rounds; ++i)); do
    read -r s _ < <(run A "$bin/stlm-run" train "$spec" --threads 2 --artifact "$work/$model-a")
    a+=("$s")
    read -r s _ < <(run B "$bin/stlm-run" train "$work/$model-acc2.yaml" --threads 2 --artifact "$work/$model-b")
    b+=("$s")
    read -r s red < <(run C "${mpirun[@]}" -np 2 "$bin/stlm-run" train "$spec" --threads 1 --artifact "$work/$model-c")
    c+=("$s"); r+=("$red")
  done
  bytes=$(/usr/bin/python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
s = [x for x in m["state"] if x["name"].startswith("grad_acc.") or x["name"] == "loss_acc"]
def size(x):
    n = 4
    for d in x["shape"]: n *= d
    return n
print(max(x["offset"] + size(x) for x in s) - min(x["offset"] for x in s))' "$work/$model-c/$model.manifest.json")
  /usr/bin/python3 - "$model" "$bytes" "$batch" "$context" "${a[*]}" "${b[*]}" "${c[*]}" "${r[*]}" <<'PY'
import statistics as st, sys
model, nbytes, batch, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a, b, c, r = ([float(x) for x in s.split()] for s in sys.argv[5:9])
A, B, C, R = st.median(a), st.median(b), st.median(c), st.median(r)
tok = batch * context
fmt = lambda s, n: "%.1f ms, %.1f kB/s" % (1e3 * s, n * tok / s / 1e3)
print("| %s | %.2f MB | %s | %s | %s | %.2f ms (%.1f %%) | %.2fx |" % (
    model, nbytes / 1e6, fmt(A, 1), fmt(B, 2), fmt(C, 2), 1e3 * R,
    100 * R / C, B / C))
PY
done

if [[ $model100 -eq 1 ]]; then
  spec="$root/examples/models/stlm-100m.yaml"
  "$bin/stlm-run" train "$spec" --data "$data" --steps 5 --threads 2 \
    --eval-windows 8 --artifact "$work/100m" --quiet --log "$work/100m.jsonl" > /dev/null
  read -r s _ < <(stats "$work/100m.jsonl")
  # The reduced buffer: a 64-byte aligned sum per parameter, then loss_acc.
  bytes=$(/usr/bin/python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
def size(x):
    n = 4
    for d in x["shape"]: n *= d
    return (n + 63) // 64 * 64
print(sum(size(p) for p in m["params"]) + 4)' "$work/100m/stlm-100m.manifest.json")
  echo
  echo "stlm-100m: one rank x 2 threads, $(printf '%.2f' "$s") s per step (batch 8 x 512)"
  /usr/bin/python3 "$root/bench/mpi_model.py" --compute-s "$s" --bytes "$bytes" \
    --tokens-per-rank 4096
fi
