#!/usr/bin/env python3
"""Random valid model specs, and a driver that compiles and trains each.

Draws specs from the whole space MODEL_SPEC allows (token and byte_pool
embedders, every tying mode, LoRA, grouped KV heads, both FFNs, every
objective but distill, accumulation, bf16), with sizes at their edges (1s,
odd widths) but small enough to compile in seconds. A draw the spec checker
refuses (exit 1, e.g. heads not dividing width) is drawn again; what stays
is valid by the checker's own rules.

Each spec then goes through `stlm-compile --emit=llvm` (exit 0, or 3 for a
valid spec the native path cannot compile yet), and `stlm-run train` for
one step with `--backend auto` (native where it compiles, the reference
otherwise) or `--backend reference`. Anything else, above all a signal, is
a finding: the spec is kept in the output directory and reported.

  random-specs.py --bin build/bin --count 1000 --seed 7 --out /tmp/specs
  random-specs.py ... --native 5   # the first 5 also train natively
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import time


def draw(rng, index):
    """One spec as YAML text (maybe invalid; the checker decides), and the
    vocabulary its data must stay in."""
    pick = rng.choice
    byte_pool = rng.random() < 0.3
    vocab = 256
    heads = pick([1, 1, 2, 3, 4])
    head_dim = pick([1, 2, 2, 4, 8])
    kv = pick([d for d in range(1, heads + 1) if heads % d == 0])
    width = heads * head_dim
    layers = pick([1, 1, 2, 3, 4])
    lines = ["name: r%d" % index]
    if byte_pool:
        chunk = pick([1, 2, 3, 4, 6])
        ew = pick([1, 2, 4])
        byte_width = ew * pick([1, 2, 4])
        chunking = pick(["fixed", "words"])
        emb = ("{kind: byte_pool, chunking: %s, chunk_bytes: %d, "
               "byte_width: %d, encoder_layers: %d, encoder_heads: %d, "
               "pool: %s" % (chunking, chunk, byte_width, pick([1, 2]), ew,
                             pick(["mean", "masked_mean", "max"])))
        if chunking == "fixed":
            emb += ", stride: %d" % rng.randint(1, chunk)
        lines.append("embedder: " + emb + "}")
    else:
        vocab = pick([2, 17, 256, 300])
        lines.append("embedder: {kind: token, vocab_size: %d}" % vocab)
    lines.append("core: {layers: %d, width: %d, heads: %d, kv_heads: %d, "
                 "ffn: %s, ffn_width: %d, context: %d}"
                 % (layers, width, heads, kv, pick(["swiglu", "gelu"]),
                    pick([1, 3, width, 2 * width]), pick([1, 2, 5, 8, 16])))
    tying = []
    if not byte_pool and rng.random() < 0.5:
        tying.append("embed_head: true")
    for key in ("ffn", "attn_out"):
        if rng.random() < 0.4:
            tying.append("%s: %s" % (key, pick(["all", "interior"])))
    if rng.random() < 0.3:
        tying.append("interior_keep: %d" % rng.randint(0, 2))
    if rng.random() < 0.4:
        tying.append("lora_rank: %d" % pick([1, 2, 3]))
    if tying:
        lines.append("tying: {%s}" % ", ".join(tying))
    if byte_pool:
        lines.append("head: {kind: byte_chunk, decoder_layers: %d, "
                     "decoder_heads: %d}" % (pick([1, 2]), ew))
        objectives = ["{kind: chunk_bytes, mask_pad: %s}"
                      % pick(["true", "false"])]
        if rng.random() < 0.3:
            objectives.append("{kind: reconstruction, weight: 0.5}")
    else:
        objectives = [pick(["{kind: next_token}",
                            "{kind: masked_next_token, mask_prob: 0.3}"])]
    if rng.random() < 0.5:
        lines.append("objectives: [%s]" % ", ".join(objectives))
    train = ["batch: %d" % pick([1, 2, 3]), "warmup: 0", "steps: 4"]
    if rng.random() < 0.3:
        train.append("accumulate: %d" % pick([2, 3]))
    if rng.random() < 0.2:
        train.append("precision: bf16")
    if rng.random() < 0.2:
        train.append("schedule: constant")
    lines.append("train: {%s}" % ", ".join(train))
    return "\n".join(lines) + "\n", min(vocab, 256)


def run(argv, timeout):
    """(exit status or -signal, output) of a command."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return "timeout", ""


def describe(status):
    if status == "timeout":
        return "timed out"
    if isinstance(status, int) and status < 0:
        return "killed by %s" % signal.Signals(-status).name
    return "exit %s" % status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True,
                    help="directory of stlm-compile and stlm-run")
    ap.add_argument("--count", type=int, default=24,
                    help="valid specs to try")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="a directory for the specs")
    ap.add_argument("--native", type=int, default=0,
                    help="how many of the specs also train natively "
                         "(a full compile each, seconds)")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    compiler = os.path.join(a.bin, "stlm-compile")
    runner = os.path.join(a.bin, "stlm-run")
    os.makedirs(a.out, exist_ok=True)
    text = b"To be, or not to be, that is the question.\n" * 400

    def data_for(vocab):
        """Text for a model of `vocab` tokens: bytes it can read."""
        path = os.path.join(a.out, "data-%d.txt" % vocab)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(text if vocab == 256
                        else bytes(b % vocab for b in text))
        return path
    rng = random.Random(a.seed)
    findings, valid, drawn, cannot = [], 0, 0, 0
    start = time.time()
    while valid < a.count:
        drawn += 1
        if drawn > 50 * a.count:
            print("error: only %d valid specs in %d draws" % (valid, drawn))
            return 1
        spec = os.path.join(a.out, "spec-%d.yaml" % drawn)
        yaml, vocab = draw(rng, drawn)
        with open(spec, "w") as f:
            f.write(yaml)
        lower = [compiler, spec, "--emit=llvm", "-o", os.devnull]
        status, out = run(lower, a.timeout)
        if status == 1:  # refused by the checker: draw again
            os.remove(spec)
            continue
        valid += 1
        steps = []
        if status in (0, 3):
            cannot += status == 3
            backend = "auto" if valid <= a.native else "reference"
            steps.append([runner, "train", spec, "--data", data_for(vocab),
                          "--steps",
                          "1", "--eval-windows", "3", "--quiet", "--backend",
                          backend] +
                         (["--artifact", spec + ".art"]
                          if backend == "auto" else []))
        bad = None if status in (0, 3) else (lower, status, out)
        for argv in steps:
            if bad:
                break
            status, out = run(argv, a.timeout)
            if status != 0:
                bad = (argv, status, out)
        if bad:
            argv, status, out = bad
            findings.append(spec)
            print("FINDING %s: %s: %s\n%s" % (spec, " ".join(argv[:3]),
                                              describe(status),
                                              out.strip()[-2000:]))
        else:
            os.remove(spec)
        if valid % 50 == 0:
            print("%d valid specs of %d drawn, %d findings, %.0f s"
                  % (valid, drawn, len(findings), time.time() - start),
                  flush=True)
    print("%d valid specs (%d drawn; %d the native path cannot compile yet):"
          " %d findings" % (valid, drawn, cannot, len(findings)))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
