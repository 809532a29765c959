//===- train.cpp - train a compiled model on a text file, runtime only ----===//
//
//   stlm-bench-train lib<name>.so INIT.safetensors TEXT [--steps N]
//       [--eval-windows W] [--eval-every E] [--save OUT.safetensors]
//
// What `stlm-run train` does with a native engine, on a machine that has
// the runtime and nothing else (no MLIR, no compiler): the GPU machine the
// CUDA target is checked on. The artifact is opened through the C runtime
// (any device), the weights come from INIT (`stlm-run init`), and step i
// trains on MODEL_SPEC's seeded training windows of step i (frontend/Data:
// the spec's train.seed, the first 90 % of TEXT), as stlm-run does, so the
// two runs see the same batches. Every E steps and at the end it prints the
// mean loss over whole batches of the first W validation windows (stlm_eval,
// the last 10 %; W 0: all), as stlm-run's val_loss. JSON lines on stdout:
// {"step", "loss", "lr", "ms"} every 100 steps, {"step", "val_loss",
// "windows"} at each evaluation, and a last {"steps", "ms_per_step",
// "val_loss"}. Token models without a masked objective only.
//
//===----------------------------------------------------------------------===//

#include "frontend/Data.h"
#include "stlm/stlm.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
int die(stlm_model *m, const std::string &what) {
  std::fprintf(stderr, "stlm-bench-train: error: %s%s%s\n", what.c_str(),
               m ? ": " : "", m ? stlm_error_message(m) : "");
  stlm_close(m);
  return 1;
}

/// Tokens and targets ([B, T] each) from B windows of T + 1 bytes.
void split(const std::vector<int32_t> &windows, int64_t batch, int64_t context,
           std::vector<int32_t> &tokens, std::vector<int32_t> &targets) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < context; ++t) {
      tokens[b * context + t] = windows[b * (context + 1) + t];
      targets[b * context + t] = windows[b * (context + 1) + t + 1];
    }
}
} // namespace

int main(int argc, char **argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: stlm-bench-train lib<name>.so INIT.safetensors TEXT "
                 "[--steps N] [--eval-windows W] [--eval-every E] "
                 "[--save OUT.safetensors]\n");
    return 2;
  }
  int64_t steps = -1, evalWindows = 600, evalEvery = 0;
  std::string save;
  for (int i = 4; i < argc; i += 2) {
    if (i + 1 >= argc)
      return die(nullptr, std::string(argv[i]) + " needs a value");
    if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--eval-windows"))
      evalWindows = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--eval-every"))
      evalEvery = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--save"))
      save = argv[i + 1];
    else
      return die(nullptr, std::string("unknown option ") + argv[i]);
  }
  stlm_model *m = nullptr;
  if (stlm_open_library(argv[1], nullptr, &m) != STLM_OK)
    return die(m, "open");
  if (stlm_uses_seed(m) || stlm_accumulate(m) != 1)
    return die(nullptr, "token models without a masked objective or "
                        "accumulation only");
  nlohmann::json spec = nlohmann::json::parse(stlm_spec_json(m), nullptr,
                                              /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.contains("train"))
    return die(nullptr, "the artifact's spec has no train section");
  uint64_t seed = spec["train"].value("seed", uint64_t(0));
  if (steps < 0)
    steps = spec["train"].value("steps", int64_t(0));
  if (stlm_load(m, argv[2]) != STLM_OK)
    return die(m, std::string("load ") + argv[2]);
  int64_t batch = stlm_batch(m), context = stlm_context(m);
  stlm::TextData data;
  std::string error;
  if (!data.load(argv[3], context + 1, error))
    return die(nullptr, error);

  std::vector<int32_t> windows, tokens(batch * context),
      targets(batch * context);
  auto validate = [&](int64_t &counted) -> double {
    int64_t limit = evalWindows > 0
                        ? std::min(evalWindows, data.validationWindows())
                        : data.validationWindows();
    double sum = 0;
    int64_t batches = limit / batch;
    windows.resize(batch * (context + 1));
    for (int64_t i = 0; i < batches; ++i) {
      for (int64_t b = 0; b < batch; ++b)
        data.validationWindow(i * batch + b, &windows[b * (context + 1)]);
      split(windows, batch, context, tokens, targets);
      float loss = 0;
      if (stlm_eval(m, tokens.data(), targets.data(), &loss) != STLM_OK)
        return NAN;
      sum += loss;
    }
    counted = batches * batch;
    return batches ? sum / batches : NAN;
  };

  using Clock = std::chrono::steady_clock;
  auto start = Clock::now(), last = start;
  double trainMs = 0, valLoss = NAN;
  for (int64_t i = stlm_step(m); i < steps; ++i) {
    data.trainBatch(seed, i, batch, windows);
    split(windows, batch, context, tokens, targets);
    stlm_step_result r;
    auto t0 = Clock::now();
    if (stlm_train_step(m, tokens.data(), targets.data(), &r) != STLM_OK)
      return die(m, "train step " + std::to_string(i));
    trainMs +=
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!std::isfinite(r.loss))
      return die(nullptr, "the loss diverged at step " + std::to_string(i));
    if ((i + 1) % 100 == 0 || i + 1 == steps) {
      auto now = Clock::now();
      std::printf(
          "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.3e, "
          "\"ms\": %.1f}\n",
          static_cast<long long>(r.step), r.loss, r.lr,
          std::chrono::duration<double, std::milli>(now - last).count());
      last = now;
    }
    if ((evalEvery > 0 && (i + 1) % evalEvery == 0) || i + 1 == steps) {
      int64_t counted = 0;
      valLoss = validate(counted);
      if (std::isnan(valLoss))
        return die(m, "validation");
      std::printf("{\"step\": %lld, \"val_loss\": %.6f, \"windows\": %lld}\n",
                  static_cast<long long>(i + 1), valLoss,
                  static_cast<long long>(counted));
    }
    std::fflush(stdout);
  }
  if (!save.empty() && stlm_save(m, save.c_str()) != STLM_OK)
    return die(m, "save " + save);
  std::printf("{\"steps\": %lld, \"ms_per_step\": %.3f, \"val_loss\": %.6f, "
              "\"seconds\": %.1f}\n",
              static_cast<long long>(steps), steps > 0 ? trainMs / steps : 0.0,
              valLoss,
              std::chrono::duration<double>(Clock::now() - start).count());
  stlm_close(m);
  return 0;
}
