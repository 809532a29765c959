//===- Sampling.h - choosing the next token from logits ---------*- C++ -*-===//
//
// Greedy, temperature, top-k and top-p (nucleus) sampling over one row of
// logits, deterministic in a 64-bit generator state the caller owns (so a
// seed reproduces a generation). No globals; thread-safe for distinct
// states.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_SAMPLING_H
#define STLM_SUPPORT_SAMPLING_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace stlm::sampling {

struct SamplingOptions {
  double temperature = 1.0; // <= 0: greedy (the first maximum)
  int64_t topK = 0;         // keep the k most likely tokens; 0: all
  double topP = 1.0;        // keep the smallest set with mass >= p; 1: all
};

/// Why `options` are invalid (temperature not finite, topK < 0, topP not in
/// (0, 1]), or empty.
std::string validate(const SamplingOptions &options);

/// The next token for `logits` ([vocab]). Draws one uniform number from
/// `state` (splitmix64) unless the choice is greedy.
int32_t sample(const float *logits, int32_t vocab,
               const SamplingOptions &options, uint64_t &state);

/// The part of a growing token history a model of `context` positions
/// sees: everything until it would exceed the context, then the last
/// context/2 tokens (at least 1), and so on. Both backends generate with
/// it, so a KV cache is refilled once per context/2 tokens and the
/// reference (which recomputes the view) chooses the same tokens.
struct ContextWindow {
  int64_t context = 1;
  size_t start = 0;

  /// Moves `start` for a history of `length` tokens; true when it moved
  /// (a cache must be refilled from `start`).
  bool fit(size_t length) {
    if (static_cast<int64_t>(length - start) <= context)
      return false;
    start = length - static_cast<size_t>(std::max<int64_t>(1, context / 2));
    return true;
  }
};

} // namespace stlm::sampling

#endif // STLM_SUPPORT_SAMPLING_H
