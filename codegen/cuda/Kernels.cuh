//===- Kernels.cuh - the CUDA kernels and context of a compiled model -*- CUDA -*-===//
//
// Included by the CUDA source stlm-compile --target=cuda writes for a model
// (codegen/cuda/EmitCuda.cpp), which instantiates these templates with the
// model's shapes and calls them in the order of its planned functions.
// stlm-compile carries this file inside itself and writes it beside the
// generated source, so an installed compiler needs no source tree.
//
// Layout: every tensor is dense row-major fp32 (int32 for ids), at a fixed
// byte offset in the weights blob (W: parameters, optimizer state, KV
// caches), the arena (A: activations and gradients, stlm-plan-memory's
// offsets), or the context's scalar block (S: rank-0 values the driver
// computes: loss, lr, step, norm, constants). Nothing moves between host and
// device inside a step except the batch (in) and the results (out), so a
// whole entry point is captured once as a CUDA graph and replayed.
//
// Dimension letters: N rows (batch × time), D width, V vocab, B batch,
// T queries, S keys, H query heads, K kv heads, hd head width.
//
// Matmuls go through cuBLASLt with fp32 accumulation: fp32 operands for
// `precision: fp32`, operands rounded to bfloat16 for `precision: bf16`
// (tensor cores). Everything else is a kernel here, each with a plain
// reference twin in reference/Kernels.cpp; the GPU test
// (test/unit/CudaVsReferenceTest.cpp) compares whole models against it.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_CUDA_KERNELS_CUH
#define STLM_CODEGEN_CUDA_KERNELS_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace stlm_cuda {

constexpr int kWarp = 32;

__device__ __forceinline__ float warpSum(float x) {
  for (int o = kWarp / 2; o > 0; o /= 2)
    x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warpMax(float x) {
  for (int o = kWarp / 2; o > 0; o /= 2)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
/// Sum over a block of `blockDim.x` (a multiple of 32, at most 1024)
/// threads; every thread gets it. `shared` holds 32 floats.
__device__ __forceinline__ float blockSum(float x, float *shared) {
  int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  x = warpSum(x);
  __syncthreads();
  if (lane == 0)
    shared[warp] = x;
  __syncthreads();
  int warps = blockDim.x / kWarp;
  x = lane < warps ? shared[lane] : 0.f;
  return warpSum(x);
}

/// Whether this block is the last of its launch to get here; every thread
/// of a block gets the same answer. Each block calls it once, after its
/// part of a reduction is written: the last one then reads every block's
/// part (with __ldcg, past the L1) and sums them in block order, so the
/// result does not depend on which blocks ran first. `counter` is a zeroed
/// slot of the scalar block, zero again when the launch ends.
__device__ __forceinline__ bool lastBlock(unsigned *counter) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned blocks = gridDim.x * gridDim.y * gridDim.z;
    last = atomicAdd(counter, 1u) == blocks - 1;
    if (last)
      *counter = 0;
  }
  __syncthreads();
  if (last)
    __threadfence();
  return last;
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

/// y[N, D] = table[ids[n], :]; ids are clamped into [0, V) for memory
/// safety (the runtime rejects bad ids before a step).
__global__ void embed(const float *__restrict__ table,
                      const int32_t *__restrict__ ids, float *__restrict__ y,
                      int64_t N, int V, int D) {
  int64_t n = blockIdx.x;
  int id = min(max(ids[n], 0), V - 1);
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    y[n * D + d] = table[(int64_t)id * D + d];
}

/// dtable[V, D] = Σ_n [ids[n] = v] dy[n, :] (+ addend[V, D], a tied
/// head's gradient, when given): one block per vocab row
/// (deterministic, no atomics). The block tests blockDim.x ids at a time,
/// lists the positions that hold its row in shared memory (in order), and
/// sums those rows of dy, so the sum runs over n in ascending order. D is
/// at most 8 · blockDim.x; blockDim.x is a multiple of 32, at most 1024.
constexpr int kEmbedGradPer = 8;
__global__ void embedGrad(const int32_t *__restrict__ ids,
                          const float *__restrict__ dy,
                          const float *__restrict__ addend,
                          float *__restrict__ dtable, int64_t N, int V, int D) {
  __shared__ int hits[1024];
  __shared__ int counts[32];
  int v = blockIdx.x, lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  int warps = blockDim.x / kWarp;
  float acc[kEmbedGradPer];
#pragma unroll
  for (int e = 0; e < kEmbedGradPer; ++e)
    acc[e] = 0;
  for (int64_t n0 = 0; n0 < N; n0 += blockDim.x) {
    int64_t n = n0 + threadIdx.x;
    bool hit = n < N && min(max(ids[n], 0), V - 1) == v;
    unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0)
      counts[warp] = __popc(mask);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      before += w < warp ? counts[w] : 0;
      total += counts[w];
    }
    if (hit)
      hits[before + __popc(mask & ((1u << lane) - 1))] = (int)(n - n0);
    __syncthreads();
    for (int h = 0; h < total; ++h) {
      const float *row = dy + (n0 + hits[h]) * D;
#pragma unroll
      for (int e = 0; e < kEmbedGradPer; ++e) {
        int d = threadIdx.x + e * blockDim.x;
        if (d < D)
          acc[e] += row[d];
      }
    }
    __syncthreads(); // hits and counts are refilled next
  }
#pragma unroll
  for (int e = 0; e < kEmbedGradPer; ++e) {
    int d = threadIdx.x + e * blockDim.x;
    if (d < D)
      dtable[(int64_t)v * D + d] =
          addend ? addend[(int64_t)v * D + d] + acc[e] : acc[e];
  }
}

//===----------------------------------------------------------------------===//
// RMSNorm: y = x · (mean(x²) + eps)^(-1/2) · g
//===----------------------------------------------------------------------===//

/// y = x / rms(x) · g, a block per row (any D); y16 (where given) gets y
/// rounded to bfloat16, the operand of the matmuls that read y
/// (`precision: bf16`).
__global__ void rmsnorm(const float *__restrict__ x,
                        const float *__restrict__ g, float *__restrict__ y,
                        int D, float eps,
                        __nv_bfloat16 *__restrict__ y16 = nullptr) {
  __shared__ float shared[32];
  int64_t r = blockIdx.x;
  const float *xr = x + r * D;
  float ss = 0;
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    ss += xr[d] * xr[d];
  float inv = rsqrtf(blockSum(ss, shared) / D + eps);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float v = xr[d] * inv * g[d];
    y[r * D + d] = v;
    if (y16)
      y16[r * D + d] = __float2bfloat16_rn(v);
  }
}

/// Rows of D = 4·k ≤ 4·32·kRowVecMax floats (16-byte aligned, as every
/// arena and blob offset is) are held in registers, V float4 a lane: the
/// kernels below read each row once and need no block barrier per row.
constexpr int kRowVecMax = 8;

__device__ __forceinline__ float4 load4(const float *p) {
  return *reinterpret_cast<const float4 *>(p);
}
__device__ __forceinline__ void store4(float *p, float4 v) {
  *reinterpret_cast<float4 *>(p) = v;
}
/// Four floats rounded to bfloat16, stored as one 8-byte word.
__device__ __forceinline__ void store4(__nv_bfloat16 *p, float4 v) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y),
                 hi = __floats2bfloat162_rn(v.z, v.w);
  *reinterpret_cast<uint2 *>(p) = make_uint2(
      *reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
}

/// rmsnorm for D % 4 == 0, D ≤ 128·V: a warp per row, `blockDim.x / 32`
/// rows a block, lane l holding float4s l, l + 32, … of its row. y may be
/// null when only the bfloat16 copy y16 is read (every reader a bf16
/// matmul).
template <int V>
__global__ void rmsnormRows(const float *__restrict__ x,
                            const float *__restrict__ g, float *__restrict__ y,
                            int64_t N, int D, float eps,
                            __nv_bfloat16 *__restrict__ y16) {
  int lane = threadIdx.x % kWarp;
  int64_t r = (int64_t)blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (r >= N)
    return;
  const float *xr = x + r * D;
  float4 v[V];
  float ss = 0;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    int d = 4 * (lane + kWarp * i);
    v[i] = d < D ? load4(xr + d) : make_float4(0, 0, 0, 0);
    ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
  }
  float inv = rsqrtf(warpSum(ss) / D + eps);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    int d = 4 * (lane + kWarp * i);
    if (d >= D)
      break;
    float4 w = load4(g + d);
    float4 o = make_float4(v[i].x * inv * w.x, v[i].y * inv * w.y,
                           v[i].z * inv * w.z, v[i].w * inv * w.w);
    if (y)
      store4(y + r * D + d, o);
    if (y16)
      store4(y16 + r * D + d, o);
  }
}

/// dx = s·g·dy − s³/D · x · Σ_e dy_e g_e x_e (+ addend, the residual
/// stream's other gradient, when given), and dx16 (where given) its
/// bfloat16 copy for the matmuls that read dx; dg = Σ_rows dy·x·s. A block of
/// `warps` warps takes `rowsPerBlock` rows, a row per warp at a time (its
/// sums by shuffles, no block barrier); each warp adds its rows' shares of
/// dg into its own row of shared memory, the block sums those in warp
/// order into partial[block, D], and the launch's last block sums the
/// blocks' in block order: deterministic, and no zeroing launch before.
/// dx may be x or dy (in place): a warp reads its row whole for the sums
/// before it writes any of it, then element by element. Any D up to
/// kRmsNormGradShared / 4; rmsnormGradRows below is the fast case.
__global__ void rmsnormGrad(const float *x, const float *__restrict__ g,
                            const float *dy, const float *addend, float *dx,
                            float *__restrict__ dg, float *__restrict__ partial,
                            unsigned *counter, int64_t N, int D, float eps,
                            int rowsPerBlock,
                            __nv_bfloat16 *__restrict__ dx16 = nullptr) {
  extern __shared__ float dgWarp[]; // [warps][D]
  int warps = blockDim.x / kWarp, warp = threadIdx.x / kWarp,
      lane = threadIdx.x % kWarp;
  float *mine = dgWarp + (int64_t)warp * D;
  for (int d = lane; d < D; d += kWarp)
    mine[d] = 0;
  int64_t first = (int64_t)blockIdx.x * rowsPerBlock,
          end = min(N, first + rowsPerBlock);
  for (int64_t r = first + warp; r < end; r += warps) {
    const float *xr = x + r * D, *dyr = dy + r * D;
    float ss = 0, dot = 0;
    for (int d = lane; d < D; d += kWarp) {
      float xv = xr[d];
      ss += xv * xv;
      dot += dyr[d] * g[d] * xv;
    }
    ss = warpSum(ss);
    dot = warpSum(dot);
    float s = rsqrtf(ss / D + eps);
    float c = s * s * s / D * dot;
    for (int d = lane; d < D; d += kWarp) {
      float xv = xr[d], dv = dyr[d];
      float v = s * g[d] * dv - c * xv;
      mine[d] += dv * xv * s;
      if (addend)
        v += addend[r * D + d];
      dx[r * D + d] = v;
      if (dx16)
        dx16[r * D + d] = __float2bfloat16_rn(v);
    }
  }
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0;
    for (int w = 0; w < warps; ++w)
      sum += dgWarp[(int64_t)w * D + d];
    partial[(int64_t)blockIdx.x * D + d] = sum;
  }
  if (!lastBlock(counter))
    return;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0;
    for (unsigned b = 0; b < gridDim.x; ++b)
      sum += __ldcg(partial + (int64_t)b * D + d);
    dg[d] = sum;
  }
}

/// Adds each warp's V float4s per lane (`acc`, a row of D split as in
/// rmsnormRows) into `row` (D floats of shared memory, zeroed here) in warp
/// order, so the sum does not depend on timing; every thread then sees the
/// block's sum in `row`.
template <int V>
__device__ __forceinline__ void warpsInOrder(const float4 (&acc)[V], float *row,
                                             int D) {
  int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    row[d] = 0;
  __syncthreads();
  for (int w = 0; w < (int)blockDim.x / kWarp; ++w) {
    if (warp == w) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        int d = 4 * (lane + kWarp * i);
        if (d < D) {
          float4 s = load4(row + d);
          store4(row + d, make_float4(s.x + acc[i].x, s.y + acc[i].y,
                                      s.z + acc[i].z, s.w + acc[i].w));
        }
      }
    }
    __syncthreads();
  }
}

/// rmsnormGrad for D % 4 == 0, D ≤ 128·V: a warp per row at a time (rows
/// warp, warp + warps·blocks, …), its row of x and dy and its share of dg
/// in registers, so x and dy are read once; the block's warps add their
/// shares in warp order, and the launch's last block sums the blocks'
/// partial rows in block order (each of its warps a contiguous range of
/// blocks, then the warps in order): deterministic. dx may be x or dy.
template <int V>
__global__ void __launch_bounds__(256)
    rmsnormGradRows(const float *x, const float *__restrict__ g,
                    const float *dy, const float *addend, float *dx,
                    float *__restrict__ dg, float *__restrict__ partial,
                    unsigned *counter, int64_t N, int D, float eps,
                    __nv_bfloat16 *__restrict__ dx16 = nullptr) {
  extern __shared__ float4 rowShared[]; // D floats, 16-byte aligned
  float *row = reinterpret_cast<float *>(rowShared);
  int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp,
      warps = blockDim.x / kWarp;
  float4 gv[V], acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    int d = 4 * (lane + kWarp * i);
    gv[i] = d < D ? load4(g + d) : make_float4(0, 0, 0, 0);
    acc[i] = make_float4(0, 0, 0, 0);
  }
  for (int64_t r = (int64_t)blockIdx.x * warps + warp; r < N;
       r += (int64_t)gridDim.x * warps) {
    float4 xv[V], dv[V];
    float ss = 0, dot = 0;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      int d = 4 * (lane + kWarp * i);
      xv[i] = d < D ? load4(x + r * D + d) : make_float4(0, 0, 0, 0);
      dv[i] = d < D ? load4(dy + r * D + d) : make_float4(0, 0, 0, 0);
      ss += xv[i].x * xv[i].x + xv[i].y * xv[i].y + xv[i].z * xv[i].z +
            xv[i].w * xv[i].w;
      dot += dv[i].x * gv[i].x * xv[i].x + dv[i].y * gv[i].y * xv[i].y +
             dv[i].z * gv[i].z * xv[i].z + dv[i].w * gv[i].w * xv[i].w;
    }
    float s = rsqrtf(warpSum(ss) / D + eps);
    float c = s * s * s / D * warpSum(dot);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      int d = 4 * (lane + kWarp * i);
      if (d >= D)
        break;
      float4 o = make_float4(s * gv[i].x * dv[i].x - c * xv[i].x,
                             s * gv[i].y * dv[i].y - c * xv[i].y,
                             s * gv[i].z * dv[i].z - c * xv[i].z,
                             s * gv[i].w * dv[i].w - c * xv[i].w);
      acc[i].x += dv[i].x * xv[i].x * s;
      acc[i].y += dv[i].y * xv[i].y * s;
      acc[i].z += dv[i].z * xv[i].z * s;
      acc[i].w += dv[i].w * xv[i].w * s;
      if (addend) {
        float4 a = load4(addend + r * D + d);
        o = make_float4(a.x + o.x, a.y + o.y, a.z + o.z, a.w + o.w);
      }
      store4(dx + r * D + d, o);
      if (dx16)
        store4(dx16 + r * D + d, o);
    }
  }
  warpsInOrder(acc, row, D);
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    partial[(int64_t)blockIdx.x * D + d] = row[d];
  if (!lastBlock(counter))
    return;
  // Warp w sums blocks [w·per, (w+1)·per) in order.
  unsigned per = (gridDim.x + warps - 1) / warps, b0 = warp * per,
           b1 = min(gridDim.x, b0 + per);
#pragma unroll
  for (int i = 0; i < V; ++i)
    acc[i] = make_float4(0, 0, 0, 0);
#pragma unroll 4 // several blocks' loads in flight
  for (unsigned b = b0; b < b1; ++b) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      int d = 4 * (lane + kWarp * i);
      if (d < D) {
        float4 p = __ldcg(
            reinterpret_cast<const float4 *>(partial + (int64_t)b * D + d));
        acc[i].x += p.x;
        acc[i].y += p.y;
        acc[i].z += p.z;
        acc[i].w += p.w;
      }
    }
  }
  warpsInOrder(acc, row, D);
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    dg[d] = row[d];
}

