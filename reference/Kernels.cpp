//===- Kernels.cpp - reference kernels: plain loops, forward and backward -===//
//
// One plain loop nest per op and per gradient, following the ODS
// descriptions in dialects/STLM/IR/STLMOps.td. Clarity beats speed; the only
// concession to speed is the i-k-j order of the matrix products (the inner
// loop runs along contiguous rows), so a small model trains in reasonable
// time on top of these kernels.
//
// Accumulation: every sum (dot products, means, softmax normalisers,
// gradients summed over rows or heads) is carried in double, in the float
// instantiation too. It costs nothing in clarity, and it makes the float
// results differ from the double ones by little more than the rounding of
// inputs and outputs. Values are converted to T only when they are stored.
//
//===----------------------------------------------------------------------===//

#include "reference/Kernels.h"

#include "support/Hash.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <vector>

namespace stlm::ref {

namespace {

/// The type every sum is accumulated in (see the file comment).
using Acc = double;

/// The pad byte of `stlm.chunk` and `stlm.pool masked_mean`.
constexpr int32_t kPadByte = 256;

/// Copies accumulated values into the output array.
template <typename T>
void store(const std::vector<Acc> &from, T *to) {
  for (size_t i = 0; i < from.size(); ++i)
    to[i] = static_cast<T>(from[i]);
}

/// log Σ_v exp(scale · z[v]), computed stably by subtracting the maximum.
template <typename T>
Acc logSumExp(const T *z, int64_t V, double scale) {
  Acc m = -INFINITY;
  for (int64_t v = 0; v < V; ++v)
    m = std::max(m, scale * static_cast<Acc>(z[v]));
  Acc sum = 0;
  for (int64_t v = 0; v < V; ++v)
    sum += std::exp(scale * static_cast<Acc>(z[v]) - m);
  return m + std::log(sum);
}

/// logp[v] = log softmax(scale · z)[v].
template <typename T>
std::vector<Acc> logSoftmax(const T *z, int64_t V, double scale) {
  Acc lse = logSumExp(z, V, scale);
  std::vector<Acc> logp(V);
  for (int64_t v = 0; v < V; ++v)
    logp[v] = scale * static_cast<Acc>(z[v]) - lse;
  return logp;
}

/// p[v] = softmax(scale · z)[v].
template <typename T>
std::vector<Acc> softmax(const T *z, int64_t V, double scale) {
  std::vector<Acc> p = logSoftmax(z, V, scale);
  for (Acc &x : p)
    x = std::exp(x);
  return p;
}

/// ASCII whitespace (space, \t \n \v \f \r) or ASCII punctuation (C's
/// ispunct in the "C" locale), spelled out so no locale is involved.
bool isWordBoundaryByte(int32_t b) {
  // MODEL_SPEC: every ASCII byte that is not a letter or digit (whitespace,
  // punctuation, control bytes); bytes >= 128 never start a chunk.
  bool alnum = (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') ||
               (b >= 'a' && b <= 'z');
  return b >= 0 && b < 128 && !alnum;
}

/// The logistic function, stable for large |z|.
Acc sigmoid(Acc z) {
  if (z >= 0)
    return 1 / (1 + std::exp(-z));
  Acc e = std::exp(z);
  return e / (1 + e);
}

/// The softmax weights of one attention query (batch b, query head h, query
/// row t) over its visible keys 0 … p.size()−1; empty if no key is visible.
template <typename T>
std::vector<Acc> attentionWeights(bool causal, const T *q, const T *k,
                                  int64_t b, int64_t t, int64_t h, int64_t j,
                                  int64_t Tq, int64_t S, int64_t H, int64_t K,
                                  int64_t hd, int64_t offset) {
  // Keys 0 … last are visible.
  int64_t last = causal ? std::min(S - 1, t + offset) : S - 1;
  if (last < 0)
    return {};
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const T *qRow = q + ((b * Tq + t) * H + h) * hd;
  std::vector<Acc> s(last + 1);
  for (int64_t u = 0; u <= last; ++u) {
    const T *kRow = k + ((b * S + u) * K + j) * hd;
    Acc dot = 0;
    for (int64_t d = 0; d < hd; ++d)
      dot += static_cast<Acc>(qRow[d]) * kRow[d];
    s[u] = dot * scale;
  }
  // Stable softmax over the visible keys.
  Acc m = *std::max_element(s.begin(), s.end());
  Acc sum = 0;
  for (Acc &x : s) {
    x = std::exp(x - m);
    sum += x;
  }
  for (Acc &x : s)
    x /= sum;
  return s;
}

} // namespace

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

template <typename T>
bool embed(const T *table, int64_t V, int64_t D, const int32_t *ids,
           int64_t N, T *out, int64_t *badIndex) {
  for (int64_t n = 0; n < N; ++n) {
    int32_t id = ids[n];
    if (id < 0 || id >= V) {
      if (badIndex)
        *badIndex = n;
      return false;
    }
    for (int64_t d = 0; d < D; ++d)
      out[n * D + d] = table[id * D + d];
  }
  return true;
}

template <typename T>
void embedBackward(const int32_t *ids, int64_t N, int64_t V, int64_t D,
                   const T *dout, T *dtable) {
  std::vector<Acc> acc(V * D, 0);
  for (int64_t n = 0; n < N; ++n) {
    assert(ids[n] >= 0 && ids[n] < V && "embedBackward: invalid id");
    for (int64_t d = 0; d < D; ++d)
      acc[ids[n] * D + d] += dout[n * D + d];
  }
  store(acc, dtable);
}

//===----------------------------------------------------------------------===//
// Byte chunking and pooling
//===----------------------------------------------------------------------===//

bool chunk(ChunkMode mode, const int32_t *bytes, int64_t B, int64_t N,
           int64_t stride, int64_t C, int64_t L, int32_t *chunks,
           int32_t *count) {
  assert(L >= 1 && C >= 0);
  assert(mode != ChunkMode::Fixed || (stride >= 1 && stride <= L));
  for (int64_t i = 0; i < B * N; ++i) {
    int32_t v = bytes[i];
    bool flagged = mode == ChunkMode::Given && v >= kChunkStartFlag &&
                   v < kChunkStartFlag + 256;
    if (!flagged && (v < 0 || v > kPadByte))
      return false;
  }

  std::fill(chunks, chunks + B * C * L, kPadByte);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t *row = bytes + b * N;
    int64_t c = -1;   // The chunk being filled.
    int64_t fill = 0; // Bytes already in chunk c.
    for (int64_t i = 0; i < N; ++i) {
      if (row[i] == kPadByte) // no byte: the row's text ended
        break;
      int32_t byte = row[i] & (kChunkStartFlag - 1);
      bool start = i == 0 || fill == L;
      switch (mode) {
      case ChunkMode::Fixed:
        start = start || i % stride == 0;
        break;
      case ChunkMode::Words:
        start = start || isWordBoundaryByte(row[i]);
        break;
      case ChunkMode::Given:
        start = start || row[i] >= kChunkStartFlag;
        break;
      }
      if (start) {
        ++c;
        fill = 0;
        if (c == C) // Out of capacity: the rest of the row is dropped.
          break;
      }
      chunks[(b * C + c) * L + fill] = byte;
      ++fill;
    }
    count[b] = static_cast<int32_t>(std::min(c + 1, C));
  }
  return true;
}

void chunkTargets(const int32_t *chunks, int64_t B, int64_t C, int64_t L,
                  const int32_t *count, bool next, bool maskPad,
                  int32_t *targets, uint8_t *counted) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      int64_t src = next ? c + 1 : c;
      int64_t limit = count ? std::min<int64_t>(count[b], C) : C;
      for (int64_t s = 0; s < L; ++s) {
        int64_t at = (b * C + c) * L + s;
        targets[at] = 0;
        counted[at] = 0;
        if (src >= limit)
          continue;
        const int32_t *chunk = chunks + (b * C + src) * L;
        targets[at] = chunk[s];
        // With maskPad: the real bytes and the end marker (the first pad
        // after them; an all-pad chunk has none).
        counted[at] = !maskPad || chunk[s] != kPadByte ||
                      (s > 0 && chunk[s - 1] != kPadByte);
      }
    }
}

