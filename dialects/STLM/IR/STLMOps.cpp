//===- STLMOps.cpp - stlm operations: verifiers, folds --------------------===//
//
// Every shape, dtype and attribute invariant of the dialect is checked here
// (or by ODS type constraints); passes may assume verified IR.
//
//===----------------------------------------------------------------------===//

#include "dialects/STLM/IR/STLMOps.h"
#include "support/TrainDefaults.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/FunctionInterfaces.h"

#include <cmath>

using namespace mlir;
using namespace mlir::stlm;

#define GET_OP_CLASSES
#include "dialects/STLM/IR/STLMOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static RankedTensorType tensorTy(Value v) {
  return llvm::cast<RankedTensorType>(v.getType());
}

/// Prints a shape as `[a, b, c]` for diagnostics.
static std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s = "[";
  llvm::raw_string_ostream os(s);
  llvm::interleaveComma(shape, os);
  os << "]";
  return os.str();
}

/// Checks `x: [..., In]` against `w: [Out, In]` → result `[..., Out]`; shared
/// by `stlm.linear` and `stlm.logits`. `wName` names the weight operand.
static LogicalResult verifyRowMajorProduct(Operation *op, Value x, Value w,
                                           Value result, StringRef wName) {
  ArrayRef<int64_t> xs = tensorTy(x).getShape();
  ArrayRef<int64_t> ws = tensorTy(w).getShape();
  ArrayRef<int64_t> rs = tensorTy(result).getShape();
  if (xs.empty())
    return op->emitOpError("input must have rank >= 1");
  if (ws.size() != 2)
    return op->emitOpError() << wName << " must have rank 2 ([out, in]), got "
                             << shapeStr(ws);
  if (ws[1] != xs.back())
    return op->emitOpError()
           << wName << " input width " << ws[1]
           << " does not match the input's last dimension " << xs.back();
  SmallVector<int64_t> expected(xs.drop_back());
  expected.push_back(ws[0]);
  if (rs != ArrayRef<int64_t>(expected))
    return op->emitOpError() << "result shape " << shapeStr(rs)
                             << " must be " << shapeStr(expected);
  return success();
}

/// Checks a per-position cross-entropy pair: `logits: [P..., V]` and
/// `targets: [P...]`.
static LogicalResult verifyLogitsTargets(Operation *op, Value logits,
                                         Value targets, StringRef tName,
                                         int64_t rank) {
  ArrayRef<int64_t> ls = tensorTy(logits).getShape();
  ArrayRef<int64_t> ts = tensorTy(targets).getShape();
  if (static_cast<int64_t>(ls.size()) != rank)
    return op->emitOpError() << "logits must have rank " << rank << ", got "
                             << shapeStr(ls);
  if (ts != ls.drop_back())
    return op->emitOpError() << tName << " shape " << shapeStr(ts)
                             << " must be the logits shape without the "
                                "vocabulary dimension, "
                             << shapeStr(ls.drop_back());
  return success();
}

/// Chunk objectives: `logits: [B, C, L, 258]`, `chunks: [B, C, L]`,
/// optional `count: [B]`.
static LogicalResult verifyChunkLogits(Operation *op, Value logits,
                                       Value chunks, Value count) {
  if (failed(verifyLogitsTargets(op, logits, chunks, "chunks", 4)))
    return failure();
  int64_t batch = tensorTy(chunks).getShape()[0];
  if (count && tensorTy(count).getShape() != ArrayRef<int64_t>{batch})
    return op->emitOpError() << "count must be [" << batch << "], got "
                             << shapeStr(tensorTy(count).getShape());
  int64_t v = tensorTy(logits).getShape().back();
  if (v != ChunkOp::kByteVocab)
    return op->emitOpError() << "byte logits must have "
                             << ChunkOp::kByteVocab
                             << " classes (256 bytes, pad, end), got " << v;
  return success();
}

static bool isFinite(double x) { return std::isfinite(x); }

//===----------------------------------------------------------------------===//
// ModelOp
//===----------------------------------------------------------------------===//

LogicalResult ModelOp::verify() {
  for (Operation &op : getBody().front()) {
    if (isa<ParamOp, StateOp>(op) || isa<FunctionOpInterface>(op))
      continue;
    return op.emitOpError()
           << "is not allowed in the body of 'stlm.model', which holds only "
              "'stlm.param', 'stlm.state' and functions";
  }
  if (Attribute train = (*this)->getAttr("stlm.train");
      train && !isa<DictionaryAttr>(train))
    return emitOpError() << "stlm.train must be a dictionary, got " << train;
  // stlm-quantize's record of the model's format (read by the artifact
  // writer and the driver).
  if (Attribute q = (*this)->getAttr("stlm.quantization")) {
    auto dict = dyn_cast<DictionaryAttr>(q);
    auto scheme = dict ? dict.getAs<StringAttr>("scheme") : StringAttr();
    auto group = dict ? dict.getAs<IntegerAttr>("group") : IntegerAttr();
    if (!scheme || !group ||
        (scheme.getValue() != "int8" && scheme.getValue() != "int4") ||
        group.getInt() < 1)
      return emitOpError() << "stlm.quantization must be {scheme = \"int8\" "
                              "| \"int4\", group = N > 0}, got "
                           << q;
  }
  // Every quantized linear has the model's format: the artifact writer
  // lays out the quantized parameters by it, and the kernels read them
  // by the ops' own.
  auto q = (*this)->getAttrOfType<DictionaryAttr>("stlm.quantization");
  WalkResult formats = (*this)->walk([&](QLinearOp op) {
    if (q && op.getScheme() == q.getAs<StringAttr>("scheme").getValue() &&
        static_cast<int64_t>(op.getGroup()) ==
            q.getAs<IntegerAttr>("group").getInt())
      return WalkResult::advance();
    InFlightDiagnostic d = op.emitOpError()
                           << "is " << op.getScheme() << " in groups of "
                           << op.getGroup()
                           << "; the model's stlm.quantization is ";
    if (q)
      d << q;
    else
      d << "missing";
    return WalkResult::interrupt();
  });
  if (formats.wasInterrupted())
    return failure();
  return TrainSettings::read(*this);
}

