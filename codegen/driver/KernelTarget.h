//===- KernelTarget.h - how a driver passes tensors and calls kernels -*- C++ -*-===//
//
// The seam between the driver and the machine it runs on. The driver
// (LowerToLLVM.h) decides where every tensor lives (weights blob, arena,
// caller's buffers) and which kernel calls an op makes (its rule in
// codegen/artifact/KernelPlan.h); a KernelTarget decides what a tensor
// argument is and how a kernel is called.
//
// The host target: a halide_buffer_t descriptor on the stack per tensor
// (host pointer, type, a constant table of dimensions) and a direct call of
// the Halide kernel `<m>_k<i>`, returning its status; the module becomes a
// host object (emitObjectFile). The CUDA target (codegen/cuda) is not a
// KernelTarget: this driver computes scalars on the host between calls,
// which a step captured as one CUDA graph cannot do (docs/structure.md,
// "A second target").
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_DRIVER_KERNELTARGET_H
#define STLM_CODEGEN_DRIVER_KERNELTARGET_H

#include "codegen/artifact/KernelPlan.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <memory>
#include <string>

namespace stlm::codegen {

class KernelTarget {
public:
  /// The most tensors one kernel call takes.
  static constexpr int kMaxTensors = 8;

  virtual ~KernelTarget() = default;
  /// The target's name, as the manifest's `target` says it.
  virtual llvm::StringRef name() const = 0;
  /// Called with `b` at the start of every driver function's entry block.
  virtual void beginFunction(mlir::OpBuilder &b, mlir::Location loc) = 0;
  /// A tensor argument of a kernel call: the dense row-major tensor of type
  /// `type` at `ptr`, seen by the kernel as `rank` dimensions (leading ones
  /// collapsed, or unit ones added); `slot` in [0, kMaxTensors) is its
  /// place among the tensors of one call.
  virtual mlir::Value tensor(mlir::OpBuilder &b, mlir::Location loc,
                             mlir::Value ptr, mlir::RankedTensorType type,
                             int rank, int slot) = 0;
  /// A tensor argument holding `n` bytes of 1, a constant.
  virtual mlir::Value ones(mlir::OpBuilder &b, mlir::Location loc, int64_t n,
                           int slot) = 0;
  /// Calls kernel `index` of the plan (`spec`) with `args`; returns its
  /// i32 status (0 on success).
  virtual mlir::Value call(mlir::OpBuilder &b, mlir::Location loc,
                           size_t index, const KernelSpec &spec,
                           mlir::ValueRange args) = 0;
};

/// The host target for the driver in `module` of the model whose C symbol
/// prefix is `prefix`.
std::unique_ptr<KernelTarget> createHostTarget(mlir::ModuleOp module,
                                               const std::string &prefix);

/// Writes `module` (LLVM dialect only) as a host object file.
mlir::LogicalResult emitObjectFile(mlir::ModuleOp module,
                                   const std::string &path,
                                   std::string &error);

} // namespace stlm::codegen

#endif // STLM_CODEGEN_DRIVER_KERNELTARGET_H
