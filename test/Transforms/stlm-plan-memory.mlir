// RUN: stlm-opt %s -split-input-file -stlm-plan-memory | FileCheck %s

// Tests the weights region: 64-byte aligned slots in declaration order, one
// per symbol (a tied parameter read twice has one slot), state included.
// CHECK-LABEL: stlm.model @weights
// CHECK-SAME:    stlm.weights_size = 384
// CHECK: stlm.param @e : tensor<4x8xf32> = normal(2.000000e-02) {stlm.offset = 0 : i64}
// CHECK: stlm.param @g : tensor<3xf32> = ones {stlm.offset = 128 : i64}
// CHECK: stlm.state @step : tensor<i32> {stlm.offset = 192 : i64}
// CHECK: stlm.state @m : tensor<4x8xf32> {stlm.offset = 256 : i64}
stlm.model @weights {
  stlm.param @e : tensor<4x8xf32> = normal(0.02)
  stlm.param @g : tensor<3xf32> = ones
  stlm.state @step : tensor<i32>
  stlm.state @m : tensor<4x8xf32>
}

// -----

// Tests activation placement: x1 dies before x3 is born, so x3 reuses its
// bytes; x2 overlaps both and gets its own; reads of parameters and the
// reshape need no bytes of their own.
// CHECK-LABEL: stlm.model @reuse
// CHECK:       func.func @f
// CHECK-SAME:    stlm.arena_size = 256
// CHECK:       stlm.param_ref @w {{.*}}stlm.offsets = array<i64: -1>
// CHECK:       stlm.gelu {{.*}}stlm.offsets = array<i64: 0>
// CHECK:       stlm.linear {{.*}}stlm.offsets = array<i64: 128>
// CHECK:       stlm.gelu {{.*}}stlm.offsets = array<i64: 0>
// CHECK:       stlm.split_slots {{.*}}stlm.offsets = array<i64: 0>
stlm.model @reuse {
  stlm.param @w : tensor<8x8xf32> = normal(0.02)
  func.func @f(%x: tensor<4x8xf32>) -> tensor<4x2x4xf32> {
    %w = stlm.param_ref @w : tensor<8x8xf32>
    %x1 = stlm.gelu %x : tensor<4x8xf32>
    %x2 = stlm.linear %x1, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
    %x3 = stlm.gelu %x2 : tensor<4x8xf32>
    %r = stlm.split_slots %x3 : tensor<4x8xf32> -> tensor<4x2x4xf32>
    return %r : tensor<4x2x4xf32>
  }
}

// -----

// Tests that functions that are not straight-line code get no plan.
// CHECK-LABEL: stlm.model @loops
// CHECK:       func.func @f
// CHECK-NOT:     stlm.arena_size
// CHECK-NOT:     stlm.offsets
stlm.model @loops {
  func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      %g = stlm.gelu %h : tensor<2x4xf32>
      stlm.yield %g : tensor<2x4xf32>
    }
    return %y : tensor<2x4xf32>
  }
}

// -----

// Tests that a weight read still in use after the weight is overwritten is a
// snapshot with bytes of its own, while a read used up before the write
// stays in the weight slot; and that non-tensor results are no trouble.
// CHECK-LABEL: stlm.model @snapshots
// CHECK:       %[[P:.*]] = stlm.param_ref @w {stlm.offsets = array<i64: {{[0-9]+}}>, stlm.snapshot}
// CHECK:       stlm.param_ref @v {stlm.offsets = array<i64: -1>}
// CHECK:       stlm.assign @w
// CHECK:       stlm.gelu %[[P]]
// CHECK:       func.func @scalar
// CHECK-SAME:    stlm.arena_size = 0
stlm.model @snapshots {
  stlm.param @w : tensor<4xf32> = ones
  stlm.param @v : tensor<4xf32> = ones
  func.func @f() -> tensor<4xf32> {
    %p = stlm.param_ref @w : tensor<4xf32>
    %v = stlm.param_ref @v : tensor<4xf32>
    %n = stlm.gelu %p : tensor<4xf32>
    %m = stlm.gelu %v : tensor<4xf32>
    stlm.assign @w, %n : tensor<4xf32>
    stlm.assign @v, %m : tensor<4xf32>
    %q = stlm.gelu %p : tensor<4xf32>
    return %q : tensor<4xf32>
  }
  func.func @scalar() -> f32 {
    %c = arith.constant 1.0 : f32
    return %c : f32
  }
}
