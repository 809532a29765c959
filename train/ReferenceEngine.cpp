//===- ReferenceEngine.cpp - train, evaluate, generate with the oracle ----===//

#include "train/ReferenceEngine.h"

#include "frontend/BuildModel.h"
#include "frontend/Params.h"
#include "frontend/Quantized.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"
#include "passes/Pipelines.h"
#include "reference/Interpreter.h"
#include "support/SafeTensors.h"
#include "train/Batches.h"

#include <chrono>
#include <cstring>

namespace stlm {
namespace {

using Tensor = ref::Tensor<float>;

/// The reference evaluator: the spec's IR after stlm-autodiff, interpreted.
class ReferenceEngine : public TrainEngine {
public:
  std::string describe() const override { return "the reference evaluator"; }
  bool prepare(const ModelSpec &spec, std::string &error) override {
    context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                        mlir::arith::ArithDialect>();
    std::string diagnostics;
    mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &d) {
      diagnostics += d.str() + "\n";
      return mlir::success();
    });
    module = buildModel(context, spec);
    mlir::PassManager pm(&context);
    mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Train);
    if (mlir::failed(pm.run(*module))) {
      error = "cannot derive the training step of '" + spec.name +
              "': " + diagnostics;
      return false;
    }
    mlir::stlm::ModelOp model;
    module->walk([&](mlir::stlm::ModelOp m) { model = m; });
    interp = std::make_unique<ref::Interpreter<float>>(model);
    return true;
  }
  bool setTensor(const std::string &name, const std::vector<int64_t> &shape,
                 const std::vector<float> &values,
                 std::string &error) override {
    return interp->setVariable(name, Tensor::floats(shape, values), error);
  }
  bool getTensor(const std::string &name, std::vector<float> &values,
                 std::string &error) override {
    const Tensor *t = interp->variable(name);
    if (!t) {
      error = "no tensor '" + name + "'";
      return false;
    }
    values = t->f;
    return true;
  }
  bool setStep(int64_t step, std::string &error) override {
    return interp->setVariable(
        "step", Tensor::ints({}, {static_cast<int32_t>(step)}), error);
  }
  bool trainStep(const std::vector<std::vector<Tensor>> &micro, float &loss,
                 float &norm, float &lr, std::string &error) override {
    std::vector<Tensor> results;
    if (micro.size() == 1) {
      if (!interp->call("train_step", micro[0], results, error))
        return false;
      loss = results[0].scalar(), norm = results[1].scalar(),
      lr = results[2].scalar();
      return true;
    }
    loss = 0;
    for (const std::vector<Tensor> &args : micro) {
      if (!interp->call("accumulate", args, results, error))
        return false;
      loss += results[0].scalar() / static_cast<float>(micro.size());
    }
    if (!interp->call("apply", {}, results, error))
      return false;
    norm = results[0].scalar(), lr = results[1].scalar();
    return true;
  }
  bool evalLoss(const std::vector<Tensor> &args, std::vector<float> &losses,
                std::string &error) override {
    return interpreterLoss(*interp)(args, losses, error);
  }

private:
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<ref::Interpreter<float>> interp;
};

/// A checkpoint's model, ready to run.
struct Loaded {
  ModelSpec spec;
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<ref::Interpreter<float>> interp;
};

