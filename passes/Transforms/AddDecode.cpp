//===- AddDecode.cpp - KV-cached generation functions from @logits --------===//
//
// @prefill and @decode_step are copies of @logits for one sequence: the
// copy is flattened (layers unrolled), every activation of shape [B, T, ...]
// is retyped to [1, N, ...] (N = T for the prefill, 1 for a step), RoPE and
// causal attention get the position of the first new token as their
// offset, and each causal attention reads per-layer caches of keys and
// values that the new tokens' rows are written into first.
//
// With the pass's `batch` option, the same two copies are also made for
// that many sequences in lockstep ([S, N, ...], caches @kv.batch.*), named
// @prefill_batch and @decode_batch.
//
// A byte-pool model decodes a chunk at a time: its copies take chunks
// ([1, N, L], what stlm.chunk made of the bytes: the host cuts a prompt and
// generated chunks are already cut) through the encoder, the core (cached
// over chunk positions) and the decoder to the next chunk's logits
// [1, N, L, V]; attention inside a chunk needs no cache.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "stlm/artifact_format.h"

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

  /// Whether the function maps a sequence, token ids [B, T] or chunks
  /// [B, T, L], to logits [B, T, ...] (reads B and T).
  bool sequenceSignature();
  /// Checks that @logits can be decoded; fails with a diagnostic.
  LogicalResult analyse();
  /// Adds `name` for `seqs` sequences of `n` new tokens each, whose caches
  /// are `@<caches>.<l>.k` and `.v`; `withPos` adds the position argument
  /// (otherwise the tokens start at position 0).
  LogicalResult derive(StringRef name, int64_t seqs, int64_t n, bool withPos,
                       StringRef caches);

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

