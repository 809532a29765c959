#!/usr/bin/python3
"""Where a compiled model's time goes, from perf's samples, kernel by kernel.

    bench/perf_profile.py DIR/<name>.manifest.json [--top N] -- COMMAND...

e.g.

    bench/perf_profile.py /tmp/a/stlm-10m.manifest.json -- \\
        build/bin/stlm-run train examples/models/stlm-10m.yaml \\
        --data ../shared/data/tinyshakespeare.txt --artifact /tmp/a \\
        --steps 10 --eval-windows 16 --threads 2 --quiet

runs COMMAND under `perf record` (every thread, 999 samples a second of
CPU time: the cpu-clock event, which virtual machines without a PMU have
too, and one section on hybrid CPUs; COMMAND's stdout is discarded) and
sums the samples of each kernel `<symbol>_k<i>` (its closures included:
`_k8_par_for_...`) and of each generator, with the manifest's shapes. The
artifact need not be built with --profile: perf reads the plain one, so
nothing is timed differently. Prints each generator's and the largest
kernels' share of all samples, then what ran outside the kernels (the
thread pool, page faults, the driver). Shares, not times: a share of the
command's whole run, setup included.

Halide's own profiler (`stlm-compile --profile`, bench/profile.py)
charges each kernel the time between samples a millisecond apart, and
overstates short kernels several times over (stlm-10m's elementwise
kernels: 10 % of a step there, 4-5 % here). Use this script for shares and
profile.py for per-call counts.

Needs `perf` (linux-perf) and permission to sample (root, or
kernel.perf_event_paranoid <= 1).
"""
import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


def main():
    argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if "--" not in argv:
        sys.exit("usage: perf_profile.py MANIFEST [--top N] -- COMMAND...")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv[:cut])
    command = argv[cut + 1:]
    if not command:
        sys.exit("perf_profile.py: no command after --")
    try:
        with open(args.manifest) as f:
            manifest = json.load(f)
        symbol = manifest["symbol"]
        kernels = manifest["kernels"]
        if not isinstance(symbol, str) or not isinstance(kernels, list):
            raise TypeError("'symbol' must be a string and 'kernels' a list")
        for k in kernels:
            k["generator"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"perf_profile.py: cannot read the manifest "
                 f"'{args.manifest}': {e!r}")
    perf = shutil.which("perf")
    if not perf:
        sys.exit("perf_profile.py: `perf` is not installed "
                 "(apt-get install linux-perf)")

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        run = subprocess.run([perf, "record", "-e", "cpu-clock", "-F", "999",
                              "-o", data, "--"] + command,
                             stdout=subprocess.DEVNULL)
        if run.returncode != 0:
            sys.exit(f"perf_profile.py: the command (or perf) failed with "
                     f"status {run.returncode}")
        report = subprocess.run([perf, "report", "-i", data, "--sort",
                                 "symbol", "--stdio"],
                                capture_output=True, text=True)
        if report.returncode != 0:
            sys.exit("perf_profile.py: perf report failed: " +
                     report.stderr.strip())

    kernel_re = re.compile(re.escape(symbol) + r"_k(\d+)(?:_|$)")
    by_kernel = collections.Counter()
    by_generator = collections.Counter()
    outside = collections.Counter()
    for line in report.stdout.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+\[[^\]]*\]\s+(.+?)\s*$", line)
        if not m:
            continue
        share, name = float(m.group(1)), m.group(2)
        k = kernel_re.match(name)
        if k and int(k.group(1)) < len(kernels):
            i = int(k.group(1))
            by_kernel[i] += share
            by_generator[kernels[i]["generator"]] += share
        else:
            outside[name] += share

    def describe(i):
        params = kernels[i].get("params", {})
        return " ".join(f"{k}={v}" for k, v in params.items())

    print("by generator (share of all samples):")
    for g, s in by_generator.most_common():
        print(f"  {g:26s} {s:6.2f} %")
    print(f"  {'(all kernels)':26s} {sum(by_kernel.values()):6.2f} %")
    print("\nlargest kernels:")
    for i, s in by_kernel.most_common(args.top):
        print(f"  {symbol}_k{i:<4d} {s:6.2f} %  "
              f"{kernels[i]['generator']:22s} {describe(i)}")
    print("\noutside the kernels:")
    for name, s in outside.most_common(8):
        print(f"  {s:6.2f} %  {name}")
    print(f"  {sum(outside.values()):6.2f} %  in all")


if __name__ == "__main__":
    main()
