//===- Fuse.cpp - matmul epilogues ----------------------------------------===//
//
// A linear whose only use is a GELU or a residual add becomes one
// stlm.linear_fused, so the matmul kernel applies the activation and the
// add to its register tiles instead of another pass over memory. Runs
// after stlm-autodiff: in @grad, a GELU's input is also read by its
// gradient, so only residual adds fuse there; inference functions fuse
// both. Matmuls of at most kMatVecMaxRows rows (codegen/artifact/
// KernelPlan.h), generation's matvecs, stay apart.
// In the backward pass, the sum of a gradient reaching a value along two
// paths becomes the addend of the linear_grad computing the second, and a
// GELU's gradient whose incoming gradient is a linear_grad's dx becomes
// that linear_grad's gelu_input epilogue.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "codegen/artifact/KernelPlan.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_FUSEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

/// The matmul a fusion can extend: a plain linear, or a fused one with no
/// residual yet; null otherwise or when `v` has another use.
Operation *fusable(Value v, bool forActivation) {
  Operation *def = v.getDefiningOp();
  if (!def || !v.hasOneUse())
    return nullptr;
  // The few rows of generation go to a matvec, which has no epilogue.
  if (rowsOf(v) <= ::stlm::codegen::kMatVecMaxRows)
    return nullptr;
  if (isa<LinearOp>(def))
    return def;
  auto f = dyn_cast<LinearFusedOp>(def);
  if (f && !f.getResidual() && !forActivation)
    return def;
  return nullptr;
}

struct FusePass : public mlir::stlm::impl::FusePassBase<FusePass> {
  void runOnOperation() override {
    OpBuilder b(&getContext());
    auto fused = [&](Operation *at, Operation *mm, Value residual,
                     StringRef activation) {
      b.setInsertionPoint(at);
      auto f = b.create<LinearFusedOp>(
          at->getLoc(), at->getResult(0).getType(), mm->getOperand(0),
          mm->getOperand(1), residual,
          activation == "none" ? StringAttr() : b.getStringAttr(activation));
      at->getResult(0).replaceAllUsesWith(f.getResult());
      at->erase();
      mm->erase();
    };
    // Activations first, then the adds that may follow them.
    SmallVector<GELUOp> gelus;
    getOperation().walk([&](GELUOp g) { gelus.push_back(g); });
    for (GELUOp g : gelus)
      if (Operation *mm = fusable(g.getX(), /*forActivation=*/true))
        fused(g, mm, Value(), "gelu");
    // dh = gelu_grad(h, dx of a linear_grad): the matmul multiplies its
    // tiles by GELU's derivative at h (h exists before: it is the GELU's
    // forward input).
    SmallVector<GELUGradOp> geluGrads;
    getOperation().walk([&](GELUGradOp g) { geluGrads.push_back(g); });
    for (GELUGradOp g : geluGrads) {
      auto lg = g.getDy().getDefiningOp<LinearGradOp>();
      if (!lg || g.getDy() != lg.getDx() || !g.getDy().hasOneUse() ||
          lg.getAddend() || lg.getGeluInput() || rowsOf(g.getDy()) < 8)
        continue;
      Operation *def = g.getX().getDefiningOp();
      if (def && (def->getBlock() != lg->getBlock() ||
                  !def->isBeforeInBlock(lg)))
        continue;
      lg.getGeluInputMutable().assign(g.getX());
      g.getDx().replaceAllUsesWith(lg.getDx());
      g.erase();
    }
    SmallVector<AddOp> adds;
    getOperation().walk([&](AddOp a) { adds.push_back(a); });
    for (AddOp a : adds) {
      if (a.getLhs().getType() != a.getRhs().getType())
        continue; // a broadcast add (positions), not a residual
      // A gradient reaching x along two paths: the other one becomes the
      // addend of the matmul that computes this one (it must exist before
      // that matmul).
      bool folded = false;
      for (auto [mine, other] : {std::pair(a.getRhs(), a.getLhs()),
                                 std::pair(a.getLhs(), a.getRhs())}) {
        auto lg = mine.getDefiningOp<LinearGradOp>();
        if (!lg || mine != lg.getDx() || !mine.hasOneUse() || lg.getAddend() ||
            lg.getGeluInput() || other == mine)
          continue;
        Operation *def = other.getDefiningOp();
        if (def && (def->getBlock() != lg->getBlock() ||
                    !def->isBeforeInBlock(lg)))
          continue;
        lg.getAddendMutable().assign(other);
        a.getResult().replaceAllUsesWith(lg.getDx());
        a.erase();
        folded = true;
        break;
      }
      if (folded)
        continue;
      for (auto [mine, other] : {std::pair(a.getRhs(), a.getLhs()),
                                 std::pair(a.getLhs(), a.getRhs())}) {
        Operation *mm = fusable(mine, /*forActivation=*/false);
        if (!mm || other == mine)
          continue;
        StringRef act = "none";
        if (auto f = dyn_cast<LinearFusedOp>(mm))
          act = f.getActivation();
        fused(a, mm, other, act);
        break;
      }
    }
  }
};

} // namespace
