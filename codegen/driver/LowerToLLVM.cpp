//===- LowerToLLVM.cpp - the driver of a compiled model, in LLVM IR -------===//
//
// Every tensor of a planned function lives at a fixed place: parameters and
// optimizer state at their `stlm.offset` in the weights blob, op results at
// their `stlm.offsets` in the arena, function arguments where the caller
// points. Each op makes the kernel calls of its rule
// (codegen/artifact/KernelPlan.h), whose tensors the KernelTarget passes
// (on the host, halide_buffer_t descriptors on the stack: HostTarget.cpp);
// scalars (learning rate, clip scale, step count, loss seeds) are plain
// LLVM values, and the rest (schedule, clipping's norm, cache rows,
// assignments) is driver work in plain LLVM.
//
//===----------------------------------------------------------------------===//

#include "codegen/driver/LowerToLLVM.h"

#include "codegen/driver/KernelTarget.h"

#include "dialects/STLM/IR/STLMOps.h"
#include "stlm/artifact_format.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <map>

using namespace mlir;
namespace ir = mlir::stlm;

namespace stlm::codegen {

std::string symbolPrefix(ir::ModelOp model) {
  std::string s = model.getSymName().str();
  for (char &c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)))
      c = '_';
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0])))
    s = "m_" + s;
  return s;
}

namespace {

/// The batch arguments every training and evaluation entry point takes:
/// tokens, targets and the mask seed (unused without a masked objective),
/// so that all models share stlm_artifact's signatures.
constexpr unsigned kBatchArgs = format::kBatchArgs;

/// Where a value of the function being lowered lives.
struct Place {
  Value ptr;           // tensors (and scalars that live in memory)
  Value scalar;        // scalars computed by the driver
  std::string symbol;  // set when `ptr` is a parameter/state slot
  int64_t arena = -1;  // arena offset when `ptr` is in the arena
};

class Lowering {
public:
  Lowering(ModuleOp module, ir::ModelOp model, const KernelPlan &plan,
           KernelTarget &target)
      : module(module), model(model), plan(plan),
        ctx(module.getContext()), b(ctx), prefix(symbolPrefix(model)),
        target(&target) {
    ptrTy = LLVM::LLVMPointerType::get(ctx);
    i8 = b.getI8Type(), i32 = b.getI32Type(), i64 = b.getI64Type(),
    f32 = b.getF32Type(), f64 = b.getF64Type();
    for (Operation &op : model.getBody().front()) {
      auto off = op.getAttrOfType<IntegerAttr>("stlm.offset");
      if (!off)
        continue;
      if (auto p = dyn_cast<ir::ParamOp>(op))
        slots[p.getSymName().str()] = off.getInt();
      else if (auto s = dyn_cast<ir::StateOp>(op))
        slots[s.getSymName().str()] = off.getInt();
    }
  }

  FailureOr<DriverLayout> run();

private:
  // --- helpers ------------------------------------------------------------
  Value constI32(int64_t v) {
    return b.create<LLVM::ConstantOp>(loc, i32, b.getI32IntegerAttr(v));
  }
  Value constI64(int64_t v) {
    return b.create<LLVM::ConstantOp>(loc, i64, b.getI64IntegerAttr(v));
  }
  Value constF32(double v) {
    return b.create<LLVM::ConstantOp>(loc, f32, b.getF32FloatAttr(v));
  }
  Value constF64(double v) {
    return b.create<LLVM::ConstantOp>(loc, f64, b.getF64FloatAttr(v));
  }
  Value offsetPtr(Value base, int64_t bytes) {
    if (bytes == 0)
      return base;
    return b.create<LLVM::GEPOp>(loc, ptrTy, i8, base,
                                 ArrayRef<LLVM::GEPArg>{constI64(bytes)});
  }
  static RankedTensorType tensorType(Value v) {
    return llvm::dyn_cast<RankedTensorType>(v.getType());
  }

  /// A tensor argument for `host` holding a tensor of type `t` as `rank`
  /// dimensions, in slot `slot` of the call.
  Value buffer(Value host, RankedTensorType t, int rank, int slot) {
    return target->tensor(b, loc, host, t, rank, slot);
  }
  /// Calls a kernel of the plan; on a non-zero status returns it from the
  /// function.
  void call(const KernelSpec &spec, ArrayRef<Value> args);
  /// Returns `rc` from the function when it is not 0, else goes on.
  void returnOnError(Value rc);

