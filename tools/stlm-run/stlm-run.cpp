//===- stlm-run.cpp - train, evaluate, generate, initialise ---------------===//
//
// stlm-run COMMAND ...: init, check, train, eval, generate, entropy,
// export. Each command, its options and their defaults are in kCommands
// below, which is also what `stlm-run --help` and `stlm-run COMMAND
// --help` print; training is described in docs/training.md. eval,
// generate and entropy compile the spec stored in the checkpoint.
//
// Errors go to stderr as `stlm-run: error: ...`; the exit status is 1 for
// bad input, 2 for bad usage.
//
//===----------------------------------------------------------------------===//

#include "export/Export.h"
#include "frontend/Params.h"
#include "frontend/Quantized.h"
#include "frontend/Spec.h"
#include "frontend/Weights.h"
#include "support/SafeTensors.h"
#include "support/Version.h"
#include "train/Inference.h"
#include "train/MpiCollective.h"
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

/// One option of a command: `--name VALUE` (or `--name=VALUE`), or a flag
/// when `value` is null. `help` says what it does and its default.
struct Option {
  const char *name;
  const char *value;
  const char *help;
};

/// The options every compute command takes (train, eval, generate).
const Option kBackend[] = {
    {"--backend", "auto|native|reference",
     "what computes: native (the model compiled by stlm-compile), reference "
     "(the plain reference evaluator, slow, the oracle), or auto: native "
     "when stlm-compile can compile the spec, else reference with a note "
     "saying why. Default: auto"},
    {"--artifact", "DIR",
     "compile the native artifact into DIR, or reuse the one there. "
     "Default: a cache directory per spec and compiler, under "
     "$XDG_CACHE_HOME/stlm (else ~/.cache/stlm)"},
    {"--threads", "N", "kernel threads of the native artifact. Default: 0, "
                       "every core"},
    {"--device", "cpu|cuda",
     "where the native artifact runs: cpu, or cuda (compiled with "
     "stlm-compile --target=cuda, run on the first NVIDIA GPU; never falls "
     "back). Default: cpu"},
};

/// A command: its synopsis, what it does, its options.
struct Command {
  const char *name;
  const char *synopsis; // after "stlm-run "
  const char *summary;
  std::vector<Option> options;
  bool backend; // takes kBackend too
};

