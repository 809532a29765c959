// byte-pool: a byte-level model that runs its core over word chunks,
// written in the stlm dialect by hand.
//
//   bytes [B=4, N=256] --chunk words--> chunks [4, C=32, L=12] (pad 256;
//            bytes after the 32nd chunk are left for other windows)
//   encoder: embed.bytes + embed.slots -> 1 block, attention inside each
//            chunk (d_b = 64, 4 heads) -> mean pool -> embed.proj -> [4, 32, 128]
//   core:    2 causal layers over chunks, D = 128, 4 heads / 2 kv heads
//            (grouped, hd = 32), GELU FFN of width 512 shared by both layers
//   head:    head.proj -> L slots of d_b + head.slots -> 1 decoder block ->
//            rmsnorm -> head.out: 258-way logits for the 12 bytes of the
//            NEXT chunk
//   loss:    next-chunk byte CE (pad masked) + 0.5 * reconstruction of the
//            current chunk from the encoder output (the same decoder)
//
// `@shared.w1` / `@shared.w2` are read inside the core's `stlm.repeat`
// body, so both layers use one copy; the per-layer tensors are
// `layers.{l}.*`. `head.norm` is the decoder's final RMSNorm gain.
//
// Check it: stlm-opt examples/mlir/byte-pool.mlir

