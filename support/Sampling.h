//===- Sampling.h - choosing the next token from logits ---------*- C++ -*-===//
//
// Greedy, temperature, top-k and top-p (nucleus) sampling over one row of
// logits, deterministic in a 64-bit generator state the caller owns (so a
// seed reproduces a generation). No globals; thread-safe for distinct
// states. Byte-pool models generate a chunk at a time: their prompt is cut
// by the model's chunking rule and each new chunk sampled slot by slot.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_SAMPLING_H
#define STLM_SUPPORT_SAMPLING_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

//===----------------------------------------------------------------------===//
// Byte-pool generation: a chunk at a time
//===----------------------------------------------------------------------===//

/// A byte-pool model's chunking (MODEL_SPEC, stlm.chunk).
enum class ChunkRule { Fixed, Words, Given };
/// The pad value of empty chunk slots; after a chunk's bytes it ends it.
constexpr int32_t kChunkPad = 256;
/// Added to a byte of a `given` model's input where a chunk starts.
constexpr int32_t kChunkStart = 512;

/// Cuts `n` prompt values into chunks of `slots` values each (its bytes,
/// then pads), by the rules of stlm.chunk without a capacity: a chunk
/// starts at the first byte, when the chunk holds `slots` bytes, and where
/// `rule` says (every `stride` bytes; before an ASCII byte that is not a
/// letter or digit; at a value 512 + b, the byte b). False when a value is
/// not a byte the rule reads, with its index in `*bad` (when not null).
bool chunkPrompt(ChunkRule rule, int64_t stride, int64_t slots,
                 const int32_t *values, size_t n, std::vector<int32_t> &chunks,
                 size_t *bad = nullptr);

/// Samples the chunk that `logits` ([slots, classes]: 256 bytes, the pad,
/// and more classes that are never sampled) predict, slot by slot with
/// `options`: slot 0 among the 256 bytes (a chunk holds one at least),
/// every later slot among the bytes and the pad, which ends the chunk.
/// Writes the chunk (its bytes, then pads) to `chunk` ([slots]) and
/// returns how many bytes it holds.
int64_t sampleChunk(const float *logits, int64_t slots, int64_t classes,
                    const SamplingOptions &options, uint64_t &state,
                    int32_t *chunk);

} // namespace stlm::sampling

#endif // STLM_SUPPORT_SAMPLING_H