  Value ptrOf(Value v) {
    Place &p = places[v];
    if (!p.ptr) {
      // A driver scalar a kernel wants as a buffer: spill it.
      Value slot = b.create<LLVM::AllocaOp>(loc, ptrTy, p.scalar.getType(),
                                            constI64(1), 64);
      b.create<LLVM::StoreOp>(loc, p.scalar, slot);
      p.ptr = slot;
    }
    return p.ptr;
  }
  /// `v` lives at `offset` in the arena.
  void placeInArena(Value v, int64_t offset) {
    Place &p = places[v];
    p.ptr = offsetPtr(arena, offset);
    p.arena = offset;
  }
  /// `to` lives where `from` does. (Copied first: inserting `to` may
  /// rehash `places` under a reference to `from`.)
  void alias(Value to, Value from) {
    Place p = places[from];
    places[to] = p;
  }
  Value scalarOf(Value v) {
    Place &p = places[v];
    if (!p.scalar) {
      Type t = tensorType(v).getElementType().isF32() ? Type(f32) : Type(i32);
      return b.create<LLVM::LoadOp>(loc, t, p.ptr);
    }
    return p.scalar;
  }

  // --- functions ----------------------------------------------------------
  /// Starts `<m>_<name>` with one pointer per argument of `fn`, padded
  /// with unused pointers to `args`, then `extra` pointers.
  LLVM::LLVMFuncOp begin(StringRef name, func::FuncOp fn, int extra,
                         unsigned args = 0);
  void finish();
  /// Starts `<m>_<fn>` and lowers every op of the planned `fn`; returns
  /// its return op (the caller stores the results).
  FailureOr<func::ReturnOp> lowerPlannedBody(func::FuncOp fn,
                                             unsigned args = 0);
  LogicalResult lowerPlanned(func::FuncOp fn, bool isGrad);
  /// @train_step, @accumulate or @apply: calls of @grad, the schedule,
  /// clipping and AdamW in place, assignments; scalar results stored to
  /// the extra last argument.
  LogicalResult lowerStep(func::FuncOp fn, LLVM::LLVMFuncOp gradFn);
  /// An inference function: its one tensor result is copied to the extra
  /// last argument.
  LogicalResult lowerInference(func::FuncOp fn);
  /// Lowers one op of a planned function: its kernel calls, or its driver
  /// work.
  LogicalResult lowerOp(Operation *op);
  /// Scalars, weights slots, cache rows, assignments: ops without kernels.
  LogicalResult lowerDriverOp(Operation *op);

  // --- kernel calls --------------------------------------------------------
  // An op's calls come from its rule (codegen/artifact/KernelPlan.h); each
  // tensor argument becomes what `target` passes (on the host, a
  // halide_buffer_t), scalars and constants LLVM values.

  /// Slot of the driver's own tensors (Driver arguments); the tensors of a
  /// call take the slots before it.
  static constexpr int kDriverSlot = KernelTarget::kMaxTensors - 1;
  /// The value of argument `a` of a call of `op`; buffers take descriptor
  /// slots from `slot` on, Driver arguments the next of `driver`.
  Value argument(Operation *op, const KernelArg &a, int &slot,
                 ArrayRef<Value> driver, size_t &used);
  /// Emits call `c` of `op`, its Driver arguments from `driver`.
  void emit(Operation *op, const KernelCall &c, ArrayRef<Value> driver = {});
  /// Every call of an op whose results the driver has already placed (in
  /// place, in weights slots).
  LogicalResult emitInPlace(Operation *op);
  /// Fails, naming the op, unless a lowering that picks its own way
  /// through `calls` (clipping) emitted all of them (`done`): the plan
  /// generated what the driver calls, no more and no less.
  LogicalResult allCalled(Operation *op, ArrayRef<KernelCall> calls,
                          size_t done);
  LogicalResult unsupported(Operation *op, const Twine &why) {
    return op->emitOpError("cannot be compiled by the native path: ") << why;
  }

  ModuleOp module;
  ir::ModelOp model;
  const KernelPlan &plan;
  MLIRContext *ctx;
  OpBuilder b;
  Location loc = UnknownLoc::get(ctx);
  std::string prefix;
  KernelTarget *target;
  Type ptrTy, i8, i32, i64, f32, f64;
  std::map<std::string, int64_t> slots; // param/state -> weights offset

