#!/usr/bin/env bash
# Batch-1 generation speed of float, int8 and int4 models against the
# machine's limit, in one run: for each model, initial weights (speed does
# not depend on training) quantized to int8 and int4 (`stlm-run
# quantize`), the three artifacts compiled (`stlm-compile`, `--quantize`),
# and stlm-bench-model's decode rate (greedy generation after a one-byte
# prompt, the first token timed apart) for each, in alternating rounds. The
# limit of a decode step is reading the weights once: their bytes over the
# read bandwidth that stlm-bench-bandwidth measures at that size (a cache
# level's for weights that fit it, memory's otherwise). The artifacts are
# compiled with --decode-batch B as well, and the same rounds time batched
# generation of B sequences (stlm_generate_batch), whose steps read the
# weights once for B tokens.
#
# llama.cpp runs the same weights in the same rounds where it is installed
# (scripts/install-deps.sh --llama-cpp; --no-llama-cpp leaves it out): each
# model exported to GGUF (`stlm-run export`, LoRA deltas merged) as f32,
# Q8_0 and Q4_0 beside our f32, int8 and int4, and the same greedy decode
# after the same one-byte prompt timed by its own counters
# (scripts/llama-cpp.mjs bench). Its binding spawns a thread pool per graph
# whose threads spin at barriers, which a 2-core machine punishes, so it
# runs at 1 thread and at N, and its better median is the peer. GELU models
# (ref-3m) do not export to GGUF and get no llama.cpp column.
#
#   bench/decode.sh [--models "ref-3m stlm-10m stlm-100m"] [--threads N]
#                   [--tokens N] [--rounds N] [--group N] [--batch B]
#                   [--no-llama-cpp] [--out DIR]
#
# Defaults: those three models (examples/models/NAME), 2 threads, 128
# tokens, 3 rounds (medians), group 32, batch 8 (0: none), DIR a temporary
# directory (kept: checkpoints, artifacts, raw JSON). Prints a table:
# weights MB, decode bytes/s, the bandwidth at that size, the limit and the
# share of it reached, the first token's milliseconds (after a one-byte
# prompt generation runs one decode step, not a prefill), then batch B's bytes/s
# (all sequences together) and its ratio to batch 1, then llama.cpp's
# tokens/s (a token is a byte) with the threads it had, and ours over its.
# Needs a build (scripts/build.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
models="ref-3m stlm-10m stlm-100m"
threads=2
tokens=128
rounds=3
group=32
batch=8
llama=1
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --group) group="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --no-llama-cpp) llama=0; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "decode.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in stlm-run stlm-compile stlm-bench-model stlm-bench-bandwidth; do
  [[ -x "$bin/$tool" ]] || { echo "decode.sh: no $bin/$tool: build first (scripts/build.sh)" >&2; exit 1; }
done
llama_cpp=(node "$root/scripts/llama-cpp.mjs" bench)
if [[ $llama == 1 ]] && ! { command -v node > /dev/null &&
    compgen -G "${STLM_LLAMA_CPP_DIR:-$root/build/llama-cpp}/installed-*" > /dev/null; }; then
  echo "decode.sh: llama.cpp is not installed (scripts/install-deps.sh --llama-cpp): no llama.cpp columns" >&2
  llama=0
