//===- Quantize.cpp - int8 and int4 weights, and their integer matvec -----===//

#include "support/Quantize.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace stlm::quant {

const char *schemeName(Scheme scheme) {
  return scheme == Scheme::Int8 ? "int8" : "int4";
}

std::optional<Scheme> parseScheme(const std::string &name) {
  if (name == "int8")
    return Scheme::Int8;
  if (name == "int4")
    return Scheme::Int4;
  return std::nullopt;
}

std::string groupProblem(const Format &format, int64_t in) {
  if (format.group < 1)
    return "the group must be at least 1, not " + std::to_string(format.group);
  if (format.group > kMaxGroup)
    return "a group of " + std::to_string(format.group) +
           " inputs could overflow its int32 sum; at most " +
           std::to_string(kMaxGroup);
  if (format.scheme == Scheme::Int4 && format.group % 2 != 0)
    return "an int4 group packs two inputs a byte, so it must be even, not " +
           std::to_string(format.group);
  if (in % format.group != 0)
    return std::to_string(in) + " inputs are not a whole number of groups of " +
           std::to_string(format.group);
  return "";
}

std::vector<int64_t> QTensor::dataShape() const {
  return {out, format.scheme == Scheme::Int8 ? in : in / 2};
}

int32_t QTensor::q(int64_t o, int64_t k) const {
  if (format.scheme == Scheme::Int8)
    return static_cast<int8_t>(data[o * in + k]);
  uint8_t byte = data[(o * in + k) / 2];
  return static_cast<int32_t>(k % 2 == 0 ? byte & 0xf : byte >> 4) - 8;
}

namespace {

/// 1/d, or 0 where that is not finite (d = 0, or so small that 1/d
/// overflows): such a group or row quantizes to zeros.
float inverse(float d) {
  float inv = 1.0f / d;
  return d > 0 && std::isfinite(inv) ? inv : 0.0f;
}

/// round(v) to nearest, halves away from zero, clamped to [lo, hi].
int32_t roundClamp(float v, int32_t lo, int32_t hi) {
  float r = std::round(v);
  return static_cast<int32_t>(std::clamp(r, float(lo), float(hi)));
}

} // namespace

QTensor quantize(const float *w, int64_t out, int64_t in,
                 const Format &format) {
  assert(groupProblem(format, in).empty());
  QTensor t;
  t.format = format;
  t.out = out;
  t.in = in;
  const bool int8 = format.scheme == Scheme::Int8;
  const int32_t qmax = int8 ? 127 : 7, qmin = int8 ? -127 : -8;
  t.data.assign(int8 ? out * in : out * in / 2, 0);
  t.scales.resize(out * t.groups());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < t.groups(); ++g) {
      const float *row = w + o * in + g * format.group;
      float amax = 0;
      for (int64_t k = 0; k < format.group; ++k)
        amax = std::max(amax, std::fabs(row[k]));
      float d = amax / float(qmax);
      t.scales[o * t.groups() + g] = d;
      float inv = inverse(d);
      for (int64_t k = 0; k < format.group; ++k) {
        int32_t q = roundClamp(row[k] * inv, qmin, qmax);
        int64_t at = o * in + g * format.group + k;
        if (int8)
          t.data[at] = static_cast<uint8_t>(static_cast<int8_t>(q));
        else
          t.data[at / 2] |= static_cast<uint8_t>((q + 8) << (at % 2 ? 4 : 0));
      }
    }
  return t;
}

std::vector<float> dequantize(const QTensor &q) {
  std::vector<float> w(q.out * q.in);
  for (int64_t o = 0; o < q.out; ++o)
    for (int64_t k = 0; k < q.in; ++k)
      w[o * q.in + k] =
          float(q.q(o, k)) * q.scales[o * q.groups() + k / q.format.group];
  return w;
}

float quantizeRow(const float *x, int64_t n, int8_t *qx) {
  float amax = 0;
  for (int64_t k = 0; k < n; ++k)
    amax = std::max(amax, std::fabs(x[k]));
  float s = amax / 127.0f, inv = inverse(s);
  for (int64_t k = 0; k < n; ++k)
    qx[k] = static_cast<int8_t>(roundClamp(x[k] * inv, -127, 127));
  return s;
}

void matvec(const QTensor &w, const float *x, float *y) {
  std::vector<int8_t> qx(w.in);
  float s = quantizeRow(x, w.in, qx.data());
  for (int64_t o = 0; o < w.out; ++o) {
    float acc = 0;
    for (int64_t g = 0; g < w.groups(); ++g) {
      int32_t dot = 0;
      for (int64_t k = g * w.format.group; k < (g + 1) * w.format.group; ++k)
        dot += w.q(o, k) * int32_t(qx[k]);
      acc += (w.scales[o * w.groups() + g] * s) * float(dot);
    }
    y[o] = acc;
  }
}

} // namespace stlm::quant
