//===- Quantized.h - quantized checkpoints ----------------------*- C++ -*-===//
//
// A checkpoint whose linear layers' weights are int8 or int4
// (support/Quantize.h): `stlm-run quantize` writes one from a float
// checkpoint. Each quantized weight W [out, in] is stored under its own
// name as the integer payload (I8 [out, in], or U8 [out, in / 2] for
// int4) beside `W.scale` (F32 [out, in / group]); every other tensor stays
// F32; optimizer state is dropped. `__metadata__` keeps the spec and adds
// `stlm_quantization`: {"scheme": "int8" | "int4", "group": N}.
//
// The quantized weights are those of the linear layers: wq, wk, wv, wo,
// w1, w2, w3 of every block (core, shared, chunk encoder and decoder) and
// the byte-pool projections embed.proj and head.proj. The embedding
// table, the head (tied or not), norms, slot embeddings and LoRA factors
// stay F32.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_QUANTIZED_H
#define STLM_FRONTEND_QUANTIZED_H

#include "frontend/Params.h"
#include "support/Quantize.h"
#include "support/SafeTensors.h"

#include <optional>
#include <string>
#include <vector>

namespace stlm {

constexpr const char *kQuantizationKey = "stlm_quantization";

/// Whether parameter `name` is quantized (see above).
bool isQuantizedWeight(const std::string &name);

/// How `file` is quantized: nothing for a float checkpoint; false with
/// `error` set when its `stlm_quantization` is malformed.
bool checkpointQuantization(const SafeTensorsFile &file,
                            std::optional<quant::Format> &format,
                            std::string &error);
/// "int8, group 32".
std::string describe(const quant::Format &format);

/// Every way `file` differs from `table`'s parameters quantized in
/// `format` (checkWeights' quantized twin).
std::vector<std::string> checkQuantizedWeights(const ParamTable &table,
                                               const SafeTensorsFile &file,
                                               const quant::Format &format);

/// What quantizeCheckpoint did.
struct QuantizeReport {
  int64_t weights = 0;               // tensors quantized
  int64_t bytesIn = 0, bytesOut = 0; // of the tensors written
  double worstError = 0;             // largest RMS error / RMS of a weight
  std::string worstTensor;
};

/// Writes `outPath` (atomically), the float checkpoint `inPath` with its
/// linear weights quantized in `format`. Refuses a file that is not a
/// float stlm checkpoint, a weight whose inputs are not whole groups, and
/// an output that is the input. False with `error` set.
bool quantizeCheckpoint(const std::string &inPath, const std::string &outPath,
                        const quant::Format &format, QuantizeReport &report,
                        std::string &error);

} // namespace stlm

#endif // STLM_FRONTEND_QUANTIZED_H
