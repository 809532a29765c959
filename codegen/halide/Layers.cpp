//===- Layers.cpp - Halide generators: norms, RoPE, embedding, CE loss ----===//
//
// Row-major tensors; in Halide coordinates dimension 0 is the last (width)
// dimension. Shapes are generator parameters:
//   stlm_rmsnorm        x [R, D], g [D] -> y [R, D]
//   stlm_rmsnorm_grad   x, g, dy -> dx [R, D], dg [D]
//   stlm_rope           x [B, T, W] -> y (pairs of each head of width hd
//                       rotated by (t + offset) θ_i; `inverse` for the grad)
//   stlm_embed          table [V, D], ids [N] -> out [N, D]
//   stlm_embed_grad     ids [N], dy [N, D] -> dtable [V, D] (scatter-add)
//   stlm_cross_entropy  logits [P, V], targets [P], counted [P] -> mean loss
//   stlm_cross_entropy_grad  ... , dloss -> dlogits [P, V]
//   stlm_chunk_cross_entropy(_grad)  the same with P = B·C·L and the
//                       targets and counted flags derived from chunks
//                       [B·C·L] and count [B] (the chunk objectives)
//   stlm_mask_tokens    ids [N], seed -> masked [N], mask [N] (u8 0/1)
//   stlm_distill(_grad) logits, teacher [P, V], targets [P] (, dloss) ->
//                       α τ² mean KL(softmax(teacher/τ) ‖ softmax(logits/τ))
//                       + (1 − α) mean CE (its gradient in the logits)
// Ids outside the table are clamped here for memory safety, not reported:
// callers must check ids before a kernel runs (an error, not a clamp).
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

#include <cmath>

namespace {

using namespace Halide;

class RMSNorm : public Generator<RMSNorm> {
public:
  GeneratorParam<int> rows{"rows", 64}, width{"width", 64};
  GeneratorParam<double> eps{"eps", 1e-6};
  Input<Buffer<float>> x{"x", 2}, g{"g", 1};
  Output<Buffer<float>> y{"y", 2};

  void generate() {
    RDom rd(0, width, "rd");
    ss(r) = 0.0f;
    ss(r) += x(rd, r) * x(rd, r);
    rs(r) = 1.0f / sqrt(ss(r) / float(int(width)) + float(double(eps)));
    y(d, r) = x(d, r) * rs(r) * g(d);
  }
  void schedule() {
    stlm::halide::requireAligned(x, g, y);
    stlm::halide::boundRowMajor(x, width, rows);
    g.dim(0).set_bounds(0, width);
    stlm::halide::boundRowMajor(y, width, rows);
    int vec = natural_vector_size<float>();
    Var ro("ro"), ri("ri");
    y.split(r, ro, ri, 16, TailStrategy::GuardWithIf)
        .vectorize(d, vec, TailStrategy::GuardWithIf)
        .parallel(ro);
    rs.compute_at(y, ri);
  }

private:
  Var d{"d"}, r{"r"};
  Func ss{"ss"}, rs{"rs"};
};

class RMSNormGrad : public Generator<RMSNormGrad> {
public:
  GeneratorParam<int> rows{"rows", 64}, width{"width", 64};
  GeneratorParam<double> eps{"eps", 1e-6};
  Input<Buffer<float>> x{"x", 2}, g{"g", 1}, dy{"dy", 2};
  Output<Buffer<float>> dx{"dx", 2}, dg{"dg", 1};

