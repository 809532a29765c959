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

/// dtable[V, D] = Σ_n [ids[n] = v] dy[n, :]: one block per vocab row,
/// scanning the ids (deterministic, no atomics).
__global__ void embedGrad(const int32_t *__restrict__ ids,
                          const float *__restrict__ dy,
                          float *__restrict__ dtable, int64_t N, int V, int D) {
  int v = blockIdx.x;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0;
    for (int64_t n = 0; n < N; ++n)
      if (min(max(ids[n], 0), V - 1) == v)
        acc += dy[n * D + d];
    dtable[(int64_t)v * D + d] = acc;
  }
}

//===----------------------------------------------------------------------===//
// RMSNorm: y = x · (mean(x²) + eps)^(-1/2) · g, one block per row
//===----------------------------------------------------------------------===//

__global__ void rmsnorm(const float *__restrict__ x,
                        const float *__restrict__ g, float *__restrict__ y,
                        int D, float eps) {
  __shared__ float shared[32];
  int64_t r = blockIdx.x;
  const float *xr = x + r * D;
  float ss = 0;
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    ss += xr[d] * xr[d];
  float inv = rsqrtf(blockSum(ss, shared) / D + eps);
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    y[r * D + d] = xr[d] * inv * g[d];
}

/// dx = s·g·dy − s³/D · x · Σ_e dy_e g_e x_e; dg += Σ_rows dy·x·s. Each
/// block takes `rowsPerBlock` rows and adds its share of dg with one atomic
/// per column (dg zeroed before the launch).
__global__ void rmsnormGrad(const float *__restrict__ x,
                            const float *__restrict__ g,
                            const float *__restrict__ dy,
                            float *__restrict__ dx, float *__restrict__ dg,
                            int64_t N, int D, float eps, int rowsPerBlock) {
  __shared__ float shared[32];
  extern __shared__ float dgAcc[]; // [D]
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    dgAcc[d] = 0;
  int64_t first = (int64_t)blockIdx.x * rowsPerBlock;
  for (int64_t r = first; r < min(N, first + rowsPerBlock); ++r) {
    const float *xr = x + r * D, *dyr = dy + r * D;
    float ss = 0, dot = 0;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      ss += xr[d] * xr[d];
      dot += dyr[d] * g[d] * xr[d];
    }
    ss = blockSum(ss, shared);
    dot = blockSum(dot, shared);
    float s = rsqrtf(ss / D + eps);
    float c = s * s * s / D * dot;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      dx[r * D + d] = s * g[d] * dyr[d] - c * xr[d];
      dgAcc[d] += dyr[d] * xr[d] * s;
    }
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x)
    atomicAdd(&dg[d], dgAcc[d]);
}

//===----------------------------------------------------------------------===//
// RoPE: each pair (2i, 2i+1) of every head rotated by sign · p · θ^(−2i/hd),
// p = t + offset (offset: a device scalar, or none). Angles in double, as
// the reference. Two tensors of one shape per launch (q and k; their
// gradients): blockIdx.y picks (x0, y0) or (x1, y1).
//===----------------------------------------------------------------------===//

__global__ void rope(const float *x0, float *y0, const float *x1, float *y1,
                     int64_t rows, int T, int W, int hd, double theta,
                     const int32_t *offset, double sign) {
  const float *x = blockIdx.y ? x1 : x0;
  float *y = blockIdx.y ? y1 : y0;
  int64_t pairs = rows * (W / 2);
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= pairs)
    return;
  int64_t row = i / (W / 2);
  int c = (int)(i % (W / 2)) * 2; // column of the pair's first element
  int k = (c % hd) / 2;
  double p = (double)(row % T) + (offset ? *offset : 0);
  double angle = sign * p * pow(theta, -2.0 * k / hd);
  double s, co;
  sincos(angle, &s, &co);
  double a = x[row * W + c], b = x[row * W + c + 1];
  y[row * W + c] = (float)(a * co - b * s);
  y[row * W + c + 1] = (float)(a * s + b * co);
}

