#!/usr/bin/env bash
# Prepares a folder that runs the CUDA target's GPU tests and benchmark on a
# GPU machine that has no MLIR, Halide or Debian packages (the H200 that the
# `device` tool lends): everything is compiled here.
#
#   scripts/cuda-device.sh [DIR]        (default: .device-run in the repo)
#
# DIR/bin        CudaVsReferenceTests, stlm-bench-model and
#                stlm-bench-train (they link only the runtime and
#                libstdc++), cuda-attention-test and cuda-kernels-test
#                (the attention, RMSNorm and SwiGLU kernels against
#                doubles), cuda-matmul (cuBLASLt's algorithms at the
#                models' shapes);
# DIR/data       the text of the GPU training check (when ../shared/data
#                has it; never committed);
# DIR/cases      the GPU test's cases: each spec's CUDA artifact and the
#                reference evaluator's answers (CudaVsReferenceTest.cpp);
# DIR/bench      CUDA artifacts and initial weights of the benchmark models;
# DIR/run.sh     on the GPU machine: the tests, then bench/cuda.sh.
#
# The device tool carries 64 MiB at most: when DIR is larger, it is also
# packed as DIR.tar.xz (carry that; `tar -xJf` it there first).
#
# Needs a build (scripts/build.sh) and the CUDA toolkit (/usr/local/cuda).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
out="${1:-$root/.device-run}"
for f in "$bin/stlm-compile" "$bin/stlm-run" "$bin/stlm-bench-model" "$bin/stlm-bench-train" \
         "$bin/stlm-record-reference" "$root/build/test/unit/CudaVsReferenceTests"; do
  [[ -x "$f" ]] || { echo "cuda-device.sh: build first ($f is missing)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/bin" "$out/cases" "$out/bench"
cp "$root/build/test/unit/CudaVsReferenceTests" "$bin/stlm-bench-model" \
  "$bin/stlm-bench-train" "$out/bin/"
text="$root/../shared/data/tinyshakespeare.txt"
if [[ -f "$text" ]]; then
  mkdir -p "$out/data"
  cp "$text" "$out/data/"
fi
cp "$root/bench/torch_gpu.py" "$root/bench/cuda.sh" "$out/"
# cuBLASLt's algorithms at the models' matmul shapes (bench/cuda_matmul.cu).
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
"$nvcc" -O2 -std=c++17 -arch=sm_90 "$root/bench/cuda_matmul.cu" -lcublasLt -lcublas \
  -o "$out/bin/cuda-matmul"
# The attention kernels against attention in double (test/unit).
"$nvcc" -O2 -std=c++17 -arch=sm_90 -I"$root/codegen/cuda" \
  "$root/test/unit/CudaAttentionTest.cu" -lcublasLt -o "$out/bin/cuda-attention-test"
"$nvcc" -O2 -std=c++20 -arch=sm_90 -I"$root/codegen/cuda" \
  "$root/test/unit/CudaKernelsTest.cu" -o "$out/bin/cuda-kernels-test"
# The test's own cases, recorded and compiled (it skips: no GPU here).
STLM_CUDA_PREPARE="$out/cases" "$out/bin/CudaVsReferenceTests" > "$out/prepare.log" 2>&1 || {
  cat "$out/prepare.log" >&2; exit 1; }
# Benchmark models: NAME (examples/models/NAME.yaml, as shipped), NAME:tf32
# (compiled with --tf32), NAME:bf16 (train.precision: bf16) or NAME:random
# (as shipped, random weights drawn there: no checkpoint to carry), with
# :bN appended for train.batch N (the model is then named NAME-bN). A
# model's variants share its initial weights (bench/NAME.init.safetensors;
# a checkpoint ignores the train section), and a model the GPU test has as
# a case (char-tiny) uses that case's artifact and weights.
for entry in ${STLM_BENCH_MODELS:-char-tiny ref-3m:tf32 ref-3m:bf16 stlm-100m:random}; do
  model="${entry%%:*}"
  variant="${entry#"$model"}"; variant="${variant#:}"
  spec="$root/examples/models/$model.yaml"
  dir="$out/bench/$model${variant:+-$variant}"
  if [[ -z "$variant" && -d "$out/cases/$model/artifact" ]] &&
     cmp -s "$spec" "$out/cases/$model/spec.yaml"; then
    ln -s "../cases/$model/artifact" "$dir"
    ln -s ../init.safetensors "$out/cases/$model/artifact/init.safetensors"
    continue
  fi
  flags=()
  batch=""
  if [[ "$variant" =~ ^((.*):)?b([0-9]+)$ ]]; then
    variant="${BASH_REMATCH[2]}"
    batch="${BASH_REMATCH[3]}"
  fi
  case "$variant" in
    ""|random) ;;
    tf32) flags+=(--tf32) ;;
    bf16) sed 's/^train:$/train:\n  precision: bf16/' "$spec" > "$out/$model-bf16.yaml"
          spec="$out/$model-bf16.yaml" ;;
    *) echo "cuda-device.sh: unknown variant '$variant' of $model" >&2; exit 2 ;;
  esac
  if [[ -n "$batch" ]]; then
    sed -e "s/^  batch: .*/  batch: $batch/" -e "s/^name: .*/name: $model-b$batch/" \
      "$spec" > "$out/$model-b$batch.yaml"
    spec="$out/$model-b$batch.yaml"
  fi
  "$bin/stlm-compile" --target=cuda "${flags[@]}" "$spec" -o "$dir" > /dev/null
  if [[ "$variant" != random ]]; then
    [[ -f "$out/bench/$model.init.safetensors" ]] ||
      "$bin/stlm-run" init "$spec" -o "$out/bench/$model.init.safetensors" > /dev/null
    ln -s "../$model.init.safetensors" "$dir/init.safetensors"
  fi
