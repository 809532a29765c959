//===- Quantize.cpp - int8 / int4 linear weights for inference ------------===//
//
// stlm-quantize: a model's inference functions on quantized linear
// weights. The training functions go (a quantized model cannot train);
// each parameter read only as a linear's weight becomes its integer bytes
// (i8) and a `.scale` parameter; each of those linears a stlm.qlinear,
// whose arithmetic support/Quantize.h defines. The parameters chosen are
// the ones a quantized checkpoint stores as integers
// (frontend/Quantized.h); a test keeps the two rules equal.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "support/Quantize.h"

#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <map>

namespace mlir::stlm {
#define GEN_PASS_DEF_QUANTIZEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::stlm

using namespace mlir;
using namespace mlir::stlm;

namespace {

/// The entry points only training runs.
constexpr llvm::StringLiteral kTrainingFunctions[] = {"grad", "train_step",
                                                      "accumulate", "apply"};

/// Whether every use of `v` is the weight operand of a stlm.linear.
bool onlyLinearWeight(Value v) {
  return llvm::all_of(v.getUses(), [](OpOperand &use) {
    return isa<LinearOp>(use.getOwner()) && use.getOperandNumber() == 1;
  });
}

/// The parameter names a reader op reads: one for a param_ref, one per
/// layer for a layer_param_ref.
SmallVector<std::string> namesRead(Operation *op) {
  if (auto ref = dyn_cast<ParamRefOp>(op))
    return {ref.getName().str()};
  auto ref = cast<LayerParamRefOp>(op);
  auto repeat = cast<RepeatOp>(
      llvm::cast<BlockArgument>(ref.getLayer()).getOwner()->getParentOp());
  SmallVector<std::string> names;
  for (int64_t l = repeat.getLower(); l < repeat.getUpper(); ++l)
    names.push_back(ref.getNameForLayer(l));
  return names;
}

struct QuantizePass : public mlir::stlm::impl::QuantizePassBase<QuantizePass> {
  using QuantizePassBase::QuantizePassBase;

  void runOnOperation() override {
    std::optional<::stlm::quant::Scheme> parsed =
        ::stlm::quant::parseScheme(scheme);
    if (!parsed) {
      getOperation().emitError()
          << "stlm-quantize: scheme must be int8 or int4, got '" << scheme
          << "'";
      return signalPassFailure();
    }
    ::stlm::quant::Format format{*parsed, group};
    for (ModelOp model :
         llvm::make_early_inc_range(getOperation().getOps<ModelOp>()))
      if (failed(quantize(model, format)))
        return signalPassFailure();
  }

