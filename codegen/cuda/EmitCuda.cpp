//===- EmitCuda.cpp - a planned model as CUDA source ----------------------===//
//
// See EmitCuda.h. Every value of a planned function has a place: a weights
// slot (parameters, state, caches), an arena offset (op results, from
// stlm-plan-memory), the input block (the batch, a decode position), or a
// slot of the device scalar block (rank-0 values without an arena offset:
// constants, the learning rate, the step count, the norm). Each op becomes
// launches on those places, written as C++ into the function's body.
//
//===----------------------------------------------------------------------===//

#include "codegen/cuda/EmitCuda.h"

#include "stlm/artifact_format.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

using namespace mlir;
namespace ir = mlir::stlm;

namespace stlm::codegen {

std::vector<std::pair<std::string, std::string>> cudaSupportFiles() {
  static const char kernels[] = {
#include "codegen/cuda/Kernels.cuh.inc"
      0};
  static const char api[] = {
#include "codegen/cuda/stlm.h.inc"
      0};
  return {{"Kernels.cuh", kernels}, {"stlm/stlm.h", api}};
}

namespace {

/// Where a value lives: `base` 'W' weights, 'A' arena, 'I' the input
/// block, 'S' the scalar block; `off` in bytes.
struct Place {
  char base = 0;
  int64_t off = 0;
  bool operator==(const Place &o) const {
    return base == o.base && off == o.off;
  }
};

RankedTensorType tensorType(Value v) {
  return llvm::dyn_cast<RankedTensorType>(v.getType());
}
int64_t numel(Value v) { return tensorType(v).getNumElements(); }
/// The bytes of tensor `v`.
int64_t bytesOf(Value v) {
  auto t = tensorType(v);
  return t.getNumElements() * (t.getElementType().getIntOrFloatBitWidth() / 8);
}
int64_t dim(Value v, int64_t fromEnd) {
  auto t = tensorType(v);
  return t.getDimSize(t.getRank() - fromEnd);
}
/// The product of all but the last `keep` dimensions.
int64_t leading(Value v, int keep) {
  auto t = tensorType(v);
  int64_t n = 1;
  for (int64_t i = 0; i + keep < t.getRank(); ++i)
    n *= t.getDimSize(i);
  return n;
}
std::string num(double x) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%.17g", x);
  os.flush();
  // A C++ floating literal either way: "1" -> "1.0" (so "1.0f" is too).
  if (s.find_first_of(".eEn") == std::string::npos)
    s += ".0";
  return s;
}
/// Blocks of 256 threads for the grid-stride kernels (sums of squares,
/// AdamW): 8 per multiprocessor of a 132-SM H200; the loops cover the rest
/// on any GPU.
constexpr int kGridStrideBlocks = 132 * 8;
/// Streams a fork may use (Kernels.cuh's kLanes).
constexpr size_t kLanes = 3;
/// Dynamic shared memory of an rmsnormGrad block (a row of D floats per
/// warp): under the 48 KiB a launch gets without opting in, with room
/// for the kernel's static shared memory.
constexpr int64_t kRmsNormGradShared = 47 * 1024;
/// Kernels.cuh's kRowVecMax: rows of up to 4·32·8 floats held in registers.
constexpr int64_t kRowVecMax = 8;

/// The float4s a lane holds of a row of D floats in the register-resident
/// row kernels (rmsnormRows, rmsnormGradRows), or 0 where they do not
/// apply (D not a multiple of 4, or wider than 128·kRowVecMax).
int rowVectors(int64_t D) {
  if (D % 4 != 0 || D > 128 * kRowVecMax)
    return 0;
  return static_cast<int>((D + 127) / 128);
}

int threadsFor(int64_t n, int most) {
  int64_t t = (n + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(t, 32, most));
}

class Emitter {
public:
  Emitter(ir::ModelOp model, bool tf32, int sm)
      : model(model), prefix(symbolPrefix(model)), tf32(tf32), sm(sm) {
    for (Operation &op : model.getBody().front()) {
      auto off = op.getAttrOfType<IntegerAttr>("stlm.offset");
      if (!off)
        continue;
      if (auto p = dyn_cast<ir::ParamOp>(op)) {
        slots[p.getSymName().str()] = off.getInt();
        params.insert(p.getSymName());
      } else if (auto s = dyn_cast<ir::StateOp>(op))
        slots[s.getSymName().str()] = off.getInt();
    }
  }

  FailureOr<CudaSource> run();

private:
  // --- places -------------------------------------------------------------
  std::string ptr(Place p, StringRef type = "float") const {
    std::string base = p.base == 'W'   ? "c.weights"
                       : p.base == 'A' ? "c.arena"
                       : p.base == 'I' ? "(char *)c.in"
                       : p.base == 'X' ? "c.scratch"
                       : p.base == 'K' ? "(c.scratch + kStash)"
                       : p.base == 'P' ? "(c.scratch + kPool)"
                       : p.base == 'H' ? "(c.scratch + kShadow)"
                                       : "c.scalars";
    return "(" + type.str() + " *)(" + base + " + " + std::to_string(p.off) +
           ")";
  }
  std::string f(Value v) { return ptr(places.lookup(v)); }
  std::string i(Value v) { return ptr(places.lookup(v), "int32_t"); }
  std::string fOrNull(Value v) { return v ? f(v) : "nullptr"; }
  std::string iOrNull(Value v) { return v ? i(v) : "nullptr"; }

  /// A fresh 8-byte-aligned slot of `bytes` in the scalar block.
  int64_t scalarSlot(int64_t bytes) {
    int64_t at = scalarSize;
    scalarSize += (bytes + 63) / 64 * 64;
    return at;
  }
  /// Places result `i` of `op` at its arena offset.
  LogicalResult inArena(Operation *op, unsigned i) {
    auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
    if (!offsets || offsets.size() <= i || offsets[i] < 0) {
      // Rank-0 results outside planned functions live in the scalar block.
      if (tensorType(op->getResult(i)).getRank() == 0) {
        places[op->getResult(i)] = {'S', scalarSlot(8)};
        return success();
      }
      return op->emitOpError("has no arena offset for result ")
             << i << " (run stlm-plan-memory first)";
    }
    places[op->getResult(i)] = {'A', offsets[i]};
    return success();
  }
  LogicalResult allInArena(Operation *op) {
    for (unsigned k = 0; k < op->getNumResults(); ++k)
      if (failed(inArena(op, k)))
        return failure();
    return success();
  }
  /// Whether the tensors `a` and `b` share bytes.
  bool overlaps(Value a, Value b) {
    Place pa = places.lookup(a), pb = places.lookup(b);
    if (pa.base != pb.base)
      return false;
    return pa.off < pb.off + bytesOf(b) && pb.off < pa.off + bytesOf(a);
  }
  /// A zeroed slot of the scalar block that a launch's blocks count
  /// themselves on (lastBlock); the launch leaves it zero.
  std::string counter() { return ptr({'S', scalarSlot(8)}, "unsigned"); }
  /// The stlm.add right after `op` that is the only use of `v`, a result
  /// of `op`, with an operand of v's shape made earlier: `op`'s kernel then
  /// writes v + that operand into the add's place, and the add launches
  /// nothing. None when the add's result would overlap a tensor the kernel
  /// reads (`reads`, the other operand) or writes (`writes`), except, with
  /// `inPlace`, a read tensor of its type in exactly its place (a kernel
  /// that reads each element of it before writing that element alone).
  /// The add's other operand and its result, when fused.
  struct FusedAdd {
    Value addend, sum;
    explicit operator bool() const { return static_cast<bool>(sum); }
  };
  FusedAdd fusedAdd(Operation *op, Value v, ArrayRef<Value> reads,
                    ArrayRef<Value> writes = {}, bool inPlace = false) {
    auto add = dyn_cast_or_null<ir::AddOp>(op->getNextNode());
    if (!add || !v.hasOneUse() || *v.getUsers().begin() != add.getOperation())
      return {};
    Value other = add.getLhs() == v ? add.getRhs() : add.getLhs();
    if (other == v || other.getType() != v.getType() ||
        add.getResult().getType() != v.getType() || !places.count(other) ||
        add.getLhs().getDefiningOp<ir::StateRefOp>() || failed(inArena(add, 0)))
      return {};
    Value r = add.getResult();
    if (overlaps(r, other))
      return {};
    for (Value t : reads)
      if (t && overlaps(r, t) &&
          !(inPlace && t.getType() == r.getType() &&
            places.lookup(t) == places.lookup(r)))
        return {};
    for (Value t : writes)
      if (t && overlaps(r, t))
        return {};
    done.insert(add);
    return {other, r};
  }
  LogicalResult unsupported(Operation *op, const Twine &why) {
    return op->emitOpError("the cuda target cannot compile this op yet: ")
           << why;
  }

