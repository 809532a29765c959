//===- ReferenceKernelsTest.cpp - the reference kernels -------------------===//
//
// Three kinds of checks:
//
// - Gradients: every backward function against central finite differences
//   of its forward in double. With a fixed random projection c and
//   f(x) = Σ c ⊙ forward(x), the analytic gradient (backward with dy = c)
//   must match (f(x + h e_i) − f(x − h e_i)) / 2h for every input element.
// - Forward values against small cases computed by hand (the arithmetic is
//   written out next to each case).
// - The float instantiation against the double one on the same
//   (float-representable) random inputs.
//
// Set STLM_REF_VERBOSE=1 to print the measured errors.
//
//===----------------------------------------------------------------------===//

#include "reference/Kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace stlm::ref;

namespace {

using Vec = std::vector<double>;
using Inputs = std::vector<Vec>;

bool verbose() {
  static const bool v = std::getenv("STLM_REF_VERBOSE") != nullptr;
  return v;
}

/// Deterministic random numbers (the engine is fully specified by the
/// standard; the conversion to double is done here, not by a distribution).
struct Rng {
  std::mt19937_64 engine;
  explicit Rng(uint64_t seed) : engine(seed) {}
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(engine() >> 11) * 0x1.0p-53;
  }
  Vec vec(size_t n, double lo = -1, double hi = 1) {
    Vec v(n);
    for (double &x : v)
      x = uniform(lo, hi);
    return v;
  }
  int32_t index(int64_t n) { return static_cast<int32_t>(engine() % n); }
};

double dot(const Vec &a, const Vec &b) {
  EXPECT_EQ(a.size(), b.size());
  double s = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    s += a[i] * b[i];
  return s;
}

double maxAbs(const Vec &a) {
  double m = 0;
  for (double x : a)
    m = std::max(m, std::fabs(x));
  return m;
}

/// max_i |a_i − b_i|.
double maxDiff(const Vec &a, const Vec &b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

//===----------------------------------------------------------------------===//
// Finite-difference gradient check
//===----------------------------------------------------------------------===//

/// Step of the central differences.
constexpr double kStep = 1e-6;

/// Bound on max_i |analytic_i − numeric_i| / max_i max(|analytic_i|,
/// |numeric_i|), per input tensor. In double with h = 1e-6 the truncation
/// error of the central difference is ~h²·|f'''| ≈ 1e-12, and the
/// cancellation error ~ε·|f|/h ≈ 2e-10·|f|; with |f| ≲ 10 and gradient
/// scales ≳ 0.1 the expected error is ≲ 2e-8. Measured: at most 5e-9 over
/// all the checks below (print them with STLM_REF_VERBOSE=1), so 1e-7 leaves
/// a 20× margin, and an error of one part in ten million of the largest
/// component fails (GradCheck.CheckerCatchesWrongGradients proves it).
constexpr double kGradTol = 1e-7;

/// A non-degenerate check needs gradients of at least this size.
constexpr double kMinScale = 1e-3;

struct GradError {
  double error; ///< max |analytic − numeric| / scale (0 if scale = 0)
  double scale; ///< max over elements of max(|analytic|, |numeric|)
};

/// Compares `analytic` with the central differences of the scalar function
/// `f` with respect to inputs[which].
template <typename F>
GradError gradientError(const F &f, Inputs inputs, size_t which,
                        const Vec &analytic) {
  Vec &x = inputs[which];
  EXPECT_EQ(x.size(), analytic.size());
  double worst = 0, scale = 0;
  for (size_t e = 0; e < x.size() && e < analytic.size(); ++e) {
    const double saved = x[e];
    const double up = saved + kStep, down = saved - kStep;
    x[e] = up;
    const double fUp = f(inputs);
    x[e] = down;
    const double fDown = f(inputs);
    x[e] = saved;
    // Divide by the step actually taken (x ± h is rounded).
    const double numeric = (fUp - fDown) / (up - down);
    worst = std::max(worst, std::fabs(analytic[e] - numeric));
    scale = std::max({scale, std::fabs(analytic[e]), std::fabs(numeric)});
  }
  return {scale > 0 ? worst / scale : 0, scale};
}

double gMaxGradError = 0;

template <typename F>
void expectGradient(const std::string &what, const F &f, const Inputs &inputs,
                    size_t which, const Vec &analytic) {
  GradError e = gradientError(f, inputs, which, analytic);
  EXPECT_LE(e.error, kGradTol) << what << " (scale " << e.scale << ")";
  EXPECT_GE(e.scale, kMinScale) << what << ": degenerate check";
  gMaxGradError = std::max(gMaxGradError, e.error);
  if (verbose())
    std::printf("  [grad] %-44s rel err %.2e (scale %.2e)\n", what.c_str(),
                e.error, e.scale);
}

/// f(inputs) = Σ c ⊙ forward(inputs).
template <typename Fwd>
auto projected(Fwd forward, Vec c) {
  return [forward, c](const Inputs &in) { return dot(c, forward(in)); };
}

//===----------------------------------------------------------------------===//
// Float against double
//===----------------------------------------------------------------------===//

/// Bound on max |y_float − y_double| / max(max |y_double|, 1e-30). With
/// every sum accumulated in double, the float results differ from the double
/// ones by the rounding of the stored intermediates and outputs (6e-8
/// relative each). Measured: at most 5e-8 (STLM_REF_VERBOSE=1); the bound
/// leaves a 10× margin.
constexpr double kFloatTol = 5e-7;

/// The values of `v` rounded to float, so both instantiations see the same
/// inputs.
Vec floatRounded(Vec v) {
  for (double &x : v)
    x = static_cast<float>(x);
  return v;
}

template <typename T>
std::vector<T> as(const Vec &v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
Vec toVec(const std::vector<T> &v) {
  return Vec(v.begin(), v.end());
}

/// `fn(T{})` computes an output in T and returns it as a Vec; the float
/// result must match the double one.
template <typename Fn>
void expectFloatMatchesDouble(const std::string &what, const Fn &fn) {
  Vec yd = fn(double{});
  Vec yf = fn(float{});
  ASSERT_EQ(yd.size(), yf.size()) << what;
  double scale = std::max(maxAbs(yd), 1e-30);
  double err = maxDiff(yd, yf) / scale;
  EXPECT_LE(err, kFloatTol) << what;
  EXPECT_GT(maxAbs(yd), 0) << what << ": degenerate check";
  if (verbose())
    std::printf("  [f32 ] %-44s rel err %.2e\n", what.c_str(), err);
}

//===----------------------------------------------------------------------===//
// Gradient checks
//===----------------------------------------------------------------------===//

TEST(GradCheck, CheckerCatchesWrongGradients) {
  // linear on random data; the correct dx passes, and two wrong ones that
  // are off by one part in 1e6 are rejected.
  Rng rng(1);
  const int64_t R = 3, In = 4, Out = 5;
  Inputs in = {rng.vec(R * In), rng.vec(Out * In)};
  Vec c = rng.vec(R * Out);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(R * Out);
        linear(x[0].data(), x[1].data(), R, In, Out, y.data());
        return y;
      },
      c);
  Vec dx(R * In), dw(Out * In);
  linearBackward(in[0].data(), in[1].data(), R, In, Out, c.data(), dx.data(),
                 dw.data());
  EXPECT_LE(gradientError(f, in, 0, dx).error, kGradTol);

  Vec oneWrong = dx;
  oneWrong[5] += 1e-6 * maxAbs(dx);
  EXPECT_GT(gradientError(f, in, 0, oneWrong).error, kGradTol);

  Vec scaled = dx;
  for (double &g : scaled)
    g *= 1 + 1e-6;
  EXPECT_GT(gradientError(f, in, 0, scaled).error, kGradTol);

  // The gradient of the other input is not the gradient of this one.
  EXPECT_GT(gradientError(f, in, 1, Vec(Out * In, 0.0)).error, kGradTol);
}

TEST(GradCheck, Embed) {
  Rng rng(2);
  const int64_t V = 5, D = 3, N = 6;
  const int32_t ids[N] = {0, 3, 3, 1, 4, 3}; // Row 3 used three times, row 2 never.
  Inputs in = {rng.vec(V * D)};
  Vec c = rng.vec(N * D);
  auto f = projected(
      [&](const Inputs &x) {
        Vec out(N * D);
        EXPECT_TRUE(embed(x[0].data(), V, D, ids, N, out.data()));
        return out;
      },
      c);
  Vec dtable(V * D, 99.0); // Written, not accumulated into.
  embedBackward(ids, N, V, D, c.data(), dtable.data());
  expectGradient("embed dtable", f, in, 0, dtable);
  for (int64_t d = 0; d < D; ++d)
    EXPECT_EQ(dtable[2 * D + d], 0.0);
}

/// Random x: [R, L, D] whose slot values of each (r, d) are at least 1e-2
/// apart, so max pooling has no tie within the finite-difference step.
Vec untiedPoolInput(Rng &rng, int64_t R, int64_t L, int64_t D) {
  for (;;) {
    Vec x = rng.vec(R * L * D, -2, 2);
    bool ok = true;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t s = 0; s < L; ++s)
          for (int64_t s2 = s + 1; s2 < L; ++s2)
            ok = ok && std::fabs(x[(r * L + s) * D + d] -
                                 x[(r * L + s2) * D + d]) > 1e-2;
    if (ok)
      return x;
  }
}

