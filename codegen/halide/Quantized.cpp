//===- Quantized.cpp - the int8 / int4 weight matvec ----------------------===//
//
//   stlm_qmatvec_int8  a [m, k] f32, w [n, k] i8, scale [n, k/group] f32
//                      -> c [m, n] f32
//   stlm_qmatvec_int4  the same with w [n, k/2] u8
//
// The arithmetic of support/Quantize.h, which is its reference twin: each
// row of `a` is quantized to int8 (s = max|a| / 127, q = round(a · (1/s))
// with halves away from zero, clamped to ±127), each group's products are
// summed exactly in int32, and c[i, j] = Σ_g (scale[j, g] · s_i) · dot_g
// with the groups added in order in f32, so the kernel and the twin agree
// bit for bit. int4 weights are two per byte, the even input in the low
// nibble, each stored as q + 8.
//
// The integer products are unsigned × signed byte dot products of four
// (vpdpbusd where the target has VNNI, widening multiply-adds otherwise):
//   - int8: Σ q·w = Σ (q + 128)·w − 128 Σ w, q + 128 ≤ 255 unsigned, Σ w a
//     dot product with ones;
//   - int4: Σ (u − 8)·q = Σ u·q − 8 Σ q, the nibble u ≤ 15 unsigned, the
//     row's q split into its even and odd inputs (the low and high
//     nibbles' partners) and summed per group once per row.
// Both are exact in int32, so any order of the integer sums gives the
// twin's dot. Row by row: a weight row is read as 4-byte lanes, whose
// sums stay in registers until a tree of vector adds turns them into group
// sums; the groups' terms are stored output-minor, so that the f32 sums
// run over 16 outputs at once, group after group, in the twin's order. A
// group must be a whole number of lanes (a multiple of 4 inputs for int8,
// 8 for int4); other groups take a plain schedule of the same arithmetic.
//
//   stlm_qmatvec_tiled_int8, stlm_qmatvec_tiled_int4
//                      the same product, the weights and scales in the
//                      tile layout of support/QuantTiles.h (1-d buffers),
//                      which the runtime arranges when it loads a
//                      checkpoint: a 64-byte load is 16 outputs × 4
//                      inputs (int8) or 8 (int4, a nibble each), so one
//                      dot product of four (vpdpbusd) with 4 input bytes
//                      broadcast adds to 16 outputs' sums,
//                      and a group's sums of 16 outputs end in one vector
//                      with no reduction across lanes; int8 weights are
//                      stored + 128 (unsigned), less 128 Σ q after. For
//                      any number of rows: tiles of up to 8 rows × 16
//                      outputs in registers.
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"
#include "support/QuantTiles.h"

#include <type_traits>

using namespace Halide;

namespace {

/// Each row's int8 form, the arithmetic both generators share:
/// amax(i) = max |a(·, i)|, inv(i) = 127 / amax (0 for a zero row), and
/// qa(x, i) = clamp(round(a(x, i) · inv(i)), ±127) with halves away from
/// zero. strict_float: the twin's f32 steps, no contraction.
void quantizeRows(Func a, int K, Var x, Var i, Func amax, Func inv, Func qa) {
  RDom rk(0, K, "rk");
  amax(i) = maximum(abs(a(rk, i)));
  Expr s = amax(i) / 127.0f, r1 = 1.0f / s;
  inv(i) = strict_float(select(s > 0.0f && is_finite(r1), r1, 0.0f));
  Expr v = a(x, i) * inv(i);
  // round(): halves away from zero (Halide's round is to even). v − t is
  // exact in f32 for |v| < 2^23, and v is clamped to ±127 after.
  Expr t = trunc(v);
  Expr r = select(abs(v - t) >= 0.5f, t + select(v < 0.0f, -1.0f, 1.0f), t);
  qa(x, i) = cast<int8_t>(strict_float(clamp(r, -127.0f, 127.0f)));
}

/// A group's term and the row's sum over the groups in order, as the twin
/// computes them: c(j, i) = Σ_g (d · (amax(i) / 127)) · dot, strict_float
/// (no fused multiply-add).
void sumGroups(Func c, Func term, RDom ro, Var g, Var j, Var i, Expr d,
               Expr dot, Func amax) {
  term(g, j, i) = strict_float((d * (amax(i) / 127.0f)) * cast<float>(dot));
  c(j, i) = 0.0f;
  c(j, i) = strict_float(c(j, i) + term(ro, j, i));
}

/// Weight bytes × rows below which a matvec runs on the calling thread:
/// waking the pool costs more than a few microseconds of dot products save.
constexpr int64_t kParallelBytes = 96 * 1024;
/// Weight bytes × rows a task of the tiled matvec covers, about.
constexpr int64_t kTaskBytes = 128 * 1024;

template <bool Int4>
class QuantizedMatVec : public Generator<QuantizedMatVec<Int4>> {
public:
  template <typename T> using Param = GeneratorParam<T>;
  template <typename T> using In = GeneratorInput<T>;
  using Weight = std::conditional_t<Int4, uint8_t, int8_t>;
  static constexpr const char *kName =
      Int4 ? "stlm_qmatvec_int4" : "stlm_qmatvec_int8";

