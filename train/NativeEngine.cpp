//===- NativeEngine.cpp - train with a compiled artifact ------------------===//

#include "train/NativeEngine.h"

#include "stlm/artifact_format.h"
#include "stlm/stlm.h"
#include "support/Hash.h"
#include "train/Batches.h"
#include "train/ReferenceEngine.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <unistd.h>

namespace stlm {
namespace {

/// The C API's sampling options for `o`, which the reference backend reads
/// as doubles: a value outside float's range saturates to the nearest float
/// that means the same (a temperature above FLT_MAX to FLT_MAX, a positive
/// temperature or top-p below the smallest float to that float, never to 0,
/// which would mean greedy or be invalid), so both backends accept the same
/// values.
stlm_sampling toCSampling(const sampling::SamplingOptions &o, uint64_t seed) {
  auto positiveFloat = [](double v) {
    if (!(v > 0))
      return static_cast<float>(v);
    return static_cast<float>(std::clamp<double>(
        v, std::numeric_limits<float>::denorm_min(),
        std::numeric_limits<float>::max()));
  };
  return {positiveFloat(o.temperature),
          static_cast<int32_t>(std::min<int64_t>(o.topK, INT32_MAX)),
          positiveFloat(o.topP), seed};
}

/// stlm_load_teacher with the teacher of a distilling `spec` (nothing to
/// do without one); false with `error` set.
bool loadTeacherInto(stlm_model *model, const ModelSpec &spec,
                     std::string &error) {
  const ObjectiveSpec *o = teacherObjective(spec);
  if (!o || stlm_load_teacher(model, o->teacher.c_str()) == STLM_OK)
    return true;
  error = stlm_error_message(model);
  return false;
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// stlm-compile's exit status for a valid spec it cannot compile yet.
constexpr int kCannotCompileYet = 3;

/// Finds (in --artifact DIR or the cache) or compiles the artifact of a
/// spec, and opens it.
class ArtifactOpener {
public:
  explicit ArtifactOpener(const NativeOptions &o) : opt(o) {}

  /// The opened model; null with `error` set, and `unsupported` set too
  /// when stlm-compile says it cannot compile the spec yet (then `error`
  /// is its reason).
  stlm_model *open(const ModelSpec &spec, std::string &error,
                   bool &unsupported) {
    std::string json = specToJson(spec);
    dir = directoryFor(spec, json, opt);
    manifestName = format::manifest(spec.name);
    std::string lib = dir + "/" + format::sharedLibrary(spec.name);
    unsupported = false;
    std::string damage;
    // stlm-compile's own notes reach stderr unless a fallback keeps them.
    bool compilerNoted = false;
    if (!upToDate(dir, spec.name, json, opt.device == "cuda" ? "cuda" : "host",
                  opt.dataParallel, quantizationOf(opt), opt.decodeBatch,
                  damage)) {
      if (!damage.empty() && opt.progress)
        std::fprintf(opt.progress, "note: the artifact in %s is damaged (%s); "
                     "compiling it again\n", dir.c_str(), damage.c_str());
      if (!compile(spec, json, error, unsupported))
        return nullptr;
      compilerNoted = !opt.fallback;
    }
    if (!compilerNoted)
      noteBF16(spec);
    stlm_model *model = nullptr;
    if (stlm_open_library(lib.c_str(), nullptr, &model) != STLM_OK ||
        stlm_set_threads(model, opt.threads) != STLM_OK) {
      error = std::string("cannot open the compiled model: ") +
              stlm_error_message(model);
      stlm_close(model);
      return nullptr;
    }
    return model;
  }
  const std::string &directory() const { return dir; }
  /// "bf16 matmuls" or "fp32 matmuls": what the opened artifact computes.
  std::string computeSignature() const {
    try {
      nlohmann::json m = nlohmann::json::parse(readFile(dir + "/" + manifestName));
      return m.value(format::key::kBF16Compute, false) ? "bf16 matmuls"
                                                        : "fp32 matmuls";
    } catch (const std::exception &) {
      return "";
    }
  }

private:
  /// A `precision: bf16` spec whose artifact computes its matmuls in fp32
  /// (stlm-compile found bf16 slower on this CPU) is noted.
  void noteBF16(const ModelSpec &spec) const {
    if (spec.train.precision != Precision::BF16 || !opt.progress)
      return;
    try {
      nlohmann::json m = nlohmann::json::parse(
          readFile(dir + "/" + format::manifest(spec.name)));
      if (m.value(format::key::kBF16Compute, true))
        return;
    } catch (const std::exception &) {
      return;
    }
    std::fprintf(opt.progress,
                 "note: '%s' asks for bf16 matmuls; its artifact computes "
                 "them in fp32 (stlm-compile found bf16 slower on this CPU, "
                 "or was given --bf16-compute=off; docs/kernels.md)\n",
                 spec.name.c_str());
  }

  /// The manifest's `quantization` an artifact compiled for `opt` has
  /// (null for a float one).
  static nlohmann::json quantizationOf(const NativeOptions &opt) {
    if (!opt.quantize)
      return nullptr;
    return {{format::key::kScheme, quant::schemeName(opt.quantize->scheme)},
            {format::key::kGroup, opt.quantize->group}};
  }

  /// --artifact DIR, or the cache directory of (spec, compiler build,
  /// quantization), absolute.
  static std::string directoryFor(const ModelSpec &spec,
                                  const std::string &json,
                                  const NativeOptions &opt) {
    std::string dir = opt.artifactDir;
    if (dir.empty()) {
      // The cache: one directory per (spec, compiler build): stlm-compile
      // and the stlm-kernelgen beside it, which generates the kernels.
      uint64_t key = fnv1a64(json);
      std::string kernelgen =
          (llvm::sys::path::parent_path(opt.compiler) + "/stlm-kernelgen")
              .str();
      for (const std::string &tool : {opt.compiler, kernelgen}) {
        llvm::sys::fs::file_status st;
        if (!llvm::sys::fs::status(tool, st))
          key = fnv1a64(
              std::to_string(
                  st.getLastModificationTime().time_since_epoch().count()) +
                  std::to_string(st.getSize()),
              key);
      }
      const char *xdg = std::getenv("XDG_CACHE_HOME");
      const char *home = std::getenv("HOME");
      std::string base = xdg && *xdg ? xdg
                         : home      ? std::string(home) + "/.cache"
                                     : "/tmp";
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(key));
      dir = base + "/stlm/" + spec.name + "-" + hex +
            (opt.device == "cuda" ? "-cuda" : "") +
            (opt.dataParallel ? "-dp" : "") +
            (opt.quantize
                 ? std::string("-") + quant::schemeName(opt.quantize->scheme) +
                       "g" + std::to_string(opt.quantize->group)
                 : "") +
            (opt.decodeBatch > 0 ? "-b" + std::to_string(opt.decodeBatch) : "");
    }
    llvm::SmallString<256> absolute(dir);
    llvm::sys::fs::make_absolute(absolute);
    return std::string(absolute);
  }

  /// The artifact of model `name` in `dir` was compiled from exactly this
  /// spec and its files are whole: each has the size and digest its
  /// manifest lists (a truncated library would crash the loader with
  /// SIGBUS). `damage` says what is wrong with an artifact of this spec.
  static bool upToDate(const std::string &dir, const std::string &name,
                       const std::string &json, const std::string &target,
                       bool dataParallel, const nlohmann::json &quantization,
                       int64_t decodeBatch, std::string &damage) {
    damage.clear();
    std::string manifest = dir + "/" + format::manifest(name);
    if (!llvm::sys::fs::exists(manifest))
      return false;
    nlohmann::json m, files;
    try {
      m = nlohmann::json::parse(readFile(manifest));
      if (m.at(format::key::kSpec).get<std::string>() != json)
        return false;
      // An artifact for another target is compiled again, not loaded.
      if (m.at(format::key::kTarget).get<std::string>() != target)
        return false;
      // A data-parallel run needs the step split (--data-parallel); others
      // train alike with either form. Older manifests have no split_step:
      // theirs was split exactly when it accumulated.
      bool split = m.value(format::key::kSplitStep,
                           m.value(format::key::kAccumulate, 1) > 1);
      if (dataParallel && !split)
        return false;
      // Quantized as the checkpoint is (or float for a float one).
      if (m.value(format::key::kQuantization, nlohmann::json()) != quantization)
        return false;
      // With batched generation for as many sequences (or without).
      if (m.value(format::key::kDecodeBatch, int64_t(0)) != decodeBatch)
        return false;
    } catch (const std::exception &) {
      damage = "its manifest is not readable";
      return false;
    }
    if (!m.contains(format::key::kFiles)) {
      damage = "its manifest lists no file digests: an older stlm-compile "
               "wrote it";
      return false;
    }
    files = m[format::key::kFiles];
    for (const std::string &file :
         {format::sharedLibrary(name), format::staticLibrary(name),
          format::header(name)}) {
      try {
        const nlohmann::json &f = files.at(file);
        uint64_t size = f.at(format::key::kSize).get<uint64_t>();
        std::string digest = f.at(format::key::kFnv1a64).get<std::string>();
        uint64_t actual = 0;
        if (llvm::sys::fs::file_size(dir + "/" + file, actual)) {
          damage = file + " is missing";
          return false;
        }
        if (actual != size) {
          damage = file + " has " + std::to_string(actual) +
                   " bytes, the manifest says " + std::to_string(size);
          return false;
        }
        if (fnv1a64Hex(readFile(dir + "/" + file)) != digest) {
          damage = file + " differs from what was compiled (its digest "
                          "does not match the manifest's)";
          return false;
        }
      } catch (const std::exception &) {
        damage = "its manifest does not list " + file;
        return false;
      }
    }
    return true;
  }

  /// The reason in stlm-compile's message for exit status 3: the first op
  /// it lists ("  <op>: <why> (<n> ops)") as "no kernel for <op>: <why>",
  /// or its one-line message.
  static std::string cannotCompileReason(const std::string &text) {
    std::string reason;
    size_t at = text.find("error: ");
    size_t eol = text.find('\n', at == std::string::npos ? 0 : at);
    if (at != std::string::npos)
      reason = text.substr(at + 7, eol == std::string::npos
                                       ? std::string::npos
                                       : eol - at - 7);
    if (eol != std::string::npos && text.compare(eol + 1, 2, "  ") == 0) {
      std::string first = text.substr(eol + 3, text.find('\n', eol + 1) -
                                                   eol - 3);
      size_t count = first.rfind(" (");
      reason = "no kernel for " + first.substr(0, count);
    }
    return reason.empty() ? "stlm-compile gave no reason" : reason;
  }

  /// Why the artifact directory `dir` must not be replaced ("" when it may
  /// be: it does not exist, is empty, or holds exactly the files of an stlm
  /// artifact, which a compile writes). Nothing else in it is ever deleted.
  static std::string notReplaceable(const std::string &dir) {
    if (!llvm::sys::fs::exists(dir))
      return "";
    if (!llvm::sys::fs::is_directory(dir))
      return "'" + dir + "' is not a directory";
    std::vector<std::string> entries;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(dir, ec), end;
         !ec && it != end; it.increment(ec))
      entries.push_back(llvm::sys::path::filename(it->path()).str());
    if (ec)
      return "cannot read '" + dir + "': " + ec.message();
    if (entries.empty())
      return "";
    // The model an artifact's manifest names, and the files it consists of.
    std::string model;
    for (const std::string &e : entries) {
      llvm::StringRef name(e);
      if (!name.consume_back(".manifest.json"))
        continue;
      try {
        nlohmann::json m = nlohmann::json::parse(readFile(dir + "/" + e));
        if (m.at(format::key::kFormat) == format::kFormatName &&
            m.at(format::key::kModel) == name.str())
          model = name.str();
      } catch (const std::exception &) {
      }
    }
    std::string why = "'" + dir + "' holds files that are not an stlm "
                      "artifact's; give --artifact a new or empty directory "
                      "(nothing was deleted)";
    if (model.empty())
      return why;
    for (const std::string &e : entries)
      if (e != format::staticLibrary(model) &&
          e != format::sharedLibrary(model) && e != format::header(model) &&
          e != format::manifest(model) && e != "obj")
        return why;
    return "";
  }

