/* An app linked statically against a compiled model (lib<name>.a), the
 * stlm runtime and the model's header: loads weights, trains three steps
 * on one batch, evaluates, generates with the KV cache, saves a
 * checkpoint. Usage: app W.safetensors OUT.safetensors. */
#include "char-tiny.h"
#include "stlm/stlm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t tokens[CHAR_TINY_BATCH * CHAR_TINY_CONTEXT];
static int32_t targets[CHAR_TINY_BATCH * CHAR_TINY_CONTEXT];

/* Counts the generated tokens and checks each is a byte. */
static int on_token(int32_t token, void *user) {
  int *count = (int *)user;
  if (token >= 0 && token < CHAR_TINY_VOCAB)
    ++*count;
  return 0;
}

int main(int argc, char **argv) {
  stlm_model *m = NULL;
  if (argc != 3)
    return 2;
  if (stlm_open(&char_tiny_artifact, &m) != STLM_OK ||
      stlm_set_threads(m, 2) != STLM_OK || stlm_load(m, argv[1]) != STLM_OK) {
    fprintf(stderr, "app: %s\n", stlm_error_message(m));
    stlm_close(m);
    return 1;
  }
  printf("model %s: batch %lld, context %lld\n", stlm_model_name(m),
         (long long)stlm_batch(m), (long long)stlm_context(m));
  for (int i = 0; i < CHAR_TINY_BATCH * CHAR_TINY_CONTEXT; ++i) {
    tokens[i] = 'a' + i % 7;
    targets[i] = 'a' + (i + 1) % 7;
  }
  float first = 0, loss = 0;
  for (int s = 0; s < 3; ++s) {
    stlm_step_result r;
    if (stlm_train_step(m, tokens, targets, &r) != STLM_OK) {
      fprintf(stderr, "app: %s\n", stlm_error_message(m));
      return 1;
    }
    if (s == 0)
      first = r.loss;
    printf("step %lld loss %.4f lr %.2e\n", (long long)r.step, r.loss, r.lr);
  }
  if (stlm_eval(m, tokens, targets, &loss) != STLM_OK)
    return 1;
  printf("eval loss %s the first step's\n", loss < first ? "below" : "NOT below");
  stlm_sampling sampling = {0.8f, 40, 0.95f, 7};
  int count = 0;
  size_t produced = 0;
  if (stlm_generate(m, tokens, 10, 100, &sampling, on_token, &count,
                    &produced) != STLM_OK) {
    fprintf(stderr, "app: %s\n", stlm_error_message(m));
    return 1;
  }
  printf("generated %d of %zu tokens\n", count, produced);
  /* Called directly, a decode step at a position outside the cache is
   * refused with its status before it writes a row. */
  {
    /* Every pointer 64-byte aligned, as the header asks. */
    static _Alignas(64) float logits[CHAR_TINY_VOCAB];
    static _Alignas(64) int32_t token[16], pos[16];
    void *weights = aligned_alloc(64, CHAR_TINY_WEIGHTS_SIZE);
    void *arena = aligned_alloc(64, CHAR_TINY_ARENA_SIZE);
    if (!weights || !arena)
      return 1;
    memset(weights, 0, CHAR_TINY_WEIGHTS_SIZE);
    token[0] = 'a';
    const int32_t at[3] = {CHAR_TINY_CONTEXT, -1, 0};
    int32_t status[3];
    for (int i = 0; i < 3; ++i) {
      pos[0] = at[i];
      status[i] = char_tiny_decode_step(weights, arena, token, pos, logits);
    }
    printf("decode at %d: %d, at %d: %d, at %d: %d (out of range: %d)\n",
           at[0], status[0], at[1], status[1], at[2], status[2],
           CHAR_TINY_POSITION_OUT_OF_RANGE);
    free(weights);
    free(arena);
  }
  if (stlm_save(m, argv[2]) != STLM_OK) {
    fprintf(stderr, "app: %s\n", stlm_error_message(m));
    return 1;
  }
  /* A corrupt checkpoint is refused and leaves the model as it was. */
  if (stlm_load(m, "/dev/null") == STLM_OK)
    return 1;
  printf("refused /dev/null: %s\n", stlm_error_message(m));
  stlm_close(m);
  return 0;
}
