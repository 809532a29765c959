//===- Decompose.cpp - composite ops as the ops the kernels compute -------===//
//
// A LoRA delta is two matmuls through a rank-R bottleneck; its gradient
// recomputes the bottleneck and is two matmul gradients. Rewriting them
// before memory planning gives the bottleneck an arena slot like any
// other value, and the native path needs no kernel of its own for them.
// Over many rows the delta is merged into the weight it corrects instead:
// one matmul on w + b·a, whose gradient gives da and db from the weight's
// gradient with a few matmuls of weight size.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "llvm/ADT/StringSwitch.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_DECOMPOSEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

/// x · wᵀ for x [..., In] and w [Out, In].
Value linear(OpBuilder &b, Location loc, Value x, Value w) {
  auto xt = llvm::cast<RankedTensorType>(x.getType());
  SmallVector<int64_t> shape(xt.getShape());
  shape.back() = llvm::cast<RankedTensorType>(w.getType()).getDimSize(0);
  return b.create<LinearOp>(loc, xt.clone(shape), x, w);
}

enum class Merge { Auto, Always, Never };

/// Whether merging a delta of a linear [In -> Out] over `rows` rows pays:
/// its two matmuls cost rows·R·(In + Out) multiply-adds, the merge
/// Out·In·R once (and in a backward five matmuls of rows·R·(3·In + 2·Out)
/// give way to two of Out·In·R), the ones it replaces running far below
/// the machine's peak (R columns or terms).
bool mergePays(int64_t rows, int64_t in, int64_t out) {
  return rows * (in + out) >= in * out;
}

/// The delta `d` and the linear it corrects, `sum = linear(x, w) + d`,
/// with the two gradients a backward has of them, if any.
struct MergeSite {
  LowRankOp d;
  LinearOp lin;
  AddOp sum;
  LowRankGradOp grad;   // the delta's gradient, or null
  LinearGradOp linGrad; // the linear's gradient (with the same dy), or null
  AddOp dxSum;          // the sum that adds grad's dx (its only use)
};

/// The sums `v` flows through, in order, while each value along the way
/// is read by one stlm.add alone (a gradient accumulated along several
/// paths).
SmallVector<AddOp> sumChain(Value v) {
  SmallVector<AddOp> chain;
  while (v.hasOneUse()) {
    auto add = dyn_cast<AddOp>(*v.user_begin());
    if (!add || add.getLhs() == add.getRhs() ||
        add.getLhs().getType() != add.getRhs().getType())
      break;
    chain.push_back(add);
    v = add.getResult();
  }
  return chain;
}

/// The site of `d` if it can be merged: `d` only feeds a sum with a linear
/// of the same input that feeds nothing else, and either neither has a
/// gradient or both have, with the same dy, after the sum in its block,
/// and their two dx flow through single-use sums into the same one. The
/// linear's dx on the merged weight then carries the delta's too, and
/// every sum read elsewhere keeps its value once the delta's dx is gone.
std::optional<MergeSite> mergeSite(LowRankOp d) {
  MergeSite s;
  s.d = d;
  if (!d->hasOneUse())
    return std::nullopt;
  s.sum = dyn_cast<AddOp>(*d->user_begin());
  if (!s.sum || s.sum.getLhs().getType() != s.sum.getRhs().getType())
    return std::nullopt;
  Value other =
      s.sum.getLhs() == d.getResult() ? s.sum.getRhs() : s.sum.getLhs();
  s.lin = other.getDefiningOp<LinearOp>();
  if (!s.lin || !s.lin->hasOneUse() || s.lin.getX() != d.getX() ||
      s.lin->getBlock() != d->getBlock())
    return std::nullopt;
  Value x = d.getX();
  for (Operation *user : x.getUsers())
    if (auto g = dyn_cast<LowRankGradOp>(user);
        g && g.getX() == x && g.getA() == d.getA() && g.getB() == d.getB()) {
      if (s.grad)
        return std::nullopt; // two gradients of one delta: leave them
      s.grad = g;
    }
  for (Operation *user : x.getUsers())
    if (auto g = dyn_cast<LinearGradOp>(user);
        g && g.getX() == x && g.getWeight() == s.lin.getWeight() &&
        (!s.grad || g.getDy() == s.grad.getDy())) {
      if (s.linGrad || g.getAddend() || g.getGeluInput())
        return std::nullopt;
      s.linGrad = g;
    }
  if (static_cast<bool>(s.grad) != static_cast<bool>(s.linGrad))
    return std::nullopt;
  if (!s.grad)
    return s;
  for (Operation *g : {s.grad.getOperation(), s.linGrad.getOperation()})
    if (g->getBlock() != s.sum->getBlock() || !s.sum->isBeforeInBlock(g))
      return std::nullopt;
  SmallVector<AddOp> mine = sumChain(s.grad.getDx()),
                     linears = sumChain(s.linGrad.getDx());
  if (mine.empty() || llvm::none_of(mine, [&](AddOp add) {
        return llvm::is_contained(linears, add);
      }))
    return std::nullopt;
  s.dxSum = mine.front();
  return s;
}

/// Right after the last of `values` defined in `block` (at its start when
/// none is): the earliest point in `block` where they are all defined.
void setAfterDefinitions(OpBuilder &b, Block *block, ArrayRef<Value> values) {
  Operation *last = nullptr;
  for (Value v : values)
    if (Operation *def = v.getDefiningOp();
        def && def->getBlock() == block &&
        (!last || last->isBeforeInBlock(def)))
      last = def;
  if (last)
    b.setInsertionPointAfter(last);
  else
    b.setInsertionPointToStart(block);
}

