//===- BuildModel.cpp - model spec → stlm IR ------------------------------===//

#include "frontend/BuildModel.h"

#include "dialects/STLM/IR/STLMOps.h"
#include "frontend/Params.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <functional>

using namespace mlir;

namespace stlm {
namespace {

using Shape = SmallVector<int64_t>;

/// How one transformer block computes: shared by core layers, chunk encoder
/// and chunk decoder blocks.
struct BlockConfig {
  int64_t heads = 1, kvHeads = 1, headDim = 1;
  bool rope = false; // core only
  double ropeTheta = 10000.0;
  mlir::stlm::MaskKind mask = mlir::stlm::MaskKind::causal;
  Ffn ffn = Ffn::SwiGLU;
  double eps = 1e-6;
};

class ModelBuilder {
public:
  ModelBuilder(MLIRContext &ctx, const ModelSpec &spec)
      : ctx(ctx), s(spec), b(&ctx), loc(b.getUnknownLoc()),
        table(buildParamTable(spec)) {}

  OwningOpRef<ModuleOp> build();

private:
  RankedTensorType f32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getF32Type());
  }
  RankedTensorType i32(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, b.getIntegerType(32));
  }
  RankedTensorType paramType(const std::string &name) {
    const ParamInfo *p = table.find(name);
    assert(p && "parameter not in the table");
    return f32(p->shape);
  }
  static Shape shapeOf(Value v) {
    return Shape(llvm::cast<RankedTensorType>(v.getType()).getShape());
  }
  static Shape withLast(Value v, int64_t last) {
    Shape sh = shapeOf(v);
    sh.back() = last;
    return sh;
  }

  /// A weight: a parameter, or (in a teacher) the frozen state holding it.
  Value param(const std::string &name) {
    if (!frozenPrefix.empty())
      return b.create<mlir::stlm::StateRefOp>(loc, paramType(name),
                                              frozenPrefix + name);
    return b.create<mlir::stlm::ParamRefOp>(loc, paramType(name), name);
  }
  Value linear(Value x, Value w) {
    int64_t out = llvm::cast<RankedTensorType>(w.getType()).getShape()[0];
    return b.create<mlir::stlm::LinearOp>(loc, f32(withLast(x, out)), x, w);
  }
  Value add(Value x, Value y) {
    return b.create<mlir::stlm::AddOp>(loc, x.getType(), x, y);
  }
  Value rmsnorm(Value x, Value g) {
    return b.create<mlir::stlm::RMSNormOp>(loc, x.getType(), x, g,
                                           b.getF64FloatAttr(s.core.normEps));
  }

  /// Reads a weight of a block: `key` is the logical name ("wq", ...).
  using Access = std::function<Value(const std::string &key)>;
  /// The low-rank delta for a shared weight, or null.
  using Delta = std::function<Value(const std::string &key, Value x)>;

  Value block(Value x, const BlockConfig &cfg, const Access &w,
              const Delta &delta);
  Value layerRun(Value x, int64_t lo, int64_t hi, const BlockConfig &cfg,
                 const std::function<std::string(int64_t, const std::string &)>
                     &nameOf,
                 bool coreDeltas);
  Value coreLayers(Value x);
  Value chunkBlocks(Value x, const std::string &prefix, int64_t count,
                    int64_t heads);

  void declareParams();
  Value tokenLogits(Value tokens);
  void buildTokenFunctions();
  void buildTeacher(const ModelSpec &teacher);
  void buildFrozenLogits(mlir::stlm::ModelOp into, const std::string &fn);
  void buildBytePoolFunctions();
  func::FuncOp beginFunction(const std::string &name, ArrayRef<Type> inputs,
                             ArrayRef<Type> results);
  Value finishLoss(SmallVector<Value> terms, SmallVector<double> weights);

  MLIRContext &ctx;
  const ModelSpec &s;
  OpBuilder b;
  Location loc;
  ParamTable table;
  mlir::stlm::ModelOp model;
  /// Non-empty for a teacher: its weights are the states `<prefix><name>`,
  /// read whole (no per-layer patterns, which only parameters have).
  std::string frozenPrefix;
};

