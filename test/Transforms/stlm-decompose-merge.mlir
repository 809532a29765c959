// RUN: stlm-opt %s -split-input-file -stlm-decompose | FileCheck %s --implicit-check-not=stlm.lowrank
// RUN: stlm-opt %s -split-input-file -stlm-decompose=merge=never | FileCheck %s --check-prefix=NEVER
// RUN: stlm-opt %s -split-input-file -stlm-decompose=merge=always | FileCheck %s --check-prefix=ALWAYS
// RUN: not stlm-opt %s -split-input-file -stlm-decompose=merge=sometimes 2>&1 | FileCheck %s --check-prefix=BAD

// BAD: stlm-decompose: merge must be auto, always or never, got 'sometimes'

// Tests that a delta over many rows is merged into the weight it corrects
// (128 rows · (8 + 6) ≥ 8 · 6): one linear on w + b·a; in the backward the
// linear's gradient on the merged weight gives the whole dx (the sum that
// added the delta's dx goes), and da, db come from its dweight.
// CHECK-LABEL: func.func @merged
// CHECK-SAME:  (%[[X:[^:]*]]: tensor<4x32x8xf32>, %[[W:[^:]*]]: tensor<6x8xf32>, %[[A:[^:]*]]: tensor<2x8xf32>, %[[B:[^:]*]]: tensor<6x2xf32>, %[[DY:[^:]*]]: tensor<4x32x6xf32>, %[[G:[^:]*]]: tensor<4x32x8xf32>)
// CHECK:       %[[M:.*]] = stlm.lowrank_merge %[[W]], %[[A]], %[[B]] : tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
// CHECK-NEXT:  %[[Y:.*]] = stlm.linear %[[X]], %[[M]] : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
// CHECK-NEXT:  %[[DX:.*]], %[[DW:.*]] = stlm.linear_grad %[[X]], %[[M]], %[[DY]]
// CHECK-NEXT:  %[[DA:.*]], %[[DB:.*]] = stlm.lowrank_merge_grad %[[DW]], %[[A]], %[[B]] : tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
// CHECK-NEXT:  %[[S:.*]] = stlm.add %[[G]], %[[DX]]
// CHECK-NEXT:  return %[[Y]], %[[S]], %[[DW]], %[[DA]], %[[DB]]
// NEVER-LABEL: func.func @merged
// NEVER-NOT:   stlm.lowrank_merge
// NEVER:       stlm.linear_grad
// NEVER:       stlm.linear_grad
// NEVER:       stlm.linear_grad
// NEVER-LABEL: func.func @few_rows
// ALWAYS-LABEL: func.func @merged
// ALWAYS:      stlm.lowrank_merge_grad
// ALWAYS-LABEL: func.func @few_rows
// ALWAYS:      stlm.lowrank_merge %
// ALWAYS-LABEL: func.func @linear_used_twice
// ALWAYS-NOT:  stlm.lowrank_merge
// ALWAYS-LABEL: func.func @swapped
func.func @merged(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<4x32x6xf32>, %g: tensor<4x32x8xf32>)
    -> (tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>) {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  %dx2, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<4x32x6xf32>
  %dx1, %dw = stlm.linear_grad %x, %w, %dy : tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<4x32x6xf32>
  %s1 = stlm.add %g, %dx2 : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  %s2 = stlm.add %s1, %dx1 : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  return %y, %s2, %dw, %da, %db : tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
}

// -----

// Tests that the few rows of generation (1 · (8 + 6) < 8 · 6) keep the
// delta as its two matmuls.
// CHECK-LABEL: func.func @few_rows
// CHECK-NOT:   stlm.lowrank_merge
// CHECK:       %[[H:.*]] = stlm.linear %{{.*}}, %{{.*}} : tensor<1x1x8xf32>, tensor<2x8xf32> -> tensor<1x1x2xf32>
// CHECK:       stlm.linear %[[H]]
func.func @few_rows(%x: tensor<1x1x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>) -> tensor<1x1x6xf32> {
  %y0 = stlm.linear %x, %w : tensor<1x1x8xf32>, tensor<6x8xf32> -> tensor<1x1x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<1x1x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<1x1x6xf32>
  %y = stlm.add %y0, %d : tensor<1x1x6xf32>, tensor<1x1x6xf32>
  return %y : tensor<1x1x6xf32>
}

// -----

// Tests that a linear whose result is read elsewhere too is left alone
// (its unmerged output is needed).
// CHECK-LABEL: func.func @linear_used_twice
// CHECK-NOT:   stlm.lowrank_merge
func.func @linear_used_twice(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>) -> (tensor<4x32x6xf32>, tensor<4x32x6xf32>) {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  return %y, %y0 : tensor<4x32x6xf32>, tensor<4x32x6xf32>
}