  void generate() {
    RDom rd(0, width, "rd");
    ss(r) = 0.0f;
    ss(r) += x(rd, r) * x(rd, r);
    rs(r) = 1.0f / sqrt(ss(r) / float(int(width)) + float(double(eps)));
    n(d, r) = x(d, r) * rs(r);
    dot(r) = 0.0f;
    dot(r) += dy(rd, r) * g(rd) * n(rd, r);
    dx(d, r) = rs(r) * (dy(d, r) * g(d) - n(d, r) * dot(r) / float(int(width)));
    RDom rows_(0, rows, "rr");
    rr = rows_.x;
    dg(d) = 0.0f;
    dg(d) += dy(d, rows_) * n(d, rows_);
  }
  void schedule() {
    stlm::halide::requireAligned(x, g, dy, dx, dg);
    for (auto *b : {&x, &dy})
      stlm::halide::boundRowMajor(*b, width, rows);
    g.dim(0).set_bounds(0, width);
    stlm::halide::boundRowMajor(dx, width, rows);
    dg.dim(0).set_bounds(0, width);
    int vec = natural_vector_size<float>();
    Var ro("ro"), ri("ri"), dO("do"), di("di");
    dx.split(r, ro, ri, 16, TailStrategy::GuardWithIf)
        .vectorize(d, vec, TailStrategy::GuardWithIf)
        .parallel(ro);
    rs.compute_root().parallel(r);
    dot.compute_at(dx, ri);
    // dg: a column sum; columns are independent, so parallel over them.
    dg.vectorize(d, vec, TailStrategy::GuardWithIf);
    dg.update()
        .split(d, dO, di, vec, TailStrategy::GuardWithIf)
        .reorder(di, rr, dO)
        .vectorize(di)
        .parallel(dO);
  }

private:
  Var d{"d"}, r{"r"};
  RVar rr;
  Func ss{"ss"}, rs{"rs"}, n{"n"}, dot{"dot"};
};

class RoPE : public Generator<RoPE> {
public:
  GeneratorParam<int> batch{"batch", 1}, time{"time", 8}, width{"width", 64},
      headDim{"head_dim", 16};
  GeneratorParam<double> theta{"theta", 10000.0};
  GeneratorParam<bool> inverse{"inverse", false};
  Input<Buffer<float>> x{"x", 3};
  Input<int32_t> offset{"offset"};
  Output<Buffer<float>> y{"y", 3};

  void generate() {
    int hd = headDim;
    if (hd < 2 || hd % 2 || int(width) % hd)
      stlm::halide::fail("stlm_rope", "head_dim must be even and divide width");
    // Angles in double, as the reference computes them: one power per
    // pair, one cosine and sine per pair and position.
    double sign = bool(inverse) ? -1.0 : 1.0;
    freq(i) = pow(Expr(double(theta)),
                  Expr(-2.0) * cast<double>(i) / Expr(double(hd)));
    Expr angle = cast<double>(t + offset) * freq(i) * Expr(sign);
    // From offset 0 (every training call, a prefill of a fresh cache) the
    // positions are 0 … time − 1: their cosines and sines, the same double
    // arithmetic done here once, are a constant of the kernel (the
    // schedule specialises on offset == 0, so no call computes them).
    Buffer<float> table(hd / 2, int(time), 2, "rope_table");
    for (int pi = 0; pi < hd / 2; ++pi) {
      double f = std::pow(double(theta), -2.0 * pi / hd);
      for (int pt = 0; pt < int(time); ++pt) {
        double a = double(pt) * f * sign;
        table(pi, pt, 0) = float(std::cos(a));
        table(pi, pt, 1) = float(std::sin(a));
      }
    }
    Expr tt = clamp(t, 0, int(time) - 1);
    cs(i, t) =
        Tuple(select(offset == 0, table(i, tt, 0), cast<float>(cos(angle))),
              select(offset == 0, table(i, tt, 1), cast<float>(sin(angle))));
    // Per pair of the whole width (p = w / 2), so that y reads them densely.
    csp(p, t) = cs(p % (hd / 2), t);
    // Pair p is (x(2p), x(2p + 1)) rotated: y(2p) = x0·c − x1·s,
    // y(2p + 1) = x0·s + x1·c. The schedule computes the even and odd
    // results of a vector of pairs apart (stride-2 loads and stores, which
    // Halide turns into dense ones and shuffles).
    Expr pw = w / 2;
    Expr x0 = x(2 * pw, t, b), x1 = x(2 * pw + 1, t, b);
    Expr c = csp(pw, t)[0], sn = csp(pw, t)[1];
    y(w, t, b) = select(w % 2 == 0, x0 * c - x1 * sn, x0 * sn + x1 * c);
  }
  void schedule() {
    stlm::halide::requireAligned(x, y);
    x.dim(0).set_bounds(0, width).dim(1).set_bounds(0, time)
        .dim(2).set_bounds(0, batch);
    y.dim(0).set_bounds(0, width).dim(1).set_bounds(0, time)
        .dim(2).set_bounds(0, batch);
    int vec = natural_vector_size<float>();
    freq.compute_root();
    cs.compute_root().parallel(t).specialize(offset == 0);
    // w = 2·(vec·po + pi) + parity: for each vector of pairs, the even and
    // the odd results side by side (two stride-2 stores Halide merges into
    // dense ones). Positions in parallel, each one's angles spread over the
    // width once (a row's worth, on the stack) for every batch element.
    Var pair("pair"), parity("parity"), po("po"), pi("pi");
    y.split(w, pair, parity, 2)
        .split(pair, po, pi, vec, TailStrategy::GuardWithIf)
        .reorder(pi, parity, po, b, t)
        .vectorize(pi)
        .unroll(parity)
        .parallel(t);
    csp.compute_at(y, t);
  }

private:
  Var w{"w"}, t{"t"}, b{"b"}, i{"i"}, p{"p"};
  Func freq{"freq"}, cs{"cs"}, csp{"csp"};
};

class Embed : public Generator<Embed> {
public:
  GeneratorParam<int> vocab{"vocab", 256}, width{"width", 64}, count{"count", 64};
  Input<Buffer<float>> table{"table", 2};
  Input<Buffer<int32_t>> ids{"ids", 1};
  Output<Buffer<float>> out{"out", 2};

