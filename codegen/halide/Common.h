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

/// erf(x) to within 1.5e-7 (Abramowitz & Stegun 7.1.26); Halide has no erf.
inline Halide::Expr erfApprox(Halide::Expr x) {
  using namespace Halide;
  Expr ax = abs(x);
  Expr t = 1.0f / (1.0f + 0.3275911f * ax);
  Expr poly =
      t * (0.254829592f +
           t * (-0.284496736f +
                t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  Expr y = 1.0f - poly * exp(-ax * ax);
  return select(x < 0.0f, -y, y);
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

/// 1 / (1 + e^-x).
inline Halide::Expr sigmoid(Halide::Expr x) {
  return 1.0f / (1.0f + Halide::exp(-x));
}

/// Schedules a 1-D elementwise output of `n` elements: vectors, and
/// parallel chunks when there is enough work.
inline void scheduleElementwise(Halide::Func f, Halide::Var i, int n,
                                int vec) {
  using namespace Halide;
  Var io("io"), ii("ii");
  if (n >= 8 * 4096) {
    f.split(i, io, ii, 4096, TailStrategy::GuardWithIf)
        .vectorize(ii, vec, TailStrategy::GuardWithIf)
        .parallel(io);
  } else {
    f.vectorize(i, vec, TailStrategy::GuardWithIf);
  }
}

} // namespace stlm::halide

#endif // STLM_CODEGEN_HALIDE_COMMON_H
