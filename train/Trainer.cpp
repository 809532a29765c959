//===- Trainer.cpp - the training loop of every engine --------------------===//

#include "train/Trainer.h"

#include "frontend/Quantized.h"

#include "frontend/Data.h"
#include "frontend/Params.h"
#include "frontend/Weights.h"
#include "support/SafeTensors.h"
#include "train/Batches.h"
#include "train/Inference.h"

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

#include <nlohmann/json.hpp>

namespace stlm {

bool TrainEngine::loadTeacher(const ModelSpec &spec, std::string &error) {
  return loadTeacherWeights(
      spec,
      [&](const std::string &name, const std::vector<int64_t> &shape,
          const std::vector<float> &values,
          std::string &e) { return setTensor(name, shape, values, e); },
      error);
}

namespace {

using Clock = std::chrono::steady_clock;
/// The step counter is an i32 state; the last step must still fit.
constexpr int64_t kMaxSteps = std::numeric_limits<int32_t>::max() - 1;
using Tensor = ref::Tensor<float>;

std::string formatDuration(double seconds) {
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld",
                  static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld",
                  static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

/// A JSON number, or null when it is not finite.
std::string jsonNumber(double x, const char *fmt = "%.6f") {
  if (!std::isfinite(x))
    return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

/// The spec as JSON without its `train` section: what defines the model.
nlohmann::json modelPart(const ModelSpec &spec) {
  nlohmann::json j = nlohmann::json::parse(specToJson(spec));
  j.erase("train");
  return j;
}

std::string formatRate(double bytesPerSecond) {
  char buf[32];
  if (bytesPerSecond >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f MB/s", bytesPerSecond / 1e6);
  else if (bytesPerSecond >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f kB/s", bytesPerSecond / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f B/s", bytesPerSecond);
  return buf;
}


class Session {
public:
  Session(const ModelSpec &spec, const TrainOptions &opt, TrainEngine &engine,
          FILE *err)
      : spec(spec), opt(opt), engine(engine), err(err),
        table(buildParamTable(spec)), ranks(opt.collective),
        rank(ranks ? ranks->rank() : 0), size(ranks ? ranks->size() : 1),
        lead(rank == 0), progress(lead ? opt.progress : nullptr) {}
  int run();

private:
  /// Reports `msg`; in a data-parallel run, naming this rank, and ending
  /// every rank of the job.
  int fail(const std::string &msg) {
    if (size == 1)
      return reportError(err, msg);
    reportError(err, "rank " + std::to_string(rank) + " of " +
                         std::to_string(size) + ": " + msg);
    std::fflush(err);
    ranks->abort(1);
    return 1; // not reached
  }
  /// A failure every rank found at once: rank 0 reports it and ends the
  /// job; the others give its message time to come out first.
  int failTogether(const std::string &msg) {
    if (size == 1 || lead)
      return fail(msg);
    std::this_thread::sleep_for(std::chrono::seconds(5));
    ranks->abort(1);
    return 1; // not reached
  }
  /// Whether every rank was started with the same spec, data and the
  /// options that decide which steps all ranks take together: `differ`
  /// "" or why not. false with `error` when this rank could not tell.
  bool sameOptions(std::string &differ, std::string &error);
  /// A digest of the parameters, moments and step.
  bool stateDigest(int64_t step, uint64_t &digest, std::string &error);
  /// Whether every rank holds the same weights (`when` says at which point,
  /// for the message), as sameOptions.
  bool sameWeights(int64_t step, const std::string &when, std::string &differ,
                   std::string &error);
  /// fail() for a local error, failTogether() for ranks that differ (or
  /// 0 when they agree): after sameOptions or sameWeights returned `ok`.
  int agreeOrFail(bool ok, const std::string &differ,
                  const std::string &error) {
    if (!ok)
      return fail(error);
    return differ.empty() ? 0 : failTogether(differ);
  }
  bool initialise(std::string &error);
  /// Fresh AdamW moments for every parameter.
  bool zeroMoments(std::string &error);
  bool resume(std::string &error);
  bool save(const std::string &path, int64_t step, std::string &error);
  void log(const std::string &json) {
    if (logFile.is_open())
      logFile << json << "\n" << std::flush;
  }

  const ModelSpec &spec;
  const TrainOptions &opt;
  TrainEngine &engine;
  FILE *err;
  ParamTable table;
  TextData data;
  Feed feed;
  uint64_t seed = 0;
  int64_t startStep = 0;
  std::ofstream logFile;
  // The ranks of a data-parallel run (null alone), this one's place, and
  // whether it is rank 0, which prints, logs, evaluates and saves.
  Collective *ranks;
  int rank, size;
  bool lead;
  FILE *progress;
};

/// 64-bit FNV-1a over 8-byte words (and the tail bytes): a digest for
/// comparing states across ranks, not stored anywhere.
uint64_t wordDigest(const void *data, size_t bytes, uint64_t h) {
  const auto *p = static_cast<const unsigned char *>(data);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < bytes; ++i)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

bool Session::sameOptions(std::string &differ, std::string &error) {
  const std::vector<uint8_t> &text = data.contents();
  std::string key = specToJson(spec) + "|" +
                    std::to_string(wordDigest(text.data(), text.size(),
                                              0xcbf29ce484222325ull)) +
                    "|" + std::to_string(opt.steps) +
                    "|" + std::to_string(opt.seedGiven) + ":" +
                    std::to_string(opt.seed) + "|" +
                    std::to_string(opt.evalEvery) + "|" +
                    std::to_string(opt.saveEvery) + "|" +
                    std::to_string(opt.savePath.empty()) + "|" +
                    std::to_string(opt.maxSeconds > 0) + "|" +
                    std::to_string(opt.resumePath.empty());
  std::vector<uint64_t> all;
  if (!ranks->allgather(wordDigest(key.data(), key.size(),
                                   0xcbf29ce484222325ull),
                        all, error))
    return false;
  differ.clear();
  for (int r = 1; r < size && differ.empty(); ++r)
    if (all[r] != all[0])
      differ = "rank " + std::to_string(r) + " was started with another "
               "spec, data or options than rank 0: every rank must train the "
               "same spec on the same text with the same --steps, --seed, "
               "--eval-every, --save-every, --max-time, and --save and "
               "--resume given or not";
  return true;
}

bool Session::stateDigest(int64_t step, uint64_t &digest,
                          std::string &error) {
  uint64_t h = wordDigest(&step, sizeof step, 0xcbf29ce484222325ull);
  std::vector<float> values;
  for (const ParamInfo &p : table.params)
    for (const std::string &name :
         {p.name, "opt.m." + p.name, "opt.v." + p.name}) {
      if (!engine.getTensor(name, values, error))
        return false;
      h = wordDigest(values.data(), values.size() * sizeof(float), h);
    }
  digest = h;
  return true;
}

bool Session::sameWeights(int64_t step, const std::string &when,
                          std::string &differ, std::string &error) {
  uint64_t digest = 0;
  std::vector<uint64_t> all;
  if (!stateDigest(step, digest, error) ||
      !ranks->allgather(digest, all, error))
    return false;
  differ.clear();
  for (int r = 1; r < size && differ.empty(); ++r)
    if (all[r] != all[0]) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "rank %d's weights and optimizer state (digest %016llx) "
                    "differ from rank 0's (%016llx) ",
                    r, static_cast<unsigned long long>(all[r]),
                    static_cast<unsigned long long>(all[0]));
      differ = buf + when;
    }
  return true;
}

bool Session::zeroMoments(std::string &error) {
  for (const ParamInfo &p : table.params)
    for (const char *prefix : {"opt.m.", "opt.v."})
      if (!engine.setTensor(prefix + p.name, p.shape,
                            std::vector<float>(p.numel(), 0.0f), error))
        return false;
  return true;
}

bool Session::initialise(std::string &error) {
  for (const InitTensor &w : initWeights(table, seed))
    if (!engine.setTensor(w.param->name, w.param->shape, w.values, error))
      return false;
  return zeroMoments(error) && engine.setStep(0, error);
}

bool Session::resume(std::string &error) {
  std::unique_ptr<SafeTensorsFile> file =
      SafeTensorsFile::open(opt.resumePath, error);
  if (!file)
    return false;
  // The checkpoint's own spec must describe the same model (training
  // settings may differ).
  if (std::optional<SpecResult> theirs = storedSpec(*file, opt.resumePath)) {
    if (!theirs->spec) {
      error = theirs->diagnostics.front().str();
      return false;
    }
    nlohmann::json a = modelPart(spec), b = modelPart(*theirs->spec);
    if (a != b) {
      std::string keys;
      for (auto it = a.begin(); it != a.end(); ++it)
        if (!b.contains(it.key()) || b[it.key()] != it.value())
          keys += (keys.empty() ? "" : ", ") + it.key();
      error = opt.resumePath + " is a checkpoint of model '" +
              theirs->spec->name + "', which differs from '" + spec.name +
              "' in: " + keys;
      return false;
    }
  }
  std::optional<quant::Format> quantized;
  if (checkpointQuantization(*file, quantized, error) && quantized) {
    error = opt.resumePath + " is quantized (" + describe(*quantized) +
            "); training resumes from float checkpoints only: give the one "
            "it was made from";
    return false;
  }
  std::vector<std::string> problems = checkWeights(table, *file);
  // Optimizer state is all there or all absent (a plain `init` file).
  bool anyState = false, allState = true;
  for (const ParamInfo &p : table.params)
    for (const char *prefix : {"opt.m.", "opt.v."}) {
      bool has = file->find(prefix + p.name) != nullptr;
      anyState |= has;
      allState &= has;
    }
  if (anyState && !allState)
    for (const ParamInfo &p : table.params)
      for (const char *prefix : {"opt.m.", "opt.v."})
        if (!file->find(prefix + p.name))
          problems.push_back("missing optimizer state '" +
                             (prefix + p.name) + "'");
  if (!problems.empty()) {
    error = opt.resumePath + " is not a checkpoint of model '" + spec.name +
            "' (" + std::to_string(problems.size()) + " problems):";
    for (const std::string &p : problems)
      error += "\n  " + p;
    return false;
  }
  for (const TensorView &t : file->tensors()) {
    std::vector<float> values(t.numel());
    std::memcpy(values.data(), t.data, t.size);
    if (!engine.setTensor(t.name, t.shape, values, error))
      return false;
  }
  if (!anyState && !zeroMoments(error))
    return false;
  auto step = file->metadata().find("step");
  if (step != file->metadata().end()) {
    char *end = nullptr;
    errno = 0;
    long long s = std::strtoll(step->second.c_str(), &end, 10);
    if (step->second.empty() || *end != '\0' || errno != 0 || s < 0 ||
        s > kMaxSteps) {
      error = opt.resumePath + ": __metadata__.step '" + step->second +
              "' is not a step count in [0, " + std::to_string(kMaxSteps) +
              "]";
      return false;
    }
    startStep = s;
  }
  auto storedSeed = file->metadata().find("seed");
  if (storedSeed != file->metadata().end() && !opt.seedGiven) {
    char *end = nullptr;
    errno = 0;
    // strtoull accepts a sign ("-1" would wrap to 2^64 - 1): digits only.
    const std::string &text = storedSeed->second;
    unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) ||
        *end != '\0' || errno != 0) {
      error = opt.resumePath + ": __metadata__.seed '" + text +
              "' is not a seed (a non-negative integer below 2^64)";
      return false;
    }
    seed = v;
  }
  return engine.setStep(startStep, error);
}

bool Session::save(const std::string &path, int64_t step, std::string &error) {
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<float>> values;
  values.reserve(3 * table.params.size());
  for (const ParamInfo &p : table.params)
    for (const std::string &name :
         {p.name, "opt.m." + p.name, "opt.v." + p.name}) {
      values.emplace_back();
      if (!engine.getTensor(name, values.back(), error))
        return false;
      tensors.push_back({name, DType::F32, p.shape, values.back().data(),
                         values.back().size() * sizeof(float)});
    }
  std::map<std::string, std::string> meta = checkpointMetadata(spec);
  meta["step"] = std::to_string(step);
  meta["seed"] = std::to_string(seed);
  return writeSafeTensors(path, tensors, meta, error);
}


int Session::run() {
  std::string error;
  // How batches are fed.
  feed = Feed::forSpec(spec);

  int64_t steps = opt.steps >= 0 ? opt.steps : spec.train.steps;
  if (steps > kMaxSteps)
    return fail("--steps " + std::to_string(steps) + " exceeds the step "
                "counter's limit " + std::to_string(kMaxSteps));

  if (!data.load(opt.dataPath, feed.window, error) ||
      !loadChunkStarts(spec, opt.chunkStartsPath, opt.dataPath, data, error))
    return fail(error);
  if (std::optional<std::string> why =
          dataOutsideVocabulary(spec, opt.dataPath, data.contents()))
    return fail(*why);
  if (data.validationWindows() < feed.batch)
    return fail(opt.dataPath + ": the validation split (last 10 %, " +
                std::to_string(data.validationBytes()) + " bytes) holds " +
                std::to_string(data.validationWindows()) + " windows of " +
                std::to_string(feed.window) + " bytes, fewer than one batch (" +
                std::to_string(feed.batch) + "); the file needs about " +
                std::to_string(10 * feed.batch * feed.window) + " bytes");
  // The checkpoint's place, before the work it would hold.
  if (lead && !opt.savePath.empty() &&
      !canWriteSafeTensors(opt.savePath, error))
    return fail(error);
  std::string differ;
  if (size > 1)
    if (int status = agreeOrFail(sameOptions(differ, error), differ, error))
      return status;
  // The model and its training step (after the cheap checks: a native
  // engine may compile). In a data-parallel run, the first rank of each
  // host compiles while the others wait, then they find it compiled.
  if (size > 1 && ranks->localRank() != 0 && !ranks->localBarrier(error))
    return fail(error);
  bool prepared = engine.prepare(spec, error);
  if (size > 1 && ranks->localRank() == 0) {
    std::string barrierError;
    if (!prepared)
      return fail(error);
    if (!ranks->localBarrier(barrierError))
      return fail(barrierError);
  }
  if (!prepared)
    return fail(error);
  // Every rank's engine refuses alike.
  if (size > 1 && !engine.joinRanks(*ranks, error))
    return failTogether(error);
  // Hosts compile for themselves: their artifacts must compute alike.
  if (size > 1) {
    std::string mine = engine.computeSignature();
    std::vector<uint64_t> all;
    if (!ranks->allgather(wordDigest(mine.data(), mine.size(),
                                     0xcbf29ce484222325ull),
                          all, error))
      return fail(error);
    for (int r = 1; r < size; ++r)
      if (all[r] != all[0])
        return failTogether(
            "rank " + std::to_string(r) + "'s compiled model computes "
            "otherwise than rank 0's (rank 0's: " + mine + "): stlm-compile "
            "chose the matmul precision for each host's CPU; compile once "
            "with --bf16-compute=on or off into an --artifact DIR every "
            "host reads");
  }
  seed = opt.seedGiven ? opt.seed : static_cast<uint64_t>(spec.train.seed);
  if (!(opt.resumePath.empty() ? initialise(error) : resume(error)) ||
      !engine.loadTeacher(spec, error))
    return fail(error);
  if (size > 1) {
    bool ok = sameWeights(startStep,
                          opt.resumePath.empty()
                              ? "after initialisation"
                              : "after --resume: every rank must start from "
                                "the same checkpoint",
                          differ, error);
    if (int status = agreeOrFail(ok, differ, error))
      return status;
  }
  if (startStep > 0 && startStep >= steps)
    return failTogether(opt.resumePath + " has taken " +
                        std::to_string(startStep) +
                " steps already, and " +
                (opt.steps >= 0 ? "--steps " + std::to_string(steps)
                                : "the spec's train.steps (" +
                                      std::to_string(steps) + ")") +
                " counts every step of the run, those included: nothing "
                "is left to train (give --steps N with N > " +
                std::to_string(startStep) + ")");
  if (lead && !opt.logPath.empty()) {
    logFile.open(opt.logPath, std::ios::app);
    if (!logFile)
      return fail(opt.logPath + ": cannot open the log file");
  }


  const int64_t k = spec.train.accumulate; // micro-batches per step (rank)
  // Throughput counts the bytes of text the steps consumed (a byte-pool
  // window's chunks may end before the window's bytes do); every rank is
  // taken to consume what this one does.
  double bytesDone = 0;
  if (progress)
    std::fprintf(progress,
                 "training '%s' (%lld parameters%s) with %s%s: steps "
                 "%lld..%lld, batch %lld%s, %lld train / %lld validation "
                 "bytes\n",
                 spec.name.c_str(),
                 static_cast<long long>(table.uniqueCount()),
                 spec.train.precision == Precision::BF16 ? ", bf16 matmuls"
                                                         : "",
                 engine.describe().c_str(),
                 size > 1 ? (" on " + std::to_string(size) + " ranks").c_str()
                          : "",
                 static_cast<long long>(startStep),
                 static_cast<long long>(steps),
                 static_cast<long long>(feed.batch),
                 size > 1 ? (" per rank (" + std::to_string(size * k *
                                                            feed.batch) +
                             " windows a step)")
                                .c_str()
                          : "",
                 static_cast<long long>(data.trainBytes()),
                 static_cast<long long>(data.validationBytes()));

  auto runEval = [&](int64_t step) -> bool {
    if (!lead)
      return true; // rank 0 evaluates
    BatchLoss batchLoss = [&](const std::vector<Tensor> &args,
                              std::vector<float> &l, std::string &e) {
      return engine.evalLoss(args, l, e);
    };
    Validation v =
        validationLoss(batchLoss, data, feed, opt.evalWindows, error);
    if (std::isnan(v.loss)) {
      error = "evaluation at step " + std::to_string(step) + ": " + error;
      return false;
    }
    double loss = v.loss, bpb = v.bitsPerByte;
    int64_t windows = v.windows;
    bool perByte = !std::isnan(bpb);
    if (progress) {
      std::string perByteText;
      if (perByte) {
        char buf[48];
        std::snprintf(buf, sizeof buf, " | %.3f bits/byte", bpb);
        perByteText = buf;
      }
      std::fprintf(progress, "eval  step %lld | val loss %.4f%s | %lld "
                   "windows\n",
                   static_cast<long long>(step), loss, perByteText.c_str(),
                   static_cast<long long>(windows));
    }
    log("{\"event\":\"eval\",\"step\":" + std::to_string(step) +
        ",\"val_loss\":" + jsonNumber(loss) + ",\"bits_per_byte\":" +
        (perByte ? jsonNumber(bpb) : "null") + ",\"windows\":" +
        std::to_string(windows) + "}");
    return true;
  };

  if (!runEval(startStep))
    return fail(error);
  Clock::time_point start = Clock::now();
  int64_t every = std::max<int64_t>(1, (steps - startStep) / 50);
  std::vector<int32_t> windows;
  // The seed of masked objectives for the batch drawn at data step `i`.
  auto batchSeed = [&](int64_t i) {
    return static_cast<int32_t>(splitmix64(seed ^ static_cast<uint64_t>(i)) &
                                0x7fffffff);
  };
  int64_t last = steps; // the step training ends at (--max-time: earlier)
  // Before each checkpoint (and at the end) the ranks compare their
  // weights: 0 when they agree (or there is one rank).
  auto checkRanks = [&](int64_t step) -> int {
    if (size == 1)
      return 0;
    bool ok = sameWeights(step,
                          "at step " + std::to_string(step) +
                              "; no checkpoint was written",
                          differ, error);
    return agreeOrFail(ok, differ, error);
  };
  for (int64_t step = startStep; step < steps; ++step) {
    // k micro-batches (the windows of micro-steps step·k … step·k + k − 1),
    // then one update; the reported loss is their mean. In a data-parallel
    // run a step has size·k micro-batches, this rank's the k from
    // rank·k: the same windows, however the global batch is split.
    std::vector<std::vector<Tensor>> micro;
    for (int64_t m = 0; m < k; ++m) {
      int64_t i = (step * size + rank) * k + m;
      data.trainBatch(seed, i, feed.batch, windows);
      micro.push_back(feed.args(windows, batchSeed(i)));
      bytesDone += static_cast<double>(size) * feed.consumedBytes(windows);
    }
    float loss = 0, norm = 0, lr = 0;
    if (!engine.trainStep(micro, loss, norm, lr, error))
      return fail("step " + std::to_string(step) + ": " + error);
    if (!std::isfinite(loss))
      return failTogether("step " + std::to_string(step) + ": the loss is " +
                          std::to_string(loss) + "; training diverged");
    double elapsed =
        std::chrono::duration<double>(Clock::now() - start).count();
    int64_t done = step + 1 - startStep;
    double rate = elapsed > 0 ? bytesDone / elapsed : 0;
    double eta = done > 0 ? elapsed / done * (steps - step - 1) : 0;
    bool timeUp = opt.maxSeconds > 0 && elapsed >= opt.maxSeconds &&
                  step + 1 < steps;
    if (size > 1 && opt.maxSeconds > 0) {
      // Rank 0's clock decides, so that every rank stops at the same step.
      int64_t up = timeUp;
      if (!ranks->broadcast(up, error))
        return fail(error);
      timeUp = up != 0;
    }
    std::string reduceTime;
    if (size > 1)
      reduceTime = ",\"allreduce_s\":" +
                   jsonNumber(ranks->takeReduceSeconds(), "%.6f");
    if (opt.maxSeconds > 0)
      eta = std::min(eta, std::max(0.0, opt.maxSeconds - elapsed));
    log("{\"event\":\"train\",\"step\":" + std::to_string(step + 1) +
        ",\"loss\":" + jsonNumber(loss) + ",\"lr\":" +
        jsonNumber(lr, "%.6g") + ",\"grad_norm\":" + jsonNumber(norm) +
        ",\"bytes_per_s\":" + jsonNumber(rate, "%.1f") +
        ",\"elapsed_s\":" + jsonNumber(elapsed, "%.3f") + reduceTime + "}");
    if (progress && ((step + 1 - startStep) % every == 0 ||
                         step + 1 == steps || timeUp))
      std::fprintf(progress,
                   "step %lld/%lld | loss %.4f | lr %.2e | norm %.3f | %s | "
                   "ETA %s\n",
                   static_cast<long long>(step + 1),
                   static_cast<long long>(steps), loss, lr, norm,
                   formatRate(rate).c_str(), formatDuration(eta).c_str());
    if (timeUp) {
      last = step + 1;
      log("{\"event\":\"stop\",\"step\":" + std::to_string(last) +
          ",\"reason\":\"max_time\",\"elapsed_s\":" +
          jsonNumber(elapsed, "%.3f") + "}");
      if (progress)
        std::fprintf(progress,
                     "stopping at step %lld of %lld: --max-time %g s "
                     "reached\n",
                     static_cast<long long>(last),
                     static_cast<long long>(steps), opt.maxSeconds);
      break;
    }
    if (opt.evalEvery > 0 && (step + 1) % opt.evalEvery == 0 &&
        step + 1 != steps && !runEval(step + 1))
      return fail(error);
    if (!opt.savePath.empty() && opt.saveEvery > 0 &&
        (step + 1) % opt.saveEvery == 0 && step + 1 != steps) {
      if (int status = checkRanks(step + 1))
        return status;
      if (lead && !save(opt.savePath, step + 1, error))
        return fail(error);
    }
  }
  if (last > startStep && !runEval(last))
    return fail(error);
  if (int status = checkRanks(std::max(last, startStep)))
    return status;
  if (!opt.savePath.empty()) {
    if (lead && !save(opt.savePath, std::max(last, startStep), error))
      return fail(error);
    if (progress)
      std::fprintf(progress, "saved %s (step %lld)\n",
                   opt.savePath.c_str(),
                   static_cast<long long>(std::max(last, startStep)));
  }
  return 0;
}


} // namespace

int reportError(FILE *err, const std::string &msg) {
  std::fprintf(err, "stlm-run: error: %s\n", msg.c_str());
  return 1;
}

int train(const ModelSpec &spec, const TrainOptions &options,
          TrainEngine &engine, FILE *err) {
  Session session(spec, options, engine, err);
  return session.run();
}

} // namespace stlm
