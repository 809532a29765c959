//===- Entropy.cpp - chunk starts where a byte model is surprised ---------===//

#include "train/Entropy.h"

#include "frontend/Data.h"
#include "support/Files.h"
#include "train/Batches.h"
#include "train/Trainer.h"

#include <algorithm>
#include <chrono>
#include <sys/stat.h>

namespace stlm {

namespace {

/// A byte that continues a UTF-8 character (10xxxxxx).
bool continuesCharacter(uint8_t b) { return (b & 0xC0) == 0x80; }

/// The entropy in bits of softmax(`logits`), in double.
double entropyBits(const float *logits, int64_t v) {
  double top = logits[0];
  for (int64_t i = 1; i < v; ++i)
    top = std::max(top, static_cast<double>(logits[i]));
  double sum = 0, weighted = 0;
  for (int64_t i = 0; i < v; ++i) {
    double z = logits[i] - top, e = std::exp(z);
    sum += e;
    weighted += e * z;
  }
  return (std::log(sum) - weighted / sum) / std::log(2.0);
}

/// The same file, by device and inode.
bool sameFile(const std::string &a, const std::string &b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::string clock(double seconds) {
  long s = static_cast<long>(seconds + 0.5);
  return std::to_string(s / 60) + ":" + (s % 60 < 10 ? "0" : "") +
         std::to_string(s % 60);
}

} // namespace

bool byteEntropies(const std::vector<uint8_t> &text, const EntropyModel &m,
                   std::vector<float> &entropy, std::string &error,
                   FILE *progress) {
  const int64_t n = static_cast<int64_t>(text.size()), B = m.batch,
                T = m.context, V = m.vocab;
  const int64_t half = std::max<int64_t>(1, T / 2);
  entropy.assign(n, NAN);
  if (n < 2)
    return true;
  // Window k starts at k·half; it scores bytes up to k·half + T.
  int64_t windows = 1 + std::max<int64_t>(0, (n - 1 - T + half - 1) / half);
  std::vector<int32_t> tokens(B * T);
  std::vector<float> logits;
  auto start = std::chrono::steady_clock::now();
  double lastShown = -1;
  for (int64_t first = 0; first < windows; first += B) {
    for (int64_t b = 0; b < B; ++b) {
      int64_t s = (first + b) * half;
      for (int64_t p = 0; p < T; ++p)
        tokens[b * T + p] = first + b < windows && s + p < n ? text[s + p] : 0;
    }
    if (!m.logits(tokens, logits, error))
      return false;
    if (static_cast<int64_t>(logits.size()) < B * T * V) {
      error = "the model gave " + std::to_string(logits.size()) +
              " logits for a batch, not " + std::to_string(B * T * V);
      return false;
    }
    for (int64_t b = 0; b < B && first + b < windows; ++b) {
      int64_t k = first + b, s = k * half;
      // The first window scores all its predictions, every later one
      // those with at least T - half bytes before them.
      for (int64_t p = k == 0 ? 0 : T - half; p < T; ++p) {
        int64_t j = s + p + 1; // the byte position p predicts
        if (j >= n)
          break;
        double h = entropyBits(&logits[(b * T + p) * V], V);
        if (!std::isfinite(h)) {
          error = "the model's prediction of byte " + std::to_string(j) +
                  " is not finite (a diverged checkpoint?)";
          return false;
        }
        entropy[j] = static_cast<float>(h);
      }
    }
    if (progress) {
      double secs = std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count();
      int64_t done = std::min(n, (first + B) * half + T);
      if (secs - lastShown >= 1.0 || first + B >= windows) {
        lastShown = secs;
        double rate = done / std::max(secs, 1e-9);
        std::fprintf(progress,
                     "\rentropy: %lld/%lld bytes | %.1f kB/s | ETA %s   ",
                     static_cast<long long>(done), static_cast<long long>(n),
                     rate / 1e3, clock((n - done) / rate).c_str());
        std::fflush(progress);
      }
    }
  }
  if (progress)
    std::fprintf(progress, "\n");
  return true;
}

std::vector<int64_t> entropyStarts(const std::vector<float> &entropy,
                                   const std::vector<uint8_t> &text,
                                   double threshold, bool relative) {
  std::vector<int64_t> starts;
  for (size_t j = 1; j < text.size(); ++j) {
    if (continuesCharacter(text[j]) || std::isnan(entropy[j]))
      continue;
    double rise = relative ? entropy[j] - entropy[j - 1] : entropy[j];
    if (rise > threshold) // NaN (no previous prediction) never rises
      starts.push_back(static_cast<int64_t>(j));
  }
  return starts;
}

double thresholdForMean(const std::vector<float> &entropy,
                        const std::vector<uint8_t> &text, double meanBytes) {
  std::vector<float> eligible;
  for (size_t j = 1; j < text.size(); ++j)
    if (!continuesCharacter(text[j]) && !std::isnan(entropy[j]))
      eligible.push_back(entropy[j]);
  if (eligible.empty())
    return 0;
  std::sort(eligible.begin(), eligible.end(), std::greater<float>());
  // Chunks besides the one at offset 0.
  double wanted = static_cast<double>(text.size()) / meanBytes - 1;
  int64_t k = std::clamp<int64_t>(std::llround(wanted), 0,
                                  static_cast<int64_t>(eligible.size()));
  if (k == 0)
    return eligible.front(); // nothing is above the largest
  if (k == static_cast<int64_t>(eligible.size()))
    return eligible.back() - 1.0;
  return 0.5 * (static_cast<double>(eligible[k - 1]) + eligible[k]);
}

bool readEntropyText(const EntropyOptions &o, const ModelSpec &spec,
                     std::vector<uint8_t> &text, std::string &error) {
  if (sameFile(o.outPath, o.dataPath) || sameFile(o.outPath, o.checkpoint)) {
    error = o.outPath + ": is the text or the checkpoint; write the chunk "
                        "starts to another file";
    return false;
  }
  if (!TextData::readFile(o.dataPath, text, error))
    return false;
  if (text.size() < 2) {
    error = o.dataPath + ": the data file has " + std::to_string(text.size()) +
            (text.size() == 1 ? " byte" : " bytes") +
            "; there is nothing to predict";
    return false;
  }
  if (std::optional<std::string> why =
          dataOutsideVocabulary(spec, o.dataPath, text)) {
    error = *why;
    return false;
  }
  return true;
}

int writeEntropyStarts(const EntropyOptions &o,
                       const std::vector<uint8_t> &text, const EntropyModel &m,
                       FILE *out, FILE *err) {
  auto fail = [&](const std::string &msg) { return reportError(err, msg); };
  std::string error;
  std::vector<float> entropy;
  if (!byteEntropies(text, m, entropy, error, o.progress))
    return fail(error);
  double threshold = o.meanBytes > 0
                         ? thresholdForMean(entropy, text, o.meanBytes)
                         : o.threshold;
  std::vector<int64_t> starts =
      entropyStarts(entropy, text, threshold, o.relative);

  int64_t n = static_cast<int64_t>(text.size()), longest = 0, previous = 0;
  for (int64_t s : starts) {
    longest = std::max(longest, s - previous);
    previous = s;
  }
  longest = std::max(longest, n - previous);
  double mean = static_cast<double>(n) / (starts.size() + 1);
  double total = 0;
  int64_t scored = 0;
  for (float h : entropy)
    if (!std::isnan(h))
      total += h, ++scored;
  char rule[160], summary[200];
  std::snprintf(rule, sizeof rule, "%s > %.4f bits (%s)",
                o.relative ? "H[j] - H[j-1]" : "H[j]", threshold,
                o.relative ? "relative" : "global");
  std::snprintf(summary, sizeof summary,
                "%lld chunks, %.2f bytes each on average, the longest %lld",
                static_cast<long long>(starts.size() + 1), mean,
                static_cast<long long>(longest));
  std::string body = "# chunk starts of " + o.dataPath +
                     " (stlm-run entropy, " + o.checkpoint +
                     ")\n# rule: " + rule + "\n# " + summary + "\n";
  body.reserve(body.size() + starts.size() * 8);
  for (int64_t s : starts)
    body += std::to_string(s) + "\n";
  if (!writeAtomically(o.outPath, {body}, error))
    return fail(error);
  std::fprintf(out, "%s: %s; rule %s; mean entropy %.3f bits/byte\n",
               o.outPath.c_str(), summary, rule, scored ? total / scored : 0.0);
  return 0;
}

} // namespace stlm