//===----------------------------------------------------------------------===//
// Attention (flash-style: no score matrix in memory). q [B, T, H·hd],
// k and v [B, S, K·hd], y [B, T, H·hd]; query t sees keys u ≤ t + offset
// when causal (offset = S − T unless given). A query that sees no key gets
// 0. One warp per query row; keys in tiles of 32 staged in shared memory by
// the block, one key per lane for the scores, one head dimension per lane
// for the output, an online softmax between tiles. For the backward, the
// same pass (y null) leaves each query's log-sum-exp in `lse` and
// delta = dy · y in `delta` instead of y.
//===----------------------------------------------------------------------===//

constexpr int kAttnWarps = 4; // query rows per block

template <int HD>
__global__ void attention(const float *__restrict__ q,
                          const float *__restrict__ k,
                          const float *__restrict__ v, float *__restrict__ y,
                          int T, int S, int H, int K, bool causal,
                          const int32_t *offsetPtr, float *__restrict__ lse,
                          const float *__restrict__ dy = nullptr,
                          float *__restrict__ delta = nullptr) {
  static_assert(HD % 2 == 0 && HD <= 256, "head width");
  constexpr int PER = (HD + kWarp - 1) / kWarp; // dims per lane
  __shared__ float ks[kWarp][HD + 1], vs[kWarp][HD + 1];
  __shared__ float qs[kAttnWarps][HD];
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int t = blockIdx.x * kAttnWarps + warp;
  int offset = offsetPtr ? *offsetPtr : S - T;
  bool active = t < T;
  const float scale = rsqrtf((float)HD);
  if (active)
    for (int d = lane; d < HD; d += kWarp)
      qs[warp][d] = q[(((int64_t)b * T + t) * H + h) * HD + d] * scale;
  float m = -INFINITY, l = 0, acc[PER];
  for (int e = 0; e < PER; ++e)
    acc[e] = 0;
  // Keys this block needs: up to the last query's horizon.
  int tLast = min(T - 1, (int)(blockIdx.x * kAttnWarps + kAttnWarps - 1));
  int horizon = causal ? min(S, tLast + offset + 1) : S;
  int mine = causal ? min(S, t + offset + 1) : S; // keys [0, mine)
  for (int u0 = 0; u0 < horizon; u0 += kWarp) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kWarp * HD; idx += blockDim.x) {
      int uu = idx / HD, d = idx % HD, u = u0 + uu;
      float kv = 0, vv = 0;
      if (u < S) {
        int64_t base = (((int64_t)b * S + u) * K + j) * HD + d;
        kv = k[base];
        vv = v[base];
      }
      ks[uu][d] = kv;
      vs[uu][d] = vv;
    }
    __syncthreads();
    if (!active || u0 >= mine)
      continue;
    int u = u0 + lane;
    float s = -INFINITY;
    if (u < mine) {
      s = 0;
#pragma unroll 8
      for (int d = 0; d < HD; ++d)
        s += qs[warp][d] * ks[lane][d];
    }
    float mNew = fmaxf(m, warpMax(s));
    float p = u < mine ? __expf(s - mNew) : 0.f;
    float corr = m == -INFINITY ? 0.f : __expf(m - mNew);
    l = l * corr + warpSum(p);
    for (int e = 0; e < PER; ++e)
      acc[e] *= corr;
    int count = min(kWarp, mine - u0);
    for (int uu = 0; uu < count; ++uu) {
      float pu = __shfl_sync(0xffffffffu, p, uu);
      for (int e = 0; e < PER; ++e) {
        int d = lane + e * kWarp;
        if (d < HD)
          acc[e] += pu * vs[uu][d];
      }
    }
    m = mNew;
  }
  if (!active)
    return;
  float inv = l > 0 ? 1.f / l : 0.f;
  int64_t row = (((int64_t)b * T + t) * H + h) * HD;
  float dot = 0;
  for (int e = 0; e < PER; ++e) {
    int d = lane + e * kWarp;
    if (d < HD) {
      if (y)
        y[row + d] = acc[e] * inv;
      if (delta)
        dot += dy[row + d] * acc[e] * inv;
    }
  }
  if (delta)
    dot = warpSum(dot);
  if (lane == 0) {
    if (lse)
      lse[((int64_t)b * H + h) * T + t] = l > 0 ? m + logf(l) : -INFINITY;
    if (delta)
      delta[((int64_t)b * H + h) * T + t] = dot;
  }
}