TEST(GradCheck, Pool) {
  Rng rng(3);
  const int64_t R = 3, L = 4, D = 3;
  // Row 0: one pad slot; row 1: all pad; row 2: end byte 257 (counted) and
  // two pads.
  const int32_t ids[R * L] = {65,  66,  256, 67,  256, 256,
                              256, 256, 257, 256, 10,  256};
  Inputs in = {untiedPoolInput(rng, R, L, D)};
  Vec c = rng.vec(R * D);
  struct Case {
    PoolKind kind;
    const char *name;
    const int32_t *ids;
  } cases[] = {{PoolKind::Mean, "pool mean", nullptr},
               {PoolKind::MaskedMean, "pool masked_mean", ids},
               {PoolKind::Max, "pool max", nullptr}};
  for (const Case &k : cases) {
    auto f = projected(
        [&](const Inputs &x) {
          Vec out(R * D);
          pool(k.kind, x[0].data(), k.ids, R, L, D, out.data());
          return out;
        },
        c);
    Vec dx(R * L * D, 99.0);
    poolBackward(k.kind, in[0].data(), k.ids, R, L, D, c.data(), dx.data());
    expectGradient(std::string(k.name) + " dx", f, in, 0, dx);
  }
}

TEST(GradCheck, RMSNorm) {
  Rng rng(4);
  const int64_t R = 3, D = 5;
  for (double eps : {1e-6, 0.5}) {
    Inputs in = {rng.vec(R * D, -2, 2), rng.vec(D, 0.5, 1.5)};
    Vec c = rng.vec(R * D);
    auto f = projected(
        [&](const Inputs &x) {
          Vec y(R * D);
          rmsnorm(x[0].data(), x[1].data(), R, D, eps, y.data());
          return y;
        },
        c);
    Vec dx(R * D), dg(D, 99.0);
    rmsnormBackward(in[0].data(), in[1].data(), R, D, eps, c.data(),
                    dx.data(), dg.data());
    std::string tag = eps < 0.1 ? " (eps 1e-6)" : " (eps 0.5)";
    expectGradient("rmsnorm dx" + tag, f, in, 0, dx);
    expectGradient("rmsnorm dg" + tag, f, in, 1, dg);
  }
}

TEST(GradCheck, Linear) {
  Rng rng(5);
  const int64_t R = 3, In = 4, Out = 5;
  Inputs in = {rng.vec(R * In), rng.vec(Out * In)};
  Vec c = rng.vec(R * Out);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(R * Out);
        linear(x[0].data(), x[1].data(), R, In, Out, y.data());
        return y;
      },
      c);
  Vec dx(R * In), dw(Out * In, 99.0);
  linearBackward(in[0].data(), in[1].data(), R, In, Out, c.data(), dx.data(),
                 dw.data());
  expectGradient("linear dx", f, in, 0, dx);
  expectGradient("linear dw", f, in, 1, dw);
}

TEST(GradCheck, LowRank) {
  Rng rng(6);
  const int64_t R = 3, In = 5, K = 2, Out = 4;
  Inputs in = {rng.vec(R * In), rng.vec(K * In), rng.vec(Out * K)};
  Vec c = rng.vec(R * Out);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(R * Out);
        lowrank(x[0].data(), x[1].data(), x[2].data(), R, In, K, Out,
                y.data());
        return y;
      },
      c);
  Vec dx(R * In), da(K * In, 99.0), db(Out * K, 99.0);
  lowrankBackward(in[0].data(), in[1].data(), in[2].data(), R, In, K, Out,
                  c.data(), dx.data(), da.data(), db.data());
  expectGradient("lowrank dx", f, in, 0, dx);
  expectGradient("lowrank da", f, in, 1, da);
  expectGradient("lowrank db", f, in, 2, db);
}

TEST(GradCheck, LowRankMerge) {
  // y = w + b·a: dw is the incoming gradient itself, da and db come from
  // lowrankMergeBackward.
  Rng rng(16);
  const int64_t In = 5, K = 2, Out = 4;
  Inputs in = {rng.vec(Out * In), rng.vec(K * In), rng.vec(Out * K)};
  Vec c = rng.vec(Out * In);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(Out * In);
        lowrankMerge(x[0].data(), x[1].data(), x[2].data(), Out, In, K,
                     y.data());
        return y;
      },
      c);
  Vec da(K * In, 99.0), db(Out * K, 99.0);
  lowrankMergeBackward(c.data(), in[1].data(), in[2].data(), Out, In, K,
                       da.data(), db.data());
  expectGradient("lowrank_merge dw", f, in, 0, c);
  expectGradient("lowrank_merge da", f, in, 1, da);
  expectGradient("lowrank_merge db", f, in, 2, db);
}

TEST(Layers, MergedDeltaIsTheLinearPlusTheDelta) {
  // x · (w + b·a)ᵀ = x · wᵀ + (x · aᵀ) · bᵀ, what stlm-decompose's merge
  // relies on, and the merged weight's gradient gives lowrank's da, db.
  Rng rng(17);
  const int64_t R = 3, In = 5, K = 2, Out = 4;
  Vec x = rng.vec(R * In), w = rng.vec(Out * In), a = rng.vec(K * In),
      b = rng.vec(Out * K), dy = rng.vec(R * Out);
  Vec merged(Out * In), y(R * Out), y0(R * Out), d(R * Out);
  lowrankMerge(w.data(), a.data(), b.data(), Out, In, K, merged.data());
  linear(x.data(), merged.data(), R, In, Out, y.data());
  linear(x.data(), w.data(), R, In, Out, y0.data());
  lowrank(x.data(), a.data(), b.data(), R, In, K, Out, d.data());
  for (int64_t i = 0; i < R * Out; ++i)
    EXPECT_NEAR(y[i], y0[i] + d[i], 1e-12) << i;
  Vec dx(R * In), g(Out * In), da(K * In), db(Out * K);
  linearBackward(x.data(), merged.data(), R, In, Out, dy.data(), dx.data(),
                 g.data());
  lowrankMergeBackward(g.data(), a.data(), b.data(), Out, In, K, da.data(),
                       db.data());
  Vec dx1(R * In), dw(Out * In), dx2(R * In), da2(K * In), db2(Out * K);
  linearBackward(x.data(), w.data(), R, In, Out, dy.data(), dx1.data(),
                 dw.data());
  lowrankBackward(x.data(), a.data(), b.data(), R, In, K, Out, dy.data(),
                  dx2.data(), da2.data(), db2.data());
  for (int64_t i = 0; i < R * In; ++i)
    EXPECT_NEAR(dx[i], dx1[i] + dx2[i], 1e-12) << i;
  for (int64_t i = 0; i < Out * In; ++i)
    EXPECT_NEAR(g[i], dw[i], 1e-12) << i;
  for (int64_t i = 0; i < K * In; ++i)
    EXPECT_NEAR(da[i], da2[i], 1e-12) << i;
  for (int64_t i = 0; i < Out * K; ++i)
    EXPECT_NEAR(db[i], db2[i], 1e-12) << i;
}

TEST(GradCheck, RoPE) {
  Rng rng(7);
  const int64_t Bt = 2, Tn = 3, hd = 4, W = 2 * hd;
  struct Case {
    double theta;
    int64_t offset;
  } cases[] = {{10000.0, 0}, {100.0, 5}, {10.0, 37}};
  for (const Case &k : cases) {
    Inputs in = {rng.vec(Bt * Tn * W)};
    Vec c = rng.vec(Bt * Tn * W);
    auto f = projected(
        [&](const Inputs &x) {
          Vec y(Bt * Tn * W);
          rope(x[0].data(), Bt, Tn, W, hd, k.theta, k.offset, y.data());
          return y;
        },
        c);
    Vec dx(Bt * Tn * W);
    ropeBackward(c.data(), Bt, Tn, W, hd, k.theta, k.offset, dx.data());
    char name[64];
    std::snprintf(name, sizeof name, "rope dx (theta %g, offset %d)", k.theta,
                  static_cast<int>(k.offset));
    expectGradient(name, f, in, 0, dx);
  }
}

