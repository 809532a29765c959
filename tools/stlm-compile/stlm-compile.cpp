//===- stlm-compile.cpp - compile a model spec ----------------------------===//
//
//   stlm-compile SPEC.yaml --emit=stlm [-o FILE]   the model in the dialect
//   stlm-compile SPEC.yaml --emit=train            + @grad, @train_step, @eval
//   stlm-compile SPEC.yaml --emit=plan             + the static memory plan
//   stlm-compile SPEC.yaml --print-params          every tensor and totals
//
// Spec errors are printed as `file:line:col: error: key: ...` and exit 1.
//
//===----------------------------------------------------------------------===//

#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/Spec.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "passes/Passes.h"
#include "tools/common/InitAll.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace {
enum class Emit { STLM, Train, Plan };

cl::opt<std::string> specPath(cl::Positional, cl::desc("<model spec .yaml>"),
                              cl::Required);
cl::opt<Emit> emit("emit", cl::desc("Stage to stop after and print"),
                   cl::values(clEnumValN(Emit::STLM, "stlm",
                                         "the model in the stlm dialect"),
                              clEnumValN(Emit::Train, "train",
                                         "after stlm-autodiff: the training "
                                         "step"),
                              clEnumValN(Emit::Plan, "plan",
                                         "after stlm-plan-memory: weights "
                                         "and arena offsets")),
                   cl::init(Emit::STLM));
cl::opt<bool> printParams("print-params",
                          cl::desc("List every parameter tensor with shape, "
                                   "count and tying/sharing, then totals"));
cl::opt<std::string> outputPath("o", cl::desc("Output file (default: stdout)"),
                                cl::value_desc("file"), cl::init("-"));

std::string shapeStr(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void printParamTable(const stlm::ModelSpec &spec, raw_ostream &os) {
  stlm::ParamTable table = stlm::buildParamTable(spec);
  size_t width = 4;
  for (const stlm::ParamInfo &p : table.params)
    width = std::max(width, p.name.size());
  os << "model " << spec.name << ": " << table.params.size() << " tensors\n";
  os << left_justify("name", width) << "  " << left_justify("shape", 14)
     << "  " << right_justify("count", 11) << "  sharing\n";
  for (const stlm::ParamInfo &p : table.params) {
    os << left_justify(p.name, width) << "  "
       << left_justify(shapeStr(p.shape), 14) << "  "
       << right_justify(std::to_string(p.numel()), 11);
    if (!p.sharing.empty())
      os << "  " << p.sharing << " (" << p.uses << " uses)";
    os << "\n";
  }
  os << "total parameters (unique): " << table.uniqueCount() << "\n";
  os << "total parameters (as if untied): " << table.untiedCount() << "\n";
}
} // namespace

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv, "stlm model compiler\n");

  stlm::SpecResult parsed = stlm::readSpecFile(specPath);
  if (!parsed.spec) {
    for (const stlm::SpecDiagnostic &d : parsed.diagnostics)
      errs() << d.str() << "\n";
    return 1;
  }

  std::string error;
  std::unique_ptr<ToolOutputFile> out = mlir::openOutputFile(outputPath, &error);
  if (!out) {
    errs() << "stlm-compile: error: " << error << "\n";
    return 1;
  }

  if (printParams) {
    printParamTable(*parsed.spec, out->os());
    out->keep();
    return 0;
  }

  mlir::DialectRegistry registry;
  mlir::stlm::registerAllDialects(registry);
  mlir::MLIRContext context(registry);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      stlm::buildModel(context, *parsed.spec);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createVerifyShapesPass());
  if (failed(mlir::verify(*module)) || failed(pm.run(*module))) {
    errs() << "stlm-compile: internal error: the IR built for '"
           << parsed.spec->name << "' does not verify (diagnostics above)\n";
    return 2;
  }
  // Each stage adds its passes to the one before.
  mlir::PassManager stages(&context);
  if (emit == Emit::Train || emit == Emit::Plan)
    stages.addPass(mlir::stlm::createAutodiffPass());
  if (emit == Emit::Plan)
    stages.addPass(mlir::stlm::createPlanMemoryPass());
  if (failed(stages.run(*module))) {
    errs() << "stlm-compile: error: cannot lower '" << parsed.spec->name
           << "' (diagnostics above)\n";
    return 1;
  }
  module->print(out->os());
  out->keep();
  return 0;
}