  Param<int> m{"m", 1};  // rows of a and c
  Param<int> n{"n", 64}; // outputs: rows of w, columns of c
  Param<int> k{"k", 64}; // inputs
  Param<int> group{"group", 32};

  In<Buffer<float>> a{"a", 2};              // [m, k]
  In<Buffer<Weight>> w{"w", 2};             // [n, k] or [n, k/2]
  In<Buffer<float>> scale{"scale", 2};      // [n, k/group]
  GeneratorOutput<Buffer<float>> c{"c", 2}; // [m, n]

  void generate() {
    const int M = m, N = n, K = k, G = group;
    if (M < 1 || N < 1 || K < 1 || G < 1 || K % G != 0 || (Int4 && G % 2 != 0))
      stlm::halide::fail(kName,
                         "m, n, k and group must be positive, the group must "
                         "divide k (and be even for int4)");
    quantizeRows(a, K, x, i, amax, inv, qa);
    // A group's bytes of a weight row, summed as unsigned × signed byte
    // dot products of four.
    groupBytes = Int4 ? G / 2 : G;
    groups = K / G;
    fast = groupBytes % 4 == 0;
    ro = RDom(0, groups, "ro");
    Expr dotG;
    if (!fast) {
      // The plain schedule's arithmetic: each group's exact dot product.
      Func qw("qw");
      if (!Int4) {
        qw(x, j) = cast<int32_t>(w(x, j));
      } else {
        Expr byte = cast<int32_t>(w(x / 2, j));
        qw(x, j) = select(x % 2 == 0, byte & 15, byte >> 4) - 8;
      }
      RDom rg(0, G, "rg");
      dot(g, j, i) = sum(qw(g * G + rg, j) * cast<int32_t>(qa(g * G + rg, i)));
      dotG = dot(g, j, i);
    } else {
      // part(l, j, i): the 4 products of lane l (4 bytes of the row), one
      // unsigned × signed dot product; a group is a run of lanes.
      r4 = RDom(0, 4, "r4");
      Expr b = l * 4 + r4;
      part(l, j, i) = 0;
      if (!Int4) {
        // (q + 128) · w, unsigned × signed, less 128 Σ w: the lane's Σ w is
        // a dot product of w with a vector of ones (a buffer, so that it
        // stays a dot product).
        biased(x, i) = cast<uint8_t>(cast<int16_t>(qa(x, i)) + 128);
        ones(x) = cast<uint8_t>(1);
        part(l, j, i) += cast<int32_t>(biased(b, i)) * cast<int32_t>(w(b, j));
        wpart(l, j) = 0;
        wpart(l, j) += cast<int32_t>(ones(b)) * cast<int32_t>(w(b, j));
      } else {
        // The row's q at even and odd inputs (the low and high nibbles'
        // partners).
        even(x, i) = qa(2 * x, i);
        odd(x, i) = qa(2 * x + 1, i);
        Expr wb = w(b, j);
        part(l, j, i) +=
            cast<int32_t>(wb & cast<uint8_t>(15)) * cast<int32_t>(even(b, i));
        part(l, j, i) +=
            cast<int32_t>(wb >> cast<uint8_t>(4)) * cast<int32_t>(odd(b, i));
        RDom rq(0, G, "rq");
        qsum(g, i) = sum(cast<int32_t>(qa(g * G + rq, i)));
      }
      rr = RDom(0, groupBytes / 4, "rl");
      dot(g, j, i) = 0;
      Expr lane = g * (groupBytes / 4) + rr;
      dot(g, j, i) +=
          Int4 ? part(lane, j, i) : part(lane, j, i) - 128 * wpart(lane, j);
      dotG = Int4 ? dot(g, j, i) - 8 * qsum(g, i) : dot(g, j, i);
    }
    sumGroups(c, term, ro, g, j, i, scale(g, j), dotG, amax);
  }

