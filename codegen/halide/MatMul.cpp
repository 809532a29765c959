//===- MatMul.cpp - Halide generator: the three matmul forms --------------===//
//
// One generator, specialised per shape and form through GeneratorParams
// (`stlm-kernelgen -g stlm_matmul form=nt m=4096 n=1024 k=256 ...`). Buffers
// are row-major [rows, cols]; in Halide's coordinates dimension 0 is the
// column (contiguous) and dimension 1 the row.
//
//   form nt:  c[M, N] = a[M, K] · b[N, K]ᵀ   (stlm.linear: x · Wᵀ)
//   form nn:  c[M, N] = a[M, K] · b[K, N]    (linear_grad: dx = dy · W)
//   form tn:  c[M, N] = a[K, M]ᵀ · b[K, N]   (linear_grad: dW = dyᵀ · x)
//
// Schedule (avx512 / avx2): B is packed once into panels of P = 2 vectors of
// columns, [N/P][K][P], so the micro-kernel reads it contiguously. Each task
// owns a block of rows; for every panel it keeps an 8 × P tile of C in
// registers (16 accumulators on avx512) and runs over K doing, per k, two
// vector loads of the panel, eight broadcasts of A and sixteen FMAs. Row
// blocks run in parallel. When packed B is larger than L2 keeps and K is
// at least 384, the panels are the outer loop of a task (each panel read
// from L1 or L2 by every tile of the task's rows, whose block of A is sized
// to stay in L2); otherwise the tiles of 8 rows are (B read from L2, or L3,
// for each). Shapes off the 8 × P grid run the same tiles: reads past the
// edge are clamped to the last row or column, and the stores of the last
// tiles are guarded.
//
// precision=bf16 (train.precision: bf16): A and B are rounded to bfloat16
// (nearest even) as they are packed, B's panels and A's row blocks in pairs
// along K, and each step of the micro-kernel takes a pair: one broadcast
// of A's pair per row and one vdpbf16ps per accumulator (32 exact
// products summed into 16 fp32 lanes), twice the fp32 FMA's work per
// instruction. Targets without avx512_sapphirerapids widen and multiply.
//
// stlm_matvec computes form nt for the few rows of generation (m up to 16:
// a token of each sequence decoded): it is bound by reading b once, so
// each parallel task owns a block of b's rows and, for four of them at a
// time and a tile of up to four rows of a, keeps vector partial sums over
// K in registers, then reduces the lanes. With
// precision=bf16 it rounds both inputs to bfloat16 first (the products
// are then exact in fp32, as in the matmul).
//
// Generator sources are compiled only into stlm-kernelgen; no LLVM/MLIR
// header may be included here (Halide links its own LLVM).
//
//===----------------------------------------------------------------------===//

#include "codegen/halide/Common.h"

