//===- FuzzSpec.cpp - the YAML spec reader --------------------------------===//
//
// Any text: parseSpec returns a spec or diagnostics. A spec it accepts
// round-trips through the JSON form a checkpoint stores, and its parameter
// table builds.
//
//===----------------------------------------------------------------------===//

#include "frontend/Params.h"
#include "frontend/Spec.h"
#include "fuzz/FuzzCheck.h"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  using namespace stlm;
  std::string text(reinterpret_cast<const char *>(data), size);
  SpecResult r = parseSpec(text, "fuzz.yaml");
  FUZZ_CHECK(r.spec.has_value() != !r.diagnostics.empty(),
             "a spec or diagnostics, not both or neither");
  if (!r.spec)
    return 0;
  std::string json = specToJson(*r.spec);
  SpecResult back = parseSpecJson(json, "json");
  FUZZ_CHECK(back.spec.has_value(), "an accepted spec's JSON form reads back");
  FUZZ_CHECK(specToJson(*back.spec) == json, "the JSON form round-trips");
  ParamTable t = buildParamTable(*r.spec);
  FUZZ_CHECK(t.uniqueCount() > 0, "a valid spec has parameters");
  return 0;
}
