// RUN: stlm-opt %s -split-input-file -stlm-fuse | FileCheck %s

// Tests that a linear feeding only a GELU, then a residual add, becomes one
// fused op with both epilogues, and that a linear feeding a residual add
// fuses whichever side of the add it is on.
// CHECK-LABEL: func.func @ffn
// CHECK-SAME:  (%[[X:.*]]: tensor<4x8x8xf32>, %[[W1:.*]]: tensor<16x8xf32>, %[[W2:.*]]: tensor<8x16xf32>)
// CHECK:       %[[H:.*]] = stlm.linear_fused %[[X]], %[[W1]] {activation = "gelu"} : tensor<4x8x8xf32>, tensor<16x8xf32> -> tensor<4x8x16xf32>
// CHECK:       %[[Y:.*]] = stlm.linear_fused %[[H]], %[[W2]] residual(%[[X]] : tensor<4x8x8xf32>) : tensor<4x8x16xf32>, tensor<8x16xf32> -> tensor<4x8x8xf32>
// CHECK:       %[[Z:.*]] = stlm.linear_fused %[[Y]], %[[W1]] {activation = "gelu"}
// CHECK:       %[[U:.*]] = stlm.linear_fused %[[Z]], %[[W2]] residual(%[[Y]] : tensor<4x8x8xf32>) : tensor<4x8x16xf32>
// CHECK:       return %[[U]]
func.func @ffn(%x: tensor<4x8x8xf32>, %w1: tensor<16x8xf32>, %w2: tensor<8x16xf32>) -> tensor<4x8x8xf32> {
  %h0 = stlm.linear %x, %w1 : tensor<4x8x8xf32>, tensor<16x8xf32> -> tensor<4x8x16xf32>
  %h = stlm.gelu %h0 : tensor<4x8x16xf32>
  %o = stlm.linear %h, %w2 : tensor<4x8x16xf32>, tensor<8x16xf32> -> tensor<4x8x8xf32>
  %y = stlm.add %x, %o : tensor<4x8x8xf32>, tensor<4x8x8xf32>
  %z0 = stlm.linear %y, %w1 : tensor<4x8x8xf32>, tensor<16x8xf32> -> tensor<4x8x16xf32>
  %z = stlm.gelu %z0 : tensor<4x8x16xf32>
  %p = stlm.linear %z, %w2 : tensor<4x8x16xf32>, tensor<8x16xf32> -> tensor<4x8x8xf32>
  %u = stlm.add %p, %y : tensor<4x8x8xf32>, tensor<4x8x8xf32>
  return %u : tensor<4x8x8xf32>
}

// -----

// Tests what does not fuse: a pre-activation read again (by its gradient,
// as in @grad), a broadcast add, and the one-token rows of a decode step.
// CHECK-LABEL: func.func @kept
// CHECK:       %[[H:.*]] = stlm.linear
// CHECK:       stlm.gelu %[[H]]
// CHECK:       stlm.gelu_grad %[[H]]
// CHECK:       %[[P:.*]] = stlm.linear
// CHECK:       stlm.add %[[P]], %{{.*}} : tensor<4x8x8xf32>, tensor<8xf32>
// CHECK:       %[[T:.*]] = stlm.linear
// CHECK:       stlm.gelu %[[T]] : tensor<1x1x16xf32>
// CHECK-NOT:   stlm.linear_fused
func.func @kept(%x: tensor<4x8x8xf32>, %w1: tensor<16x8xf32>, %w2: tensor<8x16xf32>, %b: tensor<8xf32>, %t: tensor<1x1x8xf32>)
    -> (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x8xf32>, tensor<1x1x16xf32>) {
  %h = stlm.linear %x, %w1 : tensor<4x8x8xf32>, tensor<16x8xf32> -> tensor<4x8x16xf32>
  %g = stlm.gelu %h : tensor<4x8x16xf32>
  %dg = stlm.gelu_grad %h, %g : tensor<4x8x16xf32>
  %p = stlm.linear %g, %w2 : tensor<4x8x16xf32>, tensor<8x16xf32> -> tensor<4x8x8xf32>
  %q = stlm.add %p, %b : tensor<4x8x8xf32>, tensor<8xf32>
  %t1 = stlm.linear %t, %w1 : tensor<1x1x8xf32>, tensor<16x8xf32> -> tensor<1x1x16xf32>
  %t2 = stlm.gelu %t1 : tensor<1x1x16xf32>
  return %g, %dg, %q, %t2 : tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x8xf32>, tensor<1x1x16xf32>
}

// -----

