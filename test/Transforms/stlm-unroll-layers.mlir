// RUN: stlm-opt %s -split-input-file -stlm-unroll-layers --allow-unregistered-dialect | FileCheck %s --implicit-check-not=stlm.repeat

// Tests that a run of per-layer layers becomes one copy per layer, in order,
// with each layer's own parameters and the shared ones read by every copy.
// CHECK-LABEL: func.func @run
// CHECK-SAME: (%[[X:.*]]: tensor<2x4xf32>)
// CHECK-NOT:  arith.constant
// CHECK:      %[[S1:.*]] = stlm.param_ref @shared.w : tensor<4x4xf32>
// CHECK:      %[[W1:.*]] = stlm.param_ref @layers.1.w : tensor<4x4xf32>
// CHECK:      %[[A1:.*]] = stlm.linear %[[X]], %[[S1]]
// CHECK:      %[[B1:.*]] = stlm.linear %[[A1]], %[[W1]]
// CHECK:      %[[S2:.*]] = stlm.param_ref @shared.w : tensor<4x4xf32>
// CHECK:      %[[W2:.*]] = stlm.param_ref @layers.2.w : tensor<4x4xf32>
// CHECK:      %[[A2:.*]] = stlm.linear %[[B1]], %[[S2]]
// CHECK:      %[[B2:.*]] = stlm.linear %[[A2]], %[[W2]]
// CHECK:      return %[[B2]]
stlm.model @m {
  stlm.param @shared.w : tensor<4x4xf32> = normal(0.02)
  stlm.param @layers.1.w : tensor<4x4xf32> = normal(0.02)
  stlm.param @layers.2.w : tensor<4x4xf32> = normal(0.02)
  func.func @run(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %y = stlm.repeat 1 to 3 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      %s = stlm.param_ref @shared.w : tensor<4x4xf32>
      %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4x4xf32>
      %a = stlm.linear %h, %s : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
      %b = stlm.linear %a, %w : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
      stlm.yield %b : tensor<2x4xf32>
    }
    return %y : tensor<2x4xf32>
  }
}

// -----

// Tests that runs nested in runs unroll completely, and that a layer index
// used by something else becomes a constant.
// CHECK-LABEL: func.func @nested
// CHECK-COUNT-4: stlm.gelu
// CHECK-NOT:     stlm.gelu
// CHECK:         %[[C:.*]] = arith.constant 0 : index
// CHECK:         "test.use"(%[[C]])
func.func @nested(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    %z = stlm.repeat 0 to 2 (%h) : tensor<2x4xf32> {
    ^bb0(%k: index, %g: tensor<2x4xf32>):
      %e = stlm.gelu %g : tensor<2x4xf32>
      stlm.yield %e : tensor<2x4xf32>
    }
    stlm.yield %z : tensor<2x4xf32>
  }
  %w = stlm.repeat 0 to 1 (%y) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    "test.use"(%l) : (index) -> ()
    stlm.yield %h : tensor<2x4xf32>
  }
  return %w : tensor<2x4xf32>
}

// -----

// Tests that a per-layer reference inside a nested run keeps the index of
// the run it names: the outer layer here, not the inner one.
// CHECK-LABEL: stlm.model @nested_refs
// CHECK:       stlm.param_ref @layers.0.w
// CHECK:       stlm.param_ref @layers.1.w
// CHECK-NOT:   stlm.param_ref @layers.0.w
stlm.model @nested_refs {
  stlm.param @layers.0.w : tensor<4x4xf32> = normal(0.02)
  stlm.param @layers.1.w : tensor<4x4xf32> = normal(0.02)
  func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
    ^bb0(%lo: index, %h: tensor<2x4xf32>):
      %z = stlm.repeat 0 to 1 (%h) : tensor<2x4xf32> {
      ^bb0(%li: index, %g: tensor<2x4xf32>):
        %w = stlm.layer_param_ref "layers.{}.w"[%lo] : tensor<4x4xf32>
        %a = stlm.linear %g, %w : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
        stlm.yield %a : tensor<2x4xf32>
      }
      stlm.yield %z : tensor<2x4xf32>
    }
    return %y : tensor<2x4xf32>
  }
}