  // --- emission -------------------------------------------------------------
  void line(const Twine &s) { body += "  " + s.str() + "\n"; }
  void launch(StringRef kernel, const std::string &grid,
              const std::string &block, const std::string &args,
              StringRef what, const std::string &shared = "0") {
    line(kernel + "<<<" + grid + ", " + block + ", " + shared +
         ", c.stream>>>(" + args + ");");
    line("if (!launched(c, \"" + what + "\")) return false;");
  }
  /// The launches that follow go to lanes (Kernels.cuh's fork, onLane,
  /// join): lane 0 until onLane(1), and so on, up to join.
  void fork(int n) {
    line("if (!fork(c, " + std::to_string(n) + ")) return false;");
  }
  void onLane(int k) { line("onLane(c, " + std::to_string(k) + ");"); }
  void join(int n) {
    line("if (!join(c, " + std::to_string(n) + ")) return false;");
  }
  void zero(const std::string &p, int64_t bytes) {
    line("if (!check(c, cudaMemsetAsync(" + p + ", 0, " +
         std::to_string(bytes) + ", c.stream), \"memset\")) return false;");
  }
  void copy(const std::string &dst, const std::string &src, int64_t bytes) {
    line("if (!check(c, cudaMemcpyAsync(" + dst + ", " + src + ", " +
         std::to_string(bytes) +
         ", cudaMemcpyDeviceToDevice, c.stream), \"copy\")) return false;");
  }
  /// D = op(A)·op(B) (+ C) in cuBLASLt's column-major terms.
  void matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
              const std::string &a, int64_t lda, const std::string &b,
              int64_t ldb, const std::string &cIn, const std::string &d) {
    int site = matmulSites++;
    matmulShapes += "    {" + std::string(ta ? "true" : "false") + ", " +
                    (tb ? "true" : "false") + ", " + std::to_string(m) + ", " +
                    std::to_string(n) + ", " + std::to_string(k) + ", " +
                    std::to_string(lda) + ", " + std::to_string(ldb) + ", " +
                    (bf16   ? "Operands::BF16"
                     : tf32 ? "Operands::TF32"
                            : "Operands::FP32") +
                    "},\n";
    line("if (!matmul(c, " + std::to_string(site) + ", " +
         (ta ? "true" : "false") + ", " + (tb ? "true" : "false") + ", " +
         std::to_string(m) + ", " + std::to_string(n) + ", " +
         std::to_string(k) + ", " + a + ", " + std::to_string(lda) + ", " +
         b + ", " + std::to_string(ldb) + ", " + cIn + ", " + d + ", " +
         (cIn == "nullptr" ? "0.f" : "1.f") +
         (bf16 ? ", Operands::BF16" : tf32 ? ", Operands::TF32" : "") +
         ")) return false;");
  }
  void needScratch(int64_t bytes) { scratchSize = std::max(scratchSize, bytes); }
  /// A stash slot of `bytes`: scratch past every launch's temporaries,
  /// kept from one launch to a later one (a forward attention's
  /// log-sum-exp for its backward).
  Place stashSlot(int64_t bytes) {
    Place p{'K', stashSize};
    stashSize += (bytes + 255) / 256 * 256;
    return p;
  }
  /// The arena bytes [first, second) of result `i` of `op`, if planned.
  std::optional<std::pair<int64_t, int64_t>> arenaRange(Operation *op,
                                                        unsigned i) {
    auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
    if (!offsets || offsets.size() <= i || offsets[i] < 0 ||
        !tensorType(op->getResult(i)))
      return std::nullopt;
    return std::make_pair(offsets[i], offsets[i] + bytesOf(op->getResult(i)));
  }
  void pairAttention(func::FuncOp fn);
  /// The rope table argument of an attention whose q and k are rotated as
  /// they load (`theta`: its rope_theta; stlm-fuse folds RoPE in only where
  /// the bf16 kernels run it, bf16TensorCoreAttention), "" without one;
  /// fails on `op` when the kernel `family` cannot rotate, or when the
  /// table (the context's positions) is shorter than `positions`.
  FailureOr<std::string> foldedRope(Operation *op,
                                    std::optional<llvm::APFloat> theta,
                                    const std::string &family, int64_t hd,
                                    int64_t positions) {
    if (!theta)
      return std::string();
    if (family != "Bf")
      return unsupported(op, "RoPE folded into an attention that is not the "
                             "bf16 tensor-core kernels' (bf16 model, sm_80 "
                             "on, heads a multiple of 16 up to " +
                                 std::to_string(kBfMaxHead) +
                                 " wide, 16 queries or more)");
    if (positions > context)
      return unsupported(op, "RoPE folded into an attention over " +
                                 std::to_string(positions) +
                                 " positions, past the context of " +
                                 std::to_string(context));
    return ptr(ropeTable(theta->convertToDouble(), hd), "const double");
  }
  /// Whether attention with head width `hd` over `T` queries runs on
  /// tensor cores (attentionTc): the matmuls already take tensor-core
  /// operands, the chip has TF32 (sm_80 on), the head width fits mma
  /// tiles, and there are enough queries to fill a block (not a decode
  /// step's one).
  bool onTensorCores(int64_t hd, int64_t T) {
    bool tc =
        (tf32 || bf16) && sm >= 80 && hd % 16 == 0 && hd <= 128 && T >= 16;
    if (tc)
      tensorCoreHeads.insert({tcFamily(hd), hd});
    return tc;
  }
  /// The tensor-core attention kernels' family: bf16 operands (attentionBf
  /// ...) for a bf16 model's heads up to kBfMaxHead wide, TF32 operands
  /// (attentionTc ...) otherwise: --tf32, and bf16 heads wider than that.
  std::string tcFamily(int64_t hd) const {
    return bf16 && hd <= kBfMaxHead ? "Bf" : "Tc";
  }
  static std::string grid1(int64_t n, int threads) {
    return "blocksFor(" + std::to_string(n) + ", " + std::to_string(threads) +
           ")";
  }
  /// grid1 for a kernel whose threads take `perThread` (a Kernels.cuh
  /// constant) of the n elements each.
  static std::string grid1Per(int64_t n, const std::string &perThread,
                              int threads) {
    return "blocksFor((" + std::to_string(n) + " + " + perThread + " - 1) / " +
           perThread + ", " + std::to_string(threads) + ")";
  }

  // --- ops ---------------------------------------------------------------------
  LogicalResult emitOp(Operation *op);
  LogicalResult emitAdamW(ir::AdamWOp first);
  LogicalResult emitLinear(Operation *op);
  LogicalResult emitLinears(Operation *first);
  /// `hoisted`: an inference function, whose entry point makes the
  /// weights' shadow (shadowWeights).
  LogicalResult emitFunction(func::FuncOp fn, unsigned inputs,
                             bool hoisted = false);
  void emitEntries(const std::string &name, func::FuncOp fn);

  /// The AdamW table entries of `ops` (in the scalar block), returning its
  /// offset and the flat quad count.
  std::pair<int64_t, int64_t>
  table(const std::vector<std::array<int64_t, 5>> &rows,
        const std::vector<double> &decay);

  ir::ModelOp model;
  std::string prefix;
  std::map<std::string, int64_t> slots;
  llvm::DenseMap<Value, Place> places;
  /// Clipped gradients: the clip factor's scalar slot.
  llvm::DenseMap<Value, int64_t> clipFactor;
  std::set<Operation *> done; // ops already emitted by a fused neighbour
  std::string body;           // the function being emitted
  std::string out;            // every function so far
  std::string init;           // fills the scalar block's image
  int64_t scalarSize = 0, scratchSize = 0, stashSize = 0;
  /// Attention forwards and backwards paired by pairAttention: the
  /// log-sum-exp's stash slot, and each backward's forward output.
  llvm::DenseMap<Operation *, Place> keptLse;
  llvm::DenseMap<Operation *, Value> forwardOf;
  /// RoPE's sines and cosines for the model's context, per (theta, head
  /// width): their stash slots, filled when a context opens.
  std::map<std::pair<double, int64_t>, Place> ropeTables;
  /// The stash slot of RoPE's table for `theta` and head width `hd`.
  Place ropeTable(double theta, int64_t hd) {
    auto key = std::make_pair(theta, hd);
    auto it = ropeTables.find(key);
    if (it == ropeTables.end())
      it = ropeTables.emplace(key, stashSlot(context * (hd / 2) * 16)).first;
    return it->second;
  }
  int matmulSites = 0;
  std::string matmulShapes; // MatmulShape initialisers, by site
  /// `precision: bf16`: a value's bfloat16 copy (toBF16) in the pool past
  /// the stash, made before the first matmul that reads the value and kept
  /// until the last one (in block order) has been emitted, so q, k and v
  /// round their x once, and a backward reuses its forward's copies.
  struct Bf16Copy {
    int64_t off, bytes;
    Operation *last;
  };
  llvm::DenseMap<Value, Bf16Copy> bf16Copies;
  std::map<int64_t, int64_t> poolFree; // free pool bytes: offset -> size
  int64_t poolTop = 0, poolSize = 0;
  /// The pointer a matmul takes for `v`: its bfloat16 copy (made now if
  /// there is none yet) for bf16 models, else v itself.
  std::string operand(Value v);
  /// A pool range for v's copy, kept until v's last matmul.
  int64_t newCopy(Value v);
  /// For a kernel that can write v's bfloat16 copy as it writes v: the
  /// copy's pointer where a matmul of a bf16 model reads v (the matmuls
  /// then take it, with no toBF16 launch), else "nullptr".
  std::string copyFor(Value v);
  /// The pointer a kernel that calls copyFor(v) writes v itself to:
  /// "nullptr" where v's copy is all that is read (every reader a matmul
  /// taking the copy), so the fp32 values are not written at all.
  std::string resultBeside(Value v, const std::string &copy);
  /// Frees the copies whose last matmul is `op` (after `op` and anything
  /// forked with it have been emitted: a later copy may take the bytes).
  void releaseCopies(Operation *op);
  /// A bf16 model's weights that matmuls read, rounded into their shadow
  /// (kShadow: the weight at byte `off` of the weights has its copy at
  /// byte off / 2) by one toBF16 launch over [shadowLo, shadowHi) of the
  /// weights, instead of a launch before each weight's first matmul. Only
  /// weights whose copy is 256-byte aligned, as the pool's are (cuBLASLt's
  /// plans assume it), and only where the model's matmuls read at least
  /// two (planShadow).
  void planShadow();
  /// Whether `p` reads a weight that the shadow holds.
  bool inShadow(ir::ParamRefOp p);
  /// A function that updates no weights (AdamW, assignments to parameters;
  /// a KV cache's state may be written) reads its weights from the shadow:
  /// a training function rounds them at its start (they changed since the
  /// last step), an inference function (`hoisted`) leaves that to its
  /// entry point, which rounds them only when they have changed since the
  /// shadow was last made (refreshShadow).
  void shadowWeights(func::FuncOp fn, bool hoisted);
  /// The shadow's toBF16 launch: its grid and its arguments.
  std::pair<std::string, std::string> shadowLaunch();
  llvm::DenseSet<Value> shadowed;
  int64_t shadowLo = 0, shadowHi = 0; // bytes of the weights; none: equal
  std::set<std::string> refreshes;    // inference entries that refresh it
  std::set<std::string> shadowMakers; // functions that make it in their body
  std::set<std::string> shadowWriters; // functions that update the weights
  llvm::StringSet<> params;           // the model's parameters' names
  bool bf16 = false; // `precision: bf16`: matmul operands rounded
  bool tf32 = false; // fp32 matmuls on tensor cores (TF32 operands)
  int sm = 90;       // the compute capability compiled for (sm_NN)
  bool splitStep = false; // @accumulate and @apply instead of @train_step
  /// Splat tensor constants used only as factors of arith.mulf.
  llvm::DenseMap<Value, double> splats;
  /// Zero tensor constants used only by assigns (which clear their slot).
  llvm::DenseSet<Value> zeros;
  int64_t inputInts = 0, outputFloats = 0;
  /// The family (tcFamily) and head width of each attention on tensor
  /// cores (their kernels' shared memory limits are raised when the
  /// context opens).
  std::set<std::pair<std::string, int64_t>> tensorCoreHeads;
  DriverLayout layout;
  /// Per emitted function: where its result is and how many floats.
  struct Result {
    std::string where;
    int64_t count = 0;
  };
  std::map<std::string, Result> results;
  std::vector<Place> gradReturns; // @grad's results, for @train_step's call
  int64_t batchRows = 0, context = 0; // [batch, context] of the batch
};

