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

#endif // STLM_DIALECTS_STLM_IR_STLMOPS_H
