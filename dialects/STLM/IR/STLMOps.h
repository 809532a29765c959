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

/// Whether the matmuls of `op`'s model take bfloat16 inputs (fp32
/// accumulation): its `stlm.train` dictionary says `precision = "bf16"`.
/// Applies to stlm.linear, linear_fused, logits, linear_grad and lowrank
/// (and their gradients); everything else computes in fp32.
bool hasBF16Matmuls(Operation *op);

} // namespace mlir::stlm

#endif // STLM_DIALECTS_STLM_IR_STLMOPS_H
