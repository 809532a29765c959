//===- Passes.td - stlm passes ------------------------------*- tablegen -*-===//
//
// Every stlm pass: flag `stlm-<name>` ↔ def `<Name>Pass` ↔ file
// Transforms/<Name>.cpp ↔ test test/Transforms/stlm-<name>.mlir.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_PASSES_TD
#define STLM_PASSES_TD

include "mlir/Pass/PassBase.td"

def UnrollLayersPass : Pass<"stlm-unroll-layers", "::mlir::ModuleOp"> {
  let summary = "Expands every `stlm.repeat` into one copy of its body per layer";
  let description = [{
    Replaces `stlm.repeat lo to hi` by hi − lo copies of its body, in layer
    order, threading the hidden state. In copy `l`, the layer index is the
    constant `l` and every `stlm.layer_param_ref "p.{}.x"` becomes
    `stlm.param_ref @p.l.x`; shared parameters stay `stlm.param_ref`s of the
    same symbol, so a shared weight ends up with one use per layer.

    ```mlir
    %y = stlm.repeat 0 to 2 (%x) : tensor<2x4xf32> {
    ^bb0(%l: index, %h: tensor<2x4xf32>):
      %w = stlm.layer_param_ref "layers.{}.w"[%l] : tensor<4x4xf32>
      ...
    }
    // becomes
    %w0 = stlm.param_ref @layers.0.w : tensor<4x4xf32>
    ...
    %w1 = stlm.param_ref @layers.1.w : tensor<4x4xf32>
    ...
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AutodiffPass : Pass<"stlm-autodiff", "::mlir::ModuleOp"> {
  let summary = "Derives the training step of every model from its @loss";
  let description = [{
    For each `stlm.model` with a function `@loss` returning one `tensor<f32>`,
    adds:

    - `@grad(<@loss inputs>) -> (loss, d/d p_0, …, d/d p_{n-1})`: the loss and
      the gradient of every parameter, in declaration order (listed in the
      function's `stlm.grad_params` attribute). Calls are inlined and
      `stlm.repeat` runs unrolled, then gradients are propagated backwards
      op by op with the rules of the `*_grad` ops. The gradient of a tied or
      shared parameter is the sum over all its uses (all layers of a shared
      run included); an unused parameter gets 0.
    - `@train_step(<@loss inputs>) -> (loss, grad_norm, lr)`: `@grad`, then
      global-norm clipping (`grad_clip`), the learning rate of the schedule
      at the 0-based `step`, and one AdamW update of every parameter (weight
      decay on parameters of rank ≥ 2 only) with the moments in
      `stlm.state @opt.m.<p>` / `@opt.v.<p>`; finally `@step` += 1. All
      updates are `stlm.assign`s.
    - `@eval(<@loss inputs>) -> loss`: the loss without an update.

    The optimizer settings come from the model's `stlm.train` dictionary
    (as `stlm-compile --emit=stlm` writes it); missing entries take
    MODEL_SPEC's defaults (lr 1e-3, min_lr 1e-4, warmup 100, steps 2000,
    cosine, betas 0.9/0.99, eps 1e-8, weight_decay 0.1, grad_clip 1).

    A model without `@loss`, a `@loss` that does not return one f32 scalar,
    or one that uses an op without a gradient rule is reported with the
    reason, and the model is left unchanged.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

#endif // STLM_PASSES_TD
