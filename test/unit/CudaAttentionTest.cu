//===- CudaAttentionTest.cu - the CUDA attention kernels against doubles --===//
//
// Runs the three CUDA attention families of codegen/cuda/Kernels.cuh, the
// CUDA-core kernels (attention, attentionGradQ, attentionGradKV), the
// tensor-core ones with TF32 operands (attentionTc, attentionGradQTc,
// attentionGradKVTc) and those with bf16 operands (attentionBf, ...), on
// random inputs and compares every output (y, the log-sum-exp, delta, dq,
// dk, dv) with attention computed here in double precision, and the
// bfloat16 copies of y (every family) and dv (tensor cores) that a bf16
// model's matmuls read with their fp32 values rounded. The cases
// cover what the models' tests do not reach one by one: partial blocks of
// queries and of keys, more keys than queries with an offset (a prefill
// after cached tokens) given on the device as the artifacts give it,
// grouped kv heads, no mask, every tensor-core head width, and the bf16
// kernels with RoPE folded in (q and k rotated as they load, dq and dk
// rotated back as they are stored).
//
// `--time` instead times both tensor-core families at the benchmark models'
// shapes (median of 20 launches each, with its TFLOP/s) and checks nothing.
//
// A plain program, built with nvcc (test/stlm-compile/cuda-attention.test
// compiles it wherever nvcc is; it runs where a GPU is, and
// scripts/cuda-device.sh carries it to one). With no device it says so and
// exits 0 having checked nothing.
//
//===----------------------------------------------------------------------===//

#include "CudaCheck.cuh"
#include "Kernels.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

using namespace stlm_cuda;

namespace {

struct Case {
  int B, T, S, H, K, HD;
  bool causal;
  int offset; // -1: none given (the kernels take S - T)
};

struct Result {
  std::vector<double> y, lse, delta, dq, dk, dv;
};

/// Attention and its gradients in double: q, dy [B, T, H·HD], k, v
/// [B, S, K·HD]; key u is visible to query t when u <= t + offset (causal).
Result reference(const Case &c, const std::vector<float> &q,
                 const std::vector<float> &k, const std::vector<float> &v,
                 const std::vector<float> &dy) {
  int off = c.offset >= 0 ? c.offset : c.S - c.T, group = c.H / c.K;
  double scale = 1.0 / std::sqrt((double)c.HD);
  Result r;
  r.y.assign(q.size(), 0);
  r.dq.assign(q.size(), 0);
  r.dk.assign(k.size(), 0);
  r.dv.assign(v.size(), 0);
  r.lse.assign((size_t)c.B * c.H * c.T, 0);
  r.delta.assign(r.lse.size(), 0);
  auto Q = [&](int b, int t, int h) {
    return ((size_t)b * c.T + t) * c.H * c.HD + (size_t)h * c.HD;
  };
  auto KV = [&](int b, int u, int j) {
    return ((size_t)b * c.S + u) * c.K * c.HD + (size_t)j * c.HD;
  };
  std::vector<double> p(c.S), dp(c.S);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h)
      for (int t = 0; t < c.T; ++t) {
        int j = h / group, seen = c.causal ? std::min(c.S, t + off + 1) : c.S;
        double mx = -INFINITY;
        for (int u = 0; u < seen; ++u) {
          double s = 0;
          for (int d = 0; d < c.HD; ++d)
            s += (double)q[Q(b, t, h) + d] * k[KV(b, u, j) + d];
          p[u] = s * scale;
          mx = std::max(mx, p[u]);
        }
        double sum = 0;
        for (int u = 0; u < seen; ++u)
          sum += p[u] = std::exp(p[u] - mx);
        r.lse[((size_t)b * c.H + h) * c.T + t] = mx + std::log(sum);
        double delta = 0;
        for (int d = 0; d < c.HD; ++d) {
          double y = 0;
          for (int u = 0; u < seen; ++u)
            y += p[u] / sum * v[KV(b, u, j) + d];
          r.y[Q(b, t, h) + d] = y;
          delta += y * dy[Q(b, t, h) + d];
        }
        r.delta[((size_t)b * c.H + h) * c.T + t] = delta;
        for (int u = 0; u < seen; ++u) {
          double pu = p[u] / sum, dpu = 0;
          for (int d = 0; d < c.HD; ++d)
            dpu += (double)dy[Q(b, t, h) + d] * v[KV(b, u, j) + d];
          double ds = pu * (dpu - delta) * scale;
          for (int d = 0; d < c.HD; ++d) {
            r.dq[Q(b, t, h) + d] += ds * k[KV(b, u, j) + d];
            r.dk[KV(b, u, j) + d] += ds * q[Q(b, t, h) + d];
            r.dv[KV(b, u, j) + d] += pu * dy[Q(b, t, h) + d];
          }
        }
      }
  return r;
}

