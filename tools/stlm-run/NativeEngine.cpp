//===- NativeEngine.cpp - train with a compiled artifact ------------------===//

#include "tools/stlm-run/NativeEngine.h"

#include "codegen/driver/LowerToLLVM.h"
#include "frontend/BuildModel.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "passes/Passes.h"
#include "stlm/stlm.h"
#include "tools/common/InitAll.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace stlm {
namespace {

/// FNV-1a, 64 bits: a stable cache key.
uint64_t fnv1a(const std::string &s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class NativeEngine : public TrainEngine {
public:
  explicit NativeEngine(const NativeOptions &o) : opt(o) {}
  ~NativeEngine() override { stlm_close(model); }

  std::string describe() const override {
    return "the native artifact in " + dir;
  }

  bool prepare(const ModelSpec &spec, std::string &error) override {
    std::string json = specToJson(spec);
    dir = opt.artifactDir;
    if (dir.empty()) {
      // The cache: one directory per (spec, compiler build).
      llvm::sys::fs::file_status st;
      uint64_t key = fnv1a(json);
      if (!llvm::sys::fs::status(opt.compiler, st))
        key = fnv1a(std::to_string(st.getLastModificationTime()
                                       .time_since_epoch()
                                       .count()) +
                        std::to_string(st.getSize()),
                    key);
      const char *xdg = std::getenv("XDG_CACHE_HOME");
      const char *home = std::getenv("HOME");
      std::string base = xdg && *xdg ? xdg
                         : home      ? std::string(home) + "/.cache"
                                     : "/tmp";
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(key));
      dir = base + "/stlm/" + spec.name + "-" + hex;
    }
    std::string lib = dir + "/lib" + spec.name + ".so";
    if (!upToDate(dir + "/" + spec.name + ".manifest.json", json) &&
        !compile(spec, error))
      return false;
    if (stlm_open_library(lib.c_str(), nullptr, &model) != STLM_OK) {
      error = std::string("cannot open the compiled model: ") +
              stlm_error_message(model);
      return false;
    }
    if (stlm_set_threads(model, opt.threads) != STLM_OK) {
      error = stlm_error_message(model);
      return false;
    }
    return true;
  }

  bool setTensor(const std::string &name, const std::vector<int64_t> &,
                 const std::vector<float> &values,
                 std::string &error) override {
    return check(stlm_write(model, name.c_str(), values.data(), values.size()),
                 error);
  }
  bool getTensor(const std::string &name, std::vector<float> &values,
                 std::string &error) override {
    int64_t n = stlm_tensor_size(model, name.c_str());
    if (n < 0) {
      error = "the compiled model has no tensor '" + name + "'";
      return false;
    }
    values.resize(n);
    return check(stlm_read(model, name.c_str(), values.data(), n), error);
  }
  bool setStep(int64_t step, std::string &error) override {
    return check(stlm_set_step(model, step), error);
  }
  bool trainStep(const std::vector<std::vector<ref::Tensor<float>>> &micro,
                 float &loss, float &norm, float &lr,
                 std::string &error) override {
    if (micro.size() != 1 || micro[0].size() != 2) {
      error = "the native backend compiles one token batch per step (no "
              "gradient accumulation yet); use --backend reference";
      return false;
    }
    stlm_step_result r;
    if (!check(stlm_train_step(model, micro[0][0].i.data(),
                               micro[0][1].i.data(), &r),
               error))
      return false;
    loss = r.loss, norm = r.grad_norm, lr = r.lr;
    return true;
  }
  bool evalLoss(const std::vector<ref::Tensor<float>> &args, float &loss,
                std::string &error) override {
    return check(stlm_eval(model, args[0].i.data(), args[1].i.data(), &loss),
                 error);
  }

private:
  bool check(stlm_status s, std::string &error) {
    if (s == STLM_OK)
      return true;
    error = stlm_error_message(model);
    return false;
  }

  /// The artifact in `dir` was compiled from exactly this spec.
  static bool upToDate(const std::string &manifest, const std::string &json) {
    if (!llvm::sys::fs::exists(manifest))
      return false;
    try {
      nlohmann::json m = nlohmann::json::parse(readFile(manifest));
      return m.at("spec").get<std::string>() == json;
    } catch (const std::exception &) {
      return false;
    }
  }

  /// stlm-compile into a fresh directory, then renamed into place, so a
  /// concurrent or interrupted compile never leaves a half artifact.
  bool compile(const ModelSpec &spec, std::string &error) {
    if (!llvm::sys::fs::can_execute(opt.compiler)) {
      error = "cannot run stlm-compile at '" + opt.compiler + "'";
      return false;
    }
    std::string parent = llvm::sys::path::parent_path(dir).str();
    if (std::error_code ec = llvm::sys::fs::create_directories(parent)) {
      error = "cannot create '" + parent + "': " + ec.message();
      return false;
    }
    std::string tmp = dir + ".tmp." + std::to_string(getpid());
    llvm::sys::fs::remove_directories(tmp);
    if (opt.progress)
      std::fprintf(opt.progress, "compiling '%s' into %s\n", spec.name.c_str(),
                   dir.c_str());
    auto start = std::chrono::steady_clock::now();
    llvm::StringRef argv[] = {opt.compiler, opt.specPath, "-o", tmp};
    std::optional<llvm::StringRef> redirects[] = {std::nullopt, "",
                                                  std::nullopt};
    std::string message;
    int rc = llvm::sys::ExecuteAndWait(opt.compiler, argv, std::nullopt,
                                       redirects, 0, 0, &message);
    if (rc != 0) {
      llvm::sys::fs::remove_directories(tmp);
      error = "stlm-compile could not compile '" + spec.name + "' (" +
              (message.empty() ? "exit status " + std::to_string(rc)
                               : message) +
              ", diagnostics above); --backend reference runs every spec";
      return false;
    }
    llvm::sys::fs::remove_directories(dir);
    if (std::error_code ec = llvm::sys::fs::rename(tmp, dir)) {
      error = "cannot move the artifact to '" + dir + "': " + ec.message();
      return false;
    }
    if (opt.progress)
      std::fprintf(
          opt.progress, "compiled in %.1f s\n",
          std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                        start)
              .count());
    return true;
  }

