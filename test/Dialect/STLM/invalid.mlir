// RUN: stlm-opt %s -split-input-file -verify-diagnostics

// Tests that the model body rejects ops other than params and functions.
stlm.model @m {
  // expected-error @+1 {{is not allowed in the body of 'stlm.model', which holds only 'stlm.param', 'stlm.state' and functions}}
  %c = arith.constant dense<0.0> : tensor<f32>
}

// -----

// Tests that stlm.param must be directly inside a stlm.model.
func.func @f() {
  // expected-error @+1 {{expects parent op 'stlm.model'}}
  stlm.param @w : tensor<4x4xf32> = zeros
  return
}

// -----

// Tests that a 'normal' param needs a standard deviation.
stlm.model @m {
  // expected-error @+1 {{'normal' initialisation needs a standard deviation}}
  stlm.param @w : tensor<4x4xf32> = normal
}

// -----

// Tests that a 'normal' param rejects a non-positive standard deviation.
stlm.model @m {
  // expected-error @+1 {{standard deviation must be finite and > 0, got 0.000000e+00}}
  stlm.param @w : tensor<4x4xf32> = normal(0.0)
}

// -----

// Tests that a 'normal' param rejects a NaN standard deviation.
stlm.model @m {
  // expected-error @+1 {{standard deviation must be finite and > 0, got nan}}
  stlm.param @w : tensor<4x4xf32> = normal(0x7FF8000000000000)
}

// -----

// Tests that 'zeros' initialisation takes no standard deviation.
stlm.model @m {
  // expected-error @+1 {{'zeros' initialisation takes no standard deviation}}
  stlm.param @w : tensor<4x4xf32> = zeros(1.0)
}

// -----

// Tests that a param with no elements is rejected.
stlm.model @m {
  // expected-error @+1 {{parameter has no elements}}
  stlm.param @w : tensor<0x4xf32> = ones
}

// -----

// Tests that a param type must be a statically shaped f32 tensor (ODS).
stlm.model @m {
  // expected-error @+1 {{attribute 'type' failed to satisfy constraint}}
  stlm.param @w : tensor<4x4xf16> = ones
}

// -----

// Tests that stlm.param_ref rejects a symbol the model does not declare.
stlm.model @m {
  func.func @f() {
    // expected-error @+1 {{'@missing' is not a parameter of model '@m'}}
    %w = stlm.param_ref @missing : tensor<4x4xf32>
    return
  }
}

// -----

// Tests that stlm.param_ref rejects a symbol that is a function.
stlm.model @m {
  func.func @g() {
    return
  }
  func.func @f() {
    // expected-error @+1 {{'@g' is a 'func.func', not a 'stlm.param'}}
    %w = stlm.param_ref @g : tensor<4x4xf32>
    return
  }
}

// -----

// Tests that stlm.param_ref must have the parameter's declared type.
stlm.model @m {
  stlm.param @w : tensor<4x4xf32> = ones
  func.func @f() {
    // expected-error @+1 {{type 'tensor<4x8xf32>' does not match parameter '@w' declared as 'tensor<4x4xf32>'}}
    %w = stlm.param_ref @w : tensor<4x8xf32>
    return
  }
}

// -----

// Tests that stlm.param_ref must be nested in a stlm.model.
func.func @f() {
  // expected-error @+1 {{must be nested in a 'stlm.model'}}
  %w = stlm.param_ref @w : tensor<4x4xf32>
  return
}

// -----

// Tests that a layer pattern without '{}' is rejected.
stlm.model @m {
  stlm.param @layers.0.w : tensor<4xf32> = ones
  func.func @f(%x: tensor<2x4xf32>) {
    %y = stlm.repeat 0 to 1 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      // expected-error @+1 {{pattern 'layers.0.w' must contain exactly one '{}' (the layer index)}}
      %w = stlm.layer_param_ref "layers.0.w"[%l] : tensor<4xf32>
      stlm.yield %h : tensor<2x4xf32>
    }
    return
  }
}

// -----

// Tests that a layer pattern with two '{}' is rejected.
stlm.model @m {
  stlm.param @layers.0.w.0 : tensor<4xf32> = ones
  func.func @f(%x: tensor<2x4xf32>) {
    %y = stlm.repeat 0 to 1 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      // expected-error @+1 {{pattern 'layers.{}.w.{}' must contain exactly one '{}'}}
      %w = stlm.layer_param_ref "layers.{}.w.{}"[%l] : tensor<4xf32>
      stlm.yield %h : tensor<2x4xf32>
    }
    return
  }
}

// -----

// Tests that the layer index must be a stlm.repeat induction variable.
stlm.model @m {
  stlm.param @layers.0.w : tensor<4xf32> = ones
  func.func @f(%i: index) {
    // expected-error @+1 {{layer index must be the induction variable of an enclosing 'stlm.repeat'}}
    %w = stlm.layer_param_ref "layers.{}.w"[%i] : tensor<4xf32>
    return
  }
}

// -----

// Tests that stlm.layer_param_ref must be nested in a stlm.model.
func.func @f(%x: tensor<2x4xf32>) {
  %y = stlm.repeat 0 to 1 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    // expected-error @+1 {{must be nested in a 'stlm.model'}}
    %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4xf32>
    stlm.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that every layer of the repeat needs an instance of the pattern.
stlm.model @m {
  stlm.param @layers.1.w : tensor<4xf32> = ones
  func.func @f(%x: tensor<2x4xf32>) {
    %y = stlm.repeat 1 to 3 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      // expected-error @+1 {{layer 2 of 'layers.{}.w': '@layers.2.w' is not a parameter of model '@m'}}
      %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4xf32>
      stlm.yield %h : tensor<2x4xf32>
    }
    return
  }
}

// -----

// Tests that every instance of the pattern must have the result type.
stlm.model @m {
  stlm.param @layers.0.w : tensor<4xf32> = ones
  stlm.param @layers.1.w : tensor<8xf32> = ones
  func.func @f(%x: tensor<2x4xf32>) {
    %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      // expected-error @+1 {{layer 1 of 'layers.{}.w': type 'tensor<4xf32>' does not match parameter '@layers.1.w' declared as 'tensor<8xf32>'}}
      %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4xf32>
      stlm.yield %h : tensor<2x4xf32>
    }
    return
  }
}

// -----

// Tests that a repeat range must start at >= 0.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{layer range [-1, 2) must be non-empty and start at >= 0}}
  %y = stlm.repeat -1 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    stlm.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that a repeat range must be non-empty.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{layer range [3, 3) must be non-empty}}
  %y = stlm.repeat 3 to 3 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    stlm.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that the repeat body must take exactly two arguments.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{body must take two arguments: the layer index (index) and the hidden state}}
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%h: tensor<2x4xf32>):
    stlm.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that the first repeat body argument must be an index.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{body must take two arguments: the layer index (index) and the hidden state ('tensor<2x4xf32>')}}
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: i64, %h: tensor<2x4xf32>):
    stlm.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that the second repeat body argument must have the hidden-state type.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{body must take two arguments: the layer index (index) and the hidden state}}
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x8xf32>):
    %z = stlm.add %x, %x : tensor<2x4xf32>, tensor<2x4xf32>
    stlm.yield %z : tensor<2x4xf32>
  }
  return
}