  void generate() {
    out(d, n) = table(d, clamp(ids(n), 0, int(vocab) - 1));
  }
  void schedule() {
    stlm::halide::requireAligned(table, ids, out);
    stlm::halide::boundRowMajor(table, width, vocab);
    ids.dim(0).set_bounds(0, count);
    stlm::halide::boundRowMajor(out, width, count);
    Var no("no"), ni("ni");
    out.split(n, no, ni, 64, TailStrategy::GuardWithIf)
        .vectorize(d, natural_vector_size<float>(), TailStrategy::GuardWithIf)
        .parallel(no);
  }

private:
  Var d{"d"}, n{"n"};
};

class EmbedGrad : public Generator<EmbedGrad> {
public:
  GeneratorParam<int> vocab{"vocab", 256}, width{"width", 64}, count{"count", 64};
  Input<Buffer<int32_t>> ids{"ids", 1};
  Input<Buffer<float>> dy{"dy", 2};
  Output<Buffer<float>> dtable{"dtable", 2};

  void generate() {
    RDom rows(0, count, "r");
    r = rows.x;
    dtable(d, v) = 0.0f;
    dtable(d, clamp(ids(rows), 0, int(vocab) - 1)) += dy(d, rows);
  }
  void schedule() {
    stlm::halide::requireAligned(ids, dy, dtable);
    ids.dim(0).set_bounds(0, count);
    stlm::halide::boundRowMajor(dy, width, count);
    stlm::halide::boundRowMajor(dtable, width, vocab);
    int vec = natural_vector_size<float>();
    Var dO("do"), di("di");
    dtable.vectorize(d, vec, TailStrategy::GuardWithIf).parallel(v);
    // Rows may repeat, so the scatter runs in order; columns are disjoint,
    // so column blocks run in parallel.
    dtable.update()
        .split(d, dO, di, vec, TailStrategy::GuardWithIf)
        .reorder(di, r, dO)
        .vectorize(di)
        .parallel(dO);
  }

private:
  Var d{"d"}, v{"v"};
  RVar r;
};

/// Mean cross-entropy over counted rows; shared math and schedules of the
/// loss and its gradient, with targets and counted flags given as buffers
/// (stlm_cross_entropy) or derived from chunks (stlm_chunk_cross_entropy).
template <typename Self> class CrossEntropyBase : public Generator<Self> {
public:
  GeneratorParam<int> positions{"positions", 64}, vocab{"vocab", 256};

protected:
  void define(Func logits, Func targets, Func counted) {
    RDom rv(0, vocab, "rv");
    mx(p) = maximum(logits(rv, p));
    se(p) = sum(exp(logits(rv, p) - mx(p)));
    lse(p) = mx(p) + log(se(p));
    tgt(p) = clamp(targets(p), 0, int(vocab) - 1);
    isCounted(p) = counted(p) != 0;
    RDom rp(0, positions, "rp");
    nc() = sum(cast<int32_t>(isCounted(rp)));
  }
  /// The mean loss over the counted positions (0 when none counts).
  template <typename Out> void defineLoss(Func logits, Out &loss) {
    rowLoss(p) = select(isCounted(p), lse(p) - logits(tgt(p), p), 0.0f);
    RDom rp(0, positions, "rp2");
    total() = sum(cast<double>(rowLoss(rp)));
    loss() = select(nc() > 0, cast<float>(total() / cast<double>(nc())), 0.0f);
  }
  void scheduleLoss() {
    Var po("po"), pi("pi");
    rowLoss.compute_root()
        .split(p, po, pi, 16, TailStrategy::GuardWithIf)
        .parallel(po);
    mx.compute_at(rowLoss, pi);
    se.compute_at(rowLoss, pi);
    nc.compute_root();
  }
  /// dloss · (softmax − onehot(target)) / n on the counted positions.
  template <typename Out>
  void defineGrad(Func logits, Expr dloss, Out &dlogits) {
    Expr scale = dloss / cast<float>(max(nc(), 1));
    Expr soft = exp(logits(v, p) - lse(p));
    dlogits(v, p) = select(isCounted(p),
                           scale * (soft - select(v == tgt(p), 1.0f, 0.0f)),
                           0.0f);
  }
  template <typename Out> void scheduleGrad(Out &dlogits) {
    stlm::halide::boundRowMajor(dlogits, vocab, positions);
    Var po("po"), pi("pi");
    dlogits.split(p, po, pi, 16, TailStrategy::GuardWithIf)
        .vectorize(v, this->template natural_vector_size<float>(),
                   TailStrategy::GuardWithIf)
        .parallel(po);
    lse.compute_at(dlogits, pi);
    nc.compute_root();
  }
  Var v{"v"}, p{"p"};
  Func mx{"mx"}, se{"se"}, lse{"lse"}, tgt{"tgt"}, isCounted{"is_counted"},
      nc{"nc"}, rowLoss{"row_loss"}, total{"total"};
};

class CrossEntropy : public CrossEntropyBase<CrossEntropy> {
public:
  Input<Buffer<float>> logits{"logits", 2};
  Input<Buffer<int32_t>> targets{"targets", 1};
  Input<Buffer<uint8_t>> counted{"counted", 1};
  Output<Buffer<float>> loss{"loss", 0};

