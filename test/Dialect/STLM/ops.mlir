// RUN: stlm-opt %s | FileCheck %s
// Custom form is a fixed point: print, parse, print again.
// RUN: stlm-opt %s | stlm-opt | FileCheck %s
// Generic form parses back to the same IR.
// RUN: stlm-opt %s --mlir-print-op-generic | stlm-opt | FileCheck %s

// Tests that the structural ops, with a tied head, a shared weight and
// per-layer parameters inside a repeat, round-trip.
// CHECK-LABEL: stlm.model @structure
// CHECK: stlm.param @embed.tok : tensor<16x8xf32> = normal(2.000000e-02)
// CHECK: stlm.param @norm : tensor<8xf32> = ones
// CHECK: stlm.param @layers.1.lora.w1.a : tensor<2x8xf32> = normal(2.000000e-02)
// CHECK: stlm.param @layers.2.lora.w1.a : tensor<2x8xf32> = normal(2.000000e-02)
// CHECK: stlm.param @layers.1.lora.w1.b : tensor<8x2xf32> = zeros
// CHECK: stlm.param @layers.2.lora.w1.b : tensor<8x2xf32> = zeros
// CHECK: stlm.param @shared.w1 : tensor<8x8xf32> = normal(1.000000e-02)
stlm.model @structure {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(2.0e-2)
  stlm.param @norm : tensor<8xf32> = ones
  stlm.param @layers.1.lora.w1.a : tensor<2x8xf32> = normal(2.0e-2)
  stlm.param @layers.2.lora.w1.a : tensor<2x8xf32> = normal(2.0e-2)
  stlm.param @layers.1.lora.w1.b : tensor<8x2xf32> = zeros
  stlm.param @layers.2.lora.w1.b : tensor<8x2xf32> = zeros
  stlm.param @shared.w1 : tensor<8x8xf32> = normal(1.0e-2)
  // CHECK: func.func @logits(%[[IDS:.*]]: tensor<2x4xi32>)
  func.func @logits(%ids: tensor<2x4xi32>) -> tensor<2x4x16xf32> {
    // CHECK: %[[E:.*]] = stlm.param_ref @embed.tok : tensor<16x8xf32>
    // CHECK: %[[X:.*]] = stlm.embed %[[E]][%[[IDS]]] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    // CHECK: %[[Y:.*]] = stlm.repeat 1 to 3 (%[[X]]) : tensor<2x4x8xf32> {
    // CHECK: ^bb0(%[[L:.*]]: index, %[[H:.*]]: tensor<2x4x8xf32>):
    // CHECK:   %[[W:.*]] = stlm.param_ref @shared.w1 : tensor<8x8xf32>
    // CHECK:   %[[A:.*]] = stlm.layer_param_ref "layers.{}.lora.w1.a"[%[[L]]] : tensor<2x8xf32>
    // CHECK:   %[[B:.*]] = stlm.layer_param_ref "layers.{}.lora.w1.b"[%[[L]]] : tensor<8x2xf32>
    // CHECK:   %[[F:.*]] = stlm.linear %[[H]], %[[W]] : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    // CHECK:   %[[D:.*]] = stlm.lowrank %[[H]], %[[A]], %[[B]] : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32> -> tensor<2x4x8xf32>
    // CHECK:   %[[S:.*]] = stlm.add %[[F]], %[[D]] : tensor<2x4x8xf32>, tensor<2x4x8xf32>
    // CHECK:   stlm.yield %[[S]] : tensor<2x4x8xf32>
    // CHECK: }
    %y = stlm.repeat 1 to 3 (%x) : tensor<2x4x8xf32> {
    ^bb0(%l: index, %h: tensor<2x4x8xf32>):
      %w = stlm.param_ref @shared.w1 : tensor<8x8xf32>
      %a = stlm.layer_param_ref "layers.{}.lora.w1.a"[%l] : tensor<2x8xf32>
      %b = stlm.layer_param_ref "layers.{}.lora.w1.b"[%l] : tensor<8x2xf32>
      %f = stlm.linear %h, %w : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
      %d = stlm.lowrank %h, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x2xf32> -> tensor<2x4x8xf32>
      %s = stlm.add %f, %d : tensor<2x4x8xf32>, tensor<2x4x8xf32>
      stlm.yield %s : tensor<2x4x8xf32>
    }
    // CHECK: %[[G:.*]] = stlm.param_ref @norm : tensor<8xf32>
    // The default eps (1e-6) is not printed.
    // CHECK: %[[N:.*]] = stlm.rmsnorm %[[Y]], %[[G]] : tensor<2x4x8xf32>, tensor<8xf32>
    // CHECK: stlm.rmsnorm %[[Y]], %[[G]] {eps = 1.000000e-05 : f64} : tensor<2x4x8xf32>, tensor<8xf32>
    // CHECK: %[[E2:.*]] = stlm.param_ref @embed.tok : tensor<16x8xf32>
    // CHECK: stlm.logits %[[N]], %[[E2]] : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    %g = stlm.param_ref @norm : tensor<8xf32>
    %n = stlm.rmsnorm %y, %g {eps = 1.0e-6} : tensor<2x4x8xf32>, tensor<8xf32>
    %n5 = stlm.rmsnorm %y, %g {eps = 1.0e-5} : tensor<2x4x8xf32>, tensor<8xf32>
    %e2 = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %logits = stlm.logits %n, %e2 : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x16xf32>
    return %logits : tensor<2x4x16xf32>
  }
}