/// dq[t] = scale · Σ_u ds_tu k_u with ds_tu = p_tu (dy_t · v_u − delta_t):
/// one warp per query row, keys one per lane.
template <int HD>
__global__ void attentionGradQ(const float *__restrict__ q,
                               const float *__restrict__ k,
                               const float *__restrict__ v,
                               const float *__restrict__ dy,
                               const float *__restrict__ lse,
                               const float *__restrict__ delta,
                               float *__restrict__ dq, int T, int S, int H,
                               int K, bool causal, const int32_t *offsetPtr) {
  constexpr int PER = (HD + kWarp - 1) / kWarp;
  __shared__ float qs[kAttnWarps][HD], dys[kAttnWarps][HD];
  int b = blockIdx.z, h = blockIdx.y, j = h / (H / K);
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int t = blockIdx.x * kAttnWarps + warp;
  if (t >= T)
    return;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t base = (((int64_t)b * T + t) * H + h) * HD;
  for (int d = lane; d < HD; d += kWarp) {
    qs[warp][d] = q[base + d] * scale;
    dys[warp][d] = dy[base + d];
  }
  __syncwarp();
  float L = lse[((int64_t)b * H + h) * T + t];
  float dl = delta[((int64_t)b * H + h) * T + t];
  int mine = causal ? min(S, t + offset + 1) : S;
  float acc[PER];
  for (int e = 0; e < PER; ++e)
    acc[e] = 0;
  for (int u0 = 0; u0 < mine; u0 += kWarp) {
    int u = u0 + lane;
    float ds = 0;
    if (u < mine) {
      const float *ku = k + (((int64_t)b * S + u) * K + j) * HD;
      const float *vu = v + (((int64_t)b * S + u) * K + j) * HD;
      float s = 0, dp = 0;
#pragma unroll 8
      for (int d = 0; d < HD; ++d) {
        s += qs[warp][d] * ku[d];
        dp += dys[warp][d] * vu[d];
      }
      float p = __expf(s - L);
      ds = p * (dp - dl);
    }
    int count = min(kWarp, mine - u0);
    for (int uu = 0; uu < count; ++uu) {
      float dsu = __shfl_sync(0xffffffffu, ds, uu);
      const float *ku = k + (((int64_t)b * S + u0 + uu) * K + j) * HD;
      for (int e = 0; e < PER; ++e) {
        int d = lane + e * kWarp;
        if (d < HD)
          acc[e] += dsu * ku[d];
      }
    }
  }
  for (int e = 0; e < PER; ++e) {
    int d = lane + e * kWarp;
    if (d < HD)
      dq[base + d] = acc[e] * scale;
  }
}

