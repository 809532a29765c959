// RUN: stlm-opt %s -split-input-file -verify-diagnostics -stlm-quantize="scheme=int8 group=32"
// RUN: not stlm-opt %s -split-input-file -stlm-quantize="scheme=int2" 2>&1 | FileCheck %s --check-prefix=SCHEME
// SCHEME: stlm-quantize: scheme must be int8 or int4, got 'int2'

// Tests that a weight whose inputs are not whole groups is refused.
stlm.model @m {
  // expected-error @+1 {{stlm-quantize: cannot quantize 'w' (48 inputs)}}
  stlm.param @w : tensor<8x48xf32> = normal(0.02)
  func.func @logits(%x: tensor<2x48xf32>) -> tensor<2x8xf32> {
    %w = stlm.param_ref @w : tensor<8x48xf32>
    %y = stlm.linear %x, %w : tensor<2x48xf32>, tensor<8x48xf32> -> tensor<2x8xf32>
    return %y : tensor<2x8xf32>
  }
}

// -----

// Tests that a model is quantized once.
// expected-error @+1 {{stlm-quantize: model '@m' is quantized already}}
stlm.model @m attributes {stlm.quantization = {group = 32 : i64, scheme = "int8"}} {
  stlm.param @w : tensor<8x32xf32> = normal(0.02)
}
