//===- Attention.cpp - Halide generators: attention forward and backward --===//
//
//   stlm_attention       q [B, T, H·hd], k, v [B, S, K·hd] -> y [B, T, H·hd]
//   stlm_attention_grad  q, k, v, dy -> dq, dk, dv
//
// B is every leading dimension (batch, or batch × chunks for attention
// inside chunks). Query head h uses kv head h / (H/K); scores are scaled by
// 1/sqrt(hd). With `causal`, key u is visible to query t iff
// u ≤ t + offset (offset = S − T for plain training). A query that sees no
// key gets 0 (and passes no gradient), as in the reference.
//
// Forward schedule: parallel over (batch, block of 16 queries); per head,
// the scores of the block against all S keys are computed into a 16 × S
// scratch (never the whole T × S), then max, exponentials, the row sums
// and the weighted sum of values. Backward recomputes the probabilities and
// their gradient for the whole batch ([B, H, T, S] scratch each, computed in
// parallel over B) and reduces them into dq, dk and dv; a blocked
// (flash-style) backward for long contexts is future work.
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

namespace {

using namespace Halide;

template <typename Self> class AttentionBase : public Generator<Self> {
public:
  GeneratorParam<int> batch{"batch", 1}, time{"time", 8}, keys{"keys", 8},
      heads{"heads", 2}, kvHeads{"kv_heads", 2}, headDim{"head_dim", 16};
  GeneratorParam<bool> causal{"causal", true};

protected:
  /// Scores, masking and softmax statistics shared by both directions.
  void defineSoftmax(Func q, Func k, Expr offset) {
    int H = heads, K = kvHeads, hd = headDim;
    if (H < 1 || K < 1 || H % K)
      stlm::halide::fail("stlm_attention", "kv_heads must divide heads");
    group = H / K;
    scale = 1.0f / std::sqrt(float(hd));
    rc = RDom(0, hd, "rc");
    s(u, t, h, b) = 0.0f;
    s(u, t, h, b) += q(h * hd + rc, t, b) * k((h / group) * hd + rc, u, b);
    valid = bool(causal) ? (u <= t + offset) : (u >= 0);
    // Row statistics over every key (masked ones select out); the
    // products with values and gradients (`ru`) stop at the last visible
    // key when causal.
    RDom all(0, keys, "ra");
    Expr sv = s(all, t, h, b) * scale;
    Expr validR = bool(causal) ? (all <= t + offset) : (all >= 0);
    mx(t, h, b) = maximum(select(validR, sv, Float(32).min()));
    e(u, t, h, b) = select(valid, exp(s(u, t, h, b) * scale - mx(t, h, b)),
                           0.0f);
    l(t, h, b) = sum(e(all, t, h, b));
    ru = RDom(0, keys, "ru");
    if (bool(causal))
      ru.where(ru <= t + offset);
    this->all = all;
  }

  /// `x` (a k or v buffer, [.., S, K·hd]) as a Func of the same
  /// coordinates stored transposed (keys innermost), so that scores and
  /// value products vectorize over keys with dense loads; `store` is the
  /// transposed copy to schedule.
  Func keysInner(Func x, Func &store) {
    store(u, w, b) = x(w, u, b);
    Func view(store.name() + "_view");
    view(w, u, b) = store(u, w, b);
    return view;
  }

  void boundQKV(Internal::GeneratorInput_Buffer<Buffer<float>> &q,
                Internal::GeneratorInput_Buffer<Buffer<float>> &k,
                Internal::GeneratorInput_Buffer<Buffer<float>> &v) {
    int W = int(heads) * int(headDim), WK = int(kvHeads) * int(headDim);
    q.dim(0).set_bounds(0, W).dim(1).set_bounds(0, time).dim(2).set_bounds(0,
                                                                       batch);
    for (auto *kv : {&k, &v})
      kv->dim(0).set_bounds(0, WK).dim(1).set_bounds(0, keys)
          .dim(2).set_bounds(0, batch);
    stlm::halide::requireAligned(q, k, v);
  }

  Var c{"c"}, h{"h"}, t{"t"}, u{"u"}, b{"b"}, w{"w"};
  Func s{"s"}, mx{"mx"}, e{"e"}, l{"l"};
  Expr valid;
  RDom ru, rc, all;
  int group = 1;
  float scale = 1.0f;
};

class Attention : public AttentionBase<Attention> {
public:
  Input<Buffer<float>> q{"q", 3}, k{"k", 3}, v{"v", 3};
  Input<int32_t> offset{"offset"};
  Output<Buffer<float>> y{"y", 3};