bool DecodeBuilder::sequenceSignature() {
  FunctionType ft = logits.getFunctionType();
  auto ids = ft.getNumInputs() == 1
                 ? llvm::dyn_cast<RankedTensorType>(ft.getInput(0))
                 : RankedTensorType();
  auto out = ft.getNumResults() == 1
                 ? llvm::dyn_cast<RankedTensorType>(ft.getResult(0))
                 : RankedTensorType();
  if (!ids || (ids.getRank() != 2 && ids.getRank() != 3) ||
      !ids.getElementType().isInteger(32) || !out ||
      out.getRank() != ids.getRank() + 1 ||
      out.getShape().take_front(2) != ids.getShape().take_front(2))
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
    // Attention inside a chunk ([B, T, L, d]) sees one chunk: no cache.
    if (a && a.getMask() == MaskKind::none && !a.getOffset() &&
        llvm::cast<RankedTensorType>(a.getQ().getType()).getRank() >= 4)
      return WalkResult::advance();
    if (a && a.getRopeTheta()) {
      op->emitOpError("rotates q and k inside the attention (rope_theta); "
                      "run stlm-add-decode before stlm-fuse folds RoPE in");
      return WalkResult::interrupt();
    }
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

LogicalResult DecodeBuilder::derive(StringRef name, int64_t seqs, int64_t n,
                                    bool withPos, StringRef caches) {
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

  // [B, T, ...] -> [seqs, n, ...] for the ids and every activation.
  auto retype = [&](Value v) {
    auto t = llvm::dyn_cast<RankedTensorType>(v.getType());
    if (!t || t.getRank() < 2 || t.getDimSize(0) != batch ||
        t.getDimSize(1) != context)
      return;
    SmallVector<int64_t> shape(t.getShape());
    shape[0] = seqs;
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
  for (Operation &op : body) {
    auto a = dyn_cast<AttentionOp>(op);
    if (isa<RoPEOp>(op) || (a && a.getMask() == MaskKind::causal))
      ops.push_back(&op);
  }
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
          (caches + "." + Twine(layer) + (i == 0 ? ".k" : ".v")).str();
      if (failed(declareCache(sym, type, op)))
        return failure();
      Value cache = b.create<StateRefOp>(a.getLoc(), type, sym);
      Value written =
          b.create<WriteRowsOp>(a.getLoc(), type, cache, kv[i], pos);
      b.create<AssignOp>(a.getLoc(), sym, written);
      kv[i] = written;
    }
    auto attn =
        b.create<AttentionOp>(a.getLoc(), a.getType(), a.getMask(), a.getQ(),
                              kv[0], kv[1], pos, a.getHeads(), a.getKvHeads(),
                              /*rope_theta=*/FloatAttr());
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

/// A byte-pool @logits (bytes [B, N] → stlm.chunk → encoder, core,
/// decoder → [B, T, L, V]) as a function of its chunks: a flattened copy
/// named `name` whose one argument is the chunks [B, T, L]. Null after a
/// diagnostic when @logits is not one.
func::FuncOp chunkLogits(ModelOp model, func::FuncOp logits, StringRef name) {
  OpBuilder b(logits);
  b.setInsertionPointAfter(logits);
  auto fn = cast<func::FuncOp>(b.clone(*logits));
  fn.setSymName(name);
  if (failed(inlineCalls(fn, model))) {
    fn.erase();
    return nullptr;
  }
  SmallVector<ChunkOp> chunkOps;
  fn.walk([&](ChunkOp c) { chunkOps.push_back(c); });
  Block &body = fn.getBody().front();
  if (chunkOps.size() != 1 || !chunkOps[0].getCount().use_empty() ||
      body.getNumArguments() != 1 ||
      chunkOps[0].getBytes() != body.getArgument(0) ||
      !body.getArgument(0).hasOneUse()) {
    logits.emitOpError("of a byte-pool model must chunk its one bytes "
                       "argument once, and use nothing else of it, to be "
                       "decoded a chunk at a time");
    fn.erase();
    return nullptr;
  }
  ChunkOp chunk = chunkOps[0];
  Value chunks = body.addArgument(chunk.getChunks().getType(), chunk.getLoc());
  chunk.getChunks().replaceAllUsesWith(chunks);
  chunk.erase();
  body.eraseArgument(0);
  fn.setFunctionType(b.getFunctionType(
      body.getArgumentTypes(), body.getTerminator()->getOperandTypes()));
  return fn;
}

/// The most sequences batched generation decodes at once.
constexpr int64_t kMaxBatch = ::stlm::format::kMaxDecodeBatch;

struct AddDecodePass
    : public mlir::stlm::impl::AddDecodePassBase<AddDecodePass> {
  using AddDecodePassBase::AddDecodePassBase;

  void runOnOperation() override {
    int64_t seqs = batch;
    if (seqs < 0 || seqs == 1 || seqs > kMaxBatch) {
      getOperation().emitError()
          << "stlm-add-decode: batch must be 0 (none) or 2 to " << kMaxBatch
          << " sequences, got " << seqs;
      return signalPassFailure();
    }
    SmallVector<ModelOp> models;
    getOperation().walk([&](ModelOp m) { models.push_back(m); });
    for (ModelOp model : models) {
      auto logits = dyn_cast_or_null<func::FuncOp>(
          SymbolTable::lookupSymbolIn(model, "logits"));
      if (!logits || logits.isExternal())
        continue; // nothing to decode
      DecodeBuilder builder(model, logits);
      if (builder.sequenceSignature()) {
        if (failed(deriveBoth(builder, logits, seqs)))
          return signalPassFailure();
      } else {
        // Other shapes have nothing to decode token by token; flattened,
        // they compile as they are. A byte-pool @logits first gives
        // generation through its chunks.
        bool chunks = false;
        logits.walk([&](ChunkOp) { chunks = true; });
        if (chunks && seqs != 0) {
          model.emitOpError("is a byte-pool model: it has no batched "
                            "generation (stlm-add-decode batch=")
              << seqs << ") yet; decode its sequences one at a time";
          return signalPassFailure();
        }
        if ((chunks && failed(deriveFromChunks(model, logits))) ||
            failed(inlineCalls(logits, model)))
          return signalPassFailure();
      }
      unrollAll(logits);
    }
  }
  /// @prefill and @decode_step from `from`, which `b` decodes, and with
  /// `seqs` > 0 @prefill_batch and @decode_batch for that many sequences.
  static LogicalResult deriveBoth(DecodeBuilder &b, func::FuncOp from,
                                  int64_t seqs = 0) {
    int64_t t = contextOf(from);
    if (failed(b.analyse()) || failed(b.derive("prefill", 1, t, false, "kv")) ||
        failed(b.derive("decode_step", 1, 1, true, "kv")))
      return failure();
    return success(
        seqs == 0 ||
        (succeeded(b.derive("prefill_batch", seqs, t, false, "kv.batch")) &&
         succeeded(b.derive("decode_batch", seqs, 1, true, "kv.batch"))));
  }
  /// A byte-pool model's @prefill and @decode_step over chunks, derived
  /// from a copy of @logits that takes the chunks.
  static LogicalResult deriveFromChunks(ModelOp model, func::FuncOp logits) {
    func::FuncOp chunked = chunkLogits(model, logits, "logits.chunks");
    if (!chunked)
      return failure();
    DecodeBuilder builder(model, chunked);
    LogicalResult result = failure();
    if (builder.sequenceSignature())
      result = deriveBoth(builder, chunked);
    else
      chunked.emitOpError("does not map chunks [B, T, L] to logits "
                          "[B, T, L, V]");
    chunked.erase();
    return result;
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
