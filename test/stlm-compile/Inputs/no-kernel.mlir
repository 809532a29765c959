// A valid model the native path cannot compile yet: its logits multiply two
// tensors elementwise, and only products with a splat constant have a
// kernel (stlm-compile exits with status 3, naming the op). Its @loss
// computes the logits without the product, which has no gradient rule.
stlm.model @no_kernel {
  stlm.param @embed.tok : tensor<256x8xf32> = normal(2.000000e-02)
  func.func @logits(%tokens: tensor<2x4xi32>) -> tensor<2x4x256xf32> {
    %table = stlm.param_ref @embed.tok : tensor<256x8xf32>
    %x = stlm.embed %table[%tokens] : tensor<256x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %sq = arith.mulf %x, %x : tensor<2x4x8xf32>
    %logits = stlm.logits %sq, %table : tensor<2x4x8xf32>, tensor<256x8xf32> -> tensor<2x4x256xf32>
    return %logits : tensor<2x4x256xf32>
  }
  func.func @loss(%tokens: tensor<2x4xi32>, %targets: tensor<2x4xi32>) -> tensor<f32> {
    %table = stlm.param_ref @embed.tok : tensor<256x8xf32>
    %x = stlm.embed %table[%tokens] : tensor<256x8xf32>, tensor<2x4xi32> -> tensor<2x4x8xf32>
    %logits = stlm.logits %x, %table : tensor<2x4x8xf32>, tensor<256x8xf32> -> tensor<2x4x256xf32>
    %loss = stlm.next_token_loss %logits, %targets : tensor<2x4x256xf32>, tensor<2x4xi32>
    return %loss : tensor<f32>
  }
}
