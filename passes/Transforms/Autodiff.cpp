//===- Autodiff.cpp - derive @grad, @train_step and @eval from @loss ------===//
//
// Reverse mode on straight-line code: @loss is cloned into @grad with every
// call inlined and every stlm.repeat unrolled, then each op, last to first,
// turns the gradients of its results into gradients of its operands with
// its `*_grad` op. Gradients reaching the same value (a tied or shared
// parameter, a residual stream) are summed with stlm.add.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/TypeSwitch.h"

#include <map>

namespace mlir::stlm {
#define GEN_PASS_DEF_AUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

class Differentiator {
public:
  Differentiator(ModelOp model, OpBuilder &b) : model(model), b(b) {}

  /// Builds @grad from @loss. Fails with a diagnostic.
  FailureOr<func::FuncOp> buildGrad(func::FuncOp loss);
  /// Inlines every call of `fn` and unrolls its stlm.repeat ops.
  LogicalResult flatten(func::FuncOp fn);

private:
  LogicalResult backward(Operation *op);
  /// Adds `g` to the gradient of `v`.
  void accumulate(Value v, Value g);
  Value gradOf(Value v) const {
    auto it = grads.find(v);
    return it == grads.end() ? Value() : it->second;
  }
  static bool isFloatTensor(Value v) {
    auto t = llvm::dyn_cast<RankedTensorType>(v.getType());
    return t && t.getElementType().isF32();
  }