/// n values drawn from a normal distribution of standard deviation sd.
std::vector<float> normalValues(std::mt19937 &rng, size_t n, float sd) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n);
  for (float &e : x)
    e = normal(rng) * sd;
  return x;
}

enum class Kind { CudaCores, TF32, BF16 };

/// The kernels and launch shapes of one family.
template <int HD, Kind KIND> struct Family {
  static constexpr bool TC = KIND != Kind::CudaCores;
  static constexpr const char *name = KIND == Kind::CudaCores ? "cuda cores"
                                      : KIND == Kind::TF32    ? "tf32"
                                                              : "bf16";
  static constexpr int rowsF = TC ? kTcRows : attentionRows(HD, false),
                       rowsB = TC ? kTcRows : attentionRows(HD, true);
  static size_t shared(int pass) {
    if constexpr (KIND == Kind::TF32)
      return attentionTcShared<HD>(pass);
    else if constexpr (KIND == Kind::BF16)
      return attentionBfShared<HD>(pass);
    return 0;
  }
  static constexpr auto forward() {
    if constexpr (KIND == Kind::TF32)
      return attentionTc<HD>;
    else if constexpr (KIND == Kind::BF16)
      return attentionBf<HD>;
    else
      return attention<HD>;
  }
  static constexpr auto gradQ() {
    if constexpr (KIND == Kind::TF32)
      return attentionGradQTc<HD>;
    else if constexpr (KIND == Kind::BF16)
      return attentionGradQBf<HD>;
    else
      return attentionGradQ<HD>;
  }
  static constexpr auto gradKV() {
    if constexpr (KIND == Kind::TF32)
      return attentionGradKVTc<HD>;
    else if constexpr (KIND == Kind::BF16)
      return attentionGradKVBf<HD>;
    else
      return attentionGradKV<HD>;
  }
};

/// Runs one family on one case; false (with a line per bad output) when an
/// output is further from the reference than `tolerance`.
/// delta = dy · y a row (attentionDelta) with its lanes for heads HD wide,
/// as the emitted training step launches it.
template <int HD>
void launchDelta(const float *y, const float *dy, float *delta, int64_t rows,
                 int T, int H) {
  constexpr int lanes = attentionDeltaLanes(HD);
  attentionDelta<lanes>
      <<<blocksFor(rows * lanes, 256), 256>>>(y, dy, delta, rows, T, H, HD);
}

