//===- Entropy.h - chunk starts where a byte model is surprised -*- C++ -*-===//
//
// `stlm-run entropy`: the rule of Meta's Byte Latent Transformer for
// `given` chunking. A small token (byte) model predicts every byte of a
// text from the bytes before it; a chunk starts before each byte whose
// prediction's entropy H (bits) is above a threshold θ (the global rule),
// or, with the relative rule, rose by more than θ over the previous byte's.
// Bytes that continue a UTF-8 character (0x80-0xBF) never start a chunk.
// The result is MODEL_SPEC's side file: ascending byte offsets, one per
// line, which `stlm-run train|eval --chunk-starts` reads.
//
// Every byte gets the model's context: windows of T bytes every T/2, each
// scoring its last T/2 predictions (the first window all of its own), so a
// prediction sees at least T/2 bytes wherever the text has them.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TRAIN_ENTROPY_H
#define STLM_TRAIN_ENTROPY_H

#include "frontend/Spec.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace stlm {

/// The logits [B, T, V] of B windows of T token ids (`tokens`, [B, T]);
/// false with `error` set.
using WindowLogits =
    std::function<bool(const std::vector<int32_t> &tokens,
                       std::vector<float> &logits, std::string &error)>;

/// What `stlm-run entropy` was asked.
struct EntropyOptions {
  std::string checkpoint, dataPath, outPath;
  double threshold = NAN;  // bits; NaN: chosen for meanBytes
  double meanBytes = 0;    // > 0: the global threshold giving this mean
  bool relative = false;   // H[j] - H[j-1] > θ instead of H[j] > θ
  FILE *progress = stderr; // null: quiet
};

/// The model that scores the text: B windows of T ids per call, V logits
/// per position.
struct EntropyModel {
  int64_t batch = 0, context = 0, vocab = 0;
  WindowLogits logits;
};

/// H[j], the entropy in bits of the model's prediction of byte j of
/// `text` from the bytes before it (H[0] = NaN: nothing predicts it).
/// Progress (bytes, bytes/s, ETA) on `progress` when not null.
bool byteEntropies(const std::vector<uint8_t> &text, const EntropyModel &m,
                   std::vector<float> &entropy, std::string &error,
                   FILE *progress);

/// The offsets (> 0, ascending) where a chunk starts by the rule.
std::vector<int64_t> entropyStarts(const std::vector<float> &entropy,
                                   const std::vector<uint8_t> &text,
                                   double threshold, bool relative);

/// The global threshold whose chunks have about `meanBytes` bytes on
/// average (between two of the eligible entropies).
double thresholdForMean(const std::vector<float> &entropy,
                        const std::vector<uint8_t> &text, double meanBytes);

/// The text the command scores, checked before any model is compiled: a
/// data file (TextData's checks) of two bytes at least, each a token id of
/// `spec`, and an output that is neither the text nor the checkpoint.
/// False with `error` set.
bool readEntropyText(const EntropyOptions &options, const ModelSpec &spec,
                     std::vector<uint8_t> &text, std::string &error);

/// The rest of the command once the model is open: scores `text`, writes
/// the side file (atomically: a failure leaves any old one whole) and a
/// summary line on `out`. 0, or 1 with a message on `err`.
int writeEntropyStarts(const EntropyOptions &options,
                       const std::vector<uint8_t> &text, const EntropyModel &m,
                       FILE *out, FILE *err);

} // namespace stlm

#endif // STLM_TRAIN_ENTROPY_H
