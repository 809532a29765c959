//===- model.cpp - time a compiled model: train, forward, generate ------===//
//
//   stlm-bench-model lib<name>.so WEIGHTS.safetensors|random [--steps N]
//       [--threads T] [--generate G] [--rounds R]
//
// Opens the artifact through the C runtime, loads the weights (`random`:
// every parameter drawn uniformly from ±0.02, norm gains from 1 ± 0.02, for
// a model whose checkpoint is too big to carry to a GPU machine), and times N
// training steps and N forward passes (stlm_eval: loss without gradients;
// --steps 0 skips both)
// on fixed pseudo-random byte batches after 3 warm-up calls each, then
// greedy generation (stlm_generate, KV cache) of min(G, context) tokens
// from a one-byte prompt, R times (default 5) after one warm-up. Prints
// one JSON object: median milliseconds and bytes/s of each. Generation
// fills the cache for the prompt (for one byte a decode step, on the CPU;
// a prefill of the context window for longer prompts), then runs decode
// steps: `prefill_ms` is the median time to generate one token, and
// `decode_bytes_per_s` the rate of the tokens after it (each round's time
// minus that median). An artifact
// compiled with --decode-batch S also has its batched generation timed the
// same way (stlm_generate_batch, S one-byte prompts, min(G, context)
// tokens each): `batch_prefill_ms` and `batch_decode_bytes_per_s`, the
// bytes of all S sequences per second (nulls without). A quantized
// artifact (stlm-compile --quantize) infers only: it is not trained
// (`train_ms` is null) and needs its quantized checkpoint.
//
//===----------------------------------------------------------------------===//

