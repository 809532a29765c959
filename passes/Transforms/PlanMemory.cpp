//===- PlanMemory.cpp - one static arena for straight-line functions ------===//
//
// Weights: a slot per stlm.param / stlm.state. Activations: liveness
// intervals over the op order of a straight-line function, then greedy
// placement by size (largest first, lowest aligned offset that collides with
// no placed interval alive at the same time).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/Builders.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

constexpr int64_t kAlign = 64;

int64_t alignUp(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

/// Bytes of a statically shaped tensor (i1 stored as bytes).
int64_t bytesOf(Type type) {
  auto t = llvm::cast<RankedTensorType>(type);
  int64_t elem = std::max<int64_t>(1, t.getElementTypeBitWidth() / 8);
  return t.getNumElements() * elem;
}

/// A value that needs its own bytes, and when it is alive.
struct Interval {
  Value value;
  int64_t size = 0, begin = 0, end = 0, offset = -1;
};

bool isStraightLine(func::FuncOp fn) {
  if (fn.isExternal() || !llvm::hasSingleElement(fn.getBody()))
    return false;
  bool ok = true;
  fn.walk([&](Operation *op) {
    if (isa<RepeatOp, func::CallOp>(op))
      ok = false;
  });
  return ok;
}

/// The value whose storage `v` uses (itself, or the input of a reshape
/// chain); null when `v` lives in the weights or with the caller.
Value storageOf(Value v) {
  while (true) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return Value(); // a function argument
    if (isa<ParamRefOp, StateRefOp>(def))
      return Value(); // the weight slot
    if (isa<SplitSlotsOp, MergeSlotsOp>(def)) {
      v = def->getOperand(0);
      continue;
    }
    return v;
  }
}

void planFunction(func::FuncOp fn, OpBuilder &b) {
  Block &body = fn.getBody().front();
  llvm::DenseMap<Value, size_t> index; // storage value -> interval
  std::vector<Interval> intervals;
  int64_t position = 0;
  for (Operation &op : body) {
    for (Value operand : op.getOperands())
      if (Value s = storageOf(operand)) {
        auto it = index.find(s);
        if (it != index.end())
          intervals[it->second].end = position;
      }
    for (Value r : op.getResults()) {
      if (!llvm::isa<RankedTensorType>(r.getType()) || storageOf(r) != r)
        continue;
      index[r] = intervals.size();
      intervals.push_back({r, alignUp(bytesOf(r.getType())), position,
                           position});
    }
    ++position;
  }
  // Returned values stay alive to the end.
  for (Value v : body.getTerminator()->getOperands())
    if (Value s = storageOf(v))
      intervals[index[s]].end = position;

  // Largest first; each at the lowest offset clear of every placed value
  // alive at the same time.
  std::vector<size_t> order(intervals.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t c) {
    return intervals[a].size > intervals[c].size;
  });
  std::vector<size_t> placed;
  int64_t arena = 0;
  for (size_t i : order) {
    Interval &iv = intervals[i];
    std::vector<std::pair<int64_t, int64_t>> busy; // [start, end) in bytes
    for (size_t j : placed) {
      const Interval &o = intervals[j];
      if (o.begin <= iv.end && iv.begin <= o.end)
        busy.push_back({o.offset, o.offset + o.size});
    }
    std::sort(busy.begin(), busy.end());
    int64_t offset = 0;
    for (auto [start, end] : busy) {
      if (offset + iv.size <= start)
        break;
      offset = std::max(offset, end);
    }
    iv.offset = offset;
    arena = std::max(arena, offset + iv.size);
    placed.push_back(i);
  }

  // Record: per op, one offset per result (-1: no arena bytes of its own;
  // a reshape reports its input's offset).
  for (Operation &op : body) {
    if (op.getNumResults() == 0)
      continue;
    SmallVector<int64_t> offsets;
    for (Value r : op.getResults()) {
      Value s = llvm::isa<RankedTensorType>(r.getType()) ? storageOf(r)
                                                         : Value();
      offsets.push_back(s ? intervals[index[s]].offset : -1);
    }
    op.setAttr("stlm.offsets", b.getDenseI64ArrayAttr(offsets));
  }
  fn->setAttr("stlm.arena_size", b.getI64IntegerAttr(arena));
}

struct PlanMemoryPass
    : public mlir::stlm::impl::PlanMemoryPassBase<PlanMemoryPass> {
  void runOnOperation() override {
    OpBuilder b(&getContext());
    getOperation().walk([&](ModelOp model) {
      int64_t weights = 0;
      for (Operation &op : model.getBody().front()) {
        Type type;
        if (auto p = dyn_cast<ParamOp>(op))
          type = p.getType();
        else if (auto s = dyn_cast<StateOp>(op))
          type = s.getType();
        else
          continue;
        op.setAttr("stlm.offset", b.getI64IntegerAttr(weights));
        weights += alignUp(bytesOf(type));
      }
      model->setAttr("stlm.weights_size", b.getI64IntegerAttr(weights));
      for (auto fn : model.getBody().front().getOps<func::FuncOp>())
        if (isStraightLine(fn))
          planFunction(fn, b);
    });
  }
};

} // namespace
