//===- GradientCheckTest.cpp - whole-model gradients vs finite differences ===//
//
// For a tiny instance of every model family: build the IR from a spec, run
// stlm-autodiff, evaluate @grad in fp64 with the reference interpreter, and
// compare every parameter's gradient (at sampled elements) with the central
// difference (loss(p + h) − loss(p − h)) / 2h of @loss, h = 1e-5.
//
// Bound: |fd − grad| ≤ 1e-7 · (1 + |grad|). In fp64 the central difference's
// truncation error is O(h²) ≈ 1e-10 and its rounding error ≈ 1e-16/h ≈
// 1e-11 for losses of order 1, so a wrong gradient rule (off by a factor,
// a missed use of a tied weight, a transposed product) fails by orders of
// magnitude while correct ones pass with room to spare.
//
//===----------------------------------------------------------------------===//

#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/Spec.h"
#include "frontend/Weights.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"
#include "reference/Interpreter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

using namespace stlm;
using Tensor = ref::Tensor<double>;

namespace {

struct Family {
  const char *name;
  const char *spec;
};

class GradientCheck : public ::testing::TestWithParam<Family> {};

/// Random but valid inputs for @loss's arguments.
std::vector<Tensor> randomInputs(mlir::func::FuncOp loss, int64_t vocab,
                                 std::mt19937 &rng) {
  std::vector<Tensor> args;
  for (mlir::Type t : loss.getFunctionType().getInputs()) {
    auto type = llvm::cast<mlir::RankedTensorType>(t);
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    if (shape.empty()) { // a seed
      args.push_back(Tensor::ints({}, {1234}));
    } else if (shape.size() == 2 && vocab == 258) { // bytes: words of text
      Tensor x = Tensor::ints(shape);
      const char *alphabet = "abcdefgh  ,.";
      for (int32_t &v : x.i)
        v = static_cast<unsigned char>(alphabet[rng() % 12]);
      args.push_back(std::move(x));
    } else { // token ids / targets
      Tensor x = Tensor::ints(shape);
      for (int32_t &v : x.i)
        v = static_cast<int32_t>(rng() % vocab);
      args.push_back(std::move(x));
    }
  }
  return args;
}

TEST_P(GradientCheck, GradMatchesFiniteDifferences) {
  const Family &family = GetParam();
  SpecResult parsed = parseSpec(family.spec, family.name);
  ASSERT_TRUE(parsed.spec.has_value())
      << (parsed.diagnostics.empty() ? "" : parsed.diagnostics[0].str());
  const ModelSpec &spec = *parsed.spec;

  mlir::MLIRContext context;
  context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                      mlir::arith::ArithDialect>();
  mlir::OwningOpRef<mlir::ModuleOp> module = buildModel(context, spec);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createAutodiffPass());
  ASSERT_TRUE(mlir::succeeded(pm.run(*module)));
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  auto loss = mlir::SymbolTable::lookupNearestSymbolFrom<mlir::func::FuncOp>(
      model.getBody().front().getParentOp(),
      mlir::StringAttr::get(&context, "loss"));
  ASSERT_TRUE(loss);

