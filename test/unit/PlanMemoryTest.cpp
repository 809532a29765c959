//===- PlanMemoryTest.cpp - the arena plan of real models is sound --------===//
//
// For example models: runs the passes stlm-compile runs before it writes an
// artifact (buildPipeline up to `artifact`: verify-shapes, autodiff,
// add-decode, decompose, fuse, plan-memory), then checks the plan of every
// planned function (@grad, @prefill and @decode_step required; @logits,
// @eval, and @apply of a model that accumulates, too) with an independent
// pairwise test: any two tensors alive at the same time (definition to last
// use, through reshapes; returned values to the end) occupy disjoint bytes,
// everything fits in the arena, offsets are 64-byte aligned, and reuse
// makes the arena smaller than the sum of all tensors. Also: every straight-line function is planned; a weight
// read still in use after its symbol is assigned has bytes of its own (a
// snapshot), any other weight read none; the weights and states have
// aligned, disjoint slots inside the weights size.
//
//===----------------------------------------------------------------------===//

#include "dialects/STLM/IR/STLMOps.h"
#include "frontend/BuildModel.h"
#include "frontend/Spec.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Pipelines.h"
#include "tools/common/InitAll.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>

using namespace mlir;
using mlir::stlm::AssignOp;
using mlir::stlm::MergeSlotsOp;
using mlir::stlm::ParamRefOp;
using mlir::stlm::SplitSlotsOp;
using mlir::stlm::StateRefOp;

