//===- Elementwise.cpp - Halide generators: activations and AdamW ---------===//
//
// Flat arrays of `n` f32 values (any tensor, row-major):
//   stlm_swiglu       y = silu(gate) · up
//   stlm_swiglu_grad  dgate = dy · up · σ · (1 + g (1 − σ)), dup = dy · g σ
//   stlm_gelu         y = x · ½ (1 + erf(x/√2))
//   stlm_gelu_grad    dx = dy · (Φ(x) + x φ(x))
//   stlm_adamw        new_p, new_m, new_v from p, g, m, v, lr, step, wd
//   stlm_add          y = x + r, r repeated over x (r has m elements, m | n)
//   stlm_scale        y = factor · x
//   stlm_sum_squares  s = Σ x² (f64 accumulation; for global-norm clipping)
//   stlm_sum_leading  y[j] = Σ_i x[i, j], x: [n / m, m] (broadcast gradient)
// The math is the ops' ODS descriptions (reference/Kernels.h twins).
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

namespace {

using namespace Halide;
using stlm::halide::normalCdf;
using stlm::halide::scheduleElementwise;
using stlm::halide::sigmoid;

/// Shared by the elementwise generators: the element count and its bound.
template <typename Self> class Flat : public Generator<Self> {
public:
  GeneratorParam<int> n{"n", 1024};

protected:
  /// Fixes a buffer's extent to n (shapes are part of the kernel).
  template <typename B> void bound(B &b) {
    b.dim(0).set_bounds(0, n);
    stlm::halide::requireAligned(b);
  }
  int vec() { return this->template natural_vector_size<float>(); }
  Var i{"i"};
};

class SwiGLU : public Flat<SwiGLU> {
public:
  Input<Buffer<float>> gate{"gate", 1}, up{"up", 1};
  Output<Buffer<float>> y{"y", 1};
  void generate() { y(i) = gate(i) * sigmoid(gate(i)) * up(i); }
  void schedule() {
    bound(gate), bound(up), bound(y);
    scheduleElementwise(y, i, n, vec());
  }
};

class SwiGLUGrad : public Flat<SwiGLUGrad> {
public:
  Input<Buffer<float>> gate{"gate", 1}, up{"up", 1}, dy{"dy", 1};
  Output<Buffer<float>> dgate{"dgate", 1}, dup{"dup", 1};
  void generate() {
    Expr g = gate(i), s = sigmoid(g);
    dgate(i) = dy(i) * up(i) * s * (1.0f + g * (1.0f - s));
    dup(i) = dy(i) * g * s;
  }
  void schedule() {
    bound(gate), bound(up), bound(dy), bound(dgate), bound(dup);
    std::optional<Var> chunk = scheduleElementwise(dgate, i, n, vec());
    scheduleElementwise(dup, i, n, vec());
    // Both outputs per chunk (one pass over memory; the second reads gate
    // and dy from L1).
    if (chunk)
      dup.compute_with(dgate, *chunk);
  }
};

class GELU : public Flat<GELU> {
public:
  Input<Buffer<float>> x{"x", 1};
  Output<Buffer<float>> y{"y", 1};
  void generate() {
    y(i) = x(i) * normalCdf(x(i));
  }
  void schedule() {
    bound(x), bound(y);
    scheduleElementwise(y, i, n, vec());
  }
};

class GELUGrad : public Flat<GELUGrad> {
public:
  Input<Buffer<float>> x{"x", 1}, dy{"dy", 1};
  Output<Buffer<float>> dx{"dx", 1};
  void generate() {
    dx(i) = dy(i) * stlm::halide::geluDerivative(x(i));
  }
  void schedule() {
    bound(x), bound(dy), bound(dx);
    scheduleElementwise(dx, i, n, vec());
  }
};

class AdamW : public Flat<AdamW> {
public:
  GeneratorParam<double> beta1{"beta1", 0.9}, beta2{"beta2", 0.99},
      eps{"eps", 1e-8};
  Input<Buffer<float>> p{"p", 1}, g{"g", 1}, m{"m", 1}, v{"v", 1};
  Input<float> lr{"lr"}, weightDecay{"weight_decay"};
  Input<int32_t> step{"step"}; // 1-based
  Output<Buffer<float>> newP{"new_p", 1}, newM{"new_m", 1}, newV{"new_v", 1};

