//===- CudaKernelsTest.cu - the CUDA row and elementwise kernels ----------===//
//
// Runs the RMSNorm, SwiGLU, GELU and RoPE kernels of
// codegen/cuda/Kernels.cuh, with the launch shapes the emitter
// (codegen/cuda/EmitCuda.cpp) gives them, on random inputs and compares
// every output with the same math in double: both RMSNorm families (a block
// per row for any width; a warp per row with the row in registers for
// widths that are a multiple of 4 up to 1024), their gradients (the weight
// gradient's deterministic block sum, the residual addend, dx in place of
// dy and its bfloat16 copy), SwiGLU and its gradient (the four-a-thread
// path and its scalar tail, outputs in place of inputs), GELU and its
// gradient (the residual, in place), RoPE alone and in pairs (one width,
// with a gradient's output over the other's input; two widths), and the
// bfloat16 copies they write for bf16 matmuls, with or without the fp32
// result beside them. The models' tests reach only their own widths.
//
// `--time` instead times the kernels at stlm-100m's shapes (64 × 512 rows
// of 768; SwiGLU 2048 wide) with the bytes each moves, and checks nothing.
//
// A plain program built with nvcc, like CudaAttentionTest.cu
// (test/stlm-compile/cuda-kernels.test; scripts/cuda-device.sh carries it
// to a GPU). With no device it says so and exits 0 having checked nothing.
//
//===----------------------------------------------------------------------===//

#include "CudaCheck.cuh"
#include "Kernels.cuh"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace stlm_cuda;

namespace {

std::vector<float> randomVector(size_t n, std::mt19937 &rng, float lo = -2,
                                float hi = 2) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> x(n);
  for (float &v : x)
    v = u(rng);
  return x;
}

/// A zeroed device counter for the kernels' last-block sums.
struct Counter {
  unsigned *p = nullptr;
  Counter() {
    if (!ok(cudaMalloc(&p, sizeof(unsigned)), "cudaMalloc"))
      std::exit(1);
    cudaMemset(p, 0, sizeof(unsigned));
  }
  ~Counter() { cudaFree(p); }
};

bool report(const std::string &what, double err, double bound) {
  bool good = err <= bound;
  std::printf("%s %s: %.3g (bound %.3g)\n", good ? "ok  " : "FAIL",
              what.c_str(), err, bound);
  return good;
}

/// The float4s a lane holds of a row of D (EmitCuda.cpp's rowVectors).
int rowVectors(int D) {
  return D % 4 || D > 128 * kRowVecMax ? 0 : (D + 127) / 128;
}

/// f.template operator()<V>() for the row kernels' V in 1..kRowVecMax.
template <typename F> void withV(int v, F f) {
  switch (v) {
  case 1:
    f.template operator()<1>();
    break;
  case 2:
    f.template operator()<2>();
    break;
  case 3:
    f.template operator()<3>();
    break;
  case 4:
    f.template operator()<4>();
    break;
  case 5:
    f.template operator()<5>();
    break;
  case 6:
    f.template operator()<6>();
    break;
  case 7:
    f.template operator()<7>();
    break;
  case 8:
    f.template operator()<8>();
    break;
  default:
    std::fprintf(stderr, "FAIL: no row kernel for V=%d\n", v);
    std::exit(1);
  }
}
static_assert(kRowVecMax == 8, "withV covers V = 1..8");

/// RMSNorm forward as the emitter launches it. `y` and `y16` may be null
/// (the row kernels take a null y).
void launchRmsnorm(const float *x, const float *g, float *y, int N, int D,
                   float eps, __nv_bfloat16 *y16) {
  if (int v = rowVectors(D))
    withV(v, [&]<int V>() {
      rmsnormRows<V><<<(N + 7) / 8, 256>>>(x, g, y, N, D, eps, y16);
    });
  else
    rmsnorm<<<N, std::min(1024, (D + 31) / 32 * 32)>>>(x, g, y, D, eps, y16);
}