std::pair<int64_t, int64_t>
Emitter::table(const std::vector<std::array<int64_t, 5>> &rows,
               const std::vector<double> &decay) {
  // AdamWEntry {param, m, v, grad, n, start, weightDecay}: 7 fields.
  int64_t at = scalarSlot(static_cast<int64_t>(rows.size()) * 64);
  int64_t start = 0;
  std::string name = "kTable" + std::to_string(at);
  std::string t = "static const AdamWEntry " + name + "[] = {\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto &x = rows[r];
    t += "    {" + std::to_string(x[0]) + ", " + std::to_string(x[1]) + ", " +
         std::to_string(x[2]) + ", " + std::to_string(x[3]) + ", " +
         std::to_string(x[4]) + ", " + std::to_string(start) + ", " +
         num(decay[r]) + "f},\n";
    start += (x[4] + 3) / 4;
  }
  t += "};\n";
  out += t;
  init += "  std::memcpy(image + " + std::to_string(at) + ", " + name +
          ", sizeof " + name + ");\n";
  return {at, start};
}

LogicalResult Emitter::emitAdamW(ir::AdamWOp first) {
  // Every AdamW of the function that shares the hyper-parameters, rate,
  // step and clip factor of `first` goes into one launch, when nothing
  // between them reads what they update.
  auto key = [&](ir::AdamWOp o) {
    auto gi = clipFactor.find(o.getGrad());
    return std::make_tuple(o.getLr(), o.getStep(),
                           o.getBeta1().convertToDouble(),
                           o.getBeta2().convertToDouble(),
                           o.getEps().convertToDouble(),
                           gi == clipFactor.end() ? int64_t(-1) : gi->second);
  };
  std::vector<ir::AdamWOp> group;
  bool clean = true;
  for (Operation *op = first; op; op = op->getNextNode()) {
    if (auto a = dyn_cast<ir::AdamWOp>(op)) {
      if (key(a) != key(first)) {
        clean = false;
        break;
      }
      group.push_back(a);
      continue;
    }
    if (!isa<ir::AssignOp, ir::ParamRefOp, ir::StateRefOp, arith::ConstantOp,
             func::ReturnOp>(op)) {
      // Something else after the first update: keep the group to what came
      // before it only if no later AdamW exists.
      for (Operation *rest = op; rest; rest = rest->getNextNode())
        if (isa<ir::AdamWOp>(rest))
          clean = false;
      break;
    }
  }
  if (!clean)
    group = {first};
  std::vector<std::array<int64_t, 5>> rows;
  std::vector<double> decay;
  for (ir::AdamWOp a : group) {
    Place p = places.lookup(a.getParam()), m = places.lookup(a.getM()),
          v = places.lookup(a.getV()), g = places.lookup(a.getGrad());
    if (p.base != 'W' || m.base != 'W' || v.base != 'W')
      return unsupported(a, "AdamW updates weights slots only");
    if (g.base != 'A')
      return unsupported(a, "the gradient must be in the arena");
    rows.push_back({p.off, m.off, v.off, g.off, numel(a.getParam())});
    decay.push_back(a.getWeightDecay().convertToDouble());
    places[a.getNewParam()] = p;
    places[a.getNewM()] = m;
    places[a.getNewV()] = v;
    done.insert(a);
  }
  auto [at, quads] = table(rows, decay);
  auto gi = clipFactor.find(first.getGrad());
  std::string scale = gi == clipFactor.end()
                          ? "nullptr"
                          : ptr({'S', gi->second});
  launch("adamw",
         "(unsigned)std::min<int64_t>(" + grid1(quads, 256) + ", " +
             std::to_string(kGridStrideBlocks) + ")",
         "256",
         "(const AdamWEntry *)(c.scalars + " + std::to_string(at) + "), " +
             std::to_string(rows.size()) + ", " + std::to_string(quads) +
             ", c.weights, c.arena, " + f(first.getLr()) + ", " +
             i(first.getStep()) + ", " + scale + ", " +
             num(first.getBeta1().convertToDouble()) + "f, " +
             num(first.getBeta2().convertToDouble()) + "f, " +
             num(first.getEps().convertToDouble()) + "f",
         "stlm.adamw");
  return success();
}

/// Pairs each stlm.attention_grad of `fn` with the stlm.attention of the
/// same q, k, v and mask before it whose output y no op in between
/// overwrites (y stays whole up to its last read; the planner may give
/// its bytes away after that): that forward keeps its log-sum-exp in the
/// stash, and the backward computes delta = dy · y from y instead of
/// running the forward pass again.
void Emitter::pairAttention(func::FuncOp fn) {
  std::vector<ir::AttentionOp> forwards;
  for (Operation &op : fn.getBody().front()) {
    if (auto a = dyn_cast<ir::AttentionOp>(op)) {
      forwards.push_back(a);
      continue;
    }
    auto g = dyn_cast<ir::AttentionGradOp>(op);
    if (!g)
      continue;
    for (ir::AttentionOp a : forwards) {
      if (keptLse.count(a.getOperation()) || // one backward per forward
          a.getQ() != g.getQ() || a.getK() != g.getK() ||
          a.getV() != g.getV() || a.getMask() != g.getMask() ||
          a.getOffset() != g.getOffset() || a.getHeads() != g.getHeads() ||
          a.getKvHeads() != g.getKvHeads() ||
          a.getRopeThetaAttr() != g.getRopeThetaAttr())
        continue;
      auto y = arenaRange(a, 0);
      bool whole = y.has_value();
      for (Operation *n = a->getNextNode(); whole && n != g.getOperation();
           n = n->getNextNode())
        for (unsigned i = 0; whole && i < n->getNumResults(); ++i)
          if (auto r = arenaRange(n, i))
            whole = r->second <= y->first || y->second <= r->first;
      if (!whole)
        continue;
      Place lse =
          stashSlot(leading(a.getQ(), 2) * a.getHeads() * dim(a.getQ(), 2) * 4);
      keptLse[a.getOperation()] = lse;
      keptLse[g.getOperation()] = lse;
      forwardOf[g.getOperation()] = a.getResult();
      break;
    }
  }
}

/// Lanes a row of attentionDelta for heads `hd` wide (Kernels.cuh's
/// attentionDeltaLanes): a float4 each, a power of two, at most a warp.
static int64_t deltaLanes(int64_t hd) {
  int64_t lanes = 1;
  while (lanes < 32 && 4 * lanes < hd)
    lanes *= 2;
  return lanes;
}

/// Whether `use` is a matmul operand that the emitter takes through
/// operand() (a bf16 model's copy), not an fp32 addend, residual or
/// weight to merge into.
static bool readsCopy(OpOperand &use) {
  Operation *op = use.getOwner();
  unsigned i = use.getOperandNumber();
  if (isa<ir::LinearOp, ir::LogitsOp, ir::LowRankMergeGradOp>(op))
    return true;
  if (isa<ir::LinearFusedOp>(op))
    return i < 2; // x and the weight, not the residual
  if (isa<ir::LinearGradOp>(op))
    return i < 3; // x, the weight and dy, not the addend or GELU's input
  if (isa<ir::LowRankMergeOp>(op))
    return i > 0; // a and b, not the weight they are merged into
  return false;
}

int64_t Emitter::newCopy(Value v) {
  int64_t bytes = (numel(v) * 2 + 255) / 256 * 256, off = -1;
  // First fit among the freed ranges, else past the top.
  for (auto [at, size] : poolFree)
    if (size >= bytes) {
      off = at;
      poolFree.erase(at);
      if (size > bytes)
        poolFree[at + bytes] = size - bytes;
      break;
    }
  if (off < 0) {
    off = poolTop;
    poolTop += bytes;
    poolSize = std::max(poolSize, poolTop);
  }
  Operation *last = nullptr;
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if (readsCopy(use) && user->getBlock() == v.getParentBlock() &&
        (!last || last->isBeforeInBlock(user)))
      last = user;
  }
  bf16Copies[v] = {off, bytes, last};
  return off;
}

std::string Emitter::operand(Value v) {
  if (!bf16)
    return f(v);
  if (shadowed.count(v))
    return ptr({'H', places.lookup(v).off / 2}, "__nv_bfloat16");
  auto it = bf16Copies.find(v);
  if (it != bf16Copies.end())
    return ptr({'P', it->second.off}, "__nv_bfloat16");
  std::string copy = ptr({'P', newCopy(v)}, "__nv_bfloat16");
  int64_t n = numel(v);
  launch("toBF16", grid1Per(n, "kBF16PerThread", 256), "256",
         f(v) + ", " + copy + ", " + std::to_string(n), "bf16 operands");
  return copy;
}

std::string Emitter::copyFor(Value v) {
  if (!bf16 || bf16Copies.count(v) || llvm::none_of(v.getUses(), readsCopy))
    return "nullptr";
  return ptr({'P', newCopy(v)}, "__nv_bfloat16");
}

std::string Emitter::resultBeside(Value v, const std::string &copy) {
  bool onlyCopy =
      copy != "nullptr" && llvm::all_of(v.getUses(), [&](OpOperand &u) {
        return readsCopy(u) && u.getOwner()->getBlock() == v.getParentBlock();
      });
  return onlyCopy ? "nullptr" : f(v);
}

bool Emitter::inShadow(ir::ParamRefOp p) {
  auto it = slots.find(p.getName().str());
  return it != slots.end() && it->second % 512 == 0 &&
         llvm::any_of(p.getResult().getUses(), readsCopy);
}

void Emitter::planShadow() {
  if (!bf16)
    return;
  std::set<int64_t> read;
  int64_t lo = INT64_MAX, hi = 0;
  model.walk([&](ir::ParamRefOp p) {
    if (!inShadow(p))
      return;
    int64_t off = slots.find(p.getName().str())->second;
    read.insert(off);
    lo = std::min(lo, off);
    hi = std::max(hi, off + numel(p.getResult()) * 4);
  });
  if (read.size() < 2)
    return;
  shadowLo = lo;
  shadowHi = hi;
}

std::pair<std::string, std::string> Emitter::shadowLaunch() {
  int64_t n = (shadowHi - shadowLo) / 4;
  return {grid1Per(n, "kBF16PerThread", 256),
          ptr({'W', shadowLo}) + ", " +
              ptr({'H', shadowLo / 2}, "__nv_bfloat16") + ", " +
              std::to_string(n)};
}

void Emitter::shadowWeights(func::FuncOp fn, bool hoisted) {
  shadowed.clear();
  if (shadowHi == shadowLo)
    return;
  bool writes = false, callsMaker = false;
  SmallVector<Value> read;
  fn.walk([&](Operation *op) {
    auto assign = dyn_cast<ir::AssignOp>(op);
    writes = writes || isa<ir::AdamWOp>(op) ||
             (assign && params.contains(assign.getName()));
    if (auto call = dyn_cast<func::CallOp>(op))
      callsMaker = callsMaker || shadowMakers.count(call.getCallee().str());
    if (auto p = dyn_cast<ir::ParamRefOp>(op))
      if (inShadow(p))
        read.push_back(p.getResult());
  });
  std::string name = fn.getSymName().str();
  if (writes)
    shadowWriters.insert(name);
  else if (callsMaker && !hoisted)
    shadowMakers.insert(name); // @accumulate: @grad's body makes it
  if (writes || read.empty())
    return;
  shadowed.insert(read.begin(), read.end());
  if (hoisted) {
    refreshes.insert(name);
    return;
  }
  shadowMakers.insert(name);
  auto [grid, args] = shadowLaunch();
  launch("toBF16", grid, "256", args, "bf16 weights");
}

