// RUN: stlm-opt %s -split-input-file -stlm-quantize="scheme=int8 group=4" | FileCheck %s --check-prefix=INT8
// RUN: stlm-opt %s -split-input-file -stlm-quantize="scheme=int4 group=4" | FileCheck %s --check-prefix=INT4

// Tests that a weight read only by linears becomes its bytes and a scale
// parameter, in a repeat (layer_param_ref) and out of one (param_ref);
// that the embedding, the norm and a LoRA factor stay f32; that the
// training functions and the optimizer state go while the KV cache and
// the step stay; and that the model records the format.
// INT8:      stlm.model @m attributes {stlm.quantization = {group = 4 : i64, scheme = "int8"}}
// INT8:      stlm.param @embed.tok : tensor<16x8xf32> = normal
// INT8-NEXT: stlm.param @norm : tensor<8xf32> = ones
// INT8-NEXT: stlm.param @layers.0.w : tensor<8x8xi8> = zeros
// INT8-NEXT: stlm.param @layers.0.w.scale : tensor<8x2xf32> = zeros
// INT8-NEXT: stlm.param @layers.1.w : tensor<8x8xi8> = zeros
// INT8-NEXT: stlm.param @layers.1.w.scale : tensor<8x2xf32> = zeros
// INT8-NEXT: stlm.param @lora.a : tensor<2x8xf32> = normal
// INT8-NEXT: stlm.param @lora.b : tensor<8x2xf32> = zeros
// INT8-NEXT: stlm.param @head.w : tensor<12x8xi8> = zeros
// INT8-NEXT: stlm.param @head.w.scale : tensor<12x2xf32> = zeros
// INT8-NEXT: stlm.state @step : tensor<i32>
// INT8-NEXT: stlm.state @kv.0.k : tensor<1x4x8xf32>
// INT8-NOT:  opt.m
// INT8-LABEL: func.func @logits
// INT8:      stlm.repeat 0 to 2
// INT8:      %[[W:.*]] = stlm.layer_param_ref "layers.{}.w"[%{{.*}}] : tensor<8x8xi8>
// INT8-NEXT: %[[S:.*]] = stlm.layer_param_ref "layers.{}.w.scale"[%{{.*}}] : tensor<8x2xf32>
// INT8-NEXT: stlm.qlinear %{{.*}}, %[[W]], %[[S]] {group = 4 : i64, scheme = "int8"} : tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8x2xf32> -> tensor<2x4x8xf32>
// INT8:      stlm.lowrank
// INT8:      %[[H:.*]] = stlm.param_ref @head.w : tensor<12x8xi8>
// INT8-NEXT: %[[HS:.*]] = stlm.param_ref @head.w.scale : tensor<12x2xf32>
// INT8-NEXT: stlm.qlinear %{{.*}}, %[[H]], %[[HS]]
// INT8-NOT:  func.func @grad
// INT8-NOT:  func.func @train_step
// INT8-NOT:  stlm.linear

// INT4:      stlm.param @layers.0.w : tensor<8x4xui8> = zeros
// INT4-NEXT: stlm.param @layers.0.w.scale : tensor<8x2xf32> = zeros
// INT4:      stlm.qlinear %{{.*}}, %{{.*}}, %{{.*}} {group = 4 : i64, scheme = "int4"} : tensor<2x4x8xf32>, tensor<8x4xui8>, tensor<8x2xf32> -> tensor<2x4x8xf32>
stlm.model @m {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(0.02)
  stlm.param @norm : tensor<8xf32> = ones
  stlm.param @layers.0.w : tensor<8x8xf32> = normal(0.02)
  stlm.param @layers.1.w : tensor<8x8xf32> = normal(0.02)
  stlm.param @lora.a : tensor<2x8xf32> = normal(0.02)
  stlm.param @lora.b : tensor<8x2xf32> = zeros
  stlm.param @head.w : tensor<12x8xf32> = normal(0.02)
  stlm.state @step : tensor<i32>
  stlm.state @opt.m.head.w : tensor<12x8xf32>
  stlm.state @kv.0.k : tensor<1x4x8xf32>
  func.func @logits(%ids: tensor<2x4xi32>) -> tensor<2x4x12xf32> {
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %y = stlm.repeat 0 to 2 (%x) : tensor<2x4x8xf32> {
    ^bb0(%l: index, %h: tensor<2x4x8xf32>):
      %g = stlm.param_ref @norm : tensor<8xf32>
      %n = stlm.rmsnorm %h, %g : tensor<2x4x8xf32>, tensor<8xf32>
      %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<8x8xf32>
      %f = stlm.linear %n, %w : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
      %s = stlm.add %h, %f : tensor<2x4x8xf32>, tensor<2x4x8xf32>
      stlm.yield %s : tensor<2x4x8xf32>
    }
    %a = stlm.param_ref @lora.a : tensor<2x8xf32>
    %b = stlm.param_ref @lora.b : tensor<8x2xf32>
    %d = stlm.lowrank %y, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32> -> tensor<2x4x8xf32>
    %z = stlm.add %y, %d : tensor<2x4x8xf32>, tensor<2x4x8xf32>
    %hw = stlm.param_ref @head.w : tensor<12x8xf32>
    %o = stlm.linear %z, %hw : tensor<2x4x8xf32>, tensor<12x8xf32> -> tensor<2x4x12xf32>
    return %o : tensor<2x4x12xf32>
  }
  func.func @grad(%x: tensor<3x8xf32>, %dy: tensor<3x12xf32>) -> tensor<12x8xf32> {
    %w = stlm.param_ref @head.w : tensor<12x8xf32>
    %dx, %dw = stlm.linear_grad %x, %w, %dy : tensor<3x8xf32>, tensor<12x8xf32>, tensor<3x12xf32>
    return %dw : tensor<12x8xf32>
  }
  func.func @train_step(%x: tensor<3x8xf32>, %dy: tensor<3x12xf32>) -> tensor<12x8xf32> {
    %m = stlm.state_ref @opt.m.head.w : tensor<12x8xf32>
    return %m : tensor<12x8xf32>
  }
}
