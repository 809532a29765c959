//===- KernelPlan.h - which kernels compute each op, and how -*- C++ -*-===//
//
// The one place that says, for every op of the planned functions of a model
// (training step, evaluation, inference), which kernel calls compute it: a
// generator of stlm-kernelgen with its shape parameters, and the arguments
// of the call in the kernel's order (operands and results as buffers of a
// given rank, driver scalars, constants). Ops without calls are driver work
// (scalars, parameter reads and writes, cache rows); ops with no kernel yet
// are reported, not skipped.
//
// The plan (which kernels an artifact generates) and the driver (which
// kernels it calls, codegen/driver) both read these calls, so they cannot
// disagree. The calls name no target: the host driver turns each argument
// into a halide_buffer_t or a scalar; another target would turn the same
// calls into device buffers and launches.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_CODEGEN_ARTIFACT_KERNELPLAN_H
#define STLM_CODEGEN_ARTIFACT_KERNELPLAN_H

#include "dialects/STLM/IR/STLMOps.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace stlm::codegen {

/// A linear layer of at most this many rows (generation's: one per
/// sequence decoded) runs as stlm_matvec, which streams the weights once;
/// it takes no fused epilogue, so stlm-fuse leaves such matmuls apart.
inline constexpr int64_t kMatVecMaxRows = 16;

/// Whether a quantized linear weight of `out` outputs and `in` inputs
/// (`scheme` "int8" or "int4", groups of `group` inputs) is kept in the
/// kernels' tiles (support/QuantTiles.h): its kernel is then
/// stlm_qmatvec_tiled_<scheme>, and the manifest gives it and its scales
/// that "layout", which the runtime arranges when it loads them.
bool tiledWeight(llvm::StringRef scheme, int64_t out, int64_t in,
                 int64_t group);

/// One kernel specialisation: `stlm-kernelgen -g generator key=value ...`.
struct KernelSpec {
  std::string generator;
  std::vector<std::pair<std::string, std::string>> params;

  /// "generator k1=v1 k2=v2": equal keys are the same kernel.
  std::string key() const;
};

/// One argument of a kernel call, in the kernel's parameter order.
struct KernelArg {
  enum class Kind {
    Operand, // `value` (an operand of the op), a buffer of `rank` dims
    Result,  // result `index` of the op, a buffer of `rank` dims
    Scalar,  // the scalar `value` (i32 or f32), by value
    F32,     // the constant `number`, an f32
    I32,     // the constant `number`, an i32
    Ones,    // a constant row of `count` bytes of 1, a 1-d buffer
    Driver,  // what the driver computes between calls (see the op's rule)
  };
  Kind kind = Kind::Operand;
  mlir::Value value;
  unsigned index = 0;
  int rank = 0;
  double number = 0;
  int64_t count = 0;

  static KernelArg operand(mlir::Value v, int rank) {
    return {Kind::Operand, v, 0, rank};
  }
  static KernelArg result(unsigned i, int rank) {
    return {Kind::Result, {}, i, rank};
  }
  static KernelArg scalar(mlir::Value v) { return {Kind::Scalar, v}; }
  static KernelArg f32(double x) { return {Kind::F32, {}, 0, 0, x}; }
  static KernelArg i32(int64_t x) {
    return {Kind::I32, {}, 0, 0, static_cast<double>(x)};
  }
  static KernelArg ones(int64_t n) { return {Kind::Ones, {}, 0, 1, 0, n}; }
  static KernelArg driver() { return {Kind::Driver}; }
};

/// One call of a kernel.
struct KernelCall {
  KernelSpec spec;
  std::vector<KernelArg> args;
};

struct KernelPlan {
  /// Unique kernels in first-use order, and how many ops use each.
  std::vector<KernelSpec> kernels;
  std::vector<int64_t> uses;
  int64_t kernelOps = 0, driverOps = 0;
  /// "<op name>: <why>" for every op with no kernel, counted.
  std::map<std::string, int64_t> unsupported;
  /// KernelSpec::key() -> position in `kernels`.
  std::map<std::string, size_t> index;

  /// "'<model>' has ops the native path cannot compile yet:" and one line
  /// per entry of `unsupported` ("  <op>: <why> (<n> ops)").
  std::string explainUnsupported(const std::string &model) const;
};

/// The kernel calls of one op, in order: empty for driver work, empty with
/// `why` set when no kernel computes it yet.
///
/// Results are written where the driver placed them (the arena offsets of
/// stlm-plan-memory, or in place where the op updates a weights slot:
/// stlm.adamw, and an @accumulate sum into its state). Only
/// stlm.clip_grad_norm takes `Driver` arguments: its calls are one
/// stlm_sum_squares per gradient (Driver: the f64 buffer of its sum), then,
/// when it clips, one stlm_scale per gradient in place (Driver: the f32
/// clip factor).
std::vector<KernelCall> kernelCallsFor(mlir::Operation *op, std::string &why);

/// The kernels of kernelCallsFor(), in order.
std::vector<KernelSpec> kernelsFor(mlir::Operation *op, std::string &why);

/// The functions of a model the native path compiles, in planning order:
/// @grad, @train_step (or @accumulate, @apply), @eval, and the inference
/// functions @logits, @prefill and @decode_step (see stlm-add-decode).
std::vector<mlir::func::FuncOp> compiledFunctions(mlir::stlm::ModelOp model);

/// Plans the compiled functions of `model` (after stlm-autodiff and the
/// plan passes). Kernels are generated for the host; they take any shape.
KernelPlan planKernels(mlir::stlm::ModelOp model);

} // namespace stlm::codegen

#endif // STLM_CODEGEN_ARTIFACT_KERNELPLAN_H