  void generate() {
    define(logits, targets, counted);
    defineLoss(logits, loss);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, targets, counted);
    stlm::halide::boundRowMajor(logits, vocab, positions);
    targets.dim(0).set_bounds(0, positions);
    counted.dim(0).set_bounds(0, positions);
    scheduleLoss();
  }
};

class CrossEntropyGrad : public CrossEntropyBase<CrossEntropyGrad> {
public:
  Input<Buffer<float>> logits{"logits", 2};
  Input<Buffer<int32_t>> targets{"targets", 1};
  Input<Buffer<uint8_t>> counted{"counted", 1};
  Input<float> dloss{"dloss"};
  Output<Buffer<float>> dlogits{"dlogits", 2};

  void generate() {
    define(logits, targets, counted);
    defineGrad(logits, dloss, dlogits);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, targets, counted, dlogits);
    stlm::halide::boundRowMajor(logits, vocab, positions);
    targets.dim(0).set_bounds(0, positions);
    counted.dim(0).set_bounds(0, positions);
    scheduleGrad(dlogits);
  }
};

/// The chunk objectives (`stlm.chunk_bytes_loss` with `next`,
/// `stlm.reconstruction_loss` without): position p = (b·C + c)·L + s of
/// the logits [B·C·L, 258] predicts chunks[b, c + next, s]; it counts when
/// that chunk lies before count[b] and, with `mask_pad`, when its byte
/// is real or the end marker (ref::chunkTargets).
template <typename Self>
class ChunkCrossEntropyBase : public CrossEntropyBase<Self> {
public:
  GeneratorParam<int> batch{"batch", 1}, chunks{"chunks", 8},
      slots{"slots", 8};
  GeneratorParam<bool> next{"next", true}, maskPad{"mask_pad", false};

protected:
  void defineChunks(Func logits, Func ids, Func count) {
    const char *name = "stlm_chunk_cross_entropy";
    int C = chunks, L = slots, P = this->positions;
    if (int64_t(batch) * C * L != P || batch < 1 || C < 1 || L < 1)
      stlm::halide::fail(name, "positions must be batch · chunks · slots");
    if (int(this->vocab) != 258)
      stlm::halide::fail(name, "chunk objectives predict 258 classes");
    Var p = this->p;
    int ahead = bool(next) ? 1 : 0, shift = ahead * L;
    Expr b = p / (C * L), c = (p / L) % C, s = p % L;
    Expr inRange = c + ahead < min(count(b), C);
    Expr at = clamp(p + shift, 0, P - 1);
    Expr t = ids(at);
    Expr keep = inRange;
    if (bool(maskPad))
      keep = keep && (t != kPad || (s > 0 && ids(clamp(at - 1, 0, P - 1)) !=
                                                 kPad));
    target(p) = select(inRange, t, 0);
    counted(p) = keep;
    this->define(logits, target, counted);
  }
  template <typename In> void boundChunks(In &ids, In &count) {
    ids.dim(0).set_bounds(0, this->positions);
    count.dim(0).set_bounds(0, batch);
  }
  static constexpr int kPad = 256;
  Func target{"target"}, counted{"counted"};
};