  // Weights: the spec's initialisation scaled up (so every path carries a
  // real signal), LoRA b included, norms perturbed away from 1.
  ref::Interpreter<double> interp(model);
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 0.3);
  ParamTable table = buildParamTable(spec);
  std::string error;
  for (const InitTensor &w : initWeights(table, 11)) {
    std::vector<double> v(w.values.begin(), w.values.end());
    for (double &x : v)
      x = w.param->init == InitKind::Ones ? 1.0 + noise(rng)
                                          : 10.0 * x + 0.1 * noise(rng);
    ASSERT_TRUE(interp.setVariable(w.param->name,
                                   Tensor::floats(w.param->shape, v), error))
        << error;
  }

  // A distilling model's teacher: its own initialisation, scaled up so its
  // logits are far from uniform (frozen: no gradient to check).
  for (const ObjectiveSpec &o : spec.objectives) {
    if (!o.teacherSpec)
      continue;
    ParamTable teacher = buildParamTable(*o.teacherSpec);
    for (const InitTensor &w : initWeights(teacher, 5)) {
      std::vector<double> v(w.values.begin(), w.values.end());
      for (double &x : v)
        x = w.param->init == InitKind::Ones ? 1.0 : 20.0 * x;
      ASSERT_TRUE(interp.setVariable(kTeacherPrefix + w.param->name,
                                     Tensor::floats(w.param->shape, v), error))
          << error;
    }
  }

  std::vector<Tensor> args = randomInputs(loss, spec.headVocab(), rng);
  std::vector<Tensor> results;
  ASSERT_TRUE(interp.call("grad", args, results, error)) << error;
  ASSERT_EQ(results.size(), table.params.size() + 1);
  double base = results[0].scalar();
  ASSERT_TRUE(std::isfinite(base));

  std::vector<Tensor> lossOut;
  ASSERT_TRUE(interp.call("loss", args, lossOut, error)) << error;
  EXPECT_NEAR(lossOut[0].scalar(), base, 1e-12) << "@grad's loss";

  const double h = 1e-5;
  int checked = 0, nonzero = 0;
  for (size_t p = 0; p < table.params.size(); ++p) {
    const std::string &name = table.params[p].name;
    const Tensor &grad = results[p + 1];
    Tensor value = *interp.variable(name);
    ASSERT_EQ(grad.f.size(), value.f.size()) << name;
    // Sample up to 4 elements of every parameter.
    for (int s = 0; s < 4 && s < static_cast<int>(value.f.size()); ++s) {
      size_t k = rng() % value.f.size();
      auto lossAt = [&](double x) {
        Tensor t = value;
        t.f[k] = x;
        EXPECT_TRUE(interp.setVariable(name, t, error)) << error;
        std::vector<Tensor> out;
        EXPECT_TRUE(interp.call("loss", args, out, error)) << error;
        return out.empty() ? NAN : out[0].scalar();
      };
      double fd = (lossAt(value.f[k] + h) - lossAt(value.f[k] - h)) / (2 * h);
      ASSERT_TRUE(interp.setVariable(name, value, error));
      double g = grad.f[k];
      EXPECT_LE(std::abs(fd - g), 1e-7 * (1 + std::abs(g)))
          << family.name << ": d loss / d " << name << "[" << k
          << "]: autodiff " << g << ", finite difference " << fd;
      ++checked;
      nonzero += std::abs(g) > 1e-9;
    }
  }
  EXPECT_GT(checked, 20);
  // The check is only meaningful if gradients are not all zero.
  EXPECT_GT(nonzero, checked / 2) << family.name;
}

const Family kFamilies[] = {
    {"token_tied_gqa", R"(
name: t
embedder: {kind: token, vocab_size: 16}
core: {layers: 2, width: 16, heads: 4, kv_heads: 2, ffn: swiglu, ffn_width: 24, context: 5}
tying: {embed_head: true}
train: {batch: 2}
)"},
    {"shared_ffn_and_attn_out", R"(
name: s
embedder: {kind: token, vocab_size: 12}
core: {layers: 3, width: 8, heads: 2, ffn: gelu, ffn_width: 16, context: 4}
tying: {ffn: all, attn_out: all}
train: {batch: 2}
)"},
    {"interior_lora", R"(
name: l
embedder: {kind: token, vocab_size: 12}
core: {layers: 4, width: 8, heads: 2, ffn: swiglu, ffn_width: 12, context: 4}
tying: {embed_head: true, ffn: interior, attn_out: interior, interior_keep: 1, lora_rank: 2}
train: {batch: 2}
)"},
    {"byte_pool_words_masked_mean", R"(
name: bp
embedder: {kind: byte_pool, chunking: words, chunk_bytes: 4, byte_width: 8, encoder_layers: 1, encoder_heads: 2, pool: masked_mean}
core: {layers: 1, width: 8, heads: 2, ffn: gelu, ffn_width: 12, context: 3}
head: {kind: byte_chunk, decoder_layers: 1, decoder_heads: 2}
objectives:
  - {kind: chunk_bytes, mask_pad: true}
  - {kind: reconstruction, weight: 0.5}
train: {batch: 2}
)"},
    {"byte_pool_fixed_max", R"(
name: bf
embedder: {kind: byte_pool, chunking: fixed, stride: 3, chunk_bytes: 3, byte_width: 8, encoder_layers: 1, encoder_heads: 2, pool: max}
core: {layers: 1, width: 8, heads: 2, ffn: swiglu, ffn_width: 12, context: 3}
head: {kind: byte_chunk, decoder_layers: 1, decoder_heads: 2}
train: {batch: 1}
)"},
    {"masked_next_token", R"(
name: m
embedder: {kind: token, vocab_size: 10}
core: {layers: 1, width: 8, heads: 2, ffn: gelu, ffn_width: 12, context: 6}
objectives:
  - {kind: next_token, weight: 0.5}
  - {kind: masked_next_token, mask_prob: 0.4, mask_id: 3}
train: {batch: 2}
)"},
    {"distill", R"(
name: d
embedder: {kind: token, vocab_size: 10}
core: {layers: 1, width: 8, heads: 2, ffn: swiglu, ffn_width: 12, context: 4}
tying: {embed_head: true}
objectives:
  - kind: distill
    teacher: t.safetensors
    temperature: 2.0
    alpha: 0.7
    teacher_spec:
      name: t
      embedder: {kind: token, vocab_size: 10}
      core: {layers: 2, width: 12, heads: 3, kv_heads: 1, ffn: gelu,
             ffn_width: 16, context: 8}
train: {batch: 2}
)"},
};

