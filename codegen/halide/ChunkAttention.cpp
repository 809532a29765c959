//===- ChunkAttention.cpp - Halide generators: attention inside chunks ----===//
//
//   stlm_chunk_attention       q [B, L, H·hd], k, v [B, L, K·hd] -> y
//   stlm_chunk_attention_grad  q, k, v, dy -> dq, dk, dv
//
// The chunk encoder's and decoder's attention: bidirectional, over the L
// slots of one chunk, B = batch × chunks rows of it. stlm_attention's
// register tiles (8 queries × 2 vectors of keys per batch row) leave a
// chunk of 8 slots mostly idle and pay their per-row setup B times; here
// the chunks are the vector lanes instead. Every tensor is first
// transposed so that the chunk is the innermost dimension (16 chunks per
// AVX-512 vector), then every score, softmax statistic and product is one
// vector operation across chunks with dense loads, and the results are
// transposed back. Parallel over blocks of chunks. The math is
// stlm_attention's with `causal=false` (ref::attention), and the same
// kv head grouping.
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

#include <cmath>

namespace {

using namespace Halide;

template <typename Self> class ChunkAttentionBase : public Generator<Self> {
public:
  GeneratorParam<int> batch{"batch", 1}, time{"time", 8}, keys{"keys", 8},
      heads{"heads", 2}, kvHeads{"kv_heads", 2}, headDim{"head_dim", 16};

protected:
  /// Every intermediate has the chunk as two coordinates: its lane `bi`
  /// in a block of one vector of chunks (innermost) and the block `bo`
  /// (outermost), so that a block's values are contiguous (a chunk-major
  /// array of 1024 chunks would put every channel 4 KB apart: the same
  /// L1 set).
  Expr chunkOf() const { return bo * lanes() + bi; }
  int lanes() const { return this->template natural_vector_size<float>(); }

  /// `x` ([B, rows, width]) with the chunk innermost: xt(bi, w, r, bo).
  /// When B is not a whole number of vectors, reads past the last chunk
  /// (the last block's extra lanes) repeat the last one; otherwise the
  /// lanes are consecutive chunks, a strided load.
  Func chunkInner(Func x, const std::string &name) {
    Func f(name);
    Expr chunk = int(batch) % lanes() == 0
                     ? chunkOf()
                     : min(chunkOf(), int(batch) - 1);
    f(bi, w, r, bo) = x(w, r, chunk);
    transposed.push_back(f);
    return f;
  }

  /// Scores, softmax and the probabilities p(bi, u, t, h, bo) of query t of
  /// head h against key u, from the chunk-inner q and k.
  void defineProbabilities(Func qt, Func kt) {
    int H = heads, K = kvHeads, hd = headDim;
    if (H < 1 || K < 1 || H % K)
      stlm::halide::fail("stlm_chunk_attention", "kv_heads must divide heads");
    if (int(time) != int(keys))
      stlm::halide::fail("stlm_chunk_attention",
                         "queries and keys are the slots of one chunk");
    group = H / K;
    float scale = 1.0f / std::sqrt(float(hd));
    this->scale = scale;
    RDom rc(0, hd, "rc");
    s(bi, u, t, h, bo) = 0.0f;
    s(bi, u, t, h, bo) += qt(bi, h * hd + rc, t, bo) * kt(bi, (h / group) * hd + rc, u, bo);
    reductions.push_back({s, {rc.x}});
    RDom ru(0, keys, "ru");
    mx(bi, t, h, bo) = Float(32).min();
    mx(bi, t, h, bo) = max(mx(bi, t, h, bo), s(bi, ru, t, h, bo));
    reductions.push_back({mx, {ru.x}});
    e(bi, u, t, h, bo) = exp((s(bi, u, t, h, bo) - mx(bi, t, h, bo)) * scale);
    RDom ru2(0, keys, "ru_l");
    l(bi, t, h, bo) = 0.0f;
    l(bi, t, h, bo) += e(bi, ru2, t, h, bo);
    reductions.push_back({l, {ru2.x}});
    p(bi, u, t, h, bo) = e(bi, u, t, h, bo) / l(bi, t, h, bo);
    elementwise.insert(elementwise.end(), {e, p});
  }
  /// A Func whose update reduces over `rvars` (the chunk stays innermost).
  struct Reduction {
    Func f;
    std::vector<RVar> rvars;
  };

  /// Every intermediate once per call, the chunk dimension in vectors (a
  /// reduction's loop outside them), parallel over blocks of chunks.
  void scheduleChunkInner() {
    // Lanes innermost, then the reduction and the other coordinates, the
    // blocks of chunks outermost (in parallel).
    auto pure = [&](Func f) {
      f.compute_root().vectorize(bi).parallel(bo);
    };
    for (Func f : transposed)
      pure(f);
    for (Func f : elementwise)
      pure(f);
    for (Reduction &red : reductions) {
      pure(red.f);
      std::vector<VarOrRVar> order = {bi};
      for (RVar rv : red.rvars)
        order.push_back(rv);
      std::vector<Var> args = red.f.args();
      for (size_t i = 1; i < args.size(); ++i) // args[0] is bi
        order.push_back(args[i]);
      red.f.update().reorder(order).vectorize(bi).parallel(bo);
    }
  }

  /// A chunk-inner result r(b, c, row, head) written back as out [B, rows,
  /// heads·hd], rows in parallel over chunks.
  template <typename Out> void writeBack(Out &out, Func r, int width) {
    int hd = headDim;
    Func cols(r.name() + "_cols");
    int vec = lanes();
    cols(b, c, rr, h) = r(b % vec, c, rr, h, b / vec);
    out(w, rr, b) = cols(b, w % hd, rr, w / hd);
    out.dim(0).set_bounds(0, width).dim(1).set_bounds(0, time)
        .set_stride(width).dim(2).set_bounds(0, batch)
        .set_stride(width * int(time));
    Var ho("ho"), ci("ci");
    out.split(w, ho, ci, hd);
    if (hd < vec || int(batch) < vec) {
      out.vectorize(ci, std::min(vec, hd), TailStrategy::GuardWithIf)
          .parallel(b);
      return;
    }
    // Square tiles of a vector of chunks × a vector of channels: the
    // tile's chunks loaded as vectors (dense: the chunk is innermost),
    // then stored as rows of the output (register shuffles, not gathers).
    // The last tile of a head (or of the chunks) shifts back over its
    // neighbour.
    Var co("co"), cv("cv"), bo("bo"), bv("bv");
    out.tile(ci, b, co, bo, cv, bv, vec, vec, TailStrategy::ShiftInwards)
        .reorder(cv, bv, co, ho, rr, bo)
        .vectorize(cv)
        .unroll(bv)
        .parallel(bo);
    cols.compute_at(out, co)
        .vectorize(b, vec, TailStrategy::GuardWithIf)
        .unroll(c)
        .store_in(MemoryType::Stack);
  }

  template <typename In> void boundInput(In &x, int width) {
    x.dim(0).set_bounds(0, width).dim(1).set_bounds(0, time)
        .set_stride(width).dim(2).set_bounds(0, batch)
        .set_stride(width * int(time));
    x.set_host_alignment(stlm::halide::kHostAlignment);
  }

  Var b{"b"}, bi{"bi"}, bo{"bo"}, w{"w"}, r{"r"}, rr{"rr"}, u{"u"}, t{"t"},
      h{"h"}, c{"c"};
  Func s{"s"}, mx{"mx"}, e{"e"}, l{"l"}, p{"p"};
  std::vector<Func> transposed, elementwise;
  std::vector<Reduction> reductions;
  int group = 1;
  float scale = 1.0f;
};

class ChunkAttention : public ChunkAttentionBase<ChunkAttention> {
public:
  Input<Buffer<float>> q{"q", 3}, k{"k", 3}, v{"v", 3};
  Input<int32_t> offset{"offset"}; // stlm_attention's signature; unused
  Output<Buffer<float>> y{"y", 3};