TEST(GradCheck, Attention) {
  struct Case {
    const char *name;
    bool causal;
    int64_t Bt, Tq, S, H, K, hd, offset;
  } cases[] = {
      {"causal S=T", true, 2, 4, 4, 2, 2, 4, 0},
      {"causal grouped H4K2 offset=S-T", true, 2, 3, 5, 4, 2, 4, 2},
      {"causal grouped H4K2 offset=1 (!=S-T)", true, 2, 3, 5, 4, 2, 4, 1},
      {"causal H4K1 offset=4 (all keys seen)", true, 1, 3, 5, 4, 1, 2, 4},
      {"none grouped H4K2", false, 2, 3, 5, 4, 2, 4, 0},
      {"none H2K2 Tq>S", false, 1, 4, 2, 2, 2, 3, 0},
  };
  Rng rng(8);
  for (const Case &k : cases) {
    const int64_t qn = k.Bt * k.Tq * k.H * k.hd, kvn = k.Bt * k.S * k.K * k.hd;
    Inputs in = {rng.vec(qn, -1.5, 1.5), rng.vec(kvn, -1.5, 1.5),
                 rng.vec(kvn)};
    Vec c = rng.vec(qn);
    auto f = projected(
        [&](const Inputs &x) {
          Vec y(qn);
          attention(k.causal, x[0].data(), x[1].data(), x[2].data(), k.Bt,
                    k.Tq, k.S, k.H, k.K, k.hd, k.offset, y.data());
          return y;
        },
        c);
    Vec dq(qn, 99.0), dk(kvn, 99.0), dv(kvn, 99.0);
    attentionBackward(k.causal, in[0].data(), in[1].data(), in[2].data(),
                      k.Bt, k.Tq, k.S, k.H, k.K, k.hd, k.offset, c.data(),
                      dq.data(), dk.data(), dv.data());
    expectGradient(std::string("attention dq ") + k.name, f, in, 0, dq);
    expectGradient(std::string("attention dk ") + k.name, f, in, 1, dk);
    expectGradient(std::string("attention dv ") + k.name, f, in, 2, dv);
  }
}

TEST(GradCheck, SwiGLU) {
  Rng rng(9);
  const int64_t n = 16;
  Inputs in = {rng.vec(n, -6, 6), rng.vec(n)};
  Vec c = rng.vec(n);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(n);
        swiglu(x[0].data(), x[1].data(), n, y.data());
        return y;
      },
      c);
  Vec dg(n), du(n);
  swigluBackward(in[0].data(), in[1].data(), n, c.data(), dg.data(),
                 du.data());
  expectGradient("swiglu dgate", f, in, 0, dg);
  expectGradient("swiglu dup", f, in, 1, du);
}

TEST(GradCheck, GELU) {
  Rng rng(10);
  const int64_t n = 16;
  Inputs in = {rng.vec(n, -4, 4)};
  Vec c = rng.vec(n);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(n);
        gelu(x[0].data(), n, y.data());
        return y;
      },
      c);
  Vec dx(n);
  geluBackward(in[0].data(), n, c.data(), dx.data());
  expectGradient("gelu dx", f, in, 0, dx);
}

TEST(GradCheck, SumLeadingIsTheGradientOfBroadcastAdd) {
  // y[r, j] = lhs[r, j] + rhs[j] (stlm.add with rhs a suffix of lhs's
  // shape); the gradient of rhs is sumLeading(dy).
  Rng rng(11);
  const int64_t R = 4, X = 6;
  Inputs in = {rng.vec(R * X), rng.vec(X)};
  Vec c = rng.vec(R * X);
  auto f = projected(
      [&](const Inputs &x) {
        Vec y(R * X);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < X; ++j)
            y[r * X + j] = x[0][r * X + j] + x[1][j];
        return y;
      },
      c);
  Vec drhs(X, 99.0);
  sumLeading(c.data(), R, X, drhs.data());
  expectGradient("sumLeading (add rhs)", f, in, 1, drhs);
}

TEST(GradCheck, CrossEntropy) {
  Rng rng(12);
  const int64_t P = 5, V = 7;
  // Position 1 is not counted and has an out-of-range target, which must
  // be ignored.
  const int32_t targets[P] = {3, -1, 0, 6, 2};
  const int32_t allValid[P] = {3, 1, 0, 6, 2};
  const bool someCounted[P] = {true, false, true, true, false};
  const bool noneCounted[P] = {false, false, false, false, false};
  const double dloss = 0.7;
  Inputs in = {rng.vec(P * V, -3, 3)};
  struct Case {
    const char *name;
    const int32_t *targets;
    const bool *counted;
  } cases[] = {{"crossEntropy dlogits (3 of 5 counted)", targets, someCounted},
               {"crossEntropy dlogits (all counted)", allValid, nullptr}};
  for (const Case &k : cases) {
    auto f = [&](const Inputs &x) {
      double loss = 0;
      EXPECT_TRUE(
          crossEntropy(x[0].data(), k.targets, k.counted, P, V, &loss));
      return dloss * loss;
    };
    Vec dlogits(P * V, 99.0);
    crossEntropyBackward(in[0].data(), k.targets, k.counted, P, V, dloss,
                         dlogits.data());
    expectGradient(k.name, f, in, 0, dlogits);
    if (k.counted)
      for (int64_t v = 0; v < V; ++v) {
        EXPECT_EQ(dlogits[1 * V + v], 0.0);
        EXPECT_EQ(dlogits[4 * V + v], 0.0);
      }
  }
  // Nothing counted: loss 0 and gradient exactly 0, which the finite
  // differences confirm.
  double loss = 99;
  EXPECT_TRUE(crossEntropy(in[0].data(), targets, noneCounted, P, V, &loss));
  EXPECT_EQ(loss, 0.0);
  Vec dlogits(P * V, 99.0);
  crossEntropyBackward(in[0].data(), targets, noneCounted, P, V, dloss,
                       dlogits.data());
  EXPECT_EQ(maxAbs(dlogits), 0.0);
  auto f = [&](const Inputs &x) {
    double l = 0;
    EXPECT_TRUE(crossEntropy(x[0].data(), targets, noneCounted, P, V, &l));
    return l;
  };
  GradError e = gradientError(f, in, 0, dlogits);
  EXPECT_EQ(e.scale, 0.0);
}

TEST(GradCheck, Distill) {
  Rng rng(13);
  const int64_t P = 4, V = 6;
  const int32_t targets[P] = {0, 5, 2, 2};
  const double dloss = 1.3;
  Inputs in = {rng.vec(P * V, -2, 2)};
  Vec teacher = rng.vec(P * V, -2, 2);
  for (double tau : {0.5, 1.0, 2.0, 4.0})
    for (double alpha : {0.0, 0.5, 1.0}) {
      auto f = [&](const Inputs &x) {
        double loss = 0;
        EXPECT_TRUE(distill(x[0].data(), teacher.data(), targets, P, V, tau,
                            alpha, &loss));
        return dloss * loss;
      };
      Vec dlogits(P * V, 99.0);
      distillBackward(in[0].data(), teacher.data(), targets, P, V, tau, alpha,
                      dloss, dlogits.data());
      char name[64];
      std::snprintf(name, sizeof name, "distill dlogits (tau %.1f, alpha %.1f)",
                    tau, alpha);
      expectGradient(name, f, in, 0, dlogits);
    }
}

//===----------------------------------------------------------------------===//
// Forward values, by hand
//===----------------------------------------------------------------------===//

TEST(Embed, CopiesRows) {
  // table rows r = (10r, 10r + 1); ids (2, 0, 2).
  const double table[3 * 2] = {0, 1, 10, 11, 20, 21};
  const int32_t ids[3] = {2, 0, 2};
  double out[3 * 2];
  ASSERT_TRUE(embed(table, 3, 2, ids, 3, out));
  const double expected[3 * 2] = {20, 21, 0, 1, 20, 21};
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(out[i], expected[i]);
}

TEST(Embed, RejectsOutOfRangeIds) {
  const float table[3 * 2] = {0, 1, 10, 11, 20, 21};
  float out[3 * 2];
  int64_t bad = -7;
  const int32_t tooBig[3] = {0, 1, 3};
  EXPECT_FALSE(embed(table, 3, 2, tooBig, 3, out, &bad));
  EXPECT_EQ(bad, 2);
  const int32_t negative[3] = {0, -1, 3};
  EXPECT_FALSE(embed(table, 3, 2, negative, 3, out, &bad));
  EXPECT_EQ(bad, 1);
  EXPECT_FALSE(embed(table, 3, 2, negative, 3, out)); // badIndex optional
  const int32_t edge[3] = {2, 0, 2};
  bad = -7;
  EXPECT_TRUE(embed(table, 3, 2, edge, 3, out, &bad));
  EXPECT_EQ(bad, -7); // Untouched on success.
}

/// Runs `chunk` on one row of text and returns its chunks as strings (the
/// pad 256 as '#') and the count.
struct Chunked {
  std::vector<std::string> chunks;
  int32_t count = -1;
  bool ok = false;
};

Chunked chunkText(ChunkMode mode, const std::string &text, int64_t C,
                  int64_t L, int64_t stride = 0,
                  const std::vector<bool> &starts = {}) {
  const int64_t N = text.size();
  std::vector<int32_t> bytes(N);
  // A start is the byte plus kChunkStartFlag.
  for (int64_t i = 0; i < N; ++i)
    bytes[i] =
        static_cast<unsigned char>(text[i]) +
        (i < static_cast<int64_t>(starts.size()) && starts[i] ? kChunkStartFlag
                                                              : 0);
  std::vector<int32_t> chunks(C * L, -5);
  Chunked r;
  r.ok = chunk(mode, bytes.data(), 1, N, stride, C, L, chunks.data(), &r.count);
  for (int64_t c = 0; c < C; ++c) {
    std::string s;
    for (int64_t l = 0; l < L; ++l) {
      int32_t b = chunks[c * L + l];
      s += b == 256 ? '#' : b >= 0 && b < 256 ? static_cast<char>(b) : '?';
    }
    r.chunks.push_back(s);
  }
  return r;
}