// Tests that the core layer ops round-trip, including grouped KV heads,
// RoPE with a position offset and both FFN activations.
// CHECK-LABEL: stlm.model @layers
stlm.model @layers {
  // CHECK: func.func @block
  func.func @block(%x: tensor<2x4x8xf32>, %k: tensor<2x6x4xf32>, %pos: tensor<i32>, %x1: tensor<2x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
    // CHECK: stlm.rope %{{.*}} {head_dim = 4 : i64, theta = 5.000000e+05 : f64} : tensor<2x4x8xf32>
    %r = stlm.rope %x {head_dim = 4, theta = 5.0e5} : tensor<2x4x8xf32>
    // CHECK: stlm.rope %{{.*}} offset(%{{.*}}) {head_dim = 4 : i64} : tensor<2x6x4xf32>
    %rk = stlm.rope %k offset(%pos) {head_dim = 4} : tensor<2x6x4xf32>
    // CHECK: stlm.attention causal %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xf32>, tensor<2x6x4xf32>, tensor<2x6x4xf32> -> tensor<2x4x8xf32>
    %a = stlm.attention causal %r, %rk, %k {heads = 2, kv_heads = 1} : tensor<2x4x8xf32>, tensor<2x6x4xf32>, tensor<2x6x4xf32> -> tensor<2x4x8xf32>
    // CHECK: stlm.attention causal %{{.*}}, %{{.*}}, %{{.*}} offset(%{{.*}}) {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x1x8xf32>, tensor<2x6x4xf32>, tensor<2x6x4xf32> -> tensor<2x1x8xf32>
    %q1 = stlm.split_slots %x1 : tensor<2x8xf32> -> tensor<2x1x8xf32>
    %g1 = stlm.attention causal %q1, %rk, %k offset(%pos) {heads = 2, kv_heads = 1} : tensor<2x1x8xf32>, tensor<2x6x4xf32>, tensor<2x6x4xf32> -> tensor<2x1x8xf32>
    // CHECK: stlm.write_rows %{{.*}}, %{{.*}} offset(%{{.*}}) : tensor<2x6x4xf32>, tensor<2x2x4xf32>
    %k1 = stlm.split_slots %x1 : tensor<2x8xf32> -> tensor<2x2x4xf32>
    %kw = stlm.write_rows %k, %k1 offset(%pos) : tensor<2x6x4xf32>, tensor<2x2x4xf32>
    // CHECK: stlm.swiglu %{{.*}}, %{{.*}} : tensor<2x4x8xf32>
    %s = stlm.swiglu %a, %x : tensor<2x4x8xf32>
    // CHECK: stlm.gelu %{{.*}} : tensor<2x4x8xf32>
    %g = stlm.gelu %x : tensor<2x4x8xf32>
    return %a, %s, %g : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>
  }
}

