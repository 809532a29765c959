//===- FuzzData.cpp - training text ---------------------------------------===//
//
// Any bytes as training text, with a window width taken from the input:
// the loader accepts it or says why, and the windows it hands out (training
// batches for any seed and step, every validation window) stay inside it.
//
//===----------------------------------------------------------------------===//

#include "frontend/Data.h"
#include "fuzz/FuzzCheck.h"

#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace stlm;
  if (size < 10)
    return 0;
  uint16_t w;
  uint64_t seed;
  std::memcpy(&w, data, 2);
  std::memcpy(&seed, data + 2, 8);
  int64_t window = w % 64; // 0 is refused
  std::vector<uint8_t> text(data + 10, data + size);
  TextData d;
  std::string error;
  if (!d.assign(text, window, "fuzz", error)) {
    FUZZ_CHECK(!error.empty(), "a refused text says why");
    return 0;
  }
  FUZZ_CHECK(d.trainBytes() + d.validationBytes() ==
                 static_cast<int64_t>(text.size()),
             "the splits cover the text");
  std::vector<int32_t> batch;
  d.trainBatch(seed, static_cast<int64_t>(seed % 1000), 3, batch);
  FUZZ_CHECK(batch.size() == static_cast<size_t>(3 * window),
             "a batch of 3 windows");
  std::vector<int32_t> row(window);
  for (int64_t i = 0; i < d.validationWindows(); ++i)
    d.validationWindow(i, row.data());
  return 0;
}
