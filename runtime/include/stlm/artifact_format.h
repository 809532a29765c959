//===- artifact_format.h - what writer, driver, runtime share -*- C++ -*-===//
//
// The one description of a compiled stlm artifact that its three parties
// share: the writer (codegen/artifact/ArtifactWriter, run by stlm-compile),
// the driver (codegen/driver, which emits the entry points) and the reader
// (the runtime, runtime/src/Runtime.cpp). Change the format here, and bump
// kManifestVersion (and STLM_ABI_VERSION in stlm.h when the descriptor or an
// entry point's signature changes).
//
// An artifact is a directory holding
//   lib<name>.a, lib<name>.so  the driver and its kernels, exporting the
//                              stlm_artifact `<symbol>_artifact`;
//   <name>.h                   the C header of the entry points;
//   <name>.manifest.json       the manifest, also embedded in the descriptor:
//     format "stlm-artifact", version kManifestVersion, model, vocab,
//     accumulate, split_step (the step is accumulate + apply, not
//     train_step), bf16_compute (matmuls with bf16 inputs: precision bf16
//     where the target's bf16 pays), bf16_probe (what stlm-compile
//     measured to decide it), symbol, target, weights_size,
//     arena_size,
//     inputs   [[batch, context], [batch, context]] (+ [] for a mask seed),
//     params, state, cache   [{name, dtype "F32"|"I32" (params of a
//                              quantized model: "I8"|"U8" too), shape,
//                              offset, grad_offset (params with a
//                              gradient), layout (params only: a tiled
//                              quantized weight and its scales)}],
//     entry_points           the inference functions compiled,
//     kernels                [{name, generator, params, uses}] (host),
//     cuda_arch, tf32        (cuda: nvcc's -arch, TF32 matmul operands),
//     spec                   the model spec as JSON (the cache key).
//
// C++ only (the C API is stlm.h); header-only.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_ARTIFACT_FORMAT_H
#define STLM_ARTIFACT_FORMAT_H

#include "stlm/stlm.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace stlm::format {

/// The manifest's "format" and "version".
inline constexpr const char *kFormatName = "stlm-artifact";
inline constexpr int kManifestVersion = 4;
/// The descriptor's abi_version.
inline constexpr uint32_t kAbiVersion = STLM_ABI_VERSION;

/// The most sequences batched generation decodes at once (stlm-compile
/// --decode-batch, the manifest's decode_batch).
inline constexpr int64_t kMaxDecodeBatch = 4096;

/// Every pointer an entry point takes is aligned to this many bytes: the
/// runtime allocates so, and stlm-plan-memory aligns every offset to it.
inline constexpr int64_t kAlignment = 64;

/// What an entry point returns, besides 0 and (negative) Halide error
/// codes: a decode position outside the KV cache.
inline constexpr int32_t kPositionOutOfRange = 1;

/// Batch arguments of train_step, grad, eval and accumulate: tokens,
/// targets, and the mask seed (ignored without a masked objective).
inline constexpr unsigned kBatchArgs = 3;

/// The entry points in stlm_artifact's field order, after abi_version and
/// manifest: `<symbol>_<name>`, or null where the model has none.
inline constexpr const char *kEntryPoints[] = {
    "train_step", "grad", "eval", "logits", "prefill", "decode_step",
    "accumulate", "apply"};
inline constexpr size_t kNumEntryPoints =
    sizeof(kEntryPoints) / sizeof(kEntryPoints[0]);
/// Then the Halide runtime's setters, in field order.
inline constexpr const char *kRuntimeSetters[] = {
    "halide_set_error_handler", "halide_set_num_threads",
    "halide_set_custom_malloc", "halide_set_custom_free"};
inline constexpr size_t kNumRuntimeSetters =
    sizeof(kRuntimeSetters) / sizeof(kRuntimeSetters[0]);
/// The batched generation entry points, after the embedded checkpoint's
/// size, in field order.
inline constexpr const char *kBatchEntryPoints[] = {"prefill_batch",
                                                    "decode_batch"};
inline constexpr size_t kNumBatchEntryPoints =
    sizeof(kBatchEntryPoints) / sizeof(kBatchEntryPoints[0]);

// The descriptor the writer emits is {i32, ptr, kNumEntryPoints ptrs,
// kNumRuntimeSetters ptrs, the stlm_device ptr (null on the host), the
// embedded checkpoint's ptr and its i64 size (null, 0 without), then
// kBatchEntryPoints ptrs}: the order above is stlm_artifact's.
static_assert(
    offsetof(stlm_artifact, manifest) == sizeof(void *) &&
        offsetof(stlm_artifact, train_step) == 2 * sizeof(void *) &&
        offsetof(stlm_artifact, grad) == 3 * sizeof(void *) &&
        offsetof(stlm_artifact, eval) == 4 * sizeof(void *) &&
        offsetof(stlm_artifact, logits) == 5 * sizeof(void *) &&
        offsetof(stlm_artifact, prefill) == 6 * sizeof(void *) &&
        offsetof(stlm_artifact, decode_step) == 7 * sizeof(void *) &&
        offsetof(stlm_artifact, accumulate) == 8 * sizeof(void *) &&
        offsetof(stlm_artifact, apply) == 9 * sizeof(void *) &&
        offsetof(stlm_artifact, set_error_handler) ==
            (2 + kNumEntryPoints) * sizeof(void *) &&
        offsetof(stlm_artifact, device) ==
            (2 + kNumEntryPoints + kNumRuntimeSetters) * sizeof(void *) &&
        offsetof(stlm_artifact, weights_file) ==
            (3 + kNumEntryPoints + kNumRuntimeSetters) * sizeof(void *) &&
        offsetof(stlm_artifact, prefill_batch) ==
            (5 + kNumEntryPoints + kNumRuntimeSetters) * sizeof(void *) &&
        offsetof(stlm_artifact, decode_batch) ==
            (6 + kNumEntryPoints + kNumRuntimeSetters) * sizeof(void *) &&
        sizeof(stlm_artifact) ==
            (5 + kNumEntryPoints + kNumRuntimeSetters + kNumBatchEntryPoints) *
                sizeof(void *),
    "kEntryPoints and kRuntimeSetters follow stlm_artifact");

