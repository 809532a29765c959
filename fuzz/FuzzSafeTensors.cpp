//===- FuzzSafeTensors.cpp - checkpoints as stlm-run reads them -----------===//
//
// Any bytes as a safetensors file: the reader accepts it or says why; every
// tensor it accepts lies inside the data section; and what stlm-run does
// next with a checkpoint (read the stored spec, check the tensors against
// its parameter table) finishes with bounded work.
//
//===----------------------------------------------------------------------===//

#include "frontend/Params.h"
#include "frontend/Weights.h"
#include "fuzz/FuzzCheck.h"
#include "support/SafeTensors.h"

#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace stlm;
  std::string error;
  std::vector<uint8_t> image(data, data + size);
  auto file = SafeTensorsFile::fromBuffer(std::move(image), "fuzz", error);
  FUZZ_CHECK(file || !error.empty(), "a refused file says why");
  if (!file)
    return 0;
  uint64_t bytes = 0;
  for (const TensorView &t : file->tensors()) {
    FUZZ_CHECK(t.size == static_cast<size_t>(t.numel()) * dtypeSize(t.dtype),
               "a tensor's size is its shape times its dtype's");
    bytes += t.size;
    FUZZ_CHECK(bytes <= size, "tensors lie inside the file");
    FUZZ_CHECK(file->find(t.name) != nullptr, "every tensor is found by name");
  }
  std::optional<SpecResult> spec = storedSpec(*file, "fuzz");
  if (spec && spec->spec) {
    ParamTable table = buildParamTable(*spec->spec);
    (void)checkWeights(table, *file);
  }
  return 0;
}