int64_t chunkRealBytes(const int32_t *chunks, int64_t B, int64_t C,
                       int64_t L, const int32_t *count, bool next) {
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t limit = count ? std::min<int64_t>(count[b], C) : C;
    for (int64_t c = next ? 1 : 0; c < limit; ++c)
      for (int64_t s = 0; s < L; ++s)
        n += chunks[(b * C + c) * L + s] != kPadByte;
  }
  return n;
}

template <typename T>
void pool(PoolKind kind, const T *x, const int32_t *ids, int64_t R, int64_t L,
          int64_t D, T *out) {
  assert((kind == PoolKind::MaskedMean) == (ids != nullptr));
  for (int64_t r = 0; r < R; ++r) {
    const T *xr = x + r * L * D;
    for (int64_t d = 0; d < D; ++d) {
      Acc result = 0;
      switch (kind) {
      case PoolKind::Mean: {
        Acc sum = 0;
        for (int64_t s = 0; s < L; ++s)
          sum += xr[s * D + d];
        result = sum / L;
        break;
      }
      case PoolKind::MaskedMean: {
        Acc sum = 0;
        int64_t n = 0;
        for (int64_t s = 0; s < L; ++s) {
          if (ids[r * L + s] == kPadByte)
            continue;
          sum += xr[s * D + d];
          ++n;
        }
        result = n ? sum / n : 0; // A chunk with no byte gives 0.
        break;
      }
      case PoolKind::Max: {
        result = xr[d];
        for (int64_t s = 1; s < L; ++s)
          result = std::max<Acc>(result, xr[s * D + d]);
        break;
      }
      }
      out[r * D + d] = static_cast<T>(result);
    }
  }
}

