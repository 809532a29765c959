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

/// How a model's functions take a batch.
struct Feed {
  bool token = true; // (tokens, targets [, seed]) vs (bytes)
  bool seed = false; // masked_next_token: a per-step seed
  int64_t batch = 0, context = 0, window = 0;

  static Feed forSpec(const ModelSpec &spec);
  /// Arguments for windows `w` ([B, window] bytes).
  std::vector<ref::Tensor<float>> args(const std::vector<int32_t> &w,
                                       int32_t stepSeed) const;
};

/// Why the bytes of `data` (read from `path`) cannot be the token ids of
/// `spec` (a byte outside a vocabulary smaller than 256), or nothing.
std::optional<std::string> dataOutsideVocabulary(const ModelSpec &spec,
                                                 const std::string &path,
                                                 const TextData &data);

/// Why `spec` cannot be fed from plain text, or nothing.
std::optional<std::string> unsupportedFeed(const ModelSpec &spec);

/// Whether the loss is a mean over predicted bytes (so loss / ln 2 is bits
/// per byte): a lone next-token objective on a byte vocabulary, or
/// next-chunk bytes with pads masked.
bool lossIsPerByte(const ModelSpec &spec);

/// Mean of `fn`'s loss over whole batches of the first `limit` validation
/// windows (0: all). NaN with `error` set on failure or a non-finite loss.
/// The loss of one batch given its arguments; false with `error` set.
using BatchLoss = std::function<bool(const std::vector<ref::Tensor<float>> &,
                                     float &, std::string &)>;

/// Mean loss over the first `limit` validation windows (0: all), in whole
/// batches; NaN with `error` set on failure or divergence.
double validationLoss(const BatchLoss &loss, const TextData &data,
                      const Feed &feed, int64_t limit, int64_t &windows,
                      std::string &error);
/// The loss of a batch as function `fn` of the reference interpreter
/// computes it (the interpreter must outlive the result).
BatchLoss interpreterLoss(ref::Interpreter<float> &interp,
                          const std::string &fn);
/// The same with function `fn` of the reference interpreter.
double validationLoss(ref::Interpreter<float> &interp, const std::string &fn,
                      const TextData &data, const Feed &feed, int64_t limit,
                      int64_t &windows, std::string &error);

} // namespace stlm

#endif // STLM_TRAIN_BATCHES_H
