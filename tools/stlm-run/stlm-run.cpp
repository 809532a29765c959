//===- stlm-run.cpp - train, evaluate, generate, initialise ---------------===//
//
//   stlm-run init SPEC.yaml -o W.safetensors [--seed N]
//       MODEL_SPEC's initialisation, deterministic in N (default: the
//       spec's train.seed); the spec is stored in __metadata__.
//   stlm-run check W.safetensors [--spec SPEC.yaml]
//       validates the file and its tensors against the spec (by default the
//       one stored in the file), listing every mismatch.
//   stlm-run train SPEC.yaml --data FILE [--backend auto|native|reference]
//       [--artifact DIR] [--threads N] [--device cpu|cuda] [--steps N]
//       [--eval-every K] [--eval-windows N] [--log F.jsonl]
//       [--resume W.safetensors] [--save W.safetensors] [--save-every N]
//       [--seed N] [--quiet]
//       trains on a text file (90/10 split, seeded windows) with a progress
//       line and an optional JSON-lines log; see docs/training.md. The
//       native backend compiles the spec with stlm-compile into DIR or a
//       cache and runs the artifact; auto (the default) uses it when the
//       native path supports the spec and the reference evaluator (with a
//       note saying why) when not.
//   stlm-run eval W.safetensors --data FILE [--eval-windows N] [BACKEND]
//       the validation loss of a checkpoint on a text file.
//   stlm-run generate W.safetensors [--prompt TEXT] [--tokens N]
//       [--temperature T] [--top-k K] [--top-p P] [--seed N] [BACKEND]
//       continues the prompt, streaming bytes to stdout; natively with the
//       artifact's KV cache.
//   BACKEND is --backend auto|native|reference [--artifact DIR]
//   [--threads N] [--device cpu|cuda], as for train; eval and generate
//   compile the spec stored in the checkpoint. --device cuda compiles with
//   stlm-compile --target=cuda and runs on the GPU (no fallback).
//
// Errors go to stderr as `stlm-run: error: ...`; the exit status is 1 for
// bad input, 2 for bad usage.
//
//===----------------------------------------------------------------------===//

#include "frontend/Params.h"
#include "support/SafeTensors.h"
#include "frontend/Spec.h"
#include "frontend/Weights.h"
#include "train/NativeEngine.h"
#include "train/ReferenceEngine.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char *kUsage =
    "usage: stlm-run init SPEC.yaml -o W.safetensors [--seed N]\n"
    "       stlm-run check W.safetensors [--spec SPEC.yaml]\n"
    "       stlm-run train SPEC.yaml --data FILE\n"
    "                [--backend auto|native|reference]\n"
    "                [--artifact DIR] [--threads N] [--device cpu|cuda] [--steps N] [--eval-every K] [--eval-windows N]\n"
    "                [--log F.jsonl] [--resume W] [--save W] [--save-every N]\n"
    "                [--seed N] [--quiet]\n"
    "       stlm-run eval W.safetensors --data FILE [--eval-windows N]\n"
    "                [--backend auto|native|reference] [--artifact DIR] [--threads N]\n"
    "                [--device cpu|cuda]\n"
    "       stlm-run generate W.safetensors [--prompt TEXT] [--tokens N]\n"
    "                [--temperature T] [--top-k K] [--top-p P] [--seed N]\n"
    "                [--backend auto|native|reference] [--artifact DIR] [--threads N]\n"
    "                [--device cpu|cuda]\n";

/// The path of tool `name` installed beside this stlm-run.
std::string besideMe(const char *argv0, const char *name) {
  std::string self =
      llvm::sys::fs::getMainExecutable(argv0, reinterpret_cast<void *>(&besideMe));
  llvm::SmallString<256> p(llvm::sys::path::parent_path(self));
  llvm::sys::path::append(p, name);
  return std::string(p);
}

int usage(const std::string &msg) {
  std::fprintf(stderr, "stlm-run: error: %s\n%s", msg.c_str(), kUsage);
  return 2;
}

int fail(const std::string &msg) {
  std::fprintf(stderr, "stlm-run: error: %s\n", msg.c_str());
  return 1;
}

