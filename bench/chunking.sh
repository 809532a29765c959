#!/usr/bin/env bash
# How a byte-pool model's chunking changes what it learns, in one run:
# byte-pool-3m trained with `words` chunks and with `given` chunks placed
# by a small byte model's next-byte entropy (stlm-run entropy, the Byte
# Latent Transformer's rule), against char-tiny, the scorer itself. Every
# model trains natively on the same text for the same number of steps;
# the table gives each one's validation bits per byte (pooled over the
# whole validation split), its mean chunk length and its training speed in
# real bytes per second.
#
#   bench/chunking.sh [--data FILE] [--steps N] [--scorer-steps N]
#                     [--mean-bytes M] [--threads N] [--out DIR]
#
# Defaults: ../shared/data/tinyshakespeare.txt, 600 steps per byte-pool
# model, 2000 for the scorer, entropy chunks of 5 bytes on average (about
# the words rule's mean on English), 2 threads, DIR a temporary directory
# (kept: the checkpoints, the side file, the JSON logs). Needs a build
# (scripts/build.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/build/bin"
data="$root/../shared/data/tinyshakespeare.txt"
steps=600
scorer_steps=2000
mean=5
threads=2
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --scorer-steps) scorer_steps="$2"; shift 2 ;;
    --mean-bytes) mean="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "chunking.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f "$data" ]] || { echo "chunking.sh: no data file $data" >&2; exit 1; }
[[ -x "$bin/stlm-run" ]] || { echo "chunking.sh: build first (scripts/build.sh)" >&2; exit 1; }
out="${out:-$(mktemp -d /tmp/stlm-chunking.XXXXXX)}"
mkdir -p "$out"
run() { "$bin/stlm-run" "$@" --threads "$threads"; }

echo "chunking.sh: $data, results in $out" >&2
# The scorer: char-tiny, a token model over bytes.
run train "$root/examples/models/char-tiny.yaml" --data "$data" \
  --steps "$scorer_steps" --eval-windows 0 --quiet \
  --log "$out/char-tiny.jsonl" --save "$out/scorer.safetensors"
run entropy "$out/scorer.safetensors" --data "$data" -o "$out/text.starts" \
  --mean-bytes "$mean" --quiet | tee "$out/entropy.txt" >&2

# byte-pool-3m with words, and the same model chunked where the scorer is
# surprised.
sed 's/chunking: words/chunking: given/; s/^name: byte-pool-3m/name: byte-pool-3m-given/' \
  "$root/examples/models/byte-pool-3m.yaml" > "$out/byte-pool-3m-given.yaml"
run train "$root/examples/models/byte-pool-3m.yaml" --data "$data" \
  --steps "$steps" --eval-windows 0 --quiet --log "$out/words.jsonl" \
  --save "$out/words.safetensors"
run train "$out/byte-pool-3m-given.yaml" --data "$data" \
  --chunk-starts "$out/text.starts" --steps "$steps" --eval-windows 0 \
  --quiet --log "$out/given.jsonl" --save "$out/given.safetensors"

python3 - "$out" "$data" <<'EOF'
import json, sys
out, data = sys.argv[1], sys.argv[2]
text = open(data, 'rb').read()
words = sum(1 for i, b in enumerate(text)
            if i == 0 or (b < 128 and not chr(b).isalnum()))
starts = sum(1 for l in open(out + '/text.starts') if not l.startswith('#')) + 1
def last(path):
    evals, speeds, step = [], [], 0
    for line in open(path):
        j = json.loads(line)
        if j['event'] == 'eval':
            evals.append(j)
        elif j['event'] == 'train':
            speeds.append(j['bytes_per_s'])
            step = j['step']
    speeds.sort()
    return evals[-1], step, speeds[len(speeds) // 2] if speeds else 0
rows = [('char-tiny (scorer)', 'one byte', 'char-tiny.jsonl', 1.0),
        ('byte-pool-3m', 'words', 'words.jsonl', len(text) / words),
        ('byte-pool-3m', 'entropy', 'given.jsonl', len(text) / starts)]
print('%-20s %-9s %6s %10s %10s %12s' % ('model', 'chunks', 'steps',
      'bytes/chunk', 'val bpb', 'bytes/s'))
for name, chunks, log, per in rows:
    e, step, speed = last(out + '/' + log)
    print('%-20s %-9s %6d %10.2f %10.3f %12.0f' % (name, chunks, step, per,
          e['bits_per_byte'], speed))
EOF
