//===- TestSpecs.h - model specs that several test binaries share ---------===//
//
// Small YAML specs used by more than one of the unit-test programs (the
// native and the CUDA comparisons against the reference), written once.
//
//===----------------------------------------------------------------------===//

#ifndef STLM_TEST_UNIT_TESTSPECS_H
#define STLM_TEST_UNIT_TESTSPECS_H

#include <string>

namespace stlm::test {

/// A tiny model with shared interior layers (the FFN and the attention
/// output) and rank-4 LoRA deltas on them, a tied head and grouped kv
/// heads, named `name`.
inline std::string loraTinySpec(const std::string &name = "lora-tiny") {
  return "name: " + name +
         "\n"
         "embedder: {kind: token, vocab_size: 256}\n"
         "core: {layers: 4, width: 48, heads: 2, kv_heads: 1, ffn: swiglu,\n"
         "       ffn_width: 72, context: 24}\n"
         "tying: {embed_head: true, ffn: interior, attn_out: interior,\n"
         "        interior_keep: 1, lora_rank: 4}\n"
         "train: {batch: 3, steps: 10, warmup: 2}\n";
}

} // namespace stlm::test

#endif // STLM_TEST_UNIT_TESTSPECS_H
