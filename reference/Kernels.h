//===- Kernels.h - reference kernels: plain loops, forward and backward ---===//
//
// The oracle every fast path is tested against: one obviously-correct
// function per stlm op and per gradient, as plain C++ loops over row-major
// contiguous arrays. Clarity beats speed. Each function is instantiated for
// T = float (fp32) and T = double (fp64, for gradient checks); sums and dot
// products are carried in double in both, and results rounded to T once.
//
// Shapes use the dialect's letters; a leading `R` is the product of all
// leading (batch) dimensions. Outputs are written, never accumulated into,
// unless the name says `Accumulate`. Inputs and outputs never alias.
// Functions that can meet bad data (ids out of range) return false and
// leave their output unspecified; all others cannot fail.
//
// The exact math of each op is its ODS description in
// dialects/STLM/IR/STLMOps.td; the gradients are its derivatives.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_REFERENCE_KERNELS_H
#define STLM_REFERENCE_KERNELS_H

#include <cstdint>

namespace stlm::ref {

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

/// out[n, :] = table[ids[n], :]. table: [V, D], ids: [N], out: [N, D].
/// False if some id is outside [0, V); `*badIndex` (if given) is then n.
template <typename T>
bool embed(const T *table, int64_t V, int64_t D, const int32_t *ids,
           int64_t N, T *out, int64_t *badIndex = nullptr);
/// dtable = 0, then dtable[ids[n], :] += dout[n, :]. Ids must be valid.
template <typename T>
void embedBackward(const int32_t *ids, int64_t N, int64_t V, int64_t D,
                   const T *dout, T *dtable);

//===----------------------------------------------------------------------===//
// Byte chunking and pooling (`stlm.chunk`, `stlm.pool`)
//===----------------------------------------------------------------------===//

enum class ChunkMode { Fixed, Words, Given };
/// Added to a byte of Given chunking's input: a chunk starts before it.
constexpr int32_t kChunkStartFlag = 512;
/// bytes: [B, N] (0..255; 256 ends a row early; with Given also 512 + v,
/// the byte v opening a chunk) → chunks: [B, C, L] (pad 256), count: [B].
/// The rules of `stlm.chunk`. False if a value is outside those.
bool chunk(ChunkMode mode, const int32_t *bytes, int64_t B, int64_t N,
           int64_t stride, int64_t C, int64_t L, int32_t *chunks,
           int32_t *count);

/// The targets of `stlm.chunk_bytes_loss` (`next`: slot s of chunk c is
/// predicted from chunk c − 1's output, so its target is chunks[b, c+1, s])
/// and `stlm.reconstruction_loss` (chunks[b, c, s] itself), and which of
/// them count: chunks before count[b] (count may be null: all C), and with
/// `maskPad` only the real bytes and the end marker (the first pad slot
/// after them). chunks, targets, counted: [B, C, L]; targets that do not
/// count are 0.
void chunkTargets(const int32_t *chunks, int64_t B, int64_t C, int64_t L,
                  const int32_t *count, bool next, bool maskPad,
                  int32_t *targets, uint8_t *counted);
/// The real (non-pad) bytes among those targets: the bytes a chunk loss
/// predicts (bits per byte divides its summed nats by this).
int64_t chunkRealBytes(const int32_t *chunks, int64_t B, int64_t C,
                       int64_t L, const int32_t *count, bool next);

enum class PoolKind { Mean, MaskedMean, Max };
/// x: [R, L, D], ids: [R, L] (MaskedMean only, else null) → out: [R, D].
template <typename T>
void pool(PoolKind kind, const T *x, const int32_t *ids, int64_t R, int64_t L,
          int64_t D, T *out);
/// dx: [R, L, D] from dout: [R, D] (Max: all to the first maximal slot).
template <typename T>
void poolBackward(PoolKind kind, const T *x, const int32_t *ids, int64_t R,
                  int64_t L, int64_t D, const T *dout, T *dx);

//===----------------------------------------------------------------------===//
// Core layers
//===----------------------------------------------------------------------===//

/// y = x / sqrt(mean(x²) + eps) · g. x, y: [R, D], g: [D].
template <typename T>
void rmsnorm(const T *x, const T *g, int64_t R, int64_t D, double eps, T *y);
template <typename T>
void rmsnormBackward(const T *x, const T *g, int64_t R, int64_t D, double eps,
                     const T *dy, T *dx, T *dg);

/// `x` rounded to bfloat16 (8 significant bits, nearest even; NaN stays
/// NaN), as a float: the matmul inputs of `train.precision: bf16`. Every
/// product of two such values is exact in fp32.
float roundBF16(float x);
/// roundBF16 of `n` values, in place (T = double: via float).
template <typename T> void roundBF16(T *x, int64_t n);

/// y = x · wᵀ. x: [R, In], w: [Out, In], y: [R, Out].
template <typename T>
void linear(const T *x, const T *w, int64_t R, int64_t In, int64_t Out, T *y);
/// dx = dy · w ([R, In]); dw = dyᵀ · x ([Out, In]).
template <typename T>
void linearBackward(const T *x, const T *w, int64_t R, int64_t In,
                    int64_t Out, const T *dy, T *dx, T *dw);

/// y = (x · aᵀ) · bᵀ. x: [R, In], a: [K, In], b: [Out, K], y: [R, Out].
template <typename T>
void lowrank(const T *x, const T *a, const T *b, int64_t R, int64_t In,
             int64_t K, int64_t Out, T *y);
template <typename T>
void lowrankBackward(const T *x, const T *a, const T *b, int64_t R,
                     int64_t In, int64_t K, int64_t Out, const T *dy, T *dx,
                     T *da, T *db);

/// A delta merged into its weight: y = w + b · a. w, y: [Out, In], a: [K,
/// In], b: [Out, K].
template <typename T>
void lowrankMerge(const T *w, const T *a, const T *b, int64_t Out, int64_t In,
                  int64_t K, T *y);
/// Its gradient with respect to a and b, from g = the merged weight's:
/// da = bᵀ · g ([K, In]), db = g · aᵀ ([Out, K]).
template <typename T>
void lowrankMergeBackward(const T *g, const T *a, const T *b, int64_t Out,
                          int64_t In, int64_t K, T *da, T *db);

/// RoPE on x: [Bt, Tn, W] (W = heads · hd, hd even), absolute position of
/// row t = t + offset; adjacent pairs (2i, 2i+1), θ_i = theta^(-2i/hd).
/// Angles are computed in double.
template <typename T>
void rope(const T *x, int64_t Bt, int64_t Tn, int64_t W, int64_t hd,
          double theta, int64_t offset, T *y);
/// The inverse rotation applied to dy.
template <typename T>
void ropeBackward(const T *dy, int64_t Bt, int64_t Tn, int64_t W, int64_t hd,
                  double theta, int64_t offset, T *dx);

/// Multi-head attention. q: [Bt, Tq, H·hd], k, v: [Bt, S, K·hd],
/// y: [Bt, Tq, H·hd]; query head h uses kv head h / (H/K); scale
/// 1/sqrt(hd). causal: key u visible to query t iff u <= t + offset
/// (pass offset = S − Tq for the default); otherwise all keys visible.
template <typename T>
void attention(bool causal, const T *q, const T *k, const T *v, int64_t Bt,
               int64_t Tq, int64_t S, int64_t H, int64_t K, int64_t hd,
               int64_t offset, T *y);
template <typename T>
void attentionBackward(bool causal, const T *q, const T *k, const T *v,
                       int64_t Bt, int64_t Tq, int64_t S, int64_t H,
                       int64_t K, int64_t hd, int64_t offset, const T *dy,
                       T *dq, T *dk, T *dv);

/// y = silu(g) · u elementwise over n values.
template <typename T>
void swiglu(const T *g, const T *u, int64_t n, T *y);
template <typename T>
void swigluBackward(const T *g, const T *u, int64_t n, const T *dy, T *dg,
                    T *du);

/// y = x · ½ (1 + erf(x / √2)) elementwise.
template <typename T>
void gelu(const T *x, int64_t n, T *y);
template <typename T>
void geluBackward(const T *x, int64_t n, const T *dy, T *dx);

/// out[j] = Σ_r dy[r, j]: the gradient of the broadcast operand of
/// `stlm.add` (dy: [R, X], out: [X]).
template <typename T>
void sumLeading(const T *dy, int64_t R, int64_t X, T *out);

//===----------------------------------------------------------------------===//
// Objectives
//===----------------------------------------------------------------------===//

/// Mean cross-entropy in nats over the counted positions:
/// logits: [P, V], targets: [P], counted: [P] (null = all counted).
/// Returns 0 when nothing is counted. False (and *badIndex = p) if a
/// counted target is outside [0, V). Log-sum-exp is computed stably.
template <typename T>
bool crossEntropy(const T *logits, const int32_t *targets, const bool *counted,
                  int64_t P, int64_t V, T *loss, int64_t *badIndex = nullptr);
/// dlogits = dloss · (softmax − onehot) / (number counted) on counted rows,
/// 0 elsewhere.
template <typename T>
void crossEntropyBackward(const T *logits, const int32_t *targets,
                          const bool *counted, int64_t P, int64_t V, T dloss,
                          T *dlogits);

/// α τ² mean_p KL(softmax(teacher/τ) ‖ softmax(logits/τ))
///   + (1 − α) mean_p CE(logits, targets); 0·log 0 = 0.
template <typename T>
bool distill(const T *logits, const T *teacher, const int32_t *targets,
             int64_t P, int64_t V, double temperature, double alpha, T *loss,
             int64_t *badIndex = nullptr);
/// Gradient with respect to the student logits only.
template <typename T>
void distillBackward(const T *logits, const T *teacher,
                     const int32_t *targets, int64_t P, int64_t V,
                     double temperature, double alpha, T dloss, T *dlogits);

/// `stlm.mask_tokens`: ids [n] (n = B·T, row-major) → masked [n], mask [n].
void maskTokens(const int32_t *ids, int64_t n, int32_t seed, double prob,
                int64_t maskId, int32_t *masked, bool *mask);

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

/// One AdamW step in place over n values; `step` is the 1-based update
/// count. The math of `stlm.adamw` (bias-corrected, decoupled decay).
template <typename T>
void adamw(T *param, const T *grad, T *m, T *v, int64_t n, double lr,
           int64_t step, double beta1, double beta2, double eps,
           double weightDecay);

} // namespace stlm::ref

#endif // STLM_REFERENCE_KERNELS_H
