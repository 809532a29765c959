// char-tiny: the classic tiny-Shakespeare CPU model, written in the stlm
// dialect by hand. Byte vocabulary V = 256, 4 pre-norm decoder layers of
// width D = 128 with 4 heads (hd = 32), SwiGLU FFN of width F = 512,
// context T = 64, batch B = 12, LM head tied to the token embedding.
//
// The four layers have identical structure and their own weights, so they are
// one `stlm.repeat 0 to 4` whose body reads `layers.{l}.*` per layer. The tied
// head is structural: `@embed.tok` is read by the embedder and by the logits.
//
// Check it: stlm-opt examples/mlir/char-tiny.mlir

stlm.model @char_tiny {
  // Init: matrices N(0, 0.02); output projections wo, w2 N(0, 0.02/sqrt(2*4)).
  stlm.param @embed.tok : tensor<256x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.0.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wk : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wv : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wo : tensor<128x128xf32> = normal(7.071068e-03)
  stlm.param @layers.0.ffn_norm : tensor<128xf32> = ones
  stlm.param @layers.0.w1 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.w3 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.w2 : tensor<128x512xf32> = normal(7.071068e-03)
  stlm.param @layers.1.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.1.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wk : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wv : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wo : tensor<128x128xf32> = normal(7.071068e-03)
  stlm.param @layers.1.ffn_norm : tensor<128xf32> = ones
  stlm.param @layers.1.w1 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.w3 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.w2 : tensor<128x512xf32> = normal(7.071068e-03)
  stlm.param @layers.2.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.2.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.2.wk : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.2.wv : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.2.wo : tensor<128x128xf32> = normal(7.071068e-03)
  stlm.param @layers.2.ffn_norm : tensor<128xf32> = ones
  stlm.param @layers.2.w1 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.2.w3 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.2.w2 : tensor<128x512xf32> = normal(7.071068e-03)
  stlm.param @layers.3.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.3.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.3.wk : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.3.wv : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.3.wo : tensor<128x128xf32> = normal(7.071068e-03)
  stlm.param @layers.3.ffn_norm : tensor<128xf32> = ones
  stlm.param @layers.3.w1 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.3.w3 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @layers.3.w2 : tensor<128x512xf32> = normal(7.071068e-03)
  stlm.param @norm : tensor<128xf32> = ones

  // tokens: [B, T] byte ids -> logits: [B, T, V].
  func.func @logits(%tokens: tensor<12x64xi32>) -> tensor<12x64x256xf32> {
    %table = stlm.param_ref @embed.tok : tensor<256x128xf32>
    %x0 = stlm.embed %table[%tokens] : tensor<256x128xf32>, tensor<12x64xi32> -> tensor<12x64x128xf32>
    %x4 = stlm.repeat 0 to 4 (%x0) : tensor<12x64x128xf32> {
    ^bb0(%l: index, %x: tensor<12x64x128xf32>):
      // Attention: x += wo(attn(rope(wq n), rope(wk n), wv n)), n = rmsnorm(x).
      %g1 = stlm.layer_param_ref "layers.{}.attn_norm"[%l] : tensor<128xf32>
      %wq = stlm.layer_param_ref "layers.{}.wq"[%l] : tensor<128x128xf32>
      %wk = stlm.layer_param_ref "layers.{}.wk"[%l] : tensor<128x128xf32>
      %wv = stlm.layer_param_ref "layers.{}.wv"[%l] : tensor<128x128xf32>
      %wo = stlm.layer_param_ref "layers.{}.wo"[%l] : tensor<128x128xf32>
      %n1 = stlm.rmsnorm %x, %g1 : tensor<12x64x128xf32>, tensor<128xf32>
      %q0 = stlm.linear %n1, %wq : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
      %k0 = stlm.linear %n1, %wk : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
      %v = stlm.linear %n1, %wv : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
      %q = stlm.rope %q0 {head_dim = 32} : tensor<12x64x128xf32>
      %k = stlm.rope %k0 {head_dim = 32} : tensor<12x64x128xf32>
      %a = stlm.attention causal %q, %k, %v {heads = 4, kv_heads = 4}
          : tensor<12x64x128xf32>, tensor<12x64x128xf32>, tensor<12x64x128xf32> -> tensor<12x64x128xf32>
      %o = stlm.linear %a, %wo : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
      %x1 = stlm.add %x, %o : tensor<12x64x128xf32>, tensor<12x64x128xf32>
      // FFN: x += w2(silu(w1 n) * w3 n), n = rmsnorm(x).
      %g2 = stlm.layer_param_ref "layers.{}.ffn_norm"[%l] : tensor<128xf32>
      %w1 = stlm.layer_param_ref "layers.{}.w1"[%l] : tensor<512x128xf32>
      %w3 = stlm.layer_param_ref "layers.{}.w3"[%l] : tensor<512x128xf32>
      %w2 = stlm.layer_param_ref "layers.{}.w2"[%l] : tensor<128x512xf32>
      %n2 = stlm.rmsnorm %x1, %g2 : tensor<12x64x128xf32>, tensor<128xf32>
      %h1 = stlm.linear %n2, %w1 : tensor<12x64x128xf32>, tensor<512x128xf32> -> tensor<12x64x512xf32>
      %h3 = stlm.linear %n2, %w3 : tensor<12x64x128xf32>, tensor<512x128xf32> -> tensor<12x64x512xf32>
      %h = stlm.swiglu %h1, %h3 : tensor<12x64x512xf32>
      %f = stlm.linear %h, %w2 : tensor<12x64x512xf32>, tensor<128x512xf32> -> tensor<12x64x128xf32>
      %x2 = stlm.add %x1, %f : tensor<12x64x128xf32>, tensor<12x64x128xf32>
      stlm.yield %x2 : tensor<12x64x128xf32>
    }
    %g = stlm.param_ref @norm : tensor<128xf32>
    %n = stlm.rmsnorm %x4, %g : tensor<12x64x128xf32>, tensor<128xf32>
    // Tied head: the same symbol as the embedder's table.
    %head = stlm.param_ref @embed.tok : tensor<256x128xf32>
    %logits = stlm.logits %n, %head : tensor<12x64x128xf32>, tensor<256x128xf32> -> tensor<12x64x256xf32>
    return %logits : tensor<12x64x256xf32>
  }

  // The training objective: mean next-token cross-entropy in nats.
  // targets[b, t] = byte t+1 of the window whose first T bytes are tokens[b].
  func.func @loss(%tokens: tensor<12x64xi32>, %targets: tensor<12x64xi32>) -> tensor<f32> {
    %logits = call @logits(%tokens) : (tensor<12x64xi32>) -> tensor<12x64x256xf32>
    %loss = stlm.next_token_loss %logits, %targets : tensor<12x64x256xf32>, tensor<12x64xi32>
    return %loss : tensor<f32>
  }
}
