/* A model with its checkpoint compiled in (stlm-compile --embed-weights):
 * stlm_open alone gives the trained model. Its logits are compared with
 * those of the same artifact loaded from the checkpoint file.
 * Usage: embedded W.safetensors. */
#include "char-tiny.h"
#include "stlm/stlm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define N (CHAR_TINY_BATCH * CHAR_TINY_CONTEXT)

static int32_t tokens[N];
static float embedded[N * CHAR_TINY_VOCAB], loaded[N * CHAR_TINY_VOCAB];

int main(int argc, char **argv) {
  stlm_model *a = NULL, *b = NULL;
  if (argc != 2)
    return 2;
  for (int i = 0; i < N; ++i)
    tokens[i] = 'a' + i % 11;
  if (stlm_open(&char_tiny_artifact, &a) != STLM_OK ||
      stlm_logits(a, tokens, embedded) != STLM_OK) {
    fprintf(stderr, "embedded: %s\n", stlm_error_message(a));
    return 1;
  }
  printf("opened at step %lld\n", (long long)stlm_step(a));
  if (stlm_open(&char_tiny_artifact, &b) != STLM_OK ||
      stlm_load(b, argv[1]) != STLM_OK ||
      stlm_logits(b, tokens, loaded) != STLM_OK) {
    fprintf(stderr, "embedded: %s\n", stlm_error_message(b));
    return 1;
  }
  double differ = 0, size = 0;
  for (int i = 0; i < N * CHAR_TINY_VOCAB; ++i) {
    differ = fmax(differ, fabs(embedded[i] - loaded[i]));
    size = fmax(size, fabs(loaded[i]));
  }
  printf("largest logit %s, embedded vs loaded differ by %g\n",
         size > 0 ? "non-zero" : "ZERO", differ);
  stlm_close(a);
  stlm_close(b);
  return 0;
}
