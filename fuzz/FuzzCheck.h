//===- FuzzCheck.h - what every fuzz target shares -------------*- C++ -*-===//
//
// A fuzz target is a `LLVMFuzzerTestOneInput` that must return 0 for every
// input: bad input is an error message, never a crash, a hang or a runaway
// allocation. FUZZ_CHECK states a property that holds for every input (a
// round trip, a bound); it aborts so that both libFuzzer and the replay
// driver report the input.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FUZZ_FUZZCHECK_H
#define STLM_FUZZ_FUZZCHECK_H

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,         \
                   __LINE__, what);                                            \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

#endif // STLM_FUZZ_FUZZCHECK_H