#include "stlm/stlm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
int die(stlm_model *m, const char *what) {
  std::fprintf(stderr, "stlm-bench-model: error: %s: %s\n", what,
               stlm_error_message(m));
  return 1;
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
} // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: stlm-bench-model lib<name>.so W.safetensors|random "
                         "[--steps N] [--threads T] [--generate G]\n");
    return 2;
  }
  int steps = 20, threads = 0, generate = 128, rounds = 5;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps"))
      steps = std::max(0, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::max(0, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--generate"))
      generate = std::max(2, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::max(1, std::atoi(argv[i + 1]));
  }
  stlm_model *m = nullptr;
  if (stlm_open_library(argv[1], nullptr, &m) != STLM_OK)
    return die(m, "open");
  bool quantized = stlm_quantization(m) != nullptr;
  if (quantized && !std::strcmp(argv[2], "random")) {
    std::fprintf(stderr,
                 "stlm-bench-model: error: '%s' is quantized (%s): "
                 "give its quantized checkpoint, not random\n",
                 stlm_model_name(m), stlm_quantization(m));
    return 1;
  }
  if (!std::strcmp(argv[2], "random")) {
    uint64_t state = 0x5eed;
    for (int64_t p = 0; const char *name = stlm_param_name(m, p); ++p) {
      std::vector<float> v(static_cast<size_t>(stlm_tensor_size(m, name)));
      bool gain = std::strstr(name, "norm") != nullptr;
      for (float &x : v) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        float u = static_cast<float>(state >> 40) / 16777216.0f; // [0, 1)
        x = (gain ? 1.0f : 0.0f) + 0.04f * (u - 0.5f);
      }
      if (stlm_write(m, name, v.data(), v.size()) != STLM_OK)
        return die(m, "random weights");
    }
  } else if (stlm_load(m, argv[2]) != STLM_OK) {
    return die(m, "load");
  }
  if (stlm_set_threads(m, threads) != STLM_OK)
    return die(m, "threads");
  int64_t n = stlm_batch(m) * stlm_context(m);
  std::vector<int32_t> tokens(n), targets(n);
  uint32_t s = 1;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    tokens[i] = (s >> 24) & 255;
    targets[i] = (s >> 16) & 255;
  }
  using Clock = std::chrono::steady_clock;
  std::vector<double> train, forward;
  for (int i = 0; !quantized && i < steps + 3 && steps > 0; ++i) {
    stlm_step_result r;
    auto t0 = Clock::now();
    if (stlm_train_step(m, tokens.data(), targets.data(), &r) != STLM_OK)
      return die(m, "train step");
    if (i >= 3)
      train.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  for (int i = 0; steps > 0 && i < steps + 3; ++i) {
    float loss;
    auto t0 = Clock::now();
    if (stlm_eval(m, tokens.data(), targets.data(), &loss) != STLM_OK)
      return die(m, "eval");
    if (i >= 3)
      forward.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  size_t tokensOut =
      static_cast<size_t>(std::min<int64_t>(generate, stlm_context(m)));
  stlm_sampling greedy = STLM_SAMPLING_GREEDY;
  int32_t prompt = 10;
  // S one-byte prompts for batched generation (0 without).
  const size_t seqs = static_cast<size_t>(stlm_decode_batch(m));
  std::vector<int32_t> starts(seqs);
  std::vector<const int32_t *> prompts(seqs);
  std::vector<size_t> lens(seqs, 1);
  for (size_t i = 0; i < seqs; ++i) {
    starts[i] = static_cast<int32_t>((10 + i) % stlm_vocab(m));
    prompts[i] = &starts[i];
  }
  auto generateMs = [&](bool batched, size_t count, double &ms) {
    size_t produced = 0;
    auto t0 = Clock::now();
    stlm_status s =
        batched ? stlm_generate_batch(m, seqs, prompts.data(), lens.data(),
                                      count, &greedy, nullptr, nullptr, nullptr)
                : stlm_generate(m, &prompt, 1, count, &greedy, nullptr, nullptr,
                                &produced);
    ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return s == STLM_OK;
  };
  // Median milliseconds of the first token and of all, and the decode rate
  // of the tokens after the first (of `width` sequences at once).
  auto timeGeneration = [&](bool batched, double &pm, double &gm,
                            double &rate) {
    std::vector<double> all, first;
    for (int i = 0; i <= rounds; ++i) {
      double one = 0, whole = 0;
      if (!generateMs(batched, 1, one) ||
          !generateMs(batched, tokensOut, whole))
        return false;
      if (i >= 1) {
        first.push_back(one);
        all.push_back(whole);
      }
    }
    gm = median(all);
    pm = median(first);
    std::vector<double> decode;
    size_t width = batched ? seqs : 1;
    for (double g : all)
      decode.push_back(width * (tokensOut - 1) / std::max(g - pm, 1e-6) * 1e3);
    rate = median(decode);
    return true;
  };
  double gm = 0, pm = 0, rate = 0;
  if (!timeGeneration(false, pm, gm, rate))
    return die(m, "generate");
  std::string batchPrefill = "null", batchRate = "null";
  if (seqs > 0) {
    double bpm = 0, bgm = 0, brate = 0;
    if (!timeGeneration(true, bpm, bgm, brate))
      return die(m, "batched generation");
    batchPrefill = std::to_string(bpm);
    batchRate = std::to_string(brate);
  }
  // Milliseconds and bytes/s of a timed phase, or nulls when skipped.
  auto phase = [&](const std::vector<double> &ms, std::string &time,
                   std::string &rate) {
    time = rate = "null";
    if (ms.empty())
      return;
    time = std::to_string(median(ms));
    rate = std::to_string(n / median(ms) * 1e3);
  };
  std::string trainJson, trainRate, forwardJson, forwardRate;
  phase(train, trainJson, trainRate);
  phase(forward, forwardJson, forwardRate);
  std::printf("{\"model\": \"%s\", \"quantization\": %s%s%s, "
              "\"batch\": %lld, \"context\": %lld, "
              "\"train_ms\": %s, \"train_bytes_per_s\": %s, "
              "\"forward_ms\": %s, \"forward_bytes_per_s\": %s, "
              "\"generate_tokens\": %zu, \"generate_ms\": %.3f, "
              "\"generate_bytes_per_s\": %.1f, \"prefill_ms\": %.3f, "
              "\"decode_bytes_per_s\": %.1f, \"decode_batch\": %zu, "
              "\"batch_prefill_ms\": %s, \"batch_decode_bytes_per_s\": %s}\n",
              stlm_model_name(m), quantized ? "\"" : "",
              quantized ? stlm_quantization(m) : "null", quantized ? "\"" : "",
              static_cast<long long>(stlm_batch(m)),
              static_cast<long long>(stlm_context(m)), trainJson.c_str(),
              trainRate.c_str(), forwardJson.c_str(), forwardRate.c_str(),
              tokensOut, gm, tokensOut / gm * 1e3, pm, rate, seqs,
              batchPrefill.c_str(), batchRate.c_str());
  stlm_close(m);
  return 0;
}