template <typename T>
void poolBackward(PoolKind kind, const T *x, const int32_t *ids, int64_t R,
                  int64_t L, int64_t D, const T *dout, T *dx) {
  assert((kind == PoolKind::MaskedMean) == (ids != nullptr));
  std::fill(dx, dx + R * L * D, T(0));
  for (int64_t r = 0; r < R; ++r) {
    const T *xr = x + r * L * D;
    T *dxr = dx + r * L * D;
    switch (kind) {
    case PoolKind::Mean:
      for (int64_t s = 0; s < L; ++s)
        for (int64_t d = 0; d < D; ++d)
          dxr[s * D + d] = static_cast<T>(static_cast<Acc>(dout[r * D + d]) / L);
      break;
    case PoolKind::MaskedMean: {
      int64_t n = 0;
      for (int64_t s = 0; s < L; ++s)
        n += ids[r * L + s] != kPadByte;
      if (n == 0) // All pad: the output is the constant 0.
        break;
      for (int64_t s = 0; s < L; ++s) {
        if (ids[r * L + s] == kPadByte)
          continue;
        for (int64_t d = 0; d < D; ++d)
          dxr[s * D + d] = static_cast<T>(static_cast<Acc>(dout[r * D + d]) / n);
      }
      break;
    }
    case PoolKind::Max:
      for (int64_t d = 0; d < D; ++d) {
        // The first maximal slot: only a strictly larger value moves it.
        int64_t best = 0;
        for (int64_t s = 1; s < L; ++s)
          if (xr[s * D + d] > xr[best * D + d])
            best = s;
        dxr[best * D + d] = dout[r * D + d];
      }
      break;
    }
  }
}

//===----------------------------------------------------------------------===//
// Core layers
//===----------------------------------------------------------------------===//

template <typename T>
void rmsnorm(const T *x, const T *g, int64_t R, int64_t D, double eps, T *y) {
  for (int64_t r = 0; r < R; ++r) {
    const T *xr = x + r * D;
    Acc sumSq = 0;
    for (int64_t d = 0; d < D; ++d)
      sumSq += static_cast<Acc>(xr[d]) * xr[d];
    Acc inv = 1 / std::sqrt(sumSq / D + eps);
    for (int64_t d = 0; d < D; ++d)
      y[r * D + d] = static_cast<T>(xr[d] * inv * g[d]);
  }
}

template <typename T>
void rmsnormBackward(const T *x, const T *g, int64_t R, int64_t D, double eps,
                     const T *dy, T *dx, T *dg) {
  // With s = (mean(x²) + eps)^(-1/2) and y_d = x_d · s · g_d:
  //   dg_d = Σ_r dy_d · x_d · s
  //   dx_d = s · g_d · dy_d − s³ / D · x_d · Σ_e dy_e · g_e · x_e
  std::vector<Acc> dgAcc(D, 0);
  for (int64_t r = 0; r < R; ++r) {
    const T *xr = x + r * D;
    const T *dyr = dy + r * D;
    Acc sumSq = 0;
    for (int64_t d = 0; d < D; ++d)
      sumSq += static_cast<Acc>(xr[d]) * xr[d];
    Acc s = 1 / std::sqrt(sumSq / D + eps);
    Acc dot = 0; // Σ_e dy_e · g_e · x_e
    for (int64_t e = 0; e < D; ++e)
      dot += static_cast<Acc>(dyr[e]) * g[e] * xr[e];
    for (int64_t d = 0; d < D; ++d) {
      dx[r * D + d] =
          static_cast<T>(s * g[d] * dyr[d] - s * s * s / D * xr[d] * dot);
      dgAcc[d] += static_cast<Acc>(dyr[d]) * xr[d] * s;
    }
  }
  store(dgAcc, dg);
}

