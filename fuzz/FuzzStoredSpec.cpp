//===- FuzzStoredSpec.cpp - the JSON spec a checkpoint stores -------------===//
//
// Any text as __metadata__.stlm_spec: parseSpecJson returns a spec or
// diagnostics, with bounded work (it is JSON, never handed to yaml-cpp's
// stream reader), and an accepted spec round-trips.
//
//===----------------------------------------------------------------------===//

#include "frontend/Spec.h"
#include "fuzz/FuzzCheck.h"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace stlm;
  std::string text(reinterpret_cast<const char *>(data), size);
  SpecResult r = parseSpecJson(text, "stored");
  FUZZ_CHECK(r.spec.has_value() != !r.diagnostics.empty(),
             "a spec or diagnostics, not both or neither");
  if (!r.spec)
    return 0;
  std::string json = specToJson(*r.spec);
  SpecResult back = parseSpecJson(json, "json");
  FUZZ_CHECK(back.spec.has_value() && specToJson(*back.spec) == json,
             "the JSON form round-trips");
  return 0;
}
