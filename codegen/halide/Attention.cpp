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
// the scores of the block against the keys it sees are computed into a
// 16 × S scratch (never the whole T × S), then max, exponentials, the row
// sums and the weighted sum of values. A step of fewer queries than a
// vector (decoding) transposes nothing: each score is a vector of partial
// dot products over the head's channels, then its lanes summed.
//
// Backward, two schedules (generator parameter `blocked`):
//  - materialised (short contexts): the probabilities and their gradient
//    ([H, T, S] scratch each, per block of 16 queries), then dq, dk and dv
//    reduced from them in register tiles. One batch element at a time
//    (in parallel, so the scratch stays in cache) when queries and keys
//    are as many (T = S): per kv head, the dq tiles of its query heads and
//    its own dk and dv tiles in one loop; otherwise for the whole batch
//    ([B, H, T, S]);
//  - blocked (long contexts; never more than a block × T or S per thread):
//    pass 1, parallel over blocks of 16 queries, recomputes the block's
//    probabilities and their gradient into a 16 × S scratch, forms dq
//    there and saves each row's statistics (log-sum-exp, Σ p·dp); pass 2,
//    parallel over blocks of keys, recomputes the block's probabilities
//    and their gradient against every query from those statistics into a
//    keys × T scratch and forms dk and dv there. It costs the scores and
//    dp twice (7 products per element instead of 5).
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

#include <functional>
#include <utility>