template <typename T>
void linear(const T *x, const T *w, int64_t R, int64_t In, int64_t Out, T *y) {
  // y[r, o] = Σ_i x[r, i] · w[o, i]: both rows are contiguous along i.
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < Out; ++o) {
      Acc sum = 0;
      for (int64_t i = 0; i < In; ++i)
        sum += static_cast<Acc>(x[r * In + i]) * w[o * In + i];
      y[r * Out + o] = static_cast<T>(sum);
    }
}

template <typename T>
void linearBackward(const T *x, const T *w, int64_t R, int64_t In,
                    int64_t Out, const T *dy, T *dx, T *dw) {
  // dx[r, :] = Σ_o dy[r, o] · w[o, :]   (i-k-j order: inner loop along rows)
  std::vector<Acc> dxRow(In);
  for (int64_t r = 0; r < R; ++r) {
    std::fill(dxRow.begin(), dxRow.end(), 0);
    for (int64_t o = 0; o < Out; ++o) {
      Acc d = dy[r * Out + o];
      for (int64_t i = 0; i < In; ++i)
        dxRow[i] += d * w[o * In + i];
    }
    for (int64_t i = 0; i < In; ++i)
      dx[r * In + i] = static_cast<T>(dxRow[i]);
  }
  // dw[o, :] = Σ_r dy[r, o] · x[r, :]
  std::vector<Acc> dwAcc(Out * In, 0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < Out; ++o) {
      Acc d = dy[r * Out + o];
      for (int64_t i = 0; i < In; ++i)
        dwAcc[o * In + i] += d * x[r * In + i];
    }
  store(dwAcc, dw);
}

template <typename T>
void lowrank(const T *x, const T *a, const T *b, int64_t R, int64_t In,
             int64_t K, int64_t Out, T *y) {
  // h = x · aᵀ ([R, K]) is kept in T, as the composition of two linears.
  std::vector<T> h(R * K);
  linear(x, a, R, In, K, h.data());
  linear(h.data(), b, R, K, Out, y);
}

template <typename T>
void lowrankBackward(const T *x, const T *a, const T *b, int64_t R,
                     int64_t In, int64_t K, int64_t Out, const T *dy, T *dx,
                     T *da, T *db) {
  // Forward again for h, then back through the two linears.
  std::vector<T> h(R * K), dh(R * K);
  linear(x, a, R, In, K, h.data());
  linearBackward(h.data(), b, R, K, Out, dy, dh.data(), db);
  linearBackward(x, a, R, In, K, dh.data(), dx, da);
}

template <typename T>
void lowrankMerge(const T *w, const T *a, const T *b, int64_t Out, int64_t In,
                  int64_t K, T *y) {
  for (int64_t o = 0; o < Out; ++o)
    for (int64_t i = 0; i < In; ++i) {
      Acc sum = 0;
      for (int64_t k = 0; k < K; ++k)
        sum += static_cast<Acc>(b[o * K + k]) * a[k * In + i];
      y[o * In + i] = static_cast<T>(w[o * In + i] + sum);
    }
}

template <typename T>
void lowrankMergeBackward(const T *g, const T *a, const T *b, int64_t Out,
                          int64_t In, int64_t K, T *da, T *db) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < In; ++i) {
      Acc sum = 0; // Σ_o b[o, k] · g[o, i]
      for (int64_t o = 0; o < Out; ++o)
        sum += static_cast<Acc>(b[o * K + k]) * g[o * In + i];
      da[k * In + i] = static_cast<T>(sum);
    }
  for (int64_t o = 0; o < Out; ++o)
    for (int64_t k = 0; k < K; ++k) {
      Acc sum = 0; // Σ_i g[o, i] · a[k, i]
      for (int64_t i = 0; i < In; ++i)
        sum += static_cast<Acc>(g[o * In + i]) * a[k * In + i];
      db[o * K + k] = static_cast<T>(sum);
    }
}

