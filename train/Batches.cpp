//===- Batches.cpp - feeding text windows to a model's functions ----------===//

#include "train/Batches.h"

#include <algorithm>
#include <cmath>

namespace stlm {

Feed Feed::forSpec(const ModelSpec &spec) {
  Feed f;
  f.token = spec.embedder.kind == EmbedderKind::Token;
  f.batch = spec.train.batch;
  f.context = spec.core.context;
  f.window = f.token ? spec.core.context + 1 : spec.windowBytes();
  for (const ObjectiveSpec &o : spec.objectives)
    f.seed |= o.kind == ObjectiveKind::MaskedNextToken;
  return f;
}

std::vector<ref::Tensor<float>> Feed::args(const std::vector<int32_t> &w,
                                           int32_t stepSeed) const {
  using Tensor = ref::Tensor<float>;
  std::vector<Tensor> a;
  if (!token) {
    a.push_back(Tensor::ints({batch, window}, w));
    return a;
  }
  std::vector<int32_t> in(batch * context), tg(batch * context);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < context; ++t) {
      in[b * context + t] = w[b * window + t];
      tg[b * context + t] = w[b * window + t + 1];
    }
  a.push_back(Tensor::ints({batch, context}, std::move(in)));
  a.push_back(Tensor::ints({batch, context}, std::move(tg)));
  if (seed)
    a.push_back(Tensor::ints({}, {stepSeed}));
  return a;
}

std::optional<std::string> dataOutsideVocabulary(const ModelSpec &spec,
                                                 const std::string &path,
                                                 const TextData &data) {
  if (spec.embedder.kind != EmbedderKind::Token)
    return std::nullopt;
  int64_t at = data.firstByteFrom(static_cast<int>(
      std::min<int64_t>(spec.embedder.vocabSize, 256)));
  if (at < 0)
    return std::nullopt;
  return path + ": byte " + std::to_string(data.byteAt(at)) + " at offset " +
         std::to_string(at) + " is outside the vocabulary of " +
         std::to_string(spec.embedder.vocabSize) +
         " (a token model reads the text's bytes as token ids)";
}

std::optional<std::string> unsupportedFeed(const ModelSpec &spec) {
  for (const ObjectiveSpec &o : spec.objectives)
    if (o.kind == ObjectiveKind::Distill)
      return std::string("objective 'distill' needs the teacher's logits for "
                         "every batch; the reference trainer does not run "
                         "teachers");
  if (spec.embedder.kind == EmbedderKind::BytePool &&
      spec.embedder.chunking == Chunking::Given)
    return std::string("'given' chunking needs chunk boundaries supplied with "
                       "the data; the reference trainer reads plain text "
                       "only");
  return std::nullopt;
}

bool lossIsPerByte(const ModelSpec &spec) {
  const ObjectiveSpec &o = spec.objectives[0];
  return spec.objectives.size() == 1 && o.weight == 1.0 &&
         ((o.kind == ObjectiveKind::NextToken &&
           spec.embedder.vocabSize == 256) ||
          (o.kind == ObjectiveKind::ChunkBytes && o.maskPad));
}

BatchLoss interpreterLoss(ref::Interpreter<float> &interp,
                          const std::string &fn) {
  return [&interp, fn](const std::vector<ref::Tensor<float>> &args, float &l,
                       std::string &e) {
    std::vector<ref::Tensor<float>> results;
    if (!interp.call(fn, args, results, e))
      return false;
    l = results[0].scalar();
    return true;
  };
}

double validationLoss(ref::Interpreter<float> &interp, const std::string &fn,
                      const TextData &data, const Feed &feed, int64_t limit,
                      int64_t &windows, std::string &error) {
  return validationLoss(interpreterLoss(interp, fn), data, feed, limit,
                        windows, error);
}

double validationLoss(const BatchLoss &batchLoss, const TextData &data,
                      const Feed &feed, int64_t limit, int64_t &windows,
                      std::string &error) {
  int64_t available = data.validationWindows();
  if (limit > 0 && limit < feed.batch) {
    error = "--eval-windows " + std::to_string(limit) +
            " is fewer than one batch (" + std::to_string(feed.batch) +
            "); evaluation runs whole batches";
    return NAN;
  }
  if (available < feed.batch) {
    error = "the validation split holds " + std::to_string(available) +
            " windows, fewer than one batch (" + std::to_string(feed.batch) +
            ")";
    return NAN;
  }
  int64_t total = limit > 0 ? std::min(available, limit) : available;
  total -= total % feed.batch; // whole batches
  double sum = 0;
  int64_t batches = 0;
  std::vector<int32_t> w(feed.batch * feed.window);
  for (int64_t first = 0; first + feed.batch <= total; first += feed.batch) {
    for (int64_t b = 0; b < feed.batch; ++b)
      data.validationWindow(first + b, w.data() + b * feed.window);
    float l = 0;
    if (!batchLoss(feed.args(w, 0), l, error))
      return NAN;
    sum += l;
    ++batches;
  }
  windows = batches * feed.batch;
  double mean = sum / batches;
  if (!std::isfinite(mean)) {
    error = "the validation loss is " + std::to_string(mean) +
            "; training diverged";
    return NAN;
  }
  return mean;
}

} // namespace stlm
