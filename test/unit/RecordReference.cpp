//===- RecordReference.cpp - the reference evaluator's answers, recorded --===//
//
//   stlm-record-reference SPEC.yaml DIR
//
// Writes what a device artifact of SPEC must reproduce, computed by the
// reference interpreter, so that the comparison can run where MLIR is not
// (the GPU machine; see CudaVsReferenceTest.cpp):
//
//   DIR/init.safetensors      the spec's initial weights (seed 7; every
//                             LoRA `b`, zero as initialised, set to small
//                             pseudo-random values so that the deltas and
//                             their gradients are compared at all), a
//                             checkpoint stlm_load reads;
//   DIR/expected.safetensors  the batch (pseudo-random bytes: batch.tokens,
//                             batch.targets, I32) and the reference's
//                             results on it: @grad's loss and gradients
//                             (scalar.grad_loss, grad.<param>), @eval's
//                             loss (scalar.eval_loss), @logits (logits),
//                             one @train_step from the initial weights
//                             (scalar.step_loss, scalar.step_norm,
//                             scalar.step_lr, step.<param>,
//                             step.opt.m.<param>, step.opt.v.<param>), and,
//                             for contexts up to 64 (the interpreter
//                             recomputes every window), the 2·context + 10
//                             tokens generated from a 5-token prompt at
//                             temperature 1, seed 99, each from a full
//                             recompute of its window (generate.prompt,
//                             generate.tokens, I32).
//
// The batch and the sampling are those of NativeVsReferenceTest.cpp.
//
//===----------------------------------------------------------------------===//

#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/Spec.h"
#include "frontend/Weights.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"
#include "reference/Interpreter.h"
#include "support/Hash.h"
#include "support/Sampling.h"
#include "support/SafeTensors.h"
#include "tools/common/InitAll.h"

#include <cstdio>
#include <deque>

namespace {

using Tensor = stlm::ref::Tensor<float>;

int fail(const std::string &msg) {
  std::fprintf(stderr, "stlm-record-reference: error: %s\n", msg.c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 3)
    return fail("usage: stlm-record-reference SPEC.yaml DIR");
  std::string dir = argv[2];
  stlm::SpecResult parsed = stlm::readSpecFile(argv[1]);
  if (!parsed.spec)
    return fail(parsed.diagnostics.front().str());
  const stlm::ModelSpec &spec = *parsed.spec;
  std::string error;

  mlir::DialectRegistry registry;
  mlir::stlm::registerAllDialects(registry);
  mlir::MLIRContext context(registry);
  mlir::OwningOpRef<mlir::ModuleOp> module = stlm::buildModel(context, spec);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createAutodiffPass());
  pm.addPass(mlir::stlm::createAddDecodePass());
  if (mlir::failed(pm.run(*module)))
    return fail("cannot differentiate the model");
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  stlm::ref::Interpreter<float> reference(model);
  stlm::ParamTable table = stlm::buildParamTable(spec);
  std::vector<stlm::InitTensor> init = stlm::initWeights(table, 7);
  std::vector<stlm::TensorToWrite> initFile;
  uint64_t perturbed = 0;
  for (stlm::InitTensor &w : init) {
    const std::string &name = w.param->name;
    if (name.find(".lora.") != std::string::npos &&
        name.size() > 2 && name.compare(name.size() - 2, 2, ".b") == 0) {
      uint64_t s = 0x10a4 + perturbed++;
      for (float &x : w.values)
        x = 0.1f * (static_cast<float>(stlm::splitmix64(s++) % 2001) /
                        1000.0f -
                    1.0f);
    }
    initFile.push_back({name, stlm::DType::F32, w.param->shape,
                        w.values.data(), w.values.size() * 4});
  }
  if (!stlm::writeSafeTensors(dir + "/init.safetensors", initFile,
                              stlm::checkpointMetadata(spec), error))
    return fail(error);
  for (stlm::InitTensor &w : init) {
    if (!reference.setVariable(w.param->name,
                               Tensor::floats(w.param->shape, w.values),
                               error))
      return fail(error);
    for (const char *prefix : {"opt.m.", "opt.v."})
      if (!reference.setVariable(
              prefix + w.param->name,
              Tensor::floats(w.param->shape,
                             std::vector<float>(w.values.size(), 0.0f)),
              error))
        return fail(error);
  }
  if (!reference.setVariable("step", Tensor::ints({}, {0}), error))
    return fail(error);