// Tests that a gradient reaching x along two paths folds into the second
// linear_grad's dx as its addend, chained for three paths; an addend that
// only exists after the linear_grad cannot fold.
// CHECK-LABEL: func.func @paths
// CHECK:       %[[DX1:.*]], %{{.*}} = stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8x8xf32>
// CHECK:       %[[DX2:.*]], %{{.*}} = stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} addend(%[[DX1]] : tensor<4x8x8xf32>)
// CHECK:       %[[DX3:.*]], %{{.*}} = stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} addend(%[[DX2]] : tensor<4x8x8xf32>)
// CHECK:       %[[L:.*]], %{{.*}} = stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x8x8xf32>
// CHECK:       %[[LATE:.*]] = stlm.gelu
// CHECK:       %[[S:.*]] = stlm.add %[[L]], %[[LATE]]
// CHECK:       return %[[DX3]], %[[S]]
func.func @paths(%x: tensor<4x8x8xf32>, %w: tensor<16x8xf32>, %d1: tensor<4x8x16xf32>, %d2: tensor<4x8x16xf32>, %d3: tensor<4x8x16xf32>)
    -> (tensor<4x8x8xf32>, tensor<4x8x8xf32>) {
  %dx1, %dw1 = stlm.linear_grad %x, %w, %d1 : tensor<4x8x8xf32>, tensor<16x8xf32>, tensor<4x8x16xf32>
  %dx2, %dw2 = stlm.linear_grad %x, %w, %d2 : tensor<4x8x8xf32>, tensor<16x8xf32>, tensor<4x8x16xf32>
  %s1 = stlm.add %dx1, %dx2 : tensor<4x8x8xf32>, tensor<4x8x8xf32>
  %dx3, %dw3 = stlm.linear_grad %x, %w, %d3 : tensor<4x8x8xf32>, tensor<16x8xf32>, tensor<4x8x16xf32>
  %s2 = stlm.add %s1, %dx3 : tensor<4x8x8xf32>, tensor<4x8x8xf32>
  %l, %lw = stlm.linear_grad %x, %w, %d1 : tensor<4x8x8xf32>, tensor<16x8xf32>, tensor<4x8x16xf32>
  %late = stlm.gelu %x : tensor<4x8x8xf32>
  %s3 = stlm.add %l, %late : tensor<4x8x8xf32>, tensor<4x8x8xf32>
  return %s2, %s3 : tensor<4x8x8xf32>, tensor<4x8x8xf32>
}

// -----

// Tests that a GELU's gradient of a linear_grad's dx (its only use) becomes
// that linear_grad's gelu_input epilogue; one whose dx is also read
// elsewhere, or of too few rows, stays apart.
// CHECK-LABEL: func.func @gelu_grad
// CHECK:       %[[DH:.*]], %{{.*}} = stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} gelu_input(%[[H:.*]] : tensor<4x8x16xf32>)
// CHECK:       %[[DA2:.*]], %{{.*}} = stlm.linear_grad
// CHECK-NOT:   gelu_input
// CHECK:       %[[DH2:.*]] = stlm.gelu_grad %{{.*}}, %[[DA2]]
// CHECK:       %[[DA3:.*]], %{{.*}} = stlm.linear_grad
// CHECK-NOT:   gelu_input
// CHECK:       stlm.gelu_grad
// CHECK:       return %[[DH]], %[[DH2]], %[[DA2]]
func.func @gelu_grad(%h: tensor<4x8x16xf32>, %w: tensor<8x16xf32>, %d: tensor<4x8x8xf32>,
                     %t: tensor<1x1x16xf32>, %dt: tensor<1x1x8xf32>)
    -> (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<1x1x16xf32>) {
  %a = stlm.gelu %h : tensor<4x8x16xf32>
  %da, %dw = stlm.linear_grad %a, %w, %d : tensor<4x8x16xf32>, tensor<8x16xf32>, tensor<4x8x8xf32>
  %dh = stlm.gelu_grad %h, %da : tensor<4x8x16xf32>
  %da2, %dw2 = stlm.linear_grad %a, %w, %d : tensor<4x8x16xf32>, tensor<8x16xf32>, tensor<4x8x8xf32>
  %dh2 = stlm.gelu_grad %h, %da2 : tensor<4x8x16xf32>
  %ta = stlm.gelu %t : tensor<1x1x16xf32>
  %da3, %dw3 = stlm.linear_grad %ta, %w, %dt : tensor<1x1x16xf32>, tensor<8x16xf32>, tensor<1x1x8xf32>
  %dh3 = stlm.gelu_grad %t, %da3 : tensor<1x1x16xf32>
  return %dh, %dh2, %da2, %dh3 : tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<1x1x16xf32>
}