void Emitter::releaseCopies(Operation *op) {
  SmallVector<Value> freed;
  for (auto &[v, copy] : bf16Copies)
    if (copy.last == op)
      freed.push_back(v);
  for (Value v : freed) {
    Bf16Copy copy = bf16Copies.lookup(v);
    bf16Copies.erase(v);
    // Merge with the free neighbours on either side.
    int64_t at = copy.off, size = copy.bytes;
    auto next = poolFree.find(at + size);
    if (next != poolFree.end()) {
      size += next->second;
      poolFree.erase(next);
    }
    auto prev = poolFree.lower_bound(at);
    if (prev != poolFree.begin()) {
      --prev;
      if (prev->first + prev->second == at) {
        at = prev->first;
        size += prev->second;
        poolFree.erase(prev);
      }
    }
    if (at + size == poolTop)
      poolTop = at;
    else
      poolFree[at] = size;
  }
}

/// One stlm.linear, stlm.logits or stlm.linear_fused: its matmul (with the
/// residual as the addend) and GELU's launch.
LogicalResult Emitter::emitLinear(Operation *op) {
  Value x = op->getOperand(0), w = op->getOperand(1), residual;
  bool gelu = false;
  if (auto fused = dyn_cast<ir::LinearFusedOp>(op)) {
    gelu = fused.getActivation() == "gelu";
    if (!gelu && fused.getActivation() != "none")
      return unsupported(op,
                         "activation '" + fused.getActivation().str() + "'");
    residual = fused.getResidual();
  }
  int64_t In = dim(x, 1), Out = dim(w, 2), R = leading(x, 1);
  Value y = op->getResult(0);
  // y[R, Out] = x[R, In] · w[Out, In]ᵀ: column-major yᵀ = wᵀ' · xᵀ (the
  // weight's copy made first, so the source does not depend on the order
  // in which a host compiler evaluates arguments).
  std::string a = operand(w), b = operand(x);
  matmul(true, false, Out, R, In, a, In, b, In,
         gelu ? "nullptr" : fOrNull(residual), f(y));
  if (gelu) {
    std::string copy = copyFor(y);
    launch("gelu", grid1(R * Out, 256), "256",
           f(y) + ", " + fOrNull(residual) + ", " + resultBeside(y, copy) +
               ", " + std::to_string(R * Out) + ", " + copy,
           "stlm.linear_fused gelu");
  }
  return success();
}

/// `first` and the linear layers right after it that read the same x (q,
/// k and v; a gate and its up projection), side by side on their own lanes
/// when no one's result overlaps another's operands or result (each
/// reads only its operands and writes only its result). bf16 operands
/// are rounded before the fork, each into its own copy.
LogicalResult Emitter::emitLinears(Operation *first) {
  auto isLinear = [](Operation *o) {
    return o && isa<ir::LinearOp, ir::LogitsOp, ir::LinearFusedOp>(o);
  };
  // The next op that launches something (weights references do not).
  auto next = [](Operation *o) {
    do
      o = o->getNextNode();
    while (o && isa<ir::ParamRefOp, ir::StateRefOp>(o));
    return o;
  };
  std::vector<Operation *> group{first};
  if (failed(inArena(first, 0)))
    return failure();
  for (Operation *n = next(first); isLinear(n) && group.size() < kLanes &&
                                   n->getOperand(0) == first->getOperand(0);
       n = next(n)) {
    if (failed(inArena(n, 0)))
      return failure();
    bool apart = true;
    for (Operation *g : group)
      for (auto [a, b] : {std::pair(g, n), std::pair(n, g)}) {
        apart = apart && !overlaps(a->getResult(0), b->getResult(0));
        for (Value v : b->getOperands())
          apart = apart && !overlaps(a->getResult(0), v);
      }
    if (!apart)
      break;
    group.push_back(n);
  }
  if (group.size() == 1)
    return emitLinear(first);
  int n = static_cast<int>(group.size());
  for (Operation *g : group) {
    operand(g->getOperand(0));
    operand(g->getOperand(1));
  }
  fork(n);
  for (int k = 0; k < n; ++k) {
    if (k > 0)
      onLane(k);
    if (failed(emitLinear(group[k])))
      return failure();
    done.insert(group[k]);
  }
  join(n);
  return success();
}

