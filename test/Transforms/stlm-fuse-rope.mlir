// RUN: stlm-opt %s -split-input-file -stlm-fuse=rope-into-attention=true | FileCheck %s
// RUN: stlm-opt %s -split-input-file -stlm-fuse | FileCheck %s --check-prefix=OFF
// RUN: stlm-opt %s -split-input-file -stlm-fuse="rope-into-attention=true rope-fold-max-keys=64" | FileCheck %s
// RUN: stlm-opt %s -split-input-file -stlm-fuse="rope-into-attention=true rope-fold-max-keys=63" | FileCheck %s --check-prefix=OFF

// Tests that a bf16 model's RoPE pair whose results only an attention and
// its gradient read (grouped kv heads, the model's theta) is folded into
// both: they take the unrotated q and k with rope_theta, and the rope_grad
// of dq and dk go (the fused gradients are the unrotated ones'). Without
// the option nothing is folded, nor with rope-fold-max-keys under the 64
// keys.
// CHECK-LABEL: func.func @step
// CHECK-SAME:  (%[[Q:.*]]: tensor<2x64x128xf32>, %[[K:.*]]: tensor<2x64x64xf32>, %[[V:.*]]: tensor<2x64x64xf32>, %[[DY:.*]]: tensor<2x64x128xf32>)
// CHECK-NOT:   stlm.rope
// CHECK:       %[[Y:.*]] = stlm.attention causal %[[Q]], %[[K]], %[[V]] {heads = 2 : i64, kv_heads = 1 : i64, rope_theta = 5.000000e+05 : f64}
// CHECK:       %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = stlm.attention_grad causal %[[Q]], %[[K]], %[[V]], %[[DY]] {heads = 2 : i64, kv_heads = 1 : i64, rope_theta = 5.000000e+05 : f64}
// CHECK-NOT:   stlm.rope_grad
// CHECK:       return %[[Y]], %[[DQ]], %[[DK]], %[[DV]]
// OFF-LABEL:   func.func @step
// OFF-COUNT-2: stlm.rope %
// OFF-COUNT-2: stlm.rope_grad
// OFF-NOT:     rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @step(%q: tensor<2x64x128xf32>, %k: tensor<2x64x64xf32>, %v: tensor<2x64x64xf32>, %dy: tensor<2x64x128xf32>)
      -> (tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x64xf32>, tensor<2x64x64xf32>) {
    %qr = stlm.rope %q {head_dim = 64 : i64, theta = 5.000000e+05 : f64} : tensor<2x64x128xf32>
    %kr = stlm.rope %k {head_dim = 64 : i64, theta = 5.000000e+05 : f64} : tensor<2x64x64xf32>
    %y = stlm.attention causal %qr, %kr, %v {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x64x128xf32>, tensor<2x64x64xf32>, tensor<2x64x64xf32> -> tensor<2x64x128xf32>
    %dq, %dk, %dv = stlm.attention_grad causal %qr, %kr, %v, %dy {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x64x128xf32>, tensor<2x64x64xf32>, tensor<2x64x64xf32>, tensor<2x64x128xf32>
    %dk0 = stlm.rope_grad %dk {head_dim = 64 : i64, theta = 5.000000e+05 : f64} : tensor<2x64x64xf32>
    %dq0 = stlm.rope_grad %dq {head_dim = 64 : i64, theta = 5.000000e+05 : f64} : tensor<2x64x128xf32>
    return %y, %dq0, %dk0, %dv : tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x64xf32>, tensor<2x64x64xf32>
  }
}

// -----

// Tests what is not folded: an fp32 model (its attention has no bf16
// kernels), heads 24 wide (not a multiple of 16), 8 queries (under the 16
// of a tensor-core block), a rotated k that something else reads (a KV
// cache's write), q and k rotated with different thetas, and a dq summed
// with another gradient before its rope_grad.
// CHECK-LABEL: func.func @fp32
// CHECK-COUNT-2: stlm.rope %
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "fp32"}} {
  func.func @fp32(%q: tensor<2x64x128xf32>) -> tensor<2x64x128xf32> {
    %qr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %kr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %y = stlm.attention causal %qr, %kr, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32> -> tensor<2x64x128xf32>
    return %y : tensor<2x64x128xf32>
  }
}

// -----

// CHECK-LABEL: func.func @narrow
// CHECK-COUNT-2: stlm.rope %
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @narrow(%q: tensor<2x64x48xf32>) -> tensor<2x64x48xf32> {
    %qr = stlm.rope %q {head_dim = 24 : i64} : tensor<2x64x48xf32>
    %kr = stlm.rope %q {head_dim = 24 : i64} : tensor<2x64x48xf32>
    %y = stlm.attention causal %qr, %kr, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x64x48xf32>, tensor<2x64x48xf32>, tensor<2x64x48xf32> -> tensor<2x64x48xf32>
    return %y : tensor<2x64x48xf32>
  }
}

// -----

// CHECK-LABEL: func.func @short
// CHECK-COUNT-2: stlm.rope %
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @short(%q: tensor<2x8x128xf32>) -> tensor<2x8x128xf32> {
    %qr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x8x128xf32>
    %kr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x8x128xf32>
    %y = stlm.attention causal %qr, %kr, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32> -> tensor<2x8x128xf32>
    return %y : tensor<2x8x128xf32>
  }
}

// -----

// CHECK-LABEL: func.func @cached
// CHECK-COUNT-2: stlm.rope %
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @cached(%q: tensor<2x64x128xf32>) -> (tensor<2x64x128xf32>, tensor<2x64x128xf32>) {
    %qr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %kr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %y = stlm.attention causal %qr, %kr, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32> -> tensor<2x64x128xf32>
    return %y, %kr : tensor<2x64x128xf32>, tensor<2x64x128xf32>
  }
}

// -----

// CHECK-LABEL: func.func @thetas
// CHECK-COUNT-2: stlm.rope %
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @thetas(%q: tensor<2x64x128xf32>) -> tensor<2x64x128xf32> {
    %qr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %kr = stlm.rope %q {head_dim = 64 : i64, theta = 5.000000e+05 : f64} : tensor<2x64x128xf32>
    %y = stlm.attention causal %qr, %kr, %q {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32> -> tensor<2x64x128xf32>
    return %y : tensor<2x64x128xf32>
  }
}

// -----

// CHECK-LABEL: func.func @summed
// CHECK-COUNT-2: stlm.rope %
// CHECK:       stlm.attention_grad
// CHECK-NOT:   rope_theta
stlm.model @m attributes {stlm.train = {precision = "bf16"}} {
  func.func @summed(%q: tensor<2x64x128xf32>, %dy: tensor<2x64x128xf32>) -> (tensor<2x64x128xf32>, tensor<2x64x128xf32>) {
    %qr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %kr = stlm.rope %q {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %dq, %dk, %dv = stlm.attention_grad causal %qr, %kr, %q, %dy {heads = 2 : i64, kv_heads = 2 : i64} : tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>, tensor<2x64x128xf32>
    %s = stlm.add %dq, %dy : tensor<2x64x128xf32>, tensor<2x64x128xf32>
    %dq0 = stlm.rope_grad %s {head_dim = 64 : i64} : tensor<2x64x128xf32>
    %dk0 = stlm.rope_grad %dk {head_dim = 64 : i64} : tensor<2x64x128xf32>
    return %dq0, %dk0 : tensor<2x64x128xf32>, tensor<2x64x128xf32>
  }
}
