//===- AddDecode.cpp - KV-cached generation functions from @logits --------===//
//
// @prefill and @decode_step are copies of @logits for one sequence: the
// copy is flattened (layers unrolled), every activation of shape [B, T, ...]
// is retyped to [1, N, ...] (N = T for the prefill, 1 for a step), RoPE and
// attention get the position of the first new token as their offset, and
// each attention reads per-layer caches of keys and values that the new
// tokens' rows are written into first.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/IR/Verifier.h"

namespace mlir::stlm {
#define GEN_PASS_DEF_ADDDECODEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

class DecodeBuilder {
public:
  DecodeBuilder(ModelOp model, func::FuncOp logits)
      : model(model), logits(logits), b(model.getContext()) {}

  /// Whether @logits maps token ids [B, T] to logits [B, T, V] (reads B
  /// and T); other models (byte-pool) have nothing to decode.
  bool tokenSignature();
  /// Checks that @logits can be decoded; fails with a diagnostic.
  LogicalResult analyse();
  /// Adds `name` for `n` new tokens; `withPos` adds the position argument
  /// (otherwise the tokens start at position 0).
  LogicalResult derive(StringRef name, int64_t n, bool withPos);

private:
  /// Declares `stlm.state @name : type` before the model's functions (or
  /// checks an existing declaration).
  LogicalResult declareCache(StringRef name, RankedTensorType type,
                             Operation *user);