//===----------------------------------------------------------------------===//
// RoPE: each pair (2i, 2i+1) of every head rotated by sign · p · θ^(−2i/hd),
// p = t + offset (offset: a device scalar, or none). Angles in double, as
// the reference. Up to two tensors per launch (q and k; their gradients),
// x0 of width W and x1 (when given) of width W1:
//  - of one width (W1 == W, grid.y 1), a thread rotates the same pair of
//    both with one angle, reading both before writing either, so an output
//    may be exactly the other tensor's input (the planner reuses dk's
//    space for dq's rotation);
//  - of two widths (grid.y 2: q and grouped k), blockIdx.y picks (x0, y0)
//    or (x1, y1), and no output may share bytes with another tensor.
// c0 and c1 (where given) get y0's and y1's bfloat16 copies for a bf16
// model's matmuls (the gradients' linear_grad), and y0 or y1 is null when
// only its copy is read.
//===----------------------------------------------------------------------===//

/// The pair (a, b) rotated by the angle whose cosine and sine are co and
/// s, in double, rounded to float: RoPE's one rotation (the rope kernel,
/// and the attention kernels that fold it in).
__device__ __forceinline__ float2 rotatePair(double a, double b, double co,
                                             double s) {
  return make_float2((float)(a * co - b * s), (float)(a * s + b * co));
}

/// The pair (a, b) at `at` rotated by the angle whose cosine and sine are
/// co and s: y and y16 written where given.
__device__ __forceinline__ void ropeStore(float *y, __nv_bfloat16 *y16,
                                          int64_t at, double co, double s,
                                          double a, double b) {
  float2 r = rotatePair(a, b, co, s);
  if (y) {
    y[at] = r.x;
    y[at + 1] = r.y;
  }
  if (y16)
    *reinterpret_cast<__nv_bfloat162 *>(y16 + at) =
        __floats2bfloat162_rn(r.x, r.y);
}

__global__ void rope(const float *x0, float *y0, const float *x1, float *y1,
                     int64_t rows, int T, int W, int hd, double theta,
                     const int32_t *offset, double sign,
                     const double *__restrict__ table = nullptr,
                     int positions = 0, __nv_bfloat16 *c0 = nullptr,
                     __nv_bfloat16 *c1 = nullptr, int W1 = 0) {
  bool second = blockIdx.y == 1;
  int width = second ? W1 : W;
  int64_t pairs = rows * (width / 2);
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pairs)
    return;
  int64_t row = i / (width / 2);
  int c = (int)(i % (width / 2)) * 2; // column of the pair's first element
  int k = (c % hd) / 2;
  int64_t pos = row % T + (offset ? *offset : 0);
  double s, co;
  if (table && pos >= 0 && pos < positions) {
    // The same double angle's sine and cosine, made once (ropeTable);
    // sign · p · f is ±(p · f) exactly, and the sine is odd.
    const double *e = table + 2 * (pos * (hd / 2) + k);
    co = e[0];
    s = sign * e[1];
  } else {
    double angle = sign * (double)pos * pow(theta, -2.0 * k / hd);
    sincos(angle, &s, &co);
  }
  int64_t at = row * width + c;
  if (second) {
    ropeStore(y1, c1, at, co, s, x1[at], x1[at + 1]);
    return;
  }
  double a = x0[at], b = x0[at + 1];
  if (x1 && gridDim.y == 1) {
    // Both tensors, one width: every read before any write.
    double a1 = x1[at], b1 = x1[at + 1];
    ropeStore(y0, c0, at, co, s, a, b);
    ropeStore(y1, c1, at, co, s, a1, b1);
    return;
  }
  ropeStore(y0, c0, at, co, s, a, b);
}

/// table[p, k] = (cos, sin) of p · θ^(−2k/hd) in double, for positions
/// p < P and pairs k < hd / 2: rope's angles, computed once per context.
__global__ void ropeTable(double *__restrict__ table, int P, int hd,
                          double theta) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (int64_t)P * (hd / 2))
    return;
  int64_t p = i / (hd / 2);
  int k = (int)(i % (hd / 2));
  double s, co;
  sincos((double)p * pow(theta, -2.0 * k / hd), &s, &co);
  table[2 * i] = co;
  table[2 * i + 1] = s;
}

//===----------------------------------------------------------------------===//
// Attention (flash-style: no score matrix in memory). q [B, T, H·hd],
// k and v [B, S, K·hd], y [B, T, H·hd]; query t sees keys u ≤ t + offset
// when causal (offset = S − T unless given). A query that sees no key gets
// 0. Blocks of 4 warps; a block takes attentionRows(hd) queries (rows per
// warp in turn) and stages them and tiles of 32 keys in shared memory
// (rows padded by one float: lanes reading one column each of 32 rows hit
// 32 banks); one key per lane for the scores, one head dimension per lane
// for the sums, an online softmax between tiles. A training step's
// forward pass also leaves each query's log-sum-exp in `lse`, and the
// backward takes delta = dy · y from y (attentionDelta); where y was
// overwritten in between, the same pass runs again (y null) and leaves lse
// and delta instead of y. Then attentionGradQ (blocks of queries over key
// tiles) and attentionGradKV (blocks of keys over query tiles of every
// head sharing them) recompute the probabilities, with no atomics.
//===----------------------------------------------------------------------===//

constexpr int kAttnWarps = 4;
constexpr int kTile = 32; // keys (or queries) per staged tile

/// Rows (queries, or keys for attentionGradKV) per block: shared memory
/// stays under the 48 KiB of a static allocation for every head width.
__host__ __device__ constexpr int attentionRows(int hd, bool backward) {
  return backward ? (hd > 64 ? 8 : 32) : (hd > 64 ? 16 : 32);
}

/// The keys query t sees are [0, visibleKeys(t)): none for a row past the
/// T queries, keys up to t + offset when causal, else all S. Of a block's
/// last query (t0 + rows - 1, or T - 1): the keys the block must visit.
__device__ __forceinline__ int visibleKeys(int t, int T, int S, bool causal,
                                           int offset) {
  return t >= T ? 0 : causal ? min(S, t + offset + 1) : S;
}

/// Copies rows [first, first + n) of a [rows, stride] tensor's columns
/// [col, col + HD) into tile[n][HD + 1], zero past `limit`; all threads.
template <int HD>
__device__ __forceinline__ void stage(float (*tile)[HD + 1], int n,
                                      const float *__restrict__ src,
                                      int64_t first, int limit,
                                      int64_t stride, int64_t col,
                                      float scale = 1.f) {
  for (int idx = threadIdx.x; idx < n * HD; idx += blockDim.x) {
    int r = idx / HD, d = idx % HD;
    tile[r][d] = first + r < limit
                     ? src[(first + r) * stride + col + d] * scale
                     : 0.f;
  }
}

template <int HD>
__global__ void __launch_bounds__(128)
    attention(const float *__restrict__ q, const float *__restrict__ k,
              const float *__restrict__ v, float *__restrict__ y, int T, int S,
              int H, int K, bool causal, const int32_t *offsetPtr,
              float *__restrict__ lse, const float *__restrict__ dy = nullptr,
              float *__restrict__ delta = nullptr,
              __nv_bfloat16 *__restrict__ y16 = nullptr) {
  static_assert(HD % 2 == 0 && HD <= 128, "head width");
  constexpr int PER = (HD + kWarp - 1) / kWarp; // dims per lane
  constexpr int QT = attentionRows(HD, false), QW = QT / kAttnWarps;
  __shared__ float ks[kTile][HD + 1], vs[kTile][HD + 1], qs[QT][HD + 1];
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int t0 = blockIdx.x * QT;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  // q rows of this block, pre-scaled: row t of [B·T, H·HD] at column h·HD.
  stage<HD>(qs, QT, q + (int64_t)b * T * H * HD, t0, T, (int64_t)H * HD,
            (int64_t)h * HD, scale);
  float m[QW], l[QW], acc[QW][PER];
  for (int i = 0; i < QW; ++i) {
    m[i] = -INFINITY;
    l[i] = 0;
    for (int e = 0; e < PER; ++e)
      acc[i][e] = 0;
  }
  int horizon = visibleKeys(min(T - 1, t0 + QT - 1), T, S, causal, offset);
  for (int u0 = 0; u0 < horizon; u0 += kTile) {
    __syncthreads();
    int64_t kvBase = (int64_t)b * S * K * HD;
    stage<HD>(ks, kTile, k + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
    stage<HD>(vs, kTile, v + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < QW; ++i) {
      int r = warp * QW + i, t = t0 + r;
      int mine = visibleKeys(t, T, S, causal, offset);
      if (u0 >= mine) // warp-uniform
        continue;
      int u = u0 + lane;
      float s = -INFINITY;
      if (u < mine) {
        s = 0;
#pragma unroll 16
        for (int d = 0; d < HD; ++d)
          s += qs[r][d] * ks[lane][d];
      }
      float mNew = fmaxf(m[i], warpMax(s));
      float p = u < mine ? __expf(s - mNew) : 0.f;
      float corr = m[i] == -INFINITY ? 0.f : __expf(m[i] - mNew);
      l[i] = l[i] * corr + warpSum(p);
      int count = min(kTile, mine - u0);
      for (int e = 0; e < PER; ++e)
        acc[i][e] *= corr;
      for (int uu = 0; uu < count; ++uu) {
        float pu = __shfl_sync(0xffffffffu, p, uu);
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          int d = lane + e * kWarp;
          if (d < HD)
            acc[i][e] += pu * vs[uu][d];
        }
      }
      m[i] = mNew;
    }
  }
#pragma unroll
  for (int i = 0; i < QW; ++i) {
    int t = t0 + warp * QW + i;
    if (t >= T)
      break;
    float inv = l[i] > 0 ? 1.f / l[i] : 0.f;
    int64_t row = (((int64_t)b * T + t) * H + h) * HD;
    float dot = 0;
    for (int e = 0; e < PER; ++e) {
      int d = lane + e * kWarp;
      if (d < HD) {
        float o = acc[i][e] * inv;
        if (y)
          y[row + d] = o;
        if (y16)
          y16[row + d] = __float2bfloat16_rn(o);
        if (delta)
          dot += dy[row + d] * o;
      }
    }
    if (delta)
      dot = warpSum(dot);
    if (lane == 0) {
      if (lse)
        lse[((int64_t)b * H + h) * T + t] =
            l[i] > 0 ? m[i] + logf(l[i]) : -INFINITY;
      if (delta)
        delta[((int64_t)b * H + h) * T + t] = dot;
    }
  }
}

/// Lanes a row of attentionDelta for heads `hd` wide: a float4 each, a
/// power of two, at most a warp (EmitCuda.cpp's deltaLanes mirrors it).
constexpr int attentionDeltaLanes(int hd) {
  int lanes = 1;
  while (lanes < kWarp && 4 * lanes < hd)
    lanes *= 2;
  return lanes;
}

/// delta[b, h, t] = dy_t · y_t over head h's HD columns, for every row
/// (b, t, h) of [B·T, H·HD] tensors, L lanes a row (attentionDeltaLanes:
/// float4s where HD is a multiple of 4), a grid of rows · L threads: the
/// backward's second statistic when the forward pass kept its log-sum-exp
/// and its y is still in place (else the forward runs again for both).
template <int L>
__global__ void
attentionDelta(const float *__restrict__ y, const float *__restrict__ dy,
               float *__restrict__ delta, int64_t rows, int T, int H, int HD) {
  static_assert(L > 0 && L <= kWarp && (L & (L - 1)) == 0, "lanes a row");
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, w = i / L;
  int c = (int)(i % L);
  float dot = 0;
  if (w < rows) { // every lane stays for the shuffles below
    const float *a = dy + w * HD, *b = y + w * HD;
    if (HD % 4 == 0)
      for (int d = 4 * c; d < HD; d += 4 * L) {
        float4 x = load4(a + d), z = load4(b + d);
        dot += x.x * z.x + x.y * z.y + x.z * z.z + x.w * z.w;
      }
    else
      for (int d = c; d < HD; d += L)
        dot += a[d] * b[d];
  }
#pragma unroll
  for (int o = L / 2; o > 0; o /= 2)
    dot += __shfl_xor_sync(0xffffffffu, dot, o);
  if (w < rows && c == 0) {
    int64_t bt = w / H;
    int h = (int)(w % H), t = (int)(bt % T);
    delta[(bt / T * H + h) * T + t] = dot;
  }
}

