//===- cuda_small_gemm.cu - our own fp32 tiles against cuBLASLt -----------===//
//
// A launch-bound step is made of small matmuls (char-tiny: 768 rows, 128 to
// 512 wide). This times, inside a CUDA graph as the step runs them, each
// such shape with cuBLASLt's fastest of its first 8 algorithms and with a
// plain shared-memory-tiled fp32 kernel over several tile sizes and
// split-K factors (split-K summed by the last block of a tile, in a fixed
// order: deterministic), and checks the tiles against cuBLASLt.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/cuda_small_gemm.cu -lcublasLt \
//       -o cuda-small-gemm && ./cuda-small-gemm
//
// Shapes are row-major C[M][N] = A(M, K) · B(K, N): "nt" the forward
// x · Wᵀ, "nn" the input gradient dy · W, "tn" the weight gradient dyᵀ · x.
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <functional>
#include <string>
#include <vector>

#include "cuda_check.h"

/// C[M][N] = A(m, k) · B(k, n): A(m, k) at A[m·lda + k] when aRows (k
/// contiguous) else A[k·lda + m]; B(k, n) at B[n·ldb + k] when bCols else
/// B[k·ldb + n]. Block tile BM × BN, BK deep, each thread TM × TN outputs.
/// blockIdx.z splits K; with more than one split, partial tiles go to
/// `partial` and the tile's last block sums them in split order.
template <int BM, int BN, int BK, int TM, int TN, bool aRows, bool bCols>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
    tiles(int M, int N, int K, const float *__restrict__ A, int lda,
          const float *__restrict__ B, int ldb, float *__restrict__ C,
          float *__restrict__ partial, unsigned *counters) {
  constexpr int threads = (BM / TM) * (BN / TN);
  __shared__ float As[BK][BM + 4], Bs[BK][BN + 4];
  int tid = threadIdx.x, tx = tid % (BN / TN), ty = tid / (BN / TN);
  int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  int splits = gridDim.z, chunk = (K + splits - 1) / splits;
  int kBegin = blockIdx.z * chunk, kEnd = min(K, kBegin + chunk);
  float acc[TM][TN] = {};
  for (int k0 = kBegin; k0 < kEnd; k0 += BK) {
    for (int i = tid; i < BM * BK; i += threads) {
      int m = aRows ? i / BK : i % BM, k = aRows ? i % BK : i / BM;
      bool in = m0 + m < M && k0 + k < kEnd;
      As[k][m] = in ? (aRows ? A[(int64_t)(m0 + m) * lda + k0 + k]
                             : A[(int64_t)(k0 + k) * lda + m0 + m])
                    : 0.f;
    }
    for (int i = tid; i < BN * BK; i += threads) {
      int n = bCols ? i / BK : i % BN, k = bCols ? i % BK : i / BN;
      bool in = n0 + n < N && k0 + k < kEnd;
      Bs[k][n] = in ? (bCols ? B[(int64_t)(n0 + n) * ldb + k0 + k]
                             : B[(int64_t)(k0 + k) * ldb + n0 + n])
                    : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
        a[i] = As[k][ty * TM + i];
#pragma unroll
      for (int j = 0; j < TN; ++j)
        b[j] = Bs[k][tx * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
          acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  if (splits == 1) {
    for (int i = 0; i < TM; ++i)
      for (int j = 0; j < TN; ++j) {
        int m = m0 + ty * TM + i, n = n0 + tx * TN + j;
        if (m < M && n < N)
          C[(int64_t)m * N + n] = acc[i][j];
      }
    return;
  }
  // Split-K: this split's tile, then the last block of the tile sums them.
  int tile = blockIdx.y * gridDim.x + blockIdx.x;
  float *mine = partial + ((int64_t)tile * splits + blockIdx.z) * BM * BN;
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j)
      mine[(ty * TM + i) * BN + tx * TN + j] = acc[i][j];
  __threadfence();
  __shared__ unsigned arrived;
  __syncthreads();
  if (tid == 0)
    arrived = atomicAdd(&counters[tile], 1u);
  __syncthreads();
  if (arrived != (unsigned)splits - 1)
    return;
  __threadfence();
  const float *all = partial + (int64_t)tile * splits * BM * BN;
  for (int e = tid; e < BM * BN; e += threads) {
    int m = m0 + e / BN, n = n0 + e % BN;
    float s = 0;
    for (int z = 0; z < splits; ++z)
      s += __ldcg(all + (int64_t)z * BM * BN + e);
    if (m < M && n < N)
      C[(int64_t)m * N + n] = s;
  }
  if (tid == 0)
    counters[tile] = 0;
}

struct Shape {
  const char *what;
  int M, N, K;
  bool aRows, bCols;
};

struct Buffers {
  float *a, *b, *c, *ref, *partial;
  unsigned *counters;
  cudaStream_t s;
};

/// Median microseconds per launch of `launch`, 20 launches in one graph.
static float inGraph(cudaStream_t s, const std::function<void()> &launch) {
  launch();
  CHECK(cudaStreamSynchronize(s));
  cudaGraph_t g;
  cudaGraphExec_t x;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < 20; ++i)
    launch();
  CHECK(cudaStreamEndCapture(s, &g));
  CHECK(cudaGraphInstantiate(&x, g, 0));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int r = 0; r < 25; ++r) {
    CHECK(cudaEventRecord(e0, s));
    CHECK(cudaGraphLaunch(x, s));
    CHECK(cudaEventRecord(e1, s));
    CHECK(cudaEventSynchronize(e1));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (r >= 5)
      t.push_back(ms * 1000 / 20);
  }
  std::sort(t.begin(), t.end());
  CHECK(cudaGraphExecDestroy(x));
  CHECK(cudaGraphDestroy(g));
  return t[t.size() / 2];
}