namespace {

using namespace Halide;

[[noreturn]] void fail(const std::string &msg) {
  stlm::halide::fail("stlm_matmul", msg);
}

/// Stands in for the residual input of the plain matmul.
struct NoInput {
  NoInput(const char *, int) {}
};

/// `Residual`: stlm_matmul_residual, which adds a residual [M, N] input to
/// its result in the epilogue (after the activation).
template <bool Residual> class MatMulT : public Generator<MatMulT<Residual>> {
public:
  template <typename T> using Param = GeneratorParam<T>;
  template <typename T> using In = GeneratorInput<T>;
  Param<std::string> form{"form", "nt"};
  Param<int> m{"m", 64}; // rows of c
  Param<int> n{"n", 64}; // columns of c
  Param<int> k{"k", 64}; // reduction length
  // Applied to each result in registers: none, gelu (x·Φ(x), as
  // stlm_gelu) or, with a residual input h only, gelu_grad (the result
  // times GELU's derivative at h, as stlm_gelu_grad; h is not added).
  Param<std::string> epilogue{"epilogue", "none"};
  // fp32, or bf16: a and b rounded to bfloat16 (nearest even) as they are
  // packed, products accumulated in fp32 (vdpbf16ps where the target has
  // avx512_sapphirerapids; widening multiplies elsewhere).
  Param<std::string> precision{"precision", "fp32"};

  In<Buffer<float>> a{"a", 2};
  In<Buffer<float>> b{"b", 2};
  std::conditional_t<Residual, In<Buffer<float>>, NoInput> residual{
      "residual", 2};
  GeneratorOutput<Buffer<float>> c{"c", 2};

  void generate() {
    const std::string f = form;
    if (f != "nt" && f != "nn" && f != "tn")
      fail("form must be nt, nn or tn, got '" + f + "'");
    if (int(m) < 1 || int(n) < 1 || int(k) < 1)
      fail("m, n and k must be positive");
    const std::string p = precision;
    if (p != "fp32" && p != "bf16")
      fail("precision must be fp32 or bf16, got '" + p + "'");
    bf16 = p == "bf16";
    vec = this->template natural_vector_size<float>();
    panel = 2 * vec;
    // Shapes off the tile grid run the same tiles: rows and columns past
    // the edge read the last real one (clamped) and are never stored.
    const int M = m, N = n;
    ragged = M % kTileRows != 0 || N % panel != 0;
    Expr row = ragged ? min(i, M - 1) : Expr(i);
    Expr col = ragged ? min(j, N - 1) : Expr(j);
    // A_(kk, i) = A[i, kk] and B_(j, kk) = B[kk, j] for every form.
    if (f == "tn")
      A_(kk, i) = a(row, kk);
    else
      A_(kk, i) = a(kk, row);
    if (f == "nt")
      B_(j, kk) = b(kk, col);
    else
      B_(j, kk) = b(col, kk);
    if (bf16) {
      defineBF16();
      return;
    }
    // Packed panels: packed(jj, kk, jo) = B_(jo * P + jj, kk).
    packed(jj, kk, jo) = B_(jo * panel + jj, kk);

    // The accumulator in panel coordinates: prod(jj, i, jo) is
    // c(jo * P + jj, i).
    // tn reads A down columns (a stride of M floats per k): pack each
    // task's rows as [M/8][K][8] so the micro-kernel's eight broadcasts
    // per k come from one cache line.
    Func A = A_;
    if (f == "tn") {
      packedA(pi, pk, po) = A_(pk, po * kTileRows + pi);
      A = Func("A_packed");
      A(kk, i) = packedA(i % kTileRows, kk, i / kTileRows);
    }
    // Long reductions of the tn form (dW over every row of a batch): split
    // K into chunks computed in parallel, each chunk's slice of packed B
    // reused from cache by every row tile, then sum the chunks' partial
    // products.
    const int K = k;
    chunks = 1;
    if (f == "tn" && !ragged && K % kChunk == 0 && K / kChunk >= 2 &&
        int64_t(M) * N * (K / kChunk) <= (int64_t(4) << 20))
      chunks = K / kChunk;
    if (chunks > 1) {
      RDom rc(0, kChunk, "rc");
      pacc(jj, i, jo, q) = 0.0f;
      pacc(jj, i, jo, q) +=
          A(q * kChunk + rc, i) * packed(jj, q * kChunk + rc, jo);
      part(jj, i, jo, q) = pacc(jj, i, jo, q);
      RDom rq(0, chunks, "rq");
      prod(jj, i, jo) = 0.0f;
      prod(jj, i, jo) += part(jj, i, jo, rq);
      rk = rq.x;
      rck = rc.x;
    } else {
      RDom r(0, k, "r");
      prod(jj, i, jo) = 0.0f;
      prod(jj, i, jo) += A(r, i) * packed(jj, r, jo);
      rk = r.x;
    }
    defineEpilogue();
  }

  /// bf16: A and B rounded as they are packed, in pairs along K (K padded
  /// with a zero when odd); each step of the reduction is one pair kp:
  /// prod(jj, i, jo) += Σ_t A(2kp + t, i) · B(jo·P + jj, 2kp + t) over
  /// t ∈ {0, 1}, which vectorises over (t, jj) into one vdpbf16ps.
  void defineBF16() {
    const int K = k, K2 = (K + 1) / 2;
    const std::string f = form;
    auto rounded = [&](Expr v, Expr kk) {
      if (K % 2 != 0)
        v = select(kk < K, v, 0.0f);
      return cast(BFloat(16), v);
    };
    Expr ka = 2 * kp + t;
    Expr kaIn = K % 2 != 0 ? min(ka, K - 1) : ka;
    // A per row block: nt and nn keep A's rows ([i][kp][t], read
    // contiguously); tn interleaves 8 rows per pair ([i/8][kp][i%8][t]),
    // since it reads A down columns.
    if (f == "tn") {
      packedA(t, pi, kp, po) = rounded(A_(kaIn, po * kTileRows + pi), ka);
      Abf(t, kp, i) = packedA(t, i % kTileRows, kp, i / kTileRows);
    } else {
      packedA(t, kp, i) = rounded(A_(kaIn, i), ka);
      Abf(t, kp, i) = packedA(t, kp, i);
    }
    packed(t, jj, kp, jo) = rounded(B_(jo * panel + jj, kaIn), ka);
    RDom r(0, 2, 0, K2, "r");
    prod(jj, i, jo) = 0.0f;
    prod(jj, i, jo) += cast<float>(Abf(r.x, r.y, i)) *
                       cast<float>(packed(r.x, jj, r.y, jo));
    rt = r.x;
    rk = r.y;
    defineEpilogue();
  }

  /// c from prod, through the epilogue.
  void defineEpilogue() {
    const std::string epi = epilogue;
    if (epi != "none" && epi != "gelu" && epi != "gelu_grad")
      fail("epilogue must be none, gelu or gelu_grad, got '" + epi + "'");
    Expr y = prod(j % panel, i, j / panel);
    if (epi == "gelu")
      y = y * stlm::halide::normalCdf(y);
    if constexpr (Residual) {
      if (epi == "gelu_grad")
        y = y * stlm::halide::geluDerivative(residual(j, i));
      else
        y = y + residual(j, i);
    } else if (epi == "gelu_grad") {
      fail("epilogue gelu_grad needs the residual input (h): use "
           "stlm_matmul_residual");
    }
    c(j, i) = y;
  }

  void schedule() {
    const int M = m, N = n, K = k;

    stlm::halide::requireAligned(a, b, c);
    if constexpr (Residual) {
      stlm::halide::requireAligned(residual);
      stlm::halide::boundRowMajor(residual, N, M);
    }
    // Shapes are part of the kernel: say so, so bounds checks fold away.
    const std::string f = form;
    int aCols = f == "tn" ? M : K, aRows = f == "tn" ? K : M;
    int bCols = f == "nt" ? K : N, bRows = f == "nt" ? N : K;
    stlm::halide::boundRowMajor(a, aCols, aRows);
    stlm::halide::boundRowMajor(b, bCols, bRows);
    stlm::halide::boundRowMajor(c, N, M);

    // Rows per parallel task: every task streams all of packed B, so
    // blocks as large as still leave 8 tasks to balance over the cores.
    int rowsPerTask = kTileRows;
    while (rowsPerTask * 2 <= 256 && M / (rowsPerTask * 2) >= 8)
      rowsPerTask *= 2;
    // Loop order within a task. Packed B that stays in L2 (at most
    // kCachedB): per tile of 8 rows, every panel (B read from L2, the 8
    // rows of A from L1). Larger B would come from L3 for every 8 rows:
    // then per panel (K × P floats, from L1 or L2), every tile of the
    // task's rows, whose block of A (at most kCachedA, from L2) the panels
    // share; the task's rows shrink to fit it. That walks C (and a
    // residual) down columns, a row a page apart, which costs more than
    // B's reloads when the tiles are short (K below kPanelsOuterK: 4096 ×
    // 1024 × 256, 358 against 348 GFLOP/s; at K = 384 and 1024, panels
    // outer gained 3-6 %).
    const int64_t elem = bf16 ? 2 : 4;
    // (The tn form's chunks read their products from memory: no B.)
    panelsOuter =
        chunks == 1 && K >= kPanelsOuterK && int64_t(N) * K * elem > kCachedB;
    if (panelsOuter)
      while (rowsPerTask > kTileRows &&
             int64_t(rowsPerTask) * K * elem > kCachedA)
        rowsPerTask -= kTileRows;

    // Ragged shapes: the last tiles are guarded (nothing is stored past
    // the edge) but computed whole.
    TailStrategy tail =
        ragged ? TailStrategy::GuardWithIf : TailStrategy::Auto;
    Var cjo("cjo"), ji("ji"), io("io"), ii("ii"), it("it"), iti("iti");
    c.split(i, io, ii, rowsPerTask, tail)
        .split(ii, it, iti, kTileRows, tail)
        .split(j, cjo, ji, panel, tail)
        .reorder(ji, iti, panelsOuter ? it : cjo, panelsOuter ? cjo : it, io)
        .vectorize(ji, vec, tail)
        .unroll(iti)
        .parallel(io);

    // The 8 × P accumulator tile lives in registers for one panel.
    if (ragged)
      prod.bound_extent(jj, panel).bound_extent(i, kTileRows);
    prod.compute_at(c, panelsOuter ? it : cjo)
        .vectorize(jj, vec)
        .unroll(jj)
        .unroll(i);
    if (bf16) {
      // Each k step is a pair of k: 2 × P bf16 products summed pairwise
      // into P fp32 lanes (vdpbf16ps). A is packed per row block.
      prod.update()
          .reorder(rt, jj, i, jo, rk)
          .atomic()
          .vectorize(rt)
          .vectorize(jj, vec)
          .unroll(jj)
          .unroll(i);
      Var tk("tk");
      if (f == "tn")
        packedA.compute_at(c, io)
            .reorder(t, pi, kp, po)
            .vectorize(pi)
            .unroll(t);
      else
        packedA.compute_at(c, io)
            .reorder(t, kp, i)
            .fuse(t, kp, tk)
            .vectorize(tk, 2 * vec, TailStrategy::GuardWithIf);
      packed.compute_root()
          .reorder(t, jj, kp, jo)
          .vectorize(jj, vec)
          .unroll(t)
          .parallel(jo);
      return;
    }
    prod.update()
        .reorder(jj, i, jo, rk)
        .vectorize(jj, vec)
        .unroll(jj)
        .unroll(i);

    if (chunks > 1) {
      // Chunks in parallel; per chunk, every 8 × P tile in registers over
      // the chunk's K, A packed per chunk. The inner of the two tile loops
      // streams the operand whose chunk is the larger (A's is M·chunk,
      // B's N·chunk); the smaller one stays in L2 and is read again for
      // every tile of the outer loop.
      Var pt("pt"), pti("pti");
      bool panelsOuter = M <= N;
      part.compute_root()
          .split(i, pt, pti, kTileRows)
          .vectorize(jj, vec)
          .unroll(pti)
          .parallel(q);
      if (panelsOuter)
        part.reorder(jj, pti, pt, jo, q);
      else
        part.reorder(jj, pti, jo, pt, q);
      pacc.compute_at(part, panelsOuter ? pt : jo)
          .vectorize(jj, vec)
          .unroll(jj)
          .unroll(i);
      pacc.update()
          .reorder(jj, i, rck)
          .vectorize(jj, vec)
          .unroll(jj)
          .unroll(i);
      packedA.compute_at(part, q).reorder(pi, pk, po).vectorize(pi,
                                                                kTileRows);
      // B packed where it is used: a panel of the chunk just before its
      // tiles (panels outer), else the chunk's whole slice, so packed B
      // stays in cache instead of being written and read back whole.
      packed.compute_at(part, panelsOuter ? jo : q)
          .reorder(jj, kk, jo)
          .vectorize(jj, vec);
      return;
    }
    if (f == "tn")
      packedA.compute_at(c, io).reorder(pi, pk, po).vectorize(pi, kTileRows);

    // Pack B once, in parallel over panels.
    packed.compute_root().reorder(jj, kk, jo).vectorize(jj, vec).parallel(jo);
  }

private:
  static constexpr int kTileRows = 8;
  Var i{"i"}, j{"j"}, kk{"kk"}, jj{"jj"}, jo{"jo"}, pi{"pi"}, pk{"pk"},
      po{"po"};
  Func A_{"A_"}, B_{"B_"}, packed{"packed"}, packedA{"packedA"}, prod{"prod"},
      pacc{"pacc"}, part{"part"}, Abf{"A_bf16"};
  Var q{"q"}, t{"t"}, kp{"kp"};
  RVar rk, rck, rt;
  bool bf16 = false;
  static constexpr int kChunk = 512;
  // Bytes of packed B and of a task's block of A that stay in L2 (a
  // quarter to a third of Zen 5's 1 MiB; Intel's is 2 MiB).
  static constexpr int64_t kCachedB = 256 << 10, kCachedA = 320 << 10;
  static constexpr int kPanelsOuterK = 384;
  bool panelsOuter = false;
  int chunks = 1;
  int vec = 16, panel = 32;
  bool ragged = false;
};

class MatVec : public Generator<MatVec> {
public:
  GeneratorParam<int> m{"m", 1}; // rows of a and c
  GeneratorParam<int> n{"n", 64}; // rows of b, columns of c
  GeneratorParam<int> k{"k", 64}; // reduction length
  GeneratorParam<std::string> precision{"precision", "fp32"};