  void generate() {
    int hd = headDim;
    Func qt = chunkInner(q, "qt"), kt = chunkInner(k, "kt"),
         vt = chunkInner(v, "vt");
    defineProbabilities(qt, kt);
    RDom ru(0, keys, "ru_v");
    o(bi, c, t, h, bo) = 0.0f;
    o(bi, c, t, h, bo) += p(bi, ru, t, h, bo) * vt(bi, (h / group) * hd + c, ru, bo);
    reductions.push_back({o, {ru.x}});
    writeBack(y, o, int(heads) * hd);
  }
  void schedule() {
    int hd = headDim;
    boundInput(q, int(heads) * hd);
    boundInput(k, int(kvHeads) * hd);
    boundInput(v, int(kvHeads) * hd);
    y.set_host_alignment(stlm::halide::kHostAlignment);
    scheduleChunkInner();
  }

private:
  Func o{"o"};
};

class ChunkAttentionGrad : public ChunkAttentionBase<ChunkAttentionGrad> {
public:
  Input<Buffer<float>> q{"q", 3}, k{"k", 3}, v{"v", 3}, dy{"dy", 3};
  Input<int32_t> offset{"offset"}; // stlm_attention_grad's signature; unused
  Output<Buffer<float>> dq{"dq", 3}, dk{"dk", 3}, dv{"dv", 3};