Value ModelBuilder::block(Value x, const BlockConfig &cfg, const Access &w,
                          const Delta &delta) {
  auto proj = [&](Value in, const std::string &key) {
    Value y = linear(in, w(key));
    if (Value d = delta ? delta(key, in) : Value())
      y = add(y, d);
    return y;
  };
  // x += wo(attn(rope(wq n), rope(wk n), wv n)), n = rmsnorm(x)
  Value n1 = rmsnorm(x, w("attn_norm"));
  Value q = proj(n1, "wq"), k = proj(n1, "wk"), v = proj(n1, "wv");
  if (cfg.rope) {
    auto rope = [&](Value t) {
      auto op = b.create<mlir::stlm::RoPEOp>(
          loc, t.getType(), t, /*offset=*/Value(),
          b.getI64IntegerAttr(cfg.headDim), b.getF64FloatAttr(cfg.ropeTheta));
      return op.getResult();
    };
    q = rope(q);
    k = rope(k);
  }
  Value a = b.create<mlir::stlm::AttentionOp>(
      loc, q.getType(), cfg.mask, q, k, v, /*offset=*/Value(), cfg.heads,
      cfg.kvHeads, /*rope_theta=*/mlir::FloatAttr());
  Value x1 = add(x, proj(a, "wo"));
  // x += ffn(rmsnorm(x))
  Value n2 = rmsnorm(x1, w("ffn_norm"));
  Value h;
  if (cfg.ffn == Ffn::SwiGLU) {
    Value g = proj(n2, "w1"), u = proj(n2, "w3");
    h = b.create<mlir::stlm::SwiGLUOp>(loc, g.getType(), g, u);
  } else {
    Value g = proj(n2, "w1");
    h = b.create<mlir::stlm::GELUOp>(loc, g.getType(), g);
  }
  return add(x1, proj(h, "w2"));
}

/// One `stlm.repeat lo to hi`: `nameOf(layer, key)` gives the parameter
/// name a key resolves to in layer `layer`; per-layer names (holding the
/// run's first layer index) are read through a `{}` pattern, `shared.*`
/// names directly. `coreDeltas` adds the core layers' LoRA deltas
/// (`layers.{l}.lora.*`) to the shared weights that have them.
Value ModelBuilder::layerRun(
    Value x, int64_t lo, int64_t hi, const BlockConfig &cfg,
    const std::function<std::string(int64_t, const std::string &)> &nameOf,
    bool coreDeltas) {
  auto repeat = b.create<mlir::stlm::RepeatOp>(
      loc, x.getType(), b.getI64IntegerAttr(lo), b.getI64IntegerAttr(hi), x);
  Block *body = b.createBlock(&repeat.getBody());
  Value l = body->addArgument(b.getIndexType(), loc);
  Value h = body->addArgument(x.getType(), loc);

  std::string layerTag = "." + std::to_string(lo) + ".";
  auto read = [&](const std::string &name) -> Value {
    // A per-layer name contains ".<lo>." for the run's first layer; shared
    // names (shared.*) do not.
    size_t pos = name.find(layerTag);
    if (name.compare(0, 7, "shared.") == 0 || pos == std::string::npos ||
        !frozenPrefix.empty())
      return param(name);
    std::string pattern = name.substr(0, pos) + ".{}." +
                          name.substr(pos + layerTag.size());
    return b.create<mlir::stlm::LayerParamRefOp>(loc, paramType(name),
                                                 pattern, l);
  };
  Access access = [&](const std::string &key) {
    return read(nameOf(lo, key));
  };
  Delta delta = [&](const std::string &key, Value in) -> Value {
    std::string a = loraName(lo, key, 'a');
    if (!coreDeltas || !table.find(a))
      return Value();
    Value av = read(a), bv = read(loraName(lo, key, 'b'));
    int64_t out = llvm::cast<RankedTensorType>(bv.getType()).getShape()[0];
    return b.create<mlir::stlm::LowRankOp>(loc, f32(withLast(in, out)), in, av,
                                           bv);
  };
  Value next = block(h, cfg, access, delta);
  b.create<mlir::stlm::YieldOp>(loc, next);
  b.setInsertionPointAfter(repeat);
  return repeat.getResult();
}