/// Builds `spec`, runs stlm-autodiff, and returns an fp64 interpreter with
/// the spec's initial weights (seed 3) in `module`.
std::unique_ptr<ref::Interpreter<double>>
trainable(mlir::MLIRContext &context, const std::string &yaml,
          mlir::OwningOpRef<mlir::ModuleOp> &module) {
  SpecResult parsed = parseSpec(yaml, "accumulate.yaml");
  EXPECT_TRUE(parsed.spec.has_value());
  module = buildModel(context, *parsed.spec);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createAutodiffPass());
  EXPECT_TRUE(mlir::succeeded(pm.run(*module)));
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  auto interp = std::make_unique<ref::Interpreter<double>>(model);
  std::string error;
  ParamTable table = buildParamTable(*parsed.spec); // outlives the weights
  for (const InitTensor &w : initWeights(table, 3))
    EXPECT_TRUE(interp->setVariable(
        w.param->name,
        Tensor::floats(w.param->shape,
                       std::vector<double>(w.values.begin(), w.values.end())),
        error))
        << error;
  return interp;
}

TEST(GradientAccumulation, KMicroBatchesEqualOneStepOnThemTogether) {
  const char *common = R"(
embedder: {kind: token, vocab_size: 16}
core: {layers: 1, width: 8, heads: 2, ffn: swiglu, ffn_width: 12, context: 4}
)";
  mlir::MLIRContext context;
  context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                      mlir::arith::ArithDialect>();
  mlir::OwningOpRef<mlir::ModuleOp> ma, mb;
  auto whole = trainable(context,
                         std::string("name: whole") + common +
                             "train: {batch: 4, warmup: 0, lr: 0.01}\n",
                         ma);
  auto parts = trainable(context,
                         std::string("name: parts") + common +
                             "train: {batch: 1, accumulate: 4, warmup: 0, "
                             "lr: 0.01}\n",
                         mb);
  std::mt19937 rng(5);
  // k = 4 so that the 1/k factor (an f32 constant in the IR) is exact and the
  // bound can stay at fp64 rounding.
  std::vector<int32_t> tokens(16), targets(16);
  for (int i = 0; i < 16; ++i)
    tokens[i] = rng() % 16, targets[i] = rng() % 16;
  std::string error;
  for (int step = 0; step < 2; ++step) {
    std::vector<Tensor> r;
    ASSERT_TRUE(whole->call("train_step",
                            {Tensor::ints({4, 4}, tokens),
                             Tensor::ints({4, 4}, targets)},
                            r, error))
        << error;
    double wholeLoss = r[0].scalar(), sum = 0;
    for (int m = 0; m < 4; ++m) {
      std::vector<int32_t> t(tokens.begin() + 4 * m, tokens.begin() + 4 * m + 4),
          y(targets.begin() + 4 * m, targets.begin() + 4 * m + 4);
      ASSERT_TRUE(parts->call("accumulate",
                              {Tensor::ints({1, 4}, t), Tensor::ints({1, 4}, y)},
                              r, error))
          << error;
      sum += r[0].scalar();
    }
    EXPECT_NEAR(sum / 4, wholeLoss, 1e-12);
    ASSERT_TRUE(parts->call("apply", {}, r, error)) << error;
  }
  // After two updates the parameters and moments agree.
  for (const std::string &name : whole->paramNames())
    for (const std::string &v : {name, "opt.m." + name, "opt.v." + name}) {
      const Tensor *a = whole->variable(v), *b = parts->variable(v);
      ASSERT_TRUE(a && b) << v;
      double worst = 0;
      for (size_t i = 0; i < a->f.size(); ++i)
        worst = std::max(worst, std::abs(a->f[i] - b->f[i]));
      EXPECT_LT(worst, 1e-12) << v;
    }
  EXPECT_EQ(parts->variable("step")->i[0], 2);
  EXPECT_EQ(parts->variable("grad_acc.norm")->f[0], 0.0) << "sums cleared";
}

