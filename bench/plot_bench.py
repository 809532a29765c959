#!/usr/bin/python3
"""Draws bench/ref3m.sh's comparison: stlm against PyTorch, bytes per second
of the training step, the forward pass and batch-1 generation, each round
as a dot over the bar of its median, the ratio of medians above.

  bench/plot_bench.py RESULTS [-o DIR]

RESULTS is ref3m.sh's output (or a file holding its last line, the JSON
{"stlm": [rounds], "pytorch": [rounds]}); the PNG goes to
DIR/<model>-vs-pytorch.png (default: beside RESULTS). Runs with Debian's
python3 and python3-matplotlib.
"""
import argparse
import json
import os
import statistics
import sys

METRICS = [("train", "training step"), ("forward", "forward (loss)"),
           ("generate", "generation, batch 1")]


def fail(msg):
    print("plot_bench: error: " + msg, file=sys.stderr)
    sys.exit(1)


def load(path):
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail("%s: cannot read it: %s" % (path, e.strerror))
    for line in reversed(lines):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and r.get("stlm") and r.get("pytorch"):
            for side in ("stlm", "pytorch"):
                for run in r[side]:
                    for k, _ in METRICS:
                        if not isinstance(run.get(k + "_bytes_per_s"),
                                          (int, float)):
                            fail("%s: a %s round has no %s_bytes_per_s"
                                 % (path, side, k))
            return r
    fail("%s: no ref3m.sh result line ({\"stlm\": [...], \"pytorch\": "
         "[...]})" % path)


def main():
    parser = argparse.ArgumentParser(
        description="Draw bench/ref3m.sh's stlm-vs-PyTorch comparison.")
    parser.add_argument("results")
    parser.add_argument("-o", "--out")
    args = parser.parse_args()
    r = load(args.results)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is missing: apt-get install python3-matplotlib")
    ours, peer = r["stlm"], r["pytorch"]
    o, p = ours[0], peer[0]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4.2))
    for ax, (key, title) in zip(axes, METRICS):
        k = key + "_bytes_per_s"
        sides = [("stlm", ours, "C0"), ("PyTorch", peer, "C1")]
        meds = [statistics.median(x[k] for x in runs) / 1e3
                for _, runs, _ in sides]
        ax.bar([0, 1], meds, color=[c for _, _, c in sides], alpha=0.7,
               width=0.6)
        for i, (_, runs, _) in enumerate(sides):
            ax.plot([i] * len(runs), [x[k] / 1e3 for x in runs], "k.",
                    markersize=5)
        ax.set_xticks([0, 1], [name for name, _, _ in sides])
        ax.set_title("%s: %.2fx" % (title, meds[0] / meds[1]))
        ax.set_ylabel("kB/s (bar: median; dots: rounds)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("%s, batch %s x %s, %s threads; peer %s" % (
        o.get("model", "?"), o.get("batch", "?"), o.get("context", "?"),
        p.get("threads", "?"), p.get("peer", "PyTorch")))
    fig.tight_layout()
    out = args.out or os.path.dirname(os.path.abspath(args.results))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "%s-vs-pytorch.png" % o.get("model", "model"))
    fig.savefig(path, dpi=110)
    print("plot_bench: " + path)


if __name__ == "__main__":
    main()
