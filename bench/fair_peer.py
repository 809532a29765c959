#!/usr/bin/python3
"""Chooses the PyTorch peer's fastest configuration on this machine.

Debian's PyTorch multiplies fp32 matrices with the system BLAS (OpenBLAS),
which picks its kernels by CPU model and does not know newer CPUs: left to
itself on an Intel Xeon of model 207 it ran at 60 GFLOP/s where
OPENBLAS_CORETYPE=Cooperlake gave 220-318. A ratio against a peer that is
not at its best is not a result, so the benchmarks ask this script first.

  bench/fair_peer.py SPEC.json --threads N

times torch.nn.functional.linear on the model's own matmul shapes (the
q/k/v/o projections, the FFN, the head, at the spec's batch x context
rows), once per candidate in a fresh process (the BLAS reads its settings
when it loads): OPENBLAS_CORETYPE unset, and each core type the CPU's
flags allow (Haswell with AVX2; SkylakeX with AVX-512; Cooperlake with
AVX-512 BF16; SapphireRapids with AMX; Zen on AMD). It prints one JSON
object: the chosen environment, its GFLOP/s, and every candidate's.
(PyTorch 1.13 sends fp32 linear layers to the BLAS, not to oneDNN, whose
fp32 path it uses only for converted inference modules; so the BLAS is
the knob for training.)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def shapes(spec, batch_rows):
    """(rows, out, in) of every matmul in a forward pass, repeated per layer."""
    c = spec["core"]
    w, f, h = c["width"], c["ffn_width"], c["heads"]
    kv = c.get("kv_heads", h) * (w // h)
    vocab = spec["embedder"].get("vocab_size", 256)
    ffn = [(batch_rows, f, w), (batch_rows, w, f)]
    if c.get("ffn", "swiglu") == "swiglu":
        ffn.append((batch_rows, f, w))
    layer = [(batch_rows, w, w), (batch_rows, kv, w), (batch_rows, kv, w),
             (batch_rows, w, w)] + ffn
    return layer * c["layers"] + [(batch_rows, vocab, w)]


def measure(shape_list, threads, reps):
    """GFLOP/s of the shapes' linear layers: total FLOPs over the median
    time of a whole pass."""
    import time
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ops = [(torch.randn(m, k), torch.randn(n, k)) for m, n, k in
           sorted(set(shape_list))]
    count = {s: shape_list.count(s) for s in set(shape_list)}
    flops = sum(2.0 * m * n * k * count[(m, n, k)]
                for m, n, k in set(shape_list))
    keys = sorted(set(shape_list))

    def one_pass():
        for (x, wt), key in zip(ops, keys):
            for _ in range(count[key]):
                torch.nn.functional.linear(x, wt)

    one_pass()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times) / 1e9


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return set(), ""
    flags, vendor = set(), ""
    for line in text.splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("vendor_id") and not vendor:
            vendor = line.split(":", 1)[1].strip()
    return flags, vendor


def candidates():
    flags, vendor = cpu_flags()
    out = [None]  # OPENBLAS_CORETYPE unset: OpenBLAS's own choice
    if "avx2" in flags:
        out.append("Haswell")
    if "avx512f" in flags:
        out.append("SkylakeX")
    if "avx512_bf16" in flags:
        out.append("Cooperlake")
    if "amx_tile" in flags:
        out.append("SapphireRapids")
    if vendor == "AuthenticAMD" and "avx2" in flags:
        out.append("Zen")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="the spec as JSON (the manifest's spec)")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--measure", help=argparse.SUPPRESS)  # child mode
    a = p.parse_args()
    try:
        spec = json.load(open(a.spec))
    except (OSError, ValueError) as e:
        sys.exit("fair_peer.py: error: %s: %s" % (a.spec, e))
    rows = spec["train"].get("batch", 12) * spec["core"]["context"]
    shape_list = shapes(spec, rows)
    if a.measure is not None:
        print(json.dumps({"gflops": measure(shape_list, a.threads,
                                            a.reps)}))
        return
    results = []
    for core in candidates():
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads),
                   OPENBLAS_NUM_THREADS=str(a.threads),
                   OMP_WAIT_POLICY="passive")
        env.pop("OPENBLAS_CORETYPE", None)
        if core:
            env["OPENBLAS_CORETYPE"] = core
        r = subprocess.run([sys.executable, __file__, a.spec, "--threads",
                            str(a.threads), "--reps", str(a.reps),
                            "--measure", ""], env=env, capture_output=True,
                           text=True)
        if r.returncode != 0:
            results.append({"OPENBLAS_CORETYPE": core, "gflops": None,
                            "error": r.stderr.strip().splitlines()[-1:]})
            continue
        results.append({"OPENBLAS_CORETYPE": core,
                        "gflops": json.loads(r.stdout)["gflops"]})
    ok = [r for r in results if r["gflops"]]
    if not ok:
        sys.exit("fair_peer.py: error: no candidate ran: %s" % results)
    best = max(ok, key=lambda r: r["gflops"])
    print(json.dumps({"env": {"OPENBLAS_CORETYPE": best["OPENBLAS_CORETYPE"]},
                      "gflops": best["gflops"], "threads": a.threads,
                      "shapes": len(shape_list), "candidates": results}))


if __name__ == "__main__":
    main()
