// RUN: stlm-opt %s -split-input-file -stlm-add-decode -verify-diagnostics

// Tests that bidirectional attention cannot be decoded with a cache.
stlm.model @m {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(0.02)
  func.func @logits(%ids: tensor<1x4xi32>) -> tensor<1x4x16xf32> {
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    // expected-error @+1 {{must be causal attention without an offset to be decoded with a KV cache}}
    %a = stlm.attention none %x, %x, %x {heads = 2, kv_heads = 2} : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32> -> tensor<1x4x8xf32>
    %l = stlm.logits %a, %e : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    return %l : tensor<1x4x16xf32>
  }
}

// -----

// Tests that a cache name the model already uses otherwise is reported.
stlm.model @m {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(0.02)
  stlm.state @kv.0.k : tensor<2xf32>
  func.func @logits(%ids: tensor<1x4xi32>) -> tensor<1x4x16xf32> {
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    // expected-error @+1 {{needs '@kv.0.k' for its KV cache ('tensor<1x4x8xf32>'), but the model declares it otherwise}}
    %a = stlm.attention causal %x, %x, %x {heads = 2, kv_heads = 2} : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32> -> tensor<1x4x8xf32>
    %l = stlm.logits %a, %e : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    return %l : tensor<1x4x16xf32>
  }
}

// -----

// Tests that @logits whose attention has RoPE folded in (stlm-fuse ran
// first) is refused: a decode step rotates k before its cache.
stlm.model @m {
  stlm.param @embed.tok : tensor<16x8xf32> = normal(0.02)
  func.func @logits(%ids: tensor<1x4xi32>) -> tensor<1x4x16xf32> {
    %e = stlm.param_ref @embed.tok : tensor<16x8xf32>
    %x = stlm.embed %e[%ids] : tensor<16x8xf32>, tensor<1x4xi32> -> tensor<1x4x8xf32>
    // expected-error @+1 {{rotates q and k inside the attention (rope_theta); run stlm-add-decode before stlm-fuse folds RoPE in}}
    %a = stlm.attention causal %x, %x, %x {heads = 2, kv_heads = 2, rope_theta = 1.0e4 : f64} : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32> -> tensor<1x4x8xf32>
    %l = stlm.logits %a, %e : tensor<1x4x8xf32>, tensor<16x8xf32> -> tensor<1x4x16xf32>
    return %l : tensor<1x4x16xf32>
  }
}
