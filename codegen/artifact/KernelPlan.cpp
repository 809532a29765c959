//===- KernelPlan.cpp - which kernel runs each op of a training step ------===//

#include "codegen/artifact/KernelPlan.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cstdio>

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

using Specs = std::vector<KernelSpec>;

struct Planner {
  std::string why; // set when an op has no kernel
  bool bf16 = false; // the model's matmuls take bfloat16 inputs

  /// c[M, N] = … with reduction K (any shape: the kernel guards the tiles
  /// past the edge).
  Specs matmul(const char *form, int64_t m, int64_t n, int64_t k) {
    // The few rows of generation: a matvec that streams the weights once.
    KernelSpec spec;
    if (std::string(form) == "nt" && m < 8 && n % 4 == 0)
      spec = {"stlm_matvec", {{"m", num(m)}, {"n", num(n)}, {"k", num(k)}}};
    else
      spec = {"stlm_matmul",
              {{"form", form}, {"m", num(m)}, {"n", num(n)}, {"k", num(k)}}};
    if (bf16)
      spec.params.push_back({"precision", "bf16"});
    return {spec};
  }
  /// The backward materialises the probabilities and their gradient while
  /// those it holds at once take at most kMaterialisedBytes: 2·H·T·S
  /// floats when it runs one batch element at a time (a kv head per query
  /// head, as many keys as queries), 2·B·H·T·S otherwise. That is about a
  /// quarter faster on ref-3m's shape (bench/attention.cpp). Longer
  /// contexts get the blocked schedule (O(T + S) scratch per thread),
  /// which needs a head of two channels or more for its row statistics.
  static constexpr int64_t kMaterialisedBytes = int64_t(16) << 20;
  Specs attention(const char *gen, ir::MaskKind mask, Value q, Value k,
                  int64_t heads, int64_t kv, bool backward) {
    std::vector<int64_t> qs = shapeOf(q), ks = shapeOf(k);
    int64_t headDim = qs.back() / heads;
    int64_t batch = leading(q, 2), time = qs[qs.size() - 2],
            keys = ks[ks.size() - 2];
    bool batchwise = heads == kv && time == keys;
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
    return {spec};
  }