Value ModelBuilder::coreLayers(Value x) {
  BlockConfig cfg;
  cfg.heads = s.core.heads;
  cfg.kvHeads = s.core.kvHeads;
  cfg.headDim = s.core.headDim();
  cfg.rope = true;
  cfg.ropeTheta = s.core.ropeTheta;
  cfg.mask = mlir::stlm::MaskKind::causal;
  cfg.ffn = s.core.ffn;
  cfg.eps = s.core.normEps;
  auto nameOf = [&](int64_t layer, const std::string &key) {
    return coreLayerNames(s, layer).get(key);
  };
  // Runs of layers with the same sharing pattern (a teacher's, one layer
  // each: it reads each layer's states by name).
  for (int64_t lo = 0; lo < s.core.layers;) {
    int64_t hi = lo + 1;
    while (frozenPrefix.empty() && hi < s.core.layers &&
           s.sharesFfn(hi) == s.sharesFfn(lo) &&
           s.sharesAttnOut(hi) == s.sharesAttnOut(lo))
      ++hi;
    x = layerRun(x, lo, hi, cfg, nameOf, /*coreDeltas=*/true);
    lo = hi;
  }
  return rmsnorm(x, param("norm"));
}

Value ModelBuilder::chunkBlocks(Value x, const std::string &prefix,
                                int64_t count, int64_t heads) {
  if (count == 0)
    return x;
  BlockConfig cfg;
  cfg.heads = heads;
  cfg.kvHeads = heads;
  cfg.headDim = s.embedder.byteWidth / heads;
  cfg.rope = false;
  cfg.mask = mlir::stlm::MaskKind::none;
  cfg.ffn = Ffn::SwiGLU;
  cfg.eps = s.core.normEps;
  auto nameOf = [&](int64_t index, const std::string &key) {
    return chunkBlockNames(prefix, index).get(key);
  };
  return layerRun(x, 0, count, cfg, nameOf, /*coreDeltas=*/false);
}

void ModelBuilder::declareParams() {
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToEnd(&model.getBody().front());
  for (const ParamInfo &p : table.params) {
    mlir::stlm::InitKind init = p.init == InitKind::Normal
                                    ? mlir::stlm::InitKind::normal
                                : p.init == InitKind::Zeros
                                    ? mlir::stlm::InitKind::zeros
                                    : mlir::stlm::InitKind::ones;
    b.create<mlir::stlm::ParamOp>(
        loc, b.getStringAttr(p.name), TypeAttr::get(f32(p.shape)),
        mlir::stlm::InitKindAttr::get(&ctx, init),
        p.init == InitKind::Normal ? b.getF64FloatAttr(p.std) : FloatAttr());
  }
}

func::FuncOp ModelBuilder::beginFunction(const std::string &name,
                                         ArrayRef<Type> inputs,
                                         ArrayRef<Type> results) {
  b.setInsertionPointToEnd(&model.getBody().front());
  auto fn = b.create<func::FuncOp>(loc, name,
                                   b.getFunctionType(inputs, results));
  b.setInsertionPointToStart(fn.addEntryBlock());
  return fn;
}

Value ModelBuilder::finishLoss(SmallVector<Value> terms,
                               SmallVector<double> weights) {
  if (terms.size() == 1 && weights[0] == 1.0)
    return terms[0];
  return b.create<mlir::stlm::WeightedSumOp>(
      loc, f32({}), terms, b.getF64ArrayAttr(weights));
}

