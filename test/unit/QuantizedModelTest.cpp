//===- QuantizedModelTest.cpp - stlm-quantize on the example models -------===//
//
// stlm-quantize chooses the weights to quantize from the IR (parameters
// read only as linear weights); a quantized checkpoint stores the ones
// frontend/Quantized's rule names. The two must be the same tensors, with
// the same shapes, or a quantized checkpoint would not load into a
// quantized model: checked on four example models (token, byte-pool,
// shared layers with LoRA; the 50m and 100m ones are larger copies of
// them) and both schemes.
//
// And that every quantized linear is planned onto the quantized matvec of
// its scheme, with the shapes and group of the op.
//
//===----------------------------------------------------------------------===//

#include "codegen/artifact/KernelPlan.h"
#include "dialects/STLM/IR/STLMOps.h"
#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/Quantized.h"
#include "frontend/Spec.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Pipelines.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace mlir;

namespace {

/// name -> shape of every parameter of `model`, with `i8` marking the
/// quantized ones.
std::map<std::string, std::pair<std::vector<int64_t>, bool>>
paramsOf(mlir::stlm::ModelOp model) {
  std::map<std::string, std::pair<std::vector<int64_t>, bool>> out;
  for (mlir::stlm::ParamOp p : model.getParams()) {
    RankedTensorType t = p.getTensorType();
    out[p.getSymName().str()] = {
        std::vector<int64_t>(t.getShape().begin(), t.getShape().end()),
        t.getElementType().isInteger(8)};
  }
  return out;
}

/// The model of `spec` through the plan stage with stlm-quantize in
/// `format` (null, with a test failure, when the pipeline fails).
mlir::stlm::ModelOp quantizedPlan(MLIRContext &ctx,
                                  OwningOpRef<ModuleOp> &module,
                                  const ::stlm::ModelSpec &spec,
                                  const ::stlm::quant::Format &format) {
  ctx.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                  arith::ArithDialect>();
  module = ::stlm::buildModel(ctx, spec);
  PassManager pm(&ctx);
  mlir::stlm::PipelineChoices choices;
  choices.quantize = format;
  mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Plan, std::nullopt, choices);
  mlir::stlm::ModelOp model;
  if (failed(pm.run(*module))) {
    ADD_FAILURE() << spec.name << " " << ::stlm::describe(format);
    return model;
  }
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  return model;
}

class QuantizedModel : public ::testing::TestWithParam<const char *> {};

TEST_P(QuantizedModel, QuantizesWhatACheckpointStoresQuantized) {
  std::string path =
      std::string(STLM_SOURCE_DIR) + "/examples/models/" + GetParam() + ".yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  ASSERT_TRUE(spec.spec.has_value()) << path;
  ::stlm::ParamTable table = ::stlm::buildParamTable(*spec.spec);
  for (::stlm::quant::Scheme scheme :
       {::stlm::quant::Scheme::Int8, ::stlm::quant::Scheme::Int4}) {
    ::stlm::quant::Format format{scheme, 32};
    MLIRContext ctx;
    OwningOpRef<ModuleOp> module;
    mlir::stlm::ModelOp model = quantizedPlan(ctx, module, *spec.spec, format);
    ASSERT_TRUE(model) << GetParam();
    auto params = paramsOf(model);
    // What the checkpoint holds, param by param.
    std::map<std::string, std::pair<std::vector<int64_t>, bool>> expected;
    int quantized = 0;
    for (const ::stlm::ParamInfo &p : table.params) {
      if (!::stlm::isQuantizedWeight(p.name)) {
        expected[p.name] = {p.shape, false};
        continue;
      }
      ++quantized;
      int64_t out = p.shape[0], in = p.shape[1];
      expected[p.name] = {
          {out, scheme == ::stlm::quant::Scheme::Int4 ? in / 2 : in}, true};
      expected[p.name + ".scale"] = {{out, in / format.group}, false};
    }
    EXPECT_GT(quantized, 0) << GetParam();
    EXPECT_EQ(params, expected)
        << GetParam() << " " << ::stlm::describe(format);
    // Inference only: no training function, no optimizer state.
    for (auto fn : model.getBody().front().getOps<func::FuncOp>())
      for (const char *training : {"grad", "train_step", "accumulate", "apply"})
        EXPECT_NE(fn.getSymName(), training);
    for (auto s : model.getBody().front().getOps<mlir::stlm::StateOp>())
      EXPECT_FALSE(s.getSymName().starts_with("opt.")) << s.getSymName().str();
  }
}

