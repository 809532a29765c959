//===- DialectTest.cpp - the stlm dialect through its C++ API -------------===//
//
// Builds models with OpBuilder (as the frontend will) and checks that the
// verifier accepts and rejects what it should, and the ops' C++ helpers.
//
//===----------------------------------------------------------------------===//

#include "dialects/STLM/IR/STLMOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "tools/common/InitAll.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

using namespace mlir;
using namespace mlir::stlm;

namespace {

class DialectTest : public ::testing::Test {
protected:
  DialectTest() {
    DialectRegistry registry;
    registerAllDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
    // Collect diagnostics instead of printing them.
    handler = std::make_unique<ScopedDiagnosticHandler>(
        &context, [this](Diagnostic &d) {
          diagnostics += d.str() + "\n";
          return success();
        });
  }

  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, FloatType::getF32(&context));
  }
  RankedTensorType i32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, IntegerType::get(&context, 32));
  }

  /// A module holding one empty `stlm.model @m`; `model` is set to it.
  OwningOpRef<ModuleOp> makeModel() {
    OpBuilder b(&context);
    OwningOpRef<ModuleOp> module = ModuleOp::create(b.getUnknownLoc());
    b.setInsertionPointToEnd(module->getBody());
    model = b.create<ModelOp>(b.getUnknownLoc(), b.getStringAttr("m"));
    model.getBody().emplaceBlock();
    return module;
  }

  ParamOp addParam(StringRef name, RankedTensorType type, InitKind init,
                   std::optional<double> std = std::nullopt) {
    OpBuilder b = OpBuilder::atBlockEnd(&model.getBody().front());
    return b.create<ParamOp>(b.getUnknownLoc(), b.getStringAttr(name),
                             TypeAttr::get(type),
                             InitKindAttr::get(&context, init),
                             std ? b.getF64FloatAttr(*std) : FloatAttr());
  }

  MLIRContext context;
  std::unique_ptr<ScopedDiagnosticHandler> handler;
  std::string diagnostics;
  ModelOp model;
};

TEST_F(DialectTest, BuiltModelWithTiedHeadVerifies) {
  OwningOpRef<ModuleOp> module = makeModel();
  addParam("embed.tok", f32({256, 32}), InitKind::normal, 0.02);
  OpBuilder b = OpBuilder::atBlockEnd(&model.getBody().front());
  Location loc = b.getUnknownLoc();
  auto fn = b.create<func::FuncOp>(
      loc, "logits",
      b.getFunctionType({i32({2, 8})}, {f32({2, 8, 256})}));
  b.setInsertionPointToStart(fn.addEntryBlock());
  // The embedding table is read twice: embedder and tied head.
  Value table = b.create<ParamRefOp>(loc, f32({256, 32}), "embed.tok");
  Value x = b.create<EmbedOp>(loc, f32({2, 8, 32}), table, fn.getArgument(0));
  Value tied = b.create<ParamRefOp>(loc, f32({256, 32}), "embed.tok");
  Value logits = b.create<LogitsOp>(loc, f32({2, 8, 256}), x, tied);
  b.create<func::ReturnOp>(loc, logits);

  EXPECT_TRUE(succeeded(verify(*module))) << diagnostics;
  EXPECT_EQ(std::distance(model.getParams().begin(), model.getParams().end()),
            1);
}

TEST_F(DialectTest, ParamRefWithWrongShapeIsRejected) {
  OwningOpRef<ModuleOp> module = makeModel();
  addParam("norm", f32({32}), InitKind::ones);
  OpBuilder b = OpBuilder::atBlockEnd(&model.getBody().front());
  Location loc = b.getUnknownLoc();
  auto fn = b.create<func::FuncOp>(loc, "f",
                                   b.getFunctionType({}, {f32({16})}));
  b.setInsertionPointToStart(fn.addEntryBlock());
  Value g = b.create<ParamRefOp>(loc, f32({16}), "norm");
  b.create<func::ReturnOp>(loc, g);

  EXPECT_TRUE(failed(verify(*module)));
  EXPECT_NE(diagnostics.find("does not match parameter '@norm'"),
            std::string::npos)
      << diagnostics;
}