  ModelOp model;
  OpBuilder &b;
  llvm::DenseMap<Value, Value> grads;
  std::map<std::string, Value> paramGrads;
};

void Differentiator::accumulate(Value v, Value g) {
  auto it = grads.find(v);
  if (it == grads.end()) {
    grads[v] = g;
    return;
  }
  it->second = b.create<AddOp>(g.getLoc(), v.getType(), it->second, g);
}

LogicalResult Differentiator::flatten(func::FuncOp fn) {
  if (failed(inlineCalls(fn, model)))
    return failure();
  IRRewriter rewriter(b.getContext());
  SmallVector<RepeatOp> repeats;
  fn.walk([&](RepeatOp r) { repeats.push_back(r); });
  for (RepeatOp r : repeats)
    unrollRepeat(r, rewriter);
  return success();
}

LogicalResult Differentiator::backward(Operation *op) {
  // Gradients of the op's float results; skip ops nothing depends on.
  SmallVector<Value> dys;
  bool any = false;
  for (Value r : op->getResults()) {
    dys.push_back(gradOf(r));
    any |= static_cast<bool>(dys.back());
  }
  if (!any)
    return success();
  Location loc = op->getLoc();
  b.setInsertionPoint(op->getBlock()->getTerminator());
  Value dy = dys.empty() ? Value() : dys[0];

  return TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ParamRefOp o) {
        std::string name = o.getName().str();
        Value &slot = paramGrads[name];
        slot = slot ? b.create<AddOp>(loc, dy.getType(), slot, dy).getResult()
                    : dy;
        return success();
      })
      .Case([&](EmbedOp o) {
        accumulate(o.getTable(), b.create<EmbedGradOp>(loc, o.getTable().getType(),
                                                       o.getIds(), dy));
        return success();
      })
      .Case([&](PoolOp o) {
        accumulate(o.getX(), b.create<PoolGradOp>(loc, o.getX().getType(),
                                                  o.getKind(), o.getX(), dy,
                                                  o.getIds()));
        return success();
      })
      .Case([&](RMSNormOp o) {
        auto g = b.create<RMSNormGradOp>(loc, o.getX().getType(),
                                         o.getWeight().getType(), o.getX(),
                                         o.getWeight(), dy, o.getEpsAttr());
        accumulate(o.getX(), g.getDx());
        accumulate(o.getWeight(), g.getDweight());
        return success();
      })
      .Case<LinearOp, LogitsOp>([&](auto o) {
        Value w = o->getOperand(1);
        auto g = b.create<LinearGradOp>(loc, o.getX().getType(), w.getType(),
                                        o.getX(), w, dy, /*addend=*/Value(),
                                        /*gelu_input=*/Value());
        accumulate(o.getX(), g.getDx());
        accumulate(w, g.getDweight());
        return success();
      })
      .Case([&](LowRankOp o) {
        auto g = b.create<LowRankGradOp>(
            loc, o.getX().getType(), o.getA().getType(), o.getB().getType(),
            o.getX(), o.getA(), o.getB(), dy);
        accumulate(o.getX(), g.getDx());
        accumulate(o.getA(), g.getDa());
        accumulate(o.getB(), g.getDb());
        return success();
      })
      .Case([&](RoPEOp o) {
        accumulate(o.getX(),
                   b.create<RoPEGradOp>(loc, dy.getType(), dy, o.getOffset(),
                                        o.getHeadDimAttr(), o.getThetaAttr()));
        return success();
      })
      .Case([&](AttentionOp o) {
        auto g = b.create<AttentionGradOp>(
            loc, o.getQ().getType(), o.getK().getType(), o.getV().getType(),
            o.getMaskAttr(), o.getQ(), o.getK(), o.getV(), dy, o.getOffset(),
            o.getHeadsAttr(), o.getKvHeadsAttr(), o.getRopeThetaAttr());
        accumulate(o.getQ(), g.getDq());
        accumulate(o.getK(), g.getDk());
        accumulate(o.getV(), g.getDv());
        return success();
      })
      .Case([&](SwiGLUOp o) {
        auto g = b.create<SwiGLUGradOp>(loc, dy.getType(), dy.getType(),
                                        o.getGate(), o.getUp(), dy);
        accumulate(o.getGate(), g.getDgate());
        accumulate(o.getUp(), g.getDup());
        return success();
      })
      .Case([&](GELUOp o) {
        accumulate(o.getX(),
                   b.create<GELUGradOp>(loc, dy.getType(), o.getX(), dy));
        return success();
      })
      .Case([&](AddOp o) {
        accumulate(o.getLhs(), dy);
        Value r = o.getRhs();
        accumulate(r, r.getType() == dy.getType()
                          ? dy
                          : b.create<SumLeadingOp>(loc, r.getType(), dy)
                                .getResult());
        return success();
      })
      .Case([&](SplitSlotsOp o) {
        accumulate(o.getX(),
                   b.create<MergeSlotsOp>(loc, o.getX().getType(), dy));
        return success();
      })
      .Case([&](NextTokenLossOp o) {
        accumulate(o.getLogits(),
                   b.create<NextTokenLossGradOp>(loc, o.getLogits().getType(),
                                                 o.getLogits(), o.getTargets(),
                                                 dy));
        return success();
      })
      .Case<ChunkBytesLossOp, ReconstructionLossOp>([&](auto o) {
        using GradOp =
            std::conditional_t<std::is_same_v<decltype(o), ChunkBytesLossOp>,
                               ChunkBytesLossGradOp, ReconstructionLossGradOp>;
        accumulate(o.getLogits(),
                   b.create<GradOp>(loc, o.getLogits().getType(),
                                    o.getLogits(), o.getChunks(), o.getCount(),
                                    dy, o.getMaskPadAttr()));
        return success();
      })
      .Case([&](MaskedNextTokenLossOp o) {
        accumulate(o.getLogits(), b.create<MaskedNextTokenLossGradOp>(
                                      loc, o.getLogits().getType(),
                                      o.getLogits(), o.getTargets(),
                                      o.getMask(), dy));
        return success();
      })
      .Case([&](DistillLossOp o) {
        // The teacher's logits are data: no gradient.
        accumulate(o.getLogits(), b.create<DistillLossGradOp>(
                                      loc, o.getLogits().getType(),
                                      o.getLogits(), o.getTeacher(),
                                      o.getTargets(), dy,
                                      o.getTemperatureAttr(),
                                      o.getAlphaAttr()));
        return success();
      })
      .Case([&](WeightedSumOp o) {
        for (auto [term, w] : llvm::zip(o.getTerms(), o.getWeights())) {
          auto c = b.create<arith::ConstantOp>(
              loc, DenseElementsAttr::get(
                       llvm::cast<ShapedType>(dy.getType()),
                       static_cast<float>(
                           llvm::cast<FloatAttr>(w).getValueAsDouble())));
          accumulate(term, b.create<arith::MulFOp>(loc, dy, c));
        }
        return success();
      })
      .Default([&](Operation *other) -> LogicalResult {
        // Leaves: ops that read no differentiable value (constants, state)
        // just absorb their gradient.
        if (llvm::none_of(other->getOperands(), isFloatTensor) &&
            other->getNumRegions() == 0)
          return success();
        return other->emitOpError()
               << "has no gradient rule; @loss must be built from stlm ops";
      });
}

