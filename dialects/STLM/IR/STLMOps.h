//===- STLMOps.h - stlm operations ------------------------------*- C++ -*-===//
//
// The ops of the `stlm` dialect (see STLMOps.td for their exact math).
//
//===----------------------------------------------------------------------===//

#ifndef STLM_DIALECTS_STLM_IR_STLMOPS_H
#define STLM_DIALECTS_STLM_IR_STLMOPS_H

#include "dialects/STLM/IR/STLMDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/STLM/IR/STLMOps.h.inc"

namespace mlir::stlm {

/// A model's training settings: its `stlm.train` dictionary, a key it
/// leaves out read as MODEL_SPEC's default (support/TrainDefaults.h, the
/// table the frontend fills specs from). ModelOp's verifier checks the
/// dictionary with read(): every key known and of its kind (integers for
/// batch, steps, warmup, accumulate >= 1 and seed; numbers for lr, min_lr,
/// beta1, beta2, eps, weight_decay and grad_clip; schedule "cosine" or
/// "constant"; precision "fp32" or "bf16").
struct TrainSettings {
  int64_t batch, steps, warmup, accumulate, seed;
  double lr, minLr, beta1, beta2, eps, weightDecay, gradClip;
  ScheduleKind schedule;
  bool bf16;

  /// The defaults.
  TrainSettings();
  /// The settings of `model`; failure (with a diagnostic on the model) when
  /// its dictionary is malformed.
  static FailureOr<TrainSettings> read(ModelOp model);
  /// The settings of a verified `model` (the defaults, silently, for a
  /// malformed dictionary).
  static TrainSettings of(ModelOp model);

private:
  static FailureOr<TrainSettings> parse(ModelOp model, bool diagnose);
};

/// Whether the matmuls of `op`'s model take bfloat16 inputs (fp32
/// accumulation): its `stlm.train` dictionary says `precision = "bf16"`.
/// Applies to stlm.linear, linear_fused, logits, linear_grad, lowrank and
/// lowrank_merge (and their gradients); everything else computes in fp32.
bool hasBF16Matmuls(Operation *op);

} // namespace mlir::stlm

#endif // STLM_DIALECTS_STLM_IR_STLMOPS_H