LogicalResult Emitter::emitOp(Operation *op) {
  if (done.count(op))
    return success();
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ir::ParamRefOp, ir::StateRefOp>([&](auto o) -> LogicalResult {
        auto it = slots.find(o.getName().str());
        if (it == slots.end())
          return unsupported(op, "'@" + o.getName().str() +
                                     "' has no weights slot");
        places[o.getResult()] = {'W', it->second};
        return success();
      })
      .Case([&](arith::ConstantOp o) -> LogicalResult {
        auto t = tensorType(o.getResult());
        auto attr = llvm::dyn_cast<DenseElementsAttr>(o.getValue());
        if (!t || !attr || !attr.isSplat())
          return unsupported(op, "only splat tensor constants are compiled");
        if (t.getRank() == 0) {
          int64_t at = scalarSlot(8);
          places[o.getResult()] = {'S', at};
          if (t.getElementType().isF32())
            init += "  { float v = " +
                    num(attr.getSplatValue<APFloat>().convertToDouble()) +
                    "f; std::memcpy(image + " + std::to_string(at) +
                    ", &v, 4); }\n";
          else
            init += "  { int32_t v = " +
                    std::to_string(attr.getSplatValue<APInt>().getSExtValue()) +
                    "; std::memcpy(image + " + std::to_string(at) +
                    ", &v, 4); }\n";
          return success();
        }
        bool isZero = t.getElementType().isF32()
                          ? attr.getSplatValue<APFloat>().isZero()
                          : attr.getSplatValue<APInt>().isZero();
        if (!isZero && t.getElementType().isF32() &&
            llvm::all_of(o->getUsers(),
                         [](Operation *u) { return isa<arith::MulFOp>(u); })) {
          // A factor (@apply's 1 / accumulate): its products scale by it.
          splats[o.getResult()] =
              attr.getSplatValue<APFloat>().convertToDouble();
          return success();
        }
        if (!isZero)
          return unsupported(op, "only zero tensor constants are compiled");
        if (llvm::all_of(o->getUsers(),
                         [](Operation *u) { return isa<ir::AssignOp>(u); })) {
          // Zeros only assigned (@apply clearing the sums): each assign
          // clears its slot.
          zeros.insert(o.getResult());
          return success();
        }
        if (failed(inArena(op, 0)))
          return failure();
        zero(f(o.getResult()), bytesOf(o.getResult()));
        return success();
      })
      .Case([&](arith::AddIOp o) -> LogicalResult {
        if (tensorType(o.getResult()).getRank() != 0)
          return unsupported(op, "tensor sums of integers");
        places[o.getResult()] = {'S', scalarSlot(8)};
        launch("addI32", "1", "1",
               i(o.getLhs()) + ", " + i(o.getRhs()) + ", " + i(o.getResult()),
               "arith.addi");
        return success();
      })
      .Case([&](arith::MulFOp o) -> LogicalResult {
        if (tensorType(o.getResult()).getRank() != 0) {
          // A tensor times a constant factor (@apply's mean of the sums).
          Value x = o.getLhs();
          auto factor = splats.find(o.getRhs());
          if (factor == splats.end()) {
            factor = splats.find(o.getLhs());
            x = o.getRhs();
          }
          if (factor == splats.end())
            return unsupported(op, "a tensor product other than by a "
                                   "constant factor");
          if (failed(inArena(op, 0)))
            return failure();
          int64_t n = numel(o.getResult());
          launch("scale", grid1(n, 256), "256",
                 f(x) + ", " + num(factor->second) + "f, " + f(o.getResult()) +
                     ", " + std::to_string(n),
                 "arith.mulf (scale)");
          return success();
        }
        places[o.getResult()] = {'S', scalarSlot(8)};
        launch("mulF32", "1", "1",
               f(o.getLhs()) + ", " + f(o.getRhs()) + ", " + f(o.getResult()),
               "arith.mulf");
        return success();
      })
      .Case([&](ir::EmbedOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t V = dim(o.getTable(), 2), D = dim(o.getTable(), 1),
                N = numel(o.getIds());
        launch("embed", std::to_string(N), std::to_string(threadsFor(D, 256)),
               f(o.getTable()) + ", " + i(o.getIds()) + ", " +
                   f(o.getResult()) + ", " + std::to_string(N) + ", " +
                   std::to_string(V) + ", " + std::to_string(D),
               "stlm.embed");
        return success();
      })
      .Case([&](ir::EmbedGradOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t V = dim(o.getDtable(), 2), D = dim(o.getDtable(), 1),
                N = numel(o.getIds());
        if (D > 8 * 1024)
          return unsupported(op, "an embedding wider than 8192");
        // A tied head's gradient added in the same launch.
        std::string addend = "nullptr", dtable = f(o.getDtable());
        if (FusedAdd add =
                fusedAdd(op, o.getDtable(), {o.getIds(), o.getDy()})) {
          addend = f(add.addend);
          dtable = f(add.sum);
        }
        launch("embedGrad", std::to_string(V),
               std::to_string(threadsFor(D, 1024)),
               i(o.getIds()) + ", " + f(o.getDy()) + ", " + addend + ", " +
                   dtable + ", " + std::to_string(N) + ", " +
                   std::to_string(V) + ", " + std::to_string(D),
               "stlm.embed_grad");
        return success();
      })
      .Case([&](ir::RMSNormOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t D = dim(o.getX(), 1), N = leading(o.getX(), 1);
        std::string eps = num(o.getEps().convertToDouble()) + "f",
                    copy = copyFor(o.getResult());
        if (int v = rowVectors(D)) {
          // A warp per row, 8 rows a block.
          launch("rmsnormRows<" + std::to_string(v) + ">",
                 std::to_string((N + 7) / 8), "256",
                 f(o.getX()) + ", " + f(o.getWeight()) + ", " +
                     resultBeside(o.getResult(), copy) + ", " +
                     std::to_string(N) + ", " + std::to_string(D) + ", " + eps +
                     ", " + copy,
                 "stlm.rmsnorm");
          return success();
        }
        launch("rmsnorm", std::to_string(N),
               std::to_string(threadsFor(D, 1024)),
               f(o.getX()) + ", " + f(o.getWeight()) + ", " + f(o.getResult()) +
                   ", " + std::to_string(D) + ", " + eps + ", " + copy,
               "stlm.rmsnorm");
        return success();
      })
      .Case([&](ir::RMSNormGradOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t D = dim(o.getX(), 1), N = leading(o.getX(), 1);
        // The residual stream's other gradient added in the same launch.
        std::string addend = "nullptr", dx = f(o.getDx());
        Value written = o.getDx();
        if (FusedAdd add =
                fusedAdd(op, o.getDx(), {o.getX(), o.getDy(), o.getWeight()},
                         {o.getDweight()}, /*inPlace=*/true)) {
          addend = f(add.addend);
          dx = f(add.sum);
          written = add.sum;
        }
        // The bfloat16 copy of what dx holds, for the matmuls that read it.
        std::string eps = num(o.getEps().convertToDouble()) + "f",
                    dx16 = copyFor(written);
        if (int v = rowVectors(D)) {
          // 8 warps a block, rows and dweight's shares in registers; at
          // most 264 blocks (two per multiprocessor of an H100 or H200),
          // since the last block sums every block's shares.
          int64_t blocks = std::min<int64_t>(264, (N + 7) / 8);
          needScratch(blocks * D * 4);
          launch("rmsnormGradRows<" + std::to_string(v) + ">",
                 std::to_string(blocks), "256",
                 f(o.getX()) + ", " + f(o.getWeight()) + ", " + f(o.getDy()) +
                     ", " + addend + ", " + dx + ", " + f(o.getDweight()) +
                     ", (float *)c.scratch, " + counter() + ", " +
                     std::to_string(N) + ", " + std::to_string(D) + ", " + eps +
                     ", " + dx16,
                 "stlm.rmsnorm_grad", std::to_string(D * 4));
          return success();
        }
        // Up to 8 warps a block, as many as have a row of dweight's shares
        // each in kRmsNormGradShared; a row per warp, and at most 264
        // blocks (two per multiprocessor of an H100 or H200), since the
        // last block sums every block's shares.
        int64_t warps = std::min<int64_t>(8, kRmsNormGradShared / (4 * D));
        if (warps < 1)
          return unsupported(op, "an RMSNorm wider than " +
                                     std::to_string(kRmsNormGradShared / 4));
        int64_t rows = std::max<int64_t>(warps, (N + 263) / 264);
        rows = (rows + warps - 1) / warps * warps;
        int64_t blocks = (N + rows - 1) / rows;
        needScratch(blocks * D * 4);
        launch("rmsnormGrad", std::to_string(blocks),
               std::to_string(warps * 32),
               f(o.getX()) + ", " + f(o.getWeight()) + ", " + f(o.getDy()) +
                   ", " + addend + ", " + dx + ", " + f(o.getDweight()) +
                   ", (float *)c.scratch, " + counter() + ", " +
                   std::to_string(N) + ", " + std::to_string(D) + ", " + eps +
                   ", " + std::to_string(rows) + ", " + dx16,
               "stlm.rmsnorm_grad", std::to_string(warps * D * 4));
        return success();
      })
      .Case<ir::LinearOp, ir::LogitsOp, ir::LinearFusedOp>(
          [&](auto) { return emitLinears(op); })
      .Case([&](ir::LinearGradOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t In = dim(o.getX(), 1), Out = dim(o.getWeight(), 2),
                R = leading(o.getX(), 1);
        // dx and dw side by side (two results of one op: neither overlaps
        // the other or an operand), bf16 operands rounded before the fork.
        std::string w = operand(o.getWeight()), dy = operand(o.getDy()),
                    x = operand(o.getX());
        fork(2);
        // dx[R, In] = dy[R, Out] · w[Out, In] (+ addend).
        matmul(false, false, In, R, Out, w, In, dy, Out, fOrNull(o.getAddend()),
               f(o.getDx()));
        if (o.getGeluInput()) {
          // GELU's gradient over the matmul's dx, with dx's copy.
          std::string dx16 = copyFor(o.getDx());
          launch("geluGrad", grid1(R * In, 256), "256",
                 f(o.getGeluInput()) + ", " + f(o.getDx()) + ", " +
                     resultBeside(o.getDx(), dx16) + ", " +
                     std::to_string(R * In) + ", " + dx16,
                 "stlm.linear_grad gelu");
        }
        onLane(1);
        // dw[Out, In] = dy[R, Out]ᵀ · x[R, In].
        matmul(false, true, In, Out, R, x, In, dy, Out, "nullptr",
               f(o.getDweight()));
        join(2);
        return success();
      })
      .Case([&](ir::LowRankMergeOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t Out = dim(o.getWeight(), 2), In = dim(o.getWeight(), 1),
                R = dim(o.getA(), 2);
        // merged[Out, In] = b[Out, R] · a[R, In] + weight.
        std::string a = operand(o.getA()), b = operand(o.getB());
        matmul(false, false, In, Out, R, a, In, b, R, f(o.getWeight()),
               f(o.getResult()));
        return success();
      })
      .Case([&](ir::LowRankMergeGradOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t Out = dim(o.getDmerged(), 2), In = dim(o.getDmerged(), 1),
                R = dim(o.getA(), 2);
        std::string g = operand(o.getDmerged()), a = operand(o.getA()),
                    b = operand(o.getB());
        fork(2);
        // da[R, In] = b[Out, R]ᵀ · g[Out, In].
        matmul(false, true, In, R, Out, g, In, b, R, "nullptr", f(o.getDa()));
        onLane(1);
        // db[Out, R] = g[Out, In] · a[R, In]ᵀ.
        matmul(true, false, R, Out, In, a, In, g, In, "nullptr", f(o.getDb()));
        join(2);
        return success();
      })
      .Case<ir::RoPEOp, ir::RoPEGradOp>([&](auto o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        Value x = op->getOperand(0);
        int64_t W = dim(x, 1), T = dim(x, 2), rows = leading(x, 1);
        bool grad = isa<ir::RoPEGradOp>(op);
        // The next op, when it rotates another tensor of the same rows the
        // same way (k after q), shares the launch.
        std::string second = "nullptr, nullptr";
        auto twin = dyn_cast_or_null<std::remove_pointer_t<decltype(o)>>(
            op->getNextNode());
        int64_t W1 = 0;
        bool paired = twin && tensorType(twin->getOperand(0)) &&
                      leading(twin->getOperand(0), 1) == rows &&
                      dim(twin->getOperand(0), 2) == T &&
                      twin.getHeadDim() == o.getHeadDim() &&
                      twin.getTheta() == o.getTheta() &&
                      twin.getOffset() == o.getOffset() &&
                      twin->getOperand(0) != op->getResult(0);
        if (paired) {
          if (failed(inArena(twin, 0)))
            return failure();
          // One launch reads both inputs while writing both outputs. Of
          // one width, a thread reads both pairs before writing either, so
          // an output may be exactly the other's input (the planner reuses
          // dk's space for dq's rotation) but no other overlap; of two
          // widths, no output may share bytes with the other's tensors.
          Value a = op->getOperand(0), ra = op->getResult(0),
                b = twin->getOperand(0), rb = twin->getResult(0);
          W1 = dim(b, 1);
          auto same = [&](Value u, Value v) {
            return W1 == W && places.lookup(u) == places.lookup(v);
          };
          paired = (!overlaps(rb, a) || same(rb, a)) && !overlaps(rb, ra) &&
                   (!overlaps(ra, b) || same(ra, b));
        }
        // bf16 models: the copies the matmuls read (a gradient's
        // linear_grad), the fp32 result dropped where only they read it.
        std::string copy0 = copyFor(op->getResult(0)), copy1 = "nullptr";
        std::string y0 = resultBeside(op->getResult(0), copy0);
        if (paired) {
          copy1 = copyFor(twin->getResult(0));
          second = f(twin->getOperand(0)) + ", " +
                   resultBeside(twin->getResult(0), copy1);
          done.insert(twin);
        }
        bool split = paired && W1 != W; // blockIdx.y picks the tensor
        launch(
            "rope",
            "dim3(" + grid1(rows * std::max(W, paired ? W1 : W) / 2, 256) +
                (split ? ", 2)" : ", 1)"),
            "256",
            f(x) + ", " + y0 + ", " + second + ", " + std::to_string(rows) +
                ", " + std::to_string(T) + ", " + std::to_string(W) + ", " +
                std::to_string(o.getHeadDim()) + ", " +
                num(o.getTheta().convertToDouble()) + ", " +
                iOrNull(o.getOffset()) + ", " + (grad ? "-1.0" : "1.0") + ", " +
                ptr(ropeTable(o.getTheta().convertToDouble(), o.getHeadDim()),
                    "const double") +
                ", " + std::to_string(context) + ", " + copy0 + ", " + copy1 +
                ", " + std::to_string(paired ? W1 : 0),
            grad ? "stlm.rope_grad" : "stlm.rope");
        return success();
      })
      .Case([&](ir::AttentionOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t H = o.getHeads(), K = o.getKvHeads(), W = dim(o.getQ(), 1),
                T = dim(o.getQ(), 2), S = dim(o.getK(), 2),
                B = leading(o.getQ(), 2), hd = W / H;
        if (hd > 128 || hd % 2)
          return unsupported(op, "head width " + std::to_string(hd) +
                                     " (even, at most 128)");
        std::string hds = std::to_string(hd);
        bool tc = onTensorCores(hd, T);
        std::string family = tc ? tcFamily(hd) : "";
        FailureOr<std::string> rope =
            foldedRope(op, o.getRopeTheta(), family, hd, std::max(T, S));
        if (failed(rope))
          return failure();
        std::string grid =
            "dim3(blocksFor(" + std::to_string(T) + ", " +
            (tc ? "kTcRows" : "attentionRows(" + hds + ", false)") + "), " +
            std::to_string(H) + ", " + std::to_string(B) + ")";
        // The kernel writes a bf16 model's copy of y (for the output
        // projection) as it writes y.
        std::string y16 = copyFor(o.getResult());
        std::string copy =
            tc || y16 != "nullptr" ? ", nullptr, nullptr, " + y16 : "";
        if (!rope->empty())
          copy += ", " + *rope;
        launch("attention" + family + "<" + hds + ">", grid, "128",
               f(o.getQ()) + ", " + f(o.getK()) + ", " + f(o.getV()) + ", " +
                   f(o.getResult()) + ", " + std::to_string(T) + ", " +
                   std::to_string(S) + ", " + std::to_string(H) + ", " +
                   std::to_string(K) + ", " +
                   (o.getMask() == ir::MaskKind::causal ? "true" : "false") +
                   ", " + iOrNull(o.getOffset()) + ", " +
                   (keptLse.count(op) ? ptr(keptLse.lookup(op)) : "nullptr") +
                   copy,
               "stlm.attention",
               tc ? "attention" + family + "Shared<" + hds + ">(0)" : "0");
        return success();
      })
      .Case([&](ir::AttentionGradOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t H = o.getHeads(), K = o.getKvHeads(), W = dim(o.getQ(), 1),
                T = dim(o.getQ(), 2), S = dim(o.getK(), 2),
                B = leading(o.getQ(), 2), hd = W / H;
        if (hd > 128 || hd % 2)
          return unsupported(op, "head width " + std::to_string(hd) +
                                     " (even, at most 128)");
        bool tc = onTensorCores(hd, T);
        std::string family = tc ? tcFamily(hd) : "";
        FailureOr<std::string> rope =
            foldedRope(op, o.getRopeTheta(), family, hd, std::max(T, S));
        if (failed(rope))
          return failure();
        // lse and delta [B, H, T]: the forward's kept lse and delta from
        // its y (pairAttention), or both into scratch by the forward pass
        // run again (it keeps y in registers).
        int64_t statBytes = B * H * T * 4;
        bool kept = keptLse.count(op);
        needScratch(kept ? statBytes : 2 * statBytes);
        std::string lse = kept ? ptr(keptLse.lookup(op)) : "(float *)c.scratch",
                    delta = kept ? "(float *)c.scratch"
                                 : "(float *)(c.scratch + " +
                                       std::to_string(statBytes) + ")";
        std::string causal =
            o.getMask() == ir::MaskKind::causal ? "true" : "false";
        std::string hds = std::to_string(hd);
        std::string shape = std::to_string(T) + ", " + std::to_string(S) +
                            ", " + std::to_string(H) + ", " +
                            std::to_string(K) + ", " + causal + ", " +
                            iOrNull(o.getOffset());
        auto grid = [&](int64_t n, int64_t heads, bool backward) {
          return "dim3(blocksFor(" + std::to_string(n) + ", " +
                 (tc ? std::string("kTcRows")
                     : "attentionRows(" + hds +
                           (backward ? ", true)" : ", false)")) +
                 "), " + std::to_string(heads) + ", " + std::to_string(B) + ")";
        };
        auto kernel = [&](const char *name) {
          return std::string(name) + family + "<" + hds + ">";
        };
        auto shared = [&](int pass) {
          return tc ? "attention" + family + "Shared<" + hds + ">(" +
                          std::to_string(pass) + ")"
                    : std::string("0");
        };
        if (kept)
          launch("attentionDelta<" + std::to_string(deltaLanes(hd)) + ">",
                 grid1(B * T * H * deltaLanes(hd), 256), "256",
                 f(forwardOf.lookup(op)) + ", " + f(o.getDy()) + ", " + delta +
                     ", " + std::to_string(B * T * H) + ", " +
                     std::to_string(T) + ", " + std::to_string(H) + ", " +
                     std::to_string(hd),
                 "stlm.attention_grad (delta)");
        else
          launch(kernel("attention"), grid(T, H, false), "128",
                 f(o.getQ()) + ", " + f(o.getK()) + ", " + f(o.getV()) +
                     ", nullptr, " + shape + ", " + lse + ", " + f(o.getDy()) +
                     ", " + delta +
                     (rope->empty() ? "" : ", nullptr, " + *rope),
                 "stlm.attention_grad (lse, delta)", shared(0));
        // dq beside dk and dv (results of one op, reading the same). The
        // tensor-core dk/dv kernel writes a bf16 model's copy of dv (for
        // the value projection's gradient), dv itself only where read;
        // the bf16 kernels write dq's and dk's copies too (read by the
        // projections' gradients where RoPE is folded in).
        bool bf = family == "Bf";
        std::string dv16 = tc ? copyFor(o.getDv()) : "nullptr",
                    dv = resultBeside(o.getDv(), dv16),
                    dv16Arg = tc ? ", " + dv16 : std::string();
        std::string dq16 = bf ? copyFor(o.getDq()) : "nullptr",
                    dk16 = bf ? copyFor(o.getDk()) : "nullptr";
        std::string dq = resultBeside(o.getDq(), dq16),
                    dk = resultBeside(o.getDk(), dk16);
        std::string ropeArg = rope->empty() ? "nullptr" : *rope;
        fork(2);
        launch(kernel("attentionGradQ"), grid(T, H, true), "128",
               f(o.getQ()) + ", " + f(o.getK()) + ", " + f(o.getV()) + ", " +
                   f(o.getDy()) + ", " + lse + ", " + delta + ", " + dq + ", " +
                   shape + (bf ? ", " + ropeArg + ", " + dq16 : std::string()),
               "stlm.attention_grad (dq)", shared(1));
        onLane(1);
        launch(kernel("attentionGradKV"), grid(S, K, true), "128",
               f(o.getQ()) + ", " + f(o.getK()) + ", " + f(o.getV()) + ", " +
                   f(o.getDy()) + ", " + lse + ", " + delta + ", " + dk + ", " +
                   dv + ", " + shape + dv16Arg +
                   (bf ? ", " + ropeArg + ", " + dk16 : std::string()),
               "stlm.attention_grad (dk, dv)", shared(2));
        join(2);
        return success();
      })
      .Case([&](ir::SwiGLUOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t n = numel(o.getGate());
        std::string copy = copyFor(o.getResult());
        launch("swiglu", grid1Per(n, "kSwiGLUPerThread", 256), "256",
               f(o.getGate()) + ", " + f(o.getUp()) + ", " +
                   resultBeside(o.getResult(), copy) + ", " +
                   std::to_string(n) + ", " + copy,
               "stlm.swiglu");
        return success();
      })
      .Case([&](ir::SwiGLUGradOp o) -> LogicalResult {
        if (failed(allInArena(op)))
          return failure();
        int64_t n = numel(o.getGate());
        std::string dg16 = copyFor(o.getDgate()), du16 = copyFor(o.getDup());
        launch("swigluGrad", grid1Per(n, "kSwiGLUPerThread", 256), "256",
               f(o.getGate()) + ", " + f(o.getUp()) + ", " + f(o.getDy()) +
                   ", " + resultBeside(o.getDgate(), dg16) + ", " +
                   resultBeside(o.getDup(), du16) + ", " + std::to_string(n) +
                   ", " + dg16 + ", " + du16,
               "stlm.swiglu_grad");
        return success();
      })
      .Case([&](ir::GELUOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t n = numel(o.getX());
        std::string copy = copyFor(o.getResult());
        launch("gelu", grid1(n, 256), "256",
               f(o.getX()) + ", nullptr, " + resultBeside(o.getResult(), copy) +
                   ", " + std::to_string(n) + ", " + copy,
               "stlm.gelu");
        return success();
      })
      .Case([&](ir::GELUGradOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t n = numel(o.getX());
        std::string copy = copyFor(o.getDx());
        launch("geluGrad", grid1(n, 256), "256",
               f(o.getX()) + ", " + f(o.getDy()) + ", " +
                   resultBeside(o.getDx(), copy) + ", " + std::to_string(n) +
                   ", " + copy,
               "stlm.gelu_grad");
        return success();
      })
      .Case([&](ir::AddOp o) -> LogicalResult {
        int64_t n = numel(o.getLhs()), nb = numel(o.getRhs());
        // @accumulate's `assign @s, add(state_ref @s, g)`: summed in place
        // in the slot (the assign then copies nothing).
        auto state = o.getLhs().getDefiningOp<ir::StateRefOp>();
        auto assign = o->hasOneUse()
                          ? dyn_cast<ir::AssignOp>(*o->getUsers().begin())
                          : ir::AssignOp();
        if (state && assign && assign.getName() == state.getName() &&
            o.getLhs().hasOneUse() && n == nb) {
          places[o.getResult()] = places.lookup(o.getLhs());
          launch("add", grid1(n, 256), "256",
                 f(o.getLhs()) + ", " + f(o.getRhs()) + ", " + f(o.getLhs()) +
                     ", " + std::to_string(n) + ", " + std::to_string(nb),
                 "stlm.add (into a sum)");
          return success();
        }
        if (failed(inArena(op, 0)))
          return failure();
        launch("add", grid1(n, 256), "256",
               f(o.getLhs()) + ", " + f(o.getRhs()) + ", " + f(o.getResult()) +
                   ", " + std::to_string(n) + ", " + std::to_string(nb),
               "stlm.add");
        return success();
      })
      .Case([&](ir::NextTokenLossOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t V = dim(o.getLogits(), 1), N = leading(o.getLogits(), 1);
        needScratch(N * 4);
        // The gradient in the same pass when it follows (past constants).
        ir::NextTokenLossGradOp grad;
        for (Operation *n = op->getNextNode(); n; n = n->getNextNode()) {
          if (auto g = dyn_cast<ir::NextTokenLossGradOp>(n)) {
            if (g.getLogits() == o.getLogits() &&
                g.getTargets() == o.getTargets())
              grad = g;
            break;
          }
          if (!isa<arith::ConstantOp>(n))
            break;
        }
        std::string dlogits = "nullptr", dloss = "nullptr",
                    dlogits16 = "nullptr";
        if (grad) {
          for (Operation *n = op->getNextNode(); n != grad;
               n = n->getNextNode())
            if (failed(emitOp(n)))
              return failure();
          if (failed(inArena(grad, 0)))
            return failure();
          dlogits16 = copyFor(grad.getDlogits());
          dlogits = resultBeside(grad.getDlogits(), dlogits16);
          dloss = f(grad.getDloss());
          done.insert(grad);
        }
        launch("crossEntropy", std::to_string(N),
               std::to_string(threadsFor(V, 1024)),
               f(o.getLogits()) + ", " + i(o.getTargets()) + ", " +
                   std::to_string(V) + ", (float *)c.scratch, " + dlogits +
                   ", " + dloss + ", " + std::to_string(N) + ", " + counter() +
                   ", " + f(o.getLoss()) + ", " + dlogits16,
               "stlm.next_token_loss");
        return success();
      })
      .Case([&](ir::NextTokenLossGradOp o) -> LogicalResult {
        if (failed(inArena(op, 0)))
          return failure();
        int64_t V = dim(o.getLogits(), 1), N = leading(o.getLogits(), 1);
        std::string copy = copyFor(o.getDlogits());
        launch("crossEntropy", std::to_string(N),
               std::to_string(threadsFor(V, 1024)),
               f(o.getLogits()) + ", " + i(o.getTargets()) + ", " +
                   std::to_string(V) + ", nullptr, " +
                   resultBeside(o.getDlogits(), copy) + ", " + f(o.getDloss()) +
                   ", " + std::to_string(N) + ", nullptr, nullptr, " + copy,
               "stlm.next_token_loss_grad");
        return success();
      })
      .Case([&](ir::WriteRowsOp o) -> LogicalResult {
        Place cache = places.lookup(o.getCache());
        if (cache.base != 'W')
          return unsupported(op, "the cache must be a stlm.state read");
        int64_t S = dim(o.getCache(), 2), W = dim(o.getCache(), 1),
                R = dim(o.getRows(), 2), lead = leading(o.getCache(), 2);
        launch("writeRows", grid1(lead * R * W, 256), "256",
               f(o.getCache()) + ", " + f(o.getRows()) + ", " +
                   i(o.getOffset()) + ", " + std::to_string(lead) + ", " +
                   std::to_string(S) + ", " + std::to_string(R) + ", " +
                   std::to_string(W),
               "stlm.write_rows");
        places[o.getResult()] = cache;
        return success();
      })
      .Case([&](ir::AssignOp o) -> LogicalResult {
        auto it = slots.find(o.getName().str());
        if (it == slots.end())
          return unsupported(op, "'@" + o.getName().str() +
                                     "' has no weights slot");
        Place dst{'W', it->second}, src = places.lookup(o.getValue());
        if (zeros.count(o.getValue())) {
          zero(ptr(dst), bytesOf(o.getValue()));
          return success();
        }
        if (src == dst)
          return success();
        copy(ptr(dst), ptr(src), bytesOf(o.getValue()));
        return success();
      })
      .Case([&](ir::LRScheduleOp o) -> LogicalResult {
        places[o.getResult()] = {'S', scalarSlot(8)};
        launch("lrSchedule", "1", "1",
               i(o.getStep()) + ", Schedule{" +
                   num(o.getLr().convertToDouble()) + ", " +
                   num(o.getMinLr().convertToDouble()) + ", " +
                   std::to_string(o.getWarmup()) + ", " +
                   std::to_string(o.getTotal()) + ", " +
                   (o.getKind() == ir::ScheduleKind::cosine ? "1" : "0") +
                   "}, " + f(o.getResult()),
               "stlm.lr_schedule");
        return success();
      })
      .Case([&](ir::ClipGradNormOp o) -> LogicalResult {
        std::vector<std::array<int64_t, 5>> rows;
        std::vector<double> decay;
        for (Value g : o.getGrads()) {
          Place p = places.lookup(g);
          if (p.base != 'A')
            return unsupported(op, "clipped gradients must be in the arena");
          rows.push_back({0, 0, 0, p.off, numel(g)});
          decay.push_back(0);
        }
        auto [at, quads] = table(rows, decay);
        int64_t factor = scalarSlot(8);
        places[o.getNorm()] = {'S', scalarSlot(8)};
        int64_t blocks =
            std::clamp<int64_t>((quads + 255) / 256, 1, kGridStrideBlocks);
        needScratch(blocks * 8); // each block's sum of squares
        launch("sumSquares", std::to_string(blocks), "256",
               "(const AdamWEntry *)(c.scalars + " + std::to_string(at) +
                   "), " + std::to_string(rows.size()) + ", " +
                   std::to_string(quads) + ", c.arena, (double *)c.scratch, " +
                   counter() + ", " + num(o.getMaxNorm().convertToDouble()) +
                   ", " + f(o.getNorm()) + ", " + ptr({'S', factor}),
               "stlm.clip_grad_norm");
        // The clipped gradients are the gradients, scaled as AdamW reads
        // them: nothing else may read them.
        for (auto [g, c] : llvm::zip(o.getGrads(), o.getClipped())) {
          for (Operation *user : c.getUsers())
            if (!isa<ir::AdamWOp>(user) ||
                cast<ir::AdamWOp>(user).getGrad() != c)
              return unsupported(user, "a clipped gradient read by another "
                                       "op than AdamW's gradient");
          places[c] = places.lookup(g);
          clipFactor[c] = factor;
        }
        return success();
      })
      .Case([&](ir::AdamWOp o) -> LogicalResult { return emitAdamW(o); })
      .Case([&](func::CallOp c) -> LogicalResult {
        if (c.getCallee() != "grad" || gradReturns.empty())
          return unsupported(op, "only a call of @grad is compiled");
        line("if (!body_grad(c)) return false;");
        for (auto [r, p] : llvm::zip(c.getResults(), gradReturns))
          places[r] = p;
        return success();
      })
      .Case([&](func::ReturnOp) { return success(); })
      .Default([&](Operation *) {
        return unsupported(op, "no CUDA kernel computes it");
      });
}

