//===- cuda_graph_floor.cu - what one CUDA graph node costs here ----------===//
//
// The floor under a launch-bound training step: a graph of N kernel nodes
// replayed, timed with events, for kernels that do nothing and for kernels
// of char-tiny's size (48 or 96 blocks over a 768 x 128 activation), each
// node depending on the one before, as a step's nodes do.
//
//   nvcc -O2 -arch=sm_90 bench/cuda_graph_floor.cu -o cuda-graph-floor
//   ./cuda-graph-floor
//
// Prints, per kernel kind and node count, the median replay time and the
// time per node. A step of K nodes cannot take less than K times the
// per-node figure, whatever each kernel does.
//===----------------------------------------------------------------------===//

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <vector>

#include "cuda_check.h"

__global__ void nothing() {}

/// One pass over n floats, y = 0.5 * y + x: the memory traffic of a small
/// elementwise kernel.
__global__ void axpy(const float *x, float *y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += gridDim.x * blockDim.x)
    y[i] = 0.5f * y[i] + x[i];
}

/// Median of `reps` replays of `exec`, in microseconds.
static float timeGraph(cudaGraphExec_t exec, cudaStream_t s, int reps) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i)
    CHECK(cudaGraphLaunch(exec, s));
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(a, s));
    CHECK(cudaGraphLaunch(exec, s));
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000);
  }
  std::sort(t.begin(), t.end());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

int main() {
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int n = 768 * 128;
  float *x, *y;
  CHECK(cudaMalloc(&x, n * sizeof(float)));
  CHECK(cudaMalloc(&y, n * sizeof(float)));
  CHECK(cudaMemset(x, 0, n * sizeof(float)));
  CHECK(cudaMemset(y, 0, n * sizeof(float)));
  std::printf("kernel, nodes, replay us (median of 50), us per node\n");
  for (int kind = 0; kind < 3; ++kind) {
    for (int nodes : {1, 50, 165, 400}) {
      cudaGraph_t g;
      CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < nodes; ++i) {
        if (kind == 0)
          nothing<<<1, 32, 0, s>>>();
        else
          axpy<<<kind == 1 ? 48 : 96, 256, 0, s>>>(x, y, n);
      }
      CHECK(cudaStreamEndCapture(s, &g));
      cudaGraphExec_t exec;
      CHECK(cudaGraphInstantiate(&exec, g, 0));
      float us = timeGraph(exec, s, 50);
      const char *name = kind == 0   ? "empty <<<1,32>>>"
                         : kind == 1 ? "axpy 98k floats <<<48,256>>>"
                                     : "axpy 98k floats <<<96,256>>>";
      std::printf("%s, %d, %.1f, %.2f\n", name, nodes, us, us / nodes);
      CHECK(cudaGraphExecDestroy(exec));
      CHECK(cudaGraphDestroy(g));
    }
  }
  return 0;
}