/// dq[t] = scale · Σ_u ds_tu k_u with ds_tu = p_tu (dy_t · v_u − delta_t):
/// a block of queries over tiles of keys, one key per lane.
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradQ(const float *__restrict__ q, const float *__restrict__ k,
                   const float *__restrict__ v, const float *__restrict__ dy,
                   const float *__restrict__ lse,
                   const float *__restrict__ delta, float *__restrict__ dq,
                   int T, int S, int H, int K, bool causal,
                   const int32_t *offsetPtr) {
  constexpr int PER = (HD + kWarp - 1) / kWarp;
  constexpr int QT = attentionRows(HD, true), QW = QT / kAttnWarps;
  __shared__ float ks[kTile][HD + 1], vs[kTile][HD + 1], qs[QT][HD + 1],
      dys[QT][HD + 1];
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int t0 = blockIdx.x * QT;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  stage<HD>(qs, QT, q + (int64_t)b * T * H * HD, t0, T, (int64_t)H * HD,
            (int64_t)h * HD, scale);
  stage<HD>(dys, QT, dy + (int64_t)b * T * H * HD, t0, T, (int64_t)H * HD,
            (int64_t)h * HD);
  float L[QW], dl[QW], acc[QW][PER];
  for (int i = 0; i < QW; ++i) {
    int t = min(t0 + warp * QW + i, T - 1);
    L[i] = lse[((int64_t)b * H + h) * T + t];
    dl[i] = delta[((int64_t)b * H + h) * T + t];
    for (int e = 0; e < PER; ++e)
      acc[i][e] = 0;
  }
  int horizon = visibleKeys(min(T - 1, t0 + QT - 1), T, S, causal, offset);
  for (int u0 = 0; u0 < horizon; u0 += kTile) {
    __syncthreads();
    int64_t kvBase = (int64_t)b * S * K * HD;
    stage<HD>(ks, kTile, k + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
    stage<HD>(vs, kTile, v + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < QW; ++i) {
      int r = warp * QW + i, t = t0 + r;
      int mine = visibleKeys(t, T, S, causal, offset);
      if (u0 >= mine)
        continue;
      int u = u0 + lane;
      float ds = 0;
      if (u < mine) {
        float s = 0, dp = 0;
#pragma unroll 16
        for (int d = 0; d < HD; ++d) {
          s += qs[r][d] * ks[lane][d];
          dp += dys[r][d] * vs[lane][d];
        }
        ds = __expf(s - L[i]) * (dp - dl[i]);
      }
      int count = min(kTile, mine - u0);
      for (int uu = 0; uu < count; ++uu) {
        float dsu = __shfl_sync(0xffffffffu, ds, uu);
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          int d = lane + e * kWarp;
          if (d < HD)
            acc[i][e] += dsu * ks[uu][d];
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < QW; ++i) {
    int t = t0 + warp * QW + i;
    if (t >= T)
      break;
    int64_t row = (((int64_t)b * T + t) * H + h) * HD;
    for (int e = 0; e < PER; ++e) {
      int d = lane + e * kWarp;
      if (d < HD)
        dq[row + d] = acc[i][e] * scale;
    }
  }
}

/// dk[u] = Σ_{h in group, t} ds_tu (scale · q_t), dv[u] = Σ p_tu dy_t: a
/// block of keys of one kv head over tiles of queries of every head that
/// shares it, one query per lane (no atomics).
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradKV(const float *__restrict__ q, const float *__restrict__ k,
                    const float *__restrict__ v, const float *__restrict__ dy,
                    const float *__restrict__ lse,
                    const float *__restrict__ delta, float *__restrict__ dk,
                    float *__restrict__ dv, int T, int S, int H, int K,
                    bool causal, const int32_t *offsetPtr) {
  constexpr int PER = (HD + kWarp - 1) / kWarp;
  constexpr int KT = attentionRows(HD, true), KW = KT / kAttnWarps;
  __shared__ float qs[kTile][HD + 1], dys[kTile][HD + 1], ks[KT][HD + 1],
      vs[KT][HD + 1], Ls[kTile], dls[kTile];
  int b = blockIdx.z, j = blockIdx.y;
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int u0 = blockIdx.x * KT;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t kvBase = (int64_t)b * S * K * HD;
  stage<HD>(ks, KT, k + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
  stage<HD>(vs, KT, v + kvBase, u0, S, (int64_t)K * HD, (int64_t)j * HD);
  float dkAcc[KW][PER], dvAcc[KW][PER];
  for (int i = 0; i < KW; ++i)
    for (int e = 0; e < PER; ++e)
      dkAcc[i][e] = dvAcc[i][e] = 0;
  // The first query that sees this block's first key.
  int tFirst = causal ? max(0, u0 - offset) : 0;
  int group = H / K;
  for (int hh = 0; hh < group; ++hh) {
    int h = j * group + hh;
    for (int t0 = tFirst; t0 < T; t0 += kTile) {
      __syncthreads();
      stage<HD>(qs, kTile, q + (int64_t)b * T * H * HD, t0, T,
                (int64_t)H * HD, (int64_t)h * HD, scale);
      stage<HD>(dys, kTile, dy + (int64_t)b * T * H * HD, t0, T,
                (int64_t)H * HD, (int64_t)h * HD);
      if (threadIdx.x < kTile) {
        int t = min(t0 + (int)threadIdx.x, T - 1);
        Ls[threadIdx.x] = lse[((int64_t)b * H + h) * T + t];
        dls[threadIdx.x] = delta[((int64_t)b * H + h) * T + t];
      }
      __syncthreads();
      int t = t0 + lane;
      int count = min(kTile, T - t0);
#pragma unroll
      for (int i = 0; i < KW; ++i) {
        int r = warp * KW + i, u = u0 + r;
        if (u >= S)
          break;
        bool visible = t < T && (!causal || u <= t + offset);
        float p = 0, ds = 0;
        if (visible) {
          float s = 0, dp = 0;
#pragma unroll 16
          for (int d = 0; d < HD; ++d) {
            s += ks[r][d] * qs[lane][d];
            dp += vs[r][d] * dys[lane][d];
          }
          p = __expf(s - Ls[lane]);
          ds = p * (dp - dls[lane]);
        }
        for (int tt = 0; tt < count; ++tt) {
          float pt = __shfl_sync(0xffffffffu, p, tt);
          float dst = __shfl_sync(0xffffffffu, ds, tt);
#pragma unroll
          for (int e = 0; e < PER; ++e) {
            int d = lane + e * kWarp;
            if (d < HD) {
              dkAcc[i][e] += dst * qs[tt][d];
              dvAcc[i][e] += pt * dys[tt][d];
            }
          }
        }
      }
    }
  }
  // qs held q·scale: dk = Σ ds (q·scale).
  for (int i = 0; i < KW; ++i) {
    int u = u0 + warp * KW + i;
    if (u >= S)
      break;
    int64_t row = (((int64_t)b * S + u) * K + j) * HD;
    for (int e = 0; e < PER; ++e) {
      int d = lane + e * kWarp;
      if (d < HD) {
        dk[row + d] = dkAcc[i][e];
        dv[row + d] = dvAcc[i][e];
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// Attention on tensor cores: the same three passes as above (forward, dq,
// dk and dv), with every product (q·kᵀ, p·v, dy·vᵀ, ds·k, k·qᵀ, v·dyᵀ,
// pᵀ·dy, dsᵀ·q) a warp-level `mma.sync` m16n8k8 with TF32 operands and
// fp32 accumulation, and everything between the products (mask, online
// softmax, ds) done on the accumulators in registers. Used where the
// model's matmuls already take tensor-core operands (--tf32, `precision:
// bf16`) and the head width is a multiple of 16 up to 128 (bf16 models
// with heads up to 64 wide take the bf16 kernels below instead): fp32
// models keep the kernels above, which round as the reference does.
//
// A block is 4 warps and 64 rows (queries; keys for the dk, dv pass), 16
// per warp; the other side streams through shared memory 64 rows at a
// time, double-buffered: the next chunk's cp.async copies are in flight
// while the warps multiply the current one (dynamic shared memory: 4-6
// tiles of 64 × (HD + 4) floats, up to 199 KiB at head width 128;
// prepareAttentionTc raises each kernel's limit when the context opens).
// The block's own rows are staged once, scaled and rounded to TF32; the
// streamed chunks arrive as they are, and their fragments are scaled (q by
// 1/√hd) and rounded to TF32 as they are loaded (cvt.rna): every product
// sees the operands it saw when the chunks were rounded at staging.
//
// Fragments (PTX ISA, mma.m16n8k8 .tf32): lane = 4g + c; the accumulator
// of a 16 × 8 tile holds (g, 2c), (g, 2c + 1), (g + 8, 2c), (g + 8, 2c + 1);
// A (16 × 8) holds (g, c), (g + 8, c), (g, c + 4), (g + 8, c + 4); B (8 × 8)
// holds (c, g), (c + 4, g). A product's scores become the next product's A
// operand without moving between lanes: that product's reduction index is
// permuted (A's column c stands for key 2c, column c + 4 for key 2c + 1)
// and B's rows are read in the same order. The row stride HD + 4 puts the
// 32 lanes of every fragment load in 32 different banks.
//===----------------------------------------------------------------------===//

constexpr int kTcRows = 64; // rows per block and per staged chunk

template <int HD> struct TcLayout {
  static_assert(HD % 16 == 0 && HD <= 128, "head width");
  static constexpr int LD = HD + 4;         // row stride of a staged tile
  static constexpr int tile = kTcRows * LD; // floats
  static constexpr int DT = HD / 8;         // 8-wide tiles of a head
  static constexpr int NT = kTcRows / 8;    // 8-wide tiles of a chunk
};

/// Dynamic shared memory of pass `which` (0 forward, 1 dq, 2 dk and dv):
/// two buffers of the streamed chunk (k and v; q, dy and their lse and
/// delta for the dk, dv pass), and the block's own rows (the forward keeps
/// q in registers, staged first in the second buffer).
template <int HD> constexpr size_t attentionTcShared(int which) {
  using L = TcLayout<HD>;
  return sizeof(float) * (which == 0   ? 4 * L::tile
                          : which == 1 ? 6 * L::tile
                                       : 6 * L::tile + 4 * kTcRows);
}

/// x rounded to TF32, as an operand register.
__device__ __forceinline__ uint32_t tf32Bits(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

/// Rows [first, first + 64) of a [rows, stride] tensor's columns
/// [col, col + HD), times `scale` and rounded to TF32 (so fragments load
/// the bits as they are), into a staged tile; zero past `limit`.
template <int HD>
__device__ __forceinline__ void
stageTc(float *tile, const float *src, int64_t first, int limit, int64_t stride,
        int64_t col, float scale) {
  constexpr int V4 = HD / 4;
  for (int idx = threadIdx.x; idx < kTcRows * V4; idx += blockDim.x) {
    int r = idx / V4, c = (idx % V4) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (first + r < limit) {
      x = *reinterpret_cast<const float4 *>(src + (first + r) * stride + col +
                                            c);
      x.x = __uint_as_float(tf32Bits(x.x * scale));
      x.y = __uint_as_float(tf32Bits(x.y * scale));
      x.z = __uint_as_float(tf32Bits(x.z * scale));
      x.w = __uint_as_float(tf32Bits(x.w * scale));
    }
    *reinterpret_cast<float4 *>(tile + r * TcLayout<HD>::LD + c) = x;
  }
}

/// d[16 × 8] += a[16 × 8] · b[8 × 8] (fragments as above).
__device__ __forceinline__ void mma8(float (&d)[4], const uint32_t (&a)[4],
                                     uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Starts copying rows [first, first + 64) of a [rows, stride] tensor's
/// columns [col, col + HD) into a staged tile as they are (cp.async, 16
/// bytes a copy; zeros past `limit`). Waited for with asyncWait.
template <int HD>
__device__ __forceinline__ void stageAsync(float *tile, const float *src,
                                           int64_t first, int limit,
                                           int64_t stride, int64_t col) {
  constexpr int V4 = HD / 4;
  for (int idx = threadIdx.x; idx < kTcRows * V4; idx += blockDim.x) {
    int r = idx / V4, c = (idx % V4) * 4;
    bool valid = first + r < limit;
    const float *from = src + (valid ? first + r : 0) * stride + col + c;
    unsigned to =
        (unsigned)__cvta_generic_to_shared(tile + r * TcLayout<HD>::LD + c);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(to),
                 "l"(from), "r"(valid ? 16 : 0)
                 : "memory");
  }
}

/// Starts copying x[first, first + 64) into `to` (zeros past `limit`).
__device__ __forceinline__ void stageRowAsync(float *to, const float *x,
                                              int64_t first, int limit) {
  if (threadIdx.x < kTcRows) {
    bool valid = first + threadIdx.x < limit;
    unsigned at = (unsigned)__cvta_generic_to_shared(to + threadIdx.x);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(at),
                 "l"(x + (valid ? first + threadIdx.x : 0)), "r"(valid ? 4 : 0)
                 : "memory");
  }
}

/// Closes the group of copies started since the last commit.
__device__ __forceinline__ void asyncCommit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
/// Waits until at most `Pending` of this thread's groups are in flight.
template <int Pending> __device__ __forceinline__ void asyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
}

/// Starts copying chunk ci of the keys (rows [64ci, 64ci + 64) of k and v
/// from kb and vb, a head's columns) into kTile and vTile, one group.
template <int HD>
__device__ __forceinline__ void stageKeysAsync(float *kTile, float *vTile,
                                               const float *kb, const float *vb,
                                               int ci, int S, int64_t stride) {
  stageAsync<HD>(kTile, kb, (int64_t)ci * kTcRows, S, stride, 0);
  stageAsync<HD>(vTile, vb, (int64_t)ci * kTcRows, S, stride, 0);
  asyncCommit();
}

/// Chunks [0, chunks) through two buffers: issue(ci) starts copying chunk
/// ci into buffer ci & 1 (the caller issues chunk 0 itself, then stages
/// its own rows); body(ci) runs once chunk ci has arrived for the whole
/// block, while chunk ci + 1's copies are in flight, and the block leaves
/// buffer ci & 1 before chunk ci + 2 is issued into it.
template <typename Issue, typename Body>
__device__ __forceinline__ void overChunks(int chunks, Issue issue, Body body) {
  for (int ci = 0; ci < chunks; ++ci) {
    if (ci + 1 < chunks) {
      issue(ci + 1);
      asyncWait<1>();
    } else {
      asyncWait<0>();
    }
    __syncthreads();
    body(ci);
    __syncthreads();
  }
}

/// The A fragment of columns [8kk, 8kk + 8) of 16 staged rows.
template <int HD>
__device__ __forceinline__ void rowsA(uint32_t (&a)[4], const float *rows,
                                      int kk) {
  constexpr int LD = TcLayout<HD>::LD;
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
  const float *p = rows + g * LD + kk * 8 + c;
  a[0] = __float_as_uint(p[0]);
  a[1] = __float_as_uint(p[8 * LD]);
  a[2] = __float_as_uint(p[4]);
  a[3] = __float_as_uint(p[8 * LD + 4]);
}

/// s[16 × 64] = a[16 × HD] · (bScale · tile)ᵀ: a's rows against the 64
/// staged rows (the reduction over the head's columns); `a(fa, kk)` gives
/// the A fragment of columns [8kk, 8kk + 8). The tile's values are scaled,
/// then rounded to TF32, as they are loaded.
template <int HD, typename AFragment>
__device__ __forceinline__ void productNTWith(float (&s)[TcLayout<HD>::NT][4],
                                              AFragment a, const float *tile,
                                              float bScale = 1.f) {
  using L = TcLayout<HD>;
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
#pragma unroll
  for (int n = 0; n < L::NT; ++n)
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < L::DT; ++kk) {
    uint32_t fa[4];
    a(fa, kk);
#pragma unroll
    for (int n = 0; n < L::NT; ++n) {
      const float *p = tile + (n * 8 + g) * L::LD + kk * 8 + c;
      mma8(s[n], fa, tf32Bits(p[0] * bScale), tf32Bits(p[4] * bScale));
    }
  }
}

/// productNTWith a's 16 rows staged (rounded) in shared memory.
template <int HD>
__device__ __forceinline__ void productNT(float (&s)[TcLayout<HD>::NT][4],
                                          const float *a, const float *tile,
                                          float bScale = 1.f) {
  productNTWith<HD>(
      s, [a](uint32_t(&fa)[4], int kk) { rowsA<HD>(fa, a, kk); }, tile, bScale);
}

/// acc[16 × HD] += p[16 × 64] · (bScale · tile): accumulator-layout
/// values (p) as the A operand, the reduction over the 64 staged rows in
/// the permuted order (A's column c is row 2c of each 8, column c + 4 row
/// 2c + 1); the tile's values scaled, then rounded, as they are loaded.
template <int HD>
__device__ __forceinline__ void productNN(float (&acc)[TcLayout<HD>::DT][4],
                                          const float (&p)[TcLayout<HD>::NT][4],
                                          const float *tile,
                                          float bScale = 1.f) {
  using L = TcLayout<HD>;
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
#pragma unroll
  for (int kk = 0; kk < L::NT; ++kk) {
    const uint32_t fa[4] = {tf32Bits(p[kk][0]), tf32Bits(p[kk][2]),
                            tf32Bits(p[kk][1]), tf32Bits(p[kk][3])};
    const float *row = tile + (kk * 8 + 2 * c) * L::LD + g;
#pragma unroll
    for (int n = 0; n < L::DT; ++n)
      mma8(acc[n], fa, tf32Bits(row[n * 8] * bScale),
           tf32Bits(row[L::LD + n * 8] * bScale));
  }
}

/// Two adjacent values of a row, as one store.
__device__ __forceinline__ void storePair(float *p, float a, float b) {
  *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ __forceinline__ void storePair(__nv_bfloat16 *p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}

/// Row `first + g` (half 0) and `first + g + 8` (half 1) of a warp's
/// [16, HD] accumulators, times `scale`, to dst + rowOffset(row) for rows
/// under `limit` (fp32, or rounded to bfloat16).
template <int HD, typename RowOffset, typename Out>
__device__ __forceinline__ void
storeRows(const float (&acc)[TcLayout<HD>::DT][4], Out *__restrict__ dst,
          int first, int limit, float scale, RowOffset rowOffset) {
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    int row = first + g + 8 * half;
    if (row >= limit)
      continue;
    Out *out = dst + rowOffset(row) + 2 * c;
#pragma unroll
    for (int n = 0; n < TcLayout<HD>::DT; ++n)
      storePair(out + n * 8, acc[n][2 * half] * scale,
                acc[n][2 * half + 1] * scale);
  }
}

/// A sum over the four lanes that share a fragment row.
__device__ __forceinline__ float quadSum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float quadMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

/// One chunk of a warp's online softmax (the forward passes), in the
/// accumulator layout (r = 0: query first + g, r = 1: first + g + 8): the
/// scores of keys u0 + ... past each row's `mine` masked, the chunk's row
/// max, what came before (o, and this lane's share of l) rescaled, then the
/// exponentials (p replaces s).
template <int HD>
__device__ __forceinline__ void
onlineSoftmax(float (&s)[kTcRows / 8][4], float (&o)[HD / 8][4], float (&m)[2],
              float (&l)[2], const int (&mine)[2], int u0) {
  int c = threadIdx.x % 4;
  // A chunk whose every key both rows see (all but the causal diagonal's
  // chunks and a partial last one) skips the mask.
  bool whole = u0 + kTcRows <= min(mine[0], mine[1]);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float cm = -INFINITY;
    if (whole) {
#pragma unroll
      for (int n = 0; n < kTcRows / 8; ++n)
        cm = fmaxf(cm, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
    } else {
#pragma unroll
      for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float &x = s[n][2 * r + e];
          if (u0 + n * 8 + 2 * c + e >= mine[r])
            x = -INFINITY;
          cm = fmaxf(cm, x);
        }
    }
    float mNew = fmaxf(m[r], quadMax(cm));
    float base = mNew == -INFINITY ? 0.f : mNew; // a row with no key yet
    float corr = __expf(m[r] - base), sum = 0.f;
#pragma unroll
    for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float &x = s[n][2 * r + e];
        x = __expf(x - base);
        sum += x;
      }
    l[r] = l[r] * corr + sum; // this lane's share; summed at the end
    m[r] = mNew;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[n][2 * r] *= corr;
      o[n][2 * r + 1] *= corr;
    }
  }
}

/// The end of a warp's forward pass over rows [first, first + 16) of head
/// h of batch b: o divided by the row sums and stored to y and to a bf16
/// model's copy y16 (each where given: the copy for the matmuls that read
/// it), and per row under T its log-sum-exp and delta = dy · y (where
/// given) at [b, h, t].
template <int HD>
__device__ __forceinline__ void
finishForward(float (&o)[HD / 8][4], float (&m)[2], float (&l)[2],
              float *__restrict__ y, __nv_bfloat16 *__restrict__ y16,
              const float *__restrict__ dy, float *__restrict__ delta,
              float *__restrict__ lse, int first, int T, int b, int h, int H) {
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
  int64_t qStride = (int64_t)H * HD;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quadSum(l[r]);
    float inv = l[r] > 0 ? 1.f / l[r] : 0.f;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[n][2 * r] *= inv;
      o[n][2 * r + 1] *= inv;
    }
  }
  auto rowOffset = [&](int t) {
    return ((int64_t)b * T + t) * qStride + (int64_t)h * HD;
  };
  if (y)
    storeRows<HD>(o, y, first, T, 1.f, rowOffset);
  if (y16)
    storeRows<HD>(o, y16, first, T, 1.f, rowOffset);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    int t = first + g + 8 * r;
    float dot = 0.f; // delta_t = dy_t · y_t
    if (delta && t < T) {
      const float *d = dy + rowOffset(t) + 2 * c;
#pragma unroll
      for (int n = 0; n < HD / 8; ++n)
        dot += d[n * 8] * o[n][2 * r] + d[n * 8 + 1] * o[n][2 * r + 1];
    }
    if (delta)
      dot = quadSum(dot);
    if (t < T && c == 0) {
      int64_t at = ((int64_t)b * H + h) * T + t;
      if (lse)
        lse[at] = l[r] > 0 ? m[r] + logf(l[r]) : -INFINITY;
      if (delta)
        delta[at] = dot;
    }
  }
}

