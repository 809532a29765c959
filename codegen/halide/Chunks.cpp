//===- Chunks.cpp - Halide generators: byte chunking and pooling ----------===//
//
// The byte-pool embedder's own kernels (the chunk encoder's blocks are the
// core's: matmuls, RMSNorm, bidirectional attention, SwiGLU). Row-major
// tensors; in Halide coordinates dimension 0 is the last one.
//   stlm_chunk             bytes [B, N] -> out [B, C, L], count [B]
//                          (mode fixed with stride P, words, or given: a
//                          value 512 + v is byte v opening a chunk; the
//                          value 256 ends a row)
//   stlm_pool              x [R, L, D] -> y [R, D] (kind mean | max)
//   stlm_pool_grad         x, dy [R, D] -> dx [R, L, D]
//   stlm_pool_masked       x, ids [R, L] -> y (mean over the non-pad slots)
//   stlm_pool_masked_grad  ids, dy -> dx
// Each matches its reference twin in reference/Kernels.h (chunk, pool,
// poolBackward). Values outside [0, 256] are the caller's to refuse (the
// runtime checks a batch before a kernel runs).
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

namespace {

using namespace Halide;

constexpr int kPad = 256;
/// Added to a byte of `given` chunking's input where a chunk starts.
constexpr int kStartFlag = 512;

/// `stlm.chunk` for the `fixed`, `words` and `given` rules: a scan along each
/// row keeps (chunk index, bytes in it) after every byte, then every byte is
/// scattered to its slot; chunks past capacity C are dropped.
class Chunk : public Generator<Chunk> {
public:
  GeneratorParam<int> batch{"batch", 1}, length{"length", 64},
      chunks{"chunks", 8}, slots{"slots", 8}, stride{"stride", 0};
  GeneratorParam<std::string> mode{"mode", "words"};
  Input<Buffer<int32_t>> in{"bytes", 2};
  Output<Buffer<int32_t>> out{"out", 3};
  Output<Buffer<int32_t>> count{"count", 1};

  void generate() {
    const char *name = "stlm_chunk";
    int N = length, C = chunks, L = slots, P = stride;
    if (batch < 1 || N < 1 || C < 1 || L < 1)
      stlm::halide::fail(name, "batch, length, chunks and slots must be >= 1");
    std::string m = mode;
    Expr x = in(i, b);
    // The byte a value holds: `given` strips the start flag.
    Expr byteOf = x;
    if (m == "fixed") {
      if (P < 1 || P > L)
        stlm::halide::fail(name, "fixed chunking needs 1 <= stride <= slots");
      opens(i, b) = i % P == 0;
    } else if (m == "words") {
      // Every ASCII byte that is not a letter or digit opens a chunk.
      Expr alnum = (x >= '0' && x <= '9') || (x >= 'A' && x <= 'Z') ||
                   (x >= 'a' && x <= 'z');
      opens(i, b) = x >= 0 && x < 128 && !alnum;
    } else if (m == "given") {
      opens(i, b) = x >= kStartFlag;
      byteOf = select(x >= kStartFlag, x - kStartFlag, x);
    } else {
      stlm::halide::fail(name,
                         "mode must be fixed, words or given, not '" + m + "'");
    }
    value(i, b) = byteOf;
    // pos(i) = (chunk of byte i, bytes in that chunk up to and with i,
    // whether the row ended at or before i: the value 256 is no byte, it
    // and everything after it are not chunked). Only i = 0 keeps the pure
    // definition.
    pos(i, b) = Tuple(0, 1, cast<int32_t>(in(i, b) == kPad));
    RDom r(1, N - 1, "r");
    Expr c = pos(r - 1, b)[0], fill = pos(r - 1, b)[1];
    Expr ended = pos(r - 1, b)[2] != 0 || in(r, b) == kPad;
    Expr start = opens(r, b) || fill == L;
    pos(r, b) = Tuple(select(ended, c, select(start, c + 1, c)),
                      select(ended, fill, select(start, 1, fill + 1)),
                      cast<int32_t>(ended));

    out(s, k, b) = kPad;
    RDom all(0, N, "all");
    Expr chunk = pos(all, b)[0], slot = pos(all, b)[1] - 1;
    Expr cs = clamp(slot, 0, L - 1), ck = clamp(chunk, 0, C - 1);
    Expr placed = chunk < C && pos(all, b)[2] == 0;
    out(cs, ck, b) = select(placed, value(all, b), out(cs, ck, b));
    count(b) = select(pos(0, b)[2] != 0, 0, min(pos(N - 1, b)[0] + 1, C));
  }
  void schedule() {
    stlm::halide::requireAligned(in, out, count);
    stlm::halide::boundRowMajor(in, length, batch);
    out.dim(0).set_bounds(0, slots).dim(1).set_bounds(0, chunks)
        .set_stride(slots).dim(2).set_bounds(0, batch)
        .set_stride(int(slots) * int(chunks));
    count.dim(0).set_bounds(0, batch);
    // A few thousand bytes per batch: rows in parallel, each scanned once.
    opens.compute_root().vectorize(i, 8, TailStrategy::GuardWithIf);
    pos.compute_root();
    pos.update().parallel(b);
    out.compute_root().vectorize(s, 8, TailStrategy::GuardWithIf);
    out.update().parallel(b);
  }

private:
  Var i{"i"}, b{"b"}, s{"s"}, k{"k"};
  Func opens{"opens"}, pos{"pos"}, value{"value"};
};

/// Shapes and schedules shared by the pooling kernels: x and dx are
/// [R, L, D], y and dy [R, D], ids [R, L].
template <typename Self> class PoolBase : public Generator<Self> {
public:
  GeneratorParam<int> rows{"rows", 1}, slots{"slots", 8}, width{"width", 64};

protected:
  template <typename Buf> void boundSlots(Buf &x) {
    x.dim(0).set_bounds(0, width).dim(1).set_bounds(0, slots)
        .set_stride(width).dim(2).set_bounds(0, rows)
        .set_stride(int(width) * int(slots));
  }
  template <typename Buf> void boundRows(Buf &y) {
    stlm::halide::boundRowMajor(y, width, rows);
  }
  /// Rows in parallel, the feature dimension in vectors.
  template <typename F> void scheduleRows(F &f, Var rowVar) {
    Var ro("ro"), ri("ri");
    f.split(rowVar, ro, ri, 8, TailStrategy::GuardWithIf)
        .vectorize(d, this->template natural_vector_size<float>(),
                   TailStrategy::GuardWithIf)
        .parallel(ro);
  }
  /// The number of non-pad slots of row r (masked pooling).
  void defineFilled(Func ids) {
    RDom rs(0, slots, "rs");
    filled(r) = sum(select(ids(rs, r) != kPad, 1, 0));
  }
  Var d{"d"}, s{"s"}, r{"r"};
  Func filled{"filled"};
};

class Pool : public PoolBase<Pool> {
public:
  GeneratorParam<std::string> kind{"kind", "mean"};
  Input<Buffer<float>> x{"x", 3};
  Output<Buffer<float>> y{"y", 2};