TEST_F(DialectTest, NormalInitNeedsPositiveStd) {
  OwningOpRef<ModuleOp> module = makeModel();
  addParam("w", f32({4, 4}), InitKind::normal, -1.0);
  EXPECT_TRUE(failed(verify(*module)));
  EXPECT_NE(diagnostics.find("standard deviation must be finite and > 0"),
            std::string::npos)
      << diagnostics;
}

TEST_F(DialectTest, LayerParamNameSubstitutesTheIndex) {
  OwningOpRef<ModuleOp> module = makeModel();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  // The op need not be verified to compute names; build it detached.
  Block block;
  block.addArgument(b.getIndexType(), loc);
  b.setInsertionPointToStart(&block);
  auto ref = b.create<LayerParamRefOp>(loc, f32({4}), "layers.{}.lora.w1.a",
                                       block.getArgument(0));
  EXPECT_EQ(ref.getNameForLayer(0), "layers.0.lora.w1.a");
  EXPECT_EQ(ref.getNameForLayer(17), "layers.17.lora.w1.a");
  ref->erase();
}

TEST_F(DialectTest, LRScheduleMatchesClosedForm) {
  OwningOpRef<ModuleOp> module = makeModel();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  Block block;
  block.addArgument(i32({}), loc);
  b.setInsertionPointToStart(&block);
  const double lr = 1e-3, minLr = 1e-4;
  auto cosine = b.create<LRScheduleOp>(
      loc, f32({}), ScheduleKindAttr::get(&context, ScheduleKind::cosine),
      block.getArgument(0), b.getF64FloatAttr(lr), b.getF64FloatAttr(minLr),
      b.getI64IntegerAttr(100), b.getI64IntegerAttr(2000));
  // Warmup is linear from lr/W at step 0 to lr at step W-1.
  EXPECT_DOUBLE_EQ(cosine.valueAt(0), lr / 100);
  EXPECT_DOUBLE_EQ(cosine.valueAt(99), lr);
  // Cosine starts at lr, passes the midpoint half way, ends at min_lr.
  EXPECT_DOUBLE_EQ(cosine.valueAt(100), lr);
  EXPECT_NEAR(cosine.valueAt(1050), (lr + minLr) / 2, 1e-15);
  EXPECT_NEAR(cosine.valueAt(2000), minLr, 1e-15);
  EXPECT_NEAR(cosine.valueAt(5000), minLr, 1e-15);
  // Monotone non-increasing after warmup.
  for (int s = 100; s < 2000; s += 37)
    EXPECT_GE(cosine.valueAt(s), cosine.valueAt(s + 37));

  auto constant = b.create<LRScheduleOp>(
      loc, f32({}), ScheduleKindAttr::get(&context, ScheduleKind::constant),
      block.getArgument(0), b.getF64FloatAttr(lr), b.getF64FloatAttr(minLr),
      b.getI64IntegerAttr(10), b.getI64IntegerAttr(2000));
  EXPECT_DOUBLE_EQ(constant.valueAt(4), lr * 5 / 10);
  EXPECT_DOUBLE_EQ(constant.valueAt(1999), lr);
  constant->erase();
  cosine->erase();
}

TEST_F(DialectTest, EnumsRoundTripThroughStrings) {
  for (StringRef s : {"fixed", "words", "given"})
    EXPECT_EQ(stringifyChunkMode(*symbolizeChunkMode(s)), s);
  for (StringRef s : {"mean", "masked_mean", "max"})
    EXPECT_EQ(stringifyPoolKind(*symbolizePoolKind(s)), s);
  EXPECT_FALSE(symbolizeMaskKind("sliding").has_value());
}

} // namespace
