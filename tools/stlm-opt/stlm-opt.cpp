//===- stlm-opt.cpp - run stlm passes on .mlir files ----------------------===//
//
// Parses, verifies and transforms `.mlir` holding stlm IR, with every stlm
// pass and pipeline available as a flag (see `stlm-opt --help`).
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "support/Version.h"
#include "tools/common/InitAll.h"

#include "llvm/Config/llvm-config.h"
#include "llvm/Support/CommandLine.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::stlm::registerAllDialects(registry);
  mlir::stlm::registerAllPasses();
  llvm::cl::SetVersionPrinter([](llvm::raw_ostream &os) {
    os << stlm::versionLine("stlm-opt") << " (MLIR " << LLVM_VERSION_STRING
       << ")\n";
  });
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "stlm optimizer driver\n", registry));
}
