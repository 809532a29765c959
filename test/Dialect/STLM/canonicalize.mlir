// RUN: stlm-opt %s -split-input-file -canonicalize | FileCheck %s

// Tests that a weighted sum of one term with weight 1 is the term itself.
// CHECK-LABEL: func.func @single_term
// CHECK-SAME: (%[[A:.*]]: tensor<f32>)
// CHECK-NOT: stlm.weighted_sum
// CHECK: return %[[A]]
func.func @single_term(%a: tensor<f32>) -> tensor<f32> {
  %s = stlm.weighted_sum %a {weights = [1.0]} : tensor<f32>
  return %s : tensor<f32>
}

// -----

// Tests that a single term with another weight is kept.
// CHECK-LABEL: func.func @single_scaled_term
// CHECK: stlm.weighted_sum %{{.*}} {weights = [5.000000e-01]} : tensor<f32>
func.func @single_scaled_term(%a: tensor<f32>) -> tensor<f32> {
  %s = stlm.weighted_sum %a {weights = [0.5]} : tensor<f32>
  return %s : tensor<f32>
}

// -----

// Tests that zero-weight terms are dropped, and the sum then folds away.
// CHECK-LABEL: func.func @zero_weights
// CHECK-SAME: (%{{.*}}: tensor<f32>, %[[B:.*]]: tensor<f32>, %{{.*}}: tensor<f32>)
// CHECK-NOT: stlm.weighted_sum
// CHECK: return %[[B]]
func.func @zero_weights(%a: tensor<f32>, %b: tensor<f32>, %c: tensor<f32>) -> tensor<f32> {
  %s = stlm.weighted_sum %a, %b, %c {weights = [0.0, 1.0, 0.0]} : tensor<f32>, tensor<f32>, tensor<f32>
  return %s : tensor<f32>
}

// -----

// Tests that when every weight is zero one term is kept, so the loss is 0.
// CHECK-LABEL: func.func @all_zero_weights
// CHECK-SAME: (%[[A:.*]]: tensor<f32>, %{{.*}}: tensor<f32>)
// CHECK: stlm.weighted_sum %[[A]] {weights = [0.000000e+00]} : tensor<f32>
func.func @all_zero_weights(%a: tensor<f32>, %b: tensor<f32>) -> tensor<f32> {
  %s = stlm.weighted_sum %a, %b {weights = [0.0, 0.0]} : tensor<f32>, tensor<f32>
  return %s : tensor<f32>
}

// -----

// Tests that disabled clipping (max_norm = 0) forwards the gradients and
// disappears when its norm is unused.
// CHECK-LABEL: func.func @clip_disabled
// CHECK-SAME: (%[[G0:.*]]: tensor<4x4xf32>, %[[G1:.*]]: tensor<4xf32>)
// CHECK-NOT: stlm.clip_grad_norm
// CHECK: return %[[G0]], %[[G1]]
func.func @clip_disabled(%g0: tensor<4x4xf32>, %g1: tensor<4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>) {
  %c:2, %n = stlm.clip_grad_norm %g0, %g1 {max_norm = 0.0} : tensor<4x4xf32>, tensor<4xf32>
  return %c#0, %c#1 : tensor<4x4xf32>, tensor<4xf32>
}

// -----

// Tests that disabled clipping keeps computing a norm that is used, while
// the gradients bypass it.
// CHECK-LABEL: func.func @clip_disabled_norm_used
// CHECK-SAME: (%[[G0:.*]]: tensor<4x4xf32>)
// CHECK: %{{.*}}, %[[N:.*]] = stlm.clip_grad_norm %[[G0]] {max_norm = 0.000000e+00 : f64}
// CHECK: return %[[G0]], %[[N]]
func.func @clip_disabled_norm_used(%g0: tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<f32>) {
  %c, %n = stlm.clip_grad_norm %g0 {max_norm = 0.0} : tensor<4x4xf32>
  return %c, %n : tensor<4x4xf32>, tensor<f32>
}

// -----

// Tests that enabled clipping is left alone.
// CHECK-LABEL: func.func @clip_enabled
// CHECK: stlm.clip_grad_norm %{{.*}} {max_norm = 1.000000e+00 : f64}
func.func @clip_enabled(%g0: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %c, %n = stlm.clip_grad_norm %g0 {max_norm = 1.0} : tensor<4x4xf32>
  return %c : tensor<4x4xf32>
}

// -----