class ChunkCrossEntropy : public ChunkCrossEntropyBase<ChunkCrossEntropy> {
public:
  Input<Buffer<float>> logits{"logits", 2};
  Input<Buffer<int32_t>> ids{"ids", 1};
  Input<Buffer<int32_t>> count{"count", 1};
  Output<Buffer<float>> loss{"loss", 0};

  void generate() {
    defineChunks(logits, ids, count);
    defineLoss(logits, loss);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, ids, count);
    stlm::halide::boundRowMajor(logits, vocab, positions);
    boundChunks(ids, count);
    scheduleLoss();
  }
};

class ChunkCrossEntropyGrad
    : public ChunkCrossEntropyBase<ChunkCrossEntropyGrad> {
public:
  Input<Buffer<float>> logits{"logits", 2};
  Input<Buffer<int32_t>> ids{"ids", 1};
  Input<Buffer<int32_t>> count{"count", 1};
  Input<float> dloss{"dloss"};
  Output<Buffer<float>> dlogits{"dlogits", 2};

  void generate() {
    defineChunks(logits, ids, count);
    defineGrad(logits, dloss, dlogits);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, ids, count, dlogits);
    stlm::halide::boundRowMajor(logits, vocab, positions);
    boundChunks(ids, count);
    scheduleGrad(dlogits);
  }
};