/// RMSNorm's gradient as the emitter launches it; `generic` forces the
/// any-width kernel. partial holds 264 · D floats.
void launchRmsnormGrad(const float *x, const float *g, const float *dy,
                       const float *addend, float *dx, float *dg,
                       float *partial, unsigned *counter, int N, int D,
                       float eps, bool generic, __nv_bfloat16 *dx16 = nullptr) {
  if (int v = generic ? 0 : rowVectors(D)) {
    int blocks = std::min(264, (N + 7) / 8);
    withV(v, [&]<int V>() {
      rmsnormGradRows<V><<<blocks, 256, D * 4>>>(
          x, g, dy, addend, dx, dg, partial, counter, N, D, eps, dx16);
    });
    return;
  }
  int warps = std::min(8, 47 * 1024 / (4 * D));
  int rows = std::max(warps, (N + 263) / 264);
  rows = (rows + warps - 1) / warps * warps;
  int blocks = (N + rows - 1) / rows;
  rmsnormGrad<<<blocks, warps * 32, warps * D * 4>>>(
      x, g, dy, addend, dx, dg, partial, counter, N, D, eps, rows, dx16);
}

bool rmsnormCase(int N, int D, std::mt19937 &rng) {
  const float eps = 1e-5f;
  auto x = randomVector((size_t)N * D, rng),
       g = randomVector(D, rng, 0.5f, 1.5f),
       dy = randomVector((size_t)N * D, rng),
       add = randomVector((size_t)N * D, rng);
  std::vector<double> y(x.size()), dx(x.size()), dxAdd(x.size()), dg(D, 0.0);
  for (int r = 0; r < N; ++r) {
    const float *xr = &x[(size_t)r * D], *dr = &dy[(size_t)r * D];
    double ss = 0, dot = 0;
    for (int d = 0; d < D; ++d) {
      ss += (double)xr[d] * xr[d];
      dot += (double)dr[d] * g[d] * xr[d];
    }
    double s = 1 / std::sqrt(ss / D + eps);
    for (int d = 0; d < D; ++d) {
      size_t i = (size_t)r * D + d;
      y[i] = xr[d] * s * g[d];
      dx[i] = s * g[d] * dr[d] - s * s * s / D * xr[d] * dot;
      dxAdd[i] = dx[i] + add[i];
      dg[d] += (double)dr[d] * xr[d] * s;
    }
  }
  std::string name =
      "rmsnorm N=" + std::to_string(N) + " D=" + std::to_string(D);
  bool good = true, rows = rowVectors(D) != 0;
  Buffer bx(x), bg(g), bdy(dy), badd(add), by(x.size()), bdx(x.size()), bdg(D),
      partial((size_t)264 * D);
  Bf16Buffer y16(x.size());
  Counter counter;
  // fp32 result and its bfloat16 copy; the copy alone (row kernels).
  launchRmsnorm(bx.p, bg.p, by.p, N, D, eps, y16.p);
  good &= ok(cudaDeviceSynchronize(), "rmsnorm");
  std::vector<float> gotY = by.get();
  good &= report(name + (rows ? " (rows)" : " (block)") + " y",
                 relError(gotY, y), 2e-6);
  good &= report(name + " y16 = y rounded",
                 relError(y16.get(), roundedToBF16(gotY)), 0);
  if (rows) {
    Bf16Buffer only(x.size());
    launchRmsnorm(bx.p, bg.p, nullptr, N, D, eps, only.p);
    good &= ok(cudaDeviceSynchronize(), "rmsnorm, copy only");
    good &= report(name + " y16 alone", relError(only.get(), y), 4e-3);
  }
  // The gradient: each family where it applies, with and without the
  // residual addend, and dx written over dy.
  for (bool generic : {false, true}) {
    if (!generic && !rows)
      continue;
    std::string fam = name + (generic ? " grad (generic)" : " grad (rows)");
    launchRmsnormGrad(bx.p, bg.p, bdy.p, nullptr, bdx.p, bdg.p, partial.p,
                      counter.p, N, D, eps, generic);
    good &= ok(cudaDeviceSynchronize(), "rmsnormGrad");
    good &= report(fam + " dx", relError(bdx.get(), dx), 2e-5);
    good &= report(fam + " dg", relError(bdg.get(), dg), 2e-5);
    Buffer inPlace(dy);
    Bf16Buffer dx16(x.size());
    launchRmsnormGrad(bx.p, bg.p, inPlace.p, badd.p, inPlace.p, bdg.p,
                      partial.p, counter.p, N, D, eps, generic, dx16.p);
    good &= ok(cudaDeviceSynchronize(), "rmsnormGrad in place");
    std::vector<float> got = inPlace.get();
    good &= report(fam + " dx + addend, over dy", relError(got, dxAdd), 2e-5);
    good &= report(fam + " dg again", relError(bdg.get(), dg), 2e-5);
    good &= report(fam + " dx16 = dx rounded",
                   relError(dx16.get(), roundedToBF16(got)), 0);
  }
  return good;
}