/// dk[u] = scale · Σ_{h in group, t} ds_tu q_t, dv[u] = Σ p_tu dy_t: one
/// warp per key row of one kv head, queries one per lane (no atomics).
template <int HD>
__global__ void attentionGradKV(const float *__restrict__ q,
                                const float *__restrict__ k,
                                const float *__restrict__ v,
                                const float *__restrict__ dy,
                                const float *__restrict__ lse,
                                const float *__restrict__ delta,
                                float *__restrict__ dk, float *__restrict__ dv,
                                int T, int S, int H, int K, bool causal,
                                const int32_t *offsetPtr) {
  constexpr int PER = (HD + kWarp - 1) / kWarp;
  __shared__ float ks[kAttnWarps][HD], vs[kAttnWarps][HD];
  int b = blockIdx.z, j = blockIdx.y;
  int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int u = blockIdx.x * kAttnWarps + warp;
  if (u >= S)
    return;
  int offset = offsetPtr ? *offsetPtr : S - T;
  const float scale = rsqrtf((float)HD);
  int64_t kvBase = (((int64_t)b * S + u) * K + j) * HD;
  for (int d = lane; d < HD; d += kWarp) {
    ks[warp][d] = k[kvBase + d];
    vs[warp][d] = v[kvBase + d];
  }
  __syncwarp();
  float dkAcc[PER], dvAcc[PER];
  for (int e = 0; e < PER; ++e)
    dkAcc[e] = dvAcc[e] = 0;
  // Query t sees key u when u <= t + offset: t >= u - offset.
  int tFirst = causal ? max(0, u - offset) : 0;
  int group = H / K;
  for (int hh = 0; hh < group; ++hh) {
    int h = j * group + hh;
    for (int t0 = tFirst; t0 < T; t0 += kWarp) {
      int t = t0 + lane;
      float p = 0, ds = 0;
      if (t < T) {
        const float *qt = q + (((int64_t)b * T + t) * H + h) * HD;
        const float *dyt = dy + (((int64_t)b * T + t) * H + h) * HD;
        float s = 0, dp = 0;
#pragma unroll 8
        for (int d = 0; d < HD; ++d) {
          s += qt[d] * ks[warp][d];
          dp += dyt[d] * vs[warp][d];
        }
        s *= scale;
        p = __expf(s - lse[((int64_t)b * H + h) * T + t]);
        ds = p * (dp - delta[((int64_t)b * H + h) * T + t]);
      }
      int count = min(kWarp, T - t0);
      for (int tt = 0; tt < count; ++tt) {
        float pt = __shfl_sync(0xffffffffu, p, tt);
        float dst = __shfl_sync(0xffffffffu, ds, tt);
        const float *qt = q + (((int64_t)b * T + t0 + tt) * H + h) * HD;
        const float *dyt = dy + (((int64_t)b * T + t0 + tt) * H + h) * HD;
        for (int e = 0; e < PER; ++e) {
          int d = lane + e * kWarp;
          if (d < HD) {
            dkAcc[e] += dst * qt[d];
            dvAcc[e] += pt * dyt[d];
          }
        }
      }
    }
  }
  for (int e = 0; e < PER; ++e) {
    int d = lane + e * kWarp;
    if (d < HD) {
      dk[kvBase + d] = dkAcc[e] * scale;
      dv[kvBase + d] = dvAcc[e];
    }
  }
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

__device__ __forceinline__ float sigmoidf(float z) {
  return 1.f / (1.f + __expf(-z));
}

__global__ void swiglu(const float *__restrict__ g, const float *__restrict__ u,
                       float *__restrict__ y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = g[i] * sigmoidf(g[i]) * u[i];
}

__global__ void swigluGrad(const float *__restrict__ g,
                           const float *__restrict__ u,
                           const float *__restrict__ dy,
                           float *__restrict__ dg, float *__restrict__ du,
                           int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n)
    return;
  float z = g[i], s = sigmoidf(z), d = dy[i];
  float dgi = d * u[i] * s * (1 + z * (1 - s));
  float dui = d * z * s;
  dg[i] = dgi; // dg may alias g, du may alias u: read before writing
  du[i] = dui;
}

__device__ __forceinline__ float geluf(float z) {
  return 0.5f * z * (1.f + erff(z * 0.70710678118654752f));
}
__device__ __forceinline__ float geluDerivf(float z) {
  // Φ(z) + z φ(z)
  return 0.5f * (1.f + erff(z * 0.70710678118654752f)) +
         z * 0.39894228040143268f * __expf(-0.5f * z * z);
}

/// y = gelu(x) (+ residual when given).
__global__ void gelu(const float *__restrict__ x,
                     const float *__restrict__ residual, float *__restrict__ y,
                     int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = geluf(x[i]) + (residual ? residual[i] : 0.f);
}