  // The function being lowered.
  LLVM::LLVMFuncOp current;
  Value weights, arena;
  Block *exit = nullptr;
  llvm::DenseMap<Value, Place> places;
  DriverLayout layout;
};

void Lowering::call(const KernelSpec &spec, ArrayRef<Value> args) {
  auto it = plan.index.find(spec.key());
  assert(it != plan.index.end() && "the kernel plan covers every op");
  returnOnError(target->call(b, loc, it->second, spec, args));
}

void Lowering::returnOnError(Value rc) {
  Value bad = b.create<LLVM::ICmpOp>(loc, LLVM::ICmpPredicate::ne, rc,
                                     constI32(0));
  Block *next = b.createBlock(&current.getBody());
  b.setInsertionPointToEnd(next->getPrevNode());
  b.create<LLVM::CondBrOp>(loc, bad, exit, ValueRange{rc}, next, ValueRange{});
  b.setInsertionPointToStart(next);
}

LLVM::LLVMFuncOp Lowering::begin(StringRef name, func::FuncOp fn, int extra,
                                 unsigned args) {
  b.setInsertionPointToEnd(module.getBody());
  SmallVector<Type> params(2 + std::max(fn.getNumArguments(), args) + extra,
                           ptrTy);
  current = b.create<LLVM::LLVMFuncOp>(
      loc, prefix + "_" + name.str(), LLVM::LLVMFunctionType::get(i32, params));
  Block *entry = current.addEntryBlock(b);
  exit = new Block();
  exit->addArgument(i32, loc);
  b.setInsertionPointToStart(exit);
  b.create<LLVM::ReturnOp>(loc, exit->getArgument(0));
  b.setInsertionPointToStart(entry);
  weights = entry->getArgument(0);
  arena = entry->getArgument(1);
  places.clear();
  for (auto [i, a] : llvm::enumerate(fn.getArguments()))
    places[a].ptr = entry->getArgument(2 + i);
  target->beginFunction(b, loc);
  return current;
}

void Lowering::finish() {
  b.create<LLVM::BrOp>(loc, ValueRange{constI32(0)}, exit);
  current.getBody().push_back(exit);
}

Value Lowering::argument(Operation *op, const KernelArg &a, int &slot,
                         ArrayRef<Value> driver, size_t &used) {
  switch (a.kind) {
  case KernelArg::Kind::Operand:
    assert(slot < kDriverSlot && "a kernel takes at most 7 tensors");
    return buffer(ptrOf(a.value), tensorType(a.value), a.rank, slot++);
  case KernelArg::Kind::Result: {
    assert(slot < kDriverSlot && "a kernel takes at most 7 tensors");
    Value r = op->getResult(a.index);
    return buffer(places[r].ptr, tensorType(r), a.rank, slot++);
  }
  case KernelArg::Kind::Scalar:
    return scalarOf(a.value);
  case KernelArg::Kind::F32:
    return constF32(a.number);
  case KernelArg::Kind::I32:
    return constI32(static_cast<int64_t>(a.number));
  case KernelArg::Kind::Ones:
    return target->ones(b, loc, a.count, slot++);
  case KernelArg::Kind::Driver:
    assert(used < driver.size() && "the op's rule promised a driver value");
    return driver[used++];
  }
  llvm_unreachable("every argument kind is lowered");
}

void Lowering::emit(Operation *op, const KernelCall &c,
                    ArrayRef<Value> driver) {
  SmallVector<Value> args;
  int slot = 0;
  size_t used = 0;
  // A result written in place over an operand (AdamW, clipping, an
  // accumulated sum) passes the operand's tensor argument again.
  struct Passed {
    Value ptr;
    Type type;
    int rank;
    Value arg;
  };
  SmallVector<Passed> tensors;
  for (const KernelArg &a : c.args) {
    bool isTensor = a.kind == KernelArg::Kind::Operand ||
                    a.kind == KernelArg::Kind::Result;
    if (!isTensor) {
      args.push_back(argument(op, a, slot, driver, used));
      continue;
    }
    Value v =
        a.kind == KernelArg::Kind::Result ? op->getResult(a.index) : a.value;
    Value ptr = places.lookup(v).ptr;
    auto same = llvm::find_if(tensors, [&](const Passed &t) {
      return ptr && t.ptr == ptr && t.type == v.getType() && t.rank == a.rank;
    });
    args.push_back(same != tensors.end()
                       ? same->arg
                       : argument(op, a, slot, driver, used));
    if (same == tensors.end())
      tensors.push_back({ptr, v.getType(), a.rank, args.back()});
  }
  call(c.spec, args);
}

LogicalResult Lowering::emitInPlace(Operation *op) {
  std::string why;
  std::vector<KernelCall> calls = kernelCallsFor(op, why);
  if (!why.empty())
    return unsupported(op, why);
  for (const KernelCall &c : calls)
    emit(op, c);
  return success();
}

LogicalResult Lowering::allCalled(Operation *op, ArrayRef<KernelCall> calls,
                                  size_t done) {
  if (done == calls.size())
    return success();
  return op->emitOpError("internal error: the driver called ")
         << done << " of the " << calls.size()
         << " kernels its rule in KernelPlan lists";
}

LogicalResult Lowering::lowerOp(Operation *op) {
  loc = op->getLoc();
  std::string why;
  std::vector<KernelCall> calls = kernelCallsFor(op, why);
  if (!why.empty())
    return unsupported(op, why);
  if (calls.empty())
    return lowerDriverOp(op);
  // Kernel work: every result at its planned arena offset, then the calls
  // of the op's rule (codegen/artifact/KernelPlan.h), in order.
  auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
  if (!offsets || offsets.size() != op->getNumResults())
    return unsupported(op, "it has no planned arena offsets (run "
                           "stlm-plan-memory first)");
  if (op->hasAttr("stlm.snapshot"))
    return unsupported(op, "write-after-read snapshots are not lowered yet");
  for (unsigned i = 0; i < op->getNumResults(); ++i)
    if (offsets[i] >= 0)
      placeInArena(op->getResult(i), offsets[i]);
  for (const KernelCall &c : calls) {
    for (const KernelArg &a : c.args)
      if (a.kind == KernelArg::Kind::Driver)
        return unsupported(op, "its kernels need the driver's own values "
                               "(only in a training step)");
    emit(op, c);
  }
  return success();
}

LogicalResult Lowering::lowerDriverOp(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ir::ParamRefOp, ir::StateRefOp>([&](auto o) -> LogicalResult {
        std::string name = o.getName().str();
        auto it = slots.find(name);
        if (it == slots.end())
          return unsupported(op, "'@" + name + "' has no weights slot");
        Place &p = places[o.getResult()];
        p.ptr = offsetPtr(weights, it->second);
        p.symbol = name;
        return success();
      })
      .Case([&](arith::ConstantOp o) -> LogicalResult {
        auto t = tensorType(o.getResult());
        auto attr = llvm::dyn_cast<DenseElementsAttr>(o.getValue());
        if (!t || !attr || !attr.isSplat())
          return unsupported(op, "only splat tensor constants are lowered");
        if (t.getRank() == 0) {
          places[o.getResult()].scalar =
              t.getElementType().isF32()
                  ? constF32(attr.getSplatValue<APFloat>().convertToDouble())
                  : constI32(attr.getSplatValue<APInt>().getSExtValue());
          return success();
        }
        bool zero = t.getElementType().isF32()
                        ? attr.getSplatValue<APFloat>().isZero()
                        : attr.getSplatValue<APInt>().isZero();
        // A factor of tensor products (the 1/k of gradient accumulation)
        // is never materialised: the product's rule reads the splat.
        bool factorOnly = !o->use_empty() &&
                          llvm::all_of(o->getUsers(), [](Operation *u) {
                            return isa<arith::MulFOp>(u);
                          });
        if (factorOnly && t.getElementType().isF32())
          return success();
        auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("stlm.offsets");
        if (!zero || !offsets || offsets.size() != 1 || offsets[0] < 0)
          return unsupported(op, "only zero tensors with an arena slot are "
                                 "lowered");
        placeInArena(o.getResult(), offsets[0]);
        b.create<LLVM::MemsetOp>(
            loc, places[o.getResult()].ptr,
            b.create<LLVM::ConstantOp>(loc, i8, b.getI8IntegerAttr(0)),
            constI64(t.getNumElements() *
                     (t.getElementType().getIntOrFloatBitWidth() / 8)),
            false);
        return success();
      })
      .Case([&](arith::MulFOp o) -> LogicalResult {
        // Scalars (tensor products are kernel work).
        places[o.getResult()].scalar = b.create<LLVM::FMulOp>(
            loc, scalarOf(o.getLhs()), scalarOf(o.getRhs()));
        return success();
      })
      .Case([&](arith::AddIOp o) -> LogicalResult {
        if (tensorType(o.getResult()).getRank() != 0)
          return unsupported(op, "tensor sums are not lowered");
        places[o.getResult()].scalar = b.create<LLVM::AddOp>(
            loc, scalarOf(o.getLhs()), scalarOf(o.getRhs()));
        return success();
      })
      .Case([&](ir::WeightedSumOp o) -> LogicalResult {
        Value sum = constF32(0);
        for (auto [t, w] : llvm::zip(o.getTerms(), o.getWeights()))
          sum = b.create<LLVM::FAddOp>(
              loc, sum,
              b.create<LLVM::FMulOp>(
                  loc,
                  constF32(llvm::cast<FloatAttr>(w).getValueAsDouble()),
                  scalarOf(t)));
        places[o.getLoss()].scalar = sum;
        return success();
      })
      .Case([&](ir::WriteRowsOp o) -> LogicalResult {
        // In place in the cache's weights slot: the result is assigned
        // back to the same state right after.
        const Place cache = places[o.getCache()];
        if (cache.symbol.empty())
          return unsupported(op, "the cache must be a stlm.state read");
        auto ct = tensorType(o.getCache());
        int64_t r = ct.getRank(), S = ct.getDimSize(r - 2),
                W = ct.getDimSize(r - 1),
                N = tensorType(o.getRows()).getDimSize(r - 2);
        int64_t lead = ct.getNumElements() / (S * W);
        Value pos = scalarOf(o.getOffset());
        Value bad = b.create<LLVM::OrOp>(
            loc,
            b.create<LLVM::ICmpOp>(loc, LLVM::ICmpPredicate::slt, pos,
                                   constI32(0)),
            b.create<LLVM::ICmpOp>(loc, LLVM::ICmpPredicate::sgt, pos,
                                   constI32(S - N)));
        returnOnError(b.create<LLVM::SelectOp>(
            loc, bad, constI32(format::kPositionOutOfRange), constI32(0)));
        Value first = b.create<LLVM::MulOp>(
            loc, b.create<LLVM::SExtOp>(loc, i64, pos), constI64(W * 4));
        Value rows = ptrOf(o.getRows());
        for (int64_t l = 0; l < lead; ++l) {
          Value dst = b.create<LLVM::GEPOp>(
              loc, ptrTy, i8, offsetPtr(cache.ptr, l * S * W * 4),
              ArrayRef<LLVM::GEPArg>{first});
          b.create<LLVM::MemcpyOp>(loc, dst, offsetPtr(rows, l * N * W * 4),
                                   constI64(N * W * 4), false);
        }
        places[o.getResult()] = cache;
        return success();
      })
      .Case([&](ir::AssignOp o) -> LogicalResult {
        std::string name = o.getName().str();
        const Place &src = places[o.getValue()];
        if (src.symbol == name)
          return success(); // updated in place
        auto it = slots.find(name);
        if (it == slots.end())
          return unsupported(op, "'@" + name + "' has no weights slot");
        Value dst = offsetPtr(weights, it->second);
        auto t = tensorType(o.getValue());
        if (src.scalar) {
          b.create<LLVM::StoreOp>(loc, src.scalar, dst);
          return success();
        }
        b.create<LLVM::MemcpyOp>(
            loc, dst, src.ptr,
            constI64(t.getNumElements() *
                     (t.getElementType().getIntOrFloatBitWidth() / 8)),
            false);
        return success();
      })
      .Case<ir::SplitSlotsOp, ir::MergeSlotsOp>([&](Operation *) {
        // Row-major reshapes: a view of the operand's bytes
        // (stlm-plan-memory keeps them alive for the view's uses).
        alias(op->getResult(0), op->getOperand(0));
        return success();
      })
      .Case([&](func::ReturnOp) { return success(); })
      .Default([&](Operation *) {
        return unsupported(op, "the driver has no rule for it");
      });
}

FailureOr<func::ReturnOp> Lowering::lowerPlannedBody(func::FuncOp fn,
                                                     unsigned args) {
  auto arenaSize = fn->getAttrOfType<IntegerAttr>("stlm.arena_size");
  if (!arenaSize)
    return fn.emitOpError("has no memory plan (run stlm-plan-memory first)");
  layout.arenaSize = std::max(layout.arenaSize, arenaSize.getInt());
  begin(fn.getSymName(), fn, 1, args);
  for (Operation &op : fn.getBody().front())
    if (failed(lowerOp(&op)))
      return failure();
  auto ret = cast<func::ReturnOp>(fn.getBody().front().getTerminator());
  loc = ret.getLoc();
  return ret;
}

LogicalResult Lowering::lowerPlanned(func::FuncOp fn, bool isGrad) {
  FailureOr<func::ReturnOp> ret = lowerPlannedBody(fn, kBatchArgs);
  if (failed(ret))
    return failure();
  Value lossOut = current.getArgument(current.getNumArguments() - 1);
  b.create<LLVM::StoreOp>(loc, scalarOf(ret->getOperand(0)), lossOut);
  // @eval: then each objective's own loss (stlm-autodiff).
  for (unsigned i = 1; !isGrad && i < ret->getNumOperands(); ++i)
    b.create<LLVM::StoreOp>(loc, scalarOf(ret->getOperand(i)),
                            offsetPtr(lossOut, 4 * static_cast<int64_t>(i)));
  if (isGrad) {
    auto names = fn->getAttrOfType<ArrayAttr>("stlm.grad_params");
    for (auto [i, v] : llvm::enumerate(ret->getOperands().drop_front())) {
      const Place &p = places[v];
      if (p.arena < 0)
        return fn.emitOpError("gradient ") << i << " is not in the arena";
      layout.gradParams.push_back(
          llvm::cast<FlatSymbolRefAttr>(names[i]).getValue().str());
      layout.gradOffsets.push_back(p.arena);
    }
  }
  finish();
  return success();
}

LogicalResult Lowering::lowerStep(func::FuncOp fn, LLVM::LLVMFuncOp gradFn) {
  if (auto arenaSize = fn->getAttrOfType<IntegerAttr>("stlm.arena_size"))
    layout.arenaSize = std::max(layout.arenaSize, arenaSize.getInt());
  begin(fn.getSymName(), fn, 1,
        fn.getSymName() == "apply" ? 0 : kBatchArgs);
  Value resultsOut = current.getArgument(current.getNumArguments() - 1);
  for (Operation &op : fn.getBody().front()) {
    loc = op.getLoc();
    LogicalResult ok =
        llvm::TypeSwitch<Operation *, LogicalResult>(&op)
            .Case([&](func::CallOp c) -> LogicalResult {
              if (c.getCallee() != "grad")
                return unsupported(&op, "only a call of @grad is lowered");
              Value loss =
                  b.create<LLVM::AllocaOp>(loc, ptrTy, f32, constI64(1), 4);
              SmallVector<Value> args = {weights, arena};
              for (Value a : c.getOperands())
                args.push_back(ptrOf(a));
              while (args.size() + 1 < gradFn.getNumArguments())
                args.push_back(b.create<LLVM::ZeroOp>(loc, ptrTy));
              args.push_back(loss);
              returnOnError(
                  b.create<LLVM::CallOp>(loc, gradFn, args).getResult());
              places[c.getResult(0)].scalar =
                  b.create<LLVM::LoadOp>(loc, f32, loss);
              for (auto [i, off] : llvm::enumerate(layout.gradOffsets))
                placeInArena(c.getResult(i + 1), off);
              return success();
            })
            .Case([&](ir::AddOp o) -> LogicalResult {
              // @accumulate: grad_acc.p += grad, in the state's slot (the
              // sum is only assigned back to the state it was read from).
              if (op.hasAttr("stlm.offsets"))
                return lowerOp(&op);
              const Place acc = places[o.getLhs()];
              auto assign = o->hasOneUse()
                                ? dyn_cast<ir::AssignOp>(*o->user_begin())
                                : ir::AssignOp();
              if (acc.symbol.empty() || !assign ||
                  assign.getName() != acc.symbol)
                return unsupported(&op, "outside planned functions only "
                                        "accumulation into a state is "
                                        "lowered");
              places[o.getResult()] = acc;
              return emitInPlace(&op);
            })
            .Case([&](ir::LRScheduleOp o) -> LogicalResult {
              // The math of LRScheduleOp::valueAt, in double.
              Value step = b.create<LLVM::SIToFPOp>(loc, f64,
                                                    scalarOf(o.getStep()));
              double lr = o.getLr().convertToDouble(),
                     minLr = o.getMinLr().convertToDouble();
              int64_t w = o.getWarmup(), n = o.getTotal();
              Value warm = b.create<LLVM::FDivOp>(
                  loc,
                  b.create<LLVM::FMulOp>(
                      loc, constF64(lr),
                      b.create<LLVM::FAddOp>(loc, step, constF64(1))),
                  constF64(std::max<int64_t>(w, 1)));
              Value after = constF64(lr);
              if (o.getKind() == ir::ScheduleKind::cosine) {
                Value frac = b.create<LLVM::FDivOp>(
                    loc, b.create<LLVM::FSubOp>(loc, step, constF64(w)),
                    constF64(std::max<int64_t>(1, n - w)));
                frac = b.create<LLVM::MinNumOp>(loc, frac, constF64(1));
                Value c = b.create<LLVM::CosOp>(
                    loc, b.create<LLVM::FMulOp>(loc, constF64(M_PI), frac));
                after = b.create<LLVM::FAddOp>(
                    loc, constF64(minLr),
                    b.create<LLVM::FMulOp>(
                        loc, constF64(0.5 * (lr - minLr)),
                        b.create<LLVM::FAddOp>(loc, constF64(1), c)));
              }
              Value inWarmup = b.create<LLVM::FCmpOp>(
                  loc, LLVM::FCmpPredicate::olt, step, constF64(w));
              Value v = b.create<LLVM::SelectOp>(loc, inWarmup, warm, after);
              places[o.getResult()].scalar =
                  b.create<LLVM::FPTruncOp>(loc, f32, v);
              return success();
            })
            .Case([&](ir::ClipGradNormOp o) -> LogicalResult {
              std::string why;
              std::vector<KernelCall> calls = kernelCallsFor(&op, why);
              size_t n = o.getGrads().size(), next = 0;
              auto scalarF64 = RankedTensorType::get({}, f64);
              Value slot =
                  b.create<LLVM::AllocaOp>(loc, ptrTy, f64, constI64(1), 64);
              // Every sum of squares, into `slot`, added up in double.
              Value sq = constF64(0);
              for (; next < n; ++next) {
                emit(&op, calls[next],
                     {buffer(slot, scalarF64, 0, kDriverSlot)});
                sq = b.create<LLVM::FAddOp>(
                    loc, sq, b.create<LLVM::LoadOp>(loc, f64, slot));
              }
              Value norm = b.create<LLVM::SqrtOp>(loc, sq);
              double maxNorm = o.getMaxNorm().convertToDouble();
              for (auto [g, c] : llvm::zip(o.getGrads(), o.getClipped()))
                alias(c, g);
              places[o.getNorm()].scalar =
                  b.create<LLVM::FPTruncOp>(loc, f32, norm);
              if (maxNorm > 0) {
                Value scale = b.create<LLVM::MinNumOp>(
                    loc, constF64(1),
                    b.create<LLVM::FDivOp>(
                        loc, constF64(maxNorm),
                        b.create<LLVM::FAddOp>(loc, norm, constF64(1e-6))));
                Value factor = b.create<LLVM::FPTruncOp>(loc, f32, scale);
                // In place: the gradients are dead after clipping.
                for (; next < calls.size(); ++next)
                  emit(&op, calls[next], {factor});
              }
              return allCalled(&op, calls, next);
            })
            .Case([&](ir::AdamWOp o) -> LogicalResult {
              // In place on the parameter and its moments, which must be
              // weights slots assigned right after.
              for (Value v : {o.getParam(), o.getM(), o.getV()})
                if (places[v].symbol.empty())
                  return unsupported(&op, "AdamW operands must be parameter "
                                          "or state slots");
              alias(o.getNewParam(), o.getParam());
              alias(o.getNewM(), o.getM());
              alias(o.getNewV(), o.getV());
              return emitInPlace(&op);
            })
            .Case([&](func::ReturnOp r) -> LogicalResult {
              for (auto [i, v] : llvm::enumerate(r.getOperands()))
                b.create<LLVM::StoreOp>(
                    loc, scalarOf(v),
                    offsetPtr(resultsOut, static_cast<int64_t>(4 * i)));
              return success();
            })
            .Default([&](Operation *other) { return lowerOp(other); });
    if (failed(ok))
      return failure();
  }
  finish();
  return success();
}

LogicalResult Lowering::lowerInference(func::FuncOp fn) {
  FailureOr<func::ReturnOp> ret = lowerPlannedBody(fn);
  if (failed(ret))
    return failure();
  if (ret->getNumOperands() != 1)
    return fn.emitOpError("must return one tensor to be compiled");
  Value result = ret->getOperand(0);
  Value resultOut = current.getArgument(current.getNumArguments() - 1);
  b.create<LLVM::MemcpyOp>(
      loc, resultOut, ptrOf(result),
      constI64(tensorType(result).getNumElements() * 4), false);
  finish();
  layout.inference.push_back(fn.getSymName().str());
  if (fn.getSymName() == "decode_batch")
    layout.decodeBatch = tensorType(fn.getArgument(0)).getDimSize(0);
  return success();
}

FailureOr<DriverLayout> Lowering::run() {
  auto weightsSize = model->getAttrOfType<IntegerAttr>("stlm.weights_size");
  if (!weightsSize)
    return model.emitOpError("has no weights layout (run stlm-plan-memory "
                             "first)");
  layout.weightsSize = weightsSize.getInt();
  func::FuncOp grad, eval;
  SmallVector<func::FuncOp> steps, inference;
  for (func::FuncOp f : compiledFunctions(model)) {
    StringRef name = f.getSymName();
    if (name == "grad")
      grad = f;
    else if (name == "eval")
      eval = f;
    else if (name == "train_step" || name == "accumulate" || name == "apply")
      steps.push_back(f);
    else
      inference.push_back(f);
  }
  bool oneStep = steps.size() == 1 && steps[0].getSymName() == "train_step";
  bool accumulation = steps.size() == 2 &&
                      steps[0].getSymName() == "accumulate" &&
                      steps[1].getSymName() == "apply";
  // A quantized model (stlm-quantize) infers only: @eval and the
  // inference functions, no training.
  bool inferenceOnly = model->hasAttr("stlm.quantization");
  if (inferenceOnly ? (grad || !steps.empty() || !eval)
                    : (!grad || !eval || !(oneStep || accumulation)))
    return model.emitOpError(
        inferenceOnly ? "is quantized and must have @eval and no training "
                        "functions (stlm-quantize removes them)"
                      : "needs @grad, @eval and @train_step (or "
                        "@accumulate and @apply): run stlm-autodiff first");
  layout.training = !inferenceOnly;
  if (grad) {
    if (failed(lowerPlanned(grad, /*isGrad=*/true)))
      return failure();
    LLVM::LLVMFuncOp gradFn = current;
    for (func::FuncOp f : steps)
      if (failed(lowerStep(f, gradFn)))
        return failure();
  }
  if (failed(lowerPlanned(eval, /*isGrad=*/false)))
    return failure();
  for (func::FuncOp f : inference)
    if (failed(lowerInference(f)))
      return failure();
  return layout;
}

} // namespace

