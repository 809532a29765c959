//===- KernelPlanTest.cpp - kernel choices that depend on a model's shape -===//
//
// The attention backward's schedule: the materialised one (2·B·H·T·S
// floats of probabilities and their gradient) for short contexts, the
// blocked one (a block × T or S per thread) once that scratch would pass
// 64 MiB. Plans char-tiny as written and with a long context.
//
//===----------------------------------------------------------------------===//

#include "codegen/artifact/KernelPlan.h"
#include "frontend/BuildModel.h"
#include "frontend/Spec.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"

#include <gtest/gtest.h>

using namespace mlir;

namespace {

/// The `blocked` parameter of every stlm_attention_grad kernel of
/// char-tiny with `context` tokens and `batch` sequences.
std::vector<std::string> backwardSchedules(int64_t context, int64_t batch) {
  std::string path =
      std::string(STLM_SOURCE_DIR) + "/examples/models/char-tiny.yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  EXPECT_TRUE(spec.spec.has_value());
  if (!spec.spec)
    return {};
  spec.spec->core.context = context;
  spec.spec->train.batch = batch;
  MLIRContext ctx;
  ctx.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                  arith::ArithDialect>();
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(ctx, *spec.spec);
  PassManager pm(&ctx);
  pm.addPass(mlir::stlm::createAutodiffPass());
  mlir::stlm::addPlanPasses(pm);
  EXPECT_TRUE(succeeded(pm.run(*module)));
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  EXPECT_TRUE(model);
  if (!model)
    return {};
  ::stlm::codegen::KernelPlan plan = ::stlm::codegen::planKernels(model);
  std::vector<std::string> blocked;
  for (const ::stlm::codegen::KernelSpec &k : plan.kernels) {
    if (k.generator != "stlm_attention_grad")
      continue;
    std::string value = "(missing)";
    for (const auto &[key, v] : k.params)
      if (key == "blocked")
        value = v;
    blocked.push_back(value);
  }
  return blocked;
}

TEST(KernelPlan, ShortContextsMaterialiseTheBackward) {
  // 12 × 4 heads × 64 × 64: 1.5 MiB of probabilities and gradients.
  EXPECT_EQ(backwardSchedules(64, 12), std::vector<std::string>{"false"});
}

TEST(KernelPlan, LongContextsBlockTheBackward) {
  // 2 × 4 heads × 2048 × 2048: 256 MiB if materialised.
  EXPECT_EQ(backwardSchedules(2048, 2), std::vector<std::string>{"true"});
  // Just under the 64 MiB line (1 × 4 × 1024 × 1024 × 2 floats = 32 MiB),
  // and just over it (4 × … = 128 MiB).
  EXPECT_EQ(backwardSchedules(1024, 1), std::vector<std::string>{"false"});
  EXPECT_EQ(backwardSchedules(1024, 4), std::vector<std::string>{"true"});
}

} // namespace