namespace {

using namespace Halide;

/// Keys × channels of all heads from which a decode step's heads run in
/// parallel (at ref-3m's shape, 4 heads of 64, one thread was faster up to
/// position 127 and two from 255: 5.6 → 3.7 µs; at stlm-100m's, 12 heads,
/// two from position 255: 16.5 → 9.5 µs; Zen 4, 2 threads).
constexpr int kParallelKeyChannels = 64 * 1024;

template <typename Self> class AttentionBase : public Generator<Self> {
public:
  GeneratorParam<int> batch{"batch", 1}, time{"time", 8}, keys{"keys", 8},
      heads{"heads", 2}, kvHeads{"kv_heads", 2}, headDim{"head_dim", 16};
  GeneratorParam<bool> causal{"causal", true};

protected:
  /// Scores, masking and softmax statistics shared by both directions.
  /// With `lanes`, each score is a vector of partial dot products over a
  /// head's channels (k's rows read as they are), then its lanes summed
  /// (sLanes, then sAcc over rl): for steps of a few queries, which read
  /// each key once and so gain nothing from transposing it first.
  void defineSoftmax(Func q, Func k, Expr offset, bool lanes = false) {
    int H = heads, K = kvHeads, hd = headDim;
    if (H < 1 || K < 1 || H % K)
      stlm::halide::fail("stlm_attention", "kv_heads must divide heads");
    group = H / K;
    scale = 1.0f / std::sqrt(float(hd));
    rc = RDom(0, hd, "rc");
    if (lanes) {
      int vec = this->template natural_vector_size<float>();
      RDom ro(0, hd / vec, "ro");
      rl = RDom(0, vec, "rl");
      Expr c = ro * vec + lane;
      sLanes(lane, u, t, h, b) = 0.0f;
      sLanes(lane, u, t, h, b) +=
          q(h * hd + c, t, b) * k((h / group) * hd + c, u, b);
      sAcc(u, t, h, b) = 0.0f;
      sAcc(u, t, h, b) += sLanes(rl, u, t, h, b);
    } else {
      sAcc(u, t, h, b) = 0.0f;
      sAcc(u, t, h, b) += q(h * hd + rc, t, b) * k((h / group) * hd + rc, u, b);
    }
    s(u, t, h, b) = sAcc(u, t, h, b);
    this->offset = offset;
    valid = sees(u);
    // Row statistics over every key (masked ones select out, which also
    // trims the keys the scores are computed at); the products with values
    // and gradients stop at the last visible key when causal.
    mx(t, h, b) = rowReduce(
        "mx",
        [&](Expr key) {
          return select(sees(key), s(key, t, h, b) * scale,
                        Float(32).min());
        },
        /*isMax=*/true);
    e(u, t, h, b) = select(valid, exp(s(u, t, h, b) * scale - mx(t, h, b)),
                           0.0f);
    l(t, h, b) = rowReduce(
        "l", [&](Expr key) { return select(sees(key), e(key, t, h, b), 0.0f); },
        /*isMax=*/false);
    ru = RDom(0, keys, "ru");
  }

  /// Key `key` is visible from query t.
  Expr sees(Expr key) const {
    return bool(causal) ? (key <= t + offset) : (key >= 0);
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
  /// transposed copy (scheduled by scheduleTransposes).
  Func keysInner(Func x, Func &store) {
    Func rows(store.name() + "_rows");
    rows(w, u, b) = x(w, u, b);
    store(u, w, b) = rows(w, u, b);
    transposes.push_back({store, rows});
    Func view(store.name() + "_view");
    view(w, u, b) = store(u, w, b);
    return view;
  }
  /// Each transpose in square tiles of one vector: the tile's rows loaded
  /// as vectors, then written as columns (register shuffles, not gathers);
  /// parallel over the batch and blocks of keys. Every key is transposed
  /// (whole tiles, the last one shifted back over its neighbour, keep the
  /// staged rows a constant size, on the stack). A step of a few queries
  /// transposes only the keys it sees, the last tile guarded (the forward
  /// of such a step transposes nothing when its heads are whole vectors:
  /// fewQueries). Without a vector of keys or of channels, gathers.
  void scheduleTransposes() {
    int vec = this->template natural_vector_size<float>();
    bool tiled = int(keys) >= vec && int(kvHeads) * int(headDim) >= vec;
    bool whole = int(time) >= vec;
    for (auto &[store, rows] : transposes) {
      if (!tiled) {
        store.compute_root().parallel(b).vectorize(u, vec,
                                                   TailStrategy::GuardWithIf);
        continue;
      }
      Var uo("tr_uo"), ui("tr_ui"), wo("tr_wo"), wi("tr_wi"), ub("tr_ub");
      store.compute_root();
      if (whole)
        store.bound(u, 0, keys);
      store
          .tile(u, w, uo, wo, ui, wi, vec, vec,
                whole ? TailStrategy::ShiftInwards : TailStrategy::GuardWithIf)
          .vectorize(ui)
          .unroll(wi)
          .reorder(ui, wi, wo, uo, b);
      // A decode step's keys are too few to share: threads writing
      // neighbouring keys of a row (whose length is the step's) shared
      // cache lines, and the step ran slower on 2 threads than on 1.
      if (whole)
        store.fuse(uo, b, ub).parallel(ub);
      else
        store.parallel(b);
      rows.compute_at(store, wo)
          .vectorize(w, vec, TailStrategy::GuardWithIf)
          .unroll(u)
          .store_in(MemoryType::Stack);
    }
  }

  /// A dense [batch, rows, width] buffer: the strides are part of the
  /// kernel, so a row's address is a constant offset from the first's (the
  /// register tiles' broadcast rows need no address arithmetic).
  template <typename B> void boundDense(B &x, int width, int rows) {
    x.dim(0).set_bounds(0, width).dim(1).set_bounds(0, rows).set_stride(width)
        .dim(2).set_bounds(0, batch).set_stride(width * rows);
  }

  void boundQKV(Internal::GeneratorInput_Buffer<Buffer<float>> &q,
                Internal::GeneratorInput_Buffer<Buffer<float>> &k,
                Internal::GeneratorInput_Buffer<Buffer<float>> &v) {
    int W = int(heads) * int(headDim), WK = int(kvHeads) * int(headDim);
    boundDense(q, W, time);
    boundDense(k, WK, keys);
    boundDense(v, WK, keys);
    stlm::halide::requireAligned(q, k, v);
  }

  Var c{"c"}, h{"h"}, t{"t"}, u{"u"}, b{"b"}, w{"w"};
  Func s{"s"}, sAcc{"sAcc"}, sLanes{"sLanes"}, mx{"mx"}, e{"e"}, l{"l"};
  RDom rl;    // sLanes' lanes (defineSoftmax with `lanes`)
  Expr valid; // key u visible from query t
  Expr offset;
  Var lane{"lane"};
  std::vector<Func> partials;
  std::vector<std::pair<Func, Func>> transposes; // (transposed, rows)
  RDom ru, rc;
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
    if (fewQueries())
      defineSoftmax(q, k, offset, /*lanes=*/true);
    else
      defineSoftmax(q, keysInner(k, kt), offset);
    // Up to the last key a register tile of R queries sees (e is 0 past
    // a query's own last key); the clamp shows bounds inference the trim.
    int R = std::max(1, valueTileRows());
    rk = RDom(0, keys, "rk");
    Expr lastKey = int(keys) - 1;
    if (bool(causal)) {
      Expr tileLast = (t / R) * R + (R - 1) + offset;
      rk.where(rk <= tileLast);
      lastKey = max(0, min(tileLast, lastKey));
    }
    Expr key = clamp(rk, 0, lastKey);
    acc(c, t, h, b) = 0.0f;
    acc(c, t, h, b) += e(key, t, h, b) * v((h / group) * hd + c, key, b);
    out(c, h, t, b) =
        select(l(t, h, b) > 0.0f, acc(c, t, h, b) / l(t, h, b), 0.0f);
    y(w, t, b) = out(w % hd, w / hd, t, b);
  }
  void schedule() {
    boundQKV(q, k, v);
    int hd = headDim;
    boundDense(y, int(heads) * hd, time);
    stlm::halide::requireAligned(y);
    int vec = natural_vector_size<float>();
    // Blocks of queries: 16, or the whole (short) time of a decode step.
    int block = std::min(16, int(time));
    bool whole = int(time) % block == 0;
    Var hh("hh"), cc("cc"), to("to"), ti("ti"), tb("tb");
    bool few = fewQueries();
    y.split(w, hh, cc, hd).split(t, to, ti, block, TailStrategy::GuardWithIf);
    if (few) {
      // Sequences in parallel, and their heads once a step sees enough
      // keys to pay for waking the pool (kParallelKeyChannels: below it
      // the second thread made short steps slower).
      y.reorder(cc, ti, to, hh, b).parallel(b);
    } else {
      y.reorder(cc, ti, hh, to, b).fuse(to, b, tb).parallel(tb);
    }
    y.vectorize(cc, std::min(vec, hd), TailStrategy::GuardWithIf);
    // Keys transposed once per call (not for a step of few queries); per
    // head and block of queries the scores against the keys it sees
    // (register tiles), the softmax, then per 4 queries the weighted sum of
    // values in registers (4 × hd/vec vectors, one broadcast of e per query
    // and key).
    scheduleTransposes();
    s.compute_at(y, hh);
    if (few) {
      // Per key, hd / vec multiply-adds into one vector, then its lanes
      // summed in registers.
      sAcc.compute_at(s, u);
      sAcc.update().atomic().vectorize(rl);
      sLanes.compute_at(s, u).vectorize(lane);
      sLanes.update().vectorize(lane);
    } else {
      bool tiled = whole && block % 8 == 0 && keysTile();
      if (tiled) // the block's queries exactly (the select bounds are loose)
        s.bound_extent(t, block);
      tileDots(s, sAcc, tiled);
    }
    mx.compute_at(y, hh);
    schedulePartials(y, hh, 0, 2); // mx, l
    e.compute_at(y, hh).vectorize(u, vec, TailStrategy::GuardWithIf);
    l.compute_at(y, hh);
    int lanes = std::min(vec, hd);
    if (int rows = valueTileRows()) {
      Var t4("t4"), ti4("ti4");
      y.split(ti, t4, ti4, rows).reorder(cc, ti4, t4);
      acc.compute_at(y, t4).vectorize(c, lanes).unroll(c).unroll(t);
      acc.update()
          .reorder(c, t, rk)
          .vectorize(c, lanes)
          .unroll(c)
          .unroll(t);
    } else {
      acc.compute_at(y, hh).vectorize(c, lanes, TailStrategy::GuardWithIf);
      acc.update().reorder(c, rk, t).vectorize(c, lanes,
                                              TailStrategy::GuardWithIf);
    }
    // Last: a specialization copies the schedule as it stands.
    if (few)
      y.specialize((Expr(offset) + 1) * int(heads) * hd >= kParallelKeyChannels)
          .parallel(hh);
  }

private:
  /// A step of fewer queries than a vector (decoding), whose heads are
  /// whole vectors: scores as sums of lanes (defineSoftmax's `lanes`).
  bool fewQueries() {
    int vec = natural_vector_size<float>();
    return int(time) < vec && int(headDim) % vec == 0;
  }
  /// Queries per register tile of the weighted sum of values: 4 (4 ×
  /// hd/vec vectors) when the blocks are whole and a head is at most 4
  /// vectors; 0 for no tiles.
  int valueTileRows() {
    int vec = natural_vector_size<float>(), hd = headDim;
    int block = std::min(16, int(time)), lanes = std::min(vec, hd);
    bool whole = int(time) % block == 0;
    return whole && block % 4 == 0 && hd % lanes == 0 && hd / lanes <= 4 ? 4
                                                                        : 0;
  }

  Func acc{"acc"}, out{"out"}, kt{"kt"};
  RDom rk;
};

class AttentionGrad : public AttentionBase<AttentionGrad> {
public:
  GeneratorParam<bool> blocked{"blocked", false};
  Input<Buffer<float>> q{"q", 3}, k{"k", 3}, v{"v", 3}, dy{"dy", 3};
  Input<int32_t> offset{"offset"};
  Output<Buffer<float>> dq{"dq", 3}, dk{"dk", 3}, dv{"dv", 3};

