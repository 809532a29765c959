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

def VerifyShapesPass : Pass<"stlm-verify-shapes", "::mlir::ModuleOp"> {
  let summary = "Checks invariants that span several ops";
  let description = [{
    Op verifiers see one op; this pass checks what only the data flow
    shows, and reports each violation at the op that breaks it:

    - a `stlm.rope` result used as attention queries (keys) must rotate
      heads of the attention's head width `q width / heads`;
    - ids produced by `stlm.mask_tokens` and looked up with `stlm.embed`
      must have `mask_id` inside the table;
    - chunk ids from `stlm.chunk` (bytes and the pad byte 256) looked up
      with `stlm.embed` need a table of at least 258 rows.
  }];
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
    - `@eval(<@loss inputs>) -> (loss, term_1, …, term_k)`: the loss
      without an update, then each objective's own mean loss in the
      order of the `stlm.weighted_sum` that @loss returns (the loss
      itself, once, when @loss returns a single objective), so that a
      validation loss can be pooled over counted targets per objective.

    With gradient accumulation (`accumulate = k > 1` in `stlm.train`),
    `@train_step` is replaced by `@accumulate(<@loss inputs>) -> loss`, which
    adds one micro-batch's gradients into `stlm.state @grad_acc.<p>`, and
    `@apply() -> (grad_norm, lr)`, which averages the k sums, clips, updates
    and clears them; a training step is k `@accumulate` calls and one
    `@apply`, equivalent to one step on the k micro-batches together.
    With `split-step` (stlm-compile --data-parallel) a model with
    `accumulate = 1` gets them too, in place of `@train_step`: data-parallel
    training all-reduces the sums between the two. Both forms then declare
    a scalar `stlm.state @loss_acc` right after the sums, which no function
    uses: the runtime puts a step's loss sum there, so that the sums and
    the loss make one contiguous buffer to all-reduce.

    The optimizer settings come from the model's `stlm.train` dictionary
    (as `stlm-compile --emit=stlm` writes it); missing entries take
    MODEL_SPEC's defaults (lr 1e-3, min_lr 1e-4, warmup 100, steps 2000,
    cosine, betas 0.9/0.99, eps 1e-8, weight_decay 0.1, grad_clip 1,
    accumulate 1).

    A model without `@loss`, a `@loss` that does not return one f32 scalar,
    or one that uses an op without a gradient rule is reported with the
    reason, and the model is left unchanged.
  }];
  let options = [
    Option<"splitStep", "split-step", "bool", /*default=*/"false",
           "Emit @accumulate and @apply instead of @train_step even with "
           "accumulate = 1 (for data-parallel training)">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

def AddDecodePass : Pass<"stlm-add-decode", "::mlir::ModuleOp"> {
  let summary = "Derives KV-cached generation functions from @logits";
  let description = [{
    For each `stlm.model` with `@logits(ids: [B, T] i32) -> [B, T, V]`,
    adds two functions for one sequence and a KV cache per attention layer:

    - `stlm.state @kv.<l>.k`, `@kv.<l>.v : [1, T, K·hd]` for the l-th
      attention of the unrolled model (keys after RoPE, values);
    - `@prefill(ids: [1, T]) -> [1, T, V]`: the logits of a sequence from
      position 0 (equal to row 0 of `@logits` on the same ids), writing
      cache rows `0 … T−1`;
    - `@decode_step(id: [1, 1], pos: i32) -> [1, 1, V]`: the logits after
      one new token at position `pos`, which sees cache rows `0 … pos`
      after writing row `pos`.

    Both are copies of `@logits` with layers unrolled and every
    activation `[B, T, …]` retyped to `[1, N, …]`; `stlm.rope` and
    `stlm.attention` take the first new position as `offset`, and each
    attention reads its caches after `stlm.write_rows` put the new rows in
    (assigned back with `stlm.assign`). `@logits` itself is unrolled too,
    so the memory planner can place all three. Padding a prefill beyond the
    real tokens is harmless: a row is always rewritten before a query at
    or after its position reads it.

    A byte-pool model (`@logits(bytes: [B, N]) -> [B, T, L, V]` through one
    `stlm.chunk`) decodes a chunk at a time: the copies are made from
    `@logits` with its calls inlined and the chunking replaced by the
    chunks, `@prefill(chunks: [1, T, L]) -> [1, T, L, V]` and
    `@decode_step(chunk: [1, 1, L], pos: i32) -> [1, 1, L, V]` (the logits
    of the chunk after it); only the core's causal attention gets caches,
    attention inside a chunk (`none` over `[…, L, d]`) sees its own chunk.

    A `@logits` with calls, bidirectional attention between positions or
    position offsets is reported and the pass fails. A `@logits` of
    another signature without chunking gets no decoding functions; its
    calls are inlined and its layers unrolled, so that it compiles as
    straight-line code.

    With `batch=S` (S ≥ 2; `stlm-compile --decode-batch S`), a token model
    also gets the same two functions for S sequences decoded in lockstep,
    every sequence at the same position, with caches of their own:

    - `stlm.state @kv.batch.<l>.k`, `@kv.batch.<l>.v : [S, T, K·hd]`;
    - `@prefill_batch(ids: [S, T]) -> [S, T, V]`;
    - `@decode_batch(ids: [S, 1], pos: i32) -> [S, 1, V]`.

    Their linear layers then multiply S rows at once where a single
    sequence multiplies one (`stlm_generate_batch` in the runtime). A
    byte-pool model has no batched functions yet: the pass reports
    `batch` with one.
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"0",
           "Also derive @prefill_batch and @decode_batch for this many "
           "sequences decoded in lockstep (0: none)">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::func::FuncDialect"];
}

def QuantizePass : Pass<"stlm-quantize", "::mlir::ModuleOp"> {
  let summary = "Makes the inference functions run on int8 or int4 linear weights";
  let description = [{
    For each `stlm.model`, quantizes the weights of its linear layers as
    `stlm-run quantize` quantizes a checkpoint (`support/Quantize.h`):

    - The training functions (`@grad`, `@train_step`, `@accumulate`,
      `@apply`) and the states only they used (`opt.*`, `grad_acc.*`) are
      removed: a quantized model infers (`@logits`, `@prefill`,
      `@decode_step`, `@eval`, and what they call).
    - A parameter `W: [Out, In]` whose every read (`stlm.param_ref`, or a
      `stlm.layer_param_ref` of its pattern) feeds only the weight operand
      of `stlm.linear` becomes `W: [Out, In] i8` (int8) or `[Out, In / 2]
      ui8` (int4 pairs), beside a new `W.scale: [Out, In / group] f32`;
      each such linear becomes a `stlm.qlinear`. Embeddings, heads, norms
      and LoRA factors are read by other ops, so they stay f32: the same
      tensors a quantized checkpoint stores as integers.
    - The model gets `stlm.quantization = {scheme, group}`.

    A quantized weight whose inputs are not whole groups (or, for int4,
    an odd group) is reported and the pass fails. Run after
    `stlm-add-decode` and before `stlm-decompose`: LoRA's factors, which
    decompose into linears, stay f32.

    ```mlir
    %w = stlm.param_ref @layers.0.wq : tensor<128x128xf32>
    %q = stlm.linear %x, %w : tensor<1x1x128xf32>, tensor<128x128xf32> -> tensor<1x1x128xf32>
    // becomes, with scheme=int8 group=32
    %w = stlm.param_ref @layers.0.wq : tensor<128x128xi8>
    %s = stlm.param_ref @layers.0.wq.scale : tensor<128x4xf32>
    %q = stlm.qlinear %x, %w, %s {group = 32 : i64, scheme = "int8"} : tensor<1x1x128xf32>, tensor<128x128xi8>, tensor<128x4xf32> -> tensor<1x1x128xf32>
    ```
  }];
  let options = [
    Option<"scheme", "scheme", "std::string", /*default=*/"\"int8\"",
           "int8 or int4">,
    Option<"group", "group", "int64_t", /*default=*/"32",
           "Inputs per scale (divides every quantized weight's inputs)">
  ];
}

def DecomposePass : Pass<"stlm-decompose", "::mlir::ModuleOp"> {
  let summary = "Rewrites composite ops into the ops the native kernels compute";
  let description = [{
    - `stlm.lowrank %x, %a, %b` (a LoRA delta) becomes
      `stlm.linear (stlm.linear %x, %a), %b`: the rank-R bottleneck
      `h = x · aᵀ` is an ordinary value (planned like any other).
    - `stlm.lowrank_grad %x, %a, %b, %dy` recomputes `h`, then
      `stlm.linear_grad %h, %b, %dy` gives `dh` and `db` and
      `stlm.linear_grad %x, %a, %dh` gives `dx` and `da`.
    - Where a delta corrects a linear of many rows, the two are one matmul
      on the merged weight instead: `stlm.add (stlm.linear %x, %w),
      (stlm.lowrank %x, %a, %b)` becomes `stlm.linear %x,
      (stlm.lowrank_merge %w, %a, %b)` (`w + b · a`, computed once), and in
      the backward the pair `stlm.linear_grad %x, %w, %dy`,
      `stlm.lowrank_grad %x, %a, %b, %dy` becomes `stlm.linear_grad %x,
      %merged, %dy` (its `dx` already holds the delta's part, so the
      `stlm.add` that summed the two goes) and `stlm.lowrank_merge_grad`
      of its `dweight`: `da = bᵀ · dweight`, `db = dweight · aᵀ`, while
      `dweight` stays the shared weight's gradient. This replaces matmuls
      with only R (the rank) columns or terms, which stream the
      activations for little arithmetic, by a few of weight size.
      A site merges when the delta only feeds that `stlm.add`, the linear
      (of the same `%x`) only feeds it too, and either neither has a
      gradient or both have, with the same `dy`, later in the block, their
      two `dx` flowing through single-use `stlm.add`s into the same sum.
      `merge=auto` merges such a site when `rows · (In + Out) ≥ In · Out`
      (the delta's multiply-adds outnumber the merge's) and the model's
      matmuls do not round to bfloat16 (which would round `w + b · a` as
      one value, losing a delta under half an ulp of `w`): training and
      evaluation batches and long prompts, not the few rows of a decode
      step. `always` merges every such site, `never` none (tests, and a
      user who measures).

    The results are the same math up to float rounding (`lowrank` is
    already computed through `h`; a merged weight sums before its
    products). Run before `stlm-plan-memory`; part of the native
    pipeline.

    ```mlir
    %d = stlm.lowrank %x, %a, %b : tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<6x2xf32> -> tensor<2x4x6xf32>
    // becomes
    %h = stlm.linear %x, %a : tensor<2x4x8xf32>, tensor<2x8xf32> -> tensor<2x4x2xf32>
    %d = stlm.linear %h, %b : tensor<2x4x2xf32>, tensor<6x2xf32> -> tensor<2x4x6xf32>
    ```
  }];
  let options = [
    Option<"merge", "merge", "std::string", /*default=*/"\"auto\"",
           "auto, always or never: merge deltas into their weights">
  ];
}

def FusePass : Pass<"stlm-fuse", "::mlir::ModuleOp"> {
  let summary = "Folds a linear's GELU or residual add into the matmul";
  let description = [{
    A `stlm.linear` whose only use is a `stlm.gelu` becomes
    `stlm.linear_fused {activation = "gelu"}`; one (plain or with an
    activation) whose only use is a same-shape `stlm.add` becomes
    `stlm.linear_fused ... residual(%other)`; a same-shape `stlm.add` of a
    `stlm.linear_grad`'s `dx` (its only use) and a gradient computed before
    that op becomes the op's `addend` (`dx = dy · W + addend`); a
    `stlm.gelu_grad %h, %dx` of such a `dx` (its only use) becomes the op's
    `gelu_input(%h)` (`dx = (dy · W) ⊙ GELU'(h)`). The kernel
    then applies the epilogue to its register tiles. Run after `stlm-autodiff` (the fused op
    has no gradient rule): in `@grad` a GELU's input is also read by its
    gradient, so there only residual adds fuse. Linears of at most 16 rows
    (`kMatVecMaxRows`: a token of each sequence generated, computed by a
    matvec) are left alone.

    ```mlir
    %o = stlm.linear %a, %wo : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    %y = stlm.add %x, %o : tensor<2x4x8xf32>, tensor<2x4x8xf32>
    // becomes
    %y = stlm.linear_fused %a, %wo residual(%x : tensor<2x4x8xf32>) : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
    ```

    With `rope-into-attention` (`stlm-compile --target=cuda` asks for it
    on sm_80 and later unless `--fold-rope=off`), a `stlm.rope` pair
    without offsets
    whose results only an attention and its gradient read, as q and k, is
    folded into them: they
    take the unrotated q and k with `rope_theta`, and the `stlm.rope_grad`
    of their `dq` and `dk` (their only uses) go, since the fused gradient
    is already the unrotated one's. Only where the CUDA target runs that
    attention on tensor cores with bf16 operands (a `precision: bf16`
    model, heads a multiple of 16 up to 64 wide, at least 16 queries),
    whose kernels rotate rows as they load them: the rotated q and k never
    go through memory, and a training step loses two passes a layer. Those
    kernels rotate a k row once for every block of 64 queries that sees it
    (and the gradients' a q row once for every block of 64 keys), so
    `rope-fold-max-keys=64` (what `stlm-compile --target=cuda` asks for by
    default) folds only attention over at most 64 keys, where each row is
    rotated once.

    ```mlir
    %qr = stlm.rope %q {head_dim = 64 : i64, theta = 1.000000e+04 : f64} : tensor<2x64x128xf32>
    %kr = stlm.rope %k {head_dim = 64 : i64, theta = 1.000000e+04 : f64} : tensor<2x64x128xf32>
    %y = stlm.attention causal %qr, %kr, %v {heads = 2 : i64, kv_heads = 2 : i64} : ...
    // becomes
    %y = stlm.attention causal %q, %k, %v {heads = 2 : i64, kv_heads = 2 : i64, rope_theta = 1.000000e+04 : f64} : ...
    ```
  }];
  let options = [
    Option<"ropeIntoAttention", "rope-into-attention", "bool",
           /*default=*/"false",
           "Fold RoPE into the bf16 tensor-core attention that reads it "
           "(the CUDA target)">,
    Option<"ropeFoldMaxKeys", "rope-fold-max-keys", "int64_t",
           /*default=*/"0",
           "With rope-into-attention: fold only attention over at most "
           "this many keys (0: any)">
  ];
}

def PlanMemoryPass : Pass<"stlm-plan-memory", "::mlir::ModuleOp"> {
  let summary = "Places every tensor of straight-line functions in one static arena";
  let description = [{
    For each `stlm.model`:

    - **Weights.** Every `stlm.param` and `stlm.state` gets a 64-byte
      aligned slot in the weights region (`stlm.offset` on the declaration,
      `stlm.weights_size` on the model). A tied or shared parameter is one
      symbol, so it has one slot whatever the number of its uses.
    - **Activations.** In every function whose body is straight-line code
      (no `stlm.repeat`, no calls — e.g. `@grad` after `stlm-autodiff`),
      every tensor an op produces gets an offset in one arena
      (`stlm.offsets` on the op, one per result, `-1` where none is
      needed; `stlm.arena_size` on the function). Two values share bytes
      only if their lifetimes (definition to last use) do not overlap.
      Reads of parameters and state alias their weight slot — unless the
      symbol is assigned while the read is still in use, in which case the
      read gets bytes of its own and the `stlm.snapshot` mark (the lowering
      copies the weight there); reshapes
      (`stlm.split_slots`, `stlm.merge_slots`) alias their input; function
      arguments belong to the caller; returned values live to the end.
      Placement is greedy by size, largest first, at the lowest 64-byte
      aligned offset that does not collide.

    Functions that are not straight-line (with calls or `stlm.repeat`:
    `@train_step`, `@accumulate`, `@eval`, `@logits`) are left without a
    plan; the lowering inlines or unrolls them first.
  }];
}

#endif // STLM_PASSES_TD