/// A warp's two rows in a dq pass (r = 0: query first + g, r = 1:
/// first + g + 8): the keys each sees, and its log-sum-exp and delta from
/// the forward pass (at `at` + t of lse and delta).
struct QueryRows {
  int mine[2];
  float lse[2], delta[2];
  __device__ __forceinline__ QueryRows(int first, int T, int S, bool causal,
                                       int offset, const float *lseAt,
                                       const float *deltaAt, int64_t at) {
    int g = threadIdx.x % kWarp / 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int t = first + g + 8 * r;
      mine[r] = visibleKeys(t, T, S, causal, offset);
      lse[r] = t < T ? lseAt[at + t] : 0.f;
      delta[r] = t < T ? deltaAt[at + t] : 0.f;
    }
  }
  /// ds = p (dp − delta) over keys u0 + ... in the accumulator layout (s
  /// holds the scores, and then ds; zero where a row does not see a key).
  __device__ __forceinline__ void ds(float (&s)[kTcRows / 8][4],
                                     const float (&dp)[kTcRows / 8][4],
                                     int u0) const {
    int c = threadIdx.x % 4;
    if (u0 + kTcRows <= min(mine[0], mine[1])) { // every key seen
#pragma unroll
      for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          s[n][i] = __expf(s[n][i] - lse[i / 2]) * (dp[n][i] - delta[i / 2]);
      return;
    }
#pragma unroll
    for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int r = i / 2, u = u0 + n * 8 + 2 * c + i % 2;
        s[n][i] = u < mine[r] ? __expf(s[n][i] - lse[r]) * (dp[n][i] - delta[r])
                              : 0.f;
      }
  }
};

/// In a dk/dv pass, keys × queries (a warp's keys from `first`, the chunk's
/// queries from t0, their log-sum-exp and delta in lc and dc): p replaces
/// the scores sᵀ and ds = p (dp − delta) replaces dpᵀ; both zero where a
/// key is not seen.
__device__ __forceinline__ void keyRowsPDs(float (&s)[kTcRows / 8][4],
                                           float (&dp)[kTcRows / 8][4],
                                           const float *lc, const float *dc,
                                           int first, int t0, int S, int T,
                                           bool causal, int offset) {
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
  // Every query of the chunk sees every key of the warp's (warp-uniform):
  // no mask (all but the causal diagonal's chunks and partial ones).
  if (first + 16 <= S && t0 + kTcRows <= T &&
      (!causal || first + 15 <= t0 + offset)) {
#pragma unroll
    for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int col = n * 8 + 2 * c + i % 2;
        float p = __expf(s[n][i] - lc[col]);
        dp[n][i] = p * (dp[n][i] - dc[col]);
        s[n][i] = p;
      }
    return;
  }
#pragma unroll
  for (int n = 0; n < kTcRows / 8; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int col = n * 8 + 2 * c + i % 2, tt = t0 + col;
      int u = first + g + 8 * (i / 2);
      bool visible = u < S && tt < T && (!causal || u <= tt + offset);
      float p = visible ? __expf(s[n][i] - lc[col]) : 0.f;
      dp[n][i] = p * (dp[n][i] - dc[col]);
      s[n][i] = p;
    }
}

template <int HD>
__global__ void __launch_bounds__(128)
    attentionTc(const float *__restrict__ q, const float *__restrict__ k,
                const float *__restrict__ v, float *__restrict__ y, int T,
                int S, int H, int K, bool causal, const int32_t *offsetPtr,
                float *__restrict__ lse, const float *__restrict__ dy = nullptr,
                float *__restrict__ delta = nullptr,
                __nv_bfloat16 *__restrict__ y16 = nullptr) {
  using L = TcLayout<HD>;
  extern __shared__ __align__(16) float tcShared[];
  // Two buffers of k and v (buffer i: k at 2i tiles, v after it); q is
  // staged in the second before the first chunk arrives there.
  auto ks = [&](int i) { return tcShared + 2 * i * L::tile; };
  auto vs = [&](int i) { return tcShared + (2 * i + 1) * L::tile; };
  int warp = threadIdx.x / kWarp, g = threadIdx.x % kWarp / 4;
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int t0 = blockIdx.x * kTcRows, first = t0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  const float *kb = k + (int64_t)b * S * kvStride + (int64_t)j * HD,
              *vb = v + (int64_t)b * S * kvStride + (int64_t)j * HD;
  int horizon = visibleKeys(min(T - 1, t0 + kTcRows - 1), T, S, causal, offset);
  int chunks = (horizon + kTcRows - 1) / kTcRows;
  auto issue = [&](int ci) {
    stageKeysAsync<HD>(ks(ci & 1), vs(ci & 1), kb, vb, ci, S, kvStride);
  };
  if (chunks > 0)
    issue(0);
  // q rows, scaled and rounded, into registers (through the second k
  // buffer, free until chunk 1 is issued after the barrier below).
  stageTc<HD>(ks(1), q + (int64_t)b * T * qStride, t0, T, qStride,
              (int64_t)h * HD, rsqrtf((float)HD));
  __syncthreads();
  uint32_t qf[L::DT][4];
#pragma unroll
  for (int kk = 0; kk < L::DT; ++kk)
    rowsA<HD>(qf[kk], ks(1) + warp * 16 * L::LD, kk);
  __syncthreads();
  int warpHorizon =
      visibleKeys(min(T - 1, first + 15), T, S, causal, offset) * (first < T);
  // This lane's two rows: r = 0 is query first + g, r = 1 is first + g + 8.
  int mine[2] = {visibleKeys(first + g, T, S, causal, offset),
                 visibleKeys(first + g + 8, T, S, causal, offset)};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[L::DT][4] = {};
  overChunks(chunks, issue, [&](int ci) {
    int u0 = ci * kTcRows;
    if (u0 < warpHorizon) { // warp-uniform: a key of this chunk is seen
      float s[L::NT][4];
      productNTWith<HD>(
          s,
          [&](uint32_t(&fa)[4], int kk) {
            fa[0] = qf[kk][0];
            fa[1] = qf[kk][1];
            fa[2] = qf[kk][2];
            fa[3] = qf[kk][3];
          },
          ks(ci & 1));
      onlineSoftmax<HD>(s, o, m, l, mine, u0);
      productNN<HD>(o, s, vs(ci & 1));
    }
  });
  finishForward<HD>(o, m, l, y, y16, dy, delta, lse, first, T, b, h, H);
}

/// dq[t] = scale · Σ_u ds_tu k_u, ds_tu = p_tu (dy_t · v_u − delta_t): a
/// block of 64 queries over chunks of 64 keys.
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradQTc(const float *__restrict__ q, const float *__restrict__ k,
                     const float *__restrict__ v, const float *__restrict__ dy,
                     const float *__restrict__ lse,
                     const float *__restrict__ delta, float *__restrict__ dq,
                     int T, int S, int H, int K, bool causal,
                     const int32_t *offsetPtr) {
  using L = TcLayout<HD>;
  extern __shared__ __align__(16) float tcShared[];
  auto ks = [&](int i) { return tcShared + 2 * i * L::tile; };
  auto vs = [&](int i) { return tcShared + (2 * i + 1) * L::tile; };
  float *qs = tcShared + 4 * L::tile, *dys = qs + L::tile;
  int warp = threadIdx.x / kWarp;
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int t0 = blockIdx.x * kTcRows, first = t0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  const float *kb = k + (int64_t)b * S * kvStride + (int64_t)j * HD,
              *vb = v + (int64_t)b * S * kvStride + (int64_t)j * HD;
  int horizon = visibleKeys(min(T - 1, t0 + kTcRows - 1), T, S, causal, offset);
  int chunks = (horizon + kTcRows - 1) / kTcRows;
  auto issue = [&](int ci) {
    stageKeysAsync<HD>(ks(ci & 1), vs(ci & 1), kb, vb, ci, S, kvStride);
  };
  if (chunks > 0)
    issue(0);
  stageTc<HD>(qs, q + (int64_t)b * T * qStride, t0, T, qStride, (int64_t)h * HD,
              scale);
  stageTc<HD>(dys, dy + (int64_t)b * T * qStride, t0, T, qStride,
              (int64_t)h * HD, 1.f);
  QueryRows rows(first, T, S, causal, offset, lse, delta,
                 ((int64_t)b * H + h) * T);
  const float *qw = qs + warp * 16 * L::LD, *dyw = dys + warp * 16 * L::LD;
  float acc[L::DT][4] = {};
  int warpHorizon =
      visibleKeys(min(T - 1, first + 15), T, S, causal, offset) * (first < T);
  overChunks(chunks, issue, [&](int ci) {
    int u0 = ci * kTcRows;
    if (u0 < warpHorizon) { // warp-uniform
      float s[L::NT][4], dp[L::NT][4];
      productNT<HD>(s, qw, ks(ci & 1));
      productNT<HD>(dp, dyw, vs(ci & 1));
      rows.ds(s, dp, u0);
      productNN<HD>(acc, s, ks(ci & 1));
    }
  });
  storeRows<HD>(acc, dq, first, T, scale, [&](int t) {
    return ((int64_t)b * T + t) * qStride + (int64_t)h * HD;
  });
}

/// dk[u] = Σ_{h in group, t} ds_tu (scale · q_t), dv[u] = Σ p_tu dy_t: a
/// block of 64 keys of one kv head over chunks of 64 queries of every head
/// that shares it (no atomics); sᵀ and dpᵀ are computed keys × queries, so
/// pᵀ and dsᵀ are A operands as they stand.
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradKVTc(const float *__restrict__ q, const float *__restrict__ k,
                      const float *__restrict__ v, const float *__restrict__ dy,
                      const float *__restrict__ lse,
                      const float *__restrict__ delta, float *__restrict__ dk,
                      float *__restrict__ dv, int T, int S, int H, int K,
                      bool causal, const int32_t *offsetPtr,
                      __nv_bfloat16 *__restrict__ dv16 = nullptr) {
  using L = TcLayout<HD>;
  extern __shared__ __align__(16) float tcShared[];
  float *ks = tcShared + 4 * L::tile, *vs = ks + L::tile;
  auto qs = [&](int i) { return tcShared + 2 * i * L::tile; };
  auto dys = [&](int i) { return tcShared + (2 * i + 1) * L::tile; };
  auto lses = [&](int i) { return vs + L::tile + 2 * i * kTcRows; };
  auto deltas = [&](int i) { return vs + L::tile + (2 * i + 1) * kTcRows; };
  int warp = threadIdx.x / kWarp;
  int b = blockIdx.z, j = blockIdx.y;
  int u0 = blockIdx.x * kTcRows, first = u0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  // The chunks: every head of the group, each over the queries from the
  // first that sees this block's first key.
  int tFirst = causal ? max(0, u0 - offset) : 0;
  int perHead = T > tFirst ? (T - tFirst + kTcRows - 1) / kTcRows : 0;
  int group = H / K, chunks = group * perHead;
  auto issue = [&](int ci) {
    int h = j * group + ci / perHead, t0 = tFirst + ci % perHead * kTcRows;
    const float *qh = q + (int64_t)b * T * qStride + (int64_t)h * HD,
                *dyh = dy + (int64_t)b * T * qStride + (int64_t)h * HD;
    stageAsync<HD>(qs(ci & 1), qh, t0, T, qStride, 0);
    stageAsync<HD>(dys(ci & 1), dyh, t0, T, qStride, 0);
    stageRowAsync(lses(ci & 1), lse + ((int64_t)b * H + h) * T, t0, T);
    stageRowAsync(deltas(ci & 1), delta + ((int64_t)b * H + h) * T, t0, T);
    asyncCommit();
  };
  if (chunks > 0)
    issue(0);
  stageTc<HD>(ks, k + (int64_t)b * S * kvStride, u0, S, kvStride,
              (int64_t)j * HD, 1.f);
  stageTc<HD>(vs, v + (int64_t)b * S * kvStride, u0, S, kvStride,
              (int64_t)j * HD, 1.f);
  const float *kw = ks + warp * 16 * L::LD, *vw = vs + warp * 16 * L::LD;
  float dkAcc[L::DT][4] = {}, dvAcc[L::DT][4] = {};
  // The first query that sees this warp's first key.
  int warpFirst = causal ? max(0, first - offset) : 0;
  overChunks(chunks, issue, [&](int ci) {
    int t0 = tFirst + ci % perHead * kTcRows;
    const float *qc = qs(ci & 1), *dyc = dys(ci & 1), *lc = lses(ci & 1),
                *dc = deltas(ci & 1);
    if (first < S && t0 + kTcRows > warpFirst) { // warp-uniform
      float s[L::NT][4], dp[L::NT][4];
      productNT<HD>(s, kw, qc, scale); // sᵀ: keys × queries
      productNT<HD>(dp, vw, dyc);      // (dy · vᵀ)ᵀ
      keyRowsPDs(s, dp, lc, dc, first, t0, S, T, causal, offset);
      productNN<HD>(dvAcc, s, dyc);
      productNN<HD>(dkAcc, dp, qc, scale);
    }
  });
  auto rowOffset = [&](int u) {
    return ((int64_t)b * S + u) * kvStride + (int64_t)j * HD;
  };
  storeRows<HD>(dkAcc, dk, first, S, 1.f, rowOffset);
  if (dv) // null when only a bf16 model's copy dv16 is read
    storeRows<HD>(dvAcc, dv, first, S, 1.f, rowOffset);
  if (dv16)
    storeRows<HD>(dvAcc, dv16, first, S, 1.f, rowOffset);
}