// Tests that the byte-pool pieces round-trip: every chunking mode, every
// pooling kind, attention inside chunks and the chunk decoder reshape.
// CHECK-LABEL: stlm.model @bytes
stlm.model @bytes {
  // CHECK: func.func @chunks
  func.func @chunks(%bytes: tensor<2x16xi32>) -> (tensor<2x4x4xi32>, tensor<2x8x6xi32>, tensor<2x8x6xi32>) {
    // CHECK: %{{.*}}, %{{.*}} = stlm.chunk fixed %{{.*}} {stride = 4 : i64} : tensor<2x16xi32> -> tensor<2x4x4xi32>, tensor<2xi32>
    %f, %nf = stlm.chunk fixed %bytes {stride = 4} : tensor<2x16xi32> -> tensor<2x4x4xi32>, tensor<2xi32>
    // CHECK: stlm.chunk words %{{.*}} : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
    %w, %nw = stlm.chunk words %bytes : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
    // CHECK: stlm.chunk given %{{.*}} : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
    %g, %ng = stlm.chunk given %bytes : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
    return %f, %w, %g : tensor<2x4x4xi32>, tensor<2x8x6xi32>, tensor<2x8x6xi32>
  }
  // CHECK: func.func @encode
  func.func @encode(%e: tensor<2x8x6x4xf32>, %ids: tensor<2x8x6xi32>, %slots: tensor<6x4xf32>) -> (tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x8x4xf32>) {
    // CHECK: stlm.add %{{.*}}, %{{.*}} : tensor<2x8x6x4xf32>, tensor<6x4xf32>
    %x = stlm.add %e, %slots : tensor<2x8x6x4xf32>, tensor<6x4xf32>
    // CHECK: stlm.attention none %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x6x4xf32>, tensor<2x8x6x4xf32>, tensor<2x8x6x4xf32> -> tensor<2x8x6x4xf32>
    %a = stlm.attention none %x, %x, %x {heads = 2, kv_heads = 2} : tensor<2x8x6x4xf32>, tensor<2x8x6x4xf32>, tensor<2x8x6x4xf32> -> tensor<2x8x6x4xf32>
    // CHECK: stlm.pool mean %{{.*}} : tensor<2x8x6x4xf32> -> tensor<2x8x4xf32>
    %m = stlm.pool mean %a : tensor<2x8x6x4xf32> -> tensor<2x8x4xf32>
    // CHECK: stlm.pool masked_mean %{{.*}} ids(%{{.*}}) : tensor<2x8x6x4xf32>, tensor<2x8x6xi32> -> tensor<2x8x4xf32>
    %mm = stlm.pool masked_mean %a ids(%ids) : tensor<2x8x6x4xf32>, tensor<2x8x6xi32> -> tensor<2x8x4xf32>
    // CHECK: stlm.pool max %{{.*}} : tensor<2x8x6x4xf32> -> tensor<2x8x4xf32>
    %mx = stlm.pool max %a : tensor<2x8x6x4xf32> -> tensor<2x8x4xf32>
    return %m, %mm, %mx : tensor<2x8x4xf32>, tensor<2x8x4xf32>, tensor<2x8x4xf32>
  }
  // CHECK: func.func @decode
  func.func @decode(%p: tensor<2x8x24xf32>) -> tensor<2x8x6x4xf32> {
    // CHECK: stlm.split_slots %{{.*}} : tensor<2x8x24xf32> -> tensor<2x8x6x4xf32>
    %s = stlm.split_slots %p : tensor<2x8x24xf32> -> tensor<2x8x6x4xf32>
    return %s : tensor<2x8x6x4xf32>
  }
}

// Tests that every objective and the weighted sum round-trip.
// CHECK-LABEL: stlm.model @objectives
stlm.model @objectives {
  // CHECK: func.func @losses
  func.func @losses(%l: tensor<2x4x16xf32>, %t: tensor<2x4x16xf32>, %y: tensor<2x4xi32>,
                    %seed: tensor<i32>, %bl: tensor<2x8x6x258xf32>, %c: tensor<2x8x6xi32>, %n: tensor<2xi32>) -> tensor<f32> {
    // CHECK: stlm.next_token_loss %{{.*}}, %{{.*}} : tensor<2x4x16xf32>, tensor<2x4xi32>
    %a = stlm.next_token_loss %l, %y : tensor<2x4x16xf32>, tensor<2x4xi32>
    // CHECK: stlm.mask_tokens %{{.*}}, %{{.*}} {mask_id = 0 : i64, prob = 1.500000e-01 : f64} : tensor<2x4xi32> -> tensor<2x4xi1>
    %masked, %mask = stlm.mask_tokens %y, %seed {prob = 0.15, mask_id = 0} : tensor<2x4xi32> -> tensor<2x4xi1>
    // CHECK: stlm.masked_next_token_loss %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<2x4xi1>
    %b = stlm.masked_next_token_loss %l, %y, %mask : tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<2x4xi1>
    // CHECK: stlm.distill_loss %{{.*}}, %{{.*}}, %{{.*}} {alpha = 5.000000e-01 : f64, temperature = 2.000000e+00 : f64} : tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xi32>
    %d = stlm.distill_loss %l, %t, %y {temperature = 2.0, alpha = 0.5} : tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xi32>
    // CHECK: stlm.chunk_bytes_loss %{{.*}}, %{{.*}} {mask_pad = true} : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>
    %cb = stlm.chunk_bytes_loss %bl, %c {mask_pad = true} : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>
    // CHECK: stlm.chunk_bytes_loss %{{.*}}, %{{.*}} count(%{{.*}}) : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<2xi32>
    %cb2 = stlm.chunk_bytes_loss %bl, %c count(%n) : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<2xi32>
    // CHECK: stlm.reconstruction_loss %{{.*}}, %{{.*}} : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>
    %r = stlm.reconstruction_loss %bl, %c : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>
    // CHECK: stlm.reconstruction_loss %{{.*}}, %{{.*}} count(%{{.*}}) {mask_pad = true} : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<2xi32>
    %r2 = stlm.reconstruction_loss %bl, %c count(%n) {mask_pad = true} : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<2xi32>
    // CHECK: stlm.weighted_sum %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {weights = [1.000000e+00, 5.000000e-01, 2.500000e-01, 1.000000e+00, 1.000000e-01]} : tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>
    %s = stlm.weighted_sum %a, %b, %d, %cb, %r {weights = [1.0, 0.5, 0.25, 1.0, 0.1]} : tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>
    return %s : tensor<f32>
  }
}