//===----------------------------------------------------------------------===//
// TrainSettings
//===----------------------------------------------------------------------===//

TrainSettings::TrainSettings() {
  namespace d = ::stlm::train_defaults;
  batch = d::kBatch, steps = d::kSteps, warmup = d::kWarmup,
  accumulate = d::kAccumulate, seed = d::kSeed;
  lr = d::kLr, minLr = d::kMinLr, beta1 = d::kBeta1, beta2 = d::kBeta2,
  eps = d::kEps, weightDecay = d::kWeightDecay, gradClip = d::kGradClip;
  schedule = d::kCosineSchedule ? ScheduleKind::cosine : ScheduleKind::constant;
  bf16 = d::kBF16;
}

FailureOr<TrainSettings> TrainSettings::read(ModelOp model) {
  return parse(model, /*diagnose=*/true);
}

FailureOr<TrainSettings> TrainSettings::parse(ModelOp model, bool diagnose) {
  TrainSettings t;
  auto dict = model->getAttrOfType<DictionaryAttr>("stlm.train");
  if (!dict)
    return t;
  auto error = [&]() -> InFlightDiagnostic {
    InFlightDiagnostic d = model.emitOpError();
    if (!diagnose)
      d.abandon();
    return d;
  };
  // A present key of the wrong kind is an error, not a silent default.
  auto bad = [&](NamedAttribute kv, StringRef what) {
    error() << "stlm.train: '" << kv.getName().getValue() << "' must be "
            << what << ", got " << kv.getValue();
    return failure();
  };
  auto number = [&](NamedAttribute kv, double &out) -> LogicalResult {
    if (auto f = dyn_cast<FloatAttr>(kv.getValue()))
      out = f.getValueAsDouble();
    else if (auto i = dyn_cast<IntegerAttr>(kv.getValue()))
      out = static_cast<double>(i.getInt());
    else
      return bad(kv, "a number");
    return success();
  };
  auto integer = [&](NamedAttribute kv, int64_t &out) -> LogicalResult {
    auto i = dyn_cast<IntegerAttr>(kv.getValue());
    if (!i)
      return bad(kv, "an integer");
    out = i.getInt();
    return success();
  };
  for (NamedAttribute kv : dict) {
    StringRef key = kv.getName().getValue();
    StringRef text;
    if (auto s = dyn_cast<StringAttr>(kv.getValue()))
      text = s.getValue();
    LogicalResult ok =
        key == "batch"          ? integer(kv, t.batch)
        : key == "steps"        ? integer(kv, t.steps)
        : key == "warmup"       ? integer(kv, t.warmup)
        : key == "accumulate"   ? integer(kv, t.accumulate)
        : key == "seed"         ? integer(kv, t.seed)
        : key == "lr"           ? number(kv, t.lr)
        : key == "min_lr"       ? number(kv, t.minLr)
        : key == "beta1"        ? number(kv, t.beta1)
        : key == "beta2"        ? number(kv, t.beta2)
        : key == "eps"          ? number(kv, t.eps)
        : key == "weight_decay" ? number(kv, t.weightDecay)
        : key == "grad_clip"    ? number(kv, t.gradClip)
        : key == "schedule" || key == "precision"
            ? success()
            : LogicalResult(error()
                            << "stlm.train: unknown key '" << key
                            << "' (known: batch, steps, lr, min_lr, warmup, "
                               "schedule, beta1, beta2, eps, weight_decay, "
                               "grad_clip, accumulate, seed, precision)");
    if (failed(ok))
      return failure();
    if (key == "schedule") {
      std::optional<ScheduleKind> k = symbolizeScheduleKind(text);
      if (text.empty() || !k)
        return bad(kv, "\"cosine\" or \"constant\"");
      t.schedule = *k;
    }
    if (key == "precision") {
      if (text != "fp32" && text != "bf16")
        return bad(kv, "\"fp32\" or \"bf16\"");
      t.bf16 = text == "bf16";
    }
  }
  if (t.accumulate < 1)
    return error() << "stlm.train: 'accumulate' must be >= 1, got "
                   << t.accumulate;
  return t;
}

TrainSettings TrainSettings::of(ModelOp model) {
  FailureOr<TrainSettings> t = parse(model, /*diagnose=*/false);
  return succeeded(t) ? *t : TrainSettings();
}

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  FloatAttr std = getStdAttr();
  if (getInit() == InitKind::normal) {
    if (!std)
      return emitOpError("'normal' initialisation needs a standard deviation");
    double s = std.getValueAsDouble();
    if (!(s > 0.0) || !isFinite(s))
      return emitOpError() << "standard deviation must be finite and > 0, got "
                           << s;
  } else if (std) {
    return emitOpError() << "'" << stringifyInitKind(getInit())
                         << "' initialisation takes no standard deviation";
  }
  if (getTensorType().getNumElements() == 0)
    return emitOpError("parameter has no elements");
  return success();
}

//===----------------------------------------------------------------------===//
// ParamRefOp / LayerParamRefOp
//===----------------------------------------------------------------------===//