/// `stlm.distill_loss` and its gradient, fused per row of V logits: with
/// lse = logsumexp(logits), lse_τ = logsumexp(logits/τ) and
/// lse_T = logsumexp(teacher/τ), p = exp(teacher/τ − lse_T),
///   KL = Σ_v p_v (teacher_v − logits_v)/τ − lse_T + lse_τ
/// (Σ p = 1; a p_v that underflows to 0 adds 0, as 0 · log 0 = 0), and the
/// gradient α τ (q − p) + (1 − α)(softmax − onehot), q = softmax(logits/τ),
/// scaled by dloss / P. Twins: ref::distill, ref::distillBackward.
template <typename Self> class DistillBase : public Generator<Self> {
public:
  GeneratorParam<int> positions{"positions", 64}, vocab{"vocab", 256};
  GeneratorParam<double> temperature{"temperature", 2.0}, alpha{"alpha", 0.5};

protected:
  void define(Func logits, Func teacher, Func targets) {
    double tau = temperature, a = alpha;
    if (!(tau > 0) || !(a >= 0 && a <= 1))
      stlm::halide::fail("stlm_distill",
                         "temperature must be > 0 and alpha in [0, 1]");
    Expr inv = Expr(float(1.0 / tau));
    RDom rv(0, vocab, "rv");
    mx(p) = maximum(logits(rv, p));
    lse(p) = mx(p) + log(sum(exp(logits(rv, p) - mx(p))));
    lseS(p) = mx(p) * inv + log(sum(exp((logits(rv, p) - mx(p)) * inv)));
    mxT(p) = maximum(teacher(rv, p));
    lseT(p) = mxT(p) * inv + log(sum(exp((teacher(rv, p) - mxT(p)) * inv)));
    tgt(p) = clamp(targets(p), 0, int(vocab) - 1);
    Expr pt = exp(teacher(rv, p) * inv - lseT(p));
    cross(p) = sum(pt * (teacher(rv, p) - logits(rv, p))) * inv;
  }
  template <typename Out> void defineLoss(Func logits, Out &loss) {
    double tau = temperature, a = alpha;
    Expr kl = cross(p) - lseT(p) + lseS(p);
    Expr ce = lse(p) - logits(tgt(p), p);
    rowLoss(p) = float(a * tau * tau) * kl + float(1 - a) * ce;
    RDom rp(0, positions, "rp");
    loss() = cast<float>(sum(cast<double>(rowLoss(rp))) /
                         Expr(double(int(positions))));
  }
  void scheduleLoss() {
    Var po("po"), pi("pi");
    rowLoss.compute_root()
        .split(p, po, pi, 16, TailStrategy::GuardWithIf)
        .parallel(po);
    for (Func f : {mx, lse, lseS, mxT, lseT, cross})
      f.compute_at(rowLoss, pi);
  }
  template <typename Out>
  void defineGrad(Func logits, Func teacher, Expr dloss, Out &dlogits) {
    double tau = temperature, a = alpha;
    Expr inv = Expr(float(1.0 / tau));
    Expr scale = dloss / float(int(positions));
    Expr q = exp(logits(v, p) * inv - lseS(p));
    Expr pt = exp(teacher(v, p) * inv - lseT(p));
    Expr soft = exp(logits(v, p) - lse(p));
    Expr onehot = select(v == tgt(p), 1.0f, 0.0f);
    dlogits(v, p) =
        scale * (float(a * tau) * (q - pt) + float(1 - a) * (soft - onehot));
  }
  template <typename Out> void scheduleGrad(Out &dlogits) {
    stlm::halide::boundRowMajor(dlogits, vocab, positions);
    Var po("po"), pi("pi");
    dlogits.split(p, po, pi, 16, TailStrategy::GuardWithIf)
        .vectorize(v, this->template natural_vector_size<float>(),
                   TailStrategy::GuardWithIf)
        .parallel(po);
    for (Func f : {mx, lse, lseS, mxT, lseT})
      f.compute_at(dlogits, pi);
  }
  template <typename In, typename Ids>
  void bound(In &logits, In &teacher, Ids &targets) {
    stlm::halide::boundRowMajor(logits, vocab, positions);
    stlm::halide::boundRowMajor(teacher, vocab, positions);
    targets.dim(0).set_bounds(0, positions);
  }
  Var v{"v"}, p{"p"};
  Func mx{"mx"}, lse{"lse"}, lseS{"lse_s"}, mxT{"mx_t"}, lseT{"lse_t"},
      tgt{"tgt"}, cross{"cross"}, rowLoss{"row_loss"};
};

class Distill : public DistillBase<Distill> {
public:
  Input<Buffer<float>> logits{"logits", 2}, teacher{"teacher", 2};
  Input<Buffer<int32_t>> targets{"targets", 1};
  Output<Buffer<float>> loss{"loss", 0};

  void generate() {
    define(logits, teacher, targets);
    defineLoss(logits, loss);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, teacher, targets);
    bound(logits, teacher, targets);
    scheduleLoss();
  }
};

class DistillGrad : public DistillBase<DistillGrad> {
public:
  Input<Buffer<float>> logits{"logits", 2}, teacher{"teacher", 2};
  Input<Buffer<int32_t>> targets{"targets", 1};
  Input<float> dloss{"dloss"};
  Output<Buffer<float>> dlogits{"dlogits", 2};

