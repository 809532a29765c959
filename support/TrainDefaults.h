//===- TrainDefaults.h - MODEL_SPEC's training defaults, once ---*- C++ -*-===//
//
// The values of a spec's `train` section when it leaves them out. The
// frontend fills a ModelSpec with them (frontend/Spec.h), and the dialect
// reads a key missing from a model's `stlm.train` dictionary as them
// (mlir::stlm::TrainSettings, dialects/STLM/IR/STLMOps.h), so a model built
// from a spec and one written by hand in the dialect train alike.
// Header-only, no dependencies.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_SUPPORT_TRAINDEFAULTS_H
#define STLM_SUPPORT_TRAINDEFAULTS_H

#include <cstdint>

namespace stlm::train_defaults {

inline constexpr int64_t kBatch = 12;
inline constexpr int64_t kSteps = 2000;
inline constexpr double kLr = 1e-3;
inline constexpr double kMinLr = 1e-4;
inline constexpr int64_t kWarmup = 100;
inline constexpr bool kCosineSchedule = true; // else constant
inline constexpr double kBeta1 = 0.9;
inline constexpr double kBeta2 = 0.99;
inline constexpr double kEps = 1e-8;
inline constexpr double kWeightDecay = 0.1;
inline constexpr double kGradClip = 1.0;
inline constexpr int64_t kAccumulate = 1;
inline constexpr int64_t kSeed = 1337;
inline constexpr bool kBF16 = false; // else fp32

} // namespace stlm::train_defaults

#endif // STLM_SUPPORT_TRAINDEFAULTS_H
