//===- KernelPlan.cpp - which kernels compute each op, and how ------------===//

#include "codegen/artifact/KernelPlan.h"

#include "support/QuantTiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cstdio>
#include <optional>

using namespace mlir;
namespace ir = mlir::stlm;

namespace stlm::codegen {

std::string KernelSpec::key() const {
  std::string k = generator;
  for (const auto &[name, value] : params)
    k += " " + name + "=" + value;
  return k;
}

std::string KernelPlan::explainUnsupported(const std::string &model) const {
  std::string text =
      "'" + model + "' has ops the native path cannot compile yet:";
  for (const auto &[what, count] : unsupported)
    text += "\n  " + what + " (" + std::to_string(count) + " ops)";
  return text;
}

namespace {

std::vector<int64_t> shapeOf(Value v) {
  auto t = llvm::cast<RankedTensorType>(v.getType());
  return {t.getShape().begin(), t.getShape().end()};
}
int64_t numel(Value v) {
  return llvm::cast<RankedTensorType>(v.getType()).getNumElements();
}
/// Product of all dimensions but the last `keep`.
int64_t leading(Value v, size_t keep) {
  std::vector<int64_t> s = shapeOf(v);
  int64_t n = 1;
  for (size_t i = 0; i + keep < s.size(); ++i)
    n *= s[i];
  return n;
}
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}
std::string num(int64_t x) { return std::to_string(x); }
/// Round-trips `x` exactly (a mask probability decides masks bit-exactly).
std::string exact(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

using Calls = std::vector<KernelCall>;
using Arg = KernelArg;

/// The constant a splat tensor holds, if `v` is one.
std::optional<double> splatOf(Value v) {
  DenseElementsAttr attr;
  if (matchPattern(v, m_Constant(&attr)) && attr.isSplat() &&
      attr.getElementType().isF32())
    return attr.getSplatValue<APFloat>().convertToDouble();
  return std::nullopt;
}

struct Planner {
  std::string why;   // set when an op has no kernel
  bool bf16 = false; // the model's matmuls take bfloat16 inputs

  /// c[M, N] = … with reduction K (any shape: the kernel guards the tiles
  /// past the edge).
  KernelSpec matmul(const char *form, int64_t m, int64_t n, int64_t k) {
    // The few rows of generation: a matvec that streams the weights once.
    KernelSpec spec;
    if (std::string(form) == "nt" && m <= kMatVecMaxRows && n % 4 == 0)
      spec = {"stlm_matvec", {{"m", num(m)}, {"n", num(n)}, {"k", num(k)}}};
    else
      spec = {"stlm_matmul",
              {{"form", form}, {"m", num(m)}, {"n", num(n)}, {"k", num(k)}}};
    if (bf16)
      spec.params.push_back({"precision", "bf16"});
    return spec;
  }
  /// The backward materialises the probabilities and their gradient while
  /// those it holds at once take at most kMaterialisedBytes: 2·H·T·S
  /// floats when it runs one batch element at a time (as many keys as
  /// queries), 2·B·H·T·S otherwise. That is a fifth faster than the
  /// blocked schedule on ref-3m's shape and a seventh on stlm-10m's
  /// grouped heads (bench/attention.cpp). Longer
  /// contexts get the blocked schedule (O(T + S) scratch per thread),
  /// which needs a head of two channels or more for its row statistics.
  static constexpr int64_t kMaterialisedBytes = int64_t(16) << 20;
  /// Bidirectional attention over at most this many positions (the slots
  /// of a chunk) runs stlm_chunk_attention: a chunk per vector lane.
  static constexpr int64_t kChunkSlots = 16;
  KernelSpec attention(const char *gen, ir::MaskKind mask, Value q, Value k,
                       int64_t heads, int64_t kv, bool backward) {
    std::vector<int64_t> qs = shapeOf(q), ks = shapeOf(k);
    int64_t headDim = qs.back() / heads;
    int64_t batch = leading(q, 2), time = qs[qs.size() - 2],
            keys = ks[ks.size() - 2];
    // Inside chunks (a few slots, no mask): the chunks are the vector lanes.
    if (mask != ir::MaskKind::causal && time == keys &&
        time <= kChunkSlots)
      return {backward ? "stlm_chunk_attention_grad" : "stlm_chunk_attention",
              {{"batch", num(batch)},
               {"time", num(time)},
               {"keys", num(keys)},
               {"heads", num(heads)},
               {"kv_heads", num(kv)},
               {"head_dim", num(headDim)}}};
    bool batchwise = time == keys;
    int64_t held = 2 * 4 * heads * time * keys * (batchwise ? 1 : batch);
    bool blocked = headDim >= 2 && held > kMaterialisedBytes;
    KernelSpec spec{
        gen,
        {{"batch", num(batch)},
         {"time", num(time)},
         {"keys", num(keys)},
         {"heads", num(heads)},
         {"kv_heads", num(kv)},
         {"head_dim", num(headDim)},
         {"causal", mask == ir::MaskKind::causal ? "true" : "false"}}};
    if (backward)
      spec.params.push_back({"blocked", blocked ? "true" : "false"});
    return spec;
  }
  /// The position offset of a RoPE or attention op: its operand, or the
  /// constant `dflt` without one.
  static Arg offsetOf(Value offset, int64_t dflt) {
    return offset ? Arg::scalar(offset) : Arg::i32(dflt);
  }
  /// Attention's default offset S − T (queries are the last T keys).
  static int64_t keysAfter(Value q, Value k) {
    std::vector<int64_t> qs = shapeOf(q), ks = shapeOf(k);
    return ks[ks.size() - 2] - qs[qs.size() - 2];
  }
  /// Why an attention with RoPE folded in (stlm-fuse's rope-into-attention,
  /// which only the CUDA target asks for) has no host kernel.
  static constexpr const char *kRopeInside =
      "RoPE folded into the attention (rope_theta) is the CUDA target's "
      "fusion; the host kernels take stlm.rope and stlm.attention apart";
  Calls none(std::string reason) {
    why = std::move(reason);
    return {};
  }

  /// The kernel calls of `op`: none for driver work; `why` set (and none)
  /// when there is no kernel.
  Calls plan(Operation *op) {
    why.clear();
    bf16 = ir::hasBF16Matmuls(op);
    return llvm::TypeSwitch<Operation *, Calls>(op)
        .Case<ir::ParamRefOp, ir::StateRefOp, ir::AssignOp, ir::SplitSlotsOp,
              ir::MergeSlotsOp, ir::LRScheduleOp, ir::WeightedSumOp,
              arith::ConstantOp, arith::AddIOp, func::ReturnOp, func::CallOp,
              ir::WriteRowsOp>([](Operation *) { return Calls{}; })
        .Case([&](ir::RepeatOp) {
          return none("layers must be unrolled first (stlm-add-decode "
                      "unrolls @logits)");
        })
        .Case([&](arith::MulFOp o) -> Calls {
          int64_t n = numel(o.getResult());
          if (llvm::cast<RankedTensorType>(o.getType()).getRank() == 0)
            return {}; // a driver scalar
          // x · c for a splat constant c.
          Value x = o.getLhs();
          std::optional<double> factor = splatOf(o.getRhs());
          if (!factor) {
            x = o.getRhs();
            factor = splatOf(o.getLhs());
          }
          if (!factor)
            return none("only products with a splat constant are lowered");
          return {{{"stlm_scale", {{"n", num(n)}}},
                   {Arg::operand(x, 1), Arg::f32(*factor), Arg::result(0, 1)}}};
        })
        .Case([&](ir::EmbedOp o) -> Calls {
          std::vector<int64_t> t = shapeOf(o.getTable());
          return {{{"stlm_embed",
                    {{"vocab", num(t[0])},
                     {"width", num(t[1])},
                     {"count", num(numel(o.getIds()))}}},
                   {Arg::operand(o.getTable(), 2), Arg::operand(o.getIds(), 1),
                    Arg::result(0, 2)}}};
        })
        .Case([&](ir::EmbedGradOp o) -> Calls {
          std::vector<int64_t> t = shapeOf(o.getDtable());
          return {{{"stlm_embed_grad",
                    {{"vocab", num(t[0])},
                     {"width", num(t[1])},
                     {"count", num(numel(o.getIds()))}}},
                   {Arg::operand(o.getIds(), 1), Arg::operand(o.getDy(), 2),
                    Arg::result(0, 2)}}};
        })
        .Case([&](ir::RMSNormOp o) -> Calls {
          return {{{"stlm_rmsnorm",
                    {{"rows", num(leading(o.getX(), 1))},
                     {"width", num(shapeOf(o.getX()).back())},
                     {"eps", num(o.getEps().convertToDouble())}}},
                   {Arg::operand(o.getX(), 2), Arg::operand(o.getWeight(), 1),
                    Arg::result(0, 2)}}};
        })
        .Case([&](ir::RMSNormGradOp o) -> Calls {
          return {{{"stlm_rmsnorm_grad",
                    {{"rows", num(leading(o.getX(), 1))},
                     {"width", num(shapeOf(o.getX()).back())},
                     {"eps", num(o.getEps().convertToDouble())}}},
                   {Arg::operand(o.getX(), 2), Arg::operand(o.getWeight(), 1),
                    Arg::operand(o.getDy(), 2), Arg::result(0, 2),
                    Arg::result(1, 1)}}};
        })
        .Case<ir::LinearOp, ir::LogitsOp>([&](auto o) -> Calls {
          Value x = o->getOperand(0), w = o->getOperand(1);
          return {{matmul("nt", leading(x, 1), shapeOf(w)[0], shapeOf(w)[1]),
                   {Arg::operand(x, 2), Arg::operand(w, 2),
                    Arg::result(0, 2)}}};
        })
        .Case([&](ir::QLinearOp o) -> Calls {
          // support/Quantize's arithmetic, bit for bit: on the weights in
          // tiles where they tile (the runtime arranges them so, as the
          // manifest's "layout" says), row by row otherwise.
          int64_t out = shapeOf(o.getWeight())[0],
                  in = shapeOf(o.getX()).back();
          bool tiles = tiledWeight(o.getScheme(), out, in, o.getGroup());
          return {
              {{std::string(tiles ? "stlm_qmatvec_tiled_" : "stlm_qmatvec_") +
                    o.getScheme().str(),
                {{"m", num(leading(o.getX(), 1))},
                 {"n", num(out)},
                 {"k", num(in)},
                 {"group", num(o.getGroup())}}},
               {Arg::operand(o.getX(), 2),
                Arg::operand(o.getWeight(), tiles ? 1 : 2),
                Arg::operand(o.getScale(), tiles ? 1 : 2), Arg::result(0, 2)}}};
        })
        .Case([&](ir::LinearFusedOp o) -> Calls {
          std::vector<int64_t> w = shapeOf(o.getWeight());
          int64_t rows = leading(o.getX(), 1);
          if (rows <= kMatVecMaxRows)
            return none("fused epilogues are for matmuls of more than " +
                        std::to_string(kMatVecMaxRows) + " rows");
          KernelCall c{matmul("nt", rows, w[0], w[1]),
                       {Arg::operand(o.getX(), 2),
                        Arg::operand(o.getWeight(), 2)}};
          if (o.getResidual()) {
            c.spec.generator = "stlm_matmul_residual";
            c.args.push_back(Arg::operand(o.getResidual(), 2));
          }
          c.spec.params.push_back({"epilogue", o.getActivation().str()});
          c.args.push_back(Arg::result(0, 2));
          return {c};
        })
        .Case([&](ir::LinearGradOp o) -> Calls {
          // dx = dy · W (+ addend, or ⊙ GELU'(gelu_input)) (nn); dW = dyᵀ · x
          // (tn).
          int64_t rows = leading(o.getX(), 1);
          std::vector<int64_t> w = shapeOf(o.getWeight()); // [out, in]
          KernelCall dx{matmul("nn", rows, w[1], w[0]),
                        {Arg::operand(o.getDy(), 2),
                         Arg::operand(o.getWeight(), 2)}};
          if (Value extra = o.getAddend() ? o.getAddend() : o.getGeluInput()) {
            dx.spec.generator = "stlm_matmul_residual";
            if (o.getGeluInput())
              dx.spec.params.push_back({"epilogue", "gelu_grad"});
            dx.args.push_back(Arg::operand(extra, 2));
          }
          dx.args.push_back(Arg::result(0, 2));
          KernelCall dw{matmul("tn", w[0], w[1], rows),
                        {Arg::operand(o.getDy(), 2), Arg::operand(o.getX(), 2),
                         Arg::result(1, 2)}};
          return {dx, dw};
        })
        .Case([&](ir::LowRankMergeOp o) -> Calls {
          // w + b · a (nn: b [Out, R] times a [R, In], w the residual).
          std::vector<int64_t> w = shapeOf(o.getWeight());
          KernelCall c{matmul("nn", w[0], w[1], shapeOf(o.getA())[0]),
                       {Arg::operand(o.getB(), 2), Arg::operand(o.getA(), 2),
                        Arg::operand(o.getWeight(), 2), Arg::result(0, 2)}};
          c.spec.generator = "stlm_matmul_residual";
          return {c};
        })
        .Case([&](ir::LowRankMergeGradOp o) -> Calls {
          // da = bᵀ · g (tn); db = g · aᵀ (nt).
          std::vector<int64_t> g = shapeOf(o.getDmerged()); // [Out, In]
          int64_t r = shapeOf(o.getA())[0];
          return {{matmul("tn", r, g[1], g[0]),
                   {Arg::operand(o.getB(), 2), Arg::operand(o.getDmerged(), 2),
                    Arg::result(0, 2)}},
                  {matmul("nt", g[0], r, g[1]),
                   {Arg::operand(o.getDmerged(), 2), Arg::operand(o.getA(), 2),
                    Arg::result(1, 2)}}};
        })
        .Case<ir::RoPEOp, ir::RoPEGradOp>([&](auto o) -> Calls {
          Value x = op->getOperand(0);
          std::vector<int64_t> s = shapeOf(x);
          return {{{"stlm_rope",
                    {{"batch", num(leading(x, 2))},
                     {"time", num(s[s.size() - 2])},
                     {"width", num(s.back())},
                     {"head_dim", num(int64_t(o.getHeadDim()))},
                     {"theta", num(o.getTheta().convertToDouble())},
                     {"inverse",
                      isa<ir::RoPEGradOp>(op) ? "true" : "false"}}},
                   {Arg::operand(x, 3), offsetOf(o.getOffset(), 0),
                    Arg::result(0, 3)}}};
        })
        .Case([&](ir::AttentionOp o) -> Calls {
          if (o.getRopeTheta())
            return none(kRopeInside);
          return {{attention("stlm_attention", o.getMask(), o.getQ(), o.getK(),
                             o.getHeads(), o.getKvHeads(),
                             /*backward=*/false),
                   {Arg::operand(o.getQ(), 3), Arg::operand(o.getK(), 3),
                    Arg::operand(o.getV(), 3),
                    offsetOf(o.getOffset(), keysAfter(o.getQ(), o.getK())),
                    Arg::result(0, 3)}}};
        })
        .Case([&](ir::AttentionGradOp o) -> Calls {
          if (o.getRopeTheta())
            return none(kRopeInside);
          return {{attention("stlm_attention_grad", o.getMask(), o.getQ(),
                             o.getK(), o.getHeads(), o.getKvHeads(),
                             /*backward=*/true),
                   {Arg::operand(o.getQ(), 3), Arg::operand(o.getK(), 3),
                    Arg::operand(o.getV(), 3), Arg::operand(o.getDy(), 3),
                    offsetOf(o.getOffset(), keysAfter(o.getQ(), o.getK())),
                    Arg::result(0, 3), Arg::result(1, 3),
                    Arg::result(2, 3)}}};
        })
        .Case([&](ir::SwiGLUOp o) -> Calls {
          return {{{"stlm_swiglu", {{"n", num(numel(o.getResult()))}}},
                   {Arg::operand(o.getGate(), 1), Arg::operand(o.getUp(), 1),
                    Arg::result(0, 1)}}};
        })
        .Case([&](ir::SwiGLUGradOp o) -> Calls {
          return {{{"stlm_swiglu_grad", {{"n", num(numel(o.getDy()))}}},
                   {Arg::operand(o.getGate(), 1), Arg::operand(o.getUp(), 1),
                    Arg::operand(o.getDy(), 1), Arg::result(0, 1),
                    Arg::result(1, 1)}}};
        })
        .Case([&](ir::GELUOp o) -> Calls {
          return {{{"stlm_gelu", {{"n", num(numel(o.getResult()))}}},
                   {Arg::operand(o.getX(), 1), Arg::result(0, 1)}}};
        })
        .Case([&](ir::GELUGradOp o) -> Calls {
          return {{{"stlm_gelu_grad", {{"n", num(numel(o.getDy()))}}},
                   {Arg::operand(o.getX(), 1), Arg::operand(o.getDy(), 1),
                    Arg::result(0, 1)}}};
        })
        .Case([&](ir::AddOp o) -> Calls {
          // Also @accumulate's sum into a state, in place.
          return {{{"stlm_add",
                    {{"n", num(numel(o.getLhs()))},
                     {"m", num(numel(o.getRhs()))}}},
                   {Arg::operand(o.getLhs(), 1), Arg::operand(o.getRhs(), 1),
                    Arg::result(0, 1)}}};
        })
        .Case([&](ir::SumLeadingOp o) -> Calls {
          int64_t width = numel(o.getResult());
          return {{{"stlm_sum_leading",
                    {{"rows", num(numel(o.getX()) / width)},
                     {"width", num(width)}}},
                   {Arg::operand(o.getX(), 1), Arg::result(0, 1)}}};
        })
        .Case<ir::NextTokenLossOp, ir::MaskedNextTokenLossOp,
              ir::NextTokenLossGradOp, ir::MaskedNextTokenLossGradOp>(
            [&](auto o) -> Calls {
              using OpTy = decltype(o);
              constexpr bool masked =
                  std::is_same_v<OpTy, ir::MaskedNextTokenLossOp> ||
                  std::is_same_v<OpTy, ir::MaskedNextTokenLossGradOp>;
              constexpr bool grad =
                  std::is_same_v<OpTy, ir::NextTokenLossGradOp> ||
                  std::is_same_v<OpTy, ir::MaskedNextTokenLossGradOp>;
              int64_t positions = numel(o.getTargets());
              KernelCall c{
                  {grad ? "stlm_cross_entropy_grad" : "stlm_cross_entropy",
                   {{"positions", num(positions)},
                    {"vocab", num(shapeOf(o.getLogits()).back())}}},
                  {Arg::operand(o.getLogits(), 2),
                   Arg::operand(o.getTargets(), 1)}};
              // The positions that count: those stlm.mask_tokens masked,
              // or all of them.
              if constexpr (masked)
                c.args.push_back(Arg::operand(o.getMask(), 1));
              else
                c.args.push_back(Arg::ones(positions));
              if constexpr (grad)
                c.args.push_back(Arg::scalar(o.getDloss()));
              c.args.push_back(Arg::result(0, grad ? 2 : 0));
              return {c};
            })
        .Case<ir::DistillLossOp, ir::DistillLossGradOp>([&](auto o) -> Calls {
          constexpr bool grad =
              std::is_same_v<decltype(o), ir::DistillLossGradOp>;
          KernelCall c{
              {grad ? "stlm_distill_grad" : "stlm_distill",
               {{"positions", num(numel(o.getTargets()))},
                {"vocab", num(shapeOf(o.getLogits()).back())},
                {"temperature",
                 exact(o.getTemperatureAttr().getValueAsDouble())},
                {"alpha", exact(o.getAlphaAttr().getValueAsDouble())}}},
              {Arg::operand(o.getLogits(), 2), Arg::operand(o.getTeacher(), 2),
               Arg::operand(o.getTargets(), 1)}};
          if constexpr (grad)
            c.args.push_back(Arg::scalar(o.getDloss()));
          c.args.push_back(Arg::result(0, grad ? 2 : 0));
          return {c};
        })
        .Case([&](ir::ChunkOp o) -> Calls {
          std::vector<int64_t> c = shapeOf(o.getChunks());
          KernelSpec spec{"stlm_chunk",
                          {{"batch", num(c[0])},
                           {"length", num(shapeOf(o.getBytes())[1])},
                           {"chunks", num(c[1])},
                           {"slots", num(c[2])}}};
          switch (o.getMode()) {
          case ir::ChunkMode::fixed:
            spec.params.push_back({"mode", "fixed"});
            spec.params.push_back({"stride", num(int64_t(*o.getStride()))});
            break;
          case ir::ChunkMode::words:
            spec.params.push_back({"mode", "words"});
            break;
          case ir::ChunkMode::given:
            spec.params.push_back({"mode", "given"});
            break;
          }
          return {{spec,
                   {Arg::operand(o.getBytes(), 2), Arg::result(0, 3),
                    Arg::result(1, 1)}}};
        })
        .Case([&](ir::PoolOp o) -> Calls {
          std::vector<int64_t> x = shapeOf(o.getX());
          KernelSpec spec{"stlm_pool",
                          {{"rows", num(leading(o.getX(), 2))},
                           {"slots", num(x[x.size() - 2])},
                           {"width", num(x.back())}}};
          Calls c{{spec, {Arg::operand(o.getX(), 3)}}};
          if (o.getKind() == ir::PoolKind::masked_mean) {
            c[0].spec.generator = "stlm_pool_masked";
            c[0].args.push_back(Arg::operand(o.getIds(), 2));
          } else {
            c[0].spec.params.push_back(
                {"kind", o.getKind() == ir::PoolKind::max ? "max" : "mean"});
          }
          c[0].args.push_back(Arg::result(0, 2));
          return c;
        })
        .Case([&](ir::PoolGradOp o) -> Calls {
          std::vector<int64_t> x = shapeOf(o.getX());
          KernelSpec spec{"stlm_pool_grad",
                          {{"rows", num(leading(o.getX(), 2))},
                           {"slots", num(x[x.size() - 2])},
                           {"width", num(x.back())}}};
          if (o.getKind() == ir::PoolKind::masked_mean) {
            spec.generator = "stlm_pool_masked_grad";
            return {{spec,
                     {Arg::operand(o.getIds(), 2), Arg::operand(o.getDy(), 2),
                      Arg::result(0, 3)}}};
          }
          spec.params.push_back(
              {"kind", o.getKind() == ir::PoolKind::max ? "max" : "mean"});
          return {{spec,
                   {Arg::operand(o.getX(), 3), Arg::operand(o.getDy(), 2),
                    Arg::result(0, 3)}}};
        })
        .Case<ir::ChunkBytesLossOp, ir::ReconstructionLossOp,
              ir::ChunkBytesLossGradOp, ir::ReconstructionLossGradOp>(
            [&](auto o) -> Calls {
              using OpTy = decltype(o);
              constexpr bool next =
                  std::is_same_v<OpTy, ir::ChunkBytesLossOp> ||
                  std::is_same_v<OpTy, ir::ChunkBytesLossGradOp>;
              constexpr bool grad =
                  std::is_same_v<OpTy, ir::ChunkBytesLossGradOp> ||
                  std::is_same_v<OpTy, ir::ReconstructionLossGradOp>;
              if (!o.getCount())
                return none("a chunk objective is compiled with the count "
                            "of stlm.chunk (the frontend passes it)");
              std::vector<int64_t> c = shapeOf(o.getChunks());
              KernelCall call{
                  {grad ? "stlm_chunk_cross_entropy_grad"
                        : "stlm_chunk_cross_entropy",
                   {{"positions", num(numel(o.getChunks()))},
                    {"vocab", num(shapeOf(o.getLogits()).back())},
                    {"batch", num(c[0])},
                    {"chunks", num(c[1])},
                    {"slots", num(c[2])},
                    {"next", next ? "true" : "false"},
                    {"mask_pad", o.getMaskPad() ? "true" : "false"}}},
                  {Arg::operand(o.getLogits(), 2),
                   Arg::operand(o.getChunks(), 1),
                   Arg::operand(o.getCount(), 1)}};
              if constexpr (grad)
                call.args.push_back(Arg::scalar(o.getDloss()));
              call.args.push_back(Arg::result(0, grad ? 2 : 0));
              return {call};
            })
        .Case([&](ir::MaskTokensOp o) -> Calls {
          return {{{"stlm_mask_tokens",
                    {{"count", num(numel(o.getIds()))},
                     {"prob", exact(o.getProb().convertToDouble())},
                     {"mask_id", num(int64_t(o.getMaskId()))}}},
                   {Arg::operand(o.getIds(), 1), Arg::scalar(o.getSeed()),
                    Arg::result(0, 1), Arg::result(1, 1)}}};
        })
        .Case([&](ir::ClipGradNormOp o) -> Calls {
          // Every sum of squares, then (when it clips) every gradient
          // scaled in place: the clipped gradients are the gradients.
          Calls c;
          for (Value g : o.getGrads())
            c.push_back({{"stlm_sum_squares", {{"n", num(numel(g))}}},
                         {Arg::operand(g, 1), Arg::driver()}});
          if (o.getMaxNorm().convertToDouble() > 0)
            for (auto [i, g] : llvm::enumerate(o.getGrads()))
              c.push_back({{"stlm_scale", {{"n", num(numel(g))}}},
                           {Arg::operand(g, 1), Arg::driver(),
                            Arg::result(static_cast<unsigned>(i), 1)}});
          return c;
        })
        .Case([&](ir::AdamWOp o) -> Calls {
          // In place: new param, m and v are the slots read.
          return {{{"stlm_adamw",
                    {{"n", num(numel(o.getParam()))},
                     {"beta1", num(o.getBeta1().convertToDouble())},
                     {"beta2", num(o.getBeta2().convertToDouble())},
                     {"eps", num(o.getEps().convertToDouble())}}},
                   {Arg::operand(o.getParam(), 1), Arg::operand(o.getGrad(), 1),
                    Arg::operand(o.getM(), 1), Arg::operand(o.getV(), 1),
                    Arg::scalar(o.getLr()),
                    Arg::f32(o.getWeightDecay().convertToDouble()),
                    Arg::scalar(o.getStep()), Arg::result(0, 1),
                    Arg::result(1, 1), Arg::result(2, 1)}}};
        })
        .Default([&](Operation *) { return none("no kernel yet"); });
  }
};

} // namespace

bool tiledWeight(llvm::StringRef scheme, int64_t out, int64_t in,
                 int64_t group) {
  return quant::tilesFor(scheme == "int4", out, in, group);
}

std::vector<KernelCall> kernelCallsFor(Operation *op, std::string &why) {
  Planner planner;
  Calls calls = planner.plan(op);
  why = planner.why;
  return calls;
}

std::vector<KernelSpec> kernelsFor(Operation *op, std::string &why) {
  std::vector<KernelSpec> specs;
  for (KernelCall &c : kernelCallsFor(op, why))
    specs.push_back(std::move(c.spec));
  return specs;
}

std::vector<func::FuncOp> compiledFunctions(ir::ModelOp model) {
  std::vector<func::FuncOp> fns;
  for (StringRef name :
       {"grad", "train_step", "accumulate", "apply", "eval", "logits",
        "prefill", "decode_step", "prefill_batch", "decode_batch"})
    for (auto f : model.getBody().front().getOps<func::FuncOp>())
      if (f.getSymName() == name && !f.isExternal())
        fns.push_back(f);
  return fns;
}

KernelPlan planKernels(ir::ModelOp model) {
  KernelPlan plan;
  for (func::FuncOp f : compiledFunctions(model)) {
    f.walk([&](Operation *op) {
      if (op == f.getOperation())
        return;
      std::string why;
      std::vector<KernelSpec> specs = kernelsFor(op, why);
      if (!why.empty()) {
        ++plan.unsupported[op->getName().getStringRef().str() + ": " + why];
        return;
      }
      if (specs.empty()) {
        ++plan.driverOps;
        return;
      }
      ++plan.kernelOps;
      for (KernelSpec &k : specs) {
        auto [it, inserted] = plan.index.emplace(k.key(), plan.kernels.size());
        if (inserted) {
          plan.kernels.push_back(std::move(k));
          plan.uses.push_back(0);
        }
        ++plan.uses[it->second];
      }
    });
  }
  return plan;
}

} // namespace stlm::codegen
