//===- STLMOps.td - stlm operations -------------------------*- tablegen -*-===//
//
// Every op states its exact math and shapes. Dimension letters: B batch,
// T time, S key positions, C chunks, L bytes per chunk, D width, H heads,
// K kv heads, V vocabulary, F FFN width, R LoRA rank; `...` is any number of
// leading (batch) dimensions.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_OPS_TD
#define STLM_OPS_TD

include "dialects/STLM/IR/STLMDialect.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

//===----------------------------------------------------------------------===//
// Model structure
//===----------------------------------------------------------------------===//

def STLM_ModelOp : STLM_Op<"model", [
    Symbol, SymbolTable, IsolatedFromAbove, NoTerminator, SingleBlock,
    NoRegionArguments]> {
  let summary = "a model: its parameters and the functions that use them";
  let description = [{
    Owns the model's parameters (`stlm.param`) and the functions
    (`func.func`) that compute with them. The body holds nothing else. The
    model is a symbol table, so parameter and function names are unique
    within it and `stlm.param_ref` resolves against it.

    Attributes other than the name (for example the model spec the frontend
    built it from) are kept in the attribute dictionary. `stlm.train`, when
    present, is the training settings, checked by the verifier: a
    dictionary whose keys are `batch`, `steps`, `warmup`, `accumulate`
    (>= 1) and `seed` (integers), `lr`, `min_lr`, `beta1`, `beta2`, `eps`,
    `weight_decay` and `grad_clip` (numbers), `schedule` (`"cosine"` or
    `"constant"`) and `precision` (`"fp32"` or `"bf16"`); a key left out
    takes MODEL_SPEC's default, as a spec's does. `stlm-autodiff` builds
    the training step from them. One of them
    changes the math of its matmuls: when `stlm.train` holds
    `precision = "bf16"`, every operand of `stlm.linear`, `linear_fused`,
    `logits`, `linear_grad` and `lowrank` (and its gradient, as two matmuls
    whose intermediate is rounded too) is first rounded to bfloat16 (nearest
    even); products and sums stay fp32.

    ```mlir
    stlm.model @tiny {
      stlm.param @embed.tok : tensor<256x64xf32> = normal(2.000000e-02)
      func.func @logits(%ids: tensor<2x8xi32>) -> tensor<2x8x256xf32> {
        %e = stlm.param_ref @embed.tok : tensor<256x64xf32>
        %x = stlm.embed %e[%ids] : tensor<256x64xf32>, tensor<2x8xi32> -> tensor<2x8x64xf32>
        %l = stlm.logits %x, %e : tensor<2x8x64xf32>, tensor<256x64xf32> -> tensor<2x8x256xf32>
        return %l : tensor<2x8x256xf32>
      }
    }
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The parameters of the model, in declaration order.
    auto getParams() { return getBody().front().getOps<ParamOp>(); }
  }];
}

def STLM_ParamOp : STLM_Op<"param", [Symbol, HasParent<"ModelOp">]> {
  let summary = "declares one trainable tensor of the model";
  let description = [{
    Declares a parameter: its name (the checkpoint tensor name, e.g.
    `layers.3.wq`), its shape and element type, and its initialisation:

    - `normal(s)`: every element drawn from `N(0, s²)`, `s > 0`, with the
      deterministic per-tensor generator of `frontend/Weights.h` (keyed by
      the seed and the parameter name);
    - `zeros`: all 0 (LoRA `b`);
    - `ones`: all 1 (norm gains).

    A parameter is stored once, whatever the number of its uses; the gradient
    of a parameter is the sum of the gradients of all its uses. Weight decay
    applies to parameters of rank ≥ 2 only.

    ```mlir
    stlm.param @layers.0.wq : tensor<128x128xf32> = normal(2.000000e-02)
    stlm.param @norm : tensor<128xf32> = ones
    ```

    After `stlm-quantize`, a quantized weight is an `i8` (int8 values) or
    `ui8` (int4 pairs) parameter beside its f32 `.scale` parameter;
    both are declared `zeros` (a quantized model is loaded, never
    initialised).
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<STLM_ParamTensor>:$type,
                       STLM_InitKind:$init,
                       OptionalAttr<F64Attr>:$std);
  let assemblyFormat = [{
    $sym_name `:` $type `=` $init (`(` $std^ `)`)? attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    RankedTensorType getTensorType() {
      return ::llvm::cast<RankedTensorType>(getType());
    }
    /// Number of scalar elements.
    int64_t getNumElements() { return getTensorType().getNumElements(); }
  }];
}

def STLM_ParamRefOp : STLM_Op<"param_ref", [
    MemoryEffects<[MemRead]>, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "reads a parameter of the enclosing model";
  let description = [{
    The current value of parameter `@name` of the enclosing `stlm.model`.
    The result type must equal the declared type. Every use of a tied
    parameter is one `stlm.param_ref` of the same symbol. It reads memory
    (a later `stlm.assign` may change the parameter), so two reads are only
    merged when no write lies between them.

    ```mlir
    %w = stlm.param_ref @shared.w1 : tensor<512x128xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs STLM_ParamTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def STLM_StateOp : STLM_Op<"state", [Symbol, HasParent<"ModelOp">]> {
  let summary = "declares a persistent, non-trainable tensor of the model";
  let description = [{
    Training state that lives beside the parameters but is not trained:
    the AdamW moments `opt.m.<param>` / `opt.v.<param>` and the update
    counter `step`. Starts at zero. Read with `stlm.state_ref`, written
    with `stlm.assign`; checkpoints store it next to the parameters.

    ```mlir
    stlm.state @opt.m.embed.tok : tensor<256x128xf32>
    stlm.state @step : tensor<i32>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<STLM_StateTensor>:$type);
  let assemblyFormat = "$sym_name `:` $type attr-dict";
}

def STLM_StateRefOp : STLM_Op<"state_ref", [
    MemoryEffects<[MemRead]>, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "reads a state tensor of the enclosing model";
  let description = [{
    The current value of `stlm.state @name`; the result type must equal
    the declared type. Not differentiated.

    ```mlir
    %t = stlm.state_ref @step : tensor<i32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs STLM_StateTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def STLM_AssignOp : STLM_Op<"assign", [
    MemoryEffects<[MemWrite]>, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "writes a new value to a parameter or state tensor";
  let description = [{
    Replaces the value of `stlm.param` or `stlm.state` `@name` with
    `value` (of the declared type). Later reads see the new value. This is
    how a training step commits its update.

    ```mlir
    stlm.assign @layers.0.wq, %new : tensor<128x128xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name, STLM_StateTensor:$value);
  let assemblyFormat = "$name `,` $value attr-dict `:` type($value)";
}

def STLM_LayerParamRefOp : STLM_Op<"layer_param_ref", [Pure]> {
  let summary = "reads the current layer's instance of a per-layer parameter";
  let description = [{
    Inside the body of a `stlm.repeat`, reads the parameter whose name is
    `pattern` with its single `{}` replaced by the decimal layer index
    `layer` (the repeat's induction variable). For a repeat over layers
    `[lo, hi)` every instance `pattern[lo] … pattern[hi-1]` must be declared
    in the enclosing model with the result type, so the body is well typed
    in every iteration.

    ```mlir
    %a = stlm.layer_param_ref "layers.{}.lora.w1.a"[%l] : tensor<8x128xf32>
    ```
  }];
  let arguments = (ins StrAttr:$pattern, Index:$layer);
  let results = (outs STLM_ParamTensor:$result);
  let assemblyFormat = "$pattern `[` $layer `]` attr-dict `:` type($result)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The parameter name for layer `index` (pattern with `{}` replaced).
    std::string getNameForLayer(int64_t index);
  }];
}

def STLM_RepeatOp : STLM_Op<"repeat", [
    SingleBlock, RecursiveMemoryEffects,
    AllTypesMatch<["init", "result"]>]> {
  let summary = "a run of layers sharing one block body";
  let description = [{
    Applies the body once per layer `l = lower, …, upper-1`, threading the
    hidden state: `h_lower = init`, `h_{l+1} = body(l, h_l)`, result
    `h_upper`. The body's arguments are the layer index (`index`) and the
    hidden state; it ends in `stlm.yield` of the next state.

    Parameters read with `stlm.param_ref` in the body are shared by all the
    layers of the run (one copy in memory, gradients summed over the
    iterations); parameters read with `stlm.layer_param_ref` are per layer.
    A run with no per-layer parameters lowers to a loop over one block body.

    ```mlir
    %y = stlm.repeat 1 to 3 (%x) : tensor<2x8x64xf32> {
    ^bb0(%l: index, %h: tensor<2x8x64xf32>):
      %w = stlm.param_ref @shared.w1 : tensor<64x64xf32>
      %f = stlm.linear %h, %w : tensor<2x8x64xf32>, tensor<64x64xf32> -> tensor<2x8x64xf32>
      %n = stlm.add %h, %f : tensor<2x8x64xf32>, tensor<2x8x64xf32>
      stlm.yield %n : tensor<2x8x64xf32>
    }
    ```
  }];
  let arguments = (ins STLM_I64Attr:$lower, STLM_I64Attr:$upper, STLM_Tensor:$init);
  let results = (outs STLM_Tensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $lower `to` $upper ` ` `(` $init `)` attr-dict `:` type($init) $body
  }];
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    int64_t getNumLayers() { return getUpper() - getLower(); }
    Value getLayerIndex() { return getBody().front().getArgument(0); }
    Value getHidden() { return getBody().front().getArgument(1); }
  }];
}

def STLM_YieldOp : STLM_Op<"yield", [
    Pure, Terminator, ReturnLike, HasParent<"RepeatOp">]> {
  let summary = "ends a `stlm.repeat` body with the next hidden state";
  let description = [{
    Returns the hidden state after one layer; its type is the repeat's
    hidden-state type.
  }];
  let arguments = (ins STLM_Tensor:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Embedders
//===----------------------------------------------------------------------===//

def STLM_EmbedOp : STLM_Op<"embed", [Pure]> {
  let summary = "table lookup: token or byte embedding";
  let description = [{
    `table: [V, D]`, `ids: [...] i32` → `result: [..., D]` with
    `result[i…, d] = table[ids[i…], d]`. Ids must lie in `[0, V)` (checked
    by the runtime; out-of-range ids are an error, not a clamp). The
    gradient scatters-adds into the rows of `table`.

    Used for the token embedder (`embed.tok`, ids `[B, T]`) and for the
    bytes of chunks (`embed.bytes`, V = 258, ids `[B, C, L]`).

    ```mlir
    %x = stlm.embed %table[%ids] : tensor<256x128xf32>, tensor<12x64xi32> -> tensor<12x64x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$table, STLM_IdTensor:$ids);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` type($table) `,` type($ids) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_ChunkOp : STLM_Op<"chunk", [Pure]> {
  let summary = "groups a byte sequence into chunks of at most L bytes";
  let description = [{
    `bytes: [B, N] i32` (values 0–255; the value 256 ends a row early: it
    and every later value of the row are not chunked, so the last window
    of a text can be shorter than N) → `chunks: [B, C, L] i32`,
    `count: [B] i32`. Each row of `bytes` is cut into consecutive chunks;
    chunk `c` of row `b` holds its bytes in slots `0 …` and the pad byte
    256 in the slots after them. `count[b]` is the number of chunks filled;
    chunks `count[b] … C-1` are all pad. A new chunk starts at byte `i` when
    `i = 0`, when the current chunk already holds L bytes, or when the mode
    says so:

    - `fixed` (attribute `stride` = P, `1 ≤ P ≤ L`): every P bytes, so
      `C = ceil(N / P)` exactly;
    - `words`: before every ASCII byte that is not a letter or digit
      (whitespace, punctuation and control bytes; bytes ≥ 128 never start
      a chunk, so a UTF-8 character is never split by this rule); so a word
      keeps its leading space and long words are cut at L;
    - `given`: before every value `512 + v` of `bytes`, which is the byte
      `v` marked as a chunk start (`kStartFlag`), so an outside tokenizer
      (or `stlm-run entropy`) drives the chunks through the same one input
      as the other modes. The chunks hold `v`, never the flag.

    For `words` and `given`, C (≤ N) is a capacity: bytes after the C-th
    chunk are not used. Byte 257 (end of text) is never produced here.

    ```mlir
    %c, %n = stlm.chunk words %bytes : tensor<4x256xi32> -> tensor<4x64x12xi32>, tensor<4xi32>
    %c2, %n2 = stlm.chunk fixed %bytes {stride = 4 : i64} : tensor<4x256xi32> -> tensor<4x64x4xi32>, tensor<4xi32>
    %c3, %n3 = stlm.chunk given %marked : tensor<4x256xi32> -> tensor<4x64x12xi32>, tensor<4xi32>
    ```
  }];
  let arguments = (ins STLM_ChunkMode:$mode, STLM_IdTensor:$bytes,
                       OptionalAttr<STLM_I64Attr>:$stride);
  let results = (outs STLM_IdTensor:$chunks, STLM_IdTensor:$count);
  let assemblyFormat = [{
    $mode $bytes attr-dict `:` type($bytes) `->` type($chunks) `,` type($count)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The pad byte that fills unused chunk slots.
    static constexpr int32_t kPadByte = 256;
    /// The end-of-text byte.
    static constexpr int32_t kEndByte = 257;
    /// Added to a byte of `given` chunking's input: a chunk starts there.
    static constexpr int32_t kStartFlag = 512;
    /// Size of the byte vocabulary of chunked models (256 bytes, pad, end).
    static constexpr int64_t kByteVocab = 258;
  }];
}

def STLM_PoolOp : STLM_Op<"pool", [Pure]> {
  let summary = "pools the L slots of each chunk to one vector";
  let description = [{
    `x: [..., C, L, D]` → `result: [..., C, D]`, over the slot axis:

    - `mean`: `result[c] = (1/L) Σ_s x[c, s]` (all slots, pad included);
    - `masked_mean`: the mean over the slots whose byte in `ids`
      (`[..., C, L] i32`) is not the pad byte 256; a chunk with no byte
      gives 0;
    - `max`: `result[c, d] = max_s x[c, s, d]` (the gradient goes to the
      first maximal slot).

    `ids` is required by `masked_mean` and not allowed otherwise.

    ```mlir
    %p = stlm.pool mean %x : tensor<4x64x12x128xf32> -> tensor<4x64x128xf32>
    %q = stlm.pool masked_mean %x ids(%chunks) : tensor<4x64x12x128xf32>, tensor<4x64x12xi32> -> tensor<4x64x128xf32>
    ```
  }];
  let arguments = (ins STLM_PoolKind:$kind, STLM_Tensor:$x,
                       Optional<STLM_IdTensor>:$ids);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $kind $x (`ids` `(` $ids^ `)`)? attr-dict `:` type($x) (`,` type($ids)^)?
    `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Core layers
//===----------------------------------------------------------------------===//

def STLM_RMSNormOp : STLM_Op<"rmsnorm", [Pure, AllTypesMatch<["x", "result"]>]> {
  let summary = "RMS normalisation over the last dimension, with a gain";
  let description = [{
    `x: [..., D]`, `weight: [D]` → `[..., D]`:
    `y = x / sqrt(mean_d(x²) + eps) · weight`, computed in f32. `eps > 0`.

    ```mlir
    %y = stlm.rmsnorm %x, %g {eps = 1.000000e-06 : f64} : tensor<12x64x128xf32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$weight,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$x `,` $weight attr-dict `:` type($x) `,` type($weight)";
  let hasVerifier = 1;
}

def STLM_LinearOp : STLM_Op<"linear", [Pure]> {
  let summary = "linear map without bias (PyTorch nn.Linear layout)";
  let description = [{
    `x: [..., In]`, `weight: [Out, In]` → `[..., Out]`:
    `y[…, o] = Σ_i x[…, i] · weight[o, i]`, i.e. `y = x · weightᵀ`.

    ```mlir
    %q = stlm.linear %x, %wq : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$weight);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x `,` $weight attr-dict `:` type($x) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_QLinearOp : STLM_Op<"qlinear", [Pure]> {
  let summary = "linear map with a quantized weight (stlm-quantize)";
  let description = [{
    `x: [..., In]` (f32), `weight: [Out, In]` i8 (`int8`) or `[Out, In / 2]`
    ui8 (`int4`, two values a byte, the first in the low nibble, each
    stored as `q + 8`), `scale: [Out, In / group]` (f32) → `[..., Out]` (f32).
    With `W[o, k] = scale[o, k / group] · q[o, k]`, the result is
    `y ≈ x · Wᵀ`, computed as `support/Quantize.h` defines it: each row of
    `x` is quantized to int8 on the fly (one scale `s = max|x| / 127`),
    each group's integer dot product is summed exactly in int32, and the
    groups are added in order, `y[…, o] = Σ_g scale[o, g] · s · dot_g`.
    The kernels compute the same integers; the reference evaluator is that
    definition. Inside a `stlm.model`, `scheme` and `group` must be the
    model's `stlm.quantization`: the compiled artifact lays out its
    quantized parameters by that format (in the kernels' tiles where the
    weight's shape allows, `docs/kernels.md`).

    ```mlir
    %q = stlm.qlinear %x, %wq, %wq_scale {scheme = "int8", group = 32} : tensor<1x1x128xf32>, tensor<128x128xi8>, tensor<128x4xf32> -> tensor<1x1x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, StaticShapeTensorOf<[I8, UI8]>:$weight,
                       STLM_Tensor:$scale, StrAttr:$scheme,
                       STLM_I64Attr:$group);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x `,` $weight `,` $scale attr-dict `:` type($x) `,` type($weight) `,`
    type($scale) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_LinearFusedOp : STLM_Op<"linear_fused", [Pure]> {
  let summary = "a linear map with its epilogue: activation, then residual add";
  let description = [{
    `x: [..., In]`, `weight: [Out, In]`, optional `residual: [..., Out]` →
    `[..., Out]`: `y = act(x · weightᵀ) + residual`, with `act` the
    `activation` (`none` or `gelu`) and no add without a residual. Made by
    `stlm-fuse` from a `stlm.linear` whose only use is a `stlm.gelu` or a
    residual `stlm.add`, after differentiation (it has no gradient rule),
    so that the matmul kernel applies the epilogue to its register tiles
    instead of another pass over memory.

    ```mlir
    %x1 = stlm.linear_fused %a, %wo residual(%x : tensor<12x64x128xf32>) : tensor<12x64x128xf32>, tensor<128x128xf32> -> tensor<12x64x128xf32>
    %h = stlm.linear_fused %n, %w1 {activation = "gelu"} : tensor<12x64x128xf32>, tensor<512x128xf32> -> tensor<12x64x512xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$weight,
                       Optional<STLM_Tensor>:$residual,
                       DefaultValuedAttr<StrAttr, "\"none\"">:$activation);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x `,` $weight (`residual` `(` $residual^ `:` type($residual) `)`)?
    attr-dict `:` type($x) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_LowRankOp : STLM_Op<"lowrank", [Pure]> {
  let summary = "low-rank (LoRA) delta of a linear map";
  let description = [{
    `x: [..., In]`, `a: [R, In]`, `b: [Out, R]` → `[..., Out]`:
    `y = (x · aᵀ) · bᵀ`. Added (`stlm.add`) to the output of the shared
    weight it corrects, so an interior layer `l` computes
    `x · wᵀ + x · a_lᵀ · b_lᵀ` while `w` is stored once.

    ```mlir
    %d = stlm.lowrank %x, %a, %b : tensor<12x64x128xf32>, tensor<8x128xf32>, tensor<512x8xf32> -> tensor<12x64x512xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$a, STLM_Tensor:$b);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x `,` $a `,` $b attr-dict `:` type($x) `,` type($a) `,` type($b) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_LowRankMergeOp : STLM_Op<"lowrank_merge", [
    Pure, AllTypesMatch<["weight", "result"]>]> {
  let summary = "a shared weight with a LoRA delta merged in";
  let description = [{
    `weight: [Out, In]`, `a: [R, In]`, `b: [Out, R]` → `[Out, In]`:
    `weight + b · a`, so that `x · (weight + b · a)ᵀ` is
    `x · weightᵀ + stlm.lowrank(x, a, b)` as one matmul. Made by
    `stlm-decompose` where the rows of `x` outnumber what the merge costs,
    which also rewrites the backward with `stlm.lowrank_merge_grad` (the op
    itself has no gradient rule). With `precision: bf16` both products
    round the merged weight, not `weight` and the delta's operands apart.

    ```mlir
    %w1 = stlm.lowrank_merge %w, %a, %b : tensor<512x128xf32>, tensor<8x128xf32>, tensor<512x8xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$weight, STLM_Tensor:$a, STLM_Tensor:$b);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $weight `,` $a `,` $b attr-dict `:` type($weight) `,` type($a) `,` type($b)
  }];
  let hasVerifier = 1;
}

def STLM_RoPEOp : STLM_Op<"rope", [Pure, AllTypesMatch<["x", "result"]>]> {
  let summary = "rotary position embedding on adjacent pairs";
  let description = [{
    `x: [..., T, H·hd]` (heads side by side, `hd = head_dim`, even) →
    same shape. For each head, row `t` (absolute position
    `p = t + offset`, `offset` the optional 0-d `i32` operand, default 0)
    and pair `i < hd/2`, with `θ_i = theta^(-2i/hd)`:

    ```
    (a, b) = (x[t, 2i], x[t, 2i+1])
    y[t, 2i]   = a·cos(p·θ_i) − b·sin(p·θ_i)
    y[t, 2i+1] = a·sin(p·θ_i) + b·cos(p·θ_i)
    ```

    ```mlir
    %r = stlm.rope %q {head_dim = 32 : i64, theta = 1.000000e+04 : f64} : tensor<12x64x128xf32>
    %s = stlm.rope %q offset(%pos) {head_dim = 32 : i64} : tensor<1x1x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, Optional<STLM_IntScalar>:$offset,
                       STLM_I64Attr:$head_dim,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x (`offset` `(` $offset^ `)`)? attr-dict `:` type($x)
  }];
  let hasVerifier = 1;
}

def STLM_AttentionOp : STLM_Op<"attention", [Pure]> {
  let summary = "multi-head scaled dot-product attention with grouped KV heads";
  let description = [{
    `q: [..., T, H·hd]`, `k, v: [..., S, K·hd]` → `[..., T, H·hd]`, with
    `H = heads`, `K = kv_heads`, `K` dividing `H`, and the same leading
    dimensions on all three. Query head `h` uses kv head
    `j = h / (H/K)`. For each head:

    ```
    s[t, u] = q_h[t] · k_j[u] / sqrt(hd) + m[t, u]
    y_h[t]  = Σ_u softmax_u(s[t, :])[u] · v_j[u]
    ```

    `mask = causal`: `m[t, u] = 0` if `u ≤ t + o` else −∞, where `o` is
    the optional 0-d `offset` operand (the position of the first query
    among the keys) and defaults to `S − T`. So with `S = T` a token sees
    itself and the past; with a KV cache of capacity S holding `o + T`
    filled positions, the T new queries see exactly the filled ones.
    Without `offset`, `S ≥ T` is required.
    `mask = none`: `m = 0` (bidirectional, used inside chunks); takes no
    `offset`.

    With `rope_theta` (set by `stlm-fuse` for the CUDA target's bf16
    attention, `stlm-compile --fold-rope`: by default over at most 64
    keys), `q` and `k` are rotated first,
    as `stlm.rope` without an offset and with that `theta` and
    `head_dim = hd` rotates them: queries at positions `0 … T−1`, keys at
    `0 … S−1`. The kernel rotates the rows as it loads them, so the rotated
    tensors never go through memory. It takes no `offset` and needs an even
    `hd`.

    ```mlir
    %o = stlm.attention causal %q, %k, %v {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<12x64x128xf32>, tensor<12x64x64xf32>, tensor<12x64x64xf32> -> tensor<12x64x128xf32>
    // One new token against a 256-slot KV cache of which %pos + 1 are filled.
    %g = stlm.attention causal %q1, %kc, %vc offset(%pos) {heads = 4 : i64, kv_heads = 2 : i64}
        : tensor<1x1x128xf32>, tensor<1x256x64xf32>, tensor<1x256x64xf32> -> tensor<1x1x128xf32>
    ```
  }];
  let arguments = (ins STLM_MaskKind:$mask, STLM_Tensor:$q, STLM_Tensor:$k,
                       STLM_Tensor:$v, Optional<STLM_IntScalar>:$offset,
                       STLM_I64Attr:$heads, STLM_I64Attr:$kv_heads,
                       OptionalAttr<F64Attr>:$rope_theta);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $mask $q `,` $k `,` $v (`offset` `(` $offset^ `)`)? attr-dict `:`
    type($q) `,` type($k) `,` type($v) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_SwiGLUOp : STLM_Op<"swiglu", [Pure, SameOperandsAndResultType]> {
  let summary = "SwiGLU gate: silu(gate) ⊙ up";
  let description = [{
    Elementwise `y = silu(gate) · up` with `silu(z) = z / (1 + e^{−z})`;
    the FFN is `w2(swiglu(w1 x, w3 x))`.

    ```mlir
    %h = stlm.swiglu %g, %u : tensor<12x64x512xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$gate, STLM_Tensor:$up);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($result)";
}

def STLM_GELUOp : STLM_Op<"gelu", [Pure, SameOperandsAndResultType]> {
  let summary = "GELU, exact erf form";
  let description = [{
    Elementwise `y = x · ½ · (1 + erf(x / √2))`; the FFN is
    `w2(gelu(w1 x))`.

    ```mlir
    %h = stlm.gelu %x : tensor<16x256x1024xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($result)";
}

def STLM_AddOp : STLM_Op<"add", [Pure, AllTypesMatch<["lhs", "result"]>]> {
  let summary = "elementwise add with trailing broadcast (residuals, positions)";
  let description = [{
    `lhs: [..., X]`, `rhs: X` where the shape of `rhs` is a suffix of the
    shape of `lhs` → `[..., X]`: `y[i…, j…] = lhs[i…, j…] + rhs[j…]`.
    With equal shapes it is the residual add; with `rhs: [L, D]` on
    `lhs: [B, C, L, D]` it adds learned slot positions.

    ```mlir
    %y = stlm.add %x, %f : tensor<12x64x128xf32>, tensor<12x64x128xf32>
    %z = stlm.add %e, %slots : tensor<4x64x12x128xf32>, tensor<12x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$lhs, STLM_Tensor:$rhs);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs)";
  let hasVerifier = 1;
}

def STLM_WriteRowsOp : STLM_Op<"write_rows", [Pure, AllTypesMatch<["cache", "result"]>]> {
  let summary = "a KV cache with some rows replaced (generation)";
  let description = [{
    `cache: [..., S, W]`, `rows: [..., N, W]` (same leading dimensions,
    `N ≤ S`), `offset`: 0-d `i32` → `[..., S, W]`: the cache with rows
    `offset … offset + N − 1` of its second-to-last dimension replaced by
    `rows`, the others unchanged. `offset + N > S` or a negative offset is
    an error at run time. `stlm-add-decode` uses it to append the keys and
    values of new tokens to the per-layer caches (`stlm.state @kv.*`),
    assigning the result back; compiled, the write happens in place.

    ```mlir
    %kc = stlm.state_ref @kv.0.k : tensor<1x64x128xf32>
    %k2 = stlm.write_rows %kc, %k offset(%pos) : tensor<1x64x128xf32>, tensor<1x1x128xf32>
    stlm.assign @kv.0.k, %k2 : tensor<1x64x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$cache, STLM_Tensor:$rows,
                       STLM_IntScalar:$offset);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $cache `,` $rows `offset` `(` $offset `)` attr-dict `:` type($cache) `,` type($rows)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Chunk decoder and head
//===----------------------------------------------------------------------===//

def STLM_SplitSlotsOp : STLM_Op<"split_slots", [Pure]> {
  let summary = "reshapes a projected chunk vector into L slot vectors";
  let description = [{
    `x: [..., L·E]` → `[..., L, E]` (row-major: slot `s` is elements
    `s·E … s·E+E−1`). The chunk decoder projects the core output with
    `head.proj` (`[L·d_b, D]`) and splits it into the L byte slots of the
    next chunk before adding `head.slots`.

    ```mlir
    %s = stlm.split_slots %p : tensor<4x64x1536xf32> -> tensor<4x64x12x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def STLM_LogitsOp : STLM_Op<"logits", [Pure]> {
  let summary = "output head: scores over the vocabulary";
  let description = [{
    `x: [..., D]`, `table: [V, D]` → `[..., V]`:
    `logits[…, v] = Σ_d x[…, d] · table[v, d]`. `table` is `head`, or
    `embed.tok` when the head is tied to the embedding (the same symbol,
    read twice), or `head.out` (V = 258) in the chunk decoder.

    ```mlir
    %l = stlm.logits %x, %e : tensor<12x64x128xf32>, tensor<256x128xf32> -> tensor<12x64x256xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$table);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = [{
    $x `,` $table attr-dict `:` type($x) `,` type($table) `->` type($result)
  }];
  let hasVerifier = 1;
}

def STLM_MaskTokensOp : STLM_Op<"mask_tokens", [
    Pure, AllTypesMatch<["ids", "masked"]>]> {
  let summary = "masks a random fraction of input ids (masked prediction)";
  let description = [{
    `ids: [B, T] i32`, `seed: i32` → `masked: [B, T] i32`,
    `mask: [B, T] i1`. With `n = b·T + t`, the seed read as an unsigned
    32-bit value `s`, and the uniform variate in `[0, 1)`

    ```
    u(s, n)       = (splitmix64(s · 2³² + n) >> 40) · 2⁻²⁴      (64-bit unsigned)
    splitmix64(x) = z ^ (z >> 31), where x' = x + 0x9e3779b97f4a7c15,
                    y = (x' ^ (x' >> 30)) · 0xbf58476d1ce4e5b9,
                    z = (y ^ (y >> 27)) · 0x94d049bb133111eb
    ```

    `mask[b, t] = u < prob`, `masked[b, t] = mask ? mask_id : ids[b, t]`.
    `0 < prob < 1`, `mask_id ≥ 0` (and below the vocabulary of the table
    the masked ids are looked up in). Not differentiable.

    ```mlir
    %m, %k = stlm.mask_tokens %ids, %seed {prob = 1.500000e-01 : f64, mask_id = 0 : i64}
        : tensor<12x64xi32> -> tensor<12x64xi1>
    ```
  }];
  let arguments = (ins STLM_IdTensor:$ids, STLM_IntScalar:$seed,
                       F64Attr:$prob, STLM_I64Attr:$mask_id);
  let results = (outs STLM_IdTensor:$masked, STLM_MaskTensor:$mask);
  let assemblyFormat = [{
    $ids `,` $seed attr-dict `:` type($ids) `->` type($mask)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Objectives
//===----------------------------------------------------------------------===//

def STLM_NextTokenLossOp : STLM_Op<"next_token_loss", [Pure]> {
  let summary = "next-token cross-entropy, mean in nats";
  let description = [{
    `logits: [B, T, V]`, `targets: [B, T] i32` (already shifted: the target
    of position `t` is input `t+1`) → `f32`:
    `loss = −(1/(B·T)) Σ_{b,t} log softmax(logits[b, t])[targets[b, t]]`.

    ```mlir
    %loss = stlm.next_token_loss %l, %y : tensor<12x64x256xf32>, tensor<12x64xi32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$targets);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = "$logits `,` $targets attr-dict `:` type($logits) `,` type($targets)";
  let hasVerifier = 1;
}

def STLM_ChunkBytesLossOp : STLM_Op<"chunk_bytes_loss", [Pure]> {
  let summary = "next-chunk byte cross-entropy, mean in nats";
  let description = [{
    `logits: [B, C, L, 258]` (the decoder output at chunk `c` predicts the
    L bytes of chunk `c+1`), `chunks: [B, C, L] i32`, optional
    `count: [B] i32` (from `stlm.chunk`) → `f32`. The counted targets are
    `(b, c, s)` with `c + 1 < count[b]` (`c < C − 1` without `count`);
    with `mask_pad` set, only the targets `chunks[b, c+1, s]` that are
    real bytes or the chunk's end marker (the first pad byte 256 after its
    bytes, at `s > 0`; a full chunk has none) count:
    `loss = −mean over counted (b,c,s) of
    log softmax(logits[b, c, s])[chunks[b, c+1, s]]`; 0 (with gradient 0)
    if none is counted. Pass `count` so that the all-pad chunks after the
    last real one are not targets.

    ```mlir
    %loss = stlm.chunk_bytes_loss %l, %c count(%n) {mask_pad = true} : tensor<4x64x12x258xf32>, tensor<4x64x12xi32>, tensor<4xi32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$chunks,
                       Optional<STLM_IdTensor>:$count,
                       DefaultValuedAttr<BoolAttr, "false">:$mask_pad);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $chunks (`count` `(` $count^ `)`)? attr-dict `:`
    type($logits) `,` type($chunks) (`,` type($count)^)?
  }];
  let hasVerifier = 1;
}

def STLM_ReconstructionLossOp : STLM_Op<"reconstruction_loss", [Pure]> {
  let summary = "reconstruction cross-entropy of the current chunk, mean in nats";
  let description = [{
    `logits: [B, C, L, 258]` (decoded from the encoder output of chunk `c`
    itself), `chunks: [B, C, L] i32`, optional `count: [B] i32` → `f32`:
    like `stlm.chunk_bytes_loss` but the target of `(b, c, s)` is
    `chunks[b, c, s]` and the counted chunks are `c < count[b]` (all `C`
    without `count`), with `mask_pad` only real bytes and end markers.

    ```mlir
    %loss = stlm.reconstruction_loss %l, %c count(%n) : tensor<4x64x12x258xf32>, tensor<4x64x12xi32>, tensor<4xi32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$chunks,
                       Optional<STLM_IdTensor>:$count,
                       DefaultValuedAttr<BoolAttr, "false">:$mask_pad);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $chunks (`count` `(` $count^ `)`)? attr-dict `:`
    type($logits) `,` type($chunks) (`,` type($count)^)?
  }];
  let hasVerifier = 1;
}

def STLM_MaskedNextTokenLossOp : STLM_Op<"masked_next_token_loss", [Pure]> {
  let summary = "cross-entropy on masked positions only, mean in nats";
  let description = [{
    `logits: [B, T, V]`, `targets: [B, T] i32`, `mask: [B, T] i1` → `f32`:
    the mean of `−log softmax(logits[b, t])[targets[b, t]]` over the
    positions where `mask[b, t]` is true; 0 when no position is masked.
    The mask comes from `stlm.mask_tokens`.

    ```mlir
    %loss = stlm.masked_next_token_loss %l, %y, %m : tensor<12x64x256xf32>, tensor<12x64xi32>, tensor<12x64xi1>
    ```
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$targets,
                       STLM_MaskTensor:$mask);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $targets `,` $mask attr-dict `:` type($logits) `,` type($targets) `,` type($mask)
  }];
  let hasVerifier = 1;
}

def STLM_DistillLossOp : STLM_Op<"distill_loss", [Pure]> {
  let summary = "distillation: temperature-scaled KL to a teacher mixed with hard CE";
  let description = [{
    `logits, teacher: [B, T, V]`, `targets: [B, T] i32` → `f32`. With
    `τ = temperature > 0`, `α = alpha ∈ [0, 1]`, `p = softmax(teacher/τ)`,
    `q = softmax(logits/τ)`, means over the B·T positions:

    ```
    loss = α · τ² · mean KL(p ‖ q) + (1 − α) · mean CE(logits, targets)
    KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)      (terms with p_v = 0 are 0)
    ```

    The teacher logits receive no gradient: the frontend computes them with
    `@teacher_logits`, the teacher's forward pass over its frozen weights
    (the states `teacher.<name>`, loaded from its checkpoint).

    ```mlir
    %loss = stlm.distill_loss %l, %t, %y {temperature = 2.000000e+00 : f64, alpha = 5.000000e-01 : f64}
        : tensor<12x64x256xf32>, tensor<12x64x256xf32>, tensor<12x64xi32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_Tensor:$teacher,
                       STLM_IdTensor:$targets, F64Attr:$temperature,
                       F64Attr:$alpha);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = [{
    $logits `,` $teacher `,` $targets attr-dict `:` type($logits) `,` type($teacher) `,` type($targets)
  }];
  let hasVerifier = 1;
}

def STLM_WeightedSumOp : STLM_Op<"weighted_sum", [Pure]> {
  let summary = "one loss from several objectives";
  let description = [{
    `terms: f32…` → `f32`: `loss = Σ_i weights[i] · terms[i]`. One weight
    per term, each finite and ≥ 0. Canonicalization drops zero-weight terms
    and folds a single term of weight 1 to the term itself.

    ```mlir
    %loss = stlm.weighted_sum %a, %b {weights = [1.000000e+00, 5.000000e-01]} : tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins Variadic<STLM_Scalar>:$terms, F64ArrayAttr:$weights);
  let results = (outs STLM_Scalar:$loss);
  let assemblyFormat = "$terms attr-dict `:` type($terms)";
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

def STLM_AdamWOp : STLM_Op<"adamw", [
    Pure, AllTypesMatch<["param", "grad", "m", "v", "new_param", "new_m", "new_v"]>]> {
  let summary = "one AdamW update of a parameter and its moments";
  let description = [{
    `param, grad, m, v: X`, `lr: f32`, `step: i32` (1-based count of this
    update) → `new_param, new_m, new_v: X`. With `β1, β2 ∈ [0, 1)`,
    `eps > 0`, `wd = weight_decay ≥ 0`, `t = step`:

    ```
    m' = β1·m + (1 − β1)·g
    v' = β2·v + (1 − β2)·g²
    p' = p·(1 − lr·wd) − lr · (m' / (1 − β1^t)) / (sqrt(v' / (1 − β2^t)) + eps)
    ```

    (decoupled decay, as PyTorch's AdamW). Weight decay applies to matrices
    only: `weight_decay` must be 0 for a parameter of rank < 2.

    ```mlir
    %p2, %m2, %v2 = stlm.adamw %p, %g, %m, %v, %lr, %t
        {beta1 = 9.000000e-01 : f64, beta2 = 9.900000e-01 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-01 : f64}
        : tensor<128x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$param, STLM_Tensor:$grad, STLM_Tensor:$m,
                       STLM_Tensor:$v, STLM_Scalar:$lr, STLM_IntScalar:$step,
                       F64Attr:$beta1, F64Attr:$beta2, F64Attr:$eps,
                       F64Attr:$weight_decay);
  let results = (outs STLM_Tensor:$new_param, STLM_Tensor:$new_m,
                      STLM_Tensor:$new_v);
  let assemblyFormat = [{
    $param `,` $grad `,` $m `,` $v `,` $lr `,` $step attr-dict `:` type($param)
  }];
  let hasVerifier = 1;
}

def STLM_ClipGradNormOp : STLM_Op<"clip_grad_norm", [
    Pure, RangedTypesMatchWith<"clipped gradients have the gradients' types",
                               "grads", "clipped", "$_self">]> {
  let summary = "global L2-norm gradient clipping";
  let description = [{
    `grads: X_i…` → `clipped: X_i…`, `norm: f32`:

    ```
    norm      = sqrt(Σ_i Σ_j grads_i[j]²)
    scale     = min(1, max_norm / (norm + 1e-6))
    clipped_i = scale · grads_i
    ```

    (PyTorch's `clip_grad_norm_`). `max_norm = 0` disables clipping:
    `clipped_i = grads_i`, and canonicalization forwards the gradients and
    removes the op when its norm is unused.

    ```mlir
    %c:2, %n = stlm.clip_grad_norm %g0, %g1 {max_norm = 1.000000e+00 : f64} : tensor<128x128xf32>, tensor<128xf32>
    ```
  }];
  let arguments = (ins Variadic<STLM_Tensor>:$grads, F64Attr:$max_norm);
  let results = (outs Variadic<STLM_Tensor>:$clipped, STLM_Scalar:$norm);
  let assemblyFormat = "$grads attr-dict `:` type($grads)";
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
}

def STLM_LRScheduleOp : STLM_Op<"lr_schedule", [Pure]> {
  let summary = "learning rate at a step: linear warmup then cosine or constant";
  let description = [{
    `step: i32` (0-based) → `f32`. With `W = warmup`, `N = total`:

    ```
    step < W : lr · (step + 1) / W
    constant : lr
    cosine   : min_lr + ½ (lr − min_lr) (1 + cos(π · min(1, (step − W) / max(1, N − W))))
    ```

    Requires `0 < lr`, `0 ≤ min_lr ≤ lr`, `0 ≤ W ≤ N`, `N > 0`. Folds to a
    constant when `step` is constant, and for `constant` without warmup.

    ```mlir
    %lr = stlm.lr_schedule cosine %step {lr = 1.000000e-03 : f64, min_lr = 1.000000e-04 : f64, warmup = 100 : i64, total = 2000 : i64}
    ```
  }];
  let arguments = (ins STLM_ScheduleKind:$kind, STLM_IntScalar:$step,
                       F64Attr:$lr, F64Attr:$min_lr, STLM_I64Attr:$warmup,
                       STLM_I64Attr:$total);
  let results = (outs STLM_Scalar:$result);
  let assemblyFormat = "$kind $step attr-dict";
  let hasVerifier = 1;
  let hasFolder = 1;
  let extraClassDeclaration = [{
    /// The schedule's value at `step` (the math above, in double).
    double valueAt(int64_t step);
  }];
}

//===----------------------------------------------------------------------===//
// Gradients
//
// One op per differentiable op, emitted by `stlm-autodiff`. Each takes the
// forward op's inputs and the gradient `dy` of its result and returns the
// gradients of its differentiable inputs, with the inputs' types. The math is
// the exact derivative of the forward op's.
//===----------------------------------------------------------------------===//

def STLM_EmbedGradOp : STLM_Op<"embed_grad", [Pure]> {
  let summary = "gradient of `stlm.embed` with respect to the table";
  let description = [{
    `ids: [...] i32`, `dy: [..., D]` → `dtable: [V, D]`:
    `dtable = 0; dtable[ids[i…], :] += dy[i…, :]` (scatter-add; a row read
    k times receives k contributions).
  }];
  let arguments = (ins STLM_IdTensor:$ids, STLM_Tensor:$dy);
  let results = (outs STLM_Tensor:$dtable);
  let assemblyFormat = [{
    $ids `,` $dy attr-dict `:` type($ids) `,` type($dy) `->` type($dtable)
  }];
  let hasVerifier = 1;
}

def STLM_PoolGradOp : STLM_Op<"pool_grad", [Pure, AllTypesMatch<["x", "dx"]>]> {
  let summary = "gradient of `stlm.pool`";
  let description = [{
    `x: [..., C, L, D]`, `dy: [..., C, D]` (and `ids` for `masked_mean`) →
    `dx`: `mean`: `dy / L` to every slot; `masked_mean`: `dy / n` to each of
    the n non-pad slots (0 when n = 0); `max`: `dy` to the first maximal
    slot of each feature, 0 elsewhere.
  }];
  let arguments = (ins STLM_PoolKind:$kind, STLM_Tensor:$x, STLM_Tensor:$dy,
                       Optional<STLM_IdTensor>:$ids);
  let results = (outs STLM_Tensor:$dx);
  let assemblyFormat = [{
    $kind $x `,` $dy (`ids` `(` $ids^ `)`)? attr-dict `:` type($x) `,` type($dy)
    (`,` type($ids)^)?
  }];
  let hasVerifier = 1;
}

def STLM_RMSNormGradOp : STLM_Op<"rmsnorm_grad", [
    Pure, AllTypesMatch<["x", "dy", "dx"]>, AllTypesMatch<["weight", "dweight"]>]> {
  let summary = "gradient of `stlm.rmsnorm`";
  let description = [{
    With `r = 1/sqrt(mean(x²) + eps)`, `n = x·r` per row of width D:
    `dweight = Σ_rows dy ⊙ n`,
    `dx = r · (dy⊙w − n · mean_d(dy⊙w⊙n))`.
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$weight, STLM_Tensor:$dy,
                       DefaultValuedAttr<F64Attr, "1.0e-6">:$eps);
  let results = (outs STLM_Tensor:$dx, STLM_Tensor:$dweight);
  let assemblyFormat = [{
    $x `,` $weight `,` $dy attr-dict `:` type($x) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def STLM_LinearGradOp : STLM_Op<"linear_grad", [
    Pure, AttrSizedOperandSegments, AllTypesMatch<["x", "dx"]>,
    AllTypesMatch<["weight", "dweight"]>]> {
  let summary = "gradient of `stlm.linear` and `stlm.logits`";
  let description = [{
    `x: [..., In]`, `weight: [Out, In]`, `dy: [..., Out]` →
    `dx = dy · weight` (`[..., In]`), `dweight = Σ_rows dyᵀ · x`
    (`[Out, In]`). `stlm-fuse` folds what follows `dx` into the matmul,
    with one of two optional operands of `x`'s type:
    - `addend`: `dx = dy · weight + addend` (the accumulation of a
      gradient that reaches `x` along several paths);
    - `gelu_input` `h`: `dx = (dy · weight) ⊙ (Φ(h) + h φ(h))`, the
      gradient of `x = gelu(h)` with respect to `h` (`stlm.gelu_grad`).

    ```mlir
    %dx, %dw = stlm.linear_grad %x, %w, %dy : tensor<12x64x128xf32>, tensor<512x128xf32>, tensor<12x64x512xf32>
    %dx2, %dw2 = stlm.linear_grad %x, %w, %dy addend(%g : tensor<12x64x128xf32>) : tensor<12x64x128xf32>, tensor<512x128xf32>, tensor<12x64x512xf32>
    %dh, %dw3 = stlm.linear_grad %x, %w, %dy gelu_input(%h : tensor<12x64x128xf32>) : tensor<12x64x128xf32>, tensor<512x128xf32>, tensor<12x64x512xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$weight, STLM_Tensor:$dy,
                       Optional<STLM_Tensor>:$addend,
                       Optional<STLM_Tensor>:$gelu_input);
  let results = (outs STLM_Tensor:$dx, STLM_Tensor:$dweight);
  let assemblyFormat = [{
    $x `,` $weight `,` $dy (`addend` `(` $addend^ `:` type($addend) `)`)?
    (`gelu_input` `(` $gelu_input^ `:` type($gelu_input) `)`)?
    attr-dict `:` type($x) `,` type($weight) `,` type($dy)
  }];
  let hasVerifier = 1;
}

def STLM_LowRankGradOp : STLM_Op<"lowrank_grad", [
    Pure, AllTypesMatch<["x", "dx"]>, AllTypesMatch<["a", "da"]>,
    AllTypesMatch<["b", "db"]>]> {
  let summary = "gradient of `stlm.lowrank`";
  let description = [{
    With `h = x · aᵀ` (`[..., R]`): `db = Σ_rows dyᵀ · h`,
    `dh = dy · b`, `da = Σ_rows dhᵀ · x`, `dx = dh · a`.
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$a, STLM_Tensor:$b,
                       STLM_Tensor:$dy);
  let results = (outs STLM_Tensor:$dx, STLM_Tensor:$da, STLM_Tensor:$db);
  let assemblyFormat = [{
    $x `,` $a `,` $b `,` $dy attr-dict `:` type($x) `,` type($a) `,` type($b)
    `,` type($dy)
  }];
  let hasVerifier = 1;
}

def STLM_LowRankMergeGradOp : STLM_Op<"lowrank_merge_grad", [
    Pure, AllTypesMatch<["a", "da"]>, AllTypesMatch<["b", "db"]>]> {
  let summary = "gradient of `stlm.lowrank_merge` with respect to a and b";
  let description = [{
    `dmerged: [Out, In]` (the gradient of the merged weight, `Σ_rows dyᵀ ·
    x` of its linear), `a: [R, In]`, `b: [Out, R]` → `da = bᵀ · dmerged`
    (`[R, In]`) and `db = dmerged · aᵀ` (`[Out, R]`); the shared weight's
    gradient is `dmerged` itself.

    ```mlir
    %da, %db = stlm.lowrank_merge_grad %dw, %a, %b : tensor<512x128xf32>, tensor<8x128xf32>, tensor<512x8xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$dmerged, STLM_Tensor:$a, STLM_Tensor:$b);
  let results = (outs STLM_Tensor:$da, STLM_Tensor:$db);
  let assemblyFormat = [{
    $dmerged `,` $a `,` $b attr-dict `:` type($dmerged) `,` type($a) `,`
    type($b)
  }];
  let hasVerifier = 1;
}

def STLM_RoPEGradOp : STLM_Op<"rope_grad", [Pure, AllTypesMatch<["dy", "dx"]>]> {
  let summary = "gradient of `stlm.rope`: the inverse rotation";
  let description = [{
    `dx` is `dy` rotated by `−p·θ_i` in each pair (the rotation is
    orthogonal), with the same `head_dim`, `theta` and `offset`.
  }];
  let arguments = (ins STLM_Tensor:$dy, Optional<STLM_IntScalar>:$offset,
                       STLM_I64Attr:$head_dim,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs STLM_Tensor:$dx);
  let assemblyFormat = [{
    $dy (`offset` `(` $offset^ `)`)? attr-dict `:` type($dy)
  }];
}

def STLM_AttentionGradOp : STLM_Op<"attention_grad", [
    Pure, AllTypesMatch<["q", "dq"]>, AllTypesMatch<["k", "dk"]>,
    AllTypesMatch<["v", "dv"]>]> {
  let summary = "gradient of `stlm.attention`";
  let description = [{
    With `P = softmax(s)` per query row as in the forward op:
    `dv_j[u] += Σ_t P[t,u] · dy_h[t]`, `dP[t,u] = dy_h[t] · v_j[u]`,
    `ds = P ⊙ (dP − Σ_u P ⊙ dP)`, `dq_h[t] = Σ_u ds[t,u] k_j[u] / sqrt(hd)`,
    `dk_j[u] += Σ_t ds[t,u] q_h[t] / sqrt(hd)`, summed over the query heads
    h that share kv head j. Same mask, heads and offset as the forward op.
    With `rope_theta`, as the forward op's: `q` and `k` are rotated first,
    and `dq` and `dk` are the gradients of the unrotated ones (the results
    above rotated back, as `stlm.rope_grad` does).
  }];
  let arguments = (ins STLM_MaskKind:$mask, STLM_Tensor:$q, STLM_Tensor:$k,
                       STLM_Tensor:$v, STLM_Tensor:$dy,
                       Optional<STLM_IntScalar>:$offset,
                       STLM_I64Attr:$heads, STLM_I64Attr:$kv_heads,
                       OptionalAttr<F64Attr>:$rope_theta);
  let results = (outs STLM_Tensor:$dq, STLM_Tensor:$dk, STLM_Tensor:$dv);
  let assemblyFormat = [{
    $mask $q `,` $k `,` $v `,` $dy (`offset` `(` $offset^ `)`)? attr-dict `:`
    type($q) `,` type($k) `,` type($v) `,` type($dy)
  }];
  let hasVerifier = 1;
}

def STLM_SwiGLUGradOp : STLM_Op<"swiglu_grad", [
    Pure, AllTypesMatch<["gate", "up", "dy", "dgate", "dup"]>]> {
  let summary = "gradient of `stlm.swiglu`";
  let description = [{
    With `σ = 1/(1+e^{−g})`: `dup = dy · g·σ`,
    `dgate = dy · up · σ · (1 + g·(1 − σ))`.
  }];
  let arguments = (ins STLM_Tensor:$gate, STLM_Tensor:$up, STLM_Tensor:$dy);
  let results = (outs STLM_Tensor:$dgate, STLM_Tensor:$dup);
  let assemblyFormat = "$gate `,` $up `,` $dy attr-dict `:` type($gate)";
}

def STLM_GELUGradOp : STLM_Op<"gelu_grad", [Pure, AllTypesMatch<["x", "dy", "dx"]>]> {
  let summary = "gradient of `stlm.gelu`";
  let description = [{
    `dx = dy · (Φ(x) + x·φ(x))` with `Φ` the standard normal CDF and `φ`
    its density.
  }];
  let arguments = (ins STLM_Tensor:$x, STLM_Tensor:$dy);
  let results = (outs STLM_Tensor:$dx);
  let assemblyFormat = "$x `,` $dy attr-dict `:` type($x)";
}

def STLM_SumLeadingOp : STLM_Op<"sum_leading", [Pure]> {
  let summary = "sums the leading dimensions away (gradient of a broadcast add)";
  let description = [{
    `x: [..., X]` → `X` (a suffix of x's shape):
    `y[j…] = Σ_{i…} x[i…, j…]`. The gradient of `stlm.add`'s broadcast
    operand.

    ```mlir
    %d = stlm.sum_leading %dy : tensor<4x64x12x128xf32> -> tensor<12x128xf32>
    ```
  }];
  let arguments = (ins STLM_Tensor:$x);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def STLM_MergeSlotsOp : STLM_Op<"merge_slots", [Pure]> {
  let summary = "inverse of `stlm.split_slots` (its gradient)";
  let description = [{
    `x: [..., L, E]` → `[..., L·E]`, row-major.
  }];
  let arguments = (ins STLM_Tensor:$x);
  let results = (outs STLM_Tensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def STLM_NextTokenLossGradOp : STLM_Op<"next_token_loss_grad", [
    Pure, AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "gradient of `stlm.next_token_loss`";
  let description = [{
    `dlogits[b,t] = dloss · (softmax(logits[b,t]) − onehot(targets[b,t])) / (B·T)`.
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$targets,
                       STLM_Scalar:$dloss);
  let results = (outs STLM_Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $targets `,` $dloss attr-dict `:` type($logits) `,` type($targets)
  }];
  let hasVerifier = 1;
}

def STLM_ChunkBytesLossGradOp : STLM_Op<"chunk_bytes_loss_grad", [
    Pure, AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "gradient of `stlm.chunk_bytes_loss`";
  let description = [{
    `dloss · (softmax − onehot(target)) / n` on each counted `(b, c, s)`
    (n of them; the counting rule of the forward op), 0 elsewhere.
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$chunks,
                       Optional<STLM_IdTensor>:$count, STLM_Scalar:$dloss,
                       DefaultValuedAttr<BoolAttr, "false">:$mask_pad);
  let results = (outs STLM_Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $chunks (`count` `(` $count^ `)`)? `,` $dloss attr-dict `:`
    type($logits) `,` type($chunks) (`,` type($count)^)?
  }];
  let hasVerifier = 1;
}

def STLM_ReconstructionLossGradOp : STLM_Op<"reconstruction_loss_grad", [
    Pure, AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "gradient of `stlm.reconstruction_loss`";
  let description = [{
    As `stlm.chunk_bytes_loss_grad` with the forward op's targets and
    counting rule.
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$chunks,
                       Optional<STLM_IdTensor>:$count, STLM_Scalar:$dloss,
                       DefaultValuedAttr<BoolAttr, "false">:$mask_pad);
  let results = (outs STLM_Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $chunks (`count` `(` $count^ `)`)? `,` $dloss attr-dict `:`
    type($logits) `,` type($chunks) (`,` type($count)^)?
  }];
  let hasVerifier = 1;
}

def STLM_MaskedNextTokenLossGradOp : STLM_Op<"masked_next_token_loss_grad", [
    Pure, AllTypesMatch<["logits", "dlogits"]>]> {
  let summary = "gradient of `stlm.masked_next_token_loss`";
  let description = [{
    `dloss · (softmax − onehot(target)) / n` on the n masked positions, 0
    elsewhere (all 0 when n = 0).
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_IdTensor:$targets,
                       STLM_MaskTensor:$mask, STLM_Scalar:$dloss);
  let results = (outs STLM_Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $targets `,` $mask `,` $dloss attr-dict `:` type($logits) `,`
    type($targets) `,` type($mask)
  }];
  let hasVerifier = 1;
}

def STLM_DistillLossGradOp : STLM_Op<"distill_loss_grad", [
    Pure, AllTypesMatch<["logits", "teacher", "dlogits"]>]> {
  let summary = "gradient of `stlm.distill_loss` (student logits only)";
  let description = [{
    Per position, with `p = softmax(teacher/τ)`, `q = softmax(logits/τ)`,
    `s = softmax(logits)`, P positions:
    `dlogits = dloss · (α·τ·(q − p) + (1 − α)·(s − onehot(target))) / P`.
  }];
  let arguments = (ins STLM_Tensor:$logits, STLM_Tensor:$teacher,
                       STLM_IdTensor:$targets, STLM_Scalar:$dloss,
                       F64Attr:$temperature, F64Attr:$alpha);
  let results = (outs STLM_Tensor:$dlogits);
  let assemblyFormat = [{
    $logits `,` $teacher `,` $targets `,` $dloss attr-dict `:` type($logits)
    `,` type($targets)
  }];
  let hasVerifier = 1;
}

#endif // STLM_OPS_TD