/// A token model's logits [B, T, V] of `tokens` [B, T].
Value ModelBuilder::tokenLogits(Value tokens) {
  int64_t B = s.train.batch, T = s.core.context, V = s.embedder.vocabSize;
  Value x = b.create<mlir::stlm::EmbedOp>(loc, f32({B, T, s.core.width}),
                                          param("embed.tok"), tokens);
  Value n = coreLayers(x);
  Value head = param(s.tying.embedHead ? "embed.tok" : "head");
  return b.create<mlir::stlm::LogitsOp>(loc, f32({B, T, V}), n, head);
}

/// The teacher of a distill objective inside the student's model: its
/// weights as states `teacher.<name>` (loaded from its checkpoint, never
/// trained, not in the student's checkpoints) and @teacher_logits, its
/// logits on the student's batch.
void ModelBuilder::buildTeacher(const ModelSpec &teacher) {
  ModelSpec t = teacher; // at the student's batch and context
  t.train.batch = s.train.batch;
  t.core.context = s.core.context;
  ModelBuilder tb(ctx, t);
  tb.frozenPrefix = kTeacherPrefix;
  tb.buildFrozenLogits(model, kTeacherLogits);
}

void ModelBuilder::buildFrozenLogits(mlir::stlm::ModelOp into,
                                     const std::string &fn) {
  model = into;
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(&model.getBody().front());
    for (const ParamInfo &p : table.params)
      b.create<mlir::stlm::StateOp>(loc, b.getStringAttr(frozenPrefix + p.name),
                                    TypeAttr::get(f32(p.shape)));
  }
  int64_t B = s.train.batch, T = s.core.context, V = s.embedder.vocabSize;
  func::FuncOp f = beginFunction(fn, {i32({B, T})}, {f32({B, T, V})});
  b.create<func::ReturnOp>(loc, tokenLogits(f.getArgument(0)));
}

void ModelBuilder::buildTokenFunctions() {
  int64_t B = s.train.batch, T = s.core.context, V = s.embedder.vocabSize;
  Type ids = i32({B, T}), logitsTy = f32({B, T, V});

  func::FuncOp logitsFn = beginFunction("logits", {ids}, {logitsTy});
  b.create<func::ReturnOp>(loc, tokenLogits(logitsFn.getArgument(0)));

  SmallVector<Type> inputs = {ids, ids};
  bool masked = false;
  for (const ObjectiveSpec &o : s.objectives) {
    masked |= o.kind == ObjectiveKind::MaskedNextToken;
    if (o.kind == ObjectiveKind::Distill) {
      if (!o.teacherSpec) // readSpecFile and storedSpec fill it in
        llvm::report_fatal_error("a distill objective without its teacher's "
                                 "spec (stlm::resolveTeachers reads it)");
      buildTeacher(*o.teacherSpec);
    }
  }
  if (masked)
    inputs.push_back(i32({}));
  func::FuncOp lossFn = beginFunction("loss", inputs, {f32({})});
  Value tokens = lossFn.getArgument(0), targets = lossFn.getArgument(1);
  Value seed = masked ? lossFn.getArgument(2) : Value();
  Value plain; // logits of the unmasked input, computed once
  auto plainLogits = [&]() {
    if (!plain)
      plain = b.create<func::CallOp>(loc, logitsFn, ValueRange{tokens})
                  .getResult(0);
    return plain;
  };
  SmallVector<Value> terms;
  SmallVector<double> weights;
  for (const ObjectiveSpec &o : s.objectives) {
    Value term;
    switch (o.kind) {
    case ObjectiveKind::NextToken:
      term = b.create<mlir::stlm::NextTokenLossOp>(loc, f32({}),
                                                   plainLogits(), targets);
      break;
    case ObjectiveKind::MaskedNextToken: {
      auto m = b.create<mlir::stlm::MaskTokensOp>(
          loc, ids, i32({B, T}).clone(b.getI1Type()), tokens, seed,
          b.getF64FloatAttr(o.maskProb), b.getI64IntegerAttr(o.maskId));
      Value ml = b.create<func::CallOp>(loc, logitsFn,
                                        ValueRange{m.getMasked()})
                     .getResult(0);
      term = b.create<mlir::stlm::MaskedNextTokenLossOp>(
          loc, f32({}), ml, targets, m.getMask());
      break;
    }
    case ObjectiveKind::Distill:
      term = b.create<mlir::stlm::DistillLossOp>(
          loc, f32({}), plainLogits(),
          b.create<func::CallOp>(loc, kTeacherLogits, TypeRange{logitsTy},
                                 ValueRange{tokens})
              .getResult(0),
          targets, b.getF64FloatAttr(o.temperature),
          b.getF64FloatAttr(o.alpha));
      break;
    case ObjectiveKind::ChunkBytes:
    case ObjectiveKind::Reconstruction:
      llvm_unreachable("chunk objectives need the byte_chunk head");
    }
    terms.push_back(term);
    weights.push_back(o.weight);
  }
  b.create<func::ReturnOp>(loc, finishLoss(terms, weights));
}

