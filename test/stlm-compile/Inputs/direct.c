/* Entry points called directly, without the runtime (no stlm_open): a
 * misaligned buffer makes the kernel fail, and the entry point returns
 * its (negative) Halide error code instead of aborting the process. */
#include "char-tiny.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N (CHAR_TINY_BATCH * CHAR_TINY_CONTEXT)

static _Alignas(64) int32_t tokens[N + 16];

int main(void) {
  char *weights = aligned_alloc(64, CHAR_TINY_WEIGHTS_SIZE + 64);
  char *arena = aligned_alloc(64, CHAR_TINY_ARENA_SIZE);
  float *logits = aligned_alloc(64, (size_t)N * CHAR_TINY_VOCAB * 4 + 64);
  if (!weights || !arena || !logits)
    return 1;
  memset(weights, 0, CHAR_TINY_WEIGHTS_SIZE + 64);
  int32_t ok = char_tiny_logits(weights, arena, tokens, logits);
  int32_t shifted = char_tiny_logits(weights + 4, arena, tokens, logits);
  int32_t ids = char_tiny_logits(weights, arena, tokens + 1, logits);
  printf("aligned: %d, misaligned weights: %s, misaligned tokens: %s\n", ok,
         shifted < 0 ? "error code" : "NO ERROR",
         ids < 0 ? "error code" : "NO ERROR");
  free(weights);
  free(arena);
  free(logits);
  return 0;
}