  void schedule() {
    const int M = m, N = n, K = k;
    stlm::halide::requireAligned(a, scale, c);
    stlm::halide::boundRowMajor(a, K, M);
    stlm::halide::boundRowMajor(w, Int4 ? K / 2 : K, N);
    stlm::halide::boundRowMajor(scale, groups, N);
    stlm::halide::boundRowMajor(c, N, M);
    // The rows' quantization once.
    amax.compute_root();
    inv.compute_root();
    const int vec = this->template natural_vector_size<float>();
    qa.compute_root().vectorize(x, vec, TailStrategy::GuardWithIf);
    if (!fast) {
      Var jo("jo"), ji("ji");
      const int block = std::max(1, std::min(64, N / 16));
      c.compute_root();
      c.update()
          .split(j, jo, ji, block, TailStrategy::GuardWithIf)
          .reorder(i, ji, jo)
          .parallel(jo);
      dot.compute_at(c, ji);
      return;
    }
    auto largestDividing = [](int of, std::initializer_list<int> sizes,
                              int limit) {
      for (int v : sizes)
        if (of % v == 0 && v <= limit)
          return v;
      return 1;
    };
    // Blocks of outputs across threads. For each row of `a`: each output's
    // group sums and terms (over `groupsPerVector` groups at once), the
    // terms stored output-minor, then the sums in group order over the
    // block's outputs as one vector.
    const int rowsPerBlock = largestDividing(N, {16, 8, 4}, N);
    Var jo("jo"), ji("ji");
    c.compute_root();
    c.update().split(j, jo, ji, rowsPerBlock).reorder(ji, ro.x, i, jo);
    const int64_t work = int64_t(M) * N * (Int4 ? K / 2 : K);
    if (work >= kParallelBytes)
      c.update().parallel(jo);
    if (rowsPerBlock > 1)
      c.update().vectorize(ji);
    const int termVector = largestDividing(groups, {16, 8, 4}, groups);
    term.compute_at(c, i).reorder_storage(j, g);
    if (termVector > 1)
      term.vectorize(g, termVector);
    // The row's lanes in registers, `lanes` a vector (vpdpbusd where the
    // target has VNNI); then each group's lanes summed as a tree of vector
    // adds over `groupsPerVector` groups at once (Halide halves a vector
    // reduction stage by stage), a long group in chunks of up to 64 lanes.
    const int groupLanes = groupBytes / 4;
    const int chunk = largestDividing(groupLanes, {64, 32, 16, 8, 4, 2}, 64);
    const int groupsPerVector =
        chunk == groupLanes
            ? largestDividing(groups, {16, 8, 4, 2}, 64 / groupLanes)
            : 1;
    const int stepLanes = chunk < groupLanes ? chunk : groupsPerVector * chunk;
    const int lanes = largestDividing(stepLanes, {16, 8, 4}, stepLanes);
    dot.compute_at(term, j);
    if (groupsPerVector > 1)
      dot.vectorize(g, groupsPerVector);
    // The lanes of one step (up to 64: a group chunk, or groupsPerVector
    // groups) at a time, so that they stay in registers.
    LoopLevel step;
    {
      Stage update = dot.update();
      RVar inner = rr.x;
      if (chunk < groupLanes) {
        RVar outer("rlo");
        inner = RVar("rli");
        update.split(rr.x, outer, inner, chunk);
        step = LoopLevel(dot, outer);
      } else {
        Var go("go"), gi("gi");
        update.split(g, go, gi, groupsPerVector);
        if (groupsPerVector > 1)
          update.vectorize(gi);
        step = LoopLevel(dot, go);
      }
      if (chunk > 1)
        update.atomic().vectorize(inner);
    }
    Var lo("lo"), li("li");
    auto lanesInRegisters = [&](Func f, int updates) {
      f.compute_at(step)
          .store_in(MemoryType::Register)
          .split(l, lo, li, lanes)
          .vectorize(li)
          .unroll(lo);
      for (int u = 0; u < updates; ++u)
        f.update(u)
            .split(l, lo, li, lanes)
            .reorder(r4.x, li, lo)
            .atomic()
            .vectorize(r4.x)
            .vectorize(li)
            .unroll(lo);
    };
    lanesInRegisters(part, Int4 ? 2 : 1);
    if (!Int4) {
      lanesInRegisters(wpart, 1);
      biased.compute_root().vectorize(x, 4 * vec, TailStrategy::GuardWithIf);
      ones.compute_root().vectorize(x, 4 * vec, TailStrategy::GuardWithIf);
    } else {
      even.compute_root().vectorize(x, 4 * vec, TailStrategy::GuardWithIf);
      odd.compute_root().vectorize(x, 4 * vec, TailStrategy::GuardWithIf);
      qsum.compute_root();
    }
  }

private:
  Var x{"x"}, i{"i"}, j{"j"}, g{"g"}, l{"l"};
  Func amax{"amax"}, inv{"inv"}, qa{"qa"}, dot{"dot"}, term{"term"},
      part{"part"}, wpart{"wpart"}, biased{"biased"}, ones{"ones"},
      even{"even"}, odd{"odd"}, qsum{"qsum"};
  RDom rr, ro, r4;
  int groups = 1, groupBytes = 1;
  bool fast = false;
};

/// The matvec on weights and scales in the tile layout of
/// support/QuantTiles.h.
template <bool Int4>
class QuantizedTiledMatVec : public Generator<QuantizedTiledMatVec<Int4>> {
public:
  template <typename T> using Param = GeneratorParam<T>;
  template <typename T> using In = GeneratorInput<T>;
  using Weight = std::conditional_t<Int4, uint8_t, int8_t>;
  static constexpr const char *kName =
      Int4 ? "stlm_qmatvec_tiled_int4" : "stlm_qmatvec_tiled_int8";
  /// A block's outputs, a column's bytes and inputs.
  static constexpr int kOutputs = stlm::quant::kTileOutputs,
                       kColumnBytes = stlm::quant::kTileBytes,
                       kColumnInputs = stlm::quant::tileInputs(Int4);