  void generate() {
    int hd = headDim;
    defineSoftmax(q, keysInner(k, kt), offset);
    acc(c, t, h, b) = 0.0f;
    acc(c, t, h, b) += e(ru, t, h, b) * v((h / group) * hd + c, ru, b);
    out(c, h, t, b) =
        select(l(t, h, b) > 0.0f, acc(c, t, h, b) / l(t, h, b), 0.0f);
    y(w, t, b) = out(w % hd, w / hd, t, b);
  }
  void schedule() {
    boundQKV(q, k, v);
    int hd = headDim;
    y.dim(0).set_bounds(0, int(heads) * hd).dim(1).set_bounds(0, time)
        .dim(2).set_bounds(0, batch);
    stlm::halide::requireAligned(y);
    int vec = natural_vector_size<float>();
    // Blocks of queries: 16, or the whole (short) time of a decode step.
    int block = std::min(16, int(time));
    bool whole = int(time) % block == 0;
    Var hh("hh"), cc("cc"), to("to"), ti("ti"), tb("tb"), uo("uo"), ui("ui");
    y.split(w, hh, cc, hd)
        .split(t, to, ti, block, TailStrategy::GuardWithIf)
        .reorder(cc, ti, hh, to, b)
        .fuse(to, b, tb)
        .vectorize(cc, std::min(vec, hd), TailStrategy::GuardWithIf)
        .parallel(tb);
    // Keys transposed once per call, then per head and block of queries
    // the scores against every key: a register tile of the block's
    // queries × one vector of keys, one broadcast of q per query and
    // channel.
    kt.compute_root().parallel(b).vectorize(u, vec, TailStrategy::GuardWithIf);
    s.compute_at(y, hh).vectorize(u, vec, TailStrategy::GuardWithIf);
    Stage scores = s.update();
    scores.split(u, uo, ui, vec, TailStrategy::GuardWithIf)
        .reorder(ui, t, rc, uo)
        .vectorize(ui);
    if (whole)
      scores.unroll(t);
    mx.compute_at(y, hh);
    e.compute_at(y, hh).vectorize(u, vec, TailStrategy::GuardWithIf);
    l.compute_at(y, hh);
    acc.compute_at(y, hh).vectorize(c, std::min(vec, hd),
                                    TailStrategy::GuardWithIf);
    // The weighted sum of values: a tile of 4 queries × the head's
    // channels, one broadcast of e per query and key.
    Stage sum = acc.update();
    if (whole && block % 4 == 0) {
      Var t4("t4"), ti4("ti4");
      sum.split(t, t4, ti4, 4)
          .reorder(c, ti4, ru, t4)
          .vectorize(c, std::min(vec, hd), TailStrategy::GuardWithIf)
          .unroll(c)
          .unroll(ti4);
    } else {
      sum.reorder(c, ru, t).vectorize(c, std::min(vec, hd),
                                      TailStrategy::GuardWithIf);
    }
  }

private:
  Func acc{"acc"}, out{"out"}, kt{"kt"};
};

class AttentionGrad : public AttentionBase<AttentionGrad> {
public:
  Input<Buffer<float>> q{"q", 3}, k{"k", 3}, v{"v", 3}, dy{"dy", 3};
  Input<int32_t> offset{"offset"};
  Output<Buffer<float>> dq{"dq", 3}, dk{"dk", 3}, dv{"dv", 3};