template <int HD, Kind KIND>
bool run(const Case &c, double tolerance, const Result &want,
         const std::vector<float> &hq, const std::vector<float> &hk,
         const std::vector<float> &hv, const std::vector<float> &hdy) {
  using F = Family<HD, KIND>;
  constexpr bool TC = F::TC;
  const char *family = F::name;
  Buffer q(hq), k(hk), v(hv), dy(hdy), y(hq.size()), dq(hq.size()),
      dk(hk.size()), dv(hk.size()), lse(want.lse.size()),
      delta(want.lse.size()), lse2(want.lse.size()), delta2(want.lse.size());
  int32_t *offset = nullptr;
  if (c.offset >= 0) {
    ok(cudaMalloc(&offset, sizeof(int32_t)), "cudaMalloc");
    cudaMemcpy(offset, &c.offset, sizeof(int32_t), cudaMemcpyHostToDevice);
  }
  dim3 gridF(blocksFor(c.T, F::rowsF), c.H, c.B),
      gridQ(blocksFor(c.T, F::rowsB), c.H, c.B),
      gridKV(blocksFor(c.S, F::rowsB), c.K, c.B);
  // The forward and dk/dv launches; the forward kernels also take a bf16
  // model's copy of y, and the tensor-core dk/dv kernels one of dv (null:
  // none).
  auto forward = [&](float *yp, float *lsep, const float *dyp, float *deltap,
                     __nv_bfloat16 *y16p) {
    if constexpr (KIND == Kind::BF16) // no RoPE folded in (runRope)
      F::forward()<<<gridF, 128, F::shared(0)>>>(
          q.p, k.p, v.p, yp, c.T, c.S, c.H, c.K, c.causal, offset, lsep, dyp,
          deltap, y16p, nullptr);
    else
      F::forward()<<<gridF, 128, F::shared(0)>>>(q.p, k.p, v.p, yp, c.T, c.S,
                                                 c.H, c.K, c.causal, offset,
                                                 lsep, dyp, deltap, y16p);
  };
  auto gradKV = [&](float *dvp, __nv_bfloat16 *dv16p) {
    if constexpr (KIND == Kind::BF16)
      F::gradKV()<<<gridKV, 128, F::shared(2)>>>(
          q.p, k.p, v.p, dy.p, lse.p, delta.p, dk.p, dvp, c.T, c.S, c.H, c.K,
          c.causal, offset, dv16p, nullptr, nullptr);
    else if constexpr (TC)
      F::gradKV()<<<gridKV, 128, F::shared(2)>>>(
          q.p, k.p, v.p, dy.p, lse.p, delta.p, dk.p, dvp, c.T, c.S, c.H, c.K,
          c.causal, offset, dv16p);
    else
      F::gradKV()<<<gridKV, 128, F::shared(2)>>>(q.p, k.p, v.p, dy.p, lse.p,
                                                 delta.p, dk.p, dvp, c.T, c.S,
                                                 c.H, c.K, c.causal, offset);
  };
  // The training step's pair: the forward keeps lse, the backward takes
  // delta from y; then the backward's own statistics pass (no y).
  forward(y.p, lse.p, nullptr, nullptr, nullptr);
  int64_t rows = (int64_t)c.B * c.T * c.H;
  launchDelta<HD>(y.p, dy.p, delta.p, rows, c.T, c.H);
  forward(nullptr, lse2.p, dy.p, delta2.p, nullptr);
  if constexpr (KIND == Kind::BF16)
    F::gradQ()<<<gridQ, 128, F::shared(1)>>>(
        q.p, k.p, v.p, dy.p, lse.p, delta.p, dq.p, c.T, c.S, c.H, c.K, c.causal,
        offset, nullptr, nullptr);
  else
    F::gradQ()<<<gridQ, 128, F::shared(1)>>>(q.p, k.p, v.p, dy.p, lse.p,
                                             delta.p, dq.p, c.T, c.S, c.H, c.K,
                                             c.causal, offset);
  gradKV(dv.p, nullptr);
  // The kernels again, writing a bf16 model's copies: y's beside y, and
  // (tensor cores) dv's instead of dv. The same sums, so each copy must be
  // its fp32 value rounded.
  Bf16Buffer y16(hq.size()), dv16(hk.size());
  forward(y.p, lse.p, nullptr, nullptr, y16.p);
  if constexpr (TC)
    gradKV(nullptr, dv16.p);
  bool good = ok(cudaDeviceSynchronize(), "kernels");
  cudaFree(offset);
  if (!good)
    return false;
  for (auto [name, copy, full] :
       {std::tuple{"y16", &y16, &y}, std::tuple{"dv16", &dv16, &dv}}) {
    if (!TC && copy == &dv16)
      continue;
    if (relError(copy->get(), roundedToBF16(full->get())) != 0) {
      std::printf("FAIL: %s: %s is not its fp32 value rounded\n", family, name);
      good = false;
    }
  }
  struct {
    const char *name;
    const Buffer &got;
    const std::vector<double> &want;
  } outputs[] = {{"y", y, want.y},
                 {"lse", lse, want.lse},
                 {"delta", delta, want.delta},
                 {"lse (statistics pass)", lse2, want.lse},
                 {"delta (statistics pass)", delta2, want.delta},
                 {"dq", dq, want.dq},
                 {"dk", dk, want.dk},
                 {"dv", dv, want.dv}};
  double worst = 0;
  for (const auto &o : outputs) {
    double e = relError(o.got.get(), o.want);
    worst = std::max(worst, e);
    if (!(e <= tolerance)) {
      std::printf("FAIL: %s: %s off by %.3g of its largest value (limit "
                  "%.1g)\n",
                  family, o.name, e, tolerance);
      good = false;
    }
  }
  std::printf("  %-12s worst %.2e%s\n", family, worst, good ? "" : "  FAILED");
  return good;
}

