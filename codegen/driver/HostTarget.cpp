//===- HostTarget.cpp - Halide kernels on the CPU, a host object ----------===//
//
// Every tensor argument is a halide_buffer_t built on the stack of the
// driver function (one descriptor slot per tensor of a call, reused by the
// next call), pointing at host memory, with a constant table of
// halide_dimension_t; a kernel is called directly and returns its Halide
// status.
//
//===----------------------------------------------------------------------===//

#include "codegen/driver/KernelTarget.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"

#include <map>

using namespace mlir;

namespace stlm::codegen {
namespace {

/// halide_type_code_t
enum TypeCode : int { kInt = 0, kUInt = 1, kFloat = 2 };

class HostTarget : public KernelTarget {
public:
  HostTarget(ModuleOp module, std::string prefix)
      : module(module), prefix(std::move(prefix)) {
    MLIRContext *ctx = module.getContext();
    ctx->loadDialect<LLVM::LLVMDialect>();
    Builder b(ctx);
    ptrTy = LLVM::LLVMPointerType::get(ctx);
    i8 = b.getI8Type(), i16 = b.getI16Type(), i32 = b.getI32Type(),
    i64 = b.getI64Type();
    // struct halide_buffer_t (64-bit): device, device_interface, host,
    // flags, type {code, bits, lanes}, dimensions, dim, padding.
    bufTy = LLVM::LLVMStructType::getLiteral(
        ctx, {i64, ptrTy, ptrTy, i64, i8, i8, i16, i32, ptrTy, ptrTy});
  }

  StringRef name() const override { return "host"; }

  void beginFunction(OpBuilder &b, Location loc) override {
    // Descriptor slots for the most tensors one kernel takes.
    buffers = b.create<LLVM::AllocaOp>(
        loc, ptrTy, bufTy,
        b.create<LLVM::ConstantOp>(loc, i64,
                                   b.getI64IntegerAttr(kMaxTensors)),
        16);
  }

  Value tensor(OpBuilder &b, Location loc, Value ptr, RankedTensorType t,
               int rank, int slot) override {
    assert(slot >= 0 && slot < kMaxTensors && "a descriptor slot");
    Type et = t.getElementType();
    // i8 is signed (int8 weights); ui8 and i1 masks are unsigned bytes.
    int code = et.isF32() || et.isF64() ? kFloat
               : et.isUnsignedInteger() ? kUInt
                                        : kInt;
    int bits = et.getIntOrFloatBitWidth();
    if (et.isInteger(1)) // masks: one byte (0 or 1) per element
      code = kUInt, bits = 8;
    auto constant = [&](Type type, int64_t v) -> Value {
      return b.create<LLVM::ConstantOp>(loc, type, b.getIntegerAttr(type, v));
    };
    Value v = b.create<LLVM::UndefOp>(loc, bufTy);
    Value null = b.create<LLVM::ZeroOp>(loc, ptrTy);
    auto set = [&](int64_t field, Value x) {
      v = b.create<LLVM::InsertValueOp>(loc, v, x, field);
    };
    set(0, constant(i64, 0));
    set(1, null);
    set(2, ptr);
    set(3, constant(i64, 0));
    set(4, constant(i8, code));
    set(5, constant(i8, bits));
    set(6, constant(i16, 1));
    set(7, constant(i32, rank));
    set(8, rank == 0 ? null : dims(b, loc, t.getShape(), rank));
    set(9, null);
    Value p = b.create<LLVM::GEPOp>(loc, ptrTy, bufTy, buffers,
                                    ArrayRef<LLVM::GEPArg>{slot});
    b.create<LLVM::StoreOp>(loc, v, p);
    return p;
  }

  Value ones(OpBuilder &b, Location loc, int64_t n, int slot) override {
    std::string key = "__" + prefix + "_ones_" + std::to_string(n);
    LLVM::GlobalOp &g = globals[key];
    if (!g) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(module.getBody());
      g = b.create<LLVM::GlobalOp>(
          loc, LLVM::LLVMArrayType::get(i8, n), true, LLVM::Linkage::Private,
          key,
          DenseElementsAttr::get(RankedTensorType::get({n}, i8),
                                 b.getI8IntegerAttr(1)),
          64);
    }
    return tensor(
        b, loc, b.create<LLVM::AddressOfOp>(loc, g),
        RankedTensorType::get({n}, b.getIntegerType(8, /*isSigned=*/false)), 1,
        slot);
  }