// Tests that the schedule folds at constant steps: in warmup
// (1e-3 * 51 / 100), at the cosine midpoint ((1e-3 + 1e-4) / 2) and past
// the end (min_lr = 1e-4, which f32 prints as 9.99999974E-5).
// CHECK-LABEL: func.func @schedule_constant_steps
// CHECK-DAG: %[[W:.*]] = arith.constant dense<5.100000e-04> : tensor<f32>
// CHECK-DAG: %[[M:.*]] = arith.constant dense<5.500000e-04> : tensor<f32>
// CHECK-DAG: %[[E:.*]] = arith.constant dense<9.99999974E-5> : tensor<f32>
// CHECK-NOT: stlm.lr_schedule
// CHECK: return %[[W]], %[[M]], %[[E]]
func.func @schedule_constant_steps() -> (tensor<f32>, tensor<f32>, tensor<f32>) {
  %s50 = arith.constant dense<50> : tensor<i32>
  %s1050 = arith.constant dense<1050> : tensor<i32>
  %s9000 = arith.constant dense<9000> : tensor<i32>
  %a = stlm.lr_schedule cosine %s50 {lr = 1.0e-3, min_lr = 1.0e-4, warmup = 100, total = 2000}
  %b = stlm.lr_schedule cosine %s1050 {lr = 1.0e-3, min_lr = 1.0e-4, warmup = 100, total = 2000}
  %c = stlm.lr_schedule cosine %s9000 {lr = 1.0e-3, min_lr = 1.0e-4, warmup = 100, total = 2000}
  return %a, %b, %c : tensor<f32>, tensor<f32>, tensor<f32>
}

// -----

// Tests that a constant schedule without warmup folds whatever the step,
// and that one with warmup does not.
// CHECK-LABEL: func.func @schedule_constant_kind
// CHECK: %[[C:.*]] = arith.constant dense<2.000000e-03> : tensor<f32>
// CHECK: %[[W:.*]] = stlm.lr_schedule constant
// CHECK: return %[[C]], %[[W]]
func.func @schedule_constant_kind(%step: tensor<i32>) -> (tensor<f32>, tensor<f32>) {
  %a = stlm.lr_schedule constant %step {lr = 2.0e-3, min_lr = 0.0, warmup = 0, total = 10}
  %b = stlm.lr_schedule constant %step {lr = 2.0e-3, min_lr = 0.0, warmup = 5, total = 10}
  return %a, %b : tensor<f32>, tensor<f32>
}

// -----

// Tests that a cosine schedule at an unknown step is kept.
// CHECK-LABEL: func.func @schedule_dynamic
// CHECK: stlm.lr_schedule cosine
func.func @schedule_dynamic(%step: tensor<i32>) -> tensor<f32> {
  %a = stlm.lr_schedule cosine %step {lr = 1.0e-3, min_lr = 1.0e-4, warmup = 0, total = 10}
  return %a : tensor<f32>
}

// -----

// Tests that a run of one layer that does not use its index is inlined.
// CHECK-LABEL: func.func @one_layer
// CHECK-SAME: (%[[X:.*]]: tensor<2x4xf32>, %[[W:.*]]: tensor<4x4xf32>)
// CHECK-NOT: stlm.repeat
// CHECK: %[[Y:.*]] = stlm.linear %[[X]], %[[W]]
// CHECK: %[[Z:.*]] = stlm.add %[[X]], %[[Y]]
// CHECK: return %[[Z]]
func.func @one_layer(%x: tensor<2x4xf32>, %w: tensor<4x4xf32>) -> tensor<2x4xf32> {
  %r = stlm.repeat 3 to 4 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    %y = stlm.linear %h, %w : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
    %z = stlm.add %h, %y : tensor<2x4xf32>, tensor<2x4xf32>
    stlm.yield %z : tensor<2x4xf32>
  }
  return %r : tensor<2x4xf32>
}

// -----

// Tests that runs of several layers, or of one layer with per-layer
// parameters, are kept.
// CHECK-LABEL: stlm.model @kept
// CHECK: stlm.repeat 0 to 2
// CHECK: stlm.repeat 1 to 2
stlm.model @kept {
  stlm.param @layers.1.w : tensor<4x4xf32> = normal(0.02)
  func.func @f(%x: tensor<2x4xf32>, %w: tensor<4x4xf32>) -> tensor<2x4xf32> {
    %r = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      %y = stlm.linear %h, %w : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
      stlm.yield %y : tensor<2x4xf32>
    }
    %s = stlm.repeat 1 to 2 (%r) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      %lw = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4x4xf32>
      %y = stlm.linear %h, %lw : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
      stlm.yield %y : tensor<2x4xf32>
    }
    return %s : tensor<2x4xf32>
  }
}