/// How many ops of `module` have RoPE folded in.
int foldedAttentions(mlir::ModuleOp module) {
  int n = 0;
  module->walk([&](mlir::Operation *op) {
    if (op->hasAttr("rope_theta"))
      ++n;
  });
  return n;
}

TEST(RopeIntoAttention, FoldedStepEqualsTheRopeOps) {
  // bf16, heads 16 wide, 16 queries: what stlm-fuse folds RoPE into; theta
  // away from the default, grouped kv heads, two layers.
  const char *yaml = R"(
name: folded
embedder: {kind: token, vocab_size: 16}
core: {layers: 2, width: 32, heads: 2, kv_heads: 1, ffn: swiglu,
       ffn_width: 24, context: 16, rope_theta: 500.0}
train: {batch: 2, warmup: 0, precision: bf16}
)";
  mlir::MLIRContext context;
  context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                      mlir::arith::ArithDialect>();
  mlir::OwningOpRef<mlir::ModuleOp> plain, folded;
  auto a = trainable(context, yaml, plain);
  auto b = trainable(context, yaml, folded);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createFusePass({/*ropeIntoAttention=*/true}));
  ASSERT_TRUE(mlir::succeeded(pm.run(*folded)));
  // @grad's 2 attentions and 2 gradients, @eval's 2 attentions, and the
  // one in the body of @logits' stlm.repeat over the layers.
  EXPECT_EQ(foldedAttentions(*plain), 0);
  EXPECT_EQ(foldedAttentions(*folded), 7);
  std::mt19937 rng(9);
  std::vector<int32_t> tokens(32), targets(32);
  for (int i = 0; i < 32; ++i)
    tokens[i] = rng() % 16, targets[i] = rng() % 16;
  std::vector<Tensor> ra, rb;
  std::string error;
  for (const char *fn : {"grad", "logits"}) {
    std::vector<Tensor> args = {Tensor::ints({2, 16}, tokens)};
    if (std::string(fn) == "grad")
      args.push_back(Tensor::ints({2, 16}, targets));
    ASSERT_TRUE(a->call(fn, args, ra, error)) << error;
    ASSERT_TRUE(b->call(fn, args, rb, error)) << error;
    ASSERT_EQ(ra.size(), rb.size());
    // The same operations in the same order: equal to fp64 rounding.
    for (size_t r = 0; r < ra.size(); ++r) {
      double worst = 0, largest = 0;
      for (size_t i = 0; i < ra[r].f.size(); ++i) {
        worst = std::max(worst, std::abs(ra[r].f[i] - rb[r].f[i]));
        largest = std::max(largest, std::abs(ra[r].f[i]));
      }
      EXPECT_GT(largest, 0.0) << fn << " result " << r;
      EXPECT_LE(worst, 1e-12 * (1 + largest)) << fn << " result " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, GradientCheck, ::testing::ValuesIn(kFamilies),
    [](const ::testing::TestParamInfo<Family> &info) {
      return std::string(info.param.name);
    });

} // namespace
