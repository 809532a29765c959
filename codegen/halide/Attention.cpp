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

#include <functional>

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
    sAcc(u, t, h, b) = 0.0f;
    sAcc(u, t, h, b) += q(h * hd + rc, t, b) * k((h / group) * hd + rc, u, b);
    s(u, t, h, b) = sAcc(u, t, h, b);
    valid = bool(causal) ? (u <= t + offset) : (u >= 0);
    // Row statistics over every key (masked ones select out); the
    // products with values and gradients (`ru`) stop at the last visible
    // key when causal.
    RDom all(0, keys, "ra");
    Expr validR = bool(causal) ? (all <= t + offset) : (all >= 0);
    validAll = validR;
    this->offset = offset;
    mx(t, h, b) = rowReduce(
        "mx", [&](Expr key) {
          Expr visible = bool(causal) ? (key <= t + offset) : (key >= 0);
          return select(visible, s(key, t, h, b) * scale, Float(32).min());
        },
        /*isMax=*/true);
    e(u, t, h, b) = select(valid, exp(s(u, t, h, b) * scale - mx(t, h, b)),
                           0.0f);
    l(t, h, b) = rowReduce(
        "l", [&](Expr key) { return e(key, t, h, b); }, /*isMax=*/false);
    ru = RDom(0, keys, "ru");
    if (bool(causal))
      ru.where(ru <= t + offset);
    this->all = all;
  }

  /// max or sum over every key of `term(key)` for row (t, h, b): with keys
  /// a multiple of the vector width, first one vector of partial results
  /// per row (dense loads along the keys), then its lanes; `partials`
  /// keeps those stages for the schedule.
  Expr rowReduce(const std::string &name,
                 const std::function<Expr(Expr)> &term, bool isMax) {
    int vec = this->template natural_vector_size<float>();
    Expr init = isMax ? Expr(Float(32).min()) : Expr(0.0f);
    if (int(keys) % vec != 0) {
      RDom r(0, keys, name + "_r");
      return isMax ? maximum(term(r)) : sum(term(r));
    }
    Func part(name + "_lanes");
    RDom rv(0, int(keys) / vec, name + "_rv");
    Expr x = term(rv * vec + lane);
    part(lane, t, h, b) = init;
    part(lane, t, h, b) = isMax ? max(part(lane, t, h, b), x)
                                : part(lane, t, h, b) + x;
    partials.push_back(part);
    RDom rl(0, vec, name + "_rl");
    return isMax ? maximum(part(rl, t, h, b)) : sum(part(rl, t, h, b));
  }
  /// Computes rowReduce's partials [first, last) where their rows are.
  void schedulePartials(Func at, Var loop, size_t first, size_t last) {
    int vec = this->template natural_vector_size<float>();
    for (size_t i = first; i < std::min(last, partials.size()); ++i) {
      partials[i].compute_at(at, loop).vectorize(lane, vec);
      partials[i].update().vectorize(lane, vec);
    }
  }

  /// Schedules `f(u, t, ...)`, a copy of the dot products `accum`, in
  /// tiles of 8 queries × 2 vectors of keys, each tile's `accum` computed
  /// in registers over the reduction: 2 loads and 8 broadcasts per 16
  /// FMAs, as in the matmul micro-kernel. Needs keys % (2 vectors) == 0
  /// and the computed queries % 8 == 0 (the tiles round up); otherwise
  /// plain vectors of keys.
  void tileDots(Func f, Func accum, bool tiled) {
    int vec = this->template natural_vector_size<float>();
    Var uo("tile_uo"), ui("tile_ui"), to("tile_to"), ti("tile_ti");
    if (!tiled) {
      f.vectorize(u, vec, TailStrategy::GuardWithIf);
      accum.compute_at(f, u).vectorize(u, vec, TailStrategy::GuardWithIf);
      accum.update().reorder(u, rc).vectorize(u, vec,
                                              TailStrategy::GuardWithIf);
      return;
    }
    f.split(u, uo, ui, 2 * vec, TailStrategy::RoundUp)
        .split(t, to, ti, 8, TailStrategy::RoundUp)
        .reorder(ui, ti, uo, to)
        .vectorize(ui, vec)
        .unroll(ui)
        .unroll(ti);
    accum.compute_at(f, uo).vectorize(u, vec).unroll(u).unroll(t);
    accum.update()
        .reorder(u, t, rc)
        .vectorize(u, vec)
        .unroll(u)
        .unroll(t);
  }
  bool keysTile() const {
    return int(keys) % (2 * this->template natural_vector_size<float>()) == 0;
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
  Func s{"s"}, sAcc{"sAcc"}, mx{"mx"}, e{"e"}, l{"l"};
  Expr valid, validAll; // key u (all) visible from query t
  Expr offset;
  Var lane{"lane"};
  std::vector<Func> partials;
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
    // Over every key (e is 0 where masked): a predicate here would reach
    // the scores' bounds through e and defeat their register tiles.
    acc(c, t, h, b) += e(all, t, h, b) * v((h / group) * hd + c, all, b);
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
    Var hh("hh"), cc("cc"), to("to"), ti("ti"), tb("tb");
    y.split(w, hh, cc, hd)
        .split(t, to, ti, block, TailStrategy::GuardWithIf)
        .reorder(cc, ti, hh, to, b)
        .fuse(to, b, tb)
        .vectorize(cc, std::min(vec, hd), TailStrategy::GuardWithIf)
        .parallel(tb);
    // Keys transposed once per call; per head and block of queries the
    // scores against the keys it sees (register tiles), the softmax, then
    // per 4 queries the weighted sum of values in registers (4 × hd/vec
    // vectors, one broadcast of e per query and key).
    kt.compute_root().parallel(b).vectorize(u, vec, TailStrategy::GuardWithIf);
    s.compute_at(y, hh);
    bool tiled = whole && block % 8 == 0 && keysTile();
    if (tiled) // the block's queries exactly (the select bounds are loose)
      s.bound_extent(t, block);
    tileDots(s, sAcc, tiled);
    mx.compute_at(y, hh);
    schedulePartials(y, hh, 0, 2); // mx, l
    e.compute_at(y, hh).vectorize(u, vec, TailStrategy::GuardWithIf);
    l.compute_at(y, hh);
    int lanes = std::min(vec, hd);
    if (whole && block % 4 == 0 && hd % lanes == 0 && hd / lanes <= 4) {
      Var t4("t4"), ti4("ti4");
      y.split(ti, t4, ti4, 4).reorder(cc, ti4, t4);
      acc.compute_at(y, t4).vectorize(c, lanes).unroll(c).unroll(t);
      acc.update()
          .reorder(c, t, all)
          .vectorize(c, lanes)
          .unroll(c)
          .unroll(t);
    } else {
      acc.compute_at(y, hh).vectorize(c, lanes, TailStrategy::GuardWithIf);
      acc.update().reorder(c, all, t).vectorize(c, lanes,
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
    dpAcc(u, t, h, b) = 0.0f;
    dpAcc(u, t, h, b) +=
        dy(h * hd + rc, t, b) * vview((h / group) * hd + rc, u, b);
    dp(u, t, h, b) = dpAcc(u, t, h, b);
    rowdot(t, h, b) = rowReduce(
        "rowdot",
        [&](Expr key) {
          Expr visible = bool(causal) ? (key <= t + this->offset) : (key >= 0);
          return select(visible, p(key, t, h, b) * dp(key, t, h, b), 0.0f);
        },
        /*isMax=*/false);
    ds(u, t, h, b) = select(valid, p(u, t, h, b) * (dp(u, t, h, b) -
                                                     rowdot(t, h, b)) * scale,
                            0.0f);

    // The causal predicates trim the loops; the clamps (no-ops inside
    // them) keep bounds inference from widening what it computes.
    Expr key = clamp(ru, 0, int(keys) - 1);
    dq4(c, h, t, b) = 0.0f;
    dq4(c, h, t, b) += ds(key, t, h, b) * k((h / group) * hd + c, key, b);
    dq(w, t, b) = dq4(w % hd, w / hd, t, b);

    // kv head j collects the query heads j·group … j·group + group − 1.
    rg = RDom(0, group, 0, T, "rg");
    if (bool(causal))
      rg.where(rg.y >= u - offset);
    Expr hq = j * group + rg.x, query = clamp(rg.y, 0, T - 1);
    dk4(c, j, u, b) = 0.0f;
    dk4(c, j, u, b) += ds(u, query, hq, b) * q(hq * hd + c, query, b);
    dv4(c, j, u, b) = 0.0f;
    dv4(c, j, u, b) += p(u, query, hq, b) * dy(hq * hd + c, query, b);
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
    // Keys and values transposed once.
    for (Func f : {kt, vt})
      f.compute_root().parallel(b).vectorize(u, vec, TailStrategy::GuardWithIf);
    // Probabilities and their gradient for every batch element (in
    // parallel), head and block of 16 queries: the block's scores and dp
    // in register tiles (see tileDots), only up to the last key the block
    // sees (the selects on `valid` bound them).
    int block = std::min(16, int(time));
    bool tiles = int(time) % block == 0 && block % 8 == 0 && keysTile();
    auto perBlock = [&](Func f, Func dots, Func accum) {
      Var to("to"), ti("ti");
      f.compute_root()
          .split(t, to, ti, block, TailStrategy::GuardWithIf)
          .reorder(u, ti, to, h, b)
          .vectorize(u, vec, TailStrategy::GuardWithIf)
          .parallel(b);
      dots.compute_at(f, to);
      if (tiles)
        dots.bound_extent(t, block);
      tileDots(dots, accum, tiles);
      return to;
    };
    Var pto = perBlock(p, s, sAcc);
    mx.compute_at(p, pto);
    e.compute_at(p, pto).vectorize(u, vec, TailStrategy::GuardWithIf);
    l.compute_at(p, pto);
    Var dto = perBlock(ds, dp, dpAcc);
    rowdot.compute_at(ds, dto);
    schedulePartials(p, pto, 0, 2); // mx, l
    schedulePartials(ds, dto, 2, 3); // rowdot
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
      dv4{"dv4"}, kt{"kt"}, vt{"vt"}, dpAcc{"dpAcc"};
  Var j{"j"};
  RDom rg;
};

} // namespace

HALIDE_REGISTER_GENERATOR(Attention, stlm_attention)
HALIDE_REGISTER_GENERATOR(AttentionGrad, stlm_attention_grad)