using Strings = std::vector<std::string>;

TEST(Chunk, WordsHelloWorld) {
  // "hello world, hi", L = 4: 'h' opens chunk 0; 'o' (i = 4) finds it full;
  // ' ' opens a chunk; 'l' (i = 9) finds " wor" full; ',' and ' ' each open
  // one.
  Chunked r = chunkText(ChunkMode::Words, "hello world, hi", 8, 4);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.count, 6);
  EXPECT_EQ(r.chunks, (Strings{"hell", "o###", " wor", "ld##", ",###", " hi#",
                               "####", "####"}));
}

TEST(Chunk, WordsCapacityDropsTheRest) {
  Chunked r = chunkText(ChunkMode::Words, "hello world, hi", 3, 4);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.chunks, (Strings{"hell", "o###", " wor"}));
  // Exactly full.
  r = chunkText(ChunkMode::Words, "hello world, hi", 6, 4);
  EXPECT_EQ(r.count, 6);
  EXPECT_EQ(r.chunks.back(), " hi#");
}

TEST(Chunk, WordsSeparatorsAndLongWords) {
  // Every separator opens its own chunk, even after another one.
  Chunked r = chunkText(ChunkMode::Words, "a  b.\n", 6, 8);
  EXPECT_EQ(r.count, 5);
  EXPECT_EQ(r.chunks, (Strings{"a#######", " #######", " b######",
                               ".#######", "\n#######", "########"}));
  // A long word is cut every L bytes.
  r = chunkText(ChunkMode::Words, "abcdefghij", 4, 4);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.chunks, (Strings{"abcd", "efgh", "ij##", "####"}));
  // A leading separator does not make an empty chunk 0.
  r = chunkText(ChunkMode::Words, " x", 2, 4);
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.chunks, (Strings{" x##", "####"}));
}

TEST(Chunk, WordsSeparatorSetIsEveryAsciiByteButLettersAndDigits) {
  // "a" b "c": b opens a new chunk iff it is ASCII and not a letter or
  // digit (MODEL_SPEC): whitespace, punctuation and control bytes, 66 in
  // all; bytes >= 128 never do, so UTF-8 characters stay whole.
  int separators = 0;
  for (int b = 0; b < 256; ++b) {
    const int32_t bytes[3] = {'a', b, 'c'};
    int32_t chunks[3 * 4], count = -1;
    ASSERT_TRUE(chunk(ChunkMode::Words, bytes, 1, 3, 0, 3, 4, chunks, &count));
    bool isSep = b < 128 && !std::isalnum(b);
    separators += isSep;
    EXPECT_EQ(count, isSep ? 2 : 1) << "byte " << b;
    if (isSep) {
      EXPECT_EQ(chunks[4], b) << "byte " << b;
    }
  }
  EXPECT_EQ(separators, 66);
}

TEST(ChunkTargets, EndMarkersCountWithMaskedPads) {
  // Two rows of 3 chunks of 4 slots; count 3 and 2.
  auto row = [](const char *text) {
    std::vector<int32_t> v;
    for (const char *c = text; *c; ++c)
      v.push_back(*c == '#' ? 256 : *c);
    return v;
  };
  std::vector<int32_t> chunks = row("ab##" "cdef" "g###" "hi##" " jk#" "####");
  const int32_t count[2] = {3, 2};
  std::vector<int32_t> targets(24);
  std::vector<uint8_t> counted(24);
  auto flags = [&](bool next, bool maskPad) {
    chunkTargets(chunks.data(), 2, 3, 4, count, next, maskPad, targets.data(),
                 counted.data());
    std::string f;
    for (uint8_t c : counted)
      f += c ? '1' : '0';
    return f;
  };
  // Next chunk, pads masked: real bytes and the first pad after them;
  // "cdef" is full (no marker); chunk c = count - 1 predicts nothing.
  EXPECT_EQ(flags(true, true), "1111" "1100" "0000" "1111" "0000" "0000");
  EXPECT_EQ(targets[0], 'c');
  EXPECT_EQ(targets[4], 'g');
  EXPECT_EQ(targets[5], 256);
  EXPECT_EQ(targets[12], ' ');
  // Every slot of the counted chunks without masking.
  EXPECT_EQ(flags(true, false), "1111" "1111" "0000" "1111" "0000" "0000");
  // The chunk itself: all counted chunks, the empty third of row 1 not.
  EXPECT_EQ(flags(false, true), "1110" "1111" "1100" "1110" "1111" "0000");
  EXPECT_EQ(flags(false, false), "1111" "1111" "1111" "1111" "1111" "0000");
  // The bytes those objectives predict: "cdef" "g" " jk", and all but
  // the empty chunk's.
  EXPECT_EQ(chunkRealBytes(chunks.data(), 2, 3, 4, count, true), 8);
  EXPECT_EQ(chunkRealBytes(chunks.data(), 2, 3, 4, count, false), 12);
}

TEST(Chunk, TheValue256EndsARow) {
  // "ab cd" then 256: the row ends; what follows is not read. A row that
  // starts with 256 has no chunk. 257 is not a byte.
  const int32_t bytes[2 * 8] = {'a', 'b', ' ', 'c', 'd', 256, 'x', 'y',
                                256, 'z', 'z', 'z', 'z', 'z', 'z', 'z'};
  int32_t chunks[2 * 3 * 4], count[2] = {-1, -1};
  ASSERT_TRUE(chunk(ChunkMode::Words, bytes, 2, 8, 0, 3, 4, chunks, count));
  EXPECT_EQ(count[0], 2);
  EXPECT_EQ(count[1], 0);
  EXPECT_EQ(chunks[4], ' ');
  EXPECT_EQ(chunks[6], 'd');
  EXPECT_EQ(chunks[8], 256); // no third chunk
  for (int i = 12; i < 24; ++i)
    EXPECT_EQ(chunks[i], 256) << i;
  const int32_t bad[2] = {'a', 257};
  EXPECT_FALSE(chunk(ChunkMode::Words, bad, 1, 2, 0, 2, 4, chunks, count));
}

TEST(Chunk, Fixed) {
  // stride 2 < L 3: "abcde" → "ab", "cd", "e", each padded to 3.
  Chunked r = chunkText(ChunkMode::Fixed, "abcde", 3, 3, 2);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.chunks, (Strings{"ab#", "cd#", "e##"}));
  // stride = L, separators do not matter.
  r = chunkText(ChunkMode::Fixed, "a, b, c", 3, 3, 3);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.chunks, (Strings{"a, ", "b, ", "c##"}));
  // Too few chunks: the rest is dropped.
  r = chunkText(ChunkMode::Fixed, "abcde", 2, 3, 2);
  EXPECT_EQ(r.count, 2);
  EXPECT_EQ(r.chunks, (Strings{"ab#", "cd#"}));
  // stride 1: one byte per chunk.
  r = chunkText(ChunkMode::Fixed, "xyz", 3, 2, 1);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(r.chunks, (Strings{"x#", "y#", "z#"}));
}

TEST(Chunk, Given) {
  // Starts at 3 and 4 (and 0, always); "efghij" is cut at L = 4.
  std::vector<bool> starts = {false, false, false, true, true,
                              false, false, false, false, false};
  Chunked r = chunkText(ChunkMode::Given, "abcdefghij", 5, 4, 0, starts);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.count, 4);
  EXPECT_EQ(r.chunks, (Strings{"abc#", "d###", "efgh", "ij##", "####"}));
  // Spaces do not matter in given mode.
  r = chunkText(ChunkMode::Given, "a b", 2, 4, 0, {true, false, false});
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.chunks, (Strings{"a b#", "####"}));
  // Capacity.
  r = chunkText(ChunkMode::Given, "abcdefghij", 2, 4, 0, starts);
  EXPECT_EQ(r.count, 2);
  EXPECT_EQ(r.chunks, (Strings{"abc#", "d###"}));
  // A start flag on the first byte changes nothing; a flag is no byte in
  // the other modes.
  r = chunkText(ChunkMode::Given, "ab", 2, 4, 0, {true, false});
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.chunks, (Strings{"ab##", "####"}));
  EXPECT_FALSE(chunkText(ChunkMode::Words, "ab", 2, 4, 0, {false, true}).ok);
  EXPECT_FALSE(chunkText(ChunkMode::Fixed, "ab", 2, 4, 1, {true}).ok);
}

TEST(Chunk, GivenRefusesAFlaggedEnd) {
  // 512 + 256 would be a flagged "no byte"; 512 + 256 + 1 and more are
  // nothing.
  int32_t chunks[4], count = -1;
  for (int32_t bad : {kChunkStartFlag + 256, kChunkStartFlag + 300, 511}) {
    const int32_t bytes[2] = {'a', bad};
    EXPECT_FALSE(chunk(ChunkMode::Given, bytes, 1, 2, 0, 2, 2, chunks, &count))
        << bad;
  }
}

