//===- STLMDialect.td - the stlm dialect --------------------*- tablegen -*-===//
//
// The `stlm` dialect: super tiny language models at tensor level. Parameters
// are symbols owned by a `stlm.model`; computation is ordinary `func.func`
// bodies made of the ops in STLMOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_DIALECT_TD
#define STLM_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/EnumAttr.td"

def STLM_Dialect : Dialect {
  let name = "stlm";
  let cppNamespace = "::mlir::stlm";
  let summary = "Super tiny language models: parameters, layers, objectives, training";
  let description = [{
    The `stlm` dialect describes a transformer language model of the STLM
    family (byte or token embedders, byte pooling, tied and shared layers,
    several objectives) at tensor level, together with the training step that
    updates it.

    A model is a `stlm.model` op. Its body declares every trainable tensor once
    as a `stlm.param` symbol (named exactly as in the safetensors checkpoint)
    and holds `func.func` bodies that compute with them. A computation reads a
    parameter through `stlm.param_ref`; tying is therefore structural: a tied
    parameter is one symbol with several uses. A run of layers that share
    their weights is one `stlm.repeat` whose body is a single block;
    per-layer tensors inside it are read with `stlm.layer_param_ref`, a
    name pattern indexed by the layer.

    All tensors are statically shaped. Activations and parameters are `f32`;
    token and byte ids are `i32`; masks are `i1`; losses, learning rates and
    norms are 0-d `f32` tensors. Dimension letters used throughout: B batch,
    T time (tokens or chunks), S key positions, C chunks, L bytes per chunk,
    D width, H heads, K kv heads, V vocabulary, F FFN width, R LoRA rank.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
  let hasConstantMaterializer = 1;
}

class STLM_Op<string mnemonic, list<Trait> traits = []>
    : Op<STLM_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def STLM_InitKind : I32EnumAttr<"InitKind", "parameter initialisation", [
    I32EnumAttrCase<"normal", 0>,
    I32EnumAttrCase<"zeros", 1>,
    I32EnumAttrCase<"ones", 2>
  ]> {
  let cppNamespace = "::mlir::stlm";
}

def STLM_ChunkMode : I32EnumAttr<"ChunkMode", "byte chunking rule", [
    I32EnumAttrCase<"fixed", 0>,
    I32EnumAttrCase<"words", 1>,
    I32EnumAttrCase<"given", 2>
  ]> {
  let cppNamespace = "::mlir::stlm";
}

def STLM_PoolKind : I32EnumAttr<"PoolKind", "pooling over chunk slots", [
    I32EnumAttrCase<"mean", 0>,
    I32EnumAttrCase<"masked_mean", 1>,
    I32EnumAttrCase<"max", 2>
  ]> {
  let cppNamespace = "::mlir::stlm";
}

def STLM_MaskKind : I32EnumAttr<"MaskKind", "attention mask", [
    I32EnumAttrCase<"causal", 0>,
    I32EnumAttrCase<"none", 1>
  ]> {
  let cppNamespace = "::mlir::stlm";
}

def STLM_ScheduleKind : I32EnumAttr<"ScheduleKind", "learning-rate schedule", [
    I32EnumAttrCase<"cosine", 0>,
    I32EnumAttrCase<"constant", 1>
  ]> {
  let cppNamespace = "::mlir::stlm";
}

//===----------------------------------------------------------------------===//
// Attribute constraints
//===----------------------------------------------------------------------===//

// A 64-bit integer attribute read back as a signed value, so that a negative
// count or index is reported as such by the verifiers.
def STLM_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t",
                                                "64-bit signless integer attribute"> {
  let convertFromStorage = "$_self.getValue().getSExtValue()";
}

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

// Activations and parameters: statically shaped f32 tensors.
def STLM_Tensor : StaticShapeTensorOf<[F32]>;
// Parameters: f32, or the bytes of a quantized weight (stlm-quantize:
// int8 values as i8, int4 pairs packed into one byte as ui8).
def STLM_ParamTensor : StaticShapeTensorOf<[F32, I8, UI8]>;
// Token / byte ids.
def STLM_IdTensor : StaticShapeTensorOf<[I32]>;
// Boolean masks.
def STLM_MaskTensor : StaticShapeTensorOf<[I1]>;
// Persistent training state: f32 tensors (optimizer moments) or i32 (the
// step counter).
def STLM_StateTensor : StaticShapeTensorOf<[F32, I32]>;
// Scalars: a loss, a learning rate, a norm.
def STLM_Scalar : 0DTensorOf<[F32]> {
  let builderCall = "::mlir::RankedTensorType::get({}, $_builder.getF32Type())";
}
// Scalar integer: an optimizer step, a seed, a position offset.
def STLM_IntScalar : 0DTensorOf<[I32]> {
  let builderCall =
      "::mlir::RankedTensorType::get({}, $_builder.getIntegerType(32))";
}

#endif // STLM_DIALECT_TD
