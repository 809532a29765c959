//===- Inference.cpp - eval and generate with the reference evaluator -----===//

#include "reference/Inference.h"

#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/SafeTensors.h"
#include "frontend/Weights.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"
#include "reference/Batches.h"
#include "reference/Interpreter.h"

#include <chrono>
#include <cmath>
#include <cstring>

namespace stlm {
namespace {

/// A checkpoint's model, ready to run.
struct Loaded {
  ModelSpec spec;
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<ref::Interpreter<float>> interp;
};

/// The checkpoint's spec, checked against its tensors; the open file.
std::unique_ptr<SafeTensorsFile> openCheckpoint(const std::string &path,
                                                ModelSpec &spec,
                                                std::string &error) {
  std::unique_ptr<SafeTensorsFile> file = SafeTensorsFile::open(path, error);
  if (!file)
    return nullptr;
  std::optional<SpecResult> parsed = storedSpec(*file, path);
  if (!parsed) {
    error = path + ": no model spec in __metadata__." + std::string(kSpecKey) +
            " (is it an stlm checkpoint?)";
    return nullptr;
  }
  if (!parsed->spec) {
    error = parsed->diagnostics.front().str();
    return nullptr;
  }
  spec = *parsed->spec;
  std::vector<std::string> problems = checkWeights(buildParamTable(spec), *file);
  if (!problems.empty()) {
    error = path + " does not match its own spec (" +
            std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      error += "\n  " + p;
    return nullptr;
  }
  return file;
}

bool load(const std::string &path, Loaded &m, std::string &error) {
  std::unique_ptr<SafeTensorsFile> file = openCheckpoint(path, m.spec, error);
  if (!file)
    return false;
  ParamTable table = buildParamTable(m.spec);
  m.context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                        mlir::arith::ArithDialect>();
  m.module = buildModel(m.context, m.spec);
  mlir::stlm::ModelOp model;
  m.module->walk([&](mlir::stlm::ModelOp op) { model = op; });
  m.interp = std::make_unique<ref::Interpreter<float>>(model);
  for (const ParamInfo &p : table.params) {
    const TensorView *t = file->find(p.name);
    std::vector<float> values(t->numel());
    std::memcpy(values.data(), t->data, t->size);
    if (!m.interp->setVariable(
            p.name, ref::Tensor<float>::floats(t->shape, std::move(values)),
            error))
      return false;
  }
  return true;
}

} // namespace

bool checkpointSpec(const std::string &path, ModelSpec &spec,
                    std::string &error) {
  return openCheckpoint(path, spec, error) != nullptr;
}

bool loadValidation(const ModelSpec &spec, const std::string &dataPath,
                    Feed &feed, TextData &data, std::string &error) {
  if (std::optional<std::string> why = unsupportedFeed(spec)) {
    error = *why;
    return false;
  }
  feed = Feed::forSpec(spec);
  if (!data.load(dataPath, feed.window, error))
    return false;
  if (std::optional<std::string> why =
          dataOutsideVocabulary(spec, dataPath, data)) {
    error = *why;
    return false;
  }
  return true;
}

bool reportValidation(const ModelSpec &spec, const std::string &dataPath,
                      const Feed &feed, const TextData &data, int64_t windows,
                      const BatchLoss &loss, FILE *out, std::string &error) {
  int64_t used = 0;
  double value = validationLoss(loss, data, feed, windows, used, error);
  if (std::isnan(value))
    return false;
  std::fprintf(out, "%s on %s: val loss %.4f", spec.name.c_str(),
               dataPath.c_str(), value);
  if (lossIsPerByte(spec))
    std::fprintf(out, " | %.3f bits/byte", value / std::log(2.0));
  std::fprintf(out, " | %lld windows\n", static_cast<long long>(used));
  return true;
}

std::string generationProblem(const ModelSpec &spec, const GenerateOptions &o,
                              std::vector<int32_t> &prompt) {
  std::string bad = runtime::validate(o.sampling);
  if (!bad.empty())
    return bad;
  if (o.prompt.empty())
    return "the prompt is empty; generation needs at least one byte to "
           "continue";
  if (spec.embedder.kind != EmbedderKind::Token)
    return "generation from byte_pool models (a chunk at a time) is not "
           "supported yet";
  prompt.clear();
  for (unsigned char c : o.prompt) {
    if (c >= spec.embedder.vocabSize)
      return "the prompt has byte " + std::to_string(c) +
             ", outside the model's vocabulary of " +
             std::to_string(spec.embedder.vocabSize);
    prompt.push_back(c);
  }
  return "";
}

void printGenerated(int64_t bytes, double s, FILE *err) {
  std::fprintf(err, "\ngenerated %lld bytes in %.2f s (%.1f bytes/s)\n",
               static_cast<long long>(bytes), s, s > 0 ? bytes / s : 0);
}

int evaluateWithReference(const std::string &checkpoint,
                          const std::string &dataPath, int64_t windows,
                          FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) {
    std::fprintf(err, "stlm-run: error: %s\n", msg.c_str());
    return 1;
  };
  Loaded m;
  std::string error;
  Feed feed;
  TextData data;
  if (!load(checkpoint, m, error) ||
      !loadValidation(m.spec, dataPath, feed, data, error) ||
      !reportValidation(m.spec, dataPath, feed, data, windows,
                        interpreterLoss(*m.interp, "loss"), out, error))
    return fail(error);
  return 0;
}

int generateWithReference(const std::string &checkpoint,
                          const GenerateOptions &o, FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) {
    std::fprintf(err, "stlm-run: error: %s\n", msg.c_str());
    return 1;
  };
  Loaded m;
  std::string error;
  if (!load(checkpoint, m, error))
    return fail(error);
  std::vector<int32_t> history;
  std::string problem = generationProblem(m.spec, o, history);
  if (!problem.empty())
    return fail(problem);
  const int64_t B = m.spec.train.batch, T = m.spec.core.context,
                V = m.spec.embedder.vocabSize;
  runtime::ContextWindow window{T, 0};
  uint64_t state = o.seed;
  auto start = std::chrono::steady_clock::now();
  for (int64_t n = 0; n < o.tokens; ++n) {
    // Row 0 holds the window from position 0; later positions do not
    // affect earlier ones (causal), so their content is irrelevant.
    window.fit(history.size());
    int64_t len = static_cast<int64_t>(history.size() - window.start);
    std::vector<int32_t> tokens(B * T, 0);
    std::copy(history.begin() + window.start, history.end(), tokens.begin());
    std::vector<ref::Tensor<float>> results;
    if (!m.interp->call("logits", {ref::Tensor<float>::ints({B, T}, tokens)},
                        results, error))
      return fail(error);
    const float *row = results[0].f.data() + (len - 1) * V;
    int32_t next = runtime::sample(row, static_cast<int32_t>(V), o.sampling,
                                   state);
    history.push_back(next);
    unsigned char byte = static_cast<unsigned char>(next);
    std::fwrite(&byte, 1, 1, out);
    std::fflush(out);
  }
  printGenerated(o.tokens,
                 std::chrono::duration<double>(
                     std::chrono::steady_clock::now() - start)
                     .count(),
                 err);
  return 0;
}

} // namespace stlm