  Param<int> m{"m", 1};
  Param<int> n{"n", 64};
  Param<int> k{"k", 64};
  Param<int> group{"group", 32};

  In<Buffer<float>> a{"a", 2};              // [m, k]
  In<Buffer<Weight>> w{"w", 1};             // the tiles: n · k (/ 2) bytes
  In<Buffer<float>> scale{"scale", 1};      // [n / 16, k / group, 16]
  GeneratorOutput<Buffer<float>> c{"c", 2}; // [m, n]

  void generate() {
    const int M = m, N = n, K = k, G = group;
    if (M < 1 || !stlm::quant::tilesFor(Int4, N, K, G))
      stlm::halide::fail(
          kName, "m, n, k and group must be positive, the group must divide "
                 "k, n must be a multiple of 16 and the group of " +
                     std::to_string(kColumnInputs) +
                     (Int4 ? "" : " (and at most 65536)"));
    quantizeRows(a, K, x, i, amax, inv, qa);
    groups = K / G;
    const int columns = K / kColumnInputs, groupColumns = G / kColumnInputs;
    ro = RDom(0, groups, "ro");
    RDom rq(0, G, "rq");
    qsum(g, i) = sum(cast<int32_t>(qa(g * G + rq, i)));
    // rt: the 4 bytes of a column's output (x), the group's columns (y),
    // and for int4 the byte's two nibbles (z).
    rt = Int4 ? RDom(0, 4, 0, groupColumns, 0, 2, "rt")
              : RDom(0, 4, 0, groupColumns, "rt");
    Expr column = g * groupColumns + rt.y;
    Expr byte = cast<uint8_t>(w(jb * (columns * kColumnBytes) +
                                column * kColumnBytes + jj * 4 + rt.x));
    acc(jj, i, g, jb) = 0;
    Expr dotG;
    if (!Int4) {
      // Σ (q + 128)·x less 128 Σ x.
      acc(jj, i, g, jb) +=
          cast<int32_t>(byte) * cast<int32_t>(qa(column * 4 + rt.x, i));
      dotG = acc(j % kOutputs, i, g, j / kOutputs) - 128 * qsum(g, i);
    } else {
      // The low nibble's input is the column's 8·kk + r, the high one's
      // 8·kk + 4 + r; Σ (q + 8)·x less 8 Σ x.
      Expr nibble =
          select(rt.z == 0, byte & cast<uint8_t>(15), byte >> cast<uint8_t>(4));
      acc(jj, i, g, jb) += cast<int32_t>(nibble) *
                           cast<int32_t>(qa(column * 8 + rt.z * 4 + rt.x, i));
      dotG = acc(j % kOutputs, i, g, j / kOutputs) - 8 * qsum(g, i);
    }
    Expr d = scale((j / kOutputs) * (groups * kOutputs) + g * kOutputs +
                   j % kOutputs);
    sumGroups(c, term, ro, g, j, i, d, dotG, amax);
  }