  void generate() {
    int hd = headDim, T = time;
    kview = keysInner(k, kt);
    defineSoftmax(q, kview, offset);
    vview = keysInner(v, vt);
    p(u, t, h, b) = select(l(t, h, b) > 0.0f, e(u, t, h, b) / l(t, h, b), 0.0f);
    dpAcc(u, t, h, b) = 0.0f;
    dpAcc(u, t, h, b) +=
        dy(h * hd + rc, t, b) * vview((h / group) * hd + rc, u, b);
    dp(u, t, h, b) = dpAcc(u, t, h, b);
    rowdot(t, h, b) = rowReduce(
        "rowdot",
        [&](Expr key) {
          return select(this->sees(key), p(key, t, h, b) * dp(key, t, h, b),
                        0.0f);
        },
        /*isMax=*/false);
    ds(u, t, h, b) = select(valid, p(u, t, h, b) * (dp(u, t, h, b) -
                                                     rowdot(t, h, b)) * scale,
                            0.0f);

    // The causal predicates trim the loops; the clamps (no-ops inside
    // them) keep bounds inference from widening what it computes. A
    // predicate holds for a whole register tile of R rows (its last query,
    // its first key): the products it lets through past a row's own bound
    // are zeros of ds and p, and the tile's rows need no branches.
    int R = tileRows();
    Expr lastKey = int(keys) - 1;
    if (bool(causal)) {
      Expr tileLast = (t / R) * R + (R - 1) + offset;
      ru.where(ru <= tileLast);
      lastKey = max(0, min(tileLast, lastKey));
    }
    Expr key = clamp(ru, 0, lastKey);
    dq4(c, h, t, b) = 0.0f;
    dq4(c, h, t, b) += ds(key, t, h, b) * k((h / group) * hd + c, key, b);

    // kv head j collects the query heads j·group … j·group + group − 1.
    rg = RDom(0, group, 0, T, "rg");
    Expr firstQuery = 0;
    if (bool(causal)) {
      Expr tileFirst = (u / R) * R - offset;
      rg.where(rg.y >= tileFirst);
      firstQuery = max(0, min(tileFirst, T - 1));
    }
    Expr hq = j * group + rg.x, query = clamp(rg.y, firstQuery, T - 1);
    Func pk = p, dsk = ds;
    if (bool(blocked)) {
      // Pass 1 keeps each row's statistics beside dq (one loop nest, so
      // the block's scores are computed once for both): at channel 0 the
      // log of the softmax denominator (max + log sum), at 1 Σ p·dp.
      if (hd < 2)
        stlm::halide::fail("stlm_attention_grad",
                           "blocked needs head_dim >= 2");
      qside(c, h, t, b) = Tuple(
          dq4(c, h, t, b),
          select(c == 0, mx(t, h, b) + log(l(t, h, b)), rowdot(t, h, b)));
      dq(w, t, b) = qside(w % hd, w / hd, t, b)[0];
      recomputeFromStatistics();
      pk = pK;
      dsk = dsK;
    }
    dk4(c, j, u, b) = 0.0f;
    dk4(c, j, u, b) += dsk(u, query, hq, b) * q(hq * hd + c, query, b);
    dv4(c, j, u, b) = 0.0f;
    dv4(c, j, u, b) += pk(u, query, hq, b) * dy(hq * hd + c, query, b);
    if (bool(blocked)) {
      kside(c, j, u, b) = Tuple(dk4(c, j, u, b), dv4(c, j, u, b));
      dk(w, u, b) = kside(w % hd, w / hd, u, b)[0];
      dv(w, u, b) = kside(w % hd, w / hd, u, b)[1];
    } else if (perBatch()) {
      // One loop nest for the three: per kv head j, its group's query
      // heads j·group + g (dq) and j itself (dk, dv; the same tile for
      // every g, computed once per j). Rows are queries for dq and keys
      // for dk and dv (as many).
      int G = group;
      bside(c, g, j, t, b) =
          Tuple(dq4(c, j * G + g, t, b), dk4(c, j, t, b), dv4(c, j, t, b));
      dq(w, t, b) = bside(w % hd, (w / hd) % G, (w / hd) / G, t, b)[0];
      dk(w, u, b) = bside(w % hd, 0, w / hd, u, b)[1];
      dv(w, u, b) = bside(w % hd, 0, w / hd, u, b)[2];
    } else {
      dq(w, t, b) = dq4(w % hd, w / hd, t, b);
      dk(w, u, b) = dk4(w % hd, w / hd, u, b);
      dv(w, u, b) = dv4(w % hd, w / hd, u, b);
    }
  }
  /// The materialised backward one batch element at a time (its
  /// probabilities stay in cache for dq, dk and dv): when queries and keys
  /// are as many, so that dq's rows and dk's and dv's share a loop.
  bool perBatch() { return !bool(blocked) && int(time) == int(keys); }

