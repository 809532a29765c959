//===- ArtifactWriter.cpp - kernels, driver and artifact of a model -------===//

#include "codegen/artifact/ArtifactWriter.h"

#include "codegen/artifact/KernelPlan.h"
#include "codegen/cuda/EmitCuda.h"
#include "codegen/driver/KernelTarget.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "stlm/artifact_format.h"
#include "support/Hash.h"
#include "support/QuantTiles.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

using namespace llvm;
namespace ir = mlir::stlm;
namespace key = stlm::format::key;

namespace stlm::codegen {
namespace {

/// Runs `exe args...`; Failed naming the command when it does not succeed.
Status runTool(const std::string &exe, const std::vector<std::string> &args) {
  std::vector<StringRef> argv = {exe};
  for (const std::string &a : args)
    argv.push_back(a);
  std::string message;
  int rc = sys::ExecuteAndWait(exe, argv, std::nullopt, {}, 0, 0, &message);
  if (rc == 0)
    return Status::ok();
  std::string error =
      sys::path::filename(exe).str() + " failed (" +
      (message.empty() ? "exit status " + std::to_string(rc) : message) +
      ") for:";
  for (const std::string &a : args)
    error += " " + a;
  return Status::failed(error);
}

/// `text` into `path`.
Status writeFile(const std::string &path, const std::string &text) {
  std::error_code ec;
  raw_fd_ostream out(path, ec);
  if (!ec) {
    out << text;
    out.close();
    if (!out.has_error())
      return Status::ok();
    ec = out.error();
    out.clear_error();
  }
  return Status::failed("cannot write '" + path + "': " + ec.message());
}

/// Generates every kernel of `plan` (kernel i is `<symbol>_k<i>`) and the
/// Halide runtime into `dir`, two stlm-kernelgen processes at a time;
/// returns the static libraries written and describes them in `j`. With
/// `profile`, Halide's sampling profiler is built in (its report, per
/// kernel, is printed when the program exits).
Status generateKernels(const KernelPlan &plan, const std::string &symbol,
                       const std::string &dir, const std::string &exe,
                       json::OStream &j, std::vector<std::string> &archives,
                       bool profile = false) {
  std::string features = profile ? "-profile" : "";
  std::vector<std::vector<std::string>> jobs = {
      {"-r", "stlm_halide_rt", "-o", dir, "-e", "static_library",
       "target=host" + features}};
  archives = {dir + "/stlm_halide_rt.a"};
  for (size_t i = 0; i < plan.kernels.size(); ++i) {
    const KernelSpec &k = plan.kernels[i];
    std::string fn = symbol + "_k" + std::to_string(i);
    std::vector<std::string> args = {"-g", k.generator, "-f", fn, "-o", dir,
                                     "-e", "static_library,h",
                                     "target=host-no_runtime" + features};
    for (const auto &[pn, pv] : k.params)
      args.push_back(pn + "=" + pv);
    jobs.push_back(args);
    archives.push_back(dir + "/" + fn + ".a");
  }
  // Two at a time: kernel generation is most of a compile.
  std::string error;
  for (size_t i = 0; i < jobs.size(); i += 2) {
    std::vector<std::pair<sys::ProcessInfo, size_t>> running;
    for (size_t k = i; k < std::min(jobs.size(), i + 2); ++k) {
      std::vector<StringRef> argv = {exe};
      for (const std::string &a : jobs[k])
        argv.push_back(a);
      std::string message;
      bool failed = false;
      sys::ProcessInfo pi = sys::ExecuteNoWait(exe, argv, std::nullopt, {}, 0,
                                               &message, &failed);
      if (failed) {
        error = "cannot run stlm-kernelgen: " + message;
        break;
      }
      running.push_back({pi, k});
    }
    // Every process started is waited for, even after a failure.
    for (auto &[pi, k] : running) {
      std::string message;
      sys::ProcessInfo done = sys::Wait(pi, std::nullopt, &message);
      if (done.ReturnCode != 0 && error.empty()) {
        error = "stlm-kernelgen failed (" +
                (message.empty() ? "exit status " +
                                       std::to_string(done.ReturnCode)
                                 : message) +
                ") for:";
        for (const std::string &a : jobs[k])
          error += " " + a;
      }
    }
    if (!error.empty())
      return Status::failed(error);
  }
  j.attributeArray(key::kKernels, [&] {
    for (size_t i = 0; i < plan.kernels.size(); ++i) {
      const KernelSpec &k = plan.kernels[i];
      j.object([&] {
        j.attribute("name", symbol + "_k" + std::to_string(i));
        j.attribute("generator", k.generator);
        j.attributeObject("params", [&] {
          for (const auto &[pn, pv] : k.params)
            j.attribute(pn, pv);
        });
        j.attribute("uses", plan.uses[i]);
      });
    }
  });
  return Status::ok();
}

/// The programs a writer runs.
struct Toolchain {
  std::string kernelgen; // stlm-kernelgen
  std::string ar, cc;    // binutils' ar and the system C compiler
};

/// Checks that `kernelgen` runs and, when `linker` is set, finds `ar` and
/// `cc` on PATH (the artifact needs them to pack and link lib`name`).
Status findToolchain(const std::string &kernelgen, bool linker,
                     const std::string &name, Toolchain &tools) {
  if (!sys::fs::can_execute(kernelgen))
    return Status::failed("cannot run stlm-kernelgen at '" + kernelgen +
                          "' (pass --kernelgen PATH)");
  tools.kernelgen = kernelgen;
  if (!linker)
    return Status::ok();
  auto ar = sys::findProgramByName("ar");
  if (!ar)
    return Status::failed("cannot find 'ar' (binutils) on PATH to pack " +
                          format::staticLibrary(name));
  auto cc = sys::findProgramByName("cc");
  if (!cc)
    return Status::failed("cannot find the system C compiler 'cc' on PATH "
                          "to link " + format::sharedLibrary(name));
  tools.ar = *ar;
  tools.cc = *cc;
  return Status::ok();
}

mlir::func::FuncOp function(ir::ModelOp model, StringRef name) {
  for (auto f : model.getBody().front().getOps<mlir::func::FuncOp>())
    if (f.getSymName() == name)
      return f;
  return {};
}

/// Runs `f`, collecting the diagnostics it emits on `module`'s context as
/// "loc: message" lines in `diagnostics`; returns what `f` returns.
template <typename F>
auto collectDiagnostics(mlir::ModuleOp module, std::string &diagnostics,
                        F f) {
    mlir::ScopedDiagnosticHandler handler(
        module.getContext(), [&](mlir::Diagnostic &d) {
          std::string where;
          raw_string_ostream os(where);
          os << d.getLocation();
          diagnostics += (diagnostics.empty() ? "" : "\n  ") + os.str() +
                         ": " + d.str();
          return mlir::success();
        });
  return f();
}

/// The function whose arguments are the batch: @grad, or @eval in a model
/// that infers only (stlm-quantize removed @grad); null without either.
mlir::func::FuncOp batchFunction(ir::ModelOp model) {
  mlir::func::FuncOp grad = function(model, "grad");
  return grad ? grad : function(model, "eval");
}

/// The batch the model takes: [batch, context] tokens and targets, and the
/// mask seed of a masked objective (returns whether it takes one). `input`
/// stays empty without a batch function.
bool batchInput(ir::ModelOp model, std::vector<int64_t> &input) {
  mlir::func::FuncOp batch = batchFunction(model);
  if (!batch)
    return false;
  for (int64_t d :
       cast<mlir::RankedTensorType>(batch.getArgumentTypes()[0]).getShape())
    input.push_back(d);
  return batch.getNumArguments() == 3;
}

/// A slot's manifest dtype: F32, I32, or a quantized weight's I8 / U8.
StringRef dtypeName(mlir::Type element) {
  if (element.isF32())
    return "F32";
  if (element.isUnsignedInteger(8))
    return "U8";
  if (element.isInteger(8))
    return "I8";
  return "I32";
}

/// The manifest's description of the model: layout of the weights blob and
/// the arena, inputs, entry points and the spec (read by the runtime).
void describeLayout(ir::ModelOp model, const ArtifactModel &info,
                    const DriverLayout &layout, StringRef target,
                    json::OStream &j) {
  j.attribute(key::kFormat, format::kFormatName);
  j.attribute(key::kVersion, format::kManifestVersion);
  j.attribute(key::kModel, info.name);
  j.attribute(key::kVocab, info.vocab);
  j.attribute(key::kAccumulate, std::max<int64_t>(1, info.accumulate));
  j.attribute(key::kSplitStep, info.splitStep);
  j.attribute(key::kBF16Compute, info.bf16Compute);
  if (!info.bf16Probe.empty()) {
    j.attributeBegin(key::kBF16Probe);
    j.rawValue(info.bf16Probe);
    j.attributeEnd();
  }
  if (mlir::func::FuncOp eval = function(model, "eval"))
    j.attribute(key::kObjectives,
                static_cast<int64_t>(eval.getNumResults()) - 1);
  if (info.chunks > 0)
    j.attributeArray(key::kChunks, [&] {
      j.value(info.chunks);
      j.value(info.chunkBytes);
    });
  if (info.chunkStarts)
    j.attribute(key::kChunkStarts, true);
  if (info.chunks > 0 && !info.chunkMode.empty())
    j.attributeObject(key::kChunking, [&] {
      j.attribute(key::kMode, info.chunkMode);
      if (info.chunkMode == "fixed")
        j.attribute(key::kStride, info.chunkStride);
    });
  j.attribute(key::kSymbol, symbolPrefix(model));
  j.attribute(key::kTarget, target);
  j.attribute(key::kWeightsSize, layout.weightsSize);
  j.attribute(key::kArenaSize, layout.arenaSize);
  if (auto q = model->getAttrOfType<mlir::DictionaryAttr>("stlm.quantization"))
    j.attributeObject(key::kQuantization, [&] {
      j.attribute(key::kScheme,
                  cast<mlir::StringAttr>(q.get("scheme")).getValue());
      j.attribute(key::kGroup,
                  cast<mlir::IntegerAttr>(q.get("group")).getInt());
    });
  if (layout.decodeBatch > 0)
    j.attribute(key::kDecodeBatch, layout.decodeBatch);
  j.attributeArray(key::kInputs, [&] {
    for (mlir::Type t : batchFunction(model).getArgumentTypes())
      j.array([&] {
        for (int64_t d : cast<mlir::RankedTensorType>(t).getShape())
          j.value(d);
      });
  });
  std::map<std::string, int64_t> gradOffset;
  for (size_t i = 0; i < layout.gradParams.size(); ++i)
    gradOffset[layout.gradParams[i]] = layout.gradOffsets[i];
  // The quantized weights kept in tiles, and their scales.
  std::set<std::string> tiled;
  if (auto q =
          model->getAttrOfType<mlir::DictionaryAttr>("stlm.quantization")) {
    StringRef scheme = cast<mlir::StringAttr>(q.get("scheme")).getValue();
    int64_t group = cast<mlir::IntegerAttr>(q.get("group")).getInt();
    for (mlir::Operation &op : model.getBody().front())
      if (auto p = dyn_cast<ir::ParamOp>(op)) {
        mlir::RankedTensorType t = p.getTensorType();
        if (t.getElementType().isF32() || t.getRank() != 2)
          continue;
        int64_t in = quant::weightInputs(scheme == "int4", t.getShape()[1]);
        if (tiledWeight(scheme, t.getShape()[0], in, group)) {
          tiled.insert(p.getSymName().str());
          tiled.insert(p.getSymName().str() + ".scale");
        }
      }
  }
  auto slot = [&](mlir::Operation &op, StringRef name,
                  mlir::RankedTensorType t) {
    j.object([&] {
      j.attribute(key::kName, name);
      j.attribute(key::kDType, dtypeName(t.getElementType()));
      j.attributeArray(key::kShape, [&] {
        for (int64_t d : t.getShape())
          j.value(d);
      });
      j.attribute(key::kOffset,
                  op.getAttrOfType<mlir::IntegerAttr>("stlm.offset").getInt());
      auto g = gradOffset.find(name.str());
      if (g != gradOffset.end())
        j.attribute(key::kGradOffset, g->second);
      if (tiled.count(name.str()))
        j.attribute(key::kLayout, quant::kTilesLayout);
    });
  };
  j.attributeArray(key::kParams, [&] {
    for (mlir::Operation &op : model.getBody().front())
      if (auto p = dyn_cast<ir::ParamOp>(op))
        slot(op, p.getSymName(), p.getTensorType());
  });
  // Optimizer state goes into checkpoints; the KV caches of generation
  // (stlm-add-decode's @kv.*) do not.
  auto states = [&](bool cache) {
    for (mlir::Operation &op : model.getBody().front())
      if (auto s = dyn_cast<ir::StateOp>(op))
        if (s.getSymName().starts_with("kv.") == cache)
          slot(op, s.getSymName(), cast<mlir::RankedTensorType>(s.getType()));
  };
  j.attributeArray(key::kState, [&] { states(false); });
  j.attributeArray(key::kCache, [&] { states(true); });
  j.attributeArray(key::kEntryPoints, [&] {
    for (const std::string &f : layout.inference)
      j.value(f);
  });
  j.attribute(key::kSpec, info.specJson);
}

/// Exports `<symbol>_artifact`, the stlm_artifact of stlm/stlm.h: ABI
/// version, manifest, the entry points and the Halide runtime's setters in
/// the order of stlm/artifact_format.h.
void addDescriptor(mlir::ModuleOp module, const std::string &symbol,
                   const std::string &manifest, int64_t embeddedSize) {
  mlir::MLIRContext *ctx = module.getContext();
  mlir::OpBuilder b(ctx);
  mlir::Location loc = mlir::UnknownLoc::get(ctx);
  b.setInsertionPointToEnd(module.getBody());
  auto ptr = mlir::LLVM::LLVMPointerType::get(ctx);
  auto i32 = b.getI32Type();
  std::string text = manifest;
  text.push_back('\0');
  auto strTy = mlir::LLVM::LLVMArrayType::get(b.getI8Type(), text.size());
  auto str = b.create<mlir::LLVM::GlobalOp>(
      loc, strTy, true, mlir::LLVM::Linkage::Private,
      "__" + symbol + "_manifest", b.getStringAttr(text), 1);
  // The Halide runtime's setters: void *(void *), int (int), ...
  SmallVector<mlir::LLVM::LLVMFuncOp> setters;
  for (const char *name : format::kRuntimeSetters) {
    bool threads = StringRef(name) == "halide_set_num_threads";
    mlir::Type arg = threads ? mlir::Type(i32) : mlir::Type(ptr);
    auto f = module.lookupSymbol<mlir::LLVM::LLVMFuncOp>(name);
    if (!f)
      f = b.create<mlir::LLVM::LLVMFuncOp>(
          loc, name, mlir::LLVM::LLVMFunctionType::get(arg, {arg}));
    setters.push_back(f);
  }
  // ..., then the stlm_device (null: a host artifact) and the embedded
  // checkpoint's bytes and size.
  auto i64 = b.getI64Type();
  SmallVector<mlir::Type> fields(
      4 + format::kNumEntryPoints + format::kNumRuntimeSetters, ptr);
  fields[0] = i32;
  fields.push_back(i64);
  fields.append(format::kNumBatchEntryPoints, ptr);
  mlir::LLVM::GlobalOp embedded;
  if (embeddedSize > 0)
    embedded = b.create<mlir::LLVM::GlobalOp>(
        loc, mlir::LLVM::LLVMArrayType::get(b.getI8Type(), embeddedSize),
        true, mlir::LLVM::Linkage::External,
        format::embeddedWeightsSymbol(symbol), mlir::Attribute(), 64);
  auto descTy = mlir::LLVM::LLVMStructType::getLiteral(ctx, fields);
  auto desc = b.create<mlir::LLVM::GlobalOp>(
      loc, descTy, true, mlir::LLVM::Linkage::External,
      format::descriptorSymbol(symbol), mlir::Attribute(), 8);
  mlir::Block *init = b.createBlock(&desc.getInitializerRegion());
  b.setInsertionPointToStart(init);
  mlir::Value v = b.create<mlir::LLVM::UndefOp>(loc, descTy);
  v = b.create<mlir::LLVM::InsertValueOp>(
      loc, v,
      b.create<mlir::LLVM::ConstantOp>(
          loc, i32, b.getI32IntegerAttr(format::kAbiVersion)),
      0);
  v = b.create<mlir::LLVM::InsertValueOp>(
      loc, v, b.create<mlir::LLVM::AddressOfOp>(loc, str), 1);
  int64_t field = 2;
  auto entry = [&](const char *fn) {
    auto f = module.lookupSymbol<mlir::LLVM::LLVMFuncOp>(symbol + "_" + fn);
    mlir::Value p =
        f ? mlir::Value(b.create<mlir::LLVM::AddressOfOp>(loc, f))
          : mlir::Value(b.create<mlir::LLVM::ZeroOp>(loc, ptr));
    v = b.create<mlir::LLVM::InsertValueOp>(loc, v, p, field++);
  };
  for (const char *fn : format::kEntryPoints)
    entry(fn);
  for (mlir::LLVM::LLVMFuncOp f : setters)
    v = b.create<mlir::LLVM::InsertValueOp>(
        loc, v, b.create<mlir::LLVM::AddressOfOp>(loc, f), field++);
  v = b.create<mlir::LLVM::InsertValueOp>(
      loc, v, b.create<mlir::LLVM::ZeroOp>(loc, ptr), field++);
  v = b.create<mlir::LLVM::InsertValueOp>(
      loc, v,
      embedded ? mlir::Value(b.create<mlir::LLVM::AddressOfOp>(loc, embedded))
               : mlir::Value(b.create<mlir::LLVM::ZeroOp>(loc, ptr)),
      field++);
  v = b.create<mlir::LLVM::InsertValueOp>(
      loc, v,
      b.create<mlir::LLVM::ConstantOp>(loc, i64,
                                       b.getI64IntegerAttr(embeddedSize)),
      field++);
  for (const char *fn : format::kBatchEntryPoints)
    entry(fn);
  b.create<mlir::LLVM::ReturnOp>(loc, v);
}

/// Halide's own error handler prints and aborts the process; an app that
/// calls the entry points directly (without stlm_open, which installs the
/// runtime's handler) must get their documented error code instead. A
/// constructor in the driver installs a handler that writes the message
/// and a newline to stderr (Halide's halide_print writes to stdout) and
/// returns, so the failing kernel's error code comes back through the entry
/// point.
void addErrorHandler(mlir::ModuleOp module, const std::string &symbol) {
  mlir::MLIRContext *ctx = module.getContext();
  mlir::OpBuilder b(ctx);
  mlir::Location loc = mlir::UnknownLoc::get(ctx);
  b.setInsertionPointToEnd(module.getBody());
  auto ptr = mlir::LLVM::LLVMPointerType::get(ctx);
  auto voidTy = mlir::LLVM::LLVMVoidType::get(ctx);
  auto declare = [&](StringRef name, mlir::Type result,
                     ArrayRef<mlir::Type> args) {
    auto f = module.lookupSymbol<mlir::LLVM::LLVMFuncOp>(name);
    if (!f)
      f = b.create<mlir::LLVM::LLVMFuncOp>(
          loc, name, mlir::LLVM::LLVMFunctionType::get(result, args));
    return f;
  };
  auto i32 = b.getI32Type();
  auto i64 = b.getI64Type();
  auto strlenFn = declare("strlen", i64, {ptr});
  auto writeFn = declare("write", i64, {i32, ptr, i64});
  auto set = declare("halide_set_error_handler", ptr, {ptr});
  auto eol = b.create<mlir::LLVM::GlobalOp>(
      loc, mlir::LLVM::LLVMArrayType::get(b.getI8Type(), 1), true,
      mlir::LLVM::Linkage::Private, "__" + symbol + "_newline",
      b.getStringAttr("\n"), 1);
  auto handler = b.create<mlir::LLVM::LLVMFuncOp>(
      loc, symbol + "_print_error",
      mlir::LLVM::LLVMFunctionType::get(voidTy, {ptr, ptr}),
      mlir::LLVM::Linkage::Internal);
  {
    // write(2, msg, strlen(msg)); write(2, "\n", 1)
    mlir::OpBuilder::InsertionGuard guard(b);
    mlir::Block *body = handler.addEntryBlock(b);
    b.setInsertionPointToStart(body);
    mlir::Value fd = b.create<mlir::LLVM::ConstantOp>(
        loc, i32, b.getI32IntegerAttr(2));
    mlir::Value msg = body->getArgument(1);
    mlir::Value len =
        b.create<mlir::LLVM::CallOp>(loc, strlenFn, mlir::ValueRange{msg})
            .getResult();
    b.create<mlir::LLVM::CallOp>(loc, writeFn,
                                 mlir::ValueRange{fd, msg, len});
    mlir::Value newline = b.create<mlir::LLVM::AddressOfOp>(loc, eol);
    mlir::Value one = b.create<mlir::LLVM::ConstantOp>(
        loc, i64, b.getI64IntegerAttr(1));
    b.create<mlir::LLVM::CallOp>(loc, writeFn,
                                 mlir::ValueRange{fd, newline, one});
    b.create<mlir::LLVM::ReturnOp>(loc, mlir::ValueRange());
  }
  auto install = b.create<mlir::LLVM::LLVMFuncOp>(
      loc, symbol + "_install_error_handler",
      mlir::LLVM::LLVMFunctionType::get(voidTy, {}),
      mlir::LLVM::Linkage::Internal);
  {
    mlir::OpBuilder::InsertionGuard guard(b);
    mlir::Block *body = install.addEntryBlock(b);
    b.setInsertionPointToStart(body);
    mlir::Value fn = b.create<mlir::LLVM::AddressOfOp>(loc, handler);
    b.create<mlir::LLVM::CallOp>(loc, set, mlir::ValueRange{fn});
    b.create<mlir::LLVM::ReturnOp>(loc, mlir::ValueRange());
  }
  b.create<mlir::LLVM::GlobalCtorsOp>(
      loc, b.getArrayAttr({mlir::FlatSymbolRefAttr::get(install)}),
      b.getI32ArrayAttr({65535}));
}

/// stlm-compile --embed-weights: an object defining
/// <symbol>_embedded_weights, the checkpoint's bytes (64-byte aligned,
/// read-only), assembled by `cc` from an .incbin. `size` is the file's.
Status embedWeightsObject(const std::string &checkpoint,
                          const std::string &symbol, const std::string &objDir,
                          const std::string &cc, std::string &object,
                          int64_t &size) {
  uint64_t bytes = 0;
  if (std::error_code ec = sys::fs::file_size(checkpoint, bytes))
    return Status::failed("cannot read '" + checkpoint + "': " +
                          ec.message());
  SmallString<256> absolute(checkpoint);
  sys::fs::make_absolute(absolute);
  if (StringRef(absolute).find_first_of("\"\n\\") != StringRef::npos)
    return Status::failed("--embed-weights: the path '" + checkpoint +
                          "' holds a quote, backslash or newline, which the "
                          "assembler's .incbin cannot name");
  std::string name = format::embeddedWeightsSymbol(symbol);
  std::string source = objDir + "/" + name + ".S";
  object = objDir + "/" + name + ".o";
  if (Status s = writeFile(
          source,
          "/* " + checkpoint + ", embedded by stlm-compile --embed-weights */\n"
          "  .section .rodata." + name + ",\"a\"\n"
          "  .balign 64\n"
          "  .globl " + name + "\n"
          "  .type " + name + ", @object\n" +
          name + ":\n"
          "  .incbin \"" + std::string(absolute) + "\"\n"
          "  .size " + name + ", " + std::to_string(bytes) + "\n"
          "  .section .note.GNU-stack,\"\",@progbits\n");
      !s)
    return s;
  if (Status s = runTool(cc, {"-c", "-o", object, source}); !s)
    return s;
  size = static_cast<int64_t>(bytes);
  return Status::ok();
}

/// Writes `dir`/<name>.manifest.json: `manifest` (the descriptor's) with
/// the list of the files written, with their sizes and digests, so a
/// damaged library is found before it is loaded.
Status writeManifestFile(const std::string &dir, const std::string &name,
                         const std::string &manifest) {
  std::string fileList;
  for (const std::string &file :
       {format::staticLibrary(name), format::sharedLibrary(name),
        format::header(name)}) {
    auto bytes = MemoryBuffer::getFile(dir + "/" + file, /*IsText=*/false,
                                       /*RequiresNullTerminator=*/false);
    if (!bytes)
      return Status::failed("cannot read '" + dir + "/" + file +
                            "': " + bytes.getError().message());
    std::string_view contents((*bytes)->getBufferStart(),
                              (*bytes)->getBufferSize());
    fileList += std::string(fileList.empty() ? "" : ",\n") + "    \"" + file +
                "\": {\"" + format::key::kSize + "\": " +
                std::to_string(contents.size()) + ", \"" +
                format::key::kFnv1a64 + "\": \"" + fnv1a64Hex(contents) +
                "\"}";
  }
  size_t close = manifest.rfind('}');
  std::string text = StringRef(manifest).substr(0, close).rtrim().str() +
                     ",\n  \"" +
                     format::key::kFiles + "\": {\n" + fileList + "\n  }\n}\n";
  return writeFile(dir + "/" + format::manifest(name), text);
}

/// The CUDA toolkit's nvcc: `given`, else on PATH, else under
/// /usr/local/cuda.
Status findNvcc(const std::string &given, std::string &nvcc) {
  if (!given.empty()) {
    if (!sys::fs::can_execute(given))
      return Status::failed("cannot run nvcc at '" + given + "'");
    nvcc = given;
    return Status::ok();
  }
  if (auto p = sys::findProgramByName("nvcc")) {
    nvcc = *p;
    return Status::ok();
  }
  if (sys::fs::can_execute("/usr/local/cuda/bin/nvcc")) {
    nvcc = "/usr/local/cuda/bin/nvcc";
    return Status::ok();
  }
  return Status::failed("the cuda target needs the CUDA toolkit's nvcc: "
                        "none on PATH or at /usr/local/cuda/bin/nvcc "
                        "(pass --nvcc PATH)");
}

/// writeArtifact for the CUDA target: the model's CUDA source
/// (codegen/cuda/EmitCuda.h) compiled by nvcc into lib<name>.a and .so.
Status writeCudaArtifact(mlir::ModuleOp module, const ArtifactModel &info,
                         const std::string &dir, const ArtifactTarget &target,
                         ArtifactSummary &summary) {
  ir::ModelOp model = theModel(module);
  std::string symbol = symbolPrefix(model);
  std::string objDir = dir + "/obj";
  std::vector<int64_t> input;
  bool usesSeed = batchInput(model, input);
  if (input.size() != 2)
    return Status::unsupported("'" + info.name +
                               "' does not take [batch, context] tokens; "
                               "the cuda target compiles token models only");
  std::string diagnostics;
  mlir::FailureOr<CudaSource> source =
      collectDiagnostics(module, diagnostics, [&] {
        return emitCuda(model, target.tf32,
                        std::atoi(target.arch.c_str() + 3)); // "sm_NN"
      });
  if (failed(source))
    return Status::unsupported("cannot compile '" + info.name +
                               "' for cuda:\n  " + diagnostics);
  std::string nvcc;
  if (Status s = findNvcc(target.nvcc, nvcc); !s)
    return s;
  auto ar = sys::findProgramByName("ar");
  if (!ar)
    return Status::failed("cannot find 'ar' (binutils) on PATH to pack " +
                          format::staticLibrary(info.name));
  if (std::error_code ec = sys::fs::create_directories(objDir + "/stlm"))
    return Status::failed("cannot create '" + objDir + "': " + ec.message());
  std::string manifest;
  raw_string_ostream ms(manifest);
  {
    json::OStream j(ms, 2);
    j.object([&] {
      describeLayout(model, info, source->layout, "cuda", j);
      j.attributeArray(key::kKernels, [] {});
      j.attribute(key::kCudaArch, target.arch);
      j.attribute(key::kTF32, target.tf32);
    });
  }
  for (const auto &[path, text] : cudaSupportFiles())
    if (Status s = writeFile(objDir + "/" + path, text); !s)
      return s;
  std::vector<std::string> objects;
  int64_t embeddedSize = 0;
  if (!info.embeddedWeights.empty()) {
    auto cc = sys::findProgramByName("cc");
    if (!cc)
      return Status::failed("cannot find the system C compiler 'cc' on PATH "
                            "to assemble the embedded weights");
    std::string weightsObj;
    if (Status s = embedWeightsObject(info.embeddedWeights, symbol, objDir,
                                      *cc, weightsObj, embeddedSize);
        !s)
      return s;
    objects.push_back(weightsObj);
  }
  std::string cu = objDir + "/" + symbol + "_cuda.cu";
  std::string obj = objDir + "/" + symbol + "_cuda.o";
  objects.insert(objects.begin(), obj);
  if (Status s = writeFile(
          cu, source->text + cudaDescriptor(symbol, ms.str(), source->layout,
                                            source->splitStep, embeddedSize));
      !s)
    return s;
  if (Status s = runTool(nvcc, {"-c", "-O3", "-std=c++17",
                                "-arch=" + target.arch, "-Xcompiler",
                                "-fPIC", "-I", objDir, "-o", obj, cu});
      !s)
    return s;
  std::string lib = dir + "/" + format::staticLibrary(info.name);
  sys::fs::remove(lib);
  std::vector<std::string> arArgs = {"rcs", lib};
  arArgs.insert(arArgs.end(), objects.begin(), objects.end());
  if (Status s = runTool(*ar, arArgs); !s)
    return s;
  // cudart linked in statically; cuBLASLt found at run time (rpath to the
  // toolkit that compiled it, else LD_LIBRARY_PATH).
  std::string cudaLib =
      sys::path::parent_path(sys::path::parent_path(nvcc)).str() + "/lib64";
  std::vector<std::string> linkArgs = {
      "-shared", "-arch=" + target.arch, "-o",
      dir + "/" + format::sharedLibrary(info.name)};
  linkArgs.insert(linkArgs.end(), objects.begin(), objects.end());
  linkArgs.insert(linkArgs.end(),
                  {"-lcublasLt", "-Xlinker", "-rpath=" + cudaLib});
  if (Status s = runTool(nvcc, linkArgs); !s)
    return s;
  if (Status s = writeFile(dir + "/" + format::header(info.name),
                           artifactHeader(info, symbol, source->layout, input,
                                          usesSeed, /*device=*/true));
      !s)
    return s;
  if (Status s = writeManifestFile(dir, info.name, ms.str()); !s)
    return s;
  model.erase();
  summary.kernels = 0;
  summary.weightsSize = source->layout.weightsSize;
  summary.arenaSize = source->layout.arenaSize;
  return Status::ok();
}

} // namespace

ir::ModelOp theModel(mlir::ModuleOp module) {
  ir::ModelOp model;
  module.walk([&](ir::ModelOp m) { model = m; });
  return model;
}

Status planModel(ir::ModelOp model, const std::string &name,
                 KernelPlan &plan) {
  plan = planKernels(model);
  if (plan.unsupported.empty())
    return Status::ok();
  return Status::unsupported(plan.explainUnsupported(name));
}

Status writeKernels(ir::ModelOp model, const std::string &name,
                    const std::string &dir, const std::string &kernelgen,
                    KernelPlan &plan) {
  if (Status s = planModel(model, name, plan); !s)
    return s;
  Toolchain tools;
  if (Status s = findToolchain(kernelgen, /*linker=*/false, name, tools); !s)
    return s;
  if (std::error_code ec = sys::fs::create_directories(dir))
    return Status::failed("cannot create '" + dir + "': " + ec.message());
  std::string text;
  raw_string_ostream os(text);
  json::OStream j(os, 2);
  std::vector<std::string> archives;
  Status status;
  j.object([&] {
    j.attribute(key::kModel, name);
    j.attribute(key::kTarget, "host");
    j.attribute("runtime", "stlm_halide_rt");
    j.attribute("kernel_ops", plan.kernelOps);
    j.attribute("driver_ops", plan.driverOps);
    status = generateKernels(plan, symbolPrefix(model), dir, tools.kernelgen,
                             j, archives);
  });
  if (!status)
    return status;
  return writeFile(dir + "/kernels.json", os.str() + "\n");
}

Status writeArtifact(mlir::ModuleOp module, const ArtifactModel &info,
                     const std::string &dir, const std::string &kernelgen,
                     ArtifactSummary &summary, const ArtifactTarget &where) {
  if (where.name == "cuda")
    return writeCudaArtifact(module, info, dir, where, summary);
  ir::ModelOp model = theModel(module);
  std::string symbol = symbolPrefix(model);
  std::string objDir = dir + "/obj";

  std::vector<int64_t> input;
  bool usesSeed = batchInput(model, input);
  KernelPlan plan;
  if (Status s = planModel(model, info.name, plan); !s)
    return s;
  if (input.size() != 2)
    return Status::unsupported("'" + info.name +
                               "' does not take [batch, context] tokens; "
                               "the native path compiles token models only");
  // Lower once, for the host; the manifest reads the planned model (still
  // there after lowering) and the layout, then the model goes before
  // translation. A model the driver cannot lower is one the native path
  // cannot compile yet.
  std::unique_ptr<KernelTarget> target = createHostTarget(module, symbol);
  std::string diagnostics;
  mlir::FailureOr<DriverLayout> layout =
      collectDiagnostics(module, diagnostics, [&] {
        return lowerToLLVM(module, model, plan, target.get());
      });
  if (failed(layout))
    return Status::unsupported("cannot lower '" + info.name +
                               "' to the native driver:\n  " + diagnostics);
  // The tools, before anything is written.
  Toolchain tools;
  if (Status s = findToolchain(kernelgen, /*linker=*/true, info.name, tools);
      !s)
    return s;
  if (std::error_code ec = sys::fs::create_directories(objDir))
    return Status::failed("cannot create '" + objDir + "': " + ec.message());
  std::string manifest;
  raw_string_ostream ms(manifest);
  json::OStream j(ms, 2);
  std::vector<std::string> archives;
  Status status;
  j.object([&] {
    describeLayout(model, info, *layout, target->name(), j);
    if (where.profile)
      j.attribute(key::kProfile, true);
    status = generateKernels(plan, symbol, objDir, tools.kernelgen, j,
                             archives, where.profile);
  });
  if (!status)
    return status;
  model.erase();
  std::string weightsObj;
  int64_t embeddedSize = 0;
  if (!info.embeddedWeights.empty())
    if (Status s = embedWeightsObject(info.embeddedWeights, symbol, objDir,
                                      tools.cc, weightsObj, embeddedSize);
        !s)
      return s;
  addDescriptor(module, symbol, ms.str(), embeddedSize);
  addErrorHandler(module, symbol);
  std::string driverObj = objDir + "/" + symbol + "_driver.o";
  std::string error;
  if (failed(emitObjectFile(module, driverObj, error)))
    return Status::failed(error);

  // Unpack the kernels' archives (one object each) and pack one library.
  std::vector<std::string> objects = {driverObj};
  if (!weightsObj.empty())
    objects.push_back(weightsObj);
  for (const std::string &a : archives) {
    std::string member = sys::path::filename(a).str() + ".o";
    if (Status s = runTool(tools.ar, {"x", "--output=" + objDir, a, member});
        !s)
      return s;
    objects.push_back(objDir + "/" + member);
  }
  std::string lib = dir + "/" + format::staticLibrary(info.name);
  sys::fs::remove(lib);
  std::vector<std::string> arArgs = {"rcs", lib};
  arArgs.insert(arArgs.end(), objects.begin(), objects.end());
  if (Status s = runTool(tools.ar, arArgs); !s)
    return s;
  std::vector<std::string> ccArgs = {
      "-shared", "-o", dir + "/" + format::sharedLibrary(info.name)};
  ccArgs.insert(ccArgs.end(), objects.begin(), objects.end());
  ccArgs.insert(ccArgs.end(), {"-lpthread", "-ldl", "-lm"});
  if (Status s = runTool(tools.cc, ccArgs); !s)
    return s;
  if (Status s = writeFile(dir + "/" + format::header(info.name),
                           artifactHeader(info, symbol, *layout, input,
                                          usesSeed));
      !s)
    return s;
  if (Status s = writeManifestFile(dir, info.name, ms.str()); !s)
    return s;
  summary.kernels = plan.kernels.size();
  summary.weightsSize = layout->weightsSize;
  summary.arenaSize = layout->arenaSize;
  return Status::ok();
}

std::string artifactHeader(const ArtifactModel &info,
                           const std::string &prefix,
                           const DriverLayout &layout,
                           const std::vector<int64_t> &input, bool usesSeed,
                           bool device) {
  std::string up = StringRef(prefix).upper();
  const std::string &name = info.name;
  bool bytePool = info.chunks > 0;
  std::string h;
  raw_string_ostream os(h);
  os << "/* " << name << ".h - generated by stlm-compile; do not edit.\n"
     << " *\n"
     << " * The compiled model '" << name << "'. Open it with the stlm "
     << "runtime:\n"
     << " *   stlm_model *m; stlm_open(&" << prefix << "_artifact, &m);\n"
     << (device
             ? " * This is a CUDA artifact: `weights` is the device context "
               "that\n * " + prefix +
                   "_artifact.device->open() returns (weights, arena and KV "
                   "cache live\n * on the GPU) and `arena` is ignored; "
                   "tokens, targets and results are\n * host memory. A "
                   "failure returns -1 (device->message() says why).\n"
             : std::string())
     << " * or call the entry points directly. Every pointer they take must "
        "be\n"
     << " * 64-byte aligned: `weights` (" << up
     << "_WEIGHTS_SIZE bytes: parameters and\n"
     << " * optimizer state at the offsets of " << name
     << ".manifest.json), `arena` (" << up << "_ARENA_SIZE\n"
     << " * bytes of scratch), `tokens` and `targets` (int32 [" << up
     << "_BATCH, " << up << "_CONTEXT]).\n"
     << (bytePool ? " * A byte-pool model: `tokens` holds the batch's bytes "
                    "(0-255), which it\n * cuts into chunks itself; "
                    "`targets` is ignored (it may be null).\n"
                  : "")
     << (usesSeed ? " * `seed` points to the batch's mask seed (the masked "
                    "objective masks the\n * positions it picks; see "
                    "stlm.mask_tokens).\n"
                  : " * `seed` is for masked objectives; this model ignores "
                    "it (it may be null).\n")
     << " * Each returns 0, " << up
     << "_POSITION_OUT_OF_RANGE (decode_step: *pos outside\n"
     << " * [0, " << up
     << "_CONTEXT)), or the failing kernel's (negative) Halide error code.\n"
     << (device ? std::string()
                : " * Called without the runtime (no stlm_open), a failing "
                  "kernel's message\n * goes to stderr; the process goes on.\n")
     << " */\n"
     << "#ifndef STLM_MODEL_" << up << "_H\n#define STLM_MODEL_" << up
     << "_H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n"
     << "#endif\n\n";
  os << "#define " << up << "_WEIGHTS_SIZE " << layout.weightsSize << "LL\n"
     << "#define " << up << "_ARENA_SIZE " << layout.arenaSize << "LL\n"
     << "#define " << up << "_BATCH " << input[0] << "\n"
     << "#define " << up << "_CONTEXT " << input[1] << "\n"
     << "#define " << up << "_VOCAB " << info.vocab << "\n"
     << (bytePool ? "#define " + up + "_CHUNKS " + std::to_string(info.chunks) +
                        "\n#define " + up + "_CHUNK_BYTES " +
                        std::to_string(info.chunkBytes) + "\n"
                  : std::string())
     << (info.chunkStarts
             ? "/* 'given' chunking: a byte + " + up +
                   "_CHUNK_START in the bytes opens a chunk. */\n#define " +
                   up + "_CHUNK_START 512\n"
             : std::string())
     << "#define " << up << "_POSITION_OUT_OF_RANGE "
     << format::kPositionOutOfRange << "\n\n";
  os << "struct stlm_artifact; /* runtime/include/stlm/stlm.h */\n"
     << "extern const struct stlm_artifact "
     << format::descriptorSymbol(prefix) << ";\n\n";
  if (!layout.training)
    os << "/* Quantized (stlm-compile --quantize): inference only, on the "
          "weights of a\n * checkpoint quantized the same way (stlm-run "
          "quantize; the manifest's\n * \"quantization\"). */\n";
  else if (!info.splitStep)
    os << "/* One optimizer step: forward, backward, clipping, AdamW; "
          "out = {loss, grad norm, lr}. */\n"
       << "int32_t " << prefix << "_train_step(void *weights, void *arena, "
       << "const int32_t *tokens,\n    const int32_t *targets, const int32_t "
          "*seed, float out[3]);\n";
  else
    os << "/* A step is " << up << "_ACCUMULATE calls of _accumulate (one "
          "micro-batch each:\n * its loss; its gradients summed in the "
          "weights blob), then _apply (mean,\n * clipping, AdamW; out = "
          "{grad norm, lr}). Data-parallel training sums the grad_acc.*\n"
          " * tensors and loss_acc (one contiguous range of the blob) over "
          "the ranks\n * before _apply and scales them by 1 / ranks. */\n"
       << "#define " << up << "_ACCUMULATE " << info.accumulate << "\n"
       << "int32_t " << prefix << "_accumulate(void *weights, void *arena, "
       << "const int32_t *tokens,\n    const int32_t *targets, const int32_t "
          "*seed, float *loss);\n"
       << "int32_t " << prefix << "_apply(void *weights, void *arena, "
       << "float out[2]);\n";
  if (layout.training)
    os << "/* Loss and every parameter gradient (in the arena at the "
          "manifest's grad_offset). */\n"
       << "int32_t " << prefix << "_grad(void *weights, void *arena, "
       << "const int32_t *tokens,\n    const int32_t *targets, const "
          "int32_t *seed, float *loss);\n";
  os << "/* The loss of one batch, without gradients, then each objective's "
        "own mean\n * loss in the spec's order ("
     << up << "_OBJECTIVES floats after the loss). */\n"
     << "#define " << up << "_OBJECTIVES " << info.objectives << "\n"
     << "int32_t " << prefix << "_eval(void *weights, void *arena, "
     << "const int32_t *tokens,\n    const int32_t *targets, const int32_t "
        "*seed, float *out);\n";
  bool generates = std::find(layout.inference.begin(), layout.inference.end(),
                             "decode_step") != layout.inference.end();
  if (bytePool) {
    os << "/* Logits [BATCH, CHUNKS, CHUNK_BYTES, VOCAB] of a batch: chunk c "
          "predicts the\n * bytes of chunk c + 1. */\n"
       << "int32_t " << prefix << "_logits(void *weights, void *arena, "
       << "const int32_t *tokens,\n    float *logits);\n";
    if (generates)
      os << "/* Generation a chunk at a time, with the KV cache over chunk "
            "positions (in\n * `weights`): the logits [CHUNKS, CHUNK_BYTES, "
            "VOCAB] of one sequence of\n * CHUNKS chunks [CHUNKS, "
            "CHUNK_BYTES] (bytes, then pads 256) from position 0,\n * "
            "filling the cache; then the logits [CHUNK_BYTES, VOCAB] of the "
            "chunk after\n * one more chunk at position *pos. */\n"
         << "int32_t " << prefix << "_prefill(void *weights, void *arena, "
         << "const int32_t *chunks,\n    float *logits);\n"
         << "int32_t " << prefix << "_decode_step(void *weights, void *arena, "
         << "const int32_t *chunk,\n    const int32_t *pos, float *logits);\n";
  } else if (!layout.inference.empty())
    os << "/* Logits [BATCH, CONTEXT, VOCAB] of a batch. */\n"
       << "int32_t " << prefix << "_logits(void *weights, void *arena, "
       << "const int32_t *tokens,\n    float *logits);\n"
       << "/* Generation with the KV cache (in `weights`): the logits "
          "[CONTEXT, VOCAB] of\n * one sequence of CONTEXT tokens from "
          "position 0, filling the cache; then\n * the logits [VOCAB] after "
          "one more token at position *pos (0 <= *pos <\n * CONTEXT; rows "
          "before *pos must hold the sequence so far). */\n"
       << "int32_t " << prefix << "_prefill(void *weights, void *arena, "
       << "const int32_t *tokens,\n    float *logits);\n"
       << "int32_t " << prefix << "_decode_step(void *weights, void *arena, "
       << "const int32_t *token,\n    const int32_t *pos, float *logits);\n";
  if (layout.decodeBatch > 0)
    os << "/* The same for " << up
       << "_DECODE_BATCH sequences in lockstep, "
          "with caches of\n * their own: tokens [DECODE_BATCH, CONTEXT] -> "
          "logits [DECODE_BATCH, CONTEXT,\n * VOCAB]; then one more token "
          "of each [DECODE_BATCH], all at position *pos,\n * -> logits "
          "[DECODE_BATCH, VOCAB]. */\n"
       << "#define " << up << "_DECODE_BATCH " << layout.decodeBatch << "\n"
       << "int32_t " << prefix << "_prefill_batch(void *weights, void *arena, "
       << "const int32_t *tokens,\n    float *logits);\n"
       << "int32_t " << prefix << "_decode_batch(void *weights, void *arena, "
       << "const int32_t *tokens,\n    const int32_t *pos, float *logits);\n";
  os << "\n"
     << "#ifdef __cplusplus\n}\n#endif\n\n#endif\n";
  return os.str();
}

} // namespace stlm::codegen
