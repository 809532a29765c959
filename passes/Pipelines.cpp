//===- Pipelines.cpp - pass sequences shared by the tools -----------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"

void mlir::stlm::addPlanPasses(OpPassManager &pm) {
  pm.addPass(createAddDecodePass());
  pm.addPass(createDecomposePass());
  pm.addPass(createFusePass());
  pm.addPass(createPlanMemoryPass());
}
