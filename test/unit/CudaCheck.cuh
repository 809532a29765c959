//===- CudaCheck.cuh - helpers of the CUDA kernel tests ---------*- CUDA
//-*-===//
//
// Device buffers, error checks, relative errors against doubles and
// launch timing, shared by the plain nvcc-built kernel tests
// (CudaAttentionTest.cu, CudaKernelsTest.cu).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TEST_UNIT_CUDACHECK_CUH
#define STLM_TEST_UNIT_CUDACHECK_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

/// Whether a CUDA device is present; without one, says the test was
/// skipped (the lit tests and scripts read that line).
bool deviceOrSkip() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0)
    return true;
  std::printf("SKIPPED: no CUDA device, nothing checked\n");
  return false;
}

bool ok(cudaError_t e, const char *what) {
  if (e != cudaSuccess)
    std::fprintf(stderr, "FAIL: %s: %s\n", what, cudaGetErrorString(e));
  return e == cudaSuccess;
}

struct Buffer {
  float *p = nullptr;
  size_t n = 0;
  explicit Buffer(size_t count) : n(count) {
    if (!ok(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc"))
      std::exit(1);
    cudaMemset(p, 0xff, n * sizeof(float)); // NaN: unwritten shows
  }
  Buffer(const std::vector<float> &x) : Buffer(x.size()) {
    cudaMemcpy(p, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  ~Buffer() { cudaFree(p); }
  std::vector<float> get() const {
    std::vector<float> x(n);
    cudaMemcpy(x.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost);
    return x;
  }
};

/// A device buffer of n bfloat16 values (NaN until written).
struct Bf16Buffer {
  __nv_bfloat16 *p = nullptr;
  size_t n;
  explicit Bf16Buffer(size_t count) : n(count) {
    if (!ok(cudaMalloc(&p, n * 2), "cudaMalloc"))
      std::exit(1);
    cudaMemset(p, 0xff, n * 2);
  }
  ~Bf16Buffer() { cudaFree(p); }
  std::vector<float> get() const {
    std::vector<__nv_bfloat16> x(n);
    cudaMemcpy(x.data(), p, n * 2, cudaMemcpyDeviceToHost);
    std::vector<float> y(n);
    for (size_t i = 0; i < n; ++i)
      y[i] = __bfloat162float(x[i]);
    return y;
  }
};

/// max |got − want| over max |want| (or over 1 when that is smaller); a
/// NaN counts as infinitely wrong.
double relError(const std::vector<float> &got,
                const std::vector<double> &want) {
  double err = 0, mag = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    double d = std::fabs(got[i] - want[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
    mag = std::max(mag, std::fabs(want[i]));
  }
  return err / std::max(mag, 1e-3);
}

/// Each value rounded to bfloat16 (to nearest even), as the kernels round
/// a bf16 model's copies: a copy must equal its fp32 value's.
std::vector<double> roundedToBF16(const std::vector<float> &v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
  return out;
}

/// Median µs of `launch` over 20 runs after 3 warm-ups.
template <typename Launch> double medianUs(Launch launch) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms;
  for (int i = 0; i < 23; ++i) {
    cudaEventRecord(a);
    launch();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    if (i >= 3)
      ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e3;
}

} // namespace

#endif // STLM_TEST_UNIT_CUDACHECK_CUH