void ModelBuilder::buildBytePoolFunctions() {
  const EmbedderSpec &e = s.embedder;
  int64_t B = s.train.batch, T = s.core.context, L = e.chunkBytes,
          db = e.byteWidth, D = s.core.width, N = s.windowBytes();
  Type chunksTy = i32({B, T, L}), hidden = f32({B, T, D}),
       logitsTy = f32({B, T, L, 258});

  // @encode: chunks -> [B, T, D]
  func::FuncOp encode = beginFunction("encode", {chunksTy}, {hidden});
  Value chunks = encode.getArgument(0);
  Value e0 = b.create<mlir::stlm::EmbedOp>(loc, f32({B, T, L, db}),
                                           param("embed.bytes"), chunks);
  Value x = add(e0, param("embed.slots"));
  x = chunkBlocks(x, "embed.enc", e.encoderLayers, e.encoderHeads);
  mlir::stlm::PoolKind pool = e.pool == Pool::Mean
                                  ? mlir::stlm::PoolKind::mean
                              : e.pool == Pool::MaskedMean
                                  ? mlir::stlm::PoolKind::masked_mean
                                  : mlir::stlm::PoolKind::max;
  Value pooled = b.create<mlir::stlm::PoolOp>(
      loc, f32({B, T, db}), pool, x,
      pool == mlir::stlm::PoolKind::masked_mean ? chunks : Value());
  b.create<func::ReturnOp>(loc, linear(pooled, param("embed.proj")));

  // @core: [B, T, D] -> [B, T, D]
  func::FuncOp core = beginFunction("core", {hidden}, {hidden});
  b.create<func::ReturnOp>(loc, coreLayers(core.getArgument(0)));

  // @decode: [B, T, D] -> [B, T, L, 258]
  func::FuncOp decode = beginFunction("decode", {hidden}, {logitsTy});
  Value p = linear(decode.getArgument(0), param("head.proj"));
  Value slots = b.create<mlir::stlm::SplitSlotsOp>(loc, f32({B, T, L, db}), p);
  Value y = add(slots, param("head.slots"));
  y = chunkBlocks(y, "head.dec", s.head.decoderLayers, s.head.decoderHeads);
  y = rmsnorm(y, param("head.norm"));
  b.create<func::ReturnOp>(
      loc, b.create<mlir::stlm::LogitsOp>(loc, logitsTy, y, param("head.out"))
               .getResult());

  // Inputs shared by @logits and @loss.
  // (`given`: the bytes carry the chunk starts, stlm.chunk's kStartFlag.)
  SmallVector<Type> inputs = {i32({B, N})};
  auto chunk = [&](func::FuncOp fn) {
    mlir::stlm::ChunkMode mode =
        e.chunking == Chunking::Fixed   ? mlir::stlm::ChunkMode::fixed
        : e.chunking == Chunking::Given ? mlir::stlm::ChunkMode::given
                                        : mlir::stlm::ChunkMode::words;
    auto op = b.create<mlir::stlm::ChunkOp>(
        loc, chunksTy, i32({B}), mode, fn.getArgument(0),
        e.chunking == Chunking::Fixed ? b.getI64IntegerAttr(e.stride)
                                      : IntegerAttr());
    return std::make_pair(op.getChunks(), op.getCount());
  };
  auto call = [&](func::FuncOp fn, Value arg) {
    return b.create<func::CallOp>(loc, fn, ValueRange{arg}).getResult(0);
  };

  func::FuncOp logitsFn = beginFunction("logits", inputs, {logitsTy});
  Value c = chunk(logitsFn).first;
  b.create<func::ReturnOp>(loc, call(decode, call(core, call(encode, c))));

  func::FuncOp lossFn = beginFunction("loss", inputs, {f32({})});
  auto [lc, count] = chunk(lossFn);
  Value encoded = call(encode, lc);
  SmallVector<Value> terms;
  SmallVector<double> weights;
  for (const ObjectiveSpec &o : s.objectives) {
    Value term;
    if (o.kind == ObjectiveKind::ChunkBytes) {
      Value next = call(decode, call(core, encoded));
      term = b.create<mlir::stlm::ChunkBytesLossOp>(
          loc, f32({}), next, lc, count, b.getBoolAttr(o.maskPad));
    } else {
      assert(o.kind == ObjectiveKind::Reconstruction);
      Value same = call(decode, encoded);
      term = b.create<mlir::stlm::ReconstructionLossOp>(
          loc, f32({}), same, lc, count, b.getBoolAttr(o.maskPad));
    }
    terms.push_back(term);
    weights.push_back(o.weight);
  }
  b.create<func::ReturnOp>(loc, finishLoss(terms, weights));
}

