//===- STLMDialect.cpp - the stlm dialect ---------------------------------===//

#include "dialects/STLM/IR/STLMDialect.h"

#include "dialects/STLM/IR/STLMOps.h"

using namespace mlir;
using namespace mlir::stlm;

#include "dialects/STLM/IR/STLMDialect.cpp.inc"
#include "dialects/STLM/IR/STLMEnums.cpp.inc"

void STLMDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/STLM/IR/STLMOps.cpp.inc"
      >();
}

Operation *STLMDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                            Type type, Location loc) {
  // Folds produce dense tensor constants (e.g. a learning rate).
  auto typed = llvm::dyn_cast<TypedAttr>(value);
  if (!typed || typed.getType() != type)
    return nullptr;
  return builder.create<arith::ConstantOp>(loc, type, typed);
}
