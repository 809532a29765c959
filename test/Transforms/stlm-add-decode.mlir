// RUN: stlm-opt %s -split-input-file -stlm-add-decode | FileCheck %s
// RUN: stlm-opt %s -split-input-file -stlm-add-decode -stlm-plan-memory | FileCheck %s --check-prefix=PLAN
// RUN: stlm-opt %s -split-input-file -stlm-add-decode=batch=4 -stlm-plan-memory | FileCheck %s --check-prefix=BATCH
// RUN: not stlm-opt %s -split-input-file -stlm-add-decode=batch=1 2>&1 | FileCheck %s --check-prefix=ONE

// Tests that a two-layer run with grouped KV heads gets one pair of caches
// per layer ([1, T, K*hd], T = 8), a prefill over [1, T] starting at
// position 0 and a one-token step at %pos; rope and attention take the
// position as offset and read the caches after the new rows are written.
// CHECK-LABEL: stlm.model @m
// CHECK:      stlm.state @kv.0.k : tensor<1x8x4xf32>
// CHECK-NEXT: stlm.state @kv.0.v : tensor<1x8x4xf32>
// CHECK-NEXT: stlm.state @kv.1.k : tensor<1x8x4xf32>
// CHECK-NEXT: stlm.state @kv.1.v : tensor<1x8x4xf32>
// CHECK:      func.func @logits
// CHECK-NOT:  stlm.repeat
// CHECK:      func.func @decode_step(%[[ID:.*]]: tensor<1x1xi32>, %[[POS:.*]]: tensor<i32>) -> tensor<1x1x16xf32>
// CHECK:      stlm.embed %{{.*}}[%[[ID]]] : tensor<16x8xf32>, tensor<1x1xi32> -> tensor<1x1x8xf32>
// CHECK:      %[[Q:.*]] = stlm.rope %{{.*}} offset(%[[POS]]) {head_dim = 4 : i64} : tensor<1x1x8xf32>
// CHECK:      %[[K:.*]] = stlm.rope %{{.*}} offset(%[[POS]]) {head_dim = 4 : i64} : tensor<1x1x4xf32>
// CHECK:      %[[KC:.*]] = stlm.state_ref @kv.0.k : tensor<1x8x4xf32>
// CHECK:      %[[KW:.*]] = stlm.write_rows %[[KC]], %[[K]] offset(%[[POS]]) : tensor<1x8x4xf32>, tensor<1x1x4xf32>
// CHECK:      stlm.assign @kv.0.k, %[[KW]]
// CHECK:      %[[VC:.*]] = stlm.state_ref @kv.0.v
// CHECK:      %[[VW:.*]] = stlm.write_rows %[[VC]]
// CHECK:      stlm.assign @kv.0.v, %[[VW]]
// CHECK:      stlm.attention causal %[[Q]], %[[KW]], %[[VW]] offset(%[[POS]]) {heads = 2 : i64, kv_heads = 1 : i64} : tensor<1x1x8xf32>, tensor<1x8x4xf32>, tensor<1x8x4xf32> -> tensor<1x1x8xf32>
// CHECK:      stlm.state_ref @kv.1.k
// CHECK:      stlm.logits %{{.*}}, %{{.*}} : tensor<1x1x8xf32>, tensor<16x8xf32> -> tensor<1x1x16xf32>
// CHECK:      func.func @prefill(%[[IDS:.*]]: tensor<1x8xi32>) -> tensor<1x8x16xf32>
// CHECK:      %[[ZERO:.*]] = arith.constant dense<0> : tensor<i32>
// CHECK:      stlm.rope %{{.*}} offset(%[[ZERO]])
// CHECK:      stlm.write_rows %{{.*}}, %{{.*}} offset(%[[ZERO]]) : tensor<1x8x4xf32>, tensor<1x8x4xf32>
// CHECK:      stlm.attention causal {{.*}} offset(%[[ZERO]]) {{.*}} : tensor<1x8x8xf32>, tensor<1x8x4xf32>, tensor<1x8x4xf32> -> tensor<1x8x8xf32>