/// Resolves `name` as a parameter of `model` and checks that it has type
/// `type`. Returns what is wrong, or nothing when the use is valid.
static std::optional<std::string>
paramUseError(ModelOp model, StringRef name, Type type,
              SymbolTableCollection *symbolTable) {
  StringAttr nameAttr = StringAttr::get(model.getContext(), name);
  Operation *sym =
      symbolTable ? symbolTable->lookupSymbolIn(model, nameAttr)
                  : SymbolTable::lookupSymbolIn(model, nameAttr);
  std::string msg;
  llvm::raw_string_ostream os(msg);
  if (!sym) {
    os << "'@" << name << "' is not a parameter of model '@"
       << model.getSymName() << "'";
    return os.str();
  }
  auto param = dyn_cast<ParamOp>(sym);
  if (!param) {
    os << "'@" << name << "' is a '" << sym->getName()
       << "', not a 'stlm.param'";
    return os.str();
  }
  if (param.getType() != type) {
    os << "type '" << type << "' does not match parameter '@" << name
       << "' declared as '" << param.getType() << "'";
    return os.str();
  }
  return std::nullopt;
}

LogicalResult
ParamRefOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto model = (*this)->getParentOfType<ModelOp>();
  if (!model)
    return emitOpError("must be nested in a 'stlm.model'");
  if (auto error = paramUseError(model, getName(), getType(), &symbolTable))
    return emitOpError() << *error;
  return success();
}

/// Resolves `name` as a `stlm.state` (or, when `allowParam`, also a
/// `stlm.param`) of the model around `op` with type `type`.
static LogicalResult verifyVariableUse(Operation *op, StringRef name,
                                       Type type, bool allowParam,
                                       SymbolTableCollection &symbolTable) {
  auto model = op->getParentOfType<ModelOp>();
  if (!model)
    return op->emitOpError("must be nested in a 'stlm.model'");
  Operation *sym = symbolTable.lookupSymbolIn(
      model, StringAttr::get(op->getContext(), name));
  const char *expected =
      allowParam ? "a 'stlm.param' or 'stlm.state'" : "a 'stlm.state'";
  if (!sym)
    return op->emitOpError() << "'@" << name << "' is not " << expected
                             << " of model '@" << model.getSymName() << "'";
  Type declared;
  if (auto state = dyn_cast<StateOp>(sym))
    declared = state.getType();
  else if (auto param = dyn_cast<ParamOp>(sym); param && allowParam)
    declared = param.getType();
  else
    return op->emitOpError() << "'@" << name << "' is a '" << sym->getName()
                             << "', not " << expected;
  if (declared != type)
    return op->emitOpError() << "type " << type << " does not match '@" << name
                             << "' declared as " << declared;
  return success();
}

LogicalResult
StateRefOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyVariableUse(*this, getName(), getType(), /*allowParam=*/false,
                           symbolTable);
}

LogicalResult AssignOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyVariableUse(*this, getName(), getValue().getType(),
                           /*allowParam=*/true, symbolTable);
}

std::string LayerParamRefOp::getNameForLayer(int64_t index) {
  std::string name = getPattern().str();
  size_t pos = name.find("{}");
  if (pos != std::string::npos)
    name.replace(pos, 2, std::to_string(index));
  return name;
}

LogicalResult LayerParamRefOp::verify() {
  StringRef pattern = getPattern();
  size_t first = pattern.find("{}");
  if (first == StringRef::npos || pattern.find("{}", first + 1) != StringRef::npos)
    return emitOpError() << "pattern '" << pattern
                         << "' must contain exactly one '{}' (the layer index)";
  auto arg = llvm::dyn_cast<BlockArgument>(getLayer());
  auto repeat =
      arg ? dyn_cast<RepeatOp>(arg.getOwner()->getParentOp()) : RepeatOp();
  if (!repeat || arg.getArgNumber() != 0)
    return emitOpError("layer index must be the induction variable of an "
                       "enclosing 'stlm.repeat'");
  auto model = (*this)->getParentOfType<ModelOp>();
  if (!model)
    return emitOpError("must be nested in a 'stlm.model'");
  for (int64_t l = repeat.getLower(); l < repeat.getUpper(); ++l) {
    if (auto error = paramUseError(model, getNameForLayer(l), getType(),
                                   /*symbolTable=*/nullptr))
      return emitOpError() << "layer " << l << " of '" << pattern
                           << "': " << *error;
  }
  return success();
}

//===----------------------------------------------------------------------===//
// RepeatOp / YieldOp
//===----------------------------------------------------------------------===//

LogicalResult RepeatOp::verify() {
  if (getLower() < 0 || getUpper() <= getLower())
    return emitOpError() << "layer range [" << getLower() << ", "
                         << getUpper() << ") must be non-empty and start at "
                                          ">= 0";
  Block &body = getBody().front();
  if (body.getNumArguments() != 2 ||
      !body.getArgument(0).getType().isIndex() ||
      body.getArgument(1).getType() != getInit().getType())
    return emitOpError() << "body must take two arguments: the layer index "
                            "(index) and the hidden state ("
                         << getInit().getType() << ")";
  if (body.empty() || !isa<YieldOp>(body.back()))
    return emitOpError("body must end in 'stlm.yield'");
  return success();
}

namespace {
/// A run of one layer that does not use its layer index is just that layer:
/// inline the body.
struct InlineSingleLayerRepeat : OpRewritePattern<RepeatOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RepeatOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getNumLayers() != 1)
      return failure();
    Block &body = op.getBody().front();
    // Per-layer references need the induction variable to stay a block
    // argument of a repeat; keep those runs as they are.
    if (!op.getLayerIndex().use_empty())
      return failure();
    auto yield = cast<YieldOp>(body.getTerminator());
    Value next = yield.getValue();
    rewriter.inlineBlockBefore(&body, op, {Value(), op.getInit()});
    rewriter.replaceOp(op, next);
    rewriter.eraseOp(yield);
    return success();
  }
};
} // namespace

void RepeatOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<InlineSingleLayerRepeat>(context);
}

