//===- UnrollLayers.cpp - expand stlm.repeat into per-layer copies --------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_UNROLLLAYERSPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

Value mlir::stlm::unrollRepeat(RepeatOp repeat, RewriterBase &rewriter) {
  Block &body = repeat.getBody().front();
  Location loc = repeat.getLoc();
  rewriter.setInsertionPoint(repeat);
  Value hidden = repeat.getInit();
  for (int64_t l = repeat.getLower(); l < repeat.getUpper(); ++l) {
    IRMapping map;
    map.map(repeat.getHidden(), hidden);
    // The index as a value, for uses other than the per-layer references
    // (which become plain param_refs).
    Value index = repeat.getLayerIndex();
    bool indexUsed = llvm::any_of(index.getUsers(), [](Operation *user) {
      return !isa<LayerParamRefOp>(user);
    });
    if (indexUsed)
      map.map(index,
              rewriter.create<arith::ConstantIndexOp>(loc, l).getResult());
    for (Operation &op : body) {
      if (auto yield = dyn_cast<YieldOp>(op)) {
        hidden = map.lookup(yield.getValue());
        continue;
      }
      // Per-layer references of this run (an enclosing run's references
      // are left for the enclosing run).
      auto ref = dyn_cast<LayerParamRefOp>(op);
      if (ref && ref.getLayer() == index) {
        Value p = rewriter.create<ParamRefOp>(ref.getLoc(), ref.getType(),
                                              ref.getNameForLayer(l));
        map.map(ref.getResult(), p);
        continue;
      }
      rewriter.clone(op, map);
    }
  }
  rewriter.replaceOp(repeat, hidden);
  return hidden;
}

namespace {
struct UnrollLayersPass
    : public mlir::stlm::impl::UnrollLayersPassBase<UnrollLayersPass> {
  void runOnOperation() override {
    SmallVector<RepeatOp> repeats;
    getOperation().walk([&](RepeatOp op) { repeats.push_back(op); });
    IRRewriter rewriter(&getContext());
    // Post-order walk: inner runs are expanded before the runs holding them.
    for (RepeatOp op : repeats)
      unrollRepeat(op, rewriter);
  }
};
} // namespace
