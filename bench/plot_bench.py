#!/usr/bin/python3
"""Draws the benchmark scripts' comparisons with PyTorch.

  bench/plot_bench.py RESULTS [-o DIR]

RESULTS is the output of
  bench/ref3m.sh   (its last line is {"stlm": [rounds], "pytorch": [rounds]}):
                   bytes per second of the training step, the forward pass
                   and batch-1 generation, each round a dot over the bar of
                   its median, the ratio of medians above; the PNG is
                   DIR/<model>-vs-pytorch.png;
  bench/cuda.sh    (per model "== NAME", then stlm-bench-model's and
                   torch_gpu.py's JSON lines): a training step's ms for stlm
                   and each PyTorch form (eager, torch.compile, one CUDA
                   graph) and batch-1 generation tokens/s, a row per model,
                   in DIR/cuda-vs-pytorch.png.
DIR defaults to RESULTS' directory. Runs with Debian's python3 and
python3-matplotlib.
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


def load(path, lines):
    """ref3m.sh's result: its last {"stlm": ..., "pytorch": ...} line."""
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
         "[...]}) and no cuda.sh runs (== NAME and two JSON lines)" % path)


def load_cuda(path, lines):
    """cuda.sh's runs: [(name, ours, peer)], or [] when it is not one."""
    runs, name, objs = [], None, []
    for line in lines:
        if line.startswith("== "):
            name, objs = line[3:].strip(), []
            continue
        if name and line.strip().startswith("{"):
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                fail("%s: the JSON line of '%s' does not parse" % (path, name))
            if len(objs) == 2:
                ours, peer = objs
                if "train_ms" not in ours or not any(
                        k.endswith("_ms") for k in peer):
                    fail("%s: '%s' lacks train_ms or PyTorch's *_ms"
                         % (path, name))
                runs.append((name, ours, peer))
                name = None
    return runs


def draw_cuda(plt, runs, out):
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.4 * len(runs)),
                             squeeze=False)
    for row, (name, o, p) in zip(axes, runs):
        forms = [f for f in ("eager", "compile", "graph") if f + "_ms" in p]
        labels = ["stlm"] + ["torch " + f for f in forms]
        ms = [o["train_ms"]] + [p[f + "_ms"] for f in forms]
        row[0].bar(range(len(ms)), ms,
                   color=["C0"] + ["C1"] * len(forms), alpha=0.75)
        row[0].set_xticks(range(len(ms)), labels)
        for i, v in enumerate(ms):
            row[0].annotate("%.2f" % v, (i, v), ha="center", va="bottom",
                            fontsize=8)
        row[0].set_ylabel("ms per training step")
        row[0].set_title("%s on %s: training step (lower is better)"
                         % (name, p.get("gpu", "GPU")), fontsize=10)
        row[0].grid(axis="y", alpha=0.3)
        gen = [o.get("generate_bytes_per_s", 0),
               p.get("generate_tokens_per_s", 0)]
        row[1].bar([0, 1], gen, color=["C0", "C1"], alpha=0.75)
        row[1].set_xticks([0, 1], ["stlm", "torch eager"])
        row[1].set_ylabel("tokens/s")
        row[1].set_title("generation, batch 1: %.1fx"
                         % (gen[0] / gen[1] if gen[1] else float("nan")),
                         fontsize=10)
        row[1].grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "cuda-vs-pytorch.png")
    fig.savefig(path, dpi=110)
    return path


def main():
    parser = argparse.ArgumentParser(
        description="Draw bench/ref3m.sh's stlm-vs-PyTorch comparison.")
    parser.add_argument("results")
    parser.add_argument("-o", "--out")
    args = parser.parse_args()
    try:
        lines = open(args.results, encoding="utf-8").read().splitlines()
    except OSError as e:
        fail("%s: cannot read it: %s" % (args.results, e.strerror))
    cuda = load_cuda(args.results, lines)
    r = None if cuda else load(args.results, lines)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is missing: apt-get install python3-matplotlib")
    out = args.out or os.path.dirname(os.path.abspath(args.results))
    os.makedirs(out, exist_ok=True)
    if cuda:
        print("plot_bench: " + draw_cuda(plt, cuda, out))
        return
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
        ax.set_title("%s: %.2fx" % (title, meds[0] / meds[1])
                     if r.get("fair", True) else
                     "%s: no ratio (the peer's matmuls run under half the "
                     "FMA peak)" % title, fontsize=10)
        ax.set_ylabel("kB/s (bar: median; dots: rounds)")
        ax.grid(axis="y", alpha=0.3)
    config = r.get("peer_config", {}).get("env", {})
    fig.suptitle("%s, batch %s x %s, %s threads; peer %s%s" % (
        o.get("model", "?"), o.get("batch", "?"), o.get("context", "?"),
        p.get("threads", "?"), p.get("peer", "PyTorch"),
        ", OPENBLAS_CORETYPE=%s" % (config.get("OPENBLAS_CORETYPE") or
                                    "unset") if config else ""))
    fig.tight_layout()
    path = os.path.join(out, "%s-vs-pytorch.png" % o.get("model", "model"))
    fig.savefig(path, dpi=110)
    print("plot_bench: " + path)


if __name__ == "__main__":
    main()