/// Rewrites a site: y = x · (w + b·a)ᵀ; in the backward, the linear's
/// gradient on the merged weight (dx whole), da and db from its dweight,
/// and the sum that added the delta's dx passes its other operand on.
void merge(OpBuilder &b, MergeSite &s) {
  Location loc = s.d.getLoc();
  Value x = s.d.getX(), a = s.d.getA(), bm = s.d.getB(), w = s.lin.getWeight();
  // The merge as early as its operands allow, so that linears of one
  // input stay next to each other (the CUDA target runs such neighbours
  // side by side).
  setAfterDefinitions(b, s.sum->getBlock(), {w, a, bm});
  Value merged = b.create<LowRankMergeOp>(loc, w.getType(), w, a, bm);
  b.setInsertionPoint(s.sum);
  Value y = b.create<LinearOp>(loc, s.sum.getType(), x, merged);
  s.sum.replaceAllUsesWith(y);
  s.sum.erase();
  s.d.erase();
  s.lin.erase();
  if (!s.grad)
    return;
  // At the earlier of the two gradients (dy, x and the merged weight are
  // all defined before it).
  Operation *first =
      s.grad->isBeforeInBlock(s.linGrad) ? s.grad.getOperation() : s.linGrad;
  b.setInsertionPoint(first);
  Location back = s.grad.getLoc();
  auto lg = b.create<LinearGradOp>(back, x.getType(), merged.getType(), x,
                                   merged, s.grad.getDy(), /*addend=*/Value(),
                                   /*gelu_input=*/Value());
  auto mg = b.create<LowRankMergeGradOp>(back, a.getType(), bm.getType(),
                                         lg.getDweight(), a, bm);
  s.linGrad.getDx().replaceAllUsesWith(lg.getDx());
  s.linGrad.getDweight().replaceAllUsesWith(lg.getDweight());
  s.linGrad.erase();
  Value dx = s.grad.getDx();
  s.dxSum.replaceAllUsesWith(s.dxSum.getLhs() == dx ? s.dxSum.getRhs()
                                                    : s.dxSum.getLhs());
  s.dxSum.erase();
  s.grad.getDa().replaceAllUsesWith(mg.getDa());
  s.grad.getDb().replaceAllUsesWith(mg.getDb());
  s.grad.erase();
}

struct DecomposePass
    : public mlir::stlm::impl::DecomposePassBase<DecomposePass> {
  using DecomposePassBase::DecomposePassBase;

  void runOnOperation() override {
    std::optional<Merge> mode = llvm::StringSwitch<std::optional<Merge>>(merge)
                                    .Case("auto", Merge::Auto)
                                    .Case("always", Merge::Always)
                                    .Case("never", Merge::Never)
                                    .Default(std::nullopt);
    if (!mode) {
      getOperation().emitError()
          << "stlm-decompose: merge must be auto, always or never, got '"
          << merge << "'";
      return signalPassFailure();
    }
    OpBuilder b(&getContext());
    if (*mode != Merge::Never) {
      SmallVector<LowRankOp> deltas;
      getOperation().walk([&](LowRankOp d) { deltas.push_back(d); });
      for (LowRankOp d : deltas) {
        int64_t
            in = llvm::cast<RankedTensorType>(d.getA().getType()).getDimSize(1),
            out =
                llvm::cast<RankedTensorType>(d.getB().getType()).getDimSize(0);
        // bf16 matmul inputs would round w + b·a as one value, losing a
        // delta under half a bfloat16 ulp of w (LoRA's b starts at 0):
        // only `always` merges them.
        if (*mode == Merge::Auto &&
            (hasBF16Matmuls(d) || !mergePays(rowsOf(d.getX()), in, out)))
          continue;
        if (std::optional<MergeSite> site = mergeSite(d))
          ::merge(b, *site);
      }
    }
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<LowRankOp, LowRankGradOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      b.setInsertionPoint(op);
      Location loc = op->getLoc();
      if (auto o = dyn_cast<LowRankOp>(op)) {
        Value h = linear(b, loc, o.getX(), o.getA());
        o.replaceAllUsesWith(linear(b, loc, h, o.getB()));
        o.erase();
        continue;
      }
      auto o = cast<LowRankGradOp>(op);
      // h = x · aᵀ again; y = h · bᵀ gives dh and db; h = x · aᵀ gives dx
      // and da.
      Value h = linear(b, loc, o.getX(), o.getA());
      auto outer = b.create<LinearGradOp>(loc, h.getType(),
                                          o.getB().getType(), h, o.getB(),
                                          o.getDy(), /*addend=*/Value(),
                                          /*gelu_input=*/Value());
      auto inner = b.create<LinearGradOp>(loc, o.getX().getType(),
                                          o.getA().getType(), o.getX(),
                                          o.getA(), outer.getDx(),
                                          /*addend=*/Value(),
                                          /*gelu_input=*/Value());
      o.getDx().replaceAllUsesWith(inner.getDx());
      o.getDa().replaceAllUsesWith(inner.getDweight());
      o.getDb().replaceAllUsesWith(outer.getDweight());
      o.erase();
    }
  }
};

} // namespace