TEST(Chunk, BatchRowsAreIndependent) {
  // Row 0 "ab cd", row 1 "xyzzy" (N = 5, C = 3, L = 3).
  const int32_t bytes[2 * 5] = {'a', 'b', ' ', 'c', 'd',
                                'x', 'y', 'z', 'z', 'y'};
  int32_t chunks[2 * 3 * 3], count[2] = {-1, -1};
  ASSERT_TRUE(chunk(ChunkMode::Words, bytes, 2, 5, 0, 3, 3, chunks, count));
  EXPECT_EQ(count[0], 2);
  EXPECT_EQ(count[1], 2);
  const int32_t P = 256;
  const int32_t expected[2 * 3 * 3] = {'a', 'b', P,   ' ', 'c', 'd', P, P, P,
                                       'x', 'y', 'z', 'z', 'y', P,   P, P, P};
  for (int i = 0; i < 18; ++i)
    EXPECT_EQ(chunks[i], expected[i]) << i;
}

TEST(Chunk, EmptyRowAndBadBytes) {
  int32_t chunks[2 * 2] = {0, 0, 0, 0}, count = -1;
  ASSERT_TRUE(chunk(ChunkMode::Words, nullptr, 1, 0, 0, 2, 2, chunks, &count));
  EXPECT_EQ(count, 0);
  for (int32_t b : chunks)
    EXPECT_EQ(b, 256);
  for (int32_t bad : {257, -1, 1000}) {
    const int32_t bytes[3] = {'a', bad, 'b'};
    EXPECT_FALSE(chunk(ChunkMode::Words, bytes, 1, 3, 0, 2, 2, chunks, &count))
        << bad;
    EXPECT_FALSE(chunk(ChunkMode::Fixed, bytes, 1, 3, 1, 3, 2, chunks, &count))
        << bad;
  }
}

TEST(Pool, ByHand) {
  // x: one chunk of 3 slots, D = 2: (1, 2), (3, −4), (5, 0).
  const double x[3 * 2] = {1, 2, 3, -4, 5, 0};
  double out[2];
  pool(PoolKind::Mean, x, nullptr, 1, 3, 2, out);
  EXPECT_DOUBLE_EQ(out[0], 3.0);        // (1 + 3 + 5) / 3
  EXPECT_DOUBLE_EQ(out[1], -2.0 / 3.0); // (2 − 4 + 0) / 3
  const int32_t ids[3] = {65, 256, 257};
  pool(PoolKind::MaskedMean, x, ids, 1, 3, 2, out);
  EXPECT_DOUBLE_EQ(out[0], 3.0); // (1 + 5) / 2
  EXPECT_DOUBLE_EQ(out[1], 1.0); // (2 + 0) / 2
  pool(PoolKind::Max, x, nullptr, 1, 3, 2, out);
  EXPECT_EQ(out[0], 5.0);
  EXPECT_EQ(out[1], 2.0);
  const int32_t allPad[3] = {256, 256, 256};
  pool(PoolKind::MaskedMean, x, allPad, 1, 3, 2, out);
  EXPECT_EQ(out[0], 0.0);
  EXPECT_EQ(out[1], 0.0);
  const double dout[2] = {1.5, -2};
  double dx[3 * 2];
  poolBackward(PoolKind::MaskedMean, x, allPad, 1, 3, 2, dout, dx);
  for (double g : dx)
    EXPECT_EQ(g, 0.0);
  poolBackward(PoolKind::MaskedMean, x, ids, 1, 3, 2, dout, dx);
  const double masked[3 * 2] = {0.75, -1, 0, 0, 0.75, -1};
  for (int i = 0; i < 6; ++i)
    EXPECT_DOUBLE_EQ(dx[i], masked[i]) << i;
}

TEST(Pool, MaxGradientGoesToTheFirstMaximalSlot) {
  // Column 0: (2, 2, 1) → slot 0; column 1: (1, 3, 3) → slot 1.
  const double x[3 * 2] = {2, 1, 2, 3, 1, 3};
  const double dout[2] = {7, 8};
  double dx[3 * 2];
  poolBackward(PoolKind::Max, x, nullptr, 1, 3, 2, dout, dx);
  const double expected[3 * 2] = {7, 0, 0, 8, 0, 0};
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(dx[i], expected[i]) << i;
}

TEST(Layers, RMSNormByHand) {
  // x = (3, 4): mean(x²) = 12.5; y = x / sqrt(12.5 + 1e-6) · (1, 2).
  const double x[2] = {3, 4}, g[2] = {1, 2};
  double y[2];
  rmsnorm(x, g, 1, 2, 1e-6, y);
  EXPECT_NEAR(y[0], 0.8485281034827336, 1e-15);
  EXPECT_NEAR(y[1], 2.2627416092872896, 1e-15);
}

TEST(Layers, LinearAndLowRankByHand) {
  // x = (1, 2); w rows (1, 0), (0, 1), (1, 1) → y = (1, 2, 3).
  const double x[2] = {1, 2}, w[3 * 2] = {1, 0, 0, 1, 1, 1};
  double y[3];
  linear(x, w, 1, 2, 3, y);
  EXPECT_EQ(y[0], 1.0);
  EXPECT_EQ(y[1], 2.0);
  EXPECT_EQ(y[2], 3.0);
  // a = (1, 1) (rank 1) → h = 3; b = (2, 3)ᵀ → y = (6, 9).
  const double a[2] = {1, 1}, b[2] = {2, 3};
  double z[2];
  lowrank(x, a, b, 1, 2, 1, 2, z);
  EXPECT_EQ(z[0], 6.0);
  EXPECT_EQ(z[1], 9.0);
}

TEST(Layers, RoPEOnAKnownVector) {
  // hd = 4, theta = 100: θ_0 = 1, θ_1 = 100^(−1/2) = 0.1. Row t = 1 with
  // offset 2 is position p = 3: pair 0 turns by 3, pair 1 by 0.3.
  //   cos 3 = −0.9899924966004454, sin 3 = 0.1411200080598672
  //   cos 0.3 = 0.955336489125606, sin 0.3 = 0.29552020666133955
  // x = (1, 2, 3, 4) →
  //   (cos 3 − 2 sin 3, sin 3 + 2 cos 3, 3 cos .3 − 4 sin .3, 3 sin .3 + 4 cos .3)
  // Two heads side by side turn the same way (row t = 0 is all zeros).
  const double x[2 * 8] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4};
  double y[2 * 8];
  rope(x, 1, 2, 8, 4, 100.0, 2, y);
  const double expected[4] = {-1.27223251272018, -1.8388649851410237,
                              1.68392864073146, 4.707906576486442};
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(y[8 + h * 4 + i], expected[i], 1e-14) << h << " " << i;
  // Position 0 is the identity.
  const double x0[4] = {1, 2, 3, 4};
  double y0[4];
  rope(x0, 1, 1, 4, 4, 100.0, 0, y0);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(y0[i], x0[i]);
  // The backward turns back: ropeBackward(rope(x)) = x.
  double back[2 * 8];
  ropeBackward(y, 1, 2, 8, 4, 100.0, 2, back);
  for (int i = 0; i < 16; ++i)
    EXPECT_NEAR(back[i], x[i], 1e-14);
}

TEST(Layers, AttentionWithOneKeyReturnsItsValue) {
  // S = 1: every query of head h returns v of kv head h / 2 (H = 4, K = 2).
  Rng rng(20);
  const int64_t Tq = 2, H = 4, K = 2, hd = 2;
  Vec q = rng.vec(Tq * H * hd, -3, 3), k = rng.vec(K * hd, -3, 3);
  const double v[K * hd] = {1, 2, 3, 4};
  for (bool causal : {true, false}) {
    double y[Tq * H * hd];
    attention(causal, q.data(), k.data(), v, 1, Tq, 1, H, K, hd, 0, y);
    for (int64_t t = 0; t < Tq; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < hd; ++d)
          EXPECT_NEAR(y[(t * H + h) * hd + d], v[(h / 2) * hd + d], 1e-15);
  }
}