  ModelOp model;
  func::FuncOp logits;
  OpBuilder b;
  int64_t batch = 0, context = 0;
};

bool DecodeBuilder::tokenSignature() {
  FunctionType ft = logits.getFunctionType();
  auto ids = ft.getNumInputs() == 1
                 ? llvm::dyn_cast<RankedTensorType>(ft.getInput(0))
                 : RankedTensorType();
  auto out = ft.getNumResults() == 1
                 ? llvm::dyn_cast<RankedTensorType>(ft.getResult(0))
                 : RankedTensorType();
  if (!ids || ids.getRank() != 2 || !ids.getElementType().isInteger(32) ||
      !out || out.getRank() != 3 ||
      out.getShape().take_front(2) != ids.getShape())
    return false;
  batch = ids.getDimSize(0);
  context = ids.getDimSize(1);
  return true;
}

LogicalResult DecodeBuilder::analyse() {
  WalkResult walk = logits.walk([&](Operation *op) {
    if (isa<func::CallOp>(op)) {
      op->emitOpError("in @logits cannot be decoded with a KV cache (inline "
                      "it first)");
      return WalkResult::interrupt();
    }
    auto a = dyn_cast<AttentionOp>(op);
    if (a && (a.getMask() != MaskKind::causal || a.getOffset())) {
      op->emitOpError("must be causal attention without an offset to be "
                      "decoded with a KV cache");
      return WalkResult::interrupt();
    }
    auto r = dyn_cast<RoPEOp>(op);
    if (r && r.getOffset()) {
      op->emitOpError("already has a position offset; @logits must start "
                      "at position 0 to be decoded");
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(walk.wasInterrupted());
}

LogicalResult DecodeBuilder::declareCache(StringRef name,
                                          RankedTensorType type,
                                          Operation *user) {
  if (Operation *existing = SymbolTable::lookupSymbolIn(model, name)) {
    auto state = dyn_cast<StateOp>(existing);
    if (state && state.getType() == type)
      return success();
    return user->emitOpError() << "needs '@" << name << "' for its KV cache ("
                               << type << "), but the model declares it "
                               << "otherwise";
  }
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(logits);
  for (Operation &op : model.getBody().front())
    if (isa<func::FuncOp>(op)) {
      b.setInsertionPoint(&op);
      break;
    }
  b.create<StateOp>(user->getLoc(), b.getStringAttr(name),
                    TypeAttr::get(type));
  return success();
}

LogicalResult DecodeBuilder::derive(StringRef name, int64_t n, bool withPos) {
  if (SymbolTable::lookupSymbolIn(model, name))
    return model.emitOpError() << "already has '@" << name
                               << "'; stlm-add-decode adds it";
  b.setInsertionPointAfter(logits);
  auto fn = cast<func::FuncOp>(b.clone(*logits));
  fn.setSymName(name);
  IRRewriter rewriter(b.getContext());
  SmallVector<RepeatOp> repeats;
  fn.walk([&](RepeatOp r) { repeats.push_back(r); });
  for (RepeatOp r : repeats)
    unrollRepeat(r, rewriter);

  // [B, T, ...] -> [1, n, ...] for the ids and every activation.
  auto retype = [&](Value v) {
    auto t = llvm::dyn_cast<RankedTensorType>(v.getType());
    if (!t || t.getRank() < 2 || t.getDimSize(0) != batch ||
        t.getDimSize(1) != context)
      return;
    SmallVector<int64_t> shape(t.getShape());
    shape[0] = 1;
    shape[1] = n;
    v.setType(t.clone(shape));
  };
  Block &body = fn.getBody().front();
  retype(body.getArgument(0));
  Value pos;
  Location loc = fn.getLoc();
  auto posType = RankedTensorType::get({}, b.getI32Type());
  if (withPos) {
    pos = body.addArgument(posType, loc);
  } else {
    b.setInsertionPointToStart(&body);
    pos = b.create<arith::ConstantOp>(loc,
                                      DenseElementsAttr::get(posType, 0));
  }
  for (Operation &op : body)
    if (!isa<ParamRefOp, StateRefOp, arith::ConstantOp>(op))
      for (Value r : op.getResults())
        retype(r);

  // Positions and caches.
  SmallVector<Operation *> ops;
  for (Operation &op : body)
    if (isa<RoPEOp, AttentionOp>(op))
      ops.push_back(&op);
  int64_t layer = 0;
  for (Operation *op : ops) {
    b.setInsertionPoint(op);
    if (auto r = dyn_cast<RoPEOp>(op)) {
      auto moved = b.create<RoPEOp>(r.getLoc(), r.getType(), r.getX(), pos,
                                    r.getHeadDimAttr(), r.getThetaAttr());
      r.replaceAllUsesWith(moved.getResult());
      r.erase();
      continue;
    }
    auto a = cast<AttentionOp>(op);
    Value kv[2] = {a.getK(), a.getV()};
    for (int i = 0; i < 2; ++i) {
      auto rows = llvm::cast<RankedTensorType>(kv[i].getType());
      SmallVector<int64_t> shape(rows.getShape());
      shape[shape.size() - 2] = context;
      auto type = rows.clone(shape);
      std::string sym =
          "kv." + std::to_string(layer) + (i == 0 ? ".k" : ".v");
      if (failed(declareCache(sym, type, op)))
        return failure();
      Value cache = b.create<StateRefOp>(a.getLoc(), type, sym);
      Value written =
          b.create<WriteRowsOp>(a.getLoc(), type, cache, kv[i], pos);
      b.create<AssignOp>(a.getLoc(), sym, written);
      kv[i] = written;
    }
    auto attn = b.create<AttentionOp>(a.getLoc(), a.getType(), a.getMask(),
                                      a.getQ(), kv[0], kv[1], pos,
                                      a.getHeads(), a.getKvHeads());
    a.replaceAllUsesWith(attn.getResult());
    a.erase();
    ++layer;
  }
  fn.setFunctionType(b.getFunctionType(
      body.getArgumentTypes(), body.getTerminator()->getOperandTypes()));
  if (failed(mlir::verify(fn)))
    return fn.emitOpError("could not be derived from @logits (an op does "
                          "not take one sequence of new tokens)");
  return success();
}

struct AddDecodePass
    : public mlir::stlm::impl::AddDecodePassBase<AddDecodePass> {
  void runOnOperation() override {
    SmallVector<ModelOp> models;
    getOperation().walk([&](ModelOp m) { models.push_back(m); });
    for (ModelOp model : models) {
      auto logits = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(model, "logits"));
      if (!logits || logits.isExternal())
        continue; // nothing to decode
      DecodeBuilder builder(model, logits);
      if (!builder.tokenSignature()) {
        // A byte-pool @logits (encoder, core, decoder) has nothing to
        // decode token by token; flattened, it compiles as it is.
        if (failed(inlineCalls(logits, model)))
          return signalPassFailure();
        unrollAll(logits);
        continue;
      }
      if (failed(builder.analyse()) ||
          failed(builder.derive("prefill", contextOf(logits), false)) ||
          failed(builder.derive("decode_step", 1, true)))
        return signalPassFailure();
      unrollAll(logits);
    }
  }
  void unrollAll(func::FuncOp fn) {
    SmallVector<RepeatOp> repeats;
    fn.walk([&](RepeatOp r) { repeats.push_back(r); });
    IRRewriter rewriter(&getContext());
    for (RepeatOp r : repeats)
      unrollRepeat(r, rewriter);
  }
  static int64_t contextOf(func::FuncOp logits) {
    return llvm::cast<RankedTensorType>(logits.getArgumentTypes()[0])
        .getDimSize(1);
  }
};

} // namespace