// With batch=4, the same two functions for 4 sequences in lockstep, with
// caches of their own after the single sequence's: every activation
// [4, N, ...], the position shared.
// BATCH-LABEL: stlm.model @m
// BATCH:       stlm.state @kv.1.v : tensor<1x8x4xf32>
// BATCH-NEXT:  stlm.state @kv.batch.0.k : tensor<4x8x4xf32>
// BATCH-NEXT:  stlm.state @kv.batch.0.v : tensor<4x8x4xf32>
// BATCH-NEXT:  stlm.state @kv.batch.1.k : tensor<4x8x4xf32>
// BATCH-NEXT:  stlm.state @kv.batch.1.v : tensor<4x8x4xf32>
// BATCH:       func.func @logits
// BATCH:       func.func @decode_batch(%[[ID:.*]]: tensor<4x1xi32>, %[[POS:.*]]: tensor<i32>) -> tensor<4x1x16xf32> attributes {stlm.arena_size
// BATCH:       stlm.embed %{{.*}}[%[[ID]]] {{.*}}: tensor<16x8xf32>, tensor<4x1xi32> -> tensor<4x1x8xf32>
// BATCH:       %[[Q:.*]] = stlm.rope %{{.*}} offset(%[[POS]]) {head_dim = 4 : i64{{.*}}} : tensor<4x1x8xf32>
// BATCH:       %[[KC:.*]] = stlm.state_ref @kv.batch.0.k {{.*}}: tensor<4x8x4xf32>
// BATCH:       %[[KW:.*]] = stlm.write_rows %[[KC]], %{{.*}} offset(%[[POS]]) {{.*}}: tensor<4x8x4xf32>, tensor<4x1x4xf32>
// BATCH:       stlm.assign @kv.batch.0.k, %[[KW]]
// BATCH:       stlm.attention causal %[[Q]], %[[KW]], %{{.*}} offset(%[[POS]]) {heads = 2 : i64, kv_heads = 1 : i64{{.*}}} : tensor<4x1x8xf32>, tensor<4x8x4xf32>, tensor<4x8x4xf32> -> tensor<4x1x8xf32>
// BATCH:       stlm.state_ref @kv.batch.1.k
// BATCH:       stlm.logits %{{.*}}, %{{.*}} {{.*}}: tensor<4x1x8xf32>, tensor<16x8xf32> -> tensor<4x1x16xf32>
// BATCH:       func.func @prefill_batch(%{{.*}}: tensor<4x8xi32>) -> tensor<4x8x16xf32> attributes {stlm.arena_size
// BATCH:       stlm.write_rows %{{.*}}, %{{.*}} offset(%{{.*}}) {{.*}}: tensor<4x8x4xf32>, tensor<4x8x4xf32>
// BATCH:       func.func @decode_step(%{{.*}}: tensor<1x1xi32>, %{{.*}}: tensor<i32>) -> tensor<1x1x16xf32>
// BATCH:       stlm.state_ref @kv.0.k {{.*}}: tensor<1x8x4xf32>
// BATCH:       func.func @prefill(%{{.*}}: tensor<1x8xi32>) -> tensor<1x8x16xf32>

// One sequence needs no option: every model with @logits gets @prefill
// and @decode_step.
// ONE: error: stlm-add-decode: batch must be 0 (none) or 2 to 4096 sequences, got 1

// All three are straight-line code the memory planner places.
// PLAN-LABEL: stlm.model @m
// PLAN:       func.func @logits{{.*}} attributes {stlm.arena_size
// PLAN:       func.func @decode_step{{.*}} attributes {stlm.arena_size
// PLAN:       func.func @prefill{{.*}} attributes {stlm.arena_size
stlm.model @m {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(0.02)
  stlm.param @layers.0.wq : tensor<8x8xf32> = normal(0.02)
  stlm.param @layers.0.wk : tensor<4x8xf32> = normal(0.02)
  stlm.param @layers.1.wq : tensor<8x8xf32> = normal(0.02)
  stlm.param @layers.1.wk : tensor<4x8xf32> = normal(0.02)
  func.func @logits(%ids: tensor<3x8xi32>) -> tensor<3x8x16xf32> {
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<3x8xi32> -> tensor<3x8x8xf32>
    %y = stlm.repeat 0 to 2 (%x) : tensor<3x8x8xf32> {
    ^bb0(%l: index, %h: tensor<3x8x8xf32>):
      %wq = stlm.layer_param_ref "layers.{}.wq"[%l] : tensor<8x8xf32>
      %wk = stlm.layer_param_ref "layers.{}.wk"[%l] : tensor<4x8xf32>
      %q0 = stlm.linear %h, %wq : tensor<3x8x8xf32>, tensor<8x8xf32> -> tensor<3x8x8xf32>
      %k0 = stlm.linear %h, %wk : tensor<3x8x8xf32>, tensor<4x8xf32> -> tensor<3x8x4xf32>
      %q = stlm.rope %q0 {head_dim = 4} : tensor<3x8x8xf32>
      %k = stlm.rope %k0 {head_dim = 4} : tensor<3x8x4xf32>
      %a = stlm.attention causal %q, %k, %k0 {heads = 2, kv_heads = 1} : tensor<3x8x8xf32>, tensor<3x8x4xf32>, tensor<3x8x4xf32> -> tensor<3x8x8xf32>
      %r = stlm.add %h, %a : tensor<3x8x8xf32>, tensor<3x8x8xf32>
      stlm.yield %r : tensor<3x8x8xf32>
    }
    %logits = stlm.logits %y, %e : tensor<3x8x8xf32>, tensor<16x8xf32> -> tensor<3x8x16xf32>
    return %logits : tensor<3x8x16xf32>
  }
}

// -----

// Tests that a model without @logits, or whose @logits does not map
// token ids [B, T] to logits [B, T, V] (a byte-pool model), is left alone.
// CHECK-LABEL: stlm.model @bytes
// CHECK-NOT:   stlm.state
// CHECK-NOT:   @decode_step
stlm.model @bytes {
  stlm.param @w : tensor<4xf32> = ones
  func.func @encode(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
    return %x : tensor<2x4xf32>
  }
}

// -----

// CHECK-LABEL: stlm.model @chunks
// CHECK-NOT:   stlm.state
// CHECK-NOT:   @decode_step
stlm.model @chunks {
  func.func @logits(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
    return %x : tensor<2x4x8xf32>
  }
}
