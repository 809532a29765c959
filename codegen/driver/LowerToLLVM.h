//===- LowerToLLVM.h - a compiled model's driver in LLVM IR -*- C++ -*-===//
//
// Lowers the planned functions of a model (after stlm-autodiff and
// stlm-plan-memory) to LLVM-dialect functions that call the model's Halide
// kernels on one weights blob and one arena:
//
//   int32_t <m>_grad(void *weights, void *arena, const int32_t *tokens,
//                    const int32_t *targets, const int32_t *seed,
//                    float *loss)
//   int32_t <m>_train_step(..., const int32_t *seed,
//                          float out[3])  // loss, grad norm, lr
//   int32_t <m>_eval(..., const int32_t *seed, float *loss)
//
// (and @accumulate like @grad, @apply with `out` only). `seed` is the
// mask seed of a masked objective; models without one ignore it.
//
// and, for the inference functions stlm-add-decode adds (KV caches in the
// weights blob, written in place):
//
//   int32_t <m>_logits(void *weights, void *arena, const int32_t *tokens,
//                      float *logits)                 // [B, T, V]
//   int32_t <m>_prefill(void *weights, void *arena, const int32_t *tokens,
//                       float *logits)                // [1, T] -> [1, T, V]
//   int32_t <m>_decode_step(void *weights, void *arena,
//                           const int32_t *token, const int32_t *pos,
//                           float *logits)            // [V]
//   <m>_prefill_batch, <m>_decode_batch: the same for S sequences in
//                           lockstep (stlm-add-decode's batch): tokens
//                           [S, T] and [S], logits [S, T, V] and [S, V]
//
// A quantized model (stlm-quantize: the `stlm.quantization` attribute)
// infers only: it has <m>_eval and the inference functions, no training.
//
// Each returns 0 or the first failing kernel's Halide error code
// (negative); a decode position outside the cache returns
// stlm::format::kPositionOutOfRange (stlm/artifact_format.h, shared with
// the artifact writer and the runtime). Every buffer is 64-byte aligned: the
// weights and the arena by the caller, the offsets by the plan. Kernel `i` of
// the plan is `<m>_k<i>`.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_DRIVER_LOWERTOLLVM_H
#define STLM_CODEGEN_DRIVER_LOWERTOLLVM_H

#include "codegen/artifact/KernelPlan.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>
#include <string>
#include <vector>

namespace stlm::codegen {

/// Where @grad leaves each parameter's gradient: an arena offset.
struct DriverLayout {
  std::vector<std::string> gradParams;
  std::vector<int64_t> gradOffsets;
  int64_t arenaSize = 0;   // the largest arena of the compiled functions
  int64_t weightsSize = 0; // parameters and optimizer state
  /// The inference entry points lowered ("logits", "prefill",
  /// "decode_step"), in order.
  std::vector<std::string> inference;
  /// The sequences of @prefill_batch and @decode_batch (stlm-add-decode's
  /// batch); 0 without them.
  int64_t decodeBatch = 0;
  /// The model trains (@grad and a step were lowered); false for a
  /// quantized one, which has @eval and the inference functions only.
  bool training = true;
};

/// The C symbol prefix of `model`: its symbol name (already an identifier).
std::string symbolPrefix(mlir::stlm::ModelOp model);

class KernelTarget;

/// Adds the driver functions of `model` to `module` (top level), calling
/// kernels the way `target` does (codegen/driver/KernelTarget.h; null: the
/// host's Halide kernels); the model stays for the caller to describe, and
/// must be erased before translation. Fails with a diagnostic on an op the
/// driver cannot lower.
mlir::FailureOr<DriverLayout> lowerToLLVM(mlir::ModuleOp module,
                                          mlir::stlm::ModelOp model,
                                          const KernelPlan &plan,
                                          KernelTarget *target = nullptr);

/// `stlm-lower-to-llvm`: plans the kernels for the host and lowers every
/// model of the module (for stlm-opt and lit tests).
std::unique_ptr<mlir::Pass> createLowerToLLVMPass();
void registerLowerToLLVMPass();


} // namespace stlm::codegen

#endif // STLM_CODEGEN_DRIVER_LOWERTOLLVM_H
