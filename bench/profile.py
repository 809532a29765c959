"""Where a compiled training step spends its time, kernel by kernel.

    stlm-compile SPEC --profile -o DIR
    stlm-run train SPEC --data TEXT --artifact DIR --steps N > report.txt
    bench/profile.py DIR/<name>.manifest.json report.txt [--steps N]

An artifact compiled with --profile has Halide's sampling profiler built
into its kernels (samples every millisecond which kernel runs); when the
program exits, the profiler prints one block per kernel on stdout. This
script reads those blocks and the manifest (which generator and shape each
kernel `<symbol>_k<i>` is) and prints the time of each kernel and of each
generator, largest first, as milliseconds per training step (with
--steps) and as a share of all kernel time, with each matmul's GFLOP/s. Sampling: a kernel's total is
its samples × 1 ms, so run enough steps that the small ones get samples.
"""
import argparse
import json
import re
import sys


def read_report(path):
    """{kernel name: (total ms, runs)} from the profiler's report."""
    out = {}
    name = None
    with open(path) as f:
        for line in f:
            if line and not line[0].isspace() and line.strip():
                name = line.strip()
                continue
            m = re.match(r"\s*total time: ([0-9.]+) ms\s+samples: (\d+)\s+"
                         r"runs: (\d+)", line)
            if m and name:
                out[name] = (float(m.group(1)), int(m.group(3)))
    return out


def flops(kernel):
    """FLOPs of one call of a matmul-like kernel (0 for others)."""
    q = kernel.get("params", {})
    if kernel["generator"] in ("stlm_matmul", "stlm_matmul_residual",
                               "stlm_matvec"):
        return 2 * int(q["m"]) * int(q["n"]) * int(q["k"])
    return 0


def describe(kernel):
    params = kernel.get("params", {})
    shape = " ".join("%s=%s" % (k, v) for k, v in params.items())
    return kernel["generator"], shape


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest")
    p.add_argument("report")
    p.add_argument("--steps", type=int, default=0,
                   help="training steps the run took (for ms per step)")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    manifest = json.load(open(a.manifest))
    if not manifest.get("profile"):
        sys.exit("%s: not compiled with stlm-compile --profile" % a.manifest)
    report = read_report(a.report)
    if not report:
        sys.exit("%s: no Halide profiler report in it" % a.report)
    rows = []
    for k in manifest["kernels"]:
        ms, runs = report.get(k["name"], (0.0, 0))
        gen, shape = describe(k)
        rate = ""
        if flops(k) and ms > 0:
            rate = "%6.1f GFLOP/s" % (flops(k) * runs / (ms * 1e-3) / 1e9)
        rows.append((ms, runs, k["name"], gen, shape + ("  " + rate
                                                        if rate else "")))
    total = sum(r[0] for r in rows) or 1.0
    per = (lambda ms: "%9.2f" % (ms / a.steps)) if a.steps else \
        (lambda ms: "%9.1f" % ms)
    unit = "ms/step" if a.steps else "ms total"
    by_gen = {}
    for ms, runs, _, gen, _ in rows:
        t, n = by_gen.get(gen, (0.0, 0))
        by_gen[gen] = (t + ms, n + runs)
    print("by generator (%s, share of kernel time):" % unit)
    for gen, (ms, runs) in sorted(by_gen.items(), key=lambda x: -x[1][0]):
        print("  %-24s %s  %5.1f %%  %6d calls" % (gen, per(ms),
                                                   100 * ms / total, runs))
    print("\nlargest kernels (%s):" % unit)
    for ms, runs, name, gen, shape in sorted(rows, reverse=True)[:a.top]:
        print("  %-16s %s  %5.1f %%  %-22s %s" % (name, per(ms),
                                                  100 * ms / total, gen,
                                                  shape))
    print("\nall kernels: %s %s" % (per(total).strip(), unit))


if __name__ == "__main__":
    main()