TEST(Layers, AttentionCausalMaskByHand) {
  // One head, hd = 2, S = T = 3, offset 0. Scores s_u = q·k_u / sqrt(2).
  //   t = 0 sees key 0 only → y = v_0 whatever q and k are.
  //   t = 1: q = (1, 0), k_0 = (0, 0), k_1 = (sqrt(2)·ln 3, 0) → s = (0, ln 3)
  //          → p = (1/4, 3/4); v_0 = (4, 0), v_1 = (0, 8) → y = (1, 6).
  //   t = 2: q = 0 → uniform over 3 keys → y = (v_0 + v_1 + v_2) / 3.
  const double l3 = std::sqrt(2.0) * std::log(3.0);
  const double q[3 * 2] = {5, -7, 1, 0, 0, 0};
  const double k[3 * 2] = {0, 0, l3, 0, 9, 9};
  const double v[3 * 2] = {4, 0, 0, 8, 2, 1};
  double y[3 * 2];
  attention(true, q, k, v, 1, 3, 3, 1, 1, 2, 0, y);
  EXPECT_NEAR(y[0], 4, 1e-15);
  EXPECT_NEAR(y[1], 0, 1e-15);
  EXPECT_NEAR(y[2], 1, 1e-14);
  EXPECT_NEAR(y[3], 6, 1e-14);
  EXPECT_NEAR(y[4], 2, 1e-14);
  EXPECT_NEAR(y[5], 3, 1e-14);
  // Without the mask, t = 0 also sees keys 1 and 2.
  attention(false, q, k, v, 1, 3, 3, 1, 1, 2, 0, y);
  EXPECT_GT(std::fabs(y[0] - 4) + std::fabs(y[1]), 1e-3);
  // offset 1: t = 0 sees keys 0 and 1 with q_0 · k_1 = 5 sqrt(2) ln 3 →
  // s = (0, 5 ln 3), p = (1, 243) / 244.
  attention(true, q, k, v, 1, 3, 3, 1, 1, 2, 1, y);
  EXPECT_NEAR(y[0], 4.0 / 244, 1e-14);
  EXPECT_NEAR(y[1], 8.0 * 243 / 244, 1e-14);
}

TEST(Layers, AttentionQueryWithoutVisibleKeysIsZero) {
  // offset −1: query 0 sees no key (defined as output 0, no gradient);
  // query 1 sees key 0 only.
  const double q[2 * 2] = {1, 2, 3, 4}, k[2 * 2] = {1, 1, 2, 2},
               v[2 * 2] = {5, 6, 7, 8}, dy[2 * 2] = {1, 1, 1, 1};
  double y[2 * 2], dq[4], dk[4], dv[4];
  attention(true, q, k, v, 1, 2, 2, 1, 1, 2, -1, y);
  EXPECT_EQ(y[0], 0.0);
  EXPECT_EQ(y[1], 0.0);
  EXPECT_NEAR(y[2], 5, 1e-15);
  EXPECT_NEAR(y[3], 6, 1e-15);
  attentionBackward(true, q, k, v, 1, 2, 2, 1, 1, 2, -1, dy, dq, dk, dv);
  EXPECT_EQ(dq[0], 0.0);
  EXPECT_EQ(dq[1], 0.0);
  EXPECT_EQ(dv[0], 1.0); // only query 1 reads v_0, with weight 1
  EXPECT_EQ(dv[2], 0.0); // nobody reads v_1
}

TEST(Layers, ActivationsByHand) {
  // gelu(x) = x Φ(x): gelu(1) = Φ(1) = 0.8413447460685429,
  // gelu(−1) = −Φ(−1) = −0.15865525393145707.
  const double x[3] = {0, 1, -1};
  double y[3];
  gelu(x, 3, y);
  EXPECT_EQ(y[0], 0.0);
  EXPECT_NEAR(y[1], 0.8413447460685429, 1e-15);
  EXPECT_NEAR(y[2], -0.15865525393145707, 1e-15);
  // silu(1) · 2 = 2 / (1 + e^−1) = 1.4621171572600098; large |gate| stays
  // finite: silu(800) = 800, silu(−800) = 0.
  const double g[3] = {1, 800, -800}, u[3] = {2, 0.5, 3};
  swiglu(g, u, 3, y);
  EXPECT_NEAR(y[0], 1.4621171572600098, 1e-15);
  EXPECT_EQ(y[1], 400.0);
  EXPECT_EQ(y[2], 0.0);
  double dg[3], du[3];
  const double ones[3] = {1, 1, 1};
  swigluBackward(g, u, 3, ones, dg, du);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::isfinite(dg[i]));
    EXPECT_TRUE(std::isfinite(du[i]));
  }
}

TEST(Layers, SumLeadingByHand) {
  const double dy[3 * 2] = {1, 2, 3, 4, 5, 6};
  double out[2];
  sumLeading(dy, 3, 2, out);
  EXPECT_EQ(out[0], 9.0);
  EXPECT_EQ(out[1], 12.0);
}

TEST(Objectives, CrossEntropyByHand) {
  // Uniform logits over V = 7: every target costs ln 7.
  const double uniform[2 * 7] = {0.37, 0.37, 0.37, 0.37, 0.37, 0.37, 0.37,
                                 -5,   -5,   -5,   -5,   -5,   -5,   -5};
  const int32_t t2[2] = {3, 6};
  double loss = 0;
  ASSERT_TRUE(crossEntropy(uniform, t2, nullptr, 2, 7, &loss));
  EXPECT_NEAR(loss, std::log(7.0), 1e-15);
  // logits (0, 0, ln 2): softmax (1/4, 1/4, 1/2). Target 2 costs ln 2,
  // target 0 costs ln 4; their mean is (3/2) ln 2.
  const double l2 = std::log(2.0);
  const double logits[2 * 3] = {0, 0, l2, 0, 0, l2};
  const int32_t targets[2] = {2, 0};
  ASSERT_TRUE(crossEntropy(logits, targets, nullptr, 2, 3, &loss));
  EXPECT_NEAR(loss, 1.5 * l2, 1e-15);
  const bool onlyFirst[2] = {true, false};
  ASSERT_TRUE(crossEntropy(logits, targets, onlyFirst, 2, 3, &loss));
  EXPECT_NEAR(loss, l2, 1e-15);
  // Gradient of the first alone: softmax − onehot = (1/4, 1/4, −1/2), times
  // dloss 2 over 1 counted position.
  double dlogits[2 * 3];
  crossEntropyBackward(logits, targets, onlyFirst, 2, 3, 2.0, dlogits);
  const double expected[2 * 3] = {0.5, 0.5, -1, 0, 0, 0};
  for (int i = 0; i < 6; ++i)
    EXPECT_NEAR(dlogits[i], expected[i], 1e-15) << i;
}

TEST(Objectives, CrossEntropyIsStable) {
  // (1000, 0) with target 1 costs 1000 (naive exp overflows);
  // (1000, 1000) costs ln 2.
  const double logits[2 * 2] = {1000, 0, 1000, 1000};
  const int32_t targets[2] = {1, 0};
  const bool first[2] = {true, false}, second[2] = {false, true};
  double loss = 0;
  ASSERT_TRUE(crossEntropy(logits, targets, first, 2, 2, &loss));
  EXPECT_NEAR(loss, 1000.0, 1e-12);
  ASSERT_TRUE(crossEntropy(logits, targets, second, 2, 2, &loss));
  // lse = 1000 + ln 2 is rounded to the ulp of 1000 (1.1e-13).
  EXPECT_NEAR(loss, std::log(2.0), 2e-13);
  float lf = 0;
  const float logitsF[2] = {1000, 0};
  ASSERT_TRUE(crossEntropy(logitsF, targets, nullptr, 1, 2, &lf));
  EXPECT_NEAR(lf, 1000.0f, 1e-3f);
}

TEST(Objectives, CrossEntropyRejectsCountedBadTargets) {
  const double logits[3 * 2] = {0, 1, 2, 3, 4, 5};
  const int32_t targets[3] = {1, 2, -1};
  double loss;
  int64_t bad = -7;
  EXPECT_FALSE(crossEntropy(logits, targets, nullptr, 3, 2, &loss, &bad));
  EXPECT_EQ(bad, 1);
  const bool skipSecond[3] = {true, false, true};
  EXPECT_FALSE(crossEntropy(logits, targets, skipSecond, 3, 2, &loss, &bad));
  EXPECT_EQ(bad, 2);
  const bool onlyFirst[3] = {true, false, false};
  EXPECT_TRUE(crossEntropy(logits, targets, onlyFirst, 3, 2, &loss, &bad));
}

TEST(Objectives, DistillByHand) {
  // V = 2, teacher (0, −∞) → p = (1, 0) at every τ (the 0 · log 0 term is
  // 0); logits (0, 0) → q = (1/2, 1/2). KL(p ‖ q) = 1 · (0 − ln ½) = ln 2;
  // CE(logits, target 1) = ln 2.
  //   α = 1, τ = 1: ln 2       α = 1, τ = 2: 4 ln 2
  //   α = 0: ln 2              α = ½, τ = 2: ½ · 4 ln 2 + ½ ln 2 = 2.5 ln 2
  const double inf = std::numeric_limits<double>::infinity();
  const double teacher[2] = {0, -inf}, logits[2] = {0, 0};
  const int32_t target[1] = {1};
  const double l2 = std::log(2.0);
  struct Case {
    double tau, alpha, expected;
  } cases[] = {{1, 1, l2}, {2, 1, 4 * l2}, {2, 0, l2}, {2, 0.5, 2.5 * l2}};
  for (const Case &k : cases) {
    double loss = 0;
    ASSERT_TRUE(
        distill(logits, teacher, target, 1, 2, k.tau, k.alpha, &loss));
    EXPECT_NEAR(loss, k.expected, 1e-15) << k.tau << " " << k.alpha;
    double d[2];
    distillBackward(logits, teacher, target, 1, 2, k.tau, k.alpha, 1.0, d);
    EXPECT_TRUE(std::isfinite(d[0]) && std::isfinite(d[1]));
  }
  // A student equal to its teacher has KL 0.
  const double same[3] = {0.3, -1, 2};
  const int32_t t0[1] = {0};
  double loss = 1;
  ASSERT_TRUE(distill(same, same, t0, 1, 3, 3.0, 1.0, &loss));
  EXPECT_NEAR(loss, 0.0, 1e-15);
  // Bad target.
  int64_t bad = -7;
  const int32_t badTarget[1] = {3};
  EXPECT_FALSE(distill(same, same, badTarget, 1, 3, 3.0, 0.5, &loss, &bad));
  EXPECT_EQ(bad, 0);
}