LogicalResult YieldOp::verify() {
  auto repeat = cast<RepeatOp>((*this)->getParentOp());
  if (getValue().getType() != repeat.getInit().getType())
    return emitOpError() << "yields " << getValue().getType()
                         << " but the hidden state is "
                         << repeat.getInit().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Embedders
//===----------------------------------------------------------------------===//

/// `table: [V, D]`, `ids: [...]`, `rows: [..., D]` (the result, or its
/// gradient).
static LogicalResult verifyEmbed(Operation *op, Value table, Value ids,
                                 Value rows) {
  ArrayRef<int64_t> ts = tensorTy(table).getShape();
  if (ts.size() != 2)
    return op->emitOpError() << "table must have rank 2 ([V, D]), got "
                             << shapeStr(ts);
  SmallVector<int64_t> expected(tensorTy(ids).getShape());
  expected.push_back(ts[1]);
  ArrayRef<int64_t> rs = tensorTy(rows).getShape();
  if (rs != ArrayRef<int64_t>(expected))
    return op->emitOpError() << "result shape " << shapeStr(rs) << " must be "
                             << shapeStr(expected) << " (ids shape + [D])";
  return success();
}

LogicalResult EmbedOp::verify() {
  return verifyEmbed(*this, getTable(), getIds(), getResult());
}

LogicalResult EmbedGradOp::verify() {
  return verifyEmbed(*this, getDtable(), getIds(), getDy());
}

LogicalResult ChunkOp::verify() {
  ArrayRef<int64_t> bs = tensorTy(getBytes()).getShape();
  ArrayRef<int64_t> cs = tensorTy(getChunks()).getShape();
  ArrayRef<int64_t> ns = tensorTy(getCount()).getShape();
  if (bs.size() != 2)
    return emitOpError() << "bytes must have rank 2 ([B, N]), got "
                         << shapeStr(bs);
  if (cs.size() != 3 || cs[0] != bs[0])
    return emitOpError() << "chunks must be [B, C, L] with B = " << bs[0]
                         << ", got " << shapeStr(cs);
  if (ns.size() != 1 || ns[0] != bs[0])
    return emitOpError() << "count must be [B] with B = " << bs[0]
                         << ", got " << shapeStr(ns);
  int64_t n = bs[1], c = cs[1], l = cs[2];
  if (l < 1)
    return emitOpError("chunks must hold at least one byte (L >= 1)");

  bool isFixed = getMode() == ChunkMode::fixed;
  if (isFixed != getStride().has_value())
    return emitOpError(isFixed ? "'fixed' chunking needs a 'stride'"
                               : "'stride' is only for 'fixed' chunking");
  if (isFixed) {
    int64_t p = *getStride();
    if (p < 1 || p > l)
      return emitOpError() << "stride " << p << " must be in [1, L = " << l
                           << "]";
    int64_t expected = (n + p - 1) / p;
    if (c != expected)
      return emitOpError() << "'fixed' chunking of " << n
                           << " bytes with stride " << p << " gives "
                           << expected << " chunks, but C = " << c;
    return success();
  }
  if (c < 1 || c > n)
    return emitOpError() << "chunk capacity C = " << c
                         << " must be in [1, N = " << n << "]";
  return success();
}

/// `x: [..., C, L, D]`, `pooled: [..., C, D]`, `ids` iff masked_mean.
static LogicalResult verifyPool(Operation *op, PoolKind kind, Value x,
                                Value pooled, Value ids) {
  ArrayRef<int64_t> xs = tensorTy(x).getShape();
  if (xs.size() < 3)
    return op->emitOpError() << "input must be [..., C, L, D], got "
                             << shapeStr(xs);
  SmallVector<int64_t> expected(xs.drop_back(2));
  expected.push_back(xs.back());
  ArrayRef<int64_t> rs = tensorTy(pooled).getShape();
  if (rs != ArrayRef<int64_t>(expected))
    return op->emitOpError() << "result shape " << shapeStr(rs)
                             << " must be " << shapeStr(expected);
  bool needsIds = kind == PoolKind::masked_mean;
  if (needsIds != static_cast<bool>(ids))
    return op->emitOpError(needsIds ? "'masked_mean' needs the chunk ids"
                                    : "chunk ids are only for 'masked_mean'");
  if (needsIds && tensorTy(ids).getShape() != xs.drop_back())
    return op->emitOpError() << "ids shape "
                             << shapeStr(tensorTy(ids).getShape())
                             << " must be " << shapeStr(xs.drop_back());
  return success();
}

LogicalResult PoolOp::verify() {
  return verifyPool(*this, getKind(), getX(), getResult(), getIds());
}

LogicalResult PoolGradOp::verify() {
  return verifyPool(*this, getKind(), getX(), getDy(), getIds());
}

//===----------------------------------------------------------------------===//
// Core layers
//===----------------------------------------------------------------------===//

static LogicalResult verifyRMSNorm(Operation *op, Value x, Value weight,
                                   double eps) {
  ArrayRef<int64_t> xs = tensorTy(x).getShape();
  ArrayRef<int64_t> ws = tensorTy(weight).getShape();
  if (xs.empty())
    return op->emitOpError("input must have rank >= 1");
  if (ws.size() != 1 || ws[0] != xs.back())
    return op->emitOpError() << "weight must be [" << xs.back() << "], got "
                             << shapeStr(ws);
  if (!(eps > 0.0) || !isFinite(eps))
    return op->emitOpError() << "eps must be finite and > 0, got " << eps;
  return success();
}

LogicalResult RMSNormOp::verify() {
  return verifyRMSNorm(*this, getX(), getWeight(),
                       getEps().convertToDouble());
}

LogicalResult RMSNormGradOp::verify() {
  return verifyRMSNorm(*this, getX(), getWeight(),
                       getEps().convertToDouble());
}

LogicalResult LinearOp::verify() {
  return verifyRowMajorProduct(*this, getX(), getWeight(), getResult(),
                               "weight");
}

LogicalResult QLinearOp::verify() {
  StringRef scheme = getScheme();
  if (scheme != "int8" && scheme != "int4")
    return emitOpError() << "scheme must be \"int8\" or \"int4\", got \""
                         << scheme << "\"";
  bool int4 = scheme == "int4";
  int64_t group = getGroup();
  ArrayRef<int64_t> xs = tensorTy(getX()).getShape();
  ArrayRef<int64_t> ws = tensorTy(getWeight()).getShape();
  ArrayRef<int64_t> ss = tensorTy(getScale()).getShape();
  if (xs.empty())
    return emitOpError("input must have rank >= 1");
  int64_t in = xs.back();
  // At most 131072 inputs a group (support/Quantize.h's kMaxGroup): the
  // largest whose int32 sum of int8 products is exact.
  if (group <= 0 || group > 131072 || in % group != 0 ||
      (int4 && group % 2 != 0))
    return emitOpError() << "group " << group << " must be "
                         << (int4 ? "even, " : "")
                         << "between 1 and 131072 and divide the " << in
                         << " inputs";
  Type et = tensorTy(getWeight()).getElementType();
  if (int4 != et.isUnsignedInteger())
    return emitOpError() << scheme << " weight must be "
                         << (int4 ? "ui8" : "i8") << ", got " << et;
  if (ws.size() != 2 || ws[1] != (int4 ? in / 2 : in))
    return emitOpError() << scheme << " weight must be [Out, "
                         << (int4 ? in / 2 : in) << "], got " << shapeStr(ws);
  if (ss.size() != 2 || ss[0] != ws[0] || ss[1] != in / group)
    return emitOpError() << "scale must be [" << ws[0] << ", " << in / group
                         << "], got " << shapeStr(ss);
  SmallVector<int64_t> expected(xs.drop_back());
  expected.push_back(ws[0]);
  ArrayRef<int64_t> rs = tensorTy(getResult()).getShape();
  if (rs != ArrayRef<int64_t>(expected))
    return emitOpError() << "result shape " << shapeStr(rs) << " must be "
                         << shapeStr(expected);
  return success();
}

LogicalResult LinearFusedOp::verify() {
  if (failed(verifyRowMajorProduct(*this, getX(), getWeight(), getResult(),
                                   "weight")))
    return failure();
  if (getActivation() != "none" && getActivation() != "gelu")
    return emitOpError() << "activation must be \"none\" or \"gelu\", got \""
                         << getActivation() << "\"";
  if (getResidual() && getResidual().getType() != getResult().getType())
    return emitOpError() << "residual " << getResidual().getType()
                         << " must have the result's type "
                         << getResult().getType();
  return success();
}

LogicalResult LinearGradOp::verify() {
  if (getAddend() && getAddend().getType() != getX().getType())
    return emitOpError() << "addend " << getAddend().getType()
                         << " must have the type of x " << getX().getType();
  if (getGeluInput() && getGeluInput().getType() != getX().getType())
    return emitOpError() << "gelu_input " << getGeluInput().getType()
                         << " must have the type of x " << getX().getType();
  if (getAddend() && getGeluInput())
    return emitOpError() << "takes an addend or a gelu_input, not both";
  return verifyRowMajorProduct(*this, getX(), getWeight(), getDy(), "weight");
}

/// `x: [..., In]`, `a: [R, In]`, `b: [Out, R]` → `result: [..., Out]`.
static LogicalResult verifyLowRank(Operation *op, Value x, Value a, Value b,
                                   Value result) {
  ArrayRef<int64_t> xs = tensorTy(x).getShape();
  ArrayRef<int64_t> as = tensorTy(a).getShape();
  ArrayRef<int64_t> bs = tensorTy(b).getShape();
  if (xs.empty())
    return op->emitOpError("input must have rank >= 1");
  if (as.size() != 2 || as[1] != xs.back())
    return op->emitOpError() << "a must be [R, " << xs.back() << "], got "
                             << shapeStr(as);
  if (bs.size() != 2 || bs[1] != as[0])
    return op->emitOpError() << "b must be [Out, R] with R = " << as[0]
                             << ", got " << shapeStr(bs);
  SmallVector<int64_t> expected(xs.drop_back());
  expected.push_back(bs[0]);
  ArrayRef<int64_t> rs = tensorTy(result).getShape();
  if (rs != ArrayRef<int64_t>(expected))
    return op->emitOpError() << "result shape " << shapeStr(rs)
                             << " must be " << shapeStr(expected);
  return success();
}

LogicalResult LowRankOp::verify() {
  return verifyLowRank(*this, getX(), getA(), getB(), getResult());
}

LogicalResult LowRankGradOp::verify() {
  return verifyLowRank(*this, getX(), getA(), getB(), getDy());
}

/// `weight: [Out, In]` (named `name`), `a: [R, In]`, `b: [Out, R]`.
static LogicalResult verifyMerge(Operation *op, StringRef name, Value weight,
                                 Value a, Value b) {
  ArrayRef<int64_t> ws = tensorTy(weight).getShape();
  ArrayRef<int64_t> as = tensorTy(a).getShape();
  ArrayRef<int64_t> bs = tensorTy(b).getShape();
  if (ws.size() != 2)
    return op->emitOpError()
           << name << " must be [Out, In], got " << shapeStr(ws);
  if (as.size() != 2 || as[1] != ws[1])
    return op->emitOpError()
           << "a must be [R, " << ws[1] << "], got " << shapeStr(as);
  if (bs.size() != 2 || bs[0] != ws[0] || bs[1] != as[0])
    return op->emitOpError() << "b must be [" << ws[0] << ", " << as[0]
                             << "], got " << shapeStr(bs);
  return success();
}

LogicalResult LowRankMergeOp::verify() {
  return verifyMerge(*this, "weight", getWeight(), getA(), getB());
}

LogicalResult LowRankMergeGradOp::verify() {
  return verifyMerge(*this, "dmerged", getDmerged(), getA(), getB());
}

LogicalResult RoPEOp::verify() {
  ArrayRef<int64_t> xs = tensorTy(getX()).getShape();
  int64_t hd = getHeadDim();
  if (xs.size() < 2)
    return emitOpError() << "input must be [..., T, H*hd], got "
                         << shapeStr(xs);
  if (hd < 2 || hd % 2 != 0)
    return emitOpError() << "head_dim " << hd
                         << " must be even and >= 2 (RoPE rotates pairs)";
  if (xs.back() % hd != 0)
    return emitOpError() << "width " << xs.back()
                         << " is not a multiple of head_dim " << hd;
  double theta = getTheta().convertToDouble();
  if (!(theta > 1.0) || !isFinite(theta))
    return emitOpError() << "theta must be finite and > 1, got " << theta;
  return success();
}

/// An optional f64 attribute's value.
static std::optional<double> asDouble(std::optional<llvm::APFloat> x) {
  if (!x)
    return std::nullopt;
  return x->convertToDouble();
}

/// The shape and attribute rules of attention; `result` is the forward
/// result (or the gradient flowing into it), `ropeTheta` its rope_theta.
static LogicalResult verifyAttention(Operation *op, MaskKind mask, Value q,
                                     Value k, Value v, Value offset, int64_t h,
                                     int64_t kv, Value result,
                                     std::optional<double> ropeTheta) {
  ArrayRef<int64_t> qs = tensorTy(q).getShape();
  ArrayRef<int64_t> ks = tensorTy(k).getShape();
  ArrayRef<int64_t> vs = tensorTy(v).getShape();
  if (qs.size() < 2)
    return op->emitOpError() << "q must be [..., T, H*hd], got "
                             << shapeStr(qs);
  if (h < 1 || kv < 1)
    return op->emitOpError() << "heads (" << h << ") and kv_heads (" << kv
                             << ") must be >= 1";
  if (h % kv != 0)
    return op->emitOpError() << "kv_heads " << kv << " must divide heads "
                             << h;
  if (qs.back() % h != 0)
    return op->emitOpError() << "heads " << h << " must divide the width "
                             << qs.back();
  int64_t hd = qs.back() / h;
  if (ks.size() != qs.size() || ks.drop_back(2) != qs.drop_back(2))
    return op->emitOpError() << "k shape " << shapeStr(ks)
                             << " must have the leading dimensions of q "
                             << shapeStr(qs);
  if (ks.back() != kv * hd)
    return op->emitOpError() << "k width " << ks.back()
                             << " must be kv_heads * head_dim = " << kv * hd;
  if (vs != ks)
    return op->emitOpError() << "v shape " << shapeStr(vs)
                             << " must equal k shape " << shapeStr(ks);
  int64_t t = qs[qs.size() - 2], s = ks[ks.size() - 2];
  if (offset && mask != MaskKind::causal)
    return op->emitOpError("an offset only applies to causal attention");
  if (mask == MaskKind::causal && !offset && s < t)
    return op->emitOpError()
           << "causal attention needs at least as many keys (" << s
           << ") as queries (" << t << ")";
  if (tensorTy(result) != tensorTy(q))
    return op->emitOpError() << "result type " << result.getType()
                             << " must equal q's type " << q.getType();
  if (ropeTheta) {
    if (offset)
      return op->emitOpError("rotates q and k at positions from 0 "
                             "(rope_theta): it takes no offset");
    if (hd % 2)
      return op->emitOpError()
             << "rope_theta rotates pairs, but the head width " << hd
             << " is odd";
    if (!(*ropeTheta > 1.0) || !std::isfinite(*ropeTheta))
      return op->emitOpError()
             << "rope_theta must be finite and > 1 (as stlm.rope's theta), got "
             << *ropeTheta;
  }
  return success();
}

LogicalResult AttentionOp::verify() {
  return verifyAttention(*this, getMask(), getQ(), getK(), getV(), getOffset(),
                         getHeads(), getKvHeads(), getResult(),
                         asDouble(getRopeTheta()));
}

LogicalResult AttentionGradOp::verify() {
  return verifyAttention(*this, getMask(), getQ(), getK(), getV(), getOffset(),
                         getHeads(), getKvHeads(), getDy(),
                         asDouble(getRopeTheta()));
}

LogicalResult AddOp::verify() {
  ArrayRef<int64_t> ls = tensorTy(getLhs()).getShape();
  ArrayRef<int64_t> rs = tensorTy(getRhs()).getShape();
  if (rs.size() > ls.size() || ls.take_back(rs.size()) != rs)
    return emitOpError() << "rhs shape " << shapeStr(rs)
                         << " must be a suffix of lhs shape " << shapeStr(ls);
  return success();
}

LogicalResult WriteRowsOp::verify() {
  ArrayRef<int64_t> cs = tensorTy(getCache()).getShape();
  ArrayRef<int64_t> rs = tensorTy(getRows()).getShape();
  if (cs.size() < 2 || rs.size() != cs.size())
    return emitOpError() << "cache [..., S, W] and rows [..., N, W] must have "
                            "the same rank >= 2, got "
                         << shapeStr(cs) << " and " << shapeStr(rs);
  size_t r = cs.size();
  if (cs.take_front(r - 2) != rs.take_front(r - 2) || cs[r - 1] != rs[r - 1])
    return emitOpError() << "rows " << shapeStr(rs)
                         << " must match the cache " << shapeStr(cs)
                         << " in every dimension but the second-to-last";
  if (rs[r - 2] > cs[r - 2])
    return emitOpError() << rs[r - 2] << " rows do not fit a cache of "
                         << cs[r - 2];
  if (tensorTy(getCache()).getElementType() !=
      tensorTy(getRows()).getElementType())
    return emitOpError() << "rows and cache must have one element type";
  return success();
}

LogicalResult SumLeadingOp::verify() {
  ArrayRef<int64_t> xs = tensorTy(getX()).getShape();
  ArrayRef<int64_t> rs = tensorTy(getResult()).getShape();
  if (rs.size() > xs.size() || xs.take_back(rs.size()) != rs)
    return emitOpError() << "result shape " << shapeStr(rs)
                         << " must be a suffix of the input shape "
                         << shapeStr(xs);
  return success();
}

OpFoldResult SumLeadingOp::fold(FoldAdaptor) {
  // Nothing to sum: the identity.
  if (getX().getType() == getResult().getType())
    return getX();
  return {};
}

//===----------------------------------------------------------------------===//
// Chunk decoder and head
//===----------------------------------------------------------------------===//

/// `flat: [..., L·E]` and `slots: [..., L, E]`.
static LogicalResult verifySlots(Operation *op, Value flat, Value slots) {
  ArrayRef<int64_t> xs = tensorTy(flat).getShape();
  ArrayRef<int64_t> rs = tensorTy(slots).getShape();
  if (xs.empty())
    return op->emitOpError("input must have rank >= 1");
  if (rs.size() != xs.size() + 1 || rs.drop_back(2) != xs.drop_back() ||
      rs[rs.size() - 2] * rs.back() != xs.back())
    return op->emitOpError() << "slot shape " << shapeStr(rs)
                             << " must be [..., L, E] with L * E = "
                             << xs.back()
                             << " and the flat shape's leading dimensions";
  return success();
}

LogicalResult SplitSlotsOp::verify() {
  return verifySlots(*this, getX(), getResult());
}

LogicalResult MergeSlotsOp::verify() {
  if (tensorTy(getX()).getRank() < 2)
    return emitOpError("input must be [..., L, E]");
  return verifySlots(*this, getResult(), getX());
}

LogicalResult LogitsOp::verify() {
  return verifyRowMajorProduct(*this, getX(), getTable(), getResult(),
                               "table");
}

LogicalResult MaskTokensOp::verify() {
  if (tensorTy(getIds()).getRank() != 2)
    return emitOpError() << "ids must be [B, T], got "
                         << shapeStr(tensorTy(getIds()).getShape());
  if (tensorTy(getIds()).getShape() != tensorTy(getMask()).getShape())
    return emitOpError("mask shape must match ids shape");
  double p = getProb().convertToDouble();
  if (!(p > 0.0 && p < 1.0))
    return emitOpError() << "prob must be in (0, 1), got " << p;
  if (getMaskId() < 0)
    return emitOpError() << "mask_id must be >= 0, got " << getMaskId();
  return success();
}

//===----------------------------------------------------------------------===//
// Objectives
//===----------------------------------------------------------------------===//

LogicalResult NextTokenLossOp::verify() {
  return verifyLogitsTargets(*this, getLogits(), getTargets(), "targets", 3);
}

LogicalResult ChunkBytesLossOp::verify() {
  if (failed(verifyChunkLogits(*this, getLogits(), getChunks(), getCount())))
    return failure();
  if (tensorTy(getChunks()).getShape()[1] < 2)
    return emitOpError("next-chunk prediction needs at least 2 chunks");
  return success();
}

LogicalResult ReconstructionLossOp::verify() {
  return verifyChunkLogits(*this, getLogits(), getChunks(), getCount());
}

LogicalResult MaskedNextTokenLossOp::verify() {
  if (failed(
          verifyLogitsTargets(*this, getLogits(), getTargets(), "targets", 3)))
    return failure();
  if (tensorTy(getMask()).getShape() != tensorTy(getTargets()).getShape())
    return emitOpError("mask shape must match targets shape");
  return success();
}

static LogicalResult verifyDistill(Operation *op, Value logits, Value teacher,
                                   Value targets, double t, double a) {
  if (failed(verifyLogitsTargets(op, logits, targets, "targets", 3)))
    return failure();
  if (teacher.getType() != logits.getType())
    return op->emitOpError() << "teacher logits " << teacher.getType()
                             << " must have the student's type "
                             << logits.getType();
  if (!(t > 0.0) || !isFinite(t))
    return op->emitOpError() << "temperature must be finite and > 0, got "
                             << t;
  if (!(a >= 0.0 && a <= 1.0))
    return op->emitOpError() << "alpha must be in [0, 1], got " << a;
  return success();
}

LogicalResult DistillLossOp::verify() {
  return verifyDistill(*this, getLogits(), getTeacher(), getTargets(),
                       getTemperature().convertToDouble(),
                       getAlpha().convertToDouble());
}

LogicalResult DistillLossGradOp::verify() {
  return verifyDistill(*this, getLogits(), getTeacher(), getTargets(),
                       getTemperature().convertToDouble(),
                       getAlpha().convertToDouble());
}

LogicalResult NextTokenLossGradOp::verify() {
  return verifyLogitsTargets(*this, getLogits(), getTargets(), "targets", 3);
}

LogicalResult ChunkBytesLossGradOp::verify() {
  return verifyChunkLogits(*this, getLogits(), getChunks(), getCount());
}

LogicalResult ReconstructionLossGradOp::verify() {
  return verifyChunkLogits(*this, getLogits(), getChunks(), getCount());
}

LogicalResult MaskedNextTokenLossGradOp::verify() {
  if (failed(
          verifyLogitsTargets(*this, getLogits(), getTargets(), "targets", 3)))
    return failure();
  if (tensorTy(getMask()).getShape() != tensorTy(getTargets()).getShape())
    return emitOpError("mask shape must match targets shape");
  return success();
}

LogicalResult WeightedSumOp::verify() {
  if (getTerms().empty())
    return emitOpError("needs at least one term");
  if (getWeights().size() != getTerms().size())
    return emitOpError() << "has " << getTerms().size() << " terms but "
                         << getWeights().size() << " weights";
  for (auto [i, w] : llvm::enumerate(getWeights().getAsValueRange<FloatAttr>())) {
    double x = w.convertToDouble();
    if (!(x >= 0.0) || !isFinite(x))
      return emitOpError() << "weight " << i << " must be finite and >= 0, got "
                           << x;
  }
  return success();
}

OpFoldResult WeightedSumOp::fold(FoldAdaptor) {
  if (getTerms().size() == 1 &&
      llvm::cast<FloatAttr>(getWeights()[0]).getValueAsDouble() == 1.0)
    return getTerms()[0];
  return {};
}

namespace {
/// Removes terms with weight 0 (keeping at least one term).
struct DropZeroWeightTerms : OpRewritePattern<WeightedSumOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(WeightedSumOp op,
                                PatternRewriter &rewriter) const override {
    SmallVector<Value> terms;
    SmallVector<Attribute> weights;
    for (auto [t, w] : llvm::zip(op.getTerms(), op.getWeights())) {
      if (llvm::cast<FloatAttr>(w).getValueAsDouble() == 0.0)
        continue;
      terms.push_back(t);
      weights.push_back(w);
    }
    if (terms.size() == op.getTerms().size())
      return failure();
    if (terms.empty()) {
      // Every weight is zero: the loss is 0 · first term.
      terms.push_back(op.getTerms()[0]);
      weights.push_back(op.getWeights()[0]);
      if (op.getTerms().size() == 1)
        return failure();
    }
    rewriter.replaceOpWithNewOp<WeightedSumOp>(
        op, op.getType(), terms, rewriter.getArrayAttr(weights));
    return success();
  }
};
} // namespace

void WeightedSumOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                                MLIRContext *context) {
  results.add<DropZeroWeightTerms>(context);
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

LogicalResult AdamWOp::verify() {
  double b1 = getBeta1().convertToDouble(), b2 = getBeta2().convertToDouble();
  double eps = getEps().convertToDouble();
  double wd = getWeightDecay().convertToDouble();
  if (!(b1 >= 0.0 && b1 < 1.0) || !(b2 >= 0.0 && b2 < 1.0))
    return emitOpError() << "betas must be in [0, 1), got (" << b1 << ", "
                         << b2 << ")";
  if (!(eps > 0.0) || !isFinite(eps))
    return emitOpError() << "eps must be finite and > 0, got " << eps;
  if (!(wd >= 0.0) || !isFinite(wd))
    return emitOpError() << "weight_decay must be finite and >= 0, got " << wd;
  if (wd != 0.0 && tensorTy(getParam()).getRank() < 2)
    return emitOpError() << "weight decay applies to matrices only, but the "
                            "parameter has rank "
                         << tensorTy(getParam()).getRank();
  return success();
}

LogicalResult ClipGradNormOp::verify() {
  if (getGrads().empty())
    return emitOpError("needs at least one gradient");
  double m = getMaxNorm().convertToDouble();
  if (!(m >= 0.0) || !isFinite(m))
    return emitOpError() << "max_norm must be finite and >= 0 (0 disables), "
                            "got "
                         << m;
  return success();
}

namespace {
/// `max_norm = 0` disables clipping: forward the gradients unchanged.
struct ForwardUnclippedGradients : OpRewritePattern<ClipGradNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ClipGradNormOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getMaxNorm().convertToDouble() != 0.0)
      return failure();
    bool changed = false;
    for (auto [c, g] : llvm::zip(op.getClipped(), op.getGrads())) {
      if (c.use_empty())
        continue;
      rewriter.replaceAllUsesWith(c, g);
      changed = true;
    }
    if (op.getNorm().use_empty()) {
      rewriter.eraseOp(op);
      return success();
    }
    return success(changed);
  }
};
} // namespace

void ClipGradNormOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                                 MLIRContext *context) {
  results.add<ForwardUnclippedGradients>(context);
}

LogicalResult LRScheduleOp::verify() {
  double lr = getLr().convertToDouble(), minLr = getMinLr().convertToDouble();
  if (!(lr > 0.0) || !isFinite(lr))
    return emitOpError() << "lr must be finite and > 0, got " << lr;
  if (!(minLr >= 0.0 && minLr <= lr))
    return emitOpError() << "min_lr must be in [0, lr], got " << minLr;
  if (getTotal() <= 0)
    return emitOpError() << "total must be > 0, got " << getTotal();
  if (getWarmup() < 0 || getWarmup() > getTotal())
    return emitOpError() << "warmup " << getWarmup() << " must be in [0, total = "
                         << getTotal() << "]";
  return success();
}

double LRScheduleOp::valueAt(int64_t step) {
  double lr = getLr().convertToDouble(), minLr = getMinLr().convertToDouble();
  int64_t w = getWarmup(), n = getTotal();
  if (step < w)
    return lr * static_cast<double>(step + 1) / static_cast<double>(w);
  if (getKind() == ScheduleKind::constant)
    return lr;
  double progress = static_cast<double>(step - w) /
                    static_cast<double>(std::max<int64_t>(1, n - w));
  progress = std::min(1.0, progress);
  return minLr + 0.5 * (lr - minLr) * (1.0 + std::cos(M_PI * progress));
}

OpFoldResult LRScheduleOp::fold(FoldAdaptor adaptor) {
  auto resultType = llvm::cast<ShapedType>(getType());
  auto splat = [&](double v) -> OpFoldResult {
    return DenseElementsAttr::get(resultType, static_cast<float>(v));
  };
  if (getKind() == ScheduleKind::constant && getWarmup() == 0)
    return splat(getLr().convertToDouble());
  auto step = llvm::dyn_cast_or_null<DenseIntElementsAttr>(adaptor.getStep());
  if (!step)
    return {};
  return splat(valueAt((*step.value_begin<APInt>()).getSExtValue()));
}

bool mlir::stlm::hasBF16Matmuls(Operation *op) {
  auto model = isa<ModelOp>(op) ? cast<ModelOp>(op)
                                : op->getParentOfType<ModelOp>();
  if (!model)
    return false;
  return TrainSettings::of(model).bf16;
}