stlm.model @byte_pool {
  // Byte-pool embedder.
  stlm.param @embed.bytes : tensor<258x64xf32> = normal(2.000000e-02)
  stlm.param @embed.slots : tensor<12x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.attn_norm : tensor<64xf32> = ones
  stlm.param @embed.enc.0.wq : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.wk : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.wv : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.wo : tensor<64x64xf32> = normal(1.000000e-02)
  stlm.param @embed.enc.0.ffn_norm : tensor<64xf32> = ones
  stlm.param @embed.enc.0.w1 : tensor<256x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.w3 : tensor<256x64xf32> = normal(2.000000e-02)
  stlm.param @embed.enc.0.w2 : tensor<64x256xf32> = normal(1.000000e-02)
  stlm.param @embed.proj : tensor<128x64xf32> = normal(2.000000e-02)
  // Core: per-layer attention, one FFN shared by every layer.
  stlm.param @layers.0.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.0.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wk : tensor<64x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wv : tensor<64x128xf32> = normal(2.000000e-02)
  stlm.param @layers.0.wo : tensor<128x128xf32> = normal(1.000000e-02)
  stlm.param @layers.0.ffn_norm : tensor<128xf32> = ones
  stlm.param @layers.1.attn_norm : tensor<128xf32> = ones
  stlm.param @layers.1.wq : tensor<128x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wk : tensor<64x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wv : tensor<64x128xf32> = normal(2.000000e-02)
  stlm.param @layers.1.wo : tensor<128x128xf32> = normal(1.000000e-02)
  stlm.param @layers.1.ffn_norm : tensor<128xf32> = ones
  stlm.param @shared.w1 : tensor<512x128xf32> = normal(2.000000e-02)
  stlm.param @shared.w2 : tensor<128x512xf32> = normal(1.000000e-02)
  stlm.param @norm : tensor<128xf32> = ones
  // Byte-chunk head.
  stlm.param @head.proj : tensor<768x128xf32> = normal(2.000000e-02)
  stlm.param @head.slots : tensor<12x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.attn_norm : tensor<64xf32> = ones
  stlm.param @head.dec.0.wq : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.wk : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.wv : tensor<64x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.wo : tensor<64x64xf32> = normal(1.000000e-02)
  stlm.param @head.dec.0.ffn_norm : tensor<64xf32> = ones
  stlm.param @head.dec.0.w1 : tensor<256x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.w3 : tensor<256x64xf32> = normal(2.000000e-02)
  stlm.param @head.dec.0.w2 : tensor<64x256xf32> = normal(1.000000e-02)
  stlm.param @head.norm : tensor<64xf32> = ones
  stlm.param @head.out : tensor<258x64xf32> = normal(2.000000e-02)

  // Chunk encoder: chunks [B, C, L] -> pooled chunk vectors [B, C, D]. Its
  // block works on x: [B, C, L, d_b], attention over the L slots of a chunk.
  func.func @encode(%chunks: tensor<4x32x12xi32>) -> tensor<4x32x128xf32> {
    %bytes = stlm.param_ref @embed.bytes : tensor<258x64xf32>
    %slots = stlm.param_ref @embed.slots : tensor<12x64xf32>
    %e = stlm.embed %bytes[%chunks] : tensor<258x64xf32>, tensor<4x32x12xi32> -> tensor<4x32x12x64xf32>
    %x0 = stlm.add %e, %slots : tensor<4x32x12x64xf32>, tensor<12x64xf32>
    %x1 = stlm.repeat 0 to 1 (%x0) : tensor<4x32x12x64xf32> {
    ^bb0(%i: index, %x: tensor<4x32x12x64xf32>):
      %g1 = stlm.layer_param_ref "embed.enc.{}.attn_norm"[%i] : tensor<64xf32>
      %wq = stlm.layer_param_ref "embed.enc.{}.wq"[%i] : tensor<64x64xf32>
      %wk = stlm.layer_param_ref "embed.enc.{}.wk"[%i] : tensor<64x64xf32>
      %wv = stlm.layer_param_ref "embed.enc.{}.wv"[%i] : tensor<64x64xf32>
      %wo = stlm.layer_param_ref "embed.enc.{}.wo"[%i] : tensor<64x64xf32>
      %n1 = stlm.rmsnorm %x, %g1 : tensor<4x32x12x64xf32>, tensor<64xf32>
      %q = stlm.linear %n1, %wq : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %k = stlm.linear %n1, %wk : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %v = stlm.linear %n1, %wv : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      // No mask, no RoPE: the 12 slots of a chunk see each other only.
      %a = stlm.attention none %q, %k, %v {heads = 4, kv_heads = 4}
          : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32> -> tensor<4x32x12x64xf32>
      %o = stlm.linear %a, %wo : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %r1 = stlm.add %x, %o : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>
      %g2 = stlm.layer_param_ref "embed.enc.{}.ffn_norm"[%i] : tensor<64xf32>
      %w1 = stlm.layer_param_ref "embed.enc.{}.w1"[%i] : tensor<256x64xf32>
      %w3 = stlm.layer_param_ref "embed.enc.{}.w3"[%i] : tensor<256x64xf32>
      %w2 = stlm.layer_param_ref "embed.enc.{}.w2"[%i] : tensor<64x256xf32>
      %n2 = stlm.rmsnorm %r1, %g2 : tensor<4x32x12x64xf32>, tensor<64xf32>
      %h1 = stlm.linear %n2, %w1 : tensor<4x32x12x64xf32>, tensor<256x64xf32> -> tensor<4x32x12x256xf32>
      %h3 = stlm.linear %n2, %w3 : tensor<4x32x12x64xf32>, tensor<256x64xf32> -> tensor<4x32x12x256xf32>
      %h = stlm.swiglu %h1, %h3 : tensor<4x32x12x256xf32>
      %f = stlm.linear %h, %w2 : tensor<4x32x12x256xf32>, tensor<64x256xf32> -> tensor<4x32x12x64xf32>
      %r2 = stlm.add %r1, %f : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>
      stlm.yield %r2 : tensor<4x32x12x64xf32>
    }
    %pooled = stlm.pool mean %x1 : tensor<4x32x12x64xf32> -> tensor<4x32x64xf32>
    %proj = stlm.param_ref @embed.proj : tensor<128x64xf32>
    %y = stlm.linear %pooled, %proj : tensor<4x32x64xf32>, tensor<128x64xf32> -> tensor<4x32x128xf32>
    return %y : tensor<4x32x128xf32>
  }

  // Core over chunk positions: [B, C, D] -> [B, C, D].
  func.func @core(%x0: tensor<4x32x128xf32>) -> tensor<4x32x128xf32> {
    %x2 = stlm.repeat 0 to 2 (%x0) : tensor<4x32x128xf32> {
    ^bb0(%l: index, %x: tensor<4x32x128xf32>):
      %g1 = stlm.layer_param_ref "layers.{}.attn_norm"[%l] : tensor<128xf32>
      %wq = stlm.layer_param_ref "layers.{}.wq"[%l] : tensor<128x128xf32>
      %wk = stlm.layer_param_ref "layers.{}.wk"[%l] : tensor<64x128xf32>
      %wv = stlm.layer_param_ref "layers.{}.wv"[%l] : tensor<64x128xf32>
      %wo = stlm.layer_param_ref "layers.{}.wo"[%l] : tensor<128x128xf32>
      %n1 = stlm.rmsnorm %x, %g1 : tensor<4x32x128xf32>, tensor<128xf32>
      %q0 = stlm.linear %n1, %wq : tensor<4x32x128xf32>, tensor<128x128xf32> -> tensor<4x32x128xf32>
      %k0 = stlm.linear %n1, %wk : tensor<4x32x128xf32>, tensor<64x128xf32> -> tensor<4x32x64xf32>
      %v = stlm.linear %n1, %wv : tensor<4x32x128xf32>, tensor<64x128xf32> -> tensor<4x32x64xf32>
      %q = stlm.rope %q0 {head_dim = 32} : tensor<4x32x128xf32>
      %k = stlm.rope %k0 {head_dim = 32} : tensor<4x32x64xf32>
      // 4 query heads share 2 kv heads: heads 0,1 use kv 0; heads 2,3 kv 1.
      %a = stlm.attention causal %q, %k, %v {heads = 4, kv_heads = 2}
          : tensor<4x32x128xf32>, tensor<4x32x64xf32>, tensor<4x32x64xf32> -> tensor<4x32x128xf32>
      %o = stlm.linear %a, %wo : tensor<4x32x128xf32>, tensor<128x128xf32> -> tensor<4x32x128xf32>
      %x1 = stlm.add %x, %o : tensor<4x32x128xf32>, tensor<4x32x128xf32>
      // The FFN weights are shared: param_ref, not layer_param_ref.
      %g2 = stlm.layer_param_ref "layers.{}.ffn_norm"[%l] : tensor<128xf32>
      %w1 = stlm.param_ref @shared.w1 : tensor<512x128xf32>
      %w2 = stlm.param_ref @shared.w2 : tensor<128x512xf32>
      %n2 = stlm.rmsnorm %x1, %g2 : tensor<4x32x128xf32>, tensor<128xf32>
      %h0 = stlm.linear %n2, %w1 : tensor<4x32x128xf32>, tensor<512x128xf32> -> tensor<4x32x512xf32>
      %h = stlm.gelu %h0 : tensor<4x32x512xf32>
      %f = stlm.linear %h, %w2 : tensor<4x32x512xf32>, tensor<128x512xf32> -> tensor<4x32x128xf32>
      %x3 = stlm.add %x1, %f : tensor<4x32x128xf32>, tensor<4x32x128xf32>
      stlm.yield %x3 : tensor<4x32x128xf32>
    }
    %g = stlm.param_ref @norm : tensor<128xf32>
    %n = stlm.rmsnorm %x2, %g : tensor<4x32x128xf32>, tensor<128xf32>
    return %n : tensor<4x32x128xf32>
  }

  // Chunk decoder: [B, C, D] -> byte logits [B, C, L, 258].
  func.func @decode(%x: tensor<4x32x128xf32>) -> tensor<4x32x12x258xf32> {
    %proj = stlm.param_ref @head.proj : tensor<768x128xf32>
    %p = stlm.linear %x, %proj : tensor<4x32x128xf32>, tensor<768x128xf32> -> tensor<4x32x768xf32>
    %s = stlm.split_slots %p : tensor<4x32x768xf32> -> tensor<4x32x12x64xf32>
    %slots = stlm.param_ref @head.slots : tensor<12x64xf32>
    %y0 = stlm.add %s, %slots : tensor<4x32x12x64xf32>, tensor<12x64xf32>
    %y1 = stlm.repeat 0 to 1 (%y0) : tensor<4x32x12x64xf32> {
    ^bb0(%i: index, %y: tensor<4x32x12x64xf32>):
      %g1 = stlm.layer_param_ref "head.dec.{}.attn_norm"[%i] : tensor<64xf32>
      %wq = stlm.layer_param_ref "head.dec.{}.wq"[%i] : tensor<64x64xf32>
      %wk = stlm.layer_param_ref "head.dec.{}.wk"[%i] : tensor<64x64xf32>
      %wv = stlm.layer_param_ref "head.dec.{}.wv"[%i] : tensor<64x64xf32>
      %wo = stlm.layer_param_ref "head.dec.{}.wo"[%i] : tensor<64x64xf32>
      %n1 = stlm.rmsnorm %y, %g1 : tensor<4x32x12x64xf32>, tensor<64xf32>
      %q = stlm.linear %n1, %wq : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %k = stlm.linear %n1, %wk : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %v = stlm.linear %n1, %wv : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %a = stlm.attention none %q, %k, %v {heads = 4, kv_heads = 4}
          : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32> -> tensor<4x32x12x64xf32>
      %o = stlm.linear %a, %wo : tensor<4x32x12x64xf32>, tensor<64x64xf32> -> tensor<4x32x12x64xf32>
      %r1 = stlm.add %y, %o : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>
      %g2 = stlm.layer_param_ref "head.dec.{}.ffn_norm"[%i] : tensor<64xf32>
      %w1 = stlm.layer_param_ref "head.dec.{}.w1"[%i] : tensor<256x64xf32>
      %w3 = stlm.layer_param_ref "head.dec.{}.w3"[%i] : tensor<256x64xf32>
      %w2 = stlm.layer_param_ref "head.dec.{}.w2"[%i] : tensor<64x256xf32>
      %n2 = stlm.rmsnorm %r1, %g2 : tensor<4x32x12x64xf32>, tensor<64xf32>
      %h1 = stlm.linear %n2, %w1 : tensor<4x32x12x64xf32>, tensor<256x64xf32> -> tensor<4x32x12x256xf32>
      %h3 = stlm.linear %n2, %w3 : tensor<4x32x12x64xf32>, tensor<256x64xf32> -> tensor<4x32x12x256xf32>
      %h = stlm.swiglu %h1, %h3 : tensor<4x32x12x256xf32>
      %f = stlm.linear %h, %w2 : tensor<4x32x12x256xf32>, tensor<64x256xf32> -> tensor<4x32x12x64xf32>
      %r2 = stlm.add %r1, %f : tensor<4x32x12x64xf32>, tensor<4x32x12x64xf32>
      stlm.yield %r2 : tensor<4x32x12x64xf32>
    }
    %gn = stlm.param_ref @head.norm : tensor<64xf32>
    %n = stlm.rmsnorm %y1, %gn : tensor<4x32x12x64xf32>, tensor<64xf32>
    %out = stlm.param_ref @head.out : tensor<258x64xf32>
    %logits = stlm.logits %n, %out : tensor<4x32x12x64xf32>, tensor<258x64xf32> -> tensor<4x32x12x258xf32>
    return %logits : tensor<4x32x12x258xf32>
  }

  // bytes: [B, N] -> next-chunk byte logits [B, C, L, 258].
  func.func @logits(%bytes: tensor<4x256xi32>) -> tensor<4x32x12x258xf32> {
    %chunks, %count = stlm.chunk words %bytes : tensor<4x256xi32> -> tensor<4x32x12xi32>, tensor<4xi32>
    %x = call @encode(%chunks) : (tensor<4x32x12xi32>) -> tensor<4x32x128xf32>
    %h = call @core(%x) : (tensor<4x32x128xf32>) -> tensor<4x32x128xf32>
    %logits = call @decode(%h) : (tensor<4x32x128xf32>) -> tensor<4x32x12x258xf32>
    return %logits : tensor<4x32x12x258xf32>
  }

  // loss = chunk_bytes(pad masked) + 0.5 * reconstruction.
  func.func @loss(%bytes: tensor<4x256xi32>) -> tensor<f32> {
    %chunks, %count = stlm.chunk words %bytes : tensor<4x256xi32> -> tensor<4x32x12xi32>, tensor<4xi32>
    %x = call @encode(%chunks) : (tensor<4x32x12xi32>) -> tensor<4x32x128xf32>
    %h = call @core(%x) : (tensor<4x32x128xf32>) -> tensor<4x32x128xf32>
    %next = call @decode(%h) : (tensor<4x32x128xf32>) -> tensor<4x32x12x258xf32>
    %same = call @decode(%x) : (tensor<4x32x128xf32>) -> tensor<4x32x12x258xf32>
    // Only real chunks are targets: %count chunks were filled in each row.
    %l0 = stlm.chunk_bytes_loss %next, %chunks count(%count) {mask_pad = true} : tensor<4x32x12x258xf32>, tensor<4x32x12xi32>, tensor<4xi32>
    %l1 = stlm.reconstruction_loss %same, %chunks count(%count) {mask_pad = true} : tensor<4x32x12x258xf32>, tensor<4x32x12xi32>, tensor<4xi32>
    %loss = stlm.weighted_sum %l0, %l1 {weights = [1.0, 0.5]} : tensor<f32>, tensor<f32>
    return %loss : tensor<f32>
  }
}
