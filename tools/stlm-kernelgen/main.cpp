//===- main.cpp - stlm-kernelgen's entry point ----------------------------===//
//
// Halide's generator command line (`-g GENERATOR -f NAME -o DIR -e ...
// target=T PARAM=VALUE...`, or `-r NAME` for the runtime alone), with what
// Halide's own main lacks: --version, --help naming our generators, an
// output directory created when missing, and Halide's errors reported as
// `stlm-kernelgen: error: ...` with exit status 1 instead of an uncaught
// exception.
//
//===----------------------------------------------------------------------===//

#include "Halide.h"
#include "support/Version.h"

#include <cerrno>
#include <cstring>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <sys/stat.h>

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
    return Halide::Internal::generate_filter_main(argc, argv, std::cerr);
  } catch (const std::exception &e) {
    std::cerr << "stlm-kernelgen: error: " << e.what() << "\n";
    return 1;
  }
}