// Tests that the training ops round-trip.
// CHECK-LABEL: stlm.model @training
stlm.model @training {
  // CHECK: func.func @update
  func.func @update(%p: tensor<4x8xf32>, %g: tensor<4x8xf32>, %m: tensor<4x8xf32>, %v: tensor<4x8xf32>,
                    %gn: tensor<8xf32>, %step: tensor<i32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<f32>) {
    // CHECK: %[[C:[a-z_0-9]+]]:2, %[[NORM:[a-z_0-9]+]] = stlm.clip_grad_norm %{{.*}}, %{{.*}} {max_norm = 1.000000e+00 : f64} : tensor<4x8xf32>, tensor<8xf32>
    %c:2, %norm = stlm.clip_grad_norm %g, %gn {max_norm = 1.0} : tensor<4x8xf32>, tensor<8xf32>
    // CHECK: %[[LR:.*]] = stlm.lr_schedule cosine %{{.*}} {lr = 1.000000e-03 : f64, min_lr = 1.000000e-04 : f64, total = 2000 : i64, warmup = 100 : i64}
    %lr = stlm.lr_schedule cosine %step {lr = 1.0e-3, min_lr = 1.0e-4, warmup = 100, total = 2000}
    // CHECK: stlm.lr_schedule constant %{{.*}} {lr = 1.000000e-03 : f64, min_lr = 0.000000e+00 : f64, total = 10 : i64, warmup = 2 : i64}
    %lr2 = stlm.lr_schedule constant %step {lr = 1.0e-3, min_lr = 0.0, warmup = 2, total = 10}
    // CHECK: stlm.adamw %{{.*}}, %[[C]]#0, %{{.*}}, %{{.*}}, %[[LR]], %{{.*}} {beta1 = 9.000000e-01 : f64, beta2 = 0.98999999999999999 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-01 : f64} : tensor<4x8xf32>
    %p2, %m2, %v2 = stlm.adamw %p, %c#0, %m, %v, %lr, %step {beta1 = 0.9, beta2 = 0.99, eps = 1.0e-8, weight_decay = 0.1} : tensor<4x8xf32>
    return %p2, %m2, %v2, %c#1, %norm : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<f32>
  }
}

