//===- KernelPlanTest.cpp - kernel choices that depend on a model's shape -===//
//
// The attention backward's schedule: the materialised one for short
// contexts, the blocked one (a block × T or S per thread) once the
// probabilities and gradients it would hold at once pass 16 MiB (2·H·T·S
// floats when it runs one batch element at a time, 2·B·H·T·S with grouped
// kv heads). Plans char-tiny as written and with other contexts, batches
// and kv heads.
//
// And that the plan and the driver agree: the lowered driver of a model
// declares and calls exactly the kernels its plan lists, with every
// training variant (accumulation, no clipping, a masked objective, LoRA).
//
//===----------------------------------------------------------------------===//

#include "codegen/artifact/KernelPlan.h"
#include "codegen/driver/LowerToLLVM.h"
#include "frontend/BuildModel.h"
#include "frontend/Spec.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Pipelines.h"

#include <gtest/gtest.h>

#include <set>

using namespace mlir;

namespace {

/// The `blocked` parameter of every stlm_attention_grad kernel of
/// char-tiny (4 heads) with `context` tokens, `batch` sequences and
/// `kvHeads` kv heads.
std::vector<std::string> backwardSchedules(int64_t context, int64_t batch,
                                           int64_t kvHeads = 4) {
  std::string path =
      std::string(STLM_SOURCE_DIR) + "/examples/models/char-tiny.yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  EXPECT_TRUE(spec.spec.has_value());
  if (!spec.spec)
    return {};
  spec.spec->core.context = context;
  spec.spec->train.batch = batch;
  spec.spec->core.kvHeads = kvHeads;
  MLIRContext ctx;
  ctx.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                  arith::ArithDialect>();
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(ctx, *spec.spec);
  PassManager pm(&ctx);
  mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Plan);
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
  // 4 heads × 64 × 64 × 2 floats: 128 KiB per batch element.
  EXPECT_EQ(backwardSchedules(64, 12), std::vector<std::string>{"false"});
  // 4 × 512 × 512 × 2: 8 MiB, whatever the batch.
  EXPECT_EQ(backwardSchedules(512, 64), std::vector<std::string>{"false"});
}

TEST(KernelPlan, LongContextsBlockTheBackward) {
  // 4 × 1024 × 1024 × 2 floats: 32 MiB per batch element.
  EXPECT_EQ(backwardSchedules(1024, 1), std::vector<std::string>{"true"});
  EXPECT_EQ(backwardSchedules(2048, 2), std::vector<std::string>{"true"});
}

TEST(KernelPlan, GroupedKvHeadsCountOneBatchElement) {
  // 2 kv heads, still one sequence at a time: 4 × 256 × 256 × 2 floats =
  // 2 MiB whatever the batch; 4 × 1024 × 1024 × 2 = 32 MiB blocks.
  EXPECT_EQ(backwardSchedules(256, 4, 2), std::vector<std::string>{"false"});
  EXPECT_EQ(backwardSchedules(256, 16, 2), std::vector<std::string>{"false"});
  EXPECT_EQ(backwardSchedules(1024, 1, 2), std::vector<std::string>{"true"});
}

/// The kernels the plan of `spec` lists, and those its lowered driver
/// declares and calls; they must be the same.
void expectDriverCallsThePlan(const ::stlm::ModelSpec &spec) {
  SCOPED_TRACE(spec.name);
  MLIRContext ctx;
  ctx.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                  arith::ArithDialect, LLVM::LLVMDialect>();
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(ctx, spec);
  PassManager pm(&ctx);
  mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Plan);
  ASSERT_TRUE(succeeded(pm.run(*module)));
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  ::stlm::codegen::KernelPlan plan = ::stlm::codegen::planKernels(model);
  ASSERT_TRUE(plan.unsupported.empty());
  std::string prefix = ::stlm::codegen::symbolPrefix(model);
  ASSERT_TRUE(succeeded(::stlm::codegen::lowerToLLVM(*module, model, plan)));
  std::set<std::string> planned, declared, called;
  for (size_t i = 0; i < plan.kernels.size(); ++i)
    planned.insert(prefix + "_k" + std::to_string(i));
  std::string kernel = prefix + "_k";
  module->walk([&](LLVM::LLVMFuncOp f) {
    if (f.getSymName().starts_with(kernel))
      declared.insert(f.getSymName().str());
  });
  module->walk([&](LLVM::CallOp c) {
    if (c.getCallee() && c.getCallee()->starts_with(kernel))
      called.insert(c.getCallee()->str());
  });
  EXPECT_EQ(declared, planned);
  EXPECT_EQ(called, planned);
}

::stlm::ModelSpec example(const std::string &name) {
  ::stlm::SpecResult r = ::stlm::readSpecFile(
      std::string(STLM_SOURCE_DIR) + "/examples/models/" + name + ".yaml");
  EXPECT_TRUE(r.spec.has_value());
  return r.spec ? *r.spec : ::stlm::ModelSpec{};
}

TEST(KernelPlan, TheDriverCallsExactlyThePlannedKernels) {
  ::stlm::ModelSpec tiny = example("char-tiny");
  expectDriverCallsThePlan(tiny);
  // Gradient accumulation: @accumulate sums in place, @apply updates.
  ::stlm::ModelSpec acc = tiny;
  acc.name = "acc";
  acc.train.accumulate = 3;
  expectDriverCallsThePlan(acc);
  // Without clipping no gradient is scaled, and no scale kernel is made.
  ::stlm::ModelSpec noClip = tiny;
  noClip.name = "no-clip";
  noClip.train.gradClip = 0;
  expectDriverCallsThePlan(noClip);
  // A masked objective beside next-token: masks and masked losses.
  ::stlm::ModelSpec masked = tiny;
  masked.name = "masked";
  ::stlm::ObjectiveSpec mask;
  mask.kind = ::stlm::ObjectiveKind::MaskedNextToken;
  mask.weight = 0.5;
  masked.objectives.push_back(mask);
  expectDriverCallsThePlan(masked);
  // LoRA deltas (stlm-decompose) and shared layers.
  expectDriverCallsThePlan(example("stlm-10m"));
}

TEST(KernelPlan, RopeFoldedIntoAttentionIsRefusedByName) {
  // The CUDA target's fusion (stlm-fuse's rope-into-attention): the host
  // kernels take RoPE and attention apart, so a plan of the fused IR says
  // why instead of planning a kernel that would not rotate.
  ::stlm::ModelSpec spec = example("char-tiny");
  spec.train.precision = ::stlm::Precision::BF16;
  MLIRContext ctx;
  ctx.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                  arith::ArithDialect>();
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(ctx, spec);
  PassManager pm(&ctx);
  mlir::stlm::PipelineChoices choices;
  choices.ropeIntoAttention = true;
  mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Plan, std::nullopt, choices);
  ASSERT_TRUE(succeeded(pm.run(*module)));
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  ::stlm::codegen::KernelPlan plan = ::stlm::codegen::planKernels(model);
  std::string why = "RoPE folded into the attention (rope_theta) is the CUDA "
                    "target's fusion; the host kernels take stlm.rope and "
                    "stlm.attention apart";
  // @grad's 4 attentions and @eval's, @logits' 4; @grad's 4 gradients.
  EXPECT_EQ(plan.unsupported["stlm.attention: " + why], 12);
  EXPECT_EQ(plan.unsupported["stlm.attention_grad: " + why], 4);
  EXPECT_NE(plan.explainUnsupported("char-tiny").find(why), std::string::npos);
}

} // namespace