  void generate() {
    int hd = headDim, T = time;
    defineSoftmax(q, keysInner(k, kt), offset);
    Func vview = keysInner(v, vt);
    p(u, t, h, b) = select(l(t, h, b) > 0.0f, e(u, t, h, b) / l(t, h, b), 0.0f);
    rc2 = RDom(0, hd, "rc2");
    dp(u, t, h, b) = 0.0f;
    dp(u, t, h, b) +=
        dy(h * hd + rc2, t, b) * vview((h / group) * hd + rc2, u, b);
    rowdot(t, h, b) = 0.0f;
    rowdot(t, h, b) += p(all, t, h, b) * dp(all, t, h, b);
    ds(u, t, h, b) = p(u, t, h, b) * (dp(u, t, h, b) - rowdot(t, h, b)) * scale;

    dq4(c, h, t, b) = 0.0f;
    dq4(c, h, t, b) += ds(ru, t, h, b) * k((h / group) * hd + c, ru, b);
    dq(w, t, b) = dq4(w % hd, w / hd, t, b);

    // kv head j collects the query heads j·group … j·group + group − 1.
    rg = RDom(0, group, 0, T, "rg");
    if (bool(causal))
      rg.where(rg.y >= u - offset);
    Expr hq = j * group + rg.x;
    dk4(c, j, u, b) = 0.0f;
    dk4(c, j, u, b) += ds(u, rg.y, hq, b) * q(hq * hd + c, rg.y, b);
    dv4(c, j, u, b) = 0.0f;
    dv4(c, j, u, b) += p(u, rg.y, hq, b) * dy(hq * hd + c, rg.y, b);
    dk(w, u, b) = dk4(w % hd, w / hd, u, b);
    dv(w, u, b) = dv4(w % hd, w / hd, u, b);
  }
  void schedule() {
    boundQKV(q, k, v);
    int hd = headDim, W = int(heads) * hd, WK = int(kvHeads) * hd;
    dy.dim(0).set_bounds(0, W).dim(1).set_bounds(0, time).dim(2).set_bounds(0,
                                                                        batch);
    dq.dim(0).set_bounds(0, W).dim(1).set_bounds(0, time).dim(2).set_bounds(0,
                                                                        batch);
    for (auto *o : {&dk, &dv})
      o->dim(0).set_bounds(0, WK).dim(1).set_bounds(0, keys)
          .dim(2).set_bounds(0, batch);
    stlm::halide::requireAligned(dy, dq, dk, dv);
    int vec = natural_vector_size<float>();
    // Probabilities and their gradient, per batch element, in parallel.
    for (Func f : {p, ds}) {
      f.compute_root().parallel(b).vectorize(u, vec, TailStrategy::GuardWithIf);
    }
    // Keys and values transposed once; scores and dp as dot products over
    // the head's channels, one vector of keys at a time.
    for (Func f : {kt, vt})
      f.compute_root().parallel(b).vectorize(u, vec, TailStrategy::GuardWithIf);
    // Register tiles of 16 queries × one vector of keys (when the time
    // divides), one broadcast per query and channel.
    bool tiles = int(time) % 16 == 0;
    auto dots = [&](Func f, RDom r) {
      Var uo("uo"), ui("ui"), to("to"), ti("ti");
      Stage st = f.update();
      st.split(u, uo, ui, vec, TailStrategy::GuardWithIf);
      if (tiles)
        st.split(t, to, ti, 16).reorder(ui, ti, r.x, uo, to).unroll(ti);
      else
        st.reorder(ui, r.x, uo);
      st.vectorize(ui);
    };
    s.compute_at(p, b).vectorize(u, vec, TailStrategy::GuardWithIf);
    dots(s, rc);
    mx.compute_at(p, b);
    e.compute_at(p, b);
    l.compute_at(p, b);
    dp.compute_at(ds, b).vectorize(u, vec, TailStrategy::GuardWithIf);
    dots(dp, rc2);
    rowdot.compute_at(ds, b);
    // dq = ds · k, dk = dsᵀ · q, dv = pᵀ · dy per head: register tiles of
    // R rows (queries for dq, keys for dk and dv) × one head's hd columns
    // (hd / vec vectors), accumulated over the reduction with one
    // broadcast of ds or p per row, like the matmul micro-kernel.
    int lanes = std::min(vec, hd);
    int vectors = std::max(1, hd / lanes);
    int rows = std::max(1, 16 / vectors);
    auto tile = [&](Func out, Func acc, Var row,
                    const std::vector<VarOrRVar> &reduction) {
      Var hh("hh"), cc("cc"), ro("ro"), ri("ri"), rb("rb");
      out.split(w, hh, cc, hd)
          .split(row, ro, ri, rows, TailStrategy::GuardWithIf)
          .reorder(cc, ri, hh, ro, b)
          .vectorize(cc, lanes, TailStrategy::GuardWithIf)
          .fuse(ro, b, rb)
          .parallel(rb);
      acc.compute_at(out, hh)
          .vectorize(c, lanes, TailStrategy::GuardWithIf)
          .unroll(c)
          .unroll(row);
      std::vector<VarOrRVar> order = {c, row};
      order.insert(order.end(), reduction.begin(), reduction.end());
      acc.update()
          .reorder(order)
          .vectorize(c, lanes, TailStrategy::GuardWithIf)
          .unroll(c)
          .unroll(row);
    };
    tile(dq, dq4, t, {ru.x});
    tile(dk, dk4, u, {rg.x, rg.y});
    tile(dv, dv4, u, {rg.x, rg.y});
  }

private:
  Func p{"p"}, dp{"dp"}, rowdot{"rowdot"}, ds{"ds"}, dq4{"dq4"}, dk4{"dk4"},
      dv4{"dv4"}, kt{"kt"}, vt{"vt"};
  RDom rc2;
  Var j{"j"};
  RDom rg;
};

} // namespace

HALIDE_REGISTER_GENERATOR(Attention, stlm_attention)
HALIDE_REGISTER_GENERATOR(AttentionGrad, stlm_attention_grad)