double sigmoid(double z) { return 1 / (1 + std::exp(-z)); }

bool swigluCase(int64_t n, std::mt19937 &rng) {
  auto g = randomVector(n, rng, -4, 4), u = randomVector(n, rng),
       dy = randomVector(n, rng);
  std::vector<double> y(n), dg(n), du(n);
  for (int64_t i = 0; i < n; ++i) {
    double s = sigmoid(g[i]);
    y[i] = g[i] * s * u[i];
    dg[i] = dy[i] * u[i] * s * (1 + g[i] * (1 - s));
    du[i] = dy[i] * g[i] * s;
  }
  std::string name = "swiglu n=" + std::to_string(n);
  unsigned blocks =
      blocksFor((n + kSwiGLUPerThread - 1) / kSwiGLUPerThread, 256);
  bool good = true;
  Buffer bg(g), bu(u), bdy(dy), by(n), bdg(n), bdu(n);
  Bf16Buffer y16(n), dg16(n), du16(n);
  swiglu<<<blocks, 256>>>(bg.p, bu.p, by.p, n, y16.p);
  good &= ok(cudaDeviceSynchronize(), "swiglu");
  good &= report(name + " y", relError(by.get(), y), 1e-6);
  good &= report(name + " y16", relError(y16.get(), y), 4e-3);
  Bf16Buffer only(n);
  swiglu<<<blocks, 256>>>(bg.p, bu.p, nullptr, n, only.p);
  good &= ok(cudaDeviceSynchronize(), "swiglu, copy only");
  good &= report(name + " y16 alone", relError(only.get(), y), 4e-3);
  swigluGrad<<<blocks, 256>>>(bg.p, bu.p, bdy.p, bdg.p, bdu.p, n, dg16.p,
                              du16.p);
  good &= ok(cudaDeviceSynchronize(), "swigluGrad");
  good &= report(name + " dg", relError(bdg.get(), dg), 1e-6);
  good &= report(name + " du", relError(bdu.get(), du), 1e-6);
  good &= report(name + " dg16", relError(dg16.get(), dg), 4e-3);
  good &= report(name + " du16", relError(du16.get(), du), 4e-3);
  // In place (dg over g, du over u), then only the copies.
  Buffer ig(g), iu(u);
  swigluGrad<<<blocks, 256>>>(ig.p, iu.p, bdy.p, ig.p, iu.p, n);
  good &= ok(cudaDeviceSynchronize(), "swigluGrad in place");
  good &= report(name + " dg over g", relError(ig.get(), dg), 1e-6);
  good &= report(name + " du over u", relError(iu.get(), du), 1e-6);
  Bf16Buffer c1(n), c2(n);
  swigluGrad<<<blocks, 256>>>(bg.p, bu.p, bdy.p, nullptr, nullptr, n, c1.p,
                              c2.p);
  good &= ok(cudaDeviceSynchronize(), "swigluGrad, copies only");
  good &= report(name + " dg16 alone", relError(c1.get(), dg), 4e-3);
  good &= report(name + " du16 alone", relError(c2.get(), du), 4e-3);
  return good;
}

