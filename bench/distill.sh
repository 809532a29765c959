#!/usr/bin/env bash
# What distillation buys a small byte model, in one run: char-tiny (1.1M
# parameters) is trained first as the teacher; then a student a tenth of
# its size (2 layers of width 64) trains natively for the same number of
# steps on the same text twice: on the text alone (next_token), and on
# the teacher's distribution mixed with the text (distill, τ and α below;
# the next_token objective at weight 0 only reports bits per byte). The
# table gives each one's validation bits per byte over the whole
# validation split and its training speed in bytes per second (the
# distilled student runs the teacher's forward pass in every step).
#
#   bench/distill.sh [--data FILE] [--steps N] [--teacher-steps N]
#                    [--temperature T] [--alpha A] [--threads N] [--out DIR]
#
# Defaults: ../shared/data/tinyshakespeare.txt, 2000 steps for every
# model, τ = 2, α = 0.5, 2 threads, DIR a temporary directory (kept: the
# specs, checkpoints and JSON logs). Needs a build (scripts/build.sh).
#
# Measured with the defaults (AMD Zen 5, 2 threads): teacher 2.391 bits
# per byte at 24.7 kB/s; the student 2.559 on the text alone at 115 kB/s,
# 2.508 distilled at 52 kB/s.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
data="$root/../shared/data/tinyshakespeare.txt"
steps=2000
teacher_steps=2000
temperature=2.0
alpha=0.5
threads=2
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --teacher-steps) teacher_steps="$2"; shift 2 ;;
    --temperature) temperature="$2"; shift 2 ;;
    --alpha) alpha="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "distill.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f "$data" ]] || { echo "distill.sh: no data file $data" >&2; exit 1; }
data="$(cd "$(dirname "$data")" && pwd)/$(basename "$data")" # used after cd
[[ -x "$bin/stlm-run" ]] || { echo "distill.sh: build first (scripts/build.sh)" >&2; exit 1; }
out="${out:-$(mktemp -d /tmp/stlm-distill.XXXXXX)}"
mkdir -p "$out"
cd "$out" # the student's spec names its teacher relative to here
run() { "$bin/stlm-run" "$@" --threads "$threads"; }

student() { # name, objectives
  cat <<SPEC
name: $1
embedder: {kind: token, vocab_size: 256}
core: {layers: 2, width: 64, heads: 4, ffn: swiglu, ffn_width: 256, context: 64}
tying: {embed_head: true}
objectives:
$2
train: {batch: 12, steps: $steps, lr: 2.0e-3, min_lr: 2.0e-4, warmup: 100}
SPEC
}
student char-micro "  - {kind: next_token}" > plain.yaml
student char-micro-distilled "  - {kind: next_token, weight: 0}
  - {kind: distill, teacher: teacher.safetensors, temperature: $temperature, alpha: $alpha}" \
  > distilled.yaml

echo "distill.sh: $data, results in $out" >&2
run train "$root/examples/models/char-tiny.yaml" --data "$data" \
  --steps "$teacher_steps" --eval-windows 0 --quiet --log teacher.jsonl \
  --save teacher.safetensors
run train plain.yaml --data "$data" --eval-windows 0 --quiet \
  --log plain.jsonl --save plain.safetensors
run train distilled.yaml --data "$data" --eval-windows 0 --quiet \
  --log distilled.jsonl --save distilled.safetensors

python3 - "$out" "$temperature" "$alpha" <<'PY'
import json, sys
out, tau, alpha = sys.argv[1], sys.argv[2], sys.argv[3]
def last(path):
    evals, speeds, step = [], [], 0
    for line in open(out + '/' + path):
        j = json.loads(line)
        if j['event'] == 'eval':
            evals.append(j)
        elif j['event'] == 'train':
            speeds.append(j['bytes_per_s'])
            step = j['step']
    speeds.sort()
    return evals[-1], step, speeds[len(speeds) // 2] if speeds else 0
rows = [('char-tiny (teacher)', 'next_token', 'teacher.jsonl'),
        ('char-micro', 'next_token', 'plain.jsonl'),
        ('char-micro', 'distill τ=%s α=%s' % (tau, alpha), 'distilled.jsonl')]
print('%-20s %-22s %6s %10s %12s' % ('model', 'objective', 'steps',
      'val bpb', 'bytes/s'))
for name, objective, log in rows:
    e, step, speed = last(log)
    print('%-20s %-22s %6d %10.3f %12.0f' % (name, objective, step,
          e['bits_per_byte'], speed))
PY