  void generate() {
    RDom rs(0, slots, "rs");
    std::string k = kind;
    if (k == "mean")
      y(d, r) = sum(x(d, rs, r)) / float(int(slots));
    else if (k == "max")
      y(d, r) = maximum(x(d, rs, r));
    else
      stlm::halide::fail("stlm_pool", "kind must be mean or max, not '" + k +
                                          "' (masked_mean: stlm_pool_masked)");
  }
  void schedule() {
    stlm::halide::requireAligned(x, y);
    boundSlots(x);
    boundRows(y);
    scheduleRows(y, r);
  }
};

class PoolGrad : public PoolBase<PoolGrad> {
public:
  GeneratorParam<std::string> kind{"kind", "mean"};
  Input<Buffer<float>> x{"x", 3};
  Input<Buffer<float>> dy{"dy", 2};
  Output<Buffer<float>> dx{"dx", 3};

  void generate() {
    std::string k = kind;
    if (k == "mean") {
      dx(d, s, r) = dy(d, r) / float(int(slots));
    } else if (k == "max") {
      // All of dy to the first maximal slot (argmax keeps the first).
      RDom rs(0, slots, "rs");
      first(d, r) = argmax(x(d, rs, r))[0];
      dx(d, s, r) = select(s == first(d, r), dy(d, r), 0.0f);
    } else {
      stlm::halide::fail("stlm_pool_grad", "kind must be mean or max, not '" +
                                               k + "'");
    }
  }
  void schedule() {
    stlm::halide::requireAligned(x, dy, dx);
    boundSlots(x);
    boundRows(dy);
    boundSlots(dx);
    scheduleRows(dx, r);
    if (std::string(kind) == "max")
      first.compute_at(dx, Var::outermost()).vectorize(
          d, natural_vector_size<float>(), TailStrategy::GuardWithIf);
  }

private:
  Func first{"first"};
};

class PoolMasked : public PoolBase<PoolMasked> {
public:
  Input<Buffer<float>> x{"x", 3};
  Input<Buffer<int32_t>> ids{"ids", 2};
  Output<Buffer<float>> y{"y", 2};

  void generate() {
    defineFilled(ids);
    RDom rs(0, slots, "rs");
    Expr total = sum(select(ids(rs, r) != kPad, x(d, rs, r), 0.0f));
    // A chunk with no byte pools to 0.
    y(d, r) = select(filled(r) > 0, total / cast<float>(max(filled(r), 1)),
                     0.0f);
  }
  void schedule() {
    stlm::halide::requireAligned(x, ids, y);
    boundSlots(x);
    stlm::halide::boundRowMajor(ids, slots, rows);
    boundRows(y);
    scheduleRows(y, r);
    filled.compute_root();
  }
};

class PoolMaskedGrad : public PoolBase<PoolMaskedGrad> {
public:
  Input<Buffer<int32_t>> ids{"ids", 2};
  Input<Buffer<float>> dy{"dy", 2};
  Output<Buffer<float>> dx{"dx", 3};

  void generate() {
    defineFilled(ids);
    dx(d, s, r) = select(ids(s, r) != kPad,
                         dy(d, r) / cast<float>(max(filled(r), 1)), 0.0f);
  }
  void schedule() {
    stlm::halide::requireAligned(ids, dy, dx);
    stlm::halide::boundRowMajor(ids, slots, rows);
    boundRows(dy);
    boundSlots(dx);
    scheduleRows(dx, r);
    filled.compute_root();
  }
};

} // namespace

HALIDE_REGISTER_GENERATOR(Chunk, stlm_chunk)
HALIDE_REGISTER_GENERATOR(Pool, stlm_pool)
HALIDE_REGISTER_GENERATOR(PoolGrad, stlm_pool_grad)
HALIDE_REGISTER_GENERATOR(PoolMasked, stlm_pool_masked)
HALIDE_REGISTER_GENERATOR(PoolMaskedGrad, stlm_pool_masked_grad)