  void generate() {
    // Scalar coefficients in double, as the reference computes them.
    Expr one = Expr(1.0);
    Expr t = cast<double>(step);
    Expr bc1 = one - pow(Expr(double(beta1)), t);
    Expr bc2 = one - pow(Expr(double(beta2)), t);
    Expr decay =
        cast<float>(one - cast<double>(lr) * cast<double>(weightDecay));
    Expr stepSize = cast<float>(cast<double>(lr) / bc1);
    Expr invBc2 = cast<float>(one / bc2);
    float b1 = float(double(beta1)), b2 = float(double(beta2));
    Expr mNew = b1 * m(i) + (1.0f - b1) * g(i);
    Expr vNew = b2 * v(i) + (1.0f - b2) * g(i) * g(i);
    newM(i) = mNew;
    newV(i) = vNew;
    // new_p reads the new moments back from their outputs, so the update
    // may run in place (new_p, new_m, new_v aliasing p, m, v): every loop
    // reads only the inputs it has not yet overwritten.
    newP(i) = p(i) * decay -
              stepSize * newM(i) / (sqrt(newV(i) * invBc2) + float(double(eps)));
  }
  void schedule() {
    bound(p), bound(g), bound(m), bound(v);
    bound(newP), bound(newM), bound(newV);
    scheduleElementwise(newM, i, n, vec());
    scheduleElementwise(newV, i, n, vec());
    scheduleElementwise(newP, i, n, vec());
  }
};

class Add : public Flat<Add> {
public:
  GeneratorParam<int> m{"m", 1024}; // elements of the repeated operand
  Input<Buffer<float>> x{"x", 1}, r{"r", 1};
  Output<Buffer<float>> y{"y", 1};
  void generate() {
    if (int(m) < 1 || int(n) % int(m))
      stlm::halide::fail("stlm_add", "m must divide n");
    y(i) = x(i) + r(i % int(m));
  }
  void schedule() {
    bound(x), bound(y);
    r.dim(0).set_bounds(0, m);
    stlm::halide::requireAligned(r);
    scheduleElementwise(y, i, n, vec());
  }
};

class Scale : public Flat<Scale> {
public:
  Input<Buffer<float>> x{"x", 1};
  Input<float> factor{"factor"};
  Output<Buffer<float>> y{"y", 1};
  void generate() { y(i) = factor * x(i); }
  void schedule() {
    bound(x), bound(y);
    scheduleElementwise(y, i, n, vec());
  }
};

class SumSquares : public Flat<SumSquares> {
public:
  Input<Buffer<float>> x{"x", 1};
  Output<Buffer<double>> s{"s", 0};
  void generate() {
    RDom r(0, n, "r");
    Expr v = cast<double>(x(r));
    s() = sum(v * v);
  }
  void schedule() { bound(x); }
};

class SumLeading : public Generator<SumLeading> {
public:
  GeneratorParam<int> rows{"rows", 16}, width{"width", 64};
  // Flat: the broadcast operand may have any rank ([L, D] chunk slots as
  // well as [D] norms), so the rows of dy are `width` floats whatever its
  // shape.
  Input<Buffer<float>> x{"x", 1};
  Output<Buffer<float>> y{"y", 1};
  void generate() {
    RDom r(0, rows, "r");
    y(j) = 0.0f;
    y(j) += x(j + r * int(width));
    rr = r.x;
  }
  void schedule() {
    stlm::halide::requireAligned(x, y);
    x.dim(0).set_bounds(0, int(width) * int(rows));
    y.dim(0).set_bounds(0, width);
    int vec = natural_vector_size<float>();
    Var jo("jo"), ji("ji");
    y.vectorize(j, vec, TailStrategy::GuardWithIf);
    y.update()
        .split(j, jo, ji, vec, TailStrategy::GuardWithIf)
        .reorder(ji, rr, jo)
        .vectorize(ji)
        .parallel(jo);
  }

private:
  Var j{"j"};
  RVar rr;
};

} // namespace

HALIDE_REGISTER_GENERATOR(SwiGLU, stlm_swiglu)
HALIDE_REGISTER_GENERATOR(SwiGLUGrad, stlm_swiglu_grad)
HALIDE_REGISTER_GENERATOR(GELU, stlm_gelu)
HALIDE_REGISTER_GENERATOR(GELUGrad, stlm_gelu_grad)
HALIDE_REGISTER_GENERATOR(AdamW, stlm_adamw)
HALIDE_REGISTER_GENERATOR(Add, stlm_add)
HALIDE_REGISTER_GENERATOR(Scale, stlm_scale)
HALIDE_REGISTER_GENERATOR(SumSquares, stlm_sum_squares)
HALIDE_REGISTER_GENERATOR(SumLeading, stlm_sum_leading)
