//===- Inference.cpp - what eval and generate do on either engine ---------===//

#include "train/Inference.h"

#include "frontend/Params.h"
#include "frontend/Quantized.h"
#include "frontend/Weights.h"
#include "stlm/artifact_format.h"

#include <cmath>

namespace stlm {

std::unique_ptr<SafeTensorsFile>
openCheckpoint(const std::string &path, ModelSpec &spec, std::string &error,
               std::optional<quant::Format> *quantizedOut) {
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
  std::optional<quant::Format> quantized;
  if (!checkpointQuantization(*file, quantized, error)) {
    error = path + ": " + error;
    return nullptr;
  }
  if (quantized && !quantizedOut) {
    error = path + " is quantized (" + describe(*quantized) +
            "); this command runs float checkpoints only: give the one it "
            "was made from";
    return nullptr;
  }
  ParamTable table = buildParamTable(spec);
  std::vector<std::string> problems =
      quantized ? checkQuantizedWeights(table, *file, *quantized)
                : checkWeights(table, *file);
  if (!problems.empty()) {
    error = path + " does not match its own spec (" +
            std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      error += "\n  " + p;
    return nullptr;
  }
  if (quantizedOut)
    *quantizedOut = quantized;
  return file;
}

const ObjectiveSpec *teacherObjective(const ModelSpec &spec) {
  for (const ObjectiveSpec &o : spec.objectives)
    if (o.kind == ObjectiveKind::Distill)
      return &o;
  return nullptr;
}

bool loadTeacherWeights(const ModelSpec &spec, const TensorSetter &set,
                        std::string &error) {
  const ObjectiveSpec *o = teacherObjective(spec);
  if (!o)
    return true;
  ModelSpec stored;
  std::unique_ptr<SafeTensorsFile> file =
      openCheckpoint(o->teacher, stored, error);
  if (!file)
    return false;
  // The same model, whatever it was trained with.
  ModelSpec expected = *o->teacherSpec;
  expected.train = stored.train = TrainSpec();
  if (specToJson(expected) != specToJson(stored)) {
    error = o->teacher + " holds weights of model '" + stored.name +
            "', not of '" + expected.name + "', the teacher of '" + spec.name +
            "' (their specs differ)";
    return false;
  }
  for (const ParamInfo &p : buildParamTable(stored).params) {
    const TensorView *t = file->find(p.name);
    std::vector<float> values(t->numel());
    std::memcpy(values.data(), t->data, t->size);
    if (!set(kTeacherPrefix + p.name, p.shape, values, error))
      return false;
  }
  return true;
}

bool checkpointSpec(const std::string &path, ModelSpec &spec,
                    std::string &error,
                    std::optional<quant::Format> *quantized) {
  return openCheckpoint(path, spec, error, quantized) != nullptr;
}

bool loadValidation(const ModelSpec &spec, const EvalData &what, Feed &feed,
                    TextData &data, std::string &error) {
  const std::string &dataPath = what.path;
  feed = Feed::forSpec(spec);
  if (!data.load(dataPath, feed.window, error) ||
      !loadChunkStarts(spec, what.chunkStarts, dataPath, data, error))
    return false;
  if (std::optional<std::string> why =
          dataOutsideVocabulary(spec, dataPath, data.contents())) {
    error = *why;
    return false;
  }
  return true;
}

bool reportValidation(const ModelSpec &spec, const EvalData &what,
                      const Feed &feed, const TextData &data,
                      const BatchLoss &loss, FILE *out, std::string &error) {
  Validation v = validationLoss(loss, data, feed, what.windows, error);
  if (std::isnan(v.loss))
    return false;
  std::fprintf(out, "%s on %s: val loss %.4f", spec.name.c_str(),
               what.path.c_str(), v.loss);
  if (!std::isnan(v.bitsPerByte))
    std::fprintf(out, " | %.3f bits/byte", v.bitsPerByte);
  std::fprintf(out, " | %lld windows\n", static_cast<long long>(v.windows));
  return true;
}

std::string generationProblem(const ModelSpec &spec, const GenerateOptions &o,
                              std::vector<int32_t> &prompt) {
  std::string bad = sampling::validate(o.sampling);
  if (!bad.empty())
    return bad;
  if (o.prompts.empty() && o.prompt.empty())
    return "the prompt is empty; generation needs at least one byte to "
           "continue";
  if (o.batch < 1 || o.batch > format::kMaxDecodeBatch)
    return "--batch must be 1 to " + std::to_string(format::kMaxDecodeBatch) +
           " samples, not " + std::to_string(o.batch);
  if ((o.batch > 1 || o.prompts.size() > 1) &&
      spec.embedder.kind != EmbedderKind::Token)
    return std::string(o.prompts.empty() ? "--batch" : "--prompts") +
           " generates token models' samples together; '" + spec.name +
           "' is a byte-pool model: generate its samples one at a time";
  bool bytes = spec.embedder.kind != EmbedderKind::Token;
  std::vector<std::string> texts = o.samplePrompts();
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string which =
        o.prompts.empty() ? "the prompt" : "prompt " + std::to_string(i + 1);
    if (texts[i].empty())
      return which + " is empty; generation needs at least one byte to "
                     "continue";
    for (unsigned char c : texts[i])
      if (!bytes && c >= spec.embedder.vocabSize)
        return which + " has byte " + std::to_string(c) +
               ", outside the model's vocabulary of " +
               std::to_string(spec.embedder.vocabSize);
  }
  prompt.assign(texts[0].begin(), texts[0].end());
  return "";
}

bool readPrompts(const std::string &path, std::vector<std::string> &prompts,
                 std::string &error) {
  prompts.clear();
  std::string text;
  if (!TextData::readSmallFile(path, "prompts file", int64_t(16) << 20, text,
                               error))
    return false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos)
      end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (line.empty()) {
      error = "the prompts file " + path + " has an empty line " +
              std::to_string(prompts.size() + 1) + " (one prompt a line)";
      return false;
    }
    prompts.push_back(std::move(line));
    start = end + 1;
  }
  if (prompts.empty()) {
    error = "the prompts file " + path + " has no prompts (one a line)";
    return false;
  }
  return true;
}

void printSamples(const std::vector<std::string> &samples,
                  const GenerateOptions &o, FILE *out) {
  for (size_t i = 0; i < samples.size(); ++i) {
    std::fprintf(out, "=== sample %zu of %zu (seed %llu) ===\n", i + 1,
                 samples.size(), static_cast<unsigned long long>(o.seed + i));
    std::fwrite(samples[i].data(), 1, samples[i].size(), out);
    std::fputc('\n', out);
  }
  std::fflush(out);
}

void printGenerated(int64_t bytes, std::chrono::steady_clock::time_point start,
                    FILE *err) {
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                           start)
                 .count();
  std::fprintf(err, "\ngenerated %lld bytes in %.2f s (%.1f bytes/s)\n",
               static_cast<long long>(bytes), s, s > 0 ? bytes / s : 0);
}

} // namespace stlm