namespace {

constexpr int64_t kAlign = 64;

struct Tensor {
  Value value;
  int64_t offset, size, begin, end;
};

int64_t bytesOf(Type type) {
  auto t = llvm::cast<RankedTensorType>(type);
  return t.getNumElements() * std::max<int64_t>(1, t.getElementTypeBitWidth() / 8);
}

bool isReshape(Operation *op) { return isa<SplitSlotsOp, MergeSlotsOp>(op); }

/// The value whose bytes `v` uses: through reshapes to their input.
Value root(Value v) {
  Operation *d = v.getDefiningOp();
  if (d && isReshape(d))
    return root(d->getOperand(0));
  return v;
}

/// Checks the arena plan of one function.
void checkFunction(func::FuncOp fn, const std::string &model) {
  SCOPED_TRACE(model + " @" + fn.getSymName().str());
  auto arenaAttr = fn->getAttrOfType<IntegerAttr>("stlm.arena_size");
  ASSERT_TRUE(arenaAttr) << "not planned";
  int64_t arena = arenaAttr.getInt();

  // Positions, and the tensors that own bytes (offset >= 0, not a reshape).
  Block &body = fn.getBody().front();
  llvm::DenseMap<Operation *, int64_t> position;
  int64_t n = 0;
  for (Operation &op : body)
    position[&op] = n++;
  std::vector<Tensor> tensors;
  llvm::DenseMap<Value, size_t> owner;
  int64_t naive = 0;
  for (Operation &op : body) {
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
    if (op.getNumResults() && !isReshape(&op)) {
      ASSERT_TRUE(offsets) << op.getName().getStringRef().str();
      ASSERT_EQ(offsets.size(), static_cast<int64_t>(op.getNumResults()))
          << op.getName().getStringRef().str();
    }
    if (!offsets || isReshape(&op))
      continue;
    for (auto [i, r] : llvm::enumerate(op.getResults())) {
      if (offsets[i] < 0)
        continue;
      ASSERT_TRUE(llvm::isa<RankedTensorType>(r.getType()));
      EXPECT_EQ(offsets[i] % kAlign, 0) << op.getName().getStringRef().str();
      owner[r] = tensors.size();
      tensors.push_back({r, offsets[i], bytesOf(r.getType()), position[&op],
                         position[&op]});
      naive += bytesOf(r.getType());
    }
  }
  // Last uses, following reshapes back to the tensor that owns the bytes.
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

  // Weight reads: one whose symbol is assigned while the read (or a
  // reshape of it) is still in use needs a copy of its own; any other is
  // read in place.
  for (Operation &op : body) {
    StringRef name;
    if (auto r = dyn_cast<ParamRefOp>(op))
      name = r.getName();
    else if (auto r = dyn_cast<StateRefOp>(op))
      name = r.getName();
    else
      continue;
    int64_t lastUse = position[&op];
    std::function<void(Value)> uses = [&](Value v) {
      for (Operation *user : v.getUsers()) {
        lastUse = std::max(lastUse, isa<func::ReturnOp>(user) ? n
                                                              : position[user]);
        if (isReshape(user))
          uses(user->getResult(0));
      }
    };
    uses(op.getResult(0));
    bool overwritten = false;
    for (Operation &other : body)
      if (auto a = dyn_cast<AssignOp>(other))
        overwritten |= a.getName() == name && position[&other] > position[&op] &&
                       position[&other] < lastUse;
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
    if (overwritten) {
      EXPECT_GE(offsets[0], 0) << "@" << name.str()
                               << " read, assigned, then used: no snapshot";
    } else {
      EXPECT_EQ(offsets[0], -1) << "@" << name.str() << " copied needlessly";
    }
  }

  std::printf("%s @%s: %zu tensors, %lld bytes without reuse, arena %lld "
              "bytes (%.1f %%)\n",
              model.c_str(), fn.getSymName().str().c_str(), tensors.size(),
              static_cast<long long>(naive), static_cast<long long>(arena),
              100.0 * arena / naive);
}

class PlanMemory : public ::testing::TestWithParam<const char *> {};

TEST_P(PlanMemory, LiveTensorsNeverShareBytes) {
  // "NAME" or "NAME+accumulate": the example, or it with two
  // micro-batches per step (@accumulate and @apply instead of
  // @train_step; @apply is straight-line and planned).
  std::string param = GetParam(), name = param.substr(0, param.find('+'));
  bool accumulate = param != name;
  std::string path =
      std::string(STLM_SOURCE_DIR) + "/examples/models/" + name + ".yaml";
  ::stlm::SpecResult spec = ::stlm::readSpecFile(path);
  ASSERT_TRUE(spec.spec.has_value());
  if (accumulate)
    spec.spec->train.accumulate = 2;
  DialectRegistry registry;
  mlir::stlm::registerAllDialects(registry);
  MLIRContext context(registry);
  OwningOpRef<ModuleOp> module = ::stlm::buildModel(context, *spec.spec);
  ASSERT_TRUE(succeeded(mlir::verify(*module)));
  // As stlm-compile -o DIR: the built model checked, then the passes of
  // the artifact stage.
  PassManager built(&context), stages(&context);
  mlir::stlm::buildPipeline(built, mlir::stlm::Stage::STLM);
  mlir::stlm::buildPipeline(stages, mlir::stlm::Stage::Artifact,
                            mlir::stlm::Stage::STLM);
  ASSERT_TRUE(succeeded(built.run(*module)));
  ASSERT_TRUE(succeeded(stages.run(*module)));

  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  ASSERT_TRUE(model);

  // Weights and states: aligned, disjoint slots within the weights size.
  auto weightsAttr = model->getAttrOfType<IntegerAttr>("stlm.weights_size");
  ASSERT_TRUE(weightsAttr);
  std::vector<std::pair<int64_t, int64_t>> slots;
  for (Operation &op : model.getBody().front()) {
    Type type;
    if (auto p = dyn_cast<mlir::stlm::ParamOp>(op))
      type = p.getType();
    else if (auto s = dyn_cast<mlir::stlm::StateOp>(op))
      type = s.getType();
    else
      continue;
    auto offset = op.getAttrOfType<IntegerAttr>("stlm.offset");
    ASSERT_TRUE(offset);
    EXPECT_EQ(offset.getInt() % kAlign, 0);
    slots.push_back({offset.getInt(), offset.getInt() + bytesOf(type)});
  }
  std::sort(slots.begin(), slots.end());
  for (size_t i = 0; i < slots.size(); ++i) {
    EXPECT_GE(slots[i].first, 0);
    EXPECT_LE(slots[i].second, weightsAttr.getInt());
    if (i) {
      EXPECT_LE(slots[i - 1].second, slots[i].first) << "weights overlap";
    }
  }

  // Every straight-line function is planned and checked; the training
  // gradient and both inference entry points must be among them.
  std::set<std::string> checked;
  for (auto fn : model.getBody().front().getOps<func::FuncOp>()) {
    bool straight = !fn.isExternal() && llvm::hasSingleElement(fn.getBody());
    fn.walk([&](Operation *op) {
      if (isa<mlir::stlm::RepeatOp, func::CallOp>(op))
        straight = false;
    });
    if (!straight)
      continue;
    checkFunction(fn, param);
    checked.insert(fn.getSymName().str());
  }
  std::vector<std::string> required = {"grad", "prefill", "decode_step"};
  if (accumulate)
    required.push_back("apply");
  for (const std::string &f : required)
    EXPECT_TRUE(checked.count(f)) << "@" << f << " not checked";
}

INSTANTIATE_TEST_SUITE_P(Examples, PlanMemory,
                         ::testing::Values("char-tiny", "stlm-10m", "ref-3m",
                                           "char-tiny+accumulate"),
                         [](const ::testing::TestParamInfo<const char *> &i) {
                           std::string s = i.param;
                           for (char &c : s)
                             if (c == '-' || c == '+')
                               c = '_';
                           return s;
                         });

} // namespace