/// A non-negative decimal integer.
bool parseCount(const std::string &s, int64_t &out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    return false;
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0')
    return false;
  out = v;
  return true;
}

/// A finite decimal number.
bool parseNumber(const std::string &s, double &out) {
  if (s.empty())
    return false;
  char *end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v))
    return false;
  out = v;
  return true;
}

/// Command-line arguments: positionals and `--key value` / `-o value`.
struct Args {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> options;
  std::string error;

  /// `known` options take a value (`--key value` or `--key=value`);
  /// `flags` take none.
  static Args parse(int argc, char **argv, int first,
                    const std::vector<std::string> &known,
                    const std::vector<std::string> &flags = {}) {
    Args a;
    for (int i = first; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg.size() > 1 && arg[0] == '-') {
        std::string value;
        bool inlineValue = false;
        size_t eq = arg.find('=');
        if (eq != std::string::npos && arg.compare(0, 2, "--") == 0) {
          value = arg.substr(eq + 1);
          arg.resize(eq);
          inlineValue = true;
        }
        auto in = [&](const std::vector<std::string> &set) {
          for (const std::string &k : set)
            if (arg == k)
              return true;
          return false;
        };
        for (const auto &kv : a.options)
          if (kv.first == arg) {
            a.error = "option '" + arg + "' is given twice";
            return a;
          }
        if (in(flags)) {
          if (inlineValue) {
            a.error = "option '" + arg + "' takes no value";
            return a;
          }
          a.options.emplace_back(arg, "");
          continue;
        }
        if (!in(known)) {
          a.error = "unknown option '" + arg + "'";
          return a;
        }
        if (!inlineValue) {
          if (i + 1 >= argc) {
            a.error = "option '" + arg + "' needs a value";
            return a;
          }
          value = argv[++i];
        }
        a.options.emplace_back(arg, value);
      } else {
        a.positional.push_back(arg);
      }
    }
    return a;
  }
  const std::string *get(const std::string &key) const {
    for (const auto &kv : options)
      if (kv.first == key)
        return &kv.second;
    return nullptr;
  }
  /// Reads option `key` as a non-negative integer into `out` when given.
  /// False, with `error` set, when it is given but malformed.
  bool count(const std::string &key, int64_t &out) {
    const std::string *v = get(key);
    if (v && !parseCount(*v, out)) {
      error = key + " needs a non-negative integer, got '" + *v + "'";
      return false;
    }
    return true;
  }
  /// The same for a finite number.
  bool number(const std::string &key, double &out) {
    const std::string *v = get(key);
    if (v && !parseNumber(*v, out)) {
      error = key + " needs a number, got '" + *v + "'";
      return false;
    }
    return true;
  }
};

bool loadSpec(const std::string &path, stlm::ModelSpec &spec) {
  stlm::SpecResult r = stlm::readSpecFile(path);
  for (const stlm::SpecDiagnostic &d : r.diagnostics)
    std::fprintf(stderr, "%s\n", d.str().c_str());
  if (!r.spec)
    return false;
  spec = *r.spec;
  return true;
}

int runInit(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, {"-o", "--seed"});
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("init takes exactly one spec file");
  const std::string *out = a.get("-o");
  if (!out)
    return usage("init needs an output file (-o W.safetensors)");
  stlm::ModelSpec spec;
  if (!loadSpec(a.positional[0], spec))
    return 1;
  int64_t seed = spec.train.seed;
  if (!a.count("--seed", seed))
    return usage(a.error);
  std::string error;
  if (!stlm::writeInitialWeights(spec, static_cast<uint64_t>(seed), *out,
                                 error))
    return fail(error);
  stlm::ParamTable table = stlm::buildParamTable(spec);
  std::printf("%s: %zu tensors, %lld parameters of '%s' (seed %llu)\n",
              out->c_str(), table.params.size(),
              static_cast<long long>(table.uniqueCount()), spec.name.c_str(),
              static_cast<unsigned long long>(seed));
  return 0;
}