FailureOr<DriverLayout> lowerToLLVM(ModuleOp module, ir::ModelOp model,
                                    const KernelPlan &plan,
                                    KernelTarget *target) {
  module.getContext()->loadDialect<LLVM::LLVMDialect>();
  if (!plan.unsupported.empty())
    return model.emitError(plan.explainUnsupported(model.getSymName().str()));
  std::unique_ptr<KernelTarget> host;
  if (!target) {
    host = createHostTarget(module, symbolPrefix(model));
    target = host.get();
  }
  Lowering lowering(module, model, plan, *target);
  return lowering.run();
}

namespace {
struct LowerToLLVMPass
    : public PassWrapper<LowerToLLVMPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(LowerToLLVMPass)
  StringRef getArgument() const final { return "stlm-lower-to-llvm"; }
  StringRef getDescription() const final {
    return "Lower planned stlm models to LLVM-dialect driver functions that "
           "call the model's Halide kernels";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<LLVM::LLVMDialect>();
  }
  void runOnOperation() override {
    SmallVector<ir::ModelOp> models;
    getOperation().walk([&](ir::ModelOp m) { models.push_back(m); });
    for (ir::ModelOp m : models) {
      KernelPlan plan = planKernels(m);
      if (failed(lowerToLLVM(getOperation(), m, plan)))
        return signalPassFailure();
      m.erase();
    }
  }
};
} // namespace

std::unique_ptr<Pass> createLowerToLLVMPass() {
  return std::make_unique<LowerToLLVMPass>();
}
void registerLowerToLLVMPass() { PassRegistration<LowerToLLVMPass>(); }

} // namespace stlm::codegen