const Command kCommands[] = {
    {"init",
     "init SPEC.yaml -o W.safetensors [--seed N]",
     "Writes a model's initial weights (MODEL_SPEC's initialisation, "
     "deterministic in the seed) with the spec in the file's metadata.",
     {{"-o", "W.safetensors", "the checkpoint to write (required)"},
      {"--seed", "N", "initialisation seed. Default: the spec's train.seed"}},
     false},
    {"check",
     "check W.safetensors [--spec SPEC.yaml]",
     "Validates a checkpoint and its tensors against a spec, listing every "
     "mismatch.",
     {{"--spec", "SPEC.yaml",
       "the spec to check against. Default: the one stored in the file"}},
     false},
    {"train",
     "train SPEC.yaml --data FILE [options]",
     "Trains a model on a text file, its bytes the tokens: windows drawn "
     "with a seed from the first 90 %, validation on the last 10 %. Shows a "
     "progress line (step, loss, bytes/s, ETA); see docs/training.md.",
     {{"--data", "FILE", "the text to train on (required)"},
      {"--chunk-starts", "FILE",
       "the chunk starts of the text for a byte-pool model with 'given' "
       "chunking (required there, refused elsewhere): ascending byte "
       "offsets, one per line, '#' comments; stlm-run entropy writes one"},
      {"--steps", "N",
       "optimizer steps in all, counting those a --resume checkpoint has "
       "taken. Default: the spec's train.steps"},
      {"--eval-every", "K",
       "validate every K steps. Default: 0, at the start and the end only"},
      {"--eval-windows", "N",
       "validation windows per evaluation, whole batches. Default: 256; 0: "
       "the whole validation split"},
      {"--log", "F.jsonl",
       "append a JSON line per step and per evaluation (scripts/plot draws "
       "them). Default: none"},
      {"--resume", "W.safetensors",
       "continue from a checkpoint: weights, AdamW moments, step and seed"},
      {"--save", "W.safetensors",
       "write a checkpoint at the end (atomically: a temporary file, then "
       "a rename). Default: none"},
      {"--save-every", "N", "also save every N steps (needs --save)"},
      {"--max-time", "SECONDS",
       "stop after the step that passes this much training time, then "
       "evaluate and save as at the last step (the learning rate follows "
       "the spec's schedule either way). Default: 0, no limit"},
      {"--seed", "N",
       "initialisation and data-order seed. Default: the spec's train.seed"},
      {"--quiet", nullptr, "no progress line and no notes"}},
     true},
    {"eval",
     "eval W.safetensors --data FILE [options]",
     "Prints a checkpoint's validation loss (nats; with bits per byte where "
     "the objective defines them) on the last 10 % of a text file; the "
     "model is the spec stored in the checkpoint.",
     {{"--data", "FILE", "the text (required)"},
      {"--chunk-starts", "FILE",
       "the chunk starts of the text for a byte-pool model with 'given' "
       "chunking (required there, refused elsewhere): ascending byte "
       "offsets, one per line, '#' comments; stlm-run entropy writes one"},
      {"--eval-windows", "N",
       "validation windows, whole batches. Default: 0, the whole "
       "validation split"}},
     true},
    {"generate",
     "generate W.safetensors [options]",
     "Continues a prompt with a checkpoint's model, streaming bytes to "
     "stdout (natively with the KV cache); a byte-pool model generates a "
     "chunk at a time.",
     {{"--prompt", "TEXT", "the text to continue. Default: a newline"},
      {"--tokens", "N", "bytes to generate. Default: 200"},
      {"--temperature", "T",
       "sampling temperature; 0 or less: greedy. Default: 1"},
      {"--top-k", "K",
       "sample among the K most likely bytes. Default: 0, "
       "all"},
      {"--top-p", "P",
       "sample among the smallest set with probability mass >= P, in "
       "(0, 1]. Default: 1, all"},
      {"--seed", "N",
       "sampling seed: the same seed, prompt and checkpoint "
       "give the same text. Default: 0"},
      {"--batch", "N",
       "N samples of the prompt generated together (sample i with seed "
       "+ i; token models on the CPU), printed one after another after "
       "'=== sample i of N (seed S) ===' lines; with --prompts, how many "
       "of them run together. Default: 1 (with --prompts: their number, "
       "at most 8)"},
      {"--prompts", "FILE",
       "a continuation of each line of FILE (one prompt a line), sample i "
       "with seed + i, printed as --batch prints them. Instead of "
       "--prompt"}},
     true},
    {"entropy",
     "entropy W.safetensors --data FILE -o FILE.starts (--threshold BITS | "
     "--mean-bytes M) [options]",
     "Writes the chunk starts of a text for 'given' chunking (the side file "
     "train and eval read with --chunk-starts) where a token model is "
     "surprised: the rule of Meta's Byte Latent Transformer. A chunk starts "
     "before each byte whose prediction's entropy (bits) is above the "
     "threshold, or with --relative rose by more than it over the previous "
     "byte's; a byte inside a UTF-8 character never starts one. Every "
     "prediction sees at least half the model's context. See "
     "docs/training.md.",
     {{"--data", "FILE", "the text (required); the offsets are into it"},
      {"-o", "FILE.starts",
       "the side file to write (required), atomically; never the text or "
       "the checkpoint"},
      {"--threshold", "BITS", "the entropy a byte's prediction must exceed"},
      {"--mean-bytes", "M",
       "instead of --threshold: the global threshold whose chunks hold M "
       "bytes on average (M > 1)"},
      {"--relative", nullptr,
       "start where the entropy rose by more than --threshold over the "
       "previous byte's"},
      {"--quiet", nullptr, "no progress line"}},
     true},
    {"export",
     "export W.safetensors --format gguf|hf -o OUT [options]",
     "Writes a token model's checkpoint as a llama model: one GGUF file "
     "for llama.cpp, or a directory (config.json, model.safetensors) that "
     "transformers' LlamaForCausalLM loads. Shared layers are written per "
     "layer; byte-pool models, GELU FFNs and (without --merge-lora) LoRA "
     "deltas are refused. See docs/export.md.",
     {{"--format", "gguf|hf", "what to write (required)"},
      {"-o", "OUT",
       "the GGUF file, or the transformers directory (created "
       "when missing) (required)"},
      {"--type", "f32|f16|q8_0|q4_0",
       "gguf: the matrices' type (q8_0 and q4_0 in llama.cpp's blocks of "
       "32); norms stay f32, and a matrix whose rows are not a multiple of "
       "32 stays f32 under q8_0 and q4_0. Default: f32"},
      {"--merge-lora", nullptr,
       "write each LoRA layer's merged weights (shared + b·a)"}},
     false},
    {"quantize",
     "quantize W.safetensors -o Wq.safetensors --to int8|int4 [--group N]",
     "Writes a checkpoint with its linear layers' weights quantized to int8 "
     "or int4, a scale per group of inputs (embeddings, the head, norms and "
     "LoRA factors stay f32; optimizer state is dropped), and reports the "
     "sizes and the largest relative error. See docs/formats.md.",
     {{"-o", "Wq.safetensors", "the quantized checkpoint (required)"},
      {"--to", "int8|int4", "the integer type (required)"},
      {"--group", "N",
       "inputs per scale; must divide every quantized weight's inputs. "
       "Default: 32"}},
     false},
};