TEST(QuantizedModel, QLinearsRunOnTheQuantizedMatvec) {
  std::string path =
      std::string(STLM_SOURCE_DIR) + "/examples/models/char-tiny.yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  ASSERT_TRUE(spec.spec.has_value());
  for (::stlm::quant::Scheme scheme :
       {::stlm::quant::Scheme::Int8, ::stlm::quant::Scheme::Int4}) {
    MLIRContext ctx;
    OwningOpRef<ModuleOp> module;
    mlir::stlm::ModelOp model = quantizedPlan(
        ctx, module, *spec.spec, ::stlm::quant::Format{scheme, 64});
    ASSERT_TRUE(model);
    ::stlm::codegen::KernelPlan plan = ::stlm::codegen::planKernels(model);
    EXPECT_TRUE(plan.unsupported.empty())
        << plan.explainUnsupported("char-tiny");
    // Every weight of char-tiny has whole blocks of 16 outputs, so all
    // run on the tiled matvec.
    std::string gen =
        std::string("stlm_qmatvec_tiled_") + ::stlm::quant::schemeName(scheme);
    // char-tiny: width 128, SwiGLU 512, batch 12 × 64; decode one row.
    std::set<std::string> keys;
    for (const ::stlm::codegen::KernelSpec &k : plan.kernels) {
      // Only the tied head (vocab 256, f32) stays a float product.
      if (k.generator == "stlm_matmul" || k.generator == "stlm_matvec")
        EXPECT_NE(k.key().find(" n=256 "), std::string::npos) << k.key();
      if (k.generator == gen)
        keys.insert(k.key());
      EXPECT_EQ(k.generator.rfind("stlm_qmatvec_int", 0), std::string::npos)
          << k.key();
    }
    for (const char *shape :
         {"m=1 n=128 k=128", "m=1 n=512 k=128", "m=1 n=128 k=512",
          "m=768 n=128 k=128", "m=64 n=512 k=128"})
      EXPECT_TRUE(keys.count(gen + " " + shape + " group=64"))
          << gen << " " << shape;
  }
}

TEST(QuantizedModel, WeightsTileWhereTheirShapeAllows) {
  using ::stlm::codegen::tiledWeight;
  EXPECT_TRUE(tiledWeight("int8", 768, 2048, 32));
  EXPECT_TRUE(tiledWeight("int4", 256, 768, 32));
  EXPECT_TRUE(tiledWeight("int8", 16, 12, 4));
  EXPECT_FALSE(tiledWeight("int8", 40, 128, 32));        // 40 outputs
  EXPECT_FALSE(tiledWeight("int4", 32, 96, 12));         // int4 groups of 8
  EXPECT_FALSE(tiledWeight("int8", 16, 96, 6));          // int8 groups of 4
  EXPECT_FALSE(tiledWeight("int8", 16, 131072, 131072)); // int32 overflow
  EXPECT_TRUE(tiledWeight("int4", 16, 131072, 131072));
}

INSTANTIATE_TEST_SUITE_P(Examples, QuantizedModel,
                         ::testing::Values("char-tiny", "ref-3m", "stlm-10m",
                                           "byte-pool-3m"),
                         [](const auto &info) {
                           std::string n = info.param;
                           for (char &c : n)
                             if (c == '-')
                               c = '_';
                           return n;
                         });

} // namespace