fi
llama_threads=(1)
[[ "$threads" != 1 ]] && llama_threads+=("$threads")
declare -A gguf_type=([f32]=f32 [int8]=q8_0 [int4]=q4_0)
out="${out:-$(mktemp -d /tmp/stlm-decode.XXXXXX)}"
mkdir -p "$out"
echo "decode.sh: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $threads threads; files in $out" >&2
rows=()
for m in $models; do
  spec="$root/examples/models/$m.yaml"
  [[ -f "$spec" ]] || { echo "decode.sh: no model $spec" >&2; exit 1; }
  echo "== $m: weights and artifacts" >&2
  "$bin/stlm-run" init "$spec" -o "$out/$m.f32.safetensors" --seed 1 > /dev/null
  for s in int8 int4; do
    "$bin/stlm-run" quantize "$out/$m.f32.safetensors" \
      -o "$out/$m.$s.safetensors" --to "$s" --group "$group" > /dev/null
  done
  batched=()
  [[ "$batch" -gt 0 ]] && batched=(--decode-batch "$batch")
  "$bin/stlm-compile" "$spec" "${batched[@]}" -o "$out/$m.f32" > /dev/null 2>&1
  for s in int8 int4; do
    "$bin/stlm-compile" "$spec" "${batched[@]}" --quantize="$s" \
      --quantize-group="$group" -o "$out/$m.$s" > /dev/null 2>&1
  done
  exported=0
  if [[ $llama == 1 ]]; then
    exported=1
    for f in f32 int8 int4; do
      "$bin/stlm-run" export "$out/$m.f32.safetensors" --format gguf --merge-lora \
        --type "${gguf_type[$f]}" -o "$out/$m.${gguf_type[$f]}.gguf" > /dev/null 2> "$out/$m.export.err" ||
        { exported=0; echo "decode.sh: $m: no GGUF: $(tail -1 "$out/$m.export.err")" >&2; break; }
    done
  fi
  # Rounds alternate the forms (and llama.cpp's), so that the machine's
  # drift touches each alike.
  for ((r = 0; r < rounds; ++r)); do
    for f in f32 int8 int4; do
      "$bin/stlm-bench-model" "$out/$m.$f/lib$m.so" "$out/$m.$f.safetensors" \
        --steps 0 --threads "$threads" --generate "$tokens" --rounds 1 \
        >> "$out/$m.$f.jsonl"
      if [[ $exported == 1 ]]; then
        for t in "${llama_threads[@]}"; do
          "${llama_cpp[@]}" -m "$out/$m.${gguf_type[$f]}.gguf" -n "$tokens" -t "$t" \
            --rounds 1 >> "$out/$m.$f.llama.jsonl"
        done
      fi
    done
  done
  for f in f32 int8 int4; do
    # The bytes a decode step reads: the checkpoint's tensors.
    bytes=$(stat -c %s "$out/$m.$f.safetensors")
    bw="$("$bin/stlm-bench-bandwidth" "$bytes" --threads "$threads" --rounds 9)"
    rows+=("$(python3 - "$m" "$f" "$bytes" "$bw" "$out/$m.$f.jsonl" "$out/$m.$f.llama.jsonl" "${gguf_type[$f]}" <<'EOF'
import json, os, statistics, sys
m, f, size, bw, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
llama_path, gguf = sys.argv[6], sys.argv[7]
runs = [json.loads(l) for l in open(path)]
rate = statistics.median(r["decode_bytes_per_s"] for r in runs)
prefill = statistics.median(r["prefill_ms"] for r in runs)
limit = bw["gb_per_s"] * 1e9 / size
batched = [r["batch_decode_bytes_per_s"] for r in runs if r.get("batch_decode_bytes_per_s")]
if batched:
    b = statistics.median(batched)
    extra = f" {b:.0f} | {b / rate:.2f}x |"
else:
    extra = " - | - |"
# llama.cpp: the median of each thread count's rounds, the better one.
if os.path.exists(llama_path):
    by_threads = {}
    for l in open(llama_path):
        r = json.loads(l)
        by_threads.setdefault(r["threads"], []).append(r["decode_tokens_per_s"])
    t, peer = max(((t, statistics.median(v)) for t, v in by_threads.items()),
                  key=lambda p: p[1])
    extra += f" {gguf} {peer:.0f} ({t} thr) | {rate / peer:.2f}x |"
else:
    extra += " - | - |"
print(f"| {m} | {f} | {size / 1e6:.1f} | {rate:.0f} | {bw['gb_per_s']:.1f} | {limit:.0f} | {100 * rate / limit:.0f} % | {prefill:.0f} |{extra}")
EOF
)")
  done
done
echo
echo "| model | weights | MB | decode bytes/s | GB/s at that size | limit bytes/s | of limit | first token ms | batch $batch bytes/s | batch $batch / 1 | llama.cpp tokens/s | ours / llama.cpp |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
