//===- Params.h - the parameters of a model spec ----------------*- C++ -*-===//
//
// Every tensor a spec declares, named exactly as in MODEL_SPEC.md's table,
// with its shape, initialisation and how many roles it plays. This is the one
// place that knows the names: the IR builder, `--print-params`, `stlm-run
// init` and the checkpoint checker all read it.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_PARAMS_H
#define STLM_FRONTEND_PARAMS_H

#include "frontend/Spec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace stlm {

enum class InitKind { Normal, Zeros, Ones };

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  InitKind init = InitKind::Normal;
  double std = 0.0; // Normal only
  /// Roles this one tensor plays: 1, 2 for an embedding tied to the head,
  /// n for a weight shared by n layers. The as-if-untied count multiplies
  /// by it.
  int64_t uses = 1;
  /// Human-readable tying/sharing note ("" when neither).
  std::string sharing;

  int64_t numel() const;
};

struct ParamTable {
  std::vector<ParamInfo> params; // declaration order

  /// Scalars stored (each tensor once).
  int64_t uniqueCount() const;
  /// Scalars if every tied/shared tensor were a separate copy per role.
  int64_t untiedCount() const;
  const ParamInfo *find(const std::string &name) const;
};

/// "[a, b, c]": how diagnostics print a shape.
std::string shapeString(const std::vector<int64_t> &shape);

/// The parameters of `spec` (which must be valid).
ParamTable buildParamTable(const ModelSpec &spec);

/// The per-block parameter names of a decoder layer, encoder block or
/// decoder block, shared by the table and the IR builder.
struct BlockNames {
  std::string attnNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3;

  /// The name for a logical key: "attn_norm", "wq", ..., "w3".
  const std::string &get(const std::string &key) const;
};
/// Names for `prefix` + index (e.g. "layers.3", "embed.enc.0"); shared
/// weights of a core layer resolve to `shared.*`.
BlockNames coreLayerNames(const ModelSpec &spec, int64_t layer);
BlockNames chunkBlockNames(const std::string &prefix, int64_t index);
/// `layers.{l}.lora.{w}.a` / `.b`.
std::string loraName(int64_t layer, const std::string &weight, char part);

} // namespace stlm

#endif // STLM_FRONTEND_PARAMS_H
