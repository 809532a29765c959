//===- InitAll.cpp - the one registration point for stlm tools ------------===//

#include "tools/common/InitAll.h"

#include "codegen/driver/LowerToLLVM.h"
#include "dialects/STLM/IR/STLMDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "passes/Passes.h"
#include "passes/Pipelines.h"

void mlir::stlm::registerAllDialects(DialectRegistry &registry) {
  registry.insert<STLMDialect, func::FuncDialect, arith::ArithDialect,
                  tensor::TensorDialect, LLVM::LLVMDialect>();
}

void mlir::stlm::registerAllPasses() {
  registerSTLMPasses();
  ::stlm::codegen::registerLowerToLLVMPass();
  registerPipelines();
  // Upstream passes that are useful on stlm IR.
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::registerInlinerPass();
  mlir::registerSymbolDCEPass();
}