// Tests that state, its reads and writes, and every gradient op round-trip.
// CHECK-LABEL: stlm.model @gradients
// CHECK: stlm.param @w : tensor<8x4xf32> = normal(2.000000e-02)
// CHECK: stlm.state @opt.m.w : tensor<8x4xf32>
// CHECK: stlm.state @step : tensor<i32>
stlm.model @gradients {
  stlm.param @w : tensor<8x4xf32> = normal(0.02)
  stlm.state @opt.m.w : tensor<8x4xf32>
  stlm.state @step : tensor<i32>
  // CHECK: func.func @update
  func.func @update(%g: tensor<8x4xf32>) {
    // CHECK: %[[S:.*]] = stlm.state_ref @step : tensor<i32>
    // CHECK: %[[M:.*]] = stlm.state_ref @opt.m.w : tensor<8x4xf32>
    // CHECK: stlm.assign @opt.m.w, %{{.*}} : tensor<8x4xf32>
    // CHECK: stlm.assign @w, %{{.*}} : tensor<8x4xf32>
    // CHECK: stlm.assign @step, %[[S]] : tensor<i32>
    %s = stlm.state_ref @step : tensor<i32>
    %m = stlm.state_ref @opt.m.w : tensor<8x4xf32>
    %m2 = stlm.add %m, %g : tensor<8x4xf32>, tensor<8x4xf32>
    stlm.assign @opt.m.w, %m2 : tensor<8x4xf32>
    stlm.assign @w, %m2 : tensor<8x4xf32>
    stlm.assign @step, %s : tensor<i32>
    return
  }
  // CHECK: func.func @grads
  func.func @grads(%ids: tensor<2x3xi32>, %x: tensor<2x3x4xf32>, %w: tensor<8x4xf32>, %dy8: tensor<2x3x8xf32>,
                   %g4: tensor<4xf32>, %a: tensor<2x4xf32>, %b: tensor<8x2xf32>, %pos: tensor<i32>,
                   %p: tensor<2x3x6x4xf32>, %pids: tensor<2x3x6xi32>, %dp: tensor<2x3x4xf32>,
                   %l: tensor<2x3x8xf32>, %y: tensor<2x3xi32>, %mk: tensor<2x3xi1>, %dl: tensor<f32>,
                   %cl: tensor<2x3x6x258xf32>, %n: tensor<2xi32>) {
    // CHECK: stlm.embed_grad %{{.*}}, %{{.*}} : tensor<2x3xi32>, tensor<2x3x4xf32> -> tensor<16x4xf32>
    %de = stlm.embed_grad %ids, %x : tensor<2x3xi32>, tensor<2x3x4xf32> -> tensor<16x4xf32>
    // CHECK: stlm.pool_grad masked_mean %{{.*}}, %{{.*}} ids(%{{.*}}) : tensor<2x3x6x4xf32>, tensor<2x3x4xf32>, tensor<2x3x6xi32>
    %dpool = stlm.pool_grad masked_mean %p, %dp ids(%pids) : tensor<2x3x6x4xf32>, tensor<2x3x4xf32>, tensor<2x3x6xi32>
    // CHECK: stlm.rmsnorm_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x4xf32>, tensor<4xf32>
    %dx1, %dg = stlm.rmsnorm_grad %x, %g4, %x : tensor<2x3x4xf32>, tensor<4xf32>
    // CHECK: stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x4xf32>, tensor<8x4xf32>, tensor<2x3x8xf32>
    %dx2, %dw = stlm.linear_grad %x, %w, %dy8 : tensor<2x3x4xf32>, tensor<8x4xf32>, tensor<2x3x8xf32>
    // CHECK: stlm.lowrank_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>, tensor<2x3x8xf32>
    %dx3, %da, %db = stlm.lowrank_grad %x, %a, %b, %dy8 : tensor<2x3x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>, tensor<2x3x8xf32>
    // CHECK: stlm.lowrank_merge %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>
    %wm = stlm.lowrank_merge %w, %a, %b : tensor<8x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>
    // CHECK: stlm.lowrank_merge_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>
    %dam, %dbm = stlm.lowrank_merge_grad %dw, %a, %b : tensor<8x4xf32>, tensor<2x4xf32>, tensor<8x2xf32>
    // CHECK: stlm.rope_grad %{{.*}} offset(%{{.*}}) {head_dim = 2 : i64} : tensor<2x3x4xf32>
    %dr = stlm.rope_grad %x offset(%pos) {head_dim = 2} : tensor<2x3x4xf32>
    // CHECK: stlm.attention_grad causal %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x3x4xf32>, tensor<2x3x2xf32>, tensor<2x3x2xf32>, tensor<2x3x4xf32>
    %kv = stlm.linear %x, %a : tensor<2x3x4xf32>, tensor<2x4xf32> -> tensor<2x3x2xf32>
    %dq, %dk, %dv = stlm.attention_grad causal %x, %kv, %kv, %x {heads = 2, kv_heads = 1} : tensor<2x3x4xf32>, tensor<2x3x2xf32>, tensor<2x3x2xf32>, tensor<2x3x4xf32>
    // CHECK: stlm.swiglu_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x4xf32>
    %dga, %dup = stlm.swiglu_grad %x, %x, %x : tensor<2x3x4xf32>
    // CHECK: stlm.gelu_grad %{{.*}}, %{{.*}} : tensor<2x3x4xf32>
    %dgl = stlm.gelu_grad %x, %x : tensor<2x3x4xf32>
    // CHECK: stlm.sum_leading %{{.*}} : tensor<2x3x4xf32> -> tensor<3x4xf32>
    %sl = stlm.sum_leading %x : tensor<2x3x4xf32> -> tensor<3x4xf32>
    // CHECK: stlm.merge_slots %{{.*}} : tensor<2x3x6x4xf32> -> tensor<2x3x24xf32>
    %ms = stlm.merge_slots %p : tensor<2x3x6x4xf32> -> tensor<2x3x24xf32>
    // CHECK: stlm.next_token_loss_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x8xf32>, tensor<2x3xi32>
    %d1 = stlm.next_token_loss_grad %l, %y, %dl : tensor<2x3x8xf32>, tensor<2x3xi32>
    // CHECK: stlm.masked_next_token_loss_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x8xf32>, tensor<2x3xi32>, tensor<2x3xi1>
    %d2 = stlm.masked_next_token_loss_grad %l, %y, %mk, %dl : tensor<2x3x8xf32>, tensor<2x3xi32>, tensor<2x3xi1>
    // CHECK: stlm.distill_loss_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {alpha = 5.000000e-01 : f64, temperature = 2.000000e+00 : f64} : tensor<2x3x8xf32>, tensor<2x3xi32>
    %d3 = stlm.distill_loss_grad %l, %l, %y, %dl {temperature = 2.0, alpha = 0.5} : tensor<2x3x8xf32>, tensor<2x3xi32>
    // CHECK: stlm.chunk_bytes_loss_grad %{{.*}}, %{{.*}} count(%{{.*}}), %{{.*}} {mask_pad = true} : tensor<2x3x6x258xf32>, tensor<2x3x6xi32>, tensor<2xi32>
    %d4 = stlm.chunk_bytes_loss_grad %cl, %pids count(%n), %dl {mask_pad = true} : tensor<2x3x6x258xf32>, tensor<2x3x6xi32>, tensor<2xi32>
    // CHECK: stlm.reconstruction_loss_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x3x6x258xf32>, tensor<2x3x6xi32>
    %d5 = stlm.reconstruction_loss_grad %cl, %pids, %dl : tensor<2x3x6x258xf32>, tensor<2x3x6xi32>
    return
  }
}