/// dx = gelu'(x) · dy.
__global__ void geluGrad(const float *__restrict__ x,
                         const float *__restrict__ dy, float *__restrict__ dx,
                         int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    dx[i] = geluDerivf(x[i]) * dy[i];
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
// `terms`, and (when dlogits is given) the gradient
// dloss/N · (softmax − onehot) in the same pass.
//===----------------------------------------------------------------------===//

__global__ void crossEntropy(const float *__restrict__ logits,
                             const int32_t *__restrict__ targets, int V,
                             float *__restrict__ terms,
                             float *__restrict__ dlogits, const float *dloss,
                             int64_t N) {
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
  if (dlogits) {
    float f = *dloss / (float)N;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
      dlogits[p * V + i] = f * (__expf(z[i] - lse) - (i == target ? 1.f : 0.f));
  }
}

/// out = Σ terms / N, in one block (deterministic).
__global__ void meanOf(const float *__restrict__ terms, int64_t N,
                       float *out) {
  __shared__ float shared[32];
  float s = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    s += terms[i];
  s = blockSum(s, shared);
  if (threadIdx.x == 0)
    *out = N ? s / (float)N : 0.f;
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

/// sumSq (a zeroed double) += Σ g² over every entry's gradient.
__global__ void sumSquares(const AdamWEntry *__restrict__ table, int entries,
                           int64_t quads, const char *__restrict__ A,
                           double *sumSq) {
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
    atomicAdd(sumSq, (double)acc);
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

/// The global norm sqrt(*sumSq) and the clip factor
/// min(1, maxNorm / (norm + 1e-6)) (1 when maxNorm <= 0).
__global__ void clipScale(const double *sumSq, double maxNorm, float *norm,
                          float *scale) {
  double n = sqrt(*sumSq);
  *norm = (float)n;
  *scale = maxNorm > 0 ? (float)fmin(1.0, maxNorm / (n + 1e-6)) : 1.f;
}

/// y = x rounded to bfloat16 (to nearest, ties to even: the reference's
/// roundBF16), the operands of a `precision: bf16` matmul.
__global__ void toBF16(const float *__restrict__ x,
                       __nv_bfloat16 *__restrict__ y, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n)
    y[i] = __float2bfloat16_rn(x[i]);
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

enum Entry { kTrainStep, kGrad, kEval, kLogits, kPrefill, kDecode, kEntries };

struct Context {
  cudaStream_t stream = nullptr;
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

/// D[m, n] (column-major, ldd = m) = alpha · op(A) · op(B) + beta · C, fp32
/// out with fp32 accumulation; A and B as `operands` says (BF16: rounded
/// into the start of the scratch buffer first). `site` names the call
/// site, whose descriptors and algorithm are kept.
inline bool matmul(Context &c, int site, bool transA, bool transB, int m,
                   int n, int k, const float *A, int lda, const float *B,
                   int ldb, const float *C, float *D, float beta,
                   Operands operands = Operands::FP32) {
  bool bf16 = operands == Operands::BF16;
  Matmul &mm = c.matmuls[site];
  const void *a = A, *b = B;
  if (bf16) {
    int64_t na = (int64_t)m * k, nb = (int64_t)k * n;
    auto *a16 = reinterpret_cast<__nv_bfloat16 *>(c.scratch);
    auto *b16 = a16 + (na + 63) / 64 * 64;
    toBF16<<<blocksFor(na, 256), 256, 0, c.stream>>>(A, a16, na);
    toBF16<<<blocksFor(nb, 256), 256, 0, c.stream>>>(B, b16, nb);
    if (!launched(c, "bf16 operands"))
      return false;
    a = a16;
    b = b16;
  }
  cudaDataType_t in = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  if (!mm.ready) {
    cublasOperation_t ta = transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                      tb = transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasComputeType_t compute = operands == Operands::TF32
                                      ? CUBLAS_COMPUTE_32F_FAST_TF32
                                      : CUBLAS_COMPUTE_32F;
    if (!checkLt(c, cublasLtMatmulDescCreate(&mm.desc, compute, CUDA_R_32F),
                 "cublasLtMatmulDescCreate") ||
        !checkLt(c, cublasLtMatmulDescSetAttribute(
                        mm.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
                 "transa") ||
        !checkLt(c, cublasLtMatmulDescSetAttribute(
                        mm.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
                 "transb") ||
        !checkLt(c, cublasLtMatrixLayoutCreate(&mm.a, in,
                                               transA ? k : m, transA ? m : k,
                                               lda),
                 "layout A") ||
        !checkLt(c, cublasLtMatrixLayoutCreate(&mm.b, in,
                                               transB ? n : k, transB ? k : n,
                                               ldb),
                 "layout B") ||
        !checkLt(c, cublasLtMatrixLayoutCreate(&mm.c, CUDA_R_32F, m, n, m),
                 "layout C"))
      return false;
    cublasLtMatmulPreference_t pref;
    if (!checkLt(c, cublasLtMatmulPreferenceCreate(&pref), "preference"))
      return false;
    cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c.workspaceSize,
        sizeof c.workspaceSize);
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(
        c.lt, mm.desc, mm.a, mm.b, mm.c, mm.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (!checkLt(c, s, "cublasLtMatmulAlgoGetHeuristic"))
      return false;
    if (found == 0) {
      c.error = "cuBLASLt has no algorithm for a " + std::to_string(m) + "x" +
                std::to_string(n) + "x" + std::to_string(k) + " matmul";
      return false;
    }
    mm.algo = result.algo;
    mm.ready = true;
  }
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

/// Opens a context: the device (STLM_CUDA_DEVICE or 0), a stream, cuBLASLt,
/// and zeroed device memory for weights, arena, scratch and scalars, with
/// the constant scalars uploaded. Returns null with `error` set on failure.
inline Context *open(int64_t weightsSize, int64_t arenaSize,
                     int64_t scratchSize, int64_t scalarSize,
                     const void *scalarInit, size_t inCount, size_t outCount,
                     size_t matmulSites, std::string &error) {
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
    delete c; // memory goes with the process's context
    return nullptr;
  };
  if ((e = cudaSetDevice(c->device)) != cudaSuccess)
    return fail("cudaSetDevice", e);
  if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) !=
      cudaSuccess)
    return fail("cudaStreamCreate", e);
  if (cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
    error = "cannot create a cuBLASLt handle";
    delete c;
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
      (e = alloc(&c->workspace, c->workspaceSize)) != cudaSuccess ||
      (e = alloc((void **)&c->in, inCount * 4 + 64)) != cudaSuccess)
    return fail("cannot allocate device memory", e);
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
  if (const char *p = std::getenv("STLM_CUDA_PROFILE"))
    c->profiling = std::atoi(p) != 0;
  return c;
}

inline void close(Context *c) {
  if (!c)
    return;
  cudaStreamSynchronize(c->stream);
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
    if (m.ready) {
      cublasLtMatmulDescDestroy(m.desc);
      cublasLtMatrixLayoutDestroy(m.a);
      cublasLtMatrixLayoutDestroy(m.b);
      cublasLtMatrixLayoutDestroy(m.c);
    }
  cudaFree(c->weights);
  cudaFree(c->arena);
  cudaFree(c->scratch);
  cudaFree(c->scalars);
  cudaFree(c->workspace);
  cudaFree(c->in);
  cudaFreeHost(c->hostIn);
  cudaFreeHost(c->hostOut);
  if (c->lt)
    cublasLtDestroy(c->lt);
  if (c->stream)
    cudaStreamDestroy(c->stream);
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
    bool ok = check(c, cudaMemcpyAsync(c.in, c.hostIn, at * 4,
                                       cudaMemcpyHostToDevice, c.stream),
                    "input upload") &&
              body(c) &&
              (nOut == 0 ||
               check(c, cudaMemcpyAsync(c.hostOut, result, nOut * 4,
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
    bool ok = check(c, cudaMemcpyAsync(c.in, c.hostIn, at * 4,
                                       cudaMemcpyHostToDevice, c.stream),
                    "input upload") &&
              body(c) &&
              (nOut == 0 ||
               check(c, cudaMemcpyAsync(c.hostOut, result, nOut * 4,
                                        cudaMemcpyDeviceToHost, c.stream),
                     "result download"));
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(c.stream, &graph);
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