/// Both families where the tensor-core kernels take the head width.
template <int HD> bool runCase(const Case &c) {
  std::mt19937 rng(c.T * 131 + c.S * 7 + c.H + HD);
  auto draw = [&](size_t n, float sd) { return normalValues(rng, n, sd); };
  size_t nq = (size_t)c.B * c.T * c.H * HD, nk = (size_t)c.B * c.S * c.K * HD;
  // q and k wide enough that the softmax is far from uniform.
  auto q = draw(nq, 1.5f), k = draw(nk, 1.5f), v = draw(nk, 1.f),
       dy = draw(nq, 1.f);
  std::printf("B=%d T=%d S=%d H=%d K=%d hd=%d %s%s\n", c.B, c.T, c.S, c.H, c.K,
              HD, c.causal ? "causal" : "unmasked",
              c.offset >= 0 ? " (offset on the device)" : "");
  Result want = reference(c, q, k, v, dy);
  // fp32 sums in another order; TF32 operands (10-bit mantissas); bf16
  // operands (7-bit mantissas) and probabilities rounded to bf16. Worst
  // measured over the cases on an H100 (2026-12-07): 1.2e-6, 1.2e-3 and
  // 8.5e-3 of each output's largest value.
  bool good = run<HD, Kind::CudaCores>(c, 2e-5, want, q, k, v, dy);
  if constexpr (HD % 16 == 0)
    good = run<HD, Kind::TF32>(c, 4e-3, want, q, k, v, dy) && good;
  if constexpr (HD % 16 == 0 && HD <= kBfMaxHead)
    good = run<HD, Kind::BF16>(c, 3e-2, want, q, k, v, dy) && good;
  return good;
}

/// x [rows, width] (heads HD wide; row r at position r % T) with every pair
/// rotated by sign · p · θ_i in double, as the rope kernel and the
/// reference evaluator rotate it.
template <typename X>
std::vector<X> rotatedPairs(const std::vector<X> &x, int T, int width, int HD,
                            double theta, double sign) {
  std::vector<X> y(x.size());
  for (size_t r = 0; r < x.size() / width; ++r)
    for (int c = 0; c < width; c += 2) {
      double angle = sign * (double)(r % T) *
                     std::pow(theta, -2.0 * (c % HD / 2) / HD),
             co = std::cos(angle), si = std::sin(angle), a = x[r * width + c],
             b = x[r * width + c + 1];
      y[r * width + c] = (X)(a * co - b * si);
      y[r * width + c + 1] = (X)(a * si + b * co);
    }
  return y;
}

/// The bf16 kernels with RoPE folded in (a training step's shape, T = S,
/// no offset): given unrotated q and k and ropeTable's angles, every
/// output must match attention in double on q and k rotated first, with
/// dq and dk rotated back; the copies of dq and dk their fp32 values
/// rounded.
template <int HD> bool runRope(const Case &c) {
  using F = Family<HD, Kind::BF16>;
  const double theta = 10000.0;
  std::mt19937 rng(c.T * 17 + c.H + HD);
  auto draw = [&](size_t n, float sd) { return normalValues(rng, n, sd); };
  size_t nq = (size_t)c.B * c.T * c.H * HD, nk = (size_t)c.B * c.S * c.K * HD;
  auto hq = draw(nq, 1.5f), hk = draw(nk, 1.5f), hv = draw(nk, 1.f),
       hdy = draw(nq, 1.f);
  std::printf("B=%d T=%d H=%d K=%d hd=%d causal, RoPE folded in\n", c.B, c.T,
              c.H, c.K, HD);
  Result want =
      reference(c, rotatedPairs(hq, c.T, c.H * HD, HD, theta, 1.0),
                rotatedPairs(hk, c.S, c.K * HD, HD, theta, 1.0), hv, hdy);
  want.dq = rotatedPairs(want.dq, c.T, c.H * HD, HD, theta, -1.0);
  want.dk = rotatedPairs(want.dk, c.S, c.K * HD, HD, theta, -1.0);
  int positions = std::max(c.T, c.S);
  double *table = nullptr;
  if (!ok(cudaMalloc(&table, sizeof(double) * positions * HD), "cudaMalloc"))
    return false;
  ropeTable<<<blocksFor(positions * (HD / 2), 256), 256>>>(table, positions, HD,
                                                           theta);
  Buffer q(hq), k(hk), v(hv), dy(hdy), y(nq), dq(nq), dk(nk), dv(nk),
      lse(want.lse.size()), delta(want.lse.size());
  Bf16Buffer dq16(nq), dk16(nk);
  dim3 grid(blocksFor(c.T, kTcRows), c.H, c.B),
      gridKV(blocksFor(c.S, kTcRows), c.K, c.B);
  F::forward()<<<grid, 128, F::shared(0)>>>(q.p, k.p, v.p, y.p, c.T, c.S, c.H,
                                            c.K, true, nullptr, lse.p, nullptr,
                                            nullptr, nullptr, table);
  int64_t rows = (int64_t)c.B * c.T * c.H;
  launchDelta<HD>(y.p, dy.p, delta.p, rows, c.T, c.H);
  F::gradQ()<<<grid, 128, F::shared(1)>>>(q.p, k.p, v.p, dy.p, lse.p, delta.p,
                                          dq.p, c.T, c.S, c.H, c.K, true,
                                          nullptr, table, dq16.p);
  F::gradKV()<<<gridKV, 128, F::shared(2)>>>(
      q.p, k.p, v.p, dy.p, lse.p, delta.p, dk.p, dv.p, c.T, c.S, c.H, c.K, true,
      nullptr, nullptr, table, dk16.p);
  bool good = ok(cudaDeviceSynchronize(), "kernels");
  cudaFree(table);
  if (!good)
    return false;
  for (auto [name, copy, full] :
       {std::tuple{"dq16", &dq16, &dq}, std::tuple{"dk16", &dk16, &dk}})
    if (relError(copy->get(), roundedToBF16(full->get())) != 0) {
      std::printf("FAIL: bf16 + RoPE: %s is not its fp32 value rounded\n",
                  name);
      good = false;
    }
  struct {
    const char *name;
    const Buffer &got;
    const std::vector<double> &want;
  } outputs[] = {
      {"y", y, want.y},    {"lse", lse, want.lse}, {"delta", delta, want.delta},
      {"dq", dq, want.dq}, {"dk", dk, want.dk},    {"dv", dv, want.dv}};
  double worst = 0;
  for (const auto &o : outputs) {
    double e = relError(o.got.get(), o.want);
    worst = std::max(worst, e);
    if (!(e <= 3e-2)) {
      std::printf("FAIL: bf16 + RoPE: %s off by %.3g of its largest value "
                  "(limit 3e-2)\n",
                  o.name, e);
      good = false;
    }
  }
  std::printf("  %-12s worst %.2e%s\n", "bf16 + RoPE", worst,
              good ? "" : "  FAILED");
  return good;
}