/// GELU (erf form) with the residual, over x, and copy only; its gradient
/// with the copy, over dy, and copy only: each against double, each copy
/// exactly its fp32 value rounded.
bool geluCase(int64_t n, std::mt19937 &rng) {
  auto x = randomVector(n, rng, -4, 4), r = randomVector(n, rng),
       dy = randomVector(n, rng);
  std::vector<double> y(n), yr(n), dx(n);
  for (int64_t i = 0; i < n; ++i) {
    double z = x[i], cdf = 0.5 * (1 + std::erf(z / std::sqrt(2.0)));
    y[i] = z * cdf;
    yr[i] = y[i] + r[i];
    dx[i] = dy[i] * (cdf + z * std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI));
  }
  std::string name = "gelu n=" + std::to_string(n);
  unsigned blocks = blocksFor(n, 256);
  bool good = true;
  Buffer bx(x), br(r), bdy(dy), by(n), bdx(n);
  Bf16Buffer y16(n), dx16(n);
  gelu<<<blocks, 256>>>(bx.p, br.p, by.p, n, y16.p);
  good &= ok(cudaDeviceSynchronize(), "gelu");
  std::vector<float> got = by.get();
  good &= report(name + " y + residual", relError(got, yr), 2e-6);
  good &= report(name + " y16 = y rounded",
                 relError(y16.get(), roundedToBF16(got)), 0);
  Buffer over(x);
  Bf16Buffer only(n);
  gelu<<<blocks, 256>>>(over.p, nullptr, over.p, n);
  good &= ok(cudaDeviceSynchronize(), "gelu over x");
  got = over.get();
  good &= report(name + " y over x", relError(got, y), 2e-6);
  gelu<<<blocks, 256>>>(bx.p, nullptr, nullptr, n, only.p);
  good &= ok(cudaDeviceSynchronize(), "gelu, copy only");
  good &= report(name + " y16 alone = y rounded",
                 relError(only.get(), roundedToBF16(got)), 0);
  geluGrad<<<blocks, 256>>>(bx.p, bdy.p, bdx.p, n, dx16.p);
  good &= ok(cudaDeviceSynchronize(), "geluGrad");
  got = bdx.get();
  good &= report(name + " dx", relError(got, dx), 2e-6);
  good &= report(name + " dx16 = dx rounded",
                 relError(dx16.get(), roundedToBF16(got)), 0);
  Buffer inPlace(dy);
  Bf16Buffer c1(n);
  geluGrad<<<blocks, 256>>>(bx.p, inPlace.p, inPlace.p, n);
  good &= ok(cudaDeviceSynchronize(), "geluGrad over dy");
  good &= report(name + " dx over dy", relError(inPlace.get(), dx), 2e-6);
  geluGrad<<<blocks, 256>>>(bx.p, bdy.p, nullptr, n, c1.p);
  good &= ok(cudaDeviceSynchronize(), "geluGrad, copy only");
  good &= report(name + " dx16 alone = dx rounded",
                 relError(c1.get(), roundedToBF16(got)), 0);
  return good;
}

