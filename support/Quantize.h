//===- Quantize.h - int8 and int4 weights, and their integer matvec -*- C++
//-*-===//
//
// The quantized forms of a linear layer's weight W [out, in] (row-major,
// y = x · Wᵀ), in groups of `group` consecutive inputs of one output row:
//
//   int8  q = clamp(round(w · (1/d)), -127, 127), d = max|w| / 127 over the
//         group; stored I8 [out, in], one q per byte (llama.cpp's Q8_0
//         arithmetic; group = in is one scale per output channel).
//   int4  q = clamp(round(w · (1/d)), -8, 7), d = max|w| / 7 over the group;
//         stored U8 [out, in / 2], input 2j in the low nibble and 2j + 1
//         in the high one, each as q + 8 (0..15).
//
// with one f32 scale d per group, [out, in / group]; an all-zero group has
// d = 0 and q = 0. Rounding is to nearest, halves away from zero.
//
// The matvec is the reference twin of the quantized kernels: the input row
// is quantized to int8 on the fly (symmetric, s = max|x| / 127), each
// group's products summed exactly in int32, and the row's result is
//   y[o] = Σ_g (d[o, g] · s) · Σ_{k ∈ g} q[o, k] · qx[k]
// with the groups added in order in f32. The integer part is what a kernel
// must match bit for bit.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_QUANTIZE_H
#define STLM_SUPPORT_QUANTIZE_H

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace stlm::quant {

enum class Scheme { Int8, Int4 };

/// "int8" / "int4", and back.
const char *schemeName(Scheme scheme);
std::optional<Scheme> parseScheme(const std::string &name);

struct Format {
  Scheme scheme = Scheme::Int8;
  int64_t group = 32; // inputs per scale
  bool operator==(const Format &o) const {
    return scheme == o.scheme && group == o.group;
  }
  bool operator!=(const Format &o) const { return !(*this == o); }
};

/// The largest group: 127 · 127 · kMaxGroup stays below 2^31, so a
/// group's int32 sum is exact.
inline constexpr int64_t kMaxGroup = 131072;

/// Why `in` inputs cannot be quantized in `format`'s groups, or "": the
/// group must be in [1, kMaxGroup] and divide `in` (and be even for int4).
/// Weights must be finite (quantizeCheckpoint checks).
std::string groupProblem(const Format &format, int64_t in);

/// A quantized weight [out, in].
struct QTensor {
  Format format;
  int64_t out = 0, in = 0;
  std::vector<uint8_t> data; // int8: out · in bytes; int4: out · in / 2
  std::vector<float> scales; // out · (in / group)

  int64_t groups() const { return in / format.group; }
  /// The stored payload's shape: [out, in] (int8) or [out, in / 2].
  std::vector<int64_t> dataShape() const;
  /// The integer weight at (o, k).
  int32_t q(int64_t o, int64_t k) const;
};

/// Quantizes `w` [out, in]; `format` must have no groupProblem.
QTensor quantize(const float *w, int64_t out, int64_t in, const Format &format);
/// The weights the integers and scales stand for: q · d.
std::vector<float> dequantize(const QTensor &q);

/// One row of activations as int8: s = max|x| / 127 (0 for a zero row),
/// qx = clamp(round(x · (1/s)), -127, 127); returns s.
float quantizeRow(const float *x, int64_t n, int8_t *qx);

/// y [out] for one input row x [in], as described above.
void matvec(const QTensor &w, const float *x, float *y);

} // namespace stlm::quant

#endif // STLM_SUPPORT_QUANTIZE_H