/// The three kernels of a tensor-core family at a causal training shape
/// (T = S), on random inputs (zeros can run faster than real data), the
/// backward's statistics from the forward.
template <int HD, Kind KIND>
void timeShape(const char *name, int B, int T, int H, int K,
               const double *rope = nullptr) {
  using F = Family<HD, KIND>;
  size_t n = (size_t)B * T * H * HD, nkv = (size_t)B * T * K * HD,
         stats = (size_t)B * H * T;
  std::mt19937 rng(T + H);
  Buffer q(normalValues(rng, n, 1.f)), k(normalValues(rng, nkv, 1.f)),
      v(normalValues(rng, nkv, 1.f)), dy(normalValues(rng, n, 1.f)), y(n),
      dq(n), dk(nkv), dv(nkv), lse(stats), delta(stats);
  dim3 grid(blocksFor(T, kTcRows), H, B), gridKV(blocksFor(T, kTcRows), K, B);
  // The bf16 kernels with RoPE folded in where `rope` is given.
  double f = medianUs([&] {
    if constexpr (KIND == Kind::BF16)
      F::forward()<<<grid, 128, F::shared(0)>>>(q.p, k.p, v.p, y.p, T, T, H, K,
                                                true, nullptr, lse.p, nullptr,
                                                nullptr, nullptr, rope);
    else
      F::forward()<<<grid, 128, F::shared(0)>>>(q.p, k.p, v.p, y.p, T, T, H, K,
                                                true, nullptr, lse.p, nullptr,
                                                nullptr, nullptr);
  });
  launchDelta<HD>(y.p, dy.p, delta.p, (int64_t)B * T * H, T, H);
  double gq = medianUs([&] {
    if constexpr (KIND == Kind::BF16)
      F::gradQ()<<<grid, 128, F::shared(1)>>>(q.p, k.p, v.p, dy.p, lse.p,
                                              delta.p, dq.p, T, T, H, K, true,
                                              nullptr, rope, nullptr);
    else
      F::gradQ()<<<grid, 128, F::shared(1)>>>(
          q.p, k.p, v.p, dy.p, lse.p, delta.p, dq.p, T, T, H, K, true, nullptr);
  });
  double gkv = medianUs([&] {
    if constexpr (KIND == Kind::BF16)
      F::gradKV()<<<gridKV, 128, F::shared(2)>>>(
          q.p, k.p, v.p, dy.p, lse.p, delta.p, dk.p, dv.p, T, T, H, K, true,
          nullptr, nullptr, rope, nullptr);
    else
      F::gradKV()<<<gridKV, 128, F::shared(2)>>>(q.p, k.p, v.p, dy.p, lse.p,
                                                 delta.p, dk.p, dv.p, T, T, H,
                                                 K, true, nullptr, nullptr);
  });
  // The backward's statistic from y (both families take it).
  int64_t rows = (int64_t)B * T * H;
  double dl =
      medianUs([&] { launchDelta<HD>(y.p, dy.p, delta.p, rows, T, H); });
  // Causal: half of the T × T scores; 2 products forward, 3 for dq (s,
  // dp, ds·k), 4 for dk and dv.
  double flop = 2.0 * B * H * (double)T * T / 2 * HD;
  std::printf("%s %s%s (B=%d T=%d H=%d K=%d hd=%d): forward %.1f us (%.0f "
              "TFLOP/s), dq %.1f us (%.0f), dk/dv %.1f us (%.0f), delta %.1f "
              "us (%.1f TB/s)\n",
              name, F::name, rope ? " + RoPE" : "", B, T, H, K, HD, f,
              2 * flop / f * 1e-6, gq, 3 * flop / gq * 1e-6, gkv,
              4 * flop / gkv * 1e-6, dl, 2.0 * n * sizeof(float) / dl * 1e-6);
  ok(cudaDeviceSynchronize(), "timing");
}