LogicalResult Emitter::emitFunction(func::FuncOp fn, unsigned inputs,
                                    bool hoisted) {
  std::string name = fn.getSymName().str();
  body.clear();
  if (auto a = fn->getAttrOfType<IntegerAttr>("stlm.arena_size"))
    layout.arenaSize = std::max(layout.arenaSize, a.getInt());
  // Arguments: consecutive in the input block.
  int64_t at = 0;
  for (unsigned k = 0; k < fn.getNumArguments() && k < inputs; ++k) {
    places[fn.getArgument(k)] = {'I', at * 4};
    at += tensorType(fn.getArgument(k)).getNumElements();
  }
  inputInts = std::max(inputInts, at);
  pairAttention(fn);
  // Weights slots and scalar constants first: they launch nothing, and a
  // fused group (AdamW) may reach past its first op.
  for (Operation &op : fn.getBody().front()) {
    auto c = dyn_cast<arith::ConstantOp>(op);
    if (isa<ir::ParamRefOp, ir::StateRefOp>(op) ||
        (c && tensorType(c.getResult()) &&
         tensorType(c.getResult()).getRank() == 0)) {
      if (failed(emitOp(&op)))
        return failure();
      done.insert(&op);
    }
  }
  shadowWeights(fn, hoisted);
  for (Operation &op : fn.getBody().front()) {
    if (failed(emitOp(&op)))
      return failure();
    releaseCopies(&op);
  }
  if (!bf16Copies.empty())
    return fn.emitOpError("a bf16 operand copy outlived its last matmul");
  poolFree.clear();
  poolTop = 0;
  auto ret = cast<func::ReturnOp>(fn.getBody().front().getTerminator());
  Result r;
  if (name == "train_step" || name == "apply" || name == "eval") {
    // loss, norm, lr (apply: norm, lr; eval: the loss and each
    // objective's): gathered into floats for one download.
    int64_t outAt = scalarSlot(4 * ret.getNumOperands());
    for (auto [k, v] : llvm::enumerate(ret.getOperands()))
      copy("(char *)c.scalars + " + std::to_string(outAt + 4 * k),
           ptr(places.lookup(v), "char"), 4);
    r = {ptr({'S', outAt}), static_cast<int64_t>(ret.getNumOperands())};
  } else {
    Value v = ret.getOperand(0);
    r = {f(v), numel(v)};
  }
  results[name] = r;
  outputFloats = std::max(outputFloats, r.count);
  if (name == "grad") {
    auto names = fn->getAttrOfType<ArrayAttr>("stlm.grad_params");
    for (auto [k, v] : llvm::enumerate(ret.getOperands())) {
      gradReturns.push_back(places.lookup(v));
      if (k == 0)
        continue;
      Place p = places.lookup(v);
      if (p.base != 'A')
        return fn.emitOpError("gradient ") << k - 1 << " is not in the arena";
      layout.gradParams.push_back(
          llvm::cast<FlatSymbolRefAttr>(names[k - 1]).getValue().str());
      layout.gradOffsets.push_back(p.off);
    }
  }
  out += "static bool body_" + name + "(Context &c) {\n" + body +
         "  return true;\n}\n\n";
  return success();
}