//===----------------------------------------------------------------------===//
// Attention on tensor cores with bfloat16 operands: the three passes of the
// TF32 kernels above, for `precision: bf16` models with heads up to 64
// wide, as mma.sync m16n8k16 with bf16 operands and fp32 accumulation
// (twice the work of an m16n8k8 TF32 instruction, at twice its rate). The
// probabilities (and ds) are rounded to bfloat16 as the next product's A
// operand, as PyTorch's bf16 attention does; the softmax, its statistics
// and every accumulator stay fp32.
//
// The same blocks (4 warps, 64 rows, 16 a warp) and chunks of 64 rows, but
// staged as bfloat16 in shared memory, rows of HD + 8 (a row's 16-byte
// pieces of 8 consecutive rows fall in different banks, as ldmatrix reads
// them). The inputs stay fp32 in global memory, so the next chunk is
// loaded into registers while the warps multiply the current one, then
// rounded (q scaled by 1/√hd first) and stored into the other buffer.
//
// Fragments (PTX ISA, mma.m16n8k16 .bf16, two values to a register, the
// lower column in the low half): A (16 × 16) holds (g, 2c..2c+1),
// (g + 8, 2c..), (g, 2c + 8..), (g + 8, 2c + 8..); B (16 × 8) holds
// (2c..2c+1, g), (2c + 8.., g); the accumulator as above. So two adjacent
// 16 × 8 score tiles, packed in pairs, are the next product's A fragment
// as they stand. ldmatrix.x4 loads a 16 × 16 A fragment, or the B
// fragments of two 8-wide tiles: as stored for products against a tile's
// rows (q·kᵀ), transposed (.trans) for products along them (p·v).
//===----------------------------------------------------------------------===//

/// The widest head the bf16 kernels take (a thread holds its share of the
/// next chunk's tile, HD / 8 float4s, in registers).
constexpr int kBfMaxHead = 64;

template <int HD> struct BfLayout {
  static_assert(HD % 16 == 0 && HD <= kBfMaxHead, "head width");
  static constexpr int LD = HD + 8;         // bf16 values a staged row
  static constexpr int tile = kTcRows * LD; // bf16 values a staged tile
  static constexpr int KT = HD / 16;        // 16-wide steps along a head
  static constexpr int DT = HD / 8;         // 8-wide tiles of a head
  static constexpr int NT = kTcRows / 8;    // 8-wide tiles of a chunk
  /// float4 pieces of a tile each of the block's 128 threads loads.
  static constexpr int pieces = kTcRows * HD / 4 / 128;
};

/// Dynamic shared memory of pass `which` (as attentionTcShared): two
/// buffers of two streamed tiles, the dq and dk/dv passes' own two tiles,
/// and the dk/dv pass's two buffers of lse and delta.
template <int HD> constexpr size_t attentionBfShared(int which) {
  using L = BfLayout<HD>;
  return sizeof(__nv_bfloat16) * (which == 0 ? 4 : 6) * L::tile +
         (which == 2 ? sizeof(float) * 4 * kTcRows : 0);
}

