//===- Batches.cpp - feeding text windows to a model's functions ----------===//

#include "train/Batches.h"

#include "reference/Kernels.h"

#include <algorithm>
#include <cmath>
#include <memory>

namespace stlm {

Feed Feed::forSpec(const ModelSpec &spec) {
  Feed f;
  f.token = spec.embedder.kind == EmbedderKind::Token;
  f.batch = spec.train.batch;
  f.context = spec.core.context;
  f.window = f.token ? spec.core.context + 1 : spec.windowBytes();
  for (const ObjectiveSpec &o : spec.objectives)
    f.seed |= o.kind == ObjectiveKind::MaskedNextToken;
  f.objectives = spec.objectives;
  f.chunking = spec.embedder.chunking;
  f.stride = spec.embedder.stride;
  f.slots = spec.embedder.chunkBytes;
  return f;
}

namespace {
/// The chunks [B, C, L] and counts [B] a byte-pool model cuts `bytes`
/// ([B, N]) into: the reference twin of the compiled stlm_chunk.
void chunksOf(const Feed &f, const std::vector<int32_t> &bytes,
              std::vector<int32_t> &chunks, std::vector<int32_t> &count) {
  int64_t B = f.batch, N = f.window, C = f.context, L = f.slots;
  chunks.assign(B * C * L, 0);
  count.assign(B, 0);
  ref::chunk(f.chunking == Chunking::Fixed   ? ref::ChunkMode::Fixed
             : f.chunking == Chunking::Given ? ref::ChunkMode::Given
                                             : ref::ChunkMode::Words,
             bytes.data(), B, N, f.stride, C, L, chunks.data(), count.data());
}
} // namespace

std::vector<Counted>
Feed::counts(const std::vector<ref::Tensor<float>> &args) const {
  std::vector<Counted> out;
  std::vector<int32_t> chunks, count, targets;
  std::vector<uint8_t> flags;
  if (!token)
    chunksOf(*this, args[0].i, chunks, count);
  int64_t positions = batch * context;
  for (const ObjectiveSpec &o : objectives) {
    Counted c{positions, positions};
    if (o.kind == ObjectiveKind::MaskedNextToken) {
      // The positions stlm.mask_tokens masks with the batch's seed.
      std::vector<int32_t> masked(positions);
      std::unique_ptr<bool[]> mask(new bool[positions]);
      ref::maskTokens(args[0].i.data(), positions, args[2].i[0], o.maskProb,
                      o.maskId, masked.data(), mask.get());
      c.targets = std::count(mask.get(), mask.get() + positions, true);
      c.bytes = c.targets;
    } else if (o.kind == ObjectiveKind::ChunkBytes ||
               o.kind == ObjectiveKind::Reconstruction) {
      bool next = o.kind == ObjectiveKind::ChunkBytes;
      targets.assign(chunks.size(), 0);
      flags.assign(chunks.size(), 0);
      ref::chunkTargets(chunks.data(), batch, context, slots, count.data(),
                        next, o.maskPad, targets.data(), flags.data());
      c.targets = std::count(flags.begin(), flags.end(), uint8_t(1));
      c.bytes = ref::chunkRealBytes(chunks.data(), batch, context, slots,
                                    count.data(), next);
    }
    out.push_back(c);
  }
  return out;
}

int64_t Feed::consumedBytes(const std::vector<int32_t> &w) const {
  if (token)
    return batch * context;
  std::vector<int32_t> chunks, count;
  chunksOf(*this, w, chunks, count);
  return ref::chunkRealBytes(chunks.data(), batch, context, slots,
                             count.data(), /*next=*/false);
}

std::vector<int64_t> Feed::validationStarts(const TextData &data) const {
  std::vector<int64_t> starts;
  std::vector<int32_t> row(window);
  Feed one = *this;
  one.batch = 1;
  for (int64_t at = 0; at < data.validationBytes();) {
    data.validationRow(at, window, row.data());
    int64_t used = one.consumedBytes(row);
    if (used <= 0)
      break; // cannot happen: a row of text holds a chunk
    starts.push_back(at);
    at += used;
  }
  return starts;
}

int Feed::perByteObjective() const {
  for (size_t i = 0; i < objectives.size(); ++i)
    if (objectives[i].kind == (token ? ObjectiveKind::NextToken
                                     : ObjectiveKind::ChunkBytes))
      return static_cast<int>(i);
  return -1;
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

std::optional<std::string>
dataOutsideVocabulary(const ModelSpec &spec, const std::string &path,
                      const std::vector<uint8_t> &text) {
  if (spec.embedder.kind != EmbedderKind::Token)
    return std::nullopt;
  for (size_t at = 0; at < text.size(); ++at)
    if (text[at] >= spec.embedder.vocabSize)
      return path + ": byte " + std::to_string(text[at]) + " at offset " +
             std::to_string(at) + " is outside the vocabulary of " +
             std::to_string(spec.embedder.vocabSize) +
             " (a token model reads the text's bytes as token ids)";
  return std::nullopt;
}

bool loadChunkStarts(const ModelSpec &spec, const std::string &startsPath,
                     const std::string &dataPath, TextData &data,
                     std::string &error) {
  bool given = spec.embedder.kind == EmbedderKind::BytePool &&
               spec.embedder.chunking == Chunking::Given;
  if (given && startsPath.empty()) {
    error = "'" + spec.name + "' chunks its bytes where a side file says " +
            "('given' chunking): give the chunk starts of " + dataPath +
            " with --chunk-starts FILE (stlm-run entropy writes one)";
    return false;
  }
  if (!given && !startsPath.empty()) {
    error = "--chunk-starts is for byte-pool models with 'given' chunking; "
            "'" +
            spec.name + "' chunks its bytes itself";
    return false;
  }
  return startsPath.empty() || data.loadChunkStarts(startsPath, error);
}

BatchLoss interpreterLoss(ref::Interpreter<float> &interp) {
  return [&interp](const std::vector<ref::Tensor<float>> &args,
                   std::vector<float> &losses, std::string &e) {
    std::vector<ref::Tensor<float>> results;
    if (!interp.call("eval", args, results, e))
      return false;
    losses.clear();
    for (const ref::Tensor<float> &r : results)
      losses.push_back(r.scalar());
    return true;
  };
}

Validation validationLoss(const BatchLoss &batchLoss, const TextData &data,
                          const Feed &feed, int64_t limit,
                          std::string &error) {
  Validation v;
  // A byte-pool model's windows are contiguous, a token model's every
  // `window` bytes.
  bool contiguous = !feed.token;
  std::vector<int64_t> starts;
  if (contiguous)
    starts = feed.validationStarts(data);
  int64_t available = contiguous ? static_cast<int64_t>(starts.size())
                                 : data.validationWindows();
  if (limit > 0 && limit < feed.batch) {
    error = "--eval-windows " + std::to_string(limit) +
            " is fewer than one batch (" + std::to_string(feed.batch) +
            "); evaluation runs whole batches";
    return v;
  }
  if (available < feed.batch) {
    error = "the validation split holds " + std::to_string(available) +
            " windows, fewer than one batch (" + std::to_string(feed.batch) +
            ")";
    return v;
  }
  int64_t total = limit > 0 ? std::min(available, limit) : available;
  if (!contiguous)
    total -= total % feed.batch; // whole batches
  // Per objective: summed nats, counted targets, real bytes predicted.
  size_t k = feed.objectives.size();
  std::vector<double> nats(k, 0.0);
  std::vector<Counted> counted(k);
  std::vector<int32_t> w(feed.batch * feed.window);
  std::vector<float> losses;
  for (int64_t first = 0; first < total; first += feed.batch) {
    for (int64_t b = 0; b < feed.batch; ++b) {
      int32_t *row = w.data() + b * feed.window;
      if (first + b >= total) // past the last window: no byte, no target
        std::fill(row, row + feed.window, 256);
      else if (contiguous)
        data.validationRow(starts[first + b], feed.window, row);
      else
        data.validationWindow(first + b, row);
    }
    std::vector<ref::Tensor<float>> args = feed.args(w, 0);
    if (!batchLoss(args, losses, error))
      return v;
    if (losses.size() != k + 1) {
      error = "the evaluation gave " + std::to_string(losses.size()) +
              " losses, not the loss and one per objective (" +
              std::to_string(k) + "); compile the model again with this "
                                  "stlm-compile";
      return v;
    }
    std::vector<Counted> c = feed.counts(args);
    for (size_t i = 0; i < k; ++i) {
      nats[i] += static_cast<double>(losses[i + 1]) * c[i].targets;
      counted[i].targets += c[i].targets;
      counted[i].bytes += c[i].bytes;
    }
    v.windows += std::min(feed.batch, total - first);
  }
  double loss = 0;
  for (size_t i = 0; i < k; ++i)
    if (counted[i].targets > 0)
      loss += feed.objectives[i].weight * nats[i] / counted[i].targets;
  if (!std::isfinite(loss)) {
    error = "the validation loss is " + std::to_string(loss) +
            "; training diverged";
    return v;
  }
  v.loss = loss;
  if (int p = feed.perByteObjective(); p >= 0 && counted[p].bytes > 0)
    v.bitsPerByte = nats[p] / counted[p].bytes / std::log(2.0);
  return v;
}

} // namespace stlm