TEST(Objectives, MaskTokensVariateIsPinned) {
  // splitmix64(0) = 0xe220a8397b1dcdaf, the first output of the standard
  // SplitMix64 generator seeded with 0. So u(seed 0, n 0) =
  // 0xe220a8 · 2⁻²⁴ = 14819496 / 16777216 = 0.8833107948303223, and
  // "u < prob" flips exactly between prob = u and the next double up.
  // u(0, 1) = 0x910a2d · 2⁻²⁴ = 0.5665615200996399 (splitmix64(1) =
  // 0x910a2dec89025cc1), u(1, 0) = 0xc42c5a · 2⁻²⁴ = 0.7663017511367798
  // (splitmix64(2³²)), u(−1 = 0xffffffff, 5) = 0x61160c · 2⁻²⁴ =
  // 0.3792426586151123.
  const double u00 = 14819496.0 / 16777216.0;
  const int32_t ids[6] = {10, 11, 12, 13, 14, 15};
  int32_t masked[6];
  bool mask[6];
  maskTokens(ids, 2, 0, u00, 3, masked, mask);
  EXPECT_FALSE(mask[0]);
  EXPECT_EQ(masked[0], 10);
  maskTokens(ids, 2, 0, std::nextafter(u00, 1.0), 3, masked, mask);
  EXPECT_TRUE(mask[0]);
  EXPECT_EQ(masked[0], 3);
  EXPECT_TRUE(mask[1]); // 0.5666 < 0.8833
  EXPECT_EQ(masked[1], 3);

  const double u01 = static_cast<double>(0x910a2d) / 16777216.0;
  maskTokens(ids, 2, 0, u01, 3, masked, mask);
  EXPECT_FALSE(mask[1]);
  maskTokens(ids, 2, 0, std::nextafter(u01, 1.0), 3, masked, mask);
  EXPECT_TRUE(mask[1]);

  const double u10 = static_cast<double>(0xc42c5a) / 16777216.0;
  maskTokens(ids, 1, 1, u10, 3, masked, mask);
  EXPECT_FALSE(mask[0]);
  maskTokens(ids, 1, 1, std::nextafter(u10, 1.0), 3, masked, mask);
  EXPECT_TRUE(mask[0]);

  const double um15 = static_cast<double>(0x61160c) / 16777216.0;
  maskTokens(ids, 6, -1, um15, 3, masked, mask);
  EXPECT_FALSE(mask[5]);
  EXPECT_EQ(masked[5], 15);
  maskTokens(ids, 6, -1, std::nextafter(um15, 1.0), 3, masked, mask);
  EXPECT_TRUE(mask[5]);
  EXPECT_EQ(masked[5], 3);
}

TEST(Objectives, MaskTokensIsDeterministicWithTheRightFraction) {
  const int64_t n = 10000;
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i)
    ids[i] = static_cast<int32_t>((i * 7919) % 256);
  for (double prob : {0.15, 0.5}) {
    std::vector<int32_t> m1(n), m2(n), m3(n);
    std::unique_ptr<bool[]> k1(new bool[n]), k2(new bool[n]),
        k3(new bool[n]);
    maskTokens(ids.data(), n, 1337, prob, 300, m1.data(), k1.get());
    maskTokens(ids.data(), n, 1337, prob, 300, m2.data(), k2.get());
    maskTokens(ids.data(), n, 1338, prob, 300, m3.data(), k3.get());
    int64_t count = 0, differ = 0;
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(k1[i], k2[i]);
      EXPECT_EQ(m1[i], m2[i]);
      EXPECT_EQ(m1[i], k1[i] ? 300 : ids[i]);
      count += k1[i];
      differ += k1[i] != k3[i];
    }
    // The count is Binomial(10000, prob): σ = sqrt(n p (1 − p)) ≤ 50, so
    // ±250 is 5σ (and 6.9σ at prob 0.15).
    EXPECT_NEAR(static_cast<double>(count), prob * n, 250.0) << prob;
    // Another seed gives another mask: about 2 p (1 − p) n ≥ 2550 differ.
    EXPECT_GT(differ, 1000) << prob;
  }
}

TEST(Training, AdamWByHand) {
  // Element 0: p = 1, g = 0.5, m = v = 0, step 1, lr 0.1, β = (0.9, 0.999),
  // eps 1e-8, wd 0.01:
  //   m' = 0.1 · 0.5 = 0.05;  v' = 0.001 · 0.25 = 0.00025
  //   m̂ = 0.05 / 0.1 = 0.5;   v̂ = 0.00025 / 0.001 = 0.25, sqrt = 0.5
  //   p' = 1 · (1 − 0.1 · 0.01) − 0.1 · 0.5 / (0.5 + 1e-8)
  //      = 0.999 − 0.099999998 = 0.899000002
  {
    double p[1] = {1}, g[1] = {0.5}, m[1] = {0}, v[1] = {0};
    adamw(p, g, m, v, 1, 0.1, 1, 0.9, 0.999, 1e-8, 0.01);
    EXPECT_NEAR(m[0], 0.05, 1e-16);
    EXPECT_NEAR(v[0], 0.00025, 1e-18);
    EXPECT_NEAR(p[0], 0.899000002, 1e-15);
    float pf[1] = {1}, gf[1] = {0.5f}, mf[1] = {0}, vf[1] = {0};
    adamw(pf, gf, mf, vf, 1, 0.1, 1, 0.9, 0.999, 1e-8, 0.01);
    EXPECT_NEAR(pf[0], 0.899000002, 1e-7);
  }
  // Element 1: p = −2, g = −1, m = 0.1, v = 0.2, step 3, lr 0.01,
  // β = (0.9, 0.99), eps 1e-8, wd 0.1:
  //   m' = 0.09 − 0.1 = −0.01;  v' = 0.198 + 0.01 = 0.208
  //   1 − 0.9³ = 0.271;  1 − 0.99³ = 0.029701
  //   m̂ = −0.01 / 0.271 = −0.0369003690;  v̂ = 0.208 / 0.029701 = 7.0031312077
  //   sqrt v̂ = 2.6463429875
  //   p' = −2 · (1 − 0.001) − 0.01 · (−0.0369003690) / (2.6463429875 + 1e-8)
  //      = −1.998 + 0.000139439102 = −1.997860560898
  {
    double p[1] = {-2}, g[1] = {-1}, m[1] = {0.1}, v[1] = {0.2};
    adamw(p, g, m, v, 1, 0.01, 3, 0.9, 0.99, 1e-8, 0.1);
    EXPECT_NEAR(m[0], -0.01, 1e-16);
    EXPECT_NEAR(v[0], 0.208, 1e-16);
    EXPECT_NEAR(p[0], -1.997860560898, 1e-12);
  }
  // Element 2, where eps matters: p = 0.5, g = 0.2, m = v = 0, step 1,
  // lr 0.1, β = (0.9, 0.999), eps 0.1, wd 0:
  //   m' = 0.02;  v' = 0.001 · 0.04 = 0.00004
  //   m̂ = 0.2;   v̂ = 0.04, sqrt = 0.2
  //   p' = 0.5 − 0.1 · 0.2 / (0.2 + 0.1) = 0.5 − 0.0666… = 0.4333…
  // (eps inside the square root would give 0.5 − 0.02 / sqrt(0.14) =
  // 0.44655.)
  {
    double p[1] = {0.5}, g[1] = {0.2}, m[1] = {0}, v[1] = {0};
    adamw(p, g, m, v, 1, 0.1, 1, 0.9, 0.999, 0.1, 0.0);
    EXPECT_NEAR(p[0], 0.5 - 0.2 / 3, 1e-15);
  }
}

//===----------------------------------------------------------------------===//
// Float against double
//===----------------------------------------------------------------------===//