/// Rows [first, first + 64) of a [rows, stride] tensor's HD columns from
/// `src` (zeros past `limit`), held in registers between load and store:
/// thread i's pieces are float4s i, i + 128, ... of the tile.
template <int HD> struct ChunkLoad {
  using L = BfLayout<HD>;
  float4 piece[L::pieces];

  __device__ __forceinline__ void load(const float *src, int64_t first,
                                       int limit, int64_t stride) {
#pragma unroll
    for (int i = 0; i < L::pieces; ++i) {
      int idx = threadIdx.x + 128 * i, r = idx / (HD / 4),
          c = idx % (HD / 4) * 4;
      piece[i] = first + r < limit ? __ldg(reinterpret_cast<const float4 *>(
                                         src + (first + r) * stride + c))
                                   : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  }
  /// RoPE folded into attention: rotates the loaded rows [first, first +
  /// 64) (at positions first + r) by the angles of ropeTable's `table` (of
  /// heads HD wide), as the rope kernel rotates them, in double; rows past
  /// `limit` are zeros and stay so.
  __device__ __forceinline__ void rotate(const double *__restrict__ table,
                                         int64_t first, int limit) {
#pragma unroll
    for (int i = 0; i < L::pieces; ++i) {
      int idx = threadIdx.x + 128 * i, r = idx / (HD / 4),
          c = idx % (HD / 4) * 4;
      if (first + r >= limit)
        continue;
      // Pairs c / 2 and c / 2 + 1: (cos, sin) of each, 32 aligned bytes.
      const double2 *e = reinterpret_cast<const double2 *>(
          table + 2 * ((first + r) * (HD / 2) + c / 2));
      double2 e0 = e[0], e1 = e[1];
      float4 &x = piece[i];
      float2 lo = rotatePair(x.x, x.y, e0.x, e0.y),
             hi = rotatePair(x.z, x.w, e1.x, e1.y);
      x = make_float4(lo.x, lo.y, hi.x, hi.y);
    }
  }
  /// The pieces times `scale`, rounded to bfloat16, into a staged tile.
  __device__ __forceinline__ void store(__nv_bfloat16 *tile,
                                        float scale) const {
#pragma unroll
    for (int i = 0; i < L::pieces; ++i) {
      int idx = threadIdx.x + 128 * i, r = idx / (HD / 4),
          c = idx % (HD / 4) * 4;
      __nv_bfloat162 lo = __floats2bfloat162_rn(piece[i].x * scale,
                                                piece[i].y * scale),
                     hi = __floats2bfloat162_rn(piece[i].z * scale,
                                                piece[i].w * scale);
      uint2 bits = make_uint2(*reinterpret_cast<uint32_t *>(&lo),
                              *reinterpret_cast<uint32_t *>(&hi));
      *reinterpret_cast<uint2 *>(tile + r * L::LD + c) = bits;
    }
  }
};

/// Chunks [0, chunks) of two tiles each through two buffers, loaded
/// through one ChunkLoad a tile at a time: load(ci, part) starts loading
/// tile `part` of chunk ci, store(ci, part) stores it into buffer ci & 1.
/// Chunk 0 is stored first (buffer 0: the caller may still read buffer 1
/// until the barrier after it); then first(ci) runs while tile 0 of chunk
/// ci + 1 is in flight, second(ci) while its tile 1 is. Stores go to the
/// other buffer, which every warp left at the last barrier.
template <typename Load, typename Store, typename First, typename Second>
__device__ __forceinline__ void overChunksBf(int chunks, Load load, Store store,
                                             First first, Second second) {
  for (int part = 0; part < 2 && chunks > 0; ++part) {
    load(0, part);
    store(0, part);
  }
  __syncthreads();
  for (int ci = 0; ci < chunks; ++ci) {
    bool next = ci + 1 < chunks;
    if (next)
      load(ci + 1, 0);
    first(ci);
    if (next) {
      store(ci + 1, 0);
      load(ci + 1, 1);
    }
    second(ci);
    if (next)
      store(ci + 1, 1);
    __syncthreads();
  }
}

__device__ __forceinline__ void ldmatrix4(uint32_t (&r)[4],
                                          const __nv_bfloat16 *p) {
  unsigned at = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, "
               "[%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(at));
}
__device__ __forceinline__ void ldmatrix4Trans(uint32_t (&r)[4],
                                               const __nv_bfloat16 *p) {
  unsigned at = (unsigned)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
               "{%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(at));
}

/// d[16 × 8] += a[16 × 16] · b[16 × 8] (bf16 fragments as above).
__device__ __forceinline__ void mma16(float (&d)[4], const uint32_t (&a)[4],
                                      uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// Two fp32 values as a bf16 pair (a in the low half).
__device__ __forceinline__ uint32_t packBf(float a, float b) {
  __nv_bfloat162 x = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t *>(&x);
}

/// The A fragment of columns [16kk, 16kk + 16) of 16 staged rows.
template <int HD>
__device__ __forceinline__ void rowsBf(uint32_t (&a)[4],
                                       const __nv_bfloat16 *rows, int kk) {
  int lane = threadIdx.x % kWarp;
  ldmatrix4(a, rows + (lane % 16) * BfLayout<HD>::LD + kk * 16 + lane / 16 * 8);
}

/// s[16 × 64] = a[16 × HD] · tileᵀ: 16 rows against the 64 rows of a
/// staged tile (the reduction over the head's columns); `a(fa, kk)` gives
/// the A fragment of columns [16kk, 16kk + 16).
template <int HD, typename AFragment>
__device__ __forceinline__ void productNTBfWith(float (&s)[BfLayout<HD>::NT][4],
                                                AFragment a,
                                                const __nv_bfloat16 *tile) {
  using L = BfLayout<HD>;
  int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int n = 0; n < L::NT; ++n)
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  // Lane l addresses row l % 8 (+ 8 for lanes 16-31) and column 8 for
  // lanes 8-15 and 24-31: matrices (n, k), (n, k + 8), (n + 8, k),
  // (n + 8, k + 8), the two B registers of tiles n and n + 1.
  const __nv_bfloat16 *b =
      tile + (lane % 8 + lane / 16 * 8) * L::LD + lane / 8 % 2 * 8;
#pragma unroll
  for (int kk = 0; kk < L::KT; ++kk) {
    uint32_t fa[4];
    a(fa, kk);
#pragma unroll
    for (int n = 0; n < L::NT; n += 2) {
      uint32_t fb[4];
      ldmatrix4(fb, b + n * 8 * L::LD + kk * 16);
      mma16(s[n], fa, fb[0], fb[1]);
      mma16(s[n + 1], fa, fb[2], fb[3]);
    }
  }
}

/// productNTBfWith a's 16 rows staged in shared memory.
template <int HD>
__device__ __forceinline__ void productNTBf(float (&s)[BfLayout<HD>::NT][4],
                                            const __nv_bfloat16 *a,
                                            const __nv_bfloat16 *tile) {
  productNTBfWith<HD>(
      s, [a](uint32_t(&fa)[4], int kk) { rowsBf<HD>(fa, a, kk); }, tile);
}

/// acc[16 × HD] += p[16 × 64] · tile: accumulator-layout values (p),
/// rounded to bf16, as the A operand, the reduction over the tile's 64
/// rows.
template <int HD>
__device__ __forceinline__ void
productNNBf(float (&acc)[BfLayout<HD>::DT][4],
            const float (&p)[BfLayout<HD>::NT][4], const __nv_bfloat16 *tile) {
  using L = BfLayout<HD>;
  int lane = threadIdx.x % kWarp;
  // Lane l addresses row l % 8 (+ 8 for lanes 8-15 and 24-31) and column
  // 8 for lanes 16-31: transposed, matrices (k, n), (k + 8, n), (k, n + 8),
  // (k + 8, n + 8) are the two B registers of tiles n and n + 1.
  const __nv_bfloat16 *b =
      tile + (lane % 8 + lane / 8 % 2 * 8) * L::LD + lane / 16 * 8;
#pragma unroll
  for (int kk = 0; kk < L::NT / 2; ++kk) {
    const uint32_t fa[4] = {packBf(p[2 * kk][0], p[2 * kk][1]),
                            packBf(p[2 * kk][2], p[2 * kk][3]),
                            packBf(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            packBf(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int n = 0; n < L::DT; n += 2) {
      uint32_t fb[4];
      ldmatrix4Trans(fb, b + kk * 16 * L::LD + n * 8);
      mma16(acc[n], fa, fb[0], fb[1]);
      mma16(acc[n + 1], fa, fb[2], fb[3]);
    }
  }
}

/// A gradient pass's result rows (storeRows' layout, times `scale`) to
/// fp32 `dst` and to its bf16 copy `dst16` (each where given); with `rope`
/// (RoPE folded into the attention) rotated back first, by the negative
/// angle of each row's position and pair, as the rope gradient does: the
/// gradient of the unrotated q or k.
template <int HD, typename RowOffset>
__device__ __forceinline__ void
storeGradRows(const float (&acc)[BfLayout<HD>::DT][4], float *__restrict__ dst,
              __nv_bfloat16 *__restrict__ dst16, int first, int limit,
              float scale, RowOffset rowOffset,
              const double *__restrict__ rope) {
  if (!rope) {
    if (dst)
      storeRows<HD>(acc, dst, first, limit, scale, rowOffset);
    if (dst16)
      storeRows<HD>(acc, dst16, first, limit, scale, rowOffset);
    return;
  }
  int g = threadIdx.x % kWarp / 4, c = threadIdx.x % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    int row = first + g + 8 * half;
    if (row >= limit)
      continue;
    int64_t at = rowOffset(row) + 2 * c;
#pragma unroll
    for (int n = 0; n < BfLayout<HD>::DT; ++n) {
      // The fp32 values the unfused pass would store, then rotated.
      double a = acc[n][2 * half] * scale, b = acc[n][2 * half + 1] * scale;
      double2 e = *reinterpret_cast<const double2 *>(
          rope + 2 * ((int64_t)row * (HD / 2) + n * 4 + c));
      float2 r = rotatePair(a, b, e.x, -e.y); // the negative angle
      if (dst)
        storePair(dst + at + n * 8, r.x, r.y);
      if (dst16)
        storePair(dst16 + at + n * 8, r.x, r.y);
    }
  }
}

/// attentionTc with bf16 operands (the same arguments and results); with
/// `rope` (ropeTable's angles for heads HD wide), q and k are rotated as
/// they are loaded (RoPE folded into the attention).
template <int HD>
__global__ void __launch_bounds__(128)
    attentionBf(const float *__restrict__ q, const float *__restrict__ k,
                const float *__restrict__ v, float *__restrict__ y, int T,
                int S, int H, int K, bool causal, const int32_t *offsetPtr,
                float *__restrict__ lse, const float *__restrict__ dy = nullptr,
                float *__restrict__ delta = nullptr,
                __nv_bfloat16 *__restrict__ y16 = nullptr,
                const double *__restrict__ rope = nullptr) {
  using L = BfLayout<HD>;
  extern __shared__ __align__(16) __nv_bfloat16 bfShared[];
  auto ks = [&](int i) { return bfShared + 2 * i * L::tile; };
  auto vs = [&](int i) { return bfShared + (2 * i + 1) * L::tile; };
  int warp = threadIdx.x / kWarp, g = threadIdx.x % kWarp / 4;
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int t0 = blockIdx.x * kTcRows, first = t0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  const float *kb = k + (int64_t)b * S * kvStride + (int64_t)j * HD,
              *vb = v + (int64_t)b * S * kvStride + (int64_t)j * HD;
  int horizon = visibleKeys(min(T - 1, t0 + kTcRows - 1), T, S, causal, offset);
  int chunks = (horizon + kTcRows - 1) / kTcRows;
  ChunkLoad<HD> next; // k (part 0) or v (part 1) of a chunk
  auto load = [&](int ci, int part) {
    next.load(part ? vb : kb, (int64_t)ci * kTcRows, S, kvStride);
  };
  auto store = [&](int ci, int part) {
    if (rope && !part)
      next.rotate(rope, (int64_t)ci * kTcRows, S);
    next.store(part ? vs(ci & 1) : ks(ci & 1), 1.f);
  };
  // q rows, scaled and rounded, into registers (through the second k
  // buffer, free until chunk 1 is stored, after overChunksBf's first
  // barrier).
  next.load(q + (int64_t)b * T * qStride + (int64_t)h * HD, t0, T, qStride);
  if (rope)
    next.rotate(rope, t0, T);
  next.store(ks(1), rsqrtf((float)HD));
  __syncthreads();
  uint32_t qf[L::KT][4];
#pragma unroll
  for (int kk = 0; kk < L::KT; ++kk)
    rowsBf<HD>(qf[kk], ks(1) + warp * 16 * L::LD, kk);
  int warpHorizon =
      visibleKeys(min(T - 1, first + 15), T, S, causal, offset) * (first < T);
  int mine[2] = {visibleKeys(first + g, T, S, causal, offset),
                 visibleKeys(first + g + 8, T, S, causal, offset)};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[L::DT][4] = {}, s[L::NT][4];
  // Whether the warp sees a key of chunk ci (warp-uniform).
  auto seen = [&](int ci) { return ci * kTcRows < warpHorizon; };
  auto scores = [&](int ci) {
    if (seen(ci))
      productNTBfWith<HD>(
          s,
          [&](uint32_t(&fa)[4], int kk) {
#pragma unroll
            for (int i = 0; i < 4; ++i)
              fa[i] = qf[kk][i];
          },
          ks(ci & 1));
  };
  overChunksBf(chunks, load, store, scores, [&](int ci) {
    if (!seen(ci))
      return;
    onlineSoftmax<HD>(s, o, m, l, mine, ci * kTcRows);
    productNNBf<HD>(o, s, vs(ci & 1));
  });
  finishForward<HD>(o, m, l, y, y16, dy, delta, lse, first, T, b, h, H);
}

/// attentionGradQTc with bf16 operands.
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradQBf(const float *__restrict__ q, const float *__restrict__ k,
                     const float *__restrict__ v, const float *__restrict__ dy,
                     const float *__restrict__ lse,
                     const float *__restrict__ delta, float *__restrict__ dq,
                     int T, int S, int H, int K, bool causal,
                     const int32_t *offsetPtr,
                     const double *__restrict__ rope = nullptr,
                     __nv_bfloat16 *__restrict__ dq16 = nullptr) {
  using L = BfLayout<HD>;
  extern __shared__ __align__(16) __nv_bfloat16 bfShared[];
  auto ks = [&](int i) { return bfShared + 2 * i * L::tile; };
  auto vs = [&](int i) { return bfShared + (2 * i + 1) * L::tile; };
  __nv_bfloat16 *qs = bfShared + 4 * L::tile, *dys = qs + L::tile;
  int warp = threadIdx.x / kWarp;
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int t0 = blockIdx.x * kTcRows, first = t0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  const float *kb = k + (int64_t)b * S * kvStride + (int64_t)j * HD,
              *vb = v + (int64_t)b * S * kvStride + (int64_t)j * HD;
  int horizon = visibleKeys(min(T - 1, t0 + kTcRows - 1), T, S, causal, offset);
  int chunks = (horizon + kTcRows - 1) / kTcRows;
  ChunkLoad<HD> next; // k (part 0) or v (part 1) of a chunk
  auto load = [&](int ci, int part) {
    next.load(part ? vb : kb, (int64_t)ci * kTcRows, S, kvStride);
  };
  auto store = [&](int ci, int part) {
    if (rope && !part)
      next.rotate(rope, (int64_t)ci * kTcRows, S);
    next.store(part ? vs(ci & 1) : ks(ci & 1), 1.f);
  };
  next.load(q + (int64_t)b * T * qStride + (int64_t)h * HD, t0, T, qStride);
  if (rope)
    next.rotate(rope, t0, T);
  next.store(qs, scale);
  next.load(dy + (int64_t)b * T * qStride + (int64_t)h * HD, t0, T, qStride);
  next.store(dys, 1.f);
  QueryRows rows(first, T, S, causal, offset, lse, delta,
                 ((int64_t)b * H + h) * T);
  const __nv_bfloat16 *qw = qs + warp * 16 * L::LD,
                      *dyw = dys + warp * 16 * L::LD;
  float acc[L::DT][4] = {}, s[L::NT][4];
  int warpHorizon =
      visibleKeys(min(T - 1, first + 15), T, S, causal, offset) * (first < T);
  auto seen = [&](int ci) { return ci * kTcRows < warpHorizon; };
  auto scores = [&](int ci) {
    if (seen(ci))
      productNTBf<HD>(s, qw, ks(ci & 1));
  };
  overChunksBf(chunks, load, store, scores, [&](int ci) {
    if (!seen(ci))
      return;
    int u0 = ci * kTcRows;
    float dp[L::NT][4];
    productNTBf<HD>(dp, dyw, vs(ci & 1));
    rows.ds(s, dp, u0);
    productNNBf<HD>(acc, s, ks(ci & 1));
  });
  storeGradRows<HD>(
      acc, dq, dq16, first, T, scale,
      [&](int t) { return ((int64_t)b * T + t) * qStride + (int64_t)h * HD; },
      rope);
}

/// attentionGradKVTc with bf16 operands: the queries are staged scaled by
/// 1/√hd, for both sᵀ = k · (scale q)ᵀ and dk = dsᵀ · (scale q).
template <int HD>
__global__ void __launch_bounds__(128)
    attentionGradKVBf(const float *__restrict__ q, const float *__restrict__ k,
                      const float *__restrict__ v, const float *__restrict__ dy,
                      const float *__restrict__ lse,
                      const float *__restrict__ delta, float *__restrict__ dk,
                      float *__restrict__ dv, int T, int S, int H, int K,
                      bool causal, const int32_t *offsetPtr,
                      __nv_bfloat16 *__restrict__ dv16 = nullptr,
                      const double *__restrict__ rope = nullptr,
                      __nv_bfloat16 *__restrict__ dk16 = nullptr) {
  using L = BfLayout<HD>;
  extern __shared__ __align__(16) __nv_bfloat16 bfShared[];
  auto qs = [&](int i) { return bfShared + 2 * i * L::tile; };
  auto dys = [&](int i) { return bfShared + (2 * i + 1) * L::tile; };
  __nv_bfloat16 *ks = bfShared + 4 * L::tile, *vs = ks + L::tile;
  float *stats = reinterpret_cast<float *>(vs + L::tile);
  auto lses = [&](int i) { return stats + 2 * i * kTcRows; };
  auto deltas = [&](int i) { return stats + (2 * i + 1) * kTcRows; };
  int warp = threadIdx.x / kWarp;
  int b = blockIdx.z, j = blockIdx.y;
  int u0 = blockIdx.x * kTcRows, first = u0 + warp * 16;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t qStride = (int64_t)H * HD, kvStride = (int64_t)K * HD;
  int tFirst = causal ? max(0, u0 - offset) : 0;
  int perHead = T > tFirst ? (T - tFirst + kTcRows - 1) / kTcRows : 0;
  int group = H / K, chunks = group * perHead;
  ChunkLoad<HD> next; // q (part 0) or dy (part 1) of a chunk
  float stat = 0.f;   // with dy: lse (threads 0-63) or delta (64-127)
  auto load = [&](int ci, int part) {
    int h = j * group + ci / perHead, t0 = tFirst + ci % perHead * kTcRows;
    next.load((part ? dy : q) + (int64_t)b * T * qStride + (int64_t)h * HD, t0,
              T, qStride);
    if (part) {
      int t = t0 + threadIdx.x % kTcRows;
      const float *from = threadIdx.x < kTcRows ? lse : delta;
      stat = t < T ? from[((int64_t)b * H + h) * T + t] : 0.f;
    }
  };
  auto store = [&](int ci, int part) {
    if (rope && !part)
      next.rotate(rope, tFirst + ci % perHead * kTcRows, T);
    next.store(part ? dys(ci & 1) : qs(ci & 1), part ? 1.f : scale);
    if (part)
      (threadIdx.x < kTcRows ? lses(ci & 1)
                             : deltas(ci & 1))[threadIdx.x % kTcRows] = stat;
  };
  next.load(k + (int64_t)b * S * kvStride + (int64_t)j * HD, u0, S, kvStride);
  if (rope)
    next.rotate(rope, u0, S);
  next.store(ks, 1.f);
  next.load(v + (int64_t)b * S * kvStride + (int64_t)j * HD, u0, S, kvStride);
  next.store(vs, 1.f);
  const __nv_bfloat16 *kw = ks + warp * 16 * L::LD,
                      *vw = vs + warp * 16 * L::LD;
  float dkAcc[L::DT][4] = {}, dvAcc[L::DT][4] = {}, s[L::NT][4];
  int warpFirst = causal ? max(0, first - offset) : 0;
  // Whether a query of chunk ci sees a key of the warp's (warp-uniform).
  auto seen = [&](int ci) {
    return first < S && tFirst + ci % perHead * kTcRows + kTcRows > warpFirst;
  };
  auto scores = [&](int ci) {
    if (seen(ci))
      productNTBf<HD>(s, kw, qs(ci & 1)); // sᵀ: keys × queries
  };
  overChunksBf(chunks, load, store, scores, [&](int ci) {
    if (!seen(ci))
      return;
    int t0 = tFirst + ci % perHead * kTcRows;
    const __nv_bfloat16 *qc = qs(ci & 1), *dyc = dys(ci & 1);
    const float *lc = lses(ci & 1), *dc = deltas(ci & 1);
    float dp[L::NT][4];
    productNTBf<HD>(dp, vw, dyc); // (dy · vᵀ)ᵀ
    keyRowsPDs(s, dp, lc, dc, first, t0, S, T, causal, offset);
    productNNBf<HD>(dvAcc, s, dyc);
    productNNBf<HD>(dkAcc, dp, qc);
  });
  auto rowOffset = [&](int u) {
    return ((int64_t)b * S + u) * kvStride + (int64_t)j * HD;
  };
  storeGradRows<HD>(dkAcc, dk, dk16, first, S, 1.f, rowOffset, rope);
  storeGradRows<HD>(dvAcc, dv, dv16, first, S, 1.f, rowOffset, nullptr);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

__device__ __forceinline__ float sigmoidf(float z) {
  return 1.f / (1.f + __expf(-z));
}

/// y = silu(g) · u, four elements a thread (a 16-byte load of each input
/// where aligned, as arena offsets are); y16 (where given) y rounded to
/// bfloat16, as rmsnorm's, and y null when only y16 is read.
constexpr int kSwiGLUPerThread = 4;
__device__ __forceinline__ float swigluf(float g, float u) {
  return g * sigmoidf(g) * u;
}
__global__ void swiglu(const float *__restrict__ g, const float *__restrict__ u,
                       float *__restrict__ y, int64_t n,
                       __nv_bfloat16 *__restrict__ y16 = nullptr) {
  int64_t i =
      ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * kSwiGLUPerThread;
  if (i + 3 < n &&
      ((uintptr_t)(g + i) | (uintptr_t)(u + i) |
       (uintptr_t)(y ? y + i : nullptr)) %
              16 ==
          0 &&
      (uintptr_t)(y16 ? y16 + i : nullptr) % 8 == 0) {
    float4 gv = load4(g + i), uv = load4(u + i);
    float4 o = make_float4(swigluf(gv.x, uv.x), swigluf(gv.y, uv.y),
                           swigluf(gv.z, uv.z), swigluf(gv.w, uv.w));
    if (y)
      store4(y + i, o);
    if (y16)
      store4(y16 + i, o);
    return;
  }
  for (int64_t e = i; e < min(i + kSwiGLUPerThread, n); ++e) {
    float v = swigluf(g[e], u[e]);
    if (y)
      y[e] = v;
    if (y16)
      y16[e] = __float2bfloat16_rn(v);
  }
}

/// dg = dy · u · σ(g) (1 + g (1 − σ(g))), du = dy · g σ(g), four elements
/// a thread as swiglu; dg may alias g and du u (each element is read before
/// it is written). dg16 and du16 (where given) get bfloat16 copies for the
/// matmuls that read dg and du, and dg or du is null when only its copy is
/// read.
__device__ __forceinline__ void swigluGradf(float z, float u, float d,
                                            float &dg, float &du) {
  float s = sigmoidf(z);
  dg = d * u * s * (1 + z * (1 - s));
  du = d * z * s;
}
__global__ void swigluGrad(const float *g, const float *u, const float *dy,
                           float *dg, float *du, int64_t n,
                           __nv_bfloat16 *__restrict__ dg16 = nullptr,
                           __nv_bfloat16 *__restrict__ du16 = nullptr) {
  int64_t i =
      ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * kSwiGLUPerThread;
  if (i + 3 < n &&
      ((uintptr_t)(g + i) | (uintptr_t)(u + i) | (uintptr_t)(dy + i) |
       (uintptr_t)(dg ? dg + i : nullptr) |
       (uintptr_t)(du ? du + i : nullptr)) %
              16 ==
          0 &&
      ((uintptr_t)(dg16 ? dg16 + i : nullptr) |
       (uintptr_t)(du16 ? du16 + i : nullptr)) %
              8 ==
          0) {
    float4 gv = load4(g + i), uv = load4(u + i), dv = load4(dy + i), a, b;
    swigluGradf(gv.x, uv.x, dv.x, a.x, b.x);
    swigluGradf(gv.y, uv.y, dv.y, a.y, b.y);
    swigluGradf(gv.z, uv.z, dv.z, a.z, b.z);
    swigluGradf(gv.w, uv.w, dv.w, a.w, b.w);
    if (dg)
      store4(dg + i, a);
    if (du)
      store4(du + i, b);
    if (dg16)
      store4(dg16 + i, a);
    if (du16)
      store4(du16 + i, b);
    return;
  }
  for (int64_t e = i; e < min(i + kSwiGLUPerThread, n); ++e) {
    float a, b;
    swigluGradf(g[e], u[e], dy[e], a, b);
    if (dg)
      dg[e] = a;
    if (du)
      du[e] = b;
    if (dg16)
      dg16[e] = __float2bfloat16_rn(a);
    if (du16)
      du16[e] = __float2bfloat16_rn(b);
  }
}

__device__ __forceinline__ float geluf(float z) {
  return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
}
__device__ __forceinline__ float geluDerivf(float z) {
  // Φ(z) + z φ(z)
  return 0.5f * (1.f + erff(z * 0.70710678118654752f)) +
         z * 0.39894228040143268f * __expf(-0.5f * z * z);
}

/// y = gelu(x) (+ residual when given), and its bfloat16 copy y16 for a
/// bf16 model's matmuls (each of y and y16 written where given). y may
/// alias x.
__global__ void gelu(const float *x, const float *__restrict__ residual,
                     float *y, int64_t n,
                     __nv_bfloat16 *__restrict__ y16 = nullptr) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n)
    return;
  float v = geluf(x[i]) + (residual ? residual[i] : 0.f);
  if (y)
    y[i] = v;
  if (y16)
    y16[i] = __float2bfloat16_rn(v);
}

/// dx = gelu'(x) · dy, and its bfloat16 copy dx16 (each written where
/// given). dx may alias dy.
__global__ void geluGrad(const float *__restrict__ x, const float *dy,
                         float *dx, int64_t n,
                         __nv_bfloat16 *__restrict__ dx16 = nullptr) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n)
    return;
  float v = geluDerivf(x[i]) * dy[i];
  if (dx)
    dx[i] = v;
  if (dx16)
    dx16[i] = __float2bfloat16_rn(v);
}

/// y = x · s.
__global__ void scale(const float *__restrict__ x, float s,
                      float *__restrict__ y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = x[i] * s;
}

/// y = a + b[i mod nb] (b broadcast over a's leading dimensions).
__global__ void add(const float *a, const float *b, float *y, int64_t n,
                    int64_t nb) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = a[i] + b[i % nb];
}

/// cache[l, offset + r, :] = rows[l, r, :] for r < R: the rows of one step
/// into a KV cache of S rows. A position the host did not check is
/// skipped, never written out of bounds.
__global__ void writeRows(float *__restrict__ cache,
                          const float *__restrict__ rows,
                          const int32_t *offsetPtr, int64_t lead, int S,
                          int R, int W) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int64_t n = lead * R * W;
  int at = *offsetPtr;
  if (i >= n || at < 0 || at + R > S)
    return;
  int64_t l = i / ((int64_t)R * W), rest = i % ((int64_t)R * W);
  cache[(l * S + at) * W + rest] = rows[i];
}

//===----------------------------------------------------------------------===//
// Cross-entropy over V logits per position, mean over the N positions.
// One block per position: the row's log-sum-exp, its loss term into
// `terms`, and (when dlogits or its bfloat16 copy dlogits16 is given)
// the gradient dloss/N · (softmax − onehot) in the same pass; with `mean`,
// the last block also writes the mean of the terms (the loss).
//===----------------------------------------------------------------------===//

