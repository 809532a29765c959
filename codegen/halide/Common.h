//===- Common.h - helpers shared by the stlm Halide generators ------------===//
//
// Included only by generator sources (which include Halide.h); never by
// anything that includes LLVM or MLIR headers.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_HALIDE_COMMON_H
#define STLM_CODEGEN_HALIDE_COMMON_H

#include "Halide.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

namespace stlm::halide {

/// Rejects generator parameters a generator cannot serve: a message on
/// stderr and exit status 1 (stlm-kernelgen is a command-line tool).
[[noreturn]] inline void fail(const std::string &generator,
                              const std::string &msg) {
  std::fprintf(stderr, "stlm-kernelgen: error: %s: %s\n", generator.c_str(),
               msg.c_str());
  std::exit(1);
}

/// P(t) of erfc(z) ≈ P(t)·e^{−z²} for z ≥ 0, t = 1/(1 + 0.3275911 z)
/// (Abramowitz & Stegun 7.1.26, erf error ≤ 1.5e-7); Halide has no erf.
inline Halide::Expr erfcPolynomial(Halide::Expr z) {
  using namespace Halide;
  Expr t = 1.0f / (1.0f + 0.3275911f * z);
  return t * (0.254829592f +
              t * (-0.284496736f +
                   t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
}

/// erfc(z) for z ≥ 0.
inline Halide::Expr erfcNonNegative(Halide::Expr z) {
  return erfcPolynomial(z) * Halide::exp(-z * z);
}

/// The standard normal CDF Φ(x). For x < 0 it is ½·erfc(|x|/√2) computed
/// directly, so the tail keeps its relative accuracy instead of cancelling
/// in 1 − erf.
inline Halide::Expr normalCdf(Halide::Expr x) {
  using namespace Halide;
  Expr half = 0.5f * erfcNonNegative(abs(x) * 0.70710678118654752f);
  return select(x < 0.0f, half, 1.0f - half);
}

/// Every kernel buffer's host pointer must be 64-byte aligned (the runtime's
/// arena guarantees it); Halide then uses aligned vector loads and stores,
/// and a misaligned buffer is refused with an error instead of a fault.
constexpr int kHostAlignment = 64;
template <typename... Buffers> void requireAligned(Buffers &...buffers) {
  (buffers.set_host_alignment(kHostAlignment), ...);
}

/// Fixes a row-major [rows, cols] buffer's shape: dimension 0 (the column)
/// is dense, dimension 1 strides by `cols`. Shapes are part of a kernel.
template <typename B> void boundRowMajor(B &b, int cols, int rows) {
  b.dim(0).set_bounds(0, cols).dim(1).set_bounds(0, rows).set_stride(cols);
}

/// GELU's derivative Φ(x) + x φ(x) (stlm_gelu_grad, the matmul's
/// gelu_grad epilogue). Φ's erfc approximation and φ share their
/// exponential e^{−x²/2}.
inline Halide::Expr geluDerivative(Halide::Expr x) {
  using namespace Halide;
  Expr gauss = exp(-0.5f * x * x);
  Expr half = 0.5f * erfcPolynomial(abs(x) * 0.70710678118654752f) * gauss;
  Expr cdf = select(x < 0.0f, half, 1.0f - half);
  return cdf + x * gauss * 0.39894228040143268f;
}

/// 1 / (1 + e^-x).
inline Halide::Expr sigmoid(Halide::Expr x) {
  return 1.0f / (1.0f + Halide::exp(-x));
}

/// Schedules a 1-D elementwise output of `n` elements: vectors, and
/// parallel chunks when there is enough work. Returns the variable of the
/// loop over the chunks (another output of the same n can be computed with
/// f there), or nothing when there are none.
inline std::optional<Halide::Var>
scheduleElementwise(Halide::Func f, Halide::Var i, int n, int vec) {
  using namespace Halide;
  Var io("io"), ii("ii");
  if (n >= 8 * 4096) {
    f.split(i, io, ii, 4096, TailStrategy::GuardWithIf)
        .vectorize(ii, vec, TailStrategy::GuardWithIf)
        .parallel(io);
    return io;
  }
  f.vectorize(i, vec, TailStrategy::GuardWithIf);
  return std::nullopt;
}

} // namespace stlm::halide

#endif // STLM_CODEGEN_HALIDE_COMMON_H
