//===- Quantized.cpp - the int8 / int4 weight matvec ----------------------===//
//
//   stlm_qmatvec_int8  a [m, k] f32, w [n, k] i8, scale [n, k/group] f32
//                      -> c [m, n] f32
//   stlm_qmatvec_int4  the same with w [n, k/2] u8
//
// The arithmetic of support/Quantize.h, which is its reference twin: each
// row of `a` is quantized to int8 (s = max|a| / 127, q = round(a · (1/s))
// with halves away from zero, clamped to ±127), each group's products are
// summed exactly in int32, and c[i, j] = Σ_g (scale[j, g] · s_i) · dot_g
// with the groups added in order in f32, so the kernel and the twin agree
// bit for bit. int4 weights are two per byte, the even input in the low
// nibble, each stored as q + 8.
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

#include <type_traits>

using namespace Halide;

namespace {

template <bool Int4>
class QuantizedMatVec : public Generator<QuantizedMatVec<Int4>> {
public:
  template <typename T> using Param = GeneratorParam<T>;
  template <typename T> using In = GeneratorInput<T>;
  using Weight = std::conditional_t<Int4, uint8_t, int8_t>;
  static constexpr const char *kName =
      Int4 ? "stlm_qmatvec_int4" : "stlm_qmatvec_int8";

  Param<int> m{"m", 1};  // rows of a and c
  Param<int> n{"n", 64}; // outputs: rows of w, columns of c
  Param<int> k{"k", 64}; // inputs
  Param<int> group{"group", 32};

  In<Buffer<float>> a{"a", 2};              // [m, k]
  In<Buffer<Weight>> w{"w", 2};             // [n, k] or [n, k/2]
  In<Buffer<float>> scale{"scale", 2};      // [n, k/group]
  GeneratorOutput<Buffer<float>> c{"c", 2}; // [m, n]

  void generate() {
    const int M = m, N = n, K = k, G = group;
    if (M < 1 || N < 1 || K < 1 || G < 1 || K % G != 0 || (Int4 && G % 2 != 0))
      stlm::halide::fail(kName,
                         "m, n, k and group must be positive, the group must "
                         "divide k (and be even for int4)");
    // The row's scale and its int8 values.
    // strict_float throughout: the twin's f32 steps, no contraction.
    RDom rk(0, K, "rk");
    amax(i) = maximum(abs(a(rk, i)));
    Expr s = amax(i) / 127.0f, r1 = 1.0f / s;
    inv(i) = strict_float(select(s > 0.0f && is_finite(r1), r1, 0.0f));
    Expr v = a(x, i) * inv(i);
    // round(): halves away from zero (Halide's round is to even). v − t is
    // exact in f32 for |v| < 2^23, and v is clamped to ±127 after.
    Expr t = trunc(v);
    Expr r = select(abs(v - t) >= 0.5f, t + select(v < 0.0f, -1.0f, 1.0f), t);
    qa(x, i) = cast<int32_t>(strict_float(clamp(r, -127.0f, 127.0f)));
    // The weights as int32.
    if (!Int4) {
      qw(x, j) = cast<int32_t>(w(x, j));
    } else {
      Expr byte = cast<int32_t>(w(x / 2, j));
      qw(x, j) = select(x % 2 == 0, byte & 15, byte >> 4) - 8;
    }
    // Each group's exact dot product, then the groups in order.
    RDom rg(0, G, "rg");
    dot(g, j, i) = sum(qw(g * G + rg, j) * qa(g * G + rg, i));
    RDom ro(0, K / G, "ro");
    c(j, i) = 0.0f;
    // strict_float: no fused multiply-add, as in the twin.
    c(j, i) = strict_float(c(j, i) + (scale(ro, j) * (amax(i) / 127.0f)) *
                                         cast<float>(dot(ro, j, i)));
    groups = K / G;
  }

  void schedule() {
    const int M = m, N = n, K = k;
    stlm::halide::requireAligned(a, scale, c);
    stlm::halide::boundRowMajor(a, K, M);
    stlm::halide::boundRowMajor(w, Int4 ? K / 2 : K, N);
    stlm::halide::boundRowMajor(scale, groups, N);
    stlm::halide::boundRowMajor(c, N, M);
    // The row's quantization once; outputs split across threads, each
    // computing its groups' dots as it goes.
    amax.compute_root();
    inv.compute_root();
    qa.compute_root().vectorize(x, this->template natural_vector_size<float>(),
                                TailStrategy::GuardWithIf);
    Var jo("jo"), ji("ji");
    c.compute_root();
    c.update()
        .split(j, jo, ji, 8, TailStrategy::GuardWithIf)
        .reorder(ji, i, jo)
        .parallel(jo);
    dot.compute_at(c, ji);
  }

private:
  Var x{"x"}, i{"i"}, j{"j"}, g{"g"};
  Func amax{"amax"}, inv{"inv"}, qa{"qa"}, qw{"qw"}, dot{"dot"};
  int groups = 1;
};

} // namespace

using QuantizedMatVecInt8 = QuantizedMatVec<false>;
using QuantizedMatVecInt4 = QuantizedMatVec<true>;
HALIDE_REGISTER_GENERATOR(QuantizedMatVecInt8, stlm_qmatvec_int8)
HALIDE_REGISTER_GENERATOR(QuantizedMatVecInt4, stlm_qmatvec_int4)
