// RUN: stlm-opt %s -split-input-file -stlm-autodiff | FileCheck %s

// Tests that a tied embedding gets the sum of its two gradients (the
// embedder's scatter and the head's weight gradient), and the training step
// around @grad: schedule at the 0-based step, clipping, AdamW with decay on
// matrices only, state updates, step + 1; and @eval.
// CHECK-LABEL: stlm.model @tied
// CHECK-DAG:   stlm.state @step : tensor<i32>
// CHECK-DAG:   stlm.state @opt.m.e : tensor<16x8xf32>
// CHECK-DAG:   stlm.state @opt.v.e : tensor<16x8xf32>
// CHECK-DAG:   stlm.state @opt.m.g : tensor<8xf32>
// CHECK:       func.func @grad(%[[T:.*]]: tensor<2x4xi32>, %[[Y:.*]]: tensor<2x4xi32>) -> (tensor<f32>, tensor<16x8xf32>, tensor<8xf32>)
// CHECK-SAME:    attributes {stlm.grad_params = [@e, @g]}
// CHECK:         %[[E1:.*]] = stlm.param_ref @e
// CHECK:         %[[X:.*]] = stlm.embed %[[E1]][%[[T]]]
// CHECK:         %[[G:.*]] = stlm.param_ref @g
// CHECK:         %[[N:.*]] = stlm.rmsnorm %[[X]], %[[G]]
// CHECK:         %[[E2:.*]] = stlm.param_ref @e
// CHECK:         %[[L:.*]] = stlm.logits %[[N]], %[[E2]]
// CHECK:         %[[LOSS:.*]] = stlm.next_token_loss %[[L]], %[[Y]]
// CHECK:         %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK:         %[[DL:.*]] = stlm.next_token_loss_grad %[[L]], %[[Y]], %[[ONE]]
// CHECK:         %[[DN:.*]], %[[DHEAD:.*]] = stlm.linear_grad %[[N]], %[[E2]], %[[DL]]
// CHECK:         %[[DX:.*]], %[[DG:.*]] = stlm.rmsnorm_grad %[[X]], %[[G]], %[[DN]]
// CHECK:         %[[DTABLE:.*]] = stlm.embed_grad %[[T]], %[[DX]] : tensor<2x4xi32>, tensor<2x4x8xf32> -> tensor<16x8xf32>
// CHECK:         %[[DE:.*]] = stlm.add %[[DHEAD]], %[[DTABLE]]
// CHECK:         return %[[LOSS]], %[[DE]], %[[DG]]
// CHECK:       func.func @train_step(%[[A0:.*]]: tensor<2x4xi32>, %[[A1:.*]]: tensor<2x4xi32>) -> (tensor<f32>, tensor<f32>, tensor<f32>)
// CHECK:         %[[R:.*]]:3 = call @grad(%[[A0]], %[[A1]])
// CHECK:         %[[S:.*]] = stlm.state_ref @step : tensor<i32>
// CHECK:         %[[LR:.*]] = stlm.lr_schedule constant %[[S]] {lr = 5.000000e-03 : f64, min_lr = 0.000000e+00 : f64, total = 10 : i64, warmup = 0 : i64}
// CHECK:         %[[C:.*]]:2, %[[NORM:.*]] = stlm.clip_grad_norm %[[R]]#1, %[[R]]#2 {max_norm = 5.000000e-01 : f64}
// CHECK:         %[[STEP:.*]] = arith.addi %[[S]], %{{.*}} : tensor<i32>
// CHECK:         stlm.adamw %{{.*}}, %[[C]]#0, %{{.*}}, %{{.*}}, %[[LR]], %[[STEP]] {beta1 = 8.000000e-01 : f64, beta2 = 0.98999999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 2.500000e-01 : f64} : tensor<16x8xf32>
// CHECK:         stlm.assign @e,
// CHECK:         stlm.assign @opt.m.e,
// CHECK:         stlm.assign @opt.v.e,
// CHECK:         stlm.adamw %{{.*}}, %[[C]]#1, {{.*}} weight_decay = 0.000000e+00 : f64} : tensor<8xf32>
// CHECK:         stlm.assign @step, %[[STEP]] : tensor<i32>
// CHECK:         return %[[R]]#0, %[[NORM]], %[[LR]]
// One objective: @eval returns the loss, then that objective's own loss
// (the same value).
// CHECK:       func.func @eval(%{{.*}}: tensor<2x4xi32>, %{{.*}}: tensor<2x4xi32>) -> (tensor<f32>, tensor<f32>)
// CHECK-NOT:     call @loss
// CHECK:         %[[EL:.*]] = stlm.next_token_loss
// CHECK:         return %[[EL]], %[[EL]] : tensor<f32>, tensor<f32>
stlm.model @tied attributes {stlm.train = {lr = 5.0e-3, min_lr = 0.0, warmup = 0, steps = 10, schedule = "constant", beta1 = 0.8, weight_decay = 0.25, grad_clip = 0.5}} {
  stlm.param @e : tensor<16x8xf32> = normal(0.02)
  stlm.param @g : tensor<8xf32> = ones
  func.func @logits(%t: tensor<2x4xi32>) -> tensor<2x4x16xf32> {
    %e = stlm.param_ref @e : tensor<16x8xf32>
    %x = stlm.embed %e[%t] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %g = stlm.param_ref @g : tensor<8xf32>
    %n = stlm.rmsnorm %x, %g : tensor<2x4x8xf32>, tensor<8xf32>
    %e2 = stlm.param_ref @e : tensor<16x8xf32>
    %l = stlm.logits %n, %e2 : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    return %l : tensor<2x4x16xf32>
  }
  func.func @loss(%t: tensor<2x4xi32>, %y: tensor<2x4xi32>) -> tensor<f32> {
    %l = call @logits(%t) : (tensor<2x4xi32>) -> tensor<2x4x16xf32>
    %loss = stlm.next_token_loss %l, %y : tensor<2x4x16xf32>, tensor<2x4xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that a weight shared by a run of layers gets the sum over the
// iterations, that per-layer LoRA factors get their own gradients, that a
// residual stream accumulates, and that an unused parameter gets zeros.
// CHECK-LABEL: stlm.model @shared
// CHECK:       func.func @grad
// CHECK-SAME:    stlm.grad_params = [@shared.w, @layers.0.a, @layers.1.a, @layers.0.b, @layers.1.b, @unused]
// CHECK-NOT:     stlm.repeat
// CHECK-COUNT-2: stlm.lowrank
// CHECK:         stlm.lowrank_grad
// CHECK:         %{{.*}}, %[[DW1:.*]] = stlm.linear_grad
// CHECK:         stlm.add
// CHECK:         stlm.lowrank_grad
// CHECK:         %{{.*}}, %[[DW0:.*]] = stlm.linear_grad
// CHECK:         %[[DW:.*]] = stlm.add %[[DW1]], %[[DW0]] : tensor<4x4xf32>, tensor<4x4xf32>
// CHECK:         %[[Z:.*]] = arith.constant dense<0.000000e+00> : tensor<3xf32>
// CHECK:         return %{{.*}}, %[[DW]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[Z]]
stlm.model @shared {
  stlm.param @shared.w : tensor<4x4xf32> = normal(0.02)
  stlm.param @layers.0.a : tensor<2x4xf32> = normal(0.02)
  stlm.param @layers.1.a : tensor<2x4xf32> = normal(0.02)
  stlm.param @layers.0.b : tensor<4x2xf32> = zeros
  stlm.param @layers.1.b : tensor<4x2xf32> = zeros
  stlm.param @unused : tensor<3xf32> = ones
  func.func @loss(%x: tensor<2x3x4xf32>, %y: tensor<2x3xi32>) -> tensor<f32> {
    %h = stlm.repeat 0 to 2 (%x) : tensor<2x3x4xf32> {
    ^bb0(%l: index, %s: tensor<2x3x4xf32>):
      %w = stlm.param_ref @shared.w : tensor<4x4xf32>
      %a = stlm.layer_param_ref "layers.{}.a"[%l] : tensor<2x4xf32>
      %b = stlm.layer_param_ref "layers.{}.b"[%l] : tensor<4x2xf32>
      %f = stlm.linear %s, %w : tensor<2x3x4xf32>, tensor<4x4xf32> -> tensor<2x3x4xf32>
      %d = stlm.lowrank %s, %a, %b : tensor<2x3x4xf32>, tensor<2x4xf32>, tensor<4x2xf32> -> tensor<2x3x4xf32>
      %fd = stlm.add %f, %d : tensor<2x3x4xf32>, tensor<2x3x4xf32>
      %r = stlm.add %s, %fd : tensor<2x3x4xf32>, tensor<2x3x4xf32>
      stlm.yield %r : tensor<2x3x4xf32>
    }
    %loss = stlm.next_token_loss %h, %y : tensor<2x3x4xf32>, tensor<2x3xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests the byte-pool pieces: slot positions are summed over the leading
// dimensions, pooling and slot splitting have their gradients, chunk ids
// carry none, and weighted objectives scale the seed gradient.
// CHECK-LABEL: stlm.model @bytes
// CHECK:       func.func @grad(%[[B:.*]]: tensor<2x12xi32>)
// CHECK:         %[[C:.*]], %[[N:.*]] = stlm.chunk fixed %[[B]]
// CHECK:         %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK:         %[[W0:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK:         %[[D0:.*]] = arith.mulf %[[ONE]], %[[W0]] : tensor<f32>
// CHECK:         %[[W1:.*]] = arith.constant dense<5.000000e-01> : tensor<f32>
// CHECK:         %[[D1:.*]] = arith.mulf %[[ONE]], %[[W1]] : tensor<f32>
// CHECK:         stlm.reconstruction_loss_grad %{{.*}}, %[[C]] count(%[[N]]), %[[D1]] {mask_pad = true}
// CHECK:         stlm.chunk_bytes_loss_grad %{{.*}}, %[[C]] count(%[[N]]), %[[D0]]
// CHECK:         stlm.merge_slots %{{.*}} : tensor<2x3x8x4xf32> -> tensor<2x3x32xf32>
// CHECK:         stlm.pool_grad max
// CHECK:         stlm.sum_leading %{{.*}} : tensor<2x3x8x4xf32> -> tensor<8x4xf32>
// CHECK:         stlm.embed_grad %[[C]], %{{.*}} : tensor<2x3x8xi32>, tensor<2x3x8x4xf32> -> tensor<258x4xf32>
// Weighted objectives: @eval returns the weighted loss, then each
// objective's own, in the order of the weighted sum.
// CHECK:       func.func @eval(%{{.*}}: tensor<2x12xi32>) -> (tensor<f32>, tensor<f32>, tensor<f32>)
// CHECK:         %[[E0:.*]] = stlm.chunk_bytes_loss
// CHECK:         %[[E1:.*]] = stlm.reconstruction_loss
// CHECK:         %[[EW:.*]] = stlm.weighted_sum %[[E0]], %[[E1]]
// CHECK:         return %[[EW]], %[[E0]], %[[E1]]
stlm.model @bytes {
  stlm.param @bytes : tensor<258x4xf32> = normal(0.02)
  stlm.param @slots : tensor<8x4xf32> = normal(0.02)
  stlm.param @proj : tensor<32x4xf32> = normal(0.02)
  stlm.param @out : tensor<258x4xf32> = normal(0.02)
  func.func @loss(%b: tensor<2x12xi32>) -> tensor<f32> {
    %c, %n = stlm.chunk fixed %b {stride = 4} : tensor<2x12xi32> -> tensor<2x3x8xi32>, tensor<2xi32>
    %t = stlm.param_ref @bytes : tensor<258x4xf32>
    %e = stlm.embed %t[%c] : tensor<258x4xf32>, tensor<2x3x8xi32> -> tensor<2x3x8x4xf32>
    %s = stlm.param_ref @slots : tensor<8x4xf32>
    %x = stlm.add %e, %s : tensor<2x3x8x4xf32>, tensor<8x4xf32>
    %p = stlm.pool max %x : tensor<2x3x8x4xf32> -> tensor<2x3x4xf32>
    %w = stlm.param_ref @proj : tensor<32x4xf32>
    %q = stlm.linear %p, %w : tensor<2x3x4xf32>, tensor<32x4xf32> -> tensor<2x3x32xf32>
    %sl = stlm.split_slots %q : tensor<2x3x32xf32> -> tensor<2x3x8x4xf32>
    %o = stlm.param_ref @out : tensor<258x4xf32>
    %l = stlm.logits %sl, %o : tensor<2x3x8x4xf32>, tensor<258x4xf32> -> tensor<2x3x8x258xf32>
    %l0 = stlm.chunk_bytes_loss %l, %c count(%n) : tensor<2x3x8x258xf32>, tensor<2x3x8xi32>, tensor<2xi32>
    %l1 = stlm.reconstruction_loss %l, %c count(%n) {mask_pad = true} : tensor<2x3x8x258xf32>, tensor<2x3x8xi32>, tensor<2xi32>
    %loss = stlm.weighted_sum %l0, %l1 {weights = [1.0, 0.5]} : tensor<f32>, tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests attention, RoPE, SwiGLU, GELU, masking and distillation: the teacher
// logits get no gradient; masked ids carry none.
// CHECK-LABEL: stlm.model @layers
// CHECK:       func.func @grad(%[[X:.*]]: tensor<1x4x8xf32>, %[[Y:.*]]: tensor<1x4xi32>, %[[TL:.*]]: tensor<1x4x8xf32>, %[[SEED:.*]]: tensor<i32>)
// CHECK:         stlm.distill_loss_grad %{{.*}}, %[[TL]], %[[Y]], %{{.*}} {alpha = 5.000000e-01 : f64, temperature = 2.000000e+00 : f64}
// CHECK:         stlm.masked_next_token_loss_grad
// CHECK:         stlm.gelu_grad
// CHECK:         stlm.swiglu_grad
// CHECK:         stlm.attention_grad causal {{.*}} {heads = 2 : i64, kv_heads = 1 : i64}
// CHECK:         stlm.rope_grad %{{.*}} {head_dim = 4 : i64}
// CHECK:         stlm.rope_grad %{{.*}} {head_dim = 4 : i64}
stlm.model @layers {
  stlm.param @wk : tensor<4x8xf32> = normal(0.02)
  func.func @loss(%x: tensor<1x4x8xf32>, %y: tensor<1x4xi32>, %tl: tensor<1x4x8xf32>, %seed: tensor<i32>) -> tensor<f32> {
    %wk = stlm.param_ref @wk : tensor<4x8xf32>
    %k = stlm.linear %x, %wk : tensor<1x4x8xf32>, tensor<4x8xf32> -> tensor<1x4x4xf32>
    %q = stlm.rope %x {head_dim = 4} : tensor<1x4x8xf32>
    %kr = stlm.rope %k {head_dim = 4} : tensor<1x4x4xf32>
    %a = stlm.attention causal %q, %kr, %k {heads = 2, kv_heads = 1} : tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32> -> tensor<1x4x8xf32>
    %s = stlm.swiglu %a, %x : tensor<1x4x8xf32>
    %g = stlm.gelu %s : tensor<1x4x8xf32>
    %masked, %mask = stlm.mask_tokens %y, %seed {prob = 0.5, mask_id = 0} : tensor<1x4xi32> -> tensor<1x4xi1>
    %l0 = stlm.masked_next_token_loss %g, %masked, %mask : tensor<1x4x8xf32>, tensor<1x4xi32>, tensor<1x4xi1>
    %l1 = stlm.distill_loss %g, %tl, %y {temperature = 2.0, alpha = 0.5} : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>
    %loss = stlm.weighted_sum %l0, %l1 {weights = [1.0, 1.0]} : tensor<f32>, tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that values with no differentiable inputs (a constant gain, a state
// read) are leaves: their gradient is dropped, the model differentiates.
// CHECK-LABEL: stlm.model @leaves
// CHECK:       func.func @grad
// CHECK-SAME:    stlm.grad_params = [@w]
// CHECK:         stlm.rmsnorm_grad
// CHECK:         return
stlm.model @leaves {
  stlm.param @w : tensor<8x4xf32> = normal(0.02)
  stlm.state @bias : tensor<2x3x8xf32>
  func.func @loss(%x: tensor<2x3x4xf32>, %y: tensor<2x3xi32>) -> tensor<f32> {
    %g = arith.constant dense<1.5> : tensor<4xf32>
    %n = stlm.rmsnorm %x, %g : tensor<2x3x4xf32>, tensor<4xf32>
    %w = stlm.param_ref @w : tensor<8x4xf32>
    %l = stlm.linear %n, %w : tensor<2x3x4xf32>, tensor<8x4xf32> -> tensor<2x3x8xf32>
    %b = stlm.state_ref @bias : tensor<2x3x8xf32>
    %lb = stlm.add %l, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32>
    %loss = stlm.next_token_loss %lb, %y : tensor<2x3x8xf32>, tensor<2x3xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests gradient accumulation: @accumulate adds a micro-batch's gradients
// into grad_acc state; @apply averages them (1/k), updates and clears them.
// CHECK-LABEL: stlm.model @accumulated
// CHECK:       stlm.state @grad_acc.w : tensor<8x4xf32>
// CHECK-NOT:   func.func @train_step
// CHECK:       func.func @accumulate(%{{.*}}: tensor<2x3x4xf32>, %{{.*}}: tensor<2x3xi32>) -> tensor<f32>
// CHECK:         %[[R:.*]]:2 = call @grad
// CHECK:         %[[S:.*]] = stlm.state_ref @grad_acc.w
// CHECK:         %[[N:.*]] = stlm.add %[[S]], %[[R]]#1
// CHECK:         stlm.assign @grad_acc.w, %[[N]]
// CHECK:         return %[[R]]#0
// CHECK:       func.func @apply() -> (tensor<f32>, tensor<f32>)
// CHECK:         %[[SUM:.*]] = stlm.state_ref @grad_acc.w
// CHECK:         %[[INV:.*]] = arith.constant dense<2.500000e-01> : tensor<8x4xf32>
// CHECK:         %[[MEAN:.*]] = arith.mulf %[[SUM]], %[[INV]]
// CHECK:         stlm.clip_grad_norm %[[MEAN]]
// CHECK:         stlm.adamw
// CHECK:         stlm.assign @step
// CHECK:         %[[Z:.*]] = arith.constant dense<0.000000e+00> : tensor<8x4xf32>
// CHECK:         stlm.assign @grad_acc.w, %[[Z]]
// CHECK:       func.func @eval
stlm.model @accumulated attributes {stlm.train = {accumulate = 4}} {
  stlm.param @w : tensor<8x4xf32> = normal(0.02)
  func.func @loss(%x: tensor<2x3x4xf32>, %y: tensor<2x3xi32>) -> tensor<f32> {
    %w = stlm.param_ref @w : tensor<8x4xf32>
    %l = stlm.linear %x, %w : tensor<2x3x4xf32>, tensor<8x4xf32> -> tensor<2x3x8xf32>
    %loss = stlm.next_token_loss %l, %y : tensor<2x3x8xf32>, tensor<2x3xi32>
    return %loss : tensor<f32>
  }
}
