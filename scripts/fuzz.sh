#!/usr/bin/env bash
# Fuzzes stlm's input readers with libFuzzer under AddressSanitizer and
# UndefinedBehaviorSanitizer (clang-14, Debian's clang-14 and
# libclang-rt-14-dev). The targets are fuzz/Fuzz*.cpp; the test suite
# replays their corpora without libFuzzer (test/Fuzz/replay.test).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  fuzzing time per target (default 60)
#   TARGET   spec, stored-spec, safetensors, data, manifest (default: all)
# Builds into build-fuzz/ (STLM_FUZZ_DIR); each target's working corpus
# grows there, seeded from fuzz/corpus/<target> and fuzz/findings/<target>.
# An input that crashes, fails a property, hangs (10 s) or allocates past
# 2 GB is saved as build-fuzz/<target>/crash-* (or leak-, timeout-, oom-);
# the script then exits 1. Keep a finding by copying it into
# fuzz/findings/<target>/ with the fix, so the suite replays it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${STLM_FUZZ_DIR:-$root/build-fuzz}
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(spec stored-spec safetensors data manifest)

if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "fuzz.sh: error: SECONDS must be a whole number, got '$seconds'" >&2
  exit 2
fi
CXX=${CXX_FUZZ:-clang++-14}
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz.sh: error: $CXX not found; install clang-14 and libclang-rt-14-dev" >&2
  exit 2
fi

spec_sources="frontend/Spec.cpp frontend/Params.cpp"
weights_sources="$spec_sources frontend/Weights.cpp frontend/Data.cpp support/SafeTensors.cpp"
sources_for() {
  case "$1" in
    spec) echo "fuzz/FuzzSpec.cpp $spec_sources" ;;
    stored-spec) echo "fuzz/FuzzStoredSpec.cpp $spec_sources" ;;
    safetensors) echo "fuzz/FuzzSafeTensors.cpp $weights_sources" ;;
    data) echo "fuzz/FuzzData.cpp $weights_sources" ;;
    manifest) echo "fuzz/FuzzManifest.cpp runtime/src/Runtime.cpp support/Sampling.cpp support/SafeTensors.cpp" ;;
    *) echo "fuzz.sh: error: unknown target '$1' (spec, stored-spec, safetensors, data, manifest)" >&2
       return 1 ;;
  esac
}

status=0
for t in "${targets[@]}"; do
  srcs=$(sources_for "$t")
  mkdir -p "$out/$t/corpus"
  bin="$out/$t/fuzz-$t"
  # Rebuild when a source is newer than the binary.
  if [[ ! -x "$bin" ]] || [[ -n $(cd "$root" && find $srcs fuzz/FuzzCheck.h frontend support runtime -newer "$bin" -name '*.[ch]*' | head -1) ]]; then
    echo "fuzz.sh: building $t" >&2
    (cd "$root" && "$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -I. -Iruntime/include $srcs \
      -o "$bin" -lyaml-cpp -ldl -lpthread)
  fi
  seeds=("$root/fuzz/corpus/$t")
  [[ -d "$root/fuzz/findings/$t" ]] && seeds+=("$root/fuzz/findings/$t")
  [[ "$t" == spec ]] && seeds+=("$root/examples/models")
  echo "fuzz.sh: fuzzing $t for ${seconds}s" >&2
  if ! (cd "$out/$t" && ASAN_OPTIONS=detect_leaks=1 "$bin" corpus "${seeds[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -print_final_stats=1 2> log.txt); then
    echo "fuzz.sh: $t FOUND a problem: see $out/$t/log.txt and $out/$t/{crash,leak,timeout,oom}-*" >&2
    tail -30 "$out/$t/log.txt" >&2
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t/log.txt" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz.sh: $t: $runs inputs run, corpus $(ls "$out/$t/corpus" | wc -l) files" >&2
done
exit $status