  /// Pass 2's probabilities pK and their gradient dsK, recomputed from
  /// pass 1's row statistics.
  void recomputeFromStatistics() {
    int hd = headDim;
    // Clamped rows: the tiles' aligned regions end at T, but bounds
    // inference cannot prove it.
    Expr tq = clamp(t, 0, int(time) - 1);
    Expr lse = qside(0, h, tq, b)[1], D = qside(1, h, tq, b)[1];
    sAccK(u, t, h, b) = 0.0f;
    sAccK(u, t, h, b) +=
        q(h * hd + rc, tq, b) * kview((h / group) * hd + rc, u, b);
    sK(u, t, h, b) = sAccK(u, t, h, b);
    // A row that sees a key has a finite lse; one that sees none has
    // no valid key.
    pK(u, t, h, b) = select(valid, exp(sK(u, t, h, b) * scale - lse), 0.0f);
    dpAccK(u, t, h, b) = 0.0f;
    dpAccK(u, t, h, b) +=
        dy(h * hd + rc, tq, b) * vview((h / group) * hd + rc, u, b);
    dpK(u, t, h, b) = dpAccK(u, t, h, b);
    dsK(u, t, h, b) = pK(u, t, h, b) * (dpK(u, t, h, b) - D) * scale;
  }

  void schedule() {
    boundQKV(q, k, v);
    int hd = headDim, W = int(heads) * hd, WK = int(kvHeads) * hd;
    boundDense(dy, W, time);
    boundDense(dq, W, time);
    boundDense(dk, WK, keys);
    boundDense(dv, WK, keys);
    stlm::halide::requireAligned(dy, dq, dk, dv);
    // Keys and values transposed once.
    scheduleTransposes();
    if (bool(blocked))
      scheduleBlocked();
    else
      scheduleMaterialised();
  }

private:
  /// Register tiles for dq = ds · k, dk = dsᵀ · q and dv = pᵀ · dy per
  /// head: R rows (queries for dq, keys for dk and dv) × one head's hd
  /// columns (hd / vec vectors), accumulated over the reduction with one
  /// broadcast of ds or p per row, like the matmul micro-kernel.
  int tileLanes() {
    return std::min(natural_vector_size<float>(), int(headDim));
  }
  int tileRows() {
    return std::max(1, 16 / std::max(1, int(headDim) / tileLanes()));
  }
  /// `whole`: every tile has all R rows (otherwise the rows are a loop).
  void tileAccumulator(Func acc, Var row, const std::vector<VarOrRVar> &red,
                       Func at, Var level, bool whole = true) {
    int lanes = tileLanes();
    acc.compute_at(at, level)
        .vectorize(c, lanes, TailStrategy::GuardWithIf)
        .unroll(c);
    std::vector<VarOrRVar> order = {c, row};
    order.insert(order.end(), red.begin(), red.end());
    acc.update()
        .reorder(order)
        .vectorize(c, lanes, TailStrategy::GuardWithIf)
        .unroll(c);
    if (whole) {
      acc.unroll(row);
      acc.update().unroll(row);
    }
  }