  Value call(OpBuilder &b, Location loc, size_t index, const KernelSpec &,
             ValueRange args) override {
    return b.create<LLVM::CallOp>(loc, kernel(b, loc, index, args), args)
        .getResult();
  }

private:
  /// The kernel function `<m>_k<index>`, declared on first use with the
  /// argument types of `args` (all calls of one kernel agree).
  LLVM::LLVMFuncOp kernel(OpBuilder &b, Location loc, size_t index,
                          ValueRange args) {
    std::string name = prefix + "_k" + std::to_string(index);
    auto found = kernels.find(name);
    if (found != kernels.end())
      return found->second;
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    SmallVector<Type> types;
    for (Value a : args)
      types.push_back(a.getType());
    auto fn = b.create<LLVM::LLVMFuncOp>(
        loc, name, LLVM::LLVMFunctionType::get(i32, types));
    kernels[name] = fn;
    return fn;
  }

  /// A constant table of halide_dimension_t for a dense row-major tensor of
  /// `shape`, collapsed to `rank` dimensions (innermost first).
  Value dims(OpBuilder &b, Location loc, ArrayRef<int64_t> shape, int rank) {
    // Collapse the leading dimensions into the first of `rank` (pad with
    // unit dimensions when the tensor has fewer).
    SmallVector<int64_t> collapsed;
    size_t n = shape.size(), keep = std::min<size_t>(rank, n);
    if (keep > 0) {
      int64_t lead = 1;
      for (size_t i = 0; i <= n - keep; ++i)
        lead *= shape[i];
      collapsed.push_back(lead);
      for (size_t i = n - keep + 1; i < n; ++i)
        collapsed.push_back(shape[i]);
    }
    while (static_cast<int>(collapsed.size()) < rank)
      collapsed.insert(collapsed.begin(), 1);
    // halide_dimension_t {min, extent, stride, flags}, innermost first.
    SmallVector<int32_t> table;
    int64_t stride = 1;
    for (int64_t extent : llvm::reverse(collapsed)) {
      table.append({0, static_cast<int32_t>(extent),
                    static_cast<int32_t>(stride), 0});
      stride *= extent;
    }
    std::string key = "__" + prefix + "_dims";
    for (int32_t x : table)
      key += "_" + std::to_string(x);
    LLVM::GlobalOp &g = globals[key];
    if (!g) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(module.getBody());
      auto type = LLVM::LLVMArrayType::get(i32, table.size());
      g = b.create<LLVM::GlobalOp>(
          loc, type, /*isConstant=*/true, LLVM::Linkage::Private, key,
          DenseElementsAttr::get(
              RankedTensorType::get({static_cast<int64_t>(table.size())},
                                    i32),
              ArrayRef<int32_t>(table)),
          /*alignment=*/16);
    }
    return b.create<LLVM::AddressOfOp>(loc, g);
  }

  ModuleOp module;
  std::string prefix;
  Type ptrTy, i8, i16, i32, i64;
  LLVM::LLVMStructType bufTy;
  std::map<std::string, LLVM::LLVMFuncOp> kernels;
  std::map<std::string, LLVM::GlobalOp> globals;
  Value buffers; // the descriptor slots of the current function
};

} // namespace

std::unique_ptr<KernelTarget> createHostTarget(ModuleOp module,
                                               const std::string &prefix) {
  return std::make_unique<HostTarget>(module, prefix);
}

LogicalResult emitObjectFile(ModuleOp module, const std::string &path,
                             std::string &error) {
  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  module.getContext()->appendDialectRegistry(registry);
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> m =
      translateModuleToLLVMIR(module, llvmContext, "stlm_driver");
  if (!m) {
    error = "cannot translate the driver to LLVM IR";
    return failure();
  }
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  std::string triple = llvm::sys::getProcessTriple();
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return failure();
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), "", options, llvm::Reloc::PIC_));
  m->setTargetTriple(triple);
  m->setDataLayout(tm->createDataLayout());
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_None);
  if (ec) {
    error = "cannot write '" + path + "': " + ec.message();
    return failure();
  }
  llvm::legacy::PassManager pm;
  if (tm->addPassesToEmitFile(pm, out, nullptr,
                              llvm::CodeGenFileType::ObjectFile)) {
    error = "the host target cannot emit object files";
    return failure();
  }
  pm.run(*m);
  out.flush();
  return success();
}

} // namespace stlm::codegen
