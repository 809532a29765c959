//===- Decompose.cpp - composite ops as the ops the kernels compute -------===//
//
// A LoRA delta is two matmuls through a rank-R bottleneck; its gradient
// recomputes the bottleneck and is two matmul gradients. Rewriting them
// before memory planning gives the bottleneck an arena slot like any
// other value, and the native path needs no kernel of its own for them.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

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

struct DecomposePass
    : public mlir::stlm::impl::DecomposePassBase<DecomposePass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<LowRankOp, LowRankGradOp>(op))
        ops.push_back(op);
    });
    OpBuilder b(&getContext());
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