/// `withEval`: derive @eval too (stlm-autodiff), for evaluation; generation
/// needs only the model's own functions. A quantized checkpoint's model
/// goes through stlm-quantize in its format.
bool load(const std::string &path, Loaded &m, std::string &error,
          bool withEval) {
  std::optional<quant::Format> quantized;
  std::unique_ptr<SafeTensorsFile> file =
      openCheckpoint(path, m.spec, error, &quantized);
  if (!file)
    return false;
  m.context.loadDialect<mlir::stlm::STLMDialect, mlir::func::FuncDialect,
                        mlir::arith::ArithDialect>();
  m.module = buildModel(m.context, m.spec);
  if (withEval || quantized) {
    // Through stlm-autodiff: @eval gives each objective's own loss.
    std::string diagnostics;
    mlir::ScopedDiagnosticHandler handler(&m.context,
                                          [&](mlir::Diagnostic &d) {
                                            diagnostics += d.str() + "\n";
                                            return mlir::success();
                                          });
    mlir::PassManager pm(&m.context);
    if (withEval)
      mlir::stlm::buildPipeline(pm, mlir::stlm::Stage::Train);
    if (quantized)
      pm.addPass(mlir::stlm::createQuantizePass(
          {quant::schemeName(quantized->scheme), quantized->group}));
    if (mlir::failed(pm.run(*m.module))) {
      error = "cannot derive the " +
              std::string(withEval ? "evaluation" : "inference") + " of '" +
              m.spec.name + "'" +
              (quantized ? " quantized (" + describe(*quantized) + ")" : "") +
              ": " + diagnostics;
      return false;
    }
  }
  mlir::stlm::ModelOp model;
  m.module->walk([&](mlir::stlm::ModelOp op) { model = op; });
  m.interp = std::make_unique<ref::Interpreter<float>>(model);
  // Every parameter of the model as it runs: a quantized weight's bytes
  // and its scales. openCheckpoint checked the file against the
  // checkpoint's rule; each tensor is checked against the model the pass
  // made too, so the two rules can never disagree silently.
  for (const std::string &name : m.interp->paramNames()) {
    const TensorView *t = file->find(name);
    const ref::Tensor<float> *slot = m.interp->variable(name);
    bool bytes = slot->kind == ref::Tensor<float>::Kind::Bytes;
    DType want = !bytes ? DType::F32
                 : quantized && quantized->scheme == quant::Scheme::Int4
                     ? DType::U8
                     : DType::I8;
    if (!t || t->dtype != want || t->shape != slot->shape ||
        t->size != t->numel() * (bytes ? 1 : 4)) {
      error = path + ": the model " +
              (quantized ? "quantized (" + describe(*quantized) + ") " : "") +
              "needs '" + name + "' as " + dtypeName(want) + " " +
              shapeString(slot->shape) + ", and the file " +
              (t ? "has " + std::string(dtypeName(t->dtype)) + " " +
                       shapeString(t->shape)
                 : std::string("lacks it"));
      return false;
    }
    ref::Tensor<float> value;
    if (bytes) {
      const auto *bytes = static_cast<const uint8_t *>(t->data);
      value = ref::Tensor<float>::bytes(
          t->shape, std::vector<uint8_t>(bytes, bytes + t->size));
    } else {
      std::vector<float> values(t->numel());
      std::memcpy(values.data(), t->data, t->size);
      value = ref::Tensor<float>::floats(t->shape, std::move(values));
    }
    if (!m.interp->setVariable(name, std::move(value), error))
      return false;
  }
  // Evaluation needs a distilling model's teacher; generation does not.
  return !withEval ||
         loadTeacherWeights(
             m.spec,
             [&](const std::string &name, const std::vector<int64_t> &shape,
                 const std::vector<float> &values, std::string &e) {
               return m.interp->setVariable(
                   name, ref::Tensor<float>::floats(shape, values), e);
             },
             error);
}

/// o.tokens tokens after `prompt` sampled with `seed` by a token model, as
/// stlm_generate does it (the logits of the window recomputed whole every
/// time), each written to `out` as it comes, or appended to `text`.
bool generateTokens(Loaded &m, const GenerateOptions &o,
                    std::vector<int32_t> history, uint64_t seed, FILE *out,
                    std::string *text, std::string &error) {
  const int64_t B = m.spec.train.batch, T = m.spec.core.context,
                V = m.spec.embedder.vocabSize;
  sampling::ContextWindow window{T, 0};
  uint64_t state = seed;
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
      return false;
    const float *row = results[0].f.data() + (len - 1) * V;
    int32_t next =
        sampling::sample(row, static_cast<int32_t>(V), o.sampling, state);
    history.push_back(next);
    char byte = static_cast<char>(next);
    if (text) {
      text->push_back(byte);
    } else {
      std::fwrite(&byte, 1, 1, out);
      std::fflush(out);
    }
  }
  return true;
}