  /// stlm-compile into a fresh directory, then renamed into place, so a
  /// concurrent or interrupted compile never leaves a half artifact. Specs
  /// that come from a checkpoint are written out as JSON (which is YAML).
  /// With a fallback, stlm-compile's messages are kept back: a spec it
  /// cannot compile yet is the fallback's note, not an error.
  bool compile(const ModelSpec &spec, const std::string &json,
               std::string &error, bool &unsupported) {
    if (!llvm::sys::fs::can_execute(opt.compiler)) {
      error = "cannot run stlm-compile at '" + opt.compiler + "'";
      return false;
    }
    if (std::string why = notReplaceable(dir); !why.empty()) {
      error = why;
      return false;
    }
    std::string parent = llvm::sys::path::parent_path(dir).str();
    if (std::error_code ec = llvm::sys::fs::create_directories(parent)) {
      error = "cannot create '" + parent + "': " + ec.message();
      return false;
    }
    // Host and process: ranks on several hosts may share a cache on
    // network storage.
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
      host[0] = '\0';
    std::string tmp =
        dir + ".tmp." + host + "." + std::to_string(getpid());
    llvm::sys::fs::remove_directories(tmp);
    std::string specPath = opt.specPath;
    if (specPath.empty()) {
      specPath = tmp + ".spec.yaml";
      std::ofstream(specPath) << json << "\n";
    }
    if (opt.progress)
      std::fprintf(opt.progress, "compiling '%s' into %s\n", spec.name.c_str(),
                   dir.c_str());
    auto start = std::chrono::steady_clock::now();
    std::vector<llvm::StringRef> argv = {opt.compiler, specPath, "-o", tmp};
    if (opt.device == "cuda")
      argv.push_back("--target=cuda");
    if (opt.dataParallel)
      argv.push_back("--data-parallel");
    std::string scheme, group, batched;
    if (opt.decodeBatch > 0) {
      batched = "--decode-batch=" + std::to_string(opt.decodeBatch);
      argv.push_back(batched);
    }
    if (opt.quantize) {
      scheme =
          std::string("--quantize=") + quant::schemeName(opt.quantize->scheme);
      group = "--quantize-group=" + std::to_string(opt.quantize->group);
      argv.push_back(scheme);
      argv.push_back(group);
    }
    std::string diagnostics = tmp + ".stderr";
    std::optional<llvm::StringRef> redirects[] = {
        std::nullopt, "",
        opt.fallback ? std::optional<llvm::StringRef>(diagnostics)
                     : std::nullopt};
    std::string message;
    int rc = llvm::sys::ExecuteAndWait(opt.compiler, argv, std::nullopt,
                                       redirects, 0, 0, &message);
    if (opt.specPath.empty())
      llvm::sys::fs::remove(specPath);
    std::string said = opt.fallback ? readFile(diagnostics) : "";
    llvm::sys::fs::remove(diagnostics);
    if (rc != 0) {
      llvm::sys::fs::remove_directories(tmp);
      if (opt.fallback && rc == kCannotCompileYet) {
        unsupported = true;
        error = cannotCompileReason(said);
        return false;
      }
      std::fputs(said.c_str(), stderr);
      error = "stlm-compile could not compile '" + spec.name + "' (" +
              (message.empty() ? "exit status " + std::to_string(rc)
                               : message) +
              (rc == kCannotCompileYet ? ": not yet supported" : "") +
              ", diagnostics above); --backend reference runs every spec";
      return false;
    }
    // An old artifact (only its files) makes way; anything else stays.
    if (std::string why = notReplaceable(dir); !why.empty()) {
      llvm::sys::fs::remove_directories(tmp);
      error = why;
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
  std::string dir, manifestName;
};

/// Appends the mask seed of a batch (tokens, targets[, seed], or the bytes
/// of a byte-pool model) to `seeds`: its third tensor, or 0 for objectives
/// that do not mask.
bool batchSeed(const std::vector<ref::Tensor<float>> &batch,
               std::vector<int32_t> &seeds, std::string &error) {
  if (batch.empty() || batch.size() > 3 ||
      (batch.size() == 3 && batch[2].i.size() != 1)) {
    error = "the native backend takes (tokens, targets[, mask seed]) or "
            "(bytes) batches";
    return false;
  }
  seeds.push_back(batch.size() == 3 ? batch[2].i[0] : 0);
  return true;
}

/// A batch's targets; null for a byte-pool model's (bytes) batch.
const int32_t *targetsOf(const std::vector<ref::Tensor<float>> &batch) {
  return batch.size() >= 2 ? batch[1].i.data() : nullptr;
}

/// The loss of a batch and each objective's own (stlm_eval_objectives).
bool evalObjectives(stlm_model *model,
                    const std::vector<ref::Tensor<float>> &args,
                    std::vector<float> &losses, std::string &error) {
  std::vector<int32_t> seeds;
  if (!batchSeed(args, seeds, error))
    return false;
  losses.assign(1 + stlm_objectives(model), 0.0f);
  if (stlm_eval_objectives(model, args[0].i.data(), targetsOf(args),
                           seeds[0], losses.data()) == STLM_OK)
    return true;
  error = stlm_error_message(model);
  return false;
}

class NativeEngine : public TrainEngine {
public:
  explicit NativeEngine(const NativeOptions &o) : opener(o) {}
  ~NativeEngine() override { stlm_close(model); }

  std::string describe() const override {
    return "the native artifact in " + opener.directory();
  }

  bool prepare(const ModelSpec &spec, std::string &error) override {
    bool unsupported = false;
    return open(spec, error, unsupported);
  }
  /// prepare(), saying whether stlm-compile cannot compile `spec` yet.
  bool open(const ModelSpec &spec, std::string &error, bool &unsupported) {
    model = opener.open(spec, error, unsupported);
    return model != nullptr;
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
  bool loadTeacher(const ModelSpec &spec, std::string &error) override {
    return loadTeacherInto(model, spec, error);
  }
  bool setStep(int64_t step, std::string &error) override {
    return check(stlm_set_step(model, step), error);
  }
  bool trainStep(const std::vector<std::vector<ref::Tensor<float>>> &micro,
                 float &loss, float &norm, float &lr,
                 std::string &error) override {
    if (static_cast<int64_t>(micro.size()) != stlm_accumulate(model)) {
      error = "the compiled model takes " +
              std::to_string(stlm_accumulate(model)) +
              " micro-batches per step, not " + std::to_string(micro.size());
      return false;
    }
    // The step's micro-batches one after the other, each with its mask
    // seed when the objective masks.
    std::vector<int32_t> tokens, targets, seeds;
    for (const std::vector<ref::Tensor<float>> &m : micro) {
      if (!batchSeed(m, seeds, error))
        return false;
      tokens.insert(tokens.end(), m[0].i.begin(), m[0].i.end());
      if (const int32_t *t = targetsOf(m))
        targets.insert(targets.end(), t, t + m[1].i.size());
    }
    stlm_step_result r;
    if (!check(stlm_train_step_seeded(
                   model, tokens.data(),
                   targets.empty() ? nullptr : targets.data(), seeds.data(),
                   &r),
               error))
      return false;
    loss = r.loss, norm = r.grad_norm, lr = r.lr;
    return true;
  }
  bool evalLoss(const std::vector<ref::Tensor<float>> &args,
                std::vector<float> &losses, std::string &error) override {
    return evalObjectives(model, args, losses, error);
  }
  bool joinRanks(Collective &ranks, std::string &error) override {
    return check(stlm_set_allreduce(model, ranks.size(), &allreduceHook,
                                    &ranks),
                 error);
  }
  std::string computeSignature() const override {
    return opener.computeSignature();
  }

private:
  /// The runtime's all-reduce hook: the ranks' in-place sum. An MPI
  /// failure's message goes to stderr here (the runtime's error says only
  /// that the hook failed).
  static int allreduceHook(float *data, size_t count, void *user) {
    std::string error;
    if (static_cast<Collective *>(user)->allreduceSum(data, count, error))
      return 0;
    std::fprintf(stderr, "stlm-run: all-reduce: %s\n", error.c_str());
    return 1;
  }

  bool check(stlm_status s, std::string &error) {
    if (s == STLM_OK)
      return true;
    error = stlm_error_message(model);
    return false;
  }

  ArtifactOpener opener;
  stlm_model *model = nullptr;
};

/// The fallback's note: why `spec` runs on the reference evaluator.
void noteFallback(const NativeOptions &options, const ModelSpec &spec,
                  const std::string &why, const char *doing) {
  if (options.notes)
    std::fprintf(options.notes,
                 "note: the native path cannot compile '%s' yet (%s); %s "
                 "with the reference evaluator\n",
                 spec.name.c_str(), why.c_str(), doing);
}

/// The native engine, or, for a spec stlm-compile cannot compile yet, the
/// reference engine.
class FallbackEngine : public TrainEngine {
public:
  explicit FallbackEngine(const NativeOptions &o) : opt(o) {}

  std::string describe() const override {
    return inner ? inner->describe() : "the native artifact";
  }
  bool prepare(const ModelSpec &spec, std::string &error) override {
    auto native = std::make_unique<NativeEngine>(opt);
    bool unsupported = false;
    if (native->open(spec, error, unsupported)) {
      inner = std::move(native);
      return true;
    }
    if (!unsupported)
      return false;
    noteFallback(opt, spec, error, "training");
    error.clear();
    inner = referenceEngine();
    return inner->prepare(spec, error);
  }
  bool setTensor(const std::string &name, const std::vector<int64_t> &shape,
                 const std::vector<float> &values,
                 std::string &error) override {
    return inner->setTensor(name, shape, values, error);
  }
  bool getTensor(const std::string &name, std::vector<float> &values,
                 std::string &error) override {
    return inner->getTensor(name, values, error);
  }
  bool setStep(int64_t step, std::string &error) override {
    return inner->setStep(step, error);
  }
  bool loadTeacher(const ModelSpec &spec, std::string &error) override {
    return inner->loadTeacher(spec, error);
  }
  bool trainStep(const std::vector<std::vector<ref::Tensor<float>>> &micro,
                 float &loss, float &norm, float &lr,
                 std::string &error) override {
    return inner->trainStep(micro, loss, norm, lr, error);
  }
  bool evalLoss(const std::vector<ref::Tensor<float>> &args,
                std::vector<float> &losses, std::string &error) override {
    return inner->evalLoss(args, losses, error);
  }
  bool joinRanks(Collective &ranks, std::string &error) override {
    return inner->joinRanks(ranks, error);
  }
  std::string computeSignature() const override {
    return inner->computeSignature();
  }

private:
  NativeOptions opt;
  std::unique_ptr<TrainEngine> inner;
};

/// The compiled model of a checkpoint, its weights loaded; closes itself.
struct LoadedNative {
  stlm_model *model = nullptr;
  ~LoadedNative() { stlm_close(model); }

  /// False with `error` set (and `unsupported` when stlm-compile cannot
  /// compile the spec yet).
  bool open(const std::string &checkpoint, const ModelSpec &spec,
            const NativeOptions &options, std::string &error,
            bool &unsupported) {
    ArtifactOpener opener(options);
    model = opener.open(spec, error, unsupported);
    if (!model)
      return false;
    if (stlm_load(model, checkpoint.c_str()) != STLM_OK) {
      error = stlm_error_message(model);
      return false;
    }
    return true;
  }
};

} // namespace

std::unique_ptr<TrainEngine> nativeEngine(const NativeOptions &options) {
  if (options.fallback)
    return std::make_unique<FallbackEngine>(options);
  return std::make_unique<NativeEngine>(options);
}

int evaluateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const EvalData &what, const NativeOptions &options,
                   FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  std::string error;
  Feed feed;
  TextData data;
  LoadedNative m;
  bool unsupported = false;
  // The data is checked before anything is compiled.
  if (!loadValidation(spec, what, feed, data, error))
    return fail(error);
  if (!m.open(checkpoint, spec, options, error, unsupported)) {
    if (!unsupported)
      return fail(error);
    noteFallback(options, spec, error, "evaluating");
    return evaluateWithReference(checkpoint, what, out, err);
  }
  if (!loadTeacherInto(m.model, spec, error))
    return fail(error);
  BatchLoss loss = [&](const std::vector<ref::Tensor<float>> &args,
                       std::vector<float> &l, std::string &e) {
    return evalObjectives(m.model, args, l, e);
  };
  if (!reportValidation(spec, what, feed, data, loss, out, error))
    return fail(error);
  return 0;
}

int entropyNative(const EntropyOptions &o, const ModelSpec &spec,
                  const NativeOptions &options, FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  std::string error;
  std::vector<uint8_t> text;
  // The text is checked before anything is compiled.
  if (!readEntropyText(o, spec, text, error))
    return fail(error);
  LoadedNative m;
  bool unsupported = false;
  if (!m.open(o.checkpoint, spec, options, error, unsupported)) {
    if (!unsupported)
      return fail(error);
    noteFallback(options, spec, error, "scoring");
    return entropyWithReference(o, out, err);
  }
  EntropyModel em{
      stlm_batch(m.model), stlm_context(m.model), stlm_vocab(m.model),
      [&](const std::vector<int32_t> &tokens, std::vector<float> &logits,
          std::string &e) {
        logits.resize(stlm_logits_size(m.model));
        if (stlm_logits(m.model, tokens.data(), logits.data()) == STLM_OK)
          return true;
        e = stlm_error_message(m.model);
        return false;
      }};
  return writeEntropyStarts(o, text, em, out, err);
}

int generateNative(const std::string &checkpoint, const ModelSpec &spec,
                   const GenerateOptions &o, const NativeOptions &native,
                   FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  std::vector<int32_t> prompt;
  std::string problem = generationProblem(spec, o, prompt);
  if (!problem.empty())
    return fail(problem);
  if (o.batch > 1 && native.device != "cpu")
    return fail("--batch runs on the CPU (--device cpu): " + native.device +
                " artifacts have no batched generation yet");
  // Samples together: an artifact with batched generation of o.batch.
  NativeOptions options = native;
  if (o.batch > 1)
    options.decodeBatch = o.batch;
  std::string error;
  LoadedNative m;
  bool unsupported = false;
  if (!m.open(checkpoint, spec, options, error, unsupported)) {
    if (!unsupported)
      return fail(error);
    noteFallback(options, spec, error, "generating");
    return generateWithReference(checkpoint, o, out, err);
  }
  stlm_sampling sampling = toCSampling(o.sampling, o.seed);
  auto write = [](int32_t token, void *file) {
    unsigned char byte = static_cast<unsigned char>(token);
    std::fwrite(&byte, 1, 1, static_cast<FILE *>(file));
    std::fflush(static_cast<FILE *>(file));
    return 0;
  };
  auto start = std::chrono::steady_clock::now();
  std::vector<std::string> texts = o.samplePrompts();
  if (texts.size() > 1 || !o.prompts.empty()) {
    // Each sample's prompt as ids, and its text as it comes.
    std::vector<std::vector<int32_t>> ids;
    for (const std::string &t : texts)
      ids.emplace_back(t.begin(), t.end());
    std::vector<std::string> samples(texts.size());
    std::vector<const int32_t *> prompts;
    std::vector<size_t> lens;
    for (const auto &p : ids) {
      prompts.push_back(p.data());
      lens.push_back(p.size());
    }
    if (o.batch > 1) {
      auto collect = [](size_t i, int32_t token, void *all) {
        (*static_cast<std::vector<std::string> *>(all))[i].push_back(
            static_cast<char>(token));
        return 0;
      };
      if (stlm_generate_batch(m.model, samples.size(), prompts.data(),
                              lens.data(), static_cast<size_t>(o.tokens),
                              &sampling, collect, &samples, nullptr) != STLM_OK)
        return fail(stlm_error_message(m.model));
    } else {
      // One at a time, seed + i each.
      auto append = [](int32_t token, void *text) {
        static_cast<std::string *>(text)->push_back(static_cast<char>(token));
        return 0;
      };
      for (size_t i = 0; i < samples.size(); ++i) {
        stlm_sampling each = toCSampling(o.sampling, o.seed + i);
        if (stlm_generate(m.model, prompts[i], lens[i],
                          static_cast<size_t>(o.tokens), &each, append,
                          &samples[i], nullptr) != STLM_OK)
          return fail(stlm_error_message(m.model));
      }
    }
    printSamples(samples, o, out);
    printGenerated(o.tokens * static_cast<int64_t>(samples.size()), start, err);
    return 0;
  }
  size_t produced = 0;
  if (stlm_generate(m.model, prompt.data(), prompt.size(),
                    static_cast<size_t>(o.tokens), &sampling, write, out,
                    &produced) != STLM_OK)
    return fail(stlm_error_message(m.model));
  printGenerated(static_cast<int64_t>(produced), start, err);
  return 0;
}

} // namespace stlm