  void scheduleMaterialised() {
    int vec = natural_vector_size<float>(), hd = headDim;
    // Probabilities and their gradient for every batch element (in
    // parallel), head and block of 16 queries: the block's scores and dp
    // in register tiles (see tileDots), only up to the last key the block
    // sees (the selects on `valid` bound them).
    int block = std::min(16, int(time));
    bool tiles = int(time) % block == 0 && block % 8 == 0 && keysTile();
    bool batchwise = perBatch();
    if (batchwise)
      bside.compute_root();
    auto perBlock = [&](Func f, Func dots, Func accum) {
      Var to("to"), ti("ti");
      // Every query (the consumers' trimmed regions would start the
      // blocks off the grid the tiles assume).
      if (batchwise)
        f.compute_at(bside, b);
      else
        f.compute_root().parallel(b);
      f.bound(t, 0, time)
          .split(t, to, ti, block, TailStrategy::GuardWithIf)
          .reorder(u, ti, to, h, b)
          .vectorize(u, vec, TailStrategy::GuardWithIf);
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
    if (batchwise) {
      // Per batch element (in parallel): its probabilities, then per
      // block of R rows (queries for dq, keys for dk and dv) and head the
      // three register tiles.
      Var ro("ro"), ri("ri");
      bside.bound(g, 0, group)
          .split(t, ro, ri, tileRows(), TailStrategy::GuardWithIf)
          .reorder(c, ri, g, j, ro, b)
          .vectorize(c, tileLanes(), TailStrategy::GuardWithIf)
          .parallel(b);
      tileAccumulator(dq4, t, {ru.x}, bside, g);
      tileAccumulator(dk4, u, {rg.x, rg.y}, bside, j);
      tileAccumulator(dv4, u, {rg.x, rg.y}, bside, j);
      copyOut(dq);
      copyOut(dk);
      copyOut(dv);
      return;
    }
    auto tile = [&](Func out, Func acc, Var row,
                    const std::vector<VarOrRVar> &reduction) {
      Var hh("hh"), cc("cc"), ro("ro"), ri("ri"), rb("rb");
      out.split(w, hh, cc, hd)
          .split(row, ro, ri, tileRows(), TailStrategy::GuardWithIf)
          .reorder(cc, ri, hh, ro, b)
          .vectorize(cc, tileLanes(), TailStrategy::GuardWithIf)
          .fuse(ro, b, rb)
          .parallel(rb);
      tileAccumulator(acc, row, reduction, out, hh);
    };
    tile(dq, dq4, t, {ru.x});
    tile(dk, dk4, u, {rg.x, rg.y});
    tile(dv, dv4, u, {rg.x, rg.y});
  }

  void scheduleBlocked() {
    int vec = natural_vector_size<float>(), lanes = tileLanes(),
        rows = tileRows();
    // Pass 1: per batch element, block of 16 queries and head (parallel
    // over batch × blocks), the scores and dp against the keys the block
    // sees (register tiles), the row statistics, ds, then dq in register
    // tiles of R queries.
    int block = std::min(16, int(time));
    bool tiles = int(time) % block == 0 && block % 8 == 0 && keysTile();
    Var to("to"), ti("ti"), tb("tb"), tr("tr"), tii("tii");
    qside.compute_root()
        .split(t, to, ti, block, TailStrategy::GuardWithIf)
        .split(ti, tr, tii, rows, TailStrategy::GuardWithIf)
        .reorder(c, tii, tr, h, to, b)
        .fuse(to, b, tb)
        .vectorize(c, lanes, TailStrategy::GuardWithIf)
        .parallel(tb);
    for (auto [dots, accum] : {std::pair{s, sAcc}, std::pair{dp, dpAcc}}) {
      dots.compute_at(qside, h);
      if (tiles)
        dots.bound_extent(t, block);
      tileDots(dots, accum, tiles);
    }
    for (Func f : {mx, l, rowdot})
      f.compute_at(qside, h);
    for (Func f : {e, ds})
      f.compute_at(qside, h).vectorize(
          u, vec, TailStrategy::GuardWithIf);
    schedulePartials(qside, h, 0, 3); // mx, l, rowdot
    tileAccumulator(dq4, t, {ru.x}, qside, tr, int(time) % 16 == 0);
    copyOut(dq);

    // Pass 2: per batch element, block of 2 vectors of keys and kv head
    // (parallel over batch × blocks), the probabilities and dp of the
    // group's query heads against every query that sees the block
    // (register tiles, keys inner), then dk and dv in register tiles of R
    // keys.
    int kb = 2 * vec;
    bool ktiles = int(keys) % kb == 0 && int(time) % 8 == 0;
    Var uo("uo"), ui("ui"), ub("ub"), ur("ur"), uii("uii");
    kside.compute_root()
        .split(u, uo, ui, kb, TailStrategy::GuardWithIf)
        .split(ui, ur, uii, rows, TailStrategy::GuardWithIf)
        .reorder(c, uii, ur, j, uo, b)
        .fuse(uo, b, ub)
        .vectorize(c, lanes, TailStrategy::GuardWithIf)
        .parallel(ub);
    for (auto [dots, accum] : {std::pair{sK, sAccK}, std::pair{dpK, dpAccK}}) {
      dots.compute_at(kside, j);
      if (ktiles)
        dots.bound_extent(u, kb).align_bounds(t, 8);
      tileDots(dots, accum, ktiles);
    }
    for (Func f : {pK, dsK})
      f.compute_at(kside, j).vectorize(
          u, vec, TailStrategy::GuardWithIf);
    bool wholeKeys = int(keys) % kb == 0;
    tileAccumulator(dk4, u, {rg.x, rg.y}, kside, ur, wholeKeys);
    tileAccumulator(dv4, u, {rg.x, rg.y}, kside, ur, wholeKeys);
    copyOut(dk);
    copyOut(dv);
  }
  /// An output copied from a pass's per-head result: per batch element
  /// (in parallel), head and vector of channels.
  void copyOut(Func out) {
    Var hh("hh"), cc("cc");
    out.split(w, hh, cc, headDim)
        .vectorize(cc, tileLanes(), TailStrategy::GuardWithIf)
        .parallel(b);
  }

  Func p{"p"}, dp{"dp"}, rowdot{"rowdot"}, ds{"ds"}, dq4{"dq4"}, dk4{"dk4"},
      dv4{"dv4"}, kt{"kt"}, vt{"vt"}, dpAcc{"dpAcc"};
  // The blocked backward's passes and pass 2's recomputation.
  Func bside{"bside"}, qside{"qside"}, kside{"kside"}, sAccK{"sAccK"}, sK{"sK"}, pK{"pK"},
      dpAccK{"dpAccK"}, dpK{"dpK"}, dsK{"dsK"};
  Func kview, vview;
  Var j{"j"}, g{"g"};
  RDom rg;
};

} // namespace

HALIDE_REGISTER_GENERATOR(Attention, stlm_attention)
HALIDE_REGISTER_GENERATOR(AttentionGrad, stlm_attention_grad)