  void generate() {
    int hd = headDim;
    Func qt = chunkInner(q, "qt"), kt = chunkInner(k, "kt"),
         vt = chunkInner(v, "vt"), dyt = chunkInner(dy, "dyt");
    defineProbabilities(qt, kt);
    RDom rc(0, hd, "rc_dp"), ru(0, keys, "ru_d");
    // dp = dy · vᵀ; ds = p ⊙ (dp − Σ_u p·dp), scaled.
    dp(bi, u, t, h, bo) = 0.0f;
    dp(bi, u, t, h, bo) += dyt(bi, h * hd + rc, t, bo) * vt(bi, (h / group) * hd + rc, u, bo);
    reductions.push_back({dp, {rc.x}});
    dot(bi, t, h, bo) = 0.0f;
    dot(bi, t, h, bo) += p(bi, ru, t, h, bo) * dp(bi, ru, t, h, bo);
    reductions.push_back({dot, {ru.x}});
    ds(bi, u, t, h, bo) = p(bi, u, t, h, bo) * (dp(bi, u, t, h, bo) - dot(bi, t, h, bo)) * scale;
    elementwise.push_back(ds);
    // dq = ds · k.
    RDom ru2(0, keys, "ru_q");
    dqt(bi, c, t, h, bo) = 0.0f;
    dqt(bi, c, t, h, bo) += ds(bi, ru2, t, h, bo) * kt(bi, (h / group) * hd + c, ru2, bo);
    reductions.push_back({dqt, {ru2.x}});
    // dk = dsᵀ · q and dv = pᵀ · dy, summed over the query heads of kv
    // head j (t indexes keys here: both are [B, L, K·hd]).
    RDom rq(0, time, 0, group, "rq");
    Expr hq = h * group + rq.y;
    dkt(bi, c, t, h, bo) = 0.0f;
    dkt(bi, c, t, h, bo) += ds(bi, t, rq.x, hq, bo) * qt(bi, hq * hd + c, rq.x, bo);
    dvt(bi, c, t, h, bo) = 0.0f;
    dvt(bi, c, t, h, bo) += p(bi, t, rq.x, hq, bo) * dyt(bi, hq * hd + c, rq.x, bo);
    reductions.push_back({dkt, {rq.x, rq.y}});
    reductions.push_back({dvt, {rq.x, rq.y}});
    writeBack(dq, dqt, int(heads) * hd);
    writeBack(dk, dkt, int(kvHeads) * hd);
    writeBack(dv, dvt, int(kvHeads) * hd);
  }
  void schedule() {
    int hd = headDim;
    boundInput(q, int(heads) * hd);
    boundInput(k, int(kvHeads) * hd);
    boundInput(v, int(kvHeads) * hd);
    boundInput(dy, int(heads) * hd);
    for (auto *o : {&dq, &dk, &dv})
      o->set_host_alignment(stlm::halide::kHostAlignment);
    scheduleChunkInner();
  }

private:
  Func dp{"dp"}, dot{"dot"}, ds{"ds"}, dqt{"dqt"}, dkt{"dkt"}, dvt{"dvt"};
};

} // namespace

HALIDE_REGISTER_GENERATOR(ChunkAttention, stlm_chunk_attention)
HALIDE_REGISTER_GENERATOR(ChunkAttentionGrad, stlm_chunk_attention_grad)