done
rm -f "$out"/*.yaml
# Only what runs there travels (64 MiB at most): the shared libraries.
find "$out/cases" "$out/bench" -name obj -type d -prune -exec rm -rf {} +
find "$out/cases" "$out/bench" -name 'lib*.a' -delete
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: the CUDA tests against the recorded reference, then
# the benchmark against PyTorch. Results also go to $OUT when it is set.
here="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
log="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv,noheader
"$here/bin/cuda-attention-test" 2>&1 | tee "$log/attention.log" | grep -v "^  \|^B="
"$here/bin/cuda-kernels-test" 2>&1 | tee "$log/kernels.log" | grep -v "^ok"
STLM_CUDA_CASES="$here/cases" "$here/bin/CudaVsReferenceTests" 2>&1 | tee "$log/tests.log" | grep -v "^\[ RUN\|^\[       OK" | tail -40
# STLM_DEVICE_MATMUL=0 skips cuBLASLt's timings at the models' shapes.
[[ "${STLM_DEVICE_MATMUL:-1}" == 0 ]] || "$here/bin/cuda-matmul" 2>&1 | tee "$log/matmul.log"
# Where a step's device time goes (STLM_CUDA_PROFILE: eager, an event
# after every launch), for the first models and the largest.
for m in "$here"/bench/char-tiny "$here"/bench/ref-3m-tf32 "$here"/bench/stlm-100m-random:b64; do
  [[ -d "$m" ]] || continue
  init="$m/init.safetensors"; [[ -e "$init" ]] || init=random
  steps=5; [[ "$m" == *100m* ]] && steps=2
  STLM_CUDA_PROFILE=1 "$here/bin/stlm-bench-model" "$m"/lib*.so "$init" --steps "$steps" --generate 8 \
    > /dev/null 2> "$log/profile-$(basename "$m").log"
  echo "== profile $(basename "$m")"; head -16 "$log/profile-$(basename "$m").log"
done
# Training on the GPU: char-tiny for its spec's 2000 steps on the text,
# validation on 600 windows (the CPU reaches 1.65 nats or less); the
# checkpoint comes back in $OUT for stlm-run eval on the CPU.
if [[ -f "$here/data/tinyshakespeare.txt" && -d "$here/cases/char-tiny/artifact" ]]; then
  echo "== char-tiny trained on the GPU"
  "$here/bin/stlm-bench-train" "$here"/cases/char-tiny/artifact/libchar-tiny.so \
    "$here/cases/char-tiny/init.safetensors" "$here/data/tinyshakespeare.txt" \
    --eval-windows 600 --eval-every 500 --save "$log/char-tiny-gpu.safetensors" \
    2>&1 | tee "$log/train-char-tiny.log" | grep -v '"loss"'
fi
bash "$here/cuda.sh" "$here" "${@}" 2>&1 | tee "$log/bench.log"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
size=$(du -sbL "$out" | cut -f1)
if (( size > 60 * 1024 * 1024 )); then
  tar -cJf "$out.tar.xz" -C "$(dirname "$out")" "$(basename "$out")"
  du -h "$out.tar.xz"
fi