// -----

// Tests that the repeat body must end in stlm.yield.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{body must end in 'stlm.yield'}}
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    %z = stlm.add %h, %h : tensor<2x4xf32>, tensor<2x4xf32>
  }
  return
}

// -----

// Tests that stlm.yield must yield the hidden-state type.
func.func @f(%x: tensor<2x4xf32>, %z: tensor<2x8xf32>) {
  %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
  ^bb0(%l: index, %h: tensor<2x4xf32>):
    // expected-error @+1 {{yields 'tensor<2x8xf32>' but the hidden state is 'tensor<2x4xf32>'}}
    stlm.yield %z : tensor<2x8xf32>
  }
  return
}

// -----

// Tests that stlm.yield must be inside a stlm.repeat.
func.func @f(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{expects parent op 'stlm.repeat'}}
  stlm.yield %x : tensor<2x4xf32>
}

// -----

// Tests that the embedding table must have rank 2.
func.func @f(%t: tensor<16xf32>, %ids: tensor<2x4xi32>) {
  // expected-error @+1 {{table must have rank 2 ([V, D]), got [16]}}
  %x = stlm.embed %t[%ids] : tensor<16xf32>, tensor<2x4xi32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that the embedding result is the ids shape plus [D].
func.func @f(%t: tensor<16x8xf32>, %ids: tensor<2x4xi32>) {
  // expected-error @+1 {{result shape [2, 4, 16] must be [2, 4, 8] (ids shape + [D])}}
  %x = stlm.embed %t[%ids] : tensor<16x8xf32>, tensor<2x4xi32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that embedding ids must be i32 (ODS).
func.func @f(%t: tensor<16x8xf32>, %ids: tensor<2x4xi64>) {
  // expected-error @+1 {{operand #1 must be statically shaped tensor of 32-bit signless integer values}}
  %x = stlm.embed %t[%ids] : tensor<16x8xf32>, tensor<2x4xi64> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that chunked bytes must have rank 2.
func.func @f(%b: tensor<16xi32>) {
  // expected-error @+1 {{bytes must have rank 2 ([B, N]), got [16]}}
  %c, %n = stlm.chunk words %b : tensor<16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
  return
}

// -----

// Tests that the chunks result must be [B, C, L] with the bytes' batch.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{chunks must be [B, C, L] with B = 2, got [3, 8, 6]}}
  %c, %n = stlm.chunk words %b : tensor<2x16xi32> -> tensor<3x8x6xi32>, tensor<2xi32>
  return
}

// -----

// Tests that the count result must be [B].
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{count must be [B] with B = 2, got [2, 1]}}
  %c, %n = stlm.chunk words %b : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2x1xi32>
  return
}

// -----

// Tests that chunks must hold at least one byte.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{chunks must hold at least one byte (L >= 1)}}
  %c, %n = stlm.chunk words %b : tensor<2x16xi32> -> tensor<2x8x0xi32>, tensor<2xi32>
  return
}

// -----

// Tests that 'fixed' chunking needs a stride.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{'fixed' chunking needs a 'stride'}}
  %c, %n = stlm.chunk fixed %b : tensor<2x16xi32> -> tensor<2x4x4xi32>, tensor<2xi32>
  return
}

// -----

// Tests that a stride is rejected for non-'fixed' chunking.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{'stride' is only for 'fixed' chunking}}
  %c, %n = stlm.chunk words %b {stride = 4} : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
  return
}

// -----

// Tests that a 'fixed' stride must be at least 1.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{stride 0 must be in [1, L = 4]}}
  %c, %n = stlm.chunk fixed %b {stride = 0} : tensor<2x16xi32> -> tensor<2x4x4xi32>, tensor<2xi32>
  return
}

// -----

// Tests that a 'fixed' stride must not exceed L.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{stride 8 must be in [1, L = 4]}}
  %c, %n = stlm.chunk fixed %b {stride = 8} : tensor<2x16xi32> -> tensor<2x2x4xi32>, tensor<2xi32>
  return
}

// -----

// Tests that 'fixed' chunking fixes the number of chunks to ceil(N / P).
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{'fixed' chunking of 16 bytes with stride 4 gives 4 chunks, but C = 5}}
  %c, %n = stlm.chunk fixed %b {stride = 4} : tensor<2x16xi32> -> tensor<2x5x4xi32>, tensor<2xi32>
  return
}

// -----


// Tests that the chunk capacity must be at least 1.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{chunk capacity C = 0 must be in [1, N = 16]}}
  %c, %n = stlm.chunk words %b : tensor<2x16xi32> -> tensor<2x0x6xi32>, tensor<2xi32>
  return
}

// -----

// Tests that the chunk capacity must not exceed the number of bytes.
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{chunk capacity C = 17 must be in [1, N = 16]}}
  %c, %n = stlm.chunk words %b : tensor<2x16xi32> -> tensor<2x17x6xi32>, tensor<2xi32>
  return
}

// -----

// Tests that pooling needs an input of rank >= 3.
func.func @f(%x: tensor<6x4xf32>) {
  // expected-error @+1 {{input must be [..., C, L, D], got [6, 4]}}
  %p = stlm.pool mean %x : tensor<6x4xf32> -> tensor<4xf32>
  return
}

// -----

// Tests that pooling removes exactly the slot dimension.
func.func @f(%x: tensor<2x8x6x4xf32>) {
  // expected-error @+1 {{result shape [2, 6, 4] must be [2, 8, 4]}}
  %p = stlm.pool max %x : tensor<2x8x6x4xf32> -> tensor<2x6x4xf32>
  return
}

// -----

// Tests that 'masked_mean' pooling needs the chunk ids.
func.func @f(%x: tensor<2x8x6x4xf32>) {
  // expected-error @+1 {{'masked_mean' needs the chunk ids}}
  %p = stlm.pool masked_mean %x : tensor<2x8x6x4xf32> -> tensor<2x8x4xf32>
  return
}

// -----

// Tests that chunk ids are rejected for pooling kinds other than 'masked_mean'.
func.func @f(%x: tensor<2x8x6x4xf32>, %ids: tensor<2x8x6xi32>) {
  // expected-error @+1 {{chunk ids are only for 'masked_mean'}}
  %p = stlm.pool mean %x ids(%ids) : tensor<2x8x6x4xf32>, tensor<2x8x6xi32> -> tensor<2x8x4xf32>
  return
}

// -----

// Tests that 'masked_mean' ids must be the input shape without D.
func.func @f(%x: tensor<2x8x6x4xf32>, %ids: tensor<2x8x4xi32>) {
  // expected-error @+1 {{ids shape [2, 8, 4] must be [2, 8, 6]}}
  %p = stlm.pool masked_mean %x ids(%ids) : tensor<2x8x6x4xf32>, tensor<2x8x4xi32> -> tensor<2x8x4xf32>
  return
}