/// RoPE (the angles from ropeTable, as the emitter launches it) against
/// double, rows of T positions: x0 alone; x0 and x1 of one width (a
/// thread rotates both), with the copies, and as the planner places a
/// gradient pair (dq's rotation written over dk, dk's elsewhere); x0 and x1
/// of two widths (q and grouped k: blockIdx.y picks the tensor).
bool ropeCase(int64_t rows, int T, int W, int W1, int hd, std::mt19937 &rng) {
  const double theta = 10000;
  auto x0 = randomVector(rows * W, rng), x1 = randomVector(rows * W1, rng);
  auto want = [&](const std::vector<float> &x, int width, double sign) {
    std::vector<double> y(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int c = 0; c < width; c += 2) {
        double angle = sign * (double)(r % T) *
                       std::pow(theta, -2.0 * ((c % hd) / 2) / hd);
        double a = x[r * width + c], b = x[r * width + c + 1];
        y[r * width + c] = a * std::cos(angle) - b * std::sin(angle);
        y[r * width + c + 1] = a * std::sin(angle) + b * std::cos(angle);
      }
    return y;
  };
  std::vector<double> y0 = want(x0, W, 1), y1 = want(x1, W1, 1);
  double *table = nullptr;
  if (!ok(cudaMalloc(&table, sizeof(double) * T * hd), "cudaMalloc"))
    return false;
  ropeTable<<<blocksFor((int64_t)T * (hd / 2), 256), 256>>>(table, T, hd,
                                                            theta);
  std::string name = "rope rows=" + std::to_string(rows) +
                     " W=" + std::to_string(W) + "," + std::to_string(W1);
  unsigned blocks = blocksFor(rows * std::max(W, W1) / 2, 256);
  dim3 grid(blocks, W1 == W ? 1 : 2);
  bool good = true;
  Buffer bx0(x0), bx1(x1), by0(x0.size()), by1(x1.size());
  rope<<<blocks, 256>>>(bx0.p, by0.p, nullptr, nullptr, rows, T, W, hd, theta,
                        nullptr, 1.0, table, T);
  good &= ok(cudaDeviceSynchronize(), "rope alone");
  good &= report(name + " x0 alone", relError(by0.get(), y0), 1e-6);
  Bf16Buffer c0(x0.size()), c1(x1.size());
  cudaMemset(by0.p, 0xff, by0.n * sizeof(float)); // NaN until written again
  rope<<<grid, 256>>>(bx0.p, by0.p, bx1.p, by1.p, rows, T, W, hd, theta,
                      nullptr, 1.0, table, T, c0.p, c1.p, W1);
  good &= ok(cudaDeviceSynchronize(), "rope pair");
  std::vector<float> got0 = by0.get(), got1 = by1.get();
  good &= report(name + " pair y0", relError(got0, y0), 1e-6);
  good &= report(name + " pair y1", relError(got1, y1), 1e-6);
  good &= report(name + " c0 = y0 rounded",
                 relError(c0.get(), roundedToBF16(got0)), 0);
  good &= report(name + " c1 = y1 rounded",
                 relError(c1.get(), roundedToBF16(got1)), 0);
  if (W1 == W) {
    // The gradient pair as planned: (dk → elsewhere), (dq → over dk).
    Buffer dk(x0), dq(x1), out(x0.size());
    rope<<<grid, 256>>>(dk.p, out.p, dq.p, dk.p, rows, T, W, hd, theta, nullptr,
                        -1.0, table, T, nullptr, nullptr, W1);
    good &= ok(cudaDeviceSynchronize(), "rope gradient pair");
    good &= report(name + " grad of dk", relError(out.get(), want(x0, W, -1)),
                   1e-6);
    good &= report(name + " grad of dq over dk",
                   relError(dk.get(), want(x1, W, -1)), 1e-6);
  }
  cudaFree(table);
  return good;
}

