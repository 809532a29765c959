//===- Pipelines.cpp - the stages every stlm tool runs --------------------===//

#include "passes/Pipelines.h"

#include "codegen/driver/LowerToLLVM.h"
#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/ADT/STLExtras.h"

namespace mlir::stlm {

namespace {
/// The stages that add passes, in order.
constexpr Stage kOrder[] = {Stage::STLM, Stage::Train, Stage::Plan,
                            Stage::LLVM};

/// The stage whose passes `stage` runs: kernels and artifact run plan's
/// (their work after the passes is code generation, not IR rewriting).
Stage passStage(Stage stage) {
  return stage == Stage::Kernels || stage == Stage::Artifact ? Stage::Plan
                                                             : stage;
}

/// Where `stage` ends in kOrder.
int depth(Stage stage) {
  return static_cast<int>(llvm::find(kOrder, passStage(stage)) -
                          std::begin(kOrder));
}

/// The passes of `stage`, one of kOrder.
void addStagePasses(OpPassManager &pm, Stage stage,
                    const PipelineChoices &choices) {
  switch (stage) {
  case Stage::STLM:
    pm.addPass(createVerifyShapesPass());
    return;
  case Stage::Train:
    pm.addPass(createAutodiffPass({choices.splitStep}));
    return;
  case Stage::Plan:
    pm.addPass(createAddDecodePass({choices.decodeBatch}));
    if (choices.quantize)
      pm.addPass(createQuantizePass(
          {::stlm::quant::schemeName(choices.quantize->scheme),
           choices.quantize->group}));
    pm.addPass(createDecomposePass({choices.loraMerge}));
    pm.addPass(
        createFusePass({choices.ropeIntoAttention, choices.ropeFoldMaxKeys}));
    pm.addPass(createPlanMemoryPass());
    return;
  case Stage::LLVM:
    pm.addPass(::stlm::codegen::createLowerToLLVMPass());
    return;
  case Stage::Kernels:
  case Stage::Artifact:
    llvm_unreachable("not in kOrder: they run plan's passes");
  }
}

struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<Stage> stage{
      *this, "stage",
      llvm::cl::desc("The stlm-compile --emit stage to stop after"),
      llvm::cl::init(Stage::LLVM),
      llvm::cl::values(
          clEnumValN(Stage::STLM, "stlm", "the model, shapes verified"),
          clEnumValN(Stage::Train, "train", "+ stlm-autodiff"),
          clEnumValN(Stage::Plan, "plan",
                     "+ decode, decompose, fuse, plan-memory"),
          clEnumValN(Stage::Kernels, "kernels", "the passes of plan"),
          clEnumValN(Stage::Artifact, "artifact", "the passes of plan"),
          clEnumValN(Stage::LLVM, "llvm", "+ stlm-lower-to-llvm"))};
  Option<bool> splitStep{
      *this, "split-step",
      llvm::cl::desc("stlm-autodiff emits @accumulate and @apply even "
                     "without gradient accumulation (data-parallel)"),
      llvm::cl::init(false)};
};
} // namespace

llvm::StringRef stageName(Stage stage) {
  switch (stage) {
  case Stage::STLM:
    return "stlm";
  case Stage::Train:
    return "train";
  case Stage::Plan:
    return "plan";
  case Stage::Kernels:
    return "kernels";
  case Stage::Artifact:
    return "artifact";
  case Stage::LLVM:
    return "llvm";
  }
  return "";
}

std::optional<Stage> parseStage(llvm::StringRef name) {
  for (Stage s : {Stage::STLM, Stage::Train, Stage::Plan, Stage::Kernels,
                  Stage::Artifact, Stage::LLVM})
    if (stageName(s) == name)
      return s;
  return std::nullopt;
}

void buildPipeline(OpPassManager &pm, Stage stage, std::optional<Stage> after,
                   const PipelineChoices &choices) {
  int first = after ? depth(*after) + 1 : 0;
  for (int i = first; i <= depth(stage); ++i)
    addStagePasses(pm, kOrder[i], choices);
}

void registerPipelines() {
  static bool registered = false;
  if (registered)
    return;
  registered = true;
  PassPipelineRegistration<PipelineOptions>(
      "stlm-pipeline",
      "The passes stlm-compile runs up to the end of a stage (see "
      "passes/Pipelines.h)",
      [](OpPassManager &pm, const PipelineOptions &options) {
        buildPipeline(pm, options.stage, std::nullopt,
                      PipelineChoices{options.splitStep});
      });
}

} // namespace mlir::stlm
