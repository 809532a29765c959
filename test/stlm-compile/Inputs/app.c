/* An app linked statically against a compiled model (lib<name>.a), the
 * stlm runtime and the model's header: loads weights, trains three steps
 * on one batch, evaluates, generates with the KV cache, saves a
 * checkpoint. Usage: app W.safetensors OUT.safetensors. */
#include "char-tiny.h"
#include "stlm/stlm.h"

#include <stdio.h>

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
