//===- EmitCuda.h - a planned model as CUDA source -------------*- C++ -*-===//
//
// The CUDA target of stlm-compile (--target=cuda). From the planned
// functions of a model (after stlm-autodiff and stlm-plan-memory: every
// tensor at a fixed offset in the weights blob or the arena) it writes one
// CUDA C++ file that nvcc compiles for the GPU:
//
//   - a body per function: the launches of codegen/cuda/Kernels.cuh's
//     kernels (instantiated for the model's head width, launched with its
//     shapes) and cuBLASLt matmuls, in the function's op order, on device
//     pointers into the weights blob, the arena, a scratch buffer and a
//     block of device scalars (loss, lr, step, norm, constants). Nothing
//     crosses to the host inside a body, so an entry point is captured once
//     as a CUDA graph and replayed (Kernels.cuh's run());
//   - the entry points of stlm/stlm.h with the host target's signatures,
//     taking the device context (stlm_device.open) as `weights`;
//   - the descriptor `<symbol>_artifact` with its stlm_device.
//
// Why CUDA C++ through nvcc rather than Halide's CUDA backend or MLIR's
// NVVM path: nvcc is the code generator that knows sm_90 best (Halide 14
// stops at compute capability 8.6 and neither uses tensor cores, which
// stay with cuBLASLt anyway), and the kernels are short templates whose
// shapes the emitter fixes, so every launch is specialised for the model
// as the Halide kernels are on the CPU.
//
// Fusions made here: the softmax cross-entropy and its gradient in one
// pass when the gradient follows the loss; clipping folded into AdamW (the
// clip factor scales the gradient as AdamW reads it); AdamW over every
// parameter of a step in one launch, through a table of offsets; a
// residual added by the matmul (cuBLASLt's C operand).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_CUDA_EMITCUDA_H
#define STLM_CODEGEN_CUDA_EMITCUDA_H

#include "codegen/driver/LowerToLLVM.h"
#include "dialects/STLM/IR/STLMOps.h"

#include <string>
#include <utility>
#include <vector>

namespace stlm::codegen {

/// The widest head of the bf16 tensor-core attention kernels
/// (Kernels.cuh's kBfMaxHead).
constexpr int64_t kBfMaxHead = 64;

/// Whether a bf16 model's attention with heads `hd` wide over `queries`
/// queries runs on tensor cores with bf16 operands (attentionBf ..., on
/// sm_80 and later): the attention into which stlm-fuse's
/// rope-into-attention folds RoPE, since only those kernels rotate q and k
/// as they load them.
inline bool bf16TensorCoreAttention(int64_t hd, int64_t queries) {
  return hd % 16 == 0 && hd <= kBfMaxHead && queries >= 16;
}

/// The queries (keys) of a block of the tensor-core attention kernels
/// (Kernels.cuh's kTcRows). With RoPE folded in, each such block rotates
/// every k (q) row it reads, so the fold pays only where the attention has
/// at most this many keys (stlm-compile --fold-rope=auto).
constexpr int64_t kTcBlockRows = 64;

/// What emitCuda wrote.
struct CudaSource {
  /// The CUDA C++ file, less its descriptor (cudaDescriptor()).
  std::string text;
  /// Where the gradients are, the buffer sizes and the inference entry
  /// points, as the host driver's (for the manifest).
  DriverLayout layout;
  /// The step is @accumulate (a micro-batch) and @apply, not @train_step.
  bool splitStep = false;
};

/// The CUDA source of planned `model` for compute capability `sm` (90:
/// sm_90). `tf32`: the matmuls of a `precision: fp32` model run on tensor
/// cores with TF32 operands (about 1e-3 relative error instead of fp32
/// rounding). Where the matmuls take tensor-core operands (`tf32`, or
/// `precision: bf16`) and `sm` >= 80, attention does too (TF32). Fails with
/// a diagnostic on the model's op that the CUDA target does not compile
/// yet.
mlir::FailureOr<CudaSource> emitCuda(mlir::stlm::ModelOp model,
                                     bool tf32 = false, int sm = 90);

/// The descriptor `<symbol>_artifact` holding `manifest`, to append to
/// CudaSource::text (`splitStep`: CudaSource::splitStep); with
/// `embeddedSize` > 0 it points to
/// `<symbol>_embedded_weights`, an embedded checkpoint of that many bytes
/// defined in another object.
std::string cudaDescriptor(const std::string &symbol,
                           const std::string &manifest,
                           const DriverLayout &layout, bool splitStep = false,
                           int64_t embeddedSize = 0);

/// The headers the generated source includes, carried by the compiler and
/// written beside it: (path relative to the source, text) of
/// codegen/cuda/Kernels.cuh and runtime/include/stlm/stlm.h.
std::vector<std::pair<std::string, std::string>> cudaSupportFiles();

} // namespace stlm::codegen

#endif // STLM_CODEGEN_CUDA_EMITCUDA_H