// -----

// Tests the other orders autodiff may give: the delta on the left of the
// sum, the linear's gradient before the delta's, and the delta's dx
// entering the sum first; the merge goes right after its operands.
// CHECK-LABEL: func.func @swapped
// CHECK:       %[[M:.*]] = stlm.lowrank_merge
// CHECK-NEXT:  stlm.rmsnorm
// CHECK:       %[[Y:.*]] = stlm.linear %{{.*}}, %[[M]]
// CHECK-NEXT:  %[[DX:.*]], %[[DW:.*]] = stlm.linear_grad %{{.*}}, %[[M]]
// CHECK-NEXT:  %[[DA:.*]], %[[DB:.*]] = stlm.lowrank_merge_grad %[[DW]]
// CHECK-NEXT:  %[[S:.*]] = stlm.add %[[DX]], %{{.*}}
// CHECK-NEXT:  return %[[Y]], %[[S]], %[[DW]], %[[DA]], %[[DB]]
func.func @swapped(%x0: tensor<4x32x8xf32>, %g0: tensor<8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<4x32x6xf32>, %g: tensor<4x32x8xf32>)
    -> (tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>) {
  %x = stlm.rmsnorm %x0, %g0 : tensor<4x32x8xf32>, tensor<8xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %d, %y0 : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  %dx1, %dw = stlm.linear_grad %x, %w, %dy : tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<4x32x6xf32>
  %dx2, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<4x32x6xf32>
  %s1 = stlm.add %dx2, %g : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  %s2 = stlm.add %dx1, %s1 : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  return %y, %s2, %dw, %da, %db : tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
}

// -----

// Tests that a forward alone (an evaluation batch) merges.
// CHECK-LABEL: func.func @forward_only
// CHECK:       %[[M:.*]] = stlm.lowrank_merge
// CHECK-NEXT:  %[[Y:.*]] = stlm.linear %{{.*}}, %[[M]]
// CHECK-NEXT:  return %[[Y]]
func.func @forward_only(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>) -> tensor<4x32x6xf32> {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  return %y : tensor<4x32x6xf32>
}

// -----

// Tests that a site is left alone when the delta's dx is read apart from
// the sum with the linear's (the merged dx could not drop it), when the
// two dx reach different sums, and when only the delta has a gradient.
// CHECK-LABEL: func.func @dx_read_elsewhere
// CHECK-NOT:   stlm.lowrank_merge
// CHECK-LABEL: func.func @dx_apart
// CHECK-NOT:   stlm.lowrank_merge
// CHECK-LABEL: func.func @one_gradient
// CHECK-NOT:   stlm.lowrank_merge
func.func @dx_read_elsewhere(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<4x32x6xf32>)
    -> (tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<4x32x8xf32>) {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  %dx2, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<4x32x6xf32>
  %dx1, %dw = stlm.linear_grad %x, %w, %dy : tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<4x32x6xf32>
  %s = stlm.add %dx1, %dx2 : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  return %y, %s, %dx2 : tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<4x32x8xf32>
}
func.func @dx_apart(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<4x32x6xf32>, %g: tensor<4x32x8xf32>)
    -> (tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<4x32x8xf32>) {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  %dx2, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<4x32x6xf32>
  %dx1, %dw = stlm.linear_grad %x, %w, %dy : tensor<4x32x8xf32>, tensor<6x8xf32>, tensor<4x32x6xf32>
  %s1 = stlm.add %dx1, %g : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  %s2 = stlm.add %dx2, %g : tensor<4x32x8xf32>, tensor<4x32x8xf32>
  return %y, %s1, %s2 : tensor<4x32x6xf32>, tensor<4x32x8xf32>, tensor<4x32x8xf32>
}
func.func @one_gradient(%x: tensor<4x32x8xf32>, %w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>, %dy: tensor<4x32x6xf32>)
    -> (tensor<4x32x6xf32>, tensor<4x32x8xf32>) {
  %y0 = stlm.linear %x, %w : tensor<4x32x8xf32>, tensor<6x8xf32> -> tensor<4x32x6xf32>
  %d = stlm.lowrank %x, %a, %b : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<4x32x6xf32>
  %y = stlm.add %y0, %d : tensor<4x32x6xf32>, tensor<4x32x6xf32>
  %dx2, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy : tensor<4x32x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>, tensor<4x32x6xf32>
  return %y, %dx2 : tensor<4x32x6xf32>, tensor<4x32x8xf32>
}
