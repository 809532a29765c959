// RUN: stlm-opt %s -split-input-file -stlm-autodiff -verify-diagnostics

// Tests that a model needs a @loss to differentiate.
// expected-error @+1 {{has no @loss function to differentiate (stlm-autodiff needs one)}}
stlm.model @m {
  stlm.param @w : tensor<4xf32> = ones
}

// -----

// Tests that @loss must return one f32 scalar.
stlm.model @m {
  // expected-error @+1 {{must return exactly one 'tensor<f32>' (the loss) to be differentiated}}
  func.func @loss(%x: tensor<4xf32>) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
}

// -----

// Tests that an op without a gradient rule is named.
stlm.model @m {
  stlm.param @w : tensor<1x2x4xf32> = normal(0.02)
  func.func @loss(%y: tensor<1x2xi32>) -> tensor<f32> {
    %w = stlm.param_ref @w : tensor<1x2x4xf32>
    // expected-error @+1 {{'arith.addf' op has no gradient rule; @loss must be built from stlm ops}}
    %v = arith.addf %w, %w : tensor<1x2x4xf32>
    %loss = stlm.next_token_loss %v, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that the functions autodiff adds must not exist already.
// expected-error @+1 {{already has a '@grad' function; stlm-autodiff adds @grad, @train_step (or @accumulate and @apply) and @eval}}
stlm.model @m {
  func.func @grad() {
    return
  }
  func.func @loss(%l: tensor<1x2x4xf32>, %y: tensor<1x2xi32>) -> tensor<f32> {
    %loss = stlm.next_token_loss %l, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that calls must reach functions with bodies.
stlm.model @m {
  func.func private @external(tensor<1x2x4xf32>) -> tensor<1x2x4xf32>
  func.func @loss(%l: tensor<1x2x4xf32>, %y: tensor<1x2xi32>) -> tensor<f32> {
    // expected-error @+1 {{calls '@external', which is not a function with a body in the model}}
    %m = call @external(%l) : (tensor<1x2x4xf32>) -> tensor<1x2x4xf32>
    %loss = stlm.next_token_loss %m, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that recursion is refused.
stlm.model @m {
  func.func @f(%l: tensor<1x2x4xf32>) -> tensor<1x2x4xf32> {
    %m = call @f(%l) : (tensor<1x2x4xf32>) -> tensor<1x2x4xf32>
    return %m : tensor<1x2x4xf32>
  }
  // expected-error @+1 {{calls recurse; only straight-line code is compiled}}
  func.func @loss(%l: tensor<1x2x4xf32>, %y: tensor<1x2xi32>) -> tensor<f32> {
    %m = call @f(%l) : (tensor<1x2x4xf32>) -> tensor<1x2x4xf32>
    %loss = stlm.next_token_loss %m, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that names autodiff needs for state must be free.
stlm.model @m {
  stlm.param @w : tensor<1x2x4xf32> = normal(0.02)
  // expected-error @+1 {{'@step' is reserved for training state of type 'tensor<i32>'}}
  stlm.param @step : tensor<4xf32> = ones
  func.func @loss(%y: tensor<1x2xi32>) -> tensor<f32> {
    %w = stlm.param_ref @w : tensor<1x2x4xf32>
    %loss = stlm.next_token_loss %w, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that a declared-only @loss is refused, not dereferenced.
stlm.model @m {
  // expected-error @+1 {{is only declared; stlm-autodiff needs its body}}
  func.func private @loss(tensor<1x2xi32>) -> tensor<f32>
}

// -----

// Tests that optimizer settings of the wrong kind are errors, not defaults.
// expected-error @+1 {{stlm.train: 'warmup' must be an integer, got 1.000000e+01 : f64}}
stlm.model @m attributes {stlm.train = {warmup = 10.0}} {
  func.func @loss(%l: tensor<1x2x4xf32>, %y: tensor<1x2xi32>) -> tensor<f32> {
    %loss = stlm.next_token_loss %l, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}

// -----

// Tests that the schedule must be one autodiff knows.
// expected-error @+1 {{stlm.train: 'schedule' must be "cosine" or "constant", got "linear"}}
stlm.model @m attributes {stlm.train = {schedule = "linear"}} {
  func.func @loss(%l: tensor<1x2x4xf32>, %y: tensor<1x2xi32>) -> tensor<f32> {
    %loss = stlm.next_token_loss %l, %y : tensor<1x2x4xf32>, tensor<1x2xi32>
    return %loss : tensor<f32>
  }
}