  void generate() {
    define(logits, teacher, targets);
    defineGrad(logits, teacher, dloss, dlogits);
  }
  void schedule() {
    stlm::halide::requireAligned(logits, teacher, targets, dlogits);
    bound(logits, teacher, targets);
    scheduleGrad(dlogits);
  }
};

/// `stlm.mask_tokens`: position n is masked when the top 24 bits of
/// splitmix64(seed · 2³² + n), read as u · 2²⁴, fall below prob · 2²⁴. For
/// an integer u that is u < ⌈prob · 2²⁴⌉, so the comparison is exact in
/// 64-bit integers.
class MaskTokens : public Generator<MaskTokens> {
public:
  GeneratorParam<int> count{"count", 64};
  GeneratorParam<double> prob{"prob", 0.15};
  GeneratorParam<int> maskId{"mask_id", 0};
  Input<Buffer<int32_t>> ids{"ids", 1};
  Input<int32_t> seed{"seed"};
  Output<Buffer<int32_t>> masked{"masked", 1};
  Output<Buffer<uint8_t>> mask{"mask", 1};

  void generate() {
    if (!(double(prob) > 0 && double(prob) < 1))
      stlm::halide::fail("stlm_mask_tokens", "prob must lie in (0, 1)");
    if (int(maskId) < 0)
      stlm::halide::fail("stlm_mask_tokens", "mask_id must not be negative");
    Type u64 = UInt(64);
    auto k = [&](uint64_t c) { return Internal::make_const(u64, c); };
    Expr x = (cast(u64, cast<uint32_t>(seed)) << 32) + cast(u64, n);
    x = x + k(0x9e3779b97f4a7c15ull);
    Expr y = (x ^ (x >> 30)) * k(0xbf58476d1ce4e5b9ull);
    Expr z = (y ^ (y >> 27)) * k(0x94d049bb133111ebull);
    z = z ^ (z >> 31);
    auto threshold =
        static_cast<uint64_t>(std::ceil(double(prob) * 16777216.0));
    hit(n) = (z >> 40) < k(threshold);
    mask(n) = cast<uint8_t>(hit(n));
    masked(n) = select(hit(n), int(maskId), ids(n));
  }
  void schedule() {
    stlm::halide::requireAligned(ids, masked, mask);
    ids.dim(0).set_bounds(0, count);
    masked.dim(0).set_bounds(0, count);
    mask.dim(0).set_bounds(0, count);
    // A few thousand positions per batch: one vectorised pass.
    hit.compute_root().vectorize(n, 8, TailStrategy::GuardWithIf);
    masked.vectorize(n, 8, TailStrategy::GuardWithIf);
    mask.vectorize(n, 8, TailStrategy::GuardWithIf);
  }

private:
  Var n{"n"};
  Func hit{"hit"};
};

} // namespace

HALIDE_REGISTER_GENERATOR(RMSNorm, stlm_rmsnorm)
HALIDE_REGISTER_GENERATOR(RMSNormGrad, stlm_rmsnorm_grad)
HALIDE_REGISTER_GENERATOR(RoPE, stlm_rope)
HALIDE_REGISTER_GENERATOR(Embed, stlm_embed)
HALIDE_REGISTER_GENERATOR(EmbedGrad, stlm_embed_grad)
HALIDE_REGISTER_GENERATOR(CrossEntropy, stlm_cross_entropy)
HALIDE_REGISTER_GENERATOR(CrossEntropyGrad, stlm_cross_entropy_grad)
HALIDE_REGISTER_GENERATOR(MaskTokens, stlm_mask_tokens)
HALIDE_REGISTER_GENERATOR(Distill, stlm_distill)
HALIDE_REGISTER_GENERATOR(DistillGrad, stlm_distill_grad)
HALIDE_REGISTER_GENERATOR(ChunkCrossEntropy, stlm_chunk_cross_entropy)
HALIDE_REGISTER_GENERATOR(ChunkCrossEntropyGrad, stlm_chunk_cross_entropy_grad)