void Emitter::emitEntries(const std::string &name, func::FuncOp fn) {
  const Result &r = results[name];
  std::string entry = name == "train_step"   ? "kTrainStep"
                      : name == "grad"       ? "kGrad"
                      : name == "eval"       ? "kEval"
                      : name == "accumulate" ? "kAccumulate"
                      : name == "apply"      ? "kApply"
                      : name == "logits"     ? "kLogits"
                      : name == "prefill"    ? "kPrefill"
                                             : "kDecode";
  std::string sig =
      "extern \"C\" int32_t " + prefix + "_" + name + "(void *context, void *";
  auto argCount = [&](unsigned k) {
    return std::to_string(tensorType(fn.getArgument(k)).getNumElements());
  };
  // Every entry point ends the same way: its graph run with `inputs`.
  // The weights' shadow: an inference entry makes it first where it is
  // stale; a training entry whose body makes it (@grad, @eval, and
  // @accumulate through @grad's body) leaves it fresh when it succeeds,
  // one that updates the weights leaves it stale however it ends.
  std::string call = "  Context &c = *static_cast<Context *>(context);\n";
  if (refreshes.count(name))
    call += "  if (!refreshShadow(c)) return -1;\n";
  std::string after;
  if (shadowWriters.count(name))
    after = "  c.shadowFresh = false;\n";
  else if (shadowMakers.count(name))
    after = "  if (rc == 0) c.shadowFresh = true;\n";
  call += after.empty() ? "  return run(c, " : "  int32_t rc = run(c, ";
  call += entry + ", ";
  std::string results =
      r.where + ", " + std::to_string(r.count) + ", out, body_" + name +
      ");\n" + (after.empty() ? "" : after + "  return rc;\n") + "}\n\n";
  if (name == "apply") {
    // The mean of the sums, clipping and AdamW: no inputs.
    out += sig + ", float *out) {\n" + call + "nullptr, nullptr, 0, " + results;
    return;
  }
  if (name == "train_step" || name == "grad" || name == "eval" ||
      name == "accumulate") {
    // The step's @train_step takes @grad's batch.
    func::FuncOp batchFn = fn;
    unsigned n = batchFn.getNumArguments();
    std::string tok = argCount(0), tgt = argCount(1),
                seed = n > 2 ? argCount(2) : "1";
    out += sig +
           ", const int32_t *tokens, const int32_t *targets, const "
           "int32_t *seed, float *out) {\n"
           "  const int32_t *in[] = {tokens, targets, seed};\n"
           "  const size_t counts[] = {" +
           tok + ", " + tgt + ", " + seed + "};\n" + call + "in, counts, 3, " +
           results;
    return;
  }
  if (name == "decode_step") {
    // The position is checked here: the cache has `context` rows.
    out += sig +
           ", const int32_t *token, const int32_t *pos, float *out) "
           "{\n"
           "  if (!token || !pos) return -1;\n"
           "  if (*pos < 0 || *pos >= " +
           std::to_string(context) + ") return " +
           std::to_string(format::kPositionOutOfRange) +
           ";\n"
           "  const int32_t *in[] = {token, pos};\n"
           "  const size_t counts[] = {1, 1};\n" +
           call + "in, counts, 2, " + results;
    return;
  }
  out += sig +
         ", const int32_t *tokens, float *out) {\n"
         "  const int32_t *in[] = {tokens};\n"
         "  const size_t counts[] = {" +
         argCount(0) + "};\n" + call + "in, counts, 1, " + results;
}