/// Rotates each adjacent pair (2i, 2i+1) of every head of every row by
/// sign · p · θ_i, p the row's absolute position: RoPE for sign = +1, its
/// transpose (the gradient) for sign = −1.
template <typename T>
static void rotatePairs(const T *x, int64_t Bt, int64_t Tn, int64_t W,
                        int64_t hd, double theta, int64_t offset, double sign,
                        T *y) {
  assert(hd > 0 && hd % 2 == 0 && W % hd == 0);
  for (int64_t b = 0; b < Bt; ++b)
    for (int64_t t = 0; t < Tn; ++t) {
      double p = static_cast<double>(t + offset);
      const T *xr = x + (b * Tn + t) * W;
      T *yr = y + (b * Tn + t) * W;
      for (int64_t h = 0; h < W / hd; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          double angle = sign * p * std::pow(theta, -2.0 * i / hd);
          double c = std::cos(angle), s = std::sin(angle);
          double xa = xr[h * hd + 2 * i], xb = xr[h * hd + 2 * i + 1];
          yr[h * hd + 2 * i] = static_cast<T>(xa * c - xb * s);
          yr[h * hd + 2 * i + 1] = static_cast<T>(xa * s + xb * c);
        }
    }
}

template <typename T>
void rope(const T *x, int64_t Bt, int64_t Tn, int64_t W, int64_t hd,
          double theta, int64_t offset, T *y) {
  rotatePairs(x, Bt, Tn, W, hd, theta, offset, +1.0, y);
}

template <typename T>
void ropeBackward(const T *dy, int64_t Bt, int64_t Tn, int64_t W, int64_t hd,
                  double theta, int64_t offset, T *dx) {
  // The forward map is a rotation by +angle; its transpose is the rotation
  // by −angle.
  rotatePairs(dy, Bt, Tn, W, hd, theta, offset, -1.0, dx);
}

// A query that sees no key (causal with t + offset < 0) has an empty softmax;
// its output is defined as 0, with no gradient.
template <typename T>
void attention(bool causal, const T *q, const T *k, const T *v, int64_t Bt,
               int64_t Tq, int64_t S, int64_t H, int64_t K, int64_t hd,
               int64_t offset, T *y) {
  assert(K > 0 && H % K == 0);
  const int64_t group = H / K;
  std::vector<Acc> out(hd);
  for (int64_t b = 0; b < Bt; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t j = h / group;
      for (int64_t t = 0; t < Tq; ++t) {
        std::vector<Acc> p =
            attentionWeights(causal, q, k, b, t, h, j, Tq, S, H, K, hd, offset);
        std::fill(out.begin(), out.end(), 0);
        for (size_t u = 0; u < p.size(); ++u) {
          const T *vRow = v + ((b * S + u) * K + j) * hd;
          for (int64_t d = 0; d < hd; ++d)
            out[d] += p[u] * vRow[d];
        }
        T *yRow = y + ((b * Tq + t) * H + h) * hd;
        for (int64_t d = 0; d < hd; ++d)
          yRow[d] = static_cast<T>(out[d]);
      }
    }
}

