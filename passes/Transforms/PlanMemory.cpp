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
#include "stlm/artifact_format.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringMap.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

/// Every offset is aligned as the entry points' pointers are (the artifact
/// format's rule).
constexpr int64_t kAlign = ::stlm::format::kAlignment;

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

/// Weight reads that must be copied: read, then the symbol is assigned, then
/// the read value (or a reshape of it) is still used. Reading the weight
/// slot in place would see the new value.
llvm::DenseSet<Value> snapshotsNeeded(Block &body) {
  llvm::DenseMap<Operation *, int64_t> position;
  int64_t n = 0;
  for (Operation &op : body)
    position[&op] = n++;
  llvm::StringMap<SmallVector<int64_t>> assigns;
  for (Operation &op : body)
    if (auto a = dyn_cast<AssignOp>(op))
      assigns[a.getName()].push_back(position[&op]);
  llvm::DenseSet<Value> snapshots;
  for (Operation &op : body) {
    StringRef name;
    if (auto r = dyn_cast<ParamRefOp>(op))
      name = r.getName();
    else if (auto r = dyn_cast<StateRefOp>(op))
      name = r.getName();
    else
      continue;
    auto it = assigns.find(name);
    if (it == assigns.end())
      continue;
    // Last use of the read, through reshapes (a return counts as the end).
    int64_t lastUse = -1;
    SmallVector<Value> work = {op.getResult(0)};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (Operation *user : v.getUsers()) {
        lastUse = std::max(lastUse, isa<func::ReturnOp>(user)
                                        ? n
                                        : position[user]);
        if (isa<SplitSlotsOp, MergeSlotsOp>(user))
          work.push_back(user->getResult(0));
      }
    }
    for (int64_t at : it->second)
      if (at > position[&op] && at < lastUse)
        snapshots.insert(op.getResult(0));
  }
  return snapshots;
}

/// The value whose storage `v` uses (itself, or the input of a reshape
/// chain); null when `v` lives in the weights (a read not overwritten
/// while in use) or with the caller.
Value storageOf(Value v, const llvm::DenseSet<Value> &snapshots) {
  while (true) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return Value(); // a function argument
    if (isa<ParamRefOp, StateRefOp>(def) && !snapshots.count(v))
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
  llvm::DenseSet<Value> snapshots = snapshotsNeeded(body);
  auto storageOf = [&](Value v) { return ::storageOf(v, snapshots); };
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
    if (Value s = llvm::isa<RankedTensorType>(v.getType()) ? storageOf(v)
                                                          : Value())
      if (auto it = index.find(s); it != index.end())
        intervals[it->second].end = position;

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
  // a reshape reports its input's offset). A weight read with bytes of its
  // own is a snapshot: the lowering copies the weight there.
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
    if (op.getNumResults() == 1 && snapshots.count(op.getResult(0)))
      op.setAttr("stlm.snapshot", b.getUnitAttr());
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
