//===- Batches.h - feeding text windows to a model's functions -*- C++ -*-===//
//
// How @loss / @eval / @train_step take a batch of text windows, and the
// validation loss over the validation split: shared by the training loop,
// both engines and `stlm-run eval`. Batches are reference tensors
// (reference/Interpreter.h), the oracle's plain data type.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_BATCHES_H
#define STLM_TRAIN_BATCHES_H

#include "frontend/Data.h"
#include "frontend/Spec.h"
#include "reference/Interpreter.h"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace stlm {

/// What one objective counts in a batch: its targets, and the real bytes
/// of text they predict (a pad slot or an end marker is a target, not a
/// byte).
struct Counted {
  int64_t targets = 0, bytes = 0;
};

/// How a model's functions take a batch.
struct Feed {
  bool token = true; // (tokens, targets [, seed]) vs (bytes)
  bool seed = false; // masked_next_token: a per-step seed
  int64_t batch = 0, context = 0, window = 0;
  /// The spec's objectives, and (byte-pool) how the bytes are chunked.
  std::vector<ObjectiveSpec> objectives;
  Chunking chunking = Chunking::Fixed;
  int64_t stride = 0, slots = 0;

  static Feed forSpec(const ModelSpec &spec);
  /// Arguments for windows `w` ([B, window] bytes).
  std::vector<ref::Tensor<float>> args(const std::vector<int32_t> &w,
                                       int32_t stepSeed) const;
  /// Per objective, what it counts in the batch `args` (as the compiled
  /// objectives count: the byte-pool ones from the chunks the model cuts,
  /// computed here by the reference chunking).
  std::vector<Counted> counts(const std::vector<ref::Tensor<float>> &args) const;
  /// The bytes of text windows `w` feed the model: a token model's T
  /// inputs per window, a byte-pool model's bytes in its T chunks (with
  /// `words`, fewer than the window holds).
  int64_t consumedBytes(const std::vector<int32_t> &w) const;
  /// The objective whose nats per real byte are the bits per byte
  /// (next_token, or chunk_bytes); -1 when there is none.
  int perByteObjective() const;
  /// A byte-pool model's validation windows (MODEL_SPEC): each starts at
  /// the first byte its predecessor's chunks did not consume, so every
  /// validation byte is read once; the last is cut short (filled with 256,
  /// no byte). The first byte of each, in order.
  std::vector<int64_t> validationStarts(const TextData &data) const;
};

/// Why the bytes of `text` (read from `path`) cannot be the token ids of
/// `spec` (a byte outside a vocabulary smaller than 256), or nothing.
std::optional<std::string>
dataOutsideVocabulary(const ModelSpec &spec, const std::string &path,
                      const std::vector<uint8_t> &text);

/// Reads the chunk starts file `startsPath` into `data` (loaded from
/// `dataPath`) for a model with `given` chunking, which needs one; any
/// other model takes none (`startsPath` empty). False with `error` set.
bool loadChunkStarts(const ModelSpec &spec, const std::string &startsPath,
                     const std::string &dataPath, TextData &data,
                     std::string &error);

/// The losses of one batch given its arguments: the loss, then each
/// objective's own mean loss in the spec's order (what @eval returns);
/// false with `error` set.
using BatchLoss = std::function<bool(const std::vector<ref::Tensor<float>> &,
                                     std::vector<float> &, std::string &)>;

/// A validation result (MODEL_SPEC): the loss pooled over every counted
/// target of the evaluated windows, per objective, then weighted as the
/// spec weights them (it never depends on the batch size); the bits per
/// byte of the next-byte objective (its summed nats over the real bytes it
/// predicts, / ln 2), NaN when the model has none.
struct Validation {
  double loss = NAN, bitsPerByte = NAN;
  int64_t windows = 0;
};

/// Validation over the first `limit` validation windows (0: all): a token
/// model's in whole batches, a byte-pool model's contiguous windows (the
/// last batch filled with empty rows); the loss NaN with `error` set on
/// failure or divergence.
Validation validationLoss(const BatchLoss &loss, const TextData &data,
                          const Feed &feed, int64_t limit,
                          std::string &error);
/// The losses of a batch as @eval of the reference interpreter computes
/// them (the interpreter must outlive the result).
BatchLoss interpreterLoss(ref::Interpreter<float> &interp);

} // namespace stlm

#endif // STLM_TRAIN_BATCHES_H