const Command *findCommand(const std::string &name) {
  for (const Command &c : kCommands)
    if (name == c.name)
      return &c;
  return nullptr;
}

/// Every option of `c`.
std::vector<Option> optionsOf(const Command &c) {
  std::vector<Option> all = c.options;
  if (c.backend)
    all.insert(all.end(), std::begin(kBackend), std::end(kBackend));
  return all;
}

/// `text` wrapped at 78 columns, each line indented by `indent` spaces.
std::string wrap(const std::string &text, size_t indent) {
  std::string out, line(indent, ' ');
  size_t at = 0;
  while (at < text.size()) {
    size_t space = text.find(' ', at);
    std::string word =
        text.substr(at, space == std::string::npos ? std::string::npos
                                                   : space - at);
    at = space == std::string::npos ? text.size() : space + 1;
    if (line.size() > indent && line.size() + 1 + word.size() > 78) {
      out += line + "\n";
      line.assign(indent, ' ');
    }
    if (line.size() > indent)
      line += ' ';
    line += word;
  }
  return out + line + "\n";
}

std::string usageText() {
  std::string u = "usage:";
  for (const Command &c : kCommands)
    u += std::string(u == "usage:" ? " " : "       ") + "stlm-run " +
         c.synopsis + "\n";
  return u;
}

std::string helpText() {
  std::string h =
      "stlm-run: train, evaluate and generate with stlm models.\n\n" +
      usageText() +
      "\n`stlm-run COMMAND --help` describes each option of a command and "
      "its default.\n`stlm-run --version` prints the stlm version.\n\n"
      "commands:\n";
  for (const Command &c : kCommands) {
    h += "  " + std::string(c.name) + "\n" + wrap(c.summary, 4);
  }
  return h;
}

std::string commandHelp(const Command &c) {
  std::string h = std::string("usage: stlm-run ") + c.synopsis + "\n\n" +
                  wrap(c.summary, 0) + "\noptions:\n";
  for (const Option &o : optionsOf(c)) {
    h += "  " + std::string(o.name) +
         (o.value ? " " + std::string(o.value) : std::string()) + "\n";
    // The default on a line of its own.
    std::string help = o.help;
    size_t d = help.find(" Default: ");
    h += wrap(help.substr(0, d), 6);
    if (d != std::string::npos)
      h += wrap(help.substr(d + 1), 6);
  }
  h += "  --help\n" + wrap("print this help", 6);
  return h;
}

/// The path of tool `name` installed beside this stlm-run.
std::string besideMe(const char *argv0, const char *name) {
  std::string self =
      llvm::sys::fs::getMainExecutable(argv0, reinterpret_cast<void *>(&besideMe));
  llvm::SmallString<256> p(llvm::sys::path::parent_path(self));
  llvm::sys::path::append(p, name);
  return std::string(p);
}