  Input<Buffer<float>> a{"a", 2}; // [m, k]
  Input<Buffer<float>> b{"b", 2}; // [n, k]
  Output<Buffer<float>> c{"c", 2}; // [m, n] = a · bᵀ

  void generate() {
    const int M = m, N = n, K = k;
    if (M < 1 || N < 1 || K < 1)
      stlm::halide::fail("stlm_matvec", "m, n and k must be positive");
    if (N % kBlock != 0)
      stlm::halide::fail("stlm_matvec", "n must be a multiple of " +
                                            std::to_string(kBlock) +
                                            " (got n=" + std::to_string(N) +
                                            ")");
    const std::string p = precision;
    if (p != "fp32" && p != "bf16")
      stlm::halide::fail("stlm_matvec",
                         "precision must be fp32 or bf16, got '" + p + "'");
    Func a_("a_"), b_("b_");
    Var x("x"), y("y");
    if (p == "bf16") {
      a_(x, y) = cast<float>(cast(BFloat(16), a(x, y)));
      b_(x, y) = cast<float>(cast(BFloat(16), b(x, y)));
    } else {
      a_(x, y) = a(x, y);
      b_(x, y) = b(x, y);
    }
    vec = natural_vector_size<float>();
    // One row of a (a batch-1 decode step): each weight row is read front
    // to back in runs of kWide vectors, a sum for each, so that the whole
    // matrix streams in address order on kWide independent FMA chains
    // (several rows read side by side are short interleaved streams, which
    // one thread's prefetch follows badly from memory). Weights that stay
    // in L2 keep the rows side by side.
    wide = M == 1 && K >= kWide * vec &&
           int64_t(N) * K * int64_t(sizeof(float)) >= kWideBytes;
    const int width = wide ? kWide * vec : vec;
    const int chunks = K / width, tail = K - chunks * width;
    Expr sumAll = 0.0f;
    if (chunks > 0) {
      RDom rv(0, chunks, "rv");
      partial(lane, j, i) = 0.0f;
      partial(lane, j, i) +=
          a_(rv * width + lane, i) * b_(rv * width + lane, j);
      rk = rv.x;
      Func lanes = partial;
      if (wide) {
        Expr folded = partial(lane, j, i);
        for (int w = 1; w < kWide; ++w)
          folded += partial(lane + w * vec, j, i);
        fold(lane, j, i) = folded;
        lanes = fold;
      }
      RDom rl(0, vec, "rl");
      sumAll = sum(lanes(rl, j, i));
    }
    if (tail > 0) {
      RDom rt(chunks * width, tail, "rt");
      sumAll += sum(a_(rt, i) * b_(rt, j));
    }
    c(j, i) = sumAll;
  }