// -----

// Tests that rmsnorm needs an input of rank >= 1.
func.func @f(%x: tensor<f32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{input must have rank >= 1}}
  %y = stlm.rmsnorm %x, %g : tensor<f32>, tensor<8xf32>
  return
}

// -----

// Tests that the rmsnorm gain must be [D].
func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<4xf32>) {
  // expected-error @+1 {{weight must be [8], got [4]}}
  %y = stlm.rmsnorm %x, %g : tensor<2x4x8xf32>, tensor<4xf32>
  return
}

// -----

// Tests that rmsnorm eps must be > 0.
func.func @f(%x: tensor<2x4x8xf32>, %g: tensor<8xf32>) {
  // expected-error @+1 {{eps must be finite and > 0, got 0.000000e+00}}
  %y = stlm.rmsnorm %x, %g {eps = 0.0} : tensor<2x4x8xf32>, tensor<8xf32>
  return
}

// -----

// Tests that linear needs an input of rank >= 1.
func.func @f(%x: tensor<f32>, %w: tensor<8x8xf32>) {
  // expected-error @+1 {{input must have rank >= 1}}
  %y = stlm.linear %x, %w : tensor<f32>, tensor<8x8xf32> -> tensor<8xf32>
  return
}

// -----

// Tests that the linear weight must have rank 2.
func.func @f(%x: tensor<2x4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{weight must have rank 2 ([out, in]), got [8]}}
  %y = stlm.linear %x, %w : tensor<2x4x8xf32>, tensor<8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that a quantized linear names its scheme.
func.func @f(%x: tensor<2x64xf32>, %w: tensor<8x64xi8>, %s: tensor<8x2xf32>) {
  // expected-error @+1 {{scheme must be "int8" or "int4", got "int2"}}
  %y = stlm.qlinear %x, %w, %s {scheme = "int2", group = 32} : tensor<2x64xf32>, tensor<8x64xi8>, tensor<8x2xf32> -> tensor<2x8xf32>
  return
}

// -----

// Tests that a quantized linear's groups divide its inputs.
func.func @f(%x: tensor<2x48xf32>, %w: tensor<8x48xi8>, %s: tensor<8x1xf32>) {
  // expected-error @+1 {{group 32 must be between 1 and 131072 and divide the 48 inputs}}
  %y = stlm.qlinear %x, %w, %s {scheme = "int8", group = 32} : tensor<2x48xf32>, tensor<8x48xi8>, tensor<8x1xf32> -> tensor<2x8xf32>
  return
}

// -----

// Tests that an int4 weight holds two values a byte.
func.func @f(%x: tensor<2x64xf32>, %w: tensor<8x64xui8>, %s: tensor<8x2xf32>) {
  // expected-error @+1 {{int4 weight must be [Out, 32], got [8, 64]}}
  %y = stlm.qlinear %x, %w, %s {scheme = "int4", group = 32} : tensor<2x64xf32>, tensor<8x64xui8>, tensor<8x2xf32> -> tensor<2x8xf32>
  return
}

// -----

// Tests that int4 pairs are unsigned bytes and int8 values signed ones.
func.func @f(%x: tensor<2x64xf32>, %w: tensor<8x32xi8>, %s: tensor<8x2xf32>) {
  // expected-error @+1 {{int4 weight must be ui8, got 'i8'}}
  %y = stlm.qlinear %x, %w, %s {scheme = "int4", group = 32} : tensor<2x64xf32>, tensor<8x32xi8>, tensor<8x2xf32> -> tensor<2x8xf32>
  return
}

// -----

// Tests that a quantized linear has one scale per output and group.
func.func @f(%x: tensor<2x64xf32>, %w: tensor<8x64xi8>, %s: tensor<8x4xf32>) {
  // expected-error @+1 {{scale must be [8, 2], got [8, 4]}}
  %y = stlm.qlinear %x, %w, %s {scheme = "int8", group = 32} : tensor<2x64xf32>, tensor<8x64xi8>, tensor<8x4xf32> -> tensor<2x8xf32>
  return
}

// -----

// Tests that a parameter is f32 or the bytes of a quantized weight.
stlm.model @m {
  // expected-error @+1 {{type attribute of statically shaped tensor of 32-bit float or 8-bit signless integer or 8-bit unsigned integer values}}
  stlm.param @w : tensor<8x8xi32> = zeros
}

// -----