int usage(const std::string &msg) {
  std::fprintf(stderr, "stlm-run: error: %s\n%s", msg.c_str(),
               usageText().c_str());
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

  /// `options` are those of the command: with a value (`--key value` or
  /// `--key=value`) or flags.
  static Args parse(int argc, char **argv, int first,
                    const std::vector<Option> &options) {
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
        const Option *known = nullptr;
        for (const Option &o : options)
          if (arg == o.name)
            known = &o;
        for (const auto &kv : a.options)
          if (kv.first == arg) {
            a.error = "option '" + arg + "' is given twice";
            return a;
          }
        if (known && !known->value) {
          if (inlineValue) {
            a.error = "option '" + arg + "' takes no value";
            return a;
          }
          a.options.emplace_back(arg, "");
          continue;
        }
        if (!known) {
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
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("init")));
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
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("check")));
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
  std::optional<stlm::quant::Format> quantized;
  if (!stlm::checkpointQuantization(*file, quantized, error))
    return fail(path + ": " + error);
  std::vector<std::string> problems =
      quantized ? stlm::checkQuantizedWeights(table, *file, *quantized)
                : stlm::checkWeights(table, *file);
  if (!problems.empty()) {
    std::string msg = path + " does not match model '" + spec.name + "' (" +
                      std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      msg += "\n  " + p;
    return fail(msg);
  }
  std::printf("%s: OK: %zu tensors, %lld parameters match '%s'%s\n",
              path.c_str(), file->tensors().size(),
              static_cast<long long>(table.uniqueCount()), spec.name.c_str(),
              quantized
                  ? (" (quantized: " + stlm::describe(*quantized) + ")").c_str()
                  : "");
  return 0;
}

int runQuantize(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("quantize")));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("quantize takes exactly one checkpoint");
  const std::string *out = a.get("-o");
  if (!out)
    return usage("quantize needs an output file (-o Wq.safetensors)");
  const std::string *to = a.get("--to");
  if (!to)
    return usage("quantize needs --to int8 or --to int4");
  std::optional<stlm::quant::Scheme> scheme = stlm::quant::parseScheme(*to);
  if (!scheme)
    return usage("unknown --to '" + *to + "' (available: int8, int4)");
  int64_t group = 32;
  if (!a.count("--group", group))
    return usage(a.error);
  stlm::quant::Format format{*scheme, group};
  if (group < 1 || (*scheme == stlm::quant::Scheme::Int4 && group % 2))
    return usage("--group: " + stlm::quant::groupProblem(format, group));
  stlm::QuantizeReport report;
  std::string error;
  if (!stlm::quantizeCheckpoint(a.positional[0], *out, format, report, error))
    return fail(error);
  std::printf("%s: %lld weights quantized (%s): %.2f MB -> %.2f MB; largest "
              "relative RMS error %.2f %% (%s)\n",
              out->c_str(), static_cast<long long>(report.weights),
              stlm::describe(format).c_str(), report.bytesIn / 1e6,
              report.bytesOut / 1e6, 100 * report.worstError,
              report.worstTensor.c_str());
  return 0;
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
  std::optional<stlm::quant::Format> quantized;
  if (!stlm::checkpointSpec(a.positional[0], spec, error, &quantized)) {
    status = fail(error);
    return false;
  }
  // A quantized checkpoint runs on an artifact compiled with its format
  // (stlm-compile --quantize), or on the reference evaluator.
  native.quantize = quantized;
  if (quantized && native.device == "cuda") {
    status =
        fail(a.positional[0] + " is quantized (" + stlm::describe(*quantized) +
             "): quantized models run on the CPU (--device cpu)");
    return false;
  }
  return true;
}

int runTrain(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("train")));
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
  if (const std::string *v = a.get("--chunk-starts"))
    opt.chunkStartsPath = *v;
  int64_t seed = 0;
  if (!a.count("--steps", opt.steps) ||
      !a.count("--eval-every", opt.evalEvery) ||
      !a.count("--eval-windows", opt.evalWindows) ||
      !a.count("--save-every", opt.saveEvery) || !a.count("--seed", seed))
    return usage(a.error);
  if (!a.number("--max-time", opt.maxSeconds))
    return usage(a.error);
  if (opt.maxSeconds < 0)
    return usage("--max-time needs a non-negative number of seconds");
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
  // Launched by mpirun with several ranks: data-parallel training, each
  // rank one process of this command (docs/data-parallel.md).
  std::string error;
  int ranks = stlm::launchedRanks(error);
  if (ranks < 0)
    return fail(error);
  std::unique_ptr<stlm::Collective> collective;
  if (ranks > 1) {
    if (backend == "reference")
      return fail("data-parallel training (" + std::to_string(ranks) +
                  " ranks) runs compiled artifacts; the reference backend "
                  "trains in one process");
    if (native.device != "cpu")
      return fail("data-parallel training runs on the CPU; --device " +
                  native.device + " trains in one process (multi-GPU "
                  "training is not there yet)");
    collective = stlm::startMpi(error);
    if (!collective)
      return fail(error);
    opt.collective = collective.get();
    native.dataParallel = true;
    // Rank 0 alone prints and logs.
    if (collective->rank() != 0) {
      opt.progress = nullptr;
      opt.logPath.clear();
    }
  }
  if (backend == "reference")
    return stlm::trainWithReference(spec, opt, stderr);
  native.specPath = a.positional[0];
  native.progress = opt.progress;
  native.notes = opt.progress;
  std::unique_ptr<stlm::TrainEngine> engine = stlm::nativeEngine(native);
  return stlm::train(spec, opt, *engine, stderr);
}

