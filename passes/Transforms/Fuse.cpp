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
#include "codegen/cuda/EmitCuda.h"

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

/// Whether every use of `v` reads it as operand `index` (0: q, 1: k) of an
/// attention or its gradient without an offset or rotation of its own,
/// reading `k` as keys; the gradients' result `index` (dq or dk) then only
/// feeds stlm.rope_grad ops like `rope`'s, gathered into `backs`.
bool onlyAttentionReads(Value v, unsigned index, Value k, RoPEOp rope,
                        SmallVectorImpl<RoPEGradOp> &backs) {
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if (use.getOperandNumber() != index)
      return false;
    if (auto a = dyn_cast<AttentionOp>(user)) {
      if (a.getOffset() || a.getRopeTheta() || a.getK() != k)
        return false;
      continue;
    }
    auto g = dyn_cast<AttentionGradOp>(user);
    if (!g || g.getOffset() || g.getRopeTheta() || g.getK() != k)
      return false;
    for (Operation *back : g->getResult(index).getUsers()) {
      auto r = dyn_cast<RoPEGradOp>(back);
      if (!r || r.getOffset() || r.getHeadDim() != rope.getHeadDim() ||
          r.getTheta() != rope.getTheta())
        return false;
      backs.push_back(r);
    }
  }
  return true;
}

/// Folds the RoPE of attention `a`'s q and k into it and its gradient
/// (FusePass's rope-into-attention), where the pattern holds and the
/// attention has at most `maxKeys` keys (any number where it is 0).
void foldRope(AttentionOp a, int64_t maxKeys) {
  auto rq = a.getQ().getDefiningOp<RoPEOp>(),
       rk = a.getK().getDefiningOp<RoPEOp>();
  if (!rq || !rk || rq == rk || rq.getOffset() || rk.getOffset() ||
      a.getOffset() || a.getRopeTheta() || rq.getTheta() != rk.getTheta() ||
      !hasBF16Matmuls(a))
    return;
  auto q = llvm::cast<RankedTensorType>(a.getQ().getType());
  int64_t hd = q.getShape().back() / a.getHeads();
  int64_t keys =
      llvm::cast<RankedTensorType>(a.getK().getType()).getShape().end()[-2];
  if (rq.getHeadDim() != hd || rk.getHeadDim() != hd ||
      !::stlm::codegen::bf16TensorCoreAttention(hd, q.getShape().end()[-2]) ||
      (maxKeys > 0 && keys > maxKeys))
    return;
  SmallVector<RoPEGradOp> backs;
  if (!onlyAttentionReads(rq.getResult(), 0, rk.getResult(), rq, backs) ||
      !onlyAttentionReads(rk.getResult(), 1, rk.getResult(), rk, backs))
    return;
  auto theta = FloatAttr::get(Float64Type::get(a.getContext()),
                              rq.getTheta().convertToDouble());
  for (Value rotated : {rq.getResult(), rk.getResult()})
    for (Operation *user : rotated.getUsers()) {
      if (auto f = dyn_cast<AttentionOp>(user))
        f.setRopeThetaAttr(theta);
      else
        cast<AttentionGradOp>(user).setRopeThetaAttr(theta);
    }
  // The fused gradients are the unrotated q's and k's already.
  for (RoPEGradOp r : backs) {
    r.getDx().replaceAllUsesWith(r.getDy());
    r.erase();
  }
  rq.getResult().replaceAllUsesWith(rq.getX());
  rk.getResult().replaceAllUsesWith(rk.getX());
  rq.erase();
  rk.erase();
}

struct FusePass : public mlir::stlm::impl::FusePassBase<FusePass> {
  using FusePassBase::FusePassBase;
  void runOnOperation() override {
    if (ropeIntoAttention) {
      SmallVector<AttentionOp> attentions;
      getOperation().walk([&](AttentionOp a) { attentions.push_back(a); });
      for (AttentionOp a : attentions)
        foldRope(a, ropeFoldMaxKeys);
    }
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