  NativeOptions opt;
  std::string dir;
  stlm_model *model = nullptr;
};

} // namespace

std::string nativeUnsupported(const ModelSpec &spec) {
  mlir::DialectRegistry registry;
  mlir::stlm::registerAllDialects(registry);
  mlir::MLIRContext context(registry);
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &d) {
    if (diagnostics.empty())
      diagnostics = d.str();
    return mlir::success();
  });
  mlir::OwningOpRef<mlir::ModuleOp> module = buildModel(context, spec);
  mlir::PassManager pm(&context);
  pm.addPass(mlir::stlm::createVerifyShapesPass());
  pm.addPass(mlir::stlm::createAutodiffPass());
  mlir::stlm::addPlanPasses(pm);
  if (mlir::failed(pm.run(*module)))
    return diagnostics.empty() ? "its training step cannot be derived"
                               : diagnostics;
  mlir::stlm::ModelOp model;
  module->walk([&](mlir::stlm::ModelOp m) { model = m; });
  codegen::KernelPlan plan = codegen::planKernels(model, codegen::hostPanel());
  if (!plan.unsupported.empty())
    return "no kernel for " + plan.unsupported.begin()->first;
  if (mlir::failed(codegen::lowerToLLVM(*module, model, plan,
                                        codegen::hostPanel())))
    return diagnostics;
  return "";
}

std::unique_ptr<TrainEngine> nativeEngine(const NativeOptions &options) {
  return std::make_unique<NativeEngine>(options);
}

} // namespace stlm
