//===- BuildModel.h - model spec → stlm IR ----------------------*- C++ -*-===//
//
// Builds the `stlm.model` of a validated spec: one `stlm.param` per entry of
// its ParamTable (same names, shapes, inits) and the functions
//
//   token models:     @logits(tokens [B,T] i32) -> [B,T,V]
//                     @loss(tokens, targets [B,T] i32
//                           [, seed i32] (masked_next_token)) -> f32
//                     @teacher_logits(tokens) -> [B,T,V] (distill: the
//                       teacher's forward pass, its weights the frozen
//                       states teacher.<name>)
//   byte_pool models: @encode(chunks [B,T,L] i32) -> [B,T,D]
//                     @core(x [B,T,D]) -> [B,T,D]
//                     @decode(x [B,T,D]) -> [B,T,L,258]
//                     @logits(bytes [B,N] i32) -> [B,T,L,258]
//                     @loss(bytes) -> f32
//                     (`given` chunking: a byte + 512 opens a chunk)
//
// with B = train.batch, T = core.context, N = ModelSpec::windowBytes().
// Consecutive layers that share the same weights form one `stlm.repeat`.
// The model carries the training settings as the `stlm.train` dictionary.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_FRONTEND_BUILDMODEL_H
#define STLM_FRONTEND_BUILDMODEL_H

#include "frontend/Spec.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace stlm {

/// The function computing a distilling student's teacher's logits (whose
/// weights are the states kTeacherPrefix + name, frontend/Spec.h).
inline constexpr const char *kTeacherLogits = "teacher_logits";

/// The module holding the model of `spec` (which must be valid). The
/// stlm, func and arith dialects must be loadable in `context`.
mlir::OwningOpRef<mlir::ModuleOp> buildModel(mlir::MLIRContext &context,
                                             const ModelSpec &spec);

} // namespace stlm

#endif // STLM_FRONTEND_BUILDMODEL_H