template <int BM, int BN, int BK, int TM, int TN>
static void tryTiles(const Shape &sh, Buffers &b, float &best,
                     std::string &bestName) {
  for (int split : {1, 2, 3, 4, 6, 8, 12}) {
    if (sh.K / split < BK || sh.K % split)
      continue;
    dim3 grid((sh.N + BN - 1) / BN, (sh.M + BM - 1) / BM, split);
    if (split > 1 && grid.x * grid.y * split > 1024)
      continue;
    int lda = sh.aRows ? sh.K : sh.M, ldb = sh.bCols ? sh.K : sh.N;
    auto launch = [&] {
      constexpr int T = (BM / TM) * (BN / TN);
      if (sh.aRows && sh.bCols)
        tiles<BM, BN, BK, TM, TN, true, true><<<grid, T, 0, b.s>>>(
            sh.M, sh.N, sh.K, b.a, lda, b.b, ldb, b.c, b.partial, b.counters);
      else if (sh.aRows)
        tiles<BM, BN, BK, TM, TN, true, false><<<grid, T, 0, b.s>>>(
            sh.M, sh.N, sh.K, b.a, lda, b.b, ldb, b.c, b.partial, b.counters);
      else if (sh.bCols)
        tiles<BM, BN, BK, TM, TN, false, true><<<grid, T, 0, b.s>>>(
            sh.M, sh.N, sh.K, b.a, lda, b.b, ldb, b.c, b.partial, b.counters);
      else
        tiles<BM, BN, BK, TM, TN, false, false><<<grid, T, 0, b.s>>>(
            sh.M, sh.N, sh.K, b.a, lda, b.b, ldb, b.c, b.partial, b.counters);
    };
    CHECK(cudaMemset(b.c, 0, (size_t)sh.M * sh.N * 4));
    launch();
    CHECK(cudaStreamSynchronize(b.s));
    std::vector<float> got((size_t)sh.M * sh.N), want(got.size());
    CHECK(cudaMemcpy(got.data(), b.c, got.size() * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(want.data(), b.ref, got.size() * 4,
                     cudaMemcpyDeviceToHost));
    double err = 0, mag = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      err = std::max(err, (double)std::fabs(got[i] - want[i]));
      mag = std::max(mag, (double)std::fabs(want[i]));
    }
    float us = inGraph(b.s, launch);
    char name[64];
    std::snprintf(name, sizeof name, "%dx%dx%d/%dx%d split %d", BM, BN, BK,
                  TM, TN, split);
    if (err > 1e-4 * mag) {
      std::printf("    %-24s WRONG (%.3g of %.3g)\n", name, err, mag);
      continue;
    }
    if (us < best) {
      best = us;
      bestName = name;
    }
  }
}