FailureOr<CudaSource> Emitter::run() {
  auto weightsSize = model->getAttrOfType<IntegerAttr>("stlm.weights_size");
  if (!weightsSize)
    return model.emitOpError("has no weights layout (run stlm-plan-memory "
                             "first)");
  bf16 = hasBF16Matmuls(model);
  planShadow();
  layout.weightsSize = weightsSize.getInt();
  func::FuncOp grad, eval, step, accumulate, apply;
  std::vector<func::FuncOp> inference;
  for (func::FuncOp f : compiledFunctions(model)) {
    StringRef name = f.getSymName();
    if (name == "grad")
      grad = f;
    else if (name == "eval")
      eval = f;
    else if (name == "train_step")
      step = f;
    else if (name == "accumulate")
      accumulate = f;
    else if (name == "apply")
      apply = f;
    else
      inference.push_back(f);
  }
  if (!grad || !eval || !(step || (accumulate && apply)))
    return model.emitOpError("needs @grad, @eval and @train_step (or "
                             "@accumulate and @apply): run stlm-autodiff "
                             "first");
  splitStep = !step;
  auto input = tensorType(grad.getArgument(0));
  if (!input || input.getRank() != 2)
    return model.emitOpError("the cuda target compiles token models only");
  batchRows = input.getDimSize(0);
  context = input.getDimSize(1);

  std::string header =
      "// Generated by stlm-compile --target=cuda; do not edit.\n"
      "#include \"Kernels.cuh\"\n#include \"stlm/stlm.h\"\n\n"
      "using namespace stlm_cuda;\n\nstatic_assert(kLanes >= " +
      std::to_string(kLanes) +
      ", \"the emitter forks this many lanes\");\n\nnamespace {\n\n";
  if (failed(emitFunction(grad, format::kBatchArgs)) ||
      (step && failed(emitFunction(step, format::kBatchArgs))) ||
      (accumulate && failed(emitFunction(accumulate, format::kBatchArgs))) ||
      (apply && failed(emitFunction(apply, 0))) ||
      failed(emitFunction(eval, format::kBatchArgs)))
    return failure();
  for (func::FuncOp f : inference) {
    if (failed(emitFunction(f, f.getNumArguments(), /*hoisted=*/true)))
      return failure();
    layout.inference.push_back(f.getSymName().str());
  }
  // Scratch: every launch's temporaries, then the stash (kStash), then the
  // pool of bf16 operand copies (kPool), then the weights' shadow (kShadow;
  // the bodies name each where they have any: fp32 models have neither
  // pool nor shadow).
  int64_t stashAt = (scratchSize + 255) / 256 * 256,
          poolAt = stashAt + stashSize,
          shadowAt = (poolAt + poolSize + 255) / 256 * 256;
  out = header + "[[maybe_unused]] constexpr int64_t kStash = " +
        std::to_string(stashAt) +
        ";\n[[maybe_unused]] constexpr int64_t kPool = " +
        std::to_string(poolAt) +
        ";\n[[maybe_unused]] constexpr int64_t kShadow = " +
        std::to_string(shadowAt) + ";\n\n" + out;
  out +=
      "constexpr int64_t kWeightsSize = " + std::to_string(layout.weightsSize) +
      ";\nconstexpr int64_t kArenaSize = " + std::to_string(layout.arenaSize) +
      ";\nconstexpr int64_t kScratchSize = " +
      std::to_string(shadowAt + (shadowHi / 2 + 255) / 256 * 256) +
      ";\nconstexpr int64_t kScalarSize = " + std::to_string(scalarSize) +
      ";\nconstexpr size_t kInputInts = " + std::to_string(inputInts) +
      ";\nconstexpr size_t kOutputFloats = " + std::to_string(outputFloats) +
      ";\nconstexpr size_t kMatmulSites = " + std::to_string(matmulSites) +
      ";\n\n/// Every matmul site, planned (timed) when a context opens.\n"
      "const MatmulShape kMatmulShapes[kMatmulSites + 1] = {\n" +
      matmulShapes +
      "    {}};\n\n/// The scalar block's first contents: constants and "
      "tables.\n"
      "void initScalars(char *image) {\n" +
      init + "}\n\n";
  out += "/// Kernel settings made once per context, outside any capture.\n"
         "bool prepareKernels(Context &c) {\n  (void)c;\n";
  for (const auto &[family, hd] : tensorCoreHeads)
    out += "  if (!prepareAttention" + family + "<" + std::to_string(hd) +
           ">(c)) return false;\n";
  for (const auto &[key, place] : ropeTables) {
    int64_t pairs = context * (key.second / 2);
    out += "  ropeTable<<<blocksFor(" + std::to_string(pairs) +
           ", 256), 256, 0, c.stream>>>(" + ptr(place, "double") + ", " +
           std::to_string(context) + ", " + std::to_string(key.second) + ", " +
           num(key.first) +
           ");\n  if (!check(c, cudaPeekAtLastError(), \"rope table\")) "
           "return false;\n";
  }
  out += "  return true;\n}\n\n";
  if (!refreshes.empty()) {
    auto [grid, args] = shadowLaunch();
    out += "/// The weights' bf16 shadow made again where the weights have "
           "changed\n/// since it was last made (an inference entry's "
           "graph reads it).\nbool refreshShadow(Context &c) {\n"
           "  if (c.shadowFresh) return true;\n  c.error.clear();\n"
           "  toBF16<<<" +
           grid + ", 256, 0, c.stream>>>(" + args +
           ");\n  if (!check(c, cudaGetLastError(), \"bf16 weights\")) "
           "return false;\n  c.shadowFresh = true;\n  return true;\n}\n\n";
  }
  out += "} // namespace\n\n";
  emitEntries("grad", grad);
  emitEntries("eval", eval);
  if (splitStep) {
    emitEntries("accumulate", grad);
    emitEntries("apply", apply);
  } else {
    emitEntries("train_step", grad);
  }
  for (func::FuncOp f : inference)
    emitEntries(f.getSymName().str(), f);
  CudaSource s;
  s.text = std::move(out);
  s.layout = layout;
  s.splitStep = splitStep;
  return s;
}

/// `text` as a C string literal (octal escapes for all but plain ASCII).
std::string cString(const std::string &text) {
  std::string s = "\"";
  int column = 0;
  for (unsigned char ch : text) {
    if (ch == '\\' || ch == '"')
      s += '\\', s += static_cast<char>(ch);
    else if (ch >= 32 && ch < 127 && ch != '?')
      s += static_cast<char>(ch);
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", ch);
      s += buf;
    }
    if (++column >= 100 && ch == ',') {
      s += "\"\n    \"";
      column = 0;
    }
  }
  return s + "\"";
}

} // namespace

FailureOr<CudaSource> emitCuda(ir::ModelOp model, bool tf32, int sm) {
  Emitter e(model, tf32, sm);
  return e.run();
}

std::string cudaDescriptor(const std::string &symbol,
                           const std::string &manifest,
                           const DriverLayout &layout, bool splitStep,
                           int64_t embeddedSize) {
  std::string weights = format::embeddedWeightsSymbol(symbol);
  auto has = [&](const char *f) {
    return std::find(layout.inference.begin(), layout.inference.end(), f) !=
           layout.inference.end();
  };
  std::string s;
  if (embeddedSize > 0)
    s += "extern \"C\" const unsigned char " + weights + "[];\n";
  s += "namespace {\n"
       "const char kManifest[] =\n    " +
       cString(manifest) +
       ";\n\n"
       "void *deviceOpen(char *error, size_t size) {\n"
       "  std::vector<char> image(kScalarSize > 0 ? kScalarSize : 1, 0);\n"
       "  initScalars(image.data());\n"
       "  std::string why;\n"
       "  Context *c = stlm_cuda::open(kWeightsSize, kArenaSize, "
       "kScratchSize, kScalarSize, image.data(), kInputInts, kOutputFloats, "
       "kMatmulSites, kMatmulShapes, why);\n"
       "  if (c && !prepareKernels(*c)) {\n"
       "    why = c->error;\n    stlm_cuda::close(c);\n    c = nullptr;\n  }\n"
       "  if (!c && error && size) std::snprintf(error, size, \"%s\", "
       "why.c_str());\n"
       "  return c;\n}\n"
       "void deviceClose(void *c) { stlm_cuda::close(static_cast<Context "
       "*>(c)); }\n"
       "int32_t deviceCopy(void *context, int32_t buffer, int64_t offset, "
       "void *host, int64_t bytes, int32_t toDevice) {\n"
       "  Context &c = *static_cast<Context *>(context);\n"
       "  c.error.clear();\n"
       "  int64_t size = buffer == 0 ? kWeightsSize : kArenaSize;\n"
       "  if (offset < 0 || bytes < 0 || offset > size || bytes > size - "
       "offset) {\n"
       "    c.error = \"a copy outside the device buffers\";\n"
       "    return -1;\n  }\n"
       "  char *dev = (buffer == 0 ? c.weights : c.arena) + offset;\n"
       "  if (toDevice && buffer == 0) c.shadowFresh = false;\n"
       "  cudaError_t e = toDevice ? cudaMemcpy(dev, host, bytes, "
       "cudaMemcpyHostToDevice) : cudaMemcpy(host, dev, bytes, "
       "cudaMemcpyDeviceToHost);\n"
       "  return check(c, e, \"cudaMemcpy\") ? 0 : -1;\n}\n"
       "const char *deviceMessage(const void *c) {\n"
       "  return static_cast<const Context *>(c)->error.c_str();\n}\n"
       "void *noHandler(void *) { return nullptr; }\n"
       "int oneThread(int) { return 1; }\n"
       "const stlm_device kDevice = {\"cuda\", deviceOpen, deviceClose, "
       "deviceCopy, deviceMessage};\n"
       "} // namespace\n\n"
       "extern \"C\" const stlm_artifact " +
       format::descriptorSymbol(symbol) +
       " = {\n"
       "    STLM_ABI_VERSION, kManifest,\n    " +
       (splitStep ? std::string("nullptr") : symbol + "_train_step") + ", " +
       symbol + "_grad, " + symbol + "_eval,\n    " +
       (has("logits") ? symbol + "_logits" : "nullptr") + ", " +
       (has("prefill") ? symbol + "_prefill" : "nullptr") + ", " +
       (has("decode_step") ? symbol + "_decode_step" : "nullptr") + ",\n    " +
       (splitStep ? symbol + "_accumulate, " + symbol + "_apply"
                  : std::string("nullptr, nullptr")) +
       ",\n"
       "    noHandler, oneThread, noHandler, noHandler,\n"
       "    &kDevice, " +
       (embeddedSize > 0 ? weights : std::string("nullptr")) + ", " +
       std::to_string(embeddedSize) +
       ",\n    nullptr, nullptr}; // no batched generation yet\n";
  return s;
}

} // namespace stlm::codegen