__global__ void crossEntropy(const float *__restrict__ logits,
                             const int32_t *__restrict__ targets, int V,
                             float *__restrict__ terms,
                             float *__restrict__ dlogits, const float *dloss,
                             int64_t N, unsigned *counter = nullptr,
                             float *mean = nullptr,
                             __nv_bfloat16 *__restrict__ dlogits16 = nullptr) {
  __shared__ float shared[32];
  int64_t p = blockIdx.x;
  const float *z = logits + p * V;
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    m = fmaxf(m, z[i]);
  // block max through the sum helper's shared slots
  {
    int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    m = warpMax(m);
    __syncthreads();
    if (lane == 0)
      shared[warp] = m;
    __syncthreads();
    m = lane < (int)(blockDim.x / kWarp) ? shared[lane] : -INFINITY;
    m = warpMax(m);
  }
  float s = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    s += __expf(z[i] - m);
  s = blockSum(s, shared);
  float lse = m + logf(s);
  int target = min(max(targets[p], 0), V - 1);
  if (threadIdx.x == 0 && terms)
    terms[p] = lse - z[target];
  if (dlogits || dlogits16) {
    float f = *dloss / (float)N;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      float g = f * (__expf(z[i] - lse) - (i == target ? 1.f : 0.f));
      if (dlogits)
        dlogits[p * V + i] = g;
      if (dlogits16)
        dlogits16[p * V + i] = __float2bfloat16_rn(g);
    }
  }
  if (!mean || !lastBlock(counter))
    return;
  // The last block: the mean of the terms, in one fixed order.
  float sum = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    sum += __ldcg(terms + i);
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    *mean = sum / (float)N;
}

//===----------------------------------------------------------------------===//
// Training: learning rate, clipping and AdamW over every parameter in one
// launch each. A parameter's tensors are found through a table of byte
// offsets (weights blob for parameter and moments, arena for the gradient).
//===----------------------------------------------------------------------===//

struct AdamWEntry {
  int64_t param, m, v; // offsets in the weights blob
  int64_t grad;        // offset in the arena
  int64_t n;           // elements
  int64_t start;       // first element in the launch's flat index (÷4)
  float weightDecay;
};

struct Schedule {
  double lr, minLr;
  int64_t warmup, total;
  int cosine; // 0: constant after warmup
};

/// The global norm of every entry's gradient and the clip factor
/// min(1, maxNorm / (norm + 1e-6)) (1 when maxNorm <= 0): each block's
/// sum of squares into partial[block] (double), the last block sums them
/// in block order (deterministic).
__global__ void sumSquares(const AdamWEntry *__restrict__ table, int entries,
                           int64_t quads, const char *__restrict__ A,
                           double *__restrict__ partial, unsigned *counter,
                           double maxNorm, float *norm, float *scale) {
  __shared__ float shared[32];
  float acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < quads;
       i += (int64_t)gridDim.x * blockDim.x) {
    int lo = 0, hi = entries - 1;
    while (lo < hi) {
      int mid = (lo + hi + 1) / 2;
      if (table[mid].start <= i)
        lo = mid;
      else
        hi = mid - 1;
    }
    const AdamWEntry &e = table[lo];
    const float *g = reinterpret_cast<const float *>(A + e.grad);
    int64_t first = (i - e.start) * 4;
    for (int64_t x = first; x < min(first + 4, e.n); ++x)
      acc += g[x] * g[x];
  }
  acc = blockSum(acc, shared);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = acc;
  if (!lastBlock(counter) || threadIdx.x != 0)
    return;
  double sum = 0;
  for (unsigned b = 0; b < gridDim.x; ++b)
    sum += __ldcg(partial + b);
  double n = sqrt(sum);
  *norm = (float)n;
  *scale = maxNorm > 0 ? (float)fmin(1.0, maxNorm / (n + 1e-6)) : 1.f;
}

/// *lr = the schedule's rate at step *step (stlm.lr_schedule's valueAt).
__global__ void lrSchedule(const int32_t *step, Schedule sched, float *lr) {
  int64_t s = *step;
  double v;
  if (s < sched.warmup)
    v = sched.lr * (double)(s + 1) / (double)sched.warmup;
  else if (!sched.cosine)
    v = sched.lr;
  else {
    double progress = (double)(s - sched.warmup) /
                      (double)max((int64_t)1, sched.total - sched.warmup);
    progress = fmin(1.0, progress);
    v = sched.minLr + 0.5 * (sched.lr - sched.minLr) *
                          (1.0 + cos(3.14159265358979323846 * progress));
  }
  *lr = (float)v;
}

/// y = x rounded to bfloat16 (to nearest, ties to even: the reference's
/// roundBF16), the operands of a `precision: bf16` matmul: four elements a
/// thread (one 16-byte load, one 8-byte store where both are aligned).
constexpr int kBF16PerThread = 4;
__global__ void toBF16(const float *__restrict__ x,
                       __nv_bfloat16 *__restrict__ y, int64_t n) {
  int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * kBF16PerThread;
  if (i + 3 < n && ((uintptr_t)(x + i) % 16 | (uintptr_t)(y + i) % 8) == 0) {
    store4(y + i, load4(x + i));
    return;
  }
  for (int64_t e = i; e < min(i + kBF16PerThread, n); ++e)
    y[e] = __float2bfloat16_rn(x[e]);
}

__global__ void addI32(const int32_t *a, const int32_t *b, int32_t *y) {
  *y = *a + *b;
}
__global__ void mulF32(const float *a, const float *b, float *y) {
  *y = *a * *b;
}

/// AdamW with bias correction at step `*step` (after the increment), the
/// gradient times `*scale` (clipping; none when null).
__global__ void adamw(const AdamWEntry *__restrict__ table, int entries,
                      int64_t quads, char *__restrict__ W,
                      const char *__restrict__ A, const float *lrPtr,
                      const int32_t *stepPtr, const float *scalePtr,
                      float beta1, float beta2, float eps) {
  float lr = *lrPtr, scale = scalePtr ? *scalePtr : 1.f;
  int64_t step = *stepPtr;
  float bc1 = (float)(1.0 - pow((double)beta1, (double)step));
  float bc2 = (float)(1.0 - pow((double)beta2, (double)step));
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < quads;
       i += (int64_t)gridDim.x * blockDim.x) {
    int lo = 0, hi = entries - 1;
    while (lo < hi) {
      int mid = (lo + hi + 1) / 2;
      if (table[mid].start <= i)
        lo = mid;
      else
        hi = mid - 1;
    }
    const AdamWEntry &e = table[lo];
    float *p = reinterpret_cast<float *>(W + e.param);
    float *m = reinterpret_cast<float *>(W + e.m);
    float *v = reinterpret_cast<float *>(W + e.v);
    const float *g = reinterpret_cast<const float *>(A + e.grad);
    int64_t first = (i - e.start) * 4;
    for (int64_t x = first; x < min(first + 4, e.n); ++x) {
      float gx = g[x] * scale;
      float m1 = beta1 * m[x] + (1 - beta1) * gx;
      float v1 = beta2 * v[x] + (1 - beta2) * gx * gx;
      p[x] = p[x] * (1 - lr * e.weightDecay) -
             lr * (m1 / bc1) / (sqrtf(v1 / bc2) + eps);
      m[x] = m1;
      v[x] = v1;
    }
  }
}

//===----------------------------------------------------------------------===//
// Host side: the context an artifact's entry points run in.
//===----------------------------------------------------------------------===//

/// A cuBLASLt matmul of one call site, its descriptors made on first use.
struct Matmul {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo;
  bool ready = false;
};

enum Entry {
  kTrainStep,
  kGrad,
  kEval,
  kAccumulate,
  kApply,
  kLogits,
  kPrefill,
  kDecode,
  kEntries
};

/// Streams a step's independent launches run on side by side (a fork of
/// up to this many lanes, joined before anything else runs).
constexpr int kLanes = 3;

struct Context {
  cudaStream_t stream = nullptr;   // the lane launches go to now
  cudaStream_t lanes[kLanes] = {}; // lanes[0]: the entry points' stream
  cudaEvent_t forked = nullptr, joined[kLanes] = {};
  void *workspaces[kLanes] = {}; // cuBLASLt's, one per lane
  cublasLtHandle_t lt = nullptr;
  char *weights = nullptr, *arena = nullptr, *scratch = nullptr;
  char *scalars = nullptr; // device scalar block
  void *workspace = nullptr;
  size_t workspaceSize = 32 << 20;
  int32_t *in = nullptr;    // device inputs: tokens, targets, seed/pos
  int32_t *hostIn = nullptr; // pinned staging of the inputs
  float *hostOut = nullptr;  // pinned staging of the results
  size_t inCount = 0, outCount = 0;
  cudaGraphExec_t graphs[kEntries] = {};
  // A bf16 model's weights' shadow (their bfloat16 copies, kShadow) holds
  // the weights as they are now: set by an entry that makes it, cleared by
  // one that updates the weights and by a copy into them.
  bool shadowFresh = false;
  std::vector<Matmul> matmuls;
  std::string error;
  int device = 0;
  // STLM_CUDA_PROFILE=1: entry points run eagerly (no graph), an event
  // after every launch; per-op device time is printed when the context
  // closes.
  bool profiling = false;
  std::vector<std::pair<cudaEvent_t, const char *>> marks;
  std::map<std::string, std::pair<double, int64_t>> profile; // ms, count
};

inline bool check(Context &c, cudaError_t e, const char *what) {
  if (e == cudaSuccess)
    return true;
  if (c.error.empty())
    c.error = std::string(what) + ": " + cudaGetErrorString(e);
  return false;
}
inline bool checkLt(Context &c, cublasStatus_t s, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS)
    return true;
  if (c.error.empty())
    c.error = std::string(what) + ": cuBLASLt status " + std::to_string(s);
  return false;
}
/// After a launch: the launch's own error (bad configuration).
inline bool launched(Context &c, const char *what) {
  if (c.profiling) {
    cudaEvent_t e;
    cudaEventCreate(&e);
    cudaEventRecord(e, c.stream);
    c.marks.push_back({e, what});
  }
  return check(c, cudaPeekAtLastError(), what);
}

/// The launches after fork(c, n) until join(c, n) go to the lanes that
/// onLane picks, and run side by side: the emitter forks only launches
/// that read nothing another writes and write nothing another touches
/// (in a graph, the fork and join become edges). In the profiler's eager
/// mode everything stays on one stream, so per-launch times stay
/// meaningful.
inline bool fork(Context &c, int n) {
  if (c.profiling)
    return true;
  if (!check(c, cudaEventRecord(c.forked, c.lanes[0]), "fork"))
    return false;
  for (int i = 1; i < n; ++i)
    if (!check(c, cudaStreamWaitEvent(c.lanes[i], c.forked, 0), "fork"))
      return false;
  return true;
}
inline void onLane(Context &c, int i) {
  if (c.profiling)
    return;
  c.stream = c.lanes[i];
  c.workspace = c.workspaces[i];
}
inline bool join(Context &c, int n) {
  onLane(c, 0);
  if (c.profiling)
    return true;
  for (int i = 1; i < n; ++i)
    if (!check(c, cudaEventRecord(c.joined[i], c.lanes[i]), "join") ||
        !check(c, cudaStreamWaitEvent(c.lanes[0], c.joined[i], 0), "join"))
      return false;
  return true;
}

/// Raises a family's three attention kernels' dynamic shared memory limits
/// to what they use (once per process and head width, outside any
/// capture).
inline cudaError_t setSharedLimits(const void *const (&kernels)[3],
                                   const size_t (&bytes)[3]) {
  for (int pass = 0; pass < 3; ++pass)
    if (cudaError_t e = cudaFuncSetAttribute(
            kernels[pass], cudaFuncAttributeMaxDynamicSharedMemorySize,
            (int)bytes[pass]);
        e != cudaSuccess)
      return e;
  return cudaSuccess;
}
template <int HD> cudaError_t setAttentionTcLimits() {
  return setSharedLimits({(const void *)attentionTc<HD>,
                          (const void *)attentionGradQTc<HD>,
                          (const void *)attentionGradKVTc<HD>},
                         {attentionTcShared<HD>(0), attentionTcShared<HD>(1),
                          attentionTcShared<HD>(2)});
}
template <int HD> cudaError_t setAttentionBfLimits() {
  return setSharedLimits({(const void *)attentionBf<HD>,
                          (const void *)attentionGradQBf<HD>,
                          (const void *)attentionGradKVBf<HD>},
                         {attentionBfShared<HD>(0), attentionBfShared<HD>(1),
                          attentionBfShared<HD>(2)});
}

/// The limits when a context opens, for the family the model uses.
template <int HD> bool prepareAttentionTc(Context &c) {
  return check(c, setAttentionTcLimits<HD>(),
               "cudaFuncSetAttribute (attention shared memory)");
}
template <int HD> bool prepareAttentionBf(Context &c) {
  return check(c, setAttentionBfLimits<HD>(),
               "cudaFuncSetAttribute (attention shared memory)");
}

/// Blocks of `threads` covering n items.
inline unsigned blocksFor(int64_t n, int threads) {
  return (unsigned)((n + threads - 1) / threads);
}

/// How a matmul treats its fp32 operands.
enum class Operands {
  FP32, // IEEE fp32 products (CUDA cores)
  TF32, // rounded to TF32 inside the tensor cores (stlm-compile --tf32)
  BF16  // rounded to bfloat16 first (`precision: bf16`; tensor cores)
};

/// One matmul call site of a model: D[m, n] (column-major, ldd = m) =
/// op(A) · op(B) (+ C), op(A) [m, k] with leading dimension lda, op(B)
/// [k, n] with ldb.
struct MatmulShape {
  bool transA, transB;
  int m, n, k, lda, ldb;
  Operands operands;
};

/// Fills `x` with a deterministic pattern in [-1, 1) (timing never runs on
/// zeros).
__global__ void pattern(float *x, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    uint32_t h = (uint32_t)i * 2654435761u;
    h ^= h >> 15;
    x[i] = (float)(h & 0xffff) / 32768.f - 1.f;
  }
}

/// Frees the descriptors of `mm`, if made.
inline void destroy(Matmul &mm) {
  if (mm.desc)
    cublasLtMatmulDescDestroy(mm.desc);
  if (mm.a)
    cublasLtMatrixLayoutDestroy(mm.a);
  if (mm.b)
    cublasLtMatrixLayoutDestroy(mm.b);
  if (mm.c)
    cublasLtMatrixLayoutDestroy(mm.c);
  mm = Matmul();
}

/// Milliseconds of one run of `mm` with `algo` on `a`, `b`, `d`, timed as
/// the step's graph runs it: kRuns launches captured in one CUDA graph,
/// best of 3 replays after a warm-up (a single launch's time is mostly
/// launch latency, which a graph does not pay for each node, and hides
/// which algorithm's kernel is fastest); with STLM_CUDA_MATMUL_TIMING=
/// launch, best of 3 single launches after a warm-up instead. INFINITY
/// when the algorithm fails.
inline float timeMatmul(Context &c, const Matmul &mm,
                        const cublasLtMatmulAlgo_t &algo, const void *a,
                        const void *b, float *d, cudaEvent_t e0,
                        cudaEvent_t e1) {
  static const bool launches = [] {
    const char *mode = std::getenv("STLM_CUDA_MATMUL_TIMING");
    return mode && std::string(mode) == "launch";
  }();
  constexpr int kRuns = 8;
  float alpha = 1.f, beta = 0.f;
  auto run = [&] {
    return cublasLtMatmul(c.lt, mm.desc, &alpha, a, mm.a, b, mm.b, &beta, d,
                          mm.c, d, mm.c, &algo, c.workspace, c.workspaceSize,
                          c.stream) == CUBLAS_STATUS_SUCCESS;
  };
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (!launches) {
    // One launch outside the capture first (lazy loading, a failing
    // algorithm), then the captured ones.
    if (!run() || cudaStreamSynchronize(c.stream) != cudaSuccess ||
        cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal) !=
            cudaSuccess)
      return INFINITY;
    bool captured = true;
    for (int i = 0; i < kRuns && captured; ++i)
      captured = run();
    captured = cudaStreamEndCapture(c.stream, &graph) == cudaSuccess &&
               captured &&
               cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (!captured) {
      if (graph)
        cudaGraphDestroy(graph);
      return INFINITY;
    }
  }
  float ms = INFINITY;
  for (int rep = 0; rep < 4; ++rep) { // the first warms up
    cudaEventRecord(e0, c.stream);
    bool ok = launches ? run()
                       : cudaGraphLaunch(exec, c.stream) == cudaSuccess;
    cudaEventRecord(e1, c.stream);
    if (!ok || cudaEventSynchronize(e1) != cudaSuccess) {
      ms = INFINITY;
      break;
    }
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (rep > 0)
      ms = std::min(ms, launches ? t : t / kRuns);
  }
  if (exec)
    cudaGraphExecDestroy(exec);
  if (graph)
    cudaGraphDestroy(graph);
  return ms;
}