int main() {
  std::vector<Shape> shapes = {
      {"char-tiny q  nt", 768, 128, 128, true, true},
      {"char-tiny w1 nt", 768, 512, 128, true, true},
      {"char-tiny w2 nt", 768, 128, 512, true, true},
      {"char-tiny head nt", 768, 256, 128, true, true},
      {"char-tiny dx q nn", 768, 128, 128, true, false},
      {"char-tiny dx w1 nn", 768, 128, 512, true, false},
      {"char-tiny dx w2 nn", 768, 512, 128, true, false},
      {"char-tiny dW q tn", 128, 128, 768, false, false},
      {"char-tiny dW w1 tn", 512, 128, 768, false, false},
      {"char-tiny dW w2 tn", 128, 512, 768, false, false},
      {"char-tiny dW head tn", 256, 128, 768, false, false},
      {"ref-3m q nt", 4096, 256, 256, true, true},
      {"ref-3m w1 nt", 4096, 1024, 256, true, true},
      {"ref-3m dW1 tn", 1024, 256, 4096, false, false},
  };
  cublasLtHandle_t lt;
  CHECK(cublasLtCreate(&lt));
  Buffers b;
  CHECK(cudaStreamCreate(&b.s));
  size_t big = 32 << 20;
  CHECK(cudaMalloc(&b.a, big));
  CHECK(cudaMalloc(&b.b, big));
  CHECK(cudaMalloc(&b.c, big));
  CHECK(cudaMalloc(&b.ref, big));
  CHECK(cudaMalloc(&b.partial, big));
  CHECK(cudaMalloc(&b.counters, 1 << 16));
  CHECK(cudaMemset(b.counters, 0, 1 << 16));
  void *ws;
  size_t wsSize = 32 << 20;
  CHECK(cudaMalloc(&ws, wsSize));
  std::vector<float> host(big / 4);
  for (auto &x : host)
    x = (float)(rand() % 2001 - 1000) / 1000.f;
  CHECK(cudaMemcpy(b.a, host.data(), big, cudaMemcpyHostToDevice));
  for (auto &x : host)
    x = (float)(rand() % 2001 - 1000) / 1000.f;
  CHECK(cudaMemcpy(b.b, host.data(), big, cudaMemcpyHostToDevice));
  std::printf("%-22s %10s %10s  %s\n", "shape (M N K)", "cuBLASLt", "tiles",
              "best tiles");
  for (const Shape &sh : shapes) {
    // cuBLASLt, column-major: D[N][M] = op(B) · op(A).
    cublasLtMatmulDesc_t desc;
    CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = sh.bCols ? CUBLAS_OP_T : CUBLAS_OP_N,
                      tb = sh.aRows ? CUBLAS_OP_N : CUBLAS_OP_T;
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                         sizeof ta));
    CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                         sizeof tb));
    int m = sh.N, n = sh.M, k = sh.K;
    int lda = sh.bCols ? sh.K : sh.N, ldb = sh.aRows ? sh.K : sh.M;
    cublasLtMatrixLayout_t la, lb, lc;
    CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, ta ? k : m, ta ? m : k,
                                     lda));
    CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, tb ? n : k, tb ? k : n,
                                     ldb));
    CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
    cublasLtMatmulPreference_t pref;
    CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsSize,
        sizeof wsSize));
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 8, res,
                                         &found));
    float alpha = 1, beta = 0, lt_best = 1e30f;
    for (int i = 0; i < found; ++i) {
      float us = inGraph(b.s, [&] {
        CHECK(cublasLtMatmul(lt, desc, &alpha, b.b, la, b.a, lb, &beta, b.ref,
                             lc, b.ref, lc, &res[i].algo, ws, wsSize, b.s));
      });
      lt_best = std::min(lt_best, us);
    }
    CHECK(cublasLtMatmul(lt, desc, &alpha, b.b, la, b.a, lb, &beta, b.ref, lc,
                         b.ref, lc, &res[0].algo, ws, wsSize, b.s));
    CHECK(cudaStreamSynchronize(b.s));
    float best = 1e30f;
    std::string bestName;
    tryTiles<64, 64, 16, 4, 4>(sh, b, best, bestName);
    tryTiles<32, 64, 16, 4, 4>(sh, b, best, bestName);
    tryTiles<64, 32, 16, 4, 4>(sh, b, best, bestName);
    tryTiles<32, 32, 16, 2, 2>(sh, b, best, bestName);
    tryTiles<32, 32, 16, 4, 2>(sh, b, best, bestName);
    tryTiles<128, 64, 8, 8, 4>(sh, b, best, bestName);
    std::printf("%-22s %10.2f %10.2f  %s (%d %d %d)\n", sh.what, lt_best, best,
                bestName.c_str(), sh.M, sh.N, sh.K);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(desc);
  }
  return 0;
}