  // The batch: pseudo-random bytes, targets the tokens shifted; with
  // train.accumulate k, k micro-batches (the step's), the first of which
  // @grad, @eval and @logits take.
  int64_t b = spec.train.batch, t = spec.core.context,
          V = spec.embedder.vocabSize,
          k = std::max<int64_t>(1, spec.train.accumulate);
  std::vector<int32_t> bytes(k * b * (t + 1)), tokens(k * b * t),
      targets(k * b * t);
  uint64_t s = 12345;
  for (int32_t &x : bytes)
    x = static_cast<int32_t>(stlm::splitmix64(s++) % 256 % V);
  for (int64_t r = 0; r < k * b; ++r)
    for (int64_t i = 0; i < t; ++i) {
      tokens[r * t + i] = bytes[r * (t + 1) + i];
      targets[r * t + i] = bytes[r * (t + 1) + i + 1];
    }
  auto micro = [&](int64_t i) -> std::vector<Tensor> {
    auto rows = [&](const std::vector<int32_t> &v) {
      return std::vector<int32_t>(v.begin() + i * b * t,
                                  v.begin() + (i + 1) * b * t);
    };
    return {Tensor::ints({b, t}, rows(tokens)),
            Tensor::ints({b, t}, rows(targets))};
  };
  std::vector<Tensor> args = micro(0);

  // What goes into expected.safetensors (kept alive until written).
  std::deque<std::vector<float>> floats;
  std::deque<std::vector<int32_t>> ints;
  std::vector<stlm::TensorToWrite> out;
  auto addF = [&](const std::string &name, std::vector<int64_t> shape,
                  std::vector<float> v) {
    floats.push_back(std::move(v));
    out.push_back({name, stlm::DType::F32, std::move(shape),
                   floats.back().data(), floats.back().size() * 4});
  };
  auto addI = [&](const std::string &name, std::vector<int64_t> shape,
                  std::vector<int32_t> v) {
    ints.push_back(std::move(v));
    out.push_back({name, stlm::DType::I32, std::move(shape),
                   ints.back().data(), ints.back().size() * 4});
  };
  addI("batch.tokens", {k * b, t}, tokens);
  addI("batch.targets", {k * b, t}, targets);

  std::vector<Tensor> results;
  if (!reference.call("grad", args, results, error))
    return fail(error);
  addF("scalar.grad_loss", {1}, {results[0].scalar()});
  for (size_t i = 0; i < table.params.size(); ++i)
    addF("grad." + table.params[i].name, table.params[i].shape,
         results[i + 1].f);
  if (!reference.call("eval", args, results, error))
    return fail(error);
  addF("scalar.eval_loss", {1}, {results[0].scalar()});
  if (!reference.call("logits", {args[0]}, results, error))
    return fail(error);
  addF("logits", {b, t, V}, results[0].f);

  // Generation: each token from a recompute of its window (@prefill).
  std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 5), generated;
  std::vector<int32_t> history = prompt;
  stlm::sampling::ContextWindow window{t, 0};
  stlm::sampling::SamplingOptions options; // temperature 1, all tokens
  uint64_t state = 99;
  for (int64_t i = 0; t <= 64 && i < 2 * t + 10; ++i) {
    window.fit(history.size());
    std::vector<int32_t> view(history.begin() + window.start, history.end());
    std::vector<int32_t> padded(t, 0);
    std::copy(view.begin(), view.end(), padded.begin());
    if (!reference.call("prefill", {Tensor::ints({1, t}, padded)}, results,
                        error))
      return fail(error);
    int32_t next = stlm::sampling::sample(
        results[0].f.data() + (view.size() - 1) * V, static_cast<int32_t>(V),
        options, state);
    history.push_back(next);
    generated.push_back(next);
  }
  if (!generated.empty()) {
    addI("generate.prompt", {static_cast<int64_t>(prompt.size())}, prompt);
    addI("generate.tokens", {static_cast<int64_t>(generated.size())},
         generated);
  }

  // One training step from the initial weights (k micro-batches: each
  // @accumulate, then @apply; the loss is their mean).
  float stepLoss = 0, stepNorm = 0, stepLr = 0;
  if (k == 1) {
    if (!reference.call("train_step", args, results, error))
      return fail(error);
    stepLoss = results[0].scalar();
    stepNorm = results[1].scalar();
    stepLr = results[2].scalar();
  } else {
    for (int64_t i = 0; i < k; ++i) {
      if (!reference.call("accumulate", micro(i), results, error))
        return fail(error);
      stepLoss += results[0].scalar() / static_cast<float>(k);
    }
    if (!reference.call("apply", {}, results, error))
      return fail(error);
    stepNorm = results[0].scalar();
    stepLr = results[1].scalar();
  }
  addF("scalar.step_loss", {1}, {stepLoss});
  addF("scalar.step_norm", {1}, {stepNorm});
  addF("scalar.step_lr", {1}, {stepLr});
  for (const stlm::ParamInfo &p : table.params)
    for (const std::string &n :
         {p.name, "opt.m." + p.name, "opt.v." + p.name}) {
      const Tensor *v = reference.variable(n);
      if (!v)
        return fail("the reference has no '" + n + "'");
      addF("step." + n, p.shape, v->f);
    }
  if (!stlm::writeSafeTensors(dir + "/expected.safetensors", out, {}, error))
    return fail(error);
  return 0;
}
