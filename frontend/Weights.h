//===- Weights.h - initial weights and checkpoint checks --------*- C++ -*-===//
//
// Deterministic initialisation of a spec's parameters (MODEL_SPEC.md's
// rules), writing them as safetensors with the spec in `__metadata__`, and
// checking a safetensors file against a spec.
//
// The random stream of each tensor depends only on (seed, tensor name):
//   key     = splitmix64(seed ^ fnv1a64(name))
//   u_k     = (splitmix64(key + k) >> 11) * 2^-53            (k = 0, 1, ...)
//   pairs (u_{2i}, u_{2i+1}) → Box–Muller:
//     r = sqrt(-2 ln(1 - u_{2i})), a = 2π u_{2i+1}
//     x_{2i} = r cos a, x_{2i+1} = r sin a; element = std · x (as f32)
// so adding or reordering tensors never changes the others, and any tool
// can reproduce the weights (splitmix64 and fnv1a64: support/Hash.h).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_WEIGHTS_H
#define STLM_FRONTEND_WEIGHTS_H

#include "frontend/Params.h"
#include "support/Hash.h"
#include "support/SafeTensors.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace stlm {

/// Metadata keys (MODEL_SPEC.md).
constexpr const char *kSpecKey = "stlm_spec";
constexpr const char *kFormatKey = "stlm_format";
constexpr const char *kFormatVersion = "1";

/// One initialised tensor (f32, row-major).
struct InitTensor {
  const ParamInfo *param = nullptr;
  std::vector<float> values;
};

/// Fills every parameter of `table` from `seed`.
std::vector<InitTensor> initWeights(const ParamTable &table, uint64_t seed);

/// The `__metadata__` of a checkpoint of `spec`.
std::map<std::string, std::string> checkpointMetadata(const ModelSpec &spec);

/// Initialises and writes `path` atomically. Returns false with `error` set.
bool writeInitialWeights(const ModelSpec &spec, uint64_t seed,
                         const std::string &path, std::string &error);

/// Every way `file` differs from what `table` declares: missing tensors,
/// unexpected tensors, wrong dtype, wrong shape. Empty when it matches.
/// Optimizer state (`opt.m.*`, `opt.v.*`) is checked against its parameter.
std::vector<std::string> checkWeights(const ParamTable &table,
                                      const SafeTensorsFile &file);

/// The model spec stored in `file`'s __metadata__ (validated, diagnostics
/// naming `path`), or nothing when the file holds none.
std::optional<SpecResult> storedSpec(const SafeTensorsFile &file,
                                     const std::string &path);

} // namespace stlm

#endif // STLM_FRONTEND_WEIGHTS_H