  void schedule() {
    const int M = m, N = n, K = k;
    const int weightBytes = N * (Int4 ? K / 2 : K);
    stlm::halide::requireAligned(a, w, scale, c);
    stlm::halide::boundRowMajor(a, K, M);
    w.dim(0).set_bounds(0, weightBytes);
    scale.dim(0).set_bounds(0, N * groups);
    stlm::halide::boundRowMajor(c, N, M);
    amax.compute_root();
    inv.compute_root();
    const int vec = this->template natural_vector_size<float>();
    qa.compute_root().vectorize(x, vec, TailStrategy::GuardWithIf);
    qsum.compute_root();
    // For each block of 16 outputs (across threads) and each tile of rows:
    // group after group, the tile's sums in registers (a 16-output vector
    // a row), each column one 64-byte load and a dot product a row, then
    // the group's terms added to the outputs in order.
    const int rowTile = M % 8 == 0 ? 8 : M % 4 == 0 ? 4 : M % 2 == 0 ? 2 : 1;
    Var jo("jo"), ji("ji"), io("io"), ii("ii");
    c.compute_root();
    c.update()
        .split(j, jo, ji, kOutputs)
        .split(i, io, ii, rowTile)
        .reorder(ji, ii, ro.x, io, jo)
        .vectorize(ji)
        .unroll(ii);
    // Tasks of whole runs of blocks, about kTaskBytes of weights × rows
    // each: a block of one row is a few microseconds' work, and a task per
    // block spent more in the thread pool than in the dot products (a 2048
    // × 768 int8 decode matvec streamed 19–30 GB/s so, 46–58 in runs of
    // 8–16 blocks).
    const int blocks = N / kOutputs;
    const int64_t blockWork = int64_t(M) * kOutputs * (Int4 ? K / 2 : K);
    const int tasks = static_cast<int>(std::max<int64_t>(
        1,
        std::min<int64_t>(blocks, int64_t(blocks) * blockWork / kTaskBytes)));
    const int blocksPerTask = (blocks + tasks - 1) / tasks;
    Var jt("jt");
    c.update().split(jo, jt, jo, blocksPerTask, TailStrategy::GuardWithIf);
    if (int64_t(M) * weightBytes >= kParallelBytes)
      c.update().parallel(jt);
    acc.compute_at(c, ro.x)
        .store_in(MemoryType::Register)
        .vectorize(jj)
        .unroll(i);
    Stage update = acc.update();
    if (Int4)
      update.reorder(rt.x, jj, i, rt.z, rt.y).unroll(rt.z);
    else
      update.reorder(rt.x, jj, i, rt.y);
    update.atomic().vectorize(rt.x).vectorize(jj).unroll(i);
  }

private:
  Var x{"x"}, i{"i"}, j{"j"}, g{"g"}, jj{"jj"}, jb{"jb"};
  Func amax{"amax"}, inv{"inv"}, qa{"qa"}, qsum{"qsum"}, acc{"acc"},
      term{"term"};
  RDom ro, rt;
  int groups = 1;
};

} // namespace

using QuantizedMatVecInt8 = QuantizedMatVec<false>;
using QuantizedMatVecInt4 = QuantizedMatVec<true>;
using QuantizedTiledMatVecInt8 = QuantizedTiledMatVec<false>;
using QuantizedTiledMatVecInt4 = QuantizedTiledMatVec<true>;
HALIDE_REGISTER_GENERATOR(QuantizedMatVecInt8, stlm_qmatvec_int8)
HALIDE_REGISTER_GENERATOR(QuantizedMatVecInt4, stlm_qmatvec_int4)
HALIDE_REGISTER_GENERATOR(QuantizedTiledMatVecInt8, stlm_qmatvec_tiled_int8)
HALIDE_REGISTER_GENERATOR(QuantizedTiledMatVecInt4, stlm_qmatvec_tiled_int4)
