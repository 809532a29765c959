#!/usr/bin/env bash
# Prepares a folder that runs the CUDA target's GPU tests and benchmark on a
# GPU machine that has no MLIR, Halide or Debian packages (the H200 that the
# `device` tool lends): everything is compiled here.
#
#   scripts/cuda-device.sh [DIR]        (default: .device-run in the repo)
#
# DIR/bin        CudaVsReferenceTests and stlm-bench-model (they link only
#                the runtime and libstdc++);
# DIR/cases      the GPU test's cases: each spec's CUDA artifact and the
#                reference evaluator's answers (CudaVsReferenceTest.cpp);
# DIR/bench      CUDA artifacts and initial weights of the benchmark models;
# DIR/run.sh     on the GPU machine: the tests, then bench/cuda.sh.
#
# Needs a build (scripts/build.sh) and the CUDA toolkit (/usr/local/cuda).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
out="${1:-$root/.device-run}"
for f in "$bin/stlm-compile" "$bin/stlm-run" "$bin/stlm-bench-model" \
         "$bin/stlm-record-reference" "$root/build/test/unit/CudaVsReferenceTests"; do
  [[ -x "$f" ]] || { echo "cuda-device.sh: build first ($f is missing)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/bin" "$out/cases" "$out/bench"
cp "$root/build/test/unit/CudaVsReferenceTests" "$bin/stlm-bench-model" "$out/bin/"
cp "$root/bench/torch_gpu.py" "$root/bench/cuda.sh" "$out/"
# The test's own cases, recorded and compiled (it skips: no GPU here).
STLM_CUDA_PREPARE="$out/cases" "$out/bin/CudaVsReferenceTests" > "$out/prepare.log" 2>&1 || {
  cat "$out/prepare.log" >&2; exit 1; }
for model in ${STLM_BENCH_MODELS:-char-tiny ref-3m}; do
  spec="$root/examples/models/$model.yaml"
  "$bin/stlm-compile" --target=cuda "$spec" -o "$out/bench/$model" > /dev/null
  "$bin/stlm-run" init "$spec" -o "$out/bench/$model/init.safetensors" > /dev/null
  rm -rf "$out/bench/$model/obj"
done
find "$out/cases" -name obj -type d -prune -exec rm -rf {} +
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: the CUDA tests against the recorded reference, then
# the benchmark against PyTorch. Results also go to $OUT when it is set.
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
log="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv,noheader
STLM_CUDA_CASES="$here/cases" "$here/bin/CudaVsReferenceTests" 2>&1 | tee "$log/tests.log" | grep -v "^\[ RUN\|^\[       OK" | tail -40
bash "$here/cuda.sh" "$here" "${@}" 2>&1 | tee "$log/bench.log"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