FailureOr<func::FuncOp> Differentiator::buildGrad(func::FuncOp loss) {
  FunctionType lossType = loss.getFunctionType();
  auto scalar = RankedTensorType::get({}, b.getF32Type());
  if (lossType.getNumResults() != 1 || lossType.getResult(0) != scalar)
    return loss.emitOpError(
        "must return exactly one 'tensor<f32>' (the loss) to be "
        "differentiated");

  // @grad starts as a copy of @loss, flattened to straight-line code.
  b.setInsertionPointAfter(loss);
  auto grad = cast<func::FuncOp>(b.clone(*loss));
  grad.setSymName("grad");
  if (failed(flatten(grad))) {
    grad.erase();
    return failure();
  }

  Block &body = grad.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value lossValue = ret.getOperand(0);

  // Seed: d loss / d loss = 1; then every op, last to first.
  b.setInsertionPoint(ret);
  grads[lossValue] = b.create<arith::ConstantOp>(
      loss.getLoc(), DenseElementsAttr::get(scalar, 1.0f));
  SmallVector<Operation *> forward;
  for (Operation &op : body.without_terminator())
    forward.push_back(&op);
  for (Operation *op : llvm::reverse(forward))
    if (failed(backward(op))) {
      grad.erase();
      return failure();
    }

  // Return the loss and every parameter's gradient in declaration order.
  b.setInsertionPoint(ret);
  SmallVector<Value> results = {lossValue};
  SmallVector<Attribute> names;
  for (ParamOp p : model.getParams()) {
    auto it = paramGrads.find(p.getSymName().str());
    Value g = it != paramGrads.end() ? it->second : Value();
    if (!g)
      g = b.create<arith::ConstantOp>(
          p.getLoc(), DenseElementsAttr::get(p.getTensorType(), 0.0f));
    results.push_back(g);
    names.push_back(FlatSymbolRefAttr::get(p.getSymNameAttr()));
  }
  b.create<func::ReturnOp>(ret.getLoc(), results);
  ret.erase();
  grad.setFunctionType(b.getFunctionType(lossType.getInputs(),
                                         ValueRange(results).getTypes()));
  grad->setAttr("stlm.grad_params", b.getArrayAttr(names));
  return grad;
}

/// Declares `stlm.state @name : type` unless the model already has it.
LogicalResult declareState(ModelOp model, OpBuilder &b, StringRef name,
                           Type type) {
  if (Operation *existing = SymbolTable::lookupSymbolIn(model, name)) {
    auto state = dyn_cast<StateOp>(existing);
    if (state && state.getType() == type)
      return success();
    return existing->emitOpError()
           << "'@" << name << "' is reserved for training state of type "
           << type;
  }
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToEnd(&model.getBody().front());
  // Keep declarations before the functions.
  for (Operation &op : model.getBody().front())
    if (isa<FunctionOpInterface>(op)) {
      b.setInsertionPoint(&op);
      break;
    }
  b.create<StateOp>(model.getLoc(), b.getStringAttr(name), TypeAttr::get(type));
  return success();
}