int runEval(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("eval")));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("eval takes exactly one checkpoint");
  const std::string *data = a.get("--data");
  if (!data)
    return usage("eval needs a text file (--data FILE)");
  stlm::EvalData what;
  what.path = *data;
  if (const std::string *v = a.get("--chunk-starts"))
    what.chunkStarts = *v;
  if (!a.count("--eval-windows", what.windows))
    return usage(a.error);
  std::string backend;
  stlm::NativeOptions native;
  stlm::ModelSpec spec;
  int status = 0;
  if (!checkpointOptions(a, argv[0], backend, native, spec, status))
    return status;
  const std::string &checkpoint = a.positional[0];
  if (backend == "reference")
    return stlm::evaluateWithReference(checkpoint, what, stdout, stderr);
  return stlm::evaluateNative(checkpoint, spec, what, native, stdout, stderr);
}

int runEntropy(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("entropy")));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("entropy takes exactly one checkpoint");
  stlm::EntropyOptions o;
  o.checkpoint = a.positional[0];
  const std::string *data = a.get("--data"), *out = a.get("-o");
  if (!data)
    return usage("entropy needs a text file (--data FILE)");
  if (!out)
    return usage("entropy needs the file to write (-o FILE)");
  o.dataPath = *data;
  o.outPath = *out;
  o.relative = a.get("--relative") != nullptr;
  if (!a.number("--threshold", o.threshold) ||
      !a.number("--mean-bytes", o.meanBytes))
    return usage(a.error);
  bool threshold = a.get("--threshold") != nullptr,
       mean = a.get("--mean-bytes") != nullptr;
  if (threshold == mean)
    return usage("entropy needs either --threshold BITS or --mean-bytes M");
  if (mean && o.relative)
    return usage("--mean-bytes chooses a global threshold; give --relative "
                 "a --threshold");
  if (mean && o.meanBytes <= 1)
    return usage("--mean-bytes needs a mean above 1 byte, got '" +
                 *a.get("--mean-bytes") + "'");
  if (a.get("--quiet"))
    o.progress = nullptr;
  std::string backend;
  stlm::NativeOptions native;
  stlm::ModelSpec spec;
  int status = 0;
  if (!checkpointOptions(a, argv[0], backend, native, spec, status))
    return status;
  if (spec.embedder.kind != stlm::EmbedderKind::Token)
    return fail("entropy scores bytes with a token model that predicts the "
                "next byte; '" +
                spec.name + "' is a byte-pool model");
  if (!o.progress)
    native.progress = native.notes = nullptr;
  if (backend == "reference")
    return stlm::entropyWithReference(o, stdout, stderr);
  return stlm::entropyNative(o, spec, native, stdout, stderr);
}

int runGenerate(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("generate")));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("generate takes exactly one checkpoint");
  stlm::GenerateOptions o;
  if (const std::string *v = a.get("--prompt"))
    o.prompt = *v;
  int64_t seed = 0;
  if (!a.count("--tokens", o.tokens) || !a.count("--top-k", o.sampling.topK) ||
      !a.count("--seed", seed) || !a.count("--batch", o.batch) ||
      !a.number("--temperature", o.sampling.temperature) ||
      !a.number("--top-p", o.sampling.topP))
    return usage(a.error);
  o.seed = static_cast<uint64_t>(seed);
  if (const std::string *path = a.get("--prompts")) {
    if (a.get("--prompt"))
      return usage("give --prompt or --prompts, not both");
    std::string error;
    if (!stlm::readPrompts(*path, o.prompts, error))
      return fail(error);
    if (!a.get("--batch"))
      o.batch = std::min<int64_t>(static_cast<int64_t>(o.prompts.size()), 8);
  }
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