int runCheck(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, {"--spec"});
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("check takes exactly one safetensors file");
  const std::string &path = a.positional[0];
  std::string error;
  std::unique_ptr<stlm::SafeTensorsFile> file =
      stlm::SafeTensorsFile::open(path, error);
  if (!file)
    return fail(error);

  stlm::ModelSpec spec;
  if (const std::string *specPath = a.get("--spec")) {
    if (!loadSpec(*specPath, spec))
      return 1;
  } else {
    std::optional<stlm::SpecResult> r = stlm::storedSpec(*file, path);
    if (!r)
      return fail(path + ": no model spec in __metadata__." +
                  stlm::kSpecKey + "; pass --spec SPEC.yaml");
    if (!r->spec) {
      for (const stlm::SpecDiagnostic &d : r->diagnostics)
        std::fprintf(stderr, "%s\n", d.str().c_str());
      return 1;
    }
    spec = *r->spec;
  }

  stlm::ParamTable table = stlm::buildParamTable(spec);
  std::vector<std::string> problems = stlm::checkWeights(table, *file);
  if (!problems.empty()) {
    std::string msg = path + " does not match model '" + spec.name + "' (" +
                      std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      msg += "\n  " + p;
    return fail(msg);
  }
  std::printf("%s: OK: %zu tensors, %lld parameters match '%s'\n",
              path.c_str(), file->tensors().size(),
              static_cast<long long>(table.uniqueCount()), spec.name.c_str());
  return 0;
}

/// The backend options every compute command takes.
const std::vector<std::string> kBackendOptions = {"--backend", "--artifact",
                                                  "--threads", "--device"};
std::vector<std::string> withBackend(std::vector<std::string> options) {
  options.insert(options.end(), kBackendOptions.begin(),
                 kBackendOptions.end());
  return options;
}

/// Reads --backend, --artifact and --threads; false after a usage error.
bool backendOptions(Args &a, const char *argv0, std::string &backend,
                    stlm::NativeOptions &native, int &status) {
  backend = a.get("--backend") ? *a.get("--backend") : "auto";
  if (backend != "reference" && backend != "native" && backend != "auto") {
    status = usage("unknown backend '" + backend +
                   "' (available: auto, native, reference)");
    return false;
  }
  if (backend == "reference" &&
      (a.get("--artifact") || a.get("--threads") || a.get("--device"))) {
    status = usage("--artifact, --threads and --device are options of the "
                   "native backend");
    return false;
  }
  native.device = a.get("--device") ? *a.get("--device") : "cpu";
  if (native.device != "cpu" && native.device != "cuda") {
    status = usage("unknown device '" + native.device +
                   "' (available: cpu, cuda)");
    return false;
  }
  int64_t threads = 0;
  if (!a.count("--threads", threads)) {
    status = usage(a.error);
    return false;
  }
  if (const std::string *v = a.get("--artifact"))
    native.artifactDir = *v;
  native.threads = static_cast<int>(std::min<int64_t>(threads, 1024));
  native.compiler = besideMe(argv0, "stlm-compile");
  // `auto`: the native engine, and the reference one (with a note saying
  // why) for a spec stlm-compile cannot compile yet.
  // On a GPU there is nothing to fall back to: what the cuda target
  // cannot compile is an error.
  native.fallback = backend == "auto" && native.device == "cpu";
  return true;
}

/// eval and generate: the backend options and the spec stored in the
/// checkpoint (the one positional argument); false after an error.
bool checkpointOptions(Args &a, const char *argv0, std::string &backend,
                       stlm::NativeOptions &native, stlm::ModelSpec &spec,
                       int &status) {
  if (!backendOptions(a, argv0, backend, native, status))
    return false;
  std::string error;
  if (stlm::checkpointSpec(a.positional[0], spec, error))
    return true;
  status = fail(error);
  return false;
}