template <typename T>
void attentionBackward(bool causal, const T *q, const T *k, const T *v,
                       int64_t Bt, int64_t Tq, int64_t S, int64_t H,
                       int64_t K, int64_t hd, int64_t offset, const T *dy,
                       T *dq, T *dk, T *dv) {
  // Per query: y = Σ_u p_u v_u, p = softmax(s), s_u = q · k_u / sqrt(hd).
  //   dv_u += p_u · dy
  //   dp_u  = dy · v_u
  //   ds_u  = p_u · (dp_u − Σ_w p_w dp_w)
  //   dq    = Σ_u ds_u · k_u / sqrt(hd)
  //   dk_u += ds_u · q / sqrt(hd)
  // dk and dv sum over the H/K query heads sharing a kv head.
  assert(K > 0 && H % K == 0);
  const int64_t group = H / K;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<Acc> dqAcc(Bt * Tq * H * hd, 0);
  std::vector<Acc> dkAcc(Bt * S * K * hd, 0), dvAcc(Bt * S * K * hd, 0);
  for (int64_t b = 0; b < Bt; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t j = h / group;
      for (int64_t t = 0; t < Tq; ++t) {
        std::vector<Acc> p =
            attentionWeights(causal, q, k, b, t, h, j, Tq, S, H, K, hd, offset);
        const int64_t qBase = ((b * Tq + t) * H + h) * hd;
        std::vector<Acc> dp(p.size());
        Acc pdp = 0; // Σ_w p_w dp_w
        for (size_t u = 0; u < p.size(); ++u) {
          const int64_t kvBase = ((b * S + u) * K + j) * hd;
          Acc dot = 0;
          for (int64_t d = 0; d < hd; ++d) {
            dot += static_cast<Acc>(dy[qBase + d]) * v[kvBase + d];
            dvAcc[kvBase + d] += p[u] * dy[qBase + d];
          }
          dp[u] = dot;
          pdp += p[u] * dot;
        }
        for (size_t u = 0; u < p.size(); ++u) {
          const int64_t kvBase = ((b * S + u) * K + j) * hd;
          Acc ds = p[u] * (dp[u] - pdp);
          for (int64_t d = 0; d < hd; ++d) {
            dqAcc[qBase + d] += ds * scale * k[kvBase + d];
            dkAcc[kvBase + d] += ds * scale * q[qBase + d];
          }
        }
      }
    }
  store(dqAcc, dq);
  store(dkAcc, dk);
  store(dvAcc, dv);
}

template <typename T>
void swiglu(const T *g, const T *u, int64_t n, T *y) {
  for (int64_t i = 0; i < n; ++i) {
    Acc z = g[i];
    y[i] = static_cast<T>(z * sigmoid(z) * u[i]);
  }
}

template <typename T>
void swigluBackward(const T *g, const T *u, int64_t n, const T *dy, T *dg,
                    T *du) {
  // silu(z) = z σ(z), silu'(z) = σ(z) (1 + z (1 − σ(z))).
  for (int64_t i = 0; i < n; ++i) {
    Acc z = g[i], sg = sigmoid(z);
    dg[i] = static_cast<T>(static_cast<Acc>(dy[i]) * u[i] * sg *
                           (1 + z * (1 - sg)));
    du[i] = static_cast<T>(static_cast<Acc>(dy[i]) * z * sg);
  }
}

template <typename T>
void gelu(const T *x, int64_t n, T *y) {
  for (int64_t i = 0; i < n; ++i) {
    Acc z = x[i];
    y[i] = static_cast<T>(z * 0.5 * (1 + std::erf(z / std::sqrt(2.0))));
  }
}

template <typename T>
void geluBackward(const T *x, int64_t n, const T *dy, T *dx) {
  // gelu'(z) = Φ(z) + z φ(z), Φ the normal CDF and φ its density.
  const double invSqrt2Pi = 0.398942280401432677939946059934; // 1/sqrt(2π)
  for (int64_t i = 0; i < n; ++i) {
    Acc z = x[i];
    Acc cdf = 0.5 * (1 + std::erf(z / std::sqrt(2.0)));
    Acc pdf = invSqrt2Pi * std::exp(-0.5 * z * z);
    dx[i] = static_cast<T>(static_cast<Acc>(dy[i]) * (cdf + z * pdf));
  }
}

template <typename T>
void sumLeading(const T *dy, int64_t R, int64_t X, T *out) {
  std::vector<Acc> acc(X, 0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < X; ++j)
      acc[j] += dy[r * X + j];
  store(acc, out);
}

//===----------------------------------------------------------------------===//
// Objectives
//===----------------------------------------------------------------------===//

template <typename T>
bool crossEntropy(const T *logits, const int32_t *targets, const bool *counted,
                  int64_t P, int64_t V, T *loss, int64_t *badIndex) {
  Acc total = 0;
  int64_t n = 0;
  for (int64_t p = 0; p < P; ++p) {
    if (counted && !counted[p])
      continue;
    int32_t target = targets[p];
    if (target < 0 || target >= V) {
      if (badIndex)
        *badIndex = p;
      return false;
    }
    const T *z = logits + p * V;
    total += logSumExp(z, V, 1.0) - static_cast<Acc>(z[target]);
    ++n;
  }
  *loss = static_cast<T>(n ? total / n : 0);
  return true;
}

