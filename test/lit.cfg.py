# lit configuration for the stlm regression tests (IR in, FileCheck out).
import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "STLM"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
# Example models live outside test/ and are found through %stlm_src_root.
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "unit", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.stlm_obj_root, "test")

config.substitutions.append(("%stlm_src_root", config.stlm_src_root))
config.substitutions.append(("%stlm_obj_root", config.stlm_obj_root))
config.substitutions.append(("%shared_dir", config.stlm_shared_dir))
# Undefined FileCheck variables from an earlier CHECK-LABEL block are errors.
config.environment["FILECHECK_OPTS"] = "--enable-var-scope"

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.add_tool_substitutions(
    [ToolSubst(t, unresolved="fatal")
     for t in ["stlm-opt", "stlm-compile", "stlm-run", "stlm-kernelgen",
               "stlm-bench-train", "stlm-bench-model", "stlm-bench-bandwidth"]],
    [config.stlm_tools_dir])

# Tests that train on real text need ../shared/data/tinyshakespeare.txt; they
# declare `REQUIRES: tinyshakespeare` and are reported UNSUPPORTED without it.
tinyshakespeare = os.path.join(config.stlm_shared_dir, "data",
                               "tinyshakespeare.txt")
if os.path.exists(tinyshakespeare):
    config.available_features.add("tinyshakespeare")
    config.substitutions.append(("%tinyshakespeare", tinyshakespeare))
else:
    lit_config.note("%s not found: tests that train on it are skipped"
                    % tinyshakespeare)

# bench/perf_profile.py's run needs `perf` and leave to sample (root, or
# kernel.perf_event_paranoid low enough); tests that sample declare
# `REQUIRES: perf`.
import shutil as _shutil
import subprocess as _subprocess
if _shutil.which("perf") and _subprocess.run(
        ["perf", "stat", "-e", "task-clock", "true"],
        stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL).returncode == 0:
    config.available_features.add("perf")

# A sanitized build (STLM_SANITIZE): leaks in the uninstrumented LLVM and
# MLIR libraries are not ours to report; every other finding aborts. A
# process under ASan reserves terabytes of address space, so tests that cap
# memory with `ulimit -v` (%limit_memory) leave the cap to ASan's own
# allocator limit there.
if config.stlm_sanitize:
    config.available_features.add("sanitize")
    config.environment["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=1:"
                                          "max_allocation_size_mb=4000:"
                                          "allocator_may_return_null=1")
    config.environment["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    config.substitutions.append(("%limit_memory", "true"))
    # An app linking the sanitized runtime archives links the sanitizers.
    config.substitutions.append(("%sanitize_flags",
                                 "-fsanitize=address,undefined"))
else:
    config.substitutions.append(("%limit_memory", "ulimit -v 4000000"))
    config.substitutions.append(("%sanitize_flags", ""))

# The CUDA target: tests that compile with --target=cuda need nvcc
# (`REQUIRES: nvcc`; on PATH or in /usr/local/cuda); a GPU (`cuda-device`,
# nvidia-smi lists one) changes what running such an artifact does.
import shutil
import subprocess
nvcc = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc"
    if os.access("/usr/local/cuda/bin/nvcc", os.X_OK) else None)
if nvcc:
    config.available_features.add("nvcc")
    config.substitutions.append(("%nvcc", nvcc))
else:
    lit_config.note("no nvcc: tests of the cuda target are skipped")
try:
    if subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                      timeout=20).returncode == 0:
        config.available_features.add("cuda-device")
except (OSError, subprocess.TimeoutExpired):
    pass

# Tests that read what we write with an independent NumPy implementation
# (the export formats) need python3-numpy, and the plot test Debian's
# python3-matplotlib (scripts/install-deps.sh installs both). They belong
# to Debian's /usr/bin/python3, which may not be the python3 on PATH:
# %debian_python names it.
debian_python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) \
    else "python3"
config.substitutions.append(("%debian_python", debian_python))
for module, feature, what in [("numpy", "numpy", "the export checks"),
                              ("matplotlib", "matplotlib", "the plot test"),
                              ("torch", "torch", "the benchmark peer's checks")]:
    if subprocess.run([debian_python, "-c", "import " + module],
                      capture_output=True).returncode == 0:
        config.available_features.add(feature)
    else:
        lit_config.note("no %s for %s: %s are skipped"
                        % (module, debian_python, what))

# llama.cpp, when the machine has it: its llama-simple example (greedy
# generation; STLM_LLAMA_SIMPLE=PATH, or on PATH), or else the prebuilt
# libraries of the npm package node-llama-cpp that scripts/install-deps.sh
# --llama-cpp installs (scripts/test.sh asks for them), run by
# scripts/llama-cpp.mjs. The GGUF export is then also run by llama.cpp
# itself (stlm-run/export-llama-cpp.test). It is not a Debian package, so the
# suite does not need it.
llama_simple = os.environ.get("STLM_LLAMA_SIMPLE") or shutil.which(
    "llama-simple")
llama_cpp_dir = os.environ.get("STLM_LLAMA_CPP_DIR") or os.path.join(
    config.stlm_src_root, "build", "llama-cpp")
# install-deps.sh leaves installed-VERSION when npm has finished.
llama_cpp_installed = os.path.isdir(llama_cpp_dir) and any(
    f.startswith("installed-") for f in os.listdir(llama_cpp_dir))
llama_cpp_node = bool(shutil.which("node")) and llama_cpp_installed
llama_cpp_mjs = "env STLM_LLAMA_CPP_DIR=%s node %s" % (
    llama_cpp_dir, os.path.join(config.stlm_src_root, "scripts", "llama-cpp.mjs"))
if llama_cpp_node:  # scripts/llama-cpp.mjs itself (stlm-run/llama-cpp-script.test)
    config.available_features.add("llama-cpp-node")
    config.substitutions.append(("%llama_cpp_mjs", llama_cpp_mjs))
if llama_simple and os.access(llama_simple, os.X_OK):
    config.available_features.add("llama-cpp")
    config.substitutions.append(("%llama_simple", llama_simple))
elif llama_cpp_node:
    config.available_features.add("llama-cpp")
    config.substitutions.append(("%llama_simple", llama_cpp_mjs + " generate"))
else:
    lit_config.note("no llama.cpp (STLM_LLAMA_SIMPLE, or scripts/install-deps.sh "
                    "--llama-cpp): the GGUF export is not run by llama.cpp")

# Data-parallel training (stlm-run under mpirun, `REQUIRES: mpi`): needs an
# stlm-run built with MPI and OpenMPI's mpirun (scripts/install-deps.sh
# installs both). %mpirun starts N ranks on this machine, however many
# cores it has, as root too (a container's user), without the kernel's
# cross-memory attach (which containers often forbid).
mpirun = shutil.which("mpirun")
if config.stlm_have_mpi and mpirun:
    config.available_features.add("mpi")
    flags = ["--oversubscribe", "--mca", "btl_vader_single_copy_mechanism",
             "none"]
    if os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    config.substitutions.append(("%mpirun", " ".join([mpirun] + flags)))
else:
    lit_config.note("no MPI (stlm-run built without it, or no mpirun): the "
                    "data-parallel tests are skipped")
