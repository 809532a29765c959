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

LogicalResult mlir::stlm::inlineCalls(func::FuncOp fn, ModelOp model) {
  OpBuilder b(fn.getContext());
  // Inline until no call is left; a call chain deeper than the number of
  // functions in the model is a recursion.
  int64_t limit = 1;
  for (Operation &op : model.getBody().front())
    limit += isa<func::FuncOp>(op);
  for (int64_t depth = 0;; ++depth) {
    SmallVector<func::CallOp> calls;
    fn.walk([&](func::CallOp c) { calls.push_back(c); });
    if (calls.empty())
      return success();
    if (depth > limit)
      return fn.emitOpError("calls recurse; only straight-line code is "
                            "compiled");
    for (func::CallOp call : calls) {
      auto callee = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
          call, call.getCalleeAttr());
      if (!callee || callee.isExternal() || callee->getParentOp() != model)
        return call.emitOpError()
               << "calls '@" << call.getCallee()
               << "', which is not a function with a body in the model";
      IRMapping map;
      Block &entry = callee.getBody().front();
      for (auto [arg, operand] :
           llvm::zip(entry.getArguments(), call.getOperands()))
        map.map(arg, operand);
      b.setInsertionPoint(call);
      for (Operation &op : entry) {
        if (auto ret = dyn_cast<func::ReturnOp>(op)) {
          for (auto [res, v] : llvm::zip(call.getResults(), ret.getOperands()))
            res.replaceAllUsesWith(map.lookup(v));
          continue;
        }
        b.clone(op, map);
      }
      call.erase();
    }
  }
}

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