template <typename T>
void crossEntropyBackward(const T *logits, const int32_t *targets,
                          const bool *counted, int64_t P, int64_t V, T dloss,
                          T *dlogits) {
  int64_t n = 0;
  for (int64_t p = 0; p < P; ++p)
    n += !counted || counted[p];
  std::fill(dlogits, dlogits + P * V, T(0));
  if (n == 0)
    return;
  const Acc factor = static_cast<Acc>(dloss) / n;
  for (int64_t p = 0; p < P; ++p) {
    if (counted && !counted[p])
      continue;
    assert(targets[p] >= 0 && targets[p] < V);
    std::vector<Acc> prob = softmax(logits + p * V, V, 1.0);
    prob[targets[p]] -= 1;
    for (int64_t v = 0; v < V; ++v)
      dlogits[p * V + v] = static_cast<T>(factor * prob[v]);
  }
}

template <typename T>
bool distill(const T *logits, const T *teacher, const int32_t *targets,
             int64_t P, int64_t V, double temperature, double alpha, T *loss,
             int64_t *badIndex) {
  // Every target is checked, also when alpha = 1 makes the CE term vanish.
  const double tau = temperature;
  Acc total = 0;
  for (int64_t p = 0; p < P; ++p) {
    int32_t target = targets[p];
    if (target < 0 || target >= V) {
      if (badIndex)
        *badIndex = p;
      return false;
    }
    const T *z = logits + p * V;
    std::vector<Acc> logP = logSoftmax(teacher + p * V, V, 1 / tau);
    std::vector<Acc> logQ = logSoftmax(z, V, 1 / tau);
    Acc kl = 0;
    for (int64_t v = 0; v < V; ++v) {
      Acc pv = std::exp(logP[v]);
      if (pv > 0) // 0 · log 0 = 0
        kl += pv * (logP[v] - logQ[v]);
    }
    Acc ce = logSumExp(z, V, 1.0) - static_cast<Acc>(z[target]);
    total += alpha * tau * tau * kl + (1 - alpha) * ce;
  }
  *loss = static_cast<T>(P ? total / P : 0);
  return true;
}

template <typename T>
void distillBackward(const T *logits, const T *teacher,
                     const int32_t *targets, int64_t P, int64_t V,
                     double temperature, double alpha, T dloss, T *dlogits) {
  // d KL(p ‖ softmax(z/τ)) / dz = (q − p) / τ, so the distillation term
  // contributes α · τ · (q − p); the CE term (1 − α) · (softmax(z) − onehot).
  const double tau = temperature;
  if (P == 0)
    return;
  const Acc factor = static_cast<Acc>(dloss) / P;
  for (int64_t p = 0; p < P; ++p) {
    assert(targets[p] >= 0 && targets[p] < V);
    const T *z = logits + p * V;
    std::vector<Acc> pt = softmax(teacher + p * V, V, 1 / tau);
    std::vector<Acc> qs = softmax(z, V, 1 / tau);
    std::vector<Acc> s = softmax(z, V, 1.0);
    s[targets[p]] -= 1;
    for (int64_t v = 0; v < V; ++v)
      dlogits[p * V + v] = static_cast<T>(
          factor * (alpha * tau * (qs[v] - pt[v]) + (1 - alpha) * s[v]));
  }
}

float roundBF16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) // NaN: keep it quiet and NaN
    bits |= 0x00400000u;
  else
    bits += 0x7fffu + ((bits >> 16) & 1u); // to nearest, ties to even
  bits &= 0xffff0000u;
  float y;
  std::memcpy(&y, &bits, 4);
  return y;
}

template <typename T> void roundBF16(T *x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<T>(roundBF16(static_cast<float>(x[i])));
}
template void roundBF16<float>(float *, int64_t);
template void roundBF16<double>(double *, int64_t);

void maskTokens(const int32_t *ids, int64_t n, int32_t seed, double prob,
                int64_t maskId, int32_t *masked, bool *mask) {
  const uint64_t s = static_cast<uint32_t>(seed);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t x = (s << 32) + static_cast<uint64_t>(i);
    double u = static_cast<double>(splitmix64(x) >> 40) * 0x1.0p-24;
    mask[i] = u < prob;
    masked[i] = mask[i] ? static_cast<int32_t>(maskId) : ids[i];
  }
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