/// generateWithReference for a byte-pool model, as stlm_generate does it:
/// the prompt cut into chunks by the model's rule, then a chunk at a time,
/// each sampled from the logits @encode, @core and @decode give for the
/// window of chunks (recomputed whole every time; the same window as the
/// runtime's KV cache sees, so a seed gives the same bytes).
int generateChunks(Loaded &m, const GenerateOptions &o,
                   const std::vector<int32_t> &prompt, FILE *out, FILE *err) {
  const EmbedderSpec &e = m.spec.embedder;
  const int64_t B = m.spec.train.batch, T = m.spec.core.context,
                L = e.chunkBytes, V = 258;
  using namespace sampling;
  ChunkRule rule = e.chunking == Chunking::Fixed   ? ChunkRule::Fixed
                   : e.chunking == Chunking::Given ? ChunkRule::Given
                                                   : ChunkRule::Words;
  std::vector<int32_t> history;
  if (!chunkPrompt(rule, e.stride, L, prompt.data(), prompt.size(), history))
    return reportError(err, "the prompt is not bytes");
  ContextWindow window{T, 0};
  uint64_t state = o.seed;
  std::vector<int32_t> chunk(L);
  std::string error;
  int64_t produced = 0;
  auto start = std::chrono::steady_clock::now();
  while (produced < o.tokens) {
    window.fit(history.size() / L);
    int64_t len = static_cast<int64_t>(history.size() / L - window.start);
    // Row 0 holds the window; the other rows and positions are pad
    // chunks, which earlier positions never see (causal core).
    std::vector<int32_t> chunks(B * T * L, kChunkPad);
    std::copy(history.begin() + window.start * L, history.end(),
              chunks.begin());
    std::vector<ref::Tensor<float>> x, y, logits;
    if (!m.interp->call("encode", {ref::Tensor<float>::ints({B, T, L}, chunks)},
                        x, error) ||
        !m.interp->call("core", x, y, error) ||
        !m.interp->call("decode", y, logits, error))
      return reportError(err, error);
    int64_t bytes = sampleChunk(logits[0].f.data() + (len - 1) * L * V, L, V,
                                o.sampling, state, chunk.data());
    for (int64_t i = 0; i < bytes && produced < o.tokens; ++i, ++produced) {
      unsigned char byte = static_cast<unsigned char>(chunk[i]);
      std::fwrite(&byte, 1, 1, out);
    }
    std::fflush(out);
    history.insert(history.end(), chunk.begin(), chunk.end());
  }
  printGenerated(produced, start, err);
  return 0;
}

} // namespace

std::unique_ptr<TrainEngine> referenceEngine() {
  return std::make_unique<ReferenceEngine>();
}

int trainWithReference(const ModelSpec &spec, const TrainOptions &options,
                       FILE *err) {
  std::unique_ptr<TrainEngine> engine = referenceEngine();
  return train(spec, options, *engine, err);
}

int evaluateWithReference(const std::string &checkpoint, const EvalData &what,
                          FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  Loaded m;
  std::string error;
  Feed feed;
  TextData data;
  if (!load(checkpoint, m, error, /*withEval=*/true) ||
      !loadValidation(m.spec, what, feed, data, error) ||
      !reportValidation(m.spec, what, feed, data, interpreterLoss(*m.interp),
                        out, error))
    return fail(error);
  return 0;
}

int generateWithReference(const std::string &checkpoint,
                          const GenerateOptions &o, FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  Loaded m;
  std::string error;
  if (!load(checkpoint, m, error, /*withEval=*/false))
    return fail(error);
  std::vector<int32_t> history;
  std::string problem = generationProblem(m.spec, o, history);
  if (!problem.empty())
    return fail(problem);
  if (m.spec.embedder.kind == EmbedderKind::BytePool)
    return generateChunks(m, o, history, out, err);
  auto start = std::chrono::steady_clock::now();
  std::vector<std::string> texts = o.samplePrompts();
  if (texts.size() == 1 && o.prompts.empty()) {
    if (!generateTokens(m, o, history, o.seed, out, nullptr, error))
      return fail(error);
  } else {
    // What stlm_generate_batch computes together, one sample at a time.
    std::vector<std::string> samples(texts.size());
    for (size_t i = 0; i < samples.size(); ++i)
      if (!generateTokens(m, o, {texts[i].begin(), texts[i].end()}, o.seed + i,
                          nullptr, &samples[i], error))
        return fail(error);
    printSamples(samples, o, out);
  }
  printGenerated(o.tokens * static_cast<int64_t>(texts.size()), start, err);
  return 0;
}

int entropyWithReference(const EntropyOptions &o, FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  Loaded m;
  std::string error;
  std::vector<uint8_t> text;
  if (!load(o.checkpoint, m, error, /*withEval=*/false) ||
      !readEntropyText(o, m.spec, text, error))
    return fail(error);
  const int64_t B = m.spec.train.batch, T = m.spec.core.context;
  EntropyModel em{
      B, T, m.spec.embedder.vocabSize,
      [&](const std::vector<int32_t> &tokens, std::vector<float> &logits,
          std::string &e) {
        std::vector<ref::Tensor<float>> results;
        if (!m.interp->call("logits",
                            {ref::Tensor<float>::ints({B, T}, tokens)}, results,
                            e))
          return false;
        logits = std::move(results[0].f);
        return true;
      }};
  return writeEntropyStarts(o, text, em, out, err);
}

} // namespace stlm
