// cuda_matmul.cu - what cuBLASLt's algorithms cost at a model's matmul
// shapes: for each shape (column-major D[m, n] = op(A) · op(B), the forms
// codegen/cuda/EmitCuda.cpp issues), compute type (fp32, tf32) and
// workspace (0, 32 MiB), the heuristic's first algorithm and the fastest of
// its first 16, each the median of 200 launches timed with events (after
// 20 warm-up launches), on random data; the legacy cublasSgemm beside.
//
//   nvcc -O2 -std=c++17 -arch=sm_90 bench/cuda_matmul.cu -lcublasLt -lcublas
//       -o cuda-matmul && ./cuda-matmul
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <vector>

#include "cuda_check.h"

struct Shape {
  const char *what;
  bool ta, tb;
  int m, n, k;
};

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main() {
  std::vector<Shape> shapes = {
      {"char-tiny q (x.Wt)", true, false, 128, 768, 128},
      {"char-tiny w1 (x.Wt)", true, false, 512, 768, 128},
      {"char-tiny w2 (x.Wt)", true, false, 128, 768, 512},
      {"char-tiny logits", true, false, 256, 768, 128},
      {"char-tiny dx (dy.W)", false, false, 128, 768, 512},
      {"char-tiny dW (dyT.x)", false, true, 128, 512, 768},
      {"ref-3m w1 (x.Wt)", true, false, 1024, 4096, 256},
      {"ref-3m dW1 (dyT.x)", false, true, 256, 1024, 4096},
      {"ref-3m q (x.Wt)", true, false, 256, 4096, 256},
  };
  cublasLtHandle_t lt;
  CHECK(cublasLtCreate(&lt));
  cublasHandle_t blas;
  CHECK(cublasCreate(&blas));
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  CHECK(cublasSetStream(blas, s));
  size_t big = 64 << 20;
  float *a, *b, *d;
  void *ws;
  CHECK(cudaMalloc(&a, big));
  CHECK(cudaMalloc(&b, big));
  CHECK(cudaMalloc(&d, big));
  CHECK(cudaMalloc(&ws, 32 << 20));
  std::vector<float> host(big / 4);
  for (auto &x : host)
    x = (float)(rand() % 2001 - 1000) / 1000.f;
  CHECK(cudaMemcpy(a, host.data(), big, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(b, host.data(), big, cudaMemcpyHostToDevice));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  auto timeIt = [&](auto launch) {
    for (int i = 0; i < 20; ++i)
      launch();
    std::vector<float> t;
    for (int i = 0; i < 200; ++i) {
      CHECK(cudaEventRecord(e0, s));
      launch();
      CHECK(cudaEventRecord(e1, s));
      CHECK(cudaEventSynchronize(e1));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms * 1000);
    }
    return median(t);
  };
  std::printf("%-22s %-5s %-5s %9s %9s %5s %9s\n", "shape", "type", "ws",
              "top1 us", "best us", "algos", "sgemm us");
  for (const Shape &sh : shapes) {
    for (cublasComputeType_t ct :
         {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32}) {
      for (size_t wsSize : {(size_t)0, (size_t)(32 << 20)}) {
        cublasLtMatmulDesc_t desc;
        CHECK(cublasLtMatmulDescCreate(&desc, ct, CUDA_R_32F));
        cublasOperation_t ta = sh.ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                          tb = sh.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                             &ta, sizeof ta));
        CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                             &tb, sizeof tb));
        int lda = sh.ta ? sh.k : sh.m, ldb = sh.tb ? sh.n : sh.k;
        cublasLtMatrixLayout_t la, lb, lc;
        CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, sh.ta ? sh.k : sh.m,
                                         sh.ta ? sh.m : sh.k, lda));
        CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, sh.tb ? sh.n : sh.k,
                                         sh.tb ? sh.k : sh.n, ldb));
        CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, sh.m, sh.n, sh.m));
        cublasLtMatmulPreference_t pref;
        CHECK(cublasLtMatmulPreferenceCreate(&pref));
        CHECK(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsSize,
            sizeof wsSize));
        cublasLtMatmulHeuristicResult_t res[16];
        int found = 0;
        CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref,
                                             16, res, &found));
        float alpha = 1, beta = 0, top1 = 0, best = 1e30f;
        for (int i = 0; i < found; ++i) {
          float us = timeIt([&] {
            CHECK(cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, d, lc,
                                 d, lc, &res[i].algo, ws, wsSize, s));
          });
          if (i == 0)
            top1 = us;
          best = std::min(best, us);
        }
        float sg = 0;
        if (ct == CUBLAS_COMPUTE_32F && wsSize == 0) {
          CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
          sg = timeIt([&] {
            CHECK(cublasSgemm(blas, ta, tb, sh.m, sh.n, sh.k, &alpha, a, lda, b,
                              ldb, &beta, d, sh.m));
          });
        }
        std::printf("%-22s %-5s %-5s %9.2f %9.2f %5d %9.2f\n", sh.what,
                    ct == CUBLAS_COMPUTE_32F ? "fp32" : "tf32",
                    wsSize ? "32M" : "0", top1, best, found, sg);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(desc);
      }
    }
  }
  // An empty kernel's launch-to-launch time, for scale.
  return 0;
}