LogicalResult buildTraining(ModelOp model, bool splitStep) {
  auto loss = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
      model.getBody().front().getParentOp(),
      StringAttr::get(model.getContext(), "loss"));
  if (!loss)
    return model.emitOpError(
        "has no @loss function to differentiate (stlm-autodiff needs one)");
  if (loss.isExternal())
    return loss.emitOpError("is only declared; stlm-autodiff needs its body");
  for (StringRef taken : {"grad", "train_step", "eval", "accumulate", "apply"})
    if (SymbolTable::lookupSymbolIn(model, taken))
      return model.emitOpError()
             << "already has a '@" << taken
             << "' function; stlm-autodiff adds @grad, @train_step (or "
                "@accumulate and @apply) and @eval";
  FailureOr<TrainSettings> settings = TrainSettings::read(model);
  if (failed(settings))
    return failure();

  OpBuilder b(model.getContext());
  Differentiator diff(model, b);
  FailureOr<func::FuncOp> grad = diff.buildGrad(loss);
  if (failed(grad))
    return failure();

  // State: the step counter and the AdamW moments of every parameter.
  auto i32 = RankedTensorType::get({}, b.getIntegerType(32));
  auto f32 = RankedTensorType::get({}, b.getF32Type());
  SmallVector<ParamOp> params(model.getParams());
  if (failed(declareState(model, b, "step", i32)))
    return failure();
  for (ParamOp p : params)
    for (const char *prefix : {"opt.m.", "opt.v."})
      if (failed(declareState(model, b, (prefix + p.getSymName()).str(),
                              p.getType())))
        return failure();

  Location loc = loss.getLoc();
  TypeRange inputs = loss.getFunctionType().getInputs();

  // The update: clip, schedule, AdamW on every parameter, step + 1. Emits
  // into the current block and returns (grad_norm, lr).
  auto emitUpdate = [&](ValueRange gradients) -> std::pair<Value, Value> {
    Value step0 = b.create<StateRefOp>(loc, i32, "step");
    Value lr = b.create<LRScheduleOp>(
        loc, f32, ScheduleKindAttr::get(b.getContext(), settings->schedule),
        step0, b.getF64FloatAttr(settings->lr),
        b.getF64FloatAttr(settings->minLr),
        b.getI64IntegerAttr(settings->warmup),
        b.getI64IntegerAttr(settings->steps));
    SmallVector<Type> gradTypes(gradients.getTypes());
    auto clip = b.create<ClipGradNormOp>(loc, gradTypes, f32, gradients,
                                         b.getF64FloatAttr(settings->gradClip));
    Value one =
        b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(i32, 1));
    Value t = b.create<arith::AddIOp>(loc, step0, one);
    for (auto [p, g] : llvm::zip(params, clip.getClipped())) {
      std::string name = p.getSymName().str();
      Value pv = b.create<ParamRefOp>(loc, p.getType(), name);
      Value m = b.create<StateRefOp>(loc, p.getType(), "opt.m." + name);
      Value v = b.create<StateRefOp>(loc, p.getType(), "opt.v." + name);
      double wd =
          p.getTensorType().getRank() >= 2 ? settings->weightDecay : 0.0;
      auto upd = b.create<AdamWOp>(
          loc, p.getType(), p.getType(), p.getType(), pv, g, m, v, lr, t,
          b.getF64FloatAttr(settings->beta1),
          b.getF64FloatAttr(settings->beta2), b.getF64FloatAttr(settings->eps),
          b.getF64FloatAttr(wd));
      b.create<AssignOp>(loc, name, upd.getNewParam());
      b.create<AssignOp>(loc, "opt.m." + name, upd.getNewM());
      b.create<AssignOp>(loc, "opt.v." + name, upd.getNewV());
    }
    b.create<AssignOp>(loc, "step", t);
    return {clip.getNorm(), lr};
  };

  Operation *last = *grad;
  if (settings->accumulate == 1 && !splitStep) {
    // @train_step: one batch, one update.
    b.setInsertionPointAfter(*grad);
    auto step = b.create<func::FuncOp>(
        loc, "train_step", b.getFunctionType(inputs, {f32, f32, f32}));
    Block *entry = step.addEntryBlock();
    b.setInsertionPointToStart(entry);
    auto call = b.create<func::CallOp>(loc, *grad, entry->getArguments());
    auto [norm, lr] = emitUpdate(call.getResults().drop_front());
    b.create<func::ReturnOp>(loc, ValueRange{call.getResult(0), norm, lr});
    last = step;
  } else {
    // Gradient accumulation over k micro-batches (or, split for
    // data-parallel training, over the ranks' batches): @accumulate adds
    // one micro-batch's gradients into `grad_acc.*`; @apply averages them,
    // updates, and clears the sums. `loss_acc`, declared right after the
    // sums, is the runtime's: a step's loss sum, all-reduced with them.
    for (ParamOp p : params)
      if (failed(declareState(model, b, ("grad_acc." + p.getSymName()).str(),
                              p.getType())))
        return failure();
    if (failed(declareState(model, b, "loss_acc", f32)))
      return failure();
    b.setInsertionPointAfter(*grad);
    auto acc = b.create<func::FuncOp>(loc, "accumulate",
                                      b.getFunctionType(inputs, {f32}));
    Block *entry = acc.addEntryBlock();
    b.setInsertionPointToStart(entry);
    auto call = b.create<func::CallOp>(loc, *grad, entry->getArguments());
    for (auto [p, g] : llvm::zip(params, call.getResults().drop_front())) {
      std::string name = "grad_acc." + p.getSymName().str();
      Value sum = b.create<StateRefOp>(loc, p.getType(), name);
      b.create<AssignOp>(loc, name,
                         b.create<AddOp>(loc, p.getType(), sum, g).getResult());
    }
    b.create<func::ReturnOp>(loc, call.getResult(0));

    b.setInsertionPointAfter(acc);
    auto apply =
        b.create<func::FuncOp>(loc, "apply", b.getFunctionType({}, {f32, f32}));
    b.setInsertionPointToStart(apply.addEntryBlock());
    SmallVector<Value> means;
    for (ParamOp p : params) {
      std::string name = "grad_acc." + p.getSymName().str();
      Value sum = b.create<StateRefOp>(loc, p.getType(), name);
      Value inv = b.create<arith::ConstantOp>(
          loc, DenseElementsAttr::get(
                   p.getTensorType(),
                   static_cast<float>(1.0 / double(settings->accumulate))));
      means.push_back(b.create<arith::MulFOp>(loc, sum, inv));
    }
    auto [norm, lr] = emitUpdate(means);
    for (ParamOp p : params) {
      Value zero = b.create<arith::ConstantOp>(
          loc, DenseElementsAttr::get(p.getTensorType(), 0.0f));
      b.create<AssignOp>(loc, "grad_acc." + p.getSymName().str(), zero);
    }
    b.create<func::ReturnOp>(loc, ValueRange{norm, lr});
    last = apply;
  }

  // @eval
  b.setInsertionPointAfter(last);
  auto eval = b.create<func::FuncOp>(loc, "eval",
                                     b.getFunctionType(inputs, {f32}));
  Block *evalEntry = eval.addEntryBlock();
  b.setInsertionPointToStart(evalEntry);
  auto lossCall = b.create<func::CallOp>(loc, loss, evalEntry->getArguments());
  b.create<func::ReturnOp>(loc, lossCall.getResults());
  // Straight-line like @grad, so stlm-plan-memory can give it an arena and
  // the native path can compile it.
  if (failed(diff.flatten(eval)))
    return failure();
  // Then each objective's own loss after the weighted one.
  auto ret = cast<func::ReturnOp>(eval.getBody().front().getTerminator());
  Value total = ret.getOperand(0);
  SmallVector<Value> results = {total};
  if (auto sum = total.getDefiningOp<WeightedSumOp>())
    llvm::append_range(results, sum.getTerms());
  else
    results.push_back(total);
  b.setInsertionPoint(ret);
  b.create<func::ReturnOp>(ret.getLoc(), results);
  ret.erase();
  eval.setFunctionType(b.getFunctionType(
      inputs, SmallVector<Type>(results.size(), f32)));
  return success();
}

struct AutodiffPass : public mlir::stlm::impl::AutodiffPassBase<AutodiffPass> {
  using AutodiffPassBase::AutodiffPassBase;
  void runOnOperation() override {
    SmallVector<ModelOp> models;
    getOperation().walk([&](ModelOp m) { models.push_back(m); });
    bool failedAny = false;
    for (ModelOp m : models)
      failedAny |= failed(buildTraining(m, splitStep));
    if (failedAny)
      signalPassFailure();
  }
};

} // namespace