OwningOpRef<ModuleOp> ModelBuilder::build() {
  ctx.getOrLoadDialect<mlir::stlm::STLMDialect>();
  ctx.getOrLoadDialect<func::FuncDialect>();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  model = b.create<mlir::stlm::ModelOp>(loc,
                                        b.getStringAttr(s.symbolName()));
  model.getBody().emplaceBlock();
  const TrainSpec &t = s.train;
  model->setAttr(
      "stlm.train",
      b.getDictionaryAttr({
          b.getNamedAttr("batch", b.getI64IntegerAttr(t.batch)),
          b.getNamedAttr("steps", b.getI64IntegerAttr(t.steps)),
          b.getNamedAttr("lr", b.getF64FloatAttr(t.lr)),
          b.getNamedAttr("min_lr", b.getF64FloatAttr(t.minLr)),
          b.getNamedAttr("warmup", b.getI64IntegerAttr(t.warmup)),
          b.getNamedAttr("schedule", b.getStringAttr(toString(t.schedule))),
          b.getNamedAttr("beta1", b.getF64FloatAttr(t.beta1)),
          b.getNamedAttr("beta2", b.getF64FloatAttr(t.beta2)),
          b.getNamedAttr("eps", b.getF64FloatAttr(t.eps)),
          b.getNamedAttr("weight_decay", b.getF64FloatAttr(t.weightDecay)),
          b.getNamedAttr("grad_clip", b.getF64FloatAttr(t.gradClip)),
          b.getNamedAttr("accumulate", b.getI64IntegerAttr(t.accumulate)),
          b.getNamedAttr("seed", b.getI64IntegerAttr(t.seed)),
          b.getNamedAttr("precision",
                         b.getStringAttr(toString(t.precision))),
      }));
  declareParams();
  if (s.embedder.kind == EmbedderKind::Token)
    buildTokenFunctions();
  else
    buildBytePoolFunctions();
  return module;
}

} // namespace

OwningOpRef<ModuleOp> buildModel(MLIRContext &context, const ModelSpec &spec) {
  return ModelBuilder(context, spec).build();
}

} // namespace stlm