int runExport(int argc, char **argv) {
  Args a = Args::parse(argc, argv, 2, optionsOf(*findCommand("export")));
  if (!a.error.empty())
    return usage(a.error);
  if (a.positional.size() != 1)
    return usage("export takes exactly one checkpoint");
  stlm::ExportOptions o;
  const std::string *format = a.get("--format");
  if (!format)
    return usage("export needs --format gguf or --format hf");
  if (*format != "gguf" && *format != "hf")
    return usage("unknown export format '" + *format +
                 "' (available: gguf, hf)");
  o.format = *format == "gguf" ? stlm::ExportFormat::GGUF
                               : stlm::ExportFormat::HF;
  const std::string *out = a.get("-o");
  if (!out)
    return usage("export needs an output (-o OUT)");
  o.out = *out;
  if (const std::string *type = a.get("--type")) {
    if (o.format != stlm::ExportFormat::GGUF)
      return usage("--type is an option of --format gguf");
    if (*type == "f32")
      o.type = stlm::GgufType::F32;
    else if (*type == "f16")
      o.type = stlm::GgufType::F16;
    else if (*type == "q8_0")
      o.type = stlm::GgufType::Q8_0;
    else if (*type == "q4_0")
      o.type = stlm::GgufType::Q4_0;
    else
      return usage("unknown GGUF type '" + *type +
                   "' (available: f32, f16, q8_0, q4_0)");
  }
  o.mergeLora = a.get("--merge-lora") != nullptr;
  const std::string &path = a.positional[0];
  stlm::ModelSpec spec;
  std::string error;
  if (!stlm::checkpointSpec(path, spec, error))
    return fail(error);
  std::string problem = stlm::exportProblem(spec, o);
  if (!problem.empty())
    return fail(problem);
  std::unique_ptr<stlm::SafeTensorsFile> file =
      stlm::SafeTensorsFile::open(path, error);
  if (!file)
    return fail(error);
  std::vector<std::string> problems =
      stlm::checkWeights(stlm::buildParamTable(spec), *file);
  if (!problems.empty())
    return fail(path + " does not match its model '" + spec.name + "': " +
                problems.front());
  std::string summary;
  if (!stlm::exportCheckpoint(spec, *file, o, summary, error))
    return fail(error);
  std::printf("%s\n", summary.c_str());
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage("no command given");
  std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help") {
    std::fputs(helpText().c_str(), stdout);
    return 0;
  }
  if (cmd == "--version") {
    std::printf("%s\n", stlm::versionLine("stlm-run").c_str());
    return 0;
  }
  const Command *command = findCommand(cmd);
  if (!command)
    return usage("unknown command '" + cmd + "'");
  // `--help` anywhere among a command's arguments (not as an option's
  // value) prints its help.
  std::vector<Option> options = optionsOf(*command);
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(commandHelp(*command).c_str(), stdout);
      return 0;
    }
    for (const Option &o : options)
      if (o.value && arg == o.name)
        ++i; // skip its value
  }
  // Only training spreads over ranks; N copies of another command would
  // each do the same work (and race on its output).
  std::string launchError;
  int ranks = stlm::launchedRanks(launchError);
  if (ranks != 1 && cmd != "train")
    return fail(ranks < 0 ? launchError
                          : "'" + cmd + "' runs in one process; only train "
                            "runs data-parallel (this job has " +
                                std::to_string(ranks) +
                                " ranks): run it without mpirun");
  if (cmd == "init")
    return runInit(argc, argv);
  if (cmd == "check")
    return runCheck(argc, argv);
  if (cmd == "train") {
    // A checkpoint being written when mpirun ends the job, or at Ctrl-C,
    // leaves no temp file (the checkpoint itself is replaced atomically).
    stlm::removeTempFileOnTermination();
    return runTrain(argc, argv);
  }
  if (cmd == "eval")
    return runEval(argc, argv);
  if (cmd == "export")
    return runExport(argc, argv);
  if (cmd == "entropy")
    return runEntropy(argc, argv);
  if (cmd == "quantize")
    return runQuantize(argc, argv);
  return runGenerate(argc, argv);
}
