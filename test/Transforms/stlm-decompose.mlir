// RUN: stlm-opt %s -stlm-decompose | FileCheck %s --implicit-check-not=stlm.lowrank

// Tests that a LoRA delta becomes two linears through the rank-2
// bottleneck, and its gradient a recompute of the bottleneck and two
// linear gradients wired dy -> (dh, db) -> (dx, da).
// CHECK-LABEL: func.func @delta
// CHECK-SAME:  (%[[X:.*]]: tensor<2x4x8xf32>, %[[A:.*]]: tensor<2x8xf32>, %[[B:.*]]: tensor<6x2xf32>, %[[DY:.*]]: tensor<2x4x6xf32>)
// CHECK:       %[[H:.*]] = stlm.linear %[[X]], %[[A]] : tensor<2x4x8xf32>, tensor<2x8xf32> -> tensor<2x4x2xf32>
// CHECK:       %[[D:.*]] = stlm.linear %[[H]], %[[B]] : tensor<2x4x2xf32>, tensor<6x2xf32> -> tensor<2x4x6xf32>
// CHECK:       %[[H2:.*]] = stlm.linear %[[X]], %[[A]]
// CHECK:       %[[DH:.*]], %[[DB:.*]] = stlm.linear_grad %[[H2]], %[[B]], %[[DY]] : tensor<2x4x2xf32>, tensor<6x2xf32>, tensor<2x4x6xf32>
// CHECK:       %[[DX:.*]], %[[DA:.*]] = stlm.linear_grad %[[X]], %[[A]], %[[DH]] : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<2x4x2xf32>
// CHECK:       return %[[D]], %[[DX]], %[[DA]], %[[DB]]
func.func @delta(%x: tensor<2x4x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<2x4x6xf32>)
    -> (tensor<2x4x6xf32>, tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>) {
  %d = stlm.lowrank %x, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<2x4x6xf32>
  %dx, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<2x4x6xf32>
  return %d, %dx, %da, %db : tensor<2x4x6xf32>, tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
}
