//===- main.cpp - stlm-kernelgen's entry point ----------------------------===//
//
// Halide's generator command line (`-g GENERATOR -f NAME -o DIR -e ...
// target=T PARAM=VALUE...`, or `-r NAME` for the runtime alone), with what
// Halide's own main lacks: --version, --help naming our generators, an
// output directory created when missing, and Halide's errors reported as
// `stlm-kernelgen: error: ...` with exit status 1 instead of an uncaught
// exception (a malformed target included); and for the host target, the
// row-by-row quantized matvecs built without avx512_sapphirerapids on
// CPUs that lack AVX-VNNI (targetFor).
//
//===----------------------------------------------------------------------===//

#include "Halide.h"
#include "support/CpuBF16.h"
#include "support/Version.h"

#include <cerrno>
#include <cstring>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace {

/// mkdir -p; false with `error` set when a component cannot be made.
bool makeDirectories(const std::string &path, std::string &error) {
  std::string prefix;
  size_t at = 0;
  while (at != std::string::npos) {
    size_t slash = path.find('/', at + 1);
    prefix = path.substr(0, slash);
    at = slash;
    if (prefix.empty() || prefix == "/")
      continue;
    struct stat st;
    if (stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        error = "'" + prefix + "' is not a directory";
        return false;
      }
      continue;
    }
    if (mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST) {
      error = "cannot create '" + prefix + "': " + std::strerror(errno);
      return false;
    }
  }
  return true;
}

/// The target for `-g generator` given `target=value` (without the key),
/// parsed here so that a malformed one is our error (Halide throws). The
/// row-by-row quantized matvecs' byte dot products compile to vpdpbusd,
/// and for Halide's avx512_sapphirerapids LLVM encodes the 256-bit ones in
/// VEX (AVX-VNNI), which a CPU with AVX512-VNNI alone (AMD Zen 4) faults
/// on. So for the host such a CPU gets those two without that feature
/// (widening multiply-adds). Every other kernel keeps the host target: the
/// tiled matvecs' vpdpbusd are 512-bit (EVEX), and the bf16 matmuls'
/// vdpbf16ps has no VEX form.
std::string targetFor(const std::string &generator, const std::string &value) {
  if (value.find(',') != std::string::npos)
    return value; // several targets: Halide's main parses the list
  Halide::Target t(value);
  bool rowByRow =
      generator == "stlm_qmatvec_int8" || generator == "stlm_qmatvec_int4";
  if (!rowByRow || value.rfind("host", 0) != 0 ||
      !t.has_feature(Halide::Target::AVX512_SapphireRapids) ||
      stlm::hasAvxVnni())
    return value;
  return t.without_feature(Halide::Target::AVX512_SapphireRapids).to_string();
}

} // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version") {
      std::cout << stlm::versionLine("stlm-kernelgen") << ", Halide 14\n";
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout
          << "stlm-kernelgen: stlm's Halide generators (stlm_matmul, "
             "stlm_matvec, stlm_attention, ...).\nstlm-compile runs it; "
             "docs/kernels.md describes each generator and its\n"
             "parameters. -o DIR is created when missing.\n\n";
      std::ostringstream usage;
      char *none[] = {argv[0], nullptr};
      Halide::Internal::generate_filter_main(1, none, usage);
      std::cout << usage.str();
      return 0;
    }
    if (arg == "-o" && i + 1 < argc) {
      std::string error;
      if (!makeDirectories(argv[i + 1], error)) {
        std::cerr << "stlm-kernelgen: error: -o " << argv[i + 1] << ": "
                  << error << "\n";
        return 1;
      }
    }
  }
  try {
    // targetFor parses the target (Halide throws on a malformed one).
    std::string generator;
    for (int i = 1; i + 1 < argc; ++i)
      if (std::string(argv[i]) == "-g")
        generator = argv[i + 1];
    std::vector<std::string> args(argv, argv + argc);
    for (std::string &arg : args)
      if (arg.rfind("target=", 0) == 0)
        arg = "target=" + targetFor(generator, arg.substr(7));
    std::vector<char *> argp;
    for (std::string &arg : args)
      argp.push_back(arg.data());
    argp.push_back(nullptr);
    return Halide::Internal::generate_filter_main(argc, argp.data(), std::cerr);
  } catch (const std::exception &e) {
    std::cerr << "stlm-kernelgen: error: " << e.what() << "\n";
    return 1;
  }
}
