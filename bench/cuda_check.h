//===- cuda_check.h - CHECK for the standalone CUDA benchmarks -*- CUDA -*-===//
//
// CHECK(x): x is a CUDA runtime or cuBLAS(Lt) call; when it fails, the
// benchmark prints where, the call, what the runtime says (for CUDA
// errors) and the status code, and exits with status 1.
//===----------------------------------------------------------------------===//

#ifndef STLM_BENCH_CUDA_CHECK_H
#define STLM_BENCH_CUDA_CHECK_H

#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

inline const char *checkMessage(cudaError_t e) { return cudaGetErrorString(e); }
template <typename Status> const char *checkMessage(Status) { return "failed"; }

#define CHECK(x)                                                               \
  do {                                                                         \
    auto e = (x);                                                              \
    if ((int)e != 0) {                                                         \
      std::fprintf(stderr, "%s:%d: %s: %s (%d)\n", __FILE__, __LINE__, #x,     \
                   checkMessage(e), (int)e);                                   \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

#endif // STLM_BENCH_CUDA_CHECK_H