  /// The kernels of `op`: an empty list for driver work; `why` set (and an
  /// empty list) when there is no kernel.
  Specs plan(Operation *op) {
    why.clear();
    bf16 = ir::hasBF16Matmuls(op);
    return llvm::TypeSwitch<Operation *, Specs>(op)
        .Case<ir::ParamRefOp, ir::StateRefOp, ir::AssignOp, ir::SplitSlotsOp,
              ir::MergeSlotsOp, ir::LRScheduleOp, ir::WeightedSumOp,
              arith::ConstantOp, arith::AddIOp, func::ReturnOp, func::CallOp,
              ir::WriteRowsOp>([](Operation *) { return Specs{}; })
        .Case([&](ir::RepeatOp) -> Specs {
          why = "layers must be unrolled first (stlm-add-decode unrolls "
                "@logits)";
          return {};
        })
        .Case([&](arith::MulFOp o) -> Specs {
          if (numel(o.getResult()) == 1)
            return {};
          return {{"stlm_scale", {{"n", num(numel(o.getResult()))}}}};
        })
        .Case([&](ir::EmbedOp o) -> Specs {
          std::vector<int64_t> t = shapeOf(o.getTable());
          return {{"stlm_embed",
                   {{"vocab", num(t[0])},
                    {"width", num(t[1])},
                    {"count", num(numel(o.getIds()))}}}};
        })
        .Case([&](ir::EmbedGradOp o) -> Specs {
          std::vector<int64_t> t = shapeOf(o.getDtable());
          return {{"stlm_embed_grad",
                   {{"vocab", num(t[0])},
                    {"width", num(t[1])},
                    {"count", num(numel(o.getIds()))}}}};
        })
        .Case<ir::RMSNormOp, ir::RMSNormGradOp>([&](auto o) -> Specs {
          bool grad = isa<ir::RMSNormGradOp>(op);
          return {{grad ? "stlm_rmsnorm_grad" : "stlm_rmsnorm",
                   {{"rows", num(leading(o.getX(), 1))},
                    {"width", num(shapeOf(o.getX()).back())},
                    {"eps", num(o.getEps().convertToDouble())}}}};
        })
        .Case<ir::LinearOp, ir::LogitsOp>([&](auto o) -> Specs {
          Value x = o->getOperand(0), w = o->getOperand(1);
          return matmul("nt", leading(x, 1), shapeOf(w)[0], shapeOf(w)[1]);
        })
        .Case([&](ir::LinearFusedOp o) -> Specs {
          std::vector<int64_t> w = shapeOf(o.getWeight());
          int64_t rows = leading(o.getX(), 1);
          if (rows < 8) {
            why = "fused epilogues are for matmuls of 8 rows or more";
            return {};
          }
          Specs s = matmul("nt", rows, w[0], w[1]);
          if (o.getResidual())
            s[0].generator = "stlm_matmul_residual";
          s[0].params.push_back({"epilogue", o.getActivation().str()});
          return s;
        })
        .Case([&](ir::LinearGradOp o) -> Specs {
          int64_t rows = leading(o.getX(), 1);
          std::vector<int64_t> w = shapeOf(o.getWeight()); // [out, in]
          Specs dx = matmul("nn", rows, w[1], w[0]);
          if (dx.empty())
            return {};
          if (o.getAddend())
            dx[0].generator = "stlm_matmul_residual";
          if (o.getGeluInput()) {
            dx[0].generator = "stlm_matmul_residual";
            dx[0].params.push_back({"epilogue", "gelu_grad"});
          }
          Specs dw = matmul("tn", w[0], w[1], rows);
          if (dw.empty())
            return {};
          return {dx[0], dw[0]};
        })
        .Case<ir::RoPEOp, ir::RoPEGradOp>([&](auto o) -> Specs {
          Value x = op->getOperand(0);
          std::vector<int64_t> s = shapeOf(x);
          return {{"stlm_rope",
                   {{"batch", num(leading(x, 2))},
                    {"time", num(s[s.size() - 2])},
                    {"width", num(s.back())},
                    {"head_dim", num(int64_t(o.getHeadDim()))},
                    {"theta", num(o.getTheta().convertToDouble())},
                    {"inverse", isa<ir::RoPEGradOp>(op) ? "true" : "false"}}}};
        })
        .Case([&](ir::AttentionOp o) {
          return attention("stlm_attention", o.getMask(), o.getQ(), o.getK(),
                           o.getHeads(), o.getKvHeads(), /*backward=*/false);
        })
        .Case([&](ir::AttentionGradOp o) {
          return attention("stlm_attention_grad", o.getMask(), o.getQ(),
                           o.getK(), o.getHeads(), o.getKvHeads(),
                           /*backward=*/true);
        })
        .Case([&](ir::SwiGLUOp o) -> Specs {
          return {{"stlm_swiglu", {{"n", num(numel(o.getResult()))}}}};
        })
        .Case([&](ir::SwiGLUGradOp o) -> Specs {
          return {{"stlm_swiglu_grad", {{"n", num(numel(o.getDy()))}}}};
        })
        .Case([&](ir::GELUOp o) -> Specs {
          return {{"stlm_gelu", {{"n", num(numel(o.getResult()))}}}};
        })
        .Case([&](ir::GELUGradOp o) -> Specs {
          return {{"stlm_gelu_grad", {{"n", num(numel(o.getDy()))}}}};
        })
        .Case([&](ir::AddOp o) -> Specs {
          return {{"stlm_add",
                   {{"n", num(numel(o.getLhs()))},
                    {"m", num(numel(o.getRhs()))}}}};
        })
        .Case([&](ir::SumLeadingOp o) -> Specs {
          int64_t width = numel(o.getResult());
          return {{"stlm_sum_leading",
                   {{"rows", num(numel(o.getX()) / width)},
                    {"width", num(width)}}}};
        })
        .Case<ir::NextTokenLossOp, ir::MaskedNextTokenLossOp>(
            [&](auto o) -> Specs {
              return {{"stlm_cross_entropy",
                       {{"positions", num(numel(o.getTargets()))},
                        {"vocab", num(shapeOf(o.getLogits()).back())}}}};
            })
        .Case<ir::NextTokenLossGradOp, ir::MaskedNextTokenLossGradOp>(
            [&](auto o) -> Specs {
              return {{"stlm_cross_entropy_grad",
                       {{"positions", num(numel(o.getTargets()))},
                        {"vocab", num(shapeOf(o.getLogits()).back())}}}};
            })
        .Case([&](ir::MaskTokensOp o) -> Specs {
          return {{"stlm_mask_tokens",
                   {{"count", num(numel(o.getIds()))},
                    {"prob", exact(o.getProb().convertToDouble())},
                    {"mask_id", num(int64_t(o.getMaskId()))}}}};
        })
        .Case([&](ir::ClipGradNormOp o) -> Specs {
          Specs s;
          for (Value g : o.getGrads()) {
            s.push_back({"stlm_sum_squares", {{"n", num(numel(g))}}});
            s.push_back({"stlm_scale", {{"n", num(numel(g))}}});
          }
          return s;
        })
        .Case([&](ir::AdamWOp o) -> Specs {
          return {{"stlm_adamw",
                   {{"n", num(numel(o.getParam()))},
                    {"beta1", num(o.getBeta1().convertToDouble())},
                    {"beta2", num(o.getBeta2().convertToDouble())},
                    {"eps", num(o.getEps().convertToDouble())}}}};
        })
        .Default([&](Operation *) -> Specs {
          why = "no kernel yet";
          return {};
        });
  }
};

} // namespace

std::vector<KernelSpec> kernelsFor(Operation *op,
                                   std::string &why) {
  Planner planner;
  Specs specs = planner.plan(op);
  why = planner.why;
  return specs;
}

std::vector<func::FuncOp> compiledFunctions(ir::ModelOp model) {
  std::vector<func::FuncOp> fns;
  for (StringRef name : {"grad", "train_step", "accumulate", "apply", "eval",
                         "logits", "prefill", "decode_step"})
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
      Specs specs = kernelsFor(op, why);
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