  LogicalResult quantize(ModelOp model, const ::stlm::quant::Format &format) {
    if (model->hasAttr("stlm.quantization"))
      return model.emitError("stlm-quantize: model '@")
             << model.getSymName() << "' is quantized already";
    Block &body = model.getBody().front();
    // Training goes, then the state only training used.
    for (auto fn : llvm::make_early_inc_range(body.getOps<func::FuncOp>()))
      if (llvm::is_contained(kTrainingFunctions, fn.getSymName()))
        fn.erase();
    for (auto state : llvm::make_early_inc_range(body.getOps<StateOp>())) {
      StringRef n = state.getSymName();
      if ((n.starts_with("opt.") || n.starts_with("grad_acc.")) &&
          SymbolTable::symbolKnownUseEmpty(state, model))
        state.erase();
    }

    // Every reader of each parameter, and whether all of them feed only
    // linear weights.
    std::map<std::string, SmallVector<Operation *>> readers;
    std::map<std::string, bool> onlyLinear;
    model.walk([&](Operation *op) {
      // A read nothing uses decides nothing.
      if (!isa<ParamRefOp, LayerParamRefOp>(op) || op->use_empty())
        return;
      bool linear = onlyLinearWeight(op->getResult(0));
      for (const std::string &n : namesRead(op)) {
        readers[n].push_back(op);
        auto [it, fresh] = onlyLinear.try_emplace(n, linear);
        if (!fresh)
          it->second = it->second && linear;
      }
    });
    std::map<std::string, ParamOp> chosen;
    for (ParamOp p : body.getOps<ParamOp>()) {
      auto it = onlyLinear.find(p.getSymName().str());
      if (it == onlyLinear.end() || !it->second ||
          !p.getTensorType().getElementType().isF32() ||
          p.getTensorType().getRank() != 2)
        continue;
      int64_t in = p.getTensorType().getDimSize(1);
      std::string problem = ::stlm::quant::groupProblem(format, in);
      if (!problem.empty())
        return p.emitError("stlm-quantize: cannot quantize '")
               << p.getSymName() << "' (" << in << " inputs): " << problem;
      chosen[p.getSymName().str()] = p;
    }
    // A layer_param_ref reads one parameter per layer: all of them are
    // quantized, or none.
    for (auto &[name, ops] : readers)
      for (Operation *op : ops)
        if (auto ref = dyn_cast<LayerParamRefOp>(op)) {
          SmallVector<std::string> names = namesRead(op);
          size_t n = llvm::count_if(
              names, [&](const std::string &x) { return chosen.count(x); });
          if (n != 0 && n != names.size())
            return ref.emitError("stlm-quantize: the layers of '")
                   << ref.getPattern()
                   << "' are not all quantized (some are read elsewhere "
                      "other than as a linear's weight)";
        }

    MLIRContext *ctx = model.getContext();
    OpBuilder b(ctx);
    bool int4 = format.scheme == ::stlm::quant::Scheme::Int4;
    auto bytesType = [&](RankedTensorType t) {
      return RankedTensorType::get(
          {t.getDimSize(0), int4 ? t.getDimSize(1) / 2 : t.getDimSize(1)},
          IntegerType::get(
              ctx, 8, int4 ? IntegerType::Unsigned : IntegerType::Signless));
    };
    auto scaleType = [&](RankedTensorType t) {
      return RankedTensorType::get(
          {t.getDimSize(0), t.getDimSize(1) / format.group},
          Float32Type::get(ctx));
    };
    SymbolTable symbols(model);
    for (auto &[name, p] : chosen) {
      std::string scaleName = name + ".scale";
      if (symbols.lookup(scaleName))
        return p.emitError("stlm-quantize: '")
               << scaleName << "' is declared already";
      RankedTensorType t = p.getTensorType();
      b.setInsertionPointAfter(p);
      auto scale = b.create<ParamOp>(p.getLoc(), scaleName, scaleType(t),
                                     InitKind::zeros, FloatAttr());
      symbols.insert(scale);
      p.setType(bytesType(t));
      p.setInit(InitKind::zeros);
      p.removeStdAttr();
    }

    // Reads nothing uses go (they would read a weight whose type changed).
    model.walk([&](Operation *op) {
      if (isa<ParamRefOp, LayerParamRefOp>(op) && op->use_empty() &&
          llvm::any_of(namesRead(op),
                       [&](const std::string &n) { return chosen.count(n); }))
        op->erase();
    });
    // Each reader of a chosen parameter reads its bytes and its scales;
    // its linears become qlinears.
    llvm::SmallPtrSet<Operation *, 16> done;
    for (auto &[name, ops] : readers) {
      if (!chosen.count(name))
        continue;
      for (Operation *op : ops) {
        if (!done.insert(op).second)
          continue;
        auto t = llvm::cast<RankedTensorType>(op->getResult(0).getType());
        b.setInsertionPointAfter(op);
        Value scale;
        if (auto ref = dyn_cast<ParamRefOp>(op))
          scale = b.create<ParamRefOp>(
              op->getLoc(), scaleType(t),
              FlatSymbolRefAttr::get(ctx, ref.getName().str() + ".scale"));
        else {
          auto layer = cast<LayerParamRefOp>(op);
          scale = b.create<LayerParamRefOp>(
              op->getLoc(), scaleType(t),
              b.getStringAttr(layer.getPattern().str() + ".scale"),
              layer.getLayer());
        }
        op->getResult(0).setType(bytesType(t));
        for (OpOperand &use :
             llvm::make_early_inc_range(op->getResult(0).getUses())) {
          auto linear = cast<LinearOp>(use.getOwner());
          b.setInsertionPoint(linear);
          auto q = b.create<QLinearOp>(
              linear.getLoc(), linear.getResult().getType(), linear.getX(),
              linear.getWeight(), scale,
              b.getStringAttr(::stlm::quant::schemeName(format.scheme)),
              b.getI64IntegerAttr(format.group));
          linear.getResult().replaceAllUsesWith(q.getResult());
          linear.erase();
        }
      }
    }
    model->setAttr(
        "stlm.quantization",
        b.getDictionaryAttr(
            {b.getNamedAttr("scheme", b.getStringAttr(::stlm::quant::schemeName(
                                          format.scheme))),
             b.getNamedAttr("group", b.getI64IntegerAttr(format.group))}));
    return success();
  }
};

} // namespace