  void schedule() {
    const int M = m, N = n, K = k;
    stlm::halide::requireAligned(a, b, c);
    stlm::halide::boundRowMajor(a, K, M);
    stlm::halide::boundRowMajor(b, K, N);
    stlm::halide::boundRowMajor(c, N, M);
    int rowsPerTask = kBlock;
    while (rowsPerTask * 2 <= 64 && N / (rowsPerTask * 2) >= 8)
      rowsPerTask *= 2;
    // Rows of a in tiles of 4 (or 2) where they divide m: each vector of
    // b loaded feeds that many rows' sums, and the block's 4 rows of b
    // stay in L1 while every tile of a passes over them.
    const int rowTile = M % 4 == 0 ? 4 : M % 2 == 0 ? 2 : 1;
    Var jt("jt"), jr("jr"), jo("jo"), ji("ji"), io("io"), ii("ii");
    c.split(j, jt, jr, rowsPerTask, TailStrategy::GuardWithIf)
        .split(jr, jo, ji, kBlock)
        .split(i, io, ii, rowTile)
        .reorder(ji, ii, io, jo, jt)
        .unroll(ji)
        .unroll(ii);
    // Always across the pool, even for LoRA factors of 24 KB: on one thread
    // they left the pool asleep between the step's larger kernels, and
    // waking it cost more (stlm-10m int8 decode 14 % slower at 2 threads).
    c.parallel(jt);
    if (wide) {
      Var lo("lo"), li("li");
      partial.compute_at(c, io).vectorize(lane, vec).unroll(j);
      partial.update()
          .split(lane, lo, li, vec)
          .reorder(li, lo, rk, j, i)
          .vectorize(li)
          .unroll(lo);
      fold.compute_at(c, io).vectorize(lane).unroll(j);
    } else if (K / vec > 0) {
      partial.compute_at(c, io).vectorize(lane).unroll(j).unroll(i);
      partial.update()
          .reorder(lane, j, i, rk)
          .vectorize(lane)
          .unroll(j)
          .unroll(i);
    }
  }

private:
  static constexpr int kBlock = 4;
  static constexpr int kWide = 4; // vectors a row's runs take at one row of a
  static constexpr int64_t kWideBytes = 256 * 1024; // weights that stream
  Var i{"i"}, j{"j"}, lane{"lane"};
  Func partial{"partial"}, fold{"fold"};
  RVar rk;
  int vec = 16;
  bool wide = false;
};

} // namespace

using MatMul = MatMulT<false>;
using MatMulResidual = MatMulT<true>;
HALIDE_REGISTER_GENERATOR(MatMul, stlm_matmul)
HALIDE_REGISTER_GENERATOR(MatMulResidual, stlm_matmul_residual)
HALIDE_REGISTER_GENERATOR(MatVec, stlm_matvec)