int runTrain(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2,
                       withBackend({"--data", "--steps", "--eval-every",
                                    "--eval-windows", "--log", "--resume",
                                    "--save", "--save-every", "--seed"}),
                       {"--quiet"});
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("train takes exactly one spec file");
  const std::string *data = a.get("--data");
  if (!data)
    return usage("train needs a text file (--data FILE)");
  std::string backend;
  stlm::NativeOptions native;
  int status = 0;
  if (!backendOptions(a, argv[0], backend, native, status))
    return status;
  stlm::TrainOptions opt;
  opt.dataPath = *data;
  int64_t seed = 0;
  if (!a.count("--steps", opt.steps) ||
      !a.count("--eval-every", opt.evalEvery) ||
      !a.count("--eval-windows", opt.evalWindows) ||
      !a.count("--save-every", opt.saveEvery) || !a.count("--seed", seed))
    return usage(a.error);
  if (a.get("--seed")) {
    opt.seed = static_cast<uint64_t>(seed);
    opt.seedGiven = true;
  }
  if (const std::string *v = a.get("--log"))
    opt.logPath = *v;
  if (const std::string *v = a.get("--resume"))
    opt.resumePath = *v;
  if (const std::string *v = a.get("--save"))
    opt.savePath = *v;
  if (opt.saveEvery > 0 && opt.savePath.empty())
    return usage("--save-every needs --save PATH");
  if (a.get("--quiet"))
    opt.progress = nullptr;
  stlm::ModelSpec spec;
  if (!loadSpec(a.positional[0], spec))
    return 1;
  if (backend == "reference")
    return stlm::trainWithReference(spec, opt, stderr);
  native.specPath = a.positional[0];
  native.progress = opt.progress;
  native.notes = opt.progress;
  std::unique_ptr<stlm::TrainEngine> engine = stlm::nativeEngine(native);
  return stlm::train(spec, opt, *engine, stderr);
}

int runEval(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2,
                       withBackend({"--data", "--eval-windows"}));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("eval takes exactly one checkpoint");
  const std::string *data = a.get("--data");
  if (!data)
    return usage("eval needs a text file (--data FILE)");
  int64_t windows = 0;
  if (!a.count("--eval-windows", windows))
    return usage(a.error);
  std::string backend;
  stlm::NativeOptions native;
  stlm::ModelSpec spec;
  int status = 0;
  if (!checkpointOptions(a, argv[0], backend, native, spec, status))
    return status;
  const std::string &checkpoint = a.positional[0];
  if (backend == "reference")
    return stlm::evaluateWithReference(checkpoint, *data, windows, stdout,
                                       stderr);
  return stlm::evaluateNative(checkpoint, spec, *data, windows, native,
                              stdout, stderr);
}

int runGenerate(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2,
                       withBackend({"--prompt", "--tokens", "--temperature",
                                    "--top-k", "--top-p", "--seed"}));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("generate takes exactly one checkpoint");
  stlm::GenerateOptions o;
  if (const std::string *v = a.get("--prompt"))
    o.prompt = *v;
  int64_t seed = 0;
  if (!a.count("--tokens", o.tokens) || !a.count("--top-k", o.sampling.topK) ||
      !a.count("--seed", seed) ||
      !a.number("--temperature", o.sampling.temperature) ||
      !a.number("--top-p", o.sampling.topP))
    return usage(a.error);
  o.seed = static_cast<uint64_t>(seed);
  std::string backend;
  stlm::NativeOptions native;
  stlm::ModelSpec spec;
  int status = 0;
  if (!checkpointOptions(a, argv[0], backend, native, spec, status))
    return status;
  const std::string &checkpoint = a.positional[0];
  // Bad requests are refused before anything is compiled.
  std::vector<int32_t> prompt;
  std::string problem = stlm::generationProblem(spec, o, prompt);
  if (!problem.empty())
    return fail(problem);
  if (backend == "reference")
    return stlm::generateWithReference(checkpoint, o, stdout, stderr);
  return stlm::generateNative(checkpoint, spec, o, native, stdout, stderr);
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2)
    return usage("no command given");
  std::string cmd = argv[1];
  if (cmd == "init")
    return runInit(argc, argv);
  if (cmd == "check")
    return runCheck(argc, argv);
  if (cmd == "train")
    return runTrain(argc, argv);
  if (cmd == "eval")
    return runEval(argc, argv);
  if (cmd == "generate")
    return runGenerate(argc, argv);
  if (cmd == "-h" || cmd == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  return usage("unknown command '" + cmd + "'");
}