TEST(FloatVsDouble, LayersAgree) {
  Rng rng(30);
  const int64_t R = 6, D = 8, In = 8, Out = 5, K = 3;
  Vec x = floatRounded(rng.vec(R * D, -2, 2));
  Vec g = floatRounded(rng.vec(D, 0.5, 1.5));
  Vec w = floatRounded(rng.vec(Out * In));
  Vec a = floatRounded(rng.vec(K * In)), b = floatRounded(rng.vec(Out * K));
  Vec dyD = floatRounded(rng.vec(R * D)), dyO = floatRounded(rng.vec(R * Out));

  const int32_t ids[4] = {3, 0, 5, 3}; // rows of a [R, D] table
  expectFloatMatchesDouble("embed", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> table = as<T>(x), out(4 * D);
    EXPECT_TRUE(embed(table.data(), R, D, ids, 4, out.data()));
    return toVec(out);
  });
  expectFloatMatchesDouble("embedBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> dout = as<T>(Vec(dyD.begin(), dyD.begin() + 4 * D)),
                   dtable(R * D);
    embedBackward(ids, 4, R, D, dout.data(), dtable.data());
    return toVec(dtable);
  });
  expectFloatMatchesDouble("rmsnorm", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), gs = as<T>(g), y(R * D);
    rmsnorm(xs.data(), gs.data(), R, D, 1e-6, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("rmsnormBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), gs = as<T>(g), dy = as<T>(dyD), dx(R * D),
                   dg(D);
    rmsnormBackward(xs.data(), gs.data(), R, D, 1e-6, dy.data(), dx.data(),
                    dg.data());
    Vec both = toVec(dx);
    both.insert(both.end(), dg.begin(), dg.end());
    return both;
  });
  expectFloatMatchesDouble("linear", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), ws = as<T>(w), y(R * Out);
    linear(xs.data(), ws.data(), R, In, Out, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("linearBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), ws = as<T>(w), dy = as<T>(dyO), dx(R * In),
                   dw(Out * In);
    linearBackward(xs.data(), ws.data(), R, In, Out, dy.data(), dx.data(),
                   dw.data());
    Vec both = toVec(dx);
    both.insert(both.end(), dw.begin(), dw.end());
    return both;
  });
  expectFloatMatchesDouble("lowrank", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), as_ = as<T>(a), bs = as<T>(b), y(R * Out);
    lowrank(xs.data(), as_.data(), bs.data(), R, In, K, Out, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("lowrankBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), as_ = as<T>(a), bs = as<T>(b),
                   dy = as<T>(dyO), dx(R * In), da(K * In), db(Out * K);
    lowrankBackward(xs.data(), as_.data(), bs.data(), R, In, K, Out,
                    dy.data(), dx.data(), da.data(), db.data());
    Vec all = toVec(dx);
    all.insert(all.end(), da.begin(), da.end());
    all.insert(all.end(), db.begin(), db.end());
    return all;
  });
  // rope: x as [2, 3, 8] with hd 4, large positions (offset 1000).
  expectFloatMatchesDouble("rope", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), y(R * D);
    rope(xs.data(), 2, 3, D, 4, 10000.0, 1000, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("ropeBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> dy = as<T>(dyD), dx(R * D);
    ropeBackward(dy.data(), 2, 3, D, 4, 10000.0, 1000, dx.data());
    return toVec(dx);
  });
  expectFloatMatchesDouble("swiglu", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> gs = as<T>(x), us = as<T>(dyD), y(R * D);
    swiglu(gs.data(), us.data(), R * D, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("swigluBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> gs = as<T>(x), us = as<T>(dyD), dy = as<T>(x), dg(R * D),
                   du(R * D);
    swigluBackward(gs.data(), us.data(), R * D, dy.data(), dg.data(),
                   du.data());
    Vec both = toVec(dg);
    both.insert(both.end(), du.begin(), du.end());
    return both;
  });
  expectFloatMatchesDouble("gelu", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), y(R * D);
    gelu(xs.data(), R * D, y.data());
    return toVec(y);
  });
  expectFloatMatchesDouble("geluBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> xs = as<T>(x), dy = as<T>(dyD), dx(R * D);
    geluBackward(xs.data(), R * D, dy.data(), dx.data());
    return toVec(dx);
  });
  expectFloatMatchesDouble("sumLeading", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> dy = as<T>(dyD), out(D);
    sumLeading(dy.data(), R, D, out.data());
    return toVec(out);
  });
}

TEST(FloatVsDouble, PoolAgrees) {
  Rng rng(31);
  const int64_t R = 3, L = 4, D = 3;
  const int32_t ids[R * L] = {65,  66,  256, 67,  256, 256,
                              256, 256, 257, 256, 10,  256};
  Vec x = floatRounded(rng.vec(R * L * D, -2, 2));
  Vec dout = floatRounded(rng.vec(R * D));
  for (PoolKind kind : {PoolKind::Mean, PoolKind::MaskedMean, PoolKind::Max}) {
    const int32_t *k = kind == PoolKind::MaskedMean ? ids : nullptr;
    std::string name = kind == PoolKind::Mean         ? "pool mean"
                       : kind == PoolKind::MaskedMean ? "pool masked_mean"
                                                      : "pool max";
    expectFloatMatchesDouble(name, [&](auto zero) {
      using T = decltype(zero);
      std::vector<T> xs = as<T>(x), out(R * D);
      pool(kind, xs.data(), k, R, L, D, out.data());
      return toVec(out);
    });
    expectFloatMatchesDouble(name + " backward", [&](auto zero) {
      using T = decltype(zero);
      std::vector<T> xs = as<T>(x), dy = as<T>(dout), dx(R * L * D);
      poolBackward(kind, xs.data(), k, R, L, D, dy.data(), dx.data());
      return toVec(dx);
    });
  }
}

TEST(FloatVsDouble, AttentionAgrees) {
  Rng rng(32);
  const int64_t Bt = 2, Tq = 3, S = 5, H = 4, K = 2, hd = 4;
  const int64_t qn = Bt * Tq * H * hd, kvn = Bt * S * K * hd;
  Vec q = floatRounded(rng.vec(qn, -2, 2)), k = floatRounded(rng.vec(kvn, -2, 2)),
      v = floatRounded(rng.vec(kvn)), dy = floatRounded(rng.vec(qn));
  for (bool causal : {true, false}) {
    std::string name = causal ? "attention causal" : "attention none";
    expectFloatMatchesDouble(name, [&](auto zero) {
      using T = decltype(zero);
      std::vector<T> qs = as<T>(q), ks = as<T>(k), vs = as<T>(v), y(qn);
      attention(causal, qs.data(), ks.data(), vs.data(), Bt, Tq, S, H, K, hd,
                S - Tq, y.data());
      return toVec(y);
    });
    expectFloatMatchesDouble(name + " backward", [&](auto zero) {
      using T = decltype(zero);
      std::vector<T> qs = as<T>(q), ks = as<T>(k), vs = as<T>(v),
                     dys = as<T>(dy), dq(qn), dk(kvn), dv(kvn);
      attentionBackward(causal, qs.data(), ks.data(), vs.data(), Bt, Tq, S, H,
                        K, hd, S - Tq, dys.data(), dq.data(), dk.data(),
                        dv.data());
      Vec all = toVec(dq);
      all.insert(all.end(), dk.begin(), dk.end());
      all.insert(all.end(), dv.begin(), dv.end());
      return all;
    });
  }
}

TEST(FloatVsDouble, ObjectivesAndAdamWAgree) {
  Rng rng(33);
  const int64_t P = 6, V = 11;
  Vec logits = floatRounded(rng.vec(P * V, -4, 4));
  Vec teacher = floatRounded(rng.vec(P * V, -4, 4));
  int32_t targets[P];
  for (int64_t p = 0; p < P; ++p)
    targets[p] = rng.index(V);
  const bool counted[P] = {true, false, true, true, false, true};
  expectFloatMatchesDouble("crossEntropy", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> z = as<T>(logits);
    T loss = 0;
    EXPECT_TRUE(crossEntropy(z.data(), targets, counted, P, V, &loss));
    return Vec{static_cast<double>(loss)};
  });
  expectFloatMatchesDouble("crossEntropyBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> z = as<T>(logits), dz(P * V);
    crossEntropyBackward(z.data(), targets, counted, P, V, T(0.75), dz.data());
    return toVec(dz);
  });
  expectFloatMatchesDouble("distill", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> z = as<T>(logits), t = as<T>(teacher);
    T loss = 0;
    EXPECT_TRUE(distill(z.data(), t.data(), targets, P, V, 2.0, 0.5, &loss));
    return Vec{static_cast<double>(loss)};
  });
  expectFloatMatchesDouble("distillBackward", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> z = as<T>(logits), t = as<T>(teacher), dz(P * V);
    distillBackward(z.data(), t.data(), targets, P, V, 2.0, 0.5, T(0.75),
                    dz.data());
    return toVec(dz);
  });
  const int64_t n = 20;
  Vec p0 = floatRounded(rng.vec(n)), g0 = floatRounded(rng.vec(n)),
      m0 = floatRounded(rng.vec(n, -0.1, 0.1)),
      v0 = floatRounded(rng.vec(n, 0, 0.01));
  expectFloatMatchesDouble("adamw", [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> p = as<T>(p0), g = as<T>(g0), m = as<T>(m0), v = as<T>(v0);
    adamw(p.data(), g.data(), m.data(), v.data(), n, 1e-3, 7, 0.9, 0.99, 1e-8,
          0.1);
    Vec all = toVec(p);
    all.insert(all.end(), m.begin(), m.end());
    all.insert(all.end(), v.begin(), v.end());
    return all;
  });
}

} // namespace
