//===- Sampling.cpp - choosing the next token from logits -----------------===//

#include "support/Sampling.h"

#include "support/Hash.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace stlm::sampling {

std::string validate(const SamplingOptions &o) {
  if (!std::isfinite(o.temperature))
    return "temperature must be a finite number";
  if (o.topK < 0)
    return "top-k must be >= 0 (0 keeps every token)";
  if (!(o.topP > 0.0 && o.topP <= 1.0))
    return "top-p must be in (0, 1] (1 keeps every token)";
  return "";
}

int32_t sample(const float *logits, int32_t vocab, const SamplingOptions &o,
               uint64_t &state) {
  int32_t best = 0;
  for (int32_t v = 1; v < vocab; ++v)
    if (logits[v] > logits[best])
      best = v;
  if (o.temperature <= 0.0 || o.topK == 1)
    return best;

  // Probabilities at the temperature, most likely first (ties by id).
  std::vector<double> p(vocab);
  double sum = 0;
  for (int32_t v = 0; v < vocab; ++v)
    sum += p[v] = std::exp((double(logits[v]) - logits[best]) / o.temperature);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  size_t keep = vocab;
  if (o.topK > 0)
    keep = std::min<size_t>(keep, o.topK);
  if (o.topP < 1.0) {
    double mass = 0;
    for (size_t i = 0; i < keep; ++i) {
      mass += p[order[i]] / sum;
      if (mass >= o.topP) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i)
    kept += p[order[i]];

  // splitmix64 → uniform in [0, 1).
  uint64_t z = splitmix64Next(state);
  double u = static_cast<double>(z >> 11) * 0x1.0p-53 * kept;
  for (size_t i = 0; i < keep; ++i) {
    u -= p[order[i]];
    if (u < 0)
      return order[i];
  }
  return order[keep - 1];
}

bool chunkPrompt(ChunkRule rule, int64_t stride, int64_t slots,
                 const int32_t *values, size_t n,
                 std::vector<int32_t> &chunks, size_t *bad) {
  chunks.clear();
  int64_t fill = slots; // the current chunk is full: the first byte opens
  for (size_t i = 0; i < n; ++i) {
    int32_t v = values[i];
    bool flagged =
        rule == ChunkRule::Given && v >= kChunkStart && v < kChunkStart + 256;
    int32_t byte = flagged ? v - kChunkStart : v;
    if (byte < 0 || byte > 255) {
      if (bad)
        *bad = i;
      return false;
    }
    bool alnum = (byte >= '0' && byte <= '9') || (byte >= 'A' && byte <= 'Z') ||
                 (byte >= 'a' && byte <= 'z');
    bool start = fill == slots || i == 0 ||
                 (rule == ChunkRule::Fixed && stride > 0 &&
                  static_cast<int64_t>(i) % stride == 0) ||
                 (rule == ChunkRule::Words && byte < 128 && !alnum) || flagged;
    if (start) {
      chunks.insert(chunks.end(), slots, kChunkPad);
      fill = 0;
    }
    chunks[chunks.size() - slots + fill++] = byte;
  }
  return true;
}

int64_t sampleChunk(const float *logits, int64_t slots, int64_t classes,
                    const SamplingOptions &options, uint64_t &state,
                    int32_t *chunk) {
  int64_t bytes = 0;
  std::fill(chunk, chunk + slots, kChunkPad);
  for (int64_t s = 0; s < slots; ++s) {
    int32_t v = sample(logits + s * classes, s == 0 ? 256 : kChunkPad + 1,
                       options, state);
    if (v == kChunkPad)
      break;
    chunk[s] = v;
    ++bytes;
  }
  return bytes;
}

} // namespace stlm::sampling