// Tests that the linear weight's input width must match the input.
func.func @f(%x: tensor<2x4x8xf32>, %w: tensor<16x4xf32>) {
  // expected-error @+1 {{weight input width 4 does not match the input's last dimension 8}}
  %y = stlm.linear %x, %w : tensor<2x4x8xf32>, tensor<16x4xf32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that the linear result is [..., Out].
func.func @f(%x: tensor<2x4x8xf32>, %w: tensor<16x8xf32>) {
  // expected-error @+1 {{result shape [2, 4, 8] must be [2, 4, 16]}}
  %y = stlm.linear %x, %w : tensor<2x4x8xf32>, tensor<16x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that linear rejects an f64 input (ODS).
func.func @f(%x: tensor<2x4x8xf64>, %w: tensor<16x8xf32>) {
  // expected-error @+1 {{operand #0 must be statically shaped tensor of 32-bit float values}}
  %y = stlm.linear %x, %w : tensor<2x4x8xf64>, tensor<16x8xf32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that linear rejects a dynamically shaped weight (ODS).
func.func @f(%x: tensor<2x4x8xf32>, %w: tensor<?x8xf32>) {
  // expected-error @+1 {{operand #1 must be statically shaped tensor of 32-bit float values}}
  %y = stlm.linear %x, %w : tensor<2x4x8xf32>, tensor<?x8xf32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that lowrank needs an input of rank >= 1.
func.func @f(%x: tensor<f32>, %a: tensor<2x8xf32>, %b: tensor<8x2xf32>) {
  // expected-error @+1 {{input must have rank >= 1}}
  %y = stlm.lowrank %x, %a, %b : tensor<f32>, tensor<2x8xf32>, tensor<8x2xf32> -> tensor<8xf32>
  return
}

// -----

// Tests that the LoRA 'a' factor must be [R, In].
func.func @f(%x: tensor<2x4x8xf32>, %a: tensor<2x4xf32>, %b: tensor<8x2xf32>) {
  // expected-error @+1 {{a must be [R, 8], got [2, 4]}}
  %y = stlm.lowrank %x, %a, %b : tensor<2x4x8xf32>, tensor<2x4xf32>, tensor<8x2xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that the LoRA 'b' factor must be [Out, R].
func.func @f(%x: tensor<2x4x8xf32>, %a: tensor<2x8xf32>, %b: tensor<8x3xf32>) {
  // expected-error @+1 {{b must be [Out, R] with R = 2, got [8, 3]}}
  %y = stlm.lowrank %x, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<8x3xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that the lowrank result is [..., Out].
func.func @f(%x: tensor<2x4x8xf32>, %a: tensor<2x8xf32>, %b: tensor<16x2xf32>) {
  // expected-error @+1 {{result shape [2, 4, 8] must be [2, 4, 16]}}
  %y = stlm.lowrank %x, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<16x2xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that a merged weight must be [Out, In].
func.func @f(%w: tensor<2x6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x2xf32>) {
  // expected-error @+1 {{weight must be [Out, In], got [2, 6, 8]}}
  %m = stlm.lowrank_merge %w, %a, %b : tensor<2x6x8xf32>, tensor<2x8xf32>, tensor<6x2xf32>
  return
}

// -----

// Tests that the merged delta's 'a' must be [R, In].
func.func @f(%w: tensor<6x8xf32>, %a: tensor<2x6xf32>, %b: tensor<6x2xf32>) {
  // expected-error @+1 {{a must be [R, 8], got [2, 6]}}
  %m = stlm.lowrank_merge %w, %a, %b : tensor<6x8xf32>, tensor<2x6xf32>, tensor<6x2xf32>
  return
}

// -----

// Tests that the merged delta's 'b' must be [Out, R].
func.func @f(%w: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<8x2xf32>) {
  // expected-error @+1 {{b must be [6, 2], got [8, 2]}}
  %m = stlm.lowrank_merge %w, %a, %b : tensor<6x8xf32>, tensor<2x8xf32>, tensor<8x2xf32>
  return
}

// -----

// Tests that the merge's gradient checks the same shapes.
func.func @f(%g: tensor<6x8xf32>, %a: tensor<2x8xf32>, %b: tensor<6x3xf32>) {
  // expected-error @+1 {{b must be [6, 2], got [6, 3]}}
  %da, %db = stlm.lowrank_merge_grad %g, %a, %b : tensor<6x8xf32>, tensor<2x8xf32>, tensor<6x3xf32>
  return
}

// -----

// Tests that rope needs an input of rank >= 2.
func.func @f(%x: tensor<8xf32>) {
  // expected-error @+1 {{input must be [..., T, H*hd], got [8]}}
  %r = stlm.rope %x {head_dim = 4} : tensor<8xf32>
  return
}

// -----

// Tests that the rope head_dim must be even.
func.func @f(%x: tensor<2x4x9xf32>) {
  // expected-error @+1 {{head_dim 3 must be even and >= 2 (RoPE rotates pairs)}}
  %r = stlm.rope %x {head_dim = 3} : tensor<2x4x9xf32>
  return
}

// -----

// Tests that a negative rope head_dim is reported as negative.
func.func @f(%x: tensor<2x4x8xf32>) {
  // expected-error @+1 {{head_dim -2 must be even and >= 2}}
  %r = stlm.rope %x {head_dim = -2} : tensor<2x4x8xf32>
  return
}

// -----

// Tests that the rope width must be a multiple of head_dim.
func.func @f(%x: tensor<2x4x8xf32>) {
  // expected-error @+1 {{width 8 is not a multiple of head_dim 6}}
  %r = stlm.rope %x {head_dim = 6} : tensor<2x4x8xf32>
  return
}

// -----

// Tests that the rope theta must be > 1.
func.func @f(%x: tensor<2x4x8xf32>) {
  // expected-error @+1 {{theta must be finite and > 1, got 1.000000e+00}}
  %r = stlm.rope %x {head_dim = 4, theta = 1.0} : tensor<2x4x8xf32>
  return
}

// -----

// Tests that the rope offset must be a 0-d i32 tensor (ODS; the custom form
// infers the offset type, so this needs the generic form).
func.func @f(%x: tensor<2x4x8xf32>, %pos: tensor<1xi32>) {
  // expected-error @+1 {{operand #1 must be 0D tensor of 32-bit signless integer values}}
  %r = "stlm.rope"(%x, %pos) <{head_dim = 4 : i64}> : (tensor<2x4x8xf32>, tensor<1xi32>) -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that attention needs q of rank >= 2.
func.func @f(%q: tensor<8xf32>) {
  // expected-error @+1 {{q must be [..., T, H*hd], got [8]}}
  %o = stlm.attention none %q, %q, %q {heads = 2, kv_heads = 2} : tensor<8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<8xf32>
  return
}

// -----

// Tests that attention needs at least one kv head.
func.func @f(%q: tensor<2x4x8xf32>) {
  // expected-error @+1 {{heads (2) and kv_heads (0) must be >= 1}}
  %o = stlm.attention none %q, %q, %q {heads = 2, kv_heads = 0} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that kv_heads must divide heads.
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<2x4x6xf32>) {
  // expected-error @+1 {{kv_heads 3 must divide heads 4}}
  %o = stlm.attention none %q, %k, %k {heads = 4, kv_heads = 3} : tensor<2x4x8xf32>, tensor<2x4x6xf32>, tensor<2x4x6xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that heads must divide the q width.
func.func @f(%q: tensor<2x4x8xf32>) {
  // expected-error @+1 {{heads 3 must divide the width 8}}
  %o = stlm.attention none %q, %q, %q {heads = 3, kv_heads = 3} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that k must have the leading dimensions of q.
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<3x4x8xf32>) {
  // expected-error @+1 {{k shape [3, 4, 8] must have the leading dimensions of q [2, 4, 8]}}
  %o = stlm.attention none %q, %k, %k {heads = 2, kv_heads = 2} : tensor<2x4x8xf32>, tensor<3x4x8xf32>, tensor<3x4x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that the k width must be kv_heads * head_dim.
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<2x4x8xf32>) {
  // expected-error @+1 {{k width 8 must be kv_heads * head_dim = 4}}
  %o = stlm.attention none %q, %k, %k {heads = 2, kv_heads = 1} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that v must have the shape of k.
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<2x4x8xf32>, %v: tensor<2x6x8xf32>) {
  // expected-error @+1 {{v shape [2, 6, 8] must equal k shape [2, 4, 8]}}
  %o = stlm.attention none %q, %k, %v {heads = 2, kv_heads = 2} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x6x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that causal attention needs at least as many keys as queries.
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<2x3x8xf32>) {
  // expected-error @+1 {{causal attention needs at least as many keys (3) as queries (4)}}
  %o = stlm.attention causal %q, %k, %k {heads = 2, kv_heads = 2} : tensor<2x4x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that attention with RoPE folded in takes no offset (its positions
// start at 0).
func.func @f(%q: tensor<1x4x8xf32>, %p: tensor<i32>) {
  // expected-error @+1 {{rotates q and k at positions from 0 (rope_theta): it takes no offset}}
  %o = stlm.attention causal %q, %q, %q offset(%p) {heads = 2, kv_heads = 2, rope_theta = 1.0e4 : f64} : tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32> -> tensor<1x4x8xf32>
  return
}

// -----

// Tests that RoPE folded into attention needs heads of an even width.
func.func @f(%q: tensor<2x4x6xf32>) {
  // expected-error @+1 {{rope_theta rotates pairs, but the head width 3 is odd}}
  %o = stlm.attention causal %q, %q, %q {heads = 2, kv_heads = 2, rope_theta = 1.0e4 : f64} : tensor<2x4x6xf32>, tensor<2x4x6xf32>, tensor<2x4x6xf32> -> tensor<2x4x6xf32>
  return
}

// -----

// Tests that the gradient's rope_theta is checked as stlm.rope's theta.
func.func @f(%q: tensor<2x4x8xf32>) {
  // expected-error @+1 {{rope_theta must be finite and > 1 (as stlm.rope's theta), got 5.000000e-01}}
  %dq, %dk, %dv = stlm.attention_grad causal %q, %q, %q, %q {heads = 2, kv_heads = 2, rope_theta = 0.5 : f64} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>
  return
}

// -----

// Tests that the attention result must have q's type.
func.func @f(%q: tensor<2x4x8xf32>) {
  // expected-error @+1 {{result type 'tensor<2x4x4xf32>' must equal q's type 'tensor<2x4x8xf32>'}}
  %o = stlm.attention none %q, %q, %q {heads = 2, kv_heads = 2} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x4xf32>
  return
}

// -----

// Tests that the add rhs shape must be a suffix of the lhs shape.
func.func @f(%x: tensor<2x8x6x4xf32>, %s: tensor<8x4xf32>) {
  // expected-error @+1 {{rhs shape [8, 4] must be a suffix of lhs shape [2, 8, 6, 4]}}
  %y = stlm.add %x, %s : tensor<2x8x6x4xf32>, tensor<8x4xf32>
  return
}

// -----

// Tests that the add rhs cannot have a higher rank than the lhs.
func.func @f(%x: tensor<6x4xf32>, %s: tensor<2x6x4xf32>) {
  // expected-error @+1 {{rhs shape [2, 6, 4] must be a suffix of lhs shape [6, 4]}}
  %y = stlm.add %x, %s : tensor<6x4xf32>, tensor<2x6x4xf32>
  return
}

// -----

// Tests that split_slots rejects a scalar input.
func.func @f(%p: tensor<f32>) {
  // expected-error @+1 {{input must have rank >= 1}}
  %s = stlm.split_slots %p : tensor<f32> -> tensor<1x1xf32>
  return
}

// -----

// Tests that split_slots needs L * E to equal the input width.
func.func @f(%p: tensor<2x8x24xf32>) {
  // expected-error @+1 {{slot shape [2, 8, 5, 4] must be [..., L, E] with L * E = 24 and the flat shape's leading dimensions}}
  %s = stlm.split_slots %p : tensor<2x8x24xf32> -> tensor<2x8x5x4xf32>
  return
}

// -----

// Tests that split_slots keeps the input's leading dimensions.
func.func @f(%p: tensor<2x8x24xf32>) {
  // expected-error @+1 {{slot shape [2, 6, 4] must be [..., L, E] with L * E = 24}}
  %s = stlm.split_slots %p : tensor<2x8x24xf32> -> tensor<2x6x4xf32>
  return
}

// -----

// Tests that the logits table's width must match the input (named 'table').
func.func @f(%x: tensor<2x4x8xf32>, %e: tensor<16x4xf32>) {
  // expected-error @+1 {{table input width 4 does not match the input's last dimension 8}}
  %l = stlm.logits %x, %e : tensor<2x4x8xf32>, tensor<16x4xf32> -> tensor<2x4x16xf32>
  return
}

// -----

// Tests that the token mask must have the ids' shape.
func.func @f(%ids: tensor<2x4xi32>, %seed: tensor<i32>) {
  // expected-error @+1 {{mask shape must match ids shape}}
  %m, %k = stlm.mask_tokens %ids, %seed {prob = 0.15, mask_id = 0} : tensor<2x4xi32> -> tensor<2x5xi1>
  return
}

// -----

// Tests that the masking probability must be < 1.
func.func @f(%ids: tensor<2x4xi32>, %seed: tensor<i32>) {
  // expected-error @+1 {{prob must be in (0, 1), got 1.000000e+00}}
  %m, %k = stlm.mask_tokens %ids, %seed {prob = 1.0, mask_id = 0} : tensor<2x4xi32> -> tensor<2x4xi1>
  return
}

// -----

// Tests that the mask id must be >= 0.
func.func @f(%ids: tensor<2x4xi32>, %seed: tensor<i32>) {
  // expected-error @+1 {{mask_id must be >= 0, got -1}}
  %m, %k = stlm.mask_tokens %ids, %seed {prob = 0.15, mask_id = -1} : tensor<2x4xi32> -> tensor<2x4xi1>
  return
}

// -----

// Tests that next-token logits must have rank 3.
func.func @f(%l: tensor<8x16xf32>, %y: tensor<8xi32>) {
  // expected-error @+1 {{logits must have rank 3, got [8, 16]}}
  %a = stlm.next_token_loss %l, %y : tensor<8x16xf32>, tensor<8xi32>
  return
}

// -----

// Tests that next-token targets must be the logits shape without V.
func.func @f(%l: tensor<2x4x16xf32>, %y: tensor<2x5xi32>) {
  // expected-error @+1 {{targets shape [2, 5] must be the logits shape without the vocabulary dimension, [2, 4]}}
  %a = stlm.next_token_loss %l, %y : tensor<2x4x16xf32>, tensor<2x5xi32>
  return
}

// -----

// Tests that next-chunk byte logits must have rank 4.
func.func @f(%l: tensor<2x8x258xf32>, %c: tensor<2x8xi32>) {
  // expected-error @+1 {{logits must have rank 4, got [2, 8, 258]}}
  %a = stlm.chunk_bytes_loss %l, %c : tensor<2x8x258xf32>, tensor<2x8xi32>
  return
}

// -----

// Tests that next-chunk targets must be the logits shape without V.
func.func @f(%l: tensor<2x8x6x258xf32>, %c: tensor<2x8x4xi32>) {
  // expected-error @+1 {{chunks shape [2, 8, 4] must be the logits shape without the vocabulary dimension, [2, 8, 6]}}
  %a = stlm.chunk_bytes_loss %l, %c : tensor<2x8x6x258xf32>, tensor<2x8x4xi32>
  return
}

// -----

// Tests that next-chunk byte logits must have 258 classes.
func.func @f(%l: tensor<2x8x6x256xf32>, %c: tensor<2x8x6xi32>) {
  // expected-error @+1 {{byte logits must have 258 classes (256 bytes, pad, end), got 256}}
  %a = stlm.chunk_bytes_loss %l, %c : tensor<2x8x6x256xf32>, tensor<2x8x6xi32>
  return
}

// -----

// Tests that next-chunk prediction needs at least 2 chunks.
func.func @f(%l: tensor<2x1x6x258xf32>, %c: tensor<2x1x6xi32>) {
  // expected-error @+1 {{next-chunk prediction needs at least 2 chunks}}
  %a = stlm.chunk_bytes_loss %l, %c : tensor<2x1x6x258xf32>, tensor<2x1x6xi32>
  return
}

// -----

// Tests that reconstruction byte logits must have 258 classes.
func.func @f(%l: tensor<2x8x6x16xf32>, %c: tensor<2x8x6xi32>) {
  // expected-error @+1 {{byte logits must have 258 classes (256 bytes, pad, end), got 16}}
  %a = stlm.reconstruction_loss %l, %c : tensor<2x8x6x16xf32>, tensor<2x8x6xi32>
  return
}

// -----

// Tests that reconstruction logits must have rank 4.
func.func @f(%l: tensor<2x4x258xf32>, %c: tensor<2x4xi32>) {
  // expected-error @+1 {{logits must have rank 4, got [2, 4, 258]}}
  %a = stlm.reconstruction_loss %l, %c : tensor<2x4x258xf32>, tensor<2x4xi32>
  return
}

// -----

// Tests that masked next-token targets must be the logits shape without V.
func.func @f(%l: tensor<2x4x16xf32>, %y: tensor<4x2xi32>, %m: tensor<4x2xi1>) {
  // expected-error @+1 {{targets shape [4, 2] must be the logits shape without the vocabulary dimension, [2, 4]}}
  %a = stlm.masked_next_token_loss %l, %y, %m : tensor<2x4x16xf32>, tensor<4x2xi32>, tensor<4x2xi1>
  return
}

// -----

// Tests that the loss mask must have the targets' shape.
func.func @f(%l: tensor<2x4x16xf32>, %y: tensor<2x4xi32>, %m: tensor<2x3xi1>) {
  // expected-error @+1 {{mask shape must match targets shape}}
  %a = stlm.masked_next_token_loss %l, %y, %m : tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<2x3xi1>
  return
}

// -----

// Tests that distillation logits must have rank 3.
func.func @f(%l: tensor<4x16xf32>, %y: tensor<4xi32>) {
  // expected-error @+1 {{logits must have rank 3, got [4, 16]}}
  %d = stlm.distill_loss %l, %l, %y {temperature = 2.0, alpha = 0.5} : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4xi32>
  return
}

// -----

// Tests that the teacher logits must have the student's type.
func.func @f(%l: tensor<2x4x16xf32>, %t: tensor<2x4x32xf32>, %y: tensor<2x4xi32>) {
  // expected-error @+1 {{teacher logits 'tensor<2x4x32xf32>' must have the student's type 'tensor<2x4x16xf32>'}}
  %d = stlm.distill_loss %l, %t, %y {temperature = 2.0, alpha = 0.5} : tensor<2x4x16xf32>, tensor<2x4x32xf32>, tensor<2x4xi32>
  return
}

// -----

// Tests that the distillation temperature must be > 0.
func.func @f(%l: tensor<2x4x16xf32>, %y: tensor<2x4xi32>) {
  // expected-error @+1 {{temperature must be finite and > 0, got 0.000000e+00}}
  %d = stlm.distill_loss %l, %l, %y {temperature = 0.0, alpha = 0.5} : tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xi32>
  return
}

// -----

// Tests that the distillation alpha must be in [0, 1].
func.func @f(%l: tensor<2x4x16xf32>, %y: tensor<2x4xi32>) {
  // expected-error @+1 {{alpha must be in [0, 1], got 1.500000e+00}}
  %d = stlm.distill_loss %l, %l, %y {temperature = 2.0, alpha = 1.5} : tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xi32>
  return
}

// -----

// Tests that a weighted sum needs at least one term.
func.func @f() {
  // expected-error @+1 {{needs at least one term}}
  %s = "stlm.weighted_sum"() {weights = []} : () -> tensor<f32>
  return
}

// -----

// Tests that a weighted sum needs one weight per term.
func.func @f(%a: tensor<f32>, %b: tensor<f32>) {
  // expected-error @+1 {{has 2 terms but 1 weights}}
  %s = stlm.weighted_sum %a, %b {weights = [1.0]} : tensor<f32>, tensor<f32>
  return
}

// -----

// Tests that weighted-sum weights must be >= 0.
func.func @f(%a: tensor<f32>, %b: tensor<f32>) {
  // expected-error @+1 {{weight 1 must be finite and >= 0, got -5.000000e-01}}
  %s = stlm.weighted_sum %a, %b {weights = [1.0, -0.5]} : tensor<f32>, tensor<f32>
  return
}

// -----

// Tests that weighted-sum terms must be 0-d f32 tensors (ODS).
func.func @f(%a: tensor<1xf32>) {
  // expected-error @+1 {{operand #0 must be variadic of 0D tensor of 32-bit float values}}
  %s = stlm.weighted_sum %a {weights = [1.0]} : tensor<1xf32>
  return
}

// -----

// Tests that AdamW betas must be in [0, 1).
func.func @f(%p: tensor<4x8xf32>, %lr: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{betas must be in [0, 1), got (9.000000e-01, 1.000000e+00)}}
  %p2, %m2, %v2 = stlm.adamw %p, %p, %p, %p, %lr, %t {beta1 = 0.9, beta2 = 1.0, eps = 1.0e-8, weight_decay = 0.1} : tensor<4x8xf32>
  return
}

// -----

// Tests that AdamW eps must be > 0.
func.func @f(%p: tensor<4x8xf32>, %lr: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{eps must be finite and > 0, got -1.000000e-08}}
  %p2, %m2, %v2 = stlm.adamw %p, %p, %p, %p, %lr, %t {beta1 = 0.9, beta2 = 0.99, eps = -1.0e-8, weight_decay = 0.1} : tensor<4x8xf32>
  return
}

// -----

// Tests that AdamW weight decay must be >= 0.
func.func @f(%p: tensor<4x8xf32>, %lr: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{weight_decay must be finite and >= 0, got -1.000000e-01}}
  %p2, %m2, %v2 = stlm.adamw %p, %p, %p, %p, %lr, %t {beta1 = 0.9, beta2 = 0.99, eps = 1.0e-8, weight_decay = -0.1} : tensor<4x8xf32>
  return
}

// -----

// Tests that AdamW weight decay is rejected on a rank-1 parameter.
func.func @f(%p: tensor<8xf32>, %lr: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{weight decay applies to matrices only, but the parameter has rank 1}}
  %p2, %m2, %v2 = stlm.adamw %p, %p, %p, %p, %lr, %t {beta1 = 0.9, beta2 = 0.99, eps = 1.0e-8, weight_decay = 0.1} : tensor<8xf32>
  return
}

// -----

// Tests that gradient clipping needs at least one gradient.
func.func @f() {
  // expected-error @+1 {{needs at least one gradient}}
  %n = "stlm.clip_grad_norm"() {max_norm = 1.0 : f64} : () -> tensor<f32>
  return
}

// -----

// Tests that the clipping max_norm must be >= 0.
func.func @f(%g: tensor<4x8xf32>) {
  // expected-error @+1 {{max_norm must be finite and >= 0 (0 disables), got -1.000000e+00}}
  %c, %n = stlm.clip_grad_norm %g {max_norm = -1.0} : tensor<4x8xf32>
  return
}

// -----

// Tests that the schedule lr must be > 0.
func.func @f(%t: tensor<i32>) {
  // expected-error @+1 {{lr must be finite and > 0, got 0.000000e+00}}
  %lr = stlm.lr_schedule cosine %t {lr = 0.0, min_lr = 0.0, warmup = 0, total = 10}
  return
}

// -----

// Tests that the schedule min_lr must not exceed lr.
func.func @f(%t: tensor<i32>) {
  // expected-error @+1 {{min_lr must be in [0, lr], got 1.000000e-02}}
  %lr = stlm.lr_schedule cosine %t {lr = 1.0e-3, min_lr = 1.0e-2, warmup = 0, total = 10}
  return
}

// -----

// Tests that the schedule total must be > 0.
func.func @f(%t: tensor<i32>) {
  // expected-error @+1 {{total must be > 0, got 0}}
  %lr = stlm.lr_schedule constant %t {lr = 1.0e-3, min_lr = 0.0, warmup = 0, total = 0}
  return
}

// -----

// Tests that the schedule warmup must not be negative.
func.func @f(%t: tensor<i32>) {
  // expected-error @+1 {{warmup -1 must be in [0, total = 10]}}
  %lr = stlm.lr_schedule cosine %t {lr = 1.0e-3, min_lr = 0.0, warmup = -1, total = 10}
  return
}

// -----

// Tests that the schedule warmup must not exceed total.
func.func @f(%t: tensor<i32>) {
  // expected-error @+1 {{warmup 20 must be in [0, total = 10]}}
  %lr = stlm.lr_schedule cosine %t {lr = 1.0e-3, min_lr = 0.0, warmup = 20, total = 10}
  return
}

// -----

// Tests that the schedule step must be a 0-d i32 tensor (ODS; the custom form
// infers the step type, so this needs the generic form).
func.func @f(%t: tensor<i64>) {
  // expected-error @+1 {{operand #0 must be 0D tensor of 32-bit signless integer values}}
  %lr = "stlm.lr_schedule"(%t) <{kind = 0 : i32, lr = 1.0e-3 : f64, min_lr = 0.0 : f64, warmup = 0 : i64, total = 10 : i64}> : (tensor<i64>) -> tensor<f32>
  return
}

// -----

// Tests that an offset is only for causal attention.
func.func @f(%q: tensor<2x4x8xf32>, %pos: tensor<i32>) {
  // expected-error @+1 {{an offset only applies to causal attention}}
  %a = stlm.attention none %q, %q, %q offset(%pos) {heads = 2, kv_heads = 2} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x8xf32>
  return
}

// -----

// Tests that masking needs [B, T] ids.
func.func @f(%ids: tensor<2x4x3xi32>, %seed: tensor<i32>) {
  // expected-error @+1 {{ids must be [B, T], got [2, 4, 3]}}
  %m, %k = stlm.mask_tokens %ids, %seed {prob = 0.15, mask_id = 0} : tensor<2x4x3xi32> -> tensor<2x4x3xi1>
  return
}

// -----

// Tests that the chunk count of a chunk objective is one value per row.
func.func @f(%l: tensor<2x8x6x258xf32>, %c: tensor<2x8x6xi32>, %n: tensor<3xi32>) {
  // expected-error @+1 {{count must be [2], got [3]}}
  %loss = stlm.chunk_bytes_loss %l, %c count(%n) : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<3xi32>
  return
}

// -----

// Tests that the reconstruction objective checks its chunk count too.
func.func @f(%l: tensor<2x8x6x258xf32>, %c: tensor<2x8x6xi32>, %n: tensor<2x1xi32>) {
  // expected-error @+1 {{count must be [2], got [2, 1]}}
  %loss = stlm.reconstruction_loss %l, %c count(%n) : tensor<2x8x6x258xf32>, tensor<2x8x6xi32>, tensor<2x1xi32>
  return
}

// -----

// Tests that state_ref reads a state, not a parameter.
stlm.model @m {
  stlm.param @w : tensor<4xf32> = ones
  func.func @f() {
    // expected-error @+1 {{'@w' is a 'stlm.param', not a 'stlm.state'}}
    %w = stlm.state_ref @w : tensor<4xf32>
    return
  }
}

// -----

// Tests that state_ref needs a declared state.
stlm.model @m {
  func.func @f() {
    // expected-error @+1 {{'@step' is not a 'stlm.state' of model '@m'}}
    %s = stlm.state_ref @step : tensor<i32>
    return
  }
}

// -----

// Tests that an assigned value has the declared type.
stlm.model @m {
  stlm.state @step : tensor<i32>
  func.func @f(%x: tensor<4xf32>) {
    // expected-error @+1 {{type 'tensor<4xf32>' does not match '@step' declared as 'tensor<i32>'}}
    stlm.assign @step, %x : tensor<4xf32>
    return
  }
}

// -----

// Tests that assign targets only parameters and states.
stlm.model @m {
  func.func @g() {
    return
  }
  func.func @f(%x: tensor<4xf32>) {
    // expected-error @+1 {{'@g' is a 'func.func', not a 'stlm.param' or 'stlm.state'}}
    stlm.assign @g, %x : tensor<4xf32>
    return
  }
}

// -----

// Tests that assign must be inside a model.
func.func @f(%x: tensor<4xf32>) {
  // expected-error @+1 {{must be nested in a 'stlm.model'}}
  stlm.assign @w, %x : tensor<4xf32>
  return
}

// -----

// Tests that state is only f32 or i32.
stlm.model @m {
  // expected-error @+1 {{attribute 'type' failed to satisfy constraint}}
  stlm.state @s : tensor<4xf16>
}

// -----

// Tests that sum_leading produces a suffix of its input's shape.
func.func @f(%x: tensor<2x3x4xf32>) {
  // expected-error @+1 {{result shape [2, 4] must be a suffix of the input shape [2, 3, 4]}}
  %s = stlm.sum_leading %x : tensor<2x3x4xf32> -> tensor<2x4xf32>
  return
}

// -----

// Tests that merge_slots needs slots to merge.
func.func @f(%x: tensor<4xf32>) {
  // expected-error @+1 {{input must be [..., L, E]}}
  %s = stlm.merge_slots %x : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

// Tests that merge_slots keeps the element count.
func.func @f(%x: tensor<2x6x4xf32>) {
  // expected-error @+1 {{slot shape [2, 6, 4] must be [..., L, E] with L * E = 20}}
  %s = stlm.merge_slots %x : tensor<2x6x4xf32> -> tensor<2x20xf32>
  return
}

// -----

// Tests that an embedding gradient matches the ids and rows it scatters.
func.func @f(%ids: tensor<2x3xi32>, %dy: tensor<2x3x4xf32>) {
  // expected-error @+1 {{result shape [2, 3, 4] must be [2, 3, 5] (ids shape + [D])}}
  %d = stlm.embed_grad %ids, %dy : tensor<2x3xi32>, tensor<2x3x4xf32> -> tensor<16x5xf32>
  return
}

// -----

// Tests that gradient ops check their operands like their forward ops.
func.func @f(%x: tensor<2x3x4xf32>, %w: tensor<8x5xf32>, %dy: tensor<2x3x8xf32>) {
  // expected-error @+1 {{weight input width 5 does not match the input's last dimension 4}}
  %dx, %dw = stlm.linear_grad %x, %w, %dy : tensor<2x3x4xf32>, tensor<8x5xf32>, tensor<2x3x8xf32>
  return
}

// -----

// Tests that write_rows keeps the cache's other dimensions.
func.func @f(%c: tensor<1x8x4xf32>, %r: tensor<1x1x6xf32>, %pos: tensor<i32>) {
  // expected-error @+1 {{rows [1, 1, 6] must match the cache [1, 8, 4] in every dimension but the second-to-last}}
  %w = stlm.write_rows %c, %r offset(%pos) : tensor<1x8x4xf32>, tensor<1x1x6xf32>
  return
}

// -----

// Tests that write_rows refuses more rows than the cache holds.
func.func @f(%c: tensor<1x2x4xf32>, %r: tensor<1x3x4xf32>, %pos: tensor<i32>) {
  // expected-error @+1 {{3 rows do not fit a cache of 2}}
  %w = stlm.write_rows %c, %r offset(%pos) : tensor<1x2x4xf32>, tensor<1x3x4xf32>
  return
}

// -----

// Tests that the fused matmul knows its activations.
func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>) {
  // expected-error @+1 {{activation must be "none" or "gelu", got "relu"}}
  %y = stlm.linear_fused %x, %w {activation = "relu"} : tensor<2x8xf32>, tensor<4x8xf32> -> tensor<2x4xf32>
  return
}

// -----

// Tests that the residual has the result's type.
func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %r: tensor<2x8xf32>) {
  // expected-error @+1 {{residual 'tensor<2x8xf32>' must have the result's type 'tensor<2x4xf32>'}}
  %y = stlm.linear_fused %x, %w residual(%r : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32> -> tensor<2x4xf32>
  return
}

// -----

// Tests that a linear gradient's addend has the type of x.
func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %dy: tensor<2x4xf32>, %a: tensor<2x4xf32>) {
  // expected-error @+1 {{addend 'tensor<2x4xf32>' must have the type of x 'tensor<2x8xf32>'}}
  %dx, %dw = stlm.linear_grad %x, %w, %dy addend(%a : tensor<2x4xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  return
}

// -----

// Tests that a linear gradient's GELU input has the type of x.
func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %dy: tensor<2x4xf32>, %h: tensor<2x4xf32>) {
  // expected-error @+1 {{gelu_input 'tensor<2x4xf32>' must have the type of x 'tensor<2x8xf32>'}}
  %dx, %dw = stlm.linear_grad %x, %w, %dy gelu_input(%h : tensor<2x4xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  return
}

// -----

// Tests that a linear gradient takes an addend or a GELU input, not both.
func.func @f(%x: tensor<2x8xf32>, %w: tensor<4x8xf32>, %dy: tensor<2x4xf32>) {
  // expected-error @+1 {{takes an addend or a gelu_input, not both}}
  %dx, %dw = stlm.linear_grad %x, %w, %dy addend(%x : tensor<2x8xf32>) gelu_input(%x : tensor<2x8xf32>) : tensor<2x8xf32>, tensor<4x8xf32>, tensor<2x4xf32>
  return
}

// -----

// Tests that the training settings are checked where the model is: a key
// of the wrong kind, an unknown key (a typo is not a default), a precision
// the kernels do not have, and a stlm.train that is not a dictionary.
// expected-error @+1 {{stlm.train: 'lr' must be a number, got "fast"}}
stlm.model @m attributes {stlm.train = {lr = "fast"}} {
}

// -----

// expected-error @+1 {{stlm.train: unknown key 'learning_rate' (known: batch, steps, lr, min_lr, warmup, schedule, beta1, beta2, eps, weight_decay, grad_clip, accumulate, seed, precision)}}
stlm.model @m attributes {stlm.train = {learning_rate = 1.0e-3}} {
}

// -----

// expected-error @+1 {{stlm.train: 'precision' must be "fp32" or "bf16", got "fp16"}}
stlm.model @m attributes {stlm.train = {precision = "fp16"}} {
}

// -----

// expected-error @+1 {{stlm.train: 'accumulate' must be >= 1, got 0}}
stlm.model @m attributes {stlm.train = {accumulate = 0}} {
}

// -----

// expected-error @+1 {{stlm.train must be a dictionary, got 3 : i64}}
stlm.model @m attributes {stlm.train = 3} {
}

// -----

// expected-error @+1 {{stlm.quantization must be {scheme = "int8" | "int4", group = N > 0}, got "int8"}}
stlm.model @m attributes {stlm.quantization = "int8"} {
}

// -----

// expected-error @+1 {{stlm.quantization must be {scheme = "int8" | "int4", group = N > 0}, got {scheme = "int3"}}}
stlm.model @m attributes {stlm.quantization = {scheme = "int3"}} {
}

// -----

// expected-error @+1 {{stlm.quantization must be {scheme = "int8" | "int4", group = N > 0}}}
stlm.model @m attributes {stlm.quantization = {group = 0 : i64, scheme = "int4"}} {
}

// -----

// Tests that a model's quantized linears have its format (the artifact
// lays out their weights by it).
stlm.model @m attributes {stlm.quantization = {group = 32 : i64, scheme = "int8"}} {
  func.func @logits(%x: tensor<2x64xf32>, %w: tensor<16x64xi8>, %s: tensor<16x4xf32>) -> tensor<2x16xf32> {
    // expected-error @+1 {{'stlm.qlinear' op is int8 in groups of 16; the model's stlm.quantization is {group = 32 : i64, scheme = "int8"}}}
    %y = stlm.qlinear %x, %w, %s {scheme = "int8", group = 16} : tensor<2x64xf32>, tensor<16x64xi8>, tensor<16x4xf32> -> tensor<2x16xf32>
    return %y : tensor<2x16xf32>
  }
}

// -----

stlm.model @m {
  func.func @logits(%x: tensor<2x64xf32>, %w: tensor<16x64xi8>, %s: tensor<16x2xf32>) -> tensor<2x16xf32> {
    // expected-error @+1 {{'stlm.qlinear' op is int8 in groups of 32; the model's stlm.quantization is missing}}
    %y = stlm.qlinear %x, %w, %s {scheme = "int8", group = 32} : tensor<2x64xf32>, tensor<16x64xi8>, tensor<16x2xf32> -> tensor<2x16xf32>
    return %y : tensor<2x16xf32>
  }
}

// -----

// Tests that 'given' chunking takes no stride (its starts are in the bytes).
func.func @f(%b: tensor<2x16xi32>) {
  // expected-error @+1 {{'stride' is only for 'fixed' chunking}}
  %c, %n = stlm.chunk given %b {stride = 2} : tensor<2x16xi32> -> tensor<2x8x6xi32>, tensor<2xi32>
  return
}