/// stlm-100m's shapes: RMSNorm over 64 × 512 rows of 768, SwiGLU 2048
/// wide; each kernel's median µs and the bytes it moves per µs.
void timeKernels() {
  const int N = 64 * 512, D = 768;
  const int64_t n = (int64_t)N * 2048;
  Buffer x((size_t)N * D), g(D), dy((size_t)N * D), y((size_t)N * D), dg(D),
      partial((size_t)264 * D);
  Bf16Buffer y16((size_t)N * D);
  Counter counter;
  for (Buffer *b : {&x, &g, &dy})
    cudaMemset(b->p, 0, b->n * 4);
  auto line = [](const char *what, double us, double bytes) {
    std::printf("%-44s %8.1f us %7.0f GB/s\n", what, us, bytes / us * 1e-3);
  };
  double rowBytes = (double)N * D * 4;
  line("rmsnorm block per row, y and y16",
       medianUs([&] { rmsnorm<<<N, 768>>>(x.p, g.p, y.p, D, 1e-5f, y16.p); }),
       2.5 * rowBytes);
  line("rmsnormRows<6>, y and y16", medianUs([&] {
         rmsnormRows<6><<<N / 8, 256>>>(x.p, g.p, y.p, N, D, 1e-5f, y16.p);
       }),
       2.5 * rowBytes);
  line("rmsnormRows<6>, y16 only", medianUs([&] {
         rmsnormRows<6><<<N / 8, 256>>>(x.p, g.p, nullptr, N, D, 1e-5f, y16.p);
       }),
       1.5 * rowBytes);
  line("rmsnormGrad generic, addend", medianUs([&] {
         launchRmsnormGrad(x.p, g.p, dy.p, y.p, y.p, dg.p, partial.p, counter.p,
                           N, D, 1e-5f, true);
       }),
       4 * rowBytes);
  line("rmsnormGradRows<6>, addend", medianUs([&] {
         launchRmsnormGrad(x.p, g.p, dy.p, y.p, y.p, dg.p, partial.p, counter.p,
                           N, D, 1e-5f, false);
       }),
       4 * rowBytes);
  Buffer a(n), b(n), c(n), d(n), e(n);
  Bf16Buffer a16(n), b16(n);
  for (Buffer *p : {&a, &b, &c})
    cudaMemset(p->p, 0, p->n * 4);
  unsigned blocks =
      blocksFor((n + kSwiGLUPerThread - 1) / kSwiGLUPerThread, 256);
  double elt = (double)n * 4;
  line("swiglu, y and y16",
       medianUs([&] { swiglu<<<blocks, 256>>>(a.p, b.p, d.p, n, a16.p); }),
       3.5 * elt);
  line("swiglu, y16 only",
       medianUs([&] { swiglu<<<blocks, 256>>>(a.p, b.p, nullptr, n, a16.p); }),
       2.5 * elt);
  line("swigluGrad, dg du and copies", medianUs([&] {
         swigluGrad<<<blocks, 256>>>(a.p, b.p, c.p, d.p, e.p, n, a16.p, b16.p);
       }),
       6 * elt);
  line("swigluGrad, copies only", medianUs([&] {
         swigluGrad<<<blocks, 256>>>(a.p, b.p, c.p, nullptr, nullptr, n, a16.p,
                                     b16.p);
       }),
       4 * elt);
  ok(cudaDeviceSynchronize(), "timing");
}

} // namespace

int main(int argc, char **argv) {
  if (!deviceOrSkip())
    return 0;
  if (argc > 1 && std::string(argv[1]) == "--time") {
    timeKernels();
    return 0;
  }
  std::mt19937 rng(7);
  bool good = true;
  // Row kernels at V = 1, 2, 6 and 8 (widths 64, 256, 768, 1000 and 1024:
  // partial float4 columns at 1000), the block-per-row family at widths
  // the row kernels do not take; the gradient over one partial block, over
  // 264 blocks of several rows a warp, and both families at one width.
  good &= rmsnormCase(37, 64, rng);
  good &= rmsnormCase(5000, 256, rng);
  good &= rmsnormCase(1000, 768, rng);
  good &= rmsnormCase(9, 1000, rng);
  good &= rmsnormCase(21, 1024, rng);
  good &= rmsnormCase(13, 771, rng);
  good &= rmsnormCase(300, 2048, rng);
  // Four a thread with and without a scalar tail, and fewer than four.
  good &= swigluCase(3 * 4096 + 2, rng);
  good &= swigluCase(4096, rng);
  good &= swigluCase(3, rng);
  // GELU over a partial block and over a few thousand.
  good &= geluCase(1000, rng);
  good &= geluCase(5 * 4096 + 3, rng);
  // RoPE: char-tiny's heads (one width), stlm-100m's q and grouped k (two
  // widths), a row count that leaves a partial block.
  good &= ropeCase(2 * 64, 64, 128, 128, 32, rng);
  good &= ropeCase(3 * 40, 40, 768, 256, 64, rng);
  good &= ropeCase(7, 7, 64, 64, 64, rng);
  std::printf(good ? "PASS\n" : "FAILED\n");
  return good ? 0 : 1;
}