template <int HD> void timeBoth(const char *name, int B, int T, int H, int K) {
  timeShape<HD, Kind::TF32>(name, B, T, H, K);
  timeShape<HD, Kind::BF16>(name, B, T, H, K);
  double *table = nullptr;
  if (!ok(cudaMalloc(&table, sizeof(double) * T * HD), "cudaMalloc"))
    return;
  ropeTable<<<blocksFor(T * (HD / 2), 256), 256>>>(table, T, HD, 10000.0);
  timeShape<HD, Kind::BF16>(name, B, T, H, K, table);
  cudaFree(table);
}

} // namespace

int main(int argc, char **argv) {
  if (!deviceOrSkip())
    return 0;
  if (!ok(setAttentionTcLimits<16>(), "limits") ||
      !ok(setAttentionTcLimits<32>(), "limits") ||
      !ok(setAttentionTcLimits<64>(), "limits") ||
      !ok(setAttentionTcLimits<128>(), "limits") ||
      !ok(setAttentionBfLimits<16>(), "limits") ||
      !ok(setAttentionBfLimits<32>(), "limits") ||
      !ok(setAttentionBfLimits<64>(), "limits"))
    return 1;
  if (argc > 1 && std::string(argv[1]) == "--time") {
    timeBoth<64>("stlm-100m", 64, 512, 12, 4);
    timeBoth<64>("ref-3m", 16, 256, 4, 4);
    timeBoth<32>("char-tiny", 12, 64, 4, 4);
    return 0;
  }
  bool good = true;
  // A training step's shapes (T = S), partial blocks, grouped kv heads.
  good &= runCase<64>({2, 64, 64, 2, 2, 64, true, -1});
  good &= runCase<64>({2, 160, 160, 4, 2, 64, true, -1});
  good &= runCase<32>({3, 100, 100, 4, 1, 32, true, -1});
  good &= runCase<16>({2, 77, 77, 2, 1, 16, true, -1});
  good &= runCase<128>({1, 130, 130, 2, 1, 128, true, -1});
  // A prefill after 30 cached tokens into a longer cache (the offset given
  // on the device), and no mask at all.
  good &= runCase<64>({2, 37, 80, 4, 2, 64, true, 30});
  good &= runCase<32>({2, 70, 70, 2, 2, 32, false, -1});
  good &= runCase<64>({1, 20, 90, 2, 1, 64, false, -1});
  // A head width the tensor-core kernels do not take.
  good &= runCase<24>({2, 50, 50, 3, 1, 24, true, -1});
  // RoPE folded into the bf16 kernels: partial blocks, grouped kv heads.
  good &= runRope<64>({2, 160, 160, 4, 2, 64, true, -1});
  good &= runRope<32>({3, 100, 100, 4, 1, 32, true, -1});
  good &= runRope<16>({2, 77, 77, 2, 1, 16, true, -1});
  std::printf(good ? "PASS\n" : "FAILED\n");
  return good ? 0 : 1;
}
