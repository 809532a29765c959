//===- PlanMemoryTest.cpp - the arena plan of real models is sound --------===//
//
// For the @grad of example models: runs stlm-autodiff and stlm-plan-memory,
// then checks the plan with an independent pairwise test: any two tensors
// alive at the same time (definition to last use, through reshapes; returned
// values to the end) occupy disjoint bytes, everything fits in the arena,
// offsets are 64-byte aligned, and reuse makes the arena smaller than the
// sum of all tensors.
//
//===----------------------------------------------------------------------===//

#include "frontend/BuildModel.h"
#include "frontend/Spec.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"

#include <gtest/gtest.h>

using namespace mlir;

namespace {

struct Tensor {
  Value value;
  int64_t offset, size, begin, end;
};

int64_t bytesOf(Type type) {
  auto t = llvm::cast<RankedTensorType>(type);
  return t.getNumElements() * std::max<int64_t>(1, t.getElementTypeBitWidth() / 8);
}

class PlanMemory : public ::testing::TestWithParam<const char *> {};

TEST_P(PlanMemory, LiveTensorsNeverShareBytes) {
  std::string path = std::string(STLM_SOURCE_DIR) + "/examples/models/" +
                     GetParam() + ".yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  ASSERT_TRUE(spec.spec.has_value());
  MLIRContext context;
  context.loadDialect<mlir::stlm::STLMDialect, func::FuncDialect,
                      arith::ArithDialect>();
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(context, *spec.spec);
  PassManager pm(&context);
  pm.addPass(mlir::stlm::createAutodiffPass());
  pm.addPass(mlir::stlm::createPlanMemoryPass());
  ASSERT_TRUE(succeeded(pm.run(*module)));

  func::FuncOp grad;
  module->walk([&](func::FuncOp f) {
    if (f.getSymName() == "grad")
      grad = f;
  });
  ASSERT_TRUE(grad);
  auto arenaAttr = grad->getAttrOfType<IntegerAttr>("stlm.arena_size");
  ASSERT_TRUE(arenaAttr);
  int64_t arena = arenaAttr.getInt();

  // Positions, and the tensors that own bytes (offset >= 0, not a reshape).
  Block &body = grad.getBody().front();
  llvm::DenseMap<Operation *, int64_t> position;
  int64_t n = 0;
  for (Operation &op : body)
    position[&op] = n++;
  std::vector<Tensor> tensors;
  llvm::DenseMap<Value, size_t> owner;
  int64_t naive = 0;
  for (Operation &op : body) {
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
    if (op.getNumResults() && !isa<mlir::stlm::SplitSlotsOp, mlir::stlm::MergeSlotsOp>(op))
      ASSERT_TRUE(offsets) << op.getName().getStringRef().str();
    for (auto [i, r] : llvm::enumerate(op.getResults())) {
      if (!offsets || offsets[i] < 0 ||
          isa<mlir::stlm::SplitSlotsOp, mlir::stlm::MergeSlotsOp>(op))
        continue;
      EXPECT_EQ(offsets[i] % 64, 0);
      owner[r] = tensors.size();
      tensors.push_back({r, offsets[i], bytesOf(r.getType()), position[&op],
                         position[&op]});
      naive += bytesOf(r.getType());
    }
  }
  // Last uses, following reshapes back to the tensor that owns the bytes.
  std::function<Value(Value)> root = [&](Value v) -> Value {
    Operation *d = v.getDefiningOp();
    if (d && isa<mlir::stlm::SplitSlotsOp, mlir::stlm::MergeSlotsOp>(d))
      return root(d->getOperand(0));
    return v;
  };
  for (Operation &op : body)
    for (Value operand : op.getOperands()) {
      auto it = owner.find(root(operand));
      if (it == owner.end())
        continue;
      int64_t at = isa<func::ReturnOp>(op) ? n : position[&op];
      tensors[it->second].end = std::max(tensors[it->second].end, at);
    }

  for (const Tensor &t : tensors)
    ASSERT_LE(t.offset + t.size, arena);
  int64_t overlaps = 0;
  for (size_t i = 0; i < tensors.size(); ++i)
    for (size_t j = i + 1; j < tensors.size(); ++j) {
      const Tensor &a = tensors[i], &b = tensors[j];
      bool together = a.begin <= b.end && b.begin <= a.end;
      bool shareBytes = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
      overlaps += together && shareBytes;
    }
  EXPECT_EQ(overlaps, 0) << "live tensors placed on the same bytes";
  EXPECT_LT(arena, naive) << "no reuse at all";
  std::printf("%s @grad: %zu tensors, %lld bytes without reuse, arena %lld "
              "bytes (%.1f %%)\n",
              GetParam(), tensors.size(), static_cast<long long>(naive),
              static_cast<long long>(arena), 100.0 * arena / naive);
}

INSTANTIATE_TEST_SUITE_P(Examples, PlanMemory,
                         ::testing::Values("char-tiny", "stlm-10m", "ref-3m"),
                         [](const ::testing::TestParamInfo<const char *> &i) {
                           std::string s = i.param;
                           for (char &c : s)
                             if (c == '-')
                               c = '_';
                           return s;
                         });

} // namespace
