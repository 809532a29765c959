//===- Pipelines.h - the stages every stlm tool runs ------------*- C++ -*-===//
//
// The one definition of what happens to a model between the dialect and
// the native driver. Its stages are `stlm-compile --emit`'s values; each
// adds its passes to the stage before:
//
//   stlm      stlm-verify-shapes (the model as built or parsed, checked)
//   train     + stlm-autodiff (@grad, @train_step or @accumulate/@apply,
//             @eval)
//   plan      + stlm-add-decode, (stlm-quantize,) stlm-decompose,
//             stlm-fuse, stlm-plan-memory (inference functions, kernel ops,
//             epilogues, every tensor placed)
//   kernels   = plan; stlm-compile then generates the planned kernels
//   artifact  = plan; stlm-compile then writes the library, header and
//             manifest (codegen/artifact)
//   llvm      + stlm-lower-to-llvm (the driver functions in the LLVM
//             dialect)
//
// stlm-compile, stlm-run's reference engine and the tests build their pass
// managers with buildPipeline(); stlm-opt runs the same passes as
// `--stlm-pipeline=stage=NAME` (registered by registerPipelines()).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_PASSES_PIPELINES_H
#define STLM_PASSES_PIPELINES_H

#include "support/Quantize.h"

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace mlir {
class OpPassManager;
namespace stlm {

enum class Stage { STLM, Train, Plan, Kernels, Artifact, LLVM };

/// The stage's name as `--emit` spells it, and back.
llvm::StringRef stageName(Stage stage);
std::optional<Stage> parseStage(llvm::StringRef name);

/// Choices that change what a stage emits.
struct PipelineChoices {
  /// stlm-autodiff's split-step: @accumulate and @apply even without
  /// gradient accumulation (stlm-compile --data-parallel).
  bool splitStep = false;
  /// stlm-quantize after stlm-add-decode (stlm-compile --quantize): the
  /// inference functions on int8 or int4 linear weights, no training.
  std::optional<::stlm::quant::Format> quantize;
  /// stlm-add-decode's batch (stlm-compile --decode-batch): @prefill_batch
  /// and @decode_batch for that many sequences in lockstep; 0: none.
  int64_t decodeBatch = 0;
  /// stlm-decompose's merge (stlm-compile --lora-merge): auto, always or
  /// never merge a LoRA delta into its weight.
  std::string loraMerge = "auto";
  /// stlm-fuse's rope-into-attention (stlm-compile --target=cuda, sm_80
  /// and later, --fold-rope=auto or on): RoPE folded into the bf16
  /// tensor-core attention, only over at most ropeFoldMaxKeys keys where
  /// that is not 0 (auto: 64).
  bool ropeIntoAttention = false;
  int64_t ropeFoldMaxKeys = 0;
};

/// Adds the passes that take a model from the end of stage `after` (or,
/// without it, from its built or parsed form) to the end of `stage`.
void buildPipeline(OpPassManager &pm, Stage stage,
                   std::optional<Stage> after = std::nullopt,
                   const PipelineChoices &choices = {});

/// Registers `stlm-pipeline` (options `stage`, default `llvm`, and
/// `split-step`) with the
/// global pass registry.
void registerPipelines();

} // namespace stlm
} // namespace mlir

#endif // STLM_PASSES_PIPELINES_H
