// RUN: stlm-opt %s -split-input-file -stlm-verify-shapes -verify-diagnostics

// Tests that RoPE must rotate the attention's head width (here 16 vs 32).
func.func @f(%q: tensor<2x8x128xf32>) {
  // expected-error @+1 {{rotates heads of width 16, but the attention using it as queries has heads of width 32}}
  %r = stlm.rope %q {head_dim = 16} : tensor<2x8x128xf32>
  %a = stlm.attention causal %r, %q, %q {heads = 4, kv_heads = 4} : tensor<2x8x128xf32>, tensor<2x8x128xf32>, tensor<2x8x128xf32> -> tensor<2x8x128xf32>
  return
}

// -----

// Tests the same for keys with grouped heads.
func.func @f(%q: tensor<2x8x128xf32>, %k: tensor<2x8x64xf32>) {
  // expected-error @+1 {{rotates heads of width 64, but the attention using it as keys has heads of width 32}}
  %r = stlm.rope %k {head_dim = 64} : tensor<2x8x64xf32>
  %a = stlm.attention causal %q, %r, %k {heads = 4, kv_heads = 2} : tensor<2x8x128xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32> -> tensor<2x8x128xf32>
  return
}

// -----

// Tests that a mask id must be a row of the table the masked ids index.
func.func @f(%ids: tensor<2x8xi32>, %seed: tensor<i32>, %t: tensor<16x4xf32>) {
  // expected-error @+1 {{mask_id 16 is outside the table of 16 rows it is looked up in}}
  %m, %k = stlm.mask_tokens %ids, %seed {prob = 0.15, mask_id = 16} : tensor<2x8xi32> -> tensor<2x8xi1>
  %e = stlm.embed %t[%m] : tensor<16x4xf32>, tensor<2x8xi32> -> tensor<2x8x4xf32>
  return
}

// -----

// Tests that chunk bytes need the 258-row byte table.
func.func @f(%b: tensor<2x16xi32>, %t: tensor<256x4xf32>) {
  %c, %n = stlm.chunk fixed %b {stride = 4} : tensor<2x16xi32> -> tensor<2x4x4xi32>, tensor<2xi32>
  // expected-error @+1 {{looks up chunk bytes (0-255 and pad 256) in a table of 256 rows; it needs 258}}
  %e = stlm.embed %t[%c] : tensor<256x4xf32>, tensor<2x4x4xi32> -> tensor<2x4x4x4xf32>
  return
}

// -----

// Tests that consistent IR passes unchanged.
func.func @f(%q: tensor<2x8x128xf32>, %k: tensor<2x8x64xf32>) {
  %rq = stlm.rope %q {head_dim = 32} : tensor<2x8x128xf32>
  %rk = stlm.rope %k {head_dim = 32} : tensor<2x8x64xf32>
  %a = stlm.attention causal %rq, %rk, %k {heads = 4, kv_heads = 2} : tensor<2x8x128xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32> -> tensor<2x8x128xf32>
  return
}