/// Makes the descriptors of `mm` for `s` and picks its algorithm: the
/// fastest of cuBLASLt's first candidates, each timed on `a`, `b`, `d`
/// (device buffers large enough; timeMatmul) when `a` is given, else the
/// heuristic's first. Not while a stream is being captured.
/// (The operands of a bf16 site are rounded by toBF16 first, to nearest
/// even as the reference rounds them: cuBLASLt's FAST_16BF mode on fp32
/// operands was timed as an alternative and rounds differently, outside
/// the reference's bounds on the GPU test.)
inline bool planMatmul(Context &c, Matmul &mm, const MatmulShape &s,
                       const void *a, const void *b, float *d) {
  cublasOperation_t ta = s.transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                    tb = s.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasComputeType_t compute = s.operands == Operands::TF32
                                    ? CUBLAS_COMPUTE_32F_FAST_TF32
                                    : CUBLAS_COMPUTE_32F;
  cudaDataType_t in = s.operands == Operands::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  if (!checkLt(c, cublasLtMatmulDescCreate(&mm.desc, compute, CUDA_R_32F),
               "cublasLtMatmulDescCreate") ||
      !checkLt(c, cublasLtMatmulDescSetAttribute(
                      mm.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
               "transa") ||
      !checkLt(c, cublasLtMatmulDescSetAttribute(
                      mm.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
               "transb") ||
      !checkLt(c, cublasLtMatrixLayoutCreate(&mm.a, in, s.transA ? s.k : s.m,
                                             s.transA ? s.m : s.k, s.lda),
               "layout A") ||
      !checkLt(c, cublasLtMatrixLayoutCreate(&mm.b, in, s.transB ? s.n : s.k,
                                             s.transB ? s.k : s.n, s.ldb),
               "layout B") ||
      !checkLt(c, cublasLtMatrixLayoutCreate(&mm.c, CUDA_R_32F, s.m, s.n, s.m),
               "layout C"))
    return false;
  cublasLtMatmulPreference_t pref;
  if (!checkLt(c, cublasLtMatmulPreferenceCreate(&pref), "preference"))
    return false;
  cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c.workspaceSize,
      sizeof c.workspaceSize);
  // How many of the heuristic's candidates are timed: 8, or
  // STLM_CUDA_MATMUL_CANDIDATES (1 to 64).
  constexpr int kMostCandidates = 64;
  static const int candidates = [] {
    const char *v = std::getenv("STLM_CUDA_MATMUL_CANDIDATES");
    int n = v ? std::atoi(v) : 8;
    return n >= 1 && n <= kMostCandidates ? n : 8;
  }();
  cublasLtMatmulHeuristicResult_t results[kMostCandidates];
  int found = 0;
  cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(c.lt, mm.desc, mm.a, mm.b, mm.c, mm.c,
                                     pref, a ? candidates : 1, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (!checkLt(c, st, "cublasLtMatmulAlgoGetHeuristic"))
    return false;
  if (found == 0) {
    c.error = "cuBLASLt has no algorithm for a " + std::to_string(s.m) + "x" +
              std::to_string(s.n) + "x" + std::to_string(s.k) + " matmul";
    return false;
  }
  int best = 0;
  if (a && found > 1) {
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float bestMs = INFINITY;
    for (int i = 0; i < found; ++i) {
      float ms = timeMatmul(c, mm, results[i].algo, a, b, d, e0, e1);
      if (ms < bestMs) {
        bestMs = ms;
        best = i;
      }
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaGetLastError(); // a candidate that failed is simply not chosen
  }
  mm.algo = results[best].algo;
  mm.ready = true;
  return true;
}

/// Plans every matmul site of the model at open, timing cuBLASLt's
/// candidates for each on pattern data (outside any capture).
inline bool planMatmuls(Context &c, const MatmulShape *shapes, size_t n) {
  size_t ab = 0, dd = 0;
  for (size_t i = 0; i < n; ++i) {
    ab = std::max(ab, (size_t)shapes[i].m * shapes[i].k +
                          (size_t)shapes[i].k * shapes[i].n);
    dd = std::max(dd, (size_t)shapes[i].m * shapes[i].n);
  }
  // Pattern operands, fp32 and rounded to bfloat16, and an output.
  float *buf = nullptr;
  if (!check(c, cudaMalloc(&buf, (ab + dd) * sizeof(float) + ab * 2 + 256),
             "matmul planning buffers"))
    return false;
  auto *buf16 = reinterpret_cast<__nv_bfloat16 *>(buf + ab + dd);
  pattern<<<blocksFor(ab, 256), 256, 0, c.stream>>>(buf, ab);
  toBF16<<<blocksFor((ab + kBF16PerThread - 1) / kBF16PerThread, 256), 256, 0,
           c.stream>>>(buf, buf16, ab);
  bool ok = true;
  // Sites of one shape share the first one's timing.
  std::map<std::tuple<bool, bool, int, int, int, int, int, int>, size_t> seen;
  for (size_t i = 0; ok && i < n; ++i) {
    const MatmulShape &s = shapes[i];
    auto key = std::make_tuple(s.transA, s.transB, s.m, s.n, s.k, s.lda,
                               s.ldb, (int)s.operands);
    auto it = seen.find(key);
    if (it != seen.end()) {
      ok = planMatmul(c, c.matmuls[i], s, nullptr, nullptr, nullptr);
      c.matmuls[i].algo = c.matmuls[it->second].algo;
      continue;
    }
    seen[key] = i;
    size_t na = (size_t)s.m * s.k;
    bool bf16 = s.operands == Operands::BF16;
    const void *a = bf16 ? (const void *)buf16 : (const void *)buf;
    const void *b = bf16 ? (const void *)(buf16 + na) : (const void *)(buf + na);
    ok = planMatmul(c, c.matmuls[i], s, a, b, buf + ab);
  }
  cudaStreamSynchronize(c.stream);
  cudaFree(buf);
  return ok;
}

/// D[m, n] (column-major, ldd = m) = alpha · op(A) · op(B) + beta · C, fp32
/// out with fp32 accumulation; A and B as `operands` says (fp32 for FP32
/// and TF32; bfloat16 for BF16, rounded by the caller's toBF16 launches).
/// `site` names the call site, planned when the context opened (else here,
/// the heuristic's first algorithm).
inline bool matmul(Context &c, int site, bool transA, bool transB, int m, int n,
                   int k, const void *a, int lda, const void *b, int ldb,
                   const float *C, float *D, float beta,
                   Operands operands = Operands::FP32) {
  Matmul &mm = c.matmuls[site];
  if (!mm.ready &&
      !planMatmul(c, mm, {transA, transB, m, n, k, lda, ldb, operands},
                  nullptr, nullptr, nullptr))
    return false;
  float alpha = 1.f;
  if (c.profiling) {
    bool ok = checkLt(c,
                      cublasLtMatmul(c.lt, mm.desc, &alpha, a, mm.a, b, mm.b,
                                     &beta, C ? C : D, mm.c, D, mm.c,
                                     &mm.algo, c.workspace, c.workspaceSize,
                                     c.stream),
                      "cublasLtMatmul");
    return ok && launched(c, "cuBLASLt matmul");
  }
  return checkLt(c,
                 cublasLtMatmul(c.lt, mm.desc, &alpha, a, mm.a, b, mm.b, &beta,
                                C ? C : D, mm.c, D, mm.c, &mm.algo,
                                c.workspace, c.workspaceSize, c.stream),
                 "cublasLtMatmul");
}

inline void close(Context *c);

/// Opens a context: the device (STLM_CUDA_DEVICE or 0), a stream, cuBLASLt,
/// zeroed device memory for weights, arena, scratch and scalars, the
/// constant scalars uploaded, and every matmul site of `shapes` planned
/// (planMatmuls). Returns null with `error` set on failure.
inline Context *open(int64_t weightsSize, int64_t arenaSize,
                     int64_t scratchSize, int64_t scalarSize,
                     const void *scalarInit, size_t inCount, size_t outCount,
                     size_t matmulSites, const MatmulShape *shapes,
                     std::string &error) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    error = std::string("no CUDA device is present (") +
            (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")";
    return nullptr;
  }
  Context *c = new Context;
  if (const char *d = std::getenv("STLM_CUDA_DEVICE"))
    c->device = std::atoi(d);
  auto fail = [&](const char *what, cudaError_t err) -> Context * {
    error = std::string(what) + ": " + cudaGetErrorString(err);
    close(c); // what was made so far
    return nullptr;
  };
  if ((e = cudaSetDevice(c->device)) != cudaSuccess)
    return fail("cudaSetDevice", e);
  for (int i = 0; i < kLanes; ++i) {
    if ((e = cudaStreamCreateWithFlags(&c->lanes[i], cudaStreamNonBlocking)) !=
        cudaSuccess)
      return fail("cudaStreamCreate", e);
    if ((e = cudaEventCreateWithFlags(&c->joined[i], cudaEventDisableTiming)) !=
        cudaSuccess)
      return fail("cudaEventCreate", e);
  }
  if ((e = cudaEventCreateWithFlags(&c->forked, cudaEventDisableTiming)) !=
      cudaSuccess)
    return fail("cudaEventCreate", e);
  c->stream = c->lanes[0];
  if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
    error = "cannot create a cuBLASLt handle";
    close(c);
    return nullptr;
  }
  auto alloc = [&](void **p, int64_t bytes) {
    cudaError_t r = cudaMalloc(p, bytes > 0 ? bytes : 64);
    if (r == cudaSuccess)
      r = cudaMemset(*p, 0, bytes > 0 ? bytes : 64);
    return r;
  };
  if ((e = alloc((void **)&c->weights, weightsSize)) != cudaSuccess ||
      (e = alloc((void **)&c->arena, arenaSize)) != cudaSuccess ||
      (e = alloc((void **)&c->scratch, scratchSize)) != cudaSuccess ||
      (e = alloc((void **)&c->scalars, scalarSize)) != cudaSuccess ||

      (e = alloc((void **)&c->in, inCount * 4 + 64)) != cudaSuccess)
    return fail("cannot allocate device memory", e);
  for (void *&w : c->workspaces)
    if ((e = alloc(&w, c->workspaceSize)) != cudaSuccess)
      return fail("cannot allocate device memory", e);
  c->workspace = c->workspaces[0];
  if ((e = cudaMallocHost((void **)&c->hostIn, inCount * 4 + 64)) !=
          cudaSuccess ||
      (e = cudaMallocHost((void **)&c->hostOut, outCount * 4 + 64)) !=
          cudaSuccess)
    return fail("cannot allocate pinned host memory", e);
  c->inCount = inCount;
  c->outCount = outCount;
  if (scalarSize > 0 &&
      (e = cudaMemcpy(c->scalars, scalarInit, scalarSize,
                      cudaMemcpyHostToDevice)) != cudaSuccess)
    return fail("cannot upload the constants", e);
  c->matmuls.resize(matmulSites);
  if (shapes && !planMatmuls(*c, shapes, matmulSites)) {
    error = "cannot plan the matmuls: " + c->error;
    close(c);
    return nullptr;
  }
  if (const char *p = std::getenv("STLM_CUDA_PROFILE"))
    c->profiling = std::atoi(p) != 0;
  return c;
}

inline void close(Context *c) {
  if (!c)
    return;
  cudaDeviceSynchronize();
  if (c->profiling && !c->profile.empty()) {
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto &[name, v] : c->profile) {
      rows.push_back({v.first, name});
      total += v.first;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "stlm cuda profile (device ms, all calls):\n");
    for (const auto &[ms, name] : rows)
      std::fprintf(stderr, "  %10.3f ms %5.1f%%  %8lld x  %s\n", ms,
                   100 * ms / total,
                   static_cast<long long>(c->profile[name].second),
                   name.c_str());
  }
  for (cudaGraphExec_t g : c->graphs)
    if (g)
      cudaGraphExecDestroy(g);
  for (Matmul &m : c->matmuls)
    destroy(m);
  cudaFree(c->weights);
  cudaFree(c->arena);
  cudaFree(c->scratch);
  cudaFree(c->scalars);
  for (int i = 0; i < kLanes; ++i) {
    cudaFree(c->workspaces[i]);
    if (c->joined[i])
      cudaEventDestroy(c->joined[i]);
    if (c->lanes[i])
      cudaStreamDestroy(c->lanes[i]);
  }
  if (c->forked)
    cudaEventDestroy(c->forked);
  cudaFree(c->in);
  cudaFreeHost(c->hostIn);
  cudaFreeHost(c->hostOut);
  if (c->lt)
    cublasLtDestroy(c->lt);
  delete c;
}

/// Runs entry `entry`: copies `nIn` input ints into the pinned staging,
/// then replays the entry's graph (capturing it on first use: the input
/// upload, `body`, and the download of `nOut` floats from `result`), waits,
/// and copies the results to `out`. Returns 0, or -1 with c.error set.
template <typename Body>
int32_t run(Context &c, Entry entry, const int32_t *const *inputs,
            const size_t *counts, int nInputs, const float *result,
            size_t nOut, float *out, Body body) {
  c.error.clear();
  size_t at = 0;
  for (int i = 0; i < nInputs; ++i)
    at += counts[i];
  if (at > c.inCount + 16 || nOut > c.outCount) {
    c.error = "an entry point's inputs or results exceed the staging buffers";
    return -1;
  }
  at = 0;
  for (int i = 0; i < nInputs; ++i) {
    if (inputs[i])
      std::memcpy(c.hostIn + at, inputs[i], counts[i] * 4);
    else
      std::memset(c.hostIn + at, 0, counts[i] * 4);
    at += counts[i];
  }
  if (c.profiling) {
    // Eagerly, an event after each launch: the time between two events is
    // the later op's.
    c.marks.clear();
    launched(c, "(start)");
    bool ok =
        (at == 0 || check(c,
                          cudaMemcpyAsync(c.in, c.hostIn, at * 4,
                                          cudaMemcpyHostToDevice, c.stream),
                          "input upload")) &&
        body(c) &&
        (nOut == 0 || check(c,
                            cudaMemcpyAsync(c.hostOut, result, nOut * 4,
                                            cudaMemcpyDeviceToHost, c.stream),
                            "result download")) &&
        check(c, cudaStreamSynchronize(c.stream), "the step");
    for (size_t i = 1; i < c.marks.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, c.marks[i - 1].first, c.marks[i].first);
      auto &slot = c.profile[c.marks[i].second];
      slot.first += ms;
      slot.second += 1;
    }
    for (auto &m : c.marks)
      cudaEventDestroy(m.first);
    c.marks.clear();
    if (!ok)
      return -1;
    if (nOut)
      std::memcpy(out, c.hostOut, nOut * 4);
    return 0;
  }
  if (!c.graphs[entry]) {
    if (!check(c, cudaStreamBeginCapture(c.stream,
                                         cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture"))
      return -1;
    bool ok =
        (at == 0 || check(c,
                          cudaMemcpyAsync(c.in, c.hostIn, at * 4,
                                          cudaMemcpyHostToDevice, c.stream),
                          "input upload")) &&
        body(c);
    // A body that failed inside a fork may have left another lane: the
    // capture ends on the stream it began on.
    c.stream = c.lanes[0];
    c.workspace = c.workspaces[0];
    ok = ok &&
         (nOut == 0 || check(c,
                             cudaMemcpyAsync(c.hostOut, result, nOut * 4,
                                             cudaMemcpyDeviceToHost, c.stream),
                             "result download"));
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(c.lanes[0], &graph);
    if (!ok) {
      if (graph)
        cudaGraphDestroy(graph);
      return -1;
    }
    if (!check(c, e, "cudaStreamEndCapture"))
      return -1;
    e = cudaGraphInstantiate(&c.graphs[entry], graph, 0);
    cudaGraphDestroy(graph);
    if (!check(c, e, "cudaGraphInstantiate"))
      return -1;
  }
  if (!check(c, cudaGraphLaunch(c.graphs[entry], c.stream),
             "cudaGraphLaunch") ||
      !check(c, cudaStreamSynchronize(c.stream), "the step"))
    return -1;
  if (nOut)
    std::memcpy(out, c.hostOut, nOut * 4);
  return 0;
}

} // namespace stlm_cuda

#endif // STLM_CODEGEN_CUDA_KERNELS_CUH