/// Manifest keys.
namespace key {
inline constexpr const char *kFormat = "format", *kVersion = "version",
                            *kModel = "model", *kVocab = "vocab",
                            *kAccumulate = "accumulate",
                            *kSplitStep = "split_step",
                            *kBF16Compute = "bf16_compute",
                            *kBF16Probe = "bf16_probe",
                            *kSymbol = "symbol",
                            *kTarget = "target",
                            *kWeightsSize = "weights_size",
                            *kArenaSize = "arena_size", *kInputs = "inputs",
                            *kParams = "params", *kState = "state",
                            *kCache = "cache",
                            *kEntryPoints = "entry_points",
                            *kKernels = "kernels", *kSpec = "spec",
                            *kFiles = "files";
/// Of a CUDA artifact only: nvcc's -arch, and whether fp32 matmuls use
/// TF32 operands (stlm-compile --tf32).
inline constexpr const char *kCudaArch = "cuda_arch", *kTF32 = "tf32";
/// How many objectives' own losses @eval writes after the loss (absent in
/// older artifacts, whose @eval writes the loss only).
inline constexpr const char *kObjectives = "objectives";
/// Of a byte-pool model only: [chunks, chunk_bytes], the shape of each
/// batch row's chunks (its logits are [batch, chunks, chunk_bytes, vocab]).
inline constexpr const char *kChunks = "chunks";
/// Of a byte-pool model with `given` chunking only: true; its bytes input
/// carries the chunk starts (a byte + kChunkStart opens a chunk).
inline constexpr const char *kChunkStarts = "chunk_starts";
/// Of a byte-pool model: how it chunks bytes, {"mode": "fixed" | "words"
/// | "given", "stride": P (fixed only)}, so the runtime cuts a prompt as
/// the compiled step would (absent in older artifacts: no generation).
inline constexpr const char *kChunking = "chunking", *kMode = "mode",
                            *kStride = "stride";
/// Of a quantized artifact only (stlm-compile --quantize): {"scheme":
/// "int8" | "int4", "group": N}, the format its checkpoints must have
/// (stlm-run quantize's `stlm_quantization`). It infers only: the training
/// entry points are null, params are I8 / U8 payloads and F32 scales.
inline constexpr const char *kQuantization = "quantization",
                            *kScheme = "scheme", *kGroup = "group";
/// Of an artifact built with stlm-compile --decode-batch S: S, the
/// sequences prefill_batch and decode_batch take (absent without), from 2
/// to kMaxDecodeBatch.
inline constexpr const char *kDecodeBatch = "decode_batch";
/// Of a host artifact built with stlm-compile --profile: true.
inline constexpr const char *kProfile = "profile";
/// Of each params/state/cache slot.
inline constexpr const char *kName = "name", *kDType = "dtype",
                            *kShape = "shape", *kOffset = "offset",
                            *kGradOffset = "grad_offset";
/// Of a quantized artifact's params only: "tiles16" for a weight its
/// kernels read in tiles, and for that weight's `.scale`
/// (support/QuantTiles.h); the runtime arranges the checkpoint's
/// row-major tensors so when it loads them (absent: row-major).
inline constexpr const char *kLayout = "layout";
/// Of each entry of `files` (only in the manifest file beside the
/// libraries, not the one compiled into them): the file's size in bytes
/// and its FNV-1a 64 digest as 16 hex digits, checked before the shared
/// library is loaded so that a truncated or damaged one is rebuilt, not
/// mapped.
inline constexpr const char *kSize = "size", *kFnv1a64 = "fnv1a64";
} // namespace key

/// The files of model `name` in an artifact directory.
inline std::string staticLibrary(const std::string &name) {
  return "lib" + name + ".a";
}
inline std::string sharedLibrary(const std::string &name) {
  return "lib" + name + ".so";
}
inline std::string header(const std::string &name) { return name + ".h"; }
inline std::string manifest(const std::string &name) {
  return name + ".manifest.json";
}
/// The descriptor's symbol for C symbol prefix `symbol`.
inline std::string descriptorSymbol(const std::string &symbol) {
  return symbol + "_artifact";
}
/// The bytes of an embedded checkpoint (stlm-compile --embed-weights).
inline std::string embeddedWeightsSymbol(const std::string &symbol) {
  return symbol + "_embedded_weights";
}

} // namespace stlm::format

#endif // STLM_ARTIFACT_FORMAT_H
