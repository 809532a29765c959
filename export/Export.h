//===- Export.h - checkpoints to GGUF and transformers' formats -*- C++ -*-===//
//
// `stlm-run export W.safetensors --format gguf|hf -o OUT` writes a token
// model's checkpoint as a llama-architecture model other tools load:
//
//   gguf  one GGUF v3 file for llama.cpp: general.architecture "llama",
//         the hyperparameters, a byte vocabulary (token i is byte i), and
//         the tensors as F32, F16, Q8_0 or Q4_0 (norms stay F32). llama.cpp's
//         llama rotates adjacent pairs, as MODEL_SPEC's RoPE does, so q
//         and k are written as they are.
//   hf    a directory with config.json and model.safetensors that
//         transformers' LlamaForCausalLM loads. Its RoPE rotates halves
//         (pairs (i, i + hd/2)), so the rows of wq and wk are permuted per
//         head: even rows first, then odd ones.
//
// Shared layers are written once per layer (both formats have only
// per-layer weights); LoRA deltas are merged into them (W + b·a) only with
// `mergeLora`. What the formats cannot express is refused by
// exportProblem(): byte-pool models, GELU FFNs, LoRA without merging, and
// for GGUF a vocabulary other than the 256 bytes.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_EXPORT_EXPORT_H
#define STLM_EXPORT_EXPORT_H

#include "frontend/Spec.h"
#include "support/SafeTensors.h"

#include <cstdint>
#include <string>

namespace stlm {

enum class ExportFormat { GGUF, HF };
/// GGUF tensor types (ggml's numbering is the file's, not this enum's).
enum class GgufType { F32, F16, Q8_0, Q4_0 };

struct ExportOptions {
  ExportFormat format = ExportFormat::GGUF;
  GgufType type = GgufType::F32; // gguf only
  bool mergeLora = false;
  std::string out; // gguf: the file; hf: the directory
};

/// Why `spec` cannot be exported as asked, or "".
std::string exportProblem(const ModelSpec &spec, const ExportOptions &options);

/// Writes `weights` (a checkpoint of `spec`, already checked against it)
/// as `options` says. False with `error` set; nothing is left half
/// written (files go through a temporary name). `summary` says what was
/// written.
bool exportCheckpoint(const ModelSpec &spec, const SafeTensorsFile &weights,
                      const ExportOptions &options, std::string &summary,
                      std::string &error);

/// IEEE binary16 of `value`, rounded to nearest even (inf on overflow).
uint16_t toHalf(float value);

} // namespace stlm

#endif // STLM_EXPORT_EXPORT_H
