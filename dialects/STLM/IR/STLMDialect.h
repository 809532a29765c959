//===- STLMDialect.h - the stlm dialect -------------------------*- C++ -*-===//
//
// Declares the `stlm` dialect and its enums. Include STLMOps.h for the ops.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_DIALECTS_STLM_IR_STLMDIALECT_H
#define STLM_DIALECTS_STLM_IR_STLMDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Dialect.h"

#include "dialects/STLM/IR/STLMDialect.h.inc"
#include "dialects/STLM/IR/STLMEnums.h.inc"

#endif // STLM_DIALECTS_STLM_IR_STLMDIALECT_H