// Tests that the fused matmul round-trips with and without its epilogues.
// CHECK-LABEL: func.func @fused
func.func @fused(%x: tensor<2x4x8xf32>, %w: tensor<8x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
  // CHECK: stlm.linear_fused %{{.*}}, %{{.*}} residual(%{{.*}} : tensor<2x4x8xf32>) {activation = "gelu"} : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  %a = stlm.linear_fused %x, %w residual(%x : tensor<2x4x8xf32>) {activation = "gelu"} : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  // CHECK: stlm.linear_fused %{{.*}}, %{{.*}} : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  %b = stlm.linear_fused %x, %w : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  return %a, %b : tensor<2x4x8xf32>, tensor<2x4x8xf32>
}

// Tests that a linear gradient with an addend round-trips.
// CHECK-LABEL: func.func @grad_addend
func.func @grad_addend(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %dy: tensor<2x4xf32>) -> tensor<2x8xf32> {
  // CHECK: stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} addend(%{{.*}} : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  %dx, %dw = stlm.linear_grad %x, %w, %dy addend(%x : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  return %dx : tensor<2x8xf32>
}

// Tests that a linear gradient with a GELU input (its gradient epilogue)
// round-trips, in the custom and the generic form.
// CHECK-LABEL: func.func @grad_gelu_input
func.func @grad_gelu_input(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %dy: tensor<2x4xf32>, %h: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>) {
  // CHECK: stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} gelu_input(%{{.*}} : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  %dx, %dw = stlm.linear_grad %x, %w, %dy gelu_input(%h : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  // CHECK: stlm.linear_grad %{{.*}}, %{{.*}}, %{{.*}} gelu_input(%{{.*}} : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  %dx2, %dw2 = "stlm.linear_grad"(%x, %w, %dy, %h) <{operandSegmentSizes = array<i32: 1, 1, 1, 0, 1>}> : (tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>, tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<4x8xf32>)
  return %dx, %dx2 : tensor<2x8xf32>, tensor<2x8xf32>
}