template <typename T>
void adamw(T *param, const T *grad, T *m, T *v, int64_t n, double lr,
           int64_t step, double beta1, double beta2, double eps,
           double weightDecay) {
  assert(step >= 1);
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
  for (int64_t i = 0; i < n; ++i) {
    double g = grad[i];
    double m1 = beta1 * m[i] + (1 - beta1) * g;
    double v1 = beta2 * v[i] + (1 - beta2) * g * g;
    double p1 = param[i] * (1 - lr * weightDecay) -
                lr * (m1 / bc1) / (std::sqrt(v1 / bc2) + eps);
    m[i] = static_cast<T>(m1);
    v[i] = static_cast<T>(v1);
    param[i] = static_cast<T>(p1);
  }
}

//===----------------------------------------------------------------------===//
// Explicit instantiations
//===----------------------------------------------------------------------===//

#define STLM_REF_INSTANTIATE(T)                                                \
  template bool embed<T>(const T *, int64_t, int64_t, const int32_t *,         \
                         int64_t, T *, int64_t *);                             \
  template void embedBackward<T>(const int32_t *, int64_t, int64_t, int64_t,   \
                                 const T *, T *);                              \
  template void pool<T>(PoolKind, const T *, const int32_t *, int64_t,         \
                        int64_t, int64_t, T *);                                \
  template void poolBackward<T>(PoolKind, const T *, const int32_t *, int64_t, \
                                int64_t, int64_t, const T *, T *);             \
  template void rmsnorm<T>(const T *, const T *, int64_t, int64_t, double,     \
                           T *);                                               \
  template void rmsnormBackward<T>(const T *, const T *, int64_t, int64_t,     \
                                   double, const T *, T *, T *);               \
  template void linear<T>(const T *, const T *, int64_t, int64_t, int64_t,     \
                          T *);                                                \
  template void linearBackward<T>(const T *, const T *, int64_t, int64_t,      \
                                  int64_t, const T *, T *, T *);               \
  template void lowrank<T>(const T *, const T *, const T *, int64_t, int64_t,  \
                           int64_t, int64_t, T *);                             \
  template void lowrankBackward<T>(const T *, const T *, const T *, int64_t,   \
                                   int64_t, int64_t, int64_t, const T *, T *,  \
                                   T *, T *);                                  \
  template void lowrankMerge<T>(const T *, const T *, const T *, int64_t,      \
                                int64_t, int64_t, T *);                        \
  template void lowrankMergeBackward<T>(const T *, const T *, const T *,       \
                                        int64_t, int64_t, int64_t, T *, T *);  \
  template void rope<T>(const T *, int64_t, int64_t, int64_t, int64_t, double, \
                        int64_t, T *);                                         \
  template void ropeBackward<T>(const T *, int64_t, int64_t, int64_t, int64_t, \
                                double, int64_t, T *);                         \
  template void attention<T>(bool, const T *, const T *, const T *, int64_t,   \
                             int64_t, int64_t, int64_t, int64_t, int64_t,      \
                             int64_t, T *);                                    \
  template void attentionBackward<T>(                                          \
      bool, const T *, const T *, const T *, int64_t, int64_t, int64_t,        \
      int64_t, int64_t, int64_t, int64_t, const T *, T *, T *, T *);           \
  template void swiglu<T>(const T *, const T *, int64_t, T *);                 \
  template void swigluBackward<T>(const T *, const T *, int64_t, const T *,    \
                                  T *, T *);                                   \
  template void gelu<T>(const T *, int64_t, T *);                              \
  template void geluBackward<T>(const T *, int64_t, const T *, T *);           \
  template void sumLeading<T>(const T *, int64_t, int64_t, T *);               \
  template bool crossEntropy<T>(const T *, const int32_t *, const bool *,      \
                                int64_t, int64_t, T *, int64_t *);             \
  template void crossEntropyBackward<T>(                                       \
      const T *, const int32_t *, const bool *, int64_t, int64_t, T, T *);     \
  template bool distill<T>(const T *, const T *, const int32_t *, int64_t,     \
                           int64_t, double, double, T *, int64_t *);           \
  template void distillBackward<T>(const T *, const T *, const int32_t *,      \
                                   int64_t, int64_t, double, double, T, T *);  \
  template void adamw<T>(T *, const T *, T *, T *, int64_t, double, int64_t,   \
                         double, double, double, double);

STLM_REF_INSTANTIATE(float)
STLM_REF_INSTANTIATE(double)

#undef STLM_REF_INSTANTIATE

} // namespace stlm::ref
